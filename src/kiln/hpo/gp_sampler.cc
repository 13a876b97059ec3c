#include "kiln/hpo/gp_sampler.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/hpo/gp_internal.h"

namespace kiln::hpo {

namespace {

using gp_internal::Cholesky;
using gp_internal::Data;
using gp_internal::LogLikelihood;
using gp_internal::PairwiseSquares;

constexpr double kSqrt5 = 2.2360679774997896964;
constexpr double kLog2Pi = 1.8378770664093454836;
constexpr int kDefaultCubeSize = 2000;
constexpr int kMaxCubeSize = 1000000;
// The hyperparameters are fitted on at most this many points: the gradient needs K^-1,
// O(n^3) per step, and the fit takes ~100 steps, so fitting on the whole conditioning set
// (up to max_fit_points) would dominate an ask. Lengthscales settle long before 100 points.
constexpr int kMaxHyperFitPoints = 100;
constexpr int kAdamSteps = 40;
constexpr int kFitRestarts = 2;
constexpr double kNoiselessJitter = 1e-6;
// Bounds of the fitted hyperparameters, in log space; y is standardized and x in [0, 1].
constexpr double kLogLengthMin = -5.3;  // 0.005
constexpr double kLogLengthMax = 2.3;   // 10
constexpr double kLogSignalMin = -3.0;  // 0.05
constexpr double kLogSignalMax = 3.0;   // 20
constexpr double kLogNoiseMin = -13.8;  // 1e-6
constexpr double kLogNoiseMax = -0.7;   // 0.5
constexpr int kRefineStarts = 5;
constexpr int kRefineSteps = 20;

// Hyperparameters in their optimisation coordinates:
// theta = [log l_1 .. log l_D, log signal variance, (log noise variance)].
struct Kernel {
  std::vector<double> inv_l2;  // 1 / l_d^2
  double signal = 1;
  double noise = kNoiselessJitter;

  static Kernel FromTheta(const std::vector<double>& theta, int dim, bool fit_noise) {
    Kernel k;
    k.inv_l2.resize(dim);
    for (int d = 0; d < dim; ++d) k.inv_l2[d] = std::exp(-2 * theta[d]);
    k.signal = std::exp(theta[dim]);
    k.noise = fit_noise ? std::exp(theta[dim + 1]) : kNoiselessJitter;
    return k;
  }

  double Eval(const double* a, const double* b, int dim) const {
    double r2 = 0;
    for (int d = 0; d < dim; ++d) {
      const double diff = a[d] - b[d];
      r2 += diff * diff * inv_l2[d];
    }
    const double r = std::sqrt(r2);
    return signal * (1 + kSqrt5 * r + (5.0 / 3.0) * r2) * std::exp(-kSqrt5 * r);
  }
};

// Adds growing jitter to the diagonal until the Cholesky succeeds: duplicated points
// (a trial repeated, or a liar on top of a finished trial) make K singular in the
// noiseless model. `k` holds K on entry and L on success; returns false if even a jitter
// of 10% of the signal variance fails.
bool FactorWithJitter(std::vector<double>& k, int n, double signal) {
  std::vector<double> original = k;
  double jitter = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    if (attempt > 0) {
      k = original;
      jitter = signal * std::pow(10.0, attempt - 9);  // 1e-8 .. 1e-1 of the signal
      for (int i = 0; i < n; ++i) k[static_cast<size_t>(i) * n + i] += jitter;
    }
    if (Cholesky(k, n)) return true;
  }
  return false;
}

// Solves L x = b in place (L lower, row-major).
void SolveLower(const std::vector<double>& l, int n, double* b) {
  for (int i = 0; i < n; ++i) {
    const double* row = &l[static_cast<size_t>(i) * n];
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= row[k] * b[k];
    b[i] = s / row[i];
  }
}

// Solves L^T x = b in place.
void SolveUpper(const std::vector<double>& l, int n, double* b) {
  for (int i = n - 1; i >= 0; --i) {
    double s = b[i];
    for (int k = i + 1; k < n; ++k) s -= l[static_cast<size_t>(k) * n + i] * b[k];
    b[i] = s / l[static_cast<size_t>(i) * n + i];
  }
}

// K^-1 (full, row-major) from K's lower Cholesky factor `l`: X = L^-1 row by row, then
// K^-1 = X^T X. Both loops are axpys over contiguous rows (they vectorize) and cost n^3/6
// each, a third of solving n right-hand sides.
std::vector<double> InverseFromCholesky(const std::vector<double>& l, int n) {
  std::vector<double> x(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    double* xi = &x[static_cast<size_t>(i) * n];
    const double* li = &l[static_cast<size_t>(i) * n];
    for (int k = 0; k < i; ++k) {
      const double c = li[k];
      const double* xk = &x[static_cast<size_t>(k) * n];
      for (int j = 0; j <= k; ++j) xi[j] -= c * xk[j];
    }
    xi[i] += 1;
    const double inv = 1 / li[i];
    for (int j = 0; j <= i; ++j) xi[j] *= inv;
  }
  std::vector<double> out(static_cast<size_t>(n) * n, 0.0);
  for (int k = 0; k < n; ++k) {
    const double* xk = &x[static_cast<size_t>(k) * n];
    for (int i = 0; i <= k; ++i) {
      const double c = xk[i];
      double* oi = &out[static_cast<size_t>(i) * n];
      for (int j = 0; j <= i; ++j) oi[j] += c * xk[j];
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < i; ++j)
      out[static_cast<size_t>(j) * n + i] = out[static_cast<size_t>(i) * n + j];
  }
  return out;
}

}  // namespace

