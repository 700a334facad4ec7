// Bindings for the LMM Problem: arrays in, objective / solution out. The GIL is released while
// the core computes; each object's mutex (CoreLock) serializes the methods that use it.
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <vector>

#include "common.hpp"
#include "optimize.hpp"
#include "mixedfit/interrupt.hpp"
#include "mixedfit/newton.hpp"
#include "mixedfit/problem.hpp"

namespace mixedfit_py {

using mixedfit::Matrix;
using mixedfit::Problem;
using mixedfit::Status;
using mixedfit::Vector;

namespace {
py::array_t<double> matrix_to_numpy(const Matrix& M) {
  return py::array_t<double>({M.rows(), M.cols()}, {sizeof(double), sizeof(double) * M.rows()},
                             M.data());
}
}  // namespace

// Owns references to the caller's arrays so the core can use their buffers without copies.
struct PyProblem {
  py::list keep;  // X, every term's codes and Z, then each response's y and w
  py::array X;
  py::list terms;
  py::object y = py::none(), w = py::none();  // the last response (for pickling)
  std::unique_ptr<CheckedTerms> checked;
  std::unique_ptr<Problem> prob;
  py::ssize_t n = 0;
  bool has_response = false;
  py::object crossprod = py::none();  // (n, p, layout, cooc, rows, cols, vals, sum_log_w)
  std::mutex mu;
  AliveMark alive;  // last member: set only once everything above is constructed

  PyProblem(py::array X_, py::list terms_) : X(X_), terms(terms_) {
    if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
    n = X.shape(0);
    if (n < 1) throw py::value_error("the problem needs at least one observation");
    const py::ssize_t p = X.shape(1);
    const double* Xp = f64_data(X, "X", n, p);
    require_finite(Xp, n * p, "X");
    keep.append(X);
    checked = std::make_unique<CheckedTerms>(terms, n);
    for (auto a : checked->arrays) keep.append(a);
    std::vector<mixedfit::TermData> td = checked->data;
    {
      py::gil_scoped_release release;
      prob = std::make_unique<Problem>(n, p, Xp, std::move(td));
    }
    raise_build_status(*prob);
  }

  PyProblem() = default;  // from_crossproduct

  // The problem from the term layout and the level pattern, A from summed cross products
  // (crossprod.cpp): no rows are held, so the methods that need them raise.
  static std::unique_ptr<PyProblem> from_crossproduct(py::ssize_t n, py::ssize_t p,
                                                      py::list layout, py::list cooc,
                                                      py::array rows, py::array cols,
                                                      py::array vals, double sum_log_w);
  void require_rows(const char* what) const {
    if (!prob->has_rows())
      throw py::type_error(std::string(what) + " needs the data rows; this problem was built "
                           "from cross products alone");
  }

  // A response is set and theta (or a start) has ntheta entries.
  void require_theta(const DArr& theta) const {
    if (!has_response)
      throw py::value_error("set_response() must be called before the objective is evaluated");
    if (theta.ndim() != 1 || theta.shape(0) != prob->ntheta())
      throw py::value_error("theta must be a vector of length " + std::to_string(prob->ntheta()));
  }

  void set_response(py::array y_, py::object w_) {
    alive.check();
    CoreLock lock(mu);
    require_rows("set_response");
    checked->check_unchanged(n);
    const double* yp = f64_data(y_, "y", n);
    const double* wp = nullptr;
    keep.append(y_);
    py::object wkeep = py::none();
    if (!w_.is_none()) {
      py::array wa = w_.cast<py::array>();
      wp = f64_data(wa, "weights", n);
      keep.append(wa);
      wkeep = wa;
    }
    has_response = false;
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->set_response(yp, wp);
    }
    raise_status(s, "set_response");
    y = y_;
    w = wkeep;
    has_response = true;
  }

