// elastic_controller_test.cc
//
// Behaviour of distributed jobs (ARCHITECTURE.md §5) as users and workers see it: the
// ElasticController over a real JobController, SqliteStore and Authenticator, with agents
// simulated through SyncAgent/ApplyReport and workers through Join/Watch with the
// KILN_TOKEN their task was launched with. Events are queued and delivered the way
// master.cc posts them; RestartMaster rebuilds both controllers over the same store.
#include "kiln/master/elastic_controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <deque>
#include <map>
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
void PrintTo(JobState state, std::ostream* os);  // defined in job_controller_test.cc
}  // namespace kiln::store

namespace kiln::elastic {
// Names answers in failure messages.
void PrintTo(JoinAnswer::Kind kind, std::ostream* os) {
  *os << (kind == JoinAnswer::kWait       ? "wait"
          : kind == JoinAnswer::kAssigned ? "assigned"
                                          : "leave");
}
}  // namespace kiln::elastic

namespace kiln::master {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;
using Json = base::Json;
using elastic::JoinAnswer;
using elastic::WatchAnswer;
using store::JobState;

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kJoinTimeout = 10 * kSecond;
constexpr int64_t kLeaveGrace = 30 * kSecond;

class ElasticControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_elastic_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto opened = store::SqliteStore::Open(dir_ + "/kiln.db");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    authenticator_ = std::make_unique<auth::Authenticator>(*store_, clock_);
    alice_ = testing::AddUser(*store_, clock_.NowMicros(), "alice", false);
    bob_ = testing::AddUser(*store_, clock_.NowMicros(), "bob", false);
    admin_ = testing::AddUser(*store_, clock_.NowMicros(), "root", true);
    RestartMaster();
  }

  void TearDown() override {
    elastic_.reset();
    jobs_.reset();
    store_.reset();
    (void)base::RemoveAll(dir_);
  }

  // What a (re)started kilnd builds over the same store, in master.cc's order. Events not
  // yet delivered are lost, as posted calls are when kilnd dies. Agents must register
  // again (RegisterAgent).
  void RestartMaster() {
    elastic_.reset();
    jobs_.reset();
    events_.clear();
    JobControllerOptions options;
    options.kill_grace_ms = 1000;
    jobs_ = std::make_unique<JobController>(*store_, *authenticator_, clock_, options);
    ASSERT_TRUE(jobs_->Recover().ok());
    ElasticControllerOptions elastic_options;
    elastic_options.join_timeout_micros = kJoinTimeout;
    elastic_options.leave_grace_micros = kLeaveGrace;
    elastic_ = std::make_unique<ElasticController>(*store_, *jobs_, clock_, elastic_options);
    absl::Status s = elastic_->Recover();
    ASSERT_TRUE(s.ok()) << s;
    jobs_->AddJobEndObserver([this](int64_t id) { events_.push_back({'e', id}); });
    jobs_->SetJobStartedObserver([this](int64_t id) { events_.push_back({'s', id}); });
    elastic_->SetChangeObserver([this](int64_t id) { changes_.push_back(id); });
  }

  // Delivers the queued events, as the master's loop runs posted calls.
  void Drain() {
    while (!events_.empty()) {
      auto [kind, id] = events_.front();
      events_.pop_front();
      if (kind == 'e') {
        elastic_->OnJobEnded(id);
      } else {
        elastic_->OnJobStarted(id);
      }
    }
  }

  // The master's once-a-second timer.
  void Tick() {
    elastic_->Tick();
    Drain();
  }

  // Agent `id` (hello.address "10.0.0.<n>", n in registration order) says hello.
  void RegisterAgent(const std::string& id, int slots, std::vector<int64_t> tasks = {}) {
    if (!addresses_.count(id)) {
      addresses_[id] = "10.0.0." + std::to_string(addresses_.size() + 1);
    }
    api::AgentHello hello = testing::Hello(id, slots, std::move(tasks));
    hello.address = addresses_[id];
    auto reply = jobs_->RegisterAgent(hello);
    ASSERT_TRUE(reply.ok()) << reply.status();
    Drain();
  }

  static JobSpec Spec(Json extra, int slots = 1) {
    Json body = {
        {"name", "ddp"}, {"command", {"python3", "train.py"}}, {"resources", {{"slots", slots}}}};
    body.update(extra);
    auto spec = ParseJobSpec(body);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : JobSpec{};
  }

  int64_t Submit(const auth::Principal& who, Json extra, int slots = 1) {
    auto job = jobs_->Submit(who, Spec(std::move(extra), slots));
    EXPECT_TRUE(job.ok()) << job.status();
    Drain();
    return job.ok() ? job->id : 0;
  }

  // A single (not distributed) job of bob.
  int64_t SubmitSingle(int slots = 1) {
    Json body = {{"name", "single"},
                 {"command", {"python3", "other.py"}},
                 {"resources", {{"slots", slots}}}};
    auto spec = ParseJobSpec(body);
    EXPECT_TRUE(spec.ok()) << spec.status();
    auto job = jobs_->Submit(bob_, *spec);
    EXPECT_TRUE(job.ok()) << job.status();
    Drain();
    return job.ok() ? job->id : 0;
  }

  store::JobRecord Job(int64_t job_id) {
    auto job = jobs_->GetJob(admin_, job_id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : store::JobRecord{};
  }

  JobState StateOf(int64_t job_id) { return Job(job_id).state; }

  // The unfinished workers of `parent`, oldest first.
  std::vector<int64_t> Workers(int64_t parent) {
    std::vector<int64_t> ids;
    auto view = jobs_->ViewDistributed(parent);
    if (!view) return ids;
    for (const store::JobRecord& w : view->workers) ids.push_back(w.id);
    return ids;
  }

  // Every worker `parent` ever had, oldest first.
  std::vector<store::JobRecord> AllWorkers(int64_t parent) {
    store::JobFilter filter;
    filter.parent_id = parent;
    filter.limit = 1000;
    auto workers = store_->ListJobs(filter);
    EXPECT_TRUE(workers.ok()) << workers.status();
    if (!workers.ok()) return {};
    std::sort(workers->begin(), workers->end(),
              [](const store::JobRecord& a, const store::JobRecord& b) { return a.id < b.id; });
    return *workers;
  }

  std::vector<store::GenerationRecord> Generations(int64_t parent) {
    auto g = store_->ListGenerations(parent);
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? *g : std::vector<store::GenerationRecord>{};
  }

  // The agent syncs: it launches what it is given (and, with `start`, reports each task
  // RUNNING) and reports the tasks it is told to kill as ended by SIGTERM.
  api::SyncReply Sync(const std::string& agent, bool start = true) {
    api::SyncRequest request;
    request.running.assign(running_[agent].begin(), running_[agent].end());
    auto reply = jobs_->SyncAgent(agent, request);
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok()) return {};
    for (const api::TaskSpec& task : reply->launch) {
      tasks_[task.job_id] = task;
      if (start) Start(task.job_id);
    }
    for (int64_t id : reply->kill) {
      api::TaskReport r;
      r.job_id = id;
      r.phase = api::TaskPhase::kExited;
      r.signal = 15;
      Apply(agent, r);
      running_[agent].erase(id);
    }
    Drain();
    return *reply;
  }

  void SyncAll(bool start = true) {
    for (const auto& [agent, address] : addresses_) Sync(agent, start);
  }

  // The agent reports task `job_id` RUNNING.
  void Start(int64_t job_id) {
    const std::string agent = Job(job_id).agent_id;
    running_[agent].insert(job_id);
    api::TaskReport r;
    r.job_id = job_id;
    r.phase = api::TaskPhase::kRunning;
    r.started_at = clock_.NowMicros();
    Apply(agent, r);
    Drain();
  }

  // Task `job_id` exits with `code` or is killed by `signal`.
  void Exit(int64_t job_id, std::optional<int> code, std::optional<int> signal = std::nullopt) {
    const std::string agent = Job(job_id).agent_id;
    api::TaskReport r;
    r.job_id = job_id;
    r.phase = api::TaskPhase::kExited;
    r.exit_code = code;
    r.signal = signal;
    Apply(agent, r);
    running_[agent].erase(job_id);
    Drain();
  }

  void Apply(const std::string& agent, const api::TaskReport& task) {
    api::AgentReport report;
    report.tasks.push_back(task);
    auto reply = jobs_->ApplyReport(agent, report);
    EXPECT_TRUE(reply.ok()) << reply.status();
  }

  const std::map<std::string, std::string>& EnvOf(int64_t task) {
    static const std::map<std::string, std::string> kNone;
    auto it = tasks_.find(task);
    EXPECT_NE(it, tasks_.end()) << "task " << task << " was never launched";
    return it == tasks_.end() ? kNone : it->second.env;
  }

  // Who a request with task `worker`'s KILN_TOKEN authenticates as.
  auth::Principal TaskPrincipal(int64_t worker) {
    auto env = EnvOf(worker);
    auto who = authenticator_->AuthenticateToken(env["KILN_TOKEN"]);
    EXPECT_TRUE(who.ok()) << who.status();
    return who.ok() ? *who : auth::Principal{};
  }

  // Worker `worker` of `parent` joins after generation `generation` with its state at
  // `step`, offering a store on its agent's address.
  JoinAnswer Join(int64_t parent, int64_t worker, int64_t generation, int64_t step = -1) {
    elastic::JoinRequest request;
    request.task_id = worker;
    request.host = addresses_[Job(worker).agent_id];
    request.store_port = static_cast<int>(40000 + worker);
    request.generation = generation;
    request.step = step;
    auto answer = elastic_->Join(TaskPrincipal(worker), parent, request);
    EXPECT_TRUE(answer.ok()) << answer.status();
    Drain();
    return answer.ok() ? *answer : JoinAnswer{};
  }

  // What a held join of `worker` (after `generation`) is answered now.
  JoinAnswer Held(int64_t parent, int64_t worker, int64_t generation) {
    return elastic_->AnswerJoin(parent, worker, generation);
  }

  WatchAnswer Watch(int64_t parent, int64_t worker, int64_t generation) {
    auto answer = elastic_->Watch(TaskPrincipal(worker), parent, worker, generation);
    EXPECT_TRUE(answer.ok()) << answer.status();
    return answer.ok() ? *answer : WatchAnswer{};
  }

  // Submits alice's elastic job of `min`..`max` 1-slot workers, starts the workers that
  // fit, and lets them all join generation 1. Returns the job id.
  int64_t StartElastic(int min, int max, Json extra = Json::object()) {
    extra["min_workers"] = min;
    extra["max_workers"] = max;
    int64_t job = Submit(alice_, extra);
    Tick();
    SyncAll();
    std::vector<int64_t> workers = Workers(job);
    for (int64_t w : workers) Join(job, w, 0);
    EXPECT_THAT(Generations(job), SizeIs(1));
    EXPECT_EQ(StateOf(job), JobState::kRunning);
    return job;
  }

  std::string dir_;
  base::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<JobController> jobs_;
  std::unique_ptr<ElasticController> elastic_;
  auth::Principal alice_, bob_, admin_;
  std::deque<std::pair<char, int64_t>> events_;
  std::vector<int64_t> changes_;
  std::map<std::string, std::string> addresses_;      // agent -> hello.address
  std::map<std::string, std::set<int64_t>> running_;  // agent -> tasks it runs
  std::map<int64_t, api::TaskSpec> tasks_;            // every task launched
};

