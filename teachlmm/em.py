"""EM for the variance components of a linear mixed model (ML and REML).

Treat the random effects b (and, for REML, also beta, with a flat prior) as
missing data. If we knew them, G and sigma2 would be plain sample moments::

    G      = (1/J) sum_j b_j b_j'
    sigma2 = (1/n) ||y - X beta - Z b||^2

We do not know them, so EM replaces each moment by its conditional
expectation given y at the current (G, sigma2):

**E-step**, at the current (G, sigma2) (see :mod:`teachlmm.mme`)::

    beta_hat = GLS estimate,  b_hat_j = M_j^-1 Z_j'(y_j - X_j beta_hat),
    ML:    Var(b_j | y) = sigma2 M_j^-1
    REML:  Var(b_j | y) = sigma2 (M_j^-1 + M_j^-1 Z_j'X_j A^-1 X_j'Z_j M_j^-1)
           (beta is integrated out too, which widens the variance)

**M-step**::

    G_new      = (1/J) sum_j [ b_hat_j b_hat_j' + Var(b_j | y) ]
    sigma2_new = (1/n) E ||y - X beta - Z b||^2
               = (1/n) [ ||y - X beta_hat - Z b_hat||^2 + tr(Cov(beta, b | y) [X Z]'[X Z]) ]

The trace term is written per group with Z_j'Z_j, X_j'Z_j and X'X::

    ML:    tr = sum_j tr(Var(b_j | y) Z_j'Z_j)
    REML:  tr = sum_j [ tr(Var(b_j | y) Z_j'Z_j) + 2 tr(Cov(b_j, beta | y) X_j'Z_j) ] + tr(Var(beta | y) X'X)

so no G^-1 is needed. Textbooks often write the same term with G^-1 instead:
since M_j = Z_j'Z_j + sigma2 G^-1, tr(Var(b_j | y) Z_j'Z_j) = sigma2 q - sigma2^2
tr(G^-1 M_j^-1) for ML, i.e. sigma2 [J q - sum_j tr(G^-1 Var(b_j | y))]. The
two agree when G is invertible; ours also works on the boundary, where G^-1
does not exist. Each EM step never lowers the (restricted) log-likelihood.

Use it one step at a time::

    state = init(model, reml=True)
    state = step(state)              # state.loglik, state.G, state.b, state.var_b ...
    for s in steps(model): ...       # a generator over step()

or do the two halves yourself, the E-step and the M-step::

    state = e_step(model, G, sigma2, reml=True)   # conditional moments at (G, sigma2)
    G, sigma2 = m_step(state)                     # the new variance components

or let :func:`fit` loop to convergence.

Several grouping factors: ``tl.Model(formula, data)`` with nested or crossed
factors is a :class:`~teachlmm.multilevel.MultilevelModel`, and the same calls
work on it: :func:`fit` hands it to :func:`teachlmm.multilevel_fit.fit`
(lme4's profiled deviance, L-BFGS-B and a Newton polish; ``method="plain"``
first takes EM steps, :func:`teachlmm.multilevel_em.fit`), and :func:`init`,
:func:`step` and :func:`steps` to the EM of :mod:`teachlmm.multilevel_em`,
one G_k per factor. The textbook step is slow (hundreds
of iterations on the radon models; thousands on some growth models), so
``fit`` offers :func:`step_factor` - the same E-step, with the factor T of
G = sigma2 T T' updated as a regression coefficient - accelerated by SQUAREM
(Varadhan & Roland 2008): two EM steps give a direction, and a longer step
along it is taken only if it raises the log-likelihood further. By default
``fit`` takes two such iterations and then finishes with Newton's method on
the profiled deviance (``teachlmm.newton``), as nlme's ``lme`` finishes
EM with a quasi-Newton optimiser: 5 to 15 iterations on every data set of
the benchmark suite.
"""
import functools
import time
import warnings
from typing import Any, NamedTuple

import numpy as np

from . import mme, multilevel_em, multilevel_fit, newton, validators
from .errors import BoundaryWarning, ConvergenceWarning, TeachLMMError
from .design import warn_raw_steps
from .frames import short_repr
from .multilevel import MultilevelModel
from .results import MixedModelResult

__all__ = ["State", "Record", "e_step", "m_step", "init", "step", "step_factor", "steps", "fit"]


class Record(NamedTuple):
    """What ``fit`` keeps of each iteration: enough to plot the climb, small enough for many groups."""

    iteration: int
    loglik: float
    beta: np.ndarray
    G: np.ndarray
    sigma2: float


def _record(state):
    return Record(state.iteration, state.loglik, state.beta, state.G, state.sigma2)


