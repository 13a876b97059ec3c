#include "kiln/hpo/algorithm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "absl/strings/ascii.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/hpo/asha_pruner.h"
#include "kiln/hpo/gp_sampler.h"
#include "kiln/hpo/hyperband_sampler.h"
#include "kiln/hpo/median_pruner.h"
#include "kiln/hpo/testing/param_specs.h"
#include "kiln/hpo/tpe_sampler.h"

namespace kiln::hpo {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using Json = base::Json;

ParamSpec Width() {
  ParamSpec p;
  p.name = "width";
  p.kind = ParamKind::kInt;
  p.low = 16;
  p.high = 128;
  p.step = 16;
  return p;
}

// lr is continuous (log), width stepped, opt categorical.
SearchSpace MixedSpace() {
  auto space = SearchSpace::Create({test_params::Double("lr", 1e-4, 1e-1, /*log=*/true), Width(),
                                    test_params::Categorical("opt", {"sgd", "adam"})});
  KILN_CHECK_OK(space.status());
  return std::move(space).value();
}

SearchSpace FiniteSpace() {
  auto space = SearchSpace::Create({Width(), test_params::Categorical("opt", {"sgd", "adam"})});
  KILN_CHECK_OK(space.status());
  return std::move(space).value();
}

AlgorithmRequest Request(std::string name, Json params = nullptr, uint64_t seed = 0) {
  AlgorithmRequest request;
  request.name = std::move(name);
  request.params = std::move(params);
  request.seed = seed;
  return request;
}

Json Wmla(std::initializer_list<std::pair<const char*, Json>> entries) {
  Json list = Json::array();
  for (const auto& [name, value] : entries) list.push_back({{"name", name}, {"value", value}});
  return list;
}

Json Experiments() {
  return Json::parse(R"([
    {"id": 7, "hyperParams": [{"name": "lr", "dataType": "DOUBLE", "fixedVal": "0.1"},
                              {"name": "opt", "dataType": "STR", "fixedVal": "adam"}]},
    {"id": 9, "hyperParams": [{"name": "lr", "dataType": "DOUBLE", "fixedVal": "0.01"},
                              {"name": "opt", "dataType": "STR", "fixedVal": "sgd"}]}])");
}

// Hyperband needs its resource; ExperimentGridSearch its experiments; grid a finite space.
AlgorithmRequest Buildable(const std::string& name) {
  AlgorithmRequest request = Request(name);
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "hyperband") {
    request.params = Wmla({{"ResourceName", "epochs"}, {"ResourceValue", "9"}});
  }
  if (lower == "experimentgridsearch" || lower == "experiment_grid") {
    request.wmla_experiments = Experiments();
  }
  return request;
}

void ExpectInSpace(const Point& point, const SearchSpace& space) {
  for (const ParamSpec& p : space.params()) {
    ASSERT_TRUE(point.count(p.name)) << p.name;
    const double v = point.at(p.name);
    if (p.kind == ParamKind::kCategorical) {
      EXPECT_GE(v, 0);
      EXPECT_LT(v, static_cast<double>(p.choices.size()));
    } else {
      EXPECT_GE(v, p.low) << p.name;
      EXPECT_LE(v, p.high) << p.name;
    }
  }
}

Suggestion AskOne(Algorithm& algorithm, const std::vector<TrialRecord>& history = {}) {
  auto s = algorithm.sampler->Ask(history);
  KILN_CHECK_OK(s.status());
  KILN_CHECK(s->has_value());
  return **s;
}

TEST(MakeAlgorithmTest, EveryNameAndAliasBuildsAndAsksAValidPoint) {
  for (const char* name :
       {"Random", "random", "RANDOM", "Tpe", "TPE", "tpe", "Bayesian", "bayesian", "gp", "GP",
        "Hyperband", "hyperband", "asha", "ASHA", "grid", "Grid"}) {
    SCOPED_TRACE(name);
    const std::string lower = absl::AsciiStrToLower(std::string(name));
    const SearchSpace space = lower == "grid" ? FiniteSpace() : MixedSpace();
    KILN_ASSERT_OK_AND_ASSIGN(Algorithm algorithm, MakeAlgorithm(Buildable(name), space));
    ASSERT_NE(algorithm.sampler, nullptr);
    EXPECT_TRUE(algorithm.parallel);
    ExpectInSpace(AskOne(algorithm).params, space);
    EXPECT_EQ(algorithm.pruner != nullptr, lower == "asha");
    EXPECT_EQ(algorithm.resource_name.empty(), lower != "hyperband");
    EXPECT_EQ(algorithm.experiment_grid, nullptr);
  }
}

