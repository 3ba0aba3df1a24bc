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
(its E-step uses the same diagonal blocks of A^-1 as condVar).
"""
import warnings

import numpy as np
import scipy.optimize

from .errors import BoundaryWarning, ConvergenceWarning
from .multilevel_mme import Algebra

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
    mean_j (b_kj b_kj' + Var(b_kj | y)) = G_k (:meth:`Algebra.em_residual`).
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


class MultilevelResult:
    """The fit of a :class:`~teachlmm.multilevel.MultilevelModel`, keyed as lme4 keys its output.

    Attributes
    ----------
    Gs : dict, VarCorr name -> (q_k, q_k) array ("cask:batch", "batch"; "g", "g.1").
    sigma2 : float.  fixef, fixef_se : dicts by coefficient name.  vcov : (p, p) array.
    loglik : float (the REML log-likelihood for a REML fit, as lme4's logLik).
    deviance : lme4's REMLcrit (REML) or deviance (ML).  theta : lme4's theta.
    ranefs, condsds : dict, grouping factor -> (J, q) array (the columns of all
        that factor's terms, in lme4's order); condsd is lme4's condVar given beta_hat.
    groups_by : dict, grouping factor -> level labels.  ranef_names : dict, factor -> column names.
    reml : bool.  model : the MultilevelModel.
    """

    def __init__(self, model, alg, theta, reml, optimiser=None):
        sol = alg.solve(theta, reml)
        self.model, self.reml, self.theta, self.optimiser = model, reml, theta, optimiser
        self.sigma2 = float(sol["sigma2"])
        self.Gs = {t.name: G for t, G in zip(model.terms, sol["Gs"])}
        self.fixef = dict(zip(model.fixef_names, sol["beta"]))
        self.vcov = sol["vcov"]
        self.fixef_se = dict(zip(model.fixef_names, np.sqrt(np.diag(self.vcov))))
        self.deviance = float(sol["deviance"])
        self.loglik = -self.deviance / 2
        self.df = model.p + 1 + len(theta)
        self.ranefs, self.condsds, self.groups_by, self.ranef_names = {}, {}, {}, {}
        for g in model.factors:
            ks = [k for k, t in enumerate(model.terms) if t.factor == g]
            self.ranefs[g] = np.column_stack([sol["b"][k] for k in ks])
            self.condsds[g] = np.column_stack([np.sqrt(np.diagonal(sol["condvar"][k], axis1=1, axis2=2))
                                               for k in ks])
            self.groups_by[g] = model.terms[ks[0]].levels
            self.ranef_names[g] = [c for k in ks for c in model.terms[k].columns]
        self._warn_boundary(alg)

    def _warn_boundary(self, alg):
        at = [t.name for t, T in zip(self.model.terms, alg.Ts(self.theta)) if np.any(np.diag(T) == 0)]
        self.singular = bool(at)
        if at:
            warnings.warn(f"boundary (singular) fit: the covariance of {', '.join(map(repr, at))} is singular "
                          "(a variance estimated as 0 or a correlation of +-1); the fit is finished, but consider "
                          "a simpler random-effects structure", BoundaryWarning, stacklevel=3)

    def summary(self):
        """The fit as lmer's ``summary()`` prints it (random effects, groups, fixed effects)."""
        m = self.model
        head = f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'} ['lmerMod']"
        crit = f"REML criterion at convergence: {self.deviance:.4f}" if self.reml else \
            f"     AIC      BIC   logLik deviance\n{-2 * self.loglik + 2 * self.df:8.1f} " \
            f"{-2 * self.loglik + np.log(m.n) * self.df:8.1f} {self.loglik:8.1f} {self.deviance:8.1f}"
        rows = []
        for name, G in self.Gs.items():
            t = next(t for t in m.terms if t.name == name)
            sd = np.sqrt(np.diag(G))
            for a, col in enumerate(t.columns):
                corr = " ".join(f"{G[a, b] / (sd[a] * sd[b]) if sd[a] * sd[b] > 0 else 0:5.2f}" for b in range(a))
                rows.append((name if a == 0 else "", col, f"{G[a, a]:.4g}", f"{sd[a]:.4g}", corr))
        rows.append(("Residual", "", f"{self.sigma2:.4g}", f"{np.sqrt(self.sigma2):.4g}", ""))
        widths = [max(len(r[i]) for r in rows + [("Groups", "Name", "Variance", "Std.Dev.", "Corr")])
                  for i in range(5)]
        fmt = lambda r: " " + " ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()   # noqa: E731
        lines = [head, f"Formula: {m.formula.text}", crit, "", "Random effects:",
                 fmt(("Groups", "Name", "Variance", "Std.Dev.", "Corr" if any(r[4] for r in rows) else ""))]
        lines += [fmt(r) for r in rows]
        groups = "; ".join(f"{g}, {len(self.groups_by[g])}" for g in dict.fromkeys(t.factor for t in m.terms))
        lines.append(f"Number of obs: {m.n}, groups:  {groups}")
        lines += ["", "Fixed effects:", f"{'':14s}{'Estimate':>10s}{'Std. Error':>12s}{'t value':>9s}"]
        for name in m.fixef_names:
            est, se = self.fixef[name], self.fixef_se[name]
            lines.append(f"{name:14s}{est:10.4f}{se:12.4f}{est / se:9.3f}")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def fit(model, reml=True):
    """Fit a :class:`~teachlmm.multilevel.MultilevelModel` by ML or REML (lme4's profiled deviance).

    Parameters
    ----------
    model : MultilevelModel
    reml : bool
        True (the default, as lmer) for REML, False for maximum likelihood.

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
    >>> print(r.summary().splitlines()[-5])
    Number of obs: 144, groups:  plate, 24; sample, 6
    """
    alg = Algebra(model)
    theta, res = optimise(alg, reml)
    if not res.success and "ABNORMAL" not in str(res.message).upper():
        warnings.warn(f"the optimiser stopped early ({res.message}); check the fit", ConvergenceWarning,
                      stacklevel=2)
    return MultilevelResult(model, alg, theta, reml, optimiser=res)
