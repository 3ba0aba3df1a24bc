"""Newton's method on the profiled deviance: how ``em.fit`` finishes a fit in a few steps.

EM climbs reliably but slowly: its rate of convergence is the fraction of
missing information, close to 1 when the groups are small or the random
effects large. Near the optimum, Newton's method converges quadratically (the
number of correct digits doubles each step), so ``em.fit`` takes a few EM
steps and then Newton steps, as nlme's ``lme`` does (EM iterations, then a
quasi-Newton optimiser; Pinheiro & Bates 2000, ch. 2.2).

The function minimised
    lme4's profiled deviance d(theta): -2 x the (restricted) log-likelihood
    with beta and sigma2 at their optima for given theta. theta lists the
    entries of the relative factor T (G = sigma2 T T', lower triangular; see
    :func:`teachlmm.mme.theta_index`). Every theta gives a positive
    semi-definite G, so no step leaves the parameter space; a variance at 0 is a
    column of T at 0, where d is smooth (it is even in that column).

One Newton step
    g, H = gradient and Hessian of d at theta (analytic:
    :func:`teachlmm.mme.theta_derivatives`). Eigen-decompose H = V diag(h) V'
    and step along delta = -V diag(1/|h|) V'g (both in the standardised factor,
    see :func:`column_scales`) (the absolute values turn a
    saddle's ascent directions into descent directions; tiny |h| are floored),
    halving the step until the deviance falls by at least a tenth of the
    predicted decrease (Armijo), so the deviance never rises.

When to stop
    The Newton decrement lambda^2 = g'|H|^-1 g is the decrease of d that the
    quadratic model still expects. It is a number of deviance units, so it does
    not depend on the units of y or of any covariate (a rescaled column rescales
    theta, g and H so that lambda^2 stays the same); stop when lambda^2 < tol.
    lme4's ``checkConv`` reports max |g| (the same gradient); it is returned too.

Examples
--------
>>> import teachlmm as tl
>>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
>>> G0, s0 = tl.em.start_values(model)
>>> out = minimise(model, G0, s0, reml=True)
>>> out.converged, round(-out.deviance / 2, 4)
(True, -1084.1623)
"""
from typing import NamedTuple

import numpy as np

from . import mme

__all__ = ["Outcome", "minimise", "profiled_deviance", "theta_to_G", "column_scales"]


class Outcome(NamedTuple):
    """Where Newton's method stopped: (G, sigma2) with sigma2 profiled, the deviance there,
    the number of steps, whether lambda^2 < tol, and max |gradient| (lme4's checkConv) and
    lambda^2 where the derivatives were last taken (before the final full step, if it was taken)."""

    G: np.ndarray
    sigma2: float
    deviance: float
    n_iter: int
    converged: bool
    max_grad: float
    decrement: float


def theta_to_G(theta, rows, cols, q, sigma2=1.0):
    """G = sigma2 T T' from the free entries theta of T."""
    T = np.zeros((q, q))
    T[rows, cols] = theta
    return sigma2 * T @ T.T


def profiled_deviance(stats, G, sigma2, reml):
    """The deviance at Gam = G / sigma2 with sigma2 profiled (sigma2_hat = r'W^-1 r / dof), and that sigma2.

    Returns (deviance, sigma2_hat, Solution).
    """
    sol = mme.solve(stats, G, sigma2)
    dof = stats.n_total - (sol.A.shape[0] if reml else 0)
    return mme.profiled_deviance(stats, G, sigma2, reml, sol), sol.rVr / dof, sol


def column_scales(model):
    """D_k = root mean square of random-effect column k, sqrt(sum_j (Z_j'Z_j)_kk / n) (1 for a zero column).

    Newton's direction is computed for the standardised factor D T (the relative factor
    of the columns Z D^-1): the same step in any units, and a Hessian whose eigenvalues
    are comparable, so the floor on them below does not depend on the units.
    """
    d = np.sqrt(np.einsum("jkk->k", model.stats.ZtZ) / model.n)
    return np.where(d > 0, d, 1.0)