  // Factors at theta; the caller holds the lock.
  void factor_checked(const DArr& theta) {
    require_theta(theta);
    const double* t = theta.data();
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->factor(t);
    }
    raise_status(s, "objective");
  }

  double objective(DArr theta, bool reml) {
    alive.check();
    CoreLock lock(mu);
    factor_checked(theta);
    return prob->profiled_objective(reml);
  }

  // BOBYQA over theta inside the core (nlopt_bobyqa.hpp): the objective at each point the
  // optimizer asks for, +inf where the factorization fails. (x, fun, nevals, NLopt code).
  py::tuple bobyqa(DArr x0, DArr lower, bool reml, double ftol_abs, double xtol_abs,
                   int maxeval, py::object initial_step) {
    alive.check();
    CoreLock lock(mu);
    require_theta(x0);
    Problem& problem = *prob;
    auto objective = [&problem, reml](const double* theta, double& value) {
      const Status s = problem.factor(theta);
      if (s == Status::Interrupted || s == Status::NonFiniteInput || s == Status::BadDimension)
        return s;
      value = s == Status::Ok ? problem.profiled_objective(reml)
                              : std::numeric_limits<double>::infinity();
      return Status::Ok;
    };
    return run_bobyqa(objective, x0, lower, ftol_abs, xtol_abs, maxeval, initial_step);
  }

  // Modified Newton over theta with the exact gradient, the whole loop in the core
  // (newton.hpp: optimize.newton's rules): (theta, value, evaluations, converged); when not
  // converged, theta and value are the last accepted point. Unbounded, as minimize_theta.
  py::tuple newton(DArr x0, bool reml) {
    alive.check();
    CoreLock lock(mu);
    require_theta(x0);
    require_finite(x0.data(), x0.shape(0), "x0");
    require_rows_for_gradient("newton");
    if (prob->rest_sparse()) raise_status(Status::SparseRestUnsupported, "newton");
    Problem& problem = *prob;
    const mixedfit::ValueAndGradient fg = [&problem, reml](const Vector& x, double& f, Vector& g) {
      if (mixedfit::interrupt_requested()) return Status::Interrupted;
      return problem.value_and_gradient(x.data(), reml, f, g);
    };
    const Vector start = Eigen::Map<const Vector>(x0.data(), x0.shape(0));
    const Vector free = Vector::Constant(start.size(), -std::numeric_limits<double>::infinity());
    mixedfit::NewtonResult r;
    {
      py::gil_scoped_release release;
      r = mixedfit::newton_minimize(fg, start, free);
    }
    raise_status(Status::Ok, "newton");  // an interrupt (Ctrl-C) stopped the run: raise it
    return py::make_tuple(py::array_t<double>(r.x.size(), r.x.data()), r.f, r.nevals,
                          r.converged());
  }

  // Objective and its gradient in theta.
  py::tuple objective_grad(DArr theta, bool reml) {
    alive.check();
    CoreLock lock(mu);
    require_theta(theta);
    require_finite(theta.data(), theta.shape(0), "theta");
    require_rows_for_gradient("objective_grad");
    double obj = 0.0;
    Vector grad;
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->value_and_gradient(theta.data(), reml, obj, grad);
    }
    raise_status(s, "objective gradient");
    return py::make_tuple(obj, py::array_t<double>(grad.size(), grad.data()));
  }

  // The gradient of a model with several terms reads the rows (a one-term model's does not).
  void require_rows_for_gradient(const char* what) const {
    if (prob->nterms() == 1) return;
    require_rows(what);
    checked->check_unchanged(n);
  }

  py::dict solution(DArr theta) {
    alive.check();
    CoreLock lock(mu);
    factor_checked(theta);
    Vector beta, u, b;
    Matrix V;
    std::vector<Matrix> cv;
    Status s1, s2, s3;
    {
      py::gil_scoped_release release;
      s1 = prob->solve(beta, u);
      if (s1 == Status::Ok) prob->lambda_times(u, b);
      s2 = prob->unscaled_vcov(V);
      s3 = prob->cond_var(cv);
    }
    raise_status(s1, "solve");
    raise_status(s2, "vcov");
    raise_status(s3, "condVar");
    const auto& c = prob->components();
    py::dict out;
    out["beta"] = py::array_t<double>(beta.size(), beta.data());
    out["u"] = py::array_t<double>(u.size(), u.data());
    out["b"] = py::array_t<double>(b.size(), b.data());
    out["unscaled_vcov"] = matrix_to_numpy(V);
    py::list cvl;
    for (const auto& M : cv) cvl.append(matrix_to_numpy(M));
    out["unscaled_condvar"] = cvl;
    out["ldL2"] = c.ldL2;
    out["ldRX2"] = c.ldRX2;
    out["pwrss"] = c.pwrss;
    out["ussq"] = c.ussq;
    out["wrss"] = c.wrss;
    out["ldW"] = c.ldW;
    return out;
  }

  py::dict components() {
    alive.check();
    CoreLock lock(mu);
    const auto& c = prob->components();
    py::dict out;
    out["ldL2"] = c.ldL2;
    out["ldRX2"] = c.ldRX2;
    out["pwrss"] = c.pwrss;
    out["ldW"] = c.ldW;
    return out;
  }

  py::array_t<double> linear_predictor(DArr beta, DArr b) {
    alive.check();
    CoreLock lock(mu);
    require_rows("linear_predictor");
    checked->check_unchanged(n);
    if (beta.size() != prob->p())
      throw py::value_error("beta must have length " + std::to_string(prob->p()));
    if (b.size() != prob->q()) throw py::value_error("b must have length " + std::to_string(prob->q()));
    py::array_t<double> eta(n);
    const double* bp = beta.data();
    const double* bb = b.data();
    double* e = eta.mutable_data();
    {
      py::gil_scoped_release release;
      prob->linear_predictor(bp, bb, e);
    }
    return eta;
  }

  // Pickling: the arrays the problem was built from and the last response; loading rebuilds
  // the problem from them (the factorization is recomputed at the next evaluation).
  py::tuple getstate() {
    alive.check();
    CoreLock lock(mu);
    if (!crossprod.is_none()) return py::make_tuple(crossprod);
    return py::make_tuple(X, terms, y, w);
  }

  static std::unique_ptr<PyProblem> from_state(const py::tuple& t) {
    if (t.size() == 1) {
      auto c = t[0].cast<py::tuple>();
      return from_crossproduct(c[0].cast<py::ssize_t>(), c[1].cast<py::ssize_t>(),
                               c[2].cast<py::list>(), c[3].cast<py::list>(), c[4].cast<py::array>(),
                               c[5].cast<py::array>(), c[6].cast<py::array>(), c[7].cast<double>());
    }
    if (t.size() != 4) throw py::value_error("invalid LmmProblem state");
    auto out = std::make_unique<PyProblem>(t[0].cast<py::array>(), t[1].cast<py::list>());
    if (!t[2].is_none()) out->set_response(t[2].cast<py::array>(), t[3]);
    return out;
  }
};

