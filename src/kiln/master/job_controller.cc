#include "kiln/master/job_controller.h"

#include <cmath>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"
#include "spdlog/spdlog.h"

namespace kiln::master {
namespace {

using store::JobRecord;
using store::JobState;

constexpr size_t kMaxMetricPointsPerBatch = 200'000;
constexpr double kMaxMetricTimeSeconds = 1e10;  // the year 2286

base::Json AllocationToJson(const scheduler::Allocation& a) {
  return {{"agent", a.agent_id}, {"slots", a.slots}, {"gpus", a.gpu_indices}};
}

std::optional<scheduler::Allocation> AllocationFromJson(const std::string& text) {
  if (text.empty()) return std::nullopt;
  auto j = base::ParseJson(text);
  if (!j.ok() || !j->is_object()) return std::nullopt;
  scheduler::Allocation a;
  a.agent_id = j->value("agent", "");
  a.slots = j->value("slots", 0);
  if (j->contains("gpus") && (*j)["gpus"].is_array()) {
    for (const auto& g : (*j)["gpus"]) {
      if (g.is_number_integer()) a.gpu_indices.push_back(g.get<int>());
    }
  }
  return a;
}

std::string DescribeExit(std::optional<int> exit_code, std::optional<int> signal) {
  if (signal) return absl::StrCat("killed by signal ", *signal);
  if (exit_code) return absl::StrCat("exited with code ", *exit_code);
  return "ended without an exit status";
}

}  // namespace

JobController::JobController(store::Store& store, auth::Authenticator& authenticator,
                             const base::Clock& clock, JobControllerOptions options)
    : store_(store), auth_(authenticator), clock_(clock), options_(options) {}

void JobController::SetObservers(std::function<void(const std::string&)> on_agent_work,
                                 std::function<void(int64_t)> on_job_output) {
  on_agent_work_ = std::move(on_agent_work);
  on_job_output_ = std::move(on_job_output);
}

void JobController::AddJobEndObserver(std::function<void(int64_t)> on_job_end) {
  on_job_end_.push_back(std::move(on_job_end));
}

void JobController::SetJobStartedObserver(std::function<void(int64_t)> on_job_started) {
  on_job_started_ = std::move(on_job_started);
}

void JobController::SetJobMetricsObserver(std::function<void(int64_t)> on_job_metrics) {
  on_job_metrics_ = std::move(on_job_metrics);
}

void JobController::NotifyAgent(const std::string& agent_id) {
  if (on_agent_work_) on_agent_work_(agent_id);
}

void JobController::NotifyOutput(int64_t job_id) {
  if (on_job_output_) on_job_output_(job_id);
}

absl::Status JobController::Recover() {
  int64_t now = clock_.NowMicros();
  KILN_ASSIGN_OR_RETURN(auto agents, store_.ListAgents());
  for (const store::AgentRecord& a : agents) {
    AgentSession& s = agents_[a.id];
    s.hello.agent_id = a.id;
    s.hello.hostname = a.hostname;
    s.hello.slots = a.slots;
    // Agents get a full timeout from the master's start to come back.
    s.last_seen = now;
    s.registered = false;
  }
  store::JobFilter filter;
  filter.states = {JobState::kQueued, JobState::kScheduled, JobState::kRunning};
  filter.limit = 1'000'000;
  filter.include_workers = true;
  KILN_ASSIGN_OR_RETURN(auto jobs, store_.ListJobs(filter));
  for (JobRecord& record : jobs) {
    auto body = base::ParseJson(record.spec_json);
    if (!body.ok())
      return absl::InternalError(absl::StrCat("job ", record.id, " has a corrupt spec"));
    auto spec = JobSpecFromStoredJson(*body);
    if (!spec.ok())
      return absl::InternalError(absl::StrCat("job ", record.id, ": ", spec.status().message()));
    int64_t id = record.id;
    active_[id] = ActiveJob{std::move(record), std::move(*spec)};
  }
  spdlog::info("recovered {} unfinished jobs and {} known agents", active_.size(), agents_.size());
  return absl::OkStatus();
}

absl::Status JobController::Transition(ActiveJob& job, std::string type, std::string message) {
  store::EventRecord event{job.record.id, clock_.NowMicros(), std::move(type), std::move(message)};
  return store_.UpdateJob(job.record, event);
}

// ---------------------------------------------------------------- users

absl::StatusOr<JobRecord> JobController::Submit(const auth::Principal& who, JobSpec spec,
                                                std::optional<int64_t> deployment_id) {
  KILN_RETURN_IF_ERROR(CheckSubmittable(who, spec));
  JobRecord record;
  record.name = spec.name;
  record.deployment_id = deployment_id;
  record.user_id = who.user_id;
  record.username = who.username;
  record.state = JobState::kQueued;
  record.spec_json = base::DumpJson(JobSpecToJson(spec));
  record.created_at = clock_.NowMicros();
  if (spec.workers) record.target_workers = spec.workers->max;
  store::EventRecord event{0, record.created_at, "STATE", absl::StrCat("QUEUED by ", who.username)};
  KILN_ASSIGN_OR_RETURN(record, store_.CreateJob(std::move(record), event));
  record.username = who.username;
  int64_t id = record.id;
  active_[id] = ActiveJob{record, std::move(spec)};
  Schedule();
  return active_.count(id) ? active_[id].record : record;
}

absl::Status JobController::CheckSubmittable(const auth::Principal& who,
                                             const JobSpec& spec) const {
  if (!who.is_user()) {
    return absl::PermissionDeniedError("only users can submit jobs; this token belongs to a task");
  }
  KILN_RETURN_IF_ERROR(spec.workers ? pool_.CheckSatisfiable(spec.resources, spec.workers->min)
                                    : pool_.CheckSatisfiable(spec.resources));
  if (spec.package && !spec.package->id.empty()) {
    KILN_RETURN_IF_ERROR(store_.GetPackage(spec.package->id).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<JobController::ActiveJob*> JobController::FindAccessible(const auth::Principal& who,
                                                                        int64_t job_id) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return nullptr;
  if (!auth::CanAccessJob(who, it->second.record)) {
    return absl::NotFoundError(absl::StrCat("no job with id ", job_id));
  }
  return &it->second;
}

absl::StatusOr<JobRecord> JobController::GetJob(const auth::Principal& who, int64_t job_id) {
  KILN_ASSIGN_OR_RETURN(ActiveJob * active, FindAccessible(who, job_id));
  if (active != nullptr) return active->record;
  KILN_ASSIGN_OR_RETURN(JobRecord record, store_.GetJob(job_id));
  if (!auth::CanAccessJob(who, record)) {
    return absl::NotFoundError(absl::StrCat("no job with id ", job_id));
  }
  return record;
}

absl::StatusOr<std::vector<store::ArtifactRecord>> JobController::ListArtifacts(
    const auth::Principal& who, int64_t job_id) {
  KILN_RETURN_IF_ERROR(GetJob(who, job_id).status());
  return store_.ListArtifacts(job_id);
}

absl::StatusOr<std::vector<JobRecord>> JobController::ListJobs(const auth::Principal& who,
                                                               store::JobFilter filter) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot list jobs");
  if (!who.admin) filter.user_id = who.user_id;
  KILN_ASSIGN_OR_RETURN(auto jobs, store_.ListJobs(filter));
  // The in-memory copy is authoritative for unfinished jobs (same content, kept in step).
  for (JobRecord& j : jobs) {
    auto it = active_.find(j.id);
    if (it != active_.end()) j = it->second.record;
  }
  return jobs;
}

absl::StatusOr<JobRecord> JobController::Kill(const auth::Principal& who, int64_t job_id) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot kill jobs");
  KILN_ASSIGN_OR_RETURN(ActiveJob * job, FindAccessible(who, job_id));
  if (job == nullptr) {
    KILN_ASSIGN_OR_RETURN(JobRecord record, GetJob(who, job_id));
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has already ended (",
                                                      store::JobStateName(record.state), ")"));
  }
  std::string by = absl::StrCat("killed by ", who.username);
  if (IsDistributedParent(*job)) {
    KILN_RETURN_IF_ERROR(FinishDistributed(job_id, JobState::kKilled, by));
    return store_.GetJob(job_id);
  }
  switch (job->record.state) {
    case JobState::kQueued:
    case JobState::kScheduled: {
      // Not started: nothing to signal. If an agent did start it meanwhile, its next sync
      // lists the task and is told to kill it, because the job is over.
      std::string agent = job->record.agent_id;
      KILN_RETURN_IF_ERROR(
          Finish(*job, JobState::kKilled, by, std::nullopt, std::nullopt, std::nullopt));
      if (!agent.empty()) NotifyAgent(agent);
      KILN_ASSIGN_OR_RETURN(JobRecord record, store_.GetJob(job_id));
      return record;
    }
    case JobState::kRunning:
      if (!job->record.kill_requested) {
        job->record.kill_requested = true;
        job->record.reason = by;
        KILN_RETURN_IF_ERROR(Transition(*job, "KILL", by));
        NotifyAgent(job->record.agent_id);
      }
      return job->record;
    default:
      return absl::InternalError("active job in a final state");
  }
}

