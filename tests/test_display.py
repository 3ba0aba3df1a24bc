"""Labelled tables (to_frame), HTML and short reprs, and the ArviZ export (#16)."""
import warnings

import numpy as np
import pytest

import teachlmm as tl

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def fit():
    return tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))


@pytest.fixture(scope="module")
def post():
    model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    return tl.gibbs.sample(model, draws=300, warmup=100, chains=2, seed=3)


def test_fit_frames_equal_the_arrays_they_label(fit):
    for what, values, columns in (("ranef", fit.ranef, fit.ranef_names), ("coef", fit.coef, fit.coef_names),
                                  ("condsd", fit.condsd, fit.ranef_names)):
        df = fit.to_frame(what)
        np.testing.assert_array_equal(df.to_numpy(), values)
        assert list(df.columns) == list(columns)
        assert list(df.index) == list(fit.groups) and df.index.name == "county"
    df = fit.to_frame("ranef")
    df.iloc[0, 0] = 99.0                                           # a copy: the fit is untouched
    assert fit.ranef[0, 0] != 99.0
    fx = fit.to_frame("fixef")
    assert list(fx.index) == fit.fixef_names
    np.testing.assert_array_equal(fx["Estimate"], [fit.fixef[k] for k in fit.fixef_names])
    np.testing.assert_array_equal(fx["Std. Error"], [fit.fixef_se[k] for k in fit.fixef_names])
    np.testing.assert_allclose(fx["t value"], fx["Estimate"] / fx["Std. Error"], rtol=1e-15)
    vc = fit.to_frame("varcorr")
    assert list(vc.index) == ["Var (Intercept)", "Var floor", "Cov (Intercept),floor", "Var Residual"]
    np.testing.assert_array_equal(vc["vcov"], [fit.G[0, 0], fit.G[1, 1], fit.G[1, 0], fit.sigma2])
    np.testing.assert_allclose(vc["sdcor"], [*fit.sd, fit.corr[1, 0], np.sqrt(fit.sigma2)], rtol=1e-15)
    with pytest.raises(tl.TeachLMMError, match="unknown table"):
        fit.to_frame("blups")
    with pytest.raises(tl.TeachLMMError, match="grouping factor"):
        fit.to_frame("ranef", factor="state")
    assert fit.to_frame("ranef", factor="county").shape == (85, 2)


def test_fixef_frame_uses_coef_table_when_it_exists(fit, monkeypatch):
    if hasattr(type(fit), "coef_table"):
        pytest.skip("coef_table exists: its own tests cover the table")
    with pytest.raises(tl.TeachLMMError, match="ddf"):
        fit.to_frame("fixef", ddf="Satterthwaite")
    seen = {}

    def coef_table(self, ddf=None):
        seen["ddf"] = ddf
        return {"Estimate": [1.0, 2.0], "df": [10.0, 20.0]}
    monkeypatch.setattr(type(fit), "coef_table", coef_table, raising=False)
    df = fit.to_frame("fixef", ddf="Kenward-Roger")
    assert seen["ddf"] == "Kenward-Roger" and list(df.index) == fit.fixef_names and list(df["df"]) == [10.0, 20.0]


def test_summary_is_a_str_with_html(fit):
    s = fit.summary()
    assert isinstance(s, str) and s.splitlines()[0].startswith("Linear mixed model fit by REML")
    html = s._repr_html_()
    assert "<pre" in html and f"{fit.fixef['floor']:.4f}" in html
    assert repr(s) == str(s)                                    # the REPL shows lines, not "\n"
    assert fit._repr_html_() == html


