"""The benchmark suite of real data sets (issue 12): formula-to-fit CPU time per fit and in total.

Each data set of ``tests/reference/suite_reference.json`` (R data sets with one
grouping factor, exported to ``tests/reference/data/*.csv`` by
``tests/reference/export_data.R``) is fitted by REML and by ML with

    teachlmm     tl.em.fit(tl.Model(formula, data), reml=...)          (data: dict of columns)
    mixedlm      mixedlm.lmer(formula, df, REML=...)                   (df: pandas DataFrame)
    statsmodels  smf.mixedlm(fixed, df, groups=g, re_formula=...).fit(reml=...)

and lme4's own formula-to-fit CPU time is read from the JSON (measured by
``tests/reference/suite_reference.R`` in another process and session, so it is
marked *indicative*; R is not run here).

Protocol (DEVELOPERS.md): CPU time (``time.process_time``), one BLAS thread per
tool, an untimed warm-up of every fit, then ``--repeats`` (default 5) interleaved
runs per tool (teachlmm, mixedlm, teachlmm, mixedlm, ...), median reported.
statsmodels is far slower: it gets one warm-up on the smallest data set and then
``--statsmodels-repeats`` (default 1) timed runs per fit.

Each tool's optimum is compared with lme4's best (max relative difference over
fixef, G, sigma2; loglik difference) and its convergence flag is kept.

    python tests/benchmarks/bench_suite.py [--quick] [--repeats N] [--json OUT]
    (default OUT: tests/benchmarks/results/suite.json)
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")                 # one thread per tool, before numpy is imported

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.path.join(ROOT, "tests", "reference", "suite_reference.json")
OUT = os.path.join(HERE, "results", "suite.json")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import teachlmm as tl  # noqa: E402


def load_suite(path=REFERENCE):
    """[(key, dataset, csv path, formula, reml, lme4 reference entry)] from the reference JSON."""
    ref = json.load(open(path))
    out = []
    for key, e in ref.items():
        if not (key.endswith("_REML") or key.endswith("_ML")) or "formula" not in e:
            continue
        out.append((key, e["dataset"], os.path.join(ROOT, e["data"]), e["formula"], bool(e["reml"]), e))
    return out, ref


def lme4_timing(ref, key):
    """lme4's committed median CPU seconds for this fit, or None."""
    timing = ref.get("timing")
    timing = timing[0] if isinstance(timing, list) and timing else timing
    try:
        return float(timing["per_fit"][key]["median_s"])
    except (TypeError, KeyError):
        return None


# ----------------------------------------------------------------------------
# the three tools, and their estimates in one common form
# ----------------------------------------------------------------------------

def _estimates(fixef, G, sigma2, loglik, converged):
    return {"fixef": [float(v) for v in fixef], "G": np.atleast_2d(np.asarray(G, float)).tolist(),
            "sigma2": float(sigma2), "loglik": float(loglik), "converged": bool(converged)}


def teachlmm_fitter(formula, data, reml):
    def fit():
        return tl.em.fit(tl.Model(formula, data), reml=reml)

    def read(f):
        return _estimates(f.beta, f.G, f.sigma2, f.loglik, f.converged) | {"n_iter": int(f.n_iter)}
    return fit, read


def mixedlm_fitter(formula, df, reml):
    import mixedlm

    def fit():
        return mixedlm.lmer(formula, df, REML=reml)

    def read(f):
        G = next(iter(f.VarCorr().groups.values())).cov
        return _estimates(list(f.fixef().values()), G, f.sigma ** 2, f.logLik().value, f.converged)
    return fit, read


def split_formula(formula):
    """'y ~ a + b + (1 + a | g)' -> ('y ~ a + b', '1 + a', 'g') for statsmodels."""
    m = re.search(r"\+\s*\(\s*([^|()]+?)\s*\|\s*([^|()]+?)\s*\)\s*$", formula)
    return formula[:m.start()].strip(), m.group(1), m.group(2)


def statsmodels_fitter(formula, df, reml):
    import statsmodels.formula.api as smf
    fixed, re_terms, group = split_formula(formula)

    def fit():
        return smf.mixedlm(fixed, df, groups=group, re_formula=re_terms).fit(reml=reml)

    def read(f):
        return _estimates(f.fe_params.values, f.cov_re.values, f.scale, f.llf, f.converged)
    return fit, read


