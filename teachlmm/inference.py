"""Inference after the fit: the names of ``teachlmm.inference``, now in the modules that own them.

Four questions a course asks of a fitted mixed model, and where each is answered:

* *How well does it fit, for its size?* ``fit.aic``, ``fit.bic``, ``fit.df``
  and :func:`teachlmm.results.deviance` (lme4's ``deviance()``), on the result.
* *Is the bigger model worth it?* :mod:`teachlmm.compare`: :func:`anova`,
  :class:`AnovaTable`, :func:`mixture_pvalue`.
* *How sure are we of the estimates?* :mod:`teachlmm.intervals`:
  :func:`confint`, :class:`Intervals`, :func:`bootstrap`,
  :class:`BootstrapResult`, :func:`parameter_names`.
* *What data does the model expect?* :func:`teachlmm.results.simulate`
  (lme4's ``simulate()``; also ``fit.simulate``).

This module re-exports those names so that code written against
``tl.inference`` keeps working (for one release; import from the modules
above in new code).

Examples
--------
>>> import teachlmm as tl
>>> tl.inference.anova is tl.compare.anova, tl.inference.confint is tl.intervals.confint
(True, True)
"""
from .compare import AnovaTable, anova, mixture_pvalue
from .intervals import BootstrapResult, Intervals, bootstrap, confint, parameter_names
from .intervals import with_response as _with_response      # noqa: F401  (the old private name, used by tests)
from .results import deviance, simulate

__all__ = ["deviance", "simulate", "bootstrap", "BootstrapResult", "parameter_names", "confint", "Intervals",
           "anova", "AnovaTable", "mixture_pvalue"]
