// `Train`, `EvaluateSavedModel` and the LibTorch pieces they share with the elastic loop
// (trainer_internal.h). Every LibTorch call runs inside `Train` / `EvaluateSavedModel` (or
// `TrainElastic`), whose try/catch turns `c10::Error` into a Status.
#include "kiln/torch/trainer.h"

#include <dlfcn.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/torch/hyperparameters.h"
#include "kiln/torch/idx_reader.h"
#include "kiln/torch/trainer_internal.h"

namespace kiln::torch {
namespace internal {
namespace {

constexpr int64_t kSide = 28;
constexpr int64_t kPixels = kSide * kSide;
// Mean and standard deviation of Fashion-MNIST training pixels scaled to [0, 1].
constexpr double kPixelMean = 0.2860;
constexpr double kPixelStd = 0.3530;
// Evaluation batch: large, since no activations are kept for backward.
constexpr int64_t kEvalBatch = 1000;

using ::torch::Tensor;

absl::StatusOr<IdxArray> ReadDatasetFile(const std::string& dir, const std::string& name) {
  // Debian ships the files gzipped; accept the unpacked form too (torchvision's layout).
  for (const std::string& candidate :
       {absl::StrCat(dir, "/", name, ".gz"), absl::StrCat(dir, "/", name)}) {
    auto array = ReadIdxFile(candidate);
    if (!absl::IsNotFound(array.status())) return array;
  }
  return absl::NotFoundError(absl::StrCat("dataset file ", dir, "/", name, "[.gz] not found"));
}

// The start of every exported forward(): raw pixels in, normalized [N, 1, 28, 28] out.
std::string ScriptPrologue() {
  return absl::StrFormat(
      "def forward(self, x):\n"
      "    x = x.float().reshape([-1, 1, %d, %d])\n"
      "    x = (x / 255.0 - %.6f) / %.6f\n",
      kSide, kSide, kPixelMean, kPixelStd);
}

}  // namespace

absl::StatusOr<Split> LoadSplit(const std::string& dir, const std::string& prefix, int64_t limit) {
  KILN_ASSIGN_OR_RETURN(IdxArray images,
                        ReadDatasetFile(dir, absl::StrCat(prefix, "-images-idx3-ubyte")));
  KILN_ASSIGN_OR_RETURN(IdxArray labels,
                        ReadDatasetFile(dir, absl::StrCat(prefix, "-labels-idx1-ubyte")));
  if (images.dims.size() != 3 || images.dims[1] != kSide || images.dims[2] != kSide) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/", prefix, " images must be N x 28 x 28, got ", images.dims.size(), " dimensions"));
  }
  if (labels.dims.size() != 1 || labels.dims[0] != images.dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/", prefix, ": labels must be one dimension of ", images.dims[0], " entries"));
  }
  const auto bad = std::find_if(labels.data.begin(), labels.data.end(),
                                [](uint8_t label) { return label >= kClasses; });
  if (bad != labels.data.end()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", prefix, ": label ", *bad, " at index ",
                                                   bad - labels.data.begin(),
                                                   " is not a class in [0, 10)"));
  }
  const int64_t n = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  if (n == 0) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", prefix, " has no samples"));
  }
  // from_blob borrows; .to() copies into tensors that own their memory.
  Split split;
  split.pixels = ::torch::from_blob(images.data.data(), {n, 1, kSide, kSide}, ::torch::kUInt8)
                     .to(::torch::kFloat32);
  split.labels = ::torch::from_blob(labels.data.data(), {n}, ::torch::kUInt8).to(::torch::kInt64);
  return split;
}

// In place: the training set is 188 MB as float, so one copy is enough.
void Normalize(Tensor& pixels) { pixels.div_(255.0).sub_(kPixelMean).div_(kPixelStd); }

namespace {

// 784 - hidden - 10 with ReLU.
class Mlp final : public Classifier {
 public:
  explicit Mlp(int hidden)
      : fc1_(register_module("fc1", ::torch::nn::Linear(kPixels, hidden))),
        fc2_(register_module("fc2", ::torch::nn::Linear(hidden, kClasses))) {}

  Tensor forward(Tensor x) override {
    x = ::torch::relu(fc1_->forward(x.reshape({x.size(0), kPixels})));
    return fc2_->forward(x);
  }

  std::string ScriptSource() const override {
    return ScriptPrologue() +
           absl::StrFormat(
               "    x = x.reshape([x.size(0), %d])\n"
               "    x = torch.relu(torch.addmm(self.fc1_bias, x, self.fc1_weight.t()))\n"
               "    return torch.addmm(self.fc2_bias, x, self.fc2_weight.t())\n",
               kPixels);
  }

 private:
  ::torch::nn::Linear fc1_;
  ::torch::nn::Linear fc2_;
};

// conv5x5(16) - ReLU - maxpool2 - conv5x5(32) - ReLU - maxpool2 - FC(hidden) - ReLU - FC(10).
class Cnn final : public Classifier {
 public:
  explicit Cnn(int hidden)
      : conv1_(register_module(
            "conv1", ::torch::nn::Conv2d(::torch::nn::Conv2dOptions(1, kConv1, 5).padding(2)))),
        conv2_(register_module(
            "conv2",
            ::torch::nn::Conv2d(::torch::nn::Conv2dOptions(kConv1, kConv2, 5).padding(2)))),
        fc1_(register_module("fc1", ::torch::nn::Linear(kConv2 * 7 * 7, hidden))),
        fc2_(register_module("fc2", ::torch::nn::Linear(hidden, kClasses))) {}

