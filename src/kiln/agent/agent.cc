#include "kiln/agent/agent.h"

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/agent/artifacts.h"
#include "kiln/agent/gpu_discovery.h"
#include "kiln/agent/package.h"
#include "kiln/agent/task_log.h"
#include "kiln/agent/task_supervision.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/elastic/worker/local_address.h"
#include "kiln/net/http_status.h"
#include "kiln/tracking/emetrics.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace kiln::agent {
namespace {

using base::Json;

constexpr size_t kMaxChunkBytes = 512 << 10;
constexpr char kDoneMarker[] = "reported";
constexpr char kLaunchErrorFile[] = "launch_error";
constexpr char kArtifactsFile[] = "artifacts.json";
// How long a task's exit waits for its artifacts to upload while the master keeps failing
// (it restarts, its disk is full) before the exit is reported without them.
constexpr int64_t kArtifactRetryMicros = int64_t{5} * 60 * 1'000'000;
// Variables of the agent's own environment that tasks must not inherit.
constexpr const char* kSecretVariables[] = {"KILN_PASSWORD", "KILN_ADMIN_PASSWORD",
                                            "KILN_AGENT_TOKEN", "KILN_USER", "KILN_TOKEN"};

std::string TaskDir(const std::string& data_dir, int64_t job_id) {
  return absl::StrCat(data_dir, "/tasks/", job_id);
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_size);
}

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

Json ArtifactsToJson(const std::vector<store::ArtifactRecord>& artifacts) {
  Json out = Json::array();
  for (const auto& a : artifacts) {
    out.push_back({{"path", a.path}, {"package_id", a.package_id}, {"size", a.size}});
  }
  return out;
}

absl::StatusOr<std::vector<store::ArtifactRecord>> ArtifactsFromJson(const Json& j) {
  std::vector<store::ArtifactRecord> out;
  if (!j.is_array()) return absl::DataLossError("artifacts.json is not a list");
  for (const Json& a : j) {
    store::ArtifactRecord r;
    KILN_ASSIGN_OR_RETURN(r.path, base::GetString(a, "path"));
    KILN_ASSIGN_OR_RETURN(r.package_id, base::GetString(a, "package_id"));
    KILN_ASSIGN_OR_RETURN(r.size, base::GetInt(a, "size"));
    out.push_back(std::move(r));
  }
  return out;
}

// Appends the agent's own lines to a task's output log (after the task's shim has
// exited, so nobody else writes it), where they ship like the task's stderr.
void AppendAgentLines(const std::string& task_dir, const std::vector<std::string>& lines) {
  if (lines.empty()) return;
  std::ofstream log(task_dir + "/" + kOutputLogFile, std::ios::app | std::ios::binary);
  int64_t now = base::SystemClock::Get().NowMicros();
  for (const std::string& line : lines) {
    std::string text = absl::StrCat("kiln-agent: ", line);
    std::replace(text.begin(), text.end(), '\n', ' ');
    log << FormatLogRecord(now, 'e', text);
  }
}

store::MetricPoint ToStorePoint(const tracking::MetricPoint& p) {
  return {p.name, p.group, p.step, p.value, p.time_micros};
}

