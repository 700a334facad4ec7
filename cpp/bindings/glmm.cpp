// Bindings for the GLMM: PIRLS stages and the Laplace / AGQ objectives. The GIL is released
// while the core computes; bad statuses become Python exceptions.
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common.hpp"
#include "mixedfit/glmm.hpp"

namespace mixedfit_py {

using mixedfit::Family;
using mixedfit::FamilyKind;
using mixedfit::Glmm;
using mixedfit::LinkKind;
using mixedfit::Matrix;
using mixedfit::Status;
using mixedfit::TermData;
using mixedfit::Vector;

namespace {
py::array_t<double> to_numpy(const Vector& v) { return py::array_t<double>(v.size(), v.data()); }
py::array_t<double> to_numpy(const Matrix& M) {
  return py::array_t<double>({M.rows(), M.cols()}, {sizeof(double), sizeof(double) * M.rows()},
                             M.data());
}
using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;
}  // namespace

struct PyGlmm {
  py::list keep;
  std::unique_ptr<Glmm> g;
  py::ssize_t n = 0, p = 0;

  PyGlmm(py::array X, py::array y, py::array pw, py::object offset, py::list terms, int family,
         int link, double nb_theta) {
    if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
    n = X.shape(0);
    p = X.shape(1);
    const double* Xp = f64_data(X, "X", n, p);
    const double* yp = f64_data(y, "y", n);
    const double* wp = f64_data(pw, "weights", n);
    const double* op = nullptr;
    keep.append(X);
    keep.append(y);
    keep.append(pw);
    if (!offset.is_none()) {
      py::array oa = offset.cast<py::array>();
      op = f64_data(oa, "offset", n);
      keep.append(oa);
    }
    if (family < 0 || family > 5) throw py::value_error("unknown family code");
    if (family == 5 && !(nb_theta > 0 && std::isfinite(nb_theta)))
      throw py::value_error("negative binomial theta must be positive and finite");
    if (link < 0 || link > 8) throw py::value_error("unknown link code");
    std::vector<TermData> td;
    for (auto item : terms) {
      auto t = item.cast<py::tuple>();
      py::array gc = t[0].cast<py::array>();
      py::array Z = t[2].cast<py::array>();
      TermData d;
      d.g = i32_data(gc, "codes", n);
      d.nlev = t[1].cast<int>();
      d.p = static_cast<int>(Z.shape(1));
      d.Z = f64_data(Z, "Z", n, d.p);
      for (py::ssize_t i = 0; i < n; ++i)
        if (d.g[i] < 0 || d.g[i] >= d.nlev) throw py::value_error("level code out of range");
      keep.append(gc);
      keep.append(Z);
      td.push_back(d);
    }
    if (td.empty()) throw py::value_error("at least one random-effects term is required");
    Family fam{static_cast<FamilyKind>(family), static_cast<LinkKind>(link), nb_theta};
    py::gil_scoped_release release;
    g = std::make_unique<Glmm>(n, p, Xp, yp, wp, op, std::move(td), fam);
  }

  void check_theta(const DArr& theta) {
    if (theta.ndim() != 1 || theta.shape(0) != g->problem_u().ntheta())
      throw py::value_error("theta must have length " + std::to_string(g->problem_u().ntheta()));
  }

  double stage1(DArr theta, py::object eta_start_obj) {
    check_theta(theta);
    DArr eta_start;
    const double* ep = nullptr;
    if (!eta_start_obj.is_none()) {
      eta_start = eta_start_obj.cast<DArr>();
      if (eta_start.size() != n) throw py::value_error("eta_start must have length n");
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

  double stage2(DArr theta, DArr beta, py::object u_start_obj, int nagq, DArr ghz, DArr ghw) {
    check_theta(theta);
    if (beta.size() != p) throw py::value_error("beta must have length " + std::to_string(p));
    DArr u_start;
    const double* up = nullptr;
    if (!u_start_obj.is_none()) {
      u_start = u_start_obj.cast<DArr>();
      if (u_start.size() != g->problem_u().q()) throw py::value_error("u_start has the wrong length");
      up = u_start.data();
    }
    if (nagq > 1 && (ghz.size() != nagq || ghw.size() != nagq))
      throw py::value_error("need nagq quadrature nodes and weights");
    double obj;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->eval_stage2(theta.data(), beta.data(), up, nagq, ghz.data(), ghw.data(), obj);
    }
    raise_status(s, "PIRLS (Laplace/AGQ stage)");
    return obj;
  }

  // Objective and its gradient: stage 1 in theta, stage 2 in (theta, beta); Laplace only.
  py::tuple stage1_grad(DArr theta) {
    const double obj = stage1(theta, py::none());
    Vector grad;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->gradient(true, theta.data(), grad);
    }
    raise_status(s, "gradient (nAGQ = 0 stage)");
    return py::make_tuple(obj, to_numpy(grad));
  }

