// Tests of the native experiments API's JSON shapes (docs/api.md, "Experiments"); the
// handlers themselves run against a real kilnd in tests/integration/test_experiments.py.
#include "kiln/api/experiments_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::api {
namespace {

using base::Json;

master::ExperimentView SampleView() {
  master::ExperimentView view;
  view.record.id = 3;
  view.record.name = "fmnist-tpe";
  view.record.username = "ada";
  view.record.state = store::ExperimentState::kRunning;
  view.record.created_at = 1'795'687'200'000'000;  // 2026-11-26T10:00:00Z
  view.record.started_at = view.record.created_at;
  view.spec.name = "fmnist-tpe";
  view.spec.trial.command = {"python3", "train.py"};
  view.spec.trial.config = {{"epochs", 3}};
  view.spec.search_space = Json::parse(R"({
      "lr": {"type": "double", "low": 0.001, "high": 0.3, "log": true},
      "hidden": {"type": "int", "low": 32, "high": 512, "step": 32},
      "model": "mlp"})");
  view.spec.algorithm = "tpe";
  view.spec.algorithm_params = {{"warm_up", 4}};
  view.spec.objective.metric = "accuracy";
  view.spec.objective.goal = master::ObjectiveGoal::kMaximize;
  view.spec.max_trials = 12;
  view.spec.parallelism = 2;
  store::TrialRow done;
  done.experiment_id = 3;
  done.number = 0;
  done.state = store::TrialState::kComplete;
  done.config_json = R"({"lr": 0.01, "hidden": 64, "model": "mlp", "epochs": 3})";
  done.value = 0.84;
  done.intermediate_json = R"({"10": 0.84, "2": 0.8, "1": 0.7})";
  done.job_id = 12;
  done.job_ids_json = "[11, 12]";
  done.attempts = 2;
  store::TrialRow running;
  running.experiment_id = 3;
  running.number = 1;
  running.config_json = R"({"lr": 0.1, "hidden": 128, "model": "mlp", "epochs": 3})";
  view.trials = {done, running};
  view.best_trial = 0;
  view.complete = 1;
  view.running = 1;
  return view;
}

TEST(ExperimentToJsonTest, CarriesStateProgressBestAndTheSpec) {
  Json j = ExperimentToJson(SampleView(), /*with_spec=*/true);
  EXPECT_EQ(j["id"], 3);
  EXPECT_EQ(j["user"], "ada");
  EXPECT_EQ(j["state"], "RUNNING");
  EXPECT_EQ(j["objective"],
            Json::parse(R"({"metric": "accuracy", "goal": "maximize", "reduce": "best"})"));
  EXPECT_EQ(j["progress"], Json::parse(R"({"trials": 2, "running": 1, "complete": 1,
      "pruned": 0, "failed": 0, "stopped": 0, "max_trials": 12})"));
  EXPECT_EQ(j["best"], Json::parse(R"({"number": 0, "state": "COMPLETE", "value": 0.84,
      "config": {"lr": 0.01, "hidden": 64, "model": "mlp", "epochs": 3}, "job_id": 12})"));
  EXPECT_EQ(j["created_at"], "2026-11-26T10:00:00.000000Z");
  EXPECT_TRUE(j["finished_at"].is_null());
  EXPECT_EQ(j["spec"]["algorithm"], Json::parse(R"({"name": "tpe", "params": {"warm_up": 4}})"));
  EXPECT_EQ(j["spec"]["config"], Json::parse(R"({"epochs": 3})"));
  EXPECT_EQ(j["spec"]["command"], Json::parse(R"(["python3", "train.py"])"));
  EXPECT_FALSE(ExperimentToJson(SampleView(), /*with_spec=*/false).contains("spec"));
}

TEST(ExperimentToJsonTest, UnlimitedTrialsAndNoBestAreNull) {
  master::ExperimentView view = SampleView();
  view.spec.max_trials = -1;
  view.best_trial.reset();
  Json j = ExperimentToJson(view, /*with_spec=*/false);
  EXPECT_TRUE(j["max_trials"].is_null());
  EXPECT_TRUE(j["progress"]["max_trials"].is_null());
  EXPECT_TRUE(j["best"].is_null());
}

TEST(TrialToJsonTest, ListsIntermediatePointsInStepOrderAndOnlySearchedParams) {
  master::ExperimentView view = SampleView();
  Json t = TrialToJson(view.trials[0], SearchedParams(view.spec));
  EXPECT_EQ(t["state"], "COMPLETE");
  EXPECT_EQ(t["params"], Json::parse(R"({"lr": 0.01, "hidden": 64})"));
  EXPECT_EQ(t["config"]["model"], "mlp");
  EXPECT_EQ(t["intermediate"], Json::parse(R"([{"step": 1, "value": 0.7},
      {"step": 2, "value": 0.8}, {"step": 10, "value": 0.84}])"));
  EXPECT_EQ(t["job_ids"], Json::parse("[11, 12]"));
  EXPECT_EQ(t["attempts"], 2);
  Json r = TrialToJson(view.trials[1], SearchedParams(view.spec));
  EXPECT_EQ(r["state"], "RUNNING");
  EXPECT_TRUE(r["value"].is_null());
  EXPECT_TRUE(r["job_id"].is_null());
  EXPECT_EQ(r["intermediate"], Json::array());
}

TEST(SearchedParamsTest, ReadsNativeAndWmlaSpacesAndSkipsFixedValues) {
  EXPECT_EQ(SearchedParams(SampleView().spec), (std::set<std::string>{"hidden", "lr"}));
  master::ExperimentSpec wmla;
  wmla.wmla_space = true;
  wmla.search_space = Json::parse(R"([
      {"name": "learning_rate", "type": "Range", "dataType": "DOUBLE",
       "minDbVal": 0.001, "maxDbVal": 0.1},
      {"name": "batch", "type": "Discrete", "dataType": "INT", "discreteIntVal": [32, 64]}])");
  EXPECT_EQ(SearchedParams(wmla), (std::set<std::string>{"batch", "learning_rate"}));
}

}  // namespace
}  // namespace kiln::api
