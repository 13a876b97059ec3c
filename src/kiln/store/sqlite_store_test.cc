#include "kiln/store/sqlite_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::store {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_store_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto store = SqliteStore::Open(dir_ + "/kiln.db");
    KILN_ASSERT_OK(store);
    store_ = std::move(store).value();
    UserRecord u;
    u.username = "ada";
    u.password_hash = "x";
    u.created_at = 1;
    auto created = store_->CreateUser(u);
    KILN_ASSERT_OK(created);
    user_ = *created;
  }
  void TearDown() override {
    store_.reset();
    (void)base::RemoveAll(dir_);
  }

  JobRecord NewJob() {
    JobRecord job;
    job.name = "train";
    job.user_id = user_.id;
    job.spec_json = R"({"command":["true"]})";
    job.created_at = 10;
    auto created = store_->CreateJob(job, {0, 10, "STATE", "QUEUED"});
    KILN_CHECK_OK(created.status());
    return *created;
  }

  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
  UserRecord user_;
};

TEST_F(SqliteStoreTest, DuplicateUserNameIsAlreadyExists) {
  UserRecord u;
  u.username = "ada";
  u.password_hash = "y";
  EXPECT_THAT(store_->CreateUser(u),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"ada\" already exists")));
}

TEST_F(SqliteStoreTest, JobRoundTripsWithUsernameAndEvents) {
  JobRecord job = NewJob();
  job.state = JobState::kRunning;
  job.agent_id = "host-a";
  job.started_at = 20;
  KILN_ASSERT_OK(store_->UpdateJob(job, EventRecord{job.id, 20, "STATE", "RUNNING"}));
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord got, store_->GetJob(job.id));
  EXPECT_EQ(got.state, JobState::kRunning);
  EXPECT_EQ(got.username, "ada");
  EXPECT_EQ(got.agent_id, "host-a");
  EXPECT_EQ(got.started_at, 20);
  EXPECT_FALSE(got.exit_code.has_value());
  KILN_ASSERT_OK_AND_ASSIGN(auto events, store_->ListEvents(job.id));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].message, "RUNNING");
}

TEST_F(SqliteStoreTest, UnknownJobIsNotFound) {
  EXPECT_THAT(store_->GetJob(99), StatusIs(absl::StatusCode::kNotFound, HasSubstr("99")));
  JobRecord ghost;
  ghost.id = 99;
  EXPECT_THAT(store_->UpdateJob(ghost, std::nullopt),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("99")));
}

TEST_F(SqliteStoreTest, ListJobsFiltersByStateAndPaginatesNewestFirst) {
  for (int i = 0; i < 5; ++i) NewJob();
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord third, store_->GetJob(3));
  third.state = JobState::kFinished;
  KILN_ASSERT_OK(store_->UpdateJob(third, std::nullopt));

  JobFilter page;
  page.limit = 2;
  KILN_ASSERT_OK_AND_ASSIGN(auto first, store_->ListJobs(page));
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].id, 5);
  page.before_id = first[1].id;
  KILN_ASSERT_OK_AND_ASSIGN(auto second, store_->ListJobs(page));
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].id, 3);

  JobFilter finished;
  finished.states = {JobState::kFinished};
  KILN_ASSERT_OK_AND_ASSIGN(auto done, store_->ListJobs(finished));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, 3);
}

TEST_F(SqliteStoreTest, TaskOutputAppliesOnceAtTheExpectedOffset) {
  JobRecord job = NewJob();
  TaskOutput batch;
  batch.lines = {{0, 100, 'o', "hello"}, {0, 101, 'e', "oops"}};
  batch.metrics = {{"loss", "test", 1, 0.5, 100}};
  batch.expected_offsets = {{"log", 0}};
  batch.offsets = {{"log", 40}};
  KILN_ASSERT_OK_AND_ASSIGN(int64_t last, store_->AppendTaskOutput(job.id, batch));
  EXPECT_EQ(last, 2);
  // The same batch again (an agent resending after a lost reply) is refused whole.
  EXPECT_THAT(store_->AppendTaskOutput(job.id, batch),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("at offset 40")));
  KILN_ASSERT_OK_AND_ASSIGN(auto lines, store_->GetLogLines(job.id, 0, 100));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1].seq, 2);
  EXPECT_EQ(lines[1].stream, 'e');
  EXPECT_EQ(lines[1].text, "oops");
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(job.id, std::nullopt));
  EXPECT_EQ(points.size(), 1u);
  KILN_ASSERT_OK_AND_ASSIGN(auto offsets, store_->GetStreamOffsets(job.id));
  EXPECT_EQ(offsets["log"], 40);
}