  py::tuple stage2_grad(DArr theta, DArr beta) {
    DArr none_z, none_w;
    const double obj = stage2(theta, beta, py::none(), 1, none_z, none_w);
    Vector grad;
    Status s;
    {
      py::gil_scoped_release release;
      s = g->gradient(false, theta.data(), grad);
    }
    raise_status(s, "gradient (Laplace stage)");
    return py::make_tuple(obj, to_numpy(grad));
  }

  // State at the last evaluation: mode, linear predictor, mean, weights, deviance pieces, and
  // from the u-only factor the unscaled conditional variances; from the (beta, u) factor at
  // the same weights the unscaled vcov of beta.
  py::dict state(bool with_variances) {
    py::dict out;
    out["u"] = to_numpy(g->u());
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
    Vector b;
    g->problem_u().lambda_times(g->u(), b);
    out["b"] = to_numpy(b);
    if (with_variances) {
      std::vector<Matrix> cv;
      Matrix V;
      Status s1, s2, s3;
      Vector bb, uu;
      {
        py::gil_scoped_release release;
        // Conditional variances from the u-only factor at the mode's working weights
        // (after stage 1 only the (beta, u) problem has been factored).
        auto& pu = g->problem_u();
        Vector zu = g->eta();  // any response: only L_ZZ is needed
        s1 = pu.set_response(zu.data(), g->working_weights().data(), false);
        if (s1 == Status::Ok) s1 = pu.factor(theta_cache.data(), false);
        if (s1 == Status::Ok) s1 = pu.cond_var(cv);
        // vcov from the final weighted factor: refactor the (beta, u) system at these weights.
        auto& pb = g->problem_bu();
        Vector z = g->eta();  // any response: only L_XX is needed
        s2 = pb.set_response(z.data(), g->working_weights().data(), false);
        if (s2 == Status::Ok) s2 = pb.factor(theta_cache.data(), false);
        if (s2 == Status::Ok) s3 = pb.unscaled_vcov(V); else s3 = Status::Ok;
      }
      raise_status(s1, "condVar");
      raise_status(s2, "vcov factor");
      raise_status(s3, "vcov");
      py::list cvl;
      for (const auto& M : cv) cvl.append(to_numpy(M));
      out["unscaled_condvar"] = cvl;
      out["unscaled_vcov"] = to_numpy(V);
    }
    return out;
  }

  std::vector<double> theta_cache;
  py::dict state_at(DArr theta) {
    check_theta(theta);
    theta_cache.assign(theta.data(), theta.data() + theta.size());
    return state(true);
  }
};

void bind_glmm(py::module_& m) {
  py::class_<PyGlmm>(m, "GlmmProblem",
                     "GLMM by PIRLS on the blocked-Cholesky core. family: 0 binomial, 1 poisson, "
                     "2 Gamma, 3 inverse.gaussian, 4 gaussian, 5 negative binomial (nb_theta); link: 0 identity, 1 log, 2 logit, "
                     "3 probit, 4 cloglog, 5 cauchit, 6 inverse, 7 sqrt, 8 1/mu^2.")
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
      .def_property_readonly("has_gradient", [](PyGlmm& s) { return s.g->has_gradient(); })
      .def("set_pirls_control",
           [](PyGlmm& s, double tol, int maxit) {
             if (!(tol > 0) || maxit < 1) throw py::value_error("PIRLS tol must be > 0, maxit >= 1");
             s.g->control.tol = tol;
             s.g->control.maxit = maxit;
           },
           py::arg("tol"), py::arg("maxit"))
      .def("state", &PyGlmm::state, py::arg("with_variances") = false,
           "Mode, eta, mu, weights and deviance pieces at the last evaluation.")
      .def("state_at", &PyGlmm::state_at, py::arg("theta"),
           "As state(True), with the variances computed at theta (the last evaluated theta).");
}

}  // namespace mixedfit_py
