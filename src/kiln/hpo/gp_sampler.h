// gp_sampler.h
//
// Defines `GpSampler`, Bayesian optimisation with a Gaussian process: WMLA's `Bayesian`
// algorithm. After `init_points` random trials it models the objective with a GP (Matérn
// 5/2 ARD kernel, hyperparameters fitted by maximising the log marginal likelihood) and
// proposes the point of highest expected improvement. Running trials are imputed by a
// constant liar so that parallel asks spread out instead of repeating one another.
//
// Model space. Every non-fixed parameter is one dimension of the unit cube, mapped by
// `SearchSpace::ToUnit` (log-aware; ints, grids and categoricals map an index to the centre
// of its cell, i.e. categoricals are encoded as index/cardinality, not one-hot: cheaper and
// adequate for the small categoricals of hyperparameter search, at the price of an
// arbitrary order between choices). An inactive conditional parameter sits at 0.5.
// Candidates are snapped to each parameter's grid before they are scored, so the sampler
// never scores a point it could not propose.
//
// Cost of an ask after the init phase: the kernel hyperparameters are fitted on at most
// 100 of the finished trials (~80 likelihood gradients, O(100^3) each), then EI is scored
// over `cube_size` candidates against at most `max_fit_points` trials: about 0.1 s of one
// core from 1,000 trials on, whatever the history's length (bench/hpo measures it).
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

struct GpOptions {
  uint64_t seed = 0;
  // Asks answered by uniform random sampling before the GP takes over (WMLA `InitPoints`).
  int init_points = 10;
  // Random candidates scored by expected improvement per ask; 0 means 2000 (WMLA
  // `CubeSize`). The best few are then refined locally.
  int cube_size = 0;
  // true: the objective is deterministic, the GP interpolates (fixed 1e-6 jitter on
  // standardized values). false: a noise variance is fitted with the kernel (WMLA
  // `Noiseless`).
  bool noiseless = true;
  // At most this many finished trials condition the GP (the best half and the most recent
  // rest), which bounds the O(n^3) cost of an ask however long the search runs.
  int max_fit_points = 300;
  // Impute running trials with the best observed value so parallel asks diverge.
  bool constant_liar = true;
};

// Parses WMLA `algoDef.algoParams` for `Bayesian` (wmla-api.md §1.5): a JSON list of
// {"name": ..., "value": ...} with string values (numbers and booleans are accepted too).
// Known names: RandomSeed (unsigned integer), InitPoints (integer >= 1), CubeSize
// (integer in [1, 1000000]), Noiseless (true/false, any case). A null or empty list gives
// the defaults. Returns InvalidArgument naming the entry for a malformed list, a bad value,
// or an unknown name (the message lists the known ones).
[[nodiscard]] absl::StatusOr<GpOptions> GpOptionsFromWmla(const base::Json& algo_params);

// Thread-safety: thread-safe; `Ask` keeps no state between calls (everything is rebuilt
// from the history), so concurrent asks from several threads are fine.
class GpSampler : public Sampler {
 public:
  // Validates `options`: InvalidArgument if init_points < 0, cube_size is outside
  // [0, 1000000] or max_fit_points < 2. The sampler keeps its own copy of `space`.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GpSampler>> Create(SearchSpace space,
                                                                         GpOptions options);

  // A random point while fewer than `init_points` trials were asked or none completed;
  // afterwards the candidate of highest expected improvement under the GP fitted to the
  // completed trials (failed and pruned ones are ignored) and, with `constant_liar`, to the
  // running trials imputed with the best value seen. Falls back to a random point if the
  // kernel matrix cannot be factorized even with added jitter. Never returns nullopt and
  // never fails for a valid history; deterministic for (seed, history). Does not block.
  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;

  std::string name() const override { return "Bayesian"; }
  const GpOptions& options() const { return options_; }

 private:
  GpSampler(SearchSpace space, GpOptions options);

  SearchSpace space_;
  GpOptions options_;
  // For each model dimension, the index of its parameter in space_.params(); fixed
  // parameters have no dimension.
  std::vector<int> dim_param_;
  // For each parameter, its dimension or -1 when fixed.
  std::vector<int> param_dim_;
};

}  // namespace kiln::hpo
