r"""The Huang-Wand (2013) prior on G, by its auxiliary variables: the Gibbs sampler's default.

The prior. Each standard deviation sqrt(G_kk) is half-t with nu = 2 degrees of
freedom and scale A_k, and (for nu = 2) every correlation is uniform on (-1, 1).
It is weakly informative on the scale A_k and, unlike InvWishart(q + 1, S0),
does not tie the variances to the correlations.

Its auxiliary-variable form (Huang & Wand 2013, their eq. (2)) keeps every
conditional of the Gibbs sampler conjugate::

    a_k ~ InvGamma(1/2, 1 / A_k^2)                       k = 1..q
    G | a ~ InvWishart(nu + q - 1, 2 nu diag(1 / a))

with the two conditionals

    a_k | G    ~ InvGamma((nu + q) / 2,  nu (G^-1)_kk + 1 / A_k^2)
    G | a, b   ~ InvWishart(nu + q - 1 + J,  2 nu diag(1 / a) + sum_j b_j b_j')

(:func:`a_conditional`, and :func:`teachlmm.gibbs.draw_G` with the scale of
:func:`G_prior_given_a`). For uncorrelated blocks (``||``) each block B gets
the prior with its own size q_B: a_k | G ~ InvGamma((nu + q_B)/2, nu (G_B^-1)_kk
+ 1/A_k^2) and G_B | a ~ InvWishart(nu + q_B - 1, 2 nu diag(1 / a_B)).

The a-step needs G^-1. The sweep's G is drawn from an inverse-Wishart, which is
positive definite with probability 1, so G^-1 exists almost surely; a start
value G with a zero variance (allowed by ``init``) is replaced in that step by
the smallest positive variance the arithmetic allows (its rate is then huge and
a_k tiny, which pulls G away from 0 on the next draw).

In a sweep a is drawn afresh from a | G just before G | a, b, so a need not be
kept in the chain's state: (a | G, then G | a, b) is one data-augmentation
step for G that leaves p(G | b) invariant. The interweaving step of
:mod:`teachlmm.interweave` that follows uses the same a (its prior on L is the
inverse-Wishart given a).

The scale A_k (:func:`default_scales`): with sd(y) the standard deviation of
the response and rms(z_k) = sqrt(mean(z_k^2)) that of random column k,

    A_k = sd(y) / rms(z_k)

so that the half-t's scale is the whole spread of y carried by term k: wide
(half the prior mass of sqrt(G_kk) rms(z_k) lies below about 0.8 sd(y)), and
following a change of units of y or of z_k.
"""
import math
from typing import Any, NamedTuple

import numpy as np

from .design import response_variance

__all__ = ["NU", "default_scales", "a_conditional", "draw_a", "IWGivenA", "G_prior_given_a", "gamma_shapes"]

NU = 2.0          # half-t degrees of freedom: nu = 2 gives uniform marginal correlations


def default_scales(model):
    """A_k = sd(y) / rms(z_k) for each random column k (see the module docstring).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> default_scales(model).round(3)
    array([0.853, 2.091])
    """
    sd = math.sqrt(response_variance(model))                          # from the statistics (chunks too)
    ms = np.diag(model.stats.ZtZ.sum(0)) / model.n                     # mean(z_k^2)
    return sd / np.sqrt(np.where(ms > 0, ms, 1.0))


def gamma_shapes(blocks, nu=NU):
    """The shapes (nu + q_B)/2 of the a_k's conditionals, one per random column, block by block."""
    return [(nu + len(block)) / 2.0 for block in blocks for _ in block]


def a_conditional(G, blocks, A, nu=NU):
    r"""Shape (q,) and rate (..., q) of a_k | G ~ InvGamma((nu + q_B)/2, nu (G_B^-1)_kk + 1/A_k^2)."""
    G = np.asarray(G, dtype=float)
    rate = np.empty(G.shape[:-1])
    for block in blocks:
        GB = G[(Ellipsis,) + np.ix_(block, block)]
        d = np.diagonal(GB, axis1=-2, axis2=-1)
        tiny = np.finfo(float).tiny
        if np.any(d <= 0):                                              # only from a singular start value
            GB = GB + np.eye(len(block)) * np.where(d > 0, 0.0, max(tiny, 1e-300))[..., None, :]
        rate[..., block] = nu * np.diagonal(np.linalg.inv(GB), axis1=-2, axis2=-1) + 1.0 / A[block] ** 2
    return np.array(gamma_shapes(blocks, nu)), rate


