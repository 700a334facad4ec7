#include "mixedfit/newton.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Eigenvalues>

namespace mixedfit {

bool modified_newton_direction(const Matrix& H, const Vector& g, Vector& p) {
  // Negative curvature (far from the optimum, e.g. at the start of stage 1) is turned
  // positive, so the step is always a descent direction.
  const Eigen::SelfAdjointEigenSolver<Matrix> eig(H);
  if (eig.info() != Eigen::Success) return false;
  Vector lam = eig.eigenvalues();
  const double big = lam.size() ? lam.cwiseAbs().maxCoeff() : 0.0;
  if (!lam.allFinite() || !(big > 0.0)) return false;
  lam = lam.cwiseAbs().cwiseMax(1e-8 * big);
  const Matrix& V = eig.eigenvectors();
  p.noalias() = -(V * ((V.transpose() * g).cwiseQuotient(lam)));
  return true;
}

namespace {

// The starting Hessian: forward differences of the gradient at x (g = gradient there).
Status forward_difference_hessian(const ValueAndGradient& fg, const Vector& x, const Vector& g,
                                  double delta, Matrix& H) {
  const Index k = x.size();
  H.resize(k, k);
  Vector xe = x, ge;
  double fe;
  for (Index j = 0; j < k; ++j) {
    xe[j] = x[j] + delta;
    const Status s = fg(xe, fe, ge);
    if (s != Status::Ok) return s;
    H.col(j) = (ge - g) / delta;
    xe[j] = x[j];
  }
  H = (0.5 * (H + H.transpose())).eval();
  return Status::Ok;
}

// BFGS update of H with the step s and the change of gradient y (skipped without positive
// curvature along s).
void bfgs_update(Matrix& H, const Vector& s, const Vector& y) {
  const double sy = s.dot(y);
  if (!(sy > 0.0)) return;
  const Vector Hs = H * s;
  H.noalias() -= (Hs * Hs.transpose()) / s.dot(Hs);
  H.noalias() += (y * y.transpose()) / sy;
}

}  // namespace

NewtonResult newton_minimize(const ValueAndGradient& fg, const Vector& x0, const Vector& lower,
                             const NewtonControl& control, const Matrix* start_hessian) {
  NewtonResult out;
  out.x = x0;
  out.f = std::nan("");
  Vector g, gn, p, xn;
  double f = 0.0, fn = 0.0;
  auto failed = [&out](NewtonStop why) {
    out.stop = why;
    return out;
  };
  if (fg(x0, f, g) != Status::Ok) return failed(NewtonStop::EvaluationFailed);
  out.nevals = 1;
  out.f = f;
  Matrix H;
  if (start_hessian && start_hessian->rows() == x0.size() && start_hessian->cols() == x0.size()) {
    H = *start_hessian;
  } else {
    if (forward_difference_hessian(fg, x0, g, control.fd_delta, H) != Status::Ok)
      return failed(NewtonStop::EvaluationFailed);
    out.nevals += static_cast<int>(x0.size());
  }
  Vector& x = out.x;
  for (int it = 0; it < control.maxit; ++it) {
    if (!modified_newton_direction(H, g, p)) return failed(NewtonStop::NoCurvature);
    // A step far beyond the start's scale comes from a poor curvature model (the objective
    // is not convex far from its minimum): cap it.
    const double cap = control.max_step * std::max(1.0, x.size() ? x.cwiseAbs().maxCoeff() : 0.0);
    const double pmax = p.size() ? p.cwiseAbs().maxCoeff() : 0.0;
    if (pmax > cap) p *= cap / pmax;
    const double slope = g.dot(p);
    const double dec = -slope;  // Newton decrement squared: ~2 (f - min f)
    if (dec < std::max(1e-9, 1e-13 * std::abs(f))) {
      out.f = f;
      out.stop = NewtonStop::Converged;
      out.hessian = H;
      return out;
    }
    double t = 1.0;
    while (true) {
      xn = x + t * p;
      if ((xn.array() < lower.array()).any()) return failed(NewtonStop::HitBound);
      if (fg(xn, fn, gn) != Status::Ok) return failed(NewtonStop::EvaluationFailed);
      ++out.nevals;
      // Armijo, or (close to the optimum, where f's rounding hides the decrease) a step the
      // quadratic model trusts that does not increase f beyond rounding.
      if (fn <= f + 1e-4 * t * slope ||
          (t == 1.0 && dec < 1e-4 && fn <= f + 1e-9 * std::max(1.0, std::abs(f))))
        break;
      t *= 0.5;
      if (t < 1e-6) return failed(NewtonStop::LineSearchFailed);
    }
    bfgs_update(H, xn - x, gn - g);
    x.swap(xn);
    g.swap(gn);
    f = fn;
    out.f = f;
  }
  return failed(NewtonStop::MaxIterations);
}

Status hessian_from_gradient(const ValueAndGradient& fg, const Vector& x, double delta,
                             Matrix& H) {
  const Index k = x.size();
  H.resize(k, k);
  Vector xe = x, gp, gm;
  double f;
  Status s;
  for (Index j = 0; j < k; ++j) {
    xe[j] = x[j] + delta;
    if ((s = fg(xe, f, gp)) != Status::Ok) return s;
    xe[j] = x[j] - delta;
    if ((s = fg(xe, f, gm)) != Status::Ok) return s;
    xe[j] = x[j];
    H.col(j) = (gp - gm) / (2.0 * delta);
  }
  H = (0.5 * (H + H.transpose())).eval();
  return Status::Ok;
}

}  // namespace mixedfit
