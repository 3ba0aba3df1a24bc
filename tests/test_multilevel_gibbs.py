"""The Gibbs sampler for several grouping factors (teachlmm.multilevel_gibbs).

References, none computed by the code under test:

* the joint draw of (beta, b_1..b_K) is a linear map of its normals; its mean and covariance
  equal the Gaussian full conditional written densely from [X Z] and the G_k^-1 (numpy inverse);
* the factorwise update's conditional means leave the joint conditional mean fixed (a Gauss-Seidel
  fixed point), and it samples the same posterior;
* JAGS 4.3.1 (tests/reference/multi_factor_jags.R, committed JSON) on Pastes (nested) and Penicillin
  (crossed) under the same proper prior: posterior means within 4 Monte Carlo standard errors;
* REML (tl.multilevel.fit, itself checked against lme4) and the known truth on a large simulated
  crossed design.
"""
import inspect
import json
import pathlib
import warnings

import numpy as np
import pytest
import scipy.stats

import teachlmm as tl
from teachlmm import diagnostics
from teachlmm import multilevel_gibbs as mg
from teachlmm.multilevel import MultilevelModel

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE / "reference" / "data"


@pytest.fixture(scope="module")
def penicillin():
    return MultilevelModel("diameter ~ 1 + (1 | plate) + (1 | sample)", tl.read_csv(DATA / "penicillin.csv"))


@pytest.fixture(scope="module")
def pastes():
    return MultilevelModel("strength ~ 1 + (1 | batch/cask)", tl.read_csv(DATA / "pastes.csv"))


@pytest.fixture(scope="module")
def pixel():
    """Nested, with a random slope at the outer level (q = 2): the general (sparse) path."""
    return MultilevelModel("pixel ~ day + day2 + (1 + day | Dog) + (1 | Dog:Side)", tl.read_csv(DATA / "pixel.csv"))


def _flat(beta, bs):
    return np.concatenate([beta] + [b.ravel() for b in bs])


def dense_conditional(model, Gs, sigma2, tau2):
    """Mean and covariance of (beta, b_1, ..., b_K) | G, sigma2, y written out densely (small models only)."""
    C = np.hstack([model.X] + [t.sparse().toarray() for t in model.terms])
    prec = C.T @ C / sigma2
    prec[:model.p, :model.p] += np.diag(np.broadcast_to(1 / np.asarray(tau2, float), (model.p,)))
    i = model.p
    for t, G in zip(model.terms, Gs):
        k = t.J * t.q
        prec[i:i + k, i:i + k] += np.kron(np.eye(t.J), np.linalg.inv(G))
        i += k
    cov = np.linalg.inv(prec)
    return cov @ C.T @ model.y / sigma2, cov


def joint_map(model, Gs, sigma2, tau2, scalar=None):
    """draw_joint's mean (z = 0) and covariance K K' (K: its columns for unit z)."""
    xp = mg.CrossProducts(model)
    if scalar is not None:
        xp.scalar = scalar
    Ts = mg.relative_factors(Gs, sigma2)
    inv = 1 / np.asarray(tau2, float)
    nz = model.p + sum(t.J * t.q for t in model.terms)
    x0 = _flat(*mg.draw_joint(xp, Ts, sigma2, inv, np.zeros(nz)))
    K = np.stack([_flat(*mg.draw_joint(xp, Ts, sigma2, inv, e)) - x0 for e in np.eye(nz)], axis=1)
    return x0, K @ K.T


