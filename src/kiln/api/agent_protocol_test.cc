#include "kiln/api/agent_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Json = base::Json;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// Encodes, prints and parses back, as the wire does.
Json OverTheWire(const Json& j) {
  auto parsed = base::ParseJson(base::DumpJson(j));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : Json();
}

TEST(AgentProtocolTest, HelloSurvivesARoundTrip) {
  AgentHello hello;
  hello.agent_id = "host-a";
  hello.hostname = "host-a.example";
  hello.slots = 8;
  hello.gpus = {{0, "GPU-1", "NVIDIA H100", 81559}, {1, "GPU-2", "NVIDIA H100", 81559}};
  hello.tasks = {7, 9};
  KILN_ASSERT_OK_AND_ASSIGN(AgentHello back, AgentHelloFromJson(OverTheWire(ToJson(hello))));
  EXPECT_EQ(back.agent_id, "host-a");
  EXPECT_EQ(back.hostname, "host-a.example");
  EXPECT_EQ(back.slots, 8);
  ASSERT_THAT(back.gpus, SizeIs(2));
  EXPECT_EQ(back.gpus[1].index, 1);
  EXPECT_EQ(back.gpus[1].uuid, "GPU-2");
  EXPECT_EQ(back.gpus[1].name, "NVIDIA H100");
  EXPECT_EQ(back.gpus[1].memory_mib, 81559);
  EXPECT_THAT(back.tasks, ElementsAre(7, 9));
}

TEST(AgentProtocolTest, RegisterReplySurvivesARoundTrip) {
  RegisterReply reply;
  reply.resume[7] = {120, 30};
  reply.resume[8] = {0, 0};
  reply.forget = {3};
  reply.sync_wait_ms = 1500;
  KILN_ASSERT_OK_AND_ASSIGN(RegisterReply back, RegisterReplyFromJson(OverTheWire(ToJson(reply))));
  ASSERT_THAT(back.resume, SizeIs(2));
  EXPECT_EQ(back.resume.at(7).log, 120);
  EXPECT_EQ(back.resume.at(7).emetrics, 30);
  EXPECT_THAT(back.forget, ElementsAre(3));
  EXPECT_EQ(back.sync_wait_ms, 1500);
}

TaskSpec FullTaskSpec() {
  TaskSpec t;
  t.job_id = 12;
  t.command = {"python3", "train.py", "--lr", "0.1"};
  t.env = {{"KILN_TOKEN", "tok"}, {"KILN_JOB_ID", "12"}};
  t.config = {{"lr", 0.1}, {"layers", {64, 32}}};
  t.package_id = "sha256-ab";
  t.package_kind = "tar.gz";
  t.package_name = "code.tar.gz";
  t.package_path = "";
  t.slots = 4;
  t.gpu_indices = {0, 3};
  return t;
}

void ExpectSameTask(const TaskSpec& a, const TaskSpec& b) {
  EXPECT_EQ(a.job_id, b.job_id);
  EXPECT_EQ(a.command, b.command);
  EXPECT_EQ(a.env, b.env);
  EXPECT_EQ(a.config, b.config);
  EXPECT_EQ(a.package_id, b.package_id);
  EXPECT_EQ(a.package_kind, b.package_kind);
  EXPECT_EQ(a.package_name, b.package_name);
  EXPECT_EQ(a.package_path, b.package_path);
  EXPECT_EQ(a.slots, b.slots);
  EXPECT_EQ(a.gpu_indices, b.gpu_indices);
}

TEST(AgentProtocolTest, TaskSpecSurvivesARoundTrip) {
  TaskSpec t = FullTaskSpec();
  KILN_ASSERT_OK_AND_ASSIGN(TaskSpec back, TaskSpecFromJson(OverTheWire(ToJson(t))));
  ExpectSameTask(back, t);

  TaskSpec shared;
  shared.job_id = 1;
  shared.command = {"./run.sh"};
  shared.package_path = "/shared/code";
  KILN_ASSERT_OK_AND_ASSIGN(back, TaskSpecFromJson(OverTheWire(ToJson(shared))));
  ExpectSameTask(back, shared);
}

