// Many refits of one LMM design to new responses: see refit.hpp.
#include "mixedfit/refit.hpp"

#include "mixedfit/one_term_gradient.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

namespace mixedfit {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The profiled objective of one Problem at theta (infinite where it cannot be evaluated), and
// its gradient. A one-term model evaluates both from A's blocks (one_term_gradient.hpp,
// O(levels), no factorization); other models factor the Problem and take forward differences.
struct Objective {
  Problem& prob;
  bool reml;
  double fd_step;
  int evaluations = 0;
  double operator()(const Vector& theta) {
    ++evaluations;
    double f = kInf;
    if (one_term()) {
      if (one_term_objective_gradient(prob.one_term_blocks(), theta.data(), reml, f, nullptr) !=
          Status::Ok)
        return kInf;
    } else {
      if (prob.factor(theta.data()) != Status::Ok) return kInf;
      f = prob.profiled_objective(reml);
    }
    return std::isfinite(f) ? f : kInf;
  }
  // The gradient at x, where the objective is fx; false if it cannot be evaluated.
  bool gradient(const Vector& x, double fx, Vector& g) {
    if (one_term()) {
      ++evaluations;
      double f = 0.0;
      return one_term_objective_gradient(prob.one_term_blocks(), x.data(), reml, f, &g) ==
                 Status::Ok && g.allFinite();
    }
    return forward_differences(x, fx, g);
  }
  // Leaves the Problem factored at x (for its solution).
  bool factor_at(const Vector& x) { return prob.factor(x.data()) == Status::Ok; }

 private:
  // Forward differences in the free coordinates (an active coordinate sits on its bound; its
  // entry is the one-sided derivative into the interior).
  bool one_term() const { return prob.nterms() == 1; }

  bool forward_differences(const Vector& x, double fx, Vector& g) {
    const Index k = x.size();
    g.resize(k);
    Vector xp = x;
    for (Index i = 0; i < k; ++i) {
      const double h = fd_step * std::max(std::abs(x[i]), 1.0);
      xp[i] = x[i] + h;
      const double fp = (*this)(xp);
      xp[i] = x[i];
      if (!std::isfinite(fp)) return false;
      g[i] = (fp - fx) / h;
    }
    return true;
  }
};

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
// Leaves the Problem factored at the returned theta when it converged.
RefitStatus fit_one(Objective& f, const Vector& theta0, const Vector& lower,
                    const Matrix& hessian0, const RefitSettings& s, Vector& x) {
  const Index k = theta0.size();
  x = theta0;
  Matrix H = hessian0;
  std::vector<bool> active(k, false);
  double fx = f(x);
  Vector g, gn, step;
  if (!std::isfinite(fx) || !f.gradient(x, fx, g))
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
      return f.factor_at(x) ? RefitStatus::Converged : RefitStatus::NeedsGeneralOptimizer;
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
        return f.factor_at(x) ? RefitStatus::Converged : RefitStatus::NeedsGeneralOptimizer;
      }
      return RefitStatus::NeedsGeneralOptimizer;
    }
    if (hit >= 0 && t == t_max) active[hit] = true;
    if (!f.gradient(xn, fn, gn)) return RefitStatus::NeedsGeneralOptimizer;
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
  Objective f{prob, s.reml, s.fd_step};
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
