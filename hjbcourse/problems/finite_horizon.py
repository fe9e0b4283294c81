"""The finite-horizon stochastic LQR and its Riccati ODE (book: Appendix C).

Maximise E[int_t^T e^{-rho (s-t)} r(X_s, a_s) ds + e^{-rho (T-t)} g(X_T)] with dX = (A X + B a) dt + D dW,
r(x, a) = -1/2 (x'Qx + a'Ra) and terminal reward g(x) = -1/2 x'Gx. The value is V(t, x) = -1/2 x'P(t)x - c(t),
where P and c solve (Appendix C, derived in :func:`hjbcourse.derivations.finite_horizon_lqr_riccati_ode`)

    -dP/dt = A'P + PA - P B R^{-1} B'P + Q - rho P,    P(T) = G,
    -dc/dt = 1/2 Tr(D D'P) - rho c,                     c(T) = 0,

integrated backwards here with scipy's ``solve_ivp``; the optimal feedback is a*(t, x) = -R^{-1} B'P(t) x.
:func:`hjbcourse.sde.monte_carlo_value` estimates the value of any feedback policy by simulation.
"""
from __future__ import annotations

import numpy as np
import torch

from .._checks import _scalar, as_float64
from .base import FiniteHorizonProblem
from .lqr import StochasticLQR

__all__ = ["FiniteHorizonLQR"]


class FiniteHorizonLQR(FiniteHorizonProblem):
    """dX = (A X + B a) dt + D dW on [0, T], r = -1/2 (x'Qx + a'Ra), terminal reward -1/2 x'Gx, discount rho.

    ``A, B, Q, R, D`` as in :class:`~hjbcourse.StochasticLQR` (same checks, except stabilisability, which a
    finite horizon does not need); ``G`` (d, d) symmetric positive semi-definite; ``T`` > 0; ``rho`` >= 0.
    The terminal reward is discounted like the running reward, so that V solves
    rho V = max_a {r + dV/dt + L^a V} (Appendix C).
    """

    name = "finite-horizon LQR"

    def __init__(self, A, B, Q, R, D, G, T, rho=0.0, domain=(-2.0, 2.0)):
        rho_v = _scalar("rho", rho, nonnegative=True)
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
        """The course's one-dimensional LQR on [0, T] with terminal reward -1/2 g x^2 (each parameter a real
        number, checked under its own name)."""
        alpha, beta, q, r_a, sigma, g = (_scalar(n, v) for n, v in (("alpha", alpha), ("beta", beta), ("q", q),
                                                                     ("r_a", r_a), ("sigma", sigma), ("g", g)))
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

    def solve_riccati(self, rtol: float = 1e-10, atol: float = 1e-12) -> "FiniteHorizonLQRSolution":
        """Integrate the Riccati ODE backwards from P(T) = G, c(T) = 0 (scipy ``solve_ivp``, DOP853, dense)."""
        d = self.state_dim
        y_T = np.concatenate([self.G.numpy().reshape(-1), [0.0]])
        from scipy.integrate import solve_ivp

        from ..exact import FiniteHorizonLQRSolution

        sol = solve_ivp(self.riccati_rhs, (self.T, 0.0), y_T, method="DOP853", rtol=rtol, atol=atol,
                        dense_output=True)
        if not sol.success:
            raise ValueError(f"the Riccati ODE could not be integrated on [0, T]: {sol.message}")
        BtRinv = np.linalg.solve(self.R.numpy(), self.B.numpy().T)
        return FiniteHorizonLQRSolution(T=self.T, d=d, _sol=sol, _BtRinv=BtRinv)

    def exact(self) -> "FiniteHorizonLQRSolution":
        """The solution through the Riccati ODE (accurate to the ODE tolerance, about 1e-10)."""
        return self.solve_riccati()
