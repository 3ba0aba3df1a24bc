"""tl.read_csv and tl.read_csv_chunks read the awkward files as R's read.csv does.

The reference (tests/reference/csv_reference.json) was made by R's read.csv
(tests/reference/read_csv_reference.R). Each file is read in memory and in
chunks of 1 and 2 rows; the documented deliberate differences are checked as
such (a clear DataError, or the safer reading).
"""
import json
import math
import os

import numpy as np
import pytest

import teachlmm as tl

HERE = os.path.join(os.path.dirname(__file__), "reference")
REF = json.load(open(os.path.join(HERE, "csv_reference.json")))["reads"]

# reads where teachlmm deliberately differs: the error it gives instead
REFUSED = {
    "semicolon_read_with_comma_sep": "sep=';'",            # R: one column 'y;x;g'
    "latin1_read_as_UTF-8": "encoding='latin-1'",         # R: a warning and a truncated read
    "short_row": "line 3 has 2 fields",                   # R fills the short row with NA
    "short_row_fill_FALSE": "line 3 has 2 fields",
    "long_row": "line 3 has 4 fields",                    # R wraps the long row into a new one
    "duplicate_header": "'x' appears more than once",     # R keeps both columns
}


def _kwargs(args):
    enc = args.get("fileEncoding") or "utf-8"
    return dict(sep=args["sep"], dec=args["dec"], encoding="utf-8" if enc == "UTF-8-BOM" else enc)


def _expected(column):
    """R's values, with None for NA, as teachlmm should hold them."""
    out = []
    for v in column["values"]:
        if isinstance(v, str) and column["class"] == "numeric":
            v = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[v]
        out.append(v)
    return out


def _same(got, want, cls, name):
    got = got.tolist()
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        if cls in ("numeric", "integer"):
            if w is None:
                assert math.isnan(g), name
            elif math.isnan(w):
                assert math.isnan(g), name
            else:
                assert g == w, name
        elif cls == "character" and w == "":
            assert g is None, name                         # deliberate: an empty field is missing
        else:
            assert g == w, name


def _read(case, how):
    path = os.path.join(HERE, "csv", case["file"])
    kw = _kwargs(case["args"])
    if how == "memory":
        return tl.read_csv(path, **kw)
    chunks = list(tl.read_csv_chunks(path, rows=how, **kw))
    if not chunks:
        return {}
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


@pytest.mark.parametrize("how", ["memory", 1, 2])
@pytest.mark.parametrize("key", [k for k in REF if k not in REFUSED and not k.startswith("long_ids")])
def test_reads_as_r(key, how):
    case = REF[key]
    data = _read(case, how)
    if case["nrow"] == 0:
        if how == "memory":
            assert list(data) == case["names"] and all(v.size == 0 for v in data.values())
        return
    names = ["X" if n == "" else n for n in case["names"]]          # write.csv's row-name column
    assert list(data) == names
    for name, column in zip(names, case["columns"]):
        if column["class"] == "logical" and all(v is None for v in column["values"]):
            assert np.isnan(data[name]).all()                          # deliberate: all-NA is numeric
            continue
        _same(data[name], _expected(column), column["class"], name)


@pytest.mark.parametrize("key", list(REFUSED))
def test_deliberate_differences_are_clear_errors(key):
    case = REF[key]
    with pytest.raises(tl.DataError, match=REFUSED[key].replace("(", r"\(")):
        _read(case, "memory")
    with pytest.raises(tl.DataError, match=REFUSED[key].replace("(", r"\(")):
        _read(case, 2)


def test_long_ids_are_text():
    """R rounds 17-digit ids to doubles (two ids become one); teachlmm keeps them as text, as R's
    numerals = 'no.loss' does, so each id stays one group."""
    case = REF["long_ids_no_loss"]
    for how in ("memory", 1, 3):
        data = _read(case, how)
        _same(data["id"], _expected(case["columns"][0]), "character", "id")
        assert data["small_id"].dtype.kind == "f"


def test_chunk_types_come_from_the_whole_file(tmp_path):
    """A group column numeric in the first chunk and text later is text in every chunk."""
    path = tmp_path / "d.csv"
    path.write_text("y,g\n1,1\n2,1\n3,2\n4,b\n5,b\n6,2\n")
    chunks = list(tl.read_csv_chunks(path, rows=2))
    assert [c["g"].tolist() for c in chunks] == [["1", "1"], ["2", "b"], ["b", "2"]]
    m = tl.Model.from_chunks("y ~ 1 + (1 | g)", lambda: tl.read_csv_chunks(path, rows=2))
    assert m.groups.tolist() == ["1", "2", "b"] and m.stats.n.tolist() == [2, 2, 2]