TEST_F(SqliteStoreTest, WorkersAreListedUnderTheirParentOnly) {
  JobRecord parent = NewJob();
  parent.target_workers = 2;
  KILN_ASSERT_OK(store_->UpdateJob(parent, std::nullopt));
  JobRecord worker;
  worker.name = "train-w1";
  worker.user_id = user_.id;
  worker.spec_json = "{}";
  worker.parent_id = parent.id;
  worker.worker_index = 1;
  KILN_ASSERT_OK_AND_ASSIGN(worker, store_->CreateJob(worker, {0, 11, "STATE", "QUEUED"}));

  KILN_ASSERT_OK_AND_ASSIGN(JobRecord read, store_->GetJob(worker.id));
  EXPECT_EQ(read.parent_id, parent.id);
  EXPECT_EQ(read.worker_index, 1);
  KILN_ASSERT_OK_AND_ASSIGN(read, store_->GetJob(parent.id));
  EXPECT_EQ(read.target_workers, 2);
  EXPECT_EQ(read.parent_id, std::nullopt);

  KILN_ASSERT_OK_AND_ASSIGN(auto top, store_->ListJobs({}));
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].id, parent.id);
  JobFilter children;
  children.parent_id = parent.id;
  KILN_ASSERT_OK_AND_ASSIGN(auto workers, store_->ListJobs(children));
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].id, worker.id);
  JobFilter all;
  all.include_workers = true;
  KILN_ASSERT_OK_AND_ASSIGN(auto every, store_->ListJobs(all));
  EXPECT_EQ(every.size(), 2u);

  // A worker's output is stored under its parent; the offsets stay the worker's.
  TaskOutput batch;
  batch.record_under = parent.id;
  batch.lines = {{0, 100, 'o', "[w2] step 1"}};
  batch.metrics = {{"loss", "train", 1, 0.5, 100}};
  batch.offsets = {{"log", 12}};
  KILN_ASSERT_OK(store_->AppendTaskOutput(worker.id, batch).status());
  KILN_ASSERT_OK_AND_ASSIGN(auto lines, store_->GetLogLines(parent.id, 0, 10));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].text, "[w2] step 1");
  KILN_ASSERT_OK_AND_ASSIGN(auto points, store_->GetMetrics(parent.id, std::nullopt));
  EXPECT_EQ(points.size(), 1u);
  KILN_ASSERT_OK_AND_ASSIGN(auto offsets, store_->GetStreamOffsets(worker.id));
  EXPECT_EQ(offsets["log"], 12);
}

TEST_F(SqliteStoreTest, GenerationsRoundTripInOrder) {
  JobRecord job = NewJob();
  GenerationRecord g;
  g.job_id = job.id;
  g.id = 2;
  g.members = {7, 5};
  g.store_address = "10.0.0.7:4000";
  g.started_at = 99;
  g.reason = "worker 6 exited (signal 9)";
  KILN_ASSERT_OK(store_->PutGeneration(g, EventRecord{job.id, 99, "GENERATION", "2"}));
  g.id = 1;
  g.members = {5, 6, 7};
  KILN_ASSERT_OK(store_->PutGeneration(g, std::nullopt));
  KILN_ASSERT_OK_AND_ASSIGN(auto gens, store_->ListGenerations(job.id));
  ASSERT_EQ(gens.size(), 2u);
  EXPECT_EQ(gens[0].id, 1);
  EXPECT_THAT(gens[0].members, ElementsAre(5, 6, 7));
  EXPECT_THAT(gens[1].members, ElementsAre(7, 5));
  EXPECT_EQ(gens[1].store_address, "10.0.0.7:4000");
  EXPECT_EQ(gens[1].reason, "worker 6 exited (signal 9)");
  KILN_ASSERT_OK_AND_ASSIGN(auto events, store_->ListEvents(job.id));
  EXPECT_EQ(events.back().type, "GENERATION");
}

