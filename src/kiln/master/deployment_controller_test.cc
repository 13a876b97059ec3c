// deployment_controller_test.cc
//
// Behaviour of deployments as users and replicas see it: the DeploymentController over a
// real JobController, SqliteStore, Authenticator and RoutingTable, with the agent
// simulated through SyncAgent/ApplyReport and replicas announcing themselves with the
// KILN_TOKEN their task was launched with. Job ends are queued and delivered the way
// master.cc posts them; RestartMaster rebuilds the controllers over the same store.
#include "kiln/master/deployment_controller.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/master/testing/controller_fixtures.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::store {
void PrintTo(DeploymentState state, std::ostream* os) { *os << DeploymentStateName(state); }
}  // namespace kiln::store

namespace kiln::master {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Json = base::Json;
using store::DeploymentState;
using store::JobState;

constexpr char kSignature[] = R"({"inputs":[{"name":"x","dtype":"float32","shape":[4]}],)"
                              R"("outputs":[{"name":"y","dtype":"float32","shape":[2]}]})";

class DeploymentControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_deploy_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto opened = store::SqliteStore::Open(dir_ + "/kiln.db");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    authenticator_ = std::make_unique<auth::Authenticator>(*store_, clock_);
    alice_ = testing::AddUser(*store_, clock_.NowMicros(), "alice", false);
    bob_ = testing::AddUser(*store_, clock_.NowMicros(), "bob", false);
    admin_ = testing::AddUser(*store_, clock_.NowMicros(), "root", true);
    model_id_ = AddModel("mnist", alice_, 2);
    RestartMaster();
    RegisterAgent(8);
  }

  void TearDown() override {
    deployments_.reset();
    jobs_.reset();
    store_.reset();
    (void)base::RemoveAll(dir_);
  }

  // A model of `owner` with `versions` versions, each a stored "file" package.
  int64_t AddModel(const std::string& name, const auth::Principal& owner, int versions) {
    store::ModelRecord m;
    m.name = name;
    m.user_id = owner.user_id;
    m.created_at = clock_.NowMicros();
    auto created = store_->CreateModel(m);
    EXPECT_TRUE(created.ok()) << created.status();
    for (int v = 1; v <= versions; ++v) {
      store::PackageRecord p;
      p.id = absl::StrCat("sha256-", name, v);
      p.name = "model.pt";
      p.kind = "file";
      p.size = 10;
      p.created_at = clock_.NowMicros();
      EXPECT_TRUE(store_->PutPackage(p).ok());
      store::ModelVersionRecord mv;
      mv.model_id = created->id;
      mv.package_id = p.id;
      mv.file_name = "model.pt";
      mv.size = 10;
      mv.signature_json = kSignature;
      mv.created_at = clock_.NowMicros();
      auto added = store_->AddModelVersion(mv);
      EXPECT_TRUE(added.ok()) << added.status();
    }
    return created->id;
  }

  // What a (re)started kilnd builds over the same store, in master.cc's order.
  void RestartMaster() {
    deployments_.reset();
    jobs_.reset();
    events_.clear();
    routes_ = std::make_unique<serving::RoutingTable>();
    JobControllerOptions options;
    options.kill_grace_ms = 1000;
    jobs_ = std::make_unique<JobController>(*store_, *authenticator_, clock_, options);
    ASSERT_TRUE(jobs_->Recover().ok());
    DeploymentControllerOptions d;
    d.retire_grace_micros = 0;
    deployments_ = std::make_unique<DeploymentController>(*store_, *jobs_, *routes_, clock_, d);
    absl::Status s = deployments_->Recover();
    ASSERT_TRUE(s.ok()) << s;
    jobs_->AddJobEndObserver([this](int64_t id) { events_.push_back(id); });
  }

  void Drain() {
    while (!events_.empty()) {
      int64_t id = events_.front();
      events_.pop_front();
      deployments_->OnJobEnded(id);
    }
  }

  void Tick() {
    deployments_->Tick();
    Drain();
  }

  void RegisterAgent(int slots) {
    api::AgentHello hello = testing::Hello("a1", slots, {running_.begin(), running_.end()});
    hello.address = "10.0.0.1";
    auto reply = jobs_->RegisterAgent(hello);
    ASSERT_TRUE(reply.ok()) << reply.status();
    Drain();
  }

  // The agent launches what it is given (reporting each RUNNING) and reports the tasks it
  // is told to kill as ended by SIGTERM.
  void Sync() {
    api::SyncRequest request;
    request.running.assign(running_.begin(), running_.end());
    auto reply = jobs_->SyncAgent("a1", request);
    ASSERT_TRUE(reply.ok()) << reply.status();
    for (const api::TaskSpec& task : reply->launch) {
      tasks_[task.job_id] = task;
      running_.insert(task.job_id);
      api::TaskReport r;
      r.job_id = task.job_id;
      r.phase = api::TaskPhase::kRunning;
      r.started_at = clock_.NowMicros();
      Apply(r);
    }
    for (int64_t id : reply->kill) Exit(id, std::nullopt, 15);
    Drain();
  }

  void Exit(int64_t job_id, std::optional<int> code, std::optional<int> signal = std::nullopt) {
    api::TaskReport r;
    r.job_id = job_id;
    r.phase = api::TaskPhase::kExited;
    r.exit_code = code;
    r.signal = signal;
    Apply(r);
    running_.erase(job_id);
    Drain();
  }

  void Apply(const api::TaskReport& task) {
    api::AgentReport report;
    report.tasks.push_back(task);
    auto reply = jobs_->ApplyReport("a1", report);
    EXPECT_TRUE(reply.ok()) << reply.status();
  }

  auth::Principal TaskPrincipal(int64_t job) {
    auto it = tasks_.find(job);
    EXPECT_NE(it, tasks_.end()) << "job " << job << " was never launched";
    if (it == tasks_.end()) return {};
    auto who = authenticator_->AuthenticateToken(it->second.env.at("KILN_TOKEN"));
    EXPECT_TRUE(who.ok()) << who.status();
    return who.ok() ? *who : auth::Principal{};
  }

  absl::Status Ready(int64_t deployment, int64_t job) {
    absl::Status s = deployments_->ReplicaReady(TaskPrincipal(job), deployment, job, "10.0.0.1",
                                                static_cast<int>(9000 + job));
    Drain();
    return s;
  }

  store::DeploymentRecord Create(int replicas, std::optional<int64_t> version = std::nullopt) {
    DeploymentSpec spec;
    spec.name = "digits";
    spec.model = "mnist";
    spec.version = version;
    spec.replicas = replicas;
    auto created = deployments_->Create(alice_, spec);
    EXPECT_TRUE(created.ok()) << created.status();
    Drain();
    return created.ok() ? *created : store::DeploymentRecord{};
  }

  store::DeploymentRecord Get(int64_t id) {
    auto d = deployments_->Get(alice_, std::to_string(id));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : store::DeploymentRecord{};
  }

  // Unfinished replica jobs of deployment `id`, oldest first.
  std::vector<int64_t> Replicas(int64_t id) {
    store::JobFilter f;
    f.deployment_id = id;
    f.states = {JobState::kQueued, JobState::kScheduled, JobState::kRunning};
    f.limit = 1000;
    auto jobs = store_->ListJobs(f);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    std::vector<int64_t> ids;
    for (const auto& j : *jobs) ids.push_back(j.id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  // The job ids the router may send predictions to.
  std::vector<int64_t> Routed(int64_t id) {
    std::vector<int64_t> ids;
    auto route = routes_->Find(id);
    if (!route) return ids;
    for (const auto& r : route->replicas) ids.push_back(r.job_id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  int64_t VersionOf(int64_t job) {
    auto it = tasks_.find(job);
    if (it == tasks_.end()) return 0;
    const auto& cmd = it->second.command;
    auto v = std::find(cmd.begin(), cmd.end(), "--version");
    return v == cmd.end() || v + 1 == cmd.end() ? 0 : std::stoll(*(v + 1));
  }

  // Creates alice's deployment of `replicas` replicas and makes them all ready.
  store::DeploymentRecord CreateReady(int replicas) {
    store::DeploymentRecord d = Create(replicas);
    Sync();
    for (int64_t job : Replicas(d.id)) EXPECT_TRUE(Ready(d.id, job).ok());
    EXPECT_EQ(Get(d.id).state, DeploymentState::kReady);
    return Get(d.id);
  }

  std::string dir_;
  base::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<serving::RoutingTable> routes_;
  std::unique_ptr<JobController> jobs_;
  std::unique_ptr<DeploymentController> deployments_;
  auth::Principal alice_, bob_, admin_;
  int64_t model_id_ = 0;
  std::deque<int64_t> events_;
  std::set<int64_t> running_;
  std::map<int64_t, api::TaskSpec> tasks_;
};

TEST_F(DeploymentControllerTest, CreateStartsReplicaJobsRunningKilnServe) {
  store::DeploymentRecord d = Create(2);
  EXPECT_EQ(d.state, DeploymentState::kPending);
  EXPECT_EQ(d.version, 2);  // the latest
  std::vector<int64_t> replicas = Replicas(d.id);
  ASSERT_THAT(replicas, SizeIs(2));
  Sync();
  const api::TaskSpec& task = tasks_.at(replicas[0]);
  EXPECT_EQ(task.command[0], "kiln-serve");
  EXPECT_THAT(task.command, ::testing::Contains("config.json"));
  EXPECT_EQ(task.package_id, "sha256-mnist2");
  EXPECT_EQ(task.env.at("KILN_DEPLOYMENT_ID"), std::to_string(d.id));
  EXPECT_FALSE(task.env.at("KILN_SERVE_SECRET").empty());
  EXPECT_EQ(task.config["signature"]["inputs"][0]["name"], "x");
  auto job = store_->GetJob(replicas[0]);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->deployment_id, d.id);
  EXPECT_EQ(job->name, "digits-replica-1");
  // Nothing is routed before a replica says it is ready.
  EXPECT_THAT(Routed(d.id), IsEmpty());
}

TEST_F(DeploymentControllerTest, ReadyReplicasAreRoutedAndTheDeploymentBecomesReady) {
  store::DeploymentRecord d = Create(2);
  Sync();
  std::vector<int64_t> replicas = Replicas(d.id);
  KILN_ASSERT_OK(Ready(d.id, replicas[0]));
  EXPECT_EQ(Get(d.id).state, DeploymentState::kReady);
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[0]));
  KILN_ASSERT_OK(Ready(d.id, replicas[1]));
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[0], replicas[1]));
  auto route = routes_->Find(d.id);
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->model_name, "mnist");
  EXPECT_EQ(route->state, "READY");
  EXPECT_EQ(route->replicas[0].host, "10.0.0.1");
  EXPECT_EQ(route->secret, tasks_.at(replicas[0]).env.at("KILN_SERVE_SECRET"));
  Json view = deployments_->DescribeDeployment(Get(d.id));
  EXPECT_EQ(view["ready_replicas"], 2);
  EXPECT_EQ(view["replicas"][0]["state"], "READY");
  EXPECT_FALSE(view.dump().find(route->secret) != std::string::npos) << "the secret leaked";
}

