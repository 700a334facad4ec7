// Bindings for the GLMM: PIRLS stages and the Laplace / AGQ objectives. The GIL is released
// while the core computes; bad statuses become Python exceptions; each object's mutex
// (CoreLock) serializes the methods that use it.
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common.hpp"
#include "family.hpp"
#include "mixedfit/glmm.hpp"

namespace mixedfit_py {

using mixedfit::Family;
using mixedfit::Glmm;
using mixedfit::Matrix;
using mixedfit::Status;
using mixedfit::Vector;

namespace {
py::array_t<double> to_numpy(const Vector& v) { return py::array_t<double>(v.size(), v.data()); }
py::array_t<double> to_numpy(const Matrix& M) {
  return py::array_t<double>({M.rows(), M.cols()}, {sizeof(double), sizeof(double) * M.rows()},
                             M.data());
}
using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;

constexpr int kMaxNodes = 1000;  // adaptive Gauss-Hermite nodes (lme4 allows up to 25)

// A float64 vector argument of exactly `len` entries, by name.
void require_length(const DArr& a, py::ssize_t len, const char* name) {
  if (a.ndim() != 1 || a.shape(0) != len)
    throw py::value_error(std::string(name) + " must be a vector of length " + std::to_string(len));
}
}  // namespace

struct PyGlmm {
  py::list keep;
  py::tuple args;  // the constructor's arguments (for pickling)
  std::unique_ptr<CheckedTerms> checked;
  std::unique_ptr<Glmm> g;
  py::ssize_t n = 0, p = 0;
  std::mutex mu;
  AliveMark alive;  // last member: set only once everything above is constructed

  PyGlmm(py::array X, py::array y, py::array pw, py::object offset, py::list terms, int family,
         int link, double nb_theta) {
    args = py::make_tuple(X, y, pw, offset, terms, family, link, nb_theta);
    if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
    n = X.shape(0);
    p = X.shape(1);
    if (n < 1) throw py::value_error("the problem needs at least one observation");
    const Family fam = make_family(family, link, nb_theta);
    const double* Xp = f64_data(X, "X", n, p);
    const double* yp = f64_data(y, "y", n);
    const double* wp = f64_data(pw, "weights", n);
    require_finite(Xp, n * p, "X");
    require_finite(yp, n, "y");
    require_finite(wp, n, "weights");
    for (py::ssize_t i = 0; i < n; ++i)
      if (wp[i] < 0) throw py::value_error("weights must be non-negative");
    const double* op = nullptr;
    keep.append(X);
    keep.append(y);
    keep.append(pw);
    if (!offset.is_none()) {
      py::array oa = offset.cast<py::array>();
      op = f64_data(oa, "offset", n);
      require_finite(op, n, "offset");
      keep.append(oa);
    }
    checked = std::make_unique<CheckedTerms>(terms, n);
    for (auto a : checked->arrays) keep.append(a);
    std::vector<mixedfit::TermData> td = checked->data;
    {
      py::gil_scoped_release release;
      g = std::make_unique<Glmm>(n, p, Xp, yp, wp, op, std::move(td), fam);
    }
    raise_build_status(g->problem());
  }

  py::ssize_t ntheta() const { return g->ntheta(); }

  // The checks every evaluation starts with; the caller holds the lock.
  void check_call(const DArr& theta) {
    checked->check_unchanged(n);
    require_length(theta, ntheta(), "theta");
  }

  double stage1_locked(const DArr& theta, const py::object& eta_start_obj) {
    check_call(theta);
    DArr eta_start;
    const double* ep = nullptr;
    if (!eta_start_obj.is_none()) {
      eta_start = eta_start_obj.cast<DArr>();
      require_length(eta_start, n, "eta_start");
      ep = eta_start.data();
    }
    double obj;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->eval_stage1(theta.data(), ep, obj);
    }
    raise_status(s, "PIRLS (nAGQ = 0 stage)");
    return obj;
  }

