r"""Degrees of freedom for t and F tests of the fixed effects: Satterthwaite, Kenward-Roger, between-within.

lme4 prints t values without p-values because t = beta_hat_k / SE_k is not
exactly t-distributed: SE_k is computed from *estimated* variance
components. The three corrections below give a t (or F) reference distribution
whose denominator degrees of freedom (df) account for that; ``"normal"`` is
lme4's large-sample z test (df infinite).

The notation is the lecture's: V_j = Z_j G Z_j' + sigma2 I is the covariance of
group j's responses, Phi = Var(beta_hat) = (X'V^-1 X)^-1 = sigma2 A^-1 (A the
Schur complement of :mod:`teachlmm.mme`), P = V^-1 - V^-1 X Phi X'V^-1 the
REML projection, and r = y - X beta_hat, so that P y = V^-1 r.

The linear parameterisation
---------------------------
Write the variance parameters as psi = (the free entries G_ab, a >= b, of G;
sigma2). V is linear in psi::

    V = sum_k psi_k V_k,   V_k = Z (E_ab + E_ba) Z'  (E_aa once on the diagonal),   V_sigma2 = I.

Every derivative below is then a trace or a matrix product in V_k, and V_k
acts on group j only through Z_j. With the per-group products (all from the
group's cross-products, no n_j x n_j matrix)::

    W_j = Z_j'V_j^-1 Z_j,   U_j = Z_j'V_j^-1 X_j

the G-entries give (k, l index G entries, Phi couples the groups)::

    X'V^-1 V_k V^-1 X     = Q_k  = sum_j U_j'E_k U_j
    X'V^-1 V_k V^-1 V_l V^-1 X = Q_kl = sum_j U_j'E_k W_j E_l U_j
    tr(V^-1 V_k)          = sum_j tr(E_k W_j)
    tr(V^-1 V_k V^-1 V_l) = sum_j tr(E_k W_j E_l W_j)

The sigma2 entries need V^-2, which has no small per-group form; Euler's
identity for the linear V avoids it: since sum_k psi_k V_k = V and
V^-1 V V^-1 = V^-1, every quantity f_k linear in V_k satisfies
sum_k psi_k f_k = f(V), so ``f_sigma2 = (f(V) - sum_{k in G} psi_k f_k) / sigma2``
(:func:`_with_sigma2`). For example tr(V^-1 V) = n, X'V^-1 V V^-1 X = Phi^-1.

Satterthwaite (lmerTest)
------------------------
For a contrast c, Var(c'beta_hat) = c'Phi c = f(tau) depends on the variance
parameters tau. lmerTest takes tau = (theta, sigma), lme4's relative Cholesky
factor T (G = sigma2 T T', theta its lower triangle column by column) and
sigma, and::

    df = 2 f^2 / (g'A g),   g = d f / d tau,   A = 2 H^+

H the Hessian of the deviance -2 l (REML for REML fits, ML for ML fits; beta
profiled out) in tau, H^+ its Moore-Penrose inverse with eigenvalues below 1e-8
dropped. H is the Hessian the fit's own Newton steps use,
:func:`teachlmm.mme.hessian_theta_sigma`, written once there (the deviance
differentiated in (G, sigma2) and chain-ruled to tau, the term with the
gradient included: it vanishes at an interior optimum but matters at a
boundary, as in lmerTest's numerical Hessian). What ddf adds is g::

    d Phi / d psi_k = Phi Q_k Phi = -Phi P_k Phi,     d Phi / d tau_m = sum_k (d psi_k / d tau_m) d Phi / d psi_k

with d psi / d tau from G = sigma2 T T' (:func:`_tau_jacobian`).

Kenward-Roger (pbkrtest)
------------------------
Kenward & Roger (1997), as Halekoh & Hojsgaard (2014) implement it, work in
psi with the expected REML information. With P_k = -X'V^-1 V_k V^-1 X,
Q_kl = X'V^-1 V_k V^-1 V_l V^-1 X and W = 2 I_E^-1::

    I_E[k, l] = tr(V^-1 V_k V^-1 V_l) - 2 tr(Phi Q_kl) + tr(Phi P_k Phi P_l)   (= tr(P V_k P V_l))
    Phi_A     = Phi + 2 Phi U Phi,   U = sum_kl W_kl (Q_kl - P_k Phi P_l)

Phi_A is the adjusted covariance of beta_hat (the small-sample bias of the
plug-in Phi, plus the variability of psi_hat). For an r-row contrast L, with
Theta = L'(L Phi L')^-1 L and u_k = Theta Phi P_k Phi::

    A1 = sum_kl W_kl tr(u_k) tr(u_l),   A2 = sum_kl W_kl tr(u_k u_l),   B = (A1 + 6 A2) / (2 r)
    g = ((r+1) A1 - (r+4) A2) / ((r+2) A2),   c1, c2, c3 = (g, r - g, r + 2 - g) / (3r + 2(1 - g))
    rho = (1 - A2/r)^2 (1 + c1 B) / (r (1 - c2 B)^2 (1 - c3 B))
    df  = 4 + (r + 2) / (r rho - 1),   F = lambda (beta' L'(L Phi_A L')^-1 L beta) / r,
    lambda = df (1 - A2/r) / (df - 2).

KR is defined for REML fits: lmerTest refuses an ML fit, pbkrtest refits it by
REML. teachlmm does as lmerTest (a clear error: refit with ``reml=True``).

Between-within (nlme)
---------------------
nlme's ``getFixDF`` rule for one grouping factor: a column of X that varies
within at least one group is estimated at the residual level, one that is
constant within every group at the group level. Then::

    df(between column) = J - (number of between columns) - 1 (for the intercept)
    df(within column)  = n - J - (number of within columns)
    df(intercept)      = the larger of the two.

It ignores the random slopes (a within column with a random slope is still
tested against n - J - p_within df).

At a boundary
-------------
A variance at 0 (or a correlation at +-1) is a singular fit. The formulas
stay defined: H keeps its curvature from the gradient term, and
eigenvalues of H below 1e-8 are dropped as lmerTest does (a warning says
so). The df are then those of lmerTest and pbkrtest, but the theory behind
them (a variance estimate with a normal sampling distribution) does not hold
at a boundary: read them as rough.
"""
import math
import warnings
from typing import NamedTuple, Optional

