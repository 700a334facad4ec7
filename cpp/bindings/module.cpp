// The extension module mixedfit._core: one file per topic, registered here.
#include "common.hpp"

#include <pythread.h>

namespace mixedfit_py {
py::handle NumericalError;

namespace {
unsigned long g_main_thread = 0;

// The core's interrupt check: on Python's main thread (where signal handlers run), take the
// GIL and let Python run any pending handler; a handler that raises (KeyboardInterrupt) stops
// the computation and its exception is what the binding raises. Other threads never stop.
bool python_signal_pending() {
  if (PyThread_get_thread_ident() != g_main_thread) return false;
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}
}  // namespace

void bind_lmm(py::module_& m);
void bind_glmm(py::module_& m);
void bind_dense(py::module_& m);
void bind_refit(py::module_& m);
void bind_optimize(py::module_& m);
void bind_fixed_effects(py::module_& m);
void bind_family(py::module_& m);
}  // namespace mixedfit_py

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "mixedfit's numerical core (C++/Eigen): blocked Cholesky, profiled deviance, PIRLS";
  // Kept for the life of the process (never decref'd at interpreter shutdown).
  mixedfit_py::NumericalError =
      py::exception<std::runtime_error>(m, "NumericalError", PyExc_ArithmeticError).release();
  mixedfit_py::g_main_thread =
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  mixedfit::set_interrupt_check(&mixedfit_py::python_signal_pending);
  mixedfit_py::bind_lmm(m);
  mixedfit_py::bind_glmm(m);
  mixedfit_py::bind_dense(m);
  mixedfit_py::bind_refit(m);
  mixedfit_py::bind_optimize(m);
  mixedfit_py::bind_fixed_effects(m);
  mixedfit_py::bind_family(m);
}
