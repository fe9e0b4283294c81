"""Set-up shared by the plotting modules: axes to draw on, and the finishing touches of a line plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


#: the book's text column in inches at matplotlib's 100 dpi (772 px at a 1400 px window): a figure no wider than
#: this is shown at its natural size, so its text has the size it was drawn at
COLUMN = 7.5


def _size(width: float, height: float) -> tuple[float, float]:
    """A figure size no wider than the column: a wider (width, height) shrinks to the column's width, its height by
    the same factor but at most by a quarter, so that panels in a row keep a readable height."""
    if width <= COLUMN:
        return width, height
    return COLUMN, height * max(COLUMN / width, 0.75)


def _axes(ax, ncols: int = 1, figsize=(6.0, 4.0), layout: str | None = None):
    """(figure, 1-D array of axes): the given ``ax`` (one or several), or a new row of ``ncols`` axes."""
    if ax is not None:
        axes = np.atleast_1d(ax)
        return axes[0].figure, axes
    fig, axes = plt.subplots(1, ncols, figsize=_size(*figsize), squeeze=False, layout=layout)
    return fig, axes[0]


def _finish(ax, xlabel: str, ylabel: str, title: str | None = None, logx: bool = True, logy: bool = True):
    """Log scales, labels, title, a light grid and the legend."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
