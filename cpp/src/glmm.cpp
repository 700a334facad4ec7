#include "mixedfit/glmm.hpp"

#include <cmath>
#include <limits>

#include "mixedfit/interrupt.hpp"

namespace mixedfit {

namespace {
constexpr double kEps = std::numeric_limits<double>::epsilon();
constexpr double kPi = 3.14159265358979323846;
constexpr double kLogitThresh = 30.0;
// -qnorm(DBL_EPSILON) and -qcauchy(DBL_EPSILON), R's clamps for probit and cauchit.
constexpr double kProbitThresh = 8.125890664701906;
constexpr double kCauchitThresh = 1.4334579040836484e15;

inline double pnorm(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
inline double dnorm(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi); }
inline double ylogy_ratio(double y, double mu) { return y > 0 ? y * std::log(y / mu) : 0.0; }

// The standard normal quantile: Acklam's rational approximation (relative error < 1.2e-9)
// refined by two Halley steps on pnorm, which take it to working precision.
double qnorm(double p) {
  if (!(p >= 0.0 && p <= 1.0)) return std::nan("");
  if (p == 0.0) return -std::numeric_limits<double>::infinity();
  if (p == 1.0) return std::numeric_limits<double>::infinity();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  const double p_low = 0.02425;
  double x;
  if (p < p_low || p > 1.0 - p_low) {
    const double q = std::sqrt(-2.0 * std::log(p < p_low ? p : 1.0 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    if (p > 1.0 - p_low) x = -x;
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  }
  for (int step = 0; step < 2; ++step) {
    // e = pnorm(x) - p; above 1/2 from the upper tail, so that p near 1 loses no digits
    // (1 - p is exact there).
    const double e = p > 0.5 ? (1.0 - p) - 0.5 * std::erfc(x / std::sqrt(2.0))
                             : 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
    const double u = e * std::sqrt(2.0 * kPi) * std::exp(0.5 * x * x);
    if (!std::isfinite(u)) break;  // deep in the subnormal tail: keep the approximation
    x -= u / (1.0 + 0.5 * x * u);
  }
  return x;
}
}  // namespace

double Family::linkfun(double mu) const {
  switch (link) {
    case LinkKind::Identity: return mu;
    case LinkKind::Log: return std::log(mu);
    case LinkKind::Logit: return std::log(mu / (1.0 - mu));
    case LinkKind::Probit: return qnorm(mu);
    case LinkKind::Cloglog: return std::log(-std::log1p(-mu));
    case LinkKind::Cauchit: return std::tan(kPi * (mu - 0.5));
    case LinkKind::Inverse: return 1.0 / mu;
    case LinkKind::Sqrt: return std::sqrt(mu);
    case LinkKind::InverseSquare: return 1.0 / (mu * mu);
  }
  return std::nan("");
}

double Family::mustart(double y, double w) const {
  switch (fam) {
    case FamilyKind::Binomial: return (w * y + 0.5) / (w + 1.0);
    case FamilyKind::Poisson: return y + 0.1;
    case FamilyKind::NegativeBinomial: return y + (y == 0.0 ? 1.0 / 6.0 : 0.0);  // MASS's
    default: return y;
  }
}

double Family::linkinv(double eta) const {
  switch (link) {
    case LinkKind::Identity: return eta;
    case LinkKind::Log: return std::max(std::exp(eta), kEps);
    case LinkKind::Logit: {
      const double t = eta < -kLogitThresh ? kEps : (eta > kLogitThresh ? 1.0 / kEps : std::exp(eta));
      return t / (1.0 + t);
    }
    case LinkKind::Probit: {
      const double e = std::min(std::max(eta, -kProbitThresh), kProbitThresh);
      return pnorm(e);
    }
    case LinkKind::Cloglog:
      return std::max(std::min(-std::expm1(-std::exp(eta)), 1.0 - kEps), kEps);
    case LinkKind::Cauchit: {
      const double e = std::min(std::max(eta, -kCauchitThresh), kCauchitThresh);
      return 0.5 + std::atan(e) / kPi;
    }
    case LinkKind::Inverse: return 1.0 / eta;
    case LinkKind::Sqrt: return eta * eta;
    case LinkKind::InverseSquare: return 1.0 / std::sqrt(eta);
  }
  return std::nan("");
}

double Family::mu_eta(double eta) const {
  switch (link) {
    case LinkKind::Identity: return 1.0;
    case LinkKind::Log: return std::max(std::exp(eta), kEps);
    case LinkKind::Logit: {
      if (eta > kLogitThresh || eta < -kLogitThresh) return kEps;
      const double t = std::exp(eta);
      return t / ((1.0 + t) * (1.0 + t));
    }
    case LinkKind::Probit: return std::max(dnorm(eta), kEps);
    case LinkKind::Cloglog: {
      const double e = std::min(eta, 700.0);
      return std::max(std::exp(e) * std::exp(-std::exp(e)), kEps);
    }
    case LinkKind::Cauchit: return std::max(1.0 / (kPi * (1.0 + eta * eta)), kEps);
    case LinkKind::Inverse: return -1.0 / (eta * eta);
    case LinkKind::Sqrt: return 2.0 * eta;
    case LinkKind::InverseSquare: return -1.0 / (2.0 * std::pow(eta, 1.5));
  }
  return std::nan("");
}

double Family::variance(double mu) const {
  switch (fam) {
    case FamilyKind::Binomial: return mu * (1.0 - mu);
    case FamilyKind::Poisson: return mu;
    case FamilyKind::Gamma: return mu * mu;
    case FamilyKind::InverseGaussian: return mu * mu * mu;
    case FamilyKind::Gaussian: return 1.0;
    case FamilyKind::NegativeBinomial: return mu + mu * mu / nb_theta;
  }
  return std::nan("");
}

double Family::dev_resid(double y, double mu, double wt) const {
  switch (fam) {
    case FamilyKind::Binomial:
      return 2.0 * wt * (ylogy_ratio(y, mu) + ylogy_ratio(1.0 - y, 1.0 - mu));
    case FamilyKind::Poisson: return 2.0 * wt * (ylogy_ratio(y, mu) - (y - mu));
    case FamilyKind::Gamma: return -2.0 * wt * (std::log(y / mu) - (y - mu) / mu);
    case FamilyKind::InverseGaussian: return wt * (y - mu) * (y - mu) / (y * mu * mu);
    case FamilyKind::Gaussian: return wt * (y - mu) * (y - mu);
    case FamilyKind::NegativeBinomial:  // MASS's negative.binomial(theta)
      return 2.0 * wt * (ylogy_ratio(y, mu) - (y + nb_theta) * std::log((y + nb_theta) / (mu + nb_theta)));
  }
  return std::nan("");
}

bool Family::valid_mu(double mu) const {
  if (!std::isfinite(mu)) return false;
  switch (fam) {
    case FamilyKind::Binomial: return mu > 0.0 && mu < 1.0;
    case FamilyKind::Poisson:
    case FamilyKind::NegativeBinomial:
    case FamilyKind::Gamma:
    case FamilyKind::InverseGaussian: return mu > 0.0;
    case FamilyKind::Gaussian: return true;
  }
  return false;
}

bool Family::valid_eta(double eta) const {
  if (!std::isfinite(eta)) return false;
  switch (link) {
    case LinkKind::Inverse: return eta != 0.0;
    case LinkKind::InverseSquare:
    case LinkKind::Sqrt: return eta > 0.0;
    default: return true;
  }
}

double Family::aic(const double* y, const double* mu, const double* wt, Index n, double dev) const {
  double s = 0.0;
  switch (fam) {
    case FamilyKind::Binomial:
      for (Index i = 0; i < n; ++i) {
        const double m = std::round(wt[i]);
        if (!(m > 0)) continue;
        const double k = std::round(m * y[i]);
        double ll = std::lgamma(m + 1) - std::lgamma(k + 1) - std::lgamma(m - k + 1);
        if (k > 0) ll += k * std::log(mu[i]);
        if (m - k > 0) ll += (m - k) * std::log1p(-mu[i]);
        s += (wt[i] / m) * ll;
      }
      return -2.0 * s;
    case FamilyKind::Poisson:
      for (Index i = 0; i < n; ++i) {
        const double ll = (y[i] > 0 ? y[i] * std::log(mu[i]) : 0.0) - mu[i] - std::lgamma(y[i] + 1);
        s += ll * wt[i];
      }
      return -2.0 * s;
    case FamilyKind::Gamma: {
      double sw = 0.0;
      for (Index i = 0; i < n; ++i) sw += wt[i];
      const double disp = dev / sw;
      const double shape = 1.0 / disp;
      for (Index i = 0; i < n; ++i) {
        const double scale = mu[i] * disp;
        const double ll = -std::lgamma(shape) - shape * std::log(scale) +
                          (shape - 1.0) * std::log(y[i]) - y[i] / scale;
        s += ll * wt[i];
      }
      return -2.0 * s + 2.0;
    }
    case FamilyKind::InverseGaussian: {
      double sw = 0.0, sly = 0.0;
      for (Index i = 0; i < n; ++i) {
        sw += wt[i];
        sly += std::log(y[i]) * wt[i];
      }
      return sw * (1.0 + std::log(dev / sw * 2.0 * kPi)) + 3.0 * sly + 2.0;
    }
    case FamilyKind::NegativeBinomial: {  // MASS's negative.binomial(theta)$aic: no scale term
      const double t = nb_theta;
      for (Index i = 0; i < n; ++i) {
        const double ll = std::lgamma(t + y[i]) - std::lgamma(t) - std::lgamma(y[i] + 1.0) +
                          t * std::log(t) + (y[i] > 0 ? y[i] * std::log(mu[i]) : 0.0) -
                          (t + y[i]) * std::log(t + mu[i]);
        s += ll * wt[i];
      }
      return -2.0 * s;
    }
    case FamilyKind::Gaussian: {
      double slw = 0.0;
      for (Index i = 0; i < n; ++i) slw += std::log(wt[i]);
      const double nn = static_cast<double>(n);
      return nn * (std::log(dev / nn * 2.0 * kPi) + 1.0) + 2.0 - slw;
    }
  }
  return std::nan("");
}

namespace {

// Rows per chunk of the vectorized family paths: fixed-capacity arrays on the stack, so a
// pass allocates nothing and every row is read once while its chunk is in cache.
constexpr Index kChunk = 128;
using ChunkArray = Eigen::Array<double, Eigen::Dynamic, 1, Eigen::ColMajor, kChunk, 1>;
using ConstRows = Eigen::Map<const Eigen::ArrayXd>;
using Rows = Eigen::Map<Eigen::ArrayXd>;

// The working weights pw mu_eta^2 / V(mu) and response eta - base + (y - mu) / mu_eta of a
// chunk, given its mean and mu_eta.
void working_chunk(const Family& f, const ConstRows& e, const ConstRows& base, const ConstRows& y,
                   const ConstRows& w, const ChunkArray& mu, const ChunkArray& me,
                   const Family::RowsOut& out, Index i0) {
  const Index len = e.size();
  Rows(out.mu + i0, len) = mu;
  Rows(out.mu_eta + i0, len) = me;
  if (f.fam == FamilyKind::Binomial)
    Rows(out.weights + i0, len) = w * me * me / (mu * (1.0 - mu));
  else  // Poisson
    Rows(out.weights + i0, len) = w * me * me / mu;
  Rows(out.z + i0, len) = e - base + (y - mu) / me;
}

// Binomial-logit chunk; returns its deviance less the mu-free constant, NaN if invalid.
double binomial_logit_chunk(const Family& f, const ConstRows& e, const ConstRows& base,
                            const ConstRows& y, const ConstRows& w, const Family::RowsOut& out,
                            Index i0) {
  if (!all_finite(e)) return std::nan("");
  const Index len = e.size();
  ChunkArray mu(len), me(len);
  double dev;
  if (e.abs().maxCoeff() <= kLogitThresh) {
    // No clamp active (the common case): with t = exp(-|eta|), mu = 1 / (1 + t) or
    // t / (1 + t), mu (1 - mu) = t / (1 + t)^2 and -y log mu - (1 - y) log(1 - mu) =
    // log(1 + exp(eta)) - y eta = max(eta, 0) + log1p(t) - y eta: one exp and one log.
    // log(1 + t) rather than log1p(t): Eigen vectorizes log only; for t < eps the term it
    // rounds away is below eps next to max(eta, 0) + ... in the sum.
    const ChunkArray t = (-e.abs()).exp();
    const ChunkArray inv = 1.0 / (1.0 + t);
    mu = (e >= 0.0).select(inv, t * inv);
    me = t * inv * inv;
    dev = 2.0 * (w * (e.max(0.0) + (1.0 + t).log() - y * e)).sum();
  } else {
    ChunkArray t = e.exp();  // Eigen's SIMD exp; then R's clamps
    for (Index i = 0; i < len; ++i) {
      if (e[i] < -kLogitThresh) t[i] = kEps;
      else if (e[i] > kLogitThresh) t[i] = 1.0 / kEps;
    }
    mu = t / (1.0 + t);
    me = (e.abs() > kLogitThresh).select(kEps, mu * (1.0 - mu));
    // 2 w [y log(y/mu) + (1-y) log((1-y)/(1-mu))] = 2 w [-y log mu - (1-y) log(1-mu)] + const
    dev = (2.0 * w * (-(y * mu.log()) - (1.0 - y) * (1.0 - mu).log())).sum();
  }
  if (!(std::isfinite(dev) && mu.minCoeff() > 0.0 && mu.maxCoeff() < 1.0)) return std::nan("");
  working_chunk(f, e, base, y, w, mu, me, out, i0);
  return dev;
}

// Poisson-log chunk; returns its deviance less the mu-free constant, NaN if invalid.
double poisson_log_chunk(const Family& f, const ConstRows& e, const ConstRows& base,
                         const ConstRows& y, const ConstRows& w, const Family::RowsOut& out,
                         Index i0) {
  if (!all_finite(e)) return std::nan("");
  const ChunkArray mu = e.exp().max(kEps);
  // 2 w [y log(y/mu) - (y - mu)] = 2 w [mu - y log mu] + 2 w [y log y - y]
  const double dev = (2.0 * w * (mu - y * mu.log())).sum();
  if (!std::isfinite(dev)) return std::nan("");
  working_chunk(f, e, base, y, w, mu, mu, out, i0);
  return dev;
}

// Any family and link, row by row through the Family's scalar functions.
double generic_rows(const Family& f, const double* eta, const double* base, const double* y,
                    const double* pw, Index n, const Family::RowsOut& out) {
  const bool logit = f.link == LinkKind::Logit;
  double dev = 0.0;
  for (Index i = 0; i < n; ++i) {
    const double e = eta[i];
    if (!f.valid_eta(e)) return std::nan("");
    const double m = f.linkinv(e);
    if (!f.valid_mu(m)) return std::nan("");
    // d mu / d eta with the link's clamps; for the logit mu (1 - mu) saves an exp().
    const double me = logit ? (std::abs(e) > kLogitThresh ? kEps : m * (1.0 - m)) : f.mu_eta(e);
    dev += f.dev_resid(y[i], m, pw[i]);
    out.mu[i] = m;
    out.mu_eta[i] = me;
    out.weights[i] = pw[i] * me * me / f.variance(m);
    out.z[i] = e - base[i] + (y[i] - m) / me;
  }
  return std::isfinite(dev) ? dev : std::nan("");
}

}  // namespace

double Family::irls_rows(const double* eta, const double* base, const double* y,
                         const double* pw, Index n, const RowsOut& out) const {
  const bool binomial_logit = fam == FamilyKind::Binomial && link == LinkKind::Logit;
  const bool poisson_log = fam == FamilyKind::Poisson && link == LinkKind::Log;
  if (!binomial_logit && !poisson_log) return generic_rows(*this, eta, base, y, pw, n, out);
  double dev = 0.0;
  for (Index i0 = 0; i0 < n; i0 += kChunk) {
    const Index len = std::min(kChunk, n - i0);
    const ConstRows e(eta + i0, len), b(base + i0, len), yy(y + i0, len), w(pw + i0, len);
    const double d = binomial_logit ? binomial_logit_chunk(*this, e, b, yy, w, out, i0)
                                    : poisson_log_chunk(*this, e, b, yy, w, out, i0);
    if (std::isnan(d)) return d;
    dev += d;
  }
  return dev;
}

double Family::deviance_constant(const double* y, const double* pw, Index n) const {
  double s = 0.0;
  if (fam == FamilyKind::Binomial && link == LinkKind::Logit) {
    for (Index i = 0; i < n; ++i)
      s += 2.0 * pw[i] * ((y[i] > 0 ? y[i] * std::log(y[i]) : 0.0) +
                          (y[i] < 1 ? (1.0 - y[i]) * std::log1p(-y[i]) : 0.0));
  } else if (fam == FamilyKind::Poisson && link == LinkKind::Log) {
    for (Index i = 0; i < n; ++i)
      s += 2.0 * pw[i] * ((y[i] > 0 ? y[i] * std::log(y[i]) : 0.0) - y[i]);
  }
  return s;
}

Glmm::Glmm(Index n, Index p, const double* X, const double* y, const double* pw,
           const double* offset, std::vector<TermData> terms, Family family)
    : n_(n), p_(p), rows_(n, p, X, y, pw, offset, terms), X_(rows_.X()), y_(rows_.y()),
      pw_(rows_.pw()), off_(rows_.offset()), terms_(rows_.terms()), fam_(family),
      prob_(n, p, X_, terms_) {
  beta_.setZero(p_);
  u_.setZero(prob_.q());
  eta_.setZero(n_);
  mu_.setZero(n_);
  wts_.setZero(n_);
  zwork_.setZero(n_);
  fixed_.setZero(n_);
  mueta_.setZero(n_);
  wts_next_.setZero(n_);
  zwork_next_.setZero(n_);
  eta_new_.setZero(n_);
  zeros_.setZero(n_);
  dev_const_ = fam_.deviance_constant(y_, pw_, n_);
  if (fam_.fam == FamilyKind::Binomial || fam_.fam == FamilyKind::Poisson) {
    // aic(mu) - dev(mu) does not depend on mu: evaluate it once at a valid reference mean.
    Vector ref(n_);
    double dev = 0.0;
    for (Index i = 0; i < n_; ++i) {
      ref[i] = fam_.fam == FamilyKind::Binomial ? 0.5 : std::max(y_[i], 1.0);
      dev += fam_.dev_resid(y_[i], ref[i], pw_[i]);
    }
    aic_const_ = fam_.aic(y_, ref.data(), pw_, n_, dev) - dev;
    aic_const_valid_ = std::isfinite(aic_const_);
  }
}

bool Glmm::update_mu(const Vector& eta) {
  next_ready_ = false;
  const double dev = fam_.irls_rows(eta.data(), base_, y_, pw_, n_,
                                    {mu_.data(), mueta_.data(), wts_next_.data(),
                                     zwork_next_.data()});
  devsum_ = dev + dev_const_;
  if (!std::isfinite(devsum_)) {
    devsum_ = std::nan("");
    return false;
  }
  next_ready_ = true;
  return true;
}

void Glmm::working() {
  // update_mu() computed them with mu_; only if that was not at eta_ (a failed candidate
  // came after) compute them again.
  if (!next_ready_) update_mu(eta_);
  wts_.swap(wts_next_);
  zwork_.swap(zwork_next_);
  next_ready_ = false;
}

double Glmm::family_aic() const {
  // Binomial and Poisson: -2 log L = sum of deviance residuals + a constant of the data.
  if (aic_const_valid_) return devsum_ + aic_const_;
  return fam_.aic(y_, mu_.data(), pw_, n_, devsum_);
}

double Glmm::pearson() const {
  double s = 0.0;
  for (Index i = 0; i < n_; ++i) {
    const double r = y_[i] - mu_[i];
    s += pw_[i] * r * r / fam_.variance(mu_[i]);
  }
  return s;
}

Status Glmm::pirls(bool with_beta, const double* theta, bool start_known) {
  Problem& prob = system(with_beta);
  // base: the part of eta that PLS does not solve for.
  base_ = with_beta ? (off_ ? off_ : zeros_.data()) : fixed_.data();
  const Eigen::Map<const Vector> base(base_, n_);
  // Work vectors are members, sized on first use and reused by every step and call.
  Vector& unew = u_new_;
  Vector& bnew = b_new_;
  Vector& eta_new = eta_new_;
  Vector& bvec = bvec_;
  Vector& old_u = u_old_;
  Vector& old_b = b_old_;
  old_u = u_;
  old_b = beta_;
  double oldpdev = std::numeric_limits<double>::infinity();
  if (!update_mu(eta_)) return Status::InvalidMean;
  // From a start (beta, u) the step can be halved back toward it; from a bare eta (the
  // first stage-1 evaluation) there is no such point.
  if (!with_beta || start_known) oldpdev = devsum_ + u_.squaredNorm();
  Vector zero_beta;  // for the u-only problem
  auto candidate = [&](const Vector& uu, const Vector& bb) -> double {
    prob.lambda_times(uu, bvec);
    prob.linear_predictor(with_beta ? bb.data() : zero_beta.data(), bvec.data(), eta_new.data());
    eta_new += base;
    if (!update_mu(eta_new)) return std::nan("");
    return devsum_ + uu.squaredNorm();
  };
  bool converged = false;
  bool refactor_at_mode = false;
  // Step length, reduced after a step had to be halved, for non-canonical links only:
  // there scoring uses the expected information and can oscillate about the mode, while
  // for canonical links it is Newton's method and full steps converge quadratically.
  double alpha = 1.0;
  const bool canonical =
      (fam_.fam == FamilyKind::Binomial && fam_.link == LinkKind::Logit) ||
      (fam_.fam == FamilyKind::Poisson && fam_.link == LinkKind::Log) ||
      (fam_.fam == FamilyKind::Gaussian && fam_.link == LinkKind::Identity) ||
      (fam_.fam == FamilyKind::Gamma && fam_.link == LinkKind::Inverse) ||
      (fam_.fam == FamilyKind::InverseGaussian && fam_.link == LinkKind::InverseSquare);
  Status s;
  for (iters_ = 0; iters_ < control.maxit; ++iters_) {
    if (interrupt_requested()) return Status::Interrupted;
    working();
    if ((s = prob.set_response(zwork_.data(), wts_.data(), false)) != Status::Ok) return s;
    if ((s = prob.factor(theta)) != Status::Ok) return s;
    if ((s = prob.solve(bnew, unew)) != Status::Ok) return s;
    // Converged when the penalized deviance has stopped changing and the step itself is
    // negligible: the step test matters because log|L|^2 is not stationary at the mode (a
    // pdev-only test leaves u, and so the Laplace objective, off by ~sqrt(tol)), and
    // because Fisher scoring for non-canonical links converges only linearly.
    double step = (unew - old_u).lpNorm<Eigen::Infinity>();
    double size = old_u.lpNorm<Eigen::Infinity>();
    if (with_beta && p_ > 0) {
      step = std::max(step, (bnew - old_b).lpNorm<Eigen::Infinity>());
      size = std::max(size, old_b.lpNorm<Eigen::Infinity>());
    }
    // Fisher scoring can overshoot for non-canonical links and then oscillate about the
    // mode; once a step had to be halved, later steps are damped (the convergence test
    // still uses the full step).
    if (alpha < 1.0) {
      unew = old_u + alpha * (unew - old_u);
      if (with_beta) bnew = old_b + alpha * (bnew - old_b);
    }
    double pdev = candidate(unew, bnew);
    if (!std::isfinite(pdev) && !std::isfinite(oldpdev)) {
      // From a bare starting eta (no (beta, u) behind it) a step to an invalid mean cannot
      // be halved back toward a previous iterate: move eta only part of the way toward the
      // step's linear predictor, and iterate from that valid eta, still without a start.
      if (!damp_bare_start(eta_new)) return Status::InvalidMean;
      continue;
    }
    if (std::isfinite(pdev) &&
        std::abs(oldpdev - pdev) < control.tol * std::max(std::abs(pdev), 1.0) &&
        step <= control.step_tol * (1.0 + size)) {
      u_ = unew; if (with_beta) beta_ = bnew; eta_.swap(eta_new);
      converged = true;
      break;
    }
    // Halve the step only for a real increase: near the mode pdev moves by rounding only,
    // and the step (not the rounding noise in pdev) decides convergence.
    const double slack = control.tol * std::max(std::abs(oldpdev), 1.0);
    if (!(pdev <= oldpdev + slack)) {
      for (int k = 0; k < control.max_halvings && !(pdev <= oldpdev); ++k) {
        unew = 0.5 * (old_u + unew);
        if (with_beta) bnew = 0.5 * (old_b + bnew);
        pdev = candidate(unew, bnew);
      }
      if (!canonical) alpha = std::max(0.5 * alpha, 1.0 / 64.0);
      if (!(pdev <= oldpdev)) {
        // No descent left: accept the previous iterate if it is converged to rounding.
        if (std::isfinite(pdev) && std::abs(pdev - oldpdev) <= 1e-8 * std::abs(oldpdev)) {
          u_ = old_u; if (with_beta) beta_ = old_b;
          prob.lambda_times(u_, bvec);
          prob.linear_predictor(with_beta ? beta_.data() : zero_beta.data(), bvec.data(), eta_.data());
          eta_ += base;
          if (!update_mu(eta_)) return Status::InvalidMean;
          converged = true;
          refactor_at_mode = true;
          break;
        }
        return Status::PirlsDiverged;
      }
    }
    u_ = unew; if (with_beta) beta_ = bnew; eta_.swap(eta_new);
    old_u = u_; old_b = beta_;
    oldpdev = pdev;
  }
  if (!converged) return Status::PirlsMaxIter;
  // mu_, devsum_ and the next working weights belong to eta_ already: the converged
  // candidate's update_mu() computed them (the fallback above recomputed them for its iterate).
  // The last factor used the weights of the previous iterate, which the converged step
  // moved by at most step_tol (relative): its log-determinant is the mode's to that order.
  // Refactor only when the fallback above accepted an older iterate.
  if (refactor_at_mode) {
    working();
    if ((s = prob.set_response(zwork_.data(), wts_.data(), false)) != Status::Ok) return s;
    if ((s = prob.factor(theta)) != Status::Ok) return s;
  }
  ldL2_ = prob.ldL2();
  aic_ = family_aic();
  return Status::Ok;
}

bool Glmm::damp_bare_start(const Vector& eta_step) {
  Vector eta_try(n_);
  double t = 0.5;
  for (int k = 0; k < control.max_halvings; ++k, t *= 0.5) {
    eta_try = eta_ + t * (eta_step - eta_);
    if (update_mu(eta_try)) {  // also sets mu_, mueta_ and devsum_ for the next step
      eta_ = eta_try;
      return true;
    }
  }
  update_mu(eta_);
  return false;
}

bool Glmm::predict_start(int stage, const Vector& phi) {
  // First-order prediction of the mode from the last gradient point: O(|dphi|^2) off, so
  // PIRLS needs one step fewer at the nearby points of a Hessian or a Newton step. Only for
  // moderate moves (PIRLS converges from anywhere; this only has to be a better start).
  if (sens_stage_ != stage || sens_phi_.size() != phi.size()) return false;
  const Vector d = phi - sens_phi_;
  if (!(d.lpNorm<Eigen::Infinity>() <= 0.1 * (1.0 + sens_phi_.lpNorm<Eigen::Infinity>())))
    return false;
  const Index q = sens_u_.size();
  u_ = sens_u_ + sens_.topRows(q) * d;
  if (stage == 1) beta_ = sens_b_ + sens_.bottomRows(sens_.rows() - q) * d;
  return u_.allFinite() && beta_.allFinite();
}

void Glmm::eta_from_mode(bool with_beta, const double* theta) {
  Problem& prob = system(with_beta);
  prob.install_theta(theta);
  Vector& bvec = bvec_;
  prob.lambda_times(u_, bvec);
  if (with_beta) {
    prob.linear_predictor(beta_.data(), bvec.data(), eta_.data());
    if (off_) eta_ += Eigen::Map<const Vector>(off_, n_);
  } else {
    prob.linear_predictor(nullptr, bvec.data(), eta_.data());
    eta_ += fixed_;
  }
}

void Glmm::record_success(int stage, const double* theta) {
  evaluated_stage_ = stage;
  theta_ = Eigen::Map<const Vector>(theta, prob_.ntheta());
}

// A failure from a start says nothing about the model, only about the start (e.g. a far
// start where a sqrt link's eta is negative, so the mean is invalid at once): these are the
// failures after which PIRLS tries again from a safer start.
static bool start_may_be_at_fault(Status s) {
  return s == Status::InvalidMean || s == Status::PirlsDiverged || s == Status::PirlsMaxIter ||
         s == Status::NotPositiveDefinite;
}

Status Glmm::stage1_from_start(const double* theta) {
  const bool from_last_mode = u_ == u1_warm_ && beta_ == b1_warm_;
  eta_from_mode(true, theta);
  Status s = pirls(true, theta, true);
  if (!start_may_be_at_fault(s) || eta1_start_.size() != n_) return s;
  // The GLM starting values, as on the first evaluation.
  eta_ = eta1_start_;
  u_.setZero(prob_.q());
  beta_.setZero(p_);
  s = pirls(true, theta, false);
  if (!start_may_be_at_fault(s)) return s;
  return stage1_fallback(theta, !from_last_mode, s);
}

Status Glmm::stage1_fallback(const double* theta, bool try_last_mode, Status failed) {
  // From a bare starting eta, a first step to an invalid mean can only be halved toward
  // (beta, u) = 0, which need not be valid either (e.g. eta = offset <= 0 for the 1/mu^2
  // link), and scoring can stall for non-canonical links. The mode does not depend on where
  // PIRLS begins, so begin elsewhere: at the last stage-1 mode if there is one,
  if (try_last_mode && u1_warm_.size() == prob_.q()) {
    u_ = u1_warm_;
    beta_ = b1_warm_;
    eta_from_mode(true, theta);
    failed = pirls(true, theta, true);
    if (!start_may_be_at_fault(failed)) return failed;
  }
  // else at the fixed-effects-only fit (theta = 0, where u vanishes) with u = 0.
  return stage1_from_glm_fit(theta, failed);
}

Status Glmm::stage1_from_glm_fit(const double* theta, Status failed) {
  if (eta1_start_.size() != n_) return failed;
  const Vector no_re = Vector::Zero(prob_.ntheta());
  eta_ = eta1_start_;
  u_.setZero(prob_.q());
  beta_.setZero(p_);
  if (pirls(true, no_re.data(), false) != Status::Ok) return failed;
  u_.setZero(prob_.q());
  eta_from_mode(true, theta);
  return pirls(true, theta, true);
}

bool Glmm::is_current(int stage, const double* theta, const double* beta) const {
  if (last_.stage != stage) return false;
  const Index nt = prob_.ntheta();
  for (Index j = 0; j < nt; ++j)
    if (last_.x[j] != theta[j]) return false;
  if (stage == 2)
    for (Index j = 0; j < p_; ++j)
      if (last_.x[nt + j] != beta[j]) return false;
  return true;
}

void Glmm::set_current(int stage, const double* theta, const double* beta, double obj) {
  const Index nt = prob_.ntheta();
  last_.stage = stage;
  last_.x.resize(stage == 2 ? nt + p_ : nt);
  last_.x.head(nt) = Eigen::Map<const Vector>(theta, nt);
  if (stage == 2) last_.x.tail(p_) = Eigen::Map<const Vector>(beta, p_);
  last_.obj = obj;
  last_.has_gradient = false;
}

Status Glmm::eval_stage1(const double* theta, const double* eta_start, double& obj) {
  obj = std::nan("");
  evaluated_stage_ = 0;
  last_.stage = 0;
  for (Index j = 0; j < prob_.ntheta(); ++j)
    if (!std::isfinite(theta[j])) return Status::NonFiniteInput;
  Status s;
  if (eta_start) {
    rows_.from_input(eta_start, eta1_start_);
    eta_ = eta1_start_;
    u_.setZero(prob_.q());
    beta_.setZero(p_);
    s = pirls(true, theta, false);
    if (start_may_be_at_fault(s)) s = stage1_fallback(theta, true, s);
  } else if (u1_warm_.size() == prob_.q()) {
    // Warm start from the last stage-1 mode (beta, u), or a prediction from the last
    // gradient point, re-expressed at this theta.
    if (!predict_start(1, Eigen::Map<const Vector>(theta, prob_.ntheta()))) {
      u_ = u1_warm_;
      beta_ = b1_warm_;
    }
    s = stage1_from_start(theta);
  } else {
    return Status::NotEvaluated;
  }
  if (s != Status::Ok) return s;
  u1_warm_ = u_;
  b1_warm_ = beta_;
  obj = aic_ + u_.squaredNorm() + ldL2_;
  record_success(1, theta);
  set_current(1, theta, nullptr, obj);
  return Status::Ok;
}

Status Glmm::random_effects(Vector& b) {
  if (evaluated_stage_ == 0) return Status::NotEvaluated;
  prob_.install_theta(theta_.data());
  prob_.lambda_times(u_, b);
  return Status::Ok;
}

Status Glmm::variances(std::vector<Matrix>& condvar, Matrix& vcov) {
  if (evaluated_stage_ == 0) return Status::NotEvaluated;
  // Both come from the (beta, u) system's factor at the mode's working weights: its Z part is
  // also the u-only system's factor, which gives the conditional variances. Stage 1's last
  // factor is that already; after stage 2 it is formed (any response: only L is needed),
  // which ends the current evaluation.
  Problem& prob = system(true);
  Status s;
  if (last_.stage != 1) {
    last_.stage = 0;
    if ((s = prob.set_response(eta_.data(), wts_.data(), false)) != Status::Ok) return s;
    if ((s = prob.factor(theta_.data(), false)) != Status::Ok) return s;
  }
  if ((s = prob.cond_var(condvar)) != Status::Ok) return s;
  return prob.unscaled_vcov(vcov);
}

Status Glmm::eval_stage2(const double* theta, const double* beta, const double* u_start, int nagq,
                         const double* ghz, const double* ghw, double& obj) {
  obj = std::nan("");
  evaluated_stage_ = 0;
  last_.stage = 0;
  for (Index j = 0; j < p_; ++j)
    if (!std::isfinite(beta[j])) return Status::NonFiniteInput;
  for (Index j = 0; j < prob_.ntheta(); ++j)
    if (!std::isfinite(theta[j])) return Status::NonFiniteInput;
  if (nagq > 1 && (terms_.size() != 1 || terms_[0].p != 1)) return Status::BadDimension;
  beta_ = Eigen::Map<const Vector>(beta, p_);
  if (p_ > 0)
    fixed_.noalias() = Eigen::Map<const Matrix>(X_, n_, p_) * beta_;
  else
    fixed_.setZero(n_);
  if (off_) fixed_ += Eigen::Map<const Vector>(off_, n_);
  // Start from the given u, or (u_start == nullptr) from the mode of the last successful
  // stage-2 evaluation: the mode is found to ~1e-12 either way, so the objective does not
  // depend on the start beyond rounding, and a nearby start saves PIRLS iterations.
  if (u_start) {
    u_ = Eigen::Map<const Vector>(u_start, prob_.q());
  } else if (u_warm_.size() == prob_.q()) {
    Vector phi(prob_.ntheta() + p_);
    phi.head(prob_.ntheta()) = Eigen::Map<const Vector>(theta, prob_.ntheta());
    phi.tail(p_) = beta_;
    if (!predict_start(2, phi)) u_ = u_warm_;
  } else {
    u_.setZero(prob_.q());
  }
  const bool from_zero = u_.isZero(0.0);
  eta_from_mode(false, theta);
  Status s = pirls(false, theta, true);
  if (start_may_be_at_fault(s) && !from_zero) {
    // Not from this start: from u = 0 (eta = X beta + offset), where the fixed effects alone
    // decide whether the mean is valid.
    u_.setZero(prob_.q());
    eta_from_mode(false, theta);
    s = pirls(false, theta, true);
  }
  if (s != Status::Ok) return s;
  u_warm_ = u_;
  if (nagq <= 1) {
    obj = aic_ + u_.squaredNorm() + ldL2_;
    record_success(2, theta);
    set_current(2, theta, beta, obj);
    return Status::Ok;
  }
  // Adaptive Gauss-Hermite for one scalar term.
  const TermData& t = terms_[0];
  const Index q = t.nlev;
  const Vector& L = prob_.first_term_factor();
  const double lam = theta[0];
  Vector devc0 = Vector::Zero(q), mult = Vector::Zero(q), devk(q);
  for (Index i = 0; i < n_; ++i) devc0[t.g[i]] += fam_.dev_resid(y_[i], mu_[i], pw_[i]);
  for (Index j = 0; j < q; ++j) devc0[j] += u_[j] * u_[j];
  for (int k = 0; k < nagq; ++k) {
    const double z = ghz[k];
    if (z == 0.0) {
      mult.array() += ghw[k];
      continue;
    }
    devk.setZero();
    for (Index i = 0; i < n_; ++i) {
      const int j = t.g[i];
      const double e = eta_[i] + t.Z[i] * lam * z / L[j];
      // Only the mean must be valid at a node (e.g. the sqrt link's mu = eta^2 at eta < 0).
      const double m = fam_.linkinv(e);
      if (!fam_.valid_mu(m)) return Status::InvalidMean;
      devk[j] += fam_.dev_resid(y_[i], m, pw_[i]);
    }
    for (Index j = 0; j < q; ++j) {
      const double uj = u_[j] + z / L[j];
      devk[j] += uj * uj;
      mult[j] += ghw[k] * std::exp(-0.5 * (devk[j] - devc0[j]) + 0.5 * z * z);
    }
  }
  obj = devc0.sum() + ldL2_ - 2.0 * mult.array().log().sum();
  record_success(2, theta);
  return Status::Ok;
}

bool Glmm::has_gradient() const {
  if (prob_.rest_sparse()) return false;  // no leverages on that path
  return (fam_.fam == FamilyKind::Binomial && fam_.link == LinkKind::Logit) ||
         (fam_.fam == FamilyKind::Poisson && fam_.link == LinkKind::Log);
}

Status Glmm::gradient(bool stage1, const double* theta, Vector& grad) {
  // Objective F = sum_i dev_i(eta*) + |u*|^2 + log|G| (+ a constant), G = Lambda'Z'WZ Lambda + I
  // with W at the mode. For a canonical link the score of dev_i in eta_i is -2 r_i, r_i =
  // pw_i (y_i - mu_i), and W_i is also the observed information, so the mode's sensitivity
  // solves the same system that PIRLS factors. For a parameter phi with d eta / d phi = g
  // at fixed u (beta_j: X_j; theta_k: Z dLambda_k u):
  //   dF/dphi = -2 r'g + tr(G^{-1} dG/dphi),
  //   tr(G^{-1} dG/dphi) = 2 sum_i W_i T_ik [theta only] + sum_i W'_i h_i deta_i,
  //   deta = g + [Z Lambda (X)] dmode, system * dmode = [dLambda_k' Z'r - Lambda'Z'W g; (-X'W g)].
  // The factor is PIRLS's last one, at the weights wts_ of the iterate before the converged
  // step (which moved by <= step_tol relative): its use here is exact to that order, as the
  // objective's log|L|^2 is.
  if (!has_gradient()) return Status::BadDimension;
  if (evaluated_stage_ != (stage1 ? 1 : 2)) return Status::NotEvaluated;
  // The evaluation's own factor: no switch happens here (is_current() and evaluated_stage_
  // say the Problem still holds that stage's system).
  Problem& prob = system(stage1);
  const Index nt = prob.ntheta();
  const Index np = stage1 ? 0 : p_;
  const Index P = nt + np;
  const Index q = prob.q();
  const Index px = stage1 ? p_ : 0;
  GradientWork& ws = grad_work_;  // sized on first use, reused by every call
  Status s;
  if ((s = prob.leverages(ws.h, ws.T)) != Status::Ok) return s;
  const auto y = Eigen::Map<const Eigen::ArrayXd>(y_, n_);
  const auto pw = Eigen::Map<const Eigen::ArrayXd>(pw_, n_);
  ws.r = pw * (y - mu_.array());
  const auto W = wts_.array();
  // dW/deta: binomial-logit W = pw mu (1 - mu) -> W (1 - 2 mu); Poisson-log W = pw mu -> W.
  if (fam_.fam == FamilyKind::Binomial)
    ws.Wd = W * (1.0 - 2.0 * mu_.array());
  else
    ws.Wd = W;
  const Eigen::Map<const Matrix> X(X_, n_, p_);
  // g for every parameter (rows = observations, row-major for the Z products below).
  RowMatrix& G = ws.G;
  G.resize(n_, P);
  ws.col.resize(n_);
  for (Index k = 0; k < nt; ++k) {
    prob.dlambda_z(k, u_, ws.col.data());
    G.col(k) = ws.col;
  }
  if (np) G.rightCols(np) = X;
  grad.noalias() = -2.0 * (G.transpose() * ws.r.matrix());
  grad.head(nt).noalias() += 2.0 * (ws.T.transpose() * W.matrix());
  // Right-hand sides: dLambda_k' Z'r - Lambda' Z'(W g), and -X'(W g) for stage 1.
  ws.WG = W.matrix().asDiagonal() * G;
  prob.zt_times_rows(ws.WG, ws.ZtWG);
  prob.lambda_rows(ws.ZtWG, true);
  Matrix& Rhs = ws.Rhs;
  Rhs.resize(q + px, P);
  Rhs.topRows(q) = -ws.ZtWG;
  prob.zt_times(ws.r.data(), ws.Ztr);
  for (Index k = 0; k < nt; ++k) {
    prob.dlambda_times(k, ws.Ztr, ws.tmp, true);
    Rhs.col(k).head(q) += ws.tmp;
  }
  if (px) Rhs.bottomRows(px).noalias() = -(X.transpose() * ws.WG);
  if ((s = prob.solve_system(Rhs, stage1)) != Status::Ok) return s;
  sens_ = Rhs;
  sens_phi_.resize(P);
  sens_phi_.head(nt) = Eigen::Map<const Vector>(theta, nt);
  if (np) sens_phi_.tail(np) = beta_;
  sens_u_ = u_;
  sens_b_ = beta_;
  sens_stage_ = stage1 ? 1 : 2;
  // deta = g + Z Lambda du (+ X dbeta); the weight-derivative term sums W'_i h_i deta_i.
  ws.B = Rhs.topRows(q);
  prob.lambda_rows(ws.B, false);
  prob.z_times_rows(ws.B, ws.D);
  ws.D += G;
  if (px) ws.D.noalias() += X * Rhs.bottomRows(px);
  ws.Wd *= ws.h.array();
  grad.noalias() += ws.D.transpose() * ws.Wd.matrix();
  return Status::Ok;
}

Status Glmm::value_and_gradient(int stage, const Vector& x, double& f, Vector& g) {
  const Index nt = prob_.ntheta();
  if (x.size() != (stage == 1 ? nt : nt + p_)) return Status::BadDimension;
  Status s = Status::Ok;
  if (is_current(stage, x.data(), x.data() + nt)) {
    // The same point again (e.g. Newton's start after the caller's first evaluation, or the
    // Hessian's centre after Newton's last step): the mode, and so the value, is the current
    // one; PIRLS from it would only reproduce it to rounding.
    f = last_.obj;
  } else {
    s = stage == 1 ? eval_stage1(x.data(), nullptr, f)
                   : eval_stage2(x.data(), x.data() + nt, nullptr, 1, nullptr, nullptr, f);
    if (s != Status::Ok) return s;
  }
  if (last_.has_gradient) {  // asked for at this point before
    g = last_.gradient;
    return Status::Ok;
  }
  if ((s = gradient(stage == 1, x.data(), g)) != Status::Ok) return s;
  last_.has_gradient = true;
  last_.gradient = g;
  return Status::Ok;
}

NewtonResult Glmm::newton(int stage, const Vector& x0, const double* u_start,
                          bool curvature_from_stage1, const NewtonControl& ctl) {
  if (stage == 2 && u_start) {
    u_warm_ = Eigen::Map<const Vector>(u_start, prob_.q());
    sens_stage_ = 0;  // no prediction from an older gradient point
  }
  const ValueAndGradient fg = [this, stage](const Vector& x, double& f, Vector& g) {
    return value_and_gradient(stage, x, f, g);
  };
  const Vector unbounded = Vector::Constant(x0.size(), -std::numeric_limits<double>::infinity());
  Matrix H0;
  const bool seeded = stage == 2 && curvature_from_stage1 && stage2_start_hessian(x0, H0);
  NewtonResult r = newton_minimize(fg, x0, unbounded, ctl, seeded ? &H0 : nullptr);
  if (stage == 1 && r.converged()) {
    stage1_newton_x_ = r.x;
    stage1_newton_hessian_ = r.hessian;
  }
  return r;
}

bool Glmm::stage2_start_hessian(const Vector& x0, Matrix& H) {
  const Index nt = prob_.ntheta();
  if (last_.stage != 1 || stage1_newton_x_.size() != nt || stage1_newton_hessian_.rows() != nt ||
      x0.size() != nt + p_ || x0.head(nt) != stage1_newton_x_ || last_.x != stage1_newton_x_ ||
      x0.tail(p_) != beta_)
    return false;
  Matrix V;
  if (prob_.unscaled_vcov(V) != Status::Ok) return false;
  const Eigen::LLT<Matrix> llt(V);
  if (llt.info() != Eigen::Success) return false;
  H.setZero(nt + p_, nt + p_);
  H.topLeftCorner(nt, nt) = stage1_newton_hessian_;
  H.bottomRightCorner(p_, p_) = 2.0 * llt.solve(Matrix::Identity(p_, p_));
  return H.allFinite();
}

Status Glmm::stage2_hessian(const Vector& x, double delta, double& f, Vector& g, Matrix& H) {
  const ValueAndGradient fg = [this](const Vector& xx, double& ff, Vector& gg) {
    return value_and_gradient(2, xx, ff, gg);
  };
  const Status s = fg(x, f, g);
  if (s != Status::Ok) return s;
  return hessian_from_gradient(fg, x, delta, H);
}

}  // namespace mixedfit
