"""The posterior object: the draws of :func:`teachlmm.gibbs.sample`, with summaries and diagnostics.

:func:`teachlmm.gibbs.sample` returns a :class:`Posterior`. It holds the draws
(chains x draws arrays of beta, G, sigma2 and, if kept, the random effects b)
and turns them into what a reader wants from a Bayesian fit:

* one scalar at a time (:meth:`Posterior.get`: ``"floor"``, ``"G[1,1]"``,
  ``"sd[0]"``, ``"corr[0,1]"``, ``"sigma"``, ``"b[j,k]"``) and the group-specific
  coefficients beta + b_j (:meth:`Posterior.coef_draws`);
* the summary table (:meth:`Posterior.summary`): posterior mean, sd and
  quantiles with R-hat and bulk and tail ESS (:mod:`teachlmm.diagnostics`),
  in lmer's order, with the convergence message of :mod:`teachlmm.convergence`;
* tables and other tools' formats (:meth:`Posterior.to_frame`,
  :meth:`Posterior.draws_frame`, :meth:`Posterior.to_arviz`);
* posterior predictive draws of new observations (:meth:`Posterior.predict`).

The sampler itself is in :mod:`teachlmm.gibbs`; this module only reads draws.
"""
import html

import numpy as np

from . import convergence, diagnostics, frames, validators
from .errors import TeachLMMError
from .tables import format_table

__all__ = ["Posterior"]

SUMMARY_HEADER = ["", "mean", "sd", "2.5%", "50%", "97.5%", "R-hat", "ESS-bulk", "ESS-tail"]


def _draws_row(x):
    """The summary statistics of one scalar's draws x (chains, draws): mean, sd, quantiles, R-hat, ESS.

    Used by :class:`Posterior` and :class:`teachlmm.multilevel_gibbs.MultilevelPosterior` alike.
    """
    q025, q50, q975 = np.quantile(x, [0.025, 0.5, 0.975])
    return dict(mean=float(x.mean()), sd=float(x.std(ddof=1)), q025=float(q025), q50=float(q50),
                q975=float(q975), rhat=diagnostics.rhat(x), ess_bulk=diagnostics.ess_bulk(x),
                ess_tail=diagnostics.ess_tail(x))


def _draws_rows(named):
    """{name: :func:`_draws_row`} for several scalars' draws at once (each (chains, draws), all the same shape).

    The same statistics, but R-hat, bulk and tail ESS of all of them come from one
    call of ``diagnostics._rhat_and_ess`` (one sort and one FFT pass over the stack,
    equal to the one-at-a-time functions up to rounding), and the quantiles from one
    ``np.quantile``: a summary of ten rows costs little more than one row.
    """
    names = list(named)
    if not names:
        return {}
    x = np.stack([np.asarray(named[n], dtype=float) for n in names])          # (K, chains, draws)
    flat = x.reshape(len(names), -1)
    rhat, bulk, tail = diagnostics._rhat_and_ess(x)
    q025, q50, q975 = np.quantile(flat, [0.025, 0.5, 0.975], axis=1)
    mean, sd = flat.mean(1), flat.std(1, ddof=1)
    return {n: dict(mean=float(mean[k]), sd=float(sd[k]), q025=float(q025[k]), q50=float(q50[k]),
                    q975=float(q975[k]), rhat=float(rhat[k]), ess_bulk=float(bulk[k]), ess_tail=float(tail[k]))
            for k, n in enumerate(names)}


def _summary_cells(rows, pairs):
    """The summary table's cells: one row [label, mean, ..., ESS-tail] per (name, label) in ``pairs``.

    ``rows`` maps a name to its :func:`_draws_row`. Four significant digits for the
    statistics, three decimals for R-hat, whole numbers for the ESS.
    """
    return [[label] + [f"{rows[n][k]:.4g}" for k in ("mean", "sd", "q025", "q50", "q975")]
            + [f"{rows[n]['rhat']:.3f}", f"{rows[n]['ess_bulk']:.0f}", f"{rows[n]['ess_tail']:.0f}"]
            for n, label in pairs]


