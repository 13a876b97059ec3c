#include "kiln/hpo/cmaes_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kiln/hpo/algorithm.h"
#include "kiln/hpo/testing/param_specs.h"
#include "kiln/hpo/testing/trial_records.h"

namespace kiln::hpo {
namespace {

using test_trials::AskPoint;
using test_trials::Complete;
using test_trials::Running;

using test_params::Categorical;
using test_params::Double;

SearchSpace SphereSpace(int dim) {
  std::vector<ParamSpec> params;
  for (int i = 0; i < dim; ++i) params.push_back(Double("x" + std::to_string(i), -5, 5));
  auto space = SearchSpace::Create(std::move(params));
  EXPECT_TRUE(space.ok()) << space.status();
  return *space;
}

// Shifted sphere: minimum 0 at x_i = 1.
double Sphere(const Point& p) {
  double s = 0;
  for (const auto& [name, v] : p) s += (v - 1) * (v - 1);
  return s;
}

std::unique_ptr<CmaEsSampler> MakeSampler(const SearchSpace& space, CmaEsOptions options) {
  auto sampler = CmaEsSampler::Create(space, options);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return std::move(*sampler);
}

// `trials` sequential trials of the sphere; returns the history.
std::vector<TrialRecord> RunSphere(Sampler& sampler, int trials) {
  std::vector<TrialRecord> history;
  for (int i = 0; i < trials; ++i) {
    Point p = AskPoint(sampler, history);
    const double v = Sphere(p);
    history.push_back(Complete(i, std::move(p), v));
  }
  return history;
}

double Best(const std::vector<TrialRecord>& history) {
  double best = INFINITY;
  for (const auto& t : history) {
    if (t.value) best = std::min(best, *t.value);
  }
  return best;
}

TEST(CmaEsSamplerTest, RejectsBadOptions) {
  const SearchSpace space = SphereSpace(2);
  CmaEsOptions options;
  options.population_size = 1;
  EXPECT_EQ(CmaEsSampler::Create(space, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = CmaEsOptions{};
  options.sigma0 = 0;
  auto bad = CmaEsSampler::Create(space, options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("sigma0"), std::string::npos);
  options = CmaEsOptions{};
  options.min_kendall_tau = 2;
  EXPECT_EQ(CmaEsSampler::Create(space, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CmaEsSamplerTest, ConvergesOnSphere) {
  const SearchSpace space = SphereSpace(5);
  for (bool surrogate : {false, true}) {
    CmaEsOptions options;
    options.seed = 3;
    options.surrogate = surrogate;
    auto sampler = MakeSampler(space, options);
    const auto history = RunSphere(*sampler, 400);
    // Random search gets ~1 here; CMA-ES converges geometrically.
    EXPECT_LT(Best(history), surrogate ? 1e-8 : 1e-3) << "surrogate=" << surrogate;
  }
}

TEST(CmaEsSamplerTest, SurrogateNeedsFewerTrialsOnSphere) {
  const SearchSpace space = SphereSpace(4);
  CmaEsOptions plain;
  plain.surrogate = false;
  CmaEsOptions lq;
  auto a = MakeSampler(space, plain);
  auto b = MakeSampler(space, lq);
  EXPECT_LT(Best(RunSphere(*b, 150)), Best(RunSphere(*a, 150)));
}

TEST(CmaEsSamplerTest, DeterministicForSeedAndHistory) {
  const SearchSpace space = SphereSpace(3);
  CmaEsOptions options;
  options.seed = 11;
  auto a = MakeSampler(space, options);
  const auto history = RunSphere(*a, 60);
  // A fresh sampler (no cache) and the one that produced the history agree, at every prefix.
  auto b = MakeSampler(space, options);
  for (size_t n : {size_t{0}, size_t{7}, size_t{33}, size_t{60}}) {
    const std::vector<TrialRecord> prefix(history.begin(), history.begin() + n);
    EXPECT_EQ(AskPoint(*a, prefix), AskPoint(*b, prefix)) << n;
    EXPECT_EQ(AskPoint(*b, prefix), AskPoint(*b, prefix)) << n;
  }
  // The same history replayed trial by trial gives the same trials.
  auto c = MakeSampler(space, options);
  EXPECT_EQ(RunSphere(*c, 60)[59].params, history[59].params);
  options.seed = 12;
  auto d = MakeSampler(space, options);
  EXPECT_NE(AskPoint(*d, history), AskPoint(*a, history));
}

TEST(CmaEsSamplerTest, RespectsTypesBoundsAndConditions) {
  ParamSpec lr = Double("lr", 1e-5, 1e-1, /*log=*/true);
  ParamSpec width;
  width.name = "width";
  width.kind = ParamKind::kInt;
  width.low = 32;
  width.high = 512;
  width.step = 32;
  ParamSpec opt = Categorical("opt", {base::Json("sgd"), base::Json("adam"), base::Json("rms")});
  ParamSpec momentum = Double("momentum", 0.5, 0.99);
  momentum.condition = Condition{"opt", {base::Json("sgd")}};
  ParamSpec epochs;
  epochs.name = "epochs";
  epochs.kind = ParamKind::kFixed;
  epochs.choices = {base::Json(3)};
  auto space = SearchSpace::Create({lr, width, opt, momentum, epochs});
  ASSERT_TRUE(space.ok()) << space.status();
  for (bool surrogate : {false, true}) {
    CmaEsOptions options;
    options.surrogate = surrogate;
    auto sampler = MakeSampler(*space, options);
    std::vector<TrialRecord> history;
    std::set<double> opts;
    for (int i = 0; i < 150; ++i) {
      Point p = AskPoint(*sampler, history);
      ASSERT_EQ(p.count("lr"), 1u);
      EXPECT_GE(p["lr"], 1e-5);
      EXPECT_LE(p["lr"], 1e-1);
      EXPECT_GE(p["width"], 32);
      EXPECT_LE(p["width"], 512);
      EXPECT_EQ(std::fmod(p["width"] - 32, 32), 0);
      ASSERT_EQ(p.count("opt"), 1u);
      opts.insert(p["opt"]);
      EXPECT_TRUE(p["opt"] == 0 || p["opt"] == 1 || p["opt"] == 2);
      EXPECT_EQ(p.count("momentum"), p["opt"] == 0 ? 1u : 0u);
      if (p.count("momentum")) {
        EXPECT_GE(p["momentum"], 0.5);
        EXPECT_LE(p["momentum"], 0.99);
      }
      EXPECT_EQ(p.at("epochs"), 0);
      // Small lr and adam are best; momentum matters when active.
      const double v = std::pow(std::log10(p["lr"]) + 3, 2) + (p["opt"] == 1 ? 0 : 1) +
                       p["width"] / 512 + (p.count("momentum") ? p["momentum"] : 0);
      history.push_back(Complete(i, std::move(p), v));
    }
    EXPECT_GT(opts.size(), 1u);  // categories are explored, not fixed at the start
  }
}

TEST(CmaEsSamplerTest, ParallelAsksSpreadAndStillConverge) {
  const SearchSpace space = SphereSpace(4);
  for (bool surrogate : {false, true}) {
    CmaEsOptions options;
    options.surrogate = surrogate;
    auto sampler = MakeSampler(space, options);
    std::vector<TrialRecord> history;
    // Batches of 12 (more than a generation of 9): all asked before any is told.
    for (int batch = 0; batch < 30; ++batch) {
      const size_t start = history.size();
      std::set<Point> distinct;
      for (int j = 0; j < 12; ++j) {
        Point p = AskPoint(*sampler, history);
        distinct.insert(p);
        history.push_back(Running(static_cast<int64_t>(history.size()), std::move(p)));
      }
      EXPECT_EQ(distinct.size(), 12u);
      // They finish in reverse order: the oldest running trial holds back the update.
      for (size_t j = history.size(); j-- > start;) {
        history[j].state = TrialState::kComplete;
        history[j].value = Sphere(history[j].params);
        if (j == start + 5) {
          EXPECT_TRUE(sampler->Ask(history).ok());
        }
      }
    }
    EXPECT_LT(Best(history), 1e-3) << "surrogate=" << surrogate;
  }
}

TEST(CmaEsSamplerTest, TrialsFromElsewhereInTheHistory) {
  // A history that starts with points the sampler never proposed (another sampler's, or
  // enqueued by hand): they join the first generations (or only the surrogate's data) and
  // the search proceeds.
  const SearchSpace space = SphereSpace(3);
  for (bool surrogate : {false, true}) {
    CmaEsOptions options;
    options.surrogate = surrogate;
    auto sampler = MakeSampler(space, options);
    std::mt19937_64 rng(5);
    std::vector<TrialRecord> history;
    for (int i = 0; i < 25; ++i) {
      Point p = space.SampleUniform(rng);
      const double v = Sphere(p);
      history.push_back(Complete(i, std::move(p), v));
    }
    for (int i = 25; i < 300; ++i) {
      Point p = AskPoint(*sampler, history);
      const double v = Sphere(p);
      history.push_back(Complete(i, std::move(p), v));
    }
    EXPECT_LT(Best(history), 1e-4) << "surrogate=" << surrogate;
  }
}

TEST(CmaEsSamplerTest, FailedTrialsRankLast) {
  const SearchSpace space = SphereSpace(2);
  CmaEsOptions options;
  options.surrogate = false;
  auto sampler = MakeSampler(space, options);
  std::vector<TrialRecord> history;
  // Everything with x0 > 1 "crashes": the search must still find the optimum (1, 1) from
  // the feasible side.
  for (int i = 0; i < 300; ++i) {
    Point p = AskPoint(*sampler, history);
    TrialRecord t = Running(i, p);
    if (p["x0"] > 1.0) {
      t.state = TrialState::kFailed;
    } else {
      t.state = TrialState::kComplete;
      t.value = Sphere(p);
    }
    history.push_back(std::move(t));
  }
  EXPECT_LT(Best(history), 1e-3);
}

TEST(CmaEsSamplerTest, RestartsAfterConvergence) {
  const SearchSpace space = SphereSpace(2);
  CmaEsOptions options;
  options.surrogate = false;
  auto sampler = MakeSampler(space, options);
  const auto history = RunSphere(*sampler, 1500);
  // The first run converges to the optimum well within 1,500 trials; IPOP then restarts from
  // a random mean, so late trials are again spread over the box.
  double late_max = 0;
  for (size_t i = history.size() - 300; i < history.size(); ++i) {
    late_max = std::max(late_max, *history[i].value);
  }
  EXPECT_LT(Best(history), 1e-10);
  EXPECT_GT(late_max, 1e-3);

  options.restarts = false;
  auto no_restart = MakeSampler(space, options);
  const auto converged = RunSphere(*no_restart, 800);
  EXPECT_LT(converged.back().value.value(), 1e-10);
}

TEST(CmaEsSamplerTest, OnlyFixedParameters) {
  ParamSpec fixed;
  fixed.name = "epochs";
  fixed.kind = ParamKind::kFixed;
  fixed.choices = {base::Json(5)};
  auto space = SearchSpace::Create({fixed});
  ASSERT_TRUE(space.ok()) << space.status();
  auto sampler = MakeSampler(*space, CmaEsOptions{});
  EXPECT_EQ(AskPoint(*sampler, {}), (Point{{"epochs", 0}}));
}

TEST(CmaEsSamplerTest, BuiltByMakeAlgorithmAsCmaes) {
  const SearchSpace space = SphereSpace(3);
  AlgorithmRequest request;
  request.name = "CMAES";
  request.seed = 9;
  request.params = base::Json{{"surrogate", false}, {"sigma0", 0.3}, {"population_size", 12}};
  auto algorithm = MakeAlgorithm(request, space);
  ASSERT_TRUE(algorithm.ok()) << algorithm.status();
  auto* sampler = dynamic_cast<CmaEsSampler*>(algorithm->sampler.get());
  ASSERT_NE(sampler, nullptr);
  EXPECT_EQ(sampler->options().seed, 9u);
  EXPECT_FALSE(sampler->options().surrogate);
  EXPECT_EQ(sampler->options().sigma0, 0.3);
  EXPECT_EQ(sampler->options().population_size, 12);
  EXPECT_TRUE(AskPoint(*sampler, {}).count("x0"));

  request.params = base::Json{{"sigma0", 2}};
  auto bad = MakeAlgorithm(request, space);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("sigma0"), std::string::npos) << bad.status();
  request.params = base::Json{{"sigma", 0.2}};
  bad = MakeAlgorithm(request, space);
  EXPECT_NE(bad.status().message().find("min_kendall_tau"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace kiln::hpo
