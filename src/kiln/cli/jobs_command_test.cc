#include "kiln/cli/jobs_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using ::testing::HasSubstr;
using testing::JobRecord;

// 2026-11-26T10:01:40Z: 100 s after the sample records were created.
constexpr int64_t kNow = 1'795'687'300'000'000;

TEST(RenderJobsTableTest, ShowsOneRowPerJobWithAgesAndDurations) {
  base::Json jobs = {JobRecord(8, "RUNNING"), JobRecord(7, "FAILED", 2, "exited with code 2")};
  jobs[0]["resources"]["gpus"] = 1;
  EXPECT_EQ(RenderJobsTable(jobs, kNow),
            "ID  NAME    USER   STATE    SLOTS  GPUS  AGE    DURATION    EXIT\n"
            "8   fmnist  admin  RUNNING  1      1     1 min  1 min 38 s  -\n"
            "7   fmnist  admin  FAILED   1      0     1 min  41.2 s      2\n");
}

TEST(RenderJobsTableTest, ShowsADashBeforeAJobStarts) {
  base::Json job = JobRecord(9, "QUEUED");
  job["started_at"] = nullptr;
  job["scheduled_at"] = nullptr;
  EXPECT_THAT(RenderJobsTable(base::Json::array({job}), kNow),
              HasSubstr("9   fmnist  admin  QUEUED  1      0     1 min  -         -\n"));
}

TEST(RenderJobDetailsTest, ShowsReasonTimesAndCommand) {
  base::Json job = JobRecord(7, "FAILED", 2, "exited with code 2");
  job["command"] = {"python3", "train.py", "--note", "two words"};
  job["env"] = {{"OMP_NUM_THREADS", "2"}};
  job["config"] = {{"lr", 0.01}};
  std::string text = RenderJobDetails(job, kNow);
  EXPECT_THAT(text, HasSubstr("id:         7\n"));
  EXPECT_THAT(text, HasSubstr("state:      FAILED\n"));
  EXPECT_THAT(text, HasSubstr("reason:     exited with code 2\n"));
  EXPECT_THAT(text, HasSubstr("exit code:  2\n"));
  EXPECT_THAT(text, HasSubstr("command:    python3 train.py --note 'two words'\n"));
  EXPECT_THAT(text, HasSubstr("resources:  1 slots, 0 GPUs\n"));
  EXPECT_THAT(text, HasSubstr("created:    2026-11-26T10:00:00.000000Z (1 min ago)\n"));
  EXPECT_THAT(text, HasSubstr("finished:   2026-11-26T10:00:43.200000Z (56 s ago)\n"));
  EXPECT_THAT(text, HasSubstr("duration:   41.2 s\n"));
  EXPECT_THAT(text, HasSubstr("env:        OMP_NUM_THREADS=2\n"));
  EXPECT_THAT(text, HasSubstr("config:     {\"lr\":0.01}\n"));
}

TEST(RenderJobDetailsTest, LeavesOutAnEmptyReason) {
  std::string text = RenderJobDetails(JobRecord(8, "RUNNING"), kNow);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("reason:")));
  EXPECT_THAT(text, HasSubstr("finished:   -\n"));
}

TEST(RenderMetricsTableTest, ShowsLastStepMinMaxAndCount) {
  base::Json metrics = {
      {"series",
       {{{"name", "loss"},
         {"group", "test"},
         {"points",
          {{{"step", 1}, {"value", 0.9}},
           {{"step", 2}, {"value", 0.51}},
           {{"step", 3}, {"value", 0.6}}}}},
        {{"name", "accuracy"}, {"group", "train"}, {"points", base::Json::array()}}}}};
  EXPECT_EQ(RenderMetricsTable(metrics),
            "NAME      GROUP  LAST  STEP  MIN   MAX  POINTS\n"
            "loss      test   0.6   3     0.51  0.9  3\n"
            "accuracy  train  -     -     -     -    0\n");
}

}  // namespace
}  // namespace kiln::cli
