## Reference values from lme4 for mixedfit's tests.
##
## Run from anywhere (paths are resolved relative to this file):
##     Rscript tests/reference/make_reference.R
##
## Writes
##     data/<name>.csv     every data set the references use (factors as labels)
##     lme4_lmm.json       linear mixed models (lmer)
##     lme4_glmm.json      generalized linear mixed models (glmer)
##
## Everything is deterministic (built-in data sets, set.seed for simulated ones;
## see the note on address randomization below) except the date stamp in
## "provenance".  Every model is fitted to the data *as read back from its CSV
## file*, so R and Python see exactly the same numbers.
##
## Needs: lme4 (and its minqa), mvtnorm (simulated shrinkage data), jsonlite.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
options(width = 80, digits = 7, warn = 1, stringsAsFactors = FALSE)

## ---------------------------------------------------------------- locations
script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
## lme4's compiled (Eigen) code gives results whose last bits depend on where
## its operands sit in memory (vectorized sums), so with address-space
## randomization two runs differ in the last bits of the objective, which the
## optimizers amplify (LMM parameters ~1e-10, GLMM parameters ~1e-5).  On
## Linux, re-run this script once with randomization disabled so the output is
## bit-for-bit reproducible.
if (.Platform$OS.type == "unix" && Sys.getenv("MAKE_REFERENCE_NO_ASLR") == "" &&
    nzchar(Sys.which("setarch"))) {
  arch <- system("uname -m", intern = TRUE)
  status <- system2("setarch", c(arch, "-R", file.path(R.home("bin"), "Rscript"),
                                 shQuote(script_path)),
                    env = "MAKE_REFERENCE_NO_ASLR=1")
  quit(save = "no", status = status)
}

ref_dir  <- dirname(script_path)
data_dir <- file.path(ref_dir, "data")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

## ---------------------------------------------------------------- provenance
pkg_version <- function(p) as.character(utils::packageVersion(p))
provenance <- list(
  generator = "tests/reference/make_reference.R",
  command = "Rscript tests/reference/make_reference.R",
  R_version = R.version.string,
  lme4_version = pkg_version("lme4"),
  Matrix_version = pkg_version("Matrix"),
  nloptr_version = pkg_version("nloptr"),
  mvtnorm_version = pkg_version("mvtnorm"),
  jsonlite_version = pkg_version("jsonlite"),
  platform = R.version$platform,
  RNGkind = RNGkind(),
  options_width = getOption("width"),
  date_utc = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"),
  number_format = "JSON numbers carry 15 significant digits; null stands for R's NA"
)

## ---------------------------------------------------------------- data sets
datasets      <- list()   # name -> data.frame as read back from CSV
dataset_meta  <- list()   # name -> description for the JSON

## Write `df` to data/<name>.csv, read it back, rebuild the factors with the
## recorded level order, check the round trip, and register the read-back copy.
save_dataset <- function(name, df, source, notes = NULL) {
  df <- as.data.frame(df)
  cols <- list()
  for (nm in names(df)) {
    x <- df[[nm]]
    cols[[nm]] <- if (is.factor(x)) {
      list(type = "factor", ordered = is.ordered(x), levels = levels(x))
    } else if (is.integer(x)) {
      list(type = "integer")
    } else if (is.numeric(x)) {
      list(type = "numeric")
    } else if (is.character(x)) {
      list(type = "character")
    } else stop("unsupported column type in ", name, "$", nm)
  }
  if (anyNA(df)) stop("data set ", name, " has missing values")
  out <- df
  for (nm in names(out)) if (is.factor(out[[nm]])) out[[nm]] <- as.character(out[[nm]])
  file <- file.path(data_dir, paste0(name, ".csv"))
  utils::write.csv(out, file, row.names = FALSE)

  cls <- vapply(cols, function(ci) switch(ci$type, factor = "character",
                                         character = "character",
                                         integer = "integer", numeric = "numeric"), "")
  back <- utils::read.csv(file, colClasses = cls, check.names = FALSE)
  for (nm in names(back)) {
    ci <- cols[[nm]]
    if (ci$type == "factor") {
      back[[nm]] <- factor(back[[nm]], levels = ci$levels, ordered = ci$ordered)
      if (anyNA(back[[nm]])) stop("level mismatch after round trip: ", name, "$", nm)
    }
  }
  ok <- all.equal(back, df, tolerance = 1e-13, check.attributes = FALSE)
  if (!isTRUE(ok)) stop("CSV round trip changed ", name, ": ", paste(ok, collapse = "; "))
  datasets[[name]] <<- back
  dataset_meta[[name]] <<- list(file = paste0("data/", name, ".csv"), source = source,
                                nrow = nrow(back), columns = cols, notes = notes)
  invisible(back)
}

## lme4's built-in data sets
data("sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "cake",
     "cbpp", "grouseticks", "VerbAgg", package = "lme4", envir = environment())
