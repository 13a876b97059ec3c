// asha_pruner.h
//
// Defines `AshaPruner`, asynchronous successive halving (Li et al., MLSys 2020) as a
// `Pruner` that works with any sampler: each trial reports its objective per resource
// step (e.g. per epoch), and at every rung it goes on only while it is among the best
// 1/reduction_factor of the trials that have reached that rung so far.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/hpo/sampler.h"

namespace kiln::hpo {

struct AshaOptions {
  // Each rung keeps the best 1/reduction_factor and sits reduction_factor times further.
  double reduction_factor = 3;
  // The resource step of the first possible rung (Ray Tune's grace_period).
  int64_t min_resource = 1;
  // Trials end here anyway, so there is no rung at or beyond it; 0: no upper bound.
  int64_t max_resource = 0;
  // s: skips the first s rungs, so the first decision is at min_resource·rf^s. Larger s
  // is less aggressive.
  int min_early_stopping_rate = 0;
};

// ASHA as a stateless pruner. Rungs are at steps min_resource·rf^(s+k), k = 0, 1, …
// (rounded up to whole steps), below max_resource. A trial *reaches* a rung when it
// reports a step at or past it, and its value there is the one it reported at the first
// such step. When a trial's report takes it past a rung, it continues only if its value
// is within the best max(1, floor(m / rf)) of the m trials (itself included, any state)
// that have reached the rung so far; otherwise it is pruned. Nothing waits: the first
// trial at a rung always continues, and later trials are judged against whoever is
// there, which is what lets ASHA keep every parallel slot busy. A NaN value is pruned; a
// report at or past max_resource never is (the trial has finished anyway).
//
// Thread-safety: not thread-safe; the experiment driver calls it from one loop.
class AshaPruner : public Pruner {
 public:
  // InvalidArgument when reduction_factor ≤ 1, min_resource < 1, max_resource is neither
  // 0 nor ≥ min_resource, or min_early_stopping_rate < 0.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AshaPruner>> Create(AshaOptions options);

  // Whether `trial`, which has just reported `step` (its `intermediate` holds it), should
  // stop. `history` may contain `trial` itself; that entry is ignored in favour of `trial`.
  bool ShouldPrune(const TrialRecord& trial, int64_t step,
                   const std::vector<TrialRecord>& history) override;

  std::string name() const override { return "ASHA"; }

  // The rung steps at or below `up_to` (and below max_resource), smallest first.
  std::vector<int64_t> RungsUpTo(int64_t up_to) const;

 private:
  explicit AshaPruner(AshaOptions options) : options_(options) {}

  AshaOptions options_;
};

}  // namespace kiln::hpo