absl::StatusOr<LogPage> JobController::GetLogs(const auth::Principal& who, int64_t job_id,
                                               int64_t after, int limit) {
  KILN_ASSIGN_OR_RETURN(JobRecord job, GetJob(who, job_id));
  LogPage page;
  KILN_ASSIGN_OR_RETURN(page.lines, store_.GetLogLines(job_id, after, limit));
  page.next = page.lines.empty() ? after : page.lines.back().seq;
  if (store::IsTerminal(job.state)) {
    KILN_ASSIGN_OR_RETURN(int64_t last, store_.GetLastLogSeq(job_id));
    page.done = page.next >= last;
  }
  return page;
}

absl::StatusOr<int> JobController::IngestMetrics(const auth::Principal& who, int64_t job_id,
                                                 const base::Json& body) {
  KILN_ASSIGN_OR_RETURN(JobRecord job, GetJob(who, job_id));
  (void)job;
  KILN_ASSIGN_OR_RETURN(std::string writer, base::GetString(body, "writer"));
  if (writer.empty() || writer.size() > 128) {
    return absl::InvalidArgumentError("\"writer\" must be 1 to 128 characters");
  }
  KILN_ASSIGN_OR_RETURN(int64_t seq, base::GetInt(body, "seq"));
  if (seq < 1) return absl::InvalidArgumentError("\"seq\" must be a positive integer");
  if (!body.contains("reports") || !body["reports"].is_array()) {
    return absl::InvalidArgumentError(
        "\"reports\" must be a list of {\"step\", \"group\", \"time\", \"metrics\"}");
  }
  int64_t now = clock_.NowMicros();
  std::vector<store::MetricPoint> points;
  for (const base::Json& r : body["reports"]) {
    KILN_ASSIGN_OR_RETURN(int64_t step, base::GetInt(r, "step"));
    KILN_ASSIGN_OR_RETURN(std::string group, base::GetStringOr(r, "group", "test"));
    KILN_ASSIGN_OR_RETURN(double time_s, base::GetDoubleOr(r, "time", now / 1e6));
    // Bounded so that the conversion to microseconds below cannot overflow.
    if (!(time_s >= 0 && time_s < kMaxMetricTimeSeconds)) {
      return absl::InvalidArgumentError(absl::StrCat("\"time\" must be Unix seconds between 0 and ",
                                                     kMaxMetricTimeSeconds, ", got ", time_s));
    }
    if (!r.contains("metrics") || !r["metrics"].is_object()) {
      return absl::InvalidArgumentError("each report needs \"metrics\": {\"name\": number}");
    }
    for (auto it = r["metrics"].begin(); it != r["metrics"].end(); ++it) {
      if (!it.value().is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat("metric \"", it.key(), "\" must be a number"));
      }
      double v = it.value().get<double>();
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat("metric \"", it.key(), "\" is not finite"));
      }
      if (it.key().empty() || it.key().size() > 256) {
        return absl::InvalidArgumentError("metric names must be 1 to 256 characters");
      }
      points.push_back({it.key(), group, step, v, static_cast<int64_t>(time_s * 1e6)});
    }
    if (points.size() > kMaxMetricPointsPerBatch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a batch may hold at most ", kMaxMetricPointsPerBatch, " points; send smaller batches"));
    }
  }
  KILN_ASSIGN_OR_RETURN(bool applied, store_.AppendMetrics(job_id, writer, seq, points));
  if (applied && !points.empty() && on_job_metrics_) on_job_metrics_(job_id);
  return applied ? static_cast<int>(points.size()) : 0;
}

