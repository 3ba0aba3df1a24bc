"""EM against lme4: every number lmer reports, at lme4's optimum (tests/reference/lme4_radon.json).

The JSON was produced by tests/reference/lme4_reference.R, which searched several
optimizers and starts and polished the best with Newton steps; CI needs no R.
"""
import warnings

import numpy as np
import pytest

import teachlmm as tl
from conftest import as_array

KEYS = ["M0_REML", "M1_REML", "M3_REML", "M3u_REML", "M4_REML",
        "M0_ML", "M1_ML", "M3_ML", "M3u_ML", "M4_ML"]


@pytest.mark.parametrize("key", KEYS)
def test_variance_components_and_loglik(fits, lme4, key):
    fit, ref = fits(key), lme4[key]
    assert fit.converged
    np.testing.assert_allclose(fit.G, as_array(ref["G"]), atol=1e-6)
    assert fit.sigma2 == pytest.approx(ref["sigma2"], abs=1e-6)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert fit.df == ref["df"]


@pytest.mark.parametrize("key", KEYS)
def test_fixed_effects_and_standard_errors(fits, lme4, key):
    fit, ref = fits(key), lme4[key]
    assert list(fit.fixef) == list(ref["fixef"])
    for name in ref["fixef"]:
        assert fit.fixef[name] == pytest.approx(ref["fixef"][name], abs=1e-6)
        assert fit.fixef_se[name] == pytest.approx(ref["fixef_se"][name], abs=1e-6)
    np.testing.assert_allclose(fit.vcov, as_array(ref["vcov"]), atol=1e-8)


@pytest.mark.parametrize("key", [k for k in KEYS if not k.startswith("M3u")])
def test_ranef_coef_condsd_every_group(fits, lme4, key):
    fit, ref = fits(key), lme4[key]
    assert [str(g) for g in fit.groups] == [str(g) for g in ref["groups"]]
    assert fit.ranef_names == ref["ranef_names"] and fit.coef_names == ref["coef_names"]
    np.testing.assert_allclose(fit.ranef, as_array(ref["ranef"]), atol=1e-6)
    np.testing.assert_allclose(fit.coef, as_array(ref["coef"]), atol=1e-6)
    np.testing.assert_allclose(fit.condsd, as_array(ref["condsd"]), atol=1e-6)


def test_uncorrelated_model_ranef(fits, lme4):
    """(1 + floor || county): G is diagonal; the BLUPs match lme4's. (lme4 reports condVar per
    term for `||`, ignoring the posterior correlation between a county's two effects, so condsd
    is compared for the separate-term form only loosely: see tests/reference/README.md.)"""
    fit, ref = fits("M3u_REML"), lme4["M3u_REML"]
    assert fit.G[0, 1] == 0.0
    np.testing.assert_allclose(fit.ranef, as_array(ref["ranef"]), atol=1e-6)
    np.testing.assert_allclose(fit.coef, as_array(ref["coef"]), atol=1e-6)


def test_m3_matches_the_lecture_printout(fits):
    """The lecture's M3 numbers (lme4, REML), to the digits printed there."""
    fit = fits("M3_REML")
    assert round(fit.fixef["(Intercept)"], 4) == 1.4628 and round(fit.fixef["floor"], 4) == -0.6811
    assert round(fit.fixef_se["(Intercept)"], 4) == 0.0539 and round(fit.fixef_se["floor"], 4) == 0.0876
    assert round(fit.G[0, 0], 3) == 0.122 and round(fit.G[1, 1], 3) == 0.118
    assert round(fit.corr[0, 1], 3) == -0.337 and round(fit.sigma2, 3) == 0.557
    assert round(fit.loglik, 2) == -1084.16
    k = list(fit.groups).index(2)
    assert fit.coef[k] == pytest.approx([0.9334, -0.7709], abs=2e-4)   # lecture stopped ~1e-5 short
    assert fit.coef[0] == pytest.approx([1.1445, -0.5406], abs=1e-4)


