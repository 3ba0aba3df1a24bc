"""The Gibbs benchmark scripts against nutpie and JAGS (issue 15): their model-building parts, on tiny settings.

No timings here (timings come only from running the scripts). Each test is skipped when
its peer (pymc, or Debian's jags) is not installed.
"""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks")


def load(name):
    spec = importlib.util.spec_from_file_location(f"_test_{name}", os.path.join(BENCH, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nutpie_bench():
    pytest.importorskip("pymc")
    pytest.importorskip("arviz")
    return load("bench_gibbs_nutpie")


@pytest.fixture(scope="module")
def sleep_bench():
    pytest.importorskip("arviz")
    return load("bench_gibbs_sleepstudy")


needs_jags = pytest.mark.skipif(shutil.which("jags") is None, reason="JAGS is not installed")


# ----------------------------------------------------------------------------
# nutpie on PyMC: the inverse-Wishart prior written by Bartlett's decomposition
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("S0", [np.eye(2), np.array([[2.0, 0.6], [0.6, 0.5]])])
def test_pymc_prior_on_G_is_the_inverse_wishart(nutpie_bench, S0):
    """Forward draws of G from the PyMC model vs scipy.stats.invwishart(3, S0), entry by entry (KS)."""
    y, x, group = nutpie_bench.radon_arrays()
    pvalues = nutpie_bench.prior_check(nutpie_bench.pymc_model(y, x, group, S0=S0), S0, nu0=3, seed=3)
    assert min(pvalues.values()) > 1e-3, pvalues


def test_pymc_prior_check_detects_a_wrong_degrees_of_freedom(nutpie_bench):
    """The same check rejects InvWishart(4, I) written in the model against the protocol's InvWishart(3, I)."""
    y, x, group = nutpie_bench.radon_arrays()
    pvalues = nutpie_bench.prior_check(nutpie_bench.pymc_model(y, x, group, nu0=4), np.eye(2), nu0=3, seed=3)
    assert min(pvalues.values()) < 1e-3, pvalues


def test_pymc_model_is_radon_m3(nutpie_bench):
    y, x, group = nutpie_bench.radon_arrays()
    model = nutpie_bench.pymc_model(y, x, group)
    assert (len(y), group.max() + 1) == (919, 85)
    assert model["y"].eval().shape == (919,)                    # observed response
    assert model["z"].type.shape == (85, 2)                      # non-centred effects, one row per county
    logp = model.compile_logp()(model.initial_point())
    assert np.isfinite(logp)


def test_teachlmm_run_and_mcse_agreement(nutpie_bench):
    """The teachlmm arm on tiny settings gives the six quantities; the agreement statistic flags a real shift."""
    tl = nutpie_bench.teachlmm_module()
    model = tl.Model(nutpie_bench.M3, tl.load_radon())
    summary, draws = nutpie_bench.run_teachlmm(model, seed=1, draws=60, warmup=20, chains=2)
    assert set(draws) == set(nutpie_bench.QUANTITIES)
    assert all(d.shape == (2, 60) and np.all(np.isfinite(d)) for d in draws.values())
    assert summary["min_ess"] > 0 and np.isfinite(summary["min_ess_per_cpu_second"])
    rng = np.random.default_rng(0)
    same = {q: [rng.normal(size=(4, 2000))] for q in nutpie_bench.QUANTITIES}
    other = {q: [rng.normal(size=(4, 2000))] for q in nutpie_bench.QUANTITIES}
    shifted = {q: [v[0] + 0.2] for q, v in other.items()}    # 0.2 = about 12 combined MCSEs (0.016 each)
    assert max(v["z"] for v in nutpie_bench.agreement(same, other).values()) < 4
    assert min(v["z"] for v in nutpie_bench.agreement(same, shifted).values()) > 4


# ----------------------------------------------------------------------------
# sleepstudy vs JAGS
# ----------------------------------------------------------------------------

def test_sleepstudy_prior_is_the_former_default(sleep_bench):
    """The explicit numbers equal var(y)/(10 mean(z_k^2)) and var(y)/2 computed here, and teachlmm's filled-in default."""
    tl = sleep_bench.teachlmm_module()
    data = sleep_bench.sleepstudy()
    numbers = sleep_bench.old_default_prior(data)
    v = np.var(data["Reaction"], ddof=1)
    assert len(data["Reaction"]) == 180 and len(np.unique(data["Subject"])) == 18
    np.testing.assert_allclose(np.diag(numbers["S0"]), [v / 10, v / (10 * np.mean(data["Days"] ** 2))], rtol=1e-12)
    assert numbers["S0"][0, 1] == 0 and numbers["b0"] == pytest.approx(v / 2, rel=1e-12)
    model = tl.Model(sleep_bench.FORMULA, data)
    assert sleep_bench.check_prior_matches_teachlmm(tl, model, numbers) < 1e-10
    described = sleep_bench.teachlmm_prior(tl, numbers).resolve(model).describe()
    assert "InvWishart(nu0 = 3" in described and "InvGamma(a0 = 0.5" in described


@needs_jags
def test_sleepstudy_jags_and_teachlmm_tiny_runs(sleep_bench):
    tl = sleep_bench.teachlmm_module()
    data = sleep_bench.sleepstudy()
    numbers = sleep_bench.old_default_prior(data)
    _, jags = sleep_bench.run_jags(data, numbers, seed=5, draws=40, warmup=20, chains=2)
    _, again = sleep_bench.run_jags(data, numbers, seed=5, draws=40, warmup=20, chains=2)
    _, ours = sleep_bench.run_teachlmm(tl.Model(sleep_bench.FORMULA, data), numbers, seed=5, draws=40,
                                       warmup=20, chains=2)
    for draws in (jags, ours):
        assert set(draws) == set(sleep_bench.QUANTITIES)
        assert all(d.shape == (2, 40) and np.all(np.isfinite(d)) for d in draws.values())
        assert np.all(draws["G[0,0]"] > 0) and np.all(draws["sigma2"] > 0)
    for q in sleep_bench.QUANTITIES:                    # the per-chain RNG seeds make JAGS reproducible
        np.testing.assert_array_equal(jags[q], again[q])
    # both sample Reaction's fixed effects near lme4's estimates (251.4, 10.47); a loose sanity bound
    for draws in (jags, ours):
        assert abs(draws["beta[0]"].mean() - 251.4) < 15 and abs(draws["beta[1]"].mean() - 10.47) < 5


# ----------------------------------------------------------------------------
# skipping cleanly when a peer is missing
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bench_gibbs_nutpie", "bench_gibbs_sleepstudy"])
def test_missing_peer_writes_a_skip_record(name, tmp_path, monkeypatch, capsys):
    module = load(name)
    monkeypatch.setattr(module, "missing_peer", lambda: "the peer is not installed")
    out = tmp_path / "out.json"
    assert module.main(["--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"skipped": "the peer is not installed"}
    assert "skipped: the peer is not installed" in capsys.readouterr().out


def test_run_all_reports_a_skipped_benchmark(tmp_path, monkeypatch):
    run_all = load("run_all")
    script = tmp_path / "fake_bench.py"
    script.write_text("import json, sys\n"
                      "print('skipped: no peer')\n"
                      "json.dump({'skipped': 'no peer'}, open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n")
    monkeypatch.setitem(run_all.BENCHMARKS, "fake", (str(script), "a benchmark whose peer is missing"))
    env = dict(os.environ)
    entry = run_all.run_benchmark("fake", quick=True, env=env, timeout=60)
    assert entry["skipped"].endswith("fake_bench.py: no peer") and "result" not in entry


def test_new_benchmarks_are_registered():
    run_all = load("run_all")
    assert run_all.BENCHMARKS["gibbs_nutpie"][0] == "bench_gibbs_nutpie.py"
    assert run_all.BENCHMARKS["gibbs_sleepstudy"][0] == "bench_gibbs_sleepstudy.py"
    assert all(os.path.exists(os.path.join(BENCH, run_all.BENCHMARKS[n][0]))
               for n in ("gibbs_nutpie", "gibbs_sleepstudy"))
