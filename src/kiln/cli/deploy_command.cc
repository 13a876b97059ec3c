#include "kiln/cli/deploy_command.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <ostream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/exit_codes.h"
#include "kiln/cli/output.h"

namespace kiln::cli {
namespace {

using base::Json;

const Json& Member(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// A field as a table cell: strings bare, null / missing / "" as "-".
std::string Text(const Json& j, const char* key) {
  const Json& v = Member(j, key);
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  return v.dump();
}

int64_t Int(const Json& j, const char* key) {
  const Json& v = Member(j, key);
  return v.is_number_integer() ? v.get<int64_t>() : 0;
}

std::string DeploymentPath(const std::string& ref) {
  return absl::StrCat("/api/v1/deployments/", EncodeQueryValue(ref));
}

std::string AgeOf(const Json& j, const char* key, int64_t now) {
  std::optional<int64_t> t = TimestampField(j, key);
  return t ? FormatAge(now - *t) : "-";
}

struct CreateOptions {
  std::string name;
  std::string model;
  std::optional<int64_t> version;
  std::optional<int64_t> replicas;
  std::optional<int64_t> slots;
  std::optional<int64_t> max_batch_size;
  std::optional<int64_t> max_queue_delay_us;
  bool wait = false;
  bool json = false;
};

// Follows `ref` until it serves or fails. Progress lines go to stderr.
absl::StatusOr<Json> WaitForDeployment(ApiClient& api, Invocation& inv, const std::string& ref,
                                       std::optional<int64_t> wanted_version) {
  constexpr int64_t kPollMicros = 1'000'000;
  constexpr int64_t kReconnectWindowMicros = 60'000'000;
  std::string last_line;
  std::optional<int64_t> outage_start;
  while (true) {
    absl::StatusOr<Json> d = api.GetJson(DeploymentPath(ref));
    if (!d.ok()) {
      if (d.status().code() != absl::StatusCode::kUnavailable) return d.status();
      const int64_t now = inv.clock->NowMicros();
      if (!outage_start) outage_start = now;
      if (now - *outage_start >= kReconnectWindowMicros) {
        return absl::UnavailableError(
            absl::StrCat("lost contact with Kiln at ", api.url(), " while waiting for deployment ",
                         ref, "; check it later with 'kiln deploy show ", ref, "'"));
      }
      inv.sleep(kPollMicros);
      continue;
    }
    outage_start.reset();
    std::string line = DeploymentSummary(*d);
    if (line != last_line) {
      *inv.err << line << "\n" << std::flush;
      last_line = line;
    }
    if (DeploymentProgressOf(*d, wanted_version) != DeploymentProgress::kWaiting) return *d;
    inv.sleep(kPollMicros);
  }
}

// Prints the record (or its id), then, with --wait, follows it; a failed deployment or
// rollout exits 1 with its reason.
absl::Status Report(ApiClient& api, Invocation& inv, const Json& record, bool wait, bool json,
                    std::optional<int64_t> wanted_version, const char* verb) {
  const std::string id = Text(record, "id");
  const std::string name = Text(record, "name");
  if (!wait) {
    if (json) {
      *inv.out << base::DumpJson(record, 2) << "\n";
    } else {
      *inv.out << id << "\n";
      *inv.err << "deployment " << id << " (" << name << ") " << verb << ": "
               << DeploymentSummary(record) << ". Follow it with 'kiln deploy show " << name
               << "'.\n";
    }
    return absl::OkStatus();
  }
  KILN_ASSIGN_OR_RETURN(Json final_state, WaitForDeployment(api, inv, id, wanted_version));
  if (json) {
    *inv.out << base::DumpJson(final_state, 2) << "\n";
  } else {
    *inv.out << id << "\n";
  }
  if (DeploymentProgressOf(final_state, wanted_version) == DeploymentProgress::kFailed) {
    *inv.err << "deployment " << name << " " << Text(final_state, "state") << ": "
             << Text(final_state, "reason") << "\n";
    inv.exit_code = kExitError;
  } else {
    *inv.err << "deployment " << name << " serves version " << Text(final_state, "version")
             << ": kiln predict " << name << " --data '{\"inputs\": ...}'\n";
  }
  return absl::OkStatus();
}

absl::Status CreateDeployment(const CreateOptions& o, Invocation& inv) {
  if (o.model.empty()) {
    return absl::InvalidArgumentError(
        "kiln deploy create needs --model MODEL (a registered model; see 'kiln model list')");
  }
  Json body = {{"name", o.name}, {"model", o.model}};
  if (o.version) body["version"] = *o.version;
  if (o.replicas) body["replicas"] = *o.replicas;
  if (o.slots) body["slots"] = *o.slots;
  if (o.max_batch_size) body["max_batch_size"] = *o.max_batch_size;
  if (o.max_queue_delay_us) body["max_queue_delay_us"] = *o.max_queue_delay_us;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  absl::StatusOr<Json> created = api->PostJson("/api/v1/deployments", body);
  if (!created.ok() && created.status().code() == absl::StatusCode::kAlreadyExists) {
    return absl::Status(
        created.status().code(),
        absl::StrCat(created.status().message(),
                     " (change it with 'kiln deploy "
                     "update ",
                     o.name, "', or remove it with 'kiln deploy delete ", o.name, "')"));
  }
  KILN_RETURN_IF_ERROR(created.status());
  return Report(*api, inv, *created, o.wait, o.json, std::nullopt, "created");
}

struct UpdateOptions {
  std::string ref;
  std::optional<int64_t> version;
  std::optional<int64_t> replicas;
  std::optional<int64_t> max_batch_size;
  std::optional<int64_t> max_queue_delay_us;
  bool wait = false;
  bool json = false;
};

absl::Status UpdateDeployment(const UpdateOptions& o, Invocation& inv) {
  Json body = Json::object();
  if (o.version) body["version"] = *o.version;
  if (o.replicas) body["replicas"] = *o.replicas;
  if (o.max_batch_size) body["max_batch_size"] = *o.max_batch_size;
  if (o.max_queue_delay_us) body["max_queue_delay_us"] = *o.max_queue_delay_us;
  if (body.empty()) {
    return absl::InvalidArgumentError(
        "kiln deploy update needs something to change: --version V, --replicas N, "
        "--max-batch-size B or --max-queue-delay-us D");
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json updated, api->PatchJson(DeploymentPath(o.ref), body));
  return Report(*api, inv, updated, o.wait, o.json, o.version, "updated");
}

absl::Status ListDeployments(bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer, api->GetJson("/api/v1/deployments"));
  if (json) {
    *inv.out << base::DumpJson(answer, 2) << "\n";
    return absl::OkStatus();
  }
  const Json& list = Member(answer, "deployments");
  if (!list.is_array() || list.empty()) {
    *inv.err << "No deployments yet. Create one with 'kiln deploy create NAME --model MODEL'.\n";
    return absl::OkStatus();
  }
  *inv.out << RenderDeploymentsTable(list, inv.clock->NowMicros());
  return absl::OkStatus();
}

absl::Status ShowDeployment(const std::string& ref, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json d, api->GetJson(DeploymentPath(ref)));
  if (json) {
    *inv.out << base::DumpJson(d, 2) << "\n";
  } else {
    *inv.out << RenderDeploymentDetails(d, inv.clock->NowMicros());
  }
  return absl::OkStatus();
}

absl::Status DeleteDeployment(const std::string& ref, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json d, api->DeleteJson(DeploymentPath(ref)));
  *inv.err << "deployment " << Text(d, "name")
           << " deleted: it left routing; its replicas drain and stop\n";
  return absl::OkStatus();
}

