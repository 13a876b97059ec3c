// Tests of `kiln hpo`: the YAML experiment file, the renderers, and the commands'
// HTTP flows against a real loopback server answering as docs/api.md documents.
#include "kiln/cli/hpo_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using base::Json;
using testing::CliHarness;
using testing::FakeMaster;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;

// 2026-11-26T10:01:40Z, the harness's clock: 100 s after the sample records were created.
constexpr int64_t kNow = 1'795'687'300'000'000;

// ---------------------------------------------------------------- YamlToJson

TEST(YamlToJsonTest, TypesPlainScalarsAsYaml12CoreSchema) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, YamlToJson(R"(
int: 42
negative: -3
hex: 0x1f
octal: 0o17
float: 0.25
exponent: 1e-4
capital_exponent: 2.5E+3
yes_is_a_string: yes
on_is_a_string: on
bools: [true, False, TRUE]
nulls: [null, ~, Null]
empty:
version_like: 1.2.3
word: tpe
)",
                                               "x.yaml"));
  EXPECT_EQ(j["int"], 42);
  EXPECT_TRUE(j["int"].is_number_integer());
  EXPECT_EQ(j["negative"], -3);
  EXPECT_EQ(j["hex"], 31);
  EXPECT_EQ(j["octal"], 15);
  EXPECT_DOUBLE_EQ(j["float"].get<double>(), 0.25);
  EXPECT_TRUE(j["exponent"].is_number_float());
  EXPECT_DOUBLE_EQ(j["exponent"].get<double>(), 1e-4);
  EXPECT_DOUBLE_EQ(j["capital_exponent"].get<double>(), 2500);
  EXPECT_EQ(j["yes_is_a_string"], "yes");
  EXPECT_EQ(j["on_is_a_string"], "on");
  EXPECT_EQ(j["bools"], Json::parse("[true, false, true]"));
  EXPECT_EQ(j["nulls"], Json::parse("[null, null, null]"));
  EXPECT_TRUE(j["empty"].is_null());
  EXPECT_EQ(j["version_like"], "1.2.3");
  EXPECT_EQ(j["word"], "tpe");
}

TEST(YamlToJsonTest, QuotedScalarsAndStrTagsStayStrings) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, YamlToJson(R"(
a: "42"
b: 'true'
c: !!str 0.5
d: !!float 3
e: !!int "7"
)",
                                               "x.yaml"));
  EXPECT_EQ(j["a"], "42");
  EXPECT_EQ(j["b"], "true");
  EXPECT_EQ(j["c"], "0.5");
  EXPECT_TRUE(j["d"].is_number_float());
  EXPECT_EQ(j["e"], 7);
}

TEST(YamlToJsonTest, ConvertsNestedMappingsSequencesFlowStyleAndAnchors) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, YamlToJson(R"(
command: [/usr/bin/python3, train.py, --epochs, "3"]
search_space:
  lr: {type: double, low: 0.001, high: 0.3, log: true}
  opt:
    type: categorical
    choices: [sgd, adam]
base: &base {slots: 1}
resources: *base
)",
                                               "x.yaml"));
  EXPECT_EQ(j["command"], Json::parse(R"(["/usr/bin/python3", "train.py", "--epochs", "3"])"));
  EXPECT_EQ(j["search_space"], Json::parse(R"({
      "lr": {"type": "double", "low": 0.001, "high": 0.3, "log": true},
      "opt": {"type": "categorical", "choices": ["sgd", "adam"]}})"));
  EXPECT_EQ(j["resources"], Json::parse(R"({"slots": 1})"));
}

TEST(YamlToJsonTest, SyntaxErrorsNameTheFileLineAndColumn) {
  EXPECT_THAT(YamlToJson("name: x\nsearch_space:\n  lr: {type: double\n", "exp.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exp.yaml:")));
  absl::StatusOr<Json> bad = YamlToJson("a: 1\nb: [1, 2\nc: 3\n", "exp.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::MatchesRegex("exp\\.yaml:[0-9]+:[0-9]+: .+"));
}

TEST(YamlToJsonTest, RefusesDuplicateKeysAtTheirLine) {
  EXPECT_THAT(YamlToJson("max_trials: 5\nparallelism: 2\nmax_trials: 6\n", "exp.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("exp.yaml:3:1: duplicate key \"max_trials\"")));
}

