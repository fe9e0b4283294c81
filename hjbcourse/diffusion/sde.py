"""The variance-preserving SDE of the chapter "Diffusion models as control", in forward and in reverse time.

Every time-dependent map takes time first, named ``t``: forward time (the noise level) for the forward SDE
(:meth:`VPSDE.drift`, :meth:`VPSDE.diffusion`, the schedule), reverse time for the ``reverse_*`` maps, with
forward time ``T - t``.
"""
from __future__ import annotations

import math

import torch

from .._checks import _positive_int, _scalar, device as _device, floating_dtype, floating_tensor, step_count, time_in
from ..runtime import _cpu_threads, make_generator

__all__ = ["VPSDE"]


class VPSDE:
    """The variance-preserving (Ornstein-Uhlenbeck) SDE dY = -1/2 beta(t) Y dt + sqrt(beta(t)) dB, forward time t.

    ``beta(t) = beta_min + (beta_max - beta_min) t / T`` on ``[0, T]``. Its transition is Gaussian:
    ``Y_t | Y_0 ~ N(alpha(t) Y_0, (1 - alpha(t)^2) I)`` with ``alpha(t) = exp(-1/2 int_0^t beta)``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _scalar("beta_min", beta_min, positive=True)
        self.beta_max = _scalar("beta_max", beta_max, positive=True)
        self.T = _scalar("T", T, positive=True)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_max={beta_max} < beta_min={beta_min}")

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def check_time(self, t, name: str = "t") -> float:
        """``t`` as a float, or a ``ValueError`` naming ``name`` when it is not a number in [0, T] (a
        ``TypeError`` for a bool, string or complex number)."""
        return time_in(name, t, self.T)

    # forward time t -------------------------------------------------------------------------------------------
    def beta(self, t):
        """beta(t), for a float or a tensor of forward times."""
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def int_beta(self, t):
        """int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / (2 T)."""
        return self.beta_min * t + (self.beta_max - self.beta_min) * t * t / (2 * self.T)

    def alpha(self, t):
        """The mean scale alpha(t) = exp(-1/2 int_0^t beta)."""
        b = self.int_beta(t)
        return torch.exp(-0.5 * b) if isinstance(b, torch.Tensor) else math.exp(-0.5 * b)

    def variance(self, t):
        """The added variance 1 - alpha(t)^2 (computed as -expm1 to stay accurate for small t)."""
        b = self.int_beta(t)
        return -torch.expm1(-b) if isinstance(b, torch.Tensor) else -math.expm1(-b)

    def drift(self, t, x: torch.Tensor) -> torch.Tensor:
        """f(t, x) = -1/2 beta(t) x at forward time t; (B, d) -> (B, d)."""
        return -0.5 * self.beta(t) * x

    def diffusion(self, t):
        """sigma(t) = sqrt(beta(t)) at forward time t (a scalar times the identity)."""
        b = self.beta(t)
        return torch.sqrt(b) if isinstance(b, torch.Tensor) else math.sqrt(b)

    # reverse time t, forward time T - t -------------------------------------------------------------------------
    def reverse_drift(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """mu(t, x) = -f(T - t, x) = +1/2 beta(T - t) x at reverse time t; (B, d) -> (B, d)."""
        return 0.5 * self.beta(self.T - t) * x

    def reverse_diffusion(self, t: float) -> float:
        """Sigma(t) = sigma(T - t) = sqrt(beta(T - t)) at reverse time t (times the identity)."""
        return math.sqrt(self.beta(self.T - t))

    def reverse_drift_divergence(self, t: float, d: int) -> float:
        """div mu(t, x) = d/2 beta(T - t) at reverse time t, the same for every x."""
        return 0.5 * d * self.beta(self.T - t)

    def prior_sample(self, n: int, d: int, generator=None, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """n draws from N(0, I), the stationary law that p_T approaches; (n, d)."""
        n, d = _positive_int("n", n), _positive_int("d", d)
        dtype, device = floating_dtype("dtype", dtype), _device("device", device)
        g = make_generator(generator, device, "generator")
        return torch.randn(n, d, generator=g, dtype=dtype, device=device)

    def simulate(self, x0: torch.Tensor, t: float, n_steps: int = 1000, generator=None,
                 max_steps: int | None = None) -> torch.Tensor:
        """Euler-Maruyama for the forward SDE from ``x0`` (B, d) at time 0 to forward time ``t``; returns (B, d).

        A brute-force reference for :meth:`GaussianMixture.marginal` (its O(dt) bias is below Monte Carlo
        error at the default step). ``max_steps``: the largest ``n_steps`` allowed (None: 1,000,000).
        """
        floating_tensor("x0", x0, (None, None))
        t = self.check_time(t, "t")
        n_steps = step_count("n_steps", _positive_int("n_steps", n_steps), max_steps)
        g = make_generator(generator, x0.device, "generator")
        x = x0.clone()
        dt = t / n_steps
        with torch.no_grad(), _cpu_threads(1 if x.device.type == "cpu" else None):
            for i in range(n_steps):
                ti = i * dt
                dw = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device) * math.sqrt(dt)
                x = x + self.drift(ti, x) * dt + self.diffusion(ti) * dw
        return x
