// The in-core BOBYQA for the bindings: NumPy in, (x, fun, nevals, NLopt code) out.
#pragma once

#include "common.hpp"
#include "mixedfit/nlopt_bobyqa.hpp"

namespace mixedfit_py {

using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Runs mixedfit::bobyqa_minimize on `f` with the GIL released (the caller holds its object's
// lock). initial_step: None or a vector like x0. Raises what the objective's status means
// (KeyboardInterrupt for Ctrl-C), and RuntimeError when NLopt itself failed.
py::tuple run_bobyqa(const mixedfit::BoxObjective& f, const DArr& x0, const DArr& lower,
                     double ftol_abs, double xtol_abs, int maxeval, const py::object& initial_step);

}  // namespace mixedfit_py
