// server_thread.h
//
// `ServerThread`: an HttpServer on 127.0.0.1 (free port) with its own io_context and io
// thread, for tests that need a real server. Stops and joins on destruction.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/net/http_server.h"

namespace kiln::net {

// Not thread-safe itself; the server it runs is (see HttpServer). Drop every Responder a
// test kept before the ServerThread is destroyed.
class ServerThread {
 public:
  explicit ServerThread(Router router, HttpServerOptions options = {}) {
    options.address = "127.0.0.1";
    auto server = HttpServer::Create(io_, std::move(options), std::move(router));
    KILN_CHECK_OK(server.status());
    server_ = std::move(server).value();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ServerThread() {
    server_->Stop();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;

  HttpServer& server() { return *server_; }
  int port() const { return server_->port(); }
  std::string base_url() const { return absl::StrCat("http://127.0.0.1:", port()); }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io_);
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

}  // namespace kiln::net