TEST_F(SqliteStoreTest, NativeMetricsAreIdempotentPerWriterSeq) {
  JobRecord job = NewJob();
  std::vector<MetricPoint> pts = {{"acc", "test", 1, 0.8, 5}, {"loss", "test", 1, 0.4, 5}};
  KILN_ASSERT_OK_AND_ASSIGN(bool applied, store_->AppendMetrics(job.id, "w1", 1, pts));
  EXPECT_TRUE(applied);
  KILN_ASSERT_OK_AND_ASSIGN(applied, store_->AppendMetrics(job.id, "w1", 1, pts));
  EXPECT_FALSE(applied);
  KILN_ASSERT_OK_AND_ASSIGN(applied, store_->AppendMetrics(job.id, "w2", 1, pts));
  EXPECT_TRUE(applied);
  KILN_ASSERT_OK_AND_ASSIGN(auto acc, store_->GetMetrics(job.id, std::string("acc")));
  EXPECT_EQ(acc.size(), 2u);
}

TEST_F(SqliteStoreTest, ExpiredTokensAreNotFound) {
  TokenRecord t;
  t.hash = "abc";
  t.kind = TokenKind::kTask;
  t.job_id = 7;
  t.created_at = 1;
  t.expires_at = 100;
  KILN_ASSERT_OK(store_->PutToken(t));
  KILN_ASSERT_OK_AND_ASSIGN(TokenRecord got, store_->GetToken("abc", 50));
  EXPECT_EQ(got.kind, TokenKind::kTask);
  EXPECT_EQ(got.job_id, 7);
  EXPECT_THAT(store_->GetToken("abc", 100),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
  KILN_ASSERT_OK(store_->DeleteJobTokens(7));
  EXPECT_FALSE(store_->GetToken("abc", 50).ok());
}

TEST_F(SqliteStoreTest, DataSurvivesReopen) {
  JobRecord job = NewJob();
  store_.reset();
  KILN_ASSERT_OK_AND_ASSIGN(auto reopened, SqliteStore::Open(dir_ + "/kiln.db"));
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord got, reopened->GetJob(job.id));
  EXPECT_EQ(got.name, "train");
}

ExperimentRecord NewExperiment(int64_t user_id, const std::string& name) {
  ExperimentRecord e;
  e.name = name;
  e.user_id = user_id;
  e.spec_json = R"({"max_trials":4})";
  e.created_at = 30;
  return e;
}

TEST_F(SqliteStoreTest, ExperimentRoundTripsAndNamesAreUnique) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentRecord e,
                            store_->CreateExperiment(NewExperiment(user_.id, "lr-search")));
  EXPECT_GT(e.id, 0);
  EXPECT_THAT(store_->CreateExperiment(NewExperiment(user_.id, "lr-search")),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"lr-search\"")));

  e.state = ExperimentState::kFinished;
  e.reason = "budget spent";
  e.started_at = 31;
  e.finished_at = 40;
  KILN_ASSERT_OK(store_->UpdateExperiment(e));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentRecord got, store_->GetExperimentByName("lr-search"));
  EXPECT_EQ(got.id, e.id);
  EXPECT_EQ(got.username, "ada");
  EXPECT_EQ(got.state, ExperimentState::kFinished);
  EXPECT_EQ(got.spec_json, R"({"max_trials":4})");
  EXPECT_EQ(got.reason, "budget spent");
  EXPECT_EQ(got.started_at, 31);
  EXPECT_EQ(got.finished_at, 40);
  EXPECT_EQ(got.created_at, 30);
}

TEST_F(SqliteStoreTest, UnknownExperimentIsNotFound) {
  EXPECT_THAT(store_->GetExperiment(5), StatusIs(absl::StatusCode::kNotFound, HasSubstr("5")));
  EXPECT_THAT(store_->GetExperimentByName("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"nope\"")));
  ExperimentRecord ghost;
  ghost.id = 5;
  EXPECT_THAT(store_->UpdateExperiment(ghost),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("5")));
  EXPECT_THAT(store_->DeleteExperiment(5), StatusIs(absl::StatusCode::kNotFound, HasSubstr("5")));
  TrialRow orphan;
  orphan.experiment_id = 5;
  EXPECT_THAT(store_->PutTrial(orphan), StatusIs(absl::StatusCode::kNotFound, HasSubstr("5")));
}

TEST_F(SqliteStoreTest, ListExperimentsNewestFirstFilteredByUser) {
  UserRecord bob;
  bob.username = "bob";
  bob.password_hash = "x";
  KILN_ASSERT_OK_AND_ASSIGN(bob, store_->CreateUser(bob));
  KILN_ASSERT_OK(store_->CreateExperiment(NewExperiment(user_.id, "a")).status());
  KILN_ASSERT_OK(store_->CreateExperiment(NewExperiment(bob.id, "b")).status());
  KILN_ASSERT_OK(store_->CreateExperiment(NewExperiment(user_.id, "c")).status());
  KILN_ASSERT_OK_AND_ASSIGN(auto all, store_->ListExperiments(std::nullopt));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "c");
  EXPECT_EQ(all[1].username, "bob");
  KILN_ASSERT_OK_AND_ASSIGN(auto ada, store_->ListExperiments(user_.id));
  ASSERT_EQ(ada.size(), 2u);
  EXPECT_EQ(ada[0].name, "c");
  EXPECT_EQ(ada[1].name, "a");
}

