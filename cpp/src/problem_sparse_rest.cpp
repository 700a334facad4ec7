// Problem with a sparse rest block (rest_block.hpp): which storage to use, A's rest part from
// the data, the factor per theta, and the conditional variances. The first term and the
// coupling block B are handled as on the dense path (problem.cpp); only the rest block differs.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "mixedfit/problem.hpp"

namespace mixedfit {

namespace {

// Per flop, the simplicial sparse factorization (with the scattered clique downdate) runs this
// many times slower than the dense blocked one (threaded BLAS-3 kernels); the sparse path is
// chosen when it still wins. Measured on 10^5 rows, 20,000 x 3,000 random crossed levels (fill
// makes L dense, so both do ~m^3/3 flops): sparse 29.5 s, dense 1.13 s per evaluation (26x).
constexpr double kSparseFlopPenalty = 25.0;
// Rest blocks up to this order stay dense under Auto (at most 64 MB, milliseconds).
constexpr Index kDenseRestAlways = 2000;
// Largest pattern the sparse path builds (its entries are indexed by int, Eigen's default; past
// this size the pattern alone takes gigabytes and is nearly dense anyway).
constexpr double kMaxPatternEntries = 2.0e8;

std::string format_bytes(double bytes) {
  char buf[64];
  if (bytes >= 1e12) std::snprintf(buf, sizeof buf, "%.1f TB", bytes / 1e12);
  else if (bytes >= 1e9) std::snprintf(buf, sizeof buf, "%.1f GB", bytes / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  return buf;
}

// S_ZZ's lower-pattern entries a level of term 0 contributes: sum over levels of rc (rc + 1) / 2.
double clique_entries(const std::vector<Index>& colptr) {
  double total = 0.0;
  for (size_t c = 0; c + 1 < colptr.size(); ++c) {
    const double rc = static_cast<double>(colptr[c + 1] - colptr[c]);
    total += rc * (rc + 1.0) / 2.0;
  }
  return total;
}

}  // namespace

void Problem::choose_rest_storage() {
  const RestStorage mode = rest_storage();
  const double m = static_cast<double>(m_);
  const double dense_bytes = 16.0 * m * m;  // A's rest block and its factor
  const double budget = physical_memory_bytes();
  const bool sparse_possible = nterms() > 1 && !dense_;
  if (mode == RestStorage::Dense || !sparse_possible ||
      (mode == RestStorage::Auto && m_ <= kDenseRestAlways)) {
    if (dense_bytes > budget) refuse_too_large(dense_bytes, -1.0, false);
    return;
  }
  // S_ZZ's pattern has at most this many entries; the sparse path holds ~36 bytes per entry
  // besides its factor.
  const double pattern_entries = std::min(clique_entries(colptr_), m * (m + 1.0) / 2.0);
  if (pattern_entries > kMaxPatternEntries || 36.0 * pattern_entries > budget) {
    if (dense_bytes > budget || mode == RestStorage::Sparse)
      refuse_too_large(dense_bytes, 36.0 * pattern_entries, true);
    return;
  }
  SparseMatrix pattern = rest_pattern();
  // Memory of the sparse path: L (value + row index, twice while factoring), S_ZZ's pattern
  // with A's and S's values and the inverse's, and the dense border (A_XZ, S_XZ, W).
  const double nnz_cap = std::min(budget / 24.0, 2.0e9);
  const SparseFactorEstimate est = estimate_sparse_cholesky(pattern, nnz_cap);
  const double sparse_bytes = 24.0 * est.nnz + 36.0 * static_cast<double>(pattern.nonZeros()) +
                              24.0 * static_cast<double>(p_ + 1) * static_cast<double>(mZ_);
  const bool sparse_fits = est.complete && sparse_bytes <= budget;
  const bool dense_fits = dense_bytes <= budget;
  const bool sparse_faster = kSparseFlopPenalty * est.flops < m * m * m / 3.0;
  const bool use_sparse =
      mode == RestStorage::Sparse || (sparse_fits && (!dense_fits || sparse_faster));
  if ((use_sparse && !sparse_fits) || (!use_sparse && !dense_fits)) {
    refuse_too_large(dense_bytes, sparse_bytes, !est.complete);
    return;
  }
  if (use_sparse) sparse_rest_ = std::make_unique<SparseRestBlock>(std::move(pattern), p_ + 1);
}

void Problem::refuse_too_large(double dense_bytes, double sparse_bytes, bool sparse_at_least) {
  std::string levels;
  for (const auto& t : terms_) {
    if (!levels.empty()) levels += ", ";
    levels += std::to_string(t.nlev);
    if (t.p > 1) levels += " x " + std::to_string(t.p) + " columns";
  }
  std::string msg = "the model is too large for this machine's memory (" +
                    format_bytes(physical_memory_bytes()) + "): its random-effects terms have " +
                    levels + " levels, and the block of the random effects outside the first " +
                    "term plus the fixed effects has order " + std::to_string(m_) +
                    "; a dense factorization of that block needs " + format_bytes(dense_bytes);
  if (sparse_bytes >= 0.0)
    msg += ", a sparse one (AMD ordering) " + std::string(sparse_at_least ? "at least " : "") +
           format_bytes(sparse_bytes);
  msg += ". Fewer or smaller grouping factors (or nested ones, whose factor stays sparse) would fit";
  build_status_ = Status::TooLarge;
  build_message_ = msg;
}

SparseMatrix Problem::rest_pattern() const {
  // Column s of S_ZZ's lower pattern: s itself and, for every level c of term 0 whose rest rows
  // include s, the rows of c after s (B~_c B~_c' fills that clique; A_ZZ lies inside it).
  const Index nb = colptr_[l0_];
  std::vector<Index> tptr(mZ_ + 1, 0), tentry(nb), tnext;
  std::vector<int> tlevel(nb);
  for (Index e = 0; e < nb; ++e) ++tptr[rowidx_[e] + 1];
  for (Index r = 0; r < mZ_; ++r) tptr[r + 1] += tptr[r];
  tnext.assign(tptr.begin(), tptr.end() - 1);
  for (int c = 0; c < l0_; ++c)
    for (Index e = colptr_[c]; e < colptr_[c + 1]; ++e) {
      const Index t = tnext[rowidx_[e]]++;
      tentry[t] = e;
      tlevel[t] = c;
    }
  std::vector<int> outer(mZ_ + 1, 0), inner, col;
  std::vector<Index> stamp(mZ_, -1);
  for (Index s = 0; s < mZ_; ++s) {
    col.assign(1, static_cast<int>(s));
    stamp[s] = s;
    for (Index t = tptr[s]; t < tptr[s + 1]; ++t)
      for (Index e = tentry[t] + 1; e < colptr_[tlevel[t] + 1]; ++e) {
        const Index r = rowidx_[e];
        if (stamp[r] != s) {
          stamp[r] = s;
          col.push_back(static_cast<int>(r));
        }
      }
    std::sort(col.begin(), col.end());
    inner.insert(inner.end(), col.begin(), col.end());
    outer[s + 1] = static_cast<int>(inner.size());
  }
  std::vector<double> zeros(inner.size(), 0.0);
  return Eigen::Map<const SparseMatrix>(mZ_, mZ_, static_cast<Index>(inner.size()), outer.data(),
                                        inner.data(), zeros.data());
}

Status Problem::set_response_sparse_rest(const double* y, const double* w) {
  // One pass over the observations: term 0's blocks and B as on the dense path, the rest block's
  // A_ZZ on S_ZZ's pattern and A_XZ; then A_XX by dot products of columns.
  const int K = nterms();
  SparseRestBlock& rb = *sparse_rest_;
  const SparseMatrix& pat = rb.pattern();
  A11_.setZero(static_cast<Index>(l0_) * p0_ * p0_);
  BZ_.setZero(colptr_[l0_] * p0_);
  BX_.setZero(p_ + 1, q0_);
  rb.a_zz().setZero(pat.nonZeros());
  rb.a_xz().setZero(p_ + 1, mZ_);
  double* azz = rb.a_zz().data();
  Matrix& axz = rb.a_xz();
  const TermData& t0 = terms_[0];
  Vector xy(p_ + 1);
  for (Index i = 0; i < n_; ++i) {
    const double wi = w ? w[i] : 1.0;
    for (Index t = 0; t < p_; ++t) xy[t] = X_[i + t * n_];
    xy[p_] = y[i];
    const int c = t0.g[i];
    double* blk = A11_.data() + static_cast<Index>(c) * p0_ * p0_;
    for (int b = 0; b < p0_; ++b) {
      const double wzb = wi * t0.Z[i + b * n_];
      for (int a = b; a < p0_; ++a) blk[a + b * p0_] += t0.Z[i + a * n_] * wzb;
      BX_.col(static_cast<Index>(c) * p0_ + b) += wzb * xy;
    }
    const Index rc = colptr_[c + 1] - colptr_[c];
    double* vals = BZ_.data() + colptr_[c] * p0_;
    for (int k = 1; k < K; ++k) {
      const TermData& tk = terms_[k];
      const Index pos = obs_pos_[static_cast<size_t>(i) * (K - 1) + (k - 1)];
      const Index sk = offset_[k] + static_cast<Index>(tk.g[i]) * tk.p;
      for (int a = 0; a < tk.p; ++a) {
        const double wza = wi * tk.Z[i + a * n_];
        for (int b = 0; b < p0_; ++b) vals[b * rc + pos + a] += wza * t0.Z[i + b * n_];
        // Lower triangle: term k's rows against those of terms kk <= k (earlier terms' rows
        // come first in the rest block).
        for (int kk = 1; kk <= k; ++kk) {
          const TermData& tkk = terms_[kk];
          const Index skk = offset_[kk] + static_cast<Index>(tkk.g[i]) * tkk.p;
          const int bmax = kk == k ? a : tkk.p - 1;
          for (int b = 0; b <= bmax; ++b)
            azz[lower_position(pat, sk + a, skk + b)] += wza * tkk.Z[i + b * n_];
        }
        axz.col(sk + a) += wza * xy;
      }
    }
  }
  Matrix& axx = rb.a_xx();
  axx.setZero(p_ + 1, p_ + 1);
  Vector wcol(n_);
  for (Index j = 0; j <= p_; ++j) {
    const Eigen::Map<const Vector> xj(j < p_ ? X_ + j * n_ : y, n_);
    if (w) wcol = Eigen::Map<const Vector>(w, n_).cwiseProduct(xj); else wcol = xj;
    for (Index k = j; k <= p_; ++k)
      axx(k, j) = wcol.dot(Eigen::Map<const Vector>(k < p_ ? X_ + k * n_ : y, n_));
  }
  have_A_ = true;
  factored_ = false;
  return Status::Ok;
}

void Problem::scale_sparse_rest() {
  // S = Lambda' A Lambda + [I 0] on the rest block (before B~'s downdate).
  SparseRestBlock& rb = *sparse_rest_;
  const SparseMatrix& pat = rb.pattern();
  const int* cp = pat.outerIndexPtr();
  const int* ri = pat.innerIndexPtr();
  const double* a = rb.a_zz().data();
  double* sv = rb.s_zz();
  // Row r's level block: its first row and r's column within the term's template.
  auto level_start = [&](Index r) {
    const int k = row_term_[r];
    return offset_[k] + (r - offset_[k]) / terms_[k].p * terms_[k].p;
  };
  for (Index s = 0; s < mZ_; ++s) {
    const int ks = row_term_[s];
    if (rest_scalar_) {
      const double ls = lambda_[ks](0, 0);
      for (int e = cp[s]; e < cp[s + 1]; ++e) sv[e] = a[e] * ls * lambda_[row_term_[ri[e]]](0, 0);
    } else {
      // S(r, s) = sum over the rows r', s' of r's and s's levels of
      // Lambda(r', r) A(r', s') Lambda(s', s); both levels co-occur, so A(r', s') is stored.
      const Index s0 = level_start(s), bs = s - s0;
      const Matrix& lam_s = lambda_[ks];
      for (int e = cp[s]; e < cp[s + 1]; ++e) {
        const Index r = ri[e], r0 = level_start(r), br = r - r0;
        const Matrix& lam_r = lambda_[row_term_[r]];
        double v = 0.0;
        for (Index ar = br; ar < lam_r.rows(); ++ar)
          for (Index as = bs; as < lam_s.rows(); ++as) {
            const Index i = r0 + ar, j = s0 + as;
            const Index pos = i >= j ? lower_position(pat, i, j) : lower_position(pat, j, i);
            v += lam_r(ar, br) * a[pos] * lam_s(as, bs);
          }
        sv[e] = v;
      }
    }
    sv[cp[s]] += 1.0;  // the diagonal leads each column
  }
  Matrix& sxz = rb.s_xz();
  sxz = rb.a_xz();
  for (int k = 1; k < nterms(); ++k) {
    const int pk = terms_[k].p;
    for (int d = 0; d < terms_[k].nlev; ++d) {
      auto cols = sxz.middleCols(offset_[k] + static_cast<Index>(d) * pk, pk);
      cols = cols * lambda_[k].triangularView<Eigen::Lower>();
    }
  }
  rb.s_xx() = rb.a_xx();
}

Status Problem::factor_sparse_rest(bool with_response) {
  SparseRestBlock& rb = *sparse_rest_;
  scale_sparse_rest();
  // Minus B~ B~': level c adds -v v' on its clique of rest rows (sorted, so each column of S is
  // walked forward once per level and column of term 0).
  const SparseMatrix& pat = rb.pattern();
  const int* cp = pat.outerIndexPtr();
  const int* ri = pat.innerIndexPtr();
  double* sv = rb.s_zz();
  Matrix& sxz = rb.s_xz();
  for (int c = 0; c < l0_; ++c) {
    const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
    const Index* idx = rowidx_.data() + c0;
    for (int b = 0; b < p0_; ++b) {
      const double* v = BZt_.data() + c0 * p0_ + b * rc;
      const auto bx = BXt_.col(static_cast<Index>(c) * p0_ + b);
      for (Index a2 = 0; a2 < rc; ++a2) {
        const Index s = idx[a2];
        int e = cp[s];
        for (Index a = a2; a < rc; ++a) {
          while (ri[e] != idx[a]) ++e;
          sv[e] -= v[a] * v[a2];
        }
        sxz.col(s) -= bx * v[a2];
      }
    }
  }
  rb.s_xx().selfadjointView<Eigen::Lower>().rankUpdate(BXt_, -1.0);
  const Status st = rb.factor(with_response ? p_ + 1 : p_);
  if (st != Status::Ok) return st;
  const Matrix& rx = rb.schur_factor();
  double ldx = 0.0;
  for (Index r = 0; r < p_; ++r) ldx += std::log(rx(r, r));
  return set_components(first_term_logdet() + rb.logdet_zz(), ldx,
                        with_response ? rx(p_, p_) : 0.0);
}

Status Problem::cond_var_sparse_rest(std::vector<Matrix>& out) const {
  // As cond_var() with S22 = S_ZZ^{-1} taken on S_ZZ's pattern (all that is needed):
  //   term 0, level c: L_c^{-T} (I + B~_c' S22 B~_c) L_c^{-1}  (B~_c's rows: c's clique);
  //   rest levels: S22's diagonal blocks.
  const int K = nterms();
  const SparseMatrix S22 = sparse_rest_->inverse_on_pattern();
  out.assign(K, Matrix());
  const Index bs = static_cast<Index>(p0_) * p0_;
  out[0].resize(p0_, q0_);
  Matrix Sc, G(p0_, p0_), Linv(p0_, p0_);
  const Matrix& lam0 = lambda_[0];
  for (int c = 0; c < l0_; ++c) {
    const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
    Eigen::Map<const Matrix> V(BZt_.data() + c0 * p0_, rc, p0_);
    Sc.resize(rc, rc);
    for (Index b = 0; b < rc; ++b)
      for (Index a = 0; a < rc; ++a) Sc(a, b) = lower_entry(S22, rowidx_[c0 + a], rowidx_[c0 + b]);
    G.setIdentity();
    G.noalias() += V.transpose() * Sc * V;
    Eigen::Map<const Matrix> Lc(L11_.data() + c * bs, p0_, p0_);
    Linv.setIdentity();
    Lc.triangularView<Eigen::Lower>().solveInPlace(Linv);
    out[0].middleCols(static_cast<Index>(c) * p0_, p0_) =
        lam0 * (Linv.transpose() * G * Linv) * lam0.transpose();
  }
  for (int k = 1; k < K; ++k) {
    const int pk = terms_[k].p;
    out[k].resize(pk, static_cast<Index>(terms_[k].nlev) * pk);
    Matrix C(pk, pk);
    for (int d = 0; d < terms_[k].nlev; ++d) {
      const Index s0 = offset_[k] + static_cast<Index>(d) * pk;
      for (int b = 0; b < pk; ++b)
        for (int a = 0; a < pk; ++a) C(a, b) = lower_entry(S22, s0 + a, s0 + b);
      out[k].middleCols(static_cast<Index>(d) * pk, pk) = lambda_[k] * C * lambda_[k].transpose();
    }
  }
  return Status::Ok;
}

}  // namespace mixedfit
