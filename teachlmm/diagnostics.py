r"""Convergence diagnostics for MCMC draws: R-hat, effective sample size, MCSE.

A Gibbs sampler (or any MCMC method) produces *chains*: sequences of draws
that are only guaranteed to look like draws from the posterior after the
chain has "forgotten" its starting point, and that are correlated with their
neighbours. Two questions must be answered before the draws are used:

1. **Have the chains converged?**  Run ``M`` chains from different starting
   points. If they all sample the same distribution, the variation *between*
   the chains is no larger than the variation *within* each chain. With
   ``N`` draws per chain, ``W`` the mean of the within-chain variances and
   ``B / N`` the variance of the chain means, R-hat is the square root of the
   ratio of the pooled variance estimate to the within-chain variance:

   .. math::

       \hat R = \sqrt{\frac{\widehat{\mathrm{var}}^+}{W}}, \qquad
       \widehat{\mathrm{var}}^+ = \frac{N - 1}{N} W + \frac{B}{N}.

   It is >= 1 up to noise, and close to 1 (say below 1.01) when the chains
   agree. Values above 1.01 mean: run longer, or fix the sampler.

2. **How much information do the draws hold?**  ``S`` correlated draws
   estimate a posterior mean about as precisely as ``ESS`` independent draws
   would, where

   .. math::

       \mathrm{ESS} = \frac{S}{\tau}, \qquad \tau = 1 + 2 \sum_{t \ge 1} \rho_t

   and ``rho_t`` is the autocorrelation at lag ``t``. ``tau`` (the integrated
   autocorrelation time) is how many draws it takes to get one "independent"
   draw's worth of information. The Monte Carlo standard error of a posterior
   mean is then ``sd / sqrt(ESS)``.

This module follows Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat for
assessing convergence of MCMC", *Bayesian Analysis* 16(2), 667-718, which
improves the classical recipe in three ways:

* **Split chains.**  Each chain is cut into a first and a second half, which
  are treated as two chains. A chain that is still drifting then disagrees
  with itself, and R-hat notices.
* **Rank normalisation.**  The draws are replaced by the normal quantiles of
  their ranks. R-hat and ESS are then well defined even for heavy-tailed
  posteriors (a Cauchy has no mean, and the classical R-hat is meaningless
  there) and they do not depend on a monotone re-parametrisation.
* **Folding.**  Chains with the same location but different scales fool a
  mean-based R-hat. Computing R-hat again on ``|x - median(x)|`` catches them;
  the reported R-hat is the larger of the two ("bulk" and "tail").

The functions, from the building blocks up:

===============================  ================================================
``split_chains``                 (M, N) chains -> (2M, N//2) half-chains
``rank_normalize``               draws -> normal scores of their pooled ranks
``potential_scale_reduction``    Gelman-Rubin R-hat of chains as given
``rhat``                         rank-normalised, folded, split R-hat
``autocovariance``               per-chain autocovariances (FFT)
``combined_autocorrelation``     multi-chain autocorrelation estimate rho_t
``autocorrelation_time``         tau from rho_t (Geyer's initial sequences)
``effective_sample_size``        S / tau of chains as given
``ess_bulk``                     ESS of rank-normalised split chains
``ess_tail``                     ESS of the 5% and 95% quantile indicators
``ess_mean``                     ESS of split chains (for the posterior mean)
``mcse_mean``                    Monte Carlo standard error of the mean
===============================  ================================================

Every statistic takes ``x`` with shape ``(chains, draws)``; a 1-D array is one
chain. The numbers agree with ArviZ's ``rhat(method="rank")`` and
``ess(method="bulk" / "tail" / "mean")``, except that (i) R-hat is also
computed for a single chain (from its two halves, as the paper allows) where
ArviZ returns NaN, and (ii) the ESS of draws that are all equal is NaN (there
is no variance to estimate) where ArviZ returns the number of draws.

The check :mod:`teachlmm.convergence` runs after every Gibbs run needs R-hat,
bulk and tail ESS of every parameter. It calls ``_rhat_and_ess``, a private
version of ``rhat``, ``ess_bulk`` and ``ess_tail`` for many quantities at once
that gives the same numbers with far less work (one sort per quantity, numpy
calls over all quantities together); the comment above it says how.
"""
import functools

import numpy as np
import scipy.fft
import scipy.special
import scipy.stats

from .errors import DataError

__all__ = [
    "split_chains",
    "rank_normalize",
    "potential_scale_reduction",
    "rhat",
    "autocovariance",
    "combined_autocorrelation",
    "autocorrelation_time",
    "effective_sample_size",
    "ess_bulk",
    "ess_tail",
    "ess_mean",
    "mcse_mean",
]

MIN_DRAWS = 4
"""Fewest draws per chain accepted: each half-chain then has at least 2 draws."""


