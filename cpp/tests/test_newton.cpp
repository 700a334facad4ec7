// The core's Newton minimizer (newton.cpp): convergence on smooth convex and non-convex
// objectives, the modified direction's descent under negative curvature, each way a run can
// stop (a failed evaluation, a bound), and the central-difference Hessian of a gradient.
#include <cmath>
#include <limits>

#include "check.hpp"
#include "mixedfit/newton.hpp"

using mixedfit::Matrix;
using mixedfit::NewtonStop;
using mixedfit::Status;
using mixedfit::ValueAndGradient;
using mixedfit::Vector;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Vector vec(std::initializer_list<double> v) {
  Vector out(static_cast<Eigen::Index>(v.size()));
  Eigen::Index i = 0;
  for (double x : v) out[i++] = x;
  return out;
}

Vector unbounded(Eigen::Index k) { return Vector::Constant(k, -kInf); }

// f = sum cosh(x_i - c_i) + (sum (x_i - c_i))^2 / 4: convex, not quadratic, minimum at c.
ValueAndGradient cosh_bowl(const Vector& c) {
  return [c](const Vector& x, double& f, Vector& g) {
    const Vector d = x - c;
    const double s = d.sum();
    f = d.array().cosh().sum() + 0.25 * s * s;
    g = (d.array().sinh() + 0.5 * s).matrix();
    return Status::Ok;
  };
}

// f = x^4/4 - x^2/2 + y^2: a double well, negative curvature at |x| < 1/sqrt(3).
Status double_well(const Vector& x, double& f, Vector& g) {
  f = std::pow(x[0], 4) / 4 - x[0] * x[0] / 2 + x[1] * x[1];
  g = vec({x[0] * x[0] * x[0] - x[0], 2 * x[1]});
  return Status::Ok;
}

void converges_on_a_convex_bowl() {
  const Vector c = vec({0.3, -1.2, 2.0});
  const auto r = mixedfit::newton_minimize(cosh_bowl(c), c + vec({1.0, -2.0, 0.5}), unbounded(3));
  CHECK(r.converged());
  // The stopping rule (decrement below 1e-9) leaves x within ~sqrt(1e-9) of the minimum and
  // f within ~1e-9 of its minimum.
  CHECK((r.x - c).lpNorm<Eigen::Infinity>() < 1e-4);
  CHECK_NEAR(r.f, 3.0, 1e-9);
  // one evaluation at the start, one per coordinate for the starting Hessian, then the search
  CHECK(r.nevals > 4 && r.nevals < 40);
}

void starts_from_a_given_curvature_model() {
  // A start Hessian replaces the forward differences: dim(x) evaluations fewer, and a model
  // that is only roughly right (here the diagonal of the true one, scaled) still converges.
  const Vector c = vec({0.3, -1.2, 2.0});
  const Vector x0 = c + vec({0.2, -0.3, 0.1});
  const auto differenced = mixedfit::newton_minimize(cosh_bowl(c), x0, unbounded(3));
  const Matrix rough = 1.3 * Matrix::Identity(3, 3);
  const auto seeded =
      mixedfit::newton_minimize(cosh_bowl(c), x0, unbounded(3), mixedfit::NewtonControl(), &rough);
  CHECK(differenced.converged() && seeded.converged());
  CHECK((seeded.x - c).lpNorm<Eigen::Infinity>() < 1e-4);
  CHECK_NEAR(seeded.f, 3.0, 1e-9);
  // the converged run hands back its curvature model (3 x 3)
  CHECK(seeded.hessian.rows() == 3 && seeded.hessian.cols() == 3);
  // The exact Hessian at x0 (diag cosh(x0 - c) + J/2) as the start: the same steps as from
  // differences, without the 3 evaluations they take.
  Matrix exact = Matrix::Constant(3, 3, 0.5);
  exact.diagonal() += (x0 - c).array().cosh().matrix();
  const auto exact_start =
      mixedfit::newton_minimize(cosh_bowl(c), x0, unbounded(3), mixedfit::NewtonControl(), &exact);
  CHECK(exact_start.converged());
  CHECK(exact_start.nevals == differenced.nevals - 3);
  CHECK((exact_start.x - differenced.x).lpNorm<Eigen::Infinity>() < 1e-6);
  // a start Hessian of the wrong size is ignored (differences are taken)
  const Matrix wrong = Matrix::Identity(2, 2);
  const auto ignored =
      mixedfit::newton_minimize(cosh_bowl(c), x0, unbounded(3), mixedfit::NewtonControl(), &wrong);
  CHECK(ignored.nevals == differenced.nevals);
  CHECK((ignored.x - differenced.x).lpNorm<Eigen::Infinity>() == 0.0);
}

