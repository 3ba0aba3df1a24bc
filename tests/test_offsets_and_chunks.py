"""#11 parts 2, 7 and 8: offsets in every prediction, BLUPs at huge G, and models built from chunks.

References are independent: a model without offset(...) whose response is y - w, the no-pooling limit
computed by hand (within-group slope, unweighted mean of group intercepts), and the in-memory model.
"""
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm.errors import ConditioningWarning


def _data(seed=0, J=12):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), rng.integers(3, 10, J))
    x = rng.normal(size=g.size)
    w = rng.uniform(0, 2, g.size)
    y = 1 + 0.5 * x + w + rng.normal(0, 0.8, J)[g] + rng.normal(size=g.size)
    return {"y": y, "x": x, "w": w, "g": g, "y_minus_w": y - w}


def test_offset_is_in_fitted_residuals_predict_and_simulate():
    d = _data()
    fit = tl.em.fit(tl.Model("y ~ x + offset(w) + (1 | g)", d))
    ref = tl.em.fit(tl.Model("y_minus_w ~ x + (1 | g)", d))           # the same model, offset moved by hand
    np.testing.assert_allclose(fit.fitted(), ref.fitted() + d["w"], rtol=1e-9)
    np.testing.assert_allclose(fit.residuals(), ref.residuals(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.fitted() + fit.residuals(), d["y"], rtol=1e-12)      # the response as read
    np.testing.assert_allclose(fit.predict(), ref.predict() + d["w"], rtol=1e-9)
    new = {"x": np.array([0.0, 1.0, -1.0]), "w": np.array([0.5, 1.5, 0.0]), "g": np.array([0, 1, 2])}
    np.testing.assert_allclose(fit.predict(new), ref.predict(new) + new["w"], rtol=1e-9)
    np.testing.assert_allclose(fit.predict(new, re=False), ref.predict(new, re=False) + new["w"], rtol=1e-9)
    np.testing.assert_allclose(fit.simulate(3, seed=4), ref.simulate(3, seed=4) + d["w"], rtol=1e-9)


def test_the_bootstrap_of_an_offset_model_refits_on_the_response_without_offset():
    d = _data(1)
    fit = tl.em.fit(tl.Model("y ~ x + offset(w) + (1 | g)", d))
    ref = tl.em.fit(tl.Model("y_minus_w ~ x + (1 | g)", d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fit.confint(method="boot", n_boot=20, seed=3)
        b = ref.confint(method="boot", n_boot=20, seed=3)
    assert list(a.keys()) == list(b.keys())
    for name in a:                                   # the offset moves no estimate, so no interval
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-9)


def test_blup_at_a_huge_G_warns_and_gives_the_no_pooling_limit():
    d = tl.load_radon()
    m = tl.Model("log_radon ~ floor + (1 | county)", d)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        tl.blup.fit(m, 1e3, 0.57)                                       # ordinary values: no warning
    # the limit by hand: the within-county slope, and the unweighted mean of the counties' intercepts
    codes, x, y = m.codes, d["floor"].astype(float), d["log_radon"]
    xm = np.bincount(codes, x) / np.bincount(codes)
    ym = np.bincount(codes, y) / np.bincount(codes)
    slope = np.sum((x - xm[codes]) * (y - ym[codes])) / np.sum((x - xm[codes]) ** 2)
    icpt = np.mean(ym - slope * xm)
    for G in (1e9, 1e14, 1e100):
        with pytest.warns(ConditioningWarning, match=r"G -> infinity limit.*G_computed"):
            bl = tl.blup.fit(m, G, 0.57)
        assert bl.fixef["floor"] == pytest.approx(slope, rel=1e-6)
        assert bl.fixef["(Intercept)"] == pytest.approx(icpt, rel=1e-6)
        np.testing.assert_allclose(bl.coef[:, 0], ym - slope * xm, rtol=1e-6, atol=1e-6)
        assert bl.G[0, 0] == G and np.all(np.isfinite(bl.ranef))


def _pieces(d, size=37):
    n = len(next(iter(d.values())))
    return [{k: v[i:i + size] for k, v in d.items()} for i in range(0, n, size)]


def test_gibbs_and_anova_run_from_chunks_as_from_memory():
    d = _data(2, J=20)
    f0, f1 = "y ~ x + (1 | g)", "y ~ x + (1 + x | g)"
    mem0, mem1 = tl.Model(f0, d), tl.Model(f1, d)
    ch0, ch1 = tl.Model.from_chunks(f0, _pieces(d)), tl.Model.from_chunks(f1, _pieces(d))
    assert tl.gibbs.default_prior(ch1).describe() == tl.gibbs.default_prior(mem1).describe()   # data scale from the statistics
    pc = tl.gibbs.sample(ch1, draws=100, warmup=50, chains=2, seed=7)
    pm = tl.gibbs.sample(mem1, draws=100, warmup=50, chains=2, seed=7)
    for k in ("beta", "G", "sigma2"):
        np.testing.assert_allclose(pc.draws[k], pm.draws[k], rtol=1e-7, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = tl.compare.anova(tl.em.fit(ch0), tl.em.fit(ch1))
        b = tl.compare.anova(tl.em.fit(mem0), tl.em.fit(mem1))
    np.testing.assert_allclose(a.chisq[1], b.chisq[1], rtol=1e-6)
    np.testing.assert_allclose(a.pvalue[1], b.pvalue[1], rtol=1e-6)


def test_anova_from_chunks_checks_nesting_from_the_statistics():
    d = _data(3)
    d2 = dict(d, x2=d["x"] ** 2)
    small = tl.em.fit(tl.Model.from_chunks("y ~ x + (1 | g)", _pieces(d2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # a column named x that is another column: the statistics tell
        other = tl.em.fit(tl.Model.from_chunks("y ~ x + (1 + x | g)", _pieces(dict(d2, x=d2["x2"]))))
    with pytest.raises(tl.TeachLMMError, match="not nested.*'x'"):
        tl.compare.anova(small, other)


def test_the_statistics_sampler_draws_what_rows_would_give():
    """The bootstrap of a model built from chunks draws the per-group statistics of y* directly
    (results.statistics_sampler). Checked against statistics computed from simulated rows (the in-memory
    sampler, independent code): means within 5 standard errors, variances within 15 %, 3000 draws each."""
    d = tl.load_radon()
    f = "log_radon ~ floor + (1 + floor | county)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = tl.em.fit(tl.Model(f, d))
        ch = tl.em.fit(tl.Model.from_chunks(f, _pieces(d, size=300)))
    draw_s = tl.results.statistics_sampler(ch)
    draw_y = tl.results.response_sampler(mem)
    m = mem.model
    rng_s, rng_y = np.random.default_rng(1), np.random.default_rng(2)
    A, B = [], []
    for _ in range(3000):
        st = draw_s(rng_s)
        A.append(np.r_[st.Xty.sum(0), st.Zty[:5].ravel(), st.yty.sum(), st.yty[:3]])
        y = draw_y(rng_y)
        Wty = np.c_[m.X, m.Z] * y[:, None]
        Xty = Wty[:, :m.p].sum(0)
        Zty = np.stack([np.bincount(m.codes, Wty[:, m.p + k], minlength=m.J) for k in range(m.q)], axis=1)
        yty = np.bincount(m.codes, y * y, minlength=m.J)
        B.append(np.r_[Xty, Zty[:5].ravel(), yty.sum(), yty[:3]])
    A, B = np.array(A), np.array(B)
    se = np.sqrt(A.var(0) / len(A) + B.var(0) / len(B))
    assert np.all(np.abs(A.mean(0) - B.mean(0)) < 5 * se)
    np.testing.assert_allclose(A.var(0), B.var(0), rtol=0.15)


def test_bootstrap_intervals_from_chunks_agree_with_memory():
    d = tl.load_radon()
    f = "log_radon ~ floor + (1 | county)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = tl.em.fit(tl.Model.from_chunks(f, _pieces(d, size=300))).confint(method="boot", n_boot=200, seed=1)
        b = tl.em.fit(tl.Model(f, d)).confint(method="boot", n_boot=200, seed=1)
    for name in a:                                       # Monte Carlo: the same intervals within 15 % of the width
        width = b[name][1] - b[name][0]
        assert abs(a[name][0] - b[name][0]) < 0.15 * width and abs(a[name][1] - b[name][1]) < 0.15 * width, name