CASES = {
    "penicillin": ([[[0.7]], [[3.0]]], 0.3, 100.0),
    "pastes": ([[[8.0]], [[1.5]]], 0.7, np.inf),
    "pixel": ([[[20.0]], [[300.0, -10.0], [-10.0, 4.0]]], 80.0, np.array([1e4, 1e3, 1e2])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_joint_draw_has_the_dense_full_conditional(name, request):
    model = request.getfixturevalue(name)
    Gs, sigma2, tau2 = CASES[name]
    Gs = [np.array(G) for G in Gs]
    mean, cov = dense_conditional(model, Gs, sigma2, tau2)
    paths = [True, False] if all(t.q == 1 for t in model.terms) else [None]
    for scalar in paths:                                     # the bincount path and the sparse path
        x0, V = joint_map(model, Gs, sigma2, tau2, scalar)
        assert np.abs(x0 - mean).max() <= 1e-9 * np.abs(mean).max()
        assert np.abs(V - cov).max() <= 1e-9 * np.abs(cov).max()


@pytest.mark.parametrize("name", ["penicillin", "pixel"])
def test_factorwise_conditional_means_fix_the_joint_mean(name, request):
    """With z = 0 each factorwise conditional returns its conditional mean; started at the joint
    conditional mean (where every conditional mean agrees with it), one sweep stays there."""
    model = request.getfixturevalue(name)
    Gs, sigma2, tau2 = CASES[name]
    Gs = [np.array(G) for G in Gs]
    mean, _ = dense_conditional(model, Gs, sigma2, tau2)
    xp = mg.CrossProducts(model)
    beta, bs, i = mean[:model.p], [], model.p
    for t in model.terms:
        bs.append(mean[i:i + t.J * t.q].reshape(t.J, t.q))
        i += t.J * t.q
    nz = mean.size
    out = _flat(*mg.draw_factorwise(xp, mg.relative_factors(Gs, sigma2), sigma2, 1 / np.asarray(tau2, float),
                                    beta, bs, np.zeros(nz)))
    assert np.abs(out - mean).max() <= 1e-9 * np.abs(mean).max()


def test_inverse_wishart_draws_match_scipy():
    """G | b under an inverse-Wishart prior: compare with scipy's invwishart (KS on two entries)."""
    rng = np.random.default_rng(5)
    b = rng.normal(size=(1, 12, 2)) * [1.0, 0.5]
    tp = mg.TermPrior("g", 2, nu0=4.0, S0=np.array([[1.0, 0.2], [0.2, 0.5]]))
    rngs = tuple(np.random.default_rng(s) for s in range(4000))
    G = mg.draw_G(np.repeat(b, 4000, 0), None, tp, rngs)
    ref = scipy.stats.invwishart(df=4 + 12, scale=tp.S0 + b[0].T @ b[0]).rvs(4000, random_state=1)
    for i, j in [(0, 0), (1, 0), (1, 1)]:
        assert scipy.stats.ks_2samp(G[:, i, j], ref[:, i, j]).pvalue > 1e-3


def test_seeds_reproduce_and_chains_do_not_depend_on_their_number(penicillin):
    kw = dict(draws=30, warmup=5, seed=11, check=False)
    a = mg.sample(penicillin, chains=2, **kw)
    b = mg.sample(penicillin, chains=2, **kw)
    c = mg.sample(penicillin, chains=3, **kw)
    assert np.array_equal(a.draws["sigma2"], b.draws["sigma2"])
    assert np.array_equal(a.draws["G"]["plate"], c.draws["G"]["plate"][:2])
    assert not np.array_equal(a.draws["sigma2"][0], a.draws["sigma2"][1])
    s = mg.init(penicillin, seed=11, chains=2)
    for _ in range(6):
        s = mg.step(s)
    assert np.array_equal(s.sigma2, a.draws["sigma2"][:, 0])          # sample = init + step


def test_names_get_summary_and_one_warning(pastes):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = mg.sample(pastes, draws=60, warmup=10, chains=2, seed=1)
        text = post.summary()
    assert sum(issubclass(w.category, tl.ConvergenceWarning) for w in caught) == 1
    assert post.names() == ["(Intercept)", "G[cask:batch]", "G[batch]", "sigma2"]
    assert "groups: cask:batch, 30; batch, 10" in text and "Var cask:batch (Intercept)" in text
    assert "Warning:" in text
    assert np.array_equal(post.get("G[batch]"), post.get("G[batch][0,0]"))
    assert np.allclose(post.get("sd[batch]") ** 2, post.get("G[batch]"))
    assert np.array_equal(post.get("beta[0]"), post.get("(Intercept)"))
    assert post.get("sigma2").shape == (2, 60)
    row = post.table()["sigma2"]
    x = post.get("sigma2")
    assert row["mean"] == pytest.approx(x.mean()) and row["ess_bulk"] == pytest.approx(diagnostics.ess_bulk(x))
    with pytest.raises(tl.TeachLMMError, match="unknown parameter"):
        post.get("G[plate]")


@pytest.mark.parametrize("entry", ["tl.gibbs.sample", "tl.multilevel_gibbs.sample"])
def test_convergence_warning_points_at_the_callers_line(pastes, entry):
    """Reached directly or through tl.gibbs.sample's dispatch, the warning names this file, not teachlmm's."""
    run = tl.gibbs.sample if entry == "tl.gibbs.sample" else tl.multilevel_gibbs.sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1                    # the next line's number
        run(pastes, draws=20, warmup=0, chains=2, seed=1)
    found = [w for w in caught if issubclass(w.category, tl.ConvergenceWarning)]
    assert len(found) == 1
    assert (pathlib.Path(found[0].filename).resolve(), found[0].lineno) == (pathlib.Path(__file__).resolve(), line)


def test_q2_names(pixel):
    post = mg.sample(pixel, draws=20, warmup=5, chains=1, seed=1, check=False, keep_b=True)
    assert post.names() == ["(Intercept)", "day", "day2", "G[Dog:Side]", "G[Dog][0,0]", "G[Dog][1,0]",
                            "G[Dog][1,1]", "sigma2"]
    assert post.draws["b"]["Dog"].shape == (1, 20, 10, 2)
    assert np.array_equal(post.get("G[Dog][0,1]"), post.get("G[Dog][1,0]"))


def test_prior_per_term_and_residual(pastes):
    p = mg.resolve_prior(pastes, {"batch": tl.gibbs.Prior(nu0=3, S0=[[2.0]]),
                                  "Residual": {"a0": 1, "b0": 2, "tau2": 1e4}})
    assert p.terms[1].nu0 == 3 and p.terms[1].S0[0, 0] == 2.0
    assert p.terms[0].is_huang_wand                                      # left out: the default
    assert (p.a0, p.b0, p.tau2, p.sigma_max) == (1.0, 2.0, 1e4, None)
    one = mg.resolve_prior(pastes, tl.gibbs.Prior(nu0=2, S0=[[1.0]], sigma_max=10))
    assert all(t.nu0 == 2 for t in one.terms) and one.sigma_max == 10
    default = mg.resolve_prior(pastes)
    assert all(t.is_huang_wand for t in default.terms) and default.a0 == default.b0 == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(chains=0), "chains"),
    (dict(draws=0), "draws"),
    (dict(update="gibbs"), "update must be one of"),
    (dict(prior={"batch": tl.gibbs.Prior(nu0=2, S0=[[1]]), "cask": {}}), "unknown prior key"),
    (dict(prior={"Residual": tl.gibbs.Prior(nu0=2, S0=[[1]])}), "belong to a term"),
    (dict(prior={"batch": tl.gibbs.Prior(nu0=2, S0=[[1]], a0=1, b0=1)}), "put them under the key 'Residual'"),
    (dict(prior={"batch": {"nu": 3}}), "keywords are"),
    (dict(prior=tl.gibbs.Prior(nu0=2, S0=np.eye(2))), "has shape"),
    (dict(prior=tl.gibbs.Prior(nu0=-0.5, S0=[[1]])), "improper"),
    (dict(prior=tl.gibbs.Prior(tau2=[1.0, 2.0])), "tau2 has 2 entries"),
    (dict(prior="flat"), "must be a teachlmm.gibbs.Prior"),
])
def test_bad_input_is_refused_clearly(pastes, kwargs, match):
    args = dict(draws=10, warmup=0, chains=1, seed=1, check=False)
    args.update(kwargs)
    with pytest.raises(tl.TeachLMMError, match=match):
        mg.sample(pastes, **args)


