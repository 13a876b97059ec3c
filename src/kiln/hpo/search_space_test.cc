#include "kiln/hpo/search_space.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/hpo/testing/param_specs.h"

namespace kiln::hpo {
namespace {

using ::testing::HasSubstr;

base::Json J(const char* text) { return base::Json::parse(text); }

using test_params::Double;

ParamSpec Int(std::string name, double low, double high, double step = 0) {
  ParamSpec p = Double(std::move(name), low, high);
  p.kind = ParamKind::kInt;
  p.step = step;
  return p;
}

void ExpectInvalid(std::vector<ParamSpec> params, const std::string& part) {
  EXPECT_THAT(SearchSpace::Create(std::move(params)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(part)));
}

TEST(SearchSpaceTest, CreateRejectsMinAboveMaxNamingTheParameter) {
  ExpectInvalid({Double("lr", 0.5, 0.1)}, "'lr': min 0.5 is greater than max 0.1; swap them");
}

TEST(SearchSpaceTest, CreateRejectsEmptyDiscreteList) {
  ExpectInvalid({test_params::Categorical("opt", {})},
                "'opt': the list of discrete values is empty");
}

TEST(SearchSpaceTest, CreateRejectsNonPositivePowerAndStep) {
  ParamSpec p = Double("x", -2, 0);
  p.kind = ParamKind::kPower;
  p.power = 0;
  ExpectInvalid({p}, "power 0 must be a positive number");
  p.power = -10;
  ExpectInvalid({p}, "power -10 must be a positive number");
  ParamSpec s = Double("y", 0, 1);
  s.step = -0.1;
  ExpectInvalid({s}, "step -0.1 must be a positive number");
}

TEST(SearchSpaceTest, CreateRejectsAStepThatYieldsNoValueBeyondMin) {
  ParamSpec s = Double("y", 0, 1);
  s.step = 2;
  ExpectInvalid({s}, "step 2 yields no value");
  ExpectInvalid({Int("n", 0, 10, 0.5)}, "whole number");
}

TEST(SearchSpaceTest, CreateRejectsLogWithNonPositiveLow) {
  ParamSpec p = Double("lr", 0, 1);
  p.log = true;
  ExpectInvalid({p}, "'lr': a log range needs min > 0");
}

TEST(SearchSpaceTest, CreateRejectsDuplicateNames) {
  ExpectInvalid({Double("a", 0, 1), Double("a", 0, 2)}, "'a': declared twice");
}

TEST(SearchSpaceTest, CreateRejectsConditionsOnUnknownOrLaterParameters) {
  ParamSpec child = Double("momentum", 0, 1);
  child.condition = Condition{"opt", {"sgd"}};
  ExpectInvalid({child}, "unknown hyperparameter 'opt'");
  ExpectInvalid({child, test_params::Categorical("opt", {"sgd", "adam"})},
                "declared later; declare it first");
  KILN_EXPECT_OK(SearchSpace::Create({test_params::Categorical("opt", {"sgd", "adam"}), child}));
}

TEST(SearchSpaceTest, CreateRejectsNonIntegerIntBoundsAndUnknownKind) {
  ExpectInvalid({Int("n", 0.5, 3)}, "integer min and max");
  ParamSpec p = Double("z", 0, 1);
  p.kind = static_cast<ParamKind>(42);
  ExpectInvalid({p}, "unknown kind");
}

TEST(SearchSpaceTest, FromWmlaParsesTheReferenceExampleWithStringStepAndPower) {
  base::Json h = J(R"([
    {"name": "learning_rate", "type": "Range", "dataType": "DOUBLE",
     "minDbVal": 0.001, "maxDbVal": 0.1, "minIntVal": 0, "maxIntVal": 0,
     "discreteDbVal": [], "discreteIntVal": [], "discreateStrVal": [],
     "step": "0.002", "power": ""},
    {"name": "alpha", "type": "range", "dataType": "double",
     "minDbVal": -2, "maxDbVal": 0, "power": "10"},
    {"name": "batch", "type": "DISCRETE", "dataType": "int", "discreteIntVal": [32, 64, 128]},
    {"name": "opt", "type": "Discrete", "dataType": "STR", "discreateStrVal": ["SGD", "Adam"]},
    {"name": "depth", "type": "Range", "dataType": "INT", "minIntVal": 2, "maxIntVal": 8,
     "step": 2}
  ])");
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::FromWmla(h));
  ASSERT_EQ(s.params().size(), 5u);
  const ParamSpec& lr = s.params()[0];
  EXPECT_EQ(lr.kind, ParamKind::kDouble);
  EXPECT_DOUBLE_EQ(lr.step, 0.002);
  EXPECT_EQ(lr.Cardinality(), 50);
  const ParamSpec& alpha = s.params()[1];
  EXPECT_EQ(alpha.kind, ParamKind::kPower);
  EXPECT_DOUBLE_EQ(alpha.power, 10);
  EXPECT_EQ(alpha.Cardinality(), std::nullopt);
  EXPECT_EQ(s.params()[2].kind, ParamKind::kCategorical);
  EXPECT_EQ(s.params()[3].choices[1], "Adam");
  EXPECT_EQ(s.params()[4].Cardinality(), 4);

