"""Simulation-based calibration of the Gibbs sampler (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

If theta is drawn from the prior and y from the model given theta, then theta
is a draw from the posterior p(theta | y). So among L draws from a *correct*
posterior sampler, the rank of the true theta (the number of draws below it)
is uniform on 0, 1, ..., L, for every scalar parameter. Repeat
prior -> data -> sampler -> rank many times and the rank histogram must be
flat; a sampler that is off in any way (a wrong conditional, a bug in the
algebra, too short a warm-up) makes it sloped, U-shaped or humped.

Here: 200 replications per model, each a small data set (10 groups of 3-7
rows); the prior draws and the data come from scipy and numpy directly, not
from the code under test. The sampler runs 9 chains of 11 draws (L = 99, so
ranks 0..99 fall into 10 bins of 10), thinned by 8 after 100 warm-up sweeps
(kept draws 8 sweeps apart: about one integrated autocorrelation time of the
slowest quantity in the worst of 30 trial data sets, about three in a typical one). Each parameter's
histogram gets a chi-square test of uniformity; the familywise level is 1 %
(Bonferroni: each p-value must exceed 0.01 / number of parameters).

The sampler runs as :func:`teachlmm.gibbs.sample` runs by default, with the
interweaving step of :mod:`teachlmm.interweave` in every sweep; a q = 3 model
checks the general (non-fast) path and the 6-entry L of that step. The
Huang-Wand prior (:mod:`teachlmm.huang_wand`) is checked with fixed scales A_k
and proper priors on beta and sigma2 (Jeffreys' is improper), its prior draws
made by its auxiliary-variable form with scipy.

Deliberately broken samplers must fail the same test: sigma2's conditional rate
halved, and the interweaving step without its Metropolis-Hastings correction.
"""
import warnings

import numpy as np
import pytest
import scipy.stats

import teachlmm as tl
from teachlmm import gibbs, interweave

REPLICATIONS = 200
CHAINS, DRAWS, THIN, WARMUP = 9, 11, 8, 100
L = CHAINS * DRAWS                      # ranks 0..99
BINS = 10
LEVEL = 0.01


class Config:
    """One SBC experiment: a formula, a proper prior, and how to draw from that prior."""

    def __init__(self, name, formula, prior, params, draw_prior):
        self.name, self.formula, self.prior, self.params, self.draw_prior = name, formula, prior, params, draw_prior


def inv_wishart_scipy(nu, S, rng):
    return np.atleast_2d(scipy.stats.invwishart(df=nu, scale=S).rvs(random_state=rng))


def draw_correlated(rng):
    """beta ~ N(0, I), G ~ InvWishart(5, I), sigma2 ~ InvGamma(3, 2)."""
    return dict(beta=rng.normal(size=2), G=inv_wishart_scipy(5, np.eye(2), rng),
                sigma2=scipy.stats.invgamma(a=3, scale=2).rvs(random_state=rng))


def draw_uncorrelated(rng):
    """Each 1 x 1 block: InvWishart(nu0 - q + 1 = 3, S0_kk) = InvGamma(3/2, S0_kk/2)."""
    g = [scipy.stats.invgamma(a=1.5, scale=s / 2).rvs(random_state=rng) for s in (1.0, 0.5)]
    return dict(beta=rng.normal(size=2), G=np.diag(g), sigma2=scipy.stats.invgamma(a=3, scale=2).rvs(random_state=rng))


def draw_uniform_sigma(rng):
    """beta ~ N(0, I), G ~ InvWishart(3, 1) = InvGamma(3/2, 1/2), sigma ~ Uniform(0, 2)."""
    return dict(beta=rng.normal(size=3), G=np.array([[scipy.stats.invgamma(a=1.5, scale=0.5).rvs(random_state=rng)]]),
                sigma2=rng.uniform(0, 2) ** 2)


def draw_three(rng):
    """beta ~ N(0, I), G ~ InvWishart(6, I_3), sigma2 ~ InvGamma(3, 2)."""
    return dict(beta=rng.normal(size=2), G=inv_wishart_scipy(6, np.eye(3), rng),
                sigma2=scipy.stats.invgamma(a=3, scale=2).rvs(random_state=rng))


def huang_wand_scipy(A, rng, nu=2.0):
    """The Huang-Wand prior by its auxiliary variables: a_k ~ InvGamma(1/2, 1/A_k^2), G | a ~ InvWishart(nu + q - 1, 2 nu diag(1/a))."""
    a = np.array([scipy.stats.invgamma(a=0.5, scale=1 / Ak ** 2).rvs(random_state=rng) for Ak in A])
    return inv_wishart_scipy(nu + len(A) - 1, 2 * nu * np.diag(1 / a), rng)


