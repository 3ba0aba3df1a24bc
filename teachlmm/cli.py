"""The command line: ``python -m teachlmm`` runs the lecture; ``teachlmm fit`` fits your CSV.

``python -m teachlmm`` (or ``teachlmm lecture``) fits the lecture's models M3
and M4 on the shipped radon data by EM (REML) and prints what the lecture
shows: both lmer-style summaries, county 2's regression line, and M4's county
intercepts alpha_j and slopes beta_j.

``teachlmm fit "y ~ x + (1 | g)" --data file.csv [--ml] [--sep ';'] [--dec ','] [--encoding latin-1]
[--missing error] [--ranef] [--output text|json|csv] [--table fixef|ranef|coef|varcorr]`` fits a
user's CSV, read as :func:`teachlmm.read_csv` reads it (``--data -`` reads it from standard input).
``--output json`` prints one JSON object with the keys of :data:`JSON_KEYS`;
``--output csv`` prints one table (``--table``) as CSV. ``teachlmm --version``.

Exit status: 0 on success, 2 on a user error (a bad file, formula or model;
the message says what to do), 1 on an internal error (never a traceback).
"""
import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import warnings


from . import __version__, em
from .data import RADON_MODELS, load_radon, read_csv
from .design import Model
from .errors import BoundaryWarning, TeachLMMError
from .tables import format_table

JSON_KEYS = ("fixef", "fixef_se", "G", "sigma2", "loglik", "groups", "ranef")
DESCRIPTION = ("Linear mixed models fitted by readable algorithms. Without a command: fit the "
               "lecture's models M3 and M4 on the radon data and print them.")

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


