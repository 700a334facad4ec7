// The profiled criterion of a model with ONE random-effects term and its exact gradient in
// theta, from the per-level blocks of A alone: O(levels * p_0^3 + levels * p_0^2 * (p+1)^2)
// per call, independent of the number of observations.
//
// With the term's levels c, A_c = Z_c' W Z_c (p_0 x p_0), B_c = [X y]_c' W Z_c ((p+1) x p_0)
// and D = [X y]' W [X y], at Lambda (p_0 x p_0, lower triangular):
//   M_c = Lambda' A_c Lambda + I,  K_c = Lambda M_c^{-1} Lambda',
//   S   = D - sum_c B_c K_c B_c'   (the [X y] block after eliminating u),
//   log|L|^2 = sum_c log|M_c|,  log|RX|^2 = log|S_xx|,  pwrss = S_yy - S_yx S_xx^{-1} S_xy.
// For theta_k, the entry (i, j) of Lambda, with E = e_i e_j' and G_c = M_c^{-1} Lambda':
//   d log|M_c| = 2 (G_c A_c)_{j i},
//   d K_c = N_c + N_c',  N_c = (I - K_c A_c) E G_c,
//   so d S = -(Q_ij + Q_ij'),  Q_ij = sum_c U_c e_i e_j' V_c',  U_c = B_c (I - K_c A_c),
//   V_c = B_c G_c'; then with w = (-beta, 1), d pwrss = w' dS w and
//   d log|S_xx| = tr(S_xx^{-1} dS_xx).
#pragma once

#include "mixedfit/problem.hpp"

namespace mixedfit {

// The blocks of A for a one-term model (views into a Problem's storage; see
// Problem::one_term_blocks).
struct OneTermBlocks {
  int P = 0;                   // columns of the term (p_0)
  Index levels = 0;
  Index p = 0;                 // fixed-effect columns
  Index n = 0;                 // observations
  double ldW = 0.0;            // sum of log prior weights
  const double* A11 = nullptr; // levels blocks P x P, column-major, lower triangles valid
  const Matrix* BX = nullptr;  // (p+1) x (levels * P): [X y]' W Z
  const Matrix* D = nullptr;   // (p+1) x (p+1), lower triangle valid: [X y]' W [X y]
};

// The profiled criterion (REML or ML, as Problem::profiled_objective) at theta and, unless
// grad is null, its gradient (ntheta = P (P + 1) / 2 entries, theta's order).
// NotPositiveDefinite when S_xx or the residual sum of squares is not positive; BadDimension
// when blocks hold no model (P = 0).
Status one_term_objective_gradient(const OneTermBlocks& blocks, const double* theta, bool reml,
                                   double& objective, Vector* grad);

}  // namespace mixedfit
