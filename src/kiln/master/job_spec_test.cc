#include "kiln/master/job_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::master {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Json = base::Json;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// A valid body to which each test adds the one field it is about.
Json Body(Json extra = Json::object()) {
  Json body = {{"command", {"python3", "train.py"}}};
  body.update(extra);
  return body;
}

TEST(ParseJobSpecTest, AcceptsABodyWithOnlyACommand) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec, ParseJobSpec(Json::parse(R"({"command": ["true"]})")));
  EXPECT_THAT(spec.command, ElementsAre("true"));
  EXPECT_FALSE(spec.package.has_value());
  EXPECT_THAT(spec.env, IsEmpty());
  EXPECT_EQ(spec.config, Json::object());
}

TEST(ParseJobSpecTest, DefaultsTheNameToTheCommandsBasenameWithOneSlotAndNoGpus) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec,
                            ParseJobSpec(Json{{"command", {"/usr/bin/python3", "train.py"}}}));
  EXPECT_EQ(spec.name, "python3");
  EXPECT_EQ(spec.resources.slots, 1);
  EXPECT_EQ(spec.resources.gpus, 0);
}

TEST(ParseJobSpecTest, TreatsNullOptionalFieldsAsAbsent) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec, ParseJobSpec(Body({{"name", nullptr},
                                                             {"package", nullptr},
                                                             {"resources", nullptr},
                                                             {"env", nullptr},
                                                             {"config", nullptr}})));
  EXPECT_EQ(spec.name, "python3");
  EXPECT_FALSE(spec.package.has_value());
  EXPECT_EQ(spec.resources.slots, 1);
  EXPECT_EQ(spec.config, Json::object());
}

TEST(ParseJobSpecTest, KeepsEveryFieldOfAFullRequest) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec, ParseJobSpec(Json::parse(R"({
    "name": "fmnist",
    "command": ["python3", "train.py", "--epochs", "2"],
    "package": {"id": "sha256-abc"},
    "resources": {"slots": 4, "gpus": 2},
    "env": {"OMP_NUM_THREADS": "2", "_x1": ""},
    "config": {"lr": 0.01, "layers": [64, 32]}
  })")));
  EXPECT_EQ(spec.name, "fmnist");
  EXPECT_THAT(spec.command, ElementsAre("python3", "train.py", "--epochs", "2"));
  ASSERT_TRUE(spec.package.has_value());
  EXPECT_EQ(spec.package->id, "sha256-abc");
  EXPECT_EQ(spec.package->path, "");
  EXPECT_EQ(spec.resources.slots, 4);
  EXPECT_EQ(spec.resources.gpus, 2);
  EXPECT_EQ(spec.env.at("OMP_NUM_THREADS"), "2");
  EXPECT_EQ(spec.env.at("_x1"), "");
  EXPECT_EQ(spec.config["layers"], Json({64, 32}));
}

TEST(ParseJobSpecTest, AcceptsAnAbsoluteSharedFolderAsThePackage) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec,
                            ParseJobSpec(Body({{"package", {{"path", "/shared/code"}}}})));
  ASSERT_TRUE(spec.package.has_value());
  EXPECT_EQ(spec.package->path, "/shared/code");
  EXPECT_EQ(spec.package->id, "");
}

TEST(ParseJobSpecTest, SpecParsesBackFromItsStoredJson) {
  // The master stores JobSpecToJson and parses it again after a restart.
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec,
                            ParseJobSpec(Body({{"name", ""},
                                               {"package", {{"path", "/shared/code"}}},
                                               {"resources", {{"slots", 3}, {"gpus", 1}}},
                                               {"env", {{"A", "1"}}},
                                               {"config", {{"lr", 0.5}}}})));
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec again, ParseJobSpec(JobSpecToJson(spec)));
  EXPECT_EQ(JobSpecToJson(again), JobSpecToJson(spec));
  EXPECT_EQ(again.name, "");

  KILN_ASSERT_OK_AND_ASSIGN(JobSpec bare, ParseJobSpec(Body()));
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec bare_again, ParseJobSpec(JobSpecToJson(bare)));
  EXPECT_FALSE(bare_again.package.has_value());
}

