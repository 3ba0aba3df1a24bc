"""The JAGS peer of the Gibbs benchmarks: write the data, run ``jags`` on a .bug model, read its CODA output.

One JAGS run is one ``jags`` process on a command file, in a fresh folder::

    write_data(folder, {"n": 3, "y": [0.5, 1.2, 0.9], "W": numpy.eye(2)})   # data.R
    write_commands(folder, "model.bug", chains=4, warmup=1000, draws=5000,
                   monitors=["beta", "G"], seed=1)                          # run.cmd, inits1.R ...
    cpu, wall = run(folder)                                                   # the timed process
    coda = read_coda(folder, chains=4)                                        # {"beta[1]": (4, 5000), ...}

``run`` times the process by the clock and by its CPU time, read from
``getrusage(RUSAGE_CHILDREN)`` before and after (user + system seconds of the
finished child): so Python's own start-up and imports are never charged to JAGS.
``sample`` does all four steps in a temporary folder, which it removes.

Radon M3 under the protocol of ``shared/bench/jags_m3/`` (its ``m3.bug`` and
``run.cmd`` unchanged, the data written as its ``jags_min_ess.py`` writes them)
is :func:`run_radon_m3`, used by ``bench_gibbs_jags.py`` and ``bench_gibbs_nutpie.py``.
"""
import csv
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RADON_CSV = os.path.join(ROOT, "teachlmm", "data", "radon.csv")
RADON_M3_NAMES = {"beta[0]": "mu[1]", "beta[1]": "mu[2]", "G[0,0]": "Sigma_B[1,1]", "G[0,1]": "Sigma_B[1,2]",
                  "G[1,1]": "Sigma_B[2,2]", "sigma2": "sigma_y^2"}     # teachlmm's name: the protocol's


def missing():
    """Why JAGS cannot run here, or None."""
    return None if shutil.which("jags") else "JAGS is not installed (apt-get install jags)"


def version():
    """JAGS's version ("4.3.1"), from the banner of ``jags``; None if it does not start."""
    try:
        banner = subprocess.run(["jags"], input="exit\n", capture_output=True, text=True, timeout=30).stdout
        return re.search(r"JAGS (\S+)", banner).group(1)
    except (OSError, subprocess.SubprocessError, AttributeError):
        return None


# ----------------------------------------------------------------------------
# the files of one run
# ----------------------------------------------------------------------------

def _r_value(value):
    """One value in R's dump format: a number, c(...) for a vector, structure(..., .Dim) for a matrix.

    Strings are written as they are (a number as its source file spells it);
    a matrix goes column by column, as R stores it.
    """
    import numpy as np
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "US":
        cells = [str(v) for v in array.ravel(order="F")]
    elif array.dtype.kind in "iub":
        cells = [str(int(v)) for v in array.ravel(order="F")]
    else:
        cells = [repr(float(v)) for v in array.ravel(order="F")]     # repr: every digit of the double
    if array.ndim == 0:
        return cells[0]
    if array.ndim == 1:
        return "c(%s)" % ",".join(cells)
    return "structure(c(%s), .Dim = c(%s))" % (",".join(cells), ",".join(str(d) for d in array.shape))


def write_data(folder, values, name="data.R"):
    """Write ``values`` ({R name: number, vector or matrix}) to ``folder/name`` in R's dump format."""
    with open(os.path.join(folder, name), "w") as f:
        for key, value in values.items():
            f.write(f"{key} <- {_r_value(value)}\n")


def write_commands(folder, model, chains, warmup, draws, monitors, seed, data="data.R"):
    """Write ``run.cmd`` (compile, warm-up, monitor, sample, write CODA) and one inits file per chain.

    Chain c gets its own Mersenne-Twister seed, 1000 * seed + c, so a run is
    reproducible and its chains differ. The CODA files are ``out*``.
    """
    lines = [f'model in "{model}"', f'data in "{data}"', f"compile, nchains({chains})"]
    for c in range(1, chains + 1):
        with open(os.path.join(folder, f"inits{c}.R"), "w") as f:
            f.write(f'".RNG.name" <- "base::Mersenne-Twister"\n".RNG.seed" <- {1000 * seed + c}\n')
        lines.append(f'parameters in "inits{c}.R", chain({c})')
    lines += ["initialize", f"update {warmup}"] + [f"monitor {m}" for m in monitors]
    lines += [f"update {draws}", "coda *, stem(out)", "exit"]
    with open(os.path.join(folder, "run.cmd"), "w") as f:
        f.write("\n".join(lines) + "\n")


