#include "kiln/hpo/asha_pruner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::hpo {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<AshaPruner> MakePruner(AshaOptions options) {
  auto pruner = AshaPruner::Create(options);
  KILN_CHECK_OK(pruner.status());
  return std::move(pruner).value();
}

TrialRecord Trial(int64_t number, std::map<int64_t, double> intermediate) {
  TrialRecord t;
  t.number = number;
  t.intermediate = std::move(intermediate);
  return t;
}

// Reports `value` at `step` for history[i] and asks the pruner, the way the driver does.
bool Report(AshaPruner& pruner, std::vector<TrialRecord>& history, size_t i, int64_t step,
            double value) {
  history[i].intermediate[step] = value;
  return pruner.ShouldPrune(history[i], step, history);
}

TEST(AshaPrunerTest, PlacesRungsAtMinResourceTimesPowersOfTheFactorBelowMaxResource) {
  auto pruner = MakePruner({.reduction_factor = 3, .min_resource = 1, .max_resource = 81});
  EXPECT_THAT(pruner->RungsUpTo(1000), ElementsAre(1, 3, 9, 27));
  EXPECT_THAT(pruner->RungsUpTo(10), ElementsAre(1, 3, 9));
  auto skipping = MakePruner(
      {.reduction_factor = 4, .min_resource = 2, .max_resource = 0, .min_early_stopping_rate = 1});
  EXPECT_THAT(skipping->RungsUpTo(200), ElementsAre(8, 32, 128));
}

TEST(AshaPrunerTest, FirstTrialAtARungAlwaysContinues) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 27});
  std::vector<TrialRecord> history{Trial(0, {})};
  EXPECT_FALSE(Report(*pruner, history, 0, 1, 1e9));
  EXPECT_FALSE(Report(*pruner, history, 0, 3, 1e9));
}

TEST(AshaPrunerTest, PrunesTheWorseTrialsAtTheFirstRungAndKeepsTheBest) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 27});
  std::vector<TrialRecord> history{Trial(0, {}), Trial(1, {}), Trial(2, {}), Trial(3, {})};
  EXPECT_FALSE(Report(*pruner, history, 0, 1, 0.5));  // alone at the rung
  EXPECT_TRUE(Report(*pruner, history, 1, 1, 0.9));   // 2 at the rung: only the best goes on
  EXPECT_TRUE(Report(*pruner, history, 2, 1, 0.7));
  EXPECT_FALSE(Report(*pruner, history, 3, 1, 0.2));  // best so far: continues
  // Trial 0 is not judged again at rung 1 when it reports step 2 (not a rung).
  EXPECT_FALSE(Report(*pruner, history, 0, 2, 0.45));
}

TEST(AshaPrunerTest, DecidesAsynchronouslyAgainstWhoeverReachedTheRung) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 81});
  std::vector<TrialRecord> history;
  for (int i = 0; i < 6; ++i) history.push_back(Trial(i, {}));
  // Six trials reach rung 1 one after another: the top floor(m/3) of those there so far go
  // on, without waiting for the rest.
  const double values[] = {0.6, 0.5, 0.4, 0.55, 0.3, 0.45};
  const bool pruned[] = {false, false, false, true, false, true};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(Report(*pruner, history, i, 1, values[i]), pruned[i]) << "trial " << i;
  }
  // At rung 3, trial 4 is the first to arrive and continues even though it got worse.
  EXPECT_FALSE(Report(*pruner, history, 4, 3, 0.9));
  EXPECT_TRUE(Report(*pruner, history, 2, 3, 0.95));
  EXPECT_FALSE(Report(*pruner, history, 1, 3, 0.1));
}

TEST(AshaPrunerTest, CountsEndedTrialsOfAnyStateAtTheRungsTheyReached) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 27});
  std::vector<TrialRecord> history{Trial(0, {{1, 0.1}}), Trial(1, {{1, 0.2}, {3, 0.05}}),
                                   Trial(2, {})};
  history[0].state = TrialState::kPruned;
  history[1].state = TrialState::kComplete;
  // m = 3 at rung 1: only the best (0.1) goes on, so 0.15 stops.
  EXPECT_TRUE(Report(*pruner, history, 2, 1, 0.15));
}

TEST(AshaPrunerTest, RespectsMinEarlyStoppingRate) {
  auto pruner = MakePruner(
      {.reduction_factor = 3, .min_resource = 1, .max_resource = 81, .min_early_stopping_rate = 1});
  std::vector<TrialRecord> history{Trial(0, {}), Trial(1, {})};
  EXPECT_FALSE(Report(*pruner, history, 0, 1, 0.1));
  EXPECT_FALSE(Report(*pruner, history, 1, 1, 5.0));  // step 1 is no rung when s = 1
  EXPECT_FALSE(Report(*pruner, history, 0, 3, 0.1));
  EXPECT_TRUE(Report(*pruner, history, 1, 3, 5.0));  // the first rung is 1·3^1 = 3
}

TEST(AshaPrunerTest, JudgesARungSkippedOverAtTheFirstStepPastIt) {
  auto pruner = MakePruner({.reduction_factor = 2, .min_resource = 3, .max_resource = 100});
  std::vector<TrialRecord> history{Trial(0, {}), Trial(1, {})};
  EXPECT_FALSE(Report(*pruner, history, 0, 2, 0.1));
  EXPECT_FALSE(Report(*pruner, history, 0, 4, 0.2));  // crosses rung 3, first there
  EXPECT_FALSE(Report(*pruner, history, 1, 2, 0.9));  // below the first rung
  EXPECT_TRUE(Report(*pruner, history, 1, 5, 0.3));   // crosses rung 3 with 0.3 > 0.2
}

TEST(AshaPrunerTest, NeverPrunesAtOrPastMaxResource) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 9});
  std::vector<TrialRecord> history{Trial(0, {}), Trial(1, {})};
  EXPECT_FALSE(Report(*pruner, history, 0, 9, 0.1));
  EXPECT_FALSE(Report(*pruner, history, 1, 9, 0.2));
}

TEST(AshaPrunerTest, PrunesANanValue) {
  auto pruner = MakePruner({.reduction_factor = 3, .max_resource = 9});
  std::vector<TrialRecord> history{Trial(0, {})};
  EXPECT_TRUE(Report(*pruner, history, 0, 1, std::nan("")));
}

TEST(AshaPrunerTest, CreateRejectsOptionsThatCannotWork) {
  EXPECT_THAT(AshaPruner::Create({.reduction_factor = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reduction_factor")));
  EXPECT_THAT(AshaPruner::Create({.min_resource = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_resource")));
  EXPECT_THAT(AshaPruner::Create({.min_resource = 4, .max_resource = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_resource")));
  EXPECT_THAT(AshaPruner::Create({.min_early_stopping_rate = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_early_stopping_rate")));
}

}  // namespace
}  // namespace kiln::hpo