TEST(ParseJobSpecTest, RefusesABodyThatIsNotAnObject) {
  EXPECT_THAT(ParseJobSpec(Json::array({"python3"})),
              StatusIs(kInvalid, HasSubstr("must be a JSON object")));
  EXPECT_THAT(ParseJobSpec(Json("python3")), StatusIs(kInvalid, HasSubstr("JSON object")));
}

TEST(ParseJobSpecTest, RefusesAMissingOrEmptyCommand) {
  EXPECT_THAT(ParseJobSpec(Json::object()),
              StatusIs(kInvalid, HasSubstr("\"command\" must be a non-empty list of strings")));
  EXPECT_THAT(ParseJobSpec(Json{{"command", Json::array()}}),
              StatusIs(kInvalid, HasSubstr("non-empty list")));
  EXPECT_THAT(ParseJobSpec(Json::parse(R"({"command": [""]})")),
              StatusIs(kInvalid, HasSubstr("non-empty list")));
}

TEST(ParseJobSpecTest, RefusesACommandWithArgumentsThatAreNotStrings) {
  EXPECT_THAT(ParseJobSpec(Json::parse(R"({"command": ["python3", 2]})")),
              StatusIs(kInvalid, HasSubstr("field \"command\" must be a list of strings")));
  EXPECT_THAT(ParseJobSpec(Json::parse(R"({"command": "python3 train.py"})")),
              StatusIs(kInvalid, HasSubstr("must be a list of strings, got string")));
}

TEST(ParseJobSpecTest, RefusesAnArgumentWithANulByte) {
  EXPECT_THAT(ParseJobSpec(Json{{"command", {"python3", std::string("a\0b", 3)}}}),
              StatusIs(kInvalid, HasSubstr("NUL byte")));
}

TEST(ParseJobSpecTest, RefusesAnUnknownFieldAndListsTheKnownOnes) {
  EXPECT_THAT(ParseJobSpec(Body({{"slots", 2}})),
              StatusIs(kInvalid, AllOf(HasSubstr("unknown field \"slots\""),
                                       HasSubstr("known fields: name, command, package"))));
}

TEST(ParseJobSpecTest, RefusesANameThatIsNotAStringOrTooLong) {
  EXPECT_THAT(ParseJobSpec(Body({{"name", 7}})),
              StatusIs(kInvalid, HasSubstr("field \"name\" must be a string")));
  EXPECT_THAT(ParseJobSpec(Body({{"name", std::string(201, 'n')}})),
              StatusIs(kInvalid, HasSubstr("at most 200 characters")));
  KILN_EXPECT_OK(ParseJobSpec(Body({{"name", std::string(200, 'n')}})));
}

TEST(ParseJobSpecTest, RefusesAPackageThatIsNotAnObject) {
  EXPECT_THAT(ParseJobSpec(Body({{"package", "sha256-abc"}})),
              StatusIs(kInvalid, HasSubstr("field \"package\" must be {\"id\"")));
}

TEST(ParseJobSpecTest, RefusesAPackageWithNeitherOrBothOfIdAndPath) {
  EXPECT_THAT(ParseJobSpec(Body({{"package", Json::object()}})),
              StatusIs(kInvalid, HasSubstr("needs exactly one of \"id\"")));
  EXPECT_THAT(ParseJobSpec(Body({{"package", {{"id", "sha256-a"}, {"path", "/x"}}}})),
              StatusIs(kInvalid, HasSubstr("needs exactly one of \"id\"")));
  EXPECT_THAT(ParseJobSpec(Body({{"package", {{"id", 5}}}})),
              StatusIs(kInvalid, HasSubstr("field \"id\" must be a string")));
}

TEST(ParseJobSpecTest, RefusesAPackageIdThatIsNotASha256Id) {
  EXPECT_THAT(ParseJobSpec(Body({{"package", {{"id", "md5-abc"}}}})),
              StatusIs(kInvalid, HasSubstr("package id \"md5-abc\" is not a Kiln package id")));
}

