#include "kiln/cli/model_command.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <ostream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/output.h"

namespace kiln::cli {
namespace {

using base::Json;

const Json& Member(const Json& obj, std::string_view field) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(field);
  return it == obj.end() ? kNull : *it;
}

std::string Text(const Json& obj, std::string_view field) {
  const Json& v = Member(obj, field);
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  if (v.is_number_float()) return FormatNumber(v.get<double>());
  return base::DumpJson(v);
}

std::string Shape(const Json& shape) {
  std::vector<std::string> dims;
  if (shape.is_array()) {
    for (const Json& d : shape) dims.push_back(base::DumpJson(d));
  }
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// "accuracy=0.86 loss=0.39", metrics in name order.
std::string MetricsText(const Json& metrics) {
  if (!metrics.is_object() || metrics.empty()) return "-";
  std::vector<std::string> parts;
  for (auto it = metrics.begin(); it != metrics.end(); ++it) {
    parts.push_back(absl::StrCat(it.key(), "=",
                                 it.value().is_number() ? FormatNumber(it.value().get<double>())
                                                        : base::DumpJson(it.value())));
  }
  return absl::StrJoin(parts, " ");
}

// "job 12", "job 12 (experiment 3 trial 5)", "upload".
std::string SourceText(const Json& lineage) {
  std::string source = Text(lineage, "source");
  if (source != "job") return source;
  std::string out = absl::StrCat("job ", Text(lineage, "job_id"));
  if (Member(lineage, "experiment_id").is_number()) {
    absl::StrAppend(&out, " (experiment ", Text(lineage, "experiment_id"), " trial ",
                    Text(lineage, "trial"), ")");
  }
  return out;
}

std::string Age(const Json& record, std::string_view field, int64_t now_micros) {
  std::optional<int64_t> at = TimestampField(record, field);
  return at ? FormatAge(now_micros - *at) : "-";
}

std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, ":", std::string(width - key.size() + 2, ' '), value, "\n");
  }
  return out;
}

std::string ModelPath(const std::string& name) {
  return absl::StrCat("/api/v1/models/", EncodeQueryValue(name));
}

std::string Resolve(const Invocation& inv, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return absl::StrCat(inv.cwd, "/", path);
}

std::string Basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct RegisterOptions {
  std::string name;
  int64_t job = 0;
  std::string path;
  std::string file;
  std::string signature;
  std::string description;
  bool json = false;
};

// A signature file: the signature itself, or an object holding it under "signature"
// (a replica's config.json).
absl::StatusOr<Json> ReadSignature(const Invocation& inv, const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(Resolve(inv, path));
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read --signature ", path, ": ", text.status().message()));
  }
  absl::StatusOr<Json> parsed = base::ParseJson(*text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--signature ", path, " is not JSON: ", parsed.status().message()));
  }
  if (parsed->is_object() && parsed->contains("signature") && !parsed->contains("inputs")) {
    return (*parsed)["signature"];
  }
  return *std::move(parsed);
}

absl::Status RegisterModel(const RegisterOptions& o, Invocation& inv) {
  if ((o.job > 0) == !o.file.empty()) {
    return absl::InvalidArgumentError(
        "say where the model comes from: --job ID (a finished job that saved "
        "$RESULT_DIR/model/model.pt) or --file model.pt (a TorchScript file here)");
  }
  if (!o.path.empty() && o.job <= 0) {
    return absl::InvalidArgumentError("--path names a file a job saved: it needs --job");
  }
  Json body = {{"name", o.name}};
  if (!o.description.empty()) body["description"] = o.description;
  if (!o.signature.empty()) {
    KILN_ASSIGN_OR_RETURN(body["signature"], ReadSignature(inv, o.signature));
  }
  std::string bytes;
  if (!o.file.empty()) {
    absl::StatusOr<std::string> read = base::ReadFile(Resolve(inv, o.file));
    if (!read.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read --file ", o.file, ": ", read.status().message()));
    }
    bytes = *std::move(read);
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  if (o.job > 0) {
    body["job_id"] = o.job;
    if (!o.path.empty()) body["path"] = o.path;
  } else {
    KILN_ASSIGN_OR_RETURN(
        Json package,
        api->PostBytes(absl::StrCat("/api/v1/packages?name=", EncodeQueryValue(Basename(o.file))),
                       std::move(bytes), "application/octet-stream"));
    body["package_id"] = Member(package, "id");
  }
  KILN_ASSIGN_OR_RETURN(Json version, api->PostJson("/api/v1/models", body));
  if (o.json) {
    *inv.out << base::DumpJson(version, 2) << "\n";
    return absl::OkStatus();
  }
  *inv.out << "model " << Text(version, "model") << " version " << Text(version, "version")
           << " registered from " << SourceText(Member(version, "lineage")) << "\n";
  *inv.err << "See it with: kiln model show " << Text(version, "model") << " --version "
           << Text(version, "version") << "\n";
  return absl::OkStatus();
}

absl::Status ListModels(bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer, api->GetJson("/api/v1/models"));
  if (json) {
    *inv.out << base::DumpJson(answer, 2) << "\n";
    return absl::OkStatus();
  }
  const Json& models = Member(answer, "models");
  if (!models.is_array() || models.empty()) {
    *inv.err << "No models yet. Register one with 'kiln model register NAME --job ID'.\n";
    return absl::OkStatus();
  }
  *inv.out << RenderModelsTable(models, inv.clock->NowMicros());
  return absl::OkStatus();
}

