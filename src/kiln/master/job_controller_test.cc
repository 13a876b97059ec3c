#include "kiln/master/job_controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/master/testing/controller_fixtures.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::store {
// Names states in failure messages instead of printing their bytes.
void PrintTo(JobState state, std::ostream* os) { *os << JobStateName(state); }
}  // namespace kiln::store

namespace kiln::master {
namespace {

using ::testing::_;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using Json = base::Json;
using store::JobState;

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kAgentTimeout = 60 * kSecond;

using testing::Hello;

api::SyncRequest Running(std::vector<int64_t> ids = {}) {
  api::SyncRequest request;
  request.running = std::move(ids);
  return request;
}

api::TaskReport Phase(int64_t job_id, api::TaskPhase phase) {
  api::TaskReport r;
  r.job_id = job_id;
  r.phase = phase;
  return r;
}

api::TaskReport Exited(int64_t job_id, std::optional<int> code, std::optional<int> signal = {}) {
  api::TaskReport r = Phase(job_id, api::TaskPhase::kExited);
  r.exit_code = code;
  r.signal = signal;
  return r;
}

// A log chunk of `lines` covering bytes [from, to) of the task's output file.
api::OutputChunk LogChunk(int64_t from, int64_t to, std::vector<std::string> lines) {
  api::OutputChunk chunk;
  chunk.from = from;
  chunk.to = to;
  for (std::string& text : lines) chunk.lines.push_back({0, 1, 'o', std::move(text)});
  return chunk;
}

api::AgentReport Report(api::TaskReport task) {
  api::AgentReport report;
  report.tasks.push_back(std::move(task));
  return report;
}

std::vector<std::string> Texts(const std::vector<store::LogLine>& lines) {
  std::vector<std::string> out;
  for (const auto& l : lines) out.push_back(l.text);
  return out;
}

class JobControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    authenticator_ = std::make_unique<auth::Authenticator>(*store_, clock_);
    alice_ = AddUser("alice", false);
    bob_ = AddUser("bob", false);
    admin_ = AddUser("root", true);
    controller_ = NewController();
  }

  // A controller over the same store: what a restarted master builds.
  std::unique_ptr<JobController> NewController() {
    JobControllerOptions options;
    options.agent_timeout_micros = kAgentTimeout;
    options.kill_grace_ms = 5000;
    auto c = std::make_unique<JobController>(*store_, *authenticator_, clock_, options);
    c->SetObservers([this](const std::string& agent) { agent_work_.push_back(agent); },
                    [this](int64_t job) { job_output_.push_back(job); });
    return c;
  }

  auth::Principal AddUser(const std::string& name, bool admin) {
    return testing::AddUser(*store_, clock_.NowMicros(), name, admin);
  }

  static JobSpec Spec(int slots = 1, Json extra = Json::object()) {
    Json body = {{"command", {"python3", "train.py"}}, {"resources", {{"slots", slots}}}};
    body.update(extra);
    auto spec = ParseJobSpec(body);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : JobSpec{};
  }

  int64_t Submit(const auth::Principal& who, int slots = 1) {
    auto job = controller_->Submit(who, Spec(slots));
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id : 0;
  }

  JobState StateOf(int64_t job_id) {
    auto job = controller_->GetJob(admin_, job_id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->state : JobState::kQueued;
  }

  store::JobRecord Job(int64_t job_id) {
    auto job = controller_->GetJob(admin_, job_id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : store::JobRecord{};
  }

  api::TaskAck Apply(const std::string& agent, api::TaskReport task) {
    int64_t id = task.job_id;
    auto reply = controller_->ApplyReport(agent, Report(std::move(task)));
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok() || !reply->tasks.count(id)) {
      ADD_FAILURE() << "no ack for job " << id;
      return {};
    }
    return reply->tasks.at(id);
  }

  // Registers `agent`, submits a 1-slot job of alice and reports it RUNNING there.
  int64_t StartJobOn(const std::string& agent, int slots = 2) {
    EXPECT_TRUE(controller_->RegisterAgent(Hello(agent, slots)).ok());
    int64_t id = Submit(alice_);
    auto sync = controller_->SyncAgent(agent, Running());
    EXPECT_TRUE(sync.ok()) << sync.status();
    Apply(agent, Phase(id, api::TaskPhase::kRunning));
    EXPECT_EQ(StateOf(id), JobState::kRunning);
    return id;
  }

  base::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<JobController> controller_;
  auth::Principal alice_, bob_, admin_;
  std::vector<std::string> agent_work_;
  std::vector<int64_t> job_output_;
};

// ---------------------------------------------------------------- submission and launch

TEST_F(JobControllerTest, SubmittedJobWaitsInTheQueueWhileNoAgentIsRegistered) {
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->Submit(alice_, Spec()));
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.user_id, alice_.user_id);
  EXPECT_EQ(job.username, "alice");
  EXPECT_EQ(job.name, "python3");
  EXPECT_EQ(job.agent_id, "");
  EXPECT_EQ(job.created_at, clock_.NowMicros());
  EXPECT_EQ(StateOf(job.id), JobState::kQueued);
}

