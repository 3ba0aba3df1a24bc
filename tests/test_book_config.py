"""The book can never show outputs older than the package and the page.

Two things make that so: myst-nb executes a page whenever Sphinx reads it
(``execute_notebooks: force``, no jupyter-cache whose key would be the page's code
alone), and book/_ext/fresh_outputs.py makes Sphinx read every page on every build
(otherwise an edit to teachlmm/*.py changes no page, and Sphinx reuses the old HTML).
The last test proves it end to end: a tiny book built twice, with the module its
page imports edited in between, shows the new value.
"""
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

BOOK = pathlib.Path(__file__).resolve().parents[1] / "book"
CONFIG = (BOOK / "_config.yml").read_text()


def _setting(name):
    match = re.search(rf"^\s*{name}:\s*(\S+)", CONFIG, flags=re.M)
    return match.group(1) if match else None


def test_execution_is_never_served_from_a_cache_keyed_on_the_page_alone():
    """jupyter-cache ('cache', 'auto') keys a page's outputs on its code cells only, not on teachlmm's source."""
    mode = _setting("execute_notebooks")
    assert mode == "force", (f"execute_notebooks: {mode} reuses outputs after teachlmm changes; "
                             "use force (the cache key would not include the package's source)")
    assert _setting("cache") in (None, '""', "''"), "an execution cache is configured"
    assert not re.search(r"nb_execution_mode:\s*(?!force)\w+", CONFIG), "sphinx config overrides the mode"


def test_every_build_rereads_every_page():
    assert re.search(r"^\s+fresh_outputs:\s*_ext\b", CONFIG, flags=re.M), \
        "book/_ext/fresh_outputs.py must be in sphinx.local_extensions"


def _fresh_outputs():
    spec = importlib.util.spec_from_file_location("fresh_outputs", BOOK / "_ext" / "fresh_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_outputs_marks_every_unchanged_page_outdated():
    class Env:
        found_docs = {"index", "em", "gibbs", "blup"}
    outdated = _fresh_outputs().every_page(None, Env(), added={"blup"}, changed={"em"}, removed=set())
    assert sorted(outdated) == ["gibbs", "index"]        # with added and changed: every page is read


def _jupyter_book():
    pytest.importorskip("jupyter_book", reason="the book's extra (pip install -e '.[book]') is not installed")
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else shutil.which("jupyter-book")


PAGE = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Stamp

```{code-cell} ipython3
import stamp
print(f"stamp value {stamp.VALUE}")
```
"""


@pytest.mark.slow
def test_a_rebuild_after_a_package_edit_shows_the_new_output(tmp_path):
    """Build a one-page book with this book's configuration, edit the module it imports, rebuild."""
    exe = _jupyter_book()
    book = tmp_path / "book"
    shutil.copytree(BOOK / "_ext", book / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (book / "_config.yml").write_text(CONFIG)
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(PAGE)
    package = tmp_path / "package"
    package.mkdir()
    env = dict(os.environ, PYTHONPATH=str(package), PYTHONDONTWRITEBYTECODE="1")

    def build_with(value):
        (package / "stamp.py").write_text(textwrap.dedent(f"VALUE = {value}\n"))
        done = subprocess.run([exe, "build", str(book), "-W", "-n", "--keep-going"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return (book / "_build" / "html" / "index.html").read_text()

    assert "stamp value 1" in build_with(1)
    html = build_with(2)
    assert "stamp value 2" in html and "stamp value 1" not in html
