"""Closed-form BLUPs at given variance components: shrinkage and partial pooling.

Once G and sigma2 are fixed (estimated by EM, or typed in by a student asking
"what if the counties varied twice as much?"), nothing is left to iterate:
the fixed effects are a GLS estimate and the random effects are BLUPs, both
read off the mixed-model equations (:mod:`teachlmm.mme`)::

    beta_hat = A^-1 (X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j)          (GLS)
    b_hat_j  = M_j^-1 Z_j'(y_j - X_j beta_hat),   M_j = Z_j'Z_j + sigma2 G^-1.

Why the BLUP shrinks: a random intercept
----------------------------------------
Take y_ij = x_ij'beta + b_j + eps_ij with b_j ~ N(0, s_a^2) and
eps_ij ~ N(0, sigma2), and look at county j through its mean residual
r_bar_j = mean_i (y_ij - x_ij'beta). Given b_j, r_bar_j ~ N(b_j, sigma2 / n_j):
the county's own estimate of b_j, with sampling variance sigma2 / n_j. The
population says b_j ~ N(0, s_a^2). Two normal sources of information about
one number combine by weighting each with its precision::

    b_hat_j = (n_j / sigma2 * r_bar_j + 1 / s_a^2 * 0) / (n_j / sigma2 + 1 / s_a^2)
            = lambda_j * r_bar_j,

    lambda_j = s_a^2 / (s_a^2 + sigma2 / n_j)       (between 0 and 1).

A county with many houses (sigma2 / n_j small next to s_a^2) keeps its own
mean (lambda_j near 1, "no pooling"); a county with one or two houses is
pulled toward 0, i.e. toward the group-level regression (lambda_j near 0,
"complete pooling"). The county's coefficient alpha_j = beta_0 + b_j is then
a weighted average of its own fit and the group-level prediction:
alpha_hat_j = lambda_j (beta_0 + r_bar_j) + (1 - lambda_j) beta_0.

The same in matrix form
-----------------------
With q random coefficients per group (an intercept and a slope, say), let
b_ols_j = (Z_j'Z_j)^-1 Z_j'r_j be the group's own least-squares fit of
r_j = y_j - X_j beta_hat on Z_j. Since Z_j'r_j = Z_j'Z_j b_ols_j::

    b_hat_j = M_j^-1 Z_j'r_j = S_j b_ols_j,    S_j = (Z_j'Z_j + sigma2 G^-1)^-1 Z_j'Z_j,

and with the precisions P_j = Z_j'Z_j / sigma2 (of b_ols_j) and G^-1 (of the
population)::

    b_hat_j = (P_j + G^-1)^-1 (P_j b_ols_j + G^-1 * 0):

a matrix-weighted average of the group's own fit and 0, with weight S_j on
the own fit and I - S_j on the group-level regression. For q = 1 and Z_j a
column of ones, Z_j'Z_j = n_j and S_j is the scalar lambda_j above. The limits
are the two extremes of the lecture: G -> 0 gives S_j -> 0 (every group gets
the group-level regression: complete pooling) and G -> infinity gives S_j -> I
(every group keeps its own fit: no pooling).

Singular G
----------
G^-1 does not exist when a variance is 0 (a boundary fit, or the G = 0 limit
itself). Writing G = sigma2 T T' (T lower triangular, possibly singular; see
:func:`teachlmm.mme.relative_factor`) gives the same matrices without G^-1::

    M_j^-1 = T (T'Z_j'Z_j T + I)^-1 T',     S_j = M_j^-1 Z_j'Z_j,

which is how :func:`teachlmm.mme.solve` computes M_j^-1, and how
:func:`shrinkage` uses it. This form also exists when Z_j'Z_j is singular (a
county with one house has no own slope; the BLUP is still defined).
"""
from typing import NamedTuple

import warnings

import numpy as np

from . import mme
from .errors import ConditioningWarning, DesignError
from .frames import short_repr
from .results import MixedModelResult

__all__ = ["BLUPResult", "fit", "shrinkage", "Pooled", "Pooling", "pooling"]