// ---------------------------------------------------------------- static jobs

TEST_F(ElasticControllerTest, StaticJobIsGangPlacedOnlyWhenAllItsWorkersFit) {
  RegisterAgent("a", 2);
  RegisterAgent("b", 2);
  // Three of the four slots are busy.
  std::vector<int64_t> singles = {SubmitSingle(), SubmitSingle(), SubmitSingle()};
  SyncAll();
  for (int64_t id : singles) ASSERT_EQ(StateOf(id), JobState::kRunning);

  int64_t job = Submit(alice_, {{"workers", 3}});
  Tick();
  Tick();
  // One worker would fit, but none is placed.
  EXPECT_EQ(StateOf(job), JobState::kQueued);
  EXPECT_THAT(AllWorkers(job), IsEmpty());

  // Two single jobs end: now all three fit, and are placed at once.
  Exit(singles[0], 0);
  Exit(singles[1], 0);
  Tick();
  std::vector<store::JobRecord> workers = AllWorkers(job);
  ASSERT_THAT(workers, SizeIs(3));
  EXPECT_EQ(StateOf(job), JobState::kScheduled);
  for (const store::JobRecord& w : workers) {
    EXPECT_EQ(w.state, JobState::kScheduled);
    EXPECT_EQ(w.parent_id, job);
    EXPECT_EQ(w.user_id, alice_.user_id);
  }

  SyncAll();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  // torchrun's environment: ranks by worker index, local ranks per agent, one rendezvous
  // address (rank 0's agent) and port for all.
  const std::string master_addr = addresses_[workers[0].agent_id];
  const std::string master_port = EnvOf(workers[0].id).at("MASTER_PORT");
  EXPECT_FALSE(master_port.empty());
  std::map<std::string, std::vector<int>> ranks_on;  // agent -> ranks there
  for (int rank = 0; rank < 3; ++rank) ranks_on[workers[rank].agent_id].push_back(rank);
  EXPECT_THAT(ranks_on, SizeIs(2)) << "3 workers on agents with 2 and 1 free slots";
  for (int rank = 0; rank < 3; ++rank) {
    const store::JobRecord& w = workers[rank];
    const auto& env = EnvOf(w.id);
    SCOPED_TRACE("rank " + std::to_string(rank));
    const std::vector<int>& local = ranks_on[w.agent_id];
    const int local_rank =
        static_cast<int>(std::find(local.begin(), local.end(), rank) - local.begin());
    EXPECT_EQ(env.at("RANK"), std::to_string(rank));
    EXPECT_EQ(env.at("WORLD_SIZE"), "3");
    EXPECT_EQ(env.at("LOCAL_RANK"), std::to_string(local_rank));
    EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), std::to_string(local.size()));
    EXPECT_EQ(env.at("MASTER_ADDR"), master_addr);
    EXPECT_EQ(env.at("MASTER_PORT"), master_port);
    EXPECT_EQ(env.at("KILN_JOB_ID"), std::to_string(job));
    EXPECT_EQ(env.at("KILN_TASK_ID"), std::to_string(w.id));
    EXPECT_EQ(env.count("KILN_ELASTIC"), 0u);
    // The worker's token acts for the parent job.
    auth::Principal who = TaskPrincipal(w.id);
    EXPECT_EQ(who.kind, auth::Principal::Kind::kTask);
    EXPECT_EQ(who.job_id, job);
  }
}

