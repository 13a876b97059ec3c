// cmaes_sampler.cc
//
// CMA-ES with IPOP restarts and an optional lq surrogate, rebuilt from the trial history on
// every ask (see cmaes_sampler.h). Equations and constants follow Hansen's tutorial
// (arXiv:1604.00772, appendix A, with negative weights); the surrogate and its Kendall-tau
// acceptance follow the description of lq-CMA-ES (Hansen 2019).
#include "kiln/hpo/cmaes_sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln::hpo {

namespace {

// Redraws of a candidate that falls outside the unit cube before it is clipped.
constexpr int kMaxResample = 100;
// Convergence tolerances of a run (unit-cube scale), after which IPOP restarts.
constexpr double kTolX = 1e-11;
constexpr double kTolFun = 1e-12;
constexpr double kMaxCondition = 1e14;
// Full quadratic models only up to this dimension (df grows as n^2 / 2); above it the
// surrogate stays diagonal.
constexpr int kMaxFullQuadraticDim = 20;
// Populations stop doubling here.
constexpr int kMaxRestartDoublings = 9;

uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64 finalizer over h ^ v: a cheap, well-spread hash step.
  uint64_t z = h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t HashTrial(uint64_t h, const TrialRecord& t) {
  h = Mix(h, static_cast<uint64_t>(t.number));
  h = Mix(h, static_cast<uint64_t>(t.state));
  h = Mix(h, t.value.has_value() ? std::bit_cast<uint64_t>(*t.value) : 0x7e57ULL);
  for (const auto& [name, value] : t.params) {
    h = Mix(h, std::hash<std::string>{}(name));
    h = Mix(h, std::bit_cast<uint64_t>(value));
  }
  return h;
}

std::mt19937_64 MakeRng(uint64_t seed, uint64_t a, uint64_t b, uint32_t salt) {
  std::seed_seq seq{static_cast<uint32_t>(seed),
                    static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(a),
                    static_cast<uint32_t>(a >> 32),
                    static_cast<uint32_t>(b),
                    static_cast<uint32_t>(b >> 32),
                    salt};
  return std::mt19937_64(seq);
}

bool Finished(const TrialRecord& t) { return t.state != TrialState::kRunning; }

std::optional<double> UsableValue(const TrialRecord& t) {
  if (t.state == TrialState::kComplete && t.value.has_value() && std::isfinite(*t.value)) {
    return *t.value;
  }
  return std::nullopt;
}

// Eigen-decomposition of the symmetric n x n matrix `a` (row-major) by cyclic Jacobi
// rotations: a = V diag(w) V^T with the eigenvectors in the columns of `v`. n is the
// number of hyperparameters, so O(n^3) sweeps are cheap.
void SymmetricEigen(std::vector<double> a, int n, std::vector<double>& w, std::vector<double>& v) {
  v.assign(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[i * n + i] = 1;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (int i = 0; i < n; ++i) {
      diag += a[i * n + i] * a[i * n + i];
      for (int j = i + 1; j < n; ++j) off += a[i * n + j] * a[i * n + j];
    }
    if (off <= 1e-30 * diag || off == 0) break;
    for (int p = 0; p < n; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // rotate columns p and q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // and rows p and q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  w.resize(n);
  for (int i = 0; i < n; ++i) w[i] = a[i * n + i];
}

// Solves the symmetric positive definite system a x = b (a is m x m, overwritten) by
// Cholesky. False when a is not numerically positive definite.
bool CholeskySolve(std::vector<double>& a, int m, std::vector<double>& b) {
  for (int j = 0; j < m; ++j) {
    double d = a[j * m + j];
    for (int k = 0; k < j; ++k) d -= a[j * m + k] * a[j * m + k];
    if (!(d > 0)) return false;
    d = std::sqrt(d);
    a[j * m + j] = d;
    for (int i = j + 1; i < m; ++i) {
      double s = a[i * m + j];
      for (int k = 0; k < j; ++k) s -= a[i * m + k] * a[j * m + k];
      a[i * m + j] = s / d;
    }
  }
  for (int i = 0; i < m; ++i) {
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= a[i * m + k] * b[k];
    b[i] = s / a[i * m + i];
  }
  for (int i = m - 1; i >= 0; --i) {
    double s = b[i];
    for (int k = i + 1; k < m; ++k) s -= a[k * m + i] * b[k];
    b[i] = s / a[i * m + i];
  }
  return true;
}

double KendallTau(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t k = a.size();
  if (k < 2) return -1;
  double concordant = 0, discordant = 0;
  for (size_t i = 0; i < k; ++i) {
    for (size_t j = i + 1; j < k; ++j) {
      const double s = (a[i] - a[j]) * (b[i] - b[j]);
      if (s > 0) concordant += 1;
      if (s < 0) discordant += 1;
    }
  }
  return (concordant - discordant) / (0.5 * static_cast<double>(k) * static_cast<double>(k - 1));
}

}  // namespace

// The strategy's state at a generation boundary, plus the history prefix it consumed.
struct CmaEsSampler::Replay {
  size_t cursor = 0;  // history trials consumed by closed generations
  uint64_t prefix_hash = 0x4b494c4eULL;

  int n = 0;
  int restart = 0;
  int64_t generation = 0;         // in this run
  int64_t total_generations = 0;  // over all runs: keys the candidates' random stream

  // Strategy parameters of the run (tutorial, table 1).
  int lambda = 0, mu = 0;
  std::vector<double> weights;  // lambda entries, positive then negative
  double mueff = 0, cc = 0, cs = 0, c1 = 0, cmu = 0, damps = 0, chi_n = 0;

  // Distribution.
  std::vector<double> mean, ps, pc;
  std::vector<double> cov, basis, scales;  // C = B diag(scales^2) B^T, row-major
  double sigma = 0;
  std::vector<double> gen_best;  // best true value of each generation of this run

  // Every evaluated trial (unit cube, value), in trial order: the surrogate's data.
  std::vector<std::vector<double>> archive_x;
  std::vector<double> archive_f;
};

namespace {

using Replay = CmaEsSampler::Replay;

void StartRun(Replay& s, int lambda, std::vector<double> mean, double sigma0) {
  const int n = s.n;
  s.lambda = lambda;
  s.mu = lambda / 2;
  s.generation = 0;
  s.gen_best.clear();
  std::vector<double> raw(lambda);
  for (int i = 0; i < lambda; ++i) {
    raw[i] = std::log((lambda + 1) / 2.0) - std::log(i + 1.0);
  }
  double pos_sum = 0, pos_sq = 0, neg_sum = 0, neg_sq = 0;
  for (int i = 0; i < lambda; ++i) {
    if (raw[i] > 0) {
      pos_sum += raw[i];
      pos_sq += raw[i] * raw[i];
    } else {
      neg_sum += -raw[i];
      neg_sq += raw[i] * raw[i];
    }
  }
  const double dn = n;
  s.mueff = pos_sum * pos_sum / pos_sq;
  const double mueff_neg = neg_sq > 0 ? neg_sum * neg_sum / neg_sq : 0;
  s.cc = (4 + s.mueff / dn) / (dn + 4 + 2 * s.mueff / dn);
  s.cs = (s.mueff + 2) / (dn + s.mueff + 5);
  s.c1 = 2 / ((dn + 1.3) * (dn + 1.3) + s.mueff);
  s.cmu = std::min(
      1 - s.c1, 2 * (0.25 + s.mueff + 1 / s.mueff - 2) / ((dn + 2) * (dn + 2) + 2 * s.mueff / 2));
  s.damps = 1 + 2 * std::max(0.0, std::sqrt((s.mueff - 1) / (dn + 1)) - 1) + s.cs;
  s.chi_n = std::sqrt(dn) * (1 - 1 / (4 * dn) + 1 / (21 * dn * dn));
  // Negative weights scaled as in the tutorial's (53): bounded so C stays positive definite.
  const double alpha_mu = 1 + s.c1 / s.cmu;
  const double alpha_mueff = 1 + 2 * mueff_neg / (s.mueff + 2);
  const double alpha_posdef = (1 - s.c1 - s.cmu) / (dn * s.cmu);
  const double neg_scale = std::min({alpha_mu, alpha_mueff, alpha_posdef});
  s.weights.resize(lambda);
  for (int i = 0; i < lambda; ++i) {
    s.weights[i] = raw[i] > 0 ? raw[i] / pos_sum : neg_scale * raw[i] / neg_sum;
  }
  s.mean = std::move(mean);
  s.ps.assign(n, 0);
  s.pc.assign(n, 0);
  s.cov.assign(static_cast<size_t>(n) * n, 0);
  s.basis.assign(static_cast<size_t>(n) * n, 0);
  for (int i = 0; i < n; ++i) {
    s.cov[i * n + i] = 1;
    s.basis[i * n + i] = 1;
  }
  s.scales.assign(n, 1);
  s.sigma = sigma0;
}

// y -> C^{-1/2} y = B diag(1/scales) B^T y.
std::vector<double> InvSqrtC(const Replay& s, const std::vector<double>& y) {
  const int n = s.n;
  std::vector<double> t(n, 0), out(n, 0);
  for (int j = 0; j < n; ++j) {
    double v = 0;
    for (int i = 0; i < n; ++i) v += s.basis[i * n + j] * y[i];
    t[j] = v / s.scales[j];
  }
  for (int i = 0; i < n; ++i) {
    double v = 0;
    for (int j = 0; j < n; ++j) v += s.basis[i * n + j] * t[j];
    out[i] = v;
  }
  return out;
}

double Norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

// One draw from N(mean, sigma^2 C), redrawn while outside the unit cube, then clipped.
std::vector<double> SampleCandidate(const Replay& s, std::mt19937_64& rng) {
  const int n = s.n;
  std::normal_distribution<double> normal;
  std::vector<double> z(n), x(n);
  for (int attempt = 0; attempt < kMaxResample; ++attempt) {
    for (int i = 0; i < n; ++i) z[i] = s.scales[i] * normal(rng);
    bool inside = true;
    for (int i = 0; i < n; ++i) {
      double y = 0;
      for (int j = 0; j < n; ++j) y += s.basis[i * n + j] * z[j];
      x[i] = s.mean[i] + s.sigma * y;
      inside = inside && x[i] >= 0 && x[i] <= 1;
    }
    if (inside) return x;
  }
  for (double& v : x) v = std::clamp(v, 0.0, 1.0);
  return x;
}

// A weighted least-squares model f ~ beta . features(z), z = the whitened coordinates of
// the current distribution (so a diagonal model there is aligned with C's axes).
class Surrogate {
 public:
  // Fits the model to the most recent trials of the archive. False when there are too
  // few trials for even a linear model or the normal equations are singular.
  bool Fit(const Replay& s, bool allow) {
    if (!allow) return false;
    const int n = s.n;
    const int df_linear = n + 1, df_diag = 2 * n + 1, df_full = (n + 1) * (n + 2) / 2;
    // The most recent trials, twice as many as the richest model has coefficients: enough
    // for a stable fit, recent enough to describe where the population is now.
    const int df_max = n <= kMaxFullQuadraticDim ? df_full : df_diag;
    const size_t window = static_cast<size_t>(std::max(20, 2 * df_max));
    const size_t count = std::min(s.archive_f.size(), window);
    // At least 1.2 data points per coefficient; the richest model that has them.
    auto enough = [&](int df) { return static_cast<double>(count) >= 1.2 * df + 1; };
    if (n <= kMaxFullQuadraticDim && enough(df_full)) {
      kind_ = kFull;
    } else if (enough(df_diag)) {
      kind_ = kDiag;
    } else if (enough(df_linear)) {
      kind_ = kLinear;
    } else {
      return false;
    }
    s_ = &s;
    df_ = kind_ == kFull ? df_full : kind_ == kDiag ? df_diag : df_linear;
    const size_t first = s.archive_f.size() - count;
    // Standardize f and weight the better trials more (linearly in rank, 1 down to 1/4):
    // the ranking among good candidates is what the update needs.
    std::vector<size_t> order(count);
    std::iota(order.begin(), order.end(), first);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return s.archive_f[a] < s.archive_f[b]; });
    std::vector<double> weight(count);
    for (size_t r = 0; r < count; ++r) {
      weight[order[r] - first] =
          1.0 - 0.75 * static_cast<double>(r) / static_cast<double>(std::max<size_t>(count - 1, 1));
    }
    double mean_f = 0;
    for (size_t i = first; i < s.archive_f.size(); ++i) mean_f += s.archive_f[i];
    mean_f /= static_cast<double>(count);
    double var_f = 0;
    for (size_t i = first; i < s.archive_f.size(); ++i) {
      var_f += (s.archive_f[i] - mean_f) * (s.archive_f[i] - mean_f);
    }
    const double scale_f = std::sqrt(var_f / static_cast<double>(count));
    if (!(scale_f > 0) || !std::isfinite(scale_f)) return false;

    std::vector<double> ata(static_cast<size_t>(df_) * df_, 0), atb(df_, 0), phi(df_);
    for (size_t i = 0; i < count; ++i) {
      Features(s.archive_x[first + i], phi);
      const double w = weight[i];
      const double y = (s.archive_f[first + i] - mean_f) / scale_f;
      for (int a = 0; a < df_; ++a) {
        atb[a] += w * phi[a] * y;
        for (int b = 0; b <= a; ++b) ata[a * df_ + b] += w * phi[a] * phi[b];
      }
    }
    double trace = 0;
    for (int a = 0; a < df_; ++a) {
      for (int b = 0; b < a; ++b) ata[b * df_ + a] = ata[a * df_ + b];
      trace += ata[a * df_ + a];
    }
    // A whisper of ridge keeps nearly collinear designs (a converged population) solvable.
    for (int a = 0; a < df_; ++a) ata[a * df_ + a] += 1e-10 * trace / df_ + 1e-300;
    if (!CholeskySolve(ata, df_, atb)) return false;
    beta_ = std::move(atb);
    for (double b : beta_) {
      if (!std::isfinite(b)) return false;
    }
    return true;
  }

  double Predict(const std::vector<double>& x) const {
    std::vector<double> phi(df_);
    Features(x, phi);
    double v = 0;
    for (int a = 0; a < df_; ++a) v += beta_[a] * phi[a];
    return v;
  }

 private:
  enum Kind { kLinear, kDiag, kFull };

  void Features(const std::vector<double>& x, std::vector<double>& phi) const {
    const Replay& s = *s_;
    const int n = s.n;
    std::vector<double> z(n);
    for (int j = 0; j < n; ++j) {
      double v = 0;
      for (int i = 0; i < n; ++i) v += s.basis[i * n + j] * (x[i] - s.mean[i]);
      z[j] = v / (s.sigma * s.scales[j]);
    }
    int k = 0;
    phi[k++] = 1;
    for (int i = 0; i < n; ++i) phi[k++] = z[i];
    if (kind_ == kLinear) return;
    for (int i = 0; i < n; ++i) phi[k++] = z[i] * z[i];
    if (kind_ == kDiag) return;
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) phi[k++] = z[i] * z[j];
    }
  }

  const Replay* s_ = nullptr;
  Kind kind_ = kLinear;
  int df_ = 0;
  std::vector<double> beta_;
};

