#include "kiln/master/experiment_controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <deque>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "kiln/base/files.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/master/testing/controller_fixtures.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::store {
// Names states in failure messages instead of printing their bytes.
void PrintTo(TrialState state, std::ostream* os) { *os << TrialStateName(state); }
void PrintTo(ExperimentState state, std::ostream* os) { *os << ExperimentStateName(state); }
void PrintTo(JobState state, std::ostream* os);  // defined in job_controller_test.cc
}  // namespace kiln::store

namespace kiln::master {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Json = base::Json;
using store::ExperimentState;
using store::JobState;
using store::MetricPoint;
using store::TrialState;

constexpr int64_t kSecond = 1'000'000;

// ---------------------------------------------------------------- ReduceObjective

std::vector<MetricPoint> Points(std::vector<double> values, std::string group = "test") {
  std::vector<MetricPoint> out;
  for (size_t i = 0; i < values.size(); ++i) {
    out.push_back({"loss", group, static_cast<int64_t>(i + 1), values[i], 0});
  }
  return out;
}

TEST(ReduceObjectiveTest, ReducesByGoalAndReduction) {
  std::vector<MetricPoint> points = Points({0.5, 0.2, 0.9, 0.4});
  ObjectiveSpec o{"loss", ObjectiveGoal::kMinimize, ObjectiveReduce::kBest};
  EXPECT_EQ(ReduceObjective(points, o), 0.2);
  o.goal = ObjectiveGoal::kMaximize;
  EXPECT_EQ(ReduceObjective(points, o), 0.9);
  o.reduce = ObjectiveReduce::kLast;
  EXPECT_EQ(ReduceObjective(points, o), 0.4);
  o.goal = ObjectiveGoal::kMinimize;
  EXPECT_EQ(ReduceObjective(points, o), 0.4);
  EXPECT_EQ(ReduceObjective({}, o), std::nullopt);
}

TEST(ReduceObjectiveTest, ReadsTheValidationGroupWhenSeveralAreReported) {
  std::vector<MetricPoint> points = Points({0.1, 0.05}, "train");
  for (const MetricPoint& p : Points({0.7, 0.6})) points.push_back(p);
  ObjectiveSpec best{"loss", ObjectiveGoal::kMinimize, ObjectiveReduce::kBest};
  EXPECT_EQ(ReduceObjective(points, best), 0.6);
  // With only a training group, that is the objective.
  EXPECT_EQ(ReduceObjective(Points({0.3, 0.1}, "train"), best), 0.1);
}

TEST(ReduceObjectiveTest, TheLastPointStoredForAStepWins) {
  // emetrics first, then val_dict_list.json's rows for the same steps at the exit.
  std::vector<MetricPoint> points = {
      {"loss", "test", 1, 0.5, 0}, {"loss", "test", 2, 0.4, 0}, {"loss", "test", 2, 0.3, 0}};
  ObjectiveSpec last{"loss", ObjectiveGoal::kMinimize, ObjectiveReduce::kLast};
  EXPECT_EQ(ReduceObjective(points, last), 0.3);
}

// ---------------------------------------------------------------- the controller

using testing::Hello;

MetricPoint Loss(int64_t step, double value, std::string name = "loss") {
  return {std::move(name), "test", step, value, 1'700'000'000'000'000};
}

class ExperimentControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_experiment_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto opened = store::SqliteStore::Open(dir_ + "/kiln.db");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    authenticator_ = std::make_unique<auth::Authenticator>(*store_, clock_);
    alice_ = AddUser("alice", false);
    bob_ = AddUser("bob", false);
    admin_ = AddUser("root", true);
    RestartMaster();
    KILN_ASSERT_OK(jobs_->RegisterAgent(Hello("a", 4)));
  }

  void TearDown() override {
    experiments_.reset();
    jobs_.reset();
    store_.reset();
    (void)base::RemoveAll(dir_);
  }

  // What a restarted master builds over the same store: fresh controllers, recovered. The
  // agent is not registered with the new JobController until the test says so.
  void RestartMaster() {
    experiments_.reset();
    events_.clear();
    JobControllerOptions options;
    options.kill_grace_ms = 1000;
    jobs_ = std::make_unique<JobController>(*store_, *authenticator_, clock_, options);
    ASSERT_TRUE(jobs_->Recover().ok());
    // As master.cc does, the events are queued and delivered later (Drain), never from
    // inside the JobController call that fired them.
    jobs_->AddJobEndObserver([this](int64_t id) { events_.push_back({'e', id}); });
    jobs_->SetJobMetricsObserver([this](int64_t id) { events_.push_back({'m', id}); });
    experiments_ = std::make_unique<ExperimentController>(*store_, *jobs_, clock_);
    absl::Status s = experiments_->Recover();
    ASSERT_TRUE(s.ok()) << s;
  }

