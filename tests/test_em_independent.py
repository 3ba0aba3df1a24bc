"""EM against an independent computation of the same likelihood, and its textbook properties.

The independent likelihood below builds each group's covariance V_j = Z_j G Z_j' + sigma2 I
explicitly (an n_j x n_j matrix per group - fine for a test, never done in the package) and
uses scipy's multivariate normal density; scipy.optimize maximises it directly over a
Cholesky parametrisation of G. EM's optimum must be the same point.
"""
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import teachlmm as tl
from teachlmm import em, mme


def _groups(model):
    return [np.flatnonzero(model.codes == j) for j in range(model.J)]


def direct_loglik(model, G, sigma2, reml):
    """(Restricted) log-likelihood from dense per-group V_j, GLS beta by explicit V_j^-1."""
    rows = _groups(model)
    X, Z, y = model.X, model.Z, model.y
    Vs = [Z[r] @ G @ Z[r].T + sigma2 * np.eye(r.size) for r in rows]
    Vinv = [np.linalg.inv(V) for V in Vs]
    XVX = sum(X[r].T @ Vi @ X[r] for r, Vi in zip(rows, Vinv))
    XVy = sum(X[r].T @ Vi @ y[r] for r, Vi in zip(rows, Vinv))
    beta = np.linalg.solve(XVX, XVy)
    ll = sum(scipy.stats.multivariate_normal(X[r] @ beta, V).logpdf(y[r]) for r, V in zip(rows, Vs))
    if reml:
        ll += 0.5 * model.p * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(XVX)[1]
    return ll, beta


def _unpack(theta, q):
    L = np.zeros((q, q))
    L[np.tril_indices(q)] = theta[:-1]
    return L @ L.T, np.exp(theta[-1])


def scipy_optimum(model, reml, start):
    q = model.q
    L0 = np.linalg.cholesky(start.G + 1e-3 * np.eye(q))
    theta0 = np.concatenate([L0[np.tril_indices(q)], [np.log(start.sigma2)]])
    obj = lambda t: -direct_loglik(model, *_unpack(t, q), reml)[0]      # noqa: E731
    res = scipy.optimize.minimize(obj, theta0, method="Nelder-Mead",
                                  options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 40000, "maxfev": 40000})
    res = scipy.optimize.minimize(obj, res.x, method="BFGS", options={"gtol": 1e-8})
    G, sigma2 = _unpack(res.x, q)
    return G, sigma2, -res.fun


def simulated_model(q, seed):
    rng = np.random.default_rng(seed)
    J = 25
    sizes = rng.integers(2, 12, size=J)
    g = np.repeat(np.arange(J), sizes)
    n = g.size
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    G = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]])[:q, :q]
    b = rng.multivariate_normal(np.zeros(q), G, size=J)
    Zfull = np.column_stack([np.ones(n), x1, x2])[:, :q]
    y = 1.0 + 0.5 * x1 - 0.3 * x2 + np.einsum("iq,iq->i", Zfull, b[g]) + rng.normal(0, 0.7, n)
    terms = ["1", "1 + x1", "1 + x1 + x2"][q - 1]
    return tl.Model(f"y ~ 1 + x1 + x2 + ({terms} | g)", {"y": y, "x1": x1, "x2": x2, "g": g})


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("reml", [True, False])
def test_em_optimum_equals_direct_maximisation(q, reml):
    model = simulated_model(q, seed=10 + q)
    fit = em.fit(model, reml=reml)
    G, sigma2, ll = scipy_optimum(model, reml, fit)
    assert fit.loglik == pytest.approx(ll, abs=1e-7) or fit.loglik > ll   # EM is at least as high
    ll_direct, beta_direct = direct_loglik(model, fit.G, fit.sigma2, reml)
    assert fit.loglik == pytest.approx(ll_direct, abs=1e-8)              # same likelihood function
    np.testing.assert_allclose(fit.G, G, atol=2e-5)
    assert fit.sigma2 == pytest.approx(sigma2, abs=2e-5)
    np.testing.assert_allclose(fit.beta, beta_direct, atol=1e-10)


@pytest.mark.parametrize("reml", [True, False])
def test_gradient_vanishes_at_the_optimum(radon, reml):
    from conftest import M4
    fit = em.fit(tl.Model(M4, radon), reml=reml)
    D = mme.gradient_G(fit.model.stats, fit.G, fit.sigma2, reml)
    assert np.max(np.abs(D)) < 1e-4                                      # dl/dG = 0
    h = 1e-6                                                             # and d/dsigma2 by differences
    s = fit.model.stats
    d = (mme.loglik(s, fit.G, fit.sigma2 + h, reml) - mme.loglik(s, fit.G, fit.sigma2 - h, reml)) / (2 * h)
    assert abs(d) < 1e-3