# ----------------------------------------------------------------------------
# the BLUP result
# ----------------------------------------------------------------------------

def shrinkage(stats, G, sigma2, sol=None):
    """The shrinkage matrices S_j = M_j^-1 Z_j'Z_j, one (q, q) matrix per group.

    b_hat_j = S_j b_ols_j wherever the group's own least-squares fit b_ols_j
    exists. M_j^-1 = T M~_j^-1 T' comes from :func:`teachlmm.mme.solve` in the
    form that needs no G^-1, so a singular G is fine (G = 0 gives S_j = 0).

    Parameters
    ----------
    stats : GroupStats
    G : (q, q) array.   sigma2 : float.
    sol : mme.Solution, optional; already solved at (G, sigma2).

    Returns
    -------
    (J, q, q) array.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> S = shrinkage(m.stats, np.array([[0.1]]), 0.57)
    >>> n = m.stats.n
    >>> bool(np.allclose(S[:, 0, 0], 0.1 / (0.1 + 0.57 / n)))    # lambda_j
    True
    """
    sol = mme.solve(stats, G, sigma2) if sol is None else sol
    return sol.Minv @ stats.ZtZ                     # S_j = M_j^-1 Z_j'Z_j


class BLUPResult(MixedModelResult):
    """A :class:`~teachlmm.MixedModelResult` at given (G, sigma2), plus the shrinkage.

    Everything a fitted model has (``fixef``, ``fixef_se``, ``ranef``,
    ``coef``, ``condsd``, ``predict``, ``summary``...) with the same meaning
    and shapes, computed in closed form at the given variance components.

    Attributes
    ----------
    shrinkage : (J, q, q) S_j = M_j^-1 Z_j'Z_j, the weight of the group's own
        fit in its BLUP (b_hat_j = S_j b_ols_j).
    lambda_ : (J,) for a model with one random term, the scalars
        lambda_j = G / (G + sigma2 / n_j) (for a random intercept); None when q > 1.
    """

    def __init__(self, model, G, sigma2, reml=True):
        super().__init__(model, G, sigma2, reml=reml, method="BLUP (given G, sigma2)")
        work, centring = model.fitting_basis()           # a column of large mean: the centred statistics
        S = shrinkage(work.stats, self._G_work, self.sigma2, self.solution)
        if work is not model:                            # S_j = S_z S_cj S_z^-1 back in the model's basis
            S = centring.Sz @ S @ np.linalg.inv(centring.Sz)
        self.shrinkage = S

    @property
    def lambda_(self):
        """The scalar shrinkage factors lambda_j = S_j (q = 1 only; None otherwise)."""
        return self.shrinkage[:, 0, 0] if self.model.q == 1 else None

    def __repr__(self):
        return (f"<BLUPResult at G = {np.array2string(self.G, precision=4)}, sigma2 = {self.sigma2:.4g}: "
                f"{self.model.formula.text!r}>")


def fit(model, G, sigma2, reml=True):
    """Fixed effects (GLS) and BLUPs at given variance components, in closed form.

    Parameters
    ----------
    model : Model
    G : (q, q) array-like, or a number when q = 1
        Covariance of the random effects; symmetric positive semi-definite
        (singular allowed: G = 0 is complete pooling).
    sigma2 : float > 0
        Residual variance.
    reml : bool, default True
        Which log-likelihood ``loglik`` reports (REML or ML) at (G, sigma2);
        the estimates do not depend on it.

    Returns
    -------
    BLUPResult

    Raises
    ------
    TeachLMMError
        For a G of the wrong shape, not symmetric or not positive
        semi-definite, or a sigma2 that is not positive
        (:meth:`teachlmm.Model.check_variance_components`, the one check every method uses).

    Examples
    --------
    A student's "what if": a county standard deviation of about 0.32.

    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> bl = fit(model, G=[[0.10]], sigma2=0.57)
    >>> bl.ranef.shape, bl.shrinkage.shape
    ((85, 1), (85, 1, 1))
    >>> n = model.stats.n
    >>> int(n[0]), round(float(bl.lambda_[0]), 3)                 # county 1: 4 houses
    (4, 0.412)
    >>> int(n[69]), round(float(bl.lambda_[69]), 3)               # St Louis: 116 houses
    (116, 0.953)
    """
    G, sigma2 = model.check_variance_components(G, sigma2)
    G_eff = _stable_G(model, G, sigma2)
    if G_eff is G:
        return BLUPResult(model, G, sigma2, reml=reml)
    result = BLUPResult(model, G_eff, sigma2, reml=reml)
    result.G_computed, result.G = G_eff, G                # report the G the user gave; see _stable_G
    if result.icc is not None:
        result.icc = G[0, 0] / (G[0, 0] + sigma2)
    return result


