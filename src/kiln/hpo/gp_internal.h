// gp_internal.h
//
// The numerical core of `GpSampler` (gp_sampler.h), exposed only so that its test can
// check it directly: dense Cholesky and the Matérn 5/2 log marginal likelihood with its
// analytic gradient. Not an API; nothing outside gp_sampler.cc and its test includes it.
#pragma once

#include <cstddef>
#include <vector>

namespace kiln::hpo::gp_internal {

// Training data of a GP: n points of `dim` unit-cube coordinates (row-major) and their
// standardized objective values.
struct Data {
  int dim = 0;
  std::vector<double> x;
  std::vector<double> y;
  int n() const { return static_cast<int>(y.size()); }
  const double* row(int i) const { return &x[static_cast<size_t>(i) * dim]; }
};

// In-place lower Cholesky factor of the row-major n x n matrix `a` (its upper triangle is
// ignored and left as is). Returns false when `a` is not numerically positive definite.
bool Cholesky(std::vector<double>& a, int n);

// Squared coordinate differences of every pair i > j (pairs row-major, `dim` values
// each). They do not depend on the hyperparameters, so a fit computes them once.
std::vector<double> PairwiseSquares(const Data& data);

// Log marginal likelihood of `data` under a zero-mean GP with a Matérn 5/2 ARD kernel, at
// theta = [log l_1 .. log l_dim, log signal variance, (log noise variance if fit_noise)];
// without fit_noise the noise variance is a fixed 1e-6 jitter. When `grad` is set it
// receives d/dtheta. `sq` is PairwiseSquares(data). Returns -inf when K is not positive
// definite.
double LogLikelihood(const Data& data, const std::vector<double>& sq,
                     const std::vector<double>& theta, bool fit_noise, std::vector<double>* grad);

}  // namespace kiln::hpo::gp_internal
