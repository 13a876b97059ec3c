// tpe_sampler.h
//
// Defines `TpeSampler`, the Tree-structured Parzen Estimator (Bergstra et al. 2011, in
// the form Optuna 3.1 ships): finished trials are split into a "good" and a "bad" group,
// each group becomes a Parzen density over the unit cube (`SearchSpace::ToUnit`), and the
// sampler proposes the candidate drawn from the good density that maximizes good/bad.
// `TpeOptionsFromWmla` reads WMLA's `algoParams` for the `Tpe` algorithm.
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

struct TpeOptions {
  // Randomness is derived from (seed, history size); see sampler.h.
  uint64_t seed = 0;
  // WMLA `WarmUp`: proposals are uniform random until this many trials have finished
  // (completed or pruned). Optuna's default; WMLA's own default is 20.
  int n_startup = 10;
  // WMLA `EICandidate`: candidates drawn from the good density per proposal.
  int n_ei_candidates = 24;
  // WMLA `GoodRatio` and `GoodMax`: the good group is the best min(ceil(gamma * n),
  // good_max) of n ranked trials. Optuna's default gamma is 0.1 (capped at 25); WMLA's
  // default ratio is 0.25. 0.1 is kept here: it is the one benchmarked against Optuna.
  double gamma = 0.1;
  int good_max = 25;
  // Joint (product-kernel) densities over all unconditional parameters instead of one
  // density per parameter. Helps on correlated objectives (Rosenbrock-like valleys).
  bool multivariate = false;
  // Running trials count as the worst observations, so parallel asks spread out instead
  // of proposing the same point to every free slot.
  bool constant_liar = true;
  // Weight of the prior kernel (uniform-ish over the whole range) in both densities.
  double prior_weight = 1.0;
};

// Parses WMLA `algoParams` (wmla-api.md §1.5): a JSON array of {"name", "value"} with
// string (or numeric) values. Known names: RandomSeed, WarmUp (> 2), EICandidate (> 1),
// GoodRatio (in (0, 1]), GoodMax (> 1); absent names keep `TpeOptions` defaults.
// InvalidArgument naming the parameter for an unknown name (listing the known ones), a
// non-numeric value or a value out of range. A null or empty array gives the defaults.
[[nodiscard]] absl::StatusOr<TpeOptions> TpeOptionsFromWmla(const base::Json& algo_params);

// TPE over a `SearchSpace`.
//
// Model (all in the unit cube of `SearchSpace::ToUnit`):
//  - Ranking: completed trials by value; then pruned trials, those that reached a later
//    step first, each by its last intermediate value (as Optuna does); then, with
//    `constant_liar`, running trials and completed trials without a finite value, as the
//    worst. Failed trials are ignored.
//  - Numeric parameters: a mixture of normals truncated to [0, 1], one kernel per
//    observation plus a prior kernel (mean 0.5, sd 1). Univariate bandwidths are the
//    larger distance to a sorted neighbour (the prior mean included), clipped to
//    [1 / min(100, n + 2), 1] (Optuna's
//    "magic clip"); multivariate bandwidths are 0.2 * n^(-1 / (d + 4)), clipped the same.
//    Gridded and integer parameters are evaluated at their snapped value.
//  - Categorical parameters: per observation a distribution with mass 1 on the observed
//    choice plus prior_weight / (n + 1) spread over all choices.
//  - Kernel weights: the 25 most recent observations weigh 1, older ones ramp down
//    linearly (Optuna's default_weights); the prior weighs `prior_weight`.
//  - Conditional parameters: only trials in which a parameter is active contribute to
//    its density. With `multivariate`, the joint model covers the unconditional
//    parameters and conditional ones are modelled one by one.
//
// Cost per ask is O(n_ei_candidates * n * d) for n trials and d parameters, plus a sort of
// the history. Thread-compatible: Ask is const in effect but not synchronized.
class TpeSampler final : public Sampler {
 public:
  // InvalidArgument if n_startup < 0, n_ei_candidates < 1, gamma not in (0, 1],
  // good_max < 1 or prior_weight <= 0.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<TpeSampler>> Create(SearchSpace space,
                                                                          TpeOptions options);

  // Never returns nullopt: TPE can always propose. Uniform random while fewer than
  // `n_startup` trials have finished.
  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;
  std::string name() const override { return options_.multivariate ? "tpe-mv" : "tpe"; }

  const TpeOptions& options() const { return options_; }

 private:
  TpeSampler(SearchSpace space, TpeOptions options);

  SearchSpace space_;
  TpeOptions options_;
};

}  // namespace kiln::hpo
