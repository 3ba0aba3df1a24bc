# Degrees of freedom for fixed effects (issue #14): lmerTest Satterthwaite, pbkrtest
# Kenward-Roger (via lmerTest and directly), type III F tests, and nlme::lme's
# between-within df, REML, at lme4's best optimum (lmm_search.R).
#
# Usage (from the repo root):
#   Rscript tests/reference/ddf_reference.R
# Data: data/radon.csv and tests/reference/data/*.csv. Output: tests/reference/ddf_reference.json

source("tests/reference/lmm_search.R")
suppressPackageStartupMessages({ library(lmerTest); library(pbkrtest); library(nlme) })
out_path <- "tests/reference/ddf_reference.json"

radon <- read.csv("data/radon.csv")
radon$county <- factor(radon$county, levels = sort(unique(as.integer(radon$county))))
dref <- function(f) read_data(file.path("tests/reference/data", f))

# name, data, lme4 formula, nlme fixed, nlme random (NULL: nlme not used)
models <- list(
  list("radon_M1", radon, "log_radon ~ 1 + floor + (1 | county)",
       log_radon ~ 1 + floor, ~ 1 | county),
  list("radon_M3", radon, "log_radon ~ 1 + floor + (1 + floor | county)",
       log_radon ~ 1 + floor, ~ 1 + floor | county),
  list("radon_M4", radon, "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)",
       log_radon ~ 1 + floor + log_uranium + floor:log_uranium, ~ 1 + floor | county),
  list("bodyweight_int", dref("bodyweight.csv"), "weight ~ Time * Diet + (1 + Time | Rat)",
       weight ~ Time * Diet, ~ 1 + Time | Rat),
  list("chickweight_int", dref("chickweight.csv"), "weight ~ Time * diet + (1 + Time | Chick)",
       weight ~ Time * diet, ~ 1 + Time | Chick),
  list("orthodont_int", dref("orthodont.csv"), "distance ~ age * Sex + (1 + age | Subject)",
       distance ~ age * Sex, ~ 1 + age | Subject),
  list("co2", dref("co2.csv"), "uptake ~ conc_dev + Type * Treatment + (1 | Plant)",
       uptake ~ conc_dev + Type * Treatment, ~ 1 | Plant),
  list("milk", dref("milk.csv"), "protein ~ Time + Diet + (1 | Cow)",
       protein ~ Time + Diet, ~ 1 | Cow),
  list("machines_q3", dref("machines.csv"), "score ~ MachineB + MachineC + (1 + MachineB + MachineC | Worker)",
       score ~ MachineB + MachineC, ~ 1 + MachineB + MachineC | Worker),
  list("rail", dref("rail.csv"), "travel ~ 1 + (1 | Rail)", travel ~ 1, ~ 1 | Rail)
)

coef_cols <- function(tab) {
  tab <- as.data.frame(tab)
  lapply(setNames(names(tab), names(tab)), function(cn) as.list(setNames(tab[[cn]], rownames(tab))))
}
anova_rows <- function(a) {
  a <- as.data.frame(a)
  lapply(seq_len(nrow(a)), function(i) c(list(term = rownames(a)[i]),
                                          lapply(setNames(names(a), names(a)), function(cn) a[[cn]][i])))
}
try_quiet <- function(expr) { r <- quiet_fit(expr); list(value = r$value, warnings = r$warnings,
                                                         error = if (inherits(r$value, "error")) conditionMessage(r$value) else NA) }

ddf_for <- function(fit) {
  m <- lmerTest::as_lmerModLmerTest(fit)
  out <- list()
  s <- try_quiet(summary(m, ddf = "Satterthwaite")$coefficients)
  out$satterthwaite <- if (is.na(s$error)) coef_cols(s$value) else s$error
  out$satterthwaite_warnings <- I(s$warnings)
  if (isREML(fit)) {
    k <- try_quiet(summary(m, ddf = "Kenward-Roger")$coefficients)
    out$kenward_roger <- if (is.na(k$error)) coef_cols(k$value) else k$error
    out$kenward_roger_warnings <- I(k$warnings)
    # pbkrtest directly: adjusted covariance and per-coefficient df
    V <- as.matrix(pbkrtest::vcovAdj(fit))
    p <- length(fixef(fit))
    out$pbkrtest <- list(
      vcovAdj = rows_of(V),
      se_adjusted = as.list(setNames(sqrt(diag(V)), names(fixef(fit)))),
      df = as.list(setNames(sapply(seq_len(p), function(j)
        pbkrtest::get_Lb_ddf(fit, matrix(replace(numeric(p), j, 1), nrow = 1))), names(fixef(fit)))))
    a3 <- try_quiet(anova(m, type = 3, ddf = "Satterthwaite"))
    out$anova_type3_satterthwaite <- if (is.na(a3$error)) anova_rows(a3$value) else a3$error
    a3k <- try_quiet(anova(m, type = 3, ddf = "Kenward-Roger"))
    out$anova_type3_kenward_roger <- if (is.na(a3k$error)) anova_rows(a3k$value) else a3k$error
  } else {
    k <- try_quiet(summary(m, ddf = "Kenward-Roger")$coefficients)
    out$kenward_roger_on_ML_fit <- list(error = k$error, warnings = I(k$warnings),
                                        result = if (is.na(k$error)) coef_cols(k$value) else NA)
    a3 <- try_quiet(anova(m, type = 3, ddf = "Satterthwaite"))
    out$anova_type3_satterthwaite <- if (is.na(a3$error)) anova_rows(a3$value) else a3$error
  }
  out
}

result <- list()
for (mm in models) {
  name <- mm[[1]]; d <- mm[[2]]
  reml_set <- if (startsWith(name, "radon")) c(TRUE, FALSE) else TRUE
  for (REML in reml_set) {
    key <- paste0(name, if (REML) "_REML" else "_ML")
    cat(key, "\n")
    bf <- best_fit(as.formula(mm[[3]]), d, REML)
    e <- c(list(formula = mm[[3]]), extract_basic(bf$fit))
    e$search <- bf$search
    e <- c(e, ddf_for(bf$fit))
    if (REML && !is.null(mm[[5]])) {
      r <- try_quiet(nlme::lme(mm[[4]], random = mm[[5]], data = d, method = "REML",
                               control = nlme::lmeControl(maxIter = 500, msMaxIter = 500,
                                                          niterEM = 100, opt = "optim")))
      if (is.na(r$error)) {
        tt <- summary(r$value)$tTable
        e$nlme_between_within <- list(
          call = paste0("nlme::lme(", deparse(mm[[4]]), ", random = ", deparse(mm[[5]]),
                        ", method = 'REML'); summary()$tTable"),
          tTable = coef_cols(tt),
          logLik = as.numeric(logLik(r$value)),
          note = "df are nlme's getFixDF (between-within) rule; the estimates are nlme's own fit",
          warnings = I(r$warnings))
      } else e$nlme_between_within <- list(error = r$error)
    }
    result[[key]] <- e
  }
}

result <- c(list(meta = c(versions(), list(
  lmerTest_version = as.character(packageVersion("lmerTest")),
  pbkrtest_version = as.character(packageVersion("pbkrtest")),
  nlme_version = as.character(packageVersion("nlme")),
  method = paste("lme4 best optimum (lmm_search.R), then lmerTest::as_lmerModLmerTest(fit);",
                 "summary(m, ddf=)$coefficients as columns keyed by fixed-effect name;",
                 "anova(m, type = 3, ddf=) rows; pbkrtest::vcovAdj and get_Lb_ddf on the lme4 fit"),
  radon = "data/radon.csv, county a factor with levels 1..85"))), result)
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