def test_gradient_matches_finite_differences():
    model = simulated_model(2, seed=4)
    G, sigma2 = np.array([[0.4, 0.05], [0.05, 0.2]]), 0.6
    for reml in (True, False):
        D = mme.gradient_G(model.stats, G, sigma2, reml)
        for i, j in [(0, 0), (1, 1), (0, 1)]:
            E = np.zeros((2, 2))
            E[i, j] = E[j, i] = 1e-6
            num = (mme.loglik(model.stats, G + E, sigma2, reml) - mme.loglik(model.stats, G - E, sigma2, reml)) / 2e-6
            analytic = D[i, j] * (2 if i != j else 1)                    # symmetric perturbation
            assert analytic == pytest.approx(num, rel=1e-5)


@pytest.mark.parametrize("reml", [True, False])
def test_loglik_never_decreases(radon, reml):
    from conftest import M4
    lls = [s.loglik for s, _ in zip(em.steps(tl.Model(M4, radon), reml=reml), range(400))]
    assert np.all(np.diff(lls) >= -1e-9 * abs(lls[-1]))
    fit = em.fit(tl.Model(M4, radon), reml=reml)                         # SQUAREM too
    hist = [r.loglik for r in fit.history]
    assert np.all(np.diff(hist) >= -1e-9 * abs(hist[-1]))


def test_g_stays_psd_along_the_path(radon):
    from conftest import M4
    for s, _ in zip(em.steps(tl.Model(M4, radon)), range(200)):
        assert np.linalg.eigvalsh(s.G).min() >= -1e-12


def test_sigma2_update_equals_textbook_form(radon):
    """Our G^-1-free sigma2 update equals design.md's sigma2 [k - sum tr(G^-1 Var(b_j|y))] form."""
    from conftest import M3
    model = tl.Model(M3, radon)
    for reml in (True, False):
        state = em.step(em.step(em.init(model, reml=reml)))
        _, sigma2_new = em.m_step(state)
        Ginv = np.linalg.inv(state.G)
        k = model.J * model.q + (model.p if reml else 0)
        bracket = k - np.einsum("qr,jrq->", Ginv, state.var_b)
        textbook = (state.rss + state.sigma2 * bracket) / model.n
        assert sigma2_new == pytest.approx(textbook, rel=1e-10)


def test_reml_conditional_variance_explicit(radon):
    """Var(b_j|y) under REML = sigma2 (M^-1 + M^-1 Z'X A^-1 X'Z M^-1), with M = Z'Z + sigma2 G^-1 directly."""
    from conftest import M3
    state = em.step(em.init(tl.Model(M3, radon), reml=True))
    s, G, s2 = state.model.stats, state.G, state.sigma2
    M = s.ZtZ + s2 * np.linalg.inv(G)
    Minv = np.linalg.inv(M)
    ZtX = np.swapaxes(s.XtZ, 1, 2)
    A = s.XtX.sum(0) - np.einsum("jpq,jqr,jrs->ps", s.XtZ, Minv, ZtX)
    expect = s2 * (Minv + Minv @ ZtX @ np.linalg.inv(A) @ s.XtZ @ Minv)
    np.testing.assert_allclose(state.var_b, expect, rtol=1e-9, atol=1e-14)


def test_affine_change_of_response(radon):
    """y -> c y + d: fixed effects scale (intercept shifts by d), variances scale by c^2, BLUPs by c."""
    from conftest import M3
    c, d = 1e4, 1e6
    base = em.fit(tl.Model(M3, radon))
    moved = dict(radon, log_radon=radon["log_radon"] * c + d)
    fit = em.fit(tl.Model(M3, moved))
    expect = base.beta * c + np.array([d, 0.0])
    np.testing.assert_allclose(fit.beta, expect, rtol=1e-8)
    np.testing.assert_allclose(fit.G, base.G * c ** 2, rtol=1e-6)
    assert fit.sigma2 == pytest.approx(base.sigma2 * c ** 2, rel=1e-7)
    np.testing.assert_allclose(fit.ranef, base.ranef * c, rtol=1e-5, atol=1e-6 * c)
    assert fit.loglik == pytest.approx(base.loglik - 919 * 0 - (919 - 2) * np.log(c), abs=1e-5)


