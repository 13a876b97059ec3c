// routing_table.h
//
// Defines `RoutingTable`, the master's view of where each deployment's predictions may go:
// for every deployment, its READY replicas (host:port) plus what the prediction routes
// need to answer without the store (owner, secret, model name, version, signature, state).
// The DeploymentController writes it whenever a deployment's ready set or state changes;
// the inference routes and the forwarder's retries read it from any thread. It also keeps
// the count of requests in flight per replica, for least-outstanding-requests balancing.
// No HTTP here.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace kiln::serving {

// One routable replica: a READY replica job and where its kiln-serve listens.
struct ReplicaEndpoint {
  int64_t job_id = 0;
  int64_t version = 0;  // the model version this replica serves
  std::string host;     // an IP address as the replica announced it
  int port = 0;
};

// Everything a prediction route needs about one deployment.
struct DeploymentRoute {
  int64_t id = 0;
  std::string name;
  int64_t user_id = 0;                    // owner: only they (or an admin) may predict
  std::string secret;                     // sent to replicas as X-Kiln-Serve-Secret
  std::string model_name;                 // the registry model's name
  int64_t version = 0;                    // the deployed (target) version
  std::string signature_json;             // the deployed version's signature (spec.md "Signature")
  std::string state;                      // "PENDING", "READY", "UPDATING", "FAILED", "STOPPED"
  std::string reason;                     // why FAILED (or a failed rollout); "" otherwise
  int slots = 1;                          // batch workers per replica (kiln-serve --threads)
  std::vector<ReplicaEndpoint> replicas;  // the READY, routable ones only
};

// A replica chosen for one request. Give it back with RoutingTable::Release once its
// answer (or failure) is in, so the in-flight count stays true.
struct ReplicaLease {
  int64_t deployment_id = 0;
  ReplicaEndpoint replica;
};

// Thread-safe. Routes are immutable snapshots: Find hands out a shared_ptr that stays valid
// (and unchanged) however the table changes afterwards.
class RoutingTable {
 public:
  RoutingTable() = default;
  RoutingTable(const RoutingTable&) = delete;
  RoutingTable& operator=(const RoutingTable&) = delete;

  // Adds or replaces the route of `route.id` (by id; the name index follows).
  void Put(DeploymentRoute route);
  // Forgets the deployment (deleted or stopped). Unknown ids are ignored.
  void Remove(int64_t deployment_id);

  // The route, or null when the deployment is unknown.
  std::shared_ptr<const DeploymentRoute> Find(int64_t id) const;
  std::shared_ptr<const DeploymentRoute> FindByName(std::string_view name) const;

  // Picks the replica of `route` with the fewest requests in flight (ties broken round
  // robin), skipping the job ids in `tried` unless every replica was tried (then the
  // least loaded of all: a lone replica is retried after a reconnect). Counts the request
  // as in flight. Nullopt when the route has no replica.
  std::optional<ReplicaLease> Acquire(const DeploymentRoute& route,
                                      const std::vector<int64_t>& tried);
  // Ends a request counted by Acquire. A replica that has left the table is ignored.
  void Release(const ReplicaLease& lease);

  // Requests in flight to the replica job (0 when unknown). For tests and metrics.
  int64_t Outstanding(int64_t job_id) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<int64_t, std::shared_ptr<const DeploymentRoute>> by_id_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, int64_t> id_by_name_ ABSL_GUARDED_BY(mu_);
  // Keyed by replica job id; an entry lives while its replica is in some route.
  std::unordered_map<int64_t, int64_t> outstanding_ ABSL_GUARDED_BY(mu_);
  uint64_t round_robin_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kiln::serving
