#include "kiln/api/agent_protocol.h"

#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"

namespace kiln::api {
namespace {

using base::Json;

const char* PhaseName(TaskPhase p) {
  switch (p) {
    case TaskPhase::kRunning:
      return "RUNNING";
    case TaskPhase::kExited:
      return "EXITED";
    case TaskPhase::kLaunchFailed:
      return "LAUNCH_FAILED";
    case TaskPhase::kLost:
      return "LOST";
  }
  return "RUNNING";
}

absl::StatusOr<TaskPhase> ParsePhase(const std::string& s) {
  for (TaskPhase p :
       {TaskPhase::kRunning, TaskPhase::kExited, TaskPhase::kLaunchFailed, TaskPhase::kLost}) {
    if (s == PhaseName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown task phase \"", s, "\""));
}

absl::StatusOr<std::vector<int64_t>> IntList(const Json& j, const char* field) {
  std::vector<int64_t> out;
  if (!j.contains(field) || j[field].is_null()) return out;
  if (!j[field].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" must be a list"));
  }
  for (const Json& v : j[field]) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" must hold integers"));
    }
    out.push_back(v.get<int64_t>());
  }
  return out;
}

std::optional<int64_t> OptInt(const Json& j, const char* field) {
  if (!j.contains(field) || !j[field].is_number_integer()) return std::nullopt;
  return j[field].get<int64_t>();
}

// A task's config is copied and dumped recursively: refuse nesting deep enough to
// overflow the stack. The master allows at most 64 levels (master/job_spec.cc).
constexpr int kMaxConfigDepth = 64;

bool NestedDeeperThan(const Json& root, int limit) {
  std::vector<std::pair<const Json*, int>> pending = {{&root, 1}};
  while (!pending.empty()) {
    auto [json, depth] = pending.back();
    pending.pop_back();
    if (!json->is_structured()) continue;
    if (depth > limit) return true;
    for (const Json& child : *json) pending.push_back({&child, depth + 1});
  }
  return false;
}

Json OptToJson(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }
Json OptToJson(const std::optional<int>& v) { return v ? Json(*v) : Json(nullptr); }

Json ChunkToJson(const OutputChunk& c) {
  Json lines = Json::array();
  for (const auto& l : c.lines) lines.push_back({l.time, std::string(1, l.stream), l.text});
  Json points = Json::array();
  for (const auto& p : c.points) points.push_back({p.name, p.group, p.step, p.value, p.time});
  return {{"from", c.from}, {"to", c.to}, {"lines", lines}, {"points", points}};
}

absl::StatusOr<std::vector<store::MetricPoint>> PointsFromJson(const Json& arr) {
  std::vector<store::MetricPoint> out;
  if (!arr.is_array()) return absl::InvalidArgumentError("\"points\" must be a list");
  for (const Json& p : arr) {
    if (!p.is_array() || p.size() != 5 || !p[0].is_string() || !p[1].is_string() ||
        !p[2].is_number_integer() || !p[3].is_number() || !p[4].is_number_integer()) {
      return absl::InvalidArgumentError(
          "each point must be [name, group, step, value, time_micros]");
    }
    double v = p[3].get<double>();
    if (!std::isfinite(v)) return absl::InvalidArgumentError("metric values must be finite");
    out.push_back({p[0].get<std::string>(), p[1].get<std::string>(), p[2].get<int64_t>(), v,
                   p[4].get<int64_t>()});
  }
  return out;
}

// An artifact's path is relative to the task's RESULT_DIR and inside its model/ folder.
bool IsArtifactPath(const std::string& path) {
  if (!absl::StartsWith(path, "model/") || path.size() <= 6 || path.size() > 4096) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return path.find('\0') == std::string::npos;
}

