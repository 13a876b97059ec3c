// solo_rendezvous.h
//
// Defines `SoloRendezvous`, the membership of an elastic run outside Kiln: a world of one
// that never changes. It lets `kiln-train --elastic` run the same elastic loop (store,
// process group, commits) on a laptop as it does under kilnd.
#pragma once

#include <string>

#include "kiln/elastic/worker/rendezvous.h"

namespace kiln::elastic::worker {

// Every join forms a new generation of one worker (task id 0, rank 0) whose store is the
// worker's own. Not thread-safe; used by the training thread only.
class SoloRendezvous final : public Rendezvous {
 public:
  const std::string& host() const override { return host_; }
  // Never fails and never leaves.
  [[nodiscard]] absl::StatusOr<JoinOutcome> Join(const JoinRequest& request) override;
  void StartWatch(int64_t) override {}
  void StopWatch() override {}
  bool next_pending() const override { return false; }

 private:
  const std::string host_ = "127.0.0.1";
};

}  // namespace kiln::elastic::worker
