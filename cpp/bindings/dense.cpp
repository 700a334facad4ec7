// Bindings for the thread-count setting and a test hook for the dense Cholesky.
#include <atomic>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "mixedfit/dense_chol.hpp"
#include "mixedfit/parallel.hpp"

namespace mixedfit_py {

namespace {

// Lower Cholesky factor of a (copied) square float64 array. Not part of the public API: tests
// call it with small blocks to exercise the blocked, multi-threaded path on moderate sizes.
py::array_t<double, py::array::f_style> dense_cholesky(const py::array& a, int threads, int block) {
  if (!py::isinstance<py::array_t<double>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 8)
    throw py::type_error("a must be a float64 array");
  if (a.ndim() != 2 || a.shape(0) != a.shape(1))
    throw py::value_error("a must be a square two-dimensional array");
  if (threads < 1) throw py::value_error("threads must be at least 1");
  if (block < 0) throw py::value_error("block must be 0 (default) or positive");
  const py::ssize_t n = a.shape(0);
  // A Fortran-ordered copy: the factor is computed in it and returned.
  py::array_t<double, py::array::f_style> L({n, n});
  auto src = a.cast<py::array_t<double, py::array::forcecast>>().unchecked<2>();
  double* out = L.mutable_data();
  for (py::ssize_t j = 0; j < n; ++j)
    for (py::ssize_t i = 0; i < n; ++i) out[i + j * n] = i >= j ? src(i, j) : 0.0;
  bool ok;
  {
    mixedfit::clear_interrupt();
    py::gil_scoped_release release;
    Eigen::Map<Eigen::MatrixXd> A(out, n, n);
    ok = mixedfit::cholesky_lower(A, threads, block);
  }
  if (!ok) raise_status(mixedfit::Status::NotPositiveDefinite, "dense_cholesky");
  return L;
}

// Test hook for run_pair: `which` side ("helper", "caller" or "none") throws; returns how
// many of the two sides ran to the end.
int run_pair_throwing(const std::string& which) {
  if (which != "helper" && which != "caller" && which != "none")
    throw py::value_error("which must be 'helper', 'caller' or 'none'");
  std::atomic<int> finished{0};
  {
    py::gil_scoped_release release;
    mixedfit::run_pair(
        [&] {
          if (which == "helper") throw std::runtime_error("injected fault on the helper thread");
          ++finished;
        },
        [&] {
          if (which == "caller") throw std::runtime_error("injected fault on the calling thread");
          ++finished;
        });
  }
  return finished.load();
}

}  // namespace

void bind_dense(py::module_& m) {
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1)
          throw py::value_error("set_num_threads: the number of threads must be at least 1, got " +
                                std::to_string(n));
        mixedfit::set_num_threads(n);
      },
      py::arg("n"), "Set the number of threads the core may use (n >= 1).");
  m.def("get_num_threads", &mixedfit::num_threads,
        "The number of threads the core may use.");
  m.def("dense_cholesky", &dense_cholesky, py::arg("a"), py::arg("threads"), py::arg("block") = 0,
        "Test hook: lower Cholesky factor of the square SPD array a (only its lower triangle is "
        "read), computed with `threads` threads and column blocks of width `block` (0: the "
        "default choice, which uses Eigen's LLT for small a or one thread).");
  m.def("_set_cholesky_fault_step", &mixedfit::set_cholesky_fault_step, py::arg("step"),
        "Test hook: a helper thread of the blocked Cholesky throws at this step (-1: off).");
  m.def("_run_pair_throwing", &run_pair_throwing, py::arg("which"),
        "Test hook: runs two tasks on two threads, one of which may throw.");
}

}  // namespace mixedfit_py
