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

``tl.Model`` is the one-factor path and refuses a second grouping factor;
this module is the path for several (``tl.multilevel.fit``).
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .coding import Categorical, r_label
from .design import Model, _check_missing_arg
from .errors import DesignError
from .formula import parse_formula
from .multilevel_fit import fit as _fit

__all__ = ["MultilevelModel", "Grouping", "fit"]


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
    n, p : sizes.

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
        sizes = np.cumsum([0] + [len(b) for b in coder.blocks])
        written = []
        for k, r in enumerate(f.random):
            codes, levels = interaction_levels([coder.cols[c] for c in r.group_columns])
            cols = [coder.ranef_names[i] for i in range(sizes[k], sizes[k + 1])]
            written.append(Grouping(r.group, r.group, cols, codes, levels, coder.Z[:, sizes[k]:sizes[k + 1]]))
        order = sorted(range(len(written)), key=lambda k: -written[k].J)      # stable: ties in formula order
        self.terms = [written[k] for k in order]
        for t, name in zip(self.terms, lme4_names([t.factor for t in self.terms])):
            t.name = name
        self.names = [t.name for t in self.terms]
        self.factors = list(dict.fromkeys(t.factor for t in self.terms))
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