  void Drain() {
    while (!events_.empty()) {
      auto [kind, id] = events_.front();
      events_.pop_front();
      if (kind == 'e') {
        experiments_->OnJobEnded(id);
      } else {
        experiments_->OnJobMetrics(id);
      }
    }
  }

  auth::Principal AddUser(const std::string& name, bool admin) {
    return testing::AddUser(*store_, clock_.NowMicros(), name, admin);
  }

  static ExperimentSpec Spec(Json extra = Json::object()) {
    Json body = {{"name", "search"},
                 {"command", {"python3", "train.py"}},
                 {"config", {{"epochs", 2}}},
                 {"search_space", {{"lr", {{"type", "double"}, {"low", 0.001}, {"high", 0.1}}}}},
                 {"objective", {{"metric", "loss"}}},
                 {"max_trials", 3},
                 {"seed", 1}};
    body.update(extra);
    auto spec = ParseExperimentSpec(body);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : ExperimentSpec{};
  }

  int64_t Create(Json extra = Json::object()) {
    auto view = experiments_->Create(alice_, Spec(extra));
    EXPECT_TRUE(view.ok()) << view.status();
    Drain();
    return view.ok() ? view->record.id : 0;
  }

  ExperimentView View(int64_t id) {
    auto view = experiments_->Get(alice_, id);
    EXPECT_TRUE(view.ok()) << view.status();
    return view.ok() ? *view : ExperimentView{};
  }

  const store::TrialRow& Trial(const ExperimentView& view, size_t number) {
    static const store::TrialRow kNone;
    EXPECT_LT(number, view.trials.size());
    return number < view.trials.size() ? view.trials[number] : kNone;
  }

  store::JobRecord Job(int64_t job_id) {
    auto job = jobs_->GetJob(admin_, job_id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : store::JobRecord{};
  }

  // The job ids of the experiment's RUNNING trials, by trial number.
  std::vector<int64_t> RunningJobs(int64_t id) {
    std::vector<int64_t> out;
    for (const store::TrialRow& t : View(id).trials) {
      if (t.state == TrialState::kRunning && t.job_id) out.push_back(*t.job_id);
    }
    return out;
  }

  // The agent syncs: it launches what it is given and reports each task RUNNING, and
  // reports tasks it is told to kill as ended by SIGTERM.
  std::vector<api::TaskSpec> Sync(const std::string& agent = "a") {
    api::SyncRequest request;
    request.running.assign(running_.begin(), running_.end());
    auto reply = jobs_->SyncAgent(agent, request);
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok()) return {};
    for (const api::TaskSpec& task : reply->launch) {
      running_.insert(task.job_id);
      tasks_[task.job_id] = task;
      api::TaskReport r;
      r.job_id = task.job_id;
      r.phase = api::TaskPhase::kRunning;
      Apply(agent, r);
    }
    for (int64_t id : reply->kill) {
      api::TaskReport r;
      r.job_id = id;
      r.phase = api::TaskPhase::kExited;
      r.signal = 15;
      Apply(agent, r);
      running_.erase(id);
    }
    Drain();
    return reply->launch;
  }

  void Apply(const std::string& agent, const api::TaskReport& task) {
    api::AgentReport report;
    report.tasks.push_back(task);
    auto reply = jobs_->ApplyReport(agent, report);
    EXPECT_TRUE(reply.ok()) << reply.status();
  }

  // The task of `job_id` writes emetrics lines with `points`.
  void Report(int64_t job_id, std::vector<MetricPoint> points) {
    api::TaskReport r;
    r.job_id = job_id;
    r.phase = api::TaskPhase::kRunning;
    int64_t& offset = emetrics_offsets_[job_id];
    r.emetrics = api::OutputChunk{offset, offset + 10, {}, std::move(points)};
    offset += 10;
    Apply("a", r);
    Drain();
  }

  // The task of `job_id` exits with `code`, leaving `val_dict_list` rows.
  void Exit(int64_t job_id, int code, std::vector<MetricPoint> val_dict_list = {}) {
    api::TaskReport r;
    r.job_id = job_id;
    r.phase = api::TaskPhase::kExited;
    r.exit_code = code;
    r.final_metrics = std::move(val_dict_list);
    Apply("a", r);
    running_.erase(job_id);
    Drain();
  }

