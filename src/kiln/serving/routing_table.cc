// routing_table.cc

#include "kiln/serving/routing_table.h"

#include <algorithm>
#include <limits>
#include <unordered_set>
#include <utility>

namespace kiln::serving {

void RoutingTable::Put(DeploymentRoute route) {
  auto shared = std::make_shared<const DeploymentRoute>(std::move(route));
  std::lock_guard<std::mutex> lock(mu_);
  auto existing = by_id_.find(shared->id);
  if (existing != by_id_.end()) {
    const DeploymentRoute& old = *existing->second;
    if (old.name != shared->name) id_by_name_.erase(old.name);
    // Replicas that left the route take their counters with them; requests still in
    // flight to them end in Release, which ignores unknown ids.
    std::unordered_set<int64_t> kept;
    for (const ReplicaEndpoint& r : shared->replicas) kept.insert(r.job_id);
    for (const ReplicaEndpoint& r : old.replicas) {
      if (!kept.count(r.job_id)) outstanding_.erase(r.job_id);
    }
  }
  for (const ReplicaEndpoint& r : shared->replicas) outstanding_.try_emplace(r.job_id, 0);
  id_by_name_[shared->name] = shared->id;
  by_id_[shared->id] = std::move(shared);
}

void RoutingTable::Remove(int64_t deployment_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(deployment_id);
  if (it == by_id_.end()) return;
  for (const ReplicaEndpoint& r : it->second->replicas) outstanding_.erase(r.job_id);
  auto name = id_by_name_.find(it->second->name);
  if (name != id_by_name_.end() && name->second == deployment_id) id_by_name_.erase(name);
  by_id_.erase(it);
}

std::shared_ptr<const DeploymentRoute> RoutingTable::Find(int64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::shared_ptr<const DeploymentRoute> RoutingTable::FindByName(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = id_by_name_.find(std::string(name));
  if (it == id_by_name_.end()) return nullptr;
  auto route = by_id_.find(it->second);
  return route == by_id_.end() ? nullptr : route->second;
}

std::optional<ReplicaLease> RoutingTable::Acquire(const DeploymentRoute& route,
                                                  const std::vector<int64_t>& tried) {
  const std::vector<ReplicaEndpoint>& replicas = route.replicas;
  if (replicas.empty()) return std::nullopt;
  auto was_tried = [&](int64_t job_id) {
    return std::find(tried.begin(), tried.end(), job_id) != tried.end();
  };
  bool any_untried = std::any_of(replicas.begin(), replicas.end(),
                                 [&](const ReplicaEndpoint& r) { return !was_tried(r.job_id); });
  std::lock_guard<std::mutex> lock(mu_);
  // Scanning from a rotating start makes the first of several equally loaded replicas a
  // different one each time: round robin among ties.
  size_t n = replicas.size();
  size_t start = static_cast<size_t>(round_robin_++ % n);
  size_t best = n;
  int64_t best_load = std::numeric_limits<int64_t>::max();
  for (size_t k = 0; k < n; ++k) {
    const ReplicaEndpoint& r = replicas[(start + k) % n];
    if (any_untried && was_tried(r.job_id)) continue;
    auto it = outstanding_.find(r.job_id);
    int64_t load = it == outstanding_.end() ? 0 : it->second;
    if (load < best_load) {
      best_load = load;
      best = (start + k) % n;
    }
  }
  if (best == n) return std::nullopt;
  const ReplicaEndpoint& chosen = replicas[best];
  // A route snapshot taken before its replica left the table still routes; counting it
  // again would leave a stale counter, so only replicas still in the table are counted.
  auto it = outstanding_.find(chosen.job_id);
  if (it != outstanding_.end()) ++it->second;
  return ReplicaLease{route.id, chosen};
}

void RoutingTable::Release(const ReplicaLease& lease) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = outstanding_.find(lease.replica.job_id);
  if (it != outstanding_.end() && it->second > 0) --it->second;
}

int64_t RoutingTable::Outstanding(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = outstanding_.find(job_id);
  return it == outstanding_.end() ? 0 : it->second;
}

}  // namespace kiln::serving
