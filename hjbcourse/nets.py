"""Networks: an MLP with input scaling, smooth activations and a forward-Laplacian pass.

The forward-Laplacian pass (Li et al., 2024) propagates, along with the value, its first derivatives in a few
directions and the sum of second derivatives along a subset of them. That gives the generator's two terms,
grad V . f and 1/2 Tr(S S^T Hess V) = 1/2 sum_j s_j' Hess V s_j, in one forward pass whose cost grows with the
number of directions rather than with one backward pass per Hessian row.

The directions' part of each layer (the tangents T W', their squares summed over the second-order
directions, and the product with sigma'(z)) is one autograd Function with a hand-written backward: on a CPU it
works through the batch in chunks whose tangents fit in the cache, and it keeps the pre-activation tangents
for the backward pass instead of the half-dozen intermediate tensors that plain autograd would store.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ._checks import _per_coordinate, choice, integer, real

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


# rows (directions x states) per chunk of the tangent propagation on a CPU: 2048 x 128 floats (1 MiB) stay in
# the cache; a GPU takes the whole batch at once
CPU_CHUNK_ROWS = 2048


class _Tangents(torch.autograd.Function):
    """The directional part of the forward-Laplacian pass, through all hidden layers at once.

    Inputs: the input tangents T_0 (B, P, n_0), the K hidden weights W_k (n_k, n_{k-1}) and sigma'(z_k) (B, n_k).
    For k = 1..K: Jz_k = T_{k-1} W_k' (B, P, n_k), q_k = sum over the last m rows of Jz_k^2 (B, n_k) and
    T_k = sigma'(z_k) * Jz_k (the last layer keeps only its first ``keep`` rows). Returns T_K, q_1, .., q_K.

    A chunk of ``rows`` directions x states goes through every layer before the next chunk starts, so its
    tangents stay in the cache (``rows=None``: the whole batch in one chunk, for a GPU). Only Jz_k is kept for
    the backward pass, which is written by hand; it is differentiable once (a second derivative raises).
    """

    @staticmethod
    def forward(ctx, m: int, keep: int, rows: int | None, grad_mode: bool, T0, *params):
        K = len(params) // 2
        Ws, d1s = params[:K], params[K:]
        B, P, _ = T0.shape
        c = B if rows is None else max(1, min(B, rows // max(P, 1)))
        save = grad_mode and any(ctx.needs_input_grad[4:])     # under no_grad, nothing is kept
        ns = [W.shape[0] for W in Ws]
        qs = [T0.new_empty(B, n) for n in ns]
        Jz_all = [T0.new_empty(B if save else c, P, n) for n in ns]
        T_out = T0.new_empty(B, keep, ns[-1])
        T_bufs = [T0.new_empty(c, P, n) for n in ns[:-1]]
        sq_bufs = [T0.new_empty(c, m, n) for n in ns]
        Wts = [W.t() for W in Ws]
        T0s, T_outs = T0.split(c), T_out.split(c)
        q_chunks = [q.split(c) for q in qs]
        d1_chunks = [d[:, None].split(c) for d in d1s]
        Jz_chunks = [J.split(c) if save else [J] * len(T0s) for J in Jz_all]
        for ci, T in enumerate(T0s):
            b = T.shape[0]
            for k in range(K):
                Jz = Jz_chunks[k][ci][:b]
                torch.mm(T.reshape(-1, T.shape[-1]), Wts[k], out=Jz.view(-1, ns[k]))
                Js = Jz[:, P - m:]
                torch.sum(torch.mul(Js, Js, out=sq_bufs[k][:b]), 1, out=q_chunks[k][ci])
                if k < K - 1:
                    T = torch.mul(Jz, d1_chunks[k][ci], out=T_bufs[k][:b])
                else:
                    torch.mul(Jz[:, :keep], d1_chunks[k][ci], out=T_outs[ci])
        if save:
            ctx.save_for_backward(T0, *Ws, *d1s, *Jz_all)
        ctx.dims = (m, keep, c, K)
        return (T_out, *qs)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, *g_qs):
        m, keep, c, K = ctx.dims
        saved = ctx.saved_tensors
        T0, Ws, d1s, Jz_all = saved[0], saved[1:1 + K], saved[1 + K:1 + 2 * K], saved[1 + 2 * K:]
        B, P, n0 = T0.shape
        ns = [W.shape[0] for W in Ws]
        needs = ctx.needs_input_grad
        gT0 = T0.new_empty(B, P, n0) if needs[4] else None
        gWs = [W.new_zeros(W.shape) if need else None for W, need in zip(Ws, needs[5:5 + K])]
        gd1s = [d.new_zeros(B, d.shape[1]) if need else None for d, need in zip(d1s, needs[5 + K:5 + 2 * K])]
        G_bufs = [T0.new_empty(c, P, n) for n in ns]          # gradient of Jz_k, chunk by chunk
        gT_bufs = [T0.new_empty(c, P, n) for n in ns[:-1]]
        T_bufs = [T0.new_empty(c, P, n) for n in ns[:-1]]     # T_k recomputed from Jz_k (cheaper than storing it)
        tmp_bufs = [T0.new_empty(c, P, n) for n in ns]

        def chunks(t):
            return None if t is None else t.split(c)

        T0s, g_outs, gT0s = chunks(T0), chunks(g_out), chunks(gT0)
        Jz_chunks = [chunks(J) for J in Jz_all]
        d1_chunks = [chunks(d[:, None]) for d in d1s]
        gd1_chunks = [chunks(g) for g in gd1s]
        gq2_chunks = [None if (g is None or not m) else chunks(2.0 * g[:, None]) for g in g_qs]
        for ci, T0c in enumerate(T0s):
            b = T0c.shape[0]
            gT = None if g_outs is None else g_outs[ci]        # gradient of T_k, from k = K down
            for k in reversed(range(K)):
                Jz, G, d1 = Jz_chunks[k][ci], G_bufs[k][:b], d1_chunks[k][ci]
                kp = keep if k == K - 1 else P
                if gT is not None:
                    torch.mul(gT, d1, out=G[:, :kp])
                    if gd1_chunks[k] is not None:
                        torch.sum(torch.mul(gT, Jz[:, :kp], out=tmp_bufs[k][:b, :kp]), 1, out=gd1_chunks[k][ci])
                if gT is None or kp < P:                           # rows without a gradient of T_k
                    G[:, (0 if gT is None else kp):].zero_()
                if gq2_chunks[k] is not None:
                    G[:, P - m:].addcmul_(Jz[:, P - m:], gq2_chunks[k][ci])
                Gf = G.view(-1, ns[k])
                T_prev = T0c if k == 0 else torch.mul(Jz_chunks[k - 1][ci], d1_chunks[k - 1][ci], out=T_bufs[k - 1][:b])
                if gWs[k] is not None:
                    gWs[k].addmm_(Gf.t(), T_prev.reshape(-1, T_prev.shape[-1]))
                if k > 0:
                    gT = torch.mm(Gf, Ws[k], out=gT_bufs[k - 1][:b].view(-1, ns[k - 1])).view(b, P, ns[k - 1])
                elif gT0s is not None:
                    torch.mm(Gf, Ws[0], out=gT0s[ci].view(-1, n0))
        return (None, None, None, None, gT0, *gWs, *gd1s)


class MLP(nn.Module):
    """(B, in_dim) -> (B, out_dim): ``depth`` hidden layers of ``width`` units with a smooth activation.

    Inputs are scaled affinely so that the box ``[in_low, in_high]`` maps to [-1, 1]^in_dim; outputs are
    ``out_shift + out_scale * net(x)``. Smooth activations only, so that Hessians exist everywhere.
    """

    def __init__(self, in_dim: int, out_dim: int = 1, width: int = 64, depth: int = 3, activation: str = "tanh",
                 in_low=None, in_high=None, out_scale: float = 1.0, out_shift: float = 0.0):
        super().__init__()
        in_dim, out_dim, width, depth = (integer(n, v, minimum=1) for n, v in
                                         (("in_dim", in_dim), ("out_dim", out_dim), ("width", width), ("depth", depth)))
        choice("activation", activation, sorted(ACTIVATIONS))
        out_scale, out_shift = real("out_scale", out_scale), real("out_shift", out_shift)
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self._value = _VALUE_ONLY[activation]
        lo, hi = (torch.full((in_dim,), fill, dtype=torch.float64) if v is None else _per_coordinate(name, v, in_dim)
                  for name, v, fill in (("in_low", in_low, -1.0), ("in_high", in_high, 1.0)))
        if not bool((hi > lo).all()):
            raise ValueError(f"in_high must exceed in_low in every coordinate, got {lo.tolist()} and {hi.tolist()}")
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

    def forward_laplacian(self, x: torch.Tensor, first: torch.Tensor | None, second: torch.Tensor,
                          second_gradients: bool = True, chunk_rows: int | None = -1,
                          basis: torch.Tensor | None = None):
        """Value, directional derivatives and a sum of second directional derivatives in one forward pass.

        ``x`` (B, d); ``first`` (B, d, p) or None: directions v_i for first derivatives only; ``second``
        (B, d, m): directions s_j for first and second derivatives. Returns ``(y, dy, lap)`` with
        ``y`` (B, o), ``dy`` (B, o, p + m) = [J v_1 .. J v_p, J s_1 .. J s_m] (only the p columns
        [J v_1 .. J v_p] when ``second_gradients=False``, which saves work) and
        ``lap`` (B, o) = sum_j s_j' Hess y s_j. Differentiable once in the parameters and in ``x``,
        ``first``, ``second`` and ``basis`` (usable in training). ``chunk_rows``: directions x states per
        chunk (-1: :data:`CPU_CHUNK_ROWS` on a CPU, the whole batch on a GPU; None: the whole batch).

        ``basis`` (d, k), one matrix for the whole batch: ``second`` then has shape (B, k, m) and holds
        coefficients, the directions being s_j = basis @ second[:, :, j]. The basis is multiplied into the
        first layer's weights once, so the d-dimensional directions are never formed (the generator uses this
        for Hutchinson's probes when S is shared by all states).
        """
        m = second.shape[-1]
        p = 0 if first is None else first.shape[-1]
        if chunk_rows == -1:
            chunk_rows = CPU_CHUNK_ROWS if x.device.type == "cpu" else None
        # directions along dim 1, features last (each chunk of a layer is then one contiguous matmul); the input
        # scaling is folded into the first layer's weights for the tangents, so T_0 holds the directions as given
        inv = 1.0 / self.in_halfwidth
        h = (x - self.in_center) * inv
        d1s, d2s, Ws = [], [], []
        for k, layer in enumerate(self.hidden):
            h, d1, d2 = self._act(layer(h))
            d1s.append(d1)
            d2s.append(d2)
            Ws.append(layer.weight * inv if k == 0 else layer.weight)
        grad_mode = torch.is_grad_enabled()
        if basis is None:
            T0 = second.transpose(1, 2) if first is None else torch.cat([first.transpose(1, 2), second.transpose(1, 2)], 1)
            keep = p + m if second_gradients else p
            T, *qs = _Tangents.apply(m, keep, chunk_rows, grad_mode, T0.contiguous(), *Ws, *d1s)
        else:
            if basis.ndim != 2 or basis.shape != (x.shape[1], second.shape[1]):
                raise ValueError(f"basis must have shape ({x.shape[1]}, {second.shape[1]}) for x {tuple(x.shape)} "
                                 f"and second {tuple(second.shape)}, got {tuple(basis.shape)}")
            # the coefficients go through the first layer as W_1 @ basis; the first-order directions, which
            # live in the state space, take a pass of their own (with no second-order rows)
            T, *qs = _Tangents.apply(m, m if second_gradients else 0, chunk_rows, grad_mode,
                                     second.transpose(1, 2).contiguous(), Ws[0] @ basis, *Ws[1:], *d1s)
            if first is not None:
                T1 = _Tangents.apply(0, p, chunk_rows, grad_mode, first.transpose(1, 2).contiguous(), *Ws, *d1s)[0]
                T = torch.cat([T1, T], 1)
        L = None                                           # sum of second derivatives: zero at the input
        for layer, d1, d2, q in zip(self.hidden, d1s, d2s, qs):
            curv = d2 * q
            L = curv if L is None else d1 * (L @ layer.weight.T) + curv
        y = self.out_shift + self.out_scale * self.out(h)
        dy = self.out_scale * (T @ self.out.weight.T).transpose(1, 2)
        lap = self.out_scale * (L @ self.out.weight.T)
        return y, dy, lap
