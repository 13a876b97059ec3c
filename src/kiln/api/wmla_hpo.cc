#include "kiln/api/wmla_hpo.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/base/status.h"
#include "kiln/hpo/grid_sampler.h"

namespace kiln::api {
namespace {

using base::Json;

constexpr size_t kMaxDataBytes = 16 << 20;

bool IsExperimentGrid(const std::string& algorithm) {
  std::string lower = absl::AsciiStrToLower(algorithm);
  return lower == "experimentgridsearch" || lower == "experiment_grid";
}

std::string Shown(const Json& value) {
  std::string text = base::DumpJson(value);
  return text.size() > 64 ? text.substr(0, 64) + "..." : text;
}

absl::Status CheckKnownFields(const Json& obj, const std::string& where,
                              std::initializer_list<const char*> known) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    if (ok) continue;
    std::string list;
    for (const char* k : known) absl::StrAppend(&list, list.empty() ? "" : ", ", k);
    return absl::InvalidArgumentError(absl::StrCat("unknown field \"", where, it.key(),
                                                   "\" in the hpo_input; known there: ", list));
  }
  return absl::OkStatus();
}

// WMLA's server (Jackson) reads "4" as 4: so does Kiln.
absl::StatusOr<int64_t> LenientInt(const Json& obj, const char* field, const std::string& path,
                                   int64_t fallback, const char* example) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return fallback;
  int64_t out = 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      return static_cast<int64_t>(d);
    }
  } else if (it->is_string() &&
             absl::SimpleAtoi(std::string(absl::StripAsciiWhitespace(it->get<std::string>())),
                              &out)) {
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("field \"", path, "\" must be an integer (", example, "), got ", Shown(*it)));
}

absl::StatusOr<std::optional<double>> LenientDouble(const Json& obj, const char* field,
                                                    const std::string& path) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  double out = 0;
  if (it->is_number()) {
    out = it->get<double>();
  } else if (!it->is_string() ||
             !absl::SimpleAtod(std::string(absl::StripAsciiWhitespace(it->get<std::string>())),
                               &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", path, "\" must be a number, e.g. 3, got ", Shown(*it)));
  }
  if (!std::isfinite(out)) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", path, "\" must be finite"));
  }
  return out;
}

absl::StatusOr<std::string> RequiredString(const Json& obj, const char* field,
                                           const std::string& path, const char* example) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", path, "\" is required, e.g. ", example));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", path, "\" must be a string, e.g. ",
                                                   example, ", got ", Shown(*it)));
  }
  return it->get<std::string>();
}

// algoParams: [{"name": "RandomSeed", "value": "7"}]. Values are strings in WMLA; numbers
// and booleans are turned into their text, as a notebook's json.dumps would write them.
absl::StatusOr<Json> NormalizeAlgoParams(const Json& algo_def) {
  auto it = algo_def.find("algoParams");
  if (it == algo_def.end() || it->is_null()) return Json();
  if (!it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"algoDef.algoParams\" must be a list like [{\"name\": \"RandomSeed\", \"value\": "
        "\"7\"}], got ",
        Shown(*it)));
  }
  Json out = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& p = (*it)[i];
    std::string where = absl::StrCat("algoDef.algoParams[", i, "]");
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string() ||
        p["name"].get<std::string>().empty() || !p.contains("value")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"", where, "\" must be {\"name\": \"...\", \"value\": \"...\"}, got ", Shown(p)));
    }
    const Json& v = p["value"];
    std::string value;
    if (v.is_string()) {
      value = v.get<std::string>();
    } else if (v.is_number() || v.is_boolean()) {
      value = base::DumpJson(v);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"", where, ".value\" must be a string, e.g. \"20\", got ", Shown(v)));
    }
    out.push_back({{"name", p["name"]}, {"value", value}});
  }
  return out;
}

// A non-empty list, or nullopt when absent, null or empty.
absl::StatusOr<std::optional<Json>> OptionalList(const Json& obj, const char* field,
                                                 const char* example) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", field, "\" must be a list, e.g. ", example, ", got ", Shown(*it)));
  }
  if (it->empty()) return std::nullopt;
  return *it;
}

std::string Lower(const Json& value) {
  return value.is_string() ? absl::AsciiStrToLower(value.get<std::string>()) : std::string();
}

// ---- HpoTaskState ----

