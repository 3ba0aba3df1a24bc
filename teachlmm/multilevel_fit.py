"""Fit a model with several grouping factors: minimise the profiled deviance over theta.

The variance components enter the profiled deviance of
:mod:`teachlmm.multilevel_mme` only through theta (the entries of the
relative Cholesky factors T_k, G_k = sigma2 T_k T_k'); beta and sigma2 are
profiled out in closed form. We minimise over theta as lme4 does, in two
stages:

1. L-BFGS-B from lme4's start (every T_k = I), with central-difference
   gradients, bounded below by 0 on the diagonal of each T_k;
2. a Newton polish (:func:`polish`) on the EM fixed-point residual of the
   terms not on a bound: the deviance's rounding limits any optimiser that
   reads only the deviance (lme4's included) to theta within about 1e-6
   relative on a flat direction (ScotsSec's ``second``, Chem97's ``lea``);
   the residual has no such cancellation and brings theta to ~1e-10.

A theta on its bound (a variance exactly 0, or a rank-deficient G_k) gives a
``BoundaryWarning`` and a finished fit.

EM with one G_k per factor, one step at a time, is :mod:`teachlmm.multilevel_em`
(its E-step uses the same diagonal blocks of A^-1 as condVar). The result,
keyed as lme4 keys its output, is :class:`teachlmm.multilevel_result.MultilevelResult`.
"""
import time
import warnings

import numpy as np
import scipy.optimize

from .errors import ConvergenceWarning
from .multilevel_mme import Algebra
from .multilevel_result import MultilevelResult

__all__ = ["fit", "MultilevelResult"]


def _free_terms(alg, theta, lower):
    """Indices of theta belonging to terms with no coordinate on its bound (interior G_k)."""
    free, i = [], 0
    for k in alg.theta_sizes:
        idx = np.arange(i, i + k)
        if not np.any(np.isfinite(lower[idx]) & (theta[idx] <= lower[idx])):
            free += list(idx)
        i += k
    return np.array(free, dtype=int)


def polish(alg, theta, reml, steps=10):
    """Newton's method on the EM fixed-point residual of the interior terms (a Jacobian by differences).

    At the optimum the EM update leaves every interior G_k unchanged:
    mean_j (b_kj b_kj' + Var(b_kj | y)) = G_k (:meth:`~teachlmm.multilevel_mme.Algebra.em_residual`).
    That residual is computed without the cancellation that limits the
    deviance (whose rounding, ~1e-11 relative, allows theta only to ~1e-6
    through finite differences), so its root gives theta to ~1e-10. A step
    is kept only if the deviance does not go up beyond its rounding.
    """
    lower = alg.lower()
    free = _free_terms(alg, theta, lower)
    if free.size == 0:
        return theta
    f = lambda th: alg.deviance(th, reml)           # noqa: E731
    rows = np.concatenate([[i in set(free) for i in range(theta.size)]]) if theta.size else np.zeros(0, bool)
    resid = lambda th: alg.em_residual(th, reml)[rows]     # noqa: E731
    f_start = f(theta)
    x, jac, last = theta.copy(), None, np.inf
    for _ in range(steps):
        r = resid(x)
        if jac is None or last > 1e-5:              # near the root keep the Jacobian (a chord step: 1 solve)
            jac = np.empty((free.size, free.size))
            for c, i in enumerate(free):
                h = 1e-6 * max(abs(x[i]), 1e-2)
                trial = x.copy()
                trial[i] += h
                jac[:, c] = (resid(trial) - r) / h
        try:
            step = np.linalg.solve(jac, r)
        except np.linalg.LinAlgError:
            break
        new = x.copy()
        new[free] -= step
        if not np.all(np.isfinite(new)) or np.any(new < lower):
            break
        x = new
        last = np.max(np.abs(step) / np.maximum(np.abs(x[free]), 1e-2))
        if last < 1e-11:
            break
    return x if f(x) <= f_start + 1e-11 * abs(f_start) else theta


