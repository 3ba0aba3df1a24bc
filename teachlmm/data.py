"""The radon data, a CSV reader that reads as R's ``read.csv``, and a simulator of radon-style data.

Data in teachlmm is a plain mapping ``column name -> 1-D numpy array`` (a
``dict``); any DataFrame-like object with ``data[name]`` access works as well,
so pandas is welcome but never needed.

Reading a file
--------------
:func:`read_csv` and :func:`read_csv_chunks` read a file as R's
``read.csv(file, sep=, dec=, fileEncoding=, check.names = FALSE,
stringsAsFactors = FALSE)`` does:

* a column is numeric if every field is a number in R's grammar (``1``,
  ``-.5``, ``1e3``, ``0x10``, ``Inf``/``-inf``/``Infinity``, ``NaN``, with
  surrounding spaces) or missing; ``1_000`` is text; a column of only
  ``TRUE``/``FALSE``/``T``/``F`` is logical (a numpy bool array, or an
  object array with None where missing);
* ``NA`` (quoted or not) is missing in every column; an empty field is missing
  in numeric and logical columns and -- unlike R, which keeps ``""`` -- in text
  columns too;
* a UTF-8 byte-order mark, CRLF line ends and blank lines are fine; quoted
  fields may hold the separator, doubled quotes and line breaks;
* ``write.csv``'s empty first header field (the row names) is read as a
  column named ``X`` (R's name for it without ``check.names = FALSE``).

Deliberate differences from R, each a clear error or a safer reading:

* a duplicated column name is an error (R keeps both, and picks one later);
* a row with fewer or more fields than the header is an error naming its line
  (R fills short rows with NA and wraps long ones);
* a column of integers with more than 15 digits (ids that a double cannot hold
  exactly) is read as text, so that each id stays one group (R's
  ``numerals = "no.loss"``); R by default rounds them;
* a column holding only missing values is numeric (all NaN), not logical;
* every number is a float (R distinguishes integer and double columns).

Missing values are kept in the arrays (NaN, or None in object arrays); a
:class:`~teachlmm.Model` leaves out the rows that have one in a column it
uses, as lme4 does.
"""
import csv
import io
import os
import re
import warnings
from itertools import islice
from importlib import resources

import numpy as np

from .errors import DataError

__all__ = ["load_radon", "RADON_MODELS", "read_csv", "read_csv_chunks", "simulate"]

#: The lecture's models of the radon data, in lmer syntax (one home: the CLI, the exercises and
#: the tests read them from here). u_j = log_uranium is the county-level predictor.
RADON_MODELS = {
    "M0": "log_radon ~ 1 + (1 | county)",                                   # varying intercepts, no predictor
    "M1": "log_radon ~ 1 + floor + (1 | county)",                           # varying intercepts
    "M3": "log_radon ~ 1 + floor + (1 + floor | county)",                   # varying intercepts and slopes
    "M3u": "log_radon ~ 1 + floor + (1 + floor || county)",                 # M3 with uncorrelated effects
    "M4": "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)",   # cross-level
}

_NUMBER = re.compile(r"^\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+|"
                     r"[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$")
_LONG_INTEGER = re.compile(r"^\s*[+-]?\d{16,}\s*$")
_LOGICAL = {"TRUE": True, "T": True, "FALSE": False, "F": False}


# ----------------------------------------------------------------------------
# the type of a column: one pass over its fields
# ----------------------------------------------------------------------------

class _Kind:
    """What a column's fields allow so far: logical, numeric (and holding long integer ids), or text."""

    def __init__(self):
        self.logical, self.numeric, self.long_ids, self.any_value = True, True, False, False

    def update(self, fields, dec):
        """Look at one block of a column's fields (strings)."""
        numbers = _fast_float(fields, dec)
        if numbers is not None:                     # the common case: every field a plain number
            if np.isnan(numbers).all() and not _has_values(np.asarray(fields, dtype=str)):
                return
            self.any_value, self.logical = True, False
            big = np.flatnonzero(np.abs(numbers) >= 1e15)    # only these can be ids of more than 15 digits
            if not self.long_ids and big.size:
                self.long_ids = any(_LONG_INTEGER.match(fields[k]) for k in big.tolist())
            return
        values = np.asarray(fields, dtype=str)
        stripped = np.char.strip(values)
        present = stripped[(stripped != "NA") & (stripped != "")]
        if present.size == 0:
            return
        self.any_value = True
        uniq = np.unique(present)
        if self.logical and not set(uniq.tolist()) <= set(_LOGICAL):
            self.logical = False
        if self.numeric:
            self.numeric = _all_numbers(uniq, dec)
        if self.numeric and not self.long_ids:
            long = uniq[np.char.str_len(uniq) > 15]
            self.long_ids = any(_LONG_INTEGER.match(v) for v in long.tolist())

    @property
    def name(self):
        if not self.any_value:
            return "numeric"                      # only NA: numeric (R says logical), all NaN
        if self.logical:
            return "logical"
        return "numeric" if self.numeric and not self.long_ids else "text"


