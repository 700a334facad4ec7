// GLMM family functions (glmm.cpp): variance and unit deviances at interior and edge values
// (y = 0 and y = 1 for the binomial, y = 0 for the Poisson), the validity checks, and the
// inverse links' clamps that keep mu inside the family's domain.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "check.hpp"
#include "mixedfit/glmm.hpp"

using mixedfit::Family;
using mixedfit::FamilyKind;
using mixedfit::LinkKind;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A family by kind and link, any further members at their defaults.
Family family(FamilyKind kind, LinkKind link) {
  Family f{};
  f.fam = kind;
  f.link = link;
  return f;
}

void variances() {
  const Family binomial = family(FamilyKind::Binomial, LinkKind::Logit);
  const Family poisson = family(FamilyKind::Poisson, LinkKind::Log);
  const Family gamma = family(FamilyKind::Gamma, LinkKind::Inverse);
  const Family invgauss = family(FamilyKind::InverseGaussian, LinkKind::InverseSquare);
  const Family gaussian = family(FamilyKind::Gaussian, LinkKind::Identity);
  CHECK_NEAR(binomial.variance(0.3), 0.21, 1e-15);
  CHECK(binomial.variance(0.0) == 0.0);
  CHECK(binomial.variance(1.0) == 0.0);
  CHECK_NEAR(poisson.variance(2.5), 2.5, 0.0);
  CHECK_NEAR(gamma.variance(3.0), 9.0, 0.0);
  CHECK_NEAR(invgauss.variance(2.0), 8.0, 0.0);
  CHECK_NEAR(gaussian.variance(-7.0), 1.0, 0.0);
}

void deviance_residuals() {
  const Family binomial = family(FamilyKind::Binomial, LinkKind::Logit);
  const Family poisson = family(FamilyKind::Poisson, LinkKind::Log);
  const Family gamma = family(FamilyKind::Gamma, LinkKind::Log);
  const Family invgauss = family(FamilyKind::InverseGaussian, LinkKind::InverseSquare);
  const Family gaussian = family(FamilyKind::Gaussian, LinkKind::Identity);
  // Binomial with wt trials: 2 wt [y log(y/mu) + (1-y) log((1-y)/(1-mu))], 0 log 0 = 0.
  CHECK_NEAR(binomial.dev_resid(0.0, 0.2, 3.0), -6.0 * std::log(0.8), 1e-14);
  CHECK_NEAR(binomial.dev_resid(1.0, 0.2, 3.0), -6.0 * std::log(0.2), 1e-14);
  CHECK_NEAR(binomial.dev_resid(0.25, 0.25, 4.0), 0.0, 1e-15);
  CHECK_NEAR(binomial.dev_resid(0.5, 0.25, 2.0),
             4.0 * (0.5 * std::log(2.0) + 0.5 * std::log(0.5 / 0.75)), 1e-14);
  // Edge means from the clamped inverse link stay finite.
  const double eps = std::numeric_limits<double>::epsilon();
  CHECK(std::isfinite(binomial.dev_resid(1.0, eps, 1.0)));
  CHECK(std::isfinite(binomial.dev_resid(0.0, 1.0 - eps, 1.0)));
  // Poisson: 2 wt [y log(y/mu) - (y - mu)]; y = 0 gives 2 wt mu.
  CHECK_NEAR(poisson.dev_resid(0.0, 1.5, 2.0), 6.0, 1e-15);
  CHECK_NEAR(poisson.dev_resid(3.0, 2.0, 1.0), 2.0 * (3.0 * std::log(1.5) - 1.0), 1e-14);
  CHECK_NEAR(poisson.dev_resid(4.0, 4.0, 1.0), 0.0, 1e-15);
  // Gamma: -2 wt [log(y/mu) - (y - mu)/mu]; inverse Gaussian: wt (y - mu)^2 / (y mu^2).
  CHECK_NEAR(gamma.dev_resid(2.0, 1.0, 1.0), -2.0 * (std::log(2.0) - 1.0), 1e-14);
  CHECK_NEAR(gamma.dev_resid(1.7, 1.7, 3.0), 0.0, 1e-15);
  CHECK_NEAR(invgauss.dev_resid(2.0, 1.0, 2.0), 1.0, 1e-15);
  CHECK_NEAR(gaussian.dev_resid(1.0, 3.0, 0.5), 2.0, 0.0);
  // A zero prior weight contributes nothing.
  CHECK(binomial.dev_resid(0.0, 0.3, 0.0) == 0.0);
  CHECK(poisson.dev_resid(2.0, 1.0, 0.0) == 0.0);
}

