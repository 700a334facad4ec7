// Generalized linear mixed models (MATH.md section 3): families, links, PIRLS and the
// Laplace / adaptive Gauss-Hermite objectives, built on the blocked LMM Problem.
//
// PIRLS reweights and solves a penalized weighted least-squares problem per step; the solve is
// the LMM Problem's (A re-formed from the working weights and response: O(n) per step, then the
// same blocked factorization). One Problem serves both stages: with the fixed effects in the
// system over (beta, u) for the nAGQ = 0 stage, without them over u alone (beta fixed, X beta
// in the offset) for the Laplace / AGQ stage.
#pragma once

#include <vector>

#include "mixedfit/newton.hpp"
#include "mixedfit/problem.hpp"
#include "mixedfit/row_order.hpp"

namespace mixedfit {

enum class FamilyKind : int {
  Binomial = 0, Poisson = 1, Gamma = 2, InverseGaussian = 3, Gaussian = 4, NegativeBinomial = 5
};
enum class LinkKind : int {
  Identity = 0, Log = 1, Logit = 2, Probit = 3, Cloglog = 4, Cauchit = 5, Inverse = 6, Sqrt = 7,
  InverseSquare = 8
};

struct Family {
  FamilyKind fam;
  LinkKind link;
  // The negative binomial's shape theta (NB2: variance mu + mu^2 / theta); unused otherwise.
  double nb_theta = 0.0;
  double linkfun(double mu) const;
  double linkinv(double eta) const;
  double mu_eta(double eta) const;
  double variance(double mu) const;
  // Unit deviance times the prior weight.
  double dev_resid(double y, double mu, double wt) const;
  // The GLM starting mean for response y with prior weight w (R's family()$initialize).
  double mustart(double y, double w) const;
  bool valid_mu(double mu) const;
  bool valid_eta(double eta) const;
  // R's family()$aic(y, n, mu, wt, dev): -2 log-likelihood with normalizing constants
  // (dispersion families add 2, as R's do).
  double aic(const double* y, const double* mu, const double* wt, Index n, double dev) const;

  // Where irls_rows() writes, each (n,): the mean, d mu / d eta, the working weights
  // pw mu_eta^2 / V(mu) and the working response eta - base + (y - mu) / mu_eta.
  struct RowsOut {
    double* mu;
    double* mu_eta;
    double* weights;
    double* z;
  };
  // One pass over rows [0, n) at the linear predictor eta (base: the part of eta that PIRLS
  // does not solve for): every per-row quantity of a PIRLS step, and the sum of the deviance
  // residuals less deviance_constant(). NaN if some eta or mu is invalid (outputs partial).
  // Binomial-logit and Poisson-log run vectorized in chunks of rows.
  double irls_rows(const double* eta, const double* base, const double* y, const double* pw,
                   Index n, const RowsOut& out) const;
  // The mu-free part of the deviance that irls_rows() leaves out (0 except for the
  // binomial-logit and Poisson-log paths, whose deviance needs one log per row that way).
  double deviance_constant(const double* y, const double* pw, Index n) const;
};

struct PirlsControl {
  double tol = 1e-10;       // relative change of the penalized deviance
  double step_tol = 1e-11;  // max |change of u (and beta)| relative to 1 + max |u|
  int maxit = 300;  // Fisher scoring for non-canonical links can need ~100 steps
  int max_halvings = 20;
};

class Glmm {
 public:
  // X (n, p) column-major; y (n,) response (binomial: proportions); pw prior weights
  // (binomial: number of trials); offset (n,) or nullptr. Arrays must outlive the object.
  Glmm(Index n, Index p, const double* X, const double* y, const double* pw,
       const double* offset, std::vector<TermData> terms, Family family);

  // Stage 1 (nAGQ = 0): PIRLS over (beta, u) at theta, starting from eta_start (n,), or
  // (eta_start == nullptr) from the last stage-1 mode.
  // obj = aic + ||u||^2 + log|L|^2 (lme4's scale). beta() and u() give the solution.
  Status eval_stage1(const double* theta, const double* eta_start, double& obj);
  // Stage 2: PIRLS over u at (theta, beta) starting from u_start (q,), or from the last
  // stage-2 mode when u_start is nullptr. nagq <= 1: Laplace on
  // lme4's scale (aic + ||u||^2 + ldL2); nagq > 1: adaptive Gauss-Hermite with nodes z and
  // weights w (probabilists', summing to 1) on the unit-deviance scale, as lme4 computes it.
  Status eval_stage2(const double* theta, const double* beta, const double* u_start, int nagq,
                     const double* ghz, const double* ghw, double& obj);