TEST_F(ElasticControllerTest, StaticJobFailsWhenOneWorkerFailsAndTheOthersAreStopped) {
  RegisterAgent("a", 2);
  RegisterAgent("b", 2);
  int64_t job = Submit(alice_, {{"workers", 3}});
  Tick();
  SyncAll();
  std::vector<store::JobRecord> workers = AllWorkers(job);
  ASSERT_THAT(workers, SizeIs(3));
  ASSERT_EQ(StateOf(job), JobState::kRunning);

  Exit(workers[1].id, 1);
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFailed);
  EXPECT_THAT(parent.reason, AllOf(HasSubstr("worker " + std::to_string(workers[1].id)),
                                   HasSubstr("exited with code 1"), HasSubstr("rank 1")));
  // The others are told to stop at their agents' next sync.
  std::vector<int64_t> killed;
  for (const std::string agent : {"a", "b"}) {
    api::SyncReply reply = Sync(agent);
    killed.insert(killed.end(), reply.kill.begin(), reply.kill.end());
  }
  EXPECT_THAT(killed, UnorderedElementsAre(workers[0].id, workers[2].id));
  EXPECT_EQ(StateOf(workers[0].id), JobState::kKilled);
  EXPECT_EQ(StateOf(workers[2].id), JobState::kKilled);
  EXPECT_THAT(Job(workers[0].id).reason, HasSubstr("job ended"));
  // Nothing restarts.
  Tick();
  EXPECT_THAT(AllWorkers(job), SizeIs(3));
  EXPECT_EQ(StateOf(job), JobState::kFailed);
}

TEST_F(ElasticControllerTest, StaticJobFinishesWhenAllWorkersExitZero) {
  RegisterAgent("a", 2);
  int64_t job = Submit(alice_, {{"workers", 2}});
  Tick();
  SyncAll();
  std::vector<store::JobRecord> workers = AllWorkers(job);
  ASSERT_THAT(workers, SizeIs(2));
  Exit(workers[0].id, 0);
  EXPECT_EQ(StateOf(job), JobState::kRunning);  // still one to go
  Exit(workers[1].id, 0);
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFinished);
  EXPECT_THAT(parent.reason, HasSubstr("all 2 workers exited 0"));
}

TEST_F(ElasticControllerTest, StaticJobTooBigForTheClusterIsRefusedAtSubmit) {
  RegisterAgent("a", 2);
  RegisterAgent("b", 2);
  auto refused = jobs_->Submit(alice_, Spec({{"workers", 5}}));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("can never run 5 workers"));
  // Elastic jobs are judged by their minimum.
  auto elastic_refused = jobs_->Submit(alice_, Spec({{"min_workers", 5}, {"max_workers", 8}}));
  ASSERT_FALSE(elastic_refused.ok());
  EXPECT_THAT(elastic_refused.status().message(), HasSubstr("can never run 5 workers"));
  auto fits = jobs_->Submit(alice_, Spec({{"min_workers", 4}, {"max_workers", 8}}));
  EXPECT_TRUE(fits.ok()) << fits.status();
}

