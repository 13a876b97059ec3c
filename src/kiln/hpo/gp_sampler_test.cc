#include "kiln/hpo/gp_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kiln/hpo/gp_internal.h"
#include "kiln/hpo/testing/param_specs.h"
#include "kiln/hpo/testing/trial_records.h"

namespace kiln::hpo {
namespace {

using test_trials::AskPoint;
using test_trials::Complete;

using test_params::Double;

SearchSpace BraninSpace() {
  auto space = SearchSpace::Create({Double("x1", -5, 10), Double("x2", 0, 15)});
  EXPECT_TRUE(space.ok()) << space.status();
  return *space;
}

// Branin-Hoo; global minimum 0.397887 at three points.
double Branin(const Point& p) {
  const double x1 = p.at("x1");
  const double x2 = p.at("x2");
  const double b = 5.1 / (4 * M_PI * M_PI);
  const double c = 5 / M_PI;
  const double t = 1 / (8 * M_PI);
  return std::pow(x2 - b * x1 * x1 + c * x1 - 6, 2) + 10 * (1 - t) * std::cos(x1) + 10;
}

std::unique_ptr<GpSampler> MakeSampler(const SearchSpace& space, GpOptions options) {
  auto sampler = GpSampler::Create(space, options);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return std::move(*sampler);
}

// Runs `n` sequential trials of Branin and returns the best value.
double BestAfter(GpSampler& sampler, int n) {
  std::vector<TrialRecord> history;
  double best = INFINITY;
  for (int i = 0; i < n; ++i) {
    Point p = AskPoint(sampler, history);
    const double v = Branin(p);
    best = std::min(best, v);
    history.push_back(Complete(i, std::move(p), v));
  }
  return best;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A history of `n` finished Branin trials at random points.
std::vector<TrialRecord> RandomHistory(const SearchSpace& space, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TrialRecord> history;
  for (int i = 0; i < n; ++i) {
    Point p = space.SampleUniform(rng);
    const double v = Branin(p);
    history.push_back(Complete(i, std::move(p), v));
  }
  return history;
}

TEST(GpOptionsTest, ParsesWmlaAlgoParams) {
  auto options = GpOptionsFromWmla(base::Json::parse(R"([
      {"name": "RandomSeed", "value": "7"}, {"name": "InitPoints", "value": "5"},
      {"name": "CubeSize", "value": "300"}, {"name": "Noiseless", "value": "False"}])"));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->seed, 7u);
  EXPECT_EQ(options->init_points, 5);
  EXPECT_EQ(options->cube_size, 300);
  EXPECT_FALSE(options->noiseless);
}

TEST(GpOptionsTest, DefaultsWhenAlgoParamsAreAbsentOrEmpty) {
  for (const base::Json& j : {base::Json(), base::Json::array()}) {
    auto options = GpOptionsFromWmla(j);
    ASSERT_TRUE(options.ok()) << options.status();
    EXPECT_EQ(options->init_points, 10);
    EXPECT_EQ(options->cube_size, 0);
    EXPECT_TRUE(options->noiseless);
  }
}

TEST(GpOptionsTest, RejectsUnknownNamesListingKnownOnes) {
  auto options = GpOptionsFromWmla(base::Json::parse(R"([{"name": "WarmUp", "value": "3"}])"));
  ASSERT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(options.status().message().find("WarmUp"), std::string::npos);
  EXPECT_NE(options.status().message().find("InitPoints"), std::string::npos);
}

TEST(GpOptionsTest, RejectsMalformedValues) {
  for (const char* bad :
       {R"([{"name": "InitPoints", "value": "0"}])", R"([{"name": "CubeSize", "value": "many"}])",
        R"([{"name": "Noiseless", "value": "maybe"}])",
        R"([{"name": "RandomSeed", "value": "-1"}])", R"([{"value": "1"}])",
        R"({"InitPoints": "3"})"}) {
    EXPECT_EQ(GpOptionsFromWmla(base::Json::parse(bad)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(GpSamplerTest, CreateRejectsInvalidOptions) {
  GpOptions bad_init;
  bad_init.init_points = -1;
  EXPECT_FALSE(GpSampler::Create(BraninSpace(), bad_init).ok());
  GpOptions bad_cube;
  bad_cube.cube_size = -5;
  EXPECT_FALSE(GpSampler::Create(BraninSpace(), bad_cube).ok());
  GpOptions bad_fit;
  bad_fit.max_fit_points = 1;
  EXPECT_FALSE(GpSampler::Create(BraninSpace(), bad_fit).ok());
}

TEST(GpSamplerTest, SameSeedAndHistoryGiveTheSameProposal) {
  const SearchSpace space = BraninSpace();
  const std::vector<TrialRecord> history = RandomHistory(space, 15, 3);
  GpOptions options;
  options.seed = 11;
  auto a = MakeSampler(space, options);
  auto b = MakeSampler(space, options);
  EXPECT_EQ(AskPoint(*a, history), AskPoint(*b, history));
  EXPECT_EQ(AskPoint(*a, {}), AskPoint(*b, {}));
}

TEST(GpSamplerTest, ProposesIgnoringValuesDuringInitPoints) {
  const SearchSpace space = BraninSpace();
  GpOptions options;
  options.init_points = 10;
  auto sampler = MakeSampler(space, options);
  std::vector<TrialRecord> history = RandomHistory(space, 5, 4);
  std::vector<TrialRecord> flipped = history;
  for (TrialRecord& t : flipped) t.value = -*t.value;
  EXPECT_EQ(AskPoint(*sampler, history), AskPoint(*sampler, flipped));
  // Past the init phase the values steer the proposal.
  history = RandomHistory(space, 12, 4);
  flipped = history;
  for (TrialRecord& t : flipped) t.value = -*t.value;
  EXPECT_NE(AskPoint(*sampler, history), AskPoint(*sampler, flipped));
}

TEST(GpSamplerTest, BeatsRandomSearchOnBraninAfterFortyTrials) {
  const SearchSpace space = BraninSpace();
  std::vector<double> gp_best, random_best;
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    GpOptions options;
    options.seed = seed;
    options.init_points = 8;
    options.cube_size = 500;
    auto gp = MakeSampler(space, options);
    gp_best.push_back(BestAfter(*gp, 40));
    std::mt19937_64 rng(seed);
    double best = INFINITY;
    for (int i = 0; i < 40; ++i) best = std::min(best, Branin(space.SampleUniform(rng)));
    random_best.push_back(best);
  }
  EXPECT_LT(Median(gp_best), Median(random_best));
  EXPECT_LT(Median(gp_best), 0.6);  // the optimum is 0.398
}

TEST(GpSamplerTest, MovesAwayFromAPointThatIsAlreadyRunning) {
  const SearchSpace space = BraninSpace();
  std::vector<TrialRecord> history = RandomHistory(space, 15, 5);
  auto sampler = MakeSampler(space, GpOptions{});
  const Point first = AskPoint(*sampler, history);
  for (int i = 0; i < 3; ++i) {
    TrialRecord running;
    running.number = static_cast<int64_t>(history.size());
    running.params = first;
    running.state = TrialState::kRunning;
    history.push_back(running);
  }
  const Point next = AskPoint(*sampler, history);
  const double dx = (next.at("x1") - first.at("x1")) / 15;
  const double dy = (next.at("x2") - first.at("x2")) / 15;
  EXPECT_GT(std::hypot(dx, dy), 0.01);
}

TEST(GpSamplerTest, ProposesValidIntCategoricalLogAndConditionalValues) {
  ParamSpec width;
  width.name = "width";
  width.kind = ParamKind::kInt;
  width.low = 32;
  width.high = 512;
  width.step = 32;
  ParamSpec opt;
  opt.name = "opt";
  opt.kind = ParamKind::kCategorical;
  opt.choices = {"sgd", "adam", "rmsprop"};
  ParamSpec momentum = Double("momentum", 0.5, 0.99);
  momentum.condition = Condition{"opt", {"sgd"}};
  ParamSpec epochs;
  epochs.name = "epochs";
  epochs.kind = ParamKind::kFixed;
  epochs.choices = {3};
  auto space = SearchSpace::Create({Double("lr", 1e-5, 1e-1, true), width, opt, momentum, epochs});
  ASSERT_TRUE(space.ok()) << space.status();

  GpOptions options;
  options.init_points = 5;
  options.cube_size = 300;
  auto sampler = MakeSampler(*space, options);
  std::vector<TrialRecord> history;
  for (int i = 0; i < 25; ++i) {
    Point p = AskPoint(*sampler, history);
    ASSERT_TRUE(p.count("lr") && p.count("width") && p.count("opt") && p.count("epochs"));
    EXPECT_GE(p["lr"], 1e-5);
    EXPECT_LE(p["lr"], 1e-1);
    EXPECT_GE(p["width"], 32);
    EXPECT_LE(p["width"], 512);
    EXPECT_EQ(std::fmod(p["width"] - 32, 32), 0) << p["width"];
    EXPECT_EQ(p["opt"], std::round(p["opt"]));
    EXPECT_GE(p["opt"], 0);
    EXPECT_LE(p["opt"], 2);
    EXPECT_EQ(p.count("momentum") == 1, p["opt"] == 0);
    const double value = std::pow(std::log10(p["lr"]) + 2.5, 2) + p["width"] / 512 + p["opt"] +
                         (p.count("momentum") ? std::abs(p["momentum"] - 0.9) : 0);
    history.push_back(Complete(i, std::move(p), value));
  }
}

TEST(GpSamplerTest, StaysFiniteOnDuplicatePointsConstantValuesAndOneObservation) {
  const SearchSpace space = BraninSpace();
  GpOptions options;
  options.init_points = 0;
  options.cube_size = 200;
  auto sampler = MakeSampler(space, options);
  auto valid = [](const Point& p) {
    return std::isfinite(p.at("x1")) && std::isfinite(p.at("x2")) && p.at("x1") >= -5 &&
           p.at("x1") <= 10 && p.at("x2") >= 0 && p.at("x2") <= 15;
  };
  const Point at{{"x1", 1.0}, {"x2", 2.0}};
  // One observation.
  EXPECT_TRUE(valid(AskPoint(*sampler, {Complete(0, at, 5)})));
  // The same point twenty times with different values (noise the model must absorb).
  std::vector<TrialRecord> duplicates;
  for (int i = 0; i < 20; ++i) duplicates.push_back(Complete(i, at, i % 2 ? 1.0 : 3.0));
  EXPECT_TRUE(valid(AskPoint(*sampler, duplicates)));
  // Constant objective everywhere.
  std::vector<TrialRecord> constant = RandomHistory(space, 20, 6);
  for (TrialRecord& t : constant) t.value = 4.0;
  EXPECT_TRUE(valid(AskPoint(*sampler, constant)));
  // Huge values.
  std::vector<TrialRecord> huge = RandomHistory(space, 20, 7);
  for (TrialRecord& t : huge) t.value = *t.value * 1e200;
  EXPECT_TRUE(valid(AskPoint(*sampler, huge)));
  // Only running and failed trials: random.
  TrialRecord failed;
  failed.params = at;
  failed.state = TrialState::kFailed;
  EXPECT_TRUE(valid(AskPoint(*sampler, {failed})));
  options.noiseless = false;
  auto noisy = MakeSampler(space, options);
  EXPECT_TRUE(valid(AskPoint(*noisy, duplicates)));
  EXPECT_TRUE(valid(AskPoint(*noisy, constant)));
}

TEST(GpInternalTest, CholeskyFactorsPositiveDefiniteAndRejectsIndefinite) {
  // A = M M^T + I for a fixed M is positive definite; L L^T must give it back.
  const int n = 5;
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = i == j ? 1 : 0;
      for (int k = 0; k < n; ++k) s += std::sin(i + 2 * k) * std::sin(j + 2 * k);
      a[i * n + j] = s;
    }
  }
  std::vector<double> l = a;
  ASSERT_TRUE(gp_internal::Cholesky(l, n));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = 0;
      for (int k = 0; k <= j; ++k) s += l[i * n + k] * l[j * n + k];
      EXPECT_NEAR(s, a[i * n + j], 1e-12);
    }
  }
  std::vector<double> indefinite = {1, 2, 2, 1};
  EXPECT_FALSE(gp_internal::Cholesky(indefinite, 2));
}

TEST(GpInternalTest, LikelihoodGradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> unit(0, 1);
  gp_internal::Data data;
  data.dim = 3;
  for (int i = 0; i < 30; ++i) {
    for (int d = 0; d < 3; ++d) data.x.push_back(unit(rng));
    data.y.push_back(std::sin(6 * data.row(i)[0]) + data.row(i)[1]);
  }
  const std::vector<double> sq = gp_internal::PairwiseSquares(data);
  for (bool fit_noise : {false, true}) {
    std::vector<double> theta = {-1.0, -0.5, 0.2, 0.3};
    if (fit_noise) theta.push_back(-3);
    std::vector<double> grad;
    const double value = gp_internal::LogLikelihood(data, sq, theta, fit_noise, &grad);
    ASSERT_TRUE(std::isfinite(value));
    ASSERT_EQ(grad.size(), theta.size());
    for (size_t p = 0; p < theta.size(); ++p) {
      std::vector<double> plus = theta, minus = theta;
      plus[p] += 1e-5;
      minus[p] -= 1e-5;
      const double numeric = (gp_internal::LogLikelihood(data, sq, plus, fit_noise, nullptr) -
                              gp_internal::LogLikelihood(data, sq, minus, fit_noise, nullptr)) /
                             2e-5;
      EXPECT_NEAR(grad[p], numeric, 1e-4 * std::max(1.0, std::abs(numeric)))
          << "parameter " << p << (fit_noise ? " (noise fitted)" : "");
    }
  }
}

}  // namespace
}  // namespace kiln::hpo
