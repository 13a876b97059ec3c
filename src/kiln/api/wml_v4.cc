#include "kiln/api/wml_v4.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/api/wmla_args.h"
#include "kiln/base/clock.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"
#include "kiln/net/http_status.h"
#include "kiln/serving/signature.h"

namespace kiln::api::wml {
namespace {

using base::Json;

// What WML's objects may carry; these bounds only keep stored bodies small.
constexpr size_t kMaxName = 256;
constexpr size_t kMaxText = 4096;

absl::Status Field(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(what)));
}

// body[key] as a string: absent → `fallback`; not a string (or too long) → InvalidArgument.
absl::StatusOr<std::string> OptString(const Json& body, const char* key, std::string_view field,
                                      size_t max, std::string fallback = "") {
  if (!body.contains(key) || body[key].is_null()) return fallback;
  if (!body[key].is_string()) {
    return Field(field, absl::StrCat("must be a string, got ", body[key].dump()));
  }
  std::string s = body[key].get<std::string>();
  if (s.size() > max) return Field(field, absl::StrCat("is longer than ", max, " characters"));
  return s;
}

absl::StatusOr<std::string> RequiredName(const Json& body, std::string_view example) {
  KILN_ASSIGN_OR_RETURN(std::string name, OptString(body, "name", "name", kMaxName));
  if (absl::StripAsciiWhitespace(name).empty()) {
    return Field("name", absl::StrCat("is required, e.g. ", std::string(example)));
  }
  return name;
}

absl::Status CheckObject(const Json& body) {
  if (!body.is_object())
    return absl::InvalidArgumentError("the request body must be a JSON object");
  return absl::OkStatus();
}

// Copies the keys of `body` that are in `keys` (when present and not null).
Json Pick(const Json& body, std::initializer_list<const char*> keys) {
  Json out = Json::object();
  for (const char* k : keys) {
    if (body.contains(k) && !body[k].is_null()) out[k] = body[k];
  }
  return out;
}

absl::Status CheckObjectField(const Json& body, const char* key) {
  if (body.contains(key) && !body[key].is_null() && !body[key].is_object()) {
    return Field(key, absl::StrCat("must be an object, got ", body[key].dump()));
  }
  return absl::OkStatus();
}

std::string Iso(int64_t micros) { return base::FormatIso8601(micros); }

// The path segment after `marker` in `path`, or "".
std::string SegmentAfter(std::string_view path, std::string_view marker) {
  size_t at = path.find(marker);
  if (at == std::string_view::npos) return "";
  std::string_view rest = path.substr(at + marker.size());
  size_t end = rest.find('/');
  return std::string(rest.substr(0, end));
}

// The path segment before `marker` in `path`, or "".
std::string SegmentBefore(std::string_view path, std::string_view marker) {
  size_t at = path.find(marker);
  if (at == std::string_view::npos || at == 0) return "";
  std::string_view head = path.substr(0, at);
  size_t slash = head.rfind('/');
  return std::string(slash == std::string_view::npos ? head : head.substr(slash + 1));
}

// A training id inside one `location` object of a results or content reference.
std::string TrainingIdInLocation(const Json& location) {
  if (!location.is_object()) return "";
  for (const char* key : {"model", "training_status", "logs"}) {
    if (!location.contains(key) || !location[key].is_string()) continue;
    const std::string path = location[key].get<std::string>();
    if (std::string id = SegmentBefore(path, "/data/model"); !id.empty()) return id;
    if (std::string id = SegmentBefore(path, "/training-status.json"); !id.empty()) return id;
    if (std::string id = SegmentBefore(path, "/logs"); !id.empty()) return id;
  }
  if (location.contains("training") && location["training"].is_string()) {
    std::string path = location["training"].get<std::string>();
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
  }
  if (location.contains("path") && location["path"].is_string()) {
    // WMLA's model import request: ".../assets/experiment/<t>/assets/<t>/resources/...".
    return SegmentAfter(location["path"].get<std::string>(), "/experiment/");
  }
  return "";
}

// ---- ZIP conversion ----

struct ReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

std::string ArchiveError(archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

absl::Status NotAZip(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the model definition's code is not a usable ZIP: ", std::string(why),
      " (upload a ZIP of the training code, e.g. made with `zip -r code.zip train.py`)"));
}

