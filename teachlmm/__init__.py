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
:mod:`~teachlmm.results`, :mod:`~teachlmm.inference`, :mod:`~teachlmm.ddf` (t and F
tests with Satterthwaite / Kenward-Roger degrees of freedom),
:mod:`~teachlmm.diagnostics` and :mod:`~teachlmm.plots` (the only module that
needs matplotlib; imported on first use).
"""
import importlib

from . import blup, em, mme
from .data import load_radon, read_csv, read_csv_chunks, simulate
from .design import Model
from .errors import BoundaryWarning, ConvergenceWarning, DataError, DesignError, FormulaError, TeachLMMError
from .results import MixedModelResult

__version__ = "0.1.0"

_LAZY_MODULES = {"gibbs", "diagnostics", "inference", "ddf", "plots", "exercises", "formula", "design"}


def __getattr__(name):
    """Import the heavier modules (plots needs matplotlib) on first use: ``tl.plots``, ``tl.gibbs``, ..."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "anova":
        return importlib.import_module(".inference", __name__).anova
    raise AttributeError(f"module 'teachlmm' has no attribute {name!r}")


__all__ = ["Model", "MixedModelResult", "load_radon", "read_csv", "read_csv_chunks", "simulate", "em", "mme", "anova",
           "blup", "gibbs", "diagnostics", "inference", "ddf", "plots", "exercises",
           "TeachLMMError", "FormulaError", "DataError", "DesignError", "ConvergenceWarning", "BoundaryWarning"]
