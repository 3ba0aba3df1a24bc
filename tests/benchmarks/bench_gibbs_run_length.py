"""Is the default run length of ``tl.gibbs.sample`` long enough? Radon M3 and M4, seeds 0-9, the default prior.

For each model and seed the script runs ``sample(model, seed=seed)`` with the
default draws and warm-up (or those given) and counts the runs in which any of
beta, G, sigma2 fails the convergence check of ``teachlmm.convergence`` (R-hat
> 1.01, bulk or tail ESS < 400), printing the smallest ESS of each run. The
issue-15 target: at most 1 of the 10 seeds warns, for each model.

    python tests/benchmarks/bench_gibbs_run_length.py [--draws N --warmup N]

Measured on the issue-15 branch (2 shared cores, so only the counts matter, not the time):
draws 2000 / warm-up 500: M3 warned in 2 of 10 seeds, M4 in 3; draws 4000 / warm-up 1000
(the default): M3 1 of 10 (smallest ESS 358), M4 1 of 10 (smallest ESS 51).
"""
import argparse
import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {"M3": "log_radon ~ 1 + floor + (1 + floor | county)",
          "M4": "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import teachlmm as tl
    from teachlmm import convergence, diagnostics
    lengths = {k: v for k, v in (("draws", args.draws), ("warmup", args.warmup)) if v is not None}
    radon = tl.load_radon()
    for name, formula in MODELS.items():
        model, warned, smallest = tl.Model(formula, radon), [], []
        for seed in range(args.seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", tl.ConvergenceWarning)
                post = tl.gibbs.sample(model, seed=seed, keep_b=False, **lengths)
            bad = convergence.problems(post)
            if bad:
                warned.append((seed, sorted(bad)))
            smallest.append(min(min(diagnostics.ess_bulk(post.get(n)), diagnostics.ess_tail(post.get(n)))
                                for n in post.checked_names()))
        print(f"{name}: {post.chains} chains x {post.n_draws} draws (warm-up {post.warmup}); warned in "
              f"{len(warned)} of {args.seeds} seeds {warned}; smallest ESS per seed {np.round(smallest).tolist()}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