def draw_a(G, blocks, A, gamma, nu=NU):
    """a_k = rate_k / gamma_k with gamma_k ~ Gamma((nu + q_B)/2, 1): a draw of a | G (``Noise.a_gamma``)."""
    _, rate = a_conditional(G, blocks, A, nu)
    return rate / gamma


class IWGivenA(NamedTuple):
    """The inverse-Wishart prior of G given a, in the form :func:`teachlmm.gibbs.draw_G` reads a prior.

    ``nu0 = nu + q - 1`` (so a block B gets nu0 - q + q_B = nu + q_B - 1) and
    ``S0 = 2 nu diag(1 / a)``, one per chain.
    """

    nu0: float
    S0: Any


def G_prior_given_a(a, nu=NU):
    """G | a ~ InvWishart(nu + q - 1, 2 nu diag(1 / a)), a (..., q)."""
    q = a.shape[-1]
    return IWGivenA(nu + q - 1.0, (2.0 * nu / a)[..., None] * np.eye(q))


# ----------------------------------------------------------------------------
# the marginal density of G (a integrated out), in the Cholesky factor L:
# the target of the interweaving step under this prior (teachlmm.interweave)
# ----------------------------------------------------------------------------

def _log_density_L(L, A, nu=NU, derivatives=True):
    r"""log p(L) for one block of size m under Huang-Wand, a integrated out, with gradient and Hessian.

    Huang & Wand (2013, eq. 3): p(G) is proportional to
    |G|^-(nu + 2m)/2 prod_k (nu (G^-1)_kk + 1/A_k^2)^-(nu + m)/2. With G = L L',
    |G| = prod_k L_kk^2 and the Jacobian prod_k |L_kk|^(m - k + 1) (k = 1..m), and
    with M = L^-1, N = M'M = G^-1, D_k = nu N_kk + 1/A_k^2, c = (nu + m)/2::

        f(L) = -sum_k (nu + m + k - 1) log|L_kk| - c sum_k log D_k

    dN_kk / dL_ab = -2 N_ka M_bk (from dM = -M dL M), so with w_k = 2 c nu / D_k::

        df/dL_ab        = sum_k w_k N_ak M_bk - [a = b] (nu + m + a - 1) / L_aa
        d2f/dL_ab dL_cd = sum_k [ (w_k^2 / c) N_kc M_dk N_ak M_bk
                                  - w_k (M_da N_ck M_bk + N_ac M_dk M_bk + N_ak M_bc M_dk) ]
                          + [a = b = c = d] (nu + m + a - 1) / L_aa^2

    (using dN = -M'dL'N - N dL M and dM_bk = -M_bc M_dk dL_cd). Shapes: L (C, m, m),
    A (m,); returns f (C,) and, with ``derivatives``, grad (C, m, m) and hess (C, m, m, m, m).
    """
    m = L.shape[-1]
    M = np.linalg.inv(L)
    N = np.swapaxes(M, -1, -2) @ M
    diagonal = np.diagonal(L, axis1=-2, axis2=-1)
    kk = nu + m + np.arange(m)                                   # nu + m + k - 1, k = 1..m
    D = nu * np.diagonal(N, axis1=-2, axis2=-1) + 1.0 / A ** 2
    c = (nu + m) / 2.0
    f = -(np.log(np.abs(diagonal)) @ kk) - c * np.log(D).sum(-1)
    if not derivatives:
        return f
    w = 2.0 * c * nu / D                                         # (C, m)
    grad = np.einsum("...k,...ak,...bk->...ab", w, N, M)
    diag = np.arange(m)
    grad[..., diag, diag] -= kk / diagonal
    hess = (np.einsum("...k,...kc,...dk,...ak,...bk->...abcd", w * w / c, N, M, N, M)
            - np.einsum("...k,...da,...ck,...bk->...abcd", w, M, N, M)
            - np.einsum("...k,...ac,...dk,...bk->...abcd", w, N, M, M)
            - np.einsum("...k,...ak,...bc,...dk->...abcd", w, N, M, M))
    hess[..., diag, diag, diag, diag] += kk / diagonal ** 2
    return f, grad, hess
