#include "kiln/torch/elastic_step.h"

#include "absl/strings/str_cat.h"

namespace kiln::torch::internal {

Share ShareOf(int64_t begin, int64_t end, int rank, int world) {
  const int64_t count = end - begin;
  return {.begin = begin + count * rank / world, .end = begin + count * (rank + 1) / world};
}

TrainState::TrainState(Classifier& model) : model_(model) {
  for (const ::torch::Tensor& p : model_.parameters()) {
    parameters_.push_back(p);
    momentum_.push_back(::torch::zeros_like(p));
    num_parameters_ += p.numel();
  }
}

::torch::Tensor TrainState::StepVector(const ::torch::Tensor& x, const ::torch::Tensor& y,
                                       int64_t global_count, bool pending) {
  std::vector<::torch::Tensor> pieces;
  pieces.reserve(parameters_.size() + 1);
  double loss_value = 0;
  if (x.size(0) > 0) {
    model_.zero_grad();
    // Sum over this share, divided by the whole batch's count: the ranks' gradients then
    // add up to the mean-loss gradient of the global batch even when shares differ.
    ::torch::Tensor loss =
        ::torch::nn::functional::cross_entropy(
            model_.forward(x), y,
            ::torch::nn::functional::CrossEntropyFuncOptions().reduction(::torch::kSum)) /
        static_cast<double>(global_count);
    loss.backward();
    loss_value = loss.item<double>();
    for (const ::torch::Tensor& p : parameters_) pieces.push_back(p.grad().reshape(-1));
  } else {
    for (const ::torch::Tensor& p : parameters_) pieces.push_back(::torch::zeros({p.numel()}));
  }
  pieces.push_back(::torch::tensor({static_cast<float>(loss_value), pending ? 1.0f : 0.0f}));
  return ::torch::cat(pieces);
}

void TrainState::Apply(const ::torch::Tensor& summed, double lr, double momentum) {
  ::torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const int64_t n = parameters_[i].numel();
    const ::torch::Tensor grad = summed.slice(0, offset, offset + n).view_as(parameters_[i]);
    momentum_[i].mul_(momentum).add_(grad);
    parameters_[i].sub_(momentum_[i] * lr);
    offset += n;
  }
}

::torch::Tensor TrainState::Pack() const {
  std::vector<::torch::Tensor> pieces;
  for (const auto& p : parameters_) pieces.push_back(p.detach().reshape(-1));
  for (const auto& m : momentum_) pieces.push_back(m.reshape(-1));
  return ::torch::cat(pieces);
}

absl::Status TrainState::Unpack(const ::torch::Tensor& packed) {
  if (packed.dim() != 1 || packed.numel() != 2 * num_parameters_) {
    return absl::InvalidArgumentError(absl::StrCat("model state of ", packed.numel(),
                                                   " values does not fit a model of ",
                                                   num_parameters_, " parameters"));
  }
  ::torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto* tensors : {&parameters_, &momentum_}) {
    for (::torch::Tensor& t : *tensors) {
      t.copy_(packed.slice(0, offset, offset + t.numel()).view_as(t));
      offset += t.numel();
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln::torch::internal
