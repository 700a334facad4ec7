// cholesky_lower (dense_chol.cpp) against Eigen's LLT on random SPD matrices, with one thread
// and with several, on the automatic path and with forced blocking; and its failure report.
#include <Eigen/Cholesky>
#include <limits>
#include <random>

#include "check.hpp"
#include "mixedfit/dense_chol.hpp"

using Eigen::MatrixXd;

namespace {

// A random SPD matrix of order n: G G' / n + I, well conditioned.
MatrixXd random_spd(Eigen::Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  MatrixXd G(n, n);
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < n; ++i) G(i, j) = normal(rng);
  return G * G.transpose() / static_cast<double>(n) + MatrixXd::Identity(n, n);
}

// Largest absolute difference between the lower triangles of cholesky_lower's result on A
// and L (Eigen's LLT of A); the strict upper triangle must be left as it was.
double max_diff(const MatrixXd& A, const MatrixXd& L, int threads, int block) {
  MatrixXd work = A;
  const bool ok = mixedfit::cholesky_lower(work, threads, block);
  CHECK(ok);
  CHECK(work.triangularView<Eigen::StrictlyUpper>().toDenseMatrix() ==
        A.triangularView<Eigen::StrictlyUpper>().toDenseMatrix());
  const MatrixXd ours = work.triangularView<Eigen::Lower>();
  return (ours - L).cwiseAbs().maxCoeff();
}

void agrees_with_llt() {
  // The automatic choice on both sides of its threshold (order 384), and forced blocking with
  // widths that do not divide the order, and one that exceeds it. (Small orders keep the test
  // fast in an unoptimized sanitizer build.)
  for (Eigen::Index n : {1, 7, 100, 400}) {
    const MatrixXd A = random_spd(n, 17u + static_cast<unsigned>(n));
    const MatrixXd L = A.llt().matrixL();
    for (int threads : {1, 2, 3}) {
      CHECK_NEAR(max_diff(A, L, threads, 0), 0.0, 1e-12);
      if (n > 100) continue;
      CHECK_NEAR(max_diff(A, L, threads, 16), 0.0, 1e-12);
      CHECK_NEAR(max_diff(A, L, threads, 24), 0.0, 1e-12);
      CHECK_NEAR(max_diff(A, L, threads, 512), 0.0, 1e-12);
    }
  }
}

void threads_give_the_same_factor() {
  const MatrixXd A = random_spd(150, 5u);
  MatrixXd one = A, many = A;
  CHECK(mixedfit::cholesky_lower(one, 1, 16));
  CHECK(mixedfit::cholesky_lower(many, 4, 16));
  const MatrixXd diff = (one - many).triangularView<Eigen::Lower>();
  CHECK_NEAR(diff.cwiseAbs().maxCoeff(), 0.0, 1e-13);
}

void reports_not_positive_definite() {
  for (int threads : {1, 2}) {
    for (int block : {0, 16}) {
      MatrixXd A = random_spd(block ? 120 : 400, 9u);
      A(90, 90) = -1.0;  // a negative pivot late in the matrix
      CHECK(!mixedfit::cholesky_lower(A, threads, block));

      MatrixXd B = random_spd(50, 3u);
      B(10, 4) = std::numeric_limits<double>::quiet_NaN();  // lower triangle only
      CHECK(!mixedfit::cholesky_lower(B, threads, block));

      MatrixXd C = random_spd(30, 4u);
      C(29, 29) = std::numeric_limits<double>::infinity();
      CHECK(!mixedfit::cholesky_lower(C, threads, block));
    }
  }
}

void thread_setting_is_clamped() {
  const int before = mixedfit::num_threads();
  CHECK(before >= 1);
  mixedfit::set_num_threads(0);
  CHECK(mixedfit::num_threads() == 1);
  mixedfit::set_num_threads(3);
  CHECK(mixedfit::num_threads() == 3);
  mixedfit::set_num_threads(before);
}

}  // namespace

int main() {
  agrees_with_llt();
  threads_give_the_same_factor();
  reports_not_positive_definite();
  thread_setting_is_clamped();
  return mixedfit_test::finish("test_dense_chol");
}
