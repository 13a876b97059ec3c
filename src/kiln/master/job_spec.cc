#include "kiln/master/job_spec.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"

namespace kiln::master {
namespace {

constexpr size_t kMaxArgs = 4096;
constexpr size_t kMaxArgBytes = 128 << 10;
constexpr int kMaxSlots = 4096;
constexpr int kMaxGpus = 256;
constexpr int kMaxWorkers = 1024;
// The config is copied, dumped and compared recursively on its way to config.json, so a
// deeply nested one (a 16 MiB body holds millions of levels) would overflow the stack.
constexpr int kMaxConfigDepth = 64;

// True if `root` has containers nested more than `limit` deep. Iterative, for the reason
// above.
bool NestedDeeperThan(const base::Json& root, int limit) {
  std::vector<std::pair<const base::Json*, int>> pending = {{&root, 1}};
  while (!pending.empty()) {
    auto [json, depth] = pending.back();
    pending.pop_back();
    if (!json->is_structured()) continue;
    if (depth > limit) return true;
    for (const base::Json& child : *json) pending.push_back({&child, depth + 1});
  }
  return false;
}

bool IsEnvName(const std::string& name) {
  if (name.empty() || name.size() > 256) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateWorkdir(const std::string& workdir) {
  if (workdir.empty()) return absl::OkStatus();
  bool bad = workdir.size() > 1024 || workdir[0] == '/' || workdir.find('\0') != std::string::npos;
  for (absl::string_view part : absl::StrSplit(workdir, '/')) {
    bad = bad || part == ".." || part == ".";
  }
  if (bad) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"workdir\" (\"", workdir.substr(0, 64),
        "\") must be a relative folder inside the package, without \"..\", e.g. \"src\""));
  }
  return absl::OkStatus();
}

namespace {

bool Present(const base::Json& body, const char* field) {
  return body.contains(field) && !body[field].is_null();
}

// The distributed-job fields: "workers" (static) or "min_workers"/"max_workers" (elastic).
absl::StatusOr<std::optional<WorkersSpec>> ParseWorkers(const base::Json& body) {
  const bool is_static = Present(body, "workers");
  const bool is_elastic = Present(body, "min_workers") || Present(body, "max_workers");
  const bool elastic_options =
      Present(body, "min_workers_timeout_s") || Present(body, "max_worker_failures");
  if (!is_static && !is_elastic) {
    if (elastic_options) {
      return absl::InvalidArgumentError(
          "fields \"min_workers_timeout_s\" and \"max_worker_failures\" apply to elastic jobs "
          "only; add \"min_workers\" and \"max_workers\"");
    }
    return std::nullopt;
  }
  if (is_static && is_elastic) {
    return absl::InvalidArgumentError(
        "use either \"workers\": N (a static job of exactly N workers) or \"min_workers\" and "
        "\"max_workers\" (an elastic job), not both");
  }
  WorkersSpec w;
  auto in_range = [](const char* field, int64_t v) -> absl::Status {
    if (v < 1 || v > kMaxWorkers) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", field, "\" must be between 1 and ", kMaxWorkers, ", got ", v));
    }
    return absl::OkStatus();
  };
  if (is_static) {
    if (elastic_options) {
      return absl::InvalidArgumentError(
          "fields \"min_workers_timeout_s\" and \"max_worker_failures\" apply to elastic jobs "
          "only (\"min_workers\"/\"max_workers\"), not to a static \"workers\" job");
    }
    KILN_ASSIGN_OR_RETURN(int64_t n, base::GetIntOr(body, "workers", 1));
    KILN_RETURN_IF_ERROR(in_range("workers", n));
    w.min = w.max = static_cast<int>(n);
    return w;
  }
  w.elastic = true;
  KILN_ASSIGN_OR_RETURN(int64_t min, base::GetIntOr(body, "min_workers", 1));
  KILN_RETURN_IF_ERROR(in_range("min_workers", min));
  KILN_ASSIGN_OR_RETURN(int64_t max, base::GetIntOr(body, "max_workers", min));
  KILN_RETURN_IF_ERROR(in_range("max_workers", max));
  if (min > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_workers (", min, ") must not exceed max_workers (", max, ")"));
  }
  w.min = static_cast<int>(min);
  w.max = static_cast<int>(max);
  KILN_ASSIGN_OR_RETURN(w.min_workers_timeout_s,
                        base::GetIntOr(body, "min_workers_timeout_s", 600));
  if (w.min_workers_timeout_s < 0 || w.min_workers_timeout_s > 30 * 24 * 3600) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"min_workers_timeout_s\" must be between 0 and 2592000 (30 days), got ",
        w.min_workers_timeout_s));
  }
  KILN_ASSIGN_OR_RETURN(int64_t failures,
                        base::GetIntOr(body, "max_worker_failures", 3 * w.max + 3));
  if (failures < 0 || failures > 1'000'000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"max_worker_failures\" must be between 0 and 1000000, got ", failures));
  }
  w.max_worker_failures = static_cast<int>(failures);
  return w;
}

