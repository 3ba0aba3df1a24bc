"""Ten million rows streamed from a CSV file: time and peak memory of a fit that never holds the data.

``tl.Model.from_chunks`` adds up the per-group statistics chunk by chunk
(``tl.data.read_csv_chunks`` reads the file in blocks of rows), so memory is
O(chunk + J), not O(n); the fit itself then works on those statistics only.

The CSV (M4-like simulated data: y, x, u, group; rows shuffled so every chunk
holds rows of most groups) is written once into a folder under the system's
temporary directory (never into the repository) and reused while its
parameters match. The fit runs in a fresh process; the table shows its wall
time (reading + fitting) and its peak resident memory. In the full suite,
mixedlm fits the same file read whole with pandas, for comparison.

    python tests/benchmarks/bench_stream.py [--quick] [--json OUT] [--rows N]
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
SEED = 20240602
GROUPS = 10_000
CHUNK_ROWS = 200_000
FOLDER = os.path.join(tempfile.gettempdir(), "teachlmm-bench")


def import_teachlmm():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


def api_missing(tl):
    """None if the streaming API is there, else what is missing."""
    gone = [name for name, ok in [("tl.Model.from_chunks", hasattr(tl.Model, "from_chunks")),
                                  ("tl.data.read_csv_chunks", hasattr(tl.data, "read_csv_chunks"))] if not ok]
    return f"{' and '.join(gone)} not in this teachlmm yet" if gone else None


# ----------------------------------------------------------------------------
# the CSV file
# ----------------------------------------------------------------------------

def write_csv(path, rows, groups, seed=SEED, block=1_000_000):
    """Simulate the data (``tl.simulate``, uneven group sizes), shuffle the rows, write them as CSV.

    Returns the truth (fixed effects, G, sigma2). Written a block of rows at a time.
    """
    tl = import_teachlmm()
    rng = np.random.default_rng(seed)
    share = rng.gamma(1.0, size=groups)
    sizes = 2 + rng.multinomial(rows - 2 * groups, share / share.sum())
    data, truth = tl.simulate(n_groups=groups, sizes=sizes, seed=seed + 1)
    order = rng.permutation(rows)
    cols = [np.asarray(data[k])[order] for k in ("y", "x", "u", "group")]
    with open(path + ".part", "w") as f:
        f.write("y,x,u,group\n")
        for start in range(0, rows, block):
            y, x, u, g = (c[start:start + block].tolist() for c in cols)
            f.write("".join(f"{a:.6f},{b:.0f},{c:.6f},{d:.0f}\n" for a, b, c, d in zip(y, x, u, g)))
    os.replace(path + ".part", path)
    return {"fixef": [float(v) for v in truth["fixef"].values()],
            "G": np.asarray(truth["G"], float).tolist(), "sigma2": float(truth["sigma2"])}


def csv_file(rows, groups):
    """Path of the benchmark CSV and its truth; written if absent (or made with other parameters)."""
    os.makedirs(FOLDER, exist_ok=True)
    path = os.path.join(FOLDER, f"stream_{rows}_{groups}_{SEED}.csv")
    meta_path = path + ".json"
    if os.path.exists(path) and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        if meta.get("rows") == rows and meta.get("bytes") == os.path.getsize(path):
            return path, meta, 0.0
    start = time.perf_counter()
    truth = write_csv(path, rows, groups)
    seconds = time.perf_counter() - start
    meta = {"rows": rows, "groups": groups, "seed": SEED, "truth": truth, "bytes": os.path.getsize(path)}
    json.dump(meta, open(meta_path, "w"))
    return path, meta, seconds


# ----------------------------------------------------------------------------
# the worker (one process per fit)
# ----------------------------------------------------------------------------

def fit_stream(path, chunk_rows):
    """teachlmm: statistics summed chunk by chunk from the file, then EM on them."""
    tl = import_teachlmm()
    start = time.perf_counter()
    model = tl.Model.from_chunks(FORMULA, lambda: tl.data.read_csv_chunks(path, rows=chunk_rows))
    built = time.perf_counter()
    fit = tl.em.fit(model, reml=True)
    end = time.perf_counter()
    return {"seconds": end - start, "model_seconds": built - start, "fit_seconds": end - built,
            "n": int(model.n), "n_iter": int(fit.n_iter), "fixef": fit.beta.tolist(), "G": fit.G.tolist(),
            "sigma2": float(fit.sigma2), "converged": bool(fit.converged)}


def fit_mixedlm(path, chunk_rows):
    """mixedlm: the whole file read into a pandas DataFrame, then lmer()."""
    import mixedlm
    import pandas as pd
    start = time.perf_counter()
    df = pd.read_csv(path)
    read = time.perf_counter()
    fit = mixedlm.lmer(FORMULA, df, REML=True)
    end = time.perf_counter()
    G = next(iter(fit.VarCorr().groups.values())).cov
    return {"seconds": end - start, "model_seconds": read - start, "fit_seconds": end - read,
            "n": int(len(df)), "fixef": list(map(float, fit.fixef().values())), "G": np.asarray(G).tolist(),
            "sigma2": float(fit.sigma ** 2), "converged": bool(fit.converged)}


WORKERS = {"teachlmm (streamed)": fit_stream, "mixedlm (in memory)": fit_mixedlm}


def peak_rss_mb():
    """Peak resident memory of this process (VmHWM; see bench_scale.peak_rss_mb for why not ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(tool, path, chunk_rows, out_path):
    result = WORKERS[tool](path, int(chunk_rows))
    result["peak_rss_mb"] = peak_rss_mb()
    with open(out_path, "w") as f:
        json.dump(result, f)


def run_in_child(tool, path, chunk_rows, timeout=600.0):
    out_path = os.path.join(FOLDER, "result.json")
    if os.path.exists(out_path):
        os.remove(out_path)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", tool, path,
                              str(chunk_rows), out_path])
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            child.kill()
            os.wait4(child.pid, 0)
            return {"error": f"stopped after the time limit of {timeout:.0f} s"}
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not os.path.exists(out_path):
        return {"error": f"the process failed (exit status {code})"}
    result = json.load(open(out_path))
    result.update(ru_maxrss_mb=usage.ru_maxrss / 1024, process_seconds=time.perf_counter() - start)
    return result


