"""Simulation-based calibration of the Gibbs sampler for two grouping factors (Talts et al. 2018).

As tests/test_gibbs_sbc.py does for one factor: draw theta from the prior (scipy and numpy, not the
code under test), data given theta, run the sampler, and rank the truth among L = 99 posterior draws
(9 chains x 11 draws, thinned by 5 after 100 warm-up sweeps); over 200 replications each parameter's
rank histogram (10 bins) must pass a chi-square test of uniformity at a familywise 1 % (Bonferroni).

Two models, each with a prior per term:

* crossed: ``y ~ 1 + x + (1 | row) + (1 | col)`` on an 8 x 6 grid, each cell observed with
  probability 0.8; G_row ~ InvWishart(3, 1) = InvGamma(3/2, 1/2), G_col ~ Huang-Wand(A = 1),
  beta ~ N(0, I), sigma2 ~ InvGamma(3, 2);
* nested: ``y ~ 1 + (1 | outer/inner)``, 6 outer levels x 3 inner x 2 rows; G_inner:outer ~
  InvWishart(3, 1), G_outer ~ InvWishart(4, 2), beta ~ N(0, 1), sigma2 ~ InvGamma(3, 2).

Both run the default joint update; the crossed model also the factorwise update (an exact sampler too,
only slower to mix). Deliberately broken samplers must fail: G_k | b_k drawn from half the scatter
sum_j b_kj b_kj', and a joint draw that loses the coupling of the largest factor to the rest (its
levels drawn around the conditional mean of the Schur part instead of its draw).

Measured (seed 2020, 200 replications): smallest p-value crossed/joint 0.38, nested/joint 0.041
(G[inner:outer]; 0.29 at seed 7), crossed/factorwise 0.47; half the scatter 4e-235 (G[col]),
the uncoupled joint draw 7e-7 (sigma2). Each configuration takes about a minute of CPU.
"""
import numpy as np
import pytest
import scipy.stats

import teachlmm as tl
from teachlmm import multilevel_gibbs as mg
from teachlmm.multilevel import MultilevelModel

REPLICATIONS = 200
CHAINS, DRAWS, THIN, WARMUP = 9, 11, 5, 100
L = CHAINS * DRAWS
BINS = 10
LEVEL = 0.01


def invgamma(shape, scale, rng):
    return float(scipy.stats.invgamma(a=shape, scale=scale).rvs(random_state=rng))


def huang_wand_q1(A, rng, nu=2.0):
    """a ~ InvGamma(1/2, 1/A^2), G | a ~ InvWishart(nu, 2 nu / a) (q = 1)."""
    a = invgamma(0.5, 1 / A ** 2, rng)
    return float(scipy.stats.invwishart(df=nu, scale=2 * nu / a).rvs(random_state=rng))


def crossed(rng):
    truth = dict(beta=rng.normal(size=2), row=invgamma(1.5, 0.5, rng), col=huang_wand_q1(1.0, rng),
                 sigma2=invgamma(3, 2, rng))
    i, j = np.meshgrid(np.arange(8), np.arange(6), indexing="ij")
    kept = rng.random(i.shape) < 0.8
    i, j = i[kept], j[kept]
    x = rng.normal(size=i.size)
    a, c = rng.normal(size=8) * np.sqrt(truth["row"]), rng.normal(size=6) * np.sqrt(truth["col"])
    y = truth["beta"][0] + truth["beta"][1] * x + a[i] + c[j] + rng.normal(size=i.size) * np.sqrt(truth["sigma2"])
    data = {"y": y, "x": x, "row": np.array([f"r{k}" for k in i]), "col": np.array([f"c{k}" for k in j])}
    values = {"beta[0]": truth["beta"][0], "beta[1]": truth["beta"][1], "G[row]": truth["row"],
              "G[col]": truth["col"], "sigma2": truth["sigma2"]}
    return data, values


