#include "kiln/api/wml_api.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/api/handler_util.h"
#include "kiln/api/wml_v4.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_status.h"
#include "kiln/serving/model_file.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr char kModelDefinitions[] = "/ml/v4/model_definitions";
constexpr char kTrainings[] = "/ml/v4/trainings";
constexpr char kModels[] = "/ml/v4/models";
constexpr char kDeployments[] = "/ml/v4/deployments";
constexpr char kSpaces[] = "/v2/spaces";
// Where WMLA writes a training's files (the model import request: wmla-api.md §3.5 step 7).
constexpr char kExperimentAssets[] = "/v2/asset_files/experiment";
constexpr int64_t kDefaultLimit = 100;
constexpr int64_t kMaxLimit = 1000;

void SendWmlError(Responder& res, const absl::Status& status) {
  res.Send(wml::ErrorResponse(status));
}

void NoContent(Responder& res) {
  net::HttpResponse r;
  r.status = 204;
  r.content_type = "text/plain";
  res.Send(std::move(r));
}

// Like KILN_API_ASSIGN, answering errors in WML's shape.
#define WML_ASSIGN(lhs, expr)                                           \
  auto KILN_INTERNAL_CONCAT(wml_v_, __LINE__) = (expr);                 \
  if (!KILN_INTERNAL_CONCAT(wml_v_, __LINE__).ok()) {                   \
    SendWmlError(res, KILN_INTERNAL_CONCAT(wml_v_, __LINE__).status()); \
    return;                                                             \
  }                                                                     \
  lhs = std::move(KILN_INTERNAL_CONCAT(wml_v_, __LINE__)).value()

#define WML_CHECK(expr)                           \
  if (absl::Status wml_s = (expr); !wml_s.ok()) { \
    SendWmlError(res, wml_s);                     \
    return;                                       \
  }

std::string PathParam(const HttpRequest& req, const char* name) {
  auto it = req.path_params.find(name);
  return it == req.path_params.end() ? std::string() : it->second;
}

// The stored body of a dialect object: {"entity": {...}, ...Kiln's own fields}.
Json BodyOf(const store::DialectObject& obj) {
  auto parsed = base::ParseJson(obj.body_json);
  if (!parsed.ok() || !parsed->is_object()) return Json::object();
  return *std::move(parsed);
}

Json EntityOf(const Json& body) {
  Json e = body.value("entity", Json::object());
  return e.is_object() ? e : Json::object();
}

