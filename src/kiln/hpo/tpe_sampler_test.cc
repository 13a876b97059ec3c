#include "kiln/hpo/tpe_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "kiln/hpo/testing/param_specs.h"
#include "kiln/hpo/testing/trial_records.h"

namespace kiln::hpo {
namespace {

using test_trials::AskPoint;
using test_trials::Complete;

using ::testing::HasSubstr;

using test_params::Double;

ParamSpec Int(std::string name, double low, double high) {
  ParamSpec p;
  p.name = std::move(name);
  p.kind = ParamKind::kInt;
  p.low = low;
  p.high = high;
  p.step = 1;
  return p;
}

using test_params::Categorical;

SearchSpace Space(std::vector<ParamSpec> params) {
  auto space = SearchSpace::Create(std::move(params));
  EXPECT_TRUE(space.ok()) << space.status();
  return *std::move(space);
}

std::unique_ptr<TpeSampler> MakeTpe(const SearchSpace& space, TpeOptions options) {
  auto sampler = TpeSampler::Create(space, options);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return *std::move(sampler);
}

// Runs `n` sequential ask/tell rounds of `objective`; returns the best value found.
double Minimize(Sampler& sampler, const std::function<double(const Point&)>& objective, int n,
                std::vector<TrialRecord>* history_out = nullptr) {
  std::vector<TrialRecord> history;
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i) {
    Point p = AskPoint(sampler, history);
    const double v = objective(p);
    best = std::min(best, v);
    history.push_back(Complete(i, std::move(p), v));
  }
  if (history_out) *history_out = std::move(history);
  return best;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Quadratic(const Point& p) {
  const double x = p.at("x") - 0.3, y = p.at("y") + 0.7;
  return x * x + y * y;
}

SearchSpace QuadraticSpace() { return Space({Double("x", -5, 5), Double("y", -5, 5)}); }

TEST(TpeSamplerTest, SameSeedAndHistoryGiveTheSameProposal) {
  const SearchSpace space = QuadraticSpace();
  auto a = MakeTpe(space, {.seed = 7});
  auto b = MakeTpe(space, {.seed = 7});
  std::vector<TrialRecord> history;
  Minimize(*a, Quadratic, 30, &history);
  // `b` never saw the first 30 asks: the answer depends only on (seed, history).
  EXPECT_EQ(AskPoint(*a, history), AskPoint(*b, history));
  auto c = MakeTpe(space, {.seed = 8});
  EXPECT_NE(AskPoint(*a, history), AskPoint(*c, history));
}

TEST(TpeSamplerTest, StartupPhaseIsUniformRandom) {
  const SearchSpace space = QuadraticSpace();
  auto tpe = MakeTpe(space, {.seed = 1, .n_startup = 10});
  std::vector<TrialRecord> history;
  // Nine finished trials all at one corner: a model would propose near it; the startup
  // phase ignores them and spreads proposals over the whole box.
  for (int i = 0; i < 9; ++i) history.push_back(Complete(i, {{"x", 4.9}, {"y", 4.9}}, 0.0));
  int far = 0;
  for (int seed = 0; seed < 40; ++seed) {
    auto s = MakeTpe(space, {.seed = static_cast<uint64_t>(seed), .n_startup = 10});
    const Point p = AskPoint(*s, history);
    if (p.at("x") < 0 || p.at("y") < 0) ++far;
  }
  EXPECT_GT(far, 20);  // 3/4 of uniform draws have a negative coordinate
}

TEST(TpeSamplerTest, BeatsRandomSearchOnAQuadraticOverTenSeeds) {
  const SearchSpace space = QuadraticSpace();
  std::vector<double> tpe_best, random_best;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto tpe = MakeTpe(space, {.seed = seed});
    tpe_best.push_back(Minimize(*tpe, Quadratic, 100));
    // Random search is TPE that never leaves its startup phase.
    auto random = MakeTpe(space, {.seed = seed, .n_startup = 1000});
    random_best.push_back(Minimize(*random, Quadratic, 100));
  }
  EXPECT_LT(Median(tpe_best), Median(random_best) / 4);
  EXPECT_LT(Median(tpe_best), 0.05);
}

TEST(TpeSamplerTest, MultivariateConcentratesNearTheOptimum) {
  const SearchSpace space = QuadraticSpace();
  std::vector<double> mv_best, random_best;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto tpe = MakeTpe(space, {.seed = seed, .multivariate = true});
    mv_best.push_back(Minimize(*tpe, Quadratic, 100));
    auto random = MakeTpe(space, {.seed = seed, .n_startup = 1000});
    random_best.push_back(Minimize(*random, Quadratic, 100));
  }
  EXPECT_LT(Median(mv_best), Median(random_best) / 4);
}