def test_true_zero_variance_finishes_on_the_boundary():
    """Data with no slope variance: EM stops at the boundary, warns, and does so quickly."""
    data, _ = tl.simulate_data(n_groups=60, G=[[0.1, 0.0], [0.0, 0.0]], seed=3)
    model = tl.Model("y ~ 1 + x + u + x:u + (1 + x | group)", data)
    with pytest.warns(tl.BoundaryWarning):
        fit = em.fit(model)
    assert fit.converged and fit.singular and fit.n_iter < 1000
    assert np.linalg.eigvalsh(fit.G).min() <= 1e-10                      # exactly singular
    # the boundary point is a maximum: no direction back into the interior increases the likelihood
    w, V = np.linalg.eigh(fit.G)
    v = V[:, 0]
    D = mme.gradient_G(model.stats, fit.G, fit.sigma2, True)
    assert v @ D @ v <= 1e-6
    with pytest.warns(tl.BoundaryWarning):
        plain = em.fit(model, method="plain")
    assert plain.loglik == pytest.approx(fit.loglik, abs=1e-6)


def test_convergence_warning_when_max_iter_is_hit(radon):
    from conftest import M4
    with pytest.warns(tl.ConvergenceWarning, match="max_iter"):
        fit = em.fit(tl.Model(M4, radon), method="plain", max_iter=20)
    assert not fit.converged and fit.n_iter == 20
    assert "did not converge" in fit.summary()


def test_singular_start_stays_on_its_face_and_loglik_is_finite(radon):
    """A singular G (a variance of exactly 0) is a valid point: finite loglik, BLUPs and steps."""
    from conftest import M3
    model = tl.Model(M3, radon)
    state = em.init(model, G=[[0.1, 0.0], [0.0, 0.0]], sigma2=0.6)
    assert np.isfinite(state.loglik)
    assert np.all(state.b[:, 1] == 0)
    nxt = em.step(state)
    assert nxt.G[1, 1] == 0.0 and nxt.loglik >= state.loglik


def test_steps_generator_and_step_are_the_same(radon):
    from conftest import M1
    model = tl.Model(M1, radon)
    gen = [s for s, _ in zip(em.steps(model), range(4))]
    s = em.init(model)
    for k in range(1, 4):
        s = em.step(s)
        assert s.iteration == k
        np.testing.assert_array_equal(s.G, gen[k].G)


@pytest.mark.parametrize("seed", [1, 2])
def test_no_group_variance_at_all(seed):
    """Data simulated with G = 0: every method converges to the same point, none crawls."""
    data, _ = tl.simulate_data(n_groups=40, G=[[0.0, 0.0], [0.0, 0.0]], seed=seed)
    model = tl.Model("y ~ 1 + x + (1 + x | group)", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.BoundaryWarning)
        fits = [em.fit(model, method=m) for m in ("squarem", "factor", "plain")]
    assert all(f.converged for f in fits)
    assert max(f.loglik for f in fits) - min(f.loglik for f in fits) < 1e-7


def test_zero_g_start_is_a_valid_state(radon):
    """G = 0 exactly (complete pooling): the factor step only updates sigma2, and fit leaves G = 0."""
    from conftest import M1
    model = tl.Model(M1, radon)
    s = em.init(model, G=[[0.0]], sigma2=0.7)
    nxt = em.step_factor(s)
    assert nxt.G[0, 0] == 0 and nxt.loglik >= s.loglik
    fit = em.fit(model, G=[[0.0]], sigma2=0.7)
    assert fit.G[0, 0] > 0.05                          # the KKT check sent it back inside


def test_bad_start_values_get_clear_errors(radon):
    """EM's start values go through the same check as every method's (Model.check_variance_components)."""
    from conftest import M3
    model = tl.Model(M3, radon)
    with pytest.raises(tl.TeachLMMError, match="2 x 2"):
        em.init(model, G=np.eye(3))
    with pytest.raises(tl.TeachLMMError, match="positive semi-definite"):
        em.fit(model, G=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(tl.TeachLMMError, match="sigma2"):
        em.init(model, sigma2=-1.0)
    with pytest.raises(tl.TeachLMMError, match="uncorrelated"):
        em.init(tl.Model("log_radon ~ floor + (1 + floor || county)", radon), G=[[0.1, 0.01], [0.01, 0.1]])
