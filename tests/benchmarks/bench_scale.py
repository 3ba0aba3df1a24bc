"""One million rows in 10,000 groups (an M4-like design): time and peak memory, each tool in its own process.

The data are simulated once from the lecture's cross-level model M4 (a 0/1
house-level ``x``, a group-level ``u``; ``tl.simulate`` with uneven group
sizes drawn from a seeded generator, rows shuffled) and saved to a .npz file
in a temporary folder. Then every tool runs in a fresh Python process that
loads that file and fits

    y ~ 1 + x + u + x:u + (1 + x | group)     by REML

so each process starts from the same arrays and its peak resident memory
(VmHWM of /proc/self/status, read by the child at its end) is its own. The child reports
its wall time from formula to fit (for the peers: their fitting call; the
pandas DataFrame they take is built before the clock starts) and its resident
memory just before that clock starts (interpreter, the tool's imports, data).
teachlmm's estimates are compared with mixedlm's (target: within 1e-3) and
with the truth.

statsmodels takes minutes here, so it runs only in the full suite (one run,
with a time limit).

    python tests/benchmarks/bench_scale.py [--quick] [--json OUT] [--rows N --groups J]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import _report  # noqa: E402  (tests/benchmarks/_report.py: save JSON, print tables)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FORMULA = "y ~ 1 + x + u + x:u + (1 + x | group)"
SEED = 20240601


# ----------------------------------------------------------------------------
# the data
# ----------------------------------------------------------------------------

def group_sizes(rows, groups, rng):
    """Uneven group sizes that add up to exactly ``rows``, each at least 2.

    The shares are Gamma(1) draws (exponential), so, as with counties, many
    groups are small and a few are large.
    """
    share = rng.gamma(1.0, size=groups)
    return 2 + rng.multinomial(rows - 2 * groups, share / share.sum())


def make_data(path, rows, groups, seed=SEED):
    """Simulate the M4-like data set, shuffle its rows, save it to ``path`` (.npz); return the truth."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm as tl
    rng = np.random.default_rng(seed)
    data, truth = tl.simulate(n_groups=groups, sizes=group_sizes(rows, groups, rng), seed=seed + 1)
    order = rng.permutation(rows)
    np.savez(path, **{k: np.asarray(v)[order] for k, v in data.items()})
    G = np.asarray(truth["G"], float)
    return {"fixef": [float(v) for v in truth["fixef"].values()], "G": G.tolist(),
            "sigma2": float(truth["sigma2"])}


# ----------------------------------------------------------------------------
# the worker: one tool, one process
# ----------------------------------------------------------------------------

