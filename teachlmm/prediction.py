"""Prediction intervals of a fitted mixed model, from Henderson's prediction-error covariance.

At given variance components (G, sigma2) the mixed-model equations give
beta_hat and the BLUPs b_hat_j, and the inverse of their coefficient matrix
C gives the joint *prediction-error* covariance (Henderson 1975)::

    Var( [beta_hat - beta ; b_hat_j - b_j] ) = sigma2 C^-1,

with the blocks, per group (the pieces :mod:`teachlmm.mme` already holds;
M_j = Z_j'Z_j + sigma2 G^-1, A the Schur complement)::

    C^11   = A^-1                                          (Var(beta_hat) = sigma2 A^-1)
    C^12_j = -A^-1 X_j'Z_j M_j^-1                          (Cov(beta_hat, b_hat_j - b_j))
    C^22_j = M_j^-1 + M_j^-1 Z_j'X_j A^-1 X_j'Z_j M_j^-1   (Var(b_hat_j - b_j))

These are the REML E-step's ``var_beta``, ``cov_b_beta`` and ``var_b``
(:mod:`teachlmm.em`), up to the sign of the covariance (b given y versus
b_hat - b). For a new row (x, z) of a fitted group j the predictor
x'beta_hat + z'b_hat_j misses the conditional mean x'beta + z'b_j by an error
of variance::

    sigma2 [x'C^11 x + 2 x'C^12_j z + z'C^22_j z] = sigma2 [d'A^-1 d + z'M_j^-1 z],
    d = x - X_j'Z_j M_j^-1 z,

(the two forms are equal: expand d). For a group not in the data b_hat = 0
and b ~ N(0, G) is independent of the data, so the error variance is
sigma2 x'A^-1 x + z'G z. A new observation adds its own noise, sigma2.
"""
import numpy as np
import scipy.stats as sps

from . import validators
from .errors import TeachLMMError
from .frames import Text, html_table, require_pandas
from .tables import format_table

__all__ = ["Prediction", "error_variance", "intervals"]


def error_variance(fit, X, Z, codes, re=True):
    """Var(prediction - conditional mean) for each row, at the fit's (G, sigma2).

    Parameters
    ----------
    fit : MixedModelResult
    X, Z, codes : the rows' design (``model.design(newdata)``); ``codes < 0`` marks unseen groups.
    re : bool
        True: the target is x'beta + z'b_j and the predictor uses b_hat_j.
        False: the target is x'beta and the predictor x'beta_hat (variance sigma2 x'A^-1 x).

    Returns
    -------
    (n,) array.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> v = error_variance(fit, np.array([[1.0, 0.0]]), np.array([[1.0]]), np.array([-1]))
    >>> bool(np.isclose(v[0], fit.vcov[0, 0] + fit.G[0, 0]))
    True
    """
    sol, s2 = fit.solution, fit.sigma2
    if not re:
        return s2 * np.einsum("ip,pr,ir->i", X, sol.A_inv, X)   # sigma2 x'A^-1 x = x'Var(beta_hat)x
    unseen = codes < 0
    j = np.where(unseen, 0, codes)
    Minv = sol.Minv[j]                                            # (n, q, q) M_j^-1 per row
    d = X - np.einsum("ipq,iq->ip", sol.XtZ_Minv[j], Z)           # d = x - X_j'Z_j M_j^-1 z
    d = np.where(unseen[:, None], X, d)                           # unseen group: b_hat = 0, d = x
    fixed = np.einsum("ip,pr,ir->i", d, sol.A_inv, d)             # d'A^-1 d
    seen_part = np.einsum("iq,iqr,ir->i", Z, Minv, Z)             # z'M_j^-1 z
    unseen_part = np.einsum("iq,qr,ir->i", Z, fit.G, Z) / s2      # z'G z / sigma2
    return s2 * (fixed + np.where(unseen, unseen_part, seen_part))


class Prediction:
    """Predictions with interval bounds (R's ``predict.lm(interval=)`` columns fit, lwr, upr).

    Attributes
    ----------
    fit, lower, upper : (n,) arrays.   se : (n,) the standard deviation behind the bounds.
    interval : "confidence" or "prediction".   level : float.
    unseen : (n,) bool, rows whose group was not in the fitted data.
    """

    def __init__(self, fit, lower, upper, se, interval, level, unseen):
        self.fit, self.lower, self.upper, self.se = fit, lower, upper, se
        self.interval, self.level, self.unseen = interval, level, unseen

    def __len__(self):
        return len(self.fit)

    def __array__(self, dtype=None, copy=None):
        """As an (n, 3) array: fit, lower, upper."""
        out = np.column_stack([self.fit, self.lower, self.upper])
        return out if dtype is None else out.astype(dtype)

    def to_frame(self):
        """A DataFrame with columns fit, lower, upper, se (and unseen)."""
        pd = require_pandas()
        return pd.DataFrame({"fit": self.fit, "lower": self.lower, "upper": self.upper, "se": self.se,
                             "unseen": self.unseen})

    def _rows(self, limit=20):
        return [[str(i), f"{f:.6g}", f"{lo:.6g}", f"{hi:.6g}"]
                for i, (f, lo, hi) in enumerate(zip(self.fit[:limit], self.lower[:limit], self.upper[:limit]))]

    def _title(self):
        return f"{self.interval} intervals, level {self.level:g}, {len(self)} rows"

    def __repr__(self):
        more = [f"... {len(self) - 20} more rows"] if len(self) > 20 else []
        return "\n".join([self._title(), format_table(self._rows(), ["", "fit", "lower", "upper"], indent="")]
                         + more)

    def _repr_html_(self):
        return html_table(["", "fit", "lower", "upper"], self._rows(), caption=self._title())


def intervals(fit, X, Z, codes, pred, interval, level, re=True):
    """Bounds pred -/+ z_(1-alpha/2) sqrt(variance) (normal quantiles: the variance components are taken as known).

    ``interval="confidence"`` covers the conditional mean x'beta + z'b_j (or
    x'beta with ``re=False``); ``"prediction"`` covers a new observation, adding
    sigma2 (and, with ``re=False``, z'Gz: a new observation from any group).
    """
    if interval not in ("confidence", "prediction"):
        raise TeachLMMError(f"interval must be 'confidence' or 'prediction', not {interval!r}")
    level = validators.level(level)
    var = error_variance(fit, X, Z, codes, re=re)
    if interval == "prediction":
        var = var + fit.sigma2
        if not re:                                                # a new observation from any group
            var = var + np.einsum("iq,qr,ir->i", Z, fit.G, Z)
    se = np.sqrt(np.clip(var, 0, None))
    z = sps.norm.ppf(0.5 + level / 2)
    return Prediction(pred, pred - z * se, pred + z * se, se, interval, level, codes < 0)


def describe(pred):
    """The plain-text table as a :class:`~teachlmm.frames.Text` (for notebooks)."""
    return Text(repr(pred))
