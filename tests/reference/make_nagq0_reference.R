# lme4 reference values for nAGQ = 0 fits (glmer's first stage only: beta estimated inside
# PIRLS). Reads the data sets that make_reference.R wrote (tests/reference/data/*.csv, with
# the column types and factor level orders recorded in lme4_glmm.json) and writes
# tests/reference/lme4_nagq0.json.
#
#     Rscript tests/reference/make_nagq0_reference.R
#
# Recorded per model: theta, fixef, ranef (conditional modes b, per grouping factor, level and
# term), coef (fixef + ranef per level), fitted values and the linear predictor
# (predict(type = "link")), and predictions for a few rows of new data (predict(newdata)).

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
options(warn = 1, stringsAsFactors = FALSE)

script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
ref_dir <- dirname(script_path)
meta <- fromJSON(file.path(ref_dir, "lme4_glmm.json"), simplifyVector = FALSE)$datasets

read_dataset <- function(name) {
  m <- meta[[name]]
  cls <- vapply(m$columns, function(ci) switch(ci$type, factor = "character",
                                              character = "character", integer = "integer",
                                              numeric = "numeric"), "")
  df <- utils::read.csv(file.path(ref_dir, m$file), colClasses = cls, check.names = FALSE)
  for (nm in names(df)) {
    ci <- m$columns[[nm]]
    if (ci$type == "factor")
      df[[nm]] <- factor(df[[nm]], levels = unlist(ci$levels), ordered = isTRUE(ci$ordered))
  }
  df
}

ranef_json <- function(fit) {
  re <- ranef(fit)
  lapply(re, function(d) list(levels = I(rownames(d)), terms = I(colnames(d)),
                              values = lapply(as.list(d), I)))
}

coef_json <- function(fit) {
  cf <- coef(fit)
  lapply(cf, function(d) list(levels = I(rownames(d)), terms = I(colnames(d)),
                              values = lapply(as.list(d), I)))
}

models <- list(
  cbpp = list(
    data = "cbpp",
    call = "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d, family = binomial, nAGQ = 0)",
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
    family = "binomial",
    newdata_rows = c(1, 5, 20, 40)),
  grouseticks = list(
    data = "grouseticks",
    call = "glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), data = d, family = poisson, nAGQ = 0)",
    formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
    family = "poisson",
    newdata_rows = c(1, 50, 200, 400))
)

out <- list()
for (id in names(models)) {
  spec <- models[[id]]
  d <- read_dataset(spec$data)
  fit <- eval(parse(text = spec$call)[[1]])
  nd <- d[spec$newdata_rows, , drop = FALSE]
  out[[id]] <- list(
    id = id, call = spec$call, formula = spec$formula, data = spec$data,
    family = spec$family, nAGQ = 0L,
    theta = I(unname(getME(fit, "theta"))),
    fixef = as.list(fixef(fit)),
    ranef = ranef_json(fit),
    coef = coef_json(fit),
    eta = I(unname(predict(fit, type = "link"))),
    fitted = I(unname(fitted(fit))),
    newdata_rows_1based = I(spec$newdata_rows),
    newdata_link = I(unname(predict(fit, newdata = nd, type = "link"))),
    newdata_response = I(unname(predict(fit, newdata = nd, type = "response"))),
    newdata_link_fixed_only = I(unname(predict(fit, newdata = nd, type = "link", re.form = NA)))
  )
}

res <- list(
  provenance = list(
    generator = "tests/reference/make_nagq0_reference.R",
    command = "Rscript tests/reference/make_nagq0_reference.R",
    R_version = R.version.string,
    lme4_version = as.character(utils::packageVersion("lme4")),
    date_utc = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"),
    number_format = "JSON numbers carry 15 significant digits"),
  models = out)
writeLines(toJSON(res, auto_unbox = TRUE, digits = I(15), pretty = TRUE, null = "null"),
           file.path(ref_dir, "lme4_nagq0.json"))
cat("wrote", file.path(ref_dir, "lme4_nagq0.json"), "\n")
