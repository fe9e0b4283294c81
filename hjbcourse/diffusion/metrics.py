"""How good a learned score and its samples are: the p_t-weighted relative error of a score against the exact one
of Gaussian-mixture data, and the Wasserstein distance of samples to data (POT is imported only when asked)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .._checks import _positive_int, _scalar
from ..runtime import _cpu_threads, make_generator
from .mixture import GaussianMixture
from .sde import VPSDE

__all__ = ["score_error", "wasserstein_distance", "sample_quality"]


@torch.no_grad()
def score_error(score_fn: Callable[[float, torch.Tensor], torch.Tensor], data: GaussianMixture, sde: VPSDE,
                times, *, n: int = 4000, generator=None) -> torch.Tensor:
    """The p_t-weighted relative L2 error of ``score_fn(t, x)`` at each forward time t in ``times``; (len(times),).

    sqrt(E_{x ~ p_t} |s_theta(t, x) - grad log p_t(x)|^2 / E_{x ~ p_t} |grad log p_t(x)|^2), with x drawn
    from the exact marginal p_t.
    """
    g = make_generator(generator, data.device)
    out = []
    with _cpu_threads(1 if data.device.type == "cpu" else None):
        for t in times:
            t = sde.check_time(t, "times")
            pt = data.marginal(sde, t)
            x = pt.sample(_positive_int("n", n), generator=g)
            exact = pt.score(x)
            approx = score_fn(t, x).to(exact.dtype)
            out.append(torch.sqrt(((approx - exact) ** 2).sum() / (exact ** 2).sum()))
    return torch.stack(out).cpu()


def wasserstein_distance(x: torch.Tensor, y: torch.Tensor, *, p: int = 2, method: str = "exact",
                         reg: float = 0.01) -> float:
    """W_p between the empirical measures of x (n, d) and y (m, d), with POT.

    ``method="exact"`` solves the transport linear program (``ot.emd2``; O(n^3), fine for a few thousand
    points); ``"sinkhorn"`` the entropic problem with regularisation ``reg`` relative to the mean cost.
    """
    import ot

    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if method not in ("exact", "sinkhorn"):
        raise ValueError(f"method must be 'exact' or 'sinkhorn', got {method!r}")
    xa = np.asarray(x.detach().cpu(), dtype=np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, float)
    ya = np.asarray(y.detach().cpu(), dtype=np.float64) if isinstance(y, torch.Tensor) else np.asarray(y, float)
    if xa.ndim != 2 or ya.ndim != 2 or xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have shapes (n, d) and (m, d), got {xa.shape} and {ya.shape}")
    M = ot.dist(xa, ya, metric="sqeuclidean" if p == 2 else "euclidean")
    a = np.full(xa.shape[0], 1.0 / xa.shape[0])
    b = np.full(ya.shape[0], 1.0 / ya.shape[0])
    if method == "exact":
        cost = ot.emd2(a, b, M, numItermax=10_000_000)
    else:
        scale = M.mean()
        cost = ot.sinkhorn2(a, b, M / scale, _scalar("reg", reg, positive=True), numItermax=10000) * scale
    return float(cost) ** (1.0 / p)


def sample_quality(samples: torch.Tensor, data: GaussianMixture, reference: torch.Tensor, *,
                   method: str = "exact") -> dict[str, float]:
    """Two scores of ``samples`` (n, d): W2 to ``reference`` data samples and the average -log p_data.

    Samples that left the region where floats hold p_data count as they are (a large -log p).
    """
    nll = -data.log_prob(samples.to(dtype=data.dtype, device=data.device))
    return {"W2": wasserstein_distance(samples, reference, p=2, method=method), "nll": float(nll.mean())}
