"""The mixed-model equations with several grouping factors, and the profiled deviance.

Write each G_k = sigma2 T_k T_k' with T_k lower triangular (theta holds the
entries of the T_k, column by column, as lme4's theta), and
Lambda = blockdiag(I_{J_k} (x) T_k). With u = Lambda^-1 b ~ N(0, sigma2 I)
the penalised least-squares problem is::

    min over (u, beta)  ||y - X beta - Z Lambda u||^2 + ||u||^2 = r2(theta)

whose normal equations have the matrix::

        [ A      Lambda'Z'X ]          A = Lambda'Z'Z Lambda + I
        [ X'Z Lambda   X'X  ]

The profiled deviance (lme4's, Bates et al. 2015, eqs. 34 and 41)::

    ML:   log|A| + n (1 + log(2 pi r2 / n))
    REML: log|A| + log|R_X|^2 + (n - p) (1 + log(2 pi r2 / (n - p)))

with R_X'R_X = X'X - X'Z Lambda A^-1 Lambda'Z'X, and sigma2 = r2 / n (ML)
or r2 / (n - p) (REML).

The algebra (chosen by measurement; see ``tests/benchmarks/bench_insteval.py``)
-------------------------------------------------------------------------------
A has the structure of Z'Z: the block of term 1 (the term with most levels)
is block diagonal — one q_1 x q_1 block per level — while the other terms
couple to it through Z_1'Z_k (crossed) or sit inside its levels (nested).
We *eliminate term 1 level by level* and *factor the dense Schur complement*
of everything else::

    A_11 = blockdiag_j (T_1' Z_1j'Z_1j T_1 + I) = L_1 L_1'        (J_1 Cholesky factors of q_1 x q_1, batched)
    W    = [Z_2 Lambda_2 ... Z_K Lambda_K, X, y]                   (m + p + 1 columns, m = sum_{k>1} J_k q_k)
    B    = Lambda_1' Z_1' W                                        (sparse: level j's row touches only its partners)
    S    = W'W + [I_m 0; 0 0] - B' A_11^-1 B                       (dense, (m+p+1)^2)
    S    = L L'                                                    (one dense Cholesky)

The diagonal of L gives everything at once: log|A| = 2 sum log diag L_1 +
2 sum log diag L[:m], log|R_X|^2 = 2 sum log diag L[m:m+p], and r2 = L[-1, -1]^2
(appending y as the last column makes the last pivot the penalised residual).

Cost per evaluation: O(J_1 q_1^3) for the batched blocks, O(sum over levels
of term 1 of (partners per level)^2) for the sparse product B'A_11^-1 B, and
O((m+p)^3 / 3) for the dense Cholesky. It is exact for every design; it is
fast when the terms after the first have few levels together (InstEval:
m = 1,128 lecturers + 14 departments, a 1,145^2 Cholesky; Chem97: m = 131
LEAs). Nested designs keep the inner level's blocks inside the outer ones, so
their Schur complement is the outer factor's (block-diagonal) matrix plus
rank-p terms. Alternatives: a general sparse Cholesky with fill-reducing
ordering (CHOLMOD, as lme4; scipy has none, scikit-sparse would be a new
dependency), which wins when two crossed factors both have many thousands of
levels (the dense m^2 Schur complement then needs m^2 * 8 bytes: 800 MB at
m = 10,000); or EM-style block Gauss-Seidel, which needs no factorisation
but mixes slowly for crossed factors.

No n x n matrix is formed; the data enter only through Z_1j'Z_1j, B0 =
Z_1'[Z_2..Z_K, X, y] (sparse) and C0 = [Z_2..Z_K, X, y]'[...] (dense
(m+p+1)^2), computed once.
"""
import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .errors import DesignError

__all__ = ["Algebra", "theta_to_T", "T_to_theta", "n_theta", "MAX_SCHUR_BYTES"]

