"""From formula and data to the model: X, Z, groups, and the per-group statistics.

For group j (a county) with n_j rows, the reduced form of the model is::

    y_j = X_j beta + Z_j b_j + eps_j,    b_j ~ N(0, G),  eps_j ~ N(0, sigma2 I)

Every algorithm in teachlmm needs the data only through the per-group
cross-products, computed once here (a J-stack of small matrices)::

    X_j'X_j (J,p,p)   X_j'Z_j (J,p,q)   Z_j'Z_j (J,q,q)
    X_j'y_j (J,p)     Z_j'y_j (J,q)     y_j'y_j (J,)     n_j (J,)

After that an EM iteration, a Gibbs sweep or a log-likelihood costs
O(J (p+q)^3), whatever the number of rows n. No n x n matrix is ever built.
"""
import difflib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg

from .errors import DataError, DesignError, TeachLMMError
from .formula import parse_formula

__all__ = ["Model", "GroupStats"]


# ----------------------------------------------------------------------------
# columns of the data
# ----------------------------------------------------------------------------

def _columns_of(data):
    for attr in ("keys", "columns"):
        if hasattr(data, attr):
            keys = getattr(data, attr)
            return [str(k) for k in (keys() if callable(keys) else keys)]
    return []


def get_column(data, name):
    """``data[name]`` as a 1-D numpy array, or a DataError naming close matches."""
    try:
        col = data[name]
    except (KeyError, IndexError, ValueError, TypeError):
        known = _columns_of(data)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise DataError(f"the data has no column {name!r}.{hint} Columns are: {', '.join(known[:20])}") from None
    col = np.asarray(col)
    if col.ndim != 1:
        raise DataError(f"column {name!r} must be one-dimensional, got shape {col.shape}")
    return col


def _is_missing(col):
    if col.dtype.kind in "fc":
        return ~np.isfinite(col)
    if col.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and not np.isfinite(v)) for v in col], dtype=bool)
    return np.zeros(col.shape, dtype=bool)


def check_finite(col, name):
    bad = np.flatnonzero(_is_missing(col))
    if bad.size:
        rows = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DataError(f"column {name!r} has {bad.size} missing or non-finite value(s) (rows {rows}); "
                        "drop or impute those rows before fitting")


def is_numeric(col):
    return col.dtype.kind in "biuf"


def r_levels(values):
    """Distinct values ordered like R's factor levels: numbers numerically, strings lexicographically."""
    uniq = np.unique(values)        # np.unique sorts numbers numerically and strings lexicographically
    if uniq.dtype.kind == "f" and np.all(uniq == np.round(uniq)):
        uniq = uniq.astype(np.int64)  # county 1.0 is shown as 1
    return uniq


# ----------------------------------------------------------------------------
# coding terms into columns
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Variable:
    """How one data column enters the model: numeric, or categorical with R-ordered levels."""

    name: str
    levels: object = None            # None for numeric

    def columns(self, col, full):
        """Numeric: the column itself. Categorical: 0/1 indicators (all levels if ``full``,
        else treatment contrasts, dropping the first level as R does)."""
        if self.levels is None:
            return [(self.name, col.astype(float))]
        col = col.astype(str)
        levels = self.levels if full else self.levels[1:]
        return [(f"{self.name}{lev}", (col == lev).astype(float)) for lev in levels]


def _term_columns(term, variables, data_cols, full):
    """Columns of one term: the products of its factors' columns (names joined by ':')."""
    cols = [("", None)]
    for k, factor in enumerate(term.factors):
        var = variables[factor]
        new = var.columns(data_cols[factor], full and k == 0)
        cols = [((a + ":" + b) if a else b, v if u is None else u * v) for a, u in cols for b, v in new]
    return cols


def _part_columns(terms, variables, data_cols, n):
    """Columns of a list of terms (fixed part, or one random block)."""
    has_intercept = any(not t.factors for t in terms)
    out, full_used = [], has_intercept
    for t in terms:
        if not t.factors:
            out.append(("(Intercept)", np.ones(n)))
            continue
        full = (not full_used and len(t.factors) == 1 and variables[t.factors[0]].levels is not None)
        full_used = full_used or full
        out += _term_columns(t, variables, data_cols, full)
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
# the model
# ----------------------------------------------------------------------------