  Tensor forward(Tensor x) override {
    x = ::torch::max_pool2d(::torch::relu(conv1_->forward(x)), {2, 2});
    x = ::torch::max_pool2d(::torch::relu(conv2_->forward(x)), {2, 2});
    x = ::torch::relu(fc1_->forward(x.reshape({x.size(0), -1})));
    return fc2_->forward(x);
  }

  std::string ScriptSource() const override {
    return ScriptPrologue() +
           "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv1_weight, "
           "self.conv1_bias, [1, 1], [2, 2])), [2, 2])\n"
           "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv2_weight, "
           "self.conv2_bias, [1, 1], [2, 2])), [2, 2])\n"
           "    x = x.reshape([x.size(0), -1])\n"
           "    x = torch.relu(torch.addmm(self.fc1_bias, x, self.fc1_weight.t()))\n"
           "    return torch.addmm(self.fc2_bias, x, self.fc2_weight.t())\n";
  }

 private:
  static constexpr int64_t kConv1 = 16;
  static constexpr int64_t kConv2 = 32;
  ::torch::nn::Conv2d conv1_;
  ::torch::nn::Conv2d conv2_;
  ::torch::nn::Linear fc1_;
  ::torch::nn::Linear fc2_;
};

}  // namespace

std::shared_ptr<Classifier> MakeClassifier(const std::string& model, int hidden) {
  if (model == "cnn") return std::make_shared<Cnn>(hidden);
  return std::make_shared<Mlp>(hidden);
}

// Sets LibTorch's intra-op threads and, when the process loaded OpenBLAS (Debian's
// libopenblas0-pthread), OpenBLAS's too: OpenBLAS ignores torch::set_num_threads and reads
// OPENBLAS_NUM_THREADS only when it is loaded, before main.
int SetThreads(int requested) {
  const int threads = requested > 0
                          ? requested
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  ::torch::set_num_threads(threads);
  using SetNumThreads = void (*)(int);
  if (void* symbol = dlsym(RTLD_DEFAULT, "openblas_set_num_threads"); symbol != nullptr) {
    reinterpret_cast<SetNumThreads>(symbol)(threads);
  }
  return threads;
}

EvalResult Evaluate(const std::function<Tensor(const Tensor&)>& forward, const Tensor& inputs,
                    const Tensor& labels) {
  ::torch::NoGradGuard no_grad;
  double loss_sum = 0;
  int64_t correct = 0;
  const int64_t n = inputs.size(0);
  for (int64_t begin = 0; begin < n; begin += kEvalBatch) {
    const int64_t end = std::min(n, begin + kEvalBatch);
    const Tensor logits = forward(inputs.slice(0, begin, end));
    const Tensor y = labels.slice(0, begin, end);
    loss_sum +=
        ::torch::nn::functional::cross_entropy(
            logits, y, ::torch::nn::functional::CrossEntropyFuncOptions().reduction(::torch::kSum))
            .item<double>();
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  return {.loss = loss_sum / static_cast<double>(n),
          .accuracy = static_cast<double>(correct) / static_cast<double>(n),
          .samples = n};
}

// Copies the trained parameters into a TorchScript module whose forward() is `model`'s
// ScriptSource(), and publishes it atomically at `path`.
absl::Status SaveTorchScript(const Classifier& model, const std::string& model_name,
                             const std::string& path) {
  ::torch::jit::Module script(absl::StrCat("kiln.FashionMnist", model_name));
  for (const auto& parameter : model.named_parameters()) {
    script.register_parameter(absl::StrReplaceAll(parameter.key(), {{".", "_"}}),
                              parameter.value().detach().clone(), /*is_buffer=*/false);
  }
  script.define(model.ScriptSource());
  std::ostringstream bytes;
  script.save(bytes);
  if (const auto parent = std::filesystem::path(path).parent_path(); !parent.empty()) {
    KILN_RETURN_IF_ERROR(base::MakeDirs(parent.string()));
  }
  return base::WriteFileAtomically(path, bytes.str());
}

}  // namespace internal

