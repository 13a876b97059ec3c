// rendezvous.h
//
// `Rendezvous`, the master's side of one elastic job's membership (ARCHITECTURE.md §5.2):
// which workers train together in which generation, with which ranks, and where the
// generation's c10d store is. Pure state: no store, no HTTP, no clock of its own. The
// elastic job controller feeds it worker joins, deaths and leave requests and asks it to
// form the next generation; the REST layer turns its answers into replies.
//
// A generation forms when every live member of the current generation and every waiting
// newcomer has joined (at least `min_workers`), or once `join_timeout` has passed since
// the change was first wanted with at least `min_workers` joined; members that never
// joined are then reported as stragglers (the caller kills them). Rank 0 is the source of
// the state: the joiner with the highest committed step, oldest (lowest task id) first.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kiln::elastic {

struct JoinRequest {
  int64_t task_id = 0;
  std::string host;        // where the worker's c10d store listens
  int store_port = 0;      // the store it opened for this join
  int64_t generation = 0;  // the last generation the worker was in (0: none)
  int64_t step = -1;       // its last committed step (-1: no state yet)
};

struct Generation {
  int64_t id = 0;
  std::vector<int64_t> members;  // task ids, by rank
  std::string store_host;
  int store_port = 0;
  int64_t started_at = 0;  // µs since epoch
  std::string reason;      // why it formed ("start", "worker 14 exited (signal 9)", ...)
  int world_size() const { return static_cast<int>(members.size()); }
};

// What a joining worker is told.
struct JoinAnswer {
  enum Kind { kWait, kAssigned, kLeave };
  Kind kind = kWait;
  Generation generation;  // kAssigned
  int rank = 0;           // kAssigned
  std::string reason;     // kLeave
};

// What a watching worker is told about its generation `g`.
struct WatchAnswer {
  bool next = false;   // a generation after g is pending: finish the step and join
  bool leave = false;  // this worker is asked to leave
};

class Rendezvous {
 public:
  Rendezvous(int min_workers, int64_t join_timeout_micros);

  // After a master restart: the last stored generation is the current one, its members
  // assumed alive until told otherwise.
  void Restore(const Generation& current);

  // A worker asks into the next generation (or, for a member of the current one whose
  // `generation` is older than the current one, re-asks for its assignment).
  void Join(const JoinRequest& request, int64_t now);
  // A worker's task ended: it leaves the membership and, if it was in the current
  // generation, a new one is wanted.
  void RemoveWorker(int64_t task_id, const std::string& reason, int64_t now);
  // Asks a live worker to leave at its next step boundary (scale down, reclaim).
  void RequestLeave(int64_t task_id, const std::string& reason, int64_t now);
  // A worker was launched and will join: while no member of a current generation is
  // alive (the first start, or after losing everyone), the next generation waits for
  // every such worker (up to the timeout) instead of forming with the first min_workers.
  void AddStarting(int64_t task_id) { starting_.insert(task_id); }

  // Forms the next generation if it is ready at `now`. `stragglers` receives members of
  // the current generation that did not join within the timeout (kill them).
  std::optional<Generation> MaybeForm(int64_t now, std::vector<int64_t>* stragglers);

  JoinAnswer AnswerJoin(int64_t task_id, int64_t last_generation) const;
  WatchAnswer AnswerWatch(int64_t task_id, int64_t generation) const;

  const std::optional<Generation>& current() const { return current_; }
  bool change_pending() const { return pending_since_.has_value(); }
  bool is_leaving(int64_t task_id) const { return leaving_.count(task_id) > 0; }
  // Live members of the current generation (not removed).
  std::vector<int64_t> live_members() const;
  // When the pending change stops being served by waiting (for timers), or nullopt.
  std::optional<int64_t> deadline() const;

 private:
  void Want(const std::string& reason, int64_t now);

  int min_workers_;
  int64_t join_timeout_micros_;
  std::optional<Generation> current_;
  std::set<int64_t> removed_;               // members of current_ whose task ended
  std::map<int64_t, JoinRequest> waiting_;  // joined for the next generation
  std::map<int64_t, std::string> leaving_;  // asked to leave -> why
  std::set<int64_t> starting_;              // launched, not joined yet
  std::optional<int64_t> pending_since_;
  std::vector<std::string> pending_reasons_;
};

}  // namespace kiln::elastic
