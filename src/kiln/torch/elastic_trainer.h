// elastic_trainer.h
//
// `TrainElastic`, kiln-train's training loop for elastic jobs (ARCHITECTURE.md §5): the
// same models and data as `Train`, trained by a changing group of worker processes that
// meet at a `Rendezvous`. Per generation the workers form a Gloo process group, rank 0
// broadcasts the committed state, and each step splits one global batch over the ranks
// and sums their gradients in one all-reduce. Torch-free header; the LibTorch code lives
// in elastic_trainer.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/elastic/worker/rendezvous.h"
#include "kiln/torch/trainer.h"

namespace kiln::torch {

struct ElasticOptions {
  // Bounds connecting to a generation's store, forming its group and each collective: a
  // peer that stops answering (not one that dies, which is noticed at once) costs this long.
  std::chrono::milliseconds collective_timeout{30000};
  // Generations in a row that may fail without a step before the worker gives up (each
  // may cost up to collective_timeout); the same bound as kiln.elastic's.
  int max_failed_generations = 8;
  // A pause after every step, which stretches a short run so that tests and demos can
  // change its membership mid-epoch. Zero in real training.
  std::chrono::milliseconds step_delay{0};
};

struct ElasticResult {
  // One per epoch this worker finished (a worker that joined late lacks the earlier ones).
  std::vector<EpochResult> epochs;
  bool left = false;              // the rendezvous told it to leave before training ended
  int64_t steps = 0;              // the last committed step
  int64_t generation = 0;         // the last generation it was in
  int rank = 0;                   // its rank there
  std::vector<float> parameters;  // the final model parameters, flattened (for tests)
};

// Trains as one worker of an elastic job until the job's `options.epochs` are done (OK),
// the rendezvous says to leave (OK, `left`), or an error that re-joining cannot fix.
//
// Each step takes the next `batch_size` samples of the epoch's order (a permutation drawn
// from `seed` and the epoch, the same on every worker) and splits them over the current
// world; the loss is normalized by the global batch, so a run's gradients do not depend on
// the world size. State commits every step (the live state only changes after a successful
// all-reduce, so the state at a step boundary is the commit); a failed collective rolls
// back to it and re-joins. Only rank 0 reports to `sink` and writes progress lines; every
// worker logs its generation changes ("generation 3: rank 1 of 2, resumed at step 840").
// With `save_model_path`, the final rank 0 writes the TorchScript model as `Train` does.
//
// Errors: InvalidArgument for bad options, a malformed dataset or a diverged loss; the
// rendezvous' errors; FailedPrecondition when workers disagree on the model's size or
// `max_failed_generations` generations failed in a row; Internal when LibTorch fails.
[[nodiscard]] absl::StatusOr<ElasticResult> TrainElastic(
    const TrainOptions& options, const ElasticOptions& elastic,
    elastic::worker::Rendezvous& rendezvous, MetricsSink& sink,
    std::function<void(std::string_view)> log_line);

}  // namespace kiln::torch
