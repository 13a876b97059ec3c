#include "kiln/scheduler/resource_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"

namespace kiln::scheduler {

void ResourcePool::SetAgent(const std::string& agent_id, int slots, std::vector<int> gpus) {
  AgentState& a = agents_[agent_id];
  a.slots = slots;
  a.gpus = std::move(gpus);
}

std::vector<int64_t> ResourcePool::RemoveAgent(const std::string& agent_id) {
  std::vector<int64_t> affected;
  for (auto it = allocations_.begin(); it != allocations_.end();) {
    if (it->second.agent_id == agent_id) {
      affected.push_back(it->first);
      it = allocations_.erase(it);
    } else {
      ++it;
    }
  }
  agents_.erase(agent_id);
  return affected;
}

std::vector<int> ResourcePool::FreeGpus(const AgentState& agent) const {
  std::vector<int> free;
  for (int g : agent.gpus) {
    if (std::find(agent.used_gpus.begin(), agent.used_gpus.end(), g) == agent.used_gpus.end()) {
      free.push_back(g);
    }
  }
  return free;
}

std::optional<Allocation> ResourcePool::FindPlacement(const Resources& request) const {
  const std::string* best = nullptr;
  int best_free = 0;
  for (const auto& [id, agent] : agents_) {
    int free_slots = agent.slots - agent.used_slots;
    if (free_slots < request.slots) continue;
    if (static_cast<int>(FreeGpus(agent).size()) < request.gpus) continue;
    if (best == nullptr || free_slots < best_free) {
      best = &id;
      best_free = free_slots;
    }
  }
  if (best == nullptr) return std::nullopt;
  Allocation a;
  a.agent_id = *best;
  a.slots = request.slots;
  std::vector<int> free = FreeGpus(agents_.at(*best));
  a.gpu_indices.assign(free.begin(), free.begin() + request.gpus);
  return a;
}

std::vector<Allocation> ResourcePool::FindPlacements(const Resources& request, int count) const {
  ResourcePool scratch = *this;
  std::vector<Allocation> out;
  for (int i = 0; i < count; ++i) {
    std::optional<Allocation> a = scratch.FindPlacement(request);
    if (!a) break;
    // Ids below zero never collide with jobs.
    if (!scratch.Allocate(-1 - i, *a).ok()) break;
    out.push_back(std::move(*a));
  }
  return out;
}

bool ResourcePool::FitsWithout(const std::vector<int64_t>& job_ids,
                               const Resources& request) const {
  ResourcePool scratch = *this;
  for (int64_t id : job_ids) scratch.Release(id);
  return scratch.FindPlacement(request).has_value();
}

absl::Status ResourcePool::Allocate(int64_t job_id, const Allocation& allocation) {
  auto it = agents_.find(allocation.agent_id);
  if (it == agents_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", allocation.agent_id, " is not registered"));
  }
  AgentState& a = it->second;
  if (a.used_slots + allocation.slots > a.slots) {
    return absl::FailedPreconditionError(absl::StrCat("agent ", allocation.agent_id, " has ",
                                                      a.slots - a.used_slots, " free slots, not ",
                                                      allocation.slots));
  }
  std::vector<int> free = FreeGpus(a);
  for (int g : allocation.gpu_indices) {
    if (std::find(free.begin(), free.end(), g) == free.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPU ", g, " of agent ", allocation.agent_id, " is not free"));
    }
  }
  Release(job_id);
  a.used_slots += allocation.slots;
  a.used_gpus.insert(a.used_gpus.end(), allocation.gpu_indices.begin(),
                     allocation.gpu_indices.end());
  allocations_[job_id] = allocation;
  return absl::OkStatus();
}

void ResourcePool::Release(int64_t job_id) {
  auto it = allocations_.find(job_id);
  if (it == allocations_.end()) return;
  auto agent = agents_.find(it->second.agent_id);
  if (agent != agents_.end()) {
    agent->second.used_slots -= it->second.slots;
    for (int g : it->second.gpu_indices) {
      auto& used = agent->second.used_gpus;
      used.erase(std::remove(used.begin(), used.end(), g), used.end());
    }
  }
  allocations_.erase(it);
}

std::optional<Allocation> ResourcePool::AllocationOf(int64_t job_id) const {
  auto it = allocations_.find(job_id);
  if (it == allocations_.end()) return std::nullopt;
  return it->second;
}

absl::Status ResourcePool::CheckSatisfiable(const Resources& request) const {
  if (agents_.empty()) return absl::OkStatus();
  int max_slots = 0, max_gpus = 0;
  for (const auto& [id, agent] : agents_) {
    if (agent.slots >= request.slots && static_cast<int>(agent.gpus.size()) >= request.gpus) {
      return absl::OkStatus();
    }
    max_slots = std::max(max_slots, agent.slots);
    max_gpus = std::max(max_gpus, static_cast<int>(agent.gpus.size()));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no agent can ever run this job: it asks for ", request.slots, " slots and ",
                   request.gpus, " GPUs, but the largest agent has ", max_slots, " slots and ",
                   max_gpus, " GPUs; ask for less (--slots/--gpus) or add a bigger agent"));
}

absl::Status ResourcePool::CheckSatisfiable(const Resources& request, int count) const {
  KILN_RETURN_IF_ERROR(CheckSatisfiable(request));
  if (agents_.empty() || count <= 1) return absl::OkStatus();
  ResourcePool idle;
  for (const auto& [id, agent] : agents_) idle.SetAgent(id, agent.slots, agent.gpus);
  const int fit = static_cast<int>(idle.FindPlacements(request, count).size());
  if (fit >= count) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the cluster can never run ", count, " workers of ", request.slots,
                   " slots and ", request.gpus, " GPUs at once: all its agents together hold ", fit,
                   "; ask for fewer workers or smaller ones, or add agents"));
}

std::map<std::string, ResourcePool::AgentUsage> ResourcePool::Usage() const {
  std::map<std::string, AgentUsage> out;
  for (const auto& [id, a] : agents_) out[id] = {a.slots, a.used_slots, a.gpus, a.used_gpus};
  return out;
}

}  // namespace kiln::scheduler