class State(NamedTuple):
    """One point of the EM iteration, with the E-step quantities computed at it.

    Attributes
    ----------
    iteration : int
    G : (q, q) covariance of the random effects.   sigma2 : residual variance.
    T : (q, q) relative factor, G = sigma2 T T' (lower triangular; zero columns on a boundary).
    beta : (p,) GLS fixed effects at (G, sigma2).
    b : (J, q) conditional means E(b_j | y) (the BLUPs).
    var_b : (J, q, q) conditional variances Var(b_j | y) (REML: beta integrated out).
    cov_b_beta : (J, q, p) Cov(b_j, beta | y) (REML; zero for ML, where beta is a parameter).
    var_beta : (p, p) Var(beta | y) (REML; zero for ML).
    loglik : (restricted) log-likelihood at (G, sigma2).
    rss : ||y - X beta - Z b||^2.   trace : tr(Cov(beta, b | y) [X Z]'[X Z]), on the scale of sigma2
        like ``var_b`` (so E||y - X beta - Z b||^2 = rss + trace).
    reml : bool.   model : the Model.
    """

    iteration: int
    G: np.ndarray
    sigma2: float
    T: np.ndarray
    beta: np.ndarray
    b: np.ndarray
    var_b: np.ndarray
    cov_b_beta: np.ndarray
    var_beta: np.ndarray
    loglik: float
    rss: float
    trace: float
    reml: bool
    model: Any

    def __repr__(self):
        """One line: iteration, loglik, G, sigma2; the arrays (b, var_b, ...) stay one attribute away."""
        return short_repr("em.State", {"iteration": self.iteration, "loglik": self.loglik, "G": self.G,
                                       "sigma2": self.sigma2, "reml": self.reml, "b": self.b,
                                       "var_b": self.var_b})


def e_step(model, G, sigma2, reml, iteration=0):
    """The E-step: conditional moments of the missing data (b, and for REML beta) at (G, sigma2).

    From :func:`teachlmm.mme.solve` at (G, sigma2), with M_j = Z_j'Z_j + sigma2 G^-1
    and A = X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j::

        E(b_j | y)          = b_hat_j
        Var(b_j | y)        = sigma2 M_j^-1                                     (ML)
                            = sigma2 (M_j^-1 + M_j^-1 Z_j'X_j A^-1 X_j'Z_j M_j^-1)   (REML)
        Cov(b_j, beta | y)  = -sigma2 M_j^-1 Z_j'X_j A^-1,   Var(beta | y) = sigma2 A^-1   (REML)

    Parameters
    ----------
    model : Model.   G : (q, q).   sigma2 : float.   reml : bool.
    iteration : int, stored in the state.

    Returns
    -------
    State (its ``trace`` is tr(Cov(beta, b | y) [X Z]'[X Z]) on the sigma2 scale).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> state = tl.em.e_step(model, np.array([[0.1]]), 0.57, reml=True)
    >>> state.b.shape, state.var_b.shape
    ((85, 1), (85, 1, 1))
    """
    s = model.stats
    sol = mme.solve(s, G, sigma2)
    var_b = sol.Minv                                         # Var(b_j | y, beta) / sigma2 = M_j^-1
    trace = (sol.Minv * s.ZtZ).sum()                         # sum_j tr(M_j^-1 Z_j'Z_j)
    if reml and model.p:
        A_inv = sol.A_inv
        C = -np.swapaxes(sol.XtZ_Minv, 1, 2) @ A_inv         # Cov(b_j, beta | y) / sigma2 = -M^-1 Z'X A^-1
        var_b = var_b - C @ sol.XtZ_Minv                     # + M^-1 Z'X A^-1 X'Z M^-1
        trace = ((var_b * s.ZtZ).sum()                       # tr(Var(b_j) Z_j'Z_j)
                 + 2 * (C * s.ZtX).sum()                     # 2 tr(Cov(b_j, beta) X_j'Z_j)
                 + (A_inv * s.XtX_total).sum())              # tr(Var(beta) X'X)
    else:                                                    # ML: beta is a parameter, not missing
        C, A_inv = np.zeros((model.J, model.q, model.p)), np.zeros((model.p, model.p))
    ll = mme.loglik(s, G, sigma2, reml, sol)
    return State(iteration, np.asarray(G, float), float(sigma2), sol.T, sol.beta, sol.b, sigma2 * var_b,
                 sigma2 * C, sigma2 * A_inv, ll, sol.rss, float(sigma2 * trace), reml, model)


