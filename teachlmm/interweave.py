r"""Interweaving for the Gibbs sampler: G redrawn through the non-centred random effects.

Why. In the centred sweep of :mod:`teachlmm.gibbs` G is drawn given the random
effects b_j. When most groups say little about their own effect (radon: most
counties have 0-2 first-floor houses), b_j is drawn mostly from N(0, G), and G
from those b_j: G and b follow each other in a slow random walk (ESS about 8 %
of the draws for the slope variance on radon M3).

The cure (Yu & Meng 2011, "ancillarity-sufficiency interweaving", ASIS). Write
G = L L' with L lower triangular and the *non-centred* random effects::

    u_j = L^-1 b_j,        u_j ~ N(0, I_q)   whatever G is.

Given u the model is an ordinary Gaussian regression in (beta, L)::

    y_j = X_j beta + Z_j L u_j + eps_j = X_j beta + sum_{k >= l} L_kl (z_jk u_jl) + eps_j

(one feature z_k u_jl per entry L_kl of the lower triangle), so the data now
speak to L directly, and the slow direction of the centred sweep is fast
here. ASIS inserts one such draw after the centred G-draw::

    (beta, b) | G, sigma2;   G | b;   [u = L^-1 b;  (beta, L) | u, sigma2;  b = L u, G = L L'];   sigma2 | beta, b

Every step leaves the posterior invariant, so the sweep does too.

The prior on L. The signs of L's diagonal are left free: (L D, D u) with D a
diagonal of +-1 gives the same (G, b), and u_j ~ N(0, I) is sign-symmetric, so
the chain on (beta, G, b, sigma2) does not depend on which sign is used. For
G ~ InvWishart(nu, S) on a block of size m the map L -> G = L L' has Jacobian
``2^m prod_k |L_kk|^(m - k + 1)`` (k = 1..m), so::

    log p(L) = log p_IW(L L') + sum_k (m - k + 1) log|L_kk| + const
             = -sum_k (nu + k) log|L_kk| - tr(S L^-T L^-1) / 2 + const.

For ``(1 + x || g)`` L is block diagonal and log p(L) is the sum over blocks.
Under the Huang-Wand prior (:mod:`teachlmm.huang_wand`) p(G) is its marginal
density, the auxiliary a integrated out (the sweep draws a afresh before each
G-draw, so the step need not condition on it).

The step is not conjugate (the prior on L is not Gaussian): it is an
independence Metropolis-Hastings step whose proposal is the Gaussian
likelihood of (beta, L) moved one Newton step towards the posterior (a
Laplace approximation; :func:`laplace_proposal`), accepted with the usual
ratio (:func:`metropolis_hastings`). The proposal depends only on (u, sigma2),
which the step does not change, so the ratio is exact.

Everything is batched over chains (axis 0), like the sweep's state.

The same step, fast. What is written here with general matrix code costs
about twice the rest of a sweep for q <= 2, nearly all of it numpy's overhead
per call on tiny arrays. ``Interweaving(model, prior, fast=True)`` runs
``teachlmm._interweave_fast`` instead for q <= 2: the same formulas with
the per-group algebra and the prior's derivatives written out (one matrix
product for every cross-product of the regression, one table of monomials for
the derivatives), on the same noise; its output equals this module's to
rounding (1e-10 in the tests), and any special case (a singular G or P) is
handed back to the code here.
"""
from typing import NamedTuple

import numpy as np
import scipy.special

from . import huang_wand
from ._interweave_fast import FastInterweave
from .errors import TeachLMMError

NEWTON_STEPS = 1                # Newton steps of the Laplace proposal (see laplace_proposal, Interweaving)
HUANG_WAND_NEWTON_STEPS = 3     # the same under the Huang-Wand prior

__all__ = ["lower_entries", "prior_blocks", "noncentred", "PriorOnL", "log_prior_L", "Regression", "regression",
           "statistics", "laplace_proposal", "metropolis_hastings", "interweave", "noise_size", "draw_noise",
           "Interweaving"]


