# lme4 reference numbers for teachlmm (radon data).
#
# Usage (from the repo root):
#   Rscript tests/reference/lme4_reference.R data/radon.csv tests/reference/lme4_radon.json
#
# Every model is fitted by a multi-optimizer, multi-start search and the fit
# with the lowest objective (REMLcrit for REML, deviance for ML) is kept.
# lme4's default optimizer stops at a worse boundary point for some fits
# (notably M4); that plain default fit is recorded separately for M4.

# The shared helpers (objective, quiet_fit, newton_polish, opt_controls, key_of,
# conv_warning, grad_max, tie_tol, best_index, rows_of) come from lmm_search.R, as
# in every other reference script; this script keeps its own four-round search.
source("tests/reference/lmm_search.R")

args <- commandArgs(trailingOnly = TRUE)
data_path <- if (length(args) >= 1) args[1] else "data/radon.csv"
out_path  <- if (length(args) >= 2) args[2] else "tests/reference/lme4_radon.json"

radon <- read.csv(data_path)
stopifnot(nrow(radon) == 919)
# county as a factor with levels in numeric order 1..85
radon$county <- factor(radon$county, levels = sort(unique(as.integer(radon$county))))

models <- list(
  M0  = log_radon ~ 1 + (1 | county),
  M1  = log_radon ~ 1 + floor + (1 | county),
  M3u = log_radon ~ 1 + floor + (1 + floor || county),
  M3  = log_radon ~ 1 + floor + (1 + floor | county),
  M4  = log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)
)

# ---------------------------------------------------------------------------
# the search (helpers from lmm_search.R)
# ---------------------------------------------------------------------------

# Try every optimizer x start, return all attempts.
search_fits <- function(formula, REML, starts, include_default = TRUE) {
  attempts <- list()
  if (include_default) {
    r <- quiet_fit(lmer(formula, data = radon, REML = REML))
    attempts[[length(attempts) + 1]] <- list(optimizer = "default", start = NULL, res = r)
  }
  for (st in starts) {
    for (nm in names(opt_controls)) {
      r <- quiet_fit(lmer(formula, data = radon, REML = REML,
                          control = opt_controls[[nm]], start = st))
      attempts[[length(attempts) + 1]] <- list(optimizer = nm, start = st, res = r)
    }
  }
  attempts
}

# Lowest objective wins; ties within tie_tol go to no convergence warning, then the
# smallest lme4 gradient (lmm_search.R's best_index).
best_of <- function(attempts) list(attempt = attempts[[best_index(attempts)]])

describe_attempts <- function(attempts) {
  lapply(attempts, function(a) {
    ok <- inherits(a$res$value, "merMod")
    list(optimizer = a$optimizer,
         start = if (is.null(a$start)) "lme4 default" else I(a$start),
         objective = if (ok) objective(a$res$value) else NA,
         theta = if (ok) I(unname(getME(a$res$value, "theta"))) else NA,
         max_abs_gradient = if (ok) grad_max(a$res$value) else NA,
         warnings = I(a$res$warnings),
         error = if (ok) NA else conditionMessage(a$res$value))
  })
}

# ---------------------------------------------------------------------------
# starting values
# ---------------------------------------------------------------------------

base_starts <- list(
  M0  = list(1, 0.5, 0.2, 0.1, 0.01),
  M1  = list(1, 0.5, 0.2, 0.1, 0.01),
  M3u = list(c(1, 1), c(0.5, 0.5), c(0.2, 0.4), c(0.1, 0.4), c(0.4, 0.1), c(0.05, 0.3)),
  M3  = list(c(1, 0, 1), c(0.5, 0.2, 0.5), c(0.2, 0.1, 0.4), c(0.1, 0.2, 0.4),
             c(0.5, -0.2, 0.5), c(0.05, 0.3, 0.2), c(0.3, -0.1, 0.3), c(0.01, 0.5, 0.1)),
  M4  = list(c(1, 0, 1), c(0.5, 0.2, 0.5), c(0.2, 0.1, 0.4), c(0.1, 0.2, 0.4),
             c(0.5, -0.2, 0.5), c(0.05, 0.3, 0.2), c(0.3, -0.1, 0.3), c(0.01, 0.5, 0.1))
)

