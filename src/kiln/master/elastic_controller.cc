#include "kiln/master/elastic_controller.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"
#include "spdlog/spdlog.h"

namespace kiln::master {
namespace {

using store::JobRecord;
using store::JobState;

constexpr int64_t kMicros = 1'000'000;

// A leave request is stored as the parent's event "WORKERS" "worker <id>: <reason>", so
// that a restarted kilnd knows which workers were asked to leave (their exit 0 is not the
// end of the training).
constexpr char kWorkersEvent[] = "WORKERS";

std::string LeaveEventMessage(int64_t worker, const std::string& reason) {
  return absl::StrCat("worker ", worker, ": ", reason);
}

// Worker id and reason of a leave request's event, or nullopt for other events.
std::optional<std::pair<int64_t, std::string>> ParseLeaveEvent(const store::EventRecord& e) {
  constexpr std::string_view kPrefix = "worker ";
  if (e.type != kWorkersEvent || e.message.compare(0, kPrefix.size(), kPrefix) != 0) {
    return std::nullopt;
  }
  const size_t colon = e.message.find(": ", kPrefix.size());
  int64_t worker = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(e.message.substr(kPrefix.size(), colon - kPrefix.size()), &worker)) {
    return std::nullopt;
  }
  return std::make_pair(worker, e.message.substr(colon + 2));
}

std::string DescribeEnd(const JobRecord& worker) {
  if (worker.state == JobState::kFinished) return "exited 0";
  if (!worker.reason.empty()) return worker.reason;
  return absl::StrCat("ended ", store::JobStateName(worker.state));
}

}  // namespace

ElasticController::ElasticController(store::Store& store, JobController& jobs,
                                     const base::Clock& clock, ElasticControllerOptions options)
    : store_(store), jobs_(jobs), clock_(clock), options_(options) {}

void ElasticController::SetChangeObserver(std::function<void(int64_t)> on_change) {
  on_change_ = std::move(on_change);
}

void ElasticController::Changed(int64_t job_id) {
  if (on_change_) on_change_(job_id);
}

ElasticController::Job& ElasticController::StateOf(int64_t job_id, const WorkersSpec& spec) {
  auto it = jobs_state_.find(job_id);
  if (it != jobs_state_.end()) return it->second;
  Job& job = jobs_state_[job_id];
  job.spec = spec;
  if (spec.elastic) {
    job.rendezvous = std::make_unique<elastic::Rendezvous>(spec.min, options_.join_timeout_micros);
  }
  return job;
}

absl::Status ElasticController::Recover() {
  const int64_t now = clock_.NowMicros();
  for (int64_t id : jobs_.ActiveDistributedJobs()) {
    std::optional<JobController::DistributedView> view = jobs_.ViewDistributed(id);
    if (!view) continue;
    Job& job = StateOf(id, *view->spec.workers);
    store::JobFilter filter;
    filter.parent_id = id;
    filter.limit = 1'000'000;
    KILN_ASSIGN_OR_RETURN(auto all_workers, store_.ListJobs(filter));
    KILN_ASSIGN_OR_RETURN(auto events, store_.ListEvents(id));
    std::map<int64_t, std::string> asked_to_leave;
    for (const store::EventRecord& e : events) {
      if (auto leave = ParseLeaveEvent(e)) asked_to_leave[leave->first] = leave->second;
    }
    // A worker that exited 0 without being asked to leave finished the training.
    for (const JobRecord& w : all_workers) {
      if (w.state == JobState::kFailed) ++job.failures;
      if (w.state == JobState::kFinished && asked_to_leave.count(w.id) == 0) job.done = true;
    }
    if (!job.rendezvous) continue;
    KILN_ASSIGN_OR_RETURN(auto generations, store_.ListGenerations(id));
    std::vector<int64_t> active;
    for (const JobRecord& w : view->workers) active.push_back(w.id);
    if (!generations.empty()) {
      const store::GenerationRecord& last = generations.back();
      elastic::Generation g;
      g.id = last.id;
      g.members = last.members;
      g.started_at = last.started_at;
      g.reason = last.reason;
      if (size_t colon = last.store_address.rfind(':'); colon != std::string::npos) {
        g.store_host = last.store_address.substr(0, colon);
        (void)absl::SimpleAtoi(last.store_address.substr(colon + 1), &g.store_port);
      }
      job.rendezvous->Restore(g);
      for (int64_t m : last.members) {
        if (std::find(active.begin(), active.end(), m) == active.end()) {
          job.rendezvous->RemoveWorker(m, absl::StrCat("worker ", m, " ended while kilnd was down"),
                                       now);
        }
      }
    }
    for (int64_t w : active) {
      const auto& members = job.rendezvous->live_members();
      if (std::find(members.begin(), members.end(), w) == members.end()) {
        job.rendezvous->AddStarting(w);
      }
    }
    // Workers asked to leave before the restart are still leaving (with a fresh grace).
    for (int64_t w : active) {
      auto it = asked_to_leave.find(w);
      if (it == asked_to_leave.end()) continue;
      job.leaving[w] = now + options_.leave_grace_micros;
      job.rendezvous->RequestLeave(w, it->second, now);
    }
  }
  spdlog::info("recovered {} distributed jobs", jobs_state_.size());
  return absl::OkStatus();
}

