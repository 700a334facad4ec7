# Time lme4 on one benchmark problem, in-process, and print JSON lines.
# Usage: Rscript lme4_worker.R '<json spec>'
# The spec names the CSV, formula, family, REML flag, factor columns, repeats and
# time budget. R start-up, package loading and reading the CSV are not timed; each
# timed fit runs lmer()/glmer() from the formula and the data frame, so lme4's
# model-frame building is included. Same protocol as the Python worker: one JSON
# object per line, flushed at once.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

spec <- fromJSON(commandArgs(trailingOnly = TRUE)[1])

emit <- function(...) {
  cat(toJSON(list(...), auto_unbox = TRUE, digits = NA, null = "null"), "\n", sep = "")
  flush(stdout())
}

# peak resident set size of this process so far, in kB (Linux), NA elsewhere
peak_rss_kb <- function() {
  st <- tryCatch(readLines("/proc/self/status"), error = function(e) character())
  line <- grep("^VmHWM:", st, value = TRUE)
  if (length(line) == 0) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line))
}

# current resident set in kB (Linux), NA elsewhere
rss_kb <- function() {
  st <- tryCatch(readLines("/proc/self/status"), error = function(e) character())
  line <- grep("^VmRSS:", st, value = TRUE)
  if (length(line) == 0) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line))
}

# reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); TRUE if it worked
reset_peak_rss <- function() {
  isTRUE(tryCatch({ cat("5", file = "/proc/self/clear_refs"); TRUE }, error = function(e) FALSE))
}

now <- function() proc.time()[["elapsed"]]

read_data <- function(path, factors) {
  df <- if (requireNamespace("data.table", quietly = TRUE)) {
    as.data.frame(data.table::fread(path, showProgress = FALSE))
  } else {
    read.csv(path)
  }
  for (f in factors) df[[f]] <- factor(df[[f]])  # numeric labels sort numerically, as in Python
  df
}

fit_once <- function(form, df) {
  if (spec$kind == "glmm") {
    glmer(form, data = df, family = spec$family)
  } else {
    lmer(form, data = df, REML = spec$reml)
  }
}

batch_size <- function(t, min_sample) {
  if (t >= min_sample) 1L else as.integer(min_sample / max(t, 1e-3)) + 1L
}

run_fit <- function(df) {
  form <- as.formula(spec$formula)
  start <- now()
  invisible(gc())                      # what the data left behind is not the fit's
  peak_reset <- reset_peak_rss()
  rss_before <- rss_kb()
  t0 <- now()
  m <- fit_once(form, df)
  t <- now() - t0
  emit(event = "fit", i = 0L, warm = FALSE, batch = 1L, seconds = t, rss_kb = peak_rss_kb(),
       rss_before_kb = rss_before, peak_reset = peak_reset)
  m2ll <- if (spec$kind == "lmm" && isTRUE(spec$reml)) REMLcrit(m) else -2 * as.numeric(logLik(m))
  fe <- fixef(m)
  msgs <- m@optinfo$conv$lme4$messages
  emit(event = "estimates", m2ll = m2ll, fixef = as.list(fe), theta = unname(getME(m, "theta")),
       converged = is.null(msgs), messages = if (is.null(msgs)) list() else as.list(msgs))
  rm(m)
  if (spec$repeats <= 0) return(invisible())
  if (t > spec$budget / 2) {
    emit(event = "budget", done = 0L, budget = spec$budget)
    return(invisible())
  }
  invisible(gc())
  peak_reset <- reset_peak_rss()
  rss_before <- rss_kb()
  t0 <- now()
  fit_once(form, df)  # warm-up; sizes the batches; its memory is the fit's own
  t <- now() - t0
  if (peak_reset && !is.na(rss_before)) emit(event = "memory", rss_before_kb = rss_before,
                                             peak_kb = peak_rss_kb())
  k <- batch_size(t, spec$min_sample_seconds)
  for (i in seq_len(spec$repeats)) {
    spent <- now() - start
    if (i > 1 && spent + k * t > spec$budget) {
      emit(event = "budget", done = i - 1L, budget = spec$budget)
      break
    }
    tm <- system.time(for (j in seq_len(k)) fit_once(form, df), gcFirst = FALSE)[["elapsed"]]
    t <- tm / k
    emit(event = "fit", i = i, warm = TRUE, batch = k, seconds = t)
  }
}

run_objective <- function(df) {
  # successive calls cycle through four copies of theta differing in the 8th significant
  # digit (as in the Python worker), so no engine can answer from a cache of the last theta
  form <- as.formula(spec$formula)
  devfun <- lmer(form, data = df, REML = spec$reml, devFunOnly = TRUE)
  theta <- as.numeric(spec$theta)
  thetas <- lapply(0:3, function(j) theta * (1 + 1e-8 * j))
  t0 <- now()
  value <- devfun(theta)
  first <- now() - t0
  emit(event = "estimates", objective = value, theta = theta)
  batch <- function(n) {
    system.time(for (k in seq_len(n)) devfun(thetas[[(k %% 4L) + 1L]]), gcFirst = FALSE)[["elapsed"]]
  }
  n <- max(4L, as.integer(spec$min_batch_seconds / max(first, 1e-4)))
  repeat {
    tm <- batch(n)
    if (tm >= spec$min_batch_seconds || n >= 1e7) break
    n <- max(2L * n, as.integer(n * spec$min_batch_seconds / max(tm, 1e-3) * 1.2))
  }
  emit(event = "objective", i = 0L, evals = n, seconds = tm)
  for (i in seq_len(spec$repeats)) emit(event = "objective", i = i, evals = n, seconds = batch(n))
}

main <- function() {
  df <- read_data(spec$csv, spec$factors)
  emit(event = "ready", rss_kb = peak_rss_kb(), pid = Sys.getpid(),
       version = sprintf("%s (R %s.%s)", as.character(packageVersion("lme4")),
                         R.version$major, R.version$minor))
  ok <- tryCatch({
    suppressMessages(suppressWarnings(
      if (spec$kind == "objective") run_objective(df) else run_fit(df)
    ))
    TRUE
  }, error = function(e) {
    emit(event = "error", kind = "R error", message = substr(conditionMessage(e), 1, 500))
    FALSE
  })
  if (ok) emit(event = "done")
}

main()