struct PredictOptions {
  std::string ref;
  std::string data;
  std::string file;
  std::string positional;  // "-": read stdin
};

absl::Status Predict(const PredictOptions& o, Invocation& inv) {
  const int given = !o.data.empty() + !o.file.empty() + (o.positional == "-");
  if (given != 1) {
    return absl::InvalidArgumentError(
        "kiln predict needs exactly one payload: --data JSON, --file payload.json, or - "
        "(stdin); e.g. kiln predict NAME --data '{\"inputs\": [[0.1, 0.2]]}'");
  }
  if (!o.positional.empty() && o.positional != "-") {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", o.positional,
                                                   "\"; use --file FILE to read a payload file"));
  }
  std::string text = o.data;
  if (!o.file.empty()) {
    std::string path = o.file[0] == '/' ? o.file : absl::StrCat(inv.cwd, "/", o.file);
    absl::StatusOr<std::string> read = base::ReadFile(path);
    if (!read.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read --file ", o.file, ": ", read.status().message()));
    }
    text = *std::move(read);
  } else if (o.positional == "-") {
    if (inv.in == nullptr) return absl::InvalidArgumentError("no stdin to read the payload from");
    text.assign(std::istreambuf_iterator<char>(*inv.in), std::istreambuf_iterator<char>());
  }
  absl::StatusOr<Json> payload = base::ParseJson(text);
  if (!payload.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the payload is not JSON: ", payload.status().message(),
                     "; expected {\"inputs\": {\"NAME\": [[...sample...], ...]}} or "
                     "{\"inputs\": [[...], ...]}"));
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer,
                        api->PostJson(absl::StrCat(DeploymentPath(o.ref), "/predict"), *payload));
  *inv.out << base::DumpJson(answer) << "\n";
  return absl::OkStatus();
}

