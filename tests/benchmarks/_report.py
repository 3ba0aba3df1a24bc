"""What the benchmark scripts share: the Gibbs timing loop, ESS summaries, teachlmm's sampler variants, the report.

The Gibbs benchmarks (``bench_gibbs_jags.py``, ``bench_gibbs_sleepstudy.py``,
``bench_gibbs_nutpie.py``) all measure the same way:

* one core per tool: :func:`one_thread` (one BLAS thread via threadpoolctl, and the
  thread variables of the libraries that read them at start-up);
* CPU time: ``time.process_time`` around a Python call, ``getrusage`` of the child
  for a ``jags`` process (``_jags.run``);
* an untimed warm-up of every tool, then repeats in which the tools alternate
  (:func:`alternate`), so that load from elsewhere falls on all of them; the load
  average before and after;
* the minimum ArviZ bulk ESS over the quantities, per CPU second, the median over
  the repeats (:func:`tool_record`); bulk ESS per draw of every quantity (it does
  not depend on the machine's load); posterior means of all repeats' draws pooled,
  with their Monte Carlo standard errors and the distance between two tools in
  combined MCSEs (:func:`agreement`).

teachlmm's side is a list of named variants of ``tl.gibbs.sample`` (:data:`VARIANTS`,
run by :func:`sample_variant`); a variant the installed teachlmm refuses (a
``TeachLMMError`` on its warm-up, e.g. an engine it does not have yet) is skipped
with a note (:func:`teachlmm_arms`).

``finish`` saves a result as JSON and prints its tables; every benchmark script uses it.
"""
import contextlib
import json
import os
import platform
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


# ----------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------

def _print_table(header, rows, width):
    """Right-aligned columns, each as wide as its widest cell (at least ``width``)."""
    cells = [header] + rows
    widths = [max([width] + [len(str(r[i])) for r in cells if i < len(r)]) for i in range(len(header))]
    for r in cells:
        print("  " + "  ".join(f"{str(c):>{w}}" for c, w in zip(r, widths)))


def finish(result, tables, json_path=None, width=14):
    """Write ``result`` to ``json_path`` (a path or a list of paths; None: nowhere) and print ``tables(result)``.

    ``tables`` returns a list of (title, header, rows, notes).
    """
    paths = [json_path] if isinstance(json_path, str) else list(json_path or [])
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    for title, header, rows, notes in tables(result):
        print("\n" + title)
        if header:
            _print_table(header, rows, width)
        for note in notes:
            print("  " + note)
    return result


def skip(why, json_path=None):
    """Say why a benchmark cannot run; write ``{"skipped": why}`` to ``json_path`` (run_all.py reports it)."""
    print(f"skipped: {why}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"skipped": why}, f)
    return 0


# ----------------------------------------------------------------------------
# the machine, one thread
# ----------------------------------------------------------------------------

def one_thread():
    """A context in which numpy's BLAS runs one thread (threadpoolctl).

    Also sets the thread variables (OMP_NUM_THREADS, RAYON_NUM_THREADS, ...) to 1
    where they are unset, for libraries that read them when they start (nutpie).
    """
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1)


def machine(packages=(), jags=False):
    """CPU, cores, OS, Python, numpy, the versions of ``packages`` and (``jags=True``) of JAGS, the load average."""
    import numpy as np
    from importlib.metadata import PackageNotFoundError, version
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
           "numpy": np.__version__}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    if jags:
        sys.path.insert(0, HERE)
        import _jags
        out["jags"] = _jags.version()
    out["load_avg_1min"] = os.getloadavg()[0]
    return out


