"""EM with one G_k per factor: it never raises the deviance, its fixed point is lme4's optimum."""
import json
import pathlib

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import multilevel_em as em
from teachlmm.multilevel import MultilevelModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests/reference/multi_factor_reference.json").read_text())


def _model(key):
    e = REF[key]
    return MultilevelModel(e["formula"], tl.read_csv(str(ROOT / e["data"]))), e


@pytest.mark.parametrize("key", ["pastes_nested_REML", "penicillin_crossed_ML", "pixel_nested_REML",
                                 "orthodont_two_terms_ML", "machines_nested_interaction_REML"])
def test_em_steps_never_raise_the_deviance(key):
    m, e = _model(key)
    devs = np.array([s.deviance for s in em.steps(m, e["reml"], max_iter=25)])
    assert np.all(np.diff(devs) <= 1e-10 * abs(devs[0]))
    assert devs[-1] < devs[0]


@pytest.mark.parametrize("key", ["pastes_nested_ML", "scotssec_crossed_REML", "pixel_nested_ML"])
def test_lme4_optimum_is_a_fixed_point(key):
    """One EM step from lme4's theta moves G by < 1e-5 relative (it would move far from anywhere else)."""
    m, e = _model(key)
    s = em.init(m, e["reml"], theta=e["theta"])
    s1 = em.step(s)
    for G0, G1 in zip(s.Gs, s1.Gs):
        assert np.max(np.abs(G1 - G0)) < 1e-5 * np.max(np.abs(G0))
    far = em.step(em.init(m, e["reml"], theta=np.array(e["theta"]) * 1.5))
    assert max(np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(far.Gs, s.Gs)) > 1e-3


@pytest.mark.parametrize("key", ["pastes_nested_REML", "penicillin_crossed_ML", "orthodont_two_terms_REML"])
def test_em_fit_matches_lme4(key):
    m, e = _model(key)
    r = em.fit(m, e["reml"])
    for name, g in e["G"].items():
        ref = np.array(g["matrix"])
        assert np.max(np.abs(r.Gs[name] - ref)) < 1e-6 * np.max(np.abs(ref))
    assert abs(r.sigma2 / e["sigma2"] - 1) < 1e-6
    assert abs(r.loglik / e["loglik"] - 1) < 1e-8