TEST_F(JobControllerTest, RegisteringAnAgentSchedulesTheQueuedJobOnIt) {
  int64_t id = Submit(alice_);
  clock_.AdvanceMicros(kSecond);
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_EQ(job.agent_id, "a");
  EXPECT_EQ(job.scheduled_at, clock_.NowMicros());
  // The state is stored, not only held in memory.
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord stored, store_->GetJob(id));
  EXPECT_EQ(stored.state, JobState::kScheduled);
  KILN_ASSERT_OK_AND_ASSIGN(auto events, store_->ListEvents(id));
  EXPECT_THAT(events, Contains(Field(&store::EventRecord::message, HasSubstr("SCHEDULED on a"))));
}

TEST_F(JobControllerTest, SubmittingToARegisteredAgentSchedulesAtOnce) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->Submit(alice_, Spec()));
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_EQ(job.agent_id, "a");
}

TEST_F(JobControllerTest, SyncLaunchesAScheduledJobWithItsTaskTokenAndJobId) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  KILN_ASSERT_OK_AND_ASSIGN(
      store::JobRecord job,
      controller_->Submit(
          alice_, Spec(2, {{"env", {{"OMP_NUM_THREADS", "2"}}}, {"config", {{"lr", 0.1}}}})));
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running()));
  ASSERT_THAT(reply.launch, SizeIs(1));
  const api::TaskSpec& task = reply.launch[0];
  EXPECT_EQ(task.job_id, job.id);
  EXPECT_THAT(task.command, ElementsAre("python3", "train.py"));
  EXPECT_EQ(task.slots, 2);
  EXPECT_EQ(task.config, Json({{"lr", 0.1}}));
  EXPECT_EQ(task.env.at("OMP_NUM_THREADS"), "2");
  EXPECT_EQ(task.env.at("KILN_JOB_ID"), std::to_string(job.id));
  ASSERT_TRUE(task.env.count("KILN_TOKEN"));
  EXPECT_THAT(task.env.at("KILN_TOKEN"), Not(IsEmpty()));
  EXPECT_THAT(reply.kill, IsEmpty());
  EXPECT_EQ(reply.grace_ms, 5000);

  // The token authenticates as a task of exactly this job.
  KILN_ASSERT_OK_AND_ASSIGN(auth::Principal task_principal,
                            authenticator_->AuthenticateToken(task.env.at("KILN_TOKEN")));
  EXPECT_EQ(task_principal.kind, auth::Principal::Kind::kTask);
  EXPECT_EQ(task_principal.job_id, job.id);
}

TEST_F(JobControllerTest, SyncDoesNotRelaunchAJobTheAgentAlreadyRuns) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply first, controller_->SyncAgent("a", Running()));
  ASSERT_THAT(first.launch, SizeIs(1));
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply second, controller_->SyncAgent("a", Running({id})));
  EXPECT_THAT(second.launch, IsEmpty());
  EXPECT_THAT(second.kill, IsEmpty());
}

TEST_F(JobControllerTest, SyncOfAnAgentThatHasNotRegisteredIsNotFound) {
  EXPECT_THAT(controller_->SyncAgent("ghost", Running()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("register first")));
  EXPECT_THAT(controller_->ApplyReport("ghost", api::AgentReport{}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("register first")));
}

TEST_F(JobControllerTest, SyncTellsAnAgentToKillATaskThatIsNotItsJob) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running({999})));
  EXPECT_THAT(reply.kill, ElementsAre(999));
}

// ---------------------------------------------------------------- reports

TEST_F(JobControllerTest, RunningReportMovesTheJobToRunningWithItsStartTime) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK(controller_->SyncAgent("a", Running()));
  api::TaskReport running = Phase(id, api::TaskPhase::kRunning);
  running.started_at = clock_.NowMicros() + 123;
  api::TaskAck ack = Apply("a", running);
  EXPECT_FALSE(ack.done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.started_at, clock_.NowMicros() + 123);
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord stored, store_->GetJob(id));
  EXPECT_EQ(stored.state, JobState::kRunning);
}

