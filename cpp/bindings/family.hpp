// The GLM family as the bindings take it: codes checked once for GlmmProblem and Family.
#pragma once

#include "common.hpp"
#include "mixedfit/glmm.hpp"

namespace mixedfit_py {

// The family for codes (family: 0 binomial, 1 poisson, 2 Gamma, 3 inverse.gaussian,
// 4 gaussian, 5 negative binomial with shape nb_theta; link: 0 identity, 1 log, 2 logit,
// 3 probit, 4 cloglog, 5 cauchit, 6 inverse, 7 sqrt, 8 1/mu^2); ValueError for others.
mixedfit::Family make_family(int family, int link, double nb_theta);

}  // namespace mixedfit_py
