// http_forwarder.h
//
// Defines `HttpForwarder`, the master's asynchronous HTTP/1.1 client for passing requests
// on to scoring replicas (kiln-serve). It runs on io threads of its own, so the master's
// loop only hands a request over and the outgoing exchange, connection pooling and
// timeouts cost that loop nothing. Connections are kept alive and pooled per host:port
// (TCP_NODELAY, reused when idle, more opened under load up to a cap). Requests that
// allow it are bundled per host:port under load (ForwardRequest::bundle_target). Beast
// stays in http_forwarder.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

// One request to forward. Shared (not copied) between the tries of a retried request.
struct ForwardRequest {
  std::string method = "POST";
  std::string target;  // "/api/v1/predict"
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields
  // Extra fields of this request alone. Sent like `headers` when it goes on its own; in a
  // bundle they travel inside its item, where `headers` go once on the bundle for all.
  std::vector<std::pair<std::string, std::string>> own_headers;
  // When not empty, the request may travel in a bundle (bundle.h) POSTed to this target
  // on the same host:port, together with the other requests queued there that have the
  // same bundle_target and headers: while max_bundles_in_flight bundles to an endpoint
  // are out, its requests queue, and the next bundle takes them all (up to the caps). An
  // idle endpoint gets a bundle of one at once, so bundling adds no wait. The callback
  // still gets this request's own response; a bundle the server answers with a status
  // other than 200 gives every request in it that answer.
  std::string bundle_target;
  // Bundles to this host:port in flight at once; 0 = the forwarder's
  // max_bundles_in_flight. A server with N workers wants at least N, so all work at once.
  size_t bundles_in_flight = 0;
};

struct HttpForwarderOptions {
  // Io threads; each owns its own connection pools (requests are spread round robin).
  int threads = 1;
  // Connections per host:port per thread, busy and idle together. Requests beyond the cap
  // wait for a connection to come free (FIFO); their timeout runs while they wait.
  size_t max_connections_per_endpoint = 128;
  std::chrono::milliseconds connect_timeout{2000};
  // An idle pooled connection unused this long is closed (replicas close theirs at 75 s).
  std::chrono::milliseconds idle_timeout{30000};
  size_t max_response_bytes = 256 << 20;
  // Bundled requests (ForwardRequest::bundle_target), per host:port per thread: bundles
  // in flight before requests queue for the next, requests and body bytes per bundle. A
  // request whose body alone is over max_bundle_bytes goes on its own, unbundled.
  size_t max_bundles_in_flight = 2;
  size_t max_requests_per_bundle = 64;
  size_t max_bundle_bytes = 8 << 20;
};

// Called exactly once per Forward, on one of the forwarder's io threads (never inline in
// Forward), so it must not block. `retryable` is true when the request certainly did not
// get an answer and may be sent again elsewhere: the connection could not be made, or
// it broke before any response byte arrived (a fresh connection is tried once first when
// a pooled one turns out stale). Errors: Unavailable (connect failure, reset, closed),
// DeadlineExceeded (no full answer within the timeout; not retryable: the replica may
// still be working on it), ResourceExhausted (response over max_response_bytes),
// Cancelled (the forwarder stopped), InvalidArgument (a method, target or header with a
// space, CR, LF or NUL where none may be). Any HTTP status is an OK result.
using ForwardCallback = std::function<void(absl::StatusOr<HttpResponse> response, bool retryable)>;

// Thread-safe: Forward may be called from any thread.
class HttpForwarder {
 public:
  // Starts the io threads.
  explicit HttpForwarder(HttpForwarderOptions options = {});
  // Stops (see Stop) and joins the threads.
  ~HttpForwarder();
  HttpForwarder(const HttpForwarder&) = delete;
  HttpForwarder& operator=(const HttpForwarder&) = delete;

  // Sends `request` to http://host:port and calls `done` with the response. `host` is an
  // IP address or a name (resolved once per pool, not per request). `timeout` bounds the
  // whole exchange, waiting for a free connection included.
  void Forward(std::string host, int port, std::shared_ptr<const ForwardRequest> request,
               std::chrono::milliseconds timeout, ForwardCallback done);

  // Fails everything pending with Cancelled, closes every connection and stops the
  // threads. Idempotent; blocks until the threads have ended. Forward after Stop calls
  // `done` with Cancelled (on the calling thread, the only exception to the rule above).
  void Stop();

  // Open connections (busy and idle) to host:port over all threads. For tests.
  size_t OpenConnections(const std::string& host, int port) const;

 private:
  struct Shard;
  HttpForwarderOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> next_shard_{0};
  std::atomic<bool> stopped_{false};
};

}  // namespace kiln::net
