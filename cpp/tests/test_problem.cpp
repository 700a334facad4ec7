// Problem (problem.cpp): the profiled objective and the conditional solution at fixed theta
// against a dense computation written out here, for the layouts the core distinguishes (one
// term; a vector first term crossed with a scalar term; a scalar first term with a nested
// vector term, stored sparse), with and without prior weights; and the error statuses of
// set_response / factor / solve; the fixed effects switched out of and back into the system.
#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "mixedfit/problem.hpp"

using mixedfit::Index;
using mixedfit::Matrix;
using mixedfit::Problem;
using mixedfit::Status;
using mixedfit::TermData;
using mixedfit::Vector;

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One random-effects term's data, owned here (TermData only points into it).
struct Term {
  std::vector<std::int32_t> g;
  int nlev = 0;
  Matrix Z;  // n x p
  TermData data() const { return TermData{g.data(), nlev, static_cast<int>(Z.cols()), Z.data()}; }
};

// A data set: fixed effects X = [1, x], a response, optional prior weights, and terms.
struct Data {
  Index n = 0;
  Vector x, y, w;
  Matrix X;
  std::vector<Term> terms;
  std::vector<TermData> term_data() const {
    std::vector<TermData> out;
    for (const Term& t : terms) out.push_back(t.data());
    return out;
  }
};

// A term over levels g with model matrix [1] (slope = false) or [1, x].
Term make_term(std::vector<std::int32_t> g, int nlev, const Vector& x, bool slope) {
  Term t;
  t.g = std::move(g);
  t.nlev = nlev;
  t.Z.setOnes(x.size(), slope ? 2 : 1);
  if (slope) t.Z.col(1) = x;
  return t;
}

// Fills x, X, y (with a random effect per level of each term) and optionally weights.
void fill_response(Data& d, std::mt19937& rng, bool weighted) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.5, 2.0);
  d.y.resize(d.n);
  for (Index i = 0; i < d.n; ++i) d.y[i] = 1.0 + 0.5 * d.x[i] + normal(rng);
  for (const Term& t : d.terms) {
    std::vector<double> effect(t.nlev);
    for (double& e : effect) e = normal(rng);
    for (Index i = 0; i < d.n; ++i) d.y[i] += effect[t.g[i]] * t.Z(i, t.Z.cols() - 1);
  }
  if (weighted) {
    d.w.resize(d.n);
    for (Index i = 0; i < d.n; ++i) d.w[i] = unif(rng);
  }
}

Data base_data(Index n, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  Data d;
  d.n = n;
  d.x.resize(n);
  for (Index i = 0; i < n; ++i) d.x[i] = normal(rng);
  d.X.setOnes(n, 2);
  d.X.col(1) = d.x;
  return d;
}

// One vector term (1 + x | g), 7 levels.
Data one_term(bool weighted) {
  std::mt19937 rng(1);
  Data d = base_data(35, rng);
  std::vector<std::int32_t> g(d.n);
  for (Index i = 0; i < d.n; ++i) g[i] = static_cast<std::int32_t>(i % 7);
  d.terms.push_back(make_term(g, 7, d.x, true));
  fill_response(d, rng, weighted);
  return d;
}

// (1 + x | a) with 6 levels crossed with (1 | b) with 4 levels: a dense coupling block.
Data crossed(bool weighted) {
  std::mt19937 rng(2);
  Data d = base_data(48, rng);
  std::uniform_int_distribution<int> level_b(0, 3);
  std::vector<std::int32_t> a(d.n), b(d.n);
  for (Index i = 0; i < d.n; ++i) {
    a[i] = static_cast<std::int32_t>(i % 6);
    b[i] = level_b(rng);
  }
  d.terms.push_back(make_term(a, 6, d.x, true));
  d.terms.push_back(make_term(b, 4, d.x, false));
  fill_response(d, rng, weighted);
  return d;
}

