"""From formula + data to X, Z, groups and per-group statistics; bad input gets clear errors."""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm.design import GroupStats


def test_group_statistics_equal_direct_sums(radon):
    model = tl.Model("log_radon ~ 1 + floor + log_uranium + (1 + floor | county)", radon)
    s = model.stats
    for j in (0, 1, 40, 84):                      # a loop over groups is fine in a test
        r = model.codes == j
        X, Z, y = model.X[r], model.Z[r], model.y[r]
        np.testing.assert_allclose(s.XtX[j], X.T @ X)
        np.testing.assert_allclose(s.XtZ[j], X.T @ Z)
        np.testing.assert_allclose(s.ZtZ[j], Z.T @ Z)
        np.testing.assert_allclose(s.Xty[j], X.T @ y)
        np.testing.assert_allclose(s.Zty[j], Z.T @ y)
        assert s.yty[j] == pytest.approx(y @ y) and s.n[j] == r.sum()


def test_chunks_add_up(radon):
    model = tl.Model("log_radon ~ floor + (1 + floor | county)", radon)
    half = model.n // 2
    parts = [GroupStats.from_arrays(model.X[sl], model.Z[sl], model.y[sl], model.codes[sl], model.J)
             for sl in (slice(0, half), slice(half, None))]
    total = parts[0] + parts[1]
    for field in ("XtX", "XtZ", "ZtZ", "Xty", "Zty", "yty", "n"):
        np.testing.assert_allclose(getattr(total, field), getattr(model.stats, field))


def test_group_order_like_r_factor_levels():
    y = np.arange(12.0)
    g_num = np.repeat([10.0, 2.0, 1.0], 4)
    g_str = np.repeat(["b", "a10", "a2"], 4)
    assert tl.Model("y ~ 1 + (1 | g)", {"y": y, "g": g_num}).groups.tolist() == [1, 2, 10]
    assert tl.Model("y ~ 1 + (1 | g)", {"y": y, "g": g_str}).groups.tolist() == ["a10", "a2", "b"]


def test_categorical_columns_use_treatment_coding(radon):
    data = dict(radon, where=np.where(radon["floor"] == 1, "first", "basement"))
    m = tl.Model("log_radon ~ where + (1 | county)", data)
    assert m.fixef_names == ["(Intercept)", "wherefirst"]
    np.testing.assert_array_equal(m.X[:, 1], radon["floor"])
    m0 = tl.Model("log_radon ~ 0 + where + (1 | county)", data)          # no intercept: all levels
    assert m0.fixef_names == ["wherebasement", "wherefirst"]
    fit = tl.em.fit(tl.Model("log_radon ~ where + (1 | county)", data))
    ref = tl.em.fit(tl.Model("log_radon ~ floor + (1 | county)", radon))
    assert fit.fixef["wherefirst"] == pytest.approx(ref.fixef["floor"], abs=1e-10)


def test_dataframe_like_input(radon):
    class Frame:                                  # anything with [] column access and .columns
        columns = list(radon)

        def __getitem__(self, key):
            return list(radon[key])
    m = tl.Model("log_radon ~ floor + (1 | county)", Frame())
    assert m.n == 919


def test_design_for_new_data_flags_unseen_groups(radon):
    m = tl.Model("log_radon ~ floor + (1 + floor | county)", radon)
    X, Z, codes = m.design({"floor": [0.0, 1.0, 1.0], "county": [1, 85, 999]})
    assert codes.tolist() == [0, 84, -1]
    np.testing.assert_array_equal(Z, [[1, 0], [1, 1], [1, 1]])


# ---- bad input ---------------------------------------------------------------------------

def test_missing_column_names_close_matches(radon):
    with pytest.raises(tl.DataError, match="no column 'flor'.*'floor'"):
        tl.Model("log_radon ~ flor + (1 | county)", radon)


def test_nan_in_a_used_column(radon):
    data = dict(radon, floor=radon["floor"].copy())
    data["floor"][[3, 7]] = np.nan
    with pytest.raises(tl.DataError, match="'floor' has 2 missing.*rows 4, 8"):      # counted from 1
        tl.Model("log_radon ~ floor + (1 | county)", data, missing="error")
    with pytest.warns(tl.errors.MissingValuesWarning, match="2 row"):             # lme4's na.omit
        m = tl.Model("log_radon ~ floor + (1 | county)", data)
    assert m.n == 917 and m.n_dropped == 2 and m.dropped_rows.tolist() == [4, 8]
    data = dict(radon, log_radon=radon["log_radon"].copy())
    data["log_radon"][0] = np.inf
    with pytest.raises(tl.DataError, match="not a finite number.*rows 1"):
        tl.Model("log_radon ~ floor + (1 | county)", data)


def test_nan_in_an_unused_column_is_fine(radon):
    data = dict(radon, junk=np.full(919, np.nan))
    tl.Model("log_radon ~ floor + (1 | county)", data)


