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

namespace {

// leverages() for one term of P columns (P fixed): the selected inverse's level blocks
//   S21_c = -S22 L21_c L_c^{-1} (X rows only, with_x), S11_c = L_c^{-T} (L_c^{-1} - L21_c' S21_c)
// with S22 = (R_XX R_XX')^{-1}, then per observation w = S11_c v + S21_c' x (v = lam' z) and
// h = v'w (without X), T(i, (a, b)) = z_a w_b.
template <int P>
void single_term_leverages(const TermData& t, const double* lam_data, const double* L11,
                           const Matrix& BXt, const Matrix& R, const double* X, Index n, Index px,
                           bool with_h, Vector& h, Matrix& T) {
  using MP = Eigen::Matrix<double, P, P>;
  using VP = Eigen::Matrix<double, P, 1>;
  constexpr Index bs = static_cast<Index>(P) * P;
  const int nlev = t.nlev;
  Matrix S22;
  if (px > 0) {
    Matrix Rinv = Matrix::Identity(px, px);
    R.topLeftCorner(px, px).triangularView<Eigen::Lower>().solveInPlace(Rinv);
    S22.noalias() = Rinv.transpose() * Rinv;
  }
  Vector S11(static_cast<Index>(nlev) * bs);
  Matrix S21(px, static_cast<Index>(nlev) * P);  // X rows, P columns per level
  for (int c = 0; c < nlev; ++c) {
    const Eigen::Map<const MP> Lc(L11 + c * bs);
    MP M = MP::Identity();
    Lc.template triangularView<Eigen::Lower>().solveInPlace(M);  // L_c^{-1}
    if (px > 0) {
      const auto L21 = BXt.block(0, static_cast<Index>(c) * P, px, P);
      double* s21 = S21.data() + static_cast<Index>(c) * P * px;
      Eigen::Map<Matrix>(s21, px, P).noalias() = S22 * L21;
      blocks::right_multiply_lower<P>(s21, px, M.data(), P);  // times L_c^{-1}
      Eigen::Map<Matrix>(s21, px, P) *= -1.0;
      M.noalias() -= L21.transpose() * Eigen::Map<const Matrix>(s21, px, P);
    }
    Lc.template triangularView<Eigen::Lower>().adjoint().solveInPlace(M);
    Eigen::Map<MP>(S11.data() + c * bs) = M;
  }
  const Eigen::Map<const MP> lam(lam_data);
  if (with_h) h.resize(n); else h.resize(0);
  T.setZero(n, P * (P + 1) / 2);
  for (Index i = 0; i < n; ++i) {
    const int c = t.g[i];
    VP z;
    for (int a = 0; a < P; ++a) z[a] = t.Z[i + a * n];
    const VP v = lam.transpose() * z;
    VP w = Eigen::Map<const MP>(S11.data() + c * bs) * v;
    const double* s21 = S21.data() + static_cast<Index>(c) * P * px;
    for (Index k = 0; k < px; ++k) {
      const double xk = X[i + k * n];
      for (int b = 0; b < P; ++b) w[b] += s21[k + b * px] * xk;
    }
    if (with_h) h[i] = v.dot(w);
    Index th = 0;
    for (int b = 0; b < P; ++b)
      for (int a = b; a < P; ++a) T(i, th++) = z[a] * w[b];
  }
}

}  // namespace

Status Problem::leverages_single_term(Vector& h, Matrix& T, bool with_x) const {
  return with_block_size(p0_, [&](auto P) {
    if constexpr (decltype(P)::value != blocks::kDynamicBlock)
      single_term_leverages<decltype(P)::value>(terms_[0], lambda_[0].data(), L11_.data(), BXt_,
                                                R_, X_, n_, with_x ? p_ : 0, !with_x, h, T);
    return Status::Ok;
  });
}

}  // namespace mixedfit
