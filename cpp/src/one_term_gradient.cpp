// The one-term profiled criterion and its gradient from A's blocks: see one_term_gradient.hpp.
#include "mixedfit/one_term_gradient.hpp"

#include "mixedfit/block_kernels.hpp"

#include <cmath>
#include <vector>

namespace mixedfit {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Sums over the levels: S = D - sum B K B', sum G A, and Q_k = sum U e_i e_j' V' per theta_k.
struct LevelSums {
  Matrix S;                  // (p+1) x (p+1)
  Matrix GA;                 // P x P
  std::vector<Matrix> Q;     // ntheta of (p+1) x (p+1)
  double ldL2 = 0.0;
};

// theta_k's (row, column) in Lambda, in theta's order (column by column, lower triangle).
void theta_positions(int P, std::vector<int>& rows, std::vector<int>& cols) {
  rows.clear();
  cols.clear();
  for (int j = 0; j < P; ++j)
    for (int i = j; i < P; ++i) {
      rows.push_back(i);
      cols.push_back(j);
    }
}

// The level sums with the term's width P and M = p + 1 fixed at compile time where they are
// small (Eigen::Dynamic otherwise): fixed-size products need no allocation per level.
template <int P, int M>
Status accumulate_levels(const OneTermBlocks& blk, const Matrix& lambda, bool with_gradient,
                         LevelSums& out) {
  using Small = Eigen::Matrix<double, P, P>;
  using Border = Eigen::Matrix<double, M, P>;
  using Square = Eigen::Matrix<double, M, M>;
  const int Pd = blk.P;
  const Index m = blk.p + 1;
  std::vector<int> rows, cols;
  theta_positions(Pd, rows, cols);
  const Small lam = lambda;
  Square S = Square::Zero(m, m);
  Small GA = Small::Zero(Pd, Pd);
  std::vector<Square> Q(with_gradient ? rows.size() : 0, Square::Zero(m, m));
  blocks::LogProduct det_M;  // the product of every M_c's Cholesky diagonal
  // The level's factor and solves go through the fixed-size block kernels: Eigen's LLT
  // solves a matrix right-hand side with its general blocked kernel even at 2 x 2.
  constexpr int BP = P == Eigen::Dynamic ? blocks::kDynamicBlock : P;
  std::vector<double> work(static_cast<size_t>(Pd) * Pd);
  Small A(Pd, Pd), L(Pd, Pd), G(Pd, Pd), K(Pd, Pd);
  Border B(m, Pd), U(m, Pd), V(m, Pd), BK(m, Pd);
  for (Index c = 0; c < blk.levels; ++c) {
    const double* a = blk.A11 + c * Pd * Pd;
    for (int j = 0; j < Pd; ++j)
      for (int i = j; i < Pd; ++i) A(i, j) = A(j, i) = a[i + j * Pd];
    // L L' = M_c = lam' A lam + I; G = M_c^{-1} lam', column by column
    if (!blocks::factor_scaled_block<BP>(a, lam.data(), L.data(), Pd, work.data()))
      return Status::NotPositiveDefinite;
    for (int i = 0; i < Pd; ++i) det_M.multiply(L(i, i));
    for (int j = 0; j < Pd; ++j) {
      double* g = G.data() + static_cast<Index>(j) * Pd;
      for (int i = 0; i < Pd; ++i) g[i] = lam(j, i);
      blocks::solve_lower<BP>(L.data(), g, Pd);
      blocks::solve_lower_transpose<BP>(L.data(), g, Pd);
    }
    K.noalias() = lam * G;
    B = blk.BX->middleCols(c * Pd, Pd);
    BK.noalias() = B * K;
    S.noalias() += BK * B.transpose();
    if (!with_gradient) continue;
    GA.noalias() += G * A;
    U = B;
    U.noalias() -= BK * A;
    V.noalias() = B * G.transpose();
    for (size_t k = 0; k < rows.size(); ++k)
      Q[k].noalias() += U.col(rows[k]) * V.col(cols[k]).transpose();
  }
  out.S = blk.D->selfadjointView<Eigen::Lower>();
  out.S -= S;
  out.GA = GA;
  out.Q.assign(Q.begin(), Q.end());
  out.ldL2 = 2.0 * det_M.log();
  return Status::Ok;
}

// Fixed sizes for the common shapes (a scalar or intercept-and-slope term, one or two fixed
// effects); every other shape takes the dynamic-size instantiation (each instantiation costs
// seconds of compile time).
Status accumulate(const OneTermBlocks& blk, const Matrix& lambda, bool grad, LevelSums& out) {
  const Index m = blk.p + 1;
  if (blk.P == 1 && m == 2) return accumulate_levels<1, 2>(blk, lambda, grad, out);
  if (blk.P == 1 && m == 3) return accumulate_levels<1, 3>(blk, lambda, grad, out);
  if (blk.P == 2 && m == 2) return accumulate_levels<2, 2>(blk, lambda, grad, out);
  if (blk.P == 2 && m == 3) return accumulate_levels<2, 3>(blk, lambda, grad, out);
  return accumulate_levels<Eigen::Dynamic, Eigen::Dynamic>(blk, lambda, grad, out);
}

}  // namespace

