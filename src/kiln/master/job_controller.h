// job_controller.h
//
// `JobController` keeps the life of every job: submission, placement on agents, the
// state machine QUEUED -> SCHEDULED -> RUNNING -> FINISHED | FAILED | KILLED, kills,
// agent sessions (register, sync, reports, loss), recovery after a master restart, and
// ingestion of task output. Every state change is written to the `Store` in one
// transaction before anyone is told about it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/api/agent_protocol.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/master/job_spec.h"
#include "kiln/scheduler/resource_pool.h"
#include "kiln/store/store.h"

namespace kiln::master {

struct JobControllerOptions {
  // An agent silent this long is lost: its running jobs fail, its scheduled ones requeue.
  int64_t agent_timeout_micros = int64_t{60} * 1'000'000;
  // Time between SIGTERM and SIGKILL when a job is killed.
  int64_t kill_grace_ms = 10'000;
};

struct LogPage {
  std::vector<store::LogLine> lines;
  int64_t next = 0;   // the seq to pass as `after` next time
  bool done = false;  // the job has ended and every line has been returned
};

// Not thread-safe: every method runs on the master's loop.
class JobController {
 public:
  JobController(store::Store& store, auth::Authenticator& authenticator, const base::Clock& clock,
                JobControllerOptions options);

  // Loads unfinished jobs and known agents after a (re)start. Call once, before serving.
  absl::Status Recover();

  // ---- users ----
  // Queues a job. FailedPrecondition when no registered agent could ever run it.
  // `deployment_id`: the job is a scoring replica of that deployment (DeploymentController).
  absl::StatusOr<store::JobRecord> Submit(const auth::Principal& who, JobSpec spec,
                                          std::optional<int64_t> deployment_id = std::nullopt);
  // The checks Submit makes before storing anything, for callers that must refuse a
  // request up front (an experiment whose trials could never run): PermissionDenied for a
  // task, FailedPrecondition when no registered agent could ever run `spec`, NotFound for
  // an unknown package.
  absl::Status CheckSubmittable(const auth::Principal& who, const JobSpec& spec) const;
  // Kills a job: queued or scheduled jobs end at once, running ones are signalled.
  // FailedPrecondition if it has already ended.
  absl::StatusOr<store::JobRecord> Kill(const auth::Principal& who, int64_t job_id);
  // NotFound also for jobs `who` may not see, so ids of others' jobs are not revealed.
  absl::StatusOr<store::JobRecord> GetJob(const auth::Principal& who, int64_t job_id);
  absl::StatusOr<std::vector<store::JobRecord>> ListJobs(const auth::Principal& who,
                                                         store::JobFilter filter);
  absl::StatusOr<LogPage> GetLogs(const auth::Principal& who, int64_t job_id, int64_t after,
                                  int limit);
  // The files the job's task left under $RESULT_DIR/model/ (a distributed job: those of
  // its worker 0), as its agent reported them with the exit. NotFound as GetJob.
  absl::StatusOr<std::vector<store::ArtifactRecord>> ListArtifacts(const auth::Principal& who,
                                                                   int64_t job_id);
  // Stores a native metrics batch (docs/api.md). Returns the number of points accepted
  // (0 for a duplicate batch).
  absl::StatusOr<int> IngestMetrics(const auth::Principal& who, int64_t job_id,
                                    const base::Json& body);

  // ---- agents ----
  absl::StatusOr<api::RegisterReply> RegisterAgent(const api::AgentHello& hello);
  // What `agent_id` should do now; an empty reply means nothing (the caller may wait).
  // NotFound for an agent that has not registered (it must register again).
  absl::StatusOr<api::SyncReply> SyncAgent(const std::string& agent_id,
                                           const api::SyncRequest& request);
  absl::StatusOr<api::ReportReply> ApplyReport(const std::string& agent_id,
                                               const api::AgentReport& report);
  // The longest an agent's sync may be held: a third of the agent timeout, so that an
  // agent waiting on its long-poll is never mistaken for a silent one.
  int64_t MaxSyncWaitMs() const { return options_.agent_timeout_micros / 3000; }
  // Declares lost the agents silent for longer than the timeout. Call about once a second.
  void SweepAgents();

  // Observers, set once by the API layer. `on_agent_work(agent_id)` fires when an agent
  // has something new to do; `on_job_output(job_id)` when a job has new log lines or ended.
  void SetObservers(std::function<void(const std::string&)> on_agent_work,
                    std::function<void(int64_t)> on_job_output);
  // Set by the master for the experiment and elastic drivers. `on_job_end(job_id)` fires
  // after a job's final state is stored (every observer added, in order); `on_job_metrics`
  // after metric points of a running job were stored (emetrics in a report, or a native
  // batch); `on_job_started` when a job becomes RUNNING. All fire synchronously from inside
  // JobController calls (Kill included), so an observer must not call back into it: the
  // master posts them to its loop.
  void AddJobEndObserver(std::function<void(int64_t)> on_job_end);
  void SetJobMetricsObserver(std::function<void(int64_t)> on_job_metrics);
  void SetJobStartedObserver(std::function<void(int64_t)> on_job_started);

