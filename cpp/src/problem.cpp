#include "mixedfit/problem.hpp"
#include "mixedfit/row_order.hpp"

#include "mixedfit/block_kernels.hpp"
#include "mixedfit/dense_chol.hpp"
#include "mixedfit/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

namespace mixedfit {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Inverse of a lower-triangular matrix, by block columns: column block j of L^{-1} solves
// L[j:, j:] X = [I; 0], so the solves cost n^3 / 3 in all (a solve against the full
// identity would cost n^3).
// The block columns are independent: with more than one thread (num_threads()) and a large
// matrix, a second thread takes about half of the work (block j costs (n - j0)^2 jb).
void lower_tri_inverse(const Eigen::Ref<const Matrix>& L, Matrix& Linv) {
  const Index n = L.rows();
  Linv.setZero(n, n);
  const Index nb = 128;
  auto solve_block = [&](Index j0) {
    const Index jb = std::min(nb, n - j0);
    auto X = Linv.block(j0, j0, n - j0, jb);
    X.topRows(jb).setIdentity();
    L.bottomRightCorner(n - j0, n - j0).triangularView<Eigen::Lower>().solveInPlace(X);
  };
  std::vector<Index> starts;
  for (Index j0 = 0; j0 < n; j0 += nb) starts.push_back(j0);
  if (num_threads() < 2 || n < 384) {
    for (Index j0 : starts) solve_block(j0);
    return;
  }
  // Greedy split by cost, largest first: the costs fall with j0.
  std::vector<Index> mine, theirs;
  double a = 0.0, b = 0.0;
  for (Index j0 : starts) {
    const double cost = static_cast<double>(n - j0) * static_cast<double>(n - j0);
    if (a <= b) { mine.push_back(j0); a += cost; } else { theirs.push_back(j0); b += cost; }
  }
  run_pair([&]() { for (Index j0 : theirs) solve_block(j0); },
           [&]() { for (Index j0 : mine) solve_block(j0); });
}

// f(lo, hi) over [0, n): on the calling thread alone, or in two halves with one more thread
// when `parallel`; the sum of the results.
template <typename F>
double split_sum(bool parallel, Index n, F f) {
  if (!parallel) return f(Index{0}, n);
  const Index h = n / 2;
  double other = 0.0;
  double mine = 0.0;
  run_pair([&]() { other = f(h, n); }, [&]() { mine = f(Index{0}, h); });
  return mine + other;
}

}  // namespace

Problem::Problem(Index n, Index p, const double* X, std::vector<TermData> terms)
    : n_(n), p_(p), p_all_(p), X_(X), terms_(std::move(terms)) {
  init_layout();
  colptr_.assign(l0_ + 1, 0);
  if (nterms() > 1) analyze_coupling();
  choose_rest_storage();
}

void Problem::analyze_coupling() {
  const int K = nterms();
  const LevelRows rows = rows_by_level(terms_[0].g, l0_, n_);
  // Pass 1, level by level: the rest-Z rows co-occurring with it (stamp marks the level that
  // saw a row last), their pattern and the cost of the sparse downdate.
  std::vector<Index> stamp(mZ_, -1), local;
  double sparse_cost = 0.0;
  for (int c = 0; c < l0_; ++c) {
    local.clear();
    for (Index t = rows.start[c]; t < rows.start[c + 1]; ++t) {
      const Index i = rows.order[t];
      for (int k = 1; k < K; ++k) {
        const Index s = offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p;
        if (stamp[s] != c) {
          stamp[s] = c;
          local.push_back(s);
        }
      }
    }
    // Sorted: by a scan of the stamps when the level sees a good part of the rows.
    if (static_cast<Index>(local.size()) * 16 > mZ_) {
      local.clear();
      for (Index s = 0; s < mZ_; ++s)
        if (stamp[s] == c) local.push_back(s);
    } else {
      std::sort(local.begin(), local.end());
    }
    sparse_cost += append_level_pattern(c, local);
  }
  obs_pos_.resize(static_cast<size_t>(n_) * (K - 1));
  if (use_dense_coupling_if_cheaper(sparse_cost)) {
    // Same layout with every row present: the position of rest row r is r itself.
    for (Index i = 0; i < n_; ++i)
      for (int k = 1; k < K; ++k)
        obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)] =
            offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p;
    return;
  }
  // Pass 2 (sparse only): each observation's positions in its level's column.
  std::vector<Index> posof(mZ_, 0);
  for (int c = 0; c < l0_; ++c) {
    const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
    for (Index a = 0; a < rc; a += terms_[row_term_[rowidx_[c0 + a]]].p) posof[rowidx_[c0 + a]] = a;
    for (Index t = rows.start[c]; t < rows.start[c + 1]; ++t) {
      const Index i = rows.order[t];
      for (int k = 1; k < K; ++k)
        obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)] =
            posof[offset_[k] + static_cast<Index>(terms_[k].g[i]) * terms_[k].p];
    }
  }
}

double Problem::append_level_pattern(int c, const std::vector<Index>& starts) {
  for (Index s : starts)
    for (int a = 0; a < terms_[row_term_[s]].p; ++a) rowidx_.push_back(s + a);
  colptr_[c + 1] = static_cast<Index>(rowidx_.size());
  const double rc = static_cast<double>(colptr_[c + 1] - colptr_[c]);
  return rc * rc;
}

bool Problem::use_dense_coupling_if_cheaper(double sparse_cost) {
  // Dense storage wins when the scattered sparse downdate would cost more than a dense
  // rank update, memory permitting. Measured per flop, the dense update runs ~10-13x
  // faster (crossed 5,000 x 500 levels, 10^6 rows: dense 41 ms, sparse 45 ms per
  // factorization; 2,000 x 500, 2 x 10^5 rows: dense 18 ms, sparse 7.6 ms).
  dense_ = prefer_dense_coupling(sparse_cost);
  if (dense_) {
    for (int c = 0; c <= l0_; ++c) colptr_[c] = static_cast<Index>(c) * mZ_;
    rowidx_.clear();
    rowidx_.shrink_to_fit();
  }
  return dense_;
}

void Problem::include_fixed_effects(bool on) {
  const Index p = on ? p_all_ : 0;
  if (p == p_) return;
  p_ = p;
  m_ = mZ_ + p_ + 1;
  if (sparse_rest_) sparse_rest_->set_nxy(p_ + 1);
  have_A_ = false;
  factored_ = false;
}