TEST(ParseJobSpecTest, RefusesARelativePackagePath) {
  EXPECT_THAT(ParseJobSpec(Body({{"package", {{"path", "code/train"}}}})),
              StatusIs(kInvalid, HasSubstr("package path \"code/train\" must be absolute")));
}

TEST(ParseJobSpecTest, RefusesZeroSlotsAndMoreSlotsThanTheLimit) {
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"slots", 0}}}})),
              StatusIs(kInvalid, HasSubstr("resources.slots must be between 1 and 4096, got 0")));
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"slots", 4097}}}})),
              StatusIs(kInvalid, HasSubstr("got 4097")));
  // Far outside int: must not wrap around into the accepted range.
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"slots", int64_t{1} << 32}}}})),
              StatusIs(kInvalid, HasSubstr("resources.slots")));
  KILN_EXPECT_OK(ParseJobSpec(Body({{"resources", {{"slots", 4096}}}})));
}

TEST(ParseJobSpecTest, RefusesNegativeOrTooManyGpus) {
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"gpus", -1}}}})),
              StatusIs(kInvalid, HasSubstr("resources.gpus must be between 0 and 256, got -1")));
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"gpus", 257}}}})),
              StatusIs(kInvalid, HasSubstr("got 257")));
}

TEST(ParseJobSpecTest, RefusesResourcesOfTheWrongType) {
  EXPECT_THAT(ParseJobSpec(Body({{"resources", 2}})),
              StatusIs(kInvalid, HasSubstr("field \"resources\" must be {\"slots\": N")));
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"slots", "2"}}}})),
              StatusIs(kInvalid, HasSubstr("field \"slots\" must be an integer, got string")));
  EXPECT_THAT(ParseJobSpec(Body({{"resources", {{"gpus", 1.5}}}})),
              StatusIs(kInvalid, HasSubstr("field \"gpus\" must be an integer")));
}

TEST(ParseJobSpecTest, RefusesEnvNamesKilnReservesForItself) {
  EXPECT_THAT(ParseJobSpec(Body({{"env", {{"KILN_TOKEN", "forged"}}}})),
              StatusIs(kInvalid, HasSubstr("env name \"KILN_TOKEN\" is reserved")));
  EXPECT_THAT(ParseJobSpec(Body({{"env", {{"KILN_", ""}}}})),
              StatusIs(kInvalid, HasSubstr("reserved")));
}

TEST(ParseJobSpecTest, RefusesEnvNamesThatAreNotVariableNames) {
  for (const char* name : {"", "1ABC", "A-B", "A=B", "A B", "Ä"}) {
    EXPECT_THAT(ParseJobSpec(Body({{"env", {{name, "x"}}}})),
                StatusIs(kInvalid, HasSubstr("is not a valid variable name")))
        << "name: " << name;
  }
  EXPECT_THAT(ParseJobSpec(Body({{"env", {{std::string(257, 'A'), "x"}}}})),
              StatusIs(kInvalid, HasSubstr("is not a valid variable name")));
}

TEST(ParseJobSpecTest, RefusesEnvThatIsNotAnObjectOfStrings) {
  EXPECT_THAT(ParseJobSpec(Body(Json::parse(R"({"env": ["A=1"]})"))),
              StatusIs(kInvalid, HasSubstr("field \"env\" must be an object of strings")));
  EXPECT_THAT(ParseJobSpec(Body({{"env", {{"A", 1}}}})),
              StatusIs(kInvalid, HasSubstr("field \"env.A\" must be a string")));
  EXPECT_THAT(ParseJobSpec(Body({{"env", {{"A", std::string("a\0b", 3)}}}})),
              StatusIs(kInvalid, HasSubstr("env value of A contains a NUL byte")));
}

TEST(ParseJobSpecTest, RefusesAConfigThatIsNotAnObject) {
  EXPECT_THAT(
      ParseJobSpec(Body(Json::parse(R"({"config": [1, 2]})"))),
      StatusIs(kInvalid, HasSubstr("field \"config\" must be an object of hyperparameters")));
  EXPECT_THAT(ParseJobSpec(Body({{"config", "lr=0.1"}})),
              StatusIs(kInvalid, HasSubstr("\"config\" must be an object")));
}

