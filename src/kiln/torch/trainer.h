// trainer.h
//
// `Train`, the training loop of `kiln-train`: an MLP or a small CNN on Fashion-MNIST (or
// any IDX dataset laid out the same way), SGD with momentum, metrics reported through a
// `MetricsSink`. This header is torch-free so that apps and tests include it cheaply; the
// LibTorch code lives in trainer.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::torch {

struct TrainOptions {
  std::string model = "mlp";  // "mlp" (784-hidden-10) or "cnn" (2 conv layers + 2 FC)
  // Holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; Debian's
  // `dataset-fashion-mnist` installs them here.
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int epochs = 2;
  int batch_size = 64;
  double lr = 0.01;
  double momentum = 0.9;
  int hidden = 256;         // width of the hidden fully connected layer (both models)
  int threads = 0;          // intra-op threads for LibTorch and OpenBLAS; 0 = all cores
  int64_t train_limit = 0;  // 0 = the whole training set; N > 0 = its first N samples
  int64_t test_limit = 0;   // 0 = the whole test set; N > 0 = its first N samples
  uint64_t seed = 1;        // seeds initialization and the per-epoch shuffle
  // When non-empty, the trained model is written here as TorchScript (see `Train`).
  std::string save_model_path;
  int log_every = 100;  // batches between "train" reports and progress lines; 0 = never
};

struct EpochResult {
  int epoch = 0;          // 1-based
  double train_loss = 0;  // mean cross-entropy over the epoch's batches
  double test_loss = 0;
  double test_accuracy = 0;  // fraction in [0, 1]
  double seconds = 0;        // wall time of the epoch, evaluation included
};

// Receives metrics as training produces them. A seam: the emetrics file writer, the native
// API reporter and test fakes implement it. Called on the training thread only.
class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // `group` is "train" or "test" (WMLA's TRAIN_GROUP / TEST_GROUP); `step` is the global
  // batch index for "train" and the 1-based epoch for "test". Must not block for long.
  virtual void Report(int64_t step, std::string_view group,
                      const std::vector<std::pair<std::string, double>>& metrics) = 0;
};

// Trains `options.model` and returns one result per epoch. Reports to `sink`:
//   - group "train", step = global batch index (1-based), {"loss"}: the mean loss of the
//     last `log_every` batches, every `log_every` batches;
//   - group "test", step = epoch, {"loss", "accuracy"}: after each epoch.
// Progress lines ("epoch 1/2 batch 300/938 loss 0.512", "epoch 1 test_loss 0.43
// test_accuracy 0.846 (12.1 s)") go to `log_line` without a trailing newline.
//
// Sets LibTorch's intra-op thread count (and OpenBLAS's, when OpenBLAS is the loaded BLAS)
// to `options.threads`, a process-wide setting.
//
// With `save_model_path`, writes the trained model as a TorchScript module (atomically):
// `forward(x)` takes float pixel values in [0, 255], shaped [N, 784] or [N, 1, 28, 28], and
// returns logits [N, 10]; normalization is inside the module. Loadable by
// `torch::jit::load` and Python's `torch.jit.load`.
//
// Errors: InvalidArgument for bad options or a malformed dataset, NotFound when a dataset
// file is missing, Internal when LibTorch fails. Blocks for the whole run.
[[nodiscard]] absl::StatusOr<std::vector<EpochResult>> Train(
    const TrainOptions& options, MetricsSink& sink, std::function<void(std::string_view)> log_line);

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  int64_t samples = 0;
};

// Evaluates a TorchScript model saved by `Train` on the first `test_limit` samples (0 =
// all) of the test set in `data_dir`. InvalidArgument if the model cannot be loaded or
// does not produce [N, 10] logits.
[[nodiscard]] absl::StatusOr<EvalResult> EvaluateSavedModel(const std::string& model_path,
                                                            const std::string& data_dir,
                                                            int64_t test_limit = 0);

}  // namespace kiln::torch
