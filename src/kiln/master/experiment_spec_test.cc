#include "kiln/master/experiment_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::master {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = base::Json;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// A valid request to which each test adds or changes the one field it is about.
Json Body(Json extra = Json::object()) {
  Json body = {{"command", {"python3", "train.py"}},
               {"search_space", {{"lr", {{"type", "double"}, {"low", 0.001}, {"high", 0.1}}}}},
               {"objective", {{"metric", "loss"}}}};
  body.update(extra);
  return body;
}

TEST(ParseExperimentSpecTest, AppliesDefaultsToAMinimalRequest) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentSpec spec, ParseExperimentSpec(Body()));
  EXPECT_EQ(spec.name, "");
  EXPECT_EQ(spec.dialect, "native");
  EXPECT_THAT(spec.trial.command, ElementsAre("python3", "train.py"));
  EXPECT_EQ(spec.trial.resources.slots, 1);
  EXPECT_EQ(spec.algorithm, "random");
  EXPECT_TRUE(spec.algorithm_params.is_null());
  EXPECT_TRUE(spec.pruner.is_null());
  EXPECT_FALSE(spec.wmla_space);
  EXPECT_EQ(spec.objective.metric, "loss");
  EXPECT_EQ(spec.objective.goal, ObjectiveGoal::kMinimize);
  EXPECT_EQ(spec.objective.reduce, ObjectiveReduce::kBest);
  EXPECT_EQ(spec.max_trials, -1);
  EXPECT_EQ(spec.max_run_minutes, -1);
  EXPECT_EQ(spec.parallelism, 1);
  EXPECT_EQ(spec.max_retries, 0);
  EXPECT_FALSE(spec.seed.has_value());
}

TEST(ParseExperimentSpecTest, KeepsEveryFieldOfAFullRequest) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentSpec spec, ParseExperimentSpec(Json::parse(R"({
    "name": "fmnist-lr",
    "description": "learning rate and width",
    "command": ["python3", "train.py"],
    "package": {"id": "sha256-abc"},
    "workdir": "src",
    "resources": {"slots": 2, "gpus": 1},
    "env": {"OMP_NUM_THREADS": "2"},
    "config": {"epochs": 3},
    "search_space": {"lr": {"type": "double", "low": 0.0001, "high": 0.1, "log": true},
                     "width": {"type": "int", "low": 32, "high": 512, "step": 32}},
    "algorithm": {"name": "tpe", "params": {"warm_up": 5}},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "objective": {"metric": "accuracy", "goal": "maximize", "reduce": "last"},
    "max_trials": 20,
    "max_run_minutes": 60,
    "parallelism": 4,
    "max_retries": 2,
    "seed": 7
  })")));
  EXPECT_EQ(spec.name, "fmnist-lr");
  EXPECT_EQ(spec.description, "learning rate and width");
  ASSERT_TRUE(spec.trial.package.has_value());
  EXPECT_EQ(spec.trial.package->id, "sha256-abc");
  EXPECT_EQ(spec.trial.workdir, "src");
  EXPECT_EQ(spec.trial.resources.slots, 2);
  EXPECT_EQ(spec.trial.resources.gpus, 1);
  EXPECT_EQ(spec.trial.env.at("OMP_NUM_THREADS"), "2");
  EXPECT_EQ(spec.trial.config, Json({{"epochs", 3}}));
  EXPECT_EQ(spec.search_space["width"]["step"], 32);
  EXPECT_EQ(spec.algorithm, "tpe");
  EXPECT_EQ(spec.algorithm_params, Json({{"warm_up", 5}}));
  EXPECT_EQ(spec.pruner["name"], "median");
  EXPECT_EQ(spec.pruner["n_startup_trials"], 2);
  EXPECT_EQ(spec.objective.metric, "accuracy");
  EXPECT_EQ(spec.objective.goal, ObjectiveGoal::kMaximize);
  EXPECT_EQ(spec.objective.reduce, ObjectiveReduce::kLast);
  EXPECT_EQ(spec.max_trials, 20);
  EXPECT_EQ(spec.max_run_minutes, 60);
  EXPECT_EQ(spec.parallelism, 4);
  EXPECT_EQ(spec.max_retries, 2);
  EXPECT_EQ(spec.seed, 7u);
}

