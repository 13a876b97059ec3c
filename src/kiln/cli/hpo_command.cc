#include "kiln/cli/hpo_command.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/agent/package.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/exit_codes.h"
#include "kiln/cli/output.h"
#include "kiln/cli/run_command.h"

namespace kiln::cli {
namespace {

using base::Json;

// ---------------------------------------------------------------- YAML

constexpr char kTagPrefix[] = "tag:yaml.org,2002:";

// "exp.yaml:3:7: " (1-based, as editors count).
std::string Where(std::string_view source, const YAML::Mark& mark) {
  if (mark.is_null()) return absl::StrCat(std::string(source), ": ");
  return absl::StrCat(std::string(source), ":", mark.line + 1, ":", mark.column + 1, ": ");
}

bool IsDigits(std::string_view s, bool (*digit)(unsigned char)) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!digit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}
bool IsDecimalDigit(unsigned char c) { return c >= '0' && c <= '9'; }
bool IsHexDigit(unsigned char c) { return absl::ascii_isxdigit(c); }
bool IsOctalDigit(unsigned char c) { return c >= '0' && c <= '7'; }

enum class ScalarKind { kInt, kFloat, kNotANumber };

// YAML 1.2 core schema: int is [-+]?[0-9]+, 0o[0-7]+ or 0x[0-9a-fA-F]+; float is
// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? (so 1e-4 is a float, unlike YAML
// 1.1), plus .inf and .nan, which JSON cannot hold.
ScalarKind ClassifyNumber(std::string_view s) {
  std::string_view body = s;
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) body.remove_prefix(1);
  if (IsDigits(body, IsDecimalDigit)) return ScalarKind::kInt;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    return IsDigits(s.substr(2), s[1] == 'x' ? IsHexDigit : IsOctalDigit) ? ScalarKind::kInt
                                                                          : ScalarKind::kNotANumber;
  }
  size_t i = 0;
  size_t int_digits = 0, frac_digits = 0;
  while (i < body.size() && IsDecimalDigit(body[i])) ++i, ++int_digits;
  if (i < body.size() && body[i] == '.') {
    ++i;
    while (i < body.size() && IsDecimalDigit(body[i])) ++i, ++frac_digits;
  }
  if (int_digits == 0 && frac_digits == 0) return ScalarKind::kNotANumber;
  if (i < body.size() && (body[i] == 'e' || body[i] == 'E')) {
    ++i;
    if (i < body.size() && (body[i] == '-' || body[i] == '+')) ++i;
    size_t exp_digits = 0;
    while (i < body.size() && IsDecimalDigit(body[i])) ++i, ++exp_digits;
    if (exp_digits == 0) return ScalarKind::kNotANumber;
  }
  return i == body.size() ? ScalarKind::kFloat : ScalarKind::kNotANumber;
}

bool IsSpecialFloat(std::string_view s) {
  std::string_view body = s;
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) body.remove_prefix(1);
  return body == ".inf" || body == ".Inf" || body == ".INF" || s == ".nan" || s == ".NaN" ||
         s == ".NAN";
}

absl::StatusOr<Json> IntegerScalar(const std::string& s, const std::string& where) {
  int64_t value = 0;
  bool ok = false;
  if (s.size() > 2 && s[0] == '0' && s[1] == 'x') {
    uint64_t u = 0;
    ok = absl::SimpleHexAtoi(s.substr(2), &u) &&
         u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    value = static_cast<int64_t>(u);
  } else if (s.size() > 2 && s[0] == '0' && s[1] == 'o') {
    ok = true;
    for (char c : s.substr(2)) {
      if (value > (std::numeric_limits<int64_t>::max() - 7) / 8) {
        ok = false;
        break;
      }
      value = value * 8 + (c - '0');
    }
  } else {
    ok = absl::SimpleAtoi(s, &value);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "the integer ", s, " is out of range (at most 2^63-1)"));
  }
  return Json(value);
}

absl::StatusOr<Json> FloatScalar(const std::string& s, const std::string& where) {
  if (IsSpecialFloat(s)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, s, " cannot be sent as JSON; use a finite number"));
  }
  double value = 0;
  if (!absl::SimpleAtod(s, &value) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "the number ", s, " is out of range for a double"));
  }
  return Json(value);
}