TEST(YamlToJsonTest, RefusesWhatJsonCannotHold) {
  EXPECT_THAT(YamlToJson("x: .inf\n", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("e.yaml:1:4: .inf")));
  EXPECT_THAT(YamlToJson("x: 99999999999999999999\n", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(YamlToJson("? [a, b]\n: 1\n", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a key must be")));
  EXPECT_THAT(YamlToJson("x: !!binary aGk=\n", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported tag")));
  EXPECT_THAT(YamlToJson("x: !!int 1.5\n", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an integer")));
}

TEST(YamlToJsonTest, AnEmptyDocumentIsNull) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, YamlToJson("# nothing\n", "e.yaml"));
  EXPECT_TRUE(j.is_null());
}

// ---------------------------------------------------------------- LoadExperimentFile

TEST(LoadExperimentFileTest, ResolvesCodeAgainstTheFilesFolder) {
  TempDir dir;
  KILN_ASSERT_OK(base::MakeDirs(dir.path() + "/proj/src"));
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/proj/exp.yaml", R"(
name: fmnist
code: ./src
command: [python3, train.py]
search_space: {lr: {type: double, low: 0.01, high: 0.1}}
objective: {metric: loss}
)"));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentFile f, LoadExperimentFile(dir.path() + "/proj/exp.yaml"));
  char* real_dir = realpath(dir.path().c_str(), nullptr);
  ASSERT_NE(real_dir, nullptr);
  EXPECT_EQ(f.code_path, std::string(real_dir) + "/proj/src");
  free(real_dir);
  EXPECT_FALSE(f.request.contains("code"));
  EXPECT_EQ(f.request["name"], "fmnist");
  EXPECT_EQ(f.request["search_space"]["lr"]["high"], 0.1);
}

TEST(LoadExperimentFileTest, ReadsJsonFilesAsJson) {
  TempDir dir;
  KILN_ASSERT_OK(base::WriteFileAtomically(dir.path() + "/exp.json",
                                           R"({"command": ["true"], "package": {"path": "/x"}})"));
  KILN_ASSERT_OK_AND_ASSIGN(ExperimentFile f, LoadExperimentFile(dir.path() + "/exp.json"));
  EXPECT_EQ(f.code_path, "");
  EXPECT_EQ(f.request["package"]["path"], "/x");
}

TEST(LoadExperimentFileTest, ExplainsWhatIsWrong) {
  TempDir dir;
  std::string p = dir.path() + "/exp.yaml";
  EXPECT_THAT(LoadExperimentFile(dir.path() + "/none.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
  KILN_ASSERT_OK(base::WriteFileAtomically(p, "- a\n- b\n"));
  EXPECT_THAT(LoadExperimentFile(p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a mapping")));
  KILN_ASSERT_OK(base::WriteFileAtomically(p, "code: ./missing\n"));
  EXPECT_THAT(LoadExperimentFile(p), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("code ./missing does not exist")));
  KILN_ASSERT_OK(base::WriteFileAtomically(p, "code: .\npackage: {id: sha256-x}\n"));
  EXPECT_THAT(LoadExperimentFile(p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("either code")));
  KILN_ASSERT_OK(base::WriteFileAtomically(p, "code: [a]\n"));
  EXPECT_THAT(LoadExperimentFile(p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("code must be the path")));
  KILN_ASSERT_OK(base::WriteFileAtomically(p, "objective:\n  metric: loss\n   goal: min\n"));
  EXPECT_THAT(LoadExperimentFile(p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exp.yaml:3:")));
}

// ---------------------------------------------------------------- renderers

Json SampleExperiment() {
  return Json::parse(R"({
    "id": 3, "name": "fmnist-tpe", "user": "admin", "state": "RUNNING", "reason": "",
    "description": "", "algorithm": "tpe", "parallelism": 2, "max_trials": 6,
    "objective": {"metric": "accuracy", "goal": "maximize", "reduce": "best"},
    "progress": {"trials": 5, "running": 2, "complete": 2, "pruned": 1, "failed": 0,
                 "stopped": 0, "max_trials": 6},
    "best": {"number": 1, "value": 0.8512, "config": {"lr": 0.03}, "job_id": 17},
    "created_at": "2026-11-26T10:00:00.000000Z", "started_at": "2026-11-26T10:00:00.000000Z",
    "finished_at": null})");
}

TEST(ExperimentProgressTest, CountsDoneTrialsAgainstTheBudget) {
  EXPECT_EQ(ExperimentProgress(SampleExperiment()),
            "3/6 trials done (2 complete, 1 pruned), 2 running, best 0.8512 (trial 1)");
  Json e = SampleExperiment();
  e["progress"]["max_trials"] = nullptr;
  e["best"] = nullptr;
  EXPECT_EQ(ExperimentProgress(e), "3 trials done (2 complete, 1 pruned), 2 running");
}

TEST(RenderExperimentsTableTest, ShowsOneRowPerExperiment) {
  EXPECT_EQ(RenderExperimentsTable(Json::array({SampleExperiment()}), kNow),
            "ID  NAME        USER   STATE    ALGORITHM  TRIALS  BEST              AGE\n"
            "3   fmnist-tpe  admin  RUNNING  tpe        3/6     0.8512 (trial 1)  1 min\n");
}

TEST(RenderExperimentDetailsTest, ShowsObjectiveProgressAndBest) {
  std::string text = RenderExperimentDetails(SampleExperiment(), kNow);
  EXPECT_THAT(text, HasSubstr("state:        RUNNING\n"));
  EXPECT_THAT(text, HasSubstr("objective:    maximize accuracy (best over steps)\n"));
  EXPECT_THAT(text, HasSubstr("progress:     3/6 trials done"));
  EXPECT_THAT(text, HasSubstr("best:         0.8512 (trial 1), job 17\n"));
  EXPECT_THAT(text, HasSubstr("best config:  {\"lr\":0.03}\n"));
  EXPECT_THAT(text, HasSubstr("duration:     1 min 40 s\n"));
  EXPECT_THAT(text, Not(HasSubstr("reason:")));
}

TEST(RenderTrialsTableTest, OneColumnPerSearchedParameter) {
  Json trials = Json::parse(R"({"trials": [
    {"number": 0, "state": "COMPLETE", "value": 0.84, "params": {"lr": 0.01, "hidden": 64},
     "intermediate": [{"step": 1, "value": 0.8}, {"step": 2, "value": 0.84}], "budget": 0,
     "job_id": 12, "reason": ""},
    {"number": 1, "state": "FAILED", "value": null, "params": {"lr": 0.3, "hidden": 128},
     "intermediate": [], "budget": 0, "job_id": 13, "reason": "exited with code 1"},
    {"number": 2, "state": "RUNNING", "value": null, "params": {"lr": 0.001, "opt": "sgd"},
     "intermediate": [], "budget": 0, "job_id": null, "reason": ""}]})");
  EXPECT_EQ(RenderTrialsTable(trials),
            "#  STATE     VALUE  STEPS  hidden  lr     opt  JOB  REASON\n"
            "0  COMPLETE  0.84   2      64      0.01   -    12   -\n"
            "1  FAILED    -      0      128     0.3    -    13   exited with code 1\n"
            "2  RUNNING   -      0      -       0.001  sgd  -    -\n");
}

TEST(RenderTrialsTableTest, ShowsBudgetsOfMultiFidelitySearches) {
  Json trials = Json::parse(R"({"trials": [
    {"number": 0, "state": "PRUNED", "value": 0.7, "params": {"lr": 0.01}, "budget": 1,
     "intermediate": [{"step": 1, "value": 0.7}], "job_id": 4, "reason": ""}]})");
  EXPECT_THAT(RenderTrialsTable(trials), HasSubstr("#  STATE   VALUE  STEPS  BUDGET  lr"));
  EXPECT_THAT(RenderTrialsTable(trials), HasSubstr("0  PRUNED  0.7    1      1       0.01"));
}

TEST(RenderAlgorithmsTableTest, ListsNamesAndParameters) {
  Json algorithms = Json::parse(R"([{"name": "Tpe", "native_name": "tpe",
      "params": ["WarmUp", "GoodRatio"], "native_params": ["warm_up", "good_ratio"],
      "description": "tree-structured Parzen"}])");
  EXPECT_EQ(RenderAlgorithmsTable(algorithms),
            "NAME  WMLA-NAME  PARAMETERS          DESCRIPTION\n"
            "tpe   Tpe        warm_up,good_ratio  tree-structured Parzen\n");
}

// ---------------------------------------------------------------- commands

class HpoCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.env["KILN_USER"] = "admin";
    h_.env["KILN_PASSWORD"] = "pw";
  }
  void Start() {
    master_.Start();
    h_.env["KILN_URL"] = master_.url();
  }
  void WriteExperiment(const std::string& text) {
    KILN_ASSERT_OK(base::MakeDirs(h_.cwd + "/code"));
    KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/code/obj.py", "print(1)\n"));
    KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", text));
  }

  FakeMaster master_;
  CliHarness h_;
};

constexpr char kExperimentYaml[] = R"(# a search
name: quad
code: code
command: [/usr/bin/python3, obj.py]
search_space:
  x: {type: double, low: -1, high: 1}
algorithm: tpe
objective: {metric: loss, goal: minimize}
max_trials: 6
parallelism: 2
)";

TEST_F(HpoCommandTest, CreateUploadsTheCodeAndPostsTheFileAsJson) {
  master_.OnJson("GET", "/api/v1/me", 200, {{"user", "admin"}});
  master_.OnJson("POST", "/api/v1/packages", 201, {{"id", "sha256-abc"}});
  Json created = SampleExperiment();
  created["name"] = "quad";
  master_.OnJson("POST", "/api/v1/experiments", 201, created);
  Start();
  WriteExperiment(kExperimentYaml);
  ASSERT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml"}), 0) << h_.err();
  EXPECT_EQ(h_.out(), "3\n");
  EXPECT_THAT(h_.err(), HasSubstr("experiment 3 (quad) created"));
  EXPECT_THAT(h_.err(), HasSubstr("kiln hpo show 3"));
  auto posts = master_.RequestsTo("/api/v1/experiments");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(Json::parse(posts[0].body), Json::parse(R"({
      "name": "quad", "package": {"id": "sha256-abc"},
      "command": ["/usr/bin/python3", "obj.py"],
      "search_space": {"x": {"type": "double", "low": -1, "high": 1}},
      "algorithm": "tpe", "objective": {"metric": "loss", "goal": "minimize"},
      "max_trials": 6, "parallelism": 2})"));
  EXPECT_EQ(master_.RequestsTo("/api/v1/packages").size(), 1u);
}

TEST_F(HpoCommandTest, CreateNameFlagOverridesTheFile) {
  master_.OnJson("POST", "/api/v1/experiments", 201, SampleExperiment());
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "name: a\ncommand: [\"true\"]\n"));
  ASSERT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml", "--name", "b"}), 0) << h_.err();
  auto posts = master_.RequestsTo("/api/v1/experiments");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(Json::parse(posts[0].body)["name"], "b");
}

