#include "kiln/master/experiment_spec.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"

namespace kiln::master {
namespace {

constexpr size_t kMaxNameChars = 128;
constexpr size_t kMaxDescriptionChars = 4096;
constexpr int kMaxParallelism = 1000;
constexpr int kMaxRetries = 100;

// The native fields: the trial's (handed to ParseJobSpec) and the search's.
constexpr const char* kTrialFields[] = {"command", "package", "resources",
                                        "env",     "config",  "workdir"};
constexpr const char* kSearchFields[] = {
    "name",      "description", "search_space",    "algorithm",   "pruner",      "experiments",
    "objective", "max_trials",  "max_run_minutes", "parallelism", "max_retries", "seed"};

bool IsOneOf(const std::string& key, const auto& names) {
  for (const char* n : names) {
    if (key == n) return true;
  }
  return false;
}

// The field's name as the user wrote it in their dialect.
std::string Field(const ExperimentSpec& spec, const char* native, const char* wmla) {
  return spec.dialect == "wmla" ? wmla : native;
}

absl::StatusOr<ObjectiveGoal> ParseGoal(const std::string& text) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "minimize") return ObjectiveGoal::kMinimize;
  if (lower == "maximize") return ObjectiveGoal::kMaximize;
  return absl::InvalidArgumentError(absl::StrCat("objective.goal \"", text,
                                                 "\" is not a goal; use \"minimize\" or "
                                                 "\"maximize\""));
}

absl::StatusOr<ObjectiveReduce> ParseReduce(const std::string& text) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "best") return ObjectiveReduce::kBest;
  if (lower == "last") return ObjectiveReduce::kLast;
  return absl::InvalidArgumentError(absl::StrCat(
      "objective.reduce \"", text,
      "\" is not a reduction; use \"best\" (the best value over the steps) or \"last\""));
}

absl::StatusOr<ObjectiveSpec> ParseObjective(const base::Json& body) {
  if (!body.contains("objective") || body["objective"].is_null()) {
    return absl::InvalidArgumentError(
        "field \"objective\" is required: {\"metric\": \"loss\", \"goal\": \"minimize\"}");
  }
  const base::Json& j = body["objective"];
  ObjectiveSpec objective;
  if (j.is_string()) {
    objective.metric = j.get<std::string>();
    return objective;
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        "field \"objective\" must be a metric name or {\"metric\": \"loss\", \"goal\": "
        "\"minimize\" | \"maximize\", \"reduce\": \"best\" | \"last\"}");
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "metric" && it.key() != "goal" && it.key() != "reduce") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field \"objective.", it.key(), "\"; known: metric, goal, reduce"));
    }
  }
  KILN_ASSIGN_OR_RETURN(objective.metric, base::GetString(j, "metric"));
  KILN_ASSIGN_OR_RETURN(std::string goal, base::GetStringOr(j, "goal", "minimize"));
  KILN_ASSIGN_OR_RETURN(objective.goal, ParseGoal(goal));
  KILN_ASSIGN_OR_RETURN(std::string reduce, base::GetStringOr(j, "reduce", "best"));
  KILN_ASSIGN_OR_RETURN(objective.reduce, ParseReduce(reduce));
  return objective;
}

absl::StatusOr<std::optional<uint64_t>> ParseSeed(const base::Json& body) {
  if (!body.contains("seed") || body["seed"].is_null()) return std::nullopt;
  const base::Json& j = body["seed"];
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(j.get<int64_t>());
  }
  return absl::InvalidArgumentError("field \"seed\" must be a non-negative integer, e.g. 42");
}

const char* GoalName(ObjectiveGoal goal) {
  return goal == ObjectiveGoal::kMaximize ? "maximize" : "minimize";
}
const char* ReduceName(ObjectiveReduce reduce) {
  return reduce == ObjectiveReduce::kLast ? "last" : "best";
}

}  // namespace

