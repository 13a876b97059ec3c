#include "kiln/master/experiment_controller.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"
#include "kiln/hpo/algorithm.h"
#include "kiln/hpo/search_space.h"
#include "spdlog/spdlog.h"

namespace kiln::master {

using store::ExperimentRecord;
using store::ExperimentState;
using store::TrialRow;
using store::TrialState;

struct ExperimentController::Live {
  ExperimentRecord record;
  ExperimentSpec spec;  // seed always set
  auth::Principal owner;
  // Declared before `algorithm`, which may borrow it, so it is destroyed after it.
  std::unique_ptr<hpo::SearchSpace> space;
  hpo::Algorithm algorithm;
  std::vector<TrialRow> trials;            // index = trial number
  std::vector<hpo::TrialRecord> history;   // the same trials as the sampler sees them
  std::map<int64_t, int64_t> pruned_step;  // trial number -> newest step the pruner judged
};

namespace {

constexpr int64_t kMinute = int64_t{60} * 1'000'000;

bool IsUnfinished(ExperimentState state) {
  return state == ExperimentState::kSubmitted || state == ExperimentState::kRunning;
}

bool IsExperimentGrid(const std::string& algorithm) {
  std::string lower = absl::AsciiStrToLower(algorithm);
  return lower == "experimentgridsearch" || lower == "experiment_grid";
}

bool IsEmptySpace(const base::Json& space) {
  return space.is_null() || ((space.is_object() || space.is_array()) && space.empty());
}

absl::StatusOr<hpo::SearchSpace> BuildSpace(const ExperimentSpec& spec) {
  // ExperimentGridSearch lists whole configurations instead of a space.
  if (IsExperimentGrid(spec.algorithm) && IsEmptySpace(spec.search_space)) {
    return hpo::SearchSpace::Create({});
  }
  if (spec.wmla_space) return hpo::SearchSpace::FromWmla(spec.search_space);
  if (IsEmptySpace(spec.search_space)) {
    return absl::InvalidArgumentError(
        "field \"search_space\" is required: give at least one parameter, e.g. {\"lr\": "
        "{\"type\": \"double\", \"low\": 0.0001, \"high\": 0.1, \"log\": true}}");
  }
  return hpo::SearchSpace::FromNative(spec.search_space);
}

absl::StatusOr<hpo::Algorithm> BuildAlgorithm(const ExperimentSpec& spec,
                                              const hpo::SearchSpace& space, uint64_t seed) {
  hpo::AlgorithmRequest request;
  request.name = spec.algorithm;
  request.params = spec.algorithm_params;
  request.hyperband_eta = spec.hyperband_eta;
  request.seed = seed;
  request.max_trials = spec.max_trials;
  request.wmla_experiments = spec.wmla_experiments;
  request.pruner = spec.pruner;
  return hpo::MakeAlgorithm(request, space);
}

hpo::TrialState ToHpoState(TrialState state) {
  switch (state) {
    case TrialState::kRunning:
      return hpo::TrialState::kRunning;
    case TrialState::kComplete:
      return hpo::TrialState::kComplete;
    case TrialState::kPruned:
      return hpo::TrialState::kPruned;
    case TrialState::kFailed:
    case TrialState::kStopped:  // never ran to the end: nothing to learn from
      return hpo::TrialState::kFailed;
  }
  return hpo::TrialState::kFailed;
}

double Minimized(double value, ObjectiveGoal goal) {
  return goal == ObjectiveGoal::kMaximize ? -value : value;
}

base::Json PointToJson(const hpo::Point& point) {
  base::Json j = base::Json::object();
  for (const auto& [name, value] : point) j[name] = value;
  return j;
}

hpo::Point PointFromJson(const std::string& text) {
  hpo::Point point;
  auto j = base::ParseJson(text);
  if (!j.ok() || !j->is_object()) return point;
  for (auto it = j->begin(); it != j->end(); ++it) {
    if (it.value().is_number()) point[it.key()] = it.value().get<double>();
  }
  return point;
}

base::Json IntermediateToJson(const std::map<int64_t, double>& values) {
  base::Json j = base::Json::object();
  for (const auto& [step, value] : values) j[std::to_string(step)] = value;
  return j;
}

std::map<int64_t, double> IntermediateFromJson(const std::string& text) {
  std::map<int64_t, double> out;
  auto j = base::ParseJson(text);
  if (!j.ok() || !j->is_object()) return out;
  for (auto it = j->begin(); it != j->end(); ++it) {
    if (!it.value().is_number()) continue;
    char* end = nullptr;
    long long step = std::strtoll(it.key().c_str(), &end, 10);
    if (end != nullptr && *end == '\0') out[step] = it.value().get<double>();
  }
  return out;
}

// The points of the objective that count: a workload may report the metric for several
// groups (train and test); the validation group "test" is the objective when present,
// else the first group reported.
std::vector<store::MetricPoint> ObjectivePoints(const std::vector<store::MetricPoint>& points) {
  if (points.empty()) return {};
  std::string group = points.front().group;
  for (const store::MetricPoint& p : points) {
    if (p.group == "test") group = "test";
  }
  std::vector<store::MetricPoint> out;
  for (const store::MetricPoint& p : points) {
    if (p.group == group && std::isfinite(p.value)) out.push_back(p);
  }
  return out;
}

// Step -> value as reported (the last one stored for a step wins: val_dict_list.json rows
// arrive after the emetrics lines of the same steps).
std::map<int64_t, double> IntermediateOf(const std::vector<store::MetricPoint>& points) {
  std::map<int64_t, double> out;
  for (const store::MetricPoint& p : ObjectivePoints(points)) out[p.step] = p.value;
  return out;
}

hpo::TrialRecord ToRecord(const TrialRow& row, ObjectiveGoal goal) {
  hpo::TrialRecord r;
  r.number = row.number;
  r.params = PointFromJson(row.params_json);
  r.state = ToHpoState(row.state);
  if (row.value && (row.state == TrialState::kComplete || row.state == TrialState::kPruned)) {
    r.value = Minimized(*row.value, goal);
  }
  for (const auto& [step, value] : IntermediateFromJson(row.intermediate_json)) {
    r.intermediate[step] = Minimized(value, goal);
  }
  r.budget = row.budget;
  r.parent = row.parent;
  return r;
}

std::vector<int64_t> JobIdsOf(const TrialRow& row) {
  std::vector<int64_t> ids;
  auto j = base::ParseJson(row.job_ids_json);
  if (!j.ok() || !j->is_array()) return ids;
  for (const base::Json& id : *j) {
    if (id.is_number_integer()) ids.push_back(id.get<int64_t>());
  }
  return ids;
}

std::string TrialJobName(const ExperimentRecord& record, int64_t number) {
  return absl::StrCat(record.name, "-trial-", number);
}

std::string FormatValue(double v) { return absl::StrCat(v); }

}  // namespace

std::optional<double> ReduceObjective(const std::vector<store::MetricPoint>& points,
                                      const ObjectiveSpec& objective) {
  std::map<int64_t, double> by_step = IntermediateOf(points);
  if (by_step.empty()) return std::nullopt;
  if (objective.reduce == ObjectiveReduce::kLast) return by_step.rbegin()->second;
  double best = by_step.begin()->second;
  for (const auto& [step, value] : by_step) {
    best =
        objective.goal == ObjectiveGoal::kMaximize ? std::max(best, value) : std::min(best, value);
  }
  return best;
}

ExperimentController::ExperimentController(store::Store& store, JobController& jobs,
                                           const base::Clock& clock)
    : store_(store), jobs_(jobs), clock_(clock) {}

ExperimentController::~ExperimentController() = default;

// ---------------------------------------------------------------- loading and views

absl::StatusOr<std::unique_ptr<ExperimentController::Live>> ExperimentController::Load(
    ExperimentRecord record, ExperimentSpec spec, std::vector<TrialRow> trials) {
  auto live = std::make_unique<Live>();
  if (!spec.seed) spec.seed = DeriveExperimentSeed(record.id);
  KILN_ASSIGN_OR_RETURN(hpo::SearchSpace space, BuildSpace(spec));
  live->space = std::make_unique<hpo::SearchSpace>(std::move(space));
  KILN_ASSIGN_OR_RETURN(live->algorithm, BuildAlgorithm(spec, *live->space, *spec.seed));
  live->owner.kind = auth::Principal::Kind::kUser;
  live->owner.user_id = record.user_id;
  live->owner.username = record.username;
  for (size_t i = 0; i < trials.size(); ++i) {
    if (trials[i].number != static_cast<int64_t>(i)) {
      return absl::InternalError(absl::StrCat("experiment ", record.id, " lacks trial ", i));
    }
    live->history.push_back(ToRecord(trials[i], spec.objective.goal));
  }
  live->trials = std::move(trials);
  live->record = std::move(record);
  live->spec = std::move(spec);
  return live;
}

ExperimentView ExperimentController::ViewOf(const Live& live) const {
  ExperimentView view;
  view.record = live.record;
  view.spec = live.spec;
  view.trials = live.trials;
  return view;
}

absl::StatusOr<ExperimentView> ExperimentController::View(const ExperimentRecord& record) {
  ExperimentView view;
  auto it = live_.find(record.id);
  if (it != live_.end()) {
    view = ViewOf(*it->second);
  } else {
    view.record = record;
    KILN_ASSIGN_OR_RETURN(base::Json json, base::ParseJson(record.spec_json));
    KILN_ASSIGN_OR_RETURN(view.spec, ExperimentSpecFromJson(json));
    if (!view.spec.seed) view.spec.seed = DeriveExperimentSeed(record.id);
    KILN_ASSIGN_OR_RETURN(view.trials, store_.ListTrials(record.id));
  }
  const ObjectiveGoal goal = view.spec.objective.goal;
  std::optional<int64_t> best_complete, best_pruned;
  auto better = [&](const TrialRow& t, const std::optional<int64_t>& than) {
    if (!than) return true;
    return Minimized(*t.value, goal) < Minimized(*view.trials[*than].value, goal);
  };
  for (const TrialRow& t : view.trials) {
    switch (t.state) {
      case TrialState::kRunning:
        ++view.running;
        break;
      case TrialState::kComplete:
        ++view.complete;
        if (t.value && better(t, best_complete)) best_complete = t.number;
        break;
      case TrialState::kPruned:
        ++view.pruned;
        if (t.value && better(t, best_pruned)) best_pruned = t.number;
        break;
      case TrialState::kFailed:
        ++view.failed;
        break;
      case TrialState::kStopped:
        ++view.stopped;
        break;
    }
  }
  view.best_trial = best_complete ? best_complete : best_pruned;
  return view;
}

absl::StatusOr<ExperimentRecord> ExperimentController::Access(const auth::Principal& who,
                                                              int64_t id) {
  ExperimentRecord record;
  auto it = live_.find(id);
  if (it != live_.end()) {
    record = it->second->record;
  } else {
    KILN_ASSIGN_OR_RETURN(record, store_.GetExperiment(id));
  }
  // Others' experiments are not found, so their ids are not revealed.
  if (!who.is_user() || (!who.admin && record.user_id != who.user_id)) {
    return absl::NotFoundError(absl::StrCat("no experiment with id ", id));
  }
  return record;
}

absl::StatusOr<ExperimentView> ExperimentController::Get(const auth::Principal& who, int64_t id) {
  KILN_ASSIGN_OR_RETURN(ExperimentRecord record, Access(who, id));
  return View(record);
}

absl::StatusOr<ExperimentView> ExperimentController::GetByName(const auth::Principal& who,
                                                               const std::string& name) {
  auto record = store_.GetExperimentByName(name);
  if (!record.ok()) return record.status();
  auto access = Access(who, record->id);
  if (!access.ok()) {
    return absl::NotFoundError(absl::StrCat("no experiment named \"", name, "\""));
  }
  return View(*access);
}

absl::StatusOr<std::vector<ExperimentView>> ExperimentController::List(const auth::Principal& who) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot list experiments");
  KILN_ASSIGN_OR_RETURN(
      auto records,
      store_.ListExperiments(who.admin ? std::nullopt : std::optional<int64_t>(who.user_id)));
  std::vector<ExperimentView> out;
  out.reserve(records.size());
  for (const ExperimentRecord& r : records) {
    KILN_ASSIGN_OR_RETURN(ExperimentView view, View(r));
    out.push_back(std::move(view));
  }
  return out;
}