  // Runs every RUNNING trial of experiment `id` to its end with objective `value`, until
  // the experiment ends; returns the number of trials run.
  int RunToEnd(int64_t id, double value = 0.5) {
    int runs = 0;
    for (int guard = 0; guard < 100; ++guard) {
      Sync();
      std::vector<int64_t> running = RunningJobs(id);
      if (running.empty()) break;
      for (int64_t job : running) {
        Exit(job, 0, {Loss(1, value)});
        ++runs;
      }
    }
    return runs;
  }

  std::string dir_;
  base::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<JobController> jobs_;
  std::unique_ptr<ExperimentController> experiments_;
  auth::Principal alice_, bob_, admin_;
  std::deque<std::pair<char, int64_t>> events_;
  std::set<int64_t> running_;
  std::map<int64_t, api::TaskSpec> tasks_;
  std::map<int64_t, int64_t> emetrics_offsets_;
};

// ---------------------------------------------------------------- launching

TEST_F(ExperimentControllerTest, LaunchesTrialsUpToParallelismAsJobsOfTheOwner) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView created,
                            experiments_->Create(alice_, Spec({{"parallelism", 2}})));
  EXPECT_EQ(created.record.state, ExperimentState::kRunning);
  EXPECT_EQ(created.record.name, "search");
  EXPECT_EQ(created.record.username, "alice");
  EXPECT_EQ(created.record.started_at, clock_.NowMicros());
  ASSERT_THAT(created.trials, SizeIs(2));
  EXPECT_EQ(created.running, 2);
  EXPECT_EQ(created.spec.seed, 1u);

  std::vector<api::TaskSpec> launched = Sync();
  ASSERT_THAT(launched, SizeIs(2));
  for (int n = 0; n < 2; ++n) {
    const store::TrialRow& trial = created.trials[n];
    EXPECT_EQ(trial.number, n);
    EXPECT_EQ(trial.state, TrialState::kRunning);
    EXPECT_EQ(trial.attempts, 1);
    ASSERT_TRUE(trial.job_id.has_value());
    store::JobRecord job = Job(*trial.job_id);
    EXPECT_EQ(job.name, "search-trial-" + std::to_string(n));
    EXPECT_EQ(job.user_id, alice_.user_id);
    const api::TaskSpec& task = tasks_.at(*trial.job_id);
    EXPECT_EQ(task.env.at("SUBID"), std::to_string(n));
    EXPECT_EQ(task.env.at("KILN_EXPERIMENT_ID"), std::to_string(created.record.id));
    // config.json: the fixed values and the sampled ones, as the trial records them.
    EXPECT_EQ(task.config["epochs"], 2);
    double lr = task.config["lr"].get<double>();
    EXPECT_GE(lr, 0.001);
    EXPECT_LE(lr, 0.1);
    EXPECT_EQ(task.config, Json::parse(trial.config_json));
  }
  EXPECT_NE(created.trials[0].config_json, created.trials[1].config_json);
  // Alice sees the trials among her jobs.
  KILN_ASSERT_OK_AND_ASSIGN(auto jobs, jobs_->ListJobs(alice_, store::JobFilter{}));
  EXPECT_THAT(jobs, SizeIs(2));
}

TEST_F(ExperimentControllerTest, TheSameSeedProposesTheSameConfigurations) {
  int64_t first = Create({{"name", "one"}, {"parallelism", 3}});
  int64_t second = Create({{"name", "two"}, {"parallelism", 3}});
  ExperimentView a = View(first), b = View(second);
  ASSERT_THAT(a.trials, SizeIs(3));
  ASSERT_THAT(b.trials, SizeIs(3));
  for (int n = 0; n < 3; ++n) EXPECT_EQ(a.trials[n].params_json, b.trials[n].params_json);
}

TEST_F(ExperimentControllerTest, AGeneratedNameIsUserHpoDigitsAndTheSeedComesFromTheId) {
  ExperimentSpec spec = Spec();
  spec.name = "";
  spec.seed.reset();
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView view, experiments_->Create(alice_, spec));
  EXPECT_THAT(view.record.name, ::testing::MatchesRegex("alice-hpo-[0-9]+"));
  EXPECT_EQ(view.spec.seed, DeriveExperimentSeed(view.record.id));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView by_name,
                            experiments_->GetByName(alice_, view.record.name));
  EXPECT_EQ(by_name.record.id, view.record.id);
}

// ---------------------------------------------------------------- objective and ends

