#include "kiln/serving/batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

namespace kiln::serving {
namespace {

using ::testing::ElementsAre;

Tensor Floats(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t;
  t.dtype = DType::kFloat32;
  t.shape = std::move(shape);
  t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

std::vector<float> Values(const Tensor& t) {
  std::vector<float> out(t.bytes.size() / sizeof(float));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

// Sums each sample's row: [b, n] float32 -> [b, 1]. Records the batch sizes it saw and
// can hold every forward at a gate until the test opens it.
class SumEngine : public Engine {
 public:
  absl::StatusOr<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs) override {
    const Tensor& in = inputs.at(0);
    const int64_t b = in.shape[0];
    {
      std::unique_lock<std::mutex> lock(mu_);
      batches_.push_back(b);
      ++running_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
      --running_;
    }
    if (fail_) return absl::InvalidArgumentError("forward exploded");
    std::vector<float> x = Values(in);
    const int64_t n = static_cast<int64_t>(x.size()) / b;
    std::vector<float> sums(b + (bad_rows_ ? 1 : 0));
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < n; ++j) sums[i] += x[i * n + j];
    }
    return std::vector<Tensor>{Floats({static_cast<int64_t>(sums.size()), 1}, sums)};
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitRunning(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return running_ >= n; });
  }
  std::vector<int64_t> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

  bool fail_ = false;
  bool bad_rows_ = false;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int running_ = 0;
  std::vector<int64_t> batches_;
};

// Collects the results of submitted requests, by submission index.
struct Results {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<absl::StatusOr<std::vector<Tensor>>>> got;

  explicit Results(size_t n) : got(n) {}
  Batcher::Callback For(size_t i) {
    return [this, i](absl::StatusOr<std::vector<Tensor>> r) {
      std::lock_guard<std::mutex> lock(mu);
      got[i] = std::move(r);
      cv.notify_all();
    };
  }
  void WaitAll() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] {
      for (auto& g : got) {
        if (!g) return false;
      }
      return true;
    });
  }
};

constexpr std::chrono::microseconds kForever = std::chrono::hours(1);

TEST(BatcherTest, ConcatenatesRequestsAndGivesEachItsOwnRows) {
  SumEngine engine;
  Batcher batcher(engine, {.max_batch_size = 6, .max_queue_delay = kForever, .threads = 1});
  Results results(3);
  // Batches of 1, 2 and 3 samples: 6 samples reach max_batch_size, one forward.
  ASSERT_TRUE(batcher.Submit({Floats({1, 2}, {1, 2})}, results.For(0)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({2, 2}, {10, 20, 30, 40})}, results.For(1)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({3, 2}, {1, 1, 2, 2, 3, 3})}, results.For(2)).ok());
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(6));
  ASSERT_TRUE(results.got[0]->ok());
  EXPECT_THAT((*results.got[0])->at(0).shape, ElementsAre(1, 1));
  EXPECT_THAT(Values((*results.got[0])->at(0)), ElementsAre(3));
  EXPECT_THAT((*results.got[1])->at(0).shape, ElementsAre(2, 1));
  EXPECT_THAT(Values((*results.got[1])->at(0)), ElementsAre(30, 70));
  EXPECT_THAT(Values((*results.got[2])->at(0)), ElementsAre(2, 4, 6));
}

TEST(BatcherTest, SubmitAllQueuesTogetherSoAnIdleWorkerRunsOneForward) {
  SumEngine engine;
  // No delay: a worker takes whatever is queued the moment it wakes. Submitted one by
  // one, the first request could run alone; SubmitAll queues all three under one lock.
  Batcher batcher(engine, {.max_batch_size = 8, .max_queue_delay = {}, .threads = 1});
  Results results(4);
  std::vector<Batcher::Item> items(4);
  for (size_t i = 0; i < 4; ++i) {
    items[i].inputs = {Floats({1, 2}, {float(i), 1})};
    items[i].done = results.For(i);
  }
  items[2].inputs.clear();  // no sample: refused, its callback kept and not called
  std::vector<absl::Status> statuses = batcher.SubmitAll(items);
  ASSERT_EQ(statuses.size(), 4u);
  EXPECT_TRUE(statuses[0].ok() && statuses[1].ok() && statuses[3].ok());
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(items[2].done != nullptr);
  items[2].done(absl::CancelledError("answered by the caller"));
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(3));
  EXPECT_THAT(Values((*results.got[3])->at(0)), ElementsAre(4));
  EXPECT_EQ(results.got[2]->status().code(), absl::StatusCode::kCancelled);
}

TEST(BatcherTest, NeverExceedsMaxBatchSizeAndDrainFlushesTheRest) {
  SumEngine engine;
  Batcher batcher(engine, {.max_batch_size = 4, .max_queue_delay = kForever, .threads = 1});
  Results results(10);
  for (size_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {float(i)})}, results.For(i)).ok());
  }
  // The last two would wait forever for company; draining runs them at once.
  batcher.Drain();
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(4, 4, 2));
  for (size_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(results.got[i]->ok());
    EXPECT_THAT(Values((*results.got[i])->at(0)), ElementsAre(float(i)));
  }
}

TEST(BatcherTest, ZeroDelayTakesWhatIsQueued) {
  SumEngine engine;
  engine.Close();
  Batcher batcher(
      engine,
      {.max_batch_size = 32, .max_queue_delay = std::chrono::microseconds(0), .threads = 1});
  Results results(4);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(0)).ok());
  engine.WaitRunning(1);  // the first runs alone; the next three queue behind it
  for (size_t i = 1; i < 4; ++i) {
    ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(i)).ok());
  }
  EXPECT_EQ(batcher.queued_requests(), 3);
  engine.Open();
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(1, 3));
}

