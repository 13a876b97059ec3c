// The only translation unit of kiln-serve that includes LibTorch. c10::Error and other
// exceptions from LibTorch are caught here and become a Status.
#include "kiln/torch/jit_engine.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <cstring>
#include <exception>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln::torch {
namespace {

using serving::DType;
using serving::Tensor;

c10::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return c10::kFloat;
    case DType::kFloat64:
      return c10::kDouble;
    case DType::kInt64:
      return c10::kLong;
    case DType::kInt32:
      return c10::kInt;
    case DType::kBool:
      return c10::kBool;
  }
  return c10::kFloat;
}

// The first line of a LibTorch message (the rest is a C++ or TorchScript backtrace that
// means nothing to the caller of a REST API).
std::string FirstLines(const std::string& what, int lines = 3) {
  size_t pos = 0;
  for (int i = 0; i < lines; ++i) {
    pos = what.find('\n', pos);
    if (pos == std::string::npos) return what;
    ++pos;
  }
  return what.substr(0, pos - 1);
}

// The message of a TorchScript error without its backtrace: TorchScript puts the
// Python-side exception ("RuntimeError: ...") at the end of a long trace.
std::string ErrorMessage(const std::exception& e) {
  std::string what = e.what();
  const size_t runtime = what.rfind("RuntimeError: ");
  if (runtime != std::string::npos) return FirstLines(what.substr(runtime), 2);
  return FirstLines(what);
}

bool ShapeMatches(const std::vector<int64_t>& per_sample, c10::IntArrayRef actual) {
  if (actual.size() != per_sample.size() + 1) return false;
  for (size_t i = 0; i < per_sample.size(); ++i) {
    if (per_sample[i] != -1 && per_sample[i] != actual[i + 1]) return false;
  }
  return true;
}

}  // namespace

struct JitEngine::Model {
  ::torch::jit::Module module;
};

JitEngine::JitEngine(std::unique_ptr<Model> model, serving::Signature signature)
    : model_(std::move(model)), signature_(std::move(signature)) {}

JitEngine::~JitEngine() = default;

absl::StatusOr<std::unique_ptr<JitEngine>> JitEngine::Load(const std::string& path,
                                                           serving::Signature signature,
                                                           JitEngineOptions options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file ", path,
                     " does not exist or is not a regular file; pass --model with the "
                     "TorchScript file saved by torch.jit.save or kiln.save_model"));
  }
  ::torch::jit::getProfilingMode() = options.profiling_executor;
  ::torch::jit::getExecutorMode() = options.profiling_executor;
  auto model = std::make_unique<Model>();
  try {
    // Onto the CPU: a file saved from a GPU model records its weights as CUDA tensors.
    model->module = ::torch::jit::load(path, ::torch::kCPU);
    model->module.eval();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load ", path, " as TorchScript (", ErrorMessage(e),
                     "); save the model with torch.jit.save(torch.jit.script(model), path) or "
                     "kiln.save_model"));
  }
  if (options.freeze) {
    try {
      model->module = ::torch::jit::freeze(model->module);
    } catch (const std::exception&) {
      // Some modules (e.g. with attributes mutated in forward) cannot be frozen; they run
      // unfrozen, which is only slower.
    }
  }
  return std::unique_ptr<JitEngine>(new JitEngine(std::move(model), std::move(signature)));
}

void JitEngine::PrepareThread() { at::set_num_threads(1); }

absl::StatusOr<std::vector<Tensor>> JitEngine::Run(const std::vector<Tensor>& batched_inputs) {
  try {
    c10::InferenceMode guard;
    std::vector<c10::IValue> args;
    args.reserve(batched_inputs.size());
    for (const Tensor& in : batched_inputs) {
      // The request's bytes are wrapped, not copied; they outlive the forward.
      args.emplace_back(::torch::from_blob(const_cast<char*>(in.bytes.data()), in.shape,
                                           ::torch::TensorOptions().dtype(ToScalarType(in.dtype))));
    }
    c10::IValue result = model_->module.forward(std::move(args));

    std::vector<at::Tensor> tensors;
    if (result.isTensor()) {
      tensors.push_back(result.toTensor());
    } else if (result.isTuple()) {
      for (const c10::IValue& v : result.toTupleRef().elements()) {
        if (!v.isTensor()) {
          return absl::InternalError("the model returned a tuple with a non-tensor element");
        }
        tensors.push_back(v.toTensor());
      }
    } else if (result.isTensorList()) {
      for (const at::Tensor& t : result.toTensorVector()) tensors.push_back(t);
    } else {
      return absl::InternalError(absl::StrCat("the model returned a ", result.tagKind(),
                                              ", expected a tensor or a tuple of tensors"));
    }
    if (tensors.size() != signature_.outputs.size()) {
      return absl::InternalError(absl::StrCat("the model returned ", tensors.size(),
                                              " tensors, its signature names ",
                                              signature_.outputs.size(), " outputs"));
    }

    std::vector<Tensor> outputs(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const DType dtype = signature_.outputs[i].dtype;
      at::Tensor t = tensors[i].to(::torch::kCPU, ToScalarType(dtype)).contiguous();
      Tensor& out = outputs[i];
      out.dtype = dtype;
      out.shape.assign(t.sizes().begin(), t.sizes().end());
      out.bytes.resize(t.nbytes());
      if (t.nbytes() > 0) std::memcpy(out.bytes.data(), t.data_ptr(), t.nbytes());
    }
    return outputs;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the model failed: ", ErrorMessage(e)));
  }
}

absl::Status JitEngine::WarmUp(int64_t batch) {
  std::vector<Tensor> inputs;
  for (const serving::TensorSpec& spec : signature_.inputs) {
    Tensor t;
    t.dtype = spec.dtype;
    t.shape.push_back(batch);
    for (int64_t d : spec.shape) t.shape.push_back(d == -1 ? 1 : d);
    t.bytes.assign(
        static_cast<size_t>(batch * serving::SampleElements(spec)) * serving::DTypeSize(spec.dtype),
        '\0');
    inputs.push_back(std::move(t));
  }
  absl::StatusOr<std::vector<Tensor>> outputs = Run(inputs);
  if (!outputs.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("the model does not accept its signature (",
                                                      serving::DescribeSignature(signature_),
                                                      "): ", outputs.status().message()));
  }
  for (size_t i = 0; i < outputs->size(); ++i) {
    const serving::TensorSpec& spec = signature_.outputs[i];
    const Tensor& out = (*outputs)[i];
    if (out.shape.empty() || out.shape[0] != batch || !ShapeMatches(spec.shape, out.shape)) {
      std::vector<int64_t> per_sample(out.shape.begin() + (out.shape.empty() ? 0 : 1),
                                      out.shape.end());
      return absl::FailedPreconditionError(absl::StrCat(
          "the model's output \"", spec.name, "\" has shape ", serving::DescribeShape(out.shape),
          " for a batch of ", batch, ", the signature says per-sample shape ",
          serving::DescribeShape(spec.shape), " (shape ", serving::DescribeShape(per_sample),
          " per sample); fix the signature's outputs"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln::torch