  base::Json config = s.ToConfig({{"learning_rate", 0.001 + 3 * 0.002},
                                  {"alpha", -2},
                                  {"batch", 1},
                                  {"opt", 1},
                                  {"depth", 6}});
  EXPECT_EQ(config, J(R"({"learning_rate": 0.007, "alpha": 0.01, "batch": 64,
                          "opt": "Adam", "depth": 6})"));
  EXPECT_TRUE(config["batch"].is_number_integer());
  EXPECT_TRUE(config["depth"].is_number_integer());
  EXPECT_EQ(s.GridSize(), std::nullopt);
}

TEST(SearchSpaceTest, FromWmlaIntPowerGivesIntegerValuesOnIntegerExponents) {
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::FromWmla(J(R"([
    {"name": "batch", "type": "Range", "dataType": "INT", "minIntVal": "4", "maxIntVal": "7",
     "power": 2}])")));
  EXPECT_EQ(s.params()[0].Cardinality(), 4);
  base::Json config = s.ToConfig({{"batch", 5}});
  EXPECT_EQ(config["batch"], 32);
  EXPECT_TRUE(config["batch"].is_number_integer());
}

TEST(SearchSpaceTest, FromWmlaReportsTheFieldAndTheFix) {
  auto expect = [](const char* text, const std::string& part) {
    EXPECT_THAT(SearchSpace::FromWmla(J(text)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(part)))
        << text;
  };
  expect(R"({"name": "x"})", "hyperParams must be a list");
  expect(R"([])", "hyperParams is empty");
  expect(R"([{"name": "x", "type": "Ranged", "dataType": "DOUBLE"}])",
         "'x': unknown type \"Ranged\"; use \"Range\" or \"Discrete\"");
  expect(R"([{"name": "x", "type": "Range", "dataType": "FLOAT"}])",
         "'x': unknown dataType \"FLOAT\"");
  expect(R"([{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 1}])",
         "'x': missing maxDbVal");
  expect(R"([{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 2,
              "maxDbVal": 1}])",
         "'x': min 2 is greater than max 1");
  expect(R"([{"name": "x", "type": "Discrete", "dataType": "STR", "discreateStrVal": []}])",
         "non-empty list \"discreateStrVal\"");
  expect(R"([{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0,
              "maxDbVal": 1, "step": "0"}])",
         "'x': step 0 must be > 0");
  expect(R"([{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0,
              "maxDbVal": 1, "step": "abc"}])",
         "step must be a finite number");
  expect(R"([{"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0,
              "maxDbVal": 1, "power": "-1"}])",
         "'x': power -1 must be > 0");
  expect(R"([{"name": "x", "type": "Range", "dataType": "STR"}])", "for strings use");
  expect(R"([{"name": "x", "type": "Discrete", "dataType": "INT", "discreteIntVal": [1.5]}])",
         "must hold integers");
  expect(R"([{"name": "x", "type": "Range", "dataType": "INT", "minIntVal": 0,
              "maxIntVal": 1}, {"name": "x", "type": "Range", "dataType": "INT",
              "minIntVal": 0, "maxIntVal": 1}])",
         "'x': declared twice");
  expect(R"([7])", "hyperParams[0] must be an object");
  expect(R"([{"type": "Range"}])", "hyperParams[0] needs a non-empty string \"name\"");
}

