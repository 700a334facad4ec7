// The cross-product entry into Problem: the blocked layout from the terms' sizes and the
// co-occurrence pattern of their levels, and A = [Z X y]' W [Z X y] installed from summed
// partial cross products. For data spread over many machines (each part forms its partial A
// where it lies; only the partials travel). Everything per theta is then Problem's own code.
#include <algorithm>
#include <cmath>

#include "mixedfit/problem.hpp"

namespace mixedfit {

Problem Problem::from_crossproduct(Index n, Index p, std::vector<TermData> layout,
                                   const std::vector<std::vector<std::int64_t>>& cooc) {
  Problem out;
  out.n_ = n;
  out.p_ = out.p_all_ = p;
  out.X_ = nullptr;
  out.has_rows_ = false;
  for (auto& t : layout) {
    t.g = nullptr;
    t.Z = nullptr;
  }
  out.terms_ = std::move(layout);
  out.init_layout();
  out.pattern_from_pairs(cooc);
  return out;
}

// The same symbolic analysis as the row constructor's, from the level pairs: per level c of
// term 0, the sorted rest-Z rows of the later terms' levels that co-occur with c.
void Problem::pattern_from_pairs(const std::vector<std::vector<std::int64_t>>& cooc) {
  const int K = nterms();
  colptr_.assign(l0_ + 1, 0);
  rowidx_.clear();
  dense_ = false;
  if (K == 1) return;
  std::vector<std::vector<Index>> starts(l0_);  // per level of term 0: rest-Z row starts
  for (int k = 1; k < K && k - 1 < static_cast<int>(cooc.size()); ++k) {
    const auto& pairs = cooc[k - 1];
    for (size_t t = 0; t + 1 < pairs.size(); t += 2) {
      const std::int64_t c = pairs[t], lev = pairs[t + 1];
      if (c < 0 || c >= l0_ || lev < 0 || lev >= terms_[k].nlev) continue;
      starts[c].push_back(offset_[k] + static_cast<Index>(lev) * terms_[k].p);
    }
  }
  double sparse_cost = 0.0;
  for (int c = 0; c < l0_; ++c) {
    auto& local = starts[c];
    std::sort(local.begin(), local.end());
    local.erase(std::unique(local.begin(), local.end()), local.end());
    sparse_cost += append_level_pattern(c, local);
  }
  use_dense_coupling_if_cheaper(sparse_cost);
}

bool Problem::add_crossproduct_entry(Index i, Index j, double v) {
  const Index q0 = q0_;
  if (j >= q0) {  // both in the rest block: [rest Z, X, y]
    Arest_(i - q0, j - q0) += v;
    return true;
  }
  const Index c = j / p0_;
  const int b = static_cast<int>(j % p0_);
  if (i < q0) {  // term 0 with term 0: only within one level
    if (i / p0_ != c) return false;
    int a = static_cast<int>(i % p0_);
    A11_[c * p0_ * p0_ + a + static_cast<Index>(b) * p0_] += v;
    return true;
  }
  if (i >= q_) {  // X or y with term 0
    BX_(i - q_, j) += v;
    return true;
  }
  const Index r = i - q0;  // a rest-Z row with level c of term 0
  const Index c0 = colptr_[c], rc = colptr_[c + 1] - c0;
  Index pos = r;
  if (!dense_) {
    const auto first = rowidx_.begin() + c0, last = rowidx_.begin() + c0 + rc;
    const auto it = std::lower_bound(first, last, r);
    if (it == last || *it != r) return false;
    pos = it - first;
  }
  BZ_[c0 * p0_ + static_cast<Index>(b) * rc + pos] += v;
  return true;
}

Status Problem::set_crossproduct(Index nnz, const std::int64_t* rows, const std::int64_t* cols,
                                 const double* vals, double sum_log_w) {
  if (!std::isfinite(sum_log_w)) return Status::NonFiniteInput;
  have_A_ = false;
  factored_ = false;
  A11_.setZero(static_cast<Index>(l0_) * p0_ * p0_);
  BZ_.setZero(colptr_[l0_] * p0_);
  BX_.setZero(p_ + 1, q0_);
  Arest_.setZero(m_, m_);
  const Index dim = q_ + p_ + 1;
  for (Index t = 0; t < nnz; ++t) {
    Index i = rows[t], j = cols[t];
    if (i < 0 || j < 0 || i >= dim || j >= dim) return Status::BadDimension;
    if (!std::isfinite(vals[t])) return Status::NonFiniteInput;
    if (i < j) std::swap(i, j);
    if (!add_crossproduct_entry(i, j, vals[t])) return Status::OutsidePattern;
  }
  ldW_ = sum_log_w;
  y_ = nullptr;
  w_ = nullptr;
  have_A_ = true;
  return Status::Ok;
}

}  // namespace mixedfit
