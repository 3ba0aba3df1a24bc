"""Is a Gibbs run long enough? The checks that :func:`teachlmm.gibbs.sample` makes before it returns.

A run is trusted for a quantity when its chains agree and it holds enough
independent information about it (Vehtari, Gelman, Simpson, Carpenter &
Buerkner 2021, whose thresholds these are):

* **R-hat <= 1.01** (rank-normalised split R-hat): the chains, each split in
  half, look like draws from one distribution;
* **bulk ESS >= 400**: enough effective draws for the mean and median;
* **tail ESS >= 400**: enough for the 5 % and 95 % quantiles (the ends of a
  credible interval).

The quantities checked are the model's parameters: beta, the distinct entries
of G (on and below the diagonal), and sigma2 (not the random effects b_j, one
per group). All of them are checked at once (``diagnostics._rhat_and_ess``:
the numbers of :func:`~teachlmm.diagnostics.rhat`, :func:`~teachlmm.diagnostics.ess_bulk`
and :func:`~teachlmm.diagnostics.ess_tail`, computed together, far quicker). When any fails,
:func:`check` warns once for the posterior (a :class:`~teachlmm.errors.ConvergenceWarning`
naming the quantities and what to do) and remembers the message, so that
:meth:`teachlmm.posterior.Posterior.summary` prints it without warning again.
"""
import warnings

import numpy as np

from . import diagnostics
from .errors import ConvergenceWarning

__all__ = ["RHAT_MAX", "ESS_MIN", "problems", "message", "check"]

RHAT_MAX = 1.01
ESS_MIN = 400
MIN_DRAWS = 2 * diagnostics.MIN_DRAWS    # split R-hat halves each chain; diagnostics needs MIN_DRAWS per half


def problems(post):
    """The checked quantities that fail, with (R-hat, bulk ESS, tail ESS): a dict name -> tuple.

    Examples
    --------
    >>> import teachlmm as tl, warnings
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     post = tl.gibbs.sample(model, draws=50, warmup=10, chains=2, seed=1)
    >>> "sigma2" in problems(post) or "G[0,0]" in problems(post)
    True
    """
    names = post.checked_names()
    draws = np.stack([post.get(name) for name in names])           # (quantities, chains, draws)
    # = diagnostics.rhat / ess_bulk / ess_tail of each post.get(name), all quantities in one pass
    rhat, bulk, tail = diagnostics._rhat_and_ess(draws)
    failed = ~((rhat <= RHAT_MAX) & (bulk >= ESS_MIN) & (tail >= ESS_MIN))     # a NaN fails too
    return {name: (float(rhat[k]), float(bulk[k]), float(tail[k]))
            for k, name in enumerate(names) if failed[k]}


def message(post, bad):
    """What went wrong and what to do, in one sentence (None when nothing did)."""
    if not bad:
        return None
    worst = min(min(b, t) for _, b, t in bad.values())
    names = ", ".join(f"{n} (R-hat {r:.3f}, ESS bulk {b:.0f}, tail {t:.0f})" for n, (r, b, t) in bad.items())
    more = max(2, int(-(-ESS_MIN // max(worst, 1.0))) + 1) if worst < ESS_MIN else 2
    return (f"the chains have not converged or mixed well enough for {names}: R-hat must be <= {RHAT_MAX} "
            f"and bulk and tail ESS >= {ESS_MIN}. Run about {more} times as many draws "
            f"(draws={more * post.n_draws}) and a longer warm-up before using these numbers.")


def check(post, warn=True, stacklevel=3):
    """The convergence message of ``post`` (None if all is well), warning about it the first time only.

    The result is kept on the posterior (``post.convergence_message``); later
    calls return it without warning again.
    """
    if not hasattr(post, "convergence_message"):
        if post.n_draws < MIN_DRAWS:
            post.convergence_message = (f"only {post.n_draws} draws per chain: too few to check convergence "
                                        f"(R-hat and ESS need at least {MIN_DRAWS}); do not use these numbers "
                                        f"for inference (the default, draws=4000, is enough for typical models)")
        else:
            post.convergence_message = message(post, problems(post))
        if warn and post.convergence_message:
            warnings.warn(post.convergence_message, ConvergenceWarning, stacklevel=stacklevel)
    return post.convergence_message
