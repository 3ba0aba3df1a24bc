"""Gibbs sampling speed on lme4's sleepstudy: teachlmm's sampler vs JAGS, in effective draws per CPU second.

Reaction ~ 1 + Days + (1 + Days | Subject): 180 rows, 18 subjects, the response on a
scale of about 300 -- a small data set, where a sweep's fixed cost (numpy call overhead)
matters most. The data are ``tests/reference/data/sleepstudy.csv`` (exported from lme4,
see ``tests/reference/README.md``).

**The prior** is teachlmm's former default (before issue 15) given explicitly, with
v = var(y) (n - 1 divisor) and m_k = mean(z_k^2), the mean square of random column k::

    G      ~ InvWishart(3, diag(v / (10 m_k)))     JAGS: Tau_G ~ dwish(S0, 3) on G^-1
    sigma2 ~ InvGamma(1/2, v/2)                     JAGS: tau ~ dgamma(0.5, v/2) on 1/sigma2
    beta   ~ N(0, 10^8 I)                           JAGS: dnorm(0, 1e-8) (a precision)

i.e. ``tl.gibbs.Prior(nu0=3, S0=diag(v / (10 m)), a0=0.5, b0=v/2, tau2=1e8)``. The former
default had a flat prior on beta; JAGS needs a proper one, so both get N(0, 10^8): a
standard deviation of 10^4 against posterior standard deviations below 10. The script
checks that S0 and b0 equal what ``Prior(nu0=3, a0=0.5).resolve(model)`` fills in.
The JAGS model is ``bench_gibbs_sleepstudy.bug`` beside this file, written like
``shared/bench/jags_m3/m3.bug`` (subject coefficients B_j ~ N(beta, G), no extra JAGS
modules).

**Protocol** (``shared/bench/jags_m3/``, issue 15): 4 chains x 5,000 draws after 1,000
warm-up; the minimum ArviZ bulk ESS over beta[0], beta[1], G[0,0], G[0,1], G[1,1] and
sigma2, divided by CPU time: for JAGS the CPU time of the whole ``jags`` process (read,
compile, sample, write; from ``getrusage(RUSAGE_CHILDREN)``), for teachlmm that of the
``tl.gibbs.sample(..., keep_b=False)`` call. One core each: JAGS is single-threaded,
numpy runs with one BLAS thread (threadpoolctl). Untimed warm-up of each tool, then the
runs alternate (JAGS, fast, collapsed, JAGS, ...); the summary is the median over the
repeats. Bulk ESS per draw (ESS / 20,000) is reported per quantity (it does not depend on
the machine's load). The posterior means of the six quantities (draws of all repeats
pooled) of every variant must agree with JAGS's within 4 combined Monte Carlo standard
errors.

**teachlmm's variants** (``_report.VARIANTS``; ``--engines`` chooses, default fast and
collapsed): ``fast``, ``tl.gibbs.sample``'s default sweep (interweaving, its step written
out); ``collapsed``, ``engine="collapsed"`` (independence Metropolis-Hastings on the
marginal posterior of (G, sigma2), beta and b exactly given them), skipped with a note
while the installed teachlmm refuses that engine. ``textbook`` and ``centred`` (see
``bench_gibbs_jags.py``) can be asked for by name. The JAGS process is run by
``_jags.sample``, the timing loop is ``_report.alternate``.

    python tests/benchmarks/bench_gibbs_sleepstudy.py [--quick] [--repeats N] [--engines fast,collapsed]
                                                      [--json OUT]

Needs Debian's ``jags``, ``pip install arviz threadpoolctl``. Writes
``tests/benchmarks/results/gibbs_sleepstudy.json`` (and OUT, if given).
"""
import argparse
import datetime
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import _jags  # noqa: E402
import _report as rep  # noqa: E402