// ---------------------------------------------------------------- create

absl::StatusOr<ExperimentView> ExperimentController::Create(const auth::Principal& who,
                                                            ExperimentSpec spec) {
  if (!who.is_user()) {
    return absl::PermissionDeniedError(
        "only users can create experiments; this token belongs to a task");
  }
  KILN_RETURN_IF_ERROR(ValidateExperimentSpec(spec));
  // Everything that can be refused is checked before anything is stored: the space, the
  // algorithm (with a stand-in seed when it will be derived from the id), and whether a
  // trial could ever run.
  KILN_ASSIGN_OR_RETURN(hpo::SearchSpace space, BuildSpace(spec));
  KILN_RETURN_IF_ERROR(BuildAlgorithm(spec, space, spec.seed.value_or(0)).status());
  if (absl::Status s = jobs_.CheckSubmittable(who, spec.trial); !s.ok()) {
    if (!absl::IsFailedPrecondition(s)) return s;
    // The job-level message speaks of one job and `kiln run` flags; say it per trial.
    return absl::FailedPreconditionError(
        absl::StrCat("no trial of this experiment could ever run (each trial asks for ",
                     spec.trial.resources.slots, " slots and ", spec.trial.resources.gpus,
                     " GPUs; lower resources.slots/resources.gpus, WMLA --gpuPerWorker): ",
                     std::string(s.message())));
  }
  if (!spec.name.empty()) {
    auto taken = store_.GetExperimentByName(spec.name);
    if (taken.ok()) {
      return absl::AlreadyExistsError(absl::StrCat("an experiment named \"", spec.name,
                                                   "\" already exists; choose another name"));
    }
    if (!absl::IsNotFound(taken.status())) return taken.status();
  }

  int64_t now = clock_.NowMicros();
  ExperimentRecord record;
  record.user_id = who.user_id;
  record.username = who.username;
  record.state = ExperimentState::kSubmitted;
  record.created_at = now;
  absl::StatusOr<ExperimentRecord> created = absl::UnknownError("not created");
  if (spec.name.empty()) {
    // WMLA's form, "<user>-hpo-<digits>"; the digits are the creation time, bumped past a
    // name that is taken.
    for (int64_t digits = now; digits < now + 1000; ++digits) {
      spec.name = absl::StrCat(who.username, "-hpo-", digits);
      record.name = spec.name;
      record.spec_json = base::DumpJson(ExperimentSpecToJson(spec));
      created = store_.CreateExperiment(record);
      if (!absl::IsAlreadyExists(created.status())) break;
    }
  } else {
    record.name = spec.name;
    record.spec_json = base::DumpJson(ExperimentSpecToJson(spec));
    created = store_.CreateExperiment(record);
  }
  KILN_RETURN_IF_ERROR(created.status());
  record = *created;
  record.username = who.username;

  auto loaded = Load(record, spec, {});
  if (!loaded.ok()) {
    (void)store_.DeleteExperiment(record.id);
    return loaded.status();
  }
  std::unique_ptr<Live> owned = std::move(*loaded);
  Live& live = *owned;
  live.record.state = ExperimentState::kRunning;
  live.record.started_at = now;
  absl::Status s = store_.UpdateExperiment(live.record);
  if (!s.ok()) {
    (void)store_.DeleteExperiment(record.id);
    return s;
  }
  int64_t id = record.id;
  live_[id] = std::move(owned);
  s = Pump(live);
  if (!s.ok()) {
    // The first trials could not be submitted: take back what was done, so a refused
    // request leaves nothing behind.
    for (const TrialRow& t : live.trials) {
      for (int64_t job : JobIdsOf(t)) {
        job_to_trial_.erase(job);
        (void)jobs_.Kill(live.owner, job);
      }
    }
    live_.erase(id);
    (void)store_.DeleteExperiment(id);
    return s;
  }
  ReleaseEnded();
  KILN_ASSIGN_OR_RETURN(ExperimentRecord stored, store_.GetExperiment(id));
  return View(stored);
}

