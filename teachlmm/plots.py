"""The lecture's figures: shrinkage, county lines, group-level regressions, checks, traces.

Every function draws into axes you pass (``ax=`` or ``axes=``) or makes a new
figure, returns what it drew on (an Axes for one panel, the Figure for
several) and never calls ``show()``: in a notebook the figure appears by
itself, in a script call ``matplotlib.pyplot.show()`` or ``fig.savefig(...)``.

The three ways of estimating a group's coefficients have one colour each, on
every figure (:data:`COLORS`):

* complete pooling (one regression, groups ignored),
* no pooling (each group on its own),
* partial pooling (the BLUP: each group pulled toward the group-level regression).

This is the only module of teachlmm that imports matplotlib.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import teachlmm as tl
>>> from teachlmm import blup, plots
>>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
>>> pool = blup.pooling(model, G=[[0.1]], sigma2=0.57)
>>> ax = plots.shrinkage(pool)
>>> ax.get_xscale()
'log'
>>> matplotlib.pyplot.close("all")
"""
import math

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import numpy as np
from scipy.stats import norm

from . import validators
from .errors import TeachLMMError

__all__ = ["COLORS", "LABELS", "shrinkage", "county_lines", "group_coefficients", "caterpillar",
           "residuals", "trace"]

COLORS = {"complete": "#d95f02", "none": "#7570b3", "partial": "#1b9e77"}
"""One colour per kind of pooling (orange, purple, green: readable by colour-blind eyes)."""

LABELS = {"complete": "complete pooling", "none": "no pooling", "partial": "partial pooling (BLUP)"}
DATA_COLOR = "0.55"
CHAIN_COLORS = plt.get_cmap("tab10").colors


def _panels(axes, count, ncols, panel_size=(3.2, 3.0), sharey=False):
    """A figure with ``count`` panels (or the first ``count`` of the axes given) and the Figure."""
    if axes is not None:
        flat = list(np.ravel(axes))
        if len(flat) < count:
            raise TeachLMMError(f"this plot needs {count} axes, got {len(flat)}")
        return flat[0].figure, flat[:count]
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             sharey=sharey, squeeze=False, layout="constrained")
    flat = list(grid.ravel())
    for extra in flat[count:]:
        extra.remove()
    return fig, flat[:count]


def _column(names, term, what="term"):
    if term is None:
        return 0
    if isinstance(term, (int, np.integer)):
        return int(term)
    if term not in names:
        raise TeachLMMError(f"unknown {what} {term!r}; choose one of {names}")
    return names.index(term)


# ----------------------------------------------------------------------------
# (a) shrinkage against group size
# ----------------------------------------------------------------------------

def shrinkage(pool, term=None, ax=None, seed=0):
    """No-pooling and partial-pooling estimates against group size, with an arrow for each shrink.

    Each group's own estimate (no pooling) is joined by an arrow to its BLUP
    (partial pooling). Small groups move far toward the group-level mean
    (the fixed effect, dashed); large ones hardly move. The complete-pooling
    estimate is the solid line. Groups with no own estimate (see
    ``pool["none"].note``) appear as open circles at their BLUP.

    Parameters
    ----------
    pool : the :func:`teachlmm.blup.pooling` comparison.
    term : name or index of the random term to show (default: the first).
    ax : matplotlib Axes, optional.
    seed : int; the group sizes are jittered a little (seeded) so equal sizes do not overlap.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import teachlmm as tl
    >>> from teachlmm import blup, plots
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> pool = blup.pooling(model, G=[[0.12, -0.04], [-0.04, 0.12]], sigma2=0.56)
    >>> ax = plots.shrinkage(pool, term="floor")
    >>> len(ax.collections)              # no pooling, partial pooling, groups without an own slope
    3
    >>> matplotlib.pyplot.close(ax.figure)
    """
    k = _column(pool.names, term)
    name = pool.names[k]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    rng = validators.rng(seed)
    x = pool.n * np.exp(rng.uniform(-0.08, 0.08, pool.n.size))    # multiplicative jitter: log axis
    own = pool["none"].estimates[:, k]
    blup = pool["partial"].estimates[:, k]
    has_own = np.isfinite(own)
    target = pool.result.fixef.get(name, 0.0)

    ax.axhline(pool["complete"].estimates[0, k], color=COLORS["complete"], lw=1.5, label=LABELS["complete"])
    ax.axhline(target, color=COLORS["partial"], lw=1, ls="--", label="group-level mean (fixed effect)")
    moved = has_own & (np.abs(own - blup) > 0.01 * np.ptp(np.r_[own[has_own], blup]))   # visible moves only
    for xj, a, b in zip(x[moved], own[moved], blup[moved]):
        ax.annotate("", xy=(xj, b), xytext=(xj, a),
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=0.7, shrinkA=0, shrinkB=2))
    ax.scatter(x[has_own], own[has_own], s=18, color=COLORS["none"], label=LABELS["none"], zorder=3)
    ax.scatter(x, blup, s=18, color=COLORS["partial"], label=LABELS["partial"], zorder=4)
    if not has_own.all():
        ax.scatter(x[~has_own], blup[~has_own], s=40, facecolors="none", edgecolors="k", lw=0.8, zorder=5,
                   label=f"no own estimate ({(~has_own).sum()} groups)")
    ax.set_xscale("log")
    ax.set_xlabel(f"rows per {pool.group_name}, n_j (log scale)")
    ax.set_ylabel(f"{pool.group_name}-specific {name!r} coefficient")
    ax.set_title(f"Shrinkage of the {name!r} coefficient toward the group-level mean")
    ax.legend(fontsize=8, loc="best")
    return ax


