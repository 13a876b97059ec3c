#include "kiln/serving/serve_server.h"

#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"
#include "kiln/net/http_status.h"

namespace kiln::serving {
namespace {

constexpr std::string_view kSecretHeader = "x-kiln-serve-secret";

int DialectIndex(Dialect dialect) {
  switch (dialect) {
    case Dialect::kNative:
      return 0;
    case Dialect::kWatsonMl:
      return 1;
    case Dialect::kKserveV2:
      return 2;
  }
  return 0;
}

// Watson ML error codes by HTTP status, in the shape its clients parse.
std::string_view WmlErrorCode(int status) {
  switch (status) {
    case 400:
      return "invalid_input_data";
    case 401:
      return "authentication_failed";
    case 404:
      return "not_found";
    case 503:
      return "service_unavailable";
    default:
      return "internal_error";
  }
}

// Constant-time comparison, so a wrong secret's timing says nothing about the right one.
bool SecretsEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

net::HttpResponse Json(int status, const base::Json& body) {
  return net::JsonResponse(status, body);
}

const std::vector<double> kSecondsBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10};
const std::vector<double> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

}  // namespace

ServeServer::ServeServer(Engine& engine, ServeOptions options) : options_(std::move(options)) {
  requests_ = &metrics_.AddCounterFamily("kiln_serve_requests_total",
                                         "Prediction requests by dialect and HTTP status.",
                                         {"dialect", "code"});
  for (Dialect d : {Dialect::kNative, Dialect::kWatsonMl, Dialect::kKserveV2}) {
    ok_counters_[DialectIndex(d)] = &requests_->WithLabels({std::string(DialectName(d)), "200"});
  }
  request_duration_ = &metrics_.AddHistogram(
      "kiln_serve_request_duration_seconds",
      "Time from a prediction request's arrival (body read) to its reply.", kSecondsBuckets);
  batch_size_ =
      &metrics_.AddHistogram("kiln_serve_batch_size", "Samples per forward.", kBatchBuckets);
  inference_duration_ = &metrics_.AddHistogram("kiln_serve_inference_duration_seconds",
                                               "Duration of one forward.", kSecondsBuckets);
  Histogram* batch_size = batch_size_;
  Histogram* inference_duration = inference_duration_;
  batcher_ = std::make_unique<Batcher>(engine, options_.batching,
                                       [batch_size, inference_duration](int64_t n, double s) {
                                         batch_size->Observe(static_cast<double>(n));
                                         inference_duration->Observe(s);
                                       });
  Batcher* batcher = batcher_.get();
  metrics_.AddGauge("kiln_serve_queue_depth", "Requests waiting for a batch worker.",
                    [batcher] { return static_cast<double>(batcher->queued_requests()); });
}

ServeServer::~ServeServer() = default;

void ServeServer::Drain() {
  ready_.store(false);
  draining_.store(true);
  batcher_->Drain();
}

bool ServeServer::Authorized(const net::HttpRequest& request) const {
  if (options_.secret.empty()) return true;
  for (const auto& [name, value] : request.headers) {
    if (name == kSecretHeader) return SecretsEqual(value, options_.secret);
  }
  return false;
}

absl::Status ServeServer::CheckModelPath(const net::HttpRequest& request) const {
  auto name = request.path_params.find("name");
  if (name != request.path_params.end() && name->second != options_.model_name) {
    return absl::NotFoundError(absl::StrCat("model \"", name->second,
                                            "\" is not served here; this server serves \"",
                                            options_.model_name, "\""));
  }
  auto version = request.path_params.find("version");
  if (version != request.path_params.end() && version->second != options_.version) {
    return absl::NotFoundError(absl::StrCat(
        "version \"", version->second, "\" of model \"", options_.model_name,
        "\" is not served here; this server serves version \"", options_.version, "\""));
  }
  return absl::OkStatus();
}

