// The sparse rest block (rest_block.cpp, problem_sparse_rest.cpp): the bordered sparse
// factorization against a dense one of the same matrix (log-determinant, Schur factor,
// solution, selected inverse), the factor-size estimate against the factor Eigen computes,
// Problem's objective and solution at fixed theta on the sparse path against the dense path,
// and the size guard (a model whose dense rest block would need terabytes is refused at
// construction without allocating it).
#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "mixedfit/problem.hpp"
#include "mixedfit/rest_block.hpp"

using mixedfit::Index;
using mixedfit::Matrix;
using mixedfit::Problem;
using mixedfit::RestStorage;
using mixedfit::SparseMatrix;
using mixedfit::SparseRestBlock;
using mixedfit::Status;
using mixedfit::TermData;
using mixedfit::Vector;

namespace {

// A random symmetric positive definite matrix of order m with a sparse pattern (a path plus a
// few random pairs), and its dense copy.
Matrix random_sparse_spd(Index m, std::mt19937& rng) {
  std::uniform_int_distribution<Index> pick(0, m - 1);
  std::normal_distribution<double> normal;
  Matrix A = Matrix::Zero(m, m);
  for (Index i = 0; i + 1 < m; ++i) A(i + 1, i) = normal(rng);
  for (int t = 0; t < 2 * static_cast<int>(m); ++t) {
    const Index i = pick(rng), j = pick(rng);
    if (i != j) A(std::max(i, j), std::min(i, j)) = normal(rng);
  }
  Matrix S = A * A.transpose();
  S.diagonal().array() += 1.0;
  return S;
}

SparseMatrix lower_pattern(const Matrix& S) {
  SparseMatrix out = S.triangularView<Eigen::Lower>().toDenseMatrix().sparseView();
  out.makeCompressed();
  return out;
}

void test_bordered_factor() {
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  const Index mZ = 60, nxy = 3;
  const Matrix Szz = random_sparse_spd(mZ, rng);
  Matrix Sxz(nxy, mZ);
  for (Index j = 0; j < mZ; ++j)
    for (Index i = 0; i < nxy; ++i) Sxz(i, j) = 0.1 * normal(rng);
  Matrix Sxx = Matrix::Identity(nxy, nxy) * 50.0;
  SparseMatrix pattern = lower_pattern(Szz);
  SparseRestBlock rb(pattern, nxy);
  std::copy(pattern.valuePtr(), pattern.valuePtr() + pattern.nonZeros(), rb.s_zz());
  rb.s_xz() = Sxz;
  rb.s_xx() = Sxx;
  CHECK(rb.factor(nxy) == Status::Ok);

  // The whole block, factored densely in the original order.
  Matrix S(mZ + nxy, mZ + nxy);
  S << Szz, Sxz.transpose(), Sxz, Sxx;
  const Eigen::LLT<Matrix> dense(S);
  const Matrix L = dense.matrixL();
  double ld = 0.0;
  for (Index r = 0; r < mZ; ++r) ld += std::log(L(r, r));
  CHECK_NEAR(rb.logdet_zz(), ld, 1e-10);
  // R_X is the trailing block of the dense factor: the Schur complement's factor.
  CHECK((rb.schur_factor() - L.bottomRightCorner(nxy, nxy)).cwiseAbs().maxCoeff() < 1e-10);
  // solution(): R_mr^{-T} applied to the factor's last row (mr = mZ + p), as Problem::solve.
  const Index mr = mZ + nxy - 1;
  Vector s_dense = L.row(mZ + nxy - 1).head(mr).transpose();
  L.topLeftCorner(mr, mr).triangularView<Eigen::Lower>().adjoint().solveInPlace(s_dense);
  Vector s;
  rb.solution(s);
  CHECK((s - s_dense).cwiseAbs().maxCoeff() < 1e-10);
  // The selected inverse equals the dense inverse on the pattern.
  const Matrix inv = Szz.inverse();
  const SparseMatrix sel = rb.inverse_on_pattern();
  double err = 0.0;
  for (Index j = 0; j < sel.outerSize(); ++j)
    for (SparseMatrix::InnerIterator it(sel, j); it; ++it)
      err = std::max(err, std::fabs(it.value() - inv(it.row(), j)));
  CHECK(err < 1e-10);
  // A matrix that is not positive definite is reported, not factored.
  SparseRestBlock bad(pattern, nxy);
  std::copy(pattern.valuePtr(), pattern.valuePtr() + pattern.nonZeros(), bad.s_zz());
  bad.s_zz()[0] = -1.0;
  bad.s_xz() = Sxz;
  bad.s_xx() = Sxx;
  CHECK(bad.factor(nxy) == Status::NotPositiveDefinite);
}

void test_factor_estimate() {
  std::mt19937 rng(11);
  const Matrix Szz = random_sparse_spd(80, rng);
  const SparseMatrix pattern = lower_pattern(Szz);
  const auto est = mixedfit::estimate_sparse_cholesky(pattern, 1e12);
  CHECK(est.complete);
  Eigen::SimplicialLLT<SparseMatrix, Eigen::Lower, Eigen::AMDOrdering<int>> chol(pattern);
  CHECK(chol.info() == Eigen::Success);
  CHECK_NEAR(est.nnz, static_cast<double>(chol.matrixL().nestedExpression().nonZeros()), 0.0);
  // A cap below the factor's size stops the count early with a lower bound above the cap.
  const auto capped = mixedfit::estimate_sparse_cholesky(pattern, 100.0);
  CHECK(!capped.complete);
  CHECK(capped.nnz > 100.0);
}

// Three scalar terms, students in classes in schools with some students in two classes, or a
// vector term in the middle (slope = true).
struct Nested {
  Index n;
  std::vector<std::int32_t> g0, g1, g2;
  Matrix Z0, Z1, Z2, X;
  Vector y;
};

Nested make_nested(bool slope) {
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif;
  Nested d;
  const int students = 120, per = 5;
  d.n = students * per;
  d.X.resize(d.n, 2);
  d.y.resize(d.n);
  for (int s = 0; s < students; ++s)
    for (int r = 0; r < per; ++r) {
      const int home = s / 4, klass = unif(rng) < 0.15 ? (home / 5) * 5 + (home + 1) % 5 : home;
      d.g0.push_back(s);
      d.g1.push_back(klass);
      d.g2.push_back(klass / 5);
    }
  d.Z0.setOnes(d.n, 1);
  d.Z1.setOnes(d.n, slope ? 2 : 1);
  d.Z2.setOnes(d.n, 1);
  for (Index i = 0; i < d.n; ++i) {
    const double x = normal(rng);
    d.X(i, 0) = 1.0;
    d.X(i, 1) = x;
    if (slope) d.Z1(i, 1) = x;
    d.y[i] = 1.0 + 0.5 * x + normal(rng) + 0.3 * d.g1[i] / 30.0;
  }
  return d;
}

std::vector<TermData> nested_terms(const Nested& d) {
  return {TermData{d.g0.data(), 120, 1, d.Z0.data()},
          TermData{d.g1.data(), 30, static_cast<int>(d.Z1.cols()), d.Z1.data()},
          TermData{d.g2.data(), 6, 1, d.Z2.data()}};
}

void test_problem_sparse_equals_dense(bool slope) {
  const Nested d = make_nested(slope);
  const std::vector<double> theta =
      slope ? std::vector<double>{0.9, 0.6, 0.1, 0.4, 0.5} : std::vector<double>{0.9, 0.6, 0.5};
  double obj[2];
  Vector beta[2], u[2];
  std::vector<Matrix> cv[2];
  for (int sparse = 0; sparse < 2; ++sparse) {
    mixedfit::set_rest_storage(sparse ? RestStorage::Sparse : RestStorage::Dense);
    Problem prob(d.n, 2, d.X.data(), nested_terms(d));
    CHECK(prob.rest_sparse() == (sparse == 1));
    CHECK(prob.set_response(d.y.data(), nullptr) == Status::Ok);
    CHECK(prob.factor(theta.data()) == Status::Ok);
    obj[sparse] = prob.profiled_objective(true);
    CHECK(prob.solve(beta[sparse], u[sparse]) == Status::Ok);
    CHECK(prob.cond_var(cv[sparse]) == Status::Ok);
    if (sparse) {
      Vector h;
      Matrix T;
      CHECK(prob.leverages(h, T) == Status::SparseRestUnsupported);
    }
  }
  mixedfit::set_rest_storage(RestStorage::Auto);
  CHECK_NEAR(obj[0], obj[1], 1e-10 * std::fabs(obj[0]));
  CHECK((beta[0] - beta[1]).cwiseAbs().maxCoeff() < 1e-10);
  CHECK((u[0] - u[1]).cwiseAbs().maxCoeff() < 1e-10);
  for (size_t k = 0; k < cv[0].size(); ++k)
    CHECK((cv[0][k] - cv[1][k]).cwiseAbs().maxCoeff() < 1e-10);
}

void test_size_guard() {
  // Four rows, but terms declared with 600,000 and 400,000 levels: a dense rest block of order
  // 400,003 needs 2.6 TB. Forced dense, the Problem refuses before allocating it.
  std::vector<std::int32_t> g0{0, 1, 2, 3}, g1{0, 0, 1, 1};
  Matrix Z = Matrix::Ones(4, 1), X = Matrix::Ones(4, 1);
  Vector y(4);
  y << 1.0, 2.0, 3.0, 5.0;
  mixedfit::set_rest_storage(RestStorage::Dense);
  Problem prob(4, 1, X.data(),
               {TermData{g0.data(), 600000, 1, Z.data()}, TermData{g1.data(), 400000, 1, Z.data()}});
  mixedfit::set_rest_storage(RestStorage::Auto);
  CHECK(prob.build_status() == Status::TooLarge);
  CHECK(prob.build_message().find("600000, 400000 levels") != std::string::npos);
  CHECK(prob.build_message().find("400002") != std::string::npos);
  CHECK(prob.build_message().find("TB") != std::string::npos);
  CHECK(prob.set_response(y.data(), nullptr) == Status::TooLarge);
  const double theta[2] = {1.0, 1.0};
  CHECK(prob.factor(theta) == Status::NotEvaluated);
  // Under Auto the same model takes the sparse path: its factor is tiny.
  Problem fits(4, 1, X.data(),
               {TermData{g0.data(), 600000, 1, Z.data()}, TermData{g1.data(), 400000, 1, Z.data()}});
  CHECK(fits.build_status() == Status::Ok);
  CHECK(fits.rest_sparse());
}

}  // namespace

int main() {
  test_bordered_factor();
  test_factor_estimate();
  test_problem_sparse_equals_dense(false);
  test_problem_sparse_equals_dense(true);
  test_size_guard();
  return mixedfit_test::finish("test_rest_block");
}