  // Gradient of the Laplace objective at the last successful evaluation of the same stage
  // (call right after eval_stage1 / eval_stage2 with nagq <= 1, same theta): stage 1 with
  // respect to theta (beta and u at their joint mode), stage 2 with respect to (theta, beta)
  // (u at its mode). Exact (implicit differentiation through the mode, including the
  // dependence of log|L|^2 on the working weights) for the canonical binomial-logit and
  // Poisson-log models; BadDimension for any other family or link.
  Status gradient(bool stage1, const double* theta, Vector& grad);
  bool has_gradient() const;

  // A stage's Laplace objective and its exact gradient at x (stage 1: x = theta; stage 2:
  // x = (theta, beta)), PIRLS warm-started from the stage's last mode (stage 1 needs one
  // evaluation with a starting eta first).
  Status value_and_gradient(int stage, const Vector& x, double& f, Vector& g);
  // Modified Newton (newton_minimize, unbounded: the objective is even in each column of a
  // term's template) on a stage's objective from x0, every evaluation inside the core. Stage 2
  // starts PIRLS from u_start (q,) if given, else from the last stage-2 mode; with
  // curvature_from_stage1 its curvature model starts from stage 1's (stage2_start_hessian(),
  // when available) instead of forward differences: fewer evaluations, but its stopping test
  // is then only as good as that model, so the caller should finish with an exact-Hessian
  // Newton step (as glmer's polishing step does).
  NewtonResult newton(int stage, const Vector& x0, const double* u_start = nullptr,
                      bool curvature_from_stage1 = false,
                      const NewtonControl& ctl = NewtonControl());
  // The stage-2 objective f and gradient g at x = (theta, beta), then the Hessian there from
  // central differences (step delta) of the exact gradient.
  Status stage2_hessian(const Vector& x, double delta, double& f, Vector& g, Matrix& H);

  // The stage (1 or 2) whose Laplace evaluation is the core's current state: its mode, and
  // the Problem's factor at that mode's working weights (0: none, e.g. after an AGQ
  // evaluation, a failure, or variances() after stage 2). value_and_gradient() answers a repeated request
  // at the same point from it.
  int current_stage() const { return last_.stage; }

  // The stage (1 or 2) of the last successful evaluation, 0 if none (or the last one failed:
  // the mode accessors below then hold no solution).
  int evaluated_stage() const { return evaluated_stage_; }
  // theta of the last successful evaluation (empty before the first).
  const Vector& theta() const { return theta_; }
  // b = Lambda(theta) u at the last successful evaluation (NotEvaluated before one).
  Status random_effects(Vector& b);

  const Vector& beta() const { return beta_; }
  const Vector& u() const { return u_; }
  // eta, mu and the working weights at the mode, in the input's row order.
  Vector eta() const { return rows_.to_input(eta_); }
  Vector mu() const { return rows_.to_input(mu_); }
  Vector working_weights() const { return rows_.to_input(wts_); }
  double devsum() const { return devsum_; }    // sum of unit deviances (x prior weights)
  double aic_value() const { return aic_; }    // family aic at the mode
  double ussq() const { return u_.squaredNorm(); }
  double ldL2() const { return ldL2_; }
  double pearson() const;                      // sum pw (y - mu)^2 / V(mu)
  int iterations() const { return iters_; }
  // At the last successful evaluation's theta and mode: the unscaled conditional variances
  // of the random effects (Problem::cond_var) and the unscaled vcov of beta. Ends a current
  // stage-2 evaluation (the Problem is refactored with the fixed effects for them); a current
  // stage-1 evaluation's factor serves as it is and stays current.
  Status variances(std::vector<Matrix>& condvar, Matrix& vcov);
  const Problem& problem() const { return prob_; }
  Index ntheta() const { return prob_.ntheta(); }
  Index q() const { return prob_.q(); }
  PirlsControl control;

