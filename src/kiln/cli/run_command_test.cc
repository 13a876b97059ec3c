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