def m_step(state):
    """The M-step: new (G, sigma2) from the E-step moments of ``state``::

        G_new      = (1/J) sum_j [ b_hat_j b_hat_j' + Var(b_j | y) ]     (0 between uncorrelated blocks)
        sigma2_new = (1/n) [ ||y - X beta_hat - Z b_hat||^2 + trace ]   = (1/n) E||y - X beta - Z b||^2

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> G, sigma2 = tl.em.m_step(tl.em.init(model))
    >>> G.shape, sigma2 > 0
    ((1, 1), True)
    """
    J, n = state.model.J, state.model.n
    bb = np.einsum("jq,jr->qr", state.b, state.b)
    G = (bb + state.var_b.sum(0)) / J * state.model.G_mask   # G_new = mean_j E(b_j b_j' | y)
    G = 0.5 * (G + G.T)
    sigma2 = (state.rss + state.trace) / n                   # sigma2_new = E||y - X beta - Z b||^2 / n
    return G, sigma2


def start_values(model):
    """Where EM starts: sigma2 from OLS, G = sigma2 * diag(n / diag(Z'Z)) (each random
    column explains about as much variance as the residual; lme4 starts at theta = 1 likewise)."""
    s = model.stats
    beta = np.linalg.lstsq(s.XtX_total, s.Xty_total, rcond=None)[0] if model.p else np.zeros(0)
    rss = mme.residual_sum_of_squares(s, beta)              # ||y - X beta||^2 of the OLS fit
    sigma2 = max(rss / max(model.n - model.p, 1), 1e-12 * s.yty_total / model.n, 1e-300)
    zz = np.diag(s.ZtZ.sum(0)) / model.n
    return np.diag(sigma2 / np.where(zz > 0, zz, 1.0)), float(sigma2)


def init(model, reml=True, G=None, sigma2=None):
    """The starting state (E-step quantities at the start values).

    Parameters
    ----------
    model : Model
    reml : bool
        True for REML (lme4's default), False for maximum likelihood.
    G, sigma2 : optional start values (checked by ``model.check_variance_components``).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> s0 = tl.em.init(model)
    >>> s1 = tl.em.step(s0)
    >>> s1.loglik >= s0.loglik
    True
    """
    if isinstance(model, MultilevelModel):
        _no_start_values(G, sigma2, "tl.em.init")
        return multilevel_em.init(model, reml)
    warn_raw_steps(model, "em.fit", "tl.em.init(mc)")
    G0, s0 = start_values(model)
    G, sigma2 = model.check_variance_components(G0 if G is None else G, s0 if sigma2 is None else sigma2)
    return e_step(model, G, sigma2, reml)


def step(state):
    """One EM iteration: M-step from the state's E-step moments, then the E-step at the new values.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> s = tl.em.step(tl.em.init(model))
    >>> s.iteration, s.G.shape
    (1, (2, 2))
    """
    if isinstance(state, multilevel_em.State):              # several grouping factors
        return multilevel_em.step(state)
    G, sigma2 = m_step(state)
    return e_step(state.model, G, sigma2, state.reml, state.iteration + 1)


def steps(model, reml=True, max_iter=None, **start):
    """Generator over EM states: the start, then one state per iteration.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> [round(s.loglik, 2) for s, _ in zip(tl.em.steps(model), range(3))]
    [-1116.42, -1091.66, -1087.64]
    """
    max_iter = None if max_iter is None else validators.nonnegative_int(max_iter, "max_iter")
    state = init(model, reml, **start)
    yield state
    while max_iter is None or state.iteration < max_iter:
        state = step(state)
        yield state


# ----------------------------------------------------------------------------
# fitting to convergence
# ----------------------------------------------------------------------------

def _scales(model):
    """D_k = root mean square of random-effect column k, sqrt(sum_j (Z_j'Z_j)_kk / n).

    In the standardised columns Z D^-1 the relative covariance is D (G / sigma2) D, with factor
    D T: numbers in which the decisions of :func:`fit` (extrapolation, stopping, boundary
    probes) do not depend on the units of y or of any covariate.
    """
    return newton.column_scales(model)


def _squarem_params(state):
    """The parameter vector SQUAREM extrapolates in: the lower triangle of the standardised
    relative factor D T (G = sigma2 T T', see :func:`_scales`) and log sigma2.

    Any such vector maps back to a positive semi-definite G, so an extrapolated step
    never leaves the parameter space; and the extrapolation is the same in any units.
    """
    L = _scales(state.model)[:, None] * state.T
    return np.concatenate([L[_tril(L.shape[0])], [np.log(state.sigma2)]])


@functools.lru_cache(maxsize=None)
def _tril(q):
    return np.tril_indices(q)


def _from_squarem_params(theta, model):
    q = model.q
    L = np.zeros((q, q))
    L[_tril(q)] = theta[:-1]
    T = L / _scales(model)[:, None]
    sigma2 = float(np.exp(theta[-1]))
    return sigma2 * T @ T.T, sigma2


def _change(a, b):
    """Size of a parameter change in the standardised relative scale: max |D (G_a - G_b) D| / sigma2
    and the relative change of sigma2 (free of the units of y and of the covariates)."""
    d = _scales(b.model)
    return max(np.max(np.abs(d[:, None] * (a.G - b.G) * d)) / b.sigma2, abs(a.sigma2 - b.sigma2) / b.sigma2)


