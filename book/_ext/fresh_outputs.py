"""A Sphinx extension that makes every build re-read, and so re-execute, every page.

``execute_notebooks: force`` runs a page's code whenever Sphinx reads the page,
but Sphinx only reads a page whose *source* changed. After an edit to the
package (teachlmm/*.py) no page source changes, Sphinx reports "no targets are
out of date" and serves the outputs of the previous build. This extension
answers Sphinx's ``env-get-outdated`` question with "all of them", so the pages
are executed against the package as it is now, on every build.
"""


def every_page(app, env, added, changed, removed):
    """Mark every page as outdated (Sphinx then re-reads and myst-nb re-executes it)."""
    return sorted(set(env.found_docs) - set(added) - set(changed))


def setup(app):
    app.connect("env-get-outdated", every_page)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
