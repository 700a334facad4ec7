// The cross-product entry (crossprod.cpp): a Problem built from the term layout, the level
// co-occurrence pattern and A = [Z X y]' W [Z X y] (summed from partial cross products of row
// blocks, as a distributed fit forms it) gives the objective and solution of the Problem built
// from the same rows, for a dense and a sparse coupling block, with and without weights; and
// its statuses: entries outside the pattern, and methods that need the rows.
#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <utility>
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

struct Data {
  Index n = 0;
  Matrix X;                                  // n x 2: [1, x]
  Vector y, w;
  std::vector<std::vector<std::int32_t>> g;  // per term
  std::vector<int> nlev;
  std::vector<Matrix> Z;                     // per term, n x p_k
  std::vector<TermData> terms() const {
    std::vector<TermData> out;
    for (size_t k = 0; k < g.size(); ++k)
      out.push_back(TermData{g[k].data(), nlev[k], static_cast<int>(Z[k].cols()), Z[k].data()});
    return out;
  }
};

// (1 + x | a) with la levels and (1 | b) with lb levels; b = a / 2 (nested: sparse
// coupling) or random (crossed: dense).
Data make_data(int la, int lb, bool nested, bool weighted, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> pick_b(0, lb - 1);
  std::uniform_real_distribution<double> unif(0.5, 2.0);
  Data d;
  d.n = 6 * la;
  d.X.setOnes(d.n, 2);
  d.g.assign(2, std::vector<std::int32_t>(d.n));
  d.nlev = {la, lb};
  d.Z = {Matrix::Ones(d.n, 2), Matrix::Ones(d.n, 1)};
  d.y.resize(d.n);
  for (Index i = 0; i < d.n; ++i) {
    const double x = normal(rng);
    d.X(i, 1) = x;
    d.Z[0](i, 1) = x;
    d.g[0][i] = static_cast<std::int32_t>(i % la);
    d.g[1][i] = nested ? d.g[0][i] / 2 : pick_b(rng);
    d.y[i] = 1.0 + 0.5 * x + normal(rng) + 0.3 * d.g[0][i] - 0.2 * d.g[1][i];
  }
  if (weighted) {
    d.w.resize(d.n);
    for (Index i = 0; i < d.n; ++i) d.w[i] = unif(rng);
  }
  return d;
}

// Row i's entries of [z_i x_i y_i] in u's coordinates: (index, value).
std::vector<std::pair<Index, double>> row_entries(const Data& d, Index i) {
  std::vector<std::pair<Index, double>> out;
  Index start = 0;
  for (size_t k = 0; k < d.g.size(); ++k) {
    const Index p = d.Z[k].cols();
    for (Index a = 0; a < p; ++a) out.emplace_back(start + d.g[k][i] * p + a, d.Z[k](i, a));
    start += static_cast<Index>(d.nlev[k]) * p;
  }
  for (Index t = 0; t < d.X.cols(); ++t) out.emplace_back(start + t, d.X(i, t));
  out.emplace_back(start + d.X.cols(), d.y[i]);
  return out;
}

struct Crossprod {
  std::vector<std::int64_t> rows, cols;
  std::vector<double> vals;
  std::vector<std::vector<std::int64_t>> cooc;
  double sum_log_w = 0;
};

// A as the sum of the partial cross products of `parts` row blocks (lower triangle, COO),
// and the level pairs per term after the first.
Crossprod crossprod_in_parts(const Data& d, int parts) {
  Crossprod c;
  c.cooc.resize(d.g.size() - 1);
  const Index block = (d.n + parts - 1) / parts;
  for (Index lo = 0; lo < d.n; lo += block) {
    std::map<std::pair<Index, Index>, double> partial;
    for (Index i = lo; i < std::min(d.n, lo + block); ++i) {
      const double wi = d.w.size() ? d.w[i] : 1.0;
      if (d.w.size()) c.sum_log_w += std::log(wi);
      const auto e = row_entries(d, i);
      for (const auto& [r, vr] : e)
        for (const auto& [s, vs] : e)
          if (r >= s) partial[{r, s}] += wi * vr * vs;
      for (size_t k = 1; k < d.g.size(); ++k) {
        c.cooc[k - 1].push_back(d.g[0][i]);
        c.cooc[k - 1].push_back(d.g[k][i]);
      }
    }
    for (const auto& [rc, v] : partial) {
      c.rows.push_back(rc.first);
      c.cols.push_back(rc.second);
      c.vals.push_back(v);
    }
  }
  return c;
}