la_ssize_t AppendTo(archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// The components of an entry name, refusing ones that could land outside the folder.
absl::StatusOr<std::vector<std::string>> Components(std::string_view name) {
  if (name.empty()) return NotAZip("an entry has no name");
  if (name.front() == '/' || name.front() == '\\') {
    return NotAZip(absl::StrCat("entry \"", std::string(name), "\" has an absolute path"));
  }
  std::vector<std::string> out;
  for (const std::string& c : std::vector<std::string>(absl::StrSplit(std::string(name), '/'))) {
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      return NotAZip(absl::StrCat("entry \"", std::string(name), "\" has a \"..\" component"));
    }
    out.emplace_back(c);
  }
  return out;
}

}  // namespace

std::string NewId() {
  std::string hex = base::RandomHexToken(16);
  hex[12] = '4';  // version 4
  char c = hex[16];
  int nibble = c <= '9' ? c - '0' : c - 'a' + 10;
  hex[16] = "89ab"[nibble & 3];  // RFC 4122 variant
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20, 12));
}

std::string ErrorCode(int http_status) {
  switch (http_status) {
    case 400:
      return "invalid_request_entity";
    case 401:
      return "authentication_failed";
    case 403:
      return "authorization_rejected";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 409:
      return "conflict";
    case 413:
      return "request_entity_too_large";
    case 501:
      return "not_implemented";
    case 503:
      return "service_unavailable";
    default:
      return http_status >= 500 ? "internal_error" : "invalid_request";
  }
}

net::HttpResponse ErrorResponse(const absl::Status& status) {
  // The status line and headers (WWW-Authenticate on 401) stay Kiln's; the body is WML's.
  net::HttpResponse r = net::ErrorResponse(status);
  Json body = {
      {"trace", base::RandomHexToken(16)},
      {"errors",
       Json::array({{{"code", ErrorCode(r.status)}, {"message", std::string(status.message())}}})},
      {"status_code", r.status}};
  r.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  r.content_type = "application/json";
  return r;
}

Json Resource(const ObjectMeta& meta, Json entity) {
  Json m = {{"id", meta.id},
            {"guid", meta.id},
            {"href", meta.href},
            {"name", meta.name},
            {"created_at", Iso(meta.created_at)},
            {"modified_at", Iso(meta.modified_at)}};
  if (!meta.space_id.empty()) m["space_id"] = meta.space_id;
  if (!meta.owner.empty()) m["owner"] = meta.owner;
  return {{"metadata", std::move(m)}, {"entity", std::move(entity)}};
}

// ---------------------------------------------------------------- spaces

absl::StatusOr<Json> ParseSpaceRequest(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckObject(body));
  KILN_ASSIGN_OR_RETURN(std::string name, RequiredName(body, "{\"name\": \"my space\"}"));
  KILN_ASSIGN_OR_RETURN(std::string description,
                        OptString(body, "description", "description", kMaxText));
  Json entity = Pick(body, {"tags", "storage", "compute", "generator"});
  entity["name"] = name;
  entity["description"] = description;
  entity["status"] = {{"state", "active"}};  // ready at once: a space is a label in Kiln
  return entity;
}

// ---------------------------------------------------------------- model definitions

absl::StatusOr<Json> ParseModelDefinitionRequest(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckObject(body));
  KILN_ASSIGN_OR_RETURN(std::string name,
                        RequiredName(body,
                                     "{\"name\": \"mnist code\", \"command\": \"train.py "
                                     "--epochs 3\"}"));
  KILN_ASSIGN_OR_RETURN(std::string description,
                        OptString(body, "description", "description", kMaxText));
  KILN_ASSIGN_OR_RETURN(std::string command, OptString(body, "command", "command", kMaxText));
  if (!command.empty()) {
    auto words = SplitArgs(command);
    if (!words.ok()) return Field("command", std::string(words.status().message()));
  }
  KILN_ASSIGN_OR_RETURN(std::string version, OptString(body, "version", "version", kMaxName));
  KILN_RETURN_IF_ERROR(CheckObjectField(body, "platform"));
  if (body.contains("tags") && !body["tags"].is_null() && !body["tags"].is_array()) {
    return Field("tags", "must be an array of strings, e.g. [\"DL\", \"PyTorch\"]");
  }
  Json entity = Pick(body, {"platform", "tags", "custom"});
  entity["name"] = name;
  entity["description"] = description;
  entity["command"] = command;
  entity["version"] = version;
  return entity;
}

