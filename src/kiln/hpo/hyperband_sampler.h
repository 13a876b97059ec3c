// hyperband_sampler.h
//
// Defines `HyperbandSampler`, Hyperband (Li et al., JMLR 2018) as an ask/tell `Sampler`
// that keeps every parallel slot busy, and `HyperbandOptionsFromWmla`, which reads WMLA's
// Hyperband `algoParams` (ResourceName, ResourceValue, eta, RandomSeed).
//
// Each suggestion carries a *budget* (the resource, e.g. epochs) that the experiment driver
// writes into the trial's config.json under `HyperbandOptions::resource_name`; a
// suggestion with `parent` set is a promotion: the same configuration trained again at
// the next, larger budget of its bracket.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/hpo/sampler.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo {

struct HyperbandOptions {
  uint64_t seed = 0;
  // η: each rung keeps the best 1/eta of the one below and gives it eta times the budget.
  double eta = 3;
  // R, WMLA's ResourceValue: the largest budget any trial gets (e.g. 81 epochs).
  int64_t max_resource = 0;
  // The smallest budget worth running (a trial of 1 epoch by default).
  int64_t min_resource = 1;
  // WMLA's ResourceName: the config.json key the driver puts each trial's budget under.
  std::string resource_name;
  // How many times to run the whole set of brackets: 1 is the paper's one pass; 0 repeats
  // them until the experiment's own budget (trials, time) ends the search, as the paper's
  // infinite-horizon variant and Optuna's pruner do.
  int cycles = 1;
};

// Reads WMLA's Hyperband `algoDef.algoParams` (wmla-api.md §1.5): a JSON array of
// {"name": ..., "value": ...} with values as strings (numbers are accepted too); names
// match case-insensitively. `hyperband_eta` is the older `algoDef.hyperbandEta`; an `eta`
// in algoParams wins over it. `default_seed` is used when RandomSeed is absent.
// InvalidArgument, naming the field and the fix, when: algo_params is not an array of
// name/value objects; ResourceName or ResourceValue is missing; ResourceValue is not an
// integer ≥ 1; eta is not a number > 1; RandomSeed is not a non-negative integer; or a
// name is not one of RandomSeed, eta, ResourceName, ResourceValue.
[[nodiscard]] absl::StatusOr<HyperbandOptions> HyperbandOptionsFromWmla(
    const base::Json& algo_params, std::optional<double> hyperband_eta, uint64_t default_seed = 0);

// One rung of a bracket's plan: how many trials it holds and the budget each gets.
struct HyperbandRung {
  int64_t num_trials = 0;
  int64_t budget = 0;
};

// A bracket s: successive halving that starts num_trials(0) configurations at budget
// R·eta^-s and ends with the survivors at R. Rungs are listed from the smallest budget.
struct HyperbandBracket {
  int s = 0;
  std::vector<HyperbandRung> rungs;
};

// Hyperband as an asynchronous-friendly sampler.
//
// The plan is the paper's: s_max = floor(log_eta(R / min_resource)); bracket s (from s_max
// down to 0) starts n = ceil((s_max+1)/(s+1) · eta^s) configurations at r = R·eta^-s, and
// rung i holds floor(n·eta^-i) trials at budget r·eta^i. For R = 81, eta = 3 that is
// brackets of 81, 34, 15, 8 and 5 configurations.
//
// How it runs in parallel (where WMLA's Hyperband is only "partly parallel"): a rung is
// decided once all its trials have ended; Ask then promotes its best floor(n·eta^-(i+1))
// trials, best first. While a rung waits for running trials, Ask does not idle: it starts
// the configurations of the *next* bracket, so all of `maxParalleJobNum` slots stay busy
// until every bracket has started; only then does Ask return nullopt to wait. Promotions
// come before new configurations, so brackets finish in order and early results arrive
// early. Failed and pruned trials (and ones without a value) rank as worst and are never
// promoted, so a rung after failures may hold fewer trials than planned.
//
// With `cycles` other than 1 the brackets run again, in the same order, once every
// configuration of the last one has started (the new cycle's configurations are drawn
// like any others); bracket k of the history is plan bracket k mod the plan's size.
//
// State is rebuilt from the history on every Ask, so a restarted master resumes exactly:
// the k-th trial without a parent belongs to the bracket whose share of new
// configurations k falls in, and a promotion belongs to the rung above its parent's. The
// history must therefore hold only this sampler's trials, each appended (running) as soon
// as it is asked for.
//
// Thread-safety: not thread-safe; the experiment driver calls it from one loop.
class HyperbandSampler : public Sampler {
 public:
  // `space` is borrowed and must outlive the sampler. New configurations are drawn
  // uniformly from it with a generator seeded from (seed, history size), unless
  // `config_sampler` (borrowed, may be null) is given: then new configurations come from
  // it, BOHB-style, and only their params are used (when it returns nullopt, so does Ask,
  // and the brackets wait for it). InvalidArgument when eta ≤ 1,
  // min_resource < 1 or max_resource < min_resource.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HyperbandSampler>> Create(
      const SearchSpace& space, HyperbandOptions options, Sampler* config_sampler = nullptr);

  // A new configuration at its bracket's first budget, or a promotion (`parent` set, the
  // parent's params, the next budget). nullopt when it must wait for running trials or
  // when every bracket is done (see `Finished`). InvalidArgument when the history cannot
  // have come from this sampler (a parent that is not in it or already at R, more new
  // configurations than the plan holds); errors from `config_sampler` pass through.
  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;

  // Whether every bracket is done: every planned trial has been started and has ended,
  // and no promotion is left. False on a history Ask would reject.
  bool Finished(const std::vector<TrialRecord>& history) const;

  std::string name() const override { return "Hyperband"; }

  const std::vector<HyperbandBracket>& brackets() const { return brackets_; }
  const HyperbandOptions& options() const { return options_; }

 private:
  HyperbandSampler(const SearchSpace& space, HyperbandOptions options, Sampler* config_sampler,
                   std::vector<HyperbandBracket> brackets);

  const SearchSpace& space_;
  HyperbandOptions options_;
  Sampler* config_sampler_;
  std::vector<HyperbandBracket> brackets_;
};

}  // namespace kiln::hpo