// (1 | a) with 20 levels inside (1 + x | b) with 10 levels (b = a / 2): each level of a sees
// one level of b, so the coupling block is stored sparse.
Data nested(bool weighted) {
  std::mt19937 rng(3);
  Data d = base_data(60, rng);
  std::vector<std::int32_t> a(d.n), b(d.n);
  for (Index i = 0; i < d.n; ++i) {
    a[i] = static_cast<std::int32_t>(i % 20);
    b[i] = a[i] / 2;
  }
  d.terms.push_back(make_term(a, 20, d.x, false));
  d.terms.push_back(make_term(b, 10, d.x, true));
  fill_response(d, rng, weighted);
  return d;
}

// (1 + x | a) with 21 levels, the last one without observations, inside (1 | b) with 10
// levels (b = a / 2): a sparse coupling block with an empty column for the unused level.
Data nested_vector_first(bool weighted) {
  std::mt19937 rng(4);
  Data d = base_data(60, rng);
  std::vector<std::int32_t> a(d.n), b(d.n);
  for (Index i = 0; i < d.n; ++i) {
    a[i] = static_cast<std::int32_t>(i % 20);
    b[i] = a[i] / 2;
  }
  d.terms.push_back(make_term(a, 21, d.x, true));
  d.terms.push_back(make_term(b, 10, d.x, false));
  fill_response(d, rng, weighted);
  return d;
}

// The dense twin: Z Lambda (n x q) at theta, columns term by term, level by level, column
// within level -- u's layout in the core.
Matrix z_lambda(const Data& d, const std::vector<double>& theta) {
  Index q = 0;
  for (const Term& t : d.terms) q += static_cast<Index>(t.nlev) * t.Z.cols();
  Matrix ZL = Matrix::Zero(d.n, q);
  Index start = 0, pos = 0;
  for (const Term& t : d.terms) {
    const Index p = t.Z.cols();
    Matrix lam = Matrix::Zero(p, p);
    for (Index j = 0; j < p; ++j)
      for (Index i = j; i < p; ++i) lam(i, j) = theta[pos++];
    for (Index i = 0; i < d.n; ++i)
      ZL.block(i, start + t.g[i] * p, 1, p) = t.Z.row(i) * lam;
    start += static_cast<Index>(t.nlev) * p;
  }
  return ZL;
}

struct DenseResult {
  double ml = 0, reml = 0;
  Vector u, beta;
};

// Profiled deviance and REML criterion (lme4's formulas) from the full penalized system
//   [ZL'WZL + I, ZL'WX; X'WZL, X'WX] [u; beta] = [ZL'Wy; X'Wy].
DenseResult dense_objective(const Data& d, const std::vector<double>& theta) {
  const Matrix ZL = z_lambda(d, theta);
  const Index q = ZL.cols(), p = d.X.cols();
  const Vector w = d.w.size() ? d.w : Vector::Ones(d.n);
  Matrix ZX(d.n, q + p);
  ZX << ZL, d.X;
  Matrix M = ZX.transpose() * w.asDiagonal() * ZX;
  M.topLeftCorner(q, q) += Matrix::Identity(q, q);
  const Vector rhs = ZX.transpose() * w.asDiagonal() * d.y;
  const Eigen::LLT<Matrix> llt(M);
  const Vector sol = llt.solve(rhs);
  const Vector resid = d.y - ZX * sol;
  const double pwrss =
      resid.dot(w.asDiagonal() * resid) + sol.head(q).squaredNorm();
  const Eigen::LLT<Matrix> lzz(M.topLeftCorner(q, q));
  const double ldL2 = 2.0 * lzz.matrixLLT().diagonal().array().log().sum();
  const double ldM = 2.0 * llt.matrixLLT().diagonal().array().log().sum();
  const double ldRX2 = ldM - ldL2;
  const double ldW = w.array().log().sum();
  const double n = static_cast<double>(d.n), nmp = n - static_cast<double>(p);
  DenseResult r;
  r.ml = ldL2 + n * (1.0 + std::log(kTwoPi * pwrss / n)) - ldW;
  r.reml = ldL2 + ldRX2 + nmp * (1.0 + std::log(kTwoPi * pwrss / nmp)) - ldW;
  r.u = sol.head(q);
  r.beta = sol.tail(p);
  return r;
}