absl::StatusOr<ConvertedCode> ZipToTarGz(std::string_view zip, const ZipLimits& limits) {
  if (zip.size() < 4 || zip.substr(0, 2) != "PK") {
    return NotAZip("it does not start with the ZIP signature \"PK\"");
  }
  std::unique_ptr<archive, ReadDeleter> in(archive_read_new());
  std::unique_ptr<archive, WriteDeleter> out(archive_write_new());
  if (in == nullptr || out == nullptr) return absl::InternalError("libarchive: out of memory");
  // Only the ZIP reader sees the upload; the seekable one trusts the central directory,
  // so every entry's size is known before its data.
  if (archive_read_support_format_zip_seekable(in.get()) != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up a ZIP reader: ", ArchiveError(in.get())));
  }
  if (archive_read_open_memory(in.get(), zip.data(), zip.size()) != ARCHIVE_OK) {
    return NotAZip(ArchiveError(in.get()));
  }
  ConvertedCode result;
  if (archive_write_add_filter_gzip(out.get()) != ARCHIVE_OK ||
      archive_write_set_format_pax_restricted(out.get()) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(out.get(), 1) != ARCHIVE_OK ||
      archive_write_open(out.get(), &result.tar_gz, nullptr, AppendTo, nullptr) != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up a .tar.gz writer: ", ArchiveError(out.get())));
  }
  int64_t entries = 0;
  int64_t total = 0;
  std::set<std::string> tops;
  bool file_at_top = false;
  std::string data;
  std::vector<char> buf(64 << 10);
  while (true) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return NotAZip(ArchiveError(in.get()));
    if (++entries > limits.max_entries) {
      return NotAZip(absl::StrCat("more than ", limits.max_entries, " entries"));
    }
    const char* raw = archive_entry_pathname(entry);
    if (raw == nullptr) raw = archive_entry_pathname_utf8(entry);
    std::string name = raw == nullptr ? "" : raw;
    KILN_ASSIGN_OR_RETURN(std::vector<std::string> comps, Components(name));
    if (comps.empty()) continue;
    if (comps[0] == "__MACOSX") continue;  // Finder's resource forks: not code
    if (archive_entry_is_encrypted(entry)) {
      return NotAZip(absl::StrCat("entry \"", name, "\" is encrypted"));
    }
    mode_t type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR) {
      return NotAZip(absl::StrCat("entry \"", name,
                                  "\" is not a regular file or folder (links are not allowed)"));
    }
    std::string path = absl::StrJoin(comps, "/");
    tops.insert(comps[0]);
    if (type == AE_IFREG && comps.size() == 1) file_at_top = true;

    data.clear();
    if (type == AE_IFREG) {
      while (true) {
        la_ssize_t n = archive_read_data(in.get(), buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) return NotAZip(ArchiveError(in.get()));
        total += n;
        if (total > limits.max_total_bytes) {
          return NotAZip(absl::StrCat("its files hold more than ", limits.max_total_bytes,
                                      " bytes uncompressed"));
        }
        data.append(buf.data(), static_cast<size_t>(n));
      }
      ++result.files;
    }
    std::unique_ptr<archive_entry, EntryDeleter> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_mtime(e.get(), archive_entry_mtime(entry), 0);
    if (type == AE_IFDIR) {
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      archive_entry_set_perm(e.get(), 0755);
    } else {
      archive_entry_set_filetype(e.get(), AE_IFREG);
      // Executable bits survive (a shell script as the command); nothing else.
      archive_entry_set_perm(e.get(), (archive_entry_perm(entry) & 0111) != 0 ? 0755 : 0644);
      archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    }
    if (archive_write_header(out.get(), e.get()) != ARCHIVE_OK) {
      return absl::InternalError(absl::StrCat("writing \"", path, "\": ", ArchiveError(out.get())));
    }
    if (!data.empty() && archive_write_data(out.get(), data.data(), data.size()) !=
                             static_cast<la_ssize_t>(data.size())) {
      return absl::InternalError(absl::StrCat("writing \"", path, "\": ", ArchiveError(out.get())));
    }
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) {
    return absl::InternalError(absl::StrCat("finishing the .tar.gz: ", ArchiveError(out.get())));
  }
  if (result.files == 0) return NotAZip("it holds no files");
  if (tops.size() == 1 && !file_at_top) result.root_folder = *tops.begin();
  return result;
}

