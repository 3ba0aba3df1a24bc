"""Gibbs sampling speed on radon M3: teachlmm's sampler vs JAGS 4.3, in effective draws per second.

The peer and its protocol are fixed in ``shared/bench/jags_m3/`` (``m3.bug``,
``run.cmd``, ``jags_min_ess.py``): 4 chains x 5,000 draws after 1,000 warm-up,
the time of the whole run, and the minimum ArviZ bulk ESS over the two fixed
effects, the three distinct entries of G and sigma2 (= sigma_y^2), divided by
that time. JAGS runs that folder's ``m3.bug`` and ``run.cmd`` unchanged on the
data file ``jags_min_ess.py`` writes (written here the same way, by
``_jags.run_radon_m3``), and its draws are read back and scored as that script
scores them; the ``jags`` process itself is timed, both by the clock (the
protocol's wall time) and by its CPU time (``getrusage`` of the child), so that
Python's start-up and ArviZ's import are not charged to JAGS.

teachlmm is measured the same way: the same model and prior, the same chains,
draws and warm-up, the whole ``tl.gibbs.sample()`` call (chain start and the
convergence check included; building the ``Model`` from the data, done once, is
reported separately), the same six quantities and ArviZ's bulk ESS. The prior
is JAGS's exactly::

    G ~ InvWishart(3, I)            (Tau_B ~ dwish(I, 3) on the precision G^-1)
    beta ~ N(0, 10^4 I)             (mu[k] ~ dnorm(0, 0.0001), a precision)
    sigma ~ Uniform(0, 100)         (sigma_y ~ dunif(0, 100); teachlmm's Prior(sigma_max=100))

i.e. ``tl.gibbs.Prior(nu0=3, S0=I, tau2=1e4, sigma_max=100)``; JAGS parametrises
the county effects as B_j ~ N(mu, Sigma_B), teachlmm as b_j = B_j - mu: the
same model. ``keep_b=False``: like the JAGS run, which monitors mu, Sigma_B and
sigma_y only, the county effects are not stored (the time with ``keep_b=True``
is reported too).

teachlmm runs these variants (``_report.VARIANTS``), all with the same seeds;
``--engines`` chooses some (default: all):

* ``fast``: the interweaving step in its written-out form
  (``Interweaving(model, prior, fast=True)``, ``teachlmm._interweave_fast``);
* ``textbook``: the interweaving step as ``teachlmm.interweave`` writes it
  (``fast=False``); the same draws as ``fast`` to rounding, so the same ESS;
* ``centred``: the centred sweep alone (``interweave=False``, the sampler before issue 15);
* ``collapsed``: ``engine="collapsed"`` (independence Metropolis-Hastings on the
  marginal posterior of (G, sigma2), beta and b drawn exactly given them); skipped
  with a note while the installed teachlmm refuses that engine.

For fast and textbook the step is fixed by replacing ``teachlmm.interweave.Interweaving``
with a version that passes ``fast=`` (whatever the sweep's own default), for the
timed call only. Besides ESS per second the script reports ESS per draw of every
quantity (bulk ESS / 20,000): it does not depend on the machine's load, so it
is the number to compare across runs on a shared machine. numpy runs with one
BLAS thread (threadpoolctl); JAGS is single-threaded.

Runs alternate (JAGS, fast, textbook, centred, collapsed, JAGS, ...) so that load
from elsewhere on the machine falls on all; the summary is the median over the
repeats, by CPU time (the primary ratio) and by wall time. The load average is
recorded before and after. The posterior means of the six quantities of every
variant are printed beside JAGS's, with their distance in combined Monte Carlo
standard errors (draws of all repeats pooled), as a check that they sample the
same posterior.

    python tests/benchmarks/bench_gibbs_jags.py [--quick] [--repeats N] [--engines fast,collapsed]
                                                [--other] [--json OUT]

Needs Debian's ``jags`` and ``pip install arviz threadpoolctl``. Writes
``tests/benchmarks/results/gibbs_jags.json`` (and OUT, if given).
"""
import argparse
import datetime
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _jags  # noqa: E402
import _report as rep  # noqa: E402

RESULTS = os.path.join(HERE, "results", "gibbs_jags.json")
M3 = "log_radon ~ 1 + floor + (1 + floor | county)"
CHAINS, DRAWS, WARMUP = 4, 5000, 1000
QUANTITIES = list(_jags.RADON_M3_NAMES)          # beta[0], beta[1], G[0,0], G[0,1], G[1,1], sigma2
JAGS_NAMES = list(_jags.RADON_M3_NAMES.values())  # mu[1], mu[2], Sigma_B[1,1], ..., sigma_y^2
SWEEPS = ("fast", "textbook", "centred", "collapsed")    # the variants run by default