def run(folder, commands="run.cmd"):
    """Run ``jags commands`` in ``folder``: (CPU seconds, wall seconds) of that process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["jags", commands], cwd=folder, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)   # user + system
    return cpu, wall


def read_coda(folder, chains, stem="out"):
    """JAGS's CODA output as {name: array (chains, draws)}, names as JAGS writes them ("G[1,2]")."""
    import numpy as np
    index = {}
    for line in open(os.path.join(folder, f"{stem}index.txt")):
        name, first, last = line.split()
        index[name] = (int(first) - 1, int(last))
    values = np.array([np.loadtxt(os.path.join(folder, f"{stem}chain{c}.txt"))[:, 1]
                       for c in range(1, chains + 1)])
    return {name: values[:, a:b] for name, (a, b) in index.items()}


def sample(model_file, data, monitors, chains, warmup, draws, seed):
    """One timed JAGS run of ``model_file`` on ``data`` in a temporary folder: (draws, CPU s, wall s)."""
    folder = tempfile.mkdtemp(prefix="teachlmm-jags-")
    try:
        shutil.copy(model_file, os.path.join(folder, "model.bug"))
        write_data(folder, data)
        write_commands(folder, "model.bug", chains, warmup, draws, monitors, seed)
        cpu, wall = run(folder)
        return read_coda(folder, chains), cpu, wall
    finally:
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------
# radon M3, the protocol of shared/bench/jags_m3
# ----------------------------------------------------------------------------

def protocol_folder():
    """Where ``m3.bug``, ``run.cmd`` and ``jags_min_ess.py`` live, or None.

    ``$TEACHLMM_JAGS_BENCH``, else ``shared/bench/jags_m3`` beside the repository, else
    ``/work/shared/bench/jags_m3``.
    """
    candidates = [os.environ.get("TEACHLMM_JAGS_BENCH"),
                  os.path.join(os.path.dirname(ROOT), "shared", "bench", "jags_m3"),
                  "/work/shared/bench/jags_m3"]
    for folder in candidates:
        if folder and os.path.exists(os.path.join(folder, "jags_min_ess.py")):
            return folder
    return None


def missing_radon_m3():
    """Why the radon M3 protocol cannot run here, or None."""
    if missing():
        return missing()
    if protocol_folder() is None:
        return "shared/bench/jags_m3/ (the JAGS model and protocol) was not found; set TEACHLMM_JAGS_BENCH"
    return None


def radon_m3_data():
    """The protocol's data, as ``jags_min_ess.py`` writes it (the CSV's own spelling of every number)."""
    rows = list(csv.DictReader(open(RADON_CSV)))
    return {"n": len(rows), "J": len({r["county"] for r in rows}),
            "y": [r["log_radon"] for r in rows], "x": [r["floor"] for r in rows],
            "county": [r["county"] for r in rows], "W": "structure(c(1,0,0,1), .Dim=c(2,2))"}


def run_radon_m3():
    """One run of the protocol (its ``m3.bug`` and ``run.cmd``, 4 chains): (draws, CPU s, wall s).

    The draws are those of the six quantities under teachlmm's names (sigma2 =
    sigma_y^2), each (4, 5000).
    """
    folder = tempfile.mkdtemp(prefix="teachlmm-jags-m3-")
    try:
        for name in ("m3.bug", "run.cmd"):
            shutil.copy(os.path.join(protocol_folder(), name), folder)
        write_data(folder, radon_m3_data())
        cpu, wall = run(folder)
        coda = read_coda(folder, chains=4)
    finally:
        shutil.rmtree(folder)
    coda["sigma_y^2"] = coda["sigma_y"] ** 2
    return {ours: coda[theirs] for ours, theirs in RADON_M3_NAMES.items()}, cpu, wall