std::string StringAt(const Json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

int64_t IntAt(const Json& j, const char* key) {
  return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

wml::ObjectMeta MetaOf(const store::DialectObject& obj, const std::string& href_base,
                       const Json& entity) {
  wml::ObjectMeta m;
  m.id = obj.id;
  m.href = absl::StrCat(href_base, "/", obj.id);
  m.name = StringAt(entity, "name");
  m.space_id = obj.space_id;
  m.owner = std::to_string(obj.user_id);
  m.created_at = obj.created_at;
  m.modified_at = obj.updated_at;
  return m;
}

absl::Status Prefixed(const absl::Status& status, std::string_view prefix) {
  return absl::Status(status.code(),
                      absl::StrCat(std::string(prefix), std::string(status.message())));
}

// A WML model holds a registry version once it has content: from its training at once,
// or from PUT .../content for one created without.
bool HasContent(const Json& model_body) { return IntAt(model_body, "kiln_model_id") > 0; }

absl::Status NoContentYet(const store::DialectObject& model) {
  return absl::FailedPreconditionError(
      absl::StrCat("model ", model.id,
                   " has no content yet: upload its TorchScript file first with PUT "
                   "/ml/v4/models/",
                   model.id, "/content (client.repository.store_model(\"model.pt\", ...) does)"));
}

absl::Status NoCodeYet(const store::DialectObject& definition) {
  return absl::FailedPreconditionError(absl::StrCat(
      "model_definition ", definition.id, " has no code yet: upload it first with PUT ",
      kModelDefinitions, "/", definition.id, "/model (the ZIP as the body)"));
}

}  // namespace

WmlApi::WmlApi(store::Store& store, auth::Authenticator& auth, master::JobController& jobs,
               master::ModelRegistry& models, master::DeploymentController& deployments,
               WmlApiOptions options)
    : store_(store),
      auth_(auth),
      jobs_(jobs),
      models_(models),
      deployments_(deployments),
      options_(std::move(options)) {
  // WMLA installs set DLI_DATA_FS (the shared data sets) for everything they start.
  if (options_.data_root.empty()) {
    const char* fs = std::getenv("DLI_DATA_FS");
    options_.data_root = fs != nullptr && *fs != '\0'
                             ? std::string(fs)
                             : absl::StrCat(options_.data_dir, "/datasets");
  }
}

void WmlApi::Register(net::Router& router) {
  auto bind = [this](void (WmlApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  router.Add("GET", "/v1/preauth/validateAuth", bind(&WmlApi::ValidateAuth));
  router.Add("POST", "/icp4d-api/v1/authorize", bind(&WmlApi::Authorize));

  auto specifications = [this](bool hardware) {
    return [this, hardware](HttpRequest& req, Responder res) {
      ListSpecifications(req, std::move(res), hardware);
    };
  };
  auto specification = [this](bool hardware) {
    return [this, hardware](HttpRequest& req, Responder res) {
      GetSpecification(req, std::move(res), hardware);
    };
  };
  router.Add("GET", "/v2/software_specifications", specifications(false));
  router.Add("GET", "/v2/software_specifications/{id}", specification(false));
  router.Add("GET", "/v2/hardware_specifications", specifications(true));
  router.Add("GET", "/v2/hardware_specifications/{id}", specification(true));

  router.Add("POST", "/v2/spaces", bind(&WmlApi::CreateSpace));
  router.Add("GET", "/v2/spaces", bind(&WmlApi::ListSpaces));
  router.Add("GET", "/v2/spaces/{id}", bind(&WmlApi::GetSpace));
  router.Add("DELETE", "/v2/spaces/{id}", bind(&WmlApi::DeleteSpace));

  router.Add("POST", "/ml/v4/model_definitions", bind(&WmlApi::CreateDefinition));
  router.Add("GET", "/ml/v4/model_definitions", bind(&WmlApi::ListDefinitions));
  router.Add("GET", "/ml/v4/model_definitions/{id}", bind(&WmlApi::GetDefinition));
  router.Add("DELETE", "/ml/v4/model_definitions/{id}", bind(&WmlApi::DeleteDefinition));
  router.Add("GET", "/ml/v4/model_definitions/{id}/model", bind(&WmlApi::DownloadDefinitionCode));
  router.Add("PUT", "/ml/v4/model_definitions/{id}/model", bind(&WmlApi::PutDefinitionCode),
             net::RouteOptions{options_.max_package_bytes});

  router.Add("POST", "/ml/v4/trainings", bind(&WmlApi::CreateTraining));
  router.Add("GET", "/ml/v4/trainings", bind(&WmlApi::ListTrainings));
  router.Add("GET", "/ml/v4/trainings/{id}", bind(&WmlApi::GetTraining));
  router.Add("DELETE", "/ml/v4/trainings/{id}", bind(&WmlApi::DeleteTraining));
  const std::string experiment_assets = kExperimentAssets;
  router.Add(
      "GET",
      experiment_assets + "/{training_id}/assets/{asset_id}/resources/wml_model/request.json",
      bind(&WmlApi::GetModelImportRequest));

  router.Add("POST", "/ml/v4/models", bind(&WmlApi::CreateModel));
  router.Add("GET", "/ml/v4/models", bind(&WmlApi::ListModels));
  router.Add("GET", "/ml/v4/models/{id}", bind(&WmlApi::GetModel));
  router.Add("DELETE", "/ml/v4/models/{id}", bind(&WmlApi::DeleteModel));
  router.Add("PUT", "/ml/v4/models/{id}/content", bind(&WmlApi::PutModelContent),
             net::RouteOptions{options_.max_package_bytes});
  router.Add("GET", "/ml/v4/models/{id}/content", bind(&WmlApi::ListModelContent));
  router.Add("GET", "/ml/v4/models/{id}/content/{attachment_id}", bind(&WmlApi::DownloadModel));
  router.Add("GET", "/ml/v4/models/{id}/download", bind(&WmlApi::DownloadModel));

  // POST /ml/v4/deployments/{id}/predictions is InferenceApi's (the serving path).
  router.Add("POST", "/ml/v4/deployments", bind(&WmlApi::CreateDeployment));
  router.Add("GET", "/ml/v4/deployments", bind(&WmlApi::ListDeployments));
  router.Add("GET", "/ml/v4/deployments/{id}", bind(&WmlApi::GetDeployment));
  router.Add("DELETE", "/ml/v4/deployments/{id}", bind(&WmlApi::DeleteDeployment));
}

// ---------------------------------------------------------------- common

absl::StatusOr<auth::Principal> WmlApi::Caller(const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(auth::Principal who, AuthenticateRequest(auth_, req));
  if (!who.is_user()) {
    return absl::PermissionDeniedError(
        "the Watson ML API takes a user's credentials (a Bearer token from "
        "/v1/preauth/validateAuth, or HTTP Basic), not a task's or an agent's");
  }
  return who;
}

absl::StatusOr<std::string> WmlApi::CheckSpace(const auth::Principal& who, const HttpRequest& req,
                                               const std::string& body_space) {
  std::string space = req.Query("space_id").value_or("");
  if (space.empty()) space = body_space;
  if (space.empty()) return std::string();
  if (!body_space.empty() && body_space != space) {
    return absl::InvalidArgumentError(absl::StrCat("space_id ", body_space, " in the body and ",
                                                   space, " in the query differ; give one"));
  }
  auto obj = Find(who, wml::kSpaceKind, space, "space_id");
  if (!obj.ok()) return obj.status();
  return space;
}

absl::StatusOr<store::DialectObject> WmlApi::Find(const auth::Principal& who, const char* kind,
                                                  const std::string& id, const char* what) {
  auto obj = store_.GetDialectObject(kind, id);
  if (!obj.ok() && obj.status().code() != absl::StatusCode::kNotFound) return obj.status();
  // Others' objects read as missing, so their ids are not revealed.
  if (!obj.ok() || (!who.admin && obj->user_id != who.user_id)) {
    std::string hint;
    if (std::string_view(kind) == wml::kSpaceKind) hint = " (create one with POST /v2/spaces)";
    return absl::NotFoundError(absl::StrCat(what, " ", id, ": not found", hint));
  }
  return obj;
}

absl::StatusOr<std::vector<store::DialectObject>> WmlApi::Visible(const auth::Principal& who,
                                                                  const char* kind,
                                                                  const std::string& space_id) {
  std::optional<int64_t> user;
  if (!who.admin) user = who.user_id;
  std::optional<std::string> space;
  if (!space_id.empty()) space = space_id;
  KILN_ASSIGN_OR_RETURN(auto objs, store_.ListDialectObjects(kind, user, space));
  std::reverse(objs.begin(), objs.end());  // newest first, as WML lists
  return objs;
}

absl::StatusOr<store::DialectObject> WmlApi::Store(const auth::Principal& who, const char* kind,
                                                   std::string id, const std::string& space_id,
                                                   Json body) {
  store::DialectObject obj;
  obj.kind = kind;
  obj.id = std::move(id);
  obj.user_id = who.user_id;
  obj.space_id = space_id;
  obj.body_json = body.dump();
  obj.created_at = base::SystemClock::Get().NowMicros();
  obj.updated_at = obj.created_at;
  KILN_RETURN_IF_ERROR(store_.PutDialectObject(obj));
  return obj;
}

Json WmlApi::List(const HttpRequest& req, Json resources, int64_t limit) {
  int64_t total = static_cast<int64_t>(resources.size());
  if (total > limit) resources.erase(resources.begin() + limit, resources.end());
  return {{"total_count", total},
          {"total_results", total},
          {"limit", limit},
          {"first", {{"href", req.target}}},
          {"resources", std::move(resources)}};
}

// ---------------------------------------------------------------- tokens

void WmlApi::ValidateAuth(HttpRequest& req, Responder res) {
  auto creds = net::ParseBasicAuthorization(req.Header("authorization"));
  if (!creds) {
    return SendWmlError(res, absl::UnauthenticatedError(
                                 "validateAuth needs HTTP Basic credentials: Authorization: Basic "
                                 "base64(user:password), e.g. curl -u user:password"));
  }
  WML_ASSIGN(auth::IssuedToken token, auth_.Login(creds->first, creds->second));
  WML_ASSIGN(auth::Principal who, auth_.AuthenticateToken(token.token));
  SendJson(res, 200,
           {{"username", who.username},
            {"role", who.admin ? "Admin" : "User"},
            {"uid", std::to_string(who.user_id)},
            {"authenticator", "default"},
            {"accessToken", token.token},
            {"token", token.token},
            {"expires_at", base::FormatIso8601(token.expires_at)},
            {"_messageCode_", "success"},
            {"message", "success"}});
}

void WmlApi::Authorize(HttpRequest& req, Responder res) {
  WML_ASSIGN(Json body, ParseBody(req));
  std::string user = StringAt(body, "username");
  std::string password = StringAt(body, "password");
  if (user.empty() || password.empty()) {
    return SendWmlError(res, absl::InvalidArgumentError(
                                 "the body needs \"username\" and \"password\" (Kiln has no API "
                                 "keys: use the password)"));
  }
  WML_ASSIGN(auth::IssuedToken token, auth_.Login(user, password));
  SendJson(res, 200, {{"_messageCode_", "200"}, {"message", "Success"}, {"token", token.token}});
}

// ---------------------------------------------------------------- catalogs

void WmlApi::ListSpecifications(HttpRequest& req, Responder res, bool hardware) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  (void)who;
  Json all = hardware ? wml::HardwareSpecifications() : wml::SoftwareSpecifications();
  std::string name = req.Query("name").value_or("");
  Json out = Json::array();
  for (Json& spec : all) {
    if (name.empty() || spec["metadata"]["name"] == name) out.push_back(std::move(spec));
  }
  SendJson(res, 200, List(req, std::move(out), kMaxLimit));
}

void WmlApi::GetSpecification(HttpRequest& req, Responder res, bool hardware) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  (void)who;
  std::string id = PathParam(req, "id");
  for (Json& spec : hardware ? wml::HardwareSpecifications() : wml::SoftwareSpecifications()) {
    if (spec["metadata"]["id"] == id) return SendJson(res, 200, spec);
  }
  SendWmlError(
      res, absl::NotFoundError(absl::StrCat(
               hardware ? "hardware" : "software", " specification ", id, ": not found (GET /v2/",
               hardware ? "hardware" : "software", "_specifications lists them)")));
}

// ---------------------------------------------------------------- spaces

Json WmlApi::SpaceJson(const store::DialectObject& obj) {
  Json entity = EntityOf(BodyOf(obj));
  wml::ObjectMeta meta = MetaOf(obj, kSpaces, entity);
  meta.space_id.clear();
  Json out = wml::Resource(meta, std::move(entity));
  out["metadata"]["url"] = meta.href;
  return out;
}

void WmlApi::CreateSpace(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(Json body, ParseBody(req));
  WML_ASSIGN(Json entity, wml::ParseSpaceRequest(body));
  WML_ASSIGN(store::DialectObject obj,
             Store(who, wml::kSpaceKind, wml::NewId(), "", {{"entity", std::move(entity)}}));
  SendJson(res, 201, SpaceJson(obj));
}

void WmlApi::ListSpaces(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(int64_t limit, QueryInt(req, "limit", kDefaultLimit, 1, kMaxLimit));
  WML_ASSIGN(auto objs, Visible(who, wml::kSpaceKind, ""));
  Json out = Json::array();
  for (const store::DialectObject& obj : objs) out.push_back(SpaceJson(obj));
  SendJson(res, 200, List(req, std::move(out), limit));
}

void WmlApi::GetSpace(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kSpaceKind, PathParam(req, "id"), "space"));
  SendJson(res, 200, SpaceJson(obj));
}