MAX_SCHUR_BYTES = 2e9          # the dense Schur complement's memory limit (m ~ 15,800 random effects)


def n_theta(q):
    """Number of free entries of a q x q lower-triangular T."""
    return q * (q + 1) // 2


def theta_to_T(theta, q):
    """Lower-triangular T from its entries listed column by column (lme4's theta order)."""
    T = np.zeros((q, q))
    rows, cols = np.triu_indices(q)          # (col, row) pairs of the lower triangle, column-major
    T[cols, rows] = theta
    return T


def T_to_theta(T):
    q = T.shape[0]
    rows, cols = np.triu_indices(q)
    return T[cols, rows].copy()


def lower_bounds(qs):
    """lme4's bounds on theta: 0 for the diagonal entries of each T_k, none off the diagonal."""
    out = []
    for q in qs:
        rows, cols = np.triu_indices(q)
        out += [0.0 if r == c else -np.inf for r, c in zip(rows, cols)]
    return np.array(out)


def _block_diag_sparse(blocks):
    """blockdiag of a (J, q, q) stack as a sparse matrix (BSR: one dense q x q block per level)."""
    J, q, _ = blocks.shape
    return sp.bsr_matrix((blocks, np.arange(J), np.arange(J + 1)), shape=(J * q, J * q)).tocsr()


def _kron_eye(J, T):
    """I_J (x) T as a sparse matrix."""
    return _block_diag_sparse(np.broadcast_to(T, (J,) + T.shape).copy())


