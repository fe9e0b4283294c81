"""Figures of the chapter "High dimensions": the cost of grids, deep BSDE training, error against dimension."""
from __future__ import annotations

import numpy as np

from ._common import _axes

__all__ = ["plot_grid_growth", "plot_bsde_history", "plot_error_vs_dimension"]


def plot_grid_growth(dims=range(1, 101), points_per_axis=(10, 100), budget: float = 1e9, ax=None):
    """Nodes of a tensor grid against the dimension (log scale), with a horizontal line at ``budget`` nodes."""
    from ..problems import grid_points

    fig, (ax,) = _axes(ax, figsize=(6, 3.5))
    dims = np.asarray(list(dims))
    for k in points_per_axis:
        ax.semilogy(dims, [grid_points(int(d), k) for d in dims], label=f"{k} points per axis")
    ax.axhline(budget, color="k", ls="--", lw=1, label=f"{budget:.0e} nodes")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("grid nodes")
    ax.set_title("A tensor grid needs $k^d$ nodes")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_bsde_history(solution, exact: float | None = None, axes=None):
    """Left: the learned u(0, 0) during training (and ``exact`` when given); right: the validation loss."""
    h = solution.history
    fig, axes = _axes(axes, ncols=2, figsize=(10, 3.5))
    it = np.asarray(h["iteration"])
    axes[0].plot(it, h["u0"], label="learned $u(0, 0)$")
    if exact is not None:
        axes[0].axhline(exact, color="k", ls="--", lw=1, label="Cole-Hopf")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("$u(0, 0)$")
    axes[0].legend()
    axes[1].semilogy(it, h["valid_loss"])
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel(r"$E|Y_N - g(X_N)|^2$ (validation)")
    fig.suptitle(f"deep BSDE, d = {solution.problem.state_dim}, N = {solution.config.n_steps}")
    fig.tight_layout()
    return fig


def plot_error_vs_dimension(dims, abs_errors, euler_biases=None, seconds=None, ax=None):
    """Absolute error of u(0, 0) against the dimension, beside the time-step bias of the scheme when given."""
    fig, (ax,) = _axes(ax, figsize=(6, 3.5))
    ax.semilogy(dims, np.abs(abs_errors), "o-", label="|learned - exact|")
    if euler_biases is not None:
        ax.semilogy(dims, np.abs(euler_biases), "s--", label="time-step bias with the exact Z")
    ax.set_xscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("error in $u(0, 0)$")
    if seconds is not None:
        for d, e, s in zip(dims, np.abs(abs_errors), seconds):
            ax.annotate(f"{s:.0f} s", (d, e), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.legend()
    fig.tight_layout()
    return fig
