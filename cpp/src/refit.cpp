// Many refits of one LMM design to new responses: see refit.hpp.
#include "mixedfit/refit.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

namespace mixedfit {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The profiled objective of one Problem at theta (infinite where it cannot be evaluated).
struct Objective {
  Problem& prob;
  bool reml;
  int evaluations = 0;
  double operator()(const Vector& theta) {
    ++evaluations;
    if (prob.factor(theta.data()) != Status::Ok) return kInf;
    const double f = prob.profiled_objective(reml);
    return std::isfinite(f) ? f : kInf;
  }
};

// Forward-difference gradient in the free coordinates (an active coordinate sits on its
// bound; its entry is the one-sided derivative into the interior).
bool gradient(Objective& f, const Vector& x, double fx, double rel_step, Vector& g) {
  const Index k = x.size();
  g.resize(k);
  Vector xp = x;
  for (Index i = 0; i < k; ++i) {
    const double h = rel_step * std::max(std::abs(x[i]), 1.0);
    xp[i] = x[i] + h;
    const double fp = f(xp);
    xp[i] = x[i];
    if (!std::isfinite(fp)) return false;
    g[i] = (fp - fx) / h;
  }
  return true;
}

// The Newton step on the free coordinates; active ones (on their bound) stay.
bool newton_step(const Matrix& H, const Vector& g, const std::vector<bool>& active, Vector& step) {
  const Index k = g.size();
  std::vector<Index> freeidx;
  for (Index i = 0; i < k; ++i)
    if (!active[i]) freeidx.push_back(i);
  step.setZero(k);
  if (freeidx.empty()) return true;
  const Index m = static_cast<Index>(freeidx.size());
  Matrix Hf(m, m);
  Vector gf(m);
  for (Index a = 0; a < m; ++a) {
    gf[a] = g[freeidx[a]];
    for (Index b = 0; b < m; ++b) Hf(a, b) = H(freeidx[a], freeidx[b]);
  }
  Eigen::LLT<Matrix> llt(Hf);
  if (llt.info() != Eigen::Success) return false;
  const Vector sf = -llt.solve(gf);
  for (Index a = 0; a < m; ++a) step[freeidx[a]] = sf[a];
  return true;
}

// One response: quasi-Newton from theta0 with the Hessian hessian0. A step that would take a
// bounded coordinate (a variance) below its bound stops it on the bound, where it stays
// while the objective increases into the interior (a singular fit, as lme4 reports it).
// Leaves the Problem factored at the returned theta.
RefitStatus fit_one(Objective& f, const Vector& theta0, const Vector& lower,
                    const Matrix& hessian0, const RefitSettings& s, Vector& x) {
  const Index k = theta0.size();
  x = theta0;
  Matrix H = hessian0;
  std::vector<bool> active(k, false);
  double fx = f(x);
  Vector g, gn, step;
  if (!std::isfinite(fx) || !gradient(f, x, fx, s.fd_step, g))
    return RefitStatus::NeedsGeneralOptimizer;
  for (int it = 0; it < s.max_iter; ++it) {
    // Release an active coordinate whose one-sided derivative points into the interior.
    for (Index i = 0; i < k; ++i)
      if (active[i] && g[i] < 0) active[i] = false;
    if (!newton_step(H, g, active, step)) return RefitStatus::NeedsGeneralOptimizer;
    // Stop on the bound any coordinate the full step would take across it.
    double t_max = 1.0;
    Index hit = -1;
    for (Index i = 0; i < k; ++i) {
      if (active[i] || step[i] >= 0 || !std::isfinite(lower[i])) continue;
      const double t_i = (lower[i] - x[i]) / step[i];
      if (t_i < t_max) { t_max = t_i; hit = i; }
    }
    double decrement = 0;
    for (Index i = 0; i < k; ++i) decrement -= g[i] * step[i];
    if (!(decrement >= 0)) return RefitStatus::NeedsGeneralOptimizer;
    if (hit < 0 && decrement < s.decrement_tol * std::max(1.0, std::abs(fx))) {
      f(x);  // leave the factor at x
      return RefitStatus::Converged;
    }
    double t = t_max, fn = kInf;
    Vector xn;
    for (int half = 0; half < 30; ++half, t *= 0.5) {
      xn = x + t * step;
      if (hit >= 0 && t == t_max) xn[hit] = lower[hit];
      fn = f(xn);
      if (fn <= fx - 1e-4 * t * decrement) break;
      fn = kInf;
    }
    if (!std::isfinite(fn)) {
      // Rounding near the optimum: no measurable decrease along a tiny step means done.
      if (decrement < 1e-6 * std::max(1.0, std::abs(fx))) {
        f(x);
        return RefitStatus::Converged;
      }
      return RefitStatus::NeedsGeneralOptimizer;
    }
    if (hit >= 0 && t == t_max) active[hit] = true;
    if (!gradient(f, xn, fn, s.fd_step, gn)) return RefitStatus::NeedsGeneralOptimizer;
    const Vector sv = xn - x, yv = gn - g;
    const double sy = sv.dot(yv);
    if (sy > 1e-12 * sv.norm() * yv.norm()) {
      const Vector Hs = H * sv;
      H += yv * yv.transpose() / sy - Hs * Hs.transpose() / sv.dot(Hs);
    }
    x = xn;
    fx = fn;
    g = gn;
  }
  return RefitStatus::NeedsGeneralOptimizer;
}

void run_range(Index n, Index p, const double* X, const std::vector<TermData>& terms,
               const double* Y, const double* w, Index begin, Index end, const Vector& theta0,
               const Vector& lower, const Matrix& hessian0, const RefitSettings& s,
               RefitBatch& out) {
  Problem prob(n, p, X, terms);
  Objective f{prob, s.reml};
  Vector x, beta, u;
  for (Index r = begin; r < end; ++r) {
    f.evaluations = 0;
    RefitStatus st = RefitStatus::Failed;
    if (prob.set_response(Y + r * n, w) == Status::Ok) {
      st = fit_one(f, theta0, lower, hessian0, s, x);
      if (st == RefitStatus::Converged) {
        if (prob.solve(beta, u) == Status::Ok) {
          out.theta.col(r) = x;
          out.beta.col(r) = beta;
          out.pwrss[r] = prob.components().pwrss;
        } else {
          st = RefitStatus::Failed;
        }
      }
    }
    out.status[r] = static_cast<int>(st);
    out.evaluations[r] = f.evaluations;
  }
}

}  // namespace

void refit_lmm_batch(Index n, Index p, const double* X, const std::vector<TermData>& terms,
                     const double* Y, Index nsim, const double* w, const Vector& theta0,
                     const Vector& lower, const Matrix& hessian0, const RefitSettings& settings,
                     RefitBatch& out) {
  const Index k = theta0.size();
  out.theta.setConstant(k, nsim, std::numeric_limits<double>::quiet_NaN());
  out.beta.setConstant(p, nsim, std::numeric_limits<double>::quiet_NaN());
  out.pwrss.setConstant(nsim, std::numeric_limits<double>::quiet_NaN());
  out.status.assign(nsim, static_cast<int>(RefitStatus::Failed));
  out.evaluations.assign(nsim, 0);
  const int threads = static_cast<int>(std::max<Index>(1, std::min<Index>(settings.threads, nsim)));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    const Index begin = nsim * t / threads, end = nsim * (t + 1) / threads;
    pool.emplace_back(run_range, n, p, X, std::cref(terms), Y, w, begin, end, std::cref(theta0),
                      std::cref(lower), std::cref(hessian0), std::cref(settings), std::ref(out));
  }
  for (auto& th : pool) th.join();
}

}  // namespace mixedfit
