"""The fitted model, lmer style: fixef, ranef, coef, VarCorr, summary, predict.

A :class:`MixedModelResult` is built from a model and a pair (G, sigma2),
wherever they came from (EM, a typed-in "what if", a posterior mean): every
other number follows in closed form from the mixed-model equations
(:mod:`teachlmm.mme`):

* ``fixef`` = beta_hat (GLS) and ``vcov`` = sigma2 A^-1 (lme4's ``vcov()``),
* ``ranef`` = b_hat_j (BLUP), ``condsd`` = sqrt(diag(sigma2 M_j^-1)),
* ``coef`` = fixef + ranef for each group (lme4's ``coef()``).

Beside the result, the two things lme4 does with a fit and nothing else:
:func:`deviance` (-2 x the log-likelihood, ML or REML, as lme4's
``deviance()``) and :func:`simulate` (new responses from the fitted model, as
lme4's ``simulate()``).

:class:`BaseResult` holds what a fit with one grouping factor and a fit with
several (:class:`teachlmm.multilevel_result.MultilevelResult`) share: the
information criteria, the variance-components table and its lme4 names,
``confint``, ``simulate`` and the labelled tables. Both keep lme4's keys:
``fit.Gs`` by VarCorr name (``"county"``; ``"g"``, ``"g.1"`` for two terms on
one factor, as ``(1 + x || g)``), ``fit.ranefs``, ``fit.coefs``,
``fit.condsds`` and ``fit.groups_by`` by grouping factor (one entry per
factor, holding the columns of all its terms).
"""
import math
import warnings

import numpy as np

from . import ddf as _ddf
from . import frames, mme, prediction, validators
from .multilevel_mme import Algebra
from .errors import TeachLMMError
from .tables import format_table, significant

__all__ = ["BaseResult", "MixedModelResult", "deviance", "simulate", "response_sampler", "statistics_sampler"]


def _corr(G, sd, a, b):
    """G_ab / (sd_a sd_b), NaN when an sd is 0 (a correlation with a variance at 0 is undefined)."""
    return float(G[a, b] / (sd[a] * sd[b])) if sd[a] > 0 and sd[b] > 0 else float("nan")


