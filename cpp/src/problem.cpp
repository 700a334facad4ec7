#include "mixedfit/problem.hpp"

#include "mixedfit/dense_chol.hpp"

#include <algorithm>
#include <cmath>

namespace mixedfit {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// In-place lower Cholesky of a small p x p column-major block. Returns false if not PD.
inline bool chol_small(double* M, int p) {
  for (int j = 0; j < p; ++j) {
    double d = M[j + j * p];
    for (int k = 0; k < j; ++k) d -= M[j + k * p] * M[j + k * p];
    if (!(d > 0.0)) return false;
    d = std::sqrt(d);
    M[j + j * p] = d;
    for (int i = j + 1; i < p; ++i) {
      double s = M[i + j * p];
      for (int k = 0; k < j; ++k) s -= M[i + k * p] * M[j + k * p];
      M[i + j * p] = s / d;
    }
  }
  for (int j = 1; j < p; ++j)
    for (int i = 0; i < j; ++i) M[i + j * p] = 0.0;
  return true;
}

// V (r x p, leading dimension r) <- V * lam (lam p x p lower triangular).
inline void right_mult_lower(double* V, Index r, int p, const Matrix& lam) {
  if (p == 1) {
    const double l = lam(0, 0);
    for (Index a = 0; a < r; ++a) V[a] *= l;
    return;
  }
  Eigen::Map<Matrix> Vm(V, r, p);
  Vm = Vm * lam.triangularView<Eigen::Lower>();
}

// V (r x p) <- V * L^{-T} for L (p x p) lower triangular stored column-major at Lp.
inline void right_solve_lower_t(double* V, Index r, int p, const double* Lp) {
  if (p == 1) {
    const double inv = 1.0 / Lp[0];
    for (Index a = 0; a < r; ++a) V[a] *= inv;
    return;
  }
  Eigen::Map<Matrix> Vm(V, r, p);
  Eigen::Map<const Matrix> L(Lp, p, p);
  // Solve X L' = V for X, in place.
  L.transpose().triangularView<Eigen::Upper>().solveInPlace<Eigen::OnTheRight>(Vm);
}

}  // namespace

