"""`teachlmm fit` reads files as tl.read_csv does: exit 0 on success, 2 on a user error, never a traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import cli

REF_CSV = os.path.join(os.path.dirname(__file__), "reference", "csv")
FORMULA = "log_radon ~ floor + (1 | county)"


def _radon_text(sep=",", dec=".", na_rows=(), names=None):
    d = tl.load_radon()
    lines = [sep.join(["log_radon", "floor", "county"])]
    for i in range(919):
        y = "NA" if i in na_rows else repr(float(d["log_radon"][i])).replace(".", dec)
        county = names[int(d["county"][i]) - 1] if names else str(int(d["county"][i]))
        lines.append(sep.join([y, str(int(d["floor"][i])), county]))
    return "\n".join(lines) + "\n"


def _run(args, capsys):
    code = cli.main(["fit", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_na_rows_are_dropped_and_reported(tmp_path, capsys):
    path = tmp_path / "na.csv"
    path.write_text(_radon_text(na_rows=(0, 10)))
    code, out, err = _run([FORMULA, "--data", str(path)], capsys)
    assert code == 0 and "(2 observations deleted due to missingness)" in out and "Number of obs: 917" in out
    assert "MissingValuesWarning" in err
    ref = tl.em.fit(tl.Model(FORMULA, {k: np.delete(v, [0, 10]) for k, v in tl.load_radon().items()}))
    assert f"{ref.fixef['floor']:.4f}" in out
    code, out, err = _run([FORMULA, "--data", str(path), "--missing", "error"], capsys)
    assert code == 2 and "'log_radon' has 2 missing" in err and "rows 1, 11" in err


def test_semicolon_decimal_comma_latin1(tmp_path, capsys):
    names = [f"Größe{k}" for k in range(85)]
    path = tmp_path / "semi.csv"
    path.write_bytes(_radon_text(sep=";", dec=",", names=names).encode("latin-1"))
    code, out, err = _run([FORMULA, "--data", str(path), "--sep", ";", "--dec", ",", "--encoding", "latin-1"], capsys)
    assert code == 0 and "Number of obs: 919, groups: county, 85" in out
    lib = tl.em.fit(tl.Model(FORMULA, tl.read_csv(path, sep=";", dec=",", encoding="latin-1")))
    row = next(line.split() for line in out.splitlines() if line.startswith("floor "))
    assert float(row[1]) == pytest.approx(lib.fixef["floor"], rel=1e-4)     # the estimate as printed
    code, out, err = _run([FORMULA, "--data", str(path)], capsys)          # forgot the flags
    assert code == 2 and ("encoding" in err or "sep" in err)


def test_tab_separated(tmp_path, capsys):
    path = tmp_path / "tab.tsv"
    path.write_text(_radon_text(sep="\t"))
    code, out, err = _run([FORMULA, "--data", str(path), "--sep", "\\t"], capsys)
    assert code == 0 and "Number of obs: 919" in out


@pytest.mark.parametrize("name, args, message", [
    ("11_short_row.csv", [], "line 3 has 2 fields"),
    ("12_long_row.csv", [], "line 3 has 4 fields"),
    ("14_duplicate_header.csv", [], "more than once"),
    ("07_latin1.csv", [], "encoding='latin-1'"),
    ("05_semicolon_decimal_comma.csv", [], "sep=';'"),
    ("15_header_only.csv", [], "no rows"),
    ("01_write_csv_na.csv", [], "groups|rows"),                 # 4 rows: too few to fit, said so
    ("06_tab_separated.tsv", ["--sep", "\\t"], "groups|rows"),
])
def test_awkward_files_are_user_errors(name, args, message, capsys):
    code, out, err = _run(["y ~ x + (1 | g)", "--data", os.path.join(REF_CSV, name), *args], capsys)
    assert code == 2
    import re
    assert re.search(message, err), err


def test_exit_codes_in_a_real_process(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text(_radon_text())
    ok = subprocess.run([sys.executable, "-m", "teachlmm", "fit", FORMULA, "--data", str(path)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "teachlmm", "fit", "y ~ foo(x) + (1 | g)", "--data", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not supported" in bad.stderr and "Traceback" not in bad.stderr