TEST_F(JobControllerTest, OutputLinesAndEmetricsPointsAreStoredAndServedByGetLogs) {
  int64_t id = StartJobOn("a");
  api::TaskReport report = Phase(id, api::TaskPhase::kRunning);
  report.log = LogChunk(0, 40, {"epoch 1", "epoch 2"});
  report.emetrics = api::OutputChunk{0, 25, {}, {{"loss", "test", 1, 0.5, 7}}};
  api::TaskAck ack = Apply("a", report);
  EXPECT_EQ(ack.offsets.log, 40);
  EXPECT_EQ(ack.offsets.emetrics, 25);

  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("epoch 1", "epoch 2"));
  EXPECT_EQ(page.lines[0].seq, 1);
  EXPECT_EQ(page.next, 2);
  EXPECT_FALSE(page.done);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage rest, controller_->GetLogs(alice_, id, page.next, 100));
  EXPECT_THAT(rest.lines, IsEmpty());
  EXPECT_EQ(rest.next, 2);

  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(id, std::nullopt));
  ASSERT_THAT(points, SizeIs(1));
  EXPECT_EQ(points[0].name, "loss");
  EXPECT_EQ(points[0].value, 0.5);
}

TEST_F(JobControllerTest, AResentChunkIsStoredOnceAndTheAckCarriesTheMastersOffsets) {
  int64_t id = StartJobOn("a");
  api::TaskReport report = Phase(id, api::TaskPhase::kRunning);
  report.log = LogChunk(0, 10, {"once"});
  EXPECT_EQ(Apply("a", report).offsets.log, 10);
  // The agent did not see the ack (say, a timeout) and sends the same chunk again.
  api::TaskAck ack = Apply("a", report);
  EXPECT_EQ(ack.offsets.log, 10);
  EXPECT_FALSE(ack.done);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("once"));

  // The next chunk, from the acked offset, is stored.
  report.log = LogChunk(10, 20, {"twice"});
  EXPECT_EQ(Apply("a", report).offsets.log, 20);
  KILN_ASSERT_OK_AND_ASSIGN(page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("once", "twice"));
}

TEST_F(JobControllerTest, ExitCodeZeroFinishesTheJob) {
  int64_t id = StartJobOn("a");
  api::TaskReport exited = Exited(id, 0);
  exited.finished_at = clock_.NowMicros() + 5;
  api::TaskAck ack = Apply("a", exited);
  EXPECT_TRUE(ack.done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFinished);
  EXPECT_EQ(job.exit_code, 0);
  EXPECT_EQ(job.reason, "");
  EXPECT_EQ(job.finished_at, clock_.NowMicros() + 5);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_TRUE(page.done);
}

TEST_F(JobControllerTest, NonZeroExitCodeFailsTheJobNamingTheCode) {
  int64_t id = StartJobOn("a");
  EXPECT_TRUE(Apply("a", Exited(id, 2)).done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.exit_code, 2);
  EXPECT_EQ(job.reason, "exited with code 2");
}

TEST_F(JobControllerTest, DeathBySignalFailsTheJobNamingTheSignal) {
  int64_t id = StartJobOn("a");
  EXPECT_TRUE(Apply("a", Exited(id, std::nullopt, 9)).done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.signal, 9);
  EXPECT_EQ(job.reason, "killed by signal 9");
}

TEST_F(JobControllerTest, ExitWithAChunkAtTheWrongOffsetIsNotApplied) {
  int64_t id = StartJobOn("a");
  api::TaskReport report = Phase(id, api::TaskPhase::kRunning);
  report.log = LogChunk(0, 10, {"first"});
  Apply("a", report);

  // The agent thinks the master has only 5 bytes: applying the exit now would end the
  // job before the output between 10 and its end is stored.
  api::TaskReport exited = Exited(id, 0);
  exited.log = LogChunk(5, 30, {"late"});
  api::TaskAck ack = Apply("a", exited);
  EXPECT_FALSE(ack.done);
  EXPECT_EQ(ack.offsets.log, 10);
  EXPECT_EQ(StateOf(id), JobState::kRunning);

  // Resent from the master's offset, it ends the job with all its output.
  exited.log = LogChunk(10, 30, {"last"});
  EXPECT_TRUE(Apply("a", exited).done);
  EXPECT_EQ(StateOf(id), JobState::kFinished);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("first", "last"));
  EXPECT_TRUE(page.done);
}

TEST_F(JobControllerTest, FinalMetricsFromValDictListAreStoredWhenTheJobExits) {
  int64_t id = StartJobOn("a");
  api::TaskReport exited = Exited(id, 0);
  exited.final_metrics = {{"accuracy", "test", 0, 0.91, clock_.NowMicros()}};
  Apply("a", exited);
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(id, std::string("accuracy")));
  ASSERT_THAT(points, SizeIs(1));
  EXPECT_EQ(points[0].value, 0.91);
}

