// The elastic loop end to end in one process: workers are threads, membership comes from
// the in-process LocalRendezvousHub, and groups are real TCPStores and Gloo groups on
// loopback. Because each step's gradient is that of the whole global batch whatever the
// world size, every run here must end with (nearly) the parameters of a world of one.
// Trains on a small real subset of Fashion-MNIST; skipped when it is not installed.
#include "kiln/torch/elastic_trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/elastic/worker/solo_rendezvous.h"
#include "kiln/elastic/worker/testing/local_rendezvous.h"

namespace kiln::torch {
namespace {

using elastic::worker::LocalRendezvousHub;
using ::testing::ElementsAre;
using ::testing::Pair;
using namespace std::chrono_literals;

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";

// Calls `on_report` with each report (on the reporting worker's thread).
class CallbackSink final : public MetricsSink {
 public:
  explicit CallbackSink(std::function<void(int64_t, std::string_view)> on_report = nullptr)
      : on_report_(std::move(on_report)) {}
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>&) override {
    std::lock_guard lock(mu_);
    reports_.push_back(std::string(group) + "/" + std::to_string(step));
    if (on_report_) on_report_(step, group);
  }
  std::vector<std::string> reports() const {
    std::lock_guard lock(mu_);
    return reports_;
  }

 private:
  std::function<void(int64_t, std::string_view)> on_report_;
  mutable std::mutex mu_;
  std::vector<std::string> reports_;
};

class ElasticTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "needs `apt-get install dataset-fashion-mnist`";
    }
  }

  // 2 epochs of 12 steps (600 samples, global batch 50).
  static TrainOptions SmallRun() {
    TrainOptions options;
    options.model = "mlp";
    options.hidden = 32;
    options.epochs = 2;
    options.batch_size = 50;
    options.train_limit = 600;
    options.test_limit = 200;
    options.threads = 1;
    options.log_every = 1;
    return options;
  }

  static ElasticResult Solo() {
    elastic::worker::SoloRendezvous solo;
    CallbackSink sink;
    auto result = TrainElastic(SmallRun(), {}, solo, sink, nullptr);
    KILN_CHECK_OK(result.status());
    return *std::move(result);
  }

  static void ExpectSameModel(const ElasticResult& a, const ElasticResult& b) {
    ASSERT_EQ(a.parameters.size(), b.parameters.size());
    float worst = 0;
    for (size_t i = 0; i < a.parameters.size(); ++i) {
      worst = std::max(worst, std::abs(a.parameters[i] - b.parameters[i]));
    }
    EXPECT_LT(worst, 1e-4) << "largest parameter difference";
  }
};

TEST_F(ElasticTrainerTest, AWorldOfOneTrainsAndReportsEveryStepAndEpoch) {
  elastic::worker::SoloRendezvous solo;
  CallbackSink sink;
  std::vector<std::string> lines;
  KILN_ASSERT_OK_AND_ASSIGN(
      ElasticResult result,
      TrainElastic(SmallRun(), {}, solo, sink, [&](std::string_view l) { lines.emplace_back(l); }));
  EXPECT_FALSE(result.left);
  EXPECT_EQ(result.steps, 24);
  ASSERT_EQ(result.epochs.size(), 2u);
  EXPECT_GT(result.epochs.back().test_accuracy, 0.6);
  EXPECT_EQ(sink.reports().size(), 24u + 2u);
  EXPECT_THAT(lines, ::testing::Contains("generation 1: rank 0 of 1, resumed at step 0 (a world "
                                         "of one (not under Kiln))"));
}

TEST_F(ElasticTrainerTest, TwoWorkersTrainTheModelOfOne) {
  const ElasticResult solo = Solo();
  LocalRendezvousHub hub({1, 2});
  std::vector<absl::StatusOr<ElasticResult>> results(2, absl::UnknownError("not run"));
  CallbackSink sink;
  std::vector<std::thread> workers;
  for (int i = 0; i < 2; ++i) {
    workers.emplace_back([&, i] {
      auto rendezvous = hub.Connect(i + 1);
      results[i] = TrainElastic(SmallRun(), {}, *rendezvous, sink, nullptr);
    });
  }
  for (auto& w : workers) w.join();
  KILN_ASSERT_OK(results[0]);
  KILN_ASSERT_OK(results[1]);
  EXPECT_EQ(results[0]->steps, 24);
  EXPECT_EQ(results[1]->steps, 24);
  EXPECT_EQ(results[0]->parameters, results[1]->parameters);
  ExpectSameModel(*results[0], solo);
  // Only rank 0 reports.
  EXPECT_EQ(sink.reports().size(), 24u + 2u);
}

TEST_F(ElasticTrainerTest, AWorkerJoiningAndLeavingMidEpochChangesNothing) {
  const ElasticResult solo = Solo();
  LocalRendezvousHub hub({1});
  absl::StatusOr<ElasticResult> first = absl::UnknownError("not run");
  absl::StatusOr<ElasticResult> second = absl::UnknownError("not run");
  std::thread second_worker;
  std::vector<std::string> second_lines;
  // Worker 1 reports every step as rank 0: after step 4 worker 2 is added, after step 17
  // (in the second epoch) it is asked to leave.
  CallbackSink sink([&](int64_t step, std::string_view group) {
    if (group != "train") return;
    if (step == 4) {
      hub.Add(2);
      second_worker = std::thread([&] {
        auto rendezvous = hub.Connect(2);
        CallbackSink unused;
        second = TrainElastic(SmallRun(), {}, *rendezvous, unused,
                              [&](std::string_view l) { second_lines.emplace_back(l); });
      });
      // As under kilnd, the generation ends once the newcomer has joined: wait for that,
      // so that it ends after the next step.
      hub.AwaitJoin(2);
    }
    if (step == 17) hub.Remove(2);
  });
  {
    auto rendezvous = hub.Connect(1);
    first = TrainElastic(SmallRun(), {}, *rendezvous, sink, nullptr);
  }
  second_worker.join();
  KILN_ASSERT_OK(first);
  KILN_ASSERT_OK(second);
  EXPECT_FALSE(first->left);
  EXPECT_EQ(first->steps, 24);
  EXPECT_TRUE(second->left);
  EXPECT_EQ(second->steps, 18);  // joined after step 5, left after step 18
  EXPECT_THAT(second_lines, ::testing::Contains(
                                "generation 2: rank 1 of 2, resumed at step 5 (worker 2 joined)"));
  EXPECT_THAT(hub.generations(), ElementsAre(Pair(1, ElementsAre(1)), Pair(2, ElementsAre(1, 2)),
                                             Pair(3, ElementsAre(1))));
  ExpectSameModel(*first, solo);
  EXPECT_EQ(first->epochs.size(), 2u);
  EXPECT_EQ(second->epochs.size(), 1u);  // it was there for the end of the first epoch
}

}  // namespace
}  // namespace kiln::torch
