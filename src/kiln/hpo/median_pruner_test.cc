#include "kiln/hpo/median_pruner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::hpo {
namespace {

using ::testing::HasSubstr;

TrialRecord Trial(int64_t number, TrialState state, std::map<int64_t, double> curve) {
  TrialRecord t;
  t.number = number;
  t.state = state;
  t.intermediate = std::move(curve);
  if (state == TrialState::kComplete && !t.intermediate.empty()) {
    t.value = t.intermediate.rbegin()->second;
  }
  return t;
}

// Five completed trials whose values at steps 0..3 are 1..5 (median 3 at every step).
std::vector<TrialRecord> FiveCompleted() {
  std::vector<TrialRecord> h;
  for (int i = 0; i < 5; ++i) {
    double v = i + 1;
    h.push_back(Trial(i, TrialState::kComplete, {{0, v}, {1, v}, {2, v}, {3, v}}));
  }
  return h;
}

std::unique_ptr<MedianPruner> Make(MedianPrunerOptions o = {}) {
  auto p = MedianPruner::Create(o);
  KILN_CHECK_OK(p.status());
  return *std::move(p);
}

TEST(MedianPrunerTest, PrunesATrialWorseThanTheMedianAndKeepsOneBetter) {
  auto pruner = Make();
  auto history = FiveCompleted();
  TrialRecord bad = Trial(5, TrialState::kRunning, {{0, 4}});
  TrialRecord good = Trial(6, TrialState::kRunning, {{0, 2}});
  history.push_back(bad);
  history.push_back(good);
  EXPECT_TRUE(pruner->ShouldPrune(bad, 0, history));
  EXPECT_FALSE(pruner->ShouldPrune(good, 0, history));
  EXPECT_EQ(pruner->name(), "median");
}

TEST(MedianPrunerTest, UsesTheBestValueSoFarNotTheLatest) {
  auto pruner = Make();
  auto history = FiveCompleted();
  TrialRecord t = Trial(5, TrialState::kRunning, {{0, 1.5}, {1, 4.5}});
  EXPECT_FALSE(pruner->ShouldPrune(t, 1, history));
  TrialRecord worse = Trial(6, TrialState::kRunning, {{0, 3.5}, {1, 4.5}});
  EXPECT_TRUE(pruner->ShouldPrune(worse, 1, history));
}

TEST(MedianPrunerTest, WaitsForStartupTrialsAndWarmupSteps) {
  auto history = FiveCompleted();
  history.pop_back();  // four completed
  TrialRecord bad = Trial(9, TrialState::kRunning, {{0, 10}, {1, 10}, {2, 10}});
  EXPECT_FALSE(Make()->ShouldPrune(bad, 0, history));
  history = FiveCompleted();
  EXPECT_TRUE(Make()->ShouldPrune(bad, 0, history));
  MedianPrunerOptions o;
  o.n_warmup_steps = 2;
  EXPECT_FALSE(Make(o)->ShouldPrune(bad, 1, history));
  EXPECT_TRUE(Make(o)->ShouldPrune(bad, 2, history));
}

TEST(MedianPrunerTest, DecidesOnlyAtIntervalSteps) {
  MedianPrunerOptions o;
  o.n_warmup_steps = 1;
  o.interval_steps = 2;
  auto pruner = Make(o);
  auto history = FiveCompleted();
  TrialRecord bad = Trial(9, TrialState::kRunning, {{0, 10}, {1, 10}, {2, 10}, {3, 10}});
  EXPECT_TRUE(pruner->ShouldPrune(bad, 1, history));
  EXPECT_FALSE(pruner->ShouldPrune(bad, 2, history));
  EXPECT_TRUE(pruner->ShouldPrune(bad, 3, history));
}

TEST(MedianPrunerTest, NeedsEnoughOtherTrialsAtTheStep) {
  MedianPrunerOptions o;
  o.n_startup_trials = 0;
  auto pruner = Make(o);
  std::vector<TrialRecord> history = {Trial(0, TrialState::kComplete, {{0, 1}}),
                                      Trial(1, TrialState::kPruned, {{0, 1}})};
  TrialRecord bad = Trial(2, TrialState::kRunning, {{0, 5}});
  history.push_back(bad);  // the trial itself is in the history and must not count
  EXPECT_FALSE(pruner->ShouldPrune(bad, 0, history));
  history.push_back(Trial(3, TrialState::kRunning, {{0, 2}}));
  EXPECT_TRUE(pruner->ShouldPrune(bad, 0, history));
  // A failed trial's values are not compared against.
  history.back().state = TrialState::kFailed;
  EXPECT_FALSE(pruner->ShouldPrune(bad, 0, history));
}

TEST(MedianPrunerTest, EvenCountsUseTheMeanOfTheMiddleValues) {
  MedianPrunerOptions o;
  o.n_startup_trials = 0;
  auto pruner = Make(o);
  std::vector<TrialRecord> history;
  for (int i = 0; i < 4; ++i) history.push_back(Trial(i, TrialState::kComplete, {{0, i * 1.0}}));
  // Values 0, 1, 2, 3: median 1.5.
  EXPECT_FALSE(pruner->ShouldPrune(Trial(9, TrialState::kRunning, {{0, 1.5}}), 0, history));
  EXPECT_TRUE(pruner->ShouldPrune(Trial(9, TrialState::kRunning, {{0, 1.6}}), 0, history));
}

TEST(MedianPrunerTest, PrunesATrialThatReportsOnlyNan) {
  auto history = FiveCompleted();
  TrialRecord t = Trial(9, TrialState::kRunning, {{0, std::nan("")}});
  EXPECT_TRUE(Make()->ShouldPrune(t, 0, history));
  TrialRecord none = Trial(10, TrialState::kRunning, {});
  EXPECT_FALSE(Make()->ShouldPrune(none, 0, history));
}

TEST(MedianPrunerTest, CreateRejectsInvalidOptionsNamingThem) {
  MedianPrunerOptions o;
  o.interval_steps = 0;
  EXPECT_THAT(MedianPruner::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("interval_steps is 0")));
  o = {};
  o.n_startup_trials = -1;
  EXPECT_THAT(MedianPruner::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_startup_trials is -1")));
}

}  // namespace
}  // namespace kiln::hpo