void ServeServer::Count(Dialect dialect, int code, std::chrono::steady_clock::time_point start) {
  if (code == 200) {
    ok_counters_[DialectIndex(dialect)]->Increment();
  } else {
    requests_->WithLabels({std::string(DialectName(dialect)), std::to_string(code)}).Increment();
  }
  request_duration_->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void ServeServer::SendError(Dialect dialect, net::Responder& responder, const absl::Status& status,
                            std::chrono::steady_clock::time_point start) {
  // ResourceExhausted (a full queue) is "try again later" here, not a quota (429).
  const int code = status.code() == absl::StatusCode::kResourceExhausted
                       ? 503
                       : net::HttpStatusFromStatus(status);
  const std::string message(status.message());
  switch (dialect) {
    case Dialect::kNative:
      responder.Send(code == 503 ? net::ErrorResponse(absl::UnavailableError(message))
                                 : net::ErrorResponse(status));
      break;
    case Dialect::kWatsonMl:
      responder.Send(Json(code, {{"trace", "kiln-serve"},
                                 {"errors", {{{"code", WmlErrorCode(code)}, {"message", message}}}},
                                 {"status_code", code}}));
      break;
    case Dialect::kKserveV2:
      responder.Send(Json(code, {{"error", message}}));
      break;
  }
  Count(dialect, code, start);
}

void ServeServer::Predict(Dialect dialect, net::HttpRequest& request, net::Responder responder) {
  const auto start = std::chrono::steady_clock::now();
  if (!Authorized(request)) {
    SendError(dialect, responder,
              absl::UnauthenticatedError("missing or wrong X-Kiln-Serve-Secret header; "
                                         "send predictions through the Kiln master"),
              start);
    return;
  }
  if (absl::Status path = CheckModelPath(request); !path.ok()) {
    SendError(dialect, responder, path, start);
    return;
  }
  if (!ready_.load()) {
    SendError(dialect, responder,
              absl::UnavailableError(draining_.load() ? "the server is shutting down"
                                                      : "the model is not ready yet (warming up)"),
              start);
    return;
  }
  absl::StatusOr<InferRequest> decoded =
      DecodeRequest(dialect, request.body, options_.signature, options_.limits);
  if (!decoded.ok()) {
    SendError(dialect, responder, decoded.status(), start);
    return;
  }
  std::vector<Tensor> inputs = std::move(decoded->inputs);
  // The request's other fields (dialect, id, fields, ...) travel with the callback; the
  // response is encoded on the batch worker, off the io thread.
  absl::Status queued = batcher_->Submit(
      std::move(inputs), [this, dialect, responder, start, infer = std::move(*decoded)](
                             absl::StatusOr<std::vector<Tensor>> outputs) mutable {
        if (!outputs.ok()) {
          SendError(dialect, responder, outputs.status(), start);
          return;
        }
        net::HttpResponse response;
        response.body = EncodeResponse(infer, *outputs, options_.signature, options_.model_name,
                                       options_.version);
        responder.Send(std::move(response));
        Count(dialect, 200, start);
      });
  if (!queued.ok()) {
    // `responder` was copied into the callback, which Submit dropped without calling.
    SendError(dialect, responder, queued, start);
  }
}

void ServeServer::ModelMetadata(net::HttpRequest& request, net::Responder responder) {
  if (!Authorized(request)) {
    responder.Send(Json(401, {{"error", "missing or wrong X-Kiln-Serve-Secret header"}}));
    return;
  }
  if (absl::Status path = CheckModelPath(request); !path.ok()) {
    responder.Send(Json(404, {{"error", std::string(path.message())}}));
    return;
  }
  responder.Send(
      Json(200, KserveModelMetadata(options_.signature, options_.model_name, options_.version)));
}

void ServeServer::ModelReady(net::HttpRequest& request, net::Responder responder) {
  if (!Authorized(request)) {
    responder.Send(Json(401, {{"error", "missing or wrong X-Kiln-Serve-Secret header"}}));
    return;
  }
  if (absl::Status path = CheckModelPath(request); !path.ok()) {
    responder.Send(Json(404, {{"error", std::string(path.message())}}));
    return;
  }
  const bool ready = ready_.load();
  responder.Send(Json(ready ? 200 : 503, {{"name", options_.model_name}, {"ready", ready}}));
}

net::Router ServeServer::BuildRouter() {
  net::Router router;
  net::RouteOptions body_options;
  body_options.max_body_bytes = options_.max_body_bytes;
  auto predict = [this](Dialect dialect) {
    return [this, dialect](net::HttpRequest& req, net::Responder res) {
      Predict(dialect, req, std::move(res));
    };
  };
  router.Add("POST", "/api/v1/predict", predict(Dialect::kNative), body_options);
  router.Add("POST", "/ml/v4/deployments/{id}/predictions", predict(Dialect::kWatsonMl),
             body_options);
  router.Add("POST", "/v2/models/{name}/infer", predict(Dialect::kKserveV2), body_options);
  router.Add("POST", "/v2/models/{name}/versions/{version}/infer", predict(Dialect::kKserveV2),
             body_options);

  auto metadata = [this](net::HttpRequest& req, net::Responder res) {
    ModelMetadata(req, std::move(res));
  };
  router.Add("GET", "/v2/models/{name}", metadata);
  router.Add("GET", "/v2/models/{name}/versions/{version}", metadata);
  auto model_ready = [this](net::HttpRequest& req, net::Responder res) {
    ModelReady(req, std::move(res));
  };
  router.Add("GET", "/v2/models/{name}/ready", model_ready);
  router.Add("GET", "/v2/models/{name}/versions/{version}/ready", model_ready);

  router.Add("GET", "/v2/health/live", [](net::HttpRequest&, net::Responder res) {
    res.Send(Json(200, {{"live", true}}));
  });
  router.Add("GET", "/v2/health/ready", [this](net::HttpRequest&, net::Responder res) {
    const bool ready = ready_.load();
    res.Send(Json(ready ? 200 : 503, {{"ready", ready}}));
  });
  router.Add("GET", "/v2", [this](net::HttpRequest& req, net::Responder res) {
    if (!Authorized(req)) {
      res.Send(Json(401, {{"error", "missing or wrong X-Kiln-Serve-Secret header"}}));
      return;
    }
    res.Send(Json(200, {{"name", "kiln-serve"},
                        {"version", "1"},
                        {"extensions", base::Json::array()},
                        {"model", options_.model_name}}));
  });
  router.Add("GET", "/metrics", [this](net::HttpRequest&, net::Responder res) {
    net::HttpResponse response;
    response.content_type = "text/plain; version=0.0.4";
    response.body = metrics_.Render();
    res.Send(std::move(response));
  });
  return router;
}

}  // namespace kiln::serving
