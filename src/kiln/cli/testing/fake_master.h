// fake_master.h
//
// Test doubles for exercising the CLI end to end in-process: `FakeMaster`, a real HTTP
// server on a loopback port (kiln::net::HttpServer) that answers the routes a test gives
// it and records every request; and `CliHarness`, which runs `kiln` commands against
// string streams, a temp HOME and working folder, and a fake clock.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/invocation.h"
#include "kiln/net/http_server.h"
#include "kiln/net/http_status.h"

namespace kiln::cli::testing {

// A job record as docs/api.md shows it, with `state` and `exit_code` filled in.
inline base::Json JobRecord(int64_t id, std::string state,
                            std::optional<int> exit_code = std::nullopt, std::string reason = "") {
  base::Json job = {
      {"id", id},
      {"name", "fmnist"},
      {"user", "admin"},
      {"state", state},
      {"command", {"python3", "train.py"}},
      {"resources", {{"slots", 1}, {"gpus", 0}}},
      {"env", base::Json::object()},
      {"config", base::Json::object()},
      {"package", {{"id", "sha256-abc"}}},
      {"agent", "host-a"},
      {"exit_code", nullptr},
      {"reason", reason},
      {"created_at", "2026-11-26T10:00:00.000000Z"},
      {"scheduled_at", "2026-11-26T10:00:01.000000Z"},
      {"started_at", "2026-11-26T10:00:02.000000Z"},
      {"finished_at", nullptr},
  };
  if (exit_code) job["exit_code"] = *exit_code;
  if (state == "FINISHED" || state == "FAILED" || state == "KILLED") {
    job["finished_at"] = "2026-11-26T10:00:43.200000Z";
  }
  return job;
}

// The API's error body for `status`.
inline net::HttpResponse ApiError(const absl::Status& status) { return net::ErrorResponse(status); }

// A loopback HTTP server serving the routes added with On() before Start(). Handlers run
// on the server's thread. Thread-safe accessors.
class FakeMaster {
 public:
  FakeMaster() = default;
  ~FakeMaster() { Stop(); }

  // Adds a route; a handler that replies with canned JSON is the common case.
  void On(std::string method, std::string pattern, net::Handler handler) {
    router_.Add(
        std::move(method), std::move(pattern),
        [this, handler = std::move(handler)](net::HttpRequest& request, net::Responder responder) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            requests_.push_back(request);
          }
          handler(request, std::move(responder));
        },
        net::RouteOptions{.max_body_bytes = 64 << 20});
  }
  void OnJson(std::string method, std::string pattern, int status, base::Json body) {
    On(std::move(method), std::move(pattern),
       [status, body](net::HttpRequest&, net::Responder responder) {
         responder.Send(net::JsonResponse(status, body));
       });
  }

  void Start() {
    auto server = net::HttpServer::Create(io_, net::HttpServerOptions{}, std::move(router_));
    KILN_CHECK_OK(server.status());
    server_ = *std::move(server);
    thread_ = std::thread([this] { io_.run(); });
  }

  void Stop() {
    if (server_) server_->Stop();
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  int port() const { return server_->port(); }

  std::vector<net::HttpRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // Requests whose path is `path`.
  std::vector<net::HttpRequest> RequestsTo(std::string_view path) const {
    std::vector<net::HttpRequest> out;
    for (const auto& r : requests()) {
      if (r.path == path) out.push_back(r);
    }
    return out;
  }

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      boost::asio::make_work_guard(io_)};
  net::Router router_;
  std::unique_ptr<net::HttpServer> server_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<net::HttpRequest> requests_;
};

// A temp folder removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/kiln_cli_test_XXXXXX";
    KILN_CHECK(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() { (void)base::RemoveAll(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `kiln` in-process. Each Run gets a fresh Invocation sharing the harness's HOME,
// working folder, environment and fake clock; output accumulates in out()/err() until
// Clear().
class CliHarness {
 public:
  CliHarness() {
    KILN_CHECK_OK(base::MakeDirs(home_.path() + "/home"));
    KILN_CHECK_OK(base::MakeDirs(home_.path() + "/work"));
    env["HOME"] = home_.path() + "/home";
    cwd = home_.path() + "/work";
  }

  int Run(std::vector<std::string> args) {
    Invocation inv;
    inv.out = &out_;
    inv.err = &err_;
    inv.in = &in;
    inv.env = env;
    inv.cwd = cwd;
    inv.self_exe = self_exe;
    inv.clock = &clock;
    inv.sleep = [this](int64_t micros) {
      slept_micros += micros;
      clock.AdvanceMicros(micros);
    };
    inv.read_secret = [this](std::string_view prompt) -> absl::StatusOr<std::string> {
      prompts.emplace_back(prompt);
      return secret;
    };
    inv.exec = [this](const std::string& path, const std::vector<std::string>& argv) {
      exec_path = path;
      exec_argv = argv;
      return absl::OkStatus();
    };
    args.insert(args.begin(), "kiln");
    return RunKiln(args, inv);
  }

  std::string out() const { return out_.str(); }
  std::string err() const { return err_.str(); }
  void Clear() {
    out_.str("");
    err_.str("");
  }
  std::string home() const { return env.at("HOME"); }

  std::map<std::string, std::string> env;
  std::string cwd;
  std::string self_exe = "/nonexistent/bin/kiln";
  std::istringstream in;
  std::string secret;
  std::vector<std::string> prompts;
  base::FakeClock clock{1'795'687'300'000'000};  // 2026-11-26T10:01:40Z
  int64_t slept_micros = 0;
  std::string exec_path;
  std::vector<std::string> exec_argv;

 private:
  TempDir home_;
  std::ostringstream out_;
  std::ostringstream err_;
};

}  // namespace kiln::cli::testing
