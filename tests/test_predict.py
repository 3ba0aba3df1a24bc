"""Tests of ``predict`` on fitted (EM) and closed-form (BLUP) results.

A prediction for a row of county j is X_i beta + Z_i b_j: the county's own
regression line. The references are lme4's ``coef()`` rows and the lecture's
M4 county intercepts and slopes (alpha_j + beta_j x), not the code under test.
"""
import contextlib
import json
import pathlib
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import blup
from teachlmm.errors import DataError
from conftest import M4

REF = json.loads((pathlib.Path(__file__).parent / "reference" / "lme4_radon.json").read_text())
UNSEEN = "not in the fitted data"


@pytest.fixture(scope="module")
def data(radon):
    return radon                      # the session's radon data (conftest.py)




@pytest.fixture(scope="module")
def m4(data):
    return tl.Model(M4, data)


@pytest.fixture(scope="module")
def em3(m3):
    return tl.em.fit(m3)


@pytest.fixture(scope="module")
def bl3(m3):
    r = REF["M3_REML"]
    return blup.fit(m3, G=r["G"], sigma2=r["sigma2"])


@contextlib.contextmanager
def no_warnings():
    """Turn every warning into an error inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------
# the fitted rows
# ----------------------------------------------------------------------------

def test_fitted_rows_are_each_countys_lme4_line(bl3, data):
    coef = np.array(REF["M3_REML"]["coef"])
    j = data["county"].astype(int) - 1
    expected = coef[j, 0] + coef[j, 1] * data["floor"]
    np.testing.assert_allclose(bl3.predict(), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bl3.fitted(), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bl3.residuals(), data["log_radon"] - expected, rtol=0, atol=1e-9)


def test_fitted_rows_without_random_effects(bl3, data):
    fixef = list(REF["M3_REML"]["fixef"].values())
    np.testing.assert_allclose(bl3.predict(re=False), fixef[0] + fixef[1] * data["floor"], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------
# new rows of known counties
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["em", "blup"])
def test_new_rows_of_known_counties(which, em3, bl3):
    fit = em3 if which == "em" else bl3
    new = {"floor": np.array([0.0, 1.0, 0.0, 1.0, 1.0]), "county": np.array([2, 2, 1, 1, 85])}
    coef = np.array(REF["M3_REML"]["coef"])
    rows = new["county"] - 1
    expected = coef[rows, 0] + coef[rows, 1] * new["floor"]
    with no_warnings():
        pred = fit.predict(new)
    np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-5)
    # the lecture's county 2: y_hat = 0.933 - 0.771 x
    np.testing.assert_allclose(pred[:2], [0.933, 0.933 - 0.771], rtol=0, atol=6e-4)
    pred_, unseen = fit.predict(new, return_unseen=True)
    np.testing.assert_array_equal(unseen, False)
    np.testing.assert_array_equal(pred_, pred)


def test_em_and_blup_predict_alike_at_the_same_components(em3, m3):
    bl = blup.fit(m3, G=em3.G, sigma2=em3.sigma2)
    new = {"floor": np.array([0.0, 1.0, 1.0]), "county": np.array([5, 36, 70])}
    np.testing.assert_allclose(bl.predict(new), em3.predict(new), rtol=0, atol=1e-12)
    np.testing.assert_allclose(bl.predict(new, re=False), em3.predict(new, re=False), rtol=0, atol=1e-12)


def test_m4_predictions_are_the_lectures_county_lines(m4, data):
    """For county j at floor x with its own u_j: alpha_j + beta_j x."""
    r = REF["M4_REML"]
    ref = REF["lecture_alpha_beta_M4"]
    fit = blup.fit(m4, G=r["G"], sigma2=r["sigma2"])
    counties = np.arange(1, 9)
    u = np.array(ref["u"])[counties - 1]
    for x in (0.0, 1.0):
        new = {"floor": np.full(8, x), "county": counties, "log_uranium": u}
        expected = np.array(ref["alpha"])[:8] + np.array(ref["beta"])[:8] * x
        np.testing.assert_allclose(fit.predict(new), expected, rtol=0, atol=1e-9)
    em = tl.em.fit(m4)
    new = {"floor": np.zeros(8), "county": counties, "log_uranium": u}
    np.testing.assert_allclose(em.predict(new), [0.9018, 0.8109, 1.3852, 1.0480, 1.3637, 1.7609, 1.8009, 1.7288],
                               rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------
# re=False and groups not in the fitted data
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["em", "blup"])
def test_re_false_is_the_fixed_part_only(which, em3, bl3):
    fit = em3 if which == "em" else bl3
    new = {"floor": np.array([0.0, 1.0, 1.0]), "county": np.array([2, 2, 999])}
    b0, b1 = fit.fixef["(Intercept)"], fit.fixef["floor"]
    with no_warnings():                                     # nothing to warn about: no BLUP is used
        pred, unseen = fit.predict(new, re=False, return_unseen=True)
    np.testing.assert_allclose(pred, [b0, b0 + b1, b0 + b1], rtol=0, atol=1e-14)
    np.testing.assert_array_equal(unseen, [False, False, True])


@pytest.mark.parametrize("which", ["em", "blup"])
def test_unseen_counties_get_the_fixed_part_and_are_flagged(which, em3, bl3):
    fit = em3 if which == "em" else bl3
    new = {"floor": np.array([1.0, 0.0, 1.0, 0.0]), "county": np.array([2, 86, 2, 2.5])}
    with pytest.warns(UserWarning, match=f"2 row\\(s\\) belong to groups {UNSEEN}"):
        pred, unseen = fit.predict(new, return_unseen=True)
    np.testing.assert_array_equal(unseen, [False, True, False, True])   # 2.5 is not county 2
    b0 = fit.fixef["(Intercept)"]
    np.testing.assert_allclose(pred[[1, 3]], [b0, b0], rtol=0, atol=1e-14)
    k = list(fit.groups).index(2)
    np.testing.assert_allclose(pred[[0, 2]], fit.coef[k, 0] + fit.coef[k, 1], rtol=0, atol=1e-14)
    # without return_unseen the predictions are the same, and the warning still comes
    with pytest.warns(UserWarning, match=UNSEEN):
        np.testing.assert_array_equal(fit.predict(new), pred)


def test_unseen_county_in_m4_keeps_its_uranium_term(m4):
    r = REF["M4_REML"]
    fit = blup.fit(m4, G=r["G"], sigma2=r["sigma2"])
    g = fit.fixef
    new = {"floor": np.array([0.0, 1.0]), "county": np.array([100, 100]), "log_uranium": np.array([0.5, 0.5])}
    with pytest.warns(UserWarning, match=UNSEEN):
        pred = fit.predict(new)
    alpha = g["(Intercept)"] + g["log_uranium"] * 0.5                  # the group-level regression
    beta = g["floor"] + g["floor:log_uranium"] * 0.5
    np.testing.assert_allclose(pred, [alpha, alpha + beta], rtol=0, atol=1e-14)


def test_text_group_labels(data):
    model = tl.Model("log_radon ~ floor + (1 | county_name)", data)
    fit = tl.em.fit(model)
    # "LAKE OF THE WOODS" is the longest name (17 characters); a longer unseen name must not match it
    new = {"floor": np.zeros(3), "county_name": np.array(["AITKIN", "ATLANTIS", "LAKE OF THE WOODS NORTH"])}
    with pytest.warns(UserWarning, match=UNSEEN):
        pred, unseen = fit.predict(new, return_unseen=True)
    np.testing.assert_array_equal(unseen, [False, True, True])
    k = list(model.groups).index("AITKIN")
    assert pred[0] == pytest.approx(fit.coef[k, 0])
    assert pred[2] == pytest.approx(fit.fixef["(Intercept)"])


# ----------------------------------------------------------------------------
# bad new data
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["em", "blup"])
def test_missing_column_is_a_clear_error(which, em3, bl3):
    fit = em3 if which == "em" else bl3
    with pytest.raises(DataError, match="no column 'floor'"):
        fit.predict({"county": np.array([1, 2])})
    with pytest.raises(DataError, match="no column 'county'.*Did you mean 'County'"):
        fit.predict({"floor": np.array([0.0]), "County": np.array([1])})
    pred = fit.predict({"floor": np.array([0.0, np.nan]), "county": np.array([1, 2])})   # R: NA for that row
    assert np.isfinite(pred[0]) and np.isnan(pred[1])
    pred = fit.predict({"floor": np.array([0.0, 1.0]), "county": np.array([1, np.nan])})
    assert np.isfinite(pred[0]) and np.isnan(pred[1])


def test_the_response_is_not_needed(em3):
    new = {"floor": np.array([0.0]), "county": np.array([3])}
    assert em3.predict(new).shape == (1,)
