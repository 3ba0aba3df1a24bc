"""Is the bigger model worth it? Likelihood-ratio tests of nested models (lme4's ``anova()``).

:func:`anova` tests nested models with the likelihood-ratio statistic
``LRT = 2 (loglik_big - loglik_small)`` on ML fits (REML fits are refitted by
ML first, as lme4 does). The reference distribution is chi2(df_big - df_small),
unless the test puts a variance on the edge of its range (H0: s_b^2 = 0): then
it is a mixture of chi-squares (:func:`mixture_pvalue`), and a parametric
bootstrap (``method="boot"``) gives a finite-sample answer.

The information criteria are defined as lme4 defines them (``fit.aic``,
``fit.bic``, ``fit.df`` live on the result)::

    AIC = -2 loglik + 2 df           BIC = -2 loglik + log(n) df
    df  = p + (free entries of G) + 1 (sigma2)

For a REML fit, ``loglik`` is the *restricted* log-likelihood. Compare REML
criteria only between models with the same fixed effects.

Models with several grouping factors (:class:`~teachlmm.multilevel.MultilevelModel`)
are compared the same way, with each other or with a one-factor model
(``(1 | batch)`` against ``(1 | batch/cask)``): a random effect is then named
by its column and its grouping factor, and the smaller model's must all be
in the bigger one, grouped the same way.
"""
import html
import math
import textwrap

import numpy as np
from scipy import stats as sps

from . import em, frames, multilevel_fit, validators
from .ddf import anova as f_tests
from .errors import DataError, TeachLMMError
from .intervals import Progress, RefitTally, refit_start
from .multilevel import MultilevelModel
from .results import BaseResult, MixedModelResult, response_sampler
from .tables import SIGNIF_CODES, format_column, format_p, format_table, stars

__all__ = ["anova", "AnovaTable", "mixture_pvalue"]


def _free_entries(model):
    """The free entries of every G_k as (factor, column k, column l), k >= l."""
    if isinstance(model, MultilevelModel):
        return {(t.factor, t.columns[b], t.columns[a]) for t in model.terms for a in range(t.q)
                for b in range(a, t.q)}
    return {(model.group_name, model.ranef_names[k], model.ranef_names[l]) for k, l in model.G_entries()}


def _several(*models):
    return any(isinstance(m, MultilevelModel) for m in models)


def _label(factor, column, several):
    """A random effect's name in messages: its column, and its factor when a model has several."""
    return f"{column} | {factor}" if several else column


def _groupings(model):
    """Grouping factor -> the level code of every row."""
    if isinstance(model, MultilevelModel):
        return {t.factor: t.codes for t in model.terms}
    return {model.group_name: model.codes}


def _check_same_data(fits):
    """The same rows: n, the response and the grouping; from the per-group statistics when a model has no rows.

    A model built from chunks keeps no rows, so the check compares what it
    has: n, the group labels and sizes n_j, and each group's y_j'y_j. Models
    with several factors must group the rows the same way at every factor they share.
    """
    first = fits[0].model
    for k, f in enumerate(fits[1:], start=2):
        m = f.model
        if m.n != first.n:
            raise DataError(f"fit 1 has {first.n} rows but fit {k} has {m.n}: models compared by a "
                            "likelihood-ratio test must be fitted to the same rows")
        rows = m.y is not None and first.y is not None
        same_y = np.array_equal(m.y, first.y) if rows else \
            np.allclose(m.stats.yty, first.stats.yty, rtol=1e-10, atol=0)
        if not same_y:
            raise DataError(f"fit {k} has a different response than fit 1 (same length, other values); "
                            "compare models of the same data and the same response")
        if _several(first, m):
            a, b = _groupings(first), _groupings(m)
            for g in set(a) & set(b):
                if not np.array_equal(a[g], b[g]):
                    raise DataError(f"fit {k} groups the rows by {g!r} differently than fit 1; anova compares "
                                    "models of the same data")
            continue
        same_groups = (np.array_equal(m.codes, first.codes) if rows else
                       np.array_equal(m.stats.n, first.stats.n) and np.array_equal(m.groups, first.groups))
        if m.group_name != first.group_name or not same_groups:
            raise DataError(f"fit {k} groups the rows differently than fit 1 ({m.group_name!r} vs "
                            f"{first.group_name!r}); anova compares models with the same grouping")


