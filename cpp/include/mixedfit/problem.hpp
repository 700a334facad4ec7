// The linear mixed model in blocked form (MATH.md section 2).
//
// Terms arrive in lme4's order (decreasing number of levels). The first term's block of
// Omega = Lambda' A Lambda + I is block-diagonal (l_0 dense p_0 x p_0 blocks) and stays so in L.
// Everything after it -- the remaining random-effects terms, X and y -- forms one dense
// "rest" block of size m = mZ + p + 1. The off-diagonal block B = rest x term-0 is kept
// block-sparse by columns of term 0 (the levels of later terms that co-occur with each level of
// term 0), or dense when that pattern is dense enough; dense storage is the same layout with
// every row present, so one code path serves both.
//
// Per theta: scale, factor term 0's small blocks, scale and solve B, downdate and factor the
// rest block, sum log-diagonals.
//
// When the dense rest block would be too big or too slow (several large grouping factors), its
// random-effects part is stored and factored sparsely instead (rest_block.hpp,
// problem_sparse_rest.cpp), chosen by the same kind of cost model; a model whose factor would
// not fit in memory at all is refused at construction (build_status()). Nothing here touches the n observations; only
// set_response() (A from data, called once for an LMM and once per PIRLS step for a GLMM) does.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mixedfit/rest_block.hpp"
#include "mixedfit/status.hpp"

namespace mixedfit {

using Matrix = Eigen::MatrixXd;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXd;
using Index = Eigen::Index;

// All entries finite. Eigen's allFinite() tests element by element; a vectorized sum is
// finite exactly when no entry is NaN or infinite (barring overflow of a huge sum, which the
// exact test then settles).
template <typename Derived>
inline bool all_finite(const Eigen::DenseBase<Derived>& a) {
  if (std::isfinite(a.sum())) return true;
  return a.allFinite();
}

// One random-effects term: a grouping factor and its p-column model matrix.
struct TermData {
  const std::int32_t* g = nullptr;  // (n,) level codes in [0, nlev)
  int nlev = 0;
  int p = 0;                        // columns of the term's model matrix
  const double* Z = nullptr;        // (n, p), column-major
};

struct OneTermBlocks;  // one_term_gradient.hpp

struct Components {
  double ldL2 = 0, ldRX2 = 0, pwrss = 0, ussq = 0, wrss = 0, ldW = 0;
};

class Problem {
 public:
  // X: (n, p) column-major (p may be 0); y: (n,); w: (n,) prior weights or nullptr for ones.
  // The arrays must outlive the Problem (the bindings keep them alive): no copies are made.
  Problem(Index n, Index p, const double* X, std::vector<TermData> terms);

  // The cross-product entry (crossprod.cpp), for data that never sit in one place: the
  // problem from the term layout alone (terms' nlev and p; g and Z unused, may be null) and
  // the co-occurrence pattern of the levels: cooc[k - 1] holds pairs (level of term 0, level
  // of term k), flattened, for every pair that occurs together in some row (k = 1..K-1; any
  // order, repeats allowed). Such a problem has no rows: A comes from set_crossproduct, and
  // set_response, leverages and objective_gradient return NoRows; linear_predictor, z_times,
  // zt_times, dlambda_z, zt_times_rows and z_times_rows must not be called (has_rows()).
  static Problem from_crossproduct(Index n, Index p, std::vector<TermData> layout,
                                   const std::vector<std::vector<std::int64_t>>& cooc);
  // Install A = [Z X y]' W [Z X y] from lower-triangle entries (row >= col; an upper entry
  // is read as its mirror), coordinates in [u (q, in lambda_times' order), X (p), y (1)];
  // repeated coordinates add. sum_log_w: sum of log(w) over the rows (0 without weights).
  // OutsidePattern if an entry pairs levels the pattern does not list, BadDimension for a
  // coordinate out of range, NonFiniteInput for a non-finite value.
  Status set_crossproduct(Index nnz, const std::int64_t* rows, const std::int64_t* cols,
                          const double* vals, double sum_log_w);
  bool has_rows() const { return has_rows_; }