# ----------------------------------------------------------------------------
# (b) county-specific regression lines
# ----------------------------------------------------------------------------

def _line_coefficients(pool, slope):
    """Intercept and slope columns of ``coef`` for the simple line y = a_j + b_j x."""
    names = pool.coef_names
    if "(Intercept)" not in names:
        raise TeachLMMError("county_lines draws y = a_j + b_j x and needs an intercept in the model")
    others = [n for n in names if n != "(Intercept)"]
    slope = others[0] if slope is None and others else slope
    if slope not in names or set(names) != {"(Intercept)", slope}:
        raise TeachLMMError("county_lines draws each group's line y = a_j + b_j x, so the model must have "
                            f"exactly an intercept and one slope (y ~ 1 + x + (1 | g) or (1 + x | g)); this "
                            f"one has {names}. For a group-level predictor use plots.group_coefficients.")
    return names.index("(Intercept)"), names.index(slope), slope


def county_lines(pool, groups=None, slope=None, titles=None, axes=None, seed=0):
    """Each chosen group's data with its complete-, no- and partial-pooling regression lines.

    The classic eight-county figure of the radon example: per panel, the
    houses of one county (floor jittered a little), the one line for all
    counties (complete pooling), the county's own line (no pooling; missing
    where the county has no own fit) and its BLUP line (partial pooling).

    Parameters
    ----------
    pool : :func:`teachlmm.blup.pooling` result for a model y ~ 1 + x with
        a random intercept (and possibly a random slope).
    groups : labels of the groups to draw (default: 8 groups spread over the range of sizes).
    slope : name of x (default: the model's one non-intercept column).
    titles : mapping label -> panel title (e.g. county names), optional.
    axes : array of at least ``len(groups)`` Axes, optional.
    seed : int, for the jitter of x.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    The eight counties of Gelman and Hill's figure, by county number:

    >>> import matplotlib; matplotlib.use("Agg")
    >>> import teachlmm as tl
    >>> from teachlmm import blup, plots
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> pool = blup.pooling(model, G=[[0.1]], sigma2=0.57)
    >>> fig = plots.county_lines(pool, groups=[36, 1, 35, 21, 14, 71, 61, 70])
    >>> len(fig.axes), len(fig.axes[0].lines)
    (8, 3)
    >>> matplotlib.pyplot.close(fig)
    """
    model = pool.model
    i0, i1, slope = _line_coefficients(pool, slope)
    x_all = model.X[:, model.fixef_names.index(slope)] if slope in model.fixef_names else \
        model.Z[:, model.ranef_names.index(slope)]
    labels = list(model.groups)
    if groups is None:
        order = np.argsort(pool.n, kind="stable")
        groups = [labels[j] for j in order[np.linspace(0, model.J - 1, min(8, model.J)).round().astype(int)]]
    index = []
    for g in groups:
        if g not in labels:
            raise TeachLMMError(f"{model.group_name} {g!r} is not in the fitted data")
        index.append(labels.index(g))
    fig, axs = _panels(axes, len(index), ncols=4, sharey=True)
    rng = validators.rng(seed)
    grid = np.linspace(x_all.min(), x_all.max(), 2)
    for ax, j, g in zip(axs, index, groups):
        rows = model.codes == j
        ax.scatter(x_all[rows] + rng.uniform(-0.05, 0.05, rows.sum()), model.y[rows], s=12,
                   color=DATA_COLOR, zorder=1)
        for kind, style in (("complete", ":"), ("none", "--"), ("partial", "-")):
            a, b = pool[kind].coef[j, i0], pool[kind].coef[j, i1]
            if np.isfinite(a) and np.isfinite(b):
                ax.plot(grid, a + b * grid, style, color=COLORS[kind], lw=1.8, label=LABELS[kind])
            else:
                ax.text(0.03, 0.04, "no own fit", transform=ax.transAxes, color=COLORS[kind], fontsize=8)
        title = titles.get(g, str(g)) if titles else f"{model.group_name} {g}"
        ax.set_title(f"{title}\n(n = {int(pool.n[j])})", fontsize=10)
        ax.set_xlabel(slope)
    axs[0].set_ylabel(model.formula.response)
    handles = [Line2D([], [], ls=style, color=COLORS[kind], lw=1.8, label=LABELS[kind])
               for kind, style in (("complete", ":"), ("none", "--"), ("partial", "-"))]
    if axes is None:                                   # our own figure: one legend above the panels
        fig.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=8)
    else:
        axs[0].legend(handles=handles, fontsize=7, loc="best")
    return fig


