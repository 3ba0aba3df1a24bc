"""Run the benchmark suite, print one table, write tests/benchmarks/results/latest.json.

    python tests/benchmarks/run_all.py [--quick] [--only NAME ...]

NAME is one of: iteration, fit, scale, stream, gibbs (the Gibbs vs JAGS
benchmark, run when tests/benchmarks/bench_gibbs_jags.py is there),
gibbs_nutpie (Gibbs vs nutpie on radon M3), gibbs_sleepstudy (Gibbs vs JAGS
on sleepstudy), multilevel_gibbs (crossed factors: joint vs factorwise
update), insteval (InstEval in full: needs $INSTEVAL_CSV, /tmp/insteval.csv
or R with lme4 to export it, else it is reported as skipped), suite. Each
benchmark runs in its own Python process (the same interpreter as this one).
With --only, the other benchmarks' earlier results in latest.json are kept
(each carries its own date).

The peers are optional: ``pip install -e ".[bench]"`` installs statsmodels,
pandas, mixedlm, arviz, threadpoolctl, pymc and nutpie; JAGS is Debian's
``jags``. A missing one is skipped with a message.

Threads: every tool gets the same, by default one (OMP/OPENBLAS/MKL/
RAYON_NUM_THREADS=1): the comparison is of the computations, not of how
each library splits work across cores, and single-threaded timings stay
steady when the machine is busy (multi-threaded ones collapse: their threads
wait for each other). ``--threads N`` gives N to every tool; ``--threads 0``
leaves each library its own default. What was used is recorded.

The environment: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, if set, make
OpenBLAS choose slow kernels; this script removes both (together) from the
environment of every benchmark process, so all tools run with the same
BLAS, and records what it did (``--keep-blas-env`` leaves them). The BLAS
that numpy loads, and its thread count, are recorded via threadpoolctl.

This file imports only the standard library at the top, so the book can use
:func:`report_markdown` to show the saved results.
"""
import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results", "latest.json")

BENCHMARKS = {                        # name: (script, what it measures)
    "iteration": ("bench_iteration_cost.py", "cost of one EM iteration / Gibbs sweep vs n"),
    "fit": ("bench_fit.py", "radon M3/M4 formula to fit: teachlmm vs statsmodels vs mixedlm"),
    "scale": ("bench_scale.py", "1,000,000 rows / 10,000 groups: time and peak memory per process"),
    "stream": ("bench_stream.py", "10,000,000 rows streamed from CSV"),
    "gibbs": ("bench_gibbs_jags.py", "Gibbs min bulk ESS per second vs JAGS on radon M3"),
    "gibbs_nutpie": ("bench_gibbs_nutpie.py", "Gibbs min bulk ESS per CPU second vs nutpie (NUTS on PyMC) on radon M3"),
    "gibbs_sleepstudy": ("bench_gibbs_sleepstudy.py", "Gibbs min bulk ESS per CPU second vs JAGS on lme4's sleepstudy"),
    "multilevel_gibbs": ("bench_multilevel_gibbs.py", "Gibbs for crossed factors: joint vs factorwise update, "
                         "ESS per draw and per CPU second"),
    "collapsed_suite": ("bench_collapsed_suite.py", "The collapsed sampler vs the Gibbs sweep on the suite's 17 "
                        "real one-factor models (default prior): acceptance, ESS per draw and per CPU second, "
                        "agreement of posterior means"),
    "insteval": ("bench_insteval.py", "InstEval (73,421 rows, students x lecturers crossed): formula to fit, "
                 "teachlmm vs mixedlm and lme4's recorded time"),
    "suite": ("bench_suite.py", "real-data suite (17 models on 15 R data sets, REML and ML): CPU time vs mixedlm, statsmodels, lme4"),
}
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
PACKAGES = ("numpy", "scipy", "statsmodels", "pandas", "mixedlm", "arviz", "threadpoolctl", "pymc", "nutpie")


# ----------------------------------------------------------------------------
# the machine and the environment
# ----------------------------------------------------------------------------

