#include "kiln/serving/serve_server.h"

#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"
#include "kiln/net/bundle.h"
#include "kiln/net/http_parsing.h"
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
  bundle_size_ = &metrics_.AddHistogram(
      "kiln_serve_bundle_requests",
      "Predictions per bundle the master sent (POST /kiln/v1/bundle).", kBatchBuckets);
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
  // Counted before the reply leaves: a client that reads /metrics after its answer must
  // find its request there.
  Count(dialect, code, start);
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
}

void ServeServer::Predict(Dialect dialect, net::HttpRequest& request, net::Responder responder) {
  std::vector<Prepared> one;
  std::optional<Prepared> prepared =
      Prepare(dialect, request, std::move(responder), std::chrono::steady_clock::now());
  if (!prepared) return;
  one.push_back(std::move(*prepared));
  Enqueue(one);
}

std::optional<ServeServer::Prepared> ServeServer::Prepare(
    Dialect dialect, net::HttpRequest& request, net::Responder responder,
    std::chrono::steady_clock::time_point start) {
  if (!Authorized(request)) {
    SendError(dialect, responder,
              absl::UnauthenticatedError("missing or wrong X-Kiln-Serve-Secret header; "
                                         "send predictions through the Kiln master"),
              start);
    return std::nullopt;
  }
  if (absl::Status path = CheckModelPath(request); !path.ok()) {
    SendError(dialect, responder, path, start);
    return std::nullopt;
  }
  if (!ready_.load()) {
    SendError(dialect, responder,
              absl::UnavailableError(draining_.load() ? "the server is shutting down"
                                                      : "the model is not ready yet (warming up)"),
              start);
    return std::nullopt;
  }
  absl::StatusOr<InferRequest> decoded = Decode(dialect, request);
  if (!decoded.ok()) {
    SendError(dialect, responder, decoded.status(), start);
    return std::nullopt;
  }
  return Prepared{dialect, *std::move(decoded), std::move(responder), start};
}

absl::StatusOr<InferRequest> ServeServer::Decode(Dialect dialect,
                                                 const net::HttpRequest& request) const {
  const std::string json_length = request.Header(kInferenceHeaderContentLength);
  if (json_length.empty()) {
    return DecodeRequest(dialect, request.body, options_.signature, options_.limits);
  }
  if (dialect != Dialect::kKserveV2) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(kInferenceHeaderContentLength),
                     " (KServe's binary tensor data) is for /v2/models/{name}/infer only; "
                     "send this request as JSON without it"));
  }
  size_t length = 0;
  if (!absl::SimpleAtoi(json_length, &length)) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(kInferenceHeaderContentLength),
                     " must be the length in bytes of the JSON at the "
                     "start of the body, not \"",
                     json_length.substr(0, 40), "\""));
  }
  return DecodeKserveBinaryRequest(request.body, length, options_.signature, options_.limits);
}

void ServeServer::Enqueue(std::vector<Prepared>& prepared) {
  std::vector<Batcher::Item> items(prepared.size());
  for (size_t i = 0; i < prepared.size(); ++i) {
    Prepared& p = prepared[i];
    items[i].inputs = std::move(p.infer.inputs);
    // The request's other fields (dialect, id, fields, ...) travel with the callback; the
    // response is encoded on the batch worker, off the io thread.
    items[i].done = [this, dialect = p.dialect, responder = p.responder, start = p.start,
                     infer =
                         std::move(p.infer)](absl::StatusOr<std::vector<Tensor>> outputs) mutable {
      if (!outputs.ok()) {
        SendError(dialect, responder, outputs.status(), start);
        return;
      }
      net::HttpResponse response;
      size_t json_length = 0;
      response.body = EncodeResponse(infer, *outputs, options_.signature, options_.model_name,
                                     options_.version, &json_length);
      if (json_length != response.body.size()) {  // binary tensor data follows the JSON
        response.content_type = "application/octet-stream";
        response.headers.emplace_back(std::string(kInferenceHeaderContentLength),
                                      std::to_string(json_length));
      }
      Count(dialect, 200, start);  // before the reply leaves (see SendError)
      responder.Send(std::move(response));
    };
  }
  std::vector<absl::Status> queued = batcher_->SubmitAll(items);
  for (size_t i = 0; i < queued.size(); ++i) {
    // A refused item's callback was not called: answer through the kept Responder.
    if (!queued[i].ok()) {
      SendError(prepared[i].dialect, prepared[i].responder, queued[i], prepared[i].start);
    }
  }
}

namespace {

// Collects a bundle's answers, one slot per request, and sends the bundle once all are in.
class BundleReply {
 public:
  BundleReply(size_t size, net::Responder outer) : answers_(size), left_(size), outer_(outer) {}

