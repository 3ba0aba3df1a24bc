"""The default fit (EM, then Newton on the profiled deviance) and the derivatives it uses.

* mme's analytic gradient and Hessian (in Gam = G / sigma2, in lme4's theta, and of the
  unprofiled deviance in (G, sigma2)) against central finite differences of the
  log-likelihood that ``mme.loglik`` computes.
* Decisions free of units: rescaling y and each covariate by 1e-3 .. 1e3 changes the
  iteration count by at most 3, and the estimates are the back-transformed originals.
* Every method tells the truth: a ConvergenceWarning whose numbers are the rule's, and
  ``method="factor"`` leaves a false boundary during the run.
* An independent optimiser (scipy on a dense per-group likelihood) on real data sets.
"""
import os
import re
import warnings

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import em, mme, newton
from teachlmm.errors import ConvergenceWarning

DATA = os.path.join(os.path.dirname(__file__), "reference", "data")
M3 = "log_radon ~ floor + (1 + floor | county)"
M4 = "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)"


def _csv(name):
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (tests/reference/export_data.R writes it)")
    return tl.data.read_csv(path)


def _fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return em.fit(*args, **kw)


# ----------------------------------------------------------------------------
# derivatives against finite differences
# ----------------------------------------------------------------------------

def _profiled(model, G, sigma2, reml):
    """-2 x loglik at Gam = G / sigma2 with sigma2 at its optimum, from mme.loglik (not the code under test)."""
    sol = mme.solve(model.stats, G, sigma2)
    s2 = sol.rVr / (model.n - (model.p if reml else 0))
    return -2 * mme.loglik(model.stats, G / sigma2 * s2, s2, reml)


def _fd_hessian(f, x, h):
    E = np.eye(x.size) * h
    return np.array([[(f(x + a + b) - f(x + a - b) - f(x - a + b) + f(x - a - b)) / (4 * h * h) for b in E]
                     for a in E])


MODELS = [(M3, None), (M4, None), ("log_radon ~ floor + (1 | county)", None),
          ("log_radon ~ floor + (1 + floor || county)", None),
          ("score ~ MachineB + MachineC + (1 + MachineB + MachineC | Worker)", "machines.csv")]


@pytest.mark.parametrize("formula,csv", MODELS)
@pytest.mark.parametrize("reml", [True, False])
def test_theta_derivatives_match_finite_differences(formula, csv, reml, radon):
    model = tl.Model(formula, radon if csv is None else _csv(csv))
    G0, s0 = em.start_values(model)
    sd = np.sqrt(np.diag(G0))
    G = (0.8 * G0 + 0.3 * np.outer(sd, sd)) * model.G_mask              # correlations 0.3 / 1.1
    dev, g, H, theta = mme.theta_derivatives(model.stats, G, s0, reml, model.G_mask)
    rows, cols = mme.theta_index(model.G_mask)
    f = lambda t: _profiled(model, newton.theta_to_G(t, rows, cols, model.q), 1.0, reml)   # noqa: E731
    assert dev == pytest.approx(f(theta), rel=1e-12)
    h = 1e-4 * np.abs(theta).max()
    g_fd = np.array([(f(theta + e) - f(theta - e)) / (2 * h) for e in np.eye(theta.size) * h])
    np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6 * np.abs(g).max())
    np.testing.assert_allclose(H, _fd_hessian(f, theta, h), rtol=1e-4, atol=1e-4 * np.abs(H).max())


@pytest.mark.parametrize("formula", [M3, M4, "log_radon ~ floor + (1 + floor || county)"])
@pytest.mark.parametrize("reml", [True, False])
def test_unprofiled_hessian_in_G_sigma2(formula, reml, radon):
    model = tl.Model(formula, radon)
    G = np.array([[0.12, -0.04], [-0.04, 0.11]]) * model.G_mask
    rows, cols = mme.theta_index(model.G_mask)
    H = mme.hessian_G_sigma2(model.stats, G, 0.56, reml, model.G_mask)

    def f(v):
        Gv = np.zeros((model.q, model.q))
        Gv[rows, cols] = v[:-1]
        Gv[cols, rows] = v[:-1]
        return -2 * mme.loglik(model.stats, Gv, v[-1], reml)
    v = np.r_[G[rows, cols], 0.56]
    np.testing.assert_allclose(H, _fd_hessian(f, v, 1e-4), rtol=1e-4, atol=1e-4 * np.abs(H).max())


