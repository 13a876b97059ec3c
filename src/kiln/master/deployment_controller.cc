#include "kiln/master/deployment_controller.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"
#include "spdlog/spdlog.h"

namespace kiln::master {
namespace {

using base::Json;
using store::DeploymentRecord;
using store::DeploymentState;
using store::JobRecord;
using store::JobState;

constexpr size_t kMaxNameLength = 128;
constexpr size_t kMaxReasonLength = 2000;
// Log lines quoted in the reason of a replica that ended before it was ready.
constexpr int kReasonLogLines = 4;

bool AllDigits(const std::string& s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// Deployment names appear in URLs (/v2/models/{name}) and job names: letters, digits,
// '-', '_' and '.', starting with a letter or digit, and not all digits (digits address a
// deployment by id).
absl::Status ValidateName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(absl::StrCat("field \"name\" must be 1 to ", kMaxNameLength,
                                                   " characters (letters, digits, - _ .)"));
  }
  if (!absl::ascii_isalnum(name[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"name\" must start with a letter or a digit, got \"", name, "\""));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"name\" may hold only letters, digits, '-', '_' and '.', got \"", name, "\""));
    }
  }
  if (AllDigits(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"name\" must not be all digits (digits address a deployment by id), got \"", name,
        "\""));
  }
  return absl::OkStatus();
}

absl::Status CheckRange(const char* field, int64_t value, int64_t min, int64_t max) {
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", field, "\" must be between ", min, " and ", max, ", got ", value));
  }
  return absl::OkStatus();
}

std::string Truncate(std::string s, size_t n) {
  if (s.size() > n) {
    s.resize(n);
    s += "...";
  }
  return s;
}

std::string DescribeEnd(const JobRecord& job) {
  std::string what;
  if (job.exit_code) {
    what = absl::StrCat("exited with code ", *job.exit_code);
  } else if (job.signal) {
    what = absl::StrCat("was killed by signal ", *job.signal);
  } else {
    what = absl::StrCat("ended ", store::JobStateName(job.state));
  }
  if (!job.reason.empty()) absl::StrAppend(&what, " (", job.reason, ")");
  return what;
}

auth::Principal OwnerOf(const DeploymentRecord& record) {
  auth::Principal p;
  p.kind = auth::Principal::Kind::kUser;
  p.user_id = record.user_id;
  p.username = record.username;
  return p;
}

}  // namespace

DeploymentController::DeploymentController(store::Store& store, JobController& jobs,
                                           serving::RoutingTable& routes, const base::Clock& clock,
                                           DeploymentControllerOptions options)
    : store_(store), jobs_(jobs), routes_(routes), clock_(clock), options_(options) {}

// ---------------------------------------------------------------- state on disk

namespace {

Json KnobsToJsonImpl(int replicas, int slots, int max_batch_size, int64_t max_queue_delay_us,
                     const std::string& secret, std::optional<int64_t> previous_version,
                     int64_t generation) {
  Json j = {{"replicas", replicas},
            {"slots", slots},
            {"max_batch_size", max_batch_size},
            {"max_queue_delay_us", max_queue_delay_us},
            {"secret", secret},
            {"generation", generation}};
  if (previous_version) j["previous_version"] = *previous_version;
  return j;
}

}  // namespace

absl::Status DeploymentController::Save(Live& live) {
  const Knobs& k = live.knobs;
  live.record.spec_json =
      base::DumpJson(KnobsToJsonImpl(k.replicas, k.slots, k.max_batch_size, k.max_queue_delay_us,
                                     k.secret, k.previous_version, k.generation));
  live.record.updated_at = clock_.NowMicros();
  live.record.reason = Truncate(live.record.reason, kMaxReasonLength);
  return store_.UpdateDeployment(live.record);
}

// ---------------------------------------------------------------- recovery

