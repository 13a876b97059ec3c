// records.h
//
// The durable records Kiln keeps: users, tokens, packages, agents, jobs and their
// tracking data (log lines, metric points, events), searches, and the model registry
// (artifacts, models, versions, deployments, replicas, dialect objects). Plain structs;
// the `Store` reads and writes them, the API layer turns them into JSON.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::store {

struct UserRecord {
  int64_t id = 0;
  std::string username;
  std::string password_hash;  // see auth/password.h for the format
  bool admin = false;
  int64_t created_at = 0;  // µs since epoch, as every time in the store
};

enum class TokenKind { kSession, kTask, kAgent };
const char* TokenKindName(TokenKind kind);

struct TokenRecord {
  std::string hash;  // SHA-256 hex of the token; the token itself is never stored
  TokenKind kind = TokenKind::kSession;
  std::optional<int64_t> user_id;  // absent for agent tokens
  std::optional<int64_t> job_id;   // task tokens: the job they may report for
  int64_t created_at = 0;
  std::optional<int64_t> expires_at;
};

struct PackageRecord {
  std::string id;    // "sha256-<hex>": of the bytes (tar.gz), of name + bytes digest (file)
  std::string name;  // file name as uploaded
  std::string kind;  // "file" or "tar.gz"
  int64_t size = 0;
  int64_t created_at = 0;
};

enum class JobState { kQueued, kScheduled, kRunning, kFinished, kFailed, kKilled };
const char* JobStateName(JobState state);
absl::StatusOr<JobState> ParseJobState(std::string_view name);
bool IsTerminal(JobState state);

struct JobRecord {
  int64_t id = 0;
  std::string name;
  int64_t user_id = 0;
  std::string username;  // filled on reads
  JobState state = JobState::kQueued;
  std::string spec_json;  // command, package, resources, env, config: see master/job_spec.h
  std::string agent_id;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string reason;
  bool kill_requested = false;
  int64_t created_at = 0;
  std::optional<int64_t> scheduled_at;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
  std::string allocation_json;  // where it runs: {"slots": 1, "gpus": [0]}; "" when not placed
  // Distributed jobs (ARCHITECTURE.md §5.1): a worker's parent job and its index among the
  // parent's workers (0-based, in launch order); the parent's worker target (elastic).
  std::optional<int64_t> parent_id;
  int worker_index = 0;
  std::optional<int> target_workers;
  // A scoring replica of a deployment (set at creation, never changed).
  std::optional<int64_t> deployment_id;
};

struct JobFilter {
  std::optional<int64_t> user_id;    // nullopt: everyone's
  std::vector<JobState> states;      // empty: any
  std::optional<int64_t> before_id;  // pagination: ids strictly below
  int limit = 50;
  std::optional<int64_t> parent_id;  // only the workers of this distributed job
  // Without parent_id / deployment_id: also list workers and deployment replicas, i.e.
  // every job (else top level only: no workers, no replicas).
  bool include_workers = false;
  std::optional<int64_t> deployment_id;  // only the replicas of this deployment
};

struct EventRecord {
  int64_t job_id = 0;
  int64_t time = 0;
  std::string type;  // "STATE", "SCHEDULE", "KILL", ...
  std::string message;
};

struct LogLine {
  int64_t seq = 0;  // 1-based per job, assigned by the store
  int64_t time = 0;
  char stream = 'o';  // 'o' stdout, 'e' stderr
  std::string text;
};

struct MetricPoint {
  std::string name;
  std::string group;
  int64_t step = 0;
  double value = 0;
  int64_t time = 0;
};

// What an agent ships for one task in one report: new output and where its reading of
// each tailed file now stands. Applied atomically, so a resend after a crash is dropped
// by offset instead of duplicated.
struct TaskOutput {
  // A worker of a distributed job: its lines and points are stored under the parent job
  // (the stream offsets stay the worker's own).
  std::optional<int64_t> record_under;
  std::vector<LogLine> lines;  // seq ignored on input
  std::vector<MetricPoint> metrics;
  std::map<std::string, int64_t> offsets;           // stream name ("log", "emetrics") -> new offset
  std::map<std::string, int64_t> expected_offsets;  // the offsets the batch starts from
};

// One generation of an elastic job's membership (ARCHITECTURE.md §5.2).
struct GenerationRecord {
  int64_t job_id = 0;
  int64_t id = 0;
  std::vector<int64_t> members;  // task (worker job) ids, by rank
  std::string store_address;     // "host:port" of the generation's c10d store
  int64_t started_at = 0;
  std::string reason;
};

struct AgentRecord {
  std::string id;
  std::string hostname;
  int slots = 0;
  std::string gpus_json = "[]";
  int64_t registered_at = 0;
  int64_t last_seen_at = 0;
};

