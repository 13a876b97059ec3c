// master.h
//
// `Master`, the wiring of kilnd: the store, authentication, the job controller, the
// REST API and its HTTP server, all on one event loop; and, for single-machine use, a
// local agent that talks to this master over loopback like any other agent.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kiln::master {

struct MasterOptions {
  std::string data_dir;  // kiln.db, packages/, agent-token, agent/ (local agent)
  std::string address = "127.0.0.1";
  int port = 8470;             // 0 picks a free port
  std::string admin_password;  // used only when the store has no user yet
  int64_t agent_timeout_seconds = 60;
  int64_t kill_grace_ms = 10'000;
  // How long an elastic job's next generation waits for members that have not joined.
  int64_t rendezvous_timeout_seconds = 30;
  bool local_agent = false;
  int local_agent_slots = 0;  // 0: the number of CPUs
  std::string shim_path;      // for the local agent; default beside this executable
  std::string python_path;    // for the local agent's tasks
  bool discover_gpus = true;
};

// Create and Run on one thread; Stop from any thread (or a signal handler via Run's own
// signal handling).
class Master {
 public:
  // Opens the store (migrating it), ensures the admin user and the agent token, recovers
  // unfinished jobs, binds the port and, if asked, prepares the local agent. Prints the
  // generated admin password once, when one is generated.
  static absl::StatusOr<std::unique_ptr<Master>> Create(MasterOptions options);
  ~Master();

  // The bound port and base URL ("http://127.0.0.1:8470").
  int port() const;
  std::string url() const;

  // Serves until Stop() or SIGINT/SIGTERM. Tasks keep running after kilnd stops and are
  // re-attached at the next start.
  void Run();
  void Stop();

 private:
  struct Impl;
  explicit Master(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::master