TEST_F(JobControllerTest, LaunchFailureFailsTheJobWithTheAgentsReason) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK(controller_->SyncAgent("a", Running()));
  api::TaskReport failed = Phase(id, api::TaskPhase::kLaunchFailed);
  failed.reason = "command not found: pyhton3";
  failed.exit_code = 127;
  EXPECT_TRUE(Apply("a", failed).done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.reason, "command not found: pyhton3");
  EXPECT_EQ(job.exit_code, 127);
}

TEST_F(JobControllerTest, LostTaskFailsTheJob) {
  int64_t id = StartJobOn("a");
  EXPECT_TRUE(Apply("a", Phase(id, api::TaskPhase::kLost)).done);
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_THAT(job.reason, HasSubstr("exit status is unknown"));
}

TEST_F(JobControllerTest, ReportAboutAnotherAgentsJobTellsTheReporterToForgetIt) {
  int64_t id = StartJobOn("a");
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("b", 2)));
  api::TaskReport exited = Exited(id, 0);
  exited.log = LogChunk(0, 10, {"not mine"});
  EXPECT_TRUE(Apply("b", exited).done);
  EXPECT_EQ(StateOf(id), JobState::kRunning);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(page.lines, IsEmpty());
}

TEST_F(JobControllerTest, RegistrationTellsTheAgentToForgetTasksTheMasterDoesNotKnow) {
  KILN_ASSERT_OK_AND_ASSIGN(api::RegisterReply reply,
                            controller_->RegisterAgent(Hello("a", 2, {4242})));
  EXPECT_THAT(reply.forget, ElementsAre(4242));
  EXPECT_THAT(reply.resume, IsEmpty());
}

// ---------------------------------------------------------------- kill

TEST_F(JobControllerTest, KillingAQueuedJobEndsItAtOnce) {
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->Kill(alice_, id));
  EXPECT_EQ(job.state, JobState::kKilled);
  EXPECT_EQ(job.reason, "killed by alice");
  EXPECT_EQ(StateOf(id), JobState::kKilled);
}

TEST_F(JobControllerTest, KillingAScheduledJobEndsItAndTellsItsAgent) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  int64_t id = Submit(alice_);
  agent_work_.clear();
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->Kill(alice_, id));
  EXPECT_EQ(job.state, JobState::kKilled);
  EXPECT_THAT(agent_work_, ElementsAre("a"));
  // Had the agent started it meanwhile, its next sync is told to kill it.
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running({id})));
  EXPECT_THAT(reply.kill, ElementsAre(id));
  EXPECT_THAT(reply.launch, IsEmpty());
  // Its slot is free again.
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord next, controller_->Submit(alice_, Spec()));
  EXPECT_EQ(next.state, JobState::kScheduled);
}

TEST_F(JobControllerTest, KillingARunningJobSignalsItAndTheExitMakesItKilled) {
  int64_t id = StartJobOn("a");
  agent_work_.clear();
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->Kill(alice_, id));
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_TRUE(job.kill_requested);
  EXPECT_THAT(agent_work_, ElementsAre("a"));

  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running({id})));
  EXPECT_THAT(reply.kill, ElementsAre(id));

  EXPECT_TRUE(Apply("a", Exited(id, std::nullopt, 15)).done);
  store::JobRecord killed = Job(id);
  EXPECT_EQ(killed.state, JobState::kKilled);
  EXPECT_EQ(killed.signal, 15);
  EXPECT_EQ(killed.reason, "killed by alice");
}

TEST_F(JobControllerTest, KillingAnEndedJobIsAFailedPrecondition) {
  int64_t id = StartJobOn("a");
  Apply("a", Exited(id, 0));
  EXPECT_THAT(controller_->Kill(alice_, id), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                      HasSubstr("already ended (FINISHED)")));
}

// ---------------------------------------------------------------- resources

TEST_F(JobControllerTest, RequestNoAgentCanSatisfyIsRefusedNamingTheLargestAgent) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  EXPECT_THAT(controller_->Submit(alice_, Spec(4)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("largest agent has 2 slots and 0 GPUs")));
  KILN_ASSERT_OK_AND_ASSIGN(auto jobs, controller_->ListJobs(admin_, {}));
  EXPECT_THAT(jobs, IsEmpty());
}

TEST_F(JobControllerTest, JobsBeyondTheFreeSlotsWaitUntilOneFinishes) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  int64_t first = Submit(alice_);
  int64_t second = Submit(alice_);
  int64_t third = Submit(alice_);
  EXPECT_EQ(StateOf(first), JobState::kScheduled);
  EXPECT_EQ(StateOf(second), JobState::kScheduled);
  EXPECT_EQ(StateOf(third), JobState::kQueued);

  KILN_ASSERT_OK(controller_->SyncAgent("a", Running()));
  Apply("a", Phase(first, api::TaskPhase::kRunning));
  Apply("a", Exited(first, 0));
  EXPECT_EQ(StateOf(third), JobState::kScheduled);
  EXPECT_EQ(Job(third).agent_id, "a");
}