all_attempts <- list()
best <- list()

run_key <- function(m, REML) paste0(m, if (REML) "_REML" else "_ML")

# Round 1: base starts
for (m in names(models)) for (REML in c(TRUE, FALSE)) {
  k <- run_key(m, REML)
  cat("Round 1:", k, "\n")
  all_attempts[[k]] <- search_fits(models[[m]], REML, base_starts[[m]])
}

best_theta <- function(k) {
  b <- best_of(all_attempts[[k]])
  unname(getME(b$attempt$res$value, "theta"))
}

# Round 2: starts derived from the other fits, then polish from the best theta
derived_starts <- function(m, REML) {
  other <- if (REML) "_ML" else "_REML"
  th <- list()
  q1 <- function(t) list(t)
  if (m %in% c("M0", "M1")) {
    th <- c(th, list(best_theta(paste0(if (m == "M0") "M1" else "M0", "_REML"))),
            list(best_theta(paste0(if (m == "M0") "M1" else "M0", "_ML"))),
            list(best_theta(paste0(m, other))))
  } else if (m == "M3u") {
    for (src in c("M3_REML", "M3_ML", "M4_REML", "M4_ML")) {
      t <- best_theta(src)
      th <- c(th, list(c(t[1], sqrt(t[2]^2 + t[3]^2))))
    }
    th <- c(th, list(best_theta(paste0(m, other))))
    t1 <- best_theta("M1_REML"); th <- c(th, list(c(t1, 0.3)))
  } else {
    srcs <- setdiff(c("M3_REML", "M3_ML", "M4_REML", "M4_ML"), run_key(m, REML))
    for (src in srcs) th <- c(th, list(best_theta(src)))
    for (src in c("M3u_REML", "M3u_ML")) {
      t <- best_theta(src); th <- c(th, list(c(t[1], 0, t[2])))
    }
    t1 <- best_theta("M1_REML"); th <- c(th, list(c(t1, 0, 0.3)))
  }
  # drop starts with a zero/negative diagonal lower-bounded element
  th <- lapply(th, function(t) {
    if (length(t) == 1) return(max(t, 0.01))
    if (length(t) == 2) return(pmax(t, 0.01))
    t[1] <- max(t[1], 0.01); t[3] <- max(t[3], 0.01); t
  })
  th
}

for (m in names(models)) for (REML in c(TRUE, FALSE)) {
  k <- run_key(m, REML)
  cat("Round 2:", k, "\n")
  all_attempts[[k]] <- c(all_attempts[[k]],
                         search_fits(models[[m]], REML, derived_starts(m, REML),
                                     include_default = FALSE))
}

# Round 3: polish — restart every optimizer from the current best theta
for (m in names(models)) for (REML in c(TRUE, FALSE)) {
  k <- run_key(m, REML)
  cat("Round 3 (polish):", k, "\n")
  all_attempts[[k]] <- c(all_attempts[[k]],
                         search_fits(models[[m]], REML, list(best_theta(k)),
                                     include_default = FALSE))
}

# Round 4: Newton polish (custom optimizer above) from the three best distinct
# points found so far, followed by one more pass of every optimizer from there.
newton_ctrl <- lmerControl(optimizer = "newton_polish", optCtrl = list(h = 1e-4, maxit = 50))
for (m in names(models)) for (REML in c(TRUE, FALSE)) {
  k <- run_key(m, REML)
  cat("Round 4 (Newton polish):", k, "\n")
  att <- all_attempts[[k]]
  objs <- sapply(att, function(a) if (inherits(a$res$value, "merMod")) objective(a$res$value) else NA)
  ths <- lapply(att[order(objs)], function(a) unname(getME(a$res$value, "theta")))
  ths <- ths[!duplicated(sapply(ths, key_of))][1:3]
  for (st in ths) {
    r <- quiet_fit(lmer(models[[m]], data = radon, REML = REML, control = newton_ctrl, start = st))
    all_attempts[[k]][[length(all_attempts[[k]]) + 1]] <- list(optimizer = "newton_polish", start = st, res = r)
  }
}