namespace {

// The criterion and gradient at the relative covariance factor lambda (P x P lower).
Status objective_gradient_at(const OneTermBlocks& blk, const Matrix& lambda, bool reml,
                             double& objective, Vector* grad) {
  const int P = blk.P;
  const Index p = blk.p;
  LevelSums sums;
  const Status st = accumulate(blk, lambda, grad != nullptr, sums);
  if (st != Status::Ok) return st;
  // The [X y] block: S_xx = R R', beta = S_xx^{-1} S_xy, pwrss = S_yy - S_xy' beta.
  Eigen::LLT<Matrix> sxx(sums.S.topLeftCorner(p, p));
  if (p > 0 && sxx.info() != Eigen::Success) return Status::NotPositiveDefinite;
  Vector beta = p > 0 ? Vector(sxx.solve(sums.S.col(p).head(p))) : Vector();
  const double pwrss = sums.S(p, p) - (p > 0 ? sums.S.col(p).head(p).dot(beta) : 0.0);
  if (!(pwrss > 0.0)) return Status::NotPositiveDefinite;
  double ldRX2 = 0.0;
  for (Index i = 0; i < p; ++i) ldRX2 += 2.0 * std::log(sxx.matrixLLT()(i, i));
  const double dof = static_cast<double>(reml ? blk.n - p : blk.n);
  objective = sums.ldL2 + (reml ? ldRX2 : 0.0) + dof * (1.0 + std::log(kTwoPi * pwrss / dof)) -
              blk.ldW;
  if (!grad) return Status::Ok;
  // Gradient: dS_k = -(Q_k + Q_k'); w = (-beta, 1).
  Vector w(p + 1);
  w.head(p) = -beta;
  w[p] = 1.0;
  const Matrix Sxx_inv = p > 0 ? Matrix(sxx.solve(Matrix::Identity(p, p))) : Matrix();
  std::vector<int> rows, cols;
  theta_positions(P, rows, cols);
  grad->resize(static_cast<Index>(rows.size()));
  for (size_t k = 0; k < rows.size(); ++k) {
    const Matrix& Q = sums.Q[k];
    const double dldL2 = 2.0 * sums.GA(cols[k], rows[k]);
    const double dpwrss = -2.0 * w.dot(Q * w);
    const double dldRX2 = p > 0 ? -2.0 * (Sxx_inv.cwiseProduct(Q.topLeftCorner(p, p))).sum() : 0.0;
    (*grad)[static_cast<Index>(k)] = dldL2 + (reml ? dldRX2 : 0.0) + dof * dpwrss / pwrss;
  }
  return Status::Ok;
}

}  // namespace

Status one_term_objective_gradient(const OneTermBlocks& blk, const double* theta, bool reml,
                                   double& objective, Vector* grad) {
  if (blk.P <= 0 || !blk.A11) return Status::BadDimension;
  std::vector<int> rows, cols;
  theta_positions(blk.P, rows, cols);
  Matrix lambda = Matrix::Zero(blk.P, blk.P);
  for (size_t k = 0; k < rows.size(); ++k) lambda(rows[k], cols[k]) = theta[k];
  return objective_gradient_at(blk, lambda, reml, objective, grad);
}

OneTermBlocks Problem::one_term_blocks() const {
  OneTermBlocks b;
  if (nterms() != 1 || !have_A_) return b;  // P = 0: not available
  b.P = p0_;
  b.levels = l0_;
  b.p = p_;
  b.n = n_;
  b.ldW = ldW_;
  b.A11 = A11_.data();
  b.BX = &BX_;
  b.D = &Arest_;
  return b;
}

Status Problem::value_and_gradient(const double* theta, bool reml, double& value,
                                   Vector& grad) {
  if (nterms() == 1) return one_term_objective_gradient(one_term_blocks(), theta, reml, value, &grad);
  Status s = factor(theta);
  if (s != Status::Ok) return s;
  value = profiled_objective(reml);
  Vector beta, u;
  if ((s = solve(beta, u)) != Status::Ok) return s;
  return objective_gradient(reml, beta, u, grad);
}

}  // namespace mixedfit