save_dataset("sleepstudy", sleepstudy, "lme4::sleepstudy")
save_dataset("Dyestuff", Dyestuff, "lme4::Dyestuff")
save_dataset("Dyestuff2", Dyestuff2, "lme4::Dyestuff2")
save_dataset("Penicillin", Penicillin, "lme4::Penicillin")
save_dataset("Pastes", Pastes, "lme4::Pastes")
save_dataset("cake", cake, "lme4::cake",
             notes = "temperature is an ordered factor (polynomial contrasts in R); the reference model uses the numeric column temp instead")
save_dataset("cbpp", cbpp, "lme4::cbpp")
save_dataset("VerbAgg", VerbAgg, "lme4::VerbAgg",
             notes = "r2 is a factor with levels N, Y: glmer treats the first level as failure, the others as success")

## grouseticks: cHEIGHT is REPLACED by the standardized height, scale(HEIGHT)
## (lme4 ships cHEIGHT as the centred height only), so that formulas can use
## the column instead of calling scale() inside the formula.
gt <- grouseticks
gt$cHEIGHT <- as.numeric(scale(gt$HEIGHT))
save_dataset("grouseticks", gt, "lme4::grouseticks with cHEIGHT := as.numeric(scale(HEIGHT))",
             notes = "cHEIGHT here is (HEIGHT - mean(HEIGHT)) / sd(HEIGHT), not lme4's centred-only cHEIGHT")

## sleepstudy with deterministic prior weights and a deterministic offset
ss <- sleepstudy
ss$w   <- 1 + (ss$Days %% 3)
ss$off <- 3 * sqrt(ss$Days)
save_dataset("sleepstudy_wo", ss, "lme4::sleepstudy plus w = 1 + (Days %% 3) and off = 3 * sqrt(Days)")

## Shrinkage demonstration data (the seed's create_data(); the seed used
## tibble + dplyr::sample_frac, which draws rows with sample.int exactly as here).
create_data <- function(obs_per_cluster = 10, n_cluster = 100, intercept = 1, beta = .5,
                        sigma = 1, sd_int = .5, sd_slope = .25, cor = 0,
                        balanced = TRUE, seed = 888) {
  set.seed(seed)
  cluster <- rep(1:n_cluster, each = obs_per_cluster)
  N <- n_cluster * obs_per_cluster
  x <- rnorm(N)
  varmat <- matrix(c(sd_int^2, cor, cor, sd_slope^2), 2, 2)
  re <- mvtnorm::rmvnorm(n_cluster, sigma = varmat)
  y <- (intercept + re[cluster, 1]) + (beta + re[cluster, 2]) * x + rnorm(N, sd = sigma)
  frac <- as.numeric(balanced)
  if (frac < 0 || frac > 1) stop("balanced should be a proportion to sample")
  df <- data.frame(y = y, x = x, cluster = factor(cluster, levels = 1:n_cluster))
  df <- df[sample.int(N, round(frac * N)), ]
  rownames(df) <- NULL
  df
}
save_dataset("sim_shrinkage", create_data(),
             "create_data() with its defaults: obs_per_cluster=10, n_cluster=100, intercept=1, beta=.5, sigma=1, sd_int=.5, sd_slope=.25, cor=0, balanced=TRUE, seed=888")
sim_unbal <- create_data(balanced = .5, sd_int = .5, sd_slope = .5, sigma = .25)
sim_unbal$cluster <- droplevels(sim_unbal$cluster)
save_dataset("sim_shrinkage_unbalanced", sim_unbal,
             "create_data(balanced = .5, sd_int = .5, sd_slope = .5, sigma = .25), seed 888; unused cluster levels dropped")

## Bernoulli trials with a random logit per subject (30 subjects x 10 trials)
local({
  set.seed(20150322)
  I <- 30; J <- 10; theta0 <- 0.7
  logittheta <- rnorm(I, qlogis(theta0))
  result <- unlist(lapply(seq_len(I), function(i) rbinom(J, 1, plogis(logittheta[i]))))
  d <- data.frame(subject = factor(rep(seq_len(I), each = J), levels = seq_len(I)),
                  trial = rep(seq_len(J), I),
                  logittheta = rep(logittheta, each = J),
                  result = as.integer(result))
  save_dataset("sim_bernoulli", d,
               "set.seed(20150322); 30 subjects x 10 Bernoulli trials; logit(p_subject) ~ N(logit(0.7), 1)")
})

## Crossed binomial: 300 subjects x 200 items, 6000 Bernoulli rows
local({
  set.seed(4242)
  ns <- 300; ni <- 200; N <- 6000
  s <- rep(seq_len(ns), each = N / ns)
  i <- sample(rep(seq_len(ni), N / ni))
  x <- rnorm(N)
  bs <- rnorm(ns, sd = 0.8); bi <- rnorm(ni, sd = 0.5)
  eta <- -0.3 + 0.6 * x + bs[s] + bi[i]
  y <- rbinom(N, 1, plogis(eta))
  slab <- sprintf("s%03d", seq_len(ns)); ilab <- sprintf("i%03d", seq_len(ni))
  d <- data.frame(y = as.integer(y), x = x,
                  subj = factor(slab[s], levels = slab), item = factor(ilab[i], levels = ilab))
  save_dataset("sim_crossed_binomial", d,
               "set.seed(4242); 300 subjects (20 rows each) crossed with 200 items (30 rows each, random pairing); eta = -0.3 + 0.6 x + b_subj (sd .8) + b_item (sd .5); y ~ Bernoulli")
})

