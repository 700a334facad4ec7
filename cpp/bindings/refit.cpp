// Bindings for the batch LMM refit (the parametric bootstrap's inner loop). The GIL is
// released while the core's threads work.
#include <pybind11/stl.h>

#include <vector>

#include "common.hpp"
#include "mixedfit/refit.hpp"

namespace mixedfit_py {

using mixedfit::Index;
using mixedfit::Matrix;
using mixedfit::TermData;
using mixedfit::Vector;

namespace {

using F64 = py::array_t<double, py::array::f_style | py::array::forcecast>;

py::array_t<double> to_array(const Matrix& M) {
  return py::array_t<double>({M.rows(), M.cols()}, {sizeof(double), sizeof(double) * M.rows()},
                             M.data());
}

py::dict refit_lmm_batch(py::array X, py::list terms, py::array Y, py::object w, F64 theta0,
                         F64 lower, F64 hessian0, bool reml, int threads) {
  if (X.ndim() != 2 || Y.ndim() != 2) throw py::value_error("X and Y must be two-dimensional");
  const py::ssize_t n = X.shape(0), p = X.shape(1), nsim = Y.shape(1);
  const double* Xp = f64_data(X, "X", n, p);
  const double* Yp = f64_data(Y, "Y", n, nsim);
  const double* wp = nullptr;
  if (!w.is_none()) wp = f64_data(w.cast<py::array>(), "weights", n);
  std::vector<TermData> td;
  for (auto item : terms) {
    auto t = item.cast<py::tuple>();
    py::array g = t[0].cast<py::array>();
    py::array Z = t[2].cast<py::array>();
    TermData d;
    d.g = i32_data(g, "codes", n);
    d.nlev = t[1].cast<int>();
    d.p = static_cast<int>(Z.shape(1));
    d.Z = f64_data(Z, "Z", n, d.p);
    td.push_back(d);
  }
  const Index k = theta0.size();
  if (lower.size() != k || hessian0.ndim() != 2 || hessian0.shape(0) != k || hessian0.shape(1) != k)
    throw py::value_error("theta0, lower and hessian0 must agree in size");
  Vector th = Eigen::Map<const Vector>(theta0.data(), k);
  Vector lo = Eigen::Map<const Vector>(lower.data(), k);
  Matrix H = Eigen::Map<const Matrix>(hessian0.data(), k, k);
  mixedfit::RefitSettings settings;
  settings.reml = reml;
  settings.threads = std::max(1, threads);
  mixedfit::RefitBatch out;
  {
    py::gil_scoped_release release;
    mixedfit::refit_lmm_batch(n, p, Xp, td, Yp, nsim, wp, th, lo, H, settings, out);
  }
  py::dict res;
  res["theta"] = to_array(out.theta);
  res["beta"] = to_array(out.beta);
  res["pwrss"] = py::array_t<double>(out.pwrss.size(), out.pwrss.data());
  res["status"] = py::array_t<int>(out.status.size(), out.status.data());
  res["evaluations"] = py::array_t<int>(out.evaluations.size(), out.evaluations.data());
  return res;
}

}  // namespace

void bind_refit(py::module_& m) {
  m.def("refit_lmm_batch", &refit_lmm_batch, py::arg("X"), py::arg("terms"), py::arg("Y"),
        py::arg("weights"), py::arg("theta0"), py::arg("lower"), py::arg("hessian0"),
        py::arg("reml"), py::arg("threads"),
        "Fit each column of Y (n, nsim; offset removed) with the LMM design (X, terms) by "
        "quasi-Newton steps from theta0 with Hessian hessian0, on `threads` threads. Returns "
        "theta (k, nsim), beta (p, nsim), pwrss, status (0 converged, 1 needs the general "
        "optimizer, 2 failed) and evaluations per replicate.");
}

}  // namespace mixedfit_py