// The core's objective, solution and dense twin agree at several theta.
void matches_dense(const Data& d, const std::vector<std::vector<double>>& thetas) {
  Problem prob(d.n, d.X.cols(), d.X.data(), d.term_data());
  CHECK(prob.set_response(d.y.data(), d.w.size() ? d.w.data() : nullptr) == Status::Ok);
  for (const std::vector<double>& theta : thetas) {
    CHECK(static_cast<Index>(theta.size()) == prob.ntheta());
    const DenseResult want = dense_objective(d, theta);
    CHECK(prob.factor(theta.data()) == Status::Ok);
    const double tol = 1e-10 * (1.0 + std::fabs(want.ml));
    CHECK_NEAR(prob.profiled_objective(false), want.ml, tol);
    CHECK_NEAR(prob.profiled_objective(true), want.reml, tol);
    Vector beta, u;
    CHECK(prob.solve(beta, u) == Status::Ok);
    CHECK(u.size() == want.u.size() && beta.size() == want.beta.size());
    if (u.size() == want.u.size()) CHECK_NEAR((u - want.u).cwiseAbs().maxCoeff(), 0.0, 1e-10);
    if (beta.size() == want.beta.size())
      CHECK_NEAR((beta - want.beta).cwiseAbs().maxCoeff(), 0.0, 1e-10);
  }
}

void objective_matches_dense() {
  // theta: per term the lower triangle of its template, column by column.
  for (bool weighted : {false, true}) {
    matches_dense(one_term(weighted), {{1.0, 0.0, 1.0}, {0.7, -0.3, 0.4}, {0.0, 0.0, 0.0}});
    const Data c = crossed(weighted);
    {
      Problem prob(c.n, c.X.cols(), c.X.data(), c.term_data());
      CHECK(prob.rest_dense());
    }
    matches_dense(c, {{1.0, 0.0, 1.0, 1.0}, {0.8, 0.2, 0.5, 1.7}, {0.5, 0.1, 0.0, 0.0}});
    const Data s = nested(weighted);
    {
      Problem prob(s.n, s.X.cols(), s.X.data(), s.term_data());
      CHECK(!prob.rest_dense());
    }
    matches_dense(s, {{1.0, 1.0, 0.0, 1.0}, {0.3, 1.4, -0.6, 0.9}, {0.0, 2.0, 0.5, 0.0}});
    const Data e = nested_vector_first(weighted);
    {
      Problem prob(e.n, e.X.cols(), e.X.data(), e.term_data());
      CHECK(!prob.rest_dense());
    }
    matches_dense(e, {{1.0, 0.0, 1.0, 1.0}, {0.6, -0.4, 0.8, 1.3}});
  }
}

void calls_out_of_order() {
  const Data d = crossed(false);
  Problem prob(d.n, d.X.cols(), d.X.data(), d.term_data());
  const std::vector<double> theta{1.0, 0.0, 1.0, 1.0};
  Vector beta, u;
  Matrix V;
  // Nothing before set_response.
  CHECK(prob.factor(theta.data()) == Status::NotEvaluated);
  CHECK(prob.solve(beta, u) == Status::NotEvaluated);
  CHECK(prob.unscaled_vcov(V) == Status::NotEvaluated);
  CHECK(std::isnan(prob.profiled_objective(true)));
  // Nothing but factor before factor.
  CHECK(prob.set_response(d.y.data(), nullptr) == Status::Ok);
  CHECK(prob.solve(beta, u) == Status::NotEvaluated);
  CHECK(std::isnan(prob.profiled_objective(false)));
  CHECK(prob.factor(theta.data()) == Status::Ok);
  CHECK(prob.solve(beta, u) == Status::Ok);
  CHECK(prob.unscaled_vcov(V) == Status::Ok);
}

