# Frozen lme4 confidence intervals and parametric-bootstrap quantiles for mixedfit's
# inference tests (tests/test_confint.py, tests/test_bootstrap.py).
#
#   Rscript tests/reference/make_confint_reference.R
#
# Data are read back from tests/reference/data (the CSVs make_reference.R wrote), with the
# factor levels recorded in lme4_lmm.json / lme4_glmm.json, so R and Python fit the same rows.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

here <- "tests/reference"
meta <- c(fromJSON(file.path(here, "lme4_lmm.json"), simplifyVector = FALSE)$datasets,
          fromJSON(file.path(here, "lme4_glmm.json"), simplifyVector = FALSE)$datasets)

read_data <- function(name) {
  m <- meta[[name]]
  df <- read.csv(file.path(here, m$file), stringsAsFactors = FALSE, na.strings = character(0))
  for (col in names(m$columns)) {
    spec <- m$columns[[col]]
    if (spec$type == "factor")
      df[[col]] <- factor(df[[col]], levels = unlist(spec$levels), ordered = isTRUE(spec$ordered))
  }
  df
}

interval_json <- function(ci) {
  lapply(seq_len(nrow(ci)), function(i)
    list(parm = rownames(ci)[i],
         lower = if (is.na(ci[i, 1])) NULL else ci[i, 1],
         upper = if (is.na(ci[i, 2])) NULL else ci[i, 2]))
}

timed <- function(expr) {
  warns <- character(0)
  t0 <- proc.time()[["elapsed"]]
  val <- withCallingHandlers(expr, warning = function(w) {
    warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  list(value = val, seconds = proc.time()[["elapsed"]] - t0, warnings = unique(warns))
}

run_model <- function(id, call_str, data_name, levels = c(0.95, 0.8)) {
  cat(id, "\n")
  env <- new.env()
  assign(data_name, read_data(data_name), envir = env)
  fit <- eval(parse(text = call_str), envir = env)
  out <- list(call = call_str, data = data_name, profile = list(), wald = list())
  for (lev in levels) {
    key <- format(lev)
    pr <- timed(confint(fit, method = "profile", level = lev, oldNames = TRUE))
    wd <- confint(fit, method = "Wald", level = lev, oldNames = TRUE)
    out$profile[[key]] <- list(intervals = interval_json(pr$value), seconds = pr$seconds,
                               warnings = pr$warnings)
    out$wald[[key]] <- interval_json(wd)
  }
  out
}

models <- list(
  sleepstudy_reml = run_model("sleepstudy_reml",
    "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = TRUE)", "sleepstudy"),
  sleepstudy_ml = run_model("sleepstudy_ml",
    "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)", "sleepstudy"),
  dyestuff = run_model("dyestuff", "lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff)", "Dyestuff"),
  dyestuff2 = run_model("dyestuff2", "lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff2)", "Dyestuff2"),
  penicillin = run_model("penicillin",
    "lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = Penicillin)", "Penicillin"),
  cbpp = run_model("cbpp",
    "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial)",
    "cbpp", levels = 0.95),
  grouseticks = run_model("grouseticks",
    "glmer(TICKS ~ YEAR + (1 | BROOD), data = grouseticks, family = poisson)",
    "grouseticks", levels = 0.95)
)

# Parametric bootstrap (bootMer's default: new random effects, use.u = FALSE) of sleepstudy.
sleepstudy <- read_data("sleepstudy")
fit <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy)
stat <- function(f) {
  vc <- as.data.frame(VarCorr(f), order = "lower.tri")
  c(fixef(f), setNames(vc$sdcor, c(".sig01", ".sig02", ".sig03", ".sigma")))
}
nsim <- 4000
set.seed(20261202)
bt <- timed(bootMer(fit, stat, nsim = nsim, use.u = FALSE, type = "parametric"))
probs <- c(0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
t <- bt$value$t
boot <- list(call = "bootMer(lmer(Reaction ~ Days + (Days | Subject), sleepstudy), nsim = 4000)",
             nsim = nsim, seconds = bt$seconds, probs = probs,
             n_failed = sum(!stats::complete.cases(t)),
             n_singular = sum(t[, ".sig01"] < 1e-8 | t[, ".sig03"] < 1e-8),
             original = as.list(bt$value$t0),
             quantiles = lapply(setNames(colnames(t), colnames(t)),
                                function(nm) unname(quantile(t[, nm], probs, na.rm = TRUE))),
             mean = as.list(colMeans(t, na.rm = TRUE)),
             sd = as.list(apply(t, 2, sd, na.rm = TRUE)))

res <- list(provenance = list(R = R.version.string,
                              lme4 = as.character(packageVersion("lme4")),
                              date_utc = format(Sys.time(), tz = "UTC")),
            models = models, bootstrap_sleepstudy = boot)
writeLines(toJSON(res, auto_unbox = TRUE, digits = 15, pretty = TRUE, null = "null"),
           file.path(here, "lme4_confint.json"))
