"""How many groups? A Monte Carlo study in the design of Stegmueller (2013), with Elff et al.'s (2020) corrections.

Model (two levels, J upper-level units of n_j = ``--nj`` respondents each)::

    y_ij = b0 + b1 x_ij + b2 z_j + b3 x_ij z_j + u0_j + u1_j x_ij + e_ij
    x_ij ~ N(0, 1),  z_j ~ N(0, 1),  (u0_j, u1_j) ~ N(0, G),  e_ij ~ N(0, sigma2)

True values (stated here and in the JSON): b = (1, 0.5, 0.5, 0.3), G = [[0.5, 0.1], [0.1, 0.3]],
sigma2 = 1. These are our choices, in the spirit of Stegmueller's design (a context effect b2
and a cross-level interaction b3 with a random slope), not his exact numbers.

For every replication and J it records, for b2 (the group-level effect) and b3 (the cross-level
interaction), whether the 95% interval covers the truth under

    ML-z            ML fit, estimate -+ 1.96 SE                        (lme4's confint(method="Wald"))
    REML-z          REML fit, normal quantiles
    REML-Satt       REML fit, t quantiles with Satterthwaite df        (lmerTest)
    REML-KR         REML fit, KR-adjusted SE and KR df                 (pbkrtest)
    REML-BW         REML fit, t with nlme's between-within df
    REML-ElffJ      REML fit, t with J - l - 1 df (l = number of group-level predictors: 1)
    Gibbs           equal-tailed 95% posterior interval, default prior (``--gibbs``)

and the bias of every estimate (fixed effects, G, sigma2) with its Monte Carlo SE.

    python tests/studies/how_many_groups.py [--reps 1000] [--J 5 10 15 20 25 30] [--nj 500]
                                            [--gibbs | --gibbs-only] [--gibbs-chains 2] [--gibbs-draws 1000]
                                            [--gibbs-warmup 500] [--gibbs-no-interweave]
                                            [--seed 2013] [--json OUT]
    python tests/studies/how_many_groups.py --merge OUT PART1.json PART2.json ...

The results (with seed, run time and machine) go to ``--json``; the book page reads them. Every
replication draws its data from its own generator, spawned from ``SeedSequence([seed, J])``: a cell's
numbers do not depend on which other cells run, or in which process. So a study can run as several
processes, each with a part of the J values, and ``--merge`` joins their JSON files into one (the
same numbers a single run gives; the run times of the parts are kept).
"""
import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
import scipy.stats as sps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import teachlmm as tl                 # noqa: E402
from teachlmm import ddf, diagnostics  # noqa: E402

BETA = np.array([1.0, 0.5, 0.5, 0.3])
G_TRUE = np.array([[0.5, 0.1], [0.1, 0.3]])
SIGMA2 = 1.0
FORMULA = "y ~ x * z + (1 + x | g)"
NAMES = ["(Intercept)", "x", "z", "x:z"]
TARGETS = {"z": 2, "x:z": 3}
METHODS = ["ML-z", "REML-z", "REML-Satt", "REML-KR", "REML-BW", "REML-ElffJ"]


def simulate(rng, J, nj):
    g = np.repeat(np.arange(J), nj)
    x = rng.normal(size=J * nj)
    z = rng.normal(size=J)[g]
    u = rng.multivariate_normal([0.0, 0.0], G_TRUE, size=J)[g]
    y = BETA[0] + BETA[1] * x + BETA[2] * z + BETA[3] * x * z + u[:, 0] + u[:, 1] * x \
        + rng.normal(scale=np.sqrt(SIGMA2), size=J * nj)
    return {"y": y, "x": x, "z": z, "g": g}


def _interval(est, half):
    return est - half, est + half


def one_replication(rng, J, nj, gibbs, likelihood=True):
    """Coverage indicators (method -> target -> bool) and the estimates of one data set.

    ``gibbs``: None, or a dict of ``tl.gibbs.sample`` settings (chains, draws, warmup, interweave).
    ``likelihood=False`` skips the ML and REML fits (a Gibbs-only run): the data set and the
    sampler's seed are the same as in a full run, since the fits draw no random numbers.
    """
    model = tl.Model(FORMULA, simulate(rng, J, nj))
    intervals = {}                                        # method -> target -> (lower, upper)
    if likelihood:
        intervals, est = _likelihood_intervals(model, J)
    else:
        est = {}
    if gibbs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # convergence is recorded below, not printed
            post = tl.gibbs.sample(model, seed=rng.integers(2 ** 32), keep_b=False, **gibbs)
        intervals["Gibbs"] = {name: tuple(np.quantile(post.get(name).ravel(), [0.025, 0.975])) for name in TARGETS}
        est["gibbs_check"] = {
            "flagged": post.convergence_message is not None,       # gibbs.sample's own R-hat / ESS check
            "rhat": {t: float(diagnostics.rhat(post.get(t))) for t in TARGETS},
            "ess_tail": {t: float(diagnostics.ess_tail(post.get(t))) for t in TARGETS}}
    cover = {m: {t: bool(lo <= BETA[TARGETS[t]] <= hi) for t, (lo, hi) in iv.items()} for m, iv in intervals.items()}
    est["width"] = {m: {t: float(hi - lo) for t, (lo, hi) in iv.items()} for m, iv in intervals.items()}
    return cover, est


