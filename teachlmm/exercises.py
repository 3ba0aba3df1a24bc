r"""Checks for the book's exercises: type your answer, get a verdict and a hint.

Every ``check_*`` function takes a student's answer, computes the right value
itself, prints a short verdict and returns True or False. A wrong answer never
shows the right value: the first try gets a hint, the next tries a stronger one
(the recipe, step by step), and ``solution(n)`` shows exercise n's answer and
code when you ask for it::

    >>> import teachlmm as tl
    >>> tl.exercises.check_icc(0.2)
    Not yet: you said 0.2000.
    Hint: ICC = sigma2_alpha / (sigma2_alpha + sigma2), with M1's variance components.
    False
    >>> tl.exercises.check_icc(0.159)
    Correct: the intraclass correlation = 0.1587 (you said 0.1590).
    True

An answer that is not a number (a string such as ``"0.16"``) raises
:class:`AnswerError` with a message saying what to pass instead.

How the right value is computed
-------------------------------
A check that reused the code the student is learning from would only test
that the student called it. Where it can, a check takes a *different road*
to the same number, the textbook one, slow but transparent: it loops over
the groups and works with each group's own covariance matrix
(:math:`n_j \times n_j`; fine for a check, never for a fit)

.. math::

    V_j = Z_j G Z_j' + \sigma^2 I

instead of the mixed-model equations of :mod:`teachlmm.mme`:

.. math::

    \hat\beta &= \Big(\sum_j X_j' V_j^{-1} X_j\Big)^{-1} \sum_j X_j' V_j^{-1} y_j
    \qquad \text{(GLS)}

    \hat b_j &= G Z_j' V_j^{-1} (y_j - X_j \hat\beta)
    \qquad \text{(BLUP)}

    \text{REML criterion} &= (n - p) \log 2\pi + \sum_j \log|V_j|
    + \log|X' V^{-1} X| + r' V^{-1} r

and random-intercept REML fits by a one-dimensional search (:func:`random_intercept_reml`).

Where variance components of a model with random slopes are needed (M3, M4),
they come from :func:`teachlmm.em.fit`; everything computed from them takes the
road above. The tests compare these roads with lme4's numbers.
"""
import warnings
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize_scalar

from . import em
from .data import RADON_MODELS, load_radon, simulate
from .design import Model
from .errors import BoundaryWarning, TeachLMMError

__all__ = ["M0", "M1", "M3", "M4", "AnswerError", "solution", "reset",
           "check_county_mean", "check_shrinkage_factor", "check_partial_pooling", "check_icc",
           "check_county2_line", "check_composite_variance", "check_alpha_beta",
           "check_reml_criterion", "check_em_step", "check_blup", "check_split_rhat",
           "check_alpha_rmse", "check_class_shrinkage", "check_school_shrinkage", "check_crossed_em_step",
           "random_intercept_reml", "dense_gls_blup", "dense_reml_criterion", "dense_em_step",
           "split_rhat", "nested_intercepts_reml", "crossed_em_step_dense"]

M0, M1, M3, M4 = (RADON_MODELS[k] for k in ("M0", "M1", "M3", "M4"))
LOG_2PI = np.log(2 * np.pi)


# ----------------------------------------------------------------------------
# the verdict
# ----------------------------------------------------------------------------

class AnswerError(TeachLMMError):
    """An answer a check cannot read: a string, None, or an array of the wrong shape."""


_tries = {}          # (check, what it is about) -> wrong answers so far, for the hint ladder


def reset():
    """Forget earlier wrong answers (the next wrong answer gets the first hint again)."""
    _tries.clear()


def _show(x, digits=4):
    """A number or a short vector, rounded for the verdict."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 0:
        return f"{float(x):.{digits}f}"
    flat = x.ravel()
    body = ", ".join(f"{v:.{digits}f}" for v in flat[:4])
    return f"[{body}{', ...' if flat.size > 4 else ''}]"


def _verdict(ok, what, expected, answer, hint, stronger, key, digits=4):
    """Print a verdict and return ok. A wrong answer gets a hint, never the value.

    Every wrong answer for ``key`` gets ``hint``; the second and later ones also
    ``stronger`` (both say how, not what). ``solution(n)`` is the way to see the value.
    """
    if ok:
        _tries.pop(key, None)
        print(f"Correct: {what} = {_show(expected, digits)} (you said {_show(answer, digits)}).")
        return True
    _tries[key] = _tries.get(key, 0) + 1
    print(f"Not yet: you said {_show(answer, digits)}.")
    print(f"Hint: {hint}")
    if _tries[key] > 1:
        print(f"Stronger hint: {stronger}")
        print("(tl.exercises.solution(n) shows the answer of exercise n.)")
    return False


def _number(answer, what):
    """The answer as a float, or an AnswerError that says what to pass."""
    if isinstance(answer, (str, bytes)):
        raise AnswerError(f"{what}: your answer is the text {answer!r}; pass a number, "
                          f"without quotes (e.g. 0.16, or the variable that holds it)")
    try:
        value = float(np.asarray(answer, dtype=float))
    except (TypeError, ValueError):
        raise AnswerError(f"{what}: expected one number, got {type(answer).__name__} {answer!r}") from None
    if not np.isfinite(value):
        raise AnswerError(f"{what}: your answer is {value}; a finite number is expected")
    return value


def _close(answer, expected, tol):
    """True if every entry of the answer is within tol of the expected value (shapes must match)."""
    a = np.asarray(answer, dtype=float)
    e = np.asarray(expected, dtype=float)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= tol))


def _as_answer(answer, shape, what):
    """The answer as a float array of the given shape, or an AnswerError."""
    if isinstance(answer, (str, bytes)):
        raise AnswerError(f"{what}: your answer is the text {answer!r}; pass numbers (an array), not a string")
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        raise AnswerError(f"{what}: expected numbers of shape {tuple(shape)}; some entries are not numbers "
                          f"(strings?)") from None
    if a.shape != tuple(shape):
        raise AnswerError(f"{what}: expected an answer of shape {tuple(shape)}, got {a.shape}")
    return a


# ----------------------------------------------------------------------------
# the independent road: per-group covariance matrices
# ----------------------------------------------------------------------------

def _group_rows(model):
    """Row indices of each group, in the model's group order."""
    order = np.argsort(model.codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(model.codes, minlength=model.J))[:-1])


def _group_V(model, G, sigma2):
    """Yield (rows, V_j) for every group: V_j = Z_j G Z_j' + sigma2 I."""
    for rows in _group_rows(model):
        Zj = model.Z[rows]
        yield rows, Zj @ G @ Zj.T + sigma2 * np.eye(len(rows))


def dense_gls_blup(model, G, sigma2):
    """GLS fixed effects and BLUPs from each group's V_j (the textbook road).

    beta_hat = (sum_j X_j'V_j^-1 X_j)^-1 sum_j X_j'V_j^-1 y_j,
    b_hat_j = G Z_j'V_j^-1 (y_j - X_j beta_hat).

    Parameters
    ----------
    model : Model
    G : (q, q) array.   sigma2 : float.

    Returns
    -------
    beta : (p,) array.   b : (J, q) array.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model(M1, tl.load_radon())
    >>> beta, b = dense_gls_blup(m, np.array([[0.1]]), 0.57)
    >>> beta.shape, b.shape
    ((2,), (85, 1))
    """
    G = np.atleast_2d(np.asarray(G, dtype=float))
    XVX = np.zeros((model.p, model.p))
    XVy = np.zeros(model.p)
    inverses = []
    for rows, V in _group_V(model, G, sigma2):
        Vinv = np.linalg.inv(V)
        inverses.append((rows, Vinv))
        XVX += model.X[rows].T @ Vinv @ model.X[rows]
        XVy += model.X[rows].T @ Vinv @ model.y[rows]
    beta = np.linalg.solve(XVX, XVy)
    b = np.array([G @ model.Z[rows].T @ Vinv @ (model.y[rows] - model.X[rows] @ beta)
                  for rows, Vinv in inverses])
    return beta, b