TEST_F(ExperimentControllerTest, CompletesTrialsFromTheirObjectiveAndFinishesAfterMaxTrials) {
  int64_t id = Create({{"objective", {{"metric", "loss"}, {"reduce", "best"}}}});
  const std::vector<double> finals = {0.4, 0.2, 0.3};
  for (int n = 0; n < 3; ++n) {
    Sync();
    std::vector<int64_t> running = RunningJobs(id);
    ASSERT_THAT(running, SizeIs(1)) << "trial " << n;
    // emetrics while it runs, then val_dict_list.json at the exit.
    Report(running[0], {Loss(1, 0.9)});
    Exit(running[0], 0, {Loss(1, 0.9), Loss(2, finals[n]), Loss(3, finals[n] + 0.1)});
  }
  ExperimentView view = View(id);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_EQ(view.record.finished_at, clock_.NowMicros());
  EXPECT_THAT(view.record.reason, HasSubstr("all 3 trials"));
  ASSERT_THAT(view.trials, SizeIs(3));
  for (int n = 0; n < 3; ++n) {
    EXPECT_EQ(view.trials[n].state, TrialState::kComplete);
    EXPECT_EQ(view.trials[n].value, finals[n]);
    EXPECT_EQ(Json::parse(view.trials[n].intermediate_json)["2"], finals[n]);
  }
  EXPECT_EQ(view.complete, 3);
  EXPECT_EQ(view.running, 0);
  EXPECT_EQ(view.best_trial, 1);
  EXPECT_THAT(RunningJobs(id), IsEmpty());
}

TEST_F(ExperimentControllerTest, MaximizeWithLastReadsTheFinalValueAndPicksTheHighest) {
  int64_t id =
      Create({{"max_trials", 2},
              {"objective", {{"metric", "acc"}, {"goal", "maximize"}, {"reduce", "last"}}}});
  const std::vector<double> last = {0.7, 0.8};
  for (int n = 0; n < 2; ++n) {
    Sync();
    std::vector<int64_t> running = RunningJobs(id);
    ASSERT_THAT(running, SizeIs(1));
    Exit(running[0], 0, {Loss(1, 0.95, "acc"), Loss(2, last[n], "acc")});
  }
  ExperimentView view = View(id);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_EQ(view.trials[0].value, 0.7);
  EXPECT_EQ(view.trials[1].value, 0.8);
  EXPECT_EQ(view.best_trial, 1);
}

TEST_F(ExperimentControllerTest, ATrialWithoutTheMetricFailsWithTheReasonAndTheSearchGoesOn) {
  int64_t id = Create({{"max_trials", 2}});
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.9, "acc"), Loss(1, 3, "val_acc")});
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 0).state, TrialState::kFailed);
  EXPECT_EQ(Trial(view, 0).reason,
            "the trial never reported metric \"loss\" (it reported: acc, val_acc)");
  EXPECT_EQ(view.record.state, ExperimentState::kRunning);
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.25)});
  view = View(id);
  EXPECT_EQ(Trial(view, 1).state, TrialState::kComplete);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_EQ(view.failed, 1);
  EXPECT_EQ(view.best_trial, 1);
}

TEST_F(ExperimentControllerTest, WhenNoTrialReportsTheMetricTheExperimentFails) {
  int64_t id = Create({{"max_trials", 1}});
  Sync();
  Exit(RunningJobs(id).at(0), 0);
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 0).reason,
            "the trial never reported metric \"loss\" (it reported no metrics)");
  EXPECT_EQ(view.record.state, ExperimentState::kFailed);
  EXPECT_THAT(view.record.reason, HasSubstr("no trial reported metric \"loss\""));
  EXPECT_THAT(view.record.reason, HasSubstr("trial 0: the trial never reported"));
  EXPECT_EQ(view.best_trial, std::nullopt);
}

TEST_F(ExperimentControllerTest, AFailedTrialIsRetriedWithTheSameConfigThenFailsWithTheJobsReason) {
  int64_t id = Create({{"max_trials", 1}, {"max_retries", 1}});
  Sync();
  int64_t first = RunningJobs(id).at(0);
  std::string config = View(id).trials[0].config_json;
  Exit(first, 2);
  ExperimentView view = View(id);
  ASSERT_THAT(view.trials, SizeIs(1));
  EXPECT_EQ(Trial(view, 0).state, TrialState::kRunning);
  EXPECT_EQ(Trial(view, 0).attempts, 2);
  ASSERT_TRUE(Trial(view, 0).job_id.has_value());
  int64_t second = *Trial(view, 0).job_id;
  EXPECT_NE(second, first);
  EXPECT_EQ(Trial(view, 0).config_json, config);
  EXPECT_EQ(Json::parse(Trial(view, 0).job_ids_json), Json({first, second}));
  Sync();
  EXPECT_EQ(tasks_.at(second).config, Json::parse(config));

  Exit(second, 2);
  view = View(id);
  EXPECT_EQ(Trial(view, 0).state, TrialState::kFailed);
  EXPECT_EQ(Trial(view, 0).reason, "exited with code 2 (2 attempts)");
  EXPECT_EQ(view.record.state, ExperimentState::kFailed);
}