TEST_F(SqliteStoreTest, TrialsAreReplacedByNumberAndDeletedWithTheirExperiment) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentRecord e,
                            store_->CreateExperiment(NewExperiment(user_.id, "s")));
  for (int n : {1, 0}) {
    TrialRow t;
    t.experiment_id = e.id;
    t.number = n;
    t.params_json = R"({"lr":0.1})";
    t.config_json = R"({"lr":0.1,"epochs":3})";
    t.created_at = 50 + n;
    KILN_ASSERT_OK(store_->PutTrial(t));
  }
  KILN_ASSERT_OK_AND_ASSIGN(auto trials, store_->ListTrials(e.id));
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[0].number, 0);
  EXPECT_EQ(trials[0].state, TrialState::kRunning);
  EXPECT_FALSE(trials[0].job_id.has_value());
  EXPECT_FALSE(trials[0].value.has_value());

  TrialRow done = trials[1];
  done.state = TrialState::kComplete;
  done.budget = 9;
  done.parent = 0;
  done.job_id = 12;
  done.job_ids_json = "[11,12]";
  done.attempts = 2;
  done.value = -0.25;
  done.intermediate_json = R"({"1":0.5,"2":-0.25})";
  done.reason = "ok";
  done.started_at = 60;
  done.finished_at = 70;
  KILN_ASSERT_OK(store_->PutTrial(done));
  KILN_ASSERT_OK_AND_ASSIGN(trials, store_->ListTrials(e.id));
  ASSERT_EQ(trials.size(), 2u);
  const TrialRow& got = trials[1];
  EXPECT_EQ(got.state, TrialState::kComplete);
  EXPECT_EQ(got.params_json, R"({"lr":0.1})");
  EXPECT_EQ(got.config_json, R"({"lr":0.1,"epochs":3})");
  EXPECT_EQ(got.budget, 9);
  EXPECT_EQ(got.parent, 0);
  EXPECT_EQ(got.job_id, 12);
  EXPECT_EQ(got.job_ids_json, "[11,12]");
  EXPECT_EQ(got.attempts, 2);
  EXPECT_EQ(got.value, -0.25);
  EXPECT_EQ(got.intermediate_json, R"({"1":0.5,"2":-0.25})");
  EXPECT_EQ(got.reason, "ok");
  EXPECT_EQ(got.created_at, 51);
  EXPECT_EQ(got.started_at, 60);
  EXPECT_EQ(got.finished_at, 70);

  KILN_ASSERT_OK(store_->DeleteExperiment(e.id));
  KILN_ASSERT_OK_AND_ASSIGN(trials, store_->ListTrials(e.id));
  EXPECT_TRUE(trials.empty());
  EXPECT_FALSE(store_->GetExperiment(e.id).ok());
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromANewerKiln) {
  store_.reset();
  {
    KILN_ASSERT_OK_AND_ASSIGN(auto db, SqliteDb::Open(dir_ + "/kiln.db"));
    KILN_ASSERT_OK(db->Exec("PRAGMA user_version = 999"));
  }
  EXPECT_THAT(SqliteStore::Open(dir_ + "/kiln.db"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("schema version 999")));
}

// ---- migration 4: artifacts, models, deployments, replicas, dialect objects ----

TEST_F(SqliteStoreTest, ReplicasAreListedUnderTheirDeploymentOnly) {
  JobRecord plain = NewJob();
  JobRecord replica;
  replica.name = "web-replica-0";
  replica.user_id = user_.id;
  replica.spec_json = "{}";
  replica.deployment_id = 7;
  KILN_ASSERT_OK_AND_ASSIGN(replica, store_->CreateJob(replica, {0, 1, "STATE", "QUEUED"}));
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord got, store_->GetJob(replica.id));
  EXPECT_EQ(got.deployment_id, 7);
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord got_plain, store_->GetJob(plain.id));
  EXPECT_FALSE(got_plain.deployment_id.has_value());

  JobFilter top;
  KILN_ASSERT_OK_AND_ASSIGN(auto jobs, store_->ListJobs(top));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, plain.id);

  JobFilter of_deployment;
  of_deployment.deployment_id = 7;
  KILN_ASSERT_OK_AND_ASSIGN(jobs, store_->ListJobs(of_deployment));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].id, replica.id);
  EXPECT_EQ(jobs[0].deployment_id, 7);

  // Recovery lists every job, replicas included, to re-adopt them.
  JobFilter all;
  all.include_workers = true;
  KILN_ASSERT_OK_AND_ASSIGN(jobs, store_->ListJobs(all));
  EXPECT_EQ(jobs.size(), 2u);
}