TEST_F(JobControllerTest, SmallerJobsBackfillAroundOneThatDoesNotFitYet) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  int64_t small = Submit(alice_, 1);
  int64_t big = Submit(alice_, 2);
  int64_t other = Submit(alice_, 1);
  EXPECT_EQ(StateOf(small), JobState::kScheduled);
  EXPECT_EQ(StateOf(big), JobState::kQueued);
  EXPECT_EQ(StateOf(other), JobState::kScheduled);
}

// ---------------------------------------------------------------- agent loss

TEST_F(JobControllerTest, RunningJobFailsWhenItsAgentIsLost) {
  int64_t id = StartJobOn("a");
  clock_.AdvanceMicros(kAgentTimeout + 1);
  controller_->SweepAgents();
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_THAT(job.reason, AllOf(HasSubstr("agent a"), HasSubstr("lost")));
  // The lost agent must register again before it may sync.
  EXPECT_THAT(controller_->SyncAgent("a", Running({id})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("register")));
}

TEST_F(JobControllerTest, ScheduledJobReturnsToTheQueueWhenItsAgentIsLost) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  int64_t id = Submit(alice_);
  ASSERT_EQ(StateOf(id), JobState::kScheduled);
  clock_.AdvanceMicros(kAgentTimeout + 1);
  controller_->SweepAgents();
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.agent_id, "");
  // Another agent picks it up.
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("b", 1)));
  EXPECT_EQ(StateOf(id), JobState::kScheduled);
  EXPECT_EQ(Job(id).agent_id, "b");
}

TEST_F(JobControllerTest, AgentThatKeepsSyncingIsNotLost) {
  int64_t id = StartJobOn("a");
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMicros(kAgentTimeout / 2);
    KILN_ASSERT_OK(controller_->SyncAgent("a", Running({id})));
    controller_->SweepAgents();
  }
  EXPECT_EQ(StateOf(id), JobState::kRunning);
  clock_.AdvanceMicros(kAgentTimeout);
  controller_->SweepAgents();
  EXPECT_EQ(StateOf(id), JobState::kRunning);  // exactly the timeout is not yet lost
}

TEST_F(JobControllerTest, LostAgentThatComesBackMayStillDeliverAFailedJobsOutput) {
  int64_t id = StartJobOn("a");
  clock_.AdvanceMicros(kAgentTimeout + 1);
  controller_->SweepAgents();
  ASSERT_EQ(StateOf(id), JobState::kFailed);

  KILN_ASSERT_OK_AND_ASSIGN(api::RegisterReply reply,
                            controller_->RegisterAgent(Hello("a", 2, {id})));
  ASSERT_TRUE(reply.resume.count(id));
  EXPECT_EQ(reply.resume.at(id).log, 0);
  api::TaskReport exited = Exited(id, 0);
  exited.log = LogChunk(0, 10, {"written while away"});
  EXPECT_TRUE(Apply("a", exited).done);
  EXPECT_EQ(StateOf(id), JobState::kFailed);  // the verdict stands
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("written while away"));
}

TEST_F(JobControllerTest, RunningJobFailsWhenItsAgentRegistersAgainWithoutIt) {
  int64_t id = StartJobOn("a");
  // The agent's host rebooted: it comes back holding no tasks, so nothing will ever
  // report this job's end.
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_THAT(job.reason, HasSubstr("agent a"));
  // Its slot is free for the next job.
  int64_t next = Submit(alice_, 2);
  EXPECT_EQ(StateOf(next), JobState::kScheduled);
}

TEST_F(JobControllerTest, ScheduledJobIsLaunchedAgainWhenItsAgentRegistersAgainWithoutIt) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  EXPECT_EQ(StateOf(id), JobState::kScheduled);
  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running()));
  ASSERT_THAT(reply.launch, SizeIs(1));
  EXPECT_EQ(reply.launch[0].job_id, id);
}

// ---------------------------------------------------------------- recovery