def _status_mb(field):
    """A memory figure of this process from /proc/self/status, in MB (Linux), or NaN."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _rss_mb():
    """Resident memory now."""
    return _status_mb("VmRSS")


def peak_rss_mb():
    """Peak resident memory of this process since it started its program (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's resident size at the fork
    over into the child's ru_maxrss, so a child of a big parent would be
    charged for the parent's memory. VmHWM starts afresh at exec.
    """
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _result(seconds, rss, fixef, G, sigma2, loglik, converged, **extra):
    """What a worker reports: its time, its memory before the clock started, its estimates."""
    return {"seconds": seconds, "rss_before_fit_mb": rss, "fixef": [float(v) for v in fixef],
            "G": np.asarray(G, float).tolist(), "sigma2": float(sigma2), "loglik": float(loglik),
            "converged": bool(converged), **extra}


def fit_teachlmm(data):
    """tl.em.fit(tl.Model(formula, data)), timed in two parts."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm as tl
    rss = _rss_mb()
    start = time.perf_counter()
    model = tl.Model(FORMULA, data)
    built = time.perf_counter()
    fit = tl.em.fit(model, reml=True)
    end = time.perf_counter()
    return _result(end - start, rss, fit.beta, fit.G, fit.sigma2, fit.loglik, fit.converged,
                   model_seconds=built - start, fit_seconds=end - built, n_iter=int(fit.n_iter))


def _dataframe(data):
    """The arrays as a DataFrame, and the dict emptied (so the process holds one copy of the data)."""
    import pandas as pd
    df = pd.DataFrame(data)
    data.clear()
    return df


def fit_mixedlm(data):
    """mixedlm.lmer(formula, df, REML=True)."""
    import mixedlm
    df = _dataframe(data)
    rss = _rss_mb()
    start = time.perf_counter()
    fit = mixedlm.lmer(FORMULA, df, REML=True)
    end = time.perf_counter()
    G = next(iter(fit.VarCorr().groups.values())).cov
    return _result(end - start, rss, fit.fixef().values(), G, fit.sigma ** 2, fit.logLik().value, fit.converged)


def fit_statsmodels(data):
    """statsmodels' MixedLM from the formula, REML."""
    import warnings
    import statsmodels.formula.api as smf
    df = _dataframe(data)
    fixed = FORMULA.split(" + (")[0]
    rss = _rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm(fixed, df, groups="group", re_formula="1 + x").fit(reml=True)
    end = time.perf_counter()
    return _result(end - start, rss, fit.fe_params.values, fit.cov_re.values, fit.scale, fit.llf, fit.converged)


WORKERS = {"teachlmm": fit_teachlmm, "mixedlm": fit_mixedlm, "statsmodels": fit_statsmodels}
NEEDS = {"teachlmm": [], "mixedlm": ["mixedlm", "pandas"], "statsmodels": ["statsmodels", "pandas"]}


def worker(tool, data_path, out_path):
    """Child process: load the data, fit with one tool, write what it measured as JSON."""
    data = dict(np.load(data_path))
    result = WORKERS[tool](data)                 # each measures its RSS after its imports, before its clock
    result["peak_rss_mb"] = peak_rss_mb()
    with open(out_path, "w") as f:
        json.dump(result, f)


def run_in_child(tool, data_path, timeout):
    """Run one tool in a fresh process: its result, and the process's wall time."""
    out_path = data_path + f".{tool}.json"
    if os.path.exists(out_path):
        os.remove(out_path)
    start = time.perf_counter()
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", tool, data_path, out_path]
    child = subprocess.Popen(cmd)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            os.wait4(child.pid, 0)
            return {"error": f"stopped after the time limit of {timeout:.0f} s"}
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0 or not os.path.exists(out_path):
        return {"error": f"the {tool} process failed (exit status {os.waitstatus_to_exitcode(status)})"}
    result = json.load(open(out_path))
    result.update(ru_maxrss_mb=usage.ru_maxrss / 1024, process_seconds=wall)
    return result


# ----------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------

def max_abs_diff(a, b):
    """Max abs difference of fixed effects, G and sigma2 between two results (or a result and the truth)."""
    va = np.concatenate([a["fixef"], np.ravel(a["G"]), [a["sigma2"]]])
    vb = np.concatenate([b["fixef"], np.ravel(b["G"]), [b["sigma2"]]])
    return float(np.max(np.abs(va - vb)))


def missing(tool):
    import importlib.util
    gone = [m for m in NEEDS[tool] if importlib.util.find_spec(m) is None]
    return f"not installed ({', '.join(gone)}); pip install -e \".[bench]\"" if gone else None


def run(quick=False, rows=1_000_000, groups=10_000, statsmodels_limit=300.0):
    """Fit the same simulated data with each tool in its own process; times, peak memory, estimates."""
    repeats = 1 if quick else 3
    tools = ["teachlmm", "mixedlm"] + ([] if quick else ["statsmodels"])
    out = {"rows": rows, "groups": groups, "formula": FORMULA, "seed": SEED, "repeats": repeats,
           "protocol": "each run a fresh process loading the same .npz; median wall time of the "
                       "formula-to-fit call, max peak RSS (VmHWM) of the process",
           "tools": {}, "skipped": {}}
    if quick:
        out["skipped"]["statsmodels"] = "not run with --quick (it takes minutes here)"
    with tempfile.TemporaryDirectory(prefix="teachlmm-bench-") as tmp:
        path = os.path.join(tmp, "scale.npz")
        start = time.perf_counter()
        out["truth"] = make_data(path, rows, groups)
        out["data_seconds"] = time.perf_counter() - start
        runs = {t: [] for t in tools}
        for round_ in range(repeats):
            for tool in tools:
                if tool == "statsmodels" and round_ > 0:
                    continue                                 # one run is enough for minutes
                why = missing(tool)
                if why:
                    out["skipped"][tool] = why
                    continue
                limit = statsmodels_limit if tool == "statsmodels" else 600.0
                runs[tool].append(run_in_child(tool, path, limit))
    for tool, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            if results:
                out["skipped"][tool] = results[0]["error"]
            continue
        best = dict(good[-1])
        best["seconds"] = float(np.median([r["seconds"] for r in good]))
        best["peak_rss_mb"] = float(np.max([r["peak_rss_mb"] for r in good]))
        best["runs_seconds"] = [r["seconds"] for r in good]
        best["diff_truth"] = max_abs_diff(best, out["truth"])
        out["tools"][tool] = best
    t = out["tools"]
    if "teachlmm" in t and "mixedlm" in t:
        out["teachlmm_vs_mixedlm"] = {
            "time_ratio": t["teachlmm"]["seconds"] / t["mixedlm"]["seconds"],
            "memory_ratio": t["teachlmm"]["peak_rss_mb"] / t["mixedlm"]["peak_rss_mb"],
            "max_abs_diff": max_abs_diff(t["teachlmm"], t["mixedlm"]),
        }
    return out


def _met(ok):
    return "met" if ok else "NOT met"


def tables(result):
    header = ["tool", "median s", "peak RSS MB", "RSS before fit MB", "converged", "max |diff| truth"]
    rows, notes = [], []
    for tool in ("teachlmm", "mixedlm", "statsmodels"):
        r = result["tools"].get(tool)
        if r is None:
            rows.append([tool, "skipped", "", "", "", ""])
            continue
        rows.append([tool, f"{r['seconds']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['rss_before_fit_mb']:.0f}",
                     "yes" if r["converged"] else "NO", f"{r['diff_truth']:.1e}"])
    tl = result["tools"].get("teachlmm")
    if tl:
        notes.append(f"teachlmm = Model {tl['model_seconds']:.2f} s + em.fit {tl['fit_seconds']:.2f} s "
                     f"({tl['n_iter']} EM iterations).")
    cmp_ = result.get("teachlmm_vs_mixedlm")
    if cmp_:
        t, m, d = cmp_["time_ratio"], cmp_["memory_ratio"], cmp_["max_abs_diff"]
        notes.append(f"teachlmm / mixedlm: time {t:.2f} (target <= 1: {_met(t <= 1)}), peak memory "
                     f"{m:.2f} (target <= 1: {_met(m <= 1)}), estimates differ by {d:.1e} "
                     f"(target <= 1e-3: {_met(d <= 1e-3)}).")
    for tool, why in result.get("skipped", {}).items():
        notes.append(f"{tool} skipped: {why}")
    title = (f"{result['rows']:,} rows, {result['groups']:,} groups, M4-like, REML "
             f"(each tool in its own process, median of {result['repeats']})")
    return [(title, header, rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each tool, no statsmodels")
    parser.add_argument("--json", help="write the result to this file")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    result = run(quick=args.quick, rows=args.rows, groups=args.groups)
    return _report.finish(result, tables, args.json, width=17)


if __name__ == "__main__":
    main()
