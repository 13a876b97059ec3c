// experiment_controller.h
//
// `ExperimentController` drives hyperparameter searches: it asks the experiment's sampler
// for configurations, runs each as an ordinary job (through `JobController`) whose
// config.json holds the configuration, reads the objective from the metrics the job
// reported when it ends, retries failed trials, stops losing trials early when a pruner
// says so, and ends the experiment when its budget (trials, time) or its space is spent.
// Every step is written to the `Store` first, so a master restart loses no finished
// trial and the search resumes where it was (samplers are rebuilt from the stored trials).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/hpo/sampler.h"
#include "kiln/master/experiment_spec.h"
#include "kiln/master/job_controller.h"
#include "kiln/store/store.h"

namespace kiln::master {

// An experiment with its trials, as read for the APIs.
struct ExperimentView {
  store::ExperimentRecord record;
  ExperimentSpec spec;
  std::vector<store::TrialRow> trials;
  // The best COMPLETE trial by the objective's goal (the lowest number among equals); a
  // PRUNED one only when no trial is COMPLETE. nullopt when there is none.
  std::optional<int64_t> best_trial;
  int running = 0, complete = 0, failed = 0, pruned = 0, stopped = 0;
};

// Trials are jobs of the experiment's owner (see experiment_spec.h for their names,
// config.json and environment). Trial states are written before the job they describe is
// submitted or killed, so after a crash a RUNNING trial without a job is submitted again
// (or adopts the job it had already submitted), and one whose job ended meanwhile is
// accounted at Recover.
//
// Ends: an experiment FINISHES when its max_trials were asked for, its sampler is
// exhausted or its time budget is spent, and no trial runs; it FAILS instead when no
// trial ended COMPLETE or PRUNED (every trial failed, or none reported the metric), or
// when its trials cannot be scheduled any more (the reason says why).
//
// Not thread-safe: every method runs on the master's loop. Borrows the store, the job
// controller and the clock, which must outlive it.
class ExperimentController {
 public:
  ExperimentController(store::Store& store, JobController& jobs, const base::Clock& clock);
  ~ExperimentController();

  // Loads unfinished experiments after a (re)start and reconciles their trials with their
  // jobs (a job that ended while the master was down is accounted now). Call once, after
  // JobController::Recover and before serving.
  absl::Status Recover();

  // Validates `spec` (ValidateExperimentSpec, the space, the algorithm with its pruner),
  // stores the experiment and starts its first trials. InvalidArgument naming the field
  // and the fix; AlreadyExists for a taken name; FailedPrecondition when no agent could
  // ever run a trial; NotFound for an unknown package; PermissionDenied for a task token.
  // Nothing is stored when it fails. An empty name is generated as "<user>-hpo-<digits>".
  absl::StatusOr<ExperimentView> Create(const auth::Principal& who, ExperimentSpec spec);
  // NotFound also for experiments `who` may not see (owner or admin only).
  absl::StatusOr<ExperimentView> Get(const auth::Principal& who, int64_t id);
  absl::StatusOr<ExperimentView> GetByName(const auth::Principal& who, const std::string& name);
  absl::StatusOr<std::vector<ExperimentView>> List(const auth::Principal& who);
  // Stops an experiment: no new trials; running trials' jobs are killed and the trials
  // marked STOPPED (a trial whose job had already finished is accounted instead). The
  // experiment is STOPPED at once, with reason "stopped by <user>"; the jobs end as their
  // agents kill them. FailedPrecondition if it has already ended (message names its
  // state). Without `force` a kill that fails (other than on an already ended job: in
  // practice a store error) is returned and the experiment stays RUNNING, with the trials
  // handled before it STOPPED; `force` (WMLA's /force) stops it anyway.
  absl::StatusOr<ExperimentView> Stop(const auth::Principal& who, int64_t id, bool force = false);
  // Resumes a STOPPED or FAILED experiment (WMLA /restart): STOPPED trials run again with
  // the same configuration (their attempts count anew); finished trials are kept; the time
  // budget counts from now. FailedPrecondition if it runs or has FINISHED, or when its
  // trials could not be scheduled now (nothing changes then).
  absl::StatusOr<ExperimentView> Restart(const auth::Principal& who, int64_t id);
  // Deletes a finished experiment and its trials (not the trials' jobs). FailedPrecondition
  // while it runs ("stop it first").
  absl::Status Delete(const auth::Principal& who, int64_t id);

  // Driving. OnJobEnded: a job ended (called from JobController's end observer, after the
  // state is stored; the caller posts it to the loop so it is not re-entrant).
  // OnJobMetrics: a trial job reported new metric points (pruning checks). Tick: about
  // once a second (time budgets, retries, pruning of trials whose reports came in bulk).
  void OnJobEnded(int64_t job_id);
  void OnJobMetrics(int64_t job_id);
  void Tick();

 private:
  struct Live;  // an unfinished experiment: its spec, space, algorithm and trials

  // Builds the in-memory side of a stored experiment (space, algorithm, trial history).
  absl::StatusOr<std::unique_ptr<Live>> Load(store::ExperimentRecord record, ExperimentSpec spec,
                                             std::vector<store::TrialRow> trials);
  // The experiment if `who` may see it (owner or admin), else NotFound.
  absl::StatusOr<store::ExperimentRecord> Access(const auth::Principal& who, int64_t id);
  absl::StatusOr<ExperimentView> View(const store::ExperimentRecord& record);
  ExperimentView ViewOf(const Live& live) const;

  // Asks the sampler for trials while there is room and budget, and ends the experiment
  // when nothing runs and nothing more can be asked. Non-OK when a trial could not be
  // submitted (FailedPrecondition: unschedulable, the experiment has failed).
  absl::Status Pump(Live& live);
  absl::Status LaunchTrial(Live& live, const hpo::Suggestion& suggestion);
  // Submits the trial's next attempt: writes the trial (no job yet), submits, writes the
  // job id.
  absl::Status SubmitAttempt(Live& live, int64_t number);
  // Handles Submit's error for a trial: an unschedulable trial is STOPPED and fails the
  // experiment; other errors leave the trial for Tick to submit again.
  void OnSubmitError(Live& live, int64_t number, const absl::Status& status);
  // Accounts a trial whose job has ended (COMPLETE, retry or FAILED).
  void AccountJobEnd(Live& live, int64_t number, const store::JobRecord& job);
  void CheckPrune(Live& live, int64_t number);
  // Finds a job submitted for a RUNNING trial whose id was never written (a crash between
  // Submit and the trial's update), so it is adopted instead of run twice.
  void AdoptOrphanJob(Live& live, int64_t number);
  bool TimeBudgetSpent(const Live& live) const;
  // Ends the experiment: running trials are killed and STOPPED with `reason`.
  void End(Live& live, store::ExperimentState state, std::string reason);
  // Ends it FINISHED, or FAILED when no trial completed, after the last trial.
  void Complete(Live& live, const std::string& why);
  void SetTrial(Live& live, const store::TrialRow& row);
  // Drops ended experiments from memory (outside any use of them).
  void ReleaseEnded();

  std::map<int64_t, std::unique_ptr<Live>> live_;
  std::map<int64_t, std::pair<int64_t, int64_t>> job_to_trial_;  // job -> (experiment, number)
  store::Store& store_;
  JobController& jobs_;
  const base::Clock& clock_;
};

// The objective of a trial from the points of its metric (ordered by step): nullopt when
// there are none. Exposed for tests and the WMLA `metricVal`.
std::optional<double> ReduceObjective(const std::vector<store::MetricPoint>& points,
                                      const ObjectiveSpec& objective);

}  // namespace kiln::master
