r"""Gibbs sampler for the hierarchical normal model (the Bayesian linear mixed model).

The model (the lecture's reduced form: each group's regression, with the
group effects b_j drawn from one normal distribution), with conjugate priors::

    y_j   = X_j beta + Z_j b_j + eps_j,   eps_j ~ N(0, sigma2 I),   b_j ~ N(0, G)
    beta  ~ N(0, tau2 I)          (tau2 = inf: flat)
    G     ~ InvWishart(nu0, S0)   (density ~ |G|^-(nu0+q+1)/2 exp(-tr(S0 G^-1)/2))
    sigma2 ~ InvGamma(a0, b0)     (or sigma ~ Uniform(0, sigma_max))

A *sweep* draws every unknown once from its distribution given all the others
(the "full conditionals"); repeated sweeps are a Markov chain whose draws
settle into the posterior. One sweep (:func:`step`) has three blocks:

1. **(beta, b) jointly** given (G, sigma2). Integrate b out, then put it back::

       beta | G, sigma2, y       ~ N(beta_hat, sigma2 A^-1)
       b_j  | beta, G, sigma2, y ~ N(M_j^-1 Z_j'(y_j - X_j beta), sigma2 M_j^-1)

   with M_j = Z_j'Z_j + sigma2 G^-1, A = X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j
   + (sigma2 / tau2) I and beta_hat = A^-1 (X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j)
   (the mixed-model equations of :mod:`teachlmm.mme`, plus the prior).
   Drawing beta and b together is what makes the chain mix: drawn one given
   the other, the intercept and the group effects would trade places slowly.
2. **G** given b: ``G | b ~ InvWishart(nu0 + J, S0 + sum_j b_j b_j')``, drawn
   by the Bartlett decomposition (:func:`inv_wishart`).
3. **sigma2** given (beta, b): ``InvGamma(a0 + n/2, b0 + SSR/2)``,
   SSR = ||y - X beta - Z b||^2.

Between 2 and 3 the sweep redraws (beta, G, b) once more through the
non-centred random effects u_j = L^-1 b_j, G = L L' (a Metropolis-Hastings
step, :mod:`teachlmm.interweave`): G then mixes several times faster. Under
the default prior on G, Huang and Wand's (:mod:`teachlmm.huang_wand`), block 2
first draws the prior's auxiliary variables a given G, then G given (a, b).

Every block uses the data only through the per-group cross-products
(``model.stats``), so a sweep costs O(J (p+q)^3) whatever the number of rows
n, and all groups are handled by one batched numpy call. The singular-safe
form of :mod:`teachlmm.mme` is used throughout: with G = sigma2 T T',
M_j^-1 = T (T'Z_j'Z_j T + I)^-1 T' needs no G^-1.

**Chains.** :func:`sample` runs several chains *together*: every array of the
state carries the chains on axis 0, so a sweep of four chains is the same
handful of numpy calls as a sweep of one. Each chain draws its random numbers
from its own ``numpy.random.Generator``, spawned from one
``numpy.random.SeedSequence(seed)``; chain k of a run is therefore the same
whatever the number of chains, and equals the chain you get by stepping
``init(model, seed=seed)`` yourself (k = 0).

**Uncorrelated blocks.** For ``(1 + x || g)`` G is block diagonal
(``model.blocks``). Each block gets its own inverse-Wishart: the marginal of
the full prior on that block, ``InvWishart(nu0 - q + q_b, S0[block, block])``
(q_b the block size; off-block entries of S0 are not used), and its own
conditional ``InvWishart(nu0 - q + q_b + J, S0_bb + sum_j b_jb b_jb')``.

**Noise first.** A sweep first draws its standard random numbers
(:func:`draw_noise`: normals, chi-squares, a gamma); each block is then a
deterministic function of them (``beta = beta_hat + sqrt(sigma2) R^-T z``).

**A state is a value.** :func:`step` is pure: the same state in gives the
same state out, and the state passed in is never changed. The random
streams are part of the state as data (``State.rng``: where each generator
stands, numpy's ``bit_generator.state``); a sweep draws from fresh
generators set there and puts their new positions into the state it
returns. :func:`steps` is the loop ``state = step(state)``.

**Two engines, one sweep.** ``sample(..., engine="textbook")`` runs that
loop. The default, ``engine="fast"``, runs the very same sweep on the same
random numbers, drawn for many sweeps at once, with the per-group 2 x 2
algebra of block 1 written out entry by entry for q <= 2 (``FastSweep``, in
the private module ``teachlmm._fast_sweep``): several times faster in numpy,
and the same draws to rounding (a test holds them equal to 1e-10 over 100
sweeps). The draws become a :class:`~teachlmm.posterior.Posterior`
(:mod:`teachlmm.posterior`).

**A third engine, no sweep.** ``engine="collapsed"`` (:mod:`teachlmm.collapsed`)
integrates beta and b out, moves (G, sigma2) alone by independence
Metropolis-Hastings on their marginal posterior, then draws beta and b
exactly given them: the same posterior, different draws, and on the
lecture's models several times more effective draws per second.

Step through it::

    state = init(model, seed=1)       # state.G, state.sigma2, state.beta, state.b
    state = step(state)               # state.cond: the conditional moments used
    for state in steps(model, seed=1, max_iter=100):    # the start, then 100 sweeps
        print(state.iteration, state.sigma2)
    post = sample(model, draws=2000, warmup=500, chains=4, seed=1)
    print(post.summary())
    post = sample(model, draws=2000, warmup=500, chains=4, seed=1, engine="textbook")   # same draws, slower
"""
import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Optional

import numpy as np
import scipy.special

from . import _fast_sweep, collapsed, convergence, frames, huang_wand, mme, validators
from . import interweave as _interweave
from .design import warn_raw_steps
from .design import response_variance
from .errors import ConditioningWarning, TeachLMMError
from .mme import cholesky, lower_inverse, relative_factor, residual_sum_of_squares   # batched over chains
from .posterior import Posterior                  # what sample() returns (re-exported: gibbs.Posterior)

__all__ = ["Prior", "default_prior", "Noise", "draw_noise", "relative_factor", "coefficient_block",
           "draw_coefficients", "bartlett_inv_wishart", "inv_wishart", "draw_G", "residual_sum_of_squares",
           "draw_sigma2", "Conditionals", "State", "init", "step", "steps", "sample"]
# Also importable from here, documented in their own modules: FastSweep (teachlmm._fast_sweep, private: the
# sweep of step() written for speed) and Posterior (teachlmm.posterior: what sample() returns).


# ----------------------------------------------------------------------------
# the prior
# ----------------------------------------------------------------------------