// ---------------------------------------------------------------- scheduling

void JobController::Schedule() {
  for (auto& [id, job] : active_) {
    if (job.record.state != JobState::kQueued || IsDistributedParent(job)) continue;
    std::optional<scheduler::Allocation> placement = pool_.FindPlacement(job.spec.resources);
    if (!placement) continue;  // later, smaller jobs may still fit (backfill)
    KILN_CHECK_OK(pool_.Allocate(id, *placement));
    JobRecord before = job.record;
    job.record.state = JobState::kScheduled;
    job.record.agent_id = placement->agent_id;
    job.record.scheduled_at = clock_.NowMicros();
    job.record.allocation_json = base::DumpJson(AllocationToJson(*placement));
    std::string msg =
        absl::StrCat("SCHEDULED on ", placement->agent_id, " (", placement->slots, " slots",
                     placement->gpu_indices.empty()
                         ? ""
                         : absl::StrCat(", GPUs ", absl::StrJoin(placement->gpu_indices, ",")),
                     ")");
    absl::Status s = Transition(job, "STATE", msg);
    if (!s.ok()) {
      spdlog::error("job {}: could not record scheduling: {}", id, s.ToString());
      pool_.Release(id);
      job.record = before;
      continue;
    }
    NotifyAgent(placement->agent_id);
  }
}

absl::StatusOr<api::TaskSpec> JobController::BuildTaskSpec(ActiveJob& job) {
  api::TaskSpec t;
  t.job_id = job.record.id;
  t.command = job.spec.command;
  t.env = job.spec.env;
  t.config = job.spec.config;
  t.workdir = job.spec.workdir;
  // A worker acts for its parent job: metrics, logs and the rendezvous are the parent's.
  const int64_t owner = job.record.parent_id.value_or(job.record.id);
  KILN_ASSIGN_OR_RETURN(std::string token, auth_.IssueTaskToken(owner, job.record.user_id));
  t.env["KILN_TOKEN"] = token;
  t.env["KILN_JOB_ID"] = std::to_string(owner);
  t.env["KILN_TASK_ID"] = std::to_string(job.record.id);
  t.env["TRAINING_ID"] = std::to_string(owner);
  t.env["DLI_EXECID"] = std::to_string(owner);  // WMLA scripts read it
  if (job.record.parent_id) KILN_RETURN_IF_ERROR(AddWorkerEnv(job, t));
  if (job.spec.package) {
    if (!job.spec.package->id.empty()) {
      KILN_ASSIGN_OR_RETURN(store::PackageRecord p, store_.GetPackage(job.spec.package->id));
      t.package_id = p.id;
      t.package_kind = p.kind;
      t.package_name = p.name;
    } else {
      t.package_path = job.spec.package->path;
    }
  }
  std::optional<scheduler::Allocation> a = pool_.AllocationOf(job.record.id);
  t.slots = a ? a->slots : job.spec.resources.slots;
  if (a) t.gpu_indices = a->gpu_indices;
  return t;
}

