// Shared helpers for the bindings: strict array checks and status -> exception.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "mixedfit/interrupt.hpp"
#include "mixedfit/problem.hpp"
#include "mixedfit/status.hpp"

namespace mixedfit_py {

namespace py = pybind11;

// Raised for numerical failures reported by the core (registered in module.cpp).
extern py::handle NumericalError;

// Called with the GIL held after every core computation. A Python error already pending (the
// KeyboardInterrupt that the interrupt check raised while the core ran) wins over the status.
inline void raise_status(mixedfit::Status s, const char* where) {
  if (PyErr_Occurred()) throw py::error_already_set();
  if (s == mixedfit::Status::Ok) return;
  if (s == mixedfit::Status::Interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  std::string msg = std::string(where) + ": " + mixedfit::status_message(s);
  if (s == mixedfit::Status::BadDimension || s == mixedfit::Status::NonFiniteInput)
    throw py::value_error(msg);
  PyErr_SetString(NumericalError.ptr(), msg.c_str());
  throw py::error_already_set();
}

// The Python layer coerces dtype and layout once; the core takes the buffer as it is.
// A Problem refused at construction (its factorization would not fit in memory) raises
// NumericalError with the core's message naming the sizes.
inline void raise_build_status(const mixedfit::Problem& prob) {
  if (prob.build_status() == mixedfit::Status::Ok) return;
  PyErr_SetString(NumericalError.ptr(), prob.build_message().c_str());
  throw py::error_already_set();
}

// Anything else is a programming error on the Python side, reported loudly instead of copied.
inline const double* f64_data(const py::array& a, const char* name, py::ssize_t rows,
                              py::ssize_t cols = -1) {
  if (!py::isinstance<py::array_t<double>>(a) || a.dtype().kind() != 'f' || a.itemsize() != 8)
    throw py::type_error(std::string(name) + " must be a float64 array");
  if (cols < 0) {
    if (a.ndim() != 1 || a.shape(0) != rows)
      throw py::value_error(std::string(name) + " must have shape (" + std::to_string(rows) + ",)");
    if (a.shape(0) > 1 && a.strides(0) != 8)
      throw py::value_error(std::string(name) + " must be contiguous");
  } else {
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
      throw py::value_error(std::string(name) + " must have shape (" + std::to_string(rows) +
                            ", " + std::to_string(cols) + ")");
    // Column-major and contiguous, whatever the number of columns (a one-column view of a
    // wider C-ordered array has a row stride != 8 and must be refused, not misread).
    const bool ok = rows <= 1 || cols == 0 ||
                    (a.strides(0) == 8 && (cols == 1 || a.strides(1) == 8 * rows));
    if (!ok)
      throw py::value_error(std::string(name) + " must be Fortran (column-major) contiguous");
  }
  return static_cast<const double*>(a.data());
}

inline const std::int32_t* i32_data(const py::array& a, const char* name, py::ssize_t rows) {
  if (a.dtype().kind() != 'i' || a.itemsize() != 4)
    throw py::type_error(std::string(name) + " must be an int32 array");
  if (a.ndim() != 1 || a.shape(0) != rows || (rows > 1 && a.strides(0) != 4))
    throw py::value_error(std::string(name) + " must be a contiguous vector of length " +
                          std::to_string(rows));
  return static_cast<const std::int32_t*>(a.data());
}

// Every method of a core object holds its object's mutex for its whole run (the GIL is
// released while the core computes, so without it two Python threads could interleave their
// updates of the object's workspace). The mutex is taken with the GIL released, so a thread
// waiting for it never blocks the thread that holds it and needs the GIL back.
class CoreLock {
 public:
  explicit CoreLock(std::mutex& m) : lock_(m, std::defer_lock) {
    if (!lock_.try_lock()) {
      py::gil_scoped_release release;
      lock_.lock();
    }
    mixedfit::clear_interrupt();
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

// A core object that Python created with cls.__new__(cls) but never initialized (pybind11
// then hands the methods raw memory): each object carries this mark from its constructor to
// its destructor, and every method checks it before touching anything else.
class AliveMark {
 public:
  AliveMark() : mark_(kAlive) {}
  ~AliveMark() { reinterpret_cast<volatile std::uint64_t&>(mark_) = 0; }
  AliveMark(const AliveMark&) = delete;
  AliveMark& operator=(const AliveMark&) = delete;
  void check() const {
    if (reinterpret_cast<const volatile std::uint64_t&>(mark_) != kAlive)
      throw py::type_error("this core object was never initialized (create it with its "
                           "constructor or by unpickling)");
  }

 private:
  static constexpr std::uint64_t kAlive = 0x6d69786564666974ULL;
  std::uint64_t mark_;
};

// Refuses NaN and infinities in a data array (count values from p) by name. The vectorized
// test settles the common case; the scalar scan only finds the position to report.
inline void require_finite(const double* p, py::ssize_t count, const char* name) {
  if (mixedfit::all_finite(Eigen::Map<const Eigen::ArrayXd>(p, count))) return;
  for (py::ssize_t i = 0; i < count; ++i)
    if (!std::isfinite(p[i]))
      throw py::value_error(std::string(name) + " contains a non-finite value (NaN or Inf) at "
                            "position " + std::to_string(i));
}

// Level codes of a term: int32, in [0, nlev). Returns the validated buffer.
inline const std::int32_t* level_codes(const py::array& g, int nlev, py::ssize_t n) {
  const std::int32_t* codes = i32_data(g, "codes", n);
  const Eigen::Map<const Eigen::ArrayXi> c(codes, n);
  if (n == 0 || (c.minCoeff() >= 0 && c.maxCoeff() < nlev)) return codes;
  for (py::ssize_t i = 0; i < n; ++i)
    if (codes[i] < 0 || codes[i] >= nlev)
      throw py::value_error("level code out of range: codes[" + std::to_string(i) + "] = " +
                            std::to_string(codes[i]) + ", the term has " +
                            std::to_string(nlev) + " levels");
  return codes;
}

// A fingerprint of level codes. The core reads the caller's code buffers without copying them
// and sizes its structures by them at construction; methods that read the codes again check
// the fingerprint first, so codes changed in place afterwards raise instead of indexing out of
// bounds.
inline std::uint64_t codes_fingerprint(const std::int32_t* codes, py::ssize_t n) {
  // FNV-1a over four interleaved lanes, combined at the end: one lane's multiply chain
  // would bound the speed at its latency.
  std::uint64_t h[4] = {1469598103934665603ULL, 1469598103934665603ULL ^ 1,
                        1469598103934665603ULL ^ 2, 1469598103934665603ULL ^ 3};
  py::ssize_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; ++l) {
      h[l] ^= static_cast<std::uint32_t>(codes[i + l]);
      h[l] *= 1099511628211ULL;
    }
  for (; i < n; ++i) {
    h[0] ^= static_cast<std::uint32_t>(codes[i]);
    h[0] *= 1099511628211ULL;
  }
  std::uint64_t out = static_cast<std::uint64_t>(n);
  for (std::uint64_t lane : h) out = (out ^ lane) * 1099511628211ULL;
  return out;
}

// The random-effects terms as the core takes them, checked: each (codes int32 (n,), nlevels,
// Z float64 (n, p_k) column-major, finite), 1 <= nlevels <= n, p_k >= 1.
struct CheckedTerms {
  std::vector<mixedfit::TermData> data;
  std::vector<std::uint64_t> fingerprints;
  py::list arrays;  // codes and Z of every term, in order (kept alive by the owner)

  CheckedTerms(const py::list& terms, py::ssize_t n) {
    if (terms.size() == 0) throw py::value_error("at least one random-effects term is required");
    for (auto item : terms) {
      if (!py::isinstance<py::tuple>(item) || py::len(item) != 3)
        throw py::value_error("each term must be a tuple (codes, nlevels, Z)");
      auto t = item.cast<py::tuple>();
      py::array g = t[0].cast<py::array>();
      py::array Z = t[2].cast<py::array>();
      if (!py::isinstance<py::int_>(t[1]))
        throw py::type_error("a term's number of levels must be an integer");
      const long nlev = t[1].cast<long>();
      if (nlev < 1 || nlev > n)
        throw py::value_error("a term's number of levels must be between 1 and the number of "
                              "observations (" + std::to_string(n) + "), got " +
                              std::to_string(nlev));
      if (Z.ndim() != 2 || Z.shape(1) < 1)
        throw py::value_error("a term's Z must be two-dimensional with at least one column");
      mixedfit::TermData d;
      d.nlev = static_cast<int>(nlev);
      d.g = level_codes(g, d.nlev, n);
      d.p = static_cast<int>(Z.shape(1));
      d.Z = f64_data(Z, "Z", n, d.p);
      require_finite(d.Z, n * d.p, "Z");
      arrays.append(g);
      arrays.append(Z);
      data.push_back(d);
      fingerprints.push_back(codes_fingerprint(d.g, n));
    }
  }

  // Raises if any term's codes were changed in place since construction.
  void check_unchanged(py::ssize_t n) const {
    for (size_t k = 0; k < data.size(); ++k)
      if (codes_fingerprint(data[k].g, n) != fingerprints[k])
        throw py::value_error("the level codes of random-effects term " + std::to_string(k) +
                              " were changed after the problem was built; build a new one");
  }
};

}  // namespace mixedfit_py
