// Bindings for the fixed effects' preparation (fixed_effects.hpp): one call each, for the
// few-column matrices where NumPy's per-call overhead outweighs the arithmetic.
#include "common.hpp"
#include "mixedfit/fixed_effects.hpp"

namespace mixedfit_py {

namespace {

py::array_t<double> fortran_copy(const mixedfit::FixedMatrix& M) {
  return py::array_t<double>({M.rows(), M.cols()}, {sizeof(double), sizeof(double) * M.rows()},
                             M.data());
}

py::array_t<double> vector_copy(const mixedfit::FixedVector& v) {
  return py::array_t<double>(v.size(), v.data());
}

const double* optional_weights(const py::object& w, py::ssize_t n) {
  return w.is_none() ? nullptr : f64_data(w.cast<py::array>(), "weights", n);
}

// A new column-major (rows x cols) array for the core to fill.
py::array_t<double> fortran_array(py::ssize_t rows, py::ssize_t cols) {
  return py::array_t<double>({rows, cols}, {static_cast<py::ssize_t>(sizeof(double)),
                                            static_cast<py::ssize_t>(sizeof(double)) * rows});
}

// (kept: bool (p,), Xs: (n, p) column-major, T: (p, p), T^{-1}: (p, p)).
py::tuple fixed_qr(const py::array& X, const py::object& w, double rel_tol) {
  if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
  const py::ssize_t n = X.shape(0), p = X.shape(1);
  if (p > n) throw py::value_error("X must have no more columns than rows");
  const double* Xp = f64_data(X, "X", n, p);
  const double* wp = optional_weights(w, n);
  py::array_t<double> Xs = fortran_array(n, p);
  double* out = Xs.mutable_data();
  mixedfit::FixedScaling s;
  {
    py::gil_scoped_release release;
    s = mixedfit::scale_fixed_effects(Xp, n, p, wp, rel_tol, out);
  }
  py::array_t<bool> kept(p);
  for (py::ssize_t j = 0; j < p; ++j) kept.mutable_at(j) = s.kept[j];
  // T^{-1} by back substitution (p x p): fits map coefficients and their covariance back
  // with it. Infinite entries where a column is aliased (T's diagonal entry 0).
  const mixedfit::FixedMatrix T_inv = s.T.triangularView<Eigen::Upper>().solve(
      mixedfit::FixedMatrix::Identity(p, p));
  return py::make_tuple(kept, Xs, fortran_copy(s.T), fortran_copy(T_inv));
}

// (b0: (p,), s, ys: (n,), max |y|).
py::tuple response_shift(const py::array& Xs, const py::array& T, const py::array& y,
                         const py::object& w) {
  if (Xs.ndim() != 2 || T.ndim() != 2) throw py::value_error("Xs and T must be matrices");
  const py::ssize_t n = Xs.shape(0), p = Xs.shape(1);
  const double* Xp = f64_data(Xs, "Xs", n, p);
  const double* Tp = f64_data(T, "T", p, p);
  const double* yp = f64_data(y, "y", n);
  const double* wp = optional_weights(w, n);
  py::array_t<double> ys(n);
  double* out = ys.mutable_data();
  mixedfit::ResponseShift r;
  {
    py::gil_scoped_release release;
    r = mixedfit::shift_response(Xp, Tp, n, p, yp, wp, out);
  }
  return py::make_tuple(vector_copy(r.b0), r.scale, ys, r.max_abs_y);
}

bool scales_differ(const py::array& X, double tol) {
  if (X.ndim() != 2) throw py::value_error("X must be two-dimensional");
  const py::ssize_t n = X.shape(0), p = X.shape(1);
  return mixedfit::predictor_scales_differ(f64_data(X, "X", n, p), n, p, tol);
}

}  // namespace

void bind_fixed_effects(py::module_& m) {
  m.def("fixed_qr", &fixed_qr, py::arg("X"), py::arg("weights"), py::arg("rel_tol"),
        "(kept, Xs, T, T^-1): X = Xs T with Xs' W Xs = n I (Gram-Schmidt in the W inner product); "
        "kept[j] when R's j-th diagonal entry exceeds rel_tol times column j's norm. "
        "X: float64 column-major, no more columns than rows.");
  m.def("response_shift", &response_shift, py::arg("Xs"), py::arg("T"), py::arg("y"),
        py::arg("weights"),
        "(b0, s, ys, max |y|): y = Xs T b0 + s ys, b0 the weighted least-squares fit, s the "
        "root-mean-square of its weighted residuals.");
  m.def("predictor_scales_differ", &scales_differ, py::arg("X"), py::arg("tol"),
        "lme4's check.scaleX: some non-0/1 column's standard deviation is beyond a factor tol "
        "from 1 or from another's.");
}

}  // namespace mixedfit_py