def compare(est, ref):
    """Max relative difference from lme4's best, as tests/test_suite_lme4.py measures it: G entries
    relative to max(|G_ab|, sigma2) (a variance at 0 compares on sigma2's scale), sigma2 relative,
    fixed effects relative to max(|beta_k|, 1e-3 se_k); and the loglik difference."""
    G_ref = np.asarray(next(iter(ref["G"].values()))["matrix"], float)
    s2 = ref["sigma2"]
    fe_ref = np.array(list(ref["fixef"].values()), float)
    se = np.array(list(ref["fixef_se"].values()), float) if "fixef_se" in ref else np.abs(fe_ref)
    fe = np.asarray(est["fixef"], float)
    d_fe = np.abs(fe - fe_ref) / np.maximum(np.abs(fe_ref), 1e-3 * se) if fe.shape == fe_ref.shape else [np.inf]
    G = np.asarray(est["G"], float)
    d_G = np.abs(G - G_ref) / np.maximum(np.abs(G_ref), s2) if G.shape == G_ref.shape else [np.inf]
    d_s = abs(est["sigma2"] - s2) / s2
    return {"max_rel_diff": float(max(np.max(d_fe), np.max(d_G), d_s)),
            "loglik_diff": est["loglik"] - ref["loglik"]}


def available(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None and importlib.util.find_spec("pandas") is not None


# ----------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------

def _cpu(call):
    gc.collect()
    c0 = time.process_time()
    res = call()
    return time.process_time() - c0, res


def run(quick=False, repeats=5, sm_repeats=1, statsmodels=True, only=None, reference=REFERENCE):
    suite, ref = load_suite(reference)
    if only:
        suite = [s for s in suite if s[1] in only or s[0] in only]
    peers = {"mixedlm": available("mixedlm"), "statsmodels": statsmodels and available("statsmodels")}
    if quick:
        repeats = 2
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:
        limiter = None
    load0 = os.getloadavg()
    data_cache, fits = {}, {}
    for key, dataset, path, formula, reml, entry in suite:
        if path not in data_cache:
            data = tl.data.read_csv(path)
            df = None
            if peers["mixedlm"] or peers["statsmodels"]:
                import pandas as pd
                df = pd.DataFrame({k: np.asarray(v) for k, v in data.items()})
            data_cache[path] = (data, df)
        data, df = data_cache[path]
        tools = {"teachlmm": teachlmm_fitter(formula, data, reml)}
        if peers["mixedlm"]:
            tools["mixedlm"] = mixedlm_fitter(formula, df, reml)
        if peers["statsmodels"]:
            tools["statsmodels"] = statsmodels_fitter(formula, df, reml)
        fits[key] = {"dataset": dataset, "formula": formula, "reml": reml, "tools": tools, "ref": entry,
                     "n": int(entry.get("nobs", 0)), "J": int(next(iter(entry.get("ngroups", {"": 0}).values())))}
    out = {"protocol": ("formula to fit, CPU time (time.process_time), one BLAS thread per tool, untimed "
                        f"warm-up of every fit, then {repeats} interleaved runs of teachlmm and mixedlm "
                        f"(median); statsmodels {sm_repeats} timed run(s) after one warm-up; lme4's time "
                        "from the committed reference JSON (another process and session): indicative"),
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version(), "load_avg_start": load0,
                       "note": "2 cores shared with other jobs while measured"},
           "versions": _versions(), "fits": {}}
    # warm-up: every fit once, untimed (statsmodels only on the smallest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smallest = min(fits, key=lambda k: fits[k]["n"] or 1e9)
        for key, f in fits.items():
            for tool, (call, _) in f["tools"].items():
                if tool != "statsmodels" or key == smallest:
                    call()
        times = {key: {tool: [] for tool in f["tools"]} for key, f in fits.items()}
        results = {key: {} for key in fits}
        for _ in range(repeats):                         # interleaved: every fit, every tool, in turn
            for key, f in fits.items():
                for tool in ("teachlmm", "mixedlm"):
                    if tool in f["tools"]:
                        t, res = _cpu(f["tools"][tool][0])
                        times[key][tool].append(t)
                        results[key][tool] = res
        for _ in range(sm_repeats):
            for key, f in fits.items():
                if "statsmodels" in f["tools"]:
                    try:
                        t, res = _cpu(f["tools"]["statsmodels"][0])
                    except Exception as err:             # noqa: BLE001 - a failed peer is reported
                        t, res = float("nan"), err
                    times[key]["statsmodels"].append(t)
                    results[key]["statsmodels"] = res
    for key, f in fits.items():
        row = {"dataset": f["dataset"], "formula": f["formula"], "reml": f["reml"], "n": f["n"], "J": f["J"],
               "tools": {}}
        for tool, (_, read) in f["tools"].items():
            res = results[key].get(tool)
            entry = {"cpu_seconds": float(np.median(times[key][tool])), "runs": times[key][tool]}
            if isinstance(res, Exception):
                entry["error"] = f"{type(res).__name__}: {res}"
            else:
                est = read(res)
                entry.update(estimates=est, **compare(est, f["ref"]))
            row["tools"][tool] = entry
        row["tools"]["lme4"] = {"cpu_seconds": lme4_timing(ref, key), "indicative": True}
        out["fits"][key] = row
    out["totals"] = _totals(out["fits"])
    out["machine"]["load_avg_end"] = os.getloadavg()
    if limiter is not None:
        limiter.restore_original_limits()
    return out


