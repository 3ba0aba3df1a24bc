"""Every runnable example in the package's docstrings runs and prints what it says."""
import doctest
import importlib
import pkgutil

import pytest

import teachlmm

MODULES = sorted(m.name for m in pkgutil.iter_modules(teachlmm.__path__) if m.name != "__main__")


@pytest.mark.parametrize("name", ["__init__"] + MODULES)
def test_docstring_examples(name):
    module = teachlmm if name == "__init__" else importlib.import_module(f"teachlmm.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_functions_have_examples():
    """numpydoc docstrings with a runnable Examples section on the public API."""
    from teachlmm import blup, data, em, formula, gibbs, mme
    for fn in [data.load_radon, data.simulate, data.read_csv, formula.parse_formula, em.init, em.step,
               em.steps, em.fit, mme.solve, mme.loglik, teachlmm.Model, teachlmm.MixedModelResult,
               gibbs.init, gibbs.step, gibbs.sample, gibbs.Prior, blup.fit, blup.pooling]:
        assert "Examples" in (fn.__doc__ or ""), fn.__name__


def test_readme_tour_runs():
    """The README's Python tour is real code: run it."""
    import pathlib
    import re
    import warnings
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## A short tour\s+```python\n(.*?)```", text, re.S).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "README.md", "exec"), {})