def draw_huang_wand(rng):
    """beta ~ N(0, I), G ~ Huang-Wand(2, A = (1, 0.7)), sigma2 ~ InvGamma(3, 2)."""
    return dict(beta=rng.normal(size=2), G=huang_wand_scipy([1.0, 0.7], rng),
                sigma2=scipy.stats.invgamma(a=3, scale=2).rvs(random_state=rng))


def draw_huang_wand_uncorrelated(rng):
    """Each 1 x 1 block its own Huang-Wand (a half-t(2, A_k) standard deviation)."""
    g = [huang_wand_scipy([A], rng)[0, 0] for A in (1.0, 0.7)]
    return dict(beta=rng.normal(size=2), G=np.diag(g), sigma2=scipy.stats.invgamma(a=3, scale=2).rvs(random_state=rng))


G_ENTRIES_2 = ["G[0,0]", "G[1,0]", "G[1,1]"]
CONFIGS = {
    "correlated": Config("correlated", "y ~ 1 + x + (1 + x | g)",
                         gibbs.Prior(nu0=5, S0=np.eye(2), a0=3, b0=2, tau2=1.0),
                         ["beta[0]", "beta[1]"] + G_ENTRIES_2 + ["sigma2"], draw_correlated),
    "uncorrelated": Config("uncorrelated", "y ~ 1 + x + (1 + x || g)",
                           gibbs.Prior(nu0=4, S0=np.diag([1.0, 0.5]), a0=3, b0=2, tau2=1.0),
                           ["beta[0]", "beta[1]", "G[0,0]", "G[1,1]", "sigma2"], draw_uncorrelated),
    "uniform_sigma": Config("uniform_sigma", "y ~ 1 + x + u + (1 | g)",
                            gibbs.Prior(nu0=3, S0=[[1.0]], tau2=1.0, sigma_max=2.0),
                            ["beta[0]", "beta[1]", "beta[2]", "G[0,0]", "sigma2"], draw_uniform_sigma),
    "three": Config("three", "y ~ 1 + x + (1 + x + w | g)",
                    gibbs.Prior(nu0=6, S0=np.eye(3), a0=3, b0=2, tau2=1.0),
                    ["beta[0]", "beta[1]", "G[0,0]", "G[1,0]", "G[1,1]", "G[2,0]", "G[2,1]", "G[2,2]", "sigma2"],
                    draw_three),
    "huang_wand": Config("huang_wand", "y ~ 1 + x + (1 + x | g)", gibbs.Prior(A=[1.0, 0.7], a0=3, b0=2, tau2=1.0),
                         ["beta[0]", "beta[1]"] + G_ENTRIES_2 + ["sigma2"], draw_huang_wand),
    "huang_wand_uncorrelated": Config("huang_wand_uncorrelated", "y ~ 1 + x + (1 + x || g)",
                                      gibbs.Prior(A=[1.0, 0.7], a0=3, b0=2, tau2=1.0),
                                      ["beta[0]", "beta[1]", "G[0,0]", "G[1,1]", "sigma2"],
                                      draw_huang_wand_uncorrelated),
}


def simulate_data(cfg, truth, rng, J=10):
    """y = X beta + Z_j b_j + eps with b_j ~ N(0, G): 10 groups of 3-7 rows, x per row, u per group."""
    sizes = rng.integers(3, 8, J)
    g = np.repeat(np.arange(J), sizes)
    x, u = rng.normal(size=g.size), rng.normal(size=J)
    q = truth["G"].shape[0]
    b = rng.multivariate_normal(np.zeros(q), truth["G"], size=J)
    X = np.column_stack([np.ones(g.size), x, u[g]])[:, :truth["beta"].size]
    w = rng.normal(size=g.size) if q == 3 else np.zeros(g.size)       # the third random column (q = 3 only)
    Z = np.column_stack([np.ones(g.size), x, w])[:, :q]
    y = X @ truth["beta"] + (Z * b[g]).sum(1) + rng.normal(size=g.size) * np.sqrt(truth["sigma2"])
    return {"y": y, "x": x, "u": u[g], "w": w, "g": (g + 1).astype(float)}


def truth_value(truth, name):
    kind, idx = name.rstrip("]").split("[") if "[" in name else (name, "")
    idx = tuple(int(i) for i in idx.split(",")) if idx else ()
    return float(truth[kind][idx] if idx else truth[kind])


