r"""Satterthwaite's degrees of freedom for fits with several grouping factors (:mod:`teachlmm.multilevel`).

The method is the one of :mod:`teachlmm.ddf` (lmerTest's): for a contrast
c, ``df = 2 f^2 / (g'A g)`` with ``f = c'Phi c``, ``g = df/dtau``, ``A = 2 H^+``
and H the Hessian of the deviance in lme4's ``tau = (theta, sigma)``. Only the
algebra differs: the random effects of all terms are handled together,
through the cross-products of :class:`teachlmm.multilevel_mme.Algebra`.

The random-effects space
------------------------
Stack the random effects of every term (term 1, the factor with most levels,
then the others, each level by level, as :class:`~teachlmm.multilevel_mme.Algebra`
orders them): M = sum_k J_k q_k of them, Z the n x M matrix of their columns,
Lambda(theta) = blockdiag_k (I_{J_k} (x) T_k). Then V = sigma2 Vt with
Vt = I + Z Lambda Lambda'Z', and with A = Lambda'Z'Z Lambda + I (Woodbury)
everything that involves Vt^-1 is an M x M or M x p product of cross-products::

    H = Z'Vt^-1 Z = Z'Z - Z'Z Lambda A^-1 Lambda'Z'Z
    N = Z'Vt^-1 X = Z'X - Z'Z Lambda A^-1 Lambda'Z'X
    C = (X'Vt^-1 X)^-1,        X'Vt^-1 X = X'X - X'Z Lambda A^-1 Lambda'Z'X
    s = Z'Vt^-1 r,             r = y - X beta_hat
    K = Z'Pt Z = H - N C N'    (Pt = Vt^-1 - Vt^-1 X C X'Vt^-1, the REML projection times sigma2)
    Qf = r'Vt^-1 r = sigma2 * (n - p) for REML (n for ML) at the optimum

No n x n matrix is formed, but H and K are dense M x M: this module refuses
fits with more than ``MAX_RANDOM_EFFECTS`` random effects (a clear error; the
one-factor :mod:`teachlmm.ddf` works per group and has no such limit).

The derivatives
---------------
theta_i is one entry (a, b) of one T_k; with E_i the unit matrix at (a, b),
Lambda_i = dLambda/dtheta_i = I_{J_k} (x) E_i on term k's block, and::

    dVt/dtheta_i           = Z D_i Z',    D_i  = Lambda_i Lambda' + Lambda Lambda_i'
    d2Vt/dtheta_i dtheta_j = Z D_ij Z',   D_ij = Lambda_i Lambda_j' + Lambda_j Lambda_i'   (0 across terms)

Var(beta_hat) = Phi = sigma2 C, so::

    dPhi/dtheta_i = sigma2 C N'D_i N C,          dPhi/dsigma = 2 sigma C.

The deviance with beta profiled out, dof = n - p (REML) or n (ML)::

    f(theta, sigma) = dof log sigma2 + log|Vt| [+ log|X'Vt^-1 X|] + Qf / sigma2 + const

has (K replaced by H in the traces for ML: profiling beta out of the ML
deviance changes the quadratic form, not the determinant)::

    f_i             = tr(D_i K) - s'D_i s / sigma2
    f_ij            = tr(D_ij K) - tr(D_i K D_j K) + (2 s'D_i K D_j s - s'D_ij s) / sigma2
    f_i,sigma       = 2 s'D_i s / sigma^3
    f_sigma         = 2 dof / sigma - 2 Qf / sigma^3
    f_sigma,sigma   = -2 dof / sigma2 + 6 Qf / sigma^4

(d log|Vt| / dtheta_i = tr(H D_i), d log|X'Vt^-1 X| / dtheta_i = -tr(C N'D_i N), and
dPt/dtheta_j = -Pt Vt_j Pt.) The gradient term of the Hessian is kept, as in
lmerTest's numerical Hessian: it matters only at a boundary.

Examples
--------
>>> import teachlmm as tl
>>> fit = tl.multilevel.fit("attain ~ verbal + sex + (1 | primary) + (1 | second)",
...                         tl.read_csv("tests/reference/data/scotssec.csv"))
>>> {k: round(v, 1) for k, v in satterthwaite(fit).items()}       # lmerTest: 33.3, 3356.5, 3370.3
{'(Intercept)': 33.3, 'verbal': 3356.5, 'sexM': 3370.3}
"""
import numpy as np
import scipy.linalg
import scipy.sparse as sp

from . import ddf
from .errors import DesignError, TeachLMMError
from .multilevel_mme import Algebra, n_theta

__all__ = ["MAX_RANDOM_EFFECTS", "Satterthwaite", "satterthwaite", "coef_table", "deviance_hessian"]

MAX_RANDOM_EFFECTS = 4000          # H and K are M x M dense: 128 MB each at this limit