namespace {

using internal::Classifier;
using internal::Evaluate;
using internal::kClasses;
using internal::LoadSplit;
using internal::MakeClassifier;
using internal::Normalize;
using internal::SaveTorchScript;
using internal::SetThreads;
using internal::Split;
using ::torch::Tensor;

void Log(const std::function<void(std::string_view)>& log_line, const std::string& line) {
  if (log_line) log_line(line);
}

absl::StatusOr<std::vector<EpochResult>> TrainUnchecked(
    const TrainOptions& options, MetricsSink& sink,
    const std::function<void(std::string_view)>& log_line) {
  KILN_RETURN_IF_ERROR(ValidateTrainOptions(options));
  const int threads = SetThreads(options.threads);
  ::torch::manual_seed(options.seed);

  KILN_ASSIGN_OR_RETURN(Split train, LoadSplit(options.data_dir, "train", options.train_limit));
  KILN_ASSIGN_OR_RETURN(Split test, LoadSplit(options.data_dir, "t10k", options.test_limit));
  Normalize(train.pixels);
  Normalize(test.pixels);
  const Tensor& train_inputs = train.pixels;
  const Tensor& test_inputs = test.pixels;

  std::shared_ptr<Classifier> model = MakeClassifier(options.model, options.hidden);
  int64_t num_parameters = 0;
  for (const Tensor& p : model->parameters()) num_parameters += p.numel();
  ::torch::optim::SGD optimizer(model->parameters(),
                                ::torch::optim::SGDOptions(options.lr).momentum(options.momentum));

  const int64_t n = train_inputs.size(0);
  const int64_t batches = (n + options.batch_size - 1) / options.batch_size;
  Log(log_line, absl::StrFormat("model %s (%d parameters), %d train / %d test samples, "
                                "batch %d, lr %g, momentum %g, %d threads",
                                options.model, num_parameters, n, test_inputs.size(0),
                                options.batch_size, options.lr, options.momentum, threads));

  std::vector<EpochResult> results;
  int64_t global_step = 0;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    const int64_t start = base::MonotonicMicros();
    model->train();
    // Drawn from the generator seeded above, so a run's shuffles repeat with its seed.
    const Tensor order = ::torch::randperm(n, ::torch::TensorOptions().dtype(::torch::kInt64));
    double epoch_loss = 0;
    double window_loss = 0;
    int window = 0;
    for (int64_t batch = 0; batch < batches; ++batch) {
      const Tensor index =
          order.slice(0, batch * options.batch_size, std::min(n, (batch + 1) * options.batch_size));
      const Tensor x = train_inputs.index_select(0, index);
      const Tensor y = train.labels.index_select(0, index);
      optimizer.zero_grad();
      Tensor loss = ::torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      optimizer.step();
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "training diverged: loss is %g at epoch %d batch %d; lower the learning rate "
            "(lr %g)",
            value, epoch, batch + 1, options.lr));
      }
      ++global_step;
      epoch_loss += value;
      window_loss += value;
      ++window;
      if (options.log_every > 0 && (batch + 1) % options.log_every == 0) {
        const double mean = window_loss / window;
        sink.Report(global_step, "train", {{"loss", mean}});
        Log(log_line, absl::StrFormat("epoch %d/%d batch %d/%d loss %.4f", epoch, options.epochs,
                                      batch + 1, batches, mean));
        window_loss = 0;
        window = 0;
      }
    }
    model->eval();
    const EvalResult eval =
        Evaluate([&](const Tensor& x) { return model->forward(x); }, test_inputs, test.labels);
    const double seconds = static_cast<double>(base::MonotonicMicros() - start) / 1e6;
    results.push_back({.epoch = epoch,
                       .train_loss = epoch_loss / static_cast<double>(batches),
                       .test_loss = eval.loss,
                       .test_accuracy = eval.accuracy,
                       .seconds = seconds});
    sink.Report(epoch, "test", {{"loss", eval.loss}, {"accuracy", eval.accuracy}});
    Log(log_line,
        absl::StrFormat("epoch %d train_loss %.4f test_loss %.4f test_accuracy %.4f (%.1f s)",
                        epoch, results.back().train_loss, eval.loss, eval.accuracy, seconds));
  }

  if (!options.save_model_path.empty()) {
    KILN_RETURN_IF_ERROR(SaveTorchScript(*model, options.model, options.save_model_path));
    Log(log_line, absl::StrCat("saved TorchScript model to ", options.save_model_path));
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<EpochResult>> Train(const TrainOptions& options, MetricsSink& sink,
                                               std::function<void(std::string_view)> log_line) {
  try {
    return TrainUnchecked(options, sink, log_line);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

absl::StatusOr<EvalResult> EvaluateSavedModel(const std::string& model_path,
                                              const std::string& data_dir, int64_t test_limit) {
  try {
    KILN_ASSIGN_OR_RETURN(Split test, LoadSplit(data_dir, "t10k", test_limit));
    ::torch::jit::Module module = ::torch::jit::load(model_path);
    module.eval();
    std::string shape_error;
    auto forward = [&](const Tensor& x) {
      Tensor logits = module.forward({x}).toTensor();
      if (logits.dim() != 2 || logits.size(0) != x.size(0) || logits.size(1) != kClasses) {
        shape_error = absl::StrCat("model output has shape ", c10::str(logits.sizes()),
                                   "; expected [", x.size(0), ", 10]");
        return ::torch::zeros({x.size(0), kClasses});
      }
      return logits;
    };
    EvalResult result = Evaluate(forward, test.pixels, test.labels);
    if (!shape_error.empty()) return absl::InvalidArgumentError(shape_error);
    return result;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot evaluate ", model_path, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot evaluate ", model_path, ": ", e.what()));
  }
}

}  // namespace kiln::torch
