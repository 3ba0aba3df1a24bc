"""Several random terms: parsing (expandSlash, g1:g2, ||), lme4's term order and names, levels, checks."""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm.formula import parse_formula
from teachlmm.multilevel import MultilevelModel, interaction_levels, lme4_names
from teachlmm.multilevel_mme import Algebra, T_to_theta, theta_to_T


def groups(text):
    return [(r.group, r.group_columns, [t.name for t in r.terms]) for r in parse_formula(text, multiple=True).random]


def test_expand_slash_as_lme4():
    assert groups("y ~ 1 + (1 | batch/cask)") == [("cask:batch", ("cask", "batch"), ["(Intercept)"]),
                                                  ("batch", ("batch",), ["(Intercept)"])]
    assert [g for g, _, _ in groups("y ~ (1 | a/b/c)")] == ["c:(b:a)", "b:a", "a"]        # as R names them
    assert groups("y ~ (x | W:M)") == [("W:M", ("W", "M"), ["(Intercept)", "x"])]


def test_double_bar_splits_into_terms_on_one_factor():
    assert groups("y ~ (1 + x || g) + (1 | h)") == [("g", ("g",), ["(Intercept)"]), ("g", ("g",), ["x"]),
                                                    ("h", ("h",), ["(Intercept)"])]


def test_one_factor_path_still_refuses():
    with pytest.raises(tl.FormulaError, match="second grouping factor"):
        parse_formula("y ~ x + (1|g) + (1|h)")
    with pytest.raises(tl.FormulaError, match="nested grouping"):
        parse_formula("y ~ x + (1|g/h)")
    with pytest.raises(tl.FormulaError, match="appears twice"):
        parse_formula("y ~ x + (1|g) + (1|g)", multiple=True)


def test_make_unique_names():
    assert lme4_names(["g", "h", "g", "g"]) == ["g", "h", "g.1", "g.2"]


def test_interaction_levels_first_factor_slowest_unused_dropped():
    a = tl.coding.as_column(np.array(["b", "a", "a", "b"]), "a")
    b = tl.coding.as_column(np.array([2.0, 1.0, 10.0, 2.0]), "b")
    codes, labels = interaction_levels([a, b])
    assert list(labels) == ["a:1", "a:10", "b:2"]              # numbers numerically, b:1 and b:10 unused
    assert list(codes) == [2, 0, 1, 2]


def _data(rng, J1=12, J2=5, n=200):
    g1 = rng.integers(0, J1, n)
    g2 = rng.integers(0, J2, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=J1)[g1] + rng.normal(size=J2)[g2] + rng.normal(size=n)
    return {"y": y, "x": x, "g1": np.char.add("u", g1.astype(str)), "g2": g2.astype(float)}


def test_terms_in_lme4_order_ties_in_formula_order():
    rng = np.random.default_rng(1)
    d = _data(rng)
    m = MultilevelModel("y ~ x + (1 | g2) + (1 | g1) + (0 + x | g2)", d)
    assert m.names == ["g1", "g2", "g2.1"]
    assert m.factors == ["g1", "g2"]


