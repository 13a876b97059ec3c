#include "kiln/hpo/hyperband_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/hpo/testing/param_specs.h"

namespace kiln::hpo {
namespace {

using ::testing::HasSubstr;

SearchSpace TwoParamSpace() {
  ParamSpec lr;
  lr.name = "lr";
  lr.kind = ParamKind::kDouble;
  lr.low = 1e-4;
  lr.high = 1e-1;
  lr.log = true;
  ParamSpec width;
  width.name = "width";
  width.kind = ParamKind::kInt;
  width.low = 16;
  width.high = 512;
  width.step = 16;
  auto space = SearchSpace::Create({lr, width});
  KILN_CHECK_OK(space.status());
  return std::move(space).value();
}

std::unique_ptr<HyperbandSampler> MakeSampler(const SearchSpace& space, int64_t max_resource,
                                              uint64_t seed = 7, double eta = 3,
                                              Sampler* config_sampler = nullptr) {
  HyperbandOptions options;
  options.seed = seed;
  options.eta = eta;
  options.max_resource = max_resource;
  options.resource_name = "epochs";
  auto sampler = HyperbandSampler::Create(space, options, config_sampler);
  KILN_CHECK_OK(sampler.status());
  return std::move(sampler).value();
}

// Asks once and, if there is a suggestion, records it as a running trial the way the
// experiment driver does. Returns the suggestion.
std::optional<Suggestion> AskAndStart(HyperbandSampler& sampler,
                                      std::vector<TrialRecord>& history) {
  auto s = sampler.Ask(history);
  KILN_CHECK_OK(s.status());
  if (s->has_value()) {
    TrialRecord t;
    t.number = static_cast<int64_t>(history.size());
    t.params = (*s)->params;
    t.budget = (*s)->budget;
    t.parent = (*s)->parent;
    history.push_back(t);
  }
  return *s;
}

void Complete(TrialRecord& t, double value) {
  t.state = TrialState::kComplete;
  t.value = value;
}

TEST(HyperbandSamplerTest, PlansThePaperBracketsForR81AndEta3) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 81);
  // Li et al. (JMLR 2018), Table 1: (n_i, r_i) per bracket s = 4..0.
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> expected = {
      {{81, 1}, {27, 3}, {9, 9}, {3, 27}, {1, 81}},
      {{34, 3}, {11, 9}, {3, 27}, {1, 81}},
      {{15, 9}, {5, 27}, {1, 81}},
      {{8, 27}, {2, 81}},
      {{5, 81}}};
  const auto& brackets = sampler->brackets();
  ASSERT_EQ(brackets.size(), expected.size());
  for (size_t b = 0; b < expected.size(); ++b) {
    EXPECT_EQ(brackets[b].s, static_cast<int>(4 - b));
    ASSERT_EQ(brackets[b].rungs.size(), expected[b].size()) << "bracket " << b;
    for (size_t i = 0; i < expected[b].size(); ++i) {
      EXPECT_EQ(brackets[b].rungs[i].num_trials, expected[b][i].first) << b << "/" << i;
      EXPECT_EQ(brackets[b].rungs[i].budget, expected[b][i].second) << b << "/" << i;
    }
  }
}

