r"""BLUP shrinkage for nested factors: classes within schools, in closed form.

Given the variance components, the BLUPs of a nested model come in two
closed-form steps, one per level, each a precision-weighted average like the
one-factor shrinkage of :mod:`teachlmm.blup`. This module computes them
without the mixed-model equations of all levels at once (which
:mod:`teachlmm.multilevel_mme` solves), and gives the shrinkage factors.

The random-intercept case
-------------------------
Pupils k in classes j in schools i (``(1 | school/class)``)::

    y_ijk = x_ijk'beta + a_i + c_ij + eps_ijk,
    a_i ~ N(0, tau2_s),   c_ij ~ N(0, tau2_c),   eps_ijk ~ N(0, sigma2).

Let r_bar_ij be class ij's mean residual, mean_k (y_ijk - x_ijk'beta), over
its n_ij pupils (beta at its GLS estimate).

*Class level.* Given its school's effect a_i, the class mean is a_i + c_ij
plus noise of variance sigma2 / n_ij, and c_ij ~ N(0, tau2_c): the one-factor
shrinkage of the lecture, towards a_i instead of 0::

    c_hat_ij = lambda_ij (r_bar_ij - a_i),    lambda_ij = tau2_c / (tau2_c + sigma2 / n_ij).

*School level.* Without a_i, class ij's mean is a_i plus independent noise of
variance v_ij = tau2_c + sigma2 / n_ij (the class effect and the pupils'
noise). The school's own estimate of a_i combines its classes with weights
w_ij = 1 / v_ij, and shrinks towards 0 with the school's total precision
W_i = sum_j w_ij::

    a_own_i = sum_j w_ij r_bar_ij / W_i,
    a_hat_i = Lambda_i a_own_i,    Lambda_i = tau2_s / (tau2_s + 1 / W_i).

A class with many pupils counts for at most 1 / tau2_c: a school with few,
large classes is still uncertain, because its classes differ.

*Both together.* The class's effect given the data is its conditional mean
at a_i = a_hat_i (c_hat_ij is linear in a_i)::

    c_hat_ij = lambda_ij (r_bar_ij - a_hat_i),

so the class's predicted mean x'beta + a_hat_i + c_hat_ij is
lambda_ij (its own mean) + (1 - lambda_ij) (its school's shrunken mean): the
class is shrunk towards its shrunken school. These are exactly the BLUPs of
the joint mixed-model equations (``tl.multilevel.fit``'s ``ranefs`` at the
same variance components). Their conditional variances given beta_hat
(lme4's condVar) are::

    Var(a_i | y) = 1 / (1 / tau2_s + W_i) = Lambda_i / W_i,
    Var(c_ij | y) = lambda_ij sigma2 / n_ij + lambda_ij^2 Var(a_i | y).

The matrix form (random slopes: ``(1 + x | school/class)``)
-----------------------------------------------------------
With the same q columns z at both levels, G_s and G_c the school and class
covariances, and per class S_ij = Z_ij'Z_ij and D_ij = (S_ij G_c + sigma2 I)^-1::

    class:   c_hat_ij = Lambda_ij (b_own_ij - a_i),   Lambda_ij = G_c D_ij S_ij = (S_ij + sigma2 G_c^-1)^-1 S_ij,
             b_own_ij = S_ij^-1 Z_ij'r_ij  (the class's own least-squares fit: it estimates a_i + c_ij);
    school:  W_i = sum_j D_ij S_ij          (the precision of class ij's own fit is (G_c + sigma2 S_ij^-1)^-1),
             h_i = sum_j D_ij Z_ij'r_ij,    a_own_i = W_i^-1 h_i,
             a_hat_i = Lambda_i a_own_i,    Lambda_i = (G_s^-1 + W_i)^-1 W_i = G_s (I + W_i G_s)^-1 W_i;
    both:    c_hat_ij = G_c D_ij (Z_ij'r_ij - S_ij a_hat_i),
             Var(a_i | y) = M_i = G_s (I + W_i G_s)^-1,
             Var(c_ij | y) = sigma2 G_c D_ij + Lambda_ij M_i Lambda_ij'.

For q = 1 and z = 1 these are the scalars above (S_ij = n_ij,
D_ij S_ij = n_ij / (n_ij tau2_c + sigma2) = w_ij). The forms with D_ij need
neither G^-1 nor S_ij^-1, so they hold on the boundary (a variance 0) and for
a class with one pupil and a random slope; only the "own" estimates need
S_ij and W_i invertible (NaN where they are not).

Different columns at the two levels (lme4's Pixel: ``(1 + day | Dog) +
(1 | Dog:Side)``): with Zs_ij the school term's columns in class ij, the
class's share of the school's information and score come from Woodbury's
identity on V_ij = Z_ij G_c Z_ij' + sigma2 I, using only per-class
cross-products::

    W_i = sum_j (Zs_ij'Zs_ij - Zs_ij'Z_ij G_c D_ij Z_ij'Zs_ij) / sigma2,
    h_i = sum_j (Zs_ij'r_ij  - Zs_ij'Z_ij G_c D_ij Z_ij'r_ij) / sigma2,
    c_hat_ij = G_c D_ij (Z_ij'r_ij - Z_ij'Zs_ij a_hat_i),

which reduce to the forms above when Zs = Z; this is what :func:`nested`
computes.

The GLS estimate of beta comes from the same per-class pieces: for columns
u, v of [X, y], u'V^-1 v = sum_i [ sum_j (u_ij'v_ij - u_ij'Z_ij G_c D_ij
Z_ij'v_ij) / sigma2 - h_i(u)' M_i h_i(v) ], with h_i(v) = sum_j D_ij Z_ij'v_ij
(Woodbury's identity, once per level). No n x n matrix and no loop over
levels: everything is a stack of q x q blocks, summed to schools with one
``np.add.at``.

Crossed factors
---------------
For crossed factors (subjects x items) there is no closed form per level.
Each effect is still shrunk *given the other factor's*: the mixed-model
equations' row for subject s says::

    s_hat_s = lambda_s mean_{i answered by s} (y_si - beta_hat - t_hat_i),
    lambda_s = tau2_subject / (tau2_subject + sigma2 / n_s),

but the t_hat_i on the right are themselves shrunk given the s_hat's. The
BLUPs solve both sets at once (Z_1'Z_2 couples them, and no order of
elimination makes one level's equations independent of the other's). So this
module does not offer crossed shrinkage factors: use ``tl.multilevel.fit``'s
``ranefs``; the book's chapter on several factors checks the "given the
other" identity numerically.
"""
from typing import NamedTuple

