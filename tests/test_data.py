"""The shipped radon data and the simulator."""
import hashlib
import pathlib

import numpy as np
import pytest

import teachlmm as tl

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_radon_shape_and_columns(radon):
    assert set(radon) == {"log_radon", "floor", "county", "county_name", "log_uranium"}
    assert all(v.shape == (919,) for v in radon.values())
    assert len(np.unique(radon["county"])) == 85
    assert set(np.unique(radon["floor"])) == {0.0, 1.0}
    assert radon["log_radon"].min() == pytest.approx(np.log(0.1))        # 0 pCi/L read as 0.1
    # log uranium is a county-level variable: one value per county
    for c in (1, 2, 50):
        assert np.unique(radon["log_uranium"][radon["county"] == c]).size == 1


def test_known_values(radon):
    """Facts about these 919 rows as published (Gelman & Hill; HLMdiag::radon)."""
    assert radon["county_name"][0] == "AITKIN" and (radon["county"] == 1).sum() == 4
    assert (radon["county"] == 52).sum() == 1 or (np.bincount(radon["county"].astype(int)) == 1).any()
    assert int(radon["floor"].sum()) == 153                               # first-floor readings
    assert np.bincount(radon["county"].astype(int)).max() == 116          # Hennepin's houses


def test_package_copy_is_identical():
    a = (ROOT / "data" / "radon.csv").read_bytes()
    b = (ROOT / "teachlmm" / "data" / "radon.csv").read_bytes()
    assert hashlib.md5(a).hexdigest() == hashlib.md5(b).hexdigest() == "adcba5f0dbdaf1530d35b0013da8709d"


def test_read_csv_roundtrip(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,x,g\n1.5,0,a\n2.0,,b\n3,1,a\n")
    d = tl.read_csv(path)
    assert d["y"].tolist() == [1.5, 2.0, 3.0]
    assert np.isnan(d["x"][1]) and d["g"].tolist() == ["a", "b", "a"]


def test_read_csv_ragged_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,x\n1,2\n3\n")
    with pytest.raises(tl.DataError, match="fields"):
        tl.read_csv(path)


def test_simulate_reproducible_and_consistent():
    d1, t1 = tl.simulate_data(n_groups=20, seed=5)
    d2, t2 = tl.simulate_data(n_groups=20, seed=5)
    d3, _ = tl.simulate_data(n_groups=20, seed=6)
    np.testing.assert_array_equal(d1["y"], d2["y"])
    assert not np.array_equal(d1["y"], d3["y"])
    g = d1["group"].astype(int) - 1
    assert np.bincount(g).tolist() == t1["sizes"].tolist()
    np.testing.assert_allclose(t1["alpha"], 1.47 + 0.81 * t1["u"] + t1["b"][:, 0])
    np.testing.assert_allclose(d1["u"], t1["u"][g])


def test_simulate_recovers_truth_on_average():
    """A big simulated data set: EM's estimates land near the truth (known-truth check)."""
    G = [[0.04, 0.01], [0.01, 0.09]]
    data, truth = tl.simulate_data(n_groups=400, mean_size=15, G=G, sigma2=0.5, seed=11)
    fit = tl.em.fit(tl.Model(truth["formula"], data))
    for name, value in truth["fixef"].items():
        assert abs(fit.fixef[name] - value) < 4 * fit.fixef_se[name]
    assert fit.sigma2 == pytest.approx(0.5, rel=0.05)
    np.testing.assert_allclose(fit.G, G, atol=0.03)


def test_simulate_rejects_bad_parameters():
    with pytest.raises(tl.DataError, match="positive semi-definite"):
        tl.simulate_data(G=[[1, 2], [2, 1]])
    with pytest.raises(tl.DataError, match="sigma2"):
        tl.simulate_data(sigma2=-1)
