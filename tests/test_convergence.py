"""Tests of teachlmm.convergence: the check gibbs.sample() runs, against ArviZ's numbers."""
import warnings

import numpy as np
import pytest

from teachlmm import convergence, gibbs
from test_diagnostics import _arviz, arviz_diagnostics  # noqa: F401  (the fixture, and ArviZ as a function)


@pytest.fixture(scope="module")
def short_run(m3):
    """M3 with far too few draws: every quantity fails the check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gibbs.sample(m3, draws=60, warmup=20, chains=3, seed=4)


def test_problems_reports_arviz_numbers(short_run, arviz_diagnostics):  # noqa: F811
    bad = convergence.problems(short_run)
    assert set(bad) <= set(short_run.checked_names()) and bad
    for name, (rhat, bulk, tail) in bad.items():
        x = short_run.get(name)
        assert rhat == pytest.approx(_arviz(arviz_diagnostics, "rhat", x), rel=1e-8)
        assert bulk == pytest.approx(_arviz(arviz_diagnostics, "bulk", x), rel=1e-8)
        assert tail == pytest.approx(_arviz(arviz_diagnostics, "tail", x), rel=1e-8)
        assert all(type(v) is float for v in (rhat, bulk, tail))


def test_problems_names_exactly_the_failing_quantities(short_run, arviz_diagnostics):  # noqa: F811
    failing = set()
    for name in short_run.checked_names():
        x = short_run.get(name)
        r, b, t = (_arviz(arviz_diagnostics, k, x) for k in ("rhat", "bulk", "tail"))
        if not (r <= convergence.RHAT_MAX and b >= convergence.ESS_MIN and t >= convergence.ESS_MIN):
            failing.add(name)
    assert set(convergence.problems(short_run)) == failing


def test_checked_quantities_are_beta_the_lower_triangle_of_g_and_sigma2(short_run):
    assert short_run.checked_names() == ["(Intercept)", "floor", "G[0,0]", "G[1,1]", "G[1,0]", "sigma2"]


def test_check_warns_once_and_keeps_the_message(short_run):
    del short_run.convergence_message
    with pytest.warns(convergence.ConvergenceWarning, match="R-hat must be <= 1.01"):
        message = convergence.check(short_run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convergence.check(short_run) == message
    assert "draws=" in message
    assert np.isfinite([v for values in convergence.problems(short_run).values() for v in values]).all()


def test_summary_rows_at_once_equal_the_rows_one_at_a_time():
    """posterior._draws_rows (one pass over all rows) gives _draws_row's numbers for every row."""
    from teachlmm import posterior
    rng = np.random.default_rng(4)
    named = {"a": rng.normal(size=(4, 300)), "b": np.cumsum(rng.normal(size=(4, 300)), axis=1),
             "c": rng.standard_cauchy(size=(4, 300)), "d": rng.poisson(2.0, size=(4, 300)).astype(float)}
    together = posterior._draws_rows(named)
    for name, x in named.items():
        alone = posterior._draws_row(x)
        for key, value in alone.items():
            assert together[name][key] == pytest.approx(value, rel=1e-10), (name, key)
