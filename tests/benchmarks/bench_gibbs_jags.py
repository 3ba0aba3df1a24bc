"""Gibbs sampling speed on radon M3: teachlmm's sampler vs JAGS 4.3, in effective draws per second.

The peer and its protocol are fixed in ``shared/bench/jags_m3/`` (``m3.bug``,
``run.cmd``, ``jags_min_ess.py``): 4 chains x 5,000 draws after 1,000 warm-up,
the wall time of the whole run, and the minimum ArviZ bulk ESS over the two
fixed effects, the three distinct entries of G and sigma2 (= sigma_y^2),
divided by that time. JAGS is run by executing that script as it is.

teachlmm is measured the same way: the same model and prior, the same chains,
draws and warm-up, the wall time of the whole ``tl.gibbs.sample()`` call
(chain start included; building the ``Model`` from the data, done once, is
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

teachlmm runs its default sweep (with the interweaving step of
``teachlmm.interweave``) and, for comparison, the centred sweep alone
(``interweave=False``, the sampler before issue 15). Besides ESS per second the
script reports ESS per draw of every quantity (bulk ESS / 20,000): it does not
depend on the machine's load, so it is the number to compare across runs on a
shared machine. numpy runs with one BLAS thread (threadpoolctl); JAGS is
single-threaded.

Runs alternate (JAGS, teachlmm, teachlmm centred, JAGS, ...) so that load from elsewhere
on the machine falls on all; the summary is the median over the repeats. The
posterior means of the six quantities from both tools are printed side by
side as a check that they sample the same posterior (from one extra JAGS run
on the same files, untimed).

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

def run_jags_protocol():
    """Execute shared/bench/jags_m3/jags_min_ess.py as given; (min bulk ESS, seconds)."""
    out = subprocess.run([sys.executable, os.path.join(jags_folder(), "jags_min_ess.py"), CSV],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"min bulk ESS ([\d.]+) in ([\d.]+) s", out)
    if match is None:
        raise RuntimeError(f"unexpected output of jags_min_ess.py: {out!r}")
    return {"min_ess": float(match.group(1)), "seconds": float(match.group(2))}


def jags_posterior_means():
    """One more JAGS run on the same files (untimed), read back: posterior means and ESS per draw of the six quantities."""
    import numpy as np
    folder, work = jags_folder(), tempfile.mkdtemp()
    try:
        for name in ("m3.bug", "run.cmd"):
            shutil.copy(os.path.join(folder, name), work)
        import csv
        rows = list(csv.DictReader(open(CSV)))
        with open(os.path.join(work, "data.R"), "w") as f:
            f.write("n <- %d\nJ <- %d\n" % (len(rows), len({r["county"] for r in rows})))
            for column, name in (("log_radon", "y"), ("floor", "x"), ("county", "county")):
                f.write("%s <- c(%s)\n" % (name, ",".join(r[column] for r in rows)))
            f.write("W <- structure(c(1,0,0,1), .Dim=c(2,2))\n")
        subprocess.run(["jags", "run.cmd"], cwd=work, check=True, capture_output=True)
        index = {}
        for line in open(os.path.join(work, "outindex.txt")):
            name, a, b = line.split()
            index[name] = (int(a) - 1, int(b))
        chains = np.array([np.loadtxt(os.path.join(work, f"outchain{c}.txt"))[:, 1] for c in range(1, 5)])
        draws = {k: chains[:, a:b] for k, (a, b) in index.items()}
        draws["sigma_y^2"] = draws["sigma_y"] ** 2
        import arviz as az
        return ({name: float(draws[name].mean()) for name in JAGS_NAMES},
                {name: float(az.ess(draws[name], method="bulk")) / draws[name].size for name in JAGS_NAMES})
    finally:
        shutil.rmtree(work)


def teachlmm_module():
    sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


def jags_prior(tl):
    import numpy as np
    return tl.gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)


def run_teachlmm(model, seed, keep_b=False, interweave=True):
    """The timed call, measured like JAGS; (min bulk ESS, seconds, ESS per draw, posterior means)."""
    import warnings
    import arviz as az
    tl = teachlmm_module()
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        post = tl.gibbs.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, seed=seed,
                               prior=jags_prior(tl), keep_b=keep_b, interweave=interweave)
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


def run(repeats):
    tl = teachlmm_module()
    start = time.perf_counter()
    model = tl.Model(M3, tl.load_radon())
    model_seconds = time.perf_counter() - start
    run_teachlmm(model, seed=0)                                   # warm-up (imports, caches), not counted
    jags, ours, centred, load = [], [], [], [os.getloadavg()[0]]
    for r in range(repeats):
        jags.append(run_jags_protocol())
        ours.append(run_teachlmm(model, seed=r + 1))
        centred.append(run_teachlmm(model, seed=r + 1, interweave=False))
        print(f"repeat {r + 1}: JAGS {jags[-1]['min_ess']:.0f} ESS / {jags[-1]['seconds']:.2f} s = "
              f"{jags[-1]['min_ess'] / jags[-1]['seconds']:.0f}/s;  teachlmm {ours[-1]['min_ess']:.0f} ESS / "
              f"{ours[-1]['seconds']:.2f} s = {ours[-1]['min_ess'] / ours[-1]['seconds']:.0f}/s;  centred "
              f"{centred[-1]['min_ess']:.0f} ESS / {centred[-1]['seconds']:.2f} s", flush=True)
    load.append(os.getloadavg()[0])
    with_b = run_teachlmm(model, seed=99, keep_b=True)
    jags_rate = median([j["min_ess"] / j["seconds"] for j in jags])
    our_rate = median([o["min_ess"] / o["seconds"] for o in ours])
    centred_rate = median([o["min_ess"] / o["seconds"] for o in centred])
    means_jags, ess_per_draw_jags = jags_posterior_means()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "protocol": f"{CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; wall time of the whole run; "
                    "min ArviZ bulk ESS over mu[1], mu[2], Sigma_B[1,1], Sigma_B[1,2], Sigma_B[2,2], sigma_y^2",
        "prior": "G ~ InvWishart(3, I); beta ~ N(0, 1e4 I); sigma ~ Uniform(0, 100)",
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "jags": {"runs": jags, "min_ess_per_second": jags_rate},
        "teachlmm": {"runs": ours, "min_ess_per_second": our_rate, "model_seconds": model_seconds,
                     "keep_b_true_seconds": with_b["seconds"]},
        "teachlmm_centred": {"runs": centred, "min_ess_per_second": centred_rate},
        "ratio": our_rate / jags_rate,
        "ratio_centred": centred_rate / jags_rate,
        "ess_per_draw": {q: {"teachlmm": median([o["ess_per_draw"][q] for o in ours]),
                             "teachlmm_centred": median([o["ess_per_draw"][q] for o in centred]),
                             "jags": ess_per_draw_jags[j]} for q, j in zip(QUANTITIES, JAGS_NAMES)},
        "posterior_means": {q: {"teachlmm": median([o["means"][q] for o in ours]), "jags": means_jags[j]}
                            for q, j in zip(QUANTITIES, JAGS_NAMES)},
    }


def tables(result):
    """(title, header, rows, notes) for run_all.py's report."""
    j, t = result["jags"], result["teachlmm"]
    rows = [["JAGS " + (result["machine"].get("jags") or ""), f"{median([r['min_ess'] for r in j['runs']]):.0f}",
             f"{median([r['seconds'] for r in j['runs']]):.2f}", f"{j['min_ess_per_second']:.0f}", "1.0"],
            ["teachlmm gibbs.sample", f"{median([r['min_ess'] for r in t['runs']]):.0f}",
             f"{median([r['seconds'] for r in t['runs']]):.2f}", f"{t['min_ess_per_second']:.0f}",
             f"{result['ratio']:.1f}"]]
    if "teachlmm_centred" in result:
        c = result["teachlmm_centred"]
        rows.append(["teachlmm, centred sweep", f"{median([r['min_ess'] for r in c['runs']]):.0f}",
                     f"{median([r['seconds'] for r in c['runs']]):.2f}", f"{c['min_ess_per_second']:.0f}",
                     f"{result['ratio_centred']:.1f}"])
    means = ", ".join(f"{q} {v['teachlmm']:.4f} / {v['jags']:.4f}" for q, v in result["posterior_means"].items())
    load = result.get("load_avg_1min_before_after")
    notes = [result["protocol"], "prior: " + result["prior"],
             f"median of {result['repeats']} alternating runs; teachlmm with keep_b=True: "
             f"{t['keep_b_true_seconds']:.2f} s; building the Model: {t['model_seconds']:.3f} s; "
             f"teachlmm CPU time {median([r['cpu_seconds'] for r in t['runs']]):.2f} s per run",
             "posterior means teachlmm / JAGS: " + means]
    if "ess_per_draw" in result:
        notes.append("bulk ESS per draw (load-independent) teachlmm / centred / JAGS: " + ", ".join(
            f"{q} {v['teachlmm']:.2f} / {v['teachlmm_centred']:.2f} / {v['jags']:.2f}"
            for q, v in result["ess_per_draw"].items()))
    if load:
        notes.append(f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
                     f"on {result['machine']['cores']} cores")
    return [("Gibbs sampler, radon M3: minimum bulk ESS per second",
             ["tool", "min bulk ESS", "seconds", "min ESS / s", "ratio"], rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    why = missing_peer()
    if why:
        print(f"skipped: {why}")
        return 0
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):                                  # numpy on one BLAS thread, like JAGS
        result = run(args.repeats or (1 if args.quick else 3))
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