def teachlmm_module():
    """teachlmm from this repository (not an installed copy)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import teachlmm
    return teachlmm


# ----------------------------------------------------------------------------
# statistics of a run
# ----------------------------------------------------------------------------

def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def summarise(draws, cpu, wall, quantities):
    """One run: bulk ESS of every quantity and its minimum, per draw and per CPU / wall second; means.

    ``draws`` maps each quantity to an array (chains, draws).
    """
    import arviz as az
    ess = {name: float(az.ess(draws[name], method="bulk")) for name in quantities}
    n = draws[quantities[0]].size
    low = min(ess.values())
    return {"min_ess": low, "cpu_seconds": cpu, "seconds": wall, "ess": ess,
            "ess_per_draw": {name: v / n for name, v in ess.items()},
            "min_ess_per_cpu_second": low / cpu, "min_ess_per_second": low / wall,
            "means": {name: float(draws[name].mean()) for name in quantities}}


def pooled_means(pooled, quantities):
    """Mean and its MCSE per quantity, over the chains of all repeats together."""
    import numpy as np
    import arviz as az
    out = {}
    for name in quantities:
        d = np.concatenate(pooled[name])                          # (chains of all repeats, draws)
        out[name] = {"mean": float(d.mean()), "mcse": float(np.ravel(az.mcse(d, method="mean"))[0])}
    return out


def agreement(pooled_a, pooled_b, quantities, a="teachlmm", b="jags"):
    """Posterior means, MCSEs and z = |m_a - m_b| / sqrt(MCSE_a^2 + MCSE_b^2) per quantity.

    ``pooled_a[name]`` is a list of (chains, draws) arrays, one per repeat.
    """
    import numpy as np
    ma, mb = pooled_means(pooled_a, quantities), pooled_means(pooled_b, quantities)
    return {name: {a: ma[name]["mean"], b: mb[name]["mean"], f"mcse_{a}": ma[name]["mcse"],
                   f"mcse_{b}": mb[name]["mcse"],
                   "z": abs(ma[name]["mean"] - mb[name]["mean"]) / float(np.hypot(ma[name]["mcse"], mb[name]["mcse"]))}
            for name in quantities}


def tool_record(runs, pooled, quantities, label):
    """A tool's repeats summed up: medians of min ESS, CPU and wall s, min ESS per second and ESS per draw;
    means and MCSEs of the pooled draws."""
    means = pooled_means(pooled, quantities)
    return {"label": label, "runs": runs,
            "min_ess": median([r["min_ess"] for r in runs]),
            "cpu_seconds": median([r["cpu_seconds"] for r in runs]),
            "seconds": median([r["seconds"] for r in runs]),
            "min_ess_per_cpu_second": median([r["min_ess"] / r["cpu_seconds"] for r in runs]),
            "min_ess_per_second": median([r["min_ess"] / r["seconds"] for r in runs]),
            "ess_per_draw": {q: median([r["ess_per_draw"][q] for r in runs]) for q in quantities},
            "posterior_means": {q: means[q]["mean"] for q in quantities},
            "mcse": {q: means[q]["mcse"] for q in quantities}}


def compare(record, peer, name, quantities):
    """Add to ``record`` its ratios to ``peer`` (CPU and wall) and the z of its pooled means against the peer's."""
    import numpy as np
    record[f"ratio_to_{name}"] = record["min_ess_per_cpu_second"] / peer["min_ess_per_cpu_second"]
    record[f"ratio_to_{name}_wall"] = record["min_ess_per_second"] / peer["min_ess_per_second"]
    record[f"z_vs_{name}"] = {q: abs(record["posterior_means"][q] - peer["posterior_means"][q]) /
                              float(np.hypot(record["mcse"][q], peer["mcse"][q])) for q in quantities}
    return record


# ----------------------------------------------------------------------------
# the timing loop
# ----------------------------------------------------------------------------

def legacy_layout(out, records, pooled, peer, quantities, first_choices):
    """Add the earlier one-teachlmm layout to a result ``out`` (kept for readers of older files).

    The first variant of ``first_choices`` ("fast" when it ran) stands for teachlmm: ``teachlmm``,
    ``ratio`` (to ``peer``), ``ess_per_draw`` beside the peer's, ``posterior_means`` against the peer's.
    """
    first = "fast" if "fast" in first_choices else next(iter(first_choices), None)
    if first:
        out.update(teachlmm_variant=first, teachlmm=records[first], ratio=records[first][f"ratio_to_{peer}"],
                   ess_per_draw={q: {"teachlmm": records[first]["ess_per_draw"][q], peer: records[peer]["ess_per_draw"][q]}
                                 for q in quantities},
                   posterior_means=agreement(pooled[first], pooled[peer], quantities, "teachlmm", peer))
    return out


