"""The networks of neural policy iteration and the states they are trained and scored on.

:func:`make_value_network` (an :class:`~hjbcourse.MLP`, a :class:`MappedInputMLP` reading log x or held in a box,
or a :class:`SignedExpValue`), :func:`make_policy_network` (a :class:`PolicyNetwork`, squashed into the action
box; :func:`set_constant_action` sets its first policy), the closed-form :class:`GreedyPolicy`, and the states:
:func:`training_states`, :func:`evaluation_states`, :func:`clamp_to_box`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ...nets import MLP
from ...problems import ControlProblem, squash_to_bounds
from ...runtime import make_generator
from .config import INPUT_SCALINGS

__all__ = ["MappedInputMLP", "SignedExpValue", "make_value_network", "PolicyNetwork", "set_constant_action",
           "make_policy_network", "GreedyPolicy", "input_steps", "clamp_to_box", "training_states", "evaluation_states"]


def _input_coordinates(x: torch.Tensor, log: bool) -> torch.Tensor:
    """The networks' input coordinates of states x: x itself, or log x (``input_scaling="log"``)."""
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)) if log else x


def _box_bounds(z_lo: torch.Tensor, z_hi: torch.Tensor, box: float):
    """(low, high): the box [z_lo, z_hi] (in input coordinates) enlarged ``box`` times about its centre."""
    c, h = (z_hi + z_lo) / 2, box * (z_hi - z_lo) / 2
    return c - h, c + h


