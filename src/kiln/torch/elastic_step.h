// elastic_step.h
//
// The arithmetic of one elastic training step, apart from the loop (elastic_trainer.cc)
// so that tests can drive it rank by rank: how a global batch is split over the ranks of
// a generation, the per-rank vector that one all-reduce sums (gradient, loss, and the
// "next generation pending" flag), the SGD update from the sum, and the model state a
// generation's source broadcasts. Includes LibTorch; only TUs under src/kiln/torch
// include it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kiln/torch/trainer_internal.h"

namespace kiln::torch::internal {

// A range of positions in the epoch's sample order.
struct Share {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Rank `rank`'s contiguous part of the global batch [begin, end) in a world of `world`:
// the parts tile the batch in rank order and differ in size by at most one sample (a rank
// may get none when the batch is smaller than the world).
Share ShareOf(int64_t begin, int64_t end, int rank, int world);

// The model's trainable state as flat tensors: its parameters and their SGD momentum
// buffers (zero until the first step, which makes the update equal to torch::optim::SGD's).
class TrainState {
 public:
  explicit TrainState(Classifier& model);

  int64_t num_parameters() const { return num_parameters_; }

  // This rank's contribution to a step, as one float32 vector of num_parameters() + 2:
  // the gradient of sum(cross-entropy over `x`) / `global_count`, then that same loss
  // value, then `pending` (1 or 0). Summed over the ranks whose `x` tile a global batch of
  // `global_count` samples, the gradient part is exactly the mean-loss gradient of the
  // whole batch and the loss part its mean loss, whatever the shares' sizes. An empty `x`
  // contributes zeros.
  ::torch::Tensor StepVector(const ::torch::Tensor& x, const ::torch::Tensor& y,
                             int64_t global_count, bool pending);

  // One SGD step with momentum from a summed step vector: buf = momentum * buf + grad,
  // param -= lr * buf.
  void Apply(const ::torch::Tensor& summed, double lr, double momentum);

  // Parameters then momentum buffers, concatenated (2 * num_parameters() floats).
  ::torch::Tensor Pack() const;
  // The inverse of Pack. InvalidArgument when `packed` has the wrong size.
  [[nodiscard]] absl::Status Unpack(const ::torch::Tensor& packed);

 private:
  Classifier& model_;
  std::vector<::torch::Tensor> parameters_;
  std::vector<::torch::Tensor> momentum_;
  int64_t num_parameters_ = 0;
};

}  // namespace kiln::torch::internal