def _read_data(args):
    """The CSV of ``--data``; ``-`` is standard input (copied to a temporary file, read the same way)."""
    sep = "\t" if args.sep in ("\\t", "tab") else args.sep
    if args.data != "-":
        return read_csv(args.data, sep=sep, dec=args.dec, encoding=args.encoding)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stdin.csv")
        with open(path, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        return read_csv(path, sep=sep, dec=args.dec, encoding=args.encoding)


def _plain(v):
    """A group label or number as JSON has it (numpy scalars to Python)."""
    return v.item() if hasattr(v, "item") else v


def _factors(fit):
    """(factor, levels, ranef, condsd, ranef names, coef, coef names) for every grouping factor of the fit."""
    several = isinstance(fit.ranef_names, dict)
    for g, levels in fit.groups_by.items():
        names = fit.ranef_names[g] if several else fit.ranef_names
        coef_names = fit.coef_names[g] if several else fit.coef_names
        yield g, levels, fit.ranefs[g], fit.condsds[g], names, fit.coefs[g], coef_names


def fit_json(fit):
    """The fit's numbers as a dict with the keys ``JSON_KEYS`` (what ``--output json`` prints).

    One grouping factor: fixef, fixef_se : {name: value}.   G : q x q list.   sigma2, loglik : floats.
    groups : the group labels.   ranef : {random-effect name: [BLUP per group, in ``groups`` order]}.

    Several grouping factors (``(1 | batch/cask)``): ``G`` becomes ``Gs`` ({VarCorr name: q_k x q_k list}),
    and ``groups`` and ``ranef`` are keyed by grouping factor first, as lme4's ``ranef()``.
    """
    out = {"fixef": dict(fit.fixef), "fixef_se": dict(fit.fixef_se)}
    if isinstance(fit.ranef_names, dict):
        out["Gs"] = {name: G.tolist() for name, G in fit.Gs.items()}
        out.update(sigma2=fit.sigma2, loglik=fit.loglik,
                   groups={g: [_plain(v) for v in levels] for g, levels, *_ in _factors(fit)},
                   ranef={g: {name: b[:, k].tolist() for k, name in enumerate(names)}
                          for g, _, b, _, names, _, _ in _factors(fit)})
        return out
    out.update(G=fit.G.tolist(), sigma2=fit.sigma2, loglik=fit.loglik, groups=[_plain(g) for g in fit.groups],
               ranef={name: fit.ranef[:, k].tolist() for k, name in enumerate(fit.ranef_names)})
    return out


def table_rows(fit, table):
    """(header, rows) of one table for ``--output csv``: fixef, ranef, coef or varcorr."""
    if table == "fixef":
        return (["term", "Estimate", "Std. Error", "t value"],
                [[k, fit.fixef[k], fit.fixef_se[k], fit.fixef[k] / fit.fixef_se[k] if fit.fixef_se[k] else ""]
                 for k in fit.fixef_names])
    if table in ("ranef", "coef") and isinstance(fit.ranef_names, dict):      # several factors: long form
        rows = []
        for g, levels, b, _, names, c, coef_names in _factors(fit):
            values, cols = (b, names) if table == "ranef" else (c, coef_names)
            rows += [[g, _plain(level), col, v] for level, row in zip(levels, values.tolist())
                     for col, v in zip(cols, row)]
        return ["factor", "level", "term", "value"], rows
    if table in ("ranef", "coef"):
        values, names = (fit.ranef, fit.ranef_names) if table == "ranef" else (fit.coef, fit.coef_names)
        return [fit.group_name, *names], [[_plain(g), *row] for g, row in zip(fit.groups, values.tolist())]
    if table == "varcorr":
        labels, rows = fit.varcorr_rows()
        return ["grp", "var1", "var2", "vcov", "sdcor"], [["" if v is None else v for v in r] for r in rows]
    raise TeachLMMError(f"unknown table {table!r}; choose fixef, ranef, coef or varcorr")


def _print_ranef(fit):
    print("\nRandom effects (BLUPs) and their conditional SDs:")
    for g, levels, b, sd, names, _, _ in _factors(fit):
        header = [g] + [h for name in names for h in (name, f"condsd {name}")]
        rows = [[str(level)] + [f"{v:.5f}" for pair in zip(bj, sj) for v in pair]
                for level, bj, sj in zip(levels, b, sd)]
        print(format_table(rows, header))


def _fit_command(args):
    data = _read_data(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = em.fit(Model(args.formula, data, missing=args.missing), reml=not args.ml, max_iter=args.max_iter)
    said = set()
    for w in caught:                     # each warning once; a singular fit once (the summary says it)
        text_says_it = args.output == "text" and issubclass(w.category, BoundaryWarning) and fit.singular
        if not text_says_it and str(w.message) not in said:
            said.add(str(w.message))
            _show_warning(w.message, w.category, w.filename, w.lineno)
    if args.output == "json":
        print(json.dumps(fit_json(fit), indent=1))
    elif args.output == "csv":
        header, rows = table_rows(fit, args.table or "fixef")
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[repr(v) if isinstance(v, float) else v for v in r] for r in rows])
    else:
        print(fit.summary())
        if args.ranef:
            _print_ranef(fit)
    return fit


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source line they came from."""
    print(f"teachlmm: {category.__name__}: {message}", file=sys.stderr)


def main(argv=None):
    """Entry point of the ``teachlmm`` command."""
    parser = argparse.ArgumentParser(prog="teachlmm", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"teachlmm {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("lecture", help="fit the lecture's M3 and M4 on the radon data (the default)")
    f = sub.add_parser("fit", help="fit a model to a CSV file")
    f.add_argument("formula", help='lmer formula, e.g. "y ~ 1 + x + (1 + x | g)"')
    f.add_argument("--data", required=True, help="CSV file with a header line; '-' reads standard input")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    f.add_argument("--ranef", action="store_true",
                   help="also print each group's BLUPs and conditional SDs (text output)")
    f.add_argument("--output", choices=["text", "json", "csv"], default="text",
                   help="text: the lmer-style summary (default); json: " + ", ".join(JSON_KEYS)
                   + "; csv: the table chosen by --table")
    f.add_argument("--table", choices=["fixef", "ranef", "coef", "varcorr"], default=None,
                   help="the table for --output csv (default fixef)")
    f.add_argument("--max-iter", type=int, default=10000, help="most EM iterations (default 10000)")
    f.add_argument("--sep", default=",", help="field separator (default ','; e.g. ';' or '\\t')")
    f.add_argument("--dec", default=".", help="decimal mark (default '.'; ',' with --sep ';')")
    f.add_argument("--encoding", default="utf-8", help="the file's encoding (default utf-8; e.g. latin-1)")
    f.add_argument("--missing", choices=["drop", "error"], default="drop",
                   help="rows with a missing value: drop them as lme4 does (default) or stop with an error")
    args = parser.parse_args(argv)
    if args.command == "fit" and args.table is not None and args.output != "csv":
        parser.error("--table chooses the table of --output csv; add --output csv")
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
