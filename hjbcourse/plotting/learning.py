"""Figures of the chapter "Continuous-time q-learning": learning curves against the number of transitions,
and the accuracy of the learned policy against the time step dt. Each function returns the Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ._common import _axes, _finish

__all__ = ["plot_learning_curves", "plot_dt_sweep"]


def plot_learning_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], ylabel: str,
                         references: Mapping[str, float] | None = None, title: str | None = None, logy: bool = True,
                         xlabel: str = "transitions (x, a, r, x') seen", ax=None):
    """One curve per entry of ``curves`` (label -> (transitions, error)); horizontal dashed lines for
    ``references`` (label -> level), e.g. the error of a model-based solver or a discretisation bias."""
    fig, (ax,) = _axes(ax, figsize=(6.4, 4.0), layout="constrained")
    for i, (label, (n, err)) in enumerate(curves.items()):
        ax.plot(np.asarray(n, dtype=float), np.asarray(err, dtype=float), color=f"C{i}", lw=2, label=label)
    for j, (label, level) in enumerate((references or {}).items()):
        ax.axhline(float(level), color=f"C{len(curves) + j}", ls="--", lw=1.2, label=label)
    _finish(ax, xlabel, ylabel, title, logy=logy)
    return fig


def plot_dt_sweep(dts: Sequence[float], errors: Mapping[str, Sequence[float]], ylabel: str = "relative error of the gain",
                  title: str | None = None, ax=None):
    """Error against the time step ``dt`` (log-log), one line per method (``errors``: label -> errors)."""
    fig, (ax,) = _axes(ax, layout="constrained")
    d = np.asarray(dts, dtype=float)
    for i, (label, err) in enumerate(errors.items()):
        ax.plot(d, np.maximum(np.asarray(err, dtype=float), 1e-6), "o-", color=f"C{i}", lw=2, label=label)
    _finish(ax, "time step $dt$ of the transitions", ylabel, title)
    return fig
