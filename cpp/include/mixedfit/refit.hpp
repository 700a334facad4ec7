// Many refits of one LMM design to new responses (the parametric bootstrap's inner loop).
//
// Each response is fitted by quasi-Newton steps on the profiled objective from a common start
// (the original estimates): the Hessian starts as the caller's (the original fit's, which a
// response simulated from that fit shares up to sampling noise), gradients are exact for a
// one-term model (from A's blocks, one_term_gradient.hpp) and forward differences otherwise
// (their O(h) error moves the optimum by ~1e-5 in theta, far inside the bootstrap's spread),
// and the Hessian is kept current by BFGS updates. A variance that reaches
// 0 stays there while the objective rises into the interior (a singular replicate). A
// replicate that does not settle is flagged for the caller's general optimizer.
#pragma once

#include <vector>

#include "mixedfit/problem.hpp"

namespace mixedfit {

struct RefitSettings {
  bool reml = true;
  double decrement_tol = 1e-9;   // stop when the Newton decrement g' H^-1 g falls below this
  int max_iter = 50;
  double fd_step = 1e-6;         // forward-difference step (relative, floor 1e-6 absolute)
  int threads = 1;
};

// Status of one replicate.
enum class RefitStatus : int { Converged = 0, NeedsGeneralOptimizer = 1, Failed = 2 };

struct RefitBatch {
  Matrix theta;                  // (ntheta, nsim)
  Matrix beta;                   // (p, nsim)
  Vector pwrss;                  // (nsim)
  std::vector<int> status;       // RefitStatus per replicate
  std::vector<int> evaluations;  // objective evaluations per replicate
};

// Y: (n, nsim) column-major responses (offset already removed); w: prior weights or nullptr.
// Every thread builds its own Problem from (n, p, X, terms).
void refit_lmm_batch(Index n, Index p, const double* X, const std::vector<TermData>& terms,
                     const double* Y, Index nsim, const double* w, const Vector& theta0,
                     const Vector& lower, const Matrix& hessian0, const RefitSettings& settings,
                     RefitBatch& out);

}  // namespace mixedfit