# ---------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------

# rows_of (lmm_search.R): I() keeps length-1 rows/name vectors as JSON arrays despite auto_unbox = TRUE
G_of <- function(fit, m) {
  vc <- VarCorr(fit)
  if (m == "M3u") {
    # `||` splits into (1|county) + (0+floor|county); reassemble as diagonal 2x2
    v <- sapply(vc, function(x) { stopifnot(nrow(x) == 1); x[1, 1] })
    nms <- sapply(vc, function(x) colnames(x))
    ord <- match(c("(Intercept)", "floor"), nms)
    G <- diag(unname(v[ord]))
    dimnames(G) <- list(c("(Intercept)", "floor"), c("(Intercept)", "floor"))
    G
  } else {
    G <- vc$county
    G <- matrix(as.numeric(G), nrow(G), dimnames = dimnames(G))
    G
  }
}

# J x q matrix of conditional SDs from a q x q x J postVar array
sd_rows <- function(a) {
  q <- dim(a)[1]; J <- dim(a)[3]
  v <- sapply(seq_len(J), function(j) sqrt(diag(as.matrix(a[, , j]))))
  matrix(v, nrow = J, ncol = q, byrow = TRUE)
}

condsd_of <- function(re) {
  pv <- attr(re, "postVar")
  # for `||` lme4 returns one array per term (within-term blocks only)
  if (is.list(pv)) do.call(cbind, lapply(pv, sd_rows)) else sd_rows(pv)
}

extract_fit <- function(fit, m, formula_str) {
  REML <- isREML(fit)
  fe <- fixef(fit)
  V <- as.matrix(vcov(fit))
  G <- G_of(fit, m)
  re_all <- ranef(fit, condVar = TRUE)
  re <- re_all$county
  if (m == "M3u") re <- re[, c("(Intercept)", "floor"), drop = FALSE]
  cs <- condsd_of(re_all$county)
  colnames(cs) <- colnames(re_all$county)
  cs <- cs[, colnames(re), drop = FALSE]
  cf <- coef(fit)$county
  ll <- logLik(fit)
  out <- list(
    formula = formula_str,
    reml = REML,
    fixef = as.list(fe),
    fixef_se = as.list(setNames(sqrt(diag(V)), names(fe))),
    vcov = rows_of(V),
    vcov_names = I(names(fe)),
    G = rows_of(G),
    G_names = I(colnames(G)),
    sigma2 = sigma(fit)^2,
    sigma = sigma(fit),
    theta = as.list(getME(fit, "theta")),
    loglik = as.numeric(ll),
    df = attr(ll, "df"),
    AIC = AIC(fit),
    BIC = BIC(fit),
    nobs = nobs(fit),
    ngroups = as.list(ngrps(fit)),
    groups = levels(radon$county),
    ranef = rows_of(as.matrix(re)),
    ranef_names = I(colnames(re)),
    coef = rows_of(as.matrix(cf)),
    coef_names = I(colnames(cf)),
    condsd = rows_of(cs),
    condsd_names = I(colnames(cs)),
    optimizer = as.character(fit@optinfo$optimizer),
    max_abs_gradient = grad_max(fit),
    singular = isSingular(fit, tol = 1e-4)
  )
  if (REML) {
    out$REMLcrit <- REMLcrit(fit)
    out$deviance_ML_at_REML_estimates <- deviance(fit, REML = FALSE)
    rf <- refitML(fit)
    out$ml_refit_deviance <- deviance(rf)
  } else {
    out$deviance <- deviance(fit)
  }
  out
}

