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

}  // namespace
}  // namespace kiln::store
