"""Prediction intervals (fit.predict(interval=)) and posterior predictive draws (post.predict).

The interval algebra is checked against Henderson's mixed-model equations
written out densely on a small data set (an independent computation of
sigma2 C^-1), and the intervals' coverage is measured by simulation from a
known truth: each replication draws new random effects and new noise.
"""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm.intervals import with_response

BETA = np.array([1.0, -0.5])
G_TRUE = np.array([[0.4, 0.1], [0.1, 0.2]])
S2_TRUE = 0.5


def design(n_groups, n_per, seed):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), n_per)
    x = rng.normal(size=g.size)
    return {"y": rng.normal(size=g.size), "x": x, "g": g}       # y: a placeholder, replaced per replication


def draw_response(data, rng):
    """y = X beta + Z b_j + eps with new b ~ N(0, G) and eps ~ N(0, sigma2)."""
    J = data["g"].max() + 1
    b = rng.multivariate_normal(np.zeros(2), G_TRUE, size=J)
    mean = BETA[0] + BETA[1] * data["x"] + b[data["g"], 0] + b[data["g"], 1] * data["x"]
    return mean + np.sqrt(S2_TRUE) * rng.standard_normal(mean.size), b


def test_error_variance_equals_dense_henderson_inverse():
    data = design(5, 4, seed=1)
    data["y"], _ = draw_response(data, np.random.default_rng(2))
    model = tl.Model("y ~ x + (1 + x | g)", data)
    fit = tl.blup.fit(model, G_TRUE, S2_TRUE)
    # Henderson's MME, dense: C = [[X'X, X'Z], [Z'X, Z'Z + sigma2 (I_J kron G^-1)]]
    n, J = len(data["y"]), 5
    X = np.column_stack([np.ones(n), data["x"]])
    Z = np.zeros((n, 2 * J))
    for i, j in enumerate(data["g"]):
        Z[i, 2 * j:2 * j + 2] = [1.0, data["x"][i]]
    C = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + S2_TRUE * np.kron(np.eye(J), np.linalg.inv(G_TRUE))]])
    PEV = S2_TRUE * np.linalg.inv(C)                   # Var([beta_hat - beta; b_hat - b])
    new = {"x": np.array([0.3, -1.2, 2.0, 0.5]), "g": np.array([0, 3, 4, 99])}
    with pytest.warns(UserWarning, match="not in the fitted data"):
        p = fit.predict(new, interval="confidence")
    for i in range(3):                                 # rows of fitted groups
        j = new["g"][i]
        w = np.zeros(2 + 2 * J)
        w[:2] = [1.0, new["x"][i]]
        w[2 + 2 * j:4 + 2 * j] = [1.0, new["x"][i]]
        assert p.se[i] ** 2 == pytest.approx(w @ PEV @ w, rel=1e-10)
    x_new = np.array([1.0, new["x"][3]])               # unseen group: x'Var(beta_hat)x + z'Gz
    assert p.se[3] ** 2 == pytest.approx(x_new @ PEV[:2, :2] @ x_new + x_new @ G_TRUE @ x_new, rel=1e-10)
    with pytest.warns(UserWarning):
        q = fit.predict(new, interval="prediction", level=0.9)
    np.testing.assert_allclose(q.se ** 2, p.se ** 2 + S2_TRUE, rtol=1e-12)
    np.testing.assert_allclose(q.upper - q.fit, 1.6448536269514722 * q.se, rtol=1e-12)
    r = fit.predict({"x": [0.3], "g": [0]}, re=False, interval="confidence")
    assert r.se[0] ** 2 == pytest.approx(x_new[:1] @ [0] + np.array([1, 0.3]) @ fit.vcov @ [1, 0.3], rel=1e-10)