absl::StatusOr<ExperimentSpec> ParseExperimentSpec(const base::Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        "the experiment request must be a JSON object (see docs/api.md, \"Experiments\")");
  }
  base::Json trial = base::Json::object();
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (IsOneOf(it.key(), kTrialFields)) {
      trial[it.key()] = it.value();
    } else if (!IsOneOf(it.key(), kSearchFields)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", it.key(),
          "\" in the experiment request; known fields: name, description, command, package, "
          "workdir, resources, env, config, search_space, algorithm, pruner, experiments, "
          "objective, max_trials, max_run_minutes, parallelism, max_retries, seed"));
    }
  }
  ExperimentSpec spec;
  spec.dialect = "native";
  KILN_ASSIGN_OR_RETURN(spec.name, base::GetStringOr(body, "name", ""));
  KILN_ASSIGN_OR_RETURN(spec.description, base::GetStringOr(body, "description", ""));
  if (spec.description.size() > kMaxDescriptionChars) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"description\" must be at most ", kMaxDescriptionChars, " bytes"));
  }
  if (!trial.contains("command")) {
    return absl::InvalidArgumentError(
        "field \"command\" is required: the trial's command, e.g. [\"python3\", \"train.py\"]");
  }
  KILN_ASSIGN_OR_RETURN(spec.trial, ParseJobSpec(trial));

  if (!body.contains("search_space") || body["search_space"].is_null()) {
    spec.search_space = base::Json::object();
  } else if (!body["search_space"].is_object()) {
    return absl::InvalidArgumentError(
        "field \"search_space\" must be an object mapping names to parameters, e.g. {\"lr\": "
        "{\"type\": \"double\", \"low\": 0.0001, \"high\": 0.1, \"log\": true}}");
  } else {
    spec.search_space = body["search_space"];
  }
  spec.wmla_space = false;

  if (body.contains("algorithm") && !body["algorithm"].is_null()) {
    const base::Json& a = body["algorithm"];
    if (a.is_string()) {
      spec.algorithm = a.get<std::string>();
    } else if (a.is_object()) {
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (it.key() != "name" && it.key() != "params") {
          return absl::InvalidArgumentError(
              absl::StrCat("unknown field \"algorithm.", it.key(), "\"; known: name, params"));
        }
      }
      KILN_ASSIGN_OR_RETURN(spec.algorithm, base::GetString(a, "name"));
      if (a.contains("params") && !a["params"].is_null()) {
        if (!a["params"].is_object()) {
          return absl::InvalidArgumentError(
              "field \"algorithm.params\" must be an object, e.g. {\"seed\": 1}");
        }
        spec.algorithm_params = a["params"];
      }
    } else {
      return absl::InvalidArgumentError(
          "field \"algorithm\" must be a name (\"tpe\") or {\"name\": \"tpe\", \"params\": {...}}");
    }
    if (spec.algorithm.empty()) {
      return absl::InvalidArgumentError(
          "field \"algorithm\" is empty; name one, e.g. \"random\", \"tpe\" or \"hyperband\"");
    }
  }

  if (body.contains("pruner") && !body["pruner"].is_null()) {
    const base::Json& p = body["pruner"];
    if (p.is_string()) {
      spec.pruner = {{"name", p.get<std::string>()}};
    } else if (p.is_object() && p.contains("name") && p["name"].is_string()) {
      spec.pruner = p;
    } else {
      return absl::InvalidArgumentError(
          "field \"pruner\" must be a name (\"median\", \"asha\") or {\"name\": \"median\", "
          "...options}");
    }
  }

  if (body.contains("experiments") && !body["experiments"].is_null()) {
    if (!body["experiments"].is_array()) {
      return absl::InvalidArgumentError(
          "field \"experiments\" must be a list of {\"id\": 1, \"hyperParams\": [{\"name\", "
          "\"dataType\", \"fixedVal\"}]} (experiment_grid only)");
    }
    spec.wmla_experiments = body["experiments"];
  }

  KILN_ASSIGN_OR_RETURN(spec.objective, ParseObjective(body));
  KILN_ASSIGN_OR_RETURN(spec.max_trials, base::GetIntOr(body, "max_trials", -1));
  KILN_ASSIGN_OR_RETURN(spec.max_run_minutes, base::GetIntOr(body, "max_run_minutes", -1));
  KILN_ASSIGN_OR_RETURN(int64_t parallelism, base::GetIntOr(body, "parallelism", 1));
  KILN_ASSIGN_OR_RETURN(int64_t retries, base::GetIntOr(body, "max_retries", 0));
  // Range-checked before narrowing, so a huge value is reported as given.
  if (parallelism < 1 || parallelism > kMaxParallelism) {
    return absl::InvalidArgumentError(absl::StrCat("field \"parallelism\" must be between 1 and ",
                                                   kMaxParallelism, ", got ", parallelism));
  }
  if (retries < 0 || retries > kMaxRetries) {
    return absl::InvalidArgumentError(absl::StrCat("field \"max_retries\" must be between 0 and ",
                                                   kMaxRetries, ", got ", retries));
  }
  spec.parallelism = static_cast<int>(parallelism);
  spec.max_retries = static_cast<int>(retries);
  KILN_ASSIGN_OR_RETURN(spec.seed, ParseSeed(body));
  KILN_RETURN_IF_ERROR(ValidateExperimentSpec(spec));
  return spec;
}

