"""Inference after the fit: deviance, model comparison, intervals, simulation.

Four questions a course asks of a fitted mixed model, and the tool for each:

*How well does it fit, for its size?*  The information criteria, defined as
lme4 defines them (``fit.aic``, ``fit.bic``, ``fit.df`` live on the result)::

    AIC = -2 loglik + 2 df           BIC = -2 loglik + log(n) df
    df  = p + (free entries of G) + 1 (sigma2)

For a REML fit, ``loglik`` is the *restricted* log-likelihood. Compare REML
criteria only between models with the same fixed effects.

*Is the bigger model worth it?*  :func:`anova` tests nested models with the
likelihood-ratio statistic ``LRT = 2 (loglik_big - loglik_small)`` on ML fits
(REML fits are refitted by ML first, as lme4 does). The reference distribution
is chi2(df_big - df_small), unless the test puts a variance on the edge of its
range (H0: s_b^2 = 0): then it is a mixture of chi-squares, and a parametric
bootstrap (``method="boot"``) gives a finite-sample answer.

*How sure are we of the estimates?*  :func:`confint`: Wald intervals
beta_k +- z SE_k for the fixed effects, or parametric-bootstrap percentile
intervals for every parameter.

*What data does the model expect?*  :func:`simulate` draws new responses from
the fitted model::

    y*_j = X_j beta + Z_j b*_j + eps*_j,   b*_j ~ N(0, G),  eps*_j ~ N(0, sigma2 I)

The parametric bootstrap is just that: simulate, refit by EM, repeat. A
refit needs only the per-group statistics that depend on y (X_j'y_j,
Z_j'y_j, y_j'y_j); X_j'X_j, X_j'Z_j and Z_j'Z_j are shared by every replicate.
"""
import copy
import dataclasses
import math
import sys
import textwrap
import time
import warnings

import numpy as np
from scipy import stats as sps

from . import em, mme
from .errors import BoundaryWarning, ConvergenceWarning, DataError, TeachLMMError

__all__ = ["deviance", "simulate", "bootstrap", "BootstrapResult", "parameter_names", "confint", "Intervals",
           "anova", "AnovaTable", "mixture_pvalue"]


# ----------------------------------------------------------------------------
# deviance
# ----------------------------------------------------------------------------

def _profiled_deviance(stats, G, sigma2, reml):
    """-2 x the (restricted) log-likelihood at T = chol(G / sigma2), maximised over sigma2.

    With the relative factor T fixed, the penalised residual sum of squares
    pwrss = sigma2 r'V^-1 r, log|M~_j| and log|A| do not depend on sigma2, so::

        sigma2_hat = pwrss / dof,          dof = n (ML) or n - p (REML)
        deviance   = dof (1 + log(2 pi pwrss / dof)) + sum_j log|M~_j| [+ log|A| for REML]

    This is how lme4 evaluates "the other" criterion at a fit (its ``devCrit``).
    """
    sol = mme.solve(stats, G, sigma2)
    n, p = stats.n_total, sol.A.shape[0]
    dof = n - p if reml else n
    value = dof * (1.0 + math.log(2.0 * math.pi * sol.rVr / dof)) + sol.logdet_Mt.sum()
    if reml:
        value += sol.logdet_A
    return float(value)


def deviance(fit, reml=None):
    """lme4's ``deviance()``: -2 x the log-likelihood of a fit.

    Parameters
    ----------
    fit : MixedModelResult
    reml : bool, optional
        Which criterion. Default: the one the fit maximised, as lme4's
        ``deviance(fit)``: for an ML fit ``-2 loglik``; for a REML fit the REML
        criterion ``-2 loglik_R`` (lme4 1.1-31 returns it with a warning that
        this use is deprecated; it is not a deviance in the ML sense).
        ``reml=False`` on a REML fit gives lme4's ``deviance(fit, REML = FALSE)``:
        the ML deviance at the REML estimate of T = chol(G / sigma2), with
        sigma2 re-estimated (profiled) for ML. ``reml=True`` on an ML fit is the
        REML criterion at the ML estimate of T, sigma2 profiled for REML
        (lme4's ``REMLcrit(fit)``; lme4's ``deviance(fit, REML = TRUE)`` ignores
        the argument for ML fits and returns the ML deviance).

    Returns
    -------
    float

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> round(fit.deviance, 3), round(tl.inference.deviance(fit, reml=False), 3)
    (2171.305, 2163.656)
    """
    reml = fit.reml if reml is None else bool(reml)
    if reml == fit.reml:
        return -2.0 * fit.loglik
    return _profiled_deviance(fit.model.stats, fit.G, fit.sigma2, reml)


