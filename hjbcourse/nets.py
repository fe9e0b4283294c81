"""Networks: an MLP with input scaling, smooth activations and a forward-Laplacian pass.

The forward-Laplacian pass (Li et al., 2024) propagates, along with the value, its first derivatives in a few
directions and the sum of second derivatives along a subset of them. That gives the generator's two terms,
grad V . f and 1/2 Tr(S S^T Hess V) = 1/2 sum_j s_j' Hess V s_j, in one forward pass whose cost grows with the
number of directions rather than with one backward pass per Hessian row.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["MLP", "ACTIVATIONS"]


def _tanh(z):
    y = torch.tanh(z)
    d1 = 1 - y * y
    return y, d1, -2 * y * d1


def _softplus(z):
    s = torch.sigmoid(z)
    return nn.functional.softplus(z), s, s * (1 - s)


def _silu(z):
    s = torch.sigmoid(z)
    d1 = s * (1 + z * (1 - s))
    return z * s, d1, s * (1 - s) * (2 + z * (1 - 2 * s))


# name -> function returning (sigma(z), sigma'(z), sigma''(z))
ACTIVATIONS: dict[str, Callable] = {"tanh": _tanh, "softplus": _softplus, "silu": _silu}
# the value alone, for the plain forward pass (no derivative work there)
_VALUE_ONLY: dict[str, Callable] = {"tanh": torch.tanh, "softplus": nn.functional.softplus, "silu": nn.functional.silu}


class MLP(nn.Module):
    """(B, in_dim) -> (B, out_dim): ``depth`` hidden layers of ``width`` units with a smooth activation.

    Inputs are scaled affinely so that the box ``[in_low, in_high]`` maps to [-1, 1]^in_dim; outputs are
    ``out_shift + out_scale * net(x)``. Smooth activations only, so that Hessians exist everywhere.
    """

    def __init__(self, in_dim: int, out_dim: int = 1, width: int = 64, depth: int = 3, activation: str = "tanh",
                 in_low=None, in_high=None, out_scale: float = 1.0, out_shift: float = 0.0):
        super().__init__()
        if in_dim < 1 or out_dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"in_dim, out_dim, width and depth must be positive, got {in_dim}, {out_dim}, {width}, {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self._value = _VALUE_ONLY[activation]
        lo = torch.full((in_dim,), -1.0, dtype=torch.float64) if in_low is None else torch.as_tensor(in_low, dtype=torch.float64).reshape(-1).expand(in_dim)
        hi = torch.full((in_dim,), 1.0, dtype=torch.float64) if in_high is None else torch.as_tensor(in_high, dtype=torch.float64).reshape(-1).expand(in_dim)
        if not bool((hi > lo).all()):
            raise ValueError("in_high must exceed in_low in every coordinate")
        self.register_buffer("in_center", ((hi + lo) / 2).float())
        self.register_buffer("in_halfwidth", ((hi - lo) / 2).float())
        self.register_buffer("out_scale", torch.tensor(float(out_scale)))
        self.register_buffer("out_shift", torch.tensor(float(out_shift)))
        dims = [in_dim] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, out_dim)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.in_center) / self.in_halfwidth
        for layer in self.hidden:
            h = self._value(layer(h))
        return self.out_shift + self.out_scale * self.out(h)

    def forward_laplacian(self, x: torch.Tensor, first: torch.Tensor | None, second: torch.Tensor):
        """Value, directional derivatives and a sum of second directional derivatives in one forward pass.

        ``x`` (B, d); ``first`` (B, d, p) or None: directions v_i for first derivatives only; ``second``
        (B, d, m): directions s_j for first and second derivatives. Returns ``(y, dy, lap)`` with
        ``y`` (B, o), ``dy`` (B, o, p + m) = [J v_1 .. J v_p, J s_1 .. J s_m] and
        ``lap`` (B, o) = sum_j s_j' Hess y s_j. Differentiable in the parameters (usable in training).
        """
        m = second.shape[-1]
        dirs = second if first is None else torch.cat([first, second], dim=-1)
        inv = 1.0 / self.in_halfwidth
        h = (x - self.in_center) * inv
        # directions along dim 1, features last: every layer is then one contiguous (B*p, n) @ (n, n') matmul
        J = dirs.transpose(1, 2) * inv                     # (B, p+m, d): derivatives of the scaled input
        L = None                                           # sum of second derivatives: zero at the input
        for layer in self.hidden:
            z = layer(h)
            Jz = J @ layer.weight.T
            h, d1, d2 = self._act(z)
            Js = Jz[:, -m:, :]
            curv = d2 * (Js * Js).sum(1)
            L = curv if L is None else d1 * (L @ layer.weight.T) + curv
            J = d1.unsqueeze(1) * Jz
        y = self.out_shift + self.out_scale * self.out(h)
        dy = self.out_scale * (J @ self.out.weight.T).transpose(1, 2)
        lap = self.out_scale * (L @ self.out.weight.T)
        return y, dy, lap