void ElasticController::Tick() {
  std::vector<int64_t> active = jobs_.ActiveDistributedJobs();
  for (auto it = jobs_state_.begin(); it != jobs_state_.end();) {
    if (std::find(active.begin(), active.end(), it->first) == active.end()) {
      int64_t id = it->first;
      it = jobs_state_.erase(it);
      Changed(id);
    } else {
      ++it;
    }
  }
  for (int64_t id : active) TickJob(id);
}

void ElasticController::TickJob(int64_t job_id) {
  std::optional<JobController::DistributedView> view = jobs_.ViewDistributed(job_id);
  if (!view) return;
  Job& job = StateOf(job_id, *view->spec.workers);
  if (job.spec.elastic) {
    TickElastic(job_id, job, *view);
  } else {
    TickStatic(job_id, job, *view);
  }
}

void ElasticController::TickStatic(int64_t job_id, Job& job,
                                   const JobController::DistributedView& view) {
  const int n = job.spec.min;
  if (view.record.state == JobState::kQueued && view.workers.empty()) {
    auto started = jobs_.StartWorkers(job_id, n, /*all_or_nothing=*/true);
    if (!started.ok()) spdlog::error("job {}: {}", job_id, started.status().ToString());
    return;
  }
  if (view.record.state != JobState::kRunning && static_cast<int>(view.workers.size()) == n &&
      std::all_of(view.workers.begin(), view.workers.end(),
                  [](const JobRecord& w) { return w.state == JobState::kRunning; })) {
    absl::Status s = jobs_.MarkDistributedRunning(job_id, absl::StrCat("all ", n, " workers run"));
    if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
  }
}

