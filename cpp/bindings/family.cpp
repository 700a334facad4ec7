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

// The length of float64 vectors that must all be as long.
template <class... A>
py::ssize_t common_length(const DArr& a, const A&... rest) {
  const bool vectors =
      a.ndim() == 1 && ((rest.ndim() == 1 && rest.shape(0) == a.shape(0)) && ...);
  if (!vectors) throw py::value_error("family maths take vectors of one length");
  return a.shape(0);
}

// f over the rows of equally long vectors: out[i] = f(a[i], rest[i]...).
template <class F, class... A>
py::array_t<double> elementwise(F f, const DArr& a, const A&... rest) {
  const py::ssize_t n = common_length(a, rest...);
  py::array_t<double> out(n);
  double* o = out.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) o[i] = f(a.data()[i], rest.data()[i]...);
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
             return elementwise([&](double v) { return f.linkfun(v); }, mu); }, py::arg("mu"))
      .def("linkinv", [](const Family& f, const DArr& eta) {
             return elementwise([&](double v) { return f.linkinv(v); }, eta); }, py::arg("eta"),
           "The mean, clamped as R's families clamp it (e.g. logit within [eps, 1 - eps]).")
      .def("mu_eta", [](const Family& f, const DArr& eta) {
             return elementwise([&](double v) { return f.mu_eta(v); }, eta); }, py::arg("eta"))
      .def("variance", [](const Family& f, const DArr& mu) {
             return elementwise([&](double v) { return f.variance(v); }, mu); }, py::arg("mu"))
      .def("mustart", [](const Family& f, const DArr& y, const DArr& w) {
             return elementwise([&](double a, double b) { return f.mustart(a, b); }, y, w); },
           py::arg("y"), py::arg("weights"))
      .def("dev_resids", [](const Family& f, const DArr& y, const DArr& mu, const DArr& wt) {
             return elementwise([&](double a, double b, double c) {
               return f.dev_resid(a, b, c); }, y, mu, wt); }, py::arg("y"), py::arg("mu"), py::arg("weights"),
           "Unit deviances times the prior weights.")
      .def("irls_rows", [](const Family& f, const DArr& eta, const DArr& base, const DArr& y,
                            const DArr& pw) {
             const py::ssize_t n = common_length(eta, base, y, pw);
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
             const py::ssize_t n = common_length(y, mu, wt);
             return f.aic(y.data(), mu.data(), wt.data(), n, dev); },
           py::arg("y"), py::arg("mu"), py::arg("weights"), py::arg("deviance"),
           "R's family()$aic: -2 log-likelihood with normalizing constants (families with a "
           "dispersion add 2 and take it from the deviance).");
}

}  // namespace mixedfit_py