absl::StatusOr<Json> ScalarToJson(const YAML::Node& node, std::string_view source) {
  const std::string& s = node.Scalar();
  const std::string& tag = node.Tag();
  const std::string where = Where(source, node.Mark());
  // "!" marks a quoted scalar (or the non-specific tag): always a string.
  if (tag == "!") return Json(s);
  if (tag == "?" || tag.empty()) {
    if (s == "true" || s == "True" || s == "TRUE") return Json(true);
    if (s == "false" || s == "False" || s == "FALSE") return Json(false);
    if (s == "null" || s == "Null" || s == "NULL" || s == "~" || s.empty()) return Json(nullptr);
    switch (ClassifyNumber(s)) {
      case ScalarKind::kInt:
        return IntegerScalar(s, where);
      case ScalarKind::kFloat:
        return FloatScalar(s, where);
      case ScalarKind::kNotANumber:
        break;
    }
    if (IsSpecialFloat(s)) return FloatScalar(s, where);
    return Json(s);
  }
  if (!absl::StartsWith(tag, kTagPrefix)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "unsupported tag ", tag, "; only !!str, !!int, !!float, !!bool and !!null"));
  }
  std::string_view type = std::string_view(tag).substr(sizeof(kTagPrefix) - 1);
  if (type == "str") return Json(s);
  if (type == "int") {
    if (ClassifyNumber(s) != ScalarKind::kInt) {
      return absl::InvalidArgumentError(absl::StrCat(where, "!!int ", s, " is not an integer"));
    }
    return IntegerScalar(s, where);
  }
  if (type == "float") {
    if (ClassifyNumber(s) == ScalarKind::kNotANumber && !IsSpecialFloat(s)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "!!float ", s, " is not a number"));
    }
    return FloatScalar(s, where);
  }
  if (type == "bool") {
    std::string lower = absl::AsciiStrToLower(s);
    if (lower == "true") return Json(true);
    if (lower == "false") return Json(false);
    return absl::InvalidArgumentError(absl::StrCat(where, "!!bool ", s, " is not true or false"));
  }
  if (type == "null") return Json(nullptr);
  return absl::InvalidArgumentError(
      absl::StrCat(where, "unsupported tag !!", std::string(type),
                   "; only !!str, !!int, !!float, !!bool and !!null"));
}

// Deep documents are refused rather than risking the stack.
constexpr int kMaxYamlDepth = 64;

absl::StatusOr<Json> NodeToJson(const YAML::Node& node, std::string_view source, int depth) {
  if (depth > kMaxYamlDepth) {
    return absl::InvalidArgumentError(absl::StrCat(Where(source, node.Mark()), "nested more than ",
                                                   kMaxYamlDepth, " levels deep"));
  }
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return Json(nullptr);
    case YAML::NodeType::Scalar:
      return ScalarToJson(node, source);
    case YAML::NodeType::Sequence: {
      Json out = Json::array();
      for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node item = *it;
        KILN_ASSIGN_OR_RETURN(Json value, NodeToJson(item, source, depth + 1));
        out.push_back(std::move(value));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      Json out = Json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        // Copies: the iterator hands out a temporary pair of node handles.
        const YAML::Node key = it->first;
        const YAML::Node value_node = it->second;
        if (!key.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(
              Where(source, key.Mark()), "a key must be a plain name, not a list or mapping"));
        }
        const std::string& name = key.Scalar();
        if (out.contains(name)) {
          return absl::InvalidArgumentError(absl::StrCat(
              Where(source, key.Mark()), "duplicate key \"", name, "\"; give each key once"));
        }
        KILN_ASSIGN_OR_RETURN(Json value, NodeToJson(value_node, source, depth + 1));
        out[name] = std::move(value);
      }
      return out;
    }
  }
  return Json(nullptr);
}

// ---------------------------------------------------------------- display helpers

// A field as display text: strings as is, numbers as FormatNumber, others as JSON, "-"
// when absent, null or empty.
std::string Text(const Json& obj, std::string_view field) {
  if (!obj.is_object()) return "-";
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return "-";
  if (it->is_string()) {
    std::string s = it->get<std::string>();
    return s.empty() ? "-" : s;
  }
  if (it->is_number_float()) return FormatNumber(it->get<double>());
  return base::DumpJson(*it);
}

std::string ValueText(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_float()) return FormatNumber(value.get<double>());
  return base::DumpJson(value);
}

int64_t Count(const Json& obj, std::string_view field) {
  if (!obj.is_object()) return 0;
  auto it = obj.find(field);
  return it != obj.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

const Json& Member(const Json& obj, std::string_view field) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(field);
  return it == obj.end() ? kNull : *it;
}

