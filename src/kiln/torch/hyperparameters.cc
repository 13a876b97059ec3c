#include "kiln/torch/hyperparameters.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"

namespace kiln::torch {
namespace {

absl::StatusOr<double> Number(const base::Json& value, const std::string& name) {
  if (!value.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameter \"", name, "\" must be a number, got ", value.type_name()));
  }
  return value.get<double>();
}

absl::StatusOr<int64_t> Integer(const base::Json& value, const std::string& name) {
  if (value.is_number_integer()) return value.get<int64_t>();
  KILN_ASSIGN_OR_RETURN(double d, Number(value, name));
  if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 1e15) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameter \"", name, "\" must be an integer, got ", d));
  }
  return static_cast<int64_t>(d);
}

absl::StatusOr<int> SmallInteger(const base::Json& value, const std::string& name) {
  KILN_ASSIGN_OR_RETURN(int64_t i, Integer(value, name));
  if (i < std::numeric_limits<int>::min() || i > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameter \"", name, "\" is out of range: ", i));
  }
  return static_cast<int>(i);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ApplyHyperparameters(const base::Json& config,
                                                              TrainOptions& options) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hyperparameters must be a JSON object {\"name\": value}, got ", config.type_name()));
  }
  std::vector<std::string> unknown;
  for (const auto& [key, value] : config.items()) {
    if (key == "lr" || key == "learning_rate") {
      KILN_ASSIGN_OR_RETURN(options.lr, Number(value, key));
    } else if (key == "momentum") {
      KILN_ASSIGN_OR_RETURN(options.momentum, Number(value, key));
    } else if (key == "batch_size") {
      KILN_ASSIGN_OR_RETURN(options.batch_size, SmallInteger(value, key));
    } else if (key == "hidden") {
      KILN_ASSIGN_OR_RETURN(options.hidden, SmallInteger(value, key));
    } else if (key == "epochs") {
      KILN_ASSIGN_OR_RETURN(options.epochs, SmallInteger(value, key));
    } else if (key == "seed") {
      KILN_ASSIGN_OR_RETURN(int64_t seed, Integer(value, key));
      options.seed = static_cast<uint64_t>(seed);
    } else if (key == "model") {
      if (!value.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("hyperparameter \"model\" must be a string, got ", value.type_name()));
      }
      options.model = value.get<std::string>();
    } else {
      unknown.push_back(key);
    }
  }
  KILN_RETURN_IF_ERROR(ValidateTrainOptions(options));
  return unknown;
}

absl::Status ValidateTrainOptions(const TrainOptions& options) {
  if (options.model != "mlp" && options.model != "cnn") {
    return absl::InvalidArgumentError(
        absl::StrCat("model must be \"mlp\" or \"cnn\", got \"", options.model, "\""));
  }
  if (!(options.lr > 0) || !std::isfinite(options.lr)) {
    return absl::InvalidArgumentError(absl::StrCat("lr must be > 0, got ", options.lr));
  }
  if (!(options.momentum >= 0 && options.momentum < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("momentum must be in [0, 1), got ", options.momentum));
  }
  if (options.epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("epochs must be >= 1, got ", options.epochs));
  }
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be >= 1, got ", options.batch_size));
  }
  if (options.hidden < 1 || options.hidden > (1 << 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden must be in [1, 65536], got ", options.hidden));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 0 (0 = all cores), got ", options.threads));
  }
  if (options.train_limit < 0 || options.test_limit < 0) {
    return absl::InvalidArgumentError("train_limit and test_limit must be >= 0 (0 = all)");
  }
  if (options.log_every < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("log_every must be >= 0 (0 = never), got ", options.log_every));
  }
  return absl::OkStatus();
}

}  // namespace kiln::torch
