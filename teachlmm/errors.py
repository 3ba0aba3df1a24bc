"""The package's own exceptions and warnings.

Every error a user can trigger with bad input is one of these, with a message
that says what was wrong and what to do about it. They subclass the built-in
``ValueError`` / ``UserWarning`` so generic handlers still catch them.
"""


class TeachLMMError(ValueError):
    """Base class of every error raised by teachlmm for bad input."""


class FormulaError(TeachLMMError):
    """The model formula could not be read; the message points at the position."""


class DataError(TeachLMMError):
    """The data cannot be used as given (missing column, NaN, wrong length, ...)."""


class DesignError(TeachLMMError):
    """The model cannot be estimated from this data (rank deficiency, too few groups, ...)."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at ``max_iter`` before its convergence test passed."""


class BoundaryWarning(UserWarning):
    """A variance component (or a correlation) sits on the edge of its parameter space.

    lme4 prints "boundary (singular) fit" in the same situation. The fit is still
    valid: it is the maximum of the likelihood over the allowed (positive
    semi-definite) covariance matrices.
    """


class MissingValuesWarning(UserWarning):
    """Rows with a missing value in a column the formula uses were left out (lme4's ``na.omit``)."""


class IdentifiabilityWarning(UserWarning):
    """A part of the model cannot be estimated from this design (e.g. the grouping factor as fixed dummies)."""


class ConditioningWarning(UserWarning):
    """A column's mean is so large against its spread that float64 cross-products lose many digits."""
