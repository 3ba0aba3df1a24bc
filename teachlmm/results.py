"""The fitted model, lmer style: fixef, ranef, coef, VarCorr, summary, predict.

A :class:`MixedModelResult` is built from a model and a pair (G, sigma2),
wherever they came from (EM, a typed-in "what if", a posterior mean): every
other number follows in closed form from the mixed-model equations
(:mod:`teachlmm.mme`):

* ``fixef`` = beta_hat (GLS) and ``vcov`` = sigma2 A^-1 (lme4's ``vcov()``),
* ``ranef`` = b_hat_j (BLUP), ``condsd`` = sqrt(diag(sigma2 M_j^-1)),
* ``coef`` = fixef + ranef for each group (lme4's ``coef()``).
"""
import math
import warnings

import numpy as np

from . import mme
from .errors import TeachLMMError

__all__ = ["MixedModelResult"]


def _fmt(x, digits=4):
    return f"{x:#.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{digits - 1}e}"


def _table(rows, header, align=None):
    """Plain-text table: first column left-aligned, the rest right-aligned."""
    cols = [header] + rows
    widths = [max(len(str(r[k])) for r in cols) for k in range(len(header))]
    lines = []
    for r in cols:
        cells = [str(c).ljust(w) if k == 0 or (align and align[k] == "l") else str(c).rjust(w)
                 for k, (c, w) in enumerate(zip(r, widths))]
        lines.append(" " + " ".join(cells).rstrip())
    return "\n".join(lines)


