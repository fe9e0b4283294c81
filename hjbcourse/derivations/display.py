"""Long sympy results shown on several lines, so that a display fits the book's column.

:func:`aligned_latex` writes an expression (or an equation) as a LaTeX ``aligned`` block with a few terms a line;
a chapter shows it with ``display(Math(aligned_latex(expr)))``. The terms are sympy's own (``Add.make_args``), in
sympy's order, so the display is the same expression as ``display(expr)``, only broken into lines.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["aligned_latex"]


def _lines(expr, per_line: int) -> list[str]:
    terms = sp.Add.make_args(expr) if isinstance(expr, sp.Add) else (expr,)
    if isinstance(expr, sp.Add):
        terms = sp.Add._from_args(terms).as_ordered_terms()
    out = []
    for i in range(0, len(terms), per_line):
        parts = []
        for j, term in enumerate(terms[i:i + per_line]):
            tex = sp.latex(term)
            if tex.startswith("-"):
                parts.append(("- " if (parts or i) else "-") + tex[1:].lstrip())
            else:
                parts.append(("+ " if (parts or i) else "") + tex)
        out.append(" ".join(parts))
    return out


def aligned_latex(expr, per_line: int = 3) -> str:
    """``expr`` (a sympy expression or ``Eq``) as LaTeX on several lines: ``per_line`` terms of each sum a line,
    an equation's right-hand side after its left-hand side, aligned on the first column."""
    if not isinstance(per_line, int) or isinstance(per_line, bool) or per_line < 1:
        raise ValueError(f"per_line must be a positive integer, got {per_line!r}")
    if isinstance(expr, sp.Equality):
        left, right = _lines(expr.lhs, per_line), _lines(expr.rhs, per_line)
        rows = [f"& {row}" for row in left] + [f"= {{}} & {right[0]}"] + [f"& {row}" for row in right[1:]]
    else:
        rows = [f"& {row}" for row in _lines(sp.sympify(expr), per_line)]
    return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"