std::string TimeWithAge(const Json& record, std::string_view field, int64_t now_micros) {
  std::optional<int64_t> at = TimestampField(record, field);
  if (!at) return Text(record, field);
  return absl::StrCat(Text(record, field), " (", FormatAge(now_micros - *at), " ago)");
}

// "maximize accuracy (best over steps)".
std::string ObjectiveText(const Json& objective) {
  if (!objective.is_object()) return "-";
  std::string reduce = Text(objective, "reduce");
  return absl::StrCat(Text(objective, "goal"), " ", Text(objective, "metric"),
                      reduce == "last" ? " (value at the last step)" : " (best over steps)");
}

std::string BestText(const Json& best) {
  if (!best.is_object()) return "-";
  return absl::StrCat(Text(best, "value"), " (trial ", Text(best, "number"), ")");
}

// ---------------------------------------------------------------- commands

// Paths take an id or a name; a name goes into the path percent-encoded.
std::string ExperimentPath(const std::string& ref) {
  return absl::StrCat("/api/v1/experiments/", EncodeQueryValue(ref));
}

std::string Basename(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct CreateOptions {
  std::string file;
  std::string name;
  bool wait = false;
  bool json = false;
};

// Polls the experiment until it ends, printing a progress line to stderr whenever it
// changes. Rides out a master restart for up to kReconnectWindowMicros.
absl::StatusOr<Json> WaitForExperiment(ApiClient& api, Invocation& inv, const std::string& ref) {
  constexpr int64_t kPollMicros = 2'000'000;
  constexpr int64_t kReconnectWindowMicros = 60'000'000;
  std::string last_line;
  std::optional<int64_t> outage_start;
  while (true) {
    absl::StatusOr<Json> experiment = api.GetJson(ExperimentPath(ref));
    if (!experiment.ok()) {
      if (experiment.status().code() != absl::StatusCode::kUnavailable) {
        return experiment.status();
      }
      int64_t now = inv.clock->NowMicros();
      if (!outage_start) {
        outage_start = now;
        *inv.err << "kiln: lost contact with Kiln at " << api.url() << "; retrying\n" << std::flush;
      }
      if (now - *outage_start >= kReconnectWindowMicros) {
        return absl::UnavailableError(absl::StrCat(
            "lost contact with Kiln at ", api.url(), " while waiting for experiment ", ref,
            "; it keeps running. Check it later with 'kiln hpo show ", ref, "'."));
      }
      inv.sleep(kPollMicros);
      continue;
    }
    outage_start.reset();
    std::string state = Text(*experiment, "state");
    std::string line = absl::StrCat(state, ": ", ExperimentProgress(*experiment));
    if (line != last_line) {
      *inv.err << line << "\n" << std::flush;
      last_line = line;
    }
    if (IsExperimentEnded(state)) return experiment;
    inv.sleep(kPollMicros);
  }
}

absl::Status CreateExperiment(const CreateOptions& options, Invocation& inv) {
  if (options.file.empty()) {
    return absl::InvalidArgumentError(
        "kiln hpo create needs an experiment file: kiln hpo create -f experiment.yaml");
  }
  std::string file = options.file;
  if (!file.empty() && file[0] != '/') file = absl::StrCat(inv.cwd, "/", file);
  KILN_ASSIGN_OR_RETURN(ExperimentFile exp, LoadExperimentFile(file));
  if (!options.name.empty()) exp.request["name"] = options.name;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  if (!exp.code_path.empty()) {
    // Packaging takes a while; learn first that Kiln is there and takes our credentials.
    KILN_RETURN_IF_ERROR(api->GetJson("/api/v1/me").status());
    KILN_ASSIGN_OR_RETURN(std::string package_id,
                          UploadCode(exp.code_path, "code",
                                     "List what to leave out in .kilnignore there.", *api, inv));
    exp.request["package"] = {{"id", package_id}};
  }
  absl::StatusOr<Json> created = api->PostJson("/api/v1/experiments", exp.request);
  if (!created.ok()) {
    if (created.status().code() == absl::StatusCode::kAlreadyExists) {
      return absl::Status(created.status().code(),
                          absl::StrCat(created.status().message(),
                                       " (choose another with --name NAME, or remove the old one "
                                       "with 'kiln hpo delete NAME')"));
    }
    return absl::Status(created.status().code(),
                        absl::StrCat(options.file, ": ", created.status().message()));
  }
  KILN_ASSIGN_OR_RETURN(int64_t id, base::GetInt(*created, "id"));
  std::string name = Text(*created, "name");
  if (options.json && !options.wait) {
    *inv.out << base::DumpJson(*created, 2) << "\n";
  } else if (!options.json) {
    *inv.out << id << "\n";
  }
  inv.out->flush();
  const Json& max_trials = Member(*created, "max_trials");
  *inv.err << "experiment " << id << " (" << name << ") created: "
           << (max_trials.is_number_integer() ? absl::StrCat(max_trials.get<int64_t>(), " trials")
                                              : std::string("trials"))
           << " of " << Text(*created, "algorithm") << ", "
           << Text(Member(*created, "objective"), "goal") << " "
           << Text(Member(*created, "objective"), "metric") << ".\n";
  if (!options.wait) {
    *inv.err << "Watch it with 'kiln hpo show " << id << "', its trials with 'kiln hpo trials "
             << id << "'.\n";
    return absl::OkStatus();
  }
  inv.err->flush();
  KILN_ASSIGN_OR_RETURN(Json final_state, WaitForExperiment(*api, inv, absl::StrCat(id)));
  if (options.json) {
    *inv.out << base::DumpJson(final_state, 2) << "\n";
  } else {
    const Json& best = Member(final_state, "best");
    if (best.is_object()) {
      *inv.err << "best trial " << Text(best, "number") << ": "
               << Text(Member(final_state, "objective"), "metric") << " " << Text(best, "value")
               << " with " << base::DumpJson(Member(best, "config")) << "\n";
    }
    *inv.err << "'kiln hpo trials " << id << "' lists every trial; 'kiln hpo best " << id
             << "' prints the best configuration as JSON.\n";
  }
  std::string state = Text(final_state, "state");
  if (state != "FINISHED") {
    *inv.err << "experiment " << id << " " << state;
    if (Text(final_state, "reason") != "-") *inv.err << ": " << Text(final_state, "reason");
    *inv.err << "\n";
    inv.exit_code = kExitError;
  }
  return absl::OkStatus();
}

absl::Status ListExperiments(bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer, api->GetJson("/api/v1/experiments"));
  if (json) {
    *inv.out << base::DumpJson(answer, 2) << "\n";
    return absl::OkStatus();
  }
  const Json& experiments = Member(answer, "experiments");
  if (!experiments.is_array() || experiments.empty()) {
    *inv.err << "No experiments yet. Start one with 'kiln hpo create -f experiment.yaml'.\n";
    return absl::OkStatus();
  }
  *inv.out << RenderExperimentsTable(experiments, inv.clock->NowMicros());
  return absl::OkStatus();
}

