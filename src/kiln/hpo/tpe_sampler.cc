#include "kiln/hpo/tpe_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"

namespace kiln::hpo {
namespace {

constexpr double kSqrt2Pi = 2.5066282746310002;
constexpr double kInvSqrt2 = 0.7071067811865476;
// Optuna's bandwidth constants: the magic clip's floor is range / min(100, n + 2) and the
// multivariate bandwidth is 0.2 * n^(-1 / (d + 4)) of the range.
constexpr double kMagicClipMaxDivisor = 100.0;
constexpr double kMultivariateSigma0 = 0.2;
// Beyond this many sds a kernel's density is below 1e-17 of its peak: the sum skips it.
// (The prior kernel alone contributes > 1e-4 everywhere, so nothing relevant is lost, and
// exp() of large negatives takes glibc's slow underflow path.)
constexpr double kNegligibleZ = 9.0;
constexpr double kNegligibleHalfZ2 = 0.5 * kNegligibleZ * kNegligibleZ;
// Optuna's default_weights: the last 25 observations weigh 1, older ones ramp down.
constexpr size_t kFlatWeights = 25;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

double NormalCdf(double z) { return 0.5 * std::erfc(-z * kInvSqrt2); }

// Observation weights in trial order (oldest first), before the prior is appended.
std::vector<double> DefaultWeights(size_t n) {
  std::vector<double> w(n, 1.0);
  if (n > kFlatWeights) {
    const size_t ramp = n - kFlatWeights;
    // numpy.linspace(1 / n, 1, ramp)
    for (size_t i = 0; i < ramp; ++i) {
      w[i] = ramp == 1 ? 1.0 / n : 1.0 / n + (1.0 - 1.0 / n) * static_cast<double>(i) / (ramp - 1);
    }
  }
  return w;
}

// Draws from N(mu, sigma) truncated to [0, 1]. Rejection is cheap here: sigma >= 1/100
// and mu lies in [0, 1], so at least ~half of the draws land inside.
double SampleTruncatedNormal(double mu, double sigma, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(mu, sigma);
  for (int i = 0; i < 64; ++i) {
    const double x = normal(rng);
    if (x >= 0.0 && x <= 1.0) return x;
  }
  return std::clamp(mu, 0.0, 1.0);
}

size_t SampleIndex(const std::vector<double>& cumulative, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, cumulative.back());
  const double r = u(rng);
  const size_t i = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
  return std::min(i, cumulative.size() - 1);
}

std::vector<double> Cumulative(const std::vector<double>& w) {
  std::vector<double> c(w.size());
  double s = 0;
  for (size_t i = 0; i < w.size(); ++i) c[i] = (s += w[i]);
  return c;
}

// Normalized kernel weights: DefaultWeights(n) then the prior.
std::vector<double> KernelWeights(size_t n, double prior_weight) {
  std::vector<double> w = DefaultWeights(n);
  w.push_back(prior_weight);
  double total = 0;
  for (double x : w) total += x;
  for (double& x : w) x /= total;
  return w;
}

// 1 / (sigma * sqrt(2 pi) * truncated mass) of N(mu, sigma) on [0, 1].
double TruncatedNormalizer(double mu, double sigma) {
  // Far from both ends the truncated mass is 1 to double precision; skipping erfc there
  // saves most of the model-building time at thousands of trials.
  const double lo = -mu / sigma, hi = (1.0 - mu) / sigma;
  const double mass = lo < -kNegligibleZ && hi > kNegligibleZ ? 1.0 : NormalCdf(hi) - NormalCdf(lo);
  return 1.0 / (sigma * kSqrt2Pi * std::max(mass, std::numeric_limits<double>::min()));
}

// One truncated-normal kernel on [0, 1], with its normalizer folded into `log_norm`.
struct NumericKernel {
  double mu;
  double sigma;
  double inv_sigma;
  double log_norm;  // -log(sigma * sqrt(2 pi) * (Phi((1 - mu) / sigma) - Phi(-mu / sigma)))