def lower_entries(blocks):
    """The free entries (k, l) of L: the lower triangle of each block, row by row.

    Examples
    --------
    >>> import numpy as np
    >>> lower_entries([np.arange(2)])
    [(0, 0), (1, 0), (1, 1)]
    >>> lower_entries([np.array([0]), np.array([1])])          # (1 + x || g)
    [(0, 0), (1, 1)]
    """
    return [(int(k), int(l)) for block in blocks for i, k in enumerate(block) for l in block[:i + 1]]


def prior_blocks(prior, blocks):
    """(block, nu_B, S_B) of the inverse-Wishart on each diagonal block of G, as :func:`teachlmm.gibbs.draw_G` uses it.

    One block: InvWishart(nu0, S0). Uncorrelated blocks: the marginal of the
    full prior, InvWishart(nu0 - q + q_B, S0[B, B]). ``prior`` may be the
    inverse-Wishart of G given the Huang-Wand a (:func:`teachlmm.huang_wand.G_prior_given_a`),
    with one S0 per chain.
    """
    q = prior.S0.shape[-1]
    return [(block, float(prior.nu0 - q + len(block)), prior.S0[(Ellipsis,) + np.ix_(block, block)])
            for block in blocks]


def noncentred(b, L):
    """u_j = L^-1 b_j for every group (and chain): b (..., J, q), L (..., q, q) -> u (..., J, q)."""
    return b @ np.swapaxes(np.linalg.inv(L), -1, -2)


# ----------------------------------------------------------------------------
# the prior on L, its gradient and Hessian
# ----------------------------------------------------------------------------

def _log_prior_value(L, nu, S):
    """f(L) = -sum_k (nu + k) log|L_kk| - tr(S L^-T L^-1) / 2 for one block (see :func:`_log_prior_block`)."""
    M = np.linalg.inv(L)
    d = np.abs(np.diagonal(L, axis1=-2, axis2=-1))
    k = nu + np.arange(1, L.shape[-1] + 1)
    return -(np.log(d) @ k) - 0.5 * np.einsum("...ab,...bc,...ac->...", M, S, M)   # tr(M S M') = tr(S G^-1)


def _log_prior_block(L, nu, S):
    r"""log p(L) for one block, with its gradient and Hessian in the entries of L (full m x m arrays).

    With M = L^-1 (so G^-1 = M'M)::

        f(L)            = -sum_k (nu + k) log|L_kk| - tr(S M'M) / 2                 (k = 1..m)
        df/dL_ab        = (M'M S M')_ab - [a = b] (nu + a) / L_aa
        d2f/dL_ab dL_cd = -(M_da (MSM'M)_bc + (MSM')_db (M'M)_ac + (MSM'M)_da M_bc)
                          + [a = b = c = d] (nu + a) / L_aa^2

    (from dM = -M dL M: d tr(S M'M) / 2 = -tr(M S M' M dL), differentiated once more;
    a, b, c, d and k counted from 1 here, so the code's 0-based k adds 1).
    Shapes: L (C, m, m), S (m, m) or (C, m, m); returns f (C,), grad (C, m, m), hess (C, m, m, m, m).
    """
    m = L.shape[-1]
    M = np.linalg.inv(L)
    Mt = np.swapaxes(M, -1, -2)
    MSMt = M @ S @ Mt                                           # M S M'
    B = MSMt @ M                                                # M S M' M
    N = Mt @ M                                                  # M'M = G^-1
    diagonal = np.diagonal(L, axis1=-2, axis2=-1)
    k = nu + np.arange(1, m + 1)                                # nu + k
    f = -(np.log(np.abs(diagonal)) @ k) - 0.5 * np.trace(MSMt, axis1=-2, axis2=-1)
    grad = np.swapaxes(B, -1, -2).copy()                        # (M'M S M')_ab = (M S M' M)_ba
    diag = np.arange(m)
    grad[..., diag, diag] -= k / diagonal
    hess = -(np.einsum("...da,...bc->...abcd", M, B) + np.einsum("...db,...ac->...abcd", MSMt, N)
             + np.einsum("...da,...bc->...abcd", B, M))
    hess[..., diag, diag, diag, diag] += k / diagonal ** 2
    return f, grad, hess