 private:
  // The Problem with the fixed effects in the system (stage 1) or not (stage 2).
  Problem& system(bool with_beta) {
    prob_.include_fixed_effects(with_beta);
    return prob_;
  }
  Status pirls(bool with_beta, const double* theta, bool start_known);
  // eta_ from the current u_ (and beta_ for stage 1) at theta.
  void eta_from_mode(bool with_beta, const double* theta);
  // Stage 1 from the current (beta_, u_); when PIRLS fails from there, from the last GLM
  // starting eta, then as stage1_fallback().
  Status stage1_from_start(const double* theta);
  // Stage 1 after PIRLS failed (status `failed`) from the GLM starting eta: from the last
  // stage-1 mode (if try_last_mode), then from the fixed-effects-only fit.
  Status stage1_fallback(const double* theta, bool try_last_mode, Status failed);
  // Stage 1 from the fixed-effects-only fit at theta = 0 (from the GLM starting eta) with
  // u = 0; returns `failed` if that fit fails too.
  Status stage1_from_glm_fit(const double* theta, Status failed);
  void record_success(int stage, const double* theta);
  // mu_, mueta_ and devsum_ from eta, and the working weights and response for the next
  // PIRLS step (installed by working()), in one pass; false if invalid.
  bool update_mu(const Vector& eta);
  // eta_ moved toward eta_step by the largest of 1/2, 1/4, ... that keeps the mean valid;
  // false if none does (eta_ and mu_ then unchanged).
  bool damp_bare_start(const Vector& eta_step);
  double penalized_deviance(const Vector& u) const;
  // wts_ and zwork_ = eta - base + (y - mu)/mu_eta at eta_ (from the last update_mu).
  void working();
  double family_aic() const;

  // The current Laplace evaluation (see current_stage()): its point (theta, and beta for
  // stage 2), objective and, once computed, gradient.
  struct CurrentEvaluation {
    int stage = 0;
    Vector x;
    double obj = 0.0;
    bool has_gradient = false;
    Vector gradient;
  };
  CurrentEvaluation last_;
  // Whether the current evaluation is of `stage` at (theta, beta) (beta: stage 2 only).
  bool is_current(int stage, const double* theta, const double* beta) const;
  void set_current(int stage, const double* theta, const double* beta, double obj);

  Index n_, p_;
  // The rows grouped by the first term's levels (row_order.hpp). Everything below, and every
  // n-vector of the state, is in that order; only eta_start and the accessors of eta, mu and
  // the working weights translate from and to the input's order.
  OrderedRows rows_;
  const double* X_;
  const double* y_;
  const double* pw_;
  const double* off_;
  std::vector<TermData> terms_;
  Family fam_;
  Problem prob_;
  // The mode's sensitivity at the last gradient (stage 1: d(u, beta)/dtheta; stage 2:
  // du/d(theta, beta)), to start PIRLS at nearby points from a first-order prediction.
  Matrix sens_;
  Vector sens_phi_, sens_u_, sens_b_;
  int sens_stage_ = 0;
  bool predict_start(int stage, const Vector& phi);
  // gradient()'s work arrays, kept between calls so that an evaluation allocates nothing.
  struct GradientWork {
    Vector h, col, Ztr, tmp;
    Matrix T, Rhs;
    Eigen::ArrayXd r, Wd;
    RowMatrix G, WG, ZtWG, B, D;
  };
  GradientWork grad_work_;
  // Stage 1's converged Newton run: its point (theta) and curvature model, from which stage 2
  // at that theta starts its own (see stage2_start_hessian()).
  Vector stage1_newton_x_;
  Matrix stage1_newton_hessian_;
  // Stage 2's starting curvature at x0 = (theta1, beta1), the stage-1 optimum, when the
  // current evaluation is stage 1's there: stage 1's curvature in theta (profiled over beta),
  // 2 (RX'RX) in beta (the fixed-effects block of the Laplace Hessian at fixed theta), none
  // between them; false otherwise (stage 2 then takes forward differences).
  bool stage2_start_hessian(const Vector& x0, Matrix& H);
  Vector u_warm_;  // mode of the last successful stage-2 evaluation
  Vector u1_warm_, b1_warm_;  // mode of the last successful stage-1 evaluation
  Vector eta1_start_;         // the last starting eta given to stage 1
  Vector theta_;              // theta of the last successful evaluation
  int evaluated_stage_ = 0;
  Vector beta_, u_, eta_, mu_, mueta_, wts_, zwork_, fixed_, b_;
  // PIRLS workspace, sized once: the next step's working weights and response (from
  // update_mu), the candidate eta, zeros (base without offset), the candidate mode.
  Vector wts_next_, zwork_next_, eta_new_, zeros_, u_new_, b_new_, bvec_, u_old_, b_old_;
  const double* base_ = nullptr;  // eta's part that the current PIRLS does not solve for
  bool next_ready_ = false;       // wts_next_ / zwork_next_ belong to eta_
  double devsum_ = 0, aic_ = 0, ldL2_ = 0, aic_const_ = 0, dev_const_ = 0;
  bool aic_const_valid_ = false;
  int iters_ = 0;
};

}  // namespace mixedfit