  static NumericKernel Make(double mu, double sigma) {
    return {mu, sigma, 1.0 / sigma, std::log(TruncatedNormalizer(mu, sigma))};
  }
  double LogPdf(double x) const {
    const double z = (x - mu) * inv_sigma;
    return log_norm - 0.5 * z * z;
  }
};

// A univariate Parzen density over [0, 1]: observation kernels plus the prior kernel.
// Bandwidths follow Optuna 3.1 (consider_endpoints=False, consider_magic_clip=True): the
// larger distance to a sorted neighbour (the outermost kernels use their inner neighbour),
// clipped to [1 / min(100, n + 2), 1].
//
// Kernels are kept sorted by mean, so a density evaluation only visits the kernels within
// kNegligibleZ of the widest bandwidth around x: at thousands of trials that is a small
// window (bandwidths shrink to 1/100), which keeps asks far below Optuna's cost. The sum
// is plain (no log-sum-exp): the prior kernel has sd 1, so it never underflows.
class NumericParzen {
 public:
  NumericParzen(const std::vector<double>& mus, double prior_weight) {
    const size_t n = mus.size();
    const std::vector<double> w = KernelWeights(n, prior_weight);
    // As Optuna 3.1 does, the prior's mean (index n) takes part in the neighbour
    // distances, and the clip counts it: min_sigma = 1 / min(100, n + 2).
    const size_t m = n + 1;
    std::vector<std::pair<double, size_t>> sorted(m);
    for (size_t i = 0; i < n; ++i) sorted[i] = {mus[i], i};
    sorted[n] = {0.5, n};
    std::sort(sorted.begin(), sorted.end());
    auto at = [&](size_t i) {  // sorted means with the endpoints 0 and 1 around them
      return i == 0 ? 0.0 : i == m + 1 ? 1.0 : sorted[i - 1].first;
    };
    const double min_sigma = 1.0 / std::min(kMagicClipMaxDivisor, 1.0 + m);
    mu_.reserve(n);
    inv_sigma_.reserve(n);
    coef_.reserve(n);
    std::vector<double> sampling_weights;
    sampling_weights.reserve(m);
    for (size_t i = 0; i < m; ++i) {
      if (sorted[i].second == n) continue;  // the prior: sd 1, kept apart below
      double sigma = std::max(at(i + 1) - at(i), at(i + 2) - at(i + 1));
      if (m >= 2 && i == 0) sigma = at(2) - at(1);
      if (m >= 2 && i == m - 1) sigma = at(m) - at(m - 1);
      sigma = std::clamp(sigma, min_sigma, 1.0);
      const double weight = w[sorted[i].second];
      mu_.push_back(sorted[i].first);
      inv_sigma_.push_back(1.0 / sigma);
      coef_.push_back(weight * TruncatedNormalizer(sorted[i].first, sigma));
      sampling_weights.push_back(weight);
      max_sigma_ = std::max(max_sigma_, sigma);
    }
    prior_ = NumericKernel::Make(0.5, 1.0);
    prior_coef_ = w[n] * std::exp(prior_.log_norm);
    sampling_weights.push_back(w[n]);
    cumulative_ = Cumulative(sampling_weights);
  }

  double Sample(std::mt19937_64& rng) const {
    const size_t i = SampleIndex(cumulative_, rng);
    if (i == mu_.size()) return SampleTruncatedNormal(prior_.mu, prior_.sigma, rng);
    return SampleTruncatedNormal(mu_[i], 1.0 / inv_sigma_[i], rng);
  }

  double LogPdf(double x) const {
    const double z0 = (x - prior_.mu) * prior_.inv_sigma;
    double sum = prior_coef_ * std::exp(-0.5 * z0 * z0);
    const double reach = kNegligibleZ * max_sigma_;
    auto it = std::lower_bound(mu_.begin(), mu_.end(), x - reach);
    for (size_t i = it - mu_.begin(); i < mu_.size() && mu_[i] <= x + reach; ++i) {
      const double z = (x - mu_[i]) * inv_sigma_[i];
      const double half_z2 = 0.5 * z * z;
      if (half_z2 < kNegligibleHalfZ2) sum += coef_[i] * std::exp(-half_z2);
    }
    return std::log(sum);
  }