// `from_user`: a request body, where the KILN_* environment is reserved; otherwise a spec
// Kiln stored itself, which may carry the KILN_* variables Kiln set (an experiment's
// trials carry KILN_EXPERIMENT_ID and KILN_TRIAL_ID).
absl::StatusOr<JobSpec> ParseJobSpecFrom(const base::Json& body, bool from_user) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError("the job request must be a JSON object (see docs/api.md)");
  }
  static const char* const kKnown[] = {"name",
                                       "command",
                                       "package",
                                       "resources",
                                       "env",
                                       "config",
                                       "workdir",
                                       "workers",
                                       "min_workers",
                                       "max_workers",
                                       "min_workers_timeout_s",
                                       "max_worker_failures"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", it.key(),
          "\" in the job request; known fields: name, command, package, resources, env, config, "
          "workdir, workers, min_workers, max_workers, min_workers_timeout_s, "
          "max_worker_failures"));
    }
  }
  JobSpec spec;
  KILN_ASSIGN_OR_RETURN(spec.command, base::GetStringListOr(body, "command", {}));
  if (spec.command.empty() || spec.command[0].empty()) {
    return absl::InvalidArgumentError(
        "field \"command\" must be a non-empty list of strings, e.g. [\"python3\", \"train.py\"]");
  }
  if (spec.command.size() > kMaxArgs) {
    return absl::InvalidArgumentError(absl::StrCat("field \"command\" has ", spec.command.size(),
                                                   " arguments; the limit is ", kMaxArgs));
  }
  for (const std::string& arg : spec.command) {
    if (arg.size() > kMaxArgBytes || arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          "a command argument is longer than 128 KiB or contains a NUL byte");
    }
  }
  std::string default_name = spec.command[0];
  if (auto slash = default_name.rfind('/'); slash != std::string::npos) {
    default_name = default_name.substr(slash + 1);
  }
  KILN_ASSIGN_OR_RETURN(spec.name, base::GetStringOr(body, "name", default_name));
  if (spec.name.size() > 200) {
    return absl::InvalidArgumentError("field \"name\" must be at most 200 characters");
  }

  if (body.contains("package") && !body["package"].is_null()) {
    const base::Json& pkg = body["package"];
    if (!pkg.is_object()) {
      return absl::InvalidArgumentError(
          "field \"package\" must be {\"id\": \"sha256-...\"} or {\"path\": \"/shared/dir\"}");
    }
    PackageRef ref;
    KILN_ASSIGN_OR_RETURN(ref.id, base::GetStringOr(pkg, "id", ""));
    KILN_ASSIGN_OR_RETURN(ref.path, base::GetStringOr(pkg, "path", ""));
    if (ref.id.empty() == ref.path.empty()) {
      return absl::InvalidArgumentError(
          "field \"package\" needs exactly one of \"id\" (an uploaded package) or \"path\" (a "
          "folder on a shared filesystem)");
    }
    if (!ref.id.empty() && !absl::StartsWith(ref.id, "sha256-")) {
      return absl::InvalidArgumentError(
          absl::StrCat("package id \"", ref.id,
                       "\" is not a Kiln package id; upload with POST /api/v1/packages"));
    }
    if (!ref.path.empty() && ref.path[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("package path \"", ref.path, "\" must be absolute"));
    }
    spec.package = ref;
  }

  if (body.contains("resources") && !body["resources"].is_null()) {
    const base::Json& res = body["resources"];
    if (!res.is_object()) {
      return absl::InvalidArgumentError("field \"resources\" must be {\"slots\": N, \"gpus\": N}");
    }
    KILN_ASSIGN_OR_RETURN(int64_t slots, base::GetIntOr(res, "slots", 1));
    KILN_ASSIGN_OR_RETURN(int64_t gpus, base::GetIntOr(res, "gpus", 0));
    if (slots < 1 || slots > kMaxSlots) {
      return absl::InvalidArgumentError(
          absl::StrCat("resources.slots must be between 1 and ", kMaxSlots, ", got ", slots));
    }
    if (gpus < 0 || gpus > kMaxGpus) {
      return absl::InvalidArgumentError(
          absl::StrCat("resources.gpus must be between 0 and ", kMaxGpus, ", got ", gpus));
    }
    spec.resources = {static_cast<int>(slots), static_cast<int>(gpus)};
  }

  KILN_ASSIGN_OR_RETURN(spec.env, base::GetStringMapOr(body, "env"));
  for (const auto& [name, value] : spec.env) {
    if (!IsEnvName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "env name \"", name, "\" is not a valid variable name (letters, digits, _)"));
    }
    if (from_user && absl::StartsWith(name, "KILN_")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "env name \"", name, "\" is reserved: Kiln sets the KILN_* variables itself"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("env value of ", name, " contains a NUL byte"));
    }
  }

  if (body.contains("config") && !body["config"].is_null()) {
    if (!body["config"].is_object()) {
      return absl::InvalidArgumentError(
          "field \"config\" must be an object of hyperparameters, e.g. {\"lr\": 0.01}");
    }
    if (NestedDeeperThan(body["config"], kMaxConfigDepth)) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"config\" is nested more than ", kMaxConfigDepth, " levels deep"));
    }
    spec.config = body["config"];
  }

  KILN_ASSIGN_OR_RETURN(spec.workdir, base::GetStringOr(body, "workdir", ""));
  KILN_RETURN_IF_ERROR(ValidateWorkdir(spec.workdir));
  KILN_ASSIGN_OR_RETURN(spec.workers, ParseWorkers(body));
  return spec;
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpec(const base::Json& body) {
  return ParseJobSpecFrom(body, /*from_user=*/true);
}

absl::StatusOr<JobSpec> JobSpecFromStoredJson(const base::Json& stored) {
  return ParseJobSpecFrom(stored, /*from_user=*/false);
}

base::Json JobSpecToJson(const JobSpec& spec) {
  base::Json j;
  j["name"] = spec.name;
  j["command"] = spec.command;
  if (spec.package) {
    if (!spec.package->id.empty()) j["package"] = {{"id", spec.package->id}};
    if (!spec.package->path.empty()) j["package"] = {{"path", spec.package->path}};
  } else {
    j["package"] = nullptr;
  }
  j["resources"] = {{"slots", spec.resources.slots}, {"gpus", spec.resources.gpus}};
  j["env"] = spec.env;
  j["config"] = spec.config;
  if (!spec.workdir.empty()) j["workdir"] = spec.workdir;
  if (spec.workers && !spec.workers->elastic) j["workers"] = spec.workers->min;
  if (spec.workers && spec.workers->elastic) {
    j["min_workers"] = spec.workers->min;
    j["max_workers"] = spec.workers->max;
    j["min_workers_timeout_s"] = spec.workers->min_workers_timeout_s;
    j["max_worker_failures"] = spec.workers->max_worker_failures;
  }
  return j;
}

}  // namespace kiln::master