TEST_F(SqliteStoreTest, ArtifactsAreReplacedAsASet) {
  JobRecord job = NewJob();
  KILN_ASSERT_OK(store_->PutArtifacts(job.id, {{0, "model/signature.json", "sha256-b", 20, 5},
                                               {0, "model/model.pt", "sha256-a", 1000, 5}}));
  KILN_ASSERT_OK_AND_ASSIGN(auto got, store_->ListArtifacts(job.id));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].path, "model/model.pt");
  EXPECT_EQ(got[0].package_id, "sha256-a");
  EXPECT_EQ(got[0].size, 1000);
  EXPECT_EQ(got[0].job_id, job.id);
  // A resent report replaces the set instead of adding to it.
  KILN_ASSERT_OK(store_->PutArtifacts(job.id, {{0, "model/model.pt", "sha256-c", 7, 6}}));
  KILN_ASSERT_OK_AND_ASSIGN(got, store_->ListArtifacts(job.id));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].package_id, "sha256-c");
  EXPECT_THAT(store_->PutArtifacts(99, {}), StatusIs(absl::StatusCode::kNotFound, HasSubstr("99")));
  KILN_ASSERT_OK_AND_ASSIGN(got, store_->ListArtifacts(99));
  EXPECT_TRUE(got.empty());
}

class RegistryStoreTest : public SqliteStoreTest {
 protected:
  ModelRecord NewModel(const std::string& name) {
    ModelRecord m;
    m.name = name;
    m.user_id = user_.id;
    m.description = "digits";
    m.created_at = 3;
    auto created = store_->CreateModel(m);
    KILN_CHECK_OK(created.status());
    return *created;
  }
  ModelVersionRecord NewVersion(int64_t model_id, const std::string& package) {
    ModelVersionRecord v;
    v.model_id = model_id;
    v.package_id = package;
    v.file_name = "model.pt";
    v.size = 42;
    v.signature_json = R"({"inputs":[],"outputs":[]})";
    v.metrics_json = R"({"accuracy":0.9})";
    v.lineage_json = R"({"job_id":1,"source":"job"})";
    v.created_at = 4;
    auto added = store_->AddModelVersion(v);
    KILN_CHECK_OK(added.status());
    return *added;
  }
  DeploymentRecord NewDeployment(const std::string& name, int64_t model_id, int64_t version) {
    DeploymentRecord d;
    d.name = name;
    d.user_id = user_.id;
    d.model_id = model_id;
    d.version = version;
    d.spec_json = R"({"replicas":1})";
    d.created_at = 5;
    d.updated_at = 5;
    auto created = store_->CreateDeployment(d);
    KILN_CHECK_OK(created.status());
    return *created;
  }
};

TEST_F(RegistryStoreTest, ModelRoundTripsAndNamesAreUnique) {
  ModelRecord m = NewModel("mnist");
  KILN_ASSERT_OK_AND_ASSIGN(ModelRecord got, store_->GetModel(m.id));
  EXPECT_EQ(got.name, "mnist");
  EXPECT_EQ(got.username, "ada");
  EXPECT_EQ(got.description, "digits");
  EXPECT_EQ(got.created_at, 3);
  KILN_ASSERT_OK_AND_ASSIGN(got, store_->GetModelByName("mnist"));
  EXPECT_EQ(got.id, m.id);
  EXPECT_THAT(store_->CreateModel(m),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"mnist\" already exists")));
  EXPECT_THAT(store_->GetModel(99), StatusIs(absl::StatusCode::kNotFound, HasSubstr("99")));
  EXPECT_THAT(store_->GetModelByName("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"nope\"")));
}