  double stage2_locked(const DArr& theta, const DArr& beta, const py::object& u_start_obj,
                       int nagq, const DArr& ghz, const DArr& ghw) {
    check_call(theta);
    require_length(beta, p, "beta");
    DArr u_start;
    const double* up = nullptr;
    if (!u_start_obj.is_none()) {
      u_start = u_start_obj.cast<DArr>();
      require_length(u_start, g->q(), "u_start");
      up = u_start.data();
    }
    if (nagq > kMaxNodes)
      throw py::value_error("nagq must be at most " + std::to_string(kMaxNodes));
    if (nagq > 1) {
      require_length(ghz, nagq, "ghz");
      require_length(ghw, nagq, "ghw");
      require_finite(ghz.data(), nagq, "ghz");
      require_finite(ghw.data(), nagq, "ghw");
    }
    double obj;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->eval_stage2(theta.data(), beta.data(), up, nagq, ghz.data(), ghw.data(), obj);
    }
    raise_status(s, "PIRLS (Laplace/AGQ stage)");
    return obj;
  }

  double stage1(DArr theta, py::object eta_start) {
    alive.check();
    CoreLock lock(mu);
    return stage1_locked(theta, eta_start);
  }

  double stage2(DArr theta, DArr beta, py::object u_start, int nagq, DArr ghz, DArr ghw) {
    alive.check();
    CoreLock lock(mu);
    return stage2_locked(theta, beta, u_start, nagq, ghz, ghw);
  }

  py::array_t<double> gradient_locked(bool stage1, const DArr& theta, const char* where) {
    Vector grad;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->gradient(stage1, theta.data(), grad);
    }
    raise_status(s, where);
    return to_numpy(grad);
  }

  // Objective and its gradient: stage 1 in theta, stage 2 in (theta, beta); Laplace only.
  py::tuple stage1_grad(DArr theta) {
    alive.check();
    CoreLock lock(mu);
    const double obj = stage1_locked(theta, py::none());
    return py::make_tuple(obj, gradient_locked(true, theta, "gradient (nAGQ = 0 stage)"));
  }

  py::tuple stage2_grad(DArr theta, DArr beta) {
    alive.check();
    CoreLock lock(mu);
    DArr none_z, none_w;
    const double obj = stage2_locked(theta, beta, py::none(), 1, none_z, none_w);
    return py::make_tuple(obj, gradient_locked(false, theta, "gradient (Laplace stage)"));
  }

  // Length of a stage's parameter vector: theta (stage 1) or (theta, beta) (stage 2).
  py::ssize_t stage_size(int stage) const {
    if (stage != 1 && stage != 2) throw py::value_error("stage must be 1 or 2");
    return stage == 1 ? ntheta() : ntheta() + p;
  }

  // Modified Newton on a stage's Laplace objective, the whole loop in the core: (x, f, nevals,
  // converged); when not converged, x and f are the last accepted point.
  py::tuple newton(int stage, DArr x0, const py::object& u_start_obj, bool curvature_from_stage1) {
    alive.check();
    CoreLock lock(mu);
    checked->check_unchanged(n);
    require_length(x0, stage_size(stage), "x0");
    if (!g->has_gradient()) raise_status(Status::BadDimension, "Newton (no exact gradient)");
    DArr u_start;
    const double* up = nullptr;
    if (!u_start_obj.is_none()) {
      if (stage != 2) throw py::value_error("u_start is for stage 2 only");
      u_start = u_start_obj.cast<DArr>();
      require_length(u_start, g->q(), "u_start");
      require_finite(u_start.data(), g->q(), "u_start");
      up = u_start.data();
    }
    const Vector start = Eigen::Map<const Vector>(x0.data(), x0.shape(0));
    mixedfit::NewtonResult r;
    {
      py::gil_scoped_release release;
      r = g->newton(stage, start, up, curvature_from_stage1);
    }
    // An interrupt (Ctrl-C) stops the evaluations, and so the run: raise it here.
    raise_status(Status::Ok, "Newton");
    return py::make_tuple(to_numpy(r.x), r.f, r.nevals, r.converged());
  }

  // (f, gradient, Hessian) of the stage-2 Laplace objective at x = (theta, beta), the Hessian
  // from central differences (step delta) of the exact gradient.
  py::tuple stage2_hessian(DArr x, double delta) {
    alive.check();
    CoreLock lock(mu);
    checked->check_unchanged(n);
    require_length(x, stage_size(2), "x");
    if (!(delta > 0) || !std::isfinite(delta)) throw py::value_error("delta must be > 0");
    const Vector at = Eigen::Map<const Vector>(x.data(), x.shape(0));
    double f = 0.0;
    Vector grad;
    Matrix H;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->stage2_hessian(at, delta, f, grad, H);
    }
    raise_status(s, "Hessian (Laplace stage)");
    return py::make_tuple(f, to_numpy(grad), to_numpy(H));
  }

  // Unscaled conditional variances and the unscaled vcov of beta at the mode's working
  // weights and the last evaluated theta.
  void add_variances(py::dict& out) {
    std::vector<Matrix> cv;
    Matrix V;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->variances(cv, V);
    }
    raise_status(s, "condVar and vcov");
    py::list cvl;
    for (const auto& M : cv) cvl.append(to_numpy(M));
    out["unscaled_condvar"] = cvl;
    out["unscaled_vcov"] = to_numpy(V);
  }

  // State at the last successful evaluation: mode, b = Lambda(theta) u, linear predictor,
  // mean, weights, deviance pieces; with_variances adds the unscaled conditional variances
  // and vcov of beta at that theta.
  py::dict state_locked(bool with_variances) {
    checked->check_unchanged(n);
    if (g->evaluated_stage() == 0)
      throw py::value_error("no successful evaluation yet: call stage1() or stage2() first");
    Vector b;
    raise_status(g->random_effects(b), "random effects");
    py::dict out;
    out["theta"] = to_numpy(g->theta());
    out["u"] = to_numpy(g->u());
    out["b"] = to_numpy(b);
    out["beta"] = to_numpy(g->beta());
    out["eta"] = to_numpy(g->eta());
    out["mu"] = to_numpy(g->mu());
    out["working_weights"] = to_numpy(g->working_weights());
    out["devsum"] = g->devsum();
    out["aic"] = g->aic_value();
    out["ussq"] = g->ussq();
    out["ldL2"] = g->ldL2();
    out["pearson"] = g->pearson();
    out["iterations"] = g->iterations();
    out["stage"] = g->evaluated_stage();
    if (with_variances) add_variances(out);
    return out;
  }

  py::dict state(bool with_variances) {
    alive.check();
    CoreLock lock(mu);
    return state_locked(with_variances);
  }

  py::dict state_at(DArr theta) {
    alive.check();
    CoreLock lock(mu);
    require_length(theta, ntheta(), "theta");
    if (g->evaluated_stage() == 0)
      throw py::value_error("no successful evaluation yet: call stage1() or stage2() first");
    const Vector t = Eigen::Map<const Vector>(theta.data(), ntheta());
    if (t != g->theta())
      throw py::value_error("state_at: theta differs from the last evaluated theta; evaluate "
                            "the objective there first");
    return state_locked(true);
  }

  void set_pirls_control(double tol, int maxit) {
    alive.check();
    CoreLock lock(mu);
    if (!(tol > 0) || !std::isfinite(tol) || maxit < 1)
      throw py::value_error("PIRLS tol must be finite and > 0, maxit >= 1");
    g->control.tol = tol;
    g->control.maxit = maxit;
  }

  // Pickling: the constructor's arguments and the PIRLS control. Loading rebuilds the object;
  // the warm starts of the last evaluations are not kept (the next stage-1 call needs an
  // eta_start, as on a new object).
  py::tuple getstate() {
    alive.check();
    CoreLock lock(mu);
    return py::make_tuple(args, g->control.tol, g->control.maxit);
  }

  static std::unique_ptr<PyGlmm> from_state(const py::tuple& t) {
    if (t.size() != 3) throw py::value_error("invalid GlmmProblem state");
    const auto a = t[0].cast<py::tuple>();
    if (a.size() != 8) throw py::value_error("invalid GlmmProblem state");
    auto out = std::make_unique<PyGlmm>(a[0].cast<py::array>(), a[1].cast<py::array>(),
                                        a[2].cast<py::array>(), a[3], a[4].cast<py::list>(),
                                        a[5].cast<int>(), a[6].cast<int>(), a[7].cast<double>());
    out->set_pirls_control(t[1].cast<double>(), t[2].cast<int>());
    return out;
  }
};

