// The in-core BOBYQA driver (nlopt_bobyqa.cpp) on small objectives: it finds a bounded
// minimum, counts evaluations, treats +inf / NaN as "no value here", returns the best point
// evaluated, stops on an objective's status and on a thrown exception, and refuses
// mismatched sizes. NLopt's library comes from the Python package `nlopt`, whose path the
// build passes in MIXEDFIT_NLOPT_LIBRARY, with the libpython it refers to in
// MIXEDFIT_PYTHON_LIBRARY (cpp/tests/CMakeLists.txt).
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "mixedfit/nlopt_bobyqa.hpp"

using mixedfit::BobyqaResult;
using mixedfit::BobyqaSettings;
using mixedfit::Status;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kBobyqa = 34;  // NLOPT_LN_BOBYQA in NLopt's enum

using Vec = std::vector<double>;

// bobyqa_minimize with the vectors named (braces inside CHECK() would split its argument)
Status minimize(const mixedfit::BoxObjective& f, const Vec& x0, const Vec& lower,
                const BobyqaSettings& s, BobyqaResult& r) {
  return mixedfit::bobyqa_minimize(f, x0, lower, s, r);
}

bool load() {
  // An extension module leaves Python's symbols to the interpreter that loads it.
  const char* python = std::getenv("MIXEDFIT_PYTHON_LIBRARY");
  if (python && *python && !dlopen(python, RTLD_NOW | RTLD_GLOBAL))
    std::fprintf(stderr, "cannot load %s: %s\n", python, dlerror());
  const char* path = std::getenv("MIXEDFIT_NLOPT_LIBRARY");
  std::string error;
  const bool ok = path && mixedfit::load_nlopt(path, kBobyqa, error);
  if (!ok) std::fprintf(stderr, "cannot load NLopt: %s\n", path ? error.c_str() : "no path");
  return ok;
}

// (x0 - 1)^2 + (x1 + 2)^2 + 1 with x1 >= -1: the minimum 2 at (1, -1), on the bound; the
// start below the bound is moved onto it.
void bounded_quadratic() {
  int calls = 0;
  auto f = [&calls](const double* x, double& v) {
    ++calls;
    v = (x[0] - 1) * (x[0] - 1) + (x[1] + 2) * (x[1] + 2) + 1;
    return Status::Ok;
  };
  BobyqaResult r;
  const Vec x0{3.0, -5.0}, lower{-kInf, -1.0};
  CHECK(minimize(f, x0, lower, BobyqaSettings{}, r) == Status::Ok);
  CHECK_NEAR(r.x[0], 1.0, 1e-4);
  CHECK(r.x[1] == -1.0);
  CHECK_NEAR(r.fun, 2.0, 1e-8);
  CHECK(r.nevals == calls);
  CHECK(r.nlopt_code > 0 && r.nlopt_code < 5);
}

// Points with x0 > 2 have no value (+inf), x0 < -2 give NaN; the run's first steps (1.5
// long) reach both. The answer is the best point evaluated, a finite one, whatever NLopt's
// models made of the infinite values.
void points_without_a_value() {
  double best = kInf;
  auto f = [&best](const double* x, double& v) {
    v = x[0] > 2 ? kInf : x[0] < -2 ? std::nan("") : (x[0] - 0.5) * (x[0] - 0.5) + x[1] * x[1];
    if (v < best) best = v;
    return Status::Ok;
  };
  BobyqaResult r;
  const Vec x0{1.0, 1.0}, lower{-3.0, -kInf};
  BobyqaSettings s;
  s.initial_step = {1.5, 1.5};
  CHECK(minimize(f, x0, lower, s, r) == Status::Ok);
  CHECK(r.fun == best);
  CHECK(r.fun < 0.5 * 0.5 + 1.0);  // better than the start
  CHECK(r.x[0] >= -2 && r.x[0] <= 2);
}

// maxeval stops the run with NLopt's code 5, returning the best point evaluated.
void maxeval_and_best_point() {
  double best = kInf;
  auto f = [&best](const double* x, double& v) {
    v = std::pow(x[0] - 0.3, 2) + 10 * std::pow(x[1] - x[0] * x[0], 2);
    best = std::min(best, v);
    return Status::Ok;
  };
  BobyqaSettings s;
  s.maxeval = 7;
  s.initial_step = {0.5, 0.5};
  BobyqaResult r;
  const Vec x0{2.0, 2.0}, lower{-kInf, -kInf};
  CHECK(minimize(f, x0, lower, s, r) == Status::Ok);
  CHECK(r.nevals == 7);
  CHECK(r.nlopt_code == 5);
  CHECK(r.fun == best);
}

// An objective's status stops the run at once and is returned; so is an exception.
void stopping() {
  int calls = 0;
  auto interrupted = [&calls](const double*, double& v) {
    v = 1.0;
    return ++calls == 4 ? Status::Interrupted : Status::Ok;
  };
  BobyqaResult r;
  const Vec x0{1.0, 1.0}, lower{-kInf, -kInf};
  CHECK(minimize(interrupted, x0, lower, BobyqaSettings{}, r) == Status::Interrupted);
  CHECK(calls == 4);
  auto throws = [](const double*, double&) -> Status { throw std::runtime_error("boom"); };
  bool caught = false;
  try {
    minimize(throws, x0, lower, BobyqaSettings{}, r);
  } catch (const std::runtime_error&) {
    caught = true;
  }
  CHECK(caught);
}

void mismatched_sizes() {
  auto f = [](const double*, double& v) { v = 0; return Status::Ok; };
  BobyqaResult r;
  const Vec x0{1.0, 1.0}, one{0.0}, two{0.0, 0.0};
  CHECK(minimize(f, x0, one, BobyqaSettings{}, r) == Status::BadDimension);
  BobyqaSettings s;
  s.initial_step = {0.1};
  CHECK(minimize(f, x0, two, s, r) == Status::NotEvaluated);
}

}  // namespace

int main() {
  CHECK(!mixedfit::nlopt_loaded());
  std::string error;
  CHECK(!mixedfit::load_nlopt("/nonexistent/libnlopt.so", kBobyqa, error));
  CHECK(error.find("cannot open") != std::string::npos);
  if (!load()) return 1;
  CHECK(mixedfit::nlopt_loaded());
  bounded_quadratic();
  points_without_a_value();
  maxeval_and_best_point();
  stopping();
  mismatched_sizes();
  return mixedfit_test::finish("test_nlopt_bobyqa");
}
