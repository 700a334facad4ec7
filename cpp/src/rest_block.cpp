#include "mixedfit/rest_block.hpp"

#include <Eigen/OrderingMethods>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace mixedfit {

namespace {

std::atomic<int> g_rest_storage{-1};  // -1: not read from the environment yet

RestStorage storage_from_environment() {
  const char* env = std::getenv("MIXEDFIT_REST_STORAGE");
  RestStorage s = RestStorage::Auto;
  if (env) parse_rest_storage(env, s);
  return s;
}

using Permutation = Eigen::PermutationMatrix<Eigen::Dynamic, Eigen::Dynamic, int>;

// The fill-reducing permutation Eigen's SimplicialLLT chooses for this pattern (same AMD call on
// the same symmetric matrix), as P: new index of old index r is P.indices()[r].
Permutation amd_permutation(const SparseMatrix& lower) {
  SparseMatrix full;
  full = lower.selfadjointView<Eigen::Lower>();
  Eigen::AMDOrdering<int> amd;
  Permutation Pinv;
  amd(full, Pinv);
  return Pinv.inverse();
}

}  // namespace

RestStorage rest_storage() {
  int v = g_rest_storage.load();
  if (v < 0) {
    v = static_cast<int>(storage_from_environment());
    g_rest_storage.store(v);
  }
  return static_cast<RestStorage>(v);
}

void set_rest_storage(RestStorage s) { g_rest_storage.store(static_cast<int>(s)); }

bool parse_rest_storage(const std::string& name, RestStorage& out) {
  if (name == "auto") out = RestStorage::Auto;
  else if (name == "dense") out = RestStorage::Dense;
  else if (name == "sparse") out = RestStorage::Sparse;
  else return false;
  return true;
}

const char* rest_storage_name(RestStorage s) {
  switch (s) {
    case RestStorage::Auto: return "auto";
    case RestStorage::Dense: return "dense";
    case RestStorage::Sparse: return "sparse";
  }
  return "auto";
}

double physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) return static_cast<double>(pages) * static_cast<double>(page);
#endif
  return 16.0e9;  // unknown: assume a common workstation
}

SparseFactorEstimate estimate_sparse_cholesky(const SparseMatrix& lower, double nnz_cap) {
  const int n = static_cast<int>(lower.rows());
  const Permutation P = amd_permutation(lower);
  const int* perm = P.indices().data();
  // Upper triangle of P S P' by columns: for column k the rows i < k (row k of L's pattern
  // before fill).
  std::vector<int> ptr(n + 1, 0);
  for (int s = 0; s < n; ++s)
    for (SparseMatrix::InnerIterator it(lower, s); it; ++it)
      if (it.row() != s) ++ptr[std::max(perm[it.row()], perm[s]) + 1];
  for (int k = 0; k < n; ++k) ptr[k + 1] += ptr[k];
  std::vector<int> rows(ptr[n]), next(ptr.begin(), ptr.end() - 1);
  for (int s = 0; s < n; ++s)
    for (SparseMatrix::InnerIterator it(lower, s); it; ++it)
      if (it.row() != s) {
        const int i = perm[it.row()], j = perm[s];
        rows[next[std::max(i, j)]++] = std::min(i, j);
      }
  // Row k of L is the union of the etree paths from each i (A(k, i) != 0, i < k) up to k; each
  // node met adds one entry to its column.
  SparseFactorEstimate est;
  std::vector<int> parent(n, -1), flag(n, -1);
  std::vector<double> count(n, 1.0);  // the diagonal
  double total = n;
  for (int k = 0; k < n; ++k) {
    flag[k] = k;
    for (int e = ptr[k]; e < ptr[k + 1]; ++e) {
      for (int i = rows[e]; flag[i] != k; i = parent[i]) {
        if (parent[i] == -1) parent[i] = k;
        count[i] += 1.0;
        flag[i] = k;
        total += 1.0;
      }
    }
    if (total > nnz_cap) {
      est.nnz = total;
      return est;
    }
  }
  est.complete = true;
  est.nnz = total;
  for (double c : count) est.flops += c * c;
  return est;
}