// The WMLA data type of each hyperparameter ("double", "int", "str"), in the order the
// request declared them.
std::vector<std::pair<std::string, std::string>> DeclaredTypes(const master::ExperimentSpec& spec) {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::string> seen;
  auto add = [&](const Json& list) {
    if (!list.is_array()) return;
    for (const Json& hp : list) {
      if (!hp.is_object() || !hp.contains("name") || !hp["name"].is_string()) continue;
      std::string name = hp["name"].get<std::string>();
      if (seen.insert(name).second) out.emplace_back(name, Lower(hp.value("dataType", Json())));
    }
  };
  if (spec.wmla_space) add(spec.search_space);
  if (spec.wmla_experiments.is_array()) {
    for (const Json& e : spec.wmla_experiments) {
      if (e.is_object()) add(e.value("hyperParams", Json()));
    }
  }
  return out;
}

// Hyperband's ResourceName: its config value is shown as a string, as WMLA does.
std::string ResourceName(const master::ExperimentSpec& spec) {
  if (!spec.algorithm_params.is_array()) return "";
  for (const Json& p : spec.algorithm_params) {
    if (p.is_object() && p.value("name", Json()) == "ResourceName" && p["value"].is_string()) {
      return p["value"].get<std::string>();
    }
  }
  return "";
}

std::string FixedVal(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  return base::DumpJson(value);
}

std::string TypeOf(const Json& value) {
  if (value.is_number_integer()) return "int";
  if (value.is_number()) return "double";
  return "str";
}

Json HyperParamsOf(const master::ExperimentSpec& spec, const store::TrialRow& trial) {
  Json out = Json::array();
  auto config = base::ParseJson(trial.config_json);
  if (!config.ok() || !config->is_object()) return out;
  std::string resource = ResourceName(spec);
  auto entry = [&](const std::string& name, const std::string& declared, const Json& value) {
    std::string type = name == resource ? "str" : declared.empty() ? TypeOf(value) : declared;
    return Json{
        {"name", name}, {"dataType", type}, {"userDefined", false}, {"fixedVal", FixedVal(value)}};
  };
  std::set<std::string> done;
  for (const auto& [name, type] : DeclaredTypes(spec)) {
    auto it = config->find(name);
    if (it == config->end()) continue;
    out.push_back(entry(name, type, *it));
    done.insert(name);
  }
  for (auto it = config->begin(); it != config->end(); ++it) {
    if (!done.count(it.key())) out.push_back(entry(it.key(), "", it.value()));
  }
  return out;
}

// Min, max and latest of one additional metric; the validation group "test" when the
// trial reported several groups, as for the objective.
std::optional<Json> MetricSummary(const std::string& name,
                                  const std::vector<store::MetricPoint>& points) {
  if (points.empty()) return std::nullopt;
  std::string group = points.front().group;
  for (const auto& p : points) {
    if (p.group == "test") group = "test";
  }
  std::optional<double> min, max;
  const store::MetricPoint* latest = nullptr;
  for (const auto& p : points) {
    if (p.group != group) continue;
    min = std::min(min.value_or(p.value), p.value);
    max = std::max(max.value_or(p.value), p.value);
    if (latest == nullptr || p.step >= latest->step) latest = &p;
  }
  return Json{{"name", name}, {"min", *min}, {"max", *max}, {"latest", latest->value}};
}

std::optional<double> BestIntermediate(const master::ExperimentSpec& spec,
                                       const store::TrialRow& trial) {
  auto j = base::ParseJson(trial.intermediate_json);
  if (!j.ok() || !j->is_object()) return std::nullopt;
  std::optional<double> best;
  bool maximize = spec.objective.goal == master::ObjectiveGoal::kMaximize;
  for (auto it = j->begin(); it != j->end(); ++it) {
    if (!it.value().is_number()) continue;
    double v = it.value().get<double>();
    if (!best || (maximize ? v > *best : v < *best)) best = v;
  }
  return best;
}

std::optional<int64_t> ExperimentIndex(const store::TrialRow& trial) {
  auto j = base::ParseJson(trial.params_json);
  if (!j.ok() || !j->is_object()) return std::nullopt;
  auto it = j->find(hpo::ExperimentGridSampler::kExperimentKey);
  if (it == j->end() || !it->is_number()) return std::nullopt;
  double index = it->get<double>();
  // Range-checked before the conversion, which is undefined for huge values.
  if (!(index >= 0 && index < 1e9)) return std::nullopt;
  return static_cast<int64_t>(index);
}