namespace gp_internal {

// Right-looking: after column j is final it is copied out contiguously, so the trailing
// update is a row-wise axpy, which the compiler vectorizes (the textbook dot-product form
// would not be without -ffast-math).
bool Cholesky(std::vector<double>& a, int n) {
  std::vector<double> col(n);
  for (int j = 0; j < n; ++j) {
    const double diag = a[static_cast<size_t>(j) * n + j];
    if (!(diag > 0) || !std::isfinite(diag)) return false;
    const double l_jj = std::sqrt(diag);
    a[static_cast<size_t>(j) * n + j] = l_jj;
    const double inv = 1 / l_jj;
    for (int i = j + 1; i < n; ++i) {
      a[static_cast<size_t>(i) * n + j] *= inv;
      col[i] = a[static_cast<size_t>(i) * n + j];
    }
    for (int i = j + 1; i < n; ++i) {
      double* row_i = &a[static_cast<size_t>(i) * n];
      const double c = col[i];
      for (int k = j + 1; k <= i; ++k) row_i[k] -= c * col[k];
    }
  }
  return true;
}

std::vector<double> PairwiseSquares(const Data& data) {
  const int n = data.n();
  const int dim = data.dim;
  std::vector<double> sq;
  sq.reserve(static_cast<size_t>(n) * (n - 1) / 2 * dim);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < i; ++j) {
      for (int d = 0; d < dim; ++d) {
        const double diff = data.row(i)[d] - data.row(j)[d];
        sq.push_back(diff * diff);
      }
    }
  }
  return sq;
}

