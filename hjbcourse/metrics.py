"""Measures of error that every score uses: relative errors, least-squares readers of an LQR's P and K off a
learned value and policy, and the measured order of convergence.

Pure functions of tensors (or arrays); they depend on no problem, solver or plot, so that the closed forms in
:mod:`hjbcourse.exact`, the solvers and :mod:`hjbcourse.diagnostics` all use the same definitions.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ._checks import check_kind, floating_tensor

__all__ = ["relative_l2", "relative_error", "relative_sup", "fit_quadratic_form", "fit_linear_gain",
           "convergence_order"]


def _as_tensor(v, name: str = "value") -> torch.Tensor:
    """``v`` (tensor, array or number) as a float64 CPU tensor, refused when it is empty or holds NaN or inf: a
    relative error of a non-finite estimate is not a number to report."""
    check_kind(name, v)
    t = v.detach().to(torch.float64).cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64))
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(t)).sum())} NaN or inf entries")
    return t


def relative_l2(pred, true) -> float:
    """||pred - true||_2 / ||true||_2 over all entries (tensors or arrays of the same shape).

    On a set of sample points this is the relative L2 error of a function, with the points as quadrature.
    """
    p, t = _as_tensor(pred, "pred"), _as_tensor(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    denom = float(torch.linalg.vector_norm(t))
    if denom == 0.0:
        raise ValueError("true is zero everywhere: a relative error is undefined")
    return float(torch.linalg.vector_norm(p - t)) / denom


def relative_error(estimate, reference) -> float:
    """|estimate - reference| / |reference| for numbers; the relative Frobenius error for matrices."""
    return relative_l2(estimate, reference)


def relative_sup(pred, true) -> float:
    """max |pred - true| / max |true| over all entries."""
    p, t = _as_tensor(pred, "pred"), _as_tensor(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    denom = float(t.abs().max())
    if denom == 0.0:
        raise ValueError("true is zero everywhere: a relative error is undefined")
    return float((p - t).abs().max()) / denom


def _lstsq(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The least-squares solution of A c = b (float64), by numpy's SVD solver: torch's LAPACK gave answers that
    differed in the 15th digit from one run to the next on the same data, and a fit must repeat exactly."""
    return torch.from_numpy(np.linalg.lstsq(A.numpy(), b.numpy(), rcond=None)[0])


def fit_quadratic_form(value: Callable, x: torch.Tensor):
    """Least-squares fit of V(x) ~ -1/2 x'Px + b'x - c over the points ``x`` (B, d); returns (P, b, c).

    ``P`` (d, d) symmetric, ``b`` (d,), ``c`` a float, all float64. This is how the book reads the Riccati
    matrix off a learned value network: a global fit over the region, not a Hessian at a single point.
    """
    floating_tensor("x", x, (None, None))
    with torch.no_grad():
        v = _as_tensor(value(x), "value(x)").reshape(-1)
    if v.numel() != x.shape[0]:
        raise ValueError(f"value(x) must return one value per row of x ({x.shape[0]}), got {v.numel()}")
    X = x.detach().to(torch.float64).cpu()
    B, d = X.shape
    iu = torch.triu_indices(d, d)
    # features: -1/2 x_i x_j (doubled off the diagonal, since P is symmetric), x_i, -1
    quad = X[:, iu[0]] * X[:, iu[1]]
    weight = torch.where(iu[0] == iu[1], -0.5, -1.0).to(torch.float64)
    feats = torch.cat([quad * weight, X, -torch.ones(B, 1, dtype=torch.float64)], dim=1)
    if B < feats.shape[1]:
        raise ValueError(f"x must hold at least {feats.shape[1]} points to fit a quadratic in d={d}, got {B}")
    coef = _lstsq(feats, v.unsqueeze(1)).reshape(-1)
    n_q = iu.shape[1]
    P = torch.zeros(d, d, dtype=torch.float64)
    P[iu[0], iu[1]] = coef[:n_q]
    P = P + P.T - torch.diag(torch.diagonal(P))
    return P, coef[n_q:n_q + d].clone(), float(coef[-1])


def fit_linear_gain(policy: Callable, x: torch.Tensor):
    """Least-squares fit of a(x) ~ -K x + k0 over the points ``x`` (B, d); returns (K (k, d), k0 (k,))."""
    floating_tensor("x", x, (None, None))
    with torch.no_grad():
        a = _as_tensor(policy(x), "policy(x)")
    if a.ndim != 2 or a.shape[0] != x.shape[0]:
        raise ValueError(f"policy(x) must return (batch, k) actions for x {tuple(x.shape)}, got {tuple(a.shape)}")
    X = x.detach().to(torch.float64).cpu()
    feats = torch.cat([-X, torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)
    coef = _lstsq(feats, a)                                              # (d + 1, k)
    return coef[:-1].T.contiguous(), coef[-1].clone()


def convergence_order(steps, errors) -> float:
    """The slope of log(error) against log(step) by least squares: the measured order of convergence.

    ``steps`` are the mesh sizes (dx, h, 1/n ...); a first-order method gives a slope near 1.
    """
    s = _as_tensor(steps, "steps").numpy().reshape(-1)
    e = _as_tensor(errors, "errors").numpy().reshape(-1)
    if s.shape != e.shape or s.size < 2:
        raise ValueError(f"steps and errors must be 1-D of the same length >= 2, got {s.shape} and {e.shape}")
    if not (np.all(s > 0) and np.all(e > 0)):
        raise ValueError(f"steps and errors must be positive to take logarithms, got {s.tolist()} and {e.tolist()}")
    if np.unique(s).size < 2:
        raise ValueError(f"steps must hold at least two different values to measure a slope, got {s.tolist()}")
    return float(np.polyfit(np.log(s), np.log(e), 1)[0])