# ----------------------------------------------------------------------------
# simulate
# ----------------------------------------------------------------------------

def _sampler(fit):
    """A function rng -> one response vector y* drawn from the fitted model.

    b*_j = L u_j with u_j ~ N(0, I_q) and L L' = G. L = sqrt(sigma2) T is the
    relative factor of :mod:`teachlmm.mme`, which exists also for a singular G
    (a variance of 0 gives a zero column: that effect is never drawn).
    """
    m = fit.model
    mean = m.X @ fit.beta                                       # X beta
    L = math.sqrt(fit.sigma2) * mme.relative_factor(fit.G, fit.sigma2)
    sigma = math.sqrt(fit.sigma2)

    def draw(rng):
        b = rng.standard_normal((m.J, m.q)) @ L.T               # b*_j ~ N(0, G), one row per group
        eps = sigma * rng.standard_normal(m.n)                  # eps* ~ N(0, sigma2 I)
        return mean + np.einsum("iq,iq->i", m.Z, b[m.codes]) + eps
    return draw


def simulate(fit, n_sim=1, seed=None):
    """New responses from the fitted model (lme4's ``simulate()``).

    Each simulation draws fresh random effects and fresh residuals::

        y* = X beta + Z_j b*_j + eps*,   b*_j ~ N(0, G),  eps* ~ N(0, sigma2 I)

    at the fit's (beta, G, sigma2), keeping X, Z and the groups of the data.

    Parameters
    ----------
    fit : MixedModelResult
    n_sim : int
        Number of simulated response vectors.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        The same seed gives the same draws.

    Returns
    -------
    (n_sim, n) array, one simulated response per row.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> ys = fit.simulate(n_sim=3, seed=1)
    >>> ys.shape
    (3, 919)
    >>> bool((ys == fit.simulate(n_sim=3, seed=1)).all())
    True
    """
    n_sim = _positive_int(n_sim, "n_sim")
    rng = np.random.default_rng(seed)
    draw = _sampler(fit)
    return np.array([draw(rng) for _ in range(n_sim)]).reshape(n_sim, fit.model.n)


def _positive_int(value, name):
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TeachLMMError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------
# refitting to a new response (the engine of every bootstrap)
# ----------------------------------------------------------------------------

def _with_response(model, y):
    """A shallow copy of ``model`` whose response is ``y``.

    Only the y-dependent statistics are recomputed, one ``np.bincount`` per
    column (O(n (p+q)), no sorting)::

        X_j'y_j,  Z_j'y_j,  y_j'y_j

    X, Z, the groups and X_j'X_j, X_j'Z_j, Z_j'Z_j are shared with ``model``.
    """
    y = np.asarray(y, dtype=float)
    W = np.column_stack([model.X, model.Z])                     # [X Z], (n, p + q)
    Wty = np.stack([np.bincount(model.codes, weights=W[:, k] * y, minlength=model.J)
                    for k in range(W.shape[1])], axis=1).reshape(model.J, W.shape[1])
    new = copy.copy(model)
    new.y = y
    new.stats = dataclasses.replace(model.stats, Xty=Wty[:, :model.p], Zty=Wty[:, model.p:],
                                    yty=np.bincount(model.codes, weights=y * y, minlength=model.J))
    return new


def _start(fit):
    """Start values for a refit: the original estimates, unless G is singular.

    EM never leaves a face of the parameter space it starts on (a variance at 0
    stays 0), so a singular fit's refits start from EM's default instead.
    """
    return {} if fit.singular else {"G": fit.G, "sigma2": fit.sigma2}


