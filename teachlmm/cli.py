"""The command line: ``python -m teachlmm`` runs the lecture; ``teachlmm fit`` fits your CSV.

``python -m teachlmm`` (or ``teachlmm lecture``) fits the lecture's models M3
and M4 on the shipped radon data by EM (REML) and prints what the lecture
shows: both lmer-style summaries, county 2's regression line, and M4's county
intercepts alpha_j and slopes beta_j.

``teachlmm fit "y ~ x + (1 | g)" --data file.csv [--ml] [--sep ';'] [--dec ','] [--encoding latin-1]
[--missing error]`` fits a user's CSV, read as :func:`teachlmm.read_csv` reads it.

Exit status: 0 on success, 2 on a user error (a bad file, formula or model;
the message says what to do), 1 on an internal error (never a traceback).
"""
import argparse
import os
import sys
import warnings


from . import em
from .data import RADON_MODELS, load_radon, read_csv
from .design import Model
from .errors import TeachLMMError

M3, M4 = RADON_MODELS["M3"], RADON_MODELS["M4"]


def _vector(values, per_line=8):
    lines = []
    for k in range(0, len(values), per_line):
        chunk = " ".join(f"{v:7.4f}" for v in values[k:k + per_line])
        lines.append(f"[{k + 1:>2}] {chunk}")
    return "\n".join(lines)


def county_lines(fit, u):
    """M4's county intercepts and slopes: alpha_j = coef[j,0] + coef[j,2] u_j, beta_j = coef[j,1] + coef[j,3] u_j.

    lme4's ``coef()`` repeats the fixed effects of u and x:u in every row (they
    have no random part), so the u_j terms must be added by hand.
    """
    c = fit.coef
    return c[:, 0] + c[:, 2] * u, c[:, 1] + c[:, 3] * u


def lecture(out=sys.stdout):
    """Print the lecture's models, fitted on the shipped radon data."""
    data = load_radon()
    m3 = em.fit(Model(M3, data), reml=True)
    print("=" * 72, file=out)
    print("M3: varying intercepts and slopes", file=out)
    print("=" * 72, file=out)
    print(m3.summary(), file=out)
    k = list(m3.groups).index(2)
    a = m3.fixef["(Intercept)"] + m3.ranef[k, 0]
    b = m3.fixef["floor"] + m3.ranef[k, 1]
    print(f"\nCounty 2: y_hat = ({m3.fixef['(Intercept)']:.3f} {m3.ranef[k, 0]:+.3f}) + "
          f"({m3.fixef['floor']:.3f} {m3.ranef[k, 1]:+.3f}) x = {a:.3f} {b:+.3f} x", file=out)
    print(f"          coef row: {m3.coef[k, 0]:.4f} {m3.coef[k, 1]:+.4f} x", file=out)

    model4 = Model(M4, data)
    m4 = em.fit(model4, reml=True)
    print("\n" + "=" * 72, file=out)
    print("M4: cross-level interaction (floor x county log uranium)", file=out)
    print("=" * 72, file=out)
    print(m4.summary(), file=out)
    u = model4.group_values("log_uranium")
    alpha, beta = county_lines(m4, u)
    print("\nCounty intercepts alpha_j = coef[,1] + coef[,3] * u_j:", file=out)
    print(_vector(alpha), file=out)
    print("\nCounty slopes beta_j = coef[,2] + coef[,4] * u_j:", file=out)
    print(_vector(beta), file=out)
    print(f"\nEM iterations (SQUAREM): M3 {m3.n_iter}, M4 {m4.n_iter}", file=out)
    return m3, m4


def _fit_command(args):
    sep = "\t" if args.sep in ("\\t", "tab") else args.sep
    data = read_csv(args.data, sep=sep, dec=args.dec, encoding=args.encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        fit = em.fit(Model(args.formula, data, missing=args.missing), reml=not args.ml, max_iter=args.max_iter)
    print(fit.summary())
    if args.ranef:
        print("\nRandom effects (BLUPs) and conditional SDs:")
        for g, b, s in zip(fit.groups, fit.ranef, fit.condsd):
            print(f"  {g}: " + "  ".join(f"{v: .5f} ({e:.5f})" for v, e in zip(b, s)))
    return fit


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source line they came from."""
    print(f"teachlmm: {category.__name__}: {message}", file=sys.stderr)


def main(argv=None):
    """Entry point of the ``teachlmm`` command."""
    parser = argparse.ArgumentParser(prog="teachlmm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("lecture", help="fit the lecture's M3 and M4 on the radon data (the default)")
    f = sub.add_parser("fit", help="fit a model to a CSV file")
    f.add_argument("formula", help='lmer formula, e.g. "y ~ 1 + x + (1 + x | g)"')
    f.add_argument("--data", required=True, help="CSV file with a header line")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    f.add_argument("--ranef", action="store_true", help="also print each group's BLUPs")
    f.add_argument("--max-iter", type=int, default=10000)
    f.add_argument("--sep", default=",", help="field separator (default ','; e.g. ';' or '\\t')")
    f.add_argument("--dec", default=".", help="decimal mark (default '.'; ',' with --sep ';')")
    f.add_argument("--encoding", default="utf-8", help="the file's encoding (default utf-8; e.g. latin-1)")
    f.add_argument("--missing", choices=["drop", "error"], default="drop",
                   help="rows with a missing value: drop them as lme4 does (default) or stop with an error")
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            _fit_command(args)
        else:
            lecture()
    except BrokenPipeError:                  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (TeachLMMError, OSError) as err:
        print(f"teachlmm: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:                 # a bug in teachlmm: say so, without a traceback
        print(f"teachlmm: internal error ({type(err).__name__}: {err}); please report it with the "
              "command and the file", file=sys.stderr)
        return 1
    return 0
