// experiment_spec.h
//
// `ExperimentSpec`, what a user asks of a hyperparameter search: the trial template (code,
// command, resources, env: an ordinary `JobSpec` whose config is the fixed part of every
// trial's config.json), the search space, the algorithm, the objective, the budget and
// the parallelism. Parsed from Kiln's native JSON here; the WMLA dialect builds the same
// struct from its `hpo_input` (api/wmla_api.h). Stored as JSON in the experiment record.
//
// The native request (POST /api/v1/experiments; a YAML experiment file is the same
// document). Only "command", "search_space" and "objective" are required; any other
// field is refused.
//
//   {
//     "name": "fmnist-lr",             // unique; default "<user>-hpo-<digits>"
//     "description": "free text",
//     "command": ["python3", "train.py"],
//     "package": {"id": "sha256-..."}, // or {"path": "/shared/code"}; as for jobs
//     "workdir": "src",                // relative folder of the package to run in
//     "resources": {"slots": 1, "gpus": 0},          // per trial
//     "env": {"OMP_NUM_THREADS": "2"},               // per trial; KILN_* reserved
//     "config": {"epochs": 3},         // fixed values in every trial's config.json
//     "search_space": {                // hpo::SearchSpace::FromNative
//       "lr": {"type": "double", "low": 1e-4, "high": 0.1, "log": true},
//       "width": {"type": "int", "low": 32, "high": 512, "step": 32},
//       "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
//       "momentum": {"type": "double", "low": 0.5, "high": 0.99,
//                    "condition": {"opt": ["sgd"]}},
//       "batch": 64},                  // a bare value is fixed
//     "algorithm": "tpe",              // or {"name": "tpe", "params": {"seed": 1, ...}};
//                                      // names and params: hpo/algorithm.h; default random
//     "pruner": {"name": "median", "n_startup_trials": 5},  // or "asha", or a bare name;
//                                      // default none
//     "experiments": [...],            // experiment_grid only: WMLA's experiments list
//     "objective": {"metric": "loss",  // or just "loss"
//                   "goal": "minimize",           // or "maximize"; default minimize
//                   "reduce": "best"},            // or "last"; default best
//     "max_trials": 20,                // trials to run in all, -1 (default): unlimited
//     "max_run_minutes": 60,           // -1 (default): unlimited
//     "parallelism": 2,                // trials at once, default 1
//     "max_retries": 1,                // re-runs of a failed trial, default 0
//     "seed": 7                        // default: derived from the experiment's id
//   }
//
// Each trial is a job named "<experiment name>-trial-<n>" (n from 0) whose config.json is
// "config" merged with the sampled values (and, for hyperband, the resource under its
// resource_name), with SUBID=<n> and KILN_EXPERIMENT_ID=<id> in its environment.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
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
  base::Json wmla_experiments;   // ExperimentGridSearch
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

// Validates a native experiment request (the shape above). InvalidArgument naming the
// field and the fix. Checks the shape and types, then runs ValidateExperimentSpec; the
// space and the algorithm are checked by ExperimentController::Create, so both dialects
// share those checks.
absl::StatusOr<ExperimentSpec> ParseExperimentSpec(const base::Json& body);

// The checks that do not need the space or the algorithm: name (at most 128 characters,
// no control characters or '/'), objective metric non-empty, max_trials -1 or >= 1,
// max_run_minutes -1 or >= 1, 1 <= parallelism <= 1000, 0 <= max_retries <= 100.
// InvalidArgument names the field in the spec's dialect
// (e.g. "parallelism" or "maxParalleJobNum").
absl::Status ValidateExperimentSpec(const ExperimentSpec& spec);

// The seed of an experiment that was given none, from its id: stable across restarts.
uint64_t DeriveExperimentSeed(int64_t experiment_id);

// Storage round trip (every field).
base::Json ExperimentSpecToJson(const ExperimentSpec& spec);
absl::StatusOr<ExperimentSpec> ExperimentSpecFromJson(const base::Json& json);

}  // namespace kiln::master
