"""A Sphinx extension for the API reference page (api.md): keep every docstring readable.

The package's docstrings are numpydoc text (read by sphinx.ext.napoleon). Some
docstrings hold plain-text algebra laid out with indentation, ``|A|`` for a
determinant or tables drawn with dashes: as reStructuredText those are errors
(and ``-W`` would fail the build). Such a docstring is shown as it is written, in
a literal block, and the build log names it so it can be converted (math in
``.. math::`` blocks). Every other docstring is rendered as reST.
"""
import docutils.frontend
import docutils.nodes
import docutils.parsers.rst
import docutils.utils
from sphinx.util import logging

logger = logging.getLogger(__name__)
SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type", "No role entry",
               "No directive entry")
WARNINGS_THAT_BREAK = ("Literal block expected", "start-string without end-string")   # level 2, still garbled


def rest_errors(text, env=None):
    """The reST errors (level >= ERROR) docutils finds in a text, ignoring Sphinx-only roles and directives."""
    settings = docutils.frontend.get_default_settings(docutils.parsers.rst.Parser)
    settings.report_level = 5                    # collect, do not print
    settings.halt_level = 5
    settings.env = env                           # Sphinx's roles (:mod:, :func:) look for it
    document = docutils.utils.new_document("<docstring>", settings)
    found = []
    document.reporter.attach_observer(
        lambda msg: found.append(msg.astext())
        if msg["level"] >= 3 or any(w in msg.astext() for w in WARNINGS_THAT_BREAK) else None)
    docutils.parsers.rst.Parser().parse(text, document)
    for ref in document.findall(docutils.nodes.substitution_reference):    # |M~_j| meant as a determinant
        found.append(f"undefined substitution |{ref.astext()}|")
    return [m for m in found if not any(s in m for s in SPHINX_ONLY)]


def as_written(app, what, name, obj, options, lines):
    """Show a docstring that is not valid reST (after napoleon has read its sections) verbatim."""
    if not lines:
        return
    errors = rest_errors("\n".join(lines), app.env)
    if errors:
        logger.info(f"api: the docstring of {name} is shown as written ({errors[0].splitlines()[0][:80]})")
        lines[:] = ["::", ""] + ["    " + line for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", as_written, priority=600)   # after napoleon (500)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
