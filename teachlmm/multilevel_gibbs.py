r"""Gibbs sampler for several grouping factors, nested or crossed.

The model (:mod:`teachlmm.multilevel`), with K random terms and a prior per term::

    y      = X beta + Z_1 b_1 + ... + Z_K b_K + eps,        eps ~ N(0, sigma2 I)
    b_kj   ~ N(0, G_k)        for each level j = 1..J_k of term k's grouping factor
    beta   ~ N(0, tau2 I)                            (tau2 = inf: flat)
    G_k    ~ InvWishart(nu0_k, S0_k)  or  Huang-Wand(A_k)   (one prior per term)
    sigma2 ~ InvGamma(a0, b0)  or  sigma ~ Uniform(0, sigma_max)  or  p(sigma2) ~ 1/sigma2

One sweep (:func:`step`) draws every unknown once from its full conditional:

1. **(beta, b_1, ..., b_K) jointly** given (G_1..G_K, sigma2): one draw from a
   Gaussian (:func:`draw_joint`), by the block elimination of
   :mod:`teachlmm.multilevel_mme`: the largest factor's levels are eliminated
   one by one, the Schur complement of everything else (the other terms and
   beta) is factored densely; its part is drawn first, then each level of the
   largest factor given it.
2. **G_k given b_k**, term by term: ``InvWishart(nu0_k + J_k, S0_k + sum_j
   b_kj b_kj')`` (:func:`draw_G`); under Huang-Wand's prior first the
   auxiliary a_k given G_k, then G_k given (a_k, b_k), as for one factor
   (:mod:`teachlmm.huang_wand`).
3. **sigma2** given (beta, b): ``InvGamma(a0 + n/2, b0 + SSR/2)``
   (:func:`draw_sigma2`).

**Why a joint draw.** The textbook alternative, ``update="factorwise"``
(:func:`draw_factorwise`), draws beta given the b's, then each b_k given
beta and the other terms' b_l -- a cheap per-level update, with no system
coupling the factors. For crossed factors it mixes worse as the data grow
(Papaspiliopoulos, Roberts & Zanella 2020, *Biometrika* 107: 25-40): the
overall level is shared by beta and by the means of every b_k, and each
conditional move of one of them is small when the others are held fixed.
``tests/benchmarks/bench_multilevel_gibbs.py`` measures it: the ESS per draw
of beta falls with the size of a crossed design under the factorwise update,
and stays flat under the joint one.

**Cost of one joint draw** (per chain), with m = sum_{k>1} J_k q_k the size of
the other terms: O(J_1 q_1^3) for the batched blocks of the largest factor,
the sparse product of its couplings, and O((m + p)^3 / 3) for one dense
Cholesky. Nested designs and crossed designs with one small factor (plates x
samples, pupils x schools) are cheap; two crossed factors of many thousands
of levels each are not (then a sparse Cholesky would be needed, as in lme4).
The G and sigma2 blocks are batched over chains; the residual for SSR costs
O(n q) per chain. No n x n matrix is formed, and there is no Python loop over
levels; the loop over chains is over a handful.

**Seeds.** Chain c draws all its random numbers from its own generator, the
c-th child of ``numpy.random.SeedSequence(seed)`` (:mod:`teachlmm.validators`),
so chain c of a run does not depend on how many chains run with it.

Step through it::

    state = init(model, seed=1)                 # state.G["cask:batch"], state.sigma2, state.beta, state.b
    state = step(state)
    post = sample(model, draws=2000, warmup=500, chains=4, seed=1)
    print(post.summary())
"""
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.special

from . import convergence, diagnostics, validators
from .errors import DesignError, TeachLMMError
from .gibbs import Prior
from .huang_wand import NU
from .multilevel import MultilevelModel
from .multilevel_mme import MAX_SCHUR_BYTES, _block_diag_sparse, _kron_eye
from .posterior import SUMMARY_HEADER, _draws_rows, _summary_cells
from .tables import format_table

__all__ = ["UPDATES", "TermPrior", "MultilevelPrior", "resolve_prior", "CrossProducts", "draw_joint",
           "draw_factorwise", "bartlett_inv_wishart", "draw_G", "draw_sigma2", "State", "init", "step",
           "sample", "MultilevelPosterior"]

UPDATES = ("joint", "factorwise")
RESIDUAL = "Residual"          # the prior dict's key for beta and sigma2 (lme4's VarCorr name of the residual)


# ----------------------------------------------------------------------------
# the prior: one per term, and one for (beta, sigma2)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TermPrior:
    """The prior of one term's G_k (q x q): inverse-Wishart (nu0, S0) or Huang-Wand (scales A)."""

    name: str
    q: int
    nu0: Optional[float] = None
    S0: Any = None
    A: Any = None

    @property
    def is_huang_wand(self):
        return self.A is not None

    def describe(self):
        num = lambda x: f"{x:.4g}"        # noqa: E731
        if self.is_huang_wand:
            return f"G[{self.name}] ~ Huang-Wand(nu = {num(NU)}, A = [{', '.join(num(a) for a in self.A)}])"
        S0 = "[" + ", ".join("[" + ", ".join(num(v) for v in row) + "]" for row in self.S0) + "]"
        return f"G[{self.name}] ~ InvWishart(nu0 = {num(self.nu0)}, S0 = {S0})"