## Gamma with log link: 60 groups x 8 rows
local({
  set.seed(777)
  ng <- 60; m <- 8; N <- ng * m
  g <- rep(seq_len(ng), each = m)
  x <- runif(N, -1, 1)
  b <- rnorm(ng, sd = 0.4)
  mu <- exp(1 + 0.3 * x + b[g])
  shape <- 4
  y <- rgamma(N, shape = shape, rate = shape / mu)
  glab <- sprintf("g%02d", seq_len(ng))
  d <- data.frame(y = y, x = x, g = factor(glab[g], levels = glab))
  save_dataset("sim_gamma", d,
               "set.seed(777); 60 groups x 8 rows; x ~ U(-1, 1); log mu = 1 + 0.3 x + b_g (sd .4); y ~ Gamma(shape 4, mean mu)")
})

## ---------------------------------------------------------------- helpers
num_list <- function(x) {            # named numeric vector -> JSON object
  x <- unlist(x)
  stats::setNames(as.list(unname(as.numeric(x))), names(x))
}
mat_json <- function(m) {
  m <- as.matrix(m)
  list(names = I(rownames(m)), matrix = unname(m))
}
na_null <- function(x) if (length(x) == 0 || (length(x) == 1 && is.na(x))) NULL else x

## Evaluate a call string in an environment holding the data set under its
## own name (so the printed "Data:" line shows the data set's name), and
## collect every warning and message instead of printing it.
eval_call <- function(call_str, data_name, modify = NULL) {
  env <- new.env(parent = globalenv())
  assign(data_name, datasets[[data_name]], envir = env)
  cl <- parse(text = call_str)[[1]]
  if (!is.null(modify)) for (nm in names(modify)) cl[[nm]] <- modify[[nm]]
  warns <- character(); msgs <- character()
  val <- withCallingHandlers(eval(cl, env),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m))); invokeRestart("muffleMessage") })
  list(value = val, warnings = warns, messages = msgs, env = env)
}

## the formula exactly as written in the call (formula(fit) expands `||`)
call_formula <- function(call_str) {
  f <- parse(text = call_str)[[1]][[2]]
  paste(deparse(f, width.cutoff = 500L), collapse = " ")
}

text_of <- function(expr) paste(capture.output(expr), collapse = "\n")

ranef_json <- function(fit) {
  rr <- as.data.frame(ranef(fit, condVar = TRUE))
  out <- list()
  re <- ranef(fit)
  for (g in names(re)) {
    sub <- rr[rr$grpvar == g, ]
    levs <- rownames(re[[g]])
    terms <- colnames(re[[g]])
    condval <- list(); condsd <- list()
    for (tm in terms) {
      s <- sub[sub$term == tm, ]
      s <- s[match(levs, as.character(s$grp)), ]
      stopifnot(!anyNA(s$condval))
      condval[[tm]] <- I(s$condval)
      condsd[[tm]] <- I(s$condsd)
    }
    out[[g]] <- list(levels = I(levs), terms = I(terms), condval = condval, condsd = condsd)
  }
  out
}

## as.data.frame(VarCorr()) rows; `theta`/`sigma` replace the fit's values
varcorr_json <- function(fit, theta = NULL, sigma = NULL) {
  vc <- if (is.null(theta)) VarCorr(fit) else {
    cnms <- fit@cnms; fl <- fit@flist
    structure(lme4:::mkVarCorr(sigma, cnms = cnms, nc = lengths(cnms), theta = unname(theta),
                               nms = names(fl)[attr(fl, "assign")]),
              useSc = as.logical(fit@devcomp$dims[["useSc"]]), class = "VarCorr.merMod")
  }
  vc <- as.data.frame(vc)
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i], var1 = na_null(vc$var1[i]), var2 = na_null(vc$var2[i]),
    vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}

optinfo_json <- function(fit, warns, msgs) {
  oi <- fit@optinfo
  list(optimizer = oi$optimizer, control = oi$control, feval = oi$feval,
       conv_opt = oi$conv$opt, lme4_messages = as.list(unlist(oi$conv$lme4$messages)),
       optimizer_warnings = as.list(unlist(oi$warnings)),
       r_warnings = as.list(warns), r_messages = as.list(msgs))
}

rel_diff <- function(a, b) max(abs(a - b) / pmax(abs(b), 1e-300))

## ---------------------------------------------------------------- LMM
lmm_models <- list()