absl::StatusOr<std::vector<store::ArtifactRecord>> ArtifactsFromJson(const Json& arr) {
  std::vector<store::ArtifactRecord> out;
  if (arr.is_null()) return out;
  if (!arr.is_array()) return absl::InvalidArgumentError("\"artifacts\" must be a list");
  for (const Json& a : arr) {
    if (!a.is_object()) {
      return absl::InvalidArgumentError(
          "each artifact must be {\"path\", \"package_id\", \"size\"}");
    }
    store::ArtifactRecord r;
    KILN_ASSIGN_OR_RETURN(r.path, base::GetString(a, "path"));
    KILN_ASSIGN_OR_RETURN(r.package_id, base::GetString(a, "package_id"));
    KILN_ASSIGN_OR_RETURN(r.size, base::GetInt(a, "size"));
    if (!IsArtifactPath(r.path)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "artifact path \"", r.path, "\" must be relative, under model/, without . or .."));
    }
    if (r.package_id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("artifact \"", r.path, "\" has an empty package_id"));
    }
    if (r.size < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("artifact \"", r.path, "\" has a negative size"));
    }
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<OutputChunk> ChunkFromJson(const Json& j) {
  OutputChunk c;
  KILN_ASSIGN_OR_RETURN(c.from, base::GetInt(j, "from"));
  KILN_ASSIGN_OR_RETURN(c.to, base::GetInt(j, "to"));
  if (c.from < 0 || c.to < c.from) {
    return absl::InvalidArgumentError("chunk offsets must satisfy 0 <= from <= to");
  }
  if (j.contains("lines")) {
    if (!j["lines"].is_array()) return absl::InvalidArgumentError("\"lines\" must be a list");
    for (const Json& l : j["lines"]) {
      if (!l.is_array() || l.size() != 3 || !l[0].is_number_integer() || !l[1].is_string() ||
          !l[2].is_string()) {
        return absl::InvalidArgumentError("each line must be [time_micros, \"o\"|\"e\", text]");
      }
      std::string stream = l[1].get<std::string>();
      c.lines.push_back(
          {0, l[0].get<int64_t>(), stream == "e" ? 'e' : 'o', l[2].get<std::string>()});
    }
  }
  if (j.contains("points")) {
    KILN_ASSIGN_OR_RETURN(c.points, PointsFromJson(j["points"]));
  }
  return c;
}

}  // namespace

Json ToJson(const AgentHello& m) {
  Json gpus = Json::array();
  for (const auto& g : m.gpus) {
    gpus.push_back(
        {{"index", g.index}, {"uuid", g.uuid}, {"name", g.name}, {"memory_mib", g.memory_mib}});
  }
  return {{"agent_id", m.agent_id}, {"hostname", m.hostname}, {"address", m.address},
          {"slots", m.slots},       {"gpus", gpus},           {"tasks", m.tasks}};
}

absl::StatusOr<AgentHello> AgentHelloFromJson(const Json& j) {
  AgentHello m;
  KILN_ASSIGN_OR_RETURN(m.agent_id, base::GetString(j, "agent_id"));
  if (m.agent_id.empty() || m.agent_id.size() > 128) {
    return absl::InvalidArgumentError("agent_id must be 1 to 128 characters");
  }
  KILN_ASSIGN_OR_RETURN(m.hostname, base::GetStringOr(j, "hostname", ""));
  KILN_ASSIGN_OR_RETURN(m.address, base::GetStringOr(j, "address", ""));
  if (m.address.size() > 255)
    return absl::InvalidArgumentError("address must be at most 255 characters");
  KILN_ASSIGN_OR_RETURN(int64_t slots, base::GetInt(j, "slots"));
  if (slots < 0 || slots > 100000) return absl::InvalidArgumentError("slots out of range");
  m.slots = static_cast<int>(slots);
  if (j.contains("gpus") && j["gpus"].is_array()) {
    for (const Json& g : j["gpus"]) {
      GpuDescription d;
      KILN_ASSIGN_OR_RETURN(int64_t index, base::GetInt(g, "index"));
      d.index = static_cast<int>(index);
      KILN_ASSIGN_OR_RETURN(d.uuid, base::GetStringOr(g, "uuid", ""));
      KILN_ASSIGN_OR_RETURN(d.name, base::GetStringOr(g, "name", ""));
      KILN_ASSIGN_OR_RETURN(d.memory_mib, base::GetIntOr(g, "memory_mib", 0));
      m.gpus.push_back(d);
    }
  }
  KILN_ASSIGN_OR_RETURN(m.tasks, IntList(j, "tasks"));
  return m;
}

Json ToJson(const RegisterReply& m) {
  Json resume = Json::object();
  for (const auto& [id, o] : m.resume) {
    resume[std::to_string(id)] = {{"log", o.log}, {"emetrics", o.emetrics}};
  }
  return {{"resume", resume}, {"forget", m.forget}, {"sync_wait_ms", m.sync_wait_ms}};
}