@dataclass(frozen=True)
class MultilevelPrior:
    """The resolved prior: one :class:`TermPrior` per term (lme4's order), beta's tau2 and sigma2's.

    ``a0 = b0 = 0`` and no ``sigma_max`` is Jeffreys' p(sigma2) ~ 1/sigma2.
    """

    terms: tuple
    tau2: Any
    a0: float
    b0: float
    sigma_max: Optional[float]

    def describe(self):
        tau2 = np.asarray(self.tau2, dtype=float)
        if tau2.ndim == 0:
            beta = "beta flat" if np.isinf(tau2) else f"beta ~ N(0, {float(tau2):.4g} I)"
        else:
            beta = "beta ~ N(0, diag(" + ", ".join("inf" if np.isinf(t) else f"{t:.4g}" for t in tau2) + "))"
        sig = (f"sigma ~ Uniform(0, {self.sigma_max:.4g})" if self.sigma_max is not None else
               "p(sigma2) ~ 1/sigma2 (Jeffreys)" if self.a0 == 0 and self.b0 == 0 else
               f"sigma2 ~ InvGamma(a0 = {self.a0:.4g}, b0 = {self.b0:.4g})")
        return "; ".join([beta] + [t.describe() for t in self.terms] + [sig])


def _as_prior(spec, where):
    """A :class:`teachlmm.gibbs.Prior` from a Prior or a dict of its keyword arguments."""
    if spec is None:
        return Prior()
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, dict):
        try:
            return Prior(**spec)
        except TypeError as e:
            raise TeachLMMError(f"prior for {where}: {e}; the keywords are nu0, S0, A (for G), "
                                "a0, b0, sigma_max, tau2 (for sigma2 and beta); a prior per term is a dict keyed "
                                "by the terms' names and 'Residual'") from None
    raise TeachLMMError(f"prior for {where} must be a teachlmm.gibbs.Prior or a dict of its keywords, got {spec!r}")


def _term_prior(spec, term, y_var):
    """Term k's prior with the one-factor defaults on this term's scale (see :class:`teachlmm.gibbs.Prior`).

    With v = var(y) and m_k = mean(z_k^2) per column of the term:
    InvWishart defaults nu0 = q + 1, S0 = diag(v / (10 m)); Huang-Wand default A = sqrt(v / m).
    """
    q = term.q
    ms = np.mean(term.Z ** 2, axis=0)
    ms = np.where(ms > 0, ms, 1.0)
    if spec.is_huang_wand:
        A = np.sqrt(y_var / ms) if spec.A is None else np.asarray(spec.A, float)
        if A.size == 1:
            A = np.full(q, float(A.ravel()[0]))
        if A.shape != (q,):
            raise TeachLMMError(f"prior A for term {term.name!r} has {A.size} entries but the term has q = {q} "
                                f"random effects ({', '.join(term.columns)}): give one number or {q}")
        return TermPrior(term.name, q, nu0=NU + q - 1, A=A)
    nu0 = q + 1.0 if spec.nu0 is None else spec.nu0
    S0 = np.diag(y_var / (10 * ms)) if spec.S0 is None else spec.S0
    if nu0 <= q - 1:
        raise TeachLMMError(f"prior nu0 = {nu0:g} for term {term.name!r} is improper for q = {q}: an "
                            f"inverse-Wishart needs nu0 > q - 1 = {q - 1}; the default is q + 1 = {q + 1}")
    if S0.shape != (q, q):
        raise TeachLMMError(f"prior S0 for term {term.name!r} has shape {S0.shape} but the term has q = {q} "
                            f"random effects ({', '.join(term.columns)}): give a {q} x {q} matrix, or give "
                            "each term its own prior in a dict keyed by term name")
    return TermPrior(term.name, q, nu0=float(nu0), S0=np.asarray(S0, float))


def resolve_prior(model, prior=None):
    """The :class:`MultilevelPrior` of ``model`` from the user's ``prior``.

    Parameters
    ----------
    model : MultilevelModel
    prior : None, a :class:`teachlmm.gibbs.Prior` (or dict of its keywords), or a dict
        ``{term name: Prior, ..., "Residual": Prior}``.

        * One Prior: its G part (nu0, S0 or A) for every term, its beta and sigma2
          parts (tau2; a0, b0 or sigma_max) for those.
        * A dict keyed by the terms' VarCorr names (``model.names``, e.g.
          ``"cask:batch"``, ``"batch"``): each term's G prior; terms left out get
          the default. The key ``"Residual"`` holds tau2 and a0, b0 or sigma_max.

        Defaults as for one factor (:class:`teachlmm.gibbs.Prior`), per term:
        Huang-Wand on each G_k with A_k = sd(y) / rms(z_k), Jeffreys on sigma2, beta flat.

    Raises
    ------
    TeachLMMError
        An unknown key, a G hyperparameter under "Residual", a sigma2/beta one under a
        term, or sizes that do not fit the term.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> p = resolve_prior(m, {"batch": tl.gibbs.Prior(nu0=2, S0=[[2]]), "Residual": tl.gibbs.Prior(a0=1, b0=1)})
    >>> print(p.describe())      # doctest: +NORMALIZE_WHITESPACE
    beta flat; G[cask:batch] ~ Huang-Wand(nu = 2, A = [3.238]); G[batch] ~ InvWishart(nu0 = 2, S0 = [[2]]);
    sigma2 ~ InvGamma(a0 = 1, b0 = 1)
    """
    if isinstance(prior, MultilevelPrior):
        return prior
    if not isinstance(model, MultilevelModel):
        raise TeachLMMError("resolve_prior needs a teachlmm.multilevel.MultilevelModel")
    names = model.names
    if isinstance(prior, dict) and prior and set(prior) <= set(names) | {RESIDUAL}:
        per_term = {name: _as_prior(prior.get(name), f"term {name!r}") for name in names}
        residual = _as_prior(prior.get(RESIDUAL), "Residual")
        for name in names:
            if name in prior:
                given = [k for k in ("a0", "b0", "sigma_max", "tau2") if getattr(per_term[name], k) is not None]
                if given:
                    raise TeachLMMError(f"prior for term {name!r} sets {', '.join(given)}, which belong to "
                                        f"sigma2 and beta: put them under the key {RESIDUAL!r}")
        if RESIDUAL in prior:
            given = [k for k in ("nu0", "S0", "A") if getattr(residual, k) is not None]
            if given:
                raise TeachLMMError(f"prior {RESIDUAL!r} sets {', '.join(given)}, which belong to a term's G: "
                                    f"put them under the term's name ({', '.join(map(repr, names))})")
    elif isinstance(prior, dict) and any(k in names or k == RESIDUAL or isinstance(v, (Prior, dict))
                                         for k, v in prior.items()):     # a prior per term, some key unknown
        unknown = sorted(set(prior) - set(names) - {RESIDUAL})
        raise TeachLMMError(f"unknown prior key(s) {', '.join(map(repr, unknown))}; the keys are the terms' "
                            f"names {', '.join(map(repr, names))} and {RESIDUAL!r}")
    else:
        one = _as_prior(prior, "every term")
        per_term, residual = {name: one for name in names}, one
    y_var = float(np.var(model.y, ddof=1))
    terms = tuple(_term_prior(per_term[t.name], t, y_var) for t in model.terms)
    tau2 = np.inf if residual.tau2 is None else residual.tau2
    tau2_arr = np.asarray(tau2, float)
    if tau2_arr.ndim == 1 and tau2_arr.shape != (model.p,):
        raise TeachLMMError(f"prior tau2 has {tau2_arr.size} entries but the model has p = {model.p} fixed "
                            f"effects ({', '.join(model.fixef_names)}): give one number or {model.p}")
    if residual.sigma_max is not None:
        return MultilevelPrior(terms, tau2, 0.0, 0.0, residual.sigma_max)
    if residual.a0 is None and residual.b0 is None:
        return MultilevelPrior(terms, tau2, 0.0, 0.0, None)                  # Jeffreys
    a0 = 0.5 if residual.a0 is None else residual.a0                          # the one-factor defaults
    b0 = y_var / 2 if residual.b0 is None else residual.b0
    return MultilevelPrior(terms, tau2, a0, b0, None)


