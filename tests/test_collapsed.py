"""The collapsed sampler (teachlmm.collapsed) against references it does not compute itself.

* its coordinates: the log Jacobian against a numerical determinant, phi -> theta -> phi;
* its target: log p(y | theta) against the dense multivariate normal density of y with
  beta integrated out (V + X diag(tau2) X', scipy), and the flat-prior case against
  the REML criterion of teachlmm.mme (differences between two theta);
* the prior densities against scipy (inverse-Wishart) and the Huang-Wand prior's
  auxiliary-variable form integrated numerically;
* its exact draws of beta and b given theta against the moments of the mixed-model equations;
* the independence chain against a hand-worked path and a discrete target;
* the whole engine against the Gibbs sweep (posterior means within 4 combined MCSE);
* seeds, chains, errors.
"""
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import teachlmm as tl
from teachlmm import collapsed, gibbs, mme
from teachlmm.data import RADON_MODELS
from teachlmm.errors import TeachLMMError


def small_data(seed=0, J=8, q=2):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, J)
    g = np.repeat(np.arange(J), sizes)
    x, w = rng.normal(size=g.size), rng.normal(size=g.size)
    b = rng.normal(size=(J, 3)) * [0.8, 0.5, 0.3]
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + b[g, 2] * w + rng.normal(size=g.size)
    return {"y": y, "x": x, "w": w, "g": g.astype(float)}, g


def dense_log_marginal(model, G, sigma2, tau2):
    """log N(y; 0, V + X diag(tau2) X') with V = Z_j G Z_j' + sigma2 I per group, from scratch."""
    Z, X, y = model.Z, model.X, model.y
    groups = model.codes
    n = len(y)
    V = sigma2 * np.eye(n)
    for j in np.unique(groups):
        rows = np.flatnonzero(groups == j)
        V[np.ix_(rows, rows)] += Z[rows] @ G @ Z[rows].T
    cov = V + X @ np.diag(np.broadcast_to(tau2, (X.shape[1],))) @ X.T
    return scipy.stats.multivariate_normal(np.zeros(n), cov).logpdf(y)


@pytest.mark.parametrize("q, blocks", [(1, [[0]]), (2, [[0, 1]]), (3, [[0, 1, 2]]), (3, [[0], [1, 2]]),
                                       (2, [[0], [1]]), (4, [[0, 1, 2, 3]])])
def test_log_jacobian_equals_a_numerical_determinant(q, blocks):
    coords = collapsed.Coordinates(q, [np.array(b) for b in blocks])
    rng = np.random.default_rng(q)
    entries = [(B[i], B[k]) for B in blocks for i in range(len(B)) for k in range(i + 1)]

    def vech(phi):
        G, sigma2 = coords.theta(phi)
        return np.array([G[i, k] for i, k in entries] + [sigma2])
    for _ in range(3):
        phi = rng.normal(size=coords.dim) * 0.7
        h = 1e-6
        jac = np.array([(vech(phi + h * e) - vech(phi - h * e)) / (2 * h) for e in np.eye(coords.dim)])
        assert coords.log_jacobian(phi) == pytest.approx(np.log(abs(np.linalg.det(jac))), abs=1e-6)
        assert np.allclose(coords.phi(*coords.theta(phi)), phi, atol=1e-10)


def test_log_marginal_likelihood_equals_the_dense_normal_density():
    data, _ = small_data(1)
    model = tl.Model("y ~ 1 + x + (1 + x | g)", data)
    rng = np.random.default_rng(2)
    n, p = model.n, model.p
    for tau2 in (1.0, np.array([4.0, 0.5])):
        for _ in range(3):
            A = rng.normal(size=(2, 2))
            G, sigma2 = A @ A.T + 0.1 * np.eye(2), rng.uniform(0.3, 2.0)
            L = np.linalg.cholesky(G)
            ours = collapsed.log_marginal_likelihood(model.stats, L, sigma2, tau2).loglik
            dense = dense_log_marginal(model, G, sigma2, tau2)
            constant = -0.5 * n * np.log(2 * np.pi) - 0.5 * np.log(np.broadcast_to(tau2, (p,))).sum()
            assert ours + constant == pytest.approx(dense, rel=1e-10)


def test_flat_prior_marginal_is_the_reml_criterion_up_to_a_constant():
    model = tl.Model(RADON_MODELS["M3"], tl.load_radon())
    points = [(np.array([[0.12, -0.03], [-0.03, 0.1]]), 0.55), (np.array([[0.2, 0.05], [0.05, 0.3]]), 0.6),
              (np.array([[0.05, 0.0], [0.0, 1e-4]]), 0.5)]
    ours = [float(collapsed.log_marginal_likelihood(model.stats, np.linalg.cholesky(G), s, np.inf).loglik)
            for G, s in points]
    reml = [mme.loglik(model.stats, G, s, reml=True) for G, s in points]
    assert np.allclose(np.diff(ours), np.diff(reml), rtol=1e-10, atol=1e-8)


