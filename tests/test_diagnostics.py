"""Tests of teachlmm.diagnostics: R-hat, ESS and MCSE.

Two kinds of test:

* Statistical checks that need nothing but numpy/scipy: iid draws have R-hat
  near 1 and ESS near the number of draws, an AR(1) chain has the ESS theory
  predicts, disagreeing chains have a large R-hat. Tolerances are about four
  standard deviations of the estimator (measured over 300 seeds), so the
  fixed-seed tests are not fragile.
* Agreement with ArviZ, the reference implementation of Vehtari et al.
  (2021). ArviZ is a test-only extra: those tests are skipped without it.
"""
import doctest
import warnings

import numpy as np
import pytest
import scipy.signal

from teachlmm import diagnostics
from teachlmm.diagnostics import (
    autocorrelation_time,
    autocovariance,
    combined_autocorrelation,
    ess_bulk,
    ess_mean,
    ess_tail,
    mcse_mean,
    rank_normalize,
    rhat,
    split_chains,
)


def ar1(phi, shape, rng):
    """Stationary AR(1) chains x_t = phi x_{t-1} + e_t, e_t ~ N(0, 1).

    Its autocorrelation is rho_t = phi**t, so tau = (1 + phi) / (1 - phi).
    """
    noise = rng.normal(size=shape)
    noise[:, 0] /= np.sqrt(1 - phi**2)          # start in the stationary law
    return scipy.signal.lfilter([1.0], [1.0, -phi], noise, axis=-1)


# ----------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------

def test_split_chains_drops_middle_draw_of_odd_chains():
    x = np.arange(14.0).reshape(2, 7)
    halves = split_chains(x)
    assert halves.shape == (4, 3)
    np.testing.assert_array_equal(halves, [[0, 1, 2], [7, 8, 9], [4, 5, 6], [11, 12, 13]])


def test_rank_normalize_is_monotone_symmetric_and_keeps_ties():
    rng = np.random.default_rng(0)
    x = rng.standard_cauchy(size=(3, 50))
    x[0, :5] = x[1, 7]                            # six tied draws
    z = rank_normalize(x)
    order = np.argsort(x, axis=None)
    assert np.all(np.diff(z.ravel()[order]) >= 0)
    assert np.all(z[0, :5] == z[1, 7])
    # the scores of distinct draws are symmetric around 0
    w = rank_normalize(rng.normal(size=101))
    np.testing.assert_allclose(np.sort(w), -np.sort(w)[::-1], atol=1e-12)
    assert abs(np.median(w)) < 1e-12


def test_autocovariance_matches_direct_sum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 37))
    n = x.shape[1]
    c = x - x.mean(axis=1, keepdims=True)
    direct = np.array([[c[m, : n - t] @ c[m, t:] / n for t in range(n)] for m in range(2)])
    np.testing.assert_allclose(autocovariance(x), direct, atol=1e-12)


def test_autocorrelation_time_of_known_sequences():
    phi = 0.8
    rho = phi ** np.arange(500)
    assert autocorrelation_time(rho) == pytest.approx((1 + phi) / (1 - phi), rel=1e-9)
    # white noise: only rho_0 = 1
    assert autocorrelation_time(np.r_[1.0, np.zeros(99)]) == pytest.approx(1.0)
    # a noisy bump after the first negative pair is ignored (initial positive sequence)
    rho = np.r_[1.0, 0.5, -0.3, -0.3, 0.9, 0.9, np.zeros(20)]
    assert autocorrelation_time(rho) == pytest.approx(-1 + 2 * 1.5)
    # an increasing pair is cut down to the previous one (initial monotone sequence)
    rho = np.r_[1.0, 0.2, 0.7, 0.7, -0.2, -0.2, np.zeros(20)]
    assert autocorrelation_time(rho) == pytest.approx(-1 + 2 * (1.2 + 1.2))


def test_combined_autocorrelation_of_ar1_is_geometric():
    rng = np.random.default_rng(2)
    rho = combined_autocorrelation(ar1(0.7, (4, 20000), rng))
    np.testing.assert_allclose(rho[:6], 0.7 ** np.arange(6), atol=0.03)