// ---------------------------------------------------------------- driving

void ExperimentController::SetTrial(Live& live, const TrialRow& row) {
  live.trials[row.number] = row;
  live.history[row.number] = ToRecord(row, live.spec.objective.goal);
}

bool ExperimentController::TimeBudgetSpent(const Live& live) const {
  if (live.spec.max_run_minutes < 0 || !live.record.started_at) return false;
  return clock_.NowMicros() >= *live.record.started_at + live.spec.max_run_minutes * kMinute;
}

absl::Status ExperimentController::Pump(Live& live) {
  if (live.record.state != ExperimentState::kRunning) return absl::OkStatus();
  if (TimeBudgetSpent(live)) {
    // Running trials are stopped: the budget is the user's bound on the search.
    Complete(live,
             absl::StrCat("its time budget of ", live.spec.max_run_minutes, " minutes was spent"));
    return absl::OkStatus();
  }
  std::string why_done;
  while (true) {
    int running = 0;
    for (const TrialRow& t : live.trials) running += t.state == TrialState::kRunning;
    if (running >= live.spec.parallelism) return absl::OkStatus();
    if (live.spec.max_trials >= 0 &&
        static_cast<int64_t>(live.trials.size()) >= live.spec.max_trials) {
      why_done = absl::StrCat("all ", live.spec.max_trials, " trials were run");
    } else {
      auto suggestion = live.algorithm.sampler->Ask(live.history);
      if (!suggestion.ok()) {
        spdlog::error("experiment {}: the sampler failed: {}", live.record.id,
                      suggestion.status().ToString());
        End(live, ExperimentState::kFailed,
            absl::StrCat("the ", live.algorithm.sampler->name(),
                         " sampler failed: ", suggestion.status().message()));
        return absl::OkStatus();
      }
      if (suggestion->has_value()) {
        KILN_RETURN_IF_ERROR(LaunchTrial(live, **suggestion));
        continue;
      }
      // Exhausted, or waiting for running trials (a synchronous phase): asked again when
      // a trial ends.
      why_done = "the search space is exhausted";
    }
    if (running == 0) Complete(live, why_done);
    return absl::OkStatus();
  }
}