class Satterthwaite:
    """The pieces of Satterthwaite's df for a :class:`~teachlmm.multilevel_fit.MultilevelResult`.

    Attributes
    ----------
    Phi : (p, p) array
        Var(beta_hat) (equals the fit's ``vcov``).
    dPhi : (K+1, p, p) array
        dPhi/dtau, tau = (theta, sigma).
    H : (K+1, K+1) array
        Hessian of the deviance (REML or ML, as the fit) in tau.
    grad : (K+1,) array
        Its gradient (about 0 at an interior optimum).
    A : (K+1, K+1) array
        2 H^+ (eigenvalues below 1e-8 dropped, as lmerTest does).
    """

    def __init__(self, fit):
        alg = Algebra(fit.model)
        M = sum(J * q for J, q in zip(alg.Js, alg.qs))
        if M > MAX_RANDOM_EFFECTS:
            raise DesignError(f"this fit has {M} random effects; the degrees of freedom of several grouping "
                              f"factors are computed with dense {M} x {M} matrices, and the limit is "
                              f"{MAX_RANDOM_EFFECTS}. Use ddf='normal' (z tests), or lmerTest in R")
        theta, reml, sigma2 = np.asarray(fit.theta, float), bool(fit.reml), float(fit.sigma2)
        sigma = np.sqrt(sigma2)
        Ts = alg.Ts(theta)
        ZtZ, ZtX, Zty, XtX, Xty, yty = _cross_products(alg)
        Lam = sp.block_diag([sp.kron(sp.identity(J), T) for J, T in zip(alg.Js, Ts)], format="csr")
        A = np.asarray((Lam.T @ (Lam.T @ ZtZ).T).T) + np.eye(M)              # Lambda'Z'Z Lambda + I
        cho = scipy.linalg.cho_factor(A, lower=True)
        LZ = np.asarray(Lam.T @ ZtZ)                                         # Lambda'Z'Z
        LX, Ly = np.asarray(Lam.T @ ZtX), np.asarray(Lam.T @ Zty)            # Lambda'Z'X, Lambda'Z'y
        AiLZ, AiLX, AiLy = (scipy.linalg.cho_solve(cho, B) for B in (LZ, LX, Ly))
        H = ZtZ - LZ.T @ AiLZ                                                # Z'Vt^-1 Z
        N = ZtX - LZ.T @ AiLX                                                # Z'Vt^-1 X
        C = np.linalg.inv(XtX - LX.T @ AiLX)                                 # (X'Vt^-1 X)^-1
        beta = C @ (Xty - LX.T @ AiLy)
        Ztr, Lr = Zty - ZtX @ beta, Ly - LX @ beta                           # Z'r, Lambda'Z'r
        s = Ztr - LZ.T @ scipy.linalg.cho_solve(cho, Lr)                     # Z'Vt^-1 r
        Qf = float(yty - 2 * beta @ Xty + beta @ XtX @ beta - Lr @ scipy.linalg.cho_solve(cho, Lr))
        K = H - N @ C @ N.T                                                  # Z'Pt Z
        Ktr = K if reml else H                                               # the traces' matrix
        dof = alg.n - alg.p if reml else alg.n
        D, Dij = _dV(alg, Ts)
        DK = [Di @ Ktr for Di in D]                                          # D_i K (sparse x dense)
        Ds = [Di @ s for Di in D]
        nt = len(D)
        g = np.array([np.trace(DK[i]) - s @ Ds[i] / sigma2 for i in range(nt)]
                     + [2 * dof / sigma - 2 * Qf / sigma ** 3])
        Hm = np.empty((nt + 1, nt + 1))
        for i in range(nt):
            for j in range(i, nt):
                dij = Dij.get((i, j))
                second = 0.0 if dij is None else float((dij.multiply(Ktr)).sum() - s @ (dij @ s) / sigma2)
                Hm[i, j] = Hm[j, i] = (second - np.sum(DK[i] * DK[j].T)
                                       + 2 * Ds[i] @ K @ Ds[j] / sigma2)
            Hm[i, nt] = Hm[nt, i] = 2 * s @ Ds[i] / sigma ** 3
        Hm[nt, nt] = -2 * dof / sigma2 + 6 * Qf / sigma2 ** 2
        self.H, self.grad = 0.5 * (Hm + Hm.T), g
        self.A = ddf.vcov_varpar(self.H)
        self.Phi = sigma2 * C
        NC = N @ C
        self.dPhi = np.stack([sigma2 * NC.T @ (Di @ NC) for Di in D] + [2 * sigma * C])
        self.beta = beta

    def df(self, c):
        """df = 2 (c'Phi c)^2 / (g'A g), g_m = c' dPhi/dtau_m c; c a vector or rows of contrasts."""
        c = np.atleast_2d(c)
        f = np.einsum("ip,pr,ir->i", c, self.Phi, c)
        g = np.einsum("ip,mpr,ir->im", c, self.dPhi, c)
        return 2 * f ** 2 / np.einsum("im,mn,in->i", g, self.A, g)


