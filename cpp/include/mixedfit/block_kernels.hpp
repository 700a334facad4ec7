// Kernels on the first term's small p0 x p0 blocks (MATH.md section 2): one level's factor
// L_c = chol(Lambda' A_c Lambda + I), the scaling and solve of its coupling columns, and the
// log-determinant. Each is a template on the block size P: P = 1..4 gives fixed-size loops
// the compiler unrolls and keeps in registers (no Eigen dynamic-size products, no heap
// allocation); P = kDynamicBlock is the same code with the size read at run time.
//
// Layout: every p x p block is column-major; lower-triangular factors keep zeros above the
// diagonal. A block of rows V (r x p) is column-major with leading dimension r.
#pragma once

#include <cmath>
#include <type_traits>

#include <Eigen/Core>

namespace mixedfit {
namespace blocks {

using Index = Eigen::Index;

constexpr int kDynamicBlock = 0;
constexpr int kMaxFixedBlock = 4;

// The block size: P when fixed, else the run-time p.
template <int P>
constexpr int block_dim(int p) {
  return P == kDynamicBlock ? p : P;
}

// Calls f(std::integral_constant<int, P>) with P = p for p in 1..4, else P = kDynamicBlock.
template <typename F>
decltype(auto) with_block_size(int p, F&& f) {
  switch (p) {
    case 1: return f(std::integral_constant<int, 1>());
    case 2: return f(std::integral_constant<int, 2>());
    case 3: return f(std::integral_constant<int, 3>());
    case 4: return f(std::integral_constant<int, 4>());
    default: return f(std::integral_constant<int, kDynamicBlock>());
  }
}

// In place: the lower Cholesky factor of the symmetric p x p block M (lower triangle read),
// zeros written above the diagonal. False when M is not positive definite.
template <int P>
inline bool cholesky_in_place(double* M, int p_run) {
  const int p = block_dim<P>(p_run);
  for (int j = 0; j < p; ++j) {
    double d = M[j + j * p];
    for (int k = 0; k < j; ++k) d -= M[j + k * p] * M[j + k * p];
    if (!(d > 0.0)) return false;
    d = std::sqrt(d);
    M[j + j * p] = d;
    for (int i = j + 1; i < p; ++i) {
      double s = M[i + j * p];
      for (int k = 0; k < j; ++k) s -= M[i + k * p] * M[j + k * p];
      M[i + j * p] = s / d;
    }
  }
  for (int j = 1; j < p; ++j)
    for (int i = 0; i < j; ++i) M[i + j * p] = 0.0;
  return true;
}

// L = chol(lam' A lam + I) for one level: A symmetric (lower triangle read), lam lower
// triangular. work: p * p doubles (used only when P is dynamic). False if not positive
// definite.
template <int P>
inline bool factor_scaled_block(const double* A, const double* lam, double* L, int p_run,
                                double* work) {
  const int p = block_dim<P>(p_run);
  double fixed[P == kDynamicBlock ? 1 : P * P];
  double* T = P == kDynamicBlock ? work : fixed;
  // T = A lam (A symmetric from its lower triangle; lam(k, j) = 0 for k < j).
  for (int j = 0; j < p; ++j)
    for (int i = 0; i < p; ++i) {
      double s = 0.0;
      for (int k = j; k < p; ++k) {
        const double a = i >= k ? A[i + k * p] : A[k + i * p];
        s += a * lam[k + j * p];
      }
      T[i + j * p] = s;
    }
  // Lower triangle of lam' T + I.
  for (int j = 0; j < p; ++j)
    for (int i = j; i < p; ++i) {
      double s = i == j ? 1.0 : 0.0;
      for (int k = i; k < p; ++k) s += lam[k + i * p] * T[k + j * p];
      L[i + j * p] = s;
    }
  return cholesky_in_place<P>(L, p);
}

// V <- V lam for V (r x p) and lam (p x p) lower triangular. Column j of the product only
// reads columns j.. of V, so increasing j overwrites nothing still needed.
template <int P>
inline void right_multiply_lower(double* V, Index r, const double* lam, int p_run) {
  const int p = block_dim<P>(p_run);
  for (int j = 0; j < p; ++j) {
    double* vj = V + j * r;
    const double ljj = lam[j + j * p];
    for (Index a = 0; a < r; ++a) {
      double s = vj[a] * ljj;
      for (int k = j + 1; k < p; ++k) s += V[a + k * r] * lam[k + j * p];
      vj[a] = s;
    }
  }
}

// V <- V L^{-T} for V (r x p) and L (p x p) lower triangular: X L' = V is forward
// substitution over the columns, X_j = (V_j - sum_{k<j} X_k L(j, k)) / L(j, j).
template <int P>
inline void right_solve_lower_transpose(double* V, Index r, const double* L, int p_run) {
  const int p = block_dim<P>(p_run);
  for (int j = 0; j < p; ++j) {
    double* vj = V + j * r;
    const double inv = 1.0 / L[j + j * p];
    for (Index a = 0; a < r; ++a) {
      double s = vj[a];
      for (int k = 0; k < j; ++k) s -= V[a + k * r] * L[j + k * p];
      vj[a] = s * inv;
    }
  }
}

// x <- L^{-1} x (forward substitution), L (p x p) lower triangular.
template <int P>
inline void solve_lower(const double* L, double* x, int p_run) {
  const int p = block_dim<P>(p_run);
  for (int i = 0; i < p; ++i) {
    double s = x[i];
    for (int k = 0; k < i; ++k) s -= L[i + k * p] * x[k];
    x[i] = s / L[i + i * p];
  }
}

// x <- L^{-T} x (back substitution), L (p x p) lower triangular.
template <int P>
inline void solve_lower_transpose(const double* L, double* x, int p_run) {
  const int p = block_dim<P>(p_run);
  for (int i = p - 1; i >= 0; --i) {
    double s = x[i];
    for (int k = i + 1; k < p; ++k) s -= L[k + i * p] * x[k];
    x[i] = s / L[i + i * p];
  }
}

// C = lam L^{-T} G L^{-1} lam' for one level: G (p x p, symmetric, full storage) the
// level's block of I + D' D, L its factor, lam lower triangular; C full. work: 2 p * p
// doubles (used only when P is dynamic).
template <int P>
inline void conditional_covariance_block(const double* L, const double* G, const double* lam,
                                         double* C, int p_run, double* work) {
  const int p = block_dim<P>(p_run);
  double fixed[P == kDynamicBlock ? 1 : 2 * P * P];
  double* M = P == kDynamicBlock ? work : fixed;
  double* T = M + p * p;
  // M = L^{-1} lam': column j is L^{-1} times row j of lam.
  for (int j = 0; j < p; ++j) {
    for (int i = 0; i < p; ++i) M[i + j * p] = lam[j + i * p];
    solve_lower<P>(L, M + j * p, p);
  }
  // T = G M, then C = M' T.
  for (int j = 0; j < p; ++j)
    for (int i = 0; i < p; ++i) {
      double s = 0.0;
      for (int k = 0; k < p; ++k) s += G[i + k * p] * M[k + j * p];
      T[i + j * p] = s;
    }
  for (int j = 0; j < p; ++j)
    for (int i = 0; i < p; ++i) {
      double s = 0.0;
      for (int k = 0; k < p; ++k) s += M[k + i * p] * T[k + j * p];
      C[i + j * p] = s;
    }
}

// The log of a product of many positive factors, with one log() per ~100 factors instead
// of one per factor: the running product is renormalized (its binary exponent moved aside)
// before it can overflow or underflow. Rounding is that of summing the logs (~1e-16 relative
// per factor).
class LogProduct {
 public:
  void multiply(double factor) {
    if (!(factor < 1e100 && factor > 1e-100)) {  // an extreme factor: its exponent aside too
      int e = 0;
      factor = std::frexp(factor, &e);
      exponent_ += e;
    }
    mantissa_ *= factor;  // within 1e+-250: no overflow or underflow
    if (!(mantissa_ < 1e150 && mantissa_ > 1e-150)) renormalize();
  }
  double log() const { return std::log(mantissa_) + exponent_ * 0.69314718055994530942; }

 private:
  void renormalize() {
    int e = 0;
    mantissa_ = std::frexp(mantissa_, &e);  // 0 and non-finite values pass through
    exponent_ += e;
  }
  double mantissa_ = 1.0;
  long exponent_ = 0;
};

// sum over nblocks consecutive p x p factors of log(diagonal).
template <int P>
inline double log_diagonal_sum(const double* L, Index nblocks, int p_run) {
  const int p = block_dim<P>(p_run);
  const Index bs = static_cast<Index>(p) * p;
  LogProduct s;
  for (Index c = 0; c < nblocks; ++c)
    for (int a = 0; a < p; ++a) s.multiply(L[c * bs + a + a * p]);
  return s.log();
}

}  // namespace blocks
}  // namespace mixedfit