# ----------------------------------------------------------------------------
# the data's cross-products, computed once
# ----------------------------------------------------------------------------

class CrossProducts:
    """What every sweep needs from the data, computed once (no n x n matrix).

    Attributes
    ----------
    grams : list of (J_k, q_k, q_k)   Z_kj'Z_kj per level of each term.
    codes, Zcols : per term, the level of every row and its Z columns (n, q_k).
    B0 : sparse (J_1 q_1, M)         Z_1'W with W = [Z_2 .. Z_K, X, y], M = m + p + 1 columns.
    C0 : dense (M, M)                W'W.
    XtX : (p, p).   m : sum_{k>1} J_k q_k.
    pairs : for models with q_k = 1 throughout, the nonzeros of B0 as (row, col, value) and, per row,
        every pair of its nonzeros, so that B'DB = sum_i d_i B0_i'B0_i is one ``bincount`` (no sparse
        matrix objects in the sweep; see :func:`draw_joint`).
    """

    def __init__(self, model):
        self.model = model
        terms = model.terms
        self.n, self.p = model.n, model.p
        self.qs, self.Js = [t.q for t in terms], [t.J for t in terms]
        self.grams = [t.gram_blocks() for t in terms]
        self.codes, self.Zcols = [t.codes for t in terms], [t.Z for t in terms]
        Zs = [t.sparse() for t in terms]
        self.m = sum(J * q for J, q in zip(self.Js[1:], self.qs[1:]))
        if (self.m + self.p + 1) ** 2 * 8 > MAX_SCHUR_BYTES:
            raise DesignError(f"the terms after {terms[0].name!r} have {self.m} random effects together; the joint "
                              f"draw's dense Schur complement would need {(self.m + self.p + 1) ** 2 * 8 / 1e9:.1f} "
                              "GB. With two crossed factors of many thousands of levels each, a sparse Cholesky is "
                              "needed (not in teachlmm)")
        W0 = sp.hstack(Zs[1:] + [sp.csr_matrix(np.column_stack([model.X, model.y]))], format="csc")
        self.B0 = (Zs[0].T @ W0).tocsr()
        self.B0.sort_indices()
        self.C0 = (W0.T @ W0).toarray()
        self.M = self.m + self.p + 1
        self.XtX = model.X.T @ model.X
        self.y, self.X = model.y, model.X
        self.scalar = all(q == 1 for q in self.qs)
        if self.scalar:
            self._pair_lists()

    def _pair_lists(self):
        """Nonzeros of B0 (rows, cols, vals) and all pairs (a, b) of nonzeros sharing a row, for E'E."""
        B = self.B0.tocoo()
        self.rows, self.cols, self.vals = B.row, B.col, B.data
        counts = np.diff(self.B0.indptr)
        starts = self.B0.indptr[:-1]
        rows_of_pairs = np.repeat(np.arange(counts.size), counts ** 2)
        offset = np.arange(rows_of_pairs.size) - np.repeat(np.cumsum(counts ** 2) - counts ** 2, counts ** 2)
        c = counts[rows_of_pairs]
        i = starts[rows_of_pairs] + offset // c                   # first nonzero of the pair (index into vals)
        j = starts[rows_of_pairs] + offset % c                    # second
        self.pair_row, self.pair_i, self.pair_j = rows_of_pairs, i, j
        self.pair_flat = self.cols[i] * self.M + self.cols[j]     # where B_ia B_ib lands in the M x M matrix
        self.pair_prod = self.vals[i] * self.vals[j]

    def residual(self, beta, bs):
        """r = y - X beta - sum_k Z_k b_k for one chain (an n-vector): row i takes z_ki'b_k,level(i)."""
        r = self.y - self.X @ beta
        for codes, Z, b in zip(self.codes, self.Zcols, bs):
            r -= (Z * b[codes]).sum(1)
        return r

    def Zt(self, k, r):
        """Z_k'r per level: (J_k, q_k), one bincount per column."""
        Z, codes, J = self.Zcols[k], self.codes[k], self.Js[k]
        return np.stack([np.bincount(codes, Z[:, a] * r, minlength=J) for a in range(Z.shape[1])], axis=1)


