// Trains on small real subsets of Fashion-MNIST (Debian's dataset-fashion-mnist); skipped
// when the dataset is not installed.
#include "kiln/torch/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::torch {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";

struct Record {
  int64_t step;
  std::string group;
  std::map<std::string, double> metrics;
};

class RecordingSink final : public MetricsSink {
 public:
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics) override {
    records.push_back({step, std::string(group), {metrics.begin(), metrics.end()}});
  }
  std::vector<Record> records;
};

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "needs `apt-get install dataset-fashion-mnist`";
    }
  }
  static TrainOptions SmallRun(const std::string& model) {
    TrainOptions options;
    options.model = model;
    options.epochs = 1;
    options.train_limit = 2000;
    options.test_limit = 500;
    options.threads = 1;  // the machine may be shared; see kiln-train's OMP_WAIT_POLICY
    options.log_every = 10;
    return options;
  }
};

TEST_F(TrainerTest, MlpLearnsFromTwoThousandSamplesInOneEpoch) {
  RecordingSink sink;
  std::vector<std::string> lines;
  KILN_ASSERT_OK_AND_ASSIGN(
      std::vector<EpochResult> results,
      Train(SmallRun("mlp"), sink, [&](std::string_view line) { lines.emplace_back(line); }));
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].epoch, 1);
  EXPECT_GT(results[0].test_accuracy, 0.6);
  EXPECT_LT(results[0].test_loss, 1.5);

  // 2000 / 64 = 32 batches: "train" at batches 10, 20, 30, then one "test" record.
  ASSERT_THAT(sink.records, SizeIs(4));
  EXPECT_EQ(sink.records[0].group, "train");
  EXPECT_EQ(sink.records[0].step, 10);
  EXPECT_TRUE(sink.records[0].metrics.contains("loss"));
  EXPECT_EQ(sink.records[2].step, 30);
  const Record& test = sink.records[3];
  EXPECT_EQ(test.group, "test");
  EXPECT_EQ(test.step, 1);
  EXPECT_DOUBLE_EQ(test.metrics.at("accuracy"), results[0].test_accuracy);
  EXPECT_DOUBLE_EQ(test.metrics.at("loss"), results[0].test_loss);

  EXPECT_THAT(lines, Contains(StartsWith("epoch 1/1 batch 10/32 loss ")));
  EXPECT_THAT(lines, Contains(HasSubstr("test_accuracy")));
}

TEST_F(TrainerTest, SameSeedGivesTheSameFirstLoss) {
  auto first_loss = [] {
    RecordingSink sink;
    TrainOptions options = SmallRun("mlp");
    auto results = Train(options, sink, nullptr);
    KILN_CHECK_OK(results.status());
    return sink.records.at(0).metrics.at("loss");
  };
  EXPECT_DOUBLE_EQ(first_loss(), first_loss());
}

TEST_F(TrainerTest, SavedTorchScriptModelScoresLikeTheTrainedOne) {
  for (const std::string model : {"mlp", "cnn"}) {
    SCOPED_TRACE(model);
    const std::string path = ::testing::TempDir() + "/trainer_test_" + model + ".pt";
    TrainOptions options = SmallRun(model);
    options.train_limit = 1000;
    options.test_limit = 300;
    options.hidden = 32;
    options.save_model_path = path;
    RecordingSink sink;
    KILN_ASSERT_OK_AND_ASSIGN(std::vector<EpochResult> results, Train(options, sink, nullptr));
    KILN_ASSERT_OK_AND_ASSIGN(EvalResult saved, EvaluateSavedModel(path, kDataDir, 300));
    EXPECT_EQ(saved.samples, 300);
    // The exported forward() normalizes raw pixels itself; float rounding may flip at most
    // a sample at the decision boundary.
    EXPECT_NEAR(saved.accuracy, results[0].test_accuracy, 1.0 / 300 + 1e-9);
    EXPECT_NEAR(saved.loss, results[0].test_loss, 1e-3);
  }
}

TEST_F(TrainerTest, ReportsMissingDataAsNotFound) {
  TrainOptions options = SmallRun("mlp");
  options.data_dir = ::testing::TempDir() + "/no-such-dataset";
  RecordingSink sink;
  EXPECT_THAT(Train(options, sink, nullptr),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("train-images-idx3-ubyte")));
}

TEST_F(TrainerTest, RejectsBadOptionsBeforeLoadingData) {
  TrainOptions options = SmallRun("transformer");
  RecordingSink sink;
  EXPECT_THAT(Train(options, sink, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model")));
}

TEST_F(TrainerTest, EvaluateSavedModelRejectsAFileThatIsNotAModel) {
  const std::string path = ::testing::TempDir() + "/trainer_test_not_a_model.pt";
  KILN_ASSERT_OK(base::WriteFileAtomically(path, "not a zip archive"));
  EXPECT_THAT(EvaluateSavedModel(path, kDataDir, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
}

}  // namespace
}  // namespace kiln::torch
