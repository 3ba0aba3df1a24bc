"""Nested BLUP shrinkage in closed form (teachlmm.multilevel_blup) against three other roads.

1. lme4's own ranef and condVar at lme4's variance components
   (tests/reference/multi_factor_reference.json: Pastes, Oats, Pixel, Chem97);
2. the joint mixed-model equations of tl.multilevel.fit (its Algebra.solve) at
   the same G's, including typed-in G's with random slopes;
3. Henderson's equations built densely and solved in one piece, and the textbook
   b = G Z'V^-1 (y - X beta) with V n x n, on a small example;

plus the scalar formulas of the docstring written out with loops, the limits
G_class -> 0 and G_school -> 0 (one-factor BLUPs of tl.blup), and the errors.
"""
import json
import pathlib
import warnings

import numpy as np
import pytest
import scipy.linalg

import teachlmm as tl
from teachlmm import blup, multilevel_em
from teachlmm.errors import BoundaryWarning, DesignError
from teachlmm.multilevel import MultilevelModel
from teachlmm.multilevel_blup import nested
from teachlmm.multilevel_data import SCHOOLS_TRUTH, simulate_crossed, simulate_schools
from teachlmm.multilevel_mme import Algebra, T_to_theta

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests/reference/multi_factor_reference.json").read_text())
NESTED_KEYS = [k for k in REF if k != "meta" and "_nested_" in k and "interaction" not in k]


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300)


@pytest.mark.parametrize("key", NESTED_KEYS)
def test_matches_lme4_ranef_and_condsd_at_lme4s_variance_components(key):
    e = REF[key]
    model = MultilevelModel(e["formula"], tl.read_csv(str(ROOT / e["data"])))
    Gs = {name: np.array(v["matrix"]) for name, v in e["G"].items()}
    nb = nested(model, Gs, e["sigma2"])
    for factor, ranef, condsd in [(nb.outer, nb.ranef_outer, nb.condsd_outer),
                                  (nb.inner, nb.ranef_inner, nb.condsd_inner)]:
        ref = e["ranef"][factor]
        assert list(ref["levels"]) == [str(v) for v in (nb.groups_outer if factor == nb.outer else nb.groups_inner)]
        assert _rel(ranef, ref["ranef"]) < 1e-9
        assert _rel(condsd, ref["condsd"]) < 1e-9
    assert _rel(nb.beta, list(e["fixef"].values())) < 1e-9


def _theta(model, Gs, sigma2):
    """lme4's theta for given G_k and sigma2: the Cholesky factors of G_k / sigma2."""
    return np.concatenate([T_to_theta(np.linalg.cholesky(np.asarray(Gs[t.name]) / sigma2)) for t in model.terms])


CASES = [
    ("score ~ 1 + prior + (1 | school/class)", {"class:school": [[4.0]], "school": [[9.0]]}, 36.0),
    ("score ~ 1 + prior + (1 | school/class)", {"class:school": [[0.3]], "school": [[40.0]]}, 10.0),
    ("score ~ 1 + prior + (1 + prior | school/class)",
     {"class:school": [[4.0, 0.5], [0.5, 1.0]], "school": [[9.0, -1.0], [-1.0, 2.0]]}, 36.0),
    ("score ~ 1 + prior + (1 + prior | school) + (1 | class:school)",
     {"class:school": [[4.0]], "school": [[9.0, -1.0], [-1.0, 2.0]]}, 36.0),
]