void ElasticController::TickElastic(int64_t job_id, Job& job,
                                    const JobController::DistributedView& view) {
  const int64_t now = clock_.NowMicros();
  const WorkersSpec& spec = job.spec;
  if (job.done) {
    if (view.workers.empty()) {
      absl::Status s = jobs_.FinishDistributed(job_id, JobState::kFinished, "training finished");
      if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
    }
    return;
  }
  // Workers asked to leave that are still running past the grace are stopped.
  for (const auto& [worker, deadline] : job.leaving) {
    if (now >= deadline) {
      absl::Status s =
          jobs_.StopWorker(worker, absl::StrCat("asked to leave and still running after ",
                                                options_.leave_grace_micros / kMicros, " s"));
      if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
    }
  }
  std::vector<int64_t> live;  // oldest first
  for (const JobRecord& w : view.workers) {
    if (job.leaving.count(w.id) == 0) live.push_back(w.id);
  }
  const int target = std::clamp(view.record.target_workers.value_or(spec.max), spec.min, spec.max);
  auto start = [&](int count, bool all_or_nothing) {
    if (count <= 0) return;
    auto started = jobs_.StartWorkers(job_id, count, all_or_nothing);
    if (!started.ok()) {
      spdlog::error("job {}: {}", job_id, started.status().ToString());
      return;
    }
    for (int64_t id : *started) {
      job.rendezvous->AddStarting(id);
      live.push_back(id);
    }
  };
  // Start with min_workers together; below min, replace whatever fits; above it, grow only
  // when no other job is waiting for room.
  if (live.empty()) start(spec.min, /*all_or_nothing=*/true);
  if (!live.empty() && static_cast<int>(live.size()) < spec.min) {
    start(spec.min - static_cast<int>(live.size()), false);
  }
  const bool demand = jobs_.OldestWaitingDemand().has_value();
  if (static_cast<int>(live.size()) >= spec.min && static_cast<int>(live.size()) < target &&
      !demand) {
    start(target - static_cast<int>(live.size()), false);
  }

  // Shrink: the newest workers leave first. One that has not started yet is simply
  // stopped: there is no training to hand over and its slots are free at once.
  auto ask_to_leave = [&](int64_t worker, const std::string& reason) {
    auto record = std::find_if(view.workers.begin(), view.workers.end(),
                               [worker](const JobRecord& w) { return w.id == worker; });
    if (record != view.workers.end() && record->state != JobState::kRunning) {
      job.leaving[worker] = now;  // its end is a leave, not a failure
      absl::Status s = jobs_.StopWorker(worker, absl::StrCat("not started; ", reason));
      if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
      live.erase(std::find(live.begin(), live.end(), worker));
      return;
    }
    job.leaving[worker] = now + options_.leave_grace_micros;
    job.rendezvous->RequestLeave(worker, reason, now);
    live.erase(std::find(live.begin(), live.end(), worker));
    (void)jobs_.RecordEvent(job_id, kWorkersEvent, LeaveEventMessage(worker, reason));
    Changed(job_id);
  };
  while (static_cast<int>(live.size()) > target) {
    ask_to_leave(live.back(), absl::StrCat("scaled to ", target, " workers"));
  }
  // A waiting job gets room one newest worker at a time, but only if the workers above
  // min_workers, newest first, can make it fit: giving back room it cannot use helps nobody.
  if (demand && static_cast<int>(live.size()) > spec.min && job.leaving.empty()) {
    std::vector<int64_t> giving;
    for (auto it = live.rbegin(); static_cast<int>(live.size() - giving.size()) > spec.min; ++it) {
      giving.push_back(*it);
      if (jobs_.WaitingJobFitsWithout(giving)) {
        ask_to_leave(live.back(), "its slots are given to a queued job");
        break;
      }
    }
  }

  // Below min_workers for too long: fail. A job that has not started yet (still QUEUED)
  // waits for room like any queued job: only running below min_workers counts.
  if (static_cast<int>(live.size()) < spec.min && view.record.state != JobState::kQueued) {
    if (!job.below_min_since) job.below_min_since = now;
    if (now - *job.below_min_since >= spec.min_workers_timeout_s * kMicros) {
      Fail(job_id, absl::StrCat("fewer than min_workers (", spec.min, ") workers could run for ",
                                spec.min_workers_timeout_s, " s",
                                job.last_failure.empty() ? "" : "; last worker failure: ",
                                job.last_failure));
      return;
    }
  } else {
    job.below_min_since.reset();
  }
  FormGeneration(job_id, job);
}

