"""Batched simulation of a closed-loop controlled SDE dX = f(X, a) dt + S(X, a) dW with a = policy(X),
accumulating the discounted running reward int_0^T e^{-rho t} r(X_t, a_t) dt along each path.

Schemes (book: chapter "Policy iteration", section on the time-step bias):

- ``"euler"``: Euler–Maruyama, strong order 1/2 (1 for additive noise), weak order 1; left-point rewards.
- ``"milstein"``: derivative-free Milstein (Kloeden & Platen, sec. 11.1) for commutative noise (additive,
  diagonal or one-dimensional noise), strong order 1; trapezoidal rewards.
- ``"weak2"``: Platen's explicit weak order-2 scheme (Kloeden & Platen, sec. 15.1) for additive noise or a
  single noise dimension, with trapezoidal rewards: the time-step bias of expectations (such as the
  Feynman–Kac value) falls like dt^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .runtime import make_generator

__all__ = ["simulate", "Simulation", "SDE_SCHEMES", "brownian_increments"]

SDE_SCHEMES = ("euler", "milstein", "weak2")


@dataclass
class Simulation:
    """What :func:`simulate` returns. Shapes: N steps, B paths, d states, k actions.

    ``t`` (N+1,), ``x_T`` (B, d), ``reward`` (B, 1): the discounted running reward over [0, T];
    with ``record=True`` also ``x`` (N+1, B, d), ``a`` (N+1, B, k) and ``cum_reward`` (N+1, B, 1).
    """

    t: torch.Tensor
    x_T: torch.Tensor
    reward: torch.Tensor
    x: torch.Tensor | None = None
    a: torch.Tensor | None = None
    cum_reward: torch.Tensor | None = None


def _check_commutative(coeffs, x: torch.Tensor, S: torch.Tensor, m: int) -> None:
    """Refuse noise that is not commutative at the start points ``x`` (where the closed-loop diffusion is
    ``S``): the Milstein scheme without Lévy areas needs L^j s_k = L^k s_j for every pair of columns, L^j the
    derivative along column s_j. Checked by central differences along the columns."""
    eps = 1e-3 * (1.0 + float(x.abs().max()))
    D = [(coeffs(x + eps * S[:, :, j])[2] - coeffs(x - eps * S[:, :, j])[2]) / (2 * eps) for j in range(m)]
    scale = max(float(Dj.abs().max()) for Dj in D)
    for j in range(m):
        for k in range(j + 1, m):
            if float((D[j][:, :, k] - D[k][:, :, j]).abs().max()) > 1e-2 * scale:
                raise ValueError(f"scheme 'milstein' needs commutative noise (additive, one noise dimension, or "
                                 f"columns whose derivatives along each other agree); columns {j} and {k} of this "
                                 f"problem's diffusion do not commute: use 'euler' with a small dt")


def brownian_increments(n_steps: int, batch: int, noise_dim: int, dt: float, generator=None, dtype=torch.float32,
                        device="cpu") -> torch.Tensor:
    """(n_steps, batch, noise_dim): independent N(0, dt) increments from a seed or torch.Generator."""
    g = make_generator(generator, device)
    return torch.randn(n_steps, batch, noise_dim, generator=g, dtype=dtype, device=device) * math.sqrt(dt)


def simulate(problem, policy: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, T: float, dt: float,
             scheme: str = "weak2", generator: torch.Generator | int | None = None, dW: torch.Tensor | None = None,
             record: bool = False) -> Simulation:
    """Simulate B paths of the closed loop from ``x0`` (B, d) over [0, T] with step ``dt``.

    ``policy`` maps (B, d) to (B, k). Brownian increments come from ``dW`` (N, B, m) when given (to couple
    schemes or step sizes), otherwise from ``generator`` (a seed or a torch.Generator): the same seed gives
    the same paths.
    """
    if scheme not in SDE_SCHEMES:
        raise ValueError(f"scheme must be one of {SDE_SCHEMES}, got {scheme!r}")
    problem.check_state(x0, "x0")
    if not (isinstance(T, (int, float)) and T > 0 and math.isfinite(T)):
        raise ValueError(f"T must be a positive number, got {T!r}")
    if not (isinstance(dt, (int, float)) and 0 < dt <= T):
        raise ValueError(f"dt must be a positive number no larger than T={T}, got {dt!r}")
    n = int(round(T / dt))
    if abs(n * dt - T) > 1e-9 * max(1.0, T):
        raise ValueError(f"T / dt must be an integer, got T={T}, dt={dt}")
    B, m = x0.shape[0], problem.noise_dim
    if dW is None:
        dW = brownian_increments(n, B, m, dt, generator, x0.dtype, x0.device)
    elif tuple(dW.shape) != (n, B, m):
        raise ValueError(f"dW must have shape ({n}, {B}, {m}), got {tuple(dW.shape)}")
    if scheme == "weak2" and not (problem.additive_noise or m == 1):
        raise ValueError("scheme 'weak2' is implemented for additive noise or a single noise dimension; "
                         "use 'euler' with a small dt for this problem")
    rho = problem.rho
    sqdt = math.sqrt(dt)

    def act(x):
        a = policy(x)
        problem.check_action(a, x.shape[0], "policy(x)")
        return a

    def coeffs(x):
        a = act(x)
        return a, problem.drift(x, a), problem.diffusion(x, a)

    x = x0
    a, f, S = coeffs(x)
    if scheme == "milstein" and not (problem.additive_noise or m == 1):
        _check_commutative(coeffs, x, S, m)
    r = problem.reward(x, a)
    total = torch.zeros_like(r)
    xs, as_, cums = ([x], [a], [total]) if record else (None, None, None)
    for i in range(n):
        w = dW[i]                                          # (B, m)
        t0, t1 = i * dt, (i + 1) * dt
        noise = (S @ w.unsqueeze(-1)).squeeze(-1)
        if scheme == "euler":
            x_new = x + f * dt + noise
        elif scheme == "milstein":
            x_new = x + f * dt + noise
            if not problem.additive_noise:
                base = x + f * dt
                corr = 0
                for j in range(m):
                    _, _, Sj = coeffs(base + S[:, :, j] * sqdt)
                    coef = w * w[:, j:j + 1]
                    coef = coef - dt * torch.nn.functional.one_hot(torch.tensor(j), m).to(w)
                    corr = corr + ((Sj - S) @ coef.unsqueeze(-1)).squeeze(-1)
                x_new = x_new + corr / (2 * sqdt)
        else:  # weak2
            x_bar = x + f * dt + noise
            _, f_bar, _ = coeffs(x_bar)
            if problem.additive_noise:
                x_new = x + 0.5 * (f + f_bar) * dt + noise
            else:  # one noise dimension: b = S[:, :, 0]
                b = S[:, :, 0]
                _, _, Sp = coeffs(x + f * dt + b * sqdt)
                _, _, Sm = coeffs(x + f * dt - b * sqdt)
                bp, bm = Sp[:, :, 0], Sm[:, :, 0]
                x_new = (x + 0.5 * (f + f_bar) * dt + 0.25 * (bp + bm + 2 * b) * w
                         + 0.25 * (bp - bm) * (w * w - dt) / sqdt)
        a_new, f_new, S_new = coeffs(x_new)
        r_new = problem.reward(x_new, a_new)
        if scheme == "euler":
            total = total + math.exp(-rho * t0) * r * dt
        else:
            total = total + 0.5 * (math.exp(-rho * t0) * r + math.exp(-rho * t1) * r_new) * dt
        x, a, f, S, r = x_new, a_new, f_new, S_new, r_new
        if record:
            xs.append(x)
            as_.append(a)
            cums.append(total)
    t = torch.linspace(0.0, n * dt, n + 1, dtype=x0.dtype, device=x0.device)
    if record:
        return Simulation(t=t, x_T=x, reward=total, x=torch.stack(xs), a=torch.stack(as_), cum_reward=torch.stack(cums))
    return Simulation(t=t, x_T=x, reward=total)
