#include "kiln/hpo/grid_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::hpo {
namespace {

using ::testing::HasSubstr;

SearchSpace Space(const char* native) {
  auto space = SearchSpace::FromNative(base::Json::parse(native));
  KILN_CHECK_OK(space.status());
  return *std::move(space);
}

// Asks until the sampler returns nullopt (or `limit` times), recording each point.
std::vector<TrialRecord> Exhaust(Sampler& sampler, int limit = 10000) {
  std::vector<TrialRecord> history;
  for (int i = 0; i < limit; ++i) {
    auto s = sampler.Ask(history);
    KILN_CHECK_OK(s.status());
    if (!s->has_value()) break;
    TrialRecord t;
    t.number = i;
    t.params = (*s)->params;
    history.push_back(t);
  }
  return history;
}

TEST(GridSamplerTest, VisitsEveryPointOnceThenReportsExhaustion) {
  SearchSpace space = Space(R"({"g": {"type": "double", "low": 0, "high": 0.2, "step": 0.1},
                                "n": {"type": "int", "low": 1, "high": 2},
                                "c": {"type": "categorical", "choices": ["a", "b"]},
                                "e": 3})");
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, GridSampler::Create(space, 5));
  auto history = Exhaust(*sampler);
  ASSERT_EQ(history.size(), 12u);
  std::set<Point> distinct;
  for (const auto& t : history) distinct.insert(t.params);
  EXPECT_EQ(distinct.size(), 12u);
  KILN_ASSERT_OK_AND_ASSIGN(auto next, sampler->Ask(history));
  EXPECT_FALSE(next.has_value());
}

TEST(GridSamplerTest, OrderIsShuffledBySeedAndReproducible) {
  SearchSpace space = Space(R"({"n": {"type": "int", "low": 0, "high": 99}})");
  KILN_ASSERT_OK_AND_ASSIGN(auto a, GridSampler::Create(space, 1));
  KILN_ASSERT_OK_AND_ASSIGN(auto b, GridSampler::Create(space, 1));
  KILN_ASSERT_OK_AND_ASSIGN(auto c, GridSampler::Create(space, 2));
  EXPECT_EQ(a->points(), b->points());
  EXPECT_NE(a->points(), c->points());
  std::vector<Point> sorted = a->points();
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(sorted, a->points());
}

TEST(GridSamplerTest, SkipsPointsAlreadyRunningOrDone) {
  SearchSpace space = Space(R"({"c": {"type": "categorical", "choices": [1, 2, 3]}})");
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, GridSampler::Create(space, 0));
  std::vector<TrialRecord> history(2);
  history[0].params = sampler->points()[0];
  history[0].state = TrialState::kRunning;
  history[1].params = sampler->points()[1];
  history[1].state = TrialState::kComplete;
  KILN_ASSERT_OK_AND_ASSIGN(auto s, sampler->Ask(history));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->params, sampler->points()[2]);
}

TEST(GridSamplerTest, ConditionalParametersDoNotDuplicatePoints) {
  SearchSpace space = Space(R"({"opt": {"type": "categorical", "choices": ["sgd", "adam"]},
      "m": {"type": "double", "low": 0, "high": 0.5, "step": 0.25, "condition": {"opt": ["sgd"]}}})");
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, GridSampler::Create(space, 0));
  EXPECT_EQ(sampler->points().size(), 4u);  // sgd x 3 momenta + adam
}

TEST(GridSamplerTest, CreateRejectsContinuousParametersNamingThemAndTheFix) {
  SearchSpace space = Space(R"({"lr": {"type": "double", "low": 0.001, "high": 0.1},
                                "n": {"type": "int", "low": 1, "high": 2}})");
  EXPECT_THAT(GridSampler::Create(space, 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'lr' is a continuous range; give it a step")));
}

TEST(GridSamplerTest, CreateRejectsGridsAboveTheLimit) {
  SearchSpace space = Space(R"({"a": {"type": "int", "low": 0, "high": 9999},
                                "b": {"type": "int", "low": 0, "high": 9999}})");
  EXPECT_THAT(GridSampler::Create(space, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("100000000 points")));
}

