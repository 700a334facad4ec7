// The extension module mixedfit._core: one file per topic, registered here.
#include "common.hpp"

namespace mixedfit_py {
py::handle NumericalError;
void bind_lmm(py::module_& m);
void bind_glmm(py::module_& m);
void bind_dense(py::module_& m);
void bind_refit(py::module_& m);
}  // namespace mixedfit_py

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "mixedfit's numerical core (C++/Eigen): blocked Cholesky, profiled deviance, PIRLS";
  // Kept for the life of the process (never decref'd at interpreter shutdown).
  mixedfit_py::NumericalError =
      py::exception<std::runtime_error>(m, "NumericalError", PyExc_ArithmeticError).release();
  mixedfit_py::bind_lmm(m);
  mixedfit_py::bind_glmm(m);
  mixedfit_py::bind_dense(m);
  mixedfit_py::bind_refit(m);
}
