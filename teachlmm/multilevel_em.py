"""EM with one G_k per grouping factor (ML and REML), one step at a time.

With several random terms the missing data are all the random effects
b = (b_1, ..., b_K) (and beta too, for REML). If we knew them, each G_k would
be a sample moment over the levels of its factor::

    G_k = (1/J_k) sum_j b_kj b_kj'

EM replaces it by its conditional expectation given y at the current
parameters:

E-step (at theta, i.e. G_k = sigma2 T_k T_k'; :meth:`~teachlmm.multilevel_mme.Algebra.solve`)
    b_hat = the BLUP from the joint mixed-model equations of all the terms;
    Var(b_kj | y) = sigma2 T_k [A^-1]_jj T_k'  (ML; A = Lambda'Z'Z Lambda + I)
    REML adds beta's uncertainty: [A^-1 + P (R_X'R_X)^-1 P']_jj, P = A^-1 Lambda'Z'X.
    For crossed factors these are diagonal blocks of the *joint* inverse:
    the factors are not independent given y.

M-step (ECME: each half raises the likelihood)
    G_k_new = (1/J_k) sum_j [ b_hat_kj b_hat_kj' + Var(b_kj | y) ]   (sigma2 fixed)
    then sigma2 at its profiled optimum for the new ratios T_k = chol(G_k_new / sigma2)
    (r2 / n for ML, r2 / (n - p) for REML).

The first half is the EM update of the G_k with sigma2 held; the second
maximises over sigma2 with the ratios G_k / sigma2 held. Neither lowers the
(restricted) log-likelihood, so neither does the step.

Use it one step at a time::

    state = init(model, reml=True)
    state = step(state)              # state.Gs, state.sigma2, state.deviance, state.theta
    for s in steps(model): ...       # a generator over step()

EM converges slowly when a variance is small or factors are crossed (its rate
is the fraction of missing information); :func:`fit` runs EM for a few
steps and finishes with the Newton polish of :mod:`teachlmm.multilevel_fit`.

Examples
--------
>>> import teachlmm as tl
>>> from teachlmm.multilevel import MultilevelModel
>>> m = MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv"))
>>> s = init(m)
>>> s1 = step(s)
>>> bool(s1.deviance <= s.deviance)
True
"""
from typing import NamedTuple

import numpy as np

from .multilevel_fit import MultilevelResult, optimise
from .multilevel_mme import Algebra, T_to_theta

__all__ = ["State", "init", "step", "steps", "fit"]


class State(NamedTuple):
    """Where EM is: theta (lme4's), the G_k, sigma2, the (REML) deviance, the BLUPs and the iteration."""

    algebra: Algebra
    reml: bool
    theta: np.ndarray
    Gs: list
    sigma2: float
    deviance: float
    b: list
    postvar: list
    iteration: int


def _state(alg, theta, reml, iteration):
    sol = alg.solve(theta, reml)
    return State(alg, reml, theta, sol["Gs"], float(sol["sigma2"]), float(sol["deviance"]), sol["b"],
                 sol["postvar"], iteration)


def init(model, reml=True, theta=None):
    """The state at lme4's start (every T_k = I: each G_k = sigma2 I) or at a given theta."""
    alg = model if isinstance(model, Algebra) else Algebra(model)
    return _state(alg, alg.start() if theta is None else np.asarray(theta, float), reml, 0)


def _chol(M):
    """A lower-triangular T with T T' = M (M may be singular: then a zero column, as on the boundary)."""
    w, V = np.linalg.eigh((M + M.T) / 2)
    R = np.linalg.qr((V * np.sqrt(np.clip(w, 0, None))).T, mode="r")    # M = R'R, R upper
    T = R.T
    return T * np.where(np.diag(T) < 0, -1.0, 1.0)                       # diagonal >= 0, as lme4's theta


def step(state):
    """One EM step: G_k <- mean_j (b_kj b_kj' + Var(b_kj | y)), then sigma2 profiled."""
    theta = []
    for b, V in zip(state.b, state.postvar):
        G_new = (np.einsum("ja,jb->ab", b, b) + V.sum(axis=0)) / b.shape[0]      # the M-step for G_k
        theta.append(T_to_theta(_chol(G_new / state.sigma2)))                      # ratio to the current sigma2
    return _state(state.algebra, np.concatenate(theta), state.reml, state.iteration + 1)


def steps(model, reml=True, max_iter=100, **start):
    """A generator of EM states, from :func:`init` on (``max_iter`` steps)."""
    state = init(model, reml, **start)
    yield state
    for _ in range(max_iter):
        state = step(state)
        yield state


def fit(model, reml=True, em_steps=20, tol=1e-10):
    """EM for ``em_steps`` steps (or until the deviance moves by < tol relative), then the Newton polish.

    Returns a :class:`~teachlmm.multilevel_fit.MultilevelResult`. The polish
    (Newton's method on EM's own fixed-point equation) is what makes it
    exact: EM alone needs hundreds of steps when a factor carries little
    information.
    """
    state = init(model, reml)
    for _ in range(em_steps):
        new = step(state)
        done = abs(new.deviance - state.deviance) < tol * abs(state.deviance)
        state = new
        if done:
            break
    theta, res = optimise(state.algebra, reml, start=state.theta)
    return MultilevelResult(state.algebra.model, state.algebra, theta, reml, optimiser=res,
                            method=f"EM ({state.iteration} steps) + L-BFGS-B + Newton polish")
