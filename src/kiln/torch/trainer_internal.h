// trainer_internal.h
//
// The LibTorch pieces that `Train` (trainer.cc) shares with the elastic loop
// (elastic_trainer.cc): a dataset split in memory, the two model families, evaluation and
// TorchScript export. Includes LibTorch, so only TUs under src/kiln/torch include it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kiln/torch/trainer.h"

namespace kiln::torch::internal {

inline constexpr int64_t kClasses = 10;

// One split of the dataset, in memory.
struct Split {
  ::torch::Tensor pixels;  // float32 [N, 1, 28, 28]: raw values in [0, 255] until Normalize
  ::torch::Tensor labels;  // int64 [N], in [0, 10)
};

// Reads `<dir>/<prefix>-{images-idx3,labels-idx1}-ubyte[.gz]`, keeping the first `limit`
// samples (0 = all). NotFound for a missing file, InvalidArgument for a malformed one.
[[nodiscard]] absl::StatusOr<Split> LoadSplit(const std::string& dir, const std::string& prefix,
                                              int64_t limit);

// Scales raw pixels to zero mean and unit variance (Fashion-MNIST's), in place.
void Normalize(::torch::Tensor& pixels);

// A classifier of normalized [N, 1, 28, 28] images into 10 logits, which can also write
// its forward() as TorchScript source over its parameters (named with '_' for '.').
class Classifier : public ::torch::nn::Module {
 public:
  virtual ::torch::Tensor forward(::torch::Tensor x) = 0;
  virtual std::string ScriptSource() const = 0;
};

// `model` is "mlp" or "cnn" (anything else: the MLP; options are validated before).
std::shared_ptr<Classifier> MakeClassifier(const std::string& model, int hidden);

// Sets LibTorch's and OpenBLAS's thread counts to `threads` (0 = all cores) and returns
// the count used.
int SetThreads(int threads);

// Loss and accuracy of `forward` over `inputs` in large batches, without gradients.
EvalResult Evaluate(const std::function<::torch::Tensor(const ::torch::Tensor&)>& forward,
                    const ::torch::Tensor& inputs, const ::torch::Tensor& labels);

// Writes `model` as TorchScript at `path`, atomically (see `Train`).
[[nodiscard]] absl::Status SaveTorchScript(const Classifier& model, const std::string& model_name,
                                           const std::string& path);

}  // namespace kiln::torch::internal
