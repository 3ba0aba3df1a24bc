r"""The collapsed sampler: the variance components from their marginal posterior, then beta and b exactly.

The Gibbs sweep of :mod:`teachlmm.gibbs` draws G given the random effects b,
and b given G. When the data say little about b_j (a county with one house),
the two hold each other in place and G moves slowly. *Collapsing* (Liu 1994)
removes that coupling: integrate b and beta out of the model, which for the
normal model is exact algebra, and sample the variance components
theta = (G, sigma2) from their marginal posterior::

    p(theta | y)  ~  p(theta) p(y | theta),
    p(y | theta)  =  integral of N(y | X beta, V) p(beta) d beta,   V = Z G Z' + sigma2 I.

``p(y | theta)`` is the (restricted, for a flat prior on beta) likelihood
that EM maximises; :func:`log_marginal_likelihood` computes it group by group
with the mixed-model equations of :mod:`teachlmm.mme`. Given theta, beta and
b have a normal posterior, drawn exactly (:func:`draw_coefficients`), so the
chain on theta alone carries all the autocorrelation.

**The step for theta: independence Metropolis-Hastings.** theta lives in few
dimensions (q(q+1)/2 + 1). In the unconstrained coordinates phi of
:class:`Coordinates` (log standard deviations, atanh of the partial
correlations, log sigma2) the posterior is close to normal, so a mixture of
multivariate t distributions g(phi) fitted to it (:func:`fit_proposal`) is a
good independent guess. From the current phi, propose phi* ~ g and accept it
with probability::

    min(1, w(phi*) / w(phi)),        w(phi) = p(phi | y) / g(phi)

(the *importance weight*). Because the proposal does not depend on the current
state, every proposal's weight can be computed before the chain runs, for all
chains and sweeps in one batched call; the chain itself is then a loop over
numbers (:func:`independence_chain`). Its stationary law is p(theta | y)
exactly, whatever g is; a g that fits badly only means more rejections (the
acceptance rate is reported, and R-hat and ESS check the rest).

**The proposal** is fitted before the chains start, from the posterior alone:
the mode of log p(phi | y) and the curvature there (a Laplace approximation),
then three rounds of importance sampling that refit a mixture of three t
components to the weighted draws, plus a wide "defensive" component that
keeps the weights bounded in the tails; its draws are discarded. The chains
never feed back into g, so each chain is an ordinary time-homogeneous
Metropolis-Hastings chain.

The priors are those of :class:`teachlmm.gibbs.Prior`, as densities of theta:
the inverse-Wishart or Huang-Wand's marginal density of G (their eq. 3, the
auxiliary a integrated out), inverse-gamma / Jeffreys / uniform-on-sigma for
sigma2, and beta ~ N(0, tau2 I) or flat, integrated out.

Examples
--------
>>> import teachlmm as tl
>>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
>>> post = tl.gibbs.sample(model, draws=2000, warmup=200, chains=4, seed=1, engine="collapsed")
>>> post.draws["G"].shape, bool(0.3 < post.acceptance.mean() < 1)
((4, 2000, 2, 2), True)
"""
import math
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.special

from . import huang_wand, mme
from .design import response_variance
from .errors import TeachLMMError

__all__ = ["Coordinates", "log_prior", "log_marginal_likelihood", "log_posterior", "Proposal", "fit_proposal",
           "independence_chain", "draw_coefficients", "group_factors", "Marginal", "Run", "run"]

DEFENSIVE_SHARE, DEFENSIVE_WIDEN, DEFENSIVE_DF = 0.1, 2.0, 3.0   # the proposal's safety net (see _defensive)
CHUNK = 1024          # proposals per batched call of the mixed-model equations (bounds memory: CHUNK x J x q x q)


# ----------------------------------------------------------------------------
# coordinates: phi (unconstrained) <-> theta = (G, sigma2)
# ----------------------------------------------------------------------------