  // ---- distributed jobs (ARCHITECTURE.md §5.1), driven by the ElasticController ----
  // A distributed job is a parent (never placed itself) plus one child job per worker.
  struct DistributedView {
    store::JobRecord record;                // the parent
    JobSpec spec;                           // with spec.workers set
    std::vector<store::JobRecord> workers;  // unfinished workers, oldest first
  };
  // The unfinished distributed jobs, oldest first.
  std::vector<int64_t> ActiveDistributedJobs() const;
  std::optional<DistributedView> ViewDistributed(int64_t parent_id) const;
  // Starts up to `count` workers of `parent_id` where they fit now (none unless all fit
  // with `all_or_nothing`). The parent becomes SCHEDULED. Returns the new workers' ids.
  absl::StatusOr<std::vector<int64_t>> StartWorkers(int64_t parent_id, int count,
                                                    bool all_or_nothing);
  // How many workers of `resources` fit now, at most `limit`.
  int CountPlacements(const scheduler::Resources& resources, int limit) const;
  // The resources of the oldest queued job that is not a distributed parent (every queued
  // job is waiting for room), or nullopt. What an elastic job gives slots back for.
  std::optional<scheduler::Resources> OldestWaitingDemand() const;
  // Whether that oldest waiting job would fit if `job_ids` gave back their resources.
  bool WaitingJobFitsWithout(const std::vector<int64_t>& job_ids) const;
  // Stops a worker: SIGTERM, SIGKILL after the grace (or ends it at once if not started);
  // `reason` becomes its record's reason.
  absl::Status StopWorker(int64_t worker_id, const std::string& reason);
  absl::Status SetWorkerTarget(int64_t parent_id, int target);
  // Moves the parent to RUNNING (first generation formed, or every static worker runs).
  absl::Status MarkDistributedRunning(int64_t parent_id, const std::string& message);
  // Ends the parent; workers still unfinished are stopped.
  absl::Status FinishDistributed(int64_t parent_id, store::JobState state, std::string reason);
  // Appends an event to a job's history (e.g. "GENERATION").
  absl::Status RecordEvent(int64_t job_id, std::string type, std::string message);

  // Cluster view for `GET /api/v1/agents`.
  base::Json DescribeAgents() const;

 private:
  struct ActiveJob {
    store::JobRecord record;
    JobSpec spec;
  };
  bool IsDistributedParent(const ActiveJob& job) const {
    return job.spec.workers.has_value() && !job.record.parent_id;
  }
  absl::Status AddWorkerEnv(const ActiveJob& worker, api::TaskSpec& task);
  struct AgentSession {
    api::AgentHello hello;
    int64_t last_seen = 0;
    bool registered = false;  // false: known from before a restart, not back yet
  };

  absl::StatusOr<ActiveJob*> FindAccessible(const auth::Principal& who, int64_t job_id);
  // Writes `job` and an event of `type` with `message`, then updates the in-memory copy.
  absl::Status Transition(ActiveJob& job, std::string type, std::string message);
  absl::Status Finish(ActiveJob& job, store::JobState state, std::string reason,
                      std::optional<int> exit_code, std::optional<int> signal,
                      std::optional<int64_t> finished_at);
  void Schedule();
  absl::StatusOr<api::TaskSpec> BuildTaskSpec(ActiveJob& job);
  void LoseAgent(const std::string& agent_id, const std::string& why);
  absl::StatusOr<api::TaskAck> ApplyTaskReport(const std::string& agent_id,
                                               const api::TaskReport& report);
  api::StreamOffsets OffsetsOf(int64_t job_id);
  void NotifyAgent(const std::string& agent_id);
  void NotifyOutput(int64_t job_id);

  store::Store& store_;
  auth::Authenticator& auth_;
  const base::Clock& clock_;
  JobControllerOptions options_;
  scheduler::ResourcePool pool_;
  std::map<int64_t, ActiveJob> active_;  // unfinished jobs by id (= submission order)
  std::map<std::string, AgentSession> agents_;
  std::function<void(const std::string&)> on_agent_work_;
  std::function<void(int64_t)> on_job_output_;
  std::vector<std::function<void(int64_t)>> on_job_end_;
  std::function<void(int64_t)> on_job_metrics_;
  std::function<void(int64_t)> on_job_started_;
};

}  // namespace kiln::master