double LogLikelihood(const Data& data, const std::vector<double>& sq,
                     const std::vector<double>& theta, bool fit_noise, std::vector<double>* grad) {
  const int n = data.n();
  const int dim = data.dim;
  const Kernel kernel = Kernel::FromTheta(theta, dim, fit_noise);
  std::vector<double> k(static_cast<size_t>(n) * n);
  // d k / d log l_d = signal * 5/3 * (1 + sqrt5 r) e^{-sqrt5 r} * diff_d^2 / l_d^2: the
  // factor before diff_d^2 / l_d^2 is kept per pair for the gradient.
  std::vector<double> dk_common(grad != nullptr ? sq.size() / std::max(dim, 1) : 0);
  size_t pair = 0;
  for (int i = 0; i < n; ++i) {
    double* row = &k[static_cast<size_t>(i) * n];
    for (int j = 0; j < i; ++j, ++pair) {
      const double* s = &sq[pair * dim];
      double r2 = 0;
      for (int d = 0; d < dim; ++d) r2 += s[d] * kernel.inv_l2[d];
      const double r = std::sqrt(r2);
      const double e = std::exp(-kSqrt5 * r);
      row[j] = kernel.signal * (1 + kSqrt5 * r + (5.0 / 3.0) * r2) * e;
      if (grad != nullptr) dk_common[pair] = kernel.signal * (5.0 / 3.0) * (1 + kSqrt5 * r) * e;
    }
    row[i] = kernel.signal + kernel.noise;
  }
  std::vector<double> kernel_values;
  if (grad != nullptr) kernel_values = k;  // Cholesky overwrites K
  if (!Cholesky(k, n)) return -std::numeric_limits<double>::infinity();
  std::vector<double> alpha = data.y;
  SolveLower(k, n, alpha.data());
  double quad = 0;
  for (double v : alpha) quad += v * v;
  SolveUpper(k, n, alpha.data());
  double log_det = 0;
  for (int i = 0; i < n; ++i) log_det += std::log(k[static_cast<size_t>(i) * n + i]);
  const double value = -0.5 * quad - log_det - 0.5 * n * kLog2Pi;
  if (grad == nullptr) return value;

  // dL/dtheta = 0.5 tr(W dK/dtheta) with W = alpha alpha^T - K^-1; off-diagonal pairs
  // appear twice in the trace, which cancels the 0.5.
  const std::vector<double> k_inv = InverseFromCholesky(k, n);
  grad->assign(theta.size(), 0.0);
  std::vector<double>& g = *grad;
  std::vector<double> g_len(dim, 0.0);
  double trace_noise = 0;
  pair = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < i; ++j, ++pair) {
      const double w = alpha[i] * alpha[j] - k_inv[static_cast<size_t>(i) * n + j];
      const double common = w * dk_common[pair];
      const double* s = &sq[pair * dim];
      for (int d = 0; d < dim; ++d) g_len[d] += common * s[d];
      g[dim] += w * kernel_values[static_cast<size_t>(i) * n + j];
    }
    const double w_ii = alpha[i] * alpha[i] - k_inv[static_cast<size_t>(i) * n + i];
    g[dim] += 0.5 * w_ii * kernel.signal;
    trace_noise += w_ii;
  }
  for (int d = 0; d < dim; ++d) g[d] = g_len[d] * kernel.inv_l2[d];
  if (fit_noise) g[dim + 1] = 0.5 * trace_noise * kernel.noise;
  return value;
}

}  // namespace gp_internal

namespace {

// Maximises the log marginal likelihood by projected Adam from a few starts.
std::vector<double> FitHyperparameters(const Data& data, bool fit_noise, std::mt19937_64& rng) {
  const int dim = data.dim;
  const int size = dim + 1 + (fit_noise ? 1 : 0);
  std::vector<double> lower(size), upper(size);
  for (int d = 0; d < dim; ++d) {
    lower[d] = kLogLengthMin;
    upper[d] = kLogLengthMax;
  }
  lower[dim] = kLogSignalMin;
  upper[dim] = kLogSignalMax;
  if (fit_noise) {
    lower[dim + 1] = kLogNoiseMin;
    upper[dim + 1] = kLogNoiseMax;
  }
  const std::vector<double> sq = PairwiseSquares(data);
  std::vector<double> best_theta(size);
  for (int d = 0; d < dim; ++d) best_theta[d] = std::log(0.3);
  best_theta[dim] = 0;
  if (fit_noise) best_theta[dim + 1] = std::log(1e-2);
  double best_value = LogLikelihood(data, sq, best_theta, fit_noise, nullptr);

  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int restart = 0; restart < kFitRestarts; ++restart) {
    std::vector<double> theta(size);
    if (restart == 0) {
      theta = best_theta;
    } else {
      for (int d = 0; d < dim; ++d) theta[d] = std::log(0.05) + unit(rng) * std::log(30.0);
      theta[dim] = -1 + 2 * unit(rng);
      if (fit_noise) theta[dim + 1] = std::log(1e-4) + unit(rng) * std::log(1e3);
    }
    std::vector<double> m(size, 0.0), v(size, 0.0), grad;
    constexpr double kRate = 0.1, kBeta1 = 0.9, kBeta2 = 0.999;
    double b1 = 1, b2 = 1;
    for (int step = 0; step < kAdamSteps; ++step) {
      const double value = LogLikelihood(data, sq, theta, fit_noise, &grad);
      if (!std::isfinite(value)) break;
      if (value > best_value) {
        best_value = value;
        best_theta = theta;
      }
      b1 *= kBeta1;
      b2 *= kBeta2;
      for (int p = 0; p < size; ++p) {
        const double gp = std::isfinite(grad[p]) ? grad[p] : 0.0;
        m[p] = kBeta1 * m[p] + (1 - kBeta1) * gp;
        v[p] = kBeta2 * v[p] + (1 - kBeta2) * gp * gp;
        const double step_p = kRate * (m[p] / (1 - b1)) / (std::sqrt(v[p] / (1 - b2)) + 1e-8);
        theta[p] = std::clamp(theta[p] + step_p, lower[p], upper[p]);
      }
    }
    const double value = LogLikelihood(data, sq, theta, fit_noise, nullptr);
    if (value > best_value) {
      best_value = value;
      best_theta = theta;
    }
  }
  return best_theta;
}

