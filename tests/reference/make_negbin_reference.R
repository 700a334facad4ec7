# Negative binomial GLMMs: lme4's glmer.nb and glmmTMB's nbinom2, for tests/test_negbin.py.
#
# Run from the repository root:  Rscript tests/reference/make_negbin_reference.R
# Writes tests/reference/lme4_negbin.json and the data CSVs epil.csv and sim_negbin_crossed.csv
# (grouseticks.csv is make_reference.R's). Each model is fitted to its data as read back from
# the CSV. Elapsed times of glmer.nb are recorded for information only (tests never use them).
suppressPackageStartupMessages({
  library(lme4)
  library(MASS)
  library(glmmTMB)
  library(jsonlite)
})

data(epil, package = "MASS")
write.csv(epil[, c("y", "trt", "base", "age", "V4", "subject", "period", "lbase", "lage")],
          "tests/reference/data/epil.csv", row.names = FALSE)
set.seed(20261202)
nA <- 30; nB <- 20
sim <- expand.grid(A = seq_len(nA), B = seq_len(nB))
sim <- sim[sample(nrow(sim), 450), ]
sim$x <- round(rnorm(nrow(sim)), 4)
eta <- 0.8 + 0.5 * sim$x + rnorm(nA, sd = 0.6)[sim$A] + rnorm(nB, sd = 0.4)[sim$B]
sim$y <- rnbinom(nrow(sim), mu = exp(eta), size = 1.5)
write.csv(sim[, c("y", "x", "A", "B")], "tests/reference/data/sim_negbin_crossed.csv",
          row.names = FALSE)

epil <- read.csv("tests/reference/data/epil.csv")
epil$subject <- factor(epil$subject)
ticks <- read.csv("tests/reference/data/grouseticks.csv")
for (v in c("BROOD", "INDEX", "LOCATION", "YEAR")) ticks[[v]] <- factor(ticks[[v]])
sim <- read.csv("tests/reference/data/sim_negbin_crossed.csv")
sim$A <- factor(sim$A); sim$B <- factor(sim$B)

cases <- list(
  epil = list(formula = "y ~ lbase * trt + lage + V4 + (1 | subject)", data = epil,
              file = "epil.csv"),
  grouseticks = list(formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
                     data = ticks, file = "grouseticks.csv"),
  sim_crossed = list(formula = "y ~ x + (1 | A) + (1 | B)", data = sim,
                     file = "sim_negbin_crossed.csv")
)

lme4_entry <- function(fit, elapsed) {
  list(nb_theta = getME(fit, "glmer.nb.theta"), theta = unname(getME(fit, "theta")),
       beta = unname(fixef(fit)), names = names(fixef(fit)),
       loglik = as.numeric(logLik(fit)), df = attr(logLik(fit), "df"), aic = AIC(fit),
       se = unname(sqrt(diag(as.matrix(vcov(fit))))),
       ranef1 = unname(ranef(fit)[[1]][, 1]),
       condsd1 = unname(sqrt(attr(ranef(fit, condVar = TRUE)[[1]], "postVar")[1, 1, ])),
       family = family(fit)$family,
       messages = as.list(fit@optinfo$conv$lme4$messages), elapsed = elapsed)
}

tmb_entry <- function(fit) {
  vc <- VarCorr(fit)$cond
  list(nb_theta = sigma(fit), beta = unname(fixef(fit)$cond),
       sd = unname(sapply(vc, function(m) attr(m, "stddev"))),
       loglik = as.numeric(logLik(fit)),
       se = unname(sqrt(diag(vcov(fit)$cond))))
}

out <- list(provenance = list(r = R.version.string, lme4 = as.character(packageVersion("lme4")),
                              glmmTMB = as.character(packageVersion("glmmTMB")),
                              MASS = as.character(packageVersion("MASS")),
                              date_utc = format(Sys.time(), tz = "UTC")))
for (nm in names(cases)) {
  cs <- cases[[nm]]
  fml <- as.formula(cs$formula)
  elapsed <- system.time(fit <- suppressWarnings(glmer.nb(fml, data = cs$data)))[["elapsed"]]
  # lme4's Laplace objective at a fixed NB theta (its own optimum's): the same function
  # mixedfit minimizes for each theta, so the two can be compared point by point.
  th <- getME(fit, "glmer.nb.theta")
  fixed <- glmer(fml, data = cs$data, family = negative.binomial(th))
  # lme4's PIRLS stops at a relative change of 1e-7 in the penalized deviance (tolPwrss), which
  # for the non-canonical NB log link leaves its objective ~1e-4 above the Laplace value at the
  # exact mode; the same deviance function with tolPwrss = 1e-12 gives that value.
  tight <- glmer(fml, data = cs$data, family = negative.binomial(th), devFunOnly = TRUE,
                 control = glmerControl(tolPwrss = 1e-12))
  at_lme4 <- tight(c(getME(fixed, "theta"), fixef(fixed)))
  tmb <- glmmTMB(fml, data = cs$data, family = nbinom2)
  out[[nm]] <- list(formula = cs$formula, data = cs$file, glmer_nb = lme4_entry(fit, elapsed),
                    fixed_theta = list(nb_theta = th, theta = unname(getME(fixed, "theta")),
                                       beta = unname(fixef(fixed)),
                                       loglik = as.numeric(logLik(fixed)),
                                       deviance_tight_at_optimum = at_lme4),
                    glmmTMB = tmb_entry(tmb))
}
# The Poisson fit of epil, for the likelihood-ratio test of theta = infinity.
pois <- glmer(y ~ lbase * trt + lage + V4 + (1 | subject), data = epil, family = poisson)
out$epil$poisson <- list(loglik = as.numeric(logLik(pois)))
writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE, digits = NA, na = "null", null = "null"),
           "tests/reference/lme4_negbin.json")
