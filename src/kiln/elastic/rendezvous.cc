// rendezvous.cc
#include "kiln/elastic/rendezvous.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln::elastic {
namespace {

bool Contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

Rendezvous::Rendezvous(int min_workers, int64_t join_timeout_micros)
    : min_workers_(std::max(1, min_workers)), join_timeout_micros_(join_timeout_micros) {}

void Rendezvous::Restore(const Generation& current) {
  current_ = current;
  removed_.clear();
  waiting_.clear();
  pending_since_.reset();
  pending_reasons_.clear();
}

void Rendezvous::Want(const std::string& reason, int64_t now) {
  if (!pending_since_) pending_since_ = now;
  if (std::find(pending_reasons_.begin(), pending_reasons_.end(), reason) ==
      pending_reasons_.end()) {
    pending_reasons_.push_back(reason);
  }
}

void Rendezvous::Join(const JoinRequest& request, int64_t now) {
  const int64_t task = request.task_id;
  starting_.erase(task);
  if (leaving_.count(task) > 0) return;  // answered with "leave"
  const bool member = current_ && Contains(current_->members, task) && removed_.count(task) == 0;
  if (member && request.generation < current_->id) return;  // a resend: already assigned
  waiting_[task] = request;
  if (!current_) {
    Want("start", now);
  } else if (member) {
    // A member of the current generation joining again saw a failed collective or was
    // told that a change is pending; either way the next generation is wanted.
    if (!pending_since_) Want(absl::StrCat("worker ", task, " asked for a new generation"), now);
  } else {
    Want(absl::StrCat("worker ", task, " joined"), now);
  }
}

void Rendezvous::RemoveWorker(int64_t task_id, const std::string& reason, int64_t now) {
  starting_.erase(task_id);
  waiting_.erase(task_id);
  const bool was_leaving = leaving_.erase(task_id) > 0;
  if (current_ && Contains(current_->members, task_id) && removed_.insert(task_id).second) {
    // A worker that was asked to leave already caused the pending change.
    if (!was_leaving || !pending_since_) Want(reason, now);
  }
}

void Rendezvous::RequestLeave(int64_t task_id, const std::string& reason, int64_t now) {
  starting_.erase(task_id);
  waiting_.erase(task_id);
  if (!leaving_.emplace(task_id, reason).second) return;
  if (current_ && Contains(current_->members, task_id) && removed_.count(task_id) == 0) {
    Want(reason, now);
  }
}

std::vector<int64_t> Rendezvous::live_members() const {
  std::vector<int64_t> live;
  if (!current_) return live;
  for (int64_t m : current_->members) {
    if (removed_.count(m) == 0) live.push_back(m);
  }
  return live;
}

std::optional<int64_t> Rendezvous::deadline() const {
  if (!pending_since_) return std::nullopt;
  return *pending_since_ + join_timeout_micros_;
}

std::optional<Generation> Rendezvous::MaybeForm(int64_t now, std::vector<int64_t>* stragglers) {
  if (!pending_since_) return std::nullopt;
  std::vector<int64_t> expected;  // who we wait for besides those already waiting
  for (int64_t m : live_members()) {
    if (leaving_.count(m) == 0) expected.push_back(m);
  }
  if (expected.empty()) expected.assign(starting_.begin(), starting_.end());
  std::vector<int64_t> missing;
  for (int64_t m : expected) {
    if (waiting_.count(m) == 0) missing.push_back(m);
  }
  const bool timed_out = now - *pending_since_ >= join_timeout_micros_;
  if (static_cast<int>(waiting_.size()) < min_workers_) return std::nullopt;
  if (!missing.empty() && !timed_out) return std::nullopt;

  std::vector<const JoinRequest*> joined;
  for (const auto& [task, request] : waiting_) joined.push_back(&request);
  // Rank 0 holds the newest committed state; among equals the oldest worker.
  std::sort(joined.begin(), joined.end(), [](const JoinRequest* a, const JoinRequest* b) {
    if (a->step != b->step) return a->step > b->step;
    return a->task_id < b->task_id;
  });
  Generation next;
  next.id = current_ ? current_->id + 1 : 1;
  for (const JoinRequest* r : joined) next.members.push_back(r->task_id);
  next.store_host = joined.front()->host;
  next.store_port = joined.front()->store_port;
  next.started_at = now;
  std::vector<std::string> reasons = pending_reasons_;
  for (int64_t m : missing) {
    if (current_ && Contains(current_->members, m)) {
      reasons.push_back(absl::StrCat("worker ", m, " did not join in time"));
      if (stragglers) stragglers->push_back(m);
    }
    starting_.erase(m);
  }
  next.reason = absl::StrJoin(reasons, "; ");

  current_ = next;
  removed_.clear();
  waiting_.clear();
  pending_since_.reset();
  pending_reasons_.clear();
  return next;
}

JoinAnswer Rendezvous::AnswerJoin(int64_t task_id, int64_t last_generation) const {
  JoinAnswer answer;
  if (auto it = leaving_.find(task_id); it != leaving_.end()) {
    answer.kind = JoinAnswer::kLeave;
    answer.reason = it->second;
    return answer;
  }
  if (current_ && current_->id > last_generation && removed_.count(task_id) == 0) {
    auto it = std::find(current_->members.begin(), current_->members.end(), task_id);
    if (it != current_->members.end()) {
      answer.kind = JoinAnswer::kAssigned;
      answer.generation = *current_;
      answer.rank = static_cast<int>(it - current_->members.begin());
    }
  }
  return answer;
}

WatchAnswer Rendezvous::AnswerWatch(int64_t task_id, int64_t generation) const {
  WatchAnswer answer;
  answer.leave = leaving_.count(task_id) > 0;
  answer.next = answer.leave || (current_ && generation < current_->id) ||
                (pending_since_.has_value() && current_ && generation == current_->id);
  return answer;
}

}  // namespace kiln::elastic
