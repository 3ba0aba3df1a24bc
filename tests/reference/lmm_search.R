# Shared helpers for the reference scripts: lme4's best optimum of a fit over
# several optimizers and starts, a Newton polish, and extraction to lists for
# jsonlite. Sourced (not run on its own) by lme4_reference.R,
# formula_functions_reference.R, suite_reference.R, ddf_reference.R,
# multi_factor_reference.R, multi_factor_results_reference.R,
# insteval_reference.R and multi_factor_jags.R.
#
# lme4_reference.R (round 1, radon) takes only the helpers (objective, quiet_fit,
# newton_polish, opt_controls, the tie rule, rows_of) and keeps its own four-round
# search over the radon models. best_fit() below is that search generalised to
# any formula and data:
#   1. lme4's default lmer() call;
#   2. six optimizer settings (bobyqa rhobeg 0.2 / 0.02, Nelder_Mead, nloptwrap
#      BOBYQA and Nelder-Mead, nlminbwrap; tight tolerances) from the default
#      theta scaled by 1, 0.2 and 3, and from any extra starts given;
#   3. the same optimizers from the best theta so far;
#   4. newton_polish (Newton steps on lme4's profiled objective with
#      central differences; theta entries at a 0 bound held there) from the two
#      best distinct points.
# Lowest objective wins (REMLcrit for REML, deviance for ML); within 1e-8 it is
# a tie, broken by no convergence warning, then the smallest lme4 gradient.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

objective <- function(fit) {
  cmp <- fit@devcomp$cmp
  unname(if (isREML(fit)) cmp[["REML"]] else cmp[["dev"]])
}

quiet_fit <- function(expr) {
  warns <- character(0)
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) e),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { warns <<- c(warns, conditionMessage(m)); invokeRestart("muffleMessage") }
  )
  list(value = val, warnings = unique(warns))
}

# Newton polish with an active set: theta entries with a lower bound of 0 that sit
# below 1e-5 are held at 0 (a boundary fit), and Newton steps with central-difference
# derivatives of lme4's profiled objective refine the free entries. The result only
# wins the search if its objective is the lowest.
newton_polish <- function(par, fn, lower, upper = Inf, control = list(), ...) {
  h <- if (is.null(control$h)) 1e-4 else control$h
  maxit <- if (is.null(control$maxit)) 30 else control$maxit
  x <- par
  act <- is.finite(lower) & lower == 0 & x < 1e-5
  x[act] <- 0
  free <- which(!act)
  n <- length(free)
  f <- fn(x); nfev <- 1
  msg <- "max iterations"; it <- 0
  if (n == 0) { msg <- "all parameters at the bound"; maxit <- 0 }
  for (it in seq_len(maxit)) {
    if (any(x[free] - h < lower[free])) { msg <- "too close to bound; stopped"; break }
    g <- numeric(n); H <- matrix(0, n, n)
    e <- function(i, v) { z <- numeric(length(x)); z[free[i]] <- v; z }
    for (i in seq_len(n)) {
      fp <- fn(x + e(i, h)); fm <- fn(x - e(i, h)); nfev <- nfev + 2
      g[i] <- (fp - fm) / (2 * h)
      H[i, i] <- (fp - 2 * f + fm) / h^2
      if (i > 1) for (j in seq_len(i - 1)) {
        H[i, j] <- H[j, i] <- (fn(x + e(i, h) + e(j, h)) - fn(x + e(i, h) - e(j, h)) -
                               fn(x - e(i, h) + e(j, h)) + fn(x - e(i, h) - e(j, h))) / (4 * h^2)
        nfev <- nfev + 4
      }
    }
    ev <- eigen(H, symmetric = TRUE, only.values = TRUE)$values
    if (min(ev) <= 0) { msg <- "Hessian not positive definite; stopped"; break }
    step <- -solve(H, g)
    accepted <- FALSE
    for (k in 0:30) {
      xn <- x; xn[free] <- x[free] + step / 2^k
      if (all(xn >= lower)) {
        fnew <- fn(xn); nfev <- nfev + 1
        if (fnew <= f + 1e-12) { accepted <- TRUE; break }
      }
    }
    if (!accepted) { msg <- "no descent along Newton step (noise level)"; break }
    x <- xn; f <- fnew
    if (max(abs(step)) < 1e-10) { msg <- "step < 1e-10"; break }
  }
  fn(x)
  list(par = x, fval = f, value = f, convergence = 0, feval = nfev,
       message = paste("newton_polish:", sum(act), "at bound;", msg, "after", it, "iterations"))
}

