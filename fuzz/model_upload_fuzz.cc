// model_upload_fuzz.cc
//
// Feeds arbitrary bytes to `ModelFromUpload`, as the body of a Watson ML model-content
// upload, and to `CheckTorchScript` / `EmbeddedSignature`. Every call must return, never
// crash; a found model must be a TorchScript archive itself, with a file name that is a
// bare name (no '/'), and a signature no larger than the limit.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/serving/model_file.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "model_upload_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  kiln::serving::ModelFileLimits limits;
  limits.max_entries = 1000;
  limits.max_total_bytes = 8 << 20;  // keeps a zip bomb in the corpus fast
  limits.max_signature_bytes = 4096;

  bool torchscript = kiln::serving::IsTorchScript(bytes, limits);
  Check(torchscript == kiln::serving::CheckTorchScript("f", bytes, limits).ok(),
        "IsTorchScript and CheckTorchScript disagree");
  auto embedded = kiln::serving::EmbeddedSignature(bytes, limits);
  Check(embedded.ok() == torchscript, "EmbeddedSignature reads a file that is not TorchScript");

  auto model = kiln::serving::ModelFromUpload(bytes, limits);
  if (!model.ok()) return 0;
  Check(kiln::serving::IsTorchScript(model->torchscript, limits),
        "the model found is not TorchScript");
  Check(!model->file_name.empty() && model->file_name.find('/') == std::string_view::npos,
        "the model's file name is not a bare name");
  Check(!model->signature_json ||
            static_cast<int64_t>(model->signature_json->size()) <= limits.max_signature_bytes,
        "a signature over the limit was kept");
  Check(!model->signature_json || !model->signature_source.empty(),
        "a signature without its source");
  return 0;
}
