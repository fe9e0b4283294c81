"""How good a learned score and its samples are: the p_t-weighted relative error of a score against the exact one
of Gaussian-mixture data, and the Wasserstein distance of samples to data (POT is imported only when asked)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .._checks import _positive_int, _scalar, choice, integer
from .._checks import samples as samples_of
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
    if not isinstance(data, GaussianMixture):
        raise ValueError(f"data must be a GaussianMixture, got {type(data).__name__}")
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
    times = [sde.check_time(t, "times") for t in (times.reshape(-1).tolist() if isinstance(times, torch.Tensor)
                                                  else times)]
    if not times:
        raise ValueError("times must hold at least one time")
    n = _positive_int("n", n)
    g = make_generator(generator, data.device, "generator")
    out = []
    with _cpu_threads(1 if data.device.type == "cpu" else None):
        for t in times:
            pt = data.marginal(sde, t)
            x = pt.sample(n, generator=g)
            exact = pt.score(x)
            approx = score_fn(t, x)
            if not isinstance(approx, torch.Tensor) or approx.shape != exact.shape:
                raise ValueError(f"score_fn must map (B, d) -> (B, d), got {getattr(approx, 'shape', approx)!r}")
            approx = approx.to(exact.dtype)
            if not bool(torch.isfinite(approx).all()):
                raise ValueError(f"score_fn returned NaN or inf at t={t}: a diverged score cannot be scored")
            out.append(torch.sqrt(((approx - exact) ** 2).sum() / (exact ** 2).sum()))
    return torch.stack(out).cpu()


def wasserstein_distance(x: torch.Tensor, y: torch.Tensor, *, p: int = 2, method: str = "exact",
                         reg: float = 0.01) -> float:
    """W_p between the empirical measures of x (n, d) and y (m, d), with POT.

    ``method="exact"`` solves the transport linear program (``ot.emd2``; O(n^3), fine for a few thousand
    points); ``"sinkhorn"`` the entropic problem with regularisation ``reg`` relative to the mean cost.
    Samples that hold NaN or inf, or no point at all, raise a ``ValueError``: a distance to them is not a number
    (POT returned 0.0 for NaN samples, the score of a perfect sampler).
    """
    if integer("p", p) not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    choice("method", method, ("exact", "sinkhorn"))
    xa = samples_of("x", x)
    ya = samples_of("y", y, xa.shape[1])
    reg = _scalar("reg", reg, positive=True)
    import ot

    M = ot.dist(xa, ya, metric="sqeuclidean" if p == 2 else "euclidean")
    a = np.full(xa.shape[0], 1.0 / xa.shape[0])
    b = np.full(ya.shape[0], 1.0 / ya.shape[0])
    if method == "exact":
        cost = ot.emd2(a, b, M, numItermax=10_000_000)
    else:
        scale = M.mean()
        cost = ot.sinkhorn2(a, b, M / scale, reg, numItermax=10000) * scale if scale > 0 else 0.0
    cost = float(cost)
    if not (cost >= 0 or abs(cost) < 1e-12) or not np.isfinite(cost):
        raise ValueError(f"the optimal-transport solver returned {cost}: the samples cannot be compared")
    return max(cost, 0.0) ** (1.0 / p)


def sample_quality(samples: torch.Tensor, data: GaussianMixture, reference: torch.Tensor, *,
                   method: str = "exact") -> dict[str, float]:
    """Two scores of ``samples`` (n, d): W2 to ``reference`` data samples and the average -log p_data.

    Samples that left the region where floats hold p_data count as they are (a large -log p); NaN or infinite
    samples, or none, raise a ``ValueError`` naming ``samples``.
    """
    if not isinstance(data, GaussianMixture):
        raise ValueError(f"data must be a GaussianMixture, got {type(data).__name__}")
    checked = samples_of("samples", samples, data.dim)
    samples_of("reference", reference, data.dim)
    choice("method", method, ("exact", "sinkhorn"))
    nll = -data.log_prob(torch.as_tensor(checked, dtype=data.dtype, device=data.device))
    return {"W2": wasserstein_distance(samples, reference, p=2, method=method), "nll": float(nll.mean())}
