// random_sampler.h
//
// Defines `RandomSampler`, uniform random search over a `SearchSpace` (WMLA's `Random`
// algorithm), and `TrialRng`, the per-ask generator every seeded sampler here can use
// to stay deterministic for a (seed, history size) pair.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/hpo/sampler.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo {

// A generator seeded from `seed` and `n_trials` (the history size at an ask), with the
// two mixed so that nearby seeds and counts give unrelated streams.
std::mt19937_64 TrialRng(uint64_t seed, uint64_t n_trials);

// Proposes independent uniform points (log-uniform for log parameters, uniform over the
// values of finite ones). Fully parallel: it never waits for running trials. In a finite
// space it avoids points already in the history when a few redraws find a fresh one.
// Keeps a copy of the space. Not thread-safe; the experiment driver calls it from one loop.
class RandomSampler : public Sampler {
 public:
  RandomSampler(const SearchSpace& space, uint64_t seed);

  // Always returns a suggestion (never nullopt, never an error).
  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;
  std::string name() const override { return "random"; }

 private:
  SearchSpace space_;
  uint64_t seed_;
};

}  // namespace kiln::hpo
