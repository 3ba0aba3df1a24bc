# lme4's fit of InstEval, the scale benchmark of issue #13 (numbers only: the data set
# comes with lme4 (GPL) and is not exported here; a benchmark can write it with
#   Rscript -e 'write.csv(lme4::InstEval[c("y","s","d","dept","service")], "insteval.csv", row.names = FALSE)'
# ). Model: y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept), REML and ML.
#
# Usage (from the repo root; one BLAS thread):
#   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 Rscript tests/reference/insteval_reference.R
# Output: tests/reference/insteval_reference.json. A smaller search than lmm_search.R's
# (each fit takes seconds): lme4's default, bobyqa, nloptwrap BOBYQA and nlminbwrap from
# lme4's default start, then the same three from the best theta.

source("tests/reference/lmm_search.R")
out_path <- "tests/reference/insteval_reference.json"
reps <- as.integer(Sys.getenv("INSTEVAL_TIMING_REPS", "5"))
d <- as.data.frame(lme4::InstEval)
f <- y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)
ctrls <- opt_controls[c("bobyqa_rho0.2", "nloptwrap_bobyqa", "nlminbwrap")]

result <- list()
for (REML in c(TRUE, FALSE)) {
  key <- if (REML) "insteval_REML" else "insteval_ML"
  cat(key, "\n")
  bf <- best_fit(f, d, REML, mults = 1, controls = ctrls, newton = FALSE)
  e <- c(list(formula = paste(deparse(f), collapse = ""),
              data = "lme4::InstEval (lme4 1.1-31), all 73421 rows; service a 0/1 factor"),
         extract_basic(bf$fit))
  e$G_order <- I(names(VarCorr(bf$fit)))
  e$search <- bf$search
  result[[key]] <- e
  cat(sprintf("   obj %.10f via %s  default-best %.2e\n", bf$search$best_objective,
              bf$search$best_optimizer, bf$search$default_minus_best))
}

timing <- NULL
if (reps > 0) {
  one <- function(REML) {
    st <- system.time(suppressWarnings(suppressMessages(lmer(f, data = d, REML = REML))), gcFirst = FALSE)
    unname(st[["user.self"]] + st[["sys.self"]])
  }
  one(TRUE); one(FALSE)   # warm-up
  tt <- list(insteval_REML = numeric(0), insteval_ML = numeric(0))
  for (r in seq_len(reps)) { tt$insteval_REML <- c(tt$insteval_REML, one(TRUE)); tt$insteval_ML <- c(tt$insteval_ML, one(FALSE)) }
  timing <- list(
    what = paste("lmer(formula, data = InstEval, REML = ) with lme4's default optimizer;",
                 "system.time user + sys; median of", reps, "interleaved runs after a warm-up"),
    note = "Machine shared by several jobs (2 cores): indicative.",
    blas = sessionInfo()$BLAS,
    OPENBLAS_NUM_THREADS = Sys.getenv("OPENBLAS_NUM_THREADS"),
    date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
    per_fit = lapply(tt, function(t) list(median_s = median(t), runs_s = I(t))))
}

result <- c(list(meta = versions(), timing = list(timing)), result)
result$timing <- timing
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