absl::Status ExperimentController::LaunchTrial(Live& live, const hpo::Suggestion& suggestion) {
  base::Json config =
      live.spec.trial.config.is_object() ? live.spec.trial.config : base::Json::object();
  base::Json sampled;
  if (live.algorithm.experiment_grid != nullptr) {
    KILN_ASSIGN_OR_RETURN(sampled, live.algorithm.experiment_grid->ConfigFor(suggestion.params));
  } else {
    sampled = live.space->ToConfig(suggestion.params);
  }
  // Sampled values win over fixed ones of the same name.
  if (sampled.is_object()) {
    for (auto it = sampled.begin(); it != sampled.end(); ++it) config[it.key()] = it.value();
  }
  if (!live.algorithm.resource_name.empty() && suggestion.budget > 0) {
    config[live.algorithm.resource_name] = suggestion.budget;
  }
  TrialRow row;
  row.experiment_id = live.record.id;
  row.number = static_cast<int64_t>(live.trials.size());
  row.state = TrialState::kRunning;
  row.params_json = base::DumpJson(PointToJson(suggestion.params));
  row.config_json = base::DumpJson(config);
  row.budget = suggestion.budget;
  row.parent = suggestion.parent;
  row.created_at = clock_.NowMicros();
  // Stored before its job is submitted: a crash in between leaves a RUNNING trial without
  // a job, which Recover submits (or matches to the job it finds).
  KILN_RETURN_IF_ERROR(store_.PutTrial(row));
  live.trials.push_back(row);
  live.history.push_back(ToRecord(row, live.spec.objective.goal));
  absl::Status s = SubmitAttempt(live, row.number);
  if (!s.ok()) OnSubmitError(live, row.number, s);
  return s;
}

absl::Status ExperimentController::SubmitAttempt(Live& live, int64_t number) {
  TrialRow row = live.trials[number];
  if (row.job_id) {
    // The previous attempt's job is kept in job_ids; the trial waits without one until
    // the new job is stored.
    row.job_id.reset();
    KILN_RETURN_IF_ERROR(store_.PutTrial(row));
    SetTrial(live, row);
  }
  JobSpec spec = live.spec.trial;
  spec.name = TrialJobName(live.record, number);
  auto config = base::ParseJson(row.config_json);
  if (!config.ok()) return absl::InternalError(absl::StrCat("trial ", number, " has no config"));
  spec.config = *config;
  spec.env["SUBID"] = std::to_string(number);
  spec.env["KILN_EXPERIMENT_ID"] = std::to_string(live.record.id);
  spec.env["KILN_TRIAL_ID"] = std::to_string(number);  // ARCHITECTURE.md §3
  KILN_ASSIGN_OR_RETURN(store::JobRecord job, jobs_.Submit(live.owner, std::move(spec)));
  row.job_id = job.id;
  std::vector<int64_t> ids = JobIdsOf(row);
  ids.push_back(job.id);
  row.job_ids_json = base::DumpJson(base::Json(ids));
  row.attempts += 1;
  if (!row.started_at) row.started_at = clock_.NowMicros();
  job_to_trial_[job.id] = {live.record.id, number};
  SetTrial(live, row);
  absl::Status s = store_.PutTrial(row);
  if (!s.ok()) {
    // The job runs; a restart finds it by its name and environment (AdoptOrphanJob).
    spdlog::error("experiment {} trial {}: job {} submitted but not recorded: {}", live.record.id,
                  number, job.id, s.ToString());
  }
  return absl::OkStatus();
}