import numpy as np

from .errors import DesignError
from .multilevel import MultilevelModel

__all__ = ["NestedBLUP", "nested"]


class NestedBLUP(NamedTuple):
    """The BLUPs and shrinkage of a two-level nesting (classes in schools) at given variance components.

    Attributes
    ----------
    outer, inner : str
        The factors as ``ranef()`` keys them ("school", "class:school").
    groups_outer, groups_inner : arrays of level labels.
    outer_of_inner : (C,) int
        The outer level (index into groups_outer) of every inner level.
    beta : (p,)
        The GLS estimate of the fixed effects.
    ranef_outer, ranef_inner : (I, q_s), (C, q_c)
        a_hat_i and c_hat_ij (q_s, q_c: the outer and inner term's columns; equal for ``school/class``).
    condvar_outer, condvar_inner : (I, q_s, q_s), (C, q_c, q_c)
        Var(a_i | y) and Var(c_ij | y) given beta_hat (lme4's condVar).
    shrink_outer, shrink_inner : (I, q_s, q_s), (C, q_c, q_c)
        Lambda_i and Lambda_ij (for q = 1 the scalars Lambda_i and lambda_ij as 1 x 1 matrices).
    own_outer, own_inner : (I, q_s), (C, q_c)
        a_own_i, the school's own estimate from its classes, and b_own_ij, the class's own
        least-squares fit of its residuals y - X beta_hat (it estimates a_i + c_ij; for a random
        intercept, the class's mean residual r_bar_ij). NaN where not identified.
    precision_outer : (I, q_s, q_s)
        W_i, the school's information about a_i from its classes.
    """

    outer: str
    inner: str
    groups_outer: np.ndarray
    groups_inner: np.ndarray
    outer_of_inner: np.ndarray
    beta: np.ndarray
    ranef_outer: np.ndarray
    ranef_inner: np.ndarray
    condvar_outer: np.ndarray
    condvar_inner: np.ndarray
    shrink_outer: np.ndarray
    shrink_inner: np.ndarray
    own_outer: np.ndarray
    own_inner: np.ndarray
    precision_outer: np.ndarray

    @property
    def condsd_outer(self):
        return np.sqrt(np.diagonal(self.condvar_outer, axis1=1, axis2=2))

    @property
    def condsd_inner(self):
        return np.sqrt(np.diagonal(self.condvar_inner, axis1=1, axis2=2))

    def __repr__(self):
        qc, qs = self.ranef_inner.shape[1], self.ranef_outer.shape[1]
        return (f"NestedBLUP({self.inner!r} in {self.outer!r}: {self.groups_inner.size} in "
                f"{self.groups_outer.size} levels, q = {qc if qc == qs else f'{qc} and {qs}'})")