class Coordinates:
    r"""The map from unconstrained phi in R^d to theta = (G, sigma2): standard deviations and correlations.

    For each block B of G (one for ``(1 + x | g)``, one per term for ``||``),
    of size m, G_B = D Omega D with D = diag(sd_1..sd_m) and Omega a
    correlation matrix. Omega is written through its canonical partial
    correlations z_ik in (-1, 1) (i > k; Lewandowski, Kurowicka & Joe 2009), which
    build the Cholesky factor W of Omega (rows of unit length) row by row::

        W_i0 = z_i0,   W_ik = z_ik sqrt(1 - sum_{l<k} W_il^2)   (0 < k < i),
        W_ii = sqrt(1 - sum_{l<i} W_il^2)

    so that G_B = L L' with L = D W. phi holds, block by block, log sd_k and
    atanh(z_ik) (row by row), then log sigma2. Why not the entries of L?
    When a standard deviation is near 0 the correlation is not identified;
    in these coordinates the posterior is then simply flat-ish in atanh(z)
    (its prior), while the entries of L would narrow into a funnel that no
    single t proposal fits. The log Jacobian (a density on phi is the density
    on theta times it)::

        log det(d theta / d phi) = sum_B [ m log 2 + (m + 1) sum_k log sd_k
                                        + sum_{i>k} (1 + (m - k - 2) / 2) log(1 - z_ik^2) ] + log sigma2

    (k = 0..m-1: G from (sd, Omega) contributes 2^m prod_k sd_k^m, the log on sd
    one more sd_k, Omega from its partial correlations prod (1 - z_ik^2)^((m - k - 2)/2),
    and z = tanh(y) the factor 1 - z^2). A test checks it against a numerical
    determinant.

    Examples
    --------
    >>> import numpy as np
    >>> coords = Coordinates(2, [np.array([0, 1])])        # (1 + x | g): sd_0, sd_1, one correlation
    >>> G, sigma2 = np.array([[4.0, 1.0], [1.0, 1.0]]), 0.5
    >>> phi = coords.phi(G, sigma2)                         # log 2, log 1, atanh(0.5), log 0.5
    >>> np.round(phi, 4).tolist()
    [0.6931, 0.0, 0.5493, -0.6931]
    >>> bool(np.allclose(coords.theta(phi)[0], G))
    True
    """

    def __init__(self, q, blocks):
        self.q = q
        self.blocks = [np.asarray(B) for B in blocks]
        self.sizes = [len(B) for B in self.blocks]
        self.dim = sum(m + m * (m - 1) // 2 for m in self.sizes) + 1

    def _split(self, phi):
        """(log sd (..., m), atanh z (..., m(m-1)/2)) of each block, in order."""
        at, out = 0, []
        for m in self.sizes:
            r = m * (m - 1) // 2
            out.append((phi[..., at:at + m], phi[..., at + m:at + m + r]))
            at += m + r
        return out

    @staticmethod
    def _correlation_factor(z, m):
        """W (..., m, m): the Cholesky factor of the correlation matrix with partial correlations z (row by row)."""
        W = np.zeros(z.shape[:-1] + (m, m))
        W[..., 0, 0] = 1.0
        at = 0
        for i in range(1, m):                           # rows of W: a loop over m <= q, not over groups
            left = np.ones(z.shape[:-1])                # 1 - sum_{l<k} W_il^2
            for k in range(i):
                W[..., i, k] = z[..., at + k] * np.sqrt(left)
                left = left - W[..., i, k] ** 2
            W[..., i, i] = np.sqrt(left)
            at += i
        return W

    def factor(self, phi):
        """L (..., q, q), block-diagonal lower-triangular with G = L L', from phi (..., d)."""
        phi = np.asarray(phi, dtype=float)
        L = np.zeros(phi.shape[:-1] + (self.q, self.q))
        for B, (log_sd, y) in zip(self.blocks, self._split(phi)):
            W = self._correlation_factor(np.tanh(y), len(B))
            L[..., B[:, None], B[None, :]] = np.exp(np.minimum(log_sd, 350.0))[..., :, None] * W    # L = D W
        return L

    def theta(self, phi):
        """(G, sigma2) from phi: G = L L', sigma2 = exp(phi_last)."""
        L = self.factor(phi)
        return L @ np.swapaxes(L, -1, -2), np.exp(np.asarray(phi)[..., -1])

    def phi(self, G, sigma2):
        """phi from a positive-definite (block-diagonal) G and sigma2 > 0 (the inverse of :meth:`theta`)."""
        G = np.asarray(G, dtype=float)
        parts = []
        for B in self.blocks:
            m = len(B)
            GB = G[..., B[:, None], B[None, :]]
            sd = np.sqrt(np.diagonal(GB, axis1=-2, axis2=-1))
            W = np.linalg.cholesky(GB / (sd[..., :, None] * sd[..., None, :]))
            z = []
            for i in range(1, m):
                left = np.ones(sd.shape[:-1])
                for k in range(i):
                    z.append(W[..., i, k] / np.sqrt(left))
                    left = left - W[..., i, k] ** 2
            parts += [np.log(sd)] + ([np.arctanh(np.stack(z, axis=-1))] if z else [])
        return np.concatenate(parts + [np.log(np.asarray(sigma2, dtype=float))[..., None]], axis=-1)

    def log_jacobian(self, phi):
        """log det(d theta / d phi) (see the class docstring)."""
        phi = np.asarray(phi, dtype=float)
        total = phi[..., -1].copy()                                   # d sigma2 / d log sigma2 = sigma2
        for m, (log_sd, y) in zip(self.sizes, self._split(phi)):
            total = total + (m + 1) * log_sd.sum(-1) + m * math.log(2.0)
            at = 0
            for i in range(1, m):
                for k in range(i):
                    z = np.tanh(y[..., at + k])
                    total = total + (1.0 + (m - k - 2) / 2.0) * np.log1p(-z * z)
                at += i
        return total


# ----------------------------------------------------------------------------
# the target: log p(phi | y) up to a constant
# ----------------------------------------------------------------------------

def _log_prior_G(L, blocks, prior):
    r"""log p(G) at G = L L' (L from :meth:`Coordinates.factor`), block by block, up to a constant.

    Inverse-Wishart, block B of size m with nu_B = nu0 - q + m (the marginal
    of the full prior, as :func:`teachlmm.gibbs.draw_G` uses)::

        log p(G_B) = -(nu_B + m + 1)/2 log|G_B| - tr(S0_B G_B^-1) / 2

    Huang-Wand (Huang & Wand 2013, eq. 3; a integrated out), nu = 2::

        log p(G_B) = -(nu + 2m)/2 log|G_B| - (nu + m)/2 sum_k log(nu (G_B^-1)_kk + 1/A_k^2)

    with log|G_B| = 2 sum_k log L_kk and G_B^-1 = L^-T L^-1. The Huang-Wand density is
    :mod:`teachlmm.huang_wand`'s (written there for L, so its Jacobian
    prod_k L_kk^(m - k + 1) is taken off again).
    """
    q = L.shape[-1]
    total = 0.0
    for B in blocks:                                     # one or a few blocks: never a loop over groups
        m = len(B)
        LB = L[..., B[:, None], B[None, :]]
        if prior.A is not None:                           # huang_wand's density of L, less G = L L''s Jacobian
            jacobian = np.log(np.diagonal(LB, axis1=-2, axis2=-1)) @ (m - np.arange(m))   # sum_k (m - k + 1) log L_kk
            total = total + huang_wand._log_density_L(LB, prior.A[B], derivatives=False) - jacobian
        else:
            W = mme.lower_inverse(LB)                     # L^-1
            logdet = 2.0 * np.log(np.diagonal(LB, axis1=-2, axis2=-1)).sum(-1)      # log|G_B|
            nu_B = prior.nu0 - q + m
            S = prior.S0[np.ix_(B, B)]
            trace = (W * (W @ S)).sum((-1, -2))           # tr(S G^-1) = tr(L^-1 S L^-T)
            total = total - (nu_B + m + 1) / 2 * logdet - trace / 2
    return total


def _log_prior_sigma2(sigma2, prior):
    """log p(sigma2) up to a constant: InvGamma(a0, b0) (Jeffreys: a0 = b0 = 0), or sigma ~ U(0, sigma_max)."""
    if prior.sigma_max is not None:                      # p(sigma2) = p(sigma) / (2 sigma) ~ sigma2^-1/2 below sigma_max^2
        return np.where(sigma2 < prior.sigma_max ** 2, -0.5 * np.log(sigma2), -np.inf)
    return -(prior.a0 + 1.0) * np.log(sigma2) - prior.b0 / sigma2


def log_prior(L, sigma2, blocks, prior):
    """log p(G) + log p(sigma2) up to a constant (beta's prior is integrated out in :func:`log_marginal_likelihood`).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> prior = tl.gibbs.Prior(nu0=2, S0=[[0.1]], a0=1, b0=1).resolve(m)
    >>> float(log_prior(np.array([[1.0]]), 1.0, m.blocks, prior))   # -(nu0 + 2)/2 log G - S0/(2G) - 2 log s2 - 1/s2
    -1.05
    """
    return _log_prior_G(L, blocks, prior) + _log_prior_sigma2(sigma2, prior)


class Marginal(NamedTuple):
    """log p(y | theta) and the normal posterior of beta given theta, batched over leading axes.

    Attributes
    ----------
    loglik : (...) log p(y | theta), beta integrated out, up to a constant.
    beta_hat : (..., p) the posterior mean of beta given theta.
    R_inv : (..., p, p) R^-1 with A + P = R R'; beta | theta, y ~ N(beta_hat, sigma2 R^-T R^-1).
    """

    loglik: np.ndarray
    beta_hat: np.ndarray
    R_inv: np.ndarray


def _augmented(stats):
    """The data the target needs, for the augmented columns [X y]: O and [X y]'[X y].

    O_j[a, b] = (Z_j'[X_j y_j])[a, :]' (Z_j'[X_j y_j])[b, :], flattened to (J q q, (p+1)^2),
    so that sum_j [X_j y_j]'Z_j M_j^-1 Z_j'[X_j y_j] = vec(M^-1) @ O: one matrix product
    for every group and every proposal.
    """
    ZtW = np.concatenate([stats.ZtX, stats.Zty[:, :, None]], axis=2)          # (J, q, p + 1)
    J, q, k = ZtW.shape
    O = (ZtW[:, :, None, :, None] * ZtW[:, None, :, None, :]).reshape(J * q * q, k * k)
    WtW = np.empty((k, k))
    p = k - 1
    WtW[:p, :p], WtW[:p, p], WtW[p, :p], WtW[p, p] = (stats.XtX_total, stats.Xty_total, stats.Xty_total,
                                                      stats.yty_total)
    return O, WtW


def log_marginal_likelihood(stats, L, sigma2, tau2, augmented=None):
    r"""log p(y | G, sigma2) with beta integrated out, up to a constant; batched over leading axes.

    With G = L L', the relative factor T = L / sigma (so G = sigma2 T T'),
    M~_j = T'Z_j'Z_j T + I and M_j^-1 = T M~_j^-1 T' (:mod:`teachlmm.mme`), the
    identity V~_j^-1 = I - Z_j M_j^-1 Z_j' (V = sigma2 V~) gives, for the
    augmented data [X y], every quadratic form in V~^-1 at once::

        S = [X y]'V~^-1[X y] = [X y]'[X y] - sum_j [X_j y_j]'Z_j M_j^-1 Z_j'[X_j y_j]

    (the sum is one matrix product over all groups: see ``_augmented``)
    whose blocks are A = X'V~^-1 X, c = X'V~^-1 y and y'V~^-1 y. With the prior
    precision P = (sigma2 / tau2) I (0 for a flat prior) and A + P = R R'::

        beta_hat = (A + P)^-1 c
        -2 log p(y | theta) = (n - p) log sigma2 + sum_j log|M~_j| + log|A + P|
                              + (y'V~^-1 y - c'(A + P)^-1 c) / sigma2              + const

    For a flat prior this is the REML criterion (:func:`teachlmm.mme.loglik`
    with ``reml=True``, up to a constant). No G^-1 is needed: a singular G
    (L with a zero on its diagonal) is allowed.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> G, sigma2 = np.array([[0.1]]), 0.57
    >>> ours = log_marginal_likelihood(m.stats, np.sqrt(G), sigma2, np.inf).loglik
    >>> reml = tl.mme.loglik(m.stats, G, sigma2, reml=True)
    >>> bool(np.isclose(ours - reml, (m.n - m.p) / 2 * np.log(2 * np.pi)))    # they differ by a constant
    True
    """
    O, WtW = _augmented(stats) if augmented is None else augmented
    p, q = WtW.shape[0] - 1, L.shape[-1]
    T = L / np.sqrt(sigma2)[..., None, None]                            # G = sigma2 T T'
    M_tilde = mme.congruence(stats.ZtZ, np.swapaxes(T, -1, -2)) + np.eye(q)    # M~_j = T'Z_j'Z_j T + I
    M_tilde_inv, logdet_M = mme.inv_logdet(M_tilde)
    Minv = mme.congruence(M_tilde_inv, T)                               # M_j^-1 = T M~_j^-1 T'
    flat = Minv.reshape(Minv.shape[:-3] + (-1,))
    S = WtW - (flat @ O).reshape(flat.shape[:-1] + (p + 1, p + 1))    # [X y]'V~^-1[X y]
    A, c, yVy = S[..., :p, :p], S[..., :p, p], S[..., p, p]
    precision = _beta_precision(tau2, sigma2, stats)
    if precision is not None:
        A = A + precision
    R_inv = np.linalg.inv(np.linalg.cholesky(A))                        # A + P = R R'
    Rc = (R_inv @ c[..., None])[..., 0]                                  # R^-1 c
    beta_hat = (np.swapaxes(R_inv, -1, -2) @ Rc[..., None])[..., 0]
    logdet = logdet_M.sum(-1) - 2 * np.log(np.diagonal(R_inv, axis1=-2, axis2=-1)).sum(-1)  # + log|A + P|
    dev = (stats.n_total - p) * np.log(sigma2) + logdet + (yVy - (Rc * Rc).sum(-1)) / sigma2
    return Marginal(-0.5 * dev, beta_hat, R_inv)


def group_factors(stats, L, sigma2):
    """W_j = C_j^-1 T' and log|M~_j| for every group, where T = L / sigma and M~_j = T'Z_j'Z_j T + I = C_j C_j'.

    W_j'W_j = T M~_j^-1 T' = M_j^-1 (:mod:`teachlmm.mme`), so W_j is a square root of
    Var(b_j | beta, theta, y) / sigma2. Shapes: L (..., q, q), sigma2 (...); W (..., J, q, q).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> G, sigma2 = np.array([[0.1, 0.0], [0.0, 0.05]]), 0.57
    >>> W, logdet = group_factors(m.stats, np.linalg.cholesky(G), sigma2)
    >>> bool(np.allclose(W.swapaxes(-1, -2) @ W, tl.mme.solve(m.stats, G, sigma2).Minv))
    True
    """
    q = L.shape[-1]
    T = L / np.sqrt(sigma2)[..., None, None]                            # G = sigma2 T T'
    M_tilde = mme.congruence(stats.ZtZ, np.swapaxes(T, -1, -2)) + np.eye(q)    # T'Z_j'Z_j T + I
    C = mme.cholesky(M_tilde)
    W = mme.lower_inverse(C) @ np.swapaxes(T, -1, -2)[..., None, :, :]  # W_j = C_j^-1 T'
    return W, 2 * np.log(np.diagonal(C, axis1=-2, axis2=-1)).sum(-1)


def _beta_precision(tau2, sigma2, stats):
    """P = (sigma2 / tau2) I, or None for a flat prior (tau2 = inf everywhere)."""
    tau2 = np.broadcast_to(np.asarray(tau2, dtype=float), (stats.XtX_total.shape[0],))
    if np.all(np.isinf(tau2)):
        return None
    return np.asarray(sigma2)[..., None, None] * np.diag(1.0 / tau2)


def log_posterior(phi, model, prior, coords, keep=False):
    """log p(phi | y) up to a constant, for a stack of points phi (K, d); -inf outside the prior's support.

    log p(phi | y) = log p(y | theta) + log p(theta) + log det(d theta / d phi), computed in chunks
    of CHUNK points (one batched call each). With ``keep``, also beta's posterior given each
    theta: ``(log p, beta_hat (K, p), R_inv (K, p, p))`` (see :class:`Marginal`).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> prior = tl.gibbs.Prior().resolve(m)
    >>> coords = Coordinates(m.q, m.blocks)
    >>> phi = coords.phi(np.array([[[0.1]], [[0.2]]]), np.array([0.57, 0.57]))    # two points
    >>> log_posterior(phi, m, prior, coords).shape
    (2,)
    """
    phi = np.atleast_2d(np.asarray(phi, dtype=float))
    out = np.empty(len(phi))
    p = model.p
    beta_hat, R_inv = (np.empty((len(phi), p)), np.empty((len(phi), p, p))) if keep else (None, None)
    augmented = _augmented(model.stats)
    for start in range(0, len(phi), CHUNK):           # chunks of proposals (memory), not groups
        part, sl = phi[start:start + CHUNK], slice(start, start + CHUNK)
        with np.errstate(all="ignore"):
            L, sigma2 = coords.factor(part), np.exp(part[:, -1])
        diagonal = np.diagonal(L, axis1=-2, axis2=-1)
        usable = np.all(np.isfinite(L), axis=(-1, -2)) & np.all(diagonal > 1e-150, axis=-1) & (sigma2 > 1e-300) \
            & np.isfinite(sigma2)                     # else an extreme proposal: numerically 0 or inf (density 0)
        L[~usable], sigma2[~usable] = np.eye(model.q), 1.0
        with np.errstate(all="ignore"):
            try:
                marginal = log_marginal_likelihood(model.stats, L, sigma2, prior.tau2, augmented)
            except np.linalg.LinAlgError:             # A + P not positive definite at some point: one at a time
                marginal = _one_by_one(model.stats, L, sigma2, prior.tau2, augmented)
            value = marginal.loglik + log_prior(L, sigma2, model.blocks, prior) + coords.log_jacobian(part)
        out[sl] = np.where(np.isfinite(value) & usable, value, -np.inf)
        if keep:
            beta_hat[sl], R_inv[sl] = marginal.beta_hat, marginal.R_inv
    return (out, beta_hat, R_inv) if keep else out


def _one_by_one(stats, L, sigma2, tau2, augmented):
    """:func:`log_marginal_likelihood` point by point, -inf where it fails (rare: extreme proposals)."""
    p = augmented[1].shape[0] - 1
    out = Marginal(np.full(len(L), -np.inf), np.zeros((len(L), p)), np.tile(np.eye(p), (len(L), 1, 1)))
    for k in range(len(L)):
        try:
            one = log_marginal_likelihood(stats, L[k], sigma2[k], tau2, augmented)
        except np.linalg.LinAlgError:
            continue
        out.loglik[k], out.beta_hat[k], out.R_inv[k] = one
    return out


# ----------------------------------------------------------------------------
# the proposal: a multivariate t fitted to the posterior
# ----------------------------------------------------------------------------

class Proposal(NamedTuple):
    """A mixture of multivariate t distributions on R^d: sum_k weights_k t_df(means_k, chols_k chols_k').

    One component would be the textbook's t proposal; two or three let it
    follow a skewed posterior (a variance near 0 gives its log a long tail).
    The last component is a wide, heavy-tailed "defensive" one (``_defensive``).

    Examples
    --------
    >>> import numpy as np
    >>> g = Proposal(np.array([1.0]), np.zeros((1, 2)), np.eye(2)[None], np.array([4.0]))
    >>> g.draw(np.random.default_rng(0), 3).shape
    (3, 2)
    >>> round(float(g.log_density(np.zeros(2))), 4)          # log t_4 density at its centre: log(1 / (2 pi))
    -1.8379
    """

    weights: np.ndarray    # (K,)
    means: np.ndarray      # (K, d)
    chols: np.ndarray      # (K, d, d), lower triangular
    dfs: np.ndarray        # (K,) degrees of freedom

    def draw(self, rng, n):
        """n draws: a component by its weight, then mean + C z sqrt(df / chi2)."""
        d = self.means.shape[1]
        k = np.minimum(np.searchsorted(np.cumsum(self.weights), rng.random(n) * self.weights.sum()),
                       len(self.weights) - 1)
        z, gamma = rng.standard_normal((n, d)), rng.standard_gamma(self.dfs[k] / 2)     # chi2 = 2 gamma
        return self.means[k] + (self.chols[k] @ z[:, :, None])[:, :, 0] * np.sqrt(self.dfs[k] / (2 * gamma))[:, None]

    def component_log_densities(self, phi):
        """log t_df(phi | mean_k, C_k C_k') for every component, (n, K)."""
        phi = np.asarray(phi, dtype=float).reshape(-1, self.means.shape[1])
        d = self.means.shape[1]
        out = np.empty((len(phi), len(self.weights)))
        for k, (mean, C, nu) in enumerate(zip(self.means, self.chols, self.dfs)):   # K components, not groups
            const = scipy.special.gammaln((nu + d) / 2) - scipy.special.gammaln(nu / 2) - d / 2 * math.log(nu * math.pi)
            u = np.linalg.solve(C, (phi - mean).T).T                       # C^-1 (phi - mean)
            out[:, k] = const - np.log(np.diag(C)).sum() - (nu + d) / 2 * np.log1p((u * u).sum(-1) / nu)
        return out

    def log_density(self, phi):
        """log g(phi) = log sum_k weights_k t_df(phi | mean_k, C_k C_k')."""
        shape = np.shape(phi)[:-1]
        return scipy.special.logsumexp(self.component_log_densities(phi) + np.log(self.weights), axis=1).reshape(shape)


def _refit(g, phi, w, df, iterations=20):
    """Weighted EM for the mixture's weights, means and scales, given draws phi with importance weights w.

    E-step: r_ik = weights_k t_k(phi_i) / g(phi_i); M-step: the weighted
    (w_i r_ik) share, mean and covariance of each component. (The t
    components are fitted by their first two moments: the proposal need not
    be the best fit, only a good one; any proposal leaves the chain exact.)
    """
    weights, means, chols = g.weights, g.means, g.chols
    centred = phi - w @ phi
    floor = 0.01 * (centred * w[:, None]).T @ centred              # keeps a component from collapsing
    for _ in range(iterations):
        logr = Proposal(weights, means, chols, np.full(len(weights), df)).component_log_densities(phi) + np.log(weights)
        r = np.exp(logr - scipy.special.logsumexp(logr, axis=1, keepdims=True)) * w[:, None]
        mass = r.sum(0)
        if np.any(mass < 1e-3 * mass.sum()):               # a component lost its draws: drop it
            keep = mass >= 1e-3 * mass.sum()
            weights, means, chols, r, mass = weights[keep], means[keep], chols[keep], r[:, keep], mass[keep]
        weights, means = mass / mass.sum(), (r.T @ phi) / mass[:, None]
        new = []
        for k in range(len(weights)):
            centred = phi - means[k]
            cov = (centred * r[:, k:k + 1]).T @ centred / mass[k]
            new.append(np.linalg.cholesky(cov + floor))
        chols = np.array(new)
    return Proposal(weights, means, chols, np.full(len(weights), float(df)))


def _defensive(g, phi, w, share=DEFENSIVE_SHARE, widen=DEFENSIVE_WIDEN, df=DEFENSIVE_DF):
    """g with a defensive component (Hesterberg 1995): a wide, heavy-tailed t over the whole posterior.

    The component t_3(mean, (2 C)(2 C)') with C C' the posterior's covariance (estimated from the
    weighted draws) gets weight 0.1. It keeps the weights w = p / g bounded where the fitted
    components' tails are too light, which is what makes an independence chain stick.
    """
    mean = w @ phi
    centred = phi - mean
    C = np.linalg.cholesky((centred * w[:, None]).T @ centred)
    return Proposal(np.append((1 - share) * g.weights, share), np.vstack([g.means, mean]),
                    np.concatenate([g.chols, widen * C[None]]), np.append(g.dfs, df))


def _start(model, prior):
    """A rough start for the mode search: sigma2 = var(y) / 2 (below sigma_max^2 / 4) and G = diag(var(y) / (2 m_k))."""
    v = response_variance(model)
    m = np.diag(model.stats.ZtZ.sum(0)) / model.n
    m = np.where(m > 0, m, 1.0)
    sigma2 = v / 2 if prior.sigma_max is None else min(v / 2, prior.sigma_max ** 2 / 4)
    return np.diag(v / (2 * m)), sigma2


def _mode(f, x0):
    """argmax f by BFGS with central-difference gradients (every gradient is one batched call of f)."""
    d = len(x0)
    h = 1e-5

    def negative(x):
        value = -f(x[None])[0]
        return value if np.isfinite(value) else 1e300          # outside the support: a wall, not a NaN

    def gradient(x):
        pts = x + h * np.vstack([np.eye(d), -np.eye(d)])
        v = f(pts)
        with np.errstate(invalid="ignore"):
            slope = -(v[:d] - v[d:]) / (2 * h)
        return np.where(np.isfinite(slope), slope, 0.0)         # at the edge of the support: no step across it

    if not np.isfinite(f(x0[None])[0]):
        raise TeachLMMError("the collapsed sampler's start point has zero posterior density (is sigma_max below the "
                            "residual spread?); use engine='fast'")
    res = scipy.optimize.minimize(negative, x0, jac=gradient, method="BFGS", options={"gtol": 1e-6, "maxiter": 500})
    return res.x, res.hess_inv


def _laplace_covariance(f, mode, fallback):
    """-H^-1 at the mode (Laplace), or, where that fails (a mode on the edge of the prior's support,
    e.g. sigma at sigma_max, where H is not finite), BFGS's own estimate of it, or 0.25 I.
    The importance-sampling rounds of :func:`fit_proposal` correct whichever start this gives."""
    d = len(mode)
    with np.errstate(all="ignore"):
        H = _hessian(f, mode)
    for candidate in (lambda: np.linalg.inv(-H), lambda: np.asarray(fallback, dtype=float)):
        try:
            cov = candidate()
            if np.all(np.isfinite(cov)):
                np.linalg.cholesky(cov)                 # positive definite?
                return cov
        except np.linalg.LinAlgError:
            pass
    return 0.25 * np.eye(d)


def _hessian(f, x, h=1e-3):
    """The Hessian of f at x by central differences, all 2 d^2 + 1 points in one batched call."""
    d = len(x)
    E = h * np.eye(d)
    pts = [x]
    for i in range(d):
        for j in range(d):
            pts += [x + E[i] + E[j], x + E[i] - E[j], x - E[i] + E[j], x - E[i] - E[j]]
    v = f(np.array(pts))
    H = np.empty((d, d))
    k = 1
    for i in range(d):
        for j in range(d):
            H[i, j] = (v[k] - v[k + 1] - v[k + 2] + v[k + 3]) / (4 * h * h)
            k += 4
    return (H + H.T) / 2


def fit_proposal(model, prior, coords, rng, df=8.0, components=3, rounds=3, pilot=3000):
    """A proposal for phi: Laplace's approximation, then rounds of importance sampling that refit it.

    1. The mode phi_hat of log p(phi | y) and the Hessian H there (Laplace's
       approximation N(phi_hat, -H^-1)); the start: ``components`` t_df
       components spread along its longest axis.
    2. ``rounds`` times: ``pilot`` draws phi_i from the proposal, importance
       weights w_i = p(phi_i | y) / g(phi_i), normalised, and the mixture
       refitted to the weighted draws (:func:`_refit`). This corrects the skew
       that the Laplace approximation misses.

    The pilot draws are discarded: the chains use fresh proposals, and g never
    changes while they run.

    Returns
    -------
    Proposal, and the importance-sampling efficiency of the last round,
    (sum w)^2 / (n sum w^2) in (0, 1]: near 1, g is close to the posterior.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> coords = Coordinates(m.q, m.blocks)
    >>> g, efficiency = fit_proposal(m, tl.gibbs.Prior().resolve(m), coords, np.random.default_rng(1))
    >>> g.means.shape[1], bool(efficiency > 0.5)         # phi = (log sd, log sigma2); a close fit
    (2, True)
    """
    f = lambda x: log_posterior(x, model, prior, coords)        # noqa: E731
    G0, s0 = _start(model, prior)
    mode, bfgs_cov = _mode(f, coords.phi(G0, s0))
    cov = _laplace_covariance(f, mode, bfgs_cov)
    C = np.linalg.cholesky(cov)
    values, vectors = np.linalg.eigh(cov)
    axis = vectors[:, -1] * np.sqrt(values[-1])                 # the longest axis of the Laplace ellipsoid
    offsets = np.linspace(-1.0, 1.0, components) if components > 1 else np.zeros(1)
    g = Proposal(np.full(components, 1.0 / components), mode + offsets[:, None] * axis,
                 np.repeat((C * (0.7 if components > 1 else 1.0))[None], components, axis=0),
                 np.full(components, float(df)))
    g = Proposal(np.append(0.9 * g.weights, 0.1), np.vstack([g.means, mode]), np.concatenate([g.chols, 2 * C[None]]),
                 np.append(g.dfs, DEFENSIVE_DF))
    efficiency = 0.0
    for _ in range(rounds):
        phi = g.draw(rng, pilot)
        logw = f(phi) - g.log_density(phi)
        if not np.any(np.isfinite(logw)):
            break
        w = np.exp(logw - logw.max())
        w /= w.sum()
        efficiency = 1.0 / (pilot * (w * w).sum())
        try:
            fitted = _refit(Proposal(g.weights[:-1] / g.weights[:-1].sum(), g.means[:-1], g.chols[:-1], g.dfs[:-1]),
                            phi, w, df)
            g = _defensive(fitted, phi, w)
        except np.linalg.LinAlgError:
            break
    return g, efficiency


# ----------------------------------------------------------------------------
# the chain and the exact draws given theta
# ----------------------------------------------------------------------------

def independence_chain(logw, log_u, start=0):
    """Indices of the states of an independence Metropolis-Hastings chain, given every proposal's weight.

    ``logw[i]`` is log w of proposal i (i = 0 is the start); at step i the chain
    moves to proposal i when log u_i < logw[i] - logw[current], else stays.
    Returns the index of the state after every step (length len(logw) - 1) and
    the number of accepted moves.

    Examples
    --------
    >>> import numpy as np
    >>> index, accepted = independence_chain(np.array([0.0, -1.0, 2.0]), np.log([0.5, 0.9]))
    >>> index.tolist(), accepted       # step 1: u = 0.5 > e^-1, stay at 0; step 2: w rises, move to 2
    ([0, 2], 1)
    """
    current, w_current = start, float(logw[start])
    index = np.empty(len(logw) - 1, dtype=np.intp)
    accepted = 0
    for i, (w, lu) in enumerate(zip(logw[1:].tolist(), log_u.tolist()), start=1):
        if lu < w - w_current:
            current, w_current = i, w
            accepted += 1
        index[i - 1] = current
    return index, accepted


def draw_coefficients(stats, L, sigma2, beta_hat, R_inv, z_beta, z_b=None):
    """beta | theta, y and (optionally) b | beta, theta, y, exactly, batched over draws.

    With beta_hat and R^-1 from :func:`log_marginal_likelihood` and W_j from
    :func:`group_factors` (W_j'W_j = M_j^-1)::

        beta | theta, y       ~ N(beta_hat, sigma2 R^-T R^-1):   beta = beta_hat + sigma R^-T z
        b_j  | beta, theta, y ~ N(M_j^-1 Z_j'(y_j - X_j beta), sigma2 M_j^-1):
                                  b_j  = W_j'(W_j Z_j'(y_j - X_j beta) + sigma z_j)

    z_beta (..., p) and z_b (..., J, q) are standard normals.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> L, sigma2 = np.array([[0.3]]), 0.57
    >>> marg = log_marginal_likelihood(m.stats, L, sigma2, np.inf)
    >>> rng = np.random.default_rng(0)
    >>> beta, b = draw_coefficients(m.stats, L, sigma2, marg.beta_hat, marg.R_inv,
    ...                             rng.standard_normal(2), rng.standard_normal((m.J, 1)))
    >>> beta.shape, b.shape
    ((2,), (85, 1))
    """
    sigma = np.sqrt(sigma2)
    beta = beta_hat + sigma[..., None] * (np.swapaxes(R_inv, -1, -2) @ z_beta[..., None])[..., 0]
    if z_b is None:
        return beta, None
    W, _ = group_factors(stats, L, sigma2)
    Ztr = mme.residual_moments(stats, beta)[1]                          # Z_j'(y_j - X_j beta)
    inner = (W @ Ztr[..., None])[..., 0] + sigma[..., None, None] * z_b
    return beta, (np.swapaxes(W, -1, -2) @ inner[..., None])[..., 0]


class Run(NamedTuple):
    """What :func:`run` returns: the draws (as ``gibbs.sample`` stores them) and how the chains went."""

    draws: dict
    acceptance: np.ndarray      # (chains,) share of accepted proposals after warm-up
    proposal: Proposal
    efficiency: float           # importance-sampling efficiency of the proposal (see fit_proposal)


def _start_inside(phi, logw, beta_hat, R_inv):
    """Start every chain at a point of positive density: where its first proposal has none (outside the
    prior's support), at its first proposal that has (any start is allowed; one of density 0 never moves)."""
    for c in np.flatnonzero(~np.isfinite(logw[:, 0])):
        inside = np.flatnonzero(np.isfinite(logw[c]))
        if not inside.size:
            raise TeachLMMError("the collapsed sampler's proposal missed the posterior entirely (every proposal has "
                                "zero posterior density); use engine='fast' (the Gibbs sweep)")
        k = inside[0]
        phi[c, 0], logw[c, 0], beta_hat[c, 0], R_inv[c, 0] = phi[c, k], logw[c, k], beta_hat[c, k], R_inv[c, k]


def run(model, prior, draws, warmup, chains, seed_sequence, keep_b=True, thin=1):
    """Run ``chains`` collapsed chains: ``warmup + draws * thin`` independence-MH steps each, then exact (beta, b).

    ``prior`` is resolved for ``model``; ``seed_sequence`` a numpy SeedSequence.
    Its first child fits the proposal; child k + 1 drives chain k (so chain k
    does not depend on how many chains run beside it).

    Users call it through ``tl.gibbs.sample(model, engine="collapsed")``,
    which adds the centring of large-mean columns, the Posterior and the
    convergence check.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> out = run(m, tl.gibbs.Prior().resolve(m), draws=500, warmup=100, chains=2,
    ...           seed_sequence=np.random.SeedSequence(1), keep_b=False)
    >>> out.draws["G"].shape, bool(out.acceptance.min() > 0.5)
    ((2, 500, 1, 1), True)
    """
    coords = Coordinates(model.q, model.blocks)
    children = seed_sequence.spawn(chains + 1)
    g, efficiency = fit_proposal(model, prior, coords, np.random.default_rng(children[0]))
    total, d = warmup + draws * thin, coords.dim
    rngs = [np.random.default_rng(child) for child in children[1:]]
    phi = np.stack([g.draw(r, total + 1) for r in rngs])
    log_u = np.stack([np.log(r.random(total)) for r in rngs])
    logp, beta_hat, R_inv = log_posterior(phi.reshape(-1, d), model, prior, coords, keep=True)
    logw = logp.reshape(chains, total + 1) - g.log_density(phi)      # every proposal's weight, in one pass
    beta_hat, R_inv = beta_hat.reshape(chains, total + 1, -1), R_inv.reshape(chains, total + 1, model.p, model.p)
    _start_inside(phi, logw, beta_hat, R_inv)
    beta_hat, R_inv = beta_hat.reshape(-1, model.p), R_inv.reshape(-1, model.p, model.p)
    kept = np.arange(warmup + thin - 1, total, thin)[:draws]
    index, acceptance = np.empty((chains, draws), dtype=np.intp), np.empty(chains)
    for c in range(chains):                                         # a loop over the (few) chains
        path, _ = independence_chain(logw[c], log_u[c])
        index[c] = path[kept]
        acceptance[c] = np.mean(np.diff(path[warmup - 1:] if warmup else np.r_[0, path]) != 0)
    flat = (np.arange(chains)[:, None] * (total + 1) + index).ravel()      # the kept states, all chains
    L, sigma2 = coords.factor(phi.reshape(-1, d)[flat]), np.exp(phi.reshape(-1, d)[flat, -1])
    z_beta = np.concatenate([r.standard_normal((draws, model.p)) for r in rngs])
    z_b = np.concatenate([r.standard_normal((draws, model.J, model.q)) for r in rngs]) if keep_b else None
    beta, b = np.empty((chains * draws, model.p)), (np.empty((chains * draws, model.J, model.q)) if keep_b else None)
    for start in range(0, chains * draws, CHUNK):                      # chunks of draws (memory)
        sl = slice(start, start + CHUNK)
        beta[sl], b_part = draw_coefficients(model.stats, L[sl], sigma2[sl], beta_hat[flat[sl]], R_inv[flat[sl]],
                                             z_beta[sl], z_b[sl] if keep_b else None)
        if keep_b:
            b[sl] = b_part
    out = {"beta": beta.reshape(chains, draws, -1), "G": (L @ np.swapaxes(L, -1, -2)).reshape(chains, draws, model.q, model.q),
           "sigma2": sigma2.reshape(chains, draws)}
    if keep_b:
        out["b"] = b.reshape(chains, draws, model.J, model.q)
    return Run(out, acceptance, g, efficiency)