// The tutorial's update of mean, paths, covariance and step size from the generation's
// candidates, best first (`ranked` holds indices into `xs`; failed trials already last).
void UpdateDistribution(Replay& s, const std::vector<std::vector<double>>& xs,
                        const std::vector<int>& ranked) {
  const int n = s.n;
  const double dn = n;
  // Steps in units of sigma. Points that were not drawn from this very distribution (parallel
  // overflow, a stale generation, clipping and grid snapping) are clipped in Mahalanobis norm,
  // as Hansen prescribes for injected solutions, so they cannot blow up the update.
  const double max_norm = std::sqrt(dn) + 2 * dn / (dn + 2);
  std::vector<std::vector<double>> y(s.lambda, std::vector<double>(n));
  std::vector<double> mnorm(s.lambda);
  for (int r = 0; r < s.lambda; ++r) {
    const auto& x = xs[ranked[r]];
    for (int i = 0; i < n; ++i) y[r][i] = (x[i] - s.mean[i]) / s.sigma;
    double m = Norm(InvSqrtC(s, y[r]));
    if (m > max_norm) {
      for (double& v : y[r]) v *= max_norm / m;
      m = max_norm;
    }
    mnorm[r] = m;
  }
  std::vector<double> yw(n, 0);
  for (int r = 0; r < s.mu; ++r) {
    for (int i = 0; i < n; ++i) yw[i] += s.weights[r] * y[r][i];
  }
  for (int i = 0; i < n; ++i) s.mean[i] += s.sigma * yw[i];

  const std::vector<double> cyw = InvSqrtC(s, yw);
  const double ps_coeff = std::sqrt(s.cs * (2 - s.cs) * s.mueff);
  for (int i = 0; i < n; ++i) s.ps[i] = (1 - s.cs) * s.ps[i] + ps_coeff * cyw[i];
  const double ps_norm = Norm(s.ps);
  const double g = static_cast<double>(s.generation + 1);
  const bool hsig =
      ps_norm / std::sqrt(1 - std::pow(1 - s.cs, 2 * g)) < (1.4 + 2 / (dn + 1)) * s.chi_n;
  const double pc_coeff = hsig ? std::sqrt(s.cc * (2 - s.cc) * s.mueff) : 0;
  for (int i = 0; i < n; ++i) s.pc[i] = (1 - s.cc) * s.pc[i] + pc_coeff * yw[i];

  double weight_sum = 0;
  for (double w : s.weights) weight_sum += w;
  const double delta_h = hsig ? 0 : s.cc * (2 - s.cc);
  const double decay = 1 + s.c1 * delta_h - s.c1 - s.cmu * weight_sum;
  std::vector<double> wo(s.lambda);
  for (int r = 0; r < s.lambda; ++r) {
    wo[r] = s.weights[r] >= 0 ? s.weights[r]
                              : s.weights[r] * dn / std::max(mnorm[r] * mnorm[r], 1e-300);
  }
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      double rank_mu = 0;
      for (int r = 0; r < s.lambda; ++r) rank_mu += wo[r] * y[r][i] * y[r][j];
      const double v = decay * s.cov[i * n + j] + s.c1 * s.pc[i] * s.pc[j] + s.cmu * rank_mu;
      s.cov[i * n + j] = v;
      s.cov[j * n + i] = v;
    }
  }
  s.sigma *= std::exp(std::min(1.0, (s.cs / s.damps) * (ps_norm / s.chi_n - 1)));

  std::vector<double> eig;
  SymmetricEigen(s.cov, n, eig, s.basis);
  for (int i = 0; i < n; ++i) s.scales[i] = std::sqrt(std::max(eig[i], 1e-300));
  // The unit cube bounds the search: a step size beyond it only clips candidates to faces.
  const double max_scale = *std::max_element(s.scales.begin(), s.scales.end());
  s.sigma = std::min(s.sigma, 1.0 / max_scale);
}

