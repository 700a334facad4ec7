// Minimizing a smooth objective with an exact gradient inside the core: modified Newton steps
// (the same rules as mixedfit.optimize.newton, so a fit gives the same numbers whichever side
// runs the loop) and the Hessian from central differences of the gradient. The objective is
// a callback, so each caller (the GLMM's two stages) keeps its own evaluation.
#pragma once

#include <functional>

#include "mixedfit/problem.hpp"
#include "mixedfit/status.hpp"

namespace mixedfit {

// f(x) and its gradient g(x); a Status other than Ok means "no value here".
using ValueAndGradient = std::function<Status(const Vector& x, double& f, Vector& g)>;

struct NewtonControl {
  int maxit = 100;          // Newton iterations
  double max_step = 0.25;   // a step's largest entry is capped at max_step * max(1, |x|_inf)
  double fd_delta = 1e-4;   // forward-difference step of the starting Hessian
};

// Why a Newton run stopped: converged, or it cannot go on (the caller then takes a general
// method): an evaluation failed, the curvature model broke down, a step left the bounds,
// the line search found no descent, or the iterations ran out.
enum class NewtonStop : int {
  Converged = 0, EvaluationFailed, NoCurvature, HitBound, LineSearchFailed, MaxIterations
};

struct NewtonResult {
  NewtonStop stop = NewtonStop::MaxIterations;
  Vector x;         // the last accepted point
  double f = 0.0;   // the objective there
  int nevals = 0;   // calls of the objective
  Matrix hessian;   // the curvature model there (BFGS-updated), when converged
  bool converged() const { return stop == NewtonStop::Converged; }
};

// Modified Newton from x0 within lower bounds (-inf: none): the starting Hessian from forward
// differences of the gradient, kept current by BFGS updates; each step along the eigenvectors
// with |eigenvalues| (floored at 1e-8 of the largest), capped in length, with a backtracking
// line search (Armijo, or near the optimum a full step that does not raise f beyond rounding).
// Converged when the Newton decrement g'H^{-1}g falls below max(1e-9, 1e-13 |f|).
// start_hessian: the curvature model to start from instead of the forward differences
// (saves dim(x) evaluations when a good approximation is known).
NewtonResult newton_minimize(const ValueAndGradient& fg, const Vector& x0, const Vector& lower,
                             const NewtonControl& control = NewtonControl(),
                             const Matrix* start_hessian = nullptr);

// One step of the search direction: -(H^+ g) with H's eigenvalues made positive as above
// (|lambda| floored at 1e-8 max |lambda|); false when H has no finite positive scale.
bool modified_newton_direction(const Matrix& H, const Vector& g, Vector& p);

// The Hessian at x from central differences of the gradient at x +- delta e_j, symmetrized
// (error O(delta^2)); its 2 dim(x) evaluations go through fg, in the order +e_0, -e_0, +e_1...
Status hessian_from_gradient(const ValueAndGradient& fg, const Vector& x, double delta,
                             Matrix& H);

}  // namespace mixedfit
