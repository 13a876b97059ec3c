#include "kiln/serving/model_file.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"

namespace kiln::serving {
namespace {

constexpr std::string_view kZipMagic("PK\x03\x04", 4);
constexpr char kSignatureFile[] = "signature.json";
constexpr char kSaveHelp[] =
    "save it with kiln.save_model(model, example_input) or "
    "torch.jit.script(model).save(\"model.pt\")";

struct ReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ReadDeleter>;

bool IsGzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

std::string ArchiveError(archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

absl::Status Unreadable(std::string_view what, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the upload is not a readable ", std::string(what), ": ", std::string(why),
      "; upload the TorchScript file itself (", kSaveHelp, "), or a .zip or .tar.gz holding it"));
}

// An archive opened over `bytes` with only the readers it needs.
absl::StatusOr<ArchivePtr> Open(std::string_view bytes, bool tar_gz) {
  ArchivePtr a(archive_read_new());
  if (a == nullptr) return absl::InternalError("libarchive: out of memory");
  int set_up = tar_gz ? (archive_read_support_filter_gzip(a.get()) == ARCHIVE_OK &&
                                 archive_read_support_format_tar(a.get()) == ARCHIVE_OK
                             ? ARCHIVE_OK
                             : ARCHIVE_FATAL)
                      // The seekable reader trusts the central directory: sizes are known
                      // up front and stored entries need no data descriptors.
                      : archive_read_support_format_zip_seekable(a.get());
  if (set_up != ARCHIVE_OK) {
    return absl::InternalError(
        absl::StrCat("cannot set up an archive reader: ", ArchiveError(a.get())));
  }
  if (archive_read_open_memory(a.get(), bytes.data(), bytes.size()) != ARCHIVE_OK) {
    return Unreadable(tar_gz ? ".tar.gz" : "ZIP", ArchiveError(a.get()));
  }
  return a;
}

// An entry's name split into components; "." and empty ones dropped. InvalidArgument for
// absolute names and ".." (nothing is written to disk here, but such an archive is not
// one a user meant to send).
absl::StatusOr<std::vector<std::string>> Components(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("an entry of the upload has no name");
  if (name.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("entry \"", std::string(name), "\" of the upload has an absolute path"));
  }
  std::vector<std::string> out;
  const std::string whole(name);
  for (absl::string_view c : absl::StrSplit(whole, '/')) {
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("entry \"", std::string(name), "\" of the upload has a \"..\" component"));
    }
    out.emplace_back(c);
  }
  return out;
}

// One regular file of an archive. `data` is read only when the walk asked for it.
struct Entry {
  std::vector<std::string> path;
  std::string data;
  bool has_data = false;
};

// Calls `visit` for each regular file; `visit` returns how many bytes of the entry to
// keep (0: none, skipped unread; SIZE_MAX: all of it). Bounds the count and the bytes read.
template <typename Visit>
absl::Status Walk(std::string_view bytes, bool tar_gz, const ModelFileLimits& limits,
                  Visit& visit) {
  KILN_ASSIGN_OR_RETURN(ArchivePtr a, Open(bytes, tar_gz));
  const char* format = tar_gz ? ".tar.gz" : "ZIP";
  int64_t entries = 0;
  int64_t total = 0;
  std::vector<char> buf(64 << 10);
  while (true) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return Unreadable(format, ArchiveError(a.get()));
    if (++entries > limits.max_entries) {
      return Unreadable(format, absl::StrCat("more than ", limits.max_entries, " entries"));
    }
    const char* raw = archive_entry_pathname(entry);
    if (raw == nullptr) raw = archive_entry_pathname_utf8(entry);
    std::string name = raw == nullptr ? "" : raw;
    mode_t type = archive_entry_filetype(entry);
    if (type == AE_IFDIR) continue;
    KILN_ASSIGN_OR_RETURN(std::vector<std::string> path, Components(name));
    if (path.empty() || path[0] == "__MACOSX") continue;  // Finder's resource forks
    if (type != AE_IFREG) {
      return absl::InvalidArgumentError(absl::StrCat(
          "entry \"", name, "\" of the upload is not a regular file (links are not allowed)"));
    }
    if (archive_entry_is_encrypted(entry)) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry \"", name, "\" of the upload is encrypted"));
    }
    Entry e{std::move(path), "", false};
    size_t keep = visit(e.path);
    if (keep > 0) {
      e.has_data = true;
      while (true) {
        la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) return Unreadable(format, ArchiveError(a.get()));
        total += n;
        if (total > limits.max_total_bytes) {
          return Unreadable(format, absl::StrCat("its files hold more than ",
                                                 limits.max_total_bytes, " bytes uncompressed"));
        }
        if (e.data.size() + static_cast<size_t>(n) > keep) {
          return absl::InvalidArgumentError(
              absl::StrCat("\"", name, "\" in the upload is over ", keep, " bytes"));
        }
        e.data.append(buf.data(), static_cast<size_t>(n));
      }
    }
    KILN_RETURN_IF_ERROR(visit.Done(std::move(e)));
  }
  return absl::OkStatus();
}