# ----------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------

def max_abs_diff(a, b):
    va = np.concatenate([a["fixef"], np.ravel(a["G"]), [a["sigma2"]]])
    vb = np.concatenate([b["fixef"], np.ravel(b["G"]), [b["sigma2"]]])
    return float(np.max(np.abs(va - vb)))


def run(quick=False, rows=None, groups=GROUPS, chunk_rows=CHUNK_ROWS, peers=None):
    """Write (or reuse) the CSV, fit it streamed in a fresh process, and (full suite) mixedlm in memory."""
    tl = import_teachlmm()
    rows = rows or (1_000_000 if quick else 10_000_000)
    peers = (not quick) if peers is None else peers
    out = {"rows": rows, "groups": groups, "chunk_rows": chunk_rows, "formula": FORMULA,
           "tools": {}, "skipped": {}}
    why = api_missing(tl)
    if why:
        out["skipped"]["teachlmm (streamed)"] = why
        return out
    path, meta, seconds = csv_file(rows, groups)
    out.update(csv_bytes=meta["bytes"], csv_write_seconds=seconds, truth=meta["truth"])
    tools = ["teachlmm (streamed)"]
    if peers:
        import importlib.util
        gone = [m for m in ("mixedlm", "pandas") if importlib.util.find_spec(m) is None]
        if gone:
            out["skipped"]["mixedlm (in memory)"] = f"not installed ({', '.join(gone)})"
        else:
            tools.append("mixedlm (in memory)")
    else:
        out["skipped"]["mixedlm (in memory)"] = "not run with --quick"
    for tool in tools:
        r = run_in_child(tool, path, chunk_rows)
        if "error" in r:
            out["skipped"][tool] = r["error"]
            continue
        r["diff_truth"] = max_abs_diff(r, meta["truth"])
        out["tools"][tool] = r
    t = out["tools"]
    if len(t) == 2:
        a, b = t["teachlmm (streamed)"], t["mixedlm (in memory)"]
        out["teachlmm_vs_mixedlm"] = {"time_ratio": a["seconds"] / b["seconds"],
                                      "memory_ratio": a["peak_rss_mb"] / b["peak_rss_mb"],
                                      "max_abs_diff": max_abs_diff(a, b)}
    return out


def tables(result):
    header = ["tool", "total s", "read/build s", "fit s", "peak RSS MB", "converged", "max |diff| truth"]
    rows, notes = [], []
    for tool, r in result["tools"].items():
        rows.append([tool, f"{r['seconds']:.1f}", f"{r['model_seconds']:.1f}", f"{r['fit_seconds']:.2f}",
                     f"{r['peak_rss_mb']:.0f}", "yes" if r["converged"] else "NO", f"{r['diff_truth']:.1e}"])
    if "csv_bytes" in result:
        notes.append(f"CSV of {result['csv_bytes'] / 1e6:.0f} MB, read in chunks of {result['chunk_rows']:,} "
                     "rows (twice: group labels, then statistics).")
    c = result.get("teachlmm_vs_mixedlm")
    if c:
        notes.append(f"teachlmm streamed / mixedlm in memory: time {c['time_ratio']:.2f}, peak memory "
                     f"{c['memory_ratio']:.2f}; estimates differ by {c['max_abs_diff']:.1e}.")
    for tool, why in result.get("skipped", {}).items():
        notes.append(f"{tool} skipped: {why}")
    title = f"{result['rows']:,} rows, {result['groups']:,} groups streamed from CSV, M4-like, REML"
    return [(title, header, rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows and no peer")
    parser.add_argument("--json", help="write the result to this file")
    parser.add_argument("--rows", type=int, help="rows in the CSV (default 10,000,000; --quick: 1,000,000)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    result = run(quick=args.quick, rows=args.rows)
    return _report.finish(result, tables, args.json, width=16)


if __name__ == "__main__":
    main()
