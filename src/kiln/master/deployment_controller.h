// deployment_controller.h
//
// `DeploymentController` keeps every deployment of a registered model version running
// (ARCHITECTURE.md §6): it starts N replica jobs through the `JobController` (each runs
// `kiln-serve` on the version's TorchScript file), routes predictions to the replicas
// that announced themselves ready (it Puts the `serving::RoutingTable` the inference API
// reads), replaces crashed replicas, rolls a new version out without dropping requests,
// and survives a kilnd restart (replicas and their addresses are in the store).
//
// Not thread-safe: every method runs on the master's loop. JobController observers must
// reach it through posted calls (see JobController::AddJobEndObserver).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/master/job_controller.h"
#include "kiln/serving/routing_table.h"
#include "kiln/store/store.h"

namespace kiln::master {

// What a user asks for when creating a deployment (docs/api.md, "Deployments").
struct DeploymentSpec {
  std::string name;
  std::string model;               // a model's name, or its id in decimal
  std::optional<int64_t> version;  // nullopt: the model's latest version
  int replicas = 1;
  int slots = 1;  // per replica; kiln-serve runs this many inference threads
  int max_batch_size = 32;
  int64_t max_queue_delay_us = 0;
};

// A change to a live deployment; unset fields stay as they are. A new `version` rolls out
// replica by replica; the batching knobs roll out the same way (replicas read them at
// start).
struct DeploymentUpdate {
  std::optional<int64_t> version;
  std::optional<int> replicas;
  std::optional<int> max_batch_size;
  std::optional<int64_t> max_queue_delay_us;
};

struct DeploymentControllerOptions {
  // Replica restarts in a row without any replica becoming ready before the deployment
  // is FAILED.
  int max_restarts_without_ready = 5;
  // How long a retired replica stays out of routing before it is sent SIGTERM, so that
  // requests already forwarded to it are answered (kiln-serve drains its queue anyway).
  int64_t retire_grace_micros = 1'000'000;
  // How long a replica the router could not reach stays out of routing.
  int64_t unreachable_cooldown_micros = 2'000'000;
  // Upper bounds on a request (bad input beyond them is a 400).
  int max_replicas = 64;
  int max_slots = 256;
  int max_batch_size = 1 << 16;
};

// Limits of the request fields, shared with the dialects that create deployments.
inline constexpr int64_t kMaxQueueDelayMicros = 10'000'000;

class DeploymentController {
 public:
  DeploymentController(store::Store& store, JobController& jobs, serving::RoutingTable& routes,
                       const base::Clock& clock, DeploymentControllerOptions options);

  // Rebuilds live deployments, their replicas and their routes from the store and the
  // jobs the JobController recovered. Call once, after JobController::Recover.
  absl::Status Recover();
  // Starts missing replicas, retires surplus or old ones, finishes deletes. Call about
  // once a second; it is also run after every event.
  void Tick();
  // JobController's job-end observer (posted to the loop). Ignores non-replica jobs.
  void OnJobEnded(int64_t job_id);
  // The router could not connect to replica `job_id`: it leaves routing for a short
  // cool-down (its end, if it died, arrives through OnJobEnded).
  void OnReplicaUnreachable(int64_t deployment_id, int64_t job_id);

  // ---- users (a task token gets PermissionDenied) ----
  // Creates a deployment (PENDING) and starts its replicas. InvalidArgument naming the
  // field for bad values; NotFound for an unknown model or version (also someone else's
  // model); AlreadyExists for a name in use; FailedPrecondition when no agent could ever
  // run a replica.
  absl::StatusOr<store::DeploymentRecord> Create(const auth::Principal& who, DeploymentSpec spec);
  // `id_or_name`: digits are an id, anything else a name. NotFound also for deployments
  // `who` may not see.
  absl::StatusOr<store::DeploymentRecord> Get(const auth::Principal& who,
                                              const std::string& id_or_name);
  absl::StatusOr<std::vector<store::DeploymentRecord>> List(const auth::Principal& who);
  // Applies `update` (a rolling update when the version or the batching knobs change).
  // FailedPrecondition while the deployment is being deleted.
  absl::StatusOr<store::DeploymentRecord> Update(const auth::Principal& who, int64_t id,
                                                 const DeploymentUpdate& update);
  // Takes the deployment out of routing, stops (drains) its replicas and deletes the
  // record once they ended. Returns the record in state STOPPED.
  absl::StatusOr<store::DeploymentRecord> Delete(const auth::Principal& who, int64_t id);