// Whether the current run has converged (or broken down) and IPOP should restart.
bool ShouldRestart(const Replay& s, const std::vector<double>& gen_values) {
  const int n = s.n;
  if (!std::isfinite(s.sigma) || s.sigma <= 0) return true;
  for (double m : s.mean) {
    if (!std::isfinite(m)) return true;
  }
  const double max_scale = *std::max_element(s.scales.begin(), s.scales.end());
  const double min_scale = *std::min_element(s.scales.begin(), s.scales.end());
  if (max_scale * max_scale > kMaxCondition * min_scale * min_scale) return true;
  bool small = true;
  for (int i = 0; i < n; ++i) {
    small = small && s.sigma * std::sqrt(s.cov[i * n + i]) < kTolX &&
            s.sigma * std::abs(s.pc[i]) < kTolX;
  }
  if (small) return true;
  const int64_t horizon = 10 + static_cast<int64_t>(std::ceil(30.0 * n / s.lambda));
  if (static_cast<int64_t>(s.gen_best.size()) >= horizon && !gen_values.empty()) {
    double lo = *std::min_element(gen_values.begin(), gen_values.end());
    double hi = *std::max_element(gen_values.begin(), gen_values.end());
    for (size_t i = s.gen_best.size() - horizon; i < s.gen_best.size(); ++i) {
      lo = std::min(lo, s.gen_best[i]);
      hi = std::max(hi, s.gen_best[i]);
    }
    if (hi - lo < kTolFun) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CmaEsSampler>> CmaEsSampler::Create(SearchSpace space,
                                                                   CmaEsOptions options) {
  if (options.population_size < 0 || options.population_size == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CmaEsOptions.population_size must be 0 (automatic) or >= 2, got ",
                     options.population_size));
  }
  if (!(options.sigma0 > 0 && options.sigma0 <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CmaEsOptions.sigma0 is a step size in the unit cube and must be in (0, 1], got ",
        options.sigma0));
  }
  if (!(options.min_kendall_tau >= -1 && options.min_kendall_tau <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CmaEsOptions.min_kendall_tau must be in [-1, 1] (0.85 is lq-CMA-ES's), got ",
                     options.min_kendall_tau));
  }
  return std::unique_ptr<CmaEsSampler>(new CmaEsSampler(std::move(space), options));
}

