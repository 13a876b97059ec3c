// functions.h
//
// The synthetic objectives of the HPO quality benchmark (issue #3), with the domains and
// optimum values used by `hpo_bench` and mirrored exactly in `optuna_bench.py`: Branin
// (2-D), Hartmann6, Rosenbrock-10D, Levy-10D and Ackley-5D. All are minimized; simple
// regret is f(best) - optimum.
#pragma once

#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

namespace kiln::bench {

struct TestFunction {
  std::string name;
  std::vector<double> low;  // box domain, per dimension
  std::vector<double> high;
  double optimum;  // global minimum value
  std::function<double(const std::vector<double>&)> f;
};

inline double Branin(const std::vector<double>& x) {
  constexpr double kPi = std::numbers::pi;
  const double a = 1, b = 5.1 / (4 * kPi * kPi), c = 5 / kPi, r = 6, s = 10, t = 1 / (8 * kPi);
  const double u = x[1] - b * x[0] * x[0] + c * x[0] - r;
  return a * u * u + s * (1 - t) * std::cos(x[0]) + s;
}

inline double Hartmann6(const std::vector<double>& x) {
  static constexpr double kAlpha[4] = {1.0, 1.2, 3.0, 3.2};
  static constexpr double kA[4][6] = {{10, 3, 17, 3.5, 1.7, 8},
                                      {0.05, 10, 17, 0.1, 8, 14},
                                      {3, 3.5, 1.7, 10, 17, 8},
                                      {17, 8, 0.05, 10, 0.1, 14}};
  static constexpr double kP[4][6] = {{0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886},
                                      {0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991},
                                      {0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650},
                                      {0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381}};
  double sum = 0;
  for (int i = 0; i < 4; ++i) {
    double inner = 0;
    for (int j = 0; j < 6; ++j) inner += kA[i][j] * (x[j] - kP[i][j]) * (x[j] - kP[i][j]);
    sum += kAlpha[i] * std::exp(-inner);
  }
  return -sum;
}

inline double Rosenbrock(const std::vector<double>& x) {
  double s = 0;
  for (size_t i = 0; i + 1 < x.size(); ++i) {
    s += 100 * std::pow(x[i + 1] - x[i] * x[i], 2) + std::pow(1 - x[i], 2);
  }
  return s;
}

inline double Levy(const std::vector<double>& x) {
  constexpr double kPi = std::numbers::pi;
  const size_t d = x.size();
  auto w = [&](size_t i) { return 1 + (x[i] - 1) / 4; };
  double s = std::pow(std::sin(kPi * w(0)), 2);
  for (size_t i = 0; i + 1 < d; ++i) {
    s += std::pow(w(i) - 1, 2) * (1 + 10 * std::pow(std::sin(kPi * w(i) + 1), 2));
  }
  s += std::pow(w(d - 1) - 1, 2) * (1 + std::pow(std::sin(2 * kPi * w(d - 1)), 2));
  return s;
}

inline double Ackley(const std::vector<double>& x) {
  constexpr double kPi = std::numbers::pi;
  const double d = static_cast<double>(x.size());
  double sq = 0, cs = 0;
  for (double v : x) {
    sq += v * v;
    cs += std::cos(2 * kPi * v);
  }
  return -20 * std::exp(-0.2 * std::sqrt(sq / d)) - std::exp(cs / d) + 20 + std::numbers::e;
}

// The benchmark set. Domains follow the usual definitions (Surjanovic & Bingham's
// library); Rosenbrock uses [-5, 10]^d.
inline std::vector<TestFunction> AllFunctions() {
  return {
      {"branin", {-5, 0}, {10, 15}, 0.397887357729738, Branin},
      {"hartmann6", std::vector<double>(6, 0.0), std::vector<double>(6, 1.0), -3.32236801141551,
       Hartmann6},
      {"rosenbrock10", std::vector<double>(10, -5.0), std::vector<double>(10, 10.0), 0.0,
       Rosenbrock},
      {"levy10", std::vector<double>(10, -10.0), std::vector<double>(10, 10.0), 0.0, Levy},
      {"ackley5", std::vector<double>(5, -32.768), std::vector<double>(5, 32.768), 0.0, Ackley},
  };
}

}  // namespace kiln::bench