def test_singular_G_is_allowed_in_the_marginal():
    """A zero variance (L with a 0 on its diagonal) needs no G^-1: the same value as a tiny positive one."""
    model = tl.Model(RADON_MODELS["M3"], tl.load_radon())
    L0 = np.array([[0.3, 0.0], [0.0, 0.0]])
    L1 = np.array([[0.3, 0.0], [0.0, 1e-9]])
    a = collapsed.log_marginal_likelihood(model.stats, L0, 0.55, np.inf).loglik
    b = collapsed.log_marginal_likelihood(model.stats, L1, 0.55, np.inf).loglik
    assert a == pytest.approx(b, abs=1e-8)


def test_inverse_wishart_prior_density_matches_scipy():
    coords = collapsed.Coordinates(2, [np.array([0, 1])])
    prior = gibbs.Prior(nu0=5, S0=[[1.0, 0.3], [0.3, 2.0]], a0=2, b0=1.5)
    model = tl.Model("y ~ 1 + x + (1 + x | g)", small_data(3)[0])
    prior = prior.resolve(model)
    rng = np.random.default_rng(4)
    ours, ref = [], []
    for _ in range(4):
        phi = rng.normal(size=coords.dim) * 0.5
        G, sigma2 = coords.theta(phi)
        ours.append(float(collapsed.log_prior(coords.factor(phi), sigma2, model.blocks, prior)))
        ref.append(scipy.stats.invwishart(df=5, scale=prior.S0).logpdf(G)
                   + scipy.stats.invgamma(a=2, scale=1.5).logpdf(sigma2))
    assert np.allclose(np.diff(ours), np.diff(ref), rtol=1e-10)


def test_huang_wand_density_is_the_auxiliary_form_integrated():
    """q = 1: p(G) = integral of InvGamma(G | nu/2, nu/a) InvGamma(a | 1/2, 1/A^2) da (its auxiliary form)."""
    A, nu = 0.7, 2.0
    prior = gibbs.Prior(A=[A])
    model = tl.Model("y ~ 1 + x + (1 | g)", small_data(5)[0])
    prior = prior.resolve(model)
    L = np.array([[[0.3]], [[0.9]], [[2.0]]])

    def integrated(G):
        f = lambda a: (scipy.stats.invgamma(a=nu / 2, scale=nu / a).pdf(G)          # noqa: E731
                       * scipy.stats.invgamma(a=0.5, scale=1 / A ** 2).pdf(a))
        return np.log(scipy.integrate.quad(f, 0, np.inf, limit=200)[0])
    ours = collapsed._log_prior_G(L, model.blocks, prior)
    ref = [integrated(l[0, 0] ** 2) for l in L]
    assert np.allclose(np.diff(ours), np.diff(ref), rtol=1e-7)


def test_exact_draws_have_the_moments_of_the_mixed_model_equations():
    model = tl.Model("y ~ 1 + x + (1 + x | g)", small_data(6)[0])
    G, sigma2, tau2 = np.array([[0.6, 0.1], [0.1, 0.3]]), 0.8, np.inf
    L = np.linalg.cholesky(G)
    K = 40000
    marginal = collapsed.log_marginal_likelihood(model.stats, L, sigma2, tau2)
    rng = np.random.default_rng(7)
    LL = np.broadcast_to(L, (K, 2, 2))
    s2 = np.full(K, sigma2)
    beta, b = collapsed.draw_coefficients(model.stats, LL, s2, np.broadcast_to(marginal.beta_hat, (K, 2)),
                                          np.broadcast_to(marginal.R_inv, (K, 2, 2)), rng.standard_normal((K, 2)),
                                          rng.standard_normal((K, model.J, 2)))
    sol = mme.solve(model.stats, G, sigma2)
    cov = sigma2 * sol.A_inv
    se = np.sqrt(np.diag(cov) / K)
    assert np.all(np.abs(beta.mean(0) - sol.beta) < 4 * se)
    assert np.allclose(np.cov(beta.T), cov, rtol=0.05, atol=0.03 * np.abs(cov).max())
    # b's mean: the BLUP at beta_hat, averaged over beta (linear in beta, so the mean is the BLUP)
    b_se = b.std(0) / np.sqrt(K)
    assert np.all(np.abs(b.mean(0) - sol.b) < 5 * b_se)


def test_independence_chain_by_hand():
    logw = np.array([0.0, -1.0, 2.0, 1.0, 3.0])
    log_u = np.log([0.5, 0.9, 0.2, 0.01])   # step 1: 0.5 > e^-1 reject; 2: accept; 3: e^-1 > 0.2 accept; 4: accept
    index, accepted = collapsed.independence_chain(logw, log_u)
    assert index.tolist() == [0, 2, 3, 4] and accepted == 3