 private:
  std::vector<double> mu_;  // sorted
  std::vector<double> inv_sigma_;
  std::vector<double> coef_;  // weight / (sigma sqrt(2 pi) truncated mass)
  double max_sigma_ = 0;
  NumericKernel prior_{};
  double prior_coef_ = 0;
  std::vector<double> cumulative_;  // kernels in sorted order, then the prior
};

// Per-observation categorical distributions (Optuna 3.1): mass 1 on the observed choice
// plus prior_weight / (n + 1) on every choice, normalized; the prior kernel is uniform.
std::vector<std::vector<double>> CategoricalRows(const std::vector<int>& observed, int n_choices,
                                                 double prior_weight) {
  const size_t n_kernels = observed.size() + 1;
  const double base = prior_weight / static_cast<double>(n_kernels);
  std::vector<std::vector<double>> rows(n_kernels, std::vector<double>(n_choices, base));
  for (size_t i = 0; i < observed.size(); ++i) rows[i][observed[i]] += 1.0;
  for (auto& row : rows) {
    double total = 0;
    for (double x : row) total += x;
    for (double& x : row) x /= total;
  }
  return rows;
}

// A univariate categorical density: the mixture of the rows collapses to one
// distribution over the choices.
class CategoricalParzen {
 public:
  CategoricalParzen(const std::vector<int>& observed, int n_choices, double prior_weight) {
    const auto rows = CategoricalRows(observed, n_choices, prior_weight);
    const std::vector<double> w = KernelWeights(observed.size(), prior_weight);
    p_.assign(n_choices, 0.0);
    for (size_t k = 0; k < rows.size(); ++k) {
      for (int c = 0; c < n_choices; ++c) p_[c] += w[k] * rows[k][c];
    }
    cumulative_ = Cumulative(p_);
  }
  int Sample(std::mt19937_64& rng) const { return static_cast<int>(SampleIndex(cumulative_, rng)); }
  double LogPmf(int c) const { return std::log(p_[c]); }

 private:
  std::vector<double> p_;
  std::vector<double> cumulative_;
};

int NumChoices(const ParamSpec& p) { return static_cast<int>(p.choices.size()); }

int ChoiceIndex(const ParamSpec& p, double internal) {
  return std::clamp(static_cast<int>(std::lround(internal)), 0, NumChoices(p) - 1);
}

// The trials that inform the model, split into the good group (`below`) and the rest,
// each in trial order, and how many trials have finished.
struct Split {
  std::vector<const TrialRecord*> below;
  std::vector<const TrialRecord*> above;
  int64_t n_finished = 0;
};

Split SplitTrials(const std::vector<TrialRecord>& history, const TpeOptions& options) {
  // Optuna's order: completed by value; pruned by (-last step, last value); then the
  // lies. Keys compare lexicographically.
  struct Key {
    int group;
    double step;
    double value;
    int64_t number;
    const TrialRecord* trial;
    bool operator<(const Key& o) const {
      if (group != o.group) return group < o.group;
      if (step != o.step) return step < o.step;
      if (value != o.value) return value < o.value;
      return number < o.number;
    }
  };
  std::vector<Key> keys;
  keys.reserve(history.size());
  Split split;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  for (const TrialRecord& t : history) {
    switch (t.state) {
      case TrialState::kComplete:
        ++split.n_finished;
        if (t.value && std::isfinite(*t.value)) {
          keys.push_back({0, 0.0, *t.value, t.number, &t});
        } else {
          keys.push_back({2, 0.0, 0.0, t.number, &t});
        }
        break;
      case TrialState::kPruned:
        ++split.n_finished;
        if (!t.intermediate.empty() && std::isfinite(t.intermediate.rbegin()->second)) {
          keys.push_back({1, -static_cast<double>(t.intermediate.rbegin()->first),
                          t.intermediate.rbegin()->second, t.number, &t});
        } else {
          keys.push_back({1, kInf, 0.0, t.number, &t});
        }
        break;
      case TrialState::kRunning:
        if (options.constant_liar) keys.push_back({2, 0.0, 0.0, t.number, &t});
        break;
      case TrialState::kFailed:
        break;
    }
  }
  // The history comes in trial order; keep that order (the kernel weights ramp by age)
  // and only select the good group, which is O(n) instead of a sort.
  if (!std::is_sorted(keys.begin(), keys.end(),
                      [](const Key& a, const Key& b) { return a.number < b.number; })) {
    std::sort(keys.begin(), keys.end(),
              [](const Key& a, const Key& b) { return a.number < b.number; });
  }
  // As in Optuna, the good group's size counts finished trials only: lies never make it
  // larger (and, ranked last, never enter it unless everything does).
  const size_t n = keys.size();
  const size_t n_below = std::min<size_t>(
      {static_cast<size_t>(std::ceil(options.gamma * static_cast<double>(split.n_finished))),
       static_cast<size_t>(options.good_max), n});
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  std::nth_element(idx.begin(), idx.begin() + n_below, idx.end(),
                   [&](size_t a, size_t b) { return keys[a] < keys[b]; });
  std::vector<char> is_below(n, 0);
  for (size_t i = 0; i < n_below; ++i) is_below[idx[i]] = 1;
  split.below.reserve(n_below);
  split.above.reserve(n - n_below);
  for (size_t i = 0; i < n; ++i) (is_below[i] ? split.below : split.above).push_back(keys[i].trial);
  return split;
}

// Joint density over several parameters: kernel k is a product over dimensions of a
// truncated normal (numeric) or a categorical row (categorical), all kernels sharing the
// component index k, as Optuna's multivariate TPE.
class JointParzen {
 public:
  JointParzen(const std::vector<const ParamSpec*>& dims,
              const std::vector<std::vector<double>>& obs,  // [trial][dim], unit or index
              double prior_weight)
      : dims_(dims) {
    const size_t n = obs.size();
    const size_t d = dims.size();
    const std::vector<double> w = KernelWeights(n, prior_weight);
    log_w_.resize(w.size());
    for (size_t k = 0; k < w.size(); ++k) log_w_[k] = std::log(w[k]);
    cumulative_ = Cumulative(w);
    const double min_sigma = 1.0 / std::min(kMagicClipMaxDivisor, 2.0 + n);
    const double sigma = std::clamp(
        kMultivariateSigma0 * std::pow(std::max<double>(n, 1), -1.0 / (d + 4.0)), min_sigma, 1.0);
    numeric_.resize(d);
    log_rows_.resize(d);
    for (size_t j = 0; j < d; ++j) {
      if (dims[j]->kind == ParamKind::kCategorical) {
        std::vector<int> observed(n);
        for (size_t i = 0; i < n; ++i) observed[i] = static_cast<int>(obs[i][j]);
        auto rows = CategoricalRows(observed, NumChoices(*dims[j]), prior_weight);
        for (auto& row : rows) {
          for (double& x : row) x = std::log(x);
        }
        log_rows_[j] = std::move(rows);
      } else {
        numeric_[j].reserve(n + 1);
        for (size_t i = 0; i < n; ++i) numeric_[j].push_back(NumericKernel::Make(obs[i][j], sigma));
        numeric_[j].push_back(NumericKernel::Make(0.5, 1.0));
      }
    }
  }