def _check_estimates(fits, names):
    """anova compares maximised likelihoods: a BLUP at typed-in values or a fit that stopped early has none."""
    for f, name in zip(fits, names):
        if f.method.startswith("BLUP") or f.method == "given":
            raise TeachLMMError(f"{name} is a BLUP at typed-in variance components ({f.method}), not a fit: "
                                "a likelihood-ratio test needs the maximised likelihood. Fit it with "
                                "tl.em.fit(model) and compare those fits")
        if not f.converged and not f.reml:
            raise TeachLMMError(f"{name} did not converge (stopped after {f.n_iter} iterations), so its "
                                "log-likelihood is not the maximum and the test would be wrong; refit with a "
                                "larger max_iter (tl.em.fit(model, reml=False, max_iter=...))")


def _same_column(ms, mb, kind, k, kb):
    """Is column k of the small model's X (or Z) column kb of the big one's? From the rows, or from
    the per-group statistics (sum of squares and cross-product with y) of a model built from chunks."""
    if ms.X is not None and mb.X is not None:
        A, B = (ms.X, mb.X) if kind == "fixed effect" else (ms.Z, mb.Z)
        return np.allclose(A[:, k], B[:, kb])
    if kind == "fixed effect":
        pairs = ((ms.stats.XtX[:, k, k], mb.stats.XtX[:, kb, kb]), (ms.stats.Xty[:, k], mb.stats.Xty[:, kb]))
    else:
        pairs = ((ms.stats.ZtZ[:, k, k], mb.stats.ZtZ[:, kb, kb]), (ms.stats.Zty[:, k], mb.stats.Zty[:, kb]))
    return all(np.allclose(a, b) for a, b in pairs)


def _z_column(model, factor, column):
    """The values of one random-effect column of one grouping factor, row by row."""
    if isinstance(model, MultilevelModel):
        t = next(t for t in model.terms if t.factor == factor and column in t.columns)
        return t.Z[:, t.columns.index(column)]
    return model.Z[:, model.ranef_names.index(column)]


def _check_nested(small, big, name_small, name_big):
    """small is nested in big: its X and Z columns (by factor) and its free G entries are all in big."""
    ms, mb = small.model, big.model
    several = _several(ms, mb)

    def refuse(kind, name):
        raise TeachLMMError(f"{name_small} is not nested in {name_big}: its {kind} {name!r} is not in "
                            f"{name_big}. A likelihood-ratio test needs the smaller model to be a "
                            "special case of the bigger one; compare non-nested models by AIC/BIC.")
    for k, name in enumerate(ms.fixef_names):
        if name not in mb.fixef_names or not _same_column(ms, mb, "fixed effect", k, mb.fixef_names.index(name)):
            refuse("fixed effect", name)
    big_columns = {(g, a) for g, a, b in _free_entries(mb) if a == b}
    for g, a, b in sorted(_free_entries(ms)):
        if a != b:
            continue
        if (g, a) not in big_columns:
            refuse("random effect", _label(g, a, several))
        same = (np.allclose(_z_column(ms, g, a), _z_column(mb, g, a)) if several else
                _same_column(ms, mb, "random effect", ms.ranef_names.index(a), mb.ranef_names.index(a)))
        if not same:
            refuse("random effect", _label(g, a, several))
    missing = _free_entries(ms) - _free_entries(mb)
    if missing:
        pairs = sorted((_label(g, a, several), _label(g, b, several)) for g, a, b in missing)
        raise TeachLMMError(f"{name_small} is not nested in {name_big}: it estimates the covariance(s) "
                            f"{pairs} that {name_big} fixes at 0")
    if small.df >= big.df:
        raise TeachLMMError(f"{name_small} and {name_big} have the same number of parameters ({big.df}): "
                            "they are the same model, there is nothing to test")


def _added_variances(small, big):
    """The random effects whose variance is 0 under the smaller model but free in the bigger one."""
    several = _several(small.model, big.model)
    before = {(g, a) for g, a, b in _free_entries(small.model) if a == b}
    return [_label(g, a, several) for g, a, b in sorted(_free_entries(big.model))
            if a == b and (g, a) not in before]