TEST_F(ExperimentControllerTest, ARetriedTrialThatSucceedsCompletes) {
  int64_t id = Create({{"max_trials", 1}, {"max_retries", 2}});
  Sync();
  Exit(RunningJobs(id).at(0), 1);
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.125)});
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 0).state, TrialState::kComplete);
  EXPECT_EQ(Trial(view, 0).value, 0.125);
  EXPECT_EQ(Trial(view, 0).attempts, 2);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
}

TEST_F(ExperimentControllerTest, AnExhaustedGridFinishesTheExperiment) {
  int64_t id =
      Create({{"max_trials", -1},
              {"parallelism", 2},
              {"algorithm", "grid"},
              {"search_space",
               {{"opt", {{"type", "categorical"}, {"choices", {"sgd", "adam", "rms"}}}}}}});
  EXPECT_EQ(RunToEnd(id), 3);
  ExperimentView view = View(id);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_THAT(view.record.reason, HasSubstr("exhausted"));
  std::set<std::string> opts;
  for (const auto& t : view.trials) opts.insert(Json::parse(t.config_json)["opt"]);
  EXPECT_THAT(opts, ElementsAre("adam", "rms", "sgd"));
}

TEST_F(ExperimentControllerTest, HyperbandGivesEachTrialItsBudgetUnderTheResourceName) {
  int64_t id = Create(
      {{"max_trials", 4},
       {"parallelism", 4},
       {"algorithm",
        {{"name", "hyperband"}, {"params", {{"resource_name", "epochs"}, {"max_resource", 9}}}}}});
  ExperimentView view = View(id);
  ASSERT_FALSE(view.trials.empty());
  for (const auto& t : view.trials) {
    Json config = Json::parse(t.config_json);
    ASSERT_TRUE(config["epochs"].is_number_integer()) << t.config_json;
    EXPECT_EQ(config["epochs"].get<int64_t>(), t.budget);
    EXPECT_GE(t.budget, 1);
    EXPECT_LE(t.budget, 9);
  }
  RunToEnd(id);
  EXPECT_EQ(View(id).record.state, ExperimentState::kFinished);
}

TEST_F(ExperimentControllerTest, TheTimeBudgetStopsRunningTrialsAndEndsTheExperiment) {
  int64_t id = Create({{"max_trials", -1}, {"max_run_minutes", 1}});
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.5)});
  Sync();
  int64_t running = RunningJobs(id).at(0);
  clock_.AdvanceMicros(30 * kSecond);
  experiments_->Tick();
  EXPECT_EQ(View(id).record.state, ExperimentState::kRunning);
  clock_.AdvanceMicros(31 * kSecond);
  experiments_->Tick();
  Drain();
  ExperimentView view = View(id);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_THAT(view.record.reason, HasSubstr("time budget of 1 minutes"));
  EXPECT_EQ(Trial(view, 0).state, TrialState::kComplete);
  EXPECT_EQ(Trial(view, 1).state, TrialState::kStopped);
  EXPECT_THAT(Trial(view, 1).reason, HasSubstr("time budget"));
  EXPECT_TRUE(Job(running).kill_requested);
  Sync();  // the agent kills it
  EXPECT_EQ(Job(running).state, JobState::kKilled);
  EXPECT_EQ(View(id).trials.size(), 2u);
}

// ---------------------------------------------------------------- pruning

TEST_F(ExperimentControllerTest, APrunedTrialIsKilledAndKeepsItsIntermediateValue) {
  int64_t id = Create(
      {{"max_trials", 3},
       {"pruner", {{"name", "median"}, {"n_startup_trials", 1}, {"min_trials_at_step", 1}}}});
  Sync();
  int64_t first = RunningJobs(id).at(0);
  Report(first, {Loss(1, 0.3)});
  Report(first, {Loss(2, 0.2)});
  Exit(first, 0, {Loss(1, 0.3), Loss(2, 0.2)});
  EXPECT_EQ(View(id).trials[0].state, TrialState::kComplete);

  Sync();
  int64_t second = RunningJobs(id).at(0);
  Report(second, {Loss(1, 5.0)});
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 1).state, TrialState::kPruned);
  EXPECT_EQ(Trial(view, 1).value, 5.0);
  EXPECT_THAT(Trial(view, 1).reason, HasSubstr("median"));
  EXPECT_THAT(Trial(view, 1).reason, HasSubstr("step 1"));
  EXPECT_EQ(view.pruned, 1);
  EXPECT_TRUE(Job(second).kill_requested);
  // The search goes on with the next trial while the agent kills the pruned one.
  ASSERT_THAT(view.trials, SizeIs(3));
  EXPECT_EQ(Trial(view, 2).state, TrialState::kRunning);
  Sync();
  EXPECT_EQ(Job(second).state, JobState::kKilled);
  EXPECT_EQ(View(id).trials[1].state, TrialState::kPruned);
  EXPECT_EQ(View(id).best_trial, 0);
}

