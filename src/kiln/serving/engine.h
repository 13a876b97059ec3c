// engine.h
//
// Defines `Engine`, the seam between kiln-serve's HTTP and batching layers and the thing
// that computes predictions. The TorchScript engine (src/kiln/torch/jit_engine.h) is the
// real one; tests of the batcher and the server use small engines that compute checkable
// values without LibTorch.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kiln/serving/codec.h"

namespace kiln::serving {

// Computes one batch. Implementations are called from several batch worker threads at
// once (one Run per thread at a time), so Run must be thread-safe.
class Engine {
 public:
  virtual ~Engine() = default;

  // `batched_inputs` holds one tensor per signature input, each [batch, *shape] with the
  // same batch. Returns one tensor per signature output, each with `batch` as dim 0.
  // Any error fails every request of the batch (kiln-serve answers 500 with its message).
  virtual absl::StatusOr<std::vector<Tensor>> Run(const std::vector<Tensor>& batched_inputs) = 0;

  // Called once on each batch worker thread before its first Run (e.g. to pin the
  // library's intra-op thread count). The default does nothing.
  virtual void PrepareThread() {}
};

}  // namespace kiln::serving
