"""What :class:`~hjbcourse.QLearning` learns: values, q-functions and policy means (``"mlp"``, ``"quadratic"``,
``"power"``, ``"linear"``, ``"constant"``), the normalised Gibbs q-function, and the map from the Gaussian's
coordinates u to actions in the box."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...nets import MLP
from ...problems import squash_to_bounds

__all__ = ["make_value_net", "NormalisedValue", "Critic", "Mean", "Precision", "GibbsQ", "ActionMap"]


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


def make_value_net(cfg, env, scale: float, shift: float = 0.0) -> nn.Module:
    """(B, d) -> (B, 1): q-learning's J_theta, of the family ``cfg.value`` and of size ``scale``. The network
    starts flat at ``shift`` (its output layer scaled by ``cfg.value_init``): a value whose slopes are those of
    a random network would hand the policy mean random directions to climb."""
    if cfg.value == "quadratic":
        return _Quadratic(env.state_dim, scale)
    if cfg.value == "power":
        if env.state_dim != 1:
            raise ValueError(f"value='power' is for one-dimensional states, the env has state_dim={env.state_dim}")
        return _Power(cfg.power_exponent, scale)
    if not cfg.normalise_value:     # one output for the level and the variation (the ablation's row)
        return MLP(env.state_dim, 1, cfg.width, cfg.depth, "tanh", env.state_low, env.state_high, out_scale=scale)
    return NormalisedValue(env, cfg.width, cfg.depth, scale, shift, cfg.value_init)


class NormalisedValue(nn.Module):
    """(B, d) -> (B, 1): J(x) = level * c + spread * net(x), a network whose output is normalised twice over.

    The level of a discounted value (about mean r / rho) and its variation over the states (set by how fast the
    dynamics forget, which data of one step do not tell) differ by orders of magnitude when rho is small: fitted
    by one output, the variation is a small difference the optimiser's noise swamps. Here the level is a scalar
    parameter of its own (in units of ``level``, starting at ``shift``) and the network carries the variation in
    units of ``spread``, which :meth:`rescale` keeps at the spread of J over the states seen, preserving the
    outputs (the idea of van Hasselt et al.'s Pop-Art, on the value's spread)."""

    def __init__(self, env, width: int, depth: int, level: float, shift: float, init: float):
        super().__init__()
        self.net = MLP(env.state_dim, 1, width, depth, "tanh", env.state_low, env.state_high)
        with torch.no_grad():
            self.net.out.weight.mul_(init)
            self.net.out.bias.zero_()
        self.register_buffer("level", torch.tensor(float(level)))
        self.register_buffer("spread", torch.tensor(float(level)))
        self.c = nn.Parameter(torch.tensor(shift / level))

    def forward(self, x):
        return self.level * self.c + self.spread * self.net(x)

    @torch.no_grad()
    def rescale(self, x: torch.Tensor, opt: torch.optim.Optimizer, floor: float, most: float = 4.0) -> None:
        """Set ``spread`` to the standard deviation of J over the states ``x`` (at least ``floor``, by a factor
        of at most ``most`` per call), keeping J itself: the output layer and its Adam moments rescale too."""
        old = float(self.spread)
        new = float(self.net(x).std()) * old
        new = min(max(new, floor, old / most), old * most)
        f = old / new
        for p in (self.net.out.weight, self.net.out.bias):
            p.mul_(f)
            st = opt.state.get(p)
            if st:
                st["exp_avg"].mul_(1 / f)
                st["exp_avg_sq"].mul_(1 / f ** 2)
        self.spread.fill_(new)


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


class Precision(nn.Module):
    """x (B, d) -> M(x) (B, k, k) lower triangular with positive diagonal: the Gibbs precision Lam = M M'.

    ``kind``: ``"diagonal"`` (a constant positive diagonal), ``"full"`` (a constant Cholesky factor: actions
    whose costs are coupled, a non-diagonal R) or ``"state"`` (a network of x gives the factor: a q-function
    whose curvature in the action changes with the state). Every kind starts at Lam = diag(``lam0``); for the
    power family Lam(x) is multiplied by x^e (``exponent``), since its q scales like its J."""

    def __init__(self, kind: str, env, lam0: torch.Tensor, exponent: float | None = None, width: int = 32,
                 depth: int = 2):
        super().__init__()
        k = env.action_dim
        self.kind, self.k, self.e = kind, k, exponent
        self.register_buffer("sqrt_lam0", lam0.sqrt())
        self.il = torch.tril_indices(k, k, -1)
        n = k + self.il.shape[1]
        if kind == "state":
            self.net = MLP(env.state_dim, n, width, depth, "tanh", env.state_low, env.state_high)
            with torch.no_grad():
                self.net.out.weight.mul_(0.1)
                self.net.out.bias.zero_()
        else:
            self.theta = nn.Parameter(torch.zeros(k if kind == "diagonal" else n))

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n): log-diagonals then the entries below it."""
        if self.kind == "state":
            return self.net(x)
        return self.theta.expand(x.shape[0], -1)

    def factor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M (B, k, k), log det Lam (B, 1)) at the states x."""
        raw, k = self._raw(x), self.k
        logd = raw[:, :k] / 2 if self.kind == "diagonal" else raw[:, :k]   # diagonal: Lam = lam0 e^theta
        M = torch.diag_embed(logd.exp())
        if raw.shape[1] > k:
            off = torch.zeros_like(M)
            off[:, self.il[0].to(x.device), self.il[1].to(x.device)] = raw[:, k:]
            M = M + off
        M = M * self.sqrt_lam0.unsqueeze(-1)          # rows scaled: D0^{1/2} L
        logdet = 2 * (logd + self.sqrt_lam0.log()).sum(-1, keepdim=True)
        if self.e is not None:
            xe = x[:, :1].clamp_min(1e-8).pow(self.e)
            M = M * xe.sqrt().unsqueeze(-1)
            logdet = logdet + k * xe.log()
        return M, logdet

    def diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """(B, k): the diagonal of Lam(x)."""
        M, _ = self.factor(x)
        return (M * M).sum(-1)


class GibbsQ:
    """(B, d), (B, k) -> (B, 1): q_psi(x, u) = -1/2 (u - m(x))' Lam(x) (u - m(x)) + gamma/2 log det(Lam(x) /
    (2 pi gamma)) (module docstring of :mod:`hjbcourse.solvers.q_learning`), Lam(x) = M(x) M(x)' from
    :class:`Precision`."""

    def __init__(self, mean_net: nn.Module, precision: Precision, temperature: float, center: torch.Tensor):
        self.mean_net, self.prec = mean_net, precision
        self.gamma = temperature
        self.center = center.reshape(1, -1)

    def precision(self) -> torch.Tensor:
        """(k,): the diagonal of Lam at the centre of the box of states (without the power family's x^e)."""
        p = next(self.prec.parameters())
        e, self.prec.e = self.prec.e, None
        try:
            return self.prec.diagonal(self.center.to(p)).detach()[0]
        finally:
            self.prec.e = e

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k): the standard deviations of the Gibbs policy N(m, gamma Lam(x)^{-1}) per coordinate."""
        M, _ = self.prec.factor(x)
        eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device).expand_as(M)
        Minv = torch.linalg.solve_triangular(M, eye, upper=False)     # Lam^{-1} = M^{-T} M^{-1}
        return (self.gamma * (Minv * Minv).sum(-2)).sqrt()

    def sample(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, k) standard normal -> (B, k): u ~ N(m(x), gamma Lam(x)^{-1}), u = m + sqrt(gamma) M^{-T} z."""
        M, _ = self.prec.factor(x)
        w = torch.linalg.solve_triangular(M.transpose(-1, -2), z.unsqueeze(-1), upper=True).squeeze(-1)
        return self.mean_net(x) + math.sqrt(self.gamma) * w

    def __call__(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        k = a.shape[1]
        M, logdet = self.prec.factor(x)
        w = ((a - self.mean_net(x)).unsqueeze(-1) * M).sum(-2)        # M' (u - m)
        norm = 0.5 * self.gamma * (logdet - k * math.log(2 * math.pi * self.gamma))
        return -0.5 * (w * w).sum(-1, keepdim=True) + norm


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
