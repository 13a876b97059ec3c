// hyperparameters.h
//
// Applies the workload contract's `config.json` (a trial's hyperparameters, `{"name":
// value}`, see ARCHITECTURE.md §3) to `TrainOptions`. Torch-free; used by kiln-train's main
// before its command-line flags, which take precedence.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/torch/trainer.h"

namespace kiln::torch {

// Sets the fields of `options` named in `config`: "lr" or "learning_rate", "momentum",
// "batch_size", "hidden", "epochs", "model", "seed". Integer fields accept integral
// numbers in any JSON number form (a sampler may send 64.0). Returns the names of the keys
// it did not recognize (a config may carry hyperparameters meant for something else), or
// InvalidArgument naming the field when `config` is not an object, a value has the wrong
// type or is out of range (lr <= 0, momentum outside [0, 1), sizes < 1, an unknown model).
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ApplyHyperparameters(
    const base::Json& config, TrainOptions& options);

// Checks the ranges above on a complete `TrainOptions`; InvalidArgument naming the field.
[[nodiscard]] absl::Status ValidateTrainOptions(const TrainOptions& options);

}  // namespace kiln::torch