// `levels` containers, the config object itself included.
Json ConfigNested(int levels) {
  std::string text = R"({"command": ["x"], "config": {"a": )";
  text += std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}}";
  return Json::parse(text);
}

TEST(ParseJobSpecTest, AcceptsAConfigNested64LevelsDeep) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec, ParseJobSpec(ConfigNested(64)));
  EXPECT_TRUE(spec.config.contains("a"));
}

TEST(ParseJobSpecTest, RefusesAConfigNestedDeeperThan64Levels) {
  EXPECT_THAT(ParseJobSpec(ConfigNested(65)),
              StatusIs(kInvalid, HasSubstr("\"config\" is nested more than 64 levels deep")));
  // Found by job_request_fuzz: copying this config overflowed the stack.
  EXPECT_THAT(ParseJobSpec(ConfigNested(500'000)), StatusIs(kInvalid, HasSubstr("nested")));
}

}  // namespace
}  // namespace kiln::master

namespace kiln::master {
namespace {

TEST(ParseWorkersTest, StaticJobHasExactlyNWorkers) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec, ParseJobSpec(Body({{"workers", 3}})));
  ASSERT_TRUE(spec.workers.has_value());
  EXPECT_FALSE(spec.workers->elastic);
  EXPECT_EQ(spec.workers->min, 3);
  EXPECT_EQ(spec.workers->max, 3);
}

TEST(ParseWorkersTest, ElasticJobDefaultsAndRoundTrip) {
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec spec,
                            ParseJobSpec(Body({{"min_workers", 1}, {"max_workers", 4}})));
  ASSERT_TRUE(spec.workers.has_value());
  EXPECT_TRUE(spec.workers->elastic);
  EXPECT_EQ(spec.workers->min, 1);
  EXPECT_EQ(spec.workers->max, 4);
  EXPECT_EQ(spec.workers->min_workers_timeout_s, 600);
  EXPECT_EQ(spec.workers->max_worker_failures, 15);
  KILN_ASSERT_OK_AND_ASSIGN(JobSpec back, JobSpecFromStoredJson(JobSpecToJson(spec)));
  ASSERT_TRUE(back.workers.has_value());
  EXPECT_TRUE(back.workers->elastic);
  EXPECT_EQ(back.workers->max, 4);
  EXPECT_EQ(back.workers->max_worker_failures, 15);
  // Only max: min defaults to 1.
  KILN_ASSERT_OK_AND_ASSIGN(spec, ParseJobSpec(Body({{"max_workers", 2}})));
  EXPECT_EQ(spec.workers->min, 1);
  EXPECT_FALSE(ParseJobSpec(Body()).value().workers.has_value());
}

TEST(ParseWorkersTest, RefusesContradictoryOrOutOfRangeCounts) {
  EXPECT_THAT(ParseJobSpec(Body({{"min_workers", 3}, {"max_workers", 2}})),
              StatusIs(kInvalid, HasSubstr("min_workers (3) must not exceed max_workers (2)")));
  EXPECT_THAT(ParseJobSpec(Body({{"workers", 2}, {"max_workers", 2}})),
              StatusIs(kInvalid, HasSubstr("not both")));
  EXPECT_THAT(ParseJobSpec(Body({{"workers", 0}})),
              StatusIs(kInvalid, HasSubstr("\"workers\" must be between 1 and 1024, got 0")));
  EXPECT_THAT(ParseJobSpec(Body({{"min_workers", "two"}})),
              StatusIs(kInvalid, HasSubstr("min_workers")));
  EXPECT_THAT(ParseJobSpec(Body({{"workers", 2}, {"min_workers_timeout_s", 5}})),
              StatusIs(kInvalid, HasSubstr("apply to elastic jobs only")));
  EXPECT_THAT(ParseJobSpec(Body({{"max_worker_failures", 5}})),
              StatusIs(kInvalid, HasSubstr("add \"min_workers\"")));
  EXPECT_THAT(
      ParseJobSpec(Body({{"max_workers", 2}, {"min_workers_timeout_s", -1}})),
      StatusIs(kInvalid, HasSubstr("min_workers_timeout_s\" must be between 0 and 2592000")));
}

}  // namespace
}  // namespace kiln::master