def _squarem(state, F=step, s1=None):
    """One SQUAREM iteration (scheme S3): two EM steps, an extrapolation, a stabilising EM step.

    With theta the parameters, r = F(theta) - theta and v = F(F(theta)) - 2 F(theta) + theta,
    the extrapolated point is theta - 2 alpha r + alpha^2 v with alpha = -|r| / |v|
    (alpha = -1 would be the plain double step). It is kept only if its
    log-likelihood beats the double EM step's, so SQUAREM is never worse than plain EM.
    ``s1`` is F(state) if the caller has it already.
    """
    s1 = F(state) if s1 is None else s1
    s2 = F(s1)
    t0, t1, t2 = _squarem_params(state), _squarem_params(s1), _squarem_params(s2)
    r, v = t1 - t0, t2 - 2 * t1 + t0
    if not v.any():
        return s2
    alpha = min(-1.0, -np.linalg.norm(r) / np.linalg.norm(v))
    G, sigma2 = _from_squarem_params(t0 - 2 * alpha * r + alpha ** 2 * v, state.model)
    if np.isfinite(sigma2) and sigma2 > 0 and np.isfinite(G).all():
        s_new = e_step(state.model, G * state.model.G_mask, sigma2, state.reml, state.iteration)
        if s_new.loglik >= s2.loglik:                   # keep the long step only if it is better
            return F(s_new)._replace(iteration=state.iteration + 2)
    return s2


def step_factor(state):
    """One EM step in lme4's parametrisation: the factor T of G is a regression coefficient.

    Write b_j = T u_j with u_j ~ N(0, sigma2 I_r) as the missing data (G = sigma2 T T',
    T is q x r, r = rank of G). Given the u_j, y_j - X_j beta = (Z_j T) u_j + e_j is a
    regression in which T is the coefficient, so the M-step is a least-squares solve::

        E-step   m_j = E(u_j|y) = T^+ b_hat_j,   E(u_j u_j'|y) = T^+ E(b_j b_j'|y) T^+'
        M-step   sum_j Z_j'Z_j T E(u_j u_j') = sum_j E(Z_j'(y_j - X_j beta) u_j')   (solve for T)
                 sigma2 = ( E||y - X beta - Z T u||^2 + sum_j E||u_j||^2 ) / (n + J r)

    (T^+ is the pseudo-inverse; b_j lies in the column space of T.)

    Two things make this step better than :func:`step` (the textbook one), with
    the same E-step: it converges in far fewer iterations (it is the
    "parameter-expanded" EM of Liu, Rubin & Wu 1998 / Meng & van Dyk 1998,
    86 instead of 1,539 iterations on the radon M4 model), and on a boundary
    (rank r < q) it can turn the directions of G, where the textbook step can only
    shrink them. It never lowers the log-likelihood.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> s0 = tl.em.init(model)
    >>> s1 = tl.em.step_factor(s0)
    >>> s1.loglik > s0.loglik
    True
    """
    model, s = state.model, state.model.stats
    T0 = state.T
    keep = np.flatnonzero(T0.diagonal() > 0)                # the r directions with variance
    r, q = keep.size, model.q
    Err = mme.residual_sum_of_squares(s, state.beta) + (state.var_beta * s.XtX_total).sum()   # E||y - X beta||^2
    if r == 0:                                               # G = 0: no random effects left to scale
        return e_step(model, state.G, Err / model.n, state.reml, state.iteration + 1)
    Tk = T0[:, keep]
    P = np.linalg.solve(Tk.T @ Tk, Tk.T)                    # T^+ = (T'T)^-1 T', (r, q)
    m = state.b @ P.T                                        # E(u_j | y), (J, r)
    Ebb = state.b[:, :, None] * state.b[:, None, :] + state.var_b
    Euu = mme.congruence(Ebb, P)                             # E(u_j u_j' | y) = P E(b_j b_j') P', (J, r, r)
    Ebu = (state.beta[None, :, None] * m[:, None, :]         # E(beta u_j' | y), (J, p, r)
           + np.swapaxes(state.cov_b_beta, 1, 2) @ P.T)
    S2 = s.Zty.T @ m - (s.ZtX @ Ebu).sum(0)                  # sum_j E(Z_j' r_j u_j'), (q, r)
    S1 = (Euu.reshape(-1, r * r).T @ s.ZtZ.reshape(-1, q * q)     # sum_j Euu_j (x) Z_j'Z_j, the normal
          ).reshape(r, r, q, q).transpose(0, 2, 1, 3).reshape(r * q, r * q)   # matrix for vec(T)
    rhs = S2.T.ravel()                                       # vec(T) stacks T's columns
    allowed = model.G_mask[:, keep].T.ravel() > 0            # blocks of G stay apart (`||` terms)
    vecT = np.zeros(r * q)
    if allowed.all():
        vecT = np.linalg.solve(S1, rhs)
    else:
        vecT[allowed] = np.linalg.solve(S1[np.ix_(allowed, allowed)], rhs[allowed])
    T = vecT.reshape(r, q).T                                 # (q, r)
    e2 = Err - 2 * rhs @ vecT + vecT @ S1 @ vecT             # E||y - X beta - Z T u||^2
    sigma2 = (e2 + Euu.diagonal(0, 1, 2).sum()) / (model.n + model.J * r)
    G = sigma2 * T @ T.T                                    # G = sigma2 T T'
    return e_step(model, 0.5 * (G + G.T), sigma2, state.reml, state.iteration + 1)