// ---------------------------------------------------------------- trainings

absl::StatusOr<TrainingRequest> ParseTrainingRequest(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckObject(body));
  TrainingRequest r;
  KILN_ASSIGN_OR_RETURN(r.name, OptString(body, "name", "name", kMaxName, "wml-training"));
  KILN_ASSIGN_OR_RETURN(r.description, OptString(body, "description", "description", kMaxText));
  KILN_ASSIGN_OR_RETURN(r.space_id, OptString(body, "space_id", "space_id", kMaxName));
  if (body.contains("experiment") || body.contains("pipeline") ||
      body.contains("federated_learning")) {
    return absl::InvalidArgumentError(
        "Kiln's Watson ML trainings run a model_definition; experiments, pipelines and federated "
        "learning are not supported (send {\"model_definition\": {\"id\": ...}, ...})");
  }
  if (!body.contains("model_definition") || !body["model_definition"].is_object()) {
    return Field("model_definition",
                 "is required: {\"model_definition\": {\"id\": \"<id from POST "
                 "/ml/v4/model_definitions>\", \"command\"?: \"train.py --epochs 3\"}}");
  }
  const Json& def = body["model_definition"];
  KILN_ASSIGN_OR_RETURN(r.definition_id, OptString(def, "id", "model_definition.id", kMaxName));
  if (r.definition_id.empty()) {
    return Field("model_definition.id", "is required: the id POST /ml/v4/model_definitions gave");
  }
  if (def.contains("command") && !def["command"].is_null()) {
    KILN_ASSIGN_OR_RETURN(std::string command,
                          OptString(def, "command", "model_definition.command", kMaxText));
    auto words = SplitArgs(command);
    if (!words.ok())
      return Field("model_definition.command", std::string(words.status().message()));
    if (!words->empty()) r.command = command;
  }
  if (def.contains("hardware_spec") && def["hardware_spec"].is_object()) {
    const Json& hw = def["hardware_spec"];
    if (hw.contains("nodes") &&
        !(hw["nodes"].is_number_integer() && hw["nodes"].get<int64_t>() == 1)) {
      return Field("model_definition.hardware_spec.nodes",
                   "Kiln's Watson ML trainings run on one node; give 1 (or leave it out), and use "
                   "Kiln's distributed jobs (kiln run --workers N) for more");
    }
  }
  if (body.contains("training_data_references")) {
    const Json& refs = body["training_data_references"];
    if (!refs.is_array()) {
      return Field("training_data_references",
                   "must be an array, e.g. [{\"type\": \"fs\", \"location\": {\"path\": "
                   "\"fashion-mnist\"}}]");
    }
    if (!refs.empty()) {
      const Json& first = refs[0];
      if (!first.is_object()) return Field("training_data_references[0]", "must be an object");
      if (first.contains("type") && first["type"].is_string() &&
          first["type"].get<std::string>() != "fs" &&
          first["type"].get<std::string>() != "file_system" &&
          first["type"].get<std::string>() != "data_asset") {
        return Field("training_data_references[0].type",
                     absl::StrCat("\"", first["type"].get<std::string>(),
                                  "\" is not supported: Kiln reads training data from a shared "
                                  "file system; use \"fs\" with location.path"));
      }
      if (first.contains("location") && first["location"].is_object()) {
        KILN_ASSIGN_OR_RETURN(r.data_path,
                              OptString(first["location"], "path",
                                        "training_data_references[0].location.path", kMaxText));
      }
    }
  }
  KILN_RETURN_IF_ERROR(CheckObjectField(body, "results_reference"));
  r.entity = Pick(body, {"training_data_references", "results_reference", "tags", "custom",
                         "model_definition", "space_id", "project_id"});
  r.entity["name"] = r.name;
  r.entity["description"] = r.description;
  return r;
}

