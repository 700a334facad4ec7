# lme4's side of bench/inference.py: times bootMer and profile confint on sleepstudy.
# Usage: Rscript bench/inference_lme4.R <sleepstudy.csv> <nsim>   (prints one JSON line)
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(Subject = "character"))
d$Subject <- factor(d$Subject)
nsim <- as.integer(args[2])
fit <- lmer(Reaction ~ Days + (Days | Subject), data = d)
stat <- function(f) {
  vc <- as.data.frame(VarCorr(f), order = "lower.tri")
  c(fixef(f), vc$sdcor)
}
cpu <- function(t) t[["user.self"]] + t[["sys.self"]]
set.seed(1)
t_boot <- system.time(b <- bootMer(fit, stat, nsim = nsim, use.u = FALSE, type = "parametric"))
t_prof <- system.time(ci <- suppressMessages(confint(fit, method = "profile", oldNames = TRUE)))
cat(toJSON(list(boot_seconds = t_boot[["elapsed"]], boot_cpu = cpu(t_boot), boot_nsim = nsim,
                profile_seconds = t_prof[["elapsed"]], profile_cpu = cpu(t_prof),
                profile = unname(split(unname(ci), seq_len(nrow(ci))))),
           auto_unbox = TRUE, digits = 10), "\n")
