// wml_api.h
//
// `WmlApi` serves the Watson ML v4 dialect (shared/reference/wmla-api.md §3.5), so the REST
// calls of IBM's notebooks and of the `ibm-watson-machine-learning` client run against
// Kiln: the CPD token endpoints, spaces (/v2/spaces), model definitions, trainings,
// models and deployments under /ml/v4. Everything maps onto Kiln's core: a training is a
// Kiln job, a model is a version in the ModelRegistry, a deployment is the
// DeploymentController's (its id is the Kiln deployment id, which the predictions route,
// served by InferenceApi, takes). Spaces, model definitions and the WML fields of the
// others are dialect objects in the store. Errors keep WML's body (wml_v4.h).
//
// Differences from WML, each answered with a message: trainings run one node; data comes
// from a shared file system (training_data_references[0].location.path → DATA_DIR);
// models come from completed trainings or from an uploaded TorchScript file (PUT
// .../content); deployments are online only.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/json.h"
#include "kiln/master/deployment_controller.h"
#include "kiln/master/job_controller.h"
#include "kiln/master/model_registry.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

struct WmlApiOptions {
  std::string data_dir;  // model definitions' code is stored as packages in data_dir/packages
  size_t max_package_bytes = 512 << 20;
  // Where a relative training_data_references[0].location.path is found. Empty: kilnd's
  // $DLI_DATA_FS if set, else data_dir/datasets.
  std::string data_root;
};

// All handlers run on the master's loop. Borrows everything it is given.
class WmlApi {
 public:
  WmlApi(store::Store& store, auth::Authenticator& auth, master::JobController& jobs,
         master::ModelRegistry& models, master::DeploymentController& deployments,
         WmlApiOptions options);

  void Register(net::Router& router);

 private:
  using Req = net::HttpRequest;
  using Res = net::Responder;

  // Token endpoints.
  void ValidateAuth(Req& req, Res res);
  void Authorize(Req& req, Res res);
  // Catalogs (GET /v2/software_specifications, /v2/hardware_specifications).
  void ListSpecifications(Req& req, Res res, bool hardware);
  void GetSpecification(Req& req, Res res, bool hardware);
  // Spaces.
  void CreateSpace(Req& req, Res res);
  void ListSpaces(Req& req, Res res);
  void GetSpace(Req& req, Res res);
  void DeleteSpace(Req& req, Res res);
  // Model definitions.
  void CreateDefinition(Req& req, Res res);
  void ListDefinitions(Req& req, Res res);
  void GetDefinition(Req& req, Res res);
  void DeleteDefinition(Req& req, Res res);
  void PutDefinitionCode(Req& req, Res res);
  // The model definition of the path's {id}, the caller's and in the request's space.
  absl::StatusOr<store::DialectObject> FindDefinition(const Req& req);
  // GET .../model_definitions/{id}/model: the code as it was uploaded.
  void DownloadDefinitionCode(Req& req, Res res);
  // Trainings.
  void CreateTraining(Req& req, Res res);
  void ListTrainings(Req& req, Res res);
  void GetTraining(Req& req, Res res);
  void DeleteTraining(Req& req, Res res);
  // GET /v2/asset_files/experiment/{t}/assets/{t}/resources/wml_model/request.json: the
  // model import request of a completed training that saved a model (wml::ModelImportRequest).
  void GetModelImportRequest(Req& req, Res res);
  // Models.
  void CreateModel(Req& req, Res res);
  void ListModels(Req& req, Res res);
  void GetModel(Req& req, Res res);
  void DeleteModel(Req& req, Res res);
  // PUT /ml/v4/models/{id}/content: the file of a model created without a training.
  void PutModelContent(Req& req, Res res);
  // GET /ml/v4/models/{id}/content: its attachment (one: the TorchScript file).
  void ListModelContent(Req& req, Res res);
  // GET /ml/v4/models/{id}/download and .../content/{attachment_id}: the file.
  void DownloadModel(Req& req, Res res);
  // Deployments.
  void CreateDeployment(Req& req, Res res);
  void ListDeployments(Req& req, Res res);
  void GetDeployment(Req& req, Res res);
  void DeleteDeployment(Req& req, Res res);

  // The caller, after checking ?version= (accepted, any date).
  absl::StatusOr<auth::Principal> Caller(const Req& req);
  // The space named by ?space_id= or by `body_space` (the body's space_id), checked to
  // exist and be visible to `who`; "" when neither names one.
  absl::StatusOr<std::string> CheckSpace(const auth::Principal& who, const Req& req,
                                         const std::string& body_space = "");
  // A stored object of `kind` that `who` may see (own; admins: all). NotFound naming
  // `what` otherwise.
  absl::StatusOr<store::DialectObject> Find(const auth::Principal& who, const char* kind,
                                            const std::string& id, const char* what);
  // The objects of `kind` `who` may see, in ?space_id= when given.
  absl::StatusOr<std::vector<store::DialectObject>> Visible(const auth::Principal& who,
                                                            const char* kind,
                                                            const std::string& space_id);
  absl::StatusOr<store::DialectObject> Store(const auth::Principal& who, const char* kind,
                                             std::string id, const std::string& space_id,
                                             base::Json body);

  // Deletes the registry version a WML model holds (none before its content came), and
  // the Kiln model once no version is left. A version a deployment serves: the registry's
  // FailedPrecondition naming it.
  absl::Status DropRegistryVersion(const auth::Principal& who, const base::Json& model_body);

  // WML's JSON of each object.
  base::Json SpaceJson(const store::DialectObject& obj);
  base::Json DefinitionJson(const store::DialectObject& obj);
  absl::StatusOr<base::Json> TrainingJson(const auth::Principal& who,
                                          const store::DialectObject& obj);
  base::Json ModelJson(const store::DialectObject& obj);
  base::Json DeploymentJson(const auth::Principal& who, const Req& req,
                            const store::DialectObject& obj);
  // A list in WML's shape: {"total_count", "limit", "first": {"href"}, "resources"}.
  static base::Json List(const Req& req, base::Json resources, int64_t limit);

  store::Store& store_;
  auth::Authenticator& auth_;
  master::JobController& jobs_;
  master::ModelRegistry& models_;
  master::DeploymentController& deployments_;
  WmlApiOptions options_;
};

}  // namespace kiln::api