// Calls `fn` until it succeeds or the agent stops, backing off up to 2 s.
template <typename Fn>
bool RetryUntilOk(const std::atomic<bool>& stopping, Fn fn) {
  int delay_ms = 50;
  while (!stopping.load()) {
    absl::Status s = fn();
    if (s.ok()) return true;
    spdlog::debug("agent: {} (retrying in {} ms)", s.ToString(), delay_ms);
    for (int waited = 0; waited < delay_ms && !stopping.load(); waited += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    delay_ms = std::min(delay_ms * 2, 2000);
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  if (options.master_url.empty()) return absl::InvalidArgumentError("the agent needs --master URL");
  if (options.token.empty()) {
    return absl::InvalidArgumentError(
        "the agent needs the master's agent token (--token-file, or KILN_AGENT_TOKEN); it is in "
        "<master data dir>/agent-token");
  }
  if (options.data_dir.empty()) return absl::InvalidArgumentError("the agent needs --data-dir");
  if (options.agent_id.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof(host) - 1);
    options.agent_id = host;
  }
  if (options.slots <= 0) {
    options.slots = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  if (options.shim_path.empty()) options.shim_path = SelfDir() + "/kiln-shim";
  if (::access(options.shim_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the task supervisor ", options.shim_path,
                     " is missing or not executable; build it "
                     "(it ships beside kiln-agent) or pass --shim"));
  }
  KILN_RETURN_IF_ERROR(base::MakeDirs(absl::StrCat(options.data_dir, "/tasks"), 0700));
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  if (agent->options_.discover_gpus) {
    auto gpus = DiscoverGpus();
    if (!gpus.ok()) {
      spdlog::warn("agent: GPU discovery failed ({}); registering no GPUs",
                   gpus.status().ToString());
    } else {
      for (const GpuInfo& g : *gpus) {
        agent->gpus_.push_back({g.index, g.uuid, g.name, g.memory_mib});
      }
    }
  }
  // Re-adopt the tasks an earlier agent process left: they are still ours until the
  // master has every line of their output.
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(agent->options_.data_dir + "/tasks", ec)) {
    int64_t job_id = 0;
    if (!entry.is_directory() || !absl::SimpleAtoi(entry.path().filename().string(), &job_id)) {
      continue;
    }
    if (std::filesystem::exists(entry.path() / kDoneMarker)) continue;
    LocalTask task;
    task.job_id = job_id;
    task.dir = entry.path().string();
    auto err = base::ReadFile(task.dir + "/" + kLaunchErrorFile);
    if (err.ok()) task.launch_error = *err;
    if (!err.ok() && absl::IsNotFound(InspectTask(task.dir).status())) {
      // The earlier agent stopped while preparing it: nothing was launched (the shim
      // writes shim.json within milliseconds of starting, long before an agent restarts).
      // Adopting it would claim a task that never reports; leaving it out makes the master
      // send the launch again (its sync is level-triggered).
      (void)base::RemoveAll(task.dir);
      continue;
    }
    agent->tasks_[job_id] = task;
  }
  if (!agent->tasks_.empty()) {
    spdlog::info("agent: re-adopting {} tasks from {}", agent->tasks_.size(),
                 agent->options_.data_dir);
  }
  return agent;
}

Agent::~Agent() {
  Stop();
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

void Agent::Start() {
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) spdlog::warn("agent: no inotify ({}); polling task folders only", errno);
  std::vector<std::pair<int64_t, std::string>> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, t] : tasks_) held.emplace_back(id, t.dir);
  }
  for (const auto& [id, dir] : held) WatchTask(id, dir);
  control_thread_ = std::thread([this] { ControlLoop(); });
  report_thread_ = std::thread([this] { ReportLoop(); });
  if (inotify_fd_ >= 0) watch_thread_ = std::thread([this] { WatchLoop(); });
}

void Agent::WatchTask(int64_t job_id, const std::string& dir) {
  if (inotify_fd_ < 0) return;
  std::vector<int> wds;
  for (const std::string& d : {dir, dir + "/logs"}) {
    int wd = ::inotify_add_watch(inotify_fd_, d.c_str(), IN_MODIFY | IN_MOVED_TO | IN_CLOSE_WRITE);
    if (wd >= 0) wds.push_back(wd);
  }
  std::lock_guard<std::mutex> lock(mu_);
  watches_[job_id] = std::move(wds);
}

void Agent::WatchLoop() {
  char buf[16 * 1024];
  while (!stopping_) {
    pollfd pfd{inotify_fd_, POLLIN, 0};
    int n = ::poll(&pfd, 1, 200);
    if (n <= 0) continue;
    bool any = false;
    while (::read(inotify_fd_, buf, sizeof(buf)) > 0) any = true;
    if (any) Wake();
  }
}