def test_bad_model_and_start_values(pastes):
    with pytest.raises(tl.TeachLMMError, match="MultilevelModel"):
        mg.sample(tl.Model("log_radon ~ floor + (1 | county)", tl.load_radon()), draws=10)
    with pytest.raises(tl.TeachLMMError, match="positive definite"):
        mg.init(pastes, G={"batch": [[-1.0]]})
    with pytest.raises(tl.TeachLMMError, match="keyed by term names"):
        mg.init(pastes, G={"plate": [[1.0]]})


# ----------------------------------------------------------------------------
# against JAGS (long runs; the JAGS side is committed)
# ----------------------------------------------------------------------------

JAGS = json.loads((HERE / "reference" / "multi_factor_jags.json").read_text())


def jags_prior(model):
    """The JSON's prior: beta ~ N(0, 1e4), every G_k ~ InvGamma(1, 1) = InvWishart(2, 2), sigma2 ~ InvGamma(1, 1)."""
    pr = JAGS["prior"]
    spec = {name: tl.gibbs.Prior(nu0=2 * pr["G_shape"], S0=[[2 * pr["G_rate"]]]) for name in model.names}
    spec["Residual"] = tl.gibbs.Prior(a0=pr["sigma2_shape"], b0=pr["sigma2_rate"], tau2=pr["tau2"])
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("name, key", [("pastes", "pastes_nested"), ("penicillin", "penicillin_crossed")])
def test_posterior_means_agree_with_jags(name, key, request):
    model = request.getfixturevalue(name)
    ref = JAGS["models"][key]
    assert ref["formula"] == model.formula.text
    post = mg.sample(model, draws=10000, warmup=1000, chains=4, seed=2020, prior=jags_prior(model))
    report, worst = [], 0.0
    for param, r in ref["posterior"].items():
        x = post.get(param)
        mcse = diagnostics.mcse_mean(x)
        z = abs(x.mean() - r["mean"]) / np.hypot(mcse, r["mcse"])
        worst = max(worst, z)
        report.append(f"{param}: teachlmm {x.mean():.5g} (MCSE {mcse:.2g}) JAGS {r['mean']:.5g} "
                      f"(MCSE {r['mcse']:.2g}) |diff|/MCSE {z:.2f}")
        assert r["rhat"] < 1.01
    assert worst < 4, "\n".join(report)


