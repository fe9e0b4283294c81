"""Merton's portfolio and consumption problem (book: chapter "Merton", Appendix B)."""
from __future__ import annotations

import math

import torch

from .._checks import _domain, _scalar, numbers_tuple
from .base import ControlProblem

__all__ = ["Merton"]


class Merton(ControlProblem):
    """Merton's portfolio and consumption problem (book: Merton chapter).

    Wealth X > 0 (B, 1); actions (B, 2) = [pi, k]: the risky fraction and consumption per unit of wealth.
    dX = (r + pi (mu - r) - k) X dt + pi sigma X dW, reward u(k X) with CRRA utility
    u(c) = c^{1-gamma} / (1 - gamma), or log c when gamma == 1. Lifetime utility is finite only when
    rho - (1 - gamma) M > 0 with M = r + (mu - r)^2 / (2 gamma sigma^2); otherwise a ``ValueError``.
    ``pi_bounds`` and ``k_bounds`` are pairs (low, high) of finite numbers, with 0 <= k's low end. States are
    wealths: :meth:`check_state` refuses wealth <= 0.
    """

    name = "Merton"
    state_space = (0.0, math.inf)

    def __init__(self, r=0.03, mu=0.08, sigma=0.2, gamma=2.0, rho=0.05, domain=(0.5, 2.0),
                 pi_bounds=(-1.0, 3.0), k_bounds=(1e-3, 1.0)):
        self.r = _scalar("r", r)
        self.mu = _scalar("mu", mu)
        self.sigma = _scalar("sigma", sigma, positive=True)
        self.gamma = _scalar("gamma", gamma, positive=True)
        rho_v = _scalar("rho", rho, positive=True)
        M = self.r + (self.mu - self.r) ** 2 / (2 * self.gamma * self.sigma ** 2)
        if not rho_v - (1 - self.gamma) * M > 0:
            raise ValueError(f"rho - (1-gamma) M must be positive for lifetime utility to be finite, got "
                             f"rho - (1-gamma) M = {rho_v - (1 - self.gamma) * M:.6g} (rho={rho_v}, gamma={self.gamma}, M={M:.6g})")
        lo, _ = _domain(domain, 1)
        if not float(lo) > 0:
            raise ValueError(f"domain must lie in positive wealth, got {domain!r}")
        pi_bounds, k_bounds = numbers_tuple("pi_bounds", pi_bounds, 2), numbers_tuple("k_bounds", k_bounds, 2)
        if not (pi_bounds[0] < pi_bounds[1]) or not (0 <= k_bounds[0] < k_bounds[1]):
            raise ValueError(f"pi_bounds and k_bounds must be increasing with k_bounds[0] >= 0, got {pi_bounds}, {k_bounds}")
        super().__init__(1, 2, 1, rho_v, domain, action_low=[pi_bounds[0], k_bounds[0]],
                         action_high=[pi_bounds[1], k_bounds[1]])
        self.M = M
        self.log_utility = self.gamma == 1.0

    def utility(self, c: torch.Tensor) -> torch.Tensor:
        """CRRA utility of consumption c > 0 (log when gamma == 1)."""
        c = c.clamp_min(1e-12)
        if self.log_utility:
            return torch.log(c)
        return c.pow(1 - self.gamma) / (1 - self.gamma)

    def drift(self, x, a):
        pi, k = a[:, 0:1], a[:, 1:2]
        return (self.r + pi * (self.mu - self.r) - k) * x

    def diffusion(self, x, a):
        return (a[:, 0:1] * self.sigma * x).unsqueeze(-1)

    def reward(self, x, a):
        return self.utility(a[:, 1:2] * x)

    def exact(self):
        from ..exact import solve_merton

        return solve_merton(self)