// ---------------------------------------------------------------- finishing

absl::Status JobController::Finish(ActiveJob& job, JobState state, std::string reason,
                                   std::optional<int> exit_code, std::optional<int> signal,
                                   std::optional<int64_t> finished_at) {
  int64_t id = job.record.id;
  JobRecord& r = job.record;
  std::string from(store::JobStateName(r.state));
  r.state = state;
  r.reason = std::move(reason);
  r.exit_code = exit_code;
  r.signal = signal;
  r.finished_at = finished_at ? *finished_at : clock_.NowMicros();
  std::string msg = absl::StrCat(from, " -> ", store::JobStateName(state),
                                 r.reason.empty() ? "" : absl::StrCat(": ", r.reason));
  KILN_RETURN_IF_ERROR(Transition(job, "STATE", msg));
  (void)store_.DeleteJobTokens(id);
  pool_.Release(id);
  active_.erase(id);
  NotifyOutput(id);
  for (const auto& observer : on_job_end_) observer(id);
  Schedule();
  return absl::OkStatus();
}

// ---------------------------------------------------------------- agents

absl::StatusOr<api::RegisterReply> JobController::RegisterAgent(const api::AgentHello& hello) {
  int64_t now = clock_.NowMicros();
  AgentSession& session = agents_[hello.agent_id];
  bool was_registered = session.registered;
  session.hello = hello;
  session.last_seen = now;
  session.registered = true;
  store::AgentRecord record;
  record.id = hello.agent_id;
  record.hostname = hello.hostname;
  record.slots = hello.slots;
  base::Json gpus = base::Json::array();
  std::vector<int> gpu_indices;
  for (const auto& g : hello.gpus) {
    gpus.push_back(
        {{"index", g.index}, {"uuid", g.uuid}, {"name", g.name}, {"memory_mib", g.memory_mib}});
    gpu_indices.push_back(g.index);
  }
  record.gpus_json = base::DumpJson(gpus);
  record.registered_at = now;
  record.last_seen_at = now;
  KILN_RETURN_IF_ERROR(store_.PutAgent(record));
  pool_.SetAgent(hello.agent_id, hello.slots, gpu_indices);

  // Jobs placed on this agent keep their resources: re-allocate them (after a master
  // restart the pool starts empty).
  for (auto& [id, job] : active_) {
    if (job.record.agent_id != hello.agent_id) continue;
    if (job.record.state != JobState::kScheduled && job.record.state != JobState::kRunning)
      continue;
    if (pool_.AllocationOf(id)) continue;
    std::optional<scheduler::Allocation> a = AllocationFromJson(job.record.allocation_json);
    if (!a) a = scheduler::Allocation{hello.agent_id, job.spec.resources.slots, {}};
    absl::Status s = pool_.Allocate(id, *a);
    if (!s.ok())
      spdlog::warn("job {}: cannot re-allocate on {}: {}", id, hello.agent_id, s.ToString());
  }

  // A running job the agent no longer holds (its host rebooted, its data dir was wiped)
  // will never report again, and the agent keeps syncing so it is never declared lost:
  // fail it now rather than leave it RUNNING forever. Done after the re-allocation above
  // so that Finish's rescheduling sees the slots the agent's other jobs still hold.
  std::unordered_set<int64_t> held(hello.tasks.begin(), hello.tasks.end());
  std::vector<int64_t> vanished;
  for (const auto& [id, job] : active_) {
    if (job.record.agent_id == hello.agent_id && job.record.state == JobState::kRunning &&
        !held.count(id)) {
      vanished.push_back(id);
    }
  }
  for (int64_t id : vanished) {
    absl::Status s = Finish(active_[id], JobState::kFailed,
                            absl::StrCat("agent ", hello.agent_id,
                                         " registered again without this task; its exit status "
                                         "is unknown"),
                            std::nullopt, std::nullopt, std::nullopt);
    if (!s.ok()) spdlog::error("job {}: {}", id, s.ToString());
  }

  api::RegisterReply reply;
  for (int64_t id : hello.tasks) {
    auto it = active_.find(id);
    bool expected = it != active_.end() && it->second.record.agent_id == hello.agent_id;
    if (expected) {
      reply.resume[id] = OffsetsOf(id);
    } else {
      // A job that ended while the agent was away (e.g. declared lost) still accepts the
      // rest of its output; unknown ids are forgotten.
      auto stored = store_.GetJob(id);
      if (stored.ok() && stored->agent_id == hello.agent_id) {
        reply.resume[id] = OffsetsOf(id);
      } else {
        reply.forget.push_back(id);
      }
    }
  }
  spdlog::info("agent {} {}registered: {} slots, {} GPUs, {} tasks", hello.agent_id,
               was_registered ? "re-" : "", hello.slots, hello.gpus.size(), hello.tasks.size());
  Schedule();
  return reply;
}