// The `show` summary of trials: the best few, best first.
constexpr size_t kShowTopTrials = 5;

absl::Status ShowExperiment(const std::string& ref, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json experiment, api->GetJson(ExperimentPath(ref)));
  if (json) {
    *inv.out << base::DumpJson(experiment, 2) << "\n";
    return absl::OkStatus();
  }
  *inv.out << RenderExperimentDetails(experiment, inv.clock->NowMicros());
  std::string id = Text(experiment, "id");
  KILN_ASSIGN_OR_RETURN(Json trials, api->GetJson(absl::StrCat(ExperimentPath(id), "/trials")));
  Json list = Member(trials, "trials");
  if (!list.is_array() || list.empty()) return absl::OkStatus();
  std::string goal = Text(Member(experiment, "objective"), "goal");
  std::vector<Json> with_value;
  for (const Json& t : list) {
    if (Member(t, "value").is_number()) with_value.push_back(t);
  }
  std::stable_sort(with_value.begin(), with_value.end(), [&](const Json& a, const Json& b) {
    double va = a["value"].get<double>(), vb = b["value"].get<double>();
    return goal == "maximize" ? va > vb : va < vb;
  });
  if (with_value.size() > kShowTopTrials) with_value.resize(kShowTopTrials);
  if (!with_value.empty()) {
    *inv.out << "\ntop trials:\n" << RenderTrialsTable(Json{{"trials", with_value}});
  }
  *inv.out << "\nall " << list.size() << " trials: kiln hpo trials " << id << "\n";
  return absl::OkStatus();
}