Problem::PaddedRows& Problem::padded_rows_for_pass() {
  PaddedRows& rows = p_ == p_all_ ? rows_with_x_ : rows_without_x_;
  rows.width = p_ + 1 <= 4 ? 4 : (p_ + 1 <= 8 ? 8 : (p_ + 1 <= 16 ? 16 : 0));
  if (rows.passes < 2) ++rows.passes;
  if (rows.passes == 2 && rows.width > 0 && rows.values.size() == 0) {
    rows.values.setZero(static_cast<Index>(rows.width) * n_);
    for (Index i = 0; i < n_; ++i)
      for (Index t = 0; t < p_; ++t) rows.values[i * rows.width + t] = X_[i + t * n_];
  }
  return rows;
}

void Problem::init_layout() {
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
  lambda_.resize(K);
  for (int k = 0; k < K; ++k) lambda_[k] = Matrix::Identity(terms_[k].p, terms_[k].p);
}

bool Problem::prefer_dense_coupling(double sparse_cost) const {
  const double dense_cost = static_cast<double>(mZ_) * mZ_ * l0_ / 10.0;
  const double dense_bytes = 8.0 * static_cast<double>(mZ_) * q0_;
  return dense_cost <= sparse_cost && dense_bytes < 1.0e9 &&
         rest_storage() != RestStorage::Sparse;
}

namespace {

// Observation i's [x_i y_i] padded with zeros to width S: from a row-major copy (one vector
// load) or from X's columns and y.
template <int S>
struct PaddedRowSource {
  const double* rows;
  Eigen::Matrix<double, S, 1> row(Index i) const {
    return Eigen::Map<const Eigen::Matrix<double, S, 1>>(rows + i * S);
  }
};
template <int S>
struct ColumnSource {
  const double* X;
  const double* y;
  Index n, p;
  Eigen::Matrix<double, S, 1> row(Index i) const {
    Eigen::Matrix<double, S, 1> v = Eigen::Matrix<double, S, 1>::Zero();
    for (Index t = 0; t < p; ++t) v[t] = X[i + t * n];
    v[p] = y[i];
    return v;
  }
};

// One pass over the observations when every rest term is scalar: A11, B, the rest block's Z
// rows and [X y]' W [X y], with each observation's [x_i y_i] as one padded row of width S
// (from `rows`, a source above) and the first term's P0 columns (Z0, column-major) as one
// fixed-size vector.
template <int P0, int S, typename Rows>
void accumulate_rows(Index n, Index p, int K, const Rows& rows,
                     const double* __restrict w, const std::int32_t* __restrict g0,
                     const double* __restrict Z0, const std::vector<const std::int32_t*>& gk,
                     const std::vector<const double*>& zk, const std::vector<Index>& ok,
                     const Index* __restrict cp, const Index* __restrict op,
                     double* __restrict A11, double* __restrict BX, double* __restrict BZ,
                     double* __restrict AR, Index ldr, Index mZ) {
  const Index pp1 = p + 1;
  const int Km1 = K - 1;
  using Row = Eigen::Matrix<double, S, 1>;
  using Zrow = Eigen::Matrix<double, P0, 1>;
  Eigen::Matrix<double, S, S> acc = Eigen::Matrix<double, S, S>::Zero();
  // Sums over runs of equal levels stay in registers and are stored when the level changes:
  // data sorted by a grouping factor would otherwise chain every update through memory.
  int cur_c = -1;
  Eigen::Matrix<double, P0, P0> a11 = Eigen::Matrix<double, P0, P0>::Zero();
  Eigen::Matrix<double, S, P0> bxacc = Eigen::Matrix<double, S, P0>::Zero();
  auto flush_c = [&]() {
    if (cur_c < 0) return;
    double* __restrict blk = A11 + static_cast<Index>(cur_c) * P0 * P0;
    for (int b = 0; b < P0; ++b)
      for (int a = b; a < P0; ++a) blk[a + b * P0] += a11(a, b);
    for (int b = 0; b < P0; ++b) {
      double* __restrict bx = BX + (static_cast<Index>(cur_c) * P0 + b) * pp1;
      for (Index t = 0; t < pp1; ++t) bx[t] += bxacc(t, b);
    }
  };
  Index cur_s = -1;  // K == 2: the rest term's row
  double rr = 0.0;
  Row colacc = Row::Zero();
  auto flush_s = [&]() {
    if (cur_s < 0) return;
    AR[cur_s + cur_s * ldr] += rr;
    double* __restrict col = AR + cur_s * ldr + mZ;
    for (Index t = 0; t < pp1; ++t) col[t] += colacc[t];
  };
  for (Index i = 0; i < n; ++i) {
    const Row vv = rows.row(i);
    const double wi = w ? w[i] : 1.0;
    const int c = g0[i];
    Zrow z0;
    for (int b = 0; b < P0; ++b) z0[b] = Z0[i + b * n];
    const Zrow wz0 = wi * z0;
    if (c != cur_c) {
      flush_c();
      cur_c = c;
      a11.setZero();
      bxacc.setZero();
    }
    a11.noalias() += z0 * wz0.transpose();
    bxacc.noalias() += vv * wz0.transpose();
    {
      // Column u of the outer product is (wi v) v_u: vectorized down the columns.
      const Row wv = wi * vv;
      for (int u = 0; u < S; ++u) acc.col(u) += wv * vv[u];
    }
    if (Km1 == 0) continue;
    const Index rc = cp[c + 1] - cp[c];
    double* __restrict vals = BZ + cp[c] * P0;
    const Index* __restrict opi = op + static_cast<size_t>(i) * Km1;
    if (Km1 == 1) {
      const double zki = zk[1][i];
      const double wz = wi * zki;
      for (int b = 0; b < P0; ++b) vals[b * rc + opi[0]] += zki * wz0[b];
      const Index s1 = ok[1] + gk[1][i];
      if (s1 != cur_s) {
        flush_s();
        cur_s = s1;
        rr = 0.0;
        colacc.setZero();
      }
      rr += wz * zki;
      colacc += wz * vv;
      continue;
    }
    for (int k = 1; k < K; ++k) {
      const double zki = zk[k][i];
      const double wz = wi * zki;
      for (int b = 0; b < P0; ++b) vals[b * rc + opi[k - 1]] += zki * wz0[b];
      const Index s1 = ok[k] + gk[k][i];
      for (int kk = 1; kk <= k; ++kk) AR[s1 + (ok[kk] + gk[kk][i]) * ldr] += wz * zk[kk][i];
      double* __restrict col = AR + s1 * ldr + mZ;
      for (Index t = 0; t < pp1; ++t) col[t] += vv[t] * wz;
    }
  }
  flush_c();
  flush_s();
  for (Index j = 0; j < pp1; ++j)
    for (Index k = j; k < pp1; ++k) AR[(mZ + k) + (mZ + j) * ldr] = acc(k, j);
}

}  // namespace