TEST_F(DeploymentControllerTest, OnlyTheReplicasOwnTaskTokenMayAnnounceIt) {
  store::DeploymentRecord d = Create(2);
  Sync();
  std::vector<int64_t> replicas = Replicas(d.id);
  EXPECT_THAT(deployments_->ReplicaReady(alice_, d.id, replicas[0], "h", 1),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("task token")));
  EXPECT_THAT(deployments_->ReplicaReady(TaskPrincipal(replicas[1]), d.id, replicas[0], "h", 1),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("task token")));
  EXPECT_THAT(deployments_->ReplicaReady(TaskPrincipal(replicas[0]), d.id + 1, replicas[0], "h", 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a live replica")));
  EXPECT_THAT(Routed(d.id), IsEmpty());
}

TEST_F(DeploymentControllerTest, RefusesBadRequestsNamingTheField) {
  DeploymentSpec spec;
  spec.model = "mnist";
  spec.name = "bad name";
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"name\"")));
  spec.name = "123";
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("all digits")));
  spec.name = "ok";
  spec.replicas = 0;
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"replicas\"")));
  spec.replicas = 1;
  spec.version = 9;
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version 9")));
  spec.version.reset();
  EXPECT_THAT(deployments_->Create(bob_, spec),  // alice's model
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no model \"mnist\"")));
  spec.slots = 64;  // more than any agent has
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  auto all = deployments_->List(admin_);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(*all, IsEmpty()) << "nothing half-created";
  Create(1);
  spec.slots = 1;
  spec.name = "digits";
  EXPECT_THAT(deployments_->Create(alice_, spec),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
}

