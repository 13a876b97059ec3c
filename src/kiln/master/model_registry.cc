#include "kiln/master/model_registry.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/serving/model_file.h"
#include "kiln/serving/signature.h"

namespace kiln::master {
namespace {

using base::Json;

// Model names are KServe model names too (/v2/models/{name}), so they must be URL-safe.
constexpr size_t kMaxNameLength = 64;
constexpr char kSignatureHelp[] =
    "save the model with kiln.save_model(model, example_input), which writes "
    "model/signature.json beside model.pt, or pass \"signature\": {\"inputs\": [{\"name\": "
    "\"image\", \"dtype\": \"float32\", \"shape\": [1, 28, 28]}], \"outputs\": [{\"name\": "
    "\"logits\", \"dtype\": \"float32\", \"shape\": [10]}]} (shapes per sample, without the "
    "batch dimension)";

absl::Status ValidateName(const std::string& name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("name \"", name, "\" ", std::string(why),
                     ": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                     "(it is the model's name in KServe URLs), e.g. \"fashion-mlp\""));
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > kMaxNameLength) return bad("is too long");
  if (!absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) return bad("is not allowed");
  bool all_digits = true;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (!absl::ascii_isalnum(u) && c != '.' && c != '_' && c != '-') return bad("is not allowed");
    if (!absl::ascii_isdigit(u)) all_digits = false;
  }
  // Models are addressed by name or id in URLs; an all-digit name would read as an id.
  if (all_digits) return bad("is all digits (it would read as a model id)");
  return absl::OkStatus();
}

absl::Status ValidateArtifactPath(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.size() > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "path \"", path,
        "\" must be a file under the job's RESULT_DIR, relative to it, e.g. \"model/model.pt\""));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          "path \"", path, "\" must be a plain relative path without '.', '..' or '//' parts"));
    }
  }
  return absl::OkStatus();
}

// The signature in its one stored form (what SignatureToJson writes), or InvalidArgument
// naming the field, after `source` (who gave it).
absl::StatusOr<Json> NormalizeSignature(const Json& given, std::string_view source) {
  absl::StatusOr<serving::Signature> parsed = serving::ParseSignature(given);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), parsed.status().message()));
  }
  return serving::SignatureToJson(*parsed);
}

absl::StatusOr<Json> ValidateMetrics(const Json& metrics) {
  if (!metrics.is_object()) {
    return absl::InvalidArgumentError(
        "metrics must be an object of final values, e.g. {\"accuracy\": 0.86}");
  }
  for (auto it = metrics.begin(); it != metrics.end(); ++it) {
    if (!it.value().is_number() || !std::isfinite(it.value().get<double>())) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics.", it.key(), " must be a finite number"));
    }
  }
  return metrics;
}

Json ParseOr(const std::string& text, Json fallback) {
  absl::StatusOr<Json> parsed = base::ParseJson(text);
  return parsed.ok() ? *std::move(parsed) : std::move(fallback);
}

// The job's final metric values: the last point of each metric, from the "test" group when
// it has one (the held-out figure is the one a model is judged by), else from the group
// whose last point came last. Points arrive ordered by name, group, step.
Json FinalMetrics(const std::vector<store::MetricPoint>& points) {
  struct Last {
    const store::MetricPoint* point = nullptr;
    bool test = false;
  };
  std::map<std::string, Last> last;
  for (const store::MetricPoint& p : points) {
    Last& l = last[p.name];
    bool test = p.group == "test";
    if (l.point == nullptr || (test && !l.test) ||
        (test == l.test &&
         (p.group == l.point->group ? p.step >= l.point->step : p.time >= l.point->time))) {
      l.point = &p;
      l.test = test;
    }
  }
  Json out = Json::object();
  for (const auto& [name, l] : last) {
    if (std::isfinite(l.point->value)) out[name] = l.point->value;
  }
  return out;
}

// The signature kiln.save_model saves inside a TorchScript file (nullopt when it has none
// or the bytes are not TorchScript: the file's own check reports that).
absl::StatusOr<std::optional<Json>> SignatureInside(const std::string& name,
                                                    std::string_view bytes) {
  absl::StatusOr<std::optional<std::string>> text = serving::EmbeddedSignature(bytes);
  if (!text.ok() || !text->has_value()) return std::nullopt;
  absl::StatusOr<Json> parsed = base::ParseJson(**text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the signature saved inside ", name,
                                                   " is not JSON: ", parsed.status().message(),
                                                   "; pass \"signature\" to override it"));
  }
  return std::optional<Json>(*std::move(parsed));
}

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

}  // namespace