TEST_F(HpoCommandTest, CreateShowsTheServersReasonForBadInput) {
  master_.On("POST", "/api/v1/experiments", [](net::HttpRequest&, net::Responder res) {
    res.Send(testing::ApiError(absl::InvalidArgumentError(
        "search_space.x: low (1) must not exceed high (-1); swap them")));
  });
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "command: [\"true\"]\n"));
  EXPECT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml"}), 2);
  EXPECT_THAT(h_.err(), HasSubstr("exp.yaml: search_space.x: low (1) must not exceed high"));
}

TEST_F(HpoCommandTest, CreateExplainsATakenName) {
  master_.On("POST", "/api/v1/experiments", [](net::HttpRequest&, net::Responder res) {
    res.Send(testing::ApiError(absl::AlreadyExistsError("an experiment named quad exists")));
  });
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "command: [\"true\"]\n"));
  EXPECT_NE(h_.Run({"hpo", "create", "-f", "exp.yaml"}), 0);
  EXPECT_THAT(h_.err(), HasSubstr("--name NAME"));
}

TEST_F(HpoCommandTest, CreateRefusesABadFileBeforeContactingKiln) {
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "name: [unclosed\n"));
  EXPECT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml"}), 2);
  EXPECT_THAT(h_.err(), HasSubstr("exp.yaml:"));
  EXPECT_TRUE(master_.requests().empty());
}

