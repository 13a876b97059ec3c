// task_shim.h
//
// `RunShim`, the body of `kiln-shim`: a tiny per-task supervisor, like containerd's shim.
// It runs in a session of its own, puts the task in its own process group, copies the
// task's stdout and stderr into `output.log`, forwards SIGTERM/SIGINT to the group and
// records the exit in `exit.json`, so the task survives restarts of the agent and master
// that started it. task_supervision.h is the agent's side; the files in the task directory
// are the whole interface between the two.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::agent {

struct ShimOptions {
  std::string task_dir;               // must exist; receives shim.json, output.log, exit.json
  std::string workdir;                // the task's working directory
  std::vector<std::string> command;   // argv of the task; command[0] is looked up on PATH
  int64_t max_log_bytes = 256 << 20;  // cap on output.log; later output is dropped
  // When >= 0, receives one line once the outcome of the start is known, then is closed:
  // "started <task_pid>\n", or "failed <message>\n" when the command could not be run.
  int ready_fd = -1;
};

// Runs the task described by `options` to completion and returns the shim's exit code:
// 0 once exit.json is written (also when the command could not be started: exit.json then
// holds exit code 127 and the error), 1 when the shim could not do its job (for example the
// task directory is not writable); the reason then goes to stderr.
//
// Takes over the calling process: it calls setsid() (forking once if the caller leads a
// process group), ignores SIGHUP and SIGPIPE and blocks SIGCHLD, SIGTERM and SIGINT. Meant
// to be called from main() only.
int RunShim(const ShimOptions& options);

}  // namespace kiln::agent