std::string ExperimentState(const store::TrialRow& trial,
                            const std::optional<store::JobRecord>& job) {
  using store::JobState;
  using store::TrialState;
  switch (trial.state) {
    case TrialState::kRunning:
      if (!job) return "SUBMITTED";
      if (job->state == JobState::kQueued || job->state == JobState::kScheduled) {
        return "SUBMITTED";
      }
      return "RUNNING";  // running, or ended and being accounted
    case TrialState::kComplete:
      return "FINISHED";
    case TrialState::kPruned:  // stopped early by the search itself
      return "KILLED";
    case TrialState::kFailed:
      return job && job->state == JobState::kKilled ? "KILLED" : "FAILED";
    case TrialState::kStopped:  // the task was stopped while it ran
      return "KILLED";
  }
  return "FAILED";
}

Json ExperimentJson(const master::ExperimentSpec& spec, const store::TrialRow& trial,
                    const TrialJob* info) {
  const std::optional<store::JobRecord> no_job;
  const std::optional<store::JobRecord>& job = info ? info->job : no_job;
  Json id = trial.number;
  if (auto index = ExperimentIndex(trial);
      index && spec.wmla_experiments.is_array() && *index >= 0 &&
      *index < static_cast<int64_t>(spec.wmla_experiments.size())) {
    const Json& e = spec.wmla_experiments[*index];
    if (e.is_object() && e.contains("id")) id = e["id"];
  }
  std::optional<double> value = trial.value;
  if (!value && trial.state == store::TrialState::kRunning) value = BestIntermediate(spec, trial);
  std::optional<int64_t> start = job && job->started_at ? job->started_at : trial.started_at;
  std::optional<int64_t> end = job && job->finished_at ? job->finished_at : trial.finished_at;
  Json metrics = Json::array();
  if (info) {
    for (const auto& [name, strategy] : spec.additional_metrics) {
      auto it = info->metrics.find(name);
      if (it == info->metrics.end()) continue;
      if (auto summary = MetricSummary(name, it->second)) metrics.push_back(*summary);
    }
  }
  Json out = {{"id", id},
              {"state", ExperimentState(trial, job)},
              {"metricVal", value.value_or(kWmlaNoMetric)},
              {"appId", trial.job_id ? std::to_string(*trial.job_id) : std::string()},
              {"startTime", start ? FormatWmlaTime(*start) : std::string()},
              {"endTime", end ? FormatWmlaTime(*end) : std::string()},
              {"hyperParams", HyperParamsOf(spec, trial)},
              {"metrics", metrics}};
  if (!trial.reason.empty()) out["reason"] = trial.reason;
  return out;
}

// An ExperimentGridSearch entry no trial has run yet.
Json NotRunJson(const Json& experiment, size_t index) {
  Json hyper = Json::array();
  for (const Json& hp : experiment.value("hyperParams", Json::array())) {
    if (!hp.is_object()) continue;
    hyper.push_back({{"name", hp.value("name", Json(""))},
                     {"dataType", Lower(hp.value("dataType", Json("str")))},
                     {"userDefined", false},
                     {"fixedVal", FixedVal(hp.value("fixedVal", Json("")))}});
  }
  return {{"id", experiment.value("id", Json(index))},
          {"state", "NOTRUN"},
          {"metricVal", kWmlaNoMetric},
          {"appId", ""},
          {"startTime", ""},
          {"endTime", ""},
          {"hyperParams", hyper},
          {"metrics", Json::array()}};
}

Json AlgoDefEcho(const master::ExperimentSpec& spec) {
  Json a = spec.wmla_request.is_object() && spec.wmla_request.contains("algoDef") &&
                   spec.wmla_request["algoDef"].is_object()
               ? spec.wmla_request["algoDef"]
               : Json::object();
  a.erase("maxParallelJobNum");  // echoed under IBM's spelling
  a.erase("maxParalleJob");
  if (!a.contains("algorithm")) a["algorithm"] = spec.algorithm;
  a["maxRunTime"] = spec.max_run_minutes;
  a["maxJobNum"] = spec.max_trials;
  a["maxParalleJobNum"] = spec.parallelism;
  a["objectiveMetric"] = spec.objective.metric;
  if (!a.contains("objective") || !a["objective"].is_string()) {
    a["objective"] =
        spec.objective.goal == master::ObjectiveGoal::kMaximize ? "maximize" : "minimize";
  }
  if (!a.contains("algoParams") || a["algoParams"].is_null()) {
    a["algoParams"] = spec.algorithm_params.is_array() ? spec.algorithm_params : Json::array();
  }
  return a;
}

