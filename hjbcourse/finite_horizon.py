"""The finite-horizon stochastic LQR and its Riccati ODE (book: Appendix C).

Maximise E[int_t^T e^{-rho (s-t)} r(X_s, a_s) ds + e^{-rho (T-t)} g(X_T)] with dX = (A X + B a) dt + D dW,
r(x, a) = -1/2 (x'Qx + a'Ra) and terminal reward g(x) = -1/2 x'Gx. The value is V(t, x) = -1/2 x'P(t)x - c(t),
where P and c solve (Appendix C, derived in :func:`hjbcourse.derivations.finite_horizon_lqr_riccati_ode`)

    -dP/dt = A'P + PA - P B R^{-1} B'P + Q - rho P,    P(T) = G,
    -dc/dt = 1/2 Tr(D D'P) - rho c,                     c(T) = 0,

integrated backwards here with scipy's ``solve_ivp``; the optimal feedback is a*(t, x) = -R^{-1} B'P(t) x.
:func:`monte_carlo_value` estimates the value of any feedback policy by simulation, for comparison.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .problems import FiniteHorizonProblem, StochasticLQR, as_float64
from .runtime import make_generator, progress

_CHUNK = 16384

__all__ = ["FiniteHorizonLQR", "FiniteHorizonLQRSolution", "MonteCarloValue", "monte_carlo_value"]


@dataclass(frozen=True)
class FiniteHorizonLQRSolution:
    """V(t, x) = -1/2 x'P(t)x - c(t), a*(t, x) = -K(t) x with K(t) = R^{-1} B'P(t); P and c from the ODE.

    ``P(t)``, ``c(t)``, ``K(t)`` take a float or a 1-D array of times in [0, T] and return numpy arrays
    ((n, d, d), (n,), (n, k, d) for arrays; (d, d), float, (k, d) for a float).
    """

    T: float
    d: int
    _sol: object
    _BtRinv: np.ndarray

    def _y(self, t):
        t_arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if np.any(t_arr < -1e-12) or np.any(t_arr > self.T + 1e-12):
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return self._sol.sol(np.clip(t_arr, 0.0, self.T)), np.ndim(t) == 0

    def P(self, t):
        y, scalar = self._y(t)
        P = y[: self.d * self.d].T.reshape(-1, self.d, self.d)
        P = 0.5 * (P + P.transpose(0, 2, 1))
        return P[0] if scalar else P

    def c(self, t):
        y, scalar = self._y(t)
        return float(y[-1, 0]) if scalar else y[-1]

    def K(self, t):
        P = self.P(t)
        return self._BtRinv @ P  # R^{-1} B' P, broadcast over times

    def value(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): V(t, x) at one time ``t``."""
        P = torch.as_tensor(self.P(float(t))).to(x)
        return -0.5 * ((x @ P) * x).sum(-1, keepdim=True) - self.c(float(t))

    def policy(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k): a*(t, x) = -K(t) x at one time ``t``."""
        return -x @ torch.as_tensor(self.K(float(t))).to(x).T


class FiniteHorizonLQR(FiniteHorizonProblem):
    """dX = (A X + B a) dt + D dW on [0, T], r = -1/2 (x'Qx + a'Ra), terminal reward -1/2 x'Gx, discount rho.

    ``A, B, Q, R, D`` as in :class:`~hjbcourse.StochasticLQR` (same checks, except stabilisability, which a
    finite horizon does not need); ``G`` (d, d) symmetric positive semi-definite; ``T`` > 0; ``rho`` >= 0.
    The terminal reward is discounted like the running reward, so that V solves
    rho V = max_a {r + dV/dt + L^a V} (Appendix C).
    """

    name = "finite-horizon LQR"

    def __init__(self, A, B, Q, R, D, G, T, rho=0.0, domain=(-2.0, 2.0)):
        rho_v = float(as_float64("rho", rho).reshape(()))
        if rho_v < 0:
            raise ValueError(f"rho must be non-negative, got {rho_v}")
        A_ = as_float64("A", A)
        A_ = A_.reshape(1, 1) if A_.ndim == 0 else A_
        if A_.ndim != 2 or A_.shape[0] != A_.shape[1]:
            raise ValueError(f"A must be a square matrix (d, d), got shape {tuple(A_.shape)}")
        d = A_.shape[0]
        # StochasticLQR checks the shapes and definiteness of B, Q, R, D; its stabilisability test does not
        # apply to a finite horizon, so it gets A = 0 (always stabilisable) and A is set afterwards
        base = StochasticLQR(np.zeros((d, d)), B, Q, R, D, rho=1.0, domain=domain)
        G = as_float64("G", G)
        G = G.reshape(1, 1) if G.ndim == 0 and d == 1 else G
        if tuple(G.shape) != (d, d):
            raise ValueError(f"G must have shape ({d}, {d}), got {tuple(G.shape)}")
        if not torch.allclose(G, G.T, atol=1e-12) or float(torch.linalg.eigvalsh(G).min()) < -1e-12:
            raise ValueError("G must be symmetric positive semi-definite")
        super().__init__(d, base.action_dim, base.noise_dim, T, rho_v, domain)
        self.A, self.B, self.Q, self.R, self.D, self.G = A_, base.B, base.Q, base.R, base.D, G

    @classmethod
    def scalar(cls, alpha=-0.5, beta=1.0, q=1.0, r_a=0.1, sigma=0.3, rho=0.1, g=0.0, T=1.0, domain=(-2.0, 2.0)):
        """The course's one-dimensional LQR on [0, T] with terminal reward -1/2 g x^2."""
        return cls([[alpha]], [[beta]], [[q]], [[r_a]], [[sigma]], [[g]], T, rho, domain)

    # -- the model (time first) -------------------------------------------------------------------------
    def drift(self, t, x, a):
        return x @ self.A.to(x).T + a @ self.B.to(x).T

    def diffusion(self, t, x, a):
        return self.D.to(x).unsqueeze(0).expand(x.shape[0], -1, -1)

    def reward(self, t, x, a):
        return -0.5 * (((x @ self.Q.to(x)) * x).sum(-1, keepdim=True) + ((a @ self.R.to(x)) * a).sum(-1, keepdim=True))

    def terminal_reward(self, x):
        return -0.5 * ((x @ self.G.to(x)) * x).sum(-1, keepdim=True)

    # -- the Riccati ODE --------------------------------------------------------------------------------
    def riccati_rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """d/dt of y = [vec P, c]: -(A'P + PA - P B R^{-1} B'P + Q - rho P) and -(1/2 Tr(DD'P) - rho c)."""
        d = self.state_dim
        A, B, Q, R, D = (M.numpy() for M in (self.A, self.B, self.Q, self.R, self.D))
        P = y[: d * d].reshape(d, d)
        dP = -(A.T @ P + P @ A - P @ B @ np.linalg.solve(R, B.T @ P) + Q - self.rho * P)
        dc = -(0.5 * np.trace(D @ D.T @ P) - self.rho * y[-1])
        return np.concatenate([dP.reshape(-1), [dc]])

    def solve_riccati(self, rtol: float = 1e-10, atol: float = 1e-12) -> FiniteHorizonLQRSolution:
        """Integrate the Riccati ODE backwards from P(T) = G, c(T) = 0 (scipy ``solve_ivp``, DOP853, dense)."""
        d = self.state_dim
        y_T = np.concatenate([self.G.numpy().reshape(-1), [0.0]])
        sol = solve_ivp(self.riccati_rhs, (self.T, 0.0), y_T, method="DOP853", rtol=rtol, atol=atol,
                        dense_output=True)
        if not sol.success:
            raise ValueError(f"the Riccati ODE could not be integrated on [0, T]: {sol.message}")
        BtRinv = np.linalg.solve(self.R.numpy(), self.B.numpy().T)
        return FiniteHorizonLQRSolution(T=self.T, d=d, _sol=sol, _BtRinv=BtRinv)

    def exact(self) -> FiniteHorizonLQRSolution:
        """The solution through the Riccati ODE (accurate to the ODE tolerance, about 1e-10)."""
        return self.solve_riccati()