void ExperimentController::OnSubmitError(Live& live, int64_t number, const absl::Status& status) {
  spdlog::warn("experiment {} trial {}: cannot submit: {}", live.record.id, number,
               status.ToString());
  if (!absl::IsFailedPrecondition(status) && !absl::IsNotFound(status) &&
      !absl::IsPermissionDenied(status)) {
    return;  // transient (the store): Tick tries again
  }
  // It will never run as asked: say so instead of leaving it queued in silence.
  TrialRow row = live.trials[number];
  row.state = TrialState::kStopped;
  row.reason = absl::StrCat("not submitted: ", status.message());
  row.finished_at = clock_.NowMicros();
  (void)store_.PutTrial(row);
  SetTrial(live, row);
  End(live, ExperimentState::kFailed, absl::StrCat("its trials cannot run: ", status.message()));
}

void ExperimentController::AccountJobEnd(Live& live, int64_t number, const store::JobRecord& job) {
  TrialRow row = live.trials[number];
  if (row.state != TrialState::kRunning || row.job_id != job.id) return;
  job_to_trial_.erase(job.id);
  const ObjectiveSpec& objective = live.spec.objective;
  row.finished_at = job.finished_at ? *job.finished_at : clock_.NowMicros();
  switch (job.state) {
    case store::JobState::kFinished: {
      auto points = store_.GetMetrics(job.id, objective.metric);
      if (!points.ok()) {
        spdlog::error("job {}: cannot read metrics: {}", job.id, points.status().ToString());
        return;  // Tick or a restart accounts it
      }
      std::map<int64_t, double> intermediate = IntermediateOf(*points);
      row.intermediate_json = base::DumpJson(IntermediateToJson(intermediate));
      row.value = ReduceObjective(*points, objective);
      if (row.value) {
        row.state = TrialState::kComplete;
        row.reason.clear();
      } else {
        std::set<std::string> names;
        auto all = store_.GetMetrics(job.id, std::nullopt);
        if (all.ok()) {
          for (const store::MetricPoint& p : *all) names.insert(p.name);
        }
        row.state = TrialState::kFailed;
        row.reason =
            absl::StrCat("the trial never reported metric \"", objective.metric, "\" (",
                         names.empty() ? "it reported no metrics"
                                       : absl::StrCat("it reported: ", absl::StrJoin(names, ", ")),
                         ")");
      }
      break;
    }
    case store::JobState::kFailed:
      if (row.attempts <= live.spec.max_retries) {
        spdlog::info("experiment {} trial {}: job {} failed ({}); retrying", live.record.id, number,
                     job.id, job.reason);
        absl::Status s = SubmitAttempt(live, number);
        if (!s.ok()) OnSubmitError(live, number, s);
        return;
      }
      row.state = TrialState::kFailed;
      row.reason = job.reason.empty() ? absl::StrCat("its job ", job.id, " failed") : job.reason;
      if (row.attempts > 1) absl::StrAppend(&row.reason, " (", row.attempts, " attempts)");
      break;
    default:  // killed by someone else than this controller
      row.state = TrialState::kFailed;
      row.reason = absl::StrCat("its job ", job.id, " was killed",
                                job.reason.empty() ? "" : absl::StrCat(" (", job.reason, ")"));
      break;
  }
  absl::Status s = store_.PutTrial(row);
  if (!s.ok()) {
    // Not mapped any more, so Tick accounts it again.
    spdlog::error("experiment {} trial {}: cannot record its end: {}", live.record.id, number,
                  s.ToString());
    return;
  }
  SetTrial(live, row);
  live.algorithm.sampler->Tell(live.history[number]);
}

void ExperimentController::CheckPrune(Live& live, int64_t number) {
  if (!live.algorithm.pruner) return;
  TrialRow row = live.trials[number];
  if (row.state != TrialState::kRunning || !row.job_id) return;
  auto job = jobs_.GetJob(live.owner, *row.job_id);
  // An ended job is accounted by OnJobEnded with its final metrics, never pruned.
  if (!job.ok() || store::IsTerminal(job->state)) return;
  auto points = store_.GetMetrics(*row.job_id, live.spec.objective.metric);
  if (!points.ok()) return;
  std::map<int64_t, double> intermediate = IntermediateOf(*points);
  if (intermediate.empty()) return;
  std::string json = base::DumpJson(IntermediateToJson(intermediate));
  if (json != row.intermediate_json) {
    // Stored so that other trials' pruning (and a restarted master) compares against it.
    row.intermediate_json = json;
    if (!store_.PutTrial(row).ok()) return;
    SetTrial(live, row);
  }
  int64_t step = intermediate.rbegin()->first;
  auto judged = live.pruned_step.find(number);
  if (judged != live.pruned_step.end() && judged->second >= step) return;
  live.pruned_step[number] = step;
  if (!live.algorithm.pruner->ShouldPrune(live.history[number], step, live.history)) return;

  double value = intermediate.rbegin()->second;
  row.state = TrialState::kPruned;
  row.value = value;
  row.reason =
      absl::StrCat("stopped early by the ", live.algorithm.pruner->name(), " pruner at step ", step,
                   " (", live.spec.objective.metric, " ", FormatValue(value), ")");
  row.finished_at = clock_.NowMicros();
  // Recorded before the kill, so the job's end (KILLED) finds the trial settled.
  if (!store_.PutTrial(row).ok()) return;
  SetTrial(live, row);
  live.algorithm.sampler->Tell(live.history[number]);
  job_to_trial_.erase(*row.job_id);
  auto killed = jobs_.Kill(live.owner, *row.job_id);
  if (!killed.ok() && !absl::IsFailedPrecondition(killed.status())) {
    spdlog::warn("experiment {} trial {}: cannot kill pruned job {}: {}", live.record.id, number,
                 *row.job_id, killed.status().ToString());
  }
}

