# Evaluates lme4's own profiled criterion (lmer(..., devFunOnly = TRUE): REML or -2 log L) at
# mixedfit's optimum and at lme4's, for the LMMs of lme4_lmm.json. A manual check, not a test
# input (its input depends on the Python code under test): it shows, on R's objective, which
# of the two optimizers stopped lower where their printed digits differ. Make the input with
#
#   PYTHONPATH=python python tests/reference/lmm_optima.py > lmm_mixedfit.json
#
# then run from the repository root:  Rscript tests/reference/check_lmm_optimum.R lmm_mixedfit.json
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
mine <- fromJSON(commandArgs(TRUE)[1], simplifyVector = FALSE)
ref <- fromJSON("tests/reference/lme4_lmm.json", simplifyVector = FALSE)

read_dataset <- function(name) {
  meta <- ref$datasets[[name]]
  cls <- vapply(meta$columns, function(ci) switch(ci$type, factor = "character",
                character = "character", integer = "integer", numeric = "numeric"), "")
  df <- utils::read.csv(file.path("tests/reference", meta$file), colClasses = cls,
                        check.names = FALSE)
  for (nm in names(meta$columns)) {
    ci <- meta$columns[[nm]]
    if (ci$type == "factor")
      df[[nm]] <- factor(df[[nm]], levels = unlist(ci$levels), ordered = ci$ordered)
  }
  df
}

cat(sprintf("%-22s %-8s %18s %18s %10s  %s\n", "model", "method", "lme4 at lme4's",
            "lme4 at mixedfit's", "diff", "mixedfit's optimizer"))
for (id in names(mine)) {
  r <- ref$models[[id]]
  d <- read_dataset(r$data)
  args <- list(formula = as.formula(r$formula), data = d, REML = r$REML, devFunOnly = TRUE)
  if (!is.null(r$weights)) args$weights <- d[[r$weights]]
  if (!is.null(r$offset)) args$offset <- d[[r$offset]]
  devfun <- do.call(lmer, args)
  at_lme4 <- devfun(unlist(r$theta))
  at_mine <- devfun(unlist(mine[[id]]$theta))
  cat(sprintf("%-22s %-8s %18.10f %18.10f %10.2e  %s\n", id, if (r$REML) "REML" else "ML",
              at_lme4, at_mine, at_lme4 - at_mine, mine[[id]]$optimizer))
}