run_lmm <- function(id, call_str, data_name, description,
                    weights = NULL, offset = NULL, notes = NULL) {
  cat("LMM", id, "\n")
  r <- eval_call(call_str, data_name)
  fit <- r$value
  reml <- isREML(fit)
  th <- getME(fit, "theta"); lower <- getME(fit, "lower")
  isdiag <- lower == 0
  bhat <- fixef(fit)
  V <- as.matrix(vcov(fit))

  ## profiled criterion at fixed theta (independent of the optimizer)
  dfun <- eval_call(call_str, data_name, modify = list(devFunOnly = TRUE))$value
  pts <- list(
    list(label = "start",     theta = ifelse(isdiag, 1, 0)),
    list(label = "optimum",   theta = unname(th)),
    list(label = "perturbed", theta = unname(ifelse(isdiag, 1.25 * th + 0.05, 0.8 * th - 0.03))),
    list(label = "zero",      theta = rep(0, length(th))))
  for (k in seq_along(pts)) pts[[k]]$value <- dfun(pts[[k]]$theta)
  for (k in seq_along(pts)) pts[[k]]$theta <- I(pts[[k]]$theta)
  stopifnot(abs(pts[[2]]$value - (if (reml) REMLcrit(fit) else deviance(fit))) < 1e-8)

  ## how far a different optimizer lands (used to justify test tolerances)
  alt <- eval_call(call_str, data_name,
                   modify = list(control = quote(lmerControl(optimizer = "bobyqa"))))$value
  alt_check <- list(
    optimizer = "bobyqa (minqa)",
    criterion_rel_diff = rel_diff(if (reml) REMLcrit(alt) else deviance(alt),
                                  if (reml) REMLcrit(fit) else deviance(fit)),
    fixef_max_abs_diff = max(abs(fixef(alt) - bhat)),
    fixef_max_rel_diff = rel_diff(fixef(alt), bhat),
    se_max_rel_diff = rel_diff(sqrt(diag(as.matrix(vcov(alt)))), sqrt(diag(V))),
    theta_max_abs_diff = max(abs(getME(alt, "theta") - th)),
    sigma_rel_diff = rel_diff(sigma(alt), sigma(fit)),
    ranef_max_abs_diff = max(abs(unlist(ranef(alt)) - unlist(ranef(fit)))))

  ll <- logLik(fit)
  cmp <- getME(fit, "devcomp")$cmp
  m <- list(
    id = id, kind = "lmm", description = description, call = call_str,
    formula = call_formula(call_str),
    formula_lme4 = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
    data = data_name, data_file = dataset_meta[[data_name]]$file,
    REML = reml, weights = weights, offset = offset,
    control = "lmerControl() defaults",
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), df_resid = df.residual(fit),
    optinfo = optinfo_json(fit, r$warnings, r$messages),
    REMLcrit = if (reml) REMLcrit(fit) else NULL,
    deviance = if (!reml) deviance(fit) else NULL,
    deviance_note = "deviance (= -2 logLik) only for ML fits; REML fits report REMLcrit",
    logLik = as.numeric(ll), logLik_df = attr(ll, "df"),
    AIC = AIC(fit), BIC = BIC(fit),
    fixef = num_list(bhat), se = num_list(sqrt(diag(V))), vcov = mat_json(V),
    theta = num_list(th), theta_lower = I(unname(lower)),
    sigma = sigma(fit),
    varcorr = varcorr_json(fit),
    ranef = ranef_json(fit),
    devcomp = as.list(vapply(cmp, function(v) v, 0.0)),
    is_singular = isSingular(fit),
    objective_at_theta = pts,
    alternative_optimizer = alt_check,
    notes = notes,
    summary_text = text_of(summary(fit)),
    print_text = text_of(print(fit)))
  lmm_models[[id]] <<- m
  invisible(fit)
}

run_lmm("sleepstudy_reml", "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = TRUE)",
        "sleepstudy", "correlated random intercept and slope, REML")
run_lmm("sleepstudy_ml", "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)",
        "sleepstudy", "correlated random intercept and slope, ML")
run_lmm("sleepstudy_uncorr", "lmer(Reaction ~ Days + (Days || Subject), data = sleepstudy, REML = TRUE)",
        "sleepstudy", "uncorrelated intercept and slope (two scalar terms on Subject), REML",
        notes = "VarCorr names the second term's group 'Subject.1'; ranef merges both terms under 'Subject'; ngroups counts the factor once")
run_lmm("dyestuff", "lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff, REML = TRUE)",
        "Dyestuff", "single scalar random intercept")
run_lmm("dyestuff2", "lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff2, REML = TRUE)",
        "Dyestuff2", "singular fit: the between-batch variance is estimated as zero")
run_lmm("penicillin", "lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = Penicillin, REML = TRUE)",
        "Penicillin", "two crossed scalar random intercepts")
run_lmm("pastes", "lmer(strength ~ 1 + (1 | batch/cask), data = Pastes, REML = TRUE)",
        "Pastes", "nested random intercepts; groups 'cask:batch' and 'batch'")
run_lmm("cake", "lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake, REML = TRUE)",
        "cake", "factor-by-covariate interaction in the fixed effects; interaction grouping factor",
        notes = "temp is numeric (lme4's classic cake model uses the ordered factor temperature, which would need polynomial contrasts)")