def missing_peer():
    """Why the benchmark cannot run here, or None."""
    why = _jags.missing_radon_m3()
    if why:
        return why
    for name in ("arviz", "threadpoolctl"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install {name}, or pip install -e '.[bench]')"
    return None


# ----------------------------------------------------------------------------
# the two tools
# ----------------------------------------------------------------------------

def run_jags(seed=None):
    """One JAGS run of the protocol (its own seeds: ``seed`` is not used): summary and draws of the six quantities."""
    draws, cpu, wall = _jags.run_radon_m3()
    return rep.summarise(draws, cpu, wall, QUANTITIES), draws


def teachlmm_module():
    return rep.teachlmm_module()


def jags_prior(tl):
    import numpy as np
    return tl.gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)


def run_teachlmm(model, seed, keep_b=False, sweep="fast"):
    """One timed call of variant ``sweep`` ("fast", "textbook", "centred", "collapsed"), measured like JAGS.

    Returns its summary (min bulk ESS, wall and CPU seconds, ESS per draw, means of the six quantities).
    """
    tl = teachlmm_module()
    summary, _ = rep.run_variant(tl, model, sweep, jags_prior(tl), QUANTITIES, seed, DRAWS, WARMUP, CHAINS,
                                 keep_b=keep_b)
    return summary


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def run(repeats, variants=SWEEPS):
    tl = teachlmm_module()
    start = time.perf_counter()
    model = tl.Model(M3, tl.load_radon())
    model_seconds = time.perf_counter() - start
    arms, skipped = rep.teachlmm_arms(tl, model, variants, jags_prior(tl), QUANTITIES, DRAWS, WARMUP, CHAINS)
    run_jags()                                                     # warm-up, not counted
    runs, pooled, load = rep.alternate({"jags": run_jags, **arms}, repeats, QUANTITIES)
    first = "fast" if "fast" in arms else next(iter(arms), None)
    with_b = run_teachlmm(model, seed=99, keep_b=True, sweep=first) if first else None
    jags = rep.tool_record(runs["jags"], pooled["jags"], QUANTITIES, f"JAGS {_jags.version() or ''}".strip())
    records = {name: rep.compare(rep.tool_record(runs[name], pooled[name], QUANTITIES, rep.VARIANTS[name][0]),
                                 jags, "jags", QUANTITIES) for name in arms}
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": rep.machine(jags=True),
        "protocol": f"{CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; the whole run timed (CPU and wall); "
                    "min ArviZ bulk ESS over mu[1], mu[2], Sigma_B[1,1], Sigma_B[1,2], Sigma_B[2,2], sigma_y^2",
        "prior": "G ~ InvWishart(3, I); beta ~ N(0, 1e4 I); sigma ~ Uniform(0, 100)",
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "engines": list(variants),
        "skipped_variants": skipped,
        "variant_notes": {name: rep.VARIANT_NOTES[name] for name in arms},
        "jags": jags,
        "variants": records,
        "teachlmm_model_seconds": model_seconds,
        "teachlmm_keep_b_true_seconds": with_b["seconds"] if with_b else None,
        "teachlmm_keep_b_true_variant": first,
        # the earlier layout, kept for its readers (the book's performance page reads ess_per_draw)
        "ratio_cpu": {name: r["ratio_to_jags"] for name, r in records.items()},
        "ratio_wall": {name: r["ratio_to_jags_wall"] for name, r in records.items()},
        "ess_per_draw": {q: {"jags": jags["ess_per_draw"][q], **{n: r["ess_per_draw"][q] for n, r in records.items()}}
                         for q in QUANTITIES},
        "posterior_means": {q: {"jags": jags["posterior_means"][q],
                                **{n: r["posterior_means"][q] for n, r in records.items()}} for q in QUANTITIES},
    }
    for name, record in records.items():
        out["teachlmm_" + name] = record
    for q in QUANTITIES:                    # the names the book's performance page reads (teachlmm = its default sweep)
        if "fast" in records:
            out["ess_per_draw"][q]["teachlmm"] = records["fast"]["ess_per_draw"][q]
        if "centred" in records:
            out["ess_per_draw"][q]["teachlmm_centred"] = records["centred"]["ess_per_draw"][q]
    return out


def other_models():
    """Models the fast step was not tuned on: name -> (Model, prior)."""
    import numpy as np
    tl = teachlmm_module()
    radon = tl.load_radon()
    out = {"radon M4": (tl.Model(tl.data.RADON_MODELS["M4"], radon),
                        tl.gibbs.Prior(nu0=3, S0=np.eye(2), tau2=1e4, sigma_max=100)),
           "radon M3u (||), default prior": (tl.Model(tl.data.RADON_MODELS["M3u"], radon), None),
           "radon M1 (q = 1), default prior": (tl.Model(tl.data.RADON_MODELS["M1"], radon), None)}
    sleep = os.path.join(ROOT, "tests", "reference", "data", "sleepstudy.csv")
    if os.path.exists(sleep):
        out["sleepstudy, default prior"] = (tl.Model("Reaction ~ 1 + Days + (1 + Days | Subject)",
                                                     tl.data.read_csv(sleep)), None)
    return out