absl::Status DeploymentController::Recover() {
  KILN_ASSIGN_OR_RETURN(std::vector<DeploymentRecord> records,
                        store_.ListDeployments(std::nullopt));
  for (DeploymentRecord& record : records) {
    const int64_t id = record.id;
    Live& live = live_[id];
    live.record = std::move(record);
    if (auto spec = base::ParseJson(live.record.spec_json); spec.ok() && spec->is_object()) {
      Knobs& k = live.knobs;
      k.replicas = static_cast<int>(spec->value("replicas", int64_t{1}));
      k.slots = static_cast<int>(spec->value("slots", int64_t{1}));
      k.max_batch_size = static_cast<int>(spec->value("max_batch_size", int64_t{32}));
      k.max_queue_delay_us = spec->value("max_queue_delay_us", int64_t{0});
      k.secret = spec->value("secret", std::string());
      k.generation = spec->value("generation", int64_t{0});
      if (spec->contains("previous_version") && (*spec)["previous_version"].is_number_integer()) {
        k.previous_version = (*spec)["previous_version"].get<int64_t>();
      }
    }
    if (live.knobs.secret.empty()) live.knobs.secret = base::RandomHexToken(16);
    if (auto model = store_.GetModel(live.record.model_id); model.ok()) {
      live.model_name = model->name;
    }
    if (auto version = store_.GetModelVersion(live.record.model_id, live.record.version);
        version.ok()) {
      live.signature_json = version->signature_json;
    }
    KILN_ASSIGN_OR_RETURN(std::vector<store::ReplicaRecord> replicas, store_.ListReplicas(id));
    for (const store::ReplicaRecord& r : replicas) {
      auto job = store_.GetJob(r.job_id);
      if (!job.ok() || store::IsTerminal(job->state)) {
        // It ended while kilnd was down (or its end was not yet handled).
        (void)store_.DeleteReplica(id, r.job_id);
        continue;
      }
      Replica& replica = live.replicas[r.job_id];
      replica.job_id = r.job_id;
      replica.version = r.version;
      replica.generation = live.knobs.generation;
      if (size_t colon = r.address.rfind(':'); colon != std::string::npos) {
        replica.host = r.address.substr(0, colon);
        replica.ready = absl::SimpleAtoi(r.address.substr(colon + 1), &replica.port);
      }
      replica_of_[r.job_id] = id;
    }
    // Replica jobs started just before a crash, before their replica row was written.
    store::JobFilter filter;
    filter.deployment_id = id;
    filter.states = {JobState::kQueued, JobState::kScheduled, JobState::kRunning};
    filter.limit = 1'000'000;
    KILN_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_.ListJobs(filter));
    for (const JobRecord& job : jobs) {
      if (live.replicas.count(job.id)) continue;
      // Its version is unknown: stop it; Reconcile starts what is missing.
      Replica& replica = live.replicas[job.id];
      replica.job_id = job.id;
      replica.retire_at = clock_.NowMicros();
      replica_of_[job.id] = id;
    }
    live.next_index = static_cast<int>(live.replicas.size()) + 1;
    for (const auto& [job_id, r] : live.replicas) {
      if (r.ready && r.version == live.record.version) live.ever_ready = true;
    }
    if (live.record.state == DeploymentState::kReady && !live.knobs.previous_version) {
      live.ever_ready = true;
    }
    if (live.record.state != DeploymentState::kStopped) PutRoute(live);
  }
  spdlog::info("recovered {} deployments with {} replicas", live_.size(), replica_of_.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- users

absl::StatusOr<store::ModelVersionRecord> DeploymentController::ResolveVersion(
    const auth::Principal& who, const std::string& model, std::optional<int64_t> version,
    store::ModelRecord* model_out) {
  if (model.empty()) {
    return absl::InvalidArgumentError(
        "field \"model\" is required: the name (or id) of a registered model");
  }
  absl::StatusOr<store::ModelRecord> found = absl::NotFoundError("");
  int64_t model_id = 0;
  if (AllDigits(model) && absl::SimpleAtoi(model, &model_id)) {
    found = store_.GetModel(model_id);
  } else {
    found = store_.GetModelByName(model);
  }
  if (!found.ok() || (!who.admin && found->user_id != who.user_id)) {
    if (found.ok() || absl::IsNotFound(found.status())) {
      return absl::NotFoundError(
          absl::StrCat("no model \"", model,
                       "\"; register one first (kiln model register, POST /api/v1/models)"));
    }
    return found.status();
  }
  if (!version) {
    KILN_ASSIGN_OR_RETURN(std::vector<store::ModelVersionRecord> versions,
                          store_.ListModelVersions(found->id));
    if (versions.empty()) {
      return absl::NotFoundError(
          absl::StrCat("model \"", found->name, "\" has no version to deploy"));
    }
    version = versions.back().version;
  }
  if (*version < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"version\" must be a positive version number, got ", *version));
  }
  absl::StatusOr<store::ModelVersionRecord> v = store_.GetModelVersion(found->id, *version);
  if (!v.ok()) {
    if (absl::IsNotFound(v.status())) {
      return absl::NotFoundError(
          absl::StrCat("model \"", found->name, "\" has no version ", *version));
    }
    return v.status();
  }
  if (model_out != nullptr) *model_out = *found;
  return v;
}

