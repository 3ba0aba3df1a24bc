r"""The Gibbs sweep of :func:`teachlmm.gibbs.step`, fast, for q = 1 or 2 (private: what ``sample`` runs).

Read :mod:`teachlmm.gibbs` first: this module computes the very same sweep,
from the very same noise, and gives the same draws to rounding (a test holds
``sample(engine="fast")`` equal to ``sample(engine="textbook")`` to 1e-10 over
100 sweeps). Only the *form* of block 1 ((beta, b) given G and sigma2) and of
the residual sum of squares differs: every per-group q x q matrix is kept as
its entries, one (chains, J) array each, so that each line of algebra is one
elementwise numpy operation instead of a batched matrix call over (chains x
groups) whose dispatch costs more than its arithmetic.

Blocks 2 and 3 (G | b, with the Huang-Wand a-step and interweaving, and
sigma2 | beta, b) are the textbook functions themselves: ``draw_G`` and
``draw_sigma2`` of :mod:`teachlmm.gibbs`, given to the class by its subclass
:class:`teachlmm.gibbs.FastSweep` (importing gibbs here would close an import
circle, since gibbs runs this sweep).
"""
import numpy as np

from . import huang_wand
from . import interweave as _interweave
from .errors import TeachLMMError
from .mme import cholesky, lower_inverse, relative_factor

__all__ = ["FastSweep"]


def _t(a):
    """Transpose of the last two axes (a stack of matrices)."""
    return a.swapaxes(-1, -2)