# ----------------------------------------------------------------------------
# the default fit
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("reml", [True, False])
def test_newton_reports_checkconv_gradient_and_matches_plain_em(reml, radon):
    model = tl.Model(M4, radon)
    fit = em.fit(model, reml=reml)
    plain = _fit(model, reml=reml, method="plain")
    assert fit.converged and fit.n_iter < 20
    assert fit.loglik >= plain.loglik - 1e-9 * abs(plain.loglik)         # never below plain EM's optimum
    np.testing.assert_allclose(fit.G, plain.G, rtol=1e-5, atol=1e-7)
    assert fit.max_grad < 1e-5                                            # lme4's checkConv tolerance: 2e-3
    dev, g, _, _ = mme.theta_derivatives(model.stats, fit.G, fit.sigma2, reml, model.G_mask)
    assert fit.max_grad == pytest.approx(np.abs(g).max(), rel=1e-6, abs=1e-12)
    assert [r.iteration for r in fit.history] == sorted({r.iteration for r in fit.history})
    lls = [r.loglik for r in fit.history]
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(lls, lls[1:]))     # every recorded step climbs


def test_warm_start_at_the_optimum_takes_no_step(radon):
    model = tl.Model(M3, radon)
    fit = em.fit(model)
    again = em.fit(model, G=fit.G, sigma2=fit.sigma2)
    assert again.n_iter <= 3 and again.converged
    np.testing.assert_allclose(again.G, fit.G, rtol=1e-8)


@pytest.mark.parametrize("reml", [True, False])
def test_boundary_optimum_found_exactly(reml):
    data = _csv("dyestuff2.csv")
    fit = _fit(tl.Model("Yield ~ 1 + (1 | Batch)", data), reml=reml)
    assert fit.converged and fit.singular and fit.G[0, 0] == 0.0
    assert em._boundary_is_optimal(em.e_step(fit.model, fit.G, fit.sigma2, reml))


# ----------------------------------------------------------------------------
# decisions free of units
# ----------------------------------------------------------------------------

UNIT_CASES = [("bodyweight.csv", "weight ~ Time + Diet + (1 + Time | Rat)", ["Time"]),
              ("machines.csv", "score ~ MachineB + MachineC + (1 + MachineB + MachineC | Worker)",
               ["MachineB", "MachineC"]),
              ("chickweight.csv", "weight ~ Time + Time2 + (1 + Time + Time2 | Chick)", ["Time", "Time2"]),
              ("dialyzer.csv", "rate ~ pressure + pressure2 + QB + (1 + pressure | Subject)",
               ["pressure", "pressure2"])]


@pytest.mark.parametrize("csv,formula,covariates", UNIT_CASES)
@pytest.mark.parametrize("reml", [True, False])
def test_rescaling_y_and_covariates_changes_nothing(csv, formula, covariates, reml):
    data = _csv(csv)
    y = formula.split("~")[0].strip()
    base = _fit(tl.Model(formula, data), reml=reml)
    rng = np.random.default_rng(7)
    for trial in range(3):
        c = dict(zip([y] + covariates, 10.0 ** rng.uniform(-3, 3, size=1 + len(covariates))))
        if trial == 0:
            c = {k: 1e3 for k in c}
        scaled = dict(data)
        for k, v in c.items():
            scaled[k] = np.asarray(data[k], float) * v
        fit = _fit(tl.Model(formula, scaled), reml=reml)
        assert abs(fit.n_iter - base.n_iter) <= 3, (c, fit.n_iter, base.n_iter)
        d = np.array([c.get(name, 1.0) for name in base.ranef_names])        # Z' = Z S: b' = c_y S^-1 b
        cy = c[y]
        np.testing.assert_allclose(fit.G, cy ** 2 * base.G / np.outer(d, d), rtol=1e-6,
                                   atol=1e-6 * cy ** 2 * base.sigma2 / np.outer(d, d).max())
        assert fit.sigma2 == pytest.approx(cy ** 2 * base.sigma2, rel=1e-6)
        sx = np.array([c.get(name, 1.0) for name in base.fixef_names])
        expected = cy * base.beta / sx
        assert np.all(np.abs(fit.beta - expected) <= 1e-6 * (np.abs(expected) + cy * np.sqrt(base.sigma2) / sx))


