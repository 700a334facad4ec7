// one_term_gradient.cpp: the criterion from A's blocks equals Problem::profiled_objective, and
// its gradient equals central differences of that objective, for terms of 1, 2, 3 and 5
// columns (the templated sizes and the dynamic fallback), REML and ML, with and without
// prior weights, with and without fixed effects.
#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.hpp"
#include "mixedfit/one_term_gradient.hpp"
#include "mixedfit/problem.hpp"

using mixedfit::Index;
using mixedfit::Matrix;
using mixedfit::Problem;
using mixedfit::Status;
using mixedfit::TermData;
using mixedfit::Vector;

namespace {

struct Case {
  Index n = 0;
  int P = 0;
  Index p = 0;
  std::vector<std::int32_t> g;
  int nlev = 0;
  Matrix Z, X;
  Vector y, w;
};

// nlev levels of unequal sizes; Z = [1, x, x^2, ...] (P columns), X = [1, x2] (p columns).
Case make_case(int P, Index p, int nlev, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  std::uniform_int_distribution<int> lev(0, nlev - 1);
  Case c;
  c.n = 12 * nlev;
  c.P = P;
  c.p = p;
  c.nlev = nlev;
  c.g.resize(c.n);
  c.Z.resize(c.n, P);
  c.X.resize(c.n, p);
  c.y.resize(c.n);
  c.w.resize(c.n);
  Matrix b(nlev, P);
  for (Index i = 0; i < b.size(); ++i) b.data()[i] = 0.7 * nd(rng);
  for (Index i = 0; i < c.n; ++i) {
    c.g[i] = i < nlev ? static_cast<std::int32_t>(i) : lev(rng);  // every level present
    const double x = nd(rng);
    for (int a = 0; a < P; ++a) c.Z(i, a) = std::pow(x, a);
    for (Index k = 0; k < p; ++k) c.X(i, k) = k == 0 ? 1.0 : nd(rng);
    c.y[i] = 2.0 + c.Z.row(i).dot(b.row(c.g[i])) + nd(rng);
    c.w[i] = 0.5 + std::abs(nd(rng));
  }
  return c;
}

double core_objective(Problem& prob, const Vector& theta, bool reml) {
  CHECK(prob.factor(theta.data()) == Status::Ok);
  return prob.profiled_objective(reml);
}

void check_case(int P, Index p, bool weighted, bool reml, std::mt19937& rng) {
  Case c = make_case(P, p, 9, rng);
  std::vector<TermData> terms{TermData{c.g.data(), c.nlev, P, c.Z.data()}};
  Problem prob(c.n, p, c.X.data(), terms);
  CHECK(prob.set_response(c.y.data(), weighted ? c.w.data() : nullptr) == Status::Ok);
  const Index nt = static_cast<Index>(P) * (P + 1) / 2;
  Vector theta(nt);
  std::uniform_real_distribution<double> ud(-0.6, 0.6);
  Index pos = 0;
  for (int j = 0; j < P; ++j)
    for (int i = j; i < P; ++i) theta[pos++] = i == j ? 0.5 + std::abs(ud(rng)) : ud(rng);
  double f = 0.0;
  Vector grad;
  const mixedfit::OneTermBlocks blk = prob.one_term_blocks();
  CHECK(blk.P == P);
  CHECK(mixedfit::one_term_objective_gradient(blk, theta.data(), reml, f, &grad) == Status::Ok);
  double f_only = 0.0;
  CHECK(mixedfit::one_term_objective_gradient(blk, theta.data(), reml, f_only, nullptr) ==
        Status::Ok);
  CHECK(f_only == f);
  const double f_core = core_objective(prob, theta, reml);
  CHECK_NEAR(f, f_core, 1e-10 * std::abs(f_core));
  CHECK(grad.size() == nt);
  for (Index k = 0; k < nt; ++k) {
    const double h = 1e-5;
    Vector tp = theta, tm = theta;
    tp[k] += h;
    tm[k] -= h;
    const double fd = (core_objective(prob, tp, reml) - core_objective(prob, tm, reml)) / (2 * h);
    CHECK_NEAR(grad[k], fd, 1e-6 * (1.0 + std::abs(fd)));
  }
}

}  // namespace

int main() {
  std::mt19937 rng(20261202);
  for (int P : {1, 2, 3, 5})
    for (Index p : {Index(0), Index(1), Index(3)})
      for (bool weighted : {false, true})
        for (bool reml : {false, true}) check_case(P, p, weighted, reml, rng);
  // Not a one-term model, or no response yet: no blocks.
  Case c = make_case(1, 1, 4, rng);
  std::vector<TermData> terms{TermData{c.g.data(), c.nlev, 1, c.Z.data()}};
  Problem fresh(c.n, 1, c.X.data(), terms);
  CHECK(fresh.one_term_blocks().P == 0);
  double f = 0.0;
  CHECK(mixedfit::one_term_objective_gradient(fresh.one_term_blocks(), nullptr, true, f, nullptr) ==
        Status::BadDimension);
  return mixedfit_test::finish("test_one_term_gradient");
}
