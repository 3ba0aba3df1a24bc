"""From formula and data to the model: X, Z, groups, and the per-group statistics.

For group j (a county) with n_j rows, the reduced form of the model is::

    y_j = X_j beta + Z_j b_j + eps_j,    b_j ~ N(0, G),  eps_j ~ N(0, sigma2 I)

Every algorithm in teachlmm needs the data only through the per-group
cross-products, computed once here (a J-stack of small matrices)::

    X_j'X_j (J,p,p)   X_j'Z_j (J,p,q)   Z_j'Z_j (J,q,q)
    X_j'y_j (J,p)     Z_j'y_j (J,q)     y_j'y_j (J,)     n_j (J,)

After that an EM iteration, a Gibbs sweep or a log-likelihood costs
O(J (p+q)^3), whatever the number of rows n. No n x n matrix is ever built.

Numerical conditioning: centred only when needed. The raw cross-products of
a column whose mean is large against its spread (y + 1e9, a timestamp, UTM
coordinates) lose ``2 log10(|mean| / sd)`` of float64's 16 digits. Building the
model checks every column of X and y from the totals it already has (O(p^2),
no pass over the rows); when one has ``|mean| > 100 sd`` (4 digits at stake), the
fitting methods (``em.fit``, ``gibbs.sample``/``gibbs.init``, ``blup.fit``
and every result) work on the centred copy of the model
(:meth:`Model.centred`, one more pass over the rows, made once) and map the
estimates back by the exact change of basis (:class:`Centring`; det S = 1,
so sigma2 and the log-likelihood are the same numbers). An ordinary model
(every column within 100 sd of 0) is fitted from its raw statistics, as
before, so it costs nothing: see :meth:`Model.fitting_basis`. A model built
from chunks keeps no rows, so it cannot be centred afterwards: it warns
(ConditioningWarning) instead. The textbook step functions ``em.init``/
``em.step`` work on the statistics they are given and warn on such a model
(fit ``model.centred()`` there).
"""
import copy
import difflib
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg

from .coding import Categorical, Numeric, as_column, evaluate, learn, r_label, subset
from .errors import (ConditioningWarning, DataError, DesignError, FormulaError, IdentifiabilityWarning,
                     MissingValuesWarning, TeachLMMError)
from .formula import columns_of, parse_formula

__all__ = ["Model", "GroupStats", "Centring", "response_variance"]


# ----------------------------------------------------------------------------
# columns of the data
# ----------------------------------------------------------------------------

def _columns_of(data):
    for attr in ("keys", "columns"):
        if hasattr(data, attr):
            keys = getattr(data, attr)
            try:
                return [str(k) for k in (keys() if callable(keys) else keys)]
            except TypeError:
                return []
    return []


def get_column(data, name):
    """``data[name]`` as a :class:`~teachlmm.coding.Numeric` or ``Categorical`` column, or a DataError
    naming close matches."""
    if data is None or isinstance(data, (str, bytes, int, float)):
        raise DataError(f"data must be a mapping of column name -> values (a dict of arrays or a DataFrame), "
                        f"not {type(data).__name__}; read a file with tl.read_csv(path)")
    try:
        col = data[name]
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        col = _missing_column(data, name)
    if type(col).__name__ == "DataFrame":        # pandas returns a frame for a duplicated column name
        raise DataError(f"the data has more than one column named {name!r}; rename them so each name is unique")
    return as_column(col, name)


def _missing_column(data, name):
    known = _columns_of(data)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise DataError(f"the data has no column {name!r}.{hint} Columns are: {', '.join(known[:20])}") from None


def r_levels(values):
    """Distinct values ordered like R's factor levels: numbers numerically, strings lexicographically
    (by code point: R's sort in the C locale). Whole numbers below 2^53 are shown as integers."""
    uniq = np.unique(values)
    if uniq.dtype.kind == "f" and np.all(uniq == np.round(uniq)) and np.all(np.abs(uniq) < 2.0 ** 53):
        uniq = uniq.astype(np.int64)  # county 1.0 is shown as 1
    return uniq


def _group_keys(col):
    """A group column's keys: float values (numeric) or str labels, and their order (R's levels)."""
    if isinstance(col, Numeric):
        return col.values, None
    return col.labels, col.order


def _rows(index, limit=5):
    """Row numbers as the user counts them (from 1)."""
    shown = ", ".join(str(i + 1) for i in index[:limit])
    return shown + (", ..." if len(index) > limit else "")


def _nrows(cols):
    return next(iter(cols.values())).missing.size


def _check_missing_arg(missing):
    if missing not in ("drop", "error"):
        raise DataError(f"missing must be 'drop' (leave out rows with a missing value, as lme4's na.omit) or "
                        f"'error' (stop), not {missing!r}")
    return missing


def _merge_states(partial):
    """Combine what each chunk taught: the union of levels, the pooled centre and sd of scale()."""
    state = {}
    for text in partial[0][0]:
        kind = partial[0][0][text][0]
        if kind == "levels":
            ordered = partial[0][0][text][1]
            union = list(dict.fromkeys(lev for st, _ in partial for lev in st[text][1]))
            state[text] = ("levels", union if len(partial) == 1 else _merged_order(union, ordered))
        else:
            # Chan et al.'s pooled moments: from each chunk's (n, centre, sd) to the whole data's
            n = np.array([m for _, m in partial], float)
            c = np.array([st[text][1] for st, _ in partial])
            sd = np.array([st[text][2] for st, _ in partial])
            centred = partial[0][0][text][3]
            if centred:
                mean = np.sum(n * c) / n.sum()
                m2 = np.sum(sd ** 2 * np.maximum(n - 1, 0) + n * (c - mean) ** 2)
            else:
                mean, m2 = 0.0, np.sum(sd ** 2 * np.maximum(n - 1, 0))
            scaled = partial[0][0][text][4]
            state[text] = ("scale", float(mean), float(np.sqrt(m2 / max(n.sum() - 1, 1))) if scaled else 1.0,
                           centred, scaled)
    return state


def _merged_order(union, first):
    """Levels from several chunks: sorted (C locale) unless they came with their own order."""
    return sorted(union) if list(first) == sorted(first) else union


# ----------------------------------------------------------------------------
# coding terms into columns
# ----------------------------------------------------------------------------

def _term_columns(term, variables, full):
    """Columns of one term: the products of its variables' columns (names joined by ':').

    ``variables[f]`` is (columns, is_factor) for variable f; a factor keeps
    all its levels if ``full`` and this is the term's first factor, else drops
    the first level (treatment contrasts, as R does).
    """
    cols = [("", None)]
    for k, factor in enumerate(term.factors):
        new, is_factor = variables[factor]
        if is_factor and not (full and k == 0):
            new = new[1:]
        new = [(factor + suffix, v) for suffix, v in new]
        cols = [((a + ":" + b) if a else b, v if u is None else u * v) for a, u in cols for b, v in new]
    return cols


def _part_columns(terms, variables, n):
    """Columns of a list of terms (fixed part, or one random block)."""
    has_intercept = any(not t.factors for t in terms)
    out, full_used = [], has_intercept
    for t in terms:
        if not t.factors:
            out.append(("(Intercept)", np.ones(n)))
            continue
        full = not full_used and len(t.factors) == 1 and variables[t.factors[0]][1]
        full_used = full_used or full
        out += _term_columns(t, variables, full)
    return out

