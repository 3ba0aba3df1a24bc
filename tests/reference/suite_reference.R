# Benchmark suite of real data sets with one grouping factor (issue #12): lme4's best
# optimum (REML and ML) and lme4's formula-to-fit CPU time per fit.
#
# Usage (from the repo root; one BLAS thread):
#   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 Rscript tests/reference/suite_reference.R
# Data: tests/reference/data/*.csv (export_data.R). Output: tests/reference/suite_reference.json
# Set SUITE_TIMING_REPS=0 to skip the timing.

source("tests/reference/lmm_search.R")
out_path <- "tests/reference/suite_reference.json"
reps <- as.integer(Sys.getenv("SUITE_TIMING_REPS", "5"))

# name, csv, formula (plain column names), what it covers
suite <- list(
  list("bodyweight", "bodyweight.csv", "weight ~ Time + Diet + (1 + Time | Rat)", "q=2, 16 groups"),
  list("dialyzer", "dialyzer.csv", "rate ~ pressure + pressure2 + QB + (1 + pressure | Subject)", "q=2, 20 groups"),
  list("igf", "igf.csv", "conc ~ age + (1 + age | Lot)", "q=2, 10 groups, tiny slope variance"),
  list("milk", "milk.csv", "protein ~ Time + Diet + (1 | Cow)", "q=1, 79 groups"),
  list("wafer", "wafer.csv", "current ~ voltage + voltage2 + (1 + voltage | Wafer)", "q=2, 10 groups"),
  list("ovary", "ovary.csv", "follicles ~ sin_t + cos_t + (1 | Mare)", "q=1, 11 groups"),
  list("machines", "machines.csv", "score ~ MachineB + MachineC + (1 + MachineB + MachineC | Worker)",
       "q=3, 6 groups (few); equals score ~ Machine + (Machine | Worker)"),
  list("orthodont", "orthodont.csv", "distance ~ age + Sex + (1 + age | Subject)", "q=2, 27 groups"),
  list("loblolly", "loblolly.csv", "height ~ age + age2 + (1 + age | Seed)", "q=2, 14 groups"),
  list("co2", "co2.csv", "uptake ~ conc_dev + Type + Treatment + (1 | Plant)", "q=1, 12 groups"),
  list("chickweight_q2", "chickweight.csv", "weight ~ Time + Time2 + (1 + Time | Chick)", "q=2, 50 groups, time in days"),
  list("chickweight_q3", "chickweight.csv", "weight ~ Time + Time2 + (1 + Time + Time2 | Chick)", "q=3, 50 groups, growth model"),
  list("chem97", "chem97.csv", "score ~ gcsecnt + gender + (1 | school)", "q=1, 2410 groups (many), 31022 rows"),
  list("chem97_q2", "chem97.csv", "score ~ gcsecnt + gender + (1 + gcsecnt | school)", "q=2, 2410 groups (many)"),
  list("exam", "exam.csv", "normexam ~ standLRT + sex + (1 + standLRT | school)", "q=2, 65 groups, 4059 rows"),
  list("rail", "rail.csv", "travel ~ 1 + (1 | Rail)", "q=1, 6 groups, huge variance ratio"),
  list("dyestuff2", "dyestuff2.csv", "Yield ~ 1 + (1 | Batch)", "q=1, 6 groups, boundary fit (variance 0)")
)

cache <- list()
data_of <- function(f) {
  if (is.null(cache[[f]])) cache[[f]] <<- read_data(file.path("tests/reference/data", f))
  cache[[f]]
}

result <- list()
for (s in suite) {
  d <- data_of(s[[2]])
  for (REML in c(TRUE, FALSE)) {
    key <- paste0(s[[1]], if (REML) "_REML" else "_ML")
    cat(key, "\n")
    bf <- best_fit(as.formula(s[[3]]), d, REML)
    e <- c(list(dataset = s[[1]], data = paste0("tests/reference/data/", s[[2]]),
                formula = s[[3]], covers = s[[4]]), extract_basic(bf$fit))
    e$search <- bf$search
    result[[key]] <- e
    cat(sprintf("   obj %.10f via %s  default-best %.2e  singular %s\n", bf$search$best_objective,
                bf$search$best_optimizer, bf$search$default_minus_best, e$singular))
  }
}

# The factor form of the Machines model gives the same fit (check, recorded)
mf <- best_fit(score ~ Machine + (Machine | Worker), data_of("machines.csv"), TRUE)$fit
result$machines_REML$factor_formula <- "score ~ Machine + (Machine | Worker)"
result$machines_REML$factor_formula_REMLcrit <- REMLcrit(mf)

# ---- timing: lme4 formula-to-fit, CPU (user + sys), one BLAS thread ----
timing <- NULL
if (reps > 0) {
  keys <- names(result)[grepl("_(REML|ML)$", names(result))]
  fit_once <- function(s, REML) {
    d <- data_of(s[[2]]); f <- as.formula(s[[3]])
    st <- system.time(suppressWarnings(suppressMessages(lmer(f, data = d, REML = REML))), gcFirst = FALSE)
    unname(st[["user.self"]] + st[["sys.self"]])
  }
  times <- list()
  for (s in suite) for (REML in c(TRUE, FALSE)) fit_once(s, REML)   # warm-up, untimed
  for (r in seq_len(reps)) for (s in suite) for (REML in c(TRUE, FALSE)) {  # interleaved
    key <- paste0(s[[1]], if (REML) "_REML" else "_ML")
    times[[key]] <- c(times[[key]], fit_once(s, REML))
  }
  per_fit <- lapply(times, function(t) list(median_s = median(t), runs_s = I(t)))
  timing <- list(
    what = paste("lmer(formula, data = d, REML = ) with lme4's default optimizer, from a",
                 "data frame already read (factors made) to the fitted object; system.time",
                 "user + sys; median of", reps, "interleaved runs after one untimed warm-up"),
    note = paste("system.time resolution is about 1 ms, so tiny fits read 0 or a few ms.",
                 "Machine shared by several jobs (2 cores): indicative."),
    blas = tryCatch(sessionInfo()$BLAS, error = function(e) NA),
    lapack = tryCatch(sessionInfo()$LAPACK, error = function(e) NA),
    OPENBLAS_NUM_THREADS = Sys.getenv("OPENBLAS_NUM_THREADS"),
    OMP_NUM_THREADS = Sys.getenv("OMP_NUM_THREADS"),
    cpu = tryCatch(trimws(sub(".*:", "", grep("model name", readLines("/proc/cpuinfo"), value = TRUE)[1])),
                   error = function(e) NA),
    nproc = parallel::detectCores(),
    date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
    per_fit = per_fit,
    total_median_s = sum(sapply(per_fit, `[[`, "median_s"))
  )
}

result <- c(list(meta = c(versions(), list(
  datasets = lapply(setNames(suite, sapply(suite, `[[`, 1)),
                    function(s) list(data = s[[2]], formula = s[[3]], covers = s[[4]])),
  factor_levels = "text columns are factors with levels in C-locale sort order",
  G_layout = "G: per VarCorr term, names and matrix (list of rows)")),
  list(timing = timing)), result)
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