// A GP conditioned on `data`, ready to predict.
class Posterior {
 public:
  // Returns false when K cannot be factorized even with jitter.
  bool Condition(Data data, Kernel kernel) {
    data_ = std::move(data);
    kernel_ = std::move(kernel);
    const int n = data_.n();
    std::vector<double> k(static_cast<size_t>(n) * n);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j <= i; ++j) {
        k[static_cast<size_t>(i) * n + j] = kernel_.Eval(data_.row(i), data_.row(j), data_.dim);
      }
      k[static_cast<size_t>(i) * n + i] += kernel_.noise;
    }
    if (!FactorWithJitter(k, n, kernel_.signal)) return false;
    alpha_ = data_.y;
    SolveLower(k, n, alpha_.data());
    SolveUpper(k, n, alpha_.data());
    // Store L transposed so that the forward substitution in Predict walks contiguous
    // memory as an axpy, which the compiler vectorizes (a dot-product form would need
    // -ffast-math to vectorize its reduction).
    lt_.assign(static_cast<size_t>(n) * n, 0.0);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j <= i; ++j)
        lt_[static_cast<size_t>(j) * n + i] = k[static_cast<size_t>(i) * n + j];
    }
    return true;
  }

  static constexpr int kBatch = 16;

  // Posterior means and standard deviations at `count` points (rows of `xs`). Candidates
  // go through in blocks of kBatch so that L, which does not fit in L1 at a few hundred
  // points, is streamed once per block rather than once per candidate.
  void Predict(const double* xs, int count, double* mean, double* sd) {
    const int n = data_.n();
    const int dim = data_.dim;
    block_.resize(static_cast<size_t>(n) * kBatch);
    for (int start = 0; start < count; start += kBatch) {
      const int b_count = std::min(kBatch, count - start);
      std::array<double, kBatch> mu{}, explained{}, v{};
      for (int i = 0; i < n; ++i) {
        double* row = &block_[static_cast<size_t>(i) * kBatch];
        for (int b = 0; b < kBatch; ++b) {
          row[b] = b < b_count
                       ? kernel_.Eval(xs + static_cast<size_t>(start + b) * dim, data_.row(i), dim)
                       : 0.0;
          mu[b] += row[b] * alpha_[i];
        }
      }
      for (int j = 0; j < n; ++j) {
        const double* col = &lt_[static_cast<size_t>(j) * n];
        const double inv = 1 / col[j];
        const double* row_j = &block_[static_cast<size_t>(j) * kBatch];
        for (int b = 0; b < kBatch; ++b) {
          v[b] = row_j[b] * inv;
          explained[b] += v[b] * v[b];
        }
        for (int i = j + 1; i < n; ++i) {
          const double c = col[i];
          double* row_i = &block_[static_cast<size_t>(i) * kBatch];
          for (int b = 0; b < kBatch; ++b) row_i[b] -= c * v[b];
        }
      }
      for (int b = 0; b < b_count; ++b) {
        const double var = kernel_.signal - explained[b];
        mean[start + b] = mu[b];
        sd[start + b] = var > 1e-12 ? std::sqrt(var) : 0.0;
      }
    }
  }

 private:
  Data data_;
  Kernel kernel_;
  std::vector<double> alpha_;
  std::vector<double> lt_;
  std::vector<double> block_;
};