import numpy as np
import scipy.stats as sps

from . import mme, validators
from .errors import TeachLMMError
from .tables import SIGNIF_CODES, format_column, format_p, format_table, stars

__all__ = ["DDF_METHODS", "coef_table", "satterthwaite", "kenward_roger", "between_within", "anova",
           "FTable", "wald_intervals", "contrasts_type3", "deviance_hessian"]

DDF_METHODS = ("Satterthwaite", "Kenward-Roger", "between-within", "normal")
EIGEN_TOL = 1e-8          # lmerTest's tolerance for the eigenvalues of the deviance Hessian


def _method(ddf):
    """The canonical name of a ddf method (case and spelling tolerant: "kr", "satterthwaite")."""
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    aliases = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger", "kr": "Kenward-Roger",
               "kenwardroger": "Kenward-Roger", "between-within": "between-within", "betweenwithin":
               "between-within", "normal": "normal", "z": "normal", "asymptotic": "normal"}
    if key not in aliases:
        raise TeachLMMError(f"ddf must be one of {', '.join(DDF_METHODS)}; got {ddf!r}")
    return aliases[key]


# ----------------------------------------------------------------------------
# the variance parameters: free entries of G, theta, and the basis matrices E_k
# ----------------------------------------------------------------------------

def free_entries(model):
    """(a, b) pairs, a >= b, of the free entries of G: the lower triangle inside G's blocks, column
    by column, in the order of lme4's theta (the entries of T; :func:`teachlmm.mme.theta_index`)."""
    rows, cols = mme.theta_index(model.G_mask)
    return [(int(a), int(b)) for a, b in zip(rows, cols)]


def _basis(entries, q):
    """E_k = e_a e_b' + e_b e_a' (E_aa = e_a e_a'): V_k = Z E_k Z' is dV/dG_ab."""
    E = np.zeros((len(entries), q, q))
    for k, (a, b) in enumerate(entries):
        E[k, a, b] = E[k, b, a] = 1.0
    return E


def _with_sigma2(psi, sigma2, part, total):
    """Append the sigma2 entry of a quantity linear in V_k: sum_k psi_k f_k = f(V) gives
    f_sigma2 = (f(V) - sum_{k in G} psi_k f_k) / sigma2. ``part`` has the G entries on axis 0."""
    f_s = (np.asarray(total, dtype=float) - np.tensordot(psi, part, axes=(0, 0))) / sigma2
    return np.concatenate([part, f_s[None]], axis=0)


def _with_sigma2_bilinear(psi, sigma2, part, linear):
    """Extend B[k, l] (G entries on axes 0, 1; B[l, k] = B[k, l] transposed in any trailing
    matrix axes) to sigma2, from sum_k psi_k B[k, l] = linear[l] (``linear`` already extended)."""
    K = part.shape[0]
    row = (linear[:K] - np.tensordot(psi, part, axes=(0, 0))) / sigma2            # B[sigma2, l], l in G
    swap = (lambda x: np.swapaxes(x, -1, -2)) if part.ndim > 2 else (lambda x: x)
    corner = (linear[K] - np.tensordot(psi, swap(row), axes=(0, 0))) / sigma2     # B[sigma2, sigma2]
    out = np.empty((K + 1, K + 1) + part.shape[2:])
    out[:K, :K], out[K, :K], out[:K, K], out[K, K] = part, row, swap(row), corner
    return out