def _boundary_candidate(state, tol=0.1):
    """The state with G's nearly-vanishing directions set exactly to zero, or None.

    A direction is "nearly vanishing" when its diagonal element of the standardised
    relative factor D T (G = sigma2 T T', D from :func:`_scales`) is below ``tol`` but
    not yet 0: a random effect whose standard deviation is below ``tol`` residual
    standard deviations per root-mean-square unit of its column, whatever the units.
    Dropping column k of T leaves G with one rank less: a variance of 0, or a
    correlation of +-1.
    """
    T = state.T
    diag = _scales(state.model) * np.diag(T)
    small = (diag < tol) & (diag > 0)
    if not np.any(small):
        return None
    T = T.copy()
    T[:, small] = 0.0
    G = state.sigma2 * T @ T.T
    return e_step(state.model, G, state.sigma2, state.reml, state.iteration)


def _ascent_direction(state):
    """A direction v out of a boundary that raises the log-likelihood, or None.

    At a singular G the fit is a maximum over the positive semi-definite
    matrices only if v'(dl/dG)v <= 0 for every v in the null space of G (the
    KKT condition on the PSD cone): adding a little variance along v does not
    help. Returns the null-space direction of largest positive curvature.
    Both tests are made in the standardised relative scale (Gam_s = D G D / sigma2,
    dl/dGam_s = sigma2 D^-1 dl/dG D^-1), so they do not depend on the units.
    """
    d = _scales(state.model)
    w, V = np.linalg.eigh(d[:, None] * state.G * d / state.sigma2)
    null = V[:, w <= 1e-10 * max(w.max(), 1.0)]
    if null.size == 0:
        return None
    D = mme.gradient_G(state.model.stats, state.G, state.sigma2, state.reml) * state.model.G_mask
    D = state.sigma2 * D / d[:, None] / d
    curv, U = np.linalg.eigh(null.T @ D @ null)
    if curv[-1] <= 1e-6 * state.model.J:
        return None
    return (null @ U[:, -1]) / d                             # back from the standardised scale


def _boundary_is_optimal(state):
    """KKT check on the PSD cone (see :func:`_ascent_direction`)."""
    return _ascent_direction(state) is None


def _leave_boundary(state):
    """Step off a boundary that is not a maximum: G + eps sigma2 v v', with eps halved until the
    log-likelihood rises (it does for small eps, since the directional derivative is positive)."""
    v = _ascent_direction(state)
    if v is None:
        return None
    d = _scales(state.model)
    eps = 0.1 * max(np.max(d ** 2 * np.diag(state.G)) / state.sigma2, 1.0)
    for _ in range(60):
        G = state.G + eps * state.sigma2 * np.outer(v, v) * state.model.G_mask
        nxt = e_step(state.model, G, state.sigma2, state.reml, state.iteration)
        if nxt.loglik > state.loglik:
            return nxt
        eps /= 2
    return None


def _try_boundary(state, tol, max_iter):
    """EM creeps toward a zero variance; jump when the boundary is better.

    Set the nearly-vanishing directions of G to zero and maximise over matrices
    of that lower rank with :func:`step_factor` (which, unlike :func:`step`,
    can turn directions within the face). Accept the result if its
    log-likelihood is at least the current one and no direction back into the
    interior increases it.
    """
    cand = _boundary_candidate(state)
    if cand is None:
        return None
    face, ok, _ = _iterate(cand, step_factor, False, tol, cand.iteration + max_iter, [], probe=False)
    if ok and face.loglik >= state.loglik - 1e-10 * abs(state.loglik) and _boundary_is_optimal(face):
        return face
    return None


class _Distance(NamedTuple):
    """The stopping rule's numbers at the last iteration: change, rate, estimated distance."""

    change: float
    rate: float

    @property
    def distance(self):
        return self.change / (1.0 - self.rate)