def nested(rng):
    truth = dict(beta=rng.normal(), inner=invgamma(1.5, 0.5, rng), outer=invgamma(2, 1, rng),
                 sigma2=invgamma(3, 2, rng))
    outer = np.repeat(np.arange(6), 6)
    inner = np.tile(np.repeat(np.arange(3), 2), 6)
    u = rng.normal(size=6) * np.sqrt(truth["outer"])
    v = rng.normal(size=18) * np.sqrt(truth["inner"])
    y = truth["beta"] + u[outer] + v[outer * 3 + inner] + rng.normal(size=36) * np.sqrt(truth["sigma2"])
    data = {"y": y, "outer": np.array([f"o{k}" for k in outer]), "inner": np.array([f"i{k}" for k in inner])}
    values = {"beta[0]": truth["beta"], "G[inner:outer]": truth["inner"], "G[outer]": truth["outer"],
              "sigma2": truth["sigma2"]}
    return data, values


CONFIGS = {
    "crossed": ("y ~ 1 + x + (1 | row) + (1 | col)", crossed,
                {"row": tl.gibbs.Prior(nu0=3, S0=[[1.0]]), "col": tl.gibbs.Prior(A=1.0),
                 "Residual": tl.gibbs.Prior(a0=3, b0=2, tau2=1.0)}),
    "nested": ("y ~ 1 + (1 | outer/inner)", nested,
               {"inner:outer": tl.gibbs.Prior(nu0=3, S0=[[1.0]]), "outer": tl.gibbs.Prior(nu0=4, S0=[[2.0]]),
                "Residual": tl.gibbs.Prior(a0=3, b0=2, tau2=1.0)}),
}


def sbc_ranks(name, seed=2020, update="joint", replications=REPLICATIONS):
    formula, simulate, prior = CONFIGS[name]
    ranks = None
    for r in range(replications):
        rng = np.random.default_rng([seed, r])
        data, truth = simulate(rng)
        model = MultilevelModel(formula, data)
        post = mg.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, thin=THIN, seed=[seed, r, 1],
                         prior=prior, update=update, check=False)
        if ranks is None:
            ranks = np.empty((replications, len(truth)), dtype=int)
        ranks[r] = [int((post.get(p) < v).sum()) for p, v in truth.items()]
    return list(truth), ranks


def uniformity_pvalues(ranks):
    counts = np.stack([np.bincount(col * BINS // (L + 1), minlength=BINS) for col in ranks.T])
    return np.array([scipy.stats.chisquare(c).pvalue for c in counts]), counts


def report(params, pvalues, counts):
    return "\n".join(f"{p:>16} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(params, pvalues, counts))


@pytest.mark.slow
@pytest.mark.parametrize("name, update", [("crossed", "joint"), ("nested", "joint"), ("crossed", "factorwise")])
def test_rank_histograms_are_uniform(name, update):
    params, ranks = sbc_ranks(name, update=update)
    pvalues, counts = uniformity_pvalues(ranks)
    assert np.all(pvalues > LEVEL / len(params)), report(params, pvalues, counts)


@pytest.mark.slow
def test_G_from_half_the_scatter_fails_calibration(monkeypatch):
    right = mg._draw_G
    monkeypatch.setattr(mg, "_draw_G", lambda b, G_now, tp, rngs: right(b / np.sqrt(2), G_now, tp, rngs))
    params, ranks = sbc_ranks("crossed", replications=100)        # 200 gave p = 4e-235 for G[col]
    pvalues, counts = uniformity_pvalues(ranks)
    assert pvalues.min() < LEVEL / len(params), report(params, pvalues, counts)


@pytest.mark.slow
def test_joint_draw_without_the_coupling_fails_calibration(monkeypatch):
    """Draw the largest factor's levels given the *mean* of the Schur part (u_r's noise set to 0 for
    them): each level's own conditional is right, but the shared uncertainty of beta and the other
    factor is lost from b_1."""
    right = mg.draw_joint

    def uncoupled(xp, Ts, sigma2, inv_tau2, z):
        beta, bs = right(xp, Ts, sigma2, inv_tau2, z)
        z0 = z.copy()
        z0[xp.Js[0] * xp.qs[0]:] = 0.0
        return beta, [right(xp, Ts, sigma2, inv_tau2, z0)[1][0]] + bs[1:]
    monkeypatch.setattr(mg, "draw_joint", uncoupled)
    params, ranks = sbc_ranks("crossed")
    pvalues, counts = uniformity_pvalues(ranks)
    assert pvalues.min() < LEVEL / len(params), report(params, pvalues, counts)