absl::StatusOr<std::string> ResolveDataDir(const std::string& data_path,
                                           const std::string& data_root) {
  constexpr char kField[] = "training_data_references[0].location.path";
  if (data_path.empty()) return std::string();
  std::string path;
  if (data_path.front() == '/') {
    path = data_path;
  } else {
    KILN_ASSIGN_OR_RETURN(std::vector<std::string> comps, Components(data_path));
    (void)comps;
    if (data_root.empty()) {
      return Field(kField, absl::StrCat("\"", data_path,
                                        "\" is relative but kilnd has no data root (start it with "
                                        "DLI_DATA_FS=/shared/data); give an absolute path"));
    }
    path = absl::StrCat(data_root, "/", data_path);
  }
  if (data_path.find("/../") != std::string::npos || absl::EndsWith(data_path, "/..")) {
    return Field(kField, absl::StrCat("\"", data_path, "\" must not contain \"..\""));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Field(
        kField, absl::StrCat(
                    "no folder ", path,
                    data_path.front() == '/'
                        ? ""
                        : absl::StrCat(" (relative paths are under the data root ", data_root, ")"),
                    "; put the data set there or give the absolute path of its folder"));
  }
  return path;
}

absl::StatusOr<master::JobSpec> TrainingJobSpec(const TrainingRequest& request,
                                                const std::string& command,
                                                const std::string& package_id,
                                                const std::string& workdir,
                                                const std::string& data_dir) {
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> words, SplitArgs(command));
  if (words.empty()) {
    return Field("model_definition.command",
                 "the training needs a command: give it in the model definition (\"command\": "
                 "\"train.py --epochs 3\") or in the training's model_definition.command");
  }
  if (words[0] == "python" || words[0] == "python3") {
    words[0] = "python3";
  } else if (absl::EndsWith(words[0], ".py")) {
    words.insert(words.begin(), "python3");
  }
  master::JobSpec spec;
  spec.name = request.name;
  spec.command = std::move(words);
  spec.package = master::PackageRef{package_id, ""};
  spec.workdir = workdir;
  if (!data_dir.empty()) spec.env["DATA_DIR"] = data_dir;
  if (!request.space_id.empty()) spec.env["WML_SPACE_ID"] = request.space_id;
  spec.env["WML_MODEL_DEFINITION_ID"] = request.definition_id;
  const Json& def = request.entity.value("model_definition", Json::object());
  if (def.contains("parameters") && def["parameters"].is_object()) {
    spec.config = def["parameters"];
  }
  return spec;
}

const char* TrainingState(store::JobState state) {
  switch (state) {
    case store::JobState::kQueued:
    case store::JobState::kScheduled:
      return "pending";
    case store::JobState::kRunning:
      return "running";
    case store::JobState::kFinished:
      return "completed";
    case store::JobState::kFailed:
      return "failed";
    case store::JobState::kKilled:
      return "canceled";
  }
  return "pending";
}

Json TrainingMetrics(const std::vector<store::MetricPoint>& points) {
  std::map<std::string, std::set<std::string>> groups_of;
  for (const store::MetricPoint& p : points) groups_of[p.name].insert(p.group);
  auto key_of = [&](const store::MetricPoint& p) {
    const std::set<std::string>& groups = groups_of[p.name];
    if (groups.size() == 1 || p.group == "test") return p.name;
    if (groups.count("test") == 0 && p.group == *groups.begin()) return p.name;
    return absl::StrCat(p.group, "_", p.name);
  };
  struct Step {
    Json values = Json::object();
    int64_t time = 0;
  };
  std::map<int64_t, Step> steps;
  for (const store::MetricPoint& p : points) {
    Step& s = steps[p.step];
    s.values[key_of(p)] = p.value;
    s.time = std::max(s.time, p.time);
  }
  Json out = Json::array();
  for (auto& [step, s] : steps) {
    out.push_back({{"iteration", step},
                   {"ml_metrics", std::move(s.values)},
                   {"timestamp", s.time > 0 ? Json(Iso(s.time)) : Json(nullptr)}});
  }
  return out;
}