class FastSweep:
    """The sweep of :func:`teachlmm.gibbs.step` for q = 1 or 2, with the per-group q x q algebra written out.

    numpy spends more time dispatching a batched 2 x 2 matmul or Cholesky over
    (chains x groups) than doing its arithmetic. Here every per-group matrix is
    kept as its entries, each an array of shape (chains, J), so each line of
    algebra is one elementwise numpy operation; the sums over groups are
    single matrix products with arrays prepared once per model; the p x p work
    per chain stays batched linear algebra.

    What it computes, line by line, is what the readable path computes:

    * :meth:`coefficients` is :func:`teachlmm.mme.solve` with
      ``beta_precision = (sigma2 / tau2) I`` (M_j^-1 = K_j K_j', A = R R',
      beta_hat) followed by :func:`teachlmm.gibbs.draw_coefficients` (beta, then
      :func:`teachlmm.mme.b_hat` at that beta plus noise);
    * :meth:`residual_sum_of_squares` is :func:`teachlmm.mme.residual_sum_of_squares`;
    * blocks 2 and 3 call ``draw_G`` and ``draw_sigma2``, the textbook's own
      functions, which :class:`teachlmm.gibbs.FastSweep` (the class to use)
      sets as attributes of this one.

    Same formulas, same noise, same draws as :func:`teachlmm.gibbs.step`; the
    tests hold both equal to ``mme.solve`` on random inputs to 1e-12.

    Called as ``sweep(G, sigma2, noise) -> (beta, b, G, sigma2)``, chains on axis 0.
    """

    draw_G = None           # teachlmm.gibbs.draw_G        (set by teachlmm.gibbs.FastSweep)
    draw_sigma2 = None      # teachlmm.gibbs.draw_sigma2   (set by teachlmm.gibbs.FastSweep)

    def __init__(self, model, prior, interweave=True):
        s, self.prior, self.blocks = model.stats, prior, model.blocks
        # the interweaving step written out for q <= 2 (teachlmm._interweave_fast): the same draws as the textbook one
        self.interweave = _interweave.Interweaving(model, prior, fast=True) if interweave else None
        J, self.p, self.q = s.XtZ.shape
        if self.q > 2:
            raise TeachLMMError("FastSweep handles q = 1 or 2 random effects; use teachlmm.gibbs.step() for more")
        self.stats = s
        q = self.q
        # T'Z_j'Z_j T is linear in the entries of Z_j'Z_j: (T'Z_j'Z_j T)_kl = sum_ab T_ak T_bl (Z_j'Z_j)_ab
        self.ZtZ_entries = s.ZtZ.reshape(J, q * q).T.copy()                     # (q*q, J)
        self.ZtZ_diag = [s.ZtZ[:, k, k] for k in range(q)]
        self.ZtZ_21 = s.ZtZ[:, -1, 0]
        self.Zty = [np.ascontiguousarray(s.Zty[:, k]) for k in range(q)]
        self.ZtX = [np.ascontiguousarray(s.XtZ[:, :, k].T) for k in range(q)]    # (p, J)
        # sum_j X_j'Z_j M_j^-1 [Z_j'X_j | Z_j'y_j] is linear in the entries of M_j^-1:
        # U maps (n11_j, n21_j, n22_j), stacked over j, to the p x p and p x 1 sums
        Xz = [s.XtZ[:, :, k] for k in range(q)]
        W = [np.concatenate([(Xz[k][:, :, None] * Xz[m][:, None, :]).reshape(J, -1),
                             Xz[k] * s.Zty[:, m:m + 1]], axis=1) for k in range(q) for m in range(q)]
        self.U = W[0] if q == 1 else np.concatenate([W[0], W[1] + W[2], W[3]], axis=0)
        self.tau_precision = np.diag(1.0 / np.broadcast_to(prior.tau2, (self.p,)))

    def coefficients(self, G, sigma2, z):
        """(beta, b) drawn given (G, sigma2) from the standard normals z (``Noise.z``), and Z_j'(y_j - X_j beta).

        With z = 0 this returns beta_hat and b_hat of :func:`teachlmm.mme.solve`; with
        the noise z it returns the draws of :func:`teachlmm.gibbs.draw_coefficients`.
        """
        p, q, s = self.p, self.q, self.stats
        C = sigma2.shape[0]
        root_s2 = np.sqrt(sigma2)[:, None]
        T = _relative_factor_fast(G, sigma2)                          # G = sigma2 T T'
        TZT = (np.einsum("cak,cbl->cklab", T, T).reshape(C, q * q, q * q)
               @ self.ZtZ_entries)                                     # T'Z_j'Z_j T, (C, q*q, J)
        if q == 1:
            k11 = T[:, 0, 0, None] / np.sqrt(TZT[:, 0] + 1.0)          # K_j = T / sqrt(M~_j)
            n11 = k11 * k11                                            # M_j^-1 = K_j^2
            Minv = n11
        else:
            t11, t21, t22 = T[:, 0, 0, None], T[:, 1, 0, None], T[:, 1, 1, None]
            l11 = np.sqrt(TZT[:, 0] + 1.0)                             # M~_j = L_j L_j'
            l21 = TZT[:, 2] / l11
            l22 = np.sqrt(TZT[:, 3] + 1.0 - l21 * l21)
            w11, w22 = 1.0 / l11, 1.0 / l22                            # W_j = L_j^-1
            w21 = -l21 * w11 * w22
            k11, k12 = t11 * w11, t11 * w21                            # K_j = T W_j'
            k21, k22 = t21 * w11, t21 * w21 + t22 * w22
            n11 = k11 * k11 + k12 * k12                                # M_j^-1 = K_j K_j'
            n21 = k11 * k21 + k12 * k22
            n22 = k21 * k21 + k22 * k22
            Minv = np.concatenate([n11, n21, n22], axis=1)
        sums = Minv @ self.U                                           # sum_j X_j'Z_j M_j^-1 [Z_j'X_j | Z_j'y_j]
        A = s.XtX_total - sums[:, :p * p].reshape(C, p, p) + sigma2[:, None, None] * self.tau_precision
        c = s.Xty_total - sums[:, p * p:]
        Rinv = lower_inverse(cholesky(A))                              # A = R R', A^-1 = Rinv' Rinv
        beta = (_t(Rinv) @ (Rinv @ c[:, :, None] + root_s2[:, :, None] * z[:, :p, None]))[:, :, 0]
        r = [self.Zty[k] - beta @ self.ZtX[k] for k in range(q)]      # Z_j'(y_j - X_j beta), (C, J)
        zb = z[:, p:]
        b = np.empty((C, zb.shape[1] // q, q))
        if q == 1:
            b[:, :, 0] = n11 * r[0] + root_s2 * k11 * zb
        else:
            z1, z2 = zb[:, 0::2], zb[:, 1::2]
            b[:, :, 0] = n11 * r[0] + n21 * r[1] + root_s2 * (k11 * z1 + k12 * z2)
            b[:, :, 1] = n21 * r[0] + n22 * r[1] + root_s2 * (k21 * z1 + k22 * z2)
        return beta, b, r

    def residual_sum_of_squares(self, beta, b, r):
        """SSR = r'r + sum_j b_j'(Z_j'Z_j b_j - 2 Z_j'r_j), r = y - X beta (``r`` holds the Z_j'r_j)."""
        s, q = self.stats, self.q
        rtr = s.yty_total + ((beta @ s.XtX_total - 2.0 * s.Xty_total) * beta).sum(1)
        ZtZb = [self.ZtZ_diag[0] * b[:, :, 0]] if q == 1 else [
            self.ZtZ_diag[0] * b[:, :, 0] + self.ZtZ_21 * b[:, :, 1],
            self.ZtZ_21 * b[:, :, 0] + self.ZtZ_diag[1] * b[:, :, 1]]
        return rtr + sum(np.einsum("cj,cj->c", b[:, :, k], ZtZb[k] - 2.0 * r[k]) for k in range(q))

    def __call__(self, G, sigma2, noise):
        """One sweep from (G, sigma2) and its noise (:class:`teachlmm.gibbs.Noise`): (beta, b, G, sigma2)."""
        beta, b, r = self.coefficients(G, sigma2, noise.z)                          # (beta, b) | G, sigma2
        G_prior = self.prior if self.prior.A is None else huang_wand.G_prior_given_a(   # Huang-Wand: a | G
            huang_wand.draw_a(G, self.blocks, self.prior.A, noise.a_gamma))
        G_new = self.draw_G(b, self.blocks, G_prior, noise.chi2, noise.bartlett_z)[0]  # G | b (, a)
        if self.interweave is not None:                                             # the non-centred redraw
            beta, b, G_new, _ = self.interweave(beta, b, G_new, sigma2, noise.interweave)
            r = [self.Zty[k] - beta @ self.ZtX[k] for k in range(self.q)]          # Z_j'(y_j - X_j beta) again
        ssr = self.residual_sum_of_squares(beta, b, r)                              # sigma2 | beta, b
        sigma2_new = self.draw_sigma2(ssr, self.stats.n_total, self.prior, noise.sigma, noise.uniform)[0]
        return beta, b, G_new, sigma2_new


def _relative_factor_fast(G, sigma2):
    """:func:`teachlmm.mme.relative_factor` as a plain Cholesky factorisation, when every G is positive definite.

    A G drawn from an inverse-Wishart always is; a singular start G is not,
    and gets the careful column-by-column version.
    """
    S = G / sigma2[:, None, None]
    s11, s22 = S[:, 0, 0], S[:, -1, -1]
    determinant = s11 * s22 - S[:, -1, 0] ** 2 if G.shape[-1] == 2 else s11
    if (s11 > 0).all() and (determinant > 1e-14 * s11 * s22).all():
        return cholesky(S)
    return relative_factor(G, sigma2)

