// kiln-train: Kiln's own LibTorch trainer (MLP or CNN on Fashion-MNIST). Speaks the
// workload contract (ARCHITECTURE.md §3): reads ./config.json hyperparameters, sizes its
// thread pool from KILN_SLOTS, writes WMLA emetrics to $LOG_DIR and val_dict_list.json plus
// the TorchScript model to $RESULT_DIR, and under Kiln also sends every metric to the master
// through the native API (kiln::tracking::Reporter). With --elastic it trains as one worker
// of an elastic job (ARCHITECTURE.md §5, kiln::torch::TrainElastic). This file only parses
// flags and wires components.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/elastic/worker/rendezvous_client.h"
#include "kiln/elastic/worker/solo_rendezvous.h"
#include "kiln/torch/elastic_trainer.h"
#include "kiln/torch/emetrics_writer.h"
#include "kiln/torch/hyperparameters.h"
#include "kiln/torch/trainer.h"
#include "kiln/tracking/reporter.h"

namespace {

using kiln::torch::TrainOptions;

constexpr char kFooter[] = R"(Precedence: defaults < config.json < command-line flags.

config.json (the workload contract's hyperparameters, {"name": value}) is read from the
working directory when present, or from --config. Recognized names: lr (or learning_rate),
momentum, batch_size, hidden, epochs, model, seed; others are ignored with a note.

Environment:
  KILN_SLOTS      default for --threads (else all cores)
  KILN_JOB_ID, KILN_MASTER, KILN_TOKEN
                  when KILN_JOB_ID is set (a Kiln task), send every metric to the master's
                  native metrics API as well, waiting at exit for it to arrive for up to
                  KILN_REPORT_EXIT_TIMEOUT seconds (default 60)
  LOG_DIR         append WMLA emetrics lines to $LOG_DIR/evaluation-metrics.txt
  RESULT_DIR      write $RESULT_DIR/val_dict_list.json and, unless --save-model is given,
                  the TorchScript model $RESULT_DIR/model.pt
  TRAINING_ID, SUBID
                  copied into each emetrics record's meta
  OMP_WAIT_POLICY read by OpenMP when it loads; kiln-train re-executes itself with
                  PASSIVE when it is unset (spinning threads stall shared CPUs)
  OMP_NUM_THREADS, OPENBLAS_NUM_THREADS
                  read by OpenMP and OpenBLAS when they load; kiln-agent sets both to
                  the task's slots, and kiln-train sets both thread counts to --threads
                  at run time anyway.
  KILN_ELASTIC, KILN_TASK_ID
                  with --elastic: when KILN_ELASTIC=1 (a worker of an elastic Kiln job,
                  `kiln run --workers MIN:MAX`), meet the other workers at the master's
                  rendezvous; otherwise train as a world of one.

Elastic training (--elastic): every worker trains the same model on its share of each
global batch of --batch-size samples (constant whatever the number of workers), summing
gradients with Gloo; workers may join, leave or die between any two steps and the rest
carry on from the last step. Only the worker of rank 0 reports metrics and saves the model.

Exit status: 0 on success (for an elastic worker, also when told to leave), 1 on any error
(the message says what to fix).)";

std::optional<std::string> Env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// libgomp reads OMP_WAIT_POLICY once, when it is loaded, before main. Its default lets idle
// OpenMP threads spin, which on a shared node (several Kiln tasks, or LibTorch's OpenMP
// threads beside OpenBLAS's own) stalls training badly: one epoch of 10k samples took 23.6 s
// instead of 1.1 s on a loaded 2-core VM. Unless the user chose a policy, re-execute once
// with PASSIVE; the variable is then set, so there is no second exec.
void ReexecWithPassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when exec fails: carry on with the default policy, slower but correct.
}

// Forwards the trainer's metrics to the native metrics API. Report only queues them.
class ReporterSink final : public kiln::torch::MetricsSink {
 public:
  explicit ReporterSink(kiln::tracking::Reporter& reporter) : reporter_(reporter) {}
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics) override {
    reporter_.Report(step, group, metrics);
  }

 private:
  kiln::tracking::Reporter& reporter_;
};

// Binds a flag to a field of `flags` and remembers how to copy it into the final options
// when, and only when, the user gave it, so that flags override config.json.
class FlagTable {
 public:
  FlagTable(CLI::App& app, TrainOptions& flags) : app_(app), flags_(flags) {}

  template <typename T>
  CLI::Option* Add(const std::string& name, T TrainOptions::*field, const std::string& help) {
    CLI::Option* option = app_.add_option(name, flags_.*field, help)->capture_default_str();
    overrides_.push_back([option, field, this](TrainOptions& options) {
      if (option->count() > 0) options.*field = flags_.*field;
    });
    return option;
  }