  // A draw: unit values for numeric dimensions, choice indices for categorical ones.
  std::vector<double> Sample(std::mt19937_64& rng) const {
    const size_t k = SampleIndex(cumulative_, rng);
    std::vector<double> x(dims_.size());
    for (size_t j = 0; j < dims_.size(); ++j) {
      if (dims_[j]->kind == ParamKind::kCategorical) {
        std::vector<double> p(log_rows_[j][k].size());
        for (size_t c = 0; c < p.size(); ++c) p[c] = std::exp(log_rows_[j][k][c]);
        x[j] = static_cast<double>(SampleIndex(Cumulative(p), rng));
      } else {
        x[j] = SampleTruncatedNormal(numeric_[j][k].mu, numeric_[j][k].sigma, rng);
      }
    }
    return x;
  }

  double LogPdf(const std::vector<double>& x) const {
    // Log-sum-exp over kernels: a product over many dimensions can underflow.
    double max_term = -std::numeric_limits<double>::infinity();
    terms_.resize(log_w_.size());
    for (size_t k = 0; k < log_w_.size(); ++k) {
      double t = log_w_[k];
      for (size_t j = 0; j < dims_.size(); ++j) {
        t += dims_[j]->kind == ParamKind::kCategorical ? log_rows_[j][k][static_cast<size_t>(x[j])]
                                                       : numeric_[j][k].LogPdf(x[j]);
      }
      terms_[k] = t;
      max_term = std::max(max_term, t);
    }
    double sum = 0;
    for (double t : terms_) {
      if (t - max_term > -2 * kNegligibleHalfZ2) sum += std::exp(t - max_term);
    }
    return max_term + std::log(sum);
  }