TEST_F(ElasticControllerTest, StaticWorkersCannotUseTheRendezvousNorBeScaled) {
  RegisterAgent("a", 2);
  int64_t job = Submit(alice_, {{"workers", 2}});
  Tick();
  SyncAll();
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  elastic::JoinRequest request;
  request.task_id = workers[0];
  auto joined = elastic_->Join(TaskPrincipal(workers[0]), job, request);
  ASSERT_FALSE(joined.ok());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(joined.status().message(), HasSubstr("static job"));

  auto scaled = elastic_->Scale(alice_, job, 1);
  ASSERT_FALSE(scaled.ok());
  EXPECT_EQ(scaled.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(scaled.status().message(),
              AllOf(HasSubstr("static job of 2 workers"), HasSubstr("min_workers/max_workers")));
}

// ---------------------------------------------------------------- elastic jobs

TEST_F(ElasticControllerTest, ElasticJobStartsWhatFitsAndFormsGenerationOneWhenAllJoin) {
  RegisterAgent("a", 2);
  int64_t job = Submit(alice_, {{"min_workers", 1}, {"max_workers", 3}});
  EXPECT_EQ(Job(job).target_workers, 3);
  Tick();
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2)) << "2 of the 3 wanted fit";
  SyncAll();
  for (int64_t w : workers) {
    SCOPED_TRACE("worker " + std::to_string(w));
    const auto& env = EnvOf(w);
    EXPECT_EQ(env.at("KILN_ELASTIC"), "1");
    EXPECT_EQ(env.at("KILN_MIN_WORKERS"), "1");
    EXPECT_EQ(env.at("KILN_MAX_WORKERS"), "3");
    EXPECT_EQ(env.at("KILN_JOB_ID"), std::to_string(job));
    EXPECT_EQ(env.at("KILN_TASK_ID"), std::to_string(w));
    EXPECT_EQ(env.count("RANK"), 0u);
    EXPECT_EQ(env.count("MASTER_ADDR"), 0u);
  }
  // The parent is not RUNNING before its first generation.
  EXPECT_EQ(StateOf(job), JobState::kScheduled);

  // The first to join waits for the other launched worker.
  JoinAnswer first = Join(job, workers[0], 0);
  EXPECT_EQ(first.kind, JoinAnswer::kWait);
  changes_.clear();
  JoinAnswer second = Join(job, workers[1], 0);
  ASSERT_EQ(second.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(changes_, Contains(job)) << "held joins are woken";
  EXPECT_EQ(second.generation.id, 1);
  EXPECT_EQ(second.rank, 1);
  EXPECT_THAT(second.generation.members, ElementsAre(workers[0], workers[1]));
  // Rank 0 (the oldest, at equal steps) hosts the store.
  EXPECT_EQ(second.generation.store_host, "10.0.0.1");
  EXPECT_EQ(second.generation.store_port, 40000 + workers[0]);
  JoinAnswer held = Held(job, workers[0], 0);
  ASSERT_EQ(held.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(held.rank, 0);
  EXPECT_EQ(held.generation.id, 1);

  EXPECT_EQ(StateOf(job), JobState::kRunning);
  std::vector<store::GenerationRecord> generations = Generations(job);
  ASSERT_THAT(generations, SizeIs(1));
  EXPECT_EQ(generations[0].id, 1);
  EXPECT_THAT(generations[0].members, ElementsAre(workers[0], workers[1]));
  EXPECT_EQ(generations[0].store_address, "10.0.0.1:" + std::to_string(40000 + workers[0]));
  EXPECT_EQ(generations[0].reason, "start");
  KILN_ASSERT_OK_AND_ASSIGN(auto events, store_->ListEvents(job));
  EXPECT_THAT(events, Contains(Field(&store::EventRecord::type, "GENERATION")));
  // Nothing is pending: the watch has nothing to say.
  WatchAnswer watch = Watch(job, workers[0], 1);
  EXPECT_FALSE(watch.next);
  EXPECT_FALSE(watch.leave);
}

TEST_F(ElasticControllerTest, ACrashedWorkerIsDroppedAndReplacedWhileTheSurvivorGoesOn) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 3);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  const int64_t survivor = workers[0], crashed = workers[1];

  Exit(crashed, std::nullopt, 9);
  EXPECT_EQ(StateOf(crashed), JobState::kFailed);
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  // The survivor hears of it through its watch, finishes its step and joins.
  WatchAnswer watch = Watch(job, survivor, 1);
  EXPECT_TRUE(watch.next);
  EXPECT_FALSE(watch.leave);
  // The freed slot gets a replacement at once.
  std::vector<int64_t> now = Workers(job);
  ASSERT_THAT(now, SizeIs(2));
  EXPECT_EQ(now[0], survivor);
  const int64_t replacement = now[1];
  EXPECT_GT(replacement, crashed);
  EXPECT_EQ(StateOf(replacement), JobState::kScheduled);

  // Generation 2 forms with the survivor alone, without waiting for the newcomer.
  JoinAnswer rejoined = Join(job, survivor, 1, /*step=*/10);
  ASSERT_EQ(rejoined.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(rejoined.generation.id, 2);
  EXPECT_EQ(rejoined.rank, 0);
  EXPECT_THAT(rejoined.generation.members, ElementsAre(survivor));

  // The replacement starts and joins; the survivor (newest state) stays rank 0.
  SyncAll();
  changes_.clear();
  EXPECT_EQ(Join(job, replacement, 0).kind, JoinAnswer::kWait);
  EXPECT_THAT(changes_, Contains(job)) << "the survivor's held watch is woken";
  EXPECT_TRUE(Watch(job, survivor, 2).next);
  JoinAnswer grown = Join(job, survivor, 2, /*step=*/20);
  ASSERT_EQ(grown.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(grown.generation.id, 3);
  EXPECT_THAT(grown.generation.members, ElementsAre(survivor, replacement));
  JoinAnswer newcomer = Held(job, replacement, 0);
  ASSERT_EQ(newcomer.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(newcomer.rank, 1);

  std::vector<store::GenerationRecord> generations = Generations(job);
  ASSERT_THAT(generations, SizeIs(3));
  EXPECT_EQ(generations[0].reason, "start");
  EXPECT_THAT(generations[1].reason,
              AllOf(HasSubstr("worker " + std::to_string(crashed)), HasSubstr("signal 9")));
  EXPECT_THAT(generations[1].members, ElementsAre(survivor));
  EXPECT_THAT(generations[2].reason,
              HasSubstr("worker " + std::to_string(replacement) + " joined"));
  EXPECT_THAT(generations[2].members, ElementsAre(survivor, replacement));
}

TEST_F(ElasticControllerTest, AMemberThatDoesNotJoinInTimeIsStopped) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  // A newcomer cannot come (no slot); worker 0 asks for a new generation, worker 1 hangs.
  EXPECT_EQ(Join(job, workers[0], 1, 5).kind, JoinAnswer::kWait);
  clock_.AdvanceMicros(kJoinTimeout - 1);
  Tick();
  EXPECT_EQ(Held(job, workers[0], 1).kind, JoinAnswer::kWait);
  clock_.AdvanceMicros(1);
  Tick();
  JoinAnswer answer = Held(job, workers[0], 1);
  ASSERT_EQ(answer.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(answer.generation.members, ElementsAre(workers[0]));
  EXPECT_THAT(answer.generation.reason, HasSubstr("did not join in time"));
  api::SyncReply reply = Sync("a");
  EXPECT_THAT(reply.kill, ElementsAre(workers[1]));
  EXPECT_EQ(StateOf(workers[1]), JobState::kKilled);
  EXPECT_THAT(Job(workers[1]).reason, HasSubstr("did not join generation 2 in time"));
  EXPECT_EQ(StateOf(job), JobState::kRunning);
}

TEST_F(ElasticControllerTest, LosingAnAgentShrinksTheJobToTheSurvivors) {
  RegisterAgent("a", 1);
  RegisterAgent("b", 1);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  ASSERT_NE(Job(workers[0]).agent_id, Job(workers[1]).agent_id);
  const int64_t lost = Job(workers[0]).agent_id == "b" ? workers[0] : workers[1];
  const int64_t survivor = lost == workers[0] ? workers[1] : workers[0];

  // Agent b goes silent; a keeps syncing.
  clock_.AdvanceMicros(61 * kSecond);
  Sync("a");
  jobs_->SweepAgents();
  Drain();
  EXPECT_EQ(StateOf(lost), JobState::kFailed);
  EXPECT_THAT(Job(lost).reason, HasSubstr("agent b lost"));
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  EXPECT_TRUE(Watch(job, survivor, 1).next);
  JoinAnswer answer = Join(job, survivor, 1, 8);
  ASSERT_EQ(answer.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(answer.generation.members, ElementsAre(survivor));
  EXPECT_THAT(answer.generation.reason, HasSubstr("agent b lost"));
  // No room for a second worker until b comes back.
  Tick();
  EXPECT_THAT(Workers(job), ElementsAre(survivor));
  RegisterAgent("b", 1);
  Tick();
  EXPECT_THAT(Workers(job), SizeIs(2));
}

// ---------------------------------------------------------------- scaling

TEST_F(ElasticControllerTest, ScaleOutsideMinAndMaxIsRefusedNamingBoth) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 3);
  for (int n : {0, 4}) {
    auto scaled = elastic_->Scale(alice_, job, n);
    ASSERT_FALSE(scaled.ok());
    EXPECT_EQ(scaled.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(scaled.status().message(),
                AllOf(HasSubstr("min_workers (1)"), HasSubstr("max_workers (3)"),
                      HasSubstr("got " + std::to_string(n))));
  }
  // Only its owner (or an admin) may scale it, and never a task.
  auto by_bob = elastic_->Scale(bob_, job, 2);
  EXPECT_EQ(by_bob.status().code(), absl::StatusCode::kNotFound);
  auto by_task = elastic_->Scale(TaskPrincipal(Workers(job)[0]), job, 2);
  EXPECT_EQ(by_task.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Job(job).target_workers, 3);
}

TEST_F(ElasticControllerTest, ScalingDownAsksTheNewestWorkerToLeaveAndItsExitDoesNotEndTheJob) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 3);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));

  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord scaled, elastic_->Scale(alice_, job, 1));
  Drain();
  EXPECT_EQ(scaled.target_workers, 1);
  EXPECT_EQ(Job(job).target_workers, 1);
  WatchAnswer newest = Watch(job, workers[1], 1);
  EXPECT_TRUE(newest.leave);
  EXPECT_TRUE(newest.next);
  WatchAnswer oldest = Watch(job, workers[0], 1);
  EXPECT_TRUE(oldest.next);
  EXPECT_FALSE(oldest.leave);

  JoinAnswer leave = Join(job, workers[1], 1, 7);
  EXPECT_EQ(leave.kind, JoinAnswer::kLeave);
  EXPECT_THAT(leave.reason, HasSubstr("scaled to 1 workers"));
  JoinAnswer stay = Join(job, workers[0], 1, 7);
  ASSERT_EQ(stay.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(stay.generation.members, ElementsAre(workers[0]));

  // It leaves with exit 0: that is not the end of the training.
  Exit(workers[1], 0);
  Tick();
  EXPECT_EQ(StateOf(workers[1]), JobState::kFinished);
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  EXPECT_THAT(Workers(job), ElementsAre(workers[0]));
  EXPECT_THAT(Generations(job), SizeIs(2));

  // Scaling up starts a worker in the freed slot; its join forms a new generation.
  KILN_ASSERT_OK(elastic_->Scale(alice_, job, 2).status());
  Drain();
  std::vector<int64_t> grown = Workers(job);
  ASSERT_THAT(grown, SizeIs(2));
  const int64_t added = grown[1];
  SyncAll();
  EXPECT_EQ(Join(job, added, 0).kind, JoinAnswer::kWait);
  EXPECT_TRUE(Watch(job, workers[0], 2).next);
  JoinAnswer bigger = Join(job, workers[0], 2, 30);
  ASSERT_EQ(bigger.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(bigger.generation.id, 3);
  EXPECT_THAT(bigger.generation.members, ElementsAre(workers[0], added));
  EXPECT_EQ(StateOf(job), JobState::kRunning);
}

TEST_F(ElasticControllerTest, AWorkerThatIgnoresTheLeaveRequestIsStoppedAfterTheGrace) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  KILN_ASSERT_OK(elastic_->Scale(alice_, job, 1).status());
  Drain();
  clock_.AdvanceMicros(kLeaveGrace - kSecond);
  Tick();
  EXPECT_THAT(Sync("a").kill, IsEmpty());
  clock_.AdvanceMicros(kSecond);
  Tick();
  EXPECT_THAT(Sync("a").kill, ElementsAre(workers[1]));
  EXPECT_EQ(StateOf(workers[1]), JobState::kKilled);
  // Stopping a leaver is no failure: the job goes on and nothing replaces it.
  Tick();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  EXPECT_THAT(Workers(job), ElementsAre(workers[0]));
}