TEST(AgentProtocolTest, SyncRequestSurvivesARoundTrip) {
  SyncRequest request;
  request.running = {1, 2, 3};
  request.wait_ms = 0;
  KILN_ASSERT_OK_AND_ASSIGN(SyncRequest back, SyncRequestFromJson(OverTheWire(ToJson(request))));
  EXPECT_THAT(back.running, ElementsAre(1, 2, 3));
  EXPECT_EQ(back.wait_ms, 0);
}

TEST(AgentProtocolTest, SyncReplySurvivesARoundTrip) {
  SyncReply reply;
  reply.launch = {FullTaskSpec()};
  reply.kill = {5, 6};
  reply.grace_ms = 2500;
  KILN_ASSERT_OK_AND_ASSIGN(SyncReply back, SyncReplyFromJson(OverTheWire(ToJson(reply))));
  ASSERT_THAT(back.launch, SizeIs(1));
  ExpectSameTask(back.launch[0], reply.launch[0]);
  EXPECT_THAT(back.kill, ElementsAre(5, 6));
  EXPECT_EQ(back.grace_ms, 2500);
}

TEST(AgentProtocolTest, AgentReportSurvivesARoundTrip) {
  TaskReport running;
  running.job_id = 7;
  running.phase = TaskPhase::kRunning;
  running.started_at = 1'700'000'000'000'000;
  running.log = OutputChunk{10, 42, {{0, 5, 'o', "epoch 1"}, {0, 6, 'e', "warning"}}, {}};
  running.emetrics = OutputChunk{0, 20, {}, {{"loss", "test", 1, 0.25, 9}}};

  TaskReport exited;
  exited.job_id = 8;
  exited.phase = TaskPhase::kExited;
  exited.finished_at = 1'700'000'000'500'000;
  exited.exit_code = 2;
  exited.signal = 15;
  exited.reason = "exited with code 2";
  exited.final_metrics = {{"accuracy", "test", 3, 0.875, 11}};

  TaskReport failed;
  failed.job_id = 9;
  failed.phase = TaskPhase::kLaunchFailed;
  failed.reason = "command not found: pyhton3";

  TaskReport lost;
  lost.job_id = 10;
  lost.phase = TaskPhase::kLost;

  AgentReport report{{running, exited, failed, lost}};
  KILN_ASSERT_OK_AND_ASSIGN(AgentReport back, AgentReportFromJson(OverTheWire(ToJson(report))));
  ASSERT_THAT(back.tasks, SizeIs(4));

  const TaskReport& r = back.tasks[0];
  EXPECT_EQ(r.job_id, 7);
  EXPECT_EQ(r.phase, TaskPhase::kRunning);
  EXPECT_EQ(r.started_at, running.started_at);
  EXPECT_FALSE(r.finished_at.has_value());
  EXPECT_FALSE(r.exit_code.has_value());
  ASSERT_TRUE(r.log.has_value());
  EXPECT_EQ(r.log->from, 10);
  EXPECT_EQ(r.log->to, 42);
  ASSERT_THAT(r.log->lines, SizeIs(2));
  EXPECT_EQ(r.log->lines[0].time, 5);
  EXPECT_EQ(r.log->lines[0].stream, 'o');
  EXPECT_EQ(r.log->lines[0].text, "epoch 1");
  EXPECT_EQ(r.log->lines[1].stream, 'e');
  ASSERT_TRUE(r.emetrics.has_value());
  ASSERT_THAT(r.emetrics->points, SizeIs(1));
  EXPECT_EQ(r.emetrics->points[0].name, "loss");
  EXPECT_EQ(r.emetrics->points[0].group, "test");
  EXPECT_EQ(r.emetrics->points[0].step, 1);
  EXPECT_EQ(r.emetrics->points[0].value, 0.25);
  EXPECT_EQ(r.emetrics->points[0].time, 9);

  const TaskReport& e = back.tasks[1];
  EXPECT_EQ(e.phase, TaskPhase::kExited);
  EXPECT_EQ(e.finished_at, exited.finished_at);
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_EQ(e.signal, 15);
  EXPECT_EQ(e.reason, "exited with code 2");
  EXPECT_FALSE(e.log.has_value());
  ASSERT_THAT(e.final_metrics, SizeIs(1));
  EXPECT_EQ(e.final_metrics[0].name, "accuracy");
  EXPECT_EQ(e.final_metrics[0].value, 0.875);

  EXPECT_EQ(back.tasks[2].phase, TaskPhase::kLaunchFailed);
  EXPECT_EQ(back.tasks[2].reason, "command not found: pyhton3");
  EXPECT_EQ(back.tasks[3].phase, TaskPhase::kLost);
}