# ----------------------------------------------------------------------------
# (c) the group-level regressions: alpha_j, beta_j against u_j
# ----------------------------------------------------------------------------

def _group_level_values(model, u_name):
    """u_j of a group-level fixed-effect column (:meth:`teachlmm.Model.group_values`)."""
    if u_name not in model.fixef_names:
        raise TeachLMMError(f"{u_name!r} is not a fixed-effect column of this model ({model.fixef_names})")
    return model.group_values(u_name)


def _guess_u(model):
    candidates = [n for n in model.fixef_names if n not in model.ranef_names and ":" not in n]
    if len(candidates) != 1:
        raise TeachLMMError(f"say which column is the group-level predictor u: u_name = one of {candidates}")
    return candidates[0]


def group_coefficients(result, u_name=None, axes=None):
    """Each group's coefficients against the group-level predictor u_j, +-1 s.e., with the fitted lines.

    For M4, ``log_radon ~ 1 + floor + u + floor:u + (1 + floor | county)``,
    the county intercepts and slopes are::

        alpha_j = coef[j, "(Intercept)"] + coef[j, "u"] u_j      ~ gamma0_a + gamma1_a u_j
        beta_j  = coef[j, "floor"] + coef[j, "floor:u"] u_j      ~ gamma0_b + gamma1_b u_j

    One panel per random term: the points alpha_j (resp. beta_j) with bars of
    +-1 conditional standard deviation of the random effect (``condsd``, arm's
    ``se.ranef``), and the group-level regression line gamma0 + gamma1 u.
    A term with no interaction with u gets a flat line.

    Parameters
    ----------
    result : a fitted or BLUP result.
    u_name : the group-level column (default: the one fixed column that is
        neither a random term nor an interaction).
    axes : sequence of q Axes, optional.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import teachlmm as tl
    >>> from teachlmm import blup, plots
    >>> m4 = tl.Model("log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)",
    ...               tl.load_radon())
    >>> fit = blup.fit(m4, G=[[0.0155, 0.0157], [0.0157, 0.0943]], sigma2=0.5617)
    >>> fig = plots.group_coefficients(fit)           # u_name found: 'log_uranium'
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['log_uranium $u_j$', 'log_uranium $u_j$']
    >>> matplotlib.pyplot.close(fig)
    """
    model = result.model
    u_name = _guess_u(model) if u_name is None else u_name
    u = _group_level_values(model, u_name)
    fig, axs = _panels(axes, model.q, ncols=2, panel_size=(4.5, 3.8))
    grid = np.linspace(u.min(), u.max(), 2)
    for k, (ax, term) in enumerate(zip(axs, model.ranef_names)):
        slope_name = u_name if term == "(Intercept)" else f"{term}:{u_name}"
        gamma0 = result.fixef.get(term, 0.0)
        gamma1 = result.fixef.get(slope_name, 0.0)
        c = result.coef[:, result.coef_names.index(term)]
        if slope_name in result.coef_names:
            c = c + result.coef[:, result.coef_names.index(slope_name)] * u
        letter = r"\alpha" if term == "(Intercept)" else r"\beta"          # the lecture's symbols, as math
        symbol = rf"$\hat{letter}_j$" + ("" if term == "(Intercept)" else f" ({term})")
        ax.errorbar(u, c, yerr=result.condsd[:, k], fmt="o", ms=3, color=COLORS["partial"],
                    ecolor=COLORS["partial"], elinewidth=0.7, alpha=0.8, label=rf"{symbol} $\pm$ 1 s.e.")
        ax.plot(grid, gamma0 + gamma1 * grid, color="k", lw=1.5,
                label=rf"${gamma0:.3f} {'-' if gamma1 < 0 else '+'} {abs(gamma1):.3f}\,u_j$")
        ax.set_title(rf"${letter}_j = \gamma_0^{letter} + \gamma_1^{letter} u_j + \eta_j^{letter}$", fontsize=11)
        ax.set_xlabel(rf"{u_name} $u_j$")
        ax.set_ylabel(f"estimated {symbol}")
        ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------