def test_rank_deficient_fixed_effects(radon):
    data = dict(radon, floor2=2 * radon["floor"])
    with pytest.raises(tl.DesignError, match="rank deficient.*floor2"):
        tl.Model("log_radon ~ floor + floor2 + (1 | county)", data)
    data = dict(radon, const=np.ones(919))
    with pytest.raises(tl.DesignError, match="rank deficient"):
        tl.Model("log_radon ~ const + (1 | county)", data)
    data = dict(radon, zero=np.zeros(919))
    with pytest.raises(tl.DesignError, match="all zero"):
        tl.Model("log_radon ~ zero + (1 | county)", data)


def test_one_group_only(radon):
    data = dict(radon, one=np.ones(919))
    with pytest.raises(tl.DesignError, match="only one group"):
        tl.Model("log_radon ~ floor + (1 | one)", data)


def test_every_group_a_single_row(radon):
    data = dict(radon, house=np.arange(919.0))
    with pytest.raises(tl.DesignError, match="single row"):
        tl.Model("log_radon ~ floor + (1 | house)", data)


def test_too_few_rows_for_random_slopes():
    data = {"y": np.arange(6.0), "x": np.array([0, 1.0] * 3), "g": np.array([1, 1, 2, 2, 3, 3.0])}
    with pytest.raises(tl.DesignError, match="not identifiable"):
        tl.Model("y ~ x + (1 + x | g)", data)


def test_small_groups_are_normal_data(radon):
    """Counties with one house are ordinary data (radon has several)."""
    sizes = np.bincount(tl.Model("log_radon ~ floor + (1 | county)", radon).codes)
    assert (sizes == 1).any()


def test_text_response_and_no_random_term(radon):
    with pytest.raises(tl.DataError, match="numeric"):
        tl.Model("county_name ~ floor + (1 | county)", radon)
    with pytest.raises(tl.DesignError, match="no random term"):
        tl.Model("log_radon ~ floor", radon)


def test_columns_of_different_lengths():
    with pytest.raises(tl.DataError, match="different lengths"):
        tl.Model("y ~ x + (1 | g)", {"y": np.ones(5), "x": np.ones(4), "g": np.ones(5)})


def test_formula_typo_is_a_formula_error(radon):
    with pytest.raises(tl.FormulaError):
        tl.Model("log_radon ~ floor + (1 | county", radon)


def test_model_from_chunks_equals_the_whole(radon, tmp_path):
    """Chunks (with groups and text levels first met in later chunks) give the same statistics and fit."""
    data = dict(radon, where=np.where(radon["floor"] == 1, "first", "basement"))
    order = np.argsort(-data["county"], kind="stable")            # county 1 and level order arrive late
    data = {k: v[order] for k, v in data.items()}
    formula = "log_radon ~ where + log_uranium + where:log_uranium + (1 + where | county)"
    pieces = [{k: v[i:i + 97] for k, v in data.items()} for i in range(0, 919, 97)]
    chunked, whole = tl.Model.from_chunks(formula, pieces), tl.Model(formula, data)
    assert chunked.groups.tolist() == whole.groups.tolist() and chunked.fixef_names == whole.fixef_names
    for f in ("XtX", "XtZ", "ZtZ", "Xty", "Zty", "yty", "n"):
        np.testing.assert_allclose(getattr(chunked.stats, f), getattr(whole.stats, f), rtol=1e-12, atol=1e-9)
    a, b = tl.em.fit(chunked), tl.em.fit(whole)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.ranef, b.ranef, atol=1e-8)
    assert "Number of obs: 919" in a.summary()
    with pytest.raises(tl.TeachLMMError, match="chunks"):
        a.residuals()
    new = {k: data[k][:5] for k in ("where", "log_uranium", "county")}
    np.testing.assert_allclose(a.predict(new), b.predict(new), atol=1e-8)


def test_chunks_from_a_csv_file(radon, tmp_path):
    from conftest import M3
    path = tmp_path / "radon.csv"
    cols = ["log_radon", "floor", "county", "log_uranium"]
    rows = np.column_stack([radon[c] for c in cols])
    path.write_text(",".join(cols) + "\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    model = tl.Model.from_chunks(M3, lambda: tl.read_csv_chunks(path, rows=100))
    fit = tl.em.fit(model)
    assert fit.fixef["floor"] == pytest.approx(tl.em.fit(tl.Model(M3, radon)).fixef["floor"], abs=1e-10)


def test_chunks_rank_deficiency_is_caught(radon):
    data = dict(radon, floor2=2 * radon["floor"])
    pieces = [{k: v[i:i + 300] for k, v in data.items()} for i in range(0, 919, 300)]
    with pytest.raises(tl.DesignError, match="rank deficient"):
        tl.Model.from_chunks("log_radon ~ floor + floor2 + (1 | county)", pieces)