api::StreamOffsets JobController::OffsetsOf(int64_t job_id) {
  api::StreamOffsets o;
  auto stored = store_.GetStreamOffsets(job_id);
  if (stored.ok()) {
    o.log = (*stored)["log"];
    o.emetrics = (*stored)["emetrics"];
  }
  return o;
}

absl::StatusOr<api::SyncReply> JobController::SyncAgent(const std::string& agent_id,
                                                        const api::SyncRequest& request) {
  auto session = agents_.find(agent_id);
  if (session == agents_.end() || !session->second.registered) {
    return absl::NotFoundError(
        absl::StrCat("agent ", agent_id, " is not registered; register first"));
  }
  session->second.last_seen = clock_.NowMicros();
  api::SyncReply reply;
  reply.grace_ms = options_.kill_grace_ms;
  std::unordered_set<int64_t> running(request.running.begin(), request.running.end());
  for (int64_t id : request.running) {
    auto it = active_.find(id);
    if (it == active_.end() || it->second.record.agent_id != agent_id ||
        it->second.record.kill_requested) {
      reply.kill.push_back(id);
    }
  }
  for (auto& [id, job] : active_) {
    if (job.record.agent_id != agent_id || job.record.state != JobState::kScheduled) continue;
    if (running.count(id)) continue;
    auto spec = BuildTaskSpec(job);
    if (!spec.ok()) {
      spdlog::error("job {}: cannot build its task: {}", id, spec.status().ToString());
      continue;
    }
    reply.launch.push_back(std::move(*spec));
  }
  return reply;
}

absl::StatusOr<api::ReportReply> JobController::ApplyReport(const std::string& agent_id,
                                                            const api::AgentReport& report) {
  auto session = agents_.find(agent_id);
  if (session == agents_.end() || !session->second.registered) {
    return absl::NotFoundError(
        absl::StrCat("agent ", agent_id, " is not registered; register first"));
  }
  session->second.last_seen = clock_.NowMicros();
  api::ReportReply reply;
  for (const api::TaskReport& task : report.tasks) {
    auto ack = ApplyTaskReport(agent_id, task);
    if (!ack.ok()) {
      spdlog::warn("agent {} job {}: report not applied: {}", agent_id, task.job_id,
                   ack.status().ToString());
      api::TaskAck fallback;
      fallback.offsets = OffsetsOf(task.job_id);
      reply.tasks[task.job_id] = fallback;
      continue;
    }
    reply.tasks[task.job_id] = *ack;
  }
  return reply;
}

