#include "kiln/hpo/asha_pruner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"

namespace kiln::hpo {
namespace {

// Tolerance so that rung 1·3^2 is step 9, not step 10 from 9.000000001.
constexpr double kEps = 1e-9;

// The value `t` reported at the first step at or past `rung`, if it got there.
std::optional<double> ValueAtRung(const TrialRecord& t, int64_t rung) {
  auto it = t.intermediate.lower_bound(rung);
  if (it == t.intermediate.end()) return std::nullopt;
  return it->second;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AshaPruner>> AshaPruner::Create(AshaOptions options) {
  if (!(options.reduction_factor > 1) || !std::isfinite(options.reduction_factor)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ASHA reduction_factor must be a number greater than 1 (typically 3 or 4), got ",
        options.reduction_factor));
  }
  if (options.min_resource < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ASHA min_resource must be at least 1, got ", options.min_resource));
  }
  if (options.max_resource != 0 && options.max_resource < options.min_resource) {
    return absl::InvalidArgumentError(
        absl::StrCat("ASHA max_resource must be 0 (no bound) or at least min_resource (",
                     options.min_resource, "), got ", options.max_resource));
  }
  if (options.min_early_stopping_rate < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ASHA min_early_stopping_rate must be at least 0, got ", options.min_early_stopping_rate));
  }
  return std::unique_ptr<AshaPruner>(new AshaPruner(options));
}

std::vector<int64_t> AshaPruner::RungsUpTo(int64_t up_to) const {
  std::vector<int64_t> rungs;
  for (int k = options_.min_early_stopping_rate;; ++k) {
    const double exact =
        static_cast<double>(options_.min_resource) * std::pow(options_.reduction_factor, k);
    // Past int64 range no step can reach it; the bound also ends the loop.
    if (exact > static_cast<double>(up_to)) break;
    const int64_t rung = static_cast<int64_t>(std::ceil(exact - kEps));
    if (rung > up_to) break;
    if (options_.max_resource != 0 && rung >= options_.max_resource) break;
    // A non-integer factor can round two rungs onto one step; keep one.
    if (rungs.empty() || rungs.back() != rung) rungs.push_back(rung);
  }
  return rungs;
}

bool AshaPruner::ShouldPrune(const TrialRecord& trial, int64_t step,
                             const std::vector<TrialRecord>& history) {
  // At max_resource the trial has done all it will do: stopping it would only turn a
  // finished trial into a pruned one.
  if (options_.max_resource != 0 && step >= options_.max_resource) return false;
  // The step this trial reported before `step`: only rungs crossed since then are decided
  // now, so repeated calls for one step agree and earlier rungs are not re-judged.
  int64_t previous = std::numeric_limits<int64_t>::min();
  for (const auto& [s, v] : trial.intermediate) {
    if (s < step) previous = s;
  }
  for (int64_t rung : RungsUpTo(step)) {
    if (rung <= previous) continue;
    const std::optional<double> own = ValueAtRung(trial, rung);
    if (!own.has_value() || std::isnan(*own)) return true;
    std::vector<double> values{*own};
    for (const TrialRecord& other : history) {
      if (other.number == trial.number) continue;
      std::optional<double> v = ValueAtRung(other, rung);
      if (v.has_value()) values.push_back(std::isnan(*v) ? HUGE_VAL : *v);
    }
    std::sort(values.begin(), values.end());
    const size_t keep = std::max<size_t>(
        1, static_cast<size_t>(std::floor(values.size() / options_.reduction_factor + kEps)));
    if (*own > values[keep - 1]) return true;
  }
  return false;
}

}  // namespace kiln::hpo