class Model:
    """A linear mixed model: formula + data, turned into X, Z, groups and per-group statistics.

    The model in the lecture's reduced form is ``y = X beta + Z_j b_j + eps``
    with ``b_j ~ N(0, G)`` for each group j and ``eps ~ N(0, sigma2 I)``.
    Building a ``Model`` checks the data and computes the per-group
    cross-products once; every fitting method (``tl.em``, ``tl.gibbs``,
    ``tl.blup``) starts from it.

    Parameters
    ----------
    formula : str
        lmer syntax, e.g. ``"log_radon ~ 1 + floor + (1 + floor | county)"``;
        see :mod:`teachlmm.formula`.
    data : mapping
        Column name -> 1-D array (a dict of numpy arrays, or a DataFrame).
        String columns are categorical (treatment coding, first level as
        reference, columns named like R's, e.g. ``county_nameANOKA``).

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

    Raises
    ------
    FormulaError, DataError, DesignError
        For a malformed formula, a missing column (with close matches), missing
        values, a rank-deficient X, a single group, or groups too small to
        separate the random effects from the residual.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ 1 + floor + (1 + floor | county)", tl.load_radon())
    >>> model.n, model.p, model.q, model.J
    (919, 2, 2, 85)
    >>> model.stats.ZtZ.shape
    (85, 2, 2)
    """

    def __init__(self, formula, data):
        self._parse(formula)
        raw = self._read(data)
        self._learn_coding([raw])
        self.y, self.X, self.Z, self.codes = self._arrays(raw)
        self.n = self.y.size
        self._check_estimable()
        self.stats = GroupStats.from_arrays(self.X, self.Z, self.y, self.codes, self.J)

    @classmethod
    def from_chunks(cls, formula, chunks):
        """Build the model from data that arrives in pieces (e.g. a CSV too large for memory).

        The per-group statistics of the rows add up chunk by chunk, so memory is
        O(chunk + J (p+q)^2), never O(n). The data is read twice: once to learn
        the group labels and the levels of text columns (they may first appear in
        any chunk), once to accumulate the statistics. The result has
        ``y``, ``X``, ``Z`` and ``codes`` set to None; everything that needs only
        the statistics (every fitting method, summary, predictions for new data)
        works as usual.

        Parameters
        ----------
        formula : str
        chunks : callable or sequence
            A function returning a fresh iterator of column mappings each time it
            is called (such as ``lambda: tl.data.read_csv_chunks(path)``), or a list
            of column mappings.

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
        self._parse(formula)
        source = chunks if callable(chunks) else (lambda: iter(chunks))
        self._learn_coding(self._read(c) for c in source())          # pass 1: levels and groups
        stats = None
        for chunk in source():                                        # pass 2: statistics
            y, X, Z, codes = self._arrays(self._read(chunk))
            part = GroupStats.from_arrays(X, Z, y, codes, self.J)
            stats = part if stats is None else stats + part
        if stats is None:
            raise DataError("the chunks held no rows")
        self.stats, self.n = stats, int(stats.n.sum())
        self.y = self.X = self.Z = self.codes = None
        self._check_estimable()
        return self

    def _parse(self, formula):
        self.formula = parse_formula(formula)
        if not self.formula.random:
            raise DesignError("the formula has no random term; add one such as (1 | group). "
                              "For a model without random effects use ordinary least squares.")
        self.group_name = self.formula.random[0].group

    def _read(self, data):
        """The formula's columns as checked 1-D arrays of one length."""
        raw = {name: get_column(data, name) for name in self.formula.variables}
        lengths = {name: c.size for name, c in raw.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the columns used have different lengths: {lengths}")
        for name, col in raw.items():
            check_finite(col, name)
        return raw

    def _learn_coding(self, raws):
        """Which columns are numeric, the levels of the text ones, and the group labels (R's order)."""
        f = self.formula
        levels, numeric, groups, first = {}, {}, [], None
        for raw in raws:
            first = raw if first is None else first
            for name, col in raw.items():
                if name == self.group_name:
                    groups.append(np.unique(col))
                    continue
                if numeric.setdefault(name, is_numeric(col)) != is_numeric(col):
                    raise DataError(f"column {name!r} is numeric in some chunks and text in others")
                if not is_numeric(col):
                    levels.setdefault(name, set()).update(np.unique(col.astype(str)).tolist())
        if first is None:
            raise DataError("the data holds no rows")
        if not numeric.get(f.response, True):
            raise DataError(f"the response {f.response!r} must be numeric; it holds text values")
        self._variables = {name: _Variable(name, None if numeric[name] else r_levels(np.array(sorted(levels[name]))))
                           for name in f.variables if name != self.group_name}
        self.groups = r_levels(np.concatenate(groups))
        head = {name: col[:1] for name, col in first.items()}
        self.fixef_names = self._matrix(f.fixed, head, 1)[1]
        zparts = [self._matrix(r.terms, head, 1)[1] for r in f.random]
        self.ranef_names = [name for names in zparts for name in names]
        sizes = np.cumsum([0] + [len(names) for names in zparts])
        self.blocks = [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.p, self.q, self.J = len(self.fixef_names), len(self.ranef_names), self.groups.size
        self.G_mask = np.zeros((self.q, self.q))       # 1 where G may be non-zero: within a block
        for blk in self.blocks:
            self.G_mask[np.ix_(blk, blk)] = 1.0

    def _arrays(self, raw):
        """y, X, Z and group codes of a mapping of checked columns."""
        f = self.formula
        n = raw[f.response].size
        X = self._matrix(f.fixed, raw, n)[0]
        Z = np.column_stack([self._matrix(r.terms, raw, n)[0] for r in f.random])
        return raw[f.response].astype(float), X, Z, self._codes(raw[self.group_name])

    # -- building blocks ---------------------------------------------------
    def _matrix(self, terms, raw, n=None):
        n = self.n if n is None else n
        cols = _part_columns(terms, self._variables, raw, n)
        if not cols:
            return np.zeros((n, 0)), []
        names = [name for name, _ in cols]
        return np.column_stack([c for _, c in cols]), names

    def _codes(self, group_col):
        """Index 0..J-1 of each row's group in ``self.groups``."""
        labels = group_col.astype(self.groups.dtype) if is_numeric(group_col) else group_col.astype(str)
        ref = self.groups if is_numeric(group_col) else self.groups.astype(str)
        codes = np.searchsorted(ref, labels)
        return codes

    def _check_estimable(self):
        if self.J < 2:
            raise DesignError(f"the grouping variable {self.group_name!r} has only one group; a variance "
                              "between groups needs at least two (more like ten or more to be estimated well)")
        if self.n <= self.J * self.q:
            single = self.q == 1 and self.n == self.J
            what = ("every group has a single row, so a group's random intercept cannot be told apart from "
                    "its residual" if single else
                    f"there are n = {self.n} rows for J * q = {self.J * self.q} random effects")
            raise DesignError(f"the random effects are not identifiable: {what}. Use a coarser grouping, "
                              "fewer random terms, or an ordinary regression.")
        if self.p:
            self._check_rank()

    def _check_rank(self):
        """Pivoted QR of X (or of X'X when only the statistics are kept): columns beyond the
        numerical rank are combinations of the others."""
        XtX = self.stats.XtX.sum(0) if self.X is None else None
        scale = np.sqrt(np.diag(XtX) if self.X is None else (self.X ** 2).sum(axis=0))
        if np.any(scale == 0):
            bad = [self.fixef_names[k] for k in np.flatnonzero(scale == 0)]
            raise DesignError(f"fixed-effect column(s) {bad} are all zero; remove them from the formula")
        if self.X is None:                     # X'X squares the condition number: square the tolerance
            R, piv = scipy.linalg.qr(XtX / np.outer(scale, scale), mode="r", pivoting=True)
            d = np.abs(np.diag(R))
            rank = int(np.sum(d > d[0] * 1e-14 * self.p))
        else:
            R, piv = scipy.linalg.qr(self.X / scale, mode="r", pivoting=True)
            d = np.abs(np.diag(R))
            rank = int(np.sum(d > d[0] * 1e-9 * max(self.X.shape)))
        if rank < self.p:
            bad = [self.fixef_names[k] for k in piv[rank:]]
            raise DesignError(f"the fixed-effects design is rank deficient: {bad} can be written as a "
                              f"combination of the other columns ({', '.join(self.fixef_names)}). Remove "
                              "the redundant term(s) from the formula (a variable constant within the data "
                              "duplicates the intercept; a full set of dummies does too).")

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

        Returns ``(X, Z, codes)`` with ``codes[i] = -1`` for rows whose group
        was not in the fitted data.
        """
        f = self.formula
        names = [v for v in f.variables if v != f.response]
        raw = {name: get_column(data, name) for name in names}
        for name, col in raw.items():
            check_finite(col, name)
        for name, var in self._variables.items():
            if name in raw and var.levels is not None:
                unseen = sorted(set(raw[name].astype(str)) - set(var.levels))
                if unseen:
                    raise DataError(f"column {name!r} has level(s) {unseen[:5]} that the fitted data did not have")
        n = next(iter(raw.values())).size
        X, _ = self._matrix(f.fixed, raw, n)
        Z = np.column_stack([self._matrix(r.terms, raw, n)[0] for r in f.random])
        g = raw[self.group_name]
        both_numeric = is_numeric(g) and is_numeric(self.groups)
        labels = g.astype(float) if both_numeric else g.astype(str)      # not the groups' dtype: 2.5 would
        ref = self.groups.astype(float) if both_numeric else self.groups.astype(str)   # become 2, text be cut
        pos = np.clip(np.searchsorted(ref, labels), 0, self.J - 1)
        codes = np.where(ref[pos] == labels, pos, -1)
        return X, Z, codes

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
            col = get_column(data, column)
            n = self.n if self.codes is None else self.codes.size
            if col.size != n:
                raise DataError(f"data has {col.size} rows but the model has {n}: pass the data the model "
                                "was built from")
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
        check_finite(col, column)
        return col