TEST(SearchSpaceTest, FromNativeParsesTheDocumentedExample) {
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::FromNative(J(R"({
    "lr": {"type": "double", "low": 1e-4, "high": 0.1, "log": true},
    "width": {"type": "int", "low": 32, "high": 512, "step": 32},
    "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "double", "low": 0.5, "high": 0.99, "condition": {"opt": ["sgd"]}},
    "epochs": 3})")));
  ASSERT_EQ(s.params().size(), 5u);
  // The parent comes before its conditional child whatever the key order.
  std::vector<std::string> names;
  for (const auto& p : s.params()) names.push_back(p.name);
  auto pos = [&](const std::string& n) { return std::find(names.begin(), names.end(), n); };
  EXPECT_LT(pos("opt"), pos("momentum"));
  EXPECT_TRUE(s.Find("lr")->log);
  EXPECT_EQ(s.Find("width")->Cardinality(), 16);
  EXPECT_EQ(s.Find("epochs")->kind, ParamKind::kFixed);

  const ParamSpec& momentum = *s.Find("momentum");
  EXPECT_TRUE(s.IsActive(momentum, {{"opt", 0}}));
  EXPECT_FALSE(s.IsActive(momentum, {{"opt", 1}}));
  EXPECT_FALSE(s.IsActive(momentum, {}));

  base::Json config = s.ToConfig({{"lr", 0.01}, {"width", 64}, {"opt", 1}, {"epochs", 0}});
  EXPECT_EQ(config, J(R"({"lr": 0.01, "width": 64, "opt": "adam", "epochs": 3})"));
}

TEST(SearchSpaceTest, FromNativeRejectsUnknownTypesFieldsAndDanglingConditions) {
  auto expect = [](const char* text, const std::string& part) {
    EXPECT_THAT(SearchSpace::FromNative(J(text)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(part)))
        << text;
  };
  expect(R"([1])", "must be an object");
  expect(R"({"x": {"type": "gaussian"}})", "'x': unknown type \"gaussian\"");
  expect(R"({"x": {"type": "double", "low": 0, "hgh": 1}})", "missing high");
  expect(R"({"x": {"type": "double", "low": 0, "high": 1, "hgh": 1}})", "unknown field \"hgh\"");
  expect(R"({"x": {"type": "double", "low": 0, "high": 1, "condition": {"y": [1]}}})",
         "unknown hyperparameter 'y'");
  expect(R"({"x": {"type": "categorical", "choices": [1], "condition": {"y": [1]}},
             "y": {"type": "categorical", "choices": [1], "condition": {"x": [1]}}})",
         "cycle");
  expect(R"({"x": [1, 2]})", "bare list is ambiguous");
  expect(R"({"x": {"type": "int", "low": 1, "high": 3, "log": "yes"}})", "true or false");
  expect(R"({"x": {"type": "power", "low": 1, "high": 3}})", "needs \"base\"");
}

