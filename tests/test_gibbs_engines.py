"""The two engines of gibbs.sample, the pure gibbs.step, and gibbs.steps.

* ``sample(engine="textbook")`` runs the loop ``state = gibbs.step(state)`` that a
  student reads; ``engine="fast"`` (the default) runs ``teachlmm._fast_sweep`` on
  noise drawn for many sweeps at once. They must give the same draws, to 1e-10
  over 100 sweeps, for every q the fast sweep serves (q = 1 and 2: one block and
  ``||`` blocks), with and without interweaving, under the default Huang-Wand
  prior and the conjugate priors (inverse-gamma and the uniform prior on sigma),
  and for q = 3 (where "fast" runs step on pre-drawn noise).
  The reference is the textbook loop, which does not use the fast module at all;
  a different seed must give different draws (the comparison can fail).
* ``step`` is a function of its state: the same state in gives the same state out,
  the state passed in is not changed, and the random streams' positions travel in
  the returned state.
"""
import copy
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import _fast_sweep, gibbs, posterior
from teachlmm.errors import TeachLMMError
from conftest import M0, M1, M3, M3u, M4

SWEEPS, CHAINS, SEED = 100, 2, 3


def three_effects(seed=0, J=12):
    """A small model with q = 3 correlated random effects (the general path)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 8, J)
    g = np.repeat(np.arange(J), sizes).astype(float)
    n = g.size
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 1.0 + x1 + rng.normal(size=n) + rng.normal(size=J)[g.astype(int)]
    return tl.Model("y ~ x1 + (1 + x1 + x2 | g)", {"y": y, "g": g, "x1": x1, "x2": x2})


def priors(model, kind):
    """The priors the sweep handles differently: Huang-Wand (default), IW + IG, IW + uniform sigma."""
    if kind == "huang_wand":
        return None
    if kind == "inverse_gamma":
        return gibbs.Prior(nu0=model.q + 1, a0=0.5)
    return gibbs.Prior(nu0=model.q + 1, S0=np.eye(model.q), tau2=1e4, sigma_max=100)


def run(model, engine, prior, interweave, seed=SEED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # 100 draws: the convergence warning is expected
        return gibbs.sample(model, draws=SWEEPS, warmup=0, chains=CHAINS, seed=seed, prior=prior,
                            interweave=interweave, engine=engine)


def assert_same_draws(a, b, tol=1e-10):
    """Every draw equal to ``tol``, relative to the size of the quantity (b can be near zero)."""
    assert a.draws.keys() == b.draws.keys()
    for key in a.draws:
        x, y = a.draws[key], b.draws[key]
        scale = max(np.max(np.abs(y)), 1e-300)
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * scale, err_msg=key)


@pytest.fixture(scope="module")
def radon_models(radon):
    return {name: tl.Model(f, radon) for name, f in [("M0", M0), ("M1", M1), ("M3", M3), ("M3u", M3u), ("M4", M4)]}


@pytest.mark.parametrize("interweave", [True, False])
@pytest.mark.parametrize("kind", ["huang_wand", "inverse_gamma", "uniform_sigma"])
@pytest.mark.parametrize("name", ["M0", "M1", "M3", "M3u", "M4"])
def test_fast_engine_gives_the_draws_of_the_textbook_engine(radon_models, name, kind, interweave):
    model = radon_models[name]
    assert model.q <= 2                                        # the q the fast sweep serves
    prior = priors(model, kind)
    fast = run(model, "fast", prior, interweave)
    textbook = run(model, "textbook", prior, interweave)
    assert (fast.engine, textbook.engine) == ("fast", "textbook")
    assert_same_draws(fast, textbook)


@pytest.mark.parametrize("interweave", [True, False])
@pytest.mark.parametrize("kind", ["huang_wand", "inverse_gamma"])
def test_engines_agree_for_three_random_effects(kind, interweave):
    model = three_effects()
    prior = priors(model, kind)
    assert_same_draws(run(model, "fast", prior, interweave), run(model, "textbook", prior, interweave))


def test_the_engine_comparison_can_fail(radon_models):
    """Another seed, or the sweep without interweaving, gives other draws: equal draws above mean something."""
    model = radon_models["M3"]
    base = run(model, "textbook", None, True)
    with pytest.raises(AssertionError):
        assert_same_draws(run(model, "fast", None, True, seed=SEED + 1), base)
    with pytest.raises(AssertionError):
        assert_same_draws(run(model, "fast", None, False), base)


def test_textbook_engine_is_the_loop_over_step(radon_models):
    """engine="textbook" keeps exactly the states of init + step, step by step (no rounding at all)."""
    model = radon_models["M3"]
    post = run(model, "textbook", None, True)
    state = gibbs.init(model, seed=SEED, chains=CHAINS)
    for d in range(SWEEPS):
        state = gibbs.step(state)
        np.testing.assert_array_equal(post.draws["G"][:, d], state.G)
        np.testing.assert_array_equal(post.draws["b"][:, d], state.b)


@pytest.mark.parametrize("engine", ["slow", "Fast", None, 1, ""])
def test_unknown_engine_is_refused_with_the_choices(radon_models, engine):
    with pytest.raises(TeachLMMError, match="engine must be 'fast'.*'textbook'.*or 'collapsed'"):
        gibbs.sample(radon_models["M1"], draws=10, warmup=0, chains=1, seed=1, engine=engine)


# ----------------------------------------------------------------------------
# step is pure
# ----------------------------------------------------------------------------

def snapshot(state):
    """Every array and value of a State, copied (to see whether anything changed)."""
    return copy.deepcopy((state.iteration, state.beta, state.b, state.G, state.sigma2, tuple(state.cond), state.rng))


def assert_equal_values(a, b):
    """Two nested structures of arrays, numbers, dicts and tuples hold exactly the same values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_equal_values(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_values(x, y)
    elif a is None:
        assert b is None
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chains", [None, 3])
@pytest.mark.parametrize("name, kind", [("M3", "huang_wand"), ("M3u", "uniform_sigma"), ("M1", "inverse_gamma")])
def test_step_is_a_function_of_its_state(radon_models, name, kind, chains):
    model = radon_models[name]
    s = gibbs.step(gibbs.init(model, seed=5, chains=chains, prior=priors(model, kind)))   # a state after a sweep
    before = snapshot(s)
    one, two = gibbs.step(s), gibbs.step(s)
    assert_equal_values(snapshot(one), snapshot(two))          # the same state in: the same state out
    assert_equal_values(snapshot(s), before)                   # and the state passed in is unchanged
    assert one.model is s.model and one.prior is s.prior
    # the random streams moved, and their new position is in the new state: stepping on differs
    assert one.rng != s.rng
    nxt = gibbs.step(one)
    assert not np.allclose(nxt.G, one.G)
    # the rng is plain data (saved generator states), not a generator that could be advanced in place
    streams = s.rng if chains is None else s.rng[0]
    assert isinstance(streams, gibbs.ChainStreams) and all(isinstance(x, dict) for x in streams)


def test_step_on_given_noise_is_step_and_leaves_the_streams(radon_models):
    """step(s, noise=draw_noise(s.rng, ...)) is step(s) except that the streams do not move."""
    model = radon_models["M3"]
    s = gibbs.init(model, seed=2, chains=2)
    noise = gibbs.draw_noise(s.rng, model, s.prior)            # from the saved states: s.rng is not moved
    on_noise, plain = gibbs.step(s, noise=noise), gibbs.step(s)
    for key in ("beta", "b", "G", "sigma2"):
        np.testing.assert_array_equal(getattr(on_noise, key), getattr(plain, key))
    assert on_noise.rng == s.rng and plain.rng != s.rng


def test_steps_yields_the_start_then_one_state_per_sweep(radon_models):
    model = radon_models["M1"]
    states = list(gibbs.steps(model, seed=4, chains=2, max_iter=5))
    assert [s.iteration for s in states] == list(range(6))
    state = gibbs.init(model, seed=4, chains=2)
    assert_equal_values(snapshot(states[0]), snapshot(state))
    for s in states[1:]:
        state = gibbs.step(state)
        assert_equal_values(snapshot(s), snapshot(state))
    assert [s.iteration for s in gibbs.steps(model, seed=4, max_iter=0)] == [0]
    without = list(gibbs.steps(model, seed=4, max_iter=2, interweave=False, sigma2=0.5))
    np.testing.assert_array_equal(without[-1].G, gibbs.step(gibbs.step(gibbs.init(model, seed=4, sigma2=0.5),
                                                                        False), False).G)
    with pytest.raises(TeachLMMError, match="max_iter"):
        next(gibbs.steps(model, seed=4, max_iter=-1))


# ----------------------------------------------------------------------------
# where the pieces live
# ----------------------------------------------------------------------------

def test_moved_names_are_still_importable_from_gibbs(radon_models):
    assert gibbs.Posterior is posterior.Posterior and tl.posterior is posterior
    assert issubclass(gibbs.FastSweep, _fast_sweep.FastSweep)
    assert gibbs.FastSweep.draw_G is gibbs.draw_G and gibbs.FastSweep.draw_sigma2 is gibbs.draw_sigma2
    post = run(radon_models["M1"], "fast", None, True)
    assert isinstance(post, posterior.Posterior)