void AddRef(CLI::App& cmd, std::string& ref) {
  cmd.add_option("deployment", ref, "Deployment name or id")->type_name("NAME")->required();
}

}  // namespace

// ---------------------------------------------------------------- public

DeploymentProgress DeploymentProgressOf(const Json& d, std::optional<int64_t> wanted_version) {
  const std::string state = Text(d, "state");
  if (state == "FAILED" || state == "STOPPED") return DeploymentProgress::kFailed;
  if (wanted_version && Int(d, "version") != *wanted_version && state != "UPDATING") {
    return DeploymentProgress::kFailed;  // rolled back
  }
  if (state != "READY") return DeploymentProgress::kWaiting;
  const int64_t want = Int(Member(d, "spec"), "replicas");
  const Json& replicas = Member(d, "replicas");
  if (replicas.is_array()) {
    for (const Json& r : replicas) {
      if (Text(r, "state") != "READY") return DeploymentProgress::kWaiting;
      if (Int(r, "version") != Int(d, "version")) return DeploymentProgress::kWaiting;
    }
  }
  return Int(d, "ready_replicas") >= want ? DeploymentProgress::kServing
                                          : DeploymentProgress::kWaiting;
}

std::string DeploymentSummary(const Json& d) {
  std::string out = absl::StrCat(Text(d, "state"), ", version ", Text(d, "version"), ", ",
                                 Int(d, "ready_replicas"), "/", Int(Member(d, "spec"), "replicas"),
                                 " replicas ready");
  if (Text(d, "reason") != "-") absl::StrAppend(&out, " (", Text(d, "reason"), ")");
  return out;
}

std::string RenderDeploymentsTable(const Json& deployments, int64_t now_micros) {
  Table table({"ID", "NAME", "MODEL", "VERSION", "STATE", "READY", "AGE"});
  if (!deployments.is_array()) return table.Render();
  for (const Json& d : deployments) {
    table.AddRow({Text(d, "id"), Text(d, "name"), Text(d, "model"), Text(d, "version"),
                  Text(d, "state"),
                  absl::StrCat(Int(d, "ready_replicas"), "/", Int(Member(d, "spec"), "replicas")),
                  AgeOf(d, "created_at", now_micros)});
  }
  return table.Render();
}