TEST_F(HpoCommandTest, CreateWithWaitPollsUntilTheExperimentEnds) {
  Json running = SampleExperiment();
  Json finished = SampleExperiment();
  finished["state"] = "FINISHED";
  finished["progress"]["running"] = 0;
  finished["progress"]["complete"] = 5;
  master_.OnJson("POST", "/api/v1/experiments", 201, running);
  auto polls = std::make_shared<int>(0);
  master_.On("GET", "/api/v1/experiments/{id}",
             [polls, running, finished](net::HttpRequest&, net::Responder res) {
               res.Send(net::JsonResponse(200, ++*polls < 3 ? running : finished));
             });
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "command: [\"true\"]\n"));
  ASSERT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml", "--wait"}), 0) << h_.err();
  EXPECT_EQ(*polls, 3);
  EXPECT_THAT(h_.err(), HasSubstr("RUNNING: 3/6 trials done"));
  EXPECT_THAT(h_.err(), HasSubstr("FINISHED: 6/6 trials done"));
  EXPECT_THAT(h_.err(), HasSubstr("best trial 1: accuracy 0.8512 with {\"lr\":0.03}"));
}

TEST_F(HpoCommandTest, CreateWithWaitExitsOneWhenTheExperimentFails) {
  Json failed = SampleExperiment();
  failed["state"] = "FAILED";
  failed["reason"] = "every trial failed";
  master_.OnJson("POST", "/api/v1/experiments", 201, failed);
  master_.OnJson("GET", "/api/v1/experiments/{id}", 200, failed);
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/exp.yaml", "command: [\"true\"]\n"));
  EXPECT_EQ(h_.Run({"hpo", "create", "-f", "exp.yaml", "--wait"}), 1);
  EXPECT_THAT(h_.err(), HasSubstr("experiment 3 FAILED: every trial failed"));
}