CmaEsSampler::CmaEsSampler(SearchSpace space, CmaEsOptions options)
    : space_(std::move(space)), options_(options) {
  const auto& params = space_.params();
  param_dim_.assign(params.size(), -1);
  for (size_t p = 0; p < params.size(); ++p) {
    if (params[p].kind == ParamKind::kFixed) continue;
    param_dim_[p] = static_cast<int>(dim_param_.size());
    dim_param_.push_back(static_cast<int>(p));
  }
}

CmaEsSampler::~CmaEsSampler() = default;

namespace {

// One step of the replay: either the generation at the state's boundary closed (its trials
// all finished) and the state moved past it, or it is still open and `next` is the point to
// hand out.
struct StepResult {
  bool closed = false;
  std::vector<double> next;
};

class Replayer {
 public:
  Replayer(const SearchSpace& space, const std::vector<int>& param_dim, const CmaEsOptions& opt,
           int n)
      : space_(space), param_dim_(param_dim), opt_(opt), n_(n) {}

  void Init(Replay& s) const {
    s = Replay{};
    s.n = n_;
    const int lambda =
        opt_.population_size > 0
            ? opt_.population_size
            : 4 + static_cast<int>(std::floor(3 * std::log(static_cast<double>(n_))));
    StartRun(s, std::max(lambda, 2), std::vector<double>(n_, 0.5), opt_.sigma0);
  }