# ----------------------------------------------------------------------------
# input checking and splitting
# ----------------------------------------------------------------------------

def _as_chains(x):
    """``x`` as a float array of shape (chains, draws), or a DataError.

    A 1-D array is one chain. Anything with more than two axes, no chains, or
    fewer than ``MIN_DRAWS`` draws per chain is refused.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise DataError(
            f"MCMC draws must have shape (chains, draws) or (draws,), got an array "
            f"with {x.ndim} axes and shape {x.shape}. For several parameters, call "
            f"the diagnostic once per parameter, e.g. rhat(x[:, :, k])."
        )
    n_chains, n_draws = x.shape
    if n_chains < 1 or n_draws < MIN_DRAWS:
        raise DataError(
            f"need at least 1 chain of at least {MIN_DRAWS} draws, got shape {x.shape} "
            f"(chains, draws). Did you pass the array transposed, as (draws, chains)?"
        )
    return x


def _is_constant(x):
    """True when every entry of ``x`` is the same number (no variance at all)."""
    return bool(np.all(x == x.flat[0]))


def split_chains(x):
    r"""Cut every chain into its first and second half.

    A chain :math:`x_{m,1}, \dots, x_{m,N}` becomes the two chains

    .. math::

        (x_{m,1}, \dots, x_{m,H}) \quad\text{and}\quad
        (x_{m,N-H+1}, \dots, x_{m,N}), \qquad H = \lfloor N/2 \rfloor,

    so with an odd ``N`` the middle draw is dropped. If a chain is still
    moving (non-stationary), its two halves disagree and a between-chain
    comparison detects it, even with a single chain.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)
        MCMC draws of one scalar quantity.

    Returns
    -------
    numpy.ndarray, shape (2 * chains, draws // 2)
        All first halves, then all second halves.

    Examples
    --------
    >>> import numpy as np
    >>> split_chains(np.arange(10).reshape(2, 5))
    array([[0., 1.],
           [5., 6.],
           [3., 4.],
           [8., 9.]])
    """
    x = _as_chains(x)
    half = x.shape[1] // 2
    first, second = x[:, :half], x[:, x.shape[1] - half:]
    return np.concatenate([first, second], axis=0)


def rank_normalize(x):
    r"""Replace every draw by the normal quantile of its rank among all draws.

    With :math:`r_i` the rank of draw :math:`i` among all :math:`S` draws
    (pooled over chains; tied draws share the average of their ranks),

    .. math::

        z_i = \Phi^{-1}\!\left( \frac{r_i - 3/8}{S + 1/4} \right),

    where :math:`\Phi^{-1}` is the standard normal quantile function (Blom's
    offset 3/8 keeps the fractions strictly inside (0, 1)). The result looks
    like a standard normal sample whatever the original distribution was, so
    means and variances of ``z`` exist even when those of ``x`` do not.

    Parameters
    ----------
    x : array_like
        Draws, any shape; the ranking pools all entries.

    Returns
    -------
    numpy.ndarray
        Normal scores, same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> z = rank_normalize([[10.0, 1e6], [-3.0, 10.0]])
    >>> np.round(z, 3)
    array([[ 0.   ,  1.049],
           [-1.049,  0.   ]])
    """
    x = np.asarray(x, dtype=float)
    ranks = scipy.stats.rankdata(x, method="average", axis=None).reshape(x.shape)
    fractions = (ranks - 3 / 8) / (x.size + 1 / 4)
    return scipy.special.ndtri(fractions)


# ----------------------------------------------------------------------------
# R-hat
# ----------------------------------------------------------------------------

def potential_scale_reduction(chains):
    r"""Gelman-Rubin R-hat of chains taken as they are (no splitting, no ranks).

    For :math:`M \ge 2` chains of :math:`N` draws, with chain means
    :math:`\bar x_m` and chain variances :math:`s_m^2` (divisor :math:`N-1`):

    .. math::

        W = \frac{1}{M}\sum_m s_m^2, \qquad
        B = \frac{N}{M-1}\sum_m (\bar x_m - \bar x)^2,

    .. math::

        \widehat{\mathrm{var}}^+ = \frac{N-1}{N} W + \frac{1}{N} B, \qquad
        \hat R = \sqrt{\widehat{\mathrm{var}}^+ / W}.

    :math:`W` underestimates the posterior variance while the chains have not
    yet explored it all; :math:`\widehat{\mathrm{var}}^+` overestimates it when
    the chains started over-dispersed. Their ratio goes to 1 as the chains mix.

    Parameters
    ----------
    chains : array_like, shape (chains, draws)
        At least two chains.

    Returns
    -------
    float
        R-hat; NaN if all draws are equal, ``inf`` if every chain is constant
        but the chains differ.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> same = rng.normal(size=(4, 500))
    >>> bool(potential_scale_reduction(same) < 1.01)
    True
    >>> shifted = same + np.arange(4)[:, None]     # chain m centred at m
    >>> bool(potential_scale_reduction(shifted) > 1.5)
    True
    """
    chains = _as_chains(chains)
    n_chains, n_draws = chains.shape
    if n_chains < 2:
        raise DataError("potential_scale_reduction needs at least 2 chains; split the chain first")
    if _is_constant(chains):
        return np.nan
    chain_means = chains.mean(axis=1)
    within = chains.var(axis=1, ddof=1).mean()                  # W
    between = n_draws * chain_means.var(ddof=1)                 # B
    if within == 0.0:
        return np.inf
    var_plus = (n_draws - 1) / n_draws * within + between / n_draws
    return float(np.sqrt(var_plus / within))


def rhat(x):
    r"""Rank-normalised split R-hat (Vehtari et al. 2021), the recommended R-hat.

    .. math::

        \hat R = \max\bigl(\hat R_{\text{bulk}},\ \hat R_{\text{tail}}\bigr),

    where, with ``split`` = :func:`split_chains`, ``z`` =
    :func:`rank_normalize` and ``PSRF`` = :func:`potential_scale_reduction`,

    * :math:`\hat R_{\text{bulk}} = \mathrm{PSRF}(z(\mathrm{split}(x)))`
      compares the *locations* of the (half-)chains;
    * :math:`\hat R_{\text{tail}} = \mathrm{PSRF}(z(|\mathrm{split}(x) -
      \mathrm{median}|))` compares their *spreads*: folding around the median
      turns a chain that is too wide or too narrow into one whose location is
      off.

    Rule of thumb: use the draws only if :math:`\hat R < 1.01`.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)
        Draws of one scalar quantity. A single chain is allowed: its two
        halves are compared.

    Returns
    -------
    float
        R-hat; NaN if all draws are equal or any draw is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> x = rng.normal(size=(4, 1000))
    >>> bool(rhat(x) < 1.01)
    True
    >>> x[0] *= 3                      # one chain far too wide: the tail R-hat sees it
    >>> bool(rhat(x) > 1.1)
    True
    """
    x = _as_chains(x)
    if np.isnan(x).any():
        return np.nan
    halves = split_chains(x)
    bulk = potential_scale_reduction(rank_normalize(halves))
    folded = np.abs(halves - np.median(halves))
    tail = potential_scale_reduction(rank_normalize(folded))
    # fmax: if the folded draws are all equal (tail undefined) report the bulk R-hat
    return float(np.fmax(bulk, tail))


# ----------------------------------------------------------------------------
# effective sample size
# ----------------------------------------------------------------------------

def autocovariance(x):
    r"""Autocovariance of each chain at every lag, computed with the FFT.

    For one chain of :math:`N` draws with mean :math:`\bar x`,

    .. math::

        \hat\gamma_t = \frac{1}{N} \sum_{n=1}^{N-t}
                       (x_n - \bar x)(x_{n+t} - \bar x),
        \qquad t = 0, \dots, N-1.

    The direct sum costs :math:`O(N^2)`. The Wiener-Khinchin theorem gives it
    in :math:`O(N \log N)`: the inverse Fourier transform of the power
    spectrum :math:`|\mathcal F(x - \bar x)|^2` is the (circular)
    autocovariance. Padding the chain with zeros to length :math:`\ge 2N`
    stops the circle from wrapping the end of the chain onto its start.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    numpy.ndarray, same shape as ``x``
        ``acov[..., t]`` is :math:`\hat\gamma_t` of each chain; the divisor is
        :math:`N` at every lag (this keeps the sequence positive definite).

    Examples
    --------
    >>> import numpy as np
    >>> np.round(autocovariance([1.0, 2.0, 3.0, 4.0]), 4)
    array([ 1.25  ,  0.3125, -0.375 , -0.5625])
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    centred = x - x.mean(axis=-1, keepdims=True)
    n_fft = scipy.fft.next_fast_len(2 * n, real=True)
    spectrum = np.fft.rfft(centred, n=n_fft, axis=-1)
    power = spectrum.real ** 2 + spectrum.imag ** 2            # |F|^2
    return np.fft.irfft(power, n=n_fft, axis=-1)[..., :n] / n


