// median_pruner.h
//
// Defines `MedianPruner`, the median stopping rule: a trial stops at step s when its best
// intermediate objective so far is worse than the median of the other trials' objectives
// at step s. It reads only `TrialRecord`s, so it works with any sampler.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/hpo/sampler.h"

namespace kiln::hpo {

struct MedianPrunerOptions {
  // Never prune until this many trials have completed.
  int64_t n_startup_trials = 5;
  // Never prune a trial at steps below this.
  int64_t n_warmup_steps = 0;
  // Only decide at steps n_warmup_steps + k * interval_steps.
  int64_t interval_steps = 1;
  // Need at least this many other trials with a value at the step to compare against.
  int64_t min_trials_at_step = 3;
};

// Objectives are minimized (sampler.h). The trials compared against are every other
// trial in the history that reported the exact step, whatever its state except failed
// (a failed trial's values may come from a broken run); a trial is never compared with
// itself. NaN values are ignored among the others; a trial whose every value so far is
// NaN is pruned. Stateless and thread-compatible.
class MedianPruner : public Pruner {
 public:
  // InvalidArgument naming the option for negative counts or interval_steps < 1.
  static absl::StatusOr<std::unique_ptr<MedianPruner>> Create(MedianPrunerOptions options = {});

  bool ShouldPrune(const TrialRecord& trial, int64_t step,
                   const std::vector<TrialRecord>& history) override;
  std::string name() const override { return "median"; }

 private:
  explicit MedianPruner(MedianPrunerOptions options) : options_(options) {}

  MedianPrunerOptions options_;
};

}  // namespace kiln::hpo