absl::StatusOr<DeploymentRecord> DeploymentController::Create(const auth::Principal& who,
                                                              DeploymentSpec spec) {
  if (!who.is_user()) {
    return absl::PermissionDeniedError("only users can create deployments");
  }
  KILN_RETURN_IF_ERROR(ValidateName(spec.name));
  KILN_RETURN_IF_ERROR(CheckRange("replicas", spec.replicas, 1, options_.max_replicas));
  KILN_RETURN_IF_ERROR(CheckRange("slots", spec.slots, 1, options_.max_slots));
  KILN_RETURN_IF_ERROR(
      CheckRange("max_batch_size", spec.max_batch_size, 1, options_.max_batch_size));
  KILN_RETURN_IF_ERROR(
      CheckRange("max_queue_delay_us", spec.max_queue_delay_us, 0, kMaxQueueDelayMicros));
  store::ModelRecord model;
  KILN_ASSIGN_OR_RETURN(store::ModelVersionRecord version,
                        ResolveVersion(who, spec.model, spec.version, &model));
  for (const auto& [id, live] : live_) {
    if (live.record.name != spec.name) continue;
    if (live.record.state == DeploymentState::kStopped) {
      return absl::AlreadyExistsError(absl::StrCat(
          "deployment \"", spec.name,
          "\" is being deleted (its replicas are draining); try again in a few seconds"));
    }
    return absl::AlreadyExistsError(
        absl::StrCat("a deployment named \"", spec.name,
                     "\" already exists; choose another name or update it (kiln deploy update)"));
  }
  // Refuse up front what could never run, before anything is stored.
  JobSpec probe;
  probe.name = spec.name;
  probe.command = {"kiln-serve"};
  probe.resources.slots = spec.slots;
  probe.package = PackageRef{version.package_id, ""};
  KILN_RETURN_IF_ERROR(jobs_.CheckSubmittable(who, probe));

  DeploymentRecord record;
  record.name = spec.name;
  record.user_id = who.user_id;
  record.username = who.username;
  record.model_id = model.id;
  record.version = version.version;
  record.state = DeploymentState::kPending;
  record.created_at = clock_.NowMicros();
  record.updated_at = record.created_at;
  Knobs knobs;
  knobs.replicas = spec.replicas;
  knobs.slots = spec.slots;
  knobs.max_batch_size = spec.max_batch_size;
  knobs.max_queue_delay_us = spec.max_queue_delay_us;
  knobs.secret = base::RandomHexToken(16);
  record.spec_json =
      base::DumpJson(KnobsToJsonImpl(knobs.replicas, knobs.slots, knobs.max_batch_size,
                                     knobs.max_queue_delay_us, knobs.secret, std::nullopt, 0));
  KILN_ASSIGN_OR_RETURN(record, store_.CreateDeployment(std::move(record)));
  record.username = who.username;
  spdlog::info("deployment {} \"{}\": model {} version {}, {} replicas", record.id,
               std::string(record.name), std::string(model.name), record.version, knobs.replicas);
  const int64_t id = record.id;
  Live& live = live_[id];
  live.record = std::move(record);
  live.knobs = std::move(knobs);
  live.model_name = model.name;
  live.signature_json = version.signature_json;
  Reconcile(live);
  return live_.at(id).record;
}

absl::StatusOr<DeploymentController::Live*> DeploymentController::Access(const auth::Principal& who,
                                                                         int64_t id) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot use deployments");
  auto it = live_.find(id);
  if (it == live_.end() || (!who.admin && it->second.record.user_id != who.user_id)) {
    return absl::NotFoundError(absl::StrCat("no deployment with id ", id));
  }
  return &it->second;
}

absl::StatusOr<DeploymentRecord> DeploymentController::Get(const auth::Principal& who,
                                                           const std::string& id_or_name) {
  int64_t id = 0;
  if (AllDigits(id_or_name) && absl::SimpleAtoi(id_or_name, &id)) {
    KILN_ASSIGN_OR_RETURN(Live * live, Access(who, id));
    return live->record;
  }
  for (auto& [live_id, live] : live_) {
    if (live.record.name == id_or_name) {
      auto found = Access(who, live_id);
      if (found.ok()) return (*found)->record;
      if (!absl::IsNotFound(found.status())) return found.status();
    }
  }
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot use deployments");
  return absl::NotFoundError(absl::StrCat("no deployment named \"", id_or_name, "\""));
}