TEST_F(RegistryStoreTest, ListModelsNewestFirstFilteredByUser) {
  NewModel("a");
  NewModel("b");
  UserRecord bob;
  bob.username = "bob";
  bob.password_hash = "x";
  KILN_ASSERT_OK_AND_ASSIGN(bob, store_->CreateUser(bob));
  ModelRecord theirs;
  theirs.name = "c";
  theirs.user_id = bob.id;
  KILN_ASSERT_OK(store_->CreateModel(theirs).status());
  KILN_ASSERT_OK_AND_ASSIGN(auto all, store_->ListModels(std::nullopt));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "c");
  EXPECT_EQ(all[0].username, "bob");
  KILN_ASSERT_OK_AND_ASSIGN(auto mine, store_->ListModels(user_.id));
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[0].name, "b");
  EXPECT_EQ(mine[1].name, "a");
}

TEST_F(RegistryStoreTest, VersionsAreNumberedPerModelAndNeverReused) {
  ModelRecord a = NewModel("a");
  ModelRecord b = NewModel("b");
  EXPECT_EQ(NewVersion(a.id, "sha256-1").version, 1);
  EXPECT_EQ(NewVersion(a.id, "sha256-2").version, 2);
  EXPECT_EQ(NewVersion(b.id, "sha256-3").version, 1);
  KILN_ASSERT_OK_AND_ASSIGN(ModelVersionRecord got, store_->GetModelVersion(a.id, 2));
  EXPECT_EQ(got.package_id, "sha256-2");
  EXPECT_EQ(got.file_name, "model.pt");
  EXPECT_EQ(got.size, 42);
  EXPECT_EQ(got.metrics_json, R"({"accuracy":0.9})");
  EXPECT_EQ(got.lineage_json, R"({"job_id":1,"source":"job"})");
  EXPECT_EQ(got.signature_json, R"({"inputs":[],"outputs":[]})");
  // Deleting the latest does not free its number: "version 2" always meant one file.
  KILN_ASSERT_OK(store_->DeleteModelVersion(a.id, 2));
  EXPECT_EQ(NewVersion(a.id, "sha256-4").version, 3);
  KILN_ASSERT_OK_AND_ASSIGN(auto versions, store_->ListModelVersions(a.id));
  ASSERT_EQ(versions.size(), 2u);
  EXPECT_EQ(versions[0].version, 1);
  EXPECT_EQ(versions[1].version, 3);
  EXPECT_THAT(store_->GetModelVersion(a.id, 2),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version 2")));
  EXPECT_THAT(store_->DeleteModelVersion(a.id, 2),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no version 2")));
  ModelVersionRecord orphan;
  orphan.model_id = 99;
  EXPECT_THAT(store_->AddModelVersion(orphan),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no model with id 99")));
}

TEST_F(RegistryStoreTest, DeleteModelRemovesItsVersions) {
  ModelRecord m = NewModel("a");
  NewVersion(m.id, "sha256-1");
  NewVersion(m.id, "sha256-2");
  KILN_ASSERT_OK(store_->DeleteModel(m.id));
  EXPECT_THAT(store_->GetModel(m.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
  KILN_ASSERT_OK_AND_ASSIGN(auto versions, store_->ListModelVersions(m.id));
  EXPECT_TRUE(versions.empty());
  EXPECT_THAT(store_->DeleteModel(m.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
  // The name is free again.
  EXPECT_EQ(NewVersion(NewModel("a").id, "sha256-1").version, 1);
}

TEST_F(RegistryStoreTest, ServedVersionsCannotBeDeleted) {
  ModelRecord m = NewModel("a");
  NewVersion(m.id, "sha256-1");
  NewVersion(m.id, "sha256-2");
  NewVersion(m.id, "sha256-3");
  DeploymentRecord d = NewDeployment("web", m.id, 2);
  // Mid-rollout to 2, one replica still serves version 1.
  KILN_ASSERT_OK(store_->PutReplica({d.id, 11, 1, "h:1", 9}));
  EXPECT_THAT(store_->DeleteModelVersion(m.id, 2),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("deployment \"web\"")));
  EXPECT_THAT(store_->DeleteModelVersion(m.id, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("deployment \"web\"")));
  EXPECT_THAT(store_->DeleteModel(m.id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("deployment \"web\"")));
  KILN_ASSERT_OK(store_->DeleteModelVersion(m.id, 3));
  KILN_ASSERT_OK_AND_ASSIGN(auto versions, store_->ListModelVersions(m.id));
  EXPECT_EQ(versions.size(), 2u);
  // A STOPPED deployment no longer holds its version; a deleted one neither.
  d.state = DeploymentState::kStopped;
  KILN_ASSERT_OK(store_->UpdateDeployment(d));
  KILN_ASSERT_OK(store_->DeleteModelVersion(m.id, 1));
  d.state = DeploymentState::kReady;
  KILN_ASSERT_OK(store_->UpdateDeployment(d));
  KILN_ASSERT_OK(store_->DeleteDeployment(d.id));
  KILN_ASSERT_OK(store_->DeleteModel(m.id));
}

TEST_F(RegistryStoreTest, DeploymentRoundTripsUpdatesAndNamesAreUnique) {
  ModelRecord m = NewModel("a");
  NewVersion(m.id, "sha256-1");
  DeploymentRecord d = NewDeployment("web", m.id, 1);
  KILN_ASSERT_OK_AND_ASSIGN(DeploymentRecord got, store_->GetDeployment(d.id));
  EXPECT_EQ(got.name, "web");
  EXPECT_EQ(got.username, "ada");
  EXPECT_EQ(got.model_id, m.id);
  EXPECT_EQ(got.version, 1);
  EXPECT_EQ(got.state, DeploymentState::kPending);
  EXPECT_EQ(got.spec_json, R"({"replicas":1})");
  EXPECT_EQ(got.created_at, 5);
  EXPECT_THAT(store_->CreateDeployment(d),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("\"web\" already exists")));

  got.state = DeploymentState::kUpdating;
  got.version = 2;
  got.spec_json = R"({"replicas":3})";
  got.reason = "rolling out";
  got.updated_at = 50;
  KILN_ASSERT_OK(store_->UpdateDeployment(got));
  KILN_ASSERT_OK_AND_ASSIGN(got, store_->GetDeploymentByName("web"));
  EXPECT_EQ(got.state, DeploymentState::kUpdating);
  EXPECT_EQ(got.version, 2);
  EXPECT_EQ(got.spec_json, R"({"replicas":3})");
  EXPECT_EQ(got.reason, "rolling out");
  EXPECT_EQ(got.updated_at, 50);
  EXPECT_EQ(got.created_at, 5);

  NewDeployment("api", m.id, 1);
  KILN_ASSERT_OK_AND_ASSIGN(auto all, store_->ListDeployments(std::nullopt));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "api");
  KILN_ASSERT_OK_AND_ASSIGN(auto none, store_->ListDeployments(user_.id + 1));
  EXPECT_TRUE(none.empty());

  KILN_ASSERT_OK(store_->DeleteDeployment(d.id));
  EXPECT_THAT(store_->GetDeployment(d.id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
  EXPECT_THAT(store_->GetDeploymentByName("web"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"web\"")));
  EXPECT_THAT(store_->DeleteDeployment(d.id),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
  EXPECT_THAT(store_->UpdateDeployment(d), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
  // A deleted deployment's name can be taken again.
  NewDeployment("web", m.id, 1);
}

TEST_F(RegistryStoreTest, ReplicasAreReplacedByJobAndGoWithTheirDeployment) {
  ModelRecord m = NewModel("a");
  DeploymentRecord d = NewDeployment("web", m.id, 1);
  KILN_ASSERT_OK(store_->PutReplica({d.id, 12, 1, "", 0}));
  KILN_ASSERT_OK(store_->PutReplica({d.id, 11, 1, "", 0}));
  KILN_ASSERT_OK(store_->PutReplica({d.id, 12, 1, "10.0.0.2:4000", 77}));
  KILN_ASSERT_OK_AND_ASSIGN(auto replicas, store_->ListReplicas(d.id));
  ASSERT_EQ(replicas.size(), 2u);
  EXPECT_EQ(replicas[0].job_id, 11);
  EXPECT_EQ(replicas[0].address, "");
  EXPECT_EQ(replicas[1].job_id, 12);
  EXPECT_EQ(replicas[1].address, "10.0.0.2:4000");
  EXPECT_EQ(replicas[1].ready_at, 77);
  EXPECT_EQ(replicas[1].deployment_id, d.id);
  KILN_ASSERT_OK(store_->DeleteReplica(d.id, 11));
  KILN_ASSERT_OK(store_->DeleteReplica(d.id, 11));  // absent: fine
  KILN_ASSERT_OK_AND_ASSIGN(replicas, store_->ListReplicas(d.id));
  ASSERT_EQ(replicas.size(), 1u);
  EXPECT_THAT(store_->PutReplica({99, 1, 1, "", 0}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no deployment with id 99")));
  KILN_ASSERT_OK(store_->DeleteDeployment(d.id));
  KILN_ASSERT_OK_AND_ASSIGN(replicas, store_->ListReplicas(d.id));
  EXPECT_TRUE(replicas.empty());
}

TEST_F(RegistryStoreTest, DialectObjectsAreKeyedByKindAndId) {
  DialectObject space{"wml_space", "s-1", user_.id, "", R"({"name":"x"})", 1, 1};
  DialectObject def{"wml_model_definition", "s-1", user_.id, "s-1", "{}", 2, 2};
  DialectObject def2{"wml_model_definition", "d-2", user_.id + 1, "s-1", "{}", 3, 3};
  DialectObject def3{"wml_model_definition", "d-3", user_.id, "s-2", "{}", 4, 4};
  for (const auto& o : {space, def, def2, def3}) KILN_ASSERT_OK(store_->PutDialectObject(o));
  KILN_ASSERT_OK_AND_ASSIGN(DialectObject got, store_->GetDialectObject("wml_space", "s-1"));
  EXPECT_EQ(got.body_json, R"({"name":"x"})");
  EXPECT_EQ(got.user_id, user_.id);
  space.body_json = R"({"name":"y"})";
  space.updated_at = 9;
  KILN_ASSERT_OK(store_->PutDialectObject(space));
  KILN_ASSERT_OK_AND_ASSIGN(got, store_->GetDialectObject("wml_space", "s-1"));
  EXPECT_EQ(got.body_json, R"({"name":"y"})");
  EXPECT_EQ(got.updated_at, 9);

  KILN_ASSERT_OK_AND_ASSIGN(
      auto defs, store_->ListDialectObjects("wml_model_definition", std::nullopt, std::nullopt));
  ASSERT_EQ(defs.size(), 3u);
  EXPECT_EQ(defs[0].id, "s-1");
  KILN_ASSERT_OK_AND_ASSIGN(
      defs, store_->ListDialectObjects("wml_model_definition", user_.id, std::nullopt));
  EXPECT_EQ(defs.size(), 2u);
  KILN_ASSERT_OK_AND_ASSIGN(
      defs, store_->ListDialectObjects("wml_model_definition", user_.id, std::string("s-1")));
  ASSERT_EQ(defs.size(), 1u);
  EXPECT_EQ(defs[0].id, "s-1");
  EXPECT_EQ(defs[0].space_id, "s-1");

  KILN_ASSERT_OK(store_->DeleteDialectObject("wml_model_definition", "s-1"));
  KILN_ASSERT_OK(store_->GetDialectObject("wml_space", "s-1").status());
  EXPECT_THAT(store_->GetDialectObject("wml_model_definition", "s-1"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"s-1\"")));
  EXPECT_THAT(store_->DeleteDialectObject("wml_model_definition", "s-1"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ")));
}

TEST_F(SqliteStoreTest, MigratingAVersion3DatabaseKeepsItsRows) {
  EXPECT_EQ(SqliteStore::LatestSchemaVersion(), 4);
  const std::string path = dir_ + "/old.db";
  KILN_ASSERT_OK(SqliteStore::MigrateForTesting(path, 3));
  {
    // Rows as a version-3 kilnd wrote them, with its columns only.
    KILN_ASSERT_OK_AND_ASSIGN(auto db, SqliteDb::Open(path));
    KILN_ASSERT_OK(db->Exec(
        "INSERT INTO users (id, username, password_hash, admin, created_at) "
        "VALUES (1, 'ada', 'x', 1, 1);"
        "INSERT INTO jobs (id, name, user_id, state, spec, created_at, parent_id, worker_index) "
        "VALUES (1, 'old', 1, 'FINISHED', '{}', 2, NULL, 0);"
        "INSERT INTO jobs (id, name, user_id, state, spec, created_at, parent_id, worker_index) "
        "VALUES (2, 'old-worker', 1, 'FINISHED', '{}', 2, 1, 0);"));
  }
  KILN_ASSERT_OK_AND_ASSIGN(auto store, SqliteStore::Open(path));
  KILN_ASSERT_OK_AND_ASSIGN(JobRecord job, store->GetJob(1));
  EXPECT_EQ(job.name, "old");
  EXPECT_EQ(job.state, JobState::kFinished);
  EXPECT_FALSE(job.deployment_id.has_value());
  KILN_ASSERT_OK_AND_ASSIGN(auto top, store->ListJobs(JobFilter{}));
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].id, 1);
  KILN_ASSERT_OK(store->PutArtifacts(1, {{0, "model/model.pt", "sha256-a", 1, 3}}));
  ModelRecord m;
  m.name = "m";
  m.user_id = 1;
  KILN_ASSERT_OK(store->CreateModel(m).status());
}

}  // namespace
}  // namespace kiln::store