Json TrainingEntity(const std::string& training_id, const Json& request_entity,
                    const store::JobRecord& job, const std::vector<store::MetricPoint>& points) {
  Json entity = request_entity;
  // Where WML says the results are; Kiln keeps them with the job (GET
  // /api/v1/jobs/{id}/artifacts), and POST /ml/v4/models reads the id back from here.
  Json results = entity.value("results_reference", Json::object());
  if (!results.is_object()) results = Json::object();
  Json location = results.value("location", Json::object());
  if (!location.is_object()) location = Json::object();
  std::string base = location.value("path", Json("")).is_string()
                         ? location.value("path", Json("")).get<std::string>()
                         : std::string();
  if (base.empty()) base = "kiln/trainings";
  std::string dir = absl::StrCat(base, "/", training_id);
  location["path"] = base;
  location["training"] = dir;
  location["model"] = absl::StrCat(dir, "/data/model");
  location["training_status"] = absl::StrCat(dir, "/training-status.json");
  location["logs"] = absl::StrCat(dir, "/logs");
  location["assets_path"] = absl::StrCat(dir, "/assets");
  location["kiln_job"] = absl::StrCat("/api/v1/jobs/", job.id);
  results["location"] = std::move(location);
  if (!results.contains("type")) results["type"] = "fs";
  entity["results_reference"] = std::move(results);

  std::string state = TrainingState(job.state);
  std::string text = absl::StrCat("Kiln job ", job.id, " is ", store::JobStateName(job.state));
  if (!job.reason.empty()) absl::StrAppend(&text, ": ", job.reason);
  Json status = {
      {"state", state},
      {"message",
       {{"level", job.state == store::JobState::kFailed ? "error" : "info"}, {"text", text}}},
      {"metrics", TrainingMetrics(points)}};
  if (job.started_at) status["running_at"] = Iso(*job.started_at);
  if (job.finished_at) status["completed_at"] = Iso(*job.finished_at);
  if (job.state == store::JobState::kFailed) {
    status["failure"] = {
        {"trace", ""},
        {"errors", Json::array({{{"code", "training_failed"},
                                 {"message", job.reason.empty() ? text : job.reason}}})}};
  }
  entity["status"] = std::move(status);
  return entity;
}

// ---------------------------------------------------------------- models

std::string TrainingIdOf(const Json& body) {
  if (!body.is_object()) return "";
  if (body.contains("training_id") && body["training_id"].is_string()) {
    return body["training_id"].get<std::string>();
  }
  if (body.contains("training") && body["training"].is_object() &&
      body["training"].contains("id") && body["training"]["id"].is_string()) {
    return body["training"]["id"].get<std::string>();
  }
  // The Python client's store_model(training_id) sends the training's results_reference
  // as training_data_references; WMLA's import request names the training in its paths.
  for (const char* key : {"training_data_references", "training_results_reference"}) {
    if (!body.contains(key)) continue;
    Json refs = body[key].is_array() ? body[key] : Json::array({body[key]});
    for (const Json& ref : refs) {
      if (!ref.is_object()) continue;
      if (std::string id = TrainingIdInLocation(ref.value("location", Json())); !id.empty()) {
        return id;
      }
    }
  }
  if (body.contains("content_location") && body["content_location"].is_object()) {
    const Json& cl = body["content_location"];
    if (cl.contains("contents") && cl["contents"].is_array()) {
      for (const Json& c : cl["contents"]) {
        if (!c.is_object() || !c.contains("location") || !c["location"].is_string()) continue;
        std::string path = c["location"].get<std::string>();
        if (std::string id = SegmentAfter(path, "/experiment/"); !id.empty()) return id;
        if (std::string id = SegmentAfter(path, "/trainings/"); !id.empty()) return id;
      }
    }
    if (std::string id = TrainingIdInLocation(cl.value("location", Json())); !id.empty()) {
      return id;
    }
  }
  return "";
}

