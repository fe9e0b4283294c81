"""Set-up shared by the plotting modules: axes to draw on, and the finishing touches of a line plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _axes(ax, ncols: int = 1, figsize=(6.0, 4.0), layout: str | None = None):
    """(figure, 1-D array of axes): the given ``ax`` (one or several), or a new row of ``ncols`` axes."""
    if ax is not None:
        axes = np.atleast_1d(ax)
        return axes[0].figure, axes
    fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False, layout=layout)
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
