// agent_protocol.h
//
// The messages between kilnd and its agents (ARCHITECTURE.md: agents talk to the master
// only through the REST API). Both sides encode and decode them here, so the contract
// lives in one file:
//
//   POST /api/v1/agents/register       AgentHello        -> RegisterReply
//   POST /api/v1/agents/{id}/sync      SyncRequest       -> SyncReply (long-poll)
//   POST /api/v1/agents/{id}/report    AgentReport       -> ReportReply
//   GET  /api/v1/packages/{id}/content                   -> package bytes
//
// The protocol is level-triggered: an agent states what it runs, the master answers what
// should run. Output is shipped with byte offsets of the files the agent tails, and the
// master applies a batch only at the offset it has stored, so resends after a crash of
// either side neither lose nor duplicate a line.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/store/records.h"

namespace kiln::api {

struct GpuDescription {
  int index = 0;
  std::string uuid;
  std::string name;
  int64_t memory_mib = 0;
};

struct AgentHello {
  std::string agent_id;
  std::string hostname;
  // The address other nodes reach this one at (its IP on the route to the master); the
  // MASTER_ADDR of static distributed jobs whose rank 0 runs here. Empty: the hostname.
  std::string address;
  int slots = 0;
  std::vector<GpuDescription> gpus;
  std::vector<int64_t>
      tasks;  // job ids of the tasks this agent holds and has not finished reporting
};

struct StreamOffsets {
  int64_t log = 0;
  int64_t emetrics = 0;
};

struct RegisterReply {
  // For each task of the hello the master still expects output from: where to resume.
  std::map<int64_t, StreamOffsets> resume;
  // Tasks of the hello the master has no use for (finished or unknown): stop and forget.
  std::vector<int64_t> forget;
  int64_t sync_wait_ms = 20000;
};

struct TaskSpec {
  int64_t job_id = 0;
  std::vector<std::string> command;
  std::map<std::string, std::string> env;  // user env + KILN_MASTER/KILN_TOKEN/KILN_JOB_ID...
  base::Json config = base::Json::object();
  std::string package_id;    // uploaded package, or
  std::string package_kind;  // "file" | "tar.gz"
  std::string package_name;
  std::string package_path;  // a shared-filesystem folder
  std::string workdir;       // the command's folder, relative to the package root ("": root)
  int slots = 1;
  std::vector<int> gpu_indices;
};

struct SyncRequest {
  std::vector<int64_t> running;  // job ids the agent currently runs
  int64_t wait_ms = 20000;
};

struct SyncReply {
  std::vector<TaskSpec> launch;
  std::vector<int64_t> kill;
  int64_t grace_ms = 10000;
};

enum class TaskPhase { kRunning, kExited, kLaunchFailed, kLost };

struct OutputChunk {
  int64_t from = 0;                        // byte offset in the tailed file where this chunk starts
  int64_t to = 0;                          // ... and ends
  std::vector<store::LogLine> lines;       // for the log stream
  std::vector<store::MetricPoint> points;  // for the emetrics stream
};

struct TaskReport {
  int64_t job_id = 0;
  TaskPhase phase = TaskPhase::kRunning;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string reason;
  std::optional<OutputChunk> log;
  std::optional<OutputChunk> emetrics;
  std::vector<store::MetricPoint> final_metrics;  // val_dict_list.json, with kExited
  // With kExited: the files under $RESULT_DIR/model/ the agent uploaded as packages
  // ("artifacts": [{"path": "model/model.pt", "package_id": ..., "size": N}]; job_id and
  // created_at unused). Absent from older agents' reports.
  std::vector<store::ArtifactRecord> artifacts;
};

struct AgentReport {
  std::vector<TaskReport> tasks;
};

struct TaskAck {
  StreamOffsets offsets;  // the master's stored offsets after applying (or refusing)
  bool done = false;      // the task is final on the master: the agent may forget it
};

struct ReportReply {
  std::map<int64_t, TaskAck> tasks;
};

base::Json ToJson(const AgentHello& m);
base::Json ToJson(const RegisterReply& m);
base::Json ToJson(const TaskSpec& m);
base::Json ToJson(const SyncRequest& m);
base::Json ToJson(const SyncReply& m);
base::Json ToJson(const AgentReport& m);
base::Json ToJson(const ReportReply& m);

// Decoders return InvalidArgument naming the bad field.
absl::StatusOr<AgentHello> AgentHelloFromJson(const base::Json& j);
absl::StatusOr<RegisterReply> RegisterReplyFromJson(const base::Json& j);
absl::StatusOr<TaskSpec> TaskSpecFromJson(const base::Json& j);
absl::StatusOr<SyncRequest> SyncRequestFromJson(const base::Json& j);
absl::StatusOr<SyncReply> SyncReplyFromJson(const base::Json& j);
absl::StatusOr<AgentReport> AgentReportFromJson(const base::Json& j);
absl::StatusOr<ReportReply> ReportReplyFromJson(const base::Json& j);

}  // namespace kiln::api