// Expected improvement below `best` for a Gaussian with `mean` and `sd`.
double ExpectedImprovement(double mean, double sd, double best) {
  const double improvement = best - mean;
  if (sd < 1e-12) return std::max(improvement, 0.0);
  const double z = improvement / sd;
  const double cdf = 0.5 * std::erfc(-z / std::sqrt(2.0));
  const double pdf = std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI);
  const double ei = improvement * cdf + sd * pdf;
  return std::isfinite(ei) && ei > 0 ? ei : 0.0;
}

// Indices (ascending) of at most `cap` entries: the best (lowest) half of `cap` by value,
// then the most recent (highest index) of the rest. Keeps the region around the incumbent
// sharp and the model current.
std::vector<int> SelectFitSet(const std::vector<double>& values, int cap) {
  const int n = static_cast<int>(values.size());
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  if (n <= cap) return all;
  std::vector<int> by_value = all;
  std::stable_sort(by_value.begin(), by_value.end(),
                   [&](int a, int b) { return values[a] < values[b]; });
  std::vector<char> taken(n, 0);
  int count = 0;
  for (int i = 0; i < cap / 2; ++i) {
    taken[by_value[i]] = 1;
    ++count;
  }
  for (int i = n - 1; i >= 0 && count < cap; --i) {
    if (!taken[i]) {
      taken[i] = 1;
      ++count;
    }
  }
  std::vector<int> out;
  out.reserve(cap);
  for (int i = 0; i < n; ++i) {
    if (taken[i]) out.push_back(i);
  }
  return out;
}

absl::StatusOr<int64_t> ParseIntValue(const base::Json& value, const std::string& name) {
  int64_t out = 0;
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_string() && absl::SimpleAtoi(value.get<std::string>(), &out)) return out;
  return absl::InvalidArgumentError(
      absl::StrCat("algoParams ", name, ": expected an integer, got ", base::DumpJson(value)));
}

}  // namespace

absl::StatusOr<GpOptions> GpOptionsFromWmla(const base::Json& algo_params) {
  GpOptions options;
  if (algo_params.is_null()) return options;
  if (!algo_params.is_array()) {
    return absl::InvalidArgumentError(
        "algoParams: expected a list of {\"name\": ..., \"value\": ...} objects");
  }
  for (size_t i = 0; i < algo_params.size(); ++i) {
    const base::Json& entry = algo_params[i];
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("value")) {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams[", i, "]: expected {\"name\": <string>, \"value\": <string>}"));
    }
    const std::string name = entry["name"].get<std::string>();
    const base::Json& value = entry["value"];
    if (name == "RandomSeed") {
      uint64_t seed = 0;
      if (value.is_number_unsigned()) {
        seed = value.get<uint64_t>();
      } else if (!value.is_string() || !absl::SimpleAtoi(value.get<std::string>(), &seed)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "algoParams RandomSeed: expected a non-negative integer, got ", base::DumpJson(value)));
      }
      options.seed = seed;
    } else if (name == "InitPoints") {
      KILN_ASSIGN_OR_RETURN(int64_t n, ParseIntValue(value, name));
      if (n < 1 || n > 1000000) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams InitPoints: must be in [1, 1000000], got ", n));
      }
      options.init_points = static_cast<int>(n);
    } else if (name == "CubeSize") {
      KILN_ASSIGN_OR_RETURN(int64_t n, ParseIntValue(value, name));
      if (n < 1 || n > kMaxCubeSize) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams CubeSize: must be in [1, ", kMaxCubeSize, "], got ", n));
      }
      options.cube_size = static_cast<int>(n);
    } else if (name == "Noiseless") {
      if (value.is_boolean()) {
        options.noiseless = value.get<bool>();
      } else {
        std::string text = value.is_string() ? value.get<std::string>() : "";
        for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (text == "true") {
          options.noiseless = true;
        } else if (text == "false") {
          options.noiseless = false;
        } else {
          return absl::InvalidArgumentError(absl::StrCat(
              "algoParams Noiseless: expected \"true\" or \"false\", got ", base::DumpJson(value)));
        }
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams: unknown parameter \"", name,
                       "\" for Bayesian; known: RandomSeed, InitPoints, CubeSize, Noiseless"));
    }
  }
  return options;
}

