// model_file.h
//
// Reads the model files users hand Kiln. A TorchScript file is a ZIP archive written by
// torch.jit.save: every entry sits under one folder (`archive/` or the file's stem), with
// `data.pkl` and `version` in it, and files saved with `_extra_files` under `extra/`.
// kiln.save_model puts the signature there as `extra/signature.json`, so a saved model.pt
// describes itself. Uploads through Watson ML may also wrap the file in a .zip or .tar.gz
// (WMLA's trainings write `model/trained_model.pt` beside an ONNX copy); `ModelFromUpload`
// finds the one TorchScript file and a `signature.json` beside it.
//
// Everything here parses untrusted bytes: only libarchive's ZIP, tar and gzip readers see
// them, and entry counts and uncompressed sizes are bounded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kiln::serving {

struct ModelFileLimits {
  int64_t max_entries = 100'000;
  int64_t max_total_bytes = int64_t{4} << 30;      // uncompressed: stops zip bombs
  int64_t max_signature_bytes = int64_t{1} << 20;  // a signature is a small JSON
};

// True when `bytes` is a TorchScript archive (see above). False for anything else,
// including a ZIP that wraps one.
bool IsTorchScript(std::string_view bytes, const ModelFileLimits& limits = {});

// OK when `bytes` is a TorchScript file; else InvalidArgument naming `name`, saying what
// it is instead (empty, a torch.save pickle, not a ZIP) and how to save one.
absl::Status CheckTorchScript(std::string_view name, std::string_view bytes,
                              const ModelFileLimits& limits = {});

// The `extra/signature.json` saved inside a TorchScript file (as text), nullopt when it
// has none. InvalidArgument when `bytes` is not a readable TorchScript archive or the
// entry is over the limit.
absl::StatusOr<std::optional<std::string>> EmbeddedSignature(std::string_view bytes,
                                                             const ModelFileLimits& limits = {});

struct UploadedModel {
  std::string file_name;    // the TorchScript file's base name ("model.pt" for a bare file)
  std::string torchscript;  // its bytes
  // The signature.json found beside it in an archive (as text), else the one saved inside
  // it; nullopt when neither exists.
  std::optional<std::string> signature_json;
  std::string signature_source;  // where signature_json came from, for messages
};

// The model in an upload: a bare TorchScript file, or a .zip or .tar.gz holding exactly
// one (at any depth; `__MACOSX/` is skipped). InvalidArgument saying what was found and
// what to upload instead: not an archive, no TorchScript file, several of them, links or
// names with "..", contents over the limits.
absl::StatusOr<UploadedModel> ModelFromUpload(std::string_view bytes,
                                              const ModelFileLimits& limits = {});

}  // namespace kiln::serving
