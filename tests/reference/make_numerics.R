# lme4's fits of badly scaled data, for tests/test_numerics_reference.py.
#
# Run from the repository root:  Rscript tests/reference/make_numerics.R
# Writes tests/reference/lme4_numerics.json. Reads the data CSVs that make_reference.R wrote.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

sleep <- read.csv("tests/reference/data/sleepstudy.csv")
sleep$Subject <- factor(sleep$Subject)
ticks <- read.csv("tests/reference/data/grouseticks.csv")
for (v in c("BROOD", "INDEX", "LOCATION")) ticks[[v]] <- factor(ticks[[v]])
ticks$YEAR <- as.numeric(ticks$YEAR)  # numeric, unscaled: the user's mistake under test

lmm_entry <- function(fit, shift, scale) {
  list(shift = shift, scale = scale, theta = unname(getME(fit, "theta")),
       beta = unname(fixef(fit)), sigma = sigma(fit),
       reml_criterion = unname(REMLcrit(fit)),
       messages = as.list(fit@optinfo$conv$lme4$messages))
}

responses <- list()
for (case in list(c(0, 1), c(1e6, 1), c(1e8, 1), c(1e12, 1), c(0, 1e-12), c(0, 1e12))) {
  d <- sleep
  d$Reaction <- case[1] + case[2] * d$Reaction
  fit <- lmer(Reaction ~ Days + (Days | Subject), d)
  responses[[length(responses) + 1]] <- lmm_entry(fit, case[1], case[2])
}

gfit <- withCallingHandlers(
  glmer(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), ticks,
        family = poisson),
  warning = function(w) invokeRestart("muffleWarning"))
gb <- glmer(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), ticks,
            family = poisson, control = glmerControl(optimizer = "bobyqa"))

glmm_entry <- function(fit) {
  list(theta = unname(getME(fit, "theta")), beta = unname(fixef(fit)),
       loglik = as.numeric(logLik(fit)), se = unname(sqrt(diag(as.matrix(vcov(fit))))),
       messages = as.list(fit@optinfo$conv$lme4$messages))
}

out <- list(
  provenance = list(r = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    date_utc = format(Sys.time(), tz = "UTC")),
  sleepstudy_response = responses,
  grouseticks_unscaled = list(
    formula = "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
    default = glmm_entry(gfit), bobyqa = glmm_entry(gb))
)
writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE, digits = NA, na = "null", null = "null"),
           "tests/reference/lme4_numerics.json")
