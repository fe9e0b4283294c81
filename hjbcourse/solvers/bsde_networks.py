"""The networks of the deep BSDE method (:mod:`hjbcourse.solvers.deep_bsde`): u(0, .), a number or a small
network, and the time-conditioned Z_theta(t, x) with its affine shortcut, its learned gain in time and the
terminal feature of the control loss."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nets import MLP

__all__ = []


_FEATURE_PAIRS = 1   # antithetic pairs of normal draws in the terminal feature's smoothing


def _terminal_gradient(problem):
    """x (B, d) -> grad g(x) (B, d): the problem's ``terminal_gradient`` where it has one, else autograd of
    ``terminal_cost`` (differentiable in x when x carries a graph, as along the controlled paths)."""
    own = getattr(problem, "terminal_gradient", None)
    if own is not None:
        return lambda x: own(x)   # a closure: a copy of the model does not copy the problem

    def by_autograd(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(problem.terminal_cost(xr).sum(), xr, create_graph=x.requires_grad)
        return grad
    return by_autograd


def _function_of_time(cfg, T: float) -> MLP:
    """A learned scalar function of t on [0, T] (one hidden layer of 16 units) that starts at zero."""
    net = MLP(1, 1, width=16, depth=1, activation=cfg.activation, in_low=[0.0], in_high=[T])
    nn.init.zeros_(net.out.weight)
    nn.init.zeros_(net.out.bias)
    return net


class _Model(nn.Module):
    """u(0, .) (a number or a small network) and the time-conditioned Z_theta(t, x)."""

    def __init__(self, problem, cfg: DeepBSDEConfig, y0_guess: float, start_rms: float = 0.0):
        super().__init__()
        d, T = problem.state_dim, problem.T
        # inputs scaled by two standard deviations of a coordinate of X_T = X_0 + sigma W_T, with ``start_rms``
        # the root mean square of a coordinate of X_0 (0 at the origin). Not by the radius of the ball of X_0:
        # in d dimensions a point at distance R has coordinates of size R / sqrt(d) (at d = 100, |x| <= 14,
        # scaling by the radius put the inputs within +-0.1 and the line integral's shape error at 31%, 8%
        # with this scale: benchmarks/README.md)
        spread = 2.0 * math.sqrt(start_rms ** 2 + problem.bsde_sigma ** 2 * T)
        self.z = MLP(d + 1, d, width=cfg.width, depth=cfg.depth, activation=cfg.activation,
                     in_low=[0.0] + [-spread] * d, in_high=[T] + [spread] * d)
        # an affine shortcut beside the network: the gradient of a smooth function is close to affine in x
        # locally, and a d -> d linear map is costly for a tanh network to learn through a few layers
        self.skip = nn.Linear(d + 1, d) if cfg.linear_skip else None
        self.register_buffer("in_scale", torch.tensor([1.0 / T] + [1.0 / spread] * d))
        self.out_scale = 1.0 / math.sqrt(d)  # keeps |Z| of order one at initialisation whatever d
        # Z starts at zero: the first roll-outs are then plain Monte Carlo of g(X_T), not noise from a
        # random network multiplied into d Brownian increments
        for layer in (self.z.out, self.skip):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        # with the control loss, Z is scaled by exp(gamma(t)): the feedback's gain grows as t -> T. Only the
        # shape of gamma is free: its mean over 16 points of [0, T] is subtracted, so that the factor cannot
        # take over the control's overall size (at d = 1000, lambda = 50 a free factor shrank the control
        # toward zero, +0.7 G; pinned, see benchmarks/README.md)
        self.gain = None
        if cfg.loss == "control":
            self.gain = _function_of_time(cfg, T)
            self.register_buffer("gain_nodes", torch.linspace(0.0, T, 16).unsqueeze(1))
        # with the terminal feature, beside the network, c(t) sigma grad v(t, x), v the cost of not steering
        # (module docstring), c a learned scalar function of time starting at 0
        self.terminal = None
        if cfg.uses_terminal_feature:
            self.terminal = _function_of_time(cfg, T)
            self.terminal_gradient = _terminal_gradient(problem)
            self.sigma, self.horizon = float(problem.bsde_sigma), float(T)
            # fixed normal draws for the smoothing of grad g over the noise still to come (antithetic pairs)
            draws = torch.randn(_FEATURE_PAIRS, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            self.register_buffer("feature_draws", draws.float())
        self.pointwise = cfg.x0_radius == 0.0
        if self.pointwise:
            self.y0 = nn.Parameter(torch.tensor(float(y0_guess)))
        else:
            r = cfg.x0_radius
            self.u0 = MLP(d, 1, width=cfg.value_width, depth=2, activation=cfg.activation,
                          in_low=[-r] * d, in_high=[r] * d, out_shift=y0_guess)

    def initial_value(self, x0: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            return self.y0.expand(x0.shape[0], 1)
        return self.u0(x0)

    def gradient_term(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, 1), (B, d) -> (B, d): Z_theta(t, x), the estimate of sigma grad u."""
        tx = torch.cat([t, x], dim=1)
        z = self.z(tx)
        if self.skip is not None:
            z = z + self.skip(tx * self.in_scale)
        z = self.out_scale * z
        if self.terminal is not None:
            z = z + self.terminal(t) * self.sigma * self.uncontrolled_gradient(t, x)
        if self.gain is not None:
            z = z * torch.exp(self.gain(t) - self.gain(self.gain_nodes.to(t)).mean())
        return z

    def uncontrolled_gradient(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, 1), (B, d) -> (B, d): E grad g(x + sigma (W_T - W_t)), the gradient of the cost of not steering
        from (t, x), by antithetic pairs of fixed normal draws; grad g itself at t = T. grad g alone is far
        larger than grad u at early times where the noise still to come spreads X_T over far more than |x|
        (at d = 1000 by 2 d (T - t)), and c(t) would have to undo that."""
        spread = self.sigma * (self.horizon - t).clamp_min(0.0).sqrt()
        total = 0.0
        for xi in self.feature_draws.to(x):
            step = spread * xi
            total = total + self.terminal_gradient(x + step) + self.terminal_gradient(x - step)
        return total / (2 * self.feature_draws.shape[0])

    def gradient_term_with_derivatives(self, t: torch.Tensor, x: torch.Tensor, w: torch.Tensor):
        """(B, 1), (B, d), (B, d) -> Z_theta(t, x) (B, d), w' J w (B, 1) and tr J (B, 1), J = dZ_theta/dx.

        One forward pass that carries the derivative along w beside the value (forward mode by hand), and
        the trace from the layers' weights: with the hidden layers' activation slopes D_l,
        J = Wo D_L W_L ... D_1 W_1 (scaled), so tr J = tr(D_L W_L ... D_1 A) with A = W_1 Wo (w x w),
        which for the default depth 2 is the O(width^2) sum d_2' (W_2 o A') d_1 per point (deeper networks
        carry a width x width matrix per point); the affine
        shortcut adds a constant. Exact, no probe vectors (a Hutchinson estimate would add back the
        noise that the Milstein term removes)."""
        mlp = self.z
        tx = torch.cat([t, x], dim=1)
        hw = mlp.in_halfwidth[1:]
        h = (tx - mlp.in_center) / mlp.in_halfwidth
        dh = w / hw                                              # the input's derivative along w
        slopes = []
        for layer in mlp.hidden:
            pre = layer(h)
            v, s1, _ = mlp._act(pre)
            dh = s1 * (dh @ layer.weight[:, 1:].T if not slopes else dh @ layer.weight.T)
            h = v
            slopes.append(s1)
        z = mlp.out_shift + mlp.out_scale * mlp.out(h)
        jw = mlp.out_scale * (dh @ mlp.out.weight.T)
        A = (mlp.hidden[0].weight[:, 1:] / hw) @ mlp.out.weight  # (w, w)
        if len(slopes) == 1:
            tr = slopes[0] @ torch.diagonal(A).unsqueeze(-1)
        elif len(slopes) == 2:                                   # sum_ab d2_a W2_ab d1_b A_ba
            tr = ((slopes[1] @ (mlp.hidden[1].weight * A.T)) * slopes[0]).sum(-1, keepdim=True)
        else:
            # B_l = D_l W_l ... D_1 A, per point; the last product needs only its diagonal
            Bm = slopes[0].unsqueeze(-1) * A                     # (n, w, w): D_1 A
            for layer, s in zip(list(mlp.hidden)[1:-1], slopes[1:-1]):
                Bm = s.unsqueeze(-1) * (layer.weight @ Bm)
            last = mlp.hidden[-1].weight                         # tr(D_L W_L B) = sum_a d_a sum_b W_ab B_ba
            tr = (slopes[-1] * torch.einsum("ab,nba->na", last, Bm)).sum(-1, keepdim=True)
        tr = mlp.out_scale * tr
        if self.skip is not None:
            xs = self.in_scale[1:]
            z = z + self.skip(tx * self.in_scale)
            jw = jw + (w * xs) @ self.skip.weight[:, 1:].T
            tr = tr + (torch.diagonal(self.skip.weight[:, 1:]) * xs).sum()
        c = self.out_scale
        return c * z, c * (jw * w).sum(-1, keepdim=True), c * tr
