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
#include "kiln/master/experiment_spec.h"
#include "kiln/master/job_controller.h"
#include "kiln/store/store.h"

namespace kiln::master {

// An experiment with its trials, as read for the APIs.
struct ExperimentView {
  store::ExperimentRecord record;
  ExperimentSpec spec;
  std::vector<store::TrialRow> trials;
  std::optional<int64_t> best_trial;  // number of the best COMPLETE (or PRUNED) trial
  int running = 0, complete = 0, failed = 0, pruned = 0;
};

// Not thread-safe: every method runs on the master's loop.
class ExperimentController {
 public:
  ExperimentController(store::Store& store, JobController& jobs, const base::Clock& clock);
  ~ExperimentController();

  // Loads unfinished experiments after a (re)start and reconciles their trials with their
  // jobs (a job that ended while the master was down is accounted now). Call once, after
  // JobController::Recover and before serving.
  absl::Status Recover();

  // Validates `spec` (space, algorithm, objective, budget), stores the experiment and
  // starts its first trials. InvalidArgument naming the field and the fix; AlreadyExists
  // for a taken name; FailedPrecondition when no agent could ever run a trial.
  absl::StatusOr<ExperimentView> Create(const auth::Principal& who, ExperimentSpec spec);
  // NotFound also for experiments `who` may not see (owner or admin only).
  absl::StatusOr<ExperimentView> Get(const auth::Principal& who, int64_t id);
  absl::StatusOr<ExperimentView> GetByName(const auth::Principal& who, const std::string& name);
  absl::StatusOr<std::vector<ExperimentView>> List(const auth::Principal& who);
  // Stops an experiment: no new trials; running trials' jobs are killed and the trials
  // marked STOPPED. FailedPrecondition if it has already ended (message names its state).
  // `force` (WMLA's /force) also ends it when its jobs do not answer.
  absl::StatusOr<ExperimentView> Stop(const auth::Principal& who, int64_t id, bool force = false);
  // Resumes a STOPPED or FAILED experiment (WMLA /restart): STOPPED trials run again with
  // the same configuration; finished trials are kept. FailedPrecondition if running.
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