def test_independence_chain_samples_its_target():
    """Target p on 4 states, proposal g uniform: state frequencies converge to p (chi-square)."""
    p = np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(8)
    states = rng.integers(0, 4, 100001)
    logw = np.log(p[states] / 0.25)
    index, _ = collapsed.independence_chain(logw, np.log(rng.random(100000)))
    counts = np.bincount(states[index], minlength=4)
    # thinned by 10 against autocorrelation, a plain chi-square test
    thin = np.bincount(states[index[::10]], minlength=4)
    assert scipy.stats.chisquare(thin, p * thin.sum()).pvalue > 1e-3
    assert np.allclose(counts / counts.sum(), p, atol=0.01)


def run(model, prior=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        return gibbs.sample(model, prior=prior, **kw)


def mcse_agreement(a, b, names):
    """max over names of |mean_a - mean_b| / sqrt(mcse_a^2 + mcse_b^2)."""
    worst = 0.0
    for name in names:
        da, db = a.get(name), b.get(name)
        mcse = [d.std() / np.sqrt(float(tl.diagnostics.ess_bulk(d))) for d in (da, db)]
        worst = max(worst, abs(da.mean() - db.mean()) / np.hypot(*mcse))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("key, formula, prior", [
    ("M3 protocol", RADON_MODELS["M3"], gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)),
    ("M4 default", RADON_MODELS["M4"], None),
    ("M3u default", RADON_MODELS["M3u"], None),
    ("q = 3", "log_radon ~ 1 + floor + log_uranium + (1 + floor + log_uranium | county)",
     gibbs.Prior(nu0=4, S0=np.eye(3))),
])
def test_collapsed_and_gibbs_agree_within_4_mcse(key, formula, prior):
    model = tl.Model(formula, tl.load_radon())
    a = run(model, prior, draws=4000, warmup=500, chains=4, seed=11, keep_b=False, engine="collapsed")
    b = run(model, prior, draws=4000, warmup=500, chains=4, seed=12, keep_b=False)
    names = [f"beta[{k}]" for k in range(model.p)] + ["sigma2"] + [
        f"G[{i},{j}]" for i in range(model.q) for j in range(i + 1) if a.get(f"G[{i},{j}]").any()]
    assert mcse_agreement(a, b, names) < 4


def test_same_seed_same_draws_and_chain_k_independent_of_chain_count():
    model = tl.Model(RADON_MODELS["M1"], tl.load_radon())
    a = run(model, draws=200, warmup=50, chains=3, seed=5, engine="collapsed")
    b = run(model, draws=200, warmup=50, chains=3, seed=5, engine="collapsed")
    c = run(model, draws=200, warmup=50, chains=2, seed=5, engine="collapsed")
    for key in ("beta", "G", "sigma2", "b"):
        assert np.array_equal(a.draws[key], b.draws[key])
        assert np.array_equal(a.draws[key][:2], c.draws[key])
    assert a.engine == "collapsed" and a.acceptance.shape == (3,) and 0 < a.proposal_efficiency <= 1
    assert "collapsed sampler" in a.summary().splitlines()[0]


def test_b_draws_agree_with_gibbs_on_a_county():
    model = tl.Model(RADON_MODELS["M1"], tl.load_radon())
    a = run(model, draws=3000, warmup=300, chains=4, seed=1, engine="collapsed")
    b = run(model, draws=3000, warmup=300, chains=4, seed=2)
    for j in (0, 35, 84):
        da, db = a.draws["b"][:, :, j, 0], b.draws["b"][:, :, j, 0]
        mcse = [d.std() / np.sqrt(float(tl.diagnostics.ess_bulk(d))) for d in (da, db)]
        assert abs(da.mean() - db.mean()) < 4 * np.hypot(*mcse)


def test_large_mean_column_is_sampled_on_the_centred_copy():
    data, _ = small_data(9, J=20)
    shifted = dict(data, y=data["y"] + 1e6)
    a = run(tl.Model("y ~ 1 + x + (1 | g)", data), draws=1000, warmup=100, chains=2, seed=3, engine="collapsed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = run(tl.Model("y ~ 1 + x + (1 | g)", shifted), draws=1000, warmup=100, chains=2, seed=3,
                engine="collapsed")
    assert np.allclose(b.draws["beta"][..., 0] - 1e6, a.draws["beta"][..., 0], atol=1e-6)
    assert np.allclose(b.draws["sigma2"], a.draws["sigma2"], rtol=1e-8)


def test_errors_say_what_to_do():
    model = tl.Model(RADON_MODELS["M1"], tl.load_radon())
    with pytest.raises(TeachLMMError, match="interweave"):
        gibbs.sample(model, draws=10, chains=1, engine="collapsed", interweave=False)
    with pytest.raises(TeachLMMError, match="collapsed"):
        gibbs.sample(model, draws=10, chains=1, engine="Collapsed")
    crossed = tl.Model("y ~ 1 + (1 | g) + (1 | h)", {"y": np.arange(12.0) % 5, "g": np.arange(12) % 3,
                                                    "h": np.arange(12) % 4})
    with pytest.raises(TeachLMMError, match="engine"):
        gibbs.sample(crossed, draws=10, chains=1, engine="collapsed")
