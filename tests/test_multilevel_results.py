"""The result of a fit with several grouping factors, and the one route users take to it (#13, Deliver 6).

References: tests/reference/multi_factor_results_reference.json (multi_factor_results_reference.R:
lme4's coef(), predict(allow.new.levels = TRUE), predict(re.form = NA), AIC/BIC/df, anova of
nested ML fits, and the names lme4 gives one-factor fits with two terms) and
tests/reference/multi_factor_reference.json (fixef, se). Tolerances: 1e-6 relative for
fixef-based numbers, logLik, AIC, BIC and the LRT; 1e-5 for anything that carries a BLUP.
"""
import json
import pathlib
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm.errors import BoundaryWarning, DataError, DesignError, MissingValuesWarning, TeachLMMError
from teachlmm.multilevel import MultilevelModel, OneFactorOnly
from teachlmm.multilevel_result import MultilevelResult
from teachlmm.results import MixedModelResult

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests/reference/multi_factor_results_reference.json").read_text())
BASE = json.loads((ROOT / "tests/reference/multi_factor_reference.json").read_text())
KEYS = [k for k in REF if k not in ("meta", "one_factor_names", "anova")]

_cache = {}


def _data(path):
    return tl.read_csv(str(ROOT / path))


def _fit(formula, path, reml=True):
    key = (formula, path, reml)
    if key not in _cache:
        _cache[key] = tl.em.fit(tl.Model(formula, _data(path)), reml=reml)
    return _cache[key]


def _ref_fit(key):
    e = REF[key]
    return _fit(e["formula"], e["data"], e["reml"])


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# -- the route ------------------------------------------------------------------

def test_the_same_code_fits_one_factor_or_several():
    data = _data("tests/reference/data/pastes.csv")
    model = tl.Model("strength ~ 1 + (1 | batch/cask)", data)
    assert isinstance(model, MultilevelModel) and isinstance(model, tl.MultilevelModel)
    fit = tl.em.fit(model)
    assert isinstance(fit, MultilevelResult)
    other = tl.multilevel.fit("strength ~ 1 + (1 | batch/cask)", data)
    assert fit.loglik == pytest.approx(other.loglik, rel=1e-12)
    one = tl.Model("strength ~ 1 + (1 | batch)", data)
    assert type(one) is tl.Model
    assert isinstance(tl.em.fit(one), MixedModelResult)
    assert type(tl.Model("strength ~ 1 + (1 | batch:cask)", data)) is MultilevelModel    # an interaction factor


def test_em_steps_dispatch_for_several_factors():
    model = tl.Model("diameter ~ 1 + (1 | plate) + (1 | sample)", _data("tests/reference/data/penicillin.csv"))
    states = [s for s, _ in zip(tl.em.steps(model), range(6))]
    assert [s.iteration for s in states] == list(range(6))
    dev = [s.deviance for s in states]
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(dev, dev[1:]))          # EM never goes down in loglik
    assert tl.em.step(states[-1]).iteration == 6
    plain = tl.em.fit(model, method="plain")
    assert plain.loglik == pytest.approx(tl.em.fit(model).loglik, rel=1e-10)
    with pytest.raises(TeachLMMError, match="one grouping factor"):
        tl.em.fit(model, method="squarem")
    with pytest.raises(TeachLMMError, match="one grouping factor"):
        tl.em.fit(model, G=[[1.0]])


# -- against lme4 -----------------------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
def test_coef_aic_bic_and_names_against_lme4(key):
    e, fit = REF[key], _ref_fit(key)
    assert list(fit.Gs) == e["varcorr_names"]
    assert list(fit.ranefs) == list(fit.coefs) == list(fit.condsds) == list(fit.groups_by) == e["ranef_names"]
    assert fit.df == e["df"]
    assert _rel(fit.loglik, e["loglik"]) < 1e-6
    assert _rel(fit.aic, e["AIC"]) < 1e-6 and _rel(fit.bic, e["BIC"]) < 1e-6
    for g, v in e["coef"].items():
        names = fit.coef_names[g] if isinstance(fit.coef_names, dict) else fit.coef_names   # one factor: a list
        assert names == v["names"]
        where = {lev: i for i, lev in enumerate(fit.groups_by[g])}
        got = fit.coefs[g][[where[lev] for lev in v["levels"]]]
        want = np.array(v["coef"])
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5
        assert fit.to_frame("coef", factor=g).shape == want.shape


