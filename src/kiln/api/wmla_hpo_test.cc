// wmla_hpo_test.cc

#include "kiln/api/wmla_hpo.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::api {
namespace {

using base::Json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// The hpo_input of IBM's HPO notebook (wmla-api.md §1.4).
Json NotebookInput() {
  return Json::parse(R"({
    "modelSpec": {"sigName": "wml-ig",
                  "args": "--exec-start PyTorch --cs-datastore-meta type=fs --python-version 3.6 --gpuPerWorker 1 --model-main pytorch_mnist_HPO.py --model-dir pytorch_hpo --epochs 3 --debug-level debug"},
    "algoDef": {"algorithm": "Random", "maxRunTime": 60, "maxJobNum": 4, "maxParalleJobNum": 2,
                "objectiveMetric": "loss", "objective": "Minimize",
                "algoParams": [{"name": "RandomSeed", "value": 7}]},
    "hyperParams": [
      {"name": "learning_rate", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0.001, "maxDbVal": 0.1},
      {"name": "batch_size", "type": "Discrete", "dataType": "INT", "discreteIntVal": [32, 64]},
      {"name": "optimizer", "type": "DISCRETE", "dataType": "STR", "discreateStrVal": ["sgd", "adam"]}]
  })");
}

absl::StatusOr<master::ExperimentSpec> Convert(const Json& input) {
  return HpoInputToSpec(input, WmlaJobOptions{});
}

// NotebookInput with `path` (a JSON pointer) replaced by `value`, or removed when null.
Json With(const std::string& path, const Json& value) {
  Json input = NotebookInput();
  if (value.is_null()) {
    Json::json_pointer ptr(path);
    input[ptr.parent_pointer()].erase(ptr.back());
  } else {
    input[Json::json_pointer(path)] = value;
  }
  return input;
}

TEST(HpoInputToSpecTest, ConvertsTheNotebookRequest) {
  KILN_ASSERT_OK_AND_ASSIGN(master::ExperimentSpec spec, Convert(NotebookInput()));
  EXPECT_EQ(spec.dialect, "wmla");
  EXPECT_EQ(spec.name, "");
  EXPECT_THAT(spec.trial.command, ElementsAre("python3", "pytorch_mnist_HPO.py", "--epochs", "3"));
  EXPECT_EQ(spec.trial.workdir, "pytorch_hpo");
  EXPECT_EQ(spec.trial.resources.gpus, 1);
  EXPECT_EQ(spec.algorithm, "Random");
  EXPECT_EQ(spec.max_run_minutes, 60);
  EXPECT_EQ(spec.max_trials, 4);
  EXPECT_EQ(spec.parallelism, 2);
  EXPECT_EQ(spec.objective.metric, "loss");
  EXPECT_EQ(spec.objective.goal, master::ObjectiveGoal::kMinimize);
  EXPECT_EQ(spec.objective.reduce, master::ObjectiveReduce::kBest);
  EXPECT_TRUE(spec.wmla_space);
  EXPECT_EQ(spec.search_space, NotebookInput()["hyperParams"]);
  // Values are strings in WMLA; a number is taken as its text.
  EXPECT_EQ(spec.algorithm_params, Json::parse(R"([{"name": "RandomSeed", "value": "7"}])"));
  EXPECT_EQ(spec.wmla_request, NotebookInput());
}

TEST(HpoInputToSpecTest, AppliesWmlaDefaults) {
  Json input = Json::parse(R"({"modelSpec": {"args": "--model-main t.py"},
      "algoDef": {"algorithm": "Tpe", "objectiveMetric": "acc", "objective": "MAXIMIZE"},
      "hyperParams": [{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0, "maxDbVal": 1}]})");
  KILN_ASSERT_OK_AND_ASSIGN(master::ExperimentSpec spec, Convert(input));
  EXPECT_EQ(spec.max_run_minutes, -1);
  EXPECT_EQ(spec.max_trials, -1);
  EXPECT_EQ(spec.parallelism, 1);
  EXPECT_EQ(spec.objective.goal, master::ObjectiveGoal::kMaximize);
  EXPECT_TRUE(spec.algorithm_params.is_null());
  EXPECT_FALSE(spec.hyperband_eta.has_value());
}

