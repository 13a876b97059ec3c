// The elastic loop: join, form the group, take the source's state, train until the
// generation ends, repeat. LibTorch and c10d errors are caught here (and in
// elastic_group.cc, where a failed collective becomes Unavailable).
#include "kiln/torch/elastic_trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/base/clock.h"
#include "kiln/base/status.h"
#include "kiln/torch/elastic_group.h"
#include "kiln/torch/elastic_step.h"
#include "kiln/torch/hyperparameters.h"
#include "kiln/torch/trainer_internal.h"

namespace kiln::torch {
namespace {

using elastic::worker::Assignment;
using elastic::worker::JoinOutcome;
using elastic::worker::Rendezvous;
using internal::Classifier;
using internal::Split;
using internal::TrainState;
using ::torch::Tensor;

// Where training stands: the counters every rank must agree on. Broadcast from the
// source with the model state, so a newcomer continues mid-epoch where the others are.
struct Progress {
  int64_t step = 0;       // optimizer steps committed
  int64_t epoch = 0;      // the epoch in progress, 0-based
  int64_t position = 0;   // samples of the epoch's order consumed
  double epoch_loss = 0;  // sum of the epoch's step losses
  int64_t epoch_steps = 0;
  double window_loss = 0;  // sum of the losses since the last "train" report
  int64_t window_steps = 0;
};

// Progress and the model size (to catch workers started with different models), as one
// float64 tensor: every count fits a double exactly.
Tensor PackProgress(const Progress& p, int64_t num_parameters) {
  return ::torch::tensor(
      {static_cast<double>(p.step), static_cast<double>(p.epoch), static_cast<double>(p.position),
       p.epoch_loss, static_cast<double>(p.epoch_steps), p.window_loss,
       static_cast<double>(p.window_steps), static_cast<double>(num_parameters)},
      ::torch::kFloat64);
}

Progress UnpackProgress(const Tensor& t) {
  auto at = [&](int i) { return t[i].item<double>(); };
  auto count = [&](int i) { return static_cast<int64_t>(at(i)); };
  return {.step = count(0),
          .epoch = count(1),
          .position = count(2),
          .epoch_loss = at(3),
          .epoch_steps = count(4),
          .window_loss = at(5),
          .window_steps = count(6)};
}

class ElasticRun {
 public:
  ElasticRun(const TrainOptions& options, const ElasticOptions& elastic, Rendezvous& rendezvous,
             MetricsSink& sink, std::function<void(std::string_view)> log_line)
      : options_(options),
        elastic_(elastic),
        rendezvous_(rendezvous),
        sink_(sink),
        log_line_(std::move(log_line)) {}

  absl::StatusOr<ElasticResult> Run() {
    KILN_RETURN_IF_ERROR(Setup());
    ElasticResult result;
    int64_t generation = 0;
    bool has_state = false;
    int failed_in_a_row = 0;
    int rank = 0;
    while (progress_.epoch < options_.epochs) {
      KILN_ASSIGN_OR_RETURN(std::unique_ptr<StoreServer> server,
                            StoreServer::Open(rendezvous_.host(), elastic_.collective_timeout));
      KILN_ASSIGN_OR_RETURN(JoinOutcome outcome,
                            rendezvous_.Join({.generation = generation,
                                              .step = has_state ? progress_.step : -1,
                                              .store_port = server->port()}));
      if (outcome.leave) {
        Log(absl::StrCat("leaving at step ", progress_.step, outcome.reason.empty() ? "" : ": ",
                         outcome.reason));
        result.left = true;
        break;
      }
      const Assignment& a = outcome.assignment;
      generation = a.generation;
      rank = a.rank;
      const bool own_store = a.store_port == server->port() && a.store_host == server->host();
      auto group = ElasticGroup::Connect({.generation = a.generation,
                                          .rank = a.rank,
                                          .world_size = a.world_size,
                                          .store_host = a.store_host,
                                          .store_port = a.store_port,
                                          .local_host = rendezvous_.host(),
                                          .timeout = elastic_.collective_timeout},
                                         own_store ? std::move(server) : nullptr);
      server.reset();  // not the generation's store: nobody will connect to it
      absl::Status status = group.status();
      if (status.ok()) status = SyncState(**group, a.source_rank);
      if (status.ok()) {
        has_state = true;
        Log(absl::StrFormat("generation %d: rank %d of %d, resumed at step %d%s", a.generation,
                            a.rank, a.world_size, progress_.step,
                            a.reason.empty() ? "" : absl::StrCat(" (", a.reason, ")")));
        const int64_t before = progress_.step;
        rendezvous_.StartWatch(a.generation);
        status = TrainGeneration(**group, a);
        rendezvous_.StopWatch();
        if (progress_.step > before) failed_in_a_row = 0;
      }
      if (!status.ok()) {
        // Unavailable is a failed collective or an unreachable peer: the state is still
        // the last commit (a step changes it only after its all-reduce succeeded), so
        // re-joining is the whole recovery. Anything else is not a membership problem.
        if (!absl::IsUnavailable(status)) return status;
        if (++failed_in_a_row > elastic_.max_failed_generations) {
          return absl::FailedPreconditionError(
              absl::StrCat(failed_in_a_row,
                           " generations in a row failed before a step; last: ", status.message()));
        }
        Log(absl::StrCat(status.message(), "; rolled back to step ", progress_.step,
                         ", re-joining"));
      }
    }
    if (!result.left && rank == 0 && !options_.save_model_path.empty()) {
      KILN_RETURN_IF_ERROR(
          internal::SaveTorchScript(*model_, options_.model, options_.save_model_path));
      Log(absl::StrCat("saved TorchScript model to ", options_.save_model_path));
    }
    result.epochs = results_;
    result.steps = progress_.step;
    result.generation = generation;
    result.rank = rank;
    const Tensor params = state_->Pack().slice(0, 0, state_->num_parameters()).contiguous();
    result.parameters.assign(params.data_ptr<float>(), params.data_ptr<float>() + params.numel());
    return result;
  }

