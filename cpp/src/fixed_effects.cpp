#include "mixedfit/fixed_effects.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mixedfit {

using ConstMap = Eigen::Map<const FixedMatrix>;
using ConstVecMap = Eigen::Map<const FixedVector>;

FixedScaling scale_fixed_effects(const double* X, Eigen::Index n, Eigen::Index p,
                                 const double* w, double rel_tol) {
  FixedScaling out;
  FixedMatrix WX = ConstMap(X, n, p);
  FixedVector sw;
  if (w) {
    sw = ConstVecMap(w, n).cwiseSqrt();
    WX.array().colwise() *= sw.array();
  }
  const FixedVector norms = WX.colwise().norm().transpose();
  Eigen::HouseholderQR<FixedMatrix> qr(WX);
  const double root_n = std::sqrt(static_cast<double>(n));
  out.T = qr.matrixQR().topLeftCorner(p, p).triangularView<Eigen::Upper>();
  out.kept.resize(p);
  for (Eigen::Index j = 0; j < p; ++j) {
    const double scale = std::max(norms(j), std::numeric_limits<double>::min());
    out.kept[j] = std::abs(out.T(j, j)) > rel_tol * scale && norms(j) > 0;
  }
  out.T /= root_n;
  out.Xs = qr.householderQ() * FixedMatrix::Identity(n, p);
  out.Xs *= root_n;
  if (w) out.Xs.array().colwise() /= sw.array();
  return out;
}

ResponseShift shift_response(const FixedMatrix& Xs, const FixedMatrix& T, const double* y,
                             const double* w) {
  const Eigen::Index n = Xs.rows();
  const ConstVecMap yv(y, n);
  ResponseShift out;
  FixedVector r = yv;
  if (Xs.cols() > 0) {
    const FixedVector bs0 = w ? FixedVector(Xs.transpose() * ConstVecMap(w, n).cwiseProduct(yv))
                              : FixedVector(Xs.transpose() * yv);
    const FixedVector coef = bs0 / static_cast<double>(n);  // Xs' W Xs = n I
    r.noalias() -= Xs * coef;
    out.b0 = T.triangularView<Eigen::Upper>().solve(coef);
  } else {
    out.b0.resize(0);
  }
  const double wrss = w ? ConstVecMap(w, n).dot(r.cwiseAbs2()) : r.squaredNorm();
  out.scale = std::sqrt(wrss / static_cast<double>(n));
  out.ys = r / out.scale;
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