def _nesting(model):
    """The inner and outer terms, the outer level of every inner level; a clear error if not a two-level nesting."""
    if not isinstance(model, MultilevelModel):
        raise DesignError("nested() takes a MultilevelModel or the result of tl.multilevel.fit")
    if len(model.terms) != 2:
        raise DesignError(f"nested() is for exactly two nested random terms, as (1 | school/class); this model has "
                          f"{len(model.terms)}: {model.names}")
    inner, outer = model.terms                         # lme4's order: more levels first
    outer_of = np.zeros(inner.J, dtype=int)
    outer_of[inner.codes] = outer.codes
    if not np.array_equal(outer_of[inner.codes], outer.codes):
        raise DesignError(f"{inner.factor!r} is not nested in {outer.factor!r} (a level of {inner.factor!r} occurs "
                          f"in two levels of {outer.factor!r}): the factors are crossed, and crossed shrinkage has "
                          "no closed form per level; use tl.multilevel.fit(...).ranefs")
    return inner, outer, outer_of


def _covariance(G, q, name):
    G = np.asarray(G, dtype=float)
    if G.shape != (q, q) or not np.all(np.isfinite(G)) or not np.allclose(G, G.T):
        raise DesignError(f"G for {name!r} must be a finite symmetric {q} x {q} matrix; got {G.tolist()}")
    if np.linalg.eigvalsh(G).min() < -1e-12 * max(1.0, np.abs(G).max()):
        raise DesignError(f"G for {name!r} must be positive semi-definite; got {G.tolist()}")
    return G


def _per_level(codes, J, A, B):
    """sum over the rows of each level of A_i' B_i: a (J, a, b) stack (one bincount per column pair)."""
    out = np.empty((J, A.shape[1], B.shape[1]))
    for r in range(A.shape[1]):                   # loops over columns, not over levels
        for c in range(B.shape[1]):
            out[:, r, c] = np.bincount(codes, A[:, r] * B[:, c], minlength=J)
    return out


def _own(P, v):
    """P^-1 v per level, NaN where P is singular (no own estimate)."""
    out = np.full(v.shape, np.nan)
    ok = np.abs(np.linalg.det(P)) > 1e-12 * np.maximum(1.0, np.abs(P).max(axis=(1, 2)) ** P.shape[1])
    out[ok] = np.linalg.solve(P[ok], v[ok][..., None])[..., 0]
    return out