absl::Status ShowTrials(const std::string& ref, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json trials, api->GetJson(absl::StrCat(ExperimentPath(ref), "/trials")));
  if (json) {
    *inv.out << base::DumpJson(trials, 2) << "\n";
    return absl::OkStatus();
  }
  const Json& list = Member(trials, "trials");
  if (!list.is_array() || list.empty()) {
    *inv.err << "experiment " << ref << " has no trials yet\n";
    return absl::OkStatus();
  }
  *inv.out << RenderTrialsTable(trials);
  return absl::OkStatus();
}

absl::Status ShowBest(const std::string& ref, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json best, api->GetJson(absl::StrCat(ExperimentPath(ref), "/best")));
  if (json) {
    *inv.out << base::DumpJson(best, 2) << "\n";
    return absl::OkStatus();
  }
  // Only the configuration on stdout, so `kiln hpo best 3 > config.json` feeds `kiln run
  // --config config.json` directly.
  *inv.out << base::DumpJson(Member(best, "config"), 2) << "\n";
  *inv.err << "trial " << Text(best, "number") << ": " << Text(best, "metric") << " "
           << Text(best, "value") << " (job " << Text(best, "job_id") << ")\n";
  return absl::OkStatus();
}

absl::Status StopExperiment(const std::string& ref, bool force, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json experiment, api->PostJson(absl::StrCat(ExperimentPath(ref), "/stop",
                                                                    force ? "?force=true" : ""),
                                                       Json::object()));
  *inv.out << "experiment " << Text(experiment, "id") << " " << Text(experiment, "state") << "\n";
  *inv.err << "running trials get SIGTERM, then SIGKILL after the grace period; "
              "'kiln hpo restart "
           << Text(experiment, "id") << "' resumes the search\n";
  return absl::OkStatus();
}

absl::Status RestartExperiment(const std::string& ref, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(
      Json experiment,
      api->PostJson(absl::StrCat(ExperimentPath(ref), "/restart"), Json::object()));
  *inv.out << "experiment " << Text(experiment, "id") << " " << Text(experiment, "state") << "\n";
  return absl::OkStatus();
}

absl::Status DeleteExperiment(const std::string& ref, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer, api->DeleteJson(ExperimentPath(ref)));
  *inv.out << "experiment " << Text(answer, "id") << " deleted\n";
  return absl::OkStatus();
}

absl::Status ListAlgorithms(bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(Json answer, api->GetJson("/api/v1/experiments/algorithms"));
  if (json) {
    *inv.out << base::DumpJson(answer, 2) << "\n";
    return absl::OkStatus();
  }
  *inv.out << RenderAlgorithmsTable(Member(answer, "algorithms"));
  return absl::OkStatus();
}

void AddExperimentRef(CLI::App& command, std::string& ref) {
  command.add_option("EXPERIMENT", ref, "Experiment id, or its name")->required();
}

// Registers `kiln hpo NAME EXPERIMENT [--json]` running `fn(ref, json, inv)`.
CLI::App* AddRefCommand(CLI::App& hpo, Invocation& inv, const char* name, const char* help,
                        const char* json_help,
                        absl::Status (*fn)(const std::string&, bool, Invocation&)) {
  auto ref = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = hpo.add_subcommand(name, help);
  AddExperimentRef(*cmd, *ref);
  cmd->add_flag("--json", *json, json_help);
  internal::AddUrlOption(*cmd, inv);
  cmd->callback([&inv, ref, json, fn] {
    inv.command = [&inv, ref, json, fn] { return fn(*ref, *json, inv); };
  });
  return cmd;
}

}  // namespace

// ---------------------------------------------------------------- public

absl::StatusOr<base::Json> YamlToJson(std::string_view text, std::string_view source_name) {
  // yaml-cpp reports errors by throwing; they stop here.
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(source_name, e.mark), e.msg.empty() ? "malformed YAML" : e.msg));
  }
  try {
    return NodeToJson(root, source_name, 0);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Where(source_name, e.mark), e.msg));
  }
}

