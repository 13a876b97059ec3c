// sampler.h
//
// The plug-in interfaces of hyperparameter search: a `Sampler` proposes configurations
// (ask/tell, with the full trial history passed on each ask so a restarted master can
// rebuild any sampler from stored trials), and a `Pruner` stops trials early from their
// intermediate results. Objectives are always *minimized* here; the experiment driver
// negates maximized metrics.
//
// Determinism: a sampler built with the same seed and asked with the same history gives
// the same answer. Implementations derive their randomness from (seed, number of trials
// in the history) rather than keeping a generator that advances across calls.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo {

enum class TrialState { kRunning, kComplete, kPruned, kFailed };

struct TrialRecord {
  int64_t number = 0;  // 0-based order in which trials were asked for
  Point params;        // internal encoding, active parameters only
  TrialState state = TrialState::kRunning;
  std::optional<double> value;             // final objective (minimized), when complete
  std::map<int64_t, double> intermediate;  // reported resource step (e.g. epoch) -> objective
  int64_t budget = 0;                      // multi-fidelity resource given to it (0: full)
  std::optional<int64_t> parent;           // multi-fidelity: the trial it continues/promotes
};

struct Suggestion {
  Point params;
  int64_t budget = 0;             // resource value for multi-fidelity samplers (0: full)
  std::optional<int64_t> parent;  // promotion of this earlier trial's configuration
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The next configuration to try given every trial so far (running ones included: a
  // sampler that runs in parallel must not propose what is already being evaluated, e.g.
  // by a constant liar). Returns nullopt when the space is exhausted (grid) or when the
  // sampler must wait for running trials before it can propose (synchronous phases);
  // the driver asks again when a trial ends.
  virtual absl::StatusOr<std::optional<Suggestion>> Ask(
      const std::vector<TrialRecord>& history) = 0;
  // Optional: told when a trial ends; stateless samplers ignore it.
  virtual void Tell(const TrialRecord& trial) { (void)trial; }
  virtual std::string name() const = 0;
};

class Pruner {
 public:
  virtual ~Pruner() = default;
  // Whether `trial`, which just reported `step`, should stop now.
  virtual bool ShouldPrune(const TrialRecord& trial, int64_t step,
                           const std::vector<TrialRecord>& history) = 0;
  virtual std::string name() const = 0;
};

}  // namespace kiln::hpo
