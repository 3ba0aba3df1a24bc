"""Tests of teachlmm.blup: closed-form BLUPs, shrinkage and the pooling comparison.

References used, none of them computed by the code under test:

* lme4's own numbers (tests/reference/lme4_radon.json): at lme4's variance
  components, ``blup.fit`` must give lme4's fixef, standard errors, ranef,
  coef and conditional standard deviations.
* A dense, textbook computation in this file: V_j = Z_j G Z_j' + sigma2 I
  per county, GLS with V_j^-1, b_j = G Z_j'V_j^-1 r_j.
* The lecture's printed county intercepts and slopes for M4.
* Plain least squares on the raw rows (numpy.linalg.lstsq), county by county,
  for complete and no pooling.
"""
import doctest
import json
import pathlib

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import blup
from teachlmm.cli import county_lines
from teachlmm.errors import TeachLMMError

REF = json.loads((pathlib.Path(__file__).parent / "reference" / "lme4_radon.json").read_text())
FORMULAS = {
    "M0": "log_radon ~ 1 + (1 | county)",
    "M1": "log_radon ~ 1 + floor + (1 | county)",
    "M3": "log_radon ~ 1 + floor + (1 + floor | county)",
    "M3u": "log_radon ~ 1 + floor + (1 + floor || county)",
    "M4": "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)",
}


@pytest.fixture(scope="module")
def data(radon):
    return radon                      # the session's radon data (conftest.py)


@pytest.fixture(scope="module")
def models(data):
    return {name: tl.Model(f, data) for name, f in FORMULAS.items()}


def lme4(key):
    r = REF[key]
    return r, np.array(r["G"], dtype=float), float(r["sigma2"])


def test_doctests():
    result = doctest.testmod(blup, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ----------------------------------------------------------------------------
# agreement with lme4 at lme4's variance components
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["M1_REML", "M3_REML", "M1_ML", "M3_ML", "M0_REML", "M3u_REML", "M4_REML"])
def test_matches_lme4_at_lme4_variance_components(models, key):
    r, G, sigma2 = lme4(key)
    model = models[key.split("_")[0]]
    bl = blup.fit(model, G=G, sigma2=sigma2, reml=r["reml"])
    assert [int(g) for g in bl.groups] == [int(g) for g in r["groups"]]
    assert list(bl.fixef) == list(r["fixef"])
    tol = 1e-5
    np.testing.assert_allclose(list(bl.fixef.values()), list(r["fixef"].values()), rtol=0, atol=tol)
    np.testing.assert_allclose(list(bl.fixef_se.values()), list(r["fixef_se"].values()), rtol=0, atol=tol)
    np.testing.assert_allclose(bl.vcov, np.array(r["vcov"]), rtol=0, atol=tol)
    np.testing.assert_allclose(bl.ranef, np.array(r["ranef"]), rtol=0, atol=tol)
    np.testing.assert_allclose(bl.condsd, np.array(r["condsd"]), rtol=0, atol=tol)
    assert bl.coef_names == r["coef_names"]
    np.testing.assert_allclose(bl.coef, np.array(r["coef"]), rtol=0, atol=tol)
    # the (restricted) log-likelihood at those components is lme4's logLik
    assert bl.loglik == pytest.approx(r["loglik"], abs=1e-6)


def test_agrees_with_lme4_far_below_the_tolerance(models):
    """Same algebra, same (G, sigma2): the differences are rounding, not 1e-5."""
    for key in ["M1_REML", "M3_REML"]:
        r, G, sigma2 = lme4(key)
        bl = blup.fit(models[key.split("_")[0]], G=G, sigma2=sigma2)
        assert np.abs(bl.ranef - np.array(r["ranef"])).max() < 1e-9
        assert np.abs(bl.condsd - np.array(r["condsd"])).max() < 1e-9
        assert np.abs(bl.coef - np.array(r["coef"])).max() < 1e-9