opt_controls <- list(
  bobyqa_rho0.2 = lmerControl(optimizer = "bobyqa",
                              optCtrl = list(rhobeg = 0.2, rhoend = 1e-10, maxfun = 1e5)),
  bobyqa_rho0.02 = lmerControl(optimizer = "bobyqa",
                               optCtrl = list(rhobeg = 0.02, rhoend = 1e-10, maxfun = 1e5)),
  Nelder_Mead = lmerControl(optimizer = "Nelder_Mead",
                            optCtrl = list(FtolAbs = 1e-14, FtolRel = 1e-14,
                                           XtolRel = 1e-12, maxfun = 1e5)),
  nloptwrap_bobyqa = lmerControl(optimizer = "nloptwrap",
                                 optCtrl = list(algorithm = "NLOPT_LN_BOBYQA",
                                                xtol_abs = 1e-12, ftol_abs = 1e-14,
                                                xtol_rel = 1e-12, ftol_rel = 1e-15,
                                                maxeval = 1e5)),
  nloptwrap_NM = lmerControl(optimizer = "nloptwrap",
                             optCtrl = list(algorithm = "NLOPT_LN_NELDERMEAD",
                                            xtol_abs = 1e-12, ftol_abs = 1e-14,
                                            xtol_rel = 1e-12, ftol_rel = 1e-15,
                                            maxeval = 1e5)),
  nlminbwrap = lmerControl(optimizer = "nlminbwrap",
                           optCtrl = list(eval.max = 1e5, iter.max = 1e5,
                                          rel.tol = 1e-15, x.tol = 1e-12))
)
newton_ctrl <- lmerControl(optimizer = "newton_polish", optCtrl = list(h = 1e-4, maxit = 30))

conv_warning <- function(a) any(grepl("convergence|failed to converge|unable to evaluate",
                                      a$res$warnings, ignore.case = TRUE))
grad_max <- function(fit) {
  g <- fit@optinfo$derivs$gradient
  if (is.null(g)) NA_real_ else max(abs(g))
}
is_fit <- function(a) inherits(a$res$value, "merMod")
key_of <- function(theta) paste(formatC(theta, digits = 8, format = "g"), collapse = ",")

tie_tol <- 1e-8
best_index <- function(attempts) {
  ok <- sapply(attempts, is_fit)
  objs <- sapply(seq_along(attempts), function(i)
    if (ok[i]) objective(attempts[[i]]$res$value) else NA_real_)
  cand <- which(ok & objs <= min(objs, na.rm = TRUE) + tie_tol)
  cw <- sapply(attempts[cand], conv_warning)
  gm <- sapply(attempts[cand], function(a) grad_max(a$res$value))
  gm[is.na(gm)] <- Inf
  cand[order(cw, gm, objs[cand])[1]]
}

