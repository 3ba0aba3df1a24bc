"""Mixing of the Gibbs sampler for crossed factors: the joint update of (beta, b_1..b_K) vs the factorwise one.

Issue #13, Deliver 4: "a sampler that updates one crossed factor given the others mixes worse as the
data grow (Papaspiliopoulos, Roberts & Zanella 2020): measure it". teachlmm.multilevel_gibbs has both:

* ``update="joint"``: (beta, b_1, ..., b_K) in one draw from their Gaussian full conditional;
* ``update="factorwise"``: beta given the b's, then each b_k given beta and the other b_l.

Data: a simulated crossed design ``y ~ x + (1 | row) + (1 | col)``, a J x J grid with each cell
observed with probability 0.5 (n about J^2 / 2), beta = (1, 0.5), G_row = 1, G_col = 0.5, sigma2 = 1,
for J = 10, 20, 40, 80; and the real Penicillin (crossed, 24 x 6) and Pastes (nested) data. The same
data, prior (the default), seed and run length (4 chains x DRAWS after WARMUP) for both updates.

Measured: bulk ESS per kept draw (teachlmm.diagnostics.ess_bulk / (chains x draws)) of the intercept,
x, G_row, G_col and sigma2, and their minimum. ESS per draw does not depend on the machine's load,
so it is the number to compare. Also CPU time per 4-chain sweep (one BLAS thread, an untimed warm-up,
the median of 5 interleaved runs of 100 sweeps per update), and min-ESS per CPU-second.

    python tests/benchmarks/bench_multilevel_gibbs.py [--quick] [--json OUT]

Writes tests/benchmarks/results/multilevel_gibbs.json (and OUT if given).
"""
import argparse
import datetime
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import teachlmm as tl                                       # noqa: E402
from teachlmm import diagnostics                            # noqa: E402
from teachlmm import multilevel_gibbs as mg                 # noqa: E402
from teachlmm.multilevel import MultilevelModel             # noqa: E402
from _report import finish                                  # noqa: E402

RESULTS = os.path.join(HERE, "results", "multilevel_gibbs.json")
CHAINS, DRAWS, WARMUP = 4, 2000, 500
UPDATES = ("joint", "factorwise")


def crossed_design(J, seed=1, keep=0.5):
    rng = np.random.default_rng([seed, J])
    i, j = np.meshgrid(np.arange(J), np.arange(J), indexing="ij")
    kept = rng.random(i.shape) < keep
    i, j = i[kept], j[kept]
    x = rng.normal(size=i.size)
    a, c = rng.normal(size=J), rng.normal(size=J) * np.sqrt(0.5)
    y = 1.0 + 0.5 * x + a[i] + c[j] + rng.normal(size=i.size)
    data = {"y": y, "x": x, "row": np.array([f"r{k:03d}" for k in i]), "col": np.array([f"c{k:03d}" for k in j])}
    return MultilevelModel("y ~ x + (1 | row) + (1 | col)", data)


def real(name):
    data = tl.read_csv(os.path.join(ROOT, "tests", "reference", "data", f"{name}.csv"))
    formula = {"penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
               "pastes": "strength ~ 1 + (1 | batch/cask)"}[name]
    return MultilevelModel(formula, data)


def ess_per_draw(model, update, draws, warmup, seed=2020):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mg.sample(model, draws=draws, warmup=warmup, chains=CHAINS, seed=seed, update=update, check=False)
    return {name: diagnostics.ess_bulk(post.get(name)) / (CHAINS * draws) for name in post.names()}


def cpu_per_sweep(model, repeats=5, sweeps=100):
    """Median CPU seconds per 4-chain sweep, updates interleaved, after an untimed warm-up."""
    states = {u: mg.init(model, seed=1, chains=CHAINS, update=u) for u in UPDATES}
    for u in UPDATES:                                        # untimed warm-up
        for _ in range(20):
            states[u] = mg.step(states[u])
    times = {u: [] for u in UPDATES}
    for _ in range(repeats):
        for u in UPDATES:
            t0 = time.process_time()
            for _ in range(sweeps):
                states[u] = mg.step(states[u])
            times[u].append((time.process_time() - t0) / sweeps)
    return {u: float(np.median(t)) for u, t in times.items()}


def run(quick=False):
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:
        limiter = None
    draws, warmup = (400, 100) if quick else (DRAWS, WARMUP)
    sizes = (10, 20) if quick else (10, 20, 40, 80)
    cases = [(f"crossed J={J}", crossed_design(J)) for J in sizes] + [(n, real(n)) for n in ("penicillin", "pastes")]
    rows = []
    for label, model in cases:
        cpu = cpu_per_sweep(model, repeats=3 if quick else 5, sweeps=20 if quick else 100)
        for u in UPDATES:
            ess = ess_per_draw(model, u, draws, warmup)
            rows.append(dict(case=label, n=model.n, levels=[t.J for t in model.terms], update=u,
                             ess_per_draw=ess, min_ess_per_draw=min(ess.values()),
                             cpu_ms_per_sweep=1e3 * cpu[u],
                             min_ess_per_cpu_second=min(ess.values()) * CHAINS / cpu[u]))
            print(f"{label:>16} {u:>10}: min ESS/draw {rows[-1]['min_ess_per_draw']:.3f}  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in ess.items()), flush=True)
    if limiter is not None:
        limiter.restore_original_limits()
    return dict(benchmark="bench_multilevel_gibbs", date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                chains=CHAINS, draws=draws, warmup=warmup, quick=quick, prior="default (Huang-Wand per term, "
                "Jeffreys sigma2, flat beta)", machine_note="2 cores shared with other jobs: CPU times are "
                "indicative; ESS per draw does not depend on load", rows=rows)


def tables(result):
    header = ["case", "n", "update", "ESS/draw b0", "ESS/draw G1", "ESS/draw G2", "min ESS/draw", "ms/sweep",
              "minESS/cpu-s"]
    out = []
    for r in result["rows"]:
        e = r["ess_per_draw"]
        first, (g1, g2) = list(e)[0], [k for k in e if k.startswith("G[")][:2]
        out.append([r["case"], r["n"], r["update"], f"{e[first]:.3f}", f"{e[g1]:.3f}", f"{e[g2]:.3f}",
                    f"{r['min_ess_per_draw']:.3f}",
                    f"{r['cpu_ms_per_sweep']:.2f}", f"{r['min_ess_per_cpu_second']:.0f}"])
    notes = [f"{result['chains']} chains x {result['draws']} draws after {result['warmup']}; bulk ESS "
             "(teachlmm.diagnostics) per kept draw; CPU ms per 4-chain sweep, one BLAS thread, median of "
             "interleaved runs; " + result["machine_note"]]
    return [("Gibbs for crossed factors: joint vs factorwise update", header, out, notes)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(quick=args.quick)
    finish(result, tables, RESULTS if not args.quick else None, width=12)
    if args.json:
        finish(result, lambda r: [], args.json)