def test_docstring_examples_run():
    result = doctest.testmod(diagnostics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ----------------------------------------------------------------------------
# statistical behaviour (no ArviZ needed)
# ----------------------------------------------------------------------------

def test_iid_draws_have_rhat_one_and_ess_near_draw_count():
    x = np.random.default_rng(3).normal(size=(4, 1000))
    # over 300 seeds: R-hat 1.0003 +- 0.0005, each ESS 3900 +- 170 (of S = 4000)
    assert rhat(x) < 1.005
    for ess in (ess_bulk, ess_tail, ess_mean):
        assert ess(x) == pytest.approx(4000, rel=0.2)


def test_ar1_ess_matches_theory():
    phi = 0.9
    x = ar1(phi, (4, 10000), np.random.default_rng(4))
    expected = x.size * (1 - phi) / (1 + phi)      # S / tau = 2105
    # over 100 seeds the estimate is 2108 +- 133
    assert ess_mean(x) == pytest.approx(expected, rel=0.25)
    assert ess_bulk(x) == pytest.approx(expected, rel=0.25)
    assert rhat(x) < 1.01


def test_shifted_chains_have_large_rhat():
    x = np.random.default_rng(5).normal(size=(4, 1000)) + np.array([0, 0, 0, 2.0])[:, None]
    assert rhat(x) > 1.1
    assert ess_bulk(x) < 400


def test_chains_with_different_scales_are_caught_by_folding():
    x = np.random.default_rng(6).normal(size=(4, 1000)) * np.array([1, 1, 1, 3.0])[:, None]
    halves = split_chains(x)
    bulk = diagnostics.potential_scale_reduction(rank_normalize(halves))
    assert bulk < 1.01                              # same centre: bulk R-hat is fooled
    assert rhat(x) > 1.05                           # the folded (tail) R-hat is not


def test_drifting_single_chain_is_caught_by_splitting():
    rng = np.random.default_rng(7)
    x = rng.normal(size=1000) + np.linspace(0, 3, 1000)
    assert rhat(x) > 1.1
    assert rhat(rng.normal(size=1000)) < 1.01


def test_heavy_tails_do_not_break_bulk_diagnostics():
    x = np.random.default_rng(8).standard_cauchy(size=(4, 1000))
    assert rhat(x) < 1.01
    assert ess_bulk(x) == pytest.approx(4000, rel=0.2)
    assert ess_tail(x) == pytest.approx(4000, rel=0.2)


def test_antithetic_ess_is_capped_at_s_log10_s():
    rng = np.random.default_rng(9)
    x = np.cumprod(-np.ones((4, 1000)), axis=1) + 0.1 * rng.normal(size=(4, 1000))
    assert ess_mean(x) == pytest.approx(4000 * np.log10(4000))


def test_mcse_mean_covers_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(10)
    n_rep = 1000
    hits = 0
    for _ in range(n_rep):
        x = ar1(0.8, (4, 250), rng)                 # true mean 0
        hits += abs(x.mean()) <= 2 * mcse_mean(x)
    # binomial sd at 0.95 with 1000 replicates: 0.007
    assert 0.92 <= hits / n_rep <= 0.975


def test_one_dimensional_input_is_one_chain():
    x = np.random.default_rng(11).normal(size=501)
    for statistic in (rhat, ess_bulk, ess_tail, ess_mean, mcse_mean):
        assert statistic(x) == statistic(x[np.newaxis, :])


# ----------------------------------------------------------------------------
# edge cases and bad input
# ----------------------------------------------------------------------------

def test_constant_draws_give_nan():
    x = np.full((4, 100), 2.5)
    for statistic in (rhat, ess_bulk, ess_tail, ess_mean, mcse_mean):
        assert np.isnan(statistic(x))


def test_constant_but_different_chains_give_huge_rhat():
    x = np.repeat(np.arange(4.0)[:, None], 100, axis=1)
    assert rhat(x) > 1e6


def test_nan_draws_give_nan():
    x = np.random.default_rng(12).normal(size=(2, 100))
    x[1, 3] = np.nan
    for statistic in (rhat, ess_bulk, ess_tail, ess_mean, mcse_mean):
        assert np.isnan(statistic(x))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3, 100)), "3 axes"),
        (np.float64(1.0), "0 axes"),
        (np.zeros((4, 3)), "at least 4 draws"),
        (np.zeros(3), "at least 4 draws"),
        (np.zeros((0, 100)), "at least 1 chain"),
    ],
)
@pytest.mark.parametrize("statistic", [rhat, ess_bulk, ess_tail, ess_mean, mcse_mean])
def test_bad_shapes_raise_value_error(statistic, bad, match):
    with pytest.raises(ValueError, match=match):
        statistic(bad)


