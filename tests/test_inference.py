"""Inference against lme4: information criteria, deviance, anova, Wald intervals; simulate and bad input.

lme4's numbers are in tests/reference/lme4_radon.json (tests/reference/lme4_reference.R).
Slow bootstrap studies (coverage with known truth, bootstrap LRT) are in test_bootstrap.py.
"""
import numpy as np
import pytest
from scipy import stats

import teachlmm as tl
from teachlmm import inference
from teachlmm.errors import DataError, TeachLMMError
from conftest import FORMULAS

KEYS = [f"{m}_{k}" for m in ("M1", "M3", "M4") for k in ("REML", "ML")]


# ----------------------------------------------------------------------------
# information criteria and deviance
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
def test_information_criteria_match_lme4(fits, lme4, key):
    """AIC(), BIC(), logLik(), attr(logLik, "df") and deviance() of lme4, REML and ML fits."""
    fit, ref = fits(key), lme4[key]
    assert fit.df == ref["df"]
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-3)
    assert fit.bic == pytest.approx(ref["BIC"], abs=1e-3)
    # lme4's deviance(): -2 logLik for ML; for REML fits it returns the REML criterion (deprecated use)
    expected = ref["REMLcrit"] if fit.reml else ref["deviance"]
    assert fit.deviance == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("model", ["M1", "M3", "M4"])
def test_ml_deviance_at_reml_estimates_matches_lme4(fits, lme4, model):
    """lme4's deviance(fit, REML = FALSE): ML deviance at the REML theta, sigma2 profiled."""
    fit, ref = fits(f"{model}_REML"), lme4[f"{model}_REML"]
    assert inference.deviance(fit, reml=False) == pytest.approx(ref["deviance_ML_at_REML_estimates"], abs=1e-3)
    # it is not -2 x the ML log-likelihood at the REML (G, sigma2): sigma2 is re-estimated
    at_reml_values = -2 * tl.MixedModelResult(fit.model, fit.G, fit.sigma2, reml=False).loglik
    assert inference.deviance(fit, reml=False) < at_reml_values


def test_profiled_deviance_is_the_maximum_over_sigma2(fits):
    """The profiled criterion is the best -2 loglik along the ray G = sigma2 T T' (checked by a 1-d search)."""
    from scipy.optimize import minimize_scalar
    fit = fits("M3_REML")
    T = tl.mme.relative_factor(fit.G, fit.sigma2)

    def minus2ll(log_s2):
        s2 = np.exp(log_s2)
        return -2 * tl.mme.loglik(fit.model.stats, s2 * T @ T.T, s2, reml=False)
    best = minimize_scalar(minus2ll, bracket=(np.log(0.4), np.log(0.7)), tol=1e-12)
    assert inference.deviance(fit, reml=False) == pytest.approx(best.fun, abs=1e-6)


def test_ml_fit_deviance_is_minus_twice_loglik(fits):
    fit = fits("M4_ML")
    assert fit.deviance == -2 * fit.loglik


# lme4 1.1-31, REMLcrit(lmer(<formula>, REML = FALSE)) at the ML optimum (bobyqa, rhoend 1e-10;
# its logLik equals the JSON's M1_ML / M3_ML loglik to 1e-12):
LME4_REMLCRIT_OF_ML_FIT = {"M1": 2171.311080311410, "M3": 2168.344429970130}


@pytest.mark.parametrize("model", ["M1", "M3"])
def test_reml_criterion_at_ml_estimates_matches_lme4(fits, model):
    fit = fits(f"{model}_ML")
    assert inference.deviance(fit, reml=True) == pytest.approx(LME4_REMLCRIT_OF_ML_FIT[model], abs=1e-4)


# ----------------------------------------------------------------------------
# anova
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table(fits):
    return tl.inference.anova(fits("M1_REML"), fits("M3_REML"), fits("M4_REML"), names=["M1", "M3", "M4"])