def combined_autocorrelation(chains):
    r"""Autocorrelation at every lag, estimated from several chains at once.

    With per-chain autocovariances :math:`\hat\gamma_{m,t}`
    (:func:`autocovariance`), within-chain variance :math:`W` and pooled
    variance :math:`\widehat{\mathrm{var}}^+` (see
    :func:`potential_scale_reduction`),

    .. math::

        \hat\rho_t = 1 - \frac{W - \frac{1}{M}\sum_m \hat\gamma_{m,t}}
                              {\widehat{\mathrm{var}}^+},
        \qquad \hat\rho_0 := 1.

    Using :math:`\widehat{\mathrm{var}}^+` rather than each chain's own
    variance makes :math:`\hat\rho_t` large when the chains disagree, so the
    ESS of non-converged chains is small, as it should be.

    Parameters
    ----------
    chains : array_like, shape (chains, draws)

    Returns
    -------
    numpy.ndarray, shape (draws,)
        :math:`\hat\rho_0, \dots, \hat\rho_{N-1}`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> rho = combined_autocorrelation(rng.normal(size=(4, 1000)))
    >>> float(rho[0]), bool(abs(rho[1]) < 0.05)
    (1.0, True)
    """
    chains = _as_chains(chains)
    n_chains, n_draws = chains.shape
    mean_acov = autocovariance(chains).mean(axis=0)             # (1/M) sum_m gamma_{m,t}
    within = chains.var(axis=1, ddof=1).mean()                  # W
    var_plus = (n_draws - 1) / n_draws * within
    if n_chains > 1:
        var_plus += chains.mean(axis=1).var(ddof=1)             # + B / N
    rho = 1.0 - (within - mean_acov) / var_plus
    rho[0] = 1.0
    return rho