# ----------------------------------------------------------------------------
# per-group statistics
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupStats:
    """The per-group sufficient statistics (every array has the groups on axis 0).

    Attributes
    ----------
    n : (J,) rows per group n_j
    XtX : (J, p, p) X_j'X_j
    XtZ : (J, p, q) X_j'Z_j
    ZtZ : (J, q, q) Z_j'Z_j
    Xty : (J, p) X_j'y_j
    Zty : (J, q) Z_j'y_j
    yty : (J,) y_j'y_j
    """

    n: np.ndarray
    XtX: np.ndarray
    XtZ: np.ndarray
    ZtZ: np.ndarray
    Xty: np.ndarray
    Zty: np.ndarray
    yty: np.ndarray

    @classmethod
    def from_arrays(cls, X, Z, y, codes, J):
        """Cross-products of W = [X Z y] per group: one ``np.bincount`` per column pair.

        Cost O(n (p+q+1)^2) time and O(n) extra memory; no sort, no n x n.
        """
        p, q = X.shape[1], Z.shape[1]
        W = np.column_stack([X, Z, y])
        k = W.shape[1]
        C = np.empty((J, k, k))
        for a in range(k):                       # loop over column pairs, not over groups
            for b in range(a, k):
                C[:, a, b] = C[:, b, a] = np.bincount(codes, weights=W[:, a] * W[:, b], minlength=J)
        n = np.bincount(codes, minlength=J).astype(float)
        P, Q = slice(0, p), slice(p, p + q)
        return cls(n=n, XtX=C[:, P, P], XtZ=C[:, P, Q], ZtZ=C[:, Q, Q],
                   Xty=C[:, P, -1], Zty=C[:, Q, -1], yty=C[:, -1, -1])

    # totals over groups and Z_j'X_j, used in every iteration: computed once
    @cached_property
    def XtX_total(self):
        return self.XtX.sum(0)

    @cached_property
    def Xty_total(self):
        return self.Xty.sum(0)

    @cached_property
    def n_total(self):
        return float(self.n.sum())

    @cached_property
    def yty_total(self):
        return float(self.yty.sum())

    @cached_property
    def ZtX(self):
        return np.ascontiguousarray(np.swapaxes(self.XtZ, 1, 2))

    def __add__(self, other):
        """Statistics of two chunks of rows of the same groups add up."""
        return GroupStats(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))


# ----------------------------------------------------------------------------
# variance components a model can have
# ----------------------------------------------------------------------------

def _check_sigma2(sigma2):
    try:
        value = float(np.asarray(sigma2, dtype=float).item())
    except (TypeError, ValueError):
        raise TeachLMMError(f"sigma2 must be one positive number (the residual variance), got {sigma2!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise TeachLMMError(f"sigma2 must be a positive, finite number (the residual variance), got {value!r}; "
                            "with sigma2 = 0 the model has no residual and the BLUP is not defined")
    return value


def _check_G_shape(G, model):
    q, names = model.q, model.ranef_names
    try:
        G = np.asarray(G, dtype=float)
    except (TypeError, ValueError):
        raise TeachLMMError(f"G must be a {q} x {q} matrix of numbers, got {G!r}") from None
    if G.size == 1 and q == 1:
        G = G.reshape(1, 1)                     # 0.1 or [0.1]: the variance of the one random term
    if G.shape != (q, q):
        raise TeachLMMError(f"G must be {q} x {q} for this model (one row and column per random term: "
                            f"{', '.join(names)}), got shape {G.shape}")
    if not np.all(np.isfinite(G)):
        raise TeachLMMError("G has a missing or infinite entry; every variance and covariance must be a finite number")
    return G


def _check_symmetric_psd(G, names, tol):
    scale = max(np.abs(G).max(), 1e-300)
    asym = np.abs(G - G.T)
    if asym.max() > tol * scale:
        k, l = np.unravel_index(np.argmax(asym), G.shape)
        raise TeachLMMError(f"G must be symmetric, but G[{k},{l}] = {G[k, l]:g} and G[{l},{k}] = {G[l, k]:g} "
                            f"(the covariance of {names[k]!r} and {names[l]!r} appears twice, once each side)")
    G = (G + G.T) / 2
    if np.any(np.diag(G) < -tol * scale):
        k = int(np.argmin(np.diag(G)))
        raise TeachLMMError(f"G[{k},{k}] = {G[k, k]:g} is the variance of {names[k]!r} and cannot be negative")
    smallest = np.linalg.eigvalsh(G)[0]
    if smallest < -tol * scale:
        raise TeachLMMError(f"G is not positive semi-definite (smallest eigenvalue {smallest:.3g}), so it is not a "
                            "covariance matrix: each correlation G[k,l] / sqrt(G[k,k] G[l,l]) must lie in [-1, 1] "
                            "(and, for q > 2, the correlations must fit together)")
    return G


def _check_blocks(G, model):
    """G must be zero between blocks: ``(1 + x || g)`` says intercept and slope are uncorrelated."""
    if np.any(G[model.G_mask == 0] != 0):
        raise TeachLMMError("this model's random terms are uncorrelated (the formula uses '||' or several random "
                            "terms), so G must be 0 outside its diagonal blocks "
                            f"{[[model.ranef_names[i] for i in blk] for blk in model.blocks]}")


# ----------------------------------------------------------------------------
# numerical conditioning: the centred copy of a model and the change of basis
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Centring:
    """The exact change of basis between a model and its centred copy (:meth:`Model.centred`).

    With an intercept, subtracting constants changes nothing in the model,
    only the coordinates in which it is written::

        y_c = y - c_y           X_c = X S_x,  S_x = I - e_0 m_x'    (column k minus its mean m_k)
                                Z_c = Z S_z,  S_z = I - e_0 m_z'    (within a block that has an intercept)

    The centred model's estimates map back exactly (S is unit triangular,
    det S = 1, so the ML and REML likelihoods are the same numbers)::

        beta = S_x (beta_c + c_y e_0)    b_j = S_z b_cj    G = S_z G_c S_z'    Var(beta) = S_x V_c S_x'

    Why: y'y of y + 1e10 is about n 1e20, and the residual sum of squares
    (about n) is what is left after cancelling such numbers: float64 keeps 16
    digits, so nothing is left. The centred cross-products hold only the
    spread, so the fit of y + c equals the fit of y for any c (G as the change
    of basis G00 + 2c G01 + c^2 G11, G01 + c G11, G11 for a random slope on x + c).

    Attributes
    ----------
    y_shift : float, c_y.   Sx : (p, p) S_x.   Sz : (q, q) S_z.
    """

    y_shift: float
    Sx: np.ndarray
    Sz: np.ndarray

    @classmethod
    def identity(cls, p, q):
        """No change of basis (a model whose raw statistics keep their digits)."""
        return cls(0.0, np.eye(p), np.eye(q))

    @property
    def is_identity(self):
        return self.y_shift == 0 and np.all(self.Sx == np.eye(self.Sx.shape[0])) and \
            np.all(self.Sz == np.eye(self.Sz.shape[0]))

    def beta(self, beta_c):
        """beta = S_x (beta_c + c_y e_0)."""
        beta_c = np.array(beta_c, dtype=float)
        if beta_c.size:
            beta_c[..., 0] += self.y_shift
        return beta_c @ self.Sx.T

    def G(self, G_c):
        """G = S_z G_c S_z'."""
        return self.Sz @ G_c @ self.Sz.T

    def G_centred(self, G):
        """G_c = S_z^-1 G S_z^-T (start values given in the original basis)."""
        Sinv = np.linalg.inv(self.Sz)
        return Sinv @ G @ Sinv.T

    def b(self, b_c):
        """b_j = S_z b_cj for every group (rows of b_c)."""
        return b_c @ self.Sz.T

    def vcov(self, V_c):
        """Var(beta) = S_x V_c S_x'."""
        return self.Sx @ V_c @ self.Sx.T