@pytest.mark.parametrize("key", KEYS)
def test_predict_with_unseen_levels_against_lme4(key):
    e, fit = REF[key], _ref_fit(key)
    new = {}
    for name, values in e["newdata"].items():
        try:
            new[name] = np.array([float(v) for v in values])
        except ValueError:
            new[name] = np.array(values)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        pred, unseen = fit.predict(new, return_unseen=True)
    scale = np.max(np.abs(e["predict_new"]))
    assert np.max(np.abs(pred - np.array(e["predict_new"]))) / scale < 1e-6
    unseen = unseen if isinstance(unseen, dict) else {"one factor": unseen}
    if any(u.any() for u in unseen.values()):
        assert any("not in the fitted data" in str(w.message) for w in said)
    fixed = fit.predict(new, re=False)
    assert np.max(np.abs(fixed - np.array(e["predict_fixed"]))) / scale < 1e-6
    assert np.max(np.abs(fit.fitted()[:10] - np.array(e["fitted_head"]))) / scale < 1e-6


def test_unseen_levels_are_reported_per_factor():
    fit = _fit("strength ~ 1 + (1 | batch/cask)", "tests/reference/data/pastes.csv")
    with pytest.warns(UserWarning, match="1 at 'cask:batch'"):
        _, unseen = fit.predict({"batch": ["A", "A"], "cask": ["a", "z"]}, return_unseen=True)
    assert unseen["cask:batch"].tolist() == [False, True] and unseen["batch"].tolist() == [False, False]
    with pytest.raises(TeachLMMError, match="not available"):
        fit.predict({"batch": ["A"], "cask": ["a"]}, interval="prediction")
    pred = fit.predict({"batch": np.array(["A", None], dtype=object), "cask": ["a", "a"]})
    assert np.isfinite(pred[0]) and np.isnan(pred[1])                    # a missing level: NaN, as R's NA


