"""The exercise checks: right answers pass, wrong ones fail with a hint, and the checks'
own (independent) computations agree with lme4 and with teachlmm's fitting code."""
import contextlib
import io

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import exercises as ex

from conftest import FORMULAS, as_array


@pytest.fixture(autouse=True)
def fresh_hints():
    """Each test starts at the first rung of the hint ladder."""
    ex.reset()
    yield
    ex.reset()


def run(check, *args, **kwargs):
    """Call a check; return (result, printed text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(*args, **kwargs)
    return result, out.getvalue()


def row(entry, county):
    return entry["groups"].index(str(county))


# ----------------------------------------------------------------------------
# the independent roads against lme4
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["M0", "M1", "M3u", "M3", "M4"])
def test_dense_reml_criterion_is_lme4s(name, radon, lme4):
    ref = lme4[f"{name}_REML"]
    model = tl.Model(FORMULAS[name], radon)
    crit = ex.dense_reml_criterion(model, as_array(ref["G"]), ref["sigma2"])
    assert crit == pytest.approx(ref["REMLcrit"], abs=1e-6)


def test_dense_reml_criterion_at_lme4s_default_point(radon, lme4):
    default = lme4["M4_REML"]["default_fit"]
    model = tl.Model(FORMULAS["M4"], radon)
    assert ex.dense_reml_criterion(model, as_array(default["G"]), default["sigma2"]) == pytest.approx(
        default["REMLcrit"], abs=1e-6)


@pytest.mark.parametrize("name", ["M3", "M4"])
def test_dense_blup_is_lme4s(name, radon, lme4):
    ref = lme4[f"{name}_REML"]
    model = tl.Model(FORMULAS[name], radon)
    beta, b = ex.dense_gls_blup(model, as_array(ref["G"]), ref["sigma2"])
    np.testing.assert_allclose(beta, list(ref["fixef"].values()), atol=1e-8)
    np.testing.assert_allclose(b, as_array(ref["ranef"]), atol=1e-7)


@pytest.mark.parametrize("name", ["M0", "M1"])
def test_random_intercept_reml_is_lme4s(name, radon, lme4):
    ref = lme4[f"{name}_REML"]
    model = tl.Model(FORMULAS[name], radon)
    fit = ex.random_intercept_reml(model.y, model.X, model.codes)
    assert fit["sigma2_alpha"] == pytest.approx(ref["G"][0][0], rel=1e-6)
    assert fit["sigma2"] == pytest.approx(ref["sigma2"], rel=1e-6)
    np.testing.assert_allclose(fit["beta"], list(ref["fixef"].values()), atol=1e-6)


@pytest.mark.parametrize("reml", [True, False])
def test_dense_em_step_has_lme4s_optimum_as_fixed_point(reml, radon, lme4):
    """At the (RE)ML optimum an EM step goes nowhere: a check of the E- and M-step formulas."""
    ref = lme4["M3_REML" if reml else "M3_ML"]
    model = tl.Model(FORMULAS["M3"], radon)
    G_new, s2_new = ex.dense_em_step(model, as_array(ref["G"]), ref["sigma2"], reml=reml)
    np.testing.assert_allclose(G_new, as_array(ref["G"]), atol=2e-6)
    assert s2_new == pytest.approx(ref["sigma2"], abs=2e-6)


def test_dense_em_step_moves_away_from_a_non_optimum(radon):
    model = tl.Model(FORMULAS["M3"], radon)
    G_new, _ = ex.dense_em_step(model, np.diag([0.5, 0.5]), 0.6)
    assert np.abs(G_new - np.diag([0.5, 0.5])).max() > 0.05


@pytest.mark.parametrize("name,reml", [("M1", True), ("M3", True), ("M3", False), ("M3u", True), ("M4", False)])
def test_two_roads_to_one_em_step(name, reml, radon):
    """teachlmm.em.step (mixed-model equations) and dense_em_step (conditional moments) agree."""
    model = tl.Model(FORMULAS[name], radon)
    s1 = tl.em.step(tl.em.init(model, reml=reml))
    G_new, s2_new = ex.dense_em_step(model, s1.G, s1.sigma2, reml=reml)
    s2 = tl.em.step(s1)
    np.testing.assert_allclose(G_new, s2.G, atol=1e-12)
    assert s2_new == pytest.approx(s2.sigma2, abs=1e-12)


def test_split_rhat_is_arviz_split_rhat():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 301))
    x[1] += 0.4
    assert ex.split_rhat(x) == pytest.approx(float(az.rhat(x, method="split")), rel=1e-10)


def test_split_rhat_sees_a_stuck_chain():
    x = np.random.default_rng(0).normal(size=(4, 500))
    assert ex.split_rhat(x) < 1.01
    x[2] += 1.0
    assert ex.split_rhat(x) > 1.05


# ----------------------------------------------------------------------------
# each check: right answers pass, wrong answers fail with a hint
# ----------------------------------------------------------------------------

def test_check_county_mean(radon):
    own = [float(y) for y, c in zip(radon["log_radon"], radon["county"]) if c == 2]
    ok, text = run(ex.check_county_mean, round(sum(own) / len(own), 3), county=2)
    assert ok is True and text.startswith("Correct")
    ok, text = run(ex.check_county_mean, sum(np.exp(own)) / len(own), county=2)
    assert ok is False and "raw scale" in text


def test_check_shrinkage_factor_wants_m0s_own_variance_components(lme4):
    """Exercise 2: lambda_1 from M0's REML variance components (lme4's), not from invented ones."""
    ref = lme4["M0_REML"]
    s2a, s2 = ref["G"][0][0], ref["sigma2"]
    lam = s2a / (s2a + s2 / 4)                                   # county 1 has 4 houses
    assert run(ex.check_shrinkage_factor, lam)[0] is True
    assert run(ex.check_shrinkage_factor, lam, n_j=4, sigma2_alpha=s2a, sigma2=s2)[0] is True
    fit0 = tl.em.fit(tl.Model(ex.M0, tl.load_radon()))          # the learner's own fit passes too
    assert run(ex.check_shrinkage_factor, fit0.G[0, 0] / (fit0.G[0, 0] + fit0.sigma2 / 4), n_j=4,
               sigma2_alpha=fit0.G[0, 0], sigma2=fit0.sigma2)[0] is True
    invented = 0.1 / (0.1 + 0.57 / 4)                           # the formula right, the variances made up
    ok, text = run(ex.check_shrinkage_factor, invented, n_j=4, sigma2_alpha=0.1, sigma2=0.57)
    assert ok is False and "not M0's" in text
    assert run(ex.check_shrinkage_factor, invented)[0] is False
    ok, text = run(ex.check_shrinkage_factor, lam, n_j=5, sigma2_alpha=s2a, sigma2=s2)
    assert ok is False and "number of houses" in text
    ok, text = run(ex.check_shrinkage_factor, 1 - lam)
    assert ok is False and "1 - lambda_j" in text


def test_check_partial_pooling_uses_m0(lme4):
    ref = lme4["M0_REML"]
    assert run(ex.check_partial_pooling, ref["coef"][row(ref, 1)][0], county=1)[0] is True
    ok, text = run(ex.check_partial_pooling, 0.6604, county=1)          # the county's own mean
    assert ok is False and "no pooling" in text


def test_check_icc(lme4):
    g, s2 = lme4["M1_REML"]["G"][0][0], lme4["M1_REML"]["sigma2"]
    assert run(ex.check_icc, g / (g + s2))[0] is True
    ok, text = run(ex.check_icc, g / s2)
    assert ok is False and "denominator" in text


def test_check_icc_on_simulated_data_agrees_with_em():
    formula = "y ~ 1 + x + u + x:u + (1 | group)"
    sim, _ = tl.simulate_data(G=[[0.1, 0.0], [0.0, 0.0]], sigma2=0.56, seed=11)
    est = tl.em.fit(tl.Model(formula, sim)).icc
    assert run(ex.check_icc, est, formula=formula, data=sim, tol=1e-6)[0] is True


def test_check_county2_line(lme4):
    ref = lme4["M3_REML"]
    a, b = ref["coef"][row(ref, 2)]
    assert run(ex.check_county2_line, a, b)[0] is True
    assert run(ex.check_county2_line, 0.933, -0.771)[0] is True             # the lecture's rounding
    ok, text = run(ex.check_county2_line, *ref["fixef"].values())
    assert ok is False and "fixed effects" in text
    ok, text = run(ex.check_county2_line, *ref["ranef"][row(ref, 2)])
    assert ok is False and "ranef" in text


def test_check_composite_variance(lme4):
    G, s2 = as_array(lme4["M3_REML"]["G"]), lme4["M3_REML"]["sigma2"]
    for x in (0, 1):
        z = np.array([1.0, x])
        assert run(ex.check_composite_variance, z @ G @ z + s2, x=x)[0] is True
    ok, text = run(ex.check_composite_variance, G[0, 0] + G[1, 1] + s2, x=1)
    assert ok is False and "covariance" in text


def test_check_alpha_beta(lme4):
    ref = lme4["lecture_alpha_beta_M4"]
    assert run(ex.check_alpha_beta, ref["alpha"], ref["beta"])[0] is True
    coef = as_array(lme4["M4_REML"]["coef"])
    ok, text = run(ex.check_alpha_beta, coef[:, 0], coef[:, 1])
    assert ok is False and "u_j" in text
    with pytest.raises(tl.TeachLMMError, match="shape"):
        ex.check_alpha_beta(ref["alpha"][:10], ref["beta"])


def test_check_reml_criterion(lme4):
    default = lme4["M4_REML"]["default_fit"]
    assert run(ex.check_reml_criterion, default["REMLcrit"], default["G"], default["sigma2"])[0] is True
    opt = lme4["M4_REML"]
    assert run(ex.check_reml_criterion, opt["REMLcrit"], opt["G"], opt["sigma2"])[0] is True
    ok, text = run(ex.check_reml_criterion, opt["loglik"], opt["G"], opt["sigma2"])
    assert ok is False and "-2" in text
    assert run(ex.check_reml_criterion, opt["REMLcrit"], default["G"], default["sigma2"])[0] is False


def test_check_em_step(radon):
    model = tl.Model(FORMULAS["M3"], radon)
    s0 = tl.em.init(model)
    s1 = tl.em.step(s0)
    assert run(ex.check_em_step, s1.G, s1.sigma2, s0.G, s0.sigma2)[0] is True
    assert run(ex.check_em_step, s1.G * 1.01, s1.sigma2, s0.G, s0.sigma2)[0] is False
    G_ml, s2_ml = ex.dense_em_step(model, s0.G, s0.sigma2, reml=False)
    ok, text = run(ex.check_em_step, G_ml, s2_ml, s0.G, s0.sigma2)
    assert ok is False and "ML step" in text


def test_check_em_step_on_simulated_data():
    sim, truth = tl.simulate_data(n_groups=40, seed=5)
    model = tl.Model(truth["formula"], sim)
    s0 = tl.em.init(model, reml=False)
    s1 = tl.em.step(s0)
    assert run(ex.check_em_step, s1.G, s1.sigma2, s0.G, s0.sigma2, formula=truth["formula"], data=sim,
               reml=False)[0] is True


def test_check_split_rhat():
    x = np.random.default_rng(3).normal(size=(4, 200))
    assert run(ex.check_split_rhat, ex.split_rhat(x), x)[0] is True
    assert run(ex.check_split_rhat, 1.5, x)[0] is False


def test_check_blup(radon, lme4):
    ref = lme4["M3_REML"]
    assert run(ex.check_blup, ref["ranef"], ref["G"], ref["sigma2"])[0] is True
    ok, text = run(ex.check_blup, ref["coef"], ref["G"], ref["sigma2"])
    assert ok is False and "coef" in text


def test_check_alpha_rmse():
    sim, truth = tl.simulate_data(seed=21)
    fit = tl.em.fit(tl.Model(truth["formula"], sim))
    alpha = fit.coef[:, 0] + fit.coef[:, 2] * truth["u"]
    rmse = float(np.sqrt(np.mean((alpha - truth["alpha"]) ** 2)))
    assert run(ex.check_alpha_rmse, rmse, seed=21)[0] is True
    assert run(ex.check_alpha_rmse, rmse + 0.01, seed=21)[0] is False


def test_bad_input_says_what_to_do():
    with pytest.raises(tl.TeachLMMError, match="counties are numbered"):
        ex.check_county_mean(1.0, county=0)
    with pytest.raises(tl.TeachLMMError, match="random-intercept"):
        ex.check_icc(0.1, formula=FORMULAS["M3"])
    with pytest.raises(tl.TeachLMMError, match="2 x 2"):
        ex.check_reml_criterion(2000.0, [[0.1]], 0.5)
    with pytest.raises(tl.TeachLMMError, match="counties are numbered"):
        ex.check_shrinkage_factor(0.5, county=86)
    with pytest.raises(tl.TeachLMMError, match="numbered 1..16"):
        ex.solution(17)


def test_every_check_returns_a_bool_and_is_used_in_the_book():
    import pathlib
    book = (pathlib.Path(__file__).resolve().parents[1] / "book" / "exercises.md").read_text()
    checks = [name for name in ex.__all__ if name.startswith("check_")]
    assert len(checks) >= 8
    for name in checks:
        assert f"tl.exercises.{name}(" in book, f"{name} has no exercise in book/exercises.md"


# ----------------------------------------------------------------------------
# hints never give the answer away; solution(n) does, on request
# ----------------------------------------------------------------------------

def _wrong_calls(radon, lme4):
    """(check, args, kwargs, expected) with a wrong answer for every check; expected as the check computes it."""
    m3 = lme4["M3_REML"]
    G3 = as_array(m3["G"])
    default = lme4["M4_REML"]["default_fit"]
    x = np.random.default_rng(3).normal(size=(4, 200))
    model = tl.Model(FORMULAS["M3"], radon)
    s0 = tl.em.init(model)
    G1, s1 = ex.dense_em_step(model, s0.G, s0.sigma2)
    _, b = ex.dense_gls_blup(model, G3, m3["sigma2"])
    own2 = [float(y) for y, c in zip(radon["log_radon"], radon["county"]) if c == 2]
    g1, e1 = lme4["M1_REML"]["G"][0][0], lme4["M1_REML"]["sigma2"]
    m0 = lme4["M0_REML"]
    lam = m0["G"][0][0] / (m0["G"][0][0] + m0["sigma2"] / 4)
    ref4 = lme4["lecture_alpha_beta_M4"]
    return [
        (ex.check_county_mean, (0.5,), {"county": 2}, [np.mean(own2)]),
        (ex.check_shrinkage_factor, (0.9,), {}, [lam]),
        (ex.check_partial_pooling, (0.5,), {"county": 1}, [m0["coef"][row(m0, 1)][0]]),
        (ex.check_icc, (0.5,), {}, [g1 / (g1 + e1)]),
        (ex.check_county2_line, (0.5, 0.5), {}, m3["coef"][row(m3, 2)]),
        (ex.check_composite_variance, (2.0,), {"x": 1}, [np.array([1, 1]) @ G3 @ np.array([1, 1]) + m3["sigma2"]]),
        (ex.check_alpha_beta, (np.zeros(85), np.zeros(85)), {}, list(ref4["alpha"][:4]) + list(ref4["beta"][:4])),
        (ex.check_reml_criterion, (2000.0, default["G"], default["sigma2"]), {}, [default["REMLcrit"]]),
        (ex.check_em_step, (s0.G, s0.sigma2, s0.G, s0.sigma2), {}, list(G1.ravel()) + [s1]),
        (ex.check_split_rhat, (2.0, x), {}, [ex.split_rhat(x)]),
        (ex.check_blup, (np.zeros_like(b), G3, m3["sigma2"]), {}, b.ravel()[:4]),
        (ex.check_alpha_rmse, (0.9,), {"seed": 21}, None),
        *_several_factor_calls(),
    ]


def _several_factor_calls():
    """Wrong answers for exercises 14-16; the expected values by another road (tl.multilevel.fit, its EM step)."""
    from teachlmm.multilevel_data import simulate_crossed, simulate_schools
    schools = simulate_schools(seed=7)
    schools = schools[0] if isinstance(schools, tuple) else schools
    fit = tl.multilevel.fit(ex.NESTED_FORMULA, schools)
    t2c, t2s = fit.Gs["class:school"][0, 0], fit.Gs["school"][0, 0]
    n1 = np.unique(np.asarray(schools["class"])[np.asarray(schools["school"]) == 1], return_counts=True)
    n_12 = n1[1][list(n1[0]).index(2)]
    W = np.sum(1 / (t2c + fit.sigma2 / n1[1]))
    return [
        (ex.check_class_shrinkage, (0.1,), {"school": 1, "klass": 2}, [t2c / (t2c + fit.sigma2 / n_12)]),
        (ex.check_school_shrinkage, (0.1,), {"school": 1}, [t2s / (t2s + 1 / W)]),
        (ex.check_crossed_em_step, (10.0,), {"factor": "subject"}, None),
    ]


def _spellings(value):
    """The ways a number could be printed: 2, 3 and 4 decimals (and 2 for large values like a criterion)."""
    return {f"{value:.{d}f}" for d in (3, 4)} | ({f"{value:.2f}"} if abs(value) > 100 else set())


def test_a_wrong_answer_never_prints_the_expected_value(radon, lme4):
    calls = _wrong_calls(radon, lme4)
    assert {c[0].__name__ for c in calls} == {n for n in ex.__all__ if n.startswith("check_")}
    for check, args, kwargs, expected in calls:
        texts = [run(check, *args, **kwargs) for _ in range(3)]          # first hint, then stronger ones
        assert all(ok is False for ok, _ in texts), check.__name__
        first, second = texts[0][1], texts[1][1]
        assert "Hint:" in first and "Stronger hint:" not in first, check.__name__
        assert "Stronger hint:" in second, check.__name__
        if expected is None and check is ex.check_crossed_em_step:     # its value from solution(16)
            expected = [float(_solution_text(16).split("tau2_subject = ")[1].split()[0])]
        if expected is None:          # the simulated RMSE: take the value from solution(13)
            expected = [float(_solution_text(13).split("=")[-2].split()[0])]
        for text in (first, second):
            for value in expected:
                for shown in _spellings(float(value)):
                    assert shown not in text.replace(f"you said {args[0]}", ""), (check.__name__, shown, text)


def _solution_text(n):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ex.solution(n)
    return out.getvalue()


def test_solution_reveals_the_value_on_request(lme4):
    g1, e1 = lme4["M1_REML"]["G"][0][0], lme4["M1_REML"]["sigma2"]
    assert f"{g1 / (g1 + e1):.4f}" in _solution_text(4)
    m3 = lme4["M3_REML"]
    a, b = m3["coef"][row(m3, 2)]
    assert f"{a:.4f}" in _solution_text(6) and f"{b:.4f}" in _solution_text(6)
    default = lme4["M4_REML"]["default_fit"]
    shown = float(_solution_text(9).split("default point = ")[1].split()[0])
    assert shown == pytest.approx(default["REMLcrit"], abs=1e-3)
    assert "group_values('log_uranium')" in _solution_text(8)
    for n in range(1, 14):
        assert _solution_text(n).startswith(f"Exercise {n}:")


def test_a_correct_answer_after_wrong_ones_resets_the_ladder():
    assert run(ex.check_icc, 0.5)[0] is False
    assert run(ex.check_icc, 0.1587)[0] is True
    assert "Stronger hint" not in run(ex.check_icc, 0.5)[1]          # back to the first hint


@pytest.mark.parametrize("call", [
    lambda: ex.check_icc("0.16"),
    lambda: ex.check_county_mean("0.8", county=2),
    lambda: ex.check_shrinkage_factor(0.4, sigma2_alpha="0.1"),
    lambda: ex.check_county2_line("0.93", -0.77),
    lambda: ex.check_alpha_beta(["a"] * 85, np.zeros(85)),
    lambda: ex.check_reml_criterion("2132.24", [[0.0, 0.0], [0.0, 0.139213]], 0.573513),
    lambda: ex.check_split_rhat(None, np.zeros((4, 10))),
])
def test_a_string_where_a_number_is_expected_gets_a_clear_error(call):
    with pytest.raises(ex.AnswerError, match="number|text") as err:
        call()
    assert isinstance(err.value, tl.TeachLMMError)


def test_several_factor_checks_accept_the_answer_from_another_road():
    """Exercises 14-15: the checks' own REML (school by school) agrees with tl.multilevel.fit."""
    for check, _, kwargs, expected in _several_factor_calls()[:2]:
        assert run(check, expected[0], **kwargs)[0] is True, check.__name__
        assert run(check, expected[0] + 0.01, **kwargs)[0] is False, check.__name__