  // ---- replicas (the task token of replica job `job_id`) ----
  // The replica listens on host:port and its warm-up passed: it is stored and routed.
  // PermissionDenied unless `who` is that replica's task; NotFound for a job that is not
  // a live replica of `deployment_id`.
  absl::Status ReplicaReady(const auth::Principal& who, int64_t deployment_id, int64_t job_id,
                            const std::string& host, int port);
  // The replica could not load or warm up its model; `reason` says why. Its job's end
  // follows; this only keeps the reason.
  absl::Status ReplicaFailed(const auth::Principal& who, int64_t deployment_id, int64_t job_id,
                             const std::string& reason);

  // The native API's view of a deployment: the record's fields (spec without the secret),
  // its model name, signature and replicas [{job_id, version, address, state}], where
  // replica state is "STARTING", "READY" or "STOPPING".
  base::Json DescribeDeployment(const store::DeploymentRecord& record) const;

 private:
  struct Replica {
    int64_t job_id = 0;
    int64_t version = 0;
    std::string host;  // "" until ready
    int port = 0;
    bool ready = false;
    std::optional<int64_t> retire_at;  // retiring: out of routing, stopped at this time
    bool stop_sent = false;
    int64_t unroutable_until = 0;
    std::string failure;     // from ReplicaFailed
    int64_t generation = 0;  // the knobs' generation it was started with
  };
  // What the deployment's spec_json holds besides the DeploymentSpec's knobs.
  struct Knobs {
    int replicas = 1;
    int slots = 1;
    int max_batch_size = 32;
    int64_t max_queue_delay_us = 0;
    std::string secret;
    std::optional<int64_t> previous_version;  // during a rollout: the version rolled from
    int64_t generation = 0;                   // bumped when the batching knobs change
  };
  struct Live {
    store::DeploymentRecord record;
    Knobs knobs;
    std::string model_name;
    std::string signature_json;           // of record.version
    std::map<int64_t, Replica> replicas;  // live replica jobs by id
    int restarts_without_ready = 0;
    bool ever_ready = false;  // some replica of the current version was ready
    int next_index = 1;
  };

  absl::StatusOr<Live*> Access(const auth::Principal& who, int64_t id);
  absl::StatusOr<store::ModelVersionRecord> ResolveVersion(const auth::Principal& who,
                                                           const std::string& model,
                                                           std::optional<int64_t> version,
                                                           store::ModelRecord* model_out);
  absl::Status StartReplica(Live& live, int64_t version);
  void Reconcile(Live& live);
  void Retire(Live& live, Replica& replica, const std::string& why);
  void StopNow(Live& live, Replica& replica, const std::string& why);
  void Fail(Live& live, const std::string& reason);
  void RollBack(Live& live, const std::string& reason);
  absl::Status Save(Live& live);
  void PutRoute(const Live& live);
  void OnReplicaEnded(Live& live, int64_t job_id, const store::JobRecord& job);
  std::string LastLogLines(int64_t job_id) const;

  store::Store& store_;
  JobController& jobs_;
  serving::RoutingTable& routes_;
  const base::Clock& clock_;
  DeploymentControllerOptions options_;
  std::map<int64_t, Live> live_;           // every deployment not yet deleted, by id
  std::map<int64_t, int64_t> replica_of_;  // replica job id -> deployment id
};

}  // namespace kiln::master
