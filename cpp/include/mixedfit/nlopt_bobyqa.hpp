// BOBYQA (Powell's bound-constrained method with quadratic models) from NLopt's C library,
// driven inside the core, so that an optimization makes no call into Python per evaluation.
//
// The core does not link NLopt at build time. The Python package `nlopt`, a dependency, ships
// the library with its C API exported; the bindings pass that file's path to load_nlopt()
// once, and the dozen functions used here are resolved from it by name. When that fails
// (another platform, a build of `nlopt` that hides its symbols), load_nlopt() says why and the
// Python layer drives NLopt itself: the same algorithm with the same settings, hence the same
// steps and numbers, at the price of one Python call per evaluation.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mixedfit/status.hpp"

namespace mixedfit {

// Resolves NLopt's C API from the shared library at `library_path`; `bobyqa_algorithm` is
// NLopt's enum value of LN_BOBYQA (the Python package exposes it). Thread-safe; the first
// success is kept for the life of the process. On failure returns false and says why.
bool load_nlopt(const std::string& library_path, int bobyqa_algorithm, std::string& error);
bool nlopt_loaded();

struct BobyqaSettings {
  double ftol_abs = 1e-8;            // stop when a step changes the objective by less
  double xtol_abs = 1e-8;            // ... or every coordinate by less
  int maxeval = 1000;
  std::vector<double> initial_step;  // per coordinate; empty: NLopt's default
};

struct BobyqaResult {
  std::vector<double> x;  // the point NLopt returned, or the best point evaluated if lower
  double fun = 0.0;       // its value; +inf when no point could be evaluated
  int nevals = 0;
  int nlopt_code = 0;     // NLopt's nlopt_result: 1-4 converged, 5 maxeval, -4 roundoff, ...
};

// Evaluates the objective at x (n values). A point the objective cannot take returns Ok with
// value +inf (so do NaN and -inf); any other status than Ok stops the run, and
// bobyqa_minimize() returns it.
using BoxObjective = std::function<Status(const double* x, double& value)>;

// Minimizes f from x0 within x >= lower (entries -inf for unbounded), with no upper bounds.
// Returns Ok, the objective's stopping status, or NotEvaluated when NLopt itself failed
// (invalid arguments, out of memory; out.nlopt_code says which). Requires nlopt_loaded().
Status bobyqa_minimize(const BoxObjective& f, const std::vector<double>& x0,
                       const std::vector<double>& lower, const BobyqaSettings& settings,
                       BobyqaResult& out);

}  // namespace mixedfit