@pytest.mark.parametrize("formula, Gs, sigma2", CASES)
@pytest.mark.parametrize("seed", [3, 4])
def test_equals_the_joint_mixed_model_equations_at_the_same_Gs(formula, Gs, sigma2, seed):
    data, _ = simulate_schools(n_schools=12, seed=seed)
    model = MultilevelModel(formula, data)
    sol = Algebra(model).solve(_theta(model, Gs, sigma2), reml=False)
    nb = nested(model, Gs, sigma2)
    # Algebra.solve profiles sigma2 out; b and beta depend on the G_k / sigma2 (theta) only
    assert _rel(nb.ranef_inner, sol["b"][0]) < 1e-10
    assert _rel(nb.ranef_outer, sol["b"][1]) < 1e-10
    assert _rel(nb.beta, sol["beta"]) < 1e-10
    # condVar scales with sigma2: Algebra's is at its profiled sigma2
    scale = sigma2 / sol["sigma2"]
    assert _rel(nb.condvar_inner, scale * sol["condvar"][0]) < 1e-10
    assert _rel(nb.condvar_outer, scale * sol["condvar"][1]) < 1e-10


def test_equals_the_fit_at_its_own_estimates():
    data, truth = simulate_schools(seed=1)
    fit = tl.multilevel.fit(truth["formula"], data)
    nb = nested(fit)
    assert _rel(nb.ranef_outer, fit.ranefs["school"]) < 1e-10
    assert _rel(nb.ranef_inner, fit.ranefs["class:school"]) < 1e-10
    assert _rel(nb.condsd_outer, fit.condsds["school"]) < 1e-10
    assert _rel(nb.condsd_inner, fit.condsds["class:school"]) < 1e-10
    assert list(nb.groups_inner) == list(fit.groups_by["class:school"])


def _dense(model, Gs, sigma2):
    """Z, the block-diagonal G of all effects, for a small model (dense: a check, never a fit)."""
    Zs, blocks = [], []
    for t in model.terms:
        Zs.append(t.sparse().toarray())
        blocks += [np.asarray(Gs[t.name], float)] * t.J
    return np.hstack(Zs), scipy.linalg.block_diag(*blocks)


@pytest.mark.parametrize("formula, Gs, sigma2", CASES[::2])
def test_equals_a_dense_solve_on_a_small_example(formula, Gs, sigma2):
    data, _ = simulate_schools(n_schools=5, classes=(1, 3), pupils=(1, 4), seed=8)
    model = MultilevelModel(formula, data)
    X, y = model.X, model.y
    Z, G = _dense(model, Gs, sigma2)
    # Henderson's mixed-model equations in one piece
    lhs = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + sigma2 * np.linalg.inv(G)]])
    x = np.linalg.solve(lhs, np.concatenate([X.T @ y, Z.T @ y]))
    beta, b = x[:model.p], x[model.p:]
    # the textbook route, V = Z G Z' + sigma2 I (n x n)
    V = Z @ G @ Z.T + sigma2 * np.eye(model.n)
    Vi = np.linalg.inv(V)
    beta_gls = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    b_textbook = G @ Z.T @ Vi @ (y - X @ beta_gls)
    condvar = np.linalg.inv(Z.T @ Z / sigma2 + np.linalg.inv(G))      # Var(b | y, beta)
    nb = nested(model, Gs, sigma2)
    inner, outer = model.terms
    split = inner.J * inner.q
    mine = np.concatenate([nb.ranef_inner.ravel(), nb.ranef_outer.ravel()])
    assert _rel(nb.beta, beta) < 1e-10 and _rel(nb.beta, beta_gls) < 1e-10
    assert _rel(mine, b) < 1e-10 and _rel(mine, b_textbook) < 1e-10
    diag_in = np.stack([condvar[j * inner.q:(j + 1) * inner.q, j * inner.q:(j + 1) * inner.q] for j in range(inner.J)])
    diag_out = np.stack([condvar[split + i * outer.q:split + (i + 1) * outer.q, split + i * outer.q:split + (i + 1) * outer.q]
                         for i in range(outer.J)])
    assert _rel(nb.condvar_inner, diag_in) < 1e-10
    assert _rel(nb.condvar_outer, diag_out) < 1e-10


