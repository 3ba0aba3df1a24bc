"""Satterthwaite df for several grouping factors (teachlmm.multilevel_ddf).

References: lmerTest on the nested and crossed fits of tests/reference/ddf_reference.json
(oats_nested, scotssec_crossed); the one-factor module teachlmm.ddf (per-group algebra) on
one-factor fits; and a dense n x n deviance and Var(beta_hat) differentiated numerically.
"""
import json
import pathlib
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import teachlmm as tl
from teachlmm import ddf, multilevel_ddf as mddf
from teachlmm.errors import TeachLMMError

HERE = pathlib.Path(__file__).resolve().parent
REF = json.loads((HERE / "reference" / "ddf_reference.json").read_text())
DATA = {"oats_nested_REML": "oats", "scotssec_crossed_REML": "scotssec"}


def close(value, ref, rel=1e-4, p=False):
    value, ref = float(value), float(ref)
    return abs(value - ref) <= rel * abs(ref) or (p and abs(value - ref) <= 1e-10)


@pytest.mark.parametrize("key", list(DATA))
def test_matches_lmertest_nested_and_crossed(key):
    r = REF[key]
    fit = tl.multilevel.fit(r["formula"], tl.read_csv(HERE / "reference" / "data" / f"{DATA[key]}.csv"), reml=r["reml"])
    tab = mddf.coef_table(fit)
    for col, values in r["satterthwaite"].items():
        for coef, ref in values.items():
            assert close(tab[col][coef], ref, p=col.startswith("Pr")), (key, col, coef, tab[col][coef], ref)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", ["log_radon ~ floor + (1 | county)", "log_radon ~ floor + (1 + floor | county)"])
def test_one_factor_equals_per_group_algebra(formula, reml):
    """The random-effects-space algebra of this module against teachlmm.ddf's per-group algebra."""
    data = tl.load_radon()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = ddf.satterthwaite(tl.em.fit(tl.Model(formula, data), reml=reml))
        several = mddf.satterthwaite(tl.multilevel.fit(formula, data, reml=reml))
    for k in one:
        assert several[k] == pytest.approx(one[k], rel=1e-4), k


def _crossed_data(seed=3):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, size=60)
    b = rng.integers(0, 4, size=60)
    x = rng.normal(size=60)
    y = (1 + 0.5 * x + rng.normal(scale=0.8, size=6)[a] + rng.normal(scale=0.5, size=4)[b]
         + rng.normal(scale=0.3, size=4)[b] * x + rng.normal(scale=0.7, size=60))
    return {"y": y, "x": x, "a": np.array([f"a{i}" for i in a]), "b": np.array([f"b{i}" for i in b])}


class Dense:
    """REML/ML deviance and Var(beta_hat) as functions of tau = (theta, sigma), with n x n matrices."""

    def __init__(self, fit):
        m = fit.model
        self.X, self.y, self.reml = m.X, m.y, fit.reml
        self.Z = sp.hstack([t.sparse() for t in m.terms]).toarray()
        self.alg = tl.multilevel_mme.Algebra(m)

    def V(self, tau):
        Ts = self.alg.Ts(tau[:-1])
        Lam = sp.block_diag([sp.kron(sp.identity(J), T) for J, T in zip(self.alg.Js, Ts)]).toarray()
        ZL = self.Z @ Lam
        return tau[-1] ** 2 * (ZL @ ZL.T + np.eye(self.y.size))

    def Phi(self, tau):
        return np.linalg.inv(self.X.T @ np.linalg.solve(self.V(tau), self.X))

    def deviance(self, tau):
        V = self.V(tau)
        Vi = np.linalg.inv(V)
        XVX = self.X.T @ Vi @ self.X
        beta = np.linalg.solve(XVX, self.X.T @ Vi @ self.y)
        r = self.y - self.X @ beta
        dev = np.linalg.slogdet(V)[1] + r @ Vi @ r
        return dev + (np.linalg.slogdet(XVX)[1] if self.reml else 0.0)


def _fd_hessian(f, x, h=1e-4):
    k = x.size
    E = np.eye(k) * h
    return np.array([[(f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j]) + f(x - E[i] - E[j]))
                      / (4 * h * h) for j in range(k)] for i in range(k)])


@pytest.mark.parametrize("reml", [True, False])
def test_crossed_random_slope_equals_dense_finite_differences(reml):
    """Crossed factors, one with a random slope: H, dPhi and the df against a dense n x n computation."""
    fit = tl.multilevel.fit("y ~ x + (1 | a) + (1 + x | b)", _crossed_data(), reml=reml)
    dense = Dense(fit)
    tau = np.append(fit.theta, np.sqrt(fit.sigma2))
    s = mddf.Satterthwaite(fit)
    H = _fd_hessian(dense.deviance, tau)
    np.testing.assert_allclose(s.H, H, rtol=1e-4, atol=1e-5 * np.abs(H).max())
    h = 1e-6
    dPhi = np.stack([(dense.Phi(tau + h * e) - dense.Phi(tau - h * e)) / (2 * h) for e in np.eye(tau.size)])
    np.testing.assert_allclose(s.dPhi, dPhi, rtol=1e-5, atol=1e-7 * np.abs(dPhi).max())
    np.testing.assert_allclose(s.Phi, fit.vcov, rtol=1e-8)
    A = 2 * np.linalg.pinv(H)
    Phi = dense.Phi(tau)
    expected = [2 * Phi[k, k] ** 2 / (dPhi[:, k, k] @ A @ dPhi[:, k, k]) for k in range(fit.model.p)]
    np.testing.assert_allclose(list(mddf.satterthwaite(fit).values()), expected, rtol=1e-4)


def test_errors(monkeypatch):
    fit = tl.multilevel.fit("y ~ x + (1 | a) + (1 | b)", _crossed_data())
    with pytest.raises(TeachLMMError, match="not yet available"):
        mddf.coef_table(fit, ddf="Kenward-Roger")
    z = mddf.coef_table(fit, ddf="normal")
    assert set(z) == {"Estimate", "Std. Error", "z value", "Pr(>|z|)"}
    monkeypatch.setattr(mddf, "MAX_RANDOM_EFFECTS", 5)
    with pytest.raises(TeachLMMError, match="random effects"):
        mddf.satterthwaite(fit)
