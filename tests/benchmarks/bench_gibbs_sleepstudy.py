"""Gibbs sampling speed on lme4's sleepstudy: teachlmm's sampler vs JAGS, in effective draws per CPU second.

Reaction ~ 1 + Days + (1 + Days | Subject): 180 rows, 18 subjects, the response on a
scale of about 300 -- a small data set, where a sweep's fixed cost (numpy call overhead)
matters most. The data are ``tests/reference/data/sleepstudy.csv`` (exported from lme4,
see ``tests/reference/README.md``).

**The prior** is teachlmm's former default (before issue 15) given explicitly, with
v = var(y) (n - 1 divisor) and m_k = mean(z_k^2), the mean square of random column k::

    G      ~ InvWishart(3, diag(v / (10 m_k)))     JAGS: Tau_G ~ dwish(S0, 3) on G^-1
    sigma2 ~ InvGamma(1/2, v/2)                     JAGS: tau ~ dgamma(0.5, v/2) on 1/sigma2
    beta   ~ N(0, 10^8 I)                           JAGS: dnorm(0, 1e-8) (a precision)

i.e. ``tl.gibbs.Prior(nu0=3, S0=diag(v / (10 m)), a0=0.5, b0=v/2, tau2=1e8)``. The former
default had a flat prior on beta; JAGS needs a proper one, so both get N(0, 10^8): a
standard deviation of 10^4 against posterior standard deviations below 10. The script
checks that S0 and b0 equal what ``Prior(nu0=3, a0=0.5).resolve(model)`` fills in.
The JAGS model is ``bench_gibbs_sleepstudy.bug`` beside this file, written like
``shared/bench/jags_m3/m3.bug`` (subject coefficients B_j ~ N(beta, G), no extra JAGS
modules).

**Protocol** (``shared/bench/jags_m3/``, issue 15): 4 chains x 5,000 draws after 1,000
warm-up; the minimum ArviZ bulk ESS over beta[0], beta[1], G[0,0], G[0,1], G[1,1] and
sigma2, divided by CPU time: for JAGS the CPU time of the whole ``jags`` process (read,
compile, sample, write; from ``getrusage(RUSAGE_CHILDREN)``), for teachlmm that of the
``tl.gibbs.sample(..., keep_b=False)`` call. One core each: JAGS is single-threaded,
numpy runs with one BLAS thread (threadpoolctl). Untimed warm-up of each tool, then the
runs alternate (JAGS, teachlmm, JAGS, ...); the summary is the median over the repeats.
Bulk ESS per draw (ESS / 20,000) is reported per quantity (it does not depend on the
machine's load). The posterior means of the six quantities (draws of all repeats pooled)
must agree within 4 combined Monte Carlo standard errors.

    python tests/benchmarks/bench_gibbs_sleepstudy.py [--quick] [--repeats N] [--json OUT]

Needs Debian's ``jags``, ``pip install arviz threadpoolctl``. Writes
``tests/benchmarks/results/gibbs_sleepstudy.json`` (and OUT, if given).
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results", "gibbs_sleepstudy.json")
CSV = os.path.join(ROOT, "tests", "reference", "data", "sleepstudy.csv")
BUG = os.path.join(HERE, "bench_gibbs_sleepstudy.bug")
FORMULA = "Reaction ~ 1 + Days + (1 + Days | Subject)"
CHAINS, DRAWS, WARMUP = 4, 5000, 1000
QUANTITIES = ["beta[0]", "beta[1]", "G[0,0]", "G[0,1]", "G[1,1]", "sigma2"]
JAGS_NAMES = ["beta[1]", "beta[2]", "G[1,1]", "G[1,2]", "G[2,2]", "sigma2"]
NU0, A0, TAU2 = 3, 0.5, 1e8


def missing_peer():
    """Why the benchmark cannot run here, or None."""
    if shutil.which("jags") is None:
        return "JAGS is not installed (apt-get install jags)"
    for name in ("arviz", "threadpoolctl"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install {name}, or pip install -e '.[bench]')"
    if not os.path.exists(CSV):
        return f"{CSV} is not there (see tests/reference/README.md)"
    return None


def teachlmm_module():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


# ----------------------------------------------------------------------------
# data and prior
# ----------------------------------------------------------------------------

def sleepstudy():
    """The data as a dict of columns (teachlmm's CSV reader)."""
    return teachlmm_module().data.read_csv(CSV)


def old_default_prior(data):
    """The former default prior's numbers for sleepstudy, computed from the data: (nu0, S0, a0, b0, tau2)."""
    import numpy as np
    y = np.asarray(data["Reaction"], float)
    Z = np.column_stack([np.ones_like(y), np.asarray(data["Days"], float)])
    v = float(np.var(y, ddof=1))                                     # v = var(y)
    m = (Z ** 2).mean(axis=0)                                        # m_k = mean(z_k^2)
    return {"nu0": float(NU0), "S0": np.diag(v / (10 * m)), "a0": A0, "b0": v / 2, "tau2": TAU2}


def teachlmm_prior(tl, numbers):
    return tl.gibbs.Prior(nu0=numbers["nu0"], S0=numbers["S0"], a0=numbers["a0"], b0=numbers["b0"],
                          tau2=numbers["tau2"])


def check_prior_matches_teachlmm(tl, model, numbers):
    """S0 and b0 as teachlmm's Prior fills them in for nu0=3, a0=1/2 (the former default); max relative gap."""
    import numpy as np
    filled = tl.gibbs.Prior(nu0=NU0, a0=A0).resolve(model)
    gap = max(float(np.max(np.abs(filled.S0 - numbers["S0"]) / np.abs(numbers["S0"]).max())),
              abs(filled.b0 - numbers["b0"]) / numbers["b0"])
    if gap > 1e-10:
        raise RuntimeError(f"the explicit prior differs from teachlmm's former default by {gap:.2g} (relative)")
    return gap


# ----------------------------------------------------------------------------
# JAGS
# ----------------------------------------------------------------------------

def jags_files(work, data, numbers, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS):
    """Write the data, the prior, per-chain RNG seeds and the command file into ``work``."""
    import numpy as np
    subject = np.unique(data["Subject"], return_inverse=True)[1] + 1
    S0 = numbers["S0"]
    with open(os.path.join(work, "data.R"), "w") as f:
        f.write(f"n <- {len(subject)}\nJ <- {subject.max()}\n")
        f.write("y <- c(%s)\n" % ",".join(repr(float(v)) for v in data["Reaction"]))
        f.write("x <- c(%s)\n" % ",".join(repr(float(v)) for v in data["Days"]))
        f.write("subject <- c(%s)\n" % ",".join(str(int(v)) for v in subject))
        f.write("S0 <- structure(c(%s), .Dim = c(2, 2))\n"              # column-major, as R
                % ", ".join(repr(float(v)) for v in (S0[0, 0], S0[1, 0], S0[0, 1], S0[1, 1])))
        f.write(f"nu0 <- {numbers['nu0']!r}\na0 <- {numbers['a0']!r}\nb0 <- {numbers['b0']!r}\n"
                f"prec_beta <- {1 / numbers['tau2']!r}\n")
    shutil.copy(BUG, os.path.join(work, "model.bug"))
    lines = ['model in "model.bug"', 'data in "data.R"', f"compile, nchains({chains})"]
    for c in range(1, chains + 1):
        with open(os.path.join(work, f"inits{c}.R"), "w") as f:
            f.write(f'".RNG.name" <- "base::Mersenne-Twister"\n".RNG.seed" <- {1000 * seed + c}\n')
        lines.append(f'parameters in "inits{c}.R", chain({c})')
    lines += ["initialize", f"update {warmup}", "monitor beta", "monitor G", "monitor sigma2",
              f"update {draws}", "coda *, stem(out)", "exit"]
    with open(os.path.join(work, "run.cmd"), "w") as f:
        f.write("\n".join(lines) + "\n")


def read_coda(work, chains):
    """JAGS's CODA output as {name: (chains, draws)}."""
    import numpy as np
    index = {}
    for line in open(os.path.join(work, "outindex.txt")):
        name, a, b = line.split()
        index[name] = (int(a) - 1, int(b))
    values = np.array([np.loadtxt(os.path.join(work, f"outchain{c}.txt"))[:, 1] for c in range(1, chains + 1)])
    return {name: values[:, a:b] for name, (a, b) in index.items()}


def run_jags(data, numbers, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS):
    """One timed JAGS process; its summary and the draws of the six quantities (teachlmm's names)."""
    work = tempfile.mkdtemp(prefix="teachlmm-sleepstudy-jags-")
    try:
        jags_files(work, data, numbers, seed, draws, warmup, chains)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(["jags", "run.cmd"], cwd=work, check=True, capture_output=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        coda = read_coda(work, chains)
    finally:
        shutil.rmtree(work)
    draws_ = {q: coda[j] for q, j in zip(QUANTITIES, JAGS_NAMES)}
    return summarise(draws_, cpu, wall), draws_


# ----------------------------------------------------------------------------
# teachlmm
# ----------------------------------------------------------------------------

def run_teachlmm(model, numbers, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS):
    """One timed tl.gibbs.sample call; its summary and the draws of the six quantities."""
    import warnings
    tl = teachlmm_module()
    prior = teachlmm_prior(tl, numbers)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        post = tl.gibbs.sample(model, draws=draws, warmup=warmup, chains=chains, seed=seed, prior=prior,
                               keep_b=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    draws_ = {name: post.get(name) for name in QUANTITIES}
    return summarise(draws_, cpu, wall), draws_


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def summarise(draws, cpu, wall):
    import arviz as az
    ess = {name: float(az.ess(draws[name], method="bulk")) for name in QUANTITIES}
    n = draws[QUANTITIES[0]].size
    return {"min_ess": min(ess.values()), "cpu_seconds": cpu, "seconds": wall, "ess": ess,
            "ess_per_draw": {name: v / n for name, v in ess.items()},
            "min_ess_per_cpu_second": min(ess.values()) / cpu}


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def agreement(pooled_a, pooled_b):
    """Posterior means, MCSEs and |m_a - m_b| / sqrt(MCSE_a^2 + MCSE_b^2) per quantity."""
    import numpy as np
    import arviz as az
    out = {}
    for name in QUANTITIES:
        a, b = np.concatenate(pooled_a[name]), np.concatenate(pooled_b[name])    # chains of all repeats
        ma, mb = float(a.mean()), float(b.mean())
        sa, sb = (float(np.ravel(az.mcse(d, method="mean"))[0]) for d in (a, b))
        out[name] = {"teachlmm": ma, "jags": mb, "mcse_teachlmm": sa, "mcse_jags": sb,
                     "z": abs(ma - mb) / float(np.hypot(sa, sb))}
    return out


def machine():
    import numpy as np
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        jags = subprocess.run(["jags"], input="exit\n", capture_output=True, text=True, timeout=30).stdout
        jags = re.search(r"JAGS (\S+)", jags).group(1)
    except (OSError, subprocess.SubprocessError, AttributeError):
        jags = None
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "jags": jags}


def run(repeats):
    tl = teachlmm_module()
    data = sleepstudy()
    numbers = old_default_prior(data)
    model = tl.Model(FORMULA, data)
    gap = check_prior_matches_teachlmm(tl, model, numbers)
    run_jags(data, numbers, seed=0, draws=200, warmup=200)           # warm-ups, not counted
    run_teachlmm(model, numbers, seed=0, draws=200, warmup=200)
    jags, ours, load = [], [], [os.getloadavg()[0]]
    pooled_jags, pooled_ours = {q: [] for q in QUANTITIES}, {q: [] for q in QUANTITIES}
    for r in range(repeats):
        for runner, runs, pooled, arg in ((run_jags, jags, pooled_jags, data),
                                          (run_teachlmm, ours, pooled_ours, model)):
            summary, draws = runner(arg, numbers, seed=r + 1)
            runs.append(summary)
            for q in QUANTITIES:
                pooled[q].append(draws[q])
        print(f"repeat {r + 1}: JAGS {jags[-1]['min_ess']:.0f} ESS / {jags[-1]['cpu_seconds']:.2f} CPU s = "
              f"{jags[-1]['min_ess_per_cpu_second']:.0f}/s;  teachlmm {ours[-1]['min_ess']:.0f} ESS / "
              f"{ours[-1]['cpu_seconds']:.2f} CPU s = {ours[-1]['min_ess_per_cpu_second']:.0f}/s  "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    load.append(os.getloadavg()[0])
    jags_rate = median([r["min_ess_per_cpu_second"] for r in jags])
    our_rate = median([r["min_ess_per_cpu_second"] for r in ours])
    S0 = numbers["S0"]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "protocol": f"sleepstudy {FORMULA}; {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; CPU time "
                    "(JAGS: the whole process), one core; min ArviZ bulk ESS over " + ", ".join(QUANTITIES),
        "prior": f"G ~ InvWishart(3, diag({S0[0, 0]:.6g}, {S0[1, 1]:.6g})) = IW(3, diag(var(y)/(10 mean(z_k^2)))); "
                 f"sigma2 ~ InvGamma(0.5, {numbers['b0']:.6g}) = IG(1/2, var(y)/2); beta ~ N(0, 1e8 I)",
        "prior_gap_to_teachlmm_default": gap,
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "jags": {"runs": jags, "min_ess_per_cpu_second": jags_rate},
        "teachlmm": {"runs": ours, "min_ess_per_cpu_second": our_rate},
        "ratio": our_rate / jags_rate,
        "ess_per_draw": {q: {"teachlmm": median([r["ess_per_draw"][q] for r in ours]),
                             "jags": median([r["ess_per_draw"][q] for r in jags])} for q in QUANTITIES},
        "posterior_means": agreement(pooled_ours, pooled_jags),
    }


def tables(result):
    """(title, header, rows, notes) for run_all.py's report."""
    j, t = result["jags"], result["teachlmm"]
    rows = [["JAGS " + (result["machine"].get("jags") or ""), f"{median([r['min_ess'] for r in j['runs']]):.0f}",
             f"{median([r['cpu_seconds'] for r in j['runs']]):.2f}", f"{j['min_ess_per_cpu_second']:.0f}", "1.0"],
            ["teachlmm gibbs.sample", f"{median([r['min_ess'] for r in t['runs']]):.0f}",
             f"{median([r['cpu_seconds'] for r in t['runs']]):.2f}", f"{t['min_ess_per_cpu_second']:.0f}",
             f"{result['ratio']:.2f}"]]
    means = result["posterior_means"]
    worst = max(v["z"] for v in means.values())
    load = result["load_avg_1min_before_after"]
    notes = [result["protocol"], "prior: " + result["prior"],
             f"median of {result['repeats']} alternating runs",
             "bulk ESS per draw (load-independent) teachlmm / JAGS: " + ", ".join(
                 f"{q} {v['teachlmm']:.2f} / {v['jags']:.2f}" for q, v in result["ess_per_draw"].items()),
             "posterior means teachlmm / JAGS (|difference| in combined MCSEs): " + ", ".join(
                 f"{q} {v['teachlmm']:.4g} / {v['jags']:.4g} ({v['z']:.1f})" for q, v in means.items()) +
             f"; largest {worst:.2f} " + ("<= 4: agree" if worst <= 4 else "> 4: DISAGREE"),
             f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
             f"on {result['machine']['cores']} cores (shared: the ratio, side by side, is what counts)"]
    return [("Gibbs sampler vs JAGS, lme4 sleepstudy: minimum bulk ESS per CPU second",
             ["tool", "min bulk ESS", "CPU seconds", "min ESS / CPU s", "ratio"], rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of five")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    why = missing_peer()
    if why:
        print(f"skipped: {why}")
        if args.json:                                         # run_all.py reports the reason
            with open(args.json, "w") as f:
                json.dump({"skipped": why}, f)
        return 0
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):                                  # numpy on one BLAS thread, like JAGS
        result = run(args.repeats or (1 if args.quick else 5))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    sys.path.insert(0, HERE)
    from _report import finish
    for path in [RESULTS] + ([args.json] if args.json else []):
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    finish(result, tables, width=16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