TEST_F(ElasticControllerTest, FinishedAndSingleJobsRefuseScaleWithClearMessages) {
  RegisterAgent("a", 2);
  int64_t single = SubmitSingle();
  auto not_elastic = elastic_->Scale(bob_, single, 2);
  ASSERT_FALSE(not_elastic.ok());
  EXPECT_EQ(not_elastic.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_elastic.status().message(), HasSubstr("not an elastic job"));

  int64_t job = StartElastic(1, 2);
  KILN_ASSERT_OK(jobs_->Kill(alice_, job).status());
  Drain();
  auto ended = elastic_->Scale(alice_, job, 1);
  ASSERT_FALSE(ended.ok());
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ended.status().message(), HasSubstr("has already ended (KILLED)"));
}

// ---------------------------------------------------------------- sharing the cluster

TEST_F(ElasticControllerTest, NoWorkerLeavesForAQueuedJobItsRoomCannotHelp) {
  RegisterAgent("a", 3);
  int64_t job = StartElastic(1, 3);
  ASSERT_THAT(Workers(job), SizeIs(3));
  RegisterAgent("b", 4);
  int64_t big = SubmitSingle(4);  // takes all of b
  EXPECT_EQ(StateOf(big), JobState::kScheduled);
  // Another 4-slot job can only ever run on b: a's workers giving back 3 slots of a
  // would not let it start, so none of them is asked to.
  int64_t waiting = SubmitSingle(4);
  EXPECT_EQ(StateOf(waiting), JobState::kQueued);
  Tick();
  Tick();
  for (int64_t w : Workers(job)) EXPECT_FALSE(Watch(job, w, 1).leave) << "worker " << w;
  EXPECT_THAT(Workers(job), SizeIs(3));
}

