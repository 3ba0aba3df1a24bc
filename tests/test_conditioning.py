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
from hypothesis import given, settings, strategies as st

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


def test_the_warning_names_the_column_and_the_fix():
    d = _data(1)
    with pytest.warns(ConditioningWarning, match=r"'y' has a mean.*centred\(\)"):
        tl.Model(F, dict(d, y=d["y"] + 1e9))
    with pytest.warns(ConditioningWarning, match=r"'x' has a mean.*I\(x - "):
        tl.Model(F, dict(d, x=d["x"] + 1e9))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        tl.Model(F, dict(d, y=d["y"] + 100))          # ordinary offsets: no warning


def test_rank_check_is_not_fooled_by_an_offset():
    """x + 1e8 is not a copy of the intercept (the check works on centred columns)."""
    d = _data(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        assert tl.Model("y ~ x + (1 | g)", dict(d, x=d["x"] + 1e8)).p == 2
    with pytest.raises(tl.DesignError, match="rank deficient"):
        tl.Model("y ~ x + c + (1 | g)", dict(d, c=np.full(d["x"].size, 1e8)))