void non_finite_input() {
  Data d = crossed(true);
  Problem prob(d.n, d.X.cols(), d.X.data(), d.term_data());
  Vector y = d.y, w = d.w;
  y[5] = kNaN;
  CHECK(prob.set_response(y.data(), nullptr) == Status::NonFiniteInput);
  y[5] = std::numeric_limits<double>::infinity();
  CHECK(prob.set_response(y.data(), w.data()) == Status::NonFiniteInput);
  w[3] = kNaN;
  CHECK(prob.set_response(d.y.data(), w.data()) == Status::NonFiniteInput);
  w[3] = -1.0;
  CHECK(prob.set_response(d.y.data(), w.data()) == Status::NonFiniteInput);
  // A rejected response leaves nothing to factor.
  const std::vector<double> theta{1.0, 0.0, 1.0, 1.0};
  CHECK(prob.factor(theta.data()) == Status::NotEvaluated);

  CHECK(prob.set_response(d.y.data(), d.w.data()) == Status::Ok);
  CHECK(prob.factor(theta.data()) == Status::Ok);
  // A non-finite theta is rejected and forgets the previous factorization.
  for (double bad : {kNaN, std::numeric_limits<double>::infinity()}) {
    const std::vector<double> bad_theta{1.0, bad, 1.0, 1.0};
    CHECK(prob.factor(bad_theta.data()) == Status::NonFiniteInput);
    Vector beta, u;
    CHECK(prob.solve(beta, u) == Status::NotEvaluated);
  }
}

void collinear_fixed_effects() {
  Data d = crossed(false);
  Matrix X(d.n, 3);
  X << d.X, Vector::Zero(d.n);  // a column of zeros: X'WX is exactly singular
  Problem prob(d.n, X.cols(), X.data(), d.term_data());
  CHECK(prob.set_response(d.y.data(), nullptr) == Status::Ok);
  const std::vector<double> theta{1.0, 0.0, 1.0, 1.0};
  CHECK(prob.factor(theta.data()) == Status::NotPositiveDefinite);
}

// Leaving the fixed effects out makes the Problem the one built without X; taking them back
// in, the one built with it; each switch drops A.
void fixed_effects_switch() {
  for (const Data& d : {one_term(true), crossed(false), nested(true), nested_vector_first(false)}) {
    const double* w = d.w.size() ? d.w.data() : nullptr;
    std::vector<double> theta;
    Problem with_x(d.n, d.X.cols(), d.X.data(), d.term_data());
    for (Index k = 0; k < with_x.ntheta(); ++k) theta.push_back(0.4 + 0.1 * static_cast<double>(k));
    Problem without_x(d.n, 0, nullptr, d.term_data());
    Problem switched(d.n, d.X.cols(), d.X.data(), d.term_data());
    for (bool include : {false, true, false}) {
      switched.include_fixed_effects(include);
      CHECK(switched.fixed_effects_included() == include);
      CHECK(switched.factor(theta.data()) == Status::NotEvaluated);
      Problem& twin = include ? with_x : without_x;
      CHECK(switched.set_response(d.y.data(), w) == Status::Ok);
      CHECK(twin.set_response(d.y.data(), w) == Status::Ok);
      CHECK(switched.factor(theta.data()) == Status::Ok);
      CHECK(twin.factor(theta.data()) == Status::Ok);
      CHECK(switched.p() == twin.p());
      for (bool reml : {false, true})
        CHECK_NEAR(switched.profiled_objective(reml), twin.profiled_objective(reml), 1e-12);
      Vector beta, u, beta_twin, u_twin;
      CHECK(switched.solve(beta, u) == Status::Ok);
      CHECK(twin.solve(beta_twin, u_twin) == Status::Ok);
      CHECK(beta.size() == beta_twin.size() && u.size() == u_twin.size());
      if (u.size() == u_twin.size()) CHECK_NEAR((u - u_twin).cwiseAbs().maxCoeff(), 0.0, 1e-12);
      if (beta.size() == beta_twin.size() && beta.size() > 0)
        CHECK_NEAR((beta - beta_twin).cwiseAbs().maxCoeff(), 0.0, 1e-12);
    }
  }
}

}  // namespace

int main() {
  objective_matches_dense();
  calls_out_of_order();
  non_finite_input();
  collinear_fixed_effects();
  fixed_effects_switch();
  return mixedfit_test::finish("test_problem");
}
