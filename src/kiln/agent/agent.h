// agent.h
//
// `Agent`, Kiln's node agent: registers the node's CPU slots and GPUs with the master,
// launches the tasks it is given under a per-task supervisor (kiln-shim), ships their
// logs and metrics, and stops them when told. Tasks outlive the agent: a restarted agent
// finds them in its data directory and re-adopts them. It talks to the master only
// through the REST API (api/agent_protocol.h), also when it runs inside kilnd.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/api/agent_protocol.h"
#include "kiln/net/http_client.h"

namespace kiln::agent {

struct AgentOptions {
  std::string master_url;  // "http://127.0.0.1:8470"
  std::string token;       // the master's agent token
  std::string data_dir;    // tasks live in data_dir/tasks/<job id>
  std::string agent_id;    // default: the host name
  int slots = 0;           // default: the number of CPUs
  bool discover_gpus = true;
  std::string shim_path;    // default: kiln-shim beside this executable
  std::string python_path;  // put on the tasks' PYTHONPATH so `import kiln` works
  int64_t max_log_bytes = 256 << 20;
};

// Thread-safe. Start() runs two threads: one keeps the session with the master (register,
// long-poll sync, launch and kill), one ships task output and exits.
class Agent {
 public:
  // Validates the options and prepares the data directory; connects nothing yet.
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  ~Agent();

  void Start();
  // Asks the threads to stop without waiting for them.
  void RequestStop();
  // Stops the threads and waits for them. A thread blocked in a long-poll returns when
  // the master answers it (kilnd answers every held sync when it stops). Tasks keep
  // running.
  void Stop();

  const std::string& agent_id() const { return options_.agent_id; }

 private:
  struct LocalTask {
    int64_t job_id = 0;
    std::string dir;
    bool offsets_known = false;  // resume offsets received from the master
    api::StreamOffsets acked;
    bool running_reported = false;
    std::string launch_error;
    std::optional<int64_t> kill_after;  // monotonic µs when SIGKILL follows SIGTERM
    // The files under result/model/, uploaded after the task exited and before its exit
    // is reported (artifacts.h). Kept in the task folder too, so a restarted agent does
    // not upload them again.
    bool artifacts_ready = false;
    std::vector<store::ArtifactRecord> artifacts;
    std::optional<int64_t> artifacts_failing_since;  // monotonic µs of the first failure
  };

  explicit Agent(AgentOptions options) : options_(std::move(options)) {}
  void ControlLoop();
  void ReportLoop();
  absl::Status Register(net::HttpClient& client);
  void Launch(net::HttpClient& client, const api::TaskSpec& spec);
  absl::Status PrepareTask(net::HttpClient& client, const api::TaskSpec& spec,
                           const std::string& dir);
  void Kill(int64_t job_id, int64_t grace_ms);
  // Uploads the artifacts of every task that has exited and has not had them uploaded.
  // Runs on the report thread without holding mu_ (uploads can be large).
  void UploadArtifactsOfExitedTasks(net::HttpClient& client);
  // Builds one report for every task with news; returns false if there is nothing to say.
  bool BuildReport(api::AgentReport& report);
  void ApplyReply(const api::ReportReply& reply);
  void MarkDone(int64_t job_id);
  std::vector<int64_t> HeldTasks();
  std::map<std::string, std::string> TaskEnvironment(const api::TaskSpec& spec,
                                                     const std::string& dir) const;
  void Wake();
  // Wakes the report loop as soon as a task folder changes (output, exit), so short
  // jobs and live logs are not held back by the polling interval.
  void WatchLoop();
  void WatchTask(int64_t job_id, const std::string& dir);

  AgentOptions options_;
  std::vector<api::GpuDescription> gpus_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> registered_{false};
  std::thread control_thread_;
  std::thread report_thread_;
  std::thread watch_thread_;
  int inotify_fd_ = -1;

  std::mutex mu_;
  std::condition_variable wake_;
  bool wake_flag_ = false;                       // guarded by mu_
  std::map<int64_t, LocalTask> tasks_;           // guarded by mu_
  std::map<int64_t, std::vector<int>> watches_;  // inotify watches per task; guarded by mu_
};

}  // namespace kiln::agent