def _has_values(values):
    stripped = np.char.strip(values)
    return bool(np.any((stripped != "NA") & (stripped != "")))


def _fast_float(fields, dec):
    """The fields as floats if each is a plain number, NA or empty; else None.

    Python's ``float`` accepts what R's reader does for ordinary numbers
    (spaces around, Inf, NaN, exponents) plus underscores (``1_000``) and
    non-ASCII digits, which R reads as text: those, hexadecimal numbers and
    anything else go the slow, exact way (:func:`_all_numbers`).
    """
    fields = fields.tolist() if isinstance(fields, np.ndarray) else list(fields)
    text = "".join(fields)
    if "_" in text or not text.isascii() or (dec != "." and "." in text):
        return None
    if dec != ".":
        fields = [v.replace(dec, ".") for v in fields]
    try:
        return np.array(list(map(float, fields)), dtype=float)
    except ValueError:
        pass
    try:
        return np.array([float("nan") if v in ("NA", "") else float(v) for v in fields], dtype=float)
    except ValueError:
        return None


def _all_numbers(uniq, dec):
    """Is every distinct field a number in R's grammar?"""
    if dec != ".":
        if np.any(np.char.find(uniq, ".") >= 0):
            return False
        uniq = np.char.replace(uniq, dec, ".")
    return all(_NUMBER.match(v) for v in uniq.tolist())


def _to_float(fields, dec):
    """Numbers in R's grammar (hexadecimal too) as floats; NA and empty fields as NaN."""
    fast = _fast_float(fields, dec)
    if fast is not None:
        return fast
    values = np.char.strip(np.asarray(fields, dtype=str))
    if dec != ".":
        values = np.char.replace(values, dec, ".")
    values = np.where((values == "NA") | (values == ""), "nan", values)
    try:
        return values.astype(float)
    except ValueError:                             # 0x10: convert the distinct fields one by one
        uniq, inverse = np.unique(values, return_inverse=True)
        table = np.array([float(int(v, 16)) if re.match(r"^[+-]?0[xX]", v) else float(v) for v in uniq.tolist()])
        return table[inverse]


def _convert(fields, kind, dec):
    """A column of strings as the array its kind says."""
    if kind == "numeric":
        return _to_float(fields, dec)
    values = np.asarray(fields, dtype=str)
    stripped = np.char.strip(values)
    missing = (stripped == "NA") | (values == "")
    if kind == "logical":
        out = np.array([_LOGICAL.get(v) for v in stripped.tolist()], dtype=object)
        return out.astype(bool) if not missing.any() else out
    if not missing.any():
        return values
    out = values.astype(object)
    out[missing] = None
    return out


# ----------------------------------------------------------------------------
# the text of a file
# ----------------------------------------------------------------------------

def _open(path, encoding):
    """The file as text; a BOM is dropped; a byte invalid in the encoding is a clear error."""
    enc = "utf-8-sig" if str(encoding).lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        f = open(path, newline="", encoding=enc)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; use e.g. 'utf-8' or 'latin-1'") from None
    except FileNotFoundError:
        raise DataError(f"there is no file {str(path)!r}; check the path (relative paths start at "
                        "the current folder)") from None
    except IsADirectoryError:
        raise DataError(f"{str(path)!r} is a folder, not a file; give the CSV file's path") from None
    return f


def _decode_error(path, encoding, err):
    return DataError(f"{path} is not valid {encoding} text (byte {err.object[err.start:err.start + 1]!r} at "
                     f"position {err.start}); pass the file's encoding, e.g. encoding='latin-1' "
                     "(--encoding latin-1 on the command line)")