run_lmm("sleepstudy_weights", "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy_wo, weights = w, REML = TRUE)",
        "sleepstudy_wo", "prior weights w = 1 + (Days %% 3)", weights = "w")
run_lmm("sleepstudy_offset", "lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy_wo, offset = off, REML = TRUE)",
        "sleepstudy_wo", "offset off = 3 * sqrt(Days)", offset = "off")
run_lmm("shrinkage", "lmer(y ~ x + (x | cluster), data = sim_shrinkage, REML = TRUE)",
        "sim_shrinkage", "the seed's default simulated data",
        notes = "the seed reports REML criterion 3012.2 for the same data")
run_lmm("shrinkage_unbalanced", "lmer(y ~ x + (x | cluster), data = sim_shrinkage_unbalanced, REML = TRUE)",
        "sim_shrinkage_unbalanced", "the seed's unbalanced setting (half the rows sampled)")

## ---------------------------------------------------------------- GLMM
glmm_models <- list()

## -2 log-likelihood of the saturated model (mu = y) with the family's
## normalizing constants: the amount by which lme4's nAGQ > 1 objective
## (unit-deviance scale) falls short of -2 log L.
saturated_m2ll <- function(fit) {
  fam <- family(fit)
  y <- getME(fit, "y"); pw <- weights(fit, "prior"); n <- length(y)
  fam$aic(y, rep(1, n), y, pw, 0)
}

## The Laplace objective at fixed (theta, beta), computed independently of
## lme4's devfun: Newton (Fisher scoring) iterations for the conditional mode
## from u = 0 until the step is below 1e-11, then log|L|^2 from the factor
## formed *at* the mode.  lme4 stops PIRLS at a relative tolerance and forms
## log|L|^2 with the previous iterate's weights, which leaves an error of up
## to ~1e-6 relative at its default tolerance and ~1e-8 absolute at best.
## Returns a closure f(theta, beta, details = FALSE).
make_laplace <- function(fit) {
  fam <- family(fit)
  y <- getME(fit, "y"); X <- getME(fit, "X"); Z <- getME(fit, "Z")
  pw <- weights(fit, "prior"); off <- getME(fit, "offset"); n <- length(y)
  Lt <- getME(fit, "Lambdat"); Lind <- getME(fit, "Lind"); q <- ncol(Z)
  Iq <- Diagonal(q)
  function(theta, beta, details = FALSE) {
    Lt@x <- theta[Lind]
    ZL <- Z %*% t(Lt)
    fixed <- drop(off + X %*% beta)
    state <- function(u) {
      eta <- fixed + drop(ZL %*% u); mu <- fam$linkinv(eta)
      list(eta = eta, mu = mu, pdev = sum(fam$dev.resids(y, mu, pw)) + sum(u^2))
    }
    hess <- function(st) {
      w <- pw * fam$mu.eta(st$eta)^2 / fam$variance(st$mu)
      forceSymmetric(crossprod(ZL, Diagonal(x = w) %*% ZL) + Iq)
    }
    u <- rep(0, q); st <- state(u); it <- 0L
    repeat {
      it <- it + 1L
      if (it > 1000L) stop("conditional-mode iteration did not converge")
      me <- fam$mu.eta(st$eta)
      grad <- drop(crossprod(ZL, pw * (y - st$mu) / fam$variance(st$mu) * me)) - u
      step <- drop(as.matrix(solve(hess(st), grad)))
      k <- 1
      repeat {
        nst <- state(u + k * step)
        if (nst$pdev <= st$pdev * (1 + 1e-15) || k < 1e-10) break
        k <- k / 2
      }
      u <- u + k * step; st <- nst
      if (max(abs(k * step)) < 1e-11) break
    }
    H <- hess(st)
    ldL2 <- as.numeric(determinant(H, logarithm = TRUE)$modulus)
    drsum <- sum(fam$dev.resids(y, st$mu, pw))
    ussq <- sum(u^2)
    aic <- fam$aic(y, rep(1, n), st$mu, pw, drsum)
    out <- list(objective = aic + ussq + ldL2, drsum = drsum, ussq = ussq, ldL2 = ldL2,
                iterations = it)
    if (details) {
      wrss <- sum(pw * (y - st$mu)^2 / fam$variance(st$mu))
      out$wrss <- wrss
      out$b <- drop(as.matrix(t(Lt) %*% u))
      out$condvar_unscaled <- diag(as.matrix(t(Lt) %*% solve(H, Lt)))
      out$sigma_lme4 <- if (fam$family %in% c("binomial", "poisson")) 1 else sqrt((wrss + ussq) / n)
      ## RX-based covariance of beta (lme4's use.hessian = FALSE): the
      ## inverse Schur complement of the Z block in the weighted Gram matrix
      w <- pw * fam$mu.eta(st$eta)^2 / fam$variance(st$mu)
      B <- crossprod(ZL, w * X)
      S <- crossprod(X, w * X) - as.matrix(crossprod(B, solve(H, B)))
      out$vcov_rx_unscaled <- solve(S)
    }
    out
  }
}