  // Unit-cube coordinates of a stored trial; inactive or missing parameters take the mean.
  std::vector<double> Encode(const Replay& s, const Point& point) const {
    std::vector<double> x = s.mean;
    const auto& params = space_.params();
    for (size_t p = 0; p < params.size(); ++p) {
      const int d = param_dim_[p];
      if (d < 0) continue;
      auto it = point.find(params[p].name);
      if (it == point.end()) continue;
      const double u = space_.ToUnit(params[p], it->second);
      if (std::isfinite(u)) x[d] = std::clamp(u, 0.0, 1.0);
    }
    return x;
  }

  // Unit-cube point `x` snapped to what a trial can hold (each dimension's grid).
  std::vector<double> Canonical(const std::vector<double>& x) const {
    std::vector<double> out = x;
    const auto& params = space_.params();
    for (size_t p = 0; p < params.size(); ++p) {
      const int d = param_dim_[p];
      if (d >= 0) out[d] = space_.ToUnit(params[p], space_.FromUnit(params[p], x[d]));
    }
    return out;
  }

  // Whether a trial's parameters are the canonical point `canon` (inactive ones aside).
  bool Matches(const std::vector<double>& canon, const Point& point) const {
    const auto& params = space_.params();
    for (size_t p = 0; p < params.size(); ++p) {
      const int d = param_dim_[p];
      if (d < 0) continue;
      auto it = point.find(params[p].name);
      if (it == point.end()) continue;
      if (!(std::abs(space_.ToUnit(params[p], it->second) - canon[d]) <= 1e-9)) return false;
    }
    return true;
  }