@pytest.mark.parametrize("name", ["pastes", "penicillin", "scotssec"])
def test_anova_against_lme4(name):
    """lme4's anova of the best ML fits; we fit by REML and let anova refit by ML, as lme4 does."""
    e = REF["anova"][name]
    small, big = _fit(e["small"], e["data"]), _fit(e["big"], e["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryWarning)
        tab = tl.anova(small, big)
    assert [r["npar"] for r in tab.rows] == e["npar"]
    for col in ("AIC", "BIC", "logLik", "deviance"):
        assert _rel([r[col] for r in tab.rows], e[col]) < 1e-6, col
    assert _rel(tab.chisq[1], e["Chisq"]) < 1e-6 and tab.df[1] == e["Df"]
    assert _rel(tab.pvalue_chisq[1], e["p"]) < 1e-5
    assert all(tab.refitted)


def test_anova_refuses_models_that_are_not_nested():
    path = "tests/reference/data/penicillin.csv"
    a, b = _fit("diameter ~ 1 + (1 | plate)", path), _fit("diameter ~ 1 + (1 | sample)", path)
    with pytest.raises(DataError, match="groups the rows differently"):
        tl.anova(a, b)
    machines = "tests/reference/data/machines.csv"
    with pytest.raises(TeachLMMError, match="not nested in model2: its random effect '.Intercept. . Machine'"):
        tl.anova(_fit("score ~ 1 + (1 | Worker) + (1 | Machine)", machines),
                 _fit("score ~ 1 + (1 | Worker) + (1 | Worker:Machine)", machines))
    scots = "tests/reference/data/scotssec.csv"
    with pytest.raises(TeachLMMError, match="fixed effect 'verbal'"):
        tl.anova(_fit("attain ~ verbal + (1 | primary) + (1 | second)", scots),
                 _fit("attain ~ sex + (1 | primary) + (1 | second)", scots))
    with pytest.raises(TeachLMMError, match="F tests"):
        tl.anova(_fit("diameter ~ 1 + (1 | plate) + (1 | sample)", path), ddf="Satterthwaite")


def test_wald_intervals_against_lme4():
    e = BASE["scotssec_crossed_REML"]
    fit = _fit(e["formula"], e["data"])
    ci = fit.confint()
    for k, est in e["fixef"].items():
        half = 1.959963984540054 * e["fixef_se"][k]
        assert _rel(ci[k], [est - half, est + half]) < 1e-6
    with pytest.raises(TeachLMMError, match="degrees of freedom"):
        fit.confint(ddf="Satterthwaite")


def test_bootstrap_intervals_for_several_factors():
    fit = _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", "tests/reference/data/penicillin.csv")
    boot = tl.intervals.bootstrap(fit, n_boot=6, seed=3)
    assert boot.names == ["sd_(Intercept)|plate", "sd_(Intercept)|sample", "sigma", "(Intercept)"]
    again = tl.intervals.bootstrap(fit, n_boot=6, seed=3)
    np.testing.assert_array_equal(boot.draws, again.draws)
    assert np.all(np.isfinite(boot.draws)) and np.all(boot.draws[:, :3] >= 0)
    ci = fit.confint(method="boot", n_boot=6, seed=3)
    assert list(ci) == boot.names


# -- simulate: every factor's effects drawn ------------------------------------------

def test_simulate_draws_every_factor():
    """Covariances of simulated responses: rows sharing only a plate covary by G_plate, only a sample
    by G_sample, neither by 0; the variance is G_plate + G_sample + sigma2 (within 4 Monte Carlo SE)."""
    fit = _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", "tests/reference/data/penicillin.csv")
    ys = fit.simulate(n_sim=3000, seed=11)
    assert ys.shape == (3000, 144)
    np.testing.assert_array_equal(ys[:5], fit.simulate(n_sim=3000, seed=11)[:5])
    r = ys - fit.fixef["(Intercept)"]
    t = {term.name: term.codes for term in fit.model.terms}
    plate, sample = t["plate"], t["sample"]
    pairs = {"plate": (plate[:, None] == plate) & (sample[:, None] != sample),
             "sample": (plate[:, None] != plate) & (sample[:, None] == sample),
             "neither": (plate[:, None] != plate) & (sample[:, None] != sample)}
    want = {"plate": fit.Gs["plate"][0, 0], "sample": fit.Gs["sample"][0, 0], "neither": 0.0}
    for kind, mask in pairs.items():
        i, j = np.nonzero(np.triu(mask, 1))
        per_sim = (r[:, i] * r[:, j]).mean(axis=1)
        se = per_sim.std(ddof=1) / np.sqrt(per_sim.size)
        assert abs(per_sim.mean() - want[kind]) < 4 * se, kind
    var = (r * r).mean(axis=1)
    total = fit.Gs["plate"][0, 0] + fit.Gs["sample"][0, 0] + fit.sigma2
    assert abs(var.mean() - total) < 4 * var.std(ddof=1) / np.sqrt(var.size)


# -- the rest of the result ----------------------------------------------------------

def test_icc_is_each_terms_share():
    fit = _fit("strength ~ 1 + (1 | batch/cask)", "tests/reference/data/pastes.csv")
    G = BASE["pastes_nested_REML"]["G"]
    a, b, s2 = G["cask:batch"]["matrix"][0][0], G["batch"]["matrix"][0][0], BASE["pastes_nested_REML"]["sigma2"]
    assert fit.icc["cask:batch"] == pytest.approx(a / (a + b + s2), rel=1e-6)
    assert fit.icc["batch"] == pytest.approx(b / (a + b + s2), rel=1e-6)
    two = _fit("distance ~ age + (1 | Subject) + (0 + age | Subject)", "tests/reference/data/orthodont.csv")
    assert two.icc == pytest.approx(two.G[0, 0] / (two.G[0, 0] + two.sigma2), rel=1e-12)   # one factor: unchanged


def test_summary_as_lmer_with_satterthwaite_df(monkeypatch):
    """lmerTest's layout by default (df of teachlmm.multilevel_ddf, checked against lmerTest there); the
    fallback to lme4's t values when the fit is too large for the dense df algebra says so."""
    from teachlmm import multilevel_ddf
    ref = json.loads(pathlib.Path("tests/reference/ddf_reference.json").read_text())["scotssec_crossed_REML"]
    fit = _fit("attain ~ verbal + sex + (1 | primary) + (1 | second)", "tests/reference/data/scotssec.csv")
    text = str(fit.summary())
    assert "Number of obs: 3435, groups:  primary, 148; second, 19" in text
    assert "Satterthwaite" in text and "Pr(>|t|)" in text and " primary " in text and "Residual" in text
    table = fit.coef_table()
    for name, df in ref["satterthwaite"]["df"].items():
        assert table["df"][name] == pytest.approx(df, rel=1e-4)
        assert f"{df:.2f}" in text
    assert "z value" in fit.summary(ddf="normal") and set(fit.coef_table(None)) == {"Estimate", "Std. Error", "t value"}
    with pytest.raises(TeachLMMError, match="not yet available for several grouping factors"):
        fit.summary(ddf="Kenward-Roger")
    monkeypatch.setattr(multilevel_ddf, "MAX_RANDOM_EFFECTS", 10)
    small = str(fit.summary())
    assert "t value" in small and "Pr(>|t|)" not in small and "no df or p-values" in small
    assert fit._repr_html_().startswith("<")


def test_to_frame_by_factor():
    pytest.importorskip("pandas")
    fit = _fit("strength ~ 1 + (1 | batch/cask)", "tests/reference/data/pastes.csv")
    df = fit.to_frame("ranef", factor="cask:batch")
    np.testing.assert_array_equal(df.to_numpy(), fit.ranefs["cask:batch"])
    assert list(df.index[:2]) == list(fit.groups_by["cask:batch"][:2]) and df.index.name == "cask:batch"
    with pytest.raises(TeachLMMError, match="several grouping factors"):
        fit.to_frame("ranef")
    with pytest.raises(TeachLMMError, match="unknown grouping factor"):
        fit.to_frame("condsd", factor="cask")
    vc = fit.to_frame("varcorr")
    assert list(vc["grp"]) == ["cask:batch", "batch", "Residual"]
    assert list(fit.to_frame("fixef").columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]


def test_group_values_per_factor():
    data = _data("tests/reference/data/pastes.csv")
    model = tl.Model("strength ~ 1 + (1 | batch/cask)", data)
    fit = tl.em.fit(model)
    batch_of_cask = model.group_values("batch", "cask:batch", data)
    assert [f"{c}:{b}" for c, b in zip(model.group_values("cask", "cask:batch", data), batch_of_cask)] \
        == list(fit.groups_by["cask:batch"])
    with pytest.raises(DataError, match="varies within batch"):
        model.group_values("cask", "batch", data)
    with pytest.raises(DataError, match="say which grouping factor"):
        model.group_values("batch", data=data)


def test_deviance_at_the_other_criterion():
    """lme4's deviance(fit, REML = FALSE) of a REML fit: the ML deviance at the REML theta, never below the ML optimum."""
    path = "tests/reference/data/penicillin.csv"
    reml = _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", path)
    ml = _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", path, reml=False)
    at_reml = tl.results.deviance(reml, reml=False)
    assert ml.deviance <= at_reml <= ml.deviance + 1.0
    assert tl.results.deviance(reml) == pytest.approx(-2 * BASE["penicillin_crossed_REML"]["loglik"], rel=1e-6)


# -- one factor: the dicts, keyed as lme4 keys them --------------------------------------

@pytest.mark.parametrize("kind", ["uncorrelated", "two_terms", "one_term"])
def test_one_factor_fits_fill_the_dicts_with_lme4s_names(kind):
    e = REF["one_factor_names"][kind]
    fit = _fit(e["formula"], "tests/reference/data/orthodont.csv")
    assert isinstance(fit, MixedModelResult)
    assert list(fit.Gs) == e["varcorr_names"] and list(fit.ranefs) == e["ranef_names"]
    g = fit.group_name
    assert fit.ranefs[g] is fit.ranef and fit.coefs[g] is fit.coef and fit.condsds[g] is fit.condsd
    assert fit.groups_by[g] is fit.groups and fit.coef_names == e["coef_names"]
    blocks = fit.model.blocks
    for name, blk in zip(fit.Gs, blocks):
        np.testing.assert_array_equal(fit.Gs[name], fit.G[np.ix_(blk, blk)])


def test_one_factor_anova_and_confint_unchanged():
    data = tl.load_radon()
    m1 = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", data))
    m3 = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", data))
    tab = tl.anova(m1, m3)
    assert round(tab.chisq[1], 4) == 2.5418 and tab.boundary[1] == ["floor"]
    assert tl.intervals.parameter_names(m3) == ["sd_(Intercept)|county", "cor_floor.(Intercept)|county",
                                                "sd_floor|county", "sigma"]


# -- hostile inputs ----------------------------------------------------------------------

PASTES = "tests/reference/data/pastes.csv"


def test_missing_grouping_value_is_dropped_as_lme4():
    data = dict(_data(PASTES))
    batch = np.array(data["batch"], dtype=object)
    batch[3] = None
    data["batch"] = batch
    with pytest.warns(MissingValuesWarning, match="1 row"):
        fit = tl.em.fit(tl.Model("strength ~ 1 + (1 | batch/cask)", data))
    assert fit.model.n == 59 and "(1 observations deleted due to missingness)" in str(fit.summary())
    with pytest.raises(DataError, match="missing"):
        tl.Model("strength ~ 1 + (1 | batch/cask)", data, missing="error")


def test_a_factor_with_one_level_a_typo_and_singleton_levels_are_refused():
    data = dict(_data(PASTES))
    data["one"] = np.array(["x"] * 60)
    with pytest.raises(DesignError, match="only one level"):
        tl.Model("strength ~ 1 + (1 | batch) + (1 | one)", data)
    with pytest.raises(DataError, match="Did you mean 'batch'"):
        tl.Model("strength ~ 1 + (1 | bacth/cask)", data)
    data["row"] = np.arange(60).astype(str)
    with pytest.raises(DesignError, match="cannot be told apart from the residual"):
        tl.Model("strength ~ 1 + (1 | batch/row)", data)
    with pytest.raises(DesignError, match="from_chunks takes one grouping factor"):
        tl.Model.from_chunks("strength ~ 1 + (1 | batch/cask)", [data])


def test_one_factor_attributes_say_what_to_use():
    model = tl.Model("strength ~ 1 + (1 | batch/cask)", _data(PASTES))
    with pytest.raises(OneFactorOnly, match="one grouping factor"):
        model.stats
    assert not hasattr(model, "J")
    with pytest.raises(DesignError, match="one grouping factor"):
        tl.blup.fit(model, np.eye(1), 1.0)


def test_a_zero_variance_warns_and_finishes():
    """A crossed factor whose level means are exactly equal: its variance is estimated as 0."""
    rng = np.random.default_rng(5)
    plate, sample = np.repeat(np.arange(12), 6), np.tile(np.arange(6), 12)
    e = rng.standard_normal(72)
    e -= np.bincount(sample, e)[sample] / 12                       # every sample's mean residual is 0
    y = 3.0 + rng.normal(0, 2, 12)[plate] + e
    data = {"y": y, "plate": plate.astype(str), "sample": sample.astype(str)}
    with pytest.warns(BoundaryWarning, match="'sample'"):
        fit = tl.em.fit(tl.Model("y ~ 1 + (1 | plate) + (1 | sample)", data))
    assert fit.singular and fit.Gs["sample"][0, 0] < 1e-8 * fit.sigma2
    assert fit.Gs["plate"][0, 0] > 1 and np.isfinite(fit.loglik)
    assert "boundary (singular) fit" in str(fit.summary())


def test_readme_section_runs():
    """The README's "Several grouping factors" block is real code, and its icc comment is what it prints."""
    import re
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### Several grouping factors.*?```python\n(.*?)```", text, re.S).group(1)
    scope = {"tl": tl}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "README.md", "exec"), scope)
    assert {k: round(v, 3) for k, v in scope["fit"].icc.items()} == {"cask:batch": 0.783, "batch": 0.154}
