"""The collapsed sampler against the Gibbs sweep on the real data sets of the benchmark suite.

The collapsed engine (``tl.gibbs.sample(..., engine="collapsed")``, :mod:`teachlmm.collapsed`)
was developed on radon M3 and M4. This script checks it where it was not tuned: every
one-grouping-factor model of ``tests/reference/suite_reference.json`` (lme4's data sets,
17 models, q = 1 to 3, 5 to 2,280 groups), under the default prior (Huang-Wand on G,
Jeffreys on sigma2, beta flat). Per model, both engines run 4 chains x 4,000 draws after
1,000 warm-up (``keep_b=False``), one after the other in one process, CPU time, one BLAS
thread:

* the collapsed engine's acceptance rate and proposal efficiency;
* each engine's minimum bulk ESS over beta, G (on and below the diagonal) and sigma2,
  per draw and per CPU second, and their ratio (collapsed / Gibbs);
* the largest distance between the two engines' posterior means, in combined Monte
  Carlo standard errors (a check that they sample the same posterior).

Run::

    python tests/benchmarks/bench_collapsed_suite.py              # every model, ~5 min
    python tests/benchmarks/bench_collapsed_suite.py --only rail,igf
    python tests/benchmarks/bench_collapsed_suite.py --quick          # rail, igf, orthodont

Writes ``tests/benchmarks/results/collapsed_suite.json``.
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import _report  # noqa: E402
from bench_suite import load_suite  # noqa: E402

OUT = os.path.join(HERE, "results", "collapsed_suite.json")
DRAWS, WARMUP, CHAINS, SEED = 4000, 1000, 4, 2026


def quantities(post):
    """beta, the nonzero G entries on and below the diagonal, sigma2: (name, draws (chains, draws))."""
    m = post.model
    out = [(f"beta[{k}]", post.draws["beta"][..., k]) for k in range(m.p)]
    out += [(f"G[{i},{j}]", post.draws["G"][..., i, j]) for i in range(m.q) for j in range(i + 1)
            if np.any(post.draws["G"][..., i, j])]
    return out + [("sigma2", post.draws["sigma2"])]


def measure(tl, model, engine):
    """One timed run of an engine: its posterior, CPU seconds, and a summary of its draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        post = tl.gibbs.sample(model, draws=DRAWS, warmup=WARMUP, chains=CHAINS, seed=SEED, keep_b=False,
                               engine=engine)
        cpu = time.process_time() - t0
    draws = dict(quantities(post))
    return post, _report.summarise(draws, cpu, cpu, list(draws))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma list of suite keys (without _REML)")
    parser.add_argument("--json", default=OUT)
    parser.add_argument("--quick", action="store_true", help="three small models only (rail, igf, orthodont)")
    args = parser.parse_args(argv)
    if args.quick and not args.only:
        args.only = "rail,igf,orthodont"
    limits = _report.one_thread()                       # noqa: F841 (kept: one BLAS thread while it lives)
    import teachlmm as tl
    suite, _ = load_suite()
    chosen = [s for s in suite if s[0].endswith("_REML")]
    if args.only:
        keep = {k.strip() for k in args.only.split(",")}
        chosen = [s for s in chosen if s[0][:-5] in keep]
    fits, rows = {}, []
    for key, dataset, path, formula, _, _ in chosen:
        model = tl.Model(formula, tl.read_csv(path))
        if hasattr(model, "terms"):
            continue                                    # several grouping factors: the collapsed engine refuses
        measure(tl, model, "collapsed")                 # untimed warm-up (imports, first touches)
        gibbs_post, gibbs_run = measure(tl, model, "fast")
        col_post, col_run = measure(tl, model, "collapsed")
        names = list(gibbs_run["ess"])
        pooled = ({n: [d] for n, d in quantities(col_post)}, {n: [d] for n, d in quantities(gibbs_post)})
        agree = _report.agreement(*pooled, names, a="collapsed", b="gibbs")
        record = {"dataset": dataset, "formula": formula, "n": model.n, "J": model.J, "q": model.q,
                  "acceptance": float(np.mean(col_post.acceptance)), "efficiency": col_post.proposal_efficiency,
                  "gibbs": gibbs_run, "collapsed": col_run,
                  "ratio": col_run["min_ess_per_cpu_second"] / gibbs_run["min_ess_per_cpu_second"],
                  "max_z": max(a["z"] for a in agree.values()), "agreement": agree}
        fits[key] = record
        rows.append([key[:-5], str(model.J), str(model.q), f"{record['acceptance']:.2f}",
                     f"{min(col_run['ess_per_draw'].values()):.2f}", f"{min(gibbs_run['ess_per_draw'].values()):.2f}",
                     f"{col_run['cpu_seconds']:.2f}", f"{gibbs_run['cpu_seconds']:.2f}", f"{record['ratio']:.1f}",
                     f"{record['max_z']:.1f}"])
        print(" ".join(rows[-1]), flush=True)
    ratios = [f["ratio"] for f in fits.values()]
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": _report.machine(),
              "protocol": (f"default prior; {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up, keep_b=False, "
                           "seed 2026; CPU time, one BLAS thread; one run per engine; min ArviZ bulk ESS over beta, "
                           "G (nonzero, on and below the diagonal) and sigma2"),
              "fits": fits, "ratio_min": min(ratios), "ratio_median": float(np.median(ratios)),
              "max_z": max(f["max_z"] for f in fits.values())}
    header = ["model", "J", "q", "accept", "ESS/draw col", "ESS/draw Gibbs", "CPU s col", "CPU s Gibbs",
              "ratio", "max z"]
    notes = [result["protocol"], f"ratio = min ESS per CPU second, collapsed / Gibbs: median "
             f"{result['ratio_median']:.1f}, smallest {result['ratio_min']:.1f}; max z = largest distance between "
             f"the engines' posterior means in combined MCSEs ({result['max_z']:.1f})"]
    _report.finish(result, lambda _: [("Collapsed sampler vs the Gibbs sweep, the suite's real data", header, rows,
                                       notes)], json_path=args.json)


if __name__ == "__main__":
    main()
