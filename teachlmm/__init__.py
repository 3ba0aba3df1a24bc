"""teachlmm: linear mixed models, fitted by readable algorithms.

>>> import teachlmm as tl
>>> model = tl.Model("log_radon ~ 1 + floor + (1 + floor | county)", tl.load_radon())
>>> fit = tl.em.fit(model)
>>> round(fit.fixef["(Intercept)"], 4)
1.4628

Modules, one idea each: :mod:`~teachlmm.formula` (lmer syntax),
:mod:`~teachlmm.design` (X, Z and per-group statistics), :mod:`~teachlmm.mme`
(the mixed-model equations at given variance components), :mod:`~teachlmm.em`,
:mod:`~teachlmm.gibbs`, :mod:`~teachlmm.blup` (the three fitting methods),
:mod:`~teachlmm.results` (with ``deviance`` and ``simulate`` from a fit),
:mod:`~teachlmm.compare` (``anova``), :mod:`~teachlmm.ddf` (t and F
tests with Satterthwaite / Kenward-Roger degrees of freedom), :mod:`~teachlmm.intervals` (``confint``,
``bootstrap``), :mod:`~teachlmm.diagnostics` and :mod:`~teachlmm.plots` (the only
module that needs matplotlib; imported on first use). :mod:`~teachlmm.validators`
and :mod:`~teachlmm.tables` hold the argument checks and the text tables every
module shares; :mod:`~teachlmm.prediction` the intervals of ``predict``;
:mod:`~teachlmm.frames` the pandas DataFrames (pandas imported on first use) and
HTML displays; :mod:`~teachlmm.inference` re-exports the names it used to hold.

Several grouping factors (nested ``(1 | school/class)``, crossed ``(1 | subject) +
(1 | item)``) take the same calls: ``tl.Model(formula, data)`` is then a
:class:`~teachlmm.multilevel.MultilevelModel` and ``tl.em.fit(model)`` a
:class:`~teachlmm.multilevel_result.MultilevelResult` (:mod:`~teachlmm.multilevel`).

``tl.simulate_data`` makes new data with a known truth (``tl.simulate`` is its
old, deprecated name); ``fit.simulate`` draws new responses from a fit.
"""
import importlib
import warnings

from . import blup, em, mme
from .data import load_radon, read_csv, read_csv_chunks
from .data import simulate as simulate_data
from .design import Model
from .multilevel import MultilevelModel
from .multilevel_result import MultilevelResult
from .errors import BoundaryWarning, ConvergenceWarning, DataError, DesignError, FormulaError, TeachLMMError
from .results import MixedModelResult

__version__ = "0.1.0"

_LAZY_MODULES = {"multilevel", "gibbs", "diagnostics", "inference", "ddf", "intervals", "compare", "plots", "exercises", "formula",
                 "design", "results", "validators", "tables", "data", "prediction", "frames", "posterior",
                 "multilevel_gibbs", "multilevel_blup", "multilevel_data", "multilevel_ddf", "multilevel_em", "collapsed"}


def simulate(*args, **kwargs):
    """Deprecated name of :func:`simulate_data` (new data with a known truth); it goes in the next release.

    ``tl.simulate`` read like lme4's ``simulate()``, which draws new responses
    from a *fit*: that is ``fit.simulate``. New data from scratch is ``tl.simulate_data``.
    """
    warnings.warn("tl.simulate is renamed tl.simulate_data (new data with a known truth); fit.simulate "
                  "draws responses from a fit. The old name goes in the next release.",
                  DeprecationWarning, stacklevel=2)
    return simulate_data(*args, **kwargs)


def __getattr__(name):
    """Import the heavier modules (plots needs matplotlib) on first use: ``tl.plots``, ``tl.gibbs``, ..."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "anova":
        return importlib.import_module(".compare", __name__).anova
    raise AttributeError(f"module 'teachlmm' has no attribute {name!r}")


__all__ = ["Model", "MixedModelResult", "MultilevelModel", "MultilevelResult", "load_radon", "read_csv", "read_csv_chunks", "simulate_data", "simulate", "multilevel",
           "em", "mme", "anova", "blup", "gibbs", "diagnostics", "inference", "ddf", "intervals", "compare", "plots",
           "exercises", "validators", "tables", "prediction", "frames", "posterior", "multilevel_gibbs", "multilevel_blup",
           "multilevel_data", "multilevel_ddf", "multilevel_em", "collapsed",
           "TeachLMMError", "FormulaError", "DataError", "DesignError", "ConvergenceWarning", "BoundaryWarning"]