## Conditional modes / conditional SDs in the layout of ranef_json(), from a
## vector b in lme4's order (terms in order; within a term, level-major).
ranef_from_b <- function(fit, b, condsd) {
  fl <- getME(fit, "flist"); cnms <- getME(fit, "cnms"); Gp <- getME(fit, "Gp")
  asgn <- attr(fl, "assign")
  out <- list()
  for (gi in seq_along(fl)) {
    g <- names(fl)[gi]
    terms_i <- which(asgn == gi)
    if (length(terms_i) != 1) stop("ranef_from_b handles one term per grouping factor")
    idx <- (Gp[terms_i] + 1):Gp[terms_i + 1]
    nc <- length(cnms[[terms_i]])
    mb <- matrix(b[idx], ncol = nc, byrow = TRUE)
    ms <- matrix(condsd[idx], ncol = nc, byrow = TRUE)
    condval <- list(); csd <- list()
    for (j in seq_len(nc)) {
      condval[[cnms[[terms_i]][j]]] <- I(mb[, j])
      csd[[cnms[[terms_i]][j]]] <- I(ms[, j])
    }
    out[[g]] <- list(levels = I(levels(fl[[gi]])), terms = I(cnms[[terms_i]]),
                     condval = condval, condsd = csd)
  }
  out
}

## Brute-force marginal -2 log L for a model whose only random-effects term
## is one scalar intercept: one adaptive quadrature integral per level.
m2ll_integrate <- function(fit, theta, beta) {
  fam <- family(fit)
  y <- getME(fit, "y"); X <- getME(fit, "X"); pw <- weights(fit, "prior")
  off <- getME(fit, "offset"); fl <- getME(fit, "flist")[[1]]
  fixed <- drop(off + X %*% beta); n <- length(y)
  tot <- 0
  for (lv in levels(fl)) {
    i <- which(fl == lv)
    integrand <- function(b) vapply(b, function(bb) {
      mu <- fam$linkinv(fixed[i] + theta * bb)
      exp(-0.5 * fam$aic(y[i], rep(1, length(i)), mu, pw[i], sum(fam$dev.resids(y[i], mu, pw[i])))) * dnorm(bb)
    }, 0.0)
    tot <- tot + log(stats::integrate(integrand, -Inf, Inf, rel.tol = 1e-12)$value)
  }
  -2 * tot
}