def alternate(arms, repeats, quantities):
    """The timed runs: ``repeats`` rounds, in each every arm once, in order (A, B, C, A, B, C, ...).

    ``arms`` maps a tool's name to a function ``seed -> (summary, draws)`` (seed r + 1 in
    round r; warm them up before). Returns ({name: [summary per round]}, {name: {quantity:
    [draws per round]}}, [load average before, after]).
    """
    runs = {name: [] for name in arms}
    pooled = {name: {q: [] for q in quantities} for name in arms}
    load = [os.getloadavg()[0]]
    for r in range(repeats):
        line = []
        for name, arm in arms.items():
            summary, draws = arm(seed=r + 1)
            runs[name].append(summary)
            for q in quantities:
                pooled[name][q].append(draws[q])
            line.append(f"{name} {summary['min_ess']:.0f} ESS / {summary['cpu_seconds']:.2f} CPU s "
                        f"= {summary['min_ess_per_cpu_second']:.0f}/s")
        print(f"repeat {r + 1}: " + ";  ".join(line) + f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    load.append(os.getloadavg()[0])
    return runs, pooled, load


# ----------------------------------------------------------------------------
# teachlmm's variants
# ----------------------------------------------------------------------------

VARIANTS = {           # name: (label, tl.gibbs.sample keywords, the interweaving step fixed to fast= (None: not fixed))
    "fast": ("teachlmm fast", {}, True),
    "textbook": ("teachlmm textbook", {}, False),
    "centred": ("teachlmm centred", {"interweave": False}, None),
    "collapsed": ("teachlmm collapsed", {"engine": "collapsed"}, None),
}
VARIANT_NOTES = {
    "fast": "tl.gibbs.sample's default sweep, its interweaving step written out (Interweaving(fast=True))",
    "textbook": "the same sweep with the interweaving step as teachlmm.interweave writes it "
                "(Interweaving(fast=False)): the same draws as fast, to rounding",
    "centred": "the centred sweep alone (interweave=False)",
    "collapsed": "engine='collapsed': independence Metropolis-Hastings on (G, sigma2) from their marginal "
                 "posterior, beta and b drawn exactly given them",
}


def parse_engines(text, default):
    """The variants named in ``--engines`` ("fast,collapsed"); ``default`` if None. Unknown names: SystemExit."""
    if text is None:
        return list(default)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--engines: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(VARIANTS)}")
    return names


@contextlib.contextmanager
def interweaving_fixed(tl, fast):
    """Within the block every ``Interweaving(model, prior)`` is built with ``fast=fast`` (None: left alone).

    ``teachlmm.interweave.Interweaving`` is replaced for the block only: the sweep
    then runs that form of the step whatever it would choose itself.
    """
    if fast is None:
        yield
        return
    import importlib
    module = importlib.import_module(tl.__name__ + ".interweave")
    original = module.Interweaving
    module.Interweaving = lambda model, prior, **_: original(model, prior, fast=fast)
    try:
        yield
    finally:
        module.Interweaving = original


def sample_variant(tl, model, variant, draws, warmup, chains, seed, prior, keep_b=False):
    """One timed ``tl.gibbs.sample`` call of ``variant``: (Posterior, CPU seconds, wall seconds)."""
    _, keywords, fast = VARIANTS[variant]
    with interweaving_fixed(tl, fast), warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.ConvergenceWarning)
        start, cpu = time.perf_counter(), time.process_time()
        post = tl.gibbs.sample(model, draws=draws, warmup=warmup, chains=chains, seed=seed, prior=prior,
                               keep_b=keep_b, **keywords)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    return post, cpu, wall


def run_variant(tl, model, variant, prior, quantities, seed, draws, warmup, chains, keep_b=False):
    """One timed run of ``variant``: its summary (:func:`summarise`) and the draws of ``quantities``."""
    post, cpu, wall = sample_variant(tl, model, variant, draws, warmup, chains, seed, prior, keep_b)
    found = {name: post.get(name) for name in quantities}
    return summarise(found, cpu, wall, quantities), found


def teachlmm_arms(tl, model, variants, prior, quantities, draws, warmup, chains, warm=None):
    """The timed functions of the variants the installed teachlmm runs, each warmed up once; and those skipped.

    Each variant's warm-up (seed 0; ``warm`` = (draws, warmup) for a shorter one) also
    tells whether teachlmm accepts it: a TeachLMMError skips the variant with a note.
    Returns ({name: seed -> (summary, draws)}, {name: why skipped}).
    """
    arms, skipped = {}, {}
    for name in variants:
        w_draws, w_warmup = warm or (draws, warmup)
        try:
            run_variant(tl, model, name, prior, quantities, 0, w_draws, w_warmup, chains)
        except tl.TeachLMMError as e:
            skipped[name] = f"teachlmm refuses it: {e}"
            print(f"note: variant {name!r} skipped, {skipped[name]}", flush=True)
            continue
        arms[name] = (lambda seed, name=name: run_variant(tl, model, name, prior, quantities, seed, draws,
                                                          warmup, chains))
    return arms, skipped