TEST_F(JobControllerTest, RestartedMasterResumesARunningJobAtItsStoredOffsets) {
  int64_t id = StartJobOn("a");
  api::TaskReport report = Phase(id, api::TaskPhase::kRunning);
  report.log = LogChunk(0, 17, {"before restart"});
  report.emetrics = api::OutputChunk{0, 9, {}, {{"loss", "test", 1, 0.7, 1}}};
  Apply("a", report);

  controller_ = NewController();
  KILN_ASSERT_OK(controller_->Recover());
  EXPECT_EQ(StateOf(id), JobState::kRunning);
  KILN_ASSERT_OK_AND_ASSIGN(api::RegisterReply reply,
                            controller_->RegisterAgent(Hello("a", 2, {id})));
  ASSERT_TRUE(reply.resume.count(id));
  EXPECT_EQ(reply.resume.at(id).log, 17);
  EXPECT_EQ(reply.resume.at(id).emetrics, 9);
  EXPECT_THAT(reply.forget, IsEmpty());

  KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply sync, controller_->SyncAgent("a", Running({id})));
  EXPECT_THAT(sync.launch, IsEmpty());
  EXPECT_THAT(sync.kill, IsEmpty());
  EXPECT_EQ(StateOf(id), JobState::kRunning);

  api::TaskReport exited = Exited(id, 0);
  exited.log = LogChunk(17, 30, {"after restart"});
  EXPECT_TRUE(Apply("a", exited).done);
  EXPECT_EQ(StateOf(id), JobState::kFinished);
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, controller_->GetLogs(alice_, id, 0, 100));
  EXPECT_THAT(Texts(page.lines), ElementsAre("before restart", "after restart"));
}

TEST_F(JobControllerTest, RestartedMasterKeepsTheSlotsOfResumedJobs) {
  int64_t id = StartJobOn("a", /*slots=*/1);
  controller_ = NewController();
  KILN_ASSERT_OK(controller_->Recover());
  int64_t waiting = Submit(alice_);
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1, {id})));
  // The only slot is still taken by the running job.
  EXPECT_EQ(StateOf(waiting), JobState::kQueued);
  Apply("a", Exited(id, 0));
  EXPECT_EQ(StateOf(waiting), JobState::kScheduled);
}

TEST_F(JobControllerTest, RestartedMasterFailsARunningJobWhoseAgentNeverComesBack) {
  int64_t id = StartJobOn("a");
  controller_ = NewController();
  KILN_ASSERT_OK(controller_->Recover());
  clock_.AdvanceMicros(kAgentTimeout - 1);
  controller_->SweepAgents();
  EXPECT_EQ(StateOf(id), JobState::kRunning);  // agents get a full timeout to come back
  clock_.AdvanceMicros(2);
  controller_->SweepAgents();
  store::JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_THAT(job.reason, AllOf(HasSubstr("agent a"), HasSubstr("lost")));
}

TEST_F(JobControllerTest, RestartedMasterKeepsQueuedJobsForTheNextAgent) {
  int64_t id = Submit(alice_);
  controller_ = NewController();
  KILN_ASSERT_OK(controller_->Recover());
  EXPECT_EQ(StateOf(id), JobState::kQueued);
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  EXPECT_EQ(StateOf(id), JobState::kScheduled);
}

// ---------------------------------------------------------------- access

TEST_F(JobControllerTest, UsersCannotSeeOrKillEachOthersJobs) {
  int64_t id = Submit(alice_);
  EXPECT_THAT(controller_->GetJob(bob_, id), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->Kill(bob_, id), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->GetLogs(bob_, id, 0, 10), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->IngestMetrics(bob_, id, Json::parse(R"({"writer": "w", "seq": 1,
                  "reports": []})")),
              StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_EQ(StateOf(id), JobState::kQueued);
  // Nor once the job has ended (then it is read from the store).
  KILN_ASSERT_OK(controller_->Kill(alice_, id));
  EXPECT_THAT(controller_->GetJob(bob_, id), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->Kill(bob_, id), StatusIs(absl::StatusCode::kNotFound, _));
}

TEST_F(JobControllerTest, UnknownJobIsNotFound) {
  EXPECT_THAT(controller_->GetJob(alice_, 77), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->Kill(admin_, 77), StatusIs(absl::StatusCode::kNotFound, _));
}

TEST_F(JobControllerTest, AdminsSeeAndKillEveryonesJobs) {
  int64_t id = Submit(alice_);
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord job, controller_->GetJob(admin_, id));
  EXPECT_EQ(job.username, "alice");
  KILN_ASSERT_OK_AND_ASSIGN(job, controller_->Kill(admin_, id));
  EXPECT_EQ(job.state, JobState::kKilled);
  EXPECT_EQ(job.reason, "killed by root");
}

