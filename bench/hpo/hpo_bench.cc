// hpo_bench.cc
//
// Quality and overhead of Kiln's samplers on the synthetic functions of functions.h, as
// JSON lines that bench/hpo/compare.py reads next to optuna_bench.py's. See README.md.
//
//   bench_hpo quality  [--sampler tpe] [--function all] [--seeds 20] [--first-seed 0]
//                      [--trials 200] [--parallel 1]
//   bench_hpo overhead [--sampler tpe] [--function branin] [--sizes 100,1000,5000] [--reps 20]
//
// Samplers: random, tpe, tpe-mv, gp, cmaes and lq-cmaes (the last three when their headers
// exist).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/hpo/functions.h"
#include "kiln/hpo/sampler.h"
#include "kiln/hpo/search_space.h"
#include "kiln/hpo/tpe_sampler.h"
#if __has_include("kiln/hpo/gp_sampler.h")
#include "kiln/hpo/gp_sampler.h"
#define KILN_BENCH_HAS_GP 1
#endif
#if __has_include("kiln/hpo/cmaes_sampler.h")
#include "kiln/hpo/cmaes_sampler.h"
#define KILN_BENCH_HAS_CMAES 1
#endif
#if __has_include("kiln/hpo/random_sampler.h")
#include "kiln/hpo/random_sampler.h"
#define KILN_BENCH_HAS_RANDOM 1
#endif

