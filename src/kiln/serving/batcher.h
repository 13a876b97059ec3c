// batcher.h
//
// Defines `Batcher`, kiln-serve's dynamic batcher: requests (each a batch of >= 1 samples)
// wait in one bounded queue; worker threads take as many queued requests as fit in
// `max_batch_size` samples once that many are waiting or the oldest has waited
// `max_queue_delay`, concatenate their inputs along dim 0, run one forward through the
// `Engine`, and hand each request its own rows of the outputs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/serving/codec.h"
#include "kiln/serving/engine.h"

namespace kiln::serving {

struct BatcherOptions {
  // Most samples in one forward. A single request with more samples runs alone.
  int64_t max_batch_size = 32;
  // How long the oldest queued request may wait for others to join its batch. Zero takes
  // whatever is queued when a worker is free (no added delay).
  std::chrono::microseconds max_queue_delay{0};
  // Worker threads, each running one forward at a time.
  int threads = 1;
  // Bound on queued samples: a request that would go past it is refused (503) unless the
  // queue is empty, so one large request is always accepted.
  int64_t max_queued_samples = 1 << 16;
};

// Called by a worker after each forward: the samples in the batch and the forward's
// duration in seconds. Runs on worker threads.
using BatchObserver = std::function<void(int64_t samples, double seconds)>;

// Thread-safety: Submit, queued_requests and Drain may be called from any thread.
// Callbacks run on the worker threads, outside the batcher's lock.
class Batcher {
 public:
  // Receives the request's outputs (one tensor per signature output, dim 0 = the
  // request's batch) or the batch's error (Internal with the engine's message).
  using Callback = absl::AnyInvocable<void(absl::StatusOr<std::vector<Tensor>>)>;

  // `engine` must outlive the batcher. Workers start at once.
  Batcher(Engine& engine, BatcherOptions options, BatchObserver observer = nullptr);
  // Drains (see Drain).
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues one request: `inputs` holds one tensor per signature input, each
  // [batch, *shape] with the same batch >= 1. `done` is called exactly once, later, on a
  // worker thread, unless Submit fails: Unavailable once Drain has begun, ResourceExhausted
  // when the queue is full (in both cases `done` is not called).
  [[nodiscard]] absl::Status Submit(std::vector<Tensor> inputs, Callback done);

  // Queues several requests under one lock, so a worker finds them together (a bundle
  // from the master becomes one forward). One status per item, as Submit would return;
  // a refused item keeps its `done`, uncalled.
  struct Item {
    std::vector<Tensor> inputs;
    Callback done;
  };
  std::vector<absl::Status> SubmitAll(std::vector<Item>& items);

  // Stops accepting, runs everything already queued (without waiting for batch delays),
  // and joins the workers. Blocks; idempotent. Must not be called from a callback.
  void Drain();

  // Requests waiting (not yet taken by a worker).
  int64_t queued_requests() const;

  const BatcherOptions& options() const { return options_; }

 private:
  struct Pending {
    std::vector<Tensor> inputs;
    int64_t batch = 0;
    Callback done;
    std::chrono::steady_clock::time_point enqueued;
  };

  void WorkerLoop();
  // Moves the front request and the compatible ones behind it (up to max_batch_size
  // samples) from the queue into `batch`. Needs mu_ held and a non-empty queue.
  void TakeBatch(std::vector<Pending>& batch);
  // Runs one forward over `batch` and calls every request's callback. `merged` is the
  // worker's reusable concatenation buffer.
  void RunBatch(std::vector<Pending>& batch, std::vector<Tensor>& merged);

  Engine& engine_;
  const BatcherOptions options_;
  const BatchObserver observer_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<Pending> queue_;   // guarded by mu_
  int64_t queued_samples_ = 0;  // guarded by mu_
  bool stopping_ = false;       // guarded by mu_

  std::mutex drain_mu_;  // serializes Drain calls (joins happen once)
  std::vector<std::thread> workers_;
};

}  // namespace kiln::serving