absl::Status ValidateExperimentSpec(const ExperimentSpec& spec) {
  if (spec.name.size() > kMaxNameChars) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", Field(spec, "name", "hpoName"),
                                                   "\" must be at most ", kMaxNameChars,
                                                   " characters"));
  }
  for (char c : spec.name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"", Field(spec, "name", "hpoName"), "\" (\"", spec.name.substr(0, 64),
          "\") may not contain '/' or control characters; e.g. \"fmnist-lr\""));
    }
  }
  if (spec.objective.metric.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", Field(spec, "objective.metric", "objectiveMetric"),
                     "\" is empty; name the metric the trials report, e.g. \"loss\""));
  }
  if (spec.max_trials != -1 && spec.max_trials < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", Field(spec, "max_trials", "maxJobNum"),
                     "\" must be -1 (unlimited) or at least 1, got ", spec.max_trials));
  }
  if (spec.max_run_minutes != -1 && spec.max_run_minutes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", Field(spec, "max_run_minutes", "maxRunTime"),
                     "\" must be -1 (unlimited) or at least 1 minute, got ", spec.max_run_minutes));
  }
  // A year in minutes: beyond it the deadline's microseconds would overflow.
  if (spec.max_run_minutes > 525'600) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", Field(spec, "max_run_minutes", "maxRunTime"),
                     "\" must be at most 525600 (a year), or -1 for unlimited"));
  }
  if (spec.parallelism < 1 || spec.parallelism > kMaxParallelism) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", Field(spec, "parallelism", "maxParalleJobNum"),
                     "\" must be between 1 and ", kMaxParallelism, ", got ", spec.parallelism));
  }
  if (spec.max_retries < 0 || spec.max_retries > kMaxRetries) {
    return absl::InvalidArgumentError(absl::StrCat("field \"max_retries\" must be between 0 and ",
                                                   kMaxRetries, ", got ", spec.max_retries));
  }
  if (spec.trial.command.empty()) {
    return absl::InvalidArgumentError(
        "the trial has no command; give one, e.g. [\"python3\", \"train.py\"]");
  }
  return absl::OkStatus();
}