TEST(TpeSamplerTest, ConstantLiarSpreadsProposalsAwayFromRunningTrials) {
  const SearchSpace space = Space({Double("x", -5, 5)});
  const Point busy = {{"x", 1.0}};
  auto near_busy = [&](const Point& p) { return std::abs(p.at("x") - 1.0) < 0.3; };
  int near_with_liar = 0, near_without = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    // The good group is all at `busy`; everything else is bad and spread out. Without a
    // liar, TPE often proposes next to `busy`.
    std::vector<TrialRecord> history;
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 4; ++i) history.push_back(Complete(i, busy, 0.0));
    for (int i = 4; i < 40; ++i) history.push_back(Complete(i, space.SampleUniform(rng), 10.0));
    // Four workers are already evaluating `busy`.
    for (int i = 40; i < 44; ++i) {
      TrialRecord running;
      running.number = i;
      running.params = busy;
      history.push_back(running);
    }
    auto liar = MakeTpe(space, {.seed = seed, .constant_liar = true});
    auto no_liar = MakeTpe(space, {.seed = seed, .constant_liar = false});
    near_with_liar += near_busy(AskPoint(*liar, history));
    near_without += near_busy(AskPoint(*no_liar, history));
  }
  EXPECT_GE(near_without, 5);
  EXPECT_LT(near_with_liar * 2, near_without);
}

TEST(TpeSamplerTest, CategoricalAndIntParametersStayOnTheirValuesAndFindTheBest) {
  const SearchSpace space =
      Space({Categorical("opt", {"sgd", "adam", "rmsprop"}), Int("width", 1, 64)});
  auto objective = [](const Point& p) {
    const double opt_penalty = p.at("opt") == 1.0 ? 0.0 : 5.0;
    return opt_penalty + std::abs(p.at("width") - 40);
  };
  auto tpe = MakeTpe(space, {.seed = 3});
  std::vector<TrialRecord> history;
  Minimize(*tpe, objective, 80, &history);
  int adam_late = 0;
  for (const TrialRecord& t : history) {
    const double opt = t.params.at("opt"), width = t.params.at("width");
    EXPECT_EQ(opt, std::round(opt));
    EXPECT_GE(opt, 0);
    EXPECT_LE(opt, 2);
    EXPECT_EQ(width, std::round(width));
    EXPECT_GE(width, 1);
    EXPECT_LE(width, 64);
    if (t.number >= 40 && opt == 1.0) ++adam_late;
  }
  EXPECT_GT(adam_late, 25);  // well above the 1/3 of a uniform choice
  double best = 1e9;
  for (const TrialRecord& t : history) best = std::min(best, *t.value);
  EXPECT_LE(best, 2.0);
}

TEST(TpeSamplerTest, ConditionalParametersAppearOnlyWhenTheirParentAllows) {
  ParamSpec momentum = Double("momentum", 0.5, 0.99);
  momentum.condition = Condition{"opt", {"sgd"}};
  const SearchSpace space =
      Space({Categorical("opt", {"sgd", "adam"}), Double("lr", 1e-4, 1e-1, true), momentum});
  auto objective = [](const Point& p) {
    double v = std::abs(std::log10(p.at("lr")) + 2);
    if (p.count("momentum")) v += std::abs(p.at("momentum") - 0.9) * 4;
    return v + (p.at("opt") == 0.0 ? 0.0 : 0.5);
  };
  for (bool mv : {false, true}) {
    auto tpe = MakeTpe(space, {.seed = 5, .multivariate = mv});
    std::vector<TrialRecord> history;
    Minimize(*tpe, objective, 60, &history);
    for (const TrialRecord& t : history) {
      EXPECT_EQ(t.params.count("momentum") == 1, t.params.at("opt") == 0.0) << "mv=" << mv;
      EXPECT_GE(t.params.at("lr"), 1e-4);
      EXPECT_LE(t.params.at("lr"), 1e-1);
    }
  }
}