void Agent::RequestStop() {
  stopping_ = true;
  Wake();
}

void Agent::Stop() {
  RequestStop();
  if (control_thread_.joinable()) control_thread_.join();
  if (report_thread_.joinable()) report_thread_.join();
  if (watch_thread_.joinable()) watch_thread_.join();
}

void Agent::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_flag_ = true;
  }
  wake_.notify_all();
}

std::vector<int64_t> Agent::HeldTasks() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> ids;
  for (const auto& [id, t] : tasks_) ids.push_back(id);
  return ids;
}

// ---------------------------------------------------------------- control

absl::Status Agent::Register(net::HttpClient& client) {
  api::AgentHello hello;
  hello.agent_id = options_.agent_id;
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  hello.hostname = host;
  // Peers of this node's tasks (static jobs' MASTER_ADDR) reach it the way it reaches
  // the master.
  if (auto address = elastic::worker::LocalAddressToward(options_.master_url); address.ok()) {
    hello.address = *address;
  }
  hello.slots = options_.slots;
  hello.gpus = gpus_;
  hello.tasks = HeldTasks();
  KILN_ASSIGN_OR_RETURN(net::HttpResponse resp,
                        client.PostJson("/api/v1/agents/register", api::ToJson(hello)));
  KILN_RETURN_IF_ERROR(net::StatusFromHttpResponse(resp));
  KILN_ASSIGN_OR_RETURN(Json body, base::ParseJson(resp.body));
  KILN_ASSIGN_OR_RETURN(api::RegisterReply reply, api::RegisterReplyFromJson(body));
  std::vector<int64_t> forget;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, task] : tasks_) {
      auto it = reply.resume.find(id);
      if (it != reply.resume.end()) {
        task.acked = it->second;
        task.offsets_known = true;
      }
    }
    forget = reply.forget;
  }
  for (int64_t id : forget) {
    // The master has no use for it: stop it if it still runs, and let it go.
    std::string dir = TaskDir(options_.data_dir, id);
    (void)SignalTask(dir, SIGKILL);
    MarkDone(id);
  }
  registered_ = true;
  spdlog::info("agent {} registered with {} ({} slots, {} GPUs)", options_.agent_id,
               options_.master_url, options_.slots, gpus_.size());
  Wake();
  return absl::OkStatus();
}

