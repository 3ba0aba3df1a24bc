r"""The interweaving step of :mod:`teachlmm.interweave` for q <= 2, with its small algebra written out.

What :func:`teachlmm.interweave.interweave` computes with general matrix code
(``np.linalg`` on every q x q matrix, ``einsum`` on 4-index Hessians) costs
about 200 us for 4 chains on radon M3, nearly all of it numpy's per-call
overhead on tiny arrays. Here the same step is written with as few numpy calls
as possible, each on all chains at once:

* L = chol(G), M = L^-1 and u_j = M b_j entry by entry (arrays (chains, J));
* every cross-product of the regression given u (X'X, X'W, W'W, X'y, W'y,
  :func:`teachlmm.interweave.regression`) from ONE matrix product: the rows
  [u_l u_n (l <= n), u_l, 1] of each group times its statistics
  [Z'Z_km (k <= m), Z'X_k, Z'y_k, X'X, X'y], summed over groups, then one
  ``take`` that places the sums in the precision P and the vector c;
* the prior's gradient and Hessian in L's entries in closed form: for one
  2 x 2 block, with x = 1/L_11, y = 1/L_22, t = L_21 / L_11 (so
  G^-1 = [[x^2 + t^2 y^2, -t y^2], [-t y^2, y^2]]), every derivative of
  G^-1 is a sum of monomials x^i t^j y^k, and all of them come from one product
  of the monomials with a constant table (:func:`_monomial_table`); 1 x 1 blocks
  (q = 1 and ``||``) are separable and written directly;
* the Newton step, the Cholesky factor of the proposal's precision and the
  draw with ``np.linalg`` on the (chains, p + r, p + r) stack: the same calls,
  in the same order, on the same numbers as the textbook path.

The output equals the textbook path's to rounding (tests/test_interweave_fast.py
holds them equal to 1e-10 over many sweeps, every q served, ``||``, both priors),
and it consumes the same noise. A Newton step that leaves the positive
definite cone in some chain stops that chain by the textbook's own rule; the
rarer special cases (a singular G, or a singular P after a start at G = 0)
are handed to the textbook path itself, so the two agree there by construction.
"""
import numpy as np
import scipy.special

from .huang_wand import NU

__all__ = ["FastInterweave"]


def _monomial_table(terms):
    """The monomials x^i t^j y^k that the polynomials ``terms`` (each {(i, j, k): coefficient}) use, and their table.

    Returns (powers, table): powers (3, K) the exponents of (b, a, c) in x^i t^j y^k = b^j a^-(i+j) c^-k
    (x = 1/a, t = b/a, y = 1/c), and table (K, len(terms)) the coefficients: the polynomials at
    a point are ``monomials @ table`` (see :meth:`FastInterweave._monomials`).
    """
    keys = sorted({key for poly in terms for key in poly})
    table = np.zeros((len(keys), len(terms)))
    for col, poly in enumerate(terms):
        for (i, j, k), coefficient in poly.items():
            table[keys.index((i, j, k)), col] += coefficient
    powers = np.array([[j, -(i + j), -k] for i, j, k in keys], dtype=float).T
    return powers, table


# Derivatives of N = G^-1 = [[N11, N21], [N21, N22]] in theta = (a, b, c) = (L_11, L_21, L_22), as monomials
# x^i t^j y^k with x = 1/a, t = b/a, y = 1/c (each line checked by differentiating N11 = 1/a^2 + b^2/(a^2 c^2),
# N21 = -b/(a c^2), N22 = 1/c^2; the tests compare the results with interweave.PriorOnL):
_N = {"N11": {(2, 0, 0): 1.0, (0, 2, 2): 1.0}, "N21": {(0, 1, 2): -1.0}, "N22": {(0, 0, 2): 1.0}}
_GRAD_N = {                                                          # d N / d (a, b, c)
    "N11": [{(3, 0, 0): -2.0, (1, 2, 2): -2.0}, {(1, 1, 2): 2.0}, {(0, 2, 3): -2.0}],
    "N21": [{(1, 1, 2): 1.0}, {(1, 0, 2): -1.0}, {(0, 1, 3): 2.0}],
    "N22": [{}, {}, {(0, 0, 3): -2.0}]}