absl::StatusOr<ExperimentFile> LoadExperimentFile(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::InvalidArgumentError(absl::StrCat("-f ", path, " does not exist"));
  }
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read -f ", path, ": ", text.status().message()));
  }
  std::string name = Basename(path);
  Json doc;
  if (absl::EndsWith(path, ".json")) {
    absl::StatusOr<Json> parsed = base::ParseJson(*text);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is not valid JSON: ", parsed.status().message()));
    }
    doc = *std::move(parsed);
  } else {
    KILN_ASSIGN_OR_RETURN(doc, YamlToJson(*text, name));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        " must be a mapping of experiment fields (command, search_space, objective, ...); "
        "see examples/fashion_mnist/hpo/experiment.yaml"));
  }
  ExperimentFile out;
  if (auto code = doc.find("code"); code != doc.end()) {
    if (!code->is_string() || code->get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": code must be the path of the folder to upload, e.g. code: ./src"));
    }
    if (doc.contains("package")) {
      return absl::InvalidArgumentError(
          absl::StrCat(name,
                       ": give either code (a folder to upload) or package (an uploaded id or a "
                       "shared path), not both"));
    }
    std::string code_path = code->get<std::string>();
    if (code_path[0] != '/') {
      size_t slash = path.rfind('/');
      std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
      if (dir.empty()) dir = "/";
      code_path = absl::StrCat(dir, "/", code_path);
    }
    struct stat st {};
    if (stat(code_path.c_str(), &st) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": code ", code->get<std::string>(),
                                                     " does not exist (looked for ", code_path,
                                                     "; a relative path is taken from the "
                                                     "experiment file's folder)"));
    }
    // The canonical path reads better in messages ("packaged 5 files from .../fashion_mnist").
    char* resolved = realpath(code_path.c_str(), nullptr);
    if (resolved != nullptr) {
      code_path = resolved;
      free(resolved);
    }
    out.code_path = std::move(code_path);
    doc.erase("code");
  }
  out.request = std::move(doc);
  return out;
}

bool IsExperimentEnded(std::string_view state) {
  return state == "FINISHED" || state == "FAILED" || state == "STOPPED";
}

std::string ExperimentProgress(const base::Json& experiment) {
  const Json& progress = Member(experiment, "progress");
  int64_t complete = Count(progress, "complete"), pruned = Count(progress, "pruned"),
          failed = Count(progress, "failed"), stopped = Count(progress, "stopped"),
          running = Count(progress, "running");
  int64_t done = complete + pruned + failed + stopped;
  const Json& max_trials = Member(progress, "max_trials");
  std::string out = max_trials.is_number_integer()
                        ? absl::StrCat(done, "/", max_trials.get<int64_t>(), " trials done")
                        : absl::StrCat(done, done == 1 ? " trial done" : " trials done");
  std::vector<std::string> parts;
  if (complete) parts.push_back(absl::StrCat(complete, " complete"));
  if (pruned) parts.push_back(absl::StrCat(pruned, " pruned"));
  if (failed) parts.push_back(absl::StrCat(failed, " failed"));
  if (stopped) parts.push_back(absl::StrCat(stopped, " stopped"));
  if (!parts.empty()) absl::StrAppend(&out, " (", absl::StrJoin(parts, ", "), ")");
  absl::StrAppend(&out, ", ", running, " running");
  const Json& best = Member(experiment, "best");
  if (best.is_object()) absl::StrAppend(&out, ", best ", BestText(best));
  return out;
}

std::string RenderExperimentsTable(const base::Json& experiments, int64_t now_micros) {
  Table table({"ID", "NAME", "USER", "STATE", "ALGORITHM", "TRIALS", "BEST", "AGE"});
  for (const Json& e : experiments) {
    const Json& progress = Member(e, "progress");
    int64_t done = Count(progress, "complete") + Count(progress, "pruned") +
                   Count(progress, "failed") + Count(progress, "stopped");
    const Json& max_trials = Member(progress, "max_trials");
    std::optional<int64_t> created = TimestampField(e, "created_at");
    table.AddRow(
        {Text(e, "id"), Text(e, "name"), Text(e, "user"), Text(e, "state"), Text(e, "algorithm"),
         max_trials.is_number_integer() ? absl::StrCat(done, "/", max_trials.get<int64_t>())
                                        : absl::StrCat(done),
         BestText(Member(e, "best")), created ? FormatAge(now_micros - *created) : "-"});
  }
  return table.Render();
}

