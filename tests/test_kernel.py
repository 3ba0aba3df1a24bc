"""One kernel for the mixed-model equations: the Gibbs block and the fast sweep equal mme.solve.

mme.solve is checked against dense matrices elsewhere (test_em_independent, test_gibbs's
dense_conditional); here every other path that solves the same equations is held to it, on
random designs, random variance components and several chains at once, to 1e-12.
"""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm import gibbs, mme

RTOL = 1e-12


def random_model(seed, q, J=30, p=3):
    """A random design: p fixed columns, q random columns (intercept + slopes), uneven groups."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, size=J)
    n = int(sizes.sum())
    data = {"g": np.repeat(np.arange(J), sizes), "y": rng.normal(size=n) * 2 + 1}
    for k in range(1, max(p, q)):
        data[f"x{k}"] = rng.normal(size=n) + (k == 1) * 0.5
    fixed = " + ".join(["1"] + [f"x{k}" for k in range(1, p)])
    random = " + ".join(["1"] + [f"x{k}" for k in range(1, q)])
    return tl.Model(f"y ~ {fixed} + ({random} | g)", data)


def random_components(rng, q, chains):
    B = rng.normal(size=(chains, q, q))
    G = B @ np.swapaxes(B, -1, -2) + 0.05 * np.eye(q)
    return G, rng.uniform(0.3, 2.0, size=chains)


def close(a, b, rtol=RTOL):
    """Equal to rtol, relative to the largest entry (an absolute floor where entries can be 0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_solve_is_solve_chain_by_chain(q, seed):
    model = random_model(seed, q)
    rng = np.random.default_rng(100 + seed)
    G, sigma2 = random_components(rng, q, chains=4)
    batch = mme.solve(model.stats, G, sigma2)
    for c in range(4):
        one = mme.solve(model.stats, G[c], sigma2[c])
        for field in ("T", "Minv", "XtZ_Minv", "logdet_M_tilde", "A", "A_inv", "logdet_A", "beta", "b", "rss",
                      "rVr", "M_tilde", "K", "R_inv"):
            close(np.asarray(getattr(batch, field))[c], getattr(one, field))
        close(one.K @ one.K.swapaxes(-1, -2), one.Minv)                       # M_j^-1 = K_j K_j'
        close(one.R_inv.T @ one.R_inv, one.A_inv)                             # A^-1 = R^-T R^-1
        close(mme.loglik(model.stats, G, sigma2, True, batch)[c], mme.loglik(model.stats, G[c], sigma2[c], True))


@pytest.mark.parametrize("q", [1, 2, 3])
def test_gibbs_coefficient_block_is_mme_solve_with_the_prior(q):
    model = random_model(7, q)
    rng = np.random.default_rng(8)
    G, sigma2 = random_components(rng, q, chains=3)
    tau2 = np.array([4.0, np.inf, 25.0])
    block = gibbs.coefficient_block(model.stats, G, sigma2, tau2)
    for c in range(3):
        sol = mme.solve(model.stats, G[c], sigma2[c], beta_precision=sigma2[c] * np.diag(1 / tau2))
        close(block.beta_mean[c], sol.beta)
        close(block.A_inv[c], sol.A_inv)
        close(block.Minv[c], sol.Minv)
        close(block.K[c] @ block.K[c].swapaxes(-1, -2), sol.Minv)
        close(block.Rinv[c].T @ block.Rinv[c], sol.A_inv)
        close(gibbs.b_mean(model.stats, block.Minv[c], sol.beta), sol.b)


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("seed", [3, 4])
def test_fast_sweep_is_mme_solve(q, seed):
    """With zero noise the fast sweep's (beta, b) are mme.solve's (beta_hat, b_hat); with noise they are
    draw_coefficients' draws; its residual sum of squares is mme's."""
    model = random_model(seed, q)
    rng = np.random.default_rng(seed)
    G, sigma2 = random_components(rng, q, chains=4)
    prior = gibbs.Prior(tau2=[9.0, 16.0, np.inf]).resolve(model)
    fast = gibbs.FastSweep(model, prior)
    z = np.zeros((4, model.p + model.J * q))
    beta, b, _ = fast.coefficients(G, sigma2, z)
    sol = mme.solve(model.stats, G, sigma2, beta_precision=sigma2[:, None, None] * np.diag(1 / prior.tau2))
    close(beta, sol.beta)
    close(b, sol.b)
    z = rng.standard_normal(z.shape)
    beta, b, r = fast.coefficients(G, sigma2, z)
    beta_ref, b_ref, _, _ = gibbs.draw_coefficients(model.stats, G, sigma2, prior.tau2, z)
    close(beta, beta_ref)
    close(b, b_ref)
    close(fast.residual_sum_of_squares(beta, b, r), mme.residual_sum_of_squares(model.stats, beta, b))


def test_residual_sum_of_squares_against_the_rows():
    model = random_model(5, 2)
    rng = np.random.default_rng(5)
    beta, b = rng.normal(size=(2, model.p)), rng.normal(size=(2, model.J, 2))
    ssr = mme.residual_sum_of_squares(model.stats, beta, b)
    for c in range(2):
        e = model.y - model.X @ beta[c] - np.einsum("iq,iq->i", model.Z, b[c][model.codes])
        close(ssr[c], e @ e, rtol=1e-10)


@pytest.mark.parametrize("q", [1, 2, 3])
def test_closed_form_helpers_match_lapack(q):
    rng = np.random.default_rng(q)
    B = rng.normal(size=(5, 7, q, q))
    M = B @ np.swapaxes(B, -1, -2) + 0.1 * np.eye(q)
    L = mme.cholesky(M)
    close(L, np.linalg.cholesky(M), rtol=1e-10)
    close(mme.lower_inverse(L), np.linalg.inv(L), rtol=1e-10)
    inv, logdet = mme.inv_logdet(M)
    close(inv, np.linalg.inv(M), rtol=1e-9)
    close(logdet, np.linalg.slogdet(M)[1], rtol=1e-10)


def test_old_field_name_is_a_deprecated_alias():
    model = random_model(0, 1)
    sol = mme.solve(model.stats, np.array([[0.3]]), 1.0)
    with pytest.warns(DeprecationWarning, match="logdet_M_tilde"):
        assert sol.logdet_Mt is sol.logdet_M_tilde