TEST_F(HpoCommandTest, ShowAcceptsANameAndListsTheTopTrials) {
  master_.OnJson("GET", "/api/v1/experiments/{id}", 200, SampleExperiment());
  master_.OnJson("GET", "/api/v1/experiments/{id}/trials", 200, Json::parse(R"({"trials": [
      {"number": 0, "state": "COMPLETE", "value": 0.80, "params": {"lr": 0.01}, "job_id": 12},
      {"number": 1, "state": "COMPLETE", "value": 0.8512, "params": {"lr": 0.03}, "job_id": 17},
      {"number": 2, "state": "RUNNING", "value": null, "params": {"lr": 0.1}, "job_id": 18}]})"));
  Start();
  ASSERT_EQ(h_.Run({"hpo", "show", "fmnist-tpe"}), 0) << h_.err();
  EXPECT_EQ(master_.RequestsTo("/api/v1/experiments/fmnist-tpe").size(), 1u);
  EXPECT_THAT(h_.out(), HasSubstr("name:         fmnist-tpe\n"));
  EXPECT_THAT(h_.out(), HasSubstr("top trials:\n#  STATE     VALUE   STEPS  lr    JOB  REASON\n"
                                  "1  COMPLETE  0.8512  0      0.03  17   -\n"
                                  "0  COMPLETE  0.8     0      0.01  12   -\n"));
  EXPECT_THAT(h_.out(), HasSubstr("all 3 trials: kiln hpo trials 3\n"));
}

TEST_F(HpoCommandTest, BestPrintsOnlyTheConfigOnStdout) {
  master_.OnJson("GET", "/api/v1/experiments/{id}/best", 200, Json::parse(R"({
      "number": 4, "value": 0.86, "metric": "accuracy", "job_id": 21,
      "config": {"lr": 0.05, "hidden": 256}})"));
  Start();
  ASSERT_EQ(h_.Run({"hpo", "best", "3"}), 0) << h_.err();
  EXPECT_EQ(Json::parse(h_.out()), Json::parse(R"({"lr": 0.05, "hidden": 256})"));
  EXPECT_THAT(h_.err(), HasSubstr("trial 4: accuracy 0.86 (job 21)"));
}

TEST_F(HpoCommandTest, StopAndDeleteUseTheirRoutes) {
  Json stopped = SampleExperiment();
  stopped["state"] = "STOPPED";
  master_.OnJson("POST", "/api/v1/experiments/{id}/stop", 200, stopped);
  master_.OnJson("DELETE", "/api/v1/experiments/{id}", 200, {{"id", 3}, {"deleted", true}});
  Start();
  ASSERT_EQ(h_.Run({"hpo", "stop", "3"}), 0) << h_.err();
  EXPECT_EQ(h_.out(), "experiment 3 STOPPED\n");
  h_.Clear();
  ASSERT_EQ(h_.Run({"hpo", "delete", "3"}), 0) << h_.err();
  EXPECT_EQ(h_.out(), "experiment 3 deleted\n");
}

TEST_F(HpoCommandTest, NotFoundExitsWithFour) {
  master_.On("GET", "/api/v1/experiments/{id}", [](net::HttpRequest&, net::Responder res) {
    res.Send(testing::ApiError(absl::NotFoundError("no experiment with id 99")));
  });
  Start();
  EXPECT_EQ(h_.Run({"hpo", "show", "99"}), 4);
  EXPECT_THAT(h_.err(), HasSubstr("no experiment with id 99"));
}

TEST(HpoArgumentsTest, EverySubcommandHasHelp) {
  for (const char* sub :
       {"create", "list", "show", "trials", "best", "stop", "restart", "delete", "algorithms"}) {
    CliHarness h;
    EXPECT_EQ(h.Run({"hpo", sub, "--help"}), 0) << sub;
    EXPECT_THAT(h.out(), HasSubstr("Usage")) << sub;
  }
}

TEST(HpoArgumentsTest, MissingArgumentsAreUsageErrors) {
  CliHarness h;
  EXPECT_EQ(h.Run({"hpo"}), 2);
  h.Clear();
  EXPECT_EQ(h.Run({"hpo", "create"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("--file"));
  h.Clear();
  EXPECT_EQ(h.Run({"hpo", "show"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("EXPERIMENT"));
}

}  // namespace
}  // namespace kiln::cli
