"""Figures of the chapter "Diffusion models as control": marginals, the verification identity, the learned
score and control, and samples. Each function returns its matplotlib Figure."""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import torch

from ._common import _size

__all__ = [
    "plot_forward_marginals",
    "plot_verification",
    "plot_score_matching",
    "plot_control_over_time",
    "plot_samples",
]


def _density_grid(gm, lim: float, n: int):
    g = torch.linspace(-lim, lim, n, dtype=gm.dtype)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1).to(gm.device)
    dens = gm.log_prob(pts).exp().reshape(n, n).cpu().numpy()
    return X.numpy(), Y.numpy(), dens


def plot_forward_marginals(data, sde, times=(0.0, 0.1, 0.2, 0.4, 1.0), *, lim: float = 3.5, n_grid: int = 160,
                           quiver: bool = True):
    """The exact densities p_s of the forward VP SDE at forward times ``times`` (2-D data), with the score
    field grad log p_s drawn as arrows."""
    if data.dim != 2:
        raise ValueError(f"data must be 2-dimensional for this figure, got d={data.dim}")
    fig, axes = plt.subplots(1, len(times), figsize=_size(2.6 * len(times), 3.1), squeeze=False)
    for ax, s in zip(axes[0], times):
        ps = data.marginal(sde, float(s))
        X, Y, dens = _density_grid(ps, lim, n_grid)
        ax.pcolormesh(X, Y, dens, shading="auto", cmap="viridis")
        if quiver:
            g = torch.linspace(-lim * 0.9, lim * 0.9, 13, dtype=data.dtype)
            QX, QY = torch.meshgrid(g, g, indexing="xy")
            q = torch.stack([QX.reshape(-1), QY.reshape(-1)], 1)
            sc = ps.score(q)
            sc = sc / (1 + sc.norm(dim=1, keepdim=True))  # arrows show directions; lengths saturate
            ax.quiver(q[:, 0], q[:, 1], sc[:, 0], sc[:, 1], color="white", alpha=0.7, scale=18, width=0.006)
        ax.set_title(f"$p_s$, s = {float(s):.2g}")
        ax.set_aspect("equal")
        ax.locator_params(nbins=3)   # a few ticks: the panels are small
        ax.set_xlabel("$x_1$")
    axes[0, 0].set_ylabel("$x_2$")
    fig.suptitle("Forward VP SDE: data (left) to noise (right); arrows: the score")
    fig.tight_layout()
    return fig


def plot_verification(estimates: dict):
    """Left: J - V against the quadratic gap for each control, with 3-standard-error bars, on the diagonal
    when the verification identity holds. Right: the per-path residual J - V - gap in standard errors."""
    names = list(estimates)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=_size(10, 4))
    hi = 0.0
    for i, name in enumerate(names):
        e = estimates[name]
        ax1.errorbar(e.gap, e.excess, xerr=3 * e.gap_se, yerr=3 * e.J_se, fmt="o", capsize=3,
                     color=f"C{i}", label=name)
        hi = max(hi, e.gap + 3 * e.gap_se, e.excess + 3 * e.J_se)
    lo = min(0.0, min(estimates[n].excess - 3 * estimates[n].J_se for n in names))
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1, label="J - V = gap")
    ax1.set_xlabel(r"gap $\frac{1}{2}\mathbb{E}\int |u-u^*|^2\,ds$")
    ax1.set_ylabel(r"$J(u) - V$")
    ax1.set_title("Verification identity (bars: 3 standard errors)")
    ax1.legend(fontsize=8)
    z = [estimates[n].z_score for n in names]
    ax2.bar(range(len(names)), z, color=[f"C{i}" for i in range(len(names))])
    ax2.axhspan(-3, 3, color="0.9", zorder=0, label=r"$\pm 3$ standard errors")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=20)
    ax2.set_ylabel("(J - V - gap) / standard error")
    ax2.set_ylim(-4, 4)
    ax2.set_title("Residual, estimated per path")
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_score_matching(model, times=None, errors=None, *, target: float | None = 0.05):
    """Training diagnostics of a :class:`~hjbcourse.diffusion.ScoreModel`: the (smoothed) denoising loss and, when
    given, the relative score error at each forward time in ``times``."""
    h = model.history
    ncols = 2 if errors is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=_size(5 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(h["iteration"], h["loss"], color="0.8", lw=0.5, label="minibatch loss")
    ax.plot(h["iteration"], h["loss_avg"], color="C0", label="moving average")
    ax.set_xlabel("iteration")
    ax.set_ylabel("denoising loss")
    if "score_error_max" in h:
        it = np.array(h["iteration"])
        mx = np.array(h["score_error_max"])
        ok = ~np.isnan(mx)
        ax2 = ax.twinx()
        ax2.semilogy(it[ok], mx[ok], "o-", color="C3", ms=3, label="worst relative score error")
        ax2.set_ylabel("relative score error", color="C3")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Denoising score matching")
    if errors is not None:
        ax = axes[0, 1]
        ax.semilogy(np.asarray(times), np.asarray(errors), "o-", color="C3")
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label=f"{target:.0%}")
            ax.legend(fontsize=8)
        ax.set_xlabel("forward time s")
        ax.set_ylabel(r"relative $L^2(p_s)$ error of the score")
        ax.set_title("Learned score, weighted by $p_s$")
    fig.tight_layout()
    return fig


