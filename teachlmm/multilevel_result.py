"""The fit of a model with several grouping factors, keyed as lme4 keys its output.

Everything follows from the optimum theta (:mod:`teachlmm.multilevel_fit`)
through one solve of the joint mixed-model equations
(:meth:`teachlmm.multilevel_mme.Algebra.solve`): beta_hat, sigma2, the BLUPs
b_k of every term and condVar, the diagonal blocks of the joint
sigma2 T_k [A^-1]_jj T_k' given beta_hat. The result names them as lme4
does::

    fit.Gs["cask:batch"], fit.Gs["batch"]        VarCorr(fit), by term ("g", "g.1" for two terms on g)
    fit.ranefs["batch"], fit.condsds["batch"]    ranef(fit, condVar = TRUE), by grouping factor
    fit.coefs["batch"]                           coef(fit): fixef + ranef, by grouping factor

With what the one-factor result (:class:`teachlmm.results.MixedModelResult`)
shares with it through :class:`teachlmm.results.BaseResult` (AIC, BIC, the
variance table, ``confint``, ``simulate``, ``to_frame``), it answers the same
questions: ``summary()``, ``predict(newdata)`` with levels unseen at any
factor, ``fitted()``, ``residuals()``, ``tl.anova(fit1, fit2)``.
"""
import math
import warnings

import numpy as np

from . import ddf as _ddf, multilevel_ddf
from .errors import BoundaryWarning, DesignError, TeachLMMError
from .results import BaseResult
from .tables import format_column, format_table

__all__ = ["MultilevelResult"]


