// inference_api.cc
//
// Per prediction, the master's loop does three cheap things (authenticate with the
// Authenticator's cached check, find the route, hand the body over) and returns; the
// forwarder's thread does the HTTP exchange and the retries, and replies through the
// thread-safe Responder. Nothing here reads the store.

#include "kiln/api/inference_api.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/api/handler_util.h"
#include "kiln/api/wml_v4.h"
#include "kiln/base/json.h"
#include "kiln/net/http_status.h"
#include "kiln/serving/codec.h"
#include "kiln/serving/signature.h"

namespace kiln::api {

namespace {

constexpr char kSecretHeader[] = "X-Kiln-Serve-Secret";
constexpr char kBundleTarget[] = "/kiln/v1/bundle";  // kiln-serve's bundle route

bool AllDigits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
}

// Why a deployment with no ready replica cannot answer, from its state.
absl::Status NoReadyReplica(const serving::DeploymentRoute& route) {
  std::string name = absl::StrCat("deployment \"", route.name, "\"");
  if (route.state == "PENDING") {
    return absl::UnavailableError(absl::StrCat(
        name,
        " has no ready replica yet: it is still starting (state PENDING); retry once it "
        "is READY"));
  }
  if (route.state == "FAILED") {
    return absl::UnavailableError(
        absl::StrCat(name, " has no ready replica: it FAILED: ",
                     route.reason.empty() ? "see its replicas' logs" : route.reason));
  }
  if (route.state == "STOPPED") {
    return absl::UnavailableError(absl::StrCat(name, " is being deleted"));
  }
  return absl::UnavailableError(absl::StrCat(name, " has no ready replica right now (state ",
                                             route.state,
                                             "): its replicas are being replaced; retry shortly"));
}

// The route restricted to replicas serving `version` (KServe's /versions/{v} paths).
serving::DeploymentRoute OnlyVersion(const serving::DeploymentRoute& route, int64_t version) {
  serving::DeploymentRoute filtered = route;
  filtered.replicas.erase(
      std::remove_if(filtered.replicas.begin(), filtered.replicas.end(),
                     [&](const serving::ReplicaEndpoint& r) { return r.version != version; }),
      filtered.replicas.end());
  return filtered;
}

// KServe v2's error body: {"error": "<message>"}.
net::HttpResponse KserveError(const absl::Status& status) {
  net::HttpResponse response = net::JsonResponse(net::HttpStatusFromStatus(status),
                                                 {{"error", std::string(status.message())}});
  return response;
}

}  // namespace

struct InferenceApi::Call {
  Dialect dialect = Dialect::kNative;
  net::Responder res;
  int64_t deployment_id = 0;
  std::string deployment_name;
  std::optional<int64_t> version;  // KServe /versions/{v}: only replicas of it
  std::shared_ptr<const net::ForwardRequest> request;
  std::vector<int64_t> tried;  // replica job ids that could not be reached
  int tries = 0;
  std::string last_error;

  explicit Call(net::Responder r) : res(std::move(r)) {}
};

InferenceApi::InferenceApi(boost::asio::io_context& master_io, auth::Authenticator& auth,
                           serving::RoutingTable& routes, net::HttpForwarder& forwarder,
                           InferenceApiOptions options)
    : master_io_(master_io),
      auth_(auth),
      routes_(routes),
      forwarder_(forwarder),
      options_(options) {}

void InferenceApi::SetReplicaUnreachableObserver(std::function<void(int64_t, int64_t)> observer) {
  unreachable_observer_ = std::move(observer);
}

void InferenceApi::Register(net::Router& router) {
  net::RouteOptions big;
  big.max_body_bytes = options_.max_body_bytes;
  auto predict = [this](Dialect dialect) {
    return [this, dialect](net::HttpRequest& req, net::Responder res) {
      Predict(req, std::move(res), dialect);
    };
  };
  auto kserve_model = [this](bool ready_only) {
    return [this, ready_only](net::HttpRequest& req, net::Responder res) {
      KserveModel(req, std::move(res), ready_only);
    };
  };
  router.Add("POST", "/api/v1/deployments/{id}/predict", predict(Dialect::kNative), big);
  router.Add("POST", "/ml/v4/deployments/{id}/predictions", predict(Dialect::kWatsonMl), big);
  router.Add("POST", "/v2/models/{name}/infer", predict(Dialect::kKserve), big);
  router.Add("POST", "/v2/models/{name}/versions/{version}/infer", predict(Dialect::kKserve), big);
  router.Add("GET", "/v2/models/{name}", kserve_model(/*ready_only=*/false));
  router.Add("GET", "/v2/models/{name}/versions/{version}", kserve_model(/*ready_only=*/false));
  router.Add("GET", "/v2/models/{name}/ready", kserve_model(/*ready_only=*/true));
  router.Add("GET", "/v2/models/{name}/versions/{version}/ready",
             kserve_model(/*ready_only=*/true));
  // Health and server metadata need no credentials, as KServe probes send none: they say
  // only that the master itself is up.
  router.Add("GET", "/v2/health/live", [](net::HttpRequest&, net::Responder res) {
    api::SendJson(res, 200, {{"live", true}});
  });
  router.Add("GET", "/v2/health/ready", [](net::HttpRequest&, net::Responder res) {
    api::SendJson(res, 200, {{"ready", true}});
  });
  router.Add("GET", "/v2", [](net::HttpRequest&, net::Responder res) {
    api::SendJson(res, 200,
                  {{"name", "kiln"},
                   {"version", "1"},
                   {"extensions", base::Json::array({"binary_tensor_data"})}});
  });
}