 private:
  std::vector<const ParamSpec*> dims_;
  std::vector<double> log_w_;
  std::vector<double> cumulative_;
  std::vector<std::vector<NumericKernel>> numeric_;         // [dim][kernel]
  std::vector<std::vector<std::vector<double>>> log_rows_;  // [dim][kernel][choice]
  mutable std::vector<double> terms_;
};

// Parses a WMLA algoParam value: a string holding a number, or a JSON number.
absl::StatusOr<double> WmlaNumber(const base::Json& value, const std::string& name) {
  if (value.is_number()) return value.get<double>();
  double out = 0;
  if (value.is_string() && absl::SimpleAtod(value.get<std::string>(), &out) && std::isfinite(out)) {
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "algoParams: ", name, " must be a number given as a string, got ", base::DumpJson(value)));
}

absl::Status CheckOptions(const TpeOptions& o) {
  if (o.n_startup < 0) return absl::InvalidArgumentError("TPE: n_startup must be >= 0");
  if (o.n_ei_candidates < 1) return absl::InvalidArgumentError("TPE: n_ei_candidates must be >= 1");
  if (!(o.gamma > 0.0 && o.gamma <= 1.0)) {
    return absl::InvalidArgumentError("TPE: gamma (GoodRatio) must be in (0, 1]");
  }
  if (o.good_max < 1) return absl::InvalidArgumentError("TPE: good_max must be >= 1");
  if (!(o.prior_weight > 0.0) || !std::isfinite(o.prior_weight)) {
    return absl::InvalidArgumentError("TPE: prior_weight must be a finite number > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TpeOptions> TpeOptionsFromWmla(const base::Json& algo_params) {
  TpeOptions options;
  if (algo_params.is_null()) return options;
  if (!algo_params.is_array()) {
    return absl::InvalidArgumentError(
        "algoParams must be a list of {\"name\": ..., \"value\": ...} objects");
  }
  static const char* const kKnown[] = {"RandomSeed", "WarmUp", "EICandidate", "GoodRatio",
                                       "GoodMax"};
  for (const base::Json& entry : algo_params) {
    KILN_ASSIGN_OR_RETURN(std::string name, base::GetString(entry, "name"));
    if (!entry.is_object() || !entry.contains("value")) {
      return absl::InvalidArgumentError(absl::StrCat("algoParams: ", name, " has no value"));
    }
    KILN_ASSIGN_OR_RETURN(double v, WmlaNumber(entry["value"], name));
    const bool integral = v == std::floor(v);
    if (name == "RandomSeed") {
      if (!integral || v < 0 || v > 1.8e19) {
        return absl::InvalidArgumentError("algoParams: RandomSeed must be a non-negative integer");
      }
      options.seed = static_cast<uint64_t>(v);
    } else if (name == "WarmUp") {
      if (!integral || v <= 2 || v > 1e9) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams: WarmUp must be an integer > 2, got ", v));
      }
      options.n_startup = static_cast<int>(v);
    } else if (name == "EICandidate") {
      if (!integral || v <= 1 || v > 1e6) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams: EICandidate must be an integer > 1, got ", v));
      }
      options.n_ei_candidates = static_cast<int>(v);
    } else if (name == "GoodRatio") {
      if (!(v > 0 && v <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams: GoodRatio must be in (0, 1], got ", v));
      }
      options.gamma = v;
    } else if (name == "GoodMax") {
      if (!integral || v <= 1 || v > 1e9) {
        return absl::InvalidArgumentError(
            absl::StrCat("algoParams: GoodMax must be an integer > 1, got ", v));
      }
      options.good_max = static_cast<int>(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams: unknown parameter '", name,
                       "' for Tpe; known: ", absl::StrJoin(kKnown, ", ")));
    }
  }
  return options;
}

TpeSampler::TpeSampler(SearchSpace space, TpeOptions options)
    : space_(std::move(space)), options_(options) {}

absl::StatusOr<std::unique_ptr<TpeSampler>> TpeSampler::Create(SearchSpace space,
                                                               TpeOptions options) {
  KILN_RETURN_IF_ERROR(CheckOptions(options));
  return std::unique_ptr<TpeSampler>(new TpeSampler(std::move(space), options));
}