class _Tally:
    """Counts of refits that ended on the boundary or hit max_iter."""

    def __init__(self):
        self.fits = self.singular = self.not_converged = 0

    def refit(self, model, y, reml, start):
        """EM refit on response y; the refit's warnings are counted, not shown one by one."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = em.fit(_with_response(model, y), reml=reml, **start)
        self.fits += 1
        self.singular += bool(fit.singular)
        self.not_converged += not fit.converged
        return fit

    def warn(self, what):
        if self.not_converged:
            warnings.warn(f"{self.not_converged} of {self.fits} {what} refits stopped at max_iter before "
                          "converging; their estimates are included. If that is many, the model may be too "
                          "rich for the data.", ConvergenceWarning, stacklevel=3)


class _Progress:
    """A one-line progress display on stderr: done/total, rate, time left."""

    def __init__(self, total, label, enabled, every=0.25):
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.t0 = self.last = time.perf_counter()

    def update(self, done):
        if not self.enabled:
            return
        now = time.perf_counter()
        if done >= self.total:
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} in {now - self.t0:.1f} s" + " " * 20 + "\n")
        elif now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({rate:.1f}/s, "
                             f"{(self.total - done) / rate:.0f} s left)   ")
        sys.stderr.flush()


# ----------------------------------------------------------------------------
# the parameters of a fit, by name
# ----------------------------------------------------------------------------

def parameter_names(fit):
    """lme4's names (``confint(..., oldNames = FALSE)``) of the variance parameters.

    For each block of G (lower triangle, column by column): ``sd_<effect>|<group>``
    on the diagonal, ``cor_<effect>.<effect>|<group>`` below it; then ``sigma``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))
    >>> tl.inference.parameter_names(fit)
    ['sd_(Intercept)|county', 'cor_floor.(Intercept)|county', 'sd_floor|county', 'sigma']
    """
    m, names = fit.model, []
    for blk in m.blocks:
        for a, i in enumerate(blk):
            names.append(f"sd_{m.ranef_names[i]}|{m.group_name}")
            names += [f"cor_{m.ranef_names[j]}.{m.ranef_names[i]}|{m.group_name}" for j in blk[a + 1:]]
    return names + ["sigma"]


def _parameter_values(fit):
    """The values for :func:`parameter_names`, then the fixed effects (lme4's order).

    sd_k = sqrt(G_kk), cor_kl = G_kl / (sd_k sd_l) (NaN when an sd is 0), sigma = sqrt(sigma2).
    """
    m, sd, corr, values = fit.model, fit.sd, fit.corr, []
    for blk in m.blocks:
        for a, i in enumerate(blk):
            values.append(sd[i])
            values += [corr[j, i] for j in blk[a + 1:]]
    values.append(math.sqrt(fit.sigma2))
    return np.array(values + list(fit.beta), dtype=float)


# ----------------------------------------------------------------------------
# parametric bootstrap
# ----------------------------------------------------------------------------

@dataclasses.dataclass
class BootstrapResult:
    """Parameter estimates from refits to responses simulated from a fit.

    Attributes
    ----------
    names : list of str
        Variance parameters (lme4's names, see ``parameter_names``) then fixed effects.
    estimate : (k,) array, the original fit's values.
    draws : (n_boot, k) array, one refit per row (NaN for a correlation whose sd is 0).
    n_boot, n_singular, n_not_converged : int
        Refits in all, refits that ended on the boundary, refits that hit max_iter.
    reml : bool.   seconds : float.
    """

    names: list
    estimate: np.ndarray
    draws: np.ndarray
    n_boot: int
    n_singular: int
    n_not_converged: int
    reml: bool
    seconds: float

    def __getitem__(self, name):
        """The draws of one parameter, by name."""
        if name not in self.names:
            raise TeachLMMError(f"no parameter {name!r}; the names are {self.names}")
        return self.draws[:, self.names.index(name)]


def bootstrap(fit, n_boot=500, seed=None, progress=False):
    """Parametric bootstrap: simulate from the fit, refit by EM, keep the estimates.

    For b = 1..n_boot: y*_b = ``simulate(fit)``; refit the same model (REML or
    ML, as ``fit``) to y*_b, starting from the fit's estimates; record every
    parameter. The spread of the refits around the original estimate shows
    how far the estimates move from data set to data set.

    Parameters
    ----------
    fit : MixedModelResult
    n_boot : int
        Number of simulated data sets (each one EM fit).
    seed : int, SeedSequence or Generator, optional
        The same seed gives the same draws (row b uses ``fit.simulate(n_boot, seed)[b]``).
    progress : bool
        Show done/total, rate and time left on stderr.

    Returns
    -------
    BootstrapResult

    Warns
    -----
    ConvergenceWarning
        Once, with the count, if some refits stopped at max_iter. Singular
        refits (a variance at 0) are counted in ``n_singular``, not warned about.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> boot = tl.inference.bootstrap(fit, n_boot=20, seed=1)
    >>> boot.names
    ['sd_(Intercept)|county', 'sigma', '(Intercept)', 'floor']
    >>> boot.draws.shape
    (20, 4)
    """
    n_boot = _positive_int(n_boot, "n_boot")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    draw, start, tally = _sampler(fit), _start(fit), _Tally()
    bar = _Progress(n_boot, "bootstrap refits", progress)
    draws = np.empty((n_boot, len(parameter_names(fit)) + fit.model.p))
    for b in range(n_boot):                                     # one EM fit per simulated data set
        draws[b] = _parameter_values(tally.refit(fit.model, draw(rng), fit.reml, start))
        bar.update(b + 1)
    tally.warn("bootstrap")
    return BootstrapResult(names=parameter_names(fit) + list(fit.fixef_names),
                           estimate=_parameter_values(fit), draws=draws, n_boot=n_boot,
                           n_singular=tally.singular, n_not_converged=tally.not_converged,
                           reml=fit.reml, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------
# confidence intervals
# ----------------------------------------------------------------------------

class Intervals(dict):
    """Confidence intervals: a dict ``name -> (low, high)`` that prints as lme4's table.

    Attributes
    ----------
    level : float.   method : "wald" or "boot".
    bootstrap : BootstrapResult or None (the refits behind a bootstrap interval).
    """

    def __init__(self, items, level, method, bootstrap=None):
        super().__init__(items)
        self.level, self.method, self.bootstrap = level, method, bootstrap

    def __str__(self):
        a = (1 - self.level) / 2
        head = [f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"]
        width = max([len(k) for k in self] + [4])
        lines = [" " * width + "".join(f"{h:>12}" for h in head)]
        lines += [f"{k:<{width}}{lo:>12.6g}{hi:>12.6g}" for k, (lo, hi) in self.items()]
        if self.bootstrap is not None:
            bt = self.bootstrap
            lines.append(f"(parametric bootstrap, {bt.n_boot} refits by {'REML' if bt.reml else 'ML'}; "
                         f"{bt.n_singular} singular, {bt.n_not_converged} not converged)")
        return "\n".join(lines)


def _check_level(level):
    try:
        ok = 0 < float(level) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TeachLMMError(f"level must be a number between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def _z(level):
    """The normal quantile z_(1 - alpha/2), alpha = 1 - level (1.96 for 95 %)."""
    return float(sps.norm.ppf(0.5 + _check_level(level) / 2))


def _wald_intervals(fit, level=0.95):
    """beta_k -+ z_(1 - alpha/2) SE_k for each fixed effect, SE_k = sqrt((sigma2 A^-1)_kk).

    lme4's ``confint(fit, method = "Wald")`` (it prints NA for the variance
    parameters: a normal approximation is poor for them near 0).
    """
    z = _z(level)
    return Intervals({k: (fit.fixef[k] - z * fit.fixef_se[k], fit.fixef[k] + z * fit.fixef_se[k])
                      for k in fit.fixef_names}, level, "wald")


def _percentile(x, level):
    """The (1 - level)/2 and (1 + level)/2 sample quantiles of the finite draws."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def _boot_intervals(fit, level=0.95, n_boot=500, seed=None, progress=False):
    """Percentile intervals from a parametric bootstrap of every parameter.

    For each parameter theta: the (1-level)/2 and (1+level)/2 quantiles of its
    n_boot refitted values theta*_b (lme4's ``confint(method = "boot")`` with
    ``boot.type = "perc"``). A correlation is undefined in a refit where an sd
    is 0; those refits are left out of its interval.
    """
    level = _check_level(level)
    boot = bootstrap(fit, n_boot=n_boot, seed=seed, progress=progress)
    return Intervals({name: _percentile(boot.draws[:, k], level) for k, name in enumerate(boot.names)},
                     level, "boot", bootstrap=boot)


def confint(fit, method="wald", level=0.95, **options):
    """Confidence intervals for the parameters of a fit.

    Parameters
    ----------
    fit : MixedModelResult
    method : {"wald", "boot"}
        "wald": fixed effects only, beta_k -+ z SE_k with the normal quantile z
        (lme4's ``confint(method = "Wald")``). "boot": parametric-bootstrap
        percentile intervals for every parameter: the sds and correlations of
        the random effects, sigma and the fixed effects.
    level : float
        Coverage, 0.95 by default.
    **options
        For "boot": ``n_boot`` (default 500), ``seed``, ``progress`` (see
        :func:`bootstrap`). For "wald": ``ddf`` ("Satterthwaite",
        "Kenward-Roger", "between-within", "normal") uses t quantiles with
        those df instead of z (and Kenward-Roger's adjusted SEs); see
        :func:`teachlmm.ddf.wald_intervals`.

    Returns
    -------
    Intervals
        A dict ``name -> (low, high)``; ``print()`` it for a table.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))
    >>> ci = fit.confint(method="wald")
    >>> [round(v, 4) for v in ci["floor"]]
    [-0.8528, -0.5094]
    """
    method = str(method).lower()
    if method == "wald":
        ddf = options.pop("ddf", None)
        if options:
            raise TeachLMMError(f"method='wald' takes no options but ddf, got {sorted(options)}")
        if ddf is not None:                      # t quantiles with small-sample df (teachlmm.ddf)
            from .ddf import wald_intervals
            return wald_intervals(fit, level, ddf)
        return _wald_intervals(fit, level)
    if method == "boot":
        unknown = set(options) - {"n_boot", "seed", "progress"}
        if unknown:
            raise TeachLMMError(f"unknown option(s) {sorted(unknown)} for method='boot'; "
                                "use n_boot, seed, progress")
        return _boot_intervals(fit, level, **options)
    raise TeachLMMError(f"method must be 'wald' or 'boot', not {method!r}")


# ----------------------------------------------------------------------------
# model comparison
# ----------------------------------------------------------------------------

def _free_entries(model):
    """The free entries (a, b), a >= b, of G, named by random effect: {(name_a, name_b)}."""
    out = set()
    for blk in model.blocks:
        for a in blk:
            out |= {(model.ranef_names[a], model.ranef_names[b]) for b in blk if b <= a}
    return out


def _check_same_data(fits):
    first = fits[0].model
    for k, f in enumerate(fits[1:], start=2):
        m = f.model
        if m.n != first.n:
            raise DataError(f"fit 1 has {first.n} rows but fit {k} has {m.n}: models compared by a "
                            "likelihood-ratio test must be fitted to the same rows")
        if not np.array_equal(m.y, first.y):
            raise DataError(f"fit {k} has a different response than fit 1 (same length, other values); "
                            "compare models of the same data and the same response")
        if m.group_name != first.group_name or not np.array_equal(m.codes, first.codes):
            raise DataError(f"fit {k} groups the rows differently than fit 1 ({m.group_name!r} vs "
                            f"{first.group_name!r}); anova compares models with the same grouping")


def _check_nested(small, big, name_small, name_big):
    """small is nested in big: its X and Z columns and its free G entries are all in big."""
    ms, mb = small.model, big.model
    for kind, names_s, names_b, A, B in (("fixed effect", ms.fixef_names, mb.fixef_names, ms.X, mb.X),
                                        ("random effect", ms.ranef_names, mb.ranef_names, ms.Z, mb.Z)):
        for k, name in enumerate(names_s):
            if name not in names_b or not np.allclose(A[:, k], B[:, names_b.index(name)]):
                raise TeachLMMError(f"{name_small} is not nested in {name_big}: its {kind} {name!r} is not in "
                                    f"{name_big}. A likelihood-ratio test needs the smaller model to be a "
                                    "special case of the bigger one; compare non-nested models by AIC/BIC.")
    missing = _free_entries(ms) - _free_entries(mb)
    if missing:
        raise TeachLMMError(f"{name_small} is not nested in {name_big}: it estimates the covariance(s) "
                            f"{sorted(missing)} that {name_big} fixes at 0")
    if small.df >= big.df:
        raise TeachLMMError(f"{name_small} and {name_big} have the same number of parameters ({big.df}): "
                            "they are the same model, there is nothing to test")


def _added_variances(small, big):
    """The random effects whose variance is 0 under the smaller model but free in the bigger one."""
    before = {a for a, b in _free_entries(small.model) if a == b}
    return [a for a, b in sorted(_free_entries(big.model)) if a == b and a not in before]


def mixture_pvalue(chisq, df):
    """P-value against 0.5 chi2(df - 1) + 0.5 chi2(df): the LRT null when one variance is tested = 0.

    When H0 sets one variance to 0 (the edge of its range, with its df - 1
    covariances and any other added parameters free under H1), the LRT's
    large-sample null distribution is this 50:50 mixture (Self & Liang 1987;
    Stram & Lee 1994): in half of the data sets the estimate under H1 sits on
    the edge too and the statistic is chi2 with one df less. chi2(0) is a point
    mass at 0.

    Examples
    --------
    >>> round(mixture_pvalue(2.5418, 2), 4)     # radon M1 vs M3: 0.5 x 0.1109 + 0.5 x 0.2806
    0.1957
    """
    low = sps.chi2.sf(chisq, df - 1) if df > 1 else float(chisq <= 0)
    return float(0.5 * low + 0.5 * sps.chi2.sf(chisq, df))


def _format_column(values, digits=5):
    """R's ``format(x, digits = 5)`` for a column: the decimals that give every entry 5 significant digits."""
    finite = [abs(v) for v in values if v is not None and np.isfinite(v) and v != 0]
    dec = max([digits - 1 - math.floor(math.log10(v)) for v in finite] + [0])
    dec = min(dec, 10)
    return ["" if v is None or not np.isfinite(v) else f"{v:.{dec}f}" for v in values]


def _format_p(p):
    if p is None or not np.isfinite(p):
        return ""
    return "< 2.2e-16" if p < 2.2e-16 else f"{p:.4g}"


def _stars(p):
    if p is None or not np.isfinite(p):
        return ""
    return next(s for cut, s in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.01, " "))
                if p < cut)