TEST(MakeAlgorithmTest, ExperimentGridSearchRunsTheListedExperiments) {
  for (const char* name : {"ExperimentGridSearch", "experimentgridsearch", "experiment_grid"}) {
    SCOPED_TRACE(name);
    KILN_ASSERT_OK_AND_ASSIGN(Algorithm algorithm, MakeAlgorithm(Buildable(name), MixedSpace()));
    ASSERT_NE(algorithm.experiment_grid, nullptr);
    EXPECT_EQ(algorithm.experiment_grid, algorithm.sampler.get());
    Suggestion first = AskOne(algorithm);
    KILN_ASSERT_OK_AND_ASSIGN(Json config, algorithm.experiment_grid->ConfigFor(first.params));
    EXPECT_EQ(config, Json::parse(R"({"lr": 0.1, "opt": "adam"})"));
    EXPECT_EQ(algorithm.experiment_grid->ExperimentId(0), 7);
  }
}

TEST(MakeAlgorithmTest, BuiltInTableNamesBuild) {
  const auto& table = BuiltInAlgorithms();
  ASSERT_GE(table.size(), 7u);
  EXPECT_EQ(table[0].name, "Random");
  std::set<std::string> names;
  for (const AlgorithmInfo& info : table) {
    SCOPED_TRACE(info.name);
    names.insert(info.name);
    EXPECT_FALSE(info.description.empty());
    EXPECT_FALSE(info.native_params.empty());
    for (const std::string& name : {info.name, info.native_name}) {
      const SearchSpace space = info.native_name == "grid" ? FiniteSpace() : MixedSpace();
      KILN_EXPECT_OK(MakeAlgorithm(Buildable(name), space));
    }
  }
  for (const char* wmla : {"Random", "Tpe", "Bayesian", "Hyperband", "ExperimentGridSearch"}) {
    EXPECT_TRUE(names.count(wmla)) << wmla;
  }
}

// Seeds: the params' seed (either form) wins over request.seed, which is the fallback.
TEST(MakeAlgorithmTest, SeedFromParamsWinsOverRequestSeed) {
  const SearchSpace space = MixedSpace();
  for (const char* name : {"Random", "Tpe", "Bayesian"}) {
    SCOPED_TRACE(name);
    KILN_ASSERT_OK_AND_ASSIGN(Algorithm by_request,
                              MakeAlgorithm(Request(name, nullptr, 5), space));
    KILN_ASSERT_OK_AND_ASSIGN(
        Algorithm by_wmla,
        MakeAlgorithm(Request(name, Wmla({{"RandomSeed", "5"}}), /*seed=*/99), space));
    KILN_ASSERT_OK_AND_ASSIGN(Algorithm by_native,
                              MakeAlgorithm(Request(name, Json{{"seed", 5}}, 99), space));
    KILN_ASSERT_OK_AND_ASSIGN(Algorithm other, MakeAlgorithm(Request(name, nullptr, 6), space));
    const Point expected = AskOne(by_request).params;
    EXPECT_EQ(AskOne(by_wmla).params, expected);
    EXPECT_EQ(AskOne(by_native).params, expected);
    EXPECT_NE(AskOne(other).params, expected);
  }
}

TEST(MakeAlgorithmTest, TpeParamsReachTheOptionsInBothForms) {
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm wmla,
                            MakeAlgorithm(Request("Tpe", Wmla({{"WarmUp", "20"},
                                                               {"EICandidate", 30},
                                                               {"GoodRatio", "0.25"},
                                                               {"GoodMax", "12"}})),
                                          MixedSpace()));
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm native,
                            MakeAlgorithm(Request("tpe", Json{{"warm_up", 20},
                                                              {"ei_candidates", 30},
                                                              {"good_ratio", 0.25},
                                                              {"good_max", 12},
                                                              {"multivariate", true},
                                                              {"constant_liar", false}}),
                                          MixedSpace()));
  for (Algorithm* a : {&wmla, &native}) {
    const TpeOptions& o = dynamic_cast<TpeSampler&>(*a->sampler).options();
    EXPECT_EQ(o.n_startup, 20);
    EXPECT_EQ(o.n_ei_candidates, 30);
    EXPECT_EQ(o.gamma, 0.25);
    EXPECT_EQ(o.good_max, 12);
  }
  const TpeOptions& o = dynamic_cast<TpeSampler&>(*native.sampler).options();
  EXPECT_TRUE(o.multivariate);
  EXPECT_FALSE(o.constant_liar);
  KILN_ASSERT_OK_AND_ASSIGN(
      Algorithm alias, MakeAlgorithm(Request("tpe", Json{{"n_startup_trials", 4}}), MixedSpace()));
  EXPECT_EQ(dynamic_cast<TpeSampler&>(*alias.sampler).options().n_startup, 4);
}