# (d) caterpillar plot of the random effects
# ----------------------------------------------------------------------------

def caterpillar(result, level=0.95, axes=None):
    """The BLUPs of every group, sorted, with conditional intervals b_hat_j +- z condsd_j.

    One panel per random term. An interval that misses 0 marks a group that
    differs clearly from the group-level regression.

    Parameters
    ----------
    result : a fitted or BLUP result.
    level : coverage of the intervals (0.95: +- 1.96 condsd).
    axes : sequence of q Axes, optional.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import teachlmm as tl
    >>> from teachlmm import blup, plots
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> fig = plots.caterpillar(blup.fit(model, G=[[0.1]], sigma2=0.57))
    >>> len(fig.axes[0].containers[0].lines[0].get_xdata())     # one interval per county
    85
    >>> matplotlib.pyplot.close(fig)
    """
    z = norm.ppf(0.5 + validators.level(level) / 2)
    model = result.model
    fig, axs = _panels(axes, model.q, ncols=model.q, panel_size=(4.0, max(4.0, 0.09 * model.J)))
    for k, (ax, term) in enumerate(zip(axs, model.ranef_names)):
        order = np.argsort(result.ranef[:, k], kind="stable")
        rank = np.arange(model.J)
        ax.errorbar(result.ranef[order, k], rank, xerr=z * result.condsd[order, k], fmt="o", ms=2.5,
                    color=COLORS["partial"], elinewidth=0.8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"random effect {term!r}, +- {z:.2f} condsd")
        ax.set_title(term)
        if model.J <= 120:                              # every group labelled, small type when many
            ax.set_yticks(rank, [str(g) for g in model.groups[order]], fontsize=7 if model.J <= 40 else 5)
            ax.set_ylabel(f"{model.group_name} (sorted by its random effect)")
        else:
            ax.set_yticks([])
            ax.set_ylabel(f"{model.J} {model.group_name} groups, sorted")
    return fig


# ----------------------------------------------------------------------------
# (e) residuals against fitted, normal QQ plots of the random effects
# ----------------------------------------------------------------------------

def _qq(ax, values, color):
    """Sorted values against normal quantiles, with the line through the quartiles (R's qqline)."""
    v = np.sort(values)
    p = (np.arange(1, v.size + 1) - 0.5) / v.size
    theory = norm.ppf(p)
    ax.scatter(theory, v, s=10, color=color)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    t1, t3 = norm.ppf([0.25, 0.75])
    slope = (q3 - q1) / (t3 - t1)
    ax.plot(theory[[0, -1]], q1 + slope * (theory[[0, -1]] - t1), color="k", lw=1)


