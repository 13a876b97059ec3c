#include "kiln/api/deployments_api.h"

#include <set>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/api/handler_util.h"
#include "kiln/base/status.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr size_t kMaxCallbackBody = 64 << 10;

absl::Status CheckFields(const Json& body, const std::set<std::string>& allowed, const char* what) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, " must be a JSON object"));
  }
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (!allowed.count(it.key())) {
      return absl::InvalidArgumentError(absl::StrCat("unknown field \"", it.key(), "\" in the ",
                                                     what,
                                                     "; allowed: ", absl::StrJoin(allowed, ", ")));
    }
  }
  return absl::OkStatus();
}

// An optional integer field that must fit an int.
absl::StatusOr<std::optional<int64_t>> OptionalInt(const Json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) return std::optional<int64_t>();
  if (!body[field].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" must be an integer"));
  }
  int64_t v = body[field].get<int64_t>();
  if (v < INT32_MIN || v > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" is out of range"));
  }
  return std::optional<int64_t>(v);
}

// "version" may be given as 3 or "3" (KServe and the CLI spell versions as strings).
absl::StatusOr<std::optional<int64_t>> OptionalVersion(const Json& body) {
  if (body.contains("version") && body["version"].is_string()) {
    int64_t v = 0;
    const std::string s = body["version"].get<std::string>();
    if (!absl::SimpleAtoi(s, &v) || v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"version\" must be a version number (1, 2, ...), got \"", s, "\""));
    }
    return std::optional<int64_t>(v);
  }
  return OptionalInt(body, "version");
}

}  // namespace

absl::StatusOr<master::DeploymentSpec> DeploymentSpecFromJson(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckFields(
      body,
      {"name", "model", "version", "replicas", "slots", "max_batch_size", "max_queue_delay_us"},
      "deployment request"));
  master::DeploymentSpec spec;
  KILN_ASSIGN_OR_RETURN(spec.name, base::GetString(body, "name"));
  if (body.contains("model") && body["model"].is_number_integer()) {
    spec.model = std::to_string(body["model"].get<int64_t>());
  } else {
    KILN_ASSIGN_OR_RETURN(spec.model, base::GetString(body, "model"));
  }
  KILN_ASSIGN_OR_RETURN(spec.version, OptionalVersion(body));
  KILN_ASSIGN_OR_RETURN(auto replicas, OptionalInt(body, "replicas"));
  KILN_ASSIGN_OR_RETURN(auto slots, OptionalInt(body, "slots"));
  KILN_ASSIGN_OR_RETURN(auto batch, OptionalInt(body, "max_batch_size"));
  KILN_ASSIGN_OR_RETURN(auto delay, OptionalInt(body, "max_queue_delay_us"));
  if (replicas) spec.replicas = static_cast<int>(*replicas);
  if (slots) spec.slots = static_cast<int>(*slots);
  if (batch) spec.max_batch_size = static_cast<int>(*batch);
  if (delay) spec.max_queue_delay_us = *delay;
  return spec;
}

absl::StatusOr<master::DeploymentUpdate> DeploymentUpdateFromJson(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckFields(
      body, {"version", "replicas", "max_batch_size", "max_queue_delay_us"}, "update request"));
  master::DeploymentUpdate u;
  KILN_ASSIGN_OR_RETURN(u.version, OptionalVersion(body));
  KILN_ASSIGN_OR_RETURN(auto replicas, OptionalInt(body, "replicas"));
  KILN_ASSIGN_OR_RETURN(auto batch, OptionalInt(body, "max_batch_size"));
  KILN_ASSIGN_OR_RETURN(u.max_queue_delay_us, OptionalInt(body, "max_queue_delay_us"));
  if (replicas) u.replicas = static_cast<int>(*replicas);
  if (batch) u.max_batch_size = static_cast<int>(*batch);
  if (!u.version && !u.replicas && !u.max_batch_size && !u.max_queue_delay_us) {
    return absl::InvalidArgumentError(
        "the update request must set at least one of \"version\", \"replicas\", "
        "\"max_batch_size\", \"max_queue_delay_us\"");
  }
  return u;
}

DeploymentsApi::DeploymentsApi(auth::Authenticator& auth, master::DeploymentController& deployments)
    : auth_(auth), deployments_(deployments) {}