TEST_F(ExperimentControllerTest, TickPrunesFromReportsStoredWhileNoEventCame) {
  int64_t id = Create(
      {{"max_trials", 2},
       {"pruner", {{"name", "median"}, {"n_startup_trials", 1}, {"min_trials_at_step", 1}}}});
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.3)});
  Sync();
  int64_t second = RunningJobs(id).at(0);
  Report(second, {Loss(1, 9.0)});
  // Had the event been lost, Tick finds the report; here it was already judged.
  EXPECT_EQ(View(id).trials[1].state, TrialState::kPruned);
  experiments_->Tick();
  EXPECT_EQ(View(id).trials[1].state, TrialState::kPruned);
}

// ---------------------------------------------------------------- stop, restart, delete

TEST_F(ExperimentControllerTest, StopKillsRunningTrialsAndRestartRunsThemAgainWithTheSameConfig) {
  int64_t id = Create({{"max_trials", 4}, {"parallelism", 2}});
  Sync();
  std::vector<int64_t> before = RunningJobs(id);
  ASSERT_THAT(before, SizeIs(2));
  Exit(before[0], 0, {Loss(1, 0.5)});
  Sync();
  ExperimentView running = View(id);
  ASSERT_THAT(running.trials, SizeIs(3));

  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView stopped, experiments_->Stop(alice_, id));
  Drain();
  EXPECT_EQ(stopped.record.state, ExperimentState::kStopped);
  EXPECT_EQ(stopped.record.reason, "stopped by alice");
  EXPECT_EQ(stopped.trials[0].state, TrialState::kComplete);
  EXPECT_EQ(stopped.trials[1].state, TrialState::kStopped);
  EXPECT_EQ(stopped.trials[2].state, TrialState::kStopped);
  EXPECT_EQ(stopped.stopped, 2);
  EXPECT_TRUE(Job(before[1]).kill_requested);
  Sync();
  EXPECT_EQ(Job(before[1]).state, JobState::kKilled);
  EXPECT_EQ(View(id).record.state, ExperimentState::kStopped);
  EXPECT_THAT(experiments_->Stop(alice_, id), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                       HasSubstr("already ended (STOPPED)")));

  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView restarted, experiments_->Restart(alice_, id));
  Drain();
  EXPECT_EQ(restarted.record.state, ExperimentState::kRunning);
  EXPECT_EQ(restarted.record.reason, "");
  ASSERT_THAT(restarted.trials, SizeIs(3));
  EXPECT_EQ(restarted.trials[0].state, TrialState::kComplete);
  for (int n : {1, 2}) {
    EXPECT_EQ(restarted.trials[n].state, TrialState::kRunning);
    EXPECT_EQ(restarted.trials[n].config_json, running.trials[n].config_json);
    EXPECT_NE(restarted.trials[n].job_id, running.trials[n].job_id);
    EXPECT_THAT(Json::parse(restarted.trials[n].job_ids_json), SizeIs(2));
  }
  EXPECT_THAT(experiments_->Restart(alice_, id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is RUNNING")));
  RunToEnd(id);
  ExperimentView done = View(id);
  EXPECT_EQ(done.record.state, ExperimentState::kFinished);
  EXPECT_THAT(done.trials, SizeIs(4));
  EXPECT_EQ(done.complete, 4);
}

TEST_F(ExperimentControllerTest, DeleteNeedsAnEndedExperimentAndRemovesItsTrials) {
  int64_t id = Create();
  EXPECT_THAT(experiments_->Delete(alice_, id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("stop it first")));
  KILN_ASSERT_OK(experiments_->Stop(alice_, id).status());
  KILN_ASSERT_OK(experiments_->Delete(alice_, id));
  EXPECT_THAT(experiments_->Get(alice_, id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no experiment")));
  KILN_ASSERT_OK_AND_ASSIGN(auto trials, store_->ListTrials(id));
  EXPECT_THAT(trials, IsEmpty());
}

TEST_F(ExperimentControllerTest, OnlyTheOwnerAndAdminsSeeOrChangeAnExperiment) {
  int64_t id = Create();
  EXPECT_THAT(experiments_->Get(bob_, id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no experiment")));
  EXPECT_THAT(experiments_->GetByName(bob_, "search"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no experiment")));
  EXPECT_THAT(experiments_->Stop(bob_, id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no experiment")));
  EXPECT_THAT(experiments_->Delete(bob_, id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no experiment")));
  KILN_ASSERT_OK_AND_ASSIGN(auto bobs, experiments_->List(bob_));
  EXPECT_THAT(bobs, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(auto all, experiments_->List(admin_));
  ASSERT_THAT(all, SizeIs(1));
  EXPECT_EQ(all[0].record.username, "alice");
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentView by_admin, experiments_->Stop(admin_, id));
  EXPECT_EQ(by_admin.record.reason, "stopped by root");
}

// ---------------------------------------------------------------- refusals

TEST_F(ExperimentControllerTest, ADuplicateNameIsAlreadyExists) {
  Create();
  EXPECT_THAT(experiments_->Create(bob_, Spec()),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"search\" already exists")));
  KILN_ASSERT_OK_AND_ASSIGN(auto all, experiments_->List(admin_));
  EXPECT_THAT(all, SizeIs(1));
}

TEST_F(ExperimentControllerTest, UnschedulableTrialsAreRefusedAndNothingIsStored) {
  EXPECT_THAT(experiments_->Create(alice_, Spec({{"resources", {{"gpus", 1}}}})),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no agent can ever run")));
  KILN_ASSERT_OK_AND_ASSIGN(auto all, store_->ListExperiments(std::nullopt));
  EXPECT_THAT(all, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs(store::JobFilter{}));
  EXPECT_THAT(jobs, IsEmpty());
}

TEST_F(ExperimentControllerTest, BadSpacesAlgorithmsAndBudgetsAreRefused) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(experiments_->Create(alice_, Spec({{"algorithm", "annealing"}})),
              StatusIs(kInvalid, HasSubstr("annealing")));
  EXPECT_THAT(
      experiments_->Create(
          alice_,
          Spec({{"search_space", {{"lr", {{"type", "double"}, {"low", 1}, {"high", 0}}}}}})),
      StatusIs(kInvalid, HasSubstr("lr")));
  EXPECT_THAT(experiments_->Create(alice_, Spec({{"search_space", Json::object()}})),
              StatusIs(kInvalid, HasSubstr("search_space")));
  EXPECT_THAT(experiments_->Create(alice_, Spec({{"pruner", "sometimes"}})),
              StatusIs(kInvalid, HasSubstr("sometimes")));
  ExperimentSpec spec = Spec();
  spec.parallelism = 0;
  EXPECT_THAT(experiments_->Create(alice_, spec), StatusIs(kInvalid, HasSubstr("parallelism")));
  KILN_ASSERT_OK_AND_ASSIGN(auto all, store_->ListExperiments(std::nullopt));
  EXPECT_THAT(all, IsEmpty());
}

// ---------------------------------------------------------------- master restarts

TEST_F(ExperimentControllerTest, ARestartedMasterLosesNoTrialAndContinuesTheSearch) {
  int64_t id = Create({{"max_trials", 5}, {"parallelism", 2}});
  Sync();
  std::vector<int64_t> jobs = RunningJobs(id);
  ASSERT_THAT(jobs, SizeIs(2));
  Exit(jobs[0], 0, {Loss(1, 0.5)});
  Sync();
  ExperimentView before = View(id);
  ASSERT_THAT(before.trials, SizeIs(3));

  RestartMaster();
  // The agent comes back holding the tasks it runs.
  KILN_ASSERT_OK(jobs_->RegisterAgent(Hello("a", 4, {running_.begin(), running_.end()})));
  ExperimentView after = View(id);
  EXPECT_EQ(after.record.state, ExperimentState::kRunning);
  ASSERT_THAT(after.trials, SizeIs(3));
  for (int n = 0; n < 3; ++n) {
    EXPECT_EQ(after.trials[n].state, before.trials[n].state);
    EXPECT_EQ(after.trials[n].job_id, before.trials[n].job_id);
    EXPECT_EQ(after.trials[n].params_json, before.trials[n].params_json);
  }
  EXPECT_EQ(after.trials[0].value, 0.5);
  // No job was submitted twice.
  KILN_ASSERT_OK_AND_ASSIGN(auto all_jobs, store_->ListJobs(store::JobFilter{}));
  EXPECT_THAT(all_jobs, SizeIs(3));

  EXPECT_EQ(RunToEnd(id), 4);
  ExperimentView done = View(id);
  EXPECT_EQ(done.record.state, ExperimentState::kFinished);
  EXPECT_THAT(done.trials, SizeIs(5));
  EXPECT_EQ(done.complete, 5);
  KILN_ASSERT_OK_AND_ASSIGN(all_jobs, store_->ListJobs(store::JobFilter{}));
  EXPECT_THAT(all_jobs, SizeIs(5));
}

TEST_F(ExperimentControllerTest, ARestartedSearchProposesWhatTheFirstWouldHave) {
  // Reference: the same search without a restart.
  int64_t reference = Create({{"name", "reference"}, {"algorithm", "tpe"}, {"max_trials", 4}});
  RunToEnd(reference);
  int64_t id = Create({{"name", "restarted"}, {"algorithm", "tpe"}, {"max_trials", 4}});
  Sync();
  Exit(RunningJobs(id).at(0), 0, {Loss(1, 0.5)});
  RestartMaster();
  KILN_ASSERT_OK(jobs_->RegisterAgent(Hello("a", 4, {running_.begin(), running_.end()})));
  RunToEnd(id);
  ExperimentView a = View(reference), b = View(id);
  ASSERT_THAT(a.trials, SizeIs(4));
  ASSERT_THAT(b.trials, SizeIs(4));
  for (int n = 0; n < 4; ++n) EXPECT_EQ(a.trials[n].params_json, b.trials[n].params_json) << n;
}

TEST_F(ExperimentControllerTest, AJobThatEndedWhileTheMasterWasDownIsAccountedAtRecovery) {
  int64_t id = Create({{"max_trials", 2}});
  Sync();
  int64_t job = RunningJobs(id).at(0);
  // The job ends, but the master stops before the driver hears of it.
  api::TaskReport r;
  r.job_id = job;
  r.phase = api::TaskPhase::kExited;
  r.exit_code = 0;
  r.final_metrics = {Loss(1, 0.75)};
  Apply("a", r);
  running_.erase(job);
  RestartMaster();
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 0).state, TrialState::kComplete);
  EXPECT_EQ(Trial(view, 0).value, 0.75);
  ASSERT_THAT(view.trials, SizeIs(2));
  EXPECT_EQ(Trial(view, 1).state, TrialState::kRunning);
}

TEST_F(ExperimentControllerTest, RecoveryAdoptsAJobWhoseIdWasNeverWrittenToItsTrial) {
  int64_t id = Create({{"max_trials", 1}});
  // A crash between the job's submission and the trial's update leaves this row.
  store::TrialRow row = View(id).trials.at(0);
  int64_t job = *row.job_id;
  row.job_id.reset();
  row.job_ids_json = "[]";
  row.attempts = 0;
  KILN_ASSERT_OK(store_->PutTrial(row));

  RestartMaster();
  ExperimentView view = View(id);
  EXPECT_EQ(Trial(view, 0).job_id, job);
  EXPECT_EQ(Trial(view, 0).attempts, 1);
  KILN_ASSERT_OK_AND_ASSIGN(auto all_jobs, store_->ListJobs(store::JobFilter{}));
  EXPECT_THAT(all_jobs, SizeIs(1));
  KILN_ASSERT_OK(jobs_->RegisterAgent(Hello("a", 4)));
  Sync();
  Exit(job, 0, {Loss(1, 0.5)});
  EXPECT_EQ(View(id).record.state, ExperimentState::kFinished);
}

TEST_F(ExperimentControllerTest, RecoverySubmitsARunningTrialThatHasNoJob) {
  int64_t id = Create({{"max_trials", 2}, {"parallelism", 2}});
  // Trial 1 was written, but the master stopped before its job was submitted: here its
  // job is removed from the record and the trial dated after it, so no job matches.
  clock_.AdvanceMicros(kSecond);
  store::TrialRow row = View(id).trials.at(1);
  int64_t old_job = *row.job_id;
  row.job_id.reset();
  row.job_ids_json = "[]";
  row.attempts = 0;
  row.created_at = clock_.NowMicros();
  KILN_ASSERT_OK(store_->PutTrial(row));
  RestartMaster();
  ExperimentView view = View(id);
  ASSERT_TRUE(Trial(view, 1).job_id.has_value());
  EXPECT_NE(*Trial(view, 1).job_id, old_job);
  EXPECT_EQ(Trial(view, 1).attempts, 1);
  EXPECT_EQ(Job(*Trial(view, 1).job_id).name, "search-trial-1");
}

TEST_F(ExperimentControllerTest, AnEndedExperimentStaysEndedAfterARestart) {
  int64_t id = Create({{"max_trials", 1}});
  RunToEnd(id);
  RestartMaster();
  ExperimentView view = View(id);
  EXPECT_EQ(view.record.state, ExperimentState::kFinished);
  EXPECT_THAT(view.trials, SizeIs(1));
}

}  // namespace
}  // namespace kiln::master