# ----------------------------------------------------------------------------
# block 1: (beta, b_1..b_K) given (G, sigma2)
# ----------------------------------------------------------------------------

def relative_factors(Gs, sigma2):
    """T_k with T_k T_k' = G_k / sigma2 (lower Cholesky), for one chain: lme4's relative covariance factor."""
    return [np.linalg.cholesky(G / sigma2) for G in Gs]


def draw_joint(xp, Ts, sigma2, inv_tau2, z):
    r"""One draw of (beta, b_1, ..., b_K) from its Gaussian full conditional (one chain).

    Write b_k = T_k u_k per level (G_k = sigma2 T_k T_k') and x = (u_1; u_r), u_r = (u_2..u_K, beta).
    Given (G, sigma2), x ~ N(mean, sigma2 P^-1) with the penalised normal equations' matrix::

        P = [ A_11   B_r ]     A_11 = blockdiag_j (T_1'Z_1j'Z_1j T_1 + I) = L_1 L_1'   (per level)
            [ B_r'   C_r ]     B = Lambda_1'Z_1'W Lambda_W,  C = Lambda_W'W'W Lambda_W
                                                         (+ I on u_r, + sigma2/tau2 on beta)

    with W = [Z_2..Z_K, X, y] (y's column carries the right-hand side). Then P = LL' with
    L = [[L_1, 0], [E_r', L_s]], E = L_1^-1 B, and L_s L_s' = S, the Schur complement
    C_r - E_r'E_r. Factoring S with y appended, its last row is c = L_s^-1 (r_r - E_r' L_1^-1 r_1).
    A draw solves L'x = (forward-solved right-hand side) + sigma z::

        u_r = L_s'^-1 (c + sigma z_r)                                 (the Schur part first)
        u_1j = L_1j'^-1 (E_j,y - E_j,r u_r + sigma z_1j)              (then each level given it)

    Parameters
    ----------
    xp : CrossProducts.   Ts : the T_k.   sigma2 : float.   inv_tau2 : 0 or (p,) 1/tau2.
    z : (J_1 q_1 + m + p,) standard normals (the first J_1 q_1 for u_1).

    Returns
    -------
    beta (p,), list of b_k (J_k, q_k).
    """
    J1, q1, m, p, M = xp.Js[0], xp.qs[0], xp.m, xp.p, xp.M
    T1 = Ts[0]
    A11 = np.einsum("ba,jbc,cd->jad", T1, xp.grams[0], T1) + np.eye(q1)       # T_1'Z_1j'Z_1j T_1 + I
    L1inv = np.linalg.inv(np.linalg.cholesky(A11))                           # L_1j^-1, (J_1, q1, q1)
    if xp.scalar:       # every q_k = 1: Lambda's are diagonal, E = diag(e1) B0 diag(dW), E'E one bincount
        e1 = T1[0, 0] * L1inv[:, 0, 0]                                       # L_1j^-1 T_1 per level
        dW = np.concatenate([np.repeat(T[0, 0], J) for T, J in zip(Ts[1:], xp.Js[1:])] + [np.ones(p + 1)])
        BDB = np.bincount(xp.pair_flat, xp.pair_prod * e1[xp.pair_row] ** 2,
                          minlength=M * M).reshape(M, M)                     # B0'D B0, D = diag(e1^2)
        S = dW[:, None] * (xp.C0 - BDB) * dW[None, :]                        # W'W - E'E, scaled by Lambda_W
        E_vals = xp.vals * e1[xp.rows] * dW[xp.cols]
        E_times = lambda x: np.bincount(xp.rows, E_vals * x[xp.cols], minlength=J1)   # noqa: E731  (E x)
    else:
        LamW = sp.block_diag([_kron_eye(J, T) for J, T in zip(xp.Js[1:], Ts[1:])] + [sp.identity(p + 1)],
                             format="csr")
        E = sp.csr_matrix(_block_diag_sparse(L1inv) @ (_kron_eye(J1, T1).T @ xp.B0 @ LamW))
        S = np.asarray(LamW.T @ (LamW.T @ xp.C0).T) - (E.T @ E).toarray()   # Schur complement, y appended
        E_times = lambda x: E @ x                                            # noqa: E731
    S[np.arange(m), np.arange(m)] += 1.0                                     # + I (the u_r prior)
    S[np.arange(m, m + p), np.arange(m, m + p)] += sigma2 * inv_tau2         # + sigma2 / tau2 (beta's prior)
    L = scipy.linalg.cholesky(S, lower=True, check_finite=False)
    sigma = math.sqrt(sigma2)
    n1 = J1 * q1
    u_r = scipy.linalg.solve_triangular(L[:-1, :-1], L[-1, :-1] + sigma * z[n1:], lower=True, trans="T",
                                        check_finite=False)                 # u_r = L_s'^-1 (c + sigma z_r)
    w1 = -E_times(np.append(u_r, -1.0)) + sigma * z[:n1]                   # E_y - E_r u_r + sigma z_1
    u1 = np.einsum("jba,jb->ja", L1inv, w1.reshape(J1, q1))                  # L_1j'^-1 w_1j
    us, start = [u1], 0
    for J, q in zip(xp.Js[1:], xp.qs[1:]):
        us.append(u_r[start:start + J * q].reshape(J, q))
        start += J * q
    bs = [u @ T.T for u, T in zip(us, Ts)]                                   # b_kj = T_k u_kj
    return u_r[m:].copy(), bs


