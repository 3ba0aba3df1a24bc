"""Model.coef_names, Model.G_entries and Model.group_values: the lecture's recurring ideas, once."""
import numpy as np
import pytest

import teachlmm as tl
from teachlmm.errors import DataError

M4 = "log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)"


@pytest.fixture(scope="module")
def radon():
    return tl.load_radon()


def test_group_values_matches_the_data_group_by_group(radon):
    m = tl.Model(M4, radon)
    u = m.group_values("log_uranium")
    assert u.shape == (m.J,)
    for j, county in enumerate(m.groups):                       # independent: a plain loop over the data
        rows = radon["county"] == county
        assert np.all(radon["log_uranium"][rows] == u[j])


def test_group_values_of_a_data_column_outside_the_formula(radon):
    m = tl.Model("log_radon ~ floor + (1 | county)", radon)
    u = m.group_values("log_uranium", radon)
    assert np.array_equal(u, tl.Model(M4, radon).group_values("log_uranium"))


def test_group_values_refuses_a_column_that_varies_within_a_group(radon):
    m = tl.Model(M4, radon)
    with pytest.raises(DataError, match="varies within county"):
        m.group_values("floor")
    with pytest.raises(DataError, match="varies within county"):
        m.group_values("log_radon")


def test_group_values_refuses_a_missing_column(radon):
    m = tl.Model(M4, radon)
    with pytest.raises(DataError, match="not a column of this model"):
        m.group_values("uranium")
    with pytest.raises(DataError, match="no column 'uranim'"):
        m.group_values("uranim", radon)
    with pytest.raises(DataError, match="rows"):
        m.group_values("log_uranium", {k: v[:10] for k, v in radon.items()})


def test_group_values_of_a_chunked_model_needs_the_data(radon):
    m = tl.Model.from_chunks("log_radon ~ floor + (1 | county)", [radon])
    with pytest.raises(DataError, match="chunks"):
        m.group_values("floor")


def test_group_values_of_a_text_column():
    data = {"y": np.arange(6.0) ** 2, "g": np.array(list("aabbcc")), "region": np.array(list("NNSSNN"))}
    m = tl.Model("y ~ 1 + (1 | g)", data)
    assert list(m.group_values("region", data)) == ["N", "S", "N"]


def test_coef_names(radon):
    assert tl.Model(M4, radon).coef_names == ["(Intercept)", "floor", "log_uranium", "floor:log_uranium"]
    assert tl.Model("log_radon ~ 1 + (0 + floor | county)", radon).coef_names == ["(Intercept)", "floor"]
    fit = tl.em.fit(tl.Model("log_radon ~ floor + (1 + floor | county)", radon))
    assert fit.coef.shape[1] == len(fit.model.coef_names)


def test_G_entries_count_and_order(radon):
    m = tl.Model("log_radon ~ floor + (1 + floor | county)", radon)
    assert list(m.G_entries()) == [(0, 0), (1, 0), (1, 1)]
    m = tl.Model("log_radon ~ floor + (1 + floor || county)", radon)
    assert list(m.G_entries()) == [(0, 0), (1, 1)]
    data = dict(radon, x2=np.cos(np.arange(radon["floor"].size)))
    m = tl.Model("log_radon ~ floor + (1 + floor + x2 | county)", data)
    entries = list(m.G_entries())
    assert len(entries) == 6 and all(k >= l for k, l in entries)
    assert sorted(entries) == sorted((k, l) for k in range(3) for l in range(k + 1))
    # lme4's order: column by column of the lower triangle (confint's sd_/cor_ rows)
    assert entries == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]