def test_scalar_formulas_of_the_docstring():
    """lambda_ij, w_ij, Lambda_i, a_own_i, a_hat_i and c_hat_ij written out class by class."""
    data, truth = simulate_schools(n_schools=8, seed=6)
    model = MultilevelModel(truth["formula"], data)
    t2c, t2s, s2 = 3.0, 7.0, 30.0
    nb = nested(model, {"class:school": [[t2c]], "school": [[t2s]]}, s2)
    inner, outer = model.terms
    r = model.y - model.X @ nb.beta
    for i in range(outer.J):
        classes = np.unique(inner.codes[outer.codes == i])
        rbar = np.array([r[inner.codes == j].mean() for j in classes])
        n = np.array([np.sum(inner.codes == j) for j in classes])
        lam = t2c / (t2c + s2 / n)
        w = 1 / (t2c + s2 / n)
        Lam = t2s / (t2s + 1 / w.sum())
        a_own = np.sum(w * rbar) / w.sum()
        a_hat = Lam * a_own
        assert np.isclose(nb.shrink_outer[i, 0, 0], Lam, rtol=1e-12)
        assert np.isclose(nb.own_outer[i, 0], a_own, rtol=1e-10)
        assert np.isclose(nb.ranef_outer[i, 0], a_hat, rtol=1e-10)
        assert np.isclose(nb.condvar_outer[i, 0, 0], Lam / w.sum(), rtol=1e-12)
        assert np.allclose(nb.shrink_inner[classes, 0, 0], lam, rtol=1e-12)
        assert np.allclose(nb.own_inner[classes, 0], rbar, rtol=1e-10)
        assert np.allclose(nb.ranef_inner[classes, 0], lam * (rbar - a_hat), rtol=1e-10, atol=1e-12)
        assert np.allclose(nb.condvar_inner[classes, 0, 0], lam * s2 / n + lam ** 2 * Lam / w.sum(), rtol=1e-12)


def _one_factor(data, group, formula_fixed="score ~ 1 + prior"):
    return tl.Model(f"{formula_fixed} + (1 | {group})", data)


def test_limits_are_the_one_factor_blups():
    data, truth = simulate_schools(n_schools=10, seed=2)
    data["cid"] = data["school"] * 100 + data["class"]          # classes numbered across schools
    model = MultilevelModel(truth["formula"], data)
    # no class variation: the school effects are the one-factor BLUPs of (1 | school)
    nb = nested(model, {"class:school": [[0.0]], "school": [[9.0]]}, 36.0)
    one = blup.fit(_one_factor(data, "school"), 9.0, 36.0)
    assert np.allclose(nb.ranef_inner, 0, atol=1e-14)
    assert _rel(nb.ranef_outer, one.ranef) < 1e-10 and _rel(nb.beta, one.beta) < 1e-10
    # no school variation: the class effects are the one-factor BLUPs of (1 | class), numbered across schools
    nb = nested(model, {"class:school": [[4.0]], "school": [[0.0]]}, 36.0)
    m1 = _one_factor(data, "cid")
    one = blup.fit(m1, 4.0, 36.0)
    # inner levels are "class:school" labels "c:s"; cid = 100 s + c
    cid = np.array([100 * float(lab.split(":")[1]) + float(lab.split(":")[0]) for lab in nb.groups_inner])
    j = np.array([list(np.asarray(m1.groups, float)).index(c) for c in cid])
    assert np.allclose(nb.ranef_outer, 0, atol=1e-14)
    assert _rel(nb.ranef_inner, one.ranef[j]) < 1e-10


def test_huge_school_variance_keeps_the_schools_own_estimate():
    data, truth = simulate_schools(n_schools=6, seed=9)
    nb = nested(MultilevelModel(truth["formula"], data), {"class:school": [[4.0]], "school": [[1e9]]}, 36.0)
    assert np.allclose(nb.shrink_outer, 1, atol=1e-6)
    assert _rel(nb.ranef_outer, nb.own_outer) < 1e-6


