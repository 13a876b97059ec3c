#include "kiln/api/models_api.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/api/handler_util.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/net/multipart.h"
#include "kiln/serving/model_file.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr char kFormHelp[] =
    "send multipart/form-data with the TorchScript file in \"file\" and the JSON request in "
    "\"data\", e.g. curl -F file=@model.pt -F 'data={\"name\": \"fashion-mlp\"}'";

std::string Basename(std::string_view name) {
  size_t slash = name.find_last_of("/\\");
  return std::string(slash == std::string_view::npos ? name : name.substr(slash + 1));
}

std::string ModelParam(const HttpRequest& req) {
  auto it = req.path_params.find("model");
  return it == req.path_params.end() ? "" : it->second;
}

absl::StatusOr<int64_t> VersionParam(const HttpRequest& req) {
  auto it = req.path_params.find("version");
  int64_t version = 0;
  if (it == req.path_params.end() || !absl::SimpleAtoi(it->second, &version) || version <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("version \"",
                                                   it == req.path_params.end() ? "" : it->second,
                                                   "\" is not a version number (1, 2, ...)"));
  }
  return version;
}

absl::StatusOr<auth::Principal> Caller(auth::Authenticator& auth, const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(auth::Principal who, AuthenticateRequest(auth, req));
  if (!who.is_user()) {
    return absl::PermissionDeniedError("the model registry is for users, not task or agent tokens");
  }
  return who;
}

}  // namespace

ModelsApi::ModelsApi(store::Store& store, auth::Authenticator& auth,
                     master::ModelRegistry& registry, ModelsApiOptions options)
    : store_(store), auth_(auth), registry_(registry), options_(std::move(options)) {}

void ModelsApi::Register(net::Router& router) {
  auto bind = [this](void (ModelsApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  // The form carries the model file (up to the package limit) beside its JSON `data`.
  router.Add("POST", "/api/v1/models", bind(&ModelsApi::Create),
             net::RouteOptions{options_.max_package_bytes + kMaxJsonBody});
  router.Add("GET", "/api/v1/models", bind(&ModelsApi::List));
  router.Add("GET", "/api/v1/models/{model}", bind(&ModelsApi::Get));
  router.Add("DELETE", "/api/v1/models/{model}", bind(&ModelsApi::Delete));
  router.Add("GET", "/api/v1/models/{model}/versions/{version}", bind(&ModelsApi::GetVersion));
  router.Add("DELETE", "/api/v1/models/{model}/versions/{version}",
             bind(&ModelsApi::DeleteVersion));
  router.Add("GET", "/api/v1/models/{model}/versions/{version}/content", bind(&ModelsApi::Content));
}

absl::Status ModelsApi::TakeModel(std::string_view bytes, const std::string& name,
                                  std::string_view what, std::string_view signature_field,
                                  master::RegisterModelRequest& request) {
  absl::StatusOr<serving::UploadedModel> uploaded = serving::ModelFromUpload(bytes);
  if (!uploaded.ok()) {
    return absl::Status(uploaded.status().code(), absl::StrCat(std::string(what), " (", name,
                                                               "): ", uploaded.status().message()));
  }
  serving::UploadedModel& upload = *uploaded;
  const bool bare = upload.torchscript == bytes;  // else the file inside an archive
  const bool named = !name.empty() && name != "." && name != "..";
  if (!request.signature && upload.signature_json) {
    absl::StatusOr<Json> signature = base::ParseJson(*upload.signature_json);
    if (!signature.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(upload.signature_source, " is not JSON: ", signature.status().message(),
                       "; or give the signature in ", std::string(signature_field)));
    }
    request.signature = *std::move(signature);
  }
  KILN_ASSIGN_OR_RETURN(store::PackageRecord package,
                        StorePackage(store_, options_.data_dir,
                                     bare && named ? name : upload.file_name, upload.torchscript));
  request.package_id = package.id;
  return absl::OkStatus();
}

absl::StatusOr<master::RegisterModelRequest> ModelsApi::FromForm(const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(std::vector<net::MultipartPart> parts, net::ParseMultipartRequest(req));
  const net::MultipartPart* data = net::FindPart(parts, "data");
  const net::MultipartPart* file = net::FindPart(parts, "file");
  if (data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("the form has no field \"data\" with the JSON request; ", kFormHelp));
  }
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("the form has no field \"file\" with the model; ", kFormHelp));
  }
  absl::StatusOr<Json> body = base::ParseJson(data->body);
  if (!body.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"data\" is not JSON: ", body.status().message()));
  }
  if (body->is_object() && (body->contains("job_id") || body->contains("package_id"))) {
    return absl::InvalidArgumentError(
        "an upload form takes the model from \"file\": leave job_id and package_id out of "
        "\"data\" (or post JSON without a file to register a job's model)");
  }
  KILN_ASSIGN_OR_RETURN(master::RegisterModelRequest request,
                        master::ParseRegisterModelRequest(*body, /*allow_no_source=*/true));
  if (file->body.size() > options_.max_package_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the model file is larger than the limit of ",
                                                     options_.max_package_bytes, " bytes"));
  }
  KILN_RETURN_IF_ERROR(TakeModel(file->body, Basename(file->filename.value_or("")), "\"file\"",
                                 "\"data\"", request));
  return request;
}