_HESS_N = {                                                          # d2 N / d(a, b, c)^2, row by row
    "N11": [[{(4, 0, 0): 6.0, (2, 2, 2): 6.0}, {(2, 1, 2): -4.0}, {(1, 2, 3): 4.0}],
            [{(2, 1, 2): -4.0}, {(2, 0, 2): 2.0}, {(1, 1, 3): -4.0}],
            [{(1, 2, 3): 4.0}, {(1, 1, 3): -4.0}, {(0, 2, 4): 6.0}]],
    "N21": [[{(2, 1, 2): -2.0}, {(2, 0, 2): 1.0}, {(1, 1, 3): -2.0}],
            [{(2, 0, 2): 1.0}, {}, {(1, 0, 3): 2.0}],
            [{(1, 1, 3): -2.0}, {(1, 0, 3): 2.0}, {(0, 1, 4): -6.0}]],
    "N22": [[{}, {}, {}], [{}, {}, {}], [{}, {}, {(0, 0, 4): 6.0}]]}


def _combine(weights):
    """The polynomial sum_N weights[N] * (derivative of N), for the gradient (3 columns) and Hessian (9)."""
    grad = [{} for _ in range(3)]
    hess = [{} for _ in range(9)]
    for name, w in weights.items():
        for i in range(3):
            for key, v in _GRAD_N[name][i].items():
                grad[i][key] = grad[i].get(key, 0.0) + w * v
            for j in range(3):
                for key, v in _HESS_N[name][i][j].items():
                    hess[3 * i + j][key] = hess[3 * i + j].get(key, 0.0) + w * v
    return grad + hess


def _accept(log_ratio, z):
    """The Metropolis-Hastings decision, as ``interweave.metropolis_hastings`` takes it: log U < log r, U = Phi(z)."""
    return np.log(scipy.special.ndtr(z)) < log_ratio