TEST(HpoInputToSpecTest, ReadsNumbersGivenAsStringsAndTheCorrectlySpelledParallelism) {
  Json input = NotebookInput();
  input["algoDef"]["maxJobNum"] = "8";
  input["algoDef"]["maxRunTime"] = -1.0;
  input["algoDef"].erase("maxParalleJobNum");
  input["algoDef"]["maxParallelJobNum"] = " 3 ";
  input["algoDef"]["hyperbandEta"] = "2.5";
  KILN_ASSERT_OK_AND_ASSIGN(master::ExperimentSpec spec, Convert(input));
  EXPECT_EQ(spec.max_trials, 8);
  EXPECT_EQ(spec.max_run_minutes, -1);
  EXPECT_EQ(spec.parallelism, 3);
  EXPECT_EQ(spec.hyperband_eta, 2.5);
}

TEST(HpoInputToSpecTest, ReadsNameAndAdditionalMetrics) {
  Json input = NotebookInput();
  input["hpoName"] = "mnist-lr";
  input["algoDef"]["additionalMetrics"] = {
      {"acc", "Maximize"}, {"loss2", "minimize"}, {"lr", "whatever"}};
  KILN_ASSERT_OK_AND_ASSIGN(master::ExperimentSpec spec, Convert(input));
  EXPECT_EQ(spec.name, "mnist-lr");
  EXPECT_THAT(
      spec.additional_metrics,
      ElementsAre(Pair("acc", "maximize"), Pair("loss2", "minimize"), Pair("lr", "latest")));
}

TEST(HpoInputToSpecTest, TakesExperimentsForExperimentGridSearch) {
  Json input = NotebookInput();
  input.erase("hyperParams");
  input["algoDef"]["algorithm"] = "ExperimentGridSearch";
  input["experiments"] = Json::parse(R"([
      {"id": 1, "hyperParams": [{"name": "learning_rate", "dataType": "DOUBLE", "fixedVal": "0.1"}]}])");
  KILN_ASSERT_OK_AND_ASSIGN(master::ExperimentSpec spec, Convert(input));
  EXPECT_EQ(spec.wmla_experiments, input["experiments"]);
  EXPECT_EQ(spec.search_space, Json::array());
}

