#include "kiln/cli/run_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/agent/package.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

TEST(ParseEnvAssignmentsTest, SplitsAtTheFirstEquals) {
  KILN_ASSERT_OK_AND_ASSIGN(auto env, ParseEnvAssignments({"A=1", "B=x=y", "C=", "A=2"}));
  EXPECT_EQ(env, (std::map<std::string, std::string>{{"A", "2"}, {"B", "x=y"}, {"C", ""}}));
}

TEST(ParseEnvAssignmentsTest, RefusesAMissingEqualsOrKey) {
  EXPECT_THAT(ParseEnvAssignments({"FOO"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--env expects KEY=VALUE, got \"FOO\"")));
  EXPECT_THAT(ParseEnvAssignments({"=1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no KEY")));
}

TEST(BuildJobRequestTest, CarriesEveryFlag) {
  TempDir dir;
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/c.json", R"({"lr": 0.01})"));
  RunOptions options;
  options.slots = 2;
  options.gpus = 1;
  options.name = "fmnist";
  options.env = {"OMP_NUM_THREADS=2"};
  options.config_file = dir.path() + "/c.json";
  options.command = {"python3", "train.py", "--epochs", "2"};
  KILN_ASSERT_OK_AND_ASSIGN(base::Json request, BuildJobRequest(options, "sha256-abc"));
  EXPECT_EQ(request, base::Json::parse(R"({
    "name": "fmnist", "command": ["python3", "train.py", "--epochs", "2"],
    "package": {"id": "sha256-abc"}, "resources": {"slots": 2, "gpus": 1},
    "env": {"OMP_NUM_THREADS": "2"}, "config": {"lr": 0.01}})"));
}

TEST(BuildJobRequestTest, LeavesOutNameAndPackageWhenNotGiven) {
  RunOptions options;
  options.command = {"echo"};
  KILN_ASSERT_OK_AND_ASSIGN(base::Json request, BuildJobRequest(options, std::nullopt));
  EXPECT_FALSE(request.contains("name"));
  EXPECT_FALSE(request.contains("package"));
  EXPECT_FALSE(request.contains("config"));
  EXPECT_EQ(request["resources"], base::Json::parse(R"({"slots": 1, "gpus": 0})"));
}

TEST(BuildJobRequestTest, RefusesBadFlagsWithAHint) {
  RunOptions options;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-- python3 train.py")));
  options.command = {"echo"};
  options.slots = 0;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--slots")));
  options.slots = 1;
  options.gpus = -1;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--gpus")));
}

TEST(ParseWorkersFlagTest, ReadsAStaticCountAndAnElasticRange) {
  KILN_ASSERT_OK_AND_ASSIGN(WorkerCount fixed, ParseWorkersFlag("3"));
  EXPECT_EQ(fixed.min, 3);
  EXPECT_EQ(fixed.max, 3);
  EXPECT_FALSE(fixed.elastic);
  KILN_ASSERT_OK_AND_ASSIGN(WorkerCount range, ParseWorkersFlag("1:4"));
  EXPECT_EQ(range.min, 1);
  EXPECT_EQ(range.max, 4);
  EXPECT_TRUE(range.elastic);
  KILN_ASSERT_OK_AND_ASSIGN(WorkerCount same, ParseWorkersFlag("2:2"));
  EXPECT_TRUE(same.elastic);
  EXPECT_EQ(same.min, 2);
}

TEST(ParseWorkersFlagTest, RefusesBadFormsNamingTheAcceptedOnes) {
  const auto forms = HasSubstr(
      "--workers N for a static job of exactly N workers, or "
      "--workers MIN:MAX for an elastic job");
  for (const char* bad : {"3:1", "0:2", "a:b", "0", "", "2:", ":2", "1:2:3", "-1", "+2", " 2",
                          "1.5", "1-3", "9999999999"}) {
    EXPECT_THAT(ParseWorkersFlag(bad), StatusIs(absl::StatusCode::kInvalidArgument, forms)) << bad;
  }
  EXPECT_THAT(ParseWorkersFlag("3:1"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("MIN (3) is larger than MAX (1)")));
  EXPECT_THAT(ParseWorkersFlag("0:2"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("MIN must be at least 1")));
  EXPECT_THAT(ParseWorkersFlag("a:b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"a:b\" is not MIN:MAX with two whole numbers")));
  EXPECT_THAT(ParseWorkersFlag("0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 1 worker")));
}