TEST(BatcherTest, ALoneRequestRunsOnceItsDelayIsOver) {
  SumEngine engine;
  Batcher batcher(
      engine,
      {.max_batch_size = 100, .max_queue_delay = std::chrono::milliseconds(1), .threads = 1});
  Results results(1);
  ASSERT_TRUE(batcher.Submit({Floats({1, 2}, {1, 2})}, results.For(0)).ok());
  results.WaitAll();  // no company came and no drain: the delay ran out
  EXPECT_THAT(engine.batches(), ElementsAre(1));
  EXPECT_THAT(Values((*results.got[0])->at(0)), ElementsAre(3));
}

TEST(BatcherTest, ARequestLargerThanMaxBatchRunsAlone) {
  SumEngine engine;
  Batcher batcher(engine, {.max_batch_size = 2, .max_queue_delay = kForever, .threads = 1});
  Results results(2);
  ASSERT_TRUE(batcher.Submit({Floats({5, 1}, {1, 2, 3, 4, 5})}, results.For(0)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {7})}, results.For(1)).ok());
  batcher.Drain();
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(5, 1));
  EXPECT_THAT(Values((*results.got[0])->at(0)), ElementsAre(1, 2, 3, 4, 5));
}

TEST(BatcherTest, DifferentPerSampleShapesAreNotMixed) {
  SumEngine engine;
  Batcher batcher(engine, {.max_batch_size = 8, .max_queue_delay = kForever, .threads = 1});
  Results results(3);
  ASSERT_TRUE(batcher.Submit({Floats({1, 2}, {1, 2})}, results.For(0)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 3}, {1, 2, 3})}, results.For(1)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 3}, {4, 5, 6})}, results.For(2)).ok());
  batcher.Drain();
  results.WaitAll();
  EXPECT_THAT(engine.batches(), ElementsAre(1, 2));
  EXPECT_THAT(Values((*results.got[0])->at(0)), ElementsAre(3));
  EXPECT_THAT(Values((*results.got[1])->at(0)), ElementsAre(6));
  EXPECT_THAT(Values((*results.got[2])->at(0)), ElementsAre(15));
}

TEST(BatcherTest, AFailingForwardFailsEveryRequestOfTheBatch) {
  SumEngine engine;
  engine.fail_ = true;
  Batcher batcher(engine, {.max_batch_size = 2, .max_queue_delay = kForever, .threads = 1});
  Results results(2);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(0)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {2})}, results.For(1)).ok());
  results.WaitAll();
  for (auto& r : results.got) {
    EXPECT_EQ(r->status().code(), absl::StatusCode::kInternal);
    EXPECT_EQ(r->status().message(), "forward exploded");
  }
}

TEST(BatcherTest, OutputsWithoutTheBatchRowsAreAnInternalError) {
  SumEngine engine;
  engine.bad_rows_ = true;
  Batcher batcher(engine, {.max_batch_size = 1, .max_queue_delay = kForever, .threads = 1});
  Results results(1);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(0)).ok());
  results.WaitAll();
  EXPECT_EQ(results.got[0]->status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(results.got[0]->status().message()),
              ::testing::HasSubstr("2 rows for a batch of 1"));
}

TEST(BatcherTest, AFullQueueRefusesAndADrainedOneIsUnavailable) {
  SumEngine engine;
  engine.Close();
  Batcher batcher(engine, {.max_batch_size = 1,
                           .max_queue_delay = std::chrono::microseconds(0),
                           .threads = 1,
                           .max_queued_samples = 2});
  Results results(3);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(0)).ok());
  engine.WaitRunning(1);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(1)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(2)).ok());
  absl::Status full = batcher.Submit({Floats({1, 1}, {1})}, [](auto) { FAIL(); });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  engine.Open();
  batcher.Drain();
  results.WaitAll();  // everything accepted was answered
  absl::Status late = batcher.Submit({Floats({1, 1}, {1})}, [](auto) { FAIL(); });
  EXPECT_EQ(late.code(), absl::StatusCode::kUnavailable);
}

TEST(BatcherTest, WorkersRunForwardsInParallel) {
  SumEngine engine;
  engine.Close();
  Batcher batcher(
      engine, {.max_batch_size = 1, .max_queue_delay = std::chrono::microseconds(0), .threads = 2});
  Results results(2);
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(0)).ok());
  ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {2})}, results.For(1)).ok());
  engine.WaitRunning(2);  // both forwards are inside the engine at once
  engine.Open();
  results.WaitAll();
}

TEST(BatcherTest, ObserverSeesEveryBatch) {
  SumEngine engine;
  std::mutex mu;
  std::vector<int64_t> seen;
  Batcher batcher(engine, {.max_batch_size = 3, .max_queue_delay = kForever, .threads = 1},
                  [&](int64_t samples, double seconds) {
                    EXPECT_GE(seconds, 0);
                    std::lock_guard<std::mutex> lock(mu);
                    seen.push_back(samples);
                  });
  Results results(4);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(batcher.Submit({Floats({1, 1}, {1})}, results.For(i)).ok());
  }
  batcher.Drain();
  EXPECT_THAT(seen, ElementsAre(3, 1));
}

}  // namespace
}  // namespace kiln::serving
