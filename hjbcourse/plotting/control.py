"""Figures of the chapters "Policy iteration", "Stochastic LQR" and "Merton": learned value and policy against
the closed form, closed-loop paths with their discounted reward, convergence diagnostics, Riccati matrices.
Each function returns the Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ._common import _size

__all__ = ["plot_value_policy", "plot_closed_loop", "plot_pi_history", "plot_matrix_comparison",
           "plot_time_step_bias"]


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def plot_value_policy(problem, solutions, n: int = 201, action_labels: Sequence[str] | None = None,
                      exact=None, title: str | None = None):
    """Value and each action coordinate on ``problem``'s one-dimensional domain: one curve per solution
    (``solutions`` is a solution or a mapping label -> solution) and the closed form dashed, with the
    relative error of each solution in a lower row."""
    if not isinstance(solutions, Mapping):
        solutions = {"learned": solutions}
    x = problem.grid(n, dtype=torch.float64)
    if exact is None and problem.has_exact:
        exact = problem.exact()
    k = problem.action_dim
    labels = list(action_labels) if action_labels is not None else [f"$a_{j + 1}$" if k > 1 else "$a$" for j in range(k)]
    fig, axes = plt.subplots(2 if exact is not None else 1, 1 + k, figsize=_size(4.2 * (1 + k), 6.4 if exact is not None else 3.6),
                             constrained_layout=True, squeeze=False)
    xs = _np(x[:, 0])
    ref_v = _np(exact.value(x)[:, 0]) if exact is not None else None
    ref_a = _np(exact.policy(x)) if exact is not None else None
    for i, (name, sol) in enumerate(solutions.items()):
        v = _np(sol.value(x)[:, 0])
        a = _np(sol.policy(x))
        axes[0, 0].plot(xs, v, color=f"C{i}", lw=2, label=name)
        for j in range(k):
            axes[0, 1 + j].plot(xs, a[:, j], color=f"C{i}", lw=2, label=name)
        if exact is not None:
            axes[1, 0].plot(xs, np.abs(v - ref_v) / np.abs(ref_v).max(), color=f"C{i}", label=name)
            for j in range(k):
                axes[1, 1 + j].plot(xs, np.abs(a[:, j] - ref_a[:, j]) / np.abs(ref_a[:, j]).max(), color=f"C{i}", label=name)
    if exact is not None:
        axes[0, 0].plot(xs, ref_v, "k--", lw=1.2, label="closed form")
        for j in range(k):
            axes[0, 1 + j].plot(xs, ref_a[:, j], "k--", lw=1.2, label="closed form")
        for c in range(1 + k):
            axes[1, c].set_yscale("log")
            axes[1, c].set_xlabel("state $x$")
        axes[1, 0].set_ylabel("|error| / max |closed form|")
    axes[0, 0].set_ylabel("value $V(x)$")
    for j in range(k):
        axes[0, 1 + j].set_ylabel(labels[j])
    for ax in axes[0]:
        ax.legend(fontsize=8)
        ax.set_xlabel("state $x$")
    fig.suptitle(title or "Learned value and policy against the closed form")
    return fig


def plot_closed_loop(sims: Mapping[str, object], coord: int = 0, max_paths: int = 10, state_label: str = "$X_t$",
                     title: str | None = None):
    """Paths of coordinate ``coord`` and the cumulative discounted reward, one color per policy.

    ``sims`` maps a label to a :class:`~hjbcourse.Simulation` recorded with ``record=True`` (use the same
    noise for every policy so that the comparison is path by path); the mean over paths is drawn bold."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=_size(11, 4), constrained_layout=True)
    for i, (name, sim) in enumerate(sims.items()):
        t = _np(sim.t)
        x = _np(sim.x[:, :, coord])
        c = _np(sim.cum_reward[:, :, 0])
        ls = "-" if i == 0 else "--"
        ax0.plot(t, x[:, :max_paths], color=f"C{i}", alpha=0.35, lw=0.8, ls=ls)
        ax0.plot(t, x.mean(1), color=f"C{i}", lw=2.2, ls=ls, label=f"{name} (mean of {x.shape[1]})")
        ax1.plot(t, c[:, :max_paths], color=f"C{i}", alpha=0.35, lw=0.8, ls=ls)
        ax1.plot(t, c.mean(1), color=f"C{i}", lw=2.2, ls=ls, label=f"{name}: mean {c[-1].mean():.4g}")
    ax0.set_xlabel("time $t$")
    ax0.set_ylabel(state_label)
    ax1.set_xlabel("time $t$")
    ax1.set_ylabel(r"$\int_0^t e^{-\rho s} r(X_s, a_s)\,ds$")
    ax0.legend(fontsize=8)
    ax1.legend(fontsize=8)
    fig.suptitle(title or "Closed-loop paths under the learned and the optimal policy")
    return fig