TEST_F(ElasticControllerTest, AQueuedJobGetsSlotsBackAndTheElasticJobWaitsToGrowAgain) {
  RegisterAgent("a", 3);
  int64_t job = StartElastic(1, 3);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(3));

  // Bob's job needs two slots; the elastic job gives back one worker at a time.
  int64_t waiting = SubmitSingle(2);
  EXPECT_EQ(StateOf(waiting), JobState::kQueued);
  Tick();
  Tick();
  EXPECT_TRUE(Watch(job, workers[2], 1).leave);
  EXPECT_FALSE(Watch(job, workers[1], 1).leave) << "one leaver at a time";
  JoinAnswer leave = Join(job, workers[2], 1, 3);
  ASSERT_EQ(leave.kind, JoinAnswer::kLeave);
  EXPECT_THAT(leave.reason, HasSubstr("queued job"));
  Exit(workers[2], 0);
  Tick();
  // One slot is free, not enough for bob's job: the elastic job does not take it back,
  // and the next newest worker leaves.
  EXPECT_EQ(StateOf(waiting), JobState::kQueued);
  EXPECT_THAT(Workers(job), ElementsAre(workers[0], workers[1]));
  EXPECT_TRUE(Watch(job, workers[1], 1).leave);
  EXPECT_FALSE(Watch(job, workers[0], 1).leave);
  Exit(workers[1], 0);
  Tick();
  EXPECT_EQ(StateOf(waiting), JobState::kScheduled);
  // At min_workers it gives nothing more.
  EXPECT_THAT(Workers(job), ElementsAre(workers[0]));
  EXPECT_FALSE(Watch(job, workers[0], 1).leave);
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  JoinAnswer alone = Join(job, workers[0], 1, 9);
  ASSERT_EQ(alone.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(alone.generation.members, ElementsAre(workers[0]));

  // Bob's job ends: the elastic job grows back to its target.
  Sync("a");
  Exit(waiting, 0);
  Tick();
  EXPECT_THAT(Workers(job), SizeIs(3));
}

TEST_F(ElasticControllerTest, AQueuedElasticJobWaitsForRoomWithoutTimingOut) {
  RegisterAgent("a", 2);
  int64_t busy = SubmitSingle(2);
  Sync("a");
  int64_t job =
      Submit(alice_, {{"min_workers", 2}, {"max_workers", 2}, {"min_workers_timeout_s", 60}});
  Tick();
  clock_.AdvanceMicros(3600 * kSecond);
  Tick();
  // Waiting in the queue is not running below min_workers.
  EXPECT_EQ(StateOf(job), JobState::kQueued);
  Exit(busy, 0);
  Tick();
  EXPECT_THAT(Workers(job), SizeIs(2));
}

// ---------------------------------------------------------------- failing and finishing

TEST_F(ElasticControllerTest, BelowMinWorkersLongerThanTheTimeoutFailsTheJob) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(2, 2, {{"min_workers_timeout_s", 60}});
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  // Bob's job waits; a crash frees a slot and bob's job takes it.
  int64_t other = SubmitSingle();
  Exit(workers[1], std::nullopt, 9);
  EXPECT_EQ(StateOf(other), JobState::kScheduled);
  EXPECT_THAT(Workers(job), ElementsAre(workers[0]));
  // Alone, worker 0 cannot form a generation (below min_workers).
  EXPECT_EQ(Join(job, workers[0], 1, 4).kind, JoinAnswer::kWait);

  clock_.AdvanceMicros(59 * kSecond);
  Tick();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  clock_.AdvanceMicros(kSecond);
  Tick();
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFailed);
  EXPECT_THAT(parent.reason, AllOf(HasSubstr("fewer than min_workers (2)"), HasSubstr("60 s"),
                                   HasSubstr("worker " + std::to_string(workers[1]))));
  EXPECT_THAT(Sync("a").kill, ElementsAre(workers[0]));
  EXPECT_EQ(Held(job, workers[0], 1).kind, JoinAnswer::kLeave);
}

TEST_F(ElasticControllerTest, BelowMinWorkersWithinTheTimeoutRecovers) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(2, 2, {{"min_workers_timeout_s", 60}});
  std::vector<int64_t> workers = Workers(job);
  int64_t other = SubmitSingle();
  Exit(workers[1], std::nullopt, 9);
  ASSERT_EQ(StateOf(other), JobState::kScheduled);
  clock_.AdvanceMicros(30 * kSecond);
  Tick();
  // The slot comes back in time: a replacement starts and the clock starts over.
  Sync("a");
  Exit(other, 0);
  Tick();
  std::vector<int64_t> now = Workers(job);
  ASSERT_THAT(now, SizeIs(2));
  SyncAll();
  EXPECT_EQ(Join(job, workers[0], 1, 4).kind, JoinAnswer::kWait);
  JoinAnswer formed = Join(job, now[1], 0);
  ASSERT_EQ(formed.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(formed.generation.id, 2);
  clock_.AdvanceMicros(3600 * kSecond);
  Tick();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
}