TEST_F(DeploymentControllerTest, OthersCannotSeeOrChangeADeployment) {
  store::DeploymentRecord d = Create(1);
  EXPECT_THAT(deployments_->Get(bob_, "digits"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(deployments_->Delete(bob_, d.id),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  auto bobs = deployments_->List(bob_);
  ASSERT_TRUE(bobs.ok());
  EXPECT_THAT(*bobs, IsEmpty());
  KILN_EXPECT_OK(deployments_->Get(admin_, "digits").status());
}

TEST_F(DeploymentControllerTest, ACrashedReplicaLeavesRoutingAndIsReplaced) {
  store::DeploymentRecord d = CreateReady(2);
  std::vector<int64_t> before = Replicas(d.id);
  Exit(before[0], std::nullopt, 9);
  EXPECT_THAT(Routed(d.id), ElementsAre(before[1]));
  std::vector<int64_t> after = Replicas(d.id);
  ASSERT_THAT(after, SizeIs(2));
  EXPECT_EQ(after[0], before[1]);
  Sync();
  KILN_ASSERT_OK(Ready(d.id, after[1]));
  EXPECT_THAT(Routed(d.id), ElementsAre(before[1], after[1]));
  EXPECT_EQ(Get(d.id).state, DeploymentState::kReady);
}

TEST_F(DeploymentControllerTest, AModelThatFailsToLoadFailsTheDeploymentWithTheReason) {
  store::DeploymentRecord d = Create(2);
  Sync();
  std::vector<int64_t> replicas = Replicas(d.id);
  KILN_ASSERT_OK(deployments_->ReplicaFailed(TaskPrincipal(replicas[0]), d.id, replicas[0],
                                             "cannot load model.pt: not a TorchScript archive"));
  Exit(replicas[0], 2);
  store::DeploymentRecord failed = Get(d.id);
  EXPECT_EQ(failed.state, DeploymentState::kFailed);
  EXPECT_THAT(failed.reason, HasSubstr("not a TorchScript archive"));
  Sync();  // the other replica is stopped
  EXPECT_THAT(Replicas(d.id), IsEmpty());
  Tick();
  EXPECT_THAT(Replicas(d.id), IsEmpty()) << "a FAILED deployment starts nothing";
  EXPECT_EQ(routes_->Find(d.id)->state, "FAILED");
}

TEST_F(DeploymentControllerTest, RestartsInARowWithoutAReadyReplicaFailTheDeployment) {
  store::DeploymentRecord d = CreateReady(1);
  for (int i = 0; i < 5; ++i) {
    std::vector<int64_t> replicas = Replicas(d.id);
    ASSERT_THAT(replicas, SizeIs(1)) << "crash " << i;
    Sync();
    Exit(replicas[0], 1);
  }
  EXPECT_EQ(Get(d.id).state, DeploymentState::kFailed);
  EXPECT_THAT(Get(d.id).reason, HasSubstr("5 replicas ended in a row"));
  EXPECT_THAT(Replicas(d.id), IsEmpty());
}

TEST_F(DeploymentControllerTest, RollingUpdateKeepsTheReadyCountUntilTheNewVersionServes) {
  store::DeploymentRecord d = Create(2, 1);
  Sync();
  std::vector<int64_t> old = Replicas(d.id);
  for (int64_t job : old) KILN_ASSERT_OK(Ready(d.id, job));
  DeploymentUpdate u;
  u.version = 2;
  auto updated = deployments_->Update(alice_, d.id, u);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->state, DeploymentState::kUpdating);
  Drain();
  // One new replica at a time; both old ones still serve.
  std::vector<int64_t> all = Replicas(d.id);
  ASSERT_THAT(all, SizeIs(3));
  const int64_t new1 = all[2];
  Sync();
  EXPECT_EQ(VersionOf(new1), 2);
  EXPECT_THAT(Routed(d.id), ElementsAre(old[0], old[1]));
  KILN_ASSERT_OK(Ready(d.id, new1));
  // The oldest old replica left routing before it was stopped.
  EXPECT_THAT(Routed(d.id), ElementsAre(old[1], new1));
  Sync();  // the agent is told to stop it
  all = Replicas(d.id);
  ASSERT_THAT(all, SizeIs(3));  // old[1], new1 and the next new one
  const int64_t new2 = all[2];
  Sync();
  KILN_ASSERT_OK(Ready(d.id, new2));
  EXPECT_THAT(Routed(d.id), ElementsAre(new1, new2));
  Sync();
  EXPECT_THAT(Replicas(d.id), ElementsAre(new1, new2));
  store::DeploymentRecord done = Get(d.id);
  EXPECT_EQ(done.state, DeploymentState::kReady);
  EXPECT_EQ(done.version, 2);
  EXPECT_EQ(routes_->Find(d.id)->version, 2);
}

TEST_F(DeploymentControllerTest, AVersionThatFailsToLoadRollsBackWithTheReason) {
  store::DeploymentRecord d = Create(2, 1);
  Sync();
  std::vector<int64_t> old = Replicas(d.id);
  for (int64_t job : old) KILN_ASSERT_OK(Ready(d.id, job));
  DeploymentUpdate u;
  u.version = 2;
  ASSERT_TRUE(deployments_->Update(alice_, d.id, u).ok());
  Drain();
  Sync();
  const int64_t bad = Replicas(d.id).back();
  KILN_ASSERT_OK(
      deployments_->ReplicaFailed(TaskPrincipal(bad), d.id, bad, "signature mismatch: x"));
  Exit(bad, 2);
  store::DeploymentRecord back = Get(d.id);
  EXPECT_EQ(back.state, DeploymentState::kReady);
  EXPECT_EQ(back.version, 1);
  EXPECT_THAT(back.reason, HasSubstr("rollout to version 2 failed"));
  EXPECT_THAT(back.reason, HasSubstr("signature mismatch"));
  Tick();
  EXPECT_THAT(Replicas(d.id), ElementsAre(old[0], old[1]));
  EXPECT_THAT(Routed(d.id), ElementsAre(old[0], old[1]));
}

TEST_F(DeploymentControllerTest, ScalingUpAndDown) {
  store::DeploymentRecord d = CreateReady(1);
  DeploymentUpdate up;
  up.replicas = 3;
  ASSERT_TRUE(deployments_->Update(alice_, d.id, up).ok());
  Drain();
  std::vector<int64_t> replicas = Replicas(d.id);
  ASSERT_THAT(replicas, SizeIs(3));
  Sync();
  KILN_ASSERT_OK(Ready(d.id, replicas[1]));
  DeploymentUpdate down;
  down.replicas = 1;
  ASSERT_TRUE(deployments_->Update(alice_, d.id, down).ok());
  Drain();
  Sync();
  // The one still starting goes first, then the newest ready one.
  EXPECT_THAT(Replicas(d.id), ElementsAre(replicas[0]));
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[0]));
}

