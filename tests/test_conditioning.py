"""Numerical conditioning: a large offset in y or in a column of X loses no precision.

Raw cross-products of y + 1e10 are about n 1e20 and the residual sum of squares
is what survives their cancellation: float64 keeps nothing of it. The centred
copy of a model (Model.centred) holds only the spread, and the exact change of
basis (Centring) maps its estimates back. The property: the fit of y + c,
for c up to 1e10, equals the fit of the stored (y + c) - c to 1e-6 relative
(G, sigma2, slopes; the intercept moves by c); for x + c with a random slope
on x, G is the change of basis G00 + 2c G01 + c^2 G11, G01 + c G11, G11
(written here for -c, the shift that takes x + c back to x).
"""
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import teachlmm as tl
from teachlmm.errors import ConditioningWarning

F = "y ~ x + (1 + x | g)"


def _data(seed, J=15):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), rng.integers(4, 12, J))
    x = rng.normal(0, 1, g.size)
    b = rng.multivariate_normal([0, 0], [[0.5, 0.1], [0.1, 0.3]], J)
    y = 2 + 0.7 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 1, g.size)
    return {"y": y, "x": x, "g": g}


def _em(model, reml):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tl.em.fit(model, reml=reml, tol=1e-11, max_iter=100000)


def _centred_fit(data, reml):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        model = tl.Model(F, data)
    mc, centring = model.centred()
    fit = _em(mc, reml)
    return fit, centring


def _rel(a, b, scale):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / scale


OFFSETS = st.sampled_from([1.0, 1e3, 1e5, 1.7e9, 1e10, -1e8, 4.7e6])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), c=OFFSETS, reml=st.booleans())
def test_offset_in_y_changes_only_the_intercept(seed, c, reml):
    d = _data(seed)
    shifted = dict(d, y=d["y"] + c)
    stored = dict(d, y=shifted["y"] - c)                  # what the shifted data holds, shifted back
    ref = _em(tl.Model(F, stored), reml)
    fit, centring = _centred_fit(shifted, reml)
    G = centring.G(fit.G)
    assert _rel(G, ref.G, np.abs(ref.G).max()) < 1e-6
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    beta = centring.beta(fit.beta)
    assert beta[1] == pytest.approx(ref.beta[1], rel=1e-6)
    assert beta[0] - c == pytest.approx(ref.beta[0], abs=1e-6 * max(1, abs(ref.beta[0])) + 4 * np.spacing(abs(c)))
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-8, abs=1e-6)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([1e3, 1e6, 1e8, -3e7]), reml=st.booleans())
def test_offset_in_x_with_a_random_slope_is_the_change_of_basis(seed, c, reml):
    d = _data(seed)
    shifted = dict(d, x=d["x"] + c)
    stored = dict(d, x=shifted["x"] - c)
    ref = _em(tl.Model(F, stored), reml)
    fit, centring = _centred_fit(shifted, reml)
    G = centring.G(fit.G)
    G0 = ref.G                                  # x_shifted = x + c: intercept variance in the new basis
    want = np.array([[G0[0, 0] - 2 * c * G0[0, 1] + c * c * G0[1, 1], G0[0, 1] - c * G0[1, 1]],
                     [G0[0, 1] - c * G0[1, 1], G0[1, 1]]])
    assert G[1, 1] == pytest.approx(want[1, 1], rel=1e-6)
    assert G[0, 1] == pytest.approx(want[0, 1], rel=1e-6)
    assert G[0, 0] == pytest.approx(want[0, 0], rel=1e-6)
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    assert centring.beta(fit.beta)[1] == pytest.approx(ref.beta[1], rel=1e-6)
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-8, abs=1e-6)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([1e4, 1e8, -2e6]))
def test_offset_in_x_without_random_slope(seed, c):
    d = _data(seed)
    f = "y ~ x + (1 | g)"
    ref = _em(tl.Model(f, dict(d, x=(d["x"] + c) - c)), True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        mc, centring = tl.Model(f, dict(d, x=d["x"] + c)).centred()
    fit = _em(mc, True)
    assert centring.G(fit.G)[0, 0] == pytest.approx(ref.G[0, 0], rel=1e-6)
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    assert centring.beta(fit.beta)[1] == pytest.approx(ref.beta[1], rel=1e-6)
    V = centring.vcov(fit.vcov)
    assert V[1, 1] == pytest.approx(ref.vcov[1, 1], rel=1e-5)


def test_gibbs_posterior_means_through_the_centred_model():
    """The sampler on the centred copy of y + 1.7e9, x + 1e6 gives the posterior of the centred copy of the
    stored (y + c) - c, (x + c) - c: finite draws, the same means (same seed; the data agree to rounding).

    (The default prior scales with the data's spread, so it is stated in the centred basis here; the posterior
    in the original basis is the change of basis of these draws.)
    """
    d = _data(3)
    cy, cx = 1.7e9, 1e6
    shifted = dict(d, y=d["y"] + cy, x=d["x"] + cx)
    stored = dict(d, y=shifted["y"] - cy, x=shifted["x"] - cx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        mc, centring = tl.Model(F, shifted).centred()
    ref_mc, ref_centring = tl.Model(F, stored).centred()
    post = tl.gibbs.sample(mc, draws=300, warmup=100, chains=2, seed=5)
    ref = tl.gibbs.sample(ref_mc, draws=300, warmup=100, chains=2, seed=5)
    for k in ("beta", "G", "sigma2"):
        assert np.all(np.isfinite(post.draws[k]))
    np.testing.assert_allclose(post.draws["G"].mean(axis=(0, 1)), ref.draws["G"].mean(axis=(0, 1)), rtol=1e-6)
    assert post.draws["sigma2"].mean() == pytest.approx(ref.draws["sigma2"].mean(), rel=1e-6)
    beta = centring.beta(post.draws["beta"].mean(axis=(0, 1)))
    ref_beta = ref_centring.beta(ref.draws["beta"].mean(axis=(0, 1)))
    assert beta[1] == pytest.approx(ref_beta[1], rel=1e-6)
    G = centring.G(post.draws["G"].mean(axis=(0, 1)))             # E[G] = S_z E[G_c] S_z' (linear)
    G_ref = ref_centring.G(ref.draws["G"].mean(axis=(0, 1)))
    want = np.array([[G_ref[0, 0] - 2 * cx * G_ref[0, 1] + cx * cx * G_ref[1, 1], G_ref[0, 1] - cx * G_ref[1, 1]],
                     [G_ref[0, 1] - cx * G_ref[1, 1], G_ref[1, 1]]])
    np.testing.assert_allclose(G, want, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# the plain public calls: em.fit, gibbs.sample and blup.fit centre a model that needs it
# ---------------------------------------------------------------------------------------------

def _quiet_fit(model, reml=True):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)      # no warning needed on the ordinary path
        warnings.filterwarnings("ignore", category=tl.errors.BoundaryWarning)
        return tl.em.fit(model, reml=reml, tol=1e-11)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), c=OFFSETS, reml=st.booleans())