  void ApplyGiven(TrainOptions& options) const {
    for (const auto& apply : overrides_) apply(options);
  }

 private:
  CLI::App& app_;
  TrainOptions& flags_;
  std::vector<std::function<void(TrainOptions&)>> overrides_;
};

// Returns the options from defaults, config.json and flags, in that order.
absl::StatusOr<TrainOptions> ResolveOptions(const FlagTable& table, const std::string& config_flag,
                                            bool threads_given) {
  TrainOptions options;
  if (auto slots = Env("KILN_SLOTS"); slots && !threads_given) {
    if (!absl::SimpleAtoi(*slots, &options.threads) || options.threads < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("KILN_SLOTS must be a positive integer, got \"", *slots, "\""));
    }
  }
  std::string config_path = config_flag;
  if (config_path.empty() && std::filesystem::exists("config.json")) config_path = "config.json";
  if (!config_path.empty()) {
    KILN_ASSIGN_OR_RETURN(std::string text, kiln::base::ReadFile(config_path));
    auto config = kiln::base::ParseJson(text);
    if (!config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", config.status().message()));
    }
    auto unknown = kiln::torch::ApplyHyperparameters(*config, options);
    if (!unknown.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": ", unknown.status().message()));
    }
    std::cout << "hyperparameters from " << config_path << ": " << config->dump() << std::endl;
    if (!unknown->empty()) {
      std::cout << "ignoring hyperparameters kiln-train does not use: "
                << absl::StrJoin(*unknown, ", ") << std::endl;
    }
  }
  table.ApplyGiven(options);
  KILN_RETURN_IF_ERROR(kiln::torch::ValidateTrainOptions(options));
  return options;
}