Json ModelImportRequest(const std::string& training_id, const std::string& space_id,
                        const Json& request_entity, const std::string& file_name) {
  const Json& entity = request_entity.is_object() ? request_entity : Json::object();
  // Where the results are, as TrainingEntity reports them.
  std::string base = "kiln/trainings";
  if (const Json& results = entity.value("results_reference", Json());
      results.is_object() && results.value("location", Json()).is_object()) {
    const Json& path = results["location"].value("path", Json());
    if (path.is_string() && !path.get<std::string>().empty()) base = path.get<std::string>();
  }
  const std::string folder =
      absl::StrCat(base, "/", training_id, "/assets/", training_id, "/resources/wml_model");
  Json out = {{"name", absl::StrCat("model_", training_id)},
              {"content_location",
               {{"contents", Json::array({{{"content_format", "native"},
                                           {"file_name", file_name},
                                           {"location", absl::StrCat(folder, "/", file_name)}}})},
                {"location", {{"path", folder}}},
                {"type", "fs"},
                {"connection", Json::object()}}}};
  if (!space_id.empty()) out["space_id"] = space_id;
  const Json& definition = entity.value("model_definition", Json());
  if (definition.is_object()) {
    if (definition.value("id", Json()).is_string()) {
      out["model_definition"] = {{"id", definition["id"]}};
    }
    const Json& spec = definition.value("software_spec", Json());
    if (spec.is_object() && spec.value("name", Json()).is_string()) {
      out["software_spec"] = {{"name", spec["name"]}};
      // "pytorch-onnx_1.3-py3.7" is of type "pytorch-onnx_1.3".
      std::string type = spec["name"].get<std::string>();
      if (size_t py = type.rfind("-py"); py != std::string::npos && py > 0) type.resize(py);
      out["type"] = type;
    }
  }
  if (entity.contains("training_data_references")) {
    out["training_data_references"] = entity["training_data_references"];
  }
  return out;
}

absl::StatusOr<ModelRequest> ParseModelRequest(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckObject(body));
  ModelRequest r;
  KILN_ASSIGN_OR_RETURN(r.name, RequiredName(body,
                                             "{\"name\": \"mnist model\", \"training_id\": "
                                             "\"<id from POST /ml/v4/trainings>\"}"));
  KILN_ASSIGN_OR_RETURN(r.description, OptString(body, "description", "description", kMaxText));
  KILN_ASSIGN_OR_RETURN(r.space_id, OptString(body, "space_id", "space_id", kMaxName));
  r.training_id = TrainingIdOf(body);
  if (r.training_id.empty() && body.contains("content_location")) {
    return Field("content_location",
                 "names no Kiln training (Kiln stores a model from a completed training, "
                 "given as \"training_id\", or from a file: create the model without "
                 "content_location, then PUT the TorchScript file to "
                 "/ml/v4/models/{id}/content)");
  }
  if (body.contains("custom") && body["custom"].is_object() &&
      body["custom"].contains("signature")) {
    const Json& given = body["custom"]["signature"];
    if (absl::StatusOr<serving::Signature> parsed = serving::ParseSignature(given); !parsed.ok()) {
      return Field("custom.signature", std::string(parsed.status().message()));
    }
    r.signature = given;
  }
  r.entity = Pick(body, {"type", "software_spec", "tags", "custom", "training_data_references",
                         "content_location", "model_definition"});
  r.entity["name"] = r.name;
  r.entity["description"] = r.description;
  if (!r.training_id.empty()) r.entity["training_id"] = r.training_id;
  return r;
}

// ---------------------------------------------------------------- deployments