void WmlApi::DeleteSpace(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject space, Find(who, wml::kSpaceKind, PathParam(req, "id"), "space"));
  // A space takes its assets with it: deployments stop, trainings are canceled, models and
  // definitions are forgotten (the Kiln jobs keep their records, as every job does).
  for (const char* kind :
       {wml::kDeploymentKind, wml::kTrainingKind, wml::kModelKind, wml::kModelDefinitionKind}) {
    WML_ASSIGN(auto objs, store_.ListDialectObjects(kind, std::nullopt, space.id));
    for (const store::DialectObject& obj : objs) {
      int64_t id = 0;
      if (std::string_view(kind) == wml::kDeploymentKind && absl::SimpleAtoi(obj.id, &id)) {
        if (auto s = deployments_.Delete(who, id);
            !s.ok() && s.status().code() != absl::StatusCode::kNotFound) {
          return SendWmlError(res, s.status());
        }
      } else if (std::string_view(kind) == wml::kTrainingKind && absl::SimpleAtoi(obj.id, &id)) {
        if (auto job = jobs_.GetJob(who, id); job.ok() && !store::IsTerminal(job->state)) {
          (void)jobs_.Kill(who, id);
        }
      } else if (std::string_view(kind) == wml::kModelKind) {
        (void)DropRegistryVersion(who, BodyOf(obj));
      }
      WML_CHECK(store_.DeleteDialectObject(kind, obj.id));
    }
  }
  WML_CHECK(store_.DeleteDialectObject(wml::kSpaceKind, space.id));
  NoContent(res);
}

