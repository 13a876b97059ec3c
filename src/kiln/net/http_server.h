// http_server.h
//
// Defines `HttpServer`, Kiln's HTTP/1.1 server (Boost.Beast on an asio io_context owned by
// the caller), which serves one `Router`. It also pulls in everything a handler author
// needs: `HttpRequest`/`HttpResponse`, `Responder`, `ResponseStream`, `Router`, `Handler`.
// Handlers never see Beast types; the Beast parts live in http_server.cc.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"
#include "kiln/net/responder.h"
#include "kiln/net/router.h"

namespace kiln::net {

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  int port = 0;  // 0 = pick a free port
  // Request line plus header fields; a larger header gets 431.
  size_t max_header_bytes = 16 << 10;
  // A kept-alive connection with no request for this long is closed. Also bounds the time
  // a client may take to send one request's header or body and to accept one write.
  std::chrono::seconds idle_timeout{75};
};

// Serves HTTP/1.0 and 1.1 with keep-alive, one request at a time per connection
// (pipelined requests are answered in order). Errors outside handlers get JSON error
// bodies: 400 malformed request, 404 unknown path, 405 wrong method, 413 body too large,
// 431 header too large. Every response carries `Server: kiln` and Content-Length, except
// streams, which are chunked.
//
// Lifetime: the server's sockets live on `io`, which must outlive the server, every
// connection and every Responder (drop Responders before destroying `io`). Destroying the
// server stops it. Thread-safety: port() and Stop() may be called from any thread.
class HttpServer {
 public:
  // Binds and starts accepting on `io` (the caller runs io on its own thread(s); handlers
  // run on io's threads). Returns Unavailable if the port is taken, InvalidArgument for a
  // bad address or port, or an address that is not on this machine.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HttpServer>> Create(
      boost::asio::io_context& io, HttpServerOptions options, Router router);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the one picked when options.port was 0).
  int port() const { return port_; }

  // Stops accepting (the listening socket is closed before this returns) and closes idle
  // connections; in-flight handlers may still reply, after which their connections close.
  // Idempotent; does not block on io.
  void Stop();

 private:
  struct Listener;
  HttpServer(std::shared_ptr<Listener> listener, int port);

  std::shared_ptr<Listener> listener_;
  int port_;
};

}  // namespace kiln::net