# ----------------------------------------------------------------------------
# every method tells the truth
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["plain", "factor", "squarem"])
def test_convergence_warning_numbers_are_the_rule(method, radon):
    with pytest.warns(ConvergenceWarning) as caught:
        fit = em.fit(tl.Model(M4, radon), method=method, max_iter=12)
    assert not fit.converged
    msg = str([w for w in caught if w.category is ConvergenceWarning][0].message)
    change, rate, dist, tol = map(float, re.search(
        r"it was ([\d.e+-]+) / \(1 - ([\d.e+-]+)\) = ([\d.e+-]+) > tol = ([\d.e+-]+)", msg).groups())
    assert dist == pytest.approx(change / (1 - rate), rel=2e-2) and dist > tol == 1e-8


@pytest.mark.parametrize("reml", [True, False])
def test_factor_leaves_a_false_boundary_during_the_run(reml):
    """Start on a rank-2 face of a q = 3 growth model: step_factor alone would stay on it for ever."""
    model = tl.Model("weight ~ Time + Time2 + (1 + Time + Time2 | Chick)", _csv("chickweight.csv"))
    best = _fit(model, reml=reml)
    G0, s0 = em.start_values(model)
    G0[2, 2] = 0.0                                                        # no variance for Time2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = em.fit(model, reml=reml, method="factor", G=G0, sigma2=s0)
    assert fit.loglik >= best.loglik - 1e-6 * abs(best.loglik)
    assert fit.loglik == pytest.approx(best.loglik, abs=1e-5)
    assert any(r.G[2, 2] > 0 for r in fit.history[:-1])                   # left the face before the end


@pytest.mark.parametrize("method", ["newton", "squarem", "factor", "plain"])
def test_every_method_reaches_the_growth_model_optimum_or_says_so(method):
    model = tl.Model("weight ~ Time + Time2 + (1 + Time + Time2 | Chick)", _csv("chickweight.csv"))
    best = _fit(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = em.fit(model, method=method, max_iter=3000)
    said = any(w.category is ConvergenceWarning for w in caught)
    assert said != fit.converged
    if fit.converged:
        assert fit.loglik == pytest.approx(best.loglik, abs=1e-6)


# ----------------------------------------------------------------------------
# an independent optimiser on real data
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("csv,formula", [
    ("machines.csv", "score ~ MachineB + MachineC + (1 + MachineB + MachineC | Worker)"),
    ("rail.csv", "travel ~ 1 + (1 | Rail)"),
    ("loblolly.csv", "height ~ age + age2 + (1 + age | Seed)")])
@pytest.mark.parametrize("reml", [True, False])
def test_scipy_on_a_dense_likelihood_agrees(csv, formula, reml):
    from test_em_independent import direct_loglik, scipy_optimum
    model = tl.Model(formula, _csv(csv))
    fit = _fit(model, reml=reml)
    G, sigma2, ll = scipy_optimum(model, reml, em.init(model, reml))
    assert fit.loglik >= ll - 1e-7                                        # at least as high as scipy's
    assert fit.loglik == pytest.approx(direct_loglik(model, fit.G, fit.sigma2, reml)[0], abs=1e-8)
    scale = max(np.abs(fit.G).max(), fit.sigma2)
    np.testing.assert_allclose(fit.G, G, atol=1e-3 * scale)


@pytest.mark.parametrize("formula", [M3, "log_radon ~ floor + (1 + floor || county)"])
@pytest.mark.parametrize("reml", [True, False])
def test_unprofiled_derivatives_in_lme4_varpar(formula, reml, radon):
    """lmerTest's parametrisation (theta, sigma): gradient and Hessian vs finite differences."""
    model = tl.Model(formula, radon)
    G = np.array([[0.12, -0.04], [-0.04, 0.11]]) * model.G_mask
    rows, cols = mme.theta_index(model.G_mask)
    g, H = mme.hessian_theta_sigma(model.stats, G, 0.56, reml, model.G_mask)

    def f(v):
        return -2 * mme.loglik(model.stats, newton.theta_to_G(v[:-1], rows, cols, model.q, v[-1] ** 2),
                               v[-1] ** 2, reml)
    v = np.r_[mme.relative_factor(G, 0.56)[rows, cols], np.sqrt(0.56)]
    h = 1e-4
    g_fd = np.array([(f(v + e) - f(v - e)) / (2 * h) for e in np.eye(v.size) * h])
    np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-6 * np.abs(g).max())
    np.testing.assert_allclose(H, _fd_hessian(f, v, h), rtol=1e-4, atol=1e-4 * np.abs(H).max())


