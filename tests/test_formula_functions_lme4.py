"""Formula functions against lme4: for each function, the fit on a real data set equals lme4's.

The reference (tests/reference/formula_functions_reference.json, made by
tests/reference/formula_functions_reference.R with lme4 1.1-31) holds, for
each formula, REML and ML fits: fixef (names and values), their standard
errors, G, sigma2, logLik and predict(newdata) with and without the random
effects. Stateful transforms (scale's centre and sd, factor levels) must be
reapplied unchanged to the new data, as R's makepredictcall does.
"""
import json
import os

import numpy as np
import pytest

import teachlmm as tl

HERE = os.path.join(os.path.dirname(__file__), "reference")
REF = json.load(open(os.path.join(HERE, "formula_functions_reference.json")))
KEYS = [k for k in REF if k != "meta"]
ROOT = os.path.dirname(os.path.dirname(__file__))
_DATA = {}


def _data(path):
    if path not in _DATA:
        _DATA[path] = tl.read_csv(os.path.join(ROOT, path))
    return _DATA[path]


def _close(a, b, rel=1e-6, abs_=1e-9, what=""):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rel, atol=abs_, err_msg=what)


@pytest.fixture(scope="module")
def fits():
    return {}


def _fit(key, fits):
    if key not in fits:
        ref = REF[key]
        model = tl.Model(ref["formula"], _data(ref["data"]))
        fits[key] = tl.em.fit(model, reml=ref["reml"], tol=1e-12, max_iter=100000)
    return fits[key]


@pytest.mark.parametrize("key", KEYS)
def test_fit_equals_lme4(key, fits):
    ref = REF[key]
    fit = _fit(key, fits)
    loose = 1e-4 if ref["singular"] else 1e-6          # a boundary optimum is flat: lme4 itself stops ~1e-5 away
    assert fit.fixef_names == ref["fixef_names"]
    _close([fit.fixef[n] for n in ref["fixef_names"]], [ref["fixef"][n] for n in ref["fixef_names"]],
           rel=loose, abs_=1e-6 * max(1.0, max(abs(v) for v in ref["fixef"].values())), what="fixef")
    se = np.sqrt(np.diag(fit.vcov))
    _close(se, [ref["fixef_se"][n] for n in ref["fixef_names"]], rel=10 * loose, what="se")
    (group, G), = ref["G"].items()
    assert fit.group_name == group.strip("`") and fit.ranef_names == G["names"]
    Gref = np.array(G["matrix"])
    _close(fit.G, Gref, rel=10 * loose, abs_=10 * loose * max(np.abs(Gref).max(), ref["sigma2"]), what="G")
    _close(fit.sigma2, ref["sigma2"], rel=loose, what="sigma2")
    _close(fit.loglik, ref["loglik"], rel=1e-8, abs_=1e-6, what="loglik")


@pytest.mark.parametrize("key", KEYS)
def test_predict_newdata_equals_lme4(key, fits):
    ref = REF[key]
    fit = _fit(key, fits)
    pred = ref["predict"]
    new = {k: np.array([row[k] for row in pred["newdata"]]) for k in pred["newdata"][0]}
    if "`" in ref["formula"]:
        new = {k.replace("_", " "): v for k, v in new.items()} | new
    loose = 1e-4 if ref["singular"] else 1e-6
    with pytest.warns(UserWarning) if 999 in new.get("Chick", []) or any(
            str(g).startswith("new") for v in new.values() for g in np.atleast_1d(v)) else _nothing():
        with_re = fit.predict(new, re=True)       # the library's own: offset(...) included
    _close(fit.predict(new, re=False), pred["fixed_only"], rel=loose, what="fixed only")
    _close(with_re, pred["with_ranef"], rel=loose, what="with ranef")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