void Agent::ControlLoop() {
  auto client_or = net::HttpClient::Create(options_.master_url);
  if (!client_or.ok()) {
    spdlog::error("agent: {}", client_or.status().ToString());
    return;
  }
  std::unique_ptr<net::HttpClient> client = std::move(client_or).value();
  client->SetBearerToken(options_.token);
  while (!stopping_) {
    registered_ = false;
    if (!RetryUntilOk(stopping_, [&] { return Register(*client); })) return;
    // Long-poll for work until the session breaks (master restart, network), then
    // register again.
    while (!stopping_) {
      api::SyncRequest request;
      request.running = HeldTasks();
      request.wait_ms = 10'000;
      auto resp =
          client->Request("POST", absl::StrCat("/api/v1/agents/", options_.agent_id, "/sync"),
                          base::DumpJson(api::ToJson(request)), "application/json",
                          std::chrono::milliseconds(request.wait_ms + 10'000));
      if (!resp.ok()) {
        spdlog::warn("agent: lost the master ({}); reconnecting", resp.status().ToString());
        break;
      }
      if (absl::Status s = net::StatusFromHttpResponse(*resp); !s.ok()) {
        spdlog::warn("agent: sync refused ({}); registering again", s.ToString());
        break;
      }
      auto body = base::ParseJson(resp->body);
      if (!body.ok()) break;
      auto reply = api::SyncReplyFromJson(*body);
      if (!reply.ok()) {
        spdlog::error("agent: bad sync reply: {}", reply.status().ToString());
        break;
      }
      for (const api::TaskSpec& spec : reply->launch) Launch(*client, spec);
      for (int64_t id : reply->kill) Kill(id, reply->grace_ms);
    }
  }
}

std::map<std::string, std::string> Agent::TaskEnvironment(const api::TaskSpec& spec,
                                                          const std::string& dir) const {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const char* secret : kSecretVariables) env.erase(secret);
  std::string slots = std::to_string(spec.slots);
  // Debian's torch does its maths in OpenBLAS, which ignores torch.set_num_threads, and
  // OpenMP's spin-waiting starves a busy machine: pin both to the task's slots.
  env["OMP_NUM_THREADS"] = slots;
  env["OPENBLAS_NUM_THREADS"] = slots;
  env["MKL_NUM_THREADS"] = slots;
  env["OMP_WAIT_POLICY"] = "PASSIVE";
  for (const auto& [k, v] : spec.env) env[k] = v;
  // The Kiln tools (kiln-serve, kiln-train, kiln) resolve to the build this agent is
  // part of: for the agent inside kilnd that is kilnd's folder.
  auto path = env.find("PATH");
  env["PATH"] = path == env.end() || path->second.empty()
                    ? absl::StrCat(SelfDir(), ":/usr/local/bin:/usr/bin:/bin")
                    : absl::StrCat(SelfDir(), ":", path->second);
  env["KILN_MASTER"] = options_.master_url;
  env["KILN_SLOTS"] = slots;
  env["RESULT_DIR"] = dir + "/result";
  env["LOG_DIR"] = dir + "/logs";
  env["CHECKPOINT_DIR"] = dir + "/checkpoint";
  if (spec.env.count("DATA_DIR") == 0) env["DATA_DIR"] = dir + "/data";
  if (!gpus_.empty() || !spec.gpu_indices.empty()) {
    std::vector<std::string> ids;
    for (int g : spec.gpu_indices) ids.push_back(std::to_string(g));
    env["CUDA_VISIBLE_DEVICES"] = absl::StrJoin(ids, ",");
  }
  if (!options_.python_path.empty()) {
    auto it = env.find("PYTHONPATH");
    env["PYTHONPATH"] = it == env.end() || it->second.empty()
                            ? options_.python_path
                            : absl::StrCat(options_.python_path, ":", it->second);
  }
  return env;
}

absl::Status Agent::PrepareTask(net::HttpClient& client, const api::TaskSpec& spec,
                                const std::string& dir) {
  for (const char* sub : {"/work", "/result", "/logs", "/checkpoint", "/data"}) {
    KILN_RETURN_IF_ERROR(base::MakeDirs(dir + sub, 0755));
  }
  std::string work = dir + "/work";
  if (!spec.package_id.empty()) {
    KILN_ASSIGN_OR_RETURN(
        net::HttpResponse resp,
        client.Get(absl::StrCat("/api/v1/packages/", spec.package_id, "/content")));
    KILN_RETURN_IF_ERROR(net::StatusFromHttpResponse(resp));
    if (spec.package_kind == "tar.gz") {
      absl::Status s = ExtractPackage(resp.body, work);
      if (!s.ok())
        return absl::InvalidArgumentError(
            absl::StrCat("could not unpack the code package: ", s.message()));
    } else {
      KILN_RETURN_IF_ERROR(PlaceSingleFile(resp.body, spec.package_name, work));
    }
  } else if (!spec.package_path.empty()) {
    absl::Status s = CopyFolder(spec.package_path, work);
    if (!s.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("could not copy the code folder: ", s.message()));
  }
  if (!spec.workdir.empty()) {
    // The master validated it; refuse anything that could leave the task's folder anyway.
    if (spec.workdir[0] == '/' || absl::StrContains(spec.workdir, "..")) {
      return absl::InvalidArgumentError(
          absl::StrCat("working folder \"", spec.workdir, "\" is not inside the package"));
    }
    work += "/" + spec.workdir;
    if (!std::filesystem::is_directory(work)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the code package has no folder \"", spec.workdir,
                       "\" to run in; check the model dir / workdir against the package's "
                       "top-level folder"));
    }
  }
  // config.json carries the job's hyperparameters; a package's own config.json stays
  // when the job gives none.
  std::string config_path = work + "/config.json";
  if (!spec.config.empty() || !std::filesystem::exists(config_path)) {
    KILN_RETURN_IF_ERROR(base::WriteFileAtomically(config_path, base::DumpJson(spec.config, 2)));
  }
  return absl::OkStatus();
}