class PriorOnL:
    """log p(L) (up to a constant) over the blocks of G, with its gradient and Hessian in L's free entries.

    ``PriorOnL(blocks_prior)``, blocks_prior a list of (block, nu_B, S_B) as
    :func:`prior_blocks` gives: log p(L) is the sum over blocks of
    :func:`_log_prior_block`, and its gradient and Hessian are stacked in the
    order of :func:`lower_entries` (the Hessian is block diagonal). L has
    C matrices (C, q, q), lower triangular (block diagonal for ``||``), any
    signs on the diagonal, none zero (L comes from a positive definite G or
    from a continuous proposal, so a zero has probability 0).
    """

    def __init__(self, blocks_prior, huang_wand_A=None):
        self.parts = []
        for block, nu, S in blocks_prior:
            whole = len(blocks_prior) == 1
            ix = (slice(None),) + ((slice(None), slice(None)) if whole else np.ix_(block, block))
            if huang_wand_A is None:
                S = np.asarray(S, dtype=float)
                value = lambda L, nu=nu, S=S: _log_prior_value(L, nu, S)            # noqa: E731
                both = lambda L, nu=nu, S=S: _log_prior_block(L, nu, S)             # noqa: E731
            else:
                A = huang_wand_A[block]
                value = lambda L, A=A: huang_wand._log_density_L(L, A, derivatives=False)  # noqa: E731
                both = lambda L, A=A: huang_wand._log_density_L(L, A)                # noqa: E731
            self.parts.append((ix, value, both, np.tril_indices(len(block))))

    @classmethod
    def huang_wand(cls, blocks, A):
        """log p(L) under the Huang-Wand prior with a integrated out (:func:`teachlmm.huang_wand._log_density_L`)."""
        return cls([(block, None, None) for block in blocks], huang_wand_A=np.asarray(A, dtype=float))

    def value(self, L):
        """log p(L), (C,)."""
        return sum(value(L[ix]) for ix, value, _, _ in self.parts)

    def derivatives(self, L):
        """(log p(L) (C,), gradient (C, r), Hessian (C, r, r))."""
        f, grads, hessians = 0.0, [], []
        for ix, _, both, (rows, cols) in self.parts:
            fb, g, h = both(L[ix])
            f = f + fb
            grads.append(g[:, rows, cols])
            hessians.append(h[:, rows, cols][:, :, rows, cols])
        if len(hessians) == 1:
            return f, grads[0], hessians[0]
        r = sum(g.shape[1] for g in grads)
        hess = np.zeros((L.shape[0], r, r))
        start = 0
        for h in hessians:                                      # block diagonal in the blocks of G
            hess[:, start:start + h.shape[1], start:start + h.shape[1]] = h
            start += h.shape[1]
        return f, np.concatenate(grads, axis=1), hess


def log_prior_L(L, blocks_prior):
    """log p(L), its gradient and Hessian in the free entries of L (see :class:`PriorOnL`).

    Examples
    --------
    >>> import numpy as np
    >>> L = np.array([[[1.0, 0.0], [0.5, 2.0]]])
    >>> f, grad, hess = log_prior_L(L, [(np.arange(2), 3.0, np.eye(2))])
    >>> grad.shape, hess.shape
    ((1, 3), (1, 3, 3))
    """
    return PriorOnL(blocks_prior).derivatives(L)


# ----------------------------------------------------------------------------
# the regression given u
# ----------------------------------------------------------------------------

class Regression(NamedTuple):
    """The Gaussian likelihood (times beta's prior) of theta = (beta, entries of L) given u and sigma2.

    ``log p(y | theta, u, sigma2) p(beta) = -(theta - mean)' precision (theta - mean) / 2 + const``.
    """

    mean: np.ndarray            # (C, p + r)
    precision: np.ndarray       # (C, p + r, p + r)
    usable: np.ndarray          # (C,) False where the precision is singular (all u_j = 0: a G = 0 start)