TEST(HpoInputToSpecTest, RefusesBadInputNamingTheField) {
  struct Case {
    Json input;
    std::string message;
  };
  std::vector<Case> cases = {
      {Json::array(), "must be a JSON object with modelSpec, algoDef and hyperParams"},
      {With("/hpoNam", "x"), "unknown field \"hpoNam\" in the hpo_input; known there: hpoName"},
      {With("/hpoName", 7), "field \"hpoName\" must be a string"},
      {With("/hpoName", "a/b"), "\"hpoName\" (\"a/b\") may not contain '/'"},
      {With("/modelSpec", nullptr), "field \"modelSpec\" is required"},
      {With("/modelSpec/args", nullptr), "field \"modelSpec.args\" is required"},
      {With("/modelSpec/args", 3), "field \"modelSpec.args\" must be a string"},
      {With("/modelSpec/args", "--exec-start PyTorch"),
       "field \"modelSpec.args\": --model-main is missing"},
      {With("/modelSpec/args", "--model-main t.py --numWorker 4"),
       "field \"modelSpec.args\": --numWorker 4 needs a distributed framework"},
      {With("/modelSpec/extra", 1), "unknown field \"modelSpec.extra\""},
      {With("/algoDef", nullptr), "field \"algoDef\" is required"},
      {With("/algoDef/algorithm", nullptr), "field \"algoDef.algorithm\" is required"},
      {With("/algoDef/algorithm", ""), "field \"algoDef.algorithm\" is required"},
      {With("/algoDef/maxJobs", 3), "unknown field \"algoDef.maxJobs\""},
      {With("/algoDef/maxJobNum", "many"),
       "field \"algoDef.maxJobNum\" must be an integer (e.g. 20, or -1 for unlimited), got "
       "\"many\""},
      {With("/algoDef/maxJobNum", 0), "field \"maxJobNum\" must be -1 (unlimited) or at least 1"},
      {With("/algoDef/maxJobNum", 2.5), "field \"algoDef.maxJobNum\" must be an integer"},
      {With("/algoDef/maxRunTime", 0), "field \"maxRunTime\" must be -1 (unlimited) or at least 1"},
      {With("/algoDef/maxParalleJobNum", 0), "field \"maxParalleJobNum\" must be between 1"},
      {With("/algoDef/maxParalleJobNum", int64_t{1} << 40),
       "field \"maxParalleJobNum\" must be between 1 and 1000"},
      {With("/algoDef/objectiveMetric", nullptr), "field \"algoDef.objectiveMetric\" is required"},
      {With("/algoDef/objective", "lowest"),
       "field \"algoDef.objective\" must be \"minimize\" or \"maximize\", got \"lowest\""},
      {With("/algoDef/additionalMetrics", Json::array()),
       "field \"algoDef.additionalMetrics\" must map metric names"},
      {With("/algoDef/hyperbandEta", "three"), "field \"algoDef.hyperbandEta\" must be a number"},
      {With("/algoDef/algoParams", Json::object()), "field \"algoDef.algoParams\" must be a list"},
      {With("/algoDef/algoParams", Json::parse(R"([{"value": "1"}])")),
       "field \"algoDef.algoParams[0]\" must be {\"name\": \"...\", \"value\": \"...\"}"},
      {With("/algoDef/algoParams", Json::parse(R"([{"name": "eta", "value": [1]}])")),
       "field \"algoDef.algoParams[0].value\" must be a string"},
      {With("/hyperParams", nullptr), "field \"hyperParams\" is required: the space to search"},
      {With("/hyperParams", Json::array()), "field \"hyperParams\" is required"},
      {With("/hyperParams", Json::object()), "field \"hyperParams\" must be a list"},
      {With("/experiments", Json::parse(R"([{"id": 1, "hyperParams": []}])")),
       "fields \"hyperParams\" and \"experiments\" exclude each other"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input.dump());
    EXPECT_THAT(Convert(c.input),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
}

TEST(HpoInputToSpecTest, RefusesExperimentsWithOtherAlgorithms) {
  Json input = NotebookInput();
  input.erase("hyperParams");
  input["experiments"] = Json::parse(R"([{"id": 1, "hyperParams": []}])");
  EXPECT_THAT(Convert(input),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("field \"experiments\" is for algoDef.algorithm "
                                 "\"ExperimentGridSearch\" only; with \"Random\"")));
}

TEST(ParseHpoDataTest, RefusesEmptyAndMalformedData) {
  EXPECT_THAT(ParseHpoData("  ", {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("the form field \"data\" is empty")));
  EXPECT_THAT(ParseHpoData("{'hpoName': 1}", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the form field \"data\" is not valid JSON (")));
  KILN_EXPECT_OK(ParseHpoData(NotebookInput().dump(), {}));
}

// ---- HpoTaskState ----

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kT0 = int64_t{1605643186} * kSecond;  // 2020-11-17 19:59:46 UTC

store::TrialRow Trial(int64_t number, store::TrialState state, const std::string& config,
                      std::optional<double> value, std::optional<int64_t> job) {
  store::TrialRow t;
  t.experiment_id = 1;
  t.number = number;
  t.state = state;
  t.config_json = config;
  t.value = value;
  t.job_id = job;
  t.created_at = kT0;
  return t;
}

store::JobRecord Job(int64_t id, store::JobState state, std::optional<int64_t> start,
                     std::optional<int64_t> end) {
  store::JobRecord j;
  j.id = id;
  j.state = state;
  j.started_at = start;
  j.finished_at = end;
  return j;
}

master::ExperimentView NotebookView() {
  master::ExperimentView view;
  view.spec = Convert(NotebookInput()).value();
  view.spec.additional_metrics["acc"] = "maximize";
  view.record.id = 1;
  view.record.name = "admin-hpo-6487177646872135";
  view.record.username = "admin";
  view.record.state = store::ExperimentState::kRunning;
  view.record.created_at = kT0;
  view.record.started_at = kT0 + kSecond;
  view.trials = {
      Trial(0, store::TrialState::kComplete,
            R"({"learning_rate": 0.07682903454845375, "batch_size": 64, "optimizer": "adam"})",
            0.065, 11),
      Trial(1, store::TrialState::kComplete,
            R"({"learning_rate": 0.001, "batch_size": 32, "optimizer": "sgd"})", 0.02, 12),
      Trial(2, store::TrialState::kRunning,
            R"({"learning_rate": 0.01, "batch_size": 32, "optimizer": "sgd"})", std::nullopt, 13),
      Trial(3, store::TrialState::kFailed,
            R"({"learning_rate": 0.05, "batch_size": 32, "optimizer": "sgd"})", std::nullopt, 14),
  };
  view.trials[3].reason = "the job exited with code 1";
  view.trials[2].intermediate_json = R"({"1": 0.5, "2": 0.3})";
  view.best_trial = 1;
  view.running = 1;
  view.complete = 2;
  view.failed = 1;
  return view;
}

std::map<int64_t, TrialJob> NotebookJobs() {
  std::map<int64_t, TrialJob> jobs;
  jobs[0].job = Job(11, store::JobState::kFinished, kT0 + 2 * kSecond, kT0 + 72 * kSecond);
  jobs[1].job = Job(12, store::JobState::kFinished, kT0 + 3 * kSecond, kT0 + 50 * kSecond);
  jobs[1].metrics["acc"] = {{"acc", "test", 1, 0.8, 0},
                            {"acc", "test", 2, 0.9, 0},
                            {"acc", "test", 3, 0.85, 0},
                            {"acc", "train", 3, 0.99, 0}};
  jobs[2].job = Job(13, store::JobState::kRunning, kT0 + 4 * kSecond, std::nullopt);
  jobs[3].job = Job(14, store::JobState::kFailed, kT0 + 5 * kSecond, kT0 + 6 * kSecond);
  return jobs;
}

TEST(HpoTaskStateTest, HasWmlasShape) {
  Json state = HpoTaskStateToJson(NotebookView(), NotebookJobs(), kT0 + 61 * kSecond);
  EXPECT_EQ(state["hpoName"], "admin-hpo-6487177646872135");
  EXPECT_EQ(state["state"], "RUNNING");
  EXPECT_EQ(state["progress"], "3/4");
  EXPECT_EQ(state["running"], 1);
  EXPECT_EQ(state["complete"], 2);
  EXPECT_EQ(state["failed"], 1);
  EXPECT_EQ(state["createtime"], "2020-11-17 19:59:46");
  EXPECT_EQ(state["creator"], "admin");
  EXPECT_EQ(state["duration"], "00:01:00");
  EXPECT_FALSE(state.contains("reason"));
}

TEST(HpoTaskStateTest, EchoesAlgoDefAndLowercasedHyperParams) {
  Json state = HpoTaskStateToJson(NotebookView(), NotebookJobs(), kT0);
  Json algo = state["algoDef"];
  EXPECT_EQ(algo["algorithm"], "Random");
  EXPECT_EQ(algo["maxJobNum"], 4);
  EXPECT_EQ(algo["maxParalleJobNum"], 2);
  EXPECT_EQ(algo["maxRunTime"], 60);
  EXPECT_EQ(algo["objectiveMetric"], "loss");
  EXPECT_EQ(algo["objective"], "Minimize");
  EXPECT_EQ(algo["algoParams"], Json::parse(R"([{"name": "RandomSeed", "value": 7}])"));
  ASSERT_EQ(state["hyperParams"].size(), 3u);
  EXPECT_EQ(state["hyperParams"][0],
            Json::parse(R"({"name": "learning_rate", "type": "range", "dataType": "double",
                            "minDbVal": 0.001, "maxDbVal": 0.1, "userDefined": false})"));
  EXPECT_EQ(state["hyperParams"][2]["type"], "discrete");
  EXPECT_EQ(state["hyperParams"][2]["dataType"], "str");
}

TEST(HpoTaskStateTest, ListsExperimentsWithStatesValuesAndTimes) {
  Json state = HpoTaskStateToJson(NotebookView(), NotebookJobs(), kT0);
  Json e = state["experiments"];
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0]["id"], 0);
  EXPECT_EQ(e[0]["state"], "FINISHED");
  EXPECT_EQ(e[0]["metricVal"], 0.065);
  EXPECT_EQ(e[0]["appId"], "11");
  EXPECT_EQ(e[0]["startTime"], "2020-11-17 19:59:48");
  EXPECT_EQ(e[0]["endTime"], "2020-11-17 20:00:58");
  EXPECT_EQ(e[0]["hyperParams"], Json::parse(R"([
      {"name": "learning_rate", "dataType": "double", "userDefined": false, "fixedVal": "0.07682903454845375"},
      {"name": "batch_size", "dataType": "int", "userDefined": false, "fixedVal": "64"},
      {"name": "optimizer", "dataType": "str", "userDefined": false, "fixedVal": "adam"}])"));
  // Running: the best intermediate value so far; failed: WMLA's placeholder and the reason.
  EXPECT_EQ(e[2]["state"], "RUNNING");
  EXPECT_EQ(e[2]["metricVal"], 0.3);
  EXPECT_EQ(e[2]["endTime"], "");
  EXPECT_EQ(e[3]["state"], "FAILED");
  EXPECT_EQ(e[3]["metricVal"], kWmlaNoMetric);
  EXPECT_EQ(e[3]["reason"], "the job exited with code 1");
}