void ExperimentController::End(Live& live, ExperimentState state, std::string reason) {
  int64_t now = clock_.NowMicros();
  for (TrialRow row : live.trials) {
    if (row.state != TrialState::kRunning) continue;
    row.state = TrialState::kStopped;
    row.reason = reason;
    row.finished_at = now;
    absl::Status s = store_.PutTrial(row);
    if (!s.ok()) spdlog::error("trial {}: {}", row.number, s.ToString());
    SetTrial(live, row);
    if (row.job_id) {
      job_to_trial_.erase(*row.job_id);
      auto killed = jobs_.Kill(live.owner, *row.job_id);
      if (!killed.ok() && !absl::IsFailedPrecondition(killed.status())) {
        spdlog::warn("job {}: cannot kill: {}", *row.job_id, killed.status().ToString());
      }
    }
  }
  live.record.state = state;
  live.record.reason = std::move(reason);
  live.record.finished_at = now;
  absl::Status s = store_.UpdateExperiment(live.record);
  if (!s.ok())
    spdlog::error("experiment {}: cannot record its end: {}", live.record.id, s.ToString());
  spdlog::info("experiment {} ({}) {}: {}", live.record.id, live.record.name,
               store::ExperimentStateName(state), live.record.reason);
}

void ExperimentController::Complete(Live& live, const std::string& why) {
  bool any_result = false;
  std::string first_failure;
  for (const TrialRow& t : live.trials) {
    if ((t.state == TrialState::kComplete || t.state == TrialState::kPruned) && t.value) {
      any_result = true;
    }
    if (t.state == TrialState::kFailed && first_failure.empty()) {
      first_failure = absl::StrCat("trial ", t.number, ": ", t.reason);
    }
  }
  if (any_result) {
    End(live, ExperimentState::kFinished, why);
  } else if (live.trials.empty()) {
    End(live, ExperimentState::kFailed, absl::StrCat("no trial ran: ", why));
  } else {
    End(live, ExperimentState::kFailed,
        absl::StrCat("no trial reported metric \"", live.spec.objective.metric, "\" (",
                     first_failure.empty() ? "every trial was stopped" : first_failure, ")"));
  }
}

void ExperimentController::ReleaseEnded() {
  for (auto it = live_.begin(); it != live_.end();) {
    if (IsUnfinished(it->second->record.state)) {
      ++it;
      continue;
    }
    int64_t id = it->first;
    for (auto j = job_to_trial_.begin(); j != job_to_trial_.end();) {
      j = j->second.first == id ? job_to_trial_.erase(j) : std::next(j);
    }
    it = live_.erase(it);
  }
}

void ExperimentController::OnJobEnded(int64_t job_id) {
  auto it = job_to_trial_.find(job_id);
  if (it == job_to_trial_.end()) return;
  auto [experiment_id, number] = it->second;
  auto live = live_.find(experiment_id);
  if (live == live_.end()) {
    job_to_trial_.erase(it);
    return;
  }
  auto job = store_.GetJob(job_id);
  if (!job.ok()) {
    spdlog::error("job {}: {}", job_id, job.status().ToString());
    return;
  }
  AccountJobEnd(*live->second, number, *job);
  absl::Status s = Pump(*live->second);
  if (!s.ok()) spdlog::warn("experiment {}: {}", experiment_id, s.ToString());
  ReleaseEnded();
}

void ExperimentController::OnJobMetrics(int64_t job_id) {
  auto it = job_to_trial_.find(job_id);
  if (it == job_to_trial_.end()) return;
  auto [experiment_id, number] = it->second;
  auto live = live_.find(experiment_id);
  if (live == live_.end()) return;
  CheckPrune(*live->second, number);
  absl::Status s = Pump(*live->second);
  if (!s.ok()) spdlog::warn("experiment {}: {}", experiment_id, s.ToString());
  ReleaseEnded();
}