class AnovaTable:
    """The likelihood-ratio table of :func:`anova`, one row per model (sorted by df).

    Attributes
    ----------
    names : list of str.   fits : the ML fits the table is computed from.
    refitted : list of bool, which fits were REML and refitted by ML.
    rows : list of dict with lme4's columns "model", "npar", "AIC", "BIC",
        "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)" (None in the first row).
    chisq, df : (k,) arrays, LRT statistic and df against the row above (NaN in row 1).
    pvalue : (k,) array, the p-values of ``method`` (chi-square or bootstrap).
    pvalue_chisq : chi2(df) p-values.
    pvalue_mixture : 50:50 mixture p-values where one variance is tested = 0, else NaN.
    boundary : list of lists, the random effects whose variance each test sets to 0.
    method : "chisq" or "boot".
    pvalue_boot, mcse : (k,) arrays, for "boot": (1 + #{LRT* >= LRT}) / (n_boot + 1)
        and its Monte Carlo standard error sqrt(p (1 - p) / n_boot).
    lrt_boot : list of (n_boot,) arrays, the simulated statistics (None in row 1).
    singular_boot : list of pairs, singular refits of the smaller and of the bigger model.
    n_boot, n_singular, n_not_converged : int, bootstrap size and total refit counts.
    """

    def __init__(self, names, fits, refitted, method):
        self.names, self.fits, self.refitted, self.method = names, fits, refitted, method
        k = len(fits)
        self.chisq, self.df = np.full(k, np.nan), np.full(k, np.nan)
        self.pvalue_chisq, self.pvalue_mixture = np.full(k, np.nan), np.full(k, np.nan)
        self.boundary = [[] for _ in range(k)]
        for i in range(1, k):
            small, big = fits[i - 1], fits[i]
            self.chisq[i] = max(0.0, 2 * (big.loglik - small.loglik))   # lme4: 2 pmax(0, diff(logLik))
            self.df[i] = big.df - small.df
            self.pvalue_chisq[i] = sps.chi2.sf(self.chisq[i], self.df[i])
            self.boundary[i] = _added_variances(small, big)
            if len(self.boundary[i]) == 1:
                self.pvalue_mixture[i] = mixture_pvalue(self.chisq[i], int(self.df[i]))
        self.pvalue = self.pvalue_chisq
        self.pvalue_boot = self.mcse = self.lrt_boot = self.singular_boot = None
        self.n_boot = self.n_singular = self.n_not_converged = 0

    @property
    def rows(self):
        out = []
        for i, f in enumerate(self.fits):
            first = i == 0
            out.append({"model": self.names[i], "npar": f.df, "AIC": f.aic, "BIC": f.bic,
                        "logLik": f.loglik, "deviance": -2 * f.loglik,
                        "Chisq": None if first else float(self.chisq[i]),
                        "Df": None if first else int(self.df[i]),
                        "Pr(>Chisq)": None if first else float(self.pvalue_chisq[i])})
            if self.method == "boot":
                out[-1]["Pr(boot)"] = None if first else float(self.pvalue_boot[i])
        return out

    def _table(self):
        rows = self.rows
        cols = {c: _format_column([r[c] for r in rows]) for c in ("AIC", "BIC", "logLik", "deviance")}
        cols["Chisq"] = _format_column([r["Chisq"] for r in rows])
        header = ["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
        pcol = "Pr(>Chisq)"
        if self.method == "boot":
            header.append("Pr(boot)")
            pcol = "Pr(boot)"
        body = []
        for i, r in enumerate(rows):
            line = [r["model"], str(r["npar"])] + [cols[c][i] for c in ("AIC", "BIC", "logLik", "deviance",
                                                                       "Chisq")]
            line += ["" if r["Df"] is None else str(r["Df"]), _format_p(r["Pr(>Chisq)"])]
            if self.method == "boot":
                line.append(_format_p(r["Pr(boot)"]))
            line.append(_stars(r[pcol]))
            body.append(line)
        header.append("")
        widths = [max(len(x[k]) for x in body + [header]) for k in range(len(header))]

        def fmt(line):                                          # names left-aligned, numbers right-aligned
            return " ".join(c.ljust(w) if k == 0 else c.rjust(w)
                            for k, (c, w) in enumerate(zip(line, widths))).rstrip()
        return [fmt(header)] + [fmt(x) for x in body]

    def _notes(self):
        out = []
        for i in range(1, len(self.fits)):
            added = self.boundary[i]
            if not added:
                continue
            pair = f"{self.names[i]} vs {self.names[i - 1]}"
            df = int(self.df[i])
            out.append(f"Boundary: {pair} sets the variance of {', '.join(added)} to 0 under H0, the edge "
                       f"of its range (a variance cannot be negative). The chi2({df}) p-value is then "
                       "conservative (too large).")
            if len(added) == 1:
                mix = f"0.5 chi2({df - 1}) + 0.5 chi2({df})" if df > 1 else "0.5 (point mass at 0) + 0.5 chi2(1)"
                out.append(f"  Mixture p-value: {_format_p(self.pvalue_mixture[i])}, from the large-sample null "
                           f"distribution {mix} (Self & Liang 1987; Stram & Lee 1994).")
            else:
                out.append(f"  Large-sample null distribution: a mixture of chi2({df - len(added)}) ... "
                           f"chi2({df}) whose weights depend on the information matrix.")
            if self.method != "boot":
                out.append("  For a finite-sample p-value use method='boot' (a parametric bootstrap LRT).")
        if self.method == "boot":
            out.append(f"Pr(boot): parametric bootstrap LRT, {self.n_boot} data sets simulated from each "
                       "smaller model's ML fit, both models refitted by ML; p = (1 + #{LRT* >= LRT}) / "
                       "(n_boot + 1).")
            for i in range(1, len(self.fits)):
                small, big = self.singular_boot[i]
                out.append(f"  {self.names[i]} vs {self.names[i - 1]}: p = {self.pvalue_boot[i]:.4f} "
                           f"(Monte Carlo SE {self.mcse[i]:.4f}); singular refits: {small} of "
                           f"{self.names[i - 1]}, {big} of {self.names[i]}")
            if self.n_not_converged:
                out.append(f"  {self.n_not_converged} refits stopped at max_iter before converging.")
        return out

    def __str__(self):
        out = []
        if any(self.refitted):
            out.append("refitting model(s) with ML (instead of REML)")
        out.append("Models:")
        out += [f"{name}: {f.model.formula.text}" for name, f in zip(self.names, self.fits)]
        out += self._table()
        out += ["---", "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"]
        notes = [textwrap.fill(line, width=100, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 2))
                 for line in self._notes()]
        return "\n".join(out + ([""] + notes if notes else []))

    def __repr__(self):
        return str(self)


