// experiment_spec.h
//
// `ExperimentSpec`, what a user asks of a hyperparameter search: the trial template (code,
// command, resources, env: an ordinary `JobSpec` whose config is the fixed part of every
// trial's config.json), the search space, the algorithm, the objective, the budget and
// the parallelism. Parsed from Kiln's native JSON here (docs/api.md, "Experiments"); the
// WMLA dialect builds the same struct from its `hpo_input` (api/wmla_hpo.h). Stored as
// JSON in the experiment record.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/master/job_spec.h"

namespace kiln::master {

enum class ObjectiveGoal { kMinimize, kMaximize };
// How a trial's objective is read from the points it reported for the metric: the value
// at the last step, or the best one (min or max per the goal; WMLA's `metricVal`).
enum class ObjectiveReduce { kLast, kBest };

struct ObjectiveSpec {
  std::string metric;  // e.g. "loss"; matched against emetrics / val_dict_list.json / native names
  ObjectiveGoal goal = ObjectiveGoal::kMinimize;
  ObjectiveReduce reduce = ObjectiveReduce::kBest;
};

struct ExperimentSpec {
  std::string name;  // "" = generated ("<user>-hpo-<digits>")
  std::string description;
  std::string dialect = "native";  // or "wmla": decides how the experiment is echoed

  JobSpec trial;  // command, package, resources, env, workdir; config = fixed values

  // The space as given: native form (hpo::SearchSpace::FromNative) or, with
  // `wmla_space`, WMLA `hyperParams`.
  base::Json search_space = base::Json::object();
  bool wmla_space = false;

  // hpo::AlgorithmRequest's inputs.
  std::string algorithm = "random";
  base::Json algorithm_params;  // null, a native object, or WMLA's algoParams list
  base::Json pruner;            // native: {"name": "median"|"asha", ...}, or null
  std::optional<double> hyperband_eta;
  base::Json wmla_experiments;  // ExperimentGridSearch
  std::optional<uint64_t> seed;  // default: derived from the experiment id

  ObjectiveSpec objective;
  // WMLA `additionalMetrics`: name -> "minimize" | "maximize" | "latest".
  std::map<std::string, std::string> additional_metrics;

  int64_t max_trials = -1;       // -1: unlimited (then the algorithm or max_minutes ends it)
  int64_t max_run_minutes = -1;  // -1: unlimited
  int parallelism = 1;           // trials running at once (WMLA maxParalleJobNum)
  int max_retries = 0;           // re-runs of a failed trial before it counts as failed

  base::Json wmla_request;  // WMLA: the original hpo_input, echoed in responses
};

// Validates a native experiment request (docs/api.md). InvalidArgument naming the field
// and the fix. Does not build the space or the algorithm: ExperimentController::Create
// does, so both dialects share those checks.
absl::StatusOr<ExperimentSpec> ParseExperimentSpec(const base::Json& body);

// Storage round trip (every field).
base::Json ExperimentSpecToJson(const ExperimentSpec& spec);
absl::StatusOr<ExperimentSpec> ExperimentSpecFromJson(const base::Json& json);

}  // namespace kiln::master