TEST(AgentProtocolTest, ExitReportCarriesArtifacts) {
  TaskReport exited;
  exited.job_id = 8;
  exited.phase = TaskPhase::kExited;
  exited.exit_code = 0;
  exited.artifacts = {{0, "model/model.pt", "sha256-aa", 1234, 0},
                      {0, "model/signature.json", "sha256-bb", 56, 0}};
  TaskReport running;
  running.job_id = 9;
  AgentReport report{{exited, running}};
  Json wire = OverTheWire(ToJson(report));
  // Only reports that have artifacts mention them.
  EXPECT_FALSE(wire["tasks"][1].contains("artifacts"));
  KILN_ASSERT_OK_AND_ASSIGN(AgentReport back, AgentReportFromJson(wire));
  ASSERT_THAT(back.tasks[0].artifacts, SizeIs(2));
  EXPECT_EQ(back.tasks[0].artifacts[0].path, "model/model.pt");
  EXPECT_EQ(back.tasks[0].artifacts[0].package_id, "sha256-aa");
  EXPECT_EQ(back.tasks[0].artifacts[0].size, 1234);
  EXPECT_EQ(back.tasks[0].artifacts[1].path, "model/signature.json");
  EXPECT_THAT(back.tasks[1].artifacts, IsEmpty());
}

TEST(AgentProtocolTest, ArtifactsOutsideTheModelFolderAreRefused) {
  auto report_with = [](Json artifact) {
    return Json{{"tasks", Json::array({{{"job_id", 1},
                                        {"phase", "EXITED"},
                                        {"artifacts", Json::array({artifact})}}})}};
  };
  for (const char* path : {"model.pt", "/model/x", "model/../x", "model//x", "model/./x", "model/",
                           "result/model/x"}) {
    EXPECT_THAT(
        AgentReportFromJson(report_with({{"path", path}, {"package_id", "sha256-a"}, {"size", 1}})),
        StatusIs(kInvalid, HasSubstr("under model/")))
        << path;
  }
  EXPECT_THAT(AgentReportFromJson(report_with({{"path", "model/a"}, {"size", 1}})),
              StatusIs(kInvalid, HasSubstr("\"package_id\"")));
  EXPECT_THAT(
      AgentReportFromJson(report_with({{"path", "model/a"}, {"package_id", "p"}, {"size", -1}})),
      StatusIs(kInvalid, HasSubstr("negative size")));
  EXPECT_THAT(AgentReportFromJson(report_with("model/a")),
              StatusIs(kInvalid, HasSubstr("each artifact")));
  KILN_EXPECT_OK(AgentReportFromJson(
      report_with({{"path", "model/sub/a.bin"}, {"package_id", "p"}, {"size", 0}})));
}

TEST(AgentProtocolTest, ReportReplySurvivesARoundTrip) {
  ReportReply reply;
  reply.tasks[7] = {{100, 20}, false};
  reply.tasks[8] = {{0, 0}, true};
  KILN_ASSERT_OK_AND_ASSIGN(ReportReply back, ReportReplyFromJson(OverTheWire(ToJson(reply))));
  ASSERT_THAT(back.tasks, SizeIs(2));
  EXPECT_EQ(back.tasks.at(7).offsets.log, 100);
  EXPECT_EQ(back.tasks.at(7).offsets.emetrics, 20);
  EXPECT_FALSE(back.tasks.at(7).done);
  EXPECT_TRUE(back.tasks.at(8).done);
}