namespace kiln::bench {
namespace {

using hpo::Point;
using hpo::Sampler;
using hpo::SearchSpace;
using hpo::TrialRecord;

// Regret floor: a sampler that hits the optimum to machine precision scores -12.
constexpr double kRegretFloor = 1e-12;

std::string Dim(size_t i) { return "x" + std::to_string(i); }

SearchSpace SpaceOf(const TestFunction& fn) {
  std::vector<hpo::ParamSpec> params;
  for (size_t i = 0; i < fn.low.size(); ++i) {
    hpo::ParamSpec p;
    p.name = Dim(i);
    p.kind = hpo::ParamKind::kDouble;
    p.low = fn.low[i];
    p.high = fn.high[i];
    params.push_back(p);
  }
  auto space = SearchSpace::Create(std::move(params));
  if (!space.ok()) {
    std::fprintf(stderr, "bad space for %s: %s\n", fn.name.c_str(),
                 space.status().ToString().c_str());
    std::exit(2);
  }
  return *std::move(space);
}

double Evaluate(const TestFunction& fn, const Point& p) {
  std::vector<double> x(fn.low.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = p.at(Dim(i));
  return fn.f(x);
}

std::unique_ptr<Sampler> MakeSampler(const std::string& name, const SearchSpace& space,
                                     uint64_t seed) {
  if (name == "tpe" || name == "tpe-mv") {
    hpo::TpeOptions options;
    options.seed = seed;
    options.multivariate = name == "tpe-mv";
    auto s = hpo::TpeSampler::Create(space, options);
    if (s.ok()) return *std::move(s);
  }
  if (name == "random") {
#ifdef KILN_BENCH_HAS_RANDOM
    return std::make_unique<hpo::RandomSampler>(space, seed);
#else
    hpo::TpeOptions options;  // TPE that never leaves its random startup phase
    options.seed = seed;
    options.n_startup = std::numeric_limits<int>::max();
    auto s = hpo::TpeSampler::Create(space, options);
    if (s.ok()) return *std::move(s);
#endif
  }
#ifdef KILN_BENCH_HAS_GP
  if (name == "gp") {
    hpo::GpOptions options;
    options.seed = seed;
    auto s = hpo::GpSampler::Create(space, options);
    if (s.ok()) return *std::move(s);
  }
#endif
#ifdef KILN_BENCH_HAS_CMAES
  // cmaes: plain CMA-ES with IPOP restarts; lq-cmaes: the same with the lq surrogate.
  if (name == "cmaes" || name == "lq-cmaes") {
    hpo::CmaEsOptions options;
    options.seed = seed;
    options.surrogate = name == "lq-cmaes";
    auto s = hpo::CmaEsSampler::Create(space, options);
    if (s.ok()) return *std::move(s);
  }
#endif
  std::fprintf(stderr, "unknown sampler '%s'\n", name.c_str());
  std::exit(2);
}

Point Ask(Sampler& sampler, const std::vector<TrialRecord>& history) {
  auto s = sampler.Ask(history);
  if (!s.ok() || !s->has_value()) {
    std::fprintf(stderr, "ask failed: %s\n",
                 s.ok() ? "no suggestion" : s.status().ToString().c_str());
    std::exit(1);
  }
  return (*s)->params;
}

void Tell(Sampler& sampler, std::vector<TrialRecord>& history, Point p, double value) {
  TrialRecord t;
  t.number = static_cast<int64_t>(history.size());
  t.params = std::move(p);
  t.state = hpo::TrialState::kComplete;
  t.value = value;
  sampler.Tell(t);
  history.push_back(std::move(t));
}

// With parallel > 1, `parallel` trials are kept running: the sampler is asked until that
// many are in flight, then the oldest finishes (the history holds the running ones, as the
// experiment driver's does). Regret counts finished trials. The label gets "@p<parallel>".
void Quality(const std::string& sampler_name, const TestFunction& fn, int first_seed, int seeds,
             int trials, int parallel) {
  const SearchSpace space = SpaceOf(fn);
  const std::string label =
      parallel > 1 ? sampler_name + "@p" + std::to_string(parallel) : sampler_name;
  for (int seed = first_seed; seed < first_seed + seeds; ++seed) {
    auto sampler = MakeSampler(sampler_name, space, static_cast<uint64_t>(seed));
    std::vector<TrialRecord> history;
    size_t oldest_running = 0;
    double best = std::numeric_limits<double>::infinity();
    for (int t = 1; t <= trials; ++t) {
      while (static_cast<int>(history.size()) < std::min(trials, t - 1 + parallel)) {
        TrialRecord running;
        running.number = static_cast<int64_t>(history.size());
        running.params = Ask(*sampler, history);
        history.push_back(std::move(running));
      }
      TrialRecord& done = history[oldest_running++];
      const double v = Evaluate(fn, done.params);
      done.state = hpo::TrialState::kComplete;
      done.value = v;
      sampler->Tell(done);
      best = std::min(best, v);
      if (t == 50 || t == 100 || t == 200 || t == trials) {
        std::printf(
            "{\"kind\":\"quality\",\"impl\":\"kiln\",\"sampler\":\"%s\",\"function\":\"%s\","
            "\"seed\":%d,\"trial\":%d,\"best_regret_log10\":%.6f}\n",
            label.c_str(), fn.name.c_str(), seed, t,
            std::log10(std::max(best - fn.optimum, kRegretFloor)));
      }
    }
    std::fflush(stdout);
  }
}

// Time per ask+tell with `n` finished trials in the history. The history is filled with
// uniform random points (the cost of TPE and GP does not depend on where the points are),
// so 5,000 trials do not take 5,000 modelled asks to set up; optuna_bench.py does the same.
void Overhead(const std::string& sampler_name, const TestFunction& fn, int n, int reps) {
  const SearchSpace space = SpaceOf(fn);
  auto sampler = MakeSampler(sampler_name, space, 0);
  std::mt19937_64 rng(12345);
  std::vector<TrialRecord> history;
  history.reserve(n + reps);
  for (int i = 0; i < n; ++i) {
    Point p = space.SampleUniform(rng);
    const double v = Evaluate(fn, p);
    Tell(*sampler, history, std::move(p), v);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  for (int r = 0; r < reps; ++r) {
    Point p = Ask(*sampler, history);
    const double v = Evaluate(fn, p);
    Tell(*sampler, history, std::move(p), v);
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // CPU time as well: on a shared machine it is the steadier of the two.
  const double cpu_ms = 1000.0 * static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  std::printf(
      "{\"kind\":\"overhead\",\"impl\":\"kiln\",\"sampler\":\"%s\",\"function\":\"%s\","
      "\"n_trials\":%d,\"reps\":%d,\"ms_per_ask_tell\":%.5f,\"cpu_ms_per_ask_tell\":%.5f}\n",
      sampler_name.c_str(), fn.name.c_str(), n, reps, ms / reps, cpu_ms / reps);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: bench_hpo quality|overhead [--sampler S] [--function F|all] "
                 "[--seeds N] [--first-seed N] [--trials N] [--parallel N] [--sizes 100,1000,5000] "
                 "[--reps N]\n");
    return 2;
  }
  const std::string mode = argv[1];
  std::string sampler = "tpe", function = mode == "quality" ? "all" : "branin";
  std::string sizes = "100,1000,5000";
  int seeds = 20, first_seed = 0, trials = 200, reps = 20, parallel = 1;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    bool ok = true;
    if (flag == "--sampler") {
      sampler = value;
    } else if (flag == "--function") {
      function = value;
    } else if (flag == "--sizes") {
      sizes = value;
    } else if (flag == "--seeds") {
      ok = absl::SimpleAtoi(value, &seeds);
    } else if (flag == "--first-seed") {
      ok = absl::SimpleAtoi(value, &first_seed);
    } else if (flag == "--parallel") {
      ok = absl::SimpleAtoi(value, &parallel) && parallel >= 1;
    } else if (flag == "--trials") {
      ok = absl::SimpleAtoi(value, &trials);
    } else if (flag == "--reps") {
      ok = absl::SimpleAtoi(value, &reps);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad flag %s %s\n", flag.c_str(), value.c_str());
      return 2;
    }
  }
  bool any = false;
  for (const TestFunction& fn : AllFunctions()) {
    if (function != "all" && function != fn.name) continue;
    any = true;
    if (mode == "quality") {
      Quality(sampler, fn, first_seed, seeds, trials, parallel);
    } else if (mode == "overhead") {
      for (const auto& part : absl::StrSplit(sizes, ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(part, &n)) {
          std::fprintf(stderr, "bad --sizes %s\n", sizes.c_str());
          return 2;
        }
        Overhead(sampler, fn, n, reps);
      }
    } else {
      std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
      return 2;
    }
  }
  if (!any) {
    std::fprintf(stderr, "unknown function %s\n", function.c_str());
    return 2;
  }
  return 0;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) { return kiln::bench::Main(argc, argv); }