def test_anova_matches_lme4(table, lme4):
    ref = lme4["anova_M1_M3_M4"]["lme4_anova"]
    assert [r["model"] for r in table.rows] == ["M1", "M3", "M4"]
    for row, r in zip(table.rows, ref):
        assert row["npar"] == r["npar"]
        for col in ("AIC", "BIC", "logLik", "deviance"):
            assert row[col] == pytest.approx(r[col], abs=1e-3), col
    np.testing.assert_allclose(table.chisq[1:], [r["Chisq"] for r in ref[1:]], atol=1e-3)
    assert np.isnan(table.chisq[0]) and table.rows[0]["Chisq"] is None
    np.testing.assert_array_equal(table.df[1:], [2, 2])
    np.testing.assert_allclose(table.pvalue[1:], [r["Pr(>Chisq)"] for r in ref[1:]], rtol=1e-3)
    # the printed values
    assert round(table.chisq[1], 4) == 2.5418 and round(table.chisq[2], 4) == 46.8848
    assert round(table.pvalue[1], 4) == 0.2806
    assert f"{table.pvalue[2]:.3e}" == "6.593e-11"


def test_anova_refits_reml_fits_by_ml_and_says_so(table, fits):
    assert table.refitted == [True, True, True]
    assert all(not f.reml for f in table.fits)
    assert table.fits[1].loglik == pytest.approx(fits("M3_ML").loglik, abs=1e-6)
    text = str(table)
    assert text.startswith("refitting model(s) with ML (instead of REML)")
    header = next(line for line in text.splitlines() if "npar" in line)
    assert header.split() == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    m4 = next(line for line in text.splitlines() if line.startswith("M4 "))
    assert m4.split() == ["M4", "8", "2130.2", "2168.8", "-1057.1", "2114.2", "46.8848", "2", "6.593e-11", "***"]


def test_anova_on_ml_fits_needs_no_refit(table, fits):
    ml = tl.inference.anova(fits("M1_ML"), fits("M3_ML"), fits("M4_ML"))
    assert ml.refitted == [False, False, False]
    assert "refitting" not in str(ml)
    np.testing.assert_allclose(ml.chisq[1:], table.chisq[1:], atol=1e-6)


def test_anova_sorts_models_by_number_of_parameters(table, fits):
    shuffled = tl.inference.anova(fits("M4_REML"), fits("M1_REML"), fits("M3_REML"), names=["M4", "M1", "M3"])
    assert shuffled.names == ["M1", "M3", "M4"]
    np.testing.assert_allclose(shuffled.chisq[1:], table.chisq[1:], atol=1e-9)


def test_boundary_caveat_and_mixture_pvalue(table):
    """M1 vs M3 sets the slope variance to 0 (a boundary): a note and the 50:50 mixture p-value.
    M3 vs M4 adds fixed effects only: no note, no mixture."""
    x = table.chisq[1]
    expected = 0.5 * stats.chi2.sf(x, 1) + 0.5 * stats.chi2.sf(x, 2)
    assert table.pvalue_mixture[1] == pytest.approx(expected, rel=1e-12)
    assert table.pvalue_mixture[1] < table.pvalue[1]       # the chi2(2) p-value is conservative
    assert np.isnan(table.pvalue_mixture[2])
    assert table.boundary == [[], ["floor"], []]
    text = " ".join(str(table).split())                       # the notes are wrapped at 100 columns
    assert "M3 vs M1 sets the variance of floor to 0" in text
    assert "0.5 chi2(1) + 0.5 chi2(2)" in text and f"Mixture p-value: {expected:.4g}" in text
    assert "method='boot'" in text
    assert "M4 vs M3" not in text


