#include "kiln/torch/hyperparameters.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::torch {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(HyperparametersTest, AppliesKnownNamesAndReturnsUnknownOnes) {
  TrainOptions options;
  KILN_ASSERT_OK_AND_ASSIGN(
      std::vector<std::string> unknown,
      ApplyHyperparameters(base::Json::parse(R"({"learning_rate": 0.01, "momentum": 0.5,
          "batch_size": 128.0, "hidden": 64, "epochs": 3, "model": "cnn", "seed": 7,
          "dropout": 0.1})"),
                           options));
  EXPECT_DOUBLE_EQ(options.lr, 0.01);
  EXPECT_DOUBLE_EQ(options.momentum, 0.5);
  EXPECT_EQ(options.batch_size, 128);
  EXPECT_EQ(options.hidden, 64);
  EXPECT_EQ(options.epochs, 3);
  EXPECT_EQ(options.model, "cnn");
  EXPECT_EQ(options.seed, 7u);
  EXPECT_THAT(unknown, ElementsAre("dropout"));
}

TEST(HyperparametersTest, LrIsAnAliasOfLearningRate) {
  TrainOptions options;
  KILN_ASSERT_OK_AND_ASSIGN(auto unknown,
                            ApplyHyperparameters(base::Json::parse(R"({"lr": 0.2})"), options));
  EXPECT_DOUBLE_EQ(options.lr, 0.2);
  EXPECT_THAT(unknown, IsEmpty());
}

TEST(HyperparametersTest, RejectsWrongTypesAndRangesNamingTheField) {
  auto apply = [](const char* text) {
    TrainOptions options;
    return ApplyHyperparameters(base::Json::parse(text), options).status();
  };
  EXPECT_THAT(apply("[1]"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("object")));
  EXPECT_THAT(apply(R"({"lr": "fast"})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"lr\" must be a number")));
  EXPECT_THAT(apply(R"({"batch_size": 12.5})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"batch_size\"")));
  EXPECT_THAT(apply(R"({"lr": -1})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lr must be > 0")));
  EXPECT_THAT(apply(R"({"momentum": 1})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("momentum")));
  EXPECT_THAT(apply(R"({"model": "resnet"})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"resnet\"")));
  EXPECT_THAT(apply(R"({"epochs": 0})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("epochs")));
}

}  // namespace
}  // namespace kiln::torch