Eigen::Index lower_position(const SparseMatrix& M, Eigen::Index i, Eigen::Index j) {
  const int* rows = M.innerIndexPtr();
  const int* b = rows + M.outerIndexPtr()[j];
  const int* e = rows + M.outerIndexPtr()[j + 1];
  const int* it = std::lower_bound(b, e, static_cast<int>(i));
  return (it != e && *it == i) ? (it - rows) : -1;
}

double lower_entry(const SparseMatrix& M, Eigen::Index i, Eigen::Index j) {
  const Eigen::Index pos = i >= j ? lower_position(M, i, j) : lower_position(M, j, i);
  return M.valuePtr()[pos];
}

SparseRestBlock::SparseRestBlock(SparseMatrix pattern, Index nxy)
    : S_(std::move(pattern)), nxy_(nxy) {
  S_.makeCompressed();
  S_.coeffs().setZero();
  chol_.analyzePattern(S_);
}

Status SparseRestBlock::factor(Index nx) {
  chol_.factorize(S_);
  if (chol_.info() != Eigen::Success) return Status::NotPositiveDefinite;
  W_ = chol_.permutationP() * sxz_.transpose();
  chol_.matrixL().solveInPlace(W_);
  Matrix C = sxx_.topLeftCorner(nx, nx);
  C.selfadjointView<Eigen::Lower>().rankUpdate(W_.leftCols(nx).transpose(), -1.0);
  Eigen::LLT<Matrix, Eigen::Lower> llt(C);
  if (llt.info() != Eigen::Success) return Status::NotPositiveDefinite;
  rx_ = llt.matrixL();
  return Status::Ok;
}

double SparseRestBlock::logdet_zz() const {
  const SparseMatrix& L = chol_.matrixL().nestedExpression();
  double ld = 0.0;
  // Each column of Eigen's simplicial factor starts with its diagonal entry.
  for (Index j = 0; j < L.cols(); ++j) ld += std::log(L.valuePtr()[L.outerIndexPtr()[j]]);
  return ld;
}

void SparseRestBlock::solution(Vector& s) const {
  const Index p = nxy_ - 1, mZ = mz();
  Vector beta = rx_.row(p).head(p).transpose();
  rx_.topLeftCorner(p, p).triangularView<Eigen::Lower>().adjoint().solveInPlace(beta);
  Vector v = W_.col(p) - W_.leftCols(p) * beta;
  chol_.matrixU().solveInPlace(v);
  s.resize(mZ + p);
  s.head(mZ) = chol_.permutationPinv() * v;
  s.tail(p) = beta;
}

SparseMatrix SparseRestBlock::inverse_on_pattern() const {
  // Z = (L L')^{-1} on L's pattern, columns from last to first (Takahashi): for column j with
  // off-diagonal rows k,
  //   Z(i, j) = -(1 / L_jj) sum_k L(k, j) Z(i, k)      (i in the column's rows)
  //   Z(j, j) = (1 / L_jj) (1 / L_jj - sum_k L(k, j) Z(k, j)).
  // Every Z(i, k) needed lies in L's pattern (the rows of a column form a clique of L).
  const SparseMatrix& L = chol_.matrixL().nestedExpression();
  const int* cp = L.outerIndexPtr();
  const int* ri = L.innerIndexPtr();
  const double* lx = L.valuePtr();
  SparseMatrix Z = L;  // same pattern; values overwritten from the last column on
  double* zx = Z.valuePtr();
  for (Index j = L.cols() - 1; j >= 0; --j) {
    const int c0 = cp[j], c1 = cp[j + 1];
    const double d = lx[c0];
    for (int a = c0 + 1; a < c1; ++a) {
      double sum = 0.0;
      for (int b = c0 + 1; b < c1; ++b) sum += lx[b] * lower_entry(Z, ri[a], ri[b]);
      zx[a] = -sum / d;
    }
    double sum = 0.0;
    for (int a = c0 + 1; a < c1; ++a) sum += lx[a] * zx[a];
    zx[c0] = (1.0 / d - sum) / d;
  }
  // Back to the original order on S_ZZ's pattern.
  const int* perm = chol_.permutationP().indices().data();
  SparseMatrix out = S_;
  for (Index s = 0; s < out.outerSize(); ++s)
    for (SparseMatrix::InnerIterator it(out, s); it; ++it)
      it.valueRef() = lower_entry(Z, perm[it.row()], perm[s]);
  return out;
}

}  // namespace mixedfit