  void Set(size_t slot, net::HttpResponse response) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      answers_[slot] = std::move(response);
      if (--left_ > 0) return;
    }
    net::HttpResponse bundle;
    bundle.content_type = std::string(net::kBundleContentType);
    bundle.body = net::EncodeBundleResponse(answers_);
    outer_.Send(std::move(bundle));
  }
  bool ClientGone() const { return outer_.ClientGone(); }

 private:
  std::mutex mu_;
  std::vector<net::HttpResponse> answers_;
  size_t left_;
  net::Responder outer_;
};

// The Responder seam of one request in a bundle.
class BundleSlot : public net::ReplySink {
 public:
  BundleSlot(std::shared_ptr<BundleReply> reply, size_t slot)
      : reply_(std::move(reply)), slot_(slot) {}
  void Send(net::HttpResponse response) override { reply_->Set(slot_, std::move(response)); }
  std::shared_ptr<net::ResponseStream> StartStream(int, std::string) override {
    // Predictions never stream; a closed stream keeps the contract if one ever did.
    reply_->Set(slot_, net::ErrorResponse(absl::InternalError("a bundled reply cannot stream")));
    return std::make_shared<ClosedStream>();
  }
  bool ClientGone() const override { return reply_->ClientGone(); }

 private:
  struct ClosedStream : net::ResponseStream {
    bool Write(std::string) override { return false; }
    void Finish() override {}
    bool closed() const override { return true; }
  };
  std::shared_ptr<BundleReply> reply_;
  size_t slot_;
};

}  // namespace

void ServeServer::PredictBundle(net::HttpRequest& request, net::Responder responder) {
  if (!Authorized(request)) {
    responder.Send(Json(401, {{"error", "missing or wrong X-Kiln-Serve-Secret header"}}));
    return;
  }
  absl::StatusOr<std::vector<net::BundledRequest>> items = net::DecodeBundleRequest(request.body);
  if (!items.ok()) {
    responder.Send(net::ErrorResponse(items.status()));
    return;
  }
  bundle_size_->Observe(static_cast<double>(items->size()));
  const auto start = std::chrono::steady_clock::now();
  const std::string secret = request.Header(kSecretHeader);
  auto reply = std::make_shared<BundleReply>(items->size(), responder);
  std::vector<Prepared> prepared;
  prepared.reserve(items->size());
  for (size_t i = 0; i < items->size(); ++i) {
    net::BundledRequest& item = (*items)[i];
    net::Responder slot(std::make_shared<BundleSlot>(reply, i));
    net::HttpRequest sub;
    sub.method = "POST";
    sub.target = std::move(item.target);
    absl::StatusOr<std::string> path =
        net::PercentDecode(std::string_view(sub.target).substr(0, sub.target.find('?')));
    const net::Route* route = nullptr;
    if (path.ok()) {
      sub.path = *std::move(path);
      route = predict_routes_.Match(sub);
    }
    if (route == nullptr) {
      slot.Send(net::ErrorResponse(absl::NotFoundError(
          absl::StrCat("no prediction route for \"", sub.target, "\" in the bundle"))));
      continue;
    }
    if (!secret.empty()) sub.headers.emplace_back(std::string(kSecretHeader), secret);
    sub.headers.emplace_back("content-type", std::move(item.content_type));
    for (auto& header : item.headers) sub.headers.push_back(std::move(header));
    sub.body = std::move(item.body);
    std::optional<Prepared> p =
        Prepare(dialect_of_pattern_.at(route->pattern), sub, std::move(slot), start);
    if (p) prepared.push_back(std::move(*p));
  }
  Enqueue(prepared);
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
  const std::pair<const char*, Dialect> predict_routes[] = {
      {"/api/v1/predict", Dialect::kNative},
      {"/ml/v4/deployments/{id}/predictions", Dialect::kWatsonMl},
      {"/v2/models/{name}/infer", Dialect::kKserveV2},
      {"/v2/models/{name}/versions/{version}/infer", Dialect::kKserveV2}};
  predict_routes_ = net::Router();
  dialect_of_pattern_.clear();
  for (const auto& [pattern, dialect] : predict_routes) {
    router.Add("POST", pattern, predict(dialect), body_options);
    predict_routes_.Add("POST", pattern, [](net::HttpRequest&, net::Responder) {});
    dialect_of_pattern_[pattern] = dialect;
  }
  net::RouteOptions bundle_options;
  bundle_options.max_body_bytes = options_.max_body_bytes + (1 << 20);  // room for framing
  router.Add(
      "POST", "/kiln/v1/bundle",
      [this](net::HttpRequest& req, net::Responder res) { PredictBundle(req, std::move(res)); },
      bundle_options);

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
                        {"extensions", base::Json::array({"binary_tensor_data"})},
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