Problem::Problem(Index n, Index p, const double* X, std::vector<TermData> terms)
    : n_(n), p_(p), X_(X), terms_(std::move(terms)) {
  const int K = static_cast<int>(terms_.size());
  p0_ = terms_[0].p;
  l0_ = terms_[0].nlev;
  q0_ = static_cast<Index>(l0_) * p0_;
  offset_.assign(K, 0);
  mZ_ = 0;
  for (int k = 1; k < K; ++k) {
    offset_[k] = mZ_;
    mZ_ += static_cast<Index>(terms_[k].nlev) * terms_[k].p;
    if (terms_[k].p > 1) rest_scalar_ = false;
  }
  row_term_.resize(mZ_);
  for (int k = 1; k < K; ++k)
    for (Index r = 0; r < static_cast<Index>(terms_[k].nlev) * terms_[k].p; ++r)
      row_term_[offset_[k] + r] = k;
  q_ = q0_ + mZ_;
  m_ = mZ_ + p_ + 1;
  ntheta_ = 0;
  for (const auto& t : terms_) ntheta_ += static_cast<Index>(t.p) * (t.p + 1) / 2;

  // Symbolic analysis of B (rest-Z rows co-occurring with each level of term 0).
  colptr_.assign(l0_ + 1, 0);
  if (K > 1) {
    const std::int32_t* g0 = terms_[0].g;
    std::vector<Index> start(l0_ + 1, 0);
    for (Index i = 0; i < n_; ++i) ++start[g0[i] + 1];
    for (int c = 0; c < l0_; ++c) start[c + 1] += start[c];
    std::vector<Index> order(n_);
    {
      std::vector<Index> fill(start.begin(), start.end() - 1);
      for (Index i = 0; i < n_; ++i) order[fill[g0[i]]++] = i;
    }
    std::vector<Index> stamp(mZ_, -1), posof(mZ_, 0), local;
    obs_pos_.assign(static_cast<size_t>(n_) * (K - 1), 0);
    double sparse_cost = 0.0;
    for (int c = 0; c < l0_; ++c) {
      local.clear();
      for (Index t = start[c]; t < start[c + 1]; ++t) {
        const Index i = order[t];
        for (int k = 1; k < K; ++k) {
          const Index s = offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p;
          if (stamp[s] != c) {
            stamp[s] = c;
            local.push_back(s);
          }
        }
      }
      std::sort(local.begin(), local.end());
      const Index base = static_cast<Index>(rowidx_.size());
      for (Index s : local) {
        posof[s] = static_cast<Index>(rowidx_.size()) - base;
        for (int a = 0; a < terms_[row_term_[s]].p; ++a) rowidx_.push_back(s + a);
      }
      colptr_[c + 1] = static_cast<Index>(rowidx_.size());
      for (Index t = start[c]; t < start[c + 1]; ++t) {
        const Index i = order[t];
        for (int k = 1; k < K; ++k) {
          const Index s = offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p;
          obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)] = posof[s];
        }
      }
      const double rc = static_cast<double>(colptr_[c + 1] - colptr_[c]);
      sparse_cost += rc * rc;
    }
    // Dense storage wins when the scattered sparse downdate would cost more than a dense
    // rank update (which runs several times faster per flop), memory permitting.
    const double dense_cost = static_cast<double>(mZ_) * mZ_ * l0_ / 32.0;
    const double dense_bytes = 8.0 * static_cast<double>(mZ_) * q0_;
    dense_ = dense_cost <= sparse_cost && dense_bytes < 1.0e9;
    if (dense_) {
      // Same layout with every row present: the position of rest row r is r itself.
      for (Index i = 0; i < n_; ++i)
        for (int k = 1; k < K; ++k)
          obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)] =
              offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p;
      for (int c = 0; c <= l0_; ++c) colptr_[c] = static_cast<Index>(c) * mZ_;
      rowidx_.clear();
      rowidx_.shrink_to_fit();
    }
  }
  lambda_.resize(K);
  for (int k = 0; k < K; ++k) lambda_[k] = Matrix::Identity(terms_[k].p, terms_[k].p);
}