result <- list()
best_fits <- list()
for (m in names(models)) for (REML in c(TRUE, FALSE)) {
  k <- run_key(m, REML)
  b <- best_of(all_attempts[[k]])
  fit <- b$attempt$res$value
  best_fits[[k]] <- fit
  e <- extract_fit(fit, m, paste(deparse(models[[m]]), collapse = ""))
  e$search <- list(
    best_objective = objective(fit),
    objective_name = if (REML) "REMLcrit" else "deviance",
    best_optimizer = b$attempt$optimizer,
    best_start = if (is.null(b$attempt$start)) "lme4 default" else I(b$attempt$start),
    best_warnings = I(b$attempt$res$warnings),
    n_tried = length(all_attempts[[k]]),
    tried = describe_attempts(all_attempts[[k]])
  )
  result[[k]] <- e
  cat(sprintf("%-9s best obj %.8f via %s\n", k, objective(fit), b$attempt$optimizer))
}

# ---------------------------------------------------------------------------
# lme4 plain default fits for M4 (what the course lecture hit)
# ---------------------------------------------------------------------------

default_summary <- function(REML) {
  r <- quiet_fit(lmer(models$M4, data = radon, REML = REML))
  fit <- r$value
  ll <- logLik(fit)
  G <- G_of(fit, "M4")
  out <- list(
    call = sprintf("lmer(%s, data = radon, REML = %s)",
                   paste(deparse(models$M4), collapse = ""), REML),
    optimizer = fit@optinfo$optimizer,
    reml = REML,
    loglik = as.numeric(ll),
    fixef = as.list(fixef(fit)),
    fixef_se = as.list(setNames(sqrt(diag(as.matrix(vcov(fit)))), names(fixef(fit)))),
    G = rows_of(G),
    G_names = I(colnames(G)),
    sigma2 = sigma(fit)^2,
    theta = as.list(getME(fit, "theta")),
    singular = isSingular(fit, tol = 1e-4),
    warnings_messages = I(r$warnings)
  )
  if (REML) out$REMLcrit <- REMLcrit(fit) else out$deviance <- deviance(fit)
  out$best_objective_for_comparison <- objective(best_fits[[run_key("M4", REML)]])
  out
}
result$M4_REML$default_fit <- default_summary(TRUE)
result$M4_ML$default_fit <- default_summary(FALSE)

# ---------------------------------------------------------------------------
# anova(M1, M3, M4) — lme4's own (refits with ML) and one from the best ML fits
# ---------------------------------------------------------------------------

anova_rows <- function(tab) {
  lapply(seq_len(nrow(tab)), function(i) {
    list(model = rownames(tab)[i],
         npar = tab$npar[i], AIC = tab$AIC[i], BIC = tab$BIC[i],
         logLik = tab$logLik[i], deviance = tab$deviance[i],
         Chisq = tab$Chisq[i], Df = tab$Df[i], `Pr(>Chisq)` = tab[["Pr(>Chisq)"]][i])
  })
}

M1_REML <- best_fits$M1_REML; M3_REML <- best_fits$M3_REML; M4_REML <- best_fits$M4_REML
aq <- quiet_fit(anova(M1_REML, M3_REML, M4_REML))
a_lme4 <- aq$value
lme4_rows <- anova_rows(as.data.frame(a_lme4))

ml_fits <- list(M1 = best_fits$M1_ML, M3 = best_fits$M3_ML, M4 = best_fits$M4_ML)
mt <- data.frame(
  npar = sapply(ml_fits, function(f) attr(logLik(f), "df")),
  AIC = sapply(ml_fits, AIC), BIC = sapply(ml_fits, BIC),
  logLik = sapply(ml_fits, function(f) as.numeric(logLik(f))),
  deviance = sapply(ml_fits, deviance)
)
mt$Chisq <- c(NA, 2 * diff(mt$logLik))
mt$Df <- c(NA, diff(mt$npar))
mt[["Pr(>Chisq)"]] <- c(NA, pchisq(mt$Chisq[-1], mt$Df[-1], lower.tail = FALSE))
rownames(mt) <- c("M1_ML", "M3_ML", "M4_ML")
best_rows <- anova_rows(mt)

lme4_loglik <- as.data.frame(a_lme4)$logLik
max_gap <- max(abs(lme4_loglik - mt$logLik))
# For context: the same anova on plain default lmer() REML fits (lecture setting)
dflt <- lapply(models[c("M1", "M3", "M4")], function(f) quiet_fit(lmer(f, data = radon))$value)
M1_default <- dflt$M1; M3_default <- dflt$M3; M4_default <- dflt$M4
ad <- quiet_fit(anova(M1_default, M3_default, M4_default))

