"""Policy improvement: gradient ascent of the actor on Q(x, a) = (r + L^a V) / rho (book: eq. (ch04-improve))."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ...generator import generator_from_derivatives
from ...problems import ControlProblem
from ...training import check_finite
from .networks import GreedyPolicy

__all__ = ["improve_policy", "greedy_objective"]


def _derivatives(value, x, need_hessian: bool):
    """V's gradient (B, d) and Hessian (B, d, d) at x, detached; the Hessian is zero when not needed."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(value(xg).sum(), xg, create_graph=need_hessian)
        if need_hessian:
            d = x.shape[1]
            rows = [torch.autograd.grad(g[:, i].sum(), xg, retain_graph=i < d - 1)[0] for i in range(d)]
            H = torch.stack(rows, dim=1).detach()
        else:
            H = torch.zeros(x.shape[0], x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
    return g.detach(), H


def improve_policy(problem: ControlProblem, policy: nn.Module, value: Callable, x: torch.Tensor,
                   optimizer: torch.optim.Optimizer, steps: int, iteration: int = 0) -> float:
    """Gradient ascent of the policy on Q(x, a) = (r(x, a) + L^a V(x)) / rho averaged over ``x``
    (book: eq. (ch04-improve)), with grad V and Hess V computed once and detached; returns the final mean Q.

    The Hessian is skipped when the noise is additive (then its term does not depend on the action).
    """
    grad_v, hess_v = _derivatives(value, x, need_hessian=not problem.additive_noise)
    x = x.detach()
    q = None
    for _ in range(steps):
        a = policy(x)
        q = ((problem.reward(x, a) + generator_from_derivatives(grad_v, hess_v, problem.drift(x, a),
                                                                problem.diffusion(x, a))) / problem.rho).mean()
        check_finite(q, "the policy objective", iteration)
        optimizer.zero_grad(set_to_none=True)
        (-q).backward()
        optimizer.step()
    with torch.no_grad():
        a = policy(x)
        q = ((problem.reward(x, a) + generator_from_derivatives(grad_v, hess_v, problem.drift(x, a),
                                                                problem.diffusion(x, a))) / problem.rho).mean()
    check_finite(q, "the policy objective", iteration)
    return float(q)



def greedy_objective(problem: ControlProblem, value: Callable, x: torch.Tensor, iteration: int = 0) -> float:
    """The mean of Q(x, a*) = (r(x, a*) + L^{a*} V(x)) / rho over ``x`` for the closed-form greedy action a* of
    ``value`` (:class:`GreedyPolicy`): what ``policy="greedy"`` logs in
    place of :func:`improve_policy`'s objective. Raises ``DivergenceError`` on NaN/inf."""
    grad_v, hess_v = _derivatives(value, x, need_hessian=not problem.additive_noise)
    a = GreedyPolicy(problem, value)(x)
    q = float(((problem.reward(x, a) + generator_from_derivatives(grad_v, hess_v, problem.drift(x, a),
                                                                   problem.diffusion(x, a))) / problem.rho).mean())
    check_finite(q, "the policy objective", iteration)
    return q
