# What lme4 does with a fit of several grouping factors (issue #13, Deliver 6): coef() per factor,
# predict() on new data with levels unseen at any factor (allow.new.levels = TRUE) and without
# random effects (re.form = NA), AIC/BIC/logLik/df, likelihood-ratio tests between nested fits
# (anova on the best ML fits), and the names lme4 gives one-factor fits with two terms
# (names(VarCorr) and names(ranef) of (1 + x || g)).
#
# Usage (from the repo root):
#   Rscript tests/reference/multi_factor_results_reference.R
# Data: tests/reference/data/*.csv. Output: tests/reference/multi_factor_results_reference.json

source("tests/reference/lmm_search.R")
out_path <- "tests/reference/multi_factor_results_reference.json"
dref <- function(f) read_data(file.path("tests/reference/data", f))

# name, csv, formula, new data (levels unseen at each factor, and a seen row)
models <- list(
  list("pastes_nested", "pastes.csv", "strength ~ 1 + (1 | batch/cask)",
       data.frame(batch = c("A", "A", "Z", "Z"), cask = c("a", "z", "a", "z"))),
  list("penicillin_crossed", "penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)",
       data.frame(plate = c("a", "zz", "a", "zz"), sample = c("A", "A", "ZZ", "ZZ"))),
  list("pixel_nested", "pixel.csv", "pixel ~ day + day2 + (1 + day | Dog) + (1 | Dog:Side)",
       data.frame(day = c(2, 4, 6, 8), day2 = c(4, 16, 36, 64), Dog = c(1, 1, 99, 99),
                  Side = c("R", "X", "L", "R"))),
  list("scotssec_crossed", "scotssec.csv", "attain ~ verbal + sex + (1 | primary) + (1 | second)",
       data.frame(verbal = c(0, 5, -3, 10), sex = c("M", "F", "F", "M"), primary = c(1, 999, 1, 999),
                  second = c(9, 9, 999, 999))),
  list("orthodont_two_terms", "orthodont.csv", "distance ~ age + (1 | Subject) + (0 + age | Subject)",
       data.frame(age = c(8, 12, 10), Subject = c("M01", "F11", "NEW"))),
  list("machines_nested_interaction", "machines.csv", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)",
       data.frame(Machine = c("A", "B", "C"), Worker = c(1, 1, 99)))
)

coef_of <- function(fit) {
  cf <- coef(fit)
  lapply(setNames(names(cf), names(cf)), function(g) {
    r <- as.matrix(cf[[g]])
    list(levels = I(rownames(cf[[g]])), names = I(colnames(r)), coef = rows_of(r))
  })
}

result <- list()
for (m in models) {
  d <- dref(m[[2]])
  nd <- m[[4]]
  for (REML in c(TRUE, FALSE)) {
    key <- paste0(m[[1]], if (REML) "_REML" else "_ML")
    cat(key, "\n")
    fit <- best_fit(as.formula(m[[3]]), d, REML)$fit
    e <- list(formula = m[[3]], data = paste0("tests/reference/data/", m[[2]]), reml = REML,
              fixef = as.list(fixef(fit)), loglik = as.numeric(logLik(fit)),
              df = attr(logLik(fit), "df"), AIC = AIC(fit), BIC = BIC(fit),
              varcorr_names = I(names(VarCorr(fit))), ranef_names = I(names(ranef(fit))),
              coef = coef_of(fit),
              newdata = lapply(nd, function(x) I(as.character(x))),
              predict_new = I(unname(predict(fit, newdata = nd, allow.new.levels = TRUE))),
              predict_fixed = I(unname(predict(fit, newdata = nd, re.form = NA))),
              fitted_head = I(unname(head(fitted(fit), 10))))
    result[[key]] <- e
  }
}

# one-factor fits with two terms on the factor: lme4's names
ortho <- dref("orthodont.csv")
one <- list(
  uncorrelated = "distance ~ age + (1 + age || Subject)",
  two_terms = "distance ~ age + (1 | Subject) + (0 + age | Subject)",
  one_term = "distance ~ age + (1 + age | Subject)")
result$one_factor_names <- lapply(one, function(f) {
  fit <- lmer(as.formula(f), data = ortho)
  list(formula = f, varcorr_names = I(names(VarCorr(fit))), ranef_names = I(names(ranef(fit))),
       coef_names = I(colnames(coef(fit)[[1]])))
})

# likelihood-ratio tests between nested fits (the best ML fit of each model)
tests <- list(
  list("pastes", "pastes.csv", "strength ~ 1 + (1 | batch)", "strength ~ 1 + (1 | batch/cask)"),
  list("penicillin", "penicillin.csv", "diameter ~ 1 + (1 | plate)", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
  list("scotssec", "scotssec.csv", "attain ~ verbal + (1 | primary) + (1 | second)",
       "attain ~ verbal + sex + (1 | primary) + (1 | second)")
)
result$anova <- list()
for (t in tests) {
  d <- dref(t[[2]])
  small <- best_fit(as.formula(t[[3]]), d, FALSE)$fit
  big <- best_fit(as.formula(t[[4]]), d, FALSE)$fit
  a <- anova(small, big)
  result$anova[[t[[1]]]] <- list(data = paste0("tests/reference/data/", t[[2]]), small = t[[3]], big = t[[4]],
                                 npar = I(a$npar), AIC = I(a$AIC), BIC = I(a$BIC), logLik = I(a$logLik),
                                 deviance = I(a$deviance), Chisq = a$Chisq[2], Df = a$Df[2],
                                 p = a[["Pr(>Chisq)"]][2])
}

result <- c(list(meta = c(versions(), list(
  selection = "each fit is lme4's best over several optimizers and starts (lmm_search.R best_fit)",
  predict = "predict(fit, newdata, allow.new.levels = TRUE); predict_fixed: re.form = NA",
  anova = "anova(small, big) of the best ML fits (no refit needed)"))), result)
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