def benchmark_environment(keep_blas_env=False, threads=None):
    """The environment every benchmark process gets, and a record of the changes made to it."""
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in THREAD_VARIABLES})
    else:
        for k in THREAD_VARIABLES:
            env.pop(k, None)
    found = {k: env[k] for k in BLAS_VARIABLES if k in env}
    if found and not keep_blas_env:
        for k in BLAS_VARIABLES:
            env.pop(k, None)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + paths)
    record = {"blas_variables_found": found,
              "blas_variables_removed": bool(found) and not keep_blas_env,
              "thread_variables": {k: env[k] for k in THREAD_VARIABLES if k in env}}
    return env, record


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def blas_info(env):
    """What threadpoolctl sees once numpy is loaded (in a child with the benchmarks' environment)."""
    code = ("import json, numpy\n"
            "try:\n"
            "    from threadpoolctl import threadpool_info\n"
            "    info = threadpool_info()\n"
            "except ImportError:\n"
            "    info = 'threadpoolctl not installed'\n"
            "print(json.dumps(info))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=60)
        return json.loads(out.stdout)
    except (subprocess.SubprocessError, ValueError) as e:
        return f"unknown ({e})"


def machine_info(env):
    """CPU, cores, memory, OS, Python and package versions, BLAS, JAGS, the code's git revision."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    mem = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal:")), None)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    jags = shutil.which("jags")
    if jags:
        try:
            hello = subprocess.run([jags], input="exit\n", capture_output=True, text=True, timeout=30).stdout
            jags = next((line.split(" on ")[0].replace("Welcome to ", "") for line in hello.splitlines()
                         if line.startswith("Welcome")), jags)
        except subprocess.SubprocessError:
            pass
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    return {"cpu": model, "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": round(mem / 1024 ** 2, 1) if mem else None, "os": platform.platform(),
            "python": platform.python_version(), "packages": versions, "blas": blas_info(env),
            "jags": jags, "teachlmm_git": git}


def blas_summary(blas):
    """One line: e.g. 'openblas 0.3.27 (Haswell), 2 threads'."""
    if not isinstance(blas, list):
        return str(blas)
    parts = [f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}), "
             f"{b.get('num_threads')} threads" for b in blas if b.get("user_api") == "blas"]
    return "; ".join(parts) or "no BLAS found"


# ----------------------------------------------------------------------------
# running the benchmarks
# ----------------------------------------------------------------------------

def run_benchmark(name, quick, env, timeout):
    """Run one benchmark script in its own process; its JSON result (or why it was skipped)."""
    script, _ = BENCHMARKS[name]
    path = os.path.join(HERE, script)
    if not os.path.exists(path):
        return {"skipped": f"{script} is not there (yet)"}
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [sys.executable, path]
    source = _read(path)
    if "--json" in source:
        cmd += ["--json", out]
    if quick and "--quick" in source:
        cmd.append("--quick")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = time.perf_counter() - start
    result = None
    if os.path.exists(out) and os.path.getsize(out):
        result = json.load(open(out))
    elif name == "gibbs":                            # the Gibbs script may save its own file instead
        own = os.path.join(HERE, "results", "gibbs_jags.json")
        if os.path.exists(own) and os.path.getmtime(own) >= time.time() - seconds - 1:
            result = json.load(open(own))
    os.remove(out) if os.path.exists(out) else None
    if code == 0 and isinstance(result, dict) and set(result) == {"skipped"}:
        return {"skipped": f"{script}: {result['skipped']}", "seconds": seconds}   # a peer is missing
    if code != 0 or result is None:
        return {"skipped": f"{script} failed (exit {code}) after {seconds:.0f} s", "seconds": seconds}
    return {"result": result, "seconds": seconds}


def run(names, quick=False, keep_blas_env=False, threads=1, out_path=RESULTS):
    """Run the chosen benchmarks; merge them into the results file and return its content."""
    env, env_record = benchmark_environment(keep_blas_env, threads)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(env)
    old = json.load(open(out_path)) if os.path.exists(out_path) else {}
    same_machine = old.get("machine", {}).get("cpu") == machine["cpu"] and \
        old.get("machine", {}).get("cores") == machine["cores"]
    results = {"date": date, "machine": machine, "environment": env_record, "quick": quick,
               "benchmarks": dict(old.get("benchmarks", {})) if same_machine else {}}
    limit = 300 if quick else 900
    for name in names:
        print(f"\n=== {name}: {BENCHMARKS[name][1]} ===", flush=True)
        load = os.getloadavg()[0]
        entry = run_benchmark(name, quick, env, limit)
        entry.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     quick=quick, load_avg_1min=[load, os.getloadavg()[0]],
                     teachlmm_git=machine["teachlmm_git"])
        results["benchmarks"][name] = entry
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    return results


# ----------------------------------------------------------------------------
# the report: tables from the saved results
# ----------------------------------------------------------------------------

def _module(name):
    """The benchmark module (for its ``tables`` function), loaded from this folder, or None."""
    path = os.path.join(HERE, BENCHMARKS[name][0])
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:                               # a benchmark that cannot load: fall back to raw numbers
        return None
    return module


def _generic_tables(name, result):
    """A key/value table of the numbers in a result without a ``tables`` function of its own."""
    rows = []

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, bool) or isinstance(value, str):
            rows.append([prefix, str(value)])
        elif isinstance(value, (int, float)):
            rows.append([prefix, f"{value:.4g}"])
    walk("", result)
    return [(BENCHMARKS[name][1], ["quantity", "value"], rows, [])]


def section_tables(name, entry):
    """(title, header, rows, notes) tables of one saved benchmark entry."""
    if "result" not in entry:
        return [(BENCHMARKS[name][1], [], [], [f"skipped: {entry.get('skipped', 'no result')}"])]
    module = _module(name)
    try:
        tables = module.tables(entry["result"]) if module and hasattr(module, "tables") else None
    except Exception as e:                          # an older result the current code cannot read
        tables = None
        entry = dict(entry, note=f"table failed: {e}")
    tables = tables or _generic_tables(name, entry["result"])
    stamp = f"measured {entry['date']}" + (" (--quick)" if entry.get("quick") else "") + \
        f", load average {entry['load_avg_1min'][0]:.1f} -> {entry['load_avg_1min'][1]:.1f}"
    return [(title, header, rows, notes + [stamp]) for title, header, rows, notes in tables]


def header_lines(results):
    m, env = results["machine"], results["environment"]
    blas_env = ("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE removed" if env["blas_variables_removed"] else
                f"kept {env['blas_variables_found']}" if env["blas_variables_found"] else
                "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set")
    pk = m["packages"]
    peers = ", ".join(f"{k} {v}" for k, v in pk.items() if k not in ("numpy", "scipy") and v)
    threads = env.get("thread_variables") or "each library's default"
    if isinstance(threads, dict) and len(set(threads.values())) == 1:
        threads = f"{next(iter(threads.values()))} per tool ({'/'.join(threads)})"
    return [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']} "
            f"(last run {results['date']}; each table gives its own date)",
            f"Python {m['python']}, numpy {pk.get('numpy')}, scipy {pk.get('scipy')}; "
            f"BLAS: {blas_summary(m['blas'])} ({blas_env}); threads: {threads}; teachlmm {m['teachlmm_git']}",
            f"Peers: {peers or 'none installed'}; JAGS: {m['jags'] or 'not installed'}"]


def all_tables(results):
    return [t for name in BENCHMARKS if name in results["benchmarks"]
            for t in section_tables(name, results["benchmarks"][name])]


def report_text(results):
    lines = header_lines(results)
    for title, header, rows, notes in all_tables(results):
        lines += ["", title]
        if header:
            cells = [header] + rows
            widths = [max(len(str(r[i])) for r in cells if i < len(r)) for i in range(len(header))]
            lines += ["  " + "  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in cells]
        lines += ["  " + note for note in notes]
    return "\n".join(lines)


def report_markdown(results):
    """The saved results as Markdown (the book's Performance page shows this)."""
    lines = ["- " + line for line in header_lines(results)]
    for title, header, rows, notes in all_tables(results):
        lines += ["", f"**{title}**", ""]
        if header:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller data (< 2 min)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--keep-blas-env", action="store_true",
                        help="do not remove OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    parser.add_argument("--threads", type=int, default=1, help="OMP/OPENBLAS/MKL/RAYON_NUM_THREADS for "
                        "every tool (default 1; 0: each library's own default)")
    parser.add_argument("--out", default=RESULTS, help="results file (default: results/latest.json)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(args.only or list(BENCHMARKS), quick=args.quick, keep_blas_env=args.keep_blas_env,
                  threads=args.threads, out_path=args.out)
    print("\n" + "=" * 100)
    print(report_text(results))
    print(f"\nWritten to {os.path.relpath(args.out)} in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