def test_public_em_fit_of_y_plus_c(seed, c, reml):
    d = _data(seed)
    shifted = dict(d, y=d["y"] + c)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        model = tl.Model(F, shifted)
    fit = _quiet_fit(model, reml)
    ref = _quiet_fit(tl.Model(F, dict(d, y=shifted["y"] - c)), reml)
    assert _rel(fit.G, ref.G, np.abs(ref.G).max()) < 1e-6
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    assert fit.beta[1] == pytest.approx(ref.beta[1], rel=1e-6)
    assert fit.beta[0] - c == pytest.approx(ref.beta[0], abs=1e-6 * max(1, abs(ref.beta[0])) + 4 * np.spacing(abs(c)))
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-8, abs=1e-6)
    np.testing.assert_allclose(fit.ranef, ref.ranef, rtol=1e-5, atol=1e-6 * np.abs(ref.ranef).max())
    np.testing.assert_allclose(fit.vcov, ref.vcov, rtol=1e-5)
    assert fit.converged and np.isfinite(fit.loglik)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([1e3, 1e6, 1e8, -3e7]), reml=st.booleans())
def test_public_em_fit_of_x_plus_c_with_a_random_slope(seed, c, reml):
    d = _data(seed)
    shifted = dict(d, x=d["x"] + c)
    fit = _quiet_fit(tl.Model(F, shifted), reml)
    ref = _quiet_fit(tl.Model(F, dict(d, x=shifted["x"] - c)), reml)
    G0 = ref.G                                   # x_shifted = x + c: the change of basis for -c
    want = np.array([[G0[0, 0] - 2 * c * G0[0, 1] + c * c * G0[1, 1], G0[0, 1] - c * G0[1, 1]],
                     [G0[0, 1] - c * G0[1, 1], G0[1, 1]]])
    np.testing.assert_allclose(fit.G, want, rtol=1e-6)
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    assert fit.beta[1] == pytest.approx(ref.beta[1], rel=1e-6)
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-8, abs=1e-6)
    np.testing.assert_allclose(fit.ranef[:, 1], ref.ranef[:, 1], rtol=1e-5, atol=1e-6 * np.abs(ref.ranef).max())


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([1e4, 1e8, -2e6, 1e10]))
def test_public_em_fit_of_x_plus_c_without_random_slope(seed, c):
    d = _data(seed)
    f = "y ~ x + (1 | g)"
    fit = _quiet_fit(tl.Model(f, dict(d, x=d["x"] + c)))
    ref = _quiet_fit(tl.Model(f, dict(d, x=(d["x"] + c) - c)))
    assert fit.G[0, 0] == pytest.approx(ref.G[0, 0], rel=1e-6)
    assert fit.sigma2 == pytest.approx(ref.sigma2, rel=1e-6)
    assert fit.beta[1] == pytest.approx(ref.beta[1], rel=1e-6)
    assert fit.vcov[1, 1] == pytest.approx(ref.vcov[1, 1], rel=1e-5)