TEST(AgentProtocolTest, EmptyMessagesSurviveARoundTrip) {
  KILN_ASSERT_OK_AND_ASSIGN(AgentReport report,
                            AgentReportFromJson(OverTheWire(ToJson(AgentReport{}))));
  EXPECT_THAT(report.tasks, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(SyncReply sync, SyncReplyFromJson(OverTheWire(ToJson(SyncReply{}))));
  EXPECT_THAT(sync.launch, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(ReportReply ack,
                            ReportReplyFromJson(OverTheWire(ToJson(ReportReply{}))));
  EXPECT_THAT(ack.tasks, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(RegisterReply reg,
                            RegisterReplyFromJson(OverTheWire(ToJson(RegisterReply{}))));
  EXPECT_THAT(reg.resume, IsEmpty());
}

// ---------------------------------------------------------------- refusals

TEST(AgentProtocolTest, HelloDecoderRefusesWrongTypes) {
  EXPECT_THAT(AgentHelloFromJson(Json::array()), StatusIs(kInvalid, HasSubstr("JSON object")));
  EXPECT_THAT(AgentHelloFromJson(Json{{"slots", 1}}),
              StatusIs(kInvalid, HasSubstr("\"agent_id\"")));
  EXPECT_THAT(AgentHelloFromJson(Json{{"agent_id", 5}, {"slots", 1}}),
              StatusIs(kInvalid, HasSubstr("\"agent_id\" must be a string")));
  EXPECT_THAT(AgentHelloFromJson(Json{{"agent_id", ""}, {"slots", 1}}),
              StatusIs(kInvalid, HasSubstr("agent_id must be 1 to 128 characters")));
  EXPECT_THAT(AgentHelloFromJson(Json{{"agent_id", "a"}, {"slots", "8"}}),
              StatusIs(kInvalid, HasSubstr("\"slots\" must be an integer")));
  EXPECT_THAT(AgentHelloFromJson(Json{{"agent_id", "a"}, {"slots", -1}}),
              StatusIs(kInvalid, HasSubstr("slots out of range")));
  EXPECT_THAT(AgentHelloFromJson(Json::parse(R"({"agent_id": "a", "slots": 1, "gpus": [3]})")),
              StatusIs(kInvalid, HasSubstr("\"index\"")));
  EXPECT_THAT(
      AgentHelloFromJson(Json::parse(R"({"agent_id": "a", "slots": 1, "gpus": [{"index": "0"}]})")),
      StatusIs(kInvalid, HasSubstr("\"index\" must be an integer")));
  EXPECT_THAT(AgentHelloFromJson(Json::parse(R"({"agent_id": "a", "slots": 1, "tasks": 7})")),
              StatusIs(kInvalid, HasSubstr("field \"tasks\" must be a list")));
  EXPECT_THAT(AgentHelloFromJson(Json::parse(R"({"agent_id": "a", "slots": 1, "tasks": ["7"]})")),
              StatusIs(kInvalid, HasSubstr("field \"tasks\" must hold integers")));
}

TEST(AgentProtocolTest, RegisterReplyDecoderRefusesWrongTypes) {
  EXPECT_THAT(RegisterReplyFromJson(Json::parse(R"({"resume": {"x": {}}})")),
              StatusIs(kInvalid, HasSubstr("bad resume key")));
  EXPECT_THAT(RegisterReplyFromJson(Json::parse(R"({"resume": {"7": {"log": "1"}}})")),
              StatusIs(kInvalid, HasSubstr("\"log\" must be an integer")));
  EXPECT_THAT(RegisterReplyFromJson(Json::parse(R"({"resume": {"7": 3}})")),
              StatusIs(kInvalid, HasSubstr("JSON object")));
  EXPECT_THAT(RegisterReplyFromJson(Json::parse(R"({"forget": [1.5]})")),
              StatusIs(kInvalid, HasSubstr("\"forget\" must hold integers")));
  EXPECT_THAT(RegisterReplyFromJson(Json::parse(R"({"sync_wait_ms": true})")),
              StatusIs(kInvalid, HasSubstr("\"sync_wait_ms\" must be an integer")));
}

TEST(AgentProtocolTest, TaskSpecDecoderRefusesWrongTypes) {
  EXPECT_THAT(TaskSpecFromJson(Json::parse(R"({"command": ["x"]})")),
              StatusIs(kInvalid, HasSubstr("missing required field \"job_id\"")));
  EXPECT_THAT(TaskSpecFromJson(Json::parse(R"({"job_id": 1})")),
              StatusIs(kInvalid, HasSubstr("empty command")));
  EXPECT_THAT(TaskSpecFromJson(Json::parse(R"({"job_id": 1, "command": [1]})")),
              StatusIs(kInvalid, HasSubstr("\"command\" must be a list of strings")));
  EXPECT_THAT(TaskSpecFromJson(Json::parse(R"({"job_id": 1, "command": ["x"], "env": []})")),
              StatusIs(kInvalid, HasSubstr("\"env\" must be an object of strings")));
  EXPECT_THAT(
      TaskSpecFromJson(Json::parse(R"({"job_id": 1, "command": ["x"], "gpu_indices": [0.5]})")),
      StatusIs(kInvalid, HasSubstr("\"gpu_indices\" must hold integers")));
  EXPECT_THAT(TaskSpecFromJson(Json::parse(R"({"job_id": 1, "command": ["x"], "slots": "1"})")),
              StatusIs(kInvalid, HasSubstr("\"slots\" must be an integer")));
}

TEST(AgentProtocolTest, SyncDecodersRefuseWrongTypes) {
  EXPECT_THAT(SyncRequestFromJson(Json::parse(R"({"running": {"1": true}})")),
              StatusIs(kInvalid, HasSubstr("\"running\" must be a list")));
  EXPECT_THAT(SyncRequestFromJson(Json::parse(R"({"wait_ms": 120001})")),
              StatusIs(kInvalid, HasSubstr("wait_ms must be between 0 and 120000")));
  EXPECT_THAT(SyncRequestFromJson(Json::parse(R"({"wait_ms": -1})")),
              StatusIs(kInvalid, HasSubstr("wait_ms")));
  EXPECT_THAT(SyncReplyFromJson(Json::parse(R"({"launch": [{"job_id": "1"}]})")),
              StatusIs(kInvalid, HasSubstr("\"job_id\" must be an integer")));
  EXPECT_THAT(SyncReplyFromJson(Json::parse(R"({"kill": ["1"]})")),
              StatusIs(kInvalid, HasSubstr("\"kill\" must hold integers")));
  EXPECT_THAT(SyncReplyFromJson(Json::parse(R"({"grace_ms": "10"})")),
              StatusIs(kInvalid, HasSubstr("\"grace_ms\" must be an integer")));
}

TEST(AgentProtocolTest, ReportDecoderRefusesWrongTypes) {
  EXPECT_THAT(AgentReportFromJson(Json::array()), StatusIs(kInvalid, HasSubstr("\"tasks\"")));
  EXPECT_THAT(AgentReportFromJson(Json::parse(R"({"tasks": {}})")),
              StatusIs(kInvalid, HasSubstr("report must be {\"tasks\": [...]}")));
  EXPECT_THAT(AgentReportFromJson(Json::parse(R"({"tasks": [7]})")),
              StatusIs(kInvalid, HasSubstr("JSON object")));
  EXPECT_THAT(AgentReportFromJson(Json::parse(R"({"tasks": [{"job_id": 1}]})")),
              StatusIs(kInvalid, HasSubstr("missing required field \"phase\"")));
  EXPECT_THAT(AgentReportFromJson(Json::parse(R"({"tasks": [{"job_id": 1, "phase": "DONE"}]})")),
              StatusIs(kInvalid, HasSubstr("unknown task phase \"DONE\"")));
  EXPECT_THAT(AgentReportFromJson(
                  Json::parse(R"({"tasks": [{"job_id": 1, "phase": "RUNNING", "reason": 3}]})")),
              StatusIs(kInvalid, HasSubstr("\"reason\" must be a string")));
}

TEST(AgentProtocolTest, ReportDecoderRefusesMalformedChunks) {
  auto with_log = [](const char* log) {
    return AgentReportFromJson(Json::parse(
        absl::StrCat(R"({"tasks": [{"job_id": 1, "phase": "RUNNING", "log": )", log, "}]}")));
  };
  EXPECT_THAT(with_log(R"({"to": 5})"), StatusIs(kInvalid, HasSubstr("\"from\"")));
  EXPECT_THAT(with_log(R"({"from": 6, "to": 5})"),
              StatusIs(kInvalid, HasSubstr("0 <= from <= to")));
  EXPECT_THAT(with_log(R"({"from": -1, "to": 5})"),
              StatusIs(kInvalid, HasSubstr("0 <= from <= to")));
  EXPECT_THAT(with_log(R"({"from": 0, "to": 5, "lines": "hi"})"),
              StatusIs(kInvalid, HasSubstr("\"lines\" must be a list")));
  EXPECT_THAT(with_log(R"({"from": 0, "to": 5, "lines": [[1, "o"]]})"),
              StatusIs(kInvalid, HasSubstr("each line must be [time_micros")));
  EXPECT_THAT(with_log(R"({"from": 0, "to": 5, "lines": [["1", "o", "hi"]]})"),
              StatusIs(kInvalid, HasSubstr("each line must be")));
  EXPECT_THAT(with_log(R"({"from": 0, "to": 5, "points": {}})"),
              StatusIs(kInvalid, HasSubstr("\"points\" must be a list")));
  EXPECT_THAT(with_log(R"({"from": 0, "to": 5, "points": [["loss", "test", 1, "0.5", 2]]})"),
              StatusIs(kInvalid, HasSubstr("each point must be [name, group, step")));
  EXPECT_THAT(AgentReportFromJson(Json::parse(
                  R"({"tasks": [{"job_id": 1, "phase": "EXITED", "final_metrics": 3}]})")),
              StatusIs(kInvalid, HasSubstr("\"points\" must be a list")));
}

TEST(AgentProtocolTest, ReportReplyDecoderRefusesWrongTypes) {
  EXPECT_THAT(ReportReplyFromJson(Json::object()),
              StatusIs(kInvalid, HasSubstr("must hold \"tasks\"")));
  EXPECT_THAT(ReportReplyFromJson(Json::parse(R"({"tasks": []})")),
              StatusIs(kInvalid, HasSubstr("must hold \"tasks\"")));
  EXPECT_THAT(ReportReplyFromJson(Json::parse(R"({"tasks": {"seven": {}}})")),
              StatusIs(kInvalid, HasSubstr("bad task key")));
  EXPECT_THAT(ReportReplyFromJson(Json::parse(R"({"tasks": {"7": {"done": 1}}})")),
              StatusIs(kInvalid, HasSubstr("\"done\" must be true or false")));
}

TEST(AgentProtocolTest, TaskSpecDecoderRefusesADeeplyNestedConfig) {
  // Found by job_request_fuzz: copying this config overflowed the stack. (Built by
  // parsing, as on the wire: copying it in the test would overflow just the same.)
  constexpr int kDepth = 500'000;
  std::string task = absl::StrCat(R"({"job_id": 1, "command": ["x"], "config": {"a": )",
                                  std::string(kDepth, '['), std::string(kDepth, ']'), "}}");
  EXPECT_THAT(TaskSpecFromJson(Json::parse(task)),
              StatusIs(kInvalid, HasSubstr("nested too deeply")));
  EXPECT_THAT(SyncReplyFromJson(Json::parse(absl::StrCat(R"({"launch": [)", task, "]}"))),
              StatusIs(kInvalid, HasSubstr("nested too deeply")));

  std::string shallow = absl::StrCat(R"({"job_id": 1, "command": ["x"], "config": {"a": )",
                                     std::string(63, '['), std::string(63, ']'), "}}");
  KILN_EXPECT_OK(TaskSpecFromJson(Json::parse(shallow)));
}

TEST(AgentProtocolTest, DecodersRefuseNonFiniteMetricValues) {
  Json report = {{"tasks",
                  {{{"job_id", 1},
                    {"phase", "EXITED"},
                    {"final_metrics", {{"loss", "test", 1, std::nan(""), 2}}}}}}};
  EXPECT_THAT(AgentReportFromJson(report), StatusIs(kInvalid, HasSubstr("finite")));
}

}  // namespace
}  // namespace kiln::api