def coverage(fitter, n_groups, n_per, n_rep, seed):
    """Share of replications whose 95% intervals cover the truth, for a fitted and an unseen group."""
    data = design(n_groups, n_per, seed)
    model = tl.Model("y ~ x + (1 + x | g)", data)
    rng = np.random.default_rng(seed + 1)
    new = {"x": np.array([0.7, -0.4]), "g": np.array([0, n_groups + 5])}    # a fitted and a new group
    hits_conf, hits_pred = np.zeros(2), np.zeros(2)
    import warnings
    for _ in range(n_rep):
        y, b = draw_response(data, rng)
        fit = fitter(with_response(model, y))
        b_new = np.vstack([b[0], rng.multivariate_normal(np.zeros(2), G_TRUE)])
        mean = BETA[0] + BETA[1] * new["x"] + b_new[:, 0] + b_new[:, 1] * new["x"]   # true conditional means
        y_new = mean + np.sqrt(S2_TRUE) * rng.standard_normal(2)                   # new observations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = fit.predict(new, interval="confidence")
            p = fit.predict(new, interval="prediction")
        hits_conf += (c.lower <= mean) & (mean <= c.upper)
        hits_pred += (p.lower <= y_new) & (y_new <= p.upper)
    return hits_conf / n_rep, hits_pred / n_rep


def test_intervals_at_the_true_variance_components_cover_95_percent():
    conf, pred = coverage(lambda m: tl.blup.fit(m, G_TRUE, S2_TRUE), n_groups=6, n_per=4, n_rep=2000, seed=10)
    assert np.all(np.abs(conf - 0.95) <= 0.02), conf
    assert np.all(np.abs(pred - 0.95) <= 0.02), pred


@pytest.mark.slow
def test_intervals_at_reml_estimates_cover_95_percent():
    """Conditional on REML estimates (their uncertainty is not in the intervals): enough groups that it is small."""
    import warnings

    def fitter(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tl.em.fit(m)
    conf, pred = coverage(fitter, n_groups=40, n_per=6, n_rep=2000, seed=20)
    assert np.all(np.abs(conf - 0.95) <= 0.02), conf
    assert np.all(np.abs(pred - 0.95) <= 0.02), pred


def test_bad_interval_arguments():
    fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()))
    with pytest.raises(tl.TeachLMMError, match="confidence"):
        fit.predict({"floor": [0.0], "county": [1]}, interval="credible")
    with pytest.raises(tl.TeachLMMError):
        fit.predict({"floor": [0.0], "county": [1]}, interval="confidence", level=95)
    out = fit.predict({"floor": [0.0, 1.0], "county": [1, 1]}, interval="prediction")
    assert "prediction intervals" in repr(out) and "<table>" in out._repr_html_()
    np.testing.assert_array_equal(np.asarray(out)[:, 0], fit.predict({"floor": [0.0, 1.0], "county": [1, 1]}))


def test_posterior_predictive_draws():
    data = design(8, 6, seed=3)
    data["y"], _ = draw_response(data, np.random.default_rng(4))
    model = tl.Model("y ~ x + (1 + x | g)", data)
    post = tl.gibbs.sample(model, draws=400, warmup=200, chains=2, seed=5)
    new = {"x": np.array([0.5, 0.5, 0.5]), "g": np.array([1, 50, 50])}
    y = post.predict(new, seed=6)
    assert y.shape == (2, 400, 3)
    np.testing.assert_array_equal(y, post.predict(new, seed=6))
    d = post.draws
    # the mean of the draws for group 1: the posterior mean of x'beta + z'b_1, within Monte Carlo error
    mu = d["beta"][..., 0] + 0.5 * d["beta"][..., 1] + d["b"][:, :, 1, 0] + 0.5 * d["b"][:, :, 1, 1]
    assert abs(y[..., 0].mean() - mu.mean()) < 4 * np.sqrt(d["sigma2"].mean() / y[..., 0].size) + 0.02
    # variance of a draw: Var(mu) + E(sigma2) for the fitted group; an unseen group adds z'Gz
    assert y[..., 0].var() == pytest.approx(mu.var() + d["sigma2"].mean(), rel=0.15)
    zGz = d["G"][..., 0, 0] + 0.5 * (d["G"][..., 0, 1] + d["G"][..., 1, 0]) + 0.25 * d["G"][..., 1, 1]
    assert y[..., 1].var() > y[..., 0].var()
    assert y[..., 1].var() == pytest.approx(
        (d["beta"][..., 0] + 0.5 * d["beta"][..., 1]).var() + d["sigma2"].mean() + zGz.mean(), rel=0.2)
    # rows of the same new group share its random effects: their difference is noise only
    assert (y[..., 1] - y[..., 2]).var() == pytest.approx(2 * d["sigma2"].mean(), rel=0.15)
