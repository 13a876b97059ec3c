#include "kiln/elastic/worker/solo_rendezvous.h"

namespace kiln::elastic::worker {

absl::StatusOr<JoinOutcome> SoloRendezvous::Join(const JoinRequest& request) {
  JoinOutcome outcome;
  Assignment& a = outcome.assignment;
  a.generation = request.generation + 1;
  a.rank = 0;
  a.world_size = 1;
  a.members = {0};
  a.store_host = host_;
  a.store_port = request.store_port;
  a.source_rank = 0;
  a.reason = request.generation == 0 ? "a world of one (not under Kiln)" : "re-joined";
  return outcome;
}

}  // namespace kiln::elastic::worker
