"""Gibbs sampling speed on radon M3: teachlmm's sampler vs nutpie's NUTS on a PyMC model, in effective draws per CPU second.

The protocol is that of ``shared/bench/jags_m3/`` (issue 15): radon M3, 4 chains x
5,000 draws after 1,000 warm-up (nutpie: 1,000 tuning steps), the minimum ArviZ bulk
ESS over beta[0], beta[1], G[0,0], G[0,1], G[1,1] and sigma2, divided by the CPU time
of the sampling call. Both tools run on one core: numpy with one BLAS thread
(threadpoolctl), nutpie with ``cores=1`` (one sampling thread; RAYON_NUM_THREADS=1).
nutpie's compile time (PyMC -> PyTensor -> numba, once per model) is excluded from its
runs and stated apart; teachlmm's ``Model`` build (once) is excluded likewise.

**The same prior in both**, that of ``bench_gibbs_jags.py``::

    beta ~ N(0, 10^4 I)         pm.Normal("beta", 0, sigma=100)
    sigma ~ Uniform(0, 100)     pm.Uniform("sigma", 0, 100)
    G ~ InvWishart(3, I)        the Bartlett decomposition below (not an LKJ prior)

PyMC has no inverse-Wishart for a covariance inside a model, and an LKJ prior on the
correlation with priors on the standard deviations is a different prior. The exact
inverse-Wishart is written through Bartlett's decomposition of the Wishart: if
S0 = R R' (Cholesky) and A is lower triangular with::

    A_kk^2 ~ chi-square(nu0 - k)   (k = 0, ..., q - 1)      A_kl ~ N(0, 1)   (k > l)

all independent, then A A' ~ Wishart(nu0, I), so (A A')^-1 ~ InvWishart(nu0, I) and

    G = R (A A')^-1 R' = M M'   with   M = R A^-T   (upper-triangular A^-T)

is InvWishart(nu0, S0) (the inverse-Wishart is closed under G -> R G R'). The random
effects are non-centred: b_j = M z_j with z_j ~ N(0, I), so b_j ~ N(0, G). The script
(and ``tests/test_bench_scripts.py``) checks this prior by forward sampling G from the
PyMC model and comparing each entry with ``scipy.stats.invwishart`` (two-sample
Kolmogorov-Smirnov).

teachlmm runs ``tl.gibbs.sample(model, prior=tl.gibbs.Prior(nu0=3, S0=I, tau2=1e4,
sigma_max=100), keep_b=False)`` in named variants (``_report.VARIANTS``; ``--engines``
chooses, default fast and collapsed): ``fast``, the default sweep; ``collapsed``,
``engine="collapsed"`` (independence Metropolis-Hastings on the marginal posterior of
(G, sigma2), beta and b drawn exactly given them), skipped with a note while the
installed teachlmm refuses that engine; ``textbook`` and ``centred`` (see
``bench_gibbs_jags.py``) by name. When JAGS and ``shared/bench/jags_m3/`` are there,
JAGS runs too, exactly as in ``bench_gibbs_jags.py`` (``_jags.run_radon_m3``, CPU time
of the ``jags`` process), so every tool gets a ratio to nutpie and to JAGS from one
process (``--no-jags`` leaves it out). The runs alternate (nutpie, JAGS, fast,
collapsed, nutpie, ...) after an untimed warm-up of each; the summary is the median
over the repeats. Besides ESS per second, the bulk ESS per draw of every quantity
(ESS / 20,000), which does not depend on the machine's load. As a correctness check of
the samplers, the posterior means of the six quantities (draws of all repeats pooled)
of every tool must agree with nutpie's within 4 combined Monte Carlo standard errors,
|m_1 - m_2| / sqrt(MCSE_1^2 + MCSE_2^2) <= 4.

    python tests/benchmarks/bench_gibbs_nutpie.py [--quick] [--repeats N] [--engines fast,collapsed]
                                                  [--no-jags] [--json OUT]

Needs ``pip install nutpie pymc arviz threadpoolctl`` (the ``bench`` extra; pymc and
nutpie need Python >= 3.11). Writes
``tests/benchmarks/results/gibbs_nutpie.json`` (and OUT, if given).
"""
import argparse
import datetime
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _jags  # noqa: E402
import _report as rep  # noqa: E402

