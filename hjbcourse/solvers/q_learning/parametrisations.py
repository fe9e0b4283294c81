"""What :class:`~hjbcourse.QLearning` learns: values, q-functions and policy means (``"mlp"``, ``"quadratic"``,
``"power"``, ``"linear"``, ``"constant"``), the normalised Gibbs q-function, and the map from the Gaussian's
coordinates u to actions in the box."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...nets import MLP
from ...problems import squash_to_bounds

__all__ = ["make_value_net", "Critic", "Mean", "GibbsQ", "ActionMap"]


class _Quadratic(nn.Module):
    """(B, n) -> (B, 1): scale * (w0 + w . z + sum_{i<=j} W_ij z_i z_j): every quadratic in z."""

    def __init__(self, n: int, scale: float):
        super().__init__()
        self.iu = torch.triu_indices(n, n)
        self.w0 = nn.Parameter(torch.zeros(1))
        self.w1 = nn.Parameter(torch.zeros(n))
        self.w2 = nn.Parameter(torch.zeros(self.iu.shape[1]))
        self.scale = scale

    def forward(self, z):
        n = z.shape[1]
        iu = (self.iu[0].to(z.device), self.iu[1].to(z.device))
        W = torch.zeros(n, n, dtype=z.dtype, device=z.device).index_put(iu, self.w2)
        return self.scale * (self.w0 + z @ self.w1 + ((z @ W) * z).sum(-1)).unsqueeze(-1)


class _Power(nn.Module):
    """(B, 1) [+ (B, k)] -> (B, 1): scale * (c0 + x^e (c1 / e + quadratic in a)); without a: scale * c1 x^e / e.

    The value has no constant: on a domain such as [0.5, 2] a constant and x^e are nearly collinear, and the
    constant is the direction the TD conditions fix most slowly (at the rate rho)."""

    def __init__(self, exponent: float, scale: float, action_dim: int = 0):
        super().__init__()
        self.e = float(exponent)
        self.scale = scale
        self.c = nn.Parameter(torch.zeros(2))
        self.quad = _Quadratic(action_dim, 1.0) if action_dim else None

    def forward(self, x, a=None):
        xe = x[:, :1].clamp_min(1e-8).pow(self.e)
        if self.quad is None:
            return self.scale * xe * (self.c[1] / self.e)
        return self.scale * (self.c[0] + xe * (self.c[1] / self.e + self.quad(a)))


class Mean(nn.Module):
    """(B, d) -> (B, k): the policy mean, ``"mlp"``, ``"linear"`` (W x + b) or ``"constant"`` (b)."""

    def __init__(self, kind: str, env, width: int, depth: int, init):
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.net = MLP(env.state_dim, env.action_dim, width, depth, "tanh", env.state_low, env.state_high)
            with torch.no_grad():
                self.net.out.weight.mul_(0.1)
                self.net.out.bias.copy_(init)
        else:
            self.b = nn.Parameter(init.clone())
            if kind == "linear":
                self.W = nn.Parameter(torch.zeros(env.action_dim, env.state_dim))

    def forward(self, x):
        if self.kind == "mlp":
            return self.net(x)
        out = self.b.expand(x.shape[0], -1)
        return out + x @ self.W.T if self.kind == "linear" else out


def make_value_net(cfg, env, scale: float) -> nn.Module:
    """(B, d) -> (B, 1): q-learning's J_theta, of the family ``cfg.value`` and of size ``scale``."""
    if cfg.value == "quadratic":
        return _Quadratic(env.state_dim, scale)
    if cfg.value == "power":
        if env.state_dim != 1:
            raise ValueError(f"value='power' is for one-dimensional states, the env has state_dim={env.state_dim}")
        return _Power(cfg.power_exponent, scale)
    return MLP(env.state_dim, 1, cfg.width, cfg.depth, "tanh", env.state_low, env.state_high, out_scale=scale)


