"""InstEval in full (issue 13's scale benchmark): formula to fit, teachlmm vs mixedlm, and lme4's recorded time.

    y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)

73,421 ratings; 2,972 students (s) x 1,128 lecturers (d) crossed, plus 14
departments; ``service`` a 0/1 factor (coefficient ``service1``). Fitted by REML
and ML with

    teachlmm   tl.multilevel.fit(formula, data, reml=...)     (data: dict of columns)
    mixedlm    mixedlm.lmer(formula, df, REML=...)            (df: pandas DataFrame; if installed)

lme4's formula-to-fit CPU time comes from ``tests/reference/insteval_reference.json``
(measured by ``tests/reference/insteval_reference.R`` in R, another process: indicative).

InstEval ships with lme4 (GPL) and is not part of this repository. The script
reads the CSV named by ``$INSTEVAL_CSV`` (default ``/tmp/insteval.csv``); if it
is absent and R with lme4 is installed it writes it there with
``write.csv(lme4::InstEval[c("y", "s", "d", "dept", "service")], ...)``; if
neither (or lme4's reference numbers are missing), it says so and exits cleanly
(status 0), writing ``{"skipped": why}`` to ``--json`` if given (run_all.py
reports it). Never commit the CSV.

Protocol (DEVELOPERS.md): CPU time (``time.process_time``), one BLAS thread, an
untimed warm-up per tool and criterion, then ``--repeats`` (default 5)
interleaved runs (teachlmm, mixedlm, teachlmm, ...); medians reported, with
each tool's distance to lme4's optimum.

    python tests/benchmarks/bench_insteval.py [--quick] [--repeats N] [--no-mixedlm] [--json OUT]
    (default OUT: tests/benchmarks/results/insteval.json; --quick: one repeat)
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")                 # one thread per tool, before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.path.join(ROOT, "tests", "reference", "insteval_reference.json")
OUT = os.path.join(HERE, "results", "insteval.json")
FORMULA = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)"
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import teachlmm as tl  # noqa: E402
from _report import finish, skip  # noqa: E402


def csv_path():
    """The InstEval CSV: $INSTEVAL_CSV, else exported from R to /tmp; None if neither is possible."""
    path = os.environ.get("INSTEVAL_CSV", "/tmp/insteval.csv")
    if os.path.exists(path):
        return path
    if shutil.which("Rscript") is None:
        return None
    code = f'library(lme4); write.csv(InstEval[c("y", "s", "d", "dept", "service")], "{path}", row.names = FALSE)'
    done = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
    return path if done.returncode == 0 and os.path.exists(path) else None


def load(path):
    """Columns as teachlmm reads them, with the grouping columns and service as text (factors, as in R)."""
    data = tl.read_csv(path)
    for name in ("s", "d", "dept", "service"):
        col = np.asarray(data[name])
        if col.dtype.kind == "f":
            col = np.array([str(int(v)) for v in col])
        data[name] = col
    return data


def teachlmm_fit(data, reml):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = tl.multilevel.fit(FORMULA, data, reml=reml)
    return dict(fixef=r.fixef, G={k: float(v[0, 0]) for k, v in r.Gs.items()}, sigma2=r.sigma2, loglik=r.loglik)


def mixedlm_fit(df, reml):
    import mixedlm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mixedlm.lmer(FORMULA, df, REML=reml)
    fixef = dict(zip(r.fixef().keys(), r.fixef().values())) if hasattr(r.fixef(), "keys") else {}
    return dict(fixef=fixef, loglik=float(r.logLik().value) if hasattr(r.logLik(), "value") else float(r.logLik()))


def distance(got, ref):
    """Max relative difference to lme4 over fixef, G, sigma2 (what the tool reports) and the loglik difference."""
    rel = [abs(got["fixef"][k] / v - 1) for k, v in ref["fixef"].items() if k in got.get("fixef", {})]
    rel += [abs(got["G"][k] / v["matrix"][0][0] - 1) for k, v in ref["G"].items() if k in got.get("G", {})]
    if "sigma2" in got:
        rel.append(abs(got["sigma2"] / ref["sigma2"] - 1))
    return dict(max_rel=max(rel) if rel else None, loglik_diff=got["loglik"] - ref["loglik"])


def timed(fn, *args):
    t = time.process_time()
    out = fn(*args)
    return time.process_time() - t, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat instead of five")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None, help=f"write the result here (default {os.path.relpath(OUT, ROOT)})")
    ap.add_argument("--no-mixedlm", action="store_true")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    if not os.path.exists(REFERENCE):
        return skip(f"{os.path.relpath(REFERENCE, ROOT)} (lme4's numbers) is not there", args.json)
    path = csv_path()
    if path is None:
        return skip("InstEval is not available (no $INSTEVAL_CSV file and no R with lme4 to export it)", args.json)
    ref = json.load(open(REFERENCE))
    data = load(path)
    tools = {"teachlmm": (teachlmm_fit, data)}
    if not args.no_mixedlm:
        try:
            import mixedlm  # noqa: F401
            import pandas as pd
            tools["mixedlm"] = (mixedlm_fit, pd.DataFrame({k: np.asarray(v) for k, v in data.items()}))
        except ImportError:
            print("mixedlm or pandas not installed: teachlmm only")
    results = {"formula": FORMULA, "n": int(len(data["y"])), "repeats": args.repeats,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
                          "jobs; one BLAS thread", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "fits": {}}
    for reml in (True, False):
        key = "insteval_REML" if reml else "insteval_ML"
        entry = {"lme4_median_s": ref["timing"]["per_fit"][key]["median_s"], "tools": {}}
        for name, (fn, d) in tools.items():                      # untimed warm-up; also the accuracy check
            try:
                t, out = timed(fn, d, reml)
                entry["tools"][name] = {"warmup_s": t, **distance(out, ref[key]), "runs_s": []}
            except Exception as err:                             # a peer that cannot fit it is reported, not fatal
                entry["tools"][name] = {"error": f"{type(err).__name__}: {err}"[:300]}
        for _ in range(args.repeats):
            for name, (fn, d) in tools.items():
                if "error" not in entry["tools"][name]:
                    entry["tools"][name]["runs_s"].append(timed(fn, d, reml)[0])
        for name, e in entry["tools"].items():
            if e.get("runs_s"):
                e["median_s"] = float(np.median(e["runs_s"]))
                e["ratio_to_lme4"] = e["median_s"] / entry["lme4_median_s"]
        if "mixedlm" in entry["tools"] and "median_s" in entry["tools"]["mixedlm"]:
            entry["ratio_teachlmm_to_mixedlm"] = entry["tools"]["teachlmm"]["median_s"] / \
                entry["tools"]["mixedlm"]["median_s"]
        results["fits"][key] = entry
        print(key, json.dumps(entry, indent=1, default=float))
    results = json.loads(json.dumps(results, default=float))          # numpy numbers as plain floats
    finish(results, tables, args.json or OUT)
    return 0


def tables(result):
    """(title, header, rows, notes) for run_all.py's report."""
    rows = []
    for key, entry in result["fits"].items():
        rows.append([key.replace("insteval_", ""), "lme4 (recorded)", f"{entry['lme4_median_s']:.2f}", "1.00", "", ""])
        for name, e in entry["tools"].items():
            if "error" in e:
                rows.append([key.replace("insteval_", ""), name, "failed", "", "", e["error"][:60]])
                continue
            rows.append([key.replace("insteval_", ""), name, f"{e.get('median_s', float('nan')):.2f}",
                         f"{e.get('ratio_to_lme4', float('nan')):.2f}",
                         "-" if e.get("max_rel") is None else f"{e['max_rel']:.1e}", f"{e['loglik_diff']:.1e}"])
    notes = [f"{result['formula']}, n = {result['n']}; CPU seconds, median of {result['repeats']} interleaved runs "
             f"after a warm-up; {result['machine']}; lme4's time from tests/reference/insteval_reference.json "
             "(another process: indicative)"]
    return [("InstEval: formula to fit, CPU seconds", ["criterion", "tool", "median s", "ratio to lme4",
                                                        "max rel. diff", "loglik - lme4's"], rows, notes)]


if __name__ == "__main__":
    sys.exit(main())