def _means(post):
    return {k: post.draws[k].mean(axis=(0, 1)) for k in ("beta", "G", "sigma2")}


def _finite(post):
    for k in ("beta", "G", "sigma2", "b"):
        assert np.all(np.isfinite(post.draws[k])), k


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([1e3, 1.7e9, 1e10, -1e8]))
@example(seed=3650, c=1e3)          # with the interweaving step, this one flipped an MH decision
def test_public_gibbs_sample_of_y_plus_c(seed, c):
    """A shift of y moves only the intercept's draws (with the flat prior on beta, the same draws otherwise).

    The path is compared draw by draw, so the sweep runs without its Metropolis-Hastings interweaving step:
    rounding at the 1e-13 level (y + c - c is not y) may flip one accept/reject decision, after which the
    two chains are different (equally valid) paths. The centred sweep is a continuous function of its noise.
    """
    d = _data(seed)
    shifted = dict(d, y=d["y"] + c)
    post = tl.gibbs.sample(tl.Model(F, shifted), draws=150, warmup=50, chains=2, seed=seed, interweave=False)
    ref = tl.gibbs.sample(tl.Model(F, dict(d, y=shifted["y"] - c)), draws=150, warmup=50, chains=2, seed=seed,
                          interweave=False)
    _finite(post)
    m, r = _means(post), _means(ref)
    np.testing.assert_allclose(m["G"], r["G"], rtol=1e-6, atol=1e-9 * np.abs(r["G"]).max())
    assert m["sigma2"] == pytest.approx(r["sigma2"], rel=1e-6)
    assert m["beta"][1] == pytest.approx(r["beta"][1], rel=1e-6)
    assert m["beta"][0] - c == pytest.approx(r["beta"][0], abs=1e-6 * max(1, abs(r["beta"][0])) + 4 * np.spacing(abs(c)))


@pytest.mark.parametrize("c", [1e8, -4.7e6])
def test_public_gibbs_sample_of_x_plus_c_without_random_slope(c):
    """x + c against its de-offset copy (x + c) - mean(x + c): the same posterior, intercept by the change of basis."""
    d = _data(4)
    f = "y ~ x + (1 | g)"
    shifted = dict(d, x=d["x"] + c)
    m_x = float(np.mean(shifted["x"]))
    post = tl.gibbs.sample(tl.Model(f, shifted), draws=150, warmup=50, chains=2, seed=9)
    ref = tl.gibbs.sample(tl.Model(f, dict(d, x=shifted["x"] - m_x)), draws=150, warmup=50, chains=2, seed=9)
    _finite(post)
    m, r = _means(post), _means(ref)
    assert m["G"][0, 0] == pytest.approx(r["G"][0, 0], rel=1e-6)
    assert m["sigma2"] == pytest.approx(r["sigma2"], rel=1e-6)
    assert m["beta"][1] == pytest.approx(r["beta"][1], rel=1e-6)
    assert m["beta"][0] == pytest.approx(r["beta"][0] - m_x * r["beta"][1], rel=1e-6)