def plot_control_over_time(problem, model, points, *, n_times: int = 120, t_max: float | None = None):
    """The exact control u*(t, x) (solid) and the learned one (dashed) at fixed points x (rows of ``points``,
    (P, d)), each component, over reverse time t in [0, t_max]."""
    sde = problem.sde
    t_max = 0.99 * sde.T if t_max is None else t_max
    ts = np.linspace(0.0, t_max, n_times)
    pts = torch.as_tensor(points, dtype=problem.data.dtype)
    ex = np.stack([problem.optimal_control(float(t), pts).numpy() for t in ts])  # (n, P, d)
    le = np.stack([model.control(float(t), pts.float()).double().numpy() for t in ts])
    d = pts.shape[1]
    fig, axes = plt.subplots(1, d, figsize=_size(5 * d, 3.6), squeeze=False)
    for j in range(d):
        ax = axes[0, j]
        for p in range(pts.shape[0]):
            lab = "(" + ", ".join(f"{v:.1f}" for v in pts[p].tolist()) + ")"
            ax.plot(ts, ex[:, p, j], color=f"C{p}", label=f"exact at x = {lab}")
            ax.plot(ts, le[:, p, j], color=f"C{p}", ls="--")
        ax.set_xlabel("reverse time t")
        ax.set_ylabel(f"$u_{j + 1}(t, x)$")
        ax.set_title(f"component {j + 1}: exact (solid) and learned (dashed)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_samples(samples: dict, data, *, metrics: dict | None = None, lim: float = 3.5, n_grid: int = 160):
    """The data density and, one panel each, the samples in ``samples`` ({name: (n, 2)}) over its contours;
    ``metrics`` ({name: {"W2": .., "nll": ..}}) go into the titles. Points outside the window are counted."""
    if data.dim != 2:
        raise ValueError(f"data must be 2-dimensional for this figure, got d={data.dim}")
    X, Y, dens = _density_grid(data, lim, n_grid)
    n = len(samples) + 1
    fig, axes = plt.subplots(1, n, figsize=_size(3.2 * n, 3.4), squeeze=False)
    axes = axes[0]
    axes[0].pcolormesh(X, Y, dens, shading="auto", cmap="viridis")
    axes[0].set_title("$p_{data}$")
    for ax, (name, xs) in zip(axes[1:], samples.items()):
        xs = xs.detach().double().cpu().numpy()
        inside = (np.abs(xs) <= lim).all(1)
        ax.contour(X, Y, dens, levels=6, colors="0.6", linewidths=0.6)
        ax.scatter(xs[inside, 0], xs[inside, 1], s=2, alpha=0.5, color="C1")
        title = name
        if metrics is not None and name in metrics:
            title += f"\nW2 = {metrics[name]['W2']:.3g}, NLL = {metrics[name]['nll']:.3g}"
        if not inside.all():
            title += f"\n({(~inside).sum()} of {len(xs)} outside)"
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.locator_params(nbins=3)   # a few ticks: the panels are small
        ax.set_xlabel("$x_1$")
    axes[0].set_ylabel("$x_2$")
    fig.tight_layout()
    return fig