def _header(row, path, sep):
    """Column names: unique; write.csv's empty row-name header becomes 'X'."""
    if not row:
        raise DataError(f"{path} is empty: expected a header line with column names.")
    if len(row) == 1:
        for other, name in ((";", "semicolon"), ("\t", "tab")):
            if other != sep and other in row[0]:
                flag = ";" if other == ";" else "\\t"
                raise DataError(f"{path}: the header reads as one column {row[0]!r}; the file looks "
                                f"{name}-separated: pass sep={flag!r} (--sep '{flag}'), and dec=',' if "
                                "numbers use a decimal comma")
    names = list(row)
    if names and names[0] == "":
        names[0] = "X" if "X" not in names else "row.names"
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: the column name {name!r} appears more than once in the header; "
                            "rename the columns so each name is unique (R would keep both and use one silently)")
        seen.add(name)
    return names


def _line_blocks(path, sep, encoding, rows):
    """The header, then blocks of about ``rows`` raw lines, each ending at the end of a record.

    A quoted field may hold a line break: a block whose count of quote
    characters is odd ends inside one, so lines are added until it is even.
    """
    with _open(path, encoding) as f:
        try:
            head = []
            for line in f:
                head.append(line)
                if line.strip() and "".join(head).count('"') % 2 == 0:
                    break
            records = [r for r in csv.reader(head, delimiter=sep) if r]
            header = _header(records[0] if records else [], path, sep)
            yield header
            while True:
                lines = list(islice(f, rows))
                if not lines:
                    return
                quotes = sum(line.count('"') for line in lines)
                while quotes % 2:
                    more = f.readline()
                    if not more:
                        break
                    lines.append(more)
                    quotes += more.count('"')
                yield lines
        except UnicodeDecodeError as err:
            raise _decode_error(path, encoding, err) from None
        except csv.Error as err:
            raise DataError(f"{path}: {err}; check the quotes in the header") from None


def _parse_block(lines, header, sep, dec, path, encoding, fields_only=False):
    """A block of lines as an (n, width) float array when every field is a plain number (numpy's C
    parser, whose grammar is R's for these), else as a list of columns of strings (the csv module)."""
    width = len(header)
    if dec == "." and not fields_only:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")                  # an all-blank block: "empty input"
                block = np.loadtxt(lines, delimiter=sep, dtype=float, ndmin=2, quotechar='"', comments=None)
            if block.shape[0] and block.shape[1] == width:
                return block
        except ValueError:
            pass
    try:
        records = [r for r in csv.reader(lines, delimiter=sep) if r and (len(r) > 1 or r[0].strip() or width == 1)]
    except csv.Error as err:
        raise DataError(f"{path}: {err}; check the quotes in the file") from None
    if any(len(r) != width for r in records):
        _raise_bad_row(path, sep, encoding, header)
    return [list(c) for c in zip(*records)] if records else [[] for _ in header]


def _update_kinds(kinds, block, lines, header, sep, dec, path, encoding):
    """Pass 1 on one block: what each column's fields allow."""
    fields = None
    for k, kind in enumerate(kinds):
        if isinstance(block, np.ndarray):
            col = block[:, k]
            if not np.any(np.abs(col) >= 1e15):              # long integer ids need their digits: see below
                kind.any_value, kind.logical = True, False
                continue
            if fields is None:
                fields = _parse_block(lines, header, sep, dec, path, encoding, fields_only=True)
            kind.update(fields[k], dec)
        else:
            kind.update(block[k], dec)


def _block_columns(block, kinds, lines, header, sep, dec, path, encoding):
    """Pass 2 on one block: each column as the array its kind says."""
    if isinstance(block, np.ndarray) and all(k == "numeric" for k in kinds):
        return {name: block[:, k].copy() for k, name in enumerate(header)}
    if isinstance(block, np.ndarray):
        block = _parse_block(lines, header, sep, dec, path, encoding, fields_only=True)
    return {name: _convert(fields, kind, dec) for name, kind, fields in zip(header, kinds, block)}


def _raise_bad_row(path, sep, encoding, header):
    """Find the first row whose length differs from the header's and name its line."""
    with _open(path, encoding) as f:
        reader = csv.reader(f, delimiter=sep)
        next((row for row in reader if row), None)
        for row in reader:
            if row and len(row) != len(header) and (len(row) > 1 or row[0].strip()):
                raise DataError(f"{path}, line {reader.line_num} has {len(row)} fields but the header has "
                                f"{len(header)} ({', '.join(header[:6])}{', ...' if len(header) > 6 else ''}); "
                                "fix that line (a separator inside a field must be quoted)")


