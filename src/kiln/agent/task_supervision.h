// task_supervision.h
//
// The agent's side of task supervision. Each task runs under its own `kiln-shim`, which
// owns the task's process group and records everything in the task directory:
// `shim.json` (pids, written once the task runs), `output.log` (see task_log.h) and
// `exit.json` (written when the task is over). Because that state lives in files, an agent
// that restarts re-adopts its running tasks with `InspectTask`; nothing here depends on the
// process that launched the task still being alive.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::agent {

// File names inside a task directory.
inline constexpr char kShimInfoFile[] = "shim.json";
inline constexpr char kExitRecordFile[] = "exit.json";
inline constexpr char kOutputLogFile[] = "output.log";
// The shim's own diagnostics (its stderr), for when something goes wrong with the shim.
inline constexpr char kShimLogFile[] = "shim.log";

// What to run and where. `env` is the complete environment of the task (the shim runs in
// it too, and `command[0]` is looked up on its PATH).
struct TaskLaunch {
  std::string shim_path;  // path of the kiln-shim binary
  std::string task_dir;   // created if missing
  std::string workdir;    // must exist
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  int64_t max_log_bytes = 256 << 20;
};

// Contents of shim.json. Start times are field 22 of /proc/<pid>/stat (clock ticks since
// boot); with the pid they identify a process even after the pid is reused.
struct ShimInfo {
  int shim_pid = 0;
  int task_pid = 0;
  int pgid = 0;  // the task's process group; equals task_pid
  int64_t task_start_time = 0;
  int64_t shim_start_time = 0;
  int64_t started_at = 0;  // micros since the epoch
};

// Contents of exit.json. Exactly one of `exit_code` and `signal` is set. When the command
// could not be started, `exit_code` is 127 and `error` says why.
struct ExitRecord {
  std::optional<int> exit_code;
  std::optional<int> signal;
  int64_t finished_at = 0;  // micros since the epoch
  std::string error;
};

// Launches a shim for `launch` and waits up to `timeout` for it to report. Returns the
// ShimInfo once the task runs; FailedPrecondition with the shim's message when the command
// could not be started (exit.json is then already written); InvalidArgument for an empty
// command or a missing workdir; Internal when the shim itself cannot be started or dies
// before reporting; DeadlineExceeded when it has not reported in time (it may still start
// the task: `InspectTask` tells). Blocks the calling thread; safe to call from any thread.
[[nodiscard]] absl::StatusOr<ShimInfo> LaunchTask(
    const TaskLaunch& launch, std::chrono::milliseconds timeout = std::chrono::seconds(10));

enum class TaskLiveness {
  kRunning,  // the shim is alive; exit.json will follow
  kExited,   // exit.json is written
  kLost,     // no exit.json and the shim is gone (or its pid was reused)
};

struct TaskStatus {
  TaskLiveness liveness = TaskLiveness::kLost;
  std::optional<ShimInfo> shim;  // absent when the command never started
  std::optional<ExitRecord> exit;
};

// Reads shim.json and exit.json in `task_dir` and checks /proc for the shim. Works for
// tasks launched by any earlier agent process. Returns NotFound if neither file exists
// (not launched, or the shim has not written shim.json yet), DataLoss if one is corrupt.
// Does not block.
[[nodiscard]] absl::StatusOr<TaskStatus> InspectTask(const std::string& task_dir);

// Sends `signal` to the task's process group. OK when the task is already over (exit.json
// written, or the group gone). NotFound when there is no shim.json.
[[nodiscard]] absl::Status SignalTask(const std::string& task_dir, int signal);

// Reaps the shims this process launched that have exited, without blocking. Shims outlive
// their tasks by only a moment, so an agent calls this periodically to keep zombies away.
// Thread-safe.
void ReapExitedShims();

// --- The state-file schema, shared with the shim. ---

std::string ShimInfoToJson(const ShimInfo& info);
// InvalidArgument if `text` is not a valid shim.json.
[[nodiscard]] absl::StatusOr<ShimInfo> ParseShimInfo(std::string_view text);
std::string ExitRecordToJson(const ExitRecord& record);
// InvalidArgument if `text` is not a valid exit.json.
[[nodiscard]] absl::StatusOr<ExitRecord> ParseExitRecord(std::string_view text);

// What /proc/<pid>/stat says about a process.
struct ProcessStat {
  char state = '?';        // 'R', 'S', 'Z' (zombie), ...
  int64_t start_time = 0;  // field 22
};
// NotFound if no process `pid` exists; Internal if the file cannot be parsed.
[[nodiscard]] absl::StatusOr<ProcessStat> ReadProcessStat(int pid);

}  // namespace kiln::agent