class FastInterweave:
    """``interweave.interweave`` for q = 1 or 2 (one 2 x 2 block, or 1 x 1 blocks), same inputs and output.

    Built by ``interweave.Interweaving(model, prior, fast=True)``, which passes
    the pieces of the prior and itself as ``textbook`` (the fallback for the
    rare inputs the written-out algebra does not cover).

    Parameters
    ----------
    stats : the model's ``GroupStats``.   blocks : the model's blocks of G.
    tau2 : beta's prior variance.   newton_steps : Newton steps of the proposal.
    blocks_prior : list of (block, nu_B, S_B) for the inverse-Wishart prior, or None.
    A : the Huang-Wand scales (q,), or None.
    textbook : callable (beta, b, G, sigma2, noise) -> (beta, b, G, accepted) with chains on axis 0.
    """

    def __init__(self, stats, blocks, tau2, newton_steps, blocks_prior, A, textbook):
        J, p, q = stats.XtZ.shape
        if q > 2:
            raise ValueError("FastInterweave serves q = 1 or 2")
        self.p, self.q, self.J = p, q, J
        self.textbook = textbook
        self.newton_steps = newton_steps
        self.full = len(blocks) == 1 and q == 2                  # one 2 x 2 block; else 1 x 1 blocks
        self.r = r = 3 if self.full else q
        self.d = d = p + r
        self.huang_wand = A is not None
        entries = [(0, 0), (1, 0), (1, 1)] if self.full else [(k, k) for k in range(q)]
        self.L_flat = np.array([k * q + l for k, l in entries])              # L's free entries in L.reshape(C, q*q)
        self._regression_layout(stats, entries, tau2)
        if self.full:
            self._prior_full(blocks_prior, A)
        else:
            self._prior_diagonal(blocks_prior, A)
        self._F = {}                                               # per number of chains: the rows buffer

    # ------------------------------------------------------------------
    # the regression given u: one matrix product and one take
    # ------------------------------------------------------------------

    def _regression_layout(self, stats, entries, tau2):
        r"""Per-group statistics and where each sum lands in P and c (see :func:`teachlmm.interweave.regression`).

        Rows of F (per chain, per group): u_l u_n (l <= n), then u_l, then 1.
        Columns of S (per group): Z'Z_km (k <= m), Z'X_k. (k = 0..q-1), Z'y_k, X'X (flat), X'y.
        (F S)[row, col] = sum_j F_j[row] S_j[col], so e.g. W'W[(k,l),(m,n)] = (F S)[u_l u_n, Z'Z_km].
        """
        J, p, q = stats.XtZ.shape
        pairs = [(l, n) for l in range(q) for n in range(l, q)]
        row_pair = {pair: i for i, pair in enumerate(pairs)}
        row_u = {l: len(pairs) + l for l in range(q)}
        row_one = len(pairs) + q
        self.n_rows = row_one + 1
        self.row_u0 = row_u[0]
        columns = [stats.ZtZ[:, k, m] for k, m in pairs]
        col_zz = {pair: i for i, pair in enumerate(pairs)}
        col_zx = {}
        for k in range(q):
            for i in range(p):
                col_zx[k, i] = len(columns)
                columns.append(stats.XtZ[:, i, k])
        col_zy = {}
        for k in range(q):
            col_zy[k] = len(columns)
            columns.append(stats.Zty[:, k])
        col_xx = {}
        for i in range(p):
            for i2 in range(p):
                col_xx[i, i2] = len(columns)
                columns.append(stats.XtX[:, i, i2])
        col_xy = {}
        for i in range(p):
            col_xy[i] = len(columns)
            columns.append(stats.Xty[:, i])
        self.S = np.column_stack(columns)                              # (J, ns)
        ns = self.S.shape[1]

        def at(row, col):
            return row * ns + col
        d = p + len(entries)
        where = np.empty((d, d), dtype=np.intp)
        for i in range(p):
            for i2 in range(p):
                where[i, i2] = at(row_one, col_xx[i, i2])
            for e, (k, l) in enumerate(entries):
                where[i, p + e] = where[p + e, i] = at(row_u[l], col_zx[k, i])
        for e, (k, l) in enumerate(entries):
            for e2, (m, n) in enumerate(entries):
                where[p + e, p + e2] = at(row_pair[min(l, n), max(l, n)], col_zz[min(k, m), max(k, m)])
        vector = [at(row_one, col_xy[i]) for i in range(p)] + [at(row_u[l], col_zy[k]) for k, l in entries]
        self.take = np.concatenate([where.ravel(), vector])
        prior_part = np.zeros((d, d))
        prior_part[:p, :p] = np.diag(1.0 / np.broadcast_to(tau2, (p,)))
        self.beta_precision = np.concatenate([prior_part.ravel(), np.zeros(d)])   # sigma2 * this is added

    def _rows(self, C):
        F = self._F.get(C)
        if F is None:
            F = self._F[C] = np.empty((C, self.n_rows, self.J))
            F[:, -1] = 1.0
        return F

    # ------------------------------------------------------------------
    # the prior on L: values, gradients and Hessians written out
    # ------------------------------------------------------------------

    def _prior_diagonal(self, blocks_prior, A):
        r"""1 x 1 blocks: log p(L) = sum_k [-kappa_k log|a_k| - phi_k(x_k^2)], x_k = 1/a_k (a_k = L_kk).

        Inverse-Wishart(nu_k, s_k) on G_kk: kappa_k = nu_k + 1, phi_k(n) = s_k n / 2.
        Huang-Wand (m = 1): kappa = nu + 1, phi_k(n) = c log(nu n + 1/A_k^2), c = (nu + 1)/2.
        With n = x^2, dn/da = -2 x^3, d2n/da2 = 6 x^4::

            f'  = -kappa x + 2 phi'(n) x^3
            f'' = kappa x^2 - 6 phi'(n) x^4 - 4 phi''(n) x^6
        """
        q = self.q
        if A is None:
            self.kappa = np.array([nu + 1.0 for _, nu, _ in blocks_prior])
            self.s_half = np.array([0.5 * float(np.asarray(S).reshape(-1)[0]) for _, _, S in blocks_prior])
        else:
            self.kappa = np.full(q, NU + 1.0)
            self.alpha = 1.0 / np.asarray(A, dtype=float) ** 2
            self.c = (NU + 1.0) / 2.0
        self.eye_r = np.eye(q)
        self.half_kappa = self.kappa / 2.0

    def _prior_full(self, blocks_prior, A):
        r"""One 2 x 2 block: log p(L) = -kappa_1 log|a| - kappa_2 log|c| - Phi(N), N = G^-1 (see the module docstring).

        Inverse-Wishart(nu, S): kappa = (nu + 1, nu + 2), Phi = tr(S N) / 2 = s11 N11 / 2 + s21 N21 + s22 N22 / 2,
        linear in N, so the gradient and Hessian of f are one table of monomials.
        Huang-Wand: kappa = (nu + 2, nu + 3), Phi = c [log D_1 + log D_2], D_k = nu N_kk + 1/A_k^2, c = (nu + 2)/2::

            grad f = grad(-kappa log) - sum_k w_k grad N_kk,                    w_k = c nu / D_k
            hess f = hess(-kappa log) - sum_k [w_k hess N_kk - (w_k^2 / c) grad N_kk grad N_kk']
        """
        if A is None:
            (_, nu, S), = blocks_prior
            S = np.asarray(S, dtype=float)
            self.kappa = np.array([nu + 1.0, nu + 2.0])
            self.S_half = (0.5 * S[0, 0], S[1, 0], 0.5 * S[1, 1])
            self.S_quadratic = np.array([0.5 * S[1, 1], 0.5 * S[0, 0], 0.5 * S[0, 0]])   # on (a^2, b^2, c^2)
            derivatives = _combine({"N11": -0.5 * S[0, 0], "N21": -S[1, 0], "N22": -0.5 * S[1, 1]})
        else:
            self.kappa = np.array([NU + 2.0, NU + 3.0])
            self.alpha = 1.0 / np.asarray(A, dtype=float) ** 2
            self.c = (NU + 2.0) / 2.0
            derivatives = [{} for _ in range(12)]
        k1, k2 = self.kappa
        log_part = [{(1, 0, 0): -k1}, {}, {(0, 0, 1): -k2}]                   # d(-kappa log|a|)/da = -kappa x
        log_hess = [{(2, 0, 0): k1}, {}, {}, {}, {}, {}, {}, {}, {(0, 0, 2): k2}]
        for i, poly in enumerate(log_part + log_hess):
            for key, v in poly.items():
                derivatives[i][key] = derivatives[i].get(key, 0.0) + v
        columns = list(derivatives)                                          # grad (3), hess (9)
        if A is not None:                                                    # + N11, N22 and their derivatives
            columns += [_N["N11"], _N["N22"]]
            for name in ("N11", "N22"):
                columns += _combine({name: 1.0})
        self.powers, self.table = _monomial_table(columns)
        self.half_kappa = self.kappa / 2.0

    def _monomials(self, l):
        """x^i t^j y^k = b^j a^-(i+j) c^-k for the monomials of the table, at entries l = (a, b, c), (C, 3): (C, K).

        (Integer powers of any sign: a and c are never 0, and 0^0 = 1 where b = 0.)
        """
        exponent_b, exponent_a, exponent_c = self.powers
        return (l[:, 1:2] ** exponent_b) * (l[:, 0:1] ** exponent_a) * (l[:, 2:3] ** exponent_c)

    def _derivatives(self, l):
        """Gradient (C, r) and Hessian (C, r, r) of log p(L) at L's entries l (C, r)."""
        if not self.full:
            x = 1.0 / l
            x2 = x * x
            if not self.huang_wand:                                  # phi' = s/2, phi'' = 0
                grad = x * (2.0 * self.s_half * x2 - self.kappa)
                h = x2 * (self.kappa - 6.0 * self.s_half * x2)
            else:                                                    # phi' = w = c nu / D, phi'' = -w^2 / c
                w = (self.c * NU) / (NU * x2 + self.alpha)
                grad = x * (2.0 * w * x2 - self.kappa)
                h = x2 * (self.kappa + x2 * (4.0 * w * w * x2 / self.c - 6.0 * w))
            return grad, h[:, :, None] * self.eye_r
        out = self._monomials(l) @ self.table
        if not self.huang_wand:
            return out[:, :3], out[:, 3:12].reshape(-1, 3, 3)
        C = len(l)
        w = (self.c * NU) / (NU * out[:, 12:14] + self.alpha)                 # (C, 2): w_k for N11, N22
        dN = out[:, 14:38].reshape(C, 2, 12)                                   # per N_kk: grad (3), hess (9)
        grad = out[:, :3] - np.einsum("ck,cki->ci", w, dN[:, :, :3])
        g = dN[:, :, :3]
        hess = (out[:, 3:12] - np.einsum("ck,cki->ci", w, dN[:, :, 3:])).reshape(C, 3, 3) \
            + np.einsum("ck,cki,ckj->cij", w * w / self.c, g, g)
        return grad, hess

    def _value(self, l):
        r"""log p(L) (up to the textbook's constant) at entries l (..., r), in a few calls.

        With sq = (a^2, b^2, c^2) for one 2 x 2 block: |G| = a^2 c^2 and
        G^-1 = [[b^2 + c^2, -a b], [-a b, a^2]] / (a^2 c^2), so
        tr(S G^-1) = (s11 (b^2 + c^2) - 2 s21 a b + s22 a^2) / (a^2 c^2),
        N11 = (b^2 + c^2) / (a^2 c^2), N22 = 1 / c^2; and kappa_k log|L_kk| = (kappa_k / 2) log L_kk^2.
        """
        sq = l * l
        if not self.full:
            logs = np.log(sq) @ self.half_kappa
            if not self.huang_wand:
                return -logs - (1.0 / sq) @ self.s_half
            return -logs - self.c * np.log(NU / sq + self.alpha).sum(-1)
        diagonal = sq[..., ::2]
        logs = np.log(diagonal) @ self.half_kappa                          # kappa_1 log|a| + kappa_2 log|c|
        det = diagonal[..., 0] * diagonal[..., 1]                          # |G| = a^2 c^2
        if not self.huang_wand:
            return -logs - (sq @ self.S_quadratic - self.S_half[1] * l[..., 0] * l[..., 1]) / det
        N11 = (sq[..., 1] + sq[..., 2]) / det
        return -logs - self.c * np.log((NU * N11 + self.alpha[0]) * (NU / sq[..., 2] + self.alpha[1]))

    # ------------------------------------------------------------------
    # the step
    # ------------------------------------------------------------------

    def _newton(self, P, m):
        """(theta_T, R, R^-1): the proposal's mean and the Cholesky factor of its precision (``interweave.laplace_proposal``).

        P_t = P - H(theta_t),  theta_{t+1} = theta_t + P_t^-1 (g_t - P (theta_t - m)),  theta_0 = m,
        with P_t^-1 v = R_t^-T R_t^-1 v. A chain whose P_t is not positive definite stops where it is,
        and its proposal keeps the last positive definite precision, exactly as the textbook's rule
        (the same test, the same replacements); only then is the precision factorised once more.
        """
        p, d = self.p, self.d
        theta, Pn, R, R_inv, moving = m, P, None, None, None           # moving None: every chain still moves
        if self.newton_steps == 0:
            R = np.linalg.cholesky(P)
            R_inv = np.linalg.inv(R)
        for step in range(self.newton_steps):
            grad, hess = self._derivatives(theta[:, p:])
            P_t = P.copy()
            P_t[:, p:, p:] -= hess
            if step == 0:
                g = np.zeros_like(m)                                    # P (theta_0 - m) = 0
            else:
                g = -(P @ (theta - m)[:, :, None])[:, :, 0]
            g[:, p:] += grad
            try:
                R_t = np.linalg.cholesky(P_t) if moving is None else None
            except np.linalg.LinAlgError:
                R_t = None
            if R_t is None:                                             # the textbook's rule, chain by chain
                ok = (np.ones(len(m), dtype=bool) if moving is None else moving) \
                    & np.isfinite(g).all(1) & np.isfinite(P_t).all((1, 2))
                ok[ok] = np.linalg.eigvalsh(P_t[ok])[:, 0] > 0
                P_t, g = np.where(ok[:, None, None], P_t, np.eye(d)), np.where(ok[:, None], g, 0.0)
                Pn, R, moving = np.where(ok[:, None, None], P_t, Pn), None, ok
                R_t = np.linalg.cholesky(P_t)
            R_inv_t = np.linalg.inv(R_t)
            if moving is None:
                Pn, R, R_inv = P_t, R_t, R_inv_t
            theta = theta + (np.swapaxes(R_inv_t, 1, 2) @ (R_inv_t @ g[:, :, None]))[:, :, 0]
            if moving is not None and not moving.any():
                break
        if R is None:
            R = np.linalg.cholesky(Pn)
            R_inv = np.linalg.inv(R)
        return theta, R, R_inv

    def __call__(self, beta, b, G, sigma2, noise):
        p, q = self.p, self.q
        C = len(sigma2)
        try:
            L = np.linalg.cholesky(G)                                     # G = L L' (block diagonal for ||)
        except np.linalg.LinAlgError:                                     # a singular G: the textbook's business
            return self.textbook(beta, b, G, sigma2, noise)
        F = self._rows(C)
        U = F[:, self.row_u0:self.row_u0 + q]                             # (C, q, J): u_j = L^-1 b_j, by column
        np.matmul(np.linalg.inv(L), np.swapaxes(b, 1, 2), out=U)
        if q == 1:
            np.multiply(U[:, 0], U[:, 0], out=F[:, 0])                    # u0 u0
        else:
            np.multiply(U[:, :1], U, out=F[:, 0:2])                        # u0 u0, u0 u1
            np.multiply(U[:, 1], U[:, 1], out=F[:, 2])                    # u1 u1
        theta_c = np.concatenate([beta, L.reshape(C, q * q)[:, self.L_flat]], axis=1)   # current (beta, L)
        sums = (F @ self.S).reshape(C, -1).take(self.take, axis=1)       # X'X, X'W, W'W, X'y, W'y
        s2 = sigma2[:, None]
        Pc = (sums + s2 * self.beta_precision) / s2
        d = self.d
        P, c = Pc[:, :d * d].reshape(C, d, d), Pc[:, d * d:]
        try:
            m = np.linalg.solve(P, c[:, :, None])[:, :, 0]
            theta, R, R_inv = self._newton(P, m)
        except np.linalg.LinAlgError:                                    # P singular (a chain with all u_j = 0)
            return self.textbook(beta, b, G, sigma2, noise)
        proposal = theta + (np.swapaxes(R_inv, 1, 2) @ noise[:, :-1, None])[:, :, 0]          # + R^-T z
        # Metropolis-Hastings: log pi - log q at the proposal (column 0) and the current point (column 1)
        X = np.empty((C, 2, d))
        X[:, 0], X[:, 1] = proposal, theta_c
        dm = X - m[:, None]
        dq = (X - theta[:, None]) @ R                                     # rows (theta - mean)' R = (R'(theta - mean))'
        w = (-0.5 * ((dm @ P) * dm).sum(-1) + self._value(X[:, :, p:])) + 0.5 * (dq * dq).sum(-1)
        accepted = _accept(w[:, 0] - w[:, 1], noise[:, -1])
        new = np.where(accepted[:, None], proposal, theta_c)
        # back: b_j = L_new u_j, G = L_new L_new' (unchanged where refused)
        L_new = np.zeros((C, q * q))
        L_new[:, self.L_flat] = new[:, p:]
        L_new = L_new.reshape(C, q, q)
        b_new = np.swapaxes(U, 1, 2) @ np.swapaxes(L_new, 1, 2)
        keep = accepted[:, None, None]
        return (new[:, :p], np.where(keep, b_new, b), np.where(keep, L_new @ np.swapaxes(L_new, 1, 2), G),
                accepted)