CONDITION_LIMIT = 1e8       # n_j G / sigma2 beyond this: the equations lose more than 8 of 16 digits


def _stable_G(model, G, sigma2):
    """G itself, or, when G / sigma2 is so large that the mixed-model equations cancel away their digits,
    a G scaled down to where the solution equals the G -> infinity limit to about 1e-8.

    The Schur complement A = X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j subtracts two
    numbers that agree to log10(1 + n_j G / sigma2) digits (for a random
    intercept, n_j - n_j^2 G / (sigma2 + n_j G) = n_j sigma2 / (sigma2 + n_j G)):
    at G = 1e14 nothing is left (radon's intercept moves from 1.50 to 2.36).
    The estimates converge as G grows, beta(G) = beta_inf + O(sigma2 / (n_j G)),
    so beyond n_j G / sigma2 = 1e8 the solution at G and the one at the G scaled
    back to that ratio agree to about 1e-8; the latter loses only 8 digits. The
    limit is no pooling of the random terms (each group's own fit, with the
    fixed effects that Z spans fixed by the groups' mean). Standard errors of
    those fixed effects grow without bound with G: they are reported at the
    scaled G, and a warning says so.
    """
    lam = float(np.linalg.eigvalsh(G)[-1]) if G.size else 0.0
    ratio = float(model.stats.n.max()) * lam / sigma2
    if not ratio > CONDITION_LIMIT:
        return G
    G_eff = G * (CONDITION_LIMIT / ratio)
    warnings.warn(f"G / sigma2 is so large (n_j G / sigma2 up to {ratio:.1e}) that the mixed-model equations "
                  f"would lose {np.log10(ratio):.0f} of float64's 16 digits. The estimates are computed in their "
                  "G -> infinity limit (no pooling of the random terms), which they equal to about "
                  f"{1 / CONDITION_LIMIT:.0e}, at G scaled by {CONDITION_LIMIT / ratio:.1e} (result.G_computed); "
                  "fixef_se, vcov, condsd and loglik are those of that G (the standard errors of the fixed "
                  "effects the random terms span grow without bound with G)", ConditioningWarning, stacklevel=3)
    return G_eff


# ----------------------------------------------------------------------------
# complete, no and partial pooling
# ----------------------------------------------------------------------------

class Pooled(NamedTuple):
    """One way of estimating every group's coefficients.

    Attributes
    ----------
    kind : "complete", "none" or "partial".
    estimates : (J, q) the group-specific coefficients of the random terms
        (for ``(1 + floor | county)``: each county's intercept and floor slope).
    se : (J, q) their standard errors (see :func:`pooling`).
    note : (J,) strings, "" where the estimate exists, else why it is NaN.
    coef : (J, len(coef_names)) every coefficient, like lme4's ``coef()``.
    """

    kind: str
    estimates: np.ndarray
    se: np.ndarray
    note: np.ndarray
    coef: np.ndarray


class Pooling(dict):
    """``{"complete": Pooled, "none": Pooled, "partial": Pooled}`` plus what the three share.

    Attributes
    ----------
    names : the random terms (columns of ``estimates``).   coef_names : columns of ``coef``.
    groups : (J,) labels.   n : (J,) rows per group.   group_name : the grouping variable.
    model, G, sigma2 : what the comparison was computed for.   result : the BLUPResult.
    """

    def __init__(self, parts, **shared):
        super().__init__(parts)
        self.__dict__.update(shared)

    def __repr__(self):
        """One line: the three estimates' shapes, G and sigma2; the arrays stay one attribute away."""
        return short_repr("Pooling", {"kinds": list(self), "groups": len(self.groups), "G": self.G,
                                      "sigma2": self.sigma2,
                                      "estimates": next(iter(self.values())).estimates})


