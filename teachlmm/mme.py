"""The mixed-model equations at given variance components, group by group.

Every method in teachlmm (EM's E-step, the BLUP, the Gibbs sampler's
coefficient block) solves the same system for given G and sigma2::

    [ X'X        X'Z             ] [beta]   [X'y]
    [ Z'X   blockdiag(M_j)       ] [ b  ] = [Z'y],     M_j = Z_j'Z_j + sigma2 G^-1.

Eliminating b group by group (a Schur complement) leaves a p x p system::

    A        = X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j
    beta_hat = A^-1 (X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j)          (GLS)
    b_hat_j  = M_j^-1 Z_j'(y_j - X_j beta_hat)                    (BLUP)

The textbook form needs G^-1, which does not exist when a variance sits at 0
(a "singular" or boundary fit). As lme4 does, we write G = sigma2 T T' with T
lower triangular (a Cholesky factor, allowed to be singular) and use::

    M~_j = T'Z_j'Z_j T + I          always positive definite
    M_j^-1 = T M~_j^-1 T'           (the same matrix when G is invertible)
    |V_j| = sigma2^n_j |M~_j|,      V_j = Z_j G Z_j' + sigma2 I.

All arrays carry the groups on axis 0, so "for every group" is one batched
numpy call, never a Python loop over groups.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["relative_factor", "congruence", "inv_logdet", "Solution", "solve", "loglik", "gradient_G"]

LOG_2PI = np.log(2.0 * np.pi)


def relative_factor(G, sigma2):
    """Lower-triangular T with T T' = G / sigma2, also for a singular (PSD) G.

    A Cholesky factorisation that lets a pivot be 0: column k of T is
    ``(G_k - T_k T_k') / T_kk`` if the remaining variance T_kk^2 is positive,
    else zero (that direction has no variance). G may also be a stack
    (..., q, q) with sigma2 of shape (...), as the Gibbs sampler's chains are.

    Examples
    --------
    >>> import numpy as np
    >>> relative_factor(np.array([[4.0, 2.0], [2.0, 1.0]]), 1.0)     # singular: rank 1
    array([[2., 0.],
           [1., 0.]])
    """
    S = np.asarray(G, dtype=float) / np.asarray(sigma2, dtype=float)[..., None, None]
    try:                                        # the usual case, G positive definite: plain Cholesky
        L = np.linalg.cholesky(S)
        if (L.diagonal(0, -2, -1) ** 2 > 1e-10 * S.diagonal(0, -2, -1)).all():
            return L
    except np.linalg.LinAlgError:
        pass
    T = np.zeros_like(S)
    for k in range(S.shape[-1]):                # q is 1, 2 or 3: a loop over columns, not groups
        Tk = T[..., k, :k]
        d = S[..., k, k] - (Tk * Tk).sum(-1)    # variance of column k not explained by columns < k
        ok = d > 1e-10 * S[..., k, k]           # none left (up to rounding): a zero column
        root = np.sqrt(np.where(ok, d, 1.0))
        below = S[..., k + 1:, k] - (T[..., k + 1:, :k] * Tk[..., None, :]).sum(-1)
        T[..., k, k] = np.where(ok, root, 0.0)
        T[..., k + 1:, k] = np.where(ok[..., None], below / root[..., None], 0.0)
    return T


def congruence(B, T):
    """T B_j T' for every matrix B_j of a stack (J, k, k), as one matrix product.

    Entry by entry, (T B T')[a, c] = sum_bd T[a, b] T[c, d] B[b, d]: the flattened
    result is the Kronecker product K = T (x) T times the flattened B_j, so the
    whole stack is one (J, k^2) x (k^2, m^2) product instead of J small ones.
    """
    J, k = B.shape[0], B.shape[1]
    m = T.shape[0]
    K = (T[:, None, :, None] * T[None, :, None, :]).reshape(m * m, k * k)   # K[(a,c),(b,d)] = T[a,b] T[c,d]
    return (B.reshape(J, k * k) @ K.T).reshape(J, m, m)


def _spd_inverse(A):
    """Inverse and log-determinant of a symmetric positive-definite p x p matrix, by one Cholesky."""
    if A.size == 0:
        return A, 0.0
    L_inv = np.linalg.inv(np.linalg.cholesky(A))            # A = L L', A^-1 = L^-T L^-1
    return L_inv.T @ L_inv, -2.0 * np.log(L_inv.diagonal()).sum()


def inv_logdet(M):
    """Inverse and log-determinant of every matrix in a stack (J, q, q) of positive-definite matrices.

    q = 1 and q = 2 (random intercepts; intercepts and slopes) in closed form,
    inv [[a, b], [b, d]] = [[d, -b], [-b, a]] / (ad - b^2): several times faster
    than LAPACK on 2 x 2 matrices. Other q: Cholesky for the determinant.
    M~_j = T'Z_j'Z_j T + I has every eigenvalue >= 1, so the closed form is safe.
    """
    q = M.shape[-1]
    if q == 1:
        return 1.0 / M, np.log(M[:, 0, 0])
    if q == 2:
        a, b, d = M[:, 0, 0], M[:, 0, 1], M[:, 1, 1]
        det = a * d - b * b
        inv = np.stack([d, -b, -b, a], axis=-1).reshape(-1, 2, 2) / det[:, None, None]
        return inv, np.log(det)
    L = np.linalg.cholesky(M)
    return np.linalg.inv(M), 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=-1)


class Solution(NamedTuple):
    """The mixed-model equations solved at (G, sigma2); every array is per group on axis 0.

    Attributes
    ----------
    T : (q, q) relative factor, G = sigma2 T T'.
    Minv : (J, q, q) M_j^-1 = T M~_j^-1 T'; sigma2 * Minv_j is Var(b_j | y, beta).
    XtZ_Minv : (J, p, q) X_j'Z_j M_j^-1.
    logdet_Mt : (J,) log |M~_j|.
    A : (p, p) Schur complement (sigma2 * A^-1 is Var(beta_hat)).  A_inv, logdet_A : its inverse and log|A|.
    beta : (p,) GLS estimate.   b : (J, q) BLUPs.
    rss : ||y - X beta - Z b||^2.   rVr : sum_j r_j' V_j^-1 r_j at beta (times sigma2).
    """

    T: np.ndarray
    Minv: np.ndarray
    XtZ_Minv: np.ndarray
    logdet_Mt: np.ndarray
    A: np.ndarray
    A_inv: np.ndarray
    logdet_A: float
    beta: np.ndarray
    b: np.ndarray
    rss: float
    rVr: float


def solve(stats, G, sigma2, beta_precision=None, beta=None):
    """Solve the mixed-model equations at (G, sigma2), batched over groups.

    Parameters
    ----------
    stats : GroupStats
    G : (q, q) array, symmetric positive semi-definite.
    sigma2 : float > 0.
    beta_precision : (p, p) array, optional
        A normal prior beta ~ N(0, sigma2 * inv(beta_precision)) adds
        ``beta_precision`` to A (the Gibbs sampler's prior); None: flat.
    beta : (p,) array, optional
        Use this beta instead of the GLS estimate (the BLUPs are then
        ``M_j^-1 Z_j'(y_j - X_j beta)``).

    Returns
    -------
    Solution

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> sol = solve(m.stats, np.array([[0.1]]), 0.57)
    >>> sol.b.shape
    (85, 1)
    """
    s = stats
    T = relative_factor(G, sigma2)
    q = T.shape[0]
    Mt = congruence(s.ZtZ, T.T) + np.eye(q)                # M~_j = T'Z_j'Z_j T + I
    Mt_inv, logdet_Mt = inv_logdet(Mt)
    Minv = congruence(Mt_inv, T)                            # M_j^-1 = T M~_j^-1 T'
    XtZ_Minv = s.XtZ @ Minv                                 # X_j'Z_j M_j^-1, (J, p, q)
    A = s.XtX_total - (XtZ_Minv @ s.ZtX).sum(0)            # X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j
    c = s.Xty_total - (XtZ_Minv @ s.Zty[:, :, None]).sum(0)[:, 0]
    if beta_precision is not None:
        A = A + beta_precision
    A_inv, logdet_A = _spd_inverse(A)
    if beta is None:
        beta = A_inv @ c                                    # beta_hat = A^-1 c
    Ztr = s.Zty - s.ZtX @ beta                              # Z_j'(y_j - X_j beta)
    b = (Minv @ Ztr[:, :, None])[:, :, 0]                   # b_hat_j = M_j^-1 Z_j' r_j
    rtr = s.yty_total - 2 * beta @ s.Xty_total + beta @ s.XtX_total @ beta   # r'r, r = y - X beta
    Ztr_b = (Ztr * b).sum()
    rVr = rtr - Ztr_b                                       # sigma2 * r'V^-1 r
    rss = rtr - 2 * Ztr_b + (b * (s.ZtZ @ b[:, :, None])[:, :, 0]).sum()   # ||r - Z b||^2
    return Solution(T, Minv, XtZ_Minv, logdet_Mt, A, A_inv, logdet_A, beta, b, float(rss), float(rVr))


def loglik(stats, G, sigma2, reml, sol=None):
    """Log-likelihood (ML) or restricted log-likelihood (REML) at (G, sigma2), beta at its GLS value.

    ML:    -1/2 [ n log(2 pi sigma2) + sum_j log|M~_j| + r'V^-1 r ]
    REML:  -1/2 [ (n-p) log(2 pi sigma2) + sum_j log|M~_j| + log|A| + r'V^-1 r ]

    These are lme4's ``logLik()`` values (for REML, -REMLcrit / 2).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> round(loglik(m.stats, np.array([[0.1]]), 0.57, reml=False), 2)
    -1081.84
    """
    sol = solve(stats, G, sigma2) if sol is None else sol
    n, p = stats.n_total, sol.A.shape[0]
    dof = n - p if reml else n
    value = dof * (LOG_2PI + np.log(sigma2)) + sol.logdet_Mt.sum() + sol.rVr / sigma2
    if reml:
        value += sol.logdet_A
    return -0.5 * float(value)


def gradient_G(stats, G, sigma2, reml, sol=None):
    """Derivative of the (restricted) log-likelihood with respect to G (a symmetric q x q matrix).

    dl/dG = 1/2 sum_j [ Z_j'P r r'P Z_j - Z_j'P Z_j ]_jj, computed per group with
    Z_j'V_j^-1 Z_j = (Z_j'Z_j - Z_j'Z_j M_j^-1 Z_j'Z_j) / sigma2 (no G^-1 needed).
    For ML, P = V^-1; for REML, P = V^-1 - V^-1 X A~^-1 X'V^-1 (A~ = X'V^-1 X).

    At a boundary point (singular G) the fit is a maximum only if v' (dl/dG) v <= 0
    for every v in the null space of G: no direction into the interior helps.
    """
    s = stats
    sol = solve(stats, G, sigma2) if sol is None else sol
    ZtZ_Minv = s.ZtZ @ sol.Minv
    ZVZ = (s.ZtZ - ZtZ_Minv @ s.ZtZ) / sigma2                       # Z_j'V_j^-1 Z_j
    Ztr = s.Zty - np.einsum("jpq,p->jq", s.XtZ, sol.beta)
    ZVr = (Ztr - np.einsum("jqr,jr->jq", ZtZ_Minv, Ztr)) / sigma2   # Z_j'V_j^-1 r_j
    D = np.einsum("jq,jr->qr", ZVr, ZVr) - ZVZ.sum(0)
    if reml and sol.A.shape[0]:
        ZVX = (np.swapaxes(s.XtZ, 1, 2) - ZtZ_Minv @ np.swapaxes(s.XtZ, 1, 2)) / sigma2   # Z_j'V_j^-1 X_j
        At_inv = sigma2 * sol.A_inv                                # (X'V^-1X)^-1 = sigma2 A^-1
        D += np.einsum("jqp,pr,jsr->qs", ZVX, At_inv, ZVX)
    return 0.5 * D
