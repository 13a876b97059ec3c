// local_rendezvous.h
//
// `LocalRendezvousHub`: an in-process stand-in for kilnd's rendezvous coordinator, so that
// the elastic training loop can be tested as N ranks on N threads. It forms generations
// the way ARCHITECTURE.md §5.2 says kilnd does (every expected member joined; the source
// is the member with the highest committed step, oldest first) and lets a test add or
// remove members mid-run. Its join timeout is infinite: a member that never joins stalls
// the others, as a test bug should.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kiln/elastic/worker/rendezvous.h"

namespace kiln::elastic::worker {

// Thread-safe. Must outlive every handle returned by Connect.
class LocalRendezvousHub {
 public:
  // The first generation forms once every task in `initial` has joined.
  explicit LocalRendezvousHub(std::vector<int64_t> initial)
      : expected_(initial.begin(), initial.end()) {}

  // A member's view of the hub, for the worker of `task_id` (on 127.0.0.1).
  std::unique_ptr<Rendezvous> Connect(int64_t task_id) {
    return std::make_unique<Handle>(*this, task_id);
  }

  // `task_id` is expected in the next generation; the current one ends after its next step.
  void Add(int64_t task_id) {
    std::lock_guard lock(mu_);
    expected_.insert(task_id);
    ending_ = generation_;
    MaybeFormLocked();
  }

  // `task_id` is told to leave at its next join; the current generation ends after its
  // next step.
  void Remove(int64_t task_id) {
    std::lock_guard lock(mu_);
    expected_.erase(task_id);
    leaving_.insert(task_id);
    ending_ = generation_;
    MaybeFormLocked();
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
      return hub_.Join(task_id_, request);
    }
    void StartWatch(int64_t generation) override { watched_ = generation; }
    void StopWatch() override {}
    bool next_pending() const override { return hub_.Pending(watched_); }

   private:
    LocalRendezvousHub& hub_;
    const int64_t task_id_;
    const std::string host_ = "127.0.0.1";
    int64_t watched_ = 0;
  };

  JoinOutcome Join(int64_t task_id, const JoinRequest& request) {
    std::unique_lock lock(mu_);
    if (leaving_.erase(task_id) > 0) {
      MaybeFormLocked();
      return JoinOutcome{.leave = true, .reason = "removed by the test", .assignment = {}};
    }
    waiting_[task_id] = request;
    MaybeFormLocked();
    formed_cv_.wait(lock, [&] { return assigned_.count(task_id) > 0; });
    JoinOutcome outcome;
    outcome.assignment = assigned_.at(task_id);
    assigned_.erase(task_id);
    return outcome;
  }

  bool Pending(int64_t generation) const {
    std::lock_guard lock(mu_);
    return generation < generation_ || ending_ == generation;
  }

  void MaybeFormLocked() {
    if (waiting_.empty() || waiting_.size() != expected_.size()) return;
    for (int64_t task : expected_) {
      if (waiting_.count(task) == 0) return;
    }
    // Source first: the highest committed step, then the oldest (lowest rank before,
    // newcomers last in task order).
    std::vector<int64_t> order;
    for (const auto& [task, request] : waiting_) order.push_back(task);
    auto age = [&](int64_t task) {
      auto it = std::find(members_.begin(), members_.end(), task);
      return it == members_.end() ? members_.size() + static_cast<size_t>(task)
                                  : static_cast<size_t>(it - members_.begin());
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      if (waiting_[a].step != waiting_[b].step) return waiting_[a].step > waiting_[b].step;
      return age(a) < age(b);
    });
    ++generation_;
    members_ = order;
    history_.push_back({generation_, members_});
    const int source_port = waiting_[order.front()].store_port;
    for (size_t rank = 0; rank < order.size(); ++rank) {
      Assignment a;
      a.generation = generation_;
      a.rank = static_cast<int>(rank);
      a.world_size = static_cast<int>(order.size());
      a.members = order;
      a.store_host = "127.0.0.1";
      a.store_port = source_port;
      a.source_rank = 0;
      a.reason = "formed by the test hub";
      assigned_[order[rank]] = a;
    }
    waiting_.clear();
    formed_cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable formed_cv_;
  std::set<int64_t> expected_;
  std::set<int64_t> leaving_;
  std::map<int64_t, JoinRequest> waiting_;
  std::map<int64_t, Assignment> assigned_;
  std::vector<int64_t> members_;
  int64_t generation_ = 0;
  int64_t ending_ = -1;  // the generation told to end
  std::vector<std::pair<int64_t, std::vector<int64_t>>> history_;
};

}  // namespace kiln::elastic::worker
