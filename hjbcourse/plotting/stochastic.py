"""Figures of the chapter "The stochastic HJB" and of Appendices A, B and C. Each returns the Figure."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ._common import _axes

__all__ = ["plot_diffusion_paths", "plot_generator_convergence", "plot_riccati_polynomial",
           "plot_merton_constants", "plot_riccati_ode", "plot_finite_horizon_paths"]


def plot_diffusion_paths(t, paths: Mapping[str, np.ndarray], ax=None, max_paths: int = 20, title=None):
    """Sample paths (n, len(t)) per label (e.g. one label per constant action), with the mean in bold."""
    fig, (ax,) = _axes(ax, layout="constrained")
    t = np.asarray(t)
    for i, (label, p) in enumerate(paths.items()):
        color = f"C{i}"
        p = np.asarray(p)
        ax.plot(t, p[:max_paths].T, color=color, alpha=0.25, lw=0.8)
        ax.plot(t, p.mean(0), color=color, lw=2.2, label=f"{label} (mean of {p.shape[0]})")
    ax.set_xlabel("time $t$")
    ax.set_ylabel("$X_t$")
    ax.legend()
    ax.set_title(title or "Sample paths of the controlled diffusion")
    return fig


def plot_generator_convergence(h, errors: Mapping[str, np.ndarray], predicted: Mapping[str, float] | None = None,
                               ax=None, title=None):
    """log-log |(E phi(X_h) - phi(x))/h - L^a phi(x)| against h, one curve per label; ``predicted`` maps a
    label to the constant C of the expected leading error C h (drawn dashed)."""
    fig, (ax,) = _axes(ax, layout="constrained")
    h = np.asarray(h)
    for i, (label, err) in enumerate(errors.items()):
        err = np.abs(np.asarray(err))
        slope = np.polyfit(np.log(h), np.log(err), 1)[0]
        ax.loglog(h, err, "o-", color=f"C{i}", label=f"{label} (slope {slope:.2f})")
        if predicted and label in predicted:
            ax.loglog(h, abs(predicted[label]) * h, "--", color=f"C{i}", alpha=0.7, label=f"predicted $C h$, {label}")
    ax.set_xlabel("$h$")
    ax.set_ylabel(r"$|(\mathbb{E}\,\varphi(X_h)-\varphi(x))/h - \mathcal{L}^a\varphi(x)|$")
    ax.legend(fontsize=8)
    ax.set_title(title or "The generator as the limit of difference quotients")
    return fig


def plot_riccati_polynomial(P, values, roots, ax=None, title=None):
    """The scalar discounted Riccati polynomial against P with its roots marked (the positive one is the
    stabilising solution)."""
    fig, (ax,) = _axes(ax, layout="constrained")
    ax.plot(P, values, color="C0")
    ax.axhline(0.0, color="k", lw=0.6)
    for r in roots:
        ax.plot([r], [0.0], "o", color="C3" if r > 0 else "C7", ms=8,
                label=f"root $P={r:.4f}$" + (" (stabilising)" if r > 0 else ""))
    ax.set_xlabel("$P$")
    ax.set_ylabel("Riccati polynomial")
    ax.legend()
    ax.set_title(title or "The discounted algebraic Riccati equation")
    return fig


def plot_merton_constants(gamma, pi, k, feasible, ax=None, title=None):
    """Merton's pi*(gamma) and k*(gamma) (two panels), with the infeasible gammas (rho - (1-gamma) M <= 0)
    shaded."""
    fig, axes = _axes(ax, ncols=2, figsize=(10.0, 3.8), layout="constrained")
    gamma, pi, k, feasible = (np.asarray(v) for v in (gamma, pi, k, feasible))
    for ax_, y, name in ((axes[0], pi, r"$\pi^*$"), (axes[1], k, r"$k^*$")):
        ax_.plot(gamma[feasible], y[feasible], color="C0")
        if (~feasible).any():
            ax_.axvspan(gamma[~feasible].min(), gamma[~feasible].max(), color="C3", alpha=0.15,
                        label=r"infeasible: $\rho-(1-\gamma)M\leq 0$")
            ax_.legend()
        ax_.set_xlabel(r"risk aversion $\gamma$")
        ax_.set_ylabel(name)
    axes[1].axhline(0.0, color="k", lw=0.6)
    fig.suptitle(title or "Merton's optimal controls against risk aversion")
    return fig


def plot_riccati_ode(curves: Mapping[str, tuple], P_inf: float | None = None, ax=None, title=None):
    """P(t) on [0, T] for several terminal weights: ``curves`` maps a label to (t, P(t)); ``P_inf`` is the
    stationary (Appendix A) solution, drawn dashed."""
    fig, (ax,) = _axes(ax, layout="constrained")
    for i, (label, (t, P)) in enumerate(curves.items()):
        ax.plot(t, P, color=f"C{i}", label=label)
    if P_inf is not None:
        ax.axhline(P_inf, color="k", ls="--", lw=1, label=rf"stationary $P_\infty={P_inf:.4f}$")
    ax.set_xlabel("time $t$")
    ax.set_ylabel("$P(t)$")
    ax.legend()
    ax.set_title(title or "The Riccati ODE, integrated backwards from $P(T)=G$")
    return fig


def plot_finite_horizon_paths(t, paths, gain=None, ax=None, title=None):
    """State paths (n, len(t)) under the optimal feedback and, if given, the gain K(t) on a second axis."""
    fig, (ax,) = _axes(ax, layout="constrained")
    paths = np.asarray(paths)
    ax.plot(t, paths.T, color="C0", alpha=0.3, lw=0.8)
    ax.plot(t, paths.mean(0), color="C0", lw=2, label="mean of the paths shown")
    ax.set_xlabel("time $t$")
    ax.set_ylabel("$X_t$")
    if gain is not None:
        ax2 = ax.twinx()
        ax2.plot(t, gain, color="C3", lw=2, label="gain $K(t)$")
        ax2.set_ylabel("$K(t)$", color="C3")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(title or "Closed-loop paths under $a^*(t,x)=-K(t)x$")
    return fig