absl::StatusOr<std::unique_ptr<GpSampler>> GpSampler::Create(SearchSpace space, GpOptions options) {
  if (options.init_points < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpOptions.init_points must be >= 0, got ", options.init_points));
  }
  if (options.cube_size < 0 || options.cube_size > kMaxCubeSize) {
    return absl::InvalidArgumentError(absl::StrCat("GpOptions.cube_size must be in [0, ",
                                                   kMaxCubeSize, "], got ", options.cube_size));
  }
  if (options.max_fit_points < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpOptions.max_fit_points must be >= 2, got ", options.max_fit_points));
  }
  return std::unique_ptr<GpSampler>(new GpSampler(std::move(space), options));
}

GpSampler::GpSampler(SearchSpace space, GpOptions options)
    : space_(std::move(space)), options_(options) {
  const auto& params = space_.params();
  param_dim_.assign(params.size(), -1);
  for (size_t p = 0; p < params.size(); ++p) {
    if (params[p].kind == ParamKind::kFixed) continue;
    param_dim_[p] = static_cast<int>(dim_param_.size());
    dim_param_.push_back(static_cast<int>(p));
  }
}

namespace {

// Encodes and decodes points of one space in the model's unit cube.
class UnitCube {
 public:
  UnitCube(const SearchSpace& space, const std::vector<int>& param_dim, int dim)
      : space_(space), param_dim_(param_dim), dim_(dim) {}

  void Encode(const Point& point, double* u) const {
    const auto& params = space_.params();
    for (size_t p = 0; p < params.size(); ++p) {
      const int d = param_dim_[p];
      if (d < 0) continue;
      auto it = point.find(params[p].name);
      double value = 0.5;
      if (it != point.end()) value = space_.ToUnit(params[p], it->second);
      u[d] = std::isfinite(value) ? std::clamp(value, 0.0, 1.0) : 0.5;
    }
  }

  // Snaps `u` in place to what the space can represent (grids, activity) and returns the
  // point it stands for.
  Point Canonicalize(double* u) const {
    Point point;
    const auto& params = space_.params();
    for (size_t p = 0; p < params.size(); ++p) {
      const ParamSpec& param = params[p];
      const int d = param_dim_[p];
      if (!space_.IsActive(param, point)) {
        if (d >= 0) u[d] = 0.5;
        continue;
      }
      if (d < 0) {
        point[param.name] = 0;
        continue;
      }
      const double unit = std::isfinite(u[d]) ? std::clamp(u[d], 0.0, 1.0) : 0.5;
      const double value = space_.FromUnit(param, unit);
      point[param.name] = value;
      const double back = space_.ToUnit(param, value);
      u[d] = std::isfinite(back) ? std::clamp(back, 0.0, 1.0) : unit;
    }
    return point;
  }

  int dim() const { return dim_; }

 private:
  const SearchSpace& space_;
  const std::vector<int>& param_dim_;
  int dim_;
};

}  // namespace