def draw_factorwise(xp, Ts, sigma2, inv_tau2, beta, bs, z):
    r"""The textbook alternative: beta given the b's, then each b_k given beta and the other b_l (one chain).

    ::

        beta | b      ~ N(P^-1 X'r_0, sigma2 P^-1),    P = X'X + sigma2/tau2 I,  r_0 = y - sum_k Z_k b_k
        u_kj | rest   ~ N(A_kj^-1 T_k'Z_kj'r_kj, sigma2 A_kj^-1),  A_kj = T_k'Z_kj'Z_kj T_k + I,
                        r_k = y - X beta - sum_{l != k} Z_l b_l,   b_kj = T_k u_kj

    Each conditional is exact, so the chain has the right posterior; it only mixes
    more slowly for crossed factors (module docstring). ``z`` as for :func:`draw_joint`
    but ordered (beta's p, then each term's J_k q_k).
    """
    p, sigma = xp.p, math.sqrt(sigma2)
    fitted = [(Z * b[codes]).sum(1) for codes, Z, b in zip(xp.codes, xp.Zcols, bs)]
    P = xp.XtX + np.diag(np.broadcast_to(sigma2 * inv_tau2, (p,)))
    R = np.linalg.cholesky(P)
    rhs = xp.X.T @ (xp.y - sum(fitted))
    mean_w = scipy.linalg.solve_triangular(R, rhs, lower=True)
    beta = scipy.linalg.solve_triangular(R, mean_w + sigma * z[:p], lower=True, trans="T")  # R'^-1(R^-1X'r + sigma z)
    r_fixed = xp.y - xp.X @ beta
    new, start = list(bs), p
    for k, (T, gram) in enumerate(zip(Ts, xp.grams)):
        J, q = gram.shape[0], gram.shape[1]
        r = r_fixed - (sum(fitted) - fitted[k])                              # r_k
        Ztr = xp.Zt(k, r) @ T                                                # T_k'Z_kj'r_kj, per level (rows)
        A = np.einsum("ba,jbc,cd->jad", T, gram, T) + np.eye(q)
        Linv = np.linalg.inv(np.linalg.cholesky(A))
        w = np.einsum("jab,jb->ja", Linv, Ztr) + sigma * z[start:start + J * q].reshape(J, q)
        u = np.einsum("jba,jb->ja", Linv, w)                                 # L'^-1 (L^-1 T'Z'r + sigma z)
        new[k] = u @ T.T
        fitted[k] = (xp.Zcols[k] * new[k][xp.codes[k]]).sum(1)
        start += J * q
    return beta, new


# ----------------------------------------------------------------------------
# block 2: G_k given b_k; block 3: sigma2 given the rest (batched over chains)
# ----------------------------------------------------------------------------

def bartlett_inv_wishart(S, chi2, z):
    r"""G ~ InvWishart(df, S) from its Bartlett noise, batched: (C, q, q).

    With S = C C' and the Bartlett factor A (lower; A_ii = sqrt(chi2(df - i)),
    i = 0..q-1; A_ij = z_ij ~ N(0, 1) below), A A' ~ Wishart(df, I), so
    W = C^-T A A' C^-1 ~ Wishart(df, S^-1) and G = W^-1 = (C A^-T)(C A^-T)'.
    """
    q = S.shape[-1]
    A = np.tril(z, -1)
    A[..., np.arange(q), np.arange(q)] = np.sqrt(chi2)
    M = np.linalg.cholesky(S) @ np.linalg.inv(A).swapaxes(-1, -2)           # C A^-T
    return M @ M.swapaxes(-1, -2)


def _draw_G(b, G_now, tp, rngs):
    C, J, q = b.shape
    scatter = np.einsum("cja,cjb->cab", b, b)                                # sum_j b_j b_j'
    if tp.is_huang_wand:
        shape = (NU + q) / 2.0
        rate = NU * np.diagonal(np.linalg.inv(G_now), axis1=-2, axis2=-1) + 1.0 / tp.A ** 2
        gam = np.stack([rng.standard_gamma(shape, q) for rng in rngs])
        a = rate / gam                                                       # a_i ~ InvGamma(shape, rate_i)
        S0 = (2.0 * NU / a)[..., None] * np.eye(q)                           # 2 nu diag(1/a)
    else:
        S0 = np.broadcast_to(tp.S0, (C, q, q))
    df = tp.nu0 + J
    chi2 = np.stack([rng.chisquare(df - np.arange(q)) for rng in rngs])
    z = np.stack([rng.standard_normal((q, q)) for rng in rngs])
    return bartlett_inv_wishart(S0 + scatter, chi2, z)


def draw_G(b, G_now, term_prior, rngs):
    r"""G_k | b_k for every chain: b (C, J, q) -> (C, q, q).

    Inverse-Wishart prior: ``G | b ~ InvWishart(nu0 + J, S0 + sum_j b_j b_j')``.
    Huang-Wand prior (:mod:`teachlmm.huang_wand`), its auxiliary a drawn afresh from the current G::

        a_i | G  ~ InvGamma((nu + q)/2, nu (G^-1)_ii + 1/A_i^2)
        G | a, b ~ InvWishart(nu + q - 1 + J, 2 nu diag(1/a) + sum_j b_j b_j')

    ``rngs``: one generator per chain.
    """
    return _draw_G(b, G_now, term_prior, rngs)