absl::Status CheckTorchScriptFile(std::string_view name, std::string_view bytes) {
  return serving::CheckTorchScript(name, bytes);
}

absl::StatusOr<RegisterModelRequest> ParseRegisterModelRequest(const Json& body,
                                                               bool allow_no_source) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        "the body must be a JSON object, e.g. {\"name\": \"fashion-mlp\", \"job_id\": 12}");
  }
  static const std::set<std::string> kKnown = {"name",      "description", "job_id",    "path",
                                               "signature", "metrics",     "package_id"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (!kKnown.count(it.key())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", it.key(), "\"; the fields are ", absl::StrJoin(kKnown, ", ")));
    }
  }
  RegisterModelRequest r;
  KILN_ASSIGN_OR_RETURN(r.name, base::GetString(body, "name"));
  KILN_RETURN_IF_ERROR(ValidateName(r.name));
  if (body.contains("description") && !body["description"].is_null()) {
    KILN_ASSIGN_OR_RETURN(r.description, base::GetString(body, "description"));
    if (r.description->size() > 4096) {
      return absl::InvalidArgumentError("description is longer than 4096 characters");
    }
  }
  if (body.contains("job_id") && !body["job_id"].is_null()) {
    KILN_ASSIGN_OR_RETURN(int64_t job_id, base::GetInt(body, "job_id"));
    if (job_id <= 0) return absl::InvalidArgumentError("job_id must be a positive job id");
    r.job_id = job_id;
  }
  KILN_ASSIGN_OR_RETURN(r.path, base::GetStringOr(body, "path", "model/model.pt"));
  KILN_RETURN_IF_ERROR(ValidateArtifactPath(r.path));
  if (body.contains("package_id") && !body["package_id"].is_null()) {
    KILN_ASSIGN_OR_RETURN(r.package_id, base::GetString(body, "package_id"));
  }
  if (r.job_id && r.package_id) {
    return absl::InvalidArgumentError(
        "give either job_id (register a job's saved model) or package_id (an uploaded file), "
        "not both");
  }
  if (!r.job_id && !r.package_id && !allow_no_source) {
    return absl::InvalidArgumentError(
        "say where the model comes from: \"job_id\" of a finished job that saved "
        "$RESULT_DIR/model/model.pt, \"package_id\" of an uploaded TorchScript file, or "
        "upload it as multipart/form-data with the file in \"file\" and this JSON in \"data\"");
  }
  if (body.contains("path") && !r.job_id) {
    return absl::InvalidArgumentError("path names an artifact of a job: it needs job_id");
  }
  if (body.contains("signature") && !body["signature"].is_null()) {
    r.signature = body["signature"];
  }
  if (body.contains("metrics") && !body["metrics"].is_null()) {
    KILN_ASSIGN_OR_RETURN(r.metrics, ValidateMetrics(body["metrics"]));
  }
  return r;
}

Json ModelVersionToJson(const store::ModelRecord& model, const store::ModelVersionRecord& version) {
  return {
      {"model", model.name},
      {"model_id", model.id},
      {"version", version.version},
      {"signature", ParseOr(version.signature_json, Json::object())},
      {"metrics", ParseOr(version.metrics_json, Json::object())},
      {"lineage", ParseOr(version.lineage_json, Json::object())},
      {"file",
       {{"name", version.file_name}, {"size", version.size}, {"package_id", version.package_id}}},
      {"created_at", base::FormatIso8601(version.created_at)}};
}

Json ModelToJson(const ModelView& view, bool all_versions) {
  const store::ModelRecord& m = view.model;
  Json out = {{"id", m.id},
              {"name", m.name},
              {"user", m.username},
              {"description", m.description},
              {"created_at", base::FormatIso8601(m.created_at)},
              {"latest_version",
               view.versions.empty() ? Json(nullptr) : Json(view.versions.back().version)},
              {"latest", view.versions.empty() ? Json(nullptr)
                                               : ModelVersionToJson(m, view.versions.back())}};
  if (all_versions) {
    Json versions = Json::array();
    for (const auto& v : view.versions) versions.push_back(ModelVersionToJson(m, v));
    out["versions"] = std::move(versions);
  }
  return out;
}