def _cross_products(alg):
    """Z'Z (dense M x M), Z'X, Z'y, X'X, X'y, y'y from the Algebra's stored products (term 1 first)."""
    m, p = alg.m, alg.p
    J1, q1 = alg.Js[0], alg.qs[0]
    G11 = scipy.linalg.block_diag(*alg.gram1) if J1 else np.zeros((0, 0))
    B = alg.B0.toarray()                                                     # Z_1'[Z_rest, X, y]
    C0 = alg.C0                                                              # [Z_rest, X, y]'[...]
    ZtZ = np.block([[G11, B[:, :m]], [B[:, :m].T, C0[:m, :m]]])
    ZtX = np.vstack([B[:, m:m + p], C0[:m, m:m + p]])
    Zty = np.concatenate([B[:, -1], C0[:m, -1]])
    return ZtZ, ZtX, Zty, C0[m:m + p, m:m + p], C0[m:m + p, -1], float(C0[-1, -1])


def _dV(alg, Ts):
    """D_i (sparse M x M, one per theta entry) and the nonzero D_ij (same term), keyed (i, j) with i <= j."""
    D, Dij, where = [], {}, []
    for k, (J, q, T) in enumerate(zip(alg.Js, alg.qs, Ts)):
        rows, cols = np.triu_indices(q)
        for a, b in zip(cols, rows):                                          # theta's order: column by column
            E = np.zeros((q, q))
            E[a, b] = 1.0
            where.append((k, E))
    offsets = np.cumsum([0] + [J * q for J, q in zip(alg.Js, alg.qs)])
    M = offsets[-1]

    def on_term(k, block):
        J = alg.Js[k]
        blocks = [sp.csr_matrix((offsets[k], offsets[k])), sp.kron(sp.identity(J), block),
                  sp.csr_matrix((M - offsets[k + 1], M - offsets[k + 1]))]
        return sp.block_diag(blocks, format="csr")

    for k, E in where:
        T = Ts[k]
        D.append(on_term(k, E @ T.T + T @ E.T))
    for i, (k, Ei) in enumerate(where):
        for j in range(i, len(where)):
            kj, Ej = where[j]
            if kj == k:
                Dij[(i, j)] = on_term(k, Ei @ Ej.T + Ej @ Ei.T)
    assert len(D) == sum(n_theta(q) for q in alg.qs)
    return D, Dij


def deviance_hessian(fit):
    """Hessian and gradient of the deviance (REML or ML, as the fit) in tau = (theta, sigma).

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.multilevel.fit("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> H, g = deviance_hessian(fit)
    >>> H.shape, bool(abs(g).max() < 1e-3)
    ((3, 3), True)
    """
    s = Satterthwaite(fit)
    return s.H, s.grad


def satterthwaite(fit):
    """Satterthwaite df of every fixed effect of a fit with several grouping factors (lmerTest's "df").

    Returns
    -------
    dict name -> df.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.multilevel.fit("yield ~ nitro + Variety + (1 | Block/Variety)",
    ...                         tl.read_csv("tests/reference/data/oats.csv"))
    >>> {k: round(v, 2) for k, v in satterthwaite(fit).items()}      # lmerTest: 10.11, 53, 10, 10
    {'(Intercept)': 10.11, 'nitro': 53.0, 'VarietyMarvellous': 10.0, 'VarietyVictory': 10.0}
    """
    names = fit.model.fixef_names
    return dict(zip(names, Satterthwaite(fit).df(np.eye(len(names))).tolist()))


def coef_table(fit, ddf="Satterthwaite"):
    """lmerTest's coefficient table (Estimate, Std. Error, df, t value, Pr(>|t|)) for a multi-factor fit.

    ``ddf="normal"`` gives z values and normal p-values; Kenward-Roger and between-within are not
    yet available for several grouping factors (a clear error).

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.multilevel.fit("yield ~ nitro + Variety + (1 | Block/Variety)",
    ...                         tl.read_csv("tests/reference/data/oats.csv"))
    >>> round(coef_table(fit)["Pr(>|t|)"]["VarietyVictory"], 4)      # lmerTest: 0.3544
    0.3544
    """
    method = _method(ddf)
    names = fit.model.fixef_names
    est = np.array([fit.fixef[k] for k in names])
    se = np.array([fit.fixef_se[k] for k in names])
    stat = est / se
    if method == "normal":
        cols = {"Estimate": est, "Std. Error": se, "z value": stat, "Pr(>|z|)": _p(stat, np.inf)}
    else:
        df = Satterthwaite(fit).df(np.eye(len(names)))
        cols = {"Estimate": est, "Std. Error": se, "df": df, "t value": stat, "Pr(>|t|)": _p(stat, df)}
    return {c: dict(zip(names, np.asarray(v, dtype=float).tolist())) for c, v in cols.items()}


def _method(name):
    method = ddf._method(name)
    if method not in ("Satterthwaite", "normal"):
        raise TeachLMMError(f"ddf={name!r} is not yet available for several grouping factors; "
                            "use ddf='Satterthwaite' or ddf='normal'")
    return method


def _p(stat, df):
    return ddf._two_sided_p(stat, np.broadcast_to(np.asarray(df, float), np.shape(stat)))