absl::StatusOr<api::TaskAck> JobController::ApplyTaskReport(const std::string& agent_id,
                                                            const api::TaskReport& report) {
  int64_t id = report.job_id;
  api::TaskAck ack;
  auto stored = store_.GetJob(id);
  if (!stored.ok() || stored->agent_id != agent_id) {
    ack.done = true;  // not this agent's job (or gone): forget it
    return ack;
  }

  // Output first: a final state is applied only once all output before it is stored.
  bool output_ok = true;
  const std::optional<int64_t> parent = stored->parent_id;
  const int64_t owner = parent.value_or(id);
  if (report.log || report.emetrics) {
    store::TaskOutput out;
    out.record_under = parent;
    if (report.log) {
      out.lines = report.log->lines;
      if (parent) {
        std::string prefix = absl::StrCat("[w", id, "] ");
        for (store::LogLine& line : out.lines) line.text.insert(0, prefix);
      }
      out.expected_offsets["log"] = report.log->from;
      out.offsets["log"] = report.log->to;
    }
    if (report.emetrics) {
      out.metrics = report.emetrics->points;
      out.expected_offsets["emetrics"] = report.emetrics->from;
      out.offsets["emetrics"] = report.emetrics->to;
    }
    auto appended = store_.AppendTaskOutput(id, out);
    if (!appended.ok()) {
      if (!absl::IsFailedPrecondition(appended.status())) return appended.status();
      output_ok = false;  // offsets disagree: the agent resends from ours
    } else {
      if (!out.lines.empty()) NotifyOutput(owner);
      if (!out.metrics.empty() && on_job_metrics_) on_job_metrics_(owner);
    }
  }
  ack.offsets = OffsetsOf(id);

  // Artifacts come with the exit, before the final state is stored: a resent report (lost
  // reply, master restart) replaces the same set. A distributed job keeps those of worker 0
  // (rank 0 saves the model), under the parent too.
  if (report.phase == api::TaskPhase::kExited && output_ok && !report.artifacts.empty()) {
    std::vector<store::ArtifactRecord> artifacts = report.artifacts;
    const int64_t now = clock_.NowMicros();
    for (store::ArtifactRecord& a : artifacts) {
      a.job_id = id;
      a.created_at = now;
    }
    KILN_RETURN_IF_ERROR(store_.PutArtifacts(id, artifacts));
    if (parent && stored->worker_index == 0) {
      for (store::ArtifactRecord& a : artifacts) a.job_id = *parent;
      KILN_RETURN_IF_ERROR(store_.PutArtifacts(*parent, artifacts));
    }
  }

  auto it = active_.find(id);
  if (it == active_.end()) {
    // Already final (e.g. declared lost while the agent was away): output only.
    ack.done = report.phase != api::TaskPhase::kRunning && output_ok;
    return ack;
  }
  ActiveJob& job = it->second;
  if (!output_ok) return ack;

  // A short task may exit before its first report: record that it ran all the same.
  if (report.phase != api::TaskPhase::kLaunchFailed && report.started_at &&
      job.record.state == JobState::kScheduled) {
    job.record.state = JobState::kRunning;
    job.record.started_at = *report.started_at;
    KILN_RETURN_IF_ERROR(Transition(job, "STATE", absl::StrCat("RUNNING on ", agent_id)));
    if (on_job_started_) on_job_started_(id);
  }

  switch (report.phase) {
    case api::TaskPhase::kRunning:
      if (job.record.state == JobState::kScheduled) {  // no start time was reported
        job.record.state = JobState::kRunning;
        job.record.started_at = report.started_at ? *report.started_at : clock_.NowMicros();
        KILN_RETURN_IF_ERROR(Transition(job, "STATE", absl::StrCat("RUNNING on ", agent_id)));
        if (on_job_started_) on_job_started_(id);
      }
      return ack;
    case api::TaskPhase::kExited: {
      if (!report.final_metrics.empty()) {
        std::string writer =
            parent ? absl::StrCat("val_dict_list.json:w", id) : "val_dict_list.json";
        KILN_RETURN_IF_ERROR(store_.AppendMetrics(owner, writer, 1, report.final_metrics).status());
      }
      if (!job.record.started_at) job.record.started_at = report.started_at;
      JobState state;
      std::string reason;
      if (job.record.kill_requested) {
        state = JobState::kKilled;
        reason = job.record.reason.empty() ? "killed" : job.record.reason;
      } else if (report.exit_code && *report.exit_code == 0 && !report.signal) {
        state = JobState::kFinished;
      } else {
        state = JobState::kFailed;
        reason =
            report.reason.empty() ? DescribeExit(report.exit_code, report.signal) : report.reason;
      }
      KILN_RETURN_IF_ERROR(
          Finish(job, state, reason, report.exit_code, report.signal, report.finished_at));
      ack.done = true;
      return ack;
    }
    case api::TaskPhase::kLaunchFailed:
      KILN_RETURN_IF_ERROR(
          Finish(job, JobState::kFailed,
                 report.reason.empty() ? "the task could not start" : report.reason,
                 report.exit_code, std::nullopt, report.finished_at));
      ack.done = true;
      return ack;
    case api::TaskPhase::kLost:
      KILN_RETURN_IF_ERROR(Finish(job, JobState::kFailed,
                                  report.reason.empty()
                                      ? "the task's supervisor died; its exit status is unknown"
                                      : report.reason,
                                  std::nullopt, std::nullopt, report.finished_at));
      ack.done = true;
      return ack;
  }
  return ack;
}

void JobController::LoseAgent(const std::string& agent_id, const std::string& why) {
  spdlog::warn("agent {} lost: {}", agent_id, why);
  pool_.RemoveAgent(agent_id);
  agents_.erase(agent_id);
  std::vector<int64_t> ids;
  for (const auto& [id, job] : active_) {
    if (job.record.agent_id == agent_id) ids.push_back(id);
  }
  for (int64_t id : ids) {
    ActiveJob& job = active_[id];
    if (job.record.state == JobState::kScheduled) {
      // It never started: put it back in the queue rather than failing it.
      job.record.state = JobState::kQueued;
      job.record.agent_id.clear();
      job.record.allocation_json.clear();
      job.record.scheduled_at.reset();
      absl::Status s =
          Transition(job, "STATE", absl::StrCat("requeued: agent ", agent_id, " lost (", why, ")"));
      if (!s.ok()) spdlog::error("job {}: {}", id, s.ToString());
    } else {
      absl::Status s =
          Finish(job, JobState::kFailed, absl::StrCat("agent ", agent_id, " lost (", why, ")"),
                 std::nullopt, std::nullopt, std::nullopt);
      if (!s.ok()) spdlog::error("job {}: {}", id, s.ToString());
    }
  }
  Schedule();
}

void JobController::SweepAgents() {
  int64_t now = clock_.NowMicros();
  std::vector<std::string> lost;
  for (const auto& [id, s] : agents_) {
    if (now - s.last_seen > options_.agent_timeout_micros) lost.push_back(id);
  }
  for (const std::string& id : lost) {
    LoseAgent(id, absl::StrCat("no contact for ", options_.agent_timeout_micros / 1'000'000, " s"));
  }
}

// ---------------------------------------------------------------- distributed jobs

std::vector<int64_t> JobController::ActiveDistributedJobs() const {
  std::vector<int64_t> ids;
  for (const auto& [id, job] : active_) {
    if (IsDistributedParent(job)) ids.push_back(id);
  }
  return ids;
}

std::optional<JobController::DistributedView> JobController::ViewDistributed(
    int64_t parent_id) const {
  auto it = active_.find(parent_id);
  if (it == active_.end() || !IsDistributedParent(it->second)) return std::nullopt;
  DistributedView view{it->second.record, it->second.spec, {}};
  for (const auto& [id, job] : active_) {
    if (job.record.parent_id == parent_id) view.workers.push_back(job.record);
  }
  return view;
}

