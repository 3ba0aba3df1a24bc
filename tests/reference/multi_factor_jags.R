# JAGS posteriors of two models with two grouping factors (issue #13, Gibbs acceptance): one nested
# (Pastes, strength ~ 1 + (1 | batch/cask)) and one crossed (Penicillin, diameter ~ 1 + (1 | plate) +
# (1 | sample)), under one proper prior that teachlmm.multilevel_gibbs can state exactly:
#
#   beta    ~ N(0, tau2 = 1e4)                        JAGS: dnorm(0, 1e-4)  (a precision)
#   G_k     ~ InvGamma(1, 1) for every term k         JAGS: 1 / G_k ~ dgamma(1, 1)
#             (= InvWishart(nu0 = 2, S0 = 2) with q = 1; teachlmm Prior(nu0=2, S0=[[2]]))
#   sigma2  ~ InvGamma(1, 1)                          JAGS: 1 / sigma2 ~ dgamma(1, 1)
#             (teachlmm Prior(a0=1, b0=1, tau2=1e4))
#
# Long runs (4 chains x 1,000,000 iterations, every 10th kept, after 1,000 adaptation + 10,000 burn-in) so that the JAGS
# Monte Carlo standard errors are small next to teachlmm's. MCSE = sd / sqrt(ESS), ESS from
# coda::effectiveSize summed over chains (spectral density at zero).
#
# Usage (from the repo root; about 10-20 minutes):
#   Rscript tests/reference/multi_factor_jags.R
# Output: tests/reference/multi_factor_jags.json

suppressPackageStartupMessages({library(rjags); library(coda); library(jsonlite)})
source("tests/reference/lmm_search.R")            # read_data(), versions()
out_path <- "tests/reference/multi_factor_jags.json"
CHAINS <- 4; BURN <- 10000; THIN <- 10
KEEP <- as.integer(Sys.getenv("JAGS_KEEP", "1000000"))   # JAGS_KEEP=2000 for a quick try

model_text <- "
model {
  for (i in 1:n) {
    mu[i] <- beta0 + b1[g1[i]] + b2[g2[i]]
    y[i] ~ dnorm(mu[i], tau_e)
  }
  for (j in 1:J1) { b1[j] ~ dnorm(0, tau1) }
  for (j in 1:J2) { b2[j] ~ dnorm(0, tau2) }
  beta0 ~ dnorm(0, 1.0E-4)
  tau1 ~ dgamma(1, 1)
  tau2 ~ dgamma(1, 1)
  tau_e ~ dgamma(1, 1)
  G1 <- 1 / tau1
  G2 <- 1 / tau2
  sigma2 <- 1 / tau_e
}"

run <- function(name, d, y, g1, g2, names_G) {
  f1 <- factor(g1); f2 <- factor(g2)
  data <- list(y = y, g1 = as.integer(f1), g2 = as.integer(f2), n = length(y),
               J1 = nlevels(f1), J2 = nlevels(f2))
  inits <- lapply(1:CHAINS, function(k) list(.RNG.name = "base::Mersenne-Twister", .RNG.seed = 1000 + k,
                                            tau1 = 1 / k, tau2 = k, tau_e = 1, beta0 = mean(y)))
  t0 <- proc.time()[["elapsed"]]
  jm <- jags.model(textConnection(model_text), data = data, inits = inits, n.chains = CHAINS, quiet = TRUE,
                   n.adapt = 1000)
  update(jm, BURN)
  s <- coda.samples(jm, c("beta0", "G1", "G2", "sigma2"), n.iter = KEEP, thin = THIN)
  secs <- proc.time()[["elapsed"]] - t0
  keys <- c(beta0 = "beta[0]", G1 = paste0("G[", names_G[1], "]"), G2 = paste0("G[", names_G[2], "]"),
            sigma2 = "sigma2")
  out <- list()
  for (v in names(keys)) {
    x <- s[, v]
    all <- unlist(lapply(x, as.numeric))
    ess <- sum(sapply(x, effectiveSize))
    rh <- gelman.diag(x, autoburnin = FALSE)$psrf[1, 1]
    out[[keys[[v]]]] <- list(mean = mean(all), sd = sd(all), ess = ess, mcse = sd(all) / sqrt(ess),
                             q025 = unname(quantile(all, 0.025)), q975 = unname(quantile(all, 0.975)),
                             rhat = rh)
  }
  cat(sprintf("%s: %.1f s\n", name, secs))
  print(sapply(out, function(r) c(mean = r$mean, mcse = r$mcse, ess = r$ess)))
  list(posterior = out, seconds = secs)
}

pastes <- read_data("tests/reference/data/pastes.csv")
penicillin <- read_data("tests/reference/data/penicillin.csv")
results <- list(
  pastes_nested = c(list(formula = "strength ~ 1 + (1 | batch/cask)", data = "pastes.csv"),
                    run("pastes", pastes, pastes$strength, interaction(pastes$cask, pastes$batch, drop = TRUE),
                        pastes$batch, c("cask:batch", "batch"))),
  penicillin_crossed = c(list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", data = "penicillin.csv"),
                         run("penicillin", penicillin, penicillin$diameter, penicillin$plate, penicillin$sample,
                             c("plate", "sample")))
)
out <- list(
  description = paste("JAGS posterior summaries under beta ~ N(0, 1e4), every G_k ~ InvGamma(1, 1),",
                      "sigma2 ~ InvGamma(1, 1); chains x kept draws after burn-in; MCSE = sd/sqrt(ESS),",
                      "ESS = sum over chains of coda::effectiveSize"),
  prior = list(tau2 = 1e4, G_shape = 1, G_rate = 1, sigma2_shape = 1, sigma2_rate = 1),
  chains = CHAINS, burn_in = BURN, iterations_per_chain = KEEP, thin = THIN,
  jags_version = as.character(jags.version()), rjags_version = as.character(packageVersion("rjags")),
  models = results, versions = within(versions(), rm(selection_rule))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_path)
cat("wrote", out_path, "\n")
