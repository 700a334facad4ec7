// Shared helpers for the bindings: strict array checks and status -> exception.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "mixedfit/status.hpp"

namespace mixedfit_py {

namespace py = pybind11;

// Raised for numerical failures reported by the core (registered in module.cpp).
extern py::handle NumericalError;

inline void raise_status(mixedfit::Status s, const char* where) {
  if (s == mixedfit::Status::Ok) return;
  std::string msg = std::string(where) + ": " + mixedfit::status_message(s);
  if (s == mixedfit::Status::BadDimension || s == mixedfit::Status::NonFiniteInput)
    throw py::value_error(msg);
  PyErr_SetString(NumericalError.ptr(), msg.c_str());
  throw py::error_already_set();
}

// The Python layer coerces dtype and layout once; the core takes the buffer as it is.
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

}  // namespace mixedfit_py