TEST(SearchSpaceTest, SampleUniformStaysInRangeOnGridsAndIsDeterministic) {
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::FromNative(J(R"({
    "lr": {"type": "double", "low": 1e-5, "high": 1, "log": true},
    "g": {"type": "double", "low": 0, "high": 1, "step": 0.25},
    "n": {"type": "int", "low": -3, "high": 3},
    "c": {"type": "categorical", "choices": ["a", "b", "c"]}})")));
  std::mt19937_64 rng(7), rng2(7);
  int lr_below_1e3 = 0;
  std::set<double> ns, gs;
  for (int i = 0; i < 2000; ++i) {
    Point p = s.SampleUniform(rng);
    EXPECT_EQ(p, s.SampleUniform(rng2));
    ASSERT_EQ(p.size(), 4u);
    EXPECT_GE(p["lr"], 1e-5);
    EXPECT_LE(p["lr"], 1);
    lr_below_1e3 += p["lr"] < 1e-3;
    gs.insert(p["g"]);
    ns.insert(p["n"]);
    EXPECT_EQ(p["c"], std::floor(p["c"]));
  }
  // Log-uniform: 2 of 5 decades lie below 1e-3.
  EXPECT_NEAR(lr_below_1e3 / 2000.0, 0.4, 0.05);
  EXPECT_EQ(gs, (std::set<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(ns, (std::set<double>{-3, -2, -1, 0, 1, 2, 3}));
}

TEST(SearchSpaceTest, UnitMappingRoundTripsAndSnapsToTheGrid) {
  ParamSpec lr = Double("lr", 1e-4, 1);
  lr.log = true;
  ParamSpec g = Double("g", 0, 1);
  g.step = 0.1;
  ParamSpec li = Int("li", 1, 1024);
  li.log = true;
  KILN_ASSERT_OK_AND_ASSIGN(
      SearchSpace s,
      SearchSpace::Create({lr, g, Int("n", 0, 9), test_params::Categorical("c", {"a", "b"}), li}));
  const ParamSpec& plr = s.params()[0];
  EXPECT_NEAR(s.ToUnit(plr, 1e-2), 0.5, 1e-12);
  EXPECT_NEAR(s.FromUnit(plr, 0.25), 1e-3, 1e-12);
  const ParamSpec& pg = s.params()[1];
  EXPECT_DOUBLE_EQ(s.FromUnit(pg, 0.33), 0.3);
  EXPECT_NEAR(s.ToUnit(pg, 0.3), 3.5 / 11, 1e-12);
  const ParamSpec& pn = s.params()[2];
  EXPECT_DOUBLE_EQ(s.ToUnit(pn, 0), 0.05);
  EXPECT_DOUBLE_EQ(s.FromUnit(pn, 0.999), 9);
  EXPECT_DOUBLE_EQ(s.FromUnit(pn, 2.0), 9);
  const ParamSpec& pc = s.params()[3];
  EXPECT_DOUBLE_EQ(s.ToUnit(pc, 0), 0.25);
  EXPECT_DOUBLE_EQ(s.ToUnit(pc, 1), 0.75);
  EXPECT_DOUBLE_EQ(s.FromUnit(pc, 0.5), 1);
  const ParamSpec& pli = s.params()[4];
  for (double v : {1.0, 2.0, 37.0, 1024.0}) {
    EXPECT_DOUBLE_EQ(s.FromUnit(pli, s.ToUnit(pli, v)), v);
  }
  for (const auto& p : s.params()) {
    for (double u : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      double x = s.FromUnit(p, u);
      EXPECT_DOUBLE_EQ(s.FromUnit(p, s.ToUnit(p, x)), x) << p.name << " " << u;
    }
  }
}

TEST(SearchSpaceTest, GridSizeMultipliesCardinalitiesAndGridValuesEnumerateThem) {
  ParamSpec g = Double("g", 0.1, 0.5);
  g.step = 0.1;
  KILN_ASSERT_OK_AND_ASSIGN(
      SearchSpace s,
      SearchSpace::Create({g, Int("n", 2, 10, 4), test_params::Categorical("c", {1, 2.5})}));
  EXPECT_EQ(s.params()[0].Cardinality(), 5);
  EXPECT_EQ(s.params()[1].Cardinality(), 3);
  EXPECT_DOUBLE_EQ(s.params()[1].GridValue(2), 10);
  EXPECT_DOUBLE_EQ(s.params()[2].GridValue(1), 1);
  EXPECT_EQ(s.GridSize(), 30);
  EXPECT_EQ(s.ToConfig({{"g", s.params()[0].GridValue(2)}})["g"], 0.3);
}

TEST(SearchSpaceTest, WideIntRangesAreFiniteButTinyDoubleStepsAreRejected) {
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::Create({Int("seed", 0, 1e15)}));
  EXPECT_EQ(s.GridSize(), 1'000'000'000'000'001);
  ParamSpec g = Double("g", 0, 1);
  g.step = 1e-13;
  ExpectInvalid({g}, "more than 1e12 values; use a larger step");
}

TEST(SearchSpaceTest, ConditionsMatchNumbersAcrossIntegerAndFloatJson) {
  ParamSpec child = Double("x", 0, 1);
  child.condition = Condition{"n", {2.0}};
  KILN_ASSERT_OK_AND_ASSIGN(SearchSpace s, SearchSpace::Create({Int("n", 1, 3), child}));
  EXPECT_TRUE(s.IsActive(s.params()[1], {{"n", 2}}));
  EXPECT_FALSE(s.IsActive(s.params()[1], {{"n", 3}}));
}

}  // namespace
}  // namespace kiln::hpo