class Statistics(NamedTuple):
    """The per-group statistics rearranged once per model, so that :func:`regression` is three matrix products."""

    ZtZ: np.ndarray             # (J, q*q)
    XtZ: np.ndarray             # (J, p*q)
    Zty: np.ndarray             # (J, q)
    XtX: np.ndarray             # (p, p) sum over groups
    Xty: np.ndarray             # (p,)
    beta_precision: np.ndarray  # (p, p) diag(1 / tau2)
    rows: np.ndarray            # the (k, l) of lower_entries
    cols: np.ndarray
    at_WW: np.ndarray           # where W'W, W'X, W'y sit in the flattened products of regression()
    at_WX: np.ndarray
    at_Wy: np.ndarray


def statistics(stats, blocks, tau2):
    """Rearrange ``model.stats`` for :func:`regression` (once per model and prior)."""
    J, p, q = stats.XtZ.shape
    k, l = np.array(lower_entries(blocks)).T
    at_WW = np.ravel_multi_index((l[:, None], l[None, :], k[:, None], k[None, :]), (q, q, q, q))
    at_WX = np.ravel_multi_index((l[:, None], np.arange(p)[None, :], k[:, None]), (q, p, q))
    return Statistics(stats.ZtZ.reshape(J, q * q), stats.XtZ.reshape(J, p * q), stats.Zty,
                      stats.XtX.sum(0), stats.Xty.sum(0), np.diag(1.0 / np.broadcast_to(tau2, (p,))),
                      k, l, at_WW, at_WX, np.ravel_multi_index((l, k), (q, q)))