def _complete_pooling(model):
    """One least-squares regression of y on every coefficient column, ignoring the groups.

    Computed from the summed cross-products of W = [X, extra columns of Z]:
    c = (W'W)^-1 W'y, s^2 = (y'y - c'W'y) / (n - k), Var(c) = s^2 (W'W)^-1.
    """
    s = model.stats
    names = model.coef_names
    extra = names[model.p:]                                        # random terms with no fixed part
    XtZ, ZtZ = s.XtZ.sum(0), s.ZtZ.sum(0)
    full = np.block([[s.XtX_total, XtZ], [XtZ.T, ZtZ]])            # [X Z]'[X Z]
    full_y = np.concatenate([s.Xty_total, s.Zty.sum(0)])
    keep = list(range(model.p)) + [model.p + model.ranef_names.index(r) for r in extra]
    WtW, Wty = full[np.ix_(keep, keep)], full_y[keep]
    try:
        WtW_inv = np.linalg.inv(WtW)
    except np.linalg.LinAlgError:
        raise DesignError(f"the pooled regression on {names} is rank deficient; "
                          "complete pooling cannot be computed") from None
    c = WtW_inv @ Wty
    k = len(keep)
    s2 = (s.yty_total - c @ Wty) / (model.n - k)                   # OLS residual variance
    return c, np.sqrt(s2 * np.diag(WtW_inv)), names


def _singular_groups(ZtZ, tol=1e-10):
    """True where Z_j'Z_j is singular: its smallest eigenvalue is ~0 next to its largest."""
    eig = np.linalg.eigvalsh(ZtZ)                                  # (J, q), ascending
    return eig[:, 0] <= tol * np.maximum(eig[:, -1], 1e-300)


def _why_singular(model, j):
    """A sentence saying why group j has no least-squares fit of its own on Z_j."""
    s, names, q = model.stats, model.ranef_names, model.q
    n_j, ZtZ = int(s.n[j]), s.ZtZ[j]
    where = f"{model.group_name} {model.groups[j]}"
    if n_j < q:
        return f"{where} has {n_j} row(s) for {q} coefficients ({', '.join(names)}), so it has no own fit"
    for k, name in enumerate(names):
        if name != "(Intercept)" and ZtZ[k, k] == 0:
            return f"{where}: {name!r} is 0 in all {n_j} rows, so it has no own {name!r} coefficient"
    if "(Intercept)" in names:
        i = names.index("(Intercept)")
        for k, name in enumerate(names):
            if k != i and abs(n_j * ZtZ[k, k] - ZtZ[i, k] ** 2) <= 1e-10 * n_j * ZtZ[k, k]:
                return (f"{where}: {name!r} is {ZtZ[i, k] / n_j:g} in all {n_j} rows, so its own {name!r} "
                        "slope cannot be told apart from its intercept")
    return f"{where}: the columns {names} are linearly dependent within this group: no own fit"


def _no_pooling(model, beta, sigma2):
    """Each group's own least-squares fit of r_j = y_j - X_j beta on Z_j, all groups at once.

    b_ols_j = (Z_j'Z_j)^-1 Z_j'r_j and, given beta, Var(b_ols_j) = sigma2 (Z_j'Z_j)^-1.
    Groups with a singular Z_j'Z_j get NaN (their matrix is replaced by I
    before the batched inverse, and the result thrown away).
    """
    s = model.stats
    q = model.q
    singular = _singular_groups(s.ZtZ)
    ZtZ_safe = np.where(singular[:, None, None], np.eye(q), s.ZtZ)
    ZtZ_inv = np.linalg.inv(ZtZ_safe)                              # (Z_j'Z_j)^-1, batched
    Ztr = mme.residual_moments(s, beta)[1]                         # Z_j'(y_j - X_j beta)
    b_ols = np.einsum("jqr,jr->jq", ZtZ_inv, Ztr)
    se = np.sqrt(sigma2 * np.einsum("jqq->jq", ZtZ_inv))
    b_ols[singular] = np.nan
    se[singular] = np.nan
    note = np.full(model.J, "", dtype=object)
    for j in np.flatnonzero(singular):                            # strings for the few flagged groups
        note[j] = _why_singular(model, j)
    return b_ols, se, note


