#include "mixedfit/fixed_effects.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mixedfit {

using ConstMap = Eigen::Map<const FixedMatrix>;
using ConstVecMap = Eigen::Map<const FixedVector>;

FixedScaling scale_fixed_effects(const double* X, Eigen::Index n, Eigen::Index p,
                                 const double* w, double rel_tol, double* Xs) {
  FixedScaling out;
  FixedMatrix WX = ConstMap(X, n, p);
  FixedVector sw;
  if (w) {
    sw = ConstVecMap(w, n).cwiseSqrt();
    WX.array().colwise() *= sw.array();
  }
  const FixedVector norms = WX.colwise().norm().transpose();
  Eigen::HouseholderQR<Eigen::Ref<FixedMatrix>> qr(WX);  // in place: no second n x p copy
  const double root_n = std::sqrt(static_cast<double>(n));
  out.T = qr.matrixQR().topLeftCorner(p, p).triangularView<Eigen::Upper>();
  out.kept.resize(p);
  for (Eigen::Index j = 0; j < p; ++j) {
    const double scale = std::max(norms(j), std::numeric_limits<double>::min());
    out.kept[j] = std::abs(out.T(j, j)) > rel_tol * scale && norms(j) > 0;
  }
  out.T /= root_n;
  Eigen::Map<FixedMatrix> Q(Xs, n, p);
  Q.setIdentity();
  Q.applyOnTheLeft(qr.householderQ());
  Q *= root_n;
  if (w) Q.array().colwise() /= sw.array();
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