def draw_sigma2(ssr, n, prior, rngs):
    r"""sigma2 | beta, b for every chain (ssr (C,)).

    Inverse gamma or Jeffreys: ``sigma2 ~ InvGamma(a0 + n/2, b0 + SSR/2)`` = rate / Gamma(shape, 1).
    Uniform(0, sigma_max) on sigma: InvGamma((n - 1)/2, SSR/2) truncated to sigma < sigma_max, drawn
    exactly: the precision x = 1/sigma2 ~ Gamma(shape, rate) on x > x0 = 1/sigma_max^2, by
    x = Q^-1(U Q(shape, rate x0)) / rate, Q the regularised upper incomplete gamma, U ~ U(0, 1).
    """
    if prior.sigma_max is None:
        shape, rate = prior.a0 + n / 2.0, prior.b0 + ssr / 2.0
        return rate / np.array([rng.standard_gamma(shape) for rng in rngs])
    shape, rate = (n - 1) / 2.0, ssr / 2.0
    u = np.array([1.0 - rng.random() for rng in rngs])                       # U(0, 1]
    tail = scipy.special.gammaincc(shape, rate / prior.sigma_max ** 2)        # Q(shape, rate x0)
    x0 = 1.0 / prior.sigma_max ** 2
    x = np.where(tail > 0, scipy.special.gammainccinv(shape, u * tail) / rate, x0)   # tail 0: sigma at its bound
    return 1.0 / np.maximum(x, x0)


# ----------------------------------------------------------------------------
# state, init, step
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampler:
    """What does not change between sweeps: the model, its cross-products, the prior, the update, the RNGs."""

    model: Any
    xp: CrossProducts
    prior: MultilevelPrior
    update: str
    rngs: tuple

    @property
    def inv_tau2(self):
        return 1.0 / np.asarray(self.prior.tau2, float)


@dataclass(frozen=True)
class State:
    """One point of every chain: beta (C, p), b and G dicts keyed by term name ((C, J, q), (C, q, q)), sigma2 (C,)."""

    beta: np.ndarray
    b: dict
    G: dict
    sigma2: np.ndarray
    sampler: Sampler

    def __repr__(self):
        Gs = ", ".join(f"{k}: {np.round(v[..., 0, 0], 4).tolist()}" for k, v in self.G.items())
        return (f"State(chains={self.sigma2.size}, sigma2={np.round(self.sigma2, 4).tolist()}, G diag[0] {{{Gs}}}, "
                f"update={self.sampler.update!r})")


def _check_update(update):
    if update not in UPDATES:
        raise TeachLMMError(f"update must be one of {', '.join(map(repr, UPDATES))}, got {update!r}")
    return update


def _check_model(model):
    if not isinstance(model, MultilevelModel):
        raise TeachLMMError("the Gibbs sampler for several grouping factors needs a "
                            "teachlmm.multilevel.MultilevelModel, e.g. MultilevelModel(formula, data); "
                            f"got {type(model).__name__}")
    return model


def _start_values(model, rng, G, sigma2):
    """Dispersed start: sigma2 and every G_k at var(y) times a random factor (drawn first), b = 0, beta OLS."""
    v = float(np.var(model.y, ddof=1))
    s = np.exp(rng.uniform(-1, 1, 1 + len(model.terms)))
    s2 = 0.5 * v * s[0] if sigma2 is None else sigma2
    Gs = {}
    for k, t in enumerate(model.terms):
        ms = np.mean(t.Z ** 2, axis=0)
        given = None if G is None else G.get(t.name)
        Gs[t.name] = np.diag(0.3 * v * s[k + 1] / np.where(ms > 0, ms, 1.0)) if given is None else given
    beta = np.linalg.lstsq(model.X, model.y, rcond=None)[0]
    return beta, {t.name: np.zeros((t.J, t.q)) for t in model.terms}, Gs, s2


def _check_start(model, G, sigma2):
    if G is not None:
        if not isinstance(G, dict) or not set(G) <= set(model.names):
            raise TeachLMMError(f"G must be a dict keyed by term names ({', '.join(map(repr, model.names))}) of "
                                "positive definite q x q matrices")
        G = {k: np.atleast_2d(np.asarray(v, float)) for k, v in G.items()}
        for t in model.terms:
            if t.name in G:
                g = G[t.name]
                if g.shape != (t.q, t.q) or not np.allclose(g, g.T) or np.linalg.eigvalsh(g).min() <= 0:
                    raise TeachLMMError(f"start value G[{t.name!r}] must be a positive definite {t.q} x {t.q} "
                                        f"matrix, got {g.tolist()}")
    if sigma2 is not None:
        sigma2 = validators.positive_number(sigma2, "sigma2")
    return G, sigma2


def init(model, seed=None, prior=None, chains=1, update="joint", G=None, sigma2=None):
    """The start of ``chains`` chains: dispersed (G, sigma2), b = 0, beta by least squares.

    Parameters
    ----------
    model : :class:`~teachlmm.multilevel.MultilevelModel`
    seed : int, list of ints, SeedSequence or Generator (:mod:`teachlmm.validators`).
    prior : see :func:`resolve_prior`.
    chains : int >= 1.
    update : "joint" (default) or "factorwise": how block 1 draws (beta, b).
    G : dict term name -> q x q start value, optional (every chain).   sigma2 : float, optional.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("diameter ~ 1 + (1 | plate) + (1 | sample)",
    ...                     tl.read_csv("tests/reference/data/penicillin.csv"))
    >>> s = step(init(m, seed=1, chains=2))
    >>> sorted(s.G), s.b["plate"].shape, s.beta.shape
    (['plate', 'sample'], (2, 24, 1), (2, 1))
    """
    model = _check_model(model)
    chains = validators.positive_int(chains, "chains")
    update = _check_update(update)
    G, sigma2 = _check_start(model, G, sigma2)
    resolved = resolve_prior(model, prior)
    rngs = tuple(np.random.default_rng(child) for child in validators.seed_sequence(seed).spawn(chains))
    starts = [_start_values(model, rng, G, sigma2) for rng in rngs]
    sampler = Sampler(model, CrossProducts(model), resolved, update, rngs)
    names = model.names
    return State(beta=np.stack([s[0] for s in starts]),
                 b={k: np.stack([s[1][k] for s in starts]) for k in names},
                 G={k: np.stack([s[2][k] for s in starts]) for k in names},
                 sigma2=np.array([s[3] for s in starts], float), sampler=sampler)


