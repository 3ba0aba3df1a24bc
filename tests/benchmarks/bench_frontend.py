"""The front end must not slow teachlmm down: this tree against another commit, interleaved.

Times, for each source tree (this one and a reference commit checked out by
``git archive`` into a temporary folder):

* ``m3``: formula to fit on radon M3, ``tl.em.fit(tl.Model(M3, radon))``;
* ``build``: ``tl.Model(FORMULA, data)`` on bench_scale's 1M-row, 10,000-group
  data set (the per-group statistics of one million rows).

Protocol (DEVELOPERS.md): CPU time, one BLAS thread, an untimed warm-up in
each child process, then ``--repeats`` timed calls; the two trees run in
turns (A, B, A, B, ...) for ``--rounds`` rounds, each in a fresh process, and
the medians of all timed calls are compared as a ratio.

    python tests/benchmarks/bench_frontend.py [--base c834db8] [--rounds 5] [--repeats 3] [--rows 1000000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
M3 = "log_radon ~ 1 + floor + (1 + floor | county)"
FORMULA = "y ~ 1 + x + u + x:u + (1 + x | group)"

CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits(1)
import teachlmm as tl
what, repeats = sys.argv[2], int(sys.argv[3])
if what == "m3":
    data = tl.load_radon()
    call = lambda: tl.em.fit(tl.Model(%(M3)r, data))
else:
    data = dict(np.load(sys.argv[4]))
    call = lambda: tl.Model(%(FORMULA)r, data)
warnings.simplefilter("ignore")
call()                                                     # warm-up, untimed
out = []
for _ in range(repeats):
    c0 = time.process_time(); call(); out.append(time.process_time() - c0)
print(json.dumps(out))
""" % {"M3": M3, "FORMULA": FORMULA}


def run(tree, what, repeats, data_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", CHILD, tree, what, str(repeats), data_path or ""],
                         capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="c834db8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_frontend_")
    base_tree = os.path.join(tmp, "base")
    os.makedirs(base_tree)
    archive = subprocess.run(["git", "-C", ROOT, "archive", args.base, "teachlmm"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", base_tree], input=archive.stdout, check=True)
    sys.path.insert(0, HERE)
    import bench_scale
    data_path = os.path.join(tmp, "scale.npz")
    bench_scale.make_data(data_path, args.rows, args.groups)
    trees = {"this": ROOT, args.base: base_tree}
    times = {w: {t: [] for t in trees} for w in ("m3", "build")}
    for r in range(args.rounds):
        for what in times:
            for name, tree in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
                times[what][name] += run(tree, what, args.repeats, data_path if what == "build" else None)
    out = {"protocol": "CPU time, 1 BLAS thread, warm-up per process, trees interleaved; medians",
           "rows": args.rows, "groups": args.groups, "base": args.base}
    for what, per in times.items():
        med = {name: float(np.median(v)) for name, v in per.items()}
        out[what] = {"median_seconds": med, "ratio_this_over_base": med["this"] / med[args.base],
                     "n_timed": {k: len(v) for k, v in per.items()}}
        print(f"{what:6s} this {med['this']:.4f} s   {args.base} {med[args.base]:.4f} s   "
              f"ratio {med['this'] / med[args.base]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