RESULTS = os.path.join(HERE, "results", "gibbs_nutpie.json")
M3 = "log_radon ~ 1 + floor + (1 + floor | county)"
CHAINS, DRAWS, WARMUP = 4, 5000, 1000
QUANTITIES = ["beta[0]", "beta[1]", "G[0,0]", "G[0,1]", "G[1,1]", "sigma2"]
NU0, TAU2, SIGMA_MAX = 3, 1e4, 100.0
VARIANTS = ("fast", "collapsed")                     # the teachlmm variants run by default


def missing_peer():
    """Why the benchmark cannot run here, or None."""
    for name, install in (("nutpie", "pip install nutpie"), ("pymc", "pip install pymc"),
                          ("arviz", "pip install arviz"), ("threadpoolctl", "pip install threadpoolctl")):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed ({install}, or pip install -e '.[bench]' on Python >= 3.11)"
    return None


def teachlmm_module():
    return rep.teachlmm_module()


def agreement(pooled_a, pooled_b):
    """Posterior means, MCSEs and |m_a - m_b| / sqrt(MCSE_a^2 + MCSE_b^2) per quantity (a: teachlmm, b: nutpie)."""
    return rep.agreement(pooled_a, pooled_b, QUANTITIES, "teachlmm", "nutpie")


# ----------------------------------------------------------------------------
# the PyMC model
# ----------------------------------------------------------------------------

def radon_arrays():
    """(y, x, group index 0..J-1) of radon M3, from the data teachlmm ships."""
    import numpy as np
    data = teachlmm_module().load_radon()
    group = np.unique(data["county"], return_inverse=True)[1]
    return np.asarray(data["log_radon"], float), np.asarray(data["floor"], float), group


def inverse_wishart_factor(nu0, S0):
    """PyMC variables whose M = R A^-T gives G = M M' ~ InvWishart(nu0, S0) exactly (q = 2).

    Bartlett: A = [[a00, 0], [a10, a11]] with a00^2 ~ chi2(nu0), a11^2 ~ chi2(nu0 - 1),
    a10 ~ N(0, 1); A A' ~ Wishart(nu0, I). With S0 = R R' (R lower triangular)::

        A^-T = [[1/a00, -a10/(a00 a11)], [0, 1/a11]]          M = R A^-T

    Call inside a ``pm.Model`` context; returns M as a 2 x 2 nested list of tensors.
    """
    import numpy as np
    import pymc as pm
    import pytensor.tensor as pt
    S0 = np.asarray(S0, float)
    if S0.shape != (2, 2):
        raise ValueError("this benchmark writes the Bartlett factor out for q = 2 only")
    R = np.linalg.cholesky(S0)
    a2 = pm.ChiSquared("bartlett_diag2", nu=np.array([nu0, nu0 - 1.0]), shape=2)   # a_kk^2
    a10 = pm.Normal("bartlett_offdiag", 0.0, 1.0)                                  # a_10
    a00, a11 = pt.sqrt(a2[0]), pt.sqrt(a2[1])
    U00, U01, U11 = 1 / a00, -a10 / (a00 * a11), 1 / a11                           # A^-T, upper
    return [[R[0, 0] * U00, R[0, 0] * U01],
            [R[1, 0] * U00, R[1, 0] * U01 + R[1, 1] * U11]]


def pymc_model(y, x, group, nu0=NU0, S0=None, tau2=TAU2, sigma_max=SIGMA_MAX):
    """Radon M3 in PyMC, non-centred, under the protocol's prior (see the module docstring).

    y_i ~ N(beta_0 + b_j0 + (beta_1 + b_j1) x_i, sigma^2),  b_j = M z_j,  z_j ~ N(0, I_2).
    G (its entries G[0,0], G[0,1], G[1,1]) and sigma2 are stored as deterministics.
    """
    import numpy as np
    import pymc as pm
    import pytensor.tensor as pt
    S0 = np.eye(2) if S0 is None else S0
    J = int(group.max()) + 1
    with pm.Model() as model:
        beta = pm.Normal("beta", 0.0, sigma=float(np.sqrt(tau2)), shape=2)
        sigma = pm.Uniform("sigma", 0.0, sigma_max)
        M = inverse_wishart_factor(nu0, S0)
        z = pm.Normal("z", 0.0, 1.0, shape=(J, 2))
        b0 = M[0][0] * z[:, 0] + M[0][1] * z[:, 1]                 # b_j = M z_j
        b1 = M[1][0] * z[:, 0] + M[1][1] * z[:, 1]
        mean = beta[0] + b0[group] + (beta[1] + b1[group]) * x
        pm.Normal("y", mean, sigma, observed=y)
        pm.Deterministic("G", pt.stack([M[0][0] ** 2 + M[0][1] ** 2,                    # G = M M'
                                        M[0][0] * M[1][0] + M[0][1] * M[1][1],
                                        M[1][0] ** 2 + M[1][1] ** 2]))
        pm.Deterministic("sigma2", sigma ** 2)
    return model