def nested(model, Gs=None, sigma2=None):
    """The BLUPs of a two-level nesting in closed form, level by level, with their shrinkage factors.

    Parameters
    ----------
    model : MultilevelModel or MultilevelResult
        A model with two nested random terms with the same columns, e.g.
        ``score ~ 1 + prior + (1 | school/class)``. A fit (``tl.multilevel.fit``)
        brings its own Gs and sigma2.
    Gs : dict, optional
        VarCorr name -> q x q covariance, as ``fit.Gs`` ("class:school", "school").
    sigma2 : float, optional
        The residual variance.

    Returns
    -------
    NestedBLUP

    Raises
    ------
    DesignError
        Not two terms; crossed rather than nested; different columns at the two
        levels; a G not symmetric positive semi-definite; sigma2 not positive.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel_data import simulate_schools
    >>> data, truth = simulate_schools(seed=1)
    >>> fit = tl.multilevel.fit(truth["formula"], data)
    >>> nb = nested(fit)
    >>> bool(abs(nb.ranef_outer - fit.ranefs["school"]).max() < 1e-8)
    True
    >>> lam = nb.shrink_inner[:, 0, 0]        # lambda_ij = tau2_c / (tau2_c + sigma2 / n_ij)
    >>> bool(0 < lam.min() and lam.max() < 1)
    True
    """
    if Gs is None and sigma2 is None and hasattr(model, "Gs") and hasattr(model, "model"):
        model, Gs, sigma2 = model.model, model.Gs, model.sigma2
    elif hasattr(model, "Gs") and hasattr(model, "model"):
        model = model.model
    inner, outer, outer_of = _nesting(model)
    if Gs is None or sigma2 is None:
        raise DesignError("give both Gs (a dict keyed as fit.Gs) and sigma2, or pass a fit")
    missing = [t.name for t in (inner, outer) if t.name not in Gs]
    if missing:
        raise DesignError(f"Gs has no entry for {missing}; its keys must be the VarCorr names {model.names}")
    Gc, Gsch = _covariance(Gs[inner.name], inner.q, inner.name), _covariance(Gs[outer.name], outer.q, outer.name)
    sigma2 = float(sigma2)
    if not np.isfinite(sigma2) or sigma2 <= 0:
        raise DesignError(f"sigma2 must be a positive number; got {sigma2}")
    Zc, Zs = inner.Z, outer.Z
    p, C, I = model.p, inner.J, outer.J
    Wy = np.column_stack([model.X, model.y])                        # [X, y]
    Scc = inner.gram_blocks()                                       # S_ij = Z_ij'Z_ij        (C, qc, qc)
    Scs = _per_level(inner.codes, C, Zc, Zs)                        # Z_ij'Zs_ij              (C, qc, qs)
    Sss = _per_level(inner.codes, C, Zs, Zs)                        # Zs_ij'Zs_ij             (C, qs, qs)
    ZcW = _per_level(inner.codes, C, Zc, Wy)                        # Z_ij'[X, y]             (C, qc, p+1)
    ZsW = _per_level(inner.codes, C, Zs, Wy)                        # Zs_ij'[X, y]            (C, qs, p+1)
    GD = Gc @ np.linalg.inv(Scc @ Gc + sigma2 * np.eye(Gc.shape[0]))   # G_c D_ij = (S_ij + sigma2 G_c^-1)^-1
    GDt = GD.transpose(0, 2, 1)
    # class ij's shares of h_i(v) = sum_j Zs_ij'V_ij^-1 v_ij and of W_i = h_i(Zs), by Woodbury
    h = (ZsW - Scs.transpose(0, 2, 1) @ GDt @ ZcW) / sigma2         # (same columns: D_ij Z_ij'v)
    Wcls = (Sss - Scs.transpose(0, 2, 1) @ GDt @ Scs) / sigma2      # (same columns: D_ij S_ij)
    H, W = np.zeros((I, Gsch.shape[0], p + 1)), np.zeros((I,) + Gsch.shape)
    np.add.at(H, outer_of, h)                                       # h_i = sum_j ...
    np.add.at(W, outer_of, Wcls)                                    # W_i = sum_j ...
    W = (W + W.transpose(0, 2, 1)) / 2
    M = Gsch @ np.linalg.inv(np.eye(Gsch.shape[0]) + W @ Gsch)      # M_i = (G_s^-1 + W_i)^-1 = Var(a_i | y)
    M = (M + M.transpose(0, 2, 1)) / 2
    # [X, y]'V^-1[X, y] by Woodbury at both levels, then GLS for beta
    within = (Wy.T @ Wy - np.einsum("jqa,jqr,jrb->ab", ZcW, GD, ZcW)) / sigma2
    P = within - np.einsum("iqa,iqr,irb->ab", H, M, H)
    beta = np.linalg.solve(P[:p, :p], P[:p, p]) if p else np.zeros(0)
    coef = np.append(-beta, 1.0)
    Zr = ZcW @ coef                                                 # Z_ij'r_ij               (C, qc)
    hr = H @ coef                                                   # h_i at r                (I, qs)
    a_hat = np.einsum("iqr,ir->iq", M, hr)                          # a_hat_i = M_i h_i
    c_hat = np.einsum("jqr,jr->jq", GD, Zr - np.einsum("jqr,jr->jq", Scs, a_hat[outer_of]))
    lam_in = GD @ Scc                                               # Lambda_ij = G_c D_ij S_ij
    lam_out = M @ W                                                 # Lambda_i = (G_s^-1 + W_i)^-1 W_i
    pull = GD @ Scs                                                 # how c_hat_ij moves with a_i
    V_in = sigma2 * GD + pull @ M[outer_of] @ pull.transpose(0, 2, 1)
    V_in = (V_in + V_in.transpose(0, 2, 1)) / 2
    return NestedBLUP(outer=outer.factor, inner=inner.factor, groups_outer=outer.levels, groups_inner=inner.levels,
                      outer_of_inner=outer_of, beta=beta, ranef_outer=a_hat, ranef_inner=c_hat,
                      condvar_outer=M, condvar_inner=V_in, shrink_outer=lam_out, shrink_inner=lam_in,
                      own_outer=_own(W, hr), own_inner=_own(Scc, Zr), precision_outer=W)