  StepResult Step(Replay& s, const std::vector<TrialRecord>& history) const {
    const int lambda = s.lambda;
    std::mt19937_64 rng = MakeRng(opt_.seed, static_cast<uint64_t>(s.total_generations),
                                  static_cast<uint64_t>(s.restart), 0xC3A1u);
    std::vector<std::vector<double>> cands(lambda);
    for (auto& c : cands) c = SampleCandidate(s, rng);

    // The candidates' points as trials would carry them (snapped to grids), to recognise
    // which trial came from which candidate.
    std::vector<std::vector<double>> canon(lambda);
    for (int i = 0; i < lambda; ++i) canon[i] = Canonical(cands[i]);

    // order: with a model, filled candidates first, then the open ones best-predicted first;
    // without one, the drawing order.
    std::vector<int> order(lambda);
    std::iota(order.begin(), order.end(), 0);
    std::vector<bool> filled(lambda, false);
    Surrogate model;
    const bool use_model = model.Fit(s, opt_.surrogate);
    auto sort_rest = [&] {
      std::vector<double> pred(lambda);
      for (int i = 0; i < lambda; ++i) pred[i] = filled[i] ? 0 : model.Predict(cands[i]);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        if (filled[a] != filled[b]) return static_cast<bool>(filled[a]);
        return !filled[a] && pred[a] < pred[b];
      });
    };
    if (use_model) sort_rest();
    // The slot a trial fills: the best-ranked open candidate it was drawn as, or -1 when it
    // is none of them (drawn from an earlier generation while this one was open, or an
    // overflow draw). Such a stray trial informs the surrogate only: ranked by the model
    // while its step is stale, it would bias the step-size path (it is selected for being
    // good yet lies far out in this generation's units). Without a surrogate it fills the
    // worst-ranked open slot instead, as plain CMA-ES needs whole generations of values.
    auto slot_for = [&](const Point& params, const std::vector<bool>& taken) {
      int last = -1;
      for (int i : order) {
        if (taken[i]) continue;
        if (Matches(canon[i], params)) return i;
        last = i;
      }
      return use_model ? -1 : last;
    };