def test_design_md_optimum_digits(fits):
    """design.md section 6: the optimum to six digits (M3 and M4, REML)."""
    m3, m4 = fits("M3_REML"), fits("M4_REML")
    np.testing.assert_allclose(m3.G, [[0.121584, -0.040425], [-0.040425, 0.118069]], atol=1e-6)
    assert m3.sigma2 == pytest.approx(0.556745, abs=1e-6)
    assert m3.loglik == pytest.approx(-1084.16230, abs=1e-5)
    np.testing.assert_allclose(list(m4.fixef.values()), [1.468594, -0.670944, 0.808135, -0.419515], atol=1e-6)
    np.testing.assert_allclose(m4.G, [[0.0154763, 0.0156765], [0.0156765, 0.0942798]], atol=1e-7)
    assert m4.sigma2 == pytest.approx(0.561679, abs=1e-6)
    assert m4.loglik == pytest.approx(-1063.2897, abs=1e-4)
    assert m4.reml_criterion == pytest.approx(2126.58, abs=5e-3)
    se = [m4.fixef_se[k] for k in m4.fixef_names]
    np.testing.assert_allclose(se, [0.0352, 0.0844, 0.0906, 0.2271], atol=5e-5)


def test_m4_em_beats_lme4_default_optimizer(fits, lme4, radon):
    """lme4 1.1-31's default optimizer stops at a boundary point (intercept variance 0) for M4.
    Evaluated with our likelihood, that point has lme4's REML criterion 2132.24 - worse than EM's."""
    default = lme4["M4_REML"]["default_fit"]
    model = fits("M4_REML").model
    crit = -2 * tl.mme.loglik(model.stats, as_array(default["G"]), default["sigma2"], reml=True)
    assert crit == pytest.approx(default["REMLcrit"], abs=1e-4)
    assert fits("M4_REML").reml_criterion < crit - 5


def test_lecture_alpha_beta(fits, radon, lme4):
    """M4's county intercepts and slopes alpha_j = coef[,1] + coef[,3] u_j, beta_j = coef[,2] + coef[,4] u_j."""
    from teachlmm.cli import county_lines
    fit = fits("M4_REML")
    alpha, beta = county_lines(fit, fit.model.group_values("log_uranium"))
    np.testing.assert_allclose(alpha[:8], [0.9018, 0.8109, 1.3852, 1.0480, 1.3637, 1.7609, 1.8009, 1.7288], atol=1e-4)
    np.testing.assert_allclose(beta[:7], [-0.3578, -0.5335, -0.5990, -0.3500, -0.5633, -0.8541, -0.4352], atol=1e-4)
    ref = lme4["lecture_alpha_beta_M4"]
    np.testing.assert_allclose(alpha, as_array(ref["alpha"]), atol=1e-6)
    np.testing.assert_allclose(beta, as_array(ref["beta"]), atol=1e-6)


def test_plain_em_reaches_the_same_optimum(radon, lme4):
    """Plain (unaccelerated) EM needs hundreds of iterations on M4 but ends at the same point."""
    from conftest import M4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = tl.em.fit(tl.Model(M4, radon), method="plain")
    assert fit.converged and fit.n_iter > 300
    np.testing.assert_allclose(fit.G, as_array(lme4["M4_REML"]["G"]), atol=1e-6)
    assert fit.loglik == pytest.approx(lme4["M4_REML"]["loglik"], abs=1e-7)


@pytest.mark.parametrize("method", ["newton", "squarem", "factor", "plain"])
def test_em_started_at_lme4s_boundary_point_leaves_it(fits, lme4, method):
    """EM cannot leave a singular G by its own steps (they keep G's rank), so a start on a
    boundary that is no maximum - lme4's default M4 point - is checked (KKT on the PSD cone)
    and left along the direction of ascent; every method then reaches the optimum."""
    default = lme4["M4_REML"]["default_fit"]
    model = fits("M4_REML").model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = tl.em.fit(model, G=default["G"], sigma2=default["sigma2"], method=method)
    assert fit.converged and not fit.singular
    assert fit.reml_criterion == pytest.approx(lme4["M4_REML"]["REMLcrit"], abs=1e-6)
    np.testing.assert_allclose(fit.G, as_array(lme4["M4_REML"]["G"]), atol=1e-6)


@pytest.mark.parametrize("key", ["M3_REML", "M3_ML", "M4_REML", "M4_ML"])
def test_accelerated_em_is_never_worse_than_plain_em(fits, key):
    """The default fit (EM + Newton) and the factor step end where plain EM ends, never lower, in far
    fewer iterations."""
    fast = fits(key)
    plain = tl.em.fit(fast.model, reml=fast.reml, method="plain")
    factor = tl.em.fit(fast.model, reml=fast.reml, method="factor")
    for other in (plain, factor):
        assert fast.loglik >= other.loglik - 1e-9
        np.testing.assert_allclose(fast.G, other.G, atol=1e-6)
    assert fast.n_iter < factor.n_iter < plain.n_iter