absl::StatusOr<std::optional<Suggestion>> TpeSampler::Ask(const std::vector<TrialRecord>& history) {
  std::mt19937_64 rng(SplitMix64(options_.seed ^ SplitMix64(history.size())));
  Split split = SplitTrials(history, options_);
  Suggestion suggestion;
  if (split.n_finished < options_.n_startup) {
    suggestion.params = space_.SampleUniform(rng);
    return suggestion;
  }
  const std::vector<const TrialRecord*>& below = split.below;
  const std::vector<const TrialRecord*>& above = split.above;

  Point& point = suggestion.params;
  const int n_candidates = options_.n_ei_candidates;

  if (options_.multivariate) {
    std::vector<const ParamSpec*> dims;
    for (const ParamSpec& p : space_.params()) {
      if (!p.condition && p.kind != ParamKind::kFixed) dims.push_back(&p);
    }
    if (!dims.empty()) {
      auto observations = [&](const std::vector<const TrialRecord*>& trials) {
        std::vector<std::vector<double>> obs;
        obs.reserve(trials.size());
        for (const TrialRecord* t : trials) {
          std::vector<double> x(dims.size());
          bool complete = true;
          for (size_t j = 0; j < dims.size() && complete; ++j) {
            auto it = t->params.find(dims[j]->name);
            if (it == t->params.end()) {
              complete = false;
            } else if (dims[j]->kind == ParamKind::kCategorical) {
              x[j] = ChoiceIndex(*dims[j], it->second);
            } else {
              x[j] = space_.ToUnit(*dims[j], it->second);
            }
          }
          if (complete) obs.push_back(std::move(x));
        }
        return obs;
      };
      const JointParzen l(dims, observations(below), options_.prior_weight);
      const JointParzen g(dims, observations(above), options_.prior_weight);
      std::vector<double> best_internal(dims.size());
      double best_score = -std::numeric_limits<double>::infinity();
      std::vector<double> internal(dims.size());
      for (int c = 0; c < n_candidates; ++c) {
        std::vector<double> x = l.Sample(rng);
        for (size_t j = 0; j < dims.size(); ++j) {
          if (dims[j]->kind == ParamKind::kCategorical) {
            internal[j] = x[j];
          } else {
            // Evaluate gridded and integer parameters where they will actually land.
            internal[j] = space_.FromUnit(*dims[j], x[j]);
            x[j] = space_.ToUnit(*dims[j], internal[j]);
          }
        }
        const double score = l.LogPdf(x) - g.LogPdf(x);
        if (score > best_score || c == 0) {
          best_score = score;
          best_internal = internal;
        }
      }
      for (size_t j = 0; j < dims.size(); ++j) point[dims[j]->name] = best_internal[j];
    }
  }

  for (const ParamSpec& p : space_.params()) {
    if (point.count(p.name) || !space_.IsActive(p, point)) continue;
    if (p.kind == ParamKind::kFixed) {
      point[p.name] = 0.0;
      continue;
    }
    if (p.kind == ParamKind::kCategorical) {
      auto observed = [&](const std::vector<const TrialRecord*>& trials) {
        std::vector<int> out;
        out.reserve(trials.size());
        for (const TrialRecord* t : trials) {
          auto it = t->params.find(p.name);
          if (it != t->params.end()) out.push_back(ChoiceIndex(p, it->second));
        }
        return out;
      };
      const CategoricalParzen l(observed(below), NumChoices(p), options_.prior_weight);
      const CategoricalParzen g(observed(above), NumChoices(p), options_.prior_weight);
      int best = 0;
      double best_score = -std::numeric_limits<double>::infinity();
      for (int c = 0; c < n_candidates; ++c) {
        const int x = l.Sample(rng);
        const double score = l.LogPmf(x) - g.LogPmf(x);
        if (score > best_score) {
          best_score = score;
          best = x;
        }
      }
      point[p.name] = best;
      continue;
    }
    auto observed = [&](const std::vector<const TrialRecord*>& trials) {
      std::vector<double> out;
      out.reserve(trials.size());
      for (const TrialRecord* t : trials) {
        auto it = t->params.find(p.name);
        if (it != t->params.end()) out.push_back(space_.ToUnit(p, it->second));
      }
      return out;
    };
    const NumericParzen l(observed(below), options_.prior_weight);
    const NumericParzen g(observed(above), options_.prior_weight);
    double best = 0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (int c = 0; c < n_candidates; ++c) {
      const double internal = space_.FromUnit(p, l.Sample(rng));
      const double u = space_.ToUnit(p, internal);
      const double score = l.LogPdf(u) - g.LogPdf(u);
      if (score > best_score || c == 0) {
        best_score = score;
        best = internal;
      }
    }
    point[p.name] = best;
  }
  return suggestion;
}

}  // namespace kiln::hpo