RESULTS = os.path.join(HERE, "results", "gibbs_sleepstudy.json")
CSV = os.path.join(ROOT, "tests", "reference", "data", "sleepstudy.csv")
BUG = os.path.join(HERE, "bench_gibbs_sleepstudy.bug")
FORMULA = "Reaction ~ 1 + Days + (1 + Days | Subject)"
CHAINS, DRAWS, WARMUP = 4, 5000, 1000
QUANTITIES = ["beta[0]", "beta[1]", "G[0,0]", "G[0,1]", "G[1,1]", "sigma2"]
JAGS_NAMES = ["beta[1]", "beta[2]", "G[1,1]", "G[1,2]", "G[2,2]", "sigma2"]
NU0, A0, TAU2 = 3, 0.5, 1e8
VARIANTS = ("fast", "collapsed")                     # the teachlmm variants run by default


def missing_peer():
    """Why the benchmark cannot run here, or None."""
    if _jags.missing():
        return _jags.missing()
    for name in ("arviz", "threadpoolctl"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install {name}, or pip install -e '.[bench]')"
    if not os.path.exists(CSV):
        return f"{CSV} is not there (see tests/reference/README.md)"
    return None


def teachlmm_module():
    return rep.teachlmm_module()


# ----------------------------------------------------------------------------
# data and prior
# ----------------------------------------------------------------------------

def sleepstudy():
    """The data as a dict of columns (teachlmm's CSV reader)."""
    return teachlmm_module().data.read_csv(CSV)


def old_default_prior(data):
    """The former default prior's numbers for sleepstudy, computed from the data: (nu0, S0, a0, b0, tau2)."""
    import numpy as np
    y = np.asarray(data["Reaction"], float)
    Z = np.column_stack([np.ones_like(y), np.asarray(data["Days"], float)])
    v = float(np.var(y, ddof=1))                                     # v = var(y)
    m = (Z ** 2).mean(axis=0)                                        # m_k = mean(z_k^2)
    return {"nu0": float(NU0), "S0": np.diag(v / (10 * m)), "a0": A0, "b0": v / 2, "tau2": TAU2}


def teachlmm_prior(tl, numbers):
    return tl.gibbs.Prior(nu0=numbers["nu0"], S0=numbers["S0"], a0=numbers["a0"], b0=numbers["b0"],
                          tau2=numbers["tau2"])


def check_prior_matches_teachlmm(tl, model, numbers):
    """S0 and b0 as teachlmm's Prior fills them in for nu0=3, a0=1/2 (the former default); max relative gap."""
    import numpy as np
    filled = tl.gibbs.Prior(nu0=NU0, a0=A0).resolve(model)
    gap = max(float(np.max(np.abs(filled.S0 - numbers["S0"]) / np.abs(numbers["S0"]).max())),
              abs(filled.b0 - numbers["b0"]) / numbers["b0"])
    if gap > 1e-10:
        raise RuntimeError(f"the explicit prior differs from teachlmm's former default by {gap:.2g} (relative)")
    return gap


# ----------------------------------------------------------------------------
# the two tools
# ----------------------------------------------------------------------------

def jags_data(data, numbers):
    """The values of ``bench_gibbs_sleepstudy.bug``'s data block."""
    import numpy as np
    subject = np.unique(data["Subject"], return_inverse=True)[1] + 1
    return {"n": len(subject), "J": int(subject.max()), "y": np.asarray(data["Reaction"], float),
            "x": np.asarray(data["Days"], float), "subject": subject, "S0": numbers["S0"],
            "nu0": numbers["nu0"], "a0": numbers["a0"], "b0": numbers["b0"], "prec_beta": 1 / numbers["tau2"]}


def run_jags(data, numbers, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS):
    """One timed JAGS process (per-chain RNG seeds from ``seed``); its summary and the six quantities' draws."""
    coda, cpu, wall = _jags.sample(BUG, jags_data(data, numbers), ["beta", "G", "sigma2"], chains, warmup, draws,
                                   seed)
    found = {q: coda[j] for q, j in zip(QUANTITIES, JAGS_NAMES)}
    return rep.summarise(found, cpu, wall, QUANTITIES), found


def run_teachlmm(model, numbers, seed, draws=DRAWS, warmup=WARMUP, chains=CHAINS, variant="fast"):
    """One timed tl.gibbs.sample call of ``variant``; its summary and the draws of the six quantities."""
    tl = teachlmm_module()
    return rep.run_variant(tl, model, variant, teachlmm_prior(tl, numbers), QUANTITIES, seed, draws, warmup, chains)


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------

