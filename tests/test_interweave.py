"""Tests of teachlmm.interweave: the prior on L and its derivatives, the regression given u, the MH step.

References (never the code under test): scipy.stats.invwishart's log density plus the
Jacobian of G = L L' written out; central finite differences; the regression's
cross-products built from a dense n x (p + r) design on a small data set; and the
sampler without interweaving (``interweave=False``), whose calibration is tested in
test_gibbs_sbc.py. Calibration of the sampler with interweaving is there too.
"""
import numpy as np
import pytest
import scipy.stats

import teachlmm as tl
from teachlmm import diagnostics, gibbs, interweave
from conftest import M3, M3u, M4

JAGS_PRIOR = dict(tau2=1e4, sigma_max=100)


def random_L(rng, q, chains=3):
    """Lower-triangular L with both signs on the diagonal, away from 0."""
    L = np.tril(rng.normal(size=(chains, q, q)), -1)
    d = rng.uniform(0.5, 2.0, size=(chains, q)) * rng.choice([-1.0, 1.0], size=(chains, q))
    L[:, np.arange(q), np.arange(q)] = d
    return L


BLOCKS = {"q1": [np.arange(1)], "q2": [np.arange(2)], "q3": [np.arange(3)],
          "q3 ||": [np.array([0]), np.array([1, 2])], "q2 ||": [np.array([0]), np.array([1])]}


def prior_for(blocks, rng):
    q = sum(len(b) for b in blocks)
    S0 = np.cov(rng.normal(size=(q, 3 * q))) + np.eye(q)
    prior = gibbs.Prior(nu0=q + 2.5, S0=S0)
    return interweave.prior_blocks(prior, blocks)