# ----------------------------------------------------------------------------
# tables of the variants beside the peers
# ----------------------------------------------------------------------------

def tool_rows(records, peers, wall=False):
    """One row per tool: label, min bulk ESS, CPU s, min ESS / CPU s, ratio to each peer (and wall time).

    A peer's ratio to itself is 1; a ratio the record lacks (an older result) is "-".
    """
    def ratio(name, record, key, peer):
        return "1.00" if name == peer else f"{record[key]:.2f}" if key in record else "-"
    rows = []
    for name, record in records.items():
        row = [record["label"], f"{record['min_ess']:.0f}", f"{record['cpu_seconds']:.2f}",
               f"{record['min_ess_per_cpu_second']:.0f}"]
        row += [ratio(name, record, f"ratio_to_{p}", p) for p in peers]
        if wall:
            row += [f"{record['seconds']:.2f}", ratio(name, record, f"ratio_to_{peers[0]}_wall", peers[0])]
        rows.append(row)
    return rows


def quantity_tables(records, quantities, peers):
    """ESS per draw and posterior means of every tool, one row per quantity; the largest z against each peer."""
    peers = [peers] if isinstance(peers, str) else list(peers)
    names = list(records)
    labels = [records[n]["label"] for n in names]
    epd = [[q] + [f"{records[n]['ess_per_draw'][q]:.2f}" for n in names] for q in quantities]
    means = [[q] + [f"{records[n]['posterior_means'][q]:.5g}" for n in names] for q in quantities]
    notes = []
    for peer in peers:
        z = {n: max(records[n][f"z_vs_{peer}"].values()) for n in names if f"z_vs_{peer}" in records[n]}
        if z:
            notes.append(f"largest |mean - {records[peer]['label']}'s mean| in combined MCSEs (pooled draws of all "
                         "repeats): " + ", ".join(f"{n} {v:.2f}" + ("" if v <= 4 else " > 4: DISAGREE")
                                                  for n, v in z.items()))
    return [("bulk ESS per draw (ESS / chains x draws; load-independent)", ["quantity"] + labels, epd, []),
            ("posterior means", ["quantity"] + labels, means, notes)]


def old_records(result, peers, quantities):
    """Tool records (as :func:`tool_record` and :func:`compare` make them) read from a result saved before
    the variants: tools under "jags" / "nutpie", "teachlmm" and "teachlmm_<sweep>", per-quantity numbers
    under "ess_per_draw" and "posterior_means" by tool name. A number the old result lacks is NaN."""
    nan = float("nan")
    keys = [p for p in peers if isinstance(result.get(p), dict)]
    keys += [k for k, v in result.items() if (k == "teachlmm" or k.startswith("teachlmm_"))
             and isinstance(v, dict) and "runs" in v]
    records = {}
    for key in keys:
        tool, saved = key.replace("teachlmm_", ""), result[key]
        runs = saved.get("runs", [])

        def med(field, runs=runs):
            values = [r[field] for r in runs if field in r]
            return median(values) if values else nan
        record = {"label": {"teachlmm": "teachlmm gibbs.sample"}.get(tool, VARIANTS.get(tool, (tool,))[0]),
                  "min_ess": med("min_ess"), "cpu_seconds": med("cpu_seconds"), "seconds": med("seconds"),
                  "min_ess_per_cpu_second": saved.get("min_ess_per_cpu_second", nan),
                  "min_ess_per_second": saved.get("min_ess_per_second", nan),
                  "ess_per_draw": {q: result.get("ess_per_draw", {}).get(q, {}).get(tool, nan) for q in quantities},
                  "posterior_means": {q: result.get("posterior_means", {}).get(q, {}).get(tool, nan)
                                      for q in quantities}}
        if key not in peers:
            peer = peers[0]
            record[f"ratio_to_{peer}"] = (result["ratio_cpu"].get(tool, nan) if "ratio_cpu" in result
                                          else result.get("ratio", nan))
            if "ratio_wall" in result:
                record[f"ratio_to_{peer}_wall"] = result["ratio_wall"].get(tool, nan)
            if all("z" in result.get("posterior_means", {}).get(q, {}) for q in quantities):
                record[f"z_vs_{peer}"] = {q: result["posterior_means"][q]["z"] for q in quantities}
        records[tool] = record
    return records