 private:
  absl::Status Setup() {
    KILN_RETURN_IF_ERROR(ValidateTrainOptions(options_));
    const int threads = internal::SetThreads(options_.threads);
    {
      // Every worker initializes the same way (the source's broadcast makes sure of it);
      // the lock keeps runs that share a process (ranks as threads, in tests) from drawing
      // from LibTorch's global generator in turns, which would make inits differ by timing.
      static std::mutex init_mutex;
      std::lock_guard lock(init_mutex);
      ::torch::manual_seed(options_.seed);
      model_ = internal::MakeClassifier(options_.model, options_.hidden);
    }
    KILN_ASSIGN_OR_RETURN(train_,
                          internal::LoadSplit(options_.data_dir, "train", options_.train_limit));
    KILN_ASSIGN_OR_RETURN(test_,
                          internal::LoadSplit(options_.data_dir, "t10k", options_.test_limit));
    internal::Normalize(train_.pixels);
    internal::Normalize(test_.pixels);
    model_->train();
    state_ = std::make_unique<TrainState>(*model_);
    samples_ = train_.pixels.size(0);
    batches_ = (samples_ + options_.batch_size - 1) / options_.batch_size;
    epoch_start_ = base::MonotonicMicros();
    Log(
        absl::StrFormat("elastic: model %s (%d parameters), %d train / %d test samples, "
                        "global batch %d, lr %g, momentum %g, %d threads",
                        options_.model, state_->num_parameters(), samples_, test_.pixels.size(0),
                        options_.batch_size, options_.lr, options_.momentum, threads));
    return absl::OkStatus();
  }

  // Makes every rank's state the source's. A receiver takes the new state only once both
  // broadcasts arrived whole, so a failure leaves its last commit intact.
  absl::Status SyncState(ElasticGroup& group, int source) {
    Tensor progress = PackProgress(progress_, state_->num_parameters());
    KILN_RETURN_IF_ERROR(group.Broadcast(progress, source));
    Tensor packed =
        group.rank() == source ? state_->Pack() : ::torch::empty({2 * state_->num_parameters()});
    KILN_RETURN_IF_ERROR(group.Broadcast(packed, source));
    if (group.rank() == source) return absl::OkStatus();
    const auto source_parameters = static_cast<int64_t>(progress[7].item<double>());
    if (source_parameters != state_->num_parameters()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the source rank's model has ", source_parameters, " parameters, this worker's ",
          state_->num_parameters(), ": start every worker with the same --model and --hidden"));
    }
    KILN_RETURN_IF_ERROR(state_->Unpack(packed));
    progress_ = UnpackProgress(progress);
    return absl::OkStatus();
  }

  // Steps until training is done or the generation must end (OK either way).
  absl::Status TrainGeneration(ElasticGroup& group, const Assignment& a) {
    while (progress_.epoch < options_.epochs) {
      KILN_ASSIGN_OR_RETURN(const bool next, Step(group));
      if (next) {
        Log(absl::StrFormat("generation %d: next generation pending, committed step %d",
                            a.generation, progress_.step));
        break;
      }
    }
    return absl::OkStatus();
  }