# ----------------------------------------------------------------------------
# the per-group algebra: every derivative in psi
# ----------------------------------------------------------------------------

class Derivatives(NamedTuple):
    """Phi and its derivatives in psi = (G entries, sigma2), and the pieces only Kenward-Roger needs.

    entries : the (a, b) of the G entries.   psi : (K+1,) their values and sigma2.
    Phi : (p, p) Var(beta_hat).   dPhi : (K+1, p, p) dPhi/dpsi_k.
    P : (K+1, p, p) P_k = -X'V^-1 V_k V^-1 X.
    Q : (K+1, K+1, p, p) Q_kl, and info_reml : (K+1, K+1) tr(P V_k P V_l), twice the expected
    REML information (both None unless ``kenward_roger=True``).
    """

    entries: list
    psi: np.ndarray
    Phi: np.ndarray
    dPhi: np.ndarray
    P: np.ndarray
    Q: Optional[np.ndarray]
    info_reml: Optional[np.ndarray]


def derivatives(fit, kenward_roger=False):
    """Phi, dPhi/dpsi_k and P_k (and, for Kenward-Roger, Q_kl and the REML information) from the
    per-group products (see the module text).

    Cost O(J K q^2 p) for the first derivatives, O(J K^2 q^2 p^2 + K^2 p^3) more for Kenward-Roger,
    with K free entries of G: no n x n matrix, no loop over groups.
    """
    if not fit.model.fitting_basis()[1].is_identity:
        raise TeachLMMError("degrees of freedom are not yet computed for a model with a column whose mean is far "
                            "above its spread (it is fitted in a centred basis); subtract a constant from that "
                            "column (e.g. centre it) and refit, or use ddf='normal'")
    m, s, sol = fit.model, fit.model.stats, fit.solution
    s2, n = fit.sigma2, m.stats.n_total
    entries = free_entries(m)
    E = _basis(entries, m.q)
    psi = np.array([fit.G[a, b] for a, b in entries])
    Phi = s2 * sol.A_inv
    # per-group products W_j, U_j (Z_j'V_j^-1 Z_j = (Z'Z - Z'Z M^-1 Z'Z)/sigma2, ...)
    ZtZ_Minv = s.ZtZ @ sol.Minv
    Wj = (s.ZtZ - ZtZ_Minv @ s.ZtZ) / s2
    Uj = (s.ZtX - ZtZ_Minv @ s.ZtX) / s2
    EU = np.einsum("kab,jbp->jkap", E, Uj)                           # E_k U_j
    Qk = np.einsum("jap,jkar->kpr", Uj, EU)                          # sum_j U_j'E_k U_j
    Pk = _with_sigma2(psi, s2, -Qk, -sol.A / s2)                     # P_k = -X'V^-1 V_k V^-1 X; X'V^-1 X = Phi^-1
    PhiP = Phi @ Pk                                                  # (K+1, p, p)
    dPhi = -(PhiP @ Phi)                                             # Phi Q_k Phi = -Phi P_k Phi
    Q = info_reml = None
    if kenward_roger:
        EW = np.einsum("kab,jbc->jkac", E, Wj)                       # E_k W_j, (J, K, q, q)
        tr_VinvVk = _with_sigma2(psi, s2, np.einsum("kab,ba->k", E, Wj.sum(0)), n)
        K_trace = _with_sigma2_bilinear(psi, s2, np.einsum("jkab,jlba->kl", EW, EW), tr_VinvVk)
        Qkl = np.einsum("jkap,jab,jlbr->klpr", EU, Wj, EU)           # sum_j U_j'E_k W_j E_l U_j
        Q = _with_sigma2_bilinear(psi, s2, Qkl, -Pk)
        info_reml = (K_trace - 2 * np.einsum("pr,klrp->kl", Phi, Q)
                     + np.einsum("kpr,lrp->kl", PhiP, PhiP))
    return Derivatives(entries, np.append(psi, s2), Phi, dPhi, Pk, Q, info_reml)


# ----------------------------------------------------------------------------
# from psi to lmerTest's tau = (theta, sigma)
# ----------------------------------------------------------------------------

def _tau_jacobian(fit, entries):
    """J = dpsi/dtau (K+1, K+1): how the G entries and sigma2 move with tau = (theta, sigma).

    G = sigma2 T T' with T_cd = theta_m:  dG/dtheta_m = sigma2 (E_m T' + T E_m'),
    dG/dsigma = 2 sigma T T';  sigma2 = sigma^2.  (E_m: 1 at (c, d), 0 elsewhere.)
    """
    T, s2 = fit.solution.T, fit.sigma2
    sigma, q, K = math.sqrt(s2), T.shape[0], len(entries)
    Em = np.zeros((K, q, q))
    for m_, (c, d) in enumerate(entries):
        Em[m_, c, d] = 1.0
    rows, cols = np.array([a for a, _ in entries], dtype=int), np.array([b for _, b in entries], dtype=int)
    dTT = Em @ T.T + T @ np.swapaxes(Em, 1, 2)                              # (K, q, q), d(TT')/dtheta_m
    J = np.zeros((K + 1, K + 1))
    J[:K, :K] = s2 * dTT[:, rows, cols].T
    J[:K, K] = 2 * sigma * (T @ T.T)[rows, cols]
    J[K, K] = 2 * sigma
    return J