@pytest.mark.parametrize("name", ["M1", "M3", "M4"])
def test_reproduces_em_at_its_reml_estimates(models, name):
    model = models[name]
    em = tl.em.fit(model, reml=True)
    bl = blup.fit(model, G=em.G, sigma2=em.sigma2)
    assert isinstance(bl, tl.MixedModelResult)
    assert bl.method == "BLUP (given G, sigma2)"
    np.testing.assert_allclose(bl.ranef, em.ranef, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bl.coef, em.coef, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bl.condsd, em.condsd, rtol=0, atol=1e-12)
    np.testing.assert_allclose(list(bl.fixef_se.values()), list(em.fixef_se.values()), rtol=0, atol=1e-12)
    assert bl.loglik == pytest.approx(em.loglik, abs=1e-9)


def test_m4_county_lines_match_the_lecture(models, data):
    """alpha_j = coef[,1] + coef[,3] u_j and beta_j = coef[,2] + coef[,4] u_j, counties 1..8."""
    alpha_lecture = [0.9018, 0.8109, 1.3852, 1.0480, 1.3637, 1.7609, 1.8009, 1.7288]
    beta_lecture = [-0.3578, -0.5335, -0.5990, -0.3500, -0.5633, -0.8541, -0.4352]
    r, G, sigma2 = lme4("M4_REML")
    model = models["M4"]
    bl = blup.fit(model, G=G, sigma2=sigma2)
    u = model.group_values("log_uranium")
    alpha, beta = county_lines(bl, u)
    np.testing.assert_allclose(alpha[:8], alpha_lecture, rtol=0, atol=1e-4)
    np.testing.assert_allclose(beta[:7], beta_lecture, rtol=0, atol=1e-4)
    ref = REF["lecture_alpha_beta_M4"]
    np.testing.assert_allclose(alpha, ref["alpha"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(beta, ref["beta"], rtol=0, atol=1e-8)
    # and at EM's own REML estimates (EM reaches the optimum lme4's search found)
    em = tl.em.fit(model)
    alpha_em, beta_em = county_lines(blup.fit(model, em.G, em.sigma2), u)
    np.testing.assert_allclose(alpha_em[:8], alpha_lecture, rtol=0, atol=1e-4)
    np.testing.assert_allclose(beta_em[:7], beta_lecture, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------
# an independent dense computation: V_j = Z_j G Z_j' + sigma2 I per county
# ----------------------------------------------------------------------------

def dense_blup(model, G, sigma2):
    """Textbook GLS and BLUP with each county's n_j x n_j covariance matrix (a loop: test only)."""
    rows = [np.flatnonzero(model.codes == j) for j in range(model.J)]
    Vinv = [np.linalg.inv(model.Z[i] @ G @ model.Z[i].T + sigma2 * np.eye(i.size)) for i in rows]
    XVX = sum(model.X[i].T @ Vi @ model.X[i] for i, Vi in zip(rows, Vinv))
    XVy = sum(model.X[i].T @ Vi @ model.y[i] for i, Vi in zip(rows, Vinv))
    beta = np.linalg.solve(XVX, XVy)
    b = np.array([G @ model.Z[i].T @ Vi @ (model.y[i] - model.X[i] @ beta) for i, Vi in zip(rows, Vinv)])
    condvar = np.array([G - G @ model.Z[i].T @ Vi @ model.Z[i] @ G for i, Vi in zip(rows, Vinv)])
    return beta, np.linalg.inv(XVX), b, condvar


@pytest.mark.parametrize("name, G, sigma2", [
    ("M3", [[0.3, -0.1], [-0.1, 0.2]], 0.5),
    ("M3", [[0.1, 0.05], [0.05, 0.025]], 0.57),        # singular: correlation +1
    ("M3", [[0.12, 0.0], [0.0, 0.0]], 0.56),           # singular: no slope variance
    ("M1", [[0.1]], 0.57),
    ("M4", [[0.0154763, 0.0156765], [0.0156765, 0.0942798]], 0.561679),
])
def test_matches_a_dense_textbook_computation(models, name, G, sigma2):
    model = models[name]
    G = np.array(G)
    beta, XVX_inv, b, condvar = dense_blup(model, G, sigma2)
    bl = blup.fit(model, G=G, sigma2=sigma2)
    np.testing.assert_allclose(bl.beta, beta, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bl.vcov, XVX_inv, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bl.ranef, b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(bl.condvar, condvar, rtol=0, atol=1e-10)


def test_shrinkage_is_the_textbook_matrix_when_G_is_invertible(models):
    model = models["M3"]
    G, sigma2 = np.array([[0.3, -0.1], [-0.1, 0.2]]), 0.5
    S_textbook = np.linalg.solve(model.stats.ZtZ + sigma2 * np.linalg.inv(G), model.stats.ZtZ)
    bl = blup.fit(model, G=G, sigma2=sigma2)
    assert bl.shrinkage.shape == (model.J, 2, 2)
    np.testing.assert_allclose(bl.shrinkage, S_textbook, rtol=0, atol=1e-12)
    assert bl.lambda_ is None


def test_blup_is_shrinkage_times_the_groups_own_fit(models, data):
    """b_hat_j = S_j b_ols_j, with b_ols_j from lstsq on the county's own rows."""
    model = models["M3"]
    bl = blup.fit(model, G=[[0.3, -0.1], [-0.1, 0.2]], sigma2=0.5)
    r = model.y - model.X @ bl.beta
    checked = 0
    for j in range(model.J):
        i = model.codes == j
        if np.linalg.matrix_rank(model.Z[i]) < 2:
            continue
        b_ols = np.linalg.lstsq(model.Z[i], r[i], rcond=None)[0]
        np.testing.assert_allclose(bl.shrinkage[j] @ b_ols, bl.ranef[j], rtol=0, atol=1e-10)
        checked += 1
    assert checked > 50


# ----------------------------------------------------------------------------
# the random intercept: lambda_j three ways
# ----------------------------------------------------------------------------

def test_lambda_three_ways_for_a_random_intercept(models):
    model = models["M1"]
    r, G, sigma2 = lme4("M1_REML")
    s_a2 = G[0, 0]
    bl = blup.fit(model, G=s_a2, sigma2=sigma2)            # a scalar is accepted for q = 1
    np.testing.assert_array_equal(blup.fit(model, G=[s_a2], sigma2=sigma2).ranef, bl.ranef)
    n_j = np.bincount(model.codes)                         # houses per county, from the raw rows
    textbook = s_a2 / (s_a2 + sigma2 / n_j)
    matrix = np.linalg.solve(n_j[:, None, None] * 1.0 + sigma2 / s_a2, n_j[:, None, None] * 1.0)[:, 0, 0]
    assert bl.lambda_.shape == (85,)
    np.testing.assert_allclose(bl.lambda_, textbook, rtol=0, atol=1e-14)
    np.testing.assert_allclose(bl.shrinkage[:, 0, 0], matrix, rtol=0, atol=1e-14)
    # and it is the factor that turns the mean residual into the BLUP: b_hat_j = lambda_j r_bar_j
    r_bar = np.bincount(model.codes, weights=model.y - model.X @ bl.beta) / n_j
    np.testing.assert_allclose(bl.ranef[:, 0], textbook * r_bar, rtol=0, atol=1e-12)
    # lme4's ranef at the same components, the same thing once more
    np.testing.assert_allclose(textbook * r_bar, np.array(r["ranef"])[:, 0], rtol=0, atol=1e-9)
    # more houses, less shrinkage
    order = np.argsort(n_j)
    assert np.all(np.diff(bl.lambda_[order]) >= 0)


# ----------------------------------------------------------------------------
# the two limits: G -> 0 is complete pooling, G -> infinity is no pooling
# ----------------------------------------------------------------------------

def ols(model):
    return np.linalg.lstsq(model.X, model.y, rcond=None)[0]


@pytest.mark.parametrize("name", ["M1", "M3"])
def test_G_zero_is_complete_pooling(models, name):
    model = models[name]
    q = model.q
    bl = blup.fit(model, G=np.zeros((q, q)), sigma2=0.57)
    np.testing.assert_array_equal(bl.ranef, 0.0)
    np.testing.assert_array_equal(bl.shrinkage, 0.0)
    np.testing.assert_allclose(bl.beta, ols(model), rtol=0, atol=1e-12)
    pool = blup.pooling(model, G=np.zeros((q, q)), sigma2=0.57)
    np.testing.assert_allclose(pool["partial"].estimates, pool["complete"].estimates, rtol=0, atol=1e-12)
    # approaching 0 gives the same answer: the limit is continuous
    gaps = [np.abs(blup.pooling(model, G=c * np.eye(q), sigma2=0.57)["partial"].estimates
                   - pool["complete"].estimates).max() for c in (1e-3, 1e-5, 1e-7)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-5


@pytest.mark.parametrize("name", ["M1", "M3"])
def test_G_infinity_is_no_pooling(models, name):
    model = models[name]
    q = model.q
    gaps, lam = [], []
    for c in (1e2, 1e4, 1e6):
        pool = blup.pooling(model, G=c * np.eye(q), sigma2=0.57)
        none, partial = pool["none"].estimates, pool["partial"].estimates
        ok = ~np.isnan(none).any(axis=1)
        gaps.append(np.abs(partial[ok] - none[ok]).max())
        lam.append(np.abs(pool.result.shrinkage[ok] - np.eye(q)).max())
        # groups without an own fit still get a finite partial-pooling estimate
        assert np.all(np.isfinite(partial))
    assert gaps[0] > 10 * gaps[1] > 100 * gaps[2]
    assert gaps[2] < 1e-4
    assert lam[2] < 1e-5                                   # S_j -> I


# ----------------------------------------------------------------------------
# singular G: allowed, and the BLUP lives where G has variance
# ----------------------------------------------------------------------------

def test_singular_G_keeps_the_blup_in_its_column_space(models):
    model = models["M3"]
    G = np.array([[0.1, 0.05], [0.05, 0.025]])             # rank 1: slope = intercept / 2
    bl = blup.fit(model, G=G, sigma2=0.57)
    np.testing.assert_allclose(bl.ranef[:, 1], bl.ranef[:, 0] / 2, rtol=0, atol=1e-12)
    assert bl.singular
    # continuity: G + eps I tends to the same answer
    near = blup.fit(model, G=G + 1e-9 * np.eye(2), sigma2=0.57)
    np.testing.assert_allclose(near.ranef, bl.ranef, rtol=0, atol=1e-6)


def test_no_slope_variance_is_the_random_intercept_model(models):
    """G = diag(s_a^2, 0) in M3 gives M1's fixed effects and intercepts, and slope BLUPs of 0."""
    s_a2, sigma2 = 0.1, 0.57
    m3 = blup.fit(models["M3"], G=[[s_a2, 0.0], [0.0, 0.0]], sigma2=sigma2)
    m1 = blup.fit(models["M1"], G=[[s_a2]], sigma2=sigma2)
    np.testing.assert_allclose(m3.beta, m1.beta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m3.ranef[:, 0], m1.ranef[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m3.ranef[:, 1], 0.0)
    np.testing.assert_array_equal(m3.condsd[:, 1], 0.0)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("G, sigma2, message", [
    ([[0.1, 0.02], [0.03, 0.1]], 0.5, "symmetric"),
    ([[0.1, 0.2], [0.2, 0.1]], 0.5, "positive semi-definite"),
    ([[-0.1, 0.0], [0.0, 0.1]], 0.5, "cannot be negative"),
    ([[0.1, 0.0], [0.0, 0.1]], -0.5, "positive"),
    ([[0.1, 0.0], [0.0, 0.1]], 0.0, "positive"),
    ([[0.1, 0.0], [0.0, 0.1]], float("nan"), "positive"),
    ([[0.1, 0.0], [0.0, 0.1]], "big", "one positive number"),
    ([[0.1]], 0.5, r"2 x 2 .*\(Intercept\), floor"),
    (0.1, 0.5, "2 x 2"),
    ([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]], 0.5, "2 x 2"),
    ([[0.1, np.nan], [np.nan, 0.1]], 0.5, "infinite"),
    ([[0.1, np.inf], [np.inf, 0.1]], 0.5, "infinite"),
    ([["a", "b"], ["c", "d"]], 0.5, "matrix of numbers"),
])
def test_bad_variance_components_are_refused_clearly(models, G, sigma2, message):
    with pytest.raises(TeachLMMError, match=message):
        blup.fit(models["M3"], G=G, sigma2=sigma2)
    with pytest.raises(ValueError):                        # still a ValueError for generic handlers
        blup.pooling(models["M3"], G=G, sigma2=sigma2)


def test_uncorrelated_model_refuses_a_covariance(models):
    with pytest.raises(TeachLMMError, match="uncorrelated"):
        blup.fit(models["M3u"], G=[[0.1, 0.01], [0.01, 0.1]], sigma2=0.5)
    bl = blup.fit(models["M3u"], G=[[0.1, 0.0], [0.0, 0.1]], sigma2=0.5)
    assert bl.ranef.shape == (85, 2)


def test_rounding_asymmetry_and_tiny_negative_eigenvalues_are_tolerated(models):
    G = np.array([[0.1, 0.05], [0.05, 0.025]])              # singular: eigenvalue ~0 in floating point
    bl = blup.fit(models["M3"], G=G + np.array([[0.0, 1e-13], [0.0, 0.0]]), sigma2=0.57)
    assert np.all(np.isfinite(bl.ranef))
    lists = blup.fit(models["M3"], G=[[0.1, 0.05], [0.05, 0.025]], sigma2=0.57)
    np.testing.assert_allclose(lists.ranef, bl.ranef, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------
# the pooling comparison against plain least squares on the raw rows
# ----------------------------------------------------------------------------

def test_pooling_against_least_squares_on_the_raw_rows(models):
    model = models["M3"]
    r, G, sigma2 = lme4("M3_REML")
    pool = blup.pooling(model, G=G, sigma2=sigma2)
    assert set(pool) == {"complete", "none", "partial"}
    assert pool.names == ["(Intercept)", "floor"]
    for kind in pool.values():
        assert kind.estimates.shape == kind.se.shape == (85, 2)
        assert kind.note.shape == (85,)

    # complete pooling: one regression ignoring counties, the same for everybody
    X, y = model.X, model.y
    c = ols(model)
    s2 = np.sum((y - X @ c) ** 2) / (model.n - 2)
    se = np.sqrt(s2 * np.diag(np.linalg.inv(X.T @ X)))
    np.testing.assert_allclose(pool["complete"].estimates, np.tile(c, (85, 1)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pool["complete"].se, np.tile(se, (85, 1)), rtol=0, atol=1e-12)

    # no pooling: fixef + each county's own fit of the residual, or NaN and a reason
    beta = np.array(list(r["fixef"].values()))
    res = y - X @ beta
    none = pool["none"]
    for j in range(model.J):
        i = model.codes == j
        Zj = model.Z[i]
        if np.linalg.matrix_rank(Zj) < 2:
            assert np.all(np.isnan(none.estimates[j])) and np.all(np.isnan(none.se[j]))
            floor = Zj[:, 1]
            assert none.note[j].startswith(f"county {j + 1}")
            assert ("1 row(s)" in none.note[j]) if i.sum() == 1 else ("'floor' is 0" in none.note[j])
            assert i.sum() == 1 or np.all(floor == 0)
            continue
        assert none.note[j] == ""
        own = np.linalg.lstsq(Zj, res[i], rcond=None)[0]
        np.testing.assert_allclose(none.estimates[j], beta + own, rtol=0, atol=1e-6)
        np.testing.assert_allclose(none.se[j], np.sqrt(sigma2 * np.diag(np.linalg.inv(Zj.T @ Zj))),
                                   rtol=0, atol=1e-12)
    # the radon data have three one-house counties (42, 50, 82) and 22 with no first-floor reading
    flagged = np.flatnonzero(none.note != "")
    assert [int(g) for g in model.groups[flagged] if np.sum(model.codes == g - 1) == 1] == [42, 50, 82]
    assert flagged.size == 25

    # partial pooling is lme4's coef() with its conditional standard deviations
    np.testing.assert_allclose(pool["partial"].estimates, np.array(r["coef"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(pool["partial"].se, np.array(r["condsd"]), rtol=0, atol=1e-5)
    ok = np.isfinite(none.se)
    assert np.all(pool["partial"].se[ok] <= none.se[ok])


def test_no_pooling_intercepts_for_a_random_intercept_model(models):
    """q = 1: the county's own intercept is beta_0 + mean residual, se sqrt(sigma2 / n_j)."""
    model = models["M1"]
    r, G, sigma2 = lme4("M1_REML")
    pool = blup.pooling(model, G=G, sigma2=sigma2)
    beta = np.array(list(r["fixef"].values()))
    n_j = np.bincount(model.codes)
    r_bar = np.bincount(model.codes, weights=model.y - model.X @ beta) / n_j
    np.testing.assert_allclose(pool["none"].estimates[:, 0], beta[0] + r_bar, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pool["none"].se[:, 0], np.sqrt(sigma2 / n_j), rtol=0, atol=1e-12)
    assert np.all(pool["none"].note == "")
    # partial pooling lies between the two, at the fraction lambda_j of the way to the own fit
    lam = G[0, 0] / (G[0, 0] + sigma2 / n_j)
    partial, none = pool["partial"].estimates[:, 0], pool["none"].estimates[:, 0]
    np.testing.assert_allclose(partial - beta[0], lam * (none - beta[0]), rtol=0, atol=1e-6)
    assert pool["none"].coef.shape == (85, 2)
    np.testing.assert_allclose(pool["none"].coef[:, 1], beta[1], rtol=0, atol=1e-6)


def test_random_term_without_a_fixed_part(data):
    """(1 + floor | county) with no fixed floor: complete pooling still regresses on floor."""
    model = tl.Model("log_radon ~ 1 + (1 + floor | county)", data)
    pool = blup.pooling(model, G=[[0.1, 0.0], [0.0, 0.1]], sigma2=0.57)
    W = np.column_stack([np.ones(model.n), data["floor"]])
    c = np.linalg.lstsq(W, model.y, rcond=None)[0]
    np.testing.assert_allclose(pool["complete"].estimates[0], c, rtol=0, atol=1e-12)
    assert pool.coef_names == ["(Intercept)", "floor"]
    # partial pooling of the floor coefficient is the BLUP alone (its fixed part is 0)
    np.testing.assert_allclose(pool["partial"].estimates[:, 1], pool.result.ranef[:, 1], rtol=0, atol=1e-14)


def test_blup_result_reads_like_a_fit(models):
    bl = blup.fit(models["M3"], G=[[0.12, -0.04], [-0.04, 0.12]], sigma2=0.56)
    text = bl.summary()
    assert "BLUP (given G, sigma2)" in text and "Fixed effects" in text
    assert "BLUPResult" in repr(bl)
    assert bl.n_iter == 0 and bl.converged
