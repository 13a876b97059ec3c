// records.h
//
// The durable records Kiln keeps: users, tokens, packages, agents, jobs and their
// tracking data (log lines, metric points, events). Plain structs; the `Store` reads and
// writes them, the API layer turns them into JSON.
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
};

struct JobFilter {
  std::optional<int64_t> user_id;    // nullopt: everyone's
  std::vector<JobState> states;      // empty: any
  std::optional<int64_t> before_id;  // pagination: ids strictly below
  int limit = 50;
  std::optional<int64_t> parent_id;  // only the workers of this distributed job
  bool include_workers = false;      // without parent_id: also list workers (else top level only)
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

}  // namespace kiln::store