void DeploymentsApi::Register(net::Router& router) {
  auto bind = [this](void (DeploymentsApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  router.Add("POST", "/api/v1/deployments", bind(&DeploymentsApi::Create),
             net::RouteOptions{kMaxCallbackBody});
  router.Add("GET", "/api/v1/deployments", bind(&DeploymentsApi::List));
  router.Add("GET", "/api/v1/deployments/{id}", bind(&DeploymentsApi::Get));
  router.Add("PATCH", "/api/v1/deployments/{id}", bind(&DeploymentsApi::Update),
             net::RouteOptions{kMaxCallbackBody});
  router.Add("DELETE", "/api/v1/deployments/{id}", bind(&DeploymentsApi::Delete));
  router.Add("POST", "/api/v1/deployments/{id}/replicas/{job}/ready",
             bind(&DeploymentsApi::ReplicaReady), net::RouteOptions{kMaxCallbackBody});
  router.Add("POST", "/api/v1/deployments/{id}/replicas/{job}/failed",
             bind(&DeploymentsApi::ReplicaFailed), net::RouteOptions{kMaxCallbackBody});
}

absl::StatusOr<store::DeploymentRecord> DeploymentsApi::Resolve(const auth::Principal& who,
                                                                const HttpRequest& req) {
  auto it = req.path_params.find("id");
  if (it == req.path_params.end() || it->second.empty()) {
    return absl::InvalidArgumentError("missing deployment id or name in the path");
  }
  return deployments_.Get(who, it->second);
}

void DeploymentsApi::Create(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(master::DeploymentSpec spec, DeploymentSpecFromJson(body));
  KILN_API_ASSIGN(store::DeploymentRecord record, deployments_.Create(who, std::move(spec)));
  SendJson(res, 201, deployments_.DescribeDeployment(record));
}

void DeploymentsApi::List(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(std::vector<store::DeploymentRecord> records, deployments_.List(who));
  Json items = Json::array();
  for (const store::DeploymentRecord& r : records) {
    items.push_back(deployments_.DescribeDeployment(r));
  }
  SendJson(res, 200, {{"deployments", std::move(items)}});
}

void DeploymentsApi::Get(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(store::DeploymentRecord record, Resolve(who, req));
  SendJson(res, 200, deployments_.DescribeDeployment(record));
}

void DeploymentsApi::Update(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(store::DeploymentRecord found, Resolve(who, req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(master::DeploymentUpdate update, DeploymentUpdateFromJson(body));
  KILN_API_ASSIGN(store::DeploymentRecord record, deployments_.Update(who, found.id, update));
  SendJson(res, 200, deployments_.DescribeDeployment(record));
}

void DeploymentsApi::Delete(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(store::DeploymentRecord found, Resolve(who, req));
  KILN_API_ASSIGN(store::DeploymentRecord record, deployments_.Delete(who, found.id));
  SendJson(res, 200, deployments_.DescribeDeployment(record));
}

void DeploymentsApi::ReplicaReady(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "deployment id"));
  KILN_API_ASSIGN(int64_t job, PathId(req, "job", "replica job id"));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  if (absl::Status s = CheckFields(body, {"port", "address"}, "ready report"); !s.ok()) {
    return SendError(res, s);
  }
  KILN_API_ASSIGN(int64_t port, base::GetInt(body, "port"));
  if (port < 1 || port > 65535) {
    return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                              "field \"port\" must be a TCP port (1-65535), got ", port)));
  }
  KILN_API_ASSIGN(std::string host, base::GetStringOr(body, "address", req.remote_address));
  if (host.empty() || host.size() > 255) {
    return SendError(res,
                     absl::InvalidArgumentError(
                         "field \"address\" must be the replica's host (1 to 255 characters)"));
  }
  if (absl::Status s = deployments_.ReplicaReady(who, id, job, host, static_cast<int>(port));
      !s.ok()) {
    return SendError(res, s);
  }
  SendJson(res, 200, {{"ok", true}});
}

void DeploymentsApi::ReplicaFailed(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "deployment id"));
  KILN_API_ASSIGN(int64_t job, PathId(req, "job", "replica job id"));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(std::string reason, base::GetString(body, "reason"));
  if (absl::Status s = deployments_.ReplicaFailed(who, id, job, reason); !s.ok()) {
    return SendError(res, s);
  }
  SendJson(res, 200, {{"ok", true}});
}

}  // namespace kiln::api