Status Problem::set_response(const double* y, const double* w, bool need_ldW) {
  const int K = nterms();
  const Index nb = colptr_[l0_];  // rows stored over all levels
  A11_.setZero(static_cast<Index>(l0_) * p0_ * p0_);
  BZ_.setZero(nb * p0_);
  BX_.setZero(p_ + 1, q0_);
  Arest_.setZero(m_, m_);
  ldW_ = 0.0;
  const TermData& t0 = terms_[0];
  const Index pp1 = p_ + 1;
  double* BX = BX_.data();
  double* AR = Arest_.data();
  const Index ldr = m_;
  // Scalar terms only (the common case): straight-line accumulation per observation.
  const bool scalar = p0_ == 1 && rest_scalar_;
  for (Index i = 0; i < n_; ++i) {
    const double wi = w ? w[i] : 1.0;
    const double yi = y[i];
    // Zero weights are allowed (a GLMM's working weights can underflow); the LMM layer
    // accepts only positive prior weights, so log|W| stays finite there.
    if (!std::isfinite(wi) || !(wi >= 0.0) || !std::isfinite(yi)) return Status::NonFiniteInput;
    if (need_ldW && w && wi > 0.0) ldW_ += std::log(wi);
    const int c = t0.g[i];
    if (scalar) {
      const double wz0 = wi * t0.Z[i];
      A11_[c] += t0.Z[i] * wz0;
      double* bx = BX + static_cast<Index>(c) * pp1;
      for (Index k = 0; k < p_; ++k) bx[k] += X_[i + k * n_] * wz0;
      bx[p_] += yi * wz0;
      if (K > 1) {
        double* vals = BZ_.data() + colptr_[c];
        const Index* op = obs_pos_.data() + static_cast<size_t>(i) * (K - 1);
        for (int k = 1; k < K; ++k) {
          const TermData& tk = terms_[k];
          const double zk = tk.Z[i];
          const double wzk = wi * zk;
          vals[op[k - 1]] += zk * wz0;
          const Index sk = offset_[k] + tk.g[i];
          for (int kk = 1; kk <= k; ++kk) {
            const TermData& tkk = terms_[kk];
            AR[sk + (offset_[kk] + tkk.g[i]) * ldr] += wzk * tkk.Z[i];
          }
          double* col = AR + sk * ldr + mZ_;
          for (Index t = 0; t < p_; ++t) col[t] += X_[i + t * n_] * wzk;
          col[p_] += yi * wzk;
        }
      }
      continue;
    }
    double* blk = A11_.data() + static_cast<Index>(c) * p0_ * p0_;
    for (int b = 0; b < p0_; ++b) {
      const double wzb = wi * t0.Z[i + b * n_];
      for (int a = b; a < p0_; ++a) blk[a + b * p0_] += t0.Z[i + a * n_] * wzb;
      const Index col = static_cast<Index>(c) * p0_ + b;
      for (Index k = 0; k < p_; ++k) BX_(k, col) += X_[i + k * n_] * wzb;
      BX_(p_, col) += yi * wzb;
    }
    if (K > 1) {
      const Index rc = colptr_[c + 1] - colptr_[c];
      double* vals = BZ_.data() + colptr_[c] * p0_;
      for (int k = 1; k < K; ++k) {
        const TermData& tk = terms_[k];
        const Index pos = obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)];
        const Index sk = offset_[k] + static_cast<Index>(tk.g[i]) * tk.p;
        for (int b = 0; b < p0_; ++b) {
          const double wzb = wi * t0.Z[i + b * n_];
          for (int a = 0; a < tk.p; ++a) vals[b * rc + pos + a] += tk.Z[i + a * n_] * wzb;
        }
        // rest ZZ (lower triangle): pairs of rest terms kk <= k
        for (int kk = 1; kk <= k; ++kk) {
          const TermData& tkk = terms_[kk];
          const Index skk = offset_[kk] + static_cast<Index>(tkk.g[i]) * tkk.p;
          for (int a = 0; a < tk.p; ++a) {
            const double wza = wi * tk.Z[i + a * n_];
            const int bmax = (kk == k) ? a : tkk.p - 1;
            for (int b = 0; b <= bmax; ++b) Arest_(sk + a, skk + b) += wza * tkk.Z[i + b * n_];
          }
        }
        // rest XZ and yZ
        for (int a = 0; a < tk.p; ++a) {
          const double wza = wi * tk.Z[i + a * n_];
          for (Index t = 0; t < p_; ++t) Arest_(mZ_ + t, sk + a) += X_[i + t * n_] * wza;
          Arest_(mZ_ + p_, sk + a) += yi * wza;
        }
      }
    }
  }
  // [X y]' W [X y], lower triangle, column by column (no n-sized temporaries).
  for (Index j = 0; j <= p_; ++j) {
    const double* xj = j < p_ ? X_ + j * n_ : y;
    for (Index k = j; k <= p_; ++k) {
      const double* xk = k < p_ ? X_ + k * n_ : y;
      double acc = 0.0;
      if (w) {
        for (Index i = 0; i < n_; ++i) acc += w[i] * xj[i] * xk[i];
      } else {
        for (Index i = 0; i < n_; ++i) acc += xj[i] * xk[i];
      }
      Arest_(mZ_ + k, mZ_ + j) = acc;
    }
  }
  have_A_ = true;
  factored_ = false;
  return Status::Ok;
}