def _likelihood_intervals(model, J):
    """The six ML / REML intervals of the targets, and the estimates of the two fits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml, ml = tl.em.fit(model, reml=True), tl.em.fit(model, reml=False)
        tabs = {"REML-Satt": ddf.coef_table(reml, "Satterthwaite"), "REML-KR": ddf.coef_table(reml, "Kenward-Roger"),
                "REML-BW": ddf.coef_table(reml, "between-within")}
    z975 = sps.norm.ppf(0.975)
    intervals = {m: {} for m in METHODS}                  # method -> target -> (lower, upper)
    for name in TARGETS:
        intervals["ML-z"][name] = _interval(ml.fixef[name], z975 * ml.fixef_se[name])
        intervals["REML-z"][name] = _interval(reml.fixef[name], z975 * reml.fixef_se[name])
        for m, tab in tabs.items():
            intervals[m][name] = _interval(tab["Estimate"][name],
                                           sps.t.ppf(0.975, tab["df"][name]) * tab["Std. Error"][name])
        intervals["REML-ElffJ"][name] = _interval(reml.fixef[name], sps.t.ppf(0.975, J - 1 - 1) * reml.fixef_se[name])
    est = {"ML": np.r_[ml.beta, ml.G[np.tril_indices(2)], ml.sigma2],
           "REML": np.r_[reml.beta, reml.G[np.tril_indices(2)], reml.sigma2],
           "REML_singular": reml.singular, "KR_df_xz": tabs["REML-KR"]["df"]["x:z"],
           "Satt_df_xz": tabs["REML-Satt"]["df"]["x:z"]}
    return intervals, est


def run_cell(J, reps, nj, seed, gibbs, likelihood=True, progress=False):
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, J]).spawn(reps)]
    t0 = time.process_time()
    out = []
    for i, r in enumerate(rngs):
        out.append(one_replication(r, J, nj, gibbs, likelihood))
        if progress and (i + 1) % 100 == 0:
            print(f"  J={J}: {i + 1}/{reps} replications ({time.process_time() - t0:.0f} CPU s)", file=sys.stderr,
                  flush=True)
    methods = (METHODS if likelihood else []) + (["Gibbs"] if gibbs else [])
    coverage = {m: {t: float(np.mean([c[m][t] for c, _ in out])) for t in TARGETS} for m in methods}
    cell = {"J": J, "reps": reps, "coverage": coverage,
            "median_width": {m: {t: float(np.median([e["width"][m][t] for _, e in out])) for t in TARGETS}
                             for m in methods},
            "coverage_mcse": {m: {t: float(np.sqrt(v * (1 - v) / reps)) for t, v in c.items()}
                              for m, c in coverage.items()}}
    if likelihood:
        truth = np.r_[BETA, G_TRUE[np.tril_indices(2)], SIGMA2]
        labels = NAMES + ["G[0,0]", "G[1,0]", "G[1,1]", "sigma2"]
        bias = {}
        for fit in ("ML", "REML"):
            E = np.array([e[fit] for _, e in out])
            bias[fit] = {lab: {"bias": float(E[:, i].mean() - truth[i]),
                               "mcse": float(E[:, i].std(ddof=1) / np.sqrt(reps))} for i, lab in enumerate(labels)}
        cell.update({"bias": bias, "singular_rate_REML": float(np.mean([e["REML_singular"] for _, e in out])),
                     "median_df_xz": {"KR": float(np.median([e["KR_df_xz"] for _, e in out])),
                                      "Satterthwaite": float(np.median([e["Satt_df_xz"] for _, e in out]))}})
    cell["cpu_seconds"] = time.process_time() - t0
    if gibbs:
        checks = [e["gibbs_check"] for _, e in out]
        cell["gibbs_convergence"] = {
            "share_flagged": float(np.mean([c["flagged"] for c in checks])),
            "max_rhat": {t: max(c["rhat"][t] for c in checks) for t in TARGETS},
            "median_ess_tail": {t: float(np.median([c["ess_tail"][t] for c in checks])) for t in TARGETS},
            "min_ess_tail": {t: min(c["ess_tail"][t] for c in checks) for t in TARGETS}}
        ok = {t: [c["rhat"][t] <= 1.01 and c["ess_tail"][t] >= 400 for c in checks] for t in TARGETS}
        cell["gibbs_convergence"]["share_target_ok"] = {t: float(np.mean(ok[t])) for t in TARGETS}
        cell["gibbs_convergence"]["coverage_where_target_ok"] = {     # R-hat <= 1.01 and tail ESS >= 400
            t: float(np.mean([c["Gibbs"][t] for (c, _), k in zip(out, ok[t]) if k])) if any(ok[t]) else None
            for t in TARGETS}
    return cell


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--J", type=int, nargs="+", default=[5, 10, 15, 20, 25, 30])
    ap.add_argument("--nj", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2013)
    ap.add_argument("--gibbs", action="store_true")
    ap.add_argument("--gibbs-chains", type=int, default=2)
    ap.add_argument("--gibbs-draws", type=int, default=1000, help="kept draws per chain")
    ap.add_argument("--gibbs-warmup", type=int, default=500)
    ap.add_argument("--gibbs-no-interweave", action="store_true",
                    help="the centred sweep alone (same posterior; cheaper, and as good when groups are large)")
    ap.add_argument("--gibbs-only", action="store_true",
                    help="skip the ML and REML fits (same data sets and sampler seeds as a full run)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", nargs="+", metavar=("OUT", "PART"), help="join the JSON files PART... into OUT")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge[0], args.merge[1:])
    args.gibbs = args.gibbs or args.gibbs_only
    gibbs = None if not args.gibbs else {"chains": args.gibbs_chains, "draws": args.gibbs_draws,
                                         "warmup": args.gibbs_warmup, "interweave": not args.gibbs_no_interweave}
    t0 = time.time()
    cells = []
    for J in args.J:
        cell = run_cell(J, args.reps, args.nj, args.seed, gibbs, likelihood=not args.gibbs_only, progress=True)
        cells.append(cell)
        cov = cell["coverage"]
        print(f"J={J:3d}  " + "  ".join(f"{m} {cov[m]['x:z']:.3f}" for m in cov) + f"  ({cell['cpu_seconds']:.0f}s)",
              flush=True)
        _save(args, cells, t0)                         # after every cell: a partial run keeps its results
    return _save(args, cells, t0)


def _save(args, cells, t0):
    result = {"design": {"formula": FORMULA, "beta": BETA.tolist(), "G": G_TRUE.tolist(), "sigma2": SIGMA2,
                         "nj": args.nj, "x": "N(0,1) within groups", "z": "N(0,1) between groups",
                         "targets": list(TARGETS), "level": 0.95},
              "seed": args.seed, "reps": args.reps, "gibbs": args.gibbs, "cells": cells,
              "gibbs_settings": None if not args.gibbs else {
                  "chains": args.gibbs_chains, "draws": args.gibbs_draws, "warmup": args.gibbs_warmup,
                  "interweave": not args.gibbs_no_interweave, "likelihood_fits": not args.gibbs_only,
                  "prior": "default (tl.gibbs.default_prior)", "interval": "equal-tailed 95%, pooled chains"},
              "command": " ".join(sys.argv),
              "wall_seconds": time.time() - t0, "machine": platform.platform(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "teachlmm": tl.__version__}
    result["complete"] = len(cells) == len(args.J)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def merge(out, parts):
    """Join study JSON files run on disjoint sets of J (same design, seed and settings) into ``out``."""
    import json
    runs = [json.load(open(p)) for p in parts]
    first = runs[0]
    for key in ("design", "seed", "reps", "gibbs", "gibbs_settings"):
        if any(r.get(key) != first.get(key) for r in runs):
            raise SystemExit(f"cannot merge: the parts differ in {key!r}")
    cells = sorted((c for r in runs for c in r["cells"]), key=lambda c: c["J"])
    if len({c["J"] for c in cells}) != len(cells):
        raise SystemExit("cannot merge: a J value appears in two parts")
    result = dict(first, cells=cells, complete=all(r["complete"] for r in runs),
                  wall_seconds=max(r["wall_seconds"] for r in runs),
                  parts=[{k: r.get(k) for k in ("command", "wall_seconds", "date", "machine")} | {
                      "J": [c["J"] for c in r["cells"]]} for r in runs],
                  note=f"{len(runs)} processes run side by side, one per part; wall_seconds is the longest part")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
