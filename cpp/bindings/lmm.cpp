// Bindings for the LMM Problem: arrays in, objective / solution out. The GIL is released while
// the core computes.
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "common.hpp"
#include "mixedfit/problem.hpp"

namespace mixedfit_py {

using mixedfit::Matrix;
using mixedfit::Problem;
using mixedfit::Status;
using mixedfit::TermData;
using mixedfit::Vector;

// Owns references to the caller's arrays so the core can use their buffers without copies.
struct PyProblem {
  py::list keep;  // X, y, w, and every term's g and Z
  std::unique_ptr<Problem> prob;
  py::ssize_t n = 0;

  PyProblem(py::array X, py::list terms) {
    if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
    n = X.shape(0);
    const py::ssize_t p = X.shape(1);
    const double* Xp = f64_data(X, "X", n, p);
    keep.append(X);
    if (terms.size() == 0) throw py::value_error("at least one random-effects term is required");
    std::vector<TermData> td;
    for (auto item : terms) {
      auto t = item.cast<py::tuple>();
      if (t.size() != 3) throw py::value_error("each term must be (codes, nlevels, Z)");
      py::array g = t[0].cast<py::array>();
      const int nlev = t[1].cast<int>();
      py::array Z = t[2].cast<py::array>();
      if (Z.ndim() != 2) throw py::value_error("a term's Z must be two-dimensional");
      TermData d;
      d.g = i32_data(g, "codes", n);
      d.nlev = nlev;
      d.p = static_cast<int>(Z.shape(1));
      d.Z = f64_data(Z, "Z", n, d.p);
      if (nlev < 1 || d.p < 1) throw py::value_error("a term needs at least one level and column");
      for (py::ssize_t i = 0; i < n; ++i)
        if (d.g[i] < 0 || d.g[i] >= nlev) throw py::value_error("level code out of range");
      keep.append(g);
      keep.append(Z);
      td.push_back(d);
    }
    py::gil_scoped_release release;
    prob = std::make_unique<Problem>(n, p, Xp, std::move(td));
  }

  void set_response(py::array y, py::object w) {
    const double* yp = f64_data(y, "y", n);
    const double* wp = nullptr;
    keep.append(y);
    if (!w.is_none()) {
      py::array wa = w.cast<py::array>();
      wp = f64_data(wa, "weights", n);
      keep.append(wa);
    }
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->set_response(yp, wp);
    }
    raise_status(s, "set_response");
  }

  void factor_checked(py::array_t<double, py::array::c_style | py::array::forcecast> theta) {
    if (theta.ndim() != 1 || theta.shape(0) != prob->ntheta())
      throw py::value_error("theta must have length " + std::to_string(prob->ntheta()));
    const double* t = theta.data();
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->factor(t);
    }
    raise_status(s, "objective");
  }

  double objective(py::array_t<double, py::array::c_style | py::array::forcecast> theta,
                   bool reml) {
    factor_checked(theta);
    return prob->profiled_objective(reml);
  }

  // Objective and its gradient in theta.
  py::tuple objective_grad(py::array_t<double, py::array::c_style | py::array::forcecast> theta,
                           bool reml) {
    factor_checked(theta);
    const double obj = prob->profiled_objective(reml);
    Vector beta, u, grad;
    Status s;
    {
      py::gil_scoped_release release;
      s = prob->solve(beta, u);
      if (s == Status::Ok) s = prob->objective_gradient(reml, beta, u, grad);
    }
    raise_status(s, "objective gradient");
    return py::make_tuple(obj, py::array_t<double>(grad.size(), grad.data()));
  }

  py::dict solution(py::array_t<double, py::array::c_style | py::array::forcecast> theta) {
    factor_checked(theta);
    Vector beta, u, b;
    Matrix V;
    std::vector<Matrix> cv;
    Status s1, s2, s3;
    {
      py::gil_scoped_release release;
      s1 = prob->solve(beta, u);
      prob->lambda_times(u, b);
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
    py::array_t<double> Va({V.rows(), V.cols()}, {sizeof(double), sizeof(double) * V.rows()},
                           V.data());
    out["unscaled_vcov"] = Va;
    py::list cvl;
    for (const auto& M : cv)
      cvl.append(py::array_t<double>({M.rows(), M.cols()},
                                     {sizeof(double), sizeof(double) * M.rows()}, M.data()));
    out["unscaled_condvar"] = cvl;
    out["ldL2"] = c.ldL2;
    out["ldRX2"] = c.ldRX2;
    out["pwrss"] = c.pwrss;
    out["ussq"] = c.ussq;
    out["wrss"] = c.wrss;
    out["ldW"] = c.ldW;
    return out;
  }

  py::dict components() const {
    const auto& c = prob->components();
    py::dict out;
    out["ldL2"] = c.ldL2;
    out["ldRX2"] = c.ldRX2;
    out["pwrss"] = c.pwrss;
    out["ldW"] = c.ldW;
    return out;
  }

  py::array_t<double> linear_predictor(py::array_t<double, py::array::c_style | py::array::forcecast> beta,
                                       py::array_t<double, py::array::c_style | py::array::forcecast> b) {
    if (beta.size() != prob->p()) throw py::value_error("beta has the wrong length");
    if (b.size() != prob->q()) throw py::value_error("b has the wrong length");
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
};

void bind_lmm(py::module_& m) {
  py::class_<PyProblem>(m, "LmmProblem",
                        "Blocked-Cholesky LMM problem. X: (n, p) float64 column-major; terms: "
                        "list of (codes int32 (n,), nlevels, Z float64 (n, p_k) column-major) in "
                        "lme4's order. Buffers are used without copies.")
      .def(py::init<py::array, py::list>(), py::arg("X"), py::arg("terms"))
      .def("set_response", &PyProblem::set_response, py::arg("y"), py::arg("weights") = py::none(),
           "Form A = [Z X y]' W [Z X y] (O(n)).")
      .def("objective", &PyProblem::objective, py::arg("theta"), py::arg("reml"),
           "Profiled deviance (ML) or REML criterion at theta, on lme4's scale.")
      .def("objective_grad", &PyProblem::objective_grad, py::arg("theta"), py::arg("reml"),
           "(objective, gradient in theta) at theta.")
      .def("solution", &PyProblem::solution, py::arg("theta"),
           "beta, u, b, unscaled vcov and conditional variances, and the components at theta.")
      .def("components", &PyProblem::components)
      .def("linear_predictor", &PyProblem::linear_predictor, py::arg("beta"), py::arg("b"),
           "X beta + Z b, shape (n,).")
      .def_property_readonly("n", [](const PyProblem& s) { return s.prob->n(); })
      .def_property_readonly("p", [](const PyProblem& s) { return s.prob->p(); })
      .def_property_readonly("q", [](const PyProblem& s) { return s.prob->q(); })
      .def_property_readonly("ntheta", [](const PyProblem& s) { return s.prob->ntheta(); })
      .def_property_readonly("rest_dense", [](const PyProblem& s) { return s.prob->rest_dense(); })
      .def("input_addresses", [](const PyProblem& s) {
        py::list out;
        for (auto a : s.keep) out.append(reinterpret_cast<std::uintptr_t>(a.cast<py::array>().data()));
        return out;
      }, "Data addresses of the buffers the core reads (to check that nothing was copied).");
}

}  // namespace mixedfit_py