void valid_means() {
  const Family binomial = family(FamilyKind::Binomial, LinkKind::Logit);
  const Family poisson = family(FamilyKind::Poisson, LinkKind::Log);
  const Family gaussian = family(FamilyKind::Gaussian, LinkKind::Identity);
  const Family gamma_inverse = family(FamilyKind::Gamma, LinkKind::Inverse);
  CHECK(binomial.valid_mu(0.5));
  CHECK(!binomial.valid_mu(0.0) && !binomial.valid_mu(1.0) && !binomial.valid_mu(kNaN));
  CHECK(poisson.valid_mu(1e-300) && !poisson.valid_mu(0.0) && !poisson.valid_mu(kInf));
  CHECK(gaussian.valid_mu(-1e300) && !gaussian.valid_mu(kNaN));
  CHECK(gamma_inverse.valid_eta(0.5) && !gamma_inverse.valid_eta(0.0));
  CHECK(!binomial.valid_eta(kNaN) && !binomial.valid_eta(-kInf));
}

void inverse_links_stay_in_range() {
  for (LinkKind link : {LinkKind::Logit, LinkKind::Probit, LinkKind::Cloglog, LinkKind::Cauchit}) {
    const Family f = family(FamilyKind::Binomial, link);
    for (double eta : {-1e300, -800.0, -40.0, 0.0, 40.0, 800.0, 1e300}) {
      const double mu = f.linkinv(eta);
      CHECK(f.valid_mu(mu));
      const double d = f.mu_eta(eta);
      CHECK(std::isfinite(d) && d > 0.0);
    }
  }
  const Family poisson = family(FamilyKind::Poisson, LinkKind::Log);
  CHECK(poisson.valid_mu(poisson.linkinv(-800.0)));
  CHECK_NEAR(poisson.linkinv(std::log(3.0)), 3.0, 1e-14);
  const Family logit = family(FamilyKind::Binomial, LinkKind::Logit);
  CHECK_NEAR(logit.linkinv(0.0), 0.5, 0.0);
  CHECK_NEAR(logit.mu_eta(0.0), 0.25, 0.0);
}

// linkfun inverts linkinv for every link (means inside the domain, away from the clamps);
// the probit's quantile is exact to working precision in both tails.
void links_invert() {
  const LinkKind links[] = {LinkKind::Identity, LinkKind::Log, LinkKind::Logit,
                            LinkKind::Probit, LinkKind::Cloglog, LinkKind::Cauchit,
                            LinkKind::Inverse, LinkKind::Sqrt, LinkKind::InverseSquare};
  for (LinkKind link : links) {
    const Family f = family(FamilyKind::Binomial, link);
    for (double mu : {0.01, 0.2, 0.5, 0.77, 0.99}) CHECK_NEAR(f.linkinv(f.linkfun(mu)), mu, 1e-14);
  }
  const Family probit = family(FamilyKind::Binomial, LinkKind::Probit);
  // (Upper-tail probabilities are rounded to 1 - k eps, too coarse to pin eta down; the
  // lower tail is exact to the last bits.)
  for (double eta : {-37.0, -8.0, -1.5, 0.3, 2.0}) {
    const double p = 0.5 * std::erfc(-eta / std::sqrt(2.0));
    CHECK(std::abs(probit.linkfun(p) - eta) <= 1e-14 * std::max(1.0, std::abs(eta)));
  }
  CHECK(probit.linkfun(0.0) == -kInf && probit.linkfun(1.0) == kInf);
  CHECK(std::isnan(probit.linkfun(1.5)) && std::isnan(probit.linkfun(kNaN)));
}