class Posterior:
    """Draws from the posterior of a linear mixed model, with summaries and diagnostics.

    Attributes
    ----------
    draws : dict with ``beta`` (chains, draws, p), ``G`` (chains, draws, q, q),
        ``sigma2`` (chains, draws) and, unless ``keep_b=False``, ``b`` (chains, draws, J, q).
    fixef_names, ranef_names, coef_names, groups, group_name : as in MixedModelResult.
    prior : the Prior used (every default filled in).
    seconds : wall time of the sampling run.   warmup, thin, seed, engine : how it was run.
    acceptance : (chains,) array or None
        ``engine="collapsed"``: each chain's share of accepted proposals after warm-up.
    proposal_efficiency : float or None
        ``engine="collapsed"``: the importance-sampling efficiency of its proposal (near 1: a close fit).
    chains, n_draws : the shape of the draws.

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model("log_radon ~ floor + (1 + floor | county)", tl.load_radon())
    >>> post = tl.gibbs.sample(model, draws=200, warmup=100, chains=2, seed=1)
    >>> post.get("G[0,1]").shape, post.coef_draws().shape
    ((2, 200), (2, 200, 85, 2))
    """

    def __init__(self, model, draws, prior, warmup=0, thin=1, seconds=None, seed=None, engine="fast"):
        self.model, self.draws, self.prior = model, draws, prior
        self.warmup, self.thin, self.seconds, self.seed, self.engine = warmup, thin, seconds, seed, engine
        self.fixef_names, self.ranef_names = list(model.fixef_names), list(model.ranef_names)
        self.coef_names = model.coef_names
        self.groups, self.group_name = model.groups, model.group_name
        self.chains, self.n_draws = draws["sigma2"].shape
        self.acceptance = self.proposal_efficiency = None      # set by the collapsed engine (teachlmm.collapsed)

    # -- one scalar at a time ----------------------------------------------------
    def names(self):
        """The names :meth:`get` accepts for the model's parameters (besides b[j,k])."""
        fixed, random, residual = self._labels()
        return ([n for n, _ in fixed] + [f"beta[{k}]" for k in range(self.model.p)]
                + [n for n, _ in random + residual])

    def get(self, name):
        """Draws of one scalar, shape (chains, draws).

        Names: a fixed effect's name (``"floor"``) or ``"beta[k]"``; ``"G[i,j]"``;
        ``"sd[k]"`` (sqrt G_kk); ``"corr[i,j]"``; ``"sigma2"``; ``"sigma"``;
        ``"b[j,k]"`` (group j's random effect k, if kept).

        Examples
        --------
        >>> import teachlmm as tl
        >>> post = tl.gibbs.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()),
        ...                        draws=100, warmup=50, chains=2, seed=1)
        >>> post.get("sigma2").shape, post.get("(Intercept)").shape
        ((2, 100), (2, 100))
        """
        d = self.draws
        if name in self.fixef_names:
            return d["beta"][:, :, self.fixef_names.index(name)]
        if name == "sigma2":
            return d["sigma2"]
        if name == "sigma":
            return np.sqrt(d["sigma2"])
        head, _, rest = name.partition("[")
        try:
            idx = [int(v) for v in rest.rstrip("]").split(",")] if rest.endswith("]") else None
        except ValueError:
            idx = None
        q = self.model.q
        if head == "beta" and idx and len(idx) == 1 and 0 <= idx[0] < self.model.p:
            return d["beta"][:, :, idx[0]]
        if head == "G" and idx and len(idx) == 2 and all(0 <= i < q for i in idx):
            return d["G"][:, :, idx[0], idx[1]]
        if head == "sd" and idx and len(idx) == 1 and 0 <= idx[0] < q:
            return np.sqrt(d["G"][:, :, idx[0], idx[0]])
        if head == "corr" and idx and len(idx) == 2 and all(0 <= i < q for i in idx):
            G = d["G"]
            i, j = idx
            return G[:, :, i, j] / np.sqrt(G[:, :, i, i] * G[:, :, j, j])
        if head == "b" and idx and len(idx) == 2:
            if "b" not in d:
                raise TeachLMMError("the random effects were not kept: sample again with keep_b=True")
            if 0 <= idx[0] < self.model.J and 0 <= idx[1] < q:
                return d["b"][:, :, idx[0], idx[1]]
        raise TeachLMMError(f"unknown parameter {name!r}; known: {', '.join(self.names())}, "
                            f"and b[j,k] (j < {self.model.J}, k < {q})")

    def coef_draws(self):
        """Group-specific coefficients per draw, (chains, draws, J, len(coef_names)): beta + b_j.

        Column order ``coef_names`` (fixed effects, then random-only terms), as
        ``MixedModelResult.coef``; for the lecture's alpha_j / beta_j plots.
        """
        if "b" not in self.draws:
            raise TeachLMMError("coef_draws needs the random effects: sample again with keep_b=True")
        beta, b = self.draws["beta"], self.draws["b"]
        C, D, J, _ = b.shape
        out = np.zeros((C, D, J, len(self.coef_names)))
        out[..., :len(self.fixef_names)] = beta[:, :, None, :]
        for k, name in enumerate(self.ranef_names):
            out[..., self.coef_names.index(name)] += b[..., k]
        return out

    # -- the table -------------------------------------------------------------
    def _row(self, name):
        return _draws_row(self.get(name))

    def _labels(self):
        """(get-name, label) for the summary rows, lmer's order: fixed, then VarCorr, then residual."""
        m, r = self.model, self.ranef_names
        fixed = [(name, name) for name in self.fixef_names]
        random = []
        for blk in m.blocks:
            random += [(f"G[{i},{i}]", f"Var {r[i]}") for i in blk]
            random += [(f"G[{i},{j}]", f"Cov {r[j]},{r[i]}") for i in blk for j in blk if j < i]
        for blk in m.blocks:
            random += [(f"sd[{i}]", f"Std.Dev. {r[i]}") for i in blk]
            random += [(f"corr[{j},{i}]", f"Corr {r[j]},{r[i]}") for i in blk for j in blk if j < i]
        residual = [("sigma2", "Var Residual"), ("sigma", "Std.Dev. Residual")]
        return fixed, random, residual

    def checked_names(self):
        """The parameters whose R-hat and bulk ESS :meth:`summary` checks: beta, G's entries, sigma2."""
        fixed, random, _ = self._labels()
        return [n for n, _ in fixed] + [n for n, _ in random if n.startswith("G[")] + ["sigma2"]

    def _sampler_name(self):
        """'Gibbs sampler', or the collapsed sampler with its acceptance rate."""
        if self.engine != "collapsed" or self.acceptance is None:
            return "Gibbs sampler"
        return (f"collapsed sampler (independence M-H on G, sigma2; acceptance "
                f"{float(np.mean(self.acceptance)):.2f})")

    def summary(self):
        """Posterior summary table (a string; print it), warning on poor convergence.

        Columns: mean, sd, 2.5 / 50 / 97.5 % quantiles, R-hat (rank-normalised
        split), bulk and tail ESS (:mod:`teachlmm.diagnostics`). Rows: fixed
        effects by name, G as variances and covariances and again as standard
        deviations and correlations (as lmer prints VarCorr), and the residual.

        Prints the convergence message of :func:`teachlmm.convergence.check`
        (R-hat > 1.01 or bulk or tail ESS < 400 for any of beta, G, sigma2);
        warns (ConvergenceWarning) only if :func:`teachlmm.gibbs.sample` has not already.

        Examples
        --------
        >>> import teachlmm as tl
        >>> model = tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon())
        >>> post = tl.gibbs.sample(model, draws=1000, warmup=200, chains=4, seed=1)
        >>> print(post.summary().splitlines()[0])
        Bayesian linear mixed model, Gibbs sampler: 4 chains x 1000 draws (warm-up 200, thin 1)
        """
        fixed, random, residual = self._labels()
        rows = self._summary_rows()
        m = self.model
        head = [f"Bayesian linear mixed model, {self._sampler_name()}: {self.chains} chains x {self.n_draws} draws "
                f"(warm-up {self.warmup}, thin {self.thin})",
                f"Formula: {m.formula.text}",
                f"Prior: {self.prior.describe()}",
                f"Number of obs: {m.n}, groups: {m.group_name}, {m.J}"
                + (f"; sampled in {self.seconds:.2f} s" if self.seconds is not None else "")]
        sections = [("Fixed effects:", fixed), (f"Random effects ({m.group_name}):", random),
                    ("Residual:", residual)]
        out = list(head)
        for title, pairs in sections:
            out += ["", title, format_table(_summary_cells(rows, pairs), SUMMARY_HEADER)]
        message = convergence.check(self)       # warns only if gibbs.sample() has not already
        notes = ["Warning: " + message] if message else []
        out += [""] * bool(notes) + notes
        markup = ("".join(f"<p>{html.escape(line)}</p>" for line in head)
                  + "".join(frames.html_table(SUMMARY_HEADER, _summary_cells(rows, pairs), caption=title)
                            for title, pairs in sections)
                  + "".join(f"<p><b>{html.escape(line)}</b></p>" for line in notes))
        return frames.Text.with_html("\n".join(out), markup)

    def _summary_rows(self):
        """{get-name: row of summary statistics} for every summary row (computed once per call)."""
        fixed, random, residual = self._labels()
        return _draws_rows({name: self.get(name) for name, _ in fixed + random + residual})

    # -- labelled tables, ArviZ, posterior predictive ----------------------------
    def to_frame(self):
        """The summary table as a pandas DataFrame, one row per parameter (needs the extra ``pandas``).

        Index: the summary's row labels ("floor", "Var (Intercept)", "Std.Dev.
        Residual", ...). Columns: mean, sd, 2.5%, 50%, 97.5%, r_hat, ess_bulk,
        ess_tail, the numbers :meth:`summary` prints (unrounded).

        Examples
        --------
        >>> import teachlmm as tl
        >>> post = tl.gibbs.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()),
        ...                        draws=500, warmup=200, chains=2, seed=1)
        >>> list(post.to_frame().index[:3])
        ['(Intercept)', 'floor', 'Var (Intercept)']
        """
        pd = frames.require_pandas()
        fixed, random, residual = self._labels()
        rows = self._summary_rows()
        pairs = fixed + random + residual
        keys = [("mean", "mean"), ("sd", "sd"), ("2.5%", "q025"), ("50%", "q50"), ("97.5%", "q975"),
                ("r_hat", "rhat"), ("ess_bulk", "ess_bulk"), ("ess_tail", "ess_tail")]
        return pd.DataFrame({col: [float(rows[n][k]) for n, _ in pairs] for col, k in keys},
                            index=pd.Index([label for _, label in pairs]))

    def _scalar_columns(self):
        """(column label, (chains, draws) array) for beta, G's free entries, sd, corr and sigma2."""
        fixed, random, residual = self._labels()
        return [(label, self.get(name)) for name, label in fixed + random + residual]

    def draws_frame(self, b=False):
        """The draws as a pandas DataFrame: one row per (chain, draw), one column per parameter.

        Parameters
        ----------
        b : bool
            Also the random effects, columns ``"b[<group>, <name>]"`` (J x q of them).

        Examples
        --------
        >>> import teachlmm as tl
        >>> post = tl.gibbs.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()),
        ...                        draws=100, warmup=50, chains=2, seed=1)
        >>> post.draws_frame().shape
        (200, 6)
        """
        pd = frames.require_pandas()
        cols = {label: x.reshape(-1) for label, x in self._scalar_columns()}
        if b:
            if "b" not in self.draws:
                raise TeachLMMError("the random effects were not kept: sample again with keep_b=True")
            for j, g in enumerate(self.groups):
                for k, name in enumerate(self.ranef_names):
                    cols[f"b[{g}, {name}]"] = self.draws["b"][:, :, j, k].reshape(-1)
        index = pd.MultiIndex.from_product([range(self.chains), range(self.n_draws)], names=["chain", "draw"])
        return pd.DataFrame(cols, index=index)

    def to_arviz(self):
        """The draws as ArviZ data: InferenceData (ArviZ 0.x) or a DataTree (ArviZ 1.x).

        The posterior group holds ``beta`` (dim ``fixef``, coordinates the
        fixed-effect names), ``G`` (dims ``ranef``, ``ranef_col``), ``sd``
        (``ranef``), ``sigma2``, ``sigma`` and, if kept, ``b`` (dims: the grouping
        variable, coordinates the group labels, and ``ranef``). Tested with
        ArviZ 0.x (the ``arviz`` extra pins it); the 1.x branch (ArviZ 1 needs
        Python >= 3.12) calls ``arviz.from_dict({"posterior": ...})``, 1.x's form, untested here.

        Examples
        --------
        >>> import teachlmm as tl
        >>> post = tl.gibbs.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()),
        ...                        draws=100, warmup=50, chains=2, seed=1)
        >>> idata = post.to_arviz()
        >>> idata.posterior["beta"].coords["fixef"].values.tolist()
        ['(Intercept)', 'floor']
        """
        try:
            import arviz
        except ImportError as err:
            raise TeachLMMError("to_arviz needs ArviZ, an optional extra: pip install 'teachlmm[arviz]'") from err
        d = self.draws
        group_dim = self.group_name if self.group_name not in ("chain", "draw") else f"{self.group_name}_"
        data = {"beta": d["beta"], "G": d["G"], "sd": np.sqrt(np.einsum("cdqq->cdq", d["G"])),
                "sigma2": d["sigma2"], "sigma": np.sqrt(d["sigma2"])}
        dims = {"beta": ["fixef"], "G": ["ranef", "ranef_col"], "sd": ["ranef"]}
        coords = {"fixef": list(self.fixef_names), "ranef": list(self.ranef_names),
                  "ranef_col": list(self.ranef_names)}
        if "b" in d:
            data["b"] = d["b"]
            dims["b"] = [group_dim, "ranef"]
            coords[group_dim] = list(np.asarray(self.groups).tolist())
        if int(arviz.__version__.split(".")[0]) >= 1:           # ArviZ 1.x: a DataTree
            return arviz.from_dict({"posterior": data}, coords=coords, dims=dims)
        return arviz.from_dict(posterior=data, coords=coords, dims=dims)

    def predict(self, newdata, seed=None, re=True):
        """Posterior predictive draws of new observations, (chains, draws, n).

        For each posterior draw s: y~ = x'beta_s + z'b_j,s + eps, eps ~ N(0, sigma2_s).
        A group not in the data gets new random effects b ~ N(0, G_s), one
        vector per new group label and draw (rows of the same new group share it).
        With ``re=False`` every row is treated as a new group (a new observation
        from any group).

        Parameters
        ----------
        newdata : mapping with the formula's columns (the response is not needed).
        seed : seed for the new random effects and noise (the policy of :mod:`teachlmm.validators`).
        re : bool, default True.

        Examples
        --------
        >>> import teachlmm as tl
        >>> post = tl.gibbs.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()),
        ...                        draws=100, warmup=50, chains=2, seed=1)
        >>> post.predict({"floor": [0.0, 1.0], "county": [2, 2]}, seed=1).shape
        (2, 100, 2)
        """
        rng = validators.rng(seed)
        X, Z, codes = self.model.design(newdata)
        d = self.draws
        if re and "b" not in d:
            raise TeachLMMError("predicting for fitted groups needs the random effects: sample again with "
                                "keep_b=True (or pass re=False)")
        C, D, n, q = self.chains, self.n_draws, X.shape[0], self.model.q
        unseen = (codes < 0) | (not re)
        mean = np.einsum("ip,cdp->cdi", X, d["beta"])
        if re and (~unseen).any():
            b_seen = d["b"][:, :, np.where(unseen, 0, codes)]                  # (C, D, n, q)
            mean += np.where(unseen, 0.0, np.einsum("iq,cdiq->cdi", Z, b_seen))
        if unseen.any():
            labels = np.asarray(_group_labels(newdata, self.group_name, n)) if re else np.arange(n)
            new_labels, which = np.unique(labels[unseen].astype(str), return_inverse=True)
            L = _psd_factor(d["G"])
            u = rng.standard_normal((C, D, len(new_labels), q))
            b_new = np.einsum("cdqr,cdkr->cdkq", L, u)                          # b ~ N(0, G_s)
            idx = np.flatnonzero(unseen)
            mean[:, :, idx] += np.einsum("iq,cdiq->cdi", Z[idx], b_new[:, :, which])
        return mean + np.sqrt(d["sigma2"])[:, :, None] * rng.standard_normal((C, D, n))

    def __repr__(self):
        return (f"<Posterior (Gibbs): {self.model.formula.text!r}, {self.chains} chains x "
                f"{self.n_draws} draws>")


def _group_labels(newdata, group_name, n):
    """The grouping column of new data as a list of n labels (to tell new groups apart)."""
    values = newdata[group_name]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if len(values) != n:
        raise TeachLMMError(f"the new data's column {group_name!r} has {len(values)} values for {n} rows")
    return values


def _psd_factor(G):
    """L with L L' = G for each draw's G (eigen-decomposition, so a G on the boundary works too)."""
    w, V = np.linalg.eigh(G)
    return V * np.sqrt(np.clip(w, 0, None))[..., None, :]
