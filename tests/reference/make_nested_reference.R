# lme4's and lmerTest's names and numbers for a three-level nested grouping (1 | a/b/c), which
# lme4 expands to (1 | c:(b:a)) + (1 | b:a) + (1 | a), for tests/test_nested_names.py.
#
# Run from the repository root:  Rscript tests/reference/make_nested_reference.R
# Writes tests/reference/data/nested3.csv and tests/reference/lmertest_nested.json.
suppressPackageStartupMessages({
  library(lmerTest)
  library(jsonlite)
})

# A balanced design (6 a, 3 b per a, 3 c per b, 3 replicates) with a deterministic response
# that has variance at every level.
d <- expand.grid(r = 1:3, c = 1:3, b = 1:3, a = 1:6)
i <- seq_len(nrow(d))
d$y <- round(sin(1.7 * i) + 1.5 * cos(1.3 * d$a) + 0.9 * sin(0.7 * d$a * d$b) +
               1.2 * cos(2.1 * d$a * d$b + 3.3 * d$c), 6)
write.csv(d[, c("y", "a", "b", "c")], "tests/reference/data/nested3.csv", row.names = FALSE)

d <- read.csv("tests/reference/data/nested3.csv")
for (v in c("a", "b", "c")) d[[v]] <- factor(d[[v]])
fit <- lmer(y ~ 1 + (1 | a/b/c), d)
vc <- as.data.frame(VarCorr(fit))
rn <- ranova(fit)
out <- list(
  formula = "y ~ 1 + (1 | a/b/c)",
  theta = unname(getME(fit, "theta")),
  reml_criterion = unname(REMLcrit(fit)),
  varcorr_groups = vc$grp,
  varcorr_sdcor = vc$sdcor,
  ranef_names = names(ranef(fit)),
  ranova = list(rows = rownames(rn), npar = rn$npar, logLik = rn$logLik,
                LRT = rn$LRT, Df = rn$Df, p = rn[["Pr(>Chisq)"]],
                heading = attr(rn, "heading")),
  provenance = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    lmerTest = as.character(packageVersion("lmerTest")))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = 15, null = "null", na = "null", pretty = TRUE),
           "tests/reference/lmertest_nested.json")