absl::StatusOr<std::vector<DeploymentRecord>> DeploymentController::List(
    const auth::Principal& who) {
  if (!who.is_user()) return absl::PermissionDeniedError("tasks cannot list deployments");
  std::vector<DeploymentRecord> out;
  for (const auto& [id, live] : live_) {
    if (who.admin || live.record.user_id == who.user_id) out.push_back(live.record);
  }
  return out;
}

absl::StatusOr<DeploymentRecord> DeploymentController::Update(const auth::Principal& who,
                                                              int64_t id,
                                                              const DeploymentUpdate& update) {
  KILN_ASSIGN_OR_RETURN(Live * found, Access(who, id));
  Live& live = *found;
  if (live.record.state == DeploymentState::kStopped) {
    return absl::FailedPreconditionError(
        absl::StrCat("deployment \"", live.record.name, "\" is being deleted"));
  }
  if (update.replicas) {
    KILN_RETURN_IF_ERROR(CheckRange("replicas", *update.replicas, 1, options_.max_replicas));
  }
  if (update.max_batch_size) {
    KILN_RETURN_IF_ERROR(
        CheckRange("max_batch_size", *update.max_batch_size, 1, options_.max_batch_size));
  }
  if (update.max_queue_delay_us) {
    KILN_RETURN_IF_ERROR(
        CheckRange("max_queue_delay_us", *update.max_queue_delay_us, 0, kMaxQueueDelayMicros));
  }
  std::optional<store::ModelVersionRecord> new_version;
  if (update.version && *update.version != live.record.version) {
    auth::Principal owner = OwnerOf(live.record);
    owner.admin = who.admin;
    KILN_ASSIGN_OR_RETURN(new_version, ResolveVersion(owner, std::to_string(live.record.model_id),
                                                      update.version, nullptr));
  }
  const bool knobs_change =
      (update.max_batch_size && *update.max_batch_size != live.knobs.max_batch_size) ||
      (update.max_queue_delay_us && *update.max_queue_delay_us != live.knobs.max_queue_delay_us);
  const bool serving = std::any_of(live.replicas.begin(), live.replicas.end(), [](const auto& r) {
    return r.second.ready && !r.second.retire_at;
  });
  std::vector<std::string> what;
  if (live.record.state == DeploymentState::kFailed) {
    // A new request is a fresh start: the failure's count begins again.
    live.record.state = DeploymentState::kPending;
    live.ever_ready = false;
    what.push_back("restarted after FAILED");
  }
  live.restarts_without_ready = 0;
  if (update.replicas) {
    live.knobs.replicas = *update.replicas;
    what.push_back(absl::StrCat("replicas ", *update.replicas));
  }
  if (knobs_change) {
    if (update.max_batch_size) live.knobs.max_batch_size = *update.max_batch_size;
    if (update.max_queue_delay_us) live.knobs.max_queue_delay_us = *update.max_queue_delay_us;
    ++live.knobs.generation;
    what.push_back(absl::StrCat("max_batch_size ", live.knobs.max_batch_size,
                                ", max_queue_delay_us ", live.knobs.max_queue_delay_us));
  }
  if (new_version) {
    // Mid-rollout, the version to fall back to stays the one that served before it.
    if (serving && !live.knobs.previous_version) live.knobs.previous_version = live.record.version;
    if (!serving) live.knobs.previous_version.reset();
    live.record.version = new_version->version;
    live.signature_json = new_version->signature_json;
    live.ever_ready = false;
    what.push_back(absl::StrCat("version ", new_version->version));
  }
  if ((new_version || knobs_change) && serving) {
    live.record.state = DeploymentState::kUpdating;
    live.record.reason.clear();
  }
  if (!what.empty()) {
    KILN_RETURN_IF_ERROR(Save(live));
    spdlog::info("deployment {} \"{}\" updated by {}: {}", id, std::string(live.record.name),
                 std::string(who.username), absl::StrJoin(what, "; "));
  }
  Reconcile(live);
  return live_.at(id).record;
}

absl::StatusOr<DeploymentRecord> DeploymentController::Delete(const auth::Principal& who,
                                                              int64_t id) {
  KILN_ASSIGN_OR_RETURN(Live * found, Access(who, id));
  Live& live = *found;
  DeploymentRecord out;
  if (live.record.state != DeploymentState::kStopped) {
    live.record.state = DeploymentState::kStopped;
    live.record.reason = absl::StrCat("deleted by ", who.username);
    KILN_RETURN_IF_ERROR(Save(live));
    // Out of routing before any replica is stopped: nothing new reaches a draining replica.
    routes_.Remove(id);
    spdlog::info("deployment {} \"{}\" deleted by {}", id, std::string(live.record.name),
                 std::string(who.username));
  }
  out = live.record;
  Reconcile(live);  // may erase `live`
  return out;
}

