// job_follow.h
//
// Reading a job's logs and waiting for it to end, shared by `kiln logs` and `kiln run
// --follow/--wait`. Following survives a master restart: on a dropped connection it
// resumes from the last log line it printed, retrying for up to a minute. Also the
// one-line summary of a finished job and the exit code `--wait` gives for it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/invocation.h"

namespace kiln::cli {

// How long following keeps retrying while the master cannot be reached.
inline constexpr int64_t kReconnectWindowMicros = 60'000'000;

// Splits a byte stream into newline-terminated lines; keeps the unfinished tail.
class LineSplitter {
 public:
  // Calls `on_line` (without the '\n') for every line completed by `data`.
  void Feed(std::string_view data, const std::function<void(std::string_view)>& on_line);
  // The bytes after the last newline seen.
  const std::string& pending() const { return pending_; }

 private:
  std::string pending_;
};

// Whether `state` is FINISHED, FAILED or KILLED.
bool IsTerminalState(std::string_view state);

// "job 7 FINISHED in 41.2 s", "job 7 FAILED: exited with code 2", "job 7 KILLED after 3.0 s".
std::string JobSummary(const base::Json& job);

// The exit code `kiln run --wait` gives for the ended `job`: 0 for FINISHED; the job's
// exit code (1..255) for FAILED, else 1; 137 for KILLED.
int ExitCodeForJob(const base::Json& job);

// Prints the text of each log line object in `lines` (stdout lines to inv.out, stderr
// lines to inv.err) and raises `*last_seq` to the highest seq printed. Lines at or below
// `*last_seq` are skipped, so overlapping pages print once.
void PrintLogLines(const base::Json& lines, Invocation& inv, int64_t* last_seq);

// Prints the logs of `job_id` after `*last_seq` that exist now, page by page. Returns
// whether the job has ended and every line was printed (the API's "done").
[[nodiscard]] absl::StatusOr<bool> PrintAvailableLogs(ApiClient& api, Invocation& inv,
                                                      int64_t job_id, int64_t* last_seq);

// Streams the logs of `job_id` after `*last_seq` until the job ends. Reconnects and
// resumes after dropped connections, for up to kReconnectWindowMicros without contact;
// then Unavailable saying how to re-attach. Other errors (NotFound, Unauthenticated)
// return at once. With inv.handle_interrupts, Ctrl-C exits with 130 and a message.
[[nodiscard]] absl::Status FollowLogs(ApiClient& api, Invocation& inv, int64_t job_id,
                                      int64_t* last_seq);

// Polls the job until it ends and returns its final record, retrying through outages
// like FollowLogs.
[[nodiscard]] absl::StatusOr<base::Json> WaitForJobEnd(ApiClient& api, Invocation& inv,
                                                       int64_t job_id);

}  // namespace kiln::cli