def residuals(result, axes=None):
    """Model checks: residuals against fitted values, and a normal QQ plot per random term.

    The residuals y - X beta_hat - Z_j b_hat_j should show no pattern against
    the fitted values; the BLUPs should look roughly normal (they are shrunk,
    so their spread is smaller than sqrt(G_kk)).

    Parameters
    ----------
    result : a fitted or BLUP result.
    axes : sequence of 1 + q Axes, optional.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import teachlmm as tl
    >>> from teachlmm import blup, plots
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> fig = plots.residuals(blup.fit(model, G=[[0.1]], sigma2=0.57))
    >>> [ax.get_title() for ax in fig.axes]
    ['Residuals vs fitted', 'Normal QQ: (Intercept)']
    >>> matplotlib.pyplot.close(fig)
    """
    model = result.model
    fig, axs = _panels(axes, 1 + model.q, ncols=1 + model.q, panel_size=(3.8, 3.5))
    fitted, res = result.fitted(), result.residuals()
    axs[0].scatter(fitted, res, s=6, color=DATA_COLOR, alpha=0.7)
    axs[0].axhline(0, color="k", lw=0.8)
    axs[0].set_xlabel("fitted values")
    axs[0].set_ylabel("residuals")
    axs[0].set_title("Residuals vs fitted")
    for k, (ax, term) in enumerate(zip(axs[1:], model.ranef_names)):
        _qq(ax, result.ranef[:, k], COLORS["partial"])
        ax.set_xlabel("normal quantiles")
        ax.set_ylabel(f"BLUP {term!r}")
        ax.set_title(f"Normal QQ: {term}")
    return fig


# ----------------------------------------------------------------------------
# MCMC traces (for the Gibbs sampler)
# ----------------------------------------------------------------------------

def _kde(x, grid):
    """Gaussian kernel density of the draws x on ``grid`` (Silverman's bandwidth)."""
    sd = x.std()
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25]))
    spread = min(sd, iqr / 1.349) if iqr > 0 else sd
    h = 0.9 * spread * x.size ** -0.2
    z = (grid[:, None] - x[None, :]) / h
    return np.exp(-0.5 * z ** 2).sum(axis=1) / (x.size * h * np.sqrt(2 * np.pi))


def trace(post, names, axes=None):
    """Trace and density of each parameter, one colour per chain.

    Parameters
    ----------
    post : an object with ``post.get(name)`` returning a (chains, draws) array
        (the Gibbs sampler's posterior).
    names : parameter names, e.g. ``["sigma2", "G[0,0]", "(Intercept)"]``.
    axes : (len(names), 2) array of Axes, optional.

    Returns
    -------
    matplotlib Figure
        Row r: on the left the draws of ``names[r]`` in order, chain by chain
        (they should overlap like fuzzy caterpillars); on the right a kernel
        density per chain (they should agree).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> from teachlmm import plots
    >>> class Draws:                                  # anything with .get(name) -> (chains, draws)
    ...     def get(self, name):
    ...         return np.random.default_rng(0).normal(size=(4, 300))
    >>> fig = plots.trace(Draws(), ["sigma2", "G[0,0]"])
    >>> len(fig.axes), len(fig.axes[0].lines)
    (4, 4)
    >>> matplotlib.pyplot.close(fig)
    """
    names = [names] if isinstance(names, str) else list(names)
    fig, axs = _panels(axes, 2 * len(names), ncols=2, panel_size=(4.5, 2.0))
    for r, name in enumerate(names):
        draws = np.atleast_2d(np.asarray(post.get(name), dtype=float))
        left, right = axs[2 * r], axs[2 * r + 1]
        lo, hi = draws.min(), draws.max()
        pad = 0.05 * (hi - lo) if hi > lo else 0.5 * max(abs(lo), 1e-12)
        grid = np.linspace(lo - pad, hi + pad, 200)
        for c, chain in enumerate(draws):
            color = CHAIN_COLORS[c % len(CHAIN_COLORS)]
            left.plot(chain, color=color, lw=0.5, alpha=0.8)
            if chain.std() > 0:
                right.plot(grid, _kde(chain, grid), color=color, lw=1.2)
            else:
                right.axvline(chain[0], color=color, lw=1.2)
        left.set_ylabel(name)
        right.set_yticks([])
    axs[-2].set_xlabel("draw")
    axs[-1].set_xlabel("value")
    axs[0].set_title("trace (one colour per chain)", fontsize=9)
    axs[1].set_title("density per chain", fontsize=9)
    return fig
