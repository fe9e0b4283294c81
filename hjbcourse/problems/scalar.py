"""Scalar problems beyond the LQR of the course: state-dependent noise (with a closed form), a bounded action
that saturates and a double-well drift (without one; scored against the finite-difference solver).

All three have the reward -1/2 (q x^2 + r_a a^2) and a control that enters the drift linearly, dX = (f0(x) +
beta a) dt + s(x) dW, so the greedy action is available in closed form.
"""
from __future__ import annotations

import torch

from .._checks import _scalar
from .base import ControlProblem

__all__ = ["StateNoiseLQ", "SaturatedLQ", "DoubleWell"]


class _ScalarQuadraticCost(ControlProblem):
    """dX = (f0(x) + beta a) dt + s(x) dW, r = -1/2 (q x^2 + r_a a^2): subclasses define f0 and s."""

    def __init__(self, beta, q, r_a, rho, domain, action_low=None, action_high=None, additive_noise=False):
        self.beta = _scalar("beta", beta)
        if self.beta == 0:
            raise ValueError("beta must be non-zero: with beta = 0 the action does not move the state")
        self.q = _scalar("q", q, positive=True)
        self.r_a = _scalar("r_a", r_a, positive=True)
        super().__init__(1, 1, 1, rho, domain, action_low, action_high, additive_noise=additive_noise)

    def f0(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def drift(self, x, a):
        return self.f0(x) + self.beta * a

    def diffusion(self, x, a):
        return self.noise(x).unsqueeze(-1)

    def reward(self, x, a):
        return -0.5 * (self.q * x * x + self.r_a * a * a)


class StateNoiseLQ(_ScalarQuadraticCost):
    """dX = (alpha X + beta a) dt + (s0 + s1 X) dW, r = -1/2 (q x^2 + r_a a^2), discount rho (book: Appendix A).

    The noise grows with the state, yet the value is still quadratic: V = -1/2 P x^2 - b x - c with
    (beta^2 / r_a) P^2 + (rho - 2 alpha - s1^2) P - q = 0 (:func:`hjbcourse.exact.solve_state_noise_lq`,
    derived in :func:`hjbcourse.derivations.lq_state_noise`).
    """

    name = "LQ with state-dependent noise"

    def __init__(self, alpha=-0.3, beta=1.0, q=1.0, r_a=0.2, s0=0.3, s1=0.2, rho=0.1, domain=(-2.0, 2.0)):
        self.alpha = _scalar("alpha", alpha)
        self.s0 = _scalar("s0", s0)
        self.s1 = _scalar("s1", s1)
        super().__init__(beta, q, r_a, rho, domain, additive_noise=self.s1 == 0)

    def f0(self, x):
        return self.alpha * x

    def noise(self, x):
        return self.s0 + self.s1 * x

    def exact(self):
        from ..exact import solve_state_noise_lq

        return solve_state_noise_lq(self)


class SaturatedLQ(_ScalarQuadraticCost):
    """The scalar LQR with a bounded action |a| <= ``a_max``: dX = (alpha X + beta a) dt + sigma dW. Away from
    the origin the optimal action saturates, so the value is no longer quadratic (no closed form)."""

    name = "LQ with a saturating action"

    def __init__(self, alpha=-0.2, beta=1.0, q=1.0, r_a=0.1, sigma=0.3, a_max=0.5, rho=0.1, domain=(-2.0, 2.0)):
        self.alpha = _scalar("alpha", alpha)
        self.sigma = _scalar("sigma", sigma, positive=True)
        self.a_max = _scalar("a_max", a_max, positive=True)
        super().__init__(beta, q, r_a, rho, domain, [-self.a_max], [self.a_max], additive_noise=True)

    def f0(self, x):
        return self.alpha * x

    def noise(self, x):
        return torch.full_like(x, self.sigma)


class DoubleWell(_ScalarQuadraticCost):
    """A double-well drift, dX = (k (X - X^3) + beta a) dt + sigma dW, with the cost of the LQR: the control
    holds the state near the unstable middle x = 0 against the pull of the wells at +-1 (no closed form)."""

    name = "double well"

    def __init__(self, k=1.0, beta=1.0, q=1.0, r_a=0.2, sigma=0.4, rho=0.1, domain=(-2.0, 2.0)):
        self.k = _scalar("k", k, positive=True)
        self.sigma = _scalar("sigma", sigma, positive=True)
        super().__init__(beta, q, r_a, rho, domain, additive_noise=True)

    def f0(self, x):
        return self.k * (x - x ** 3)

    def noise(self, x):
        return torch.full_like(x, self.sigma)