  // Form A = [Z X y]' W [Z X y] for this response and these weights. O(n).
  // need_ldW: also sum log(w) (the LMM objective's -log|W|; PIRLS does not need it).
  Status set_response(const double* y, const double* w, bool need_ldW = true);

  // The fixed effects in the system (the default) or out of it. Out, the Problem is the one
  // for X with no columns, [Z y] alone: a GLMM's stage that holds beta fixed (X beta is then
  // part of the response's offset) uses the same symbolic analysis as the stage that solves
  // for beta. Switching drops A and the factor (set_response() again); otherwise O(1).
  void include_fixed_effects(bool on);
  bool fixed_effects_included() const { return p_ == p_all_; }

  Index n() const { return n_; }
  // Columns of X in the system (0 while the fixed effects are left out).
  Index p() const { return p_; }
  Index q() const { return q_; }
  Index ntheta() const { return ntheta_; }
  int nterms() const { return static_cast<int>(terms_.size()); }
  bool rest_dense() const { return dense_; }
  // The rest block's random-effects part is stored and factored sparsely.
  bool rest_sparse() const { return sparse_rest_ != nullptr; }
  // Ok, or TooLarge when the model's factorization would not fit in memory: nothing large was
  // allocated, every other call then returns TooLarge, and build_message() names the sizes.
  Status build_status() const { return build_status_; }
  const std::string& build_message() const { return build_message_; }

  // Factor Omega at theta. Afterwards the components, the objective and the solution refer
  // to this theta.
  // with_response = false factors only [Z X] (enough for variances; pwrss is then 0 and
  // solve() must not be called).
  Status factor(const double* theta, bool with_response = true);
  // Profiled deviance (ML) or REML criterion at the last factored theta.
  double profiled_objective(bool reml) const;
  const Components& components() const { return comp_; }

  // Conditional solution at the last factored theta: beta (p), u (q). Fills ussq/wrss.
  Status solve(Vector& beta, Vector& u);
  // b = Lambda u, ordered term by term, level by level, column within level.
  void lambda_times(const Vector& u, Vector& b) const;
  // Unscaled covariance of beta: (L_XX L_XX')^{-1}, p x p.
  Status unscaled_vcov(Matrix& V) const;
  // Per-level diagonal blocks of Lambda (Lambda'Z'WZ Lambda + I)^{-1} Lambda', term by term:
  // out[k] is (p_k, p_k * nlev_k), block for level j in columns j*p_k .. j*p_k+p_k-1.
  Status cond_var(std::vector<Matrix>& out) const;
  // eta = X beta + Z b (no offset). b ordered as by lambda_times. O(n).
  void linear_predictor(const double* beta, const double* b, double* eta) const;

  // log|L_ZZ|^2 alone (used by the GLMM Laplace approximation).
  double ldL2() const { return comp_.ldL2; }
  // Install theta's Lambda without factoring (for lambda_times before any factor()).
  void install_theta(const double* theta) { fill_lambdas(theta); }
  // Factored diagonal blocks of the first term (l_0 blocks of p_0 x p_0), for AGQ.
  const Vector& first_term_factor() const { return L11_; }
  const std::vector<TermData>& terms() const { return terms_; }

