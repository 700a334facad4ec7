## Reference values from lmerTest (Satterthwaite) and pbkrtest (Kenward-Roger) for
## mixedfit's degrees-of-freedom tests.
##
##     Rscript tests/reference/make_lmertest_reference.R
##
## Writes lmertest.json next to this file. Reads the data sets written by
## make_reference.R (data/*.csv, with the factor levels recorded in lme4_lmm.json), so
## R and Python fit exactly the same numbers. Needs lme4, lmerTest, pbkrtest, jsonlite.
##
## Per model: lmerTest's summary() coefficients with Satterthwaite and (REML fits)
## Kenward-Roger df, anova() of types 1, 2 and 3 with both methods, ranova(), and the
## printed summary (width 80) for golden-text tests.

suppressPackageStartupMessages({
  library(lmerTest)
  library(jsonlite)
})
options(width = 80, digits = 7, warn = 1, stringsAsFactors = FALSE)

script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
ref_dir <- dirname(script_path)
lmm_json <- fromJSON(file.path(ref_dir, "lme4_lmm.json"), simplifyVector = FALSE)

read_dataset <- function(name) {
  meta <- lmm_json$datasets[[name]]
  df <- read.csv(file.path(ref_dir, meta$file), stringsAsFactors = FALSE,
                 colClasses = "character")
  for (col in names(meta$columns)) {
    spec <- meta$columns[[col]]
    df[[col]] <- switch(spec$type,
      factor = factor(df[[col]], levels = unlist(spec$levels), ordered = isTRUE(spec$ordered)),
      integer = as.integer(df[[col]]),
      numeric = as.numeric(df[[col]]),
      df[[col]])
  }
  df
}

## Unbalanced variants: drop every row whose 1-based number is 2 modulo `every`.
drop_rows <- function(df, every) if (is.null(every)) df else df[seq_len(nrow(df)) %% every != 2, ]

models <- list(
  list(id = "sleepstudy_reml", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE),
  list(id = "sleepstudy_ml", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)", REML = FALSE),
  list(id = "sleepstudy_uncorr", data = "sleepstudy", formula = "Reaction ~ Days + (Days || Subject)", REML = TRUE),
  list(id = "sleepstudy_unbalanced", data = "sleepstudy", drop_every = 7L, formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE),
  list(id = "sleepstudy_weights", data = "sleepstudy_wo", weights = "w", formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE),
  list(id = "dyestuff2_singular", data = "Dyestuff2", formula = "Yield ~ 1 + (1 | Batch)", REML = TRUE),
  list(id = "penicillin", data = "Penicillin", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", REML = TRUE),
  list(id = "penicillin_sample_fixed", data = "Penicillin", formula = "diameter ~ sample + (1 | plate)", REML = TRUE),
  list(id = "pastes", data = "Pastes", formula = "strength ~ 1 + (1 | batch/cask)", REML = TRUE),
  list(id = "cake", data = "cake", formula = "angle ~ recipe * temp + (1 | recipe:replicate)", REML = TRUE),
  list(id = "cake_ml", data = "cake", formula = "angle ~ recipe * temp + (1 | recipe:replicate)", REML = FALSE),
  list(id = "cake_unbalanced", data = "cake", drop_every = 5L, formula = "angle ~ recipe * temp + (1 | recipe:replicate)", REML = TRUE),
  list(id = "cake_unbalanced_two_terms", data = "cake", drop_every = 5L, formula = "angle ~ recipe * temp + (1 | replicate) + (1 | recipe:replicate)", REML = TRUE),
  list(id = "cake_unbalanced_temperature", data = "cake", drop_every = 5L, formula = "angle ~ recipe + temperature + (1 | replicate)", REML = TRUE),
  list(id = "cake_temperature_factor", data = "cake", formula = "angle ~ recipe * temperature + (1 | recipe:replicate)", REML = TRUE),
  list(id = "shrinkage_unbalanced", data = "sim_shrinkage_unbalanced", formula = "y ~ x + (x | cluster)", REML = TRUE)
)

table_json <- function(tab) {
  tab <- as.data.frame(tab, check.names = FALSE)
  ## I(): keep length-one vectors as JSON arrays
  list(rownames = I(rownames(tab)), columns = lapply(as.list(tab), I))
}

anova_json <- function(fit, type, ddf) {
  a <- anova(fit, type = type, ddf = ddf)
  out <- table_json(a)
  out$heading <- attr(a, "heading")
  out
}

one_model <- function(m) {
  df <- drop_rows(read_dataset(m$data), m$drop_every)
  rownames(df) <- NULL
  fit <- if (is.null(m$weights)) {
    lmer(as.formula(m$formula), data = df, REML = m$REML)
  } else {
    df$.w <- df[[m$weights]]
    lmer(as.formula(m$formula), data = df, REML = m$REML, weights = .w)
  }
  rec <- list(id = m$id, data = m$data, drop_every = m$drop_every, weights = m$weights,
              formula = m$formula, REML = m$REML, nobs = nobs(fit),
              theta = I(unname(getME(fit, "theta"))), sigma = sigma(fit),
              fixef = as.list(fixef(fit)))
  ## lmerTest's numerical derivatives (numDeriv) at lme4's optimum: the covariance of
  ## varpar = (theta, sigma) and the Jacobian of vcov(beta), one p x p matrix per varpar
  rec$vcov_varpar <- fit@vcov_varpar
  rec$jacobian <- lapply(fit@Jac_list, function(J) J)
  rec$coef_satterthwaite <- table_json(summary(fit, ddf = "Satterthwaite")$coefficients)
  rec$anova_satterthwaite <- lapply(setNames(1:3, c("1", "2", "3")),
                                    function(t) anova_json(fit, t, "Satterthwaite"))
  if (m$REML && is.null(m$weights)) {
    rec$coef_kenward_roger <- table_json(summary(fit, ddf = "Kenward-Roger")$coefficients)
    rec$anova_kenward_roger <- lapply(setNames(1:3, c("1", "2", "3")),
                                      function(t) anova_json(fit, t, "Kenward-Roger"))
  }
  rv <- ranova(fit)
  rec$ranova <- table_json(rv)
  rec$ranova$heading <- attr(rv, "heading")
  rec$summary_satterthwaite_text <- paste(capture.output(print(summary(fit))), collapse = "\n")
  if (!is.null(rec$coef_kenward_roger))
    rec$summary_kenward_roger_text <- paste(capture.output(print(summary(fit, ddf = "Kenward-Roger"))),
                                            collapse = "\n")
  rec
}

out <- list(
  provenance = list(
    generator = "tests/reference/make_lmertest_reference.R",
    R_version = R.version.string,
    lme4_version = as.character(packageVersion("lme4")),
    lmerTest_version = as.character(packageVersion("lmerTest")),
    pbkrtest_version = as.character(packageVersion("pbkrtest")),
    numDeriv_version = as.character(packageVersion("numDeriv")),
    date_utc = format(Sys.time(), tz = "UTC", usetz = TRUE)
  ),
  models = setNames(lapply(models, one_model), vapply(models, `[[`, "", "id"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = 15, null = "null", na = "null", pretty = TRUE),
           file.path(ref_dir, "lmertest.json"))
cat("wrote", file.path(ref_dir, "lmertest.json"), "\n")