absl::StatusOr<std::optional<Suggestion>> GpSampler::Ask(const std::vector<TrialRecord>& history) {
  std::seed_seq seq{static_cast<uint32_t>(options_.seed),
                    static_cast<uint32_t>(options_.seed >> 32),
                    static_cast<uint32_t>(history.size()), 0x6750u};
  std::mt19937_64 rng(seq);

  std::vector<const TrialRecord*> completed;
  std::vector<const TrialRecord*> running;
  for (const TrialRecord& trial : history) {
    if (trial.state == TrialState::kComplete && trial.value.has_value() &&
        std::isfinite(*trial.value)) {
      completed.push_back(&trial);
    } else if (trial.state == TrialState::kRunning) {
      running.push_back(&trial);
    }
  }
  const int dim = static_cast<int>(dim_param_.size());
  if (static_cast<int64_t>(history.size()) < options_.init_points || completed.empty() ||
      dim == 0) {
    return Suggestion{space_.SampleUniform(rng), 0, std::nullopt};
  }

  const UnitCube cube(space_, param_dim_, dim);
  std::vector<double> values(completed.size());
  for (size_t i = 0; i < completed.size(); ++i) values[i] = *completed[i]->value;
  const std::vector<int> fit = SelectFitSet(values, options_.max_fit_points);

  // Standardize over the conditioning set so kernel bounds mean the same for any objective.
  // Values are pre-scaled by their largest magnitude so that objectives near the double
  // range (1e200) do not overflow the variance.
  double scale = 0;
  for (int i : fit) scale = std::max(scale, std::abs(values[i]));
  if (!(scale > 0) || !std::isfinite(scale)) scale = 1;
  double mean = 0;
  for (int i : fit) mean += values[i] / scale;
  mean /= fit.size();
  double var = 0;
  for (int i : fit) var += (values[i] / scale - mean) * (values[i] / scale - mean);
  double sd = std::sqrt(var / fit.size());
  if (!(sd > 1e-12) || !std::isfinite(sd)) sd = 1;

  Data data;
  data.dim = dim;
  data.x.resize(fit.size() * dim);
  data.y.resize(fit.size());
  double best = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < fit.size(); ++i) {
    cube.Encode(completed[fit[i]]->params, &data.x[i * dim]);
    data.y[i] = (values[fit[i]] / scale - mean) / sd;
    best = std::min(best, data.y[i]);
  }

  // Hyperparameters from a smaller subset of the conditioning set (see kMaxHyperFitPoints).
  Data hyper_data;
  hyper_data.dim = dim;
  const std::vector<int> hyper_idx = SelectFitSet(data.y, kMaxHyperFitPoints);
  for (int i : hyper_idx) {
    hyper_data.x.insert(hyper_data.x.end(), data.x.begin() + static_cast<size_t>(i) * dim,
                        data.x.begin() + static_cast<size_t>(i + 1) * dim);
    hyper_data.y.push_back(data.y[i]);
  }
  const bool fit_noise = !options_.noiseless;
  const Kernel kernel =
      Kernel::FromTheta(FitHyperparameters(hyper_data, fit_noise, rng), dim, fit_noise);

  // Constant liar: a running trial is imputed with the best value seen (CL-min). Its
  // expected improvement then drops to ~0 where it runs, so concurrent asks move away,
  // while the model around it is not made pessimistic as CL-max would.
  if (options_.constant_liar) {
    // The most recent max_fit_points running trials at most: more is a stale history
    // (trials a crashed driver never closed), and would undo the bound on an ask's cost.
    const size_t first = running.size() > static_cast<size_t>(options_.max_fit_points)
                             ? running.size() - options_.max_fit_points
                             : 0;
    for (size_t r = first; r < running.size(); ++r) {
      const TrialRecord* trial = running[r];
      data.x.resize(data.x.size() + dim);
      cube.Encode(trial->params, &data.x[data.x.size() - dim]);
      data.y.push_back(best);
    }
  }
  Posterior posterior;
  if (!posterior.Condition(std::move(data), kernel)) {
    return Suggestion{space_.SampleUniform(rng), 0, std::nullopt};
  }

  // Candidates: mostly uniform in the cube, some perturbations of the best finished trials
  // (EI's optimum is often close to the incumbent, where uniform candidates are sparse).
  const int cube_size = options_.cube_size > 0 ? options_.cube_size : kDefaultCubeSize;
  std::vector<int> by_value(fit.size());
  std::iota(by_value.begin(), by_value.end(), 0);
  std::stable_sort(by_value.begin(), by_value.end(),
                   [&](int a, int b) { return values[fit[a]] < values[fit[b]]; });
  const int n_elite = std::min<int>(5, static_cast<int>(by_value.size()));
  std::vector<std::vector<double>> elite(n_elite, std::vector<double>(dim));
  for (int e = 0; e < n_elite; ++e)
    cube.Encode(completed[fit[by_value[e]]]->params, elite[e].data());
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);

  // Score every candidate in one batched prediction.
  std::vector<double> cand(static_cast<size_t>(cube_size) * dim);
  for (int c = 0; c < cube_size; ++c) {
    double* u = &cand[static_cast<size_t>(c) * dim];
    if (c % 5 == 4) {
      const std::vector<double>& base = elite[(c / 5) % n_elite];
      const double scale = (c / 10) % 2 == 0 ? 0.05 : 0.2;
      for (int d = 0; d < dim; ++d) u[d] = base[d] + scale * normal(rng);
    } else {
      for (int d = 0; d < dim; ++d) u[d] = unit(rng);
    }
    cube.Canonicalize(u);
  }
  std::vector<double> mu(cube_size), sigma(cube_size), ei(cube_size);
  posterior.Predict(cand.data(), cube_size, mu.data(), sigma.data());
  for (int c = 0; c < cube_size; ++c) ei[c] = ExpectedImprovement(mu[c], sigma[c], best);
  std::vector<int> order(cube_size);
  std::iota(order.begin(), order.end(), 0);
  const int n_starts = std::min(kRefineStarts, cube_size);
  std::partial_sort(order.begin(), order.begin() + n_starts, order.end(),
                    [&](int a, int b) { return ei[a] > ei[b] || (ei[a] == ei[b] && a < b); });

  // Local refinement: a random walk with shrinking steps from each of the best candidates,
  // accepting only improvements; the walks advance together so each step is one batch.
  std::vector<double> here(static_cast<size_t>(n_starts) * dim);
  std::vector<double> here_ei(n_starts), step(n_starts, 0.05);
  for (int s_i = 0; s_i < n_starts; ++s_i) {
    std::copy_n(&cand[static_cast<size_t>(order[s_i]) * dim], dim,
                &here[static_cast<size_t>(s_i) * dim]);
    here_ei[s_i] = ei[order[s_i]];
  }
  std::vector<double> trial(here.size()), trial_mu(n_starts), trial_sd(n_starts);
  for (int it = 0; it < kRefineSteps; ++it) {
    for (int s_i = 0; s_i < n_starts; ++s_i) {
      for (int d = 0; d < dim; ++d) {
        const size_t at = static_cast<size_t>(s_i) * dim + d;
        trial[at] = here[at] + step[s_i] * normal(rng);
      }
      cube.Canonicalize(&trial[static_cast<size_t>(s_i) * dim]);
    }
    posterior.Predict(trial.data(), n_starts, trial_mu.data(), trial_sd.data());
    for (int s_i = 0; s_i < n_starts; ++s_i) {
      const double e = ExpectedImprovement(trial_mu[s_i], trial_sd[s_i], best);
      if (e > here_ei[s_i]) {
        here_ei[s_i] = e;
        std::copy_n(&trial[static_cast<size_t>(s_i) * dim], dim,
                    &here[static_cast<size_t>(s_i) * dim]);
      } else {
        step[s_i] *= 0.7;
      }
    }
  }
  int winner = 0;
  for (int s_i = 1; s_i < n_starts; ++s_i) {
    if (here_ei[s_i] > here_ei[winner]) winner = s_i;
  }
  std::vector<double> chosen(&here[static_cast<size_t>(winner) * dim],
                             &here[static_cast<size_t>(winner + 1) * dim]);
  // When EI underflows everywhere (a model that believes nothing beats the incumbent),
  // explore where the model knows least instead of picking an arbitrary tie.
  if (!(here_ei[winner] > 0)) {
    const int c = static_cast<int>(std::max_element(sigma.begin(), sigma.end()) - sigma.begin());
    chosen.assign(&cand[static_cast<size_t>(c) * dim], &cand[static_cast<size_t>(c + 1) * dim]);
  }
  return Suggestion{cube.Canonicalize(chosen.data()), 0, std::nullopt};
}

}  // namespace kiln::hpo