def _iterate(state, base, accelerate, tol, max_iter, history, check_every=10, probe=True):
    """Iterate the EM map ``base`` (with SQUAREM if ``accelerate``) until the distance to the
    optimum, estimated from the last plain step and the rate at which steps shrink, is below ``tol``.

    The plain step from the current point is both the convergence test and the
    first step of the next SQUAREM cycle, so the test costs nothing extra.
    Every ``check_every`` iterations (the interval doubles after each look that
    changes nothing, so an interior fit pays little): if the state sits on a
    boundary that is no maximum (a zero column of T that :func:`step_factor`
    would keep at zero for ever), step off it; else look for a boundary optimum.
    Returns (state, converged, the last :class:`_Distance`).
    """
    count, last, dist = 0, None, _Distance(np.inf, 0.0)
    while state.iteration < max_iter:
        first = base(state)
        change = _change(first, state)
        # EM converges linearly: if each step shrinks the change by a factor rho, the distance
        # left to the optimum is about change / (1 - rho). Stop when that (not the step) is small.
        rho = min(change / last, 0.999) if last else 0.0
        dist = _Distance(change, rho)
        if change < tol * (1.0 - rho):
            history.append(_record(first))
            return first, True, dist
        last = change
        state = _squarem(state, base, first) if accelerate else first
        history.append(_record(state))
        count += 1
        if probe and count % check_every == 0:
            off = _leave_boundary(state) if np.any(np.diag(state.T) == 0) else None
            if off is not None:                             # a false boundary: leave it now
                state, last = off, None
                history.append(_record(state))
                continue
            face = _try_boundary(state, tol, max_iter)
            if face is not None:
                history.append(_record(face))
                return face, True, dist
            count, check_every = 0, 2 * check_every
    return state, False, dist


def _newton(state, tol, max_iter, history, fixed=()):
    """Newton's method (:mod:`teachlmm.newton`) from ``state``; every step goes into ``history``."""
    it = [state.iteration]

    def record(G, sigma2, loglik, beta):
        it[0] += 1
        history.append(Record(it[0], loglik, beta, G, sigma2))

    out = newton.minimise(state.model, state.G, state.sigma2, state.reml, tol=tol,
                          max_iter=max(max_iter - state.iteration, 0), fixed_columns=fixed, on_step=record)
    return e_step(state.model, out.G, out.sigma2, state.reml, it[0]), out


def _snap_to_boundary(state, out, tol, max_iter, history, probe=1e-3):
    """Newton approaches a boundary optimum (a column of T going to 0) but never lands on it.

    For the columns whose standardised diagonal (D T)_kk is below ``probe``, maximise
    on the face where they are exactly 0 and keep that point if its log-likelihood is
    at least as high (to rounding) and the KKT check holds. Returns (state, out).
    """
    diag = _scales(state.model) * np.diag(state.T)
    small = tuple(np.flatnonzero(diag < probe))
    if not small or np.all(diag[list(small)] == 0):
        return state, out
    trial = []
    face, face_out = _newton(state, tol, max_iter, trial, fixed=small)
    if (face_out.converged and face.loglik >= state.loglik - 1e-11 * abs(state.loglik)   # rounding
            and _boundary_is_optimal(face)):
        history.extend(trial)
        return face, face_out
    return state, out


EM_STEPS = 2      # SQUAREM iterations before Newton (chosen on the benchmark suite, see _fit_newton)
NEWTON_STEPS = 100   # Newton steps per round at most (the suite needs <= 16); then SQUAREM finishes


def _fit_newton(state, tol, max_iter, history, em_steps=None):
    """The default fit: ``em_steps`` SQUAREM iterations of :func:`step_factor`, then Newton's method
    on the profiled deviance; then land exactly on a boundary optimum, or leave a boundary that is
    none (KKT), and Newton again. Returns (state, converged, Outcome).

    How many EM iterations first (measured, em.fit CPU time, one thread): on the 34 fits of the
    benchmark suite 0 / 1 / 2 / 3 / 5 iterations took 217 / 270 / 295 / 329 / 510 ms in total
    (at most 18 / 12 / 13 / 14 / 18 Newton-plus-EM iterations); on fits not used for tuning
    (radon M0-M4 and M4 with ``||``, mlmRev ScotsSec by primary and by secondary school, nlme
    Pixel, Oats, lme4 Penicillin and Pastes; REML and ML) 148 ms with 0 and 146 ms with 2, and
    2 was faster on the radon M3/M4 benchmark. Two EM iterations also move a poor start into
    the region where Newton's quadratic model is good, so 2 it is.
    """
    em_steps = EM_STEPS if em_steps is None else em_steps
    for _ in range(em_steps):
        if state.iteration + 2 > max_iter:
            break
        state = _squarem(state, step_factor)
        history.append(_record(state))
    for _ in range(10):                                 # each round leaves one false boundary
        state, out = _newton(state, tol, min(max_iter, state.iteration + NEWTON_STEPS), history)
        if not out.converged and state.iteration < max_iter:
            # Newton did not settle (no example in the suite): finish with SQUAREM-accelerated EM
            state, converged, _, _ = _fit_em(state, "squarem", tol, max_iter, history)
            return state, converged, out
        state, out = _snap_to_boundary(state, out, tol, max_iter, history)
        off = _leave_boundary(state)
        if off is None:
            break
        state = off
        history.append(_record(state))
    return state, out.converged, out