absl::Status ShowModel(const std::string& name, int64_t version, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  std::string target = ModelPath(name);
  if (version > 0) absl::StrAppend(&target, "/versions/", version);
  KILN_ASSIGN_OR_RETURN(Json answer, api->GetJson(target));
  if (json) {
    *inv.out << base::DumpJson(answer, 2) << "\n";
    return absl::OkStatus();
  }
  *inv.out << (version > 0 ? RenderModelVersion(answer, inv.clock->NowMicros())
                           : RenderModelDetails(answer, inv.clock->NowMicros()));
  return absl::OkStatus();
}

absl::Status DeleteModel(const std::string& name, int64_t version, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  std::string target = ModelPath(name);
  if (version > 0) absl::StrAppend(&target, "/versions/", version);
  KILN_ASSIGN_OR_RETURN(Json answer, api->DeleteJson(target));
  (void)answer;
  if (version > 0) {
    *inv.out << "model " << name << " version " << version << " deleted\n";
  } else {
    *inv.out << "model " << name << " deleted (all its versions)\n";
  }
  return absl::OkStatus();
}

}  // namespace

std::string RenderTensors(const Json& tensors) {
  if (!tensors.is_array() || tensors.empty()) return "-";
  std::vector<std::string> parts;
  for (const Json& t : tensors) {
    parts.push_back(
        absl::StrCat(Text(t, "name"), ": ", Text(t, "dtype"), Shape(Member(t, "shape"))));
  }
  return absl::StrJoin(parts, ", ");
}

std::string RenderModelsTable(const Json& models, int64_t now_micros) {
  Table table({"NAME", "USER", "LATEST", "INPUTS", "OUTPUTS", "METRICS", "SOURCE", "AGE"});
  if (!models.is_array()) return table.Render();
  for (const Json& m : models) {
    const Json& latest = Member(m, "latest");
    const Json& signature = Member(latest, "signature");
    table.AddRow({Text(m, "name"), Text(m, "user"), Text(m, "latest_version"),
                  RenderTensors(Member(signature, "inputs")),
                  RenderTensors(Member(signature, "outputs")),
                  MetricsText(Member(latest, "metrics")), SourceText(Member(latest, "lineage")),
                  Age(m, "created_at", now_micros)});
  }
  return table.Render();
}

std::string RenderModelDetails(const Json& model, int64_t now_micros) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", Text(model, "id")},
      {"name", Text(model, "name")},
      {"user", Text(model, "user")},
  };
  if (Text(model, "description") != "-")
    rows.emplace_back("description", Text(model, "description"));
  rows.emplace_back("latest", Text(model, "latest_version"));
  rows.emplace_back("created", absl::StrCat(Text(model, "created_at"), " (",
                                            Age(model, "created_at", now_micros), " ago)"));
  std::string out = KeyValues(rows);
  const Json& versions = Member(model, "versions");
  if (!versions.is_array() || versions.empty()) return out;
  Table table({"VERSION", "INPUTS", "OUTPUTS", "METRICS", "SOURCE", "FILE", "SIZE", "AGE"});
  for (const Json& v : versions) {
    const Json& signature = Member(v, "signature");
    const Json& file = Member(v, "file");
    const Json& size = Member(file, "size");
    table.AddRow({Text(v, "version"), RenderTensors(Member(signature, "inputs")),
                  RenderTensors(Member(signature, "outputs")), MetricsText(Member(v, "metrics")),
                  SourceText(Member(v, "lineage")), Text(file, "name"),
                  size.is_number_integer() ? FormatBytes(size.get<int64_t>()) : "-",
                  Age(v, "created_at", now_micros)});
  }
  absl::StrAppend(&out, "\nversions:\n", table.Render());
  return out;
}

