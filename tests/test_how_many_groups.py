"""The How-many-groups study script (tests/studies/how_many_groups.py): the properties the book page relies on."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "studies"))
import how_many_groups as study  # noqa: E402

GIBBS = {"chains": 2, "draws": 40, "warmup": 20, "interweave": False}


def test_gibbs_only_run_has_the_same_data_and_draws_as_a_full_run():
    """--gibbs-only skips the ML/REML fits; the data set and the sampler's seed come from the same
    stream, so the Gibbs interval (its width and coverage) is the full run's, replication by replication."""
    seeds = np.random.SeedSequence([2013, 5]).spawn(2)
    for s in seeds:
        full = study.one_replication(np.random.default_rng(s), 5, 30, GIBBS, likelihood=True)
        only = study.one_replication(np.random.default_rng(s), 5, 30, GIBBS, likelihood=False)
        assert set(full[0]) == set(study.METHODS) | {"Gibbs"} and set(only[0]) == {"Gibbs"}
        assert only[0]["Gibbs"] == full[0]["Gibbs"]
        assert only[1]["width"]["Gibbs"] == full[1]["width"]["Gibbs"]
        assert only[1]["gibbs_check"] == full[1]["gibbs_check"]


def test_a_cell_does_not_depend_on_the_other_cells(tmp_path):
    """A cell is seeded by SeedSequence([seed, J]): run alone or beside another J, the same numbers;
    --merge joins runs split by J and refuses overlapping ones."""
    a, b, both = (str(tmp_path / f) for f in ("a.json", "b.json", "both.json"))
    common = ["--reps", "3", "--nj", "20", "--seed", "7"]
    study.main(common + ["--J", "5", "--json", a])
    study.main(common + ["--J", "6", "--json", b])
    joined = study.main(common + ["--J", "5", "6", "--json", both])
    merged = study.main(["--merge", str(tmp_path / "m.json"), a, b])
    for key in ("coverage", "median_width", "bias"):
        assert [c[key] for c in merged["cells"]] == [c[key] for c in joined["cells"]]
    assert merged["complete"] and [p["J"] for p in merged["parts"]] == [[5], [6]]
    with pytest.raises(SystemExit):
        study.main(["--merge", str(tmp_path / "x.json"), a, a])
    assert json.load(open(str(tmp_path / "m.json")))["cells"] == merged["cells"]