// What a ZIP's entry names say about it.
struct ZipShape {
  bool torchscript = false;
  bool torch_save = false;  // torch.save's zip: data.pkl and version, but no code
  std::optional<std::string> signature;
};

// Reads a ZIP's names (and extra/signature.json) to tell a TorchScript file apart.
absl::StatusOr<ZipShape> ShapeOfZip(std::string_view bytes, const ModelFileLimits& limits) {
  struct Visitor {
    const ModelFileLimits& limits;
    std::vector<std::vector<std::string>> paths;
    std::optional<std::pair<std::string, std::string>> signature;  // top folder, text
    size_t operator()(const std::vector<std::string>& path) const {
      bool is_signature = path.size() == 3 && path[1] == "extra" && path[2] == kSignatureFile;
      return is_signature ? static_cast<size_t>(limits.max_signature_bytes) : 0;
    }
    absl::Status Done(Entry e) {
      if (e.has_data) signature.emplace(e.path[0], std::move(e.data));
      paths.push_back(std::move(e.path));
      return absl::OkStatus();
    }
  } visitor{limits, {}, std::nullopt};
  KILN_RETURN_IF_ERROR(Walk(bytes, /*tar_gz=*/false, limits, visitor));
  ZipShape shape;
  if (visitor.paths.empty()) return shape;
  // TorchScript keeps every entry under one top folder.
  const std::string& root = visitor.paths[0][0];
  bool data_pkl = false, constants = false, code = false, version = false;
  for (const auto& p : visitor.paths) {
    if (p.size() < 2 || p[0] != root) return shape;
    data_pkl |= p.size() == 2 && p[1] == "data.pkl";
    constants |= p.size() == 2 && p[1] == "constants.pkl";
    version |= (p.size() == 2 && p[1] == "version") ||
               (p.size() == 3 && p[1] == ".data" && p[2] == "version");
    code |= p.size() > 2 && p[1] == "code";
  }
  shape.torchscript = data_pkl && constants && code;
  shape.torch_save = data_pkl && version && !shape.torchscript;
  if (visitor.signature && visitor.signature->first == root) {
    shape.signature = std::move(visitor.signature->second);
  }
  return shape;
}

std::string Basename(const std::vector<std::string>& path) { return path.back(); }

}  // namespace

bool IsTorchScript(std::string_view bytes, const ModelFileLimits& limits) {
  if (bytes.substr(0, 4) != kZipMagic) return false;
  absl::StatusOr<ZipShape> shape = ShapeOfZip(bytes, limits);
  return shape.ok() && shape->torchscript;
}

absl::Status CheckTorchScript(std::string_view name, std::string_view bytes,
                              const ModelFileLimits& limits) {
  const std::string quoted = absl::StrCat("\"", std::string(name), "\"");
  if (bytes.empty())
    return absl::InvalidArgumentError(absl::StrCat("the model file ", quoted, " is empty"));
  if (bytes.substr(0, 4) == kZipMagic) {
    absl::StatusOr<ZipShape> shape = ShapeOfZip(bytes, limits);
    if (shape.ok() && shape->torchscript) return absl::OkStatus();
    if (shape.ok() && shape->torch_save) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model file ", quoted,
                       " was written by torch.save (pickled weights or a pickled module), which "
                       "kiln-serve cannot run without your Python code: ",
                       kSaveHelp));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "the model file ", quoted,
      " is not TorchScript (torch.jit.save writes a ZIP archive with the model's code and "
      "weights; a state_dict saved with torch.save is not enough): ",
      kSaveHelp));
}