// ---- hyperparameter search ----

enum class ExperimentState { kSubmitted, kRunning, kFinished, kFailed, kStopped };
// "SUBMITTED", "RUNNING", ... (WMLA's spelling, used by every dialect).
const char* ExperimentStateName(ExperimentState state);
absl::StatusOr<ExperimentState> ParseExperimentState(std::string_view name);

struct ExperimentRecord {
  int64_t id = 0;
  std::string name;  // unique across users (WMLA's hpoName)
  int64_t user_id = 0;
  std::string username;  // filled on reads
  ExperimentState state = ExperimentState::kSubmitted;
  std::string spec_json;  // master/experiment_spec.h, as stored
  std::string reason;     // why it failed or stopped
  int64_t created_at = 0;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
};

// A trial's life: RUNNING from the moment it is asked for (its job may still be queued)
// until COMPLETE (objective known), PRUNED (stopped early by the pruner; its last
// intermediate value stands), FAILED (retries used up, or the objective never reported;
// `reason` says which) or STOPPED (the experiment was stopped while it ran).
enum class TrialState { kRunning, kComplete, kPruned, kFailed, kStopped };
const char* TrialStateName(TrialState state);  // "RUNNING", "COMPLETE", ...
absl::StatusOr<TrialState> ParseTrialState(std::string_view name);

struct TrialRow {
  int64_t experiment_id = 0;
  int64_t number = 0;  // 0-based, in the order the sampler proposed them
  TrialState state = TrialState::kRunning;
  std::string params_json;  // the sampler's internal point (hpo::Point) as a JSON object
  std::string config_json;  // the typed config.json the trial's job received
  int64_t budget = 0;       // multi-fidelity resource (0: full)
  std::optional<int64_t> parent;
  std::optional<int64_t> job_id;    // the current (or last) attempt's job
  std::string job_ids_json = "[]";  // every attempt's job, oldest first
  int attempts = 0;
  std::optional<double> value;           // the objective, as reported (not negated)
  std::string intermediate_json = "{}";  // {"<step>": value, ...} of the objective metric
  std::string reason;
  int64_t created_at = 0;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
};

// ---- model registry and deployments ----

// A file a job left under $RESULT_DIR/model/, uploaded by its agent as a "file" package.
struct ArtifactRecord {
  int64_t job_id = 0;
  std::string path;  // relative to RESULT_DIR: "model/model.pt"
  std::string package_id;
  int64_t size = 0;
  int64_t created_at = 0;
};

struct ModelRecord {
  int64_t id = 0;
  std::string name;  // unique across users (it is the KServe model name too)
  int64_t user_id = 0;
  std::string username;  // filled on reads
  std::string description;
  int64_t created_at = 0;
};

struct ModelVersionRecord {
  int64_t model_id = 0;
  int64_t version = 0;     // 1, 2, ... per model; assigned by AddModelVersion, never reused
  std::string package_id;  // the TorchScript file as a "file" package
  std::string file_name;
  int64_t size = 0;
  std::string signature_json;
  std::string metrics_json = "{}";  // {"accuracy": 0.86, ...}: final values
  // {"job_id":12,"experiment_id":3,"trial":5,"hyperparameters":{...},"source":"job"|"upload"}
  std::string lineage_json = "{}";
  int64_t created_at = 0;
};

enum class DeploymentState { kPending, kReady, kUpdating, kFailed, kStopped };
const char* DeploymentStateName(DeploymentState state);  // "PENDING", "READY", ...
absl::StatusOr<DeploymentState> ParseDeploymentState(std::string_view name);

struct DeploymentRecord {
  int64_t id = 0;
  std::string name;  // unique among the deployments in the store
  int64_t user_id = 0;
  std::string username;  // filled on reads
  int64_t model_id = 0;
  int64_t version = 0;
  DeploymentState state = DeploymentState::kPending;
  // {"replicas":2,"slots":1,"max_batch_size":32,"max_queue_delay_us":500,"secret":"<hex>"}
  std::string spec_json = "{}";
  std::string reason;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

struct ReplicaRecord {
  int64_t deployment_id = 0;
  int64_t job_id = 0;
  int64_t version = 0;
  std::string address;  // "host:port" once ready, "" before
  int64_t ready_at = 0;
};

// An object of a foreign API dialect that has no native counterpart (a Watson ML space,
// model definition, training, ...), kept as that dialect's JSON body.
struct DialectObject {
  std::string kind;  // "wml_space", "wml_model_definition", "wml_training", ...
  std::string id;    // unique per kind
  int64_t user_id = 0;
  std::string space_id;
  std::string body_json = "{}";
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

}  // namespace kiln::store
