// Bindings for the family maths: the one implementation (cpp/src/glmm.cpp) that PIRLS uses,
// elementwise over NumPy vectors for the Python layer (starting values, fitted means,
// residuals, the Dask working pass).
#include "family.hpp"

#include <cmath>
#include <string>

namespace mixedfit_py {

using mixedfit::Family;
using mixedfit::FamilyKind;
using mixedfit::LinkKind;

namespace {
constexpr int kMaxFamilyCode = 5;  // 5: negative binomial
constexpr int kMaxLinkCode = 8;

using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Same-length float64 vectors a, b, c (b, c optional), by name.
py::ssize_t common_length(const DArr& a, const DArr* b, const DArr* c) {
  if (a.ndim() != 1) throw py::value_error("family maths take vectors");
  for (const DArr* x : {b, c})
    if (x && (x->ndim() != 1 || x->shape(0) != a.shape(0)))
      throw py::value_error("family maths take vectors of one length");
  return a.shape(0);
}

template <class F>
py::array_t<double> map1(const DArr& a, F f) {
  const py::ssize_t n = common_length(a, nullptr, nullptr);
  py::array_t<double> out(n);
  const double* x = a.data();
  double* o = out.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) o[i] = f(x[i]);
  return out;
}

template <class F>
py::array_t<double> map2(const DArr& a, const DArr& b, F f) {
  const py::ssize_t n = common_length(a, &b, nullptr);
  py::array_t<double> out(n);
  const double *x = a.data(), *y = b.data();
  double* o = out.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
  return out;
}
}  // namespace

Family make_family(int family, int link, double nb_theta) {
  if (family < 0 || family > kMaxFamilyCode)
    throw py::value_error("unknown family code " + std::to_string(family));
  if (link < 0 || link > kMaxLinkCode)
    throw py::value_error("unknown link code " + std::to_string(link));
  if (family == static_cast<int>(FamilyKind::NegativeBinomial) &&
      !(nb_theta > 0 && std::isfinite(nb_theta)))
    throw py::value_error("negative binomial theta must be positive and finite");
  return Family{static_cast<FamilyKind>(family), static_cast<LinkKind>(link), nb_theta};
}

void bind_family(py::module_& m) {
  py::class_<Family>(m, "Family",
                     "A GLM family and link (codes as GlmmProblem takes them): the core's "
                     "family maths, elementwise over float64 vectors.")
      .def(py::init(&make_family), py::arg("family"), py::arg("link"), py::arg("nb_theta") = 0.0)
      .def("linkfun", [](const Family& f, const DArr& mu) {
             return map1(mu, [&](double v) { return f.linkfun(v); }); }, py::arg("mu"))
      .def("linkinv", [](const Family& f, const DArr& eta) {
             return map1(eta, [&](double v) { return f.linkinv(v); }); }, py::arg("eta"),
           "The mean, clamped as R's families clamp it (e.g. logit within [eps, 1 - eps]).")
      .def("mu_eta", [](const Family& f, const DArr& eta) {
             return map1(eta, [&](double v) { return f.mu_eta(v); }); }, py::arg("eta"))
      .def("variance", [](const Family& f, const DArr& mu) {
             return map1(mu, [&](double v) { return f.variance(v); }); }, py::arg("mu"))
      .def("mustart", [](const Family& f, const DArr& y, const DArr& w) {
             return map2(y, w, [&](double a, double b) { return f.mustart(a, b); }); },
           py::arg("y"), py::arg("weights"))
      .def("dev_resids", [](const Family& f, const DArr& y, const DArr& mu, const DArr& wt) {
             const py::ssize_t n = common_length(y, &mu, &wt);
             py::array_t<double> out(n);
             const double *a = y.data(), *b = mu.data(), *c = wt.data();
             double* o = out.mutable_data();
             for (py::ssize_t i = 0; i < n; ++i) o[i] = f.dev_resid(a[i], b[i], c[i]);
             return out; }, py::arg("y"), py::arg("mu"), py::arg("weights"),
           "Unit deviances times the prior weights.")
      .def("irls_rows", [](const Family& f, const DArr& eta, const DArr& base, const DArr& y,
                            const DArr& pw) {
             const py::ssize_t n = common_length(eta, &base, &y);
             common_length(eta, &pw, nullptr);
             py::array_t<double> mu(n), mu_eta(n), weights(n), z(n);
             const Family::RowsOut out{mu.mutable_data(), mu_eta.mutable_data(),
                                       weights.mutable_data(), z.mutable_data()};
             double dev;
             {
               py::gil_scoped_release release;
               dev = f.irls_rows(eta.data(), base.data(), y.data(), pw.data(), n, out);
               dev += f.deviance_constant(y.data(), pw.data(), n);
             }
             return py::make_tuple(mu, mu_eta, weights, z, dev); },
           py::arg("eta"), py::arg("base"), py::arg("y"), py::arg("weights"),
           "One PIRLS step's rows, as the core's PIRLS forms them: (mu, d mu / d eta, working "
           "weights pw mu_eta^2 / V(mu), working response eta - base + (y - mu) / mu_eta, "
           "deviance); the deviance is NaN where a mean or eta is invalid (the arrays are "
           "then partial).")
      .def("aic", [](const Family& f, const DArr& y, const DArr& mu, const DArr& wt, double dev) {
             const py::ssize_t n = common_length(y, &mu, &wt);
             return f.aic(y.data(), mu.data(), wt.data(), n, dev); },
           py::arg("y"), py::arg("mu"), py::arg("weights"), py::arg("deviance"),
           "R's family()$aic: -2 log-likelihood with normalizing constants (families with a "
           "dispersion add 2 and take it from the deviance).");
}

}  // namespace mixedfit_py