class MappedInputMLP(nn.Module):
    """(B, d) -> (B, out_dim): an :class:`~hjbcourse.MLP` of log x (``log=True``, for positive states) or of x,
    with its inputs optionally held inside a box (made by :func:`make_value_network` and
    :func:`make_policy_network` when ``input_scaling="log"`` or a ``box`` is given).

    The MLP's input box is ``[in_low, in_high]`` (its log with ``log=True``, which needs it positive), mapped
    to [-1, 1]^d as usual. A state that moves geometrically (dX = X (b dt + s dW), like Merton's wealth)
    spreads evenly in log x, and a power law x^p becomes the smooth e^{p log x}. With ``box`` the mapped
    input is clamped to [-box, box]^d: beyond the box the network is constant, equal to its value on the
    box's face, instead of extrapolating (a tanh network extrapolated far in log x can return anything, and a
    policy that does sends the paths further out); with ``extrapolate=True`` (the value network) it continues
    instead to first order, N(z) = N(z_c) + |z - z_c| dN/du at the face point z_c, u = (z - z_c)/|z - z_c|
    (the slope by a central difference). Exposes the MLP's ``out``, ``out_scale``, ``out_shift``. No
    forward-Laplacian pass: the generator falls back to autograd for it.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, activation: str, in_low, in_high,
                 log: bool = False, box: float | None = None, extrapolate: bool = False):
        super().__init__()
        lo = torch.as_tensor(in_low, dtype=torch.float64).reshape(-1).expand(in_dim)
        hi = torch.as_tensor(in_high, dtype=torch.float64).reshape(-1).expand(in_dim)
        if log and not bool((lo > 0).all()):
            raise ValueError(f"input_scaling='log' needs a domain in positive states, got low {lo.tolist()}")
        if box is not None and not box >= 1:
            raise ValueError(f"box must be >= 1 or None, got {box!r}")
        self.log, self.box, self.extrapolate = bool(log), box, bool(extrapolate)
        z_lo, z_hi = _input_coordinates(lo, self.log), _input_coordinates(hi, self.log)
        self.net = MLP(in_dim, out_dim, width=width, depth=depth, activation=activation, in_low=z_lo, in_high=z_hi)
        z_low, z_high = _box_bounds(z_lo, z_hi, 1.0 if box is None else float(box))
        self.register_buffer("z_low", z_low.float())
        self.register_buffer("z_high", z_high.float())

    @property
    def out(self) -> nn.Linear:
        return self.net.out

    @property
    def out_scale(self) -> torch.Tensor:
        return self.net.out_scale

    @property
    def out_shift(self) -> torch.Tensor:
        return self.net.out_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _input_coordinates(x, self.log)
        if self.box is None:
            return self.net(z)
        zc = torch.minimum(torch.maximum(z, self.z_low), self.z_high)
        out = self.net(zc)
        if not self.extrapolate:
            return out
        e = z - zc
        rows = (e != 0).any(-1).nonzero().squeeze(-1)
        if rows.numel() == 0:
            return out
        # first-order extension beyond the box: V(z) = V(zc) + |e| dV/du at zc, u = e/|e| (central difference)
        length = e[rows].norm(dim=-1, keepdim=True)
        h = 1e-2 * (self.z_high - self.z_low).min() / 2
        u = e[rows] / length
        both = self.net(torch.cat([zc[rows] + h * u, zc[rows] - h * u]))
        slope = (both[: rows.numel()] - both[rows.numel():]) / (2 * h)
        return out.index_add(0, rows, slope * length)


def _zero_value(x: torch.Tensor) -> torch.Tensor:
    """(B, d) -> (B, 1): V = 0, differentiable in x (the value before the first fit, whose greedy action is
    the first policy when no linear feedback exists)."""
    return x.sum(-1, keepdim=True) * 0.0


def _region_bounds(problem: ControlProblem, region: float = 1.0):
    """(low, high): ``problem.domain`` enlarged ``region`` times about its centre (:func:`_box_bounds`)."""
    return problem.domain if region == 1.0 else _box_bounds(*problem.domain, region)


def _input_net(problem: ControlProblem, out_dim: int, width: int, depth: int, activation: str,
               input_scaling: str, box: float | None, extrapolate: bool = False, region: float = 1.0) -> nn.Module:
    if input_scaling not in INPUT_SCALINGS:
        raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, got {input_scaling!r}")
    lo, hi = _region_bounds(problem, region)
    if input_scaling == "affine" and box is None:  # the plain MLP keeps its forward-Laplacian pass
        return MLP(problem.state_dim, out_dim, width=width, depth=depth, activation=activation, in_low=lo,
                   in_high=hi)
    return MappedInputMLP(problem.state_dim, out_dim, width, depth, activation, lo, hi,
                          log=input_scaling == "log", box=box, extrapolate=extrapolate)


class SignedExpValue(nn.Module):
    """(B, d) -> (B, 1): V(x) = sign * exp(N(x)), a value of known sign (``value_sign`` in the config).

    ``N`` is the network made by :func:`make_value_network` (with its own ``out_shift`` and ``out_scale``,
    in log units). For a value of one sign that spans orders of magnitude (Merton's -A/x for gamma > 1), the
    log-derivatives grad V / V = grad N, which the optimal policy reads, are then smooth outputs of the
    network rather than ratios of small differences, and V cannot change sign or lose its magnitude's scale.
    ``out_scale`` is a buffer in the value's own units (the spread of the first targets, set by the solver),
    used only to measure the fit's loss; ``out_shift`` is that of ``N``.
    """

    def __init__(self, net: nn.Module, sign: int):
        super().__init__()
        if not isinstance(sign, int) or isinstance(sign, bool) or sign not in (-1, 1):
            raise ValueError(f"sign must be -1 or 1, got {sign!r}")
        self.net = net
        self.sign = int(sign)
        self.register_buffer("out_scale", torch.ones((), dtype=net.out_scale.dtype, device=net.out_scale.device))

    @property
    def out(self) -> nn.Linear:
        return self.net.out

    @property
    def out_shift(self) -> torch.Tensor:
        return self.net.out_shift

    def set_output_scale(self, y: torch.Tensor) -> None:
        """Start N near log|y| of targets ``y`` (B, 1): its shift and scale from the mean and spread of
        log(sign * y) (targets of the wrong sign, from noise, clamped to a small fraction of the mean),
        and ``out_scale`` = the spread of y."""
        with torch.no_grad():
            z = self.log_targets(y)
            self.net.out_shift.fill_(float(z.mean()))
            zs = float(z.std()) if z.numel() > 1 else 0.0
            self.net.out_scale.fill_(zs if zs > 0 else 1.0)
            ys = float(y.std()) if y.numel() > 1 else 0.0
            self.out_scale.fill_(ys if ys > 0 else self.sign * float(y.mean()))   # > 0: log_targets checked it

    def log_targets(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): log(sign * y), the targets of N; those of the wrong sign (from noise) clamped to
        1e-3 of the mean. A ``ValueError`` where the mean itself has the other sign."""
        m = y.detach().mul(self.sign)
        mean = float(m.mean())
        if not mean > 0:
            raise ValueError(f"value_sign={self.sign} but the first targets have mean {float(y.mean()):.3g}, "
                             f"of the other sign")
        return m.clamp_min(1e-3 * mean).log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * torch.exp(self.net(x))


def make_value_network(problem: ControlProblem, width: int = 64, depth: int = 3, activation: str = "tanh",
                       dtype=torch.float32, device="cpu", input_scaling: str = "affine",
                       box: float | None = None, sign: int | None = None, region: float = 1.0) -> nn.Module:
    """(B, d) -> (B, 1): an MLP whose inputs are scaled so that ``problem.domain`` maps to [-1, 1]^d:
    affinely (``input_scaling="affine"``), or affinely in log x (``"log"``, for a domain of positive states);
    with ``box`` the network is read inside [-box, box]^d only and continued to first order beyond it, along
    its slope at the box's face (a :class:`MappedInputMLP` with ``extrapolate=True``). With ``sign`` (-1 or 1)
    the value is ``sign * exp(N(x))`` with N that network (a :class:`SignedExpValue`). ``region`` (>= 1)
    maps the domain enlarged that many times about its centre to [-1, 1]^d instead (the training region,
    :func:`training_states`).

    The output scale and shift start at 1 and 0; the solver sets them from the first targets, so the
    network works in units of the value's spread whatever the problem's magnitude.
    """
    net = _input_net(problem, 1, width, depth, activation, input_scaling, box, extrapolate=True, region=region)
    if sign is not None:
        net = SignedExpValue(net, sign)
    return net.to(dtype=dtype, device=device)


class PolicyNetwork(nn.Module):
    """(B, d) -> (B, k): an MLP followed by the squashing map into the problem's action box.

    The last layer starts at zero, so the first policy is the squash of 0: the zero action for unbounded
    actions, the middle of the box for bounded ones.
    """

    def __init__(self, problem: ControlProblem, width: int = 64, depth: int = 2, activation: str = "tanh",
                 input_scaling: str = "affine", box: float | None = None, region: float = 1.0):
        super().__init__()
        self.net = _input_net(problem, problem.action_dim, width, depth, activation, input_scaling, box,
                              region=region)
        nn.init.zeros_(self.net.out.weight)
        nn.init.zeros_(self.net.out.bias)
        self.register_buffer("action_low", problem.action_low.clone().float())
        self.register_buffer("action_high", problem.action_high.clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squash_to_bounds(self.net(x), self.action_low, self.action_high)


def set_constant_action(policy: PolicyNetwork, problem: ControlProblem, action) -> None:
    """Make ``policy`` output the constant ``action`` (k,): zero last-layer weights, bias = the inverse of the
    squashing map at ``action`` (which must lie strictly inside the action box)."""
    a = torch.as_tensor(action, dtype=torch.float64).reshape(-1)
    if a.numel() != problem.action_dim:
        raise ValueError(f"initial_action must have {problem.action_dim} entries, got {a.numel()}")
    lo, hi = problem.action_low, problem.action_high
    if not bool(((a > lo) & (a < hi)).all()):
        raise ValueError(f"initial_action must lie strictly inside the action box [{lo.tolist()}, {hi.tolist()}], got {a.tolist()}")
    lo_f, hi_f = torch.isfinite(lo), torch.isfinite(hi)
    raw = a.clone()
    both = lo_f & hi_f
    p = (a - torch.where(both, lo, 0)) / torch.where(both, hi - lo, 1)
    raw = torch.where(both, torch.log(p) - torch.log1p(-p), raw)
    sp_inv = lambda y: y + torch.log(-torch.expm1(-y))                 # inverse of softplus
    raw = torch.where(lo_f & ~hi_f, sp_inv((a - torch.where(lo_f, lo, 0)).clamp_min(1e-12)), raw)
    raw = torch.where(hi_f & ~lo_f, -sp_inv((torch.where(hi_f, hi, 0) - a).clamp_min(1e-12)), raw)
    with torch.no_grad():
        policy.net.out.weight.zero_()
        shift, scale = policy.net.out_shift.double().cpu(), policy.net.out_scale.double().cpu()  # the box is on the CPU
        policy.net.out.bias.copy_((raw - shift) / scale)


def make_policy_network(problem: ControlProblem, width: int = 64, depth: int = 2, activation: str = "tanh",
                        dtype=torch.float32, device="cpu", input_scaling: str = "affine",
                        box: float | None = None, region: float = 1.0) -> PolicyNetwork:
    """(B, d) -> (B, k): a :class:`PolicyNetwork` for ``problem`` on ``device`` (``input_scaling``, ``box``
    and ``region`` as in :func:`make_value_network`)."""
    return PolicyNetwork(problem, width, depth, activation, input_scaling, box, region).to(dtype=dtype,
                                                                                          device=device)


class GreedyPolicy:
    """(B, d) -> (B, k): a*(x) = argmax_a { r(x, a) + grad V(x) . f(x, a) } in closed form.

    Computed as one Newton step from a = 0 on h(a) = r(x, a) + grad V . f(x, a): a* = -[d2h/da2]^{-1} dh/da,
    exact when f is affine in a, r is quadratic and concave in a, and S does not depend on a (then the
    second-order term of the generator does not move the maximiser). For the LQR it is a* = R^{-1} B' grad V.
    The result is clipped to the action box. :meth:`check` verifies the assumptions on sample states.
    """

    def __init__(self, problem: ControlProblem, value: Callable[[torch.Tensor], torch.Tensor]):
        self.problem = problem
        self.value = value

    def _h(self, x, grad_v, a):
        return self.problem.reward(x, a).sum() + (grad_v * self.problem.drift(x, a)).sum()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (gv,) = torch.autograd.grad(self.value(xg).sum(), xg)
            return self.problem.clip_action(self._newton(x.detach(), gv.detach())).detach()

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The same action, carrying its derivative da*/dx (through grad V and the Newton step, so it reads
        Hess V) into ``x``'s graph: what a pathwise derivative of a rollout needs. The action and its
        Jacobian J (B, k, d) are computed on a detached copy of x and attached to x to first order,
        a* + J (x - x.detach()): exact derivatives, and a graph per call of constant size (an autograd.grad
        inside a long path's graph would walk the whole path at every step). An ``x`` outside a graph gets
        the detached action."""
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self(x)
        xl = x.detach().requires_grad_(True)
        (gv,) = torch.autograd.grad(self.value(xl).sum(), xl, create_graph=True)
        a = self.problem.clip_action(self._newton(xl, gv, keep_graph=True))
        k = self.problem.action_dim
        J = torch.stack([torch.autograd.grad(a[:, j].sum(), xl, retain_graph=j < k - 1)[0] for j in range(k)],
                        dim=1)                                          # (B, k, d)
        return a.detach() + (J.detach() @ (x - xl.detach()).unsqueeze(-1)).squeeze(-1)

    def _newton(self, x, gv, keep_graph: bool = False):
        """The Newton step -H^{-1} g from a = 0; with ``keep_graph`` a differentiable function of x and gv."""
        k = self.problem.action_dim
        a0 = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device, requires_grad=True)
        (g,) = torch.autograd.grad(self._h(x, gv, a0), a0, create_graph=True)
        rows = [torch.autograd.grad(g[:, j].sum(), a0, retain_graph=keep_graph or j < k - 1,
                                    create_graph=keep_graph, allow_unused=keep_graph)[0] for j in range(k)]
        H = torch.stack(rows, dim=1)                                     # (B, k, k), negative definite
        sol, info = torch.linalg.solve_ex(H, (g if keep_graph else g.detach()).unsqueeze(-1))
        if bool((info != 0).any()):
            raise ValueError("policy='greedy' needs a reward strictly concave in the action (an invertible "
                             "quadratic action cost); this problem's Hamiltonian is singular in a: use policy='actor'")
        return -sol.squeeze(-1)

    def check(self, x: torch.Tensor, tol: float = 1e-6) -> None:
        """Raise ``ValueError`` unless the closed form is exact at the states ``x``: the Hamiltonian's
        a-gradient vanishes at a*, its a-Hessian is negative definite, and S does not depend on a."""
        p = self.problem
        gv = torch.randn(x.shape[0], p.state_dim, dtype=x.dtype, generator=torch.Generator().manual_seed(0)).to(x.device)
        a_star = self._newton(x, gv).detach().requires_grad_(True)
        a0 = torch.zeros_like(a_star, requires_grad=True)
        (g0,) = torch.autograd.grad(self._h(x, gv, a0), a0, create_graph=True)
        H0 = torch.stack([torch.autograd.grad(g0[:, j].sum(), a0, retain_graph=True)[0]
                          for j in range(p.action_dim)], dim=1)
        if float(torch.linalg.eigvalsh(0.5 * (H0 + H0.transpose(-1, -2))).max()) >= 0:
            raise ValueError("policy='greedy' needs a reward strictly concave in the action; use policy='actor'")
        (g,) = torch.autograd.grad(self._h(x, gv, a_star), a_star)
        a0 = torch.zeros_like(a_star)
        scale = a_star.detach().abs().max().clamp_min(1.0)
        S0, S1 = p.diffusion(x, a0), p.diffusion(x, a_star.detach())
        if not bool(torch.isfinite(a_star).all()) or float(g.abs().max()) > tol * 1e3 * scale \
                or float((S1 - S0).abs().max()) > tol * (1 + float(S0.abs().max())):
            raise ValueError("policy='greedy' needs a control-affine drift f = f0 + G a, a reward quadratic and "
                             "concave in a, and a diffusion that does not depend on a; this problem is not of that "
                             "form: use policy='actor'")


def input_steps(problem: ControlProblem, x: torch.Tensor, input_scaling: str = "affine") -> torch.Tensor:
    """(B, d) -> (B, d): dx_i / du_i, how far a state moves per unit of the networks' input coordinate u_i
    (which maps the domain to [-1, 1], affinely in x or in log x): the domain's half-width, or for
    ``input_scaling="log"`` x_i times the half-width of log x. A gradient times it is the gradient in the
    networks' own units, the scale on which its errors are weighed."""
    lo, hi = (t.to(dtype=x.dtype, device=x.device) for t in problem.domain)
    if input_scaling == "log":
        return x * (torch.log(hi) - torch.log(lo)) / 2
    return ((hi - lo) / 2).expand_as(x)


def clamp_to_box(problem: ControlProblem, x: torch.Tensor, box: float | None, input_scaling: str = "affine"):
    """(B, d) -> (B, d): ``x`` moved into the domain enlarged ``box`` times about its centre, in the networks'
    input coordinates (x for ``input_scaling="affine"``, log x for ``"log"``); ``box=None`` leaves x as is."""
    if box is None:
        return x
    log = input_scaling == "log"
    z_lo, z_hi = (_input_coordinates(t.to(dtype=x.dtype, device=x.device), log) for t in problem.domain)
    z_low, z_high = _box_bounds(z_lo, z_hi, box)
    z = torch.minimum(torch.maximum(_input_coordinates(x, log), z_low), z_high)
    return z.exp() if log else z


def training_states(problem: ControlProblem, n: int, generator: torch.Generator, dtype=torch.float32,
                    device="cpu", region: float = 1.0) -> torch.Tensor:
    """(n, d): training states from ``problem.sample_states`` (which for the LQR puts half of them near the
    origin, so that the region the optimal paths visit is covered in every dimension), stretched ``region``
    (>= 1) times about the domain's centre: the region where the paths go when they leave the domain
    (:func:`~.scales.training_region`)."""
    x = problem.sample_states(n, generator, dtype=dtype, device=device)
    if region == 1.0:
        return x
    lo, hi = (t.to(dtype=x.dtype, device=x.device) for t in problem.domain)
    c = (lo + hi) / 2
    half = n // 2   # the first half in the domain, where the value is scored and the policy used
    return torch.cat([x[:half], c + region * (x[half:] - c)])


def evaluation_states(problem: ControlProblem, n: int = 2048, seed: int = 12345, dtype=torch.float32,
                      device="cpu") -> torch.Tensor:
    """(n, d): fixed states on which errors and residuals are scored: an even grid of the domain in one
    dimension, otherwise ``problem.sample_states`` with a fixed seed (the same points every iteration)."""
    if problem.state_dim == 1:
        return problem.grid(n, dtype=dtype, device=device)
    return problem.sample_states(n, make_generator(seed, "cpu"), dtype=dtype, device=device)

