// local_rendezvous.h
//
// `LocalRendezvousHub`: kilnd's rendezvous coordinator in-process, so that the elastic
// training loop can be tested as N ranks on N threads. The membership logic is the
// master's own `kiln::elastic::Rendezvous` (src/kiln/elastic/rendezvous.h); the hub only
// adds what kilnd's REST layer and controller add around it: a lock, blocking joins
// (kilnd long-polls; here a condition variable), the watch flag, launching workers
// (`Add`) and asking them to leave (`Remove`). Its default join timeout is a day, so a
// member that never joins stalls the others visibly, as a test bug should; a test of the
// timeout passes a short one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kiln/elastic/rendezvous.h"
#include "kiln/elastic/worker/rendezvous.h"

namespace kiln::elastic::worker {

// Thread-safe. Must outlive every handle returned by Connect.
class LocalRendezvousHub {
 public:
  static constexpr int64_t kDayMicros = int64_t{24} * 3600 * 1000 * 1000;

  // The tasks in `initial` are launched: the first generation waits for all of them (or
  // forms with those that joined, at least `min_workers`, once `join_timeout_micros` has
  // passed since the first join).
  explicit LocalRendezvousHub(std::vector<int64_t> initial,
                              int64_t join_timeout_micros = kDayMicros, int min_workers = 1)
      : rendezvous_(min_workers, join_timeout_micros) {
    for (int64_t task : initial) rendezvous_.AddStarting(task);
  }

  // A member's view of the hub, for the worker of `task_id` (on 127.0.0.1).
  std::unique_ptr<Rendezvous> Connect(int64_t task_id) {
    return std::make_unique<Handle>(*this, task_id);
  }

  // `task_id` is launched. As under kilnd, the current generation ends only once it has
  // joined (see AwaitJoin).
  void Add(int64_t task_id) {
    std::lock_guard lock(mu_);
    rendezvous_.AddStarting(task_id);
    joined_.erase(task_id);
  }

  // Blocks until `task_id` has asked to join since it was added (or since the hub was
  // made): from then on the members' watch says a next generation is pending. Lets a test
  // pin the step at which a newcomer arrives.
  void AwaitJoin(int64_t task_id) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return joined_.count(task_id) > 0; });
  }

  // `task_id` is asked to leave: its watch says so, its next join is answered "leave", and
  // the others form the next generation without it.
  void Remove(int64_t task_id) {
    std::lock_guard lock(mu_);
    rendezvous_.RequestLeave(task_id, "removed by the test", Now());
    FormIfReady();
    changed_.notify_all();  // a leaver already waiting in Join is answered now
  }

  // Every generation formed so far, as {generation, members by rank}.
  std::vector<std::pair<int64_t, std::vector<int64_t>>> generations() const {
    std::lock_guard lock(mu_);
    return history_;
  }

 private:
  class Handle final : public Rendezvous {
   public:
    Handle(LocalRendezvousHub& hub, int64_t task_id) : hub_(hub), task_id_(task_id) {}
    const std::string& host() const override { return host_; }
    absl::StatusOr<JoinOutcome> Join(const JoinRequest& request) override {
      return hub_.Join(task_id_, host_, request);
    }
    void StartWatch(int64_t generation) override { watched_ = generation; }
    void StopWatch() override {}
    bool next_pending() const override { return hub_.NextPending(task_id_, watched_); }

   private:
    LocalRendezvousHub& hub_;
    const int64_t task_id_;
    const std::string host_ = "127.0.0.1";
    int64_t watched_ = 0;
  };

  // The master's clock is wall time; a steady one serves the same (only differences and
  // deadlines matter) and is what condition variables wait on.
  using Clock = std::chrono::steady_clock;
  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
        .count();
  }

  JoinOutcome Join(int64_t task_id, const std::string& host, const JoinRequest& request) {
    std::unique_lock lock(mu_);
    rendezvous_.Join({.task_id = task_id,
                      .host = host,
                      .store_port = request.store_port,
                      .generation = request.generation,
                      .step = request.step},
                     Now());
    joined_.insert(task_id);
    FormIfReady();
    changed_.notify_all();  // AwaitJoin, and the joiners of a generation just formed
    while (true) {
      const elastic::JoinAnswer answer = rendezvous_.AnswerJoin(task_id, request.generation);
      if (answer.kind == elastic::JoinAnswer::kLeave) {
        return JoinOutcome{.leave = true, .reason = answer.reason, .assignment = {}};
      }
      if (answer.kind == elastic::JoinAnswer::kAssigned) return Assigned(answer);
      // kilnd's controller calls MaybeForm on a timer at the deadline; the waiters here
      // stand in for that timer. A deadline already past (fewer than min_workers joined)
      // waits for the next join or leave instead of spinning.
      const std::optional<int64_t> deadline = rendezvous_.deadline();
      if (deadline && *deadline > Now()) {
        changed_.wait_until(lock, Clock::time_point(std::chrono::microseconds(*deadline)));
      } else {
        changed_.wait(lock);
      }
      FormIfReady();
    }
  }

  static JoinOutcome Assigned(const elastic::JoinAnswer& answer) {
    const elastic::Generation& g = answer.generation;
    JoinOutcome outcome;
    outcome.assignment = Assignment{.generation = g.id,
                                    .rank = answer.rank,
                                    .world_size = g.world_size(),
                                    .members = g.members,
                                    .store_host = g.store_host,
                                    .store_port = g.store_port,
                                    .source_rank = 0,  // the master puts the source at rank 0
                                    .reason = g.reason};
    return outcome;
  }

  bool NextPending(int64_t task_id, int64_t generation) const {
    std::lock_guard lock(mu_);
    return rendezvous_.AnswerWatch(task_id, generation).next;
  }

  // Requires mu_. Stragglers are not killed: a test's thread cannot be, and one that
  // joins late is a newcomer to the generation that formed without it.
  void FormIfReady() {
    std::optional<elastic::Generation> formed = rendezvous_.MaybeForm(Now(), nullptr);
    if (!formed) return;
    history_.emplace_back(formed->id, formed->members);
    changed_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable changed_;  // a generation formed, a worker joined or must leave
  elastic::Rendezvous rendezvous_;
  std::set<int64_t> joined_;  // asked to join since added
  std::vector<std::pair<int64_t, std::vector<int64_t>>> history_;
};

}  // namespace kiln::elastic::worker