run_glmm <- function(id, call_str, data_name, description, family_name, link, nAGQ,
                     notes = NULL) {
  cat("GLMM", id, "\n")
  r <- eval_call(call_str, data_name)
  fit <- r$value
  th <- getME(fit, "theta"); lower <- getME(fit, "lower"); ntheta <- length(th)
  bhat <- fixef(fit)
  V <- as.matrix(vcov(fit))
  se <- sqrt(diag(V))
  hess_avail <- !is.null(fit@optinfo$derivs$Hessian) &&
    nrow(fit@optinfo$derivs$Hessian) > ntheta
  V_rx <- suppressWarnings(as.matrix(vcov(fit, use.hessian = FALSE)))
  ll <- logLik(fit); npar <- attr(ll, "df")
  cmp <- fit@devcomp$cmp
  agq <- nAGQ > 1
  sat <- if (family(fit)$family %in% c("binomial", "poisson")) saturated_m2ll(fit) else NA_real_
  if (agq && is.na(sat)) stop("nAGQ > 1 needs the saturated -2 log L")

  ## lme4's stage-2 devfun (takes c(theta, beta)); `tol` replaces tolPwrss
  mk_devfun <- function(tol) {
    f <- eval_call(call_str, data_name, modify = list(devFunOnly = TRUE))$value
    if (!is.null(tol)) assign("tolPwrss", tol, envir = environment(f))
    f
  }
  tight <- mk_devfun(1e-14)
  lap <- make_laplace(fit)
  ## the converged stage-2 objective on lme4's devfun scale
  objective <- function(pars) {
    if (agq) tight(pars) else lap(pars[seq_len(ntheta)], pars[-seq_len(ntheta)])$objective
  }

  ## ---- objective at fixed (theta, beta)
  pts <- list(
    list(label = "lme4_optimum", theta = unname(th), beta = unname(bhat)),
    list(label = "perturbed", theta = unname(ifelse(lower == 0, 1.2 * th + 0.05, 0.8 * th)),
         beta = unname(bhat + 0.5 * se)))
  pars_of <- function(p) c(p$theta, p$beta)
  t1 <- vapply(pts, function(p) tight(pars_of(p)), 0.0)
  t2 <- rev(vapply(rev(pts), function(p) tight(pars_of(p)), 0.0))
  if (max(abs(t1 - t2) / abs(t1)) > 1e-11) stop(id, ": lme4 devfun depends on its history")
  for (k in seq_along(pts)) {
    x <- pars_of(pts[[k]])
    val <- objective(x)
    if (abs(val - t1[k]) / abs(val) > 1e-9)
      stop(id, ": converged objective ", format(val, digits = 16),
           " differs from lme4's devfun at tolPwrss 1e-14 ", format(t1[k], digits = 16))
    pts[[k]] <- list(label = pts[[k]]$label, pars = I(x), theta = I(pts[[k]]$theta),
                     beta = I(pts[[k]]$beta), value = val, value_lme4_tight = t1[k],
                     value_lme4_default_tolerance = mk_devfun(NULL)(x))
  }
  if (agq) {
    bf <- m2ll_integrate(fit, th, bhat)
    if (abs(bf - (t1[1] + sat)) / abs(bf) > 1e-10)
      stop(id, ": AGQ devfun + saturated -2 log L does not match direct integration")
  }

  ## ---- the exact optimum: polish lme4's optimum on the converged objective
  ## (BOBYQA from minqa, then Newton steps with central-difference
  ## derivatives until the gradient is at rounding level)
  lb <- c(lower, rep(-Inf, length(bhat)))
  x0 <- unname(c(th, bhat))
  o <- minqa::bobyqa(x0, objective, lower = lb,
                     control = list(rhobeg = 2e-3, rhoend = 1e-10, maxfun = 20000))
  x <- o$par; fx <- o$fval; nev <- o$feval
  if (fx > objective(x0)) stop(id, ": polishing made the objective worse")
  fd_grad <- function(x, h = 1e-5) vapply(seq_along(x), function(i) {
    e <- replace(numeric(length(x)), i, h); (objective(x + e) - objective(x - e)) / (2 * h)
  }, 0.0)
  for (newton in 1:3) {
    g <- fd_grad(x)
    xn <- x - solve(lme4:::deriv12(objective, x, lower = lb)$Hessian, g)
    if (any(xn < lb)) break
    fn <- objective(xn)
    if (fn > fx) break
    x <- xn; fx <- fn
  }
  grad_final <- fd_grad(x)
  tho <- x[seq_len(ntheta)]; bo <- x[-seq_len(ntheta)]
  names(tho) <- names(th); names(bo) <- names(bhat)
  det <- lap(tho, bo, details = TRUE)
  m2ll_exact <- if (agq) fx + sat else fx
  ## lme4's recipe for vcov (finite-difference Hessian of the stage-2
  ## objective, vcov = 2 H^-1 restricted to beta), applied to the converged
  ## objective at the exact optimum
  Hs <- lme4:::deriv12(objective, x, lower = lb)$Hessian
  Hi <- solve(Hs)[-seq_len(ntheta), -seq_len(ntheta), drop = FALSE]
  Vh <- Hi + t(Hi); dimnames(Vh) <- list(names(bhat), names(bhat))
  Vrx <- det$sigma_lme4^2 * det$vcov_rx_unscaled; dimnames(Vrx) <- dimnames(Vh)
  condsd <- det$sigma_lme4 * sqrt(det$condvar_unscaled)
  exact <- list(
    method = paste0("lme4's optimum polished (BOBYQA, then Newton steps) on the converged ",
                    if (agq) "AGQ objective (lme4 devfun, tolPwrss 1e-14)" else "Laplace objective (independent computation)",
                    "; SEs from lme4's finite-difference Hessian recipe applied to that objective"),
    bobyqa_evaluations = nev,
    gradient_max_abs = max(abs(grad_final)),
    objective = fx,
    objective_at_lme4_optimum = pts[[1]]$value,
    m2ll_full = m2ll_exact, logLik = -m2ll_exact / 2,
    AIC = m2ll_exact + 2 * npar, BIC = m2ll_exact + log(nobs(fit)) * npar,
    deviance = det$drsum,
    theta = num_list(tho), fixef = num_list(bo),
    se = num_list(sqrt(diag(Vh))), vcov = mat_json(Vh),
    se_rx = num_list(sqrt(diag(Vrx))), vcov_rx = mat_json(Vrx),
    sigma = det$sigma_lme4,
    varcorr = varcorr_json(fit, theta = tho, sigma = det$sigma_lme4),
    ranef = ranef_from_b(fit, det$b, condsd),
    devcomp = list(ldL2 = det$ldL2, ussq = det$ussq, drsum = det$drsum, wrss = det$wrss))

  ## how far lme4's reported numbers are from the exact optimum
  rf <- unlist(lapply(ranef(fit), function(d) unlist(d)))
  rx <- unlist(lapply(exact$ranef, function(g) unlist(g$condval)))
  lme4_vs_exact <- list(
    objective_diff = pts[[1]]$value - fx,
    fixef_max_abs_diff = max(abs(bhat - bo)),
    fixef_max_diff_in_se = max(abs(bhat - bo) / sqrt(diag(Vh))),
    fixef_max_rel_diff = rel_diff(bhat, bo),
    theta_max_abs_diff = max(abs(th - tho)),
    se_max_rel_diff = rel_diff(se, sqrt(diag(Vh))),
    ranef_max_abs_diff = max(abs(rf - rx)))

  m <- list(
    id = id, kind = "glmm", description = description, call = call_str,
    formula = call_formula(call_str),
    formula_lme4 = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
    data = data_name, data_file = dataset_meta[[data_name]]$file,
    family = family_name, link = link, nAGQ = nAGQ,
    control = "glmerControl() defaults",
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), df_resid = df.residual(fit),
    optinfo = optinfo_json(fit, r$warnings, r$messages),
    scale_of_reported = if (agq)
      "unit-deviance scale: lme4's logLik, AIC, BIC, devcomp_dev and devfun omit the saturated model's -2 log L (saturated_m2ll); add it to get -2 log L with the family's normalizing constants"
    else "-2 log L scale: lme4's logLik, AIC, BIC, devcomp_dev and devfun include the family's normalizing constants",
    logLik = as.numeric(ll), logLik_df = npar, AIC = AIC(fit), BIC = BIC(fit),
    minus2logLik = -2 * as.numeric(ll),
    devcomp_dev = unname(cmp["dev"]),
    deviance = deviance(fit),
    deviance_note = "lme4's deviance() for a GLMM is the sum of squared deviance residuals at the conditional modes (devcomp drsum): the unit deviance only, without ||u||^2 and log|L|^2, on the same scale for every nAGQ",
    saturated_m2ll = sat,
    saturated_note = "-2 log L of the saturated model (mu = y) with the family's normalizing constants; 0 for Bernoulli data; not defined for Gamma",
    fixef = num_list(bhat), se = num_list(se), vcov = mat_json(V),
    vcov_source = if (hess_avail) "finite-difference Hessian of the stage-2 objective (vcov default, use.hessian = TRUE)" else "RX (pp$unsc)",
    se_rx = num_list(sqrt(diag(V_rx))), vcov_rx = mat_json(V_rx),
    theta = num_list(th), theta_lower = I(unname(lower)),
    sigma = sigma(fit),
    varcorr = varcorr_json(fit),
    ranef = ranef_json(fit),
    devcomp = as.list(vapply(cmp, function(v) v, 0.0)),
    devcomp_note = "lme4's ldL2 (and hence dev) comes from the factor formed with the weights of the last-but-one PIRLS iterate",
    is_singular = isSingular(fit),
    objective_at_pars = pts,
    objective_note = "value: the stage-2 objective on lme4's devfun scale at pars = c(theta, beta) (theta first), conditional modes converged and log|L|^2 formed at the mode. Laplace: independent computation, agreeing with lme4's devfun at tolPwrss 1e-14 (value_lme4_tight) to 1e-9 relative. nAGQ > 1: lme4's devfun at tolPwrss 1e-14, checked against direct numerical integration. value_lme4_default_tolerance: lme4's devfun as shipped (tolPwrss 1e-7).",
    exact_optimum = exact,
    lme4_vs_exact = lme4_vs_exact,
    notes = notes,
    summary_text = text_of(summary(fit)),
    print_text = text_of(print(fit)))
  glmm_models[[id]] <<- m
  invisible(fit)
}