void Agent::Launch(net::HttpClient& client, const api::TaskSpec& spec) {
  std::string dir = TaskDir(options_.data_dir, spec.job_id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (tasks_.count(spec.job_id)) return;  // already ours (a repeated launch)
  }
  LocalTask task;
  task.job_id = spec.job_id;
  task.dir = dir;
  task.offsets_known = true;  // a new task starts at offset 0 on both sides
  if (std::filesystem::exists(dir)) {
    // Left from an earlier attempt that never reported; start clean.
    (void)base::RemoveAll(dir);
  }
  absl::Status s = base::MakeDirs(dir, 0700);
  if (s.ok()) s = PrepareTask(client, spec, dir);
  if (s.ok()) {
    TaskLaunch launch;
    launch.shim_path = options_.shim_path;
    launch.task_dir = dir;
    launch.workdir = spec.workdir.empty() ? dir + "/work" : dir + "/work/" + spec.workdir;
    launch.command = spec.command;
    launch.env = TaskEnvironment(spec, dir);
    launch.max_log_bytes = options_.max_log_bytes;
    auto info = LaunchTask(launch);
    if (!info.ok() && !absl::IsFailedPrecondition(info.status())) s = info.status();
    // FailedPrecondition: the command did not exec; the shim wrote exit.json and a log
    // line saying why, which the report loop ships like any exit.
  }
  if (!s.ok()) {
    task.launch_error = std::string(s.message());
    (void)base::WriteFileAtomically(dir + "/" + kLaunchErrorFile, task.launch_error);
    spdlog::warn("agent: job {} could not start: {}", spec.job_id, task.launch_error);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_[spec.job_id] = task;
  }
  WatchTask(spec.job_id, dir);
  Wake();
}

void Agent::Kill(int64_t job_id, int64_t grace_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(job_id);
  std::string dir = it == tasks_.end() ? TaskDir(options_.data_dir, job_id) : it->second.dir;
  if (it != tasks_.end() && it->second.kill_after) return;  // already stopping
  absl::Status s = SignalTask(dir, SIGTERM);
  if (!s.ok()) spdlog::warn("agent: SIGTERM to job {}: {}", job_id, s.ToString());
  if (it != tasks_.end()) it->second.kill_after = base::MonotonicMicros() + grace_ms * 1000;
}

void Agent::MarkDone(int64_t job_id) {
  std::string dir = TaskDir(options_.data_dir, job_id);
  (void)base::WriteFileAtomically(dir + "/" + kDoneMarker, "");
  std::lock_guard<std::mutex> lock(mu_);
  tasks_.erase(job_id);
  auto w = watches_.find(job_id);
  if (w != watches_.end()) {
    for (int wd : w->second) ::inotify_rm_watch(inotify_fd_, wd);
    watches_.erase(w);
  }
}

// ---------------------------------------------------------------- artifacts