void descends_through_negative_curvature() {
  // From x = 0.1 the Hessian is indefinite; the modified step still goes downhill, to x = 1.
  const auto r = mixedfit::newton_minimize(double_well, vec({0.1, 0.5}), unbounded(2));
  CHECK(r.converged());
  CHECK_NEAR(r.x[0], 1.0, 1e-4);
  CHECK_NEAR(r.x[1], 0.0, 1e-4);
  CHECK_NEAR(r.f, -0.25, 1e-9);
}

void direction_is_descent_for_an_indefinite_hessian() {
  Matrix H(2, 2);
  H << -2.0, 0.5, 0.5, 1.0;
  const Vector g = vec({0.3, -0.7});
  Vector p;
  CHECK(mixedfit::modified_newton_direction(H, g, p));
  CHECK(g.dot(p) < 0.0);
  // A zero Hessian has no scale: no direction.
  CHECK(!mixedfit::modified_newton_direction(Matrix::Zero(2, 2), g, p));
  Matrix Hnan = H;
  Hnan(0, 0) = std::nan("");
  CHECK(!mixedfit::modified_newton_direction(Hnan, g, p));
}

void stops_when_an_evaluation_fails() {
  const auto c = vec({0.0, 0.0});
  const auto bowl = cosh_bowl(c);
  // Fails beyond x_0 = 0.5: at the start, then (from 0.45) at the first forward difference.
  const ValueAndGradient fenced = [&bowl](const Vector& x, double& f, Vector& g) {
    return x[0] > 0.45 + 0.5e-4 ? Status::InvalidMean : bowl(x, f, g);
  };
  auto r = mixedfit::newton_minimize(fenced, vec({0.6, 0.0}), unbounded(2));
  CHECK(r.stop == NewtonStop::EvaluationFailed);
  CHECK(r.nevals == 0);
  CHECK(std::isnan(r.f));
  r = mixedfit::newton_minimize(fenced, vec({0.45, 0.0}), unbounded(2));
  CHECK(r.stop == NewtonStop::EvaluationFailed);
  CHECK(r.nevals == 1);
}

void stops_at_a_bound() {
  // Minimum at x = -1 below the bound 0: the first full step leaves the box.
  const auto r = mixedfit::newton_minimize(cosh_bowl(vec({-1.0})), vec({0.05}), vec({0.0}));
  CHECK(r.stop == NewtonStop::HitBound);
  CHECK(!r.converged());
  CHECK_NEAR(r.x[0], 0.05, 0.0);  // the last accepted point is the start
}

void hessian_from_gradient_of_a_cubic() {
  // f = x^3 + x y^2: gradient (3x^2 + y^2, 2xy) is quadratic, so central differences are
  // exact to rounding: H = [[6x, 2y], [2y, 2x]].
  const ValueAndGradient cubic = [](const Vector& v, double& f, Vector& g) {
    f = std::pow(v[0], 3) + v[0] * v[1] * v[1];
    g = vec({3 * v[0] * v[0] + v[1] * v[1], 2 * v[0] * v[1]});
    return Status::Ok;
  };
  Matrix H;
  CHECK(mixedfit::hessian_from_gradient(cubic, vec({0.7, -1.3}), 1e-4, H) == Status::Ok);
  CHECK_NEAR(H(0, 0), 4.2, 1e-9);
  CHECK_NEAR(H(0, 1), -2.6, 1e-9);
  CHECK_NEAR(H(1, 0), -2.6, 1e-9);
  CHECK_NEAR(H(1, 1), 1.4, 1e-9);
  // A failed evaluation is passed on.
  const ValueAndGradient failing = [](const Vector&, double&, Vector&) {
    return Status::PirlsDiverged;
  };
  CHECK(mixedfit::hessian_from_gradient(failing, vec({0.0}), 1e-4, H) == Status::PirlsDiverged);
}

}  // namespace

int main() {
  converges_on_a_convex_bowl();
  starts_from_a_given_curvature_model();
  descends_through_negative_curvature();
  direction_is_descent_for_an_indefinite_hessian();
  stops_when_an_evaluation_fails();
  stops_at_a_bound();
  hessian_from_gradient_of_a_cubic();
  return mixedfit_test::finish("test_newton");
}