void starting_means() {
  CHECK_NEAR(family(FamilyKind::Binomial, LinkKind::Logit).mustart(0.25, 4.0), 1.5 / 5.0, 0.0);
  CHECK_NEAR(family(FamilyKind::Poisson, LinkKind::Log).mustart(3.0, 1.0), 3.1, 0.0);
  Family nb = family(FamilyKind::NegativeBinomial, LinkKind::Log);
  nb.nb_theta = 2.0;
  CHECK_NEAR(nb.mustart(0.0, 1.0), 1.0 / 6.0, 0.0);
  CHECK_NEAR(nb.mustart(2.0, 1.0), 2.0, 0.0);
  CHECK_NEAR(family(FamilyKind::Gamma, LinkKind::Inverse).mustart(1.7, 1.0), 1.7, 0.0);
}

}  // namespace

// Family::irls_rows (one fused pass, chunked and vectorized for binomial-logit and
// Poisson-log) against the scalar family functions row by row: mean, mu_eta, working weights
// pw mu_eta^2 / V(mu), working response eta - base + (y - mu) / mu_eta, and the deviance
// (irls_rows leaves out deviance_constant()). 300 rows cross two chunk boundaries; etas
// beyond +-30 exercise the logit's clamps.
void fused_rows_match_scalar_functions() {
  const Family cases[] = {family(FamilyKind::Binomial, LinkKind::Logit),
                          family(FamilyKind::Poisson, LinkKind::Log),
                          family(FamilyKind::Binomial, LinkKind::Probit),
                          family(FamilyKind::Gamma, LinkKind::Log)};
  const int n = 300;
  std::vector<double> eta(n), base(n), y(n), pw(n), mu(n), me(n), wt(n), z(n);
  for (const Family& f : cases) {
    for (int i = 0; i < n; ++i) {
      eta[i] = 3.0 * std::sin(0.37 * i);
      if (i == 250) eta[i] = 35.0;  // clamped (logit), in the last chunk only
      if (i == 251) eta[i] = -40.0;
      base[i] = 0.1 * std::cos(1.3 * i);
      pw[i] = 1.0 + (i % 3);
      if (f.fam == FamilyKind::Binomial) y[i] = (i % 5) / 4.0;
      else if (f.fam == FamilyKind::Poisson) y[i] = i % 7;
      else y[i] = 0.5 + (i % 4);
    }
    const double dev = f.irls_rows(eta.data(), base.data(), y.data(), pw.data(), n,
                                   {mu.data(), me.data(), wt.data(), z.data()}) +
                       f.deviance_constant(y.data(), pw.data(), n);
    double want_dev = 0.0;
    for (int i = 0; i < n; ++i) {
      const double m = f.linkinv(eta[i]);
      const double d = f.link == LinkKind::Logit && std::abs(eta[i]) <= 30.0
                           ? m * (1.0 - m) : f.mu_eta(eta[i]);
      want_dev += f.dev_resid(y[i], m, pw[i]);
      CHECK_NEAR(mu[i], m, 1e-14 * std::abs(m));
      CHECK_NEAR(me[i], d, 1e-13 * std::abs(d));
      const double w = pw[i] * d * d / f.variance(m);
      CHECK_NEAR(wt[i], w, 1e-12 * std::abs(w));
      const double zz = eta[i] - base[i] + (y[i] - m) / d;
      CHECK_NEAR(z[i], zz, 1e-12 * (1.0 + std::abs(zz)));
    }
    CHECK_NEAR(dev, want_dev, 1e-12 * std::abs(want_dev));
    // An invalid linear predictor gives NaN.
    eta[200] = kNaN;
    CHECK(std::isnan(f.irls_rows(eta.data(), base.data(), y.data(), pw.data(), n,
                                 {mu.data(), me.data(), wt.data(), z.data()})));
  }
}

int main() {
  variances();
  deviance_residuals();
  valid_means();
  inverse_links_stay_in_range();
  fused_rows_match_scalar_functions();
  links_invert();
  starting_means();
  return mixedfit_test::finish("test_family");
}