// ---------------------------------------------------------------- model definitions

Json WmlApi::DefinitionJson(const store::DialectObject& obj) {
  Json body = BodyOf(obj);
  Json entity = EntityOf(body);
  if (body.contains("package_id")) {
    entity["attachment_id"] = body["package_id"];
    entity["content_format"] = "native";
  }
  return wml::Resource(MetaOf(obj, kModelDefinitions, entity), std::move(entity));
}

void WmlApi::CreateDefinition(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(Json body, ParseBody(req));
  WML_ASSIGN(Json entity, wml::ParseModelDefinitionRequest(body));
  WML_ASSIGN(std::string space, CheckSpace(who, req, StringAt(body, "space_id")));
  if (!space.empty()) entity["space_id"] = space;
  WML_ASSIGN(store::DialectObject obj, Store(who, wml::kModelDefinitionKind, wml::NewId(), space,
                                             {{"entity", std::move(entity)}}));
  SendJson(res, 201, DefinitionJson(obj));
}

void WmlApi::ListDefinitions(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(int64_t limit, QueryInt(req, "limit", kDefaultLimit, 1, kMaxLimit));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  WML_ASSIGN(auto objs, Visible(who, wml::kModelDefinitionKind, space));
  Json out = Json::array();
  for (const store::DialectObject& obj : objs) out.push_back(DefinitionJson(obj));
  SendJson(res, 200, List(req, std::move(out), limit));
}

absl::StatusOr<store::DialectObject> WmlApi::FindDefinition(const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(auth::Principal who, Caller(req));
  KILN_RETURN_IF_ERROR(CheckSpace(who, req).status());
  return Find(who, wml::kModelDefinitionKind, PathParam(req, "id"), "model_definition");
}

void WmlApi::GetDefinition(HttpRequest& req, Responder res) {
  WML_ASSIGN(store::DialectObject obj, FindDefinition(req));
  SendJson(res, 200, DefinitionJson(obj));
}

void WmlApi::DeleteDefinition(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj,
             Find(who, wml::kModelDefinitionKind, PathParam(req, "id"), "model_definition"));
  // Its package stays: trainings that ran it keep their code (packages are shared).
  WML_CHECK(store_.DeleteDialectObject(wml::kModelDefinitionKind, obj.id));
  NoContent(res);
}

void WmlApi::DownloadDefinitionCode(HttpRequest& req, Responder res) {
  WML_ASSIGN(store::DialectObject obj, FindDefinition(req));
  Json body = BodyOf(obj);
  std::string package_id = StringAt(body, "upload_package_id");
  if (package_id.empty()) package_id = StringAt(body, "package_id");  // stored before it
  if (package_id.empty()) return SendWmlError(res, NoCodeYet(obj));
  WML_ASSIGN(store::PackageRecord package, store_.GetPackage(package_id));
  WML_ASSIGN(std::string bytes,
             base::ReadFile(absl::StrCat(options_.data_dir, "/packages/", package.id)));
  SendFile(res, std::move(bytes), package.name);
}

void WmlApi::PutDefinitionCode(HttpRequest& req, Responder res) {
  WML_ASSIGN(store::DialectObject obj, FindDefinition(req));
  if (req.body.empty()) {
    return SendWmlError(res, absl::InvalidArgumentError(
                                 "the body must be the training code as a ZIP (Content-Type: "
                                 "application/zip), e.g. curl -T code.zip"));
  }
  // Agents unpack .tar.gz packages; a ZIP is converted here, once, with its names checked.
  // A .tar.gz is taken as it is (the agent checks it when unpacking).
  std::string tar_gz;
  std::string root_folder;
  bool gzip = req.body.size() >= 2 && static_cast<unsigned char>(req.body[0]) == 0x1f &&
              static_cast<unsigned char>(req.body[1]) == 0x8b;
  if (gzip) {
    tar_gz = req.body;
  } else {
    WML_ASSIGN(wml::ConvertedCode code, wml::ZipToTarGz(req.body));
    tar_gz = std::move(code.tar_gz);
    root_folder = std::move(code.root_folder);
  }
  WML_ASSIGN(store::PackageRecord package,
             StorePackage(store_, options_.data_dir, "model_definition.tar.gz", tar_gz));
  // The upload as it came, for GET .../model: a ZIP is kept beside its converted package.
  std::string upload_id = package.id;
  if (!gzip) {
    WML_ASSIGN(store::PackageRecord upload,
               StorePackage(store_, options_.data_dir, "model_definition.zip", req.body));
    upload_id = upload.id;
  }
  Json body = BodyOf(obj);
  body["package_id"] = package.id;
  body["upload_package_id"] = upload_id;
  body["root_folder"] = root_folder;
  obj.body_json = body.dump();
  obj.updated_at = base::SystemClock::Get().NowMicros();
  WML_CHECK(store_.PutDialectObject(obj));
  SendJson(res, 201,
           {{"attachment_id", package.id}, {"content_format", "native"}, {"persisted", true}});
}