std::string RenderDeploymentDetails(const Json& d, int64_t now_micros) {
  const Json& spec = Member(d, "spec");
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", Text(d, "id")},
      {"name", Text(d, "name")},
      {"user", Text(d, "user")},
      {"model", absl::StrCat(Text(d, "model"), " version ", Text(d, "version"))},
      {"state", Text(d, "state")},
  };
  if (Text(d, "reason") != "-") rows.emplace_back("reason", Text(d, "reason"));
  if (Member(d, "previous_version").is_number()) {
    rows.emplace_back("rolling from", absl::StrCat("version ", Text(d, "previous_version")));
  }
  rows.emplace_back("replicas", absl::StrCat(Int(d, "ready_replicas"), "/", Int(spec, "replicas"),
                                             " ready, ", Int(spec, "slots"), " slot(s) each"));
  rows.emplace_back("batching",
                    absl::StrCat("max_batch_size ", Int(spec, "max_batch_size"),
                                 ", max_queue_delay_us ", Int(spec, "max_queue_delay_us")));
  const Json& endpoints = Member(d, "endpoints");
  if (endpoints.is_object()) {
    rows.emplace_back("predict", Text(endpoints, "predict"));
    rows.emplace_back("kserve v2", Text(endpoints, "kserve_v2"));
    rows.emplace_back("watson ml", Text(endpoints, "watson_ml"));
  }
  rows.emplace_back("created", AgeOf(d, "created_at", now_micros) + " ago");
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, ":", std::string(width - key.size() + 2, ' '), value, "\n");
  }
  const Json& replicas = Member(d, "replicas");
  if (replicas.is_array() && !replicas.empty()) {
    Table table({"JOB", "VERSION", "STATE", "ADDRESS"});
    for (const Json& r : replicas) {
      table.AddRow({Text(r, "job_id"), Text(r, "version"), Text(r, "state"), Text(r, "address")});
    }
    absl::StrAppend(&out, "\n", table.Render());
  }
  return out;
}