std::string RenderModelVersion(const Json& v, int64_t now_micros) {
  const Json& signature = Member(v, "signature");
  const Json& lineage = Member(v, "lineage");
  const Json& file = Member(v, "file");
  const Json& size = Member(file, "size");
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", Text(v, "model")},
      {"version", Text(v, "version")},
      {"inputs", RenderTensors(Member(signature, "inputs"))},
      {"outputs", RenderTensors(Member(signature, "outputs"))},
      {"metrics", MetricsText(Member(v, "metrics"))},
      {"source", SourceText(lineage)},
  };
  const Json& hyperparameters = Member(lineage, "hyperparameters");
  if (hyperparameters.is_object() && !hyperparameters.empty()) {
    rows.emplace_back("hyperparameters", base::DumpJson(hyperparameters));
  }
  rows.emplace_back("file",
                    absl::StrCat(Text(file, "name"), " (",
                                 size.is_number_integer() ? FormatBytes(size.get<int64_t>()) : "-",
                                 ", package ", Text(file, "package_id"), ")"));
  rows.emplace_back("created", absl::StrCat(Text(v, "created_at"), " (",
                                            Age(v, "created_at", now_micros), " ago)"));
  return KeyValues(rows);
}

namespace internal {

void RegisterModelCommands(CLI::App& app, Invocation& inv) {
  CLI::App* model = app.add_subcommand(
      "model", "The model registry: register trained models, list, show and delete them");
  model->require_subcommand(1);
  model->footer(
      "A model version is a TorchScript file with its signature (input and output names,\n"
      "dtypes, shapes), metrics and lineage. A job saves one with\n"
      "kiln.save_model(model, example_input) (into $RESULT_DIR/model/).\n"
      "Example: kiln model register fashion-mlp --job 12 && kiln model show fashion-mlp");

  auto reg = std::make_shared<RegisterOptions>();
  CLI::App* register_cmd =
      model->add_subcommand("register", "Register a new model, or a new version of one of yours");
  register_cmd->add_option("NAME", reg->name, "Model name (letters, digits, '.', '_', '-')")
      ->required();
  CLI::Option* job =
      register_cmd
          ->add_option("--job", reg->job,
                       "A FINISHED job whose saved model to register (with its signature, final "
                       "metrics and hyperparameters)")
          ->type_name("ID");
  register_cmd
      ->add_option("--path", reg->path,
                   "With --job: the model file under the job's RESULT_DIR (default "
                   "model/model.pt)")
      ->type_name("PATH")
      ->needs(job);
  register_cmd
      ->add_option("--file", reg->file,
                   "A local TorchScript file (or a .zip/.tar.gz holding one) to upload instead")
      ->type_name("FILE")
      ->excludes(job);
  register_cmd
      ->add_option("--signature", reg->signature,
                   "A JSON file with the signature {\"inputs\": [...], \"outputs\": [...]} "
                   "(needed with --file; overrides the job's model/signature.json)")
      ->type_name("FILE");
  register_cmd->add_option("--description", reg->description, "What the model is (new models)")
      ->type_name("TEXT");
  register_cmd->add_flag("--json", reg->json, "Print the new version's record as JSON");
  internal::AddUrlOption(*register_cmd, inv);
  register_cmd->footer(
      "Examples:\n"
      "  kiln model register fashion-mlp --job 12\n"
      "  kiln model register fashion-mlp --file model.pt --signature signature.json");
  register_cmd->callback(
      [&inv, reg] { inv.command = [&inv, reg] { return RegisterModel(*reg, inv); }; });

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list =
      model->add_subcommand("list", "List models, newest first, with their latest version");
  list->alias("ls");
  list->add_flag("--json", *list_json, "Print {\"models\": [records]} as JSON");
  internal::AddUrlOption(*list, inv);
  list->callback([&inv, list_json] {
    inv.command = [&inv, list_json] { return ListModels(*list_json, inv); };
  });

  struct ShowOptions {
    std::string name;
    int64_t version = 0;
    bool json = false;
  };
  auto show = std::make_shared<ShowOptions>();
  CLI::App* show_cmd =
      model->add_subcommand("show", "Show a model and its versions, or one version in detail");
  show_cmd->add_option("MODEL", show->name, "Model name, or its id")->required();
  show_cmd->add_option("--version", show->version, "Show this version: signature, metrics, lineage")
      ->type_name("N")
      ->check(CLI::PositiveNumber);
  show_cmd->add_flag("--json", show->json, "Print the record as JSON");
  internal::AddUrlOption(*show_cmd, inv);
  show_cmd->callback([&inv, show] {
    inv.command = [&inv, show] { return ShowModel(show->name, show->version, show->json, inv); };
  });

  auto del = std::make_shared<ShowOptions>();
  CLI::App* del_cmd = model->add_subcommand(
      "delete", "Delete a model with all its versions, or one version (not while deployed)");
  del_cmd->add_option("MODEL", del->name, "Model name, or its id")->required();
  del_cmd->add_option("--version", del->version, "Delete only this version")
      ->type_name("N")
      ->check(CLI::PositiveNumber);
  internal::AddUrlOption(*del_cmd, inv);
  del_cmd->callback([&inv, del] {
    inv.command = [&inv, del] { return DeleteModel(del->name, del->version, inv); };
  });
}

}  // namespace internal
}  // namespace kiln::cli