// ---------------------------------------------------------------- trainings

absl::StatusOr<Json> WmlApi::TrainingJson(const auth::Principal& who,
                                          const store::DialectObject& obj) {
  int64_t job_id = 0;
  if (!absl::SimpleAtoi(obj.id, &job_id)) return absl::InternalError("bad training id");
  KILN_ASSIGN_OR_RETURN(store::JobRecord job, jobs_.GetJob(who, job_id));
  KILN_ASSIGN_OR_RETURN(std::vector<store::MetricPoint> points,
                        store_.GetMetrics(job_id, std::nullopt));
  Json entity = wml::TrainingEntity(obj.id, EntityOf(BodyOf(obj)), job, points);
  Json out = wml::Resource(MetaOf(obj, kTrainings, entity), std::move(entity));
  out["metadata"]["modified_at"] = base::FormatIso8601(
      std::max({job.created_at, job.started_at.value_or(0), job.finished_at.value_or(0)}));
  return out;
}

void WmlApi::CreateTraining(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(Json body, ParseBody(req));
  WML_ASSIGN(wml::TrainingRequest request, wml::ParseTrainingRequest(body));
  WML_ASSIGN(std::string space, CheckSpace(who, req, request.space_id));
  request.space_id = space;
  WML_ASSIGN(store::DialectObject def,
             Find(who, wml::kModelDefinitionKind, request.definition_id, "model_definition.id"));
  Json def_body = BodyOf(def);
  std::string package_id = StringAt(def_body, "package_id");
  if (package_id.empty()) return SendWmlError(res, NoCodeYet(def));
  std::string command = request.command.value_or(StringAt(EntityOf(def_body), "command"));
  WML_ASSIGN(std::string data_dir, wml::ResolveDataDir(request.data_path, options_.data_root));
  WML_ASSIGN(master::JobSpec spec,
             wml::TrainingJobSpec(request, command, package_id, StringAt(def_body, "root_folder"),
                                  data_dir));
  auto job = jobs_.Submit(who, std::move(spec));
  if (!job.ok()) {
    // A training no agent could ever run is a bad request, as in the other dialects.
    absl::Status s = job.status();
    if (s.code() == absl::StatusCode::kFailedPrecondition) s = net::WithHttpStatus(s, 400);
    return SendWmlError(res, s);
  }
  auto obj = Store(who, wml::kTrainingKind, std::to_string(job->id), space,
                   {{"entity", std::move(request.entity)}});
  if (!obj.ok()) {
    // Nothing half-made: a job no WML object points at would run unseen by the dialect.
    (void)jobs_.Kill(who, job->id);
    return SendWmlError(res, obj.status());
  }
  WML_ASSIGN(Json out, TrainingJson(who, *obj));
  SendJson(res, 201, out);
}

void WmlApi::ListTrainings(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(int64_t limit, QueryInt(req, "limit", kDefaultLimit, 1, kMaxLimit));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  WML_ASSIGN(auto objs, Visible(who, wml::kTrainingKind, space));
  // Newest first by job id (ids are decimal strings: the store orders them as text).
  std::sort(objs.begin(), objs.end(), [](const auto& a, const auto& b) {
    return a.id.size() != b.id.size() ? a.id.size() > b.id.size() : a.id > b.id;
  });
  Json out = Json::array();
  int64_t total = static_cast<int64_t>(objs.size());
  for (const store::DialectObject& obj : objs) {
    if (static_cast<int64_t>(out.size()) >= limit) break;
    WML_ASSIGN(Json t, TrainingJson(who, obj));
    out.push_back(std::move(t));
  }
  Json list = List(req, std::move(out), limit);
  list["total_count"] = total;
  list["total_results"] = total;
  SendJson(res, 200, list);
}

void WmlApi::GetTraining(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  (void)space;
  WML_ASSIGN(store::DialectObject obj,
             Find(who, wml::kTrainingKind, PathParam(req, "id"), "training"));
  WML_ASSIGN(Json out, TrainingJson(who, obj));
  SendJson(res, 200, out);
}

void WmlApi::DeleteTraining(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj,
             Find(who, wml::kTrainingKind, PathParam(req, "id"), "training"));
  int64_t job_id = 0;
  if (absl::SimpleAtoi(obj.id, &job_id)) {
    WML_ASSIGN(store::JobRecord job, jobs_.GetJob(who, job_id));
    if (!store::IsTerminal(job.state)) {
      WML_ASSIGN(store::JobRecord killed, jobs_.Kill(who, job_id));
      (void)killed;
    }
  }
  // Canceled trainings stay listed (state canceled) unless hard_delete forgets them; the
  // Kiln job keeps its record, logs and metrics either way.
  if (QueryFlag(req, "hard_delete"))
    WML_CHECK(store_.DeleteDialectObject(wml::kTrainingKind, obj.id));
  NoContent(res);
}