// ---------------------------------------------------------------- ModelRegistry

struct ModelRegistry::JobSource {
  store::PackageRecord file;
  std::optional<Json> signature;  // from the artifact beside the model, or inside it
  std::string signature_source;   // where it came from, for messages
  Json metrics = Json::object();
  Json lineage = Json::object();
};

ModelRegistry::ModelRegistry(store::Store& store, JobController& jobs, const base::Clock& clock,
                             std::string data_dir)
    : store_(store), jobs_(jobs), clock_(clock), data_dir_(std::move(data_dir)) {}

std::string ModelRegistry::ContentPath(const store::ModelVersionRecord& version) const {
  return absl::StrCat(data_dir_, "/packages/", version.package_id);
}

absl::StatusOr<ModelRegistry::JobSource> ModelRegistry::FromJob(const auth::Principal& who,
                                                                int64_t job_id,
                                                                const std::string& path) {
  KILN_ASSIGN_OR_RETURN(store::JobRecord job, jobs_.GetJob(who, job_id));
  if (job.state != store::JobState::kFinished) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", store::JobStateName(job.state),
                     ": only a FINISHED job's model can be registered"));
  }
  KILN_ASSIGN_OR_RETURN(std::vector<store::ArtifactRecord> artifacts, store_.ListArtifacts(job_id));
  const store::ArtifactRecord* model = nullptr;
  const store::ArtifactRecord* signature = nullptr;
  std::string signature_path = absl::StrCat(Dirname(path), "signature.json");
  for (const auto& a : artifacts) {
    if (a.path == path) model = &a;
    if (a.path == signature_path) signature = &a;
  }
  if (model == nullptr) {
    std::vector<std::string> saved;
    for (const auto& a : artifacts) saved.push_back(a.path);
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " saved no \"", path,
                     "\" (its artifacts: ", saved.empty() ? "none" : absl::StrJoin(saved, ", "),
                     "); the workload must write its TorchScript model to $RESULT_DIR/", path,
                     ", e.g. with kiln.save_model(model, example_input)"));
  }
  JobSource out;
  KILN_ASSIGN_OR_RETURN(out.file, store_.GetPackage(model->package_id));
  KILN_ASSIGN_OR_RETURN(std::string bytes,
                        base::ReadFile(absl::StrCat(data_dir_, "/packages/", out.file.id)));
  if (absl::Status s = CheckTorchScriptFile(path, bytes); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job ", job_id, ": ", s.message()));
  }
  if (signature != nullptr) {
    absl::StatusOr<std::string> text =
        base::ReadFile(absl::StrCat(data_dir_, "/packages/", signature->package_id));
    if (!text.ok()) return text.status();
    absl::StatusOr<Json> parsed = base::ParseJson(*text);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("job ", job_id, "'s ", signature_path,
                                                     " is not JSON: ", parsed.status().message(),
                                                     "; pass \"signature\" to override it"));
    }
    out.signature = *std::move(parsed);
    out.signature_source = absl::StrCat("the job's ", signature_path);
  } else {
    KILN_ASSIGN_OR_RETURN(out.signature, SignatureInside(path, bytes));
    out.signature_source = absl::StrCat("the signature saved inside the job's ", path);
  }
  KILN_ASSIGN_OR_RETURN(std::vector<store::MetricPoint> points,
                        store_.GetMetrics(job_id, std::nullopt));
  out.metrics = FinalMetrics(points);

  Json spec = ParseOr(job.spec_json, Json::object());
  Json lineage = {{"source", "job"},
                  {"job_id", job.id},
                  {"job_name", job.name},
                  {"path", path},
                  {"hyperparameters", spec.value("config", Json::object())}};
  Json env = spec.value("env", Json::object());
  auto id_from_env = [&](const char* var, const char* field) {
    int64_t value = 0;
    if (env.is_object() && env.contains(var) && env[var].is_string() &&
        absl::SimpleAtoi(env[var].get<std::string>(), &value)) {
      lineage[field] = value;
    }
  };
  id_from_env("KILN_EXPERIMENT_ID", "experiment_id");
  id_from_env("KILN_TRIAL_ID", "trial");
  out.lineage = std::move(lineage);
  return out;
}

