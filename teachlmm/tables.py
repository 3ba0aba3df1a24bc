"""Plain-text tables and number formats, shared by every printout.

``fit.summary()``, ``post.summary()``, ``print(fit.confint())`` and
``print(tl.anova(...))`` all lay out their rows with :func:`format_table`:
the first column (the row names) left-aligned, the numbers right-aligned,
each column as wide as its widest entry. The number formats are R's, so the
printouts line up with lme4's.

Examples
--------
>>> print(format_table([["(Intercept)", "1.4628"], ["floor", "-0.6811"]], ["", "Estimate"]))
             Estimate
 (Intercept)   1.4628
 floor        -0.6811
"""
import math

import numpy as np

__all__ = ["format_table", "significant", "format_column", "format_p", "stars", "SIGNIF_CODES"]

SIGNIF_CODES = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def format_table(rows, header, align=None, indent=" "):
    """Lay out ``rows`` (lists of cells) under ``header`` as lines of text.

    Parameters
    ----------
    rows : list of lists; cells are turned into text with ``str``.
    header : list, one entry per column.
    align : str, optional
        One letter per column, "l" (left) or "r" (right). Default: the first
        column left, the others right.
    indent : str
        Put in front of every line (lme4 indents its summary tables by one space).

    Returns
    -------
    str, one line per row after the header; trailing blanks removed.

    Examples
    --------
    >>> print(format_table([["a", 1], ["bb", 22]], ["", "n"], indent=""))
        n
    a   1
    bb 22
    """
    align = align or "l" + "r" * (len(header) - 1)
    cols = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cols) for k in range(len(header))]
    lines = [indent + " ".join(c.ljust(w) if a == "l" else c.rjust(w)
                               for c, w, a in zip(r, widths, align)).rstrip() for r in cols]
    return "\n".join(lines)


def significant(x, digits=4):
    """``digits`` significant digits, as lme4's summary prints variances: 0.1032, 1.000e-05.

    Examples
    --------
    >>> significant(0.10323), significant(0.5), significant(2.3e-6)
    ('0.1032', '0.5000', '2.300e-06')
    """
    return f"{x:#.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{digits - 1}e}"


def format_column(values, digits=5):
    """R's ``format(x, digits = 5)`` for a column: the decimals that give every entry 5 significant digits.

    None and non-finite entries print as "".

    Examples
    --------
    >>> format_column([2130.21, -1057.1, None])
    ['2130.2', '-1057.1', '']
    """
    finite = [abs(v) for v in values if v is not None and np.isfinite(v) and v != 0]
    dec = max([digits - 1 - math.floor(math.log10(v)) for v in finite] + [0])
    dec = min(dec, 10)
    return ["" if v is None or not np.isfinite(v) else f"{v:.{dec}f}" for v in values]


def format_p(p):
    """A p-value as R prints it: 4 significant digits, "< 2.2e-16" below machine precision, "" for None.

    Examples
    --------
    >>> format_p(0.28061), format_p(1e-20), format_p(None)
    ('0.2806', '< 2.2e-16', '')
    """
    if p is None or not np.isfinite(p):
        return ""
    return "< 2.2e-16" if p < 2.2e-16 else f"{p:.4g}"


def stars(p):
    """R's significance stars (see ``SIGNIF_CODES``).

    Examples
    --------
    >>> stars(0.0004), stars(0.03), stars(0.2)
    ('***', '*', ' ')
    """
    if p is None or not np.isfinite(p):
        return ""
    return next(s for cut, s in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.01, " ")) if p < cut)