void WmlApi::GetModelImportRequest(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  (void)space;
  const std::string training_id = PathParam(req, "training_id");
  // WMLA writes it under the training's own asset folder: .../experiment/{t}/assets/{t}/...
  if (PathParam(req, "asset_id") != training_id) {
    return SendWmlError(res, absl::NotFoundError(absl::StrCat(
                                 "no asset file at ", req.path,
                                 ": a training's model import "
                                 "request is at /v2/asset_files/experiment/{training_id}/assets/"
                                 "{training_id}/resources/wml_model/request.json")));
  }
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kTrainingKind, training_id, "training"));
  int64_t job_id = 0;
  if (!absl::SimpleAtoi(obj.id, &job_id)) {
    return SendWmlError(res, absl::InternalError("bad training id"));
  }
  WML_ASSIGN(store::JobRecord job, jobs_.GetJob(who, job_id));
  if (job.state != store::JobState::kFinished) {
    const bool over = store::IsTerminal(job.state);
    return SendWmlError(
        res, absl::NotFoundError(absl::StrCat(
                 "training ", training_id, " is ", wml::TrainingState(job.state), ": ",
                 over ? "it has no model to import"
                      : absl::StrCat("its model import request is written when it completes "
                                     "(poll GET /ml/v4/trainings/",
                                     training_id, ")"))));
  }
  // The model the registry takes from a training (ModelRegistry: $RESULT_DIR/model/model.pt).
  const std::string saved = master::RegisterModelRequest().path;
  WML_ASSIGN(std::vector<store::ArtifactRecord> artifacts, store_.ListArtifacts(job_id));
  if (std::none_of(artifacts.begin(), artifacts.end(),
                   [&](const store::ArtifactRecord& a) { return a.path == saved; })) {
    return SendWmlError(res,
                        absl::NotFoundError(absl::StrCat("training ", training_id,
                                                         " saved no model: its code must write "
                                                         "the TorchScript model to $RESULT_DIR/",
                                                         saved, " (kiln.save_model does)")));
  }
  std::string file_name = saved.substr(saved.rfind('/') + 1);
  SendJson(res, 200,
           wml::ModelImportRequest(training_id, obj.space_id, EntityOf(BodyOf(obj)), file_name));
}

// ---------------------------------------------------------------- models

Json WmlApi::ModelJson(const store::DialectObject& obj) {
  Json body = BodyOf(obj);
  Json entity = EntityOf(body);
  if (HasContent(body)) {
    entity["content_import_state"] = "completed";
    if (body.contains("attachment")) entity["attachments"] = Json::array({body["attachment"]});
  }
  if (body.contains("kiln")) entity["kiln"] = body["kiln"];
  return wml::Resource(MetaOf(obj, kModels, entity), std::move(entity));
}

void WmlApi::CreateModel(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(Json body, ParseBody(req));
  WML_ASSIGN(wml::ModelRequest request, wml::ParseModelRequest(body));
  WML_ASSIGN(std::string space, CheckSpace(who, req, request.space_id));
  if (request.training_id.empty()) {
    // The file comes next (PUT .../content); the model is only WML's object until then.
    Json stored = {{"entity", std::move(request.entity)}};
    if (request.signature) stored["signature"] = *request.signature;
    WML_ASSIGN(store::DialectObject obj,
               Store(who, wml::kModelKind, wml::NewId(), space, std::move(stored)));
    return SendJson(res, 201, ModelJson(obj));
  }
  WML_ASSIGN(store::DialectObject training,
             Find(who, wml::kTrainingKind, request.training_id, "training_id"));
  int64_t job_id = 0;
  if (!absl::SimpleAtoi(training.id, &job_id)) {
    return SendWmlError(res, absl::InternalError("bad training id"));
  }
  master::RegisterModelRequest reg;
  reg.name = wml::KilnDeploymentName(request.name, "");
  if (!request.description.empty()) reg.description = request.description;
  reg.job_id = job_id;
  auto view = models_.Register(who, reg);
  if (!view.ok() && view.status().code() == absl::StatusCode::kAlreadyExists) {
    // Another user's model has the name: WML names need not be unique, Kiln's must.
    reg.name = wml::KilnDeploymentName(request.name, wml::NewId().substr(0, 6));
    view = models_.Register(who, reg);
  }
  if (!view.ok()) return SendWmlError(res, Prefixed(view.status(), "cannot store the model: "));
  const store::ModelVersionRecord& version = view->versions.back();
  Json stored = {{"entity", std::move(request.entity)},
                 {"kiln_model_id", view->model.id},
                 {"kiln_version", version.version},
                 {"kiln", master::ModelVersionToJson(view->model, version)}};
  WML_ASSIGN(store::DialectObject obj,
             Store(who, wml::kModelKind, wml::NewId(), space, std::move(stored)));
  SendJson(res, 201, ModelJson(obj));
}

void WmlApi::ListModels(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(int64_t limit, QueryInt(req, "limit", kDefaultLimit, 1, kMaxLimit));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  WML_ASSIGN(auto objs, Visible(who, wml::kModelKind, space));
  Json out = Json::array();
  for (const store::DialectObject& obj : objs) out.push_back(ModelJson(obj));
  SendJson(res, 200, List(req, std::move(out), limit));
}