Status Problem::set_response(const double* y, const double* w, bool need_ldW) {
  if (!has_rows_) return Status::NoRows;
  if (build_status_ != Status::Ok) return build_status_;
  const int K = nterms();
  const Index nb = colptr_[l0_];  // rows stored over all levels
  // Validate in one vectorized pass. Zero weights are allowed (a GLMM's working weights can
  // underflow); the LMM layer accepts only positive prior weights, so log|W| stays finite.
  {
    const Eigen::Map<const Vector> yv(y, n_);
    if (!all_finite(yv)) return Status::NonFiniteInput;
    ldW_ = 0.0;
    if (w) {
      const Eigen::Map<const Vector> wv(w, n_);
      if (!all_finite(wv) || (n_ > 0 && !(wv.minCoeff() >= 0.0))) return Status::NonFiniteInput;
      if (need_ldW) ldW_ = (wv.array() > 0.0).select(wv.array().log(), 0.0).sum();
    }
  }
  y_ = y;
  w_ = w;
  if (sparse_rest_) return set_response_sparse_rest(y, w);
  A11_.setZero(static_cast<Index>(l0_) * p0_ * p0_);
  BZ_.setZero(nb * p0_);
  BX_.setZero(p_ + 1, q0_);
  Arest_.setZero(m_, m_);
  const TermData& t0 = terms_[0];
  bool xy_done = false;
  PaddedRows& rows = padded_rows_for_pass();
  if (p0_ <= blocks::kMaxFixedBlock && rest_scalar_ && rows.width > 0) {
    const Index S = rows.width;
    const bool copied = rows.passes > 1;
    double* xr = rows.values.data();
    if (copied)
      for (Index i = 0; i < n_; ++i) xr[i * S + p_] = y[i];
    std::vector<const std::int32_t*> gk(K);
    std::vector<const double*> zk(K);
    std::vector<Index> ok(K);
    for (int k = 1; k < K; ++k) {
      gk[k] = terms_[k].g;
      zk[k] = terms_[k].Z;
      ok[k] = offset_[k];
    }
    auto run = [&](auto p0, auto width) {
      constexpr int P0 = decltype(p0)::value, W = decltype(width)::value;
      auto accumulate = [&](const auto& source) {
        accumulate_rows<P0, W>(n_, p_, K, source, w, t0.g, t0.Z, gk, zk, ok, colptr_.data(),
                               obs_pos_.data(), A11_.data(), BX_.data(), BZ_.data(),
                               Arest_.data(), m_, mZ_);
      };
      if (copied)
        accumulate(PaddedRowSource<W>{xr});
      else
        accumulate(ColumnSource<W>{X_, y, n_, p_});
    };
    blocks::with_block_size(p0_, [&](auto p0) {
      if constexpr (decltype(p0)::value != blocks::kDynamicBlock) {
        if (S == 4) run(p0, std::integral_constant<int, 4>());
        else if (S == 8) run(p0, std::integral_constant<int, 8>());
        else run(p0, std::integral_constant<int, 16>());
      }
    });
    xy_done = true;
  } else {
    // Vector-valued rest terms, a first term of more than 4 columns, or more than 15
    // fixed-effect columns: per observation, term by term.
    for (Index i = 0; i < n_; ++i) {
      const double wi = w ? w[i] : 1.0;
      const double yi = y[i];
      const int c = t0.g[i];
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
  }
  // [X y]' W [X y], lower triangle, by vectorized dot products of columns (unless the
  // one-pass accumulation above already formed it).
  if (!xy_done) {
    const Eigen::Map<const Vector> yv(y, n_);
    Vector wcol(n_);
    for (Index j = 0; j <= p_; ++j) {
      const Eigen::Map<const Vector> xj(j < p_ ? X_ + j * n_ : y, n_);
      if (w) wcol = Eigen::Map<const Vector>(w, n_).cwiseProduct(xj); else wcol = xj;
      for (Index k = j; k <= p_; ++k) {
        const Eigen::Map<const Vector> xk(k < p_ ? X_ + k * n_ : y, n_);
        Arest_(mZ_ + k, mZ_ + j) = wcol.dot(xk);
      }
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

  // Term 0: L_c = chol(lam0' A_c lam0 + I), level by level.
  if (!factor_first_term()) return Status::NotPositiveDefinite;

  // B blocks: scale by Lambda on both sides, then solve with L_c' from the right.
  BXt_ = BX_;
  if (p0_ == 1 && rest_scalar_ && K > 1) {
    // Scalar terms only (the common crossed case): one fused pass over B instead of a copy
    // and three scalings; B can be large (levels of term 0 x rest levels).
    const double l0 = lam0(0, 0);
    Vector& rs = rest_lambda_;
    rs.resize(mZ_);
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
    scale_coupling();
  }

  if (sparse_rest_) return factor_sparse_rest(with_response);
  // Rest block: Lambda' A Lambda + [I 0], minus B~ B~', then its dense Cholesky.
  scale_rest_lower();  // R = Lambda' A_rest Lambda (lower triangle)
  for (Index r = 0; r < mZ_; ++r) R_(r, r) += 1.0;
  if (K > 1) {
    if (dense_) {
      Eigen::Map<const Matrix> BZ(BZt_.data(), mZ_, q0_);
      const double flops = static_cast<double>(mZ_) * mZ_ * q0_;
      if (num_threads() >= 2 && flops > 5.0e7) {
        // Two threads, each over half of term 0's levels (the update's inner dimension).
        const Index h = q0_ / 2;
        Matrix S2 = Matrix::Zero(mZ_, mZ_);
        run_pair(
            [&]() { S2.selfadjointView<Eigen::Lower>().rankUpdate(BZ.rightCols(q0_ - h), 1.0); },
            [&]() {
              R_.topLeftCorner(mZ_, mZ_).selfadjointView<Eigen::Lower>().rankUpdate(
                  BZ.leftCols(h), -1.0);
            });
        R_.topLeftCorner(mZ_, mZ_).triangularView<Eigen::Lower>() -= S2;
      } else {
        R_.topLeftCorner(mZ_, mZ_).selfadjointView<Eigen::Lower>().rankUpdate(BZ, -1.0);
      }
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
  double ld = first_term_logdet();
  for (Index r = 0; r < mZ_; ++r) ld += std::log(R_(r, r));
  double ldx = 0.0;
  for (Index r = mZ_; r < mZ_ + p_; ++r) ldx += std::log(R_(r, r));
  return set_components(ld, ldx, with_response ? R_(m_ - 1, m_ - 1) : 0.0);
}

Status Problem::set_components(double logdet_zz, double logdet_xx, double r_yy) {
  comp_.ldL2 = 2.0 * logdet_zz;
  comp_.ldRX2 = 2.0 * logdet_xx;
  comp_.pwrss = r_yy * r_yy;
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
  Vector s;
  if (sparse_rest_) {
    sparse_rest_->solution(s);
  } else {
    s = R_.row(m_ - 1).head(mr).transpose();
    R_.topLeftCorner(mr, mr).triangularView<Eigen::Lower>().adjoint().solveInPlace(s);
  }
  beta = s.tail(p_);
  u.resize(q_);
  u.segment(q0_, mZ_) = s.head(mZ_);
  solve_first_term(beta, s, u);
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
  if (sparse_rest_)
    sparse_rest_->schur_factor().topLeftCorner(p_, p_).triangularView<Eigen::Lower>().solveInPlace(Linv);
  else
    R_.block(mZ_, mZ_, p_, p_).triangularView<Eigen::Lower>().solveInPlace(Linv);
  V = Linv.transpose() * Linv;
  return Status::Ok;
}

Status Problem::cond_var(std::vector<Matrix>& out) const {
  if (!factored_) return Status::NotEvaluated;
  if (sparse_rest_) return cond_var_sparse_rest(out);
  const int K = nterms();
  out.assign(K, Matrix());
  const Index bs = static_cast<Index>(p0_) * p0_;
  // With R_ZZ^{-1} (block columns, n^3/3):
  //   term 0, level c: L_c^{-T} (I + D_c' D_c) L_c^{-1}, D_c = R_ZZ^{-1} B~_c (B~_c sparse);
  //   rest level blocks: B' B with B the block's columns of R_ZZ^{-1} (rows from the block on).
  Matrix Rinv;
  if (K > 1) lower_tri_inverse(R_.topLeftCorner(mZ_, mZ_), Rinv);
  out[0].resize(p0_, q0_);
  Matrix Dall;
  if (K > 1 && dense_)
    Dall = Rinv.triangularView<Eigen::Lower>() *
           Eigen::Map<const Matrix>(BZt_.data(), mZ_, q0_);
  Matrix D(mZ_, p0_), G(p0_, p0_);
  Vector work(2 * bs);
  for (Index c = 0; c < l0_; ++c) {
    G.setIdentity();
    if (K > 1) {
      if (dense_) {
        const auto Dc = Dall.middleCols(c * p0_, p0_);
        G.noalias() += Dc.transpose() * Dc;
      } else {
        D.setZero();
        const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
        Index lo = mZ_;
        const double* V = BZt_.data() + c0 * p0_;
        for (Index a = 0; a < rc; ++a) {
          const Index r = rowidx_[c0 + a];
          lo = std::min(lo, r);
          for (int b = 0; b < p0_; ++b)
            D.col(b).tail(mZ_ - r).noalias() += Rinv.col(r).tail(mZ_ - r) * V[b * rc + a];
        }
        const auto Dc = D.bottomRows(mZ_ - lo);
        G.noalias() += Dc.transpose() * Dc;
      }
    }
    blocks::with_block_size(p0_, [&](auto P) {
      blocks::conditional_covariance_block<decltype(P)::value>(
          L11_.data() + c * bs, G.data(), lambda_[0].data(), out[0].data() + c * bs, p0_,
          work.data());
    });
  }
  for (int k = 1; k < K; ++k) {
    const int pk = terms_[k].p;
    out[k].resize(pk, static_cast<Index>(terms_[k].nlev) * pk);
    for (int d = 0; d < terms_[k].nlev; ++d) {
      const Index s0 = offset_[k] + static_cast<Index>(d) * pk;
      const auto Bk = Rinv.block(s0, s0, mZ_ - s0, pk);
      const Matrix C = Bk.transpose() * Bk;
      out[k].middleCols(static_cast<Index>(d) * pk, pk) = lambda_[k] * C * lambda_[k].transpose();
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
  add_z_times(b, eta);
}

void Problem::add_z_times(const double* b, double* out) const {
  Index pos = 0;
  for (const auto& t : terms_) {
    const double* bk = b + pos;
    for (int a = 0; a < t.p; ++a) {
      const double* z = t.Z + static_cast<Index>(a) * n_;
      for (Index i = 0; i < n_; ++i) out[i] += z[i] * bk[static_cast<Index>(t.g[i]) * t.p + a];
    }
    pos += static_cast<Index>(t.nlev) * t.p;
  }
}

void Problem::z_times(const double* v, double* out) const {
  std::fill(out, out + n_, 0.0);
  add_z_times(v, out);
}

void Problem::zt_times(const double* v, Vector& out) const {
  out.setZero(q_);
  Index pos = 0;
  for (const auto& t : terms_) {
    double* ok = out.data() + pos;
    for (int a = 0; a < t.p; ++a) {
      const double* z = t.Z + static_cast<Index>(a) * n_;
      for (Index i = 0; i < n_; ++i) ok[static_cast<Index>(t.g[i]) * t.p + a] += z[i] * v[i];
    }
    pos += static_cast<Index>(t.nlev) * t.p;
  }
}

void Problem::lambdat_times(const Vector& x, Vector& out) const {
  out.resize(q_);
  Index pos = 0;
  for (size_t k = 0; k < terms_.size(); ++k) {
    const int pk = terms_[k].p;
    for (int d = 0; d < terms_[k].nlev; ++d) {
      out.segment(pos, pk) =
          lambda_[k].triangularView<Eigen::Lower>().transpose() * x.segment(pos, pk);
      pos += pk;
    }
  }
}

void Problem::theta_entry(Index k, int& term, int& row, int& col, Index& start) const {
  Index pos = 0, off = 0;
  for (size_t t = 0; t < terms_.size(); ++t) {
    const int p = terms_[t].p;
    for (int j = 0; j < p; ++j)
      for (int i = j; i < p; ++i) {
        if (pos++ == k) {
          term = static_cast<int>(t);
          row = i;
          col = j;
          start = off;
          return;
        }
      }
    off += static_cast<Index>(terms_[t].nlev) * p;
  }
  term = row = col = -1;
  start = 0;
}

void Problem::dlambda_times(Index k, const Vector& x, Vector& out, bool transpose) const {
  // dLambda/dtheta_k has a 1 at (row, col) of every level block of its term.
  out.setZero(q_);
  int t, row, col;
  Index start;
  theta_entry(k, t, row, col, start);
  if (t < 0) return;
  const int p = terms_[t].p;
  const int to = transpose ? col : row, from = transpose ? row : col;
  for (int d = 0; d < terms_[t].nlev; ++d) {
    const Index s = start + static_cast<Index>(d) * p;
    out[s + to] = x[s + from];
  }
}

void Problem::dlambda_z(Index k, const Vector& u, double* out) const {
  int t, row, col;
  Index start;
  theta_entry(k, t, row, col, start);
  if (t < 0) {
    std::fill(out, out + n_, 0.0);
    return;
  }
  // (dLambda_k u) is u's entry col of each level block, placed at entry row.
  const TermData& td = terms_[t];
  const double* z = td.Z + static_cast<Index>(row) * n_;
  const double* ub = u.data() + start + col;
  for (Index i = 0; i < n_; ++i) out[i] = z[i] * ub[static_cast<Index>(td.g[i]) * td.p];
}

void Problem::zt_times_rows(const RowMatrix& M, RowMatrix& out) const {
  out.setZero(q_, M.cols());
  Index pos = 0;
  for (const auto& t : terms_) {
    for (int a = 0; a < t.p; ++a) {
      const double* z = t.Z + static_cast<Index>(a) * n_;
      for (Index i = 0; i < n_; ++i)
        out.row(pos + static_cast<Index>(t.g[i]) * t.p + a) += z[i] * M.row(i);
    }
    pos += static_cast<Index>(t.nlev) * t.p;
  }
}

void Problem::z_times_rows(const RowMatrix& B, RowMatrix& out) const {
  out.setZero(n_, B.cols());
  Index pos = 0;
  for (const auto& t : terms_) {
    for (int a = 0; a < t.p; ++a) {
      const double* z = t.Z + static_cast<Index>(a) * n_;
      for (Index i = 0; i < n_; ++i)
        out.row(i) += z[i] * B.row(pos + static_cast<Index>(t.g[i]) * t.p + a);
    }
    pos += static_cast<Index>(t.nlev) * t.p;
  }
}

void Problem::lambda_rows(RowMatrix& B, bool transpose) const {
  Index pos = 0;
  for (size_t k = 0; k < terms_.size(); ++k) {
    const int pk = terms_[k].p;
    const Matrix& lam = lambda_[k];
    for (int d = 0; d < terms_[k].nlev; ++d) {
      if (pk == 1) {
        B.row(pos) *= lam(0, 0);
      } else if (transpose) {
        B.middleRows(pos, pk) = lam.triangularView<Eigen::Lower>().transpose() * B.middleRows(pos, pk);
      } else {
        B.middleRows(pos, pk) = lam.triangularView<Eigen::Lower>() * B.middleRows(pos, pk);
      }
      pos += pk;
    }
  }
}

Status Problem::solve_system(Matrix& B, bool with_x) const {
  if (!factored_) return Status::NotEvaluated;
  if (sparse_rest_) return Status::SparseRestUnsupported;
  const Index px = with_x ? p_ : 0;
  const Index mr = mZ_ + px;
  if (B.rows() != q_ + px) return Status::BadDimension;
  const Index P = B.cols();
  const int K = nterms();
  const Index bs = static_cast<Index>(p0_) * p0_;
  Matrix rest(mr, P);
  rest.topRows(mZ_) = B.middleRows(q0_, mZ_);
  if (px) rest.bottomRows(px) = B.bottomRows(px);
  // Forward: L11 y0 = b0, then the rest rows lose L21 y0.
  for (int c = 0; c < l0_; ++c) {
    auto y0 = B.middleRows(static_cast<Index>(c) * p0_, p0_);
    Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
    Lc.triangularView<Eigen::Lower>().solveInPlace(y0);
    if (K > 1) {
      const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
      Eigen::Map<const Matrix> V(BZt_.data() + c0 * p0_, rc, p0_);
      if (dense_) {
        rest.topRows(mZ_).noalias() -= V * y0;
      } else {
        for (Index a = 0; a < rc; ++a) rest.row(rowidx_[c0 + a]).noalias() -= V.row(a) * y0;
      }
    }
    if (px) rest.bottomRows(px).noalias() -= BXt_.block(0, static_cast<Index>(c) * p0_, px, p0_) * y0;
  }
  const auto Rl = R_.topLeftCorner(mr, mr).triangularView<Eigen::Lower>();
  Rl.solveInPlace(rest);
  Rl.adjoint().solveInPlace(rest);
  // Backward: L11' x0 = y0 - L21' x_rest.
  for (int c = 0; c < l0_; ++c) {
    auto y0 = B.middleRows(static_cast<Index>(c) * p0_, p0_);
    if (K > 1) {
      const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
      Eigen::Map<const Matrix> V(BZt_.data() + c0 * p0_, rc, p0_);
      if (dense_) {
        y0.noalias() -= V.transpose() * rest.topRows(mZ_);
      } else {
        for (Index a = 0; a < rc; ++a) y0.noalias() -= V.row(a).transpose() * rest.row(rowidx_[c0 + a]);
      }
    }
    if (px) y0.noalias() -= BXt_.block(0, static_cast<Index>(c) * p0_, px, p0_).transpose() * rest.bottomRows(px);
    Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
    Lc.triangularView<Eigen::Lower>().adjoint().solveInPlace(y0);
  }
  B.middleRows(q0_, mZ_) = rest.topRows(mZ_);
  if (px) B.bottomRows(px) = rest.bottomRows(px);
  return Status::Ok;
}

Index Problem::rinv_times_coupling(const Matrix& Rinv, int c, Index px, Vector& y) const {
  // y = R^{-1} L21_c for scalar term 0: level c's few rest-Z rows (and the px X rows), each a
  // column of R^{-1} from its own row down. Returns the first row that can be nonzero.
  const Index mr = mZ_ + px;
  y.setZero(mr);
  Index lo = mr;
  auto add = [&](Index col, double val) {
    y.tail(mr - col).noalias() += Rinv.col(col).tail(mr - col) * val;
    lo = std::min(lo, col);
  };
  if (nterms() > 1)
    for (Index a = colptr_[c]; a < colptr_[c + 1]; ++a) add(rowidx_[a], BZt_[a]);
  for (Index t = 0; t < px; ++t) add(mZ_ + t, BXt_(t, c));
  return lo;
}

Status Problem::leverages_two_scalar(Vector& h, Matrix& T) const {
  // Two scalar terms with a sparse coupling block (e.g. two crossed factors): an observation
  // touches only S11_c, S21 at (c, its level of term 1) and S22's diagonal. With
  // y_c = R^{-1} L21_c (L21_c: the few rows of level c's pattern):
  //   S11_c = (1 + |y_c|^2) / L_c^2,  S21_c[r] = -(R^{-T} y_c)_r / L_c,  diag(S22) = column
  // norms of R^{-1} -- no dense S22 and no gathers from it.
  Matrix Rinv;
  lower_tri_inverse(R_.topLeftCorner(mZ_, mZ_), Rinv);
  const Vector d22 = Rinv.colwise().squaredNorm().transpose();
  Vector S11(l0_), S21(colptr_[l0_]);
  auto levels = [&](Index c_lo, Index c_hi) {
    Vector y(mZ_);
    for (Index c = c_lo; c < c_hi; ++c) {
      const Index lo = rinv_times_coupling(Rinv, static_cast<int>(c), 0, y);
      const double Lc = L11_[c];
      S11[c] = (1.0 + y.tail(mZ_ - lo).squaredNorm()) / (Lc * Lc);
      for (Index a = colptr_[c]; a < colptr_[c + 1]; ++a) {
        const Index r = rowidx_[a];
        S21[a] = -Rinv.col(r).tail(mZ_ - r).dot(y.tail(mZ_ - r)) / Lc;
      }
    }
    return 0.0;
  };
  const double work = static_cast<double>(colptr_[l0_]) * static_cast<double>(mZ_);
  split_sum(num_threads() >= 2 && work > 4.0e6, l0_, levels);
  h.resize(n_);
  T.resize(n_, 2);
  const double lam0 = lambda_[0](0, 0), lam1 = lambda_[1](0, 0);
  const TermData& t0 = terms_[0];
  const TermData& t1 = terms_[1];
  for (Index i = 0; i < n_; ++i) {
    const int c = t0.g[i];
    const Index s1 = offset_[1] + t1.g[i];
    const double z0 = t0.Z[i], z1 = t1.Z[i];
    const double v0 = lam0 * z0, v1 = lam1 * z1;
    const double s21 = S21[colptr_[c] + obs_pos_[static_cast<size_t>(i)]];
    const double w0 = S11[c] * v0 + s21 * v1;
    const double w1 = s21 * v0 + d22[s1] * v1;
    h[i] = v0 * w0 + v1 * w1;
    T(i, 0) = z0 * w0;
    T(i, 1) = z1 * w1;
  }
  return Status::Ok;
}

Status Problem::leverages(Vector& h, Matrix& T, bool with_x) const {
  if (!has_rows_) return Status::NoRows;
  if (!factored_) return Status::NotEvaluated;
  if (sparse_rest_) return Status::SparseRestUnsupported;
  const int K = nterms();
  if (!with_x && K == 2 && p0_ == 1 && rest_scalar_ && !dense_ && mZ_ >= 64)
    return leverages_two_scalar(h, T);
  if (K == 1 && p0_ <= blocks::kMaxFixedBlock) return leverages_single_term(h, T, with_x);
  const Index bs = static_cast<Index>(p0_) * p0_;
  const Index px = with_x ? p_ : 0;
  const Index mr = mZ_ + px;  // leading part of the rest block: rest Z rows (and X rows)
  // Selected inverse of M = L L', L = [L11 0; L21 R] (M = G, or the (u, beta) system):
  //   S22 = (R R')^{-1}, S21 = -S22 L21 L11^{-1}, S11_c = L_c^{-T} (L_c^{-1} - L21_c' S21_c).
  // Only S11's diagonal blocks and S21 on L21's pattern (plus the X rows) are formed.
  Matrix S22;
  if (mr > 0) {
    Matrix Rinv = Matrix::Identity(mr, mr);
    R_.topLeftCorner(mr, mr).triangularView<Eigen::Lower>().solveInPlace(Rinv);
    S22.noalias() = Rinv.transpose().triangularView<Eigen::Upper>() * Rinv;
  }
  Vector S21(BZt_.size());
  Matrix S21X(px, q0_);  // S21's X rows, p0 columns per level
  Vector S11(static_cast<Index>(l0_) * bs);
  Matrix Tall;
  if (K > 1 && dense_) {
    Matrix L21(mr, q0_);
    L21.topRows(mZ_) = Eigen::Map<const Matrix>(BZt_.data(), mZ_, q0_);
    if (px) L21.bottomRows(px) = BXt_.topRows(px);
    Tall.noalias() = S22 * L21;
  }
  Matrix Sg, Lsub, Tc, M(p0_, p0_);
  std::vector<Index> sub;
  for (int c = 0; c < l0_; ++c) {
    Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
    M.setIdentity();
    Lc.triangularView<Eigen::Lower>().solveInPlace(M);  // L_c^{-1}
    const Index c0 = colptr_[c], rc = K > 1 ? colptr_[c + 1] - c0 : 0;
    if (rc + px == 0) {
      Lc.triangularView<Eigen::Lower>().adjoint().solveInPlace(M);
      Eigen::Map<Matrix>(S11.data() + c * bs, p0_, p0_) = M;
      continue;
    }
    // L21's rows for this level: the pattern's rest Z rows, then the X rows.
    Lsub.resize(rc + px, p0_);
    if (rc) Lsub.topRows(rc) = Eigen::Map<const Matrix>(BZt_.data() + c0 * p0_, rc, p0_);
    if (px) Lsub.bottomRows(px) = BXt_.block(0, static_cast<Index>(c) * p0_, px, p0_);
    if (K > 1 && dense_) {
      Tc = Tall.middleCols(static_cast<Index>(c) * p0_, p0_);
    } else {
      sub.resize(rc + px);
      for (Index a = 0; a < rc; ++a) sub[a] = rowidx_[c0 + a];
      for (Index t = 0; t < px; ++t) sub[rc + t] = mZ_ + t;
      const Index ns = rc + px;
      Sg.resize(ns, ns);
      for (Index b = 0; b < ns; ++b)
        for (Index a = 0; a < ns; ++a) Sg(a, b) = S22(sub[a], sub[b]);
      Tc.noalias() = Sg * Lsub;
    }
    // S21_c = -Tc L_c^{-1}
    Lc.triangularView<Eigen::Lower>().solveInPlace<Eigen::OnTheRight>(Tc);
    Tc = -Tc;
    if (rc) Eigen::Map<Matrix>(S21.data() + c0 * p0_, rc, p0_) = Tc.topRows(rc);
    if (px) S21X.middleCols(static_cast<Index>(c) * p0_, p0_) = Tc.bottomRows(px);
    M.noalias() -= Lsub.transpose() * Tc;
    Lc.triangularView<Eigen::Lower>().adjoint().solveInPlace(M);
    Eigen::Map<Matrix>(S11.data() + c * bs, p0_, p0_) = M;
  }
  // Per observation: v = [Lambda' z_i; x_i] on its support (term 0's block, each rest term's
  // block, X), w = M^{-1} v on the random-effects part of that support. h (without X only)
  // is v'w; T needs only w, since dLambda/dtheta_k has no X part.
  if (!with_x) h.resize(n_); else h.resize(0);
  T.setZero(n_, ntheta_);
  Index D = 0;
  std::vector<Index> blk(K + 1, 0);
  for (int k = 0; k < K; ++k) {
    blk[k] = D;
    D += terms_[k].p;
  }
  blk[K] = D;
  std::vector<Index> tstart(K, 0);  // first theta index of each term
  for (int k = 1; k < K; ++k) tstart[k] = tstart[k - 1] + terms_[k - 1].p * (terms_[k - 1].p + 1) / 2;
  Vector xi(px);
  if (p0_ == 1 && rest_scalar_) {
    // Scalar terms only: theta component k is term k's single entry.
    std::vector<double> lam(K), v(K), w(K), z(K);
    std::vector<Index> srow(K, 0);
    for (int k = 0; k < K; ++k) lam[k] = lambda_[k](0, 0);
    for (Index i = 0; i < n_; ++i) {
      const int c = terms_[0].g[i];
      for (int k = 0; k < K; ++k) {
        z[k] = terms_[k].Z[i];
        v[k] = lam[k] * z[k];
        if (k > 0) srow[k] = offset_[k] + terms_[k].g[i];
      }
      for (Index t = 0; t < px; ++t) xi[t] = X_[i + t * n_];
      double w0 = S11[c] * v[0];
      if (px) w0 += S21X.col(c).dot(xi);
      if (K > 1) {
        const double* s21 = S21.data() + colptr_[c];
        const Index* op = obs_pos_.data() + static_cast<size_t>(i) * (K - 1);
        for (int k = 1; k < K; ++k) {
          const double sk = s21[op[k - 1]];
          w0 += sk * v[k];
          double wk = sk * v[0];
          const double* s22 = S22.data() + srow[k];
          for (int kk = 1; kk < K; ++kk) wk += s22[srow[kk] * mr] * v[kk];
          for (Index t = 0; t < px; ++t) wk += s22[(mZ_ + t) * mr] * xi[t];
          w[k] = wk;
        }
      }
      w[0] = w0;
      double hi = 0.0;
      for (int k = 0; k < K; ++k) {
        hi += v[k] * w[k];
        T(i, k) = z[k] * w[k];
      }
      if (!with_x) h[i] = hi;
    }
    return Status::Ok;
  }
  Vector v(D), w(D), z(D);
  std::vector<Index> srow(K, 0), spos(K, 0);
  for (Index i = 0; i < n_; ++i) {
    const int c = terms_[0].g[i];
    for (int k = 0; k < K; ++k) {
      const TermData& t = terms_[k];
      for (int a = 0; a < t.p; ++a) z[blk[k] + a] = t.Z[i + static_cast<Index>(a) * n_];
      v.segment(blk[k], t.p) =
          lambda_[k].triangularView<Eigen::Lower>().transpose() * z.segment(blk[k], t.p);
      if (k > 0) {
        srow[k] = offset_[k] + static_cast<Index>(t.g[i]) * t.p;
        spos[k] = obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)];
      }
    }
    for (Index t = 0; t < px; ++t) xi[t] = X_[i + t * n_];
    // w0 = S11_c v0 + sum_k S21_c[k rows]' v_k (+ S21X_c' x);
    // w_k = S21_c[k rows] v0 + sum_kk S22[k, kk] v_kk (+ S22[k, X] x)
    Eigen::Map<const Matrix> S11c(S11.data() + c * bs, p0_, p0_);
    w.head(p0_).noalias() = S11c * v.head(p0_);
    if (px) w.head(p0_).noalias() += S21X.middleCols(static_cast<Index>(c) * p0_, p0_).transpose() * xi;
    if (K > 1) {
      const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
      Eigen::Map<const Matrix> S21c(S21.data() + c0 * p0_, rc, p0_);
      for (int k = 1; k < K; ++k) {
        const int pk = terms_[k].p;
        const auto Sk = S21c.middleRows(spos[k], pk);
        w.head(p0_).noalias() += Sk.transpose() * v.segment(blk[k], pk);
        w.segment(blk[k], pk).noalias() = Sk * v.head(p0_);
        for (int kk = 1; kk < K; ++kk) {
          const int pkk = terms_[kk].p;
          w.segment(blk[k], pk).noalias() +=
              S22.block(srow[k], srow[kk], pk, pkk) * v.segment(blk[kk], pkk);
        }
        if (px) w.segment(blk[k], pk).noalias() += S22.block(srow[k], mZ_, pk, px) * xi;
      }
    }
    if (!with_x) h[i] = v.dot(w);
    // theta component (row a, col b) of term k: (E_ab' z)' w = z_a w_b on term k's block.
    for (int k = 0; k < K; ++k) {
      const int p = terms_[k].p;
      Index th = tstart[k];
      for (int b = 0; b < p; ++b)
        for (int a = b; a < p; ++a) T(i, th++) = z[blk[k] + a] * w[blk[k] + b];
    }
  }
  return Status::Ok;
}


Status Problem::logdet_gradient_scalar(bool with_x, Vector& g) const {
  // Scalar terms: M - D = sum_i v_i v_i' with term k's entry of v_i equal to theta_k z_ik, so
  // sum_i v_i (z_ik e_(level)') = (M - D) restricted to term k's columns / theta_k, and
  // d log|M| / dtheta_k = 2 tr(M^{-1} (M - D)_k) / theta_k = 2 (q_k - tr_k(M^{-1})) / theta_k:
  // only the diagonal of M^{-1} over each term is needed. For the rest block that is the
  // squared column norms of R^{-1}; for a level c of term 0 it is
  // L_c^{-2} (1 + |R^{-1} L21_c|^2).
  const int K = nterms();
  const Index px = with_x ? p_ : 0;
  const Index mr = mZ_ + px;
  Matrix Rinv;
  if (mr > 0) lower_tri_inverse(R_.topLeftCorner(mr, mr), Rinv);
  double tr0 = 0.0;
  if (mr == 0) {
    for (int c = 0; c < l0_; ++c) tr0 += 1.0 / (L11_[c] * L11_[c]);
  } else if (K > 1 && dense_) {
    Matrix L21(mr, q0_);
    L21.topRows(mZ_) = Eigen::Map<const Matrix>(BZt_.data(), mZ_, q0_);
    if (px) L21.bottomRows(px) = BXt_.topRows(px);
    auto part = [&](Index c_lo, Index c_hi) {
      const Matrix Y = Rinv.triangularView<Eigen::Lower>() * L21.middleCols(c_lo, c_hi - c_lo);
      double acc = 0.0;
      for (Index c = c_lo; c < c_hi; ++c)
        acc += (1.0 + Y.col(c - c_lo).squaredNorm()) / (L11_[c] * L11_[c]);
      return acc;
    };
    tr0 = split_sum(num_threads() >= 2 && static_cast<double>(mr) * mr * q0_ > 5.0e7, q0_, part);
  } else {
    // Levels in two halves on two threads when there is enough work (memory-bound reads of
    // R^{-1}'s columns).
    auto levels = [&](Index c_lo, Index c_hi) {
      Vector y(mr);
      double acc = 0.0;
      for (Index c = c_lo; c < c_hi; ++c) {
        const Index lo = rinv_times_coupling(Rinv, static_cast<int>(c), px, y);
        acc += (1.0 + y.tail(mr - lo).squaredNorm()) / (L11_[c] * L11_[c]);
      }
      return acc;
    };
    const double work = static_cast<double>(colptr_[l0_]) * static_cast<double>(mr);
    tr0 = split_sum(num_threads() >= 2 && work > 4.0e6, l0_, levels);
  }
  g.resize(K);
  auto term_grad = [&](int k, double qk, double trk) {
    const double th = lambda_[k](0, 0);
    // At theta_k = 0 the objective is even in theta_k: the derivative is 0.
    return th == 0.0 ? 0.0 : 2.0 * (qk - trk) / th;
  };
  g[0] = term_grad(0, static_cast<double>(l0_), tr0);
  for (int k = 1; k < K; ++k) {
    const Index s0 = offset_[k], nk = terms_[k].nlev;
    const double trk = Rinv.middleCols(s0, nk).colwise().squaredNorm().sum();
    g[k] = term_grad(k, static_cast<double>(nk), trk);
  }
  return Status::Ok;
}

Status Problem::objective_gradient(bool reml, const Vector& beta, const Vector& u,
                                   Vector& grad) const {
  if (!has_rows_) return Status::NoRows;
  // objective = log|M| + df (1 + log(2 pi pwrss / df)) - log|W|, with M the (u, beta) system
  // (REML, df = n - p) or G alone (ML, df = n). With v_i = sqrt(w_i) [Lambda' z_i; x_i],
  // M = sum_i v_i v_i' + [I 0; 0 0], so d log|M| / dtheta_k = 2 sum_i w_i T(i, k); pwrss is
  // minimal in (u, beta), so d pwrss / dtheta_k = -2 sum_i w_i r_i (Z dLambda_k u)_i with r the
  // residual at the conditional mode.
  if (!factored_ || !y_) return Status::NotEvaluated;
  if (sparse_rest_) return Status::SparseRestUnsupported;
  const bool scalar = p0_ == 1 && rest_scalar_;
  Vector h, gl;
  Matrix T;
  Status s = scalar ? logdet_gradient_scalar(reml, gl) : leverages(h, T, reml);
  if (s != Status::Ok) return s;
  Vector b, eta(n_), r(n_), dz(n_);
  lambda_times(u, b);
  linear_predictor(beta.data(), b.data(), eta.data());
  for (Index i = 0; i < n_; ++i) r[i] = (y_[i] - eta[i]) * (w_ ? w_[i] : 1.0);
  const double df = static_cast<double>(reml ? n_ - p_ : n_);
  const double pwrss = comp_.pwrss;
  grad.resize(ntheta_);
  for (Index k = 0; k < ntheta_; ++k) {
    dlambda_z(k, u, dz.data());
    double dlog;
    if (scalar) {
      dlog = gl[k];
    } else if (w_) {
      dlog = 0.0;
      for (Index i = 0; i < n_; ++i) dlog += 2.0 * w_[i] * T(i, k);
    } else {
      dlog = 2.0 * T.col(k).sum();
    }
    grad[k] = dlog - 2.0 * df / pwrss * r.dot(dz);
  }
  return Status::Ok;
}

}  // namespace mixedfit