def _ml(fit):
    """The fit itself if ML, else an ML refit of the same model (lme4's ``refitML``) from the REML values."""
    return fit if not fit.reml else em.fit(fit.model, reml=False, **_start(fit))


def _boot_lrt(small, big, n_boot, rng, bar, offset):
    """Simulated LRT statistics under H0: data from the smaller ML fit, both models refitted by ML.

    Returns the n_boot statistics and the refit tallies of the smaller and the bigger model.
    """
    draw, s_start, b_start = _sampler(small), _start(small), _start(big)
    t_small, t_big = _Tally(), _Tally()
    lrt = np.empty(n_boot)
    for b in range(n_boot):
        y = draw(rng)                                           # y* ~ the smaller model
        ll_small = t_small.refit(small.model, y, False, s_start).loglik
        ll_big = t_big.refit(big.model, y, False, b_start).loglik
        lrt[b] = max(0.0, 2 * (ll_big - ll_small))              # LRT*_b
        bar.update(offset + b + 1)
    return lrt, t_small, t_big


def anova(*fits, method="chisq", n_boot=500, seed=None, progress=False, names=None, ddf=None):
    """Likelihood-ratio tests of nested models fitted to the same data (lme4's ``anova()``).

    The models are sorted by their number of parameters df; each is tested
    against the one before it::

        LRT = 2 (loglik_big - loglik_small) = deviance_small - deviance_big
        p   = P(chi2(df_big - df_small) >= LRT)

    The log-likelihoods are ML ones: REML likelihoods of models with different
    fixed effects are not comparable, so REML fits are refitted by ML first
    (lme4 does the same, and says so).

    Parameters
    ----------
    *fits : MixedModelResult
        Two or more fits of nested models to the same data.
    method : {"chisq", "boot"}
        "chisq": the chi-square p-values. "boot": also a parametric-bootstrap
        LRT for each pair: simulate ``n_boot`` data sets from the smaller
        model's ML fit, refit both models by ML, and count how often the
        simulated statistic reaches the observed one. ``pvalue`` then holds
        the bootstrap p-values.
    n_boot : int
        Bootstrap data sets per pair (each is two EM fits).
    seed : int, SeedSequence or Generator, optional
        The same seed gives the same bootstrap p-values.
    progress : bool
        Show the bootstrap's progress on stderr.
    names : list of str, optional
        Row labels, in the order the fits are given (default "model1", ...).

    ddf : {"Satterthwaite", "Kenward-Roger"}, optional
        With a single fit: type III F tests of its fixed terms with these
        denominator df (lmerTest's ``anova(fit, type = 3)``; returns a
        :class:`teachlmm.ddf.FTable`, see :func:`teachlmm.ddf.anova`).

    Returns
    -------
    AnovaTable
        ``print()`` it for lme4's table; ``.chisq``, ``.df``, ``.pvalue``, ``.rows``.
        When a test sets a variance to 0 the printout adds a note: that
        chi-square p-value is conservative, and the mixture p-value is given.

    Raises
    ------
    TeachLMMError
        Fewer than two fits, an unknown method, or models that are not nested.
    DataError
        Fits to different data (rows, response or grouping).

    Examples
    --------
    >>> import teachlmm as tl
    >>> data = tl.load_radon()
    >>> m1 = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", data))
    >>> m3 = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", data))
    >>> tab = tl.inference.anova(m1, m3, names=["M1", "M3"])
    >>> print(f"Chisq {tab.chisq[1]:.4f} on {tab.df[1]:.0f} df, p = {tab.pvalue[1]:.4f}")
    Chisq 2.5418 on 2 df, p = 0.2806
    """
    from .results import MixedModelResult
    if ddf is not None:
        if len(fits) != 1 or not isinstance(fits[0], MixedModelResult):
            raise TeachLMMError("ddf= gives F tests of the terms of one fit: tl.anova(fit, ddf='Satterthwaite'); "
                                "several fits are compared by likelihood-ratio tests without ddf")
        from .ddf import anova as f_tests
        return f_tests(fits[0], ddf=ddf)
    if len(fits) < 2:
        raise TeachLMMError(f"anova compares two or more nested models, got {len(fits)} fit(s); "
                            "for F tests of one model's terms use tl.anova(fit, ddf='Satterthwaite'); "
                            "see also fit.summary(), fit.aic, fit.confint()")
    for k, f in enumerate(fits, start=1):
        if not isinstance(f, MixedModelResult):
            raise TeachLMMError(f"argument {k} is a {type(f).__name__}, not a fitted model (MixedModelResult)")
    method = str(method).lower()
    if method not in ("chisq", "boot"):
        raise TeachLMMError(f"method must be 'chisq' or 'boot', not {method!r}")
    names = [f"model{k}" for k in range(1, len(fits) + 1)] if names is None else [str(x) for x in names]
    if len(names) != len(fits):
        raise TeachLMMError(f"names has {len(names)} entries for {len(fits)} fits")
    _check_same_data(fits)
    order = sorted(range(len(fits)), key=lambda k: fits[k].df)  # stable: ties keep the given order
    fits, names = [fits[k] for k in order], [names[k] for k in order]
    for i in range(1, len(fits)):
        _check_nested(fits[i - 1], fits[i], names[i - 1], names[i])
    ml = [_ml(f) for f in fits]
    table = AnovaTable(names, ml, [f.reml for f in fits], method)
    if method == "boot":
        _add_bootstrap(table, _positive_int(n_boot, "n_boot"), seed, progress)
    return table