void Agent::UploadArtifactsOfExitedTasks(net::HttpClient& client) {
  std::vector<std::pair<int64_t, std::string>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, task] : tasks_) {
      if (task.artifacts_ready || !task.launch_error.empty() || !task.offsets_known) continue;
      pending.emplace_back(id, task.dir);
    }
  }
  for (const auto& [id, dir] : pending) {
    if (stopping_) return;
    auto status = InspectTask(dir);
    if (!status.ok() || status->liveness != TaskLiveness::kExited) continue;
    std::vector<store::ArtifactRecord> artifacts;
    absl::Status s = absl::OkStatus();
    auto saved = base::ReadFile(dir + "/" + kArtifactsFile);
    if (saved.ok()) {
      // Uploaded by an earlier agent process (or an earlier loop) already.
      auto parsed = base::ParseJson(*saved);
      s = parsed.status();
      if (s.ok()) {
        auto list = ArtifactsFromJson(*parsed);
        s = list.status();
        if (s.ok()) artifacts = *std::move(list);
      }
    }
    if (!saved.ok() || !s.ok()) {
      ArtifactScan scan = ScanArtifacts(dir + "/result");
      std::vector<std::string> warnings = scan.warnings;
      auto uploaded = UploadArtifacts(client, scan, warnings);
      if (!uploaded.ok()) {
        int64_t now = base::MonotonicMicros();
        bool give_up = false;
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = tasks_.find(id);
          if (it == tasks_.end()) continue;
          if (!it->second.artifacts_failing_since) it->second.artifacts_failing_since = now;
          give_up = now - *it->second.artifacts_failing_since > kArtifactRetryMicros;
        }
        if (!give_up) {
          spdlog::debug("agent: job {}: artifact upload failed ({}); retrying", id,
                        uploaded.status().ToString());
          continue;
        }
        spdlog::warn("agent: job {}: giving up uploading its artifacts: {}", id,
                     uploaded.status().ToString());
        warnings.push_back(absl::StrCat("the files under model/ could not be uploaded (",
                                        uploaded.status().message(), "); not kept"));
      } else {
        artifacts = *std::move(uploaded);
      }
      for (const std::string& w : warnings) spdlog::warn("agent: job {}: {}", id, w);
      AppendAgentLines(dir, warnings);
      (void)base::WriteFileAtomically(dir + "/" + kArtifactsFile,
                                      base::DumpJson(ArtifactsToJson(artifacts)));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end()) continue;
      it->second.artifacts = std::move(artifacts);
      it->second.artifacts_ready = true;
    }
  }
}

// ---------------------------------------------------------------- reporting

bool Agent::BuildReport(api::AgentReport& report) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t now = base::SystemClock::Get().NowMicros();
  for (auto& [id, task] : tasks_) {
    if (!task.offsets_known) continue;
    api::TaskReport r;
    r.job_id = id;
    if (!task.launch_error.empty()) {
      r.phase = api::TaskPhase::kLaunchFailed;
      r.reason = task.launch_error;
      r.finished_at = now;
      report.tasks.push_back(std::move(r));
      continue;
    }
    auto status = InspectTask(task.dir);
    if (!status.ok()) continue;  // not launched yet
    if (status->shim) r.started_at = status->shim->started_at;

    // Escalate a kill whose grace period is over.
    if (task.kill_after && status->liveness == TaskLiveness::kRunning &&
        base::MonotonicMicros() > *task.kill_after) {
      (void)SignalTask(task.dir, SIGKILL);
    }

    bool log_complete = true;
    std::string log_path = task.dir + "/" + kOutputLogFile;
    auto log = ReadLogRecords(log_path, task.acked.log, kMaxChunkBytes);
    if (log.ok()) {
      if (log->next_offset > task.acked.log) {
        api::OutputChunk c;
        c.from = task.acked.log;
        c.to = log->next_offset;
        for (auto& rec : log->records)
          c.lines.push_back({0, rec.time_micros, rec.stream, std::move(rec.text)});
        r.log = std::move(c);
      }
      log_complete = log->next_offset >= FileSize(log_path);
    }
    bool metrics_complete = true;
    std::string em_path = task.dir + "/logs/evaluation-metrics.txt";
    auto lines = tracking::ReadCompleteLines(em_path, task.acked.emetrics, kMaxChunkBytes);
    if (lines.ok()) {
      if (lines->next_offset > task.acked.emetrics) {
        api::OutputChunk c;
        c.from = task.acked.emetrics;
        c.to = lines->next_offset;
        for (const std::string& line : lines->lines) {
          auto points = tracking::ParseEmetricsLine(line, now);
          if (!points.ok()) continue;  // a malformed line is the workload's; skip it
          for (const auto& p : *points) c.points.push_back(ToStorePoint(p));
        }
        r.emetrics = std::move(c);
      }
      metrics_complete = lines->next_offset >= FileSize(em_path);
    }

    switch (status->liveness) {
      case TaskLiveness::kRunning:
        r.phase = api::TaskPhase::kRunning;
        if (task.running_reported && !r.log && !r.emetrics) continue;
        break;
      case TaskLiveness::kExited:
        // The shim writes exit.json after the last output, so complete files mean
        // everything the task printed is in this report.
        if (log_complete && metrics_complete && status->exit && task.artifacts_ready) {
          r.phase = api::TaskPhase::kExited;
          r.artifacts = task.artifacts;
          r.exit_code = status->exit->exit_code;
          r.signal = status->exit->signal;
          r.finished_at = status->exit->finished_at;
          r.reason = status->exit->error;
          auto vdl = base::ReadFile(task.dir + "/result/val_dict_list.json");
          if (vdl.ok()) {
            auto points = tracking::ParseValDictList(*vdl, r.finished_at.value_or(now));
            if (points.ok()) {
              for (const auto& p : *points) r.final_metrics.push_back(ToStorePoint(p));
            }
          }
        } else {
          r.phase = api::TaskPhase::kRunning;
        }
        break;
      case TaskLiveness::kLost:
        r.phase = api::TaskPhase::kLost;
        r.finished_at = now;
        break;
    }
    report.tasks.push_back(std::move(r));
  }
  return !report.tasks.empty();
}

