"""The benchmark suite of real data sets (issue 12) against lme4's best optimum.

``tests/reference/suite_reference.json`` holds, for every data set of the suite
(R packages nlme, datasets, mlmRev, lme4; exported to ``tests/reference/data``)
fitted by REML and by ML, the best optimum lme4 reached over several optimizers
and starts (``tests/reference/suite_reference.R``; CI needs no R). Every default
``em.fit`` must land on it: G, sigma2, fixed effects and logLik within 1e-6
relative (entries of G near zero: within 1e-6 absolute on the scale of sigma2),
converged, with lme4's singular-fit verdict and a gradient below 1e-6.

On 3 of the 34 fits (boundary fits of IGF and the q = 3 ChickWeight model) lme4's
best point is not stationary on its face (the gradient of lme4's own objective is
1e-3 to 1e-2 there; ours is below 1e-8) and our log-likelihood is higher by up to
1e-9: there the fit is compared at 1e-6 with lme4's point after exact Newton steps
on that face, and at 1e-3 with the point itself. The second test names those fits.
"""
import json
import os
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import em, mme, newton

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "reference", "suite_reference.json")


def _entries():
    if not os.path.exists(REFERENCE):
        return []
    ref = json.load(open(REFERENCE))
    return [(k, e) for k, e in ref.items() if isinstance(e, dict) and "formula" in e and "reml" in e]


ENTRIES = _entries()
pytestmark = pytest.mark.skipif(not ENTRIES, reason=f"{REFERENCE} not present (tests/reference/suite_reference.R)")
_DATA = {}


def _data(path):
    if path not in _DATA:
        _DATA[path] = tl.data.read_csv(os.path.join(ROOT, path))
    return _DATA[path]


def _close(a, b, rel, floor):
    """|a - b| <= rel * max(|b|, floor), elementwise."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) <= rel * np.maximum(np.abs(b), floor)


def _matches(fit, G, sigma2, beta, ref, rel):
    """G within ``rel`` relative (or rel * sigma2 absolute near 0), sigma2 relative, fixef relative
    (or rel * 1e-3 se absolute near 0)."""
    names = list(ref["fixef"])
    se = np.array([ref["fixef_se"][n] for n in names])
    return (fit.G.shape == G.shape and len(names) == len(fit.beta)
            and bool(np.all(_close(fit.G, G, rel, sigma2)))
            and abs(fit.sigma2 - sigma2) <= rel * sigma2
            and bool(np.all(_close(fit.beta, beta, rel, 1e-3 * se))))


def _lme4_point(ref):
    G = np.asarray(next(iter(ref["G"].values()))["matrix"], float)
    return G, float(ref["sigma2"]), np.array([ref["fixef"][n] for n in ref["fixef"]])


def _polished(model, ref):
    """lme4's best point after exact Newton steps on its own face (the zero columns of its
    relative factor held at 0), and the Newton decrement at lme4's point (deviance units)."""
    G, s2, _ = _lme4_point(ref)
    zero = tuple(np.flatnonzero(np.diag(mme.relative_factor(G, s2)) == 0))
    first = newton.minimise(model, G, s2, bool(ref["reml"]), max_iter=0, fixed_columns=zero)
    out = newton.minimise(model, G, s2, bool(ref["reml"]), tol=1e-14, max_iter=20, fixed_columns=zero)
    return tl.MixedModelResult(model, out.G, out.sigma2, reml=bool(ref["reml"])), first.decrement


@pytest.mark.parametrize("key,ref", ENTRIES, ids=[k for k, _ in ENTRIES] or None)
def test_suite_fit_equals_lme4_best(key, ref):
    """Within 1e-6 of lme4's best; where lme4's best is not quite stationary (a few boundary fits,
    see the next test), within 1e-6 of that point after exact Newton steps on its face and within
    1e-3 of the point itself, with a log-likelihood at least as high."""
    model = tl.Model(ref["formula"], _data(ref["data"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = em.fit(model, reml=bool(ref["reml"]))
    assert fit.converged and fit.max_grad < 1e-6
    assert fit.singular == bool(ref["singular"])
    assert fit.loglik >= ref["loglik"] - 1e-9 * abs(ref["loglik"])      # never below lme4's best
    assert fit.loglik == pytest.approx(ref["loglik"], rel=1e-6)
    G, s2, beta = _lme4_point(ref)
    if _matches(fit, G, s2, beta, ref, 1e-6):
        return
    polished, decrement = _polished(model, ref)
    assert decrement > 1e-11                                            # lme4's point: not stationary
    assert fit.loglik > ref["loglik"]
    assert _matches(fit, polished.G, polished.sigma2, polished.beta, ref, 1e-6)
    assert _matches(fit, G, s2, beta, ref, 1e-3)


def test_where_lme4_stopped_short_is_listed():
    """The fits where lme4's best point differs from ours by more than 1e-6 (igf and the q = 3
    chick-weight model: boundary fits where the likelihood is so flat along the face that lme4's
    optimizers stop with a gradient of 1e-3 to 1e-2 and a log-likelihood 1e-11 to 1e-9 lower)."""
    short = []
    for key, ref in ENTRIES:
        model = tl.Model(ref["formula"], _data(ref["data"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = em.fit(model, reml=bool(ref["reml"]))
        if not _matches(fit, *_lme4_point(ref), ref, 1e-6):
            short.append(key)
    assert set(short) <= {"igf_REML", "igf_ML", "chickweight_q3_REML", "chickweight_q3_ML"}, short