  // --- Pieces for derivatives of the GLMM Laplace objective (at the last factored theta) ---
  // Solve with the factored system, in place, for the columns of B: with_x = false, the
  // random-effects part G = Lambda' Z'WZ Lambda + I (B has q rows, u's layout); with_x =
  // true, the (u, beta) system (q + p rows, beta last).
  Status solve_system(Matrix& B, bool with_x) const;
  // With v_i = Lambda' z_i (z_i the i-th row of Z) and G as above: h_i = v_i' G^{-1} v_i, and
  // T(i, k) = (dLambda/dtheta_k' z_i)' G^{-1} v_i for every theta component k. Needs the
  // selected entries of G^{-1} only (those of the blocked factor's pattern). with_x: the
  // same T for the (u, beta) system M and v_i = [Lambda' z_i; x_i] (h is then left empty).
  Status leverages(Vector& h, Matrix& T, bool with_x = false) const;
  // Gradient of profiled_objective(reml) in theta at the last factor and solve(), from the
  // rows of the last set_response (which must still be alive; NoRows without them).
  Status objective_gradient(bool reml, const Vector& beta, const Vector& u, Vector& grad) const;
  // The criterion at theta and its gradient. A one-term model's come from A's blocks alone in
  // one pass (one_term_gradient.hpp: no factorization, also for a Problem built from cross
  // products; the last factor is left as it was); others' from factor(), solve() and
  // objective_gradient().
  Status value_and_gradient(const double* theta, bool reml, double& value, Vector& grad);
  // Views of A's blocks for a one-term model after set_response (P = 0 otherwise), for the
  // O(levels) criterion and gradient of one_term_gradient.hpp. Valid while this Problem lives
  // and until the next set_response.
  OneTermBlocks one_term_blocks() const;
  // out = Z v (n) and out = Z' v (q, u's layout).
  void z_times(const double* v, double* out) const;
  void zt_times(const double* v, Vector& out) const;
  // out = Lambda' x.
  void lambdat_times(const Vector& x, Vector& out) const;
  // out = (dLambda/dtheta_k) x, or its transpose times x.
  void dlambda_times(Index k, const Vector& x, Vector& out, bool transpose) const;
  // out (n) = Z (dLambda/dtheta_k) u.
  void dlambda_z(Index k, const Vector& u, double* out) const;
  // Several columns at once, rows contiguous: out (q x P) = Z' M (M n x P); out (n x P) = Z B.
  void zt_times_rows(const RowMatrix& M, RowMatrix& out) const;
  void z_times_rows(const RowMatrix& B, RowMatrix& out) const;
  // B (q x P) <- Lambda B, or Lambda' B.
  void lambda_rows(RowMatrix& B, bool transpose) const;

 private:
  Problem() = default;  // for from_crossproduct
  // Sizes and offsets of the blocks from the terms' nlev and p (both entries).
  void init_layout();
  // Whether the coupling block B is stored dense, given the cost of its sparse downdate.
  bool prefer_dense_coupling(double sparse_cost) const;
  // The row constructor's symbolic analysis of B: colptr_, rowidx_, dense_ and obs_pos_.
  void analyze_coupling();
  // Appends level c's rest-Z rows (their terms' first rows `starts`, sorted) to the sparse
  // pattern; returns the level's share of the sparse downdate's cost.
  double append_level_pattern(int c, const std::vector<Index>& starts);
  // Chooses dense storage for B when prefer_dense_coupling() says so (then the pattern is
  // every row for every level); returns dense_.
  bool use_dense_coupling_if_cheaper(double sparse_cost);
  // The cross-product entry's half of the symbolic analysis: colptr_, rowidx_, dense_.
  void pattern_from_pairs(const std::vector<std::vector<std::int64_t>>& cooc);
  // Adds v to A at (i, j) of [u X y] (i >= j); false if outside the pattern.
  bool add_crossproduct_entry(Index i, Index j, double v);
  void fill_lambdas(const double* theta);
  // The first term's part of factor() and solve() (first_term.cpp, fixed-size block kernels):
  // L11_ from A11_; B~ = Lambda_rest' B lam0 L^{-T} (BXt_ and BZt_, from copies of BX_ and BZ_);
  // the sum of log-diagonals of L11_; u's first-term part given beta and the rest part s.
  bool factor_first_term();
  void scale_coupling();
  void scale_rest_rows(double* V, Index rc, Index c0) const;
  double first_term_logdet() const;
  // The criterion's components from the factor's log-determinants (log|L_Z|, log|R_X|, halves
  // of ldL2 and ldRX2) and its last diagonal entry r_yy; marks the problem factored.
  Status set_components(double logdet_zz, double logdet_xx, double r_yy);
  void solve_first_term(const Vector& beta, const Vector& s, Vector& u);
  // leverages() for a single term of 1-4 columns, with fixed-size blocks.
  Status leverages_single_term(Vector& h, Matrix& T, bool with_x) const;
  void scale_rest_lower();
  void add_z_times(const double* b, double* out) const;
  // y = R^{-1} L21_c for level c of a scalar term 0 (sparse coupling); returns y's first row
  // that can be nonzero.
  Index rinv_times_coupling(const Matrix& Rinv, int c, Index px, Vector& y) const;
  // leverages() for two scalar terms with a sparse coupling block, without a dense S22.
  Status leverages_two_scalar(Vector& h, Matrix& T) const;
  // d log|M| / dtheta (M: G, or with_x the (u, beta) system) when every term is scalar.
  Status logdet_gradient_scalar(bool with_x, Vector& g) const;
  // The sparse rest block (problem_sparse_rest.cpp): storage choice at construction, A, factor,
  // solution and conditional variances.
  void choose_rest_storage();
  SparseMatrix rest_pattern() const;
  // Records TooLarge with a message naming the sizes; sparse_bytes < 0: not estimated,
  // sparse_at_least: the estimate stopped early (a lower bound).
  void refuse_too_large(double dense_bytes, double sparse_bytes, bool sparse_at_least);
  Status set_response_sparse_rest(const double* y, const double* w);
  void scale_sparse_rest();
  Status factor_sparse_rest(bool with_response);
  Status cond_var_sparse_rest(std::vector<Matrix>& out) const;
  // theta component k: its term, its (row, col) in the term's template, and the term's first
  // position in u.
  void theta_entry(Index k, int& term, int& row, int& col, Index& start) const;