def prior_check(model, S0, nu0=NU0, draws=4000, seed=0):
    """Forward draws of G from the PyMC model vs scipy.stats.invwishart: KS p-value per entry."""
    import numpy as np
    import pymc as pm
    from scipy import stats
    ours = pm.draw(model["G"], draws=draws, random_seed=seed)                # (draws, 3)
    ref = stats.invwishart(df=nu0, scale=np.asarray(S0, float)).rvs(draws, random_state=seed + 1)
    ref = np.stack([ref[:, 0, 0], ref[:, 0, 1], ref[:, 1, 1]], axis=1)
    return {name: float(stats.ks_2samp(ours[:, k], ref[:, k]).pvalue)
            for k, name in enumerate(["G[0,0]", "G[0,1]", "G[1,1]"])}


def nutpie_draws(trace):
    """The six quantities from a nutpie trace, each (chains, draws)."""
    post = trace.posterior
    G, beta = post["G"].values, post["beta"].values
    return {"beta[0]": beta[..., 0], "beta[1]": beta[..., 1], "G[0,0]": G[..., 0], "G[0,1]": G[..., 1],
            "G[1,1]": G[..., 2], "sigma2": post["sigma2"].values}


# ----------------------------------------------------------------------------
# the tools, each timed the same way
# ----------------------------------------------------------------------------

def run_nutpie(compiled, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS):
    """One timed nutpie.sample call (one core); its summary and the draws of the six quantities."""
    import nutpie
    start, cpu = time.perf_counter(), time.process_time()
    trace = nutpie.sample(compiled, draws=draws, tune=warmup, chains=chains, cores=1, seed=seed,
                          progress_bar=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    found = nutpie_draws(trace)
    out = rep.summarise(found, cpu, wall, QUANTITIES)
    out["divergences"] = int(trace.sample_stats["diverging"].values.sum())
    return out, found


def run_jags(seed=None):
    """One JAGS run of radon M3 under the protocol of bench_gibbs_jags.py (its own seeds)."""
    found, cpu, wall = _jags.run_radon_m3()
    return rep.summarise(found, cpu, wall, QUANTITIES), found


def protocol_prior(tl):
    import numpy as np
    return tl.gibbs.Prior(nu0=NU0, S0=np.eye(2), tau2=TAU2, sigma_max=SIGMA_MAX)


def run_teachlmm(model, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS, variant="fast"):
    """One timed tl.gibbs.sample call of ``variant``; its summary and the draws of the six quantities."""
    tl = teachlmm_module()
    return rep.run_variant(tl, model, variant, protocol_prior(tl), QUANTITIES, seed, draws, warmup, chains)


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def run(repeats, variants=VARIANTS, with_jags=True):
    import numpy as np
    import nutpie
    tl = teachlmm_module()
    y, x, group = radon_arrays()
    prior_p = prior_check(pymc_model(y, x, group), np.eye(2))
    model = pymc_model(y, x, group)
    start, cpu = time.perf_counter(), time.process_time()
    compiled = nutpie.compile_pymc_model(model)                   # numba backend (nutpie's default)
    compile_seconds, compile_cpu = time.perf_counter() - start, time.process_time() - cpu
    ours_model = tl.Model(M3, tl.load_radon())
    run_nutpie(compiled, seed=0, draws=200, warmup=200)           # warm-ups, not counted
    peers = {"nutpie": lambda seed: run_nutpie(compiled, seed)}
    if with_jags:
        run_jags()
        peers["jags"] = run_jags
    arms, skipped = rep.teachlmm_arms(tl, ours_model, variants, protocol_prior(tl), QUANTITIES, DRAWS, WARMUP,
                                      CHAINS, warm=(200, 200))
    runs, pooled, load = rep.alternate({**peers, **arms}, repeats, QUANTITIES)
    nut = rep.tool_record(runs["nutpie"], pooled["nutpie"], QUANTITIES, "nutpie " + version("nutpie"))
    nut.update(compile_seconds=compile_seconds, compile_cpu_seconds=compile_cpu)
    records = {"nutpie": nut}
    if with_jags:
        jags = rep.tool_record(runs["jags"], pooled["jags"], QUANTITIES, f"JAGS {_jags.version() or ''}".strip())
        records["jags"] = rep.compare(jags, nut, "nutpie", QUANTITIES)
        rep.compare(nut, jags, "jags", QUANTITIES)
    for name in arms:
        record = rep.tool_record(runs[name], pooled[name], QUANTITIES, rep.VARIANTS[name][0])
        for peer in peers:
            rep.compare(record, records[peer], peer, QUANTITIES)
        records[name] = record
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": rep.machine(packages=("nutpie", "pymc", "pytensor", "arviz"), jags=with_jags),
        "protocol": f"radon M3; {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; CPU time of the sampling "
                    "call (JAGS: of the jags process), one core (numpy 1 BLAS thread, nutpie cores=1); min ArviZ "
                    "bulk ESS over " + ", ".join(QUANTITIES),
        "prior": "G ~ InvWishart(3, I) (PyMC: Bartlett decomposition); beta ~ N(0, 1e4 I); sigma ~ Uniform(0, 100)",
        "prior_check_ks_pvalues": prior_p,
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "engines": list(variants),
        "skipped_variants": skipped,
        "variant_notes": {name: rep.VARIANT_NOTES[name] for name in arms},
        "nutpie": nut,
        "variants": {name: records[name] for name in arms},
    }
    if with_jags:
        out["jags"] = records["jags"]
    return rep.legacy_layout(out, {**records, "nutpie": nut}, pooled, "nutpie", QUANTITIES, arms)