class MixedModelResult:
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
    n_iter, converged, singular, history : the fitting method's report.

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
                 singular=None, history=None, seconds=None):
        self.model = model
        self.G = np.atleast_2d(np.asarray(G, dtype=float))
        self.sigma2 = float(sigma2)
        self.reml, self.method = bool(reml), method
        self.n_iter, self.converged, self.history, self.seconds = n_iter, converged, history or [], seconds
        self.solution = sol = mme.solve(model.stats, self.G, self.sigma2)
        self.loglik = mme.loglik(model.stats, self.G, self.sigma2, self.reml, sol)
        # lme4's isSingular(): a diagonal element of the relative factor T (G = sigma2 T T') below 1e-4
        self.singular = (bool(np.any(np.diag(sol.T) < 1e-4)) if singular is None else singular)
        names = model.fixef_names
        self.beta = sol.beta
        self.vcov = self.sigma2 * sol.A_inv if model.p else np.zeros((0, 0))
        self.fixef = dict(zip(names, sol.beta.tolist()))
        self.fixef_se = dict(zip(names, np.sqrt(np.diag(self.vcov)).tolist()))
        self.groups = model.groups
        self.group_name = model.group_name
        self.fixef_names, self.ranef_names = list(names), list(model.ranef_names)
        self.ranef = sol.b
        self.condvar = self.sigma2 * sol.Minv                 # (J, q, q) Var(b_j | y, beta)
        self.condsd = np.sqrt(np.clip(np.einsum("jqq->jq", self.condvar), 0, None))
        self.coef_names = self.fixef_names + [r for r in self.ranef_names if r not in self.fixef_names]
        self.coef = self._coef()
        self.icc = (self.G[0, 0] / (self.G[0, 0] + self.sigma2)
                    if self.ranef_names and self.ranef_names[0] == "(Intercept)" else None)

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
        """lme4's ``deviance()``; see :func:`teachlmm.inference.deviance`."""
        from .inference import deviance
        return deviance(self)

    def coef_table(self, ddf="Satterthwaite"):
        """Estimates, SEs, df, t values and p-values (lmerTest); see :func:`teachlmm.ddf.coef_table`."""
        from .ddf import coef_table
        return coef_table(self, ddf)

    def confint(self, method="wald", level=0.95, **options):
        """Confidence intervals; see :func:`teachlmm.inference.confint`."""
        from .inference import confint
        return confint(self, method=method, level=level, **options)

    def simulate(self, n_sim=1, seed=None):
        """New responses from the fitted model; see :func:`teachlmm.inference.simulate`."""
        from .inference import simulate
        return simulate(self, n_sim=n_sim, seed=seed)

    def varcorr(self):
        """lme4's VarCorr(): a dict with the variances, standard deviations and correlations."""
        return {"G": self.G, "sd": self.sd, "corr": self.corr, "sigma2": self.sigma2,
                "sigma": math.sqrt(self.sigma2), "names": self.ranef_names}

    def fitted(self):
        """X beta + Z_j b_j for every row of the fitted data (uses each row's group BLUP)."""
        m = self.model
        if m.X is None:
            raise TeachLMMError("this model was built from chunks and keeps no rows; "
                                "use predict(newdata) on the rows you need")
        return m.X @ self.beta + np.einsum("iq,iq->i", m.Z, self.ranef[m.codes])

    def residuals(self):
        """y - fitted."""
        return self.model.y - self.fitted()

    def predict(self, newdata=None, re=True, return_unseen=False):
        """Predictions for the fitted rows or for new data.

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

        Examples
        --------
        >>> import teachlmm as tl
        >>> fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon()))
        >>> new = {"floor": [0.0, 1.0], "county": [2, 2]}
        >>> [round(float(v), 3) for v in fit.predict(new)]       # county 2's line 0.933 - 0.771 x
        [0.933, 0.163]
        """
        if newdata is None:
            if self.model.X is None:
                raise TeachLMMError("this model was built from chunks and keeps no rows; pass newdata")
            X, Z, codes = self.model.X, self.model.Z, self.model.codes
        else:
            X, Z, codes = self.model.design(newdata)
        unseen = codes < 0
        pred = X @ self.beta
        if re:
            b = np.where(unseen[:, None], 0.0, self.ranef[np.where(unseen, 0, codes)])
            pred = pred + np.einsum("iq,iq->i", Z, b)
            if unseen.any():
                warnings.warn(f"{unseen.sum()} row(s) belong to groups not in the fitted data; "
                              "they get the fixed part only (random effects at their mean, 0).", stacklevel=2)
        return (pred, unseen) if return_unseen else pred

    # -- printing ------------------------------------------------------------
    def _random_effects_table(self):
        m, G = self.model, self.G
        sd = self.sd
        rows = []
        multi = len(m.blocks) > 1
        for k, blk in enumerate(m.blocks):
            for pos, i in enumerate(blk):
                group = (m.group_name + (f".{k}" if multi and k else "")) if pos == 0 else ""
                corr = []
                for j in blk[:pos]:
                    c = G[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else float("nan")
                    corr.append(f"{c:.3f}")
                rows.append([group, m.ranef_names[i], _fmt(G[i, i]), _fmt(sd[i]), " ".join(corr)])
        rows.append(["Residual", "", _fmt(self.sigma2), _fmt(math.sqrt(self.sigma2)), ""])
        return _table(rows, ["Groups", "Name", "Variance", "Std.Dev.", "Corr"], align="lllll")

    def _fixed_effects_table(self):
        rows = []
        for name in self.fixef_names:
            est, se = self.fixef[name], self.fixef_se[name]
            rows.append([name, f"{est:.4f}", f"{se:.4f}", f"{est / se:.2f}"])
        return _table(rows, ["", "Estimate", "Std. Error", "t value"])

    def summary(self, ddf=None):
        """The lmer-style summary as a string (print it).

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
        Linear mixed model fit by REML (EM (squarem))
        """
        from .ddf import format_coef_table, summary_header
        if ddf is None:
            ddf = "normal" if self.method == "given" or self.method.startswith("BLUP") else "Satterthwaite"
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
               _table([["", *(f"{v:.4f}" for v in qs)]], ["", "Min", "1Q", "Median", "3Q", "Max"]), "",
               "Random effects:", self._random_effects_table(),
               f"Number of obs: {m.n}, groups: {m.group_name}, {m.J}", "",
               f"Fixed effects ({summary_header(ddf)}):", format_coef_table(self.coef_table(ddf))]
        if self.singular:
            out += ["", "boundary (singular) fit: a variance is (nearly) 0 or a correlation is +-1"]
        if self.method.startswith("EM") and not self.converged:
            out += ["", f"EM did not converge in {self.n_iter} iterations (see ConvergenceWarning)"]
        return "\n".join(out)

    def __repr__(self):
        return (f"<MixedModelResult {self.method}, {'REML' if self.reml else 'ML'}: "
                f"{self.model.formula.text!r}, loglik {self.loglik:.3f}>")
