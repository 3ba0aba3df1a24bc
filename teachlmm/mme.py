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
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["relative_factor", "congruence", "cholesky", "lower_inverse", "inv_logdet", "Solution", "residual_moments",
           "b_hat", "residual_sum_of_squares", "solve", "loglik", "profiled_deviance", "gradient_G"]

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
    """T B_j T' for every matrix B_j of a stack (..., J, k, k), as one matrix product.

    Entry by entry, (T B T')[a, c] = sum_bd T[a, b] T[c, d] B[b, d]: the flattened
    result is the Kronecker product K = T (x) T times the flattened B_j, so the
    whole stack is one (J, k^2) x (k^2, m^2) product instead of J small ones.
    T may carry leading (chain) axes too: T (..., m, k) gives (..., J, m, m).
    """
    k, m = B.shape[-1], T.shape[-2]
    K = (T[..., :, None, :, None] * T[..., None, :, None, :]).reshape(T.shape[:-2] + (m * m, k * k))
    out = B.reshape(B.shape[:-2] + (k * k,)) @ K.swapaxes(-1, -2)          # K[(a,c),(b,d)] = T[a,b] T[c,d]
    return out.reshape(out.shape[:-1] + (m, m))


# ----------------------------------------------------------------------------
# small dense algebra in closed form, batched over any leading axes (chains, groups)
# ----------------------------------------------------------------------------

def cholesky(M):
    """Lower-triangular L with L L' = M, for a stack (..., q, q) of positive-definite matrices.

    q = 1 and 2 in closed form (for tiny matrices a LAPACK call per matrix
    costs more than the arithmetic), larger q by numpy::

        l11 = sqrt(m11),   l21 = m21 / l11,   l22 = sqrt(m22 - l21^2)

    Examples
    --------
    >>> import numpy as np
    >>> cholesky(np.array([[4.0, 2.0], [2.0, 5.0]]))
    array([[2., 0.],
           [1., 2.]])
    """
    q = M.shape[-1]
    if q == 1:
        return np.sqrt(M)
    if q == 2:
        L = np.zeros(M.shape)
        L[..., 0, 0] = np.sqrt(M[..., 0, 0])
        L[..., 1, 0] = M[..., 1, 0] / L[..., 0, 0]
        L[..., 1, 1] = np.sqrt(M[..., 1, 1] - L[..., 1, 0] ** 2)
        return L
    return np.linalg.cholesky(M)


def lower_inverse(L):
    """Inverse of a stack of lower-triangular matrices (closed form for q <= 2)::

        [[l11, 0], [l21, l22]]^-1 = [[1/l11, 0], [-l21 / (l11 l22), 1/l22]]

    Examples
    --------
    >>> import numpy as np
    >>> lower_inverse(np.array([[2.0, 0.0], [1.0, 2.0]]))
    array([[ 0.5 ,  0.  ],
           [-0.25,  0.5 ]])
    """
    q = L.shape[-1]
    if q == 1:
        return 1.0 / L
    if q == 2:
        W = np.zeros(L.shape)
        W[..., 0, 0] = 1.0 / L[..., 0, 0]
        W[..., 1, 1] = 1.0 / L[..., 1, 1]
        W[..., 1, 0] = -L[..., 1, 0] * W[..., 0, 0] * W[..., 1, 1]
        return W
    return np.linalg.inv(L)


