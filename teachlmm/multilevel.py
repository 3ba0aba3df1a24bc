"""Several grouping factors, nested and crossed: the design.

With K random terms the model is::

    y = X beta + Z_1 b_1 + ... + Z_K b_K + eps,
    b_kj ~ N(0, G_k) for each level j of term k's grouping factor,  eps ~ N(0, sigma2 I)

Term k has J_k levels and q_k columns (``(1 + day | Dog)``: q = 2). Nested
designs (``(1 | school/class)``: classes inside schools) and crossed ones
(``(1 | subject) + (1 | item)``) differ only in the pattern of Z_k'Z_l.

This module turns formula + data into the pieces every algorithm needs:

* for each term k: the level index of every row (``codes[k]``), the level
  labels (R's order), its Z_k columns, and Z_k as a sparse n x (J_k q_k)
  matrix with the columns of level j at j q_k .. (j+1) q_k - 1 (level-major,
  as lme4's Zt);
* the terms in lme4's order: decreasing number of levels, ties in formula
  order (``MultilevelModel.terms``), and their lme4 names (``names``:
  ``"cask:batch"``, ``"batch"``; two terms on one factor ``"g"``, ``"g.1"``).

Only sparse matrices with n q nonzeros per term are stored, never an n x n
matrix. The algebra is in :mod:`teachlmm.multilevel_mme`, the fit in
:func:`fit`.

Users write the same code as for one factor: ``tl.Model(formula, data)``
returns a :class:`MultilevelModel` when the formula has several grouping
factors (or an interaction ``g1:g2``), and ``tl.em.fit(model)`` fits it
(:func:`teachlmm.multilevel_fit.fit`); ``tl.multilevel.fit(formula, data)``
does both in one call. The result is a
:class:`~teachlmm.multilevel_result.MultilevelResult`.
"""
import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .coding import Categorical, r_label, subset
from .design import Model, _check_missing_arg, get_column
from .errors import DataError, DesignError
from .formula import columns_of, parse_formula
from .multilevel_fit import fit as _fit

__all__ = ["MultilevelModel", "Grouping", "fit", "OneFactorOnly"]


class OneFactorOnly(DesignError, AttributeError):
    """An attribute of the one-factor :class:`~teachlmm.Model` asked of a model with several factors.

    Also an AttributeError, so ``hasattr(model, "stats")`` is simply False.
    """


# what tl.Model has and a model of several factors has not (per-group statistics of one factor)
_ONE_FACTOR = {"stats", "J", "q", "groups", "group_name", "codes", "Z", "blocks", "G_mask", "fitting_basis",
               "centred", "centring", "check_variance_components", "G_entries", "from_chunks"}


@dataclass
class Grouping:
    """One random term: ``(terms | factor)``.

    Attributes
    ----------
    name : str            lme4's VarCorr name ("cask:batch", "g.1" for a second term on g).
    factor : str          the grouping factor as ``ranef()`` keys it ("cask:batch", "g").
    columns : list        the Z columns' names, e.g. ["(Intercept)", "day"].
    codes : (n,) int      level index of every row.
    levels : (J,) str     level labels, R's order ("a:A" for cask a in batch A).
    Z : (n, q)            this term's columns of Z.
    """

    name: str
    factor: str
    columns: list
    codes: np.ndarray
    levels: np.ndarray
    Z: np.ndarray

    @property
    def J(self):
        return self.levels.size

    @property
    def q(self):
        return self.Z.shape[1]

    def sparse(self):
        """Z_k as a sparse n x (J q) matrix: row i holds z_i at the columns of its level."""
        n, q = self.Z.shape
        cols = (self.codes[:, None] * q + np.arange(q)).ravel()
        return sp.csr_matrix((self.Z.ravel(), cols, np.arange(0, n * q + 1, q)), shape=(n, self.J * q))

    def gram_blocks(self):
        """Z_kj'Z_kj for every level j: a (J, q, q) stack (one bincount per column pair)."""
        q = self.q
        out = np.empty((self.J, q, q))
        for a in range(q):                       # loop over column pairs, not over levels
            for b in range(a, q):
                out[:, a, b] = out[:, b, a] = np.bincount(self.codes, self.Z[:, a] * self.Z[:, b],
                                                          minlength=self.J)
        return out


