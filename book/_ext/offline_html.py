"""A Sphinx extension that keeps the built book usable with no network.

1. It removes sphinx-thebe's scripts (jupyter-book adds them to every page;
   they would fetch thebe from a CDN when a reader clicks "launch"): the book
   has no live kernel.
2. When the build has finished, it reads every HTML page and fails the build
   if any page loads a script or a stylesheet from an http(s) address.
   MathJax comes from sphinx-mathjax-offline (``_static/mathjax``), the
   theme's fonts and icons ship in ``_static``.
"""
import pathlib
import re

from sphinx.errors import ExtensionError

REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//", re.I)
REMOTE_LINK = re.compile(r"<link\b(?=[^>]*\brel=[\"']?(?:stylesheet|preload|modulepreload))"
                         r"[^>]*\bhref=[\"']?(?:https?:)?//", re.I)
REMOTE_IMPORT = re.compile(r"@import\s+(?:url\()?[\"']?(?:https?:)?//", re.I)
THEBE = re.compile(r"thebe", re.I)


def _drop_thebe(app, pagename, templatename, context, doctree):
    """Remove thebe's script tags from a page before it is written."""
    scripts = context.get("script_files")
    if scripts is None:
        return
    keep = [s for s in scripts if not THEBE.search(str(s))]   # str() shows the file name and inline body
    scripts[:] = keep


def remote_loads(html):
    """The remote script/stylesheet loads in an HTML text (a list of the offending tags)."""
    found = [m.group(0) for m in REMOTE_SCRIPT.finditer(html)]
    found += [m.group(0) for m in REMOTE_LINK.finditer(html)]
    found += [m.group(0) for m in REMOTE_IMPORT.finditer(html)]
    return found


def _check_offline(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = pathlib.Path(app.outdir)
    bad = []
    for page in sorted(out.rglob("*.html")):
        for tag in remote_loads(page.read_text(encoding="utf-8", errors="replace")):
            bad.append(f"{page.relative_to(out)}: {tag[:120]}")
    for css in sorted(out.rglob("*.css")):
        for tag in REMOTE_IMPORT.findall(css.read_text(encoding="utf-8", errors="replace")):
            bad.append(f"{css.relative_to(out)}: {tag[:120]}")
    if not (out / "_static" / "mathjax" / "tex-chtml.js").exists():
        bad.append("_static/mathjax/tex-chtml.js is missing (is sphinx-mathjax-offline installed?)")
    if bad:
        raise ExtensionError("the book must load nothing from the network, but:\n  " + "\n  ".join(bad))


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("build-finished", _check_offline, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
