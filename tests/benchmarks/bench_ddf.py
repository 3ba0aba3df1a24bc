"""Cost of the small-sample df on radon M4 (REML), against the cost of the fit itself.

Timed, in one process, round-robin (one call of each in turn, so load from elsewhere
on the machine falls on all of them), after an untimed warm-up of each:

    fit            tl.em.fit(tl.Model(M4, data), reml=True)       formula to fitted model
    satterthwaite  tl.ddf.satterthwaite(fit)                        df of all 4 coefficients
    coef_table     fit.coef_table()                                 the summary's table (df, t, p)
    kenward_roger  tl.ddf.kenward_roger(fit)                        df and adjusted SEs
    anova_type3    tl.anova(fit, ddf="Satterthwaite")              F tests of the 3 terms

Protocol (the project's): CPU time (time.process_time), one BLAS thread
(threadpoolctl), median of ``--repeats`` (default 9, at least 5) interleaved runs.
The target of issue 14: Satterthwaite df for all coefficients cost less than the fit.

    python tests/benchmarks/bench_ddf.py [--repeats N] [--json OUT]
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

import _report  # noqa: E402  (tests/benchmarks/_report.py)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
M4 = "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    repeats = max(5, args.repeats)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm as tl
    from teachlmm import ddf
    from threadpoolctl import threadpool_limits, threadpool_info

    data = tl.load_radon()
    fit = tl.em.fit(tl.Model(M4, data), reml=True)
    calls = {"fit": lambda: tl.em.fit(tl.Model(M4, data), reml=True),
             "satterthwaite": lambda: ddf.satterthwaite(fit),
             "coef_table": lambda: fit.coef_table(),
             "kenward_roger": lambda: ddf.kenward_roger(fit),
             "anova_type3": lambda: tl.anova(fit, ddf="Satterthwaite")}
    times = {k: [] for k in calls}
    with threadpool_limits(limits=1):
        blas = [{"api": i.get("internal_api"), "threads": i.get("num_threads")} for i in threadpool_info()]
        for f in calls.values():                       # warm-up: imports, caches
            f()
        for _ in range(repeats):
            for name, f in calls.items():
                t0 = time.process_time()
                f()
                times[name].append(time.process_time() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {"model": M4, "reml": True, "repeats": repeats, "clock": "CPU (process_time)",
              "median_seconds": med, "all_seconds": times,
              "ratio_to_fit": {k: med[k] / med["fit"] for k in med},
              "target_met": med["satterthwaite"] < med["fit"],
              "blas": blas, "machine": platform.platform(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "note": "machine shared with other jobs (2 cores)"}

    def tables(r):
        rows = [[k, f"{1e3 * v:.2f}", f"{r['ratio_to_fit'][k]:.3f}"] for k, v in r["median_seconds"].items()]
        return [(f"radon M4 (REML): median CPU time of {r['repeats']} interleaved runs, one BLAS thread",
                 ["call", "ms", "x fit"], rows,
                 [f"Satterthwaite df cheaper than the fit: {r['target_met']}"])]
    _report.finish(result, tables, args.json)
    return result


if __name__ == "__main__":
    main()