def dense_reml_criterion(model, G, sigma2):
    """lme4's REML criterion, -2 x restricted log-likelihood, from each group's V_j.

    (n - p) log 2 pi + sum_j log|V_j| + log|X'V^-1 X| + r'V^-1 r,  r = y - X beta_hat (GLS).

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model(M1, tl.load_radon())
    >>> round(dense_reml_criterion(m, np.array([[0.1077]]), 0.5709), 2)     # lme4: 2171.31 at its optimum
    2171.31
    """
    G = np.atleast_2d(np.asarray(G, dtype=float))
    XVX = np.zeros((model.p, model.p))
    XVy = np.zeros(model.p)
    yVy, logdetV = 0.0, 0.0
    for rows, V in _group_V(model, G, sigma2):
        Vinv = np.linalg.inv(V)
        X, y = model.X[rows], model.y[rows]
        XVX += X.T @ Vinv @ X
        XVy += X.T @ Vinv @ y
        yVy += y @ Vinv @ y
        logdetV += np.linalg.slogdet(V)[1]
    beta = np.linalg.solve(XVX, XVy)
    rVr = yVy - XVy @ beta                      # r'V^-1 r = y'V^-1 y - beta_hat'X'V^-1 y
    return float((model.n - model.p) * LOG_2PI + logdetV + np.linalg.slogdet(XVX)[1] + rVr)


def dense_em_step(model, G, sigma2, reml=True):
    """One EM step computed from each group's V_j (conditional moments of b_j and eps_j).

    E-step (P_jj = V_j^-1 for ML; V_j^-1 - V_j^-1 X_j C X_j'V_j^-1 for REML, C = (X'V^-1X)^-1):
        E(b_j | y)   = G Z_j'V_j^-1 r_j,        Var(b_j | y)   = G - G Z_j'P_jj Z_j G
        E(eps_j | y) = sigma2 V_j^-1 r_j,       Var(eps_j | y) = sigma2 I - sigma2^2 P_jj
    M-step:
        G_new = (1/J) sum_j [E(b_j) E(b_j)' + Var(b_j)]   (0 between uncorrelated blocks)
        sigma2_new = (1/n) sum_j [||E(eps_j)||^2 + tr Var(eps_j)]

    Returns
    -------
    G_new : (q, q) array.   sigma2_new : float.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> m = tl.Model(M1, tl.load_radon())
    >>> G1, s1 = dense_em_step(m, np.array([[0.1]]), 0.6)
    >>> round(float(G1[0, 0]), 4), round(s1, 4)
    (0.1012, 0.5737)
    """
    G = np.atleast_2d(np.asarray(G, dtype=float))
    groups = [(rows, np.linalg.inv(V)) for rows, V in _group_V(model, G, sigma2)]
    XVX = sum(model.X[r].T @ Vi @ model.X[r] for r, Vi in groups)
    XVy = sum(model.X[r].T @ Vi @ model.y[r] for r, Vi in groups)
    C = np.linalg.inv(XVX)
    beta = C @ XVy
    G_sum = np.zeros_like(G)
    e_sum = 0.0
    for rows, Vinv in groups:
        X, Z = model.X[rows], model.Z[rows]
        Vr = Vinv @ (model.y[rows] - X @ beta)                # V_j^-1 r_j
        P = Vinv - Vinv @ X @ C @ X.T @ Vinv if reml else Vinv
        b = G @ Z.T @ Vr
        G_sum += np.outer(b, b) + G - G @ Z.T @ P @ Z @ G
        e_sum += sigma2 ** 2 * Vr @ Vr + sigma2 * len(rows) - sigma2 ** 2 * np.trace(P)
    mask = np.zeros_like(G)
    for block in model.blocks:
        mask[np.ix_(block, block)] = 1.0
    return G_sum / model.J * mask, float(e_sum / model.n)


def random_intercept_reml(y, X, codes):
    """REML fit of a random-intercept model y_ij = x_ij'beta + a_j + eps_ij by a 1-D search.

    With r = sigma2_alpha / sigma2, V_j / sigma2 = I + r 11' has the explicit inverse
    I - c_j 11' (c_j = r / (1 + n_j r)) and determinant 1 + n_j r, so everything is
    a sum over groups; sigma2 is profiled out (sigma2 = r'V~^-1 r / (n - p)) and the
    REML criterion is minimised over log r.

    Parameters
    ----------
    y : (n,) array.   X : (n, p) array.   codes : (n,) group index 0..J-1.

    Returns
    -------
    dict with sigma2_alpha, sigma2, beta (p,), and lambda (J,) the shrinkage factors.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> d = tl.load_radon()
    >>> codes = np.unique(d["county"], return_inverse=True)[1]
    >>> X = np.column_stack([np.ones(919), d["floor"]])
    >>> fit = random_intercept_reml(d["log_radon"], X, codes)
    >>> round(fit["sigma2_alpha"], 4), round(fit["sigma2"], 4)             # lme4's M1: 0.1077, 0.5709
    (0.1077, 0.5709)
    """
    y, X, codes = np.asarray(y, float), np.asarray(X, float), np.asarray(codes)
    n, p = X.shape
    J = int(codes.max()) + 1
    n_j = np.bincount(codes, minlength=J)
    sx = np.zeros((J, p))
    np.add.at(sx, codes, X)                                   # 1'X_j
    sy = np.bincount(codes, weights=y, minlength=J)           # 1'y_j
    XtX, Xty, yty = X.T @ X, X.T @ y, y @ y

    def pieces(log_r):
        c = np.exp(log_r) / (1 + n_j * np.exp(log_r))
        XVX = XtX - np.einsum("j,jp,jq->pq", c, sx, sx)       # X'V~^-1 X
        XVy = Xty - np.einsum("j,jp,j->p", c, sx, sy)
        beta = np.linalg.solve(XVX, XVy)
        Q = yty - np.sum(c * sy ** 2) - XVy @ beta            # r'V~^-1 r
        return XVX, beta, Q

    def criterion(log_r):
        XVX, _, Q = pieces(log_r)
        s2 = Q / (n - p)
        # (n-p) log 2 pi + sum_j log|V_j| + log|X'V^-1 X| + r'V^-1 r, with V = sigma2 V~:
        # sum_j log|V_j| = n log sigma2 + sum_j log(1 + n_j r), log|X'V^-1 X| = log|X'V~^-1 X| - p log sigma2,
        # r'V^-1 r = Q / sigma2 = n - p at the profiled sigma2
        return ((n - p) * (LOG_2PI + np.log(s2) + 1) + np.sum(np.log1p(n_j * np.exp(log_r)))
                + np.linalg.slogdet(XVX)[1])

    best = minimize_scalar(criterion, bounds=(-25.0, 10.0), method="bounded",
                           options={"xatol": 1e-10})
    _, beta, Q = pieces(best.x)
    s2 = Q / (n - p)
    s2a = float(np.exp(best.x) * s2)
    return {"sigma2_alpha": s2a, "sigma2": float(s2), "beta": beta,
            "lambda": s2a / (s2a + s2 / n_j)}


