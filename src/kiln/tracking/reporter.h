// reporter.h
//
// Defines `Reporter`, the C++ side of the workload contract's native metrics path
// (ARCHITECTURE.md §3, path 3): a training process hands it metric values, and a
// background thread POSTs them in batches to `/api/v1/jobs/{id}/metrics` (docs/api.md,
// "Metrics"). It behaves like Python's `kiln.metrics.Reporter`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "kiln/base/clock.h"
#include "kiln/net/http_client.h"

namespace kiln::tracking {

struct ReporterOptions {
  std::string master_url;  // "http://host:port", as in KILN_MASTER
  std::string token;       // bearer token (KILN_TOKEN); empty sends no Authorization
  std::string job_id;      // KILN_JOB_ID
  // The id the master deduplicates batches by; empty picks a random "w-<16 hex>". Two
  // reporters must never share one (their seqs would collide and points be ignored).
  std::string writer;
  // A buffered point waits at most this long before it is sent.
  std::chrono::milliseconds flush_interval{500};
  // Points per POST at most; also the buffered count that triggers a send at once.
  size_t max_batch_points = 1000;
  // Points kept unsent at most; beyond that the oldest are dropped (with one warning).
  size_t max_buffer_points = 1'000'000;
  // Cap of the exponential retry backoff, which starts at min(100 ms, max_backoff).
  std::chrono::milliseconds max_backoff{5000};
  // How long the destructor waits for unsent points before giving them up.
  std::chrono::milliseconds exit_timeout{60000};
  // Limit of one POST (connect, send, answer).
  std::chrono::milliseconds request_timeout{10000};
};

// Counters of a Reporter's work so far; points_pending is buffered plus in flight.
struct ReporterStats {
  int64_t batches_sent = 0;
  int64_t points_sent = 0;
  int64_t retries = 0;
  int64_t points_rejected = 0;  // in batches the master answered with a 4xx
  int64_t points_dropped = 0;   // oldest points dropped because the buffer was full
  int64_t points_pending = 0;
};

// Buffers metric points and sends them to the Kiln master from its own thread.
//
// Delivery: each batch carries the reporter's writer id and a seq that stays fixed for
// that batch until the master answers it, so retries are deduplicated and nothing is
// counted twice. Connection errors, timeouts, 5xx, 408 and 429 are retried with
// exponential backoff for as long as the reporter lives. Any other non-2xx answer means
// the request itself is wrong (a bad token, a finished job): the batch is dropped with a
// warning (once per HTTP status) and sending goes on with the next one.
//
// Owns its HttpClient and its sender thread. Not fork-safe: create it in the process that
// reports. Thread-safe.
class Reporter {
 public:
  // Looks up an environment variable; nullopt when unset or empty.
  using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

  // A reporter configured from the task environment the agent sets: KILN_MASTER,
  // KILN_TOKEN (optional) and KILN_JOB_ID, plus KILN_REPORT_EXIT_TIMEOUT (seconds, as
  // for Python's reporter) for exit_timeout; other options keep their defaults.
  // Returns OK(nullptr) when KILN_JOB_ID is unset: the process is not a Kiln task (a user
  // shell may well export KILN_MASTER for the CLI), and reporting is simply off.
  // InvalidArgument when KILN_JOB_ID is set but KILN_MASTER is not, when
  // KILN_REPORT_EXIT_TIMEOUT is not a non-negative number, or for malformed values (see
  // Create).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Reporter>> FromEnvironment();
  // As above, reading variables through `lookup` (for tests).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Reporter>> FromEnvironment(
      const EnvLookup& lookup);

  // Starts a reporter and its sender thread; connects only when there is something to
  // send. `clock` stamps each report's time and must outlive the reporter. Returns
  // InvalidArgument for a malformed master_url, an empty job_id or one with characters
  // other than [A-Za-z0-9_-], a writer over 128 characters, or batch/buffer sizes that
  // are not 1 <= max_batch_points <= max_buffer_points; Unimplemented for https URLs.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Reporter>> Create(
      ReporterOptions options, const base::Clock& clock = base::SystemClock::Get());

  // Flushes, waiting up to exit_timeout (points still unsent then are lost, with a
  // warning), then stops the sender thread. May block a further request_timeout while
  // an in-flight POST finishes.
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  // Queues the `metrics` measured at `step` in `group` ("train", "test", ...; empty means
  // "test", the API's default) and returns at once; never blocks on the network.
  // Values that are NaN or infinite, and names that are empty or over 256 characters
  // (which the master would refuse, rejecting the whole batch), are skipped with one
  // warning per name; a report left with no values is skipped.
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics);

  // Blocks until every point reported before this call has been sent, rejected or
  // dropped, or `timeout` has passed. Returns true in the first case, false on timeout
  // (the points stay queued and are still sent later).
  bool Flush(std::chrono::milliseconds timeout);

  ReporterStats stats() const;
  const std::string& writer() const { return options_.writer; }

 private:
  // One report as queued: at most max_batch_points values (Report splits larger ones).
  struct Entry {
    int64_t step = 0;
    std::string group;
    double time_s = 0;
    std::vector<std::pair<std::string, double>> metrics;
  };
  struct Batch {
    int64_t seq = 0;
    std::vector<Entry> entries;
    size_t points = 0;
  };

  Reporter(ReporterOptions options, std::unique_ptr<net::HttpClient> client,
           const base::Clock& clock);

  void Run();
  // True when the sender should send now instead of waiting out flush_interval.
  bool SendNowLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Batch TakeBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropOverflowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `batch` until it is acknowledged or rejected, or the reporter stops.
  void Deliver(const Batch& batch);
  // Waits up to `delay` unless the reporter stops first; returns false if it stopped.
  bool WaitUnlessStopped(std::chrono::milliseconds delay);

  const ReporterOptions options_;
  const std::string target_;  // "/api/v1/jobs/<id>/metrics"
  const base::Clock& clock_;
  std::unique_ptr<net::HttpClient> client_;  // used by the sender thread only

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees pthread locking, not the
  // inside of the prebuilt Abseil library, and would report false races.
  mutable std::mutex mu_;
  std::condition_variable changed_;  // buffer, resolved count, flush waiters or stop changed
  std::deque<Entry> buffer_ ABSL_GUARDED_BY(mu_);
  size_t buffered_points_ ABSL_GUARDED_BY(mu_) = 0;
  size_t in_flight_points_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;  // entries ever queued
  int64_t resolved_ ABSL_GUARDED_BY(mu_) = 0;  // entries sent, rejected or dropped
  int flush_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  ReporterStats stats_ ABSL_GUARDED_BY(mu_);
  bool warned_overflow_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> warned_names_ ABSL_GUARDED_BY(mu_);
  std::set<int> warned_statuses_ ABSL_GUARDED_BY(mu_);
  bool warned_retry_ = false;  // touched by the sender thread only

  std::thread thread_;  // started last in the constructor, joined by the destructor
};

}  // namespace kiln::tracking