TEST_F(ElasticControllerTest, MoreCrashesThanMaxWorkerFailuresFailTheJob) {
  RegisterAgent("a", 1);
  int64_t job = StartElastic(1, 1, {{"max_worker_failures", 2}});
  for (int crash = 1; crash <= 3; ++crash) {
    SCOPED_TRACE("crash " + std::to_string(crash));
    std::vector<int64_t> workers = Workers(job);
    ASSERT_THAT(workers, SizeIs(1));
    SyncAll();
    Exit(workers[0], 1);
    if (crash < 3) {
      EXPECT_EQ(StateOf(job), JobState::kRunning);
    }
  }
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFailed);
  EXPECT_THAT(parent.reason,
              AllOf(HasSubstr("3 worker failures"), HasSubstr("max_worker_failures is 2"),
                    HasSubstr("exited with code 1")));
  EXPECT_THAT(AllWorkers(job), SizeIs(3));
  Tick();
  EXPECT_THAT(AllWorkers(job), SizeIs(3));
}

TEST_F(ElasticControllerTest, AWorkerExitingZeroEndsTheTrainingWithoutReplacement) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  Exit(workers[0], 0);
  Tick();
  EXPECT_THAT(Workers(job), ElementsAre(workers[1])) << "no replacement";
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  // The other one, joining, is told to leave.
  JoinAnswer answer = Join(job, workers[1], 1, 50);
  EXPECT_EQ(answer.kind, JoinAnswer::kLeave);
  EXPECT_THAT(answer.reason, HasSubstr("finished"));
  Exit(workers[1], 0);
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFinished);
  EXPECT_EQ(parent.reason, "training finished");
  EXPECT_THAT(AllWorkers(job), SizeIs(2));
}

TEST_F(ElasticControllerTest, KillingTheParentStopsEveryWorker) {
  RegisterAgent("a", 2);
  int64_t job = Submit(alice_, {{"min_workers", 1}, {"max_workers", 2}});
  Tick();
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  Sync("a", /*start=*/false);
  Start(workers[0]);  // the second one is launched but not started yet
  // A watch worker 0 holds open across the kill (authenticated before it).
  const auth::Principal held_watch = TaskPrincipal(workers[0]);

  auto by_bob = jobs_->Kill(bob_, job);
  EXPECT_EQ(by_bob.status().code(), absl::StatusCode::kNotFound);
  KILN_ASSERT_OK_AND_ASSIGN(store::JobRecord killed, jobs_->Kill(alice_, job));
  Drain();
  EXPECT_EQ(killed.state, JobState::kKilled);
  EXPECT_THAT(killed.reason, HasSubstr("killed by alice"));
  EXPECT_EQ(StateOf(workers[1]), JobState::kKilled) << "not started: ends at once";
  EXPECT_EQ(StateOf(workers[0]), JobState::kRunning) << "running: signalled";
  EXPECT_THAT(Sync("a").kill, ElementsAre(workers[0]));
  EXPECT_EQ(StateOf(workers[0]), JobState::kKilled);
  EXPECT_THAT(Job(workers[0]).reason, HasSubstr("killed by alice"));
  // Nothing starts again. Held joins and watches are told the job is over; the workers'
  // token, scoped to the parent, is revoked with it.
  Tick();
  EXPECT_THAT(AllWorkers(job), SizeIs(2));
  EXPECT_EQ(Held(job, workers[0], 0).kind, JoinAnswer::kLeave);
  KILN_ASSERT_OK_AND_ASSIGN(WatchAnswer watch, elastic_->Watch(held_watch, job, workers[0], 0));
  EXPECT_TRUE(watch.next);
  EXPECT_TRUE(watch.leave);
  EXPECT_FALSE(authenticator_->AuthenticateToken(EnvOf(workers[0]).at("KILN_TOKEN")).ok());
}

// ---------------------------------------------------------------- output and access

TEST_F(ElasticControllerTest, WorkerOutputIsStoredUnderTheParent) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  for (int64_t w : workers) {
    api::TaskReport r;
    r.job_id = w;
    r.phase = api::TaskPhase::kRunning;
    api::OutputChunk log;
    log.from = 0;
    log.to = 8;
    log.lines.push_back({0, clock_.NowMicros(), 'o', "epoch 1"});
    r.log = log;
    api::OutputChunk emetrics;
    emetrics.from = 0;
    emetrics.to = 20;
    emetrics.points.push_back({"loss", "test", 1, 0.5 + static_cast<double>(w), 0});
    r.emetrics = emetrics;
    Apply("a", r);
  }
  KILN_ASSERT_OK_AND_ASSIGN(LogPage page, jobs_->GetLogs(alice_, job, 0, 100));
  std::vector<std::string> texts;
  for (const store::LogLine& line : page.lines) texts.push_back(line.text);
  EXPECT_THAT(texts, UnorderedElementsAre("[w" + std::to_string(workers[0]) + "] epoch 1",
                                          "[w" + std::to_string(workers[1]) + "] epoch 1"));
  KILN_ASSERT_OK_AND_ASSIGN(auto metrics, store_->GetMetrics(job, std::string("loss")));
  EXPECT_THAT(metrics, SizeIs(2));
  // Nothing is recorded under the workers themselves.
  KILN_ASSERT_OK_AND_ASSIGN(auto own_lines, store_->GetLogLines(workers[0], 0, 100));
  EXPECT_THAT(own_lines, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(auto own_metrics, store_->GetMetrics(workers[0], std::nullopt));
  EXPECT_THAT(own_metrics, IsEmpty());

  // Each worker's val_dict_list.json rows at its exit go under the parent too.
  for (int64_t w : workers) {
    api::TaskReport r;
    r.job_id = w;
    r.phase = api::TaskPhase::kExited;
    r.exit_code = 0;
    r.final_metrics.push_back({"accuracy", "test", 3, 0.9, 0});
    Apply("a", r);
    Drain();
  }
  KILN_ASSERT_OK_AND_ASSIGN(auto final_metrics, store_->GetMetrics(job, std::string("accuracy")));
  EXPECT_THAT(final_metrics, SizeIs(2));
  EXPECT_EQ(StateOf(job), JobState::kFinished);
}