TEST(HyperbandSamplerTest, PlansGrowingBudgetsFromMinToMaxForAnyEtaAndRange) {
  SearchSpace space = TwoParamSpace();
  HyperbandOptions options;
  options.eta = 2.5;
  options.min_resource = 4;
  options.max_resource = 100;
  KILN_ASSERT_OK_AND_ASSIGN(auto sampler, HyperbandSampler::Create(space, options));
  // 4·2.5^3 = 62.5 <= 100 < 4·2.5^4, so s_max = 3.
  ASSERT_EQ(sampler->brackets().size(), 4u);
  for (const HyperbandBracket& b : sampler->brackets()) {
    ASSERT_EQ(b.rungs.size(), static_cast<size_t>(b.s + 1));
    EXPECT_GE(b.rungs.front().budget, 4);
    EXPECT_EQ(b.rungs.back().budget, 100);
    for (size_t i = 1; i < b.rungs.size(); ++i) {
      EXPECT_GT(b.rungs[i].budget, b.rungs[i - 1].budget) << "bracket " << b.s;
      EXPECT_LT(b.rungs[i].num_trials, b.rungs[i - 1].num_trials) << "bracket " << b.s;
      EXPECT_GE(b.rungs[i].num_trials, 1);
    }
  }
  // A range smaller than eta leaves one bracket: plain full-budget trials.
  options.eta = 3;
  options.min_resource = 1;
  options.max_resource = 2;
  KILN_ASSERT_OK_AND_ASSIGN(auto flat, HyperbandSampler::Create(space, options));
  ASSERT_EQ(flat->brackets().size(), 1u);
  EXPECT_EQ(flat->brackets()[0].rungs[0].num_trials, 1);
  EXPECT_EQ(flat->brackets()[0].rungs[0].budget, 2);
}

TEST(HyperbandSamplerTest, StartsTheFirstBracketAtItsSmallestBudget) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 81);
  std::vector<TrialRecord> history;
  auto s = AskAndStart(*sampler, history);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->budget, 1);
  EXPECT_FALSE(s->parent.has_value());
  EXPECT_TRUE(s->params.count("lr") == 1 && s->params.count("width") == 1);
}

TEST(HyperbandSamplerTest, PromotesTheBestThirdOfADecidedRungBestFirst) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 9);  // brackets: (9@1, 3@3, 1@9), (5@3, 1@9), (3@9)
  std::vector<TrialRecord> history;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(AskAndStart(*sampler, history).has_value());
  const double values[] = {0.5, 0.2, 0.9, 0.1, 0.7, 0.3, 0.8, 0.6, 0.4};
  for (int i = 0; i < 9; ++i) Complete(history[i], values[i]);

  const int64_t best_first[] = {3, 1, 5};
  for (int64_t parent : best_first) {
    auto s = AskAndStart(*sampler, history);
    ASSERT_TRUE(s.has_value());
    ASSERT_TRUE(s->parent.has_value());
    EXPECT_EQ(*s->parent, parent);
    EXPECT_EQ(s->budget, 3);
    EXPECT_EQ(s->params, history[parent].params);
  }
  // The rung above is full; the free slot goes to the next bracket.
  auto next = AskAndStart(*sampler, history);
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->parent.has_value());
  EXPECT_EQ(next->budget, 3);
}

TEST(HyperbandSamplerTest, KeepsParallelSlotsBusyWhileRungsAreUndecided) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 9);
  std::vector<TrialRecord> history;
  // With every trial still running, no rung is decided, yet each of the 9 + 5 + 3 planned
  // new configurations starts at once, at its own bracket's first budget.
  std::vector<int64_t> budgets;
  for (int i = 0; i < 17; ++i) {
    auto s = AskAndStart(*sampler, history);
    ASSERT_TRUE(s.has_value()) << "ask " << i;
    EXPECT_FALSE(s->parent.has_value());
    budgets.push_back(s->budget);
  }
  EXPECT_EQ(budgets[0], 1);
  EXPECT_EQ(budgets[8], 1);
  EXPECT_EQ(budgets[9], 3);
  EXPECT_EQ(budgets[13], 3);
  EXPECT_EQ(budgets[14], 9);
  EXPECT_EQ(budgets[16], 9);
  // Now it has to wait for results.
  EXPECT_FALSE(AskAndStart(*sampler, history).has_value());
  EXPECT_FALSE(sampler->Finished(history));
  // One rung-0 result of the first bracket is not enough to decide it.
  Complete(history[0], 0.3);
  EXPECT_FALSE(AskAndStart(*sampler, history).has_value());
}