TEST(ExperimentGridSamplerTest, ProposesEachExperimentOnceInOrderWithTypedConfigs) {
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, ExperimentGridSampler::Create(base::Json::parse(R"([
    {"id": 1, "hyperParams": [{"name": "learning_rate", "dataType": "DOUBLE", "fixedVal": "0.1"},
                              {"name": "optimizer", "dataType": "STR", "fixedVal": "Adam"},
                              {"name": "epochs", "dataType": "int", "fixedVal": "3"}]},
    {"id": 2, "hyperParams": [{"name": "learning_rate", "dataType": "double", "fixedVal": 0.01},
                              {"name": "optimizer", "dataType": "str", "fixedVal": "SGD"}]}
  ])")));
  EXPECT_EQ(sampler->size(), 2u);
  EXPECT_EQ(sampler->ExperimentId(1), 2);
  auto history = Exhaust(*sampler);
  ASSERT_EQ(history.size(), 2u);
  KILN_ASSERT_OK_AND_ASSIGN(base::Json first, sampler->ConfigFor(history[0].params));
  EXPECT_EQ(first, base::Json::parse(R"({"learning_rate": 0.1, "optimizer": "Adam",
                                         "epochs": 3})"));
  EXPECT_TRUE(first["epochs"].is_number_integer());
  KILN_ASSERT_OK_AND_ASSIGN(base::Json second, sampler->ConfigFor(history[1].params));
  EXPECT_EQ(second["optimizer"], "SGD");
  EXPECT_THAT(sampler->ConfigFor({{"x", 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no valid experiment index")));
  EXPECT_THAT(sampler->ConfigFor({{ExperimentGridSampler::kExperimentKey, 2}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("experiment index")));
}

TEST(ExperimentGridSamplerTest, SkipsExperimentsAlreadyAskedFor) {
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, ExperimentGridSampler::Create(base::Json::parse(R"([
    {"hyperParams": [{"name": "a", "dataType": "INT", "fixedVal": "1"}]},
    {"hyperParams": [{"name": "a", "dataType": "INT", "fixedVal": "2"}]}])")));
  std::vector<TrialRecord> history(1);
  history[0].params = {{ExperimentGridSampler::kExperimentKey, 0}};
  KILN_ASSERT_OK_AND_ASSIGN(auto s, sampler->Ask(history));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->params.at(ExperimentGridSampler::kExperimentKey), 1);
  EXPECT_EQ(sampler->ExperimentId(1), 1);
}

TEST(ExperimentGridSamplerTest, CreateRejectsMalformedExperimentsNamingTheField) {
  auto expect = [](const char* text, const std::string& part) {
    EXPECT_THAT(ExperimentGridSampler::Create(base::Json::parse(text)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(part)))
        << text;
  };
  expect(R"([])", "non-empty list");
  expect(R"([{"id": 1}])", "experiments[0] needs a non-empty list \"hyperParams\"");
  expect(R"([{"hyperParams": [{"dataType": "INT", "fixedVal": "1"}]}])",
         "experiments[0].hyperParams[0] needs a non-empty string \"name\"");
  expect(R"([{"hyperParams": [{"name": "a", "dataType": "INT", "fixedVal": "1.5"}]}])",
         "is not an integer");
  expect(R"([{"hyperParams": [{"name": "a", "dataType": "DOUBLE", "fixedVal": "x"}]}])",
         "('a'): fixedVal \"x\" is not a number");
  expect(R"([{"hyperParams": [{"name": "a", "dataType": "BOOL", "fixedVal": "1"}]}])",
         "unknown dataType \"BOOL\"");
  expect(R"([{"hyperParams": [{"name": "a", "dataType": "STR", "fixedVal": "1"},
                              {"name": "a", "dataType": "STR", "fixedVal": "2"}]}])",
         "appears twice");
  expect(R"([{"hyperParams": [{"name": "a", "dataType": "STR"}]}])", "missing \"fixedVal\"");
}

}  // namespace
}  // namespace kiln::hpo
