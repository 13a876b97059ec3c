// jit_engine.h
//
// Defines `JitEngine`, kiln-serve's real `serving::Engine`: a TorchScript module loaded
// with torch::jit::load that runs batches in inference mode, one forward per batch worker
// thread with one intra-op thread each (so N workers use N cores). Tensors cross the
// boundary as packed bytes: inputs are wrapped without a copy, outputs copied out once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/serving/codec.h"
#include "kiln/serving/engine.h"
#include "kiln/serving/signature.h"

namespace kiln::torch {

struct JitEngineOptions {
  // TorchScript's profiling executor specializes the graph after a few profiled runs; the
  // legacy executor optimizes once up front, which suits a serving loop whose batch size
  // varies from call to call. Process-wide setting (applied by Load).
  bool profiling_executor = false;
  // Freeze the module (inline its parameters as constants and fold them) after loading.
  // Falls back to the unfrozen module when freezing fails.
  bool freeze = true;
};

// Thread-safety: Run may be called from several threads at once (TorchScript modules
// allow concurrent forwards).
class JitEngine : public serving::Engine {
 public:
  // Loads the TorchScript file at `path` for `signature`. InvalidArgument (saying what
  // the file is and how to produce a valid one) when it is missing or not TorchScript.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<JitEngine>> Load(
      const std::string& path, serving::Signature signature, JitEngineOptions options = {});
  ~JitEngine() override;

  absl::StatusOr<std::vector<serving::Tensor>> Run(
      const std::vector<serving::Tensor>& batched_inputs) override;

  // One intra-op thread on this worker thread.
  void PrepareThread() override;

  // Runs one batch of `batch` all-zero samples of the signature's shapes (-1 taken as 1)
  // and checks the outputs: their number and per-sample shapes must match the signature
  // (-1 matches any size). FailedPrecondition saying what did not match otherwise.
  [[nodiscard]] absl::Status WarmUp(int64_t batch = 1);

  const serving::Signature& signature() const { return signature_; }

 private:
  struct Model;
  JitEngine(std::unique_ptr<Model> model, serving::Signature signature);

  std::unique_ptr<Model> model_;
  const serving::Signature signature_;
};

}  // namespace kiln::torch