  Index n_ = 0, p_ = 0;
  Index p_all_ = 0;                 // X's columns; p_ is p_all_ or 0 (include_fixed_effects)
  const double* X_ = nullptr;
  std::vector<TermData> terms_;
  bool has_rows_ = true;            // false for a problem from cross products
  Index q_ = 0, q0_ = 0, mZ_ = 0, m_ = 0;
  int p0_ = 0, l0_ = 0;
  Index ntheta_ = 0;
  std::vector<Index> offset_;      // for term k >= 1: first row in the rest block
  std::vector<int> row_term_;       // rest-Z row -> term index
  bool dense_ = false;
  bool rest_scalar_ = true;         // every rest term has p_k == 1

  // B = rest-Z x term-0 block-sparse pattern (CSC by level of term 0).
  std::vector<Index> colptr_;       // (l0 + 1) into rowidx_
  std::vector<Index> rowidx_;       // rest-Z rows (scalar granularity), sorted per level
  std::vector<Index> obs_pos_;      // (n, nterms-1): position of row-start in rowidx_ for obs i
  // A's values.
  Vector A11_;                      // l0 blocks p0 x p0
  Vector BZ_;                       // per level c: (colptr[c+1]-colptr[c]) x p0, column-major
  Matrix BX_;                       // (p+1, q0): [X y]' W Z_0
  Matrix Arest_;                    // (m, m), lower triangle
  double ldW_ = 0;
  const double* y_ = nullptr;       // the last response and weights (not owned)
  const double* w_ = nullptr;
  // Row-major [X y] with rows padded to a fixed width (0: too wide, unused), for
  // set_response's one pass over the observations: X written once, y per response. A first
  // pass reads X's columns instead (an LMM makes only one: a copy would cost more to write,
  // in fresh pages, than it saves); the copy is built for the second (a GLMM's PIRLS steps).
  // One layout with the fixed effects in the system and one without (y alone).
  struct PaddedRows {
    Vector values;
    int width = 0;
    int passes = 0;  // set_response calls with this layout so far (counted up to 2)
  };
  PaddedRows rows_with_x_, rows_without_x_;
  // The current layout's rows, counting this pass; values are filled from the second pass.
  PaddedRows& padded_rows_for_pass();
  bool have_A_ = false;

  // Per-theta workspace.
  std::vector<Matrix> lambda_;      // per term p_k x p_k lower triangular
  Vector L11_;                      // l0 factored blocks
  Vector block_work_;               // p0 x p0 scratch for the dynamic-size block kernels
  Vector rest_lambda_;              // per rest-Z row, its scalar term's lambda (all scalar)
  Vector BZt_;
  Matrix BXt_;
  Matrix R_;                        // (m, m) factored rest block
  Vector scale_;                    // rest scaling when every rest term is scalar
  Components comp_;
  bool factored_ = false;
  std::unique_ptr<SparseRestBlock> sparse_rest_;  // null: the dense rest block (R_, Arest_)
  Status build_status_ = Status::Ok;
  std::string build_message_;
};

}  // namespace mixedfit