uint64_t DeriveExperimentSeed(int64_t experiment_id) {
  // SplitMix64's finalizer: neighbouring ids get unrelated seeds.
  uint64_t z = static_cast<uint64_t>(experiment_id) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

base::Json ExperimentSpecToJson(const ExperimentSpec& spec) {
  base::Json j = base::Json::object();
  j["name"] = spec.name;
  j["description"] = spec.description;
  j["dialect"] = spec.dialect;
  j["trial"] = JobSpecToJson(spec.trial);
  j["search_space"] = spec.search_space;
  j["wmla_space"] = spec.wmla_space;
  j["algorithm"] = spec.algorithm;
  j["algorithm_params"] = spec.algorithm_params;
  j["pruner"] = spec.pruner;
  j["hyperband_eta"] = spec.hyperband_eta ? base::Json(*spec.hyperband_eta) : base::Json();
  j["wmla_experiments"] = spec.wmla_experiments;
  j["seed"] = spec.seed ? base::Json(*spec.seed) : base::Json();
  j["objective"] = {{"metric", spec.objective.metric},
                    {"goal", GoalName(spec.objective.goal)},
                    {"reduce", ReduceName(spec.objective.reduce)}};
  j["additional_metrics"] = spec.additional_metrics;
  j["max_trials"] = spec.max_trials;
  j["max_run_minutes"] = spec.max_run_minutes;
  j["parallelism"] = spec.parallelism;
  j["max_retries"] = spec.max_retries;
  j["wmla_request"] = spec.wmla_request;
  return j;
}

absl::StatusOr<ExperimentSpec> ExperimentSpecFromJson(const base::Json& j) {
  if (!j.is_object()) return absl::InternalError("stored experiment spec is not an object");
  ExperimentSpec spec;
  KILN_ASSIGN_OR_RETURN(spec.name, base::GetStringOr(j, "name", ""));
  KILN_ASSIGN_OR_RETURN(spec.description, base::GetStringOr(j, "description", ""));
  KILN_ASSIGN_OR_RETURN(spec.dialect, base::GetStringOr(j, "dialect", "native"));
  if (!j.contains("trial")) return absl::InternalError("stored experiment spec has no trial");
  KILN_ASSIGN_OR_RETURN(spec.trial, JobSpecFromStoredJson(j["trial"]));
  spec.search_space = j.value("search_space", base::Json::object());
  KILN_ASSIGN_OR_RETURN(spec.wmla_space, base::GetBoolOr(j, "wmla_space", false));
  KILN_ASSIGN_OR_RETURN(spec.algorithm, base::GetStringOr(j, "algorithm", "random"));
  spec.algorithm_params = j.value("algorithm_params", base::Json());
  spec.pruner = j.value("pruner", base::Json());
  if (j.contains("hyperband_eta") && j["hyperband_eta"].is_number()) {
    spec.hyperband_eta = j["hyperband_eta"].get<double>();
  }
  spec.wmla_experiments = j.value("wmla_experiments", base::Json());
  KILN_ASSIGN_OR_RETURN(spec.seed, ParseSeed(j));
  if (!j.contains("objective") || !j["objective"].is_object()) {
    return absl::InternalError("stored experiment spec has no objective");
  }
  KILN_ASSIGN_OR_RETURN(spec.objective, ParseObjective(j));
  KILN_ASSIGN_OR_RETURN(spec.additional_metrics, base::GetStringMapOr(j, "additional_metrics"));
  KILN_ASSIGN_OR_RETURN(spec.max_trials, base::GetIntOr(j, "max_trials", -1));
  KILN_ASSIGN_OR_RETURN(spec.max_run_minutes, base::GetIntOr(j, "max_run_minutes", -1));
  KILN_ASSIGN_OR_RETURN(int64_t parallelism, base::GetIntOr(j, "parallelism", 1));
  KILN_ASSIGN_OR_RETURN(int64_t retries, base::GetIntOr(j, "max_retries", 0));
  spec.parallelism = static_cast<int>(parallelism);
  spec.max_retries = static_cast<int>(retries);
  spec.wmla_request = j.value("wmla_request", base::Json());
  return spec;
}

}  // namespace kiln::master