// ---------------------------------------------------------------- replicas

absl::Status DeploymentController::ReplicaReady(const auth::Principal& who, int64_t deployment_id,
                                                int64_t job_id, const std::string& host, int port) {
  if (who.kind != auth::Principal::Kind::kTask || who.job_id != job_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "only replica job ", job_id, "'s own task token (its KILN_TOKEN) may announce it"));
  }
  auto it = live_.find(deployment_id);
  if (it == live_.end() || !it->second.replicas.count(job_id)) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " is not a live replica of deployment ", deployment_id));
  }
  if (host.empty() || port < 1 || port > 65535) {
    return absl::InvalidArgumentError("a replica's address needs a host and a port (1-65535)");
  }
  Live& live = it->second;
  Replica& replica = live.replicas.at(job_id);
  if (replica.retire_at || replica.stop_sent || live.record.state == DeploymentState::kStopped ||
      live.record.state == DeploymentState::kFailed) {
    return absl::OkStatus();  // on its way out: never routed
  }
  replica.host = host;
  replica.port = port;
  replica.ready = true;
  const int64_t now = clock_.NowMicros();
  KILN_RETURN_IF_ERROR(store_.PutReplica(
      {deployment_id, job_id, replica.version, absl::StrCat(host, ":", port), now}));
  spdlog::info("deployment {}: replica job {} (version {}) ready at {}:{}", deployment_id, job_id,
               replica.version, host, port);
  live.restarts_without_ready = 0;
  if (replica.version == live.record.version) {
    live.ever_ready = true;
    if (live.record.state == DeploymentState::kPending) {
      live.record.state = DeploymentState::kReady;
      live.record.reason.clear();
      KILN_RETURN_IF_ERROR(Save(live));
    }
  }
  Reconcile(live);
  return absl::OkStatus();
}

absl::Status DeploymentController::ReplicaFailed(const auth::Principal& who, int64_t deployment_id,
                                                 int64_t job_id, const std::string& reason) {
  if (who.kind != auth::Principal::Kind::kTask || who.job_id != job_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "only replica job ", job_id, "'s own task token (its KILN_TOKEN) may report it"));
  }
  auto it = live_.find(deployment_id);
  if (it == live_.end() || !it->second.replicas.count(job_id)) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " is not a live replica of deployment ", deployment_id));
  }
  Replica& replica = it->second.replicas.at(job_id);
  replica.failure = Truncate(reason, kMaxReasonLength);
  spdlog::warn("deployment {}: replica job {} failed: {}", deployment_id, job_id, replica.failure);
  return absl::OkStatus();
}

void DeploymentController::OnReplicaUnreachable(int64_t deployment_id, int64_t job_id) {
  auto it = live_.find(deployment_id);
  if (it == live_.end()) return;
  auto r = it->second.replicas.find(job_id);
  if (r == it->second.replicas.end()) return;
  r->second.unroutable_until = clock_.NowMicros() + options_.unreachable_cooldown_micros;
  PutRoute(it->second);
}

void DeploymentController::OnJobEnded(int64_t job_id) {
  auto of = replica_of_.find(job_id);
  if (of == replica_of_.end()) return;
  const int64_t deployment_id = of->second;
  replica_of_.erase(of);
  auto it = live_.find(deployment_id);
  if (it == live_.end()) return;
  absl::StatusOr<JobRecord> job = store_.GetJob(job_id);
  if (!job.ok()) {
    spdlog::error("deployment {}: replica job {}: {}", deployment_id, job_id,
                  job.status().ToString());
    JobRecord unknown;
    unknown.id = job_id;
    unknown.state = JobState::kFailed;
    job = unknown;
  }
  OnReplicaEnded(it->second, job_id, *job);
}

std::string DeploymentController::LastLogLines(int64_t job_id) const {
  absl::StatusOr<int64_t> last = store_.GetLastLogSeq(job_id);
  if (!last.ok() || *last == 0) return "";
  auto lines =
      store_.GetLogLines(job_id, std::max<int64_t>(0, *last - kReasonLogLines), kReasonLogLines);
  if (!lines.ok()) return "";
  std::vector<std::string> texts;
  for (const store::LogLine& l : *lines) {
    std::string t(absl::StripAsciiWhitespace(l.text));
    if (!t.empty()) texts.push_back(std::move(t));
  }
  return absl::StrJoin(texts, " | ");
}