def mask(L, blocks):
    out = np.zeros_like(L)
    for b in blocks:
        ix = (slice(None),) + np.ix_(b, b)
        out[ix] = np.tril(L[ix])
    return out


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_log_prior_is_the_inverse_wishart_density_times_the_jacobian(name):
    rng = np.random.default_rng(1)
    blocks = BLOCKS[name]
    bp = prior_for(blocks, rng)
    L = mask(random_L(rng, sum(len(b) for b in blocks), chains=5), blocks)
    f = interweave.PriorOnL(bp).value(L)
    ref = np.zeros(len(L))
    for block, nu, S in bp:
        m = len(block)
        for c in range(len(L)):
            LB = L[c][np.ix_(block, block)]
            ref[c] += (scipy.stats.invwishart(df=nu, scale=S).logpdf(LB @ LB.T)
                       + sum((m - k) * np.log(abs(LB[k, k])) for k in range(m)))   # 2^m prod |L_kk|^(m-k+1)
    np.testing.assert_allclose(f - f[0], ref - ref[0], rtol=1e-10, atol=1e-10)    # equal up to a constant
    np.testing.assert_allclose(interweave.PriorOnL(bp).derivatives(L)[0], f, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gradient_and_hessian_match_finite_differences(name):
    rng = np.random.default_rng(2)
    blocks = BLOCKS[name]
    q = sum(len(b) for b in blocks)
    bp = prior_for(blocks, rng)
    prior_L = interweave.PriorOnL(bp)
    entries = interweave.lower_entries(blocks)
    rows, cols = np.array(entries).T
    L = mask(random_L(rng, q), blocks)
    f, grad, hess = prior_L.derivatives(L)
    theta, h = L[:, rows, cols], 1e-5

    def at(t):
        M = np.zeros_like(L)
        M[:, rows, cols] = t
        return prior_L.derivatives(M)
    for i in range(len(entries)):
        e = np.zeros_like(theta)
        e[:, i] = h
        plus, minus = at(theta + e), at(theta - e)
        np.testing.assert_allclose(grad[:, i], (plus[0] - minus[0]) / (2 * h), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(hess[:, i], (plus[1] - minus[1]) / (2 * h), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hess, np.swapaxes(hess, 1, 2), atol=1e-10)


def small_model(seed=0, q=2, uncorrelated=False, J=7):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, J)
    g = np.repeat(np.arange(1, J + 1), sizes).astype(float)
    n = g.size
    x, w = rng.normal(size=n), rng.normal(size=n)
    y = 1 + x + rng.normal(size=n) + rng.normal(size=J)[g.astype(int) - 1]
    terms = ["1", "x", "w"][:q]
    bar = "||" if uncorrelated else "|"
    return tl.Model(f"y ~ 1 + x + ({' + '.join(terms)} {bar} g)", {"y": y, "x": x, "w": w, "g": g}), \
        np.column_stack([np.ones(n), x, w])[:, :q], np.column_stack([np.ones(n), x]), y, g.astype(int) - 1


@pytest.mark.parametrize("q, uncorrelated", [(1, False), (2, False), (3, False), (2, True), (3, True)])
def test_regression_given_u_is_the_dense_least_squares_problem(q, uncorrelated):
    model, Z, X, y, g = small_model(seed=q, q=q, uncorrelated=uncorrelated)
    rng = np.random.default_rng(5)
    u = rng.normal(size=(2, model.J, q))
    sigma2 = np.array([0.7, 1.3])
    tau2 = 4.0
    st = interweave.statistics(model.stats, model.blocks, tau2)
    reg = interweave.regression(st, u, sigma2)
    for c in range(2):
        W = np.column_stack([Z[:, k] * u[c, g, l] for k, l in interweave.lower_entries(model.blocks)])
        D = np.column_stack([X, W])
        P = (D.T @ D + np.diag([sigma2[c] / tau2] * 2 + [0.0] * W.shape[1])) / sigma2[c]
        np.testing.assert_allclose(reg.precision[c], P, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(reg.mean[c], np.linalg.solve(P, D.T @ y / sigma2[c]), rtol=1e-8, atol=1e-10)


def prior_of(model, **kw):
    return gibbs.Prior(nu0=model.q + 1, S0=np.eye(model.q), **kw).resolve(model)


@pytest.mark.parametrize("q, uncorrelated", [(1, False), (2, False), (3, False), (3, True)])
def test_step_moves_beta_and_L_but_keeps_u(q, uncorrelated):
    """The step changes (beta, G, b) only through (beta, L): u_j = L^-1 b_j stays, so b_j' G^-1 b_j = u_j'u_j."""
    model = small_model(seed=10 + q, q=q, uncorrelated=uncorrelated, J=15)[0]
    state = gibbs.step(gibbs.init(model, seed=3, chains=4, prior=prior_of(model)), interweave=False)
    step = interweave.Interweaving(model, state.prior)
    rng = np.random.default_rng(4)
    for _ in range(20):                                  # until some chain moves (acceptance is low for q = 3)
        noise = rng.standard_normal((4, interweave.noise_size(model)))
        beta, b, G, accepted = step(state.beta, state.b, state.G, state.sigma2, noise)
        if accepted.any():
            break
    assert accepted.any()
    for c in range(4):
        before = np.einsum("jk,kl,jl->j", state.b[c], np.linalg.inv(state.G[c]), state.b[c])
        after = np.einsum("jk,kl,jl->j", b[c], np.linalg.inv(G[c]), b[c])
        np.testing.assert_allclose(after, before, rtol=1e-8)
        if accepted[c]:
            assert not np.allclose(beta[c], state.beta[c])
        else:
            np.testing.assert_array_equal(G[c], state.G[c])
        np.testing.assert_allclose(G[c] * (1 - model.G_mask), 0.0, atol=1e-14)  # zero between blocks
    one = step(state.beta[0], state.b[0], state.G[0], state.sigma2[0], noise[0])          # one chain, no axis
    np.testing.assert_allclose(one[2], G[0], rtol=1e-12)


def test_laplace_proposal_is_accepted_mostly_on_radon(m3):
    """Under the JAGS protocol prior the measured acceptance rate is about 88 % (plain likelihood: about 62 %)."""
    prior = prior_of(m3, **JAGS_PRIOR)
    state = gibbs.init(m3, seed=1, chains=4, prior=prior)
    step = interweave.Interweaving(m3, prior)
    rng = np.random.default_rng(0)
    accepted = []
    for i in range(150):
        state = gibbs.step(state, interweave=False)
        beta, b, G, a = step(state.beta, state.b, state.G, state.sigma2,
                             rng.standard_normal((4, interweave.noise_size(m3))))
        state = state._replace(beta=beta, b=b, G=G)
        if i >= 50:
            accepted.append(a)
    assert np.mean(accepted) > 0.75


def test_singular_start_skips_the_step(m3):
    """From G = 0 every b_j = 0, so u = 0 says nothing about L: that chain keeps its state."""
    prior = prior_of(m3)
    step = interweave.Interweaving(m3, prior)
    G = np.array([np.eye(2), np.eye(2)])
    b = np.zeros((2, m3.J, 2))
    b[1] = np.random.default_rng(1).normal(size=(m3.J, 2))
    out = step(np.zeros((2, 2)), b, G, np.array([0.5, 0.5]), np.zeros((2, interweave.noise_size(m3))))
    assert not out[3][0]
    np.testing.assert_array_equal(out[2][0], np.eye(2))


# ----------------------------------------------------------------------------
# the sampler with interweaving: the same posterior, better mixing
# ----------------------------------------------------------------------------

def mcse_diff(a, b):
    return np.hypot(diagnostics.mcse_mean(a), diagnostics.mcse_mean(b))


def three_effects_model(radon):
    """radon with a third random column (the county's log uranium, centred, per house): q = 3."""
    data = dict(radon)
    u = np.asarray(radon["log_uranium"], dtype=float)
    data["uc"] = u - u.mean()
    data["x2"] = np.asarray(radon["floor"], dtype=float) * data["uc"]
    return tl.Model("log_radon ~ 1 + floor + (1 + floor + x2 | county)", data)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["M3", "M4", "M3u", "q3"])
def test_posterior_means_agree_with_the_centred_sampler(radon, name):
    """Long runs under the protocol prior: every mean of beta, G and sigma2 within 4 combined MCSE."""
    model = three_effects_model(radon) if name == "q3" else tl.Model({"M3": M3, "M4": M4, "M3u": M3u}[name], radon)
    prior = gibbs.Prior(nu0=model.q + 1, S0=np.eye(model.q), **JAGS_PRIOR)
    draws = 3000 if name == "q3" else 10000
    old = gibbs.sample(model, draws=draws, warmup=1000, chains=4, seed=11, prior=prior, keep_b=False,
                       interweave=False)
    new = gibbs.sample(model, draws=draws, warmup=1000, chains=4, seed=12, prior=prior, keep_b=False)
    for n in new.checked_names():
        a, b = old.get(n), new.get(n)
        assert abs(a.mean() - b.mean()) < 4 * mcse_diff(a, b), (n, a.mean(), b.mean(), mcse_diff(a, b))


@pytest.mark.slow
def test_interweaving_mixes_the_slope_variance_faster(m3):
    """ESS per draw of G[1,1] on radon M3 (protocol prior): about 0.08 centred, about 0.3 interweaved."""
    prior = gibbs.Prior(nu0=3, S0=np.eye(2), **JAGS_PRIOR)
    ess = {}
    for flag in (False, True):
        post = gibbs.sample(m3, draws=3000, warmup=500, chains=4, seed=3, prior=prior, keep_b=False, interweave=flag)
        ess[flag] = diagnostics.ess_bulk(post.get("G[1,1]")) / post.get("G[1,1]").size
    assert ess[False] < 0.15 and ess[True] > 0.22 and ess[True] > 2 * ess[False], ess


# ----------------------------------------------------------------------------
# the Huang-Wand prior: its conditionals and its density in L
# ----------------------------------------------------------------------------

from teachlmm import huang_wand  # noqa: E402


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_huang_wand_density_in_L_and_its_derivatives(name):
    """log p(L) = log of Huang & Wand's eq. (3) at G = L L' + the Jacobian; derivatives by finite differences."""
    rng = np.random.default_rng(7)
    blocks = BLOCKS[name]
    q = sum(len(b) for b in blocks)
    A = rng.uniform(0.5, 2.0, q)
    prior_L = interweave.PriorOnL.huang_wand(blocks, A)
    L = mask(random_L(rng, q, chains=4), blocks)
    f, grad, hess = prior_L.derivatives(L)
    ref = np.zeros(len(L))
    for block in blocks:
        m, nu = len(block), 2.0
        for c in range(len(L)):
            LB = L[c][np.ix_(block, block)]
            G = LB @ LB.T
            ref[c] += (-(nu + 2 * m) / 2 * np.log(np.linalg.det(G))
                       - (nu + m) / 2 * np.log(nu * np.diag(np.linalg.inv(G)) + 1 / A[block] ** 2).sum()
                       + sum((m - k) * np.log(abs(LB[k, k])) for k in range(m)))
    np.testing.assert_allclose(f - f[0], ref - ref[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(prior_L.value(L), f, rtol=1e-12)
    rows, cols = np.array(interweave.lower_entries(blocks)).T
    theta, h = L[:, rows, cols], 1e-6
    for i in range(len(rows)):
        e = np.zeros_like(theta)
        e[:, i] = h
        up, down = L.copy(), L.copy()
        up[:, rows, cols], down[:, rows, cols] = theta + e, theta - e
        (fu, gu, _), (fd, gd, _) = prior_L.derivatives(up), prior_L.derivatives(down)
        np.testing.assert_allclose(grad[:, i], (fu - fd) / (2 * h), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(hess[:, i], (gu - gd) / (2 * h), rtol=1e-5, atol=1e-5)


def test_huang_wand_a_conditional_and_G_prior():
    rng = np.random.default_rng(3)
    G = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.5]])
    A = np.array([1.0, 2.0, 0.5])
    blocks = [np.array([0, 1]), np.array([2])]
    shape, rate = huang_wand.a_conditional(G, blocks, A)
    N = np.linalg.inv(G[:2, :2])
    np.testing.assert_allclose(shape, [(2 + 2) / 2, (2 + 2) / 2, (2 + 1) / 2])
    np.testing.assert_allclose(rate, [2 * N[0, 0] + 1, 2 * N[1, 1] + 0.25, 2 / 0.5 + 4])
    # a | G draws: rate / Gamma(shape) is InvGamma(shape, rate); its quartiles against scipy's
    gam = rng.standard_gamma(np.broadcast_to(shape, (20000, 3)))
    a = huang_wand.draw_a(G, blocks, A, gam)
    for p in (0.25, 0.5, 0.75):
        np.testing.assert_allclose(np.quantile(a, p, axis=0), scipy.stats.invgamma(a=shape, scale=rate).ppf(p),
                                   rtol=0.04)
    iw = huang_wand.G_prior_given_a(np.array([[1.0, 2.0, 4.0]]))
    assert iw.nu0 == 2 + 3 - 1
    np.testing.assert_allclose(iw.S0[0], np.diag([4.0, 2.0, 1.0]))


def test_huang_wand_scales_follow_the_units(radon):
    model = tl.Model(M3, radon)
    data = dict(radon)
    data["log_radon"] = 10 * np.asarray(radon["log_radon"])
    data["floor"] = 2 * np.asarray(radon["floor"])
    scaled = tl.Model(M3, data)
    np.testing.assert_allclose(huang_wand.default_scales(scaled), huang_wand.default_scales(model) * [10, 5])
