"""Diagnostics shared by every solver: errors against a closed form, the sampled HJB residual, and readers
of the constants (Riccati matrix, feedback gain, Merton's fractions) off learned networks.

These functions depend only on the problem layer and the generator, never on a solver, so that every
solver (policy iteration, q-learning, ...) can import them to log its history (book: chapter "Policy
iteration", section "Diagnostics").

Conventions: ``value`` is a callable (B, d) -> (B, 1), ``policy`` a callable (B, d) -> (B, k); a *solution* is
any object with ``value(x)`` and ``policy(x)`` methods (a learned solution or a closed form).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .generator import generator as _generator
from .problems import ControlProblem, Merton, StochasticLQR

__all__ = [
    "relative_l2",
    "relative_error",
    "relative_sup",
    "hjb_residual",
    "hjb_residual_norm",
    "fit_quadratic_form",
    "fit_linear_gain",
    "errors_against_exact",
]


def _as_tensor(v) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(v, dtype=np.float64))


def relative_l2(pred, true) -> float:
    """||pred - true||_2 / ||true||_2 over all entries (tensors or arrays of the same shape).

    On a set of sample points this is the relative L2 error of a function, with the points as quadrature.
    """
    p, t = _as_tensor(pred), _as_tensor(true)
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
    p, t = _as_tensor(pred), _as_tensor(true)
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    denom = float(t.abs().max())
    if denom == 0.0:
        raise ValueError("true is zero everywhere: a relative error is undefined")
    return float((p - t).abs().max()) / denom


def hjb_residual(problem: ControlProblem, value: Callable, policy: Callable, x: torch.Tensor,
                 method: str = "forward") -> torch.Tensor:
    """(B, d) -> (B, 1): rho V(x) - r(x, a) - L^a V(x) with a = policy(x) (book: eq. (hjb)), detached.

    At the optimum, with the greedy action, this vanishes. For a learned pair it measures how far the value
    is from solving the HJB equation along the policy that is actually used.
    """
    problem.check_state(x)
    with torch.no_grad():
        a = policy(x)
    problem.check_action(a, x.shape[0], "policy(x)")
    x = x.detach().requires_grad_(True)
    f, S = problem.drift(x.detach(), a), problem.diffusion(x.detach(), a)
    LV = _generator(value, x, f, S, method=method, create_graph=False)
    with torch.no_grad():
        res = problem.rho * value(x) - problem.reward(x, a) - LV
    return res.detach()


def hjb_residual_norm(problem: ControlProblem, value: Callable, policy: Callable, x: torch.Tensor,
                      method: str = "forward") -> float:
    """The root-mean-square HJB residual over ``x``, relative to the size of the equation's terms:
    RMS(rho V - r - L^a V) / sqrt(RMS(rho V)^2 + RMS(r)^2).

    A dimensionless number: 0.01 means the equation is violated by about 1% of the size of its terms. (The
    terms r and L^a V can be much larger than rho V and cancel, as in the LQR far from the origin, so
    dividing by rho V alone would overstate the violation.)
    """
    res = hjb_residual(problem, value, policy, x, method)
    with torch.no_grad():
        a = policy(x)
        scale = ((problem.rho * value(x)).pow(2).mean() + problem.reward(x, a).pow(2).mean()).sqrt()
    return float(res.pow(2).mean().sqrt() / scale.clamp_min(1e-12))


def fit_quadratic_form(value: Callable, x: torch.Tensor):
    """Least-squares fit of V(x) ~ -1/2 x'Px + b'x - c over the points ``x`` (B, d); returns (P, b, c).

    ``P`` (d, d) symmetric, ``b`` (d,), ``c`` a float, all float64. This is how the book reads the Riccati
    matrix off a learned value network: a global fit over the region, not a Hessian at a single point.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (batch, d), got {tuple(x.shape)}")
    with torch.no_grad():
        v = value(x).detach().to(torch.float64).cpu().reshape(-1)
    X = x.detach().to(torch.float64).cpu()
    B, d = X.shape
    iu = torch.triu_indices(d, d)
    # features: -1/2 x_i x_j (doubled off the diagonal, since P is symmetric), x_i, -1
    quad = X[:, iu[0]] * X[:, iu[1]]
    weight = torch.where(iu[0] == iu[1], -0.5, -1.0).to(torch.float64)
    feats = torch.cat([quad * weight, X, -torch.ones(B, 1, dtype=torch.float64)], dim=1)
    if B < feats.shape[1]:
        raise ValueError(f"x must hold at least {feats.shape[1]} points to fit a quadratic in d={d}, got {B}")
    coef = torch.linalg.lstsq(feats, v.unsqueeze(1)).solution.reshape(-1)
    n_q = iu.shape[1]
    P = torch.zeros(d, d, dtype=torch.float64)
    P[iu[0], iu[1]] = coef[:n_q]
    P = P + P.T - torch.diag(torch.diagonal(P))
    return P, coef[n_q:n_q + d].clone(), float(coef[-1])


