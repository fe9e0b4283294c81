"""Figures of the first two chapters: the contraction of value iteration, convergence orders on log-log axes,
and finite-difference solutions against closed forms (including a value function with a kink)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ._common import _axes, _size

__all__ = ["plot_contraction", "plot_loglog_convergence", "plot_fd_solution", "plot_kink"]


def plot_contraction(results: dict, V_star: torch.Tensor, gamma: float | None = None, ax=None):
    """Error sup |V_k - V*| against iteration k on a log scale, one line per result in ``results``
    (name -> :class:`~hjbcourse.DynamicProgrammingResult`), with the contraction bound gamma^k e_0."""
    fig, (ax,) = _axes(ax)
    e0 = None
    for name, res in results.items():
        err = res.errors(V_star).numpy()
        err = np.maximum(err, 1e-16)  # the last iterate can hit V* exactly
        ax.semilogy(np.arange(len(err)), err, "o-" if len(err) < 30 else "-", ms=4, label=name)
        e0 = err[0] if e0 is None else max(e0, err[0])
    if gamma is not None and e0 is not None:
        longest = max(len(r.values) for r in results.values())
        k = np.arange(longest)
        ax.semilogy(k, e0 * gamma ** k, "k--", lw=1, label=r"bound $\gamma^k e_0$")
    ax.set_xlabel("iteration $k$")
    ax.set_ylabel(r"$\|V_k - V^*\|_\infty$")
    ax.set_ylim(bottom=1e-13)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_loglog_convergence(steps, errors, order: float | None = None, xlabel: str = "step", ylabel: str = "error",
                            label: str = "measured", ax=None):
    """Errors against step sizes on log-log axes with the least-squares line whose slope is ``order``."""
    fig, (ax,) = _axes(ax)
    s = np.asarray(steps, dtype=float)
    e = np.asarray(errors, dtype=float)
    ax.loglog(s, e, "o", label=label)
    if order is not None:
        c = np.exp(np.mean(np.log(e) - order * np.log(s)))
        ss = np.geomspace(s.min(), s.max(), 50)
        ax.loglog(ss, c * ss ** order, "--", label=f"fitted slope {order:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_fd_solution(solution, exact=None, interval=None, action_names=None, title: str | None = None):
    """Two panels: the grid value V and the grid policy (every action coordinate) of a
    :class:`~hjbcourse.FiniteDifferenceSolution`, with the closed form ``exact`` dashed where given,
    over ``interval`` (default: the whole grid)."""
    x = solution.x.numpy()
    lo, hi = (x[0], x[-1]) if interval is None else interval
    m = (x >= lo) & (x <= hi)
    xt = torch.from_numpy(x[m]).unsqueeze(1)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=_size(10.0, 3.8))
    a0.plot(x[m], solution.V.numpy()[m], label="finite differences")
    if exact is not None:
        a0.plot(x[m], exact.value(xt).reshape(-1).numpy(), "--", label="closed form")
    a0.set_xlabel("$x$")
    a0.set_ylabel("$V(x)$")
    a0.legend()
    acts = solution.a.numpy()[m]
    names = action_names or [f"$a_{j}$" if acts.shape[1] > 1 else "$a$" for j in range(acts.shape[1])]
    ex_a = exact.policy(xt).numpy() if exact is not None else None
    for j in range(acts.shape[1]):
        line, = a1.plot(x[m], acts[:, j], label=f"{names[j]} (finite differences)")
        if ex_a is not None:
            a1.plot(x[m], ex_a[:, j], "--", color=line.get_color(), label=f"{names[j]} (closed form)")
    a1.set_xlabel("$x$")
    a1.set_ylabel("policy")
    a1.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_kink(solution, exact, zoom: float = 0.2):
    """The value near a kink: V on the whole grid (left) and the difference quotients
    (V_{i+1} - V_i) / dx around x = 0 (right), whose jump is the missing derivative."""
    x = solution.x.numpy()
    V = solution.V.numpy()
    xt = torch.from_numpy(x).unsqueeze(1)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=_size(10.0, 3.8))
    a0.plot(x, V, label="finite differences")
    a0.plot(x, exact.value(xt).reshape(-1).numpy(), "--", label="closed form")
    a0.set_xlabel("$x$")
    a0.set_ylabel("$V(x)$")
    a0.legend()
    mid = 0.5 * (x[1:] + x[:-1])
    dq = np.diff(V) / np.diff(x)
    m = np.abs(mid) <= zoom
    a1.plot(mid[m], dq[m], ".", ms=3, label=r"$(V_{i+1}-V_i)/\Delta x$")
    a1.axvline(0.0, color="k", lw=0.5)
    a1.set_xlabel("$x$")
    a1.set_ylabel("slope of $V$")
    a1.legend()
    fig.tight_layout()
    return fig