void ExperimentController::Tick() {
  std::vector<int64_t> ids;
  for (const auto& [id, live] : live_) ids.push_back(id);
  for (int64_t id : ids) {
    Live& live = *live_.at(id);
    if (live.record.state != ExperimentState::kRunning) continue;
    for (size_t n = 0; n < live.trials.size() && live.record.state == ExperimentState::kRunning;
         ++n) {
      const TrialRow& row = live.trials[n];
      if (row.state != TrialState::kRunning) continue;
      if (!row.job_id) {
        // Its submission failed for a transient reason: try again.
        absl::Status s = SubmitAttempt(live, static_cast<int64_t>(n));
        if (!s.ok()) OnSubmitError(live, static_cast<int64_t>(n), s);
        continue;
      }
      if (!job_to_trial_.count(*row.job_id)) {
        // Its end could not be recorded before: account it now.
        auto job = store_.GetJob(*row.job_id);
        if (job.ok() && store::IsTerminal(job->state)) {
          AccountJobEnd(live, static_cast<int64_t>(n), *job);
        }
        continue;
      }
      // Reports that arrived in bulk (or before a restart) are judged here too.
      CheckPrune(live, static_cast<int64_t>(n));
    }
    absl::Status s = Pump(live);
    if (!s.ok()) spdlog::warn("experiment {}: {}", id, s.ToString());
  }
  ReleaseEnded();
}

// ---------------------------------------------------------------- stop, restart, delete

absl::StatusOr<ExperimentView> ExperimentController::Stop(const auth::Principal& who, int64_t id,
                                                          bool force) {
  KILN_ASSIGN_OR_RETURN(ExperimentRecord record, Access(who, id));
  auto it = live_.find(id);
  if (it == live_.end() || !IsUnfinished(it->second->record.state)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "experiment ", id, " has already ended (", store::ExperimentStateName(record.state), ")"));
  }
  Live& live = *it->second;
  std::string reason = absl::StrCat("stopped by ", who.username);
  int64_t now = clock_.NowMicros();
  for (size_t n = 0; n < live.trials.size(); ++n) {
    TrialRow row = live.trials[n];
    if (row.state != TrialState::kRunning) continue;
    if (row.job_id) {
      // A job that finished before its end was handled keeps its result.
      auto job = store_.GetJob(*row.job_id);
      if (job.ok() && job->state == store::JobState::kFinished) {
        AccountJobEnd(live, static_cast<int64_t>(n), *job);
        if (live.trials[n].state != TrialState::kRunning) continue;
      }
      auto killed = jobs_.Kill(live.owner, *row.job_id);
      if (!killed.ok() && !absl::IsFailedPrecondition(killed.status()) && !force) {
        return absl::Status(killed.status().code(),
                            absl::StrCat("cannot kill job ", *row.job_id, " of trial ", n, ": ",
                                         killed.status().message(),
                                         "; stop with force to end the experiment anyway"));
      }
      job_to_trial_.erase(*row.job_id);
    }
    row.state = TrialState::kStopped;
    row.reason = reason;
    row.finished_at = now;
    KILN_RETURN_IF_ERROR(store_.PutTrial(row));
    SetTrial(live, row);
  }
  End(live, ExperimentState::kStopped, reason);
  ReleaseEnded();
  KILN_ASSIGN_OR_RETURN(ExperimentRecord stored, store_.GetExperiment(id));
  return View(stored);
}

absl::StatusOr<ExperimentView> ExperimentController::Restart(const auth::Principal& who,
                                                             int64_t id) {
  KILN_ASSIGN_OR_RETURN(ExperimentRecord record, Access(who, id));
  if (record.state != ExperimentState::kStopped && record.state != ExperimentState::kFailed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "experiment ", id, " is ", store::ExperimentStateName(record.state),
        "; only a STOPPED or FAILED experiment can be restarted",
        record.state == ExperimentState::kFinished ? " (create a new one to search further)" : ""));
  }
  KILN_ASSIGN_OR_RETURN(base::Json json, base::ParseJson(record.spec_json));
  KILN_ASSIGN_OR_RETURN(ExperimentSpec spec, ExperimentSpecFromJson(json));
  KILN_ASSIGN_OR_RETURN(auto trials, store_.ListTrials(id));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Live> owned, Load(record, spec, std::move(trials)));
  Live& live = *owned;
  KILN_RETURN_IF_ERROR(jobs_.CheckSubmittable(live.owner, live.spec.trial));

  int64_t now = clock_.NowMicros();
  std::vector<int64_t> resubmit;
  for (TrialRow row : live.trials) {
    if (row.state != TrialState::kStopped) continue;
    row.state = TrialState::kRunning;
    row.reason.clear();
    row.finished_at.reset();
    row.job_id.reset();
    row.attempts = 0;
    KILN_RETURN_IF_ERROR(store_.PutTrial(row));
    SetTrial(live, row);
    resubmit.push_back(row.number);
  }
  live.record.state = ExperimentState::kRunning;
  live.record.reason.clear();
  live.record.started_at = now;
  live.record.finished_at.reset();
  KILN_RETURN_IF_ERROR(store_.UpdateExperiment(live.record));
  live_[id] = std::move(owned);
  for (int64_t n : resubmit) {
    if (live.record.state != ExperimentState::kRunning) break;
    absl::Status s = SubmitAttempt(live, n);
    if (!s.ok()) OnSubmitError(live, n, s);
  }
  absl::Status s = Pump(live);
  if (!s.ok()) spdlog::warn("experiment {}: {}", id, s.ToString());
  ReleaseEnded();
  KILN_ASSIGN_OR_RETURN(ExperimentRecord stored, store_.GetExperiment(id));
  return View(stored);
}