TEST(ParseExperimentSpecTest, AcceptsShorthandsForAlgorithmPrunerAndObjective) {
  KILN_ASSERT_OK_AND_ASSIGN(
      ExperimentSpec spec,
      ParseExperimentSpec(
          Body({{"algorithm", "hyperband"}, {"pruner", "asha"}, {"objective", "acc"}})));
  EXPECT_EQ(spec.algorithm, "hyperband");
  EXPECT_EQ(spec.pruner, Json({{"name", "asha"}}));
  EXPECT_EQ(spec.objective.metric, "acc");
  EXPECT_EQ(spec.objective.goal, ObjectiveGoal::kMinimize);
}

TEST(ParseExperimentSpecTest, RefusesUnknownFieldsNamingThem) {
  EXPECT_THAT(ParseExperimentSpec(Body({{"max_trial", 3}})),
              StatusIs(kInvalid, HasSubstr("unknown field \"max_trial\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"objective", {{"metric", "loss"}, {"mode", "min"}}}})),
              StatusIs(kInvalid, HasSubstr("objective.mode")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"algorithm", {{"name", "tpe"}, {"param", {}}}}})),
              StatusIs(kInvalid, HasSubstr("algorithm.param")));
}

TEST(ParseExperimentSpecTest, RefusesAMissingCommandOrObjective) {
  Json no_command = Body();
  no_command.erase("command");
  EXPECT_THAT(ParseExperimentSpec(no_command),
              StatusIs(kInvalid, HasSubstr("\"command\" is required")));
  Json no_objective = Body();
  no_objective.erase("objective");
  EXPECT_THAT(ParseExperimentSpec(no_objective),
              StatusIs(kInvalid, HasSubstr("\"objective\" is required")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"objective", {{"metric", ""}}}})),
              StatusIs(kInvalid, HasSubstr("objective.metric")));
}

TEST(ParseExperimentSpecTest, PassesTrialErrorsFromTheJobParser) {
  EXPECT_THAT(ParseExperimentSpec(Body({{"resources", {{"slots", 0}}}})),
              StatusIs(kInvalid, HasSubstr("resources.slots")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"env", {{"KILN_X", "1"}}}})),
              StatusIs(kInvalid, HasSubstr("reserved")));
}

TEST(ParseExperimentSpecTest, RefusesBadGoalsReductionsAndShapes) {
  EXPECT_THAT(ParseExperimentSpec(Body({{"objective", {{"metric", "loss"}, {"goal", "min"}}}})),
              StatusIs(kInvalid, HasSubstr("\"minimize\" or \"maximize\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"objective", {{"metric", "loss"}, {"reduce", "mean"}}}})),
              StatusIs(kInvalid, HasSubstr("objective.reduce")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"search_space", {1, 2}}})),
              StatusIs(kInvalid, HasSubstr("search_space")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"algorithm", 3}})),
              StatusIs(kInvalid, HasSubstr("\"algorithm\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"pruner", {{"n_startup_trials", 2}}}})),
              StatusIs(kInvalid, HasSubstr("\"pruner\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"seed", -1}})),
              StatusIs(kInvalid, HasSubstr("\"seed\" must be a non-negative integer")));
  EXPECT_THAT(ParseExperimentSpec(Json::array()), StatusIs(kInvalid, HasSubstr("JSON object")));
}

TEST(ParseExperimentSpecTest, RefusesBudgetsOutOfRange) {
  EXPECT_THAT(ParseExperimentSpec(Body({{"max_trials", 0}})),
              StatusIs(kInvalid, HasSubstr("\"max_trials\" must be -1 (unlimited) or at least 1")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"max_run_minutes", 0}})),
              StatusIs(kInvalid, HasSubstr("\"max_run_minutes\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"parallelism", 0}})),
              StatusIs(kInvalid, HasSubstr("\"parallelism\" must be between 1 and 1000, got 0")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"parallelism", int64_t{1} << 40}})),
              StatusIs(kInvalid, HasSubstr("\"parallelism\"")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"max_retries", -1}})),
              StatusIs(kInvalid, HasSubstr("\"max_retries\"")));
}

TEST(ParseExperimentSpecTest, RefusesNamesWithSlashesOrControlCharacters) {
  EXPECT_THAT(ParseExperimentSpec(Body({{"name", "a/b"}})), StatusIs(kInvalid, HasSubstr("'/'")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"name", "a\nb"}})),
              StatusIs(kInvalid, HasSubstr("control characters")));
  EXPECT_THAT(ParseExperimentSpec(Body({{"name", std::string(129, 'x')}})),
              StatusIs(kInvalid, HasSubstr("at most 128")));
}