def _levels_of(col):
    """Level index of every row and the labels, in R's factor order (numbers numerically, text C-sorted)."""
    if isinstance(col, Categorical):
        uniq, inv = np.unique(col.labels, return_inverse=True)
        if col.order is not None:                                   # the data's own order, unused dropped
            rank = {lev: i for i, lev in enumerate(col.order)}
            perm = np.argsort([rank[u] for u in uniq], kind="stable")
            where = np.empty_like(perm)
            where[perm] = np.arange(perm.size)
            return where[inv], uniq[perm].astype(str)
        return inv, uniq.astype(str)
    uniq, inv = np.unique(col.values, return_inverse=True)
    return inv, np.array([r_label(v) for v in uniq], dtype=object).astype(str)


def interaction_levels(cols):
    """R's ``g1:g2`` on factors: levels "a:A", the first factor varying slowest, unused levels dropped."""
    codes, labels = _levels_of(cols[0])
    for col in cols[1:]:
        c2, l2 = _levels_of(col)
        combined = codes.astype(np.int64) * l2.size + c2
        uniq, codes = np.unique(combined, return_inverse=True)
        labels = np.char.add(np.char.add(labels[uniq // l2.size], ":"), l2[uniq % l2.size])
    return codes.ravel(), labels


def lme4_names(groups):
    """VarCorr's names: the factor's name, repeats made unique as R's make.unique ("g", "g.1", "g.2")."""
    seen, out = {}, []
    for g in groups:
        k = seen.get(g, 0)
        out.append(g if k == 0 else f"{g}.{k}")
        seen[g] = k + 1
    return out


def _columns_of_term(formula, term):
    """The data columns of a term's grouping factor (``("cask", "batch")`` for ``cask:batch``)."""
    return next(r.group_columns for r in formula.random if r.group == term.factor)


def _codes_of(term, cols):
    """Each row's level index in ``term.levels`` (-1 for a level not in the fitted data), from its labels."""
    labels = None
    for col in cols:
        if isinstance(col, Categorical):
            text = col.labels.astype(str)
        else:
            uniq, inv = np.unique(col.values, return_inverse=True)
            text = np.array([r_label(v) for v in uniq], dtype=object).astype(str)[inv.ravel()]
        labels = text if labels is None else np.char.add(np.char.add(labels, ":"), text)
    where = {lev: j for j, lev in enumerate(term.levels)}
    uniq, inv = np.unique(labels, return_inverse=True)
    return np.array([where.get(u, -1) for u in uniq], dtype=np.int64)[inv.ravel()]


class _Coder(Model):
    """The one-factor front end's reading and coding (missing rows, factors, X, y), reused for several factors."""

    def __init__(self, formula, data, missing):
        self.formula = formula
        self.group_name = formula.random[0].group_columns[0]
        self.missing = _check_missing_arg(missing)
        cols = self._read(data)
        cols, dropped = self._drop_missing(cols, offset=0)
        self._set_dropped(dropped, cols)
        self._learn_coding([cols])
        self.y, self.X, self.Z, _, self.offset = self._arrays(cols)
        self.n = self.y.size
        self._check_response(self.y.min(), self.y.max())
        self.cols = cols


class MultilevelModel:
    """A linear mixed model with any number of random terms and grouping factors.

    Parameters
    ----------
    formula : str
        lmer syntax with one or more random terms: ``"strength ~ 1 + (1 | batch/cask)"``,
        ``"diameter ~ 1 + (1 | plate) + (1 | sample)"``, ``"score ~ Machine + (1 | Worker) +
        (1 | Worker:Machine)"``, ``"distance ~ age + (1 | Subject) + (0 + age | Subject)"``.
    data : mapping
        Column name -> 1-D array, as for :class:`~teachlmm.Model`.
    missing : {"drop", "error"}
        As for :class:`~teachlmm.Model`.

    Attributes
    ----------
    y, X : response and fixed-effects design.  fixef_names : X's column names.
    terms : list of :class:`Grouping`, in lme4's order (most levels first).
    names : the terms' VarCorr names.  factors : the grouping factors as ``ranef()`` keys them.
    ranef_names : dict, factor -> the columns of all its terms.  offset : the formula's offset (or None).
    n, p : sizes.  n_dropped, dropped_rows : rows left out for missing values (as :class:`~teachlmm.Model`).

    Notes
    -----
    ``tl.Model(formula, data)`` returns this class when the formula has several
    grouping factors, so users write the same code as for one. Attributes of
    the one-factor model that have no meaning here (``stats``, ``J``,
    ``groups``, ...) raise :class:`OneFactorOnly`, saying what to use instead.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> m.names, [t.J for t in m.terms]
    (['cask:batch', 'batch'], [30, 10])
    """

    def __init__(self, formula, data, missing="drop"):
        f = parse_formula(formula, multiple=True)
        if not f.random:
            raise DesignError("the formula has no random term; add one such as (1 | group)")
        self.formula = f
        coder = _Coder(f, data, missing)
        self.y, self.X, self.fixef_names = coder.y, coder.X, coder.fixef_names
        self.n, self.p = self.X.shape
        self.n_dropped, self.dropped_rows = coder.n_dropped, coder.dropped_rows
        self.offset, self._coder = coder.offset, coder
        sizes = np.cumsum([0] + [len(b) for b in coder.blocks])
        written = []
        for k, r in enumerate(f.random):
            codes, levels = interaction_levels([coder.cols[c] for c in r.group_columns])
            cols = [coder.ranef_names[i] for i in range(sizes[k], sizes[k + 1])]
            written.append(Grouping(r.group, r.group, cols, codes, levels, coder.Z[:, sizes[k]:sizes[k + 1]]))
            written[-1].zcols = slice(sizes[k], sizes[k + 1])            # its columns of the coder's Z
        order = sorted(range(len(written)), key=lambda k: -written[k].J)      # stable: ties in formula order
        self.terms = [written[k] for k in order]
        for t, name in zip(self.terms, lme4_names([t.factor for t in self.terms])):
            t.name = name
        self.names = [t.name for t in self.terms]
        self.factors = list(dict.fromkeys(t.factor for t in self.terms))
        self.ranef_names = {g: [c for t in self.terms if t.factor == g for c in t.columns] for g in self.factors}
        self._check()

    def _check(self):
        if self.n <= self.p:
            raise DesignError(f"the fixed part has p = {self.p} columns for n = {self.n} rows; use fewer fixed terms")
        if self.p and np.linalg.matrix_rank(self.X) < self.p:
            raise DesignError("the fixed-effects columns are linearly dependent (X is rank deficient); "
                              f"remove a redundant term from {self.fixef_names}")
        for t in self.terms:
            if t.J < 2:
                raise DesignError(f"the grouping factor {t.factor!r} has only one level; a variance between "
                                  "groups needs at least two")
            if t.J * t.q >= self.n:
                raise DesignError(f"the term {t.name!r} has J q = {t.J * t.q} random effects for n = {self.n} rows: "
                                  "they cannot be told apart from the residual; use fewer random terms")

    @property
    def q_total(self):
        return sum(t.J * t.q for t in self.terms)


    def __getattr__(self, name):
        if name in _ONE_FACTOR:
            raise OneFactorOnly(f"{name!r} belongs to models with one grouping factor; this model has several "
                                f"({', '.join(self.factors)}). Fit it with tl.em.fit(model) (ML/REML, as lme4); "
                                "per factor, see model.terms and the fit's Gs, ranefs, condsds and groups_by. "
                                "The Gibbs sampler, tl.blup and ddf take one grouping factor for now")
        raise AttributeError(f"'MultilevelModel' object has no attribute {name!r}")

    @property
    def coef_names(self):
        """Per grouping factor, the columns of lme4's ``coef()``: every fixed effect, then the factor's
        random effects that have no fixed effect of their own."""
        return {g: list(self.fixef_names) + [c for c in cols if c not in self.fixef_names]
                for g, cols in self.ranef_names.items()}

    def with_response(self, y):
        """A shallow copy with response ``y`` (X, the terms and the coding are shared): for refits."""
        new = copy.copy(self)
        new.y = np.asarray(y, dtype=float)
        return new

    # -- new data ------------------------------------------------------------
    def design(self, data):
        """X, the Z_k and the level codes of every term for new data, coded as the fitted data was.

        Returns ``(X, Zs, codes)``: lists in ``terms`` order; ``codes[k][i] = -1``
        for a row whose level of term k was not in the fitted data (a new cask
        of a known batch: -1 for ``cask:batch``, the batch's index for ``batch``).
        A row with a missing value gets NaN in X and the Z_k (its prediction is NaN).
        """
        c, f = self._coder, self.formula
        response = columns_of(f.exprs.get(f.response, ("name", f.response)))
        groups = {col for r in f.random for col in r.group_columns}
        names = [v for v in f.variables if v not in response or v in groups
                 or any(v in columns_of(e) for e in c._exprs.values())]
        cols = {name: get_column(data, name) for name in names}
        lengths = {name: col.missing.size for name, col in cols.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the new data's columns have different lengths: {lengths}; give columns of one length")
        n = next(iter(lengths.values()))
        keep = ~np.any([col.missing for col in cols.values()], axis=0)
        X, Z = np.full((n, self.p), np.nan), np.full((n, c.Z.shape[1]), np.nan)
        codes = [np.zeros(n, dtype=np.int64) for _ in self.terms]
        if keep.any():
            part = {name: subset(col, keep) for name, col in cols.items()}
            variables = c._variables(part)
            X[keep] = c._matrix(f.fixed, variables, int(keep.sum()))
            Z[keep] = np.column_stack([c._matrix(r.terms, variables, int(keep.sum())) for r in f.random])
            for k, t in enumerate(self.terms):
                codes[k][keep] = _codes_of(t, [part[col] for col in _columns_of_term(f, t)])
        return X, [Z[:, t.zcols] for t in self.terms], codes

    def offset_of(self, data):
        """The formula's ``offset(...)`` for new data (zeros when the formula has none)."""
        return self._coder.offset_of(data)

    def group_values(self, column, factor=None, data=None):
        """One value per level of a grouping factor of a column that is constant within its levels.

        Parameters
        ----------
        column : str
            The response, a fixed-effect column (``fixef_names``), a random-effect
            column, or (with ``data``) any column of ``data``.
        factor : str
            The grouping factor, as ``ranef()`` keys it (``"batch"``, ``"cask:batch"``);
            may be left out when the model has one.
        data : mapping, optional
            The data the model was built from, for a column outside the formula.

        Returns
        -------
        (J,) numpy array in the order of ``fit.groups_by[factor]``.

        Examples
        --------
        >>> import teachlmm as tl
        >>> data = tl.read_csv("tests/reference/data/scotssec.csv")
        >>> m = tl.Model("attain ~ verbal + (1 | primary) + (1 | second)", data)
        >>> m.group_values("sex", "primary", data)
        Traceback (most recent call last):
        ...
        teachlmm.errors.DataError: column 'sex' varies within primary 1 ...
        """
        if factor is None and len(self.factors) == 1:
            factor = self.factors[0]
        if factor not in self.factors:
            raise DataError(f"say which grouping factor: group_values({column!r}, factor) with factor one of "
                            f"{', '.join(map(repr, self.factors))}" + (f" (not {factor!r})" if factor else ""))
        term = next(t for t in self.terms if t.factor == factor)
        col = self._row_values(column, data)
        first = np.unique(term.codes, return_index=True)[1]
        u = col[first]
        same = np.isclose(col, u[term.codes], rtol=1e-12, atol=0.0) if col.dtype.kind in "biuf" else \
            col == u[term.codes]
        if not same.all():
            i = np.flatnonzero(~same)[0]
            raise DataError(f"column {column!r} varies within {factor} {term.levels[term.codes[i]]} (values "
                            f"{u[term.codes[i]]!r} and {col[i]!r}), so it is not a predictor at the level of "
                            f"{factor!r}: it has no single value per level")
        return u

    def _row_values(self, column, data):
        if data is not None:
            given = get_column(data, column)
            col = given.values if given.__class__.__name__ == "Numeric" else given.labels
            if col.size == self.n + self.n_dropped and self.n_dropped:
                col = np.delete(col, self.dropped_rows - 1)
            if col.size != self.n:
                raise DataError(f"data has {col.size} rows but the model has {self.n + self.n_dropped}: pass the "
                                "data the model was built from")
            return col
        if column == self.formula.response:
            return self.y if self.offset is None else self.y + self.offset
        if column in self.fixef_names:
            return self.X[:, self.fixef_names.index(column)]
        for t in self.terms:
            if column in t.columns:
                return t.Z[:, t.columns.index(column)]
        known = [self.formula.response] + list(self.fixef_names) + [c for t in self.terms for c in t.columns]
        raise DataError(f"{column!r} is not a column of this model ({', '.join(dict.fromkeys(known))}); "
                        "pass the data as group_values(column, factor, data) for a column outside the formula")

    def __repr__(self):
        groups = "; ".join(f"{t.name}, {t.J}" for t in self.terms)
        return f"MultilevelModel({self.formula.text!r}, n={self.n}, p={self.p}, groups: {groups})"


def fit(formula, data, reml=True, missing="drop"):
    """Fit a model with several grouping factors (ML or REML), as ``lme4::lmer`` does.

    See :func:`teachlmm.multilevel_fit.fit`.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.multilevel.fit("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> round(float(fit.Gs["cask:batch"][0, 0]), 4), round(float(fit.Gs["batch"][0, 0]), 4)
    (8.4337, 1.6573)
    """
    return _fit(MultilevelModel(formula, data, missing=missing), reml=reml)