result$anova_M1_M3_M4 <- list(
  note = paste("lme4_anova: anova(M1_REML, M3_REML, M4_REML) on the best REML fits",
               "(lme4 refits with ML internally, starting from the REML theta).",
               "from_best_ML_fits: the same table computed from the best multi-start ML fits.",
               "max_abs_loglik_difference compares the two."),
  lme4_anova = lme4_rows,
  lme4_anova_warnings = I(aq$warnings),
  from_best_ML_fits = best_rows,
  max_abs_loglik_difference = max_gap,
  lme4_anova_reached_best_ML = max_gap < 1e-6,
  lme4_anova_on_default_fits = anova_rows(as.data.frame(ad$value)),
  lme4_anova_on_default_fits_note = paste("anova(M1, M3, M4) on plain lmer() default REML fits;",
                                          "lme4 refits with ML from those fits' theta and may stop at a worse point.",
                                          "For reference only; use lme4_anova above."),
  lme4_anova_on_default_fits_warnings = I(ad$warnings)
)

# ---------------------------------------------------------------------------
# Wald confidence intervals for fixed effects
# ---------------------------------------------------------------------------

wald <- function(fit) {
  ci <- confint(fit, method = "Wald")
  ci <- ci[names(fixef(fit)), , drop = FALSE]
  lapply(setNames(seq_len(nrow(ci)), rownames(ci)),
         function(i) list(lower = ci[i, 1], upper = ci[i, 2]))
}
result$confint_wald <- list(
  level = 0.95,
  columns = c("2.5 %", "97.5 %"),
  M3_REML = wald(best_fits$M3_REML),
  M4_REML = wald(best_fits$M4_REML)
)

# ---------------------------------------------------------------------------
# lecture: county-level intercepts/slopes implied by M4
# ---------------------------------------------------------------------------

u_j <- sapply(levels(radon$county),
              function(j) radon$log_uranium[which(radon$county == j)[1]])
alpha_beta <- function(fit, src) {
  cf <- as.matrix(coef(fit)$county)
  stopifnot(identical(rownames(cf), levels(radon$county)))
  list(source_fit = src,
       definition = paste("alpha_j = coef[,'(Intercept)'] + coef[,'log_uranium'] * u_j;",
                          "beta_j = coef[,'floor'] + coef[,'floor:log_uranium'] * u_j;",
                          "coef = coef(fit)$county, u_j = log_uranium of the county's first row"),
       groups = rownames(cf),
       u = unname(u_j),
       alpha = unname(cf[, "(Intercept)"] + cf[, "log_uranium"] * u_j),
       beta = unname(cf[, "floor"] + cf[, "floor:log_uranium"] * u_j))
}
result$lecture_alpha_beta_M4 <- alpha_beta(best_fits$M4_REML, "M4_REML")
result$lecture_alpha_beta_M4_ML <- alpha_beta(best_fits$M4_ML, "M4_ML")

# ---------------------------------------------------------------------------
# meta
# ---------------------------------------------------------------------------

result$meta <- list(
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  Matrix_version = as.character(packageVersion("Matrix")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
  data_file = basename(data_path),
  data_md5 = unname(tools::md5sum(data_path)),
  nrow = nrow(radon),
  county_levels = "factor(county) with levels ordered numerically 1..85",
  optimizers_tried = c("default", names(opt_controls), "newton_polish"),
  selection_rule = paste("lowest objective; fits within", tie_tol,
                         "of it are ties, broken by no convergence warning then smallest max |gradient|")
)

ord <- c("meta", as.vector(outer(names(models), c("_REML", "_ML"), paste0)),
         "anova_M1_M3_M4", "confint_wald", "lecture_alpha_beta_M4", "lecture_alpha_beta_M4_ML")
ord <- c(ord, setdiff(names(result), ord))
result <- result[ord]

write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