void ElasticController::FormGeneration(int64_t job_id, Job& job) {
  if (!job.rendezvous || job.done) return;
  std::vector<int64_t> stragglers;
  std::optional<elastic::Generation> g = job.rendezvous->MaybeForm(clock_.NowMicros(), &stragglers);
  if (!g) return;
  store::GenerationRecord record;
  record.job_id = job_id;
  record.id = g->id;
  record.members = g->members;
  record.store_address = absl::StrCat(g->store_host, ":", g->store_port);
  record.started_at = g->started_at;
  record.reason = g->reason;
  std::string message = absl::StrCat("generation ", g->id, ": ", g->world_size(), " workers (",
                                     absl::StrJoin(g->members, ", "), "); ", g->reason);
  absl::Status s = store_.PutGeneration(
      record, store::EventRecord{job_id, g->started_at, "GENERATION", message});
  if (!s.ok()) spdlog::error("job {}: could not store {}: {}", job_id, message, s.ToString());
  spdlog::info("job {}: {}", job_id, message);
  s = jobs_.MarkDistributedRunning(job_id, absl::StrCat("generation ", g->id, " formed"));
  if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
  for (int64_t w : stragglers) {
    s = jobs_.StopWorker(w, absl::StrCat("did not join generation ", g->id, " in time"));
    if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
  }
  Changed(job_id);
}

void ElasticController::Fail(int64_t job_id, const std::string& reason) {
  absl::Status s = jobs_.FinishDistributed(job_id, JobState::kFailed, reason);
  if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
  jobs_state_.erase(job_id);
  Changed(job_id);
}

void ElasticController::OnJobStarted(int64_t job_id) {
  if (jobs_state_.empty()) return;  // every job start and end comes here: no store read
  auto record = store_.GetJob(job_id);
  if (record.ok() && record->parent_id && jobs_state_.count(*record->parent_id)) {
    TickJob(*record->parent_id);
  }
}

void ElasticController::OnJobEnded(int64_t job_id) {
  if (jobs_state_.empty()) return;
  auto record = store_.GetJob(job_id);
  if (!record.ok()) return;
  if (record->parent_id) {
    OnWorkerEnded(*record);
  } else if (jobs_state_.erase(job_id) > 0) {
    Changed(job_id);
  }
}

void ElasticController::OnWorkerEnded(const JobRecord& worker) {
  const int64_t job_id = *worker.parent_id;
  auto it = jobs_state_.find(job_id);
  if (it == jobs_state_.end()) return;
  Job& job = it->second;
  std::optional<JobController::DistributedView> view = jobs_.ViewDistributed(job_id);
  if (!view) return;
  const std::string what = absl::StrCat("worker ", worker.id, " ", DescribeEnd(worker));

  if (!job.spec.elastic) {
    if (worker.state != JobState::kFinished) {
      Fail(job_id, absl::StrCat(what, " (rank ", worker.worker_index, ")"));
    } else if (view->workers.empty()) {
      absl::Status s = jobs_.FinishDistributed(
          job_id, JobState::kFinished, absl::StrCat("all ", job.spec.min, " workers exited 0"));
      if (!s.ok()) spdlog::error("job {}: {}", job_id, s.ToString());
      jobs_state_.erase(job_id);
      Changed(job_id);
    }
    return;
  }

  const bool was_leaving = job.leaving.erase(worker.id) > 0;
  job.rendezvous->RemoveWorker(worker.id,
                               was_leaving ? absl::StrCat("worker ", worker.id, " left") : what,
                               clock_.NowMicros());
  if (!was_leaving) {
    if (worker.state == JobState::kFinished) {
      job.done = true;  // it finished the training: the rest will too
    } else if (worker.state == JobState::kFailed) {
      job.last_failure = what;
      if (++job.failures > job.spec.max_worker_failures) {
        Fail(job_id, absl::StrCat(job.failures, " worker failures (max_worker_failures is ",
                                  job.spec.max_worker_failures, "); last: ", what));
        return;
      }
    }
  }
  TickJob(job_id);
  Changed(job_id);
}

