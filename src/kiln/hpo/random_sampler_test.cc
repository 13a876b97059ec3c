#include "kiln/hpo/random_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::hpo {
namespace {

SearchSpace Space(const char* native) {
  auto space = SearchSpace::FromNative(base::Json::parse(native));
  KILN_CHECK_OK(space.status());
  return *std::move(space);
}

std::vector<TrialRecord> AskRepeatedly(Sampler& sampler, int n) {
  std::vector<TrialRecord> history;
  for (int i = 0; i < n; ++i) {
    auto s = sampler.Ask(history);
    KILN_CHECK_OK(s.status());
    KILN_CHECK(s->has_value());
    TrialRecord t;
    t.number = i;
    t.params = (*s)->params;
    history.push_back(t);
  }
  return history;
}

TEST(RandomSamplerTest, SameSeedAndHistoryGiveTheSamePoint) {
  SearchSpace space = Space(R"({"x": {"type": "double", "low": -5, "high": 5},
                                "c": {"type": "categorical", "choices": ["a", "b"]}})");
  RandomSampler a(space, 42), b(space, 42), other(space, 43);
  auto ha = AskRepeatedly(a, 20);
  auto hb = AskRepeatedly(b, 20);
  auto ho = AskRepeatedly(other, 20);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ha[i].params, hb[i].params);
  EXPECT_NE(ha[0].params, ho[0].params);
  // Asking again with a shorter history reproduces that earlier answer (restart safety).
  std::vector<TrialRecord> prefix(ha.begin(), ha.begin() + 7);
  KILN_ASSERT_OK_AND_ASSIGN(auto again, a.Ask(prefix));
  EXPECT_EQ(again->params, ha[7].params);
}

TEST(RandomSamplerTest, ProposesUniformPointsInsideTheSpace) {
  SearchSpace space = Space(R"({"x": {"type": "double", "low": 0, "high": 1},
                                "n": {"type": "int", "low": 1, "high": 4}})");
  RandomSampler sampler(space, 1);
  std::vector<TrialRecord> history;
  int below_half = 0;
  std::set<double> ns;
  for (int i = 0; i < 1000; ++i) {
    KILN_ASSERT_OK_AND_ASSIGN(auto s, sampler.Ask(history));
    ASSERT_TRUE(s.has_value());
    double x = s->params.at("x");
    EXPECT_GE(x, 0);
    EXPECT_LE(x, 1);
    below_half += x < 0.5;
    ns.insert(s->params.at("n"));
    TrialRecord t;
    t.number = i;
    t.params = s->params;
    history.push_back(t);
  }
  EXPECT_NEAR(below_half / 1000.0, 0.5, 0.06);
  EXPECT_EQ(ns, (std::set<double>{1, 2, 3, 4}));
}

TEST(RandomSamplerTest, AvoidsRepeatsInASmallFiniteSpace) {
  SearchSpace space = Space(R"({"c": {"type": "categorical", "choices": [1, 2, 3, 4, 5]}})");
  RandomSampler sampler(space, 9);
  auto history = AskRepeatedly(sampler, 5);
  std::set<Point> distinct;
  for (const auto& t : history) distinct.insert(t.params);
  EXPECT_EQ(distinct.size(), 5u);
  // Exhausted: still answers (random search never waits), with some point of the space.
  KILN_ASSERT_OK_AND_ASSIGN(auto s, sampler.Ask(history));
  EXPECT_TRUE(s.has_value());
}

TEST(RandomSamplerTest, ConditionalChildrenAppearOnlyWithTheirParentValue) {
  SearchSpace space = Space(R"({"opt": {"type": "categorical", "choices": ["sgd", "adam"]},
      "momentum": {"type": "double", "low": 0, "high": 1, "condition": {"opt": ["sgd"]}}})");
  RandomSampler sampler(space, 3);
  for (const auto& t : AskRepeatedly(sampler, 50)) {
    EXPECT_EQ(t.params.count("momentum") == 1, t.params.at("opt") == 0);
  }
}

}  // namespace
}  // namespace kiln::hpo
