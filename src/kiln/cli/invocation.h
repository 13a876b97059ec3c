// invocation.h
//
// `Invocation`: everything one run of the `kiln` command reads from and writes to the
// outside world: its output streams, environment, working directory, clock, the terminal
// for password prompts, and exec. Commands reach the world only through it, so tests run
// the whole CLI in-process with string streams, a temp HOME and a fake clock.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/clock.h"

namespace kiln::cli {

// Not thread-safe; one per run of the CLI, owned by main (or a test).
struct Invocation {
  std::ostream* out = nullptr;  // command results (ids, tables, log text)
  std::ostream* err = nullptr;  // progress, warnings, errors
  std::istream* in = nullptr;   // answers to prompts when stdin is not a terminal

  std::map<std::string, std::string> env;
  std::string cwd;       // the folder `kiln run` packages by default
  std::string self_exe;  // absolute path of the running `kiln` binary

  // Wall-clock time (ages, durations, retry deadlines).
  const base::Clock* clock = nullptr;
  // Blocks for `micros`; tests advance a fake clock instead.
  std::function<void(int64_t micros)> sleep;
  // Prints `prompt` and reads one line without echoing it (a password).
  std::function<absl::StatusOr<std::string>(std::string_view prompt)> read_secret;
  // Replaces the process with `path` run as `argv`; returns only on failure.
  std::function<absl::Status(const std::string& path, const std::vector<std::string>& argv)> exec;
  // Whether following a job installs a SIGINT handler that stops following and says how
  // to re-attach. Real processes only: the handler exits the process.
  bool handle_interrupts = false;

  // Filled while parsing the command line.
  std::string url_flag;                   // global --url
  std::vector<std::string> after_dashes;  // the words after the first "--", if any
  bool saw_dashes = false;
  std::function<absl::Status()> command;  // the selected command, run after parsing
  std::optional<int> exit_code;           // set by commands that choose their exit code

  // Returns the environment variable `name`, or nullopt if unset. An empty value counts
  // as unset, which is what a user who writes `KILN_URL= kiln jobs` means.
  std::optional<std::string> GetEnv(const std::string& name) const;
};

// Streams, environment and seams of the real process: std::cout/cerr/cin, `environ`, the
// current folder, /proc/self/exe, the system clock, termios prompts, execv.
Invocation ProcessInvocation();

}  // namespace kiln::cli