def test_confint_and_anova_reprs_and_frames(fit):
    ci = fit.confint()
    text, html = repr(ci), ci._repr_html_()
    assert "2.5 %" in text and "<table>" in html
    for name, (lo, hi) in ci.items():
        assert f"{lo:.6g}" in text and f"{lo:.6g}" in html and f"{hi:.6g}" in html
    df = ci.to_frame()
    np.testing.assert_array_equal(df.to_numpy(), np.array(list(ci.values())))
    small = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    table = tl.anova(small, fit)
    html = table._repr_html_()
    df = table.to_frame()
    assert list(df.index) == ["model1", "model2"]
    np.testing.assert_array_equal(df["logLik"], [f.loglik for f in table.fits])
    assert df["Chisq"].iloc[1] == table.chisq[1] and np.isnan(df["Chisq"].iloc[0])
    assert tl.tables.format_column(list(df["AIC"]))[0] in html and "<table>" in html


def test_short_reprs_keep_arrays_one_attribute_away(fit):
    model = fit.model
    state = tl.em.step(tl.em.init(model))
    r = repr(state)
    assert len(r.splitlines()) == 1 and len(r) < 300
    assert "iteration=1" in r and f"{state.loglik:.6g}" in r and "b=array(85, 2)" in r
    assert state.b.shape == (85, 2)
    g = tl.gibbs.init(model, seed=1)
    assert len(repr(g).splitlines()) == 1 and "b=array(85, 2)" in repr(g)
    pooled = tl.blup.pooling(model, fit.G, fit.sigma2)
    assert len(repr(pooled).splitlines()) == 1 and "groups=85" in repr(pooled)
    assert pooled["partial"].estimates.shape == (85, 2)


def test_posterior_frames(post):
    table = post.to_frame()
    assert list(table.index[:2]) == post.fixef_names
    for label, get in (("floor", "floor"), ("Var (Intercept)", "G[0,0]"), ("Var Residual", "sigma2"),
                       ("Corr (Intercept),floor", "corr[0,1]")):
        x = post.get(get)
        assert table.loc[label, "mean"] == x.mean() and table.loc[label, "sd"] == x.std(ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)      # a short run; the table is what is tested
        s = post.summary()
    assert isinstance(s, str) and "<table>" in s._repr_html_()
    assert f"{table.loc['floor', 'mean']:.4g}" in s._repr_html_()
    draws = post.draws_frame()
    assert draws.shape == (2 * 300, len(table))
    np.testing.assert_array_equal(draws["floor"].to_numpy(), post.get("floor").reshape(-1))
    np.testing.assert_array_equal(draws.loc[(1, 5), "Var floor"], post.draws["G"][1, 5, 1, 1])
    with_b = post.draws_frame(b=True)
    np.testing.assert_array_equal(with_b["b[2, floor]"].to_numpy(), post.draws["b"][:, :, 1, 1].reshape(-1))


def test_arviz_export_matches_the_summary(post):
    az = pytest.importorskip("arviz")
    idata = post.to_arviz()
    p = idata.posterior
    assert list(p["beta"].coords["fixef"].values) == post.fixef_names
    assert list(p["b"].coords["county"].values) == list(post.groups)
    assert p["b"].dims == ("chain", "draw", "county", "ranef")
    table = post.to_frame()
    s = az.summary(idata, var_names=["beta", "sigma2", "G"], round_to="none")
    for label, key in (("(Intercept)", "beta[(Intercept)]"), ("floor", "beta[floor]"), ("Var Residual", "sigma2"),
                       ("Var (Intercept)", "G[(Intercept), (Intercept)]"), ("Cov (Intercept),floor",
                                                                            "G[floor, (Intercept)]")):
        assert s.loc[key, "mean"] == pytest.approx(table.loc[label, "mean"], rel=1e-10, abs=1e-12)
        assert s.loc[key, "sd"] == pytest.approx(table.loc[label, "sd"], rel=1e-10, abs=1e-12)
        # the diagnostics tests' tolerances: R-hat to 0.01, ESS to 20 %
        assert s.loc[key, "r_hat"] == pytest.approx(table.loc[label, "r_hat"], abs=0.01)
        assert s.loc[key, "ess_bulk"] == pytest.approx(table.loc[label, "ess_bulk"], rel=0.2)
        assert s.loc[key, "ess_tail"] == pytest.approx(table.loc[label, "ess_tail"], rel=0.2)
