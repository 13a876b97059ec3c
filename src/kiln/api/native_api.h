// native_api.h
//
// `NativeApi` serves Kiln's own REST API (docs/api.md) and the agent protocol
// (agent_protocol.h) on top of the `JobController`: it authenticates each request,
// decodes JSON, calls the controller, and encodes the answer. It also owns the two kinds
// of held requests: agents' long-poll syncs and followers of a job's log stream.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "kiln/auth/authenticator.h"
#include "kiln/master/job_controller.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

struct NativeApiOptions {
  std::string data_dir;  // packages live in data_dir/packages
  size_t max_package_bytes = 512 << 20;
};

// All methods and handlers run on the master's loop (`io`).
class NativeApi {
 public:
  NativeApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
            master::JobController& jobs, NativeApiOptions options);
  ~NativeApi();

  // Adds every route to `router`. Also registers the controller observers.
  void Register(net::Router& router);

  // Answers every held agent sync now (at shutdown, so agents are not left waiting).
  void ReleaseHeldSyncs();

 private:
  struct ParkedSync;
  struct LogFollower;

  // Route handlers.
  void Login(net::HttpRequest& req, net::Responder res);
  void Logout(net::HttpRequest& req, net::Responder res);
  void Me(net::HttpRequest& req, net::Responder res);
  void CreateUser(net::HttpRequest& req, net::Responder res);
  void ListUsers(net::HttpRequest& req, net::Responder res);
  void UploadPackage(net::HttpRequest& req, net::Responder res);
  void DownloadPackage(net::HttpRequest& req, net::Responder res);
  void SubmitJob(net::HttpRequest& req, net::Responder res);
  void ListJobs(net::HttpRequest& req, net::Responder res);
  void GetJob(net::HttpRequest& req, net::Responder res);
  void KillJob(net::HttpRequest& req, net::Responder res);
  void JobEvents(net::HttpRequest& req, net::Responder res);
  void JobLogs(net::HttpRequest& req, net::Responder res);
  void GetMetrics(net::HttpRequest& req, net::Responder res);
  void PostMetrics(net::HttpRequest& req, net::Responder res);
  void ListAgents(net::HttpRequest& req, net::Responder res);
  void AgentRegister(net::HttpRequest& req, net::Responder res);
  void AgentSync(net::HttpRequest& req, net::Responder res);
  void AgentReportHandler(net::HttpRequest& req, net::Responder res);

  absl::StatusOr<auth::Principal> Authenticate(const net::HttpRequest& req);
  absl::StatusOr<auth::Principal> AuthenticateAgent(const net::HttpRequest& req);
  void WakeAgent(const std::string& agent_id);
  void PumpFollowers(int64_t job_id);
  // Writes pending lines to `f`; returns false when the follower is finished.
  bool Pump(LogFollower& f);

  boost::asio::io_context& io_;
  store::Store& store_;
  auth::Authenticator& auth_;
  master::JobController& jobs_;
  NativeApiOptions options_;
  std::map<std::string, std::shared_ptr<ParkedSync>> parked_;       // by agent id
  std::multimap<int64_t, std::shared_ptr<LogFollower>> followers_;  // by job id
  std::shared_ptr<boost::asio::steady_timer> follower_sweep_;
};

// JSON views of records, shared by the native API and the other dialects.
base::Json JobToJson(const store::JobRecord& job);
// For a distributed job's JSON (one with "workers"): adds "tasks" (its workers, oldest
// first), "generations" and workers.live, read from `store`.
absl::Status AddDistributedDetails(store::Store& store, base::Json& job);
base::Json LogLineToJson(const store::LogLine& line);

}  // namespace kiln::api
