// wml_v4.h
//
// The pure parts of the Watson ML v4 dialect (shared/reference/wmla-api.md §3.5): parsing
// the request bodies IBM's notebooks and `ibm-watson-machine-learning` send, building the
// Kiln job a training runs as, rendering Kiln's jobs, models and deployments in WML's
// `{"metadata": ..., "entity": ...}` shapes, WML's error body, and turning an uploaded ZIP
// of training code into the .tar.gz package agents unpack. No server, no store: WmlApi
// (wml_api.h) does the I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/master/job_spec.h"
#include "kiln/net/http_types.h"
#include "kiln/store/records.h"

namespace kiln::api::wml {

// DialectObject kinds the dialect stores.
inline constexpr char kSpaceKind[] = "wml_space";
inline constexpr char kModelDefinitionKind[] = "wml_model_definition";
inline constexpr char kTrainingKind[] = "wml_training";
inline constexpr char kModelKind[] = "wml_model";
inline constexpr char kDeploymentKind[] = "wml_deployment";

// A fresh object id in WML's form (a random UUID, version 4).
std::string NewId();

// WML's error body: {"trace": "<hex>", "errors": [{"code", "message"}], "status_code": N},
// with the HTTP status Kiln maps `status` to (net/http_status.h).
net::HttpResponse ErrorResponse(const absl::Status& status);
// The WML error code for an HTTP status ("invalid_request_entity", "not_found", ...).
std::string ErrorCode(int http_status);

// `{"metadata": {...}, "entity": entity}` for an object stored by the dialect. `href` is the
// object's path; `space_id` may be empty.
struct ObjectMeta {
  std::string id;
  std::string href;
  std::string name;
  std::string space_id;
  std::string owner;
  int64_t created_at = 0;   // micros
  int64_t modified_at = 0;  // micros
};
base::Json Resource(const ObjectMeta& meta, base::Json entity);

// ---- spaces (/v2/spaces) ----
// The stored entity of a new space: name (required), description, tags.
absl::StatusOr<base::Json> ParseSpaceRequest(const base::Json& body);

// ---- model definitions ----
// The stored entity of a new model definition: name (required), description, command,
// platform, version, tags, space_id, as given. InvalidArgument naming the field.
absl::StatusOr<base::Json> ParseModelDefinitionRequest(const base::Json& body);

// The code of a model definition, converted from the uploaded ZIP.
struct ConvertedCode {
  std::string tar_gz;  // the same files as a .tar.gz (what agents unpack)
  // The one folder holding everything, when the ZIP was made of a folder ("" otherwise):
  // the training's command runs inside it, as WML runs it inside the unpacked folder.
  std::string root_folder;
  int64_t files = 0;
};
struct ZipLimits {
  int64_t max_entries = 10'000;
  int64_t max_total_bytes = int64_t{1} << 30;  // uncompressed: stops zip bombs
};
// Reads a ZIP (regular files and folders only) into a .tar.gz. InvalidArgument for
// anything else: not a ZIP, links, devices, absolute or ".." names, encrypted entries,
// contents over the limits.
absl::StatusOr<ConvertedCode> ZipToTarGz(std::string_view zip, const ZipLimits& limits = {});

// ---- trainings ----
struct TrainingRequest {
  std::string name;
  std::string description;
  std::string space_id;
  std::string definition_id;           // model_definition.id
  std::optional<std::string> command;  // model_definition.command: overrides the stored one
  std::string data_path;               // training_data_references[0].location.path ("" = none)
  base::Json entity = base::Json::object();  // what GET echoes: the request's WML fields
};
absl::StatusOr<TrainingRequest> ParseTrainingRequest(const base::Json& body);

// Where a training's data is (the job's DATA_DIR), from `data_path`: an absolute path is
// used as it is and must be an existing folder; a relative one is a folder under
// `data_root` (WMLA's shared data FS) and must exist there. "" → "" (the agent's default).
// InvalidArgument naming training_data_references[0].location.path otherwise.
absl::StatusOr<std::string> ResolveDataDir(const std::string& data_path,
                                           const std::string& data_root);

// The job a training runs as. `command` is WML's command line: a first word ending in
// ".py" runs with python3 (WMLA's notebooks give "train.py --epochs 10"), "python" is
// python3. `package_id` is the converted code; `workdir` its root folder.
absl::StatusOr<master::JobSpec> TrainingJobSpec(const TrainingRequest& request,
                                                const std::string& command,
                                                const std::string& package_id,
                                                const std::string& workdir,
                                                const std::string& data_dir);

// WML's training state for a job state: pending, running, completed, failed, canceled.
const char* TrainingState(store::JobState state);
// WML's `status.metrics` from a job's points: one entry per iteration (step), oldest
// first, {"iteration", "ml_metrics": {name: value}, "timestamp"}; a name reported in
// several groups keeps its bare name for the test group (or the only group) and is
// "<group>_<name>" for the others.
base::Json TrainingMetrics(const std::vector<store::MetricPoint>& points);
// The `entity` of a training: the request's fields, `results_reference` (with where the
// model is) and `status` from the job.
base::Json TrainingEntity(const std::string& training_id, const base::Json& request_entity,
                          const store::JobRecord& job,
                          const std::vector<store::MetricPoint>& points);

// ---- models ----
struct ModelRequest {
  std::string name;
  std::string description;
  std::string space_id;
  // Found in the body (see TrainingIdOf); "" for a model whose file is uploaded next
  // with PUT /ml/v4/models/{id}/content.
  std::string training_id;
  // `custom.signature`: the model's signature (Kiln's JSON form), checked; overrides
  // the one saved in or beside the file.
  std::optional<base::Json> signature;
  base::Json entity = base::Json::object();
};
// The body of POST /ml/v4/models: `name` (required) and, for a model from a training,
// the training, as `training_id`, `training.id`, or inside the `training_data_references`
// / `content_location` paths the Python client and WMLA generate (TrainingIdOf). Without
// one the model's file comes later (client.repository.store_model("model.pt", ...)).
// InvalidArgument when content_location names no training (Kiln reads no outside
// storage) or custom.signature is malformed.
absl::StatusOr<ModelRequest> ParseModelRequest(const base::Json& body);
// The training id a store_model body points at, or "" when it names none.
std::string TrainingIdOf(const base::Json& body);
// The model import request WMLA writes for a completed training (wmla-api.md §3.5 step
// 7, GET /v2/asset_files/experiment/{t}/assets/{t}/resources/wml_model/request.json):
// the body to POST to /ml/v4/models as it is. `content_location` points at `file_name`
// under the training's results (where TrainingIdOf finds the training again);
// `model_definition`, `software_spec`, `type` (the spec's name without its "-py3.x") and
// `training_data_references` come from the training's `request_entity`.
base::Json ModelImportRequest(const std::string& training_id, const std::string& space_id,
                              const base::Json& request_entity, const std::string& file_name);

// ---- deployments ----
struct DeploymentRequest {
  std::string name;
  std::string description;
  std::string space_id;
  std::string asset_id;  // the WML model id
  int replicas = 1;      // hardware_spec.num_nodes
  int slots = 1;         // from hardware_spec.name: XS/S 1, M 2, L 4, XL 8
  base::Json entity = base::Json::object();
};
absl::StatusOr<DeploymentRequest> ParseDeploymentRequest(const base::Json& body);
// A Kiln deployment name (unique; also the KServe model name) for a WML deployment name:
// lower-case letters, digits and '-', with `suffix` appended for uniqueness.
std::string KilnDeploymentName(const std::string& wml_name, const std::string& suffix);
// WML's deployment state: initializing (PENDING, UPDATING), ready, failed, deleted.
const char* DeploymentState(std::string_view kiln_state);

// ---- catalogs ----
// What GET /v2/software_specifications lists, so notebooks' get_id_by_name() resolves the
// names they use (pytorch-onnx_1.3-py3.7, ...). Kiln runs every training with the agent's
// python3 whatever the name: the names are accepted, not enforced.
base::Json SoftwareSpecifications();
// What GET /v2/hardware_specifications lists: the deployment sizes ParseDeploymentRequest
// maps onto slots per replica (XS, S, M, L, XL).
base::Json HardwareSpecifications();

}  // namespace kiln::api::wml
