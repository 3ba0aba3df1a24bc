"""Tests of teachlmm.gibbs: the conditionals, the inverse-Wishart, reproducibility, the API, radon M3.

References used (never the code under test):

* the joint Gaussian conditional of (beta, b) given (G, sigma2), built as dense
  matrices on a small data set (the textbook formula, no per-group algebra);
* teachlmm.mme.solve (the package's shared mixed-model equations, tested
  against lme4 elsewhere);
* scipy.stats.invwishart / invgamma (moments, and samples for two-sample tests);
* lme4's REML estimates for radon M3 (tests/reference/lme4_radon.json);
* data simulated with known truth.

Simulation-based calibration of the whole sampler is in test_gibbs_sbc.py.
"""
import warnings

import numpy as np
import pytest
import scipy.stats

import teachlmm as tl
from teachlmm import diagnostics, gibbs, mme
from teachlmm.errors import ConvergenceWarning, TeachLMMError
from conftest import M1, M3, M3u, M4

JAGS_PRIOR = dict(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)


@pytest.fixture(scope="module")
def data(radon):
    return radon                      # the session's radon data (conftest.py)




def small_data(seed=0, J=6, q=2):
    """A small data set with q random effects (intercept, x1, x2 ...) and groups of 3-7 rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 8, J)
    g = np.repeat(np.arange(1, J + 1), sizes).astype(float)
    n = g.size
    cols = {f"x{k}": rng.normal(size=n) for k in range(1, q + 1)}
    y = 1.0 + cols["x1"] + rng.normal(size=n) + rng.normal(size=J)[g.astype(int) - 1]
    terms = " + ".join(["1"] + [f"x{k}" for k in range(1, q)])
    return tl.Model(f"y ~ 1 + x1 + ({terms} | g)", {"y": y, "g": g, **cols})


# ----------------------------------------------------------------------------
# the prior
# ----------------------------------------------------------------------------

def test_default_prior_follows_the_data_scale(data, m3):
    """Default: Huang-Wand on G with A_k = sd(y) / rms(z_k), Jeffreys on sigma2, beta flat."""
    prior = gibbs.default_prior(m3)
    sd = np.std(data["log_radon"], ddof=1)
    floor_ms = np.mean(data["floor"] ** 2)
    assert prior.S0 is None and prior.a0 == 0 and prior.b0 == 0 and np.isinf(prior.tau2) and prior.sigma_max is None
    np.testing.assert_allclose(prior.A, [sd, sd / np.sqrt(floor_ms)])
    assert "Huang-Wand" in prior.describe() and "Jeffreys" in prior.describe()
    # inverse-Wishart / inverse-gamma as soon as one of their arguments is given, the rest from the data
    v = sd ** 2
    old = gibbs.Prior(nu0=3, a0=0.5).resolve(m3)
    np.testing.assert_allclose(old.b0, v / 2)
    np.testing.assert_allclose(old.S0, np.diag([v / 10, v / (10 * floor_ms)]))


def test_prior_keeps_unnamed_defaults_and_describes_itself(m3):
    prior = gibbs.Prior(nu0=5, S0=2 * np.eye(2)).resolve(m3)
    assert prior.nu0 == 5.0 and prior.a0 == 0.0 and prior.A is None        # sigma2: Jeffreys, the default
    with pytest.raises(TeachLMMError, match="not both"):
        gibbs.Prior(nu0=3, A=1.0)
    np.testing.assert_array_equal(gibbs.Prior(A=2.0).resolve(m3).A, [2.0, 2.0])
    np.testing.assert_array_equal(prior.S0, 2 * np.eye(2))
    text = gibbs.Prior(**JAGS_PRIOR).resolve(m3).describe()
    assert text == ("beta ~ N(0, 1e+04 I); G ~ InvWishart(nu0 = 3, S0 = [[1, 0], [0, 1]]); "
                    "sigma ~ Uniform(0, 100)")


@pytest.mark.parametrize("kwargs, words", [
    (dict(a0=0), "a0"), (dict(b0=-1.0), "b0"), (dict(a0=np.inf), "a0"), (dict(tau2=0.0), "tau2"),
    (dict(S0=[[1.0, 2.0], [2.0, 1.0]]), "positive definite"), (dict(S0=[[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (dict(S0=np.ones((2, 3))), "square"), (dict(sigma_max=0.0), "sigma_max"),
    (dict(a0=1.0, sigma_max=10.0), "not both"), (dict(nu0="three"), "nu0"),
])
def test_improper_or_malformed_prior_is_refused(kwargs, words):
    with pytest.raises(TeachLMMError, match=words):
        gibbs.Prior(**kwargs)


@pytest.mark.parametrize("kwargs, words", [
    (dict(nu0=1.0), "nu0 = 1 is improper"), (dict(nu0=0.5), "nu0 > q - 1"),
    (dict(S0=np.eye(3)), "2 x 2"), (dict(tau2=[1.0, 2.0, 3.0]), "p = 2"),
])
def test_prior_that_does_not_fit_the_model_is_refused(m3, kwargs, words):
    with pytest.raises(TeachLMMError, match=words):
        gibbs.sample(m3, draws=10, warmup=0, chains=1, prior=gibbs.Prior(**kwargs))


@pytest.mark.parametrize("kwargs, words", [
    (dict(draws=0), "draws"), (dict(chains=0), "chains"), (dict(chains=1.5), "chains"),
    (dict(thin=0), "thin"), (dict(warmup=-1), "warmup"), (dict(draws=True), "draws"),
    (dict(seed=-1), "seed"), (dict(seed=True), "seed"), (dict(seed=1.5), "seed"),
])
def test_bad_sampling_arguments_are_refused(m3, kwargs, words):
    args = dict(draws=10, warmup=0, chains=1, seed=1)
    args.update(kwargs)
    with pytest.raises(TeachLMMError, match=words):
        gibbs.sample(m3, **args)


def test_bad_start_values_are_refused(m3):
    with pytest.raises(TeachLMMError, match="2 x 2"):
        gibbs.init(m3, seed=1, G=np.eye(3))
    with pytest.raises(TeachLMMError, match="positive semi-definite"):
        gibbs.init(m3, seed=1, G=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(TeachLMMError, match="sigma2"):
        gibbs.init(m3, seed=1, sigma2=-1.0)


# ----------------------------------------------------------------------------
# small dense algebra
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("q", [1, 2, 3])
def test_cholesky_inverse_closed_forms_match_numpy(q):
    rng = np.random.default_rng(q)
    B = rng.normal(size=(5, 7, q, q))
    M = B @ np.swapaxes(B, -1, -2) + 0.1 * np.eye(q)
    W = mme.lower_inverse(mme.cholesky(M))
    np.testing.assert_allclose(np.triu(W, 1), 0.0, atol=1e-15)
    np.testing.assert_allclose(np.swapaxes(W, -1, -2) @ W, np.linalg.inv(M), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(W), np.linalg.cholesky(M), rtol=1e-9, atol=1e-12)


def test_batched_relative_factor_matches_mme_also_for_singular_G():
    rng = np.random.default_rng(3)
    B = rng.normal(size=(4, 3, 3))
    G = B @ np.swapaxes(B, -1, -2)
    G[1] = np.outer([1.0, 2.0, -1.0], [1.0, 2.0, -1.0])          # rank 1
    G[2] = np.diag([0.5, 0.0, 2.0])                              # a zero variance
    G[3] = 0.0
    sigma2 = np.array([0.5, 1.0, 2.0, 0.7])
    T = gibbs.relative_factor(G, sigma2)
    for k in range(4):
        np.testing.assert_allclose(T[k], mme.relative_factor(G[k], sigma2[k]), atol=1e-12)
        np.testing.assert_allclose(sigma2[k] * T[k] @ T[k].T, G[k], atol=1e-12)


# ----------------------------------------------------------------------------
# block 1: (beta, b) given (G, sigma2)
# ----------------------------------------------------------------------------

def dense_conditional(model, G, sigma2, tau2):
    """Joint N(mean, cov) of theta = (beta, b_1, ..., b_J) given (G, sigma2, y), from dense matrices.

    Precision P = [X Z]'[X Z] / sigma2 + blockdiag(I / tau2, I_J kron G^-1);  mean = P^-1 [X Z]'y / sigma2.
    """
    n, p, q, J = model.n, model.p, model.q, model.J
    Zbig = np.zeros((n, J * q))
    for i in range(n):                                    # row by row: a reference, not a fast path
        j = model.codes[i]
        Zbig[i, j * q:(j + 1) * q] = model.Z[i]
    W = np.hstack([model.X, Zbig])
    prior = np.zeros((p + J * q, p + J * q))
    prior[:p, :p] = np.eye(p) / tau2
    prior[p:, p:] = np.kron(np.eye(J), np.linalg.inv(G))
    P = W.T @ W / sigma2 + prior
    cov = np.linalg.inv(P)
    return cov @ W.T @ model.y / sigma2, cov, P


def test_coefficient_block_is_the_joint_gaussian_conditional():
    model = small_data()
    p, q, J = model.p, model.q, model.J
    G, sigma2, tau2 = np.array([[0.8, -0.3], [-0.3, 0.5]]), 0.7, 4.0
    mean, cov, P = dense_conditional(model, G, sigma2, tau2)
    block = gibbs.coefficient_block(model.stats, G, np.asarray(sigma2), tau2)
    np.testing.assert_allclose(block.beta_mean, mean[:p], rtol=1e-10)
    np.testing.assert_allclose(sigma2 * block.A_inv, cov[:p, :p], rtol=1e-10)         # Var(beta | G, sigma2, y)
    cov_b_given_beta = np.linalg.inv(P[p:, p:])                                        # Var(b | beta, ...)
    for j in range(J):
        np.testing.assert_allclose(sigma2 * block.Minv[j], cov_b_given_beta[j * q:(j + 1) * q, j * q:(j + 1) * q],
                                   rtol=1e-10, atol=1e-14)
    beta = np.array([0.3, 1.2])                                                        # any beta
    expected_b = mean[p:] + cov_b_given_beta @ P[p:, :p] @ (mean[:p] - beta)           # E(b | beta, ...)
    np.testing.assert_allclose(gibbs.b_mean(model.stats, block.Minv, beta).ravel(), expected_b, rtol=1e-9)


def test_coefficient_block_agrees_with_mme_solve(m3):
    G, sigma2, tau2 = np.array([[0.12, -0.04], [-0.04, 0.118]]), 0.557, 100.0
    sol = mme.solve(m3.stats, G, sigma2, beta_precision=sigma2 / tau2 * np.eye(2))
    block = gibbs.coefficient_block(m3.stats, G, np.asarray(sigma2), tau2)
    np.testing.assert_allclose(block.beta_mean, sol.beta, rtol=1e-12)
    np.testing.assert_allclose(block.A_inv, np.linalg.inv(sol.A), rtol=1e-10)
    np.testing.assert_allclose(block.Minv, sol.Minv, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(gibbs.b_mean(m3.stats, block.Minv, sol.beta), sol.b, rtol=1e-9, atol=1e-13)


def test_coefficient_draws_have_the_joint_conditional_law():
    """20,000 draws at once (the batch axis doubles as 'chains'): mean and covariance of (beta, b)."""
    model = small_data(seed=1, J=4)
    G, sigma2, tau2 = np.array([[0.6, 0.2], [0.2, 0.4]]), 0.9, 10.0
    mean, cov, _ = dense_conditional(model, G, sigma2, tau2)
    N = 20000
    rng = np.random.default_rng(11)
    z = rng.standard_normal((N, model.p + model.J * model.q))
    beta, b, _, _ = gibbs.draw_coefficients(model.stats, np.broadcast_to(G, (N, 2, 2)),
                                            np.full(N, sigma2), tau2, z)
    theta = np.hstack([beta, b.reshape(N, -1)])
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(theta.mean(0) - mean) < 4.5 * sd / np.sqrt(N))
    se_cov = np.sqrt((np.outer(sd ** 2, sd ** 2) + cov ** 2) / N)                        # sd of a sample covariance
    assert np.all(np.abs(np.cov(theta.T) - cov) < 5 * se_cov)


def test_residual_sum_of_squares_from_statistics(m3):
    rng = np.random.default_rng(2)
    beta, b = rng.normal(size=(3, 2)), rng.normal(size=(3, m3.J, 2))
    ssr = gibbs.residual_sum_of_squares(m3.stats, beta, b)
    for c in range(3):
        e = m3.y - m3.X @ beta[c] - np.einsum("iq,iq->i", m3.Z, b[c][m3.codes])
        np.testing.assert_allclose(ssr[c], e @ e, rtol=1e-10)


# ----------------------------------------------------------------------------
# block 2: G given b (Bartlett inverse-Wishart)
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("nu, S", [
    (15.0, np.array([[2.0, 0.5], [0.5, 1.0]])),
    (12.5, np.array([[1.0, 0.3, -0.2], [0.3, 0.8, 0.1], [-0.2, 0.1, 0.5]])),
    (9.0, np.array([[0.7]])),
])
def test_bartlett_inverse_wishart_moments_match_scipy(nu, S):
    q, N = S.shape[0], 200000
    rng = np.random.default_rng(int(nu * 10))
    chi2 = 2.0 * rng.standard_gamma((nu - np.arange(q)) / 2.0, size=(N, q))
    z = rng.standard_normal((N, q * (q - 1) // 2))
    G = gibbs.bartlett_inv_wishart(np.broadcast_to(S, (N, q, q)), chi2, z)
    ref = scipy.stats.invwishart(df=nu, scale=S)
    np.testing.assert_allclose(G.mean(0), ref.mean(), rtol=0.01, atol=0.003 * np.abs(S).max())
    np.testing.assert_allclose(G.var(0), ref.var(), rtol=0.05)
    # and the whole law of one entry: two-sample Kolmogorov-Smirnov against scipy's own sampler
    other = ref.rvs(size=20000, random_state=np.random.default_rng(5)).reshape(20000, q, q)
    assert scipy.stats.ks_2samp(G[:20000, -1, 0], other[:, -1, 0]).pvalue > 1e-3


def test_inv_wishart_single_draw_and_its_errors():
    rng = np.random.default_rng(0)
    G = gibbs.inv_wishart(5.0, np.eye(2), rng)
    assert G.shape == (2, 2) and np.allclose(G, G.T) and np.linalg.eigvalsh(G).min() > 0
    with pytest.raises(TeachLMMError, match="nu > q - 1"):
        gibbs.inv_wishart(0.5, np.eye(2), rng)


def test_uncorrelated_blocks_get_one_inverse_wishart_each(data):
    model = tl.Model(M3u, data)
    prior = gibbs.Prior(nu0=4, S0=np.diag([0.5, 2.0])).resolve(model)
    rng = np.random.default_rng(4)
    b = rng.normal(size=(3, model.J, 2))
    chi2 = rng.chisquare(10, size=(3, 2))
    G, dfs, scale = gibbs.draw_G(b, model.blocks, prior, chi2, np.zeros((3, 0)))
    assert dfs == (4 - 2 + 1 + model.J,) * 2                       # nu0 - q + q_B + J per block
    np.testing.assert_array_equal(G[:, 0, 1], 0.0)
    # InvWishart(nu, S) in one dimension is S / chi2(nu)
    np.testing.assert_allclose(G[:, 0, 0], (0.5 + (b[:, :, 0] ** 2).sum(1)) / chi2[:, 0])
    np.testing.assert_allclose(G[:, 1, 1], (2.0 + (b[:, :, 1] ** 2).sum(1)) / chi2[:, 1])


# ----------------------------------------------------------------------------
# block 3: sigma2 given (beta, b)
# ----------------------------------------------------------------------------

def test_sigma2_inverse_gamma_draw_matches_scipy():
    N, n, ssr = 100000, 20, 14.0
    prior = gibbs.Prior(a0=2.0, b0=1.5)
    gamma = np.random.default_rng(1).standard_gamma(2.0 + n / 2, size=N)
    s2, shape, rate = gibbs.draw_sigma2(np.full(N, ssr), n, prior, gamma)
    assert shape == 12.0 and rate[0] == 1.5 + 7.0
    assert scipy.stats.kstest(s2, scipy.stats.invgamma(a=shape, scale=rate[0]).cdf).pvalue > 1e-3


def test_sigma2_under_uniform_sigma_prior_is_the_truncated_conditional():
    """sigma ~ U(0, sigma_max): sigma2 | . ~ InvGamma((n-1)/2, SSR/2) truncated to sigma2 < sigma_max^2.

    Chosen so the bound cuts the untruncated law near its middle, so both branches
    (kept first try, inverse-CDF replacement) are used often.
    """
    N, n, ssr, smax = 100000, 7, 8.0, np.sqrt(2.0)
    prior = gibbs.Prior(sigma_max=smax)
    rng = np.random.default_rng(2)
    shape, rate = (n - 1) / 2, ssr / 2
    s2 = gibbs.draw_sigma2(np.full(N, ssr), n, prior, rng.standard_gamma(shape, size=N), 1.0 - rng.random(N))[0]
    law = scipy.stats.invgamma(a=shape, scale=rate)
    assert 0.3 < law.sf(smax ** 2) < 0.7
    assert s2.max() <= smax ** 2
    assert scipy.stats.kstest(s2, lambda x: law.cdf(x) / law.cdf(smax ** 2)).pvalue > 1e-3


def test_sigma2_bound_far_in_the_tail_gives_the_bound_without_warnings():
    prior = gibbs.Prior(sigma_max=0.01)
    s2 = gibbs.draw_sigma2(np.array([1e6]), 1000, prior, np.array([500.0]), np.array([0.3]))[0]
    assert np.isfinite(s2).all() and np.all(s2 <= 1e-4) and np.all(s2 > 0.9e-4)


# ----------------------------------------------------------------------------
# whole sweeps: the fast path is the readable path; reproducibility
# ----------------------------------------------------------------------------

def step_chains(model, seed, chains, sweeps, prior=None):
    state = gibbs.init(model, seed=seed, chains=chains, prior=prior)
    out = []
    for _ in range(sweeps):
        state = gibbs.step(state)
        out.append((state.beta, state.b, state.G, state.sigma2))
    return [np.stack(v, axis=1) for v in zip(*out)]                     # (chains, sweeps, ...)


@pytest.mark.parametrize("formula", [M1, M3, M3u, M4])
@pytest.mark.parametrize("jags", [False, True])
def test_sample_gives_the_draws_of_step(data, formula, jags):
    model = tl.Model(formula, data)
    prior = gibbs.Prior(**dict(JAGS_PRIOR, S0=np.eye(model.q))) if jags else None
    post = gibbs.sample(model, draws=15, warmup=5, chains=3, seed=7, prior=prior)
    beta, b, G, sigma2 = (v[:, 5:] for v in step_chains(model, 7, 3, 20, prior))
    np.testing.assert_allclose(post.draws["beta"], beta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.draws["b"], b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.draws["G"], G, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(post.draws["sigma2"], sigma2, rtol=1e-10)


def test_three_random_effects_run_the_general_path():
    model = small_data(seed=4, J=12, q=3)
    post = gibbs.sample(model, draws=10, warmup=3, chains=2, seed=5)
    _, _, G, sigma2 = (v[:, 3:] for v in step_chains(model, 5, 2, 13))
    np.testing.assert_array_equal(post.draws["G"], G)
    np.testing.assert_array_equal(post.draws["sigma2"], sigma2)
    with pytest.raises(TeachLMMError, match="q = 1 or 2"):
        gibbs.FastSweep(model, gibbs.default_prior(model))


def test_model_without_fixed_effects():
    model = small_data(seed=6, J=8, q=1)
    model = tl.Model("y ~ 0 + (1 | g)", {"y": model.y, "g": model.groups[model.codes].astype(float)})
    post = gibbs.sample(model, draws=20, warmup=5, chains=2, seed=1)
    assert post.draws["beta"].shape == (2, 20, 0) and np.all(np.isfinite(post.draws["G"]))
    _, _, G, _ = (v[:, 5:] for v in step_chains(model, 1, 2, 25))
    np.testing.assert_allclose(post.draws["G"], G, rtol=1e-10)


def test_same_seed_same_draws_and_chains_differ(m3):
    a = gibbs.sample(m3, draws=30, warmup=10, chains=3, seed=11)
    b = gibbs.sample(m3, draws=30, warmup=10, chains=3, seed=11)
    c = gibbs.sample(m3, draws=30, warmup=10, chains=3, seed=12)
    for key in ("beta", "b", "G", "sigma2"):
        np.testing.assert_array_equal(a.draws[key], b.draws[key])
        assert not np.allclose(a.draws[key], c.draws[key])
    s2 = a.draws["sigma2"]
    assert not np.allclose(s2[0], s2[1]) and not np.allclose(s2[1], s2[2])


def test_chain_k_does_not_depend_on_how_many_chains_run(m3):
    two = gibbs.sample(m3, draws=20, warmup=5, chains=2, seed=3)
    four = gibbs.sample(m3, draws=20, warmup=5, chains=4, seed=3)
    np.testing.assert_allclose(four.draws["G"][:2], two.draws["G"], rtol=1e-12)
    one = gibbs.init(m3, seed=3)                                        # the step-through view: chain 0
    for _ in range(25):
        one = gibbs.step(one)
    np.testing.assert_allclose(one.G, four.draws["G"][0, -1], rtol=1e-10)
    assert one.beta.shape == (2,) and one.b.shape == (m3.J, 2)


def test_thinning_keeps_every_kth_sweep(m3):
    full = gibbs.sample(m3, draws=30, warmup=4, chains=2, seed=9)
    thin = gibbs.sample(m3, draws=10, warmup=4, chains=2, seed=9, thin=3)
    np.testing.assert_array_equal(thin.draws["sigma2"], full.draws["sigma2"][:, ::3])


def test_state_shows_the_conditionals_of_the_sweep(m3):
    iw = gibbs.Prior(nu0=3, a0=0.5).resolve(m3)                        # inverse-Wishart, inverse-gamma
    state = gibbs.init(m3, seed=2, prior=iw)
    assert state.iteration == 0 and state.cond.G_df is None
    new = gibbs.step(state, interweave=False)           # G_scale is the centred G-draw's: from b before interweaving
    c = new.cond
    assert new.iteration == 1 and c.G_df == 3 + m3.J and c.sigma2_shape == 0.5 + m3.n / 2
    np.testing.assert_allclose(c.G_scale, iw.S0 + new.b.T @ new.b)
    np.testing.assert_allclose(c.sigma2_rate, iw.b0 + c.ssr / 2)
    sol = mme.solve(m3.stats, state.G, float(state.sigma2))             # flat prior on beta: GLS
    np.testing.assert_allclose(c.beta_mean, sol.beta, rtol=1e-10)
    np.testing.assert_allclose(c.beta_cov, state.sigma2 * np.linalg.inv(sol.A), rtol=1e-9)
    np.testing.assert_allclose(c.b_cov, state.sigma2 * sol.Minv, rtol=1e-9, atol=1e-15)


def test_singular_start_is_safe(m3):
    state = gibbs.init(m3, seed=4, chains=2, G=np.zeros((2, 2)), sigma2=0.5)
    np.testing.assert_array_equal(state.b, 0.0)                         # G = 0: no random effects
    state = gibbs.step(state)
    assert np.all(np.isfinite(state.G)) and np.all(np.linalg.eigvalsh(state.G) > 0)
    post_G = gibbs.FastSweep(m3, state.prior)(np.zeros((2, 2, 2)), np.array([0.5, 0.6]),
                                              gibbs.draw_noise(state.rng, m3, state.prior))[2]
    assert np.all(np.isfinite(post_G))


# ----------------------------------------------------------------------------
# the Posterior
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def post_m3(m3):
    return gibbs.sample(m3, draws=2000, warmup=500, chains=4, seed=1)


def test_posterior_arrays_and_names(post_m3, m3):
    d = post_m3.draws
    assert d["beta"].shape == (4, 2000, 2) and d["G"].shape == (4, 2000, 2, 2)
    assert d["sigma2"].shape == (4, 2000) and d["b"].shape == (4, 2000, m3.J, 2)
    assert post_m3.fixef_names == ["(Intercept)", "floor"] and post_m3.ranef_names == ["(Intercept)", "floor"]
    np.testing.assert_array_equal(post_m3.groups, m3.groups)
    assert post_m3.prior.nu0 == 3 and post_m3.seconds > 0
    np.testing.assert_array_equal(post_m3.get("floor"), d["beta"][:, :, 1])
    np.testing.assert_array_equal(post_m3.get("beta[0]"), post_m3.get("(Intercept)"))
    np.testing.assert_array_equal(post_m3.get("G[0,1]"), post_m3.get("G[1,0]"))
    np.testing.assert_allclose(post_m3.get("sd[1]") ** 2, d["G"][:, :, 1, 1])
    np.testing.assert_allclose(post_m3.get("corr[0,1]"),
                               d["G"][:, :, 0, 1] / np.sqrt(d["G"][:, :, 0, 0] * d["G"][:, :, 1, 1]))
    np.testing.assert_allclose(post_m3.get("sigma") ** 2, d["sigma2"])
    np.testing.assert_array_equal(post_m3.get("b[4,1]"), d["b"][:, :, 4, 1])
    for name in post_m3.names():
        assert post_m3.get(name).shape == (4, 2000)
    with pytest.raises(TeachLMMError, match="unknown parameter"):
        post_m3.get("G[2,0]")


def test_coef_draws_add_fixed_and_random_effects(post_m3, data):
    coef = post_m3.coef_draws()
    assert coef.shape == (4, 2000, 85, 2)
    np.testing.assert_allclose(coef[:, :, 7, 1], post_m3.get("floor") + post_m3.get("b[7,1]"))
    # a random-intercept model: coef keeps the fixed slope for every county
    post = gibbs.sample(tl.Model(M1, data), draws=5, warmup=0, chains=1, seed=1)
    np.testing.assert_allclose(post.coef_draws()[0, :, 3, 1], post.get("floor")[0])


def test_keep_b_false_leaves_out_the_random_effects(m3):
    post = gibbs.sample(m3, draws=10, warmup=0, chains=2, seed=1, keep_b=False)
    assert "b" not in post.draws
    with pytest.raises(TeachLMMError, match="keep_b=True"):
        post.coef_draws()
    with pytest.raises(TeachLMMError, match="keep_b=True"):
        post.get("b[0,0]")


def test_summary_table(post_m3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        text = post_m3.summary()
    assert "Prior: beta flat; G ~ Huang-Wand(nu = 2" in text
    for word in ["(Intercept)", "floor", "Var (Intercept)", "Cov (Intercept),floor", "Std.Dev. floor",
                 "Corr (Intercept),floor", "Var Residual", "R-hat", "ESS-bulk", "ESS-tail", "97.5%"]:
        assert word in text
    line = next(row for row in text.splitlines() if row.strip().startswith("floor"))
    mean, sd = float(line.split()[1]), float(line.split()[2])
    np.testing.assert_allclose(mean, post_m3.get("floor").mean(), rtol=1e-3)
    np.testing.assert_allclose(sd, post_m3.get("floor").std(ddof=1), rtol=1e-3)
    assert f"{diagnostics.ess_bulk(post_m3.get('floor')):.0f}" in line


def test_sample_warns_once_on_short_chains_and_not_on_good_ones(data):
    with pytest.warns(ConvergenceWarning, match="R-hat must be <= 1.01 and bulk and tail ESS >= 400") as record:
        short = gibbs.sample(tl.Model(M1, data), draws=30, warmup=5, chains=2, seed=1)
    assert len(record) == 1 and "draws=" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)               # summary() does not warn again
        text = short.summary()
    assert "Warning:" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        good = gibbs.sample(tl.Model(M1, data), draws=1000, warmup=200, chains=4, seed=1)
        assert "Warning:" not in good.summary()
    assert all(good._row(n)["ess_bulk"] >= 400 and good._row(n)["ess_tail"] >= 400 and good._row(n)["rhat"] <= 1.01
               for n in good.checked_names())


def test_progress_reports_draws_per_second(m3, capsys):
    gibbs.sample(m3, draws=5, warmup=2, chains=2, seed=1, progress=True)
    err = capsys.readouterr().err
    assert "sweep 7/7" in err and "draws/s" in err


# ----------------------------------------------------------------------------
# answers: radon M3 against REML, simulated data against the truth
# ----------------------------------------------------------------------------

def test_radon_m3_posterior_agrees_with_reml(post_m3, lme4):
    """Flat prior on beta: the posterior means of the fixed effects are REML's estimates, up to Monte Carlo
    error (2 MCSE) and the small pull of the variance prior (0.02)."""
    reml = lme4["M3_REML"]
    for name, estimate in reml["fixef"].items():
        x = post_m3.get(name)
        assert abs(x.mean() - estimate) < 2 * diagnostics.mcse_mean(x) + 0.02, name
    low, high = np.quantile(post_m3.get("sigma2"), [0.025, 0.975])
    assert low < 0.557 < high
    assert low < reml["sigma2"] < high


def test_simulated_cross_level_model_recovers_the_truth():
    data, truth = tl.simulate_data(n_groups=120, seed=5)
    model = tl.Model(truth["formula"], data)
    post = gibbs.sample(model, draws=800, warmup=200, chains=2, seed=5, keep_b=False)
    for name, value in truth["fixef"].items():
        low, high = np.quantile(post.get(name), [0.0025, 0.9975])
        assert low < value < high, name
    low, high = np.quantile(post.get("sigma2"), [0.0025, 0.9975])
    assert low < truth["sigma2"] < high