absl::Status ExperimentController::Delete(const auth::Principal& who, int64_t id) {
  KILN_ASSIGN_OR_RETURN(ExperimentRecord record, Access(who, id));
  if (IsUnfinished(record.state)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "experiment ", id, " is ", store::ExperimentStateName(record.state), "; stop it first"));
  }
  return store_.DeleteExperiment(id);
}

// ---------------------------------------------------------------- recovery

void ExperimentController::AdoptOrphanJob(Live& live, int64_t number) {
  TrialRow row = live.trials[number];
  std::vector<int64_t> known = JobIdsOf(row);
  std::string name = TrialJobName(live.record, number);
  std::string experiment = std::to_string(live.record.id);
  store::JobFilter filter;
  filter.user_id = live.record.user_id;
  filter.limit = 200;
  // Newest first, back to the trial's creation: the job, if any, was created after it.
  while (true) {
    auto jobs = store_.ListJobs(filter);
    if (!jobs.ok() || jobs->empty()) return;
    for (const store::JobRecord& job : *jobs) {
      if (job.created_at < row.created_at) return;
      if (job.name != name || std::find(known.begin(), known.end(), job.id) != known.end()) {
        continue;
      }
      auto spec = base::ParseJson(job.spec_json);
      if (!spec.ok() || !spec->contains("env") || !(*spec)["env"].is_object()) continue;
      const base::Json& env = (*spec)["env"];
      auto is = [&env](const char* key, const std::string& want) {
        return env.contains(key) && env[key].is_string() && env[key].get<std::string>() == want;
      };
      if (!is("KILN_EXPERIMENT_ID", experiment) || !is("SUBID", std::to_string(number))) {
        continue;
      }
      known.push_back(job.id);
      row.job_id = job.id;
      row.job_ids_json = base::DumpJson(base::Json(known));
      row.attempts += 1;
      if (!row.started_at) row.started_at = job.created_at;
      if (store_.PutTrial(row).ok()) {
        SetTrial(live, row);
        spdlog::info("experiment {} trial {}: adopted job {}", live.record.id, number, job.id);
      }
      return;
    }
    filter.before_id = jobs->back().id;
  }
}

absl::Status ExperimentController::Recover() {
  KILN_ASSIGN_OR_RETURN(auto records, store_.ListExperiments(std::nullopt));
  std::vector<int64_t> loaded;
  for (ExperimentRecord& record : records) {
    if (!IsUnfinished(record.state)) continue;
    int64_t id = record.id;
    auto json = base::ParseJson(record.spec_json);
    if (!json.ok())
      return absl::InternalError(absl::StrCat("experiment ", id, " has a corrupt spec"));
    auto spec = ExperimentSpecFromJson(*json);
    if (!spec.ok()) {
      return absl::InternalError(absl::StrCat("experiment ", id, ": ", spec.status().message()));
    }
    KILN_ASSIGN_OR_RETURN(auto trials, store_.ListTrials(id));
    auto live = Load(record, *spec, std::move(trials));
    if (!live.ok()) {
      // A spec this build cannot run (say, an algorithm parameter that was dropped) must
      // not keep the master from starting: the experiment fails with the reason.
      record.state = ExperimentState::kFailed;
      record.reason = absl::StrCat("cannot resume after a restart: ", live.status().message());
      record.finished_at = clock_.NowMicros();
      KILN_RETURN_IF_ERROR(store_.UpdateExperiment(record));
      continue;
    }
    live_[id] = std::move(*live);
    loaded.push_back(id);
  }
  // First match every trial without a job id to a job it may have submitted before the
  // crash, before any new job is submitted below.
  for (int64_t id : loaded) {
    Live& live = *live_[id];
    for (size_t n = 0; n < live.trials.size(); ++n) {
      if (live.trials[n].state == TrialState::kRunning && !live.trials[n].job_id) {
        AdoptOrphanJob(live, static_cast<int64_t>(n));
      }
    }
  }
  for (int64_t id : loaded) {
    Live& live = *live_[id];
    if (live.record.state == ExperimentState::kSubmitted) {
      live.record.state = ExperimentState::kRunning;
      live.record.started_at = clock_.NowMicros();
      KILN_RETURN_IF_ERROR(store_.UpdateExperiment(live.record));
    }
    int running = 0;
    for (size_t n = 0; n < live.trials.size(); ++n) {
      if (live.record.state != ExperimentState::kRunning) break;
      const TrialRow& row = live.trials[n];
      if (row.state != TrialState::kRunning) continue;
      ++running;
      if (!row.job_id) {
        absl::Status s = SubmitAttempt(live, static_cast<int64_t>(n));
        if (!s.ok()) OnSubmitError(live, static_cast<int64_t>(n), s);
        continue;
      }
      auto job = store_.GetJob(*row.job_id);
      if (!job.ok()) {
        spdlog::error("experiment {} trial {}: job {}: {}", id, n, *row.job_id,
                      job.status().ToString());
        continue;
      }
      job_to_trial_[job->id] = {id, static_cast<int64_t>(n)};
      // A job that ended while the master was down is accounted now.
      if (store::IsTerminal(job->state)) AccountJobEnd(live, static_cast<int64_t>(n), *job);
    }
    absl::Status s = Pump(live);
    if (!s.ok()) spdlog::warn("experiment {}: {}", id, s.ToString());
    spdlog::info("experiment {} ({}) resumed: {} trials, {} were running", id, live.record.name,
                 live.trials.size(), running);
  }
  ReleaseEnded();
  return absl::OkStatus();
}

}  // namespace kiln::master