absl::StatusOr<DeploymentRequest> ParseDeploymentRequest(const Json& body) {
  KILN_RETURN_IF_ERROR(CheckObject(body));
  DeploymentRequest r;
  KILN_ASSIGN_OR_RETURN(r.name, OptString(body, "name", "name", kMaxName, "wml-deployment"));
  KILN_ASSIGN_OR_RETURN(r.description, OptString(body, "description", "description", kMaxText));
  KILN_ASSIGN_OR_RETURN(r.space_id, OptString(body, "space_id", "space_id", kMaxName));
  if (body.contains("batch")) {
    return Field("batch", "Kiln serves online deployments only; send \"online\": {} instead");
  }
  if (!body.contains("online") || !body["online"].is_object()) {
    return Field("online", "is required (an online deployment): \"online\": {}");
  }
  if (!body.contains("asset") || !body["asset"].is_object()) {
    return Field("asset",
                 "is required: \"asset\": {\"id\": \"<model id from POST /ml/v4/models>\"}");
  }
  KILN_ASSIGN_OR_RETURN(r.asset_id, OptString(body["asset"], "id", "asset.id", kMaxName));
  if (r.asset_id.empty()) {
    return Field("asset.id", "is required: the model id POST /ml/v4/models gave");
  }
  Json hw = Json::object();
  if (body.contains("hardware_spec")) {
    if (!body["hardware_spec"].is_object()) {
      return Field("hardware_spec", "must be an object, e.g. {\"name\": \"S\", \"num_nodes\": 1}");
    }
    hw = body["hardware_spec"];
  }
  if (hw.contains("num_nodes")) {
    if (!hw["num_nodes"].is_number_integer() || hw["num_nodes"].get<int64_t>() < 1 ||
        hw["num_nodes"].get<int64_t>() > 64) {
      return Field("hardware_spec.num_nodes", "must be an integer from 1 to 64 (the replicas)");
    }
    r.replicas = static_cast<int>(hw["num_nodes"].get<int64_t>());
  }
  std::string size = "S";
  if (hw.contains("name")) {
    if (!hw["name"].is_string()) return Field("hardware_spec.name", "must be a string");
    size = absl::AsciiStrToUpper(hw["name"].get<std::string>());
  }
  if (size == "XXS" || size == "XS" || size == "S") {
    r.slots = 1;
  } else if (size == "M") {
    r.slots = 2;
  } else if (size == "L") {
    r.slots = 4;
  } else if (size == "XL") {
    r.slots = 8;
  } else {
    return Field(
        "hardware_spec.name",
        absl::StrCat("\"", hw["name"].get<std::string>(),
                     "\" is not a size Kiln knows; use XS or S (1 slot per replica), M (2), "
                     "L (4) or XL (8)"));
  }
  r.entity = Pick(body, {"online", "asset", "tags", "custom"});
  r.entity["name"] = r.name;
  r.entity["description"] = r.description;
  r.entity["hardware_spec"] = {{"name", size}, {"num_nodes", r.replicas}};
  r.entity["deployed_asset_type"] = "model";
  return r;
}

std::string KilnDeploymentName(const std::string& wml_name, const std::string& suffix) {
  std::string out;
  for (char c : absl::AsciiStrToLower(wml_name)) {
    bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c));
    if (ok) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
    if (out.size() >= 40) break;
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  if (out.empty() || !absl::ascii_isalpha(static_cast<unsigned char>(out[0]))) {
    out = absl::StrCat("wml-", out);
    while (!out.empty() && out.back() == '-') out.pop_back();
  }
  return suffix.empty() ? out : absl::StrCat(out, "-", suffix);
}

const char* DeploymentState(std::string_view kiln_state) {
  if (kiln_state == "READY") return "ready";
  if (kiln_state == "FAILED") return "failed";
  if (kiln_state == "STOPPED") return "deleted";
  return "initializing";  // PENDING, UPDATING
}

// ---------------------------------------------------------------- catalogs

namespace {

Json CatalogEntry(const std::string& name, const std::string& description, Json extra) {
  // Stable ids: the name itself, so a notebook may also pass the id it was given.
  Json entity = {{"name", name}, {"description", description}};
  entity.update(extra);
  return {{"metadata",
           {{"id", name},
            {"asset_id", name},
            {"name", name},
            {"asset_type", "software_specification"}}},
          {"entity", std::move(entity)}};
}

}  // namespace

Json SoftwareSpecifications() {
  Json out = Json::array();
  for (const char* name :
       {"pytorch-onnx_1.1-py3.6", "pytorch-onnx_1.3-py3.7", "pytorch-onnx_1.7-py3.8",
        "pytorch-onnx_rt22.2-py3.10", "runtime-22.2-py3.10", "default_py3.7", "default_py3.8"}) {
    out.push_back(CatalogEntry(
        name, "Kiln runs it with the agent's python3 and torch",
        {{"software_specification", {{"type", "base"}, {"name", name}, {"display_name", name}}}}));
  }
  return out;
}

Json HardwareSpecifications() {
  Json out = Json::array();
  for (const auto& [name, slots] : std::vector<std::pair<const char*, int>>{
           {"XS", 1}, {"S", 1}, {"M", 2}, {"L", 4}, {"XL", 8}}) {
    Json entry =
        CatalogEntry(name, absl::StrCat(slots, " CPU slot", slots == 1 ? "" : "s", " per replica"),
                     {{"nodes", {{"cpu", {{"units", std::to_string(slots)}}}, {"num_nodes", 1}}}});
    entry["metadata"]["asset_type"] = "hardware_specification";
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace kiln::api::wml