@dataclass(frozen=True)
class MonteCarloValue:
    """A Monte Carlo estimate of a policy's value: ``mean`` (float) with standard error ``stderr``;
    ``times`` (n_steps + 1,), and the first ``paths.shape[0]`` state paths (n_keep, n_steps + 1, d)."""

    mean: float
    stderr: float
    n_paths: int
    n_steps: int
    times: np.ndarray
    paths: np.ndarray


def monte_carlo_value(problem: FiniteHorizonProblem, policy, x0, n_paths: int = 20000, n_steps: int = 200,
                      generator: torch.Generator | int | None = 0, scheme: str = "heun", keep_paths: int = 0,
                      dtype=torch.float64, device="cpu", show_progress: bool = False) -> MonteCarloValue:
    """Estimate E[int_0^T e^{-rho s} r ds + e^{-rho T} g(X_T) | X_0 = x0] under ``policy(t, x)`` by simulation.

    ``policy``: (float, (B, d)) -> (B, k); ``x0``: (d,). ``scheme``: ``"euler"`` (Euler–Maruyama, weak order 1)
    or ``"heun"`` (predictor–corrector in the drift with the noise at the left point: weak order 2 when the noise
    is additive, as for the LQR); the running reward is integrated by the trapezoidal rule with the same
    predictor. The estimate carries a time-step bias besides its ``stderr``: compare two ``n_steps``.
    """
    if scheme not in ("euler", "heun"):
        raise ValueError(f"scheme must be 'euler' or 'heun', got {scheme!r}")
    for name, v in (("n_paths", n_paths), ("n_steps", n_steps)):
        if not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    x0 = as_float64("x0", x0).reshape(-1)
    if x0.numel() != problem.state_dim:
        raise ValueError(f"x0 must have {problem.state_dim} entries, got {x0.numel()}")
    g = make_generator(generator, device)
    dt = problem.T / n_steps
    disc = lambda s: math.exp(-problem.rho * s)  # noqa: E731
    # simulate in chunks: tensors under torch's parallel grain size stay single-threaded, which is much faster
    # for these small element-wise steps on a busy CPU; the chunk size is fixed, so a seed gives fixed numbers
    chunks, kept = [], []
    starts = range(0, n_paths, _CHUNK)
    bar = progress(total=n_steps * len(starts), desc="Monte Carlo", enabled=show_progress)
    for s0 in starts:
        nb = min(_CHUNK, n_paths - s0)
        x = x0.to(dtype=dtype, device=device).expand(nb, -1).clone()
        total = torch.zeros(nb, 1, dtype=dtype, device=device)
        keep = max(0, min(keep_paths - s0, nb))
        path = [x[:keep].cpu().numpy()] if keep else []
        for i in range(n_steps):
            t = i * dt
            a = policy(t, x)
            f = problem.drift(t, x, a)
            S = problem.diffusion(t, x, a)
            dW = torch.randn(nb, S.shape[-1], 1, generator=g, dtype=dtype, device=device) * math.sqrt(dt)
            noise = (S @ dW).squeeze(-1)
            r0 = problem.reward(t, x, a)
            x_pred = x + f * dt + noise
            if scheme == "euler":
                total = total + disc(t) * r0 * dt
                x = x_pred
            else:
                a1 = policy(t + dt, x_pred)
                f1 = problem.drift(t + dt, x_pred, a1)
                r1 = problem.reward(t + dt, x_pred, a1)
                total = total + 0.5 * (disc(t) * r0 + disc(t + dt) * r1) * dt
                x = x + 0.5 * (f + f1) * dt + noise
            if keep:
                path.append(x[:keep].cpu().numpy())
            if show_progress:
                bar.update(1)
        chunks.append(total + disc(problem.T) * problem.terminal_reward(x))
        if keep:
            kept.append(np.stack(path, axis=1))
    if show_progress:
        bar.close()
    vals = torch.cat(chunks).squeeze(-1).double()
    if not bool(torch.isfinite(vals).all()):
        raise ValueError("the simulation diverged (NaN or inf): reduce the time step (n_steps)")
    paths = np.concatenate(kept) if kept else np.zeros((0, n_steps + 1, problem.state_dim))
    return MonteCarloValue(mean=float(vals.mean()), stderr=float(vals.std() / math.sqrt(n_paths)),
                           n_paths=int(n_paths), n_steps=int(n_steps), times=np.linspace(0.0, problem.T, n_steps + 1),
                           paths=paths)
