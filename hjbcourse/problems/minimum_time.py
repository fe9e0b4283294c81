"""A problem whose value function has a kink: leave an interval as fast as possible (book: chapter "The
deterministic HJB", viscosity solutions)."""
from __future__ import annotations

import torch

from .._checks import _scalar
from .base import ControlProblem

__all__ = ["MinimumTimeProblem"]


class MinimumTimeProblem(ControlProblem):
    """Leave the interval (-L, L) as fast as possible: dX = a dt, |a| <= 1, reward -1 until exit, V = 0 at +-L.

    The value V(x) = -(1 - e^{-rho (L - |x|)}) / rho is Lipschitz but not differentiable at x = 0, where both
    exits are equally far: the classical HJB rho V = -1 + |V'| holds everywhere except there, and V is its
    viscosity solution (book: chapter "The deterministic HJB"). Solve it with the boundary value 0 at both
    ends: ``FiniteDifferenceSolver(p, boundary=0.0)``.
    """

    name = "minimum time"

    def __init__(self, rho=1.0, half_width=1.0):
        L = _scalar("half_width", half_width, positive=True)
        super().__init__(1, 1, 1, rho, (-L, L), action_low=[-1.0], action_high=[1.0], additive_noise=True)
        self.half_width = L

    def drift(self, x, a):
        return a.to(x)

    def diffusion(self, x, a):
        return torch.zeros(x.shape[0], 1, 1, dtype=x.dtype, device=x.device)

    def reward(self, x, a):
        return -torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)

    def exact(self):
        from ..exact import MinimumTimeSolution

        return MinimumTimeSolution(self.half_width, self.rho)
