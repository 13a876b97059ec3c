#include "kiln/serving/batcher.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln::serving {
namespace {

// True when `a` and `b` can share one forward: the same dtypes and the same per-sample
// shapes (inputs with -1 dimensions may differ between requests).
bool Compatible(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].dtype != b[i].dtype || a[i].shape.size() != b[i].shape.size()) return false;
    if (!std::equal(a[i].shape.begin() + 1, a[i].shape.end(), b[i].shape.begin() + 1)) {
      return false;
    }
  }
  return true;
}

// Checks that the engine returned whole rows for `total` samples in every output.
absl::Status CheckOutputs(const std::vector<Tensor>& outputs, int64_t total) {
  if (outputs.empty()) return absl::InternalError("the model returned no outputs");
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    if (t.shape.empty() || t.shape[0] != total ||
        t.bytes.size() % static_cast<size_t>(total) != 0) {
      return absl::InternalError(absl::StrCat(
          "output ", i, " of the model has ", t.shape.empty() ? 0 : t.shape[0],
          " rows for a batch of ", total, " samples (outputs must keep the batch as dim 0)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Batcher::Batcher(Engine& engine, BatcherOptions options, BatchObserver observer)
    : engine_(engine), options_(std::move(options)), observer_(std::move(observer)) {
  const int threads = std::max(1, options_.threads);
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Batcher::~Batcher() { Drain(); }

absl::Status Batcher::Submit(std::vector<Tensor> inputs, Callback done) {
  std::vector<Item> one(1);
  one[0].inputs = std::move(inputs);
  one[0].done = std::move(done);
  return SubmitAll(one)[0];
}

std::vector<absl::Status> Batcher::SubmitAll(std::vector<Item>& items) {
  std::vector<absl::Status> statuses(items.size());
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < items.size(); ++i) {
      Item& item = items[i];
      if (item.inputs.empty() || item.inputs[0].shape.empty() || item.inputs[0].shape[0] < 1) {
        statuses[i] = absl::InvalidArgumentError("a request needs at least one sample");
        continue;
      }
      const int64_t batch = item.inputs[0].shape[0];
      if (stopping_) {
        statuses[i] = absl::UnavailableError("the server is shutting down");
        continue;
      }
      if (queued_samples_ > 0 && queued_samples_ + batch > options_.max_queued_samples) {
        statuses[i] = absl::ResourceExhaustedError(
            absl::StrCat("the queue is full (", queued_samples_, " samples waiting); retry later"));
        continue;
      }
      queue_.push_back(Pending{std::move(item.inputs), batch, std::move(item.done), now});
      queued_samples_ += batch;
      queued = true;
    }
  }
  if (queued) work_cv_.notify_one();
  return statuses;
}

void Batcher::Drain() {
  std::lock_guard<std::mutex> drain_lock(drain_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

int64_t Batcher::queued_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

void Batcher::WorkerLoop() {
  engine_.PrepareThread();
  std::vector<Pending> batch;
  std::vector<Tensor> merged;  // kept across batches so its buffers are reused
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) return;  // stopping and nothing left
      if (queued_samples_ < options_.max_batch_size && options_.max_queue_delay.count() > 0 &&
          !stopping_) {
        // Wait for more samples until the oldest request's delay runs out. Another worker
        // may take the queue meanwhile; then start over.
        const auto deadline = queue_.front().enqueued + options_.max_queue_delay;
        work_cv_.wait_until(lock, deadline, [&] {
          return queue_.empty() || queued_samples_ >= options_.max_batch_size || stopping_;
        });
        if (queue_.empty()) continue;
      }
      TakeBatch(batch);
    }
    // More may be queued than this batch took: let another idle worker start on it.
    work_cv_.notify_one();
    RunBatch(batch, merged);
    batch.clear();
  }
}

void Batcher::TakeBatch(std::vector<Pending>& batch) {
  int64_t total = 0;
  do {
    Pending& next = queue_.front();
    if (!batch.empty() && (total + next.batch > options_.max_batch_size ||
                           !Compatible(batch[0].inputs, next.inputs))) {
      break;
    }
    total += next.batch;
    queued_samples_ -= next.batch;
    batch.push_back(std::move(next));
    queue_.pop_front();
  } while (!queue_.empty() && total < options_.max_batch_size);
}

void Batcher::RunBatch(std::vector<Pending>& batch, std::vector<Tensor>& merged) {
  int64_t total = 0;
  for (const Pending& p : batch) total += p.batch;

  // One request runs on its own tensors; several are concatenated along dim 0 (the bytes
  // are packed row-major, so concatenating the buffers is concatenating the rows).
  const std::vector<Tensor>* inputs = &batch[0].inputs;
  if (batch.size() > 1) {
    const size_t n = batch[0].inputs.size();
    merged.resize(n);
    for (size_t i = 0; i < n; ++i) {
      Tensor& m = merged[i];
      m.dtype = batch[0].inputs[i].dtype;
      m.shape = batch[0].inputs[i].shape;
      m.shape[0] = total;
      size_t bytes = 0;
      for (const Pending& p : batch) bytes += p.inputs[i].bytes.size();
      m.bytes.clear();
      m.bytes.reserve(bytes);
      for (const Pending& p : batch) m.bytes.append(p.inputs[i].bytes);
    }
    inputs = &merged;
  }

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<Tensor>> outputs = engine_.Run(*inputs);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (observer_) observer_(total, seconds);

  if (outputs.ok()) {
    absl::Status check = CheckOutputs(*outputs, total);
    if (!check.ok()) outputs = std::move(check);
  }
  if (!outputs.ok()) {
    absl::Status error = outputs.status();
    if (error.code() != absl::StatusCode::kInternal) {
      error = absl::InternalError(std::string(error.message()));
    }
    for (Pending& p : batch) p.done(error);
    return;
  }
  if (batch.size() == 1) {
    batch[0].done(std::move(outputs));
    return;
  }
  // Hand each request its own rows, in queue order.
  int64_t row = 0;
  for (Pending& p : batch) {
    std::vector<Tensor> mine(outputs->size());
    for (size_t i = 0; i < outputs->size(); ++i) {
      const Tensor& out = (*outputs)[i];
      const size_t row_bytes = out.bytes.size() / static_cast<size_t>(total);
      mine[i].dtype = out.dtype;
      mine[i].shape = out.shape;
      mine[i].shape[0] = p.batch;
      mine[i].bytes.assign(out.bytes, static_cast<size_t>(row) * row_bytes,
                           static_cast<size_t>(p.batch) * row_bytes);
    }
    row += p.batch;
    p.done(std::move(mine));
  }
}

}  // namespace kiln::serving