def test_public_gibbs_sample_of_x_plus_c_with_a_random_slope_is_the_change_of_basis():
    """With a random slope on x + c the prior on G is stated in the data's own basis: S0' = S S0 S' gives the
    same posterior, and E[G] is the change of basis of the de-offset copy's (E is linear)."""
    d = _data(6)
    c = 1e3
    shifted = dict(d, x=d["x"] + c)
    m_x = float(np.mean(shifted["x"]))
    S = np.array([[1.0, m_x], [0.0, 1.0]])                  # z_shifted = z_ref S^-1 ... G_shifted = S^-T? see below
    # x_shifted = x_ref + m_x: b_ref = (b0 + m_x b1, b1) = B b_shifted with B = [[1, m_x], [0, 1]],
    # so G_shifted = B^-1 G_ref B^-T
    Binv = np.linalg.inv(S)
    S0_ref = np.diag([0.3, 0.2])
    S0 = Binv @ S0_ref @ Binv.T
    post = tl.gibbs.sample(tl.Model(F, shifted), draws=150, warmup=50, chains=2, seed=2,
                           prior=tl.gibbs.Prior(S0=S0))
    ref = tl.gibbs.sample(tl.Model(F, dict(d, x=shifted["x"] - m_x)), draws=150, warmup=50, chains=2, seed=2,
                          prior=tl.gibbs.Prior(S0=S0_ref))
    _finite(post)
    m, r = _means(post), _means(ref)
    np.testing.assert_allclose(m["G"], Binv @ r["G"] @ Binv.T, rtol=1e-6, atol=1e-9)
    assert m["sigma2"] == pytest.approx(r["sigma2"], rel=1e-6)
    assert m["beta"][1] == pytest.approx(r["beta"][1], rel=1e-6)


def test_blup_fit_and_predictions_of_a_shifted_model():
    d = _data(5)
    c = 1.7e9
    shifted = dict(d, y=d["y"] + c)
    bl = tl.blup.fit(tl.Model(F, shifted), G=[[0.5, 0.1], [0.1, 0.3]], sigma2=1.0)
    ref = tl.blup.fit(tl.Model(F, dict(d, y=shifted["y"] - c)), G=[[0.5, 0.1], [0.1, 0.3]], sigma2=1.0)
    np.testing.assert_allclose(bl.ranef, ref.ranef, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bl.shrinkage, ref.shrinkage, rtol=1e-9, atol=1e-12)
    assert bl.loglik == pytest.approx(ref.loglik, rel=1e-9)
    new = {"x": [0.0, 1.0], "g": [1, 2]}
    np.testing.assert_allclose(bl.predict(new) - c, ref.predict(new), atol=1e-6)
    np.testing.assert_allclose(bl.fitted() - c, ref.fitted(), atol=1e-6)


def test_the_step_functions_warn_and_name_the_column_and_the_fix():
    """em.init / gibbs.init work on the statistics they are given: on a model that needs centring they say so."""
    d = _data(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        model = tl.Model(F, dict(d, y=d["y"] + 1e9))            # building the model needs no warning
        tl.em.fit(model)                                        # nor does the fit
        mc, _ = model.centred()
        tl.em.init(mc)                                          # the centred copy steps cleanly
    with pytest.warns(ConditioningWarning, match=r"'y' has a mean.*model\.centred\(\)"):
        tl.em.init(model)
    with pytest.warns(ConditioningWarning, match=r"'x' has a mean.*model\.centred\(\)"):
        tl.gibbs.init(tl.Model(F, dict(d, x=d["x"] + 1e9)), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        tl.em.init(tl.Model(F, dict(d, y=d["y"] + 100)))        # ordinary offsets: no warning


def test_a_model_from_chunks_cannot_be_centred_and_says_so():
    d = _data(1)
    big = dict(d, y=d["y"] + 1e9)
    pieces = [{k: v[i:i + 40] for k, v in big.items()} for i in range(0, big["y"].size, 40)]
    with pytest.warns(ConditioningWarning, match=r"'y' has a mean.*chunks.*I\(y - "):
        tl.Model.from_chunks(F, pieces)


def test_the_centring_is_only_done_when_needed():
    d = _data(1)
    m = tl.Model(F, d)
    assert m.fitting_basis()[0] is m and m.fitting_basis()[1].is_identity
    big = tl.Model(F, dict(d, y=d["y"] + 1e5))
    work, centring = big.fitting_basis()
    assert work is not big and centring.y_shift != 0
    np.testing.assert_array_equal(centring.Sx, np.eye(2))       # only the column that needs it moves


def test_rank_check_is_not_fooled_by_an_offset():
    """x + 1e8 is not a copy of the intercept (the check works on centred columns)."""
    d = _data(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        assert tl.Model("y ~ x + (1 | g)", dict(d, x=d["x"] + 1e8)).p == 2
    with pytest.raises(tl.DesignError, match="rank deficient"):
        tl.Model("y ~ x + c + (1 | g)", dict(d, c=np.full(d["x"].size, 1e8)))
