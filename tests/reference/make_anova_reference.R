## lme4's anova() table for nested sleepstudy fits, for mixedfit's tests.
##
##     Rscript tests/reference/make_anova_reference.R
##
## Writes lme4_anova.json next to this file, from data/sleepstudy.csv (written by
## make_reference.R). Deterministic apart from the date.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
options(width = 80, warn = 1, stringsAsFactors = FALSE)

script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
ref_dir <- dirname(script_path)
sleepstudy <- read.csv(file.path(ref_dir, "data", "sleepstudy.csv"))
sleepstudy$Subject <- factor(sleepstudy$Subject)

one_table <- function(id, fits, written) {
  msgs <- character(0)
  ## call anova() with the fits by name, as a user would, so lme4 names the rows
  call <- parse(text = sprintf("anova(%s)", paste(names(fits), collapse = ", ")))[[1]]
  env <- list2env(fits, parent = globalenv())
  tab <- withCallingHandlers(eval(call, env),
                             message = function(m) {
                               msgs <<- c(msgs, conditionMessage(m))
                               invokeRestart("muffleMessage")
                             })
  cols <- lapply(as.data.frame(tab), function(x) unname(x))
  list(id = id, formulas = unname(written), messages = I(trimws(msgs)),
       heading = attr(tab, "heading"), row_order = match(rownames(tab), names(fits)),
       columns = cols, printed = paste(capture.output(print(tab)), collapse = "\n"))
}

w1 <- "Reaction ~ Days + (1 | Subject)"
w2 <- "Reaction ~ Days + (Days | Subject)"
w0 <- "Reaction ~ 1 + (1 | Subject)"
fm1 <- lmer(as.formula(w1), sleepstudy)
fm2 <- lmer(as.formula(w2), sleepstudy)
fm0_ml <- lmer(as.formula(w0), sleepstudy, REML = FALSE)
fm1_ml <- lmer(as.formula(w1), sleepstudy, REML = FALSE)

tables <- list(
  one_table("reml_pair", list(fm1 = fm1, fm2 = fm2), c(w1, w2)),
  ## given in decreasing size: lme4 sorts the rows by npar
  one_table("ml_three", list(fm2 = fm2, fm1_ml = fm1_ml, fm0_ml = fm0_ml), c(w2, w1, w0))
)

out <- list(
  provenance = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    date_utc = format(Sys.time(), tz = "UTC", usetz = TRUE)),
  tables = setNames(tables, vapply(tables, `[[`, "", "id"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = 15, pretty = TRUE, na = "null"),
           file.path(ref_dir, "lme4_anova.json"))