TEST(HpoTaskStateTest, SummarizesAdditionalMetricsOfTheValidationGroup) {
  Json state = HpoTaskStateToJson(NotebookView(), NotebookJobs(), kT0);
  EXPECT_EQ(state["experiments"][1]["metrics"],
            Json::parse(R"([{"name": "acc", "min": 0.8, "max": 0.9, "latest": 0.85}])"));
  EXPECT_EQ(state["experiments"][0]["metrics"], Json::array());
}

TEST(HpoTaskStateTest, BestIsTheBestExperimentOrNull) {
  master::ExperimentView view = NotebookView();
  Json state = HpoTaskStateToJson(view, NotebookJobs(), kT0);
  EXPECT_EQ(state["best"], state["experiments"][1]);
  view.best_trial.reset();
  EXPECT_TRUE(HpoTaskStateToJson(view, NotebookJobs(), kT0)["best"].is_null());
}

TEST(HpoTaskStateTest, MapsTrialAndJobStates) {
  master::ExperimentView view = NotebookView();
  view.trials = {
      Trial(0, store::TrialState::kRunning, "{}", std::nullopt, std::nullopt),
      Trial(1, store::TrialState::kRunning, "{}", std::nullopt, 2),
      Trial(2, store::TrialState::kStopped, "{}", std::nullopt, 3),
      Trial(3, store::TrialState::kFailed, "{}", std::nullopt, 4),
      Trial(4, store::TrialState::kPruned, "{}", 0.5, 5),
  };
  std::map<int64_t, TrialJob> jobs;
  jobs[1].job = Job(2, store::JobState::kQueued, std::nullopt, std::nullopt);
  jobs[3].job = Job(4, store::JobState::kKilled, kT0, kT0);
  Json e = HpoTaskStateToJson(view, jobs, kT0)["experiments"];
  EXPECT_EQ(e[0]["state"], "SUBMITTED");
  EXPECT_EQ(e[0]["appId"], "");
  EXPECT_EQ(e[1]["state"], "SUBMITTED");
  EXPECT_EQ(e[2]["state"], "KILLED");
  EXPECT_EQ(e[3]["state"], "KILLED");
  EXPECT_EQ(e[4]["state"], "KILLED");
  EXPECT_EQ(e[4]["metricVal"], 0.5);
}