absl::StatusOr<ModelView> ModelRegistry::Register(const auth::Principal& who,
                                                  RegisterModelRequest request) {
  if (!who.is_user()) {
    return absl::PermissionDeniedError("only users can register models (not task tokens)");
  }
  KILN_RETURN_IF_ERROR(ValidateName(request.name));

  // Everything is checked before anything is written: a refused request leaves no model.
  std::optional<store::ModelRecord> existing;
  if (auto found = store_.GetModelByName(request.name); found.ok()) {
    if (found->user_id != who.user_id && !who.admin) {
      return absl::AlreadyExistsError(absl::StrCat("model \"", request.name,
                                                   "\" already exists (another user's); pick "
                                                   "another name"));
    }
    existing = *std::move(found);
  } else if (!absl::IsNotFound(found.status())) {
    return found.status();
  }

  store::ModelVersionRecord version;
  std::optional<Json> signature = request.signature;
  std::string signature_source;
  Json metrics = Json::object();
  Json lineage;
  if (request.job_id) {
    KILN_ASSIGN_OR_RETURN(JobSource source, FromJob(who, *request.job_id, request.path));
    version.package_id = source.file.id;
    version.file_name = source.file.name;
    version.size = source.file.size;
    if (!signature) {
      signature = std::move(source.signature);
      signature_source = std::move(source.signature_source);
    }
    metrics = std::move(source.metrics);
    lineage = std::move(source.lineage);
  } else if (request.package_id) {
    absl::StatusOr<store::PackageRecord> file = store_.GetPackage(*request.package_id);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat("no package \"", *request.package_id,
                                              "\"; upload the file with POST /api/v1/packages"));
    }
    if (!file.ok()) return file.status();
    if (file->kind != "file") {
      return absl::InvalidArgumentError(
          absl::StrCat("package \"", *request.package_id, "\" is a ", file->kind,
                       " archive; a model version is one TorchScript file (e.g. model.pt)"));
    }
    version.package_id = file->id;
    version.file_name = file->name;
    version.size = file->size;
    lineage = {{"source", "upload"}};
    if (!signature) {
      KILN_ASSIGN_OR_RETURN(std::string bytes, base::ReadFile(ContentPath(version)));
      KILN_ASSIGN_OR_RETURN(signature, SignatureInside(file->name, bytes));
      signature_source = absl::StrCat("the signature saved inside ", file->name);
    }
  } else {
    return absl::InvalidArgumentError("say where the model comes from: job_id or package_id");
  }
  if (!signature) {
    return absl::InvalidArgumentError(
        absl::StrCat("model \"", request.name, "\" has no signature: ", kSignatureHelp));
  }
  // The parser names the field ("signature.inputs[0].dtype ..."); say whose it was.
  KILN_ASSIGN_OR_RETURN(
      Json normalized,
      NormalizeSignature(*signature, request.signature
                                         ? ""
                                         : absl::StrCat(signature_source,
                                                        " (pass \"signature\" to override it): ")));
  if (request.metrics) metrics = *request.metrics;
  version.signature_json = base::DumpJson(normalized);
  version.metrics_json = base::DumpJson(metrics);
  version.lineage_json = base::DumpJson(lineage);
  version.created_at = clock_.NowMicros();

  bool created = false;
  store::ModelRecord model;
  if (existing) {
    model = *std::move(existing);
  } else {
    store::ModelRecord fresh;
    fresh.name = request.name;
    fresh.user_id = who.user_id;
    fresh.username = who.username;
    fresh.description = request.description.value_or("");
    fresh.created_at = version.created_at;
    absl::StatusOr<store::ModelRecord> made = store_.CreateModel(std::move(fresh));
    if (absl::IsAlreadyExists(made.status())) {
      return absl::AlreadyExistsError(absl::StrCat("model \"", request.name, "\" already exists"));
    }
    if (!made.ok()) return made.status();
    model = *std::move(made);
    created = true;
  }
  version.model_id = model.id;
  absl::StatusOr<store::ModelVersionRecord> added = store_.AddModelVersion(std::move(version));
  if (!added.ok()) {
    // A model is never left without its first version.
    if (created) (void)store_.DeleteModel(model.id);
    return added.status();
  }
  if (model.username.empty()) model.username = who.username;
  return ModelView{std::move(model), {*std::move(added)}};
}

