// inference_api.h
//
// `InferenceApi` serves the master's prediction routes in all three dialects (ARCHITECTURE.md
// §6) and passes each prediction on to a ready kiln-serve replica of the deployment:
//   native     POST /api/v1/deployments/{id_or_name}/predict  -> replica /api/v1/predict
//   Watson ML  POST /ml/v4/deployments/{id}/predictions       -> the same path on the replica
//   KServe v2  POST /v2/models/{name}[/versions/{v}]/infer     -> the same path on the replica
//              GET  /v2/models/{name}[/versions/{v}][/ready], /v2/health/{live,ready}, /v2
// The master's loop only authenticates, looks the route up in the `RoutingTable` and hands
// the body to the `HttpForwarder`; the exchange, the retries and the reply happen on the
// forwarder's threads. The replica's answer (any status) is passed through unchanged.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kiln/auth/authenticator.h"
#include "kiln/net/http_forwarder.h"
#include "kiln/net/router.h"
#include "kiln/serving/routing_table.h"

namespace kiln::api {

struct InferenceApiOptions {
  // One prediction's exchange with one replica, connection included.
  std::chrono::milliseconds replica_timeout{60000};
  // Replicas tried per prediction when connecting fails or a connection breaks before any
  // answer (the request then certainly was not answered, so it is safe to send again).
  int max_tries = 3;
  // Largest prediction body accepted at the master (payloads are JSON number arrays).
  size_t max_body_bytes = 64 << 20;
};

// Lifetime: `routes` and `forwarder` must outlive this object, and the forwarder must be
// stopped before this object and `master_io` are destroyed (its callbacks use both).
// Thread-safety: handlers run on the master's loop (as the HTTP server does); forwarder
// callbacks run on the forwarder's threads and touch only thread-safe parts (the routing
// table, the forwarder, Responders).
class InferenceApi {
 public:
  InferenceApi(boost::asio::io_context& master_io, auth::Authenticator& auth,
               serving::RoutingTable& routes, net::HttpForwarder& forwarder,
               InferenceApiOptions options = {});

  // `observer(deployment_id, job_id)` is posted to `master_io` whenever a replica could not
  // be reached (connect failure, or its connection broke before any answer), so the
  // deployment controller can take it out of routing. Set before Register.
  void SetReplicaUnreachableObserver(std::function<void(int64_t, int64_t)> observer);

  void Register(net::Router& router);

 private:
  enum class Dialect { kNative, kWatsonMl, kKserve };
  struct Call;

  void Predict(net::HttpRequest& req, net::Responder res, Dialect dialect);
  void KserveModel(net::HttpRequest& req, net::Responder res, bool ready_only);

  // The route named by `key` (digits: an id, anything else a name; KServe: always a name)
  // if `req`'s caller may use it. NotFound for unknown deployments and for other users'.
  absl::StatusOr<std::shared_ptr<const serving::DeploymentRoute>> Resolve(
      const net::HttpRequest& req, const std::string& key, bool by_name_only);
  // The version in a KServe path ("/versions/{v}"), checked against the deployment: the
  // deployed version or the version of a ready replica (during a rollout). NotFound else.
  absl::StatusOr<std::optional<int64_t>> KserveVersion(const net::HttpRequest& req,
                                                       const serving::DeploymentRoute& route);

  // Sends the call to the least loaded replica not tried yet; on a retryable failure tries
  // again (up to max_tries). Runs on the master's loop first, then on forwarder threads.
  void Attempt(const std::shared_ptr<Call>& call);
  void SendError(Call& call, const absl::Status& status);

  boost::asio::io_context& master_io_;
  auth::Authenticator& auth_;
  serving::RoutingTable& routes_;
  net::HttpForwarder& forwarder_;
  InferenceApiOptions options_;
  std::function<void(int64_t, int64_t)> unreachable_observer_;
};

}  // namespace kiln::api
