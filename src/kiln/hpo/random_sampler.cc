// random_sampler.cc
#include "kiln/hpo/random_sampler.h"

#include <set>

namespace kiln::hpo {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Redraws in a finite space before accepting a repeat: enough to find a fresh point
// while at most ~97% of the space is used, and bounded so an almost exhausted space
// still answers at once (a repeat beats waiting; random search never returns nullopt).
constexpr int kMaxRedraws = 100;

}  // namespace

std::mt19937_64 TrialRng(uint64_t seed, uint64_t n_trials) {
  return std::mt19937_64(
      SplitMix64(SplitMix64(seed) ^ SplitMix64(n_trials + 0x5851f42d4c957f2dULL)));
}

RandomSampler::RandomSampler(const SearchSpace& space, uint64_t seed)
    : space_(space), seed_(seed) {}

absl::StatusOr<std::optional<Suggestion>> RandomSampler::Ask(
    const std::vector<TrialRecord>& history) {
  std::mt19937_64 rng = TrialRng(seed_, history.size());
  Suggestion s;
  s.params = space_.SampleUniform(rng);
  if (space_.GridSize().has_value() && !history.empty()) {
    std::set<Point> seen;
    for (const auto& t : history) seen.insert(t.params);
    for (int i = 0; i < kMaxRedraws && seen.count(s.params); ++i) {
      s.params = space_.SampleUniform(rng);
    }
  }
  return std::optional<Suggestion>(std::move(s));
}

}  // namespace kiln::hpo