def run_other(repeats, variants=SWEEPS):
    """The variants on the other models (no JAGS): min bulk ESS per CPU second, medians.

    The minimum is over every entry of beta, G and sigma2 (``Posterior.checked_names``, as the
    convergence check takes them); the run length is the protocol's. A variant teachlmm refuses
    is left out.
    """
    import arviz as az
    tl = teachlmm_module()
    result = {}
    for name, (model, prior) in other_models().items():
        runs, skipped = {sweep: [] for sweep in variants}, {}
        for r in range(repeats):
            for sweep in list(runs):
                try:
                    post, cpu, _ = rep.sample_variant(tl, model, sweep, DRAWS, WARMUP, CHAINS, r + 1, prior)
                except tl.TeachLMMError as e:
                    skipped[sweep] = f"teachlmm refuses it: {e}"
                    print(f"note: {name}: variant {sweep!r} skipped, {skipped[sweep]}", flush=True)
                    del runs[sweep]
                    continue
                ess = min(float(az.ess(post.get(n), method="bulk")) for n in post.checked_names())  # beta, G, sigma2
                runs[sweep].append({"min_ess": ess, "cpu_seconds": cpu})
        result[name] = {sweep: {"min_ess": rep.median([o["min_ess"] for o in v]),
                                "cpu_seconds": rep.median([o["cpu_seconds"] for o in v]),
                                "min_ess_per_cpu_second": rep.median([o["min_ess"] / o["cpu_seconds"] for o in v])}
                        for sweep, v in runs.items()}
        if skipped:
            result[name]["skipped"] = skipped
        print(f"{name}: min bulk ESS / CPU s  " + ", ".join(
            f"{s} {v['min_ess_per_cpu_second']:.0f} ({v['cpu_seconds']:.2f} CPU s)" for s, v in result[name].items()
            if s != "skipped")
            + f";  load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def tables(result):
    """(title, header, rows, notes) for run_all.py's report (results saved before the variants too)."""
    if "variants" in result:
        records = {"jags": result["jags"], **result["variants"]}
    else:
        records = rep.old_records(result, ["jags"], QUANTITIES)
        records["jags"]["label"] = "JAGS " + (result.get("machine", {}).get("jags") or "")
        if "ratio_cpu" not in result and "teachlmm" in records:      # the first results: wall time only
            records["teachlmm"]["ratio_to_jags_wall"] = records["teachlmm"].pop("ratio_to_jags")
    load = result["load_avg_1min_before_after"]
    keep_b = result.get("teachlmm_keep_b_true_seconds")
    model_seconds = result.get("teachlmm_model_seconds", result.get("teachlmm", {}).get("model_seconds"))
    notes = [result["protocol"], "prior: " + result["prior"],
             f"median of {result['repeats']} alternating runs" +
             (f"; building the Model: {model_seconds:.3f} s" if model_seconds is not None else "") +
             (f"; teachlmm ({result.get('teachlmm_keep_b_true_variant', 'fast')}) with keep_b=True: "
              f"{keep_b:.2f} s wall" if keep_b else "")]
    notes += [f"{name}: {why}" for name, why in result.get("variant_notes", {}).items()]
    notes += [f"skipped {name}: {why}" for name, why in result.get("skipped_variants", {}).items()]
    notes.append(f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
                 f"on {result['machine']['cores']} cores")
    main = ("Gibbs sampler, radon M3: minimum bulk ESS per second (CPU time; wall time beside it)",
            ["tool", "min bulk ESS", "CPU s", "min ESS / CPU s", "ratio to JAGS", "wall s", "ratio (wall)"],
            rep.tool_rows(records, ["jags"], wall=True), notes)
    return [main] + [(f"radon M3, {title}", header, rows, n)
                     for title, header, rows, n in rep.quantity_tables(records, QUANTITIES, "jags")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--engines", default=None,
                        help=f"teachlmm variants to run, a comma list of {', '.join(rep.VARIANTS)} "
                             f"(default: {','.join(SWEEPS)}; one teachlmm refuses is skipped with a note)")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--other", action="store_true",
                        help="also time the variants on radon M4, M3u, M1 and sleepstudy (no JAGS)")
    args = parser.parse_args(argv)
    variants = rep.parse_engines(args.engines, SWEEPS)
    why = missing_peer()
    if why:
        return rep.skip(why, args.json)
    repeats = args.repeats or (1 if args.quick else 3)
    with rep.one_thread():                                  # numpy on one BLAS thread, like JAGS
        result = run(repeats, variants)
        if args.other:
            result["other_models"] = run_other(repeats, variants)
    rep.finish(result, tables, [RESULTS] + ([args.json] if args.json else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
