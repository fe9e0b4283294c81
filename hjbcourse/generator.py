"""The generator of a controlled diffusion (book: chapter "The stochastic HJB", eq. (generator)):

    L^a V(x) = grad V(x) . f(x, a) + 1/2 Tr( S S^T(x, a) Hess V(x) ),

with three interchangeable ways to compute the second-order term:

- ``"autograd"``: the textbook loop, one backward pass per row of the Hessian (d passes), then Tr(S S^T H).
- ``"forward"``: exact and faster in d, a forward-Laplacian pass (``V.forward_laplacian``, see
  :mod:`hjbcourse.nets`) that propagates the directions f, s_1..s_m through the network. For a callable
  without it, Hessian-vector products along the m columns of S (m backward passes) are used instead.
- ``"hutchinson"``: unbiased, Tr(S S^T H) = E[z' S' H S z] with Rademacher z in R^m, averaged over
  ``n_probes`` probes. The network's share of its cost does not grow with d; forming the probes S z for a
  state-dependent S does (d x m per probe and state), which a shared S of shape (d, m) avoids.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._checks import _positive_int, floating_tensor
from .runtime import make_generator

__all__ = ["apply_generator", "generator_from_derivatives", "value_derivatives", "GENERATOR_METHODS"]

GENERATOR_METHODS = ("autograd", "forward", "hutchinson")


def _check(x, f, S):
    floating_tensor("x", x, (None, None))
    B, d = x.shape
    if not isinstance(f, torch.Tensor) or tuple(f.shape) != (B, d):
        raise ValueError(f"f must have shape ({B}, {d}) like x, got {tuple(getattr(f, 'shape', ()))}")
    if not isinstance(S, torch.Tensor) or not ((S.ndim == 3 and S.shape[:2] == (B, d)) or (S.ndim == 2 and S.shape[0] == d)):
        raise ValueError(f"S must have shape ({B}, {d}, m), or ({d}, m) when shared by all states, "
                         f"got {tuple(getattr(S, 'shape', ()))}")


def _grad(V, x, create_graph):
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    v = V(x)
    if v.ndim != 2 or v.shape[1] != 1:
        raise ValueError(f"V must map (batch, d) to (batch, 1), got output shape {tuple(v.shape)}")
    (g,) = torch.autograd.grad(v.sum(), x, create_graph=True)
    return x, v, g


# row v of this table holds the eight bits of the byte v as signs: bit k set -> +1, clear -> -1
_SIGN_BITS = torch.tensor([[1.0 if (v >> k) & 1 else -1.0 for k in range(8)] for v in range(256)],
                          dtype=torch.float64)
_SIGN_TABLES: dict = {}


def _rademacher(shape, generator, like):
    """Independent +-1 signs of ``like``'s dtype: each uniformly drawn byte gives eight of them through a
    256 x 8 table (a quarter of the time of drawing every sign on its own, on a CPU)."""
    n = 1
    for s in shape:
        n *= s
    key = (like.dtype, generator.device)
    table = _SIGN_TABLES.get(key)
    if table is None:
        table = _SIGN_TABLES[key] = _SIGN_BITS.to(device=generator.device, dtype=like.dtype)
    bytes_ = torch.randint(0, 256, ((n + 7) // 8,), generator=generator, device=generator.device)
    z = table.index_select(0, bytes_).view(-1)[:n].view(shape)
    return z.to(device=like.device)


def apply_generator(V: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, f: torch.Tensor, S: torch.Tensor,
              method: str = "forward", n_probes: int = 16, generator: torch.Generator | int | None = None,
              create_graph: bool = True) -> torch.Tensor:
    """(B, d), (B, d), (B, d, m) -> (B, 1): L^a V at the points ``x`` for drift ``f`` and diffusion ``S``.

    ``V`` maps (B, d) to (B, 1). With ``create_graph=True`` the result is differentiable in V's parameters
    (and in ``f`` and ``S``), for training; otherwise it is detached. ``generator`` (a torch.Generator or a
    seed) drives Hutchinson's probes.

    ``S`` may also be one (d, m) matrix shared by all states (a constant diffusion, as in the LQR). With an
    MLP, Hutchinson's probes then enter the network as coefficients of S's columns (``basis`` of
    :meth:`hjbcourse.MLP.forward_laplacian`), so the products S z are never formed.
    """
    _check(x, f, S)
    if method not in GENERATOR_METHODS:
        raise ValueError(f"method must be one of {GENERATOR_METHODS}, got {method!r}")
    if method == "hutchinson":
        n_probes = _positive_int("n_probes", n_probes)
    B, d = x.shape
    m = S.shape[-1]
    fast = hasattr(V, "forward_laplacian")
    # a shared S feeds Hutchinson's probes to the network as coefficients of its columns; elsewhere it is
    # simply the same matrix for every state
    shared = S.ndim == 2 and fast and method == "hutchinson"
    if S.ndim == 2 and not shared:
        S = S.expand(B, d, m)

    if method == "autograd":
        x, _, g = _grad(V, x, True)
        rows = [torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0] for i in range(d)]
        H = torch.stack(rows, dim=1)                                    # (B, d, d)
        trace = ((S @ S.transpose(-1, -2)) * H).sum(dim=(-2, -1))
        out = (g * f).sum(-1) + 0.5 * trace
    elif fast:
        if method == "forward":
            dirs = S
            scale = 1.0
        else:
            g_ = make_generator(generator, x.device, "generator")
            z = _rademacher((B, m, n_probes), g_, x)
            dirs = z if shared else S @ z                               # (B, m or d, n_probes)
            scale = 1.0 / n_probes
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            _, dy, lap = V.forward_laplacian(x, f.unsqueeze(-1), dirs, second_gradients=False,
                                             **({"basis": S} if shared else {}))
        out = dy[:, 0, 0] + 0.5 * scale * lap[:, 0]
    else:
        x, _, g = _grad(V, x, True)
        if method == "forward":
            cols = [S[:, :, j] for j in range(m)]
            scale = 1.0
        else:
            g_ = make_generator(generator, x.device, "generator")
            z = _rademacher((B, m, n_probes), g_, x)
            cols = list((S @ z).unbind(-1))
            scale = 1.0 / n_probes
        quad = 0
        for v in cols:
            (hv,) = torch.autograd.grad((g * v).sum(), x, create_graph=True)
            quad = quad + (hv * v).sum(-1)
        out = (g * f).sum(-1) + 0.5 * scale * quad
    out = out.unsqueeze(-1)
    return out if create_graph else out.detach()


#: the same function under the name the module had first (``from hjbcourse.generator import generator``); the
#: package exports it as ``hjb.apply_generator``, so that ``hjbcourse.generator`` stays the module
generator = apply_generator


def value_derivatives(V: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """(B, d) -> (B, 1), (B, d), (B, d, d): V, grad V and Hess V, detached (for policy improvement, where
    gradients must flow only into the policy)."""
    floating_tensor("x", x, (None, None))
    x, v, g = _grad(V, x, True)
    d = x.shape[1]
    rows = [torch.autograd.grad(g[:, i].sum(), x, retain_graph=i < d - 1)[0] for i in range(d)]
    return v.detach(), g.detach(), torch.stack(rows, dim=1).detach()


def generator_from_derivatives(grad: torch.Tensor, hess: torch.Tensor, f: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """(B, d), (B, d, d), (B, d), (B, d, m) or (d, m) -> (B, 1): grad . f + 1/2 Tr(S S^T hess) from precomputed
    derivatives (differentiable in f and S, hence in the action)."""
    return ((grad * f).sum(-1) + 0.5 * ((S @ S.transpose(-1, -2)) * hess).sum(dim=(-2, -1))).unsqueeze(-1)


def hjb_residual(problem, value: Callable, policy: Callable, x: torch.Tensor,
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
    LV = generator(value, x, f, S, method=method, create_graph=False)
    with torch.no_grad():
        res = problem.rho * value(x) - problem.reward(x, a) - LV
    return res.detach()


def hjb_residual_norm(problem, value: Callable, policy: Callable, x: torch.Tensor,
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
