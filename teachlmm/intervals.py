"""How sure are we of the estimates? Confidence intervals and the parametric bootstrap.

:func:`confint` gives Wald intervals beta_k +- z SE_k for the fixed effects
(lme4's ``confint(method = "Wald")``), or parametric-bootstrap percentile
intervals for every parameter (``method = "boot"``).

The parametric bootstrap (:func:`bootstrap`) is: simulate a response from the
fitted model (:func:`teachlmm.results.simulate`), refit by EM, repeat::

    y*_b = X beta + Z_j b*_j + eps*,   b*_j ~ N(0, G),  eps* ~ N(0, sigma2 I)

A refit needs only the per-group statistics that depend on y (X_j'y_j,
Z_j'y_j, y_j'y_j); X_j'X_j, X_j'Z_j and Z_j'Z_j are shared by every replicate
(:func:`with_response`). Model comparison by a bootstrap LRT
(:mod:`teachlmm.compare`) uses the same refit engine.

Fits with several grouping factors (:class:`~teachlmm.multilevel_result.MultilevelResult`)
get the same Wald intervals and the same bootstrap: every factor's effects
are drawn in each simulated response (``fit.simulate``) and the refit is
:func:`teachlmm.multilevel_fit.fit` started at the fit's theta. Profile
intervals are not available (for one factor neither); t quantiles with
``ddf=`` need degrees of freedom, not available for several factors yet.
"""
import copy
import dataclasses
import math
import sys
import time
import warnings

import numpy as np
from scipy import stats as sps

from . import ddf, em, frames, multilevel_fit, validators
from .errors import BoundaryWarning, ConvergenceWarning, TeachLMMError
from .multilevel import MultilevelModel
from .results import MixedModelResult, response_sampler
from .tables import format_table

__all__ = ["parameter_names", "bootstrap", "BootstrapResult", "confint", "Intervals", "with_response",
           "refit_start", "RefitTally", "Progress"]


# ----------------------------------------------------------------------------
# refitting to a new response (the engine of every bootstrap)
# ----------------------------------------------------------------------------

def with_response(model, y):
    """A shallow copy of ``model`` whose response is ``y``.

    Only the y-dependent statistics are recomputed, one ``np.bincount`` per
    column (O(n (p+q)), no sorting)::

        X_j'y_j,  Z_j'y_j,  y_j'y_j

    X, Z, the groups and X_j'X_j, X_j'Z_j, Z_j'Z_j are shared with ``model``.
    For a model built from chunks, ``y`` is the statistics of the new response
    (:func:`teachlmm.results.statistics_sampler`), taken as they are.
    """
    if isinstance(model, MultilevelModel):                      # several factors: the algebra is rebuilt per refit
        return model.with_response(y)
    if model.X is None and hasattr(y, "yty"):                   # from chunks: the statistics of y*
        new = copy.copy(model)
        new.stats = y
        return new
    y = np.asarray(y, dtype=float)
    W = np.column_stack([model.X, model.Z])                     # [X Z], (n, p + q)
    Wty = np.stack([np.bincount(model.codes, weights=W[:, k] * y, minlength=model.J)
                    for k in range(W.shape[1])], axis=1).reshape(model.J, W.shape[1])
    new = copy.copy(model)
    new.y = y
    new.stats = dataclasses.replace(model.stats, Xty=Wty[:, :model.p], Zty=Wty[:, model.p:],
                                    yty=np.bincount(model.codes, weights=y * y, minlength=model.J))
    return new


def refit_start(fit):
    """Start values for a refit: the original estimates, unless G is singular.

    EM never leaves a face of the parameter space it starts on (a variance at 0
    stays 0), so a singular fit's refits start from EM's default instead.
    """
    if not isinstance(fit, MixedModelResult):                  # several factors: start at theta
        return {} if fit.singular else {"start": fit.theta}
    return {} if fit.singular else {"G": fit.G, "sigma2": fit.sigma2}


class RefitTally:
    """Counts of refits that ended on the boundary or hit max_iter."""

    def __init__(self):
        self.fits = self.singular = self.not_converged = 0

    def refit(self, model, y, reml, start):
        """EM refit on response y; the refit's warnings are counted, not shown one by one."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            refit = multilevel_fit.fit if isinstance(model, MultilevelModel) else em.fit
            fit = refit(with_response(model, y), reml=reml, **start)
        self.fits += 1
        self.singular += bool(fit.singular)
        self.not_converged += not fit.converged
        return fit

    def warn(self, what):
        if self.not_converged:
            warnings.warn(f"{self.not_converged} of {self.fits} {what} refits stopped at max_iter before "
                          "converging; their estimates are included. If that is many, the model may be too "
                          "rich for the data.", ConvergenceWarning, stacklevel=3)


class Progress:
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
    >>> tl.intervals.parameter_names(fit)
    ['sd_(Intercept)|county', 'cor_floor.(Intercept)|county', 'sd_floor|county', 'sigma']
    """
    return [name for name, _ in fit.variance_parameters()]