    std::vector<std::optional<double>> values(lambda);
    std::vector<double> gen_values;
    const size_t archive_mark = s.archive_f.size();
    int checkpoint = use_model ? 1 : lambda;
    bool model_ranking = false;
    int k = 0;             // trials consumed by this generation, strays included
    int filled_count = 0;  // of which drawn as this generation's candidates (or slotted)
    size_t c = s.cursor;
    uint64_t hash = s.prefix_hash;
    while (true) {
      if (filled_count == lambda) break;
      if (use_model && filled_count >= checkpoint) {
        Surrogate refit;
        const bool fitted = refit.Fit(s, true);
        if (fitted) model = std::move(refit);
        if (fitted && Tau(s, model, k) >= opt_.min_kendall_tau) {
          model_ranking = true;
          break;
        }
        // Not trusted yet: evaluate more, best-predicted first (the batch grows by half).
        checkpoint = std::min(lambda, std::max(checkpoint + 1, (checkpoint * 3 + 1) / 2));
        if (fitted) sort_rest();
      }
      if (c == history.size() || !Finished(history[c])) {
        // Open generation: the trials from here on are out (running, or finished behind a
        // running one); hand out the best open candidate none of them holds.
        std::vector<bool> taken = filled;
        for (size_t i = c; i < history.size(); ++i) {
          const int slot = slot_for(history[i].params, taken);
          if (slot >= 0) taken[slot] = true;
        }
        StepResult open;
        for (int i : order) {
          if (!taken[i]) {
            open.next = cands[i];
            break;
          }
        }
        if (open.next.empty()) {  // all out: an extra draw from the current distribution
          std::mt19937_64 extra = MakeRng(opt_.seed, history.size(),
                                          static_cast<uint64_t>(s.total_generations), 0xE7A5u);
          open.next = SampleCandidate(s, extra);
        }
        s.archive_x.resize(archive_mark);
        s.archive_f.resize(archive_mark);
        return open;
      }
      const TrialRecord& t = history[c];
      const int slot = slot_for(t.params, filled);
      const std::vector<double> x = Encode(s, t.params);
      const std::optional<double> value = UsableValue(t);
      if (value) {
        s.archive_x.push_back(x);
        s.archive_f.push_back(*value);
        gen_values.push_back(*value);
      }
      if (slot >= 0) {
        filled[slot] = true;
        cands[slot] = x;
        values[slot] = value;
        ++filled_count;
      }
      hash = HashTrial(hash, t);
      ++k;
      ++c;
    }