TEST(HyperbandSamplerTest, RunsEveryBracketToTheEndWithFourSlotsAndThenReturnsNullopt) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 27);
  int64_t planned = 0;
  for (const auto& b : sampler->brackets()) {
    for (const auto& r : b.rungs) planned += r.num_trials;
  }
  std::vector<TrialRecord> history;
  std::deque<size_t> running;
  constexpr size_t kSlots = 4;
  size_t max_running = 0;
  for (int guard = 0; guard < 10000; ++guard) {
    while (running.size() < kSlots) {
      auto s = AskAndStart(*sampler, history);
      if (!s.has_value()) break;
      running.push_back(history.size() - 1);
    }
    max_running = std::max(max_running, running.size());
    if (running.empty()) break;
    // The oldest running trial ends; a smaller lr and a larger budget do better.
    TrialRecord& t = history[running.front()];
    running.pop_front();
    Complete(t, t.params.at("lr") / static_cast<double>(t.budget));
  }
  EXPECT_TRUE(running.empty());
  EXPECT_EQ(static_cast<int64_t>(history.size()), planned);
  EXPECT_EQ(max_running, kSlots);
  EXPECT_TRUE(sampler->Finished(history));
  EXPECT_FALSE(AskAndStart(*sampler, history).has_value());
  for (const TrialRecord& t : history) {
    if (!t.parent.has_value()) continue;
    EXPECT_EQ(t.params, history[*t.parent].params);
    EXPECT_GT(t.budget, history[*t.parent].budget);
  }
  int64_t at_max = 0;
  for (const TrialRecord& t : history) at_max += t.budget == 27 ? 1 : 0;
  EXPECT_EQ(at_max, 1 + 1 + 2 + 4);  // one survivor of s = 3, 2, 1 and all 4 of s = 0
}

TEST(HyperbandSamplerTest, FailedTrialsRankWorstAndAreNeverPromoted) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 9);
  std::vector<TrialRecord> history;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(AskAndStart(*sampler, history).has_value());
  for (int i = 0; i < 9; ++i) {
    if (i < 8) {
      history[i].state = TrialState::kFailed;
    } else {
      Complete(history[i], 42.0);
    }
  }
  auto s = AskAndStart(*sampler, history);
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(s->parent.has_value());
  EXPECT_EQ(*s->parent, 8);
  // Only one trial could go on; the next ask starts the next bracket instead.
  auto next = AskAndStart(*sampler, history);
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->parent.has_value());
}

TEST(HyperbandSamplerTest, SameSeedAndHistoryGiveTheSameSuggestion) {
  SearchSpace space = TwoParamSpace();
  auto a = MakeSampler(space, 27, /*seed=*/11);
  auto b = MakeSampler(space, 27, /*seed=*/11);
  auto c = MakeSampler(space, 27, /*seed=*/12);
  std::vector<TrialRecord> history;
  for (int i = 0; i < 5; ++i) {
    auto sa = a->Ask(history);
    auto sb = b->Ask(history);
    auto again = a->Ask(history);
    auto sc = c->Ask(history);
    KILN_ASSERT_OK(sa);
    KILN_ASSERT_OK(sb);
    ASSERT_TRUE(sa->has_value() && sb->has_value() && again->has_value() && sc->has_value());
    EXPECT_EQ((*sa)->params, (*sb)->params);
    EXPECT_EQ((*sa)->params, (*again)->params);
    EXPECT_NE((*sa)->params, (*sc)->params);
    AskAndStart(*a, history);
  }
}

// Proposes a fixed configuration, standing in for a model-based sampler (BOHB-style).
class FixedSampler : public Sampler {
 public:
  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>&) override {
    Suggestion s;
    s.params = {{"lr", 0.01}, {"width", 64}};
    s.budget = 1000;
    return std::optional<Suggestion>(s);
  }
  std::string name() const override { return "fixed"; }
};