class MultilevelResult(BaseResult):
    """The fit of a :class:`~teachlmm.multilevel.MultilevelModel`, keyed as lme4 keys its output.

    Attributes
    ----------
    Gs : dict, VarCorr name -> (q_k, q_k) array ("cask:batch", "batch"; "g", "g.1").
    sigma2 : float.  fixef, fixef_se : dicts by coefficient name.  vcov : (p, p) array.  beta : (p,) array.
    loglik : float (the REML log-likelihood for a REML fit, as lme4's logLik).
    deviance : lme4's REMLcrit (REML) or deviance (ML).  theta : lme4's theta.
    df : number of parameters, p + len(theta) + 1 (lme4's ``attr(logLik(fit), "df")``).
    aic, bic : lme4's AIC() and BIC().
    ranefs, condsds : dict, grouping factor -> (J, q) array (the columns of all
        that factor's terms, in lme4's order); condsd is lme4's condVar given beta_hat.
    coefs : dict, grouping factor -> (J, len(coef_names[g])) array, lme4's ``coef()``:
        every fixed effect, plus the factor's random effects where the column has one.
    groups_by : dict, grouping factor -> level labels.  ranef_names, coef_names : dict, factor -> column names.
    icc : dict, VarCorr name -> the term's share of the variance of a row at x = 0 (see :attr:`icc`).
    reml : bool.  model : the MultilevelModel.  singular : a G_k is singular (boundary fit).
    method, converged, n_iter, seconds : the fitting method's report.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv")))
    >>> list(fit.Gs), list(fit.ranefs), fit.ranefs["batch"].shape
    (['cask:batch', 'batch'], ['cask:batch', 'batch'], (10, 1))
    """

    def __init__(self, model, alg, theta, reml, optimiser=None, method="profiled deviance", seconds=None):
        sol = alg.solve(theta, reml)
        self.model, self.reml, self.theta, self.optimiser = model, bool(reml), np.asarray(theta, float), optimiser
        self.method, self.seconds = method, seconds
        self.converged = optimiser is None or bool(getattr(optimiser, "success", True)) or \
            "ABNORMAL" in str(getattr(optimiser, "message", "")).upper()
        self.n_iter = int(getattr(optimiser, "nit", 0) or 0)
        self.sigma2 = float(sol["sigma2"])
        self.Gs = {t.name: G for t, G in zip(model.terms, sol["Gs"])}
        self.term_columns = {t.name: list(t.columns) for t in model.terms}
        self.term_factor = {t.name: t.factor for t in model.terms}
        self.fixef_names = list(model.fixef_names)
        self.beta = np.asarray(sol["beta"], float)
        self.fixef = dict(zip(model.fixef_names, self.beta.tolist()))
        self.vcov = sol["vcov"]
        self.fixef_se = dict(zip(model.fixef_names, np.sqrt(np.diag(self.vcov)).tolist()))
        self.deviance = float(sol["deviance"])
        self.loglik = -self.deviance / 2
        self.b = sol["b"]                                  # per term, (J_k, q_k), in model.terms order
        self._Ts = alg.Ts(self.theta)
        self.ranefs, self.condsds, self.groups_by, self.ranef_names = {}, {}, {}, {}
        for g in model.factors:
            ks = [k for k, t in enumerate(model.terms) if t.factor == g]
            self.ranefs[g] = np.column_stack([sol["b"][k] for k in ks])
            self.condsds[g] = np.column_stack([np.sqrt(np.diagonal(sol["condvar"][k], axis1=1, axis2=2))
                                               for k in ks])
            self.groups_by[g] = model.terms[ks[0]].levels
            self.ranef_names[g] = [c for k in ks for c in model.terms[k].columns]
        self.coef_names = model.coef_names
        self.coefs = {g: self._coef(g) for g in model.factors}
        self._warn_boundary()

    # -- derived quantities --------------------------------------------------
    def _coef(self, g):
        """lme4's coef() for factor g: coef_j = fixef + b_gj, column by column (a random-only column has fixef 0)."""
        names = self.coef_names[g]
        out = np.zeros((len(self.groups_by[g]), len(names)))
        out[:, :len(self.fixef_names)] = self.beta
        for k, col in enumerate(self.ranef_names[g]):
            out[:, names.index(col)] += self.ranefs[g][:, k]
        return out

    @property
    def df(self):
        """Number of estimated parameters: p fixed effects, the entries of theta (every G_k's free entries), sigma2."""
        return self.model.p + self.theta.size + 1

    @property
    def icc(self):
        """Intraclass correlations for several terms: each term's share of the intercept variance.

        For a row whose random-effect covariates other than the intercept are 0,
        Var(y_i) = sum_k G_k[0, 0] + sigma2 over the terms with a random
        intercept; term k's share is::

            icc_k = G_k[0, 0] / (sum_l G_l[0, 0] + sigma2)

        For nested factors (pupils in classes in schools) icc_k is the
        correlation of two rows that share term k's level but no deeper one
        (two pupils of one school in different classes: icc_school); rows that
        share several levels correlate with the sum of those terms' icc. A dict
        by VarCorr name; None for a term without a random intercept (its share
        depends on x).

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv")))
        >>> {k: round(v, 3) for k, v in fit.icc.items()}
        {'cask:batch': 0.783, 'batch': 0.154}
        """
        icpt = {name: float(G[0, 0]) for name, G in self.Gs.items() if self.term_columns[name][0] == "(Intercept)"}
        total = sum(icpt.values()) + self.sigma2
        return {name: (icpt[name] / total if name in icpt else None) for name in self.Gs}

    def _warn_boundary(self):
        at = [t.name for t, T in zip(self.model.terms, self._Ts) if np.any(np.diag(T) < 1e-4)]
        self.singular = bool(at)                 # lme4's isSingular(): a diagonal entry of some T_k below 1e-4
        if at:
            warnings.warn(f"boundary (singular) fit: the covariance of {', '.join(map(repr, at))} is singular "
                          "(a variance estimated as 0 or a correlation of +-1); the fit is finished, but consider "
                          "a simpler random-effects structure", BoundaryWarning, stacklevel=4)

    # -- fitted values and predictions ----------------------------------------
    def _random_part(self, Zs, codes):
        """sum_k Z_k b_k[level] for every row; a level not in the fitted data (code -1) contributes 0."""
        out = 0.0
        for Z, c, b in zip(Zs, codes, self.b):
            unseen = c < 0
            bk = b[np.where(unseen, 0, c)]
            bk[unseen] = 0.0
            out = out + np.einsum("iq,iq->i", Z, bk)
        return out

    def fitted(self):
        """X beta + sum_k Z_k b_k (+ the formula's ``offset(...)``) for every row of the fitted data."""
        m = self.model
        eta = m.X @ self.beta + self._random_part([t.Z for t in m.terms], [t.codes for t in m.terms])
        return eta if m.offset is None else eta + m.offset

    def residuals(self):
        """y - fitted (both with the offset)."""
        m = self.model
        return m.y - (m.X @ self.beta + self._random_part([t.Z for t in m.terms], [t.codes for t in m.terms]))

    def predict(self, newdata=None, re=True, return_unseen=False, interval=None, level=0.95):
        """Predictions for the fitted rows or for new data, with levels unseen at any factor.

        Each row gets x'beta_hat + sum_k z_k'b_hat_k[level] (+ the offset). A
        level of factor k that was not in the fitted data gets b_k = 0, the
        mean of its distribution, while the row keeps the BLUPs of its other
        factors' known levels: a new cask of a known batch gets the batch's
        effect (lme4's ``predict(allow.new.levels = TRUE)``). A warning says how
        many rows had an unseen level at which factor.

        Parameters
        ----------
        newdata : mapping, optional
            New rows with the formula's columns (the response is not needed); default the fitted data.
        re : bool, default True
            With ``re=False`` the prediction is the fixed part only (lme4's ``re.form = NA``).
        return_unseen : bool
            Also return a dict grouping factor -> (n,) boolean array, the rows whose level of
            that factor was not in the fitted data.
        interval : None
            Prediction intervals are not available for several grouping factors yet (an error says so).
        level : float
            Unused without ``interval``.

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv")))
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as said:
        ...     pred = fit.predict({"batch": ["A", "A"], "cask": ["a", "z"]})   # cask z is new: batch A's effect only
        >>> [round(float(v), 3) for v in pred], str(said[0].message)[:45]
        ([62.629, 60.854], 'rows with levels not in the fitted data (1 at')
        """
        if interval is not None:
            raise TeachLMMError("prediction intervals (interval=) are not available for models with several "
                                "grouping factors yet; predict(newdata) gives the predictions, and "
                                "fit.simulate() draws new responses from the fitted model")
        m = self.model
        if newdata is None:
            X, Zs, codes, offset = m.X, [t.Z for t in m.terms], [t.codes for t in m.terms], m.offset
        else:
            X, Zs, codes = m.design(newdata)
            offset = m.offset_of(newdata) if m.formula.offsets else None
        pred = X @ self.beta
        if offset is not None:
            pred = pred + offset
        unseen = {g: np.zeros(X.shape[0], bool) for g in m.factors}
        for t, c in zip(m.terms, codes):
            unseen[t.factor] |= c < 0
        if re:
            pred = pred + self._random_part(Zs, codes)
            said = [f"{int(u.sum())} at {g!r}" for g, u in unseen.items() if u.any()]
            if said:
                warnings.warn(f"rows with levels not in the fitted data ({', '.join(said)}): those factors' "
                              "random effects are 0, their mean (lme4's allow.new.levels = TRUE); the rows keep "
                              "the effects of their other, known levels", UserWarning, stacklevel=2)
        return (pred, unseen) if return_unseen else pred

    def response_sampler(self):
        """A function rng -> one response y* from the fitted model, every factor's effects drawn afresh::

            y* = X beta + sum_k Z_k b*_k + eps*,   b*_kj = sqrt(sigma2) T_k u_kj,  u_kj ~ N(0, I),  eps* ~ N(0, sigma2 I)

        (T_k is the relative factor, G_k = sigma2 T_k T_k'; a singular G_k has a
        zero column and that effect is never drawn.) Without the offset: the
        scale of ``model.y``.
        """
        m = self.model
        mean = m.X @ self.beta
        sigma = math.sqrt(self.sigma2)
        Ls = [sigma * T for T in self._Ts]

        def draw(rng):
            y = mean.copy()
            for t, L in zip(m.terms, Ls):
                b = rng.standard_normal((t.J, t.q)) @ L.T            # b*_kj ~ N(0, G_k), one row per level
                y += np.einsum("iq,iq->i", t.Z, b[t.codes])
            return y + sigma * rng.standard_normal(m.n)              # eps* ~ N(0, sigma2 I)
        return draw

    # -- printing ------------------------------------------------------------
    def coef_table(self, ddf="Satterthwaite"):
        """lmerTest's table by fixed effect: Estimate, Std. Error, df, t value, Pr(>|t|).

        ``ddf="Satterthwaite"`` (the default, lmerTest's) or ``"normal"`` (z values);
        see :func:`teachlmm.multilevel_ddf.coef_table`. ``ddf=None`` gives lme4's
        table (Estimate, Std. Error, t value) without df. Kenward-Roger and
        between-within are not available for several grouping factors yet (a clear error).
        """
        if ddf is None:
            est = [self.fixef[k] for k in self.fixef_names]
            se = [self.fixef_se[k] for k in self.fixef_names]
            return {"Estimate": dict(zip(self.fixef_names, est)), "Std. Error": dict(zip(self.fixef_names, se)),
                    "t value": {k: e / s if s > 0 else float("nan") for k, e, s in zip(self.fixef_names, est, se)}}
        return multilevel_ddf.coef_table(self, ddf)

    def _fixed_effects_table(self):
        tab = self.coef_table(None)
        names = self.fixef_names
        if not names:
            return "(no fixed effects)"
        est = format_column([tab["Estimate"][k] for k in names])
        se = format_column([tab["Std. Error"][k] for k in names])
        rows = [[k, est[i], se[i], f"{tab['t value'][k]:.3f}"] for i, k in enumerate(names)]
        return format_table(rows, ["", "Estimate", "Std. Error", "t value"], indent="")

    def summary(self, ddf=None):
        """The fit as lmer's ``summary()`` prints it, several factors in one "groups" line.

        The fixed effects are printed in lmerTest's layout (Estimate, Std. Error,
        df, t value, Pr(>|t|)) with Satterthwaite's df by default, or z values
        with ``ddf="normal"``. When the fit has more random effects than
        ``teachlmm.multilevel_ddf.MAX_RANDOM_EFFECTS`` (Satterthwaite's
        algebra here is dense in them) and no ``ddf`` was asked for, the table
        falls back to lme4's Estimate, Std. Error and t value and says so.

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("strength ~ 1 + (1 | batch/cask)", tl.read_csv("tests/reference/data/pastes.csv")))
        >>> print(fit.summary().splitlines()[15])
        Number of obs: 60, groups:  cask:batch, 30; batch, 10
        """
        m = self.model
        groups = "; ".join(f"{g}, {len(self.groups_by[g])}" for g in m.factors)
        notes = ["", "boundary (singular) fit: a variance is (nearly) 0 or a correlation is +-1"] * self.singular
        method = "Satterthwaite" if ddf is None else ddf
        try:
            table = _ddf.format_coef_table(self.coef_table(method))
            title = f"Fixed effects ({_ddf.summary_header(method)}):"
        except DesignError as e:
            if ddf is not None:
                raise
            table, title = self._fixed_effects_table(), "Fixed effects (t values only):"
            notes += ["", f"no df or p-values: {e}"]
        return self._summary_text(f"Number of obs: {m.n}, groups:  {groups}", title, table, notes)

    def __repr__(self):
        return (f"<MultilevelResult {self.method}, {'REML' if self.reml else 'ML'}: "
                f"{self.model.formula.text!r}, loglik {self.loglik:.3f}>")