TEST(BuildJobRequestTest, StaticWorkersSendsAWorkerCountAndPerWorkerResources) {
  RunOptions options;
  options.command = {"python3", "ddp.py"};
  options.workers = "2";
  options.slots = 2;
  KILN_ASSERT_OK_AND_ASSIGN(base::Json request, BuildJobRequest(options, std::nullopt));
  EXPECT_EQ(request["workers"], 2);
  EXPECT_FALSE(request.contains("min_workers"));
  EXPECT_FALSE(request.contains("max_workers"));
  EXPECT_EQ(request["resources"], base::Json::parse(R"({"slots": 2, "gpus": 0})"));
}

TEST(BuildJobRequestTest, ElasticWorkersSendsMinMaxAndTheElasticOptions) {
  RunOptions options;
  options.command = {"python3", "elastic.py"};
  options.workers = "1:4";
  options.gpus = 1;
  options.min_workers_timeout_s = 120;
  options.max_worker_failures = 5;
  KILN_ASSERT_OK_AND_ASSIGN(base::Json request, BuildJobRequest(options, std::nullopt));
  EXPECT_EQ(request["min_workers"], 1);
  EXPECT_EQ(request["max_workers"], 4);
  EXPECT_EQ(request["min_workers_timeout_s"], 120);
  EXPECT_EQ(request["max_worker_failures"], 5);
  EXPECT_FALSE(request.contains("workers"));
  EXPECT_EQ(request["resources"], base::Json::parse(R"({"slots": 1, "gpus": 1})"));

  options.min_workers_timeout_s.reset();
  options.max_worker_failures.reset();
  KILN_ASSERT_OK_AND_ASSIGN(request, BuildJobRequest(options, std::nullopt));
  EXPECT_FALSE(request.contains("min_workers_timeout_s"));  // the server's default applies
  EXPECT_FALSE(request.contains("max_worker_failures"));
}

TEST(BuildJobRequestTest, ElasticOptionsNeedAnElasticRange) {
  RunOptions options;
  options.command = {"echo"};
  options.min_workers_timeout_s = 60;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--min-workers-timeout applies only to elastic jobs; add "
                                 "--workers MIN:MAX")));
  options.workers = "2";
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--workers MIN:MAX")));
  options.workers = "1:2";
  options.min_workers_timeout_s = -1;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--min-workers-timeout must be 0 or more seconds, got -1")));
  options.min_workers_timeout_s.reset();
  options.workers = "";
  options.max_worker_failures = 3;
  EXPECT_THAT(BuildJobRequest(options, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--max-worker-failures applies only to elastic jobs")));
}

TEST(LoadConfigFileTest, NeedsAJsonObject) {
  TempDir dir;
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/list.json", "[1]"));
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/bad.json", "{"));
  EXPECT_THAT(LoadConfigFile(dir.path() + "/list.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON object")));
  EXPECT_THAT(LoadConfigFile(dir.path() + "/bad.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
  EXPECT_THAT(LoadConfigFile(dir.path() + "/none.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
}

TEST(CountPackageFilesTest, CountsRegularFiles) {
  TempDir dir;
  KILN_ASSERT_OK(base::MakeDirs(dir.path() + "/pkg/sub"));
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/pkg/a.py", "print(1)\n"));
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/pkg/sub/b.txt", "b"));
  KILN_ASSERT_OK_AND_ASSIGN(std::string tar, agent::CreatePackage(dir.path() + "/pkg"));
  KILN_ASSERT_OK_AND_ASSIGN(int64_t files, CountPackageFiles(tar));
  EXPECT_EQ(files, 2);
  EXPECT_FALSE(CountPackageFiles("not a tar").ok());
}

}  // namespace
}  // namespace kiln::cli