void ModelsApi::Create(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  master::RegisterModelRequest request;
  if (absl::StartsWith(absl::AsciiStrToLower(req.Header("content-type")), "multipart/")) {
    KILN_API_ASSIGN(request, FromForm(req));
  } else {
    KILN_API_ASSIGN(Json body, ParseBody(req));
    KILN_API_ASSIGN(request, master::ParseRegisterModelRequest(body));
    if (request.package_id) {
      // Taken as an upload is (a package may hold anything a job ran): an archive's model
      // becomes a package of its own, a bare file stays the package it is.
      KILN_API_ASSIGN(store::PackageRecord package, store_.GetPackage(*request.package_id));
      KILN_API_ASSIGN(std::string bytes,
                      base::ReadFile(absl::StrCat(options_.data_dir, "/packages/", package.id)));
      if (absl::Status s = TakeModel(bytes, package.name, "package " + package.id,
                                     "the request's \"signature\"", request);
          !s.ok()) {
        return SendError(res, s);
      }
    }
  }
  KILN_API_ASSIGN(master::ModelView view, registry_.Register(who, std::move(request)));
  SendJson(res, 201, master::ModelVersionToJson(view.model, view.versions.back()));
}

void ModelsApi::List(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  KILN_API_ASSIGN(std::vector<master::ModelView> views, registry_.List(who));
  Json out = Json::array();
  for (const auto& v : views) out.push_back(master::ModelToJson(v, /*all_versions=*/false));
  SendJson(res, 200, {{"models", std::move(out)}});
}

void ModelsApi::Get(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  KILN_API_ASSIGN(master::ModelView view, registry_.Get(who, ModelParam(req)));
  SendJson(res, 200, master::ModelToJson(view, /*all_versions=*/true));
}

void ModelsApi::GetVersion(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  KILN_API_ASSIGN(int64_t version, VersionParam(req));
  KILN_API_ASSIGN(master::ModelView view, registry_.GetVersion(who, ModelParam(req), version));
  SendJson(res, 200, master::ModelVersionToJson(view.model, view.versions.front()));
}

void ModelsApi::Content(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  KILN_API_ASSIGN(int64_t version, VersionParam(req));
  KILN_API_ASSIGN(master::ModelView view, registry_.GetVersion(who, ModelParam(req), version));
  const store::ModelVersionRecord& v = view.versions.front();
  KILN_API_ASSIGN(std::string bytes, base::ReadFile(registry_.ContentPath(v)));
  SendFile(res, std::move(bytes), v.file_name);
}

void ModelsApi::Delete(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  std::string model = ModelParam(req);
  if (absl::Status s = registry_.Delete(who, model); !s.ok()) return SendError(res, s);
  SendJson(res, 200, {{"deleted", model}});
}

void ModelsApi::DeleteVersion(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Caller(auth_, req));
  KILN_API_ASSIGN(int64_t version, VersionParam(req));
  std::string model = ModelParam(req);
  if (absl::Status s = registry_.DeleteVersion(who, model, version); !s.ok()) {
    return SendError(res, s);
  }
  SendJson(res, 200, {{"deleted", model}, {"version", version}});
}

}  // namespace kiln::api