def test_mixture_for_one_uncorrelated_variance(radon):
    """Adding one variance with no covariance (1 | county) -> (1 + floor || county): df 1, mixture of
    a point mass at 0 and chi2(1), i.e. half the chi2(1) p-value."""
    small = tl.em.fit(tl.Model(FORMULAS["M1"], radon), reml=False)
    big = tl.em.fit(tl.Model(FORMULAS["M3u"], radon), reml=False)
    tab = tl.inference.anova(small, big)
    assert tab.df[1] == 1
    assert tab.pvalue_mixture[1] == pytest.approx(0.5 * stats.chi2.sf(tab.chisq[1], 1), rel=1e-12)
    assert "0.5 (point mass at 0) + 0.5 chi2(1)" in " ".join(str(tab).split())


@pytest.mark.filterwarnings("ignore::teachlmm.errors.BoundaryWarning")   # z is noise: its variance is ~0
def test_two_added_variances_get_the_caveat_without_a_mixture_pvalue(radon):
    """Testing two variances = 0 at once: the weights of the chi-bar-square mixture depend on the
    information matrix, so no mixture p-value is given; the caveat and the bootstrap hint are."""
    data = dict(radon, z=np.random.default_rng(1).normal(size=radon["floor"].size))
    small = tl.em.fit(tl.Model("log_radon ~ floor + z + (1 | county)", data), reml=False)
    big = tl.em.fit(tl.Model("log_radon ~ floor + z + (1 + floor + z | county)", data), reml=False)
    tab = tl.inference.anova(small, big)
    assert tab.df[1] == 5 and tab.boundary[1] == ["floor", "z"]
    assert np.isnan(tab.pvalue_mixture[1])
    text = " ".join(str(tab).split())
    assert "weights depend on the information matrix" in text and "method='boot'" in text


def test_adding_a_covariance_is_not_a_boundary_test(radon):
    """(1 + floor || county) -> (1 + floor | county) frees a covariance, an interior parameter."""
    small = tl.em.fit(tl.Model(FORMULAS["M3u"], radon), reml=False)
    big = tl.em.fit(tl.Model(FORMULAS["M3"], radon), reml=False)
    tab = tl.inference.anova(small, big)
    assert tab.boundary == [[], []] and np.isnan(tab.pvalue_mixture[1])
    assert "Boundary" not in str(tab)


# ----------------------------------------------------------------------------
# anova: bad input
# ----------------------------------------------------------------------------

def test_anova_needs_two_fits(fits):
    with pytest.raises(TeachLMMError, match="two or more"):
        tl.inference.anova(fits("M1_REML"))
    with pytest.raises(TeachLMMError, match="not a fitted model"):
        tl.inference.anova(fits("M1_REML"), "M3")


def test_anova_unknown_method(fits):
    with pytest.raises(TeachLMMError, match="'chisq' or 'boot'"):
        tl.inference.anova(fits("M1_REML"), fits("M3_REML"), method="exact")


def test_anova_rejects_non_nested_models(radon, fits):
    other = tl.em.fit(tl.Model("log_radon ~ 1 + log_uranium + (1 + floor | county)", radon))
    with pytest.raises(TeachLMMError, match="not nested"):
        tl.inference.anova(fits("M1_REML"), other)
    # the smaller model's covariance is fixed at 0 by the bigger one
    uncorrelated = tl.em.fit(tl.Model("log_radon ~ 1 + floor + log_uranium + (1 + floor || county)", radon))
    with pytest.raises(TeachLMMError, match="fixes at 0"):
        tl.inference.anova(fits("M3_REML"), uncorrelated)
    # same number of parameters
    with pytest.raises(TeachLMMError, match="same number of parameters"):
        tl.inference.anova(fits("M3_REML"), fits("M3_ML"))


def test_anova_rejects_different_data(radon, fits):
    half = {k: v[:500] for k, v in radon.items()}
    with pytest.raises(DataError, match="same rows"):
        tl.inference.anova(fits("M1_REML"), tl.em.fit(tl.Model(FORMULAS["M3"], half)))
    shifted = dict(radon, log_radon=radon["log_radon"] + 1.0)
    with pytest.raises(DataError, match="different response"):
        tl.inference.anova(fits("M1_REML"), tl.em.fit(tl.Model(FORMULAS["M3"], shifted)))