def _check_args(sep, dec, encoding):
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n":
        raise DataError(f"sep must be one character such as ',', ';' or '\\t', not {sep!r}")
    if not isinstance(dec, str) or len(dec) != 1 or dec == sep:
        raise DataError(f"dec must be one character ('.' or ','), different from sep, not {dec!r}")
    if not isinstance(encoding, str):
        raise DataError(f"encoding must be a name such as 'utf-8' or 'latin-1', not {encoding!r}")


def read_csv(path, sep=",", dec=".", encoding="utf-8"):
    """Read a CSV file with a header line into a dict of numpy arrays, as R's ``read.csv``.

    Numeric columns become float arrays (NaN where missing), logical columns
    (only ``TRUE``/``FALSE``/``T``/``F``) bool arrays, the others string
    arrays (object arrays with None where missing); text columns are
    categorical in formulas. See the module docstring for the rules and the
    few deliberate differences from R.

    Parameters
    ----------
    path : str or path-like
    sep : str
        The field separator: ``","``, ``";"``, ``"\\t"``, ...
    dec : str
        The decimal mark: ``"."`` or ``","`` (with ``sep=";"``).
    encoding : str
        The file's text encoding, e.g. ``"utf-8"`` (a byte-order mark is
        fine) or ``"latin-1"``.

    Returns
    -------
    dict of str -> numpy.ndarray

    Raises
    ------
    DataError
        For a duplicated column name, a row of the wrong length (naming its
        line), an encoding error, or a header that suggests another separator.

    Examples
    --------
    >>> import teachlmm as tl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("y,g\\n1.5,a\\nNA,b\\n")
    >>> tl.read_csv(path)["y"]
    array([1.5, nan])
    """
    _check_args(sep, dec, encoding)
    blocks = _line_blocks(path, sep, encoding, rows=np.iinfo(np.int64).max)
    header = next(blocks)
    lines = next(blocks, [])
    block = _parse_block(lines, header, sep, dec, path, encoding)
    kinds = [_Kind() for _ in header]
    _update_kinds(kinds, block, lines, header, sep, dec, path, encoding)
    if not isinstance(block, np.ndarray) and not block[0]:
        return {name: np.zeros(0) for name in header}             # a header and no rows
    return _block_columns(block, [k.name for k in kinds], lines, header, sep, dec, path, encoding)


def _column_kinds(path, sep, dec, encoding, rows):
    """Pass 1 of the chunked reader: every column's type, from the whole file."""
    blocks = _line_blocks(path, sep, encoding, rows)
    header = next(blocks)
    kinds = [_Kind() for _ in header]
    for lines in blocks:
        block = _parse_block(lines, header, sep, dec, path, encoding)
        _update_kinds(kinds, block, lines, header, sep, dec, path, encoding)
    return header, [k.name for k in kinds]


_KINDS_CACHE = {}


def _cached_kinds(path, sep, dec, encoding, rows):
    """Column types of an unchanged file are found once: Model.from_chunks reads the file twice."""
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, sep, dec, encoding)
    except OSError:
        key = None
    if key is not None and key in _KINDS_CACHE:
        return _KINDS_CACHE[key]
    found = _column_kinds(path, sep, dec, encoding, rows)
    if key is not None:
        _KINDS_CACHE.clear()                       # keep only the latest file
        _KINDS_CACHE[key] = found
    return found