std::unique_ptr<PyProblem> PyProblem::from_crossproduct(py::ssize_t n, py::ssize_t p,
                                                        py::list layout, py::list cooc,
                                                        py::array rows, py::array cols,
                                                        py::array vals, double sum_log_w) {
  using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
  if (n < 1 || p < 0) throw py::value_error("n must be positive and p non-negative");
  if (layout.size() == 0) throw py::value_error("at least one random-effects term is required");
  if (cooc.size() + 1 != layout.size())
    throw py::value_error("cooc needs one array of level pairs per term after the first");
  std::vector<mixedfit::TermData> td;
  for (auto item : layout) {
    auto t = item.cast<py::tuple>();
    mixedfit::TermData d;
    d.nlev = t[0].cast<int>();
    d.p = t[1].cast<int>();
    if (d.nlev < 1 || d.p < 1) throw py::value_error("each term needs nlevels >= 1 and p >= 1");
    td.push_back(d);
  }
  std::vector<std::vector<std::int64_t>> pairs;
  for (auto item : cooc) {
    I64 a = I64::ensure(item);
    if (!a) throw py::type_error("cooc entries must be integer arrays of level pairs");
    pairs.emplace_back(a.data(), a.data() + a.size());
  }
  I64 r = I64::ensure(rows), c = I64::ensure(cols);
  DArr v = DArr::ensure(vals);
  if (!r || !c || !v || r.size() != c.size() || r.size() != v.size())
    throw py::value_error("rows, cols and vals must be arrays of one length");
  auto out = std::make_unique<PyProblem>();
  out->n = n;
  {
    py::gil_scoped_release release;
    out->prob = std::make_unique<Problem>(Problem::from_crossproduct(n, p, std::move(td), pairs));
  }
  mixedfit::Status s;
  {
    py::gil_scoped_release release;
    s = out->prob->set_crossproduct(v.size(), r.data(), c.data(), v.data(), sum_log_w);
  }
  raise_status(s, "set_crossproduct");
  out->has_response = true;
  out->crossprod = py::make_tuple(n, p, layout, cooc, r, c, v, sum_log_w);
  return out;
}