absl::StatusOr<std::optional<std::string>> EmbeddedSignature(std::string_view bytes,
                                                             const ModelFileLimits& limits) {
  if (bytes.substr(0, 4) != kZipMagic) {
    return absl::InvalidArgumentError("the model file is not a TorchScript (ZIP) archive");
  }
  KILN_ASSIGN_OR_RETURN(ZipShape shape, ShapeOfZip(bytes, limits));
  if (!shape.torchscript) {
    return absl::InvalidArgumentError("the model file is not a TorchScript archive");
  }
  return std::move(shape.signature);
}

absl::StatusOr<UploadedModel> ModelFromUpload(std::string_view bytes,
                                              const ModelFileLimits& limits) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the upload is empty; send the TorchScript file (", kSaveHelp,
                     "), or a .zip or .tar.gz holding it, as the body"));
  }
  const bool zip = bytes.substr(0, 4) == kZipMagic;
  if (zip) {
    KILN_ASSIGN_OR_RETURN(ZipShape shape, ShapeOfZip(bytes, limits));
    if (shape.torchscript) {
      UploadedModel model{"model.pt", std::string(bytes), std::move(shape.signature), ""};
      if (model.signature_json) model.signature_source = "the signature saved inside the file";
      return model;
    }
    if (shape.torch_save) return CheckTorchScript("upload", bytes, limits);
  } else if (!IsGzip(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the upload is neither a TorchScript file nor a .zip or .tar.gz holding "
                     "one; ",
                     kSaveHelp));
  }

  // An archive around the model: keep the files that are ZIPs (TorchScript candidates)
  // and every signature.json.
  struct Visitor {
    const ModelFileLimits& limits;
    std::vector<Entry> kept;
    size_t operator()(const std::vector<std::string>& path) const {
      (void)path;
      return static_cast<size_t>(limits.max_total_bytes);  // decided on the bytes, in Done
    }
    absl::Status Done(Entry e) {
      bool signature = Basename(e.path) == kSignatureFile;
      if (signature && static_cast<int64_t>(e.data.size()) > limits.max_signature_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("\"", absl::StrJoin(e.path, "/"),
                                                       "\" in the upload is over ",
                                                       limits.max_signature_bytes, " bytes"));
      }
      if (signature || e.data.substr(0, 4) == kZipMagic) kept.push_back(std::move(e));
      return absl::OkStatus();
    }
  } visitor{limits, {}};
  KILN_RETURN_IF_ERROR(Walk(bytes, /*tar_gz=*/!zip, limits, visitor));

  // Each candidate's shape is kept: the chosen one's embedded signature comes with it.
  std::vector<std::pair<const Entry*, ZipShape>> models;
  std::vector<std::string> other_zips;
  for (const Entry& e : visitor.kept) {
    if (Basename(e.path) == kSignatureFile) continue;
    absl::StatusOr<ZipShape> shape = ShapeOfZip(e.data, limits);
    if (shape.ok() && shape->torchscript) {
      models.emplace_back(&e, *std::move(shape));
    } else {
      other_zips.push_back(absl::StrJoin(e.path, "/"));
    }
  }
  const char* format = zip ? ".zip" : ".tar.gz";
  if (models.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", format, " holds no TorchScript file",
        other_zips.empty()
            ? ""
            : absl::StrCat(" (", absl::StrJoin(other_zips, ", "), " are ZIPs but not TorchScript)"),
        "; put the model saved by kiln.save_model or torch.jit.save in it, or upload that "
        "file alone"));
  }
  if (models.size() > 1) {
    std::vector<std::string> names;
    for (const auto& [e, shape] : models) names.push_back(absl::StrJoin(e->path, "/"));
    return absl::InvalidArgumentError(
        absl::StrCat("the ", format, " holds ", models.size(), " TorchScript files (",
                     absl::StrJoin(names, ", "), "); a model version is one: upload one"));
  }
  const Entry& model_entry = *models[0].first;
  UploadedModel model;
  model.file_name = Basename(model_entry.path);
  model.torchscript = model_entry.data;
  // signature.json beside the file (what kiln.save_model writes), else the one inside it.
  std::vector<std::string> beside = model_entry.path;
  beside.back() = kSignatureFile;
  for (const Entry& e : visitor.kept) {
    if (e.path == beside) {
      model.signature_json = e.data;
      model.signature_source = absl::StrCat("the upload's ", absl::StrJoin(beside, "/"));
    }
  }
  if (!model.signature_json && models[0].second.signature) {
    model.signature_json = std::move(models[0].second.signature);
    model.signature_source = absl::StrCat("the signature saved inside ", model.file_name);
  }
  return model;
}

}  // namespace kiln::serving