TEST(MakeAlgorithmTest, BayesianParamsAndCubeSizeDefault) {
  AlgorithmRequest wmla =
      Request("Bayesian", Wmla({{"InitPoints", "4"}, {"CubeSize", "500"}, {"Noiseless", "false"}}));
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm a, MakeAlgorithm(wmla, MixedSpace()));
  const GpOptions& o = dynamic_cast<GpSampler&>(*a.sampler).options();
  EXPECT_EQ(o.init_points, 4);
  EXPECT_EQ(o.cube_size, 500);
  EXPECT_FALSE(o.noiseless);

  AlgorithmRequest native =
      Request("gp", Json{{"init_points", 3}, {"cube_size", 700}, {"noiseless", false}});
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm b, MakeAlgorithm(native, MixedSpace()));
  const GpOptions& p = dynamic_cast<GpSampler&>(*b.sampler).options();
  EXPECT_EQ(p.init_points, 3);
  EXPECT_EQ(p.cube_size, 700);
  EXPECT_FALSE(p.noiseless);

  // WMLA: CubeSize defaults to 100 * maxJobNum, or 10000 when unlimited.
  AlgorithmRequest bounded = Request("Bayesian");
  bounded.max_trials = 30;
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm c, MakeAlgorithm(bounded, MixedSpace()));
  EXPECT_EQ(dynamic_cast<GpSampler&>(*c.sampler).options().cube_size, 3000);
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm d, MakeAlgorithm(Request("bayesian"), MixedSpace()));
  EXPECT_EQ(dynamic_cast<GpSampler&>(*d.sampler).options().cube_size, 10000);
}

TEST(MakeAlgorithmTest, HyperbandBudgetsAndResourceNameInBothForms) {
  AlgorithmRequest wmla =
      Request("Hyperband", Wmla({{"ResourceName", "epochs"}, {"ResourceValue", "9"}}));
  wmla.hyperband_eta = 3;
  AlgorithmRequest native = Request(
      "hyperband",
      Json{{"resource_name", "steps"}, {"max_resource", 27}, {"eta", 3}, {"min_resource", 3}});
  Algorithm a;
  {
    // The Algorithm keeps working after the caller's space is gone.
    const SearchSpace space = MixedSpace();
    KILN_ASSERT_OK_AND_ASSIGN(a, MakeAlgorithm(wmla, space));
  }
  EXPECT_EQ(a.resource_name, "epochs");
  ASSERT_EQ(a.owned.size(), 1u);
  Suggestion first = AskOne(a);
  EXPECT_EQ(first.budget, 1);  // R = 9, eta = 3: the first bracket starts at 9 / 3^2
  ExpectInSpace(first.params, MixedSpace());

  KILN_ASSERT_OK_AND_ASSIGN(Algorithm b, MakeAlgorithm(native, MixedSpace()));
  EXPECT_EQ(b.resource_name, "steps");
  EXPECT_EQ(AskOne(b).budget, 3);  // R = 27, min 3: s_max = 2, first budget 27 / 9
  EXPECT_EQ(dynamic_cast<HyperbandSampler&>(*b.sampler).options().max_resource, 27);

  // The older algoDef.hyperbandEta reaches the plan.
  AlgorithmRequest eta2 =
      Request("Hyperband", Wmla({{"ResourceName", "epochs"}, {"ResourceValue", "8"}}));
  eta2.hyperband_eta = 2;
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm c, MakeAlgorithm(eta2, MixedSpace()));
  EXPECT_EQ(dynamic_cast<HyperbandSampler&>(*c.sampler).options().eta, 2);
  EXPECT_EQ(AskOne(c).budget, 1);
}