TEST_F(ElasticControllerTest, OnlyTheJobsOwnTaskTokensReachItsRendezvous) {
  RegisterAgent("a", 3);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  int64_t other = SubmitSingle();
  Sync("a");
  ASSERT_EQ(StateOf(other), JobState::kRunning);

  elastic::JoinRequest request;
  request.task_id = workers[0];
  request.generation = 1;
  for (const auth::Principal& who : {alice_, admin_, TaskPrincipal(other)}) {
    auto joined = elastic_->Join(who, job, request);
    EXPECT_EQ(joined.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(joined.status().message(), HasSubstr("KILN_TOKEN"));
    auto watched = elastic_->Watch(who, job, workers[0], 1);
    EXPECT_EQ(watched.status().code(), absl::StatusCode::kPermissionDenied);
  }
  // A task token of the job, for a task that is not one of its workers.
  request.task_id = other;
  auto stranger = elastic_->Join(TaskPrincipal(workers[0]), job, request);
  EXPECT_EQ(stranger.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(stranger.status().message(),
              HasSubstr("task " + std::to_string(other) + " is not a worker of job"));
  // A worker that has ended is told to leave.
  Exit(workers[1], std::nullopt, 9);
  request.task_id = workers[1];
  KILN_ASSERT_OK_AND_ASSIGN(JoinAnswer gone,
                            elastic_->Join(TaskPrincipal(workers[0]), job, request));
  EXPECT_EQ(gone.kind, JoinAnswer::kLeave);
}

// ---------------------------------------------------------------- recovery

TEST_F(ElasticControllerTest, RestartKeepsTheCurrentGeneration) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  // Generation 2 (a worker asked for one after a failed collective).
  Join(job, workers[0], 1, 10);
  ASSERT_EQ(Join(job, workers[1], 1, 10).kind, JoinAnswer::kAssigned);
  ASSERT_THAT(Generations(job), SizeIs(2));

  RestartMaster();
  RegisterAgent("a", 2, workers);
  Tick();
  SyncAll();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  EXPECT_THAT(Workers(job), ElementsAreArray(workers)) << "no worker started or stopped";
  for (int64_t w : workers) {
    WatchAnswer watch = Watch(job, w, 2);
    EXPECT_FALSE(watch.next);
    EXPECT_FALSE(watch.leave);
  }
  // A join resent from before the restart still gets its assignment.
  JoinAnswer resent = Held(job, workers[1], 1);
  ASSERT_EQ(resent.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(resent.generation.id, 2);
  EXPECT_EQ(resent.rank, 1);
  EXPECT_THAT(resent.generation.members, ElementsAreArray(workers));
  EXPECT_EQ(resent.generation.store_host, "10.0.0.1");
  EXPECT_EQ(resent.generation.store_port, 40000 + workers[0]);
  EXPECT_THAT(Generations(job), SizeIs(2));
}

TEST_F(ElasticControllerTest, AMemberThatEndedWhileKilndWasDownTriggersANewGeneration) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  // Worker 1's end is stored, but kilnd dies before the controller hears of it.
  api::TaskReport r;
  r.job_id = workers[1];
  r.phase = api::TaskPhase::kExited;
  r.signal = 9;
  Apply("a", r);
  running_["a"].erase(workers[1]);

  RestartMaster();
  RegisterAgent("a", 2, {workers[0]});
  EXPECT_TRUE(Watch(job, workers[0], 1).next);
  JoinAnswer answer = Join(job, workers[0], 1, 12);
  ASSERT_EQ(answer.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(answer.generation.id, 2);
  EXPECT_THAT(answer.generation.members, ElementsAre(workers[0]));
  EXPECT_THAT(answer.generation.reason,
              HasSubstr("worker " + std::to_string(workers[1]) + " ended while kilnd was down"));
  // Its slot is filled again.
  Tick();
  EXPECT_THAT(Workers(job), SizeIs(2));
}

TEST_F(ElasticControllerTest, AfterARestartAWorkerThatFinishedTheTrainingIsNotReplaced) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  Exit(workers[0], 0);  // the training is done

  RestartMaster();
  RegisterAgent("a", 2, {workers[1]});
  Tick();
  EXPECT_THAT(Workers(job), ElementsAre(workers[1])) << "no replacement";
  JoinAnswer answer = Join(job, workers[1], 1, 50);
  EXPECT_EQ(answer.kind, JoinAnswer::kLeave);
  EXPECT_THAT(answer.reason, HasSubstr("finished"));
  Exit(workers[1], 0);
  Tick();
  store::JobRecord parent = Job(job);
  EXPECT_EQ(parent.state, JobState::kFinished);
  EXPECT_EQ(parent.reason, "training finished");
}

TEST_F(ElasticControllerTest, AfterARestartAWorkerAskedToLeaveStillLeavesAndTrainingGoesOn) {
  RegisterAgent("a", 2);
  int64_t job = StartElastic(1, 2);
  std::vector<int64_t> workers = Workers(job);
  ASSERT_THAT(workers, SizeIs(2));
  KILN_ASSERT_OK(elastic_->Scale(alice_, job, 1).status());
  Drain();
  ASSERT_EQ(Join(job, workers[1], 1, 6).kind, JoinAnswer::kLeave);

  RestartMaster();
  RegisterAgent("a", 2, workers);
  EXPECT_TRUE(Watch(job, workers[1], 1).leave);
  EXPECT_FALSE(Watch(job, workers[0], 1).leave);
  // The user scales back up while the leaver is on its way out; its exit 0 is not the
  // end of the training, and its slot goes to a new worker.
  KILN_ASSERT_OK(elastic_->Scale(alice_, job, 2).status());
  Drain();
  Exit(workers[1], 0);
  Tick();
  EXPECT_EQ(StateOf(job), JobState::kRunning);
  std::vector<int64_t> now = Workers(job);
  ASSERT_THAT(now, SizeIs(2));
  EXPECT_EQ(now[0], workers[0]);
  JoinAnswer answer = Join(job, workers[0], 1, 9);
  ASSERT_EQ(answer.kind, JoinAnswer::kAssigned);
  EXPECT_THAT(answer.generation.members, ElementsAre(workers[0]));
}

}  // namespace
}  // namespace kiln::master