TEST_F(JobControllerTest, ListJobsShowsANonAdminOnlyTheirOwnJobs) {
  int64_t a1 = Submit(alice_);
  int64_t b1 = Submit(bob_);
  int64_t a2 = Submit(alice_);
  auto ids = [](const std::vector<store::JobRecord>& jobs) {
    std::vector<int64_t> out;
    for (const auto& j : jobs) out.push_back(j.id);
    return out;
  };
  KILN_ASSERT_OK_AND_ASSIGN(auto mine, controller_->ListJobs(alice_, {}));
  EXPECT_THAT(ids(mine), ElementsAre(a2, a1));
  // A filter naming someone else's user id does not widen a non-admin's view.
  store::JobFilter others;
  others.user_id = bob_.user_id;
  KILN_ASSERT_OK_AND_ASSIGN(auto still_mine, controller_->ListJobs(alice_, others));
  EXPECT_THAT(ids(still_mine), ElementsAre(a2, a1));
  KILN_ASSERT_OK_AND_ASSIGN(auto all, controller_->ListJobs(admin_, {}));
  EXPECT_THAT(ids(all), ElementsAre(a2, b1, a1));
}

TEST_F(JobControllerTest, ListJobsShowsTheCurrentStateOfUnfinishedJobs) {
  int64_t id = StartJobOn("a");
  KILN_ASSERT_OK_AND_ASSIGN(auto jobs, controller_->ListJobs(alice_, {}));
  ASSERT_THAT(jobs, SizeIs(1));
  EXPECT_EQ(jobs[0].id, id);
  EXPECT_EQ(jobs[0].state, JobState::kRunning);
}

class JobControllerTaskTest : public JobControllerTest {
 protected:
  // Launches a job of alice on agent "a" and authenticates with its KILN_TOKEN.
  void SetUp() override {
    JobControllerTest::SetUp();
    KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 2)));
    job_ = Submit(alice_);
    other_job_ = Submit(alice_);
    KILN_ASSERT_OK_AND_ASSIGN(api::SyncReply reply, controller_->SyncAgent("a", Running()));
    ASSERT_THAT(reply.launch, SizeIs(2));
    ASSERT_EQ(reply.launch[0].job_id, job_);
    token_ = reply.launch[0].env.at("KILN_TOKEN");
    KILN_ASSERT_OK_AND_ASSIGN(task_, authenticator_->AuthenticateToken(token_));
  }

  static Json Batch(int64_t seq, Json metrics = {{"loss", 0.5}}) {
    return {{"writer", "w-1"},
            {"seq", seq},
            {"reports", {{{"step", 1}, {"time", 1764151200.25}, {"metrics", metrics}}}}};
  }

  int64_t job_ = 0;
  int64_t other_job_ = 0;
  std::string token_;
  auth::Principal task_;
};

TEST_F(JobControllerTaskTest, TaskMayIngestMetricsForItsOwnJobOnly) {
  KILN_ASSERT_OK_AND_ASSIGN(int accepted, controller_->IngestMetrics(task_, job_, Batch(1)));
  EXPECT_EQ(accepted, 1);
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(job_, std::nullopt));
  ASSERT_THAT(points, SizeIs(1));
  EXPECT_EQ(points[0].group, "test");
  EXPECT_EQ(points[0].step, 1);
  EXPECT_EQ(points[0].time, 1764151200250000);

  EXPECT_THAT(controller_->IngestMetrics(task_, other_job_, Batch(1)),
              StatusIs(absl::StatusCode::kNotFound, _));
  KILN_ASSERT_OK_AND_ASSIGN(auto others, store_->GetMetrics(other_job_, std::nullopt));
  EXPECT_THAT(others, IsEmpty());
}

TEST_F(JobControllerTaskTest, TaskMayReadItsJobButNotSubmitKillOrList) {
  KILN_EXPECT_OK(controller_->GetJob(task_, job_));
  EXPECT_THAT(controller_->GetJob(task_, other_job_), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(controller_->Submit(task_, Spec()), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(controller_->Kill(task_, job_), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(controller_->ListJobs(task_, {}), StatusIs(absl::StatusCode::kPermissionDenied, _));
}

TEST_F(JobControllerTaskTest, TaskTokenStopsWorkingWhenItsJobEnds) {
  Apply("a", Phase(job_, api::TaskPhase::kRunning));
  Apply("a", Exited(job_, 0));
  EXPECT_THAT(authenticator_->AuthenticateToken(token_),
              StatusIs(absl::StatusCode::kUnauthenticated, _));
}

TEST_F(JobControllerTaskTest, DuplicateMetricsBatchIsAcceptedOnce) {
  KILN_ASSERT_OK_AND_ASSIGN(int first, controller_->IngestMetrics(task_, job_, Batch(1)));
  EXPECT_EQ(first, 1);
  KILN_ASSERT_OK_AND_ASSIGN(int again, controller_->IngestMetrics(task_, job_, Batch(1)));
  EXPECT_EQ(again, 0);
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(job_, std::nullopt));
  EXPECT_THAT(points, SizeIs(1));
  KILN_ASSERT_OK_AND_ASSIGN(int next, controller_->IngestMetrics(task_, job_, Batch(2)));
  EXPECT_EQ(next, 1);
}

TEST_F(JobControllerTaskTest, MetricsBatchWithABadValueIsRefusedNamingTheProblem) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Batch(1, {{"loss", std::nan("")}})),
              StatusIs(kInvalid, HasSubstr("metric \"loss\" is not finite")));
  EXPECT_THAT(controller_->IngestMetrics(
                  task_, job_, Batch(1, {{"loss", std::numeric_limits<double>::infinity()}})),
              StatusIs(kInvalid, HasSubstr("is not finite")));
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Batch(1, {{"loss", "low"}})),
              StatusIs(kInvalid, HasSubstr("metric \"loss\" must be a number")));
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Batch(1, {{"", 1.0}})),
              StatusIs(kInvalid, HasSubstr("metric names must be 1 to 256 characters")));
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Batch(1, Json::array())),
              StatusIs(kInvalid, HasSubstr("\"metrics\"")));
  // Nothing of a refused batch is stored, and its seq is not used up.
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(job_, std::nullopt));
  EXPECT_THAT(points, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(int accepted, controller_->IngestMetrics(task_, job_, Batch(1)));
  EXPECT_EQ(accepted, 1);
}