def _versions():
    v = {"numpy": np.__version__, "teachlmm": getattr(tl, "__version__", "source tree")}
    for mod in ("mixedlm", "statsmodels", "scipy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:                                # noqa: BLE001
            v[mod] = None
    return v


def _totals(fits):
    tot = {}
    for tool in ("teachlmm", "mixedlm", "statsmodels", "lme4"):
        vals = [f["tools"][tool]["cpu_seconds"] for f in fits.values() if tool in f["tools"]]
        if vals and all(v is not None and np.isfinite(v) for v in vals) and len(vals) == len(fits):
            tot[tool] = float(np.sum(vals))
    ratios = {}
    if "mixedlm" in tot:
        ratios["teachlmm_over_mixedlm_total"] = tot["teachlmm"] / tot["mixedlm"]
        per = [f["tools"]["teachlmm"]["cpu_seconds"] / f["tools"]["mixedlm"]["cpu_seconds"] for f in fits.values()]
        ratios["teachlmm_over_mixedlm_worst"] = float(np.max(per))
    if "lme4" in tot:
        ratios["lme4_over_teachlmm_total"] = tot["lme4"] / tot["teachlmm"]
    if "statsmodels" in tot:
        ratios["statsmodels_over_teachlmm_total"] = tot["statsmodels"] / tot["teachlmm"]
    return {"cpu_seconds": tot, "ratios": ratios}


def tables(result):
    header = ["fit", "n", "J", "teachlmm ms", "iter", "mixedlm ms", "tl/mixedlm", "statsm. ms",
              "lme4 ms*", "tl rel diff", "mx rel diff"]
    rows = []

    def ms(tool, f):
        t = f["tools"].get(tool, {}).get("cpu_seconds")
        return "-" if t is None or not np.isfinite(t) else f"{1e3 * t:.1f}"
    for key, f in result["fits"].items():
        tl_, mx = f["tools"]["teachlmm"], f["tools"].get("mixedlm", {})
        ratio = tl_["cpu_seconds"] / mx["cpu_seconds"] if mx.get("cpu_seconds") else float("nan")
        rows.append([key, f["n"], f["J"], ms("teachlmm", f), tl_["estimates"]["n_iter"], ms("mixedlm", f),
                     f"{ratio:.2f}", ms("statsmodels", f), ms("lme4", f), f"{tl_['max_rel_diff']:.1e}",
                     f"{mx['max_rel_diff']:.1e}" if "max_rel_diff" in mx else "-"])
    tot = result["totals"]
    rows.append(["TOTAL", "", "", *[f"{1e3 * tot['cpu_seconds'][t]:.0f}" if t in tot["cpu_seconds"] else "-"
                                    for t in ("teachlmm",)], "", *[f"{1e3 * tot['cpu_seconds'][t]:.0f}"
                                                                   if t in tot["cpu_seconds"] else "-"
                                                                   for t in ("mixedlm",)],
                 f"{tot['ratios'].get('teachlmm_over_mixedlm_total', float('nan')):.2f}",
                 *[f"{1e3 * tot['cpu_seconds'][t]:.0f}" if t in tot["cpu_seconds"] else "-"
                   for t in ("statsmodels", "lme4")], "", ""])
    notes = [f"{k} = {v:.2f}" for k, v in tot["ratios"].items()]
    notes.append("* lme4: committed timing from tests/reference/suite_reference.json (other session): indicative.")
    notes.append("rel diff: max relative difference from lme4's best optimum over fixef, G, sigma2.")
    return [("Benchmark suite: formula-to-fit CPU time, median", header, rows, notes)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--statsmodels-repeats", type=int, default=1)
    ap.add_argument("--no-statsmodels", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--json", default=OUT)
    ap.add_argument("--reference", default=REFERENCE, help="the suite's reference JSON")
    args = ap.parse_args(argv)
    if not os.path.exists(args.reference):
        print(f"{args.reference} not found: it is written by tests/reference/suite_reference.R (needs R).")
        return 1
    result = run(args.quick, args.repeats, args.statsmodels_repeats, not args.no_statsmodels, args.only,
                 reference=args.reference)
    import _report  # noqa: E402  (tests/benchmarks/_report.py)
    _report.finish(result, tables, args.json, width=11)
    return 0


if __name__ == "__main__":
    sys.exit(main())
