// The fixed effects' preparation (fixed_effects.cpp): the scaling X = Xs T with
// Xs' W Xs = n I, the aliased-column check, the response shift y = X b0 + s ys, and lme4's
// check of predictor scales.
#include <cmath>
#include <vector>

#include "check.hpp"
#include "mixedfit/fixed_effects.hpp"

using mixedfit::FixedMatrix;
using mixedfit::FixedVector;

namespace {

// Intercept, a covariate far from 0, and (optionally) their sum: aliased.
FixedMatrix design(int n, bool aliased) {
  FixedMatrix X(n, aliased ? 3 : 2);
  for (int i = 0; i < n; ++i) {
    X(i, 0) = 1.0;
    X(i, 1) = 1e4 + std::sin(1.0 + i);
    if (aliased) X(i, 2) = X(i, 0) + 2.0 * X(i, 1);
  }
  return X;
}

FixedVector weights(int n) {
  FixedVector w(n);
  for (int i = 0; i < n; ++i) w(i) = 0.5 + (i % 4) * 0.5;
  return w;
}

void scaling(bool weighted) {
  const int n = 40;
  const FixedMatrix X = design(n, false);
  const FixedVector w = weights(n);
  FixedMatrix Xs(n, 2);
  const auto s =
      mixedfit::scale_fixed_effects(X.data(), n, 2, weighted ? w.data() : nullptr, 1e-7, Xs.data());
  CHECK(s.kept[0] && s.kept[1]);
  CHECK(((Xs * s.T) - X).cwiseAbs().maxCoeff() <= 1e-9 * X.cwiseAbs().maxCoeff());
  const FixedMatrix W = weighted ? FixedMatrix(w.asDiagonal()) : FixedMatrix::Identity(n, n);
  const FixedMatrix G = Xs.transpose() * W * Xs;
  CHECK((G - n * FixedMatrix::Identity(2, 2)).cwiseAbs().maxCoeff() <= 1e-10 * n);
  CHECK(s.T(1, 0) == 0.0);
}

void aliasing() {
  const int n = 30;
  const FixedMatrix X = design(n, true);
  FixedMatrix Xs(n, 3);
  const auto s = mixedfit::scale_fixed_effects(X.data(), n, 3, nullptr, 1e-7, Xs.data());
  CHECK(s.kept[0] && s.kept[1] && !s.kept[2]);
  FixedMatrix Z = FixedMatrix::Zero(n, 2);
  Z.col(0).setOnes();
  const auto z = mixedfit::scale_fixed_effects(Z.data(), n, 2, nullptr, 1e-7, Xs.data());
  CHECK(z.kept[0] && !z.kept[1]);  // an all-zero column

  // An aliased column between kept ones takes no part in the later projections: the columns
  // after it are still reproduced (X = Xs T on the kept columns) and orthogonal.
  FixedMatrix D(n, 3);
  D.col(0).setOnes();
  D.col(1) = 2.0 * D.col(0);
  for (int i = 0; i < n; ++i) D(i, 2) = std::cos(0.3 * i);
  FixedMatrix Ds(n, 3);
  const auto d = mixedfit::scale_fixed_effects(D.data(), n, 3, nullptr, 1e-7, Ds.data());
  CHECK(d.kept[0] && !d.kept[1] && d.kept[2]);
  CHECK(Ds.col(1).isZero(0.0));
  const FixedMatrix back = Ds * d.T;
  CHECK((back.col(0) - D.col(0)).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK((back.col(2) - D.col(2)).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK(std::abs(Ds.col(0).dot(Ds.col(2))) <= 1e-12 * n);
}

void response_shift(bool weighted) {
  const int n = 40;
  const FixedMatrix X = design(n, false);
  const FixedVector w = weights(n);
  const double* wp = weighted ? w.data() : nullptr;
  FixedVector y(n);
  for (int i = 0; i < n; ++i) y(i) = 1e6 + 3.0 * X(i, 1) + std::cos(2.0 * i);
  FixedMatrix Xs(n, 2);
  const auto s = mixedfit::scale_fixed_effects(X.data(), n, 2, wp, 1e-7, Xs.data());
  FixedVector ys(n);
  const auto r = mixedfit::shift_response(Xs.data(), s.T.data(), n, 2, y.data(), wp, ys.data());
  // y = X b0 + s ys; the weighted residuals are orthogonal to X (to the rounding of y's
  // size relative to s) and ys has weighted mean square 1
  const FixedVector back = X * r.b0 + r.scale * ys;
  CHECK((back - y).cwiseAbs().maxCoeff() <= 1e-12 * y.cwiseAbs().maxCoeff());
  const FixedVector wr = weighted ? FixedVector(w.cwiseProduct(ys)) : ys;
  const double rounding = 1e-14 * n * X.cwiseAbs().maxCoeff() * r.max_abs_y / r.scale;
  CHECK((X.transpose() * wr).cwiseAbs().maxCoeff() <= rounding);
  CHECK_NEAR(wr.dot(ys) / n, 1.0, 1e-12);
  CHECK(r.max_abs_y == y.cwiseAbs().maxCoeff());
}

void scales() {
  const int n = 20;
  FixedMatrix X(n, 3);
  for (int i = 0; i < n; ++i) {
    X(i, 0) = 1.0;
    X(i, 1) = i % 2;            // an indicator: not judged
    X(i, 2) = std::sin(1.0 * i);
  }
  CHECK(!mixedfit::predictor_scales_differ(X.data(), n, 3, 1e3));
  X.col(2) *= 1e4;  // sd beyond 1e3 from 1
  CHECK(mixedfit::predictor_scales_differ(X.data(), n, 3, 1e3));
  X.col(2) /= 1e4;
  X.col(0).setConstant(7.0);  // a constant non-0/1 column: sd 0
  CHECK(mixedfit::predictor_scales_differ(X.data(), n, 3, 1e3));
}

}  // namespace

int main() {
  scaling(false);
  scaling(true);
  aliasing();
  response_shift(false);
  response_shift(true);
  scales();
  return mixedfit_test::finish("test_fixed_effects");
}