TEST_F(JobControllerTaskTest, MetricsBatchWithMissingFieldsIsRefusedNamingThem) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  Json no_writer = Batch(1);
  no_writer.erase("writer");
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, no_writer),
              StatusIs(kInvalid, HasSubstr("missing required field \"writer\"")));
  Json no_seq = Batch(1);
  no_seq.erase("seq");
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, no_seq),
              StatusIs(kInvalid, HasSubstr("missing required field \"seq\"")));
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Batch(0)),
              StatusIs(kInvalid, HasSubstr("\"seq\" must be a positive integer")));
  Json no_reports = Batch(1);
  no_reports.erase("reports");
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, no_reports),
              StatusIs(kInvalid, HasSubstr("\"reports\" must be a list")));
  Json no_step = Batch(1);
  no_step["reports"][0].erase("step");
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, no_step),
              StatusIs(kInvalid, HasSubstr("missing required field \"step\"")));
  Json bad_group = Batch(1);
  bad_group["reports"][0]["group"] = 3;
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, bad_group),
              StatusIs(kInvalid, HasSubstr("field \"group\" must be a string")));
  EXPECT_THAT(controller_->IngestMetrics(task_, job_, Json::array()),
              StatusIs(kInvalid, HasSubstr("expected a JSON object")));
}

TEST_F(JobControllerTaskTest, MetricsBatchWithATimeOutsideTheEpochRangeIsRefused) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (double time : {1e300, -1e300, -1.0}) {
    Json batch = Batch(1);
    batch["reports"][0]["time"] = time;
    EXPECT_THAT(controller_->IngestMetrics(task_, job_, batch),
                StatusIs(kInvalid, HasSubstr("\"time\"")))
        << time;
  }
}

TEST_F(JobControllerTaskTest, MetricsBatchWithoutATimeIsStampedOnReceipt) {
  Json batch = Batch(1);
  batch["reports"][0].erase("time");
  KILN_ASSERT_OK(controller_->IngestMetrics(task_, job_, batch));
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(job_, std::nullopt));
  ASSERT_THAT(points, SizeIs(1));
  EXPECT_EQ(points[0].time, clock_.NowMicros());
}

// ---------------------------------------------------------------- observers

TEST_F(JobControllerTest, AgentIsToldOfWorkWhenAJobIsScheduledOnIt) {
  KILN_ASSERT_OK(controller_->RegisterAgent(Hello("a", 1)));
  EXPECT_THAT(agent_work_, IsEmpty());
  Submit(alice_);
  EXPECT_THAT(agent_work_, ElementsAre("a"));
  Submit(alice_);  // queued: nothing new for the agent
  EXPECT_THAT(agent_work_, ElementsAre("a"));
}

TEST_F(JobControllerTest, OutputObserverHearsOfNewLinesAndOfTheJobsEnd) {
  int64_t id = StartJobOn("a");
  job_output_.clear();
  Apply("a", Phase(id, api::TaskPhase::kRunning));
  EXPECT_THAT(job_output_, IsEmpty());  // no lines, no news

  api::TaskReport report = Phase(id, api::TaskPhase::kRunning);
  report.log = LogChunk(0, 5, {"hi"});
  Apply("a", report);
  EXPECT_THAT(job_output_, ElementsAre(id));

  job_output_.clear();
  Apply("a", report);  // a resend stores nothing
  EXPECT_THAT(job_output_, IsEmpty());

  Apply("a", Exited(id, 0));
  EXPECT_THAT(job_output_, ElementsAre(id));
}

}  // namespace
}  // namespace kiln::master