def regression(st, u, sigma2):
    r"""The Gaussian regression of y on (X, W) given u: W's column (k, l) is z_k u_l, group by group.

    Its cross-products come from the per-group statistics (no rows)::

        W'W[(k,l), (m,n)] = sum_j u_jl u_jn (Z_j'Z_j)_km
        W'X[(k,l), :]     = sum_j u_jl (Z_j'X_j)_k,:        W'y[(k,l)] = sum_j u_jl (Z_j'y_j)_k

    and with beta ~ N(0, tau2 I), theta = (beta, L's entries)::

        precision = [[X'X + sigma2 / tau2 I, X'W], [W'X, W'W]] / sigma2
        mean      = precision^-1 [X'y, W'y] / sigma2

    Parameters: st from :func:`statistics`; u (C, J, q); sigma2 (C,).
    """
    C, J, q = u.shape
    p = st.XtX.shape[0]
    ut = np.swapaxes(u, 1, 2)                                           # (C, q, J)
    uu = np.einsum("cjl,cjn->clnj", u, u).reshape(C, q * q, J)
    WW = (uu @ st.ZtZ).reshape(C, -1).take(st.at_WW, axis=1)           # [c, (l, n, k, m)] -> (C, r, r)
    WX = (ut @ st.XtZ).reshape(C, -1).take(st.at_WX, axis=1)           # [c, (l, :, k)] -> (C, r, p)
    Wy = (ut @ st.Zty).reshape(C, -1).take(st.at_Wy, axis=1)           # [c, (l, k)] -> (C, r)
    P = np.empty((C, p + WW.shape[1], p + WW.shape[1]))
    P[:, :p, :p] = st.XtX + sigma2[:, None, None] * st.beta_precision
    P[:, p:, :p], P[:, :p, p:], P[:, p:, p:] = WX, np.swapaxes(WX, 1, 2), WW
    P /= sigma2[:, None, None]
    c = np.empty((C, P.shape[1]))
    c[:, :p], c[:, p:] = st.Xty, Wy
    c /= sigma2[:, None]
    usable = np.ones(C, dtype=bool)
    try:
        mean = np.linalg.solve(P, c[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:                   # u = 0 says nothing about L: that chain skips the step
        usable = np.linalg.eigvalsh(P)[:, 0] > 0
        P = np.where(usable[:, None, None], P, np.eye(P.shape[-1]))
        mean = np.linalg.solve(P, c[:, :, None])[:, :, 0]
    return Regression(mean, P, usable)


# ----------------------------------------------------------------------------
# the Metropolis-Hastings step
# ----------------------------------------------------------------------------

def _L_from(theta, p, st, q):
    L = np.zeros((theta.shape[0], q, q))
    L[:, st.rows, st.cols] = theta[:, p:]
    return L


def laplace_proposal(reg, prior_L, to_L, newton_steps=None):
    r"""The Gaussian proposal: Newton steps on log likelihood + log prior, from the likelihood's mean m.

    The conditional log density of theta = (beta, L's entries) is
    -(theta - m)'P(theta - m)/2 + log p(L). With g, H the gradient and
    Hessian of log p(L) at theta_t (zero in beta's coordinates), a Newton step is::

        P_t = P - H,        theta_{t+1} = theta_t + P_t^-1 (g - P (theta_t - m)),     theta_0 = m

    and the proposal is N(theta_T, P_{T-1}^-1) after T steps (the Laplace
    approximation of the conditional posterior; T = 1 already takes most of the
    prior's pull). A chain whose P_t is not positive definite stops there (for
    T = 1: the proposal is the likelihood itself, N(m, P^-1)). Whatever
    happens, the proposal depends on (u, sigma2) only, never on the current
    (beta, L), so :func:`metropolis_hastings`'s independence ratio holds.

    Parameters
    ----------
    reg : :class:`Regression`.   prior_L : :class:`PriorOnL`.
    to_L : function theta (C, p + r) -> L (C, q, q).
    newton_steps : int >= 1 (default: the module's NEWTON_STEPS).

    Returns (mean, R) with precision R R' (R lower triangular): a draw is
    mean + R^-T z, and log q(theta) = -||R'(theta - mean)||^2 / 2 + log|R| + const.
    """
    P, m = reg.precision, reg.mean
    d = P.shape[-1]
    newton_steps = NEWTON_STEPS if newton_steps is None else newton_steps
    theta, Pn, R = m, P, None
    moving = np.ones(len(m), dtype=bool)
    for _ in range(newton_steps):
        _, grad, hess = prior_L.derivatives(to_L(theta))
        r = grad.shape[1]
        P_t = P.copy()
        P_t[:, d - r:, d - r:] -= hess
        g = -np.einsum("cij,cj->ci", P, theta - m)
        g[:, d - r:] += grad
        try:                                                    # P - H positive definite in every chain?
            R_t = np.linalg.cholesky(P_t) if moving.all() else None
        except np.linalg.LinAlgError:
            R_t = None
        if R_t is None:                                         # not everywhere: those chains stop here
            ok = moving & np.isfinite(g).all(1) & np.isfinite(P_t).all((1, 2))
            ok[ok] = np.linalg.eigvalsh(P_t[ok])[:, 0] > 0
            P_t, g = np.where(ok[:, None, None], P_t, np.eye(d)), np.where(ok[:, None], g, 0.0)
            Pn, R, moving = np.where(ok[:, None, None], P_t, Pn), None, ok
        else:
            Pn, R = P_t, R_t
        theta = theta + np.linalg.solve(P_t, g[:, :, None])[:, :, 0]
        if not moving.any():
            break
    return theta, (np.linalg.cholesky(Pn) if R is None else R)


def metropolis_hastings(current, proposal, log_target, log_proposal, uniform):
    r"""One Metropolis-Hastings decision per chain: move to the proposal where log U < log r.

    For an independence proposal q (one that does not depend on the current
    value) the ratio is::

        log r = [log pi(theta*) - log q(theta*)] - [log pi(theta) - log q(theta)]

    and the move theta -> theta* happens with probability min(1, r), which
    leaves pi invariant (detailed balance). ``log_target`` and ``log_proposal``
    take a stack of points (2C, d): proposals first, then the current values.
    Returns (new theta, accepted (C,) bool).
    """
    both = np.concatenate([proposal, current])
    w = log_target(both) - log_proposal(both)
    C = current.shape[0]
    accept = np.log(uniform) < w[:C] - w[C:]
    return np.where(accept[:, None], proposal, current), accept


def interweave(st, prior_L, beta, b, G, sigma2, noise, newton_steps=None):
    r"""The interweaving step: (beta, L) redrawn given the non-centred u_j, by Metropolis-Hastings.

    1. L = chol(G) (block diagonal for ``||``), u_j = L^-1 b_j;
    2. the target: pi(beta, L) = p(y | beta, L, u, sigma2) p(beta) p(L), with the
       Gaussian part from :func:`regression` and p(L) from :class:`PriorOnL`;
    3. propose from :func:`laplace_proposal`, decide by :func:`metropolis_hastings`;
    4. map back: b_j = L u_j, G = L L' (unchanged where the proposal is refused).

    Parameters
    ----------
    st : :class:`Statistics`.   prior_L : :class:`PriorOnL`.
    beta (C, p), b (C, J, q), G (C, q, q), sigma2 (C,) : the state after the G-draw.
    noise : (C, p + r + 1) standard normals (:func:`draw_noise`): p + r for the
        proposal; the normal CDF of the last is the uniform of the decision.

    Returns
    -------
    beta, b, G, accepted (C,) bool.
    """
    q, p = G.shape[-1], beta.shape[-1]
    L = np.linalg.cholesky(G)
    u = noncentred(b, L)
    reg = regression(st, u, sigma2)
    if not reg.usable.all():                                # only after a start at G = 0
        reg = reg._replace(mean=np.where(reg.usable[:, None], reg.mean, current_theta(beta, L, st)))
    mean, R = laplace_proposal(reg, prior_L, lambda theta: _L_from(theta, p, st, q), newton_steps)
    Rt = np.swapaxes(R, 1, 2)
    proposal = mean + np.linalg.solve(Rt, noise[:, :-1, None])[:, :, 0]        # N(mean, (R R')^-1)
    P2, m2, Rt2, mean2 = (np.concatenate([a, a]) for a in (reg.precision, reg.mean, Rt, mean))

    def log_target(theta):                                  # Gaussian likelihood x p(beta), times p(L)
        return -0.5 * _quadratic(theta, m2, P2) + prior_L.value(_L_from(theta, p, st, q))

    def log_proposal(theta):
        return -0.5 * (((Rt2 @ (theta - mean2)[:, :, None])[:, :, 0]) ** 2).sum(1)
    current = current_theta(beta, L, st)
    theta, accepted = metropolis_hastings(current, proposal, log_target, log_proposal,
                                          scipy.special.ndtr(noise[:, -1]))
    accepted &= reg.usable
    theta = np.where(accepted[:, None], theta, current)
    L_new = _L_from(theta, p, st, q)
    b_new = u @ np.swapaxes(L_new, 1, 2)                    # equals b where refused, to rounding
    a = accepted
    return (theta[:, :p], np.where(a[:, None, None], b_new, b),
            np.where(a[:, None, None], L_new @ np.swapaxes(L_new, 1, 2), G), accepted)


def current_theta(beta, L, st):
    """theta = (beta, L's free entries), (C, p + r)."""
    return np.concatenate([beta, L[:, st.rows, st.cols]], axis=1)


def _quadratic(x, mean, P):
    dx = x - mean
    return np.einsum("ci,cij,cj->c", dx, P, dx)


# ----------------------------------------------------------------------------
# its random numbers
# ----------------------------------------------------------------------------

def noise_size(model):
    """Standard normals one interweaving step needs: p + r for the proposal, one for the uniform."""
    return model.p + len(lower_entries(model.blocks)) + 1


def draw_noise(rng, model, sweeps=None):
    """The interweaving noise of one sweep, or of ``sweeps`` sweeps: standard normals from each chain's own stream.

    ``rng`` is a chain's streams (``ChainStreams``, its ``interweave`` generator)
    or a tuple of them. Returns (chains, sweeps, :func:`noise_size`) normals (as
    :func:`teachlmm.gibbs.draw_noise` lays out its arrays); many sweeps at once
    give the same numbers as one at a time.
    """
    chains = (rng,) if hasattr(rng, "interweave") else rng
    shape = (1 if sweeps is None else sweeps, noise_size(model))
    return np.stack([streams.interweave.standard_normal(shape) for streams in chains])


class Interweaving:
    """The interweaving step for one model and prior, prepared once: ``step(beta, b, G, sigma2, noise)``.

    Takes and returns the sweep's arrays with the chains on axis 0, or without
    a chain axis (one chain, as :func:`teachlmm.gibbs.step` keeps them).
    Returns (beta, b, G, accepted).

    Parameters
    ----------
    model : Model.   prior : a resolved Prior.
    fast : bool
        False (default): the step as this module writes it (:func:`interweave`).
        True: for q <= 2, the written-out step of ``teachlmm._interweave_fast``
        (about 2x faster; the same output to rounding from the same noise); for
        q > 2 the same as False. Anything but a bool is a TeachLMMError.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> state = tl.gibbs.step(tl.gibbs.init(model, seed=1))
    >>> noise = np.random.default_rng(2).standard_normal(noise_size(model))
    >>> beta, b, G, accepted = Interweaving(model, state.prior)(state.beta, state.b, state.G, state.sigma2, noise)
    >>> beta.shape, b.shape, G.shape, accepted.dtype
    ((2,), (85, 2), (2, 2), dtype('bool'))
    >>> fast = Interweaving(model, state.prior, fast=True)(state.beta, state.b, state.G, state.sigma2, noise)
    >>> bool(np.allclose(fast[2], G, rtol=1e-10, atol=0))
    True
    """

    def __init__(self, model, prior, fast=False):
        if not isinstance(fast, (bool, np.bool_)):
            raise TeachLMMError(f"fast must be True (for q <= 2 the written-out step of teachlmm._interweave_fast) "
                                f"or False (the step as this module writes it), got {fast!r}")
        self.statistics = statistics(model.stats, model.blocks, prior.tau2)
        self.blocks, self.prior = model.blocks, prior
        blocks_prior = None if prior.A is not None else prior_blocks(prior, model.blocks)
        self.prior_L = (PriorOnL.huang_wand(model.blocks, prior.A) if prior.A is not None
                        else PriorOnL(blocks_prior))
        # Newton steps of the proposal: the inverse-Wishart's tr(S G^-1) keeps the conditional of L away
        # from L_kk = 0 and one step suffices (acceptance ~88 % on radon M3); Huang-Wand's marginal allows
        # G_kk near 0, where the Gaussian approximation needs the full iteration (measured: ESS of G[1,1]
        # on radon M3, seed 5, 163 with one step, 525 with three).
        self.newton_steps = HUANG_WAND_NEWTON_STEPS if prior.A is not None else NEWTON_STEPS
        # fast=True: the same step with its q <= 2 algebra written out (teachlmm._interweave_fast); same output
        self.fast = (FastInterweave(model.stats, model.blocks, prior.tau2, self.newton_steps, blocks_prior,
                                    prior.A, self._textbook) if fast and model.q <= 2 else None)

    def _textbook(self, beta, b, G, sigma2, noise):
        return interweave(self.statistics, self.prior_L, beta, b, G, sigma2, noise, self.newton_steps)

    def __call__(self, beta, b, G, sigma2, noise):
        one = np.ndim(sigma2) == 0
        if one:
            beta, b, G, sigma2, noise = beta[None], b[None], G[None], np.asarray(sigma2)[None], noise[None]
        out = (self.fast or self._textbook)(beta, b, G, np.asarray(sigma2, dtype=float), noise)
        return tuple(a[0] for a in out) if one else out
