"""From a user's column to numbers the model can use, coded as R codes them.

A column reaches teachlmm as a numpy array, a list, a pandas or polars
Series. :func:`as_column` turns each into one of two kinds, with a mask of the
missing entries (R's ``NA``):

* ``Numeric``: a float array (numbers, pandas' nullable ``Int64``/``Float64``,
  an object column holding only numbers);
* ``Categorical``: text labels and the order of the levels, if the data gives
  one (a pandas Categorical: its categories' order; a boolean: ``FALSE``,
  ``TRUE``); otherwise levels are sorted as R's ``sort`` does in the C locale
  (by Unicode code point: upper case before lower case, ``"a10"`` before
  ``"a2"``). R in another locale (e.g. ``en_US``) sorts letters ignoring case
  first, so ``b`` may come before ``C`` there and not here: to be sure of the
  reference level, use ``relevel(x, ref = "...")`` or a pandas Categorical.

pandas and polars are never imported: their columns are recognised by what
they offer (``dtype``, ``to_numpy``, ``cat``).

:func:`evaluate` computes a formula variable (``x``, ``log(x)``,
``factor(x)``, ``I(x^2)``, ``scale(x)``, ``poly(x, 2, raw = TRUE)``, ...)
from the columns. Transforms with state (the levels of a factor, the mean
and sd of ``scale``) are learnt once from the fitted data and stored, so
``predict(newdata)`` applies the same transform (as R's ``makepredictcall``).
"""
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .formula import _number_text, deparse

__all__ = ["Numeric", "Categorical", "as_column", "evaluate", "r_label"]


@dataclass
class Numeric:
    values: np.ndarray            # float, NaN where missing
    missing: np.ndarray           # bool


@dataclass
class Categorical:
    labels: np.ndarray            # str labels ("" where missing)
    missing: np.ndarray           # bool
    order: tuple = None           # the data's own level order (Categorical, logical), else None: sort


def r_label(v):
    """``as.character`` of a number as R prints a factor level: 2 -> "2", 2.5 -> "2.5", 1e6 -> "1e+06"."""
    return _number_text(float(v))


def _is_na(v):
    """None, NaN, pandas' NA / NaT: R's NA."""
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    return type(v).__name__ in ("NAType", "NaTType")


def _from_objects(values, name):
    """An object column: numbers -> Numeric, booleans -> logical, text -> Categorical; a mix is an error."""
    missing = np.fromiter((_is_na(v) for v in values), bool, len(values))
    present = values[~missing]
    kinds = {("bool" if isinstance(v, (bool, np.bool_)) else
              "num" if isinstance(v, (int, float, np.integer, np.floating)) else
              "str" if isinstance(v, str) else type(v).__name__) for v in present}
    if kinds <= {"bool"} and kinds:
        labels = np.where(missing, "", np.array(["TRUE" if v else "FALSE" for v in np.where(missing, False, values)]))
        return Categorical(labels.astype(str), missing, ("FALSE", "TRUE"))
    if kinds <= {"num"}:
        big = [v for v in present if isinstance(v, (int, np.integer)) and abs(int(v)) > 2 ** 53]
        if big:                     # ids whose digits float cannot hold: keep them exact, as text
            labels = np.array(["" if m else str(int(v)) for v, m in zip(values, missing)])
            return Categorical(labels, missing)
        out = np.full(len(values), np.nan)
        out[~missing] = np.array([float(v) for v in present])
        return Numeric(out, missing)
    if kinds <= {"str"}:
        return Categorical(np.array(["" if m else v for v, m in zip(values, missing)], dtype=str), missing)
    odd = sorted(kinds - {"num", "str", "bool"})
    if odd:
        if any(k in ("Timestamp", "datetime", "date", "Timedelta", "timedelta", "time", "datetime64") for k in odd):
            raise _dates_error(name)
        raise DataError(f"column {name!r} holds values of type {odd[0]} that teachlmm cannot use; convert the "
                        "column to numbers (e.g. float) or to text (.astype(str)) before fitting")
    example = {k: next(v for v in present if (("num" if isinstance(v, (int, float, np.integer, np.floating))
                                                  and not isinstance(v, (bool, np.bool_)) else "str"
                                                  if isinstance(v, str) else "bool" if isinstance(v, (bool, np.bool_))
                                                  else type(v).__name__) == k)) for k in sorted(kinds)}
    raise DataError(f"column {name!r} mixes kinds of values ({', '.join(f'{k} such as {v!r}' for k, v in example.items())}); "
                    "make it all numbers (e.g. pd.to_numeric) or all text (.astype(str)) before fitting")


def _dates_error(name):
    return DataError(f"column {name!r} holds dates or times, which teachlmm does not code; make a number "
                     "from it first (e.g. days since the start) or a text column for a factor")


