// The fixed effects before a fit: which columns are aliased, the scaling that makes them
// orthogonal, the response's shift onto them, and lme4's check of predictor scales.
//
// The scaling: X = Xs T with Xs' W Xs = n I and T upper triangular (p x p), with a positive
// diagonal. From Gram-Schmidt with reorthogonalization in the W inner product, X = Q R with
// Q' W Q = I: T = R / sqrt(n), Xs = sqrt(n) Q. An aliased column (R's diagonal entry below
// rel_tol times its norm) gets a zero column in Xs. The response shift:
// y = X b0 + s ys, b0 the weighted least-squares fit, s the root-mean-square of its weighted
// residuals (sqrt(sum w r^2 / n)), ys = r / s. The Python layer (_standardize.py) says why.
#pragma once

#include <Eigen/Dense>
#include <vector>

namespace mixedfit {

using FixedMatrix = Eigen::MatrixXd;
using FixedVector = Eigen::VectorXd;

// Column j of X (n x p, column-major, p <= n) is aliased when its distance from the span of
// the columns before it -- the j-th diagonal entry of R -- is at most rel_tol times its norm,
// or its norm is 0. X's scaling is computed with weights w (nullptr: all 1); `kept` is judged
// on W^{1/2} X. Xs (n x p, written into the caller's column-major buffer) and T are of all p
// columns (meaningful when none is aliased).
struct FixedScaling {
  FixedMatrix T;           // p x p upper triangular, X = Xs T
  std::vector<bool> kept;  // p entries: not aliased
};
FixedScaling scale_fixed_effects(const double* X, Eigen::Index n, Eigen::Index p,
                                 const double* w, double rel_tol, double* Xs);

struct ResponseShift {
  FixedVector b0;     // p: the weighted least-squares coefficients of X
  double scale = 0;   // s
  double max_abs_y = 0;
};
// y (n) on the scaled columns Xs (n x p, column-major) with X = Xs T (T p x p, column-major),
// weights w (nullptr: all 1). ys is written into the caller's buffer of n values.
ResponseShift shift_response(const double* Xs, const double* T, Eigen::Index n, Eigen::Index p,
                             const double* y, const double* w, double* ys);

// lme4's check.scaleX: among the columns that are not all 0/1, some standard deviation is
// beyond a factor `tol` from 1 or from another's.
bool predictor_scales_differ(const double* X, Eigen::Index n, Eigen::Index p, double tol);

}  // namespace mixedfit