TEST(HpoTaskStateTest, ShowsUnlimitedProgressAndTheReasonOfAnEndedTask) {
  master::ExperimentView view = NotebookView();
  view.spec.max_trials = -1;
  view.record.state = store::ExperimentState::kFailed;
  view.record.reason = "no trial reported the objective metric \"loss\"";
  view.record.finished_at = kT0 + 3725 * kSecond;
  Json state = HpoTaskStateToJson(view, NotebookJobs(), kT0 + 99999 * kSecond);
  EXPECT_EQ(state["progress"], "3/-1");
  EXPECT_EQ(state["state"], "FAILED");
  EXPECT_EQ(state["duration"], "01:02:04");
  EXPECT_EQ(state["reason"], view.record.reason);
}

TEST(HpoTaskStateTest, GridExperimentsKeepTheirIdsAndListThoseNotRun) {
  Json input = NotebookInput();
  input.erase("hyperParams");
  input["algoDef"]["algorithm"] = "ExperimentGridSearch";
  input["experiments"] = Json::parse(R"([
      {"id": 7, "hyperParams": [{"name": "lr", "dataType": "DOUBLE", "fixedVal": "0.1"},
                                {"name": "opt", "dataType": "STR", "fixedVal": "adam"}]},
      {"id": 9, "hyperParams": [{"name": "lr", "dataType": "DOUBLE", "fixedVal": "0.01"},
                                {"name": "opt", "dataType": "STR", "fixedVal": "sgd"}]}])");
  master::ExperimentView view;
  view.spec = Convert(input).value();
  view.record.name = "grid";
  view.record.state = store::ExperimentState::kRunning;
  view.trials = {
      Trial(0, store::TrialState::kRunning, R"({"lr": 0.01, "opt": "sgd"})", std::nullopt, 5)};
  view.trials[0].params_json = R"({"__experiment": 1})";
  Json state = HpoTaskStateToJson(view, {}, kT0);
  EXPECT_EQ(state["progress"], "0/2");
  ASSERT_EQ(state["experiments"].size(), 2u);
  EXPECT_EQ(state["experiments"][0]["id"], 9);
  EXPECT_EQ(state["experiments"][0]["hyperParams"][0],
            Json::parse(R"({"name": "lr", "dataType": "double", "userDefined": false,
                            "fixedVal": "0.01"})"));
  EXPECT_EQ(state["experiments"][1]["id"], 7);
  EXPECT_EQ(state["experiments"][1]["state"], "NOTRUN");
  EXPECT_EQ(state["experiments"][1]["hyperParams"][1]["fixedVal"], "adam");
  EXPECT_EQ(
      state["hyperParams"],
      Json::parse(R"([{"name": "lr", "type": "fix", "dataType": "double", "userDefined": false},
                            {"name": "opt", "type": "fix", "dataType": "str", "userDefined": false}])"));
}