absl::StatusOr<std::shared_ptr<const serving::DeploymentRoute>> InferenceApi::Resolve(
    const net::HttpRequest& req, const std::string& key, bool by_name_only) {
  KILN_ASSIGN_OR_RETURN(auth::Principal who, AuthenticateRequest(auth_, req));
  std::shared_ptr<const serving::DeploymentRoute> route;
  if (!by_name_only && AllDigits(key)) {
    int64_t id = 0;
    if (absl::SimpleAtoi(key, &id)) route = routes_.Find(id);
  }
  if (!route) route = routes_.FindByName(key);
  // A task may predict on its owner's deployments (a job scoring through a deployment);
  // agents never. Someone else's deployment is reported as unknown.
  bool allowed = route && who.kind != auth::Principal::Kind::kAgent &&
                 (who.admin || who.user_id == route->user_id);
  if (!allowed) {
    return absl::NotFoundError(
        by_name_only ? absl::StrCat("unknown model \"", key,
                                    "\": no deployment of that name (see GET /api/v1/deployments)")
                     : absl::StrCat("no deployment \"", key, "\" (see GET /api/v1/deployments)"));
  }
  return route;
}

absl::StatusOr<std::optional<int64_t>> InferenceApi::KserveVersion(
    const net::HttpRequest& req, const serving::DeploymentRoute& route) {
  auto it = req.path_params.find("version");
  if (it == req.path_params.end()) return std::optional<int64_t>();
  int64_t version = 0;
  bool served =
      absl::SimpleAtoi(it->second, &version) &&
      (version == route.version ||
       std::any_of(route.replicas.begin(), route.replicas.end(),
                   [&](const serving::ReplicaEndpoint& r) { return r.version == version; }));
  if (!served) {
    return absl::NotFoundError(absl::StrCat("model \"", route.name, "\" has no version \"",
                                            it->second, "\" deployed (deployed: ", route.version,
                                            ")"));
  }
  return std::optional<int64_t>(version);
}

void InferenceApi::Predict(net::HttpRequest& req, net::Responder res, Dialect dialect) {
  auto call = std::make_shared<Call>(std::move(res));
  call->dialect = dialect;
  bool kserve = dialect == Dialect::kKserve;
  const std::string& key = req.path_params[kserve ? "name" : "id"];
  auto route = Resolve(req, key, kserve);
  if (!route.ok()) {
    SendError(*call, route.status());
    return;
  }
  if (kserve) {
    auto version = KserveVersion(req, **route);
    if (!version.ok()) {
      SendError(*call, version.status());
      return;
    }
    call->version = *version;
  }
  call->deployment_id = (*route)->id;
  call->deployment_name = (*route)->name;
  auto request = std::make_shared<net::ForwardRequest>();
  request->method = "POST";
  // The replica serves the same Watson ML and KServe paths (its name is the deployment's),
  // so those targets pass through as they came; the native route maps onto its own.
  request->target = dialect == Dialect::kNative ? "/api/v1/predict" : req.target;
  std::string content_type = req.Header("content-type");
  request->content_type = content_type.empty() ? "application/json" : std::move(content_type);
  request->body = std::move(req.body);
  request->headers.emplace_back(kSecretHeader, (*route)->secret);
  // KServe's binary tensor data: the JSON's length travels with this request alone.
  if (std::string json_length = req.Header(serving::kInferenceHeaderContentLength);
      kserve && !json_length.empty()) {
    request->own_headers.emplace_back(std::string(serving::kInferenceHeaderContentLength),
                                      std::move(json_length));
  }
  // Under load, predictions queued for one replica travel together in one bundle, which
  // the replica batches as one (HttpForwarder; contract in ARCHITECTURE.md §6.1).
  request->bundle_target = kBundleTarget;
  // One bundle per batch worker keeps every worker busy; at least two, so that one is on
  // the wire while the other is computed. (slots + 1 made smaller bundles and cost more
  // per request on a 2-core machine: 9 vs 13.5 requests per bundle, 124 vs 98-119 us.)
  request->bundles_in_flight = static_cast<size_t>(std::max(2, (*route)->slots));
  call->request = std::move(request);
  Attempt(call);
}