Json HyperParamsEcho(const master::ExperimentSpec& spec) {
  Json out = Json::array();
  if (spec.wmla_space && spec.search_space.is_array() && !spec.search_space.empty()) {
    for (Json hp : spec.search_space) {
      if (!hp.is_object()) continue;
      for (const char* key : {"type", "dataType"}) {
        if (hp.contains(key) && hp[key].is_string()) hp[key] = Lower(hp[key]);
      }
      hp["userDefined"] = false;
      out.push_back(std::move(hp));
    }
  } else if (spec.wmla_experiments.is_array() && !spec.wmla_experiments.empty() &&
             spec.wmla_experiments[0].is_object()) {
    // Grid experiments fix every value: WMLA echoes their parameters as type "fix".
    for (const Json& hp : spec.wmla_experiments[0].value("hyperParams", Json::array())) {
      if (!hp.is_object()) continue;
      out.push_back({{"name", hp.value("name", Json(""))},
                     {"type", "fix"},
                     {"dataType", Lower(hp.value("dataType", Json("str")))},
                     {"userDefined", false}});
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<master::ExperimentSpec> HpoInputToSpec(const Json& input,
                                                      const WmlaJobOptions& options) {
  if (!input.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the hpo_input (form field \"data\") must be a JSON object with modelSpec, algoDef and "
        "hyperParams, got ",
        Shown(input)));
  }
  KILN_RETURN_IF_ERROR(CheckKnownFields(
      input, "",
      {"hpoName", "modelSpec", "algoDef", "hyperParams", "experiments", "modelName", "resDef"}));
  master::ExperimentSpec spec;
  spec.dialect = "wmla";
  spec.wmla_space = true;
  spec.wmla_request = input;
  if (input.contains("hpoName") && !input["hpoName"].is_null()) {
    if (!input["hpoName"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"hpoName\" must be a string, e.g. \"mnist-lr\", got ", Shown(input["hpoName"])));
    }
    spec.name = input["hpoName"].get<std::string>();
  }

  // modelSpec: what each experiment runs.
  if (!input.contains("modelSpec") || !input["modelSpec"].is_object()) {
    return absl::InvalidArgumentError(
        "field \"modelSpec\" is required: {\"args\": \"--exec-start PyTorch --model-main "
        "train.py --epochs 3\"}");
  }
  const Json& model_spec = input["modelSpec"];
  KILN_RETURN_IF_ERROR(CheckKnownFields(model_spec, "modelSpec.", {"args", "sigName"}));
  KILN_ASSIGN_OR_RETURN(
      std::string args_text,
      RequiredString(model_spec, "args", "modelSpec.args",
                     "\"--exec-start PyTorch --model-main train.py --model-dir code\""));
  auto args = ParseWmlaArgs(args_text);
  if (!args.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"modelSpec.args\": ", std::string(args.status().message())));
  }
  spec.trial = WmlaArgsToJobSpec(*args, options);

  // algoDef: the search.
  if (!input.contains("algoDef") || !input["algoDef"].is_object()) {
    return absl::InvalidArgumentError(
        "field \"algoDef\" is required: {\"algorithm\": \"Random\", \"maxJobNum\": 4, "
        "\"maxParalleJobNum\": 2, \"objectiveMetric\": \"loss\", \"objective\": \"minimize\"}");
  }
  const Json& algo = input["algoDef"];
  KILN_RETURN_IF_ERROR(
      CheckKnownFields(algo, "algoDef.",
                       {"algorithm", "maxRunTime", "maxJobNum", "maxParalleJobNum",
                        "maxParallelJobNum", "maxParalleJob", "objectiveMetric", "objective",
                        "additionalMetrics", "hyperbandEta", "algoParams"}));
  KILN_ASSIGN_OR_RETURN(spec.algorithm, RequiredString(algo, "algorithm", "algoDef.algorithm",
                                                       "\"Random\", \"Tpe\", \"Bayesian\", "
                                                       "\"Hyperband\" or "
                                                       "\"ExperimentGridSearch\""));
  KILN_ASSIGN_OR_RETURN(spec.max_run_minutes,
                        LenientInt(algo, "maxRunTime", "algoDef.maxRunTime", -1,
                                   "minutes, e.g. 60, or -1 for unlimited"));
  KILN_ASSIGN_OR_RETURN(spec.max_trials, LenientInt(algo, "maxJobNum", "algoDef.maxJobNum", -1,
                                                    "e.g. 20, or -1 for unlimited"));
  // IBM's spelling first; the correct one and the swagger prose's "maxParalleJob" too.
  const char* parallel_field = "maxParalleJobNum";
  for (const char* alias : {"maxParallelJobNum", "maxParalleJob"}) {
    if (!algo.contains(parallel_field) && algo.contains(alias)) parallel_field = alias;
  }
  KILN_ASSIGN_OR_RETURN(int64_t parallel,
                        LenientInt(algo, parallel_field, absl::StrCat("algoDef.", parallel_field),
                                   1, "experiments at once, e.g. 2"));
  // Clamped into int's range so ValidateExperimentSpec reports the value as out of range.
  spec.parallelism = static_cast<int>(std::clamp<int64_t>(parallel, -1, 1 << 30));
  KILN_ASSIGN_OR_RETURN(spec.objective.metric,
                        RequiredString(algo, "objectiveMetric", "algoDef.objectiveMetric",
                                       "\"loss\" (a key the script writes to "
                                       "val_dict_list.json)"));
  spec.objective.reduce = master::ObjectiveReduce::kBest;  // WMLA's metricVal: the best row
  if (algo.contains("objective") && !algo["objective"].is_null()) {
    std::string goal = Lower(algo["objective"]);
    if (goal == "maximize") {
      spec.objective.goal = master::ObjectiveGoal::kMaximize;
    } else if (goal != "minimize") {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"algoDef.objective\" must be \"minimize\" or \"maximize\", got ",
                       Shown(algo["objective"])));
    }
  }
  if (algo.contains("additionalMetrics") && !algo["additionalMetrics"].is_null()) {
    const Json& extra = algo["additionalMetrics"];
    if (!extra.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"algoDef.additionalMetrics\" must map metric names to minimize, maximize or "
          "latest, e.g. {\"acc\": \"maximize\"}, got ",
          Shown(extra)));
    }
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      if (it.key().empty()) {
        return absl::InvalidArgumentError(
            "field \"algoDef.additionalMetrics\" has an empty metric name");
      }
      // IBM: "minimize|maximize|latest (anything else => latest)".
      std::string strategy = Lower(it.value());
      if (strategy != "minimize" && strategy != "maximize") strategy = "latest";
      spec.additional_metrics[it.key()] = strategy;
    }
  }
  KILN_ASSIGN_OR_RETURN(spec.hyperband_eta,
                        LenientDouble(algo, "hyperbandEta", "algoDef.hyperbandEta"));
  KILN_ASSIGN_OR_RETURN(spec.algorithm_params, NormalizeAlgoParams(algo));

  // The space: hyperParams, or ExperimentGridSearch's explicit experiments.
  KILN_ASSIGN_OR_RETURN(
      std::optional<Json> hyper_params,
      OptionalList(input, "hyperParams",
                   "[{\"name\": \"lr\", \"type\": \"Range\", \"dataType\": \"DOUBLE\", "
                   "\"minDbVal\": 0.001, \"maxDbVal\": 0.1}]"));
  KILN_ASSIGN_OR_RETURN(
      std::optional<Json> experiments,
      OptionalList(input, "experiments",
                   "[{\"id\": 1, \"hyperParams\": [{\"name\": \"lr\", \"dataType\": "
                   "\"DOUBLE\", \"fixedVal\": \"0.1\"}]}]"));
  bool grid = IsExperimentGrid(spec.algorithm);
  if (hyper_params && experiments) {
    return absl::InvalidArgumentError(
        "fields \"hyperParams\" and \"experiments\" exclude each other: give hyperParams (a "
        "space to search), or experiments (fixed configurations, with ExperimentGridSearch)");
  }
  if (experiments && !grid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"experiments\" is for algoDef.algorithm \"ExperimentGridSearch\" only; with \"",
        spec.algorithm, "\", describe the space in \"hyperParams\""));
  }
  if (!hyper_params && !experiments && !grid) {
    return absl::InvalidArgumentError(
        "field \"hyperParams\" is required: the space to search, e.g. [{\"name\": \"lr\", "
        "\"type\": \"Range\", \"dataType\": \"DOUBLE\", \"minDbVal\": 0.001, \"maxDbVal\": "
        "0.1}]");
  }
  spec.search_space = hyper_params ? *hyper_params : Json::array();
  if (experiments) spec.wmla_experiments = *experiments;

  KILN_RETURN_IF_ERROR(master::ValidateExperimentSpec(spec));
  return spec;
}

