// The first term's part of Problem::factor and Problem::solve, per theta: each level's small
// block factor, the scaling and solve of its coupling columns B~_c, the log-determinant of
// those factors, and the back substitution for u's first-term part. Everything runs through
// the fixed-size kernels of block_kernels.hpp (block sizes 1..4, dynamic above), without heap
// allocation.
#include "mixedfit/block_kernels.hpp"
#include "mixedfit/problem.hpp"

namespace mixedfit {

namespace {

using blocks::with_block_size;

// L_c = chol(lam' A_c lam + I) for every level c. False if a block is not positive definite.
template <int P>
bool factor_blocks(const double* A11, const double* lam, double* L11, int nlev, int p,
                   double* work) {
  const Index bs = static_cast<Index>(p) * p;
  if (p == 1) {
    // Closed form: sqrt(lam^2 a + 1).
    const double l2 = lam[0] * lam[0];
    for (int c = 0; c < nlev; ++c) L11[c] = std::sqrt(l2 * A11[c] + 1.0);
    return true;
  }
  for (int c = 0; c < nlev; ++c)
    if (!blocks::factor_scaled_block<P>(A11 + c * bs, lam, L11 + c * bs, p, work)) return false;
  return true;
}

// V <- V lam L_c^{-T} for a level's (r x p) block of coupling rows.
template <int P>
inline void scale_and_solve(double* V, Index r, const double* lam, const double* Lc, int p) {
  blocks::right_multiply_lower<P>(V, r, lam, p);
  blocks::right_solve_lower_transpose<P>(V, r, Lc, p);
}

}  // namespace

bool Problem::factor_first_term() {
  const Index bs = static_cast<Index>(p0_) * p0_;
  L11_.resize(static_cast<Index>(l0_) * bs);
  block_work_.resize(bs);
  return with_block_size(p0_, [&](auto P) {
    return factor_blocks<decltype(P)::value>(A11_.data(), lambda_[0].data(), L11_.data(), l0_,
                                             p0_, block_work_.data());
  });
}

void Problem::scale_rest_rows(double* V, Index rc, Index c0) const {
  // Lambda_rest' on the left of a level's coupling rows V (rc x p0): each rest term's
  // rows by its own Lambda_k'.
  if (rest_scalar_) {
    for (int b = 0; b < p0_; ++b)
      for (Index a = 0; a < rc; ++a) {
        const Index r = dense_ ? a : rowidx_[c0 + a];
        V[b * rc + a] *= lambda_[row_term_[r]](0, 0);
      }
    return;
  }
  Eigen::Map<Matrix> Vm(V, rc, p0_);
  Index a = 0;
  while (a < rc) {
    const Index r = dense_ ? a : rowidx_[c0 + a];
    const int k = row_term_[r];
    const int pk = terms_[k].p;
    Vm.middleRows(a, pk) = lambda_[k].transpose() * Vm.middleRows(a, pk);
    a += pk;
  }
}

void Problem::scale_coupling() {
  // B~_c = Lambda_rest' B_c lam0 L_c^{-T} for the [X y] rows and the rest-Z rows of each level.
  const int K = nterms();
  const Index bs = static_cast<Index>(p0_) * p0_;
  const double* lam0 = lambda_[0].data();
  BZt_ = BZ_;
  with_block_size(p0_, [&](auto P) {
    constexpr int kP = decltype(P)::value;
    for (int c = 0; c < l0_; ++c) {
      const double* Lc = L11_.data() + c * bs;
      double* bx = BXt_.data() + static_cast<Index>(c) * p0_ * (p_ + 1);
      scale_and_solve<kP>(bx, p_ + 1, lam0, Lc, p0_);
      if (K == 1) continue;
      const Index c0 = colptr_[c];
      const Index rc = colptr_[c + 1] - c0;
      double* V = BZt_.data() + c0 * p0_;
      blocks::right_multiply_lower<kP>(V, rc, lam0, p0_);
      scale_rest_rows(V, rc, c0);
      blocks::right_solve_lower_transpose<kP>(V, rc, Lc, p0_);
    }
  });
}

double Problem::first_term_logdet() const {
  return with_block_size(p0_, [&](auto P) {
    return blocks::log_diagonal_sum<decltype(P)::value>(L11_.data(), l0_, p0_);
  });
}

void Problem::solve_first_term(const Vector& beta, const Vector& s, Vector& u) {
  // u_c = L_c^{-T} (B~X_c' [-beta; 1] - B~Z_c' s): the first term's part of the back
  // substitution, given beta and the rest part s of the solution.
  const Index bs = static_cast<Index>(p0_) * p0_;
  const bool coupled = nterms() > 1;
  with_block_size(p0_, [&](auto P) {
    constexpr int kP = decltype(P)::value;
    double fixed[kP == blocks::kDynamicBlock ? 1 : kP];
    double* rhs = kP == blocks::kDynamicBlock ? block_work_.data() : fixed;
    for (int c = 0; c < l0_; ++c) {
      const Index col = static_cast<Index>(c) * p0_;
      for (int b = 0; b < p0_; ++b) {
        const double* bx = BXt_.data() + (col + b) * (p_ + 1);
        double v = bx[p_];
        for (Index t = 0; t < p_; ++t) v -= bx[t] * beta[t];
        rhs[b] = v;
      }
      if (coupled) {
        const Index c0 = colptr_[c];
        const Index rc = colptr_[c + 1] - c0;
        const double* V = BZt_.data() + c0 * p0_;
        for (int b = 0; b < p0_; ++b) {
          double v = 0.0;
          for (Index a = 0; a < rc; ++a) {
            const Index r = dense_ ? a : rowidx_[c0 + a];
            v += V[b * rc + a] * s[r];
          }
          rhs[b] -= v;
        }
      }
      blocks::solve_lower_transpose<kP>(L11_.data() + c * bs, rhs, p0_);
      for (int b = 0; b < p0_; ++b) u[col + b] = rhs[b];
    }
  });
}

}  // namespace mixedfit