def split_rhat(chains):
    """The classic split R-hat (Gelman et al., BDA3 section 11.4) of draws (chains, draws).

    Split each chain in half (2m chains of length n), then with W the mean of the
    within-chain variances and B/n the variance of the chain means:
    var_plus = (n - 1)/n W + B/n,  R-hat = sqrt(var_plus / W).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(4, 1000))
    >>> round(split_rhat(x), 2)
    1.0
    """
    x = np.asarray(chains, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4:
        raise TeachLMMError("split_rhat: chains must be a (chains, draws) array with at least 4 draws")
    half = x.shape[1] // 2
    halves = np.concatenate([x[:, :half], x[:, -half:]])     # drop the middle draw if odd
    n = half
    W = halves.var(axis=1, ddof=1).mean()
    B_over_n = halves.mean(axis=1).var(ddof=1)
    return float(np.sqrt(((n - 1) / n * W + B_over_n) / W))


# ----------------------------------------------------------------------------
# the radon fits the checks need (computed once)
# ----------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _radon():
    return load_radon()


@lru_cache(maxsize=None)
def _radon_model(formula):
    return Model(formula, _radon())


@lru_cache(maxsize=None)
def _radon_em(formula, reml=True):
    """EM variance components (G, sigma2) of a radon model."""
    fit = em.fit(_radon_model(formula), reml=reml)
    return fit.G, fit.sigma2


def _codes(values):
    return np.unique(np.asarray(values), return_inverse=True)[1]


def _model(formula, data):
    """The model to check against: radon (cached) when data is None."""
    return _radon_model(formula) if data is None else Model(formula, data)


def _index(model, group):
    labels = [str(g) for g in model.groups]
    if str(group) not in labels:
        raise TeachLMMError(f"there is no {model.group_name} {group!r}; the labels run {labels[0]} .. "
                            f"{labels[-1]}")
    return labels.index(str(group))


# ----------------------------------------------------------------------------
# chapter 1-2: the data, pooling
# ----------------------------------------------------------------------------

def _county(county):
    """The county label checked (1..85), or a clear error."""
    labels = set(_radon()["county"].astype(int))
    if isinstance(county, bool) or not isinstance(county, (int, np.integer)) or county not in labels:
        raise TeachLMMError(f"there is no county {county!r}; counties are numbered 1..85")
    return int(county)


def check_county_mean(answer, county, tol=5e-4):
    """Exercise 1: the no-pooling estimate of a county, its average log radon.

    Parameters
    ----------
    answer : float
    county : int, 1..85
    tol : float, how far off a rounded answer may be.

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_county_mean(0.66, county=1)
    Correct: the average log radon of county 1 = 0.6604 (you said 0.6600).
    True
    """
    answer = _number(answer, "check_county_mean")
    county = _county(county)
    d = _radon()
    y = d["log_radon"][d["county"] == county]
    expected = float(np.mean(y))
    hint = f"county {county} has {len(y)} houses; average their log_radon."
    if np.isclose(answer, np.mean(np.exp(y)), atol=tol):
        hint = "you averaged radon on the raw scale; average log_radon instead."
    stronger = f"data['log_radon'][data['county'] == {county}].mean()"
    return _verdict(abs(answer - expected) <= tol, f"the average log radon of county {county}",
                    expected, answer, hint, stronger, ("county_mean", county))


def _m0():
    """M0 fitted by REML on the independent road: sigma2_alpha, sigma2, mu_hat, lambda_j (85,)."""
    d = _radon()
    codes = _codes(d["county"])
    return random_intercept_reml(d["log_radon"], np.ones((len(codes), 1)), codes)


def check_shrinkage_factor(answer, county=1, n_j=None, sigma2_alpha=None, sigma2=None, tol=5e-3,
                           vc_tol=5e-4):
    """Exercise 2: a county's shrinkage factor in M0, lambda_j = sigma2_alpha / (sigma2_alpha + sigma2 / n_j).

    The check fits M0 ``log_radon ~ 1 + (1 | county)`` by REML itself
    (:func:`random_intercept_reml`). If you pass the ``n_j``, ``sigma2_alpha`` and
    ``sigma2`` you used, they are checked too: they must be M0's (within ``vc_tol``).

    Parameters
    ----------
    answer : float
    county : int, 1..85 (default 1)
    n_j, sigma2_alpha, sigma2 : float, optional; what you plugged into the formula.
    tol : float, for lambda_j.   vc_tol : float, for the variance components.

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_shrinkage_factor(0.6, n_j=4, sigma2_alpha=0.1, sigma2=0.57)
    Not yet: you said 0.6000.
    Hint: sigma2_alpha = 0.1000 and sigma2 = 0.5700 are not M0's REML estimates: fit M0 = log_radon ~ 1 + (1 | county) and use fit.G[0, 0] and fit.sigma2.
    False
    """
    answer = _number(answer, "check_shrinkage_factor")
    county = _county(county)
    fit = _m0()
    labels = np.unique(_radon()["county"]).astype(int)
    j = int(np.flatnonzero(labels == county)[0])
    size = int(np.sum(_radon()["county"] == county))
    s2a, s2 = fit["sigma2_alpha"], fit["sigma2"]
    expected = float(fit["lambda"][j])
    key = ("shrinkage_factor", county)
    stronger = (f"fit0 = tl.em.fit(tl.Model('{M0}', data)); s2_a, s2_e = fit0.G[0, 0], fit0.sigma2; "
                f"n_j = number of houses in county {county}; lambda = s2_a / (s2_a + s2_e / n_j).")
    own = [(name, v) for name, v, truth in [("sigma2_alpha", sigma2_alpha, s2a), ("sigma2", sigma2, s2)]
           if v is not None and abs(_number(v, name) - truth) > vc_tol]
    if own or (n_j is not None and _number(n_j, "n_j") != size):
        if own:
            said = " and ".join(f"{name} = {float(v):.4f}" for name, v in own)
            hint = (f"{said} {'is' if len(own) == 1 else 'are'} not M0's REML "
                    f"estimate{'' if len(own) == 1 else 's'}: fit M0 = {M0} and use fit.G[0, 0] and fit.sigma2.")
        else:
            hint = f"n_j is the number of houses in county {county} (model.stats.n of M0, or count them)."
        return _verdict(False, "lambda_j", expected, answer, hint, stronger, key)
    hint = ("lambda_j = sigma2_alpha / (sigma2_alpha + sigma2 / n_j) with M0's variance components: "
            "the county's own mean has sampling variance sigma2 / n_j.")
    if np.isclose(answer, 1 - expected, atol=tol):
        hint = "that is 1 - lambda_j, the weight on the state-wide mean; lambda_j weighs the county's own mean."
    elif np.isclose(answer, s2a / (s2a + s2), atol=tol):
        hint = "that is the ICC: divide sigma2 by n_j, the number of houses in the county."
    return _verdict(abs(answer - expected) <= tol, f"lambda_{county} in M0", expected, answer, hint,
                    stronger, key)


def check_partial_pooling(answer, county, tol=5e-4):
    """Exercise 3: the partial-pooling estimate of a county's mean log radon in M0 ``(1 | county)``.

    The check fits M0 by REML itself (:func:`random_intercept_reml`) and uses
    alpha_hat_j = mu_hat + lambda_j (ybar_j - mu_hat).

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_partial_pooling(1.0675, county=1)
    Correct: the partial-pooling estimate for county 1 = 1.0675 (you said 1.0675).
    True
    """
    answer = _number(answer, "check_partial_pooling")
    county = _county(county)
    d = _radon()
    codes = _codes(d["county"])
    labels = np.unique(d["county"]).astype(int)
    fit = _m0()
    j = int(np.flatnonzero(labels == county)[0])
    ybar = np.bincount(codes, weights=d["log_radon"]) / np.bincount(codes)
    mu = fit["beta"][0]
    expected = mu + fit["lambda"][j] * (ybar[j] - mu)
    if np.isclose(answer, ybar[j], atol=tol):
        hint = "that is the county's own mean (no pooling); pull it toward mu_hat by the factor lambda_j."
    elif np.isclose(answer, mu, atol=tol):
        hint = "that is mu_hat, complete pooling; move it toward the county's own mean by lambda_j."
    else:
        hint = "alpha_j = mu_hat + lambda_j (ybar_j - mu_hat), with M0's mu_hat and lambda_j; or coef() of M0."
    stronger = (f"mu_hat = {mu:.4f} (fixef of M0), lambda_{county} = {fit['lambda'][j]:.4f} (exercise 2), "
                f"ybar_{county} = {ybar[j]:.4f}; or read fit0.coef for county {county}'s row.")
    return _verdict(abs(answer - expected) <= tol, f"the partial-pooling estimate for county {county}",
                    expected, answer, hint, stronger, ("partial_pooling", county))


# ----------------------------------------------------------------------------
# chapter 3: varying intercepts
# ----------------------------------------------------------------------------

def check_icc(answer, formula=M1, data=None, tol=1e-3):
    """Exercises 4 and 5: the intraclass correlation sigma2_alpha / (sigma2_alpha + sigma2).

    Parameters
    ----------
    answer : float
    formula : str, a model with one random intercept ``(1 | group)``; default the lecture's M1.
    data : dict, optional; default the radon data.
    tol : float

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_icc(0.159)
    Correct: the intraclass correlation = 0.1587 (you said 0.1590).
    True
    """
    answer = _number(answer, "check_icc")
    model = _model(formula, data)
    if model.q != 1 or model.ranef_names != ["(Intercept)"]:
        raise TeachLMMError("check_icc: the ICC is defined here for a random-intercept model, "
                            "formula '... + (1 | group)'")
    fit = random_intercept_reml(model.y, model.X, model.codes)
    s2a, s2 = fit["sigma2_alpha"], fit["sigma2"]
    expected = s2a / (s2a + s2)
    name = "M1" if formula == M1 and data is None else "the model"
    hint = f"ICC = sigma2_alpha / (sigma2_alpha + sigma2), with {name}'s variance components."
    if np.isclose(answer, s2a / s2, atol=tol):
        hint = "you divided by sigma2 alone; the denominator is the total, sigma2_alpha + sigma2."
    elif np.isclose(answer, np.sqrt(s2a) / (np.sqrt(s2a) + np.sqrt(s2)), atol=tol):
        hint = "use variances, not standard deviations."
    stronger = (f"fit = tl.em.fit(tl.Model('{formula}', data)); "
                "fit.G[0, 0] / (fit.G[0, 0] + fit.sigma2), which is also fit.icc.")
    return _verdict(abs(answer - expected) <= tol, "the intraclass correlation", expected, answer, hint,
                    stronger, ("icc", formula, None if data is None else id(data)))


# ----------------------------------------------------------------------------
# chapter 4: varying intercepts and slopes (M3)
# ----------------------------------------------------------------------------

def check_county2_line(a, b, tol=5e-4):
    """Exercise 6: county 2's fitted line in M3, y_hat = a + b x (the lecture: 0.933 - 0.771 x).

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_county2_line(0.933, -0.771)
    Correct: county 2's (intercept, slope) = [0.9334, -0.7708] (you said [0.9330, -0.7710]).
    True
    """
    answer = np.array([_number(a, "check_county2_line: a"), _number(b, "check_county2_line: b")])
    model = _radon_model(M3)
    G, sigma2 = _radon_em(M3)
    beta, bl = dense_gls_blup(model, G, sigma2)
    j = _index(model, 2)
    expected = beta + bl[j]                    # (mu_alpha + xi_2, mu_beta + zeta_2)
    if _close(answer, beta, tol):
        hint = "those are the fixed effects (the state-wide line); add county 2's ranef row."
    elif _close(answer, bl[j], tol):
        hint = "those are county 2's deviations (ranef); add the fixed effects: fixef + ranef."
    elif _close(answer, beta - bl[j], tol):
        hint = "check the signs: the county's line is fixef PLUS ranef."
    else:
        hint = "the county's line is the state-wide line (fixef) plus the county's deviation (ranef)."
    stronger = ("j = list(fit.groups).index(2); a, b = np.array(list(fit.fixef.values())) + fit.ranef[j]; "
                "the same as fit.coef[j].")
    return _verdict(_close(answer, expected, tol), "county 2's (intercept, slope)", expected, answer,
                    hint, stronger, ("county2_line",))


def check_composite_variance(answer, x, tol=5e-4):
    """Exercise 7: Var(y_ij) in M3 for a house with floor x: sigma_a^2 + 2 x cov + x^2 sigma_b^2 + sigma2.

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_composite_variance(0.7155, x=1)
    Correct: Var(xi_j + x zeta_j + eps_ij) at x = 1 = 0.7155 (you said 0.7155).
    True
    """
    answer = _number(answer, "check_composite_variance")
    x = _number(x, "check_composite_variance: x")
    G, sigma2 = _radon_em(M3)
    z = np.array([1.0, x])
    expected = float(z @ G @ z + sigma2)
    if np.isclose(answer, G[0, 0] + x ** 2 * G[1, 1] + sigma2, atol=tol):
        hint = "you left out the covariance term 2 x Cov(xi_j, zeta_j) = 2 x G[0, 1]."
    elif np.isclose(answer, expected - sigma2, atol=tol):
        hint = "add the house-level variance sigma2 (fit.sigma2)."
    else:
        hint = "the variance of a sum: both variances, twice the covariance, and the house-level variance."
    stronger = "Var = G[0,0] + 2 x G[0,1] + x^2 G[1,1] + sigma2, i.e. z'Gz + sigma2 with z = (1, x), from M3's fit."
    return _verdict(abs(answer - expected) <= tol, f"Var(xi_j + x zeta_j + eps_ij) at x = {x:g}",
                    expected, answer, hint, stronger, ("composite_variance", x))


# ----------------------------------------------------------------------------
# chapter 5: the cross-level interaction (M4)
# ----------------------------------------------------------------------------

def _alpha_beta(model, G, sigma2, u):
    beta, b = dense_gls_blup(model, G, sigma2)
    alpha = beta[0] + beta[2] * u + b[:, 0]
    slope = beta[1] + beta[3] * u + b[:, 1]
    return alpha, slope, beta


def _u_radon(model):
    """log_uranium of each county, in the model's group order (from the data, not from the model's X)."""
    first = np.array([rows[0] for rows in _group_rows(model)])
    return _radon()["log_uranium"][first]


def check_alpha_beta(alpha, beta, tol=5e-4):
    """Exercise 8: M4's county intercepts alpha_j and slopes beta_j (85 each, in county order).

    alpha_j = gamma0_a + gamma1_a u_j + eta_j^a, beta_j = gamma0_b + gamma1_b u_j + eta_j^b,
    with u_j the county's log_uranium: ``model.group_values("log_uranium")``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> fit = tl.em.fit(tl.Model(tl.exercises.M4, tl.load_radon()))
    >>> tl.exercises.check_alpha_beta(fit.coef[:, 0], fit.coef[:, 1])     # forgot the u_j terms
    Not yet: you said [1.4587, 1.4956, 1.4769, 1.5276, ...].
    Hint: coef() does not contain the u_j terms: add coef[:, 2] * u_j to the intercepts and coef[:, 3] * u_j to the slopes.
    False
    """
    model = _radon_model(M4)
    answer = np.stack([_as_answer(alpha, (model.J,), "alpha"), _as_answer(beta, (model.J,), "beta")])
    G, sigma2 = _radon_em(M4)
    u = _u_radon(model)
    exp_a, exp_b, gamma = _alpha_beta(model, G, sigma2, u)
    expected = np.stack([exp_a, exp_b])
    if _close(answer[0], exp_a - gamma[2] * u, tol):
        hint = ("coef() does not contain the u_j terms: add coef[:, 2] * u_j to the intercepts and "
                "coef[:, 3] * u_j to the slopes.")
    elif _close(answer[0], gamma[0] + gamma[2] * u, tol):
        hint = "that is the group-level regression only; add each county's random effect (ranef)."
    else:
        hint = ("alpha_j = coef[:, 0] + coef[:, 2] * u_j, beta_j = coef[:, 1] + coef[:, 3] * u_j, with u_j "
                "the county's log_uranium, counties in the order of fit.groups.")
    stronger = ("u = m4.group_values('log_uranium') gives u_j per county in the order of fit.groups; then "
                "alpha = fit.coef[:, 0] + fit.coef[:, 2] * u and beta = fit.coef[:, 1] + fit.coef[:, 3] * u.")
    return _verdict(_close(answer, expected, tol), "M4's (alpha_j, beta_j)", expected, answer, hint,
                    stronger, ("alpha_beta",))


def check_reml_criterion(answer, G, sigma2, formula=M4, data=None, tol=0.01):
    """Exercise 9: the REML criterion (-2 x restricted log-likelihood) at given (G, sigma2).

    The check computes it from each group's V_j (:func:`dense_reml_criterion`).
    To compute it yourself at any G, sigma2:
    ``-2 * tl.MixedModelResult(model, G, sigma2, reml=True).loglik``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> G = [[0.0, 0.0], [0.0, 0.139213]]             # lme4 1.1-31's default stopping point
    >>> tl.exercises.check_reml_criterion(2132.24, G, 0.573513)
    Correct: the REML criterion = 2132.24 (you said 2132.24).
    True
    """
    answer = _number(answer, "check_reml_criterion")
    model = _model(formula, data)
    G = _as_answer(G, (model.q, model.q), f"check_reml_criterion: G must be {model.q} x {model.q} for "
                   "this model; G")
    sigma2 = _number(sigma2, "check_reml_criterion: sigma2")
    expected = dense_reml_criterion(model, G, sigma2)
    if np.isclose(answer, -expected / 2, atol=tol):
        hint = "that is the restricted log-likelihood; the criterion is -2 times it."
    elif np.isclose(answer, expected / 2, atol=tol):
        hint = "the criterion is -2 x logLik, not -logLik."
    else:
        hint = ("evaluate the restricted log-likelihood at exactly this (G, sigma2), not at a fitted "
                "optimum, and multiply by -2.")
    stronger = ("-2 * tl.MixedModelResult(model, G, sigma2, reml=True).loglik, with model = "
                "tl.Model(M4, data) and the G, sigma2 you pass to the check.")
    return _verdict(abs(answer - expected) <= tol, "the REML criterion", expected, answer, hint, stronger,
                    ("reml_criterion", formula, G.tobytes(), sigma2), digits=2)


# ----------------------------------------------------------------------------
# chapter 6: EM
# ----------------------------------------------------------------------------

def check_em_step(G_new, sigma2_new, G, sigma2, formula=M3, data=None, reml=True, tol=1e-6):
    """Exercise 10: one EM step by hand, from (G, sigma2) to (G_new, sigma2_new).

    The check takes the conditional-moment road (:func:`dense_em_step`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> model = tl.Model(tl.exercises.M3, tl.load_radon())
    >>> s0 = tl.em.init(model)
    >>> s1 = tl.em.step(s0)
    >>> tl.exercises.check_em_step(s1.G, s1.sigma2, s0.G, s0.sigma2)
    Correct: one EM step gives (G, sigma2) = [0.3007, -0.1264, -0.1264, 1.8642, ...] (you said [0.3007, -0.1264, -0.1264, 1.8642, ...]).
    True
    """
    model = _model(formula, data)
    q = model.q
    G = _as_answer(G, (q, q), "check_em_step: G")
    answer = np.append(_as_answer(G_new, (q, q), "check_em_step: G_new").ravel(),
                       _number(sigma2_new, "check_em_step: sigma2_new"))
    sigma2 = _number(sigma2, "check_em_step: sigma2")
    G_exp, s2_exp = dense_em_step(model, G, sigma2, reml=reml)
    expected = np.append(G_exp.ravel(), s2_exp)
    scale = max(1.0, float(np.max(np.abs(expected))))
    ok = _close(answer, expected, tol * scale)
    G_other, s2_other = dense_em_step(model, G, sigma2, reml=not reml)
    if not ok and _close(answer, np.append(G_other.ravel(), s2_other), tol * scale):
        hint = f"that is the {'ML' if reml else 'REML'} step; this check is for {'REML' if reml else 'ML'}."
    else:
        hint = ("G_new = mean over groups of (b_j b_j' + Var(b_j | y)); sigma2_new = (rss + sigma2 * trace) / n "
                "with the E-step quantities of the state at (G, sigma2).")
    stronger = ("G_new = (np.einsum('jq,jr->qr', state.b, state.b) + state.var_b.sum(axis=0)) / model.J, "
                "sigma2_new = (state.rss + state.sigma2 * state.trace) / model.n, where state = "
                "tl.em.init(model, reml=...) is the state at (G, sigma2).")
    return _verdict(ok, "one EM step gives (G, sigma2)", expected, answer, hint, stronger,
                    ("em_step", formula, reml, G.tobytes(), sigma2))


# ----------------------------------------------------------------------------
# chapter 7-8: Gibbs and BLUP
# ----------------------------------------------------------------------------

def check_split_rhat(answer, chains, tol=1e-3):
    """Exercise 11: the classic split R-hat of draws (chains, draws), by the formula.

    Examples
    --------
    >>> import numpy as np, teachlmm as tl
    >>> x = np.random.default_rng(0).normal(size=(4, 200))
    >>> x[0] += 1.0                                      # one chain stuck elsewhere
    >>> tl.exercises.check_split_rhat(1.0, x)
    Not yet: you said 1.0000.
    Hint: split each chain in half and compare the variance within the halves with the variance between their means.
    False
    """
    answer = _number(answer, "check_split_rhat")
    expected = split_rhat(chains)
    hint = ("split each chain in half and compare the variance within the halves with the variance "
            "between their means.")
    stronger = ("split each chain in half; W = mean within-half variance, B/n = variance of the half means; "
                "R-hat = sqrt(((n-1)/n W + B/n) / W).")
    return _verdict(abs(answer - expected) <= tol, "split R-hat", expected, answer, hint, stronger,
                    ("split_rhat", np.asarray(chains, dtype=float).tobytes()))


def check_blup(b, G, sigma2, formula=M3, data=None, tol=1e-5):
    """Exercise 12: the BLUPs b_hat_j (J x q) at typed-in variance components (G, sigma2).

    The check uses b_hat_j = G Z_j'V_j^-1 (y_j - X_j beta_hat) (:func:`dense_gls_blup`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> G = [[0.2, 0.0], [0.0, 0.2]]                     # "what if" the counties varied more
    >>> model = tl.Model(tl.exercises.M3, tl.load_radon())
    >>> b = tl.MixedModelResult(model, G, 0.55).ranef
    >>> tl.exercises.check_blup(b, G, 0.55)
    Correct: the BLUPs = [-0.3958, 0.1029, -0.5527, -0.2893, ...] (you said [-0.3958, 0.1029, -0.5527, -0.2893, ...]).
    True
    """
    model = _model(formula, data)
    G = _as_answer(G, (model.q, model.q), "check_blup: G")
    sigma2 = _number(sigma2, "check_blup: sigma2")
    beta, expected = dense_gls_blup(model, G, sigma2)
    answer = _as_answer(b, expected.shape, "b")
    if _close(answer, expected + beta[:model.q], tol):
        hint = "those look like coef (fixef + ranef); the BLUPs are the deviations, ranef."
    else:
        hint = "the BLUPs at given (G, sigma2) need no fitting: evaluate the result at these values."
    stronger = ("tl.MixedModelResult(model, G, sigma2).ranef (or tl.blup.fit(model, G, sigma2).ranef), "
                "or M_j^-1 Z_j'(y_j - X_j beta_hat) group by group.")
    return _verdict(_close(answer, expected, tol), "the BLUPs", expected, answer, hint, stronger,
                    ("blup", formula, G.tobytes(), sigma2))


def check_alpha_rmse(answer, seed, n_groups=85, tol=5e-4):
    """Exercise 13 (simulated truth): the RMSE of M4's partial-pooling alpha_j against the true alpha_j.

    Simulate with ``tl.simulate_data(n_groups=n_groups, seed=seed)``, fit
    ``truth["formula"]`` by REML, compute alpha_j = coef[:, 0] + coef[:, 2] u_j, and
    answer sqrt(mean((alpha_hat_j - alpha_j)^2)) against ``truth["alpha"]``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_alpha_rmse(0.5, seed=1, n_groups=30)
    Not yet: you said 0.5000.
    Hint: alpha_hat_j = coef[:, 0] + coef[:, 2] * u_j (u_j: truth['u']); RMSE = sqrt(mean((alpha_hat - truth['alpha'])**2)).
    False
    """
    answer = _number(answer, "check_alpha_rmse")
    expected = _alpha_rmse(seed, n_groups)
    hint = ("alpha_hat_j = coef[:, 0] + coef[:, 2] * u_j (u_j: truth['u']); "
            "RMSE = sqrt(mean((alpha_hat - truth['alpha'])**2)).")
    stronger = (f"sim, truth = tl.simulate_data(n_groups={n_groups}, seed={seed}); "
                "fit = tl.em.fit(tl.Model(truth['formula'], sim)) (REML, the default); then the hint's two lines.")
    return _verdict(abs(answer - expected) <= tol, "the RMSE of alpha_hat_j", expected, answer, hint,
                    stronger, ("alpha_rmse", seed, n_groups))


def _alpha_rmse(seed, n_groups):
    data, truth = simulate(n_groups=n_groups, seed=seed)
    model = Model(truth["formula"], data)
    with warnings.catch_warnings():                 # a boundary fit is fine here; the check stays quiet
        warnings.simplefilter("ignore", BoundaryWarning)
        fit = em.fit(model)
    alpha, _, _ = _alpha_beta(model, fit.G, fit.sigma2, truth["u"])
    return float(np.sqrt(np.mean((alpha - truth["alpha"]) ** 2)))


# ----------------------------------------------------------------------------
# the solutions, on request
# ----------------------------------------------------------------------------

def _solution_values(n):
    """(what, value) pairs of exercise n's answer, computed on the check's own road."""
    d = _radon()
    if n == 1:
        return [("average log radon of county 2", np.mean(d["log_radon"][d["county"] == 2]))]
    if n in (2, 3):
        fit = _m0()
        ybar = np.mean(d["log_radon"][d["county"] == 1])
        mu, lam = fit["beta"][0], fit["lambda"][0]
        if n == 2:
            return [("M0: sigma2_alpha", fit["sigma2_alpha"]), ("sigma2", fit["sigma2"]),
                    ("n_1", int(np.sum(d["county"] == 1))), ("lambda_1", lam)]
        return [("mu_hat", mu), ("lambda_1", lam), ("ybar_1", ybar), ("alpha_hat_1", mu + lam * (ybar - mu))]
    if n == 4:
        fit = random_intercept_reml(_radon_model(M1).y, _radon_model(M1).X, _radon_model(M1).codes)
        return [("ICC of M1", fit["sigma2_alpha"] / (fit["sigma2_alpha"] + fit["sigma2"]))]
    if n == 5:
        sim, _ = simulate(G=[[0.1, 0.0], [0.0, 0.0]], sigma2=0.56, seed=11)
        m = Model("y ~ 1 + x + u + x:u + (1 | group)", sim)
        fit = random_intercept_reml(m.y, m.X, m.codes)
        return [("estimated ICC", fit["sigma2_alpha"] / (fit["sigma2_alpha"] + fit["sigma2"])),
                ("true ICC", 0.1 / 0.66)]
    if n == 6:
        model = _radon_model(M3)
        beta, b = dense_gls_blup(model, *_radon_em(M3))
        return [("county 2's (intercept, slope)", beta + b[_index(model, 2)])]
    if n == 7:
        G, s2 = _radon_em(M3)
        return [("Var at x = 1 (first floor)", G[0, 0] + 2 * G[0, 1] + G[1, 1] + s2),
                ("Var at x = 0 (basement)", G[0, 0] + s2)]
    if n == 8:
        model = _radon_model(M4)
        a, b, _ = _alpha_beta(model, *_radon_em(M4), _u_radon(model))
        return [("alpha_j (first 4 counties)", a), ("beta_j (first 4 counties)", b)]
    if n == 9:
        G, s2 = _radon_em(M4)
        model = _radon_model(M4)
        return [("REML criterion at lme4's default point",
                 dense_reml_criterion(model, np.diag([0.0, 0.139213]), 0.573513)),
                ("REML criterion at the EM estimate", dense_reml_criterion(model, G, s2))]
    if n == 10:
        sim, truth = simulate(n_groups=40, seed=5)
        model = Model(truth["formula"], sim)
        s0 = em.init(model, reml=False)
        G1, s1 = dense_em_step(model, s0.G, s0.sigma2, reml=False)
        return [("G_new", G1), ("sigma2_new", s1)]
    if n == 11:
        x = np.random.default_rng(3).normal(size=(4, 200))
        y = x.copy()
        y[0] += 1.0
        return [("split R-hat, agreeing chains", split_rhat(x)), ("split R-hat, one shifted", split_rhat(y))]
    if n == 12:
        beta, b = dense_gls_blup(_radon_model(M3), np.diag([0.3, 0.3]), 0.55)
        return [("BLUPs (first 2 counties)", b[:2])]
    if n == 13:
        return [("RMSE of alpha_hat_j, seed 21", _alpha_rmse(21, 85))]
    if n in (14, 15):
        f, (labels, sizes) = _schools_fit(), _class_sizes(1)
        if n == 14:
            n_12 = int(sizes[list(labels).index(2)])
            return [("n_12", n_12), ("lambda_12", f["tau2_class"] / (f["tau2_class"] + f["sigma2"] / n_12))]
        W = np.sum(1 / (f["tau2_class"] + f["sigma2"] / sizes))
        return [("W_1", W), ("Lambda_1", f["tau2_school"] / (f["tau2_school"] + 1 / W))]
    if n == 16:
        d = _crossed()
        new = crossed_em_step_dense(d["rt"], d["subject"], d["item"], 3000.0, 3000.0, 5000.0)
        return [("new tau2_subject", new[0]), ("new tau2_item", new[1])]
    raise TeachLMMError(f"there is no exercise {n!r}; the exercises are numbered 1..{len(_RECIPES)}")


_RECIPES = {
    1: "data['log_radon'][data['county'] == 2].mean()",
    2: "fit0 = tl.em.fit(tl.Model(M0, data)); lambda_1 = G[0,0] / (G[0,0] + sigma2 / n_1), n_1 = m0.stats.n[0]",
    3: "alpha_1 = mu_hat + lambda_1 (ybar_1 - mu_hat), the same as fit0.coef[0, 0]",
    4: "fit1 = tl.em.fit(tl.Model(M1, data)); fit1.G[0, 0] / (fit1.G[0, 0] + fit1.sigma2), or fit1.icc",
    5: "tl.em.fit(tl.Model('y ~ 1 + x + u + x:u + (1 | group)', sim)).icc",
    6: "j = list(fit3.groups).index(2); np.array(list(fit3.fixef.values())) + fit3.ranef[j], or fit3.coef[j]",
    7: "z = (1, x): z'Gz + sigma2 = G[0,0] + 2 x G[0,1] + x^2 G[1,1] + sigma2 (M3's fit)",
    8: "u = m4.group_values('log_uranium'); alpha = coef[:, 0] + coef[:, 2] * u; "
       "beta = coef[:, 1] + coef[:, 3] * u",
    9: "-2 * tl.MixedModelResult(m4, G, sigma2, reml=True).loglik at each (G, sigma2); the lower one is REML's",
    10: "G_new = (einsum('jq,jr->qr', s.b, s.b) + s.var_b.sum(0)) / J; sigma2_new = (s.rss + s.sigma2 s.trace) / n",
    11: "split in halves; W = mean within-half variance, B/n = variance of half means; sqrt(((n-1)/n W + B/n) / W)",
    12: "tl.MixedModelResult(model3, np.diag([0.3, 0.3]), 0.55).ranef",
    13: "alpha_hat = fit.coef[:, 0] + fit.coef[:, 2] * truth['u']; sqrt(mean((alpha_hat - truth['alpha'])**2))",
    14: "fit = tl.multilevel.fit(NESTED_FORMULA, simulate_schools(seed=7)); t2c = fit.Gs['class:school'][0, 0]; "
        "t2c / (t2c + fit.sigma2 / n_12)",
    15: "W_1 = sum over school 1's classes of 1 / (t2c + fit.sigma2 / n_1j); t2s = fit.Gs['school'][0, 0]; "
        "t2s / (t2s + 1 / W_1)",
    16: "E-step at the given variances: b_hat and Var(b | y) of both factors from the joint mixed-model equations; "
        "M-step: mean of b_hat^2 + Var over each factor's levels",
}


def solution(n):
    """Show the answer of exercise n (1..16) and how to compute it: only when you ask.

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.solution(4)
    Exercise 4: ICC of M1 = 0.1587
    How: fit1 = tl.em.fit(tl.Model(M1, data)); fit1.G[0, 0] / (fit1.G[0, 0] + fit1.sigma2), or fit1.icc
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n not in _RECIPES:
        raise TeachLMMError(f"there is no exercise {n!r}; the exercises are numbered 1..{len(_RECIPES)}")
    for i, (what, value) in enumerate(_solution_values(int(n))):
        shown = str(value) if isinstance(value, int) else _show(value)
        print(f"{'Exercise ' + str(n) + ': ' if i == 0 else '  '}{what} = {shown}")
    print(f"How: {_RECIPES[int(n)]}")


# ----------------------------------------------------------------------------
# chapter "Several grouping factors": exercises 14-16 (simulated data of teachlmm.multilevel_data)
# ----------------------------------------------------------------------------

from scipy.optimize import minimize  # noqa: E402  (the section's own imports, kept with it)

from .multilevel_data import simulate_crossed, simulate_schools  # noqa: E402

SCHOOLS_SEED, CROSSED_SEED = 7, 1          # the data of the chapter
NESTED_FORMULA = "score ~ 1 + prior + (1 | school/class)"


@lru_cache(maxsize=1)
def _schools():
    return simulate_schools(seed=SCHOOLS_SEED)[0]


@lru_cache(maxsize=1)
def _crossed():
    return simulate_crossed(seed=CROSSED_SEED)[0]


def nested_intercepts_reml(y, X, school, klass):
    """REML fit of ``y ~ X + (1 | school/class)`` through each school's explicit V_i^-1.

    With the ratios r_s = tau2_s / sigma2 and r_c = tau2_c / sigma2, school i's
    covariance is sigma2 V~_i, V~_i = B_i + r_s 11', B_i = blockdiag_j(I + r_c 11')
    over its classes. Both have explicit inverses and determinants (Sherman-Morrison
    twice, as :func:`random_intercept_reml` does once)::

        B_i^-1 = blockdiag_j(I - c_j 11'),  c_j = r_c / (1 + n_j r_c),  log|B_i| = sum_j log(1 + n_j r_c)
        u'V~_i^-1 v = u'B_i^-1 v - r_s (1'B_i^-1 u)(1'B_i^-1 v) / (1 + r_s m_i),
        1'B_i^-1 u = sum_j (1'u_j) / (1 + n_j r_c),  m_i = 1'B_i^-1 1 = sum_j n_j / (1 + n_j r_c),
        log|V~_i| = log|B_i| + log(1 + r_s m_i),

    so the REML criterion is a sum over classes and schools; sigma2 is profiled out
    and the two log-ratios are found by Nelder-Mead. A road apart from the
    mixed-model equations of :mod:`teachlmm.multilevel_mme`: for checks.

    Parameters
    ----------
    y : (n,).   X : (n, p).   school : (n,) school labels.   klass : (n,) class labels within school.

    Returns
    -------
    dict with tau2_school, tau2_class, sigma2, beta.

    Examples
    --------
    >>> import numpy as np
    >>> from teachlmm.multilevel_data import simulate_schools
    >>> d, _ = simulate_schools(n_schools=10, seed=3)
    >>> X = np.column_stack([np.ones(d["score"].size), d["prior"]])
    >>> fit = nested_intercepts_reml(d["score"], X, d["school"], d["class"])
    >>> sorted(fit)
    ['beta', 'sigma2', 'tau2_class', 'tau2_school']
    """
    y, X = np.asarray(y, float), np.asarray(X, float)
    n, p = X.shape
    D = np.column_stack([X, y])                                         # [X, y]
    pairs, cls = np.unique(np.column_stack([school, klass]), axis=0, return_inverse=True)
    cls = cls.ravel()
    sch = np.unique(pairs[:, 0], return_inverse=True)[1].ravel()        # the school of every class
    n_j = np.bincount(cls).astype(float)
    sums = np.stack([np.bincount(cls, weights=D[:, k]) for k in range(p + 1)], axis=1)   # 1'[X, y]_j
    DtD = D.T @ D

    def pieces(log_ratios):
        rs, rc = np.exp(log_ratios)
        c = rc / (1 + n_j * rc)
        C = DtD - np.einsum("j,ja,jb->ab", c, sums, sums)                # [X, y]'B^-1[X, y]
        e = np.stack([np.bincount(sch, weights=sums[:, k] / (1 + n_j * rc)) for k in range(p + 1)], axis=1)
        m = np.bincount(sch, weights=n_j / (1 + n_j * rc))               # 1'B_i^-1 1 per school
        C -= np.einsum("i,ia,ib->ab", rs / (1 + rs * m), e, e)           # ... - r_s (1'B^-1 u)(1'B^-1 v) / (1 + r_s m)
        logdet = np.log1p(n_j * rc).sum() + np.log1p(rs * m).sum()
        beta = np.linalg.solve(C[:p, :p], C[:p, p])
        return beta, C[p, p] - C[:p, p] @ beta, logdet, C[:p, :p]

    def criterion(log_ratios):
        _, Q, logdet, XVX = pieces(log_ratios)
        s2 = Q / (n - p)
        return (n - p) * (np.log(s2) + 1) + logdet + np.linalg.slogdet(XVX)[1]

    best = minimize(criterion, np.log([0.2, 0.1]), method="Nelder-Mead",
                    options=dict(xatol=1e-9, fatol=1e-12, maxiter=4000))
    for _ in range(3):                   # restart from the best point: Nelder-Mead's simplex can stall early
        best = minimize(criterion, best.x, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-13))
    beta, Q, _, _ = pieces(best.x)
    s2 = Q / (n - p)
    rs, rc = np.exp(best.x)
    return {"tau2_school": float(rs * s2), "tau2_class": float(rc * s2), "sigma2": float(s2), "beta": beta}


@lru_cache(maxsize=1)
def _schools_fit():
    d = _schools()
    X = np.column_stack([np.ones(d["score"].size), d["prior"]])
    return nested_intercepts_reml(d["score"], X, d["school"], d["class"])


def _class_sizes(school):
    """The pupils of every class of one school, by class number, or a clear error."""
    d = _schools()
    if isinstance(school, bool) or not isinstance(school, (int, np.integer)) or school not in set(d["school"]):
        raise TeachLMMError(f"there is no school {school!r}; schools are numbered 1..{int(d['school'].max())}")
    klass = d["class"][d["school"] == school]
    labels, n = np.unique(klass, return_counts=True)
    return labels.astype(int), n


def check_class_shrinkage(answer, school=1, klass=2, tol=5e-4):
    """Exercise 14: the shrinkage factor lambda_ij of one class, at the REML estimates of the schools data.

    lambda_ij = tau2_class / (tau2_class + sigma2 / n_ij), with the model
    ``score ~ 1 + prior + (1 | school/class)`` fitted to
    ``simulate_schools(seed=7)``. The check fits it itself, school by school
    (:func:`nested_intercepts_reml`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_class_shrinkage(0.5, school=1, klass=2)
    Not yet: you said 0.5000.
    Hint: lambda_ij = tau2_class / (tau2_class + sigma2 / n_ij): the class's own mean has sampling variance sigma2 / n_ij, and the class effects vary by tau2_class (fit.Gs['class:school']).
    False
    """
    answer = _number(answer, "check_class_shrinkage")
    labels, n = _class_sizes(school)
    if isinstance(klass, bool) or not isinstance(klass, (int, np.integer)) or klass not in labels:
        raise TeachLMMError(f"school {school} has classes {labels.min()}..{labels.max()}; got {klass!r}")
    f = _schools_fit()
    n_ij = int(n[list(labels).index(klass)])
    expected = f["tau2_class"] / (f["tau2_class"] + f["sigma2"] / n_ij)
    hint = ("lambda_ij = tau2_class / (tau2_class + sigma2 / n_ij): the class's own mean has sampling variance "
            "sigma2 / n_ij, and the class effects vary by tau2_class (fit.Gs['class:school']).")
    if np.isclose(answer, f["tau2_school"] / (f["tau2_school"] + f["sigma2"] / n_ij), atol=tol):
        hint = "you used the school variance; a class's effect varies by tau2_class, fit.Gs['class:school']."
    stronger = (f"fit = tl.multilevel.fit('{NESTED_FORMULA}', data); n_ij = number of pupils with school == "
                f"{school} and class == {klass}; t2c = fit.Gs['class:school'][0, 0]; t2c / (t2c + fit.sigma2 / n_ij)")
    return _verdict(abs(answer - expected) <= tol, f"lambda of class {klass} in school {school}", expected,
                    answer, hint, stronger, ("class_shrinkage", school, klass))


def check_school_shrinkage(answer, school=1, tol=5e-4):
    """Exercise 15: the shrinkage factor Lambda_i of one school, at the REML estimates of the schools data.

    Lambda_i = tau2_school / (tau2_school + 1 / W_i), W_i = sum_j 1 / (tau2_class + sigma2 / n_ij)
    over the school's classes. The check fits the model itself (:func:`nested_intercepts_reml`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_school_shrinkage(0.5, school=1)
    Not yet: you said 0.5000.
    Hint: Lambda_i = tau2_school / (tau2_school + 1 / W_i), where W_i adds up the precisions 1 / (tau2_class + sigma2 / n_ij) of the school's class means.
    False
    """
    answer = _number(answer, "check_school_shrinkage")
    _, n = _class_sizes(school)
    f = _schools_fit()
    W = np.sum(1 / (f["tau2_class"] + f["sigma2"] / n))
    expected = f["tau2_school"] / (f["tau2_school"] + 1 / W)
    hint = ("Lambda_i = tau2_school / (tau2_school + 1 / W_i), where W_i adds up the precisions "
            "1 / (tau2_class + sigma2 / n_ij) of the school's class means.")
    if np.isclose(answer, f["tau2_school"] / (f["tau2_school"] + f["sigma2"] / n.sum()), atol=tol):
        hint = ("that treats the school's pupils as independent (sigma2 / n_i); its class means also carry "
                "the class effects: each has variance tau2_class + sigma2 / n_ij.")
    stronger = ("t2s, t2c = fit.Gs['school'][0, 0], fit.Gs['class:school'][0, 0]; n_ij = pupils per class of the "
                "school; W = sum(1 / (t2c + fit.sigma2 / n_ij)); t2s / (t2s + 1 / W)")
    return _verdict(abs(answer - expected) <= tol, f"Lambda of school {school}", expected, answer, hint,
                    stronger, ("school_shrinkage", school))


def crossed_em_step_dense(y, subject, item, tau2_subject, tau2_item, sigma2):
    """One ML EM step for ``y ~ 1 + (1 | subject) + (1 | item)`` with the dense n x n V (for checks).

    E-step at (tau2_subject, tau2_item, sigma2): beta_hat by GLS, b_hat = G Z'V^-1 (y - 1 beta_hat),
    Var(b | y, beta) = G - G Z'V^-1 Z G; M-step: each tau2_new = mean over its levels of b_hat^2 + Var.

    Returns
    -------
    (tau2_subject_new, tau2_item_new)
    """
    s = np.unique(subject, return_inverse=True)[1]
    t = np.unique(item, return_inverse=True)[1]
    Z = np.hstack([np.eye(s.max() + 1)[s], np.eye(t.max() + 1)[t]])
    g = np.concatenate([np.full(s.max() + 1, tau2_subject), np.full(t.max() + 1, tau2_item)])
    V = (Z * g) @ Z.T + sigma2 * np.eye(len(y))
    Vi = np.linalg.inv(V)
    one = np.ones(len(y))
    beta = (one @ Vi @ y) / (one @ Vi @ one)
    GZV = (Z * g).T @ Vi
    b = GZV @ (y - beta)
    var = g - np.einsum("kn,nk->k", GZV, Z * g)
    m = b ** 2 + var
    return float(m[:s.max() + 1].mean()), float(m[s.max() + 1:].mean())


def check_crossed_em_step(answer, factor="subject", tau2_subject=3000.0, tau2_item=3000.0, sigma2=5000.0,
                          tol=5e-3):
    """Exercise 16: one ML EM step for ``rt ~ 1 + (1 | subject) + (1 | item)`` on ``simulate_crossed(seed=1)``.

    From (tau2_subject, tau2_item, sigma2), the new variance of ``factor``
    ("subject" or "item"): the mean over its levels of b_hat^2 + Var(b | y).
    The check takes the textbook road with the dense n x n V (:func:`crossed_em_step_dense`).

    Examples
    --------
    >>> import teachlmm as tl
    >>> tl.exercises.check_crossed_em_step(3000.0)
    Not yet: you said 3000.00.
    Hint: E-step: the BLUPs of both factors at these variances and their conditional variances (diagonal of the joint inverse); M-step: the mean over the subject levels of b_hat^2 + Var(b | y).
    False
    """
    answer = _number(answer, "check_crossed_em_step")
    if factor not in ("subject", "item"):
        raise TeachLMMError(f"factor must be 'subject' or 'item'; got {factor!r}")
    d = _crossed()
    new = crossed_em_step_dense(d["rt"], d["subject"], d["item"], tau2_subject, tau2_item, sigma2)
    expected = new[0] if factor == "subject" else new[1]
    hint = (f"E-step: the BLUPs of both factors at these variances and their conditional variances (diagonal "
            f"of the joint inverse); M-step: the mean over the {factor} levels of b_hat^2 + Var(b | y).")
    stronger = ("build Z = [Z_subject, Z_item] and solve the mixed-model equations with the penalty "
                "sigma2 / tau2 on each block; Var(b | y) = sigma2 times the diagonal of the inverse of the b-block "
                "of their matrix (beta given); average b_hat^2 + Var over the levels of the factor")
    return _verdict(abs(answer - expected) <= tol * abs(expected), f"the new {factor} variance", expected,
                    answer, hint, stronger, ("crossed_em_step", factor), digits=2)