class Critic(nn.Module):
    """(B, d), (B, k) -> (B, 1): the actor-critic's Q_psi(x, a)."""

    def __init__(self, cfg, env, scale: float, a_center, a_scale):
        super().__init__()
        self.kind = cfg.value
        self.register_buffer("a_center", a_center)
        self.register_buffer("a_scale", a_scale)
        if cfg.value == "quadratic":
            self.net = _Quadratic(env.state_dim + env.action_dim, scale)
        elif cfg.value == "power":
            self.net = _Power(cfg.power_exponent, scale, env.action_dim)
        else:
            lo = torch.cat([env.state_low.double().cpu(), a_center.double() - 3 * a_scale.double()])
            hi = torch.cat([env.state_high.double().cpu(), a_center.double() + 3 * a_scale.double()])
            self.net = MLP(env.state_dim + env.action_dim, 1, cfg.width, cfg.depth, "tanh", lo, hi, out_scale=scale)

    def forward(self, x, a):
        if self.kind == "power":
            return self.net(x, (a - self.a_center) / self.a_scale)
        return self.net(torch.cat([x, a], dim=-1))


class GibbsQ:
    """(B, d), (B, k) -> (B, 1): q_psi(x, u) = -1/2 (u - m(x))' Lam (u - m(x)) + gamma/2 log det(Lam / (2 pi gamma))
    (module docstring of :mod:`hjbcourse.solvers.q_learning`), Lam = ``lam0 * exp(log_lam)``; for the power
    family Lam(x) = Lam x^e, since its q scales like its J."""

    def __init__(self, mean_net: nn.Module, lam0: torch.Tensor, log_lam: nn.Parameter, temperature: float,
                 exponent: float | None):
        self.mean_net, self.lam0, self.log_lam = mean_net, lam0, log_lam
        self.gamma, self.e = temperature, exponent

    def precision(self) -> torch.Tensor:
        """(k,): the constant diagonal of Lam."""
        return self.lam0 * self.log_lam.exp()

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k) or (k,): the standard deviations of the Gibbs policy N(m, gamma Lam(x)^{-1})."""
        lam = self.precision()
        if self.e is not None:
            lam = lam * x[:, :1].clamp_min(1e-8).pow(self.e)
        return (self.gamma / lam).sqrt()

    def __call__(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        gam, k = self.gamma, self.log_lam.shape[0]
        lam = self.precision()
        quad = -0.5 * ((a - self.mean_net(x)) ** 2 * lam).sum(-1, keepdim=True)
        norm = 0.5 * gam * torch.log(lam / (2 * math.pi * gam)).sum()
        if self.e is None:
            return quad + norm
        xe = x[:, :1].clamp_min(1e-8).pow(self.e)
        return xe * quad + norm + 0.5 * gam * k * torch.log(xe)


class ActionMap:
    """(B, k) -> (B, k): u -> a, squashed into the box (:func:`hjbcourse.problems.squash_to_bounds`) where
    ``mask`` is true, clipped to it elsewhere."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor):
        self.low, self.high, self.mask = low, high, mask

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        lo, hi, m = self.low.to(u), self.high.to(u), self.mask.to(u.device)
        return torch.where(m, squash_to_bounds(u, lo, hi), torch.maximum(torch.minimum(u, hi), lo))

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        """(k,) -> (k,): the u of an action strictly inside the box."""
        lo_f, hi_f = torch.isfinite(self.low), torch.isfinite(self.high)
        out = a.clone()
        for i in range(a.shape[0]):
            if not self.mask[i]:
                continue
            if lo_f[i] and hi_f[i]:
                out[i] = torch.logit((a[i] - self.low[i]) / (self.high[i] - self.low[i]))
            elif lo_f[i]:
                out[i] = torch.log(torch.expm1(a[i] - self.low[i]))
            elif hi_f[i]:
                out[i] = -torch.log(torch.expm1(self.high[i] - a[i]))
        return out