def _newton_direction(g, H):
    """delta = -|H|^-1 g, |H| = V |h| V' with |h| floored at 1e-8 max |h| (see the module docstring)."""
    h, V = np.linalg.eigh(H)
    habs = np.maximum(np.abs(h), 1e-8 * max(np.abs(h).max(), 1e-300))
    coef = (V.T @ g) / habs
    return -V @ coef, float(coef @ (V.T @ g))


def minimise(model, G, sigma2, reml, tol=1e-10, max_iter=100, fixed_columns=(), on_step=None):
    """Minimise the profiled deviance by Newton's method from (G, sigma2).

    Parameters
    ----------
    model : Model
    G, sigma2 : start (only G / sigma2 matters: sigma2 is profiled).
    reml : bool
    tol : float
        Stop when the Newton decrement lambda^2 (deviance units) is below ``tol``.
    max_iter : int
        Newton steps at most.
    fixed_columns : columns k of T held at 0 (a boundary face: the variance
        along that direction stays 0).
    on_step : callable(G, sigma2, loglik, beta), optional
        Called after every step (``em.fit`` records its history with it).

    Returns
    -------
    Outcome
    """
    stats, q = model.stats, model.q
    rows, cols = mme.theta_index(model.G_mask)
    free = ~np.isin(cols, list(fixed_columns))
    scale = column_scales(model)[rows]
    T = mme.relative_factor(G, sigma2)
    theta = np.where(free, T[rows, cols], 0.0)
    dev, s2, sol = profiled_deviance(stats, theta_to_G(theta, rows, cols, q, sigma2), sigma2, reml)
    n_iter, converged, lam2, max_grad = 0, False, np.inf, np.inf
    while True:
        G = theta_to_G(theta, rows, cols, q, s2)
        _, g, H, _ = mme.theta_derivatives(stats, G, s2, reml, model.G_mask, sol)
        g, H = g[free], H[np.ix_(free, free)]
        max_grad = float(np.abs(g).max()) if g.size else 0.0
        if not g.size:
            converged, lam2 = True, 0.0
            break
        sc = scale[free]                                     # d/d(D_r T_rc) = (d/dT_rc) / D_r
        delta, lam2 = _newton_direction(g / sc, H / np.outer(sc, sc))
        delta = delta / sc
        if n_iter >= max_iter:
            break
        if lam2 < tol:                                       # converged: one last full step (it makes
            converged = True                                 # the error about lambda^4), kept unless
            trial = theta.copy()                             # rounding made it worse
            trial[free] += delta
            new_dev, new_s2, new_sol = profiled_deviance(stats, theta_to_G(trial, rows, cols, q), 1.0, reml)
            if not new_dev <= dev + 1e-12 * abs(dev):
                break
        else:
            t, slope = 1.0, -lam2                            # slope = g'delta
            for _ in range(50):                              # backtracking line search (Armijo)
                trial = theta.copy()
                trial[free] += t * delta
                new_dev, new_s2, new_sol = profiled_deviance(stats, theta_to_G(trial, rows, cols, q), 1.0, reml)
                if new_dev <= dev + 0.1 * t * slope:
                    break
                t *= 0.5
            else:                                            # no decrease at any step length:
                converged = lam2 < 1e3 * tol                 # rounding level; stop here
                break
        # The solution depends on Gam = T T' only, so the one at sigma2 = 1 serves at the profiled
        # sigma2 too. Continue from its factor T (positive diagonal: theta and -theta in a column
        # give the same G, and the derivatives are taken at this T).
        dev, s2, sol = new_dev, new_s2, new_sol
        theta = np.where(free, sol.T[rows, cols], 0.0)
        n_iter += 1
        if on_step is not None:
            on_step(theta_to_G(theta, rows, cols, q, s2), s2, -0.5 * dev, sol.beta)
        if converged:
            break
    return Outcome(theta_to_G(theta, rows, cols, q, s2), float(s2), float(dev), n_iter, converged,
                   max_grad, float(lam2))
