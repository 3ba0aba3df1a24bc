"""One set of argument checks: every module accepts and refuses the same counts, levels and seeds."""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm import validators
from teachlmm.errors import TeachLMMError


@pytest.fixture(scope="module")
def fit():
    return tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int64(3), 3), (3.0, 3), (1e3, 1000)])
def test_whole_numbers_are_counts(value, expected):
    assert validators.positive_int(value, "n") == expected


@pytest.mark.parametrize("value", [0, -1, 2.5, True, False, "3", None, float("nan"), float("inf"), [2]])
def test_other_values_are_not_counts(value):
    with pytest.raises(TeachLMMError, match="n must be a positive whole number"):
        validators.positive_int(value, "n")


def test_zero_is_a_nonnegative_count():
    assert validators.nonnegative_int(0.0, "warmup") == 0
    with pytest.raises(TeachLMMError, match="warmup must be a whole number >= 0"):
        validators.nonnegative_int(-1, "warmup")


@pytest.mark.parametrize("value", [0, 1, -0.5, 95, True, "0.95", None])
def test_levels_outside_0_1_are_refused(value):
    with pytest.raises(TeachLMMError, match="between 0 and 1"):
        validators.level(value)


def test_seed_policy():
    assert validators.seed_sequence(5).entropy == 5
    ss = np.random.SeedSequence(9)
    assert validators.seed_sequence(ss) is ss
    g1, g2 = np.random.default_rng(4), np.random.default_rng(4)
    expected = np.random.SeedSequence(int(np.random.default_rng(4).integers(2 ** 63))).entropy
    assert validators.seed_sequence(g1).entropy == validators.seed_sequence(g2).entropy == expected
    assert validators.seed_sequence(g1).entropy != expected            # the generator advanced
    assert validators.seed_sequence([2018, 3, 1]).entropy == np.random.SeedSequence([2018, 3, 1]).entropy
    for bad in (True, -1, 1.5, "1", [], [1, -1], [True], (1.5,)):
        with pytest.raises(TeachLMMError, match="seed must be None, an int >= 0"):
            validators.seed_sequence(bad)


def test_every_method_takes_the_same_counts(fit):
    """2.0 is a count everywhere (it was refused by gibbs and accepted by inference); 2.5 nowhere."""
    model = fit.model
    assert tl.gibbs.sample(model, draws=5.0, warmup=0.0, chains=1.0, seed=1).draws["beta"].shape == (1, 5, 2)
    assert fit.simulate(n_sim=2.0, seed=1).shape == (2, model.n)
    for call in (lambda: tl.gibbs.sample(model, draws=2.5, warmup=0, chains=1, seed=1),
                 lambda: fit.simulate(n_sim=2.5), lambda: tl.intervals.bootstrap(fit, n_boot=2.5)):
        with pytest.raises(TeachLMMError, match="positive whole number"):
            call()


def test_every_method_takes_a_generator_seed_reproducibly(fit):
    model = fit.model
    a = tl.gibbs.sample(model, draws=5, warmup=0, chains=2, seed=np.random.default_rng(3))
    b = tl.gibbs.sample(model, draws=5, warmup=0, chains=2, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a.draws["beta"], b.draws["beta"])
    ya = fit.simulate(n_sim=2, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(ya, fit.simulate(n_sim=2, seed=np.random.default_rng(3)))
    np.testing.assert_array_equal(ya, fit.simulate(n_sim=2, seed=validators.seed_sequence(np.random.default_rng(3))))
    for call in (lambda: tl.gibbs.sample(model, draws=5, warmup=0, chains=1, seed=True),
                 lambda: fit.simulate(seed=-3), lambda: tl.intervals.bootstrap(fit, n_boot=2, seed=1.5)):
        with pytest.raises(TeachLMMError, match="seed must be"):
            call()


def test_levels_are_checked_alike(fit):
    with pytest.raises(TeachLMMError, match="between 0 and 1"):
        fit.confint(level=95)


def test_em_steps_takes_the_same_counts(fit):
    assert len(list(tl.em.steps(fit.model, max_iter=2.0))) == 3          # the start and two steps
    with pytest.raises(TeachLMMError, match="max_iter must be a whole number >= 0"):
        list(tl.em.steps(fit.model, max_iter=2.5))