def read_csv_chunks(path, rows=200_000, sep=",", dec=".", encoding="utf-8"):
    """Read a CSV file in blocks of ``rows`` rows: a generator of column mappings.

    The type of every column is decided first, by one pass over the whole
    file, so every block has the types :func:`read_csv` would give (a group
    column that looks numeric in one block and text in another is text in
    all of them). Use it with :meth:`teachlmm.Model.from_chunks` to fit data
    larger than memory::

        model = tl.Model.from_chunks(formula, lambda: tl.read_csv_chunks("big.csv"))

    Parameters
    ----------
    path : str or path-like
    rows : int
        Rows per block.
    sep, dec, encoding : str
        As for :func:`read_csv`.

    Yields
    ------
    dict of str -> numpy.ndarray

    Examples
    --------
    >>> import teachlmm as tl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("y,g\\n1.5,1\\n2.0,2\\n2.5,2\\n")
    >>> [len(c["y"]) for c in tl.read_csv_chunks(path, rows=2)]
    [2, 1]
    """
    try:
        rows = int(rows)
    except (TypeError, ValueError):
        rows = 0
    if rows < 1:
        raise DataError("rows must be a positive number of rows per chunk")
    _check_args(sep, dec, encoding)
    header, kinds = _cached_kinds(path, sep, dec, encoding, rows)
    blocks = _line_blocks(path, sep, encoding, rows)
    next(blocks)
    for lines in blocks:
        block = _parse_block(lines, header, sep, dec, path, encoding)
        if isinstance(block, np.ndarray) or block[0]:
            yield _block_columns(block, kinds, lines, header, sep, dec, path, encoding)


def _read_text(text, source):
    """Columns of CSV text (the shipped data)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header, body = rows[0], rows[1:]
    out = {}
    for name, fields in zip(header, zip(*body)):
        kind = _Kind()
        kind.update(list(fields), ".")
        out[name] = _convert(list(fields), kind.name, ".")
    return out


def load_radon():
    """The Minnesota radon data: 919 houses in 85 counties.

    Columns (all 1-D numpy arrays of length 919):

    ``log_radon``
        log of the house's radon activity in pCi/L (a reading of 0 was
        recorded as 0.1 before taking the log, so it is log 0.1 = -2.30).
    ``floor``
        0 if the measurement was made in the basement, 1 if on the first floor.
    ``county``
        county number 1..85 (a float array holding whole numbers).
    ``county_name``
        the county's name (string array).
    ``log_uranium``
        log of the county's soil uranium concentration (ppm); the same value
        for every house of a county: the group-level predictor ``u_j``.

    Provenance: the EPA's 1987 national radon survey, as prepared by Gelman &
    Hill (2007); these rows are the ones R's HLMdiag package ships as
    ``radon``. See ``data/README.md`` in the source repository.

    Returns
    -------
    dict of str -> numpy.ndarray

    Examples
    --------
    >>> import teachlmm as tl
    >>> data = tl.load_radon()
    >>> len(data["log_radon"]), len(set(data["county"]))
    (919, 85)
    """
    text = resources.files("teachlmm").joinpath("data", "radon.csv").read_text()
    data = _read_text(text, "radon.csv")
    data["floor"] = data["floor"].astype(float)
    return data


def _group_sizes(rng, n_groups, mean_size):
    """Uneven group sizes like radon's (many small counties, a few big ones): 1 + negative binomial."""
    # negative binomial with shape 1 (geometric): heavily skewed, mean mean_size
    extra = rng.negative_binomial(1.0, 1.0 / mean_size, size=n_groups)
    return 1 + extra


