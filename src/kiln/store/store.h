// store.h
//
// `Store`, the durable state of the master behind one narrow interface: SQLite today
// (sqlite_store.h), PostgreSQL later. Each method is one transaction, so a crash leaves
// either all of a state change or none of it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/store/records.h"

namespace kiln::store {

// Implementations need not be thread-safe: the master calls them from its one loop.
class Store {
 public:
  virtual ~Store() = default;

  // Users. CreateUser: AlreadyExists for a taken name. Get*: NotFound.
  [[nodiscard]] virtual absl::StatusOr<UserRecord> CreateUser(UserRecord user) = 0;
  [[nodiscard]] virtual absl::StatusOr<UserRecord> GetUser(int64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<UserRecord> GetUserByName(const std::string& name) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<UserRecord>> ListUsers() = 0;

  // Tokens, looked up by hash. GetToken: NotFound for unknown or expired (at `now`).
  [[nodiscard]] virtual absl::Status PutToken(const TokenRecord& token) = 0;
  [[nodiscard]] virtual absl::StatusOr<TokenRecord> GetToken(const std::string& hash,
                                                             int64_t now) = 0;
  [[nodiscard]] virtual absl::Status DeleteToken(const std::string& hash) = 0;
  // Removes the task tokens of a job (when it ends).
  [[nodiscard]] virtual absl::Status DeleteJobTokens(int64_t job_id) = 0;

  // Packages (metadata; the bytes live in files). PutPackage is idempotent.
  [[nodiscard]] virtual absl::Status PutPackage(const PackageRecord& package) = 0;
  [[nodiscard]] virtual absl::StatusOr<PackageRecord> GetPackage(const std::string& id) = 0;

  // Jobs. CreateJob assigns the id and records a creation event in the same transaction.
  [[nodiscard]] virtual absl::StatusOr<JobRecord> CreateJob(JobRecord job,
                                                            const EventRecord& event) = 0;
  [[nodiscard]] virtual absl::StatusOr<JobRecord> GetJob(int64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<JobRecord>> ListJobs(
      const JobFilter& filter) = 0;
  // Writes the job's mutable fields (state, agent, exit, reason, times, kill flag, worker
  // target) and
  // appends `event` in one transaction. NotFound if the job does not exist.
  [[nodiscard]] virtual absl::Status UpdateJob(const JobRecord& job,
                                               const std::optional<EventRecord>& event) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<EventRecord>> ListEvents(int64_t job_id) = 0;
  // Generations of an elastic job. PutGeneration inserts or replaces (job_id, id) and
  // appends `event` in the same transaction; ListGenerations is ordered by id.
  [[nodiscard]] virtual absl::Status PutGeneration(const GenerationRecord& generation,
                                                   const std::optional<EventRecord>& event) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<GenerationRecord>> ListGenerations(
      int64_t job_id) = 0;

  // Tracking. AppendTaskOutput stores a batch from an agent: it is applied only if every
  // stream's stored offset equals `expected_offsets` (else FailedPrecondition naming the
  // stored offsets, and nothing is written), and returns the seq of the last log line.
  [[nodiscard]] virtual absl::StatusOr<int64_t> AppendTaskOutput(int64_t job_id,
                                                                 const TaskOutput& output) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::map<std::string, int64_t>> GetStreamOffsets(
      int64_t job_id) = 0;
  // Native metric reports, idempotent per (writer, seq): returns false (and writes
  // nothing) when `seq` is not above the last stored seq of `writer` for this job.
  [[nodiscard]] virtual absl::StatusOr<bool> AppendMetrics(
      int64_t job_id, const std::string& writer, int64_t seq,
      const std::vector<MetricPoint>& points) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<LogLine>> GetLogLines(int64_t job_id,
                                                                         int64_t after_seq,
                                                                         int limit) = 0;
  [[nodiscard]] virtual absl::StatusOr<int64_t> GetLastLogSeq(int64_t job_id) = 0;
  // All points of the job, optionally only metric `name`, ordered by name, group, step.
  [[nodiscard]] virtual absl::StatusOr<std::vector<MetricPoint>> GetMetrics(
      int64_t job_id, const std::optional<std::string>& name) = 0;

  // Agents seen by this master.
  [[nodiscard]] virtual absl::Status PutAgent(const AgentRecord& agent) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<AgentRecord>> ListAgents() = 0;
  // Experiments (hyperparameter searches). CreateExperiment assigns the id; AlreadyExists
  // for a taken name. DeleteExperiment removes its trials too (not their jobs).
  [[nodiscard]] virtual absl::StatusOr<ExperimentRecord> CreateExperiment(
      ExperimentRecord experiment) = 0;
  [[nodiscard]] virtual absl::StatusOr<ExperimentRecord> GetExperiment(int64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<ExperimentRecord> GetExperimentByName(
      const std::string& name) = 0;
  // Newest first; nullopt user: everyone's.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ExperimentRecord>> ListExperiments(
      std::optional<int64_t> user_id) = 0;
  // Writes state, reason and times. NotFound if it does not exist.
  [[nodiscard]] virtual absl::Status UpdateExperiment(const ExperimentRecord& experiment) = 0;
  [[nodiscard]] virtual absl::Status DeleteExperiment(int64_t id) = 0;
  // Inserts or replaces the trial (experiment_id, number). NotFound for an unknown
  // experiment.
  [[nodiscard]] virtual absl::Status PutTrial(const TrialRow& trial) = 0;
  // Ordered by number.
  [[nodiscard]] virtual absl::StatusOr<std::vector<TrialRow>> ListTrials(int64_t experiment_id) = 0;

  // Artifacts of a job. PutArtifacts replaces the job's whole set (so a resent exit
  // report does not duplicate); NotFound for an unknown job. ListArtifacts: by path.
  [[nodiscard]] virtual absl::Status PutArtifacts(int64_t job_id,
                                                  const std::vector<ArtifactRecord>& artifacts) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ArtifactRecord>> ListArtifacts(
      int64_t job_id) = 0;

  // Models. CreateModel assigns the id; AlreadyExists for a taken name. Get*: NotFound.
  // ListModels: newest first; nullopt user: everyone's. DeleteModel removes its versions
  // too; FailedPrecondition (naming it) while a deployment not STOPPED uses the model.
  [[nodiscard]] virtual absl::StatusOr<ModelRecord> CreateModel(ModelRecord model) = 0;
  [[nodiscard]] virtual absl::StatusOr<ModelRecord> GetModel(int64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<ModelRecord> GetModelByName(const std::string& name) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ModelRecord>> ListModels(
      std::optional<int64_t> user_id) = 0;
  [[nodiscard]] virtual absl::Status DeleteModel(int64_t id) = 0;
  // Model versions. AddModelVersion assigns `version` (one above the highest ever given
  // to the model, so a deleted number is never reused); NotFound for an unknown model.
  // ListModelVersions: by version. DeleteModelVersion: NotFound if absent;
  // FailedPrecondition naming the deployment while one not STOPPED serves it (as its
  // version or on one of its replicas).
  [[nodiscard]] virtual absl::StatusOr<ModelVersionRecord> AddModelVersion(
      ModelVersionRecord version) = 0;
  [[nodiscard]] virtual absl::StatusOr<ModelVersionRecord> GetModelVersion(int64_t model_id,
                                                                           int64_t version) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ModelVersionRecord>> ListModelVersions(
      int64_t model_id) = 0;
  [[nodiscard]] virtual absl::Status DeleteModelVersion(int64_t model_id, int64_t version) = 0;

  // Deployments. CreateDeployment assigns the id; AlreadyExists for a taken name.
  // ListDeployments: newest first. UpdateDeployment writes state, version, spec, reason
  // and updated_at (NotFound if absent). DeleteDeployment removes it and its replica rows
  // (not the replica jobs).
  [[nodiscard]] virtual absl::StatusOr<DeploymentRecord> CreateDeployment(
      DeploymentRecord deployment) = 0;
  [[nodiscard]] virtual absl::StatusOr<DeploymentRecord> GetDeployment(int64_t id) = 0;
  [[nodiscard]] virtual absl::StatusOr<DeploymentRecord> GetDeploymentByName(
      const std::string& name) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<DeploymentRecord>> ListDeployments(
      std::optional<int64_t> user_id) = 0;
  [[nodiscard]] virtual absl::Status UpdateDeployment(const DeploymentRecord& deployment) = 0;
  [[nodiscard]] virtual absl::Status DeleteDeployment(int64_t id) = 0;
  // Replicas of a deployment. PutReplica inserts or replaces (deployment_id, job_id);
  // NotFound for an unknown deployment. ListReplicas: by job id. DeleteReplica of an
  // absent row is OK.
  [[nodiscard]] virtual absl::Status PutReplica(const ReplicaRecord& replica) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ReplicaRecord>> ListReplicas(
      int64_t deployment_id) = 0;
  [[nodiscard]] virtual absl::Status DeleteReplica(int64_t deployment_id, int64_t job_id) = 0;

  // Objects of foreign API dialects, keyed by (kind, id). PutDialectObject inserts or
  // replaces; GetDialectObject: NotFound; ListDialectObjects: oldest first, optionally
  // only one user's and / or one space's; DeleteDialectObject: NotFound if absent.
  [[nodiscard]] virtual absl::Status PutDialectObject(const DialectObject& object) = 0;
  [[nodiscard]] virtual absl::StatusOr<DialectObject> GetDialectObject(const std::string& kind,
                                                                       const std::string& id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<DialectObject>> ListDialectObjects(
      const std::string& kind, std::optional<int64_t> user_id,
      std::optional<std::string> space_id) = 0;
  [[nodiscard]] virtual absl::Status DeleteDialectObject(const std::string& kind,
                                                         const std::string& id) = 0;
};

}  // namespace kiln::store