int JobController::CountPlacements(const scheduler::Resources& resources, int limit) const {
  return static_cast<int>(pool_.FindPlacements(resources, limit).size());
}

std::optional<scheduler::Resources> JobController::OldestWaitingDemand() const {
  for (const auto& [id, job] : active_) {
    if (job.record.state == JobState::kQueued && !IsDistributedParent(job)) {
      return job.spec.resources;
    }
  }
  return std::nullopt;
}

bool JobController::WaitingJobFitsWithout(const std::vector<int64_t>& job_ids) const {
  std::optional<scheduler::Resources> demand = OldestWaitingDemand();
  return demand && pool_.FitsWithout(job_ids, *demand);
}

absl::StatusOr<std::vector<int64_t>> JobController::StartWorkers(int64_t parent_id, int count,
                                                                 bool all_or_nothing) {
  auto it = active_.find(parent_id);
  if (it == active_.end() || !IsDistributedParent(it->second)) {
    return absl::NotFoundError(
        absl::StrCat("job ", parent_id, " is not an unfinished distributed job"));
  }
  // Copies: creating jobs below inserts into active_.
  const JobRecord parent = it->second.record;
  JobSpec worker_spec = it->second.spec;
  worker_spec.workers.reset();
  std::vector<scheduler::Allocation> placements =
      pool_.FindPlacements(worker_spec.resources, count);
  if (placements.empty() || (all_or_nothing && static_cast<int>(placements.size()) < count)) {
    return std::vector<int64_t>{};
  }
  store::JobFilter siblings;
  siblings.parent_id = parent_id;
  siblings.limit = 1'000'000;
  KILN_ASSIGN_OR_RETURN(auto existing, store_.ListJobs(siblings));
  int next_index = 0;
  for (const JobRecord& w : existing) next_index = std::max(next_index, w.worker_index + 1);

  std::vector<int64_t> started;
  const int64_t now = clock_.NowMicros();
  for (const scheduler::Allocation& placement : placements) {
    JobRecord record;
    record.name = absl::StrCat(parent.name, "-w", next_index);
    record.user_id = parent.user_id;
    record.username = parent.username;
    record.state = JobState::kQueued;
    record.spec_json = base::DumpJson(JobSpecToJson(worker_spec));
    record.created_at = now;
    record.parent_id = parent_id;
    record.worker_index = next_index++;
    store::EventRecord event{0, now, "STATE", absl::StrCat("QUEUED as worker of job ", parent_id)};
    KILN_ASSIGN_OR_RETURN(record, store_.CreateJob(std::move(record), event));
    record.username = parent.username;
    const int64_t id = record.id;
    ActiveJob& worker = active_[id] = ActiveJob{std::move(record), worker_spec};
    KILN_RETURN_IF_ERROR(pool_.Allocate(id, placement));
    worker.record.state = JobState::kScheduled;
    worker.record.agent_id = placement.agent_id;
    worker.record.scheduled_at = now;
    worker.record.allocation_json = base::DumpJson(AllocationToJson(placement));
    absl::Status s = Transition(worker, "STATE", absl::StrCat("SCHEDULED on ", placement.agent_id));
    if (!s.ok()) {
      // Left QUEUED in the store: Schedule places it like any queued job.
      pool_.Release(id);
      worker.record.state = JobState::kQueued;
      return s;
    }
    started.push_back(id);
  }
  ActiveJob& p = active_.at(parent_id);
  if (p.record.state == JobState::kQueued) {
    p.record.state = JobState::kScheduled;
    p.record.scheduled_at = now;
    KILN_RETURN_IF_ERROR(
        Transition(p, "STATE", absl::StrCat("SCHEDULED: ", started.size(), " workers placed")));
  } else {
    KILN_RETURN_IF_ERROR(RecordEvent(
        parent_id, "WORKERS", absl::StrCat("started worker(s) ", absl::StrJoin(started, ", "))));
  }
  for (int64_t id : started) NotifyAgent(active_.at(id).record.agent_id);
  return started;
}

absl::Status JobController::StopWorker(int64_t worker_id, const std::string& reason) {
  auto it = active_.find(worker_id);
  if (it == active_.end()) return absl::OkStatus();  // already over
  ActiveJob& job = it->second;
  if (job.record.state == JobState::kQueued || job.record.state == JobState::kScheduled) {
    std::string agent = job.record.agent_id;
    KILN_RETURN_IF_ERROR(
        Finish(job, JobState::kKilled, reason, std::nullopt, std::nullopt, std::nullopt));
    if (!agent.empty()) NotifyAgent(agent);
    return absl::OkStatus();
  }
  if (job.record.kill_requested) return absl::OkStatus();
  job.record.kill_requested = true;
  job.record.reason = reason;
  KILN_RETURN_IF_ERROR(Transition(job, "KILL", reason));
  NotifyAgent(job.record.agent_id);
  return absl::OkStatus();
}

absl::Status JobController::SetWorkerTarget(int64_t parent_id, int target) {
  auto it = active_.find(parent_id);
  if (it == active_.end())
    return absl::NotFoundError(absl::StrCat("no unfinished job ", parent_id));
  int before = it->second.record.target_workers.value_or(0);
  it->second.record.target_workers = target;
  return Transition(it->second, "SCALE",
                    absl::StrCat("target ", before, " -> ", target, " workers"));
}