void matches_rows(bool nested, bool weighted) {
  const Data d = make_data(nested ? 20 : 6, nested ? 10 : 4, nested, weighted, nested ? 7 : 8);
  Problem rows(d.n, 2, d.X.data(), d.terms());
  CHECK(rows.set_response(d.y.data(), weighted ? d.w.data() : nullptr) == Status::Ok);
  const Crossprod c = crossprod_in_parts(d, 5);
  Problem cp = Problem::from_crossproduct(d.n, 2, d.terms(), c.cooc);
  CHECK(!cp.has_rows());
  CHECK(cp.rest_dense() == rows.rest_dense());
  CHECK(cp.rest_dense() == !nested);
  CHECK(cp.set_crossproduct(static_cast<Index>(c.vals.size()), c.rows.data(), c.cols.data(),
                            c.vals.data(), c.sum_log_w) == Status::Ok);
  for (const std::vector<double>& theta :
       {std::vector<double>{1.0, 0.0, 1.0, 1.0}, {0.8, 0.2, 0.5, 1.7}, {0.5, 0.1, 0.0, 0.0}}) {
    CHECK(rows.factor(theta.data()) == Status::Ok);
    CHECK(cp.factor(theta.data()) == Status::Ok);
    for (bool reml : {false, true}) {
      const double want = rows.profiled_objective(reml);
      CHECK_NEAR(cp.profiled_objective(reml), want, 1e-12 * (1.0 + std::fabs(want)));
    }
    Vector b1, u1, b2, u2;
    CHECK(rows.solve(b1, u1) == Status::Ok);
    CHECK(cp.solve(b2, u2) == Status::Ok);
    CHECK_NEAR((b1 - b2).cwiseAbs().maxCoeff(), 0.0, 1e-11);
    CHECK_NEAR((u1 - u2).cwiseAbs().maxCoeff(), 0.0, 1e-11);
  }
}

void statuses() {
  const Data d = make_data(20, 10, true, false, 9);
  Crossprod c = crossprod_in_parts(d, 2);
  Problem cp = Problem::from_crossproduct(d.n, 2, d.terms(), c.cooc);
  // Without A nothing can be factored; the row methods refuse.
  const std::vector<double> theta{1.0, 0.0, 1.0, 1.0};
  CHECK(cp.factor(theta.data()) == Status::NotEvaluated);
  CHECK(cp.set_response(d.y.data(), nullptr) == Status::NoRows);
  // Level 0 of the first term never meets level 9 of the second (nested design).
  const Index q0 = 2 * 20;
  std::vector<std::int64_t> r{q0 + 9}, col{0};
  std::vector<double> v{1.0};
  CHECK(cp.set_crossproduct(1, r.data(), col.data(), v.data(), 0.0) == Status::OutsidePattern);
  // Two levels of the first term never share a row.
  r = {2};
  CHECK(cp.set_crossproduct(1, r.data(), col.data(), v.data(), 0.0) == Status::OutsidePattern);
  r = {1000};
  CHECK(cp.set_crossproduct(1, r.data(), col.data(), v.data(), 0.0) == Status::BadDimension);
  CHECK(cp.factor(theta.data()) == Status::NotEvaluated);
  CHECK(cp.set_crossproduct(static_cast<Index>(c.vals.size()), c.rows.data(), c.cols.data(),
                            c.vals.data(), 0.0) == Status::Ok);
  CHECK(cp.factor(theta.data()) == Status::Ok);
  Vector beta, u, grad, h;
  Matrix T;
  CHECK(cp.solve(beta, u) == Status::Ok);
  CHECK(cp.objective_gradient(false, beta, u, grad) == Status::NoRows);
  CHECK(cp.leverages(h, T) == Status::NoRows);
}

}  // namespace

int main() {
  for (bool weighted : {false, true}) {
    matches_rows(false, weighted);
    matches_rows(true, weighted);
  }
  statuses();
  return mixedfit_test::finish("test_crossprod");
}