def _parameter_values(fit):
    """The values for :func:`parameter_names`, then the fixed effects (lme4's order).

    sd_k = sqrt(G_kk), cor_kl = G_kl / (sd_k sd_l) (NaN when an sd is 0), sigma = sqrt(sigma2)
    (:meth:`teachlmm.results.BaseResult.variance_parameters`).
    """
    return np.array([v for _, v in fit.variance_parameters()] + list(fit.beta), dtype=float)


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
    seed : None, int >= 0, SeedSequence or Generator, optional (see :mod:`teachlmm.validators`)
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
    >>> boot = tl.intervals.bootstrap(fit, n_boot=20, seed=1)
    >>> boot.names
    ['sd_(Intercept)|county', 'sigma', '(Intercept)', 'floor']
    >>> boot.draws.shape
    (20, 4)
    """
    n_boot = validators.positive_int(n_boot, "n_boot")
    t0 = time.perf_counter()
    rng = validators.rng(seed)
    draw, start, tally = response_sampler(fit), refit_start(fit), RefitTally()
    bar = Progress(n_boot, "bootstrap refits", progress)
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
        head = ["", f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"]
        lines = [format_table([[k, f"{lo:.6g}", f"{hi:.6g}"] for k, (lo, hi) in self.items()], head, indent="")]
        if self.bootstrap is not None:
            bt = self.bootstrap
            lines.append(f"(parametric bootstrap, {bt.n_boot} refits by {'REML' if bt.reml else 'ML'}; "
                         f"{bt.n_singular} singular, {bt.n_not_converged} not converged)")
        return "\n".join(lines)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        a = (1 - self.level) / 2
        head = ["", f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"]
        caption = f"{self.method} confidence intervals, level {self.level:g}"
        return frames.html_table(head, [[k, f"{lo:.6g}", f"{hi:.6g}"] for k, (lo, hi) in self.items()], caption)

    def to_frame(self):
        """A pandas DataFrame, one row per parameter, columns lme4's "2.5 %" and "97.5 %" (for level 0.95)."""
        pd = frames.require_pandas()
        a = (1 - self.level) / 2
        return pd.DataFrame([list(v) for v in self.values()], index=pd.Index(list(self)),
                            columns=[f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"])


def _z(level):
    """The normal quantile z_(1 - alpha/2), alpha = 1 - level (1.96 for 95 %)."""
    return float(sps.norm.ppf(0.5 + validators.level(level) / 2))


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
    level = validators.level(level)
    boot = bootstrap(fit, n_boot=n_boot, seed=seed, progress=progress)
    return Intervals({name: _percentile(boot.draws[:, k], level) for k, name in enumerate(boot.names)},
                     level, "boot", bootstrap=boot)


def confint(fit, method="wald", level=0.95, **options):
    """Confidence intervals for the parameters of a fit.

    Parameters
    ----------
    fit : MixedModelResult or MultilevelResult
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
    if method == "profile":
        raise TeachLMMError("profile-likelihood intervals are not available: method must be 'wald' or 'boot' "
                            "(parametric-bootstrap percentile intervals for every parameter)")
    if method == "wald":
        ddf_method = options.pop("ddf", None)
        if options:
            raise TeachLMMError(f"method='wald' takes no options but ddf, got {sorted(options)}")
        if ddf_method is not None and not isinstance(fit, MixedModelResult):
            raise TeachLMMError("ddf= needs degrees of freedom, which are not available for models with several "
                                "grouping factors yet; confint(method='wald') without ddf gives normal-quantile "
                                "intervals, method='boot' parametric-bootstrap ones")
        if ddf_method is not None:                 # t quantiles with small-sample df (teachlmm.ddf)
            ci = Intervals(ddf.wald_intervals(fit, level, ddf_method), validators.level(level), "wald")
            ci.ddf = ddf_method
            return ci
        return _wald_intervals(fit, level)
    if method == "boot":
        unknown = set(options) - {"n_boot", "seed", "progress"}
        if unknown:
            raise TeachLMMError(f"unknown option(s) {sorted(unknown)} for method='boot'; "
                                "use n_boot, seed, progress")
        return _boot_intervals(fit, level, **options)
    raise TeachLMMError(f"method must be 'wald' or 'boot', not {method!r}")
