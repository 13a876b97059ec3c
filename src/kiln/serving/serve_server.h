// serve_server.h
//
// Defines `ServeServer`, the HTTP face of kiln-serve: the routes of the three prediction
// dialects (native `/api/v1/predict`, Watson ML `/ml/v4/deployments/{id}/predictions`,
// KServe v2 `/v2/models/{name}/infer`), KServe metadata and health, and Prometheus
// `/metrics`. Handlers decode on the io thread, queue the samples on the `Batcher`, and
// a batch worker encodes and sends each reply when its forward is done. The master may
// also send several predictions in one bundle (POST /kiln/v1/bundle, net/bundle.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/net/http_types.h"
#include "kiln/net/responder.h"
#include "kiln/net/router.h"
#include "kiln/serving/batcher.h"
#include "kiln/serving/codec.h"
#include "kiln/serving/engine.h"
#include "kiln/serving/prometheus.h"
#include "kiln/serving/signature.h"

namespace kiln::serving {

struct ServeOptions {
  std::string model_name = "model";  // the KServe model name; also echoed by every dialect
  std::string version = "1";
  Signature signature;
  BatcherOptions batching;
  // When not empty, every request except health and metrics must carry
  // `X-Kiln-Serve-Secret: <secret>` (401 otherwise).
  std::string secret;
  size_t max_body_bytes = 64 << 20;
  DecodeLimits limits;
};

// Owns the batcher (its workers start at construction) and the metrics. Not ready (503 on
// predictions and readiness) until SetReady(true). Thread-safety: handlers run on any io
// thread; SetReady and Drain may be called from any thread.
class ServeServer {
 public:
  // `engine` must outlive the server.
  ServeServer(Engine& engine, ServeOptions options);
  ~ServeServer();
  ServeServer(const ServeServer&) = delete;
  ServeServer& operator=(const ServeServer&) = delete;

  // The routes, bound to this server (which must outlive the HttpServer serving them).
  net::Router BuildRouter();

  // Readiness: predictions and `/v2/health/ready` answer 503 while false.
  void SetReady(bool ready) { ready_.store(ready); }
  bool ready() const { return ready_.load(); }

  // Graceful drain: not ready, new predictions get 503, everything queued is run and
  // answered. Blocks until the batch workers are done; call it off the io threads.
  void Drain();

  MetricsRegistry& metrics() { return metrics_; }
  const Histogram& batch_size_histogram() const { return *batch_size_; }

 private:
  // A prediction checked and decoded, ready for the batcher.
  struct Prepared {
    Dialect dialect;
    InferRequest infer;
    net::Responder responder;
    std::chrono::steady_clock::time_point start;
  };
  void Predict(Dialect dialect, net::HttpRequest& request, net::Responder responder);
  // Checks (secret, model path, readiness) and decodes; on failure replies and returns
  // nullopt.
  std::optional<Prepared> Prepare(Dialect dialect, net::HttpRequest& request,
                                  net::Responder responder,
                                  std::chrono::steady_clock::time_point start);
  // The request's body in `dialect`: JSON, or for KServe with an
  // Inference-Header-Content-Length header, JSON followed by binary tensor data.
  absl::StatusOr<InferRequest> Decode(Dialect dialect, const net::HttpRequest& request) const;
  // Queues them all at once; the batch workers encode and send each reply.
  void Enqueue(std::vector<Prepared>& prepared);
  // POST /kiln/v1/bundle (net/bundle.h): the master's bundle of predictions, each routed
  // as if sent alone, queued together, answered in one bundle.
  void PredictBundle(net::HttpRequest& request, net::Responder responder);
  void ModelMetadata(net::HttpRequest& request, net::Responder responder);
  void ModelReady(net::HttpRequest& request, net::Responder responder);
  // True when the request carries the secret (or none is configured).
  bool Authorized(const net::HttpRequest& request) const;
  // NotFound unless the path's {name} (and {version}, if present) are this model's.
  absl::Status CheckModelPath(const net::HttpRequest& request) const;
  // Sends `status` as an error in `dialect`'s shape and counts it.
  void SendError(Dialect dialect, net::Responder& responder, const absl::Status& status,
                 std::chrono::steady_clock::time_point start);
  void Count(Dialect dialect, int code, std::chrono::steady_clock::time_point start);

  const ServeOptions options_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};

  MetricsRegistry metrics_;
  CounterFamily* requests_ = nullptr;
  Counter* ok_counters_[3] = {};  // requests_{dialect, "200"}, looked up once
  Histogram* request_duration_ = nullptr;
  Histogram* batch_size_ = nullptr;
  Histogram* inference_duration_ = nullptr;
  Histogram* bundle_size_ = nullptr;

  // The prediction routes alone (their handlers unused): a bundle item's target is
  // matched against them to learn its dialect and path parameters.
  net::Router predict_routes_;
  std::map<std::string, Dialect> dialect_of_pattern_;

  std::unique_ptr<Batcher> batcher_;  // last: its workers use the metrics above
};

}  // namespace kiln::serving