def _shift_matrix(means, intercept, size):
    """S = I - e_0 m' (row ``intercept`` holds -m), or the identity when there is no intercept."""
    S = np.eye(size)
    if intercept is not None:
        S[intercept, :] -= means
        S[intercept, intercept] = 1.0
    return S


CENTRE_ABOVE = 100.0      # centre when a column's |mean| exceeds this many sd (2 log10(100) = 4 digits at stake)


def large_mean_ratio(ratio):
    """'about 1e+09 times' (``|mean| / sd``), or 'so many times ... that float64 keeps none of' when sd is lost."""
    return f"about {ratio:.0e} times" if np.isfinite(ratio) else "so much larger than"


def _large_means(stats, names, response, limit=CENTRE_ABOVE):
    """[(name, mean, |mean| / sd)] for y and the columns of X whose mean dwarfs their spread.

    From the totals the statistics already hold (the intercept's row of
    X'X gives the column sums): O(p^2), no pass over the rows. The variance
    mean(x^2) - mean(x)^2 of such a column is itself inexact, but only ever
    smaller than |mean| / limit when the column is ill-conditioned, so the
    test is safe.
    """
    if "(Intercept)" not in names:
        return []
    i, n = names.index("(Intercept)"), stats.n_total
    sums, squares = stats.XtX_total[i], np.diag(stats.XtX_total)
    cols = [(name, sums[k] / n, squares[k] / n) for k, name in enumerate(names) if k != i]
    cols.append((response, stats.Xty_total[i] / n, stats.yty_total / n))
    out = []
    for name, mean, mean_sq in cols:
        var = max(mean_sq - mean * mean, 0.0)
        if mean * mean > limit * limit * var and mean != 0:
            out.append((name, float(mean), abs(mean) / np.sqrt(var) if var > 0 else np.inf))
    return out


def _rank_check(M, S, gram, names):
    """("zero", names) for all-zero columns, ("rank", names) for columns beyond the numerical rank, or None.

    The Gram matrix of the centred columns M S (or, without rows, the raw
    cross-products ``gram``), scaled to unit diagonal, by pivoted QR: a
    column whose pivot is below ``tol`` times the first is a combination of
    the others. The Gram squares the condition number, so the tolerance is
    the square of a QR-of-M tolerance (1e-9 n), and never below rounding
    (1e-14 p). Centring first means that x + 1e8 is judged as x is.
    """
    p = len(names)
    raw = np.diag(gram) if M is None else np.einsum("ij,ij->j", M, M)
    if np.any(raw == 0):
        return "zero", [names[k] for k in np.flatnonzero(raw == 0)]
    if M is not None:
        Mc = M @ S
        gram, n = Mc.T @ Mc, M.shape[0]
    else:
        n = None
    scale = np.sqrt(np.diag(gram))
    scale = np.where(scale > 0, scale, 1.0)
    R, piv = scipy.linalg.qr(gram / np.outer(scale, scale), mode="r", pivoting=True)
    d = np.abs(np.diag(R))
    tol = 1e-14 * p if n is None else max((1e-9 * max(n, p)) ** 2, 1e-14 * p)
    rank = int(np.sum(d > d[0] * tol))
    return ("rank", [names[k] for k in piv[rank:]]) if rank < p else None


# ----------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------

def _several_factors(formula):
    """Does the formula have several grouping factors, or an interaction ``g1:g2`` / ``g1/g2``?
    (Then :class:`teachlmm.multilevel.MultilevelModel` builds it.) A malformed formula is not: the
    one-factor parser reports the mistake."""
    try:
        f = parse_formula(formula, multiple=True)
    except FormulaError:
        return False
    return len({r.group for r in f.random}) > 1 or any(r.factors for r in f.random)


