// resource_pool.h
//
// `ResourcePool`, the scheduler's model of the cluster: each agent's CPU slots and GPUs,
// what is allocated to which job, and where a new request fits. Placement is best fit
// (the fitting agent with the fewest free slots), which packs small jobs together and
// keeps whole machines free for large ones.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kiln::scheduler {

struct Resources {
  int slots = 1;
  int gpus = 0;
};

struct Allocation {
  std::string agent_id;
  int slots = 0;
  std::vector<int> gpu_indices;  // which of the agent's GPUs (nvidia-smi indices)
};

// Not thread-safe: lives on the master's loop.
class ResourcePool {
 public:
  // Adds or updates an agent's capacity. Existing allocations on it are kept.
  void SetAgent(const std::string& agent_id, int slots, std::vector<int> gpu_indices);
  // Removes the agent and forgets the allocations on it; returns the affected job ids.
  std::vector<int64_t> RemoveAgent(const std::string& agent_id);
  bool HasAgent(const std::string& agent_id) const { return agents_.count(agent_id) > 0; }
  size_t agent_count() const { return agents_.size(); }

  // Where `request` would go now, or nullopt if no agent has room.
  std::optional<Allocation> FindPlacement(const Resources& request) const;
  // Where up to `count` requests would go now, taken together (each placement counts
  // against the next): as many as fit, at most `count`.
  std::vector<Allocation> FindPlacements(const Resources& request, int count) const;
  // Whether `request` would fit somewhere if `job_ids` gave back what they hold.
  bool FitsWithout(const std::vector<int64_t>& job_ids, const Resources& request) const;
  // Records `allocation` for `job_id`. FailedPrecondition if the agent is unknown or lacks
  // the room (e.g. re-adopting a task after a restart on a smaller configuration).
  absl::Status Allocate(int64_t job_id, const Allocation& allocation);
  // Frees what `job_id` holds; no-op if nothing.
  void Release(int64_t job_id);
  std::optional<Allocation> AllocationOf(int64_t job_id) const;

  // OK if some registered agent could run `request` when idle; otherwise
  // FailedPrecondition saying what the largest agent offers. OK when no agent is
  // registered at all (one may still come).
  absl::Status CheckSatisfiable(const Resources& request) const;
  // The same for `count` requests placed together (a distributed job's workers): OK if the
  // registered agents, idle, could hold them all.
  absl::Status CheckSatisfiable(const Resources& request, int count) const;

  struct AgentUsage {
    int slots = 0;
    int used_slots = 0;
    std::vector<int> gpus;
    std::vector<int> used_gpus;
  };
  std::map<std::string, AgentUsage> Usage() const;

 private:
  struct AgentState {
    int slots = 0;
    std::vector<int> gpus;
    int used_slots = 0;
    std::vector<int> used_gpus;
  };
  std::vector<int> FreeGpus(const AgentState& agent) const;

  std::map<std::string, AgentState> agents_;
  std::map<int64_t, Allocation> allocations_;
};

}  // namespace kiln::scheduler