std::string RenderExperimentDetails(const base::Json& e, int64_t now_micros) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", Text(e, "id")},
      {"name", Text(e, "name")},
      {"user", Text(e, "user")},
      {"state", Text(e, "state")},
  };
  if (Text(e, "reason") != "-") rows.emplace_back("reason", Text(e, "reason"));
  if (Text(e, "description") != "-") rows.emplace_back("description", Text(e, "description"));
  rows.emplace_back("algorithm", Text(e, "algorithm"));
  rows.emplace_back("objective", ObjectiveText(Member(e, "objective")));
  rows.emplace_back("progress", ExperimentProgress(e));
  rows.emplace_back("parallelism", Text(e, "parallelism"));
  const Json& best = Member(e, "best");
  if (best.is_object()) {
    rows.emplace_back("best", absl::StrCat(BestText(best), ", job ", Text(best, "job_id")));
    rows.emplace_back("best config", base::DumpJson(Member(best, "config")));
  } else {
    rows.emplace_back("best", "-");
  }
  rows.emplace_back("created", TimeWithAge(e, "created_at", now_micros));
  rows.emplace_back("started", TimeWithAge(e, "started_at", now_micros));
  rows.emplace_back("finished", TimeWithAge(e, "finished_at", now_micros));
  if (std::optional<int64_t> started = TimestampField(e, "started_at")) {
    std::optional<int64_t> finished = TimestampField(e, "finished_at");
    rows.emplace_back("duration", FormatDuration((finished ? *finished : now_micros) - *started));
  }
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, ":", std::string(width - key.size() + 2, ' '), value, "\n");
  }
  return out;
}

std::string RenderTrialsTable(const base::Json& trials) {
  const Json& list = Member(trials, "trials");
  // Columns: every searched parameter any trial has, in name order.
  std::set<std::string> params;
  bool budgets = false;
  if (list.is_array()) {
    for (const Json& t : list) {
      const Json& p = Member(t, "params");
      if (p.is_object()) {
        for (auto it = p.begin(); it != p.end(); ++it) params.insert(it.key());
      }
      if (Count(t, "budget") > 0) budgets = true;
    }
  }
  std::vector<std::string> header = {"#", "STATE", "VALUE", "STEPS"};
  if (budgets) header.push_back("BUDGET");
  header.insert(header.end(), params.begin(), params.end());
  header.push_back("JOB");
  header.push_back("REASON");
  Table table(header);
  if (!list.is_array()) return table.Render();
  for (const Json& t : list) {
    const Json& intermediate = Member(t, "intermediate");
    std::vector<std::string> row = {
        Text(t, "number"), Text(t, "state"), Text(t, "value"),
        absl::StrCat(intermediate.is_array() ? intermediate.size() : 0)};
    if (budgets) row.push_back(Count(t, "budget") > 0 ? Text(t, "budget") : "-");
    const Json& p = Member(t, "params");
    for (const std::string& name : params) {
      auto it = p.is_object() ? p.find(name) : p.end();
      row.push_back(p.is_object() && it != p.end() && !it->is_null() ? ValueText(*it) : "-");
    }
    row.push_back(Text(t, "job_id"));
    row.push_back(Text(t, "reason"));
    table.AddRow(std::move(row));
  }
  return table.Render();
}

std::string RenderAlgorithmsTable(const base::Json& algorithms) {
  Table table({"NAME", "WMLA-NAME", "PARAMETERS", "DESCRIPTION"});
  if (!algorithms.is_array()) return table.Render();
  for (const Json& a : algorithms) {
    std::vector<std::string> params;
    // The native CLI shows the native parameter names; WMLA's when there are none.
    const Json& native = Member(a, "native_params");
    const Json& p = native.is_array() && !native.empty() ? native : Member(a, "params");
    if (p.is_array()) {
      for (const Json& name : p) params.push_back(ValueText(name));
    }
    table.AddRow({Text(a, "native_name"), Text(a, "name"),
                  params.empty() ? "-" : absl::StrJoin(params, ","), Text(a, "description")});
  }
  return table.Render();
}

