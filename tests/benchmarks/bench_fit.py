"""Radon M3 and M4 by REML, formula to fit: teachlmm vs statsmodels' MixedLM vs mixedlm's lmer().

What is timed, for each tool, is what a user types to go from a formula and
the data to a fitted model (the data are already in memory, in the form the
tool takes: a dict of arrays for teachlmm, a pandas DataFrame for the peers):

    teachlmm     tl.em.fit(tl.Model(formula, data), reml=True)
    statsmodels  smf.mixedlm(fixed, df, groups="county", re_formula="1 + floor").fit(reml=True)
    mixedlm      mixedlm.lmer(formula, df, REML=True)        (the Rust port of lme4)

Protocol: every tool in this one process, warm-up runs first, then the timed
runs round-robin (one run of each tool in turn, so a burst of load from
elsewhere on the machine falls on all of them); the table shows the median
wall time. Each tool's estimates (fixed effects, G, sigma2) are compared with
lme4's optimum in tests/reference/lme4_radon.json (max abs difference), and
its convergence flag is reported.

    python tests/benchmarks/bench_fit.py [--quick] [--json OUT]

statsmodels and mixedlm are optional (``pip install -e ".[bench]"``); a
missing one is skipped with a message.
"""
import argparse
import gc
import json
import os
import sys
import time
import warnings

import numpy as np

import _report  # noqa: E402  (tests/benchmarks/_report.py: save JSON, print tables)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.path.join(ROOT, "tests", "reference", "lme4_radon.json")

MODELS = {
    "M3": {"fixed": "log_radon ~ 1 + floor", "random": "(1 + floor | county)"},
    "M4": {"fixed": "log_radon ~ 1 + floor + log_uranium + floor:log_uranium",
           "random": "(1 + floor | county)"},
}
TOOLS = ("teachlmm", "statsmodels", "mixedlm")


# ----------------------------------------------------------------------------
# the three tools: fit, and their estimates in one common form
# ----------------------------------------------------------------------------

