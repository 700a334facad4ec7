## lme4's predictions with re.form selecting random-effect terms, for mixedfit's tests.
##
##     Rscript tests/reference/make_predict_reference.R
##
## Writes lme4_predict.json next to this file. Uses the data CSVs that make_reference.R wrote
## (data/*.csv), read back with lme4's factor level order. Deterministic apart from the date.
## lme4's predict() selects random effects by grouping factor AND column (mkNewReTrms takes
## the columns of re.form's terms out of ranef()), so ~(1 | Subject) on
## (1 | Subject) + (0 + Days | Subject) leaves the Days slopes out.

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
read_data <- function(name) read.csv(file.path(ref_dir, "data", paste0(name, ".csv")))

sleepstudy <- read_data("sleepstudy")
sleepstudy$Subject <- factor(sleepstudy$Subject)
Penicillin <- read_data("Penicillin")
Penicillin$plate <- factor(Penicillin$plate)
Penicillin$sample <- factor(Penicillin$sample)
cbpp <- read_data("cbpp")
cbpp$herd <- factor(cbpp$herd, levels = as.character(1:15))
cbpp$period <- factor(cbpp$period, levels = as.character(1:4))

## newdata: a few rows of each data set, in a shuffled order
new_sleep <- sleepstudy[c(5, 17, 33, 120, 180, 2), ]
new_pen <- Penicillin[c(1, 30, 77, 144, 6), ]
new_cbpp <- cbpp[c(3, 20, 41, 56), ]

cases <- list(
  list(id = "sleep_uncorr", written = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", fit = lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleepstudy),
       data = "sleepstudy", newdata = new_sleep,
       re_forms = list("~(1 | Subject)", "~(0 + Days | Subject)", "~(1 | Subject) + (0 + Days | Subject)", NA)),
  list(id = "sleep_double_bar", written = "Reaction ~ Days + (Days || Subject)", fit = lmer(Reaction ~ Days + (Days || Subject), sleepstudy),
       data = "sleepstudy", newdata = new_sleep,
       re_forms = list("~(1 | Subject)", "~(0 + Days | Subject)")),
  list(id = "sleep_corr", written = "Reaction ~ Days + (Days | Subject)", fit = lmer(Reaction ~ Days + (Days | Subject), sleepstudy),
       data = "sleepstudy", newdata = new_sleep,
       re_forms = list("~(1 | Subject)", "~(Days | Subject)", NA)),
  list(id = "penicillin", written = "diameter ~ 1 + (1 | plate) + (1 | sample)", fit = lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin),
       data = "Penicillin", newdata = new_pen,
       re_forms = list("~(1 | plate)", "~(1 | sample)", NA)),
  list(id = "cbpp", written = "cbind(incidence, size - incidence) ~ period + (1 | herd)", fit = glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
                                family = binomial, data = cbpp),
       data = "cbpp", newdata = new_cbpp, re_forms = list("~(1 | herd)", NA))
)

one_case <- function(cs) {
  fit <- cs$fit
  preds <- lapply(cs$re_forms, function(rf) {
    form <- if (is.character(rf)) as.formula(rf) else NA
    list(re_form = if (is.character(rf)) rf else "NA",
         fitted_link = unname(predict(fit, re.form = form, type = "link")),
         fitted_response = unname(predict(fit, re.form = form, type = "response")),
         newdata_link = unname(predict(fit, newdata = cs$newdata, re.form = form, type = "link")),
         newdata_response = unname(predict(fit, newdata = cs$newdata, re.form = form,
                                           type = "response")))
  })
  list(formula = cs$written,
       formula_lme4 = paste(deparse(formula(fit), width.cutoff = 500), collapse = ""),
       kind = if (isLMM(fit)) "lmer" else "glmer",
       reml = isREML(fit), data = cs$data,
       newdata_rows = as.integer(rownames(cs$newdata)),   # 1-based rows of the CSV
       fixef = unname(fixef(fit)), theta = unname(getME(fit, "theta")),
       predictions = preds)
}

out <- list(
  provenance = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    date_utc = format(Sys.time(), tz = "UTC", usetz = TRUE)),
  cases = setNames(lapply(cases, one_case), vapply(cases, `[[`, "", "id"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = 15, pretty = TRUE),
           file.path(ref_dir, "lme4_predict.json"))