def inv_logdet(M):
    """Inverse and log-determinant of every matrix in a stack (..., q, q) of positive-definite matrices.

    q = 1 and q = 2 (random intercepts; intercepts and slopes) in closed form,
    inv [[a, b], [b, d]] = [[d, -b], [-b, a]] / (ad - b^2): several times faster
    than LAPACK on 2 x 2 matrices. Other q: by the Cholesky factor M = L L'
    (:func:`cholesky`, :func:`lower_inverse`): M^-1 = L^-T L^-1, log|M| = 2 sum_k log l_kk.
    M~_j = T'Z_j'Z_j T + I has every eigenvalue >= 1, so the closed form is safe.

    Examples
    --------
    >>> import numpy as np
    >>> inv, logdet = inv_logdet(np.array([[[4.0, 2.0], [2.0, 5.0]]]))
    >>> bool(np.allclose(inv[0], np.linalg.inv([[4.0, 2.0], [2.0, 5.0]]))), round(float(logdet[0]), 4)
    (True, 2.7726)
    """
    q = M.shape[-1]
    if q == 1:
        return 1.0 / M, np.log(M[..., 0, 0])
    if q == 2:
        a, b, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 1]
        det = a * d - b * b
        inv = np.stack([d, -b, -b, a], axis=-1).reshape(M.shape) / det[..., None, None]
        return inv, np.log(det)
    W = lower_inverse(cholesky(M))                            # M^-1 = W'W, log|M| = -2 sum_k log w_kk
    return W.swapaxes(-1, -2) @ W, -2.0 * np.log(W.diagonal(0, -2, -1)).sum(-1)


def _spd_inverse(A):
    """Inverse and log-determinant of a stack of symmetric positive-definite p x p matrices, by Cholesky.

    A = R R', A^-1 = R^-T R^-1, log|A| = 2 sum_k log r_kk (LAPACK: p may be any size).
    """
    if A.shape[-1] == 0:
        return A, np.zeros(A.shape[:-2])
    R_inv = np.linalg.inv(np.linalg.cholesky(A))
    return R_inv.swapaxes(-1, -2) @ R_inv, -2.0 * np.log(R_inv.diagonal(0, -2, -1)).sum(-1)


def _scalar(x):
    """A 0-d result as a Python float (one chain), else the array (one value per chain)."""
    return x if getattr(x, "ndim", 0) else float(x)


# ----------------------------------------------------------------------------
# the mixed-model equations
# ----------------------------------------------------------------------------