void Problem::fill_lambdas(const double* theta) {
  Index pos = 0;
  for (size_t k = 0; k < terms_.size(); ++k) {
    const int p = terms_[k].p;
    Matrix& lam = lambda_[k];
    lam.setZero(p, p);
    for (int j = 0; j < p; ++j)
      for (int i = j; i < p; ++i) lam(i, j) = theta[pos++];
  }
}

void Problem::scale_rest_lower() {
  if (rest_scalar_) {
    // One pass: R = S A S on the lower triangle (S diagonal), read from A directly.
    scale_.setOnes(m_);
    for (Index r = 0; r < mZ_; ++r) scale_[r] = lambda_[row_term_[r]](0, 0);
    R_.resize(m_, m_);
    for (Index j = 0; j < m_; ++j) {
      const double sj = scale_[j];
      const double* a = Arest_.data() + j * m_;
      double* r = R_.data() + j * m_;
      for (Index i = j; i < m_; ++i) r[i] = a[i] * scale_[i] * sj;
    }
    return;
  }
  // General case: symmetrize, then R <- Lambda_rest' R Lambda_rest block by block.
  R_ = Arest_;
  R_.triangularView<Eigen::StrictlyUpper>() = R_.transpose();
  for (size_t k = 1; k < terms_.size(); ++k) {
    const int pk = terms_[k].p;
    const Matrix& lam = lambda_[k];
    for (int d = 0; d < terms_[k].nlev; ++d) {
      const Index s = offset_[k] + static_cast<Index>(d) * pk;
      R_.middleRows(s, pk) = lam.transpose() * R_.middleRows(s, pk);
    }
  }
  for (size_t k = 1; k < terms_.size(); ++k) {
    const int pk = terms_[k].p;
    const Matrix& lam = lambda_[k];
    for (int d = 0; d < terms_[k].nlev; ++d) {
      const Index s = offset_[k] + static_cast<Index>(d) * pk;
      R_.middleCols(s, pk) = R_.middleCols(s, pk) * lam;
    }
  }
}