TEST(MakeAlgorithmTest, HyperbandRepeatsItsBracketsWhenTheExperimentHasATrialBudget) {
  auto cycles_of = [](AlgorithmRequest request) {
    auto algorithm = MakeAlgorithm(request, MixedSpace());
    EXPECT_TRUE(algorithm.ok()) << algorithm.status();
    return dynamic_cast<HyperbandSampler&>(*algorithm->sampler).options().cycles;
  };
  AlgorithmRequest wmla =
      Request("Hyperband", Wmla({{"ResourceName", "epochs"}, {"ResourceValue", "9"}}));
  EXPECT_EQ(cycles_of(wmla), 1);  // unlimited trials: one pass, so the search ends
  wmla.max_trials = 100;
  EXPECT_EQ(cycles_of(wmla), 0);  // until the 100 trials are spent
  AlgorithmRequest native =
      Request("hyperband", Json{{"resource_name", "epochs"}, {"max_resource", 9}, {"cycles", 2}});
  native.max_trials = 100;
  EXPECT_EQ(cycles_of(native), 2);  // the user's choice wins
}

TEST(MakeAlgorithmTest, AshaParamsReachThePrunerAndSampler) {
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm a, MakeAlgorithm(Request("asha", Json{{"reduction_factor", 2},
                                                                            {"min_resource", 2},
                                                                            {"max_resource", 20},
                                                                            {"sampler", "tpe"}}),
                                                       MixedSpace()));
  auto& pruner = dynamic_cast<AshaPruner&>(*a.pruner);
  EXPECT_EQ(pruner.RungsUpTo(100), (std::vector<int64_t>{2, 4, 8, 16}));
  EXPECT_NE(dynamic_cast<TpeSampler*>(a.sampler.get()), nullptr);

  KILN_ASSERT_OK_AND_ASSIGN(
      Algorithm b,
      MakeAlgorithm(Request("asha", Json{{"min_early_stopping_rate", 1}}), MixedSpace()));
  EXPECT_EQ(dynamic_cast<AshaPruner&>(*b.pruner).RungsUpTo(30), (std::vector<int64_t>{3, 9, 27}));
}

TEST(MakeAlgorithmTest, PrunerAddsToAnySampler) {
  AlgorithmRequest median = Request("Tpe");
  median.pruner = Json{{"name", "median"}, {"n_startup_trials", 2}};
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm a, MakeAlgorithm(median, MixedSpace()));
  EXPECT_NE(dynamic_cast<MedianPruner*>(a.pruner.get()), nullptr);

  AlgorithmRequest asha = Request("random");
  asha.pruner = Json{{"name", "ASHA"}, {"reduction_factor", 4}};
  KILN_ASSERT_OK_AND_ASSIGN(Algorithm b, MakeAlgorithm(asha, MixedSpace()));
  EXPECT_EQ(dynamic_cast<AshaPruner&>(*b.pruner).RungsUpTo(20), (std::vector<int64_t>{1, 4, 16}));
}

struct BadCase {
  const char* what;
  AlgorithmRequest request;
  std::vector<std::string> message;  // substrings the error must contain
};