namespace internal {

void RegisterHpoCommands(CLI::App& app, Invocation& inv) {
  CLI::App* hpo = app.add_subcommand(
      "hpo", "Hyperparameter search: create experiments from a YAML file, watch their trials");
  hpo->require_subcommand(1);
  hpo->footer(
      "An experiment runs your command many times, each trial with its own config.json,\n"
      "and searches for the configuration with the best objective metric.\n"
      "Example: kiln hpo create -f examples/fashion_mnist/hpo/experiment.yaml --wait\n"
      "The experiment file is described in docs/api.md, \"Experiments\".");

  auto create = std::make_shared<CreateOptions>();
  CLI::App* create_cmd = hpo->add_subcommand(
      "create", "Create an experiment from a YAML (or JSON) file and start its trials");
  create_cmd->add_option("-f,--file", create->file, "Experiment file (YAML, or .json)")
      ->type_name("FILE")
      ->required();
  create_cmd->add_option("--name", create->name, "Experiment name (overrides the file's name)")
      ->type_name("NAME");
  create_cmd->add_flag("--wait", create->wait,
                       "Wait until the experiment ends, printing its progress; exit 1 unless it "
                       "FINISHED");
  create_cmd->add_flag("--json", create->json,
                       "Print the experiment record as JSON instead of the id (the final record "
                       "with --wait)");
  internal::AddUrlOption(*create_cmd, inv);
  create_cmd->footer(
      "The file holds the fields of POST /api/v1/experiments (docs/api.md), plus\n"
      "'code: DIR': a folder (relative to the file) packaged and uploaded for every trial.\n"
      "Example:\n"
      "  name: fmnist-tpe\n"
      "  code: ..\n"
      "  command: [/usr/bin/python3, train.py]\n"
      "  search_space:\n"
      "    lr: {type: double, low: 0.001, high: 0.3, log: true}\n"
      "    hidden: {type: int, low: 32, high: 512, step: 32}\n"
      "  algorithm: tpe\n"
      "  objective: {metric: accuracy, goal: maximize}\n"
      "  max_trials: 12\n"
      "  parallelism: 2\n"
      "Prints the experiment id on stdout; progress goes to stderr.");
  create_cmd->callback(
      [&inv, create] { inv.command = [&inv, create] { return CreateExperiment(*create, inv); }; });

  auto list_json = std::make_shared<bool>(false);
  CLI::App* list = hpo->add_subcommand("list", "List experiments, newest first");
  list->alias("ls");
  list->add_flag("--json", *list_json, "Print {\"experiments\": [records]} as JSON");
  internal::AddUrlOption(*list, inv);
  list->callback([&inv, list_json] {
    inv.command = [&inv, list_json] { return ListExperiments(*list_json, inv); };
  });

  AddRefCommand(*hpo, inv, "show",
                "Show an experiment's state, progress, best trial so far and its top trials",
                "Print the experiment record as JSON", ShowExperiment);
  AddRefCommand(*hpo, inv, "trials",
                "List an experiment's trials: state, objective value, parameters, job, reason",
                "Print {\"trials\": [...]} with every field as JSON", ShowTrials);
  CLI::App* best = AddRefCommand(
      *hpo, inv, "best", "Print the best trial's configuration as JSON (pipe it to a file)",
      "Print the whole best-trial record (number, value, config, job) as JSON", ShowBest);
  best->footer(
      "Example: kiln hpo best 3 > config.json && kiln run --config config.json -- python3 "
      "train.py");

  auto stop_ref = std::make_shared<std::string>();
  auto stop_force = std::make_shared<bool>(false);
  CLI::App* stop = hpo->add_subcommand(
      "stop", "Stop an experiment: no new trials; running trials are killed and marked STOPPED");
  AddExperimentRef(*stop, *stop_ref);
  stop->add_flag("--force", *stop_force, "End it even if its trials' jobs do not answer");
  internal::AddUrlOption(*stop, inv);
  stop->callback([&inv, stop_ref, stop_force] {
    inv.command = [&inv, stop_ref, stop_force] {
      return StopExperiment(*stop_ref, *stop_force, inv);
    };
  });

  auto restart_ref = std::make_shared<std::string>();
  CLI::App* restart = hpo->add_subcommand(
      "restart", "Resume a STOPPED or FAILED experiment; finished trials are kept");
  AddExperimentRef(*restart, *restart_ref);
  internal::AddUrlOption(*restart, inv);
  restart->callback([&inv, restart_ref] {
    inv.command = [&inv, restart_ref] { return RestartExperiment(*restart_ref, inv); };
  });

  auto delete_ref = std::make_shared<std::string>();
  CLI::App* del = hpo->add_subcommand(
      "delete", "Delete an ended experiment and its trial records (the trials' jobs stay)");
  AddExperimentRef(*del, *delete_ref);
  internal::AddUrlOption(*del, inv);
  del->callback([&inv, delete_ref] {
    inv.command = [&inv, delete_ref] { return DeleteExperiment(*delete_ref, inv); };
  });

  auto algorithms_json = std::make_shared<bool>(false);
  CLI::App* algorithms =
      hpo->add_subcommand("algorithms", "List the search algorithms and their parameters");
  algorithms->add_flag("--json", *algorithms_json, "Print the list as JSON");
  internal::AddUrlOption(*algorithms, inv);
  algorithms->callback([&inv, algorithms_json] {
    inv.command = [&inv, algorithms_json] { return ListAlgorithms(*algorithms_json, inv); };
  });
}

}  // namespace internal
}  // namespace kiln::cli