def _lbfgsb(f, theta, lower):
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    return scipy.optimize.minimize(f, theta, method="L-BFGS-B", jac="2-point", bounds=bounds,
                                   options=dict(ftol=1e-12, gtol=1e-6, maxiter=2000))


def _leaves_bound(f, theta, lower, h=1e-2):
    """Diagonal entries of T_k at or near 0 from which the deviance goes down into the interior.

    The deviance is even in each diagonal entry of a one-column T_k (it enters
    as its square), so 0 is always a stationary point and a gradient method can
    stop there or just above it; comparing f at 0 and at h tells a minimum on
    the bound from a saddle.
    """
    out = []
    for i in np.flatnonzero(np.isfinite(lower) & (theta < h)):
        at0, ath = theta.copy(), theta.copy()
        at0[i], ath[i] = lower[i], lower[i] + h
        f0 = min(f(at0), f(theta))
        if f(ath) < f0 - 1e-12 * abs(f0):
            out.append(i)
    return out


def optimise(alg, reml=True, restarts=3, start=None):
    """theta at the minimum of the profiled deviance (L-BFGS-B, then a Newton polish).

    L-BFGS-B's long first steps can land a diagonal entry of T_k on its bound 0
    and leave it there (Chem97's lea variance on the shared machine): a
    coordinate on its bound from which the deviance goes down is moved to 0.1
    and L-BFGS-B is run again (at most ``restarts`` times).
    """
    lower = alg.lower()
    f = lambda th: alg.deviance(th, reml)           # noqa: E731
    res = _lbfgsb(f, alg.start() if start is None else np.maximum(start, lower), lower)
    for _ in range(restarts):
        theta = np.maximum(res.x, lower)
        stuck = _leaves_bound(f, theta, lower)
        if not stuck:
            break
        theta[stuck] = lower[stuck] + 0.1
        res = _lbfgsb(f, theta, lower)
    theta = np.maximum(res.x, lower)
    on_bound = np.isfinite(lower) & (theta < 1e-4)
    if on_bound.any():                                  # a diagonal entry this small is on the bound
        trial = theta.copy()
        trial[on_bound] = lower[on_bound]
        theta = trial if f(trial) <= f(theta) + 1e-10 * abs(f(theta)) else theta
    return polish(alg, theta, reml), res


def fit(model, reml=True, start=None):
    """Fit a :class:`~teachlmm.multilevel.MultilevelModel` by ML or REML (lme4's profiled deviance).

    Users reach it through ``tl.em.fit(tl.Model(formula, data))`` (the same
    code as for one grouping factor) or ``tl.multilevel.fit(formula, data)``.

    Parameters
    ----------
    model : MultilevelModel
    reml : bool
        True (the default, as lmer) for REML, False for maximum likelihood.
    start : array, optional
        Start theta (lme4's: the entries of every relative factor T_k, G_k =
        sigma2 T_k T_k'), e.g. another fit's ``theta`` for a refit; default
        lme4's start, every T_k = I.

    Returns
    -------
    MultilevelResult

    Warns
    -----
    BoundaryWarning
        A variance at 0 (or a singular G_k): the fit is finished.
    ConvergenceWarning
        The optimiser stopped without meeting its tolerance.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("diameter ~ 1 + (1 | plate) + (1 | sample)",
    ...                     tl.read_csv("tests/reference/data/penicillin.csv"))
    >>> r = fit(m)
    >>> print(r.summary().splitlines()[15])
    Number of obs: 144, groups:  plate, 24; sample, 6
    """
    t0 = time.perf_counter()
    alg = Algebra(model)
    theta, res = optimise(alg, reml, start=None if start is None else np.asarray(start, float))
    if not res.success and "ABNORMAL" not in str(res.message).upper():
        warnings.warn(f"the optimiser stopped early ({res.message}); check the fit", ConvergenceWarning,
                      stacklevel=2)
    return MultilevelResult(model, alg, theta, reml, optimiser=res, method="L-BFGS-B + Newton polish",
                            seconds=time.perf_counter() - t0)