def step(state):
    """One sweep of every chain: (beta, b) | G, sigma2 (joint or factorwise); G_k | b_k per term; sigma2 | rest.

    Returns a new :class:`State` (the generators in ``state.sampler`` advance).

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> s = init(m, seed=3)
    >>> for _ in range(200):
    ...     s = step(s)
    >>> bool(55 < s.beta[0, 0] < 65)
    True
    """
    smp = state.sampler
    xp, names, n_z = smp.xp, smp.model.names, smp.xp.p + sum(J * q for J, q in zip(smp.xp.Js, smp.xp.qs))
    C = state.sigma2.size
    beta, b = np.empty_like(state.beta), {k: np.empty_like(v) for k, v in state.b.items()}
    ssr = np.empty(C)
    for c, rng in enumerate(smp.rngs):                       # a loop over chains (a handful), not levels
        Ts = relative_factors([state.G[k][c] for k in names], state.sigma2[c])
        z = rng.standard_normal(n_z)
        if smp.update == "joint":
            bc, bsc = draw_joint(xp, Ts, state.sigma2[c], smp.inv_tau2, z)
        else:
            bc, bsc = draw_factorwise(xp, Ts, state.sigma2[c], smp.inv_tau2, state.beta[c],
                                      [state.b[k][c] for k in names], z)
        beta[c] = bc
        for k, v in zip(names, bsc):
            b[k][c] = v
        r = xp.residual(bc, bsc)
        ssr[c] = r @ r                                        # SSR = ||y - X beta - sum_k Z_k b_k||^2
    G = {k: draw_G(b[k], state.G[k], tp, smp.rngs) for k, tp in zip(names, smp.prior.terms)}
    sigma2 = draw_sigma2(ssr, xp.n, smp.prior, smp.rngs)
    return State(beta, b, G, sigma2, smp)


# ----------------------------------------------------------------------------
# sample and the posterior
# ----------------------------------------------------------------------------

def sample(model, draws=4000, warmup=1000, chains=4, seed=None, prior=None, update="joint", thin=1,
           keep_b=False, check=True):
    """Draw from the posterior of a model with several grouping factors.

    Parameters
    ----------
    model : :class:`~teachlmm.multilevel.MultilevelModel`
    draws : int >= 1, kept draws per chain.   warmup : int >= 0 sweeps discarded first.
    chains : int >= 1.   thin : int >= 1 (keep every thin-th sweep).
    seed : reproducible seed (:mod:`teachlmm.validators`); chain c is the same whatever ``chains``.
    prior : see :func:`resolve_prior` (one Prior, or a dict keyed by term names and "Residual").
    update : "joint" (default: (beta, b_1..b_K) in one Gaussian draw) or "factorwise"
        (beta, then each b_k given the others; mixes worse for crossed factors -- for teaching
        and measurement).
    keep_b : keep the random effects' draws (memory chains x draws x sum_k J_k q_k).
    check : warn once (ConvergenceWarning) when R-hat > 1.01 or bulk/tail ESS < 400 for beta, G or sigma2.

    Returns
    -------
    MultilevelPosterior

    Examples
    --------
    >>> import teachlmm as tl, warnings
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("diameter ~ 1 + (1 | plate) + (1 | sample)",
    ...                     tl.read_csv("tests/reference/data/penicillin.csv"))
    >>> post = sample(m, draws=500, warmup=200, chains=2, seed=1, check=False)
    >>> post.names()
    ['(Intercept)', 'G[plate]', 'G[sample]', 'sigma2']
    >>> bool(22 < post.get("(Intercept)").mean() < 24.5)
    True
    """
    draws = validators.positive_int(draws, "draws")
    warmup = validators.nonnegative_int(warmup, "warmup")
    thin = validators.positive_int(thin, "thin")
    state = init(model, seed=seed, prior=prior, chains=chains, update=update)
    names, C = model.names, state.sigma2.size
    out = dict(beta=np.empty((C, draws, model.p)), sigma2=np.empty((C, draws)),
               G={t.name: np.empty((C, draws, t.q, t.q)) for t in model.terms})
    if keep_b:
        out["b"] = {t.name: np.empty((C, draws, t.J, t.q)) for t in model.terms}
    t0 = time.perf_counter()
    for _ in range(warmup):
        state = step(state)
    for d in range(draws):
        for _ in range(thin):
            state = step(state)
        out["beta"][:, d], out["sigma2"][:, d] = state.beta, state.sigma2
        for k in names:
            out["G"][k][:, d] = state.G[k]
            if keep_b:
                out["b"][k][:, d] = state.b[k]
    post = MultilevelPosterior(model, out, state.sampler.prior, update=update, warmup=warmup, thin=thin,
                               seconds=time.perf_counter() - t0)
    if check:
        convergence.check(post, warn=True, stacklevel=_stacklevel_outside_package())
    return post