METHODS = {                        # name: (the EM map, accelerated by SQUAREM?)
    "plain": (step, False),        # the textbook EM step
    "factor": (step_factor, False),   # EM on the factor T (parameter-expanded EM)
    "squarem": (step_factor, True),   # SQUAREM-accelerated factor EM
    "newton": (step_factor, True),    # two SQUAREM iterations, then Newton: the default
}


def _certify(state, tol):
    """max |gradient| (lme4's checkConv) and the Newton decrement at ``state``: is it an optimum?"""
    model = state.model
    rows, cols = mme.theta_index(model.G_mask)
    _, g, H, _ = mme.theta_derivatives(model.stats, state.G, state.sigma2, state.reml, model.G_mask)
    free = np.diag(state.T)[cols] > 0                    # a zero column is a boundary: held fixed
    g, H = g[free], H[np.ix_(free, free)]
    if not g.size:
        return 0.0, 0.0
    sc = _scales(model)[rows][free]
    _, lam2 = newton._newton_direction(g / sc, H / np.outer(sc, sc))
    return float(np.abs(g).max()), lam2


def fit(model, reml=True, method="newton", tol=1e-8, max_iter=10000, G=None, sigma2=None):
    """Fit the variance components by EM (finished by Newton's method), then everything else at the optimum.

    Parameters
    ----------
    model : Model
        One grouping factor, or several (a :class:`~teachlmm.multilevel.MultilevelModel`,
        which ``tl.Model`` builds for nested and crossed factors): then the fit is
        :func:`teachlmm.multilevel_fit.fit` and the result a
        :class:`~teachlmm.multilevel_result.MultilevelResult` (``Gs``, ``ranefs``, ...);
        ``tol``, ``max_iter`` and the start values G, sigma2 are for one factor.
    reml : bool, default True
        REML (lme4's default) or maximum likelihood.
    method : {"newton", "squarem", "factor", "plain"}
        "plain" repeats the textbook :func:`step` (slow: 394 iterations on radon
        M3, 1,539 on M4, and it only creeps toward a zero variance); "factor"
        repeats :func:`step_factor` (the same E-step, T as a regression
        coefficient: 74 and 86 iterations); "squarem" accelerates
        :func:`step_factor` with SQUAREM (Varadhan & Roland 2008): 15 and 19.
        "newton" (the default) takes two SQUAREM iterations and then Newton
        steps on the profiled deviance (``teachlmm.newton``), about 5 to 15
        iterations on every data set of the benchmark suite. All stop at the
        same optimum; each never lowers the log-likelihood.
    tol : float
        EM methods: stop when the estimated distance to the optimum (the change
        of the standardised relative covariance D G D / sigma2 and of sigma2 in a
        plain step, divided by 1 - the rate at which those changes shrink) is
        below ``tol``. "newton": stop when the Newton decrement (the deviance
        the quadratic model still expects to gain) is below ``tol``, after which one
        more full step is taken. Both are free of the units of y and the covariates.
    max_iter : int
        Iteration budget (EM steps, a SQUAREM iteration counting two, and Newton steps).
    G, sigma2 : optional start values (a warm start).

    Returns
    -------
    MixedModelResult
        With ``fixef``, ``fixef_se``, ``G``, ``sigma2``, ``loglik``, ``ranef``,
        ``coef``, ``condsd``, ``summary()``, ``history`` and the convergence report
        ``n_iter``, ``converged``, ``singular`` and ``max_grad`` (max ``|gradient|`` of the
        profiled deviance in lme4's theta, as lme4's ``checkConv`` reports it).

    Raises
    ------
    TeachLMMError
        ``tol`` not a positive finite number, ``max_iter`` not a positive whole
        number, an unknown method, or bad start values.

    Notes
    -----
    A model with a column whose mean exceeds 100 times its spread (y + 1e9)
    is fitted on its centred copy and the estimates mapped back exactly
    (:meth:`teachlmm.Model.fitting_basis`); ``history`` is mapped back too.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` is reached before the stopping rule holds (and the
        Newton decrement at the end does not show an optimum either).
    BoundaryWarning
        When the optimum has a variance at zero (or a correlation of +-1), as
        lme4's "boundary (singular) fit".

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ 1 + floor + (1 + floor | county)", tl.load_radon())
    >>> fit = tl.em.fit(model)
    >>> round(fit.fixef["floor"], 4), round(fit.loglik, 2)
    (-0.6811, -1084.16)
    """
    if method not in METHODS:
        raise TeachLMMError(f"method must be one of {sorted(METHODS)}, not {method!r}")
    if isinstance(model, MultilevelModel):
        return _fit_several(model, reml, method, G, sigma2)
    tol = validators.positive_number(tol, "tol", " (the stopping rule's threshold, e.g. 1e-8; tol = inf would "
                                     "stop after one step and call it converged)")
    max_iter = validators.positive_int(max_iter, "max_iter")
    t0 = time.perf_counter()
    work, centring = model.fitting_basis()          # the centred copy when a column has a large mean
    if work is not model and G is not None:          # a warm start is given in the model's own basis
        G = centring.G_centred(model.check_variance_components(G, 1.0 if sigma2 is None else sigma2)[0])
    state = init(work, reml, G=G, sigma2=sigma2)
    history = [_record(state)]
    if method == "newton":
        warm = G is not None or sigma2 is not None      # a warm start: straight to Newton
        state, converged, out = _fit_newton(state, tol, max_iter, history, em_steps=0 if warm else None)
        max_grad, lam2 = _certify(state, tol)
        if not converged:
            warnings.warn(f"Newton's method stopped at max_iter = {max_iter} before converging (Newton "
                          f"decrement {lam2:.2e} > tol = {tol:.0e}; max |gradient| {max_grad:.2e}). "
                          "Raise max_iter or check the model for a variance near zero.",
                          ConvergenceWarning, stacklevel=2)
    else:
        state, converged, dist, max_grad = _fit_em(state, method, tol, max_iter, history)
        if not converged:
            warnings.warn(f"EM ({method}) stopped at max_iter = {max_iter} before converging: the "
                          f"stopping rule is change / (1 - rate) < tol, and here it was {dist.change:.2e} / "
                          f"(1 - {dist.rate:.4f}) = {dist.distance:.2e} > tol = {tol:.0e} (change: "
                          "of D G D / sigma2 and sigma2, in the last plain step). Raise max_iter or use "
                          "method='newton'.", ConvergenceWarning, stacklevel=2)
    label = "EM + Newton" if method == "newton" else f"EM ({method})"
    if work is not model:                            # back to the model's basis: beta = S_x(...), G = S_z G_c S_z'
        history = [r._replace(beta=centring.beta(r.beta), G=centring.G(r.G)) for r in history]
    result = MixedModelResult(model, centring.G(state.G) if work is not model else state.G, state.sigma2,
                              reml=reml, method=label, n_iter=state.iteration, converged=converged,
                              history=history, seconds=time.perf_counter() - t0, max_grad=max_grad,
                              G_centred=state.G)
    if result.singular:                                 # lme4's rule, see MixedModelResult.singular
        warnings.warn("boundary (singular) fit: a random-effect variance is (nearly) zero or a "
                      "correlation is +-1; see result.G. The model may be simpler than written.",
                      BoundaryWarning, stacklevel=2)
    return result