void Agent::ApplyReply(const api::ReportReply& reply) {
  std::vector<int64_t> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, ack] : reply.tasks) {
      auto it = tasks_.find(id);
      if (it == tasks_.end()) continue;
      // The master's offsets are the truth: they say what is stored, whether or not
      // this batch was applied.
      it->second.acked = ack.offsets;
      it->second.running_reported = true;
      if (ack.done) done.push_back(id);
    }
  }
  for (int64_t id : done) MarkDone(id);
}

void Agent::ReportLoop() {
  auto client_or = net::HttpClient::Create(options_.master_url);
  if (!client_or.ok()) return;
  std::unique_ptr<net::HttpClient> client = std::move(client_or).value();
  client->SetBearerToken(options_.token);
  int backoff_ms = 0;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // inotify wakes us when task files change; the timeout is the fallback (and drives
      // SIGKILL escalation and the detection of dead shims, which change no file).
      wake_.wait_for(lock, std::chrono::milliseconds(backoff_ms > 0 ? backoff_ms : 250),
                     [this] { return wake_flag_ || stopping_.load(); });
      wake_flag_ = false;
    }
    if (stopping_) break;
    ReapExitedShims();
    if (!registered_) continue;
    UploadArtifactsOfExitedTasks(*client);
    api::AgentReport report;
    if (!BuildReport(report)) continue;
    auto resp = client->PostJson(absl::StrCat("/api/v1/agents/", options_.agent_id, "/report"),
                                 api::ToJson(report));
    absl::Status s = resp.ok() ? net::StatusFromHttpResponse(*resp) : resp.status();
    if (!s.ok()) {
      backoff_ms = std::min(std::max(backoff_ms * 2, 100), 2000);
      spdlog::debug("agent: report failed: {}", s.ToString());
      continue;
    }
    backoff_ms = 0;
    auto body = base::ParseJson(resp->body);
    if (!body.ok()) continue;
    auto reply = api::ReportReplyFromJson(*body);
    if (reply.ok()) ApplyReply(*reply);
    // More output may be waiting (chunks are bounded): go again at once.
    bool more = false;
    for (const auto& t : report.tasks) {
      if ((t.log && t.log->to - t.log->from >= static_cast<int64_t>(kMaxChunkBytes) / 2) ||
          (t.emetrics &&
           t.emetrics->to - t.emetrics->from >= static_cast<int64_t>(kMaxChunkBytes) / 2)) {
        more = true;
      }
    }
    if (more) Wake();
  }
}

}  // namespace kiln::agent