absl::StatusOr<RegisterReply> RegisterReplyFromJson(const Json& j) {
  RegisterReply m;
  if (j.contains("resume") && j["resume"].is_object()) {
    for (auto it = j["resume"].begin(); it != j["resume"].end(); ++it) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id)) return absl::InvalidArgumentError("bad resume key");
      StreamOffsets o;
      KILN_ASSIGN_OR_RETURN(o.log, base::GetIntOr(it.value(), "log", 0));
      KILN_ASSIGN_OR_RETURN(o.emetrics, base::GetIntOr(it.value(), "emetrics", 0));
      m.resume[id] = o;
    }
  }
  KILN_ASSIGN_OR_RETURN(m.forget, IntList(j, "forget"));
  KILN_ASSIGN_OR_RETURN(m.sync_wait_ms, base::GetIntOr(j, "sync_wait_ms", 20000));
  return m;
}

Json ToJson(const TaskSpec& m) {
  return {{"job_id", m.job_id},
          {"command", m.command},
          {"env", m.env},
          {"config", m.config},
          {"package_id", m.package_id},
          {"package_kind", m.package_kind},
          {"package_name", m.package_name},
          {"package_path", m.package_path},
          {"workdir", m.workdir},
          {"slots", m.slots},
          {"gpu_indices", m.gpu_indices}};
}

absl::StatusOr<TaskSpec> TaskSpecFromJson(const Json& j) {
  TaskSpec m;
  KILN_ASSIGN_OR_RETURN(m.job_id, base::GetInt(j, "job_id"));
  KILN_ASSIGN_OR_RETURN(m.command, base::GetStringListOr(j, "command", {}));
  if (m.command.empty()) return absl::InvalidArgumentError("task has an empty command");
  KILN_ASSIGN_OR_RETURN(m.env, base::GetStringMapOr(j, "env"));
  if (j.contains("config") && j["config"].is_object()) {
    if (NestedDeeperThan(j["config"], kMaxConfigDepth)) {
      return absl::InvalidArgumentError("task config is nested too deeply");
    }
    m.config = j["config"];
  }
  KILN_ASSIGN_OR_RETURN(m.package_id, base::GetStringOr(j, "package_id", ""));
  KILN_ASSIGN_OR_RETURN(m.package_kind, base::GetStringOr(j, "package_kind", ""));
  KILN_ASSIGN_OR_RETURN(m.package_name, base::GetStringOr(j, "package_name", ""));
  KILN_ASSIGN_OR_RETURN(m.package_path, base::GetStringOr(j, "package_path", ""));
  KILN_ASSIGN_OR_RETURN(m.workdir, base::GetStringOr(j, "workdir", ""));
  KILN_ASSIGN_OR_RETURN(int64_t slots, base::GetIntOr(j, "slots", 1));
  m.slots = static_cast<int>(slots);
  KILN_ASSIGN_OR_RETURN(auto gpus, IntList(j, "gpu_indices"));
  for (int64_t g : gpus) m.gpu_indices.push_back(static_cast<int>(g));
  return m;
}

Json ToJson(const SyncRequest& m) { return {{"running", m.running}, {"wait_ms", m.wait_ms}}; }

absl::StatusOr<SyncRequest> SyncRequestFromJson(const Json& j) {
  SyncRequest m;
  KILN_ASSIGN_OR_RETURN(m.running, IntList(j, "running"));
  KILN_ASSIGN_OR_RETURN(m.wait_ms, base::GetIntOr(j, "wait_ms", 20000));
  if (m.wait_ms < 0 || m.wait_ms > 120000) {
    return absl::InvalidArgumentError("wait_ms must be between 0 and 120000");
  }
  return m;
}

Json ToJson(const SyncReply& m) {
  Json launch = Json::array();
  for (const auto& t : m.launch) launch.push_back(ToJson(t));
  return {{"launch", launch}, {"kill", m.kill}, {"grace_ms", m.grace_ms}};
}

absl::StatusOr<SyncReply> SyncReplyFromJson(const Json& j) {
  SyncReply m;
  if (j.contains("launch") && j["launch"].is_array()) {
    for (const Json& t : j["launch"]) {
      KILN_ASSIGN_OR_RETURN(TaskSpec spec, TaskSpecFromJson(t));
      m.launch.push_back(std::move(spec));
    }
  }
  KILN_ASSIGN_OR_RETURN(m.kill, IntList(j, "kill"));
  KILN_ASSIGN_OR_RETURN(m.grace_ms, base::GetIntOr(j, "grace_ms", 10000));
  return m;
}