TEST(HyperbandSamplerTest, TakesNewConfigurationsFromAnInnerSamplerButKeepsItsBudgets) {
  SearchSpace space = TwoParamSpace();
  FixedSampler inner;
  auto sampler = MakeSampler(space, 9, 7, 3, &inner);
  std::vector<TrialRecord> history;
  auto s = AskAndStart(*sampler, history);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->params.at("width"), 64);
  EXPECT_EQ(s->budget, 1);
}

TEST(HyperbandSamplerTest, RejectsAHistoryItCannotHaveProduced) {
  SearchSpace space = TwoParamSpace();
  auto sampler = MakeSampler(space, 9);
  TrialRecord orphan;
  orphan.number = 0;
  orphan.parent = 5;
  EXPECT_THAT(sampler->Ask({orphan}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not before it")));
  EXPECT_FALSE(sampler->Finished({orphan}));
}

TEST(HyperbandSamplerTest, CreateRejectsOptionsThatCannotWork) {
  SearchSpace space = TwoParamSpace();
  HyperbandOptions options;
  options.max_resource = 81;
  options.eta = 1;
  EXPECT_THAT(HyperbandSampler::Create(space, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eta")));
  options.eta = 3;
  options.min_resource = 0;
  EXPECT_THAT(HyperbandSampler::Create(space, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_resource")));
  options.min_resource = 100;
  EXPECT_THAT(HyperbandSampler::Create(space, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_resource")));
}

base::Json Params(const std::vector<std::pair<std::string, base::Json>>& entries) {
  base::Json list = base::Json::array();
  for (const auto& [name, value] : entries) list.push_back({{"name", name}, {"value", value}});
  return list;
}

TEST(HyperbandOptionsFromWmlaTest, ReadsWmlaAlgoParamsGivenAsStrings) {
  KILN_ASSERT_OK_AND_ASSIGN(HyperbandOptions o,
                            HyperbandOptionsFromWmla(Params({{"RandomSeed", "5"},
                                                             {"eta", "4"},
                                                             {"ResourceName", "epochs"},
                                                             {"ResourceValue", "81"}}),
                                                     std::nullopt));
  EXPECT_EQ(o.seed, 5u);
  EXPECT_EQ(o.eta, 4);
  EXPECT_EQ(o.resource_name, "epochs");
  EXPECT_EQ(o.max_resource, 81);
  EXPECT_EQ(o.min_resource, 1);
}

TEST(HyperbandOptionsFromWmlaTest, FallsBackToHyperbandEtaAndThenToThree) {
  base::Json required = Params({{"ResourceName", "epochs"}, {"ResourceValue", 27}});
  KILN_ASSERT_OK_AND_ASSIGN(HyperbandOptions older, HyperbandOptionsFromWmla(required, 2.0, 9));
  EXPECT_EQ(older.eta, 2);
  EXPECT_EQ(older.seed, 9u);
  KILN_ASSERT_OK_AND_ASSIGN(HyperbandOptions plain,
                            HyperbandOptionsFromWmla(required, std::nullopt));
  EXPECT_EQ(plain.eta, 3);
  base::Json with_eta = required;
  with_eta.push_back({{"name", "eta"}, {"value", "5"}});
  KILN_ASSERT_OK_AND_ASSIGN(HyperbandOptions newer, HyperbandOptionsFromWmla(with_eta, 2.0));
  EXPECT_EQ(newer.eta, 5);
}

TEST(HyperbandOptionsFromWmlaTest, SaysWhatAMissingRequiredParameterMeans) {
  EXPECT_THAT(
      HyperbandOptionsFromWmla(Params({{"ResourceValue", "81"}}), std::nullopt),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("requires algoParam ResourceName")));
  EXPECT_THAT(HyperbandOptionsFromWmla(Params({{"ResourceName", "epochs"}}), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("requires algoParam ResourceValue: the largest budget")));
  EXPECT_THAT(HyperbandOptionsFromWmla(base::Json(), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ResourceName")));
}

TEST(HyperbandOptionsFromWmlaTest, RejectsBadValuesNamingTheField) {
  auto with = [](std::string name, base::Json value) {
    base::Json p = Params({{"ResourceName", "epochs"}, {"ResourceValue", "81"}});
    for (auto& e : p) {
      if (e["name"] == name) e["value"] = value;
    }
    if (name != "ResourceName" && name != "ResourceValue") {
      p.push_back({{"name", name}, {"value", value}});
    }
    return p;
  };
  EXPECT_THAT(HyperbandOptionsFromWmla(with("eta", "1"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("greater than 1")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("ResourceName", "epochs"), 0.5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("greater than 1")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("eta", "fast"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eta must be a number")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("ResourceValue", "0"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 1")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("ResourceValue", "8.5"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be an integer")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("RandomSeed", "-3"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RandomSeed")));
  EXPECT_THAT(HyperbandOptionsFromWmla(with("WarmUp", "3"), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown Hyperband parameter \"WarmUp\"")));
  EXPECT_THAT(HyperbandOptionsFromWmla(base::Json::object(), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a list")));
}

}  // namespace
}  // namespace kiln::hpo

namespace kiln::hpo {
namespace {

// Runs `sampler` sequentially, completing each trial at once with value = budget
// (worse with more budget, so promotions follow the plan but never change the order).
std::vector<TrialRecord> RunAll(HyperbandSampler& sampler, int max_trials) {
  std::vector<TrialRecord> history;
  for (int i = 0; i < max_trials; ++i) {
    auto next = sampler.Ask(history);
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) break;
    TrialRecord t;
    t.number = static_cast<int64_t>(history.size());
    t.params = (*next)->params;
    t.budget = (*next)->budget;
    t.parent = (*next)->parent;
    t.state = TrialState::kComplete;
    t.value = static_cast<double>(t.budget) + 0.001 * static_cast<double>(t.number % 7);
    history.push_back(t);
  }
  return history;
}

HyperbandOptions NineEpochs(int cycles) {
  HyperbandOptions options;
  options.seed = 5;
  options.eta = 3;
  options.max_resource = 9;
  options.resource_name = "epochs";
  options.cycles = cycles;
  return options;
}

TEST(HyperbandCyclesTest, OnePassEndsAndRepeatedPassesRestartTheBrackets) {
  auto space = SearchSpace::Create({test_params::Double("x", 0, 1)});
  ASSERT_TRUE(space.ok());

  auto once = HyperbandSampler::Create(*space, NineEpochs(1));
  ASSERT_TRUE(once.ok());
  std::vector<TrialRecord> one_pass = RunAll(**once, 1000);
  EXPECT_TRUE((*once)->Finished(one_pass));
  const size_t pass = one_pass.size();
  ASSERT_GT(pass, 0u);

  auto twice = HyperbandSampler::Create(*space, NineEpochs(2));
  ASSERT_TRUE(twice.ok());
  std::vector<TrialRecord> two_passes = RunAll(**twice, 1000);
  EXPECT_EQ(two_passes.size(), 2 * pass);
  EXPECT_TRUE((*twice)->Finished(two_passes));
  // The second pass repeats the first one's budgets and promotions, on new configurations.
  for (size_t i = 0; i < pass; ++i) {
    EXPECT_EQ(two_passes[pass + i].budget, two_passes[i].budget) << i;
    EXPECT_EQ(two_passes[pass + i].parent.has_value(), two_passes[i].parent.has_value()) << i;
  }
  EXPECT_NE(two_passes[pass].params, two_passes[0].params);

  auto forever = HyperbandSampler::Create(*space, NineEpochs(0));
  ASSERT_TRUE(forever.ok());
  std::vector<TrialRecord> many = RunAll(**forever, 5 * static_cast<int>(pass) + 3);
  EXPECT_EQ(many.size(), 5 * pass + 3);
  EXPECT_FALSE((*forever)->Finished(many));

  EXPECT_FALSE(HyperbandSampler::Create(*space, NineEpochs(-1)).ok());
}

}  // namespace
}  // namespace kiln::hpo