class Solution(NamedTuple):
    r"""The mixed-model equations solved at (G, sigma2); every array is per group on axis -3 (or -2).

    With leading (chain) axes on G and sigma2, every field carries them in front.
    The per-group matrices are those of the relative factor T:

    .. math::

        G = \sigma^2 T T^\top, \qquad
        \tilde M_j = T^\top Z_j^\top Z_j T + I, \qquad
        M_j^{-1} = T \tilde M_j^{-1} T^\top,

    so that :math:`\sigma^2 M_j^{-1} = \operatorname{Var}(b_j \mid y, \beta)`; and with A the
    Schur complement of the equations, :math:`\sigma^2 A^{-1} = \operatorname{Var}(\hat\beta)`.
    Two Cholesky-type factors, ``K`` and ``R_inv``, are computed on access (EM does not
    need them; the Gibbs sampler draws with them).

    Attributes
    ----------
    T : (q, q) array
        The relative factor T.
    Minv : (J, q, q) array
        :math:`M_j^{-1}`.
    XtZ_Minv : (J, p, q) array
        :math:`X_j^\top Z_j M_j^{-1}`.
    logdet_M_tilde : (J,) array
        :math:`\log \det \tilde M_j`.
    A : (p, p) array
        The Schur complement A.
    A_inv : (p, p) array
        :math:`A^{-1}`.
    logdet_A : float
        :math:`\log \det A`.
    beta : (p,) array
        The GLS estimate :math:`\hat\beta`.
    b : (J, q) array
        The BLUPs :math:`\hat b_j`.
    rss : float
        :math:`\lVert y - X\hat\beta - Z\hat b \rVert^2`.
    rVr : float
        :math:`\sigma^2 \sum_j r_j^\top V_j^{-1} r_j` with :math:`r_j = y_j - X_j\hat\beta`.
    M_tilde : (J, q, q) array
        :math:`\tilde M_j`.
    """

    T: np.ndarray
    Minv: np.ndarray
    XtZ_Minv: np.ndarray
    logdet_M_tilde: np.ndarray
    A: np.ndarray
    A_inv: np.ndarray
    logdet_A: float
    beta: np.ndarray
    b: np.ndarray
    rss: float
    rVr: float
    M_tilde: np.ndarray

    @property
    def K(self):
        """K_j = T L_j^-T with M~_j = L_j L_j', so that K_j K_j' = T M~_j^-1 T' = M_j^-1 (computed on access)."""
        W = lower_inverse(cholesky(self.M_tilde))
        return self.T[..., None, :, :] @ np.swapaxes(W, -1, -2)

    @property
    def R_inv(self):
        """R^-1 for the Cholesky factor A = R R', so that A^-1 = R^-T R^-1 (computed on access)."""
        return lower_inverse(cholesky(self.A)) if self.A.shape[-1] else self.A

    @property
    def logdet_Mt(self):
        """Deprecated alias of ``logdet_M_tilde`` (kept for one release)."""
        warnings.warn("Solution.logdet_Mt is renamed logdet_M_tilde; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return self.logdet_M_tilde


def residual_moments(stats, beta):
    r"""r'r and Z_j'r_j for the residual r = y - X beta of the fixed part (batched over chains):

    .. math::

        r^\top r = y^\top y - 2 \beta^\top X^\top y + \beta^\top X^\top X \beta, \qquad
        Z_j^\top r_j = Z_j^\top y_j - Z_j^\top X_j \beta.
    """
    s, beta = stats, np.asarray(beta)
    rtr = _rtr(s, beta)
    J, q, p = s.ZtX.shape
    ZtX_beta = beta @ s.ZtX.reshape(J * q, p).T               # Z_j'X_j beta, all groups in one product
    return rtr, s.Zty - ZtX_beta.reshape(beta.shape[:-1] + (J, q))


def _rtr(s, beta):
    return s.yty_total - 2 * (beta * s.Xty_total).sum(-1) + ((beta @ s.XtX_total) * beta).sum(-1)


def _ssr(stats, rtr, Ztr, b):
    """||r - Z b||^2 = r'r - 2 sum_j b_j'Z_j'r_j + sum_j b_j'Z_j'Z_j b_j."""
    return rtr - 2 * (b * Ztr).sum((-1, -2)) + np.einsum("...jq,jqr,...jr->...", b, stats.ZtZ, b)


def b_hat(stats, Minv, beta):
    """The BLUPs at a given beta: b_hat_j = M_j^-1 Z_j'(y_j - X_j beta), every group (and chain) at once.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> sol = solve(m.stats, np.array([[0.1]]), 0.57)
    >>> bool(np.allclose(b_hat(m.stats, sol.Minv, sol.beta), sol.b))
    True
    """
    Ztr = residual_moments(stats, beta)[1]                   # Z_j'(y_j - X_j beta)
    return np.einsum("...jqr,...jr->...jq", Minv, Ztr)      # b_hat_j = M_j^-1 Z_j'r_j


def residual_sum_of_squares(stats, beta, b=None):
    """||y - X beta - Z b||^2 from the per-group statistics (no length-n vector), batched over chains.

    With r = y - X beta (see :func:`residual_moments`)::

        ||r_j - Z_j b_j||^2 = r_j'r_j - 2 b_j'Z_j'r_j + b_j'Z_j'Z_j b_j

    Without ``b``: ||y - X beta||^2 = r'r, the fixed part's residual sum of squares.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> beta, b = np.array([1.5, -0.7]), np.zeros((m.J, 1))
    >>> bool(np.isclose(residual_sum_of_squares(m.stats, beta, b), ((m.y - m.X @ beta) ** 2).sum()))
    True
    """
    if b is None:
        return _scalar(_rtr(stats, np.asarray(beta)))
    rtr, Ztr = residual_moments(stats, beta)
    return _scalar(_ssr(stats, rtr, Ztr, b))


def solve(stats, G, sigma2, beta_precision=None, beta=None):
    """Solve the mixed-model equations at (G, sigma2), batched over groups (and chains).

    Parameters
    ----------
    stats : GroupStats
    G : (..., q, q) array, symmetric positive semi-definite; leading axes
        (the Gibbs sampler's chains) are carried through every result.
    sigma2 : float > 0, or an array of shape (...).
    beta_precision : (..., p, p) array, optional
        A normal prior beta ~ N(0, sigma2 * inv(beta_precision)) adds
        ``beta_precision`` to A (the Gibbs sampler's prior beta ~ N(0, tau2 I)
        is ``beta_precision = (sigma2 / tau2) I``); None: flat.
    beta : (..., p) array, optional
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
    >>> chains = solve(m.stats, np.array([[[0.1]], [[0.2]]]), np.array([0.57, 0.6]))   # two chains
    >>> chains.b.shape, bool(np.allclose(chains.beta[0], sol.beta))
    ((2, 85, 1), True)
    """
    s = stats
    T = relative_factor(G, sigma2)                            # G = sigma2 T T'
    q = T.shape[-1]
    M_tilde = congruence(s.ZtZ, T.swapaxes(-1, -2)) + np.eye(q)        # M~_j = T'Z_j'Z_j T + I = L_j L_j'
    M_tilde_inv, logdet_M_tilde = inv_logdet(M_tilde)
    Minv = congruence(M_tilde_inv, T)                         # M_j^-1 = T M~_j^-1 T'
    XtZ_Minv = s.XtZ @ Minv                                   # X_j'Z_j M_j^-1, (J, p, q)
    A = s.XtX_total - (XtZ_Minv @ s.ZtX).sum(-3)              # X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j
    c = s.Xty_total - (XtZ_Minv @ s.Zty[:, :, None]).sum(-3)[..., 0]   # X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j
    if beta_precision is not None:
        A = A + beta_precision
    A_inv, logdet_A = _spd_inverse(A)
    if beta is None:
        beta = (A_inv @ c[..., None])[..., 0]                 # beta_hat = A^-1 c
    rtr, Ztr = residual_moments(s, beta)                      # r'r and Z_j'r_j, r = y - X beta
    b = np.einsum("...jqr,...jr->...jq", Minv, Ztr)           # b_hat_j = M_j^-1 Z_j'r_j (the BLUP)
    rss = _ssr(s, rtr, Ztr, b)                                # ||r - Z b||^2
    rVr = rtr - (Ztr * b).sum((-1, -2))                       # sigma2 r'V^-1 r = r'r - sum_j r_j'Z_j M_j^-1 Z_j'r_j
    return Solution(T, Minv, XtZ_Minv, logdet_M_tilde, A, A_inv, _scalar(logdet_A), beta, b, _scalar(rss),
                    _scalar(rVr), M_tilde)


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
    n, p = stats.n_total, sol.A.shape[-1]
    dof = n - p if reml else n
    value = dof * (LOG_2PI + np.log(sigma2)) + sol.logdet_M_tilde.sum(-1) + sol.rVr / sigma2
    if reml:
        value = value + sol.logdet_A
    return _scalar(-0.5 * value)


def profiled_deviance(stats, G, sigma2, reml, sol=None):
    """-2 x the (restricted) log-likelihood at T = chol(G / sigma2), maximised over sigma2.

    With the relative factor T fixed, the penalised residual sum of squares
    pwrss = sigma2 r'V^-1 r (``sol.rVr``), log|M~_j| and log|A| do not depend on
    sigma2, so the best sigma2 for that T has a closed form::

        sigma2_hat = pwrss / dof,          dof = n (ML) or n - p (REML)
        deviance   = dof (1 + log(2 pi pwrss / dof)) + sum_j log|M~_j| [+ log|A| for REML]

    This is how lme4 evaluates "the other" criterion at a fit (its ``devCrit``):
    ``deviance(fit, REML = FALSE)`` of a REML fit, ``REMLcrit()`` of an ML fit.
    At the optimum of the same criterion it equals -2 x :func:`loglik`.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> G, sigma2 = np.array([[0.1]]), 0.57
    >>> bool(profiled_deviance(m.stats, G, sigma2, reml=False) <= -2 * loglik(m.stats, G, sigma2, reml=False))
    True
    """
    sol = solve(stats, G, sigma2) if sol is None else sol
    n, p = stats.n_total, sol.A.shape[-1]
    dof = n - p if reml else n
    value = dof * (1.0 + np.log(2.0 * np.pi * sol.rVr / dof)) + sol.logdet_M_tilde.sum(-1)
    if reml:
        value = value + sol.logdet_A
    return float(value) if np.ndim(value) == 0 else value


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


# ----------------------------------------------------------------------------
# first and second derivatives of the profiled deviance
# ----------------------------------------------------------------------------
#
# Write V = sigma2 W with W = Z Gam Z' + I and Gam = G / sigma2 (the relative
# covariance; lme4's Lambda Lambda' = T T'). With beta at its GLS value and
# sigma2 at its optimum sigma2_hat = Q / dof, -2 x the (restricted)
# log-likelihood is
#
#     d(Gam) = dof (1 + log(2 pi Q / dof)) + log|W| [+ log|X'W^-1 X| for REML],   Q = y'P y = r'W^-1 r,
#
# P = W^-1 - W^-1 X (X'W^-1 X)^-1 X'W^-1. W is linear in Gam: dW/dGam_ab = Z (I_J (x) E_ab) Z' =: W_ab.
# The identities dP = -P dW P and d W^-1 = -W^-1 dW W^-1 give (P~ = P for REML, W^-1 for ML)
#
#     d_ab     = tr(P~ W_ab) + dof Q_ab / Q,                       Q_ab = -y'P W_ab P y,
#     d_ab,cd  = -tr(P~ W_ab P~ W_cd) + dof [ Q_ab,cd / Q - Q_ab Q_cd / Q^2 ],
#     Q_ab,cd  = y'P W_ab P W_cd P y + y'P W_cd P W_ab P y.
#
# Everything reduces to three per-group quantities (no n x n matrix):
#     D_j = Z_j'W_j^-1 Z_j = Z_j'Z_j - Z_j'Z_j M_j^-1 Z_j'Z_j,   U_j = Z_j'W_j^-1 X_j,   w_j = Z_j'W_j^-1 r_j,
# because S = Z'P Z has the blocks S_jk = delta_jk D_j - U_j C U_k', C = (X'W^-1 X)^-1 = A^-1, and
#     tr(S (I (x) E_ab) S (I (x) E_cd)) = sum_jk (S_jk)_da (S_kj)_bc,
#     y'P W_ab P W_cd P y = sum_jk w_ja (S_jk)_bc w_kd.

import functools  # noqa: E402  (used by theta_index only)

__all__ += ["DevianceDerivatives", "deviance_derivatives", "theta_index", "theta_derivatives",
            "hessian_G_sigma2"]


class DevianceDerivatives(NamedTuple):
    """The profiled deviance -2 l(Gam) (sigma2 and beta at their optima given Gam) and its derivatives.

    ``grad[a, b]`` = d dev / d Gam_ab and ``hess[a, b, c, d]`` = d^2 dev / d Gam_ab d Gam_cd, the q^2
    entries of Gam = G / sigma2 taken as separate variables: for a symmetric change dGam the
    deviance changes by sum grad * dGam + 1/2 sum dGam_ab hess_abcd dGam_cd + ...
    ``Q`` = r'W^-1 r (sigma2_hat = Q / dof) with its gradient ``Q_grad`` and Hessian ``Q_hess``;
    ``logdet_grad``, ``logdet_hess``: those of log|W| [+ log|X'W^-1 X|] alone.
    """

    deviance: float
    grad: np.ndarray
    hess: np.ndarray
    Q: float
    Q_grad: np.ndarray
    Q_hess: np.ndarray
    logdet_grad: np.ndarray
    logdet_hess: np.ndarray
    dof: int


def deviance_derivatives(stats, G, sigma2, reml, sol=None):
    """Profiled deviance, its gradient and its Hessian with respect to the entries of Gam = G / sigma2.

    The formulas are in the comment above this function. The value is lme4's
    profiled deviance (ML) or REML criterion at theta = the relative factor of
    (G, sigma2). Cost O(J q^4 + q^4 p^4), batched over groups.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> d = deviance_derivatives(m.stats, np.array([[0.1]]), 0.57, reml=True)
    >>> d.grad.shape, d.hess.shape
    ((1, 1), (1, 1, 1, 1))
    """
    s = stats
    sol = solve(stats, G, sigma2) if sol is None else sol
    n, p = stats.n_total, sol.A.shape[0]
    dof = n - p if reml else n
    ZtZ_Minv = s.ZtZ @ sol.Minv                              # relative M_j^-1 (M_j = Z_j'Z_j + Gam^-1)
    D = s.ZtZ - ZtZ_Minv @ s.ZtZ                             # Z_j'W_j^-1 Z_j, (J, q, q)
    U = s.ZtX - ZtZ_Minv @ s.ZtX                             # Z_j'W_j^-1 X_j, (J, q, p)
    Ztr = s.Zty - s.ZtX @ sol.beta
    w = Ztr - np.einsum("jqr,jr->jq", ZtZ_Minv, Ztr)          # Z_j'W_j^-1 r_j, (J, q)
    C, Q = sol.A_inv, sol.rVr                                # (X'W^-1 X)^-1 and r'W^-1 r
    dev = profiled_deviance(stats, G, sigma2, reml, sol)
    S_diag = D.sum(0)                                        # sum_j S~_jj
    Dsq = np.einsum("jda,jbc->abcd", D, D)                   # sum_j D_j[d,a] D_j[b,c]
    K = np.einsum("ja,jbc,jd->abcd", w, D, w)                # sum_j w_ja D_j[b,c] w_jd
    if p:
        Uw = np.einsum("jbp,ja->abp", U, w)                  # sum_j w_ja U_j[b,:], (q, q, p)
        K -= np.einsum("abr,dcr->abcd", Uw @ C, Uw)          # - (sum_j w_ja U_jb.) C (sum_k U_kc. w_kd)
    logdet_hess = -Dsq                                       # ML: -tr(W^-1 W_ab W^-1 W_cd)
    if reml and p:
        UCU = U @ C @ np.swapaxes(U, 1, 2)                   # U_j C U_j', (J, q, q)
        S_diag = S_diag - UCU.sum(0)
        N = np.einsum("jxp,jys->xpys", U, U)                 # sum_j U_j[x,p] U_j[y,s]
        logdet_hess = -(Dsq - np.einsum("jda,jbc->abcd", D, UCU) - np.einsum("jda,jbc->abcd", UCU, D)
                        + np.einsum("dcqs,aqbs->abcd",                       # -tr(P W_ab P W_cd):
                                    np.einsum("pq,dpcs->dcqs", C, N),        # sum C_pq C_rs N_dpcs N_aqbr,
                                    np.einsum("rs,aqbr->aqbs", C, N)))       # two O(q^2 p^3) steps
    Q_grad = -np.einsum("ja,jb->ab", w, w)                   # Q_ab = -sum_j w_ja w_jb
    Q_hess = K + K.transpose(2, 3, 0, 1)
    grad = S_diag.T + dof * Q_grad / Q
    hess = logdet_hess + dof * (Q_hess / Q - np.einsum("ab,cd->abcd", Q_grad, Q_grad) / Q ** 2)
    return DevianceDerivatives(float(dev), grad, hess, float(Q), Q_grad, Q_hess, S_diag.T, logdet_hess, dof)


def theta_index(mask):
    """The free entries of lme4's theta: (row, column) positions in the lower triangle of T inside
    G's blocks (``mask`` = ``model.G_mask``), column by column as lme4 orders theta
    (T11, T21, T31, T22, T32, T33 for q = 3)."""
    mask = np.asarray(mask)
    return _theta_index(mask.shape[0], tuple(np.flatnonzero(mask.ravel() > 0).tolist()))


@functools.lru_cache(maxsize=64)
def _theta_index(q, inside):
    cols, rows = np.triu_indices(q)                          # pairs (col, row), col <= row, column-major
    keep = np.isin(rows * q + cols, inside)
    rows, cols = rows[keep], cols[keep]
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def theta_derivatives(stats, G, sigma2, reml, mask=None, sol=None):
    """Profiled deviance, gradient and Hessian with respect to lme4's theta.

    theta lists the entries of the relative factor T (G = sigma2 T T', lme4's
    Lambda) in :func:`theta_index` order. With Gam = T T',
    dGam/dT_ce = E_ce T' + T E_ec and d^2 Gam / dT_ce dT_fg = delta_eg (E_cf + E_fc),
    so by the chain rule (g, H: gradient and Hessian in Gam; J_i = dGam/dtheta_i)::

        grad_i = <g, J_i>,     hess_ij = <J_i, H J_j> + delta_{e_i e_j} (g_{c_i c_j} + g_{c_j c_i}).

    lme4's ``checkConv`` tests the gradient of this same function.

    Returns
    -------
    deviance : float;  grad : (m,);  hess : (m, m);  theta : (m,) the current theta.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> dev, g, H, theta = theta_derivatives(m.stats, np.array([[0.12, -0.04], [-0.04, 0.12]]), 0.56, True)
    >>> g.shape, H.shape
    ((3,), (3, 3))
    """
    sol = solve(stats, G, sigma2) if sol is None else sol
    d = deviance_derivatives(stats, G, sigma2, reml, sol)
    T = sol.T
    q = T.shape[0]
    rows, cols = theta_index(np.ones((q, q)) if mask is None else mask)
    Jac = np.zeros((rows.size, q, q))
    for i, (c, e) in enumerate(zip(rows, cols)):            # q <= 3: a loop over theta, not over groups
        Jac[i, c, :] += T[:, e]                             # E_ce T'
        Jac[i, :, c] += T[:, e]                             # T E_ec
    grad = np.einsum("ab,iab->i", d.grad, Jac)
    hess = np.einsum("iab,abcd,jcd->ij", Jac, d.hess, Jac)
    gs = d.grad + d.grad.T
    hess += np.where(cols[:, None] == cols[None, :], gs[rows[:, None], rows[None, :]], 0.0)
    return d.deviance, grad, 0.5 * (hess + hess.T), T[rows, cols]


def hessian_G_sigma2(stats, G, sigma2, reml, mask=None, sol=None):
    """Hessian of the unprofiled deviance -2 l(G, sigma2) (beta at its GLS value) with respect to
    the free entries of G (in :func:`theta_index` order; an off-diagonal entry moves G_ab and G_ba
    together) and then sigma2.

    With f(Gam, s) = dof log s + L(Gam) + Q(Gam) / s + const (L = log|W| [+ log|X'W^-1 X|]) and
    Gam = G / s, writing a, b for entries of G::

        f_a = L_a + Q_a / s,  f_ab = L_ab + Q_ab / s,  f_as = -Q_a / s^2,  f_ss = -dof / s^2 + 2 Q / s^3
        F_ab = f_ab / s^2
        F_as = -(sum_b f_ab G_b) / s^3 + f_as / s - f_a / s^2
        F_ss = f_ss - 2 sum_a f_as G_a / s^2 + sum_ab G_a f_ab G_b / s^4 + 2 sum_a f_a G_a / s^3

    At the optimum, 2 F^-1 is the asymptotic covariance of (G, sigma2) (as lmerTest
    uses for Satterthwaite's degrees of freedom, there in lme4's (theta, sigma)).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> hessian_G_sigma2(m.stats, np.array([[0.1]]), 0.57, reml=True).shape
    (2, 2)
    """
    sol = solve(stats, G, sigma2) if sol is None else sol
    d = deviance_derivatives(stats, G, sigma2, reml, sol)
    q = d.grad.shape[0]
    qq, s, Gv = q * q, float(sigma2), np.asarray(G, float).ravel()
    Q1, Q2 = d.Q_grad.ravel(), d.Q_hess.reshape(qq, qq)
    f_a = d.logdet_grad.ravel() + Q1 / s
    f_ab = d.logdet_hess.reshape(qq, qq) + Q2 / s
    f_as = -Q1 / s ** 2
    f_ss = -d.dof / s ** 2 + 2 * d.Q / s ** 3
    F = np.empty((qq + 1, qq + 1))
    F[:qq, :qq] = f_ab / s ** 2
    F[:qq, qq] = F[qq, :qq] = -(f_ab @ Gv) / s ** 3 + f_as / s - f_a / s ** 2
    F[qq, qq] = f_ss - 2 * f_as @ Gv / s ** 2 + Gv @ f_ab @ Gv / s ** 4 + 2 * f_a @ Gv / s ** 3
    rows, cols = theta_index(np.ones((q, q)) if mask is None else mask)
    E = np.zeros((rows.size + 1, qq + 1))                   # free entry -> the entries of G it moves
    E[np.arange(rows.size), rows * q + cols] = 1.0
    E[np.arange(rows.size), cols * q + rows] = 1.0
    E[-1, -1] = 1.0
    H = E @ F @ E.T
    return 0.5 * (H + H.T)


def hessian_theta_sigma(stats, G, sigma2, reml, mask=None, sol=None):
    """Gradient and Hessian of the unprofiled deviance -2 l (beta at its GLS value) with respect to
    lme4's ``varpar`` (theta in :func:`theta_index` order, then sigma = sqrt(sigma2)): the
    parametrisation in which lmerTest takes the Hessian for Satterthwaite's degrees of freedom.

    With f(Gam, s) as in :func:`hessian_G_sigma2`, Gam = T T' (J_i = dGam/dtheta_i, see
    :func:`theta_derivatives`) and s = sigma^2::

        grad_i      = <f_Gam, J_i>,                    grad_sigma = 2 sigma f_s
        H_ij        = <J_i, f_GamGam J_j> + delta_{e_i e_j} (f_{c_i c_j} + f_{c_j c_i})
        H_i,sigma   = 2 sigma <J_i, f_Gam,s>,          H_sigma,sigma = 4 sigma^2 f_ss + 2 f_s

    with f_s = dof / s - Q / s^2. Returns (grad, hess).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> g, H = hessian_theta_sigma(m.stats, np.array([[0.1]]), 0.57, reml=True)
    >>> H.shape
    (2, 2)
    """
    sol = solve(stats, G, sigma2) if sol is None else sol
    d = deviance_derivatives(stats, G, sigma2, reml, sol)
    T, q = sol.T, sol.T.shape[0]
    s, sigma = float(sigma2), float(np.sqrt(sigma2))
    f_a = d.logdet_grad + d.Q_grad / s                       # (q, q)
    f_ab = d.logdet_hess + d.Q_hess / s                      # (q, q, q, q)
    f_as = -d.Q_grad / s ** 2
    f_s = d.dof / s - d.Q / s ** 2
    f_ss = -d.dof / s ** 2 + 2 * d.Q / s ** 3
    rows, cols = theta_index(np.ones((q, q)) if mask is None else mask)
    m = rows.size
    Jac = np.zeros((m, q, q))
    for i, (c, e) in enumerate(zip(rows, cols)):
        Jac[i, c, :] += T[:, e]
        Jac[i, :, c] += T[:, e]
    grad = np.append(np.einsum("ab,iab->i", f_a, Jac), 2 * sigma * f_s)
    H = np.empty((m + 1, m + 1))
    fs = f_a + f_a.T
    H[:m, :m] = (np.einsum("iab,abcd,jcd->ij", Jac, f_ab, Jac)
                 + np.where(cols[:, None] == cols[None, :], fs[rows[:, None], rows[None, :]], 0.0))
    H[:m, m] = H[m, :m] = 2 * sigma * np.einsum("iab,ab->i", Jac, f_as)
    H[m, m] = 4 * s * f_ss + 2 * f_s
    return grad, 0.5 * (H + H.T)


__all__ += ["hessian_theta_sigma"]