def test_anova_names_must_match(fits):
    with pytest.raises(TeachLMMError, match="names"):
        tl.inference.anova(fits("M1_REML"), fits("M3_REML"), names=["a"])


# ----------------------------------------------------------------------------
# Wald intervals
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["M3", "M4"])
def test_wald_intervals_match_lme4(fits, lme4, model):
    ci = fits(f"{model}_REML").confint(method="wald")
    ref = lme4["confint_wald"][f"{model}_REML"]
    assert list(ci) == list(ref)
    for name, (low, high) in ci.items():
        assert low == pytest.approx(ref[name]["lower"], abs=1e-4)
        assert high == pytest.approx(ref[name]["upper"], abs=1e-4)


def test_wald_interval_printed_values(fits):
    ci = fits("M3_REML").confint()
    assert round(ci["(Intercept)"][0], 6) == 1.357192 and round(ci["floor"][0], 6) == -0.852759
    assert "2.5 %" in str(ci) and "97.5 %" in str(ci)


def test_wald_level(fits):
    fit = fits("M3_REML")
    ci = fit.confint(level=0.9)
    z = stats.norm.ppf(0.95)
    assert ci["floor"][1] - ci["floor"][0] == pytest.approx(2 * z * fit.fixef_se["floor"], rel=1e-12)


def test_confint_bad_input(fits):
    fit = fits("M1_REML")
    with pytest.raises(TeachLMMError, match="'wald' or 'boot'"):
        fit.confint(method="profile")
    with pytest.raises(TeachLMMError, match="level"):
        fit.confint(level=95)
    with pytest.raises(TeachLMMError, match="level"):
        fit.confint(method="boot", level="95%", n_boot=2)
    with pytest.raises(TeachLMMError, match="unknown option"):
        fit.confint(method="boot", nboot=10)
    with pytest.raises(TeachLMMError, match="no options"):
        fit.confint(method="wald", n_boot=10)
    with pytest.raises(TeachLMMError, match="n_boot"):
        fit.confint(method="boot", n_boot=0)


# ----------------------------------------------------------------------------
# simulate
# ----------------------------------------------------------------------------

def test_simulate_shape_and_seed(fits):
    fit = fits("M3_REML")
    a = fit.simulate(n_sim=4, seed=7)
    assert a.shape == (4, fit.model.n)
    np.testing.assert_array_equal(a, fit.simulate(n_sim=4, seed=7))
    assert not np.array_equal(a, fit.simulate(n_sim=4, seed=8))
    assert fit.simulate(seed=1).shape == (1, fit.model.n)
    with pytest.raises(TeachLMMError, match="n_sim"):
        fit.simulate(n_sim=2.5)


def test_simulate_has_the_model_moments(fits):
    """Mean X beta; Var(y_i) = z_i'G z_i + sigma2; Cov within a county z_i'G z_k; 0 across counties.

    4,000 draws: the Monte Carlo standard error of a variance estimate is about
    var * sqrt(2 / 4000) = 2.2 % of it; we allow 5 standard errors.
    """
    fit = fits("M3_REML")
    m = fit.model
    ys = fit.simulate(n_sim=4000, seed=3)
    mean = m.X @ fit.beta
    var = np.einsum("iq,qr,ir->i", m.Z, fit.G, m.Z) + fit.sigma2
    se_mean = np.sqrt(var / 4000)
    assert np.all(np.abs(ys.mean(0) - mean) < 5 * se_mean)
    same = np.flatnonzero(m.codes == m.codes[0])[:4]           # four houses in county 1
    other = np.flatnonzero(m.codes == 1)[0]                      # a house in county 2
    rows = np.append(same, other)
    C = np.cov(ys[:, rows].T)
    expected = m.Z[rows] @ fit.G @ m.Z[rows].T + fit.sigma2 * np.eye(rows.size)
    expected[-1, :-1] = expected[:-1, -1] = 0.0                  # different counties: independent
    sd = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    assert np.all(np.abs(C - expected) < 5 * sd * np.sqrt(2 / 4000))


