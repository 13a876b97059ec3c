// elastic_controller.h
//
// `ElasticController` drives distributed jobs (ARCHITECTURE.md §5) on top of the
// `JobController`, which places, launches and supervises their workers like any job:
//
// - static jobs: all N workers are placed together or not at all; any worker's failure
//   fails the job;
// - elastic jobs: start as soon as `min_workers` fit, grow toward the target as slots
//   free up (never ahead of a queued job), shrink by asking the newest worker to leave
//   when the target drops or a queued job needs the room, replace crashed workers, and
//   fail only after running below `min_workers` for `min_workers_timeout_s` or after more
//   than `max_worker_failures` crashes. Each elastic job's membership is an
//   `elastic::Rendezvous`; every generation it forms is stored.
//
// Not thread-safe: every method runs on the master's loop. JobController observers must
// reach it through posted calls (see JobController::AddJobEndObserver).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/elastic/rendezvous.h"
#include "kiln/master/job_controller.h"
#include "kiln/store/store.h"

namespace kiln::master {

struct ElasticControllerOptions {
  // How long a pending generation waits for members that have not joined.
  int64_t join_timeout_micros = int64_t{30} * 1'000'000;
  // How long a worker asked to leave may keep running before it is stopped.
  int64_t leave_grace_micros = int64_t{30} * 1'000'000;
};

class ElasticController {
 public:
  ElasticController(store::Store& store, JobController& jobs, const base::Clock& clock,
                    ElasticControllerOptions options);

  // Rebuilds the state of unfinished distributed jobs (after JobController::Recover).
  absl::Status Recover();
  // Places, grows, shrinks, times out. Call about once a second and after events.
  void Tick();
  void OnJobEnded(int64_t job_id);
  void OnJobStarted(int64_t job_id);
  // `on_change(job_id)`: the job's rendezvous answers may have changed (wake held joins
  // and watches).
  void SetChangeObserver(std::function<void(int64_t)> on_change);

  // Users: sets an elastic job's worker target (min_workers..max_workers).
  absl::StatusOr<store::JobRecord> Scale(const auth::Principal& who, int64_t job_id, int workers);

  // Workers (a task token of `job_id`). Join records the request and answers at once if it
  // can; the caller holds the request and asks AnswerJoin again on every change.
  absl::StatusOr<elastic::JoinAnswer> Join(const auth::Principal& who, int64_t job_id,
                                           const elastic::JoinRequest& request);
  elastic::JoinAnswer AnswerJoin(int64_t job_id, int64_t task_id, int64_t last_generation) const;
  absl::StatusOr<elastic::WatchAnswer> Watch(const auth::Principal& who, int64_t job_id,
                                             int64_t task_id, int64_t generation) const;

 private:
  struct Job {
    WorkersSpec spec;
    std::unique_ptr<elastic::Rendezvous> rendezvous;  // elastic jobs
    std::map<int64_t, int64_t> leaving;               // worker -> when to stop it
    bool done = false;                                // a worker finished the training
    std::optional<int64_t> below_min_since;
    int failures = 0;
    std::string last_failure;
  };

  Job& StateOf(int64_t job_id, const WorkersSpec& spec);
  void TickJob(int64_t job_id);
  void TickStatic(int64_t job_id, Job& job, const JobController::DistributedView& view);
  void TickElastic(int64_t job_id, Job& job, const JobController::DistributedView& view);
  void FormGeneration(int64_t job_id, Job& job);
  void OnWorkerEnded(const store::JobRecord& worker);
  void Fail(int64_t job_id, const std::string& reason);
  void Changed(int64_t job_id);
  // PermissionDenied unless `who` is a task token of `job_id` (whose workers share it).
  absl::Status CheckWorkerOf(const auth::Principal& who, int64_t job_id) const;

  store::Store& store_;
  JobController& jobs_;
  const base::Clock& clock_;
  ElasticControllerOptions options_;
  std::map<int64_t, Job> jobs_state_;  // unfinished distributed jobs
  std::function<void(int64_t)> on_change_;
};

}  // namespace kiln::master