def _pandas_categorical(col, name):
    """A pandas Categorical: its categories' order; unused categories dropped later."""
    cats = list(col.cat.categories)
    codes = np.asarray(col.cat.codes, dtype=np.int64)
    missing = codes < 0
    labels_of = [r_label(c) if isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
                 else ("TRUE" if c is True else "FALSE" if c is False else str(c)) for c in cats]
    lab = np.array(labels_of + [""], dtype=str)
    return Categorical(lab[np.where(missing, len(cats), codes)], missing, tuple(labels_of))


def as_column(col, name):
    """One data column as :class:`Numeric` or :class:`Categorical` (with its missing mask)."""
    dtype = getattr(col, "dtype", None)
    if dtype is not None and hasattr(col, "cat") and str(dtype) == "category":
        return _pandas_categorical(col, name)
    if dtype is not None and type(col).__module__.startswith("polars"):
        if str(dtype).startswith(("Categorical", "Enum")):
            col = col.cast(str) if hasattr(col, "cast") else col
        col = col.to_numpy()
    elif dtype is not None and hasattr(col, "to_numpy") and not isinstance(col, np.ndarray):
        kind = getattr(dtype, "kind", "O")
        if kind in "Mm" or str(dtype).startswith(("datetime", "timedelta", "period")):
            raise _dates_error(name)
        if kind in "iuf" and getattr(col, "hasnans", False) is False and "Int" not in str(dtype) \
                and "Float" not in str(dtype):
            col = col.to_numpy()
        else:
            col = col.to_numpy(dtype=object)      # nullable dtypes: pd.NA becomes a Python object
    try:
        arr = np.asarray(col)
    except (ValueError, TypeError) as err:
        raise DataError(f"column {name!r} cannot be read as a column of values ({err})") from None
    if arr.ndim != 1:
        raise DataError(f"column {name!r} must be one-dimensional, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind in "iu":
        if arr.size and (arr.max() > 2 ** 53 or arr.min() < -2 ** 53):
            return Categorical(arr.astype(str), np.zeros(arr.size, bool))
        return Numeric(arr.astype(float), np.zeros(arr.size, bool))
    if kind == "f":
        return Numeric(arr.astype(float, copy=False), np.isnan(arr))
    if kind == "b":
        return Categorical(np.where(arr, "TRUE", "FALSE"), np.zeros(arr.size, bool), ("FALSE", "TRUE"))
    if kind in "US":
        return Categorical(arr.astype(str), np.zeros(arr.size, bool))
    if kind in "Mm":
        raise _dates_error(name)
    if kind == "O":
        return _from_objects(arr, name)
    raise DataError(f"column {name!r} has values of type {arr.dtype} that teachlmm cannot use; "
                    "give numbers or text")


def subset(column, keep):
    """The rows ``keep`` of a column."""
    if isinstance(column, Numeric):
        return Numeric(column.values[keep], column.missing[keep])
    return Categorical(column.labels[keep], column.missing[keep], column.order)


# ----------------------------------------------------------------------------
# formula variables
# ----------------------------------------------------------------------------

_MATH = {"log": np.log, "log2": np.log2, "log10": np.log10, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}
_DOMAIN = {"log": "positive", "log2": "positive", "log10": "positive", "sqrt": "zero or positive"}


def _numeric(expr, cols, name):
    """The numbers an arithmetic expression gives (as R evaluates it inside I() or log())."""
    kind = expr[0]
    if kind == "num":
        return expr[1]
    if kind == "name":
        col = cols[expr[1]]
        if isinstance(col, Categorical):
            raise DataError(f"{name} needs numbers, but column {expr[1]!r} holds text; "
                            "make a numeric column first")
        return col.values
    if kind == "paren":
        return _numeric(expr[1], cols, name)
    if kind == "neg":
        return -_numeric(expr[1], cols, name)
    if kind == "binop":
        a, b = _numeric(expr[2], cols, name), _numeric(expr[3], cols, name)
        with np.errstate(all="ignore"):
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[expr[1]](a, b)
    if kind == "call" and expr[1] in _MATH:
        with np.errstate(all="ignore"):
            return _MATH[expr[1]](_numeric(expr[2][0], cols, name))
    if kind == "call" and expr[1] == "I":
        return _numeric(expr[2][0], cols, name)
    raise DataError(f"{deparse(expr)} cannot be used inside {name}; make the column first")


def _finite(values, text, expr, n):
    values = np.broadcast_to(np.asarray(values, dtype=float), (n,))
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)[:5] + 1
        why = ""
        if expr[0] == "call" and expr[1] in _DOMAIN:
            why = f": {deparse(expr[2][0])} must be {_DOMAIN[expr[1]]} there"
        raise DataError(f"{text} is not a finite number in {bad.sum()} row(s) (rows {', '.join(map(str, rows))}, "
                        f"counting from 1){why}; drop those rows or change the term")
    return values