def test_simulate_with_a_singular_G(radon):
    """A variance at 0 is never drawn: with G = diag(0.2, 0) the floor effect does not vary."""
    model = tl.Model(FORMULAS["M3"], radon)
    fit = tl.MixedModelResult(model, np.diag([0.2, 0.0]), 0.5, reml=True)
    ys = fit.simulate(n_sim=3000, seed=2)
    upstairs = np.flatnonzero(model.X[:, 1] == 1)[0]
    assert np.var(ys[:, upstairs]) == pytest.approx(0.7, rel=0.1)
    assert np.all(np.isfinite(ys))


@pytest.mark.filterwarnings("ignore::teachlmm.errors.BoundaryWarning")   # random y: no county variance
def test_with_response_equals_a_rebuilt_model(radon):
    """Replacing y recomputes X'y, Z'y, y'y per group exactly as building the model afresh does."""
    model = tl.Model(FORMULAS["M4"], radon)
    y = np.random.default_rng(0).normal(size=model.n)
    quick = inference._with_response(model, y)
    fresh = tl.Model(FORMULAS["M4"], dict(radon, log_radon=y))
    for name in ("n", "XtX", "XtZ", "ZtZ", "Xty", "Zty", "yty"):
        np.testing.assert_allclose(getattr(quick.stats, name), getattr(fresh.stats, name), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.y, radon["log_radon"])   # the original is untouched
    a, b = tl.em.fit(quick), tl.em.fit(fresh)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)


# ----------------------------------------------------------------------------
# bootstrap: the machinery (small n_boot; the statistics are in test_bootstrap.py)
# ----------------------------------------------------------------------------

def test_bootstrap_is_reproducible_and_uses_simulate(fits):
    fit = fits("M1_REML")
    a = inference.bootstrap(fit, n_boot=5, seed=11)
    b = inference.bootstrap(fit, n_boot=5, seed=11)
    np.testing.assert_array_equal(a.draws, b.draws)
    # replicate 3 is the EM fit to the 3rd simulated response
    y3 = fit.simulate(n_sim=5, seed=11)[2]
    refit = tl.em.fit(inference._with_response(fit.model, y3), G=fit.G, sigma2=fit.sigma2)
    assert a["floor"][2] == pytest.approx(refit.fixef["floor"], abs=1e-12)
    assert a["sigma"][2] == pytest.approx(np.sqrt(refit.sigma2), abs=1e-12)


def test_boot_interval_names_follow_lme4(fits):
    ci = fits("M3_REML").confint(method="boot", n_boot=8, seed=1)
    assert list(ci) == ["sd_(Intercept)|county", "cor_floor.(Intercept)|county", "sd_floor|county", "sigma",
                        "(Intercept)", "floor"]
    boot = ci.bootstrap
    for k, name in enumerate(boot.names):                       # percentile intervals of the draws
        x = boot.draws[:, k]
        x = x[np.isfinite(x)]
        assert ci[name] == pytest.approx(tuple(np.quantile(x, [0.025, 0.975])))
    assert "parametric bootstrap, 8 refits by REML" in str(ci)


def test_bootstrap_progress_goes_to_stderr(fits, capsys):
    inference.bootstrap(fits("M1_REML"), n_boot=3, seed=1, progress=True)
    err = capsys.readouterr().err
    assert "bootstrap refits: 3/3" in err


def test_bootstrap_counts_singular_refits(radon):
    """Data with no county variation: most refits put the county variance at 0; they are counted, not warned."""
    rng = np.random.default_rng(5)
    data = {"y": rng.normal(size=300), "g": np.repeat(np.arange(30), 10).astype(float)}
    fit = tl.MixedModelResult(tl.Model("y ~ 1 + (1 | g)", data), np.array([[1e-4]]), 1.0)
    boot = inference.bootstrap(fit, n_boot=10, seed=2)
    assert 0 < boot.n_singular <= 10
    assert boot.n_not_converged == 0