TEST_F(DeploymentControllerTest, DeleteDrainsEveryReplicaThenRemovesTheRecord) {
  store::DeploymentRecord d = CreateReady(2);
  auto deleted = deployments_->Delete(alice_, d.id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->state, DeploymentState::kStopped);
  EXPECT_EQ(routes_->Find(d.id), nullptr) << "out of routing at once";
  Sync();
  EXPECT_THAT(Replicas(d.id), IsEmpty());
  EXPECT_THAT(deployments_->Get(alice_, "digits"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(store_->GetDeployment(d.id), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  Create(1);  // the name is free again
}

TEST_F(DeploymentControllerTest, ARestartedMasterKeepsRoutingToTheRunningReplicas) {
  store::DeploymentRecord d = CreateReady(2);
  std::vector<int64_t> replicas = Replicas(d.id);
  RestartMaster();
  RegisterAgent(8);
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[0], replicas[1]));
  EXPECT_EQ(Get(d.id).state, DeploymentState::kReady);
  Tick();
  EXPECT_THAT(Replicas(d.id), ElementsAre(replicas[0], replicas[1])) << "no extra replica";
  // Crash handling goes on after the restart.
  Exit(replicas[0], std::nullopt, 9);
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[1]));
  EXPECT_THAT(Replicas(d.id), SizeIs(2));
}

TEST_F(DeploymentControllerTest, AnUnreachableReplicaSitsOutACoolDown) {
  store::DeploymentRecord d = CreateReady(2);
  std::vector<int64_t> replicas = Replicas(d.id);
  deployments_->OnReplicaUnreachable(d.id, replicas[0]);
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[1]));
  clock_.AdvanceMicros(3'000'000);
  Tick();
  EXPECT_THAT(Routed(d.id), ElementsAre(replicas[0], replicas[1]));
}

}  // namespace
}  // namespace kiln::master