void WmlApi::GetModel(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  (void)space;
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kModelKind, PathParam(req, "id"), "model"));
  SendJson(res, 200, ModelJson(obj));
}

void WmlApi::DeleteModel(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kModelKind, PathParam(req, "id"), "model"));
  WML_CHECK(DropRegistryVersion(who, BodyOf(obj)));
  WML_CHECK(store_.DeleteDialectObject(wml::kModelKind, obj.id));
  NoContent(res);
}

absl::Status WmlApi::DropRegistryVersion(const auth::Principal& who, const Json& model_body) {
  if (!HasContent(model_body)) return absl::OkStatus();
  const std::string model = std::to_string(IntAt(model_body, "kiln_model_id"));
  absl::Status s = models_.DeleteVersion(who, model, IntAt(model_body, "kiln_version"));
  // A version a deployment serves stays (409 naming the deployment); one already deleted
  // through Kiln's own API is no reason to keep the WML object.
  if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
  // The Kiln model was made for this WML model: once it has no version left, it goes too.
  absl::StatusOr<master::ModelView> left = models_.Get(who, model);
  if (left.ok() && left->versions.empty()) (void)models_.Delete(who, model);
  return absl::OkStatus();
}

void WmlApi::PutModelContent(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  (void)space;
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kModelKind, PathParam(req, "id"), "model"));
  std::string format = req.Query("content_format").value_or("");
  if (!format.empty() && format != "native") {
    return SendWmlError(res, absl::InvalidArgumentError(absl::StrCat(
                                 "content_format \"", format,
                                 "\" is not served by Kiln; upload the TorchScript file (or a "
                                 ".zip or .tar.gz holding it) with content_format=native")));
  }
  Json body = BodyOf(obj);
  if (HasContent(body)) {
    return SendWmlError(res, absl::FailedPreconditionError(absl::StrCat(
                                 "model ", obj.id, " already has its content (Kiln model version ",
                                 StringAt(body["kiln"], "model"), " v", IntAt(body, "kiln_version"),
                                 "); store a new model for another file")));
  }
  WML_ASSIGN(serving::UploadedModel upload, serving::ModelFromUpload(req.body));
  WML_ASSIGN(store::PackageRecord package,
             StorePackage(store_, options_.data_dir, upload.file_name, upload.torchscript));

  Json entity = EntityOf(body);
  master::RegisterModelRequest reg;
  reg.name = wml::KilnDeploymentName(StringAt(entity, "name"), "");
  if (!StringAt(entity, "description").empty()) reg.description = StringAt(entity, "description");
  reg.package_id = package.id;
  if (body.contains("signature")) {
    reg.signature = body["signature"];
  } else if (upload.signature_json) {
    absl::StatusOr<Json> parsed = base::ParseJson(*upload.signature_json);
    if (!parsed.ok()) {
      return SendWmlError(res,
                          absl::InvalidArgumentError(absl::StrCat(
                              upload.signature_source, " is not JSON: ", parsed.status().message(),
                              "; or give the signature as custom.signature")));
    }
    reg.signature = *std::move(parsed);
  }
  auto view = models_.Register(who, reg);
  if (!view.ok() && view.status().code() == absl::StatusCode::kAlreadyExists) {
    reg.name = wml::KilnDeploymentName(StringAt(entity, "name"), wml::NewId().substr(0, 6));
    view = models_.Register(who, reg);
  }
  if (!view.ok()) {
    absl::Status why = view.status();
    if (why.code() == absl::StatusCode::kInvalidArgument &&
        absl::StrContains(why.message(), "has no signature")) {
      why = absl::InvalidArgumentError(
          absl::StrCat(why.message(),
                       "; through Watson ML, give it as the model's custom.signature or put "
                       "signature.json beside the file in a .zip or .tar.gz"));
    }
    return SendWmlError(res, Prefixed(why, "cannot store the model's content: "));
  }
  const store::ModelVersionRecord& version = view->versions.back();
  Json attachment = {{"attachment_id", package.id},
                     {"content_format", "native"},
                     {"persisted", true},
                     {"name", upload.file_name}};
  body["kiln_model_id"] = view->model.id;
  body["kiln_version"] = version.version;
  body["kiln"] = master::ModelVersionToJson(view->model, version);
  body["attachment"] = attachment;
  obj.body_json = body.dump();
  obj.updated_at = base::SystemClock::Get().NowMicros();
  if (absl::Status stored = store_.PutDialectObject(obj); !stored.ok()) {
    // Keep the two in step: the version is only reachable through this object.
    (void)models_.DeleteVersion(who, std::to_string(view->model.id), version.version);
    return SendWmlError(res, stored);
  }
  attachment.erase("name");
  SendJson(res, 201, attachment);
}

void WmlApi::ListModelContent(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kModelKind, PathParam(req, "id"), "model"));
  Json body = BodyOf(obj);
  Json attachments = Json::array();
  if (HasContent(body)) {
    Json a = body.value("attachment", Json::object());
    if (a.empty()) {  // from a training: the registry's file stands for the attachment
      Json file = body["kiln"].value("file", Json::object());
      a = {{"attachment_id", file.value("package_id", "")},
           {"content_format", "native"},
           {"persisted", true},
           {"name", file.value("name", "model.pt")}};
    }
    attachments.push_back(std::move(a));
  }
  SendJson(res, 200,
           {{"total_count", attachments.size()},
            {"attachments", attachments},
            {"resources", attachments}});
}