class Model:
    """A linear mixed model: formula + data, turned into X, Z, groups and per-group statistics.

    The model in the lecture's reduced form is ``y = X beta + Z_j b_j + eps``
    with ``b_j ~ N(0, G)`` for each group j and ``eps ~ N(0, sigma2 I)``.
    Building a ``Model`` checks the data and computes the per-group
    cross-products once; every fitting method (``tl.em``, ``tl.gibbs``,
    ``tl.blup``) starts from it.

    A formula with several grouping factors (nested ``(1 | school/class)``,
    crossed ``(1 | subject) + (1 | item)``, or an interaction ``(1 | g1:g2)``)
    gives a :class:`~teachlmm.multilevel.MultilevelModel` instead, which
    ``tl.em.fit`` fits the same way (:mod:`teachlmm.multilevel`).

    Parameters
    ----------
    formula : str
        lmer syntax, e.g. ``"log_radon ~ 1 + floor + (1 + floor | county)"``;
        see :mod:`teachlmm.formula`.
    data : mapping
        Column name -> 1-D array (a dict of numpy arrays, or a DataFrame).
        String columns are categorical (treatment coding, first level as
        reference, columns named like R's, e.g. ``county_nameANOKA``); see
        :mod:`teachlmm.coding` for pandas/polars columns, booleans and
        Categoricals.
    missing : {"drop", "error"}
        ``"drop"`` (the default, lme4's ``na.omit``) leaves out the rows with a
        missing value in a column the formula uses, with a
        ``MissingValuesWarning`` giving the count; ``"error"`` stops with a
        DataError naming the column and rows.

    Attributes
    ----------
    y : (n,) response.  X : (n, p) fixed-effects design.  Z : (n, q) random-effects design.
    codes : (n,) group index 0..J-1 of each row.  groups : (J,) group labels (R's level order).
    fixef_names, ranef_names : column names of X and Z.  group_name : the grouping variable.
    blocks : list of index arrays into Z's columns; G is block diagonal in them
        (one block for ``(1 + x | g)``, one per term for ``(1 + x || g)``).
    G_mask : (q, q) array, 1 inside the blocks (where G may be non-zero), 0 elsewhere.
    stats : :class:`GroupStats`, the per-group cross-products.
    n, p, q, J : sizes.
    n_dropped : rows left out for missing values.  dropped_rows : their numbers, counted from 1.
    offset : (n,) the formula's ``offset(...)`` (None without one); ``y`` is the response minus it.

    Warnings
    --------
    MissingValuesWarning (rows dropped), IdentifiabilityWarning (the grouping
    factor also as fixed dummies), ConditioningWarning (only for a model built
    from chunks with a column whose mean dwarfs its spread; with rows, the
    fitting methods centre such a model themselves: see :meth:`fitting_basis`).

    Raises
    ------
    FormulaError, DataError, DesignError
        For a malformed formula or an unsupported function, a missing column
        (with close matches), a column that cannot be coded, the response on
        the right-hand side, a constant response, no rows, n - p <= 0, a
        rank-deficient X or Z, a single group, or groups too small to separate
        the random effects from the residual.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ 1 + floor + (1 + floor | county)", tl.load_radon())
    >>> model.n, model.p, model.q, model.J
    (919, 2, 2, 85)
    >>> model.stats.ZtZ.shape
    (85, 2, 2)
    """

    def __new__(cls, formula=None, data=None, missing="drop"):
        """``tl.Model(formula, data)`` with several grouping factors (or ``g1:g2``) is a
        :class:`~teachlmm.multilevel.MultilevelModel`: the same code fits one factor or several."""
        if cls is Model and isinstance(formula, str) and _several_factors(formula):
            # multilevel builds on this module (its coder is a Model), so it is imported here, not at the top
            from .multilevel import MultilevelModel
            return MultilevelModel(formula, data, missing=missing)
        return super().__new__(cls)

    def __init__(self, formula, data, missing="drop"):
        self._parse(formula)
        self.missing = _check_missing_arg(missing)
        cols = self._read(data)
        cols, dropped = self._drop_missing(cols, offset=0)
        self._set_dropped(dropped, cols)
        self._learn_coding([cols])
        self.y, self.X, self.Z, self.codes, self.offset = self._arrays(cols)
        self.n = self.y.size
        self._check_response(self.y.min(), self.y.max())
        self._check_estimable()
        self.stats = GroupStats.from_arrays(self.X, self.Z, self.y, self.codes, self.J)
        self._check_conditioning()

    @classmethod
    def from_chunks(cls, formula, chunks, missing="drop"):
        """Build the model from data that arrives in pieces (e.g. a CSV too large for memory).

        The per-group statistics of the rows add up chunk by chunk, so memory is
        O(chunk + J (p+q)^2), never O(n). The data is read twice: once to learn
        the group labels, the levels of text columns and the state of
        transforms such as ``scale(x)`` (they may first appear in any chunk),
        once to accumulate the statistics. The result has ``y``, ``X``, ``Z``
        and ``codes`` set to None; everything that needs only the statistics
        (every fitting method, summary, predictions for new data) works as usual.

        Parameters
        ----------
        formula : str
        chunks : callable or sequence
            A function returning a fresh iterator of column mappings each time it
            is called (such as ``lambda: tl.data.read_csv_chunks(path)``), or a list
            of column mappings.
        missing : {"drop", "error"}
            As for :class:`Model`.

        Examples
        --------
        >>> import numpy as np, teachlmm as tl
        >>> data = tl.load_radon()
        >>> pieces = [{k: v[i:i + 300] for k, v in data.items()} for i in range(0, 919, 300)]
        >>> chunked = tl.Model.from_chunks("log_radon ~ floor + (1 | county)", pieces)
        >>> whole = tl.Model("log_radon ~ floor + (1 | county)", data)
        >>> bool(np.allclose(chunked.stats.ZtZ, whole.stats.ZtZ)), chunked.X is None
        (True, True)
        """
        self = cls.__new__(cls)
        self._parse(formula, chunks=True)
        self.missing = _check_missing_arg(missing)
        if chunks is None or isinstance(chunks, (str, bytes)) or not (callable(chunks) or hasattr(chunks, "__iter__")):
            raise DataError("chunks must be a list of column mappings or a function returning an iterator of "
                            f"them (e.g. lambda: tl.read_csv_chunks(path)), not {type(chunks).__name__}")
        if not callable(chunks) and iter(chunks) is chunks:
            raise DataError("chunks is an iterator, which can be read only once, but the model reads the data "
                            "twice; pass a function that returns a fresh iterator, e.g. lambda: tl.read_csv_chunks(path)")
        source = chunks if callable(chunks) else (lambda: iter(chunks))

        def pieces():                                                 # checked chunks, missing rows dropped
            start, dropped = 0, []
            for chunk in source():
                cols = self._read(chunk)
                cols, d = self._drop_missing(cols, offset=start)
                start += d.size + _nrows(cols)
                dropped.append(d)
                yield cols, dropped
        self._learn_coding(cols for cols, _ in pieces())                # pass 1: levels, groups, scale
        stats, lo, hi, dropped = None, np.inf, -np.inf, []
        for cols, dropped in pieces():                                # pass 2: statistics
            if not _nrows(cols):
                continue
            try:
                y, X, Z, codes, _ = self._arrays(cols)
            except DataError as err:
                raise DataError(f"the second pass over the chunks differs from the first ({err}); chunks must be "
                                "the same data each time: pass a function returning a fresh reader") from None
            if np.any(codes < 0):
                raise DataError(f"the second pass over the chunks holds group(s) of {self.group_name!r} the first "
                                "pass did not; chunks must be the same data each time: pass a function returning "
                                "a fresh reader of the same source") from None
            lo, hi = min(lo, y.min()), max(hi, y.max())
            part = GroupStats.from_arrays(X, Z, y, codes, self.J)
            stats = part if stats is None else stats + part
        self._set_dropped(np.concatenate(dropped) if dropped else np.zeros(0, int), None)
        if stats is None:
            raise DataError("the chunks held no rows" + (" left after dropping missing values" if self.n_dropped
                                                         else "") + "; give data with at least a few rows per group")
        self.stats, self.n = stats, int(stats.n.sum())
        self.y = self.X = self.Z = self.codes = self.offset = None
        self._check_response(lo, hi)
        self._check_estimable()
        self._check_conditioning()
        return self

    def _parse(self, formula, chunks=False):
        if isinstance(formula, str) and _several_factors(formula):
            what = "Model.from_chunks" if chunks else f"{type(self).__name__}"
            raise DesignError(f"{what} takes one grouping factor; this formula has several (or an interaction "
                              "g1:g2). Build the model from the data in memory: tl.Model(formula, data)")
        self.formula = parse_formula(formula)
        f = self.formula
        if not f.random:
            raise DesignError("the formula has no random term; add one such as (1 | group). "
                              "For a model without random effects use ordinary least squares.")
        self.group_name = f.random[0].group
        response_cols = columns_of(f.exprs.get(f.response, ("name", f.response)))
        for t in f.fixed + tuple(t for r in f.random for t in r.terms):
            used = [c for v in t.factors for c in columns_of(f.exprs.get(v, ("name", v)))]
            clash = [c for c in response_cols if c in used]
            if clash:
                raise DesignError(f"the response {clash[0]!r} also appears on the right-hand side (in the term "
                                  f"{t.name!r}); a variable cannot explain itself: remove it from the terms")
        if self.group_name in response_cols:
            raise DesignError(f"the response {self.group_name!r} is also the grouping variable; choose another "
                              "grouping column")

    def _read(self, data):
        """The formula's columns as Numeric / Categorical columns of one length."""
        raw = {name: get_column(data, name) for name in self.formula.variables}
        lengths = {name: c.missing.size for name, c in raw.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the columns used have different lengths: {lengths}; give columns of one length")
        return raw

    def _drop_missing(self, cols, offset):
        """Rows with a missing value in a used column: dropped (lme4's na.omit) or an error."""
        miss = np.zeros(_nrows(cols), bool)
        for col in cols.values():
            miss |= col.missing
        if not miss.any():
            return cols, np.zeros(0, int)
        rows = np.flatnonzero(miss)
        if self.missing == "error":
            name = next(name for name, col in cols.items() if col.missing.any())
            bad = np.flatnonzero(cols[name].missing) + offset
            raise DataError(f"column {name!r} has {bad.size} missing value(s) (rows {_rows(bad)}, counting from 1); "
                            "drop or impute those rows, or use missing='drop' to leave them out as lme4 does")
        keep = ~miss
        return {name: subset(col, keep) for name, col in cols.items()}, rows + offset

    def _set_dropped(self, dropped, cols):
        """Remember the rows left out (1-based, as the user counts them) and say so."""
        self.dropped_rows = np.asarray(dropped, dtype=np.int64) + 1
        self.n_dropped = int(self.dropped_rows.size)
        if self.n_dropped:
            warnings.warn(f"{self.n_dropped} row(s) with missing values in the formula's columns were left out "
                          f"(rows {_rows(self.dropped_rows - 1)}; model.dropped_rows lists them), as lme4's "
                          "na.omit does; pass missing='error' to stop instead", MissingValuesWarning, stacklevel=3)
        if cols is not None and not _nrows(cols):
            raise DataError("the data holds no rows" + (" left after dropping rows with missing values"
                                                        if self.n_dropped else "")
                            + "; a model needs data with several rows per group")

    def _learn_coding(self, pieces):
        """Which variables are factors and their levels, the state of scale(), and the group labels."""
        f = self.formula
        names = [v for t in f.fixed + tuple(t for r in f.random for t in r.terms) for v in t.factors]
        self._exprs = {v: f.exprs.get(v, ("name", v)) for v in dict.fromkeys(names)}
        partial, kinds, groups, order = [], {}, [], None
        for cols in pieces:
            for name, col in cols.items():
                if kinds.setdefault(name, type(col)) is not type(col):
                    raise DataError(f"column {name!r} is numeric in some chunks and text in others; "
                                    "make it one kind in every chunk")
            if not _nrows(cols):
                continue
            keys, order = _group_keys(cols[self.group_name])
            uniq_keys, inverse = np.unique(keys, return_inverse=True)
            groups.append(uniq_keys)
            self._codes_cache = (cols[self.group_name], inverse)       # one np.unique gives the codes too
            state = {}
            for text, expr in self._exprs.items():
                learn(expr, text, cols, state)
            partial.append((state, _nrows(cols)))
        if not partial:
            raise DataError("the data holds no rows" + (" left after dropping rows with missing values"
                                                        if getattr(self, "n_dropped", 0) else "")
                            + "; a model needs data with several rows per group")
        response = kinds.get(f.response)
        if f.response in f.exprs and f.exprs[f.response][0] == "name" and response is Categorical:
            raise DataError(f"the response {f.response!r} must be numeric; it holds text (or TRUE/FALSE) values. "
                            "Code it as numbers first")
        self._state = _merge_states(partial)
        uniq = np.unique(np.concatenate(groups))
        if order is not None:                       # a Categorical's own order (unused categories dropped)
            present = set(uniq.tolist())
            uniq = np.array([lev for lev in order if lev in present])
        self.groups = r_levels(uniq) if uniq.dtype.kind == "f" else uniq
        perm = np.argsort(uniq, kind="stable")
        self._group_sorted = uniq[perm]
        self._group_rank = perm if order is not None else None     # sorted position -> the group's index
        self._group_is_numeric = uniq.dtype.kind == "f"
        self.J = self.groups.size
        self._names_from()

    def _names_from(self):
        """Column names of X and Z (from the learnt coding: one row of each variable is enough)."""
        f = self.formula
        fake = {}
        for text, expr in self._exprs.items():
            st = self._state.get(text)
            if st is not None and st[0] == "levels":
                fake[text] = ([(lev, np.zeros(1)) for lev in st[1]], True)
            elif expr[0] == "call" and expr[1] == "poly":
                fake[text] = ([(str(k), np.zeros(1)) for k in range(1, int(expr[2][1][1]) + 1)], False)
            else:
                fake[text] = ([("", np.zeros(1))], False)
        self.fixef_names = [name for name, _ in _part_columns(f.fixed, fake, 1)]
        zparts = [[name for name, _ in _part_columns(r.terms, fake, 1)] for r in f.random]
        self.ranef_names = [name for names in zparts for name in names]
        sizes = np.cumsum([0] + [len(names) for names in zparts])
        self.blocks = [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.p, self.q = len(self.fixef_names), len(self.ranef_names)
        self.G_mask = np.zeros((self.q, self.q))       # 1 where G may be non-zero: within a block
        for blk in self.blocks:
            self.G_mask[np.ix_(blk, blk)] = 1.0

    def _variables(self, cols):
        """Each variable's model-matrix columns for these rows."""
        return {text: evaluate(expr, text, cols, self._state) for text, expr in self._exprs.items()}

    def _arrays(self, cols):
        """y, X, Z, group codes and offset of a mapping of checked, complete columns."""
        f = self.formula
        n = _nrows(cols)
        variables = self._variables(cols)
        X = self._matrix(f.fixed, variables, n)
        Z = np.column_stack([self._matrix(r.terms, variables, n) for r in f.random])
        response = f.exprs.get(f.response, ("name", f.response))
        y = np.array(evaluate(response, f.response, cols, {})[0][0][1], dtype=float)
        offset = None
        for text in f.offsets:
            value = evaluate(f.exprs[text], text, cols, {})[0][0][1]
            offset = value if offset is None else offset + value
        if offset is not None:
            y = y - offset                         # the offset's coefficient is 1: fit y - offset
        return y, X, Z, self._codes(cols[self.group_name]), offset

    # -- building blocks ---------------------------------------------------
    def _matrix(self, terms, variables, n):
        cols = _part_columns(terms, variables, n)
        if not cols:
            return np.zeros((n, 0))
        return np.column_stack([c for _, c in cols])

    def _codes(self, group_col):
        """Index 0..J-1 of each row's group in ``self.groups`` (-1 for a group not in the fitted data)."""
        cached, inverse = self.__dict__.pop("_codes_cache", (None, None))
        if cached is group_col and len(self._group_sorted) == inverse.max(initial=-1) + 1:
            return inverse if self._group_rank is None else self._group_rank[inverse]
        keys, _ = _group_keys(group_col)
        if self._group_is_numeric != isinstance(group_col, Numeric):
            if self._group_is_numeric:
                return np.full(group_col.missing.size, -1)
            uniq, inv = np.unique(keys, return_inverse=True)           # numbers matched as R prints them
            keys = np.array([r_label(v) for v in uniq], dtype=str)[inv]
        ref = self._group_sorted
        pos = np.clip(np.searchsorted(ref, keys), 0, ref.size - 1)
        found = ref[pos] == keys
        if self._group_rank is not None:
            pos = self._group_rank[pos]
        return np.where(found, pos, -1)

    def _check_response(self, lo, hi):
        if lo == hi:
            raise DesignError(f"the response {self.formula.response!r} is constant ({lo:g} in every row), so "
                              "there is no variation to model; check that you chose the right column")

    def _check_estimable(self):
        if self.J < 2:
            raise DesignError(f"the grouping variable {self.group_name!r} has only one group; a variance "
                              "between groups needs at least two (more like ten or more to be estimated well)")
        if self.n - self.p <= 0:
            raise DesignError(f"the fixed part has p = {self.p} columns for n = {self.n} rows: nothing is left "
                              "to estimate the variances from. Use fewer fixed terms (a factor with many levels "
                              "adds one column per level) or more data")
        if self.n <= self.J * self.q:
            single = self.q == 1 and self.n == self.J
            what = ("every group has a single row, so a group's random intercept cannot be told apart from "
                    "its residual" if single else
                    f"there are n = {self.n} rows for J * q = {self.J * self.q} random effects")
            raise DesignError(f"the random effects are not identifiable: {what}. Use a coarser grouping, "
                              "fewer random terms, or an ordinary regression.")
        if self.p:
            self._check_rank()
        self._check_random_rank()
        self._check_group_in_fixed()



    def _check_rank(self):
        """Columns of X beyond its numerical rank are combinations of the others (see :func:`_rank_check`)."""
        bad = _rank_check(self.X, self.centring.Sx if self.X is not None else None,
                          self.stats.XtX.sum(0) if self.X is None else None, self.fixef_names)
        if bad and bad[0] == "zero":
            raise DesignError(f"fixed-effect column(s) {bad[1]} are all zero; remove them from the formula")
        if bad:
            raise DesignError(f"the fixed-effects design is rank deficient: {bad[1]} can be written as a "
                              f"combination of the other columns ({', '.join(self.fixef_names)}). Remove "
                              "the redundant term(s) from the formula (a variable constant within the data "
                              "duplicates the intercept; a full set of dummies does too).")

    def _check_conditioning(self):
        """Find the columns whose raw cross-products lose digits to a large mean (see the module docstring).

        With rows, the fitting methods centre such a model themselves (:meth:`fitting_basis`);
        built from chunks it cannot be centred, and a column beyond 1e4 sd (8 digits) gets a warning.
        """
        self._large_means = _large_means(self.stats, self.fixef_names, self.formula.response)
        if "(Intercept)" in self.ranef_names:          # random slopes whose column is not in X
            i, z = self.ranef_names.index("(Intercept)"), self.stats.ZtZ.sum(0)
            seen = {name for name, _, _ in self._large_means}
            for k, name in enumerate(self.ranef_names):
                mean, var = z[i, k] / self.n, z[k, k] / self.n - (z[i, k] / self.n) ** 2
                if k != i and name not in self.fixef_names and name not in seen and \
                        mean * mean > CENTRE_ABOVE ** 2 * max(var, 0.0) and mean != 0:
                    self._large_means.append((name, float(mean), abs(mean) / np.sqrt(var) if var > 0 else np.inf))
        if self.X is not None:                          # the rows give the flagged columns' exact spread
            exact = []
            for name, mean, ratio in self._large_means:
                col = self.y if name == self.formula.response else \
                    self.X[:, self.fixef_names.index(name)] if name in self.fixef_names else \
                    self.Z[:, self.ranef_names.index(name)]
                sd = float(np.std(col))
                exact.append((name, float(np.mean(col)), abs(mean) / sd if sd > 0 else np.inf))
            self._large_means = exact
            return
        for name, mean, ratio in self._large_means:
            if ratio > 1e4:
                lost = f"about {2 * np.log10(ratio):.0f}" if np.isfinite(ratio) else "all"
                warnings.warn(f"column {name!r} has a mean ({mean:.6g}) {large_mean_ratio(ratio)} its standard "
                              f"deviation: its cross-products lose {lost} of float64's 16 "
                              "digits, and this model, built from chunks, cannot be centred after reading. Subtract "
                              f"a constant while reading, or in the formula, e.g. I({name} - {mean:.3g})",
                              ConditioningWarning, stacklevel=4)

    def _check_random_rank(self):
        """Z's columns must be linearly independent (over all rows), as X's."""
        bad = _rank_check(self.Z, self.centring.Sz if self.Z is not None else None,
                          self.stats.ZtZ.sum(0) if self.Z is None else None, self.ranef_names)
        if bad and bad[0] == "zero":
            raise DesignError(f"random-effect column(s) {bad[1]} are all zero; remove them from the random term")
        if bad:
            raise DesignError(f"the random-effects design is rank deficient: {bad[1]} can be written as a "
                              f"combination of the other random columns ({', '.join(self.ranef_names)}); remove "
                              "the redundant term(s) from the random part")

    def _check_group_in_fixed(self):
        """The grouping variable (or a finer factor) as fixed dummies: the random intercept is not identifiable."""
        f = self.formula
        if not any(not t.factors for r in f.random for t in r.terms):
            return
        for text, expr in self._exprs.items():
            st = self._state.get(text)
            src = expr[1] if expr[0] == "name" else expr[2][0][1] if expr[0] == "call" and \
                expr[1] in ("factor", "relevel") else None
            in_fixed = any(t.factors == (text,) for t in f.fixed)
            if st is None or st[0] != "levels" or not in_fixed or src is None:
                continue
            if src == self.group_name or (self.X is not None and len(st[1]) >= self.J and
                                           self._nested_in_groups(text)):
                warnings.warn(f"the fixed term {text!r} has a column for every group of {self.group_name!r}, so "
                              "the fixed part already fits each group's mean: the variance of the random "
                              f"intercept is not identifiable (its estimate means nothing). Remove {text!r} from "
                              "the fixed part, or drop the random intercept", IdentifiabilityWarning, stacklevel=3)

    def _nested_in_groups(self, text):
        """Does every level of factor ``text`` lie inside one group (the factor refines the grouping)?"""
        k = self.fixef_names.index(next(n for n in self.fixef_names if n.startswith(text)))
        cols = [j for j, n in enumerate(self.fixef_names) if n.startswith(text) and ":" not in n]
        level = np.argmax(self.X[:, cols], axis=1) + 1
        level[self.X[:, cols].max(axis=1) == 0] = 0
        pairs = np.unique(level * (self.J + 1) + self.codes)
        return pairs.size == np.unique(level).size and k >= 0

    # -- conditioning ------------------------------------------------------------
    def centred(self):
        """The same model in centred coordinates, and the exact map back: ``(model_c, centring)``.

        ``model_c`` fits like any model (``tl.em.fit(model_c)``, ``tl.gibbs``);
        its estimates are in the centred basis, and ``centring`` (a
        :class:`Centring`) maps them back: ``centring.beta(fit_c.beta)``,
        ``centring.G(fit_c.G)``, ``centring.b(fit_c.ranef)``,
        ``centring.vcov(fit_c.vcov)``; sigma2 and the log-likelihood are the
        same. The centred cross-products keep every digit that the raw ones
        lose when a column's mean is large against its spread (a timestamp,
        UTM coordinates, y + 1e9). ``em.fit``, ``gibbs.sample`` and
        ``blup.fit`` do this by themselves when a column needs it
        (:meth:`fitting_basis`); call it to step through such a model with
        ``em.init``/``em.step`` or ``gibbs.init``/``gibbs.step``. The
        columns that need it are centred (every column when none does; see
        :attr:`centring`), so the copy is the one the fitting methods use.

        Needs the rows (a model built from chunks keeps only the raw
        cross-products).

        Examples
        --------
        >>> import numpy as np, teachlmm as tl
        >>> d = tl.load_radon()
        >>> m = tl.Model("log_radon ~ floor + (1 + floor | county)", dict(d, floor=d["floor"] + 1e8))
        >>> mc, centring = m.centred()
        >>> fit_c = tl.em.fit(mc)
        >>> G = centring.G(fit_c.G)           # the G of floor + 1e8: G00 + 2c G01 + c^2 G11, ...
        >>> bool(np.isclose(G[1, 1], tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", d)).G[1, 1]))
        True
        """
        if self.X is None:
            raise DataError("model.centred() needs the rows, but this model was built from chunks and keeps only "
                            "the cross-products; subtract a constant from the large column while reading instead")
        return self._centred_copy(), self.centring

    @property
    def centring(self):
        """The :class:`Centring` of this model's data: the columns of X and Z and y, each minus its mean.

        Only the columns that need it (:func:`_large_means`: ``|mean| > 100 sd``) are
        shifted when some do, so that the rest of the model keeps the
        coordinates it was written in; when none does (``model.centred()``
        asked for anyway), every column is.
        """
        cache = self.__dict__.get("_centring")
        if cache is None:
            icpt = self.fixef_names.index("(Intercept)") if "(Intercept)" in self.fixef_names else None
            flagged = {name for name, _, _ in (getattr(self, "_large_means", None) or [])}
            pick = (lambda name: name in flagged) if flagged else (lambda name: True)
            mx = self.X.mean(axis=0) if icpt is not None else np.zeros(self.p)
            mx = np.where([pick(n) for n in self.fixef_names], mx, 0.0)
            Sx = _shift_matrix(mx, icpt, self.p)
            Sz = np.eye(self.q)
            for blk in self.blocks:                     # centre a slope only together with its block's intercept
                names = [self.ranef_names[k] for k in blk]
                if "(Intercept)" in names and len(blk) > 1:
                    i0 = blk[names.index("(Intercept)")]
                    mz = self.Z[:, blk].mean(axis=0)
                    Sz[i0, blk] -= np.where([pick(n) for n in names], mz, 0.0)
                    Sz[i0, i0] = 1.0
            y_shift = float(self.y.mean()) if icpt is not None and pick(self.formula.response) else 0.0
            cache = self.__dict__["_centring"] = Centring(y_shift, Sx, Sz)
        return cache

    def fitting_basis(self):
        """The model the fitting methods work on, and the map back: ``(model_w, centring)``.

        For an ordinary model, ``(self, Centring.identity(p, q))``: the raw
        statistics keep their digits. When a column's mean is more than 100
        times its spread (``y + 1e9``), the centred copy (:meth:`centred`,
        made once and kept) and its :class:`Centring`; ``em.fit``,
        ``gibbs.sample`` and ``blup.fit`` fit ``model_w`` and report
        ``centring``'s map of the estimates, so ``tl.em.fit(tl.Model(...))``
        is right for any offset. A model built from chunks has no rows to
        centre: it is its own basis.

        Examples
        --------
        >>> import teachlmm as tl
        >>> m = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
        >>> m.fitting_basis()[0] is m
        True
        """
        cache = self.__dict__.get("_basis")
        if cache is None or cache[2] is not self.stats:     # with_response() swaps the statistics
            if getattr(self, "_large_means", None) and self.X is not None:
                self.__dict__.pop("_centring", None)
                cache = (self._centred_copy(), self.centring, self.stats)
            else:
                cache = (self, Centring.identity(self.p, self.q), self.stats)
            self.__dict__["_basis"] = cache
        return cache[0], cache[1]

    def _centred_copy(self):
        c = self.centring
        new = copy.copy(self)
        for key in ("_centring", "_basis"):
            new.__dict__.pop(key, None)
        new._large_means = []
        new.X, new.Z, new.y = self.X @ c.Sx, self.Z @ c.Sz, self.y - c.y_shift
        new.stats = GroupStats.from_arrays(new.X, new.Z, new.y, self.codes, self.J)
        return new

    # -- variance components ---------------------------------------------------
    def check_variance_components(self, G, sigma2, tol=1e-8):
        """(G, sigma2) checked for this model: G q x q (a number when q = 1), finite, symmetric,
        positive semi-definite (up to ``tol`` for rounding; a 0 variance or a correlation of
        +-1 is allowed), zero between uncorrelated blocks; sigma2 positive.

        Every method takes variance components through here (EM's and the Gibbs
        sampler's start values, the BLUP's "what if" values).

        Returns
        -------
        (G as a (q, q) float array, sigma2 as a float)

        Raises
        ------
        TeachLMMError
            Saying which requirement failed and what it means.
        """
        sigma2 = _check_sigma2(sigma2)
        G = _check_G_shape(G, self)
        G = _check_symmetric_psd(G, self.ranef_names, tol)
        _check_blocks(G, self)
        return G, sigma2

    # -- new data ------------------------------------------------------------
    def design(self, data):
        """X, Z and group indices for new data, coded the way this model was.

        Transforms learnt from the fitted data (factor levels, the centre and
        sd of ``scale(x)``) are applied unchanged. Returns ``(X, Z, codes)``
        with ``codes[i] = -1`` for rows whose group was not in the fitted data;
        a row with a missing predictor gets NaN in X and Z (so its prediction
        is NaN, as R's ``predict`` gives NA).
        """
        f = self.formula
        names = [v for v in f.variables if v not in columns_of(f.exprs.get(f.response, ("name", f.response)))
                 or any(v in columns_of(f.exprs.get(x, ("name", x))) for x in self._exprs)
                 or v == self.group_name]
        cols = {name: get_column(data, name) for name in names}
        lengths = {name: c.missing.size for name, c in cols.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the new data's columns have different lengths: {lengths}; give columns of one length")
        n = next(iter(lengths.values()))
        miss = np.zeros(n, bool)
        for col in cols.values():
            miss |= col.missing
        keep = ~miss
        part = {name: subset(col, keep) for name, col in cols.items()}
        X, Z = np.full((n, self.p), np.nan), np.full((n, self.q), np.nan)
        codes = np.zeros(n, dtype=np.int64)       # a row with a missing value: NaN, not an "unseen group"
        if keep.any():
            variables = self._variables(part)
            X[keep] = self._matrix(f.fixed, variables, int(keep.sum()))
            Z[keep] = np.column_stack([self._matrix(r.terms, variables, int(keep.sum())) for r in f.random])
            codes[keep] = self._codes(part[self.group_name])
        return X, Z, codes

    def offset_of(self, data):
        """The formula's ``offset(...)`` for new data (zeros when the formula has none)."""
        f = self.formula
        cols = {name: get_column(data, name) for name in {c for t in f.offsets for c in columns_of(f.exprs[t])}}
        total = 0.0
        for text in f.offsets:
            total = total + evaluate(f.exprs[text], text, cols, {})[0][0][1]
        return total

    def __repr__(self):
        return (f"Model({self.formula.text!r}: n = {self.n}, J = {self.J} groups of {self.group_name!r}, "
                f"p = {self.p} fixed, q = {self.q} random per group)")

    # -- the lecture's recurring ideas, computed once ----------------------------
    @property
    def coef_names(self):
        """Names of the group-specific coefficients, the columns of lme4's ``coef()``.

        The fixed effects in formula order, then the random terms that have no
        fixed effect of their own (``(0 + x | g)`` without ``x`` in the fixed part).
        ``coef[j] = beta + b_j`` lines up with this list.

        Examples
        --------
        >>> import teachlmm as tl
        >>> m4 = tl.Model("log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)",
        ...               tl.load_radon())
        >>> m4.coef_names
        ['(Intercept)', 'floor', 'log_uranium', 'floor:log_uranium']
        >>> tl.Model("log_radon ~ 1 + (0 + floor | county)", tl.load_radon()).coef_names
        ['(Intercept)', 'floor']
        """
        return list(self.fixef_names) + [r for r in self.ranef_names if r not in self.fixef_names]

    def G_entries(self):
        """The free entries of G, one ``(k, l)`` pair (row k >= column l) each, in lme4's order.

        Block by block (``model.blocks``), column by column of the lower triangle:
        the variance G[l, l] first, then the covariances G[k, l] of the terms after
        it. This is the order of lme4's ``theta`` and of ``confint``'s
        ``sd_`` / ``cor_`` rows. Entries between uncorrelated blocks (``||``) are 0
        by the model and are not listed. There are ``sum_B q_B (q_B + 1) / 2``.

        Examples
        --------
        >>> import teachlmm as tl
        >>> data = tl.load_radon()
        >>> list(tl.Model("log_radon ~ floor + (1 + floor | county)", data).G_entries())
        [(0, 0), (1, 0), (1, 1)]
        >>> list(tl.Model("log_radon ~ floor + (1 + floor || county)", data).G_entries())
        [(0, 0), (1, 1)]
        """
        for block in self.blocks:
            for a, l in enumerate(block):
                for k in block[a:]:
                    yield int(k), int(l)

    def group_values(self, column, data=None):
        """One value per group of a group-level column (u_j in the lecture), in ``model.groups`` order.

        Parameters
        ----------
        column : str
            A column of the model: the response, a fixed-effect column
            (``fixef_names``, e.g. ``"log_uranium"``) or a random-effect column
            (``ranef_names``); or, when ``data`` is given, any column of ``data``.
        data : mapping, optional
            The data the model was built from (same rows, same order), for a
            column that is not in the formula.

        Returns
        -------
        (J,) numpy array: ``u[j]`` is the value the column takes in every row of
        group ``model.groups[j]``.

        Raises
        ------
        DataError
            If the column is not in the model (nor in ``data``), if ``data`` has a
            different number of rows, if the model was built from chunks (it keeps
            no rows), or if the column varies within a group (then it is not a
            group-level predictor: the message names the first such group).

        Examples
        --------
        >>> import teachlmm as tl
        >>> data = tl.load_radon()
        >>> m4 = tl.Model("log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)", data)
        >>> u = m4.group_values("log_uranium")
        >>> u.shape, round(float(u[0]), 4)
        ((85,), -0.689)
        >>> m4.group_values("floor")
        Traceback (most recent call last):
        ...
        teachlmm.errors.DataError: column 'floor' varies within county 1 ...
        """
        col = self._row_values(column, data)
        first = np.unique(self.codes, return_index=True)[1]
        u = col[first]
        if col.dtype.kind in "biuf":
            varies = ~np.isclose(col, u[self.codes], rtol=1e-12, atol=0.0)
        else:
            varies = col != u[self.codes]
        if varies.any():
            j = self.codes[np.flatnonzero(varies)[0]]
            raise DataError(f"column {column!r} varies within {self.group_name} {self.groups[j]} (values "
                            f"{u[j]!r} and {col[np.flatnonzero(varies)[0]]!r}), so it is not a group-level "
                            "predictor u_j: it has no single value per group")
        return u

    def _row_values(self, column, data):
        """The values, one per row, of a model column or (given ``data``) a data column."""
        if data is not None:
            given = get_column(data, column)
            col = given.values if isinstance(given, Numeric) else given.labels
            n = self.n if self.codes is None else self.codes.size
            n_read = n + getattr(self, "n_dropped", 0)         # the rows before missing values were dropped
            if col.size not in (n, n_read):
                raise DataError(f"data has {col.size} rows but the model has {n_read}: pass the data the model "
                                "was built from")
            if col.size != n:                                 # drop the rows the model dropped
                col = np.delete(col, self.dropped_rows - 1)
                given_missing = np.delete(given.missing, self.dropped_rows - 1)
            else:
                given_missing = given.missing
            if given_missing.any():
                raise DataError(f"column {column!r} has missing values in rows the model uses; a group-level "
                                "value needs one value per group")
            return col
        elif column == self.formula.response and self.y is not None:
            col = self.y
        elif column in self.fixef_names and self.X is not None:
            col = self.X[:, self.fixef_names.index(column)]
        elif column in self.ranef_names and self.Z is not None:
            col = self.Z[:, self.ranef_names.index(column)]
        elif self.X is None:
            raise DataError("this model was built from chunks and keeps no rows; pass the data as "
                            "group_values(column, data)")
        else:
            known = [self.formula.response] + list(self.fixef_names) + list(self.ranef_names)
            raise DataError(f"{column!r} is not a column of this model ({', '.join(dict.fromkeys(known))}); "
                            "pass the data as group_values(column, data) for a column outside the formula")
        if self.codes is None:
            raise DataError("this model was built from chunks and keeps no group codes of the rows, so it "
                            "cannot tell a column's value per group")
        return col
def response_variance(model):
    """var(y) from the per-group statistics (so a model built from chunks has it too)::

        v = (sum_i y_i^2 - n ybar^2) / (n - 1),   n ybar = sum_i y_i = (X'y)_0, the intercept's entry

    The sum of y is the intercept's entry of X'y (or of Z'y when only the random
    part has an intercept); a model without an intercept anywhere uses the rows
    when it has them, else the mean square y'y / n. For a column with a large mean
    this difference loses digits: the fitting methods hand a centred model
    (:meth:`teachlmm.Model.fitting_basis`) to this function, where ybar = 0.
    """
    if hasattr(model, "fitting_basis"):
        model = model.fitting_basis()[0]            # v is the same in the centred basis, and exact there
    s, n = model.stats, model.n
    if "(Intercept)" in model.fixef_names:
        total = s.Xty_total[model.fixef_names.index("(Intercept)")]
    elif "(Intercept)" in model.ranef_names:
        total = s.Zty[:, model.ranef_names.index("(Intercept)")].sum()
    elif model.y is not None:
        return float(np.var(model.y, ddof=1))
    else:
        return s.yty_total / n
    return float(max(s.yty_total - total * total / n, 0.0) / (n - 1))



def warn_raw_steps(model, fitter, start):
    """Warn (ConditioningWarning) when a student steps an algorithm through a model whose raw
    cross-products have lost digits (a column whose mean is far above its spread).

    ``fitter`` (e.g. "em.fit") centres such a model by itself; ``start`` is how to begin
    stepping on the centred copy instead (e.g. "tl.em.init(mc)").
    """
    if not (getattr(model, "_large_means", None) and model.X is not None):
        return
    name, mean, ratio = model._large_means[0]
    warnings.warn(f"column {name!r} has a mean ({mean:.6g}) {large_mean_ratio(ratio)} its standard deviation, so "
                  f"the raw cross-products these steps use have lost digits. {fitter} centres such a model by "
                  f"itself; to step through it, use the centred copy: mc, centring = model.centred(); {start} "
                  "(centring.G and centring.beta map its results back)", ConditioningWarning, stacklevel=3)
