"""Shared fixtures: the radon data, lme4's reference numbers, and the lecture's models."""
import json
import pathlib

import numpy as np
import pytest

from teachlmm.data import RADON_MODELS

import teachlmm as tl

HERE = pathlib.Path(__file__).resolve().parent
M0, M1, M3, M3u, M4 = (RADON_MODELS[k] for k in ("M0", "M1", "M3", "M3u", "M4"))
FORMULAS = {"M0": M0, "M1": M1, "M3": M3, "M3u": M3u, "M4": M4}


@pytest.fixture(scope="session")
def radon():
    return tl.load_radon()


@pytest.fixture(scope="session")
def m3(radon):
    """The lecture's M3 model on radon (not fitted)."""
    return tl.Model(M3, radon)


@pytest.fixture(scope="session")
def lme4():
    """lme4's optimum for each model (tests/reference/lme4_reference.R, committed JSON)."""
    return json.loads((HERE / "reference" / "lme4_radon.json").read_text())


@pytest.fixture(scope="session")
def fits(radon):
    """EM fits of the lecture's models, REML and ML, keyed like the JSON ("M3_REML")."""
    out = {}
    cache = {}

    def get(key):
        if key not in cache:
            name, kind = key.split("_")
            cache[key] = tl.em.fit(tl.Model(FORMULAS[name], radon), reml=(kind == "REML"))
        return cache[key]
    out["get"] = get
    return get


def as_array(x):
    return np.asarray(x, dtype=float)