def pooling(model, G, sigma2):
    """Complete, no and partial pooling of the group-specific coefficients, side by side.

    All three give, for every group j, the coefficients of the random terms
    (``estimates``, J x q; for ``(1 + floor | county)`` the county's intercept
    and floor slope), on the same scale as lme4's ``coef()``:

    complete pooling
        One least-squares regression of y on all coefficient columns, ignoring
        the groups; every group gets the same coefficients. ``se``: the usual
        OLS standard errors (residual variance estimated from that regression).
    no pooling
        The group's own fit: fixef + b_ols_j, where b_ols_j is the least-squares
        fit of r_j = y_j - X_j beta_hat on Z_j (beta_hat: GLS at (G, sigma2),
        so only the random terms are estimated group by group). ``se``:
        sqrt(diag(sigma2 (Z_j'Z_j)^-1)), using the model's sigma2, given
        beta_hat. Where Z_j'Z_j is singular (a county with one house, or no
        first-floor reading, has no own floor slope) the row is NaN and
        ``note[j]`` says why.
    partial pooling
        fixef + b_hat_j (the BLUP, lme4's ``coef()``), with b_hat_j = S_j b_ols_j:
        a matrix-weighted average of the own fit and the group-level
        regression. ``se``: the conditional standard deviations ``condsd``,
        sqrt(diag(sigma2 M_j^-1)), also given beta_hat; always at most the
        no-pooling ones, since M_j = Z_j'Z_j + sigma2 G^-1 >= Z_j'Z_j.

    Parameters
    ----------
    model : Model
    G, sigma2 : variance components, checked as in :func:`fit`.

    Returns
    -------
    Pooling
        A dict with keys "complete", "none", "partial" (each a :class:`Pooled`)
        and attributes ``names``, ``groups``, ``n``, ``result`` (the BLUPResult), ...

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ 1 + floor + (1 + floor | county)", tl.load_radon())
    >>> pool = pooling(model, G=[[0.12, -0.04], [-0.04, 0.12]], sigma2=0.56)
    >>> pool["partial"].estimates.shape
    (85, 2)
    >>> [round(float(v), 3) for v in pool["complete"].estimates[0]]   # one regression for all
    [1.327, -0.613]
    >>> print(pool["none"].note[5])                  # county 6: three houses, all basement readings
    county 6: 'floor' is 0 in all 3 rows, so it has no own 'floor' coefficient
    >>> pool["none"].estimates[5]
    array([nan, nan])
    """
    result = fit(model, G, sigma2)
    J = model.J
    coef_names = model.coef_names
    random = [coef_names.index(r) for r in model.ranef_names]     # coef columns of the random terms

    c, c_se, _ = _complete_pooling(model)
    complete_coef = np.tile(c, (J, 1))
    complete = Pooled("complete", complete_coef[:, random], np.tile(c_se[random], (J, 1)),
                      np.full(J, "", dtype=object), complete_coef)

    b_ols, none_se, note = _no_pooling(model, result.beta, result.sigma2)
    none_coef = result.coef.copy()
    none_coef[:, random] += b_ols - result.ranef                  # fixef + b_ols_j
    none = Pooled("none", none_coef[:, random], none_se, note, none_coef)

    partial = Pooled("partial", result.coef[:, random], result.condsd.copy(),
                     np.full(J, "", dtype=object), result.coef.copy())
    return Pooling({"complete": complete, "none": none, "partial": partial},
                   names=list(model.ranef_names), coef_names=coef_names, groups=model.groups,
                   n=model.stats.n.copy(), group_name=model.group_name, model=model,
                   G=result.G, sigma2=result.sigma2, result=result)
