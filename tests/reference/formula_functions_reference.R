# lme4 fits of formulas that use R formula functions (issue #11 part 4), REML and ML,
# with predict(newdata =) on new rows (stateful transforms: scale, factor, poly).
#
# Usage (from the repo root):
#   Rscript tests/reference/formula_functions_reference.R
# Data: tests/reference/data/{chickweight,co2,co2_spaces}.csv (export_data.R).
# Output: tests/reference/formula_functions_reference.json

source("tests/reference/lmm_search.R")
out_path <- "tests/reference/formula_functions_reference.json"
dpath <- function(f) file.path("tests/reference/data", f)

datasets <- list(chickweight = read_data(dpath("chickweight.csv")),
                 co2 = read_data(dpath("co2.csv")),
                 co2_spaces = read_data(dpath("co2_spaces.csv")))

newdata <- list(
  chickweight = data.frame(Time = c(0, 4, 10.5, 21, 25), Diet = c(1L, 2L, 3L, 4L, 2L),
                           diet = c("d1", "d2", "d3", "d4", "d2"),
                           Chick = c(1L, 20L, 35L, 48L, 999L)),
  co2 = data.frame(conc = c(95, 250, 500, 1000, 675),
                   Type = c("Quebec", "Mississippi", "Quebec", "Mississippi", "Quebec"),
                   Treatment = c("nonchilled", "chilled", "chilled", "nonchilled", "chilled"),
                   Plant = c("Qn1", "Mc3", "Qc2", "Mn1", "new_plant")),
  co2_spaces = data.frame(`conc dev` = c(-0.405, -0.25, 0, 0.5, 0.175),
                          Type = c("Quebec", "Mississippi", "Quebec", "Mississippi", "Quebec"),
                          `plant id` = c("Qn1", "Mc3", "Qc2", "Mn1", "new_plant"),
                          check.names = FALSE, stringsAsFactors = FALSE)
)
newdata$chickweight$Time2 <- newdata$chickweight$Time^2
newdata$co2$conc_dev <- (newdata$co2$conc - 500) / 1000
newdata$co2$log_conc <- log(newdata$co2$conc)

# name, data, formula text, function(s) exercised
models <- list(
  list("cw_factor", "chickweight", "weight ~ Time + factor(Diet) + (1 + Time | Chick)", "factor(x)"),
  list("cw_I_power", "chickweight", "weight ~ Time + I(Time^2) + (1 + Time | Chick)", "I(x^2)"),
  list("cw_I_times", "chickweight", "weight ~ I(Time * 2) + factor(Diet) + (1 | Chick)", "I(x * 2)"),
  list("cw_poly_raw", "chickweight", "weight ~ poly(Time, 2, raw = TRUE) + (1 + Time | Chick)", "poly(x, 2, raw = TRUE)"),
  list("cw_scale", "chickweight", "weight ~ scale(Time) + factor(Diet) + (1 + Time | Chick)", "scale(x)"),
  list("cw_scale_center", "chickweight", "weight ~ scale(Time, scale = FALSE) + (1 + Time | Chick)", "scale(x, scale = FALSE)"),
  list("cw_sqrt", "chickweight", "weight ~ sqrt(Time) + (1 | Chick)", "sqrt"),
  list("cw_log_response", "chickweight", "log(weight) ~ Time + factor(Diet) + (1 + Time | Chick)", "log (response)"),
  list("cw_cross2", "chickweight", "weight ~ (Time + Time2 + diet)^2 + (1 + Time | Chick)", "(a + b + c)^2"),
  list("co2_log", "co2", "uptake ~ log(conc) + Type + (1 | Plant)", "log"),
  list("co2_log2", "co2", "uptake ~ log2(conc) + Treatment + (1 | Plant)", "log2"),
  list("co2_log10", "co2", "uptake ~ log10(conc) + (1 + conc_dev | Plant)", "log10"),
  list("co2_exp", "co2", "uptake ~ exp(conc_dev) + Type + (1 | Plant)", "exp"),
  list("co2_abs", "co2", "uptake ~ abs(conc_dev) + conc_dev + (1 | Plant)", "abs"),
  list("co2_offset", "co2", "uptake ~ conc_dev + Type + offset(log_conc) + (1 | Plant)", "offset(x)"),
  list("co2_relevel", "co2", "uptake ~ relevel(Type, ref = \"Quebec\") + log(conc) + (1 | Plant)", "relevel(x, ref = )"),
  list("co2_cross2", "co2", "uptake ~ (Type + Treatment + conc_dev)^2 + (1 | Plant)", "(a + b + c)^2"),
  list("co2_factor_numeric", "co2", "uptake ~ factor(conc) + Type + (1 | Plant)", "factor(x) of a numeric column"),
  list("co2_backticks", "co2_spaces", "uptake ~ `conc dev` + Type + (1 + `conc dev` | `plant id`)", "backtick-quoted names with spaces")
)

result <- list()
for (m in models) {
  name <- m[[1]]; dname <- m[[2]]; ftxt <- m[[3]]
  d <- datasets[[dname]]
  for (REML in c(TRUE, FALSE)) {
    key <- paste0(name, if (REML) "_REML" else "_ML")
    cat(key, "\n")
    bf <- best_fit(as.formula(ftxt), d, REML)
    fit <- bf$fit
    e <- c(list(formula = ftxt, data = paste0("tests/reference/data/", dname, ".csv"),
                functions = m[[4]]),
           extract_basic(fit))
    nd <- newdata[[dname]]
    # text columns of newdata get the training data's factor levels (as a user
    # would pass them; relevel() needs a factor)
    for (nm in names(nd)) if (is.character(nd[[nm]]) && is.factor(d[[nm]]))
      nd[[nm]] <- factor(nd[[nm]], levels = union(levels(d[[nm]]), unique(nd[[nm]])))
    pf <- quiet_fit(predict(fit, newdata = nd, re.form = NA))
    pr <- quiet_fit(predict(fit, newdata = nd, allow.new.levels = TRUE))
    e$predict <- list(
      newdata = newdata[[dname]],
      fixed_only = if (is.numeric(pf$value)) I(unname(pf$value)) else conditionMessage(pf$value),
      fixed_only_call = "predict(fit, newdata = newdata, re.form = NA)",
      with_ranef = if (is.numeric(pr$value)) I(unname(pr$value)) else conditionMessage(pr$value),
      with_ranef_call = "predict(fit, newdata = newdata, allow.new.levels = TRUE) (a new group gets ranef 0)",
      warnings = I(unique(c(pf$warnings, pr$warnings))))
    e$search <- bf$search
    result[[key]] <- e
    cat(sprintf("   obj %.10f  via %s  default-best %.2e\n", bf$search$best_objective,
                bf$search$best_optimizer, bf$search$default_minus_best))
  }
}

result <- c(list(meta = c(versions(), list(
  factor_levels = paste("text columns are factors with levels in C-locale sort order",
                        "(as read_data() in lmm_search.R); integer columns stay numeric"),
  G_layout = "G: per VarCorr term, names and matrix (list of rows)"))), result)
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