void bind_lmm(py::module_& m) {
  m.def("set_rest_storage", [](const std::string& mode) {
    mixedfit::RestStorage s;
    if (!mixedfit::parse_rest_storage(mode, s))
      throw py::value_error("rest_storage must be 'auto', 'dense' or 'sparse', not '" + mode + "'");
    mixedfit::set_rest_storage(s);
  }, py::arg("mode"),
        "How later problems store the block of the random effects outside the first term: "
        "'auto' (by a cost model; the default, or MIXEDFIT_REST_STORAGE), 'dense' or 'sparse'.");
  m.def("rest_storage", []() { return std::string(mixedfit::rest_storage_name(mixedfit::rest_storage())); },
        "The current rest-block storage setting.");
  py::class_<PyProblem>(m, "LmmProblem",
                        "Blocked-Cholesky LMM problem. X: (n, p) float64 column-major; terms: "
                        "list of (codes int32 (n,), nlevels, Z float64 (n, p_k) column-major) in "
                        "lme4's order. Buffers are used without copies (do not change them in "
                        "place). Safe to share between threads: calls on one object run one at a "
                        "time. Picklable (rebuilt from its arrays).")
      .def(py::init<py::array, py::list>(), py::arg("X"), py::arg("terms"))
      .def_static("from_crossproduct", &PyProblem::from_crossproduct, py::arg("n"), py::arg("p"),
                  py::arg("layout"), py::arg("cooc"), py::arg("rows"), py::arg("cols"),
                  py::arg("vals"), py::arg("sum_log_w") = 0.0,
                  "The problem from cross products alone: layout [(nlevels, p_k)] in lme4's "
                  "order; cooc, per term after the first, an int64 array of (level of term 0, "
                  "level of term k) pairs that occur together, flattened; A = [Z X y]' W "
                  "[Z X y] as lower-triangle COO entries (rows, cols, vals) over [u, X, y] "
                  "(repeats add); sum_log_w the sum of log prior weights. Methods that need "
                  "the rows raise TypeError.")
      .def_property_readonly("has_rows", [](const PyProblem& s) { s.alive.check(); return s.prob->has_rows(); })
      .def("set_response", &PyProblem::set_response, py::arg("y"), py::arg("weights") = py::none(),
           "Form A = [Z X y]' W [Z X y] (O(n)).")
      .def("objective", &PyProblem::objective, py::arg("theta"), py::arg("reml"),
           "Profiled deviance (ML) or REML criterion at theta, on lme4's scale.")
      .def("bobyqa", &PyProblem::bobyqa, py::arg("x0"), py::arg("lower"), py::arg("reml"),
           py::arg("ftol_abs"), py::arg("xtol_abs"), py::arg("maxeval"),
           py::arg("initial_step") = py::none(),
           "Minimize the criterion over theta from x0 (theta >= lower) by NLopt's BOBYQA inside "
           "the core (after mixedfit._core.load_nlopt): (theta, value, evaluations, NLopt's "
           "result code). A theta the factorization cannot take counts as +inf.")
      .def("newton", &PyProblem::newton, py::arg("x0"), py::arg("reml"),
           "Modified Newton over theta from x0 with the exact gradient, the loop in the core "
           "(optimize.newton's rules): (theta, value, evaluations, converged).")
      .def("objective_grad", &PyProblem::objective_grad, py::arg("theta"), py::arg("reml"),
           "(objective, gradient in theta) at theta.")
      .def("solution", &PyProblem::solution, py::arg("theta"),
           "beta, u, b, unscaled vcov and conditional variances, and the components at theta.")
      .def("components", &PyProblem::components)
      .def("linear_predictor", &PyProblem::linear_predictor, py::arg("beta"), py::arg("b"),
           "X beta + Z b, shape (n,).")
      .def_property_readonly("n", [](const PyProblem& s) { s.alive.check(); return s.prob->n(); })
      .def_property_readonly("p", [](const PyProblem& s) { s.alive.check(); return s.prob->p(); })
      .def_property_readonly("q", [](const PyProblem& s) { s.alive.check(); return s.prob->q(); })
      .def_property_readonly("ntheta", [](const PyProblem& s) { s.alive.check(); return s.prob->ntheta(); })
      .def_property_readonly("rest_dense", [](const PyProblem& s) { s.alive.check(); return s.prob->rest_dense(); })
      .def_property_readonly("rest_sparse", [](const PyProblem& s) { s.alive.check(); return s.prob->rest_sparse(); },
                             "The random effects outside the first term are factored as a sparse "
                             "matrix (no gradient, leverages or Satterthwaite on this path).")
      .def("input_addresses", [](const PyProblem& s) {
        s.alive.check();
        py::list out;
        for (auto a : s.keep) out.append(reinterpret_cast<std::uintptr_t>(a.cast<py::array>().data()));
        return out;
      }, "Data addresses of the buffers the core reads (to check that nothing was copied).")
      .def(py::pickle([](PyProblem& s) { return s.getstate(); },
                      [](const py::tuple& t) { return PyProblem::from_state(t); }));
}

}  // namespace mixedfit_py