def _seed_sequence(seed):
    """A SeedSequence from an int, a SeedSequence, a Generator (one draw from it) or None."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2 ** 63)))
    return np.random.SeedSequence(seed)


def _add_bootstrap(table, n_boot, seed, progress):
    """Bootstrap p-values for each consecutive pair; each pair has its own random stream."""
    k = len(table.fits)
    streams = _seed_sequence(seed).spawn(k - 1)
    bar = _Progress(n_boot * (k - 1), "bootstrap LRT", progress)
    table.pvalue_boot, table.mcse = np.full(k, np.nan), np.full(k, np.nan)
    table.lrt_boot, table.singular_boot = [None] * k, [None] * k
    total = _Tally()
    for i in range(1, k):
        lrt, t_small, t_big = _boot_lrt(table.fits[i - 1], table.fits[i], n_boot,
                                        np.random.default_rng(streams[i - 1]), bar, (i - 1) * n_boot)
        p = (1 + np.sum(lrt >= table.chisq[i] - 1e-10)) / (n_boot + 1)
        table.lrt_boot[i], table.pvalue_boot[i] = lrt, p
        table.mcse[i] = math.sqrt(p * (1 - p) / n_boot)         # binomial standard error of p
        table.singular_boot[i] = (t_small.singular, t_big.singular)
        for t in (t_small, t_big):
            total.fits, total.singular = total.fits + t.fits, total.singular + t.singular
            total.not_converged += t.not_converged
    table.pvalue = table.pvalue_boot
    table.n_boot, table.n_singular, table.n_not_converged = n_boot, total.singular, total.not_converged
    total.warn("bootstrap LRT")