absl::Status JobController::MarkDistributedRunning(int64_t parent_id, const std::string& message) {
  auto it = active_.find(parent_id);
  if (it == active_.end() || it->second.record.state == JobState::kRunning) return absl::OkStatus();
  ActiveJob& job = it->second;
  job.record.state = JobState::kRunning;
  job.record.started_at = clock_.NowMicros();
  KILN_RETURN_IF_ERROR(Transition(job, "STATE", absl::StrCat("RUNNING: ", message)));
  if (on_job_started_) on_job_started_(parent_id);
  return absl::OkStatus();
}

absl::Status JobController::FinishDistributed(int64_t parent_id, JobState state,
                                              std::string reason) {
  std::vector<int64_t> workers;
  for (const auto& [id, job] : active_) {
    if (job.record.parent_id == parent_id) workers.push_back(id);
  }
  std::string why = state == JobState::kKilled ? reason : absl::StrCat("job ended: ", reason);
  for (int64_t id : workers) KILN_RETURN_IF_ERROR(StopWorker(id, why));
  auto it = active_.find(parent_id);
  if (it == active_.end()) return absl::OkStatus();
  return Finish(it->second, state, std::move(reason), std::nullopt, std::nullopt, std::nullopt);
}

absl::Status JobController::RecordEvent(int64_t job_id, std::string type, std::string message) {
  auto it = active_.find(job_id);
  if (it == active_.end()) return absl::NotFoundError(absl::StrCat("no unfinished job ", job_id));
  return Transition(it->second, std::move(type), std::move(message));
}

absl::Status JobController::AddWorkerEnv(const ActiveJob& worker, api::TaskSpec& task) {
  const int64_t parent_id = *worker.record.parent_id;
  std::optional<JobSpec> parent_spec;
  if (auto it = active_.find(parent_id); it != active_.end()) {
    parent_spec = it->second.spec;
  } else {
    KILN_ASSIGN_OR_RETURN(JobRecord parent, store_.GetJob(parent_id));
    KILN_ASSIGN_OR_RETURN(base::Json body, base::ParseJson(parent.spec_json));
    KILN_ASSIGN_OR_RETURN(parent_spec, JobSpecFromStoredJson(body));
  }
  if (!parent_spec->workers) return absl::InternalError("a worker's parent is not distributed");
  const WorkersSpec& w = *parent_spec->workers;
  if (w.elastic) {
    task.env["KILN_ELASTIC"] = "1";
    task.env["KILN_MIN_WORKERS"] = std::to_string(w.min);
    task.env["KILN_MAX_WORKERS"] = std::to_string(w.max);
    return absl::OkStatus();
  }
  // Static (torchrun-style env://): ranks are worker indices; rank 0's host is the master.
  std::string master_addr;
  int local_rank = 0, local_world = 0;
  for (const auto& [id, job] : active_) {
    if (job.record.parent_id != parent_id) continue;
    if (job.record.worker_index == 0) {
      auto agent = agents_.find(job.record.agent_id);
      if (agent != agents_.end()) {
        master_addr = agent->second.hello.address.empty() ? agent->second.hello.hostname
                                                          : agent->second.hello.address;
      }
    }
    if (job.record.agent_id == worker.record.agent_id) {
      ++local_world;
      if (job.record.worker_index < worker.record.worker_index) ++local_rank;
    }
  }
  if (master_addr.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank 0 of job ", parent_id, " has no known host; it cannot start"));
  }
  task.env["RANK"] = std::to_string(worker.record.worker_index);
  task.env["WORLD_SIZE"] = std::to_string(w.min);
  task.env["LOCAL_RANK"] = std::to_string(local_rank);
  task.env["LOCAL_WORLD_SIZE"] = std::to_string(local_world);
  task.env["MASTER_ADDR"] = master_addr;
  // One port per job, in a range below Linux's ephemeral ports (32768+).
  task.env["MASTER_PORT"] = std::to_string(29500 + parent_id % 2000);
  return absl::OkStatus();
}

base::Json JobController::DescribeAgents() const {
  base::Json out = base::Json::array();
  auto usage = pool_.Usage();
  for (const auto& [id, s] : agents_) {
    base::Json a = {{"id", id},
                    {"hostname", s.hello.hostname},
                    {"slots", s.hello.slots},
                    {"connected", s.registered},
                    {"last_seen", base::FormatIso8601(s.last_seen)}};
    base::Json gpus = base::Json::array();
    for (const auto& g : s.hello.gpus) {
      gpus.push_back(
          {{"index", g.index}, {"uuid", g.uuid}, {"name", g.name}, {"memory_mib", g.memory_mib}});
    }
    a["gpus"] = gpus;
    auto u = usage.find(id);
    a["used_slots"] = u == usage.end() ? 0 : u->second.used_slots;
    a["used_gpus"] = u == usage.end() ? std::vector<int>{} : u->second.used_gpus;
    out.push_back(a);
  }
  return out;
}

}  // namespace kiln::master
