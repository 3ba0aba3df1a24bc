"""The cost of one EM iteration and one Gibbs sweep does not grow with n (at a fixed number of groups J).

Every iteration works on the per-group statistics (X_j'X_j, Z_j'Z_j, ...: J
small matrices), never on the n rows, so its time depends on J and not on n.
Only building the Model (one pass over the rows to sum those statistics) is
O(n), and it is timed separately.

For n = 10^4, 10^5, 10^6 rows in J = 1,000 groups (the M4-like simulated
design of ``tl.simulate``) this times, as the median of repeated calls:

    tl.Model(formula, data)          O(n): once per data set
    tl.em.step(state)                the textbook EM iteration
    tl.em.step_factor(state)         the EM iteration on the factor T (what em.fit uses)
    tl.gibbs.step(state)             one Gibbs sweep, one chain
    tl.gibbs.step(state), 4 chains   one sweep of 4 chains advanced together

    python tests/benchmarks/bench_iteration_cost.py [--quick] [--json OUT]
"""
import argparse
import gc
import os
import sys
import time

import numpy as np

import _report  # noqa: E402  (tests/benchmarks/_report.py: save JSON, print tables)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = (10_000, 100_000, 1_000_000)
GROUPS = 1_000
SEED = 7


def import_teachlmm():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


def median_times(calls, repeats, warmup=2):
    """Median and minimum wall time of each no-argument callable, timed in turns.

    Round-robin (one call of each in turn, ``repeats`` rounds) so that load from
    elsewhere on the machine falls on every size alike.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    gc.collect()
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    return {key: (float(np.median(t)), float(np.min(t))) for key, t in times.items()}


def gibbs_stepper(tl, model, chains):
    """A no-argument callable doing one Gibbs sweep (the chain moves on with each call)."""
    state = [tl.gibbs.init(model, seed=1, chains=chains)]

    def sweep():
        state[0] = tl.gibbs.step(state[0])
    return sweep


def gibbs_missing(tl):
    try:
        gibbs = tl.gibbs
    except (ImportError, AttributeError) as e:
        return f"teachlmm.gibbs is not available ({e})"
    if not hasattr(gibbs, "step") or not hasattr(gibbs, "init"):
        return "teachlmm.gibbs has no init/step yet"
    return None


def simulated_model(tl, n, groups):
    """An M4-like data set of n rows in ``groups`` groups (uneven sizes), and the seconds tl.Model took."""
    rng = np.random.default_rng(SEED)
    share = rng.gamma(1.0, size=groups)
    sizes = 2 + rng.multinomial(n - 2 * groups, share / share.sum())
    data, truth = tl.simulate(n_groups=groups, sizes=sizes, seed=SEED)
    t0 = time.perf_counter()
    model = tl.Model(truth["formula"], data)
    return model, time.perf_counter() - t0


def run(quick=False, sizes=SIZES, groups=GROUPS):
    """Time the O(n) model building and the O(J) iterations at each n."""
    tl = import_teachlmm()
    repeats = 15 if quick else 60
    no_gibbs = gibbs_missing(tl)
    out = {"groups": groups, "repeats": repeats, "formula": None, "sizes": {}, "min": {}, "skipped": {}}
    if no_gibbs:
        out["skipped"]["gibbs"] = no_gibbs
    calls = {}
    for n in sizes:
        model, build = simulated_model(tl, n, groups)
        out["formula"] = model.formula.text
        out["sizes"][str(n)] = {"model_seconds": build}
        state = tl.em.init(model, reml=True)
        for _ in range(3):                           # a few iterations in, away from the start values
            state = tl.em.step_factor(state)
        calls[n, "em.step"] = lambda s=state: tl.em.step(s)
        calls[n, "em.step_factor"] = lambda s=state: tl.em.step_factor(s)
        if not no_gibbs:
            calls[n, "gibbs.step"] = gibbs_stepper(tl, model, None)
            calls[n, "gibbs.step (4 chains)"] = gibbs_stepper(tl, model, 4)
    for (n, op), (med, low) in median_times(calls, repeats).items():
        out["sizes"][str(n)][op] = med
        out["min"].setdefault(str(n), {})[op] = low
    first, last = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
    out["growth"] = {k: last[k] / first[k] for k in first}
    return out


def tables(result):
    sizes = list(result["sizes"])
    header = (["operation"] + [f"n = {int(n):,}" for n in sizes]
              + [f"time at n = {int(sizes[-1]):,} / at {int(sizes[0]):,}"])
    ops = list(result["sizes"][sizes[0]])
    rows = []
    for op in ops:
        unit, scale = ("s", 1.0) if op == "model_seconds" else ("ms", 1e3)
        name = "tl.Model(...)  [O(n)]" if op == "model_seconds" else op
        rows.append([name] + [f"{scale * result['sizes'][n][op]:.3g} {unit}" for n in sizes]
                    + [f"{result['growth'][op]:.2f}"])
    notes = [f"J = {result['groups']:,} groups fixed; median of {result['repeats']} calls, the sizes taking "
             "turns; an iteration's cost should stay flat in n (ratio near 1), building the Model grows like n."]
    for what, why in result.get("skipped", {}).items():
        notes.append(f"{what} skipped: {why}")
    return [("Cost of one iteration vs n (formula " + str(result["formula"]) + ")", header, rows, notes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed calls")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    return _report.finish(result, tables, args.json, width=16)


if __name__ == "__main__":
    main()