# Fit `formula` to `data` with every optimizer x start; return the best fit and
# a compact record of the search.
best_fit <- function(formula, data, REML, extra_starts = list(), mults = c(1, 0.2, 3),
                     controls = opt_controls, newton = TRUE) {
  environment(formula) <- environment()   # so lmer finds nothing outside `data`
  attempts <- list()
  add <- function(opt, st, r) attempts[[length(attempts) + 1]] <<- list(optimizer = opt, start = st, res = r)
  add("default", NULL, quiet_fit(lmer(formula, data = data, REML = REML)))
  th0 <- lFormula(formula, data = data, REML = REML)$reTrms$theta
  lower <- lFormula(formula, data = data, REML = REML)$reTrms$lower
  starts <- c(lapply(mults, function(m) th0 * m), extra_starts)
  starts <- lapply(starts, function(t) ifelse(lower == 0, pmax(t, 1e-3), t))
  run <- function(sts) for (st in sts) for (nm in names(controls))
    add(nm, st, quiet_fit(lmer(formula, data = data, REML = REML,
                               control = controls[[nm]], start = st)))
  run(starts)
  bt <- unname(getME(attempts[[best_index(attempts)]]$res$value, "theta"))
  run(list(ifelse(lower == 0, pmax(bt, 1e-6), bt)))
  if (newton) {
    objs <- sapply(attempts, function(a) if (is_fit(a)) objective(a$res$value) else Inf)
    ths <- lapply(attempts[order(objs)][seq_len(min(6, length(attempts)))],
                  function(a) unname(getME(a$res$value, "theta")))
    ths <- ths[!duplicated(sapply(ths, key_of))][1:min(2, length(ths))]
    for (st in ths) add("newton_polish", st,
                        quiet_fit(lmer(formula, data = data, REML = REML,
                                       control = newton_ctrl, start = st)))
  }
  i <- best_index(attempts)
  b <- attempts[[i]]
  objs <- sapply(attempts, function(a) if (is_fit(a)) objective(a$res$value) else NA_real_)
  dflt <- attempts[[1]]
  list(fit = b$res$value,
       search = list(
         objective_name = if (REML) "REMLcrit" else "deviance",
         best_objective = objs[i],
         best_optimizer = b$optimizer,
         best_start = if (is.null(b$start)) "lme4 default" else I(b$start),
         best_warnings = I(b$res$warnings),
         n_tried = length(attempts),
         n_failed = sum(is.na(objs)),
         n_within_1e6 = sum(objs <= objs[i] + 1e-6, na.rm = TRUE),
         default_objective = if (is_fit(dflt)) objective(dflt$res$value) else NA,
         default_minus_best = if (is_fit(dflt)) objective(dflt$res$value) - objs[i] else NA,
         default_warnings = I(dflt$res$warnings)))
}

rows_of <- function(m) lapply(seq_len(nrow(m)), function(i) I(unname(as.numeric(m[i, ]))))

# VarCorr as a named list of matrices (names as VarCorr names the terms)
G_list <- function(fit) {
  vc <- VarCorr(fit)
  out <- lapply(vc, function(G) list(names = I(colnames(G)),
                                     matrix = rows_of(matrix(as.numeric(G), nrow(G)))))
  names(out) <- names(vc)
  out
}

# The common extraction: fixef, se, vcov, G per term, sigma2, logLik, objective.
extract_basic <- function(fit) {
  fe <- fixef(fit)
  V <- as.matrix(vcov(fit))
  ll <- logLik(fit)
  out <- list(
    reml = isREML(fit),
    nobs = nobs(fit),
    ngroups = as.list(ngrps(fit)),
    fixef_names = I(names(fe)),
    fixef = as.list(fe),
    fixef_se = as.list(setNames(sqrt(diag(V)), names(fe))),
    vcov = rows_of(V),
    G = G_list(fit),
    sigma2 = sigma(fit)^2,
    theta = I(unname(getME(fit, "theta"))),
    loglik = as.numeric(ll),
    df = attr(ll, "df"),
    max_abs_gradient = grad_max(fit),
    singular = isSingular(fit, tol = 1e-4)
  )
  if (isREML(fit)) out$REMLcrit <- REMLcrit(fit) else out$deviance <- deviance(fit)
  out
}

# Read a CSV as teachlmm reads it: text columns become factors with levels in
# C-locale sort order (R's sort(method = "radix")).
read_data <- function(path) {
  d <- read.csv(path, check.names = FALSE, stringsAsFactors = FALSE)
  for (nm in names(d)) if (is.character(d[[nm]]))
    d[[nm]] <- factor(d[[nm]], levels = sort(unique(d[[nm]]), method = "radix"))
  d
}

versions <- function() list(
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  Matrix_version = as.character(packageVersion("Matrix")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
  machine = paste(Sys.info()[["sysname"]], Sys.info()[["release"]], Sys.info()[["machine"]]),
  selection_rule = paste("lowest objective over lme4 default + 6 optimizer settings x starts",
                         "(default theta x 1, 0.2, 3 and extras), a restart from the best,",
                         "newton_polish from the 2 best; ties within 1e-8 broken by no",
                         "convergence warning then smallest max |gradient|")
)
