// The rest block of Omega stored and factored as a sparse matrix (MATH.md section 2).
//
// Problem keeps the rest block (the random effects of the terms after the first, then [X y])
// dense when that is cheap. A second large grouping factor makes the dense block huge (50,000
// classes besides 200,000 students: 20 GB) although it is mostly zeros: after the first term is
// eliminated its pattern is the union, over the levels of the first term, of the cliques of
// rest rows that co-occur with each level. Here the block
//   S = [S_ZZ S_XZ'; S_XZ S_XX]   (S_ZZ: mZ x mZ sparse; S_XZ: (p+1) x mZ and S_XX dense)
// is factored as a bordered system:
//   P S_ZZ P' = L L'              (AMD fill-reducing ordering P, Eigen's SimplicialLLT;
//                                  symbolic analysis once, numeric factorization per theta)
//   W = L^{-1} P S_XZ'            (mZ x (p+1))
//   S_XX - W' W = R_X R_X'        (dense, (p+1) x (p+1))
// so that, in the permuted order, S's factor is [L 0; W' R_X].
//
// The block also holds A's values for its part (set once per response): A_ZZ on S_ZZ's
// pattern, A_XZ and A_XX dense. Problem fills them and S (problem_sparse_rest.cpp); this class
// only stores, factors, solves and inverts.
#pragma once

#include <Eigen/Dense>
#include <Eigen/SparseCholesky>
#include <Eigen/SparseCore>
#include <string>

#include "mixedfit/status.hpp"

namespace mixedfit {

using SparseMatrix = Eigen::SparseMatrix<double, Eigen::ColMajor, int>;

// How the rest block is stored: chosen by the cost model (Auto) or forced (tests, benchmarks).
enum class RestStorage { Auto, Dense, Sparse };
// Library-wide setting, read by each Problem when it is constructed. The default is Auto; the
// environment variable MIXEDFIT_REST_STORAGE=auto|dense|sparse, read at first use, overrides it.
RestStorage rest_storage();
void set_rest_storage(RestStorage s);
// "auto", "dense", "sparse" <-> RestStorage; parse returns false for anything else.
bool parse_rest_storage(const std::string& name, RestStorage& out);
const char* rest_storage_name(RestStorage s);

// Physical memory of this machine in bytes: the size guard's budget.
double physical_memory_bytes();

// Size of the sparse Cholesky factor of a symmetric pattern under AMD ordering, from the
// elimination tree and the row subtrees (no numeric work, no factor allocated).
struct SparseFactorEstimate {
  bool complete = false;  // false: counting stopped when the factor exceeded the cap
  double nnz = 0;         // entries of L (a lower bound when !complete)
  double flops = 0;       // sum over columns of (entries in the column)^2
};
// lower: the lower triangle (diagonal included) of a symmetric pattern; its values are unused.
SparseFactorEstimate estimate_sparse_cholesky(const SparseMatrix& lower, double nnz_cap);

// Entry (i, j) of a symmetric matrix stored as its lower triangle (either order of i, j);
// (i, j) must be in the pattern.
double lower_entry(const SparseMatrix& M, Eigen::Index i, Eigen::Index j);
// Position of entry (i, j), i >= j, in M's value array; -1 when it is not in the pattern.
Eigen::Index lower_position(const SparseMatrix& M, Eigen::Index i, Eigen::Index j);

class SparseRestBlock {
 public:
  using Matrix = Eigen::MatrixXd;
  using Vector = Eigen::VectorXd;
  using Index = Eigen::Index;

  // pattern: S_ZZ's lower triangle, diagonal included (values ignored); nxy = p + 1.
  SparseRestBlock(SparseMatrix pattern, Index nxy);

  Index mz() const { return S_.rows(); }
  Index nxy() const { return nxy_; }
  // The border's width, when the Problem's fixed effects enter or leave the system.
  void set_nxy(Index nxy) { nxy_ = nxy; }
  // A's values (filled by set_response): A_ZZ on the pattern, A_XZ (nxy x mZ), A_XX (lower).
  const SparseMatrix& pattern() const { return S_; }
  Vector& a_zz() { return azz_; }
  const Vector& a_zz() const { return azz_; }
  Matrix& a_xz() { return axz_; }
  Matrix& a_xx() { return axx_; }
  // S's values for this theta (filled by the caller before factor()).
  double* s_zz() { return S_.valuePtr(); }
  Matrix& s_xz() { return sxz_; }
  Matrix& s_xx() { return sxx_; }

  // Factors S_ZZ, forms W and factors the leading nx x nx part of the Schur complement
  // (nx = nxy, or nxy - 1 to leave the response out).
  Status factor(Index nx);
  // log|L| (half of log|S_ZZ|) and R_X (nx x nx, lower) of the last factor().
  double logdet_zz() const;
  const Matrix& schur_factor() const { return rx_; }
  // The solution part of the rest block: s = [u_rest; beta] (mZ + p, u_rest in the original
  // order) with beta = R_XX^{-T} r and u_rest = P' L^{-T} (w_y - W_X beta), where [w_y; r] is
  // the factor's last row. Needs factor(nxy).
  void solution(Vector& s) const;
  // S_ZZ^{-1} on S_ZZ's pattern (original order, lower triangle), by the Takahashi recurrences
  // on L's pattern: O(sum over columns of count^2) lookups, no dense inverse.
  SparseMatrix inverse_on_pattern() const;

 private:
  SparseMatrix S_;
  Index nxy_;
  Vector azz_;
  Matrix axz_, axx_, sxz_, sxx_;
  Eigen::SimplicialLLT<SparseMatrix, Eigen::Lower, Eigen::AMDOrdering<int>> chol_;
  Matrix W_;   // mZ x nxy
  Matrix rx_;  // nx x nx
};

}  // namespace mixedfit
