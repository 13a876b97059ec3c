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

// A running elastic job as ARCHITECTURE.md §5.1 describes its record: two live workers
// (tasks 8 and 10; 9 crashed) and three generations.
base::Json ElasticJobRecord() {
  base::Json job = JobRecord(7, "RUNNING");
  job["agent"] = nullptr;
  job["workers"] = {{"elastic", true}, {"min", 1}, {"max", 4}, {"target", 2}, {"live", 2}};
  job["tasks"] = base::Json::parse(R"([
      {"id": 8, "state": "RUNNING", "agent": "host-a", "exit_code": null, "reason": ""},
      {"id": 9, "state": "FAILED", "agent": "host-b", "exit_code": 137,
       "reason": "killed by signal 9"},
      {"id": 10, "state": "RUNNING", "agent": "host-b", "exit_code": null, "reason": ""}])");
  job["generations"] = base::Json::parse(R"([
      {"id": 1, "world_size": 1, "members": [8], "started_at": "2026-11-26T10:00:03.000000Z",
       "reason": "job started"},
      {"id": 2, "world_size": 2, "members": [8, 9], "started_at": "2026-11-26T10:00:20.000000Z",
       "reason": "task 9 joined"},
      {"id": 3, "world_size": 2, "members": [8, 10],
       "started_at": "2026-11-26T10:01:30.000000Z", "reason": "task 9 ended; task 10 joined"}])");
  return job;
}

TEST(RenderJobsTableTest, ShowsLiveAndMaxWorkersForDistributedJobs) {
  base::Json jobs = {ElasticJobRecord(), JobRecord(6, "FINISHED", 0)};
  EXPECT_EQ(RenderJobsTable(jobs, kNow),
            "ID  NAME    USER   STATE     SLOTS  GPUS  WORKERS  AGE    DURATION    EXIT\n"
            "7   fmnist  admin  RUNNING   1      0     2/4      1 min  1 min 38 s  -\n"
            "6   fmnist  admin  FINISHED  1      0     -        1 min  41.2 s      0\n");
}

TEST(RenderJobDetailsTest, ShowsWorkersTasksAndGenerationsOfADistributedJob) {
  EXPECT_EQ(RenderJobDetails(ElasticJobRecord(), kNow),
            "id:         7\n"
            "name:       fmnist\n"
            "user:       admin\n"
            "state:      RUNNING\n"
            "exit code:  -\n"
            "command:    python3 train.py\n"
            "workers:    2 live (min 1, max 4, target 2)\n"
            "resources:  1 slots, 0 GPUs per worker\n"
            "package:    sha256-abc\n"
            "created:    2026-11-26T10:00:00.000000Z (1 min ago)\n"
            "scheduled:  2026-11-26T10:00:01.000000Z (1 min ago)\n"
            "started:    2026-11-26T10:00:02.000000Z (1 min ago)\n"
            "finished:   -\n"
            "duration:   1 min 38 s\n"
            "tasks:\n"
            "  ID  STATE    AGENT   EXIT  REASON\n"
            "  8   RUNNING  host-a  -     -\n"
            "  9   FAILED   host-b  137   killed by signal 9\n"
            "  10  RUNNING  host-b  -     -\n"
            "generations:\n"
            "  ID  WORLD SIZE  MEMBERS  STARTED    REASON\n"
            "  1   1           8        1 min ago  job started\n"
            "  2   2           8,9      1 min ago  task 9 joined\n"
            "  3   2           8,10     10 s ago   task 9 ended; task 10 joined\n");
}

TEST(RenderJobDetailsTest, SaysAStaticJobIsStatic) {
  base::Json job = JobRecord(7, "RUNNING");
  job["workers"] = {{"elastic", false}, {"min", 2}, {"max", 2}, {"target", 2}, {"live", 2}};
  EXPECT_THAT(RenderJobDetails(job, kNow), HasSubstr("workers:    2 live (static, 2 workers)\n"));
}

TEST(RenderJobDetailsTest, AWorkerNamesItsParent) {
  base::Json job = JobRecord(8, "RUNNING");
  job["parent"] = 7;
  job["worker_index"] = 0;
  EXPECT_THAT(RenderJobDetails(job, kNow),
              HasSubstr("parent:     7 (this is one of its workers; 'kiln logs 7' has every "
                        "worker's output)\n"));
}

TEST(RenderJobDetailsTest, ListsOnlyTheNewestGenerations) {
  base::Json job = ElasticJobRecord();
  job["generations"] = base::Json::array();
  for (int g = 1; g <= 25; ++g) {
    job["generations"].push_back({{"id", g},
                                  {"world_size", 1},
                                  {"members", {8}},
                                  {"started_at", "2026-11-26T10:01:00.000000Z"},
                                  {"reason", "scaled"}});
  }
  std::string text = RenderJobDetails(job, kNow);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("\n  15  ")));
  EXPECT_THAT(text, HasSubstr("\n  16  1"));
  EXPECT_THAT(text, HasSubstr("\n  25  1"));
  EXPECT_THAT(text, HasSubstr("(15 older not shown; --json lists all 25)\n"));
}

TEST(RenderJobDetailsTest, SingleJobsHaveNoWorkerLines) {
  std::string text = RenderJobDetails(JobRecord(8, "RUNNING"), kNow);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("workers")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("tasks:")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("generations:")));
  EXPECT_THAT(text, HasSubstr("resources:  1 slots, 0 GPUs\n"));
}

TEST(RenderScaleResultTest, SaysTheTargetAndTheRange) {
  base::Json job = ElasticJobRecord();
  job["workers"]["target"] = 3;
  EXPECT_EQ(RenderScaleResult(7, 3, job), "job 7: target 3 workers (min 1, max 4; 2 live now)");
  job["workers"].erase("live");
  EXPECT_EQ(RenderScaleResult(7, 3, job), "job 7: target 3 workers (min 1, max 4)");
  EXPECT_EQ(RenderScaleResult(7, 3, base::Json::object()), "job 7: target 3 workers");
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