void InferenceApi::Attempt(const std::shared_ptr<Call>& call) {
  std::shared_ptr<const serving::DeploymentRoute> route = routes_.Find(call->deployment_id);
  if (!route) {
    SendError(*call, absl::UnavailableError(
                         absl::StrCat("deployment \"", call->deployment_name, "\" was deleted")));
    return;
  }
  // A KServe /versions/{v} call goes only to replicas of v (during a rollout the old and
  // the new version's replicas are both routable).
  std::optional<serving::ReplicaLease> lease =
      call->version ? routes_.Acquire(OnlyVersion(*route, *call->version), call->tried)
                    : routes_.Acquire(*route, call->tried);
  if (!lease) {
    if (call->tries == 0) {
      SendError(*call, NoReadyReplica(*route));
    } else {
      SendError(*call, absl::UnavailableError(absl::StrCat("no ready replica of deployment \"",
                                                           route->name,
                                                           "\" could answer: ", call->last_error)));
    }
    return;
  }
  ++call->tries;
  serving::ReplicaLease held = *lease;
  forwarder_.Forward(
      held.replica.host, held.replica.port, call->request, options_.replica_timeout,
      [this, call, held](absl::StatusOr<net::HttpResponse> response, bool retryable) {
        routes_.Release(held);
        if (response.ok()) {
          net::HttpResponse out;
          out.status = response->status;
          if (!response->content_type.empty()) out.content_type = response->content_type;
          if (std::string json_length = response->Header(serving::kInferenceHeaderContentLength);
              !json_length.empty()) {
            out.headers.emplace_back(std::string(serving::kInferenceHeaderContentLength),
                                     std::move(json_length));
          }
          out.body = std::move(response->body);
          call->res.Send(std::move(out));
          return;
        }
        if (retryable) {
          if (unreachable_observer_) {
            boost::asio::post(master_io_,
                              [observer = unreachable_observer_, deployment = held.deployment_id,
                               job = held.replica.job_id]() { observer(deployment, job); });
          }
          call->tried.push_back(held.replica.job_id);
          call->last_error = std::string(response.status().message());
          if (call->tries < options_.max_tries) {
            Attempt(call);
            return;
          }
          SendError(*call, absl::UnavailableError(absl::StrCat(
                               "no ready replica of deployment \"", call->deployment_name,
                               "\" could answer: ", call->last_error)));
          return;
        }
        std::string replica = absl::StrCat("replica (job ", held.replica.job_id,
                                           ") of deployment \"", call->deployment_name, "\"");
        if (absl::IsDeadlineExceeded(response.status())) {
          SendError(*call, absl::DeadlineExceededError(
                               absl::StrCat(replica, " did not answer within ",
                                            options_.replica_timeout.count(), " ms")));
        } else {
          // Broke mid-answer or answered too much: a bad gateway, not "unavailable", and
          // not retried (the replica may have acted on it).
          SendError(*call,
                    net::WithHttpStatus(absl::UnavailableError(absl::StrCat(
                                            replica, " failed: ", response.status().message())),
                                        502));
        }
      });
}

void InferenceApi::SendError(Call& call, const absl::Status& status) {
  switch (call.dialect) {
    case Dialect::kNative:
      call.res.Send(net::ErrorResponse(status));
      return;
    case Dialect::kWatsonMl:
      call.res.Send(wml::ErrorResponse(status));
      return;
    case Dialect::kKserve:
      call.res.Send(KserveError(status));
      return;
  }
}

void InferenceApi::KserveModel(net::HttpRequest& req, net::Responder res, bool ready_only) {
  const std::string& name = req.path_params["name"];
  auto route = Resolve(req, name, /*by_name_only=*/true);
  if (!route.ok()) {
    res.Send(KserveError(route.status()));
    return;
  }
  auto version = KserveVersion(req, **route);
  if (!version.ok()) {
    res.Send(KserveError(version.status()));
    return;
  }
  int64_t shown = version->value_or((*route)->version);
  if (ready_only) {
    bool ready = std::any_of(
        (*route)->replicas.begin(), (*route)->replicas.end(),
        [&](const serving::ReplicaEndpoint& r) { return !*version || r.version == **version; });
    api::SendJson(res, ready ? 200 : 503, {{"name", name}, {"ready", ready}});
    return;
  }
  auto json = base::ParseJson((*route)->signature_json);
  absl::StatusOr<serving::Signature> signature =
      json.ok() ? serving::ParseSignature(*json)
                : absl::StatusOr<serving::Signature>(json.status());
  if (!signature.ok()) {
    res.Send(KserveError(
        absl::InternalError(absl::StrCat("the stored signature of model \"", name,
                                         "\" is unreadable: ", signature.status().message()))));
    return;
  }
  api::SendJson(res, 200, serving::KserveModelMetadata(*signature, name, std::to_string(shown)));
}

}  // namespace kiln::api
