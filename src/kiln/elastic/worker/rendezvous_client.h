// rendezvous_client.h
//
// Defines `RendezvousClient`, the worker side of kilnd's elastic rendezvous over HTTP
// (ARCHITECTURE.md §5.2): `Join` long-polls `POST /api/v1/jobs/{job}/rendezvous/join`
// until a generation is formed, and the watch long-polls `GET /api/v1/jobs/{job}/rendezvous`
// on a thread of its own so that the training loop can fold "a next generation is pending"
// into its gradient all-reduce. The reply parsers are exposed for tests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/elastic/worker/rendezvous.h"

namespace kiln::elastic::worker {

struct RendezvousClientOptions {
  std::string master_url;  // KILN_MASTER, "http://host:port"
  std::string token;       // KILN_TOKEN, sent as a Bearer token; empty sends none
  std::string job_id;      // KILN_JOB_ID: the parent job
  int64_t task_id = 0;     // KILN_TASK_ID: this worker
  // The address announced to other workers; empty = the local address of the route to the
  // master (see LocalAddressToward).
  std::string host;
  // How long the master may hold one join or watch request before answering "retry" /
  // "no change". Short watches make StopWatch's leftover thread end sooner.
  std::chrono::milliseconds join_wait{20000};
  std::chrono::milliseconds watch_wait{2000};
  // How long Join keeps retrying while the master cannot be reached or answers 5xx (a
  // restarting kilnd) before it gives up with the last error.
  std::chrono::milliseconds unreachable_budget{std::chrono::minutes(5)};
};

// A reply to a join, as the master sent it.
struct JoinReply {
  bool retry = false;   // nothing formed within wait_ms: join again
  JoinOutcome outcome;  // when !retry
};

// A reply to a watch.
struct WatchReply {
  bool next = false;   // a generation after the watched one is pending
  bool leave = false;  // ... and this worker is to leave it
};

// Parses a join reply for task `task_id`. InvalidArgument naming the field when the reply
// is not an object, a field is missing or has the wrong type, rank/source_rank are not in
// [0, world_size), members does not list world_size task ids with this task at `rank`, or
// the store port is not in [1, 65535].
[[nodiscard]] absl::StatusOr<JoinReply> ParseJoinReply(const base::Json& reply, int64_t task_id);
// Parses a watch reply; InvalidArgument naming the field when malformed.
[[nodiscard]] absl::StatusOr<WatchReply> ParseWatchReply(const base::Json& reply);

// Talks to kilnd for one worker. Owns an HTTP client for joins and one per watch thread.
// Thread-safety: every method is called from one thread (the training loop); the watch
// threads touch only their own `Watch` state.
class RendezvousClient final : public Rendezvous {
 public:
  // Looks up an environment variable; nullopt when unset or empty.
  using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

  // Reads KILN_MASTER, KILN_TOKEN (optional), KILN_JOB_ID and KILN_TASK_ID. InvalidArgument
  // naming the variable when one is missing or malformed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RendezvousClient>> FromEnvironment(
      const EnvLookup& lookup);

  // InvalidArgument for a malformed master_url, an empty job_id or one with characters
  // other than [A-Za-z0-9_-], or a task_id < 1; Unimplemented for https. With an empty
  // `host`, finds the local address toward the master (no packet is sent).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RendezvousClient>> Create(
      RendezvousClientOptions options);

  // Stops the watch and waits for its thread (at most about watch_wait).
  ~RendezvousClient() override;
  RendezvousClient(const RendezvousClient&) = delete;
  RendezvousClient& operator=(const RendezvousClient&) = delete;

  const std::string& host() const override { return options_.host; }

  // Posts the join and repeats it while the master answers {"retry": true}. Retries
  // unreachable-master errors, 5xx and 429 with backoff for up to unreachable_budget,
  // then returns the last error (Unavailable / DeadlineExceeded). Other HTTP errors come
  // back at once as the Status the master's error body names (e.g. FailedPrecondition for
  // a finished job). InvalidArgument for a malformed reply.
  [[nodiscard]] absl::StatusOr<JoinOutcome> Join(const JoinRequest& request) override;

  // Starts a thread that long-polls the watch route until a next generation is pending or
  // the watch is stopped. Errors are retried with backoff: a watch that cannot reach the
  // master never stops training, it only delays noticing a change.
  void StartWatch(int64_t generation) override;
  void StopWatch() override;
  bool next_pending() const override;

 private:
  // State shared with one watch thread, which may outlive the watch it served.
  struct Watch {
    std::atomic<bool> stop{false};
    std::atomic<bool> next{false};
  };

  explicit RendezvousClient(RendezvousClientOptions options);
  void RunWatch(std::shared_ptr<Watch> watch, int64_t generation) const;
  // Joins leftover watch threads that have finished; with `all`, every one (blocking).
  void ReapWatchThreads(bool all);

  const RendezvousClientOptions options_;
  const std::string join_target_;   // "/api/v1/jobs/<job>/rendezvous/join"
  const std::string watch_target_;  // "/api/v1/jobs/<job>/rendezvous"

  std::shared_ptr<Watch> watch_;  // the current watch; never null
  struct WatchThread {
    std::shared_ptr<Watch> watch;
    std::shared_ptr<std::atomic<bool>> done;
    std::thread thread;
  };
  // Threads of the current and stopped watches. A stopped watch's thread ends when its
  // long-poll returns (<= watch_wait); joining it at once would stall the training loop.
  std::vector<WatchThread> watch_threads_;
};

}  // namespace kiln::elastic::worker