void bind_glmm(py::module_& m) {
  py::class_<PyGlmm>(m, "GlmmProblem",
                     "GLMM by PIRLS on the blocked-Cholesky core. family: 0 binomial, 1 poisson, "
                     "2 Gamma, 3 inverse.gaussian, 4 gaussian, 5 negative binomial (nb_theta); "
                     "link: 0 identity, 1 log, 2 logit, 3 probit, 4 cloglog, 5 cauchit, 6 inverse, "
                     "7 sqrt, 8 1/mu^2. Safe to share between threads: calls on one object run one "
                     "at a time. Picklable.")
      .def(py::init<py::array, py::array, py::array, py::object, py::list, int, int, double>(),
           py::arg("X"), py::arg("y"), py::arg("weights"), py::arg("offset"), py::arg("terms"),
           py::arg("family"), py::arg("link"), py::arg("nb_theta") = 0.0)
      .def("stage1", &PyGlmm::stage1, py::arg("theta"), py::arg("eta_start"),
           "nAGQ = 0 objective at theta (beta profiled by PIRLS), lme4's scale; "
           "eta_start=None starts PIRLS from the last stage-1 mode.")
      .def("stage2", &PyGlmm::stage2, py::arg("theta"), py::arg("beta"), py::arg("u_start"),
           py::arg("nagq"), py::arg("ghz"), py::arg("ghw"),
           "Laplace (nagq <= 1, lme4's aic scale) or AGQ (unit-deviance scale) objective; "
           "u_start=None starts PIRLS from the last stage-2 mode.")
      .def("stage1_grad", &PyGlmm::stage1_grad, py::arg("theta"),
           "(objective, gradient in theta) of the nAGQ = 0 stage, PIRLS warm-started from the "
           "last stage-1 mode (binomial-logit and Poisson-log only).")
      .def("stage2_grad", &PyGlmm::stage2_grad, py::arg("theta"), py::arg("beta"),
           "(Laplace objective, gradient in (theta, beta)), PIRLS warm-started from the last "
           "stage-2 mode (binomial-logit and Poisson-log only).")
      .def("newton", &PyGlmm::newton, py::arg("stage"), py::arg("x0"),
           py::arg("u_start") = py::none(), py::arg("curvature_from_stage1") = false,
           "Modified Newton on stage 1 (x = theta) or stage 2 (x = (theta, beta)) with the "
           "exact gradient, all in the core: (x, f, nevals, converged). Stage 2 starts PIRLS "
           "from u_start if given, else from the last stage-2 mode; curvature_from_stage1: "
           "its curvature model from stage 1's at the same theta (fewer evaluations; finish "
           "with an exact-Hessian Newton step).")
      .def("stage2_hessian", &PyGlmm::stage2_hessian, py::arg("x"), py::arg("delta") = 1e-4,
           "(f, gradient, Hessian) of the Laplace objective at x = (theta, beta); the Hessian "
           "from central differences of the exact gradient.")
      .def_property_readonly("has_gradient", [](PyGlmm& s) { s.alive.check(); return s.g->has_gradient(); })
      .def("set_pirls_control", &PyGlmm::set_pirls_control, py::arg("tol"), py::arg("maxit"))
      .def("state", &PyGlmm::state, py::arg("with_variances") = false,
           "Mode, b, eta, mu, weights and deviance pieces at the last successful evaluation.")
      .def("state_at", &PyGlmm::state_at, py::arg("theta"),
           "As state(True); theta must be the last evaluated theta.")
      .def(py::pickle([](PyGlmm& s) { return s.getstate(); },
                      [](const py::tuple& t) { return PyGlmm::from_state(t); }));
}

}  // namespace mixedfit_py