TEST(TpeSamplerTest, PrunedFailedAndRunningTrialsDoNotBreakTheModel) {
  const SearchSpace space = QuadraticSpace();
  std::vector<TrialRecord> history;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 30; ++i) {
    TrialRecord t;
    t.number = i;
    t.params = space.SampleUniform(rng);
    if (i % 4 == 0) {
      t.state = TrialState::kPruned;
      t.intermediate = {{1, Quadratic(t.params) + 3}};
    } else if (i % 4 == 1) {
      t.state = TrialState::kFailed;
    } else if (i % 4 == 2) {
      t.state = TrialState::kRunning;
    } else {
      t.state = TrialState::kComplete;
      t.value = Quadratic(t.params);
    }
    history.push_back(t);
  }
  auto tpe = MakeTpe(space, {.seed = 2, .n_startup = 5});
  const Point p = AskPoint(*tpe, history);
  EXPECT_GE(p.at("x"), -5);
  EXPECT_LE(p.at("x"), 5);
}

TEST(TpeSamplerTest, CreateRejectsInvalidOptions) {
  const SearchSpace space = QuadraticSpace();
  EXPECT_FALSE(TpeSampler::Create(space, {.gamma = 0}).ok());
  EXPECT_FALSE(TpeSampler::Create(space, {.n_ei_candidates = 0}).ok());
  EXPECT_FALSE(TpeSampler::Create(space, {.prior_weight = 0}).ok());
}

TEST(TpeOptionsFromWmlaTest, ReadsEveryKnownParameterFromStrings) {
  auto options = TpeOptionsFromWmla(base::Json::parse(R"([
      {"name": "RandomSeed", "value": "42"}, {"name": "WarmUp", "value": "20"},
      {"name": "EICandidate", "value": "48"}, {"name": "GoodRatio", "value": "0.25"},
      {"name": "GoodMax", "value": 30}])"));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->seed, 42u);
  EXPECT_EQ(options->n_startup, 20);
  EXPECT_EQ(options->n_ei_candidates, 48);
  EXPECT_DOUBLE_EQ(options->gamma, 0.25);
  EXPECT_EQ(options->good_max, 30);
}

TEST(TpeOptionsFromWmlaTest, AbsentParametersKeepTheDefaults) {
  auto options = TpeOptionsFromWmla(base::Json::array());
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->n_startup, TpeOptions{}.n_startup);
  EXPECT_TRUE(TpeOptionsFromWmla(base::Json()).ok());
}

TEST(TpeOptionsFromWmlaTest, RejectsOutOfRangeValuesNamingTheParameter) {
  auto bad = [](const char* name, const char* value) {
    base::Json j = base::Json::array({{{"name", name}, {"value", value}}});
    return TpeOptionsFromWmla(j).status();
  };
  EXPECT_THAT(bad("WarmUp", "2").message(), HasSubstr("WarmUp"));
  EXPECT_THAT(bad("EICandidate", "1").message(), HasSubstr("EICandidate"));
  EXPECT_THAT(bad("GoodRatio", "0").message(), HasSubstr("GoodRatio"));
  EXPECT_THAT(bad("GoodRatio", "1.5").message(), HasSubstr("GoodRatio"));
  EXPECT_THAT(bad("GoodMax", "1").message(), HasSubstr("GoodMax"));
  EXPECT_THAT(bad("WarmUp", "ten").message(), HasSubstr("WarmUp"));
  EXPECT_TRUE(bad("GoodRatio", "1").ok());
}

TEST(TpeOptionsFromWmlaTest, RejectsAnUnknownNameListingTheKnownOnes) {
  base::Json j = base::Json::array({{{"name", "InitPoints"}, {"value", "10"}}});
  const absl::Status s = TpeOptionsFromWmla(j).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("InitPoints"));
  EXPECT_THAT(s.message(), HasSubstr("EICandidate"));
}

}  // namespace
}  // namespace kiln::hpo