def test_algebra_against_dense_likelihood():
    """The Schur-complement deviance against the marginal likelihood with V = Z G Z' + sigma2 I (small n)."""
    rng = np.random.default_rng(2)
    d = _data(rng, n=80)
    m = MultilevelModel("y ~ x + (1 + x | g1) + (1 | g2)", d)
    alg = Algebra(m)
    theta = np.array([0.7, -0.2, 0.4, 1.3])
    for reml in (False, True):
        sol = alg.solve(theta, reml)
        s2 = sol["sigma2"]
        Z = np.column_stack([t.sparse().toarray() for t in m.terms])
        G = np.zeros((Z.shape[1],) * 2)
        i = 0
        for t, Gk in zip(m.terms, sol["Gs"]):
            for j in range(t.J):
                G[i + j * t.q:i + (j + 1) * t.q, i + j * t.q:i + (j + 1) * t.q] = Gk
            i += t.J * t.q
        V = Z @ G @ Z.T + s2 * np.eye(m.n)
        Vi = np.linalg.inv(V)
        X, y = m.X, m.y
        XtViX = X.T @ Vi @ X
        beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
        e = y - X @ beta
        ll = -0.5 * (np.linalg.slogdet(V)[1] + e @ Vi @ e + m.n * np.log(2 * np.pi))
        if reml:
            ll += -0.5 * np.linalg.slogdet(XtViX)[1] + 0.5 * m.p * np.log(2 * np.pi)
        assert np.allclose(sol["beta"], beta, rtol=1e-10)
        assert abs(-2 * ll - sol["deviance"]) < 1e-9 * abs(sol["deviance"])
        b = G @ Z.T @ Vi @ e                                        # BLUP
        assert np.allclose(np.concatenate([bk.ravel() for bk in sol["b"]]), b, atol=1e-10)
        if not reml:                                                 # condVar: Var(b | y, beta = beta_hat)
            C = G - G @ Z.T @ Vi @ Z @ G
            got = np.concatenate([np.concatenate([np.diag(B) for B in Vk]) for Vk in sol["condvar"]])
            assert np.allclose(got, np.diag(C), rtol=1e-9)


def test_theta_round_trip():
    T = np.array([[1.0, 0, 0], [2, 3, 0], [4, 5, 6]])
    assert list(T_to_theta(T)) == [1, 2, 4, 3, 5, 6]                 # column by column, as lme4
    assert np.array_equal(theta_to_T(T_to_theta(T), 3), T)


def test_boundary_fit_warns_and_finishes():
    rng = np.random.default_rng(3)
    g1, g2 = np.repeat(np.arange(15), 12), np.tile(np.repeat(np.arange(6), 2), 15)     # balanced, crossed
    y = rng.normal(size=15)[g1] + rng.normal(size=g1.size)
    y -= (np.bincount(g2, y) / np.bincount(g2))[g2] - y.mean()      # no variation between g2's levels at all
    d = {"y": y, "g1": g1.astype(float), "g2": g2.astype(float)}
    with pytest.warns(tl.BoundaryWarning, match="g2"):
        r = tl.multilevel.fit("y ~ 1 + (1 | g1) + (1 | g2)", d)
    assert r.Gs["g2"][0, 0] == 0.0 and r.singular
    assert np.all(r.ranefs["g2"] == 0)


def test_clear_errors():
    rng = np.random.default_rng(4)
    d = _data(rng)
    with pytest.raises(tl.DataError, match="no column"):
        MultilevelModel("y ~ x + (1 | g1) + (1 | nope)", d)
    d1 = dict(d, g3=np.zeros(200))
    with pytest.raises(tl.DesignError, match="only one level"):
        MultilevelModel("y ~ x + (1 | g1) + (1 | g3)", d1)
    with pytest.raises(tl.DesignError, match="no random term"):
        MultilevelModel("y ~ x", d)


def test_missing_rows_are_dropped_for_every_factor():
    rng = np.random.default_rng(5)
    d = _data(rng)
    d["g2"] = d["g2"].copy()
    d["g2"][:3] = np.nan
    with pytest.warns(tl.errors.MissingValuesWarning):
        m = MultilevelModel("y ~ x + (1 | g1) + (1 | g2)", d)
    assert m.n == 197 and all(t.codes.size == 197 for t in m.terms)


def test_two_huge_crossed_factors_are_refused_clearly(monkeypatch):
    from teachlmm import multilevel_mme
    monkeypatch.setattr(multilevel_mme, "MAX_SCHUR_BYTES", 100.0)
    rng = np.random.default_rng(6)
    m = MultilevelModel("y ~ x + (1 | g1) + (1 | g2)", _data(rng))
    with pytest.raises(tl.DesignError, match="Schur complement"):
        Algebra(m)