Json ToJson(const AgentReport& m) {
  Json tasks = Json::array();
  for (const auto& t : m.tasks) {
    Json final_points = Json::array();
    for (const auto& p : t.final_metrics) {
      final_points.push_back({p.name, p.group, p.step, p.value, p.time});
    }
    Json task = {{"job_id", t.job_id},
                 {"phase", PhaseName(t.phase)},
                 {"started_at", OptToJson(t.started_at)},
                 {"finished_at", OptToJson(t.finished_at)},
                 {"exit_code", OptToJson(t.exit_code)},
                 {"signal", OptToJson(t.signal)},
                 {"reason", t.reason},
                 {"log", t.log ? ChunkToJson(*t.log) : Json(nullptr)},
                 {"emetrics", t.emetrics ? ChunkToJson(*t.emetrics) : Json(nullptr)},
                 {"final_metrics", final_points}};
    if (!t.artifacts.empty()) {
      Json artifacts = Json::array();
      for (const auto& a : t.artifacts) {
        artifacts.push_back({{"path", a.path}, {"package_id", a.package_id}, {"size", a.size}});
      }
      task["artifacts"] = std::move(artifacts);
    }
    tasks.push_back(std::move(task));
  }
  return {{"tasks", tasks}};
}

absl::StatusOr<AgentReport> AgentReportFromJson(const Json& j) {
  AgentReport m;
  if (!j.is_object() || !j.contains("tasks") || !j["tasks"].is_array()) {
    return absl::InvalidArgumentError("report must be {\"tasks\": [...]}");
  }
  for (const Json& t : j["tasks"]) {
    TaskReport r;
    KILN_ASSIGN_OR_RETURN(r.job_id, base::GetInt(t, "job_id"));
    KILN_ASSIGN_OR_RETURN(std::string phase, base::GetString(t, "phase"));
    KILN_ASSIGN_OR_RETURN(r.phase, ParsePhase(phase));
    r.started_at = OptInt(t, "started_at");
    r.finished_at = OptInt(t, "finished_at");
    if (auto v = OptInt(t, "exit_code")) r.exit_code = static_cast<int>(*v);
    if (auto v = OptInt(t, "signal")) r.signal = static_cast<int>(*v);
    KILN_ASSIGN_OR_RETURN(r.reason, base::GetStringOr(t, "reason", ""));
    if (t.contains("log") && t["log"].is_object()) {
      KILN_ASSIGN_OR_RETURN(r.log, ChunkFromJson(t["log"]));
    }
    if (t.contains("emetrics") && t["emetrics"].is_object()) {
      KILN_ASSIGN_OR_RETURN(r.emetrics, ChunkFromJson(t["emetrics"]));
    }
    if (t.contains("final_metrics")) {
      KILN_ASSIGN_OR_RETURN(r.final_metrics, PointsFromJson(t["final_metrics"]));
    }
    if (t.contains("artifacts")) {
      KILN_ASSIGN_OR_RETURN(r.artifacts, ArtifactsFromJson(t["artifacts"]));
    }
    m.tasks.push_back(std::move(r));
  }
  return m;
}

Json ToJson(const ReportReply& m) {
  Json tasks = Json::object();
  for (const auto& [id, ack] : m.tasks) {
    tasks[std::to_string(id)] = {
        {"log", ack.offsets.log}, {"emetrics", ack.offsets.emetrics}, {"done", ack.done}};
  }
  return {{"tasks", tasks}};
}

absl::StatusOr<ReportReply> ReportReplyFromJson(const Json& j) {
  ReportReply m;
  if (!j.contains("tasks") || !j["tasks"].is_object()) {
    return absl::InvalidArgumentError("report reply must hold \"tasks\"");
  }
  for (auto it = j["tasks"].begin(); it != j["tasks"].end(); ++it) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(it.key(), &id)) return absl::InvalidArgumentError("bad task key");
    TaskAck ack;
    KILN_ASSIGN_OR_RETURN(ack.offsets.log, base::GetIntOr(it.value(), "log", 0));
    KILN_ASSIGN_OR_RETURN(ack.offsets.emetrics, base::GetIntOr(it.value(), "emetrics", 0));
    KILN_ASSIGN_OR_RETURN(ack.done, base::GetBoolOr(it.value(), "done", false));
    m.tasks[id] = ack;
  }
  return m;
}

}  // namespace kiln::api