class Algebra:
    """The cross-products of a :class:`~teachlmm.multilevel.MultilevelModel`, and the deviance at any theta.

    Examples
    --------
    >>> import teachlmm as tl
    >>> from teachlmm.multilevel import MultilevelModel
    >>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
    >>> alg = Algebra(m)
    >>> round(float(alg.deviance([3.52690181177055, 1.56346027270411], reml=True)), 6)   # lme4: 246.990746
    246.990746
    """

    def __init__(self, model):
        self.model = model
        terms = model.terms
        self.qs = [t.q for t in terms]
        self.Js = [t.J for t in terms]
        self.n, self.p = model.n, model.p
        first, rest = terms[0], terms[1:]
        m = sum(t.J * t.q for t in rest)
        if (m + self.p + 1) ** 2 * 8 > MAX_SCHUR_BYTES:
            raise DesignError(f"the terms after {first.name!r} have {m} random effects together; their dense Schur "
                              f"complement would need {(m + self.p + 1) ** 2 * 8 / 1e9:.1f} GB. teachlmm's algebra "
                              "eliminates only the largest factor: with two factors of many thousands of levels "
                              "each, use lme4 or mixedlm (sparse Cholesky)")
        self.gram1 = first.gram_blocks()                                           # Z_1j'Z_1j, (J_1, q_1, q_1)
        W0 = sp.hstack([t.sparse() for t in rest] + [sp.csr_matrix(np.column_stack([model.X, model.y]))],
                       format="csc")
        Z1 = first.sparse()
        self.B0 = (Z1.T @ W0).tocsr()                                              # Z_1'W, sparse
        self.C0 = (W0.T @ W0).toarray()                                            # W'W, dense
        self.m = sum(t.J * t.q for t in rest)
        self.theta_sizes = [n_theta(q) for q in self.qs]

    # -- theta --------------------------------------------------------------
    def Ts(self, theta):
        """The T_k of every term from theta."""
        out, i = [], 0
        for q, k in zip(self.qs, self.theta_sizes):
            out.append(theta_to_T(np.asarray(theta[i:i + k], float), q))
            i += k
        return out

    def start(self):
        """lme4's start: every T_k the identity."""
        return np.concatenate([T_to_theta(np.eye(q)) for q in self.qs])

    def lower(self):
        return lower_bounds(self.qs)

    # -- the factorisation --------------------------------------------------
    def factor(self, theta):
        """L_1 (J_1 blocks), the sparse B and the dense Cholesky factor L of the Schur complement S."""
        Ts = self.Ts(theta)
        T1 = Ts[0]
        A11 = np.einsum("ba,jbc,cd->jad", T1, self.gram1, T1) + np.eye(self.qs[0])    # T1'Z1j'Z1jT1 + I
        L1 = np.linalg.cholesky(A11)
        LamW = sp.block_diag([_kron_eye(J, T) for J, T in zip(self.Js[1:], Ts[1:])]
                             + [sp.identity(self.p + 1)], format="csr")
        B = (_kron_eye(self.Js[0], T1).T @ self.B0 @ LamW).tocsr()                    # Lambda_1'Z_1'W
        E = (_block_diag_sparse(np.linalg.inv(L1)) @ B).tocsr()                      # L_1^-1 B
        if all(q == 1 for q in self.qs[1:]):                                         # Lambda_W diagonal: scale
            d = LamW.diagonal()
            Cw = d[:, None] * self.C0 * d[None, :]
        else:
            Cw = np.asarray(LamW.T @ (LamW.T @ self.C0).T)                          # W'W with W scaled
        self._Cw = Cw
        S = Cw - (E.T @ E).toarray()
        S[np.arange(self.m), np.arange(self.m)] += 1.0
        L = scipy.linalg.cholesky(S, lower=True, check_finite=False)
        return Ts, L1, B, E, L

    def deviance(self, theta, reml=True):
        """lme4's profiled deviance (ML) or REML criterion at theta."""
        _, L1, _, _, L = self.factor(theta)
        return self._deviance(L1, L, reml)

    def _deviance(self, L1, L, reml):
        d = np.diag(L)
        m, p, n = self.m, self.p, self.n
        logdetA = 2 * np.log(np.diagonal(L1, axis1=1, axis2=2)).sum() + 2 * np.log(d[:m]).sum()
        r2 = d[-1] ** 2
        if reml:
            return logdetA + 2 * np.log(d[m:m + p]).sum() + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
        return logdetA + n * (1 + np.log(2 * np.pi * r2 / n))

    # -- the solution at theta ---------------------------------------------
    def solve(self, theta, reml=True):
        """Everything at theta: beta, sigma2, b per term, vcov(beta), condVar blocks per term, deviance.

        b_k = T_k u_k per level; u solves the penalised normal equations.
        condVar (lme4's, given beta_hat): sigma2 T_k [A^-1]_jj T_k' for level j
        of term k; only the needed diagonal blocks of A^-1 are formed:

        * terms 2..K: A^-1 restricted to them is S_rr^-1 (S_rr = L_rr L_rr',
          the Z-part of the Schur complement): blocks of Linv'Linv, Linv = L_rr^-1;
        * term 1: [A^-1]_jj = A_1j^-1 + F_j S_rr^-1 F_j' with F = A_11^-1 B_r,
          i.e. the rows of H = F Linv' summed in outer products per level.
        """
        Ts, L1, B, E, L = self.factor(theta)
        m, p = self.m, self.p
        n_eff = self.n - p if reml else self.n
        r2 = L[-1, -1] ** 2
        sigma2 = r2 / n_eff
        x = scipy.linalg.solve_triangular(L[:-1, :-1], L[-1, :-1], lower=True, trans="T")   # [u_rest; beta]
        u_rest, beta = x[:m], x[m:]
        A11inv = np.linalg.inv(np.einsum("jab,jcb->jac", L1, L1))                           # (L1 L1')^-1
        q1, J1 = self.qs[0], self.Js[0]
        rhs = (B[:, -1].toarray().ravel() - B[:, :-1] @ x).reshape(J1, q1)
        u1 = np.einsum("jab,jb->ja", A11inv, rhs)
        Lxx = L[m:m + p, m:m + p]
        Lxx_inv = scipy.linalg.solve_triangular(Lxx, np.eye(p), lower=True)
        vcov = sigma2 * Lxx_inv.T @ Lxx_inv
        # diagonal blocks of A^-1
        Linv = scipy.linalg.solve_triangular(L[:m, :m], np.eye(m), lower=True) if m else np.zeros((0, 0))
        F = _block_diag_sparse(A11inv) @ B[:, :m]
        H = np.asarray(F @ Linv.T) if m else np.zeros((J1 * q1, 0))
        Hj = H.reshape(J1, q1, m)
        Ainv_blocks = [A11inv + np.einsum("jam,jbm->jab", Hj, Hj)]
        start, us = 0, [u1]
        for q, J in zip(self.qs[1:], self.Js[1:]):
            cols = Linv[:, start:start + J * q].reshape(m, J, q)
            Ainv_blocks.append(np.einsum("mja,mjb->jab", cols, cols))
            us.append(u_rest[start:start + J * q].reshape(J, q))
            start += J * q
        if reml:                      # REML: Var(u | y) adds beta's uncertainty, P (R_X'R_X)^-1 P', P = A^-1 Lambda'Z'X
            P = self._solve_A(A11inv, B, L, B[:, m:m + p].toarray(), self._Cw[:m, m:m + p])
            Q = [Pk @ Lxx_inv.T for Pk in P]
            full_blocks = [V + np.einsum("jap,jbp->jab", Qk.reshape(J, q, p), Qk.reshape(J, q, p))
                           for V, Qk, J, q in zip(Ainv_blocks, Q, self.Js, self.qs)]
        else:
            full_blocks = Ainv_blocks
        bs = [np.einsum("ab,jb->ja", T, u) for T, u in zip(Ts, us)]
        condvar = [sigma2 * np.einsum("ab,jbc,dc->jad", T, V, T) for T, V in zip(Ts, Ainv_blocks)]
        postvar = [sigma2 * np.einsum("ab,jbc,dc->jad", T, V, T) for T, V in zip(Ts, full_blocks)]
        Gs = [sigma2 * T @ T.T for T in Ts]
        return dict(beta=beta, sigma2=sigma2, b=bs, condvar=condvar, postvar=postvar, vcov=vcov, Gs=Gs,
                    deviance=self._deviance(L1, L, reml))

    def _solve_A(self, A11inv, B, L, r1, r_rest):
        """A^-1 [r1; r_rest] by the same elimination, as a list of per-term blocks of rows.

        t = A_11^-1 r1;  v_rest = S_rr^-1 (r_rest - B_r' t);  v_1 = A_11^-1 (r1 - B_r v_rest).
        """
        m = self.m
        J1, q1 = self.Js[0], self.qs[0]
        blk = _block_diag_sparse(A11inv)
        t = blk @ r1
        s = r_rest - np.asarray(B[:, :m].T @ t)
        v_rest = scipy.linalg.cho_solve((L[:m, :m], True), s) if m else s
        v1 = blk @ (r1 - np.asarray(B[:, :m] @ v_rest))
        out, start = [v1], 0
        for q, J in zip(self.qs[1:], self.Js[1:]):
            out.append(v_rest[start:start + J * q])
            start += J * q
        return out

    def em_residual(self, theta, reml=True):
        """The EM fixed-point residual: for each term, mean_j (b_kj b_kj' + Var(b_kj | y)) - G_k.

        It is zero exactly at an interior stationary point of the (REML) likelihood
        (the EM update leaves G_k unchanged there), and unlike the deviance it is
        computed without cancellation, so it locates the optimum to about 1e-10.
        Returned as the lower-triangle entries, in theta's order.
        """
        sol = self.solve(theta, reml)
        out = []
        for b, V, G in zip(sol["b"], sol["postvar"], sol["Gs"]):
            R = (np.einsum("ja,jb->ab", b, b) + V.sum(axis=0)) / b.shape[0] - G
            out.append(T_to_theta(R))
        return np.concatenate(out)