  // One step over the next global batch. Returns whether any rank saw a next generation
  // pending. Unavailable when the all-reduce failed; nothing has changed then.
  absl::StatusOr<bool> Step(ElasticGroup& group) {
    const Tensor& order = Order(progress_.epoch);
    const int64_t begin = progress_.position;
    const int64_t end = std::min(samples_, begin + options_.batch_size);
    const internal::Share share = internal::ShareOf(begin, end, group.rank(), group.world_size());
    const Tensor index = order.slice(0, share.begin, share.end);
    Tensor summed = state_->StepVector(train_.pixels.index_select(0, index),
                                       train_.labels.index_select(0, index), end - begin,
                                       rendezvous_.next_pending());
    KILN_RETURN_IF_ERROR(group.AllreduceSum(summed));
    const int64_t n = state_->num_parameters();
    const double loss = summed[n].item<double>();
    const bool next = summed[n + 1].item<double>() > 0.5;
    if (!std::isfinite(loss)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "training diverged: loss is %g at epoch %d batch %d; lower the learning rate (lr %g)",
          loss, progress_.epoch + 1, progress_.epoch_steps + 1, options_.lr));
    }
    state_->Apply(summed, options_.lr, options_.momentum);

    ++progress_.step;
    progress_.position = end;
    progress_.epoch_loss += loss;
    ++progress_.epoch_steps;
    progress_.window_loss += loss;
    ++progress_.window_steps;
    const bool report = group.rank() == 0;
    if (options_.log_every > 0 && progress_.epoch_steps % options_.log_every == 0) {
      const double mean = progress_.window_loss / static_cast<double>(progress_.window_steps);
      if (report) {
        sink_.Report(progress_.step, "train", {{"loss", mean}});
        Log(absl::StrFormat("epoch %d/%d batch %d/%d loss %.4f (world %d)", progress_.epoch + 1,
                            options_.epochs, progress_.epoch_steps, batches_, mean,
                            group.world_size()));
      }
      progress_.window_loss = 0;
      progress_.window_steps = 0;
    }
    if (progress_.position >= samples_) FinishEpoch(report);
    if (elastic_.step_delay.count() > 0) std::this_thread::sleep_for(elastic_.step_delay);
    return next;
  }

  // Evaluates (every rank, so that each holds the results) and starts the next epoch.
  void FinishEpoch(bool report) {
    model_->eval();
    const EvalResult eval = internal::Evaluate([&](const Tensor& x) { return model_->forward(x); },
                                               test_.pixels, test_.labels);
    model_->train();
    const int64_t now = base::MonotonicMicros();
    const EpochResult result = {
        .epoch = static_cast<int>(progress_.epoch + 1),
        .train_loss =
            progress_.epoch_loss / static_cast<double>(std::max<int64_t>(1, progress_.epoch_steps)),
        .test_loss = eval.loss,
        .test_accuracy = eval.accuracy,
        .seconds = static_cast<double>(now - epoch_start_) / 1e6};
    epoch_start_ = now;
    results_.push_back(result);
    if (report) {
      sink_.Report(result.epoch, "test", {{"loss", eval.loss}, {"accuracy", eval.accuracy}});
      Log(absl::StrFormat("epoch %d train_loss %.4f test_loss %.4f test_accuracy %.4f (%.1f s)",
                          result.epoch, result.train_loss, eval.loss, eval.accuracy,
                          result.seconds));
    }
    progress_ = {.step = progress_.step, .epoch = progress_.epoch + 1};
  }

  // The epoch's sample order: drawn from the seed and the epoch alone, so every worker,
  // whenever it joined, agrees on it.
  const Tensor& Order(int64_t epoch) {
    if (order_epoch_ != epoch) {
      const uint64_t seed = options_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch);
      at::Generator generator = at::detail::createCPUGenerator(seed);
      order_ =
          ::torch::randperm(samples_, generator, ::torch::TensorOptions().dtype(::torch::kInt64));
      order_epoch_ = epoch;
    }
    return order_;
  }

  void Log(const std::string& line) const {
    if (log_line_) log_line_(line);
  }

  const TrainOptions& options_;
  const ElasticOptions& elastic_;
  Rendezvous& rendezvous_;
  MetricsSink& sink_;
  const std::function<void(std::string_view)> log_line_;

  Split train_;
  Split test_;
  std::shared_ptr<Classifier> model_;
  std::unique_ptr<TrainState> state_;
  int64_t samples_ = 0;
  int64_t batches_ = 0;  // global batches per epoch
  Progress progress_;
  std::vector<EpochResult> results_;
  int64_t epoch_start_ = 0;
  int64_t order_epoch_ = -1;
  Tensor order_;
};

}  // namespace

absl::StatusOr<ElasticResult> TrainElastic(const TrainOptions& options,
                                           const ElasticOptions& elastic, Rendezvous& rendezvous,
                                           MetricsSink& sink,
                                           std::function<void(std::string_view)> log_line) {
  try {
    return ElasticRun(options, elastic, rendezvous, sink, std::move(log_line)).Run();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("elastic training failed: ", e.what()));
  }
}

}  // namespace kiln::torch