TEST(ValidateExperimentSpecTest, NamesWmlaFieldsForTheWmlaDialect) {
  ExperimentSpec spec;
  spec.dialect = "wmla";
  spec.trial.command = {"python3"};
  spec.objective.metric = "loss";
  spec.parallelism = 0;
  EXPECT_THAT(ValidateExperimentSpec(spec), StatusIs(kInvalid, HasSubstr("maxParalleJobNum")));
  spec.parallelism = 1;
  spec.max_trials = 0;
  EXPECT_THAT(ValidateExperimentSpec(spec), StatusIs(kInvalid, HasSubstr("maxJobNum")));
  spec.max_trials = -1;
  spec.objective.metric = "";
  EXPECT_THAT(ValidateExperimentSpec(spec), StatusIs(kInvalid, HasSubstr("objectiveMetric")));
}

TEST(ExperimentSpecStorageTest, RoundTripsEveryField) {
  ExperimentSpec spec;
  spec.name = "s";
  spec.description = "d";
  spec.dialect = "wmla";
  spec.trial.name = "s";
  spec.trial.command = {"python3", "train.py"};
  spec.trial.package = PackageRef{"", "/shared/code"};
  spec.trial.resources = {2, 1};
  spec.trial.env = {{"A", "b"}};
  spec.trial.config = {{"epochs", 3}};
  spec.trial.workdir = "model";
  spec.search_space = Json::array({{{"name", "lr"}, {"type", "Range"}}});
  spec.wmla_space = true;
  spec.algorithm = "Hyperband";
  spec.algorithm_params = Json::array({{{"name", "eta"}, {"value", "3"}}});
  spec.pruner = {{"name", "median"}};
  spec.hyperband_eta = 2.5;
  spec.wmla_experiments = Json::array({{{"id", 1}}});
  spec.seed = uint64_t{18'000'000'000'000'000'000u};
  spec.objective = {"acc", ObjectiveGoal::kMaximize, ObjectiveReduce::kLast};
  spec.additional_metrics = {{"loss", "minimize"}};
  spec.max_trials = 9;
  spec.max_run_minutes = 30;
  spec.parallelism = 3;
  spec.max_retries = 1;
  spec.wmla_request = {{"hpoName", "s"}};

  Json stored = Json::parse(base::DumpJson(ExperimentSpecToJson(spec)));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentSpec got, ExperimentSpecFromJson(stored));
  EXPECT_EQ(got.name, "s");
  EXPECT_EQ(got.description, "d");
  EXPECT_EQ(got.dialect, "wmla");
  EXPECT_EQ(base::DumpJson(JobSpecToJson(got.trial)), base::DumpJson(JobSpecToJson(spec.trial)));
  EXPECT_EQ(got.search_space, spec.search_space);
  EXPECT_TRUE(got.wmla_space);
  EXPECT_EQ(got.algorithm, "Hyperband");
  EXPECT_EQ(got.algorithm_params, spec.algorithm_params);
  EXPECT_EQ(got.pruner, spec.pruner);
  EXPECT_EQ(got.hyperband_eta, 2.5);
  EXPECT_EQ(got.wmla_experiments, spec.wmla_experiments);
  EXPECT_EQ(got.seed, spec.seed);
  EXPECT_EQ(got.objective.metric, "acc");
  EXPECT_EQ(got.objective.goal, ObjectiveGoal::kMaximize);
  EXPECT_EQ(got.objective.reduce, ObjectiveReduce::kLast);
  EXPECT_EQ(got.additional_metrics, spec.additional_metrics);
  EXPECT_EQ(got.max_trials, 9);
  EXPECT_EQ(got.max_run_minutes, 30);
  EXPECT_EQ(got.parallelism, 3);
  EXPECT_EQ(got.max_retries, 1);
  EXPECT_EQ(got.wmla_request, spec.wmla_request);
}

TEST(ExperimentSpecStorageTest, KeepsAbsentOptionalsAbsent) {
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentSpec spec, ParseExperimentSpec(Body()));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentSpec got, ExperimentSpecFromJson(ExperimentSpecToJson(spec)));
  EXPECT_FALSE(got.seed.has_value());
  EXPECT_FALSE(got.hyperband_eta.has_value());
  EXPECT_TRUE(got.pruner.is_null());
  EXPECT_EQ(got.search_space, spec.search_space);
}

TEST(DeriveExperimentSeedTest, IsStableAndDiffersBetweenIds) {
  EXPECT_EQ(DeriveExperimentSeed(1), DeriveExperimentSeed(1));
  EXPECT_NE(DeriveExperimentSeed(1), DeriveExperimentSeed(2));
}

}  // namespace
}  // namespace kiln::master
