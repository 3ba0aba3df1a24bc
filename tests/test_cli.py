"""The main job (`python -m teachlmm`) and `teachlmm fit` on a CSV."""
import io
import subprocess
import sys

import numpy as np

import teachlmm as tl
from teachlmm import cli


def test_lecture_prints_the_lectures_numbers():
    out = io.StringIO()
    cli.lecture(out)
    text = out.getvalue()
    assert "REML criterion at convergence: 2168.32" in text           # M3
    assert "REML criterion at convergence: 2126.58" in text           # M4 at the true optimum
    assert "= 0.933 -0.771 x" in text                                   # county 2's line
    assert "0.9018  0.8109  1.3852  1.0480  1.3637  1.7609  1.8009  1.7288" in text
    assert "-0.3578 -0.5335 -0.5990 -0.3500 -0.5633 -0.8541 -0.4352" in text
    assert "Number of obs: 919, groups: county, 85" in text


def test_python_dash_m_runs():
    res = subprocess.run([sys.executable, "-m", "teachlmm"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "M4: cross-level interaction" in res.stdout


def test_fit_command_on_a_csv(tmp_path, capsys):
    data, _ = tl.simulate_data(n_groups=20, seed=2)
    path = tmp_path / "sim.csv"
    cols = ["y", "x", "u", "group"]
    rows = np.column_stack([data[c] for c in cols])
    path.write_text(",".join(cols) + "\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    assert cli.main(["fit", "y ~ x + u + x:u + (1 + x | group)", "--data", str(path), "--ml", "--ranef"]) == 0
    out = capsys.readouterr().out
    assert "maximum likelihood" in out and "x:u" in out


def test_fit_command_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("y,g\n1,a\n2,b\n")
    assert cli.main(["fit", "y ~ x + (1 | g)", "--data", str(path)]) == 2
    assert "no column 'x'" in capsys.readouterr().err