class BaseResult:
    """What every fit shares, with one grouping factor or several, named and keyed as lme4 does.

    A subclass sets ``Gs`` (VarCorr name -> (q_k, q_k) array), ``term_columns``
    (VarCorr name -> the term's column names), ``term_factor`` (VarCorr name ->
    its grouping factor), ``ranefs``, ``coefs``, ``condsds``, ``groups_by``
    (grouping factor -> array), ``sigma2``, ``loglik``, ``reml``, ``fixef``,
    ``fixef_se``, ``fixef_names``, ``beta`` and ``df``; and the method
    :meth:`response_sampler`.
    """

    # -- information criteria (lme4's AIC(), BIC(), REMLcrit()) -----------------
    @property
    def aic(self):
        """Akaike's criterion, -2 loglik + 2 df (lme4's ``AIC()``; for REML fits on the REML loglik)."""
        return -2 * self.loglik + 2 * self.df

    @property
    def bic(self):
        """Schwarz's criterion, -2 loglik + log(n) df (lme4's ``BIC()``)."""
        return -2 * self.loglik + math.log(self.model.n) * self.df

    @property
    def reml_criterion(self):
        """-2 x restricted log-likelihood (lme4's "REML criterion at convergence"); None for ML fits."""
        return -2 * self.loglik if self.reml else None

    # -- the variance components by lme4's names --------------------------------
    def variance_parameters(self):
        """lme4's variance parameters as (name, value) pairs (the names of ``confint(oldNames = FALSE)``).

        Term by term (``Gs``), column by column of the lower triangle:
        ``sd_<column>|<factor>`` = sqrt(G_aa), then ``cor_<column b>.<column a>|<factor>``
        = G_ba / (sd_a sd_b) (NaN where an sd is 0); last ``sigma`` = sqrt(sigma2).

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))
        >>> [name for name, _ in fit.variance_parameters()]
        ['sd_(Intercept)|county', 'cor_floor.(Intercept)|county', 'sd_floor|county', 'sigma']
        """
        out = []
        for name, G in self.Gs.items():
            cols, g = self.term_columns[name], self.term_factor[name]
            sd = np.sqrt(np.diag(G))
            for a in range(len(cols)):
                out.append((f"sd_{cols[a]}|{g}", float(sd[a])))
                out += [(f"cor_{cols[b]}.{cols[a]}|{g}", _corr(G, sd, b, a)) for b in range(a + 1, len(cols))]
        return out + [("sigma", math.sqrt(self.sigma2))]

    def _random_effects_table(self):
        """lmer's "Random effects:" block: one row per column of each term, then the residual."""
        rows = []
        for name, G in self.Gs.items():
            sd = np.sqrt(np.diag(G))
            for a, col in enumerate(self.term_columns[name]):
                corr = " ".join(f"{_corr(G, sd, a, b):.3f}" for b in range(a))
                rows.append([name if a == 0 else "", col, significant(G[a, a]), significant(sd[a]), corr])
        rows.append(["Residual", "", significant(self.sigma2), significant(math.sqrt(self.sigma2)), ""])
        return format_table(rows, ["Groups", "Name", "Variance", "Std.Dev.", "Corr"], align="lllll")

    def varcorr_rows(self):
        """lme4's ``as.data.frame(VarCorr(fit))`` as (labels, rows): rows [grp, var1, var2, vcov, sdcor].

        One row per variance (sdcor: its sd), per covariance (sdcor: the
        correlation) and the residual; grp is the term's VarCorr name; labels
        ``"Var x"``, ``"Cov x,y"``, ``"Var Residual"`` (with ``"|grp"`` added where a column
        name occurs in several terms, e.g. ``"Var (Intercept)|batch"``).
        """
        seen = [c for cols in self.term_columns.values() for c in cols]
        rows, labels = [], []
        for name, G in self.Gs.items():
            cols, sd = self.term_columns[name], np.sqrt(np.diag(G))
            tag = lambda text, c: text + (f"|{name}" if seen.count(c) > 1 else "")   # noqa: E731
            for a, c in enumerate(cols):
                rows.append([name, c, None, float(G[a, a]), float(sd[a])])
                labels.append(tag(f"Var {c}", c))
            for a in range(len(cols)):
                for b in range(a + 1, len(cols)):
                    rows.append([name, cols[a], cols[b], float(G[b, a]), _corr(G, sd, b, a)])
                    labels.append(tag(f"Cov {cols[a]},{cols[b]}", cols[a]))
        rows.append(["Residual", None, None, self.sigma2, math.sqrt(self.sigma2)])
        labels.append("Var Residual")
        return labels, rows

    def _summary_text(self, groups_line, fixed_title, fixed_table, notes):
        """lmer's summary() around the given groups line and fixed-effects table (shared by every fit)."""
        m = self.model
        kind = "REML" if self.reml else "maximum likelihood"
        crit = (f"REML criterion at convergence: {-2 * self.loglik:.2f}" if self.reml else
                f"     AIC      BIC   logLik deviance\n {self.aic:8.2f} {self.bic:8.2f} {self.loglik:8.2f} "
                f"{-2 * self.loglik:8.2f}")
        if m.X is not None:
            r = self.residuals() / math.sqrt(self.sigma2)
            qs = np.quantile(r, [0, 0.25, 0.5, 0.75, 1])
        else:                                  # built from chunks: no rows kept
            qs = np.full(5, np.nan)
        out = [f"Linear mixed model fit by {kind} ({self.method})",
               f"Formula: {m.formula.text}", "", crit, f"logLik: {self.loglik:.2f}", "",
               "Scaled residuals:",
               format_table([["", *(f"{v:.4f}" for v in qs)]], ["", "Min", "1Q", "Median", "3Q", "Max"]), "",
               "Random effects:", self._random_effects_table(), groups_line]
        out += [f"({m.n_dropped} observations deleted due to missingness)"] * bool(getattr(m, "n_dropped", 0))
        out += ["", fixed_title, fixed_table] + notes
        return frames.Text("\n".join(out))

    # -- what lme4 does with a fit ------------------------------------------------
    def confint(self, method="wald", level=0.95, **options):
        """Confidence intervals; see :func:`teachlmm.intervals.confint`."""
        # The one import inside a function in teachlmm: bootstrap intervals refit by EM, and
        # em imports this module (em.fit returns a MixedModelResult), so intervals cannot be
        # imported at the top here without an import circle.
        from .intervals import confint
        return confint(self, method=method, level=level, **options)

    def simulate(self, n_sim=1, seed=None):
        """New responses from the fitted model; see :func:`teachlmm.results.simulate`."""
        return simulate(self, n_sim=n_sim, seed=seed)

    # -- labelled tables -------------------------------------------------------
    def _factor(self, factor):
        """The grouping factor a per-group table is about (the only one, or the one named)."""
        factors = list(self.groups_by)
        if factor is None and len(factors) == 1:
            return factors[0]
        if factor is None:
            raise TeachLMMError(f"this model has several grouping factors ({', '.join(map(repr, factors))}); "
                                "say which one, e.g. to_frame('ranef', factor=" f"{factors[0]!r})")
        if factor not in self.groups_by:
            which = f"is {factors[0]!r}" if len(factors) == 1 else f"are {', '.join(map(repr, factors))}"
            raise TeachLMMError(f"unknown grouping factor {factor!r}; this model's {which}")
        return factor

    def to_frame(self, what="fixef", ddf=None, factor=None):
        """A labelled pandas DataFrame of one part of the fit (needs the optional extra ``pandas``).

        Parameters
        ----------
        what : {"fixef", "ranef", "coef", "condsd", "varcorr"}
            * ``"fixef"``: the coefficient table, one row per fixed effect
              (Estimate, Std. Error, t value; with ``fit.coef_table`` available,
              its columns, e.g. df and p-values for ``ddf=``).
            * ``"ranef"``, ``"coef"``, ``"condsd"``: ``fit.ranefs[factor]``,
              ``fit.coefs[factor]``, ``fit.condsds[factor]``, one row per level
              (index: the level labels, named after the factor), columns the
              factor's random-effect names (coefficient names for ``"coef"``).
            * ``"varcorr"``: lme4's ``as.data.frame(VarCorr(fit))``: columns grp,
              var1, var2, vcov, sdcor (variance and sd, or covariance and correlation),
              indexed by "Var x" / "Cov x,y" / "Var Residual".
        ddf : str, optional
            Degrees-of-freedom method for ``"fixef"``; passed to ``fit.coef_table``.
        factor : str, optional
            The grouping factor for ``"ranef"``, ``"coef"``, ``"condsd"`` (a key of
            ``fit.groups_by``); needed only when the model has several.

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
        >>> fit.to_frame("ranef").shape, list(fit.to_frame("fixef").columns)[:2]
        ((85, 1), ['Estimate', 'Std. Error'])
        """
        if what == "fixef":
            return self._fixef_frame(ddf)
        if what == "varcorr":
            return self._varcorr_frame()
        if what in ("ranef", "coef", "condsd"):
            g = self._factor(factor)
            values = {"ranef": self.ranefs, "coef": self.coefs, "condsd": self.condsds}[what][g]
            names = self.coef_names if what == "coef" else self.ranef_names
            return frames.labelled(values, self.groups_by[g], names[g] if isinstance(names, dict) else names, g)
        raise TeachLMMError(f"unknown table {what!r}; choose one of 'fixef', 'ranef', 'coef', 'condsd', 'varcorr'")

    def _fixef_frame(self, ddf):
        pd = frames.require_pandas()
        index = pd.Index(self.fixef_names)
        if hasattr(self, "coef_table"):              # the table with degrees of freedom, where it exists
            table = self.coef_table() if ddf is None else self.coef_table(ddf=ddf)
            if isinstance(table, pd.DataFrame):
                return table
            if hasattr(table, "to_frame"):
                return table.to_frame()
            return pd.DataFrame(table, index=index)
        if ddf is not None:
            raise TeachLMMError("degrees of freedom (ddf=) are not available for this fit (several grouping "
                                "factors); leave ddf out for the Estimate / Std. Error / t value table")
        est = np.array([self.fixef[k] for k in self.fixef_names])
        se = np.array([self.fixef_se[k] for k in self.fixef_names])
        with np.errstate(divide="ignore", invalid="ignore"):
            return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se}, index=index)

    def _varcorr_frame(self):
        pd = frames.require_pandas()
        labels, rows = self.varcorr_rows()
        return pd.DataFrame(rows, index=pd.Index(labels), columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def _repr_html_(self):
        return self.summary()._repr_html_()


class MixedModelResult(BaseResult):
    """A linear mixed model evaluated at variance components (G, sigma2).

    Attributes
    ----------
    fixef : dict name -> estimate (formula order).
    fixef_se : dict name -> standard error, sqrt(diag(sigma2 A^-1)).
    vcov : (p, p) covariance of the fixed effects.
    G : (q, q) covariance of the random effects.   sigma2 : residual variance.
    loglik : lme4's ``logLik()``: restricted for REML (= -REMLcrit/2), else ML.
    groups : (J,) group labels, in the row order of ranef/coef/condsd.
    ranef : (J, q) BLUPs, columns ``ranef_names``.
    coef : (J, len(coef_names)) group-specific coefficients (fixef + ranef).
    condsd : (J, q) conditional standard deviations of the random effects.
    icc : intraclass correlation G[0,0] / (G[0,0] + sigma2) when there is a
        random intercept (for random slopes it depends on x; None otherwise).
    Gs : dict, VarCorr name -> block of G (``{"county": G}``; ``"g"``, ``"g.1"`` for ``||``).
    ranefs, coefs, condsds, groups_by : dicts with the one key ``group_name`` holding
        ``ranef``, ``coef``, ``condsd`` and ``groups`` (the keys fits of several factors have).
    n_iter, converged, singular, history : the fitting method's report.
    max_grad : max ``|gradient|`` of the profiled deviance with respect to lme4's theta at the
        estimates, as lme4's ``checkConv`` reports it (None when not computed).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
    >>> res = tl.em.fit(model)
    >>> sorted(res.fixef)
    ['(Intercept)', 'floor']
    >>> res.ranef.shape, res.coef.shape
    ((85, 1), (85, 2))
    """

    def __init__(self, model, G, sigma2, reml=True, method="given", n_iter=0, converged=True,
                 history=None, seconds=None, max_grad=None, G_centred=None):
        self.model = model
        self.G = np.atleast_2d(np.asarray(G, dtype=float))
        self.sigma2 = float(sigma2)
        self.reml, self.method = bool(reml), method
        self.n_iter, self.converged, self.history, self.seconds = n_iter, converged, history or [], seconds
        self.max_grad = max_grad
        # A column with a large mean: solve in the centred basis (Model.fitting_basis) and map back,
        # beta = S_x (beta_c + c_y e_0), b_j = S_z b_cj, Var = S V_c S' (exact; the likelihood is unchanged).
        work, centring = model.fitting_basis()
        if work is model:
            G_c = self.G
        else:
            G_c = centring.G_centred(self.G) if G_centred is None else np.atleast_2d(np.asarray(G_centred, float))
        self._G_work = G_c
        self.solution = sol = mme.solve(work.stats, G_c, self.sigma2)     # in the working basis
        self.loglik = mme.loglik(work.stats, G_c, self.sigma2, self.reml, sol)
        # lme4's isSingular(): a diagonal element of the relative factor T (G = sigma2 T T') below 1e-4
        # (of the working basis: a rank-deficient G stays so under the change of basis, and the centred
        # factor is the one computed without cancellation)
        self.singular = bool(np.any(np.diag(sol.T) < 1e-4))
        names = model.fixef_names
        self.beta = centring.beta(sol.beta) if work is not model else sol.beta
        self.vcov = (centring.vcov(self.sigma2 * sol.A_inv) if model.p else np.zeros((0, 0)))
        self.fixef = dict(zip(names, self.beta.tolist()))
        self.fixef_se = dict(zip(names, np.sqrt(np.diag(self.vcov)).tolist()))
        self.groups = model.groups
        self.group_name = model.group_name
        self.fixef_names, self.ranef_names = list(names), list(model.ranef_names)
        self.ranef = centring.b(sol.b) if work is not model else sol.b
        Sz = centring.Sz
        self.condvar = self.sigma2 * (sol.Minv if work is model else Sz @ sol.Minv @ Sz.T)   # (J, q, q) Var(b_j | y, beta)
        self.condsd = np.sqrt(np.clip(np.einsum("jqq->jq", self.condvar), 0, None))
        self.coef_names = model.coef_names
        self.coef = self._coef()
        self.icc = (self.G[0, 0] / (self.G[0, 0] + self.sigma2)
                    if self.ranef_names and self.ranef_names[0] == "(Intercept)" else None)
        self._fill_dicts(model)

    def _fill_dicts(self, model):
        """The keyed attributes shared with fits of several factors: one factor, one key (lme4's names).

        ``Gs`` has one entry per block of G, named as lme4's VarCorr names the
        terms: ``(1 + x | g)`` gives {"g": G}; ``(1 + x || g)`` and ``(1 | g) +
        (0 + x | g)`` give {"g": G[0:1, 0:1], "g.1": G[1:2, 1:2]}. The per-group
        dicts have the one key ``g`` (lme4's ``ranef()`` gives one entry per
        factor) holding ``ranef``, ``coef``, ``condsd`` and ``groups`` themselves.
        """
        g = self.group_name
        names = [g if k == 0 else f"{g}.{k}" for k in range(len(model.blocks))]
        self.Gs = {name: self.G[np.ix_(blk, blk)] for name, blk in zip(names, model.blocks)}
        self.term_columns = {name: [self.ranef_names[i] for i in blk] for name, blk in zip(names, model.blocks)}
        self.term_factor = dict.fromkeys(names, g)
        self.ranefs, self.coefs, self.condsds, self.groups_by = ({g: self.ranef}, {g: self.coef},
                                                                 {g: self.condsd}, {g: self.groups})

    # -- derived quantities --------------------------------------------------
    def _coef(self):
        """coef_j = fixef + ranef_j, column by column (a random-only term has fixef 0)."""
        J = self.model.J
        out = np.zeros((J, len(self.coef_names)))
        out[:, :len(self.fixef_names)] = self.beta
        for k, name in enumerate(self.ranef_names):
            out[:, self.coef_names.index(name)] += self.ranef[:, k]
        return out

    @property
    def df(self):
        """Number of estimated parameters: p fixed effects, the free entries of G, and sigma2."""
        return self.model.p + sum(len(b) * (len(b) + 1) // 2 for b in self.model.blocks) + 1

    @property
    def sd(self):
        """Standard deviations of the random effects, sqrt(diag(G))."""
        return np.sqrt(np.diag(self.G))

    @property
    def corr(self):
        """Correlation matrix of the random effects (NaN where a variance is 0)."""
        sd = self.sd
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.G / np.outer(sd, sd)

    @property
    def deviance(self):
        """lme4's ``deviance()``; see :func:`teachlmm.results.deviance`."""
        return deviance(self)

    def coef_table(self, ddf="Satterthwaite"):
        """Estimates, SEs, df, t values and p-values (lmerTest); see :func:`teachlmm.ddf.coef_table`."""
        return _ddf.coef_table(self, ddf)

    def varcorr(self):
        """lme4's VarCorr(): a dict with the variances, standard deviations and correlations."""
        return {"G": self.G, "sd": self.sd, "corr": self.corr, "sigma2": self.sigma2,
                "sigma": math.sqrt(self.sigma2), "names": self.ranef_names}

    def _linear_predictor(self):
        """X beta + Z_j b_j for every fitted row (without the formula's offset)."""
        m = _rows_of(self.model, "fitted values and residuals")
        return m.X @ self.beta + np.einsum("iq,iq->i", m.Z, self.ranef[m.codes])

    def fitted(self):
        """X beta + Z_j b_j (+ the formula's ``offset(...)``) for every row of the fitted data (each row's group BLUP)."""
        off = self.model.offset
        eta = self._linear_predictor()
        return eta if off is None else eta + off

    def residuals(self):
        """y - fitted (the response as read, minus the fitted values, both with the offset)."""
        return self.model.y - self._linear_predictor()

    def predict(self, newdata=None, re=True, return_unseen=False, interval=None, level=0.95):
        """Predictions for the fitted rows or for new data, optionally with intervals.

        Parameters
        ----------
        newdata : mapping, optional
            New rows with the formula's columns (the response is not needed).
            Default: the fitted data.
        re : bool, default True
            Add the group's random effects (its BLUP). With ``re=False`` the
            prediction is the fixed part X beta only.
        return_unseen : bool
            Also return a boolean array marking rows whose group was not in the
            fitted data; they get the fixed part only (their random effects are
            0, the mean of the distribution), and a warning says how many.
        interval : None, "confidence" or "prediction"
            None (default): the predictions as an array. Otherwise a
            :class:`~teachlmm.prediction.Prediction` with ``fit``, ``lower``,
            ``upper`` and ``se`` (and ``to_frame()``):

            * ``"confidence"`` covers the conditional mean x'beta + z'b_j of the
              row's group (with ``re=False``: x'beta). Its variance is the
              prediction-error variance of (beta_hat, b_hat_j - b_j), Henderson's
              sigma2 C^-1 (:mod:`teachlmm.prediction`); for a group not in the data,
              sigma2 x'A^-1 x + z'Gz.
            * ``"prediction"`` covers a new observation: the above plus sigma2
              (with ``re=False`` also z'Gz: a new row from any group).

            Included: the uncertainty of beta_hat and of the BLUPs, and their
            correlation. NOT included: the uncertainty of the estimated variance
            components G and sigma2, which are treated as known (as lme4's
            ``predict(se.fit=TRUE)`` and merTools' ``predictInterval`` without
            simulation of theta do); with few groups the intervals are then too
            narrow. Bounds use normal quantiles.
        level : float, default 0.95
            Coverage of the intervals.

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))
        >>> new = {"floor": [0.0, 1.0], "county": [2, 2]}
        >>> [round(float(v), 3) for v in fit.predict(new)]       # county 2's line 0.933 - 0.771 x
        [0.933, 0.163]
        >>> p = fit.predict(new, interval="prediction")
        >>> bool((p.lower < p.fit).all() and (p.fit < p.upper).all())
        True
        """
        if newdata is None:
            m = _rows_of(self.model, "predict() without newdata")
            X, Z, codes, offset = m.X, m.Z, m.codes, m.offset
        else:
            X, Z, codes = self.model.design(newdata)
            offset = self.model.offset_of(newdata) if self.model.formula.offsets else None
        unseen = codes < 0
        pred = X @ self.beta
        if offset is not None:                  # offset(w) in the formula: part of every prediction, as in lme4
            pred = pred + offset
        if re:
            b = np.where(unseen[:, None], 0.0, self.ranef[np.where(unseen, 0, codes)])
            pred = pred + np.einsum("iq,iq->i", Z, b)
            if unseen.any():
                warnings.warn(f"{unseen.sum()} row(s) belong to groups not in the fitted data; "
                              "they get the fixed part only (random effects at their mean, 0).", stacklevel=2)
        if interval is not None:
            pred = prediction.intervals(self, X, Z, codes, pred, interval, level, re=re)
        return (pred, unseen) if return_unseen else pred

    # -- printing ------------------------------------------------------------
    def summary(self, ddf=None):
        """The lmer-style summary as a string (print it; a notebook shows it as preformatted text).

        The fixed effects are printed in lmerTest's layout: Estimate, Std. Error,
        df, t value, Pr(>|t|), with the df of ``ddf`` ("Satterthwaite",
        "Kenward-Roger", "between-within"; "normal" prints z values); see
        :mod:`teachlmm.ddf`. Default: Satterthwaite for estimated variance
        components, "normal" for given ones (then beta_hat is exactly normal).

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
        >>> print(fit.summary().splitlines()[0])
        Linear mixed model fit by REML (EM + Newton)
        """
        method = ddf if ddf is not None else (
            "normal" if self.method == "given" or self.method.startswith("BLUP") else "Satterthwaite")
        m = self.model
        notes = []
        if self.singular:
            notes += ["", "boundary (singular) fit: a variance is (nearly) 0 or a correlation is +-1"]
        if self.method.startswith("EM") and not self.converged:
            notes += ["", f"EM did not converge in {self.n_iter} iterations (see ConvergenceWarning)"]
        return self._summary_text(f"Number of obs: {m.n}, groups: {m.group_name}, {m.J}",
                                  f"Fixed effects ({_ddf.summary_header(method)}):",
                                  _ddf.format_coef_table(self.coef_table(method)), notes)

    def __repr__(self):
        return (f"<MixedModelResult {self.method}, {'REML' if self.reml else 'ML'}: "
                f"{self.model.formula.text!r}, loglik {self.loglik:.3f}>")


# ----------------------------------------------------------------------------
# deviance and simulation: what lme4 does with a fit
# ----------------------------------------------------------------------------

def deviance(fit, reml=None):
    """lme4's ``deviance()``: -2 x the log-likelihood of a fit.

    Parameters
    ----------
    fit : MixedModelResult
    reml : bool, optional
        Which criterion. Default: the one the fit maximised, as lme4's
        ``deviance(fit)``: for an ML fit ``-2 loglik``; for a REML fit the REML
        criterion ``-2 loglik_R`` (lme4 1.1-31 returns it with a warning that
        this use is deprecated; it is not a deviance in the ML sense).
        ``reml=False`` on a REML fit gives lme4's ``deviance(fit, REML = FALSE)``:
        the ML deviance at the REML estimate of T = chol(G / sigma2), with
        sigma2 re-estimated (profiled) for ML (:func:`teachlmm.mme.profiled_deviance`).
        ``reml=True`` on an ML fit is the REML criterion at the ML estimate of T,
        sigma2 profiled for REML (lme4's ``REMLcrit(fit)``; lme4's
        ``deviance(fit, REML = TRUE)`` ignores the argument for ML fits and
        returns the ML deviance).

    Returns
    -------
    float

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> round(fit.deviance, 3), round(tl.results.deviance(fit, reml=False), 3)
    (2171.305, 2163.656)
    """
    reml = fit.reml if reml is None else bool(reml)
    if reml == fit.reml:
        return -2.0 * fit.loglik
    if not isinstance(fit, MixedModelResult):          # several factors: the other criterion at the same theta
        return float(Algebra(fit.model).deviance(fit.theta, reml))
    work, _ = fit.model.fitting_basis()
    return mme.profiled_deviance(work.stats, getattr(fit, "_G_work", fit.G), fit.sigma2, reml)


def _rows_of(model, what):
    """The model, if it keeps its rows; a model built from chunks does not, and says so once for every method."""
    if model.X is None:
        raise TeachLMMError(f"{what} need(s) the rows of the data, but this model was built from chunks "
                            "(Model.from_chunks) and keeps only the per-group statistics. Everything else works "
                            "(fits, summary, anova, gibbs.sample, predict(newdata)); for these, build the Model "
                            "from the data in memory, or call predict(newdata) on the rows you need")
    return model


def response_sampler(fit):
    """A function rng -> one response vector y* drawn from the fitted model.

    b*_j = L u_j with u_j ~ N(0, I_q) and L L' = G. L = sqrt(sigma2) T is the
    relative factor of :mod:`teachlmm.mme`, which exists also for a singular G
    (a variance of 0 gives a zero column: that effect is never drawn).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> response_sampler(fit)(np.random.default_rng(1)).shape
    (919,)
    """
    if not isinstance(fit, MixedModelResult):                   # several grouping factors: the fit's own sampler
        return fit.response_sampler()
    m = fit.model
    if m.X is None:                                             # built from chunks: draw the statistics instead
        return statistics_sampler(fit)
    mean = m.X @ fit.beta                                       # X beta (model.y's scale: without the offset)
    L = math.sqrt(fit.sigma2) * mme.relative_factor(fit.G, fit.sigma2)
    sigma = math.sqrt(fit.sigma2)

    def draw(rng):
        b = rng.standard_normal((m.J, m.q)) @ L.T               # b*_j ~ N(0, G), one row per group
        eps = sigma * rng.standard_normal(m.n)                  # eps* ~ N(0, sigma2 I)
        return mean + np.einsum("iq,iq->i", m.Z, b[m.codes]) + eps
    return draw


def statistics_sampler(fit):
    """A function rng -> the per-group statistics (:class:`~teachlmm.design.GroupStats`) of one response
    y* drawn from the fitted model, computed from the statistics alone (the bootstrap of a model built from chunks).

    With W_j = [X_j Z_j], theta_j = (beta, b*_j), b*_j ~ N(0, G) and
    y*_j = W_j theta_j + eps_j, only u_j = W_j'eps_j and eps_j'eps_j enter the
    statistics, and their joint law needs only W_j'W_j::

        u_j = W_j'eps_j ~ N(0, sigma2 W_j'W_j)               drawn as sqrt(sigma2) V_j diag(sqrt(lam_j)) z_j
        eps_j'eps_j = u_j'(W_j'W_j)^+ u_j + sigma2 chi2(n_j - r_j)   (the part in W_j's column space, and the
                                                               independent rest; u'(W'W)^+u = sigma2 ||z||^2)
        W_j'y*_j = W_j'W_j theta_j + u_j
        y*_j'y*_j = theta_j'W_j'W_j theta_j + 2 theta_j'u_j + eps_j'eps_j

    (W_j'W_j = V_j diag(lam_j) V_j', r_j its rank). These are exactly the
    statistics the rows of y* would give, so a refit on them is a refit on y*.
    """
    m, s = fit.model, fit.model.stats
    p, q, J = m.p, m.q, m.J
    WtW = np.concatenate([np.concatenate([s.XtX, s.XtZ], axis=2), np.concatenate([s.ZtX, s.ZtZ], axis=2)], axis=1)
    lam, V = np.linalg.eigh(WtW)                                  # (J, k), (J, k, k)
    keep = lam > 1e-12 * lam.max(axis=1, keepdims=True) * WtW.shape[1]
    root = V * np.sqrt(np.where(keep, lam, 0.0))[:, None, :]    # root root' = W_j'W_j
    rest_df = s.n - keep.sum(axis=1)                              # n_j - r_j
    L = math.sqrt(fit.sigma2) * mme.relative_factor(fit.G, fit.sigma2)
    sigma = math.sqrt(fit.sigma2)

    def draw(rng):
        b = rng.standard_normal((J, q)) @ L.T                     # b*_j ~ N(0, G)
        theta = np.concatenate([np.broadcast_to(fit.beta, (J, p)), b], axis=1)
        z = rng.standard_normal(theta.shape)
        u = sigma * np.einsum("jkl,jl->jk", root, z)              # W_j'eps_j
        rest = np.where(rest_df > 0, rng.chisquare(np.maximum(rest_df, 1)), 0.0)
        ee = fit.sigma2 * ((z * z * keep).sum(axis=1) + rest)     # eps_j'eps_j
        Wtheta = np.einsum("jkl,jl->jk", WtW, theta)
        Wty = Wtheta + u
        yty = (theta * Wtheta).sum(axis=1) + 2 * (theta * u).sum(axis=1) + ee
        return type(s)(n=s.n, XtX=s.XtX, XtZ=s.XtZ, ZtZ=s.ZtZ, Xty=Wty[:, :p], Zty=Wty[:, p:], yty=yty)
    return draw


def simulate(fit, n_sim=1, seed=None):
    """New responses from the fitted model (lme4's ``simulate()``).

    Each simulation draws fresh random effects and fresh residuals::

        y* = X beta + Z_j b*_j + eps*,   b*_j ~ N(0, G),  eps* ~ N(0, sigma2 I)

    at the fit's (beta, G, sigma2), keeping X, Z and the groups of the data.
    (For new data with a known truth, from scratch, see ``tl.simulate_data``.)

    Parameters
    ----------
    fit : MixedModelResult
    n_sim : int
        Number of simulated response vectors.
    seed : None, int >= 0, numpy.random.SeedSequence or numpy.random.Generator, optional
        The same seed gives the same draws (the policy of :mod:`teachlmm.validators`).

    Returns
    -------
    (n_sim, n) array, one simulated response per row.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    >>> ys = fit.simulate(n_sim=3, seed=1)
    >>> ys.shape
    (3, 919)
    >>> bool((ys == fit.simulate(n_sim=3, seed=1)).all())
    True
    """
    n_sim = validators.positive_int(n_sim, "n_sim")
    rng = validators.rng(seed)
    _rows_of(fit.model, "simulate()")
    draw = response_sampler(fit)
    ys = np.array([draw(rng) for _ in range(n_sim)]).reshape(n_sim, fit.model.n)
    return ys if fit.model.offset is None else ys + fit.model.offset     # the response as read: with offset(...)