run_glmm("cbpp_laplace",
         "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial)",
         "cbpp", "binomial counts with a random herd intercept, Laplace", "binomial", "logit", 1L)
run_glmm("cbpp_agq25",
         "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial, nAGQ = 25)",
         "cbpp", "binomial counts with a random herd intercept, adaptive Gauss-Hermite with 25 nodes",
         "binomial", "logit", 25L)
run_glmm("bernoulli_intercept",
         "glmer(result ~ (1 | subject), data = sim_bernoulli, family = binomial)",
         "sim_bernoulli", "Bernoulli trials, random subject intercept only", "binomial", "logit", 1L)
run_glmm("grouseticks_poisson",
         "glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), data = grouseticks, family = poisson)",
         "grouseticks", "Poisson with three random intercepts (INDEX is an observation-level effect)",
         "poisson", "log", 1L,
         notes = "cHEIGHT is scale(HEIGHT), precomputed in the CSV")
run_glmm("crossed_binomial",
         "glmer(y ~ x + (1 | subj) + (1 | item), data = sim_crossed_binomial, family = binomial)",
         "sim_crossed_binomial", "Bernoulli with crossed random intercepts: 300 subjects x 200 items",
         "binomial", "logit", 1L)
run_glmm("gamma_log",
         "glmer(y ~ x + (1 | g), data = sim_gamma, family = Gamma(link = \"log\"))",
         "sim_gamma", "Gamma with log link, one random intercept", "Gamma", "log", 1L,
         notes = "for the Gamma family lme4's likelihood uses the dispersion estimated from the deviance (family aic)")
run_glmm("verbagg",
         "glmer(r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), data = VerbAgg, family = binomial)",
         "VerbAgg", "binary item responses, crossed person and item intercepts (also a benchmark)",
         "binomial", "logit", 1L)

## ---------------------------------------------------------------- write
used <- function(models) unique(vapply(models, function(m) m$data, ""))
write_ref <- function(models, file) {
  out <- list(provenance = provenance, datasets = dataset_meta[used(models)], models = models)
  writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE, digits = NA, na = "null", null = "null"),
             file.path(ref_dir, file))
}
write_ref(lmm_models, "lme4_lmm.json")
write_ref(glmm_models, "lme4_glmm.json")
cat("done\n")
