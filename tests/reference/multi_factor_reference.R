# Several grouping factors, nested and crossed (issue #13): lme4's best optimum, ML and
# REML, with every G_k (keyed as VarCorr names the terms), ranef and condsd per factor.
#
# Usage (from the repo root):
#   Rscript tests/reference/multi_factor_reference.R
# Data: tests/reference/data/*.csv (export_data.R). Output: tests/reference/multi_factor_reference.json

source("tests/reference/lmm_search.R")
out_path <- "tests/reference/multi_factor_reference.json"
dref <- function(f) read_data(file.path("tests/reference/data", f))

# name, csv, formula, design
models <- list(
  list("pastes_nested", "pastes.csv", "strength ~ 1 + (1 | batch/cask)",
       "nested: 30 casks in 10 batches (lme4 terms cask:batch, batch)"),
  list("oats_nested", "oats.csv", "yield ~ nitro + Variety + (1 | Block/Variety)",
       "nested: split plot, Variety:Block in Block (6 blocks)"),
  list("pixel_nested", "pixel.csv", "pixel ~ day + day2 + (1 + day | Dog) + (1 | Dog:Side)",
       "nested: sides within dogs, random slope at the dog level"),
  list("chem97_nested", "chem97.csv", "score ~ gcsecnt + (1 | lea/school)",
       "nested: 2410 schools in 131 LEAs, 31022 rows"),
  list("penicillin_crossed", "penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)",
       "crossed: 24 plates x 6 samples, fully crossed"),
  list("scotssec_crossed", "scotssec.csv", "attain ~ verbal + sex + (1 | primary) + (1 | second)",
       "crossed: 148 primary x 19 secondary schools, partially crossed"),
  list("machines_crossed", "machines.csv", "score ~ 1 + (1 | Worker) + (1 | Machine)",
       "crossed: 6 workers x 3 machines, 3 replicates"),
  list("machines_nested_interaction", "machines.csv", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)",
       "nested interaction: Worker:Machine within Worker"),
  list("orthodont_two_terms", "orthodont.csv", "distance ~ age + (1 | Subject) + (0 + age | Subject)",
       "two terms on one factor (VarCorr names Subject and Subject.1)")
)

ranef_of <- function(fit) {
  re <- ranef(fit, condVar = TRUE)
  lapply(setNames(names(re), names(re)), function(g) {
    r <- re[[g]]
    pv <- attr(r, "postVar")
    sd_rows <- function(a) {
      q <- dim(a)[1]; J <- dim(a)[3]
      matrix(sapply(seq_len(J), function(j) sqrt(diag(as.matrix(a[, , j])))), nrow = J, ncol = q, byrow = TRUE)
    }
    cs <- if (is.list(pv)) do.call(cbind, lapply(pv, sd_rows)) else sd_rows(pv)
    list(levels = I(rownames(r)), names = I(colnames(r)),
         ranef = rows_of(as.matrix(r)), condsd = rows_of(cs))
  })
}

result <- list()
for (m in models) {
  d <- dref(m[[2]])
  for (REML in c(TRUE, FALSE)) {
    key <- paste0(m[[1]], if (REML) "_REML" else "_ML")
    cat(key, "\n")
    bf <- best_fit(as.formula(m[[3]]), d, REML)
    fit <- bf$fit
    e <- c(list(formula = m[[3]], data = paste0("tests/reference/data/", m[[2]]), design = m[[4]]),
           extract_basic(fit))
    e$G_order <- I(names(VarCorr(fit)))
    e$ranef <- ranef_of(fit)
    e$search <- bf$search
    result[[key]] <- e
    cat(sprintf("   obj %.10f via %s  default-best %.2e  singular %s\n", bf$search$best_objective,
                bf$search$best_optimizer, bf$search$default_minus_best, e$singular))
  }
}

result <- c(list(meta = c(versions(), list(
  G_layout = "G: per VarCorr term (keys as names(VarCorr(fit)), in lme4's term order), names and matrix",
  ranef_layout = paste("ranef: per grouping factor as ranef() keys them; levels, names (columns),",
                       "ranef (rows per level) and condsd (sqrt of the diagonal of condVar's postVar;",
                       "for a factor with several terms, lme4 gives one block per term)")))), result)
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
