// algorithm.h
//
// Builds the search algorithm of an experiment from its name and parameters: a sampler,
// an optional pruner, and for multi-fidelity algorithms the config key that carries each
// trial's budget. One table serves both dialects: WMLA's names (`Random`, `Tpe`/`TPE`,
// `Bayesian`, `Hyperband`, `ExperimentGridSearch`) with its string-valued `algoParams`,
// and Kiln's native names (`random`, `grid`, `experiment_grid`, `tpe`, `gp` (= `bayesian`),
// `cmaes`, `hyperband`, `asha`) with a JSON object of parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/hpo/grid_sampler.h"
#include "kiln/hpo/sampler.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo {

struct AlgorithmRequest {
  // Case-insensitive; WMLA and native names both accepted.
  std::string name;
  // Either WMLA's list [{"name": "WarmUp", "value": "20"}, ...] or a native object
  // {"warm_up": 20, ...}; null means defaults. Unknown names are refused.
  base::Json params;
  // WMLA's older `algoDef.hyperbandEta`.
  std::optional<double> hyperband_eta;
  // Used when params carry no seed (RandomSeed / seed): makes a run reproducible.
  uint64_t seed = 0;
  // The experiment's max trials (-1: unlimited); Bayesian's CubeSize default depends on it.
  int64_t max_trials = -1;
  // ExperimentGridSearch: WMLA `experiments[]`, each {"id", "hyperParams": [{"name",
  // "dataType", "fixedVal"}]}. Empty for other algorithms.
  base::Json wmla_experiments;
  // Native only: an early-stopping rule usable with any sampler:
  // {"name": "median" | "asha", ...its options}. Null for none.
  base::Json pruner;
};

// A ready algorithm. Owns everything it points to; not thread-safe (one loop).
struct Algorithm {
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<Pruner> pruner;  // null: trials are never stopped early
  // Multi-fidelity (Hyperband): the config.json key under which each trial receives its
  // Suggestion::budget (e.g. "epochs"). Empty otherwise.
  std::string resource_name;
  // Whether the sampler may be asked while trials run (all built-ins may; the GP and TPE
  // use a constant liar). Kept for plugins.
  bool parallel = true;
  // Samplers the main one delegates to (Hyperband's configuration sampler).
  std::vector<std::unique_ptr<Sampler>> owned;
  // The algorithm's own copy of the space, for samplers that borrow it (Hyperband), so
  // the space given to MakeAlgorithm need not outlive the Algorithm. Null when unused.
  std::unique_ptr<SearchSpace> space;
  // ExperimentGridSearch: the sampler, whose suggestions the driver turns into config.json
  // with `ExperimentGridSampler::ConfigFor` instead of `SearchSpace::ToConfig`. Null for
  // every other algorithm.
  const ExperimentGridSampler* experiment_grid = nullptr;
};

// Parameters, by form (the form decides the parser, whatever the name's dialect):
//  - WMLA list: Random/grid/ExperimentGridSearch/cmaes take RandomSeed; Tpe, Bayesian and
//    Hyperband go to TpeOptionsFromWmla, GpOptionsFromWmla, HyperbandOptionsFromWmla.
//    asha has no WMLA form.
//  - native object (snake_case): every algorithm takes `seed`; tpe: warm_up (alias
//    n_startup_trials), ei_candidates, good_ratio, good_max, multivariate, constant_liar;
//    gp: init_points, cube_size, noiseless; cmaes: population_size, sigma0, restarts,
//    surrogate, min_kendall_tau (CmaEsOptions); hyperband: eta, resource_name (required),
//    max_resource (required), min_resource, cycles (passes over the brackets; 0 = until
//    max_trials; default 0 when max_trials is set, else 1 — WMLA's form follows the same
//    default); asha: reduction_factor, min_resource,
//    max_resource, min_early_stopping_rate, sampler ("random" | "tpe").
// A seed in the params wins over `request.seed`. Bayesian's cube_size defaults as WMLA's
// CubeSize does: 100 * max_trials, or 10000 when max_trials is unlimited.
//
// InvalidArgument naming the field and the fix for an unknown algorithm (listing the
// known ones), an unknown or malformed parameter, or a space the algorithm cannot search
// (grid over a continuous parameter, ExperimentGridSearch without experiments), and for a
// pruner on the asha algorithm (it prunes already). `space` is copied where needed.
[[nodiscard]] absl::StatusOr<Algorithm> MakeAlgorithm(const AlgorithmRequest& request,
                                                      const SearchSpace& space);

// For `GET /hypersearch/algorithm` and `kiln hpo algorithms`: canonical WMLA names first.
struct AlgorithmInfo {
  std::string name;                        // WMLA spelling, e.g. "Tpe" (native-only: native_name)
  std::string native_name;                 // e.g. "tpe"
  std::vector<std::string> params;         // names accepted in WMLA's algoParams list
  std::vector<std::string> native_params;  // keys accepted in a native params object
  std::string description;                 // one line
  bool native_only = false;                // not a WMLA algorithm (grid, asha)
};
const std::vector<AlgorithmInfo>& BuiltInAlgorithms();

}  // namespace kiln::hpo