def deviance_hessian(fit, reml=None):
    """Hessian of the deviance (-2 x REML or ML log-likelihood, beta profiled out) in tau = (theta, sigma).

    The matrix lmerTest differentiates numerically (``numDeriv::hessian`` of its
    ``devfun_vp``); here analytic: :func:`teachlmm.mme.hessian_theta_sigma`, the
    Hessian the fit's Newton steps are built from, at the fit's (G, sigma2).

    Returns
    -------
    H : (K+1, K+1) array.   grad : (K+1,) gradient in tau (about 0 at an interior optimum).

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> H, g = deviance_hessian(fit)
    >>> H.shape, bool(abs(g).max() < 1e-3)
    ((2, 2), True)
    """
    m = fit.model
    derivatives(fit)                          # the same refusal of a centred basis as every df method
    grad, H = mme.hessian_theta_sigma(m.stats, fit.G, fit.sigma2, fit.reml if reml is None else reml,
                                      mask=m.G_mask, sol=fit.solution)
    return H, grad


def vcov_varpar(H, warn=True):
    """A = 2 H^+, H^+ the Moore-Penrose inverse keeping eigenvalues above 1e-8 (lmerTest's rule)."""
    vals, vecs = np.linalg.eigh(H)
    keep = vals > EIGEN_TOL
    if warn and (vals < -EIGEN_TOL).any():
        warnings.warn(f"the deviance Hessian has {(vals < -EIGEN_TOL).sum()} negative eigenvalue(s) "
                      f"({vals.min():.3g}): the fit is not at a minimum; the Satterthwaite df are unreliable",
                      stacklevel=3)
    if warn and (np.abs(vals) <= EIGEN_TOL).any():
        warnings.warn("the deviance Hessian has an eigenvalue near 0 (a boundary or flat direction); "
                      "it is dropped from the inverse as lmerTest does", stacklevel=3)
    return 2 * (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T


class Satterthwaite:
    """What Satterthwaite's df need from a fit: Phi, dPhi/dtau (K+1, p, p) and A = Var(tau_hat).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> round(float(Satterthwaite(fit).df(np.array([0.0, 1.0]))[0]), 1)
    914.9
    """

    def __init__(self, fit):
        d = derivatives(fit)
        J = _tau_jacobian(fit, d.entries)
        self.H, _ = deviance_hessian(fit)                                 # mme's Hessian in tau
        self.A = vcov_varpar(self.H)
        self.Phi = d.Phi
        self.dPhi = np.tensordot(J, d.dPhi, axes=(0, 0))                  # dPhi/dtau_m = sum_k J_km dPhi/dpsi_k

    def df(self, c):
        """df = 2 (c'Phi c)^2 / (g'A g), g_m = c' dPhi/dtau_m c; c a vector or rows of contrasts."""
        c = np.atleast_2d(c)
        f = np.einsum("ip,pr,ir->i", c, self.Phi, c)
        g = np.einsum("ip,mpr,ir->im", c, self.dPhi, c)
        return 2 * f ** 2 / np.einsum("im,mn,in->i", g, self.A, g)

    def F_df(self, L):
        """Denominator df of the F test of L beta = 0 (lmerTest's ``contestMD``): the eigenvectors
        of L Phi L' give r independent t tests with df nu_m; E = sum nu_m / (nu_m - 2),
        df = 2 E / (E - r) (2 if some nu_m <= 2)."""
        d, P = np.linalg.eigh(L @ self.Phi @ L.T)
        d, P = d[::-1], P[:, ::-1]
        r = int((d > max(np.sqrt(np.finfo(float).eps) * d[0], 0)).sum())
        nu = self.df(P[:, :r].T @ L)
        if r == 1:
            return r, float(nu[0]), P[:, :r], d[:r]
        if np.all(np.abs(np.diff(nu)) < 1e-8):
            return r, float(nu.mean()), P[:, :r], d[:r]
        if np.any(nu <= 2):
            return r, 2.0, P[:, :r], d[:r]
        E = np.sum(nu / (nu - 2))
        return r, float(2 * E / (E - r)), P[:, :r], d[:r]


def satterthwaite(fit):
    """Satterthwaite df of every fixed effect, lmerTest's ``summary()`` column "df".

    Returns
    -------
    dict name -> df.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> {k: round(v, 1) for k, v in satterthwaite(fit).items()}
    {'(Intercept)': 87.7, 'floor': 914.9}
    """
    return dict(zip(fit.fixef_names, Satterthwaite(fit).df(np.eye(fit.model.p)).tolist()))


# ----------------------------------------------------------------------------
# Kenward-Roger
# ----------------------------------------------------------------------------

class KenwardRoger:
    """pbkrtest's ``vcovAdj``: the adjusted covariance Phi_A and the pieces P_k, W of its df.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> round(KenwardRoger(fit).df(np.array([0.0, 1.0])), 1)
    914.8
    """

    def __init__(self, fit):
        if not fit.reml:
            raise TeachLMMError("Kenward-Roger's df are defined for REML fits (lmerTest refuses ML fits; "
                                "pbkrtest refits by REML). Fit the model with reml=True, or use "
                                "ddf='Satterthwaite', which has an ML version.")
        d = derivatives(fit, kenward_roger=True)
        Phi, P, Q, I_E = d.Phi, d.P, d.Q, d.info_reml
        vals = np.linalg.eigvalsh(I_E)
        self.W = 2 * (np.linalg.inv(I_E) if np.abs(vals).min() > 1e-10 else np.linalg.pinv(I_E))
        PhiP = Phi @ P
        U = np.einsum("kl,klpr->pr", self.W, Q) - np.einsum("kl,kpa,lar->pr", self.W, P, PhiP)
        self.Phi, self.P = Phi, P
        self.PhiA = Phi + 2 * Phi @ U @ Phi

    def _A1_A2(self, L):
        Theta = L.T @ np.linalg.solve(L @ self.Phi @ L.T, L)
        u = Theta @ self.Phi @ self.P @ self.Phi                        # (K+1, p, p): u_k = Theta Phi P_k Phi
        tr = np.einsum("kpp->k", u)
        A1 = tr @ self.W @ tr
        A2 = np.einsum("kl,kpr,lrp->", self.W, u, u)
        return A1, A2

    def df_and_scale(self, L):
        """(df, F scaling lambda) for the F test of the rows of L (Kenward & Roger 1997, eq. in module text)."""
        L = np.atleast_2d(L)
        r = np.linalg.matrix_rank(L)
        A1, A2 = self._A1_A2(L)
        B = (A1 + 6 * A2) / (2 * r)
        g = ((r + 1) * A1 - (r + 4) * A2) / ((r + 2) * A2)
        den = 3 * r + 2 * (1 - g)
        c1, c2, c3 = g / den, (r - g) / den, (r + 2 - g) / den
        V0, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        rho = (1 - A2 / r) ** 2 / V1 ** 2 * V0 / V2 / r
        df = 4 + (r + 2) / (r * rho - 1)
        scale = 1.0 if abs(df - 2) < 1e-2 else df * (1 - A2 / r) / (df - 2)
        return float(df), float(scale)

    def df(self, c):
        """KR df of the single contrast c'beta."""
        return self.df_and_scale(np.atleast_2d(c))[0]


def kenward_roger(fit):
    """Kenward-Roger df and adjusted standard errors sqrt(diag(Phi_A)) of every fixed effect.

    Returns
    -------
    (dict name -> df, dict name -> adjusted SE)

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> df, se = kenward_roger(fit)
    >>> round(df["(Intercept)"], 1), round(se["floor"], 4)
    (85.0, 0.0706)
    """
    kr = KenwardRoger(fit)
    names, p = fit.fixef_names, fit.model.p
    df = {k: kr.df(np.eye(p)[i]) for i, k in enumerate(names)}
    se = dict(zip(names, np.sqrt(np.diag(kr.PhiA)).tolist()))
    return df, se


# ----------------------------------------------------------------------------
# between-within
# ----------------------------------------------------------------------------

def _varies_within(model):
    """For each column of X: does it vary within at least one group? (None: constant overall.)"""
    X = model.X
    if X is None:
        raise TeachLMMError("ddf='between-within' needs the rows of X; this model was built from chunks. "
                            "Build it with tl.Model(formula, data), or use ddf='Satterthwaite'.")
    J = model.J
    lo = np.full((J, X.shape[1]), np.inf)
    hi = np.full((J, X.shape[1]), -np.inf)
    np.minimum.at(lo, model.codes, X)
    np.maximum.at(hi, model.codes, X)
    scale = np.maximum(np.abs(X).max(0), 1e-300)
    within = ((hi - lo) > 1e-10 * scale).any(0)
    constant = (X.max(0) - X.min(0)) <= 1e-10 * scale
    return within, constant


def between_within(fit):
    """nlme's between-within df (``getFixDF`` for one grouping factor; see the module text).

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + log_uranium + (1 | county)", tl.load_radon()))
    >>> between_within(fit)
    {'(Intercept)': 833, 'floor': 833, 'log_uranium': 83}
    """
    m = fit.model
    within, constant = _varies_within(m)
    df_between = m.J - int((~within & ~constant).sum())
    df_within = m.n - m.J - int((within & ~constant).sum())
    if constant.any():
        df_between -= 1
    else:
        df_within += 1
    out = {}
    for k, name in enumerate(fit.fixef_names):
        out[name] = max(df_between, df_within) if constant[k] else (df_within if within[k] else df_between)
    return out


# ----------------------------------------------------------------------------
# the coefficient table
# ----------------------------------------------------------------------------

def _two_sided_p(stat, df):
    """P(|T| >= |stat|) for T ~ t(df) (the normal when df is infinite)."""
    stat, df = np.asarray(stat, dtype=float), np.asarray(df, dtype=float)
    return np.where(np.isinf(df), 2 * sps.norm.sf(np.abs(stat)), 2 * sps.t.sf(np.abs(stat), np.where(
        np.isinf(df), 1.0, df)))


def coef_table(fit, ddf="Satterthwaite"):
    """lmerTest's coefficient table: estimates, standard errors, df, t values and p-values.

    Parameters
    ----------
    fit : MixedModelResult
    ddf : {"Satterthwaite", "Kenward-Roger", "between-within", "normal"}
        The denominator degrees of freedom (module text). "Kenward-Roger" also
        replaces the standard errors by pbkrtest's adjusted ones (REML fits
        only). "normal" is lme4's z test: columns "z value" and "Pr(>|z|)".

    Returns
    -------
    dict column name -> dict fixed-effect name -> value; columns "Estimate",
    "Std. Error", "df", "t value", "Pr(>|t|)" ("Estimate", "Std. Error",
    "z value", "Pr(>|z|)" for "normal").

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> tab = coef_table(fit)
    >>> round(tab["df"]["(Intercept)"], 2), round(tab["t value"]["floor"], 3)
    (87.66, -9.839)
    >>> sorted(coef_table(fit, ddf="normal"))
    ['Estimate', 'Pr(>|z|)', 'Std. Error', 'z value']
    """
    method = _method(ddf)
    names = fit.fixef_names
    est = np.array([fit.fixef[k] for k in names])
    se = np.array([fit.fixef_se[k] for k in names])
    if method == "normal":
        z = est / se
        cols = {"Estimate": est, "Std. Error": se, "z value": z, "Pr(>|z|)": _two_sided_p(z, np.inf)}
    else:
        if method == "Satterthwaite":
            df = Satterthwaite(fit).df(np.eye(fit.model.p))
        elif method == "Kenward-Roger":
            kr = KenwardRoger(fit)
            df = np.array([kr.df(row) for row in np.eye(fit.model.p)])
            se = np.sqrt(np.diag(kr.PhiA))
        else:
            bw = between_within(fit)
            df = np.array([float(bw[k]) for k in names])
        t = est / se
        cols = {"Estimate": est, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": _two_sided_p(t, df)}
    return {c: dict(zip(names, np.asarray(v, dtype=float).tolist())) for c, v in cols.items()}


def format_coef_table(table):
    """The fixed-effects block of lmerTest's ``summary()`` for a :func:`coef_table` result."""
    names = list(table["Estimate"])
    if not names:
        return "(no fixed effects)"
    z = "z value" in table
    stat, pcol = ("z value", "Pr(>|z|)") if z else ("t value", "Pr(>|t|)")
    header = ["", "Estimate", "Std. Error"] + ([] if z else ["df"]) + [stat, pcol, ""]
    est = format_column([table["Estimate"][k] for k in names])          # R's format(): 5 significant digits
    se = format_column([table["Std. Error"][k] for k in names])
    rows = []
    for i, k in enumerate(names):
        p = table[pcol][k]
        row = [k, est[i], se[i]]
        if not z:
            row.append(f"{table['df'][k]:.2f}")
        rows.append(row + [f"{table[stat][k]:.3f}", format_p(p), stars(p)])
    return format_table(rows, header, indent="") + "\n---\n" + SIGNIF_CODES


def summary_header(ddf):
    """lmerTest's note on the method, for the first line of ``summary()``."""
    method = _method(ddf)
    return {"Satterthwaite": "t-tests use Satterthwaite's method",
            "Kenward-Roger": "t-tests use the Kenward-Roger method (adjusted standard errors)",
            "between-within": "t-tests use the between-within df of nlme",
            "normal": "z-tests: normal approximation (df infinite)"}[method]


def wald_intervals(fit, level=0.95, ddf="Satterthwaite"):
    """beta_k -+ t_(df_k, 1 - alpha/2) SE_k, with the df (and for Kenward-Roger the adjusted SE) of ``ddf``.

    Returns a dict ``name -> (low, high)``; ``fit.confint(ddf=...)`` prints it as a table.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> [round(float(v), 4) for v in wald_intervals(fit, ddf="Kenward-Roger")["(Intercept)"]]
    [1.3587, 1.5645]
    """
    level = validators.level(level)
    tab = coef_table(fit, ddf)
    df = tab.get("df", {k: np.inf for k in tab["Estimate"]})
    out = {}
    for k, est in tab["Estimate"].items():
        q = sps.norm.ppf(0.5 + level / 2) if np.isinf(df[k]) else sps.t.ppf(0.5 + level / 2, df[k])
        half = q * tab["Std. Error"][k]
        out[k] = (float(est - half), float(est + half))
    return out


# ----------------------------------------------------------------------------
# type III F tests
# ----------------------------------------------------------------------------

def _fixed_terms(model):
    """The fixed terms other than the intercept (R's term labels), with their factors."""
    return [t for t in model.formula.fixed if t.factors]


def _synthetic_variables(model, terms):
    """Model-matrix columns of the terms' variables on a synthetic data set: every combination of the
    factor levels, each with several random values of the numeric columns, so that a column identity
    holding there is a polynomial identity (it holds for any data).

    Returns ``({variable: (columns, is_factor)}, n)`` in the form design.py's ``_part_columns`` takes:
    ``columns`` a list of (name suffix, values).
    """
    used = list(dict.fromkeys(f for t in terms for f in t.factors))
    levels = {v: model._state[v][1] for v in used
              if model._state.get(v) is not None and model._state[v][0] == "levels"}
    factors = [v for v in used if v in levels]
    grids = np.meshgrid(*[np.arange(len(levels[f])) for f in factors], indexing="ij")
    combos = np.stack([g.ravel() for g in grids], axis=1) if factors else np.zeros((1, 0), dtype=int)
    numerics = [v for v in used if v not in levels]
    width = {v: (int(model._exprs[v][2][1][1]) if model._exprs[v][:2] == ("call", "poly") else 1) for v in numerics}
    reps = 2 ** sum(width.values()) + 3
    rng = np.random.default_rng(20140101)
    n = combos.shape[0] * reps
    variables = {}
    for i, f in enumerate(factors):
        idx = np.repeat(combos[:, i], reps)
        variables[f] = ([(str(lev), (idx == k).astype(float)) for k, lev in enumerate(levels[f])], True)
    for v in numerics:
        names = [str(k) for k in range(1, width[v] + 1)] if width[v] > 1 else [""]
        variables[v] = ([(nm, rng.normal(size=n)) for nm in names], False)
    return variables, n


def _full_columns(term, variables):
    """R's ``model.matrix(~ 0 + term)`` on the complete design: the product of every factor's full
    dummy coding (all levels) and the numeric columns."""
    cols = [("", None)]
    for f in term.factors:
        new = [(f + suffix, v) for suffix, v in variables[f][0]]
        cols = [((a + ":" + b) if a else b, v if u is None else u * v) for a, u in cols for b, v in new]
    return cols


def _contains(t1, t2, variables):
    """lmerTest's containment: t2 has all of t1's variables and more, and the same numeric ones."""
    v1, v2 = set(t1.factors), set(t2.factors)
    num = lambda vs: {v for v in vs if not variables[v][1]}       # noqa: E731
    return v1 < v2 and num(v1) == num(v2)


def contrasts_type3(model):
    """lmerTest's type III hypotheses: a dict term -> contrast matrix L (rows) on the fixed effects.

    The hypotheses do not depend on the coding of the factors: for each term,
    L comes from the coefficients of the complete (full dummy) design in terms
    of X, orthogonalised against the terms that contain it (lmerTest's
    ``get_contrasts_type3``). A model with a single term gets lmerTest's type I
    contrasts (the Doolittle rows of X'X), as lmerTest does.

    Raises
    ------
    TeachLMMError
        For a model that is not hierarchical (an interaction without its
        margins): its type III hypotheses would depend on the data's cells.
    """
    names = list(model.fixef_names)
    terms = _fixed_terms(model)
    variables, n = _synthetic_variables(model, terms)
    X = model._matrix(model.formula.fixed, variables, n)
    term_cols = {}
    rd_cols, rd_names = [], []
    if any(not t.factors for t in model.formula.fixed):
        rd_cols.append(np.ones(n))
        rd_names.append("(Intercept)")
    for t in terms:
        full = _full_columns(t, variables)
        rd_names += [nm for nm, _ in full]
        rd_cols += [c for _, c in full]
        term_cols[t.name] = [k for k, nm in enumerate(names) if nm in {a for a, _ in full}]
    if len(terms) <= 1 or model.p <= 1:                      # lmerTest: type I contrasts (Doolittle)
        R = np.linalg.cholesky(model.stats.XtX_total).T
        D = R / np.diag(R)[:, None]
        return {t.name: D[term_cols[t.name]] for t in terms}
    rdX = np.column_stack(rd_cols)
    coef, *_ = np.linalg.lstsq(X, rdX, rcond=None)           # rdX = X coef (exactly, if hierarchical)
    if np.abs(X @ coef - rdX).max() > 1e-8 * max(1.0, np.abs(rdX).max()):
        raise TeachLMMError("type III tests need a hierarchical model: every interaction's lower-order terms "
                            "(e.g. a and b for a:b) must be in the formula. Add them, or test with a "
                            "likelihood-ratio test of two fits (tl.anova(fit_small, fit_big)).")
    L = coef.T                                               # rows: complete-design parameters; columns: X
    order = sorted(terms, key=lambda t: -len(t.factors))     # higher-order terms first (stable)
    for t in order:
        above = [u for u in terms if _contains(t, u, variables)]
        if above:
            C = L[:, sorted({k for u in above for k in term_cols[u.name]})]
            cols = term_cols[t.name]
            L[:, cols] -= C @ np.linalg.lstsq(C, L[:, cols], rcond=None)[0]
    L[np.abs(L) < 1e-10] = 0.0
    rows = [rd_names.index(nm) for nm in names]
    L = L[rows]                                              # p x p: rows named like X's columns
    out = {}
    for t in terms:
        Lt = L[:, term_cols[t.name]].T
        out[t.name] = Lt[np.abs(Lt).sum(1) > 1e-8]
    return out


class FTable:
    """Type III F tests, one row per term (lmerTest's ``anova(fit, type = 3)``).

    Attributes
    ----------
    rows : list of dict with keys "term", "NumDF", "DenDF", "F value", "Pr(>F)"
        (and "Sum Sq", "Mean Sq" as lmerTest prints them).
    ddf : the method of the denominator df.
    """

    def __init__(self, rows, ddf):
        self._rows, self.ddf = rows, ddf

    @property
    def rows(self):
        return [dict(r) for r in self._rows]

    def __str__(self):
        head = f"Type III Analysis of Variance Table with {self.ddf}'s method"
        header = ["", "Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)", ""]
        rows = [[r["term"], f"{r['Sum Sq']:.5g}", f"{r['Mean Sq']:.5g}", f"{r['NumDF']:d}",
                 f"{r['DenDF']:.3f}", f"{r['F value']:.4f}", format_p(r["Pr(>F)"]), stars(r["Pr(>F)"])]
                for r in self._rows]
        return head + "\n" + format_table(rows, header, indent="") + "\n---\n" + SIGNIF_CODES

    def __repr__(self):
        return str(self)


def anova(fit, ddf="Satterthwaite"):
    """Type III F tests of every fixed term (lmerTest's ``anova(fit, type = 3)``).

    For the contrast matrix L of a term (r independent rows), F is the Wald
    statistic (L beta)'(L Phi L')^-1 (L beta) / r on r and the term's
    denominator df: Satterthwaite's (lmerTest's ``contestMD``) or
    Kenward-Roger's (pbkrtest's scaled F, with Phi_A in place of Phi).

    Parameters
    ----------
    fit : MixedModelResult
    ddf : {"Satterthwaite", "Kenward-Roger"}

    Returns
    -------
    FTable

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + log_uranium + (1 | county)", tl.load_radon()))
    >>> [(r["term"], r["NumDF"], round(r["F value"], 2)) for r in anova(fit).rows]
    [('floor', 1, 94.34), ('log_uranium', 1, 61.61)]
    """
    method = _method(ddf)
    if method not in ("Satterthwaite", "Kenward-Roger"):
        raise TeachLMMError(f"F tests by term use ddf='Satterthwaite' or 'Kenward-Roger' (as lmerTest), "
                            f"not {ddf!r}")
    Ls = contrasts_type3(fit.model)
    beta, s2 = fit.beta, fit.sigma2
    engine = Satterthwaite(fit) if method == "Satterthwaite" else KenwardRoger(fit)
    rows = []
    for term, L in Ls.items():
        if method == "Satterthwaite":
            r, df, P, d = engine.F_df(L)
            F = float(np.sum((P.T @ L @ beta) ** 2 / d) / r)
            Fu = F
        else:
            r = int(np.linalg.matrix_rank(L))
            df, scale = engine.df_and_scale(L)
            Lb = L @ beta
            Fu = float(Lb @ np.linalg.lstsq(L @ engine.PhiA @ L.T, Lb, rcond=None)[0] / r)
            F = scale * Fu
        rows.append({"term": term, "Sum Sq": Fu * s2 * r, "Mean Sq": Fu * s2, "NumDF": int(r),
                     "DenDF": float(df), "F value": F, "Pr(>F)": float(sps.f.sf(F, r, df))})
    return FTable(rows, method)