void DeploymentController::OnReplicaEnded(Live& live, int64_t job_id, const JobRecord& job) {
  auto r = live.replicas.find(job_id);
  if (r == live.replicas.end()) return;
  const Replica replica = r->second;
  live.replicas.erase(r);
  const int64_t id = live.record.id;
  if (absl::Status s = store_.DeleteReplica(id, job_id); !s.ok()) {
    spdlog::error("deployment {}: {}", id, s.ToString());
  }
  const bool planned = replica.retire_at || replica.stop_sent ||
                       live.record.state == DeploymentState::kStopped ||
                       live.record.state == DeploymentState::kFailed;
  if (!planned) {
    std::string why = replica.failure;
    if (why.empty()) {
      why = absl::StrCat("replica job ", job_id, " ", DescribeEnd(job));
      std::string logs = LastLogLines(job_id);
      if (!logs.empty()) absl::StrAppend(&why, ": ", logs);
    } else {
      why = absl::StrCat("replica job ", job_id, ": ", why);
    }
    spdlog::warn("deployment {}: {}", id, why);
    if (!replica.ready && !live.ever_ready && replica.version == live.record.version) {
      if (live.knobs.previous_version && *live.knobs.previous_version != live.record.version) {
        RollBack(live, why);
      } else {
        Fail(live, absl::StrCat("version ", replica.version, " did not start: ", why));
      }
    } else if (++live.restarts_without_ready >= options_.max_restarts_without_ready) {
      Fail(live, absl::StrCat(live.restarts_without_ready,
                              " replicas ended in a row without one becoming ready; last: ", why));
    }
  }
  Reconcile(live);
}

// ---------------------------------------------------------------- the loop

void DeploymentController::Tick() {
  std::vector<int64_t> ids;
  for (const auto& [id, live] : live_) ids.push_back(id);
  for (int64_t id : ids) {
    auto it = live_.find(id);
    if (it != live_.end()) Reconcile(it->second);
  }
}

absl::Status DeploymentController::StartReplica(Live& live, int64_t version) {
  KILN_ASSIGN_OR_RETURN(store::ModelVersionRecord v,
                        store_.GetModelVersion(live.record.model_id, version));
  KILN_ASSIGN_OR_RETURN(Json signature, base::ParseJson(v.signature_json));
  // The agent places a "file" package in the task's folder under the package's name.
  KILN_ASSIGN_OR_RETURN(store::PackageRecord package, store_.GetPackage(v.package_id));
  const std::string model_file = package.name.empty() ? v.file_name : package.name;
  const Knobs& k = live.knobs;
  JobSpec spec;
  spec.name = absl::StrCat(live.record.name, "-replica-", live.next_index);
  spec.command = {"kiln-serve",
                  "--model",
                  model_file,
                  "--signature",
                  "config.json",
                  "--name",
                  live.record.name,
                  "--version",
                  std::to_string(version),
                  "--host",
                  "0.0.0.0",
                  "--max-batch-size",
                  std::to_string(k.max_batch_size),
                  "--max-queue-delay-us",
                  std::to_string(k.max_queue_delay_us)};
  spec.package = PackageRef{v.package_id, ""};
  spec.resources.slots = k.slots;
  spec.env["KILN_DEPLOYMENT_ID"] = std::to_string(live.record.id);
  spec.env["KILN_SERVE_SECRET"] = k.secret;
  spec.config = Json{{"signature", std::move(signature)}};
  KILN_ASSIGN_OR_RETURN(JobRecord job,
                        jobs_.Submit(OwnerOf(live.record), std::move(spec), live.record.id));
  ++live.next_index;
  Replica& replica = live.replicas[job.id];
  replica.job_id = job.id;
  replica.version = version;
  replica.generation = k.generation;
  replica_of_[job.id] = live.record.id;
  KILN_RETURN_IF_ERROR(store_.PutReplica({live.record.id, job.id, version, "", 0}));
  spdlog::info("deployment {}: started replica job {} (version {})", live.record.id, job.id,
               version);
  return absl::OkStatus();
}

void DeploymentController::StopNow(Live& live, Replica& replica, const std::string& why) {
  if (replica.stop_sent) return;
  replica.stop_sent = true;
  if (!replica.retire_at) replica.retire_at = clock_.NowMicros();
  // SIGTERM: kiln-serve answers what it holds, then exits (SIGKILL after the kill grace).
  absl::Status s = jobs_.StopWorker(replica.job_id, why);
  if (!s.ok()) {
    spdlog::error("deployment {}: stopping replica job {}: {}", live.record.id, replica.job_id,
                  s.ToString());
  }
}