def _positive_number(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TeachLMMError(f"{name} must be a number, got {value!r}") from None
    if not (value > 0) or math.isinf(value):
        raise TeachLMMError(f"{name} must be a positive, finite number, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class Prior:
    """The conjugate prior of the Gibbs sampler; unnamed hyperparameters take the defaults.

    ::

        beta   ~ N(0, tau2 I)             tau2 scalar or one per fixed effect; inf = flat
        G      ~ InvWishart(nu0, S0)      G | b ~ InvWishart(nu0 + J, S0 + sum_j b_j b_j')
        sigma2 ~ InvGamma(a0, b0)         sigma2 | . ~ InvGamma(a0 + n/2, b0 + SSR/2)
        or, with sigma_max:  sigma ~ Uniform(0, sigma_max)   (JAGS/BUGS's favourite)

    **The default** (``Prior()``, :func:`default_prior`) when neither nu0 nor S0
    is given: the Huang-Wand prior on G (:mod:`teachlmm.huang_wand`: each
    standard deviation half-t(2, A_k), uniform correlations; ``A`` sets the
    scales, default A_k = sd(y) / rms(z_k)); when none of a0, b0, sigma_max is
    given: Jeffreys' p(sigma2) ~ 1/sigma2 (sigma2 | . ~ InvGamma(n/2, SSR/2));
    beta flat. :meth:`describe` names the prior in force.

    When nu0 or S0 is given, G's prior is the inverse-Wishart, with these
    defaults for the other (and a0, b0 below when one of them is given;
    weakly informative and on the data's scale, with v = var(y) and
    m_k = mean(z_k^2) the mean square of random column k):

    * ``tau2 = inf``: a flat prior on beta. The posterior is proper because X
      has full rank (``Model`` checks it), and beta given (G, sigma2) is then
      exactly the GLS estimate with its covariance sigma2 A^-1 -- REML's view
      of beta. A large finite tau2 would add an arbitrary, unit-dependent scale.
    * ``nu0 = q + 1``: the smallest integer degrees of freedom giving each
      correlation a uniform prior on (-1, 1).
    * ``S0 = diag(v / (10 m_k))``: random term k then contributes a variance
      G_kk m_k to y whose prior median is about 7 % of var(y), with a heavy
      right tail (G_kk ~ InvGamma(1, S0_kk / 2)); scaling by m_k makes the
      prior follow a change of units of z_k.
    * ``a0 = 1/2, b0 = v / 2``: a scaled inverse chi-square with one degree of
      freedom at var(y): the weight of a single observation whose squared
      residual is var(y).

    Parameters
    ----------
    nu0 : float, optional  (> q - 1, checked against the model)
    S0 : (q, q) array_like, optional  (symmetric positive definite)
    a0, b0 : float, optional  (> 0)
    tau2 : float or (p,) array_like, optional  (> 0; ``np.inf`` for flat)
    sigma_max : float, optional
        Use ``sigma ~ Uniform(0, sigma_max)`` instead of the inverse gamma on
        sigma2 (then a0, b0 must not be given). Its conditional is
        ``sigma2 ~ InvGamma((n - 1)/2, SSR/2)`` truncated to sigma < sigma_max,
        drawn exactly (see :func:`draw_sigma2`).
    A : float or (q,) array_like, optional  (> 0)
        The half-t scales of the Huang-Wand prior (not with nu0 or S0).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> prior = Prior(nu0=3, S0=np.eye(2)).resolve(model)
    >>> prior.nu0, prior.a0, prior.tau2          # a0 = b0 = 0: Jeffreys, the default for sigma2
    (3.0, 0.0, inf)
    >>> print(Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100).resolve(model).describe())
    beta ~ N(0, 1e+04 I); G ~ InvWishart(nu0 = 3, S0 = [[1, 0], [0, 1]]); sigma ~ Uniform(0, 100)
    """

    nu0: Optional[float] = None
    S0: Any = None
    a0: Optional[float] = None
    b0: Optional[float] = None
    tau2: Any = None
    sigma_max: Optional[float] = None
    A: Any = None

    def __post_init__(self):
        """Check every hyperparameter that was given (those that need the model: in resolve)."""
        put = lambda name, value: object.__setattr__(self, name, value)   # noqa: E731 (frozen)
        if self.nu0 is not None:
            try:
                put("nu0", float(self.nu0))
            except (TypeError, ValueError):
                raise TeachLMMError(f"prior nu0 must be a number, got {self.nu0!r}") from None
            if not math.isfinite(self.nu0):
                raise TeachLMMError(f"prior nu0 must be finite, got {self.nu0}")
        if self.S0 is not None:
            S0 = np.atleast_2d(np.asarray(self.S0, dtype=float))
            if S0.ndim != 2 or S0.shape[0] != S0.shape[1]:
                raise TeachLMMError(f"prior S0 must be a square q x q matrix, got shape {S0.shape}")
            if not np.all(np.isfinite(S0)) or not np.allclose(S0, S0.T):
                raise TeachLMMError("prior S0 must be a finite symmetric matrix")
            if np.linalg.eigvalsh(S0).min() <= 0:
                raise TeachLMMError("prior S0 must be positive definite (an inverse-Wishart scale "
                                    "matrix); e.g. a positive multiple of the identity")
            put("S0", S0)
        for name in ("a0", "b0"):
            if getattr(self, name) is not None:
                put(name, _positive_number(getattr(self, name), f"prior {name}"))
        if self.sigma_max is not None:
            put("sigma_max", _positive_number(self.sigma_max, "prior sigma_max"))
            if self.a0 is not None or self.b0 is not None:
                raise TeachLMMError("give either a0, b0 (sigma2 ~ InvGamma(a0, b0)) or sigma_max "
                                    "(sigma ~ Uniform(0, sigma_max)), not both")
        if self.tau2 is not None:
            tau2 = np.asarray(self.tau2, dtype=float)
            if tau2.ndim > 1 or np.any(np.isnan(tau2)) or np.any(tau2 <= 0):
                raise TeachLMMError(f"prior tau2 must be a positive number (or one per fixed effect; "
                                    f"np.inf for a flat prior), got {self.tau2!r}")
            put("tau2", float(tau2) if tau2.ndim == 0 else tau2)
        if self.A is not None:
            A = np.atleast_1d(np.asarray(self.A, dtype=float))
            if A.ndim != 1 or not np.all(np.isfinite(A)) or np.any(A <= 0):
                raise TeachLMMError(f"prior A (the half-t scales of the Huang-Wand prior) must be a positive "
                                    f"number or one per random effect, got {self.A!r}")
            if self.nu0 is not None or self.S0 is not None:
                raise TeachLMMError("give either nu0, S0 (G ~ InvWishart) or A (G ~ Huang-Wand with half-t "
                                    "scales A), not both")
            put("A", A)
        self._check_overflow()

    @property
    def is_huang_wand(self):
        """True when G's prior is Huang-Wand's (neither nu0 nor S0 given)."""
        return self.A is not None or (self.nu0 is None and self.S0 is None)

    PRIOR_SCALE_LIMIT = 1e100

    def _check_overflow(self):
        """A variance scale beyond 1e100 overflows float64 where the sampler squares it (1e300 I gives NaN draws)."""
        big = self.PRIOR_SCALE_LIMIT
        for name, value in (("S0", None if self.S0 is None else float(np.abs(self.S0).max())), ("b0", self.b0),
                            ("sigma_max", None if self.sigma_max is None else min(self.sigma_max, 1e154) ** 2),
                            ("A", None if self.A is None else float(np.max(self.A)) ** 2)):
            if value is not None and not value <= big:
                raise TeachLMMError(f"prior {name} is on a scale of {value:.3g} (a variance), which overflows "
                                    "float64 where the sampler squares and multiplies variances (the limit is "
                                    f"{big:.0e}). A weakly informative prior is on the data's scale: leave it out "
                                    "(the default scales follow var(y)), or rescale the response")

    def resolve(self, model):
        """This prior with every default filled in for ``model``, checked against its sizes.

        Raises
        ------
        TeachLMMError
            nu0 <= q - 1 (improper), S0 not q x q, tau2 not a scalar or of length p.
        """
        if self.is_resolved:
            return self
        base = _inverse_wishart_defaults(model)
        q, p = model.q, model.p
        jeffreys = self.sigma_max is None and self.a0 is None and self.b0 is None
        if self.sigma_max is not None or jeffreys:
            values = {f.name: getattr(self, f.name) for f in fields(self)}
            values["a0"] = values["b0"] = None
        else:
            values = {f.name: (getattr(base, f.name) if getattr(self, f.name) is None
                               else getattr(self, f.name)) for f in fields(self)}
        if values["tau2"] is None:
            values["tau2"] = base.tau2
        tau2 = np.asarray(values["tau2"])
        if tau2.ndim == 1 and tau2.shape != (p,):
            raise TeachLMMError(f"prior tau2 has {tau2.size} entries but the model has p = {p} fixed "
                                f"effects ({', '.join(model.fixef_names)}): give one number or {p}")
        if self.is_huang_wand:
            A = huang_wand.default_scales(model) if self.A is None else self.A
            if A.size == 1:
                A = np.full(q, float(A[0]))
            if A.shape != (q,):
                raise TeachLMMError(f"prior A has {A.size} entries but the model has q = {q} random effects "
                                    f"({', '.join(model.ranef_names)}): give one number or {q}")
            values.update(A=A, nu0=None, S0=None)
        for name in ("nu0", "S0"):
            if values[name] is None and not self.is_huang_wand:
                values[name] = getattr(base, name)
        if self.is_huang_wand:
            resolved = Prior(**values)
            object.__setattr__(resolved, "nu0", huang_wand.NU + q - 1)    # the df of G | a (the sweep reads it)
            if jeffreys:
                object.__setattr__(resolved, "a0", 0.0)                   # p(sigma2) ~ 1/sigma2
                object.__setattr__(resolved, "b0", 0.0)
            return resolved
        if values["nu0"] <= q - 1:
            raise TeachLMMError(f"prior nu0 = {values['nu0']:g} is improper for q = {q} random effects: "
                                f"an inverse-Wishart needs nu0 > q - 1 = {q - 1}; the default is q + 1 = {q + 1}")
        if values["S0"].shape != (q, q):
            raise TeachLMMError(f"prior S0 has shape {values['S0'].shape} but the model has q = {q} random "
                                f"effects ({', '.join(model.ranef_names)}): give a {q} x {q} matrix")
        resolved = Prior(**values)
        if jeffreys:
            object.__setattr__(resolved, "a0", 0.0)                       # p(sigma2) ~ 1/sigma2
            object.__setattr__(resolved, "b0", 0.0)
        return resolved

    @property
    def is_resolved(self):
        return self.nu0 is not None and (self.S0 is not None or self.A is not None) and self.tau2 is not None and (
            self.sigma_max is not None or (self.a0 is not None and self.b0 is not None))

    def describe(self):
        """One line naming the prior (the summary's header uses it)."""
        def num(x):
            return f"{x:.4g}"
        tau2 = np.asarray(self.tau2, dtype=float)
        if tau2.ndim == 0:
            beta = "beta flat" if np.isinf(tau2) else f"beta ~ N(0, {num(tau2)} I)"
        else:
            beta = f"beta ~ N(0, diag({', '.join('inf' if np.isinf(t) else num(t) for t in tau2)}))"
        if self.A is not None:
            G = (f"G ~ Huang-Wand(nu = {num(huang_wand.NU)}, A = [{', '.join(num(a) for a in self.A)}]) "
                 f"(sd_k ~ half-t(2, A_k), correlations uniform)")
        else:
            S0 = "[" + ", ".join("[" + ", ".join(num(v) for v in row) + "]" for row in self.S0) + "]"
            G = f"G ~ InvWishart(nu0 = {num(self.nu0)}, S0 = {S0})"
        sig = (f"sigma ~ Uniform(0, {num(self.sigma_max)})" if self.sigma_max is not None else
               "p(sigma2) ~ 1/sigma2 (Jeffreys)" if self.a0 == 0 and self.b0 == 0 else
               f"sigma2 ~ InvGamma(a0 = {num(self.a0)}, b0 = {num(self.b0)})")
        return f"{beta}; {G}; {sig}"

    def __repr__(self):
        if self.is_resolved:
            return f"Prior({self.describe()})"
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return "Prior(" + ", ".join(f"{k}={np.asarray(v).tolist()!r}" for k, v in given.items()) + ")"


def default_prior(model):
    """The default :class:`Prior` for ``model``: Huang-Wand on G, Jeffreys on sigma2, beta flat.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> print(default_prior(model).describe())
    beta flat; G ~ Huang-Wand(nu = 2, A = [0.8533]) (sd_k ~ half-t(2, A_k), correlations uniform); p(sigma2) ~ 1/sigma2 (Jeffreys)
    """
    return Prior().resolve(model)


def _inverse_wishart_defaults(model):
    """The inverse-Wishart / inverse-gamma defaults for the arguments not given (see :class:`Prior`)."""
    v = response_variance(model)
    m = np.diag(model.stats.ZtZ.sum(0)) / model.n                   # mean square of each z_k
    S0 = np.diag(v / (10 * np.where(m > 0, m, 1.0)))
    return Prior(nu0=model.q + 1, S0=S0, a0=0.5, b0=v / 2, tau2=np.inf)


# ----------------------------------------------------------------------------
# random numbers: one generator per chain, drawn first, then transformed
# ----------------------------------------------------------------------------

class ChainStreams(NamedTuple):
    """The random streams of one chain: normals, gammas, uniforms and the interweaving's normals.

    Each is its own ``numpy.random.Generator`` (or, in ``State.rng``, the
    saved state of one: see ``_save_streams``). Several streams, not one,
    so that :func:`sample` can draw the noise of many sweeps with one call per
    stream and still get exactly the numbers that :func:`step` draws one
    sweep at a time (a stream cut into consecutive pieces gives the same
    numbers as drawn at once).
    """

    normal: Any
    gamma: Any
    uniform: Any
    interweave: Any        # normals of the interweaving step (teachlmm.interweave)


def _chain_generators(seed, chains):
    """Streams for ``chains`` chains: chain k's from the k-th child of the seed's SeedSequence.

    The seed follows teachlmm's one policy (:func:`teachlmm.validators.seed_sequence`).
    """
    ss = validators.seed_sequence(seed)
    return tuple(ChainStreams(*(np.random.default_rng(s) for s in child.spawn(4))) for child in ss.spawn(chains))


def _save_streams(rng):
    """The state of every generator of ``rng`` (ChainStreams, or a tuple of them per chain) as plain data.

    A numpy generator is a bit generator (PCG64) plus a position in its
    stream; ``bit_generator.state`` is that position, a small dict. The
    Gibbs :class:`State` keeps these dicts, never the generators themselves,
    so that a state is a value: stepping from it twice draws the same numbers.
    """
    if isinstance(rng, ChainStreams):
        return ChainStreams(*(generator.bit_generator.state for generator in rng))
    return tuple(_save_streams(streams) for streams in rng)


def _restore_streams(saved):
    """Fresh generators at the saved positions (the inverse of :func:`_save_streams`); ``saved`` is not changed."""
    if isinstance(saved, ChainStreams):
        return ChainStreams(*(_generator_at(state) for state in saved))
    return tuple(_restore_streams(streams) for streams in saved)


def _generator_at(state):
    """A numpy Generator whose bit generator is at ``state`` (a ``bit_generator.state`` dict)."""
    bit_generator = getattr(np.random, state["bit_generator"])(_ANY_SEED)   # the state is set next
    bit_generator.state = state
    return np.random.Generator(bit_generator)


_ANY_SEED = np.random.SeedSequence(0)    # a ready SeedSequence: constructing from it is the cheapest way


def _is_saved(rng):
    """True when ``rng`` holds saved generator states (as ``State.rng`` does), not generators."""
    first = rng if isinstance(rng, ChainStreams) else rng[0]
    return isinstance(first.normal, dict)


class Noise(NamedTuple):
    """The standard random numbers one sweep needs (chains first, if any).

    Every block of the sweep is a deterministic function of its noise, so
    the readable :func:`step` and the fast loop of :func:`sample` turn the
    same numbers into the same draws.

    Attributes
    ----------
    z : (..., p + J q) N(0, 1) for (beta, b): beta's p, then group j's q at p + j q.
    bartlett_z : (..., m) N(0, 1) below the Bartlett diagonals (block by block, row by row).
    chi2 : (..., q) the Bartlett diagonals squared: chi2(df_B - k), k = 0..q_B-1, block by block.
    sigma : (...) Gamma(shape, 1), shape = a0 + n/2 (or (n - 1)/2 for the uniform prior on sigma).
    uniform : (...) Uniform(0, 1], for the uniform prior on sigma (see :func:`draw_sigma2`); else None.
    """

    z: np.ndarray
    bartlett_z: np.ndarray
    chi2: np.ndarray
    sigma: np.ndarray
    uniform: Any
    interweave: Any = None      # (..., p + r + 1) N(0, 1) for the interweaving step (teachlmm.interweave)
    a_gamma: Any = None         # (..., q) Gamma((nu + q_B)/2, 1) for the Huang-Wand a_k (teachlmm.huang_wand)


def _noise_layout(model, prior):
    """How many normals and which gamma shapes a sweep draws (fixed for a model and prior)."""
    J, p, q = model.J, model.p, model.q
    n_bartlett = sum(len(B) * (len(B) - 1) // 2 for B in model.blocks)
    dfs = [prior.nu0 - q + len(B) + J for B in model.blocks]
    shapes = [(df - k) / 2.0 for df, B in zip(dfs, model.blocks) for k in range(len(B))]
    shapes.append(sigma2_conditional(0.0, model.n, prior)[0])
    if prior.A is not None:                             # Huang-Wand: the a_k's gammas (teachlmm.huang_wand)
        shapes += huang_wand.gamma_shapes(model.blocks)
    return p + J * q, n_bartlett, shapes


def draw_noise(rng, model, prior, sweeps=None):
    """The noise of one sweep, or of ``sweeps`` consecutive sweeps (then a sweep axis after the chains).

    Each chain draws from its own streams: its normals, then its gammas (the
    Bartlett diagonals' shapes, then sigma2's), then, for the uniform prior on
    sigma, a uniform. Many sweeps at once give the same numbers as one at a time.

    Parameters
    ----------
    rng : ChainStreams (one chain) or a tuple of them (chains stacked on axis 0)
        Generators, which advance; or their saved states (``State.rng``),
        which stay as they are (the numbers come from fresh generators at
        those positions).
    sweeps : int, optional.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> state = init(model, seed=1)
    >>> noise = draw_noise(state.rng, model, state.prior)
    >>> noise.z.shape                            # p + J q normals for (beta, b)
    (87,)
    >>> bool((draw_noise(state.rng, model, state.prior).z == noise.z).all())   # state.rng did not move
    True
    """
    if _is_saved(rng):
        rng = _restore_streams(rng)
    n_z, n_bz, shapes = _noise_layout(model, prior)
    one_chain = isinstance(rng, ChainStreams)
    chains = (rng,) if one_chain else rng
    S = 1 if sweeps is None else sweeps
    normals = np.empty((len(chains), S, n_z + n_bz))
    gammas = np.empty((len(chains), S, len(shapes)))
    uniform = None if prior.sigma_max is None else np.empty((len(chains), S))
    all_shapes = np.tile(shapes, S)
    for c, streams in enumerate(chains):        # a loop over chains (a handful), not groups
        streams.normal.standard_normal(out=normals[c])
        gammas[c] = streams.gamma.standard_gamma(all_shapes).reshape(S, len(shapes))
        if uniform is not None:
            uniform[c] = 1.0 - streams.uniform.random(S)      # in (0, 1]
    q = model.q
    noise = Noise(normals[..., :n_z], normals[..., n_z:], 2.0 * gammas[..., :q], gammas[..., q], uniform,
                  _interweave.draw_noise(chains, model, S), gammas[..., q + 1:] if prior.A is not None else None)
    if sweeps is None:
        noise = Noise(*(None if a is None else a[:, 0] for a in noise))
    return Noise(*(None if a is None else a[0] for a in noise)) if one_chain else noise


def _noise_per_sweep(rng, model, prior, total):
    """Yield the noise of ``total`` sweeps one at a time, drawn in blocks (a few MB at most)."""
    n_z, n_bz, shapes = _noise_layout(model, prior)
    block = int(max(1, min(256, 2_000_000 // (len(rng) * (n_z + n_bz + len(shapes) + 1)))))
    done = 0
    while done < total:
        noise = draw_noise(rng, model, prior, sweeps=min(block, total - done))
        for i in range(noise.z.shape[1]):
            yield Noise(*(None if a is None else a[:, i] for a in noise))
        done += noise.z.shape[1]


# ----------------------------------------------------------------------------
# the three blocks of a sweep
# ----------------------------------------------------------------------------

def _t(a):
    """Transpose of the last two axes (a stack of matrices)."""
    return a.swapaxes(-1, -2)


class CoefficientBlock(NamedTuple):
    """The conditional law of (beta, b) given (G, sigma2), in factored form (see coefficient_block)."""

    beta_mean: np.ndarray      # (..., p) beta_hat
    A_inv: np.ndarray          # (..., p, p) A^-1 (Var(beta | G, sigma2, y) = sigma2 A^-1)
    Rinv: np.ndarray           # (..., p, p) R^-1, A = R R'
    Minv: np.ndarray           # (..., J, q, q) M_j^-1 (Var(b_j | beta, ...) = sigma2 M_j^-1)
    K: np.ndarray              # (..., J, q, q) M_j^-1 = K_j K_j'


def coefficient_block(stats, G, sigma2, tau2):
    """The conditional law of (beta, b) given (G, sigma2): the mixed-model equations plus the prior.

    This is :func:`teachlmm.mme.solve` with the prior beta ~ N(0, tau2 I) as
    ``beta_precision = (sigma2 / tau2) I``, batched over the chains. With
    G = sigma2 T T' and M~_j = T'Z_j'Z_j T + I = L_j L_j' (Cholesky)::

        M_j^-1   = T M~_j^-1 T' = K_j K_j',   K_j = T L_j^-T
        A        = X'X - sum_j X_j'Z_j M_j^-1 Z_j'X_j + (sigma2 / tau2) I  = R R'
        beta_hat = A^-1 (X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j)

    Parameters
    ----------
    stats : GroupStats.  G : (..., q, q).  sigma2 : (...).
    tau2 : float or (p,): prior variances of beta (inf: flat).

    Returns
    -------
    CoefficientBlock
    """
    sigma2 = np.asarray(sigma2, dtype=float)
    p = stats.XtZ.shape[1]
    prior_precision = sigma2[..., None, None] * np.diag(1.0 / np.broadcast_to(tau2, (p,)))   # (sigma2/tau2) I
    sol = mme.solve(stats, G, sigma2, beta_precision=prior_precision)
    return CoefficientBlock(sol.beta, sol.A_inv, sol.R_inv, sol.Minv, sol.K)


def b_mean(stats, Minv, beta):
    """E(b_j | beta, G, sigma2, y) = M_j^-1 Z_j'(y_j - X_j beta) for every group (and chain): :func:`teachlmm.mme.b_hat`."""
    return mme.b_hat(stats, Minv, beta)


def draw_coefficients(stats, G, sigma2, tau2, z):
    """Draw (beta, b) jointly from their conditional given (G, sigma2), all groups at once.

    First beta with b integrated out, then every b_j given that beta::

        beta = beta_hat + sqrt(sigma2) R^-T z_beta,                  z_beta ~ N(0, I_p)
        b_j  = M_j^-1 Z_j'(y_j - X_j beta) + sqrt(sigma2) K_j z_j,   z_j ~ N(0, I_q)

    (R^-T z_beta has covariance (R R')^-1 = A^-1, and K_j z_j has K_j K_j' = M_j^-1;
    see :func:`coefficient_block` for A, R, K_j.)

    Parameters
    ----------
    stats, G, sigma2, tau2 : as in :func:`coefficient_block`.
    z : (..., p + J q) standard normals (``Noise.z``).

    Returns
    -------
    beta (..., p), b (..., J, q), the CoefficientBlock, and b's conditional mean.
    """
    J, p, q = stats.XtZ.shape
    block = coefficient_block(stats, G, sigma2, tau2)
    root_s2 = np.sqrt(sigma2)
    z_beta, z_b = z[..., :p], z[..., p:].reshape(z.shape[:-1] + (J, q))
    beta = block.beta_mean + root_s2[..., None] * np.einsum("...rp,...r->...p", block.Rinv, z_beta)
    mean_b = b_mean(stats, block.Minv, beta)
    b = mean_b + root_s2[..., None, None] * np.einsum("...jqr,...jr->...jq", block.K, z_b)
    return beta, b, block, mean_b


def bartlett_inv_wishart(S, chi2, z):
    """G ~ InvWishart(nu, S) from Bartlett noise: chi2[k] ~ chi2(nu - k), z ~ N(0, 1).

    Bartlett: A lower triangular with A_kk = sqrt(chi2[k]) and the entries below
    the diagonal z (row by row) has A A' ~ Wishart(nu, I). Write S = C C'
    (Cholesky). Then C^-T A A' C^-1 ~ Wishart(nu, S^-1), and its inverse

        G = C A^-T A^-1 C' = F F',   F = C A^-T,

    is InvWishart(nu, S), mean S / (nu - q - 1). Only the triangular A is
    inverted, never G.
    """
    q = S.shape[-1]
    A = np.zeros(chi2.shape[:-1] + (q, q))
    below = 0
    for k in range(q):                                              # q is small: 1, 2, 3
        A[..., k, k] = np.sqrt(chi2[..., k])
        for m in range(k):
            A[..., k, m] = z[..., below]
            below += 1
    F = cholesky(S) @ _t(lower_inverse(A))                          # F = C A^-T
    return F @ _t(F)


def inv_wishart(nu, S, rng):
    """One draw of G ~ InvWishart(nu, S), by the Bartlett decomposition (:func:`bartlett_inv_wishart`).

    Parameters
    ----------
    nu : float > q - 1.   S : (q, q) positive definite.   rng : numpy Generator.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> draws = np.array([inv_wishart(10.0, np.eye(2), rng) for _ in range(4000)])
    >>> np.round(np.diag(draws.mean(0)), 2)            # S / (nu - q - 1) = I / 7
    array([0.14, 0.14])
    """
    S = np.asarray(S, dtype=float)
    q = S.shape[-1]
    if not nu > q - 1:
        raise TeachLMMError(f"an inverse-Wishart needs nu > q - 1 = {q - 1}, got {nu}")
    chi2 = 2.0 * rng.standard_gamma((nu - np.arange(q)) / 2.0)
    return bartlett_inv_wishart(S, chi2, rng.standard_normal(q * (q - 1) // 2))


def draw_G(b, blocks, prior, chi2, z):
    """Draw G from its conditional given the random effects b, block by block.

    One block (``(1 + x | g)``)::

        G | b ~ InvWishart(nu0 + J, S0 + sum_j b_j b_j')

    Uncorrelated blocks (``||``): block B, of size q_B, gets
    InvWishart(nu0 - q + q_B + J, S0[B, B] + sum_j b_jB b_jB'); G is 0 between blocks.

    Parameters
    ----------
    b : (..., J, q).  blocks : model.blocks.  prior : resolved Prior.
    chi2, z : ``Noise.chi2`` and ``Noise.bartlett_z`` (drawn for these degrees of freedom).

    Returns
    -------
    G (..., q, q); the degrees of freedom (a float for one block, else a tuple,
    one per block); the scale matrices S0 + sum_j b_j b_j' (block diagonal).
    """
    J, q = b.shape[-2], b.shape[-1]
    if len(blocks) == 1:                            # (1 + x | g): one inverse-Wishart for all of G
        scale = prior.S0 + _t(b) @ b                # S0 + sum_j b_j b_j' (b_j: the rows of b)
        df = float(prior.nu0 + J)
        return bartlett_inv_wishart(scale, chi2, z), df, scale
    scale = np.zeros(b.shape[:-2] + (q, q))
    G = np.zeros_like(scale)
    dfs, used_chi2, used_z = [], 0, 0
    for block in blocks:                            # one inverse-Wishart per block; never a loop over groups
        qb, bb = len(block), b[..., block]
        ix = (Ellipsis,) + np.ix_(block, block)
        scale[ix] = prior.S0[ix] + _t(bb) @ bb
        dfs.append(float(prior.nu0 - q + qb + J))
        m = qb * (qb - 1) // 2
        G[ix] = bartlett_inv_wishart(scale[ix], chi2[..., used_chi2:used_chi2 + qb], z[..., used_z:used_z + m])
        used_chi2, used_z = used_chi2 + qb, used_z + m
    return G, tuple(dfs), scale


def sigma2_conditional(ssr, n, prior):
    """Shape and rate of sigma2's inverse-gamma conditional (truncated at sigma_max^2 if set).

    Inverse-gamma prior:    shape = a0 + n/2,     rate = b0 + SSR/2.
    Uniform(0, sigma_max) prior on sigma: p(sigma2 | .) is proportional to
    sigma2^-n/2 exp(-SSR / (2 sigma2)) times the Jacobian d sigma / d sigma2,
    sigma2^-1/2, on sigma2 < sigma_max^2: shape = (n - 1)/2, rate = SSR/2, truncated.
    """
    if prior.sigma_max is None:
        return prior.a0 + n / 2.0, prior.b0 + ssr / 2.0
    return (n - 1) / 2.0, ssr / 2.0


def draw_sigma2(ssr, n, prior, gamma, uniform=None):
    """Draw sigma2 from its conditional InvGamma(shape, rate) given (beta, b).

    Inverse-gamma prior: with ``gamma ~ Gamma(shape, 1)``, sigma2 = rate / gamma.

    Uniform prior on sigma (``prior.sigma_max``): the precision x = 1/sigma2 is
    Gamma(shape, rate) truncated to x > x0 = 1/sigma_max^2. First try
    x = gamma / rate: if it is above x0, keep it (the first try of rejection
    sampling). If not, draw exactly from the truncated law by inverting its
    CDF: with Q the regularised upper incomplete gamma function (the survival
    function) and ``uniform ~ U(0, 1]``, x = Q^-1(uniform Q(rate x0)) / rate.
    Kept tries have density f(x) on x > x0; replacements add
    P(x <= x0) f(x) / Q(rate x0); together f(x) / Q(rate x0), the truncated law.

    Returns sigma2 (...), shape, rate.
    """
    shape, rate = sigma2_conditional(ssr, n, prior)
    x = gamma / rate
    if prior.sigma_max is not None:
        x0 = 1.0 / prior.sigma_max ** 2
        low = x <= x0
        if low.any():                    # rare: only when sigma_max binds
            tail = scipy.special.gammaincc(shape, rate * x0)                    # Q(shape, rate x0)
            exact = np.where(tail > 0, scipy.special.gammainccinv(shape, uniform * tail) / rate, x0)
            x = np.where(low, exact, x)
    return 1.0 / x, shape, rate


# ----------------------------------------------------------------------------
# state, init, step
# ----------------------------------------------------------------------------

class Conditionals(NamedTuple):
    """The full conditional distributions used in one sweep (chains first, if any).

    Attributes
    ----------
    beta_mean : (p,) beta_hat = A^-1 (X'y - sum_j X_j'Z_j M_j^-1 Z_j'y_j).
    beta_cov : (p, p) sigma2 A^-1.
    b_mean : (J, q) M_j^-1 Z_j'(y_j - X_j beta), at the beta just drawn.
    b_cov : (J, q, q) sigma2 M_j^-1.
    G_df : nu0 + J (one block); a tuple nu0 - q + q_B + J, one per block, for ``||``.
    G_scale : (q, q) S0 + sum_j b_j b_j' (block diagonal for uncorrelated blocks).
    sigma2_shape, sigma2_rate : a0 + n/2 and b0 + SSR/2 (uniform-sigma prior: (n-1)/2, SSR/2).
    ssr : ||y - X beta - Z b||^2 at the drawn (beta, b).
    """

    beta_mean: np.ndarray
    beta_cov: np.ndarray
    b_mean: np.ndarray
    b_cov: np.ndarray
    G_df: Any
    G_scale: np.ndarray
    sigma2_shape: float
    sigma2_rate: np.ndarray
    ssr: np.ndarray


class State(NamedTuple):
    """One state of the Gibbs chain(s). Arrays carry the chains on axis 0 when there are several.

    Attributes
    ----------
    iteration : int (0 at the start; sweeps done).
    beta : (p,) fixed effects.   b : (J, q) random effects.
    G : (q, q) covariance of the random effects.   sigma2 : residual variance.
    cond : Conditionals of the last sweep (at init: the (beta, b) moments at the start
        values; the G and sigma2 fields are None until the first sweep).
    rng : where the random streams stand: a ChainStreams of saved generator
        states (``numpy.random.Generator.bit_generator.state`` dicts), or a tuple
        of them, one per chain. Plain data, not generators: :func:`step` draws
        from fresh generators set to these positions and returns their new
        positions in the new state, so a state is never changed by stepping from it.
    model : the Model.   prior : the resolved Prior.
    """

    iteration: int
    beta: np.ndarray
    b: np.ndarray
    G: np.ndarray
    sigma2: np.ndarray
    cond: Conditionals
    rng: Any
    model: Any
    prior: Prior

    def __repr__(self):
        """One line: iteration, G, sigma2 and the shapes; the arrays stay one attribute away."""
        return frames.short_repr("gibbs.State", {"iteration": self.iteration, "beta": self.beta, "G": self.G,
                                                 "sigma2": self.sigma2, "b": self.b})


def _dispersed_start(model, rng):
    """Over-dispersed start values (G, sigma2) for one chain or each chain of a tuple.

    With v = var(y) and m_k = mean(z_k^2), each chain starts at a log-uniform
    draw of sigma2 in [0.05 v, v] and of G_kk in [0.01, 1] v / m_k (random term
    k then explains 1 % to 100 % of var(y)); correlations start at 0. The
    range is wide, so chains that agree after warm-up have forgotten where
    they began (that is what R-hat checks).
    """
    v = response_variance(model)
    m = np.diag(model.stats.ZtZ.sum(0)) / model.n
    m = np.where(m > 0, m, 1.0)
    one_chain = isinstance(rng, ChainStreams)
    u = np.array([streams.uniform.random(model.q + 1) for streams in ((rng,) if one_chain else rng)])
    sigma2 = v * np.exp(np.log(0.05) * u[:, 0])
    G = (v / m * np.exp(np.log(0.01) * u[:, 1:]))[:, :, None] * np.eye(model.q)
    return (G[0], sigma2[0]) if one_chain else (G, sigma2)


def init(model, seed=None, prior=None, chains=None, G=None, sigma2=None):
    """The starting state: (G, sigma2) per chain, (beta, b) at their conditional means there.

    Parameters
    ----------
    model : Model
    seed : None, int >= 0, numpy.random.SeedSequence or numpy.random.Generator, optional
        Chain k uses generators from ``SeedSequence(seed).spawn(chains)[k]``;
        the same seed gives the same draws (teachlmm's seed policy:
        :func:`teachlmm.validators.seed_sequence`).
    prior : Prior, optional (default: :func:`default_prior`).
    chains : int, optional
        None: one chain, arrays without a chain axis (the step-through view).
        An int: that many chains, advanced together (chains on axis 0).
    G, sigma2 : optional start values shared by every chain; default: an
        over-dispersed draw per chain (see ``_dispersed_start``).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> state = init(model, seed=1)
    >>> state = step(state)
    >>> state.iteration, state.beta.shape, state.b.shape, state.G.shape
    (1, (2,), (85, 2), (2, 2))
    >>> state.cond.G_df               # nu0 + J = 3 + 85
    88.0
    """
    warn_raw_steps(model, "gibbs.sample", "tl.gibbs.init(mc, ...)")
    prior = (prior if prior is not None else Prior()).resolve(model)
    n_chains = 1 if chains is None else validators.positive_int(chains, "chains")
    rngs = _chain_generators(seed, n_chains)
    rng = rngs[0] if chains is None else rngs
    G0, s0 = _dispersed_start(model, rng)
    if G is not None or sigma2 is not None:          # start values: checked as every method checks them
        G_chk, s_chk = model.check_variance_components(
            G if G is not None else G0.reshape(-1, model.q, model.q)[0],
            sigma2 if sigma2 is not None else np.ravel(s0)[0])
        if G is not None:
            G0 = np.broadcast_to(G_chk, G0.shape).copy()
        if sigma2 is not None:
            s0 = np.full(np.shape(s0), s_chk)
    s0 = np.asarray(s0, dtype=float)
    block = coefficient_block(model.stats, G0, s0, prior.tau2)
    mean_b = b_mean(model.stats, block.Minv, block.beta_mean)
    cond = Conditionals(block.beta_mean, s0[..., None, None] * block.A_inv, mean_b,
                        s0[..., None, None, None] * block.Minv, None, None, None, None, None)
    return State(0, block.beta_mean, mean_b, G0, s0, cond, _save_streams(rng), model, prior)


def step(state, interweave=True, noise=None):
    """One Gibbs sweep: (beta, b) | G, sigma2;  then G | b;  then sigma2 | beta, b.

    With ``interweave`` (the default), (beta, G, b) are redrawn after G through
    the non-centred random effects u_j = L^-1 b_j (:mod:`teachlmm.interweave`).

    Pure: ``state`` is not changed, and the same state in gives the same state
    out. The sweep's random numbers come from fresh generators set to the
    positions saved in ``state.rng``; their new positions travel in the
    returned state.

    Parameters
    ----------
    state : State
        From :func:`init`, or a previous step.
    interweave : bool
        Add the interweaving step (default True).
    noise : Noise, optional
        The sweep's random numbers (:func:`draw_noise`). Given, the sweep is
        run on them and ``state.rng`` is neither used nor moved (``sample``
        draws the noise of many sweeps at once this way).

    Returns
    -------
    State
        The new state; ``cond`` holds the conditional laws the sweep drew from.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> s = step(step(init(model, seed=1)))
    >>> s.iteration, s.cond.sigma2_shape       # a0 + n/2 = 0 + 919/2 (Jeffreys)
    (2, 459.5)
    >>> bool((step(s).G == step(s).G).all())   # the same state in, the same state out
    True
    """
    m, prior = state.model, state.prior
    rng = state.rng
    if noise is None:
        streams = _restore_streams(state.rng)       # generators at the saved positions (state.rng stays as it is)
        noise = draw_noise(streams, m, prior)        # every random number of the sweep, first
        rng = _save_streams(streams)                 # the positions after them: they go into the new state
    # 1. (beta, b) | G, sigma2:  beta ~ N(beta_hat, sigma2 A^-1),  b_j ~ N(M_j^-1 Z_j'(y_j - X_j beta), sigma2 M_j^-1)
    beta, b, block, mean_b = draw_coefficients(m.stats, state.G, state.sigma2, prior.tau2, noise.z)
    # 2. G | b ~ InvWishart(nu0 + J, S0 + sum_j b_j b_j')   (Huang-Wand: first a | G, then G | a, b)
    G_prior = prior if prior.A is None else huang_wand.G_prior_given_a(
        huang_wand.draw_a(state.G, m.blocks, prior.A, noise.a_gamma))
    G, G_df, G_scale = draw_G(b, m.blocks, G_prior, noise.chi2, noise.bartlett_z)
    if interweave:                                   # (beta, G, b) again, through u_j = L^-1 b_j
        beta, b, G, _ = _interweave.Interweaving(m, prior)(beta, b, G, state.sigma2, noise.interweave)
    # 3. sigma2 | beta, b ~ InvGamma(a0 + n/2, b0 + SSR/2),  SSR = ||y - X beta - Z b||^2
    ssr = residual_sum_of_squares(m.stats, beta, b)
    sigma2, shape, rate = draw_sigma2(ssr, m.stats.n_total, prior, noise.sigma, noise.uniform)
    s2 = np.asarray(state.sigma2)
    cond = Conditionals(block.beta_mean, s2[..., None, None] * block.A_inv, mean_b,
                        s2[..., None, None, None] * block.Minv, G_df, G_scale, float(shape), rate, ssr)
    return State(state.iteration + 1, beta, b, G, sigma2, cond, rng, m, prior)


def steps(model, seed=None, prior=None, chains=None, max_iter=None, interweave=True, G=None, sigma2=None):
    """Generator over Gibbs states: the start (:func:`init`), then one state per sweep (:func:`step`).

    The loop ``state = step(state)`` written once, as :func:`teachlmm.em.steps`
    writes EM's; ``sample(..., engine="textbook")`` runs it.

    Parameters
    ----------
    model : Model
    seed, prior, chains, G, sigma2 : as in :func:`init`.
    max_iter : int >= 0, optional
        Stop after this many sweeps (default: never; take what you need).
    interweave : bool
        As in :func:`step`.

    Yields
    ------
    State
        ``iteration`` 0 (the start), 1, 2, ...

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> [s.iteration for s in steps(model, seed=1, max_iter=3)]
    [0, 1, 2, 3]
    >>> kept = [float(s.sigma2) for s in steps(model, seed=1, max_iter=400)][101:]   # after 100 sweeps
    >>> round(sum(kept) / len(kept), 2)        # sigma2's posterior mean, roughly (REML: 0.571)
    0.57
    """
    max_iter = None if max_iter is None else validators.nonnegative_int(max_iter, "max_iter")
    state = init(model, seed=seed, prior=prior, chains=chains, G=G, sigma2=sigma2)
    yield state
    while max_iter is None or state.iteration < max_iter:
        state = step(state, interweave)
        yield state


# ----------------------------------------------------------------------------
# the same sweep, fast, for q = 1 and q = 2 (what sample() runs by default)
# ----------------------------------------------------------------------------

class FastSweep(_fast_sweep.FastSweep):
    """The sweep of :func:`step` for q = 1 or 2, its per-group algebra written out (``sample``'s fast engine).

    The class and its algebra live in ``teachlmm._fast_sweep`` (private: read
    :func:`step` first). Here it gets this module's own blocks 2 and 3,
    :func:`draw_G` and :func:`draw_sigma2`, so that the fast sweep draws G and
    sigma2 by the very functions a reader reads. Called as
    ``sweep(G, sigma2, noise) -> (beta, b, G, sigma2)``, chains on axis 0.
    """

    draw_G = staticmethod(draw_G)
    draw_sigma2 = staticmethod(draw_sigma2)


# ----------------------------------------------------------------------------
# many sweeps: sample() (its draws make a teachlmm.posterior.Posterior)
# ----------------------------------------------------------------------------

ENGINES = ("fast", "textbook", "collapsed")



def _sample_several_factors(model, draws, warmup, chains, seed, prior, keep_b, thin, interweave, engine):
    """``sample`` for a model with several grouping factors: :func:`teachlmm.multilevel_gibbs.sample`.

    That sampler draws (beta, b_1, ..., b_K) jointly, then each G_k, then sigma2; it has one engine and
    no interweaving step yet, so asking for either is an error rather than silently ignored.
    """
    if engine != "fast" or interweave is not True:
        raise TeachLMMError("a model with several grouping factors is sampled by teachlmm.multilevel_gibbs "
                            "(a joint draw of all random effects); it has no engine= or interweave= choice: "
                            "leave both at their defaults")
    from . import multilevel_gibbs     # imported here: multilevel_gibbs imports this module's Prior
    return multilevel_gibbs.sample(model, draws=draws, warmup=warmup, chains=chains, seed=seed, prior=prior,
                                   thin=thin, keep_b=keep_b)

def sample(model, draws=4000, warmup=1000, chains=4, seed=None, prior=None, keep_b=True,
           progress=False, thin=1, interweave=True, engine="fast"):
    """Draw from the posterior with ``chains`` Gibbs chains advanced together.

    The chains start as :func:`init` says and run the sweep of :func:`step`:
    literally (``engine="textbook"``) or in an equivalent faster form (``"fast"``).

    Parameters
    ----------
    model : Model
        One grouping factor. A model with several (``(1 | batch/cask)``) is handed to
        :func:`teachlmm.multilevel_gibbs.sample` (a joint draw of all random effects),
        which returns a :class:`~teachlmm.multilevel_gibbs.MultilevelPosterior`.
    draws : int > 0
        Draws kept per chain (after warm-up and thinning). The default, 4 x 4000
        after 1000 warm-up, gives bulk and tail ESS >= 400 and R-hat <= 1.01 for
        every parameter of radon M3 in 9 of seeds 0-9 under the default prior
        (tests/benchmarks and the issue-15 report have the measurement).
    warmup : int >= 0
        Sweeps discarded at the start of every chain.
    chains : int > 0
    seed : None, int >= 0, SeedSequence or Generator, optional
        Same seed and number of chains: the same draws (the seed policy of
        :mod:`teachlmm.validators`). Chain k does not
        depend on how many chains run beside it.
    prior : Prior, optional (default: :func:`default_prior`, named in the summary).
    keep_b : bool
        Keep the random effects' draws (chains x draws x J x q floats: large
        for many groups).
    progress : bool
        Print sweeps and draws per second to stderr while sampling.
    thin : int > 0
        Keep every ``thin``-th sweep (``draws * thin`` sweeps after warm-up).
    interweave : bool
        Add the interweaving step of :mod:`teachlmm.interweave` to every sweep
        (default; G then mixes several times faster). ``False``: the centred sweep alone.
    engine : {"fast", "textbook", "collapsed"}
        ``"textbook"``: the loop of :func:`steps`, ``state = step(state)``, the
        very sweep this module's functions spell out. ``"fast"`` (default): the
        same sweep on the same random numbers, drawn for many sweeps at a time,
        with the per-group q x q algebra of block 1 written out entry by entry
        for q <= 2 (``FastSweep``); for q > 2 it runs :func:`step` on that
        noise. Both give the same draws, to rounding (a test holds them equal
        to 1e-10 over 100 sweeps); "fast" takes a fraction of the time.
        ``"collapsed"``: not a sweep but :mod:`teachlmm.collapsed`: (G, sigma2)
        from their marginal posterior (b and beta integrated out) by
        independence Metropolis-Hastings, then beta and b exactly given them.
        The same posterior (SBC and agreement with the sweep are tested), other
        draws; one grouping factor; ``post.acceptance`` gives each chain's
        acceptance rate.

    Returns
    -------
    Posterior
        A :class:`teachlmm.posterior.Posterior`. Draws in the model's own coordinates. A model with a column whose mean
        exceeds 100 times its spread is sampled on its centred copy, with the
        prior carried over exactly (see ``_working_basis``), and the draws
        mapped back; a model built from chunks samples from its statistics.

    Warns
    -----
    ConvergenceWarning
        Once, if R-hat > 1.01 or bulk or tail ESS < 400 for any of beta, G,
        sigma2 (:func:`teachlmm.convergence.check`): the warning names them and
        says how much longer to run.

    Raises
    ------
    TeachLMMError
        draws, chains or thin not a positive integer, warmup negative, an
        unknown engine, or an invalid prior (see :class:`Prior`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> post = sample(model, draws=300, warmup=100, chains=2, seed=1)
    >>> post.draws["beta"].shape, post.draws["G"].shape, post.draws["b"].shape
    ((2, 300, 2), (2, 300, 1, 1), (2, 300, 85, 1))
    >>> round(float(post.get("floor").mean()), 1)
    -0.7
    >>> slow = sample(model, draws=300, warmup=100, chains=2, seed=1, engine="textbook")
    >>> bool(abs(slow.draws["beta"] - post.draws["beta"]).max() < 1e-10)   # the same draws
    True
    """
    if hasattr(model, "terms"):          # several grouping factors: the sampler of teachlmm.multilevel_gibbs
        return _sample_several_factors(model, draws, warmup, chains, seed, prior, keep_b, thin, interweave, engine)
    draws, chains, thin = (validators.positive_int(draws, "draws"), validators.positive_int(chains, "chains"),
                           validators.positive_int(thin, "thin"))
    warmup = validators.nonnegative_int(warmup, "warmup")
    engine = _check_engine(engine)
    model_in = model
    start = time.perf_counter()
    prior = (prior if prior is not None else Prior()).resolve(model)
    work, centring, prior_w = _working_basis(model, prior)
    if engine == "collapsed":
        return _sample_collapsed(model_in, work, centring, prior, prior_w, draws, warmup, chains, seed, keep_b, thin,
                                 interweave, progress, start)
    state = init(work, seed=seed, prior=prior_w, chains=chains)
    model = work
    total = warmup + draws * thin
    sweeps = _textbook_sweeps(state, interweave) if engine == "textbook" else _fast_sweeps(state, interweave, total)
    q, p, J = model.q, model.p, model.J
    out = {"beta": np.empty((chains, draws, p)), "G": np.empty((chains, draws, q, q)),
           "sigma2": np.empty((chains, draws))}
    if keep_b:
        out["b"] = np.empty((chains, draws, J, q))
    shown = start
    for i in range(total):
        beta, b, G, sigma2 = next(sweeps)
        kept = i - warmup
        if kept >= 0 and kept % thin == 0:
            d = kept // thin
            out["beta"][:, d], out["G"][:, d], out["sigma2"][:, d] = beta, G, sigma2
            if keep_b:
                out["b"][:, d] = b
        if progress and (time.perf_counter() - shown > 0.5 or i == total - 1):
            shown = time.perf_counter()
            rate = (i + 1) / (shown - start)
            print(f"\rsweep {i + 1}/{total} ({'warm-up' if kept < 0 else 'sampling'}): "
                  f"{rate:.0f} sweeps/s, {rate * chains:.0f} draws/s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    model = _back_to_basis(out, centring, state.model, model_in)
    post = Posterior(model, out, prior, warmup=warmup, thin=thin, seconds=time.perf_counter() - start, seed=seed,
                     engine=engine)
    convergence.check(post)                     # warns once (R-hat, bulk and tail ESS of beta, G, sigma2)
    return post


def _sample_collapsed(model_in, work, centring, prior, prior_w, draws, warmup, chains, seed, keep_b, thin,
                      interweave, progress, start):
    """``sample(..., engine="collapsed")``: the chains of :func:`teachlmm.collapsed.run`, as a Posterior."""
    if interweave is not True:
        raise TeachLMMError("interweave= chooses a step of the Gibbs sweep; the collapsed engine has no sweep "
                            "(it draws (G, sigma2) from their marginal posterior): leave interweave out")
    run = collapsed.run(work, prior_w, draws, warmup, chains, validators.seed_sequence(seed), keep_b=keep_b,
                        thin=thin)
    out = run.draws
    model = _back_to_basis(out, centring, work, model_in)
    post = Posterior(model, out, prior, warmup=warmup, thin=thin, seconds=time.perf_counter() - start, seed=seed,
                     engine="collapsed")
    post.acceptance, post.proposal_efficiency = run.acceptance, run.efficiency
    if progress:
        print(f"collapsed sampler: acceptance {', '.join(f'{a:.2f}' for a in run.acceptance)} (per chain), "
              f"proposal efficiency {run.efficiency:.2f}", file=sys.stderr)
    convergence.check(post, stacklevel=4)
    return post


def _check_engine(engine):
    """``engine`` if it is one of ENGINES, else a TeachLMMError saying what each one is."""
    if isinstance(engine, str) and engine in ENGINES:
        return engine
    raise TeachLMMError(f"engine must be 'fast' (the default: the sweep of gibbs.step with its per-group algebra "
                        f"written out, same draws), 'textbook' (the loop state = gibbs.step(state) itself) or "
                        f"'collapsed' (teachlmm.collapsed: (G, sigma2) from their marginal posterior, then beta "
                        f"and b exactly), got {engine!r}")


def _textbook_sweeps(state, interweave):
    """(beta, b, G, sigma2) after each sweep of the loop ``state = step(state)``: the sweep a reader reads."""
    while True:
        state = step(state, interweave)
        yield state.beta, state.b, state.G, state.sigma2


def _fast_sweeps(state, interweave, total):
    """The draws of :func:`_textbook_sweeps`, faster: the same noise, drawn for many sweeps at once.

    For q <= 2 each sweep is ``FastSweep``'s (block 1's per-group algebra
    written out); for q > 2 it is :func:`step` run on that noise.
    """
    model, prior = state.model, state.prior
    noises = _noise_per_sweep(_restore_streams(state.rng), model, prior, total)
    if model.q > 2:
        for noise in noises:
            state = step(state, interweave, noise)
            yield state.beta, state.b, state.G, state.sigma2
        return
    sweep, G, sigma2 = FastSweep(model, prior, interweave), state.G, state.sigma2
    for noise in noises:
        beta, b, G, sigma2 = sweep(G, sigma2, noise)
        yield beta, b, G, sigma2


def _working_basis(model, prior):
    """(model to sample, Centring, the prior in its basis); see :meth:`teachlmm.Model.fitting_basis`.

    With a column of large mean the sampler runs on the centred copy. The
    prior is the one stated for the model (``prior``, resolved on it); in the
    centred basis G_c = S_z^-1 G S_z^-T, so G ~ InvWishart(nu0, S0) is
    G_c ~ InvWishart(nu0, S_z^-1 S0 S_z^-T), and the flat prior on beta stays
    flat: the posterior is the same, only written in other coordinates. A
    proper prior on beta (finite tau2) is not invariant under the shift of
    the intercept, so then the raw statistics are used, with a warning.
    """
    work, centring = model.fitting_basis()
    if work is model:
        return model, centring, prior
    if np.any(np.isfinite(np.asarray(prior.tau2, dtype=float))):
        name, mean, _ = model._large_means[0]
        warnings.warn(f"column {name!r} has a large mean ({mean:.6g}): the sampler centres such a model only "
                      "with a flat prior on beta (tau2 = inf, the default), so it runs on the raw statistics, "
                      f"which have lost digits. Subtract a constant from {name!r} first, or use the flat prior",
                      ConditioningWarning, stacklevel=3)
        return model, type(centring).identity(model.p, model.q), prior
    if prior.S0 is None:                          # Huang-Wand: a prior on G's own sds and correlations
        if np.array_equal(centring.Sz, np.eye(model.q)):
            return work, centring, prior          # only y and X moved: G_c = G, the same prior
        name, mean, _ = model._large_means[0]
        warnings.warn(f"column {name!r} has a large mean ({mean:.6g}) and a random slope: the Huang-Wand prior "
                      "on G's standard deviations is not invariant under the change of basis that centres it, "
                      "so the sampler runs on the raw statistics, which have lost digits. Subtract a constant "
                      f"from {name!r} first", ConditioningWarning, stacklevel=3)
        return model, type(centring).identity(model.p, model.q), prior
    S0 = centring.G_centred(prior.S0)                # inverse-Wishart: G_c ~ InvWishart(nu0, S_z^-1 S0 S_z^-T)
    moved = copy.copy(prior)                         # a resolved prior (a0 = b0 = 0 is Jeffreys): no re-check
    object.__setattr__(moved, "S0", (S0 + S0.T) / 2)
    return work, centring, moved


def _back_to_basis(out, centring, work, model):
    """Map the draws of the working basis back in place: beta = S_x(beta_c + c_y e_0), G = S_z G_c S_z', b = S_z b_c."""
    if work is model:
        return model
    out["beta"] = centring.beta(out["beta"])
    out["G"] = centring.G(out["G"])
    if "b" in out:
        out["b"] = centring.b(out["b"])
    return model