Status Problem::factor(const double* theta, bool with_response) {
  if (!have_A_) return Status::NotEvaluated;
  factored_ = false;
  for (Index j = 0; j < ntheta_; ++j)
    if (!std::isfinite(theta[j])) return Status::NonFiniteInput;
  fill_lambdas(theta);
  const int K = nterms();
  const Matrix& lam0 = lambda_[0];
  const Index bs = static_cast<Index>(p0_) * p0_;

  // Term 0: L_c = chol(lam0' A_c lam0 + I), level by level.
  L11_.resize(static_cast<Index>(l0_) * bs);
  if (p0_ == 1) {
    const double l2 = lam0(0, 0) * lam0(0, 0);
    for (int c = 0; c < l0_; ++c) L11_[c] = std::sqrt(l2 * A11_[c] + 1.0);
  } else {
    Matrix M(p0_, p0_);
    for (int c = 0; c < l0_; ++c) {
      Eigen::Map<const Matrix> A(A11_.data() + c * bs, p0_, p0_);
      M = lam0.transpose() * A.selfadjointView<Eigen::Lower>() * lam0;
      M.diagonal().array() += 1.0;
      double* Lc = L11_.data() + c * bs;
      std::copy(M.data(), M.data() + bs, Lc);
      if (!chol_small(Lc, p0_)) return Status::NotPositiveDefinite;
    }
  }

  // B blocks: scale by Lambda on both sides, then solve with L_c' from the right.
  BXt_ = BX_;
  if (p0_ == 1 && rest_scalar_ && K > 1) {
    // Scalar terms only (the common crossed case): one fused pass over B instead of a copy
    // and three scalings; B can be large (levels of term 0 x rest levels).
    const double l0 = lam0(0, 0);
    std::vector<double> rs(mZ_);
    for (Index r = 0; r < mZ_; ++r) rs[r] = lambda_[row_term_[r]](0, 0);
    BZt_.resize(BZ_.size());
    for (int c = 0; c < l0_; ++c) {
      const double f = l0 / L11_[c];
      const Index c0 = colptr_[c], c1 = colptr_[c + 1];
      const double* src = BZ_.data() + c0;
      double* dst = BZt_.data() + c0;
      if (dense_) {
        for (Index a = 0; a < c1 - c0; ++a) dst[a] = src[a] * f * rs[a];
      } else {
        const Index* idx = rowidx_.data() + c0;
        for (Index a = 0; a < c1 - c0; ++a) dst[a] = src[a] * f * rs[idx[a]];
      }
      double* bx = BXt_.data() + static_cast<Index>(c) * (p_ + 1);
      for (Index t = 0; t <= p_; ++t) bx[t] *= f;
    }
  } else {
    BZt_ = BZ_;
    for (int c = 0; c < l0_; ++c) {
      const double* Lc = L11_.data() + c * bs;
      double* bx = BXt_.data() + static_cast<Index>(c) * p0_ * (p_ + 1);
      right_mult_lower(bx, p_ + 1, p0_, lam0);
      right_solve_lower_t(bx, p_ + 1, p0_, Lc);
      if (K > 1) {
        const Index rc = colptr_[c + 1] - colptr_[c];
        double* V = BZt_.data() + colptr_[c] * p0_;
        right_mult_lower(V, rc, p0_, lam0);
        if (rest_scalar_) {
          for (int b = 0; b < p0_; ++b)
            for (Index a = 0; a < rc; ++a) {
              const Index r = dense_ ? a : rowidx_[colptr_[c] + a];
              V[b * rc + a] *= lambda_[row_term_[r]](0, 0);
            }
        } else {
          Eigen::Map<Matrix> Vm(V, rc, p0_);
          Index a = 0;
          while (a < rc) {
            const Index r = dense_ ? a : rowidx_[colptr_[c] + a];
            const int k = row_term_[r];
            const int pk = terms_[k].p;
            Vm.middleRows(a, pk) = lambda_[k].transpose() * Vm.middleRows(a, pk);
            a += pk;
          }
        }
        right_solve_lower_t(V, rc, p0_, Lc);
      }
    }
  }

  // Rest block: Lambda' A Lambda + [I 0], minus B~ B~', then its dense Cholesky.
  scale_rest_lower();  // R = Lambda' A_rest Lambda (lower triangle)
  for (Index r = 0; r < mZ_; ++r) R_(r, r) += 1.0;
  if (K > 1) {
    if (dense_) {
      Eigen::Map<const Matrix> BZ(BZt_.data(), mZ_, q0_);
      R_.topLeftCorner(mZ_, mZ_).selfadjointView<Eigen::Lower>().rankUpdate(BZ, -1.0);
      R_.block(mZ_, 0, p_ + 1, mZ_).noalias() -= BXt_ * BZ.transpose();
    } else {
      for (int c = 0; c < l0_; ++c) {
        const Index c0 = colptr_[c];
        const Index rc = colptr_[c + 1] - c0;
        const Index* idx = rowidx_.data() + c0;
        const double* V = BZt_.data() + c0 * p0_;
        for (int b = 0; b < p0_; ++b) {
          const double* v = V + b * rc;
          const Index col = static_cast<Index>(c) * p0_ + b;
          // Column by column of R (rows idx are sorted, so each column is walked forward).
          for (Index a2 = 0; a2 < rc; ++a2) {
            const double va2 = v[a2];
            double* Rc = R_.data() + idx[a2] * m_;
            for (Index a = a2; a < rc; ++a) Rc[idx[a]] -= v[a] * va2;
            for (Index t = 0; t <= p_; ++t) Rc[mZ_ + t] -= BXt_(t, col) * va2;
          }
        }
      }
    }
  }
  R_.bottomRightCorner(p_ + 1, p_ + 1).selfadjointView<Eigen::Lower>().rankUpdate(BXt_, -1.0);
  {
    // Without the response only the leading [Z X] part is factored: variances need L_ZZ
    // and L_XX, and a response in the span of [Z X] would leave no positive last pivot.
    Eigen::Ref<Matrix> lead = R_.topLeftCorner(with_response ? m_ : m_ - 1,
                                                with_response ? m_ : m_ - 1);
    if (!cholesky_lower(lead, num_threads())) return Status::NotPositiveDefinite;
  }
  // Components from the diagonal.
  double ld = 0.0;
  if (p0_ == 1) {
    for (int c = 0; c < l0_; ++c) ld += std::log(L11_[c]);
  } else {
    for (int c = 0; c < l0_; ++c)
      for (int a = 0; a < p0_; ++a) ld += std::log(L11_[c * bs + a + a * p0_]);
  }
  for (Index r = 0; r < mZ_; ++r) ld += std::log(R_(r, r));
  double ldx = 0.0;
  for (Index r = mZ_; r < mZ_ + p_; ++r) ldx += std::log(R_(r, r));
  const double rr = with_response ? R_(m_ - 1, m_ - 1) : 0.0;
  comp_.ldL2 = 2.0 * ld;
  comp_.ldRX2 = 2.0 * ldx;
  comp_.pwrss = rr * rr;
  comp_.ldW = ldW_;
  comp_.ussq = comp_.wrss = std::nan("");
  if (!std::isfinite(comp_.ldL2) || !std::isfinite(comp_.ldRX2) || !std::isfinite(comp_.pwrss))
    return Status::NotPositiveDefinite;
  factored_ = true;
  return Status::Ok;
}

