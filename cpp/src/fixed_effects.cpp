#include "mixedfit/fixed_effects.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mixedfit {

using ConstMap = Eigen::Map<const FixedMatrix>;
using ConstVecMap = Eigen::Map<const FixedVector>;

namespace {

using ColRef = Eigen::Ref<FixedVector>;

// v' W v (W = diag(w), or I without weights).
double weighted_square(const ColRef& v, const double* w, Eigen::Index n) {
  return w ? ConstVecMap(w, n).dot(v.cwiseAbs2()) : v.squaredNorm();
}

// Removes from v its W-projection on the orthonormal columns Q (Q' W Q = I): v -= Q c with
// c = Q' W v, done twice ("twice is enough": the second pass removes what rounding left of the
// first, so v ends W-orthogonal to Q to working precision). Adds c to coef. wv: workspace
// for W v (weighted only).
template <class QBlock>
void orthogonalize(const QBlock& Q, const double* w, ColRef v, FixedVector& wv, ColRef coef) {
  const Eigen::Index n = v.size();
  for (int pass = 0; pass < 2; ++pass) {
    FixedVector c;
    if (w) {
      wv = ConstVecMap(w, n).cwiseProduct(v);
      c = Q.transpose() * wv;
    } else {
      c = Q.transpose() * v;
    }
    v.noalias() -= Q * c;
    coef += c;
  }
}

}  // namespace

// Gram-Schmidt in the W inner product with reorthogonalization, column by column in place in
// Xs: two passes over the rows per column and pass, and no n-length workspace without weights
// (a Householder QR of W^(1/2) X read and wrote its rows ~10 times at p = 2, in an n x p
// copy). T's j-th diagonal entry is column j's W-distance from the span of the kept columns
// before it; an aliased column gets a zero column in Xs, so it takes no part in the later
// columns' projections.
FixedScaling scale_fixed_effects(const double* X, Eigen::Index n, Eigen::Index p,
                                 const double* w, double rel_tol, double* Xs) {
  FixedScaling out;
  out.T = FixedMatrix::Zero(p, p);
  out.kept.assign(p, false);
  Eigen::Map<FixedMatrix> Q(Xs, n, p);
  Q = ConstMap(X, n, p);
  FixedVector wv(w ? n : 0);
  for (Eigen::Index j = 0; j < p; ++j) {
    auto v = Q.col(j);
    const double norm = std::sqrt(weighted_square(v, w, n));
    if (j > 0) orthogonalize(Q.leftCols(j), w, v, wv, out.T.col(j).head(j));
    const double dist = std::sqrt(weighted_square(v, w, n));
    out.T(j, j) = dist;
    out.kept[j] = dist > rel_tol * std::max(norm, std::numeric_limits<double>::min()) && norm > 0;
    if (out.kept[j]) {
      v /= dist;
    } else {
      v.setZero();
    }
  }
  const double root_n = std::sqrt(static_cast<double>(n));
  out.T /= root_n;
  Q *= root_n;
  return out;
}

ResponseShift shift_response(const double* Xs, const double* T, Eigen::Index n, Eigen::Index p,
                             const double* y, const double* w, double* ys) {
  const ConstMap X(Xs, n, p);
  const ConstVecMap yv(y, n);
  Eigen::Map<FixedVector> r(ys, n);
  ResponseShift out;
  r = yv;
  if (p > 0) {
    const FixedVector bs0 = w ? FixedVector(X.transpose() * ConstVecMap(w, n).cwiseProduct(yv))
                              : FixedVector(X.transpose() * yv);
    const FixedVector coef = bs0 / static_cast<double>(n);  // Xs' W Xs = n I
    r.noalias() -= X * coef;
    out.b0 = ConstMap(T, p, p).triangularView<Eigen::Upper>().solve(coef);
  } else {
    out.b0.resize(0);
  }
  const double wrss = w ? ConstVecMap(w, n).dot(r.cwiseAbs2()) : r.squaredNorm();
  out.scale = std::sqrt(wrss / static_cast<double>(n));
  r /= out.scale;
  out.max_abs_y = n ? yv.cwiseAbs().maxCoeff() : 0.0;
  return out;
}

bool predictor_scales_differ(const double* X, Eigen::Index n, Eigen::Index p, double tol) {
  const ConstMap M(X, n, p);
  const double log_tol = std::log(tol);
  std::vector<double> log_sd;
  for (Eigen::Index j = 0; j < p; ++j) {
    const auto c = M.col(j).array();
    if (((c == 0.0) || (c == 1.0)).all()) continue;  // indicator columns are not judged
    const double sd = n > 1 ? std::sqrt((c - c.mean()).square().sum() / double(n - 1)) : 0.0;
    log_sd.push_back(std::log(sd));  // -inf for a constant column: beyond any tolerance
  }
  for (double a : log_sd) {
    if (!(std::abs(a) <= log_tol)) return true;
    for (double b : log_sd)
      if (!(std::abs(a - b) <= log_tol)) return true;
  }
  return false;
}

}  // namespace mixedfit
