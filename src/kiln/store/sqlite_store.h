// sqlite_store.h
//
// `SqliteStore`, the embedded implementation of `Store`: one SQLite file in WAL mode with
// foreign keys on and versioned schema migrations applied at open.
#pragma once

#include <memory>
#include <string>

#include "kiln/store/sqlite.h"
#include "kiln/store/store.h"

namespace kiln::store {

// Not thread-safe: owned and called by the master's loop.
class SqliteStore final : public Store {
 public:
  // Opens or creates the database at `path` (":memory:" for tests) and migrates it to the
  // newest schema. FailedPrecondition if the file was written by a newer Kiln.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);

  // The schema version this build writes.
  static int LatestSchemaVersion();
  // Creates or migrates the database at `path` to exactly `version` (<= latest) and
  // closes it: lets tests build a database as an older Kiln left it.
  static absl::Status MigrateForTesting(const std::string& path, int version);

  absl::StatusOr<UserRecord> CreateUser(UserRecord user) override;
  absl::StatusOr<UserRecord> GetUser(int64_t id) override;
  absl::StatusOr<UserRecord> GetUserByName(const std::string& name) override;
  absl::StatusOr<std::vector<UserRecord>> ListUsers() override;

  absl::Status PutToken(const TokenRecord& token) override;
  absl::StatusOr<TokenRecord> GetToken(const std::string& hash, int64_t now) override;
  absl::Status DeleteToken(const std::string& hash) override;
  absl::Status DeleteJobTokens(int64_t job_id) override;

  absl::Status PutPackage(const PackageRecord& package) override;
  absl::StatusOr<PackageRecord> GetPackage(const std::string& id) override;

  absl::StatusOr<JobRecord> CreateJob(JobRecord job, const EventRecord& event) override;
  absl::StatusOr<JobRecord> GetJob(int64_t id) override;
  absl::StatusOr<std::vector<JobRecord>> ListJobs(const JobFilter& filter) override;
  absl::Status UpdateJob(const JobRecord& job, const std::optional<EventRecord>& event) override;
  absl::StatusOr<std::vector<EventRecord>> ListEvents(int64_t job_id) override;
  absl::Status PutGeneration(const GenerationRecord& generation,
                             const std::optional<EventRecord>& event) override;
  absl::StatusOr<std::vector<GenerationRecord>> ListGenerations(int64_t job_id) override;

  absl::StatusOr<int64_t> AppendTaskOutput(int64_t job_id, const TaskOutput& output) override;
  absl::StatusOr<std::map<std::string, int64_t>> GetStreamOffsets(int64_t job_id) override;
  absl::StatusOr<bool> AppendMetrics(int64_t job_id, const std::string& writer, int64_t seq,
                                     const std::vector<MetricPoint>& points) override;
  absl::StatusOr<std::vector<LogLine>> GetLogLines(int64_t job_id, int64_t after_seq,
                                                   int limit) override;
  absl::StatusOr<int64_t> GetLastLogSeq(int64_t job_id) override;
  absl::StatusOr<std::vector<MetricPoint>> GetMetrics(
      int64_t job_id, const std::optional<std::string>& name) override;

  absl::Status PutAgent(const AgentRecord& agent) override;
  absl::StatusOr<std::vector<AgentRecord>> ListAgents() override;

  absl::StatusOr<ExperimentRecord> CreateExperiment(ExperimentRecord experiment) override;
  absl::StatusOr<ExperimentRecord> GetExperiment(int64_t id) override;
  absl::StatusOr<ExperimentRecord> GetExperimentByName(const std::string& name) override;
  absl::StatusOr<std::vector<ExperimentRecord>> ListExperiments(
      std::optional<int64_t> user_id) override;
  absl::Status UpdateExperiment(const ExperimentRecord& experiment) override;
  absl::Status DeleteExperiment(int64_t id) override;
  absl::Status PutTrial(const TrialRow& trial) override;
  absl::StatusOr<std::vector<TrialRow>> ListTrials(int64_t experiment_id) override;

  absl::Status PutArtifacts(int64_t job_id, const std::vector<ArtifactRecord>& artifacts) override;
  absl::StatusOr<std::vector<ArtifactRecord>> ListArtifacts(int64_t job_id) override;

  absl::StatusOr<ModelRecord> CreateModel(ModelRecord model) override;
  absl::StatusOr<ModelRecord> GetModel(int64_t id) override;
  absl::StatusOr<ModelRecord> GetModelByName(const std::string& name) override;
  absl::StatusOr<std::vector<ModelRecord>> ListModels(std::optional<int64_t> user_id) override;
  absl::Status DeleteModel(int64_t id) override;
  absl::StatusOr<ModelVersionRecord> AddModelVersion(ModelVersionRecord version) override;
  absl::StatusOr<ModelVersionRecord> GetModelVersion(int64_t model_id, int64_t version) override;
  absl::StatusOr<std::vector<ModelVersionRecord>> ListModelVersions(int64_t model_id) override;
  absl::Status DeleteModelVersion(int64_t model_id, int64_t version) override;

  absl::StatusOr<DeploymentRecord> CreateDeployment(DeploymentRecord deployment) override;
  absl::StatusOr<DeploymentRecord> GetDeployment(int64_t id) override;
  absl::StatusOr<DeploymentRecord> GetDeploymentByName(const std::string& name) override;
  absl::StatusOr<std::vector<DeploymentRecord>> ListDeployments(
      std::optional<int64_t> user_id) override;
  absl::Status UpdateDeployment(const DeploymentRecord& deployment) override;
  absl::Status DeleteDeployment(int64_t id) override;
  absl::Status PutReplica(const ReplicaRecord& replica) override;
  absl::StatusOr<std::vector<ReplicaRecord>> ListReplicas(int64_t deployment_id) override;
  absl::Status DeleteReplica(int64_t deployment_id, int64_t job_id) override;

  absl::Status PutDialectObject(const DialectObject& object) override;
  absl::StatusOr<DialectObject> GetDialectObject(const std::string& kind,
                                                 const std::string& id) override;
  absl::StatusOr<std::vector<DialectObject>> ListDialectObjects(
      const std::string& kind, std::optional<int64_t> user_id,
      std::optional<std::string> space_id) override;
  absl::Status DeleteDialectObject(const std::string& kind, const std::string& id) override;

 private:
  explicit SqliteStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}
  absl::Status Migrate(int target_version);
  // The first deployment, not STOPPED, that serves `model_id` (at `version`, or at any
  // version when nullopt): for refusing deletes. nullopt when none.
  absl::StatusOr<std::optional<std::string>> DeploymentUsing(int64_t model_id,
                                                             std::optional<int64_t> version);
  absl::Status InsertEvent(const EventRecord& event);
  absl::Status InsertMetricPoints(int64_t job_id, const std::vector<MetricPoint>& points);
  absl::Status SetOffset(int64_t job_id, const std::string& stream, int64_t offset);

  std::unique_ptr<SqliteDb> db_;
};

}  // namespace kiln::store