def import_teachlmm():
    """teachlmm from this source tree (also when it is not installed)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


def _estimates(fixef, G, sigma2, loglik, converged):
    return {"fixef": [float(v) for v in fixef], "G": np.asarray(G, float).tolist(),
            "sigma2": float(sigma2), "loglik": float(loglik), "converged": bool(converged)}


def teachlmm_fitter(formula, data):
    """The teachlmm call, and how to read its estimates."""
    tl = import_teachlmm()

    def fit():
        return tl.em.fit(tl.Model(formula, data), reml=True)

    def read(fit):
        return _estimates(fit.beta, fit.G, fit.sigma2, fit.loglik, fit.converged)
    return fit, read


def statsmodels_fitter(fixed, df):
    import statsmodels.formula.api as smf

    def fit():
        model = smf.mixedlm(fixed, df, groups="county", re_formula="1 + floor")
        return model.fit(reml=True)

    def read(fit):
        return _estimates(fit.fe_params.values, fit.cov_re.values, fit.scale, fit.llf, fit.converged)
    return fit, read


def mixedlm_fitter(formula, df):
    import mixedlm

    def fit():
        return mixedlm.lmer(formula, df, REML=True)

    def read(fit):
        G = next(iter(fit.VarCorr().groups.values())).cov
        return _estimates(list(fit.fixef().values()), G, fit.sigma ** 2, fit.logLik().value, fit.converged)
    return fit, read


def missing_peers():
    """{tool: reason} for the optional peers that cannot be imported here."""
    import importlib.util
    need = {"statsmodels": ["statsmodels", "pandas"], "mixedlm": ["mixedlm", "pandas"]}
    return {tool: f"not installed ({', '.join(m for m in mods if importlib.util.find_spec(m) is None)}); "
                  'pip install -e ".[bench]"'
            for tool, mods in need.items() if any(importlib.util.find_spec(m) is None for m in mods)}


# ----------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------

def time_round_robin(calls, repeats, warmup=None):
    """Median wall and CPU time of each callable, timed in turns.

    Parameters
    ----------
    calls : dict name -> callable with no arguments
    repeats : dict name -> number of timed calls
    warmup : dict name -> untimed calls of each first (imports, caches; default 2);
        the warnings of the first one are kept (e.g. statsmodels' convergence warnings)

    Returns
    -------
    dict name -> {"seconds": median wall, "cpu_seconds": median process CPU, "runs": [...],
                  "warnings": [...], "result": the last call's return value}
    """
    out = {name: {"runs": [], "cpu": [], "result": None, "warnings": []} for name in calls}
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[name]["result"] = call()
        out[name]["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:120]}"
                                        for w in caught})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, call in calls.items():
            for _ in range((warmup or {}).get(name, 2) - 1):
                out[name]["result"] = call()
        for round_ in range(max(repeats.values())):
            for name, call in calls.items():
                if round_ >= repeats[name]:
                    continue
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                out[name]["result"] = call()
                t1, c1 = time.perf_counter(), time.process_time()
                out[name]["runs"].append(t1 - t0)
                out[name]["cpu"].append(c1 - c0)
    return {name: {"seconds": float(np.median(o["runs"])), "cpu_seconds": float(np.median(o["cpu"])),
                   "min_seconds": float(np.min(o["runs"])), "runs": [float(r) for r in o["runs"]],
                   "warnings": o["warnings"], "result": o["result"]} for name, o in out.items()}


# ----------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------

def compare(est, ref):
    """Max abs differences from lme4's optimum: fixed effects, G and sigma2 (one number), and loglik."""
    diffs = np.concatenate([np.subtract(est["fixef"], list(ref["fixef"].values())),
                            (np.asarray(est["G"]) - np.asarray(ref["G"])).ravel(),
                            [est["sigma2"] - ref["sigma2"]]])
    return {"max_abs_diff": float(np.max(np.abs(diffs))), "loglik_diff": est["loglik"] - ref["loglik"]}


def run(quick=False):
    """Time the three tools on radon M3 and M4 (REML) and compare their estimates with lme4's."""
    tl = import_teachlmm()
    data = tl.load_radon()
    reference = json.load(open(REFERENCE))
    skipped = missing_peers()
    df = None
    if len(skipped) < 2:
        import pandas as pd
        df = pd.DataFrame({k: v for k, v in data.items()})
    fast = 10 if quick else 40                       # timed runs of teachlmm and mixedlm
    slow = {"M3": 2 if quick else 7, "M4": 1 if quick else 3}   # of statsmodels (0.3 s and 3 s a fit)
    out = {"protocol": "formula to fit, REML; warm-up then round-robin timed runs, median wall time",
           "skipped": skipped, "models": {}}
    for name, spec in MODELS.items():
        formula = f"{spec['fixed']} + {spec['random']}"
        fitters = {"teachlmm": teachlmm_fitter(formula, data)}
        if "statsmodels" not in skipped:
            fitters["statsmodels"] = statsmodels_fitter(spec["fixed"], df)
        if "mixedlm" not in skipped:
            fitters["mixedlm"] = mixedlm_fitter(formula, df)
        repeats = {tool: slow[name] if tool == "statsmodels" else fast for tool in fitters}
        load0 = os.getloadavg()[0]
        timed = time_round_robin({tool: f for tool, (f, _) in fitters.items()}, repeats,
                                 warmup={"statsmodels": 1})
        ref = reference[f"{name}_REML"]
        model = {"formula": formula, "n": 919, "J": 85, "load_avg_1min": [load0, os.getloadavg()[0]],
                 "tools": {}}
        for tool, (_, read) in fitters.items():
            est = read(timed[tool].pop("result"))
            model["tools"][tool] = {**timed[tool], "estimates": est, **compare(est, ref)}
        # where teachlmm's time goes: building the Model vs the EM fit
        built = tl.Model(formula, data)
        parts = time_round_robin({"model": lambda: tl.Model(formula, data),
                                  "em.fit": lambda: tl.em.fit(built, reml=True)},
                                 {"model": fast, "em.fit": fast})
        em = parts["em.fit"]["result"]
        model["tools"]["teachlmm"].update(model_seconds=parts["model"]["seconds"],
                                          em_fit_seconds=parts["em.fit"]["seconds"], n_iter=int(em.n_iter))
        t = {tool: model["tools"][tool]["seconds"] for tool in model["tools"]}
        model["ratios"] = {
            "teachlmm_over_mixedlm": t["teachlmm"] / t["mixedlm"] if "mixedlm" in t else None,
            "statsmodels_over_teachlmm": t["statsmodels"] / t["teachlmm"] if "statsmodels" in t else None,
        }
        out["models"][name] = model
    return out


# ----------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------

def _met(ok):
    return "met" if ok else "NOT met"


def tables(result):
    """The result as tables: (title, header, rows, notes)."""
    header = ["model", "tool", "median ms", "min ms", "CPU ms", "time / teachlmm", "converged",
              "max |diff| lme4", "loglik diff"]
    rows, notes = [], []
    for name, model in result["models"].items():
        t_tl = model["tools"]["teachlmm"]["seconds"]
        for tool in TOOLS:
            r = model["tools"].get(tool)
            if r is None:
                rows.append([name, tool, "skipped"] + [""] * (len(header) - 3))
                continue
            rows.append([name, tool, f"{1e3 * r['seconds']:.1f}", f"{1e3 * r['min_seconds']:.1f}",
                         f"{1e3 * r['cpu_seconds']:.1f}", f"{r['seconds'] / t_tl:.2f}",
                         "yes" if r["estimates"]["converged"] else "NO",
                         f"{r['max_abs_diff']:.1e}", f"{r['loglik_diff']:+.1e}"])
        tl_ = model["tools"]["teachlmm"]
        notes.append(f"{name}: teachlmm = Model {1e3 * tl_['model_seconds']:.1f} ms + em.fit "
                     f"{1e3 * tl_['em_fit_seconds']:.1f} ms ({tl_['n_iter']} EM iterations).")
        ratios = model["ratios"]
        if ratios["teachlmm_over_mixedlm"] is not None:
            v = ratios["teachlmm_over_mixedlm"]
            notes.append(f"{name}: teachlmm / mixedlm = {v:.2f} (target <= 2: {_met(v <= 2)}).")
        if ratios["statsmodels_over_teachlmm"] is not None:
            v = ratios["statsmodels_over_teachlmm"]
            notes.append(f"{name}: statsmodels / teachlmm = {v:.1f} (target >= 20: {_met(v >= 20)}; "
                         f"the core issue's EM target >= 5: {_met(v >= 5)}).")
        for tool, r in model["tools"].items():
            for w in r.get("warnings", []):
                notes.append(f"{name} {tool} warns: {w}")
    for tool, why in result.get("skipped", {}).items():
        notes.append(f"{tool} skipped: {why}")
    notes.append("Times: median and minimum wall time of the timed runs; CPU: median process CPU time "
                 "(all threads). Differences: fixed effects, G and sigma2 vs lme4's optimum.")
    return [("Radon M3/M4, REML, formula to fit (n = 919, J = 85)", header, rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    return _report.finish(result, tables, args.json, width=14)


if __name__ == "__main__":
    main()
