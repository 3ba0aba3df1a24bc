"""`teachlmm fit` for scripts: --version, --output json|csv, --data -, help without reST (#16)."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import cli

FORMULA = "y ~ x + (1 + x | group)"
REFERENCE = Path(__file__).parent / "reference"
pytestmark = pytest.mark.filterwarnings("ignore::teachlmm.errors.BoundaryWarning")   # the library fits beside the CLI


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    data, _ = tl.simulate_data(n_groups=15, seed=4)
    path = tmp_path_factory.mktemp("cli") / "sim.csv"
    cols = ["y", "x", "group"]
    rows = np.column_stack([data[c] for c in cols])
    path.write_text(",".join(cols) + "\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


def run(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "teachlmm", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_version():
    res = run(["--version"])
    assert res.returncode == 0 and res.stdout.strip() == f"teachlmm {tl.__version__}"


def test_help_has_no_rest_markup():
    for args in (["--help"], ["fit", "--help"]):
        res = run(args)
        assert res.returncode == 0
        assert "``" not in res.stdout and ":func:" not in res.stdout and ":data:" not in res.stdout


def test_json_equals_the_library(csv_file, capsys):
    assert cli.main(["fit", FORMULA, "--data", str(csv_file), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(cli.JSON_KEYS)
    fit = tl.em.fit(tl.Model(FORMULA, tl.read_csv(str(csv_file))))
    for k in fit.fixef_names:
        assert out["fixef"][k] == pytest.approx(fit.fixef[k], rel=1e-12, abs=1e-12)
        assert out["fixef_se"][k] == pytest.approx(fit.fixef_se[k], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(out["G"], fit.G, rtol=1e-12, atol=1e-12)
    assert out["sigma2"] == pytest.approx(fit.sigma2, rel=1e-12)
    assert out["loglik"] == pytest.approx(fit.loglik, rel=1e-12)
    assert out["groups"] == [float(g) for g in fit.groups]
    for k, name in enumerate(fit.ranef_names):
        np.testing.assert_allclose(out["ranef"][name], fit.ranef[:, k], rtol=1e-12, atol=1e-12)


def test_csv_tables_and_stdin(csv_file):
    fit = tl.em.fit(tl.Model(FORMULA, tl.read_csv(str(csv_file))))
    text = csv_file.read_text()
    res = run(["fit", FORMULA, "--data", "-", "--output", "csv", "--table", "coef"], stdin=text)
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == ["group", *fit.coef_names]
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, 1:], fit.coef, rtol=1e-12)
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, 0], fit.groups)
    for table, header in (("fixef", ["term", "Estimate", "Std. Error", "t value"]),
                          ("ranef", ["group", *fit.ranef_names]),
                          ("varcorr", ["grp", "var1", "var2", "vcov", "sdcor"])):
        res = run(["fit", FORMULA, "--data", str(csv_file), "--output", "csv", "--table", table])
        assert res.returncode == 0, res.stderr
        rows = list(csv.reader(io.StringIO(res.stdout)))
        assert rows[0] == header
    assert [float(r[3]) for r in rows[1:]] == pytest.approx([fit.G[0, 0], fit.G[1, 1], fit.G[1, 0], fit.sigma2],
                                                            rel=1e-12)


def test_singular_fit_reported_once_and_ranef_headers(tmp_path):
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(10), 5)
    y = rng.normal(size=g.size)                     # no group effect: the variance estimate is 0
    path = tmp_path / "flat.csv"
    path.write_text("y,g\n" + "\n".join(f"{float(a)!r},{b}" for a, b in zip(y, g)) + "\n")
    res = run(["fit", "y ~ 1 + (1 | g)", "--data", str(path), "--ranef"])
    assert res.returncode == 0, res.stderr
    both = res.stdout + res.stderr
    assert both.lower().count("singular") == 1, both
    lines = res.stdout.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("Random effects (BLUPs)"))
    assert lines[k + 1].split() == ["g", "(Intercept)", "condsd", "(Intercept)"]
    res = run(["fit", "y ~ 1 + (1 | g)", "--data", str(path), "--output", "json"])
    assert res.stderr.lower().count("singular") == 1 and json.loads(res.stdout)["G"][0][0] < 1e-6


def test_table_without_csv_output_is_a_usage_error(csv_file):
    res = run(["fit", FORMULA, "--data", str(csv_file), "--table", "ranef"])
    assert res.returncode == 2 and "--output csv" in res.stderr
    res = run(["fit", FORMULA, "--data", str(csv_file), "--output", "csv"])
    assert res.returncode == 0 and res.stdout.splitlines()[0] == "term,Estimate,Std. Error,t value"


def test_several_factors_json_csv_and_ranef_against_lme4():
    """`(1 | batch/cask)` through every output of `teachlmm fit`: the numbers are lme4's (Pastes, REML)."""
    ref = json.loads((REFERENCE / "multi_factor_reference.json").read_text())["pastes_nested_REML"]
    data = str(REFERENCE / "data" / "pastes.csv")
    out = run(["fit", ref["formula"], "--data", data, "--output", "json"])
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert set(got) == {"fixef", "fixef_se", "Gs", "sigma2", "loglik", "groups", "ranef"}
    for name, G in ref["G"].items():
        np.testing.assert_allclose(got["Gs"][name], G["matrix"], rtol=1e-6)
    for factor, r in ref["ranef"].items():
        assert got["groups"][factor] == r["levels"]
        np.testing.assert_allclose(got["ranef"][factor]["(Intercept)"], np.asarray(r["ranef"])[:, 0],
                                   rtol=1e-5, atol=1e-8)
    rows = list(csv.reader(io.StringIO(run(["fit", ref["formula"], "--data", data, "--output", "csv",
                                             "--table", "ranef"]).stdout)))
    assert rows[0] == ["factor", "level", "term", "value"]
    assert len(rows) - 1 == sum(len(r["levels"]) for r in ref["ranef"].values())
    text = run(["fit", ref["formula"], "--data", data, "--ranef"])
    assert text.returncode == 0, text.stderr
    assert "cask:batch" in text.stdout and "condsd (Intercept)" in text.stdout
