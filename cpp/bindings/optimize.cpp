// Loading NLopt's C API into the core, and the shared driver of the in-core BOBYQA.
#include "optimize.hpp"

#include <string>
#include <vector>

namespace mixedfit_py {

namespace {
std::vector<double> to_vector(const DArr& a, const char* name, py::ssize_t n) {
  if (a.ndim() != 1 || (n >= 0 && a.shape(0) != n))
    throw py::value_error(std::string(name) + " must be a vector of length " + std::to_string(n));
  return std::vector<double>(a.data(), a.data() + a.shape(0));
}
}  // namespace

py::tuple run_bobyqa(const mixedfit::BoxObjective& f, const DArr& x0, const DArr& lower,
                     double ftol_abs, double xtol_abs, int maxeval, const py::object& initial_step) {
  if (!mixedfit::nlopt_loaded())
    throw py::value_error("NLopt's C API is not loaded: call load_nlopt() first");
  if (!(ftol_abs >= 0) || !(xtol_abs >= 0) || !std::isfinite(ftol_abs) || !std::isfinite(xtol_abs))
    throw py::value_error("ftol_abs and xtol_abs must be finite and >= 0");
  if (maxeval < 1) throw py::value_error("maxeval must be at least 1");
  const std::vector<double> start = to_vector(x0, "x0", -1);
  const auto n = static_cast<py::ssize_t>(start.size());
  mixedfit::BobyqaSettings settings{ftol_abs, xtol_abs, maxeval, {}};
  if (!initial_step.is_none())
    settings.initial_step = to_vector(DArr::ensure(initial_step), "initial_step", n);
  const std::vector<double> lb = to_vector(lower, "lower", n);
  for (double v : start)
    if (!std::isfinite(v)) throw py::value_error("x0 contains a non-finite value");
  mixedfit::BobyqaResult res;
  mixedfit::Status s;
  {
    py::gil_scoped_release release;
    s = mixedfit::bobyqa_minimize(f, start, lb, settings, res);
  }
  if (s == mixedfit::Status::NotEvaluated)
    throw std::runtime_error("NLopt failed (nlopt_result " + std::to_string(res.nlopt_code) + ")");
  raise_status(s, "bobyqa");
  return py::make_tuple(py::array_t<double>(n, res.x.data()), res.fun, res.nevals, res.nlopt_code);
}

void bind_optimize(py::module_& m) {
  m.def("load_nlopt", [](const std::string& path, int bobyqa_algorithm) {
    std::string error;
    if (!mixedfit::load_nlopt(path, bobyqa_algorithm, error)) throw py::import_error(error);
  }, py::arg("library_path"), py::arg("bobyqa_algorithm"),
        "Resolve NLopt's C API from the shared library at library_path (the `nlopt` package's "
        "extension), with NLopt's enum value of LN_BOBYQA, so that core objects can run BOBYQA "
        "without calling back into Python. Raises ImportError saying why it cannot.");
  m.def("nlopt_loaded", &mixedfit::nlopt_loaded, "load_nlopt() has succeeded in this process.");
}

}  // namespace mixedfit_py