def _no_start_values(G, sigma2, where):
    if G is not None or sigma2 is not None:
        raise TeachLMMError(f"{where}: start values G= and sigma2= are for one grouping factor; a model with "
                            "several starts at lme4's start (tl.multilevel_fit.fit(model, start=theta) takes "
                            "another fit's theta)")


def _fit_several(model, reml, method, G, sigma2):
    """Several grouping factors: "newton" is the profiled-deviance fit, "plain" EM steps first."""
    _no_start_values(G, sigma2, "tl.em.fit")
    if method == "newton":
        return multilevel_fit.fit(model, reml=reml)
    if method == "plain":
        return multilevel_em.fit(model, reml=reml)
    raise TeachLMMError(f"method={method!r} is for one grouping factor; a model with several is fitted by "
                        "method='newton' (the default: lme4's profiled deviance, L-BFGS-B and a Newton polish) "
                        "or method='plain' (EM steps first, then the same polish)")


def _fit_em(state, method, tol, max_iter, history):
    """The EM methods: iterate, land on a boundary optimum, leave a boundary that is none.
    Returns (state, converged, the last stopping-rule numbers, max |gradient|)."""
    base, accelerate = METHODS[method]
    while True:
        state, converged, dist = _iterate(state, base, accelerate, tol, max_iter, history)
        face = _try_boundary(state, tol, max_iter)     # converged next to a boundary: is it on it?
        if face is not None and face.loglik > state.loglik:
            state = face
            history.append(_record(face))
        off = _leave_boundary(state) if converged else None   # on a boundary that is no maximum
        if off is None:                                # (e.g. started there): step back inside
            break
        state = off
        history.append(_record(state))
    max_grad, _ = _certify(state, tol)
    return state, converged, dist, max_grad