namespace internal {

void RegisterDeployCommands(CLI::App& app, Invocation& inv) {
  CLI::App* deploy = app.add_subcommand(
      "deploy", "Deployments: serve a registered model version on N kiln-serve replicas");
  deploy->require_subcommand(1);
  deploy->footer(
      "Example:\n"
      "  kiln deploy create fmnist --model fmnist --replicas 2 --wait\n"
      "  kiln predict fmnist --file payload.json\n"
      "  kiln deploy update fmnist --version 2 --wait   # rolling, no request dropped\n"
      "  kiln deploy delete fmnist");

  auto create = std::make_shared<CreateOptions>();
  CLI::App* create_cmd = deploy->add_subcommand(
      "create", "Deploy a model version; prints the deployment id (the record with --json)");
  create_cmd->add_option("name", create->name, "Deployment name (letters, digits, - _ .)")
      ->type_name("NAME")
      ->required();
  create_cmd->add_option("--model", create->model, "Registered model name or id")
      ->type_name("MODEL")
      ->required();
  create_cmd->add_option("--version", create->version, "Model version (default: the latest)")
      ->type_name("V");
  create_cmd->add_option("--replicas", create->replicas, "Number of replicas (default 1)")
      ->type_name("N");
  create_cmd->add_option("--slots", create->slots, "CPU slots per replica (default 1)")
      ->type_name("S");
  create_cmd
      ->add_option("--max-batch-size", create->max_batch_size,
                   "Largest batch a replica forms (default 32)")
      ->type_name("B");
  create_cmd
      ->add_option("--max-queue-delay-us", create->max_queue_delay_us,
                   "Longest a request waits for a batch to fill, in µs (default 0: whatever queued "
                   "while a worker was busy)")
      ->type_name("D");
  create_cmd->add_flag("--wait", create->wait,
                       "Wait until every replica serves; exit 1 if the deployment FAILED");
  create_cmd->add_flag("--json", create->json, "Print the deployment record as JSON");
  internal::AddUrlOption(*create_cmd, inv);
  create_cmd->callback(
      [&inv, create] { inv.command = [&inv, create] { return CreateDeployment(*create, inv); }; });

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = deploy->add_subcommand("list", "List deployments");
  list->alias("ls");
  list->add_flag("--json", *list_json, "Print {\"deployments\": [records]} as JSON");
  internal::AddUrlOption(*list, inv);
  list->callback([&inv, list_json] {
    inv.command = [&inv, list_json] { return ListDeployments(*list_json, inv); };
  });

  auto show_ref = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  CLI::App* show =
      deploy->add_subcommand("show", "Show a deployment: state, version, replicas, endpoints");
  AddRef(*show, *show_ref);
  show->add_flag("--json", *show_json, "Print the deployment record as JSON");
  internal::AddUrlOption(*show, inv);
  show->callback([&inv, show_ref, show_json] {
    inv.command = [&inv, show_ref, show_json] {
      return ShowDeployment(*show_ref, *show_json, inv);
    };
  });

  auto update = std::make_shared<UpdateOptions>();
  CLI::App* update_cmd = deploy->add_subcommand(
      "update", "Change a deployment: a new version or batching rolls out replica by replica");
  AddRef(*update_cmd, update->ref);
  update_cmd->add_option("--version", update->version, "Model version to roll out")->type_name("V");
  update_cmd->add_option("--replicas", update->replicas, "Number of replicas")->type_name("N");
  update_cmd->add_option("--max-batch-size", update->max_batch_size, "Largest batch")
      ->type_name("B");
  update_cmd
      ->add_option("--max-queue-delay-us", update->max_queue_delay_us,
                   "Longest batching wait, in µs")
      ->type_name("D");
  update_cmd->add_flag("--wait", update->wait,
                       "Wait until the rollout is over; exit 1 if it failed (it rolls back)");
  update_cmd->add_flag("--json", update->json, "Print the deployment record as JSON");
  internal::AddUrlOption(*update_cmd, inv);
  update_cmd->callback(
      [&inv, update] { inv.command = [&inv, update] { return UpdateDeployment(*update, inv); }; });

  auto delete_ref = std::make_shared<std::string>();
  CLI::App* del = deploy->add_subcommand(
      "delete", "Delete a deployment: out of routing at once, replicas drain and stop");
  del->alias("rm");
  AddRef(*del, *delete_ref);
  internal::AddUrlOption(*del, inv);
  del->callback([&inv, delete_ref] {
    inv.command = [&inv, delete_ref] { return DeleteDeployment(*delete_ref, inv); };
  });

  auto predict = std::make_shared<PredictOptions>();
  CLI::App* predict_cmd = app.add_subcommand(
      "predict", "Send a prediction request to a deployment and print the JSON answer");
  AddRef(*predict_cmd, predict->ref);
  predict_cmd->add_option("payload", predict->positional, "- to read the payload from stdin")
      ->type_name("-");
  predict_cmd->add_option("--data,-d", predict->data, "The payload as JSON")->type_name("JSON");
  predict_cmd->add_option("--file,-f", predict->file, "A file holding the JSON payload")
      ->type_name("FILE");
  internal::AddUrlOption(*predict_cmd, inv);
  predict_cmd->footer(
      "The payload is the native one (docs/api.md): {\"inputs\": {\"image\": [[...], ...]}},\n"
      "or {\"inputs\": [[...], ...]} for a one-input model; one row per sample.\n"
      "Example: kiln predict fmnist --data '{\"inputs\": [[0.0, 0.5, ...]]}'");
  predict_cmd->callback(
      [&inv, predict] { inv.command = [&inv, predict] { return Predict(*predict, inv); }; });
}

}  // namespace internal
}  // namespace kiln::cli
