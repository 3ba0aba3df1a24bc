"""Simulation-based calibration of the collapsed sampler (``engine="collapsed"``, :mod:`teachlmm.collapsed`).

The same experiment as tests/test_gibbs_sbc.py (its configurations, prior draws
made with scipy, data and rank test are imported from there): 200
replications per model, the true value's rank among 99 posterior draws
(9 chains x 11, thinned by 8 after 100 warm-up steps), a chi-square test of
each rank histogram at a familywise level of 1 %. Every prior the collapsed
engine writes as a density is covered: inverse-Wishart (one block, ``||``
blocks, q = 3), sigma ~ Uniform, and Huang-Wand with fixed scales (one block
and ``||``).

A deliberately broken sampler must fail: the chain run on the density of
theta instead of phi (the log Jacobian of :class:`teachlmm.collapsed.Coordinates`
left out) samples a different law, and the same test at the same seed rejects.
"""
import numpy as np
import pytest

from teachlmm import collapsed
from test_gibbs_sbc import (BINS, CHAINS, CONFIGS, DRAWS, LEVEL, REPLICATIONS, THIN, WARMUP, sbc_ranks,
                            uniformity_pvalues)


def collapsed_ranks(cfg, seed, replications=REPLICATIONS):
    """Ranks (replications, parameters) of the true values among the collapsed sampler's draws."""
    return sbc_ranks(cfg, seed, replications, engine="collapsed")


def report(cfg, pvalues, counts):
    return "\n".join(f"{p:>8} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(cfg.params, pvalues, counts))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_collapsed_rank_histograms_are_uniform(name):
    cfg = CONFIGS[name]
    pvalues, counts = uniformity_pvalues(collapsed_ranks(cfg, seed=1994))
    assert np.all(pvalues > LEVEL / len(cfg.params)), report(cfg, pvalues, counts)


@pytest.mark.slow
def test_collapsed_sampler_without_the_jacobian_fails_calibration(monkeypatch):
    """Target p(theta | y) read as a density in phi (no log |d theta / d phi|): the wrong law, rejected."""
    monkeypatch.setattr(collapsed.Coordinates, "log_jacobian", lambda self, phi: np.zeros(np.shape(phi)[:-1]))
    cfg = CONFIGS["correlated"]
    pvalues, counts = uniformity_pvalues(collapsed_ranks(cfg, seed=1994))
    assert pvalues.min() < LEVEL / len(cfg.params), report(cfg, pvalues, counts)
    assert BINS == 10 and CHAINS * DRAWS == 99 and THIN == 8 and WARMUP == 100   # the experiment of test_gibbs_sbc