void DeploymentController::Retire(Live& live, Replica& replica, const std::string& why) {
  if (replica.retire_at) return;
  replica.retire_at = clock_.NowMicros() + (replica.ready ? options_.retire_grace_micros : 0);
  spdlog::info("deployment {}: retiring replica job {}: {}", live.record.id, replica.job_id, why);
}

void DeploymentController::Fail(Live& live, const std::string& reason) {
  spdlog::error("deployment {} \"{}\" FAILED: {}", live.record.id, std::string(live.record.name),
                reason);
  live.record.state = DeploymentState::kFailed;
  live.record.reason = reason;
  live.knobs.previous_version.reset();
  if (absl::Status s = Save(live); !s.ok()) {
    spdlog::error("deployment {}: {}", live.record.id, s.ToString());
  }
  for (auto& [job_id, replica] : live.replicas) StopNow(live, replica, "deployment failed");
}

void DeploymentController::RollBack(Live& live, const std::string& reason) {
  const int64_t failed = live.record.version;
  const int64_t back = *live.knobs.previous_version;
  live.record.version = back;
  live.knobs.previous_version.reset();
  if (auto v = store_.GetModelVersion(live.record.model_id, back); v.ok()) {
    live.signature_json = v->signature_json;
  }
  live.ever_ready = true;
  live.restarts_without_ready = 0;
  live.record.state = DeploymentState::kReady;
  live.record.reason = absl::StrCat("rollout to version ", failed,
                                    " failed, still serving version ", back, ": ", reason);
  spdlog::warn("deployment {}: {}", live.record.id, live.record.reason);
  if (absl::Status s = Save(live); !s.ok()) {
    spdlog::error("deployment {}: {}", live.record.id, s.ToString());
  }
  for (auto& [job_id, replica] : live.replicas) {
    if (replica.version == failed) StopNow(live, replica, "rollout failed");
  }
}

void DeploymentController::Reconcile(Live& live) {
  const int64_t now = clock_.NowMicros();
  const int64_t id = live.record.id;
  const DeploymentState state = live.record.state;
  if (state == DeploymentState::kStopped || state == DeploymentState::kFailed) {
    for (auto& [job_id, replica] : live.replicas) {
      Retire(live, replica,
             state == DeploymentState::kStopped ? "deployment deleted" : "deployment failed");
    }
  }
  // Retired replicas whose grace is over are stopped (they left routing at retirement).
  for (auto& [job_id, replica] : live.replicas) {
    if (replica.retire_at && *replica.retire_at <= now && !replica.stop_sent) {
      StopNow(live, replica,
              state == DeploymentState::kStopped ? "deployment deleted" : "replica retired");
    }
  }
  if (state == DeploymentState::kStopped) {
    if (live.replicas.empty()) {
      if (absl::Status s = store_.DeleteDeployment(id); !s.ok()) {
        spdlog::error("deployment {}: {}", id, s.ToString());
        return;
      }
      routes_.Remove(id);
      spdlog::info("deployment {} \"{}\" removed: every replica has stopped", id,
                   std::string(live.record.name));
      live_.erase(id);
    }
    return;
  }
  if (state == DeploymentState::kFailed) {
    PutRoute(live);
    return;
  }

  const int64_t target = live.record.version;
  const int n = live.knobs.replicas;
  std::vector<Replica*> current, old;
  for (auto& [job_id, replica] : live.replicas) {
    if (replica.retire_at) continue;
    if (replica.version == target && replica.generation == live.knobs.generation) {
      current.push_back(&replica);
    } else {
      old.push_back(&replica);
    }
  }
  auto count_ready = [](const std::vector<Replica*>& rs) {
    return static_cast<int>(
        std::count_if(rs.begin(), rs.end(), [](Replica* r) { return r->ready; }));
  };
  const int current_ready = count_ready(current);
  const int current_starting = static_cast<int>(current.size()) - current_ready;
  int to_start = 0;
  if (old.empty()) {
    to_start = std::max(0, n - static_cast<int>(current.size()));
    // Surplus: replicas still starting go first, then the newest.
    if (static_cast<int>(current.size()) > n) {
      std::stable_sort(current.begin(), current.end(), [](Replica* a, Replica* b) {
        if (a->ready != b->ready) return !a->ready;
        return a->job_id > b->job_id;
      });
      for (size_t i = 0; i < current.size() - n; ++i) {
        Retire(live, *current[i], absl::StrCat("scaled down to ", n, " replicas"));
      }
    }
  } else {
    // A rollout: one new replica at a time; each one ready lets one old one go, so the
    // ready count never drops below the target while the old ones can still serve.
    if (static_cast<int>(current.size()) < n && current_starting == 0) to_start = 1;
    const int keep_old = std::max(0, n - current_ready);
    if (static_cast<int>(old.size()) > keep_old) {
      std::stable_sort(old.begin(), old.end(), [](Replica* a, Replica* b) {
        if (a->ready != b->ready) return !a->ready;
        return a->job_id < b->job_id;
      });
      for (size_t i = 0; i < old.size() - keep_old; ++i) {
        Retire(live, *old[i], absl::StrCat("replaced by version ", target));
      }
    }
  }
  for (int i = 0; i < to_start; ++i) {
    if (absl::Status s = StartReplica(live, target); !s.ok()) {
      // Retried at the next tick (an agent may come back).
      spdlog::error("deployment {}: cannot start a replica: {}", id, s.ToString());
      break;
    }
  }
  // Retirement may have happened above: stop those whose grace is already over.
  for (auto& [job_id, replica] : live.replicas) {
    if (replica.retire_at && *replica.retire_at <= now && !replica.stop_sent) {
      StopNow(live, replica, "replica retired");
    }
  }
  if (old.empty() && current_ready >= n && live.record.state == DeploymentState::kUpdating) {
    live.record.state = DeploymentState::kReady;
    live.knobs.previous_version.reset();
    if (absl::Status s = Save(live); !s.ok()) spdlog::error("deployment {}: {}", id, s.ToString());
    spdlog::info("deployment {}: rollout to version {} done", id, target);
  }
  PutRoute(live);
}

