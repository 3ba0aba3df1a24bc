"""Light checks of the book's sources (the full build, which executes every page, runs in .ci/run)."""
import importlib.util
import pathlib
import re

import pytest

BOOK = pathlib.Path(__file__).resolve().parents[1] / "book"


def toc_files():
    """The `file:` entries of _toc.yml, in order (the TOC is simple enough for a regex)."""
    text = (BOOK / "_toc.yml").read_text()
    root = re.search(r"^root:\s*(\S+)", text, flags=re.M).group(1)
    files = re.findall(r"^\s*-\s*file:\s*(\S+)", text, flags=re.M)
    return [root] + files


def page(name):
    return BOOK / (name if name.endswith(".md") else name + ".md")


def test_toc_lists_existing_pages_once():
    files = toc_files()
    assert len(files) == len(set(files))
    missing = [f for f in files if not page(f).exists()]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_page_is_in_the_toc():
    listed = {page(f).name for f in toc_files()}
    pages = {p.name for p in BOOK.glob("*.md") if p.name != "README.md"}
    assert pages <= listed, f"pages not in _toc.yml (they would not be built): {sorted(pages - listed)}"


@pytest.mark.parametrize("name", toc_files())
def test_page_has_a_title_and_runnable_front_matter(name):
    text = page(name).read_text()
    has_code = "```{code-cell}" in text
    if has_code:
        assert text.startswith("---\n"), f"{name}: a page with code cells needs MyST-NB front matter"
        front = text.split("---\n")[1]
        assert "kernelspec:" in front and "name: python3" in front, f"{name}: kernelspec python3 missing"
        assert "format_name: myst" in front
        assert ":tags: [raises-exception]" not in text, f"{name}: a cell may not be allowed to fail"
    body = text.split("---\n", 2)[2] if text.startswith("---\n") else text
    assert re.search(r"^# \S", body, flags=re.M), f"{name}: no '# Title' line"


def test_config_executes_every_page_and_fails_on_errors():
    cfg = (BOOK / "_config.yml").read_text()
    assert re.search(r"execute_notebooks:\s*force", cfg)
    assert re.search(r"allow_errors:\s*false", cfg)
    assert re.search(r"nb_execution_raise_on_error:\s*true", cfg)
    assert "sphinx-mathjax-offline" in cfg
    assert re.search(r"offline_html:\s*_ext", cfg)