double Problem::profiled_objective(bool reml) const {
  if (!factored_) return std::nan("");
  const double n = static_cast<double>(n_);
  if (reml) {
    const double nmp = n - static_cast<double>(p_);
    return comp_.ldL2 + comp_.ldRX2 + nmp * (1.0 + std::log(kTwoPi * comp_.pwrss / nmp)) -
           comp_.ldW;
  }
  return comp_.ldL2 + n * (1.0 + std::log(kTwoPi * comp_.pwrss / n)) - comp_.ldW;
}

Status Problem::solve(Vector& beta, Vector& u) {
  if (!factored_) return Status::NotEvaluated;
  const Index mr = mZ_ + p_;
  Vector s = R_.row(m_ - 1).head(mr).transpose();
  R_.topLeftCorner(mr, mr).triangularView<Eigen::Lower>().adjoint().solveInPlace(s);
  beta = s.tail(p_);
  u.resize(q_);
  u.segment(q0_, mZ_) = s.head(mZ_);
  const Index bs = static_cast<Index>(p0_) * p0_;
  Vector rhs(p0_);
  for (int c = 0; c < l0_; ++c) {
    const Index col = static_cast<Index>(c) * p0_;
    for (int b = 0; b < p0_; ++b) {
      double v = BXt_(p_, col + b);
      for (Index t = 0; t < p_; ++t) v -= BXt_(t, col + b) * beta[t];
      rhs[b] = v;
    }
    if (nterms() > 1) {
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
    Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
    Lc.triangularView<Eigen::Lower>().adjoint().solveInPlace(rhs);
    u.segment(col, p0_) = rhs;
  }
  comp_.ussq = u.squaredNorm();
  comp_.wrss = comp_.pwrss - comp_.ussq;
  return Status::Ok;
}

void Problem::lambda_times(const Vector& u, Vector& b) const {
  b.resize(q_);
  Index pos = 0;
  for (size_t k = 0; k < terms_.size(); ++k) {
    const int pk = terms_[k].p;
    for (int d = 0; d < terms_[k].nlev; ++d) {
      b.segment(pos, pk) = lambda_[k].triangularView<Eigen::Lower>() * u.segment(pos, pk);
      pos += pk;
    }
  }
}

Status Problem::unscaled_vcov(Matrix& V) const {
  if (!factored_) return Status::NotEvaluated;
  Matrix Linv = Matrix::Identity(p_, p_);
  R_.block(mZ_, mZ_, p_, p_).triangularView<Eigen::Lower>().solveInPlace(Linv);
  V = Linv.transpose() * Linv;
  return Status::Ok;
}

Status Problem::cond_var(std::vector<Matrix>& out) const {
  if (!factored_) return Status::NotEvaluated;
  const int K = nterms();
  out.assign(K, Matrix());
  const Index bs = static_cast<Index>(p0_) * p0_;
  // Term 0: L_c^{-T} (I + X_c' X_c) L_c^{-1} with X = R_ZZ^{-1} B~_Z, in column chunks.
  out[0].resize(p0_, q0_);
  const auto RZZ = R_.topLeftCorner(mZ_, mZ_).triangularView<Eigen::Lower>();
  const Index chunk_levels =
      K > 1 ? std::max<Index>(1, static_cast<Index>(8.0e6 / (static_cast<double>(mZ_) * p0_)))
            : l0_;
  Matrix D, G(p0_, p0_), Linv(p0_, p0_);
  for (Index c_lo = 0; c_lo < l0_; c_lo += chunk_levels) {
    const Index c_hi = std::min<Index>(l0_, c_lo + chunk_levels);
    if (K > 1) {
      D.setZero(mZ_, (c_hi - c_lo) * p0_);
      for (Index c = c_lo; c < c_hi; ++c) {
        const Index c0 = colptr_[c];
        const Index rc = colptr_[c + 1] - c0;
        const double* V = BZt_.data() + c0 * p0_;
        for (int b = 0; b < p0_; ++b)
          for (Index a = 0; a < rc; ++a) {
            const Index r = dense_ ? a : rowidx_[c0 + a];
            D(r, (c - c_lo) * p0_ + b) = V[b * rc + a];
          }
      }
      RZZ.solveInPlace(D);
    }
    for (Index c = c_lo; c < c_hi; ++c) {
      G.setIdentity();
      if (K > 1) {
        const auto Dc = D.middleCols((c - c_lo) * p0_, p0_);
        G.noalias() += Dc.transpose() * Dc;
      }
      Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
      Linv.setIdentity();
      Lc.triangularView<Eigen::Lower>().solveInPlace(Linv);
      const Matrix C = Linv.transpose() * G * Linv;
      const Matrix& lam = lambda_[0];
      out[0].middleCols(c * p0_, p0_) = lam * C * lam.transpose();
    }
  }
  if (K > 1) {
    Matrix Rinv = Matrix::Identity(mZ_, mZ_);
    RZZ.solveInPlace(Rinv);
    for (int k = 1; k < K; ++k) {
      const int pk = terms_[k].p;
      out[k].resize(pk, static_cast<Index>(terms_[k].nlev) * pk);
      for (int d = 0; d < terms_[k].nlev; ++d) {
        const Index s = offset_[k] + static_cast<Index>(d) * pk;
        const auto Bk = Rinv.block(s, s, mZ_ - s, pk);
        const Matrix C = Bk.transpose() * Bk;
        out[k].middleCols(static_cast<Index>(d) * pk, pk) =
            lambda_[k] * C * lambda_[k].transpose();
      }
    }
  }
  return Status::Ok;
}

void Problem::linear_predictor(const double* beta, const double* b, double* eta) const {
  Eigen::Map<Vector> e(eta, n_);
  if (p_ > 0)
    e.noalias() = Eigen::Map<const Matrix>(X_, n_, p_) * Eigen::Map<const Vector>(beta, p_);
  else
    e.setZero();
  Index pos = 0;
  for (const auto& t : terms_) {
    const double* bk = b + pos;
    for (int a = 0; a < t.p; ++a) {
      const double* z = t.Z + static_cast<Index>(a) * n_;
      for (Index i = 0; i < n_; ++i) eta[i] += z[i] * bk[static_cast<Index>(t.g[i]) * t.p + a];
    }
    pos += static_cast<Index>(t.nlev) * t.p;
  }
}

}  // namespace mixedfit
