// Bindings for the GLMM (PIRLS, Laplace, AGQ).
#include "common.hpp"

namespace mixedfit_py {
void bind_glmm(py::module_& m) { (void)m; }
}  // namespace mixedfit_py