def _offline_extension():
    pytest.importorskip("sphinx", reason="the book's extra (pip install -e '.[book]') is not installed")
    spec = importlib.util.spec_from_file_location("offline_html", BOOK / "_ext" / "offline_html.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_checker_finds_remote_scripts_and_stylesheets():
    ext = _offline_extension()
    assert ext.remote_loads('<script src="https://cdn.example/mathjax.js"></script>')
    assert ext.remote_loads('<script defer src="//cdn.example/x.js"></script>')
    assert ext.remote_loads('<link rel="stylesheet" href="https://fonts.example/css">')
    assert ext.remote_loads("<style>@import url('https://fonts.example/a.css');</style>")
    local = ('<script src="_static/mathjax/tex-chtml.js"></script>'
             '<link rel="stylesheet" href="_static/styles/theme.css">'
             '<a href="https://example.org">a link is not a load</a>'
             '<link rel="canonical" href="https://example.org/">')
    assert ext.remote_loads(local) == []


def test_exercises_page_has_hidden_solutions_that_assert_their_check():
    text = page("exercises").read_text()
    exercises = re.findall(r"^## \d+\. ", text, flags=re.M)
    assert len(exercises) >= 8
    solutions = re.findall(r"```\{code-cell\}[^\n]*\n:tags: \[hide-cell\]\n(.*?)```", text, flags=re.S)
    assert len(solutions) == len(exercises)
    for code in solutions:
        assert re.search(r"assert tl\.exercises\.check_\w+\(", code), code[:80]


def test_glue_plumbing_is_hidden_from_readers():
    """Every cell that calls glue(...) is tagged remove-cell: readers see the computation, not the plumbing."""
    for name in toc_files():
        text = page(name).read_text()
        for head, code in re.findall(r"```\{code-cell\}[^\n]*\n((?::[^\n]*\n)*)(.*?)```", text, flags=re.S):
            if re.search(r"\bglue\(|import glue", code):
                assert "remove-cell" in head, f"{name}: a visible cell calls glue: {code[:80]!r}"


def test_api_reference_page_is_built_from_the_docstrings():
    cfg = (BOOK / "_config.yml").read_text()
    assert "sphinx.ext.autodoc" in cfg and "sphinx.ext.napoleon" in cfg
    assert re.search(r"api_docstrings:\s*_ext", cfg)
    assert "api" in toc_files()
    text = page("api").read_text()
    for module in ["em", "gibbs", "blup", "mme", "design", "results", "inference", "exercises"]:
        assert f".. automodule:: teachlmm.{module}" in text


def test_api_docstring_checker_tells_valid_rest_from_plain_text():
    pytest.importorskip("sphinx", reason="the book's extra (pip install -e '.[book]') is not installed")
    spec = importlib.util.spec_from_file_location("api_docstrings", BOOK / "_ext" / "api_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.rest_errors("E-step\n    b_j = M_j^-1 r_j,\n    ML:   Var(b_j) = sigma2 M_j^-1\n          (the REML one is wider)\n")
    assert module.rest_errors("the determinant |M~_j| of M_j")
    assert module.rest_errors("Text.\n\n.. math::\n\n    V_j = Z_j G Z_j' + \\sigma^2 I\n\nSee :func:`f`.\n") == []
    import teachlmm.exercises
    assert module.rest_errors(teachlmm.exercises.__doc__) == []


def test_docstrings_with_plain_text_algebra_are_valid_rest():
    """These once were shown as written on the API page; their algebra now sits in literal blocks."""
    pytest.importorskip("sphinx", reason="the book's extra (pip install -e '.[book]') is not installed")
    import inspect
    from teachlmm import collapsed, design, em, interweave, results
    spec = importlib.util.spec_from_file_location("api_docstrings", BOOK / "_ext" / "api_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for obj in [em, interweave, design, results.BaseResult.varcorr_rows, design.large_mean_ratio, collapsed,
                collapsed.log_posterior, collapsed.Coordinates, collapsed.Coordinates.log_jacobian,
                collapsed.log_marginal_likelihood, collapsed.fit_proposal]:
        assert module.rest_errors(inspect.getdoc(obj)) == [], obj


def test_layout_for_a_1280_px_window():
    """One search box, no download button, wrapped long output (book/_static/teachlmm.css)."""
    cfg = (BOOK / "_config.yml").read_text()
    assert re.search(r"html_theme_options:[^\n]*(?:\n {6}.*)*?\n {6}use_download_button: false", cfg), \
        "jupyter-book 1.0 ignores html.use_download_button; the theme option must say false"
    assert re.search(r"html_css_files:\s*\[teachlmm\.css\]", cfg)
    css = (BOOK / "_static" / "teachlmm.css").read_text()
    assert re.search(r"\.bd-header[^{]*\{\s*display:\s*none", css)             # the top bar's search box
    assert "pre-wrap" in css


def test_performance_page_reads_the_saved_results_without_internal_wording():
    text = page("performance").read_text()
    assert "results/latest.json" in text
    assert not re.search(r"target|met\)|core issue", text, flags=re.I)
    assert text.count("plt.show()") == 1                                      # one figure


def test_exercises_page_says_how_to_get_u_j_and_the_reml_criterion():
    text = page("exercises").read_text()
    assert 'group_values("log_uranium")' in text
    assert "-2 * tl.MixedModelResult(m4, G, sigma2, reml=True).loglik" in text
    assert "solution(" in text
