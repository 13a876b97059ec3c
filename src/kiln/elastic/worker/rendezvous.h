// rendezvous.h
//
// The worker's view of elastic membership (ARCHITECTURE.md §5.2): what a worker sends when
// it joins, the generation it is placed in, and `Rendezvous`, the seam between the C++
// training loop (src/kiln/torch) and whoever keeps membership: kilnd over HTTP
// (`RendezvousClient`), a world of one outside Kiln (`SoloRendezvous`), or kilnd's own
// `kiln::elastic::Rendezvous` in process, for tests of N ranks on N threads
// (testing/local_rendezvous.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::elastic::worker {

// What a worker says when it (re-)joins.
struct JoinRequest {
  int64_t generation = 0;  // the last generation the worker was in; 0 if none
  int64_t step = -1;       // its last committed step; -1 if it holds no state yet
  int store_port = 0;      // the c10d TCPStore server it opened for this join
};

// This worker's place in a formed generation.
struct Assignment {
  int64_t generation = 0;
  int rank = 0;
  int world_size = 0;
  std::vector<int64_t> members;  // task ids by rank; members[rank] is this worker
  // The c10d store of the generation: the source rank's `host` and `store_port`.
  std::string store_host;
  int store_port = 0;
  int source_rank = 0;  // the rank whose committed state everyone starts from
  std::string reason;   // why the generation was formed, for the log
};

// The answer to a join: a place in a generation, or an order to leave (exit 0).
struct JoinOutcome {
  bool leave = false;
  std::string reason;     // set when leaving; may be empty
  Assignment assignment;  // meaningful only when !leave
};

// The membership keeper as one worker sees it. A seam (network): `RendezvousClient` is the
// real one. Join and the watch methods are called from the training thread; the watch
// itself may run on a thread of the implementation.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;

  // The address other workers reach this one at (its c10d store and Gloo connections).
  virtual const std::string& host() const = 0;

  // Joins the next generation and blocks until one that includes this worker is formed,
  // or until told to leave. Errors are final: the worker should exit with them.
  [[nodiscard]] virtual absl::StatusOr<JoinOutcome> Join(const JoinRequest& request) = 0;

  // Starts watching for a generation after `generation`; `next_pending()` turns true once
  // one is pending (a worker joined, died or must leave). Replaces an earlier watch.
  virtual void StartWatch(int64_t generation) = 0;
  // Stops the current watch without blocking; the flags keep their last values.
  virtual void StopWatch() = 0;
  // Whether the watched generation is about to end. Cheap; called once per step.
  virtual bool next_pending() const = 0;
};

}  // namespace kiln::elastic::worker
