// The first term's block kernels (block_kernels.hpp), conditional covariance included, against the same computation with
// Eigen's dynamic-size products and solves, for every fixed block size (1..4) and the dynamic
// fallback (sizes 1..6 run through it too), on random well-conditioned blocks.
#include <Eigen/Dense>
#include <random>

#include "check.hpp"
#include "mixedfit/block_kernels.hpp"

using Eigen::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;
namespace blocks = mixedfit::blocks;

namespace {

constexpr double kTol = 1e-12;

MatrixXd random_matrix(std::mt19937& rng, Index r, Index c) {
  std::normal_distribution<double> nd;
  MatrixXd M(r, c);
  for (Index j = 0; j < c; ++j)
    for (Index i = 0; i < r; ++i) M(i, j) = nd(rng);
  return M;
}

// A lower-triangular matrix with a diagonal bounded away from zero (a Lambda or a factor).
MatrixXd random_lower(std::mt19937& rng, int p) {
  MatrixXd L = random_matrix(rng, p, p).triangularView<Eigen::Lower>();
  for (int i = 0; i < p; ++i) L(i, i) = 0.5 + std::abs(L(i, i));
  return L;
}

// Largest absolute entry difference relative to the reference's largest entry (at least 1).
double rel_diff(const MatrixXd& a, const MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

// Every kernel for block size p, run with template argument P (p itself or kDynamicBlock).
template <int P>
void check_kernels(std::mt19937& rng, int p) {
  MatrixXd work(p, p);
  // factor_scaled_block: chol(lam' A lam + I), A symmetric positive semi-definite (a Gram
  // matrix) with only its lower triangle meaningful.
  const MatrixXd G = random_matrix(rng, 3 * p, p);
  MatrixXd A = G.transpose() * G;
  const MatrixXd lam = random_lower(rng, p);
  MatrixXd expect = lam.transpose() * A * lam + MatrixXd::Identity(p, p);
  expect = Eigen::LLT<MatrixXd>(expect).matrixL();
  A.triangularView<Eigen::StrictlyUpper>().setConstant(std::nan(""));  // must not be read
  MatrixXd L(p, p);
  CHECK(blocks::factor_scaled_block<P>(A.data(), lam.data(), L.data(), p, work.data()));
  CHECK(rel_diff(L, expect) < kTol);

  // cholesky_in_place reports a block that is not positive definite.
  MatrixXd indefinite = MatrixXd::Identity(p, p);
  indefinite(p - 1, p - 1) = -1.0;
  CHECK(!blocks::cholesky_in_place<P>(indefinite.data(), p));

  // right_multiply_lower and right_solve_lower_transpose on r x p row blocks, including r = 0.
  for (Index r : {Index{0}, Index{1}, Index{3}, Index{17}}) {
    const MatrixXd V = random_matrix(rng, r, p);
    MatrixXd got = V;
    blocks::right_multiply_lower<P>(got.data(), r, lam.data(), p);
    if (r > 0) CHECK(rel_diff(got, V * lam) < kTol);
    got = V;
    blocks::right_solve_lower_transpose<P>(got.data(), r, L.data(), p);
    if (r > 0) {
      const MatrixXd want = L.triangularView<Eigen::Lower>()
                                .solve(V.transpose())
                                .transpose();  // V L^{-T}
      CHECK(rel_diff(got, want) < kTol);
    }
  }

  // solve_lower and solve_lower_transpose.
  const VectorXd x = random_matrix(rng, p, 1);
  VectorXd got = x;
  blocks::solve_lower<P>(L.data(), got.data(), p);
  CHECK(rel_diff(got, L.triangularView<Eigen::Lower>().solve(x)) < kTol);
  got = x;
  blocks::solve_lower_transpose<P>(L.data(), got.data(), p);
  CHECK(rel_diff(got, L.triangularView<Eigen::Lower>().transpose().solve(x)) < kTol);

  // conditional_covariance_block: lam L^{-T} G L^{-1} lam' with G = I + D' D.
  const MatrixXd D = random_matrix(rng, 4, p);
  const MatrixXd Gm = MatrixXd::Identity(p, p) + D.transpose() * D;
  MatrixXd C(p, p), work2(p, 2 * p);
  blocks::conditional_covariance_block<P>(L.data(), Gm.data(), lam.data(), C.data(), p,
                                          work2.data());
  MatrixXd Linv = MatrixXd::Identity(p, p);
  L.triangularView<Eigen::Lower>().solveInPlace(Linv);
  CHECK(rel_diff(C, lam * Linv.transpose() * Gm * Linv * lam.transpose()) < kTol);

  // log_diagonal_sum over several consecutive blocks.
  MatrixXd three(p, 3 * p);
  double want = 0.0;
  for (int c = 0; c < 3; ++c) {
    three.middleCols(c * p, p) = random_lower(rng, p);
    want += three.middleCols(c * p, p).diagonal().array().log().sum();
  }
  CHECK_NEAR(blocks::log_diagonal_sum<P>(three.data(), 3, p), want, kTol * (1.0 + std::abs(want)));
}

// LogProduct over factors that overflow and underflow a double by far when multiplied
// (1e300 and 1e-300 in runs), against the sum of their logs.
void log_product_stays_in_range() {
  blocks::LogProduct prod;
  double want = 0.0;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-300.0, 300.0);
  for (int k = 0; k < 20000; ++k) {
    const double f = std::pow(10.0, k < 100 ? 300.0 : k < 200 ? -300.0 : exponent(rng));
    prod.multiply(f);
    want += std::log(f);
  }
  CHECK_NEAR(prod.log(), want, 1e-12 * std::abs(want) + 1e-9);
  blocks::LogProduct ones;
  for (int k = 0; k < 1000; ++k) ones.multiply(1.0);
  CHECK(ones.log() == 0.0);
}

}  // namespace

int main() {
  log_product_stays_in_range();
  std::mt19937 rng(20261202);
  for (int rep = 0; rep < 20; ++rep) {
    check_kernels<1>(rng, 1);
    check_kernels<2>(rng, 2);
    check_kernels<3>(rng, 3);
    check_kernels<4>(rng, 4);
    for (int p = 1; p <= 6; ++p) check_kernels<blocks::kDynamicBlock>(rng, p);
  }
  // with_block_size picks the fixed size for 1..4 and the dynamic kernels above.
  for (int p = 1; p <= 6; ++p) {
    const int P = blocks::with_block_size(p, [](auto size) { return decltype(size)::value; });
    CHECK(P == (p <= blocks::kMaxFixedBlock ? p : blocks::kDynamicBlock));
  }
  return mixedfit_test::finish("test_block_kernels");
}