    // Close the generation: rank (failed trials last), update, maybe restart.
    std::vector<double> score(lambda);
    std::vector<int> failed_last(lambda, 0);
    for (int i = 0; i < lambda; ++i) {
      if (filled[i] && !values[i]) failed_last[i] = 1;
      score[i] = model_ranking ? model.Predict(cands[i]) : values[i].value_or(0);
    }
    std::vector<int> ranked(lambda);
    std::iota(ranked.begin(), ranked.end(), 0);
    std::stable_sort(ranked.begin(), ranked.end(), [&](int a, int b) {
      if (failed_last[a] != failed_last[b]) return failed_last[a] < failed_last[b];
      return score[a] < score[b];
    });
    s.cursor = c;
    s.prefix_hash = hash;
    if (!gen_values.empty()) {
      UpdateDistribution(s, cands, ranked);
      s.gen_best.push_back(*std::min_element(gen_values.begin(), gen_values.end()));
    }
    ++s.generation;
    ++s.total_generations;
    if (opt_.restarts && ShouldRestart(s, gen_values)) {
      ++s.restart;
      const int base =
          opt_.population_size > 0
              ? opt_.population_size
              : 4 + static_cast<int>(std::floor(3 * std::log(static_cast<double>(n_))));
      const int doublings = std::min(s.restart, kMaxRestartDoublings);
      std::mt19937_64 r = MakeRng(opt_.seed, static_cast<uint64_t>(s.restart), 0, 0x1909u);
      std::uniform_real_distribution<double> uniform(0, 1);
      std::vector<double> mean(n_);
      for (double& m : mean) m = uniform(r);
      StartRun(s, std::max(base, 2) << doublings, std::move(mean), opt_.sigma0);
    }
    return StepResult{true, {}};
  }

 private:
  // Kendall tau between the model and the true values on the most recent trials.
  double Tau(const Replay& s, const Surrogate& model, int evaluated) const {
    const size_t want =
        static_cast<size_t>(std::max(15.0, std::min(1.2 * evaluated, 0.75 * s.lambda)));
    const size_t count = std::min(want, s.archive_f.size());
    if (count < 5) return -1;
    std::vector<double> pred, truth;
    for (size_t i = s.archive_f.size() - count; i < s.archive_f.size(); ++i) {
      pred.push_back(model.Predict(s.archive_x[i]));
      truth.push_back(s.archive_f[i]);
    }
    return KendallTau(pred, truth);
  }

  const SearchSpace& space_;
  const std::vector<int>& param_dim_;
  const CmaEsOptions& opt_;
  int n_;
};

}  // namespace

absl::StatusOr<std::optional<Suggestion>> CmaEsSampler::Ask(
    const std::vector<TrialRecord>& history) {
  const int n = static_cast<int>(dim_param_.size());
  const auto& params = space_.params();
  if (n == 0) {  // only fixed parameters: the one point there is
    Point point;
    for (const ParamSpec& p : params) {
      if (space_.IsActive(p, point)) point[p.name] = 0;
    }
    return Suggestion{std::move(point), 0, std::nullopt};
  }

  const Replayer replayer(space_, param_dim_, options_, n);
  std::vector<double> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool valid = cache_ != nullptr && cache_->cursor <= history.size();
    if (valid) {
      uint64_t h = Replay{}.prefix_hash;
      for (size_t i = 0; i < cache_->cursor; ++i) h = HashTrial(h, history[i]);
      valid = h == cache_->prefix_hash;
    }
    if (!valid) {
      cache_ = std::make_unique<Replay>();
      replayer.Init(*cache_);
    }
    while (true) {
      StepResult step = replayer.Step(*cache_, history);
      if (!step.closed) {
        next = std::move(step.next);
        break;
      }
    }
  }

  Point point;
  for (size_t p = 0; p < params.size(); ++p) {
    const ParamSpec& param = params[p];
    if (!space_.IsActive(param, point)) continue;
    const int d = param_dim_[p];
    point[param.name] = d < 0 ? 0 : space_.FromUnit(param, next[d]);
  }
  return Suggestion{std::move(point), 0, std::nullopt};
}

}  // namespace kiln::hpo