def test_when_newton_does_not_settle_squarem_finishes(radon, monkeypatch):
    model = tl.Model(M4, radon)
    best = em.fit(model)
    monkeypatch.setattr(em, "NEWTON_STEPS", 1)
    fit = em.fit(model)
    assert fit.converged and fit.n_iter > best.n_iter
    np.testing.assert_allclose(fit.G, best.G, rtol=1e-5, atol=1e-7)
    assert fit.loglik == pytest.approx(best.loglik, abs=1e-8)


def test_em_decisions_are_free_of_units():
    """SQUAREM's extrapolation, the stopping rule's change and the boundary probe are computed in
    the standardised relative scale: on rescaled data (y by 1e-3, Time by 1e3) every one of them
    is the same number. (The whole SQUAREM path is then the same up to rounding, which its
    accept-or-reject decisions amplify over its ~200 iterations: 191 to 231 iterations, all at
    the same optimum; the default fit's 13 are exactly the same.)"""
    data = _csv("bodyweight.csv")
    formula = "weight ~ Time + Diet + (1 + Time | Rat)"
    cy, ct = 1e-3, 1e3
    scaled = dict(data, weight=np.asarray(data["weight"], float) * cy, Time=np.asarray(data["Time"], float) * ct)
    a, b = tl.Model(formula, data), tl.Model(formula, scaled)
    D = np.array([1.0, ct])
    back = lambda G: G * np.outer(D, D) / cy ** 2                        # noqa: E731
    sa, sb = em.init(a), em.init(b)
    np.testing.assert_allclose(back(sb.G), sa.G, rtol=1e-7)              # equivariant start (OLS: rounding)
    sa1, sb1 = em.step_factor(sa), em.step_factor(sb)
    np.testing.assert_allclose(back(sb1.G), sa1.G, rtol=1e-7)            # equivariant EM map
    assert em._change(sb1, sb) == pytest.approx(em._change(sa1, sa), rel=1e-6)
    np.testing.assert_allclose((em._squarem_params(sb1) - em._squarem_params(sb))[:-1], (em._squarem_params(sa1) - em._squarem_params(sa))[:-1],
                               rtol=1e-6)
    qa, qb = em._squarem(sa, em.step_factor), em._squarem(sb, em.step_factor)
    np.testing.assert_allclose(back(qb.G), qa.G, rtol=1e-6)             # the same extrapolation
    for fa, fb in [(_fit(a, method="squarem"), _fit(b, method="squarem")), (_fit(a), _fit(b))]:
        np.testing.assert_allclose(back(fb.G), fa.G, rtol=1e-6)
        assert em._scales(b)[1] * np.diag(fb.solution.T)[1] == pytest.approx(
            em._scales(a)[1] * np.diag(fa.solution.T)[1], rel=1e-6)      # the probe's number


def test_newton_out_of_budget_says_so_with_the_rule(radon):
    with pytest.warns(ConvergenceWarning) as caught:
        fit = em.fit(tl.Model(M4, radon), max_iter=5)
    assert not fit.converged and fit.n_iter <= 5
    msg = str([w for w in caught if w.category is ConvergenceWarning][0].message)
    lam2, tol, grad = map(float, re.search(
        r"Newton decrement ([\d.e+-]+) > tol = ([\d.e+-]+); max \|gradient\| ([\d.e+-]+)", msg).groups())
    assert lam2 > tol == 1e-8 and grad == pytest.approx(fit.max_grad, rel=1e-2)