absl::StatusOr<master::ExperimentSpec> ParseHpoData(std::string_view data,
                                                    const WmlaJobOptions& options) {
  if (absl::StripAsciiWhitespace(std::string(data)).empty()) {
    return absl::InvalidArgumentError(
        "the form field \"data\" is empty: send the hpo_input as JSON, e.g. with Python "
        "requests: data={'data': json.dumps(hpo_input)}");
  }
  auto parsed = base::ParseJson(data, kMaxDataBytes);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the form field \"data\" is not valid JSON (", std::string(parsed.status().message()),
        "): send the hpo_input as JSON, e.g. data={'data': json.dumps(hpo_input)}"));
  }
  return HpoInputToSpec(*parsed, options);
}

base::Json HpoTaskStateToJson(const master::ExperimentView& view,
                              const std::map<int64_t, TrialJob>& jobs, int64_t now_micros) {
  const master::ExperimentSpec& spec = view.spec;
  const store::ExperimentRecord& record = view.record;
  Json experiments = Json::array();
  std::optional<Json> best;
  std::set<int64_t> asked;  // ExperimentGridSearch entries a trial ran
  for (const store::TrialRow& trial : view.trials) {
    auto it = jobs.find(trial.number);
    Json e = ExperimentJson(spec, trial, it == jobs.end() ? nullptr : &it->second);
    if (auto index = ExperimentIndex(trial)) asked.insert(*index);
    if (view.best_trial && *view.best_trial == trial.number) best = e;
    experiments.push_back(std::move(e));
  }
  if (IsExperimentGrid(spec.algorithm) && spec.wmla_experiments.is_array()) {
    for (size_t i = 0; i < spec.wmla_experiments.size(); ++i) {
      if (!asked.count(static_cast<int64_t>(i)) && spec.wmla_experiments[i].is_object()) {
        experiments.push_back(NotRunJson(spec.wmla_experiments[i], i));
      }
    }
  }
  int ended = view.complete + view.failed + view.pruned;
  // Out of maxJobNum, printed as -1 when unlimited (as WMLA does), except that an
  // ExperimentGridSearch knows its total: its list, cut at maxJobNum.
  int64_t total = spec.max_trials;
  if (IsExperimentGrid(spec.algorithm) && spec.wmla_experiments.is_array()) {
    int64_t listed = static_cast<int64_t>(spec.wmla_experiments.size());
    total = total > 0 ? std::min(total, listed) : listed;
  }
  int64_t start = record.started_at.value_or(record.created_at);
  int64_t end = record.finished_at.value_or(now_micros);
  Json out = {{"hpoName", record.name},
              {"state", store::ExperimentStateName(record.state)},
              {"progress", absl::StrCat(ended, "/", total)},
              {"running", view.running},
              {"complete", view.complete + view.pruned},
              {"failed", view.failed},
              {"createtime", FormatWmlaTime(record.created_at)},
              {"creator", record.username},
              {"duration", FormatWmlaDuration(std::max<int64_t>(0, end - start))},
              {"algoDef", AlgoDefEcho(spec)},
              {"hyperParams", HyperParamsEcho(spec)},
              {"experiments", std::move(experiments)},
              {"best", best ? *best : Json(nullptr)}};
  if (!record.reason.empty()) out["reason"] = record.reason;
  return out;
}

const char* WmlaJobState(store::JobState state) {
  switch (state) {
    case store::JobState::kQueued:
    case store::JobState::kScheduled:
      return "SUBMITTED";
    case store::JobState::kRunning:
      return "RUNNING";
    case store::JobState::kFinished:
      return "FINISHED";
    case store::JobState::kFailed:
      return "ERROR";
    case store::JobState::kKilled:
      return "KILLED";
  }
  return "ERROR";
}

std::string FormatWmlaTime(int64_t micros) {
  std::time_t seconds = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return absl::StrFormat("%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string FormatWmlaDuration(int64_t micros) {
  int64_t s = std::max<int64_t>(0, micros / 1'000'000);
  return absl::StrFormat("%02d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace kiln::api
