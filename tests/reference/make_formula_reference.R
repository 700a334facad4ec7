## lme4 reference values for R formula semantics: I() with ^, factor(), as.numeric(), log(),
## sqrt(), exp(), poly(), bs(), offset(), %in%, -1 / +0, ordered factors (contr.poly),
## C() with contr.helmert / contr.sum, and
## stateful transforms on data with missing values (R's model-frame order).
##
## Run from anywhere (paths are resolved relative to this file):
##     Rscript tests/reference/make_formula_reference.R
##
## Writes
##     data/sleepstudy_na.csv   sleepstudy with some missing Reaction and Days values
##     lme4_formulas.json       one record per formula: lme4's column names, fixed effects,
##                              theta, sigma and criterion
##
## Data are read back from the CSVs in data/ (as tests/_reference.py reads them), so R and
## Python see the same numbers.  Needs lme4, splines, jsonlite.

suppressPackageStartupMessages({
  library(lme4)
  library(splines)
  library(jsonlite)
})
options(width = 80, digits = 7, warn = 1, stringsAsFactors = FALSE)

script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
ref_dir <- dirname(script_path)
data_dir <- file.path(ref_dir, "data")

read_sleepstudy <- function(file = "sleepstudy.csv") {
  d <- read.csv(file.path(data_dir, file))
  d$Subject <- factor(d$Subject, levels = unique(as.character(sort(as.integer(d$Subject)))))
  d
}
read_cake <- function() {
  d <- read.csv(file.path(data_dir, "cake.csv"))
  d$replicate <- factor(d$replicate, levels = as.character(1:15))
  d$recipe <- factor(d$recipe, levels = c("A", "B", "C"))
  d$temperature <- factor(d$temperature, levels = as.character(seq(175, 225, by = 10)),
                          ordered = TRUE)
  d
}
read_cbpp <- function() {
  d <- read.csv(file.path(data_dir, "cbpp.csv"))
  d$herd <- factor(d$herd, levels = as.character(1:15))
  d$period <- factor(d$period, levels = as.character(1:4))
  d
}

## sleepstudy with missing values: Reaction missing on every 7th row, Days on rows 5 and 95.
## R's model frame evaluates scale(Days) on all non-missing Days (178 rows) before dropping
## the incomplete rows, so the fit differs from scaling the complete rows only.
ss <- read_sleepstudy()
ss_na <- ss
ss_na$Reaction[seq(7, nrow(ss_na), by = 7)] <- NA
ss_na$Days[c(5, 95)] <- NA
write.csv(ss_na, file.path(data_dir, "sleepstudy_na.csv"), row.names = FALSE, na = "")

datasets <- list(
  sleepstudy = read_sleepstudy(),
  sleepstudy_na = read_sleepstudy("sleepstudy_na.csv"),
  cake = read_cake(),
  cbpp = read_cbpp()
)

models <- list(
  list(id = "I_power", data = "sleepstudy",
       formula = "Reaction ~ Days + I(Days^2) + (1 | Subject)"),
  list(id = "interaction_power", data = "cake",
       formula = "angle ~ (recipe + temp)^2 + (1 | replicate)"),
  list(id = "factor_numeric", data = "sleepstudy",
       formula = "Reaction ~ factor(Days) + (1 | Subject)"),
  list(id = "math_functions", data = "sleepstudy",
       formula = "log(Reaction) ~ sqrt(Days) + exp(Days/10) + (1 | Subject)"),
  list(id = "as_numeric_offset", data = "cake",
       formula = "angle ~ as.numeric(recipe) + offset(temp/10) + (1 | replicate)"),
  list(id = "poly", data = "sleepstudy",
       formula = "Reaction ~ poly(Days, 3) + (poly(Days, 1) | Subject)"),
  list(id = "bs", data = "sleepstudy",
       formula = "Reaction ~ bs(Days, df = 4) + (1 | Subject)"),
  list(id = "ordered_factor", data = "cake",
       formula = "angle ~ recipe * temperature + (1 | recipe:replicate)"),
  list(id = "contrasts", data = "cake",
       formula = "angle ~ C(recipe, contr.helmert) + C(temperature, contr.sum) + (1 | replicate)"),
  list(id = "in_operator", data = "cake",
       formula = "angle ~ recipe + temp %in% recipe + (1 | replicate)"),
  list(id = "minus_one", data = "sleepstudy",
       formula = "Reaction ~ Days - 1 + (1 | Subject)"),
  list(id = "plus_zero", data = "cake",
       formula = "angle ~ 0 + recipe + temp + (1 | replicate)"),
  list(id = "scale_with_missing", data = "sleepstudy_na",
       formula = "Reaction ~ scale(Days) + (1 | Subject)"),
  list(id = "poly_with_missing_response", data = "sleepstudy_na",
       formula = "Reaction ~ poly(Days, 2) + (1 | Subject)", drop_days_na = TRUE),
  list(id = "glmer_log_offset", data = "cbpp", family = "poisson",
       formula = "incidence ~ period + offset(log(size)) + (1 | herd)")
)

fit_record <- function(m) {
  d <- datasets[[m$data]]
  if (isTRUE(m$drop_days_na)) d <- d[!is.na(d$Days), ]  # R's poly() refuses missing values
  f <- as.formula(m$formula)
  if (is.null(m$family)) {
    fit <- lmer(f, data = d, REML = TRUE)
    criterion <- unname(getME(fit, "devcomp")$cmp["REML"])
  } else {
    fit <- glmer(f, data = d, family = m$family)
    criterion <- unname(-2 * as.numeric(logLik(fit)))
  }
  list(
    formula = m$formula,
    data = m$data,
    rows_dropped_before_fit = isTRUE(m$drop_days_na),
    family = if (is.null(m$family)) NULL else m$family,
    reml = is.null(m$family),
    nobs = nobs(fit),
    fixef_names = I(names(fixef(fit))),
    fixef = I(unname(fixef(fit))),
    se = I(unname(sqrt(diag(as.matrix(vcov(fit)))))),
    theta = I(unname(getME(fit, "theta"))),
    sigma = sigma(fit),
    criterion = criterion,
    ranef_columns = unname(lapply(ranef(fit), function(r) I(colnames(r))))
  )
}

out <- list(
  provenance = list(
    generator = "tests/reference/make_formula_reference.R",
    command = "Rscript tests/reference/make_formula_reference.R",
    R_version = R.version.string,
    lme4_version = as.character(packageVersion("lme4")),
    date_utc = format(Sys.time(), tz = "UTC", usetz = TRUE)
  ),
  notes = paste(
    "criterion: REML criterion (lmer) or -2 log-likelihood (glmer).",
    "sleepstudy_na: NA is an empty field in the CSV.",
    "poly_with_missing_response: R's poly() refuses missing values, so rows with missing",
    "Days are removed before the call (rows_dropped_before_fit)."
  ),
  models = setNames(lapply(models, fit_record), vapply(models, `[[`, "", "id"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = 15, pretty = TRUE, null = "null", na = "null"),
           file.path(ref_dir, "lme4_formulas.json"))
cat("wrote", file.path(ref_dir, "lme4_formulas.json"), "\n")
