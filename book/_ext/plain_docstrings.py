"""Sphinx extension: show the package's docstrings verbatim on the API page.

The docstrings are written for ``help()`` and editors (shapes, formulas with |x|^2, aligned lists), not in
reStructuredText; rendering each as a literal block keeps them exact and keeps the strict build free of
markup warnings.
"""


def _literal(app, what, name, obj, options, lines):
    if not lines or not name.startswith("hjbcourse"):
        return
    body = [line.rstrip() for line in lines]
    while body and not body[-1]:
        body.pop()
    lines[:] = ["::", ""] + ["    " + line if line else "" for line in body] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _literal)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
