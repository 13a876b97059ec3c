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