def version(name):
    from importlib.metadata import version as installed
    return installed(name)


def tables(result):
    """(title, header, rows, notes) for run_all.py's report (results saved before the variants too)."""
    peers = ["nutpie"] + (["jags"] if "jags" in result else [])
    if "variants" in result:
        records = {p: result[p] for p in peers}
        records.update(result["variants"])
    else:
        records = rep.old_records(result, ["nutpie"], QUANTITIES)
    records["nutpie"]["label"] = f"nutpie {result['machine']['nutpie']} (PyMC {result['machine']['pymc']})"
    n = result["nutpie"]
    load = result["load_avg_1min_before_after"]
    divergences = [r.get("divergences", 0) for r in n["runs"]]
    notes = [result["protocol"], "prior: " + result["prior"],
             "prior check, KS p-values of G's entries (PyMC forward draws vs scipy.stats.invwishart): " +
             ", ".join(f"{k} {v:.2f}" for k, v in result["prior_check_ks_pvalues"].items()),
             f"median of {result['repeats']} alternating runs; nutpie compile time (excluded): "
             f"{n['compile_seconds']:.1f} s wall, {n['compile_cpu_seconds']:.1f} s CPU; nutpie divergences per run: "
             + ", ".join(str(d) for d in divergences)]
    notes += [f"{name}: {why}" for name, why in result.get("variant_notes", {}).items()]
    notes += [f"skipped {name}: {why}" for name, why in result.get("skipped_variants", {}).items()]
    notes.append(f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
                 f"on {result['machine']['cores']} cores (shared: the ratio, side by side, is what counts)")
    header = ["tool", "min bulk ESS", "CPU seconds", "min ESS / CPU s", "ratio to nutpie"]
    header += ["ratio to JAGS"] if "jags" in peers else []
    main = ("Gibbs sampler vs NUTS (nutpie), radon M3: minimum bulk ESS per CPU second", header,
            rep.tool_rows(records, peers), notes)
    return [main] + [(f"radon M3 (nutpie script), {title}", head, rows, notes_)
                     for title, head, rows, notes_ in rep.quantity_tables(records, QUANTITIES, peers)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of five")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--engines", default=None,
                        help=f"teachlmm variants to run, a comma list of {', '.join(rep.VARIANTS)} "
                             f"(default: {','.join(VARIANTS)}; one teachlmm refuses is skipped with a note)")
    parser.add_argument("--no-jags", action="store_true", help="leave JAGS out (default: run it when installed)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    variants = rep.parse_engines(args.engines, VARIANTS)
    why = missing_peer()
    if why:
        return rep.skip(why, args.json)                       # run_all.py reports the reason
    with_jags = not args.no_jags
    if with_jags and _jags.missing_radon_m3():
        print(f"note: JAGS left out: {_jags.missing_radon_m3()}")
        with_jags = False
    with rep.one_thread():                                      # one core for every tool
        result = run(args.repeats or (1 if args.quick else 5), variants, with_jags)
    rep.finish(result, tables, [RESULTS] + ([args.json] if args.json else []), width=12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