def test_shrinkage_factors_lie_between_0_and_1_and_grow_with_class_size():
    data, truth = simulate_schools(seed=12)
    model = MultilevelModel(truth["formula"], data)
    nb = nested(model, {"class:school": [[4.0]], "school": [[9.0]]}, 36.0)
    lam = nb.shrink_inner[:, 0, 0]
    sizes = np.bincount(model.terms[0].codes)
    assert np.all((lam > 0) & (lam < 1)) and np.all((nb.shrink_outer > 0) & (nb.shrink_outer < 1))
    assert np.all(np.diff(lam[np.argsort(sizes, kind="stable")]) >= -1e-15)


def test_simulators_recover_their_truth():
    """Estimates against the drawn effects' own sample variances (tighter than the population values)."""
    data, truth = simulate_schools(n_schools=150, seed=21)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BoundaryWarning)
        fit = tl.multilevel.fit(truth["formula"], data)
    assert abs(fit.Gs["school"][0, 0] / np.var(truth["a"], ddof=1) - 1) < 0.25
    assert abs(fit.Gs["class:school"][0, 0] / np.var(truth["c"], ddof=1) - 1) < 0.25
    assert abs(fit.sigma2 / SCHOOLS_TRUTH["sigma2"] - 1) < 0.05
    assert abs(fit.fixef["prior"] - SCHOOLS_TRUTH["beta"][1]) < 4 * fit.fixef_se["prior"]
    assert np.corrcoef(fit.ranefs["school"][:, 0], truth["a"])[0, 1] > 0.8
    d2, t2 = simulate_crossed(n_subjects=60, n_items=40, seed=21)
    f2 = tl.multilevel.fit(t2["formula"], d2)
    assert abs(f2.Gs["subject"][0, 0] / np.var(t2["s"], ddof=1) - 1) < 0.25
    assert abs(f2.Gs["item"][0, 0] / np.var(t2["t"], ddof=1) - 1) < 0.25
    assert abs(f2.sigma2 / t2["sigma2"] - 1) < 0.1
    assert np.corrcoef(f2.ranefs["subject"][:, 0], t2["s"])[0, 1] > 0.9
    assert np.corrcoef(f2.ranefs["item"][:, 0], t2["t"])[0, 1] > 0.9
    a, b = simulate_schools(seed=5)[0], simulate_schools(seed=5)[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_errors_say_what_to_do():
    data, truth = simulate_schools(n_schools=6, seed=1)
    model = MultilevelModel(truth["formula"], data)
    good = {"class:school": [[4.0]], "school": [[9.0]]}
    with pytest.raises(DesignError, match="crossed"):
        d2, t2 = simulate_crossed(n_subjects=6, n_items=5, seed=1)
        nested(MultilevelModel(t2["formula"], d2), {"subject": [[1.0]], "item": [[1.0]]}, 1.0)
    with pytest.raises(DesignError, match="exactly two"):
        nested(MultilevelModel("score ~ 1 + (1 | school)", data), {"school": [[1.0]]}, 1.0)
    with pytest.raises(DesignError, match="positive semi-definite"):
        nested(model, {"class:school": [[-1.0]], "school": [[9.0]]}, 36.0)
    with pytest.raises(DesignError, match="sigma2"):
        nested(model, good, 0.0)
    with pytest.raises(DesignError, match="VarCorr names"):
        nested(model, {"class": [[4.0]], "school": [[9.0]]}, 36.0)
    with pytest.raises(DesignError, match="give both"):
        nested(model)
    with pytest.raises(DesignError, match="MultilevelModel"):
        nested(tl.Model("score ~ 1 + (1 | school)", data), good, 36.0)


# ----------------------------------------------------------------------------
# the exercises of the chapter (teachlmm.exercises, appended section: 14-16)
# ----------------------------------------------------------------------------

def test_nested_reml_by_explicit_inverses_is_lme4s_on_pastes():
    from teachlmm.exercises import nested_intercepts_reml
    e = REF["pastes_nested_REML"]
    d = tl.read_csv(str(ROOT / e["data"]))
    f = nested_intercepts_reml(d["strength"], np.ones((len(d["strength"]), 1)), d["batch"], d["cask"])
    # Nelder-Mead on the criterion alone: flat to ~1e-10 over ~1e-5 of tau2_school (the check needs 1e-3)
    assert f["tau2_school"] == pytest.approx(e["G"]["batch"]["matrix"][0][0], rel=5e-5)
    assert f["tau2_class"] == pytest.approx(e["G"]["cask:batch"]["matrix"][0][0], rel=5e-5)
    assert f["sigma2"] == pytest.approx(e["sigma2"], rel=5e-5)


def test_nested_reml_by_explicit_inverses_is_multilevel_fits():
    from teachlmm.exercises import _schools, _schools_fit
    fit = tl.multilevel.fit("score ~ 1 + prior + (1 | school/class)", _schools())
    f = _schools_fit()
    assert f["tau2_school"] == pytest.approx(fit.Gs["school"][0, 0], rel=5e-5)
    assert f["tau2_class"] == pytest.approx(fit.Gs["class:school"][0, 0], rel=5e-5)
    assert f["sigma2"] == pytest.approx(fit.sigma2, rel=1e-7)


def test_dense_crossed_em_step_is_multilevel_ems_m_step():
    from teachlmm.exercises import _crossed, crossed_em_step_dense
    d = _crossed()
    model = MultilevelModel("rt ~ 1 + (1 | subject) + (1 | item)", d)
    s = multilevel_em.init(model, reml=False, theta=np.sqrt([3000.0 / 5000.0, 3000.0 / 5000.0]))
    # the state's Var(b | y) is at its own profiled sigma2; the exercise's is at sigma2 = 5000
    mine = [np.mean(b[:, 0] ** 2 + V[:, 0, 0] * 5000.0 / s.sigma2) for b, V in zip(s.b, s.postvar)]
    dense = crossed_em_step_dense(d["rt"], d["subject"], d["item"], 3000.0, 3000.0, 5000.0)
    order = [model.names.index("subject"), model.names.index("item")]
    assert np.allclose([mine[k] for k in order], dense, rtol=1e-9)


def _said(check, *args, **kwargs):
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ok = check(*args, **kwargs)
    return ok, out.getvalue()


def test_exercise_checks_accept_the_answer_and_never_print_it_when_wrong():
    from teachlmm import exercises as ex
    fit = tl.multilevel.fit("score ~ 1 + prior + (1 | school/class)", ex._schools())
    nb = nested(fit)
    j = list(nb.groups_inner).index("2:1")
    cd = ex._crossed()
    right = [(ex.check_class_shrinkage, nb.shrink_inner[j, 0, 0], dict(school=1, klass=2)),
             (ex.check_school_shrinkage, nb.shrink_outer[0, 0, 0], dict(school=1)),
             (ex.check_crossed_em_step, ex.crossed_em_step_dense(cd["rt"], cd["subject"], cd["item"],
                                                                  3000.0, 3000.0, 5000.0)[0], dict(factor="subject"))]
    ex.reset()
    for check, value, kw in right:
        assert _said(check, value, **kw)[0] is True
        texts = [_said(check, value * 0.9, **kw) for _ in range(2)]
        assert all(ok is False for ok, _ in texts)
        assert "Hint:" in texts[0][1] and "Stronger hint:" in texts[1][1]
        for _, text in texts:
            for digits in (2, 3, 4):
                assert f"{value:.{digits}f}" not in text, (check.__name__, text)


def test_exercise_checks_refuse_bad_input():
    from teachlmm import exercises as ex
    with pytest.raises(tl.TeachLMMError, match="schools are numbered"):
        ex.check_class_shrinkage(0.5, school=99)
    with pytest.raises(tl.TeachLMMError, match="has classes"):
        ex.check_class_shrinkage(0.5, school=1, klass=40)
    with pytest.raises(ex.AnswerError):
        ex.check_school_shrinkage("0.9")
    with pytest.raises(tl.TeachLMMError, match="'subject' or 'item'"):
        ex.check_crossed_em_step(3000.0, factor="subjects")