# ----------------------------------------------------------------------------
# agreement with ArviZ
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arviz_diagnostics():
    """ArviZ's R-hat / ESS / MCSE as functions of a (chains, draws) numpy array.

    * ArviZ 0.x (0.23.4 is what pip installs on Python 3.11):
      ``az.rhat(x, method="rank")``, ``az.ess(x, method="bulk" | "tail" | "mean")``
      and ``az.mcse(x, method="mean")`` take the array directly.
    * ArviZ >= 1.0 moved the computations to the ``arviz-stats`` package, whose
      array layer is ``arviz_stats.base.array_stats`` (there the tail ESS
      needs ``prob=(0.05, 0.95)`` explicitly).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # ArviZ 0.23 warns about its refactor
        az = pytest.importorskip("arviz")
    if int(az.__version__.split(".")[0]) >= 1:
        from arviz_stats.base import array_stats as stats

        return {
            "rhat": lambda x: stats.rhat(x, method="rank"),
            "bulk": lambda x: stats.ess(x, method="bulk"),
            "tail": lambda x: stats.ess(x, method="tail", prob=(0.05, 0.95)),
            "mean": lambda x: stats.ess(x, method="mean"),
            "mcse": lambda x: stats.mcse(x, method="mean"),
        }
    return {
        "rhat": lambda x: az.rhat(x, method="rank"),
        "bulk": lambda x: az.ess(x, method="bulk"),
        "tail": lambda x: az.ess(x, method="tail"),
        "mean": lambda x: az.ess(x, method="mean"),
        "mcse": lambda x: az.mcse(x, method="mean"),
    }


def _arviz_cases():
    rng = np.random.default_rng(2021)
    cases = {
        "iid normal 4x1000": rng.normal(size=(4, 1000)),
        "AR(1) phi=0.9 4x1000": ar1(0.9, (4, 1000), rng),
        "AR(1) phi=0.99 4x1000": ar1(0.99, (4, 1000), rng),
        "shifted means": rng.normal(size=(4, 1000)) + np.arange(4.0)[:, None],
        "different scales": rng.normal(size=(4, 1000)) * np.array([1, 1, 1, 3.0])[:, None],
        "Cauchy 4x1000": rng.standard_cauchy(size=(4, 1000)),
        "odd draws 3x1001": rng.normal(size=(3, 1001)),
        "ties (Poisson) 4x500": rng.poisson(2.0, size=(4, 500)).astype(float),
        "antithetic": np.cumprod(-np.ones((4, 1000)), axis=1) + 0.1 * rng.normal(size=(4, 1000)),
        "random walk": np.cumsum(rng.normal(size=(4, 1000)), axis=1),
        "short 2x10": rng.normal(size=(2, 10)),
        "8 chains x 200": ar1(0.5, (8, 200), rng),
    }
    return list(cases.values()), list(cases)


CASES, CASE_IDS = _arviz_cases()


def _arviz(reference, name, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # .item(): with numba installed (PyMC brings it), ArviZ 0.23's mcse returns shape (1,), not a scalar
        return float(np.asarray(reference[name](x)).item())


@pytest.mark.parametrize("x", CASES, ids=CASE_IDS)
def test_rhat_agrees_with_arviz(arviz_diagnostics, x):
    assert abs(rhat(x) - _arviz(arviz_diagnostics, "rhat", x)) < 1e-3


@pytest.mark.parametrize("x", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name, ours", [("bulk", ess_bulk), ("tail", ess_tail), ("mean", ess_mean),
                                        ("mcse", mcse_mean)])
def test_ess_and_mcse_agree_with_arviz(arviz_diagnostics, x, name, ours):
    assert ours(x) == pytest.approx(_arviz(arviz_diagnostics, name, x), rel=0.01)


def test_single_chain_ess_agrees_with_arviz(arviz_diagnostics):
    x = ar1(0.6, (1, 2000), np.random.default_rng(13))
    for name, ours in [("bulk", ess_bulk), ("tail", ess_tail), ("mean", ess_mean)]:
        assert ours(x) == pytest.approx(_arviz(arviz_diagnostics, name, x), rel=0.01)


# ----------------------------------------------------------------------------
# every quantity at once: diagnostics._rhat_and_ess, the check teachlmm.convergence runs
# ----------------------------------------------------------------------------

def _quantities(chains, draws, seed):
    """Seven quantities (7, chains, draws): AR(1) with phi 0, 0.5, 0.9, 0.99, a random walk, Poisson ties, Cauchy."""
    rng = np.random.default_rng(seed)
    return np.stack([ar1(0.0, (chains, draws), rng), ar1(0.5, (chains, draws), rng),
                     ar1(0.9, (chains, draws), rng), ar1(0.99, (chains, draws), rng),
                     np.cumsum(rng.normal(size=(chains, draws)), axis=1),
                     rng.poisson(2.0, size=(chains, draws)).astype(float),
                     rng.standard_cauchy(size=(chains, draws))])


@pytest.mark.parametrize("chains, draws", [(1, 8), (1, 9), (4, 8), (4, 9), (1, 500), (1, 501), (4, 1000),
                                           (4, 1001), (2, 2000)])
def test_all_quantities_at_once_equal_arviz(arviz_diagnostics, chains, draws):
    x = _quantities(chains, draws, seed=chains * 10_000 + draws)
    r, bulk, tail = diagnostics._rhat_and_ess(x)
    assert r.shape == bulk.shape == tail.shape == (len(x),)
    for k, xk in enumerate(x):
        assert bulk[k] == pytest.approx(_arviz(arviz_diagnostics, "bulk", xk), rel=1e-8)
        assert tail[k] == pytest.approx(_arviz(arviz_diagnostics, "tail", xk), rel=1e-8)
        if chains > 1:
            assert r[k] == pytest.approx(_arviz(arviz_diagnostics, "rhat", xk), rel=1e-8)
        else:       # ArviZ has no R-hat for one chain; ours compares its halves, as rhat() does
            assert r[k] == pytest.approx(rhat(xk), rel=1e-12)


def test_all_quantities_at_once_keep_todays_edge_cases(arviz_diagnostics):
    rng = np.random.default_rng(14)
    x = np.stack([ar1(0.5, (4, 200), rng),
                  np.full((4, 200), 2.5),                                   # constant
                  np.repeat(np.arange(4.0)[:, None], 200, axis=1),          # each chain constant, chains differ
                  ar1(0.5, (4, 200), rng)])
    x[3, 1, 50] = np.nan
    r, bulk, tail = diagnostics._rhat_and_ess(x)
    # the neighbours of odd rows are untouched
    assert r[0] == pytest.approx(_arviz(arviz_diagnostics, "rhat", x[0]), rel=1e-8)
    assert bulk[0] == pytest.approx(_arviz(arviz_diagnostics, "bulk", x[0]), rel=1e-8)
    # constant draws: NaN (ArviZ's ESS is the number of draws there; see the module docstring)
    assert np.isnan([r[1], bulk[1], tail[1]]).all()
    # constant chains that disagree: a huge R-hat, and ArviZ's ESS
    assert r[2] > 1e6
    assert bulk[2] == pytest.approx(_arviz(arviz_diagnostics, "bulk", x[2]), rel=1e-8)
    assert tail[2] == pytest.approx(_arviz(arviz_diagnostics, "tail", x[2]), rel=1e-8)
    # a NaN draw: NaN
    assert np.isnan([r[3], bulk[3], tail[3]]).all()


def test_all_quantities_at_once_agree_with_one_at_a_time():
    """The same numbers as rhat / ess_bulk / ess_tail, also where ArviZ differs or has none (NaN, one chain)."""
    x = _quantities(1, 301, seed=15)
    x[2, 0, 150] = np.nan                                  # the middle draw, which the split drops
    r, bulk, tail = diagnostics._rhat_and_ess(x)
    for k, xk in enumerate(x):
        np.testing.assert_allclose([r[k], bulk[k], tail[k]], [rhat(xk), ess_bulk(xk), ess_tail(xk)], rtol=1e-12)
    assert np.isnan(r[2])


def test_all_quantities_at_once_in_blocks(monkeypatch):
    x = _quantities(4, 300, seed=16)
    whole = diagnostics._rhat_and_ess(x)
    monkeypatch.setattr(diagnostics, "WORKSPACE_BYTES", 7 * 8 * x[0].size * 2)     # two quantities a block
    for a, b in zip(whole, diagnostics._rhat_and_ess(x)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("bad, match", [(np.zeros((4, 100)), "quantities, chains, draws"),
                                        (np.zeros((2, 4, 7)), "at least 4 draws")])
def test_all_quantities_at_once_refuse_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        diagnostics._rhat_and_ess(bad)