def run(repeats, variants=VARIANTS):
    tl = teachlmm_module()
    data = sleepstudy()
    numbers = old_default_prior(data)
    model = tl.Model(FORMULA, data)
    gap = check_prior_matches_teachlmm(tl, model, numbers)
    run_jags(data, numbers, seed=0, draws=200, warmup=200)           # warm-ups, not counted
    arms, skipped = rep.teachlmm_arms(tl, model, variants, teachlmm_prior(tl, numbers), QUANTITIES, DRAWS, WARMUP,
                                      CHAINS, warm=(200, 200))
    runs, pooled, load = rep.alternate({"jags": lambda seed: run_jags(data, numbers, seed), **arms}, repeats,
                                       QUANTITIES)
    jags = rep.tool_record(runs["jags"], pooled["jags"], QUANTITIES, f"JAGS {_jags.version() or ''}".strip())
    records = {name: rep.compare(rep.tool_record(runs[name], pooled[name], QUANTITIES, rep.VARIANTS[name][0]),
                                 jags, "jags", QUANTITIES) for name in arms}
    S0 = numbers["S0"]
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": rep.machine(jags=True),
        "protocol": f"sleepstudy {FORMULA}; {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up; CPU time "
                    "(JAGS: the whole process), one core; min ArviZ bulk ESS over " + ", ".join(QUANTITIES),
        "prior": f"G ~ InvWishart(3, diag({S0[0, 0]:.6g}, {S0[1, 1]:.6g})) = IW(3, diag(var(y)/(10 mean(z_k^2)))); "
                 f"sigma2 ~ InvGamma(0.5, {numbers['b0']:.6g}) = IG(1/2, var(y)/2); beta ~ N(0, 1e8 I)",
        "prior_gap_to_teachlmm_default": gap,
        "repeats": repeats,
        "load_avg_1min_before_after": load,
        "engines": list(variants),
        "skipped_variants": skipped,
        "variant_notes": {name: rep.VARIANT_NOTES[name] for name in arms},
        "jags": jags,
        "variants": records,
    }
    return rep.legacy_layout(out, {**records, "jags": jags}, pooled, "jags", QUANTITIES, records)


def tables(result):
    """(title, header, rows, notes) for run_all.py's report (results saved before the variants too)."""
    if "variants" in result:
        records = {"jags": result["jags"], **result["variants"]}
    else:
        records = rep.old_records(result, ["jags"], QUANTITIES)
        records["jags"]["label"] = "JAGS " + (result.get("machine", {}).get("jags") or "")
    load = result["load_avg_1min_before_after"]
    notes = [result["protocol"], "prior: " + result["prior"], f"median of {result['repeats']} alternating runs"]
    notes += [f"{name}: {why}" for name, why in result.get("variant_notes", {}).items()]
    notes += [f"skipped {name}: {why}" for name, why in result.get("skipped_variants", {}).items()]
    notes.append(f"load average (1 min) before / after the timed runs: {load[0]:.1f} / {load[1]:.1f} "
                 f"on {result['machine']['cores']} cores (shared: the ratio, side by side, is what counts)")
    main = ("Gibbs sampler vs JAGS, lme4 sleepstudy: minimum bulk ESS per CPU second",
            ["tool", "min bulk ESS", "CPU seconds", "min ESS / CPU s", "ratio to JAGS"],
            rep.tool_rows(records, ["jags"]), notes)
    return [main] + [(f"sleepstudy, {title}", header, rows, n)
                     for title, header, rows, n in rep.quantity_tables(records, QUANTITIES, "jags")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of five")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--engines", default=None,
                        help=f"teachlmm variants to run, a comma list of {', '.join(rep.VARIANTS)} "
                             f"(default: {','.join(VARIANTS)}; one teachlmm refuses is skipped with a note)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    variants = rep.parse_engines(args.engines, VARIANTS)
    why = missing_peer()
    if why:
        return rep.skip(why, args.json)                       # run_all.py reports the reason
    with rep.one_thread():                                      # numpy on one BLAS thread, like JAGS
        result = run(args.repeats or (1 if args.quick else 5), variants)
    rep.finish(result, tables, [RESULTS] + ([args.json] if args.json else []), width=12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