def simulate(n_groups=85, mean_size=11, gamma=(1.47, -0.67, 0.81, -0.42),
             G=((0.0155, 0.0157), (0.0157, 0.0943)), sigma2=0.56, p_x=0.17,
             sizes=None, seed=None):
    """Simulate radon-style data from the cross-level model with known truth.

    The model (the lecture's M4, with ``x`` a 0/1 house-level predictor like
    ``floor`` and ``u`` a group-level predictor like ``log_uranium``)::

        y_ij    = alpha_j + beta_j x_ij + eps_ij,     eps_ij ~ N(0, sigma2)
        alpha_j = gamma0_a + gamma1_a u_j + xi_j
        beta_j  = gamma0_b + gamma1_b u_j + zeta_j,   (xi_j, zeta_j) ~ N(0, G)

    so that ``y ~ 1 + x + u + x:u + (1 + x | group)`` recovers
    ``gamma = (gamma0_a, gamma0_b, gamma1_a, gamma1_b)`` in the formula's
    order ``(Intercept), x, u, x:u``.

    Parameters
    ----------
    n_groups : int
        Number of groups J (at least 2).
    mean_size : float
        Mean number of units per group; sizes are 1 + a geometric count, so
        many groups are small and a few are large (as counties in radon).
    gamma : sequence of 4 floats
        Fixed effects in the order (Intercept), x, u, x:u.
    G : 2 x 2 array_like
        Covariance of (xi_j, zeta_j); must be symmetric positive semi-definite.
    sigma2 : float
        Residual variance.
    p_x : float
        Probability that a unit has x = 1 (radon: about 17 % first-floor readings).
    sizes : sequence of int, optional
        Give the group sizes yourself instead of drawing them.
    seed : int or numpy.random.SeedSequence, optional
        The same seed gives the same data.

    Returns
    -------
    data : dict
        Columns ``y``, ``x``, ``u``, ``group`` (group numbers 1..J as floats).
    truth : dict
        ``fixef`` (dict by name), ``G``, ``sigma2``, ``b`` (J x 2 random
        effects), ``alpha``, ``beta`` (J group intercepts and slopes),
        ``u`` (J), ``sizes`` (J) and ``formula``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> data, truth = tl.simulate_data(n_groups=30, seed=1)
    >>> truth["formula"]
    'y ~ 1 + x + u + x:u + (1 + x | group)'
    >>> len(truth["alpha"])
    30
    """
    try:
        G = np.asarray(G, dtype=float)
        gamma = np.asarray(gamma, dtype=float)
        sigma2, mean_size, p_x = float(sigma2), float(mean_size), float(p_x)
    except (TypeError, ValueError):
        raise DataError("simulate: G, gamma, sigma2, mean_size and p_x must be numbers (G a 2 x 2 matrix, "
                        "gamma 4 numbers)") from None
    if not isinstance(n_groups, (int, np.integer)) or isinstance(n_groups, bool):
        raise DataError(f"simulate: n_groups must be a whole number of groups (at least 2), not {n_groups!r}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(gamma)) and np.isfinite(sigma2)):
        raise DataError("simulate: G, gamma and sigma2 must be finite numbers")
    if not 0 <= p_x <= 1:
        raise DataError(f"simulate: p_x is a probability (the share of units with x = 1): between 0 and 1, not {p_x}")
    if sizes is None and not 1 <= mean_size < 1e7:
        raise DataError(f"simulate: mean_size is the mean number of units per group: at least 1, not {mean_size}")
    if G.shape != (2, 2) or not np.allclose(G, G.T) or np.linalg.eigvalsh(G).min() < -1e-12:
        raise DataError("simulate: G must be a symmetric positive semi-definite 2 x 2 matrix.")
    if gamma.shape != (4,):
        raise DataError("simulate: gamma must hold 4 numbers: (Intercept), x, u, x:u.")
    if not sigma2 > 0:
        raise DataError("simulate: sigma2 must be positive.")
    if int(n_groups) < 2:
        raise DataError("simulate: n_groups must be at least 2.")
    rng = np.random.default_rng(seed)
    J = int(n_groups)
    if sizes is not None:
        raw = np.asarray(sizes)
        if raw.dtype.kind not in "iuf" or raw.shape != (J,) or np.any(raw != np.round(raw)):
            raise DataError("simulate: sizes must hold n_groups positive whole numbers.")
    sizes = _group_sizes(rng, J, mean_size) if sizes is None else np.asarray(sizes, dtype=int)
    if sizes.shape != (J,) or sizes.min() < 1:
        raise DataError("simulate: sizes must hold n_groups positive integers.")
    u = rng.normal(0.0, 0.35, size=J)                       # group-level predictor, radon-like spread
    w, V = np.linalg.eigh(G)
    b = rng.standard_normal((J, 2)) @ (V * np.sqrt(np.clip(w, 0, None))).T   # b_j ~ N(0, G)
    alpha = gamma[0] + gamma[2] * u + b[:, 0]
    beta = gamma[1] + gamma[3] * u + b[:, 1]
    group = np.repeat(np.arange(J), sizes)
    x = (rng.random(group.size) < p_x).astype(float)
    y = alpha[group] + beta[group] * x + rng.normal(0.0, np.sqrt(sigma2), size=group.size)
    data = {"y": y, "x": x, "u": u[group], "group": group + 1.0}
    truth = {
        "formula": "y ~ 1 + x + u + x:u + (1 + x | group)",
        "fixef": dict(zip(["(Intercept)", "x", "u", "x:u"], gamma.tolist())),
        "G": G, "sigma2": float(sigma2), "b": b, "alpha": alpha, "beta": beta,
        "u": u, "sizes": sizes,
    }
    return data, truth