absl::StatusOr<store::ModelRecord> ModelRegistry::Resolve(const auth::Principal& who,
                                                          const std::string& name_or_id) {
  if (!who.is_user()) {
    return absl::PermissionDeniedError("only users can read the model registry");
  }
  int64_t id = 0;
  absl::StatusOr<store::ModelRecord> model =
      absl::SimpleAtoi(name_or_id, &id) ? store_.GetModel(id) : store_.GetModelByName(name_or_id);
  // Someone else's model reads as missing, as jobs do, unless the caller is an admin.
  if (absl::IsNotFound(model.status()) ||
      (model.ok() && model->user_id != who.user_id && !who.admin)) {
    return absl::NotFoundError(absl::StrCat("no model \"", name_or_id, "\""));
  }
  return model;
}

absl::StatusOr<std::vector<ModelView>> ModelRegistry::List(const auth::Principal& who) {
  if (!who.is_user()) {
    return absl::PermissionDeniedError("only users can read the model registry");
  }
  std::optional<int64_t> user;
  if (!who.admin) user = who.user_id;
  KILN_ASSIGN_OR_RETURN(std::vector<store::ModelRecord> models, store_.ListModels(user));
  std::vector<ModelView> out;
  out.reserve(models.size());
  for (store::ModelRecord& m : models) {
    KILN_ASSIGN_OR_RETURN(std::vector<store::ModelVersionRecord> versions,
                          store_.ListModelVersions(m.id));
    ModelView view{std::move(m), {}};
    if (!versions.empty()) view.versions.push_back(std::move(versions.back()));
    out.push_back(std::move(view));
  }
  return out;
}

absl::StatusOr<ModelView> ModelRegistry::Get(const auth::Principal& who,
                                             const std::string& name_or_id) {
  KILN_ASSIGN_OR_RETURN(store::ModelRecord model, Resolve(who, name_or_id));
  KILN_ASSIGN_OR_RETURN(std::vector<store::ModelVersionRecord> versions,
                        store_.ListModelVersions(model.id));
  std::sort(versions.begin(), versions.end(),
            [](const auto& a, const auto& b) { return a.version < b.version; });
  return ModelView{std::move(model), std::move(versions)};
}

absl::StatusOr<ModelView> ModelRegistry::GetVersion(const auth::Principal& who,
                                                    const std::string& name_or_id,
                                                    int64_t version) {
  KILN_ASSIGN_OR_RETURN(store::ModelRecord model, Resolve(who, name_or_id));
  absl::StatusOr<store::ModelVersionRecord> v = store_.GetModelVersion(model.id, version);
  if (absl::IsNotFound(v.status())) {
    return absl::NotFoundError(absl::StrCat("model \"", model.name, "\" has no version ", version));
  }
  if (!v.ok()) return v.status();
  return ModelView{std::move(model), {*std::move(v)}};
}

absl::Status ModelRegistry::CheckNotDeployed(int64_t model_id, std::optional<int64_t> version) {
  KILN_ASSIGN_OR_RETURN(std::vector<store::DeploymentRecord> deployments,
                        store_.ListDeployments(std::nullopt));
  for (const store::DeploymentRecord& d : deployments) {
    if (d.model_id != model_id || d.state == store::DeploymentState::kStopped) continue;
    bool uses = !version || d.version == *version;
    if (!uses) {
      // During a rollout the old version's replicas still serve.
      KILN_ASSIGN_OR_RETURN(std::vector<store::ReplicaRecord> replicas, store_.ListReplicas(d.id));
      for (const auto& r : replicas) uses = uses || r.version == *version;
    }
    if (uses) {
      return absl::FailedPreconditionError(absl::StrCat(
          version ? absl::StrCat("version ", *version, " of this model") : "this model",
          " is served by deployment \"", d.name, "\" (id ", d.id,
          "); delete the deployment or move it to another version first"));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelRegistry::Delete(const auth::Principal& who, const std::string& name_or_id) {
  KILN_ASSIGN_OR_RETURN(store::ModelRecord model, Resolve(who, name_or_id));
  KILN_RETURN_IF_ERROR(CheckNotDeployed(model.id, std::nullopt));
  return store_.DeleteModel(model.id);
}

absl::Status ModelRegistry::DeleteVersion(const auth::Principal& who, const std::string& name_or_id,
                                          int64_t version) {
  KILN_ASSIGN_OR_RETURN(ModelView view, GetVersion(who, name_or_id, version));
  KILN_RETURN_IF_ERROR(CheckNotDeployed(view.model.id, version));
  return store_.DeleteModelVersion(view.model.id, version);
}

}  // namespace kiln::master