#: legends in words for the diagnostics a solver's History records
_WORDS = {"value_fit_mse": "value fit (mean square)", "hjb_residual": "HJB residual", "value_error_estimate":
          "estimated value error", "value_rel_l2": "value", "policy_rel_l2": "policy", "P_rel": "matrix P",
          "K_rel": "gain K", "pi_rel": r"risky fraction $\pi$", "k_rel": "consumption rate $k$",
          "policy_objective": "policy objective"}


def plot_pi_history(history, keys: Sequence[str] | None = None, title: str | None = None):
    """Convergence diagnostics of a solver's ``History``, one panel per quantity, on a log scale
    (the policy objective on a linear one)."""
    default = ["value_fit_mse", "hjb_residual", "value_error_estimate", "value_rel_l2", "policy_rel_l2", "P_rel",
               "K_rel", "pi_rel", "k_rel", "policy_objective"]
    keys = [k for k in (keys or default) if k in history]
    groups = [("fit and equation", [k for k in keys if k in ("value_fit_mse", "hjb_residual", "value_error_estimate")]),
              ("errors against the closed form", [k for k in keys if k.endswith("_rel") or k.endswith("_rel_l2")]),
              ("policy objective", [k for k in keys if k == "policy_objective"])]
    groups = [(t, ks) for t, ks in groups if ks]
    fig, axes = plt.subplots(1, len(groups), figsize=_size(4.6 * len(groups), 3.8), constrained_layout=True, squeeze=False)
    it = np.asarray(history["iteration"])
    for ax, (name, ks) in zip(axes[0], groups):
        for k in ks:
            ax.plot(it, np.asarray(history[k]), marker="o", ms=3, label=_WORDS.get(k, k.replace("_", " ")))
        if name != "policy objective":
            ax.set_yscale("log")
        ax.set_xlabel("policy iteration")
        ax.set_ylabel({"fit and equation": "dimensionless size",
                       "errors against the closed form": "relative error",
                       "policy objective": r"mean of $(r + \mathcal{L}^a V)/\rho$"}[name], fontsize=9)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_matrix_comparison(learned, exact, names: Sequence[str] = ("learned", "closed form"), title: str | None = None):
    """Two matrices side by side with a common color scale, and their difference."""
    L, E = _np(learned), _np(exact)
    fig, axes = plt.subplots(1, 3, figsize=_size(12, 3.8), constrained_layout=True)
    vmax = max(np.abs(L).max(), np.abs(E).max())
    for ax, M, n in zip(axes[:2], (L, E), names):
        im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(n)
        ax.set_xlabel("column index $j$")
    axes[0].set_ylabel("row index $i$")
    fig.colorbar(im, ax=axes[:2], shrink=0.8)
    D = L - E
    dmax = np.abs(D).max() or 1.0
    im = axes[2].imshow(D, cmap="RdBu_r", vmin=-dmax, vmax=dmax)
    axes[2].set_title(f"difference (rel. Frobenius {np.linalg.norm(D) / np.linalg.norm(E):.2%})")
    axes[2].set_xlabel("column index $j$")
    axes[2].set_ylabel("row index $i$")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    fig.suptitle(title or "Learned against closed-form matrix")
    return fig


def plot_time_step_bias(steps, biases: Mapping[str, Sequence[float]], xlabel: str = "time step $dt$",
                        ylabel: str = "relative bias of the value", title: str | None = None):
    """log-log bias against step, one curve per scheme, with the fitted slope in the legend."""
    fig, ax = plt.subplots(figsize=_size(6, 4), constrained_layout=True)
    s = np.asarray(steps, dtype=np.float64)
    for i, (name, b) in enumerate(biases.items()):
        b = np.abs(np.asarray(b, dtype=np.float64))
        slope = np.polyfit(np.log(s), np.log(b), 1)[0]
        ax.loglog(s, b, marker="o", color=f"C{i}", label=f"{name} (slope {slope:.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title or "Time-step bias of the Feynman–Kac value")
    return fig