absl::Status Run(TrainOptions options, bool elastic,
                 const kiln::torch::ElasticOptions& elastic_options) {
  // Metric sinks: every sink added to `sinks` sees every report. Declared before the
  // sinks, the reporter is destroyed last; its destructor waits for unsent metrics.
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<kiln::tracking::Reporter> reporter,
                        kiln::tracking::Reporter::FromEnvironment());
  std::optional<ReporterSink> reporter_sink;
  kiln::torch::TeeSink sinks;
  if (reporter) {
    reporter_sink.emplace(*reporter);
    sinks.Add(*reporter_sink);
  }
  std::unique_ptr<kiln::torch::EmetricsWriter> emetrics;
  const auto log_dir = Env("LOG_DIR");
  const auto result_dir = Env("RESULT_DIR");
  if (log_dir || result_dir) {
    KILN_ASSIGN_OR_RETURN(emetrics, kiln::torch::EmetricsWriter::Create(
                                        {.log_dir = log_dir.value_or(""),
                                         .result_dir = result_dir.value_or(""),
                                         .training_id = Env("TRAINING_ID").value_or(""),
                                         .subid = Env("SUBID").value_or("")},
                                        kiln::base::SystemClock::Get()));
    sinks.Add(*emetrics);
  }
  if (options.save_model_path.empty() && result_dir) {
    options.save_model_path = *result_dir + "/model.pt";
  }

  const int64_t start = kiln::base::MonotonicMicros();
  auto log_line = [](std::string_view line) {
    std::cout << line << std::endl;  // endl: flush, so a log tailer sees progress live
  };
  absl::StatusOr<std::vector<kiln::torch::EpochResult>> results;
  if (elastic) {
    std::unique_ptr<kiln::elastic::worker::Rendezvous> rendezvous;
    if (Env("KILN_ELASTIC") == "1") {
      KILN_ASSIGN_OR_RETURN(rendezvous, kiln::elastic::worker::RendezvousClient::FromEnvironment(
                                            [](const char* name) { return Env(name); }));
    } else {
      std::cout << "--elastic outside an elastic Kiln job (KILN_ELASTIC is not 1): training as "
                   "a world of one"
                << std::endl;
      rendezvous = std::make_unique<kiln::elastic::worker::SoloRendezvous>();
    }
    auto elastic_result =
        kiln::torch::TrainElastic(options, elastic_options, *rendezvous, sinks, log_line);
    if (elastic_result.ok() && elastic_result->left) {
      const absl::Status closed = emetrics ? emetrics->Close() : absl::OkStatus();
      std::cout << "left the job at step " << elastic_result->steps << std::endl;
      return closed;
    }
    if (elastic_result.ok()) {
      results = std::move(elastic_result->epochs);
    } else {
      results = elastic_result.status();
    }
  } else {
    results = kiln::torch::Train(options, sinks, log_line);
  }
  // Close even after a failed run, so that the metrics of finished epochs are published.
  const absl::Status closed = emetrics ? emetrics->Close() : absl::OkStatus();
  KILN_RETURN_IF_ERROR(results.status());
  KILN_RETURN_IF_ERROR(closed);
  // An elastic worker that joined during the last epoch's evaluation has no result of its own.
  const double accuracy = results->empty() ? 0 : results->back().test_accuracy;
  std::cout << absl::StrFormat("done: %d epochs, test_accuracy %.4f, %.1f s", results->size(),
                               accuracy, (kiln::base::MonotonicMicros() - start) / 1e6)
            << std::endl;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  ReexecWithPassiveOpenMpWait(argv);
  CLI::App app{
      "kiln-train: trains an MLP or a small CNN on Fashion-MNIST with LibTorch (SGD with "
      "momentum), reporting metrics through Kiln's workload contract."};
  app.footer(kFooter);
  app.get_formatter()->column_width(30);

  TrainOptions flags;
  FlagTable table(app, flags);
  table.Add("--model", &TrainOptions::model, "Model family: mlp (784-hidden-10) or cnn")
      ->check(CLI::IsMember({"mlp", "cnn"}));
  table.Add("--epochs", &TrainOptions::epochs, "Passes over the training set")
      ->check(CLI::PositiveNumber);
  table.Add("--batch-size", &TrainOptions::batch_size, "Samples per SGD step")
      ->check(CLI::PositiveNumber);
  table.Add("--lr", &TrainOptions::lr, "Learning rate")->check(CLI::PositiveNumber);
  table.Add("--momentum", &TrainOptions::momentum, "SGD momentum, in [0, 1)")
      ->check(CLI::Range(0.0, 1.0));
  table.Add("--hidden", &TrainOptions::hidden, "Width of the hidden fully connected layer")
      ->check(CLI::PositiveNumber);
  table
      .Add("--threads", &TrainOptions::threads,
           "Compute threads (LibTorch and OpenBLAS); default $KILN_SLOTS when set; 0 = all cores")
      ->check(CLI::NonNegativeNumber);
  table
      .Add("--train-limit", &TrainOptions::train_limit,
           "Train on the first N samples only; 0 = all 60000")
      ->check(CLI::NonNegativeNumber);
  table
      .Add("--test-limit", &TrainOptions::test_limit,
           "Evaluate on the first N test samples only; 0 = all 10000")
      ->check(CLI::NonNegativeNumber);
  table.Add("--seed", &TrainOptions::seed, "Seed of initialization and shuffling");
  table.Add("--data-dir", &TrainOptions::data_dir,
            "Directory of {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]");
  table.Add("--save-model", &TrainOptions::save_model_path,
            "Write the trained model here as TorchScript (default: $RESULT_DIR/model.pt when "
            "RESULT_DIR is set)");
  table
      .Add("--log-every", &TrainOptions::log_every,
           "Batches between progress lines and train-loss reports; 0 = none")
      ->check(CLI::NonNegativeNumber);
  bool elastic = false;
  app.add_flag("--elastic", elastic,
               "Train as a worker of an elastic job (see below); a world of one outside Kiln");
  double collective_timeout_s = 30;
  app.add_option("--collective-timeout", collective_timeout_s,
                 "With --elastic: seconds a worker waits for an unresponsive peer before "
                 "re-forming the group without it (a peer that dies is noticed at once)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  int step_delay_ms = 0;
  app.add_option("--elastic-step-delay-ms", step_delay_ms,
                 "With --elastic: pause after every step (stretches short runs for tests and "
                 "demos of workers joining and leaving)")
      ->check(CLI::NonNegativeNumber);
  std::string config_path;
  app.add_option("--config", config_path,
                 "Hyperparameters JSON file (default: ./config.json when it exists)")
      ->check(CLI::ExistingFile);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints the help or the error; --help is success, any bad flag exits 1.
    return app.exit(e) == 0 ? 0 : 1;
  }

  absl::Status status = [&]() -> absl::Status {
    KILN_ASSIGN_OR_RETURN(
        TrainOptions options,
        ResolveOptions(table, config_path, app.get_option("--threads")->count() > 0));
    kiln::torch::ElasticOptions elastic_options;
    elastic_options.collective_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(collective_timeout_s * 1000));
    elastic_options.step_delay = std::chrono::milliseconds(step_delay_ms);
    return Run(std::move(options), elastic, elastic_options);
  }();
  if (status.ok()) return 0;
  std::cerr << "kiln-train: error: " << status.message() << std::endl;
  if (absl::IsNotFound(status) && status.message().find("dataset file") != std::string::npos) {
    std::cerr << "kiln-train: install the dataset with `apt-get install dataset-fashion-mnist`, "
                 "or point --data-dir at a directory holding the IDX files"
              << std::endl;
  }
  return 1;
}