def learn(expr, text, cols, state):
    """Learn a stateful transform from the fitted data (levels; scale's centre and sd) into ``state``."""
    kind = expr[0]
    fname = expr[1] if kind == "call" else None
    if kind == "name":
        col = cols[expr[1]]
        if isinstance(col, Categorical):
            state[text] = ("levels", _levels(col))
    elif fname in ("factor", "relevel"):
        col = cols[expr[2][0][1]]
        levels = _levels(_factor_of_numbers(col) if isinstance(col, Numeric) else col)
        if fname == "relevel":
            ref_expr = dict(expr[3]).get("ref", expr[2][1] if len(expr[2]) > 1 else None)
            ref = ref_expr[1] if ref_expr[0] == "str" else r_label(ref_expr[1])
            if ref not in levels:
                raise DataError(f"{text}: {ref!r} is not a level of {expr[2][0][1]!r} (levels: "
                                f"{', '.join(levels[:10])}); give one of its levels as ref")
            levels = [ref] + [lev for lev in levels if lev != ref]
        state[text] = ("levels", levels)
    elif fname == "scale":
        x = _finite(_numeric(expr[2][0], cols, text), text, expr, _nrows(cols))
        kw = {k: v[1] for k, v in expr[3]}
        centred = kw.get("center", "TRUE") in ("TRUE", "T")
        scaled = kw.get("scale", "TRUE") in ("TRUE", "T")
        centre = float(np.mean(x)) if centred else 0.0
        if scaled:
            # R's scale: divide by the root mean square sqrt(sum((x - centre)^2) / (n - 1))
            sd = float(np.sqrt(np.sum((x - centre) ** 2) / max(x.size - 1, 1)))
            if not sd > 0:
                raise DataError(f"{text}: the column is constant, so it cannot be scaled; drop the term "
                                "or write scale(x, scale = FALSE)")
        else:
            sd = 1.0
        state[text] = ("scale", centre, sd, centred, scaled)


def _nrows(cols):
    return next(iter(cols.values())).missing.size


def _levels(col):
    """The levels of a factor: the data's own order if it has one, else sorted (C locale)."""
    present = np.unique(col.labels[~col.missing]) if col.labels.size else np.array([], str)
    if col.order is not None:
        seen = set(present.tolist())
        return [lev for lev in col.order if lev in seen]          # unused categories make no column
    return present.tolist()


def _factor_of_numbers(col):
    """factor(x) of a numeric column: levels sorted numerically, labelled as R prints them."""
    values = col.values
    uniq = np.unique(values[~col.missing])
    idx = np.searchsorted(uniq, np.where(col.missing, uniq[0] if uniq.size else 0, values))
    names = np.array([r_label(u) for u in uniq] + [""], dtype=object)
    labels = names[np.where(col.missing, uniq.size, idx)].astype(str)
    return Categorical(labels, col.missing, tuple(names[:-1].tolist()))


def evaluate(expr, text, cols, state):
    """The model-matrix columns of one variable: a list of (name suffix, values) pairs and whether it is a factor.

    A numeric variable is one column named ``text``; a factor is a list of
    0/1 indicator columns, one per level (``state[text]`` holds the levels);
    ``poly(x, k, raw = TRUE)`` is k columns named ``text`` + 1..k.
    """
    n = _nrows(cols)
    kind = expr[0]
    fname = expr[1] if kind == "call" else None
    if kind == "name" and isinstance(cols[expr[1]], Categorical) or fname in ("factor", "relevel"):
        source = expr[1] if kind == "name" else expr[2][0][1]
        col = cols[source]
        if isinstance(col, Numeric):
            col = _factor_of_numbers(col)
        levels = state[text][1]
        unseen = sorted(set(np.unique(col.labels[~col.missing]).tolist()) - set(levels))
        if unseen:
            raise DataError(f"column {source!r} has level(s) {unseen[:5]} that the fitted data did not have; "
                            "predictions need levels the model knows")
        return [(lev, (col.labels == lev).astype(float)) for lev in levels], True
    if fname == "poly":
        x = _finite(_numeric(expr[2][0], cols, text), text, expr, n)
        return [(str(k), x ** k) for k in range(1, int(expr[2][1][1]) + 1)], False
    if fname == "scale":
        _, centre, sd = state[text][:3]
        x = _finite(_numeric(expr[2][0], cols, text), text, expr, n)
        return [("", (x - centre) / sd)], False
    if fname == "offset":
        return [("", _finite(_numeric(expr[2][0], cols, text), text, expr, n))], False
    return [("", _finite(_numeric(expr, cols, text), text, expr, n))], False
