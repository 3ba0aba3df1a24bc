"""Labelled views of results: pandas DataFrames, HTML for notebooks, short reprs.

Everything here is display: the numbers come from the result objects
(``fit.ranef``, ``post.draws``, ...), this module only puts names on them.

* :func:`require_pandas` imports pandas on first use (it is the optional extra
  ``teachlmm[pandas]``; teachlmm never needs it to fit a model) and says how to
  install it when it is missing.
* :class:`Text` is a printout (a ``str``: ``print`` and ``.splitlines()`` work)
  that Jupyter shows as preformatted HTML instead of an escaped string.
* :func:`html_table` is the HTML twin of :func:`teachlmm.tables.format_table`.
* :func:`short_repr` writes a one-line description of a state with many arrays
  (an EM or Gibbs state, a pooling comparison): the arrays stay one attribute away.

Examples
--------
>>> t = Text("a\\nb")
>>> t.splitlines(), "<pre" in t._repr_html_()
(['a', 'b'], True)
>>> print(html_table(["", "n"], [["a", 1]]))
<table><thead><tr><th></th><th>n</th></tr></thead><tbody><tr><th>a</th><td>1</td></tr></tbody></table>
"""
import html

import numpy as np

from .errors import TeachLMMError

__all__ = ["require_pandas", "Text", "html_table", "short_repr", "labelled"]


def require_pandas():
    """Import pandas, or explain how to get it (a TeachLMMError, not an ImportError deep in a call).

    Examples
    --------
    >>> require_pandas().__name__
    'pandas'
    """
    try:
        import pandas
    except ImportError as err:                                  # pragma: no cover - pandas is in the test extra
        raise TeachLMMError("tables as DataFrames need pandas, an optional extra: "
                            "pip install 'teachlmm[pandas]' (or pip install pandas)") from err
    return pandas


class Text(str):
    """A printout: a ``str`` that Jupyter displays as preformatted text, and the REPL shows unescaped.

    Examples
    --------
    >>> Text("x  1\\ny  2").splitlines()
    ['x  1', 'y  2']
    """

    html = None          # an HTML rendering to show instead of the preformatted text

    @classmethod
    def with_html(cls, text, markup):
        """The printout ``text``, shown in a notebook as ``markup`` (HTML)."""
        out = cls(text)
        out.html = markup
        return out

    def _repr_html_(self):
        return self.html or f"<pre style='white-space: pre'>{html.escape(str(self))}</pre>"

    def __repr__(self):
        return str(self)


def html_table(header, rows, caption=None):
    """An HTML table: ``header`` cells as <th>, each row's first cell as a row header.

    Parameters
    ----------
    header : list of column titles (the first is the row-name column's).
    rows : list of lists; cells are escaped text.
    caption : str, optional.

    Examples
    --------
    >>> "<td>0.5</td>" in html_table(["", "x"], [["a", 0.5]])
    True
    """
    def cells(tag, values):
        return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)
    head = f"<thead><tr>{cells('th', header)}</tr></thead>"
    body = "".join(f"<tr>{cells('th', r[:1])}{cells('td', r[1:])}</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}{head}<tbody>{body}</tbody></table>"


def labelled(values, index, columns, index_name=None):
    """A DataFrame of a (rows, columns) array with the given labels (a copy: editing it leaves the fit alone).

    Examples
    --------
    >>> float(labelled(np.eye(2), ["a", "b"], ["x", "y"], "g").loc["b", "y"])
    1.0
    """
    pd = require_pandas()
    idx = pd.Index(list(index), name=index_name)
    return pd.DataFrame(np.array(values, dtype=float), index=idx, columns=list(columns))


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array{value.shape}" if value.size > 4 else np.array2string(value, precision=4,
                                                                            separator=", ").replace("\n", "")
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return repr(value)


def short_repr(kind, fields):
    """``<kind name=value, ...>``: scalars and small arrays printed, bigger arrays as their shapes.

    Examples
    --------
    >>> short_repr("State", {"iteration": 3, "sigma2": 0.5, "b": np.zeros((85, 2))})
    '<State iteration=3, sigma2=0.5, b=array(85, 2)>'
    """
    return f"<{kind} " + ", ".join(f"{k}={_describe(v)}" for k, v in fields.items()) + ">"
