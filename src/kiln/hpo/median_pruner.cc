// median_pruner.cc
#include "kiln/hpo/median_pruner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kiln::hpo {

absl::StatusOr<std::unique_ptr<MedianPruner>> MedianPruner::Create(MedianPrunerOptions options) {
  auto non_negative = [](const char* name, int64_t v) -> absl::Status {
    if (v >= 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("median pruner: ", name, " is ", v, "; it must be >= 0"));
  };
  for (const absl::Status& s : {non_negative("n_startup_trials", options.n_startup_trials),
                                non_negative("n_warmup_steps", options.n_warmup_steps),
                                non_negative("min_trials_at_step", options.min_trials_at_step)}) {
    if (!s.ok()) return s;
  }
  if (options.interval_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("median pruner: interval_steps is ",
                                                   options.interval_steps,
                                                   "; it must be >= 1 (1 decides at every step)"));
  }
  return std::unique_ptr<MedianPruner>(new MedianPruner(options));
}

bool MedianPruner::ShouldPrune(const TrialRecord& trial, int64_t step,
                               const std::vector<TrialRecord>& history) {
  if (step < options_.n_warmup_steps) return false;
  if ((step - options_.n_warmup_steps) % options_.interval_steps != 0) return false;

  int64_t completed = 0;
  for (const auto& t : history) {
    completed += t.number != trial.number && t.state == TrialState::kComplete;
  }
  if (completed < options_.n_startup_trials) return false;

  // Best so far rather than the latest value: a trial that was good earlier and
  // fluctuates should not be cut for one noisy step.
  bool reported = false;
  double best = std::numeric_limits<double>::infinity();
  for (const auto& [s, v] : trial.intermediate) {
    if (s > step) break;
    reported = true;
    if (!std::isnan(v)) best = std::min(best, v);
  }
  if (!reported) return false;

  std::vector<double> others;
  for (const auto& t : history) {
    if (t.number == trial.number || t.state == TrialState::kFailed) continue;
    auto it = t.intermediate.find(step);
    if (it != t.intermediate.end() && !std::isnan(it->second)) others.push_back(it->second);
  }
  if (others.empty() || static_cast<int64_t>(others.size()) < options_.min_trials_at_step) {
    return false;
  }
  const size_t mid = others.size() / 2;
  std::nth_element(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(mid), others.end());
  double median = others[mid];
  if (others.size() % 2 == 0) {
    const double lower =
        *std::max_element(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(mid));
    median = (median + lower) / 2;
  }
  return best > median;  // all-NaN trials have best = +inf and are pruned here
}

}  // namespace kiln::hpo