def sbc_ranks(cfg, seed, replications=REPLICATIONS, engine="fast"):
    """Ranks (replications, parameters) of the true values among the L posterior draws of ``engine``."""
    ranks = np.empty((replications, len(cfg.params)), dtype=int)
    for r in range(replications):
        rng = np.random.default_rng([seed, r])
        truth = cfg.draw_prior(rng)
        model = tl.Model(cfg.formula, simulate_data(cfg, truth, rng))
        with warnings.catch_warnings():                 # short runs by design: the ranks are the check
            warnings.simplefilter("ignore", tl.ConvergenceWarning)
            post = gibbs.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, thin=THIN, seed=[seed, r, 1],
                                prior=cfg.prior, keep_b=False, engine=engine)
        for k, name in enumerate(cfg.params):
            ranks[r, k] = int((post.get(name) < truth_value(truth, name)).sum())
    return ranks


def uniformity_pvalues(ranks):
    """Chi-square test of each column's rank histogram (BINS equal bins over 0..L) against uniform."""
    counts = np.stack([np.bincount(col * BINS // (L + 1), minlength=BINS) for col in ranks.T])
    return np.array([scipy.stats.chisquare(c).pvalue for c in counts]), counts


@pytest.fixture(scope="module")
def results():
    """SBC runs, computed once per module and shared by the tests."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = sbc_ranks(CONFIGS[name], seed=2018)
        return cache[name]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rank_histograms_are_uniform(results, name):
    cfg = CONFIGS[name]
    pvalues, counts = uniformity_pvalues(results(name))
    report = "\n".join(f"{p:>8} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(cfg.params, pvalues, counts))
    assert np.all(pvalues > LEVEL / len(cfg.params)), report


@pytest.mark.slow
def test_broken_sampler_fails_calibration(monkeypatch):
    """Halve the rate of sigma2's inverse-gamma conditional: sigma2 draws are then half as large, the true
    sigma2 ranks near the top, and the same test at the same seed rejects uniformity."""
    right = gibbs.sigma2_conditional

    def halved_rate(ssr, n, prior):
        shape, rate = right(ssr, n, prior)
        return shape, rate / 2
    monkeypatch.setattr(gibbs, "sigma2_conditional", halved_rate)
    cfg = CONFIGS["correlated"]
    pvalues, counts = uniformity_pvalues(sbc_ranks(cfg, seed=2018))
    sigma2 = cfg.params.index("sigma2")
    assert pvalues[sigma2] < 1e-6
    assert counts[sigma2][-1] > 3 * REPLICATIONS / BINS        # the truth sits above most draws
    assert pvalues.min() < LEVEL / len(cfg.params)            # i.e. the calibration test fails


@pytest.mark.slow
def test_interweaving_without_the_metropolis_hastings_correction_fails_calibration(monkeypatch):
    """Take the Laplace proposal of the interweaving step as if it were the exact conditional of (beta, L)
    (always accept it): the chain then samples the wrong law of G and sigma2, and the same test rejects.

    (Dropping only the Jacobian of G = L L' from the ratio is a real error too, but a small one here: it
    shifts G by about 0.15 posterior standard deviations, which 200 replications cannot see; measured
    p-values 0.24-0.71 with 30 groups per data set.)"""
    def accept_always(current, proposal, log_target, log_proposal, uniform):
        return proposal, np.ones(len(current), dtype=bool)
    textbook = interweave.Interweaving          # the readable step everywhere (the fast engine asks for fast=True;
    monkeypatch.setattr(interweave, "Interweaving", lambda model, prior, **_: textbook(model, prior, fast=False))
    monkeypatch.setattr(interweave, "metropolis_hastings", accept_always)   # tests/test_interweave_fast.py breaks that one)
    cfg = CONFIGS["correlated"]
    pvalues, counts = uniformity_pvalues(sbc_ranks(cfg, seed=2018))
    report = "\n".join(f"{p:>8} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(cfg.params, pvalues, counts))
    assert pvalues.min() < LEVEL / len(cfg.params), report


def test_uniformity_test_has_power_and_size():
    """The test statistic itself: uniform ranks pass, ranks from a too-narrow posterior do not."""
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, L + 1, size=(REPLICATIONS, 1))
    assert uniformity_pvalues(uniform)[0][0] > LEVEL
    # truth from N(0, 1), 'posterior' draws from N(0, 0.7^2): the truth falls in the tails too often
    truth = rng.normal(size=REPLICATIONS)
    narrow = (0.7 * rng.normal(size=(REPLICATIONS, L)) < truth[:, None]).sum(1)[:, None]
    assert uniformity_pvalues(narrow)[0][0] < 1e-3