def _stacklevel_outside_package():
    """The ``stacklevel`` at which :func:`sample`'s ConvergenceWarning names the user's line.

    Counted from ``warnings.warn`` in :func:`teachlmm.convergence.check` (1) and :func:`sample` (2)
    outwards, past every caller inside teachlmm (``tl.gibbs.sample`` dispatches here), so the warning
    points at the line that called teachlmm, whether it called this module or :mod:`teachlmm.gibbs`.
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 3                   # sample's caller is level 3
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


class MultilevelPosterior:
    """Draws from the posterior of a model with several grouping factors, with summaries and diagnostics.

    Attributes
    ----------
    draws : dict: ``beta`` (chains, draws, p), ``sigma2`` (chains, draws), ``G`` a dict term name ->
        (chains, draws, q, q), and with ``keep_b`` ``b`` a dict term name -> (chains, draws, J, q).
    prior : the resolved :class:`MultilevelPrior`.  update, warmup, thin, seconds : how it was run.
    chains, n_draws : the shape.

    Notes
    -----
    Names for :meth:`get`: a fixed effect's name or ``"beta[k]"``; ``"G[name]"`` for a term with
    q = 1, ``"G[name][i,j]"`` (any q); ``"sd[name]"`` (q = 1); ``"sigma2"``, ``"sigma"``.
    """

    def __init__(self, model, draws, prior, update="joint", warmup=0, thin=1, seconds=None):
        self.model, self.draws, self.prior = model, draws, prior
        self.update, self.warmup, self.thin, self.seconds = update, warmup, thin, seconds
        self.fixef_names = list(model.fixef_names)
        self.chains, self.n_draws = draws["sigma2"].shape

    def _G_names(self):
        out = []
        for t in self.model.terms:
            if t.q == 1:
                out.append((f"G[{t.name}]", f"Var {t.name} {t.columns[0]}"))
            else:
                for i in range(t.q):
                    for j in range(i + 1):
                        label = (f"Var {t.name} {t.columns[i]}" if i == j
                                 else f"Cov {t.name} {t.columns[j]},{t.columns[i]}")
                        out.append((f"G[{t.name}][{i},{j}]", label))
        return out

    def names(self):
        """The parameters' names: fixed effects, every distinct entry of every G_k, sigma2."""
        return self.fixef_names + [n for n, _ in self._G_names()] + ["sigma2"]

    checked_names = names        # what the convergence check looks at (teachlmm.convergence)

    def get(self, name):
        """Draws of one scalar, shape (chains, draws).

        Examples
        --------
        >>> import teachlmm as tl
        >>> from teachlmm.multilevel import MultilevelModel
        >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
        >>> post = sample(m, draws=100, warmup=50, chains=2, seed=1, check=False)
        >>> post.get("G[cask:batch]").shape, post.get("sd[batch]").shape
        ((2, 100), (2, 100))
        """
        d = self.draws
        if name in self.fixef_names:
            return d["beta"][:, :, self.fixef_names.index(name)]
        if name in ("sigma2", "sigma"):
            return d["sigma2"] if name == "sigma2" else np.sqrt(d["sigma2"])
        if name.startswith("beta[") and name.endswith("]") and name[5:-1].isdigit() and int(name[5:-1]) < self.model.p:
            return d["beta"][:, :, int(name[5:-1])]
        for head in ("G[", "sd["):
            if name.startswith(head) and "]" in name:
                term, rest = name[len(head):].split("]", 1)
                if term in d["G"]:
                    G = d["G"][term]
                    q = G.shape[-1]
                    if rest == "" and q == 1:
                        return G[:, :, 0, 0] if head == "G[" else np.sqrt(G[:, :, 0, 0])
                    if head == "G[" and rest.startswith("[") and rest.endswith("]"):
                        try:
                            i, j = (int(v) for v in rest[1:-1].split(","))
                        except ValueError:
                            break
                        if 0 <= i < q and 0 <= j < q:
                            return G[:, :, i, j]
        raise TeachLMMError(f"unknown parameter {name!r}; known: {', '.join(self.names())}, 'sigma', "
                            "'beta[k]', 'sd[term]' (q = 1), 'G[term][i,j]'")

    def mcse(self, name):
        """Monte Carlo standard error of the posterior mean of ``name`` (:func:`teachlmm.diagnostics.mcse_mean`)."""
        return diagnostics.mcse_mean(self.get(name))

    def table(self):
        """{name: dict(mean, sd, q025, q50, q975, rhat, ess_bulk, ess_tail, mcse)} for every parameter."""
        rows = _draws_rows({name: self.get(name) for name in self.names()})      # all at once: one pass
        return {name: dict(row, mcse=self.mcse(name)) for name, row in rows.items()}

    def summary(self):
        """The posterior summary (a string): mean, sd, quantiles, R-hat, bulk and tail ESS per parameter.

        Examples
        --------
        >>> import teachlmm as tl, warnings
        >>> from teachlmm.multilevel import MultilevelModel
        >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
        >>> post = sample(m, draws=200, warmup=100, chains=2, seed=1, check=False)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     print(post.summary().splitlines()[0])
        Bayesian linear mixed model, Gibbs sampler (joint update): 2 chains x 200 draws (warm-up 100, thin 1)
        """
        rows = self.table()
        labels = [(n, n) for n in self.fixef_names] + self._G_names() + [("sigma2", "Var Residual")]
        cells = _summary_cells(rows, labels)
        m = self.model
        lines = [f"Bayesian linear mixed model, Gibbs sampler ({self.update} update): {self.chains} chains x "
                 f"{self.n_draws} draws (warm-up {self.warmup}, thin {self.thin})",
                 f"Formula: {m.formula.text}",
                 f"Prior: {self.prior.describe()}",
                 f"Number of obs: {m.n}, groups: " + "; ".join(f"{t.name}, {t.J}" for t in m.terms),
                 "", format_table(cells, SUMMARY_HEADER)]
        message = convergence.check(self, warn=True)
        if message:
            lines += ["", "Warning: " + message]
        return "\n".join(lines)

    def __repr__(self):
        return (f"MultilevelPosterior({self.chains} chains x {self.n_draws} draws, update={self.update!r}, "
                f"terms {self.model.names})")
