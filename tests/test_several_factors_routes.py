"""The one-factor entry points take a model with several grouping factors to its own algorithm."""
from pathlib import Path

import numpy as np
import pytest

import teachlmm as tl
from teachlmm import multilevel_gibbs

PASTES = Path(__file__).parent / "reference" / "data" / "pastes.csv"


@pytest.fixture(scope="module")
def model():
    return tl.Model("strength ~ 1 + (1 | batch/cask)", tl.read_csv(str(PASTES)))


def test_gibbs_sample_hands_several_factors_to_the_joint_sampler(model):
    kw = dict(draws=60, warmup=20, chains=2, seed=5)
    with pytest.warns(tl.ConvergenceWarning):
        via_gibbs = tl.gibbs.sample(model, **kw)
    with pytest.warns(tl.ConvergenceWarning):
        direct = multilevel_gibbs.sample(model, keep_b=True, **kw)
    assert isinstance(via_gibbs, multilevel_gibbs.MultilevelPosterior)
    for name in direct.names():
        np.testing.assert_array_equal(via_gibbs.get(name), direct.get(name))


@pytest.mark.parametrize("option", [{"engine": "textbook"}, {"interweave": False}])
def test_options_the_joint_sampler_lacks_are_refused(model, option):
    with pytest.raises(tl.TeachLMMError, match="several grouping factors"):
        tl.gibbs.sample(model, draws=10, warmup=5, chains=1, seed=1, **option)