TEST(MakeAlgorithmTest, BadInputIsRefusedNamingTheField) {
  auto with = [](AlgorithmRequest r, auto&& edit) {
    edit(r);
    return r;
  };
  std::vector<BadCase> cases = {
      {"unknown name", Request("annealing"), {"annealing", "Random", "Tpe", "hyperband", "asha"}},
      {"params neither list nor object", Request("random", "seed=3"), {"params", "list"}},
      {"unknown native key", Request("tpe", Json{{"warmup", 3}}), {"warmup", "warm_up"}},
      {"unknown WMLA name (random)",
       Request("Random", Wmla({{"Seed", "1"}})),
       {"Seed", "RandomSeed"}},
      {"unknown WMLA name (tpe)", Request("Tpe", Wmla({{"Warmup", "5"}})), {"Warmup", "WarmUp"}},
      {"bad WMLA seed", Request("Random", Wmla({{"RandomSeed", "-1"}})), {"RandomSeed"}},
      {"bad native seed", Request("random", Json{{"seed", "x"}}), {"seed"}},
      {"native warm_up type", Request("tpe", Json{{"warm_up", "ten"}}), {"warm_up", "integer"}},
      {"both warm_up spellings",
       Request("tpe", Json{{"warm_up", 3}, {"n_startup_trials", 3}}),
       {"warm_up", "n_startup_trials"}},
      {"good_ratio out of range", Request("tpe", Json{{"good_ratio", 2}}), {"good_ratio"}},
      {"multivariate not bool", Request("tpe", Json{{"multivariate", 1}}), {"multivariate"}},
      {"gp cube_size", Request("gp", Json{{"cube_size", 0}}), {"cube_size"}},
      {"gp unknown key", Request("bayesian", Json{{"kappa", 2}}), {"kappa", "init_points"}},
      {"Bayesian bad WMLA", Request("Bayesian", Wmla({{"InitPoints", "many"}})), {"InitPoints"}},
      {"hyperband without resource (WMLA)",
       Request("Hyperband", Wmla({{"ResourceValue", "9"}})),
       {"ResourceName"}},
      {"hyperband without params", Request("Hyperband"), {"ResourceName", "resource_name"}},
      {"hyperband without resource_name",
       Request("hyperband", Json{{"max_resource", 9}}),
       {"resource_name"}},
      {"hyperband without max_resource",
       Request("hyperband", Json{{"resource_name", "epochs"}}),
       {"max_resource"}},
      {"hyperband eta",
       Request("hyperband", Json{{"resource_name", "e"}, {"max_resource", 9}, {"eta", 1}}),
       {"eta"}},
      {"asha reduction_factor",
       Request("asha", Json{{"reduction_factor", 1}}),
       {"reduction_factor"}},
      {"asha sampler", Request("asha", Json{{"sampler", "gp"}}), {"sampler", "random", "tpe"}},
      {"asha WMLA list", Request("asha", Wmla({{"RandomSeed", "1"}})), {"asha", "object"}},
      {"asha plus pruner",
       with(Request("asha"),
            [](auto& r) {
              r.pruner = Json{{"name", "median"}};
            }),
       {"pruner", "asha"}},
      {"unknown pruner",
       with(Request("tpe"),
            [](auto& r) {
              r.pruner = Json{{"name", "hb"}};
            }),
       {"pruner.name", "median", "asha"}},
      {"pruner not an object",
       with(Request("tpe"), [](auto& r) { r.pruner = "median"; }),
       {"pruner", "name"}},
      {"pruner unknown option",
       with(Request("tpe"),
            [](auto& r) {
              r.pruner = Json{{"name", "median"}, {"warmup", 1}};
            }),
       {"pruner", "warmup", "n_warmup_steps"}},
      {"pruner bad option",
       with(Request("tpe"),
            [](auto& r) {
              r.pruner = Json{{"name", "median"}, {"interval_steps", 0}};
            }),
       {"pruner.interval_steps"}},
      {"experiment grid without experiments", Request("ExperimentGridSearch"), {"experiments"}},
      {"experiment grid empty list",
       with(Request("ExperimentGridSearch"), [](auto& r) { r.wmla_experiments = Json::array(); }),
       {"experiments", "non-empty"}},
      {"experiment grid bad dataType",
       with(
           Request("ExperimentGridSearch"),
           [](auto& r) {
             r.wmla_experiments = Json::parse(
                 R"([{"id": 1, "hyperParams": [{"name": "lr", "dataType": "FLOAT", "fixedVal": "1"}]}])");
           }),
       {"experiments[0]", "lr"}},
      {"experiment grid bad INT",
       with(
           Request("ExperimentGridSearch"),
           [](auto& r) {
             r.wmla_experiments = Json::parse(
                 R"([{"id": 1, "hyperParams": [{"name": "bs", "dataType": "INT", "fixedVal": "1.5"}]}])");
           }),
       {"experiments[0]", "bs"}},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<Algorithm> result = MakeAlgorithm(c.request, MixedSpace());
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& part : c.message) {
      EXPECT_THAT(std::string(result.status().message()), HasSubstr(part));
    }
  }
}

TEST(MakeAlgorithmTest, GridRefusesAContinuousParameterNamingIt) {
  EXPECT_THAT(
      MakeAlgorithm(Request("grid"), MixedSpace()),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("lr"), HasSubstr("step"))));
}

TEST(MakeAlgorithmTest, GridVisitsEveryPointOnce) {
  KILN_ASSERT_OK_AND_ASSIGN(
      Algorithm a, MakeAlgorithm(Request("grid", Wmla({{"RandomSeed", "3"}})), FiniteSpace()));
  std::vector<TrialRecord> history;
  std::set<Point> seen;
  while (true) {
    auto s = a.sampler->Ask(history);
    KILN_ASSERT_OK(s);
    if (!s->has_value()) break;
    TrialRecord t;
    t.number = static_cast<int64_t>(history.size());
    t.params = (*s)->params;
    history.push_back(t);
    seen.insert(t.params);
  }
  EXPECT_EQ(seen.size(), 16u);  // 8 widths x 2 optimizers
  EXPECT_EQ(history.size(), 16u);
}

}  // namespace
}  // namespace kiln::hpo
