# Evaluates lme4's own Laplace deviance function (glmer(..., negative.binomial(theta),
# devFunOnly = TRUE) with PIRLS converged tightly, tolPwrss = 1e-12) at mixedfit's glmer_nb
# optimum and at lme4's glmer.nb optimum, for the three cases of lme4_negbin.json. A manual
# check, not a test input (its input depends on the Python code under test). Make the input with
#
#   PYTHONPATH=python python -c "import json, sys; sys.path.insert(0, 'tests');
#   from test_negbin import _data, REF; import mixedfit
#   fits = {c: mixedfit.glmer_nb(REF[c]['formula'], _data(c)) for c in ('epil', 'grouseticks', 'sim_crossed')}
#   json.dump({c: dict(nb_theta=f.nb_theta, theta=list(map(float, f.theta)),
#              beta=list(map(float, f.beta)), loglik=f.loglik) for c, f in fits.items()},
#             open('negbin_mixedfit.json', 'w'))"
#
# then run from the repository root:  Rscript tests/reference/check_negbin_optimum.R negbin_mixedfit.json
suppressPackageStartupMessages({library(lme4); library(MASS); library(jsonlite)})
mine <- fromJSON(commandArgs(TRUE)[1]); ref <- fromJSON("tests/reference/lme4_negbin.json")
epil <- read.csv("tests/reference/data/epil.csv"); epil$subject <- factor(epil$subject)
ticks <- read.csv("tests/reference/data/grouseticks.csv")
for (v in c("BROOD", "INDEX", "LOCATION", "YEAR")) ticks[[v]] <- factor(ticks[[v]])
sim <- read.csv("tests/reference/data/sim_negbin_crossed.csv"); sim$A <- factor(sim$A); sim$B <- factor(sim$B)
dl <- list(epil = epil, grouseticks = ticks, sim_crossed = sim)
for (nm in names(dl)) {
  fml <- as.formula(ref[[nm]]$formula); m <- mine[[nm]]; r <- ref[[nm]]$glmer_nb
  dev_at <- function(th, par) {
    f <- suppressWarnings(glmer(fml, data = dl[[nm]], family = negative.binomial(th), devFunOnly = TRUE,
               control = glmerControl(tolPwrss = 1e-12)))
    f(par)
  }
  d_mine <- dev_at(m$nb_theta, c(m$theta, m$beta))
  d_lme4 <- dev_at(r$nb_theta, c(r$theta, r$beta))
  cat(sprintf("%s: lme4 objective (-2 logLik, tight PIRLS) at mixedfit's params %.6f, at lme4's glmer.nb params %.6f, diff %.2e; mixedfit's own %.6f\n",
              nm, d_mine, d_lme4, d_lme4 - d_mine, -2 * m$loglik))
}