# ----------------------------------------------------------------------------
# a large simulated crossed design: posterior means near REML and the truth
# ----------------------------------------------------------------------------

def simulate_crossed(rng, J1=80, J2=40, keep=0.6, truth=None):
    """y = 1 + 0.5 x + a_i + c_j + e over a partly observed J1 x J2 grid (each cell kept with prob ``keep``)."""
    truth = truth or dict(beta=np.array([1.0, 0.5]), G1=1.0, G2=0.5, sigma2=1.0)
    i, j = np.meshgrid(np.arange(J1), np.arange(J2), indexing="ij")
    kept = rng.random(i.shape) < keep
    i, j = i[kept], j[kept]
    x = rng.normal(size=i.size)
    a = rng.normal(size=J1) * np.sqrt(truth["G1"])
    c = rng.normal(size=J2) * np.sqrt(truth["G2"])
    y = truth["beta"][0] + truth["beta"][1] * x + a[i] + c[j] + rng.normal(size=i.size) * np.sqrt(truth["sigma2"])
    return {"y": y, "x": x, "row": np.array([f"r{k:03d}" for k in i]), "col": np.array([f"c{k:03d}" for k in j])}, truth


@pytest.mark.slow
def test_long_run_is_near_reml_and_the_truth_on_a_large_crossed_design():
    data, truth = simulate_crossed(np.random.default_rng(42))
    formula = "y ~ x + (1 | row) + (1 | col)"
    model = MultilevelModel(formula, data)
    reml = tl.multilevel.fit(formula, data)
    post = mg.sample(model, draws=2500, warmup=500, chains=4, seed=7)          # the default prior
    pairs = [("(Intercept)", reml.fixef["(Intercept)"], truth["beta"][0]), ("x", reml.fixef["x"], truth["beta"][1]),
             ("G[row]", reml.Gs["row"][0, 0], truth["G1"]), ("G[col]", reml.Gs["col"][0, 0], truth["G2"]),
             ("sigma2", reml.sigma2, truth["sigma2"])]
    for name, est, true in pairs:
        x = post.get(name)
        sd, mcse = x.std(), diagnostics.mcse_mean(x)
        assert abs(x.mean() - est) < 0.25 * sd + 4 * mcse, (name, x.mean(), est, sd)    # O(1/J) apart
        assert abs(x.mean() - true) < 3 * sd, (name, x.mean(), true, sd)


def test_sigma2_under_a_uniform_prior_on_sigma_is_the_truncated_inverse_gamma():
    """sigma ~ U(0, 1.2) with SSR large enough that the bound binds: compare with scipy's truncated law."""
    prior = mg.MultilevelPrior((), np.inf, 0.0, 0.0, 1.2)
    n, ssr = 20, 30.0
    rngs = tuple(np.random.default_rng(s) for s in range(3000))
    s2 = mg.draw_sigma2(np.full(3000, ssr), n, prior, rngs)
    assert s2.max() <= 1.2 ** 2
    law = scipy.stats.invgamma(a=(n - 1) / 2, scale=ssr / 2)               # before truncation at 1.44
    cdf = lambda x: law.cdf(x) / law.cdf(1.2 ** 2)                          # noqa: E731
    assert scipy.stats.kstest(s2, cdf).pvalue > 1e-3


def test_too_large_a_schur_complement_is_refused(pastes, monkeypatch):
    monkeypatch.setattr(mg, "MAX_SCHUR_BYTES", 100)
    with pytest.raises(tl.DesignError, match="sparse Cholesky"):
        mg.init(pastes)