absl::StatusOr<JobRecord> ElasticController::Scale(const auth::Principal& who, int64_t job_id,
                                                   int workers) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot scale jobs");
  KILN_ASSIGN_OR_RETURN(JobRecord record, jobs_.GetJob(who, job_id));
  std::optional<JobController::DistributedView> view = jobs_.ViewDistributed(job_id);
  if (!view) {
    if (IsTerminal(record.state)) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has already ended (",
                                                        store::JobStateName(record.state), ")"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is not an elastic job; submit it with min_workers and max_workers"));
  }
  const WorkersSpec& spec = *view->spec.workers;
  if (!spec.elastic) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is a static job of ", spec.min,
                     " workers; only elastic jobs (min_workers/max_workers) can be scaled"));
  }
  if (workers < spec.min || workers > spec.max) {
    return absl::InvalidArgumentError(absl::StrCat("workers must be between min_workers (",
                                                   spec.min, ") and max_workers (", spec.max,
                                                   ") of job ", job_id, ", got ", workers));
  }
  KILN_RETURN_IF_ERROR(jobs_.SetWorkerTarget(job_id, workers));
  TickJob(job_id);
  return jobs_.GetJob(who, job_id);
}

absl::Status ElasticController::CheckWorkerOf(const auth::Principal& who, int64_t job_id) const {
  if (who.kind != auth::Principal::Kind::kTask || who.job_id != job_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the rendezvous of job ", job_id, " is for its workers: use the worker's KILN_TOKEN"));
  }
  return absl::OkStatus();
}

absl::StatusOr<elastic::JoinAnswer> ElasticController::Join(const auth::Principal& who,
                                                            int64_t job_id,
                                                            const elastic::JoinRequest& request) {
  KILN_RETURN_IF_ERROR(CheckWorkerOf(who, job_id));
  auto it = jobs_state_.find(job_id);
  if (it == jobs_state_.end()) return AnswerJoin(job_id, request.task_id, request.generation);
  Job& job = it->second;
  if (!job.rendezvous) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id,
        " is a static job: its workers use RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"));
  }
  std::optional<JobController::DistributedView> view = jobs_.ViewDistributed(job_id);
  bool active = false;
  if (view) {
    for (const JobRecord& w : view->workers) active = active || w.id == request.task_id;
  }
  if (!active) {
    auto worker = store_.GetJob(request.task_id);
    if (!worker.ok() || worker->parent_id != job_id) {
      return absl::NotFoundError(
          absl::StrCat("task ", request.task_id, " is not a worker of job ", job_id));
    }
    elastic::JoinAnswer leave;
    leave.kind = elastic::JoinAnswer::kLeave;
    leave.reason = absl::StrCat("worker ", request.task_id, " has been stopped");
    return leave;
  }
  job.rendezvous->Join(request, clock_.NowMicros());
  FormGeneration(job_id, job);
  // A newcomer's join makes the next generation pending even when it cannot form yet:
  // wake the current members' held watches, or they learn of it only when their watch
  // times out (20 s), after the join timeout has already dropped them.
  Changed(job_id);
  return AnswerJoin(job_id, request.task_id, request.generation);
}

elastic::JoinAnswer ElasticController::AnswerJoin(int64_t job_id, int64_t task_id,
                                                  int64_t last_generation) const {
  auto it = jobs_state_.find(job_id);
  if (it == jobs_state_.end() || !it->second.rendezvous || it->second.done) {
    elastic::JoinAnswer leave;
    leave.kind = elastic::JoinAnswer::kLeave;
    leave.reason = it == jobs_state_.end() ? "the job has ended" : "the training has finished";
    return leave;
  }
  return it->second.rendezvous->AnswerJoin(task_id, last_generation);
}

absl::StatusOr<elastic::WatchAnswer> ElasticController::Watch(const auth::Principal& who,
                                                              int64_t job_id, int64_t task_id,
                                                              int64_t generation) const {
  KILN_RETURN_IF_ERROR(CheckWorkerOf(who, job_id));
  auto it = jobs_state_.find(job_id);
  if (it == jobs_state_.end() || !it->second.rendezvous) {
    elastic::WatchAnswer over;
    over.next = over.leave = true;
    return over;
  }
  return it->second.rendezvous->AnswerWatch(task_id, generation);
}

}  // namespace kiln::master