def mixture_pvalue(chisq, df):
    """P-value against 0.5 chi2(df - 1) + 0.5 chi2(df): the LRT null when one variance is tested = 0.

    When H0 sets one variance to 0 (the edge of its range, with its df - 1
    covariances and any other added parameters free under H1), the LRT's
    large-sample null distribution is this 50:50 mixture (Self & Liang 1987;
    Stram & Lee 1994): in half of the data sets the estimate under H1 sits on
    the edge too and the statistic is chi2 with one df less. chi2(0) is a point
    mass at 0.

    Examples
    --------
    >>> round(mixture_pvalue(2.5418, 2), 4)     # radon M1 vs M3: 0.5 x 0.1109 + 0.5 x 0.2806
    0.1957
    """
    low = sps.chi2.sf(chisq, df - 1) if df > 1 else float(chisq <= 0)
    return float(0.5 * low + 0.5 * sps.chi2.sf(chisq, df))


class AnovaTable:
    """The likelihood-ratio table of :func:`anova`, one row per model (sorted by df).

    Attributes
    ----------
    names : list of str.   fits : the ML fits the table is computed from.
    refitted : list of bool, which fits were REML and refitted by ML.
    rows : list of dict with lme4's columns "model", "npar", "AIC", "BIC",
        "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)" (None in the first row).
    chisq, df : (k,) arrays, LRT statistic and df against the row above (NaN in row 1).
    pvalue : (k,) array, the p-values of ``method`` (chi-square or bootstrap).
    pvalue_chisq : chi2(df) p-values.
    pvalue_mixture : 50:50 mixture p-values where one variance is tested = 0, else NaN.
    boundary : list of lists, the random effects whose variance each test sets to 0.
    method : "chisq" or "boot".
    pvalue_boot, mcse : (k,) arrays, for "boot": (1 + #{LRT* >= LRT}) / (n_boot + 1)
        and its Monte Carlo standard error sqrt(p (1 - p) / n_boot).
    lrt_boot : list of (n_boot,) arrays, the simulated statistics (None in row 1).
    singular_boot : list of pairs, singular refits of the smaller and of the bigger model.
    n_boot, n_singular, n_not_converged : int, bootstrap size and total refit counts.
    """

    def __init__(self, names, fits, refitted, method):
        self.names, self.fits, self.refitted, self.method = names, fits, refitted, method
        k = len(fits)
        self.chisq, self.df = np.full(k, np.nan), np.full(k, np.nan)
        self.pvalue_chisq, self.pvalue_mixture = np.full(k, np.nan), np.full(k, np.nan)
        self.boundary = [[] for _ in range(k)]
        for i in range(1, k):
            small, big = fits[i - 1], fits[i]
            self.chisq[i] = max(0.0, 2 * (big.loglik - small.loglik))   # lme4: 2 pmax(0, diff(logLik))
            self.df[i] = big.df - small.df
            self.pvalue_chisq[i] = sps.chi2.sf(self.chisq[i], self.df[i])
            self.boundary[i] = _added_variances(small, big)
            if len(self.boundary[i]) == 1:
                self.pvalue_mixture[i] = mixture_pvalue(self.chisq[i], int(self.df[i]))
        self.pvalue = self.pvalue_chisq
        self.pvalue_boot = self.mcse = self.lrt_boot = self.singular_boot = None
        self.n_boot = self.n_singular = self.n_not_converged = 0

    @property
    def rows(self):
        out = []
        for i, f in enumerate(self.fits):
            first = i == 0
            out.append({"model": self.names[i], "npar": f.df, "AIC": f.aic, "BIC": f.bic,
                        "logLik": f.loglik, "deviance": -2 * f.loglik,
                        "Chisq": None if first else float(self.chisq[i]),
                        "Df": None if first else int(self.df[i]),
                        "Pr(>Chisq)": None if first else float(self.pvalue_chisq[i])})
            if self.method == "boot":
                out[-1]["Pr(boot)"] = None if first else float(self.pvalue_boot[i])
        return out

    def _table(self):
        rows = self.rows
        cols = {c: format_column([r[c] for r in rows]) for c in ("AIC", "BIC", "logLik", "deviance")}
        cols["Chisq"] = format_column([r["Chisq"] for r in rows])
        header = ["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
        pcol = "Pr(>Chisq)"
        if self.method == "boot":
            header.append("Pr(boot)")
            pcol = "Pr(boot)"
        body = []
        for i, r in enumerate(rows):
            line = [r["model"], str(r["npar"])] + [cols[c][i] for c in ("AIC", "BIC", "logLik", "deviance",
                                                                       "Chisq")]
            line += ["" if r["Df"] is None else str(r["Df"]), format_p(r["Pr(>Chisq)"])]
            if self.method == "boot":
                line.append(format_p(r["Pr(boot)"]))
            line.append(stars(r[pcol]))
            body.append(line)
        header.append("")
        return format_table(body, header, indent="").splitlines()

    def _notes(self):
        out = []
        for i in range(1, len(self.fits)):
            added = self.boundary[i]
            if not added:
                continue
            pair = f"{self.names[i]} vs {self.names[i - 1]}"
            df = int(self.df[i])
            out.append(f"Boundary: {pair} sets the variance of {', '.join(added)} to 0 under H0, the edge "
                       f"of its range (a variance cannot be negative). The chi2({df}) p-value is then "
                       "conservative (too large).")
            if len(added) == 1:
                mix = f"0.5 chi2({df - 1}) + 0.5 chi2({df})" if df > 1 else "0.5 (point mass at 0) + 0.5 chi2(1)"
                out.append(f"  Mixture p-value: {format_p(self.pvalue_mixture[i])}, from the large-sample null "
                           f"distribution {mix} (Self & Liang 1987; Stram & Lee 1994).")
            else:
                out.append(f"  Large-sample null distribution: a mixture of chi2({df - len(added)}) ... "
                           f"chi2({df}) whose weights depend on the information matrix.")
            if self.method != "boot":
                out.append("  For a finite-sample p-value use method='boot' (a parametric bootstrap LRT).")
        if self.method == "boot":
            out.append(f"Pr(boot): parametric bootstrap LRT, {self.n_boot} data sets simulated from each "
                       "smaller model's ML fit, both models refitted by ML; p = (1 + #{LRT* >= LRT}) / "
                       "(n_boot + 1).")
            for i in range(1, len(self.fits)):
                small, big = self.singular_boot[i]
                out.append(f"  {self.names[i]} vs {self.names[i - 1]}: p = {self.pvalue_boot[i]:.4f} "
                           f"(Monte Carlo SE {self.mcse[i]:.4f}); singular refits: {small} of "
                           f"{self.names[i - 1]}, {big} of {self.names[i]}")
            if self.n_not_converged:
                out.append(f"  {self.n_not_converged} refits stopped at max_iter before converging.")
        return out

    def __str__(self):
        out = []
        if any(self.refitted):
            out.append("refitting model(s) with ML (instead of REML)")
        out.append("Models:")
        out += [f"{name}: {f.model.formula.text}" for name, f in zip(self.names, self.fits)]
        out += self._table()
        out += ["---", SIGNIF_CODES]
        notes = [textwrap.fill(line, width=100, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 2))
                 for line in self._notes()]
        return "\n".join(out + ([""] + notes if notes else []))

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        rows = self.rows
        cols = {c: format_column([r[c] for r in rows]) for c in ("AIC", "BIC", "logLik", "deviance", "Chisq")}
        body = [[r["model"], r["npar"], *(cols[c][i] for c in ("AIC", "BIC", "logLik", "deviance", "Chisq")),
                 "" if r["Df"] is None else r["Df"], format_p(r["Pr(>Chisq)"])]
                + ([format_p(r["Pr(boot)"])] if self.method == "boot" else []) for i, r in enumerate(rows)]
        header = ["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
        header += ["Pr(boot)"] * (self.method == "boot")
        models = "".join(f"<p>{html.escape(name)}: {html.escape(f.model.formula.text)}</p>"
                         for name, f in zip(self.names, self.fits))
        notes = "".join(f"<p>{html.escape(line)}</p>" for line in self._notes())
        return models + frames.html_table(header, body) + notes

    def to_frame(self):
        """The table as a pandas DataFrame indexed by model name (lme4's columns; NaN in the first row)."""
        pd = frames.require_pandas()
        rows = self.rows
        return pd.DataFrame([{k: (np.nan if v is None else v) for k, v in r.items() if k != "model"} for r in rows],
                            index=pd.Index([r["model"] for r in rows]))


def _ml(fit):
    """The fit itself if ML, else an ML refit of the same model (lme4's ``refitML``) from the REML values."""
    if not fit.reml:
        return fit
    if isinstance(fit.model, MultilevelModel):
        return multilevel_fit.fit(fit.model, reml=False, **refit_start(fit))
    return em.fit(fit.model, reml=False, **refit_start(fit))


def _boot_lrt(small, big, n_boot, rng, bar, offset):
    """Simulated LRT statistics under H0: data from the smaller ML fit, both models refitted by ML.

    Returns the n_boot statistics and the refit tallies of the smaller and the bigger model.
    """
    draw, s_start, b_start = response_sampler(small), refit_start(small), refit_start(big)
    t_small, t_big = RefitTally(), RefitTally()
    lrt = np.empty(n_boot)
    for b in range(n_boot):
        y = draw(rng)                                           # y* ~ the smaller model
        ll_small = t_small.refit(small.model, y, False, s_start).loglik
        ll_big = t_big.refit(big.model, y, False, b_start).loglik
        lrt[b] = max(0.0, 2 * (ll_big - ll_small))              # LRT*_b
        bar.update(offset + b + 1)
    return lrt, t_small, t_big


def anova(*fits, method="chisq", n_boot=500, seed=None, progress=False, names=None, ddf=None):
    """Likelihood-ratio tests of nested models fitted to the same data (lme4's ``anova()``).

    The models are sorted by their number of parameters df; each is tested
    against the one before it::

        LRT = 2 (loglik_big - loglik_small) = deviance_small - deviance_big
        p   = P(chi2(df_big - df_small) >= LRT)

    The log-likelihoods are ML ones: REML likelihoods of models with different
    fixed effects are not comparable, so REML fits are refitted by ML first
    (lme4 does the same, and says so).

    Parameters
    ----------
    *fits : MixedModelResult or MultilevelResult
        Two or more fits of nested models to the same data, with one grouping
        factor or several (``(1 | batch)`` against ``(1 | batch/cask)``).
    method : {"chisq", "boot"}
        "chisq": the chi-square p-values. "boot": also a parametric-bootstrap
        LRT for each pair: simulate ``n_boot`` data sets from the smaller
        model's ML fit, refit both models by ML, and count how often the
        simulated statistic reaches the observed one. ``pvalue`` then holds
        the bootstrap p-values.
    n_boot : int
        Bootstrap data sets per pair (each is two EM fits).
    seed : None, int >= 0, SeedSequence or Generator, optional (see :mod:`teachlmm.validators`)
        The same seed gives the same bootstrap p-values.
    progress : bool
        Show the bootstrap's progress on stderr.
    names : list of str, optional
        Row labels, in the order the fits are given (default "model1", ...).
    ddf : {"Satterthwaite", "Kenward-Roger"}, optional
        With a single fit: type III F tests of its fixed terms with these
        denominator df (lmerTest's ``anova(fit, type = 3)``); returns a
        :class:`teachlmm.ddf.FTable` (see :func:`teachlmm.ddf.anova`).

    Returns
    -------
    AnovaTable
        ``print()`` it for lme4's table; ``.chisq``, ``.df``, ``.pvalue``, ``.rows``.
        When a test sets a variance to 0 the printout adds a note: that
        chi-square p-value is conservative, and the mixture p-value is given.

    Raises
    ------
    TeachLMMError
        Fewer than two fits, an unknown method, models that are not nested, a
        BLUP at typed-in values (``tl.blup.fit``: no maximised likelihood), or an
        ML fit (given, or the ML refit of a REML fit) that stopped at max_iter:
        refused rather than marked, since its chi-square would be wrong.
    DataError
        Fits to different data (rows, response or grouping; for models built
        from chunks: n, the groups and their sizes, and each group's y'y).

    Examples
    --------
    >>> import teachlmm as tl
    >>> data = tl.load_radon()
    >>> m1 = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", data))
    >>> m3 = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", data))
    >>> tab = tl.compare.anova(m1, m3, names=["M1", "M3"])
    >>> print(f"Chisq {tab.chisq[1]:.4f} on {tab.df[1]:.0f} df, p = {tab.pvalue[1]:.4f}")
    Chisq 2.5418 on 2 df, p = 0.2806
    """
    if ddf is not None:
        if len(fits) == 1 and isinstance(fits[0], BaseResult) and not isinstance(fits[0], MixedModelResult):
            raise TeachLMMError("F tests with ddf= are not available for models with several grouping factors "
                                "yet; compare nested fits by likelihood-ratio tests: tl.anova(fit_small, fit_big)")
        if len(fits) != 1 or not isinstance(fits[0], MixedModelResult):
            raise TeachLMMError("ddf= gives F tests of the terms of one fit: tl.anova(fit, ddf='Satterthwaite'); "
                                "several fits are compared by likelihood-ratio tests without ddf")
        return f_tests(fits[0], ddf=ddf)
    if len(fits) < 2:
        raise TeachLMMError(f"anova compares two or more nested models, got {len(fits)} fit(s); "
                            "for F tests of one model's terms use tl.anova(fit, ddf='Satterthwaite'); "
                            "see also fit.summary(), fit.aic, fit.confint()")
    for k, f in enumerate(fits, start=1):
        if not isinstance(f, BaseResult):
            raise TeachLMMError(f"argument {k} is a {type(f).__name__}, not a fitted model (MixedModelResult)")
    method = str(method).lower()
    if method not in ("chisq", "boot"):
        raise TeachLMMError(f"method must be 'chisq' or 'boot', not {method!r}")
    names = [f"model{k}" for k in range(1, len(fits) + 1)] if names is None else [str(x) for x in names]
    if len(names) != len(fits):
        raise TeachLMMError(f"names has {len(names)} entries for {len(fits)} fits")
    _check_same_data(fits)
    _check_estimates(fits, names)
    order = sorted(range(len(fits)), key=lambda k: fits[k].df)  # stable: ties keep the given order
    fits, names = [fits[k] for k in order], [names[k] for k in order]
    for i in range(1, len(fits)):
        _check_nested(fits[i - 1], fits[i], names[i - 1], names[i])
    ml = [_ml(f) for f in fits]
    _check_estimates(ml, [f"{n} (refitted by ML)" if f.reml else n for n, f in zip(names, fits)])
    table = AnovaTable(names, ml, [f.reml for f in fits], method)
    if method == "boot":
        if any(f.model.X is None for f in fits):
            raise TeachLMMError("method='boot' needs the rows of the data for models built from chunks "
                                "(Model.from_chunks): the two models' statistics of one simulated response "
                                "cannot be drawn from either model's statistics alone. Use method='chisq' "
                                "(with the mixture p-value for a variance on the boundary), or build the models "
                                "from the data in memory")
        _add_bootstrap(table, validators.positive_int(n_boot, "n_boot"), seed, progress)
    return table


def _add_bootstrap(table, n_boot, seed, progress):
    """Bootstrap p-values for each consecutive pair; each pair has its own random stream."""
    k = len(table.fits)
    streams = validators.seed_sequence(seed).spawn(k - 1)
    bar = Progress(n_boot * (k - 1), "bootstrap LRT", progress)
    table.pvalue_boot, table.mcse = np.full(k, np.nan), np.full(k, np.nan)
    table.lrt_boot, table.singular_boot = [None] * k, [None] * k
    total = RefitTally()
    for i in range(1, k):
        lrt, t_small, t_big = _boot_lrt(table.fits[i - 1], table.fits[i], n_boot,
                                        np.random.default_rng(streams[i - 1]), bar, (i - 1) * n_boot)
        p = (1 + np.sum(lrt >= table.chisq[i] - 1e-10)) / (n_boot + 1)
        table.lrt_boot[i], table.pvalue_boot[i] = lrt, p
        table.mcse[i] = math.sqrt(p * (1 - p) / n_boot)         # binomial standard error of p
        table.singular_boot[i] = (t_small.singular, t_big.singular)
        for t in (t_small, t_big):
            total.fits, total.singular = total.fits + t.fits, total.singular + t.singular
            total.not_converged += t.not_converged
    table.pvalue = table.pvalue_boot
    table.n_boot, table.n_singular, table.n_not_converged = n_boot, total.singular, total.not_converged
    total.warn("bootstrap LRT")