def autocorrelation_time(rho):
    r"""Integrated autocorrelation time :math:`\tau` from autocorrelations.

    In theory :math:`\tau = 1 + 2\sum_{t\ge1}\rho_t`, but the far lags of
    :math:`\hat\rho_t` are pure noise, so the sum must be cut off. Geyer (1992)
    noticed that for a reversible Markov chain the sums of adjacent pairs

    .. math::

        P_k = \rho_{2k} + \rho_{2k+1}, \qquad k = 0, 1, \dots

    are positive and decreasing. Hence:

    1. *Initial positive sequence*: keep :math:`P_0, \dots, P_{K-1}`, where
       :math:`K` is the first :math:`k` with :math:`\hat P_k \le 0` (or the
       last pair available, whose lags do not exceed :math:`N-2`).
    2. *Initial monotone sequence*: replace each kept :math:`\hat P_k` by
       :math:`\min(\hat P_0, \dots, \hat P_k)`.
    3. Then, as Stan does, add the next even lag once if it is positive:

    .. math::

        \hat\tau = -1 + 2\sum_{k=0}^{K-1} \tilde P_k + \max(\hat\rho_{2K}, 0).

    (The :math:`-1` is because :math:`\sum_k P_k` counts :math:`\rho_0 = 1`
    once, while :math:`\tau = -\rho_0 + 2\sum_{t\ge0}\rho_t`.)

    Parameters
    ----------
    rho : array_like, shape (N,)
        Autocorrelations at lags 0, ..., N-1 with ``rho[0] == 1``, e.g. from
        :func:`combined_autocorrelation`.

    Returns
    -------
    float
        :math:`\hat\tau`. It can be below 1 (even near 0) for *antithetic*
        chains, whose odd-lag autocorrelations are negative.

    Examples
    --------
    >>> import numpy as np
    >>> phi = 0.5                                  # AR(1): rho_t = phi**t
    >>> rho = phi ** np.arange(200)
    >>> round(autocorrelation_time(rho), 6)        # (1 + phi) / (1 - phi)
    3.0
    """
    rho = np.asarray(rho, dtype=float)
    last_pair = max((rho.size - 3) // 2, 0)
    pairs = rho[0:2 * last_pair + 2:2] + rho[1:2 * last_pair + 2:2]   # P_0 .. P_last
    non_positive = np.flatnonzero(pairs <= 0)
    n_kept = min(non_positive[0], last_pair) if non_positive.size else last_pair  # K
    monotone = np.minimum.accumulate(pairs[:n_kept])                  # P~_k
    return float(-1.0 + 2.0 * monotone.sum() + max(rho[2 * n_kept], 0.0))


def effective_sample_size(chains):
    r"""ESS of chains taken as they are (no splitting, no ranks).

    .. math::

        \widehat{\mathrm{ESS}} = \frac{S}{\max\bigl(\hat\tau,\ 1/\log_{10} S\bigr)},
        \qquad S = MN,

    with :math:`\hat\tau` from :func:`autocorrelation_time` applied to
    :func:`combined_autocorrelation`. The lower bound on :math:`\hat\tau`
    (Stan's) caps the ESS at :math:`S \log_{10} S`: antithetic chains can
    truly beat independent draws, but an estimate far beyond ``S`` is noise.

    Parameters
    ----------
    chains : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    float
        The ESS; NaN if all draws are equal (no variance: the autocorrelation
        is 0/0) or any draw is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(4)
    >>> x = rng.normal(size=(4, 1000))
    >>> bool(3500 < effective_sample_size(x) < 4500)
    True
    """
    chains = _as_chains(chains)
    if np.isnan(chains).any() or _is_constant(chains):
        return np.nan
    n_total = chains.size
    tau = autocorrelation_time(combined_autocorrelation(chains))
    return float(n_total / max(tau, 1.0 / np.log10(n_total)))


def ess_bulk(x):
    r"""Bulk ESS: ESS of the rank-normalised split chains.

    .. math::

        \mathrm{ESS}_{\text{bulk}} = \mathrm{ESS}\bigl(z(\mathrm{split}(x))\bigr).

    It measures how well the centre of the distribution (e.g. the median) is
    estimated, and works for heavy tails. Rule of thumb: at least 100 per
    chain.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> x = rng.standard_cauchy(size=(4, 1000))    # no mean, but a fine bulk
    >>> bool(3500 < ess_bulk(x) < 4500)
    True
    """
    x = _as_chains(x)
    if np.isnan(x).any():
        return np.nan
    return effective_sample_size(rank_normalize(split_chains(x)))


def ess_tail(x):
    r"""Tail ESS: the smaller ESS of the 5% and 95% quantile indicators.

    With :math:`q_{p}` the :math:`p`-quantile of all draws (linear
    interpolation, R's type 7),

    .. math::

        \mathrm{ESS}_{\text{tail}} = \min\Bigl(
            \mathrm{ESS}\bigl(\mathrm{split}(I[x \le q_{0.05}])\bigr),\
            \mathrm{ESS}\bigl(\mathrm{split}(I[x \le q_{0.95}])\bigr)\Bigr).

    The mean of the indicator :math:`I[x \le q]` is the probability that a
    credible-interval end point is based on, so this ESS tells how well the
    ends of a 90% interval are estimated. Rule of thumb: at least 100 per
    chain.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(6)
    >>> x = rng.normal(size=(4, 1000))
    >>> bool(3000 < ess_tail(x) < 5000)
    True
    """
    x = _as_chains(x)
    if np.isnan(x).any():
        return np.nan
    q05, q95 = np.quantile(x, [0.05, 0.95])
    below_q05 = split_chains(x <= q05)
    below_q95 = split_chains(x <= q95)
    return float(np.fmin(effective_sample_size(below_q05),
                         effective_sample_size(below_q95)))


def ess_mean(x):
    r"""ESS for the posterior mean: ESS of the split chains, no ranks.

    .. math::

        \mathrm{ESS}_{\text{mean}} = \mathrm{ESS}\bigl(\mathrm{split}(x)\bigr).

    Meaningful only when the posterior has a finite variance (use
    :func:`ess_bulk` otherwise).

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> x = rng.normal(size=(4, 1000))
    >>> bool(3500 < ess_mean(x) < 4500)
    True
    """
    return effective_sample_size(split_chains(x))


def mcse_mean(x):
    r"""Monte Carlo standard error of the posterior-mean estimate.

    .. math::

        \mathrm{MCSE}(\bar x) = \frac{\mathrm{sd}(x)}{\sqrt{\mathrm{ESS}_{\text{mean}}}},

    with :math:`\mathrm{sd}` the standard deviation of all draws pooled
    (divisor :math:`S-1`). About 95% of the time the posterior mean lies within
    two MCSEs of :math:`\bar x`; report no more digits than the MCSE allows.

    Parameters
    ----------
    x : array_like, shape (chains, draws) or (draws,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(8)
    >>> x = rng.normal(size=(4, 2500))             # sd 1, ESS about 10,000
    >>> bool(0.009 < mcse_mean(x) < 0.011)
    True
    """
    x = _as_chains(x)
    return float(np.std(x, ddof=1) / np.sqrt(ess_mean(x)))





# ----------------------------------------------------------------------------
# every quantity at once: the check teachlmm.convergence runs after each sample()
# ----------------------------------------------------------------------------
#
# The functions above are the textbook: one quantity, one statistic at a time.
# Called so for every parameter of a run, they sort each quantity's draws three
# times (twice the same split draws: for R-hat and for the bulk ESS) and take
# six Fourier transforms of every half-chain. _rhat_and_ess gives the same
# numbers (tested against ArviZ and against the functions above) with less work:
#
# * the split draws of each quantity are sorted once; the sorted draws give the
#   ranks (hence z, shared by the bulk R-hat and the bulk ESS), the median, the
#   5 % and 95 % quantiles, and the folded draws |x - median|: the sorted draws
#   fold into two runs that are already sorted (falling below the median,
#   rising above it), so ranking them is a merge (timsort), not a new sort;
# * the quantities are the rows of one array, so every step (sort, FFT,
#   Geyer's sequence) is one numpy call for all of them, not a Python loop;
# * R-hat and ESS treat the half-chains alike, so an even number of draws is
#   split by a reshape (each chain's halves side by side), without a copy;
# * the chains' mean autocovariance is one inverse FFT of their mean power
#   spectrum (the transform is linear), not one per chain;
# * Geyer's sequence stops at its first negative pair, a few dozen lags for a
#   chain that mixes. The lags up to L need zero-padding to N + L only, not to
#   2N; a row whose sequence is still positive at lag L is done again, all lags.

FIRST_LAGS = 32
"""At least this many lags are tried first for Geyer's sequence (the short FFT)."""

WORKSPACE_BYTES = 64 * 2 ** 20
"""Largest workspace of :func:`_rhat_and_ess`; more quantities than fit are done a block at a time."""


@functools.lru_cache(maxsize=8)
def _blom_scores(n_total):
    r"""Normal scores of every average rank ``n_total`` draws can have: entry k is for rank 1 + k/2.

    .. math:: z = \Phi^{-1}\bigl((r - 3/8) / (S + 1/4)\bigr), \qquad r = 1, 1.5, 2, \dots, S.

    The average rank of tied draws is a whole or half number, so this table
    replaces one ``ndtri`` per draw by a look-up (the arithmetic of
    :func:`rank_normalize`, hence the same bits).
    """
    ranks = 1 + np.arange(2 * n_total - 1) / 2
    scores = scipy.special.ndtri((ranks - 3 / 8) / (n_total + 1 / 4))
    scores.flags.writeable = False
    return scores


def _ties(s):
    """The entries of the sorted rows ``s`` that tie with a neighbour: (flat index into s, 2 * average rank - 2).

    A block of ties at 0-based positions first..last shares the average rank
    (first + last) / 2 + 1. Ties are rare in continuous draws, so the blocks
    are found from the tied neighbours alone.
    """
    n_total = s.shape[1]
    tied = np.flatnonzero(s[:, 1:] == s[:, :-1])               # entry i equals entry i + 1
    if tied.size == 0:
        return tied, tied
    row, i = np.divmod(tied, n_total - 1)
    link = row * n_total + i                                   # flat index into s; a block never spans rows
    opens = np.r_[True, np.diff(link) != 1]                    # runs of consecutive links are the blocks
    first = link[opens]
    last = link[np.r_[opens[1:], True]] + 1
    size = last - first + 1
    members = np.repeat(first - np.cumsum(size) + size, size) + np.arange(size.sum())
    return members, np.repeat(first + last - 2 * n_total * row[opens], size)


def _normal_scores_into(out, order, s):
    """``out`` (rows, S), C-contiguous, gets each draw's Blom score, in draw order.

    ``s`` is the draws with each row sorted, and ``order`` the flat index into
    ``out`` of the draw at each sorted position. The entry at sorted position i
    has rank i + 1 (table entry 2i) unless it is tied.
    """
    scores = _blom_scores(s.shape[1])
    flat = out.reshape(-1)
    flat[order] = scores[::2]
    members, twice_rank = _ties(s)
    flat[order.reshape(-1)[members]] = scores[twice_rank]
    return out


def _psrf_rows(chain_means, chain_variances, n_draws, constant):
    """:func:`potential_scale_reduction` of rows of chains from their means and variances (rows, chains).

    ``constant`` marks the rows whose draws are all equal (R-hat NaN).
    """
    within = chain_variances.mean(axis=1)                               # W
    between = n_draws * chain_means.var(axis=1, ddof=1)                 # B
    var_plus = (n_draws - 1) / n_draws * within + between / n_draws
    out = np.sqrt(var_plus / within)
    out[within == 0.0] = np.inf
    out[constant] = np.nan
    return out


def _fft_length(n):
    """The smallest 2^k, 3 * 2^k or 5 * 2^k >= n (lengths numpy's FFT is quickest at)."""
    power = 1 << max(int(n - 1).bit_length() - 3, 0)
    return min(f * power * 2 ** j for f in (1, 3, 5) for j in range(5) if f * power * 2 ** j >= n)


def _autocorrelation_rows(centred, within, var_plus, max_lag, n_fft):
    r""":func:`combined_autocorrelation` at lags 0..max_lag of each row of centred chains (rows, chains, draws).

    Zero-padding to ``n_fft`` >= N + max_lag keeps the circular correlation from
    wrapping at those lags, and

    .. math:: \frac{1}{M}\sum_m \hat\gamma_{m,t}
              = \frac{1}{N}\,\mathcal F^{-1}\Bigl(\frac{1}{M}\sum_m |\mathcal F x_m|^2\Bigr)_t .
    """
    n_rows, n_chains, n_draws = centred.shape
    n_freq = n_fft // 2 + 1
    # a few rows at a time into one reused buffer of about 1 MB: a fresh 3 MB array costs more than the FFT
    block = max(1, (1 << 20) // (16 * n_chains * n_freq))
    spectrum = np.empty((min(block, n_rows), n_chains, n_freq), dtype=complex)
    power = np.empty((n_rows, n_freq))
    for start in range(0, n_rows, block):
        rows = centred[start:start + block]
        part = spectrum[:len(rows)]
        np.fft.rfft(rows, n=n_fft, axis=2, out=part)
        squares = np.einsum("rmk,rmk->rk", part.view(float), part.view(float))   # sum_m re^2, sum_m im^2, ...
        power[start:start + block] = squares[:, 0::2] + squares[:, 1::2]           # sum_m |F x_m|^2
    power /= n_chains
    mean_acov = np.fft.irfft(power, n=n_fft, axis=1)[:, :max_lag + 1] / n_draws
    rho = 1.0 - (within[:, np.newaxis] - mean_acov) / var_plus[:, np.newaxis]
    rho[:, 0] = 1.0
    return rho


def _geyer_rows(rho, n_draws):
    """:func:`autocorrelation_time` of each row of ``rho`` (lags 0..L of chains of ``n_draws``).

    Returns (tau, complete): ``complete`` is False for the rows whose initial
    positive sequence is still going at lag L (their tau needs more lags).
    """
    n_rows, n_lags = rho.shape
    last_pair = max((n_draws - 3) // 2, 0)
    n_pairs = min(last_pair + 1, n_lags // 2)                               # the pairs whose lags are in rho
    pairs = rho[:, 0:2 * n_pairs:2] + rho[:, 1:2 * n_pairs:2]               # P_0, P_1, ...
    non_positive = pairs <= 0
    found = non_positive.any(axis=1)
    complete = found | (n_pairs == last_pair + 1)
    n_kept = np.where(found, non_positive.argmax(axis=1), np.where(complete, last_pair, 0))  # K
    monotone = np.minimum.accumulate(pairs, axis=1)                         # P~_k
    kept = np.arange(n_pairs) < n_kept[:, np.newaxis]
    next_even = rho[np.arange(n_rows), 2 * n_kept]                          # rho_2K
    tau = -1.0 + 2.0 * np.where(kept, monotone, 0.0).sum(axis=1) + np.maximum(next_even, 0.0)
    return tau, complete


def _ess_rows(centred, chain_means, chain_variances, constant):
    """:func:`effective_sample_size` of rows of chains (rows, chains, draws), given centred.

    ``chain_means`` and ``chain_variances`` (divisor N - 1) are (rows, chains);
    ``constant`` marks the rows whose draws are all equal (ESS NaN).
    """
    n_rows, n_chains, n_draws = centred.shape
    within = chain_variances.mean(axis=1)                                   # W
    var_plus = (n_draws - 1) / n_draws * within
    if n_chains > 1:
        var_plus += chain_means.var(axis=1, ddof=1)                         # + B / N
    n_fft = _fft_length(n_draws + FIRST_LAGS)
    max_lag = min(n_fft - n_draws, n_draws - 1)
    tau, complete = _geyer_rows(_autocorrelation_rows(centred, within, var_plus, max_lag, n_fft), n_draws)
    redo = ~complete & ~constant
    if redo.any():                                      # chains that mix slowly: every lag
        n_fft = scipy.fft.next_fast_len(2 * n_draws, real=True)
        rho = _autocorrelation_rows(centred[redo], within[redo], var_plus[redo], n_draws - 1, n_fft)
        tau[redo] = _geyer_rows(rho, n_draws)[0]
    n_total = n_chains * n_draws
    ess = n_total / np.maximum(tau, 1.0 / np.log10(n_total))
    ess[constant] = np.nan
    return ess


def _quantiles_of_sorted(s, probs):
    """``np.quantile(row, probs)`` of every sorted row of ``s``, shape (rows, len(probs)), in numpy's arithmetic."""
    n_total = s.shape[1]
    virtual = (n_total - 1) * np.asarray(probs, dtype=float)            # numpy's "linear" (R's type 7)
    below = np.floor(virtual).astype(int)
    above = np.minimum(below + 1, n_total - 1)
    gamma = virtual - below
    a, b = s[:, below], s[:, above]
    return np.where(gamma >= 0.5, b - (b - a) * (1 - gamma), a + (b - a) * gamma)


def _rhat_and_ess(draws):
    """R-hat, bulk ESS and tail ESS of several quantities at once: (rhat, bulk, tail), each shape (K,).

    ``draws`` has shape (K, chains, draws), one row per scalar quantity. Entry
    k is ``rhat(draws[k])``, ``ess_bulk(draws[k])``, ``ess_tail(draws[k])`` up
    to rounding (and NaN where the draws hold a NaN); see the comment above
    for how it saves work.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(9).normal(size=(3, 4, 500))
    >>> r, bulk, tail = _rhat_and_ess(x)
    >>> bool(np.allclose(bulk, [ess_bulk(xk) for xk in x], rtol=1e-12))
    True
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim != 3 or x.shape[0] < 1:
        raise DataError(f"draws of several quantities must have shape (quantities, chains, draws), got {x.shape}")
    n_rows, n_chains, n_draws = x.shape
    per_block = max(1, WORKSPACE_BYTES // (7 * 8 * n_chains * n_draws))
    if n_rows > per_block:                                      # a long run: a few quantities at a time
        blocks = [_rhat_and_ess(x[i:i + per_block]) for i in range(0, n_rows, per_block)]
        return tuple(np.concatenate(statistic) for statistic in zip(*blocks))
    half = n_draws // 2
    if n_draws % 2 == 0:
        halves = x.reshape(n_rows, 2 * n_chains, half)          # chain m's halves are rows 2m, 2m + 1
    else:                                                       # split_chains: drop the middle draw
        halves = np.concatenate([x[:, :, :half], x[:, :, n_draws - half:]], axis=1)
    _as_chains(halves[0])                                       # the checks rhat() makes: >= MIN_DRAWS per half
    n_total = 2 * n_chains * half
    flat = halves.reshape(n_rows, n_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        # One workspace for the large arrays: numpy asks Linux for huge pages for an array of 4 MB or more,
        # and first touching one large array is much cheaper than first touching many 1 MB ones.
        work = np.empty((7, n_rows, n_total))
        # four series per quantity, filled below: z (bulk R-hat and ESS), the indicators of the 5 % and
        # 95 % quantiles (tail ESS), z of the folded draws (tail R-hat)
        series = work[:4].reshape(4, n_rows, 2 * n_chains, half)

        # one sort per quantity: its ranks give z (bulk R-hat and bulk ESS), the median, the quantiles.
        # Indices are flat (row * S + i): numpy's take on flat indices is quicker than take_along_axis.
        offsets = n_total * np.arange(n_rows)[:, np.newaxis]
        order = np.argsort(flat, axis=1)
        order += offsets
        s = flat.reshape(-1).take(order, out=work[4], mode="clip")     # "clip": unbuffered (no copy)
        _normal_scores_into(series[0].reshape(n_rows, n_total), order, s)
        if n_draws % 2 == 0:                                    # the split chains hold all the draws
            q = _quantiles_of_sorted(s, [0.05, 0.95])
        else:
            q = np.quantile(x.reshape(n_rows, -1), [0.05, 0.95], axis=1).T
        np.less_equal(halves, q.T[:, :, np.newaxis, np.newaxis], out=series[1:3], casting="unsafe")
        constant = np.concatenate([s[:, 0] == s[:, -1],        # all draws equal; all or none below q
                                   ((q >= s[:, -1:]) | (q < s[:, :1])).T.ravel()])
        has_nan = np.isnan(s[:, -1])                            # NaN sorts last
        if n_draws % 2:
            has_nan |= np.isnan(x[:, :, half]).any(axis=1)      # the middle draws, dropped by the split

        # folded draws |x - median|, in place of s: m - s below the middle (a falling run), s - m above
        # it (a rising run). A stable sort (timsort) finds the two runs and merges them in one pass.
        middle = n_total // 2
        median = (s[:, middle - 1] + s[:, middle]) / 2
        runs = s
        np.subtract(median[:, np.newaxis], s[:, :middle], out=runs[:, :middle])
        runs[:, middle:] -= median[:, np.newaxis]
        merge = np.argsort(runs, axis=1, kind="stable")
        merge += offsets
        folded = runs.reshape(-1).take(merge, out=work[5], mode="clip")
        folded_order = order.reshape(-1).take(merge, out=work[6].view(np.intp), mode="clip")
        _normal_scores_into(series[3].reshape(n_rows, n_total), folded_order, folded)

        # per-chain means and variances; R-hat (bulk and folded)
        centred = series.reshape((4 * n_rows,) + halves.shape[1:])
        means = centred.mean(axis=2)
        centred -= means[:, :, np.newaxis]                      # in place: the draws are not needed again
        variances = np.einsum("rmn,rmn->rm", centred, centred) / (half - 1)
        bulk_rows, folded_rows, ess_rows = slice(0, n_rows), slice(3 * n_rows, None), slice(0, 3 * n_rows)
        rhat = np.fmax(_psrf_rows(means[bulk_rows], variances[bulk_rows], half, constant[bulk_rows]),
                       _psrf_rows(means[folded_rows], variances[folded_rows], half, folded[:, 0] == folded[:, -1]))

        ess = _ess_rows(centred[ess_rows], means[ess_rows], variances[ess_rows], constant).reshape(3, n_rows)
    bulk, tail = ess[0], np.fmin(ess[1], ess[2])
    for statistic in (rhat, bulk, tail):
        statistic[has_nan] = np.nan
    return rhat, bulk, tail