void WmlApi::DownloadModel(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj, Find(who, wml::kModelKind, PathParam(req, "id"), "model"));
  Json body = BodyOf(obj);
  if (!HasContent(body)) return SendWmlError(res, NoContentYet(obj));
  WML_ASSIGN(master::ModelView view,
             models_.GetVersion(who, std::to_string(IntAt(body, "kiln_model_id")),
                                IntAt(body, "kiln_version")));
  const store::ModelVersionRecord& version = view.versions.front();
  std::string attachment = PathParam(req, "attachment_id");
  if (!attachment.empty() && attachment != version.package_id) {
    return SendWmlError(res, absl::NotFoundError(absl::StrCat(
                                 "model ", obj.id, " has no attachment \"", attachment,
                                 "\"; GET /ml/v4/models/", obj.id, "/content lists its one")));
  }
  WML_ASSIGN(std::string bytes, base::ReadFile(models_.ContentPath(version)));
  SendFile(res, std::move(bytes), version.file_name);
}

// ---------------------------------------------------------------- deployments

Json WmlApi::DeploymentJson(const auth::Principal& who, const HttpRequest& req,
                            const store::DialectObject& obj) {
  Json body = BodyOf(obj);
  Json entity = EntityOf(body);
  std::string host = req.Header("host");
  if (host.empty()) host = "localhost";
  Json status = {
      {"online_url",
       {{"url", absl::StrCat("http://", host, kDeployments, "/", obj.id, "/predictions")}}}};
  auto record = deployments_.Get(who, obj.id);
  if (record.ok()) {
    std::string state = store::DeploymentStateName(record->state);
    status["state"] = wml::DeploymentState(state);
    status["kiln_state"] = state;
    if (!record->reason.empty()) {
      status["message"] = {
          {"level", record->state == store::DeploymentState::kFailed ? "error" : "info"},
          {"text", record->reason}};
    }
    if (record->state == store::DeploymentState::kFailed) {
      status["failure"] = {
          {"trace", ""},
          {"errors", Json::array({{{"code", "deployment_failed"}, {"message", record->reason}}})}};
    }
    entity["kiln_deployment"] = record->name;
  } else {
    status["state"] = "deleted";
  }
  entity["status"] = std::move(status);
  return wml::Resource(MetaOf(obj, kDeployments, entity), std::move(entity));
}

void WmlApi::CreateDeployment(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(Json body, ParseBody(req));
  WML_ASSIGN(wml::DeploymentRequest request, wml::ParseDeploymentRequest(body));
  WML_ASSIGN(std::string space, CheckSpace(who, req, request.space_id));
  WML_ASSIGN(store::DialectObject model, Find(who, wml::kModelKind, request.asset_id, "asset.id"));
  Json model_body = BodyOf(model);
  if (!HasContent(model_body)) return SendWmlError(res, NoContentYet(model));
  master::DeploymentSpec spec;
  spec.name = wml::KilnDeploymentName(request.name, wml::NewId().substr(0, 6));
  spec.model = std::to_string(IntAt(model_body, "kiln_model_id"));
  spec.version = IntAt(model_body, "kiln_version");
  spec.replicas = request.replicas;
  spec.slots = request.slots;
  auto record = deployments_.Create(who, spec);
  if (!record.ok()) {
    absl::Status s = record.status();
    if (s.code() == absl::StatusCode::kFailedPrecondition) s = net::WithHttpStatus(s, 400);
    return SendWmlError(res, Prefixed(s, "cannot deploy: "));
  }
  // The id WML clients get is the Kiln deployment's: the predictions route takes it.
  auto obj = Store(who, wml::kDeploymentKind, std::to_string(record->id), space,
                   {{"entity", std::move(request.entity)}});
  if (!obj.ok()) {
    (void)deployments_.Delete(who, record->id);
    return SendWmlError(res, obj.status());
  }
  SendJson(res, 202, DeploymentJson(who, req, *obj));
}

void WmlApi::ListDeployments(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(int64_t limit, QueryInt(req, "limit", kDefaultLimit, 1, kMaxLimit));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  WML_ASSIGN(auto objs, Visible(who, wml::kDeploymentKind, space));
  Json out = Json::array();
  for (const store::DialectObject& obj : objs) out.push_back(DeploymentJson(who, req, obj));
  SendJson(res, 200, List(req, std::move(out), limit));
}

void WmlApi::GetDeployment(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(std::string space, CheckSpace(who, req));
  (void)space;
  WML_ASSIGN(store::DialectObject obj,
             Find(who, wml::kDeploymentKind, PathParam(req, "id"), "deployment"));
  SendJson(res, 200, DeploymentJson(who, req, obj));
}

void WmlApi::DeleteDeployment(HttpRequest& req, Responder res) {
  WML_ASSIGN(auth::Principal who, Caller(req));
  WML_ASSIGN(store::DialectObject obj,
             Find(who, wml::kDeploymentKind, PathParam(req, "id"), "deployment"));
  int64_t id = 0;
  if (absl::SimpleAtoi(obj.id, &id)) {
    auto stopped = deployments_.Delete(who, id);
    if (!stopped.ok() && stopped.status().code() != absl::StatusCode::kNotFound) {
      return SendWmlError(res, stopped.status());
    }
  }
  WML_CHECK(store_.DeleteDialectObject(wml::kDeploymentKind, obj.id));
  NoContent(res);
}

}  // namespace kiln::api