void DeploymentController::PutRoute(const Live& live) {
  serving::DeploymentRoute route;
  route.id = live.record.id;
  route.name = live.record.name;
  route.user_id = live.record.user_id;
  route.secret = live.knobs.secret;
  route.slots = live.knobs.slots;
  route.model_name = live.model_name;
  route.version = live.record.version;
  route.signature_json = live.signature_json;
  route.state = store::DeploymentStateName(live.record.state);
  route.reason = live.record.reason;
  const int64_t now = clock_.NowMicros();
  if (live.record.state != DeploymentState::kFailed) {
    for (const auto& [job_id, r] : live.replicas) {
      if (!r.ready || r.retire_at || r.stop_sent || r.unroutable_until > now) continue;
      route.replicas.push_back({job_id, r.version, r.host, r.port});
    }
  }
  routes_.Put(std::move(route));
}

// ---------------------------------------------------------------- views

Json DeploymentController::DescribeDeployment(const DeploymentRecord& record) const {
  Json out = {{"id", record.id},
              {"name", record.name},
              {"user", record.username},
              {"model_id", record.model_id},
              {"version", record.version},
              {"state", store::DeploymentStateName(record.state)},
              {"reason", record.reason},
              {"created_at", base::FormatIso8601(record.created_at)},
              {"updated_at", base::FormatIso8601(record.updated_at)}};
  auto it = live_.find(record.id);
  Json replicas = Json::array();
  int ready = 0;
  if (it != live_.end()) {
    const Live& live = it->second;
    const Knobs& k = live.knobs;
    out["model"] = live.model_name;
    out["spec"] = {{"replicas", k.replicas},
                   {"slots", k.slots},
                   {"max_batch_size", k.max_batch_size},
                   {"max_queue_delay_us", k.max_queue_delay_us}};
    if (k.previous_version) out["previous_version"] = *k.previous_version;
    auto sig = base::ParseJson(live.signature_json);
    out["signature"] = sig.ok() ? *sig : Json(nullptr);
    for (const auto& [job_id, r] : live.replicas) {
      const char* state = r.retire_at ? "STOPPING" : r.ready ? "READY" : "STARTING";
      if (r.ready && !r.retire_at) ++ready;
      replicas.push_back({{"job_id", job_id},
                          {"version", r.version},
                          {"address", r.ready ? absl::StrCat(r.host, ":", r.port) : ""},
                          {"state", state}});
    }
  }
  out["replicas"] = std::move(replicas);
  out["ready_replicas"] = ready;
  out["endpoints"] = {
      {"predict", absl::StrCat("/api/v1/deployments/", record.id, "/predict")},
      {"kserve_v2", absl::StrCat("/v2/models/", record.name, "/infer")},
      {"watson_ml", absl::StrCat("/ml/v4/deployments/", record.id, "/predictions")}};
  return out;
}

}  // namespace kiln::master
