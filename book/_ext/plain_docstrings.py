"""Sphinx extension: render the package's docstrings as text on the API page, in the body's type.

The docstrings are written for ``help()`` and editors: reStructuredText's inline literals and roles
(``code``, :class:`~hjbcourse.X`), but also plain formulas with ``|x|^2``, ``V*``, ``x_`` and aligned blocks.
Rendered as reStructuredText unchanged, those characters are markup (substitutions, emphasis, link targets,
block quotes). This pass keeps the literals and roles, escapes the rest, gives lists the blank line they need,
and shows an indented block (an aligned formula or table) as a literal block, so the page renders in
proportional type, wraps to the column, and builds without warnings.
"""
from __future__ import annotations

import re

# ``literal`` spans and :role:`target` spans are kept as they are; everything between them is escaped
_KEEP = re.compile(r"(``.+?``|:[a-z:]+:`[^`]+`)")
_BULLET = re.compile(r"^(\s*)([-*]|\d+\.)\s+\S")


def _escape(text: str) -> str:
    out = []
    for i, part in enumerate(_KEEP.split(text)):
        if i % 2:  # a literal or a role
            out.append(part)
            continue
        part = part.replace("\\", "\\\\")
        part = re.sub(r"([|*`])", r"\\\1", part)
        part = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", part)  # a trailing underscore makes a link target
        out.append(part)
    return "".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def to_rst(lines: list[str]) -> list[str]:
    """Docstring lines (already dedented by autodoc) as safe reStructuredText."""
    out: list[str] = []
    in_block = False
    in_list = False
    for line in lines:
        if not line.strip():
            out.append("")
            in_list = False if not in_block else in_list
            continue
        indent = _indent(line)
        bullet = _BULLET.match(line)
        if in_block and indent > 0:
            out.append("    " + line)
            continue
        if in_block:  # the indented block ended
            out.append("")
            in_block = False
        if bullet and indent == 0:
            if out and out[-1] and not in_list:
                out.append("")
            in_list = True
            marker = bullet.group(2)
            out.append(marker + " " + _escape(line[len(bullet.group(1)) + len(marker):].lstrip()))
            continue
        if indent > 0 and in_list:  # a list item's continuation
            out.append("  " + _escape(line.strip()))
            continue
        if indent > 0:  # an aligned formula or table: a literal block
            marker = [] if (out and out[-1].rstrip().endswith("::")) or (len(out) > 1 and not out[-1]
                                                                          and out[-2].rstrip().endswith("::")) else ["::"]
            if out and out[-1]:
                out.append("")
            out += [*marker, "", "    " + line] if marker else ["    " + line]
            in_block = True
            continue
        if in_list and out and out[-1]:
            out.append("")
        in_list = False
        out.append(_escape(line))
    return out + [""]


def _render(app, what, name, obj, options, lines):
    if lines and name.startswith("hjbcourse"):
        lines[:] = to_rst([line.rstrip() for line in lines])


def setup(app):
    app.connect("autodoc-process-docstring", _render)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
