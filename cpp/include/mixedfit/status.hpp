// Status codes reported by the numerical core. The core never throws for numerical trouble:
// it returns a Status, and the Python bindings turn a bad status into an exception.
#pragma once

namespace mixedfit {

enum class Status : int {
  Ok = 0,
  NonFiniteInput = 1,       // theta, beta or data contained NaN / Inf
  BadDimension = 2,         // a vector of the wrong length
  NotPositiveDefinite = 3,  // a Cholesky factorization failed (e.g. aliased fixed effects)
  NotEvaluated = 4,         // a result was requested before the objective was evaluated
  PirlsDiverged = 5,        // PIRLS could not reduce the penalized deviance
  PirlsMaxIter = 6,         // PIRLS hit its iteration limit
  InvalidMean = 7,          // the mean left the family's domain (e.g. mu <= 0 for Poisson)
  Interrupted = 8,          // the user asked to stop (interrupt_requested(), e.g. Ctrl-C)
  NoRows = 9,               // the method needs the data rows; the problem has cross products only
  OutsidePattern = 10,      // a cross-product entry lies outside the declared level pattern
  SparseRestUnsupported = 11,  // a method without an implementation for a sparse rest block
  TooLarge = 12,            // the model's factorization would not fit in memory
};

inline const char* status_message(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::NonFiniteInput: return "non-finite value in the parameters or data";
    case Status::BadDimension: return "a parameter vector has the wrong length";
    case Status::NotPositiveDefinite:
      return "a Cholesky factor is not positive definite (are fixed-effect columns collinear?)";
    case Status::NotEvaluated: return "the objective has not been evaluated yet";
    case Status::PirlsDiverged:
      return "PIRLS failed to reduce the penalized deviance (step-halving exhausted)";
    case Status::PirlsMaxIter: return "PIRLS did not converge within its iteration limit";
    case Status::InvalidMean: return "the fitted mean left the family's valid range";
    case Status::Interrupted: return "interrupted";
    case Status::NoRows:
      return "this needs the data rows, and the problem was built from cross products alone";
    case Status::OutsidePattern:
      return "a cross-product entry pairs levels that the co-occurrence pattern does not list";
    case Status::SparseRestUnsupported:
      return "not available for a model whose random effects outside the first term are too "
             "many for a dense factor (their block is factored as a sparse matrix)";
    case Status::TooLarge: return "the model's factorization would not fit in memory";
  }
  return "unknown status";
}

}  // namespace mixedfit