def fit_linear_gain(policy: Callable, x: torch.Tensor):
    """Least-squares fit of a(x) ~ -K x + k0 over the points ``x`` (B, d); returns (K (k, d), k0 (k,))."""
    if x.ndim != 2:
        raise ValueError(f"x must have shape (batch, d), got {tuple(x.shape)}")
    with torch.no_grad():
        a = policy(x).detach().to(torch.float64).cpu()
    X = x.detach().to(torch.float64).cpu()
    feats = torch.cat([-X, torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(feats, a).solution                       # (d + 1, k)
    return coef[:-1].T.contiguous(), coef[-1].clone()


def errors_against_exact(solution, problem: ControlProblem, x: torch.Tensor, exact=None) -> dict[str, float]:
    """Errors of a solution (``value(x)``, ``policy(x)``) against ``problem.exact()`` on the points ``x``.

    Always: ``value_rel_l2``, ``value_rel_sup``, ``policy_rel_l2`` and ``policy_rel_l2_<j>`` per action
    coordinate. For a :class:`~hjbcourse.StochasticLQR` also ``P_rel`` and ``K_rel`` (relative Frobenius
    errors of the matrices read off by :func:`fit_quadratic_form` and :func:`fit_linear_gain` over ``x``).
    For :class:`~hjbcourse.Merton` also ``pi_rel`` and ``k_rel`` (relative L2 of the fractions over ``x``)
    and ``pi_mean``, ``k_mean``. Pass ``exact`` to avoid recomputing the closed form.
    """
    problem.check_state(x)
    ex = problem.exact() if exact is None else exact
    with torch.no_grad():
        v, v_star = solution.value(x), ex.value(x)
        a, a_star = solution.policy(x), ex.policy(x)
    out = {
        "value_rel_l2": relative_l2(v, v_star),
        "value_rel_sup": relative_sup(v, v_star),
        "policy_rel_l2": relative_l2(a, a_star),
    }
    if a.shape[1] > 1:
        for j in range(a.shape[1]):
            out[f"policy_rel_l2_{j}"] = relative_l2(a[:, j], a_star[:, j])
    if isinstance(problem, StochasticLQR) and x.shape[0] > (problem.state_dim + 1) * (problem.state_dim + 2) // 2:
        P, _, _ = fit_quadratic_form(solution.value, x)
        K, _ = fit_linear_gain(solution.policy, x)
        out["P_rel"] = relative_error(P, ex.P)
        out["K_rel"] = relative_error(K, ex.K)
    if isinstance(problem, Merton):
        out["pi_rel"] = relative_l2(a[:, 0], a_star[:, 0])
        out["k_rel"] = relative_l2(a[:, 1], a_star[:, 1])
        out["pi_mean"] = float(a[:, 0].mean())
        out["k_mean"] = float(a[:, 1].mean())
    for k_, v_ in out.items():
        if not math.isfinite(v_):
            raise ValueError(f"the error {k_} is not finite: the solution returns NaN or inf on x")
    return out