TEST(HpoTaskStateTest, ShowsHyperbandsResourceAsAString) {
  master::ExperimentView view = NotebookView();
  view.spec.algorithm = "Hyperband";
  view.spec.algorithm_params = Json::parse(
      R"([{"name": "ResourceName", "value": "epochs"}, {"name": "ResourceValue", "value": "9"}])");
  view.trials = {
      Trial(0, store::TrialState::kRunning,
            R"({"learning_rate": 0.01, "batch_size": 32, "optimizer": "sgd", "epochs": 1})",
            std::nullopt, 5)};
  Json hp = HpoTaskStateToJson(view, {}, kT0)["experiments"][0]["hyperParams"];
  ASSERT_EQ(hp.size(), 4u);
  EXPECT_EQ(hp[3], Json::parse(R"({"name": "epochs", "dataType": "str", "userDefined": false,
                                   "fixedVal": "1"})"));
}

TEST(WmlaJobStateTest, MapsEveryJobState) {
  EXPECT_STREQ(WmlaJobState(store::JobState::kQueued), "SUBMITTED");
  EXPECT_STREQ(WmlaJobState(store::JobState::kScheduled), "SUBMITTED");
  EXPECT_STREQ(WmlaJobState(store::JobState::kRunning), "RUNNING");
  EXPECT_STREQ(WmlaJobState(store::JobState::kFinished), "FINISHED");
  EXPECT_STREQ(WmlaJobState(store::JobState::kFailed), "ERROR");
  EXPECT_STREQ(WmlaJobState(store::JobState::kKilled), "KILLED");
}

TEST(WmlaTimeTest, FormatsTimesAndDurations) {
  EXPECT_EQ(FormatWmlaTime(kT0 + 999'999), "2020-11-17 19:59:46");
  EXPECT_EQ(FormatWmlaDuration(0), "00:00:00");
  EXPECT_EQ(FormatWmlaDuration(3661 * kSecond), "01:01:01");
  EXPECT_EQ(FormatWmlaDuration(int64_t{100} * 3600 * kSecond), "100:00:00");
}

}  // namespace
}  // namespace kiln::api
