// model_registry.h
//
// `ModelRegistry`, the master's catalogue of trained models (ARCHITECTURE.md §6): named
// models owned by a user, each with numbered versions. A version is a TorchScript file
// (stored as a "file" package, so a deployment replica receives it like code) plus its
// signature, final metrics and lineage. Versions come from a finished job's artifacts
// (`$RESULT_DIR/model/model.pt` and `signature.json`) or from an uploaded file. The native
// API (api/models_api.h) and the Watson ML dialect are thin layers over this class.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/master/job_controller.h"
#include "kiln/store/records.h"
#include "kiln/store/store.h"

namespace kiln::master {

// What to register: a new model named `name` (or a new version of the caller's model of
// that name), from a job's artifact or from an already stored file package.
struct RegisterModelRequest {
  std::string name;
  std::optional<std::string> description;  // kept on the model; set when given
  std::optional<int64_t> job_id;           // from a finished job's artifacts
  std::string path = "model/model.pt";     // the artifact (relative to RESULT_DIR)
  std::optional<std::string> package_id;   // or: an uploaded "file" package
  std::optional<base::Json> signature;     // overrides the job's model/signature.json
  std::optional<base::Json> metrics;       // overrides the job's final metric values
};

// OK when `bytes` can be a TorchScript file: torch.jit.save writes a zip archive, so
// anything else (a state_dict pickle, a tar.gz, text) is refused with InvalidArgument
// saying how to save one, before a deployment fails to load it.
[[nodiscard]] absl::Status CheckTorchScriptFile(std::string_view name, std::string_view bytes);

// Validates a POST /api/v1/models body (docs/api.md "Models"). InvalidArgument naming the
// field and the fix: a bad name, both or neither of job_id and package_id (unless
// `allow_no_source`, for the upload form whose file comes beside the JSON), a path that
// is absolute or climbs out with "..", metrics that are not an object of numbers.
[[nodiscard]] absl::StatusOr<RegisterModelRequest> ParseRegisterModelRequest(
    const base::Json& body, bool allow_no_source = false);

// A model with its versions (oldest first; only the latest one in lists).
struct ModelView {
  store::ModelRecord model;
  std::vector<store::ModelVersionRecord> versions;
};

// {"model","version","signature","metrics","lineage","file":{"name","size","package_id"},
//  "created_at"}: one version as every API shows it.
base::Json ModelVersionToJson(const store::ModelRecord& model,
                              const store::ModelVersionRecord& version);
// {"id","name","user","description","created_at","latest_version","latest":{version} or
//  null, "versions":[...] (with `all_versions`)}.
base::Json ModelToJson(const ModelView& view, bool all_versions);

// All methods run on the master's loop (the store is not thread-safe). Reads package bytes
// (signature.json artifacts) from `data_dir`/packages.
class ModelRegistry {
 public:
  ModelRegistry(store::Store& store, JobController& jobs, const base::Clock& clock,
                std::string data_dir);

  // Adds version N+1 of model `request.name`, creating the model (owned by `who`) when the
  // name is new. Returns the model and the new version.
  // - AlreadyExists "model X already exists" when another user owns the name (admins may
  //   add versions to anyone's model).
  // - From a job: NotFound for a job `who` may not see; FailedPrecondition unless it is
  //   FINISHED or when it saved no artifact at `path` (the message says how to save one).
  //   Signature from the artifact beside the model (`model/signature.json`) unless given;
  //   metrics = the job's final values; lineage = job id, trial, experiment, hyperparameters.
  // - From a package: NotFound for an unknown package; InvalidArgument unless it is a file.
  // - InvalidArgument when no signature is available (saying how to give one) or it is
  //   malformed (naming the field).
  // Tasks and agents may not register (PermissionDenied).
  [[nodiscard]] absl::StatusOr<ModelView> Register(const auth::Principal& who,
                                                   RegisterModelRequest request);

  // The models `who` may see (own; admins: all), newest first, each with its latest version.
  [[nodiscard]] absl::StatusOr<std::vector<ModelView>> List(const auth::Principal& who);
  // By name, or by id when `name_or_id` is all digits. NotFound also for others' models.
  [[nodiscard]] absl::StatusOr<ModelView> Get(const auth::Principal& who,
                                              const std::string& name_or_id);
  // One version, and its model. NotFound for an unknown version.
  [[nodiscard]] absl::StatusOr<ModelView> GetVersion(const auth::Principal& who,
                                                     const std::string& name_or_id,
                                                     int64_t version);
  // Deletes the model and all its versions (packages stay: jobs may use them).
  // FailedPrecondition naming the deployment when a deployment serves any version.
  [[nodiscard]] absl::Status Delete(const auth::Principal& who, const std::string& name_or_id);
  // Deletes one version; FailedPrecondition naming the deployment that serves it.
  [[nodiscard]] absl::Status DeleteVersion(const auth::Principal& who,
                                           const std::string& name_or_id, int64_t version);
  // Where the bytes of a version's file lie on disk.
  std::string ContentPath(const store::ModelVersionRecord& version) const;

 private:
  struct JobSource;  // what a job contributes to a version
  absl::StatusOr<JobSource> FromJob(const auth::Principal& who, int64_t job_id,
                                    const std::string& path);
  absl::StatusOr<store::ModelRecord> Resolve(const auth::Principal& who,
                                             const std::string& name_or_id);
  // OK unless a deployment serves `version` of `model_id` (any version when nullopt).
  absl::Status CheckNotDeployed(int64_t model_id, std::optional<int64_t> version);

  store::Store& store_;
  JobController& jobs_;
  const base::Clock& clock_;
  std::string data_dir_;
};

}  // namespace kiln::master
