"""Closed-form solutions: the discounted Riccati solution of the stochastic LQR and Merton's constants.

Each solution object has ``value(x)`` (B, d) -> (B, 1) and ``policy(x)`` (B, d) -> (B, k), so every solver
is scored by the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

__all__ = ["QuadraticSolution", "LQRSolution", "MertonSolution", "NoClosedForm", "solve_lqr", "solve_merton",
           "riccati_residual"]


def riccati_residual(A, B, Q, R, P, rho) -> np.ndarray:
    """The discounted algebraic Riccati residual
    (A - rho/2 I)' P + P (A - rho/2 I) - P B R^{-1} B' P + Q (zero at the solution)."""
    A, B, Q, R, P = (np.asarray(M, dtype=np.float64) for M in (A, B, Q, R, P))
    As = A - 0.5 * rho * np.eye(A.shape[0])
    return As.T @ P + P @ As - P @ B @ np.linalg.solve(R, B.T @ P) + Q


@dataclass(frozen=True)
class QuadraticSolution:
    """A quadratic value and a linear feedback: V(x) = -1/2 x'Px - c and a(x) = -K x (the LQR's shape, in
    continuous time here and with a time step in :mod:`hjbcourse.discrete`)."""

    P: torch.Tensor
    K: torch.Tensor
    c: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1)."""
        P = self.P.to(x)
        return -0.5 * ((x @ P) * x).sum(-1, keepdim=True) - self.c

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k)."""
        return -x @ self.K.to(x).T

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad V = -P x."""
        return -x @ self.P.to(x)


@dataclass(frozen=True)
class LQRSolution(QuadraticSolution):
    """V(x) = -1/2 x'Px - c and a*(x) = -K x, with K = R^{-1} B'P and c = Tr(D D' P) / (2 rho)."""

    rho: float


def solve_lqr(problem) -> LQRSolution:
    """Solve the discounted Riccati equation of a :class:`~hjbcourse.StochasticLQR` (scipy's CARE on A - rho/2 I)."""
    A, B, Q, R, D = (M.numpy() for M in (problem.A, problem.B, problem.Q, problem.R, problem.D))
    rho = problem.rho
    As = A - 0.5 * rho * np.eye(A.shape[0])
    try:
        P = scipy.linalg.solve_continuous_are(As, B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as e:
        raise ValueError(f"the discounted Riccati equation has no stabilising solution for these A, B, Q, R: {e}") from e
    P = 0.5 * (P + P.T)
    K = np.linalg.solve(R, B.T @ P)
    c = float(np.trace(D @ D.T @ P)) / (2 * rho)
    return LQRSolution(P=torch.from_numpy(P), K=torch.from_numpy(K), c=c, rho=rho)


@dataclass(frozen=True)
class MertonSolution:
    """pi* = (mu - r) / (gamma sigma^2), k* = (rho - (1-gamma) M) / gamma, V(x) = A x^{1-gamma} / (1-gamma).

    For gamma = 1 (log utility): k* = rho and V(x) = log(rho x) / rho + (M - rho) / rho^2; ``A`` is then nan.
    """

    pi: float
    k: float
    A: float
    M: float
    gamma: float
    rho: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1), wealth x > 0."""
        if self.gamma == 1.0:
            return torch.log(self.rho * x) / self.rho + (self.M - self.rho) / self.rho ** 2
        return self.A * x.pow(1 - self.gamma) / (1 - self.gamma)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 2): the constant controls [pi*, k*] at every wealth."""
        return torch.tensor([self.pi, self.k], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)


class NoClosedForm(NotImplementedError, ValueError):
    """A valid problem whose closed form does not apply (e.g. Merton's optimum outside the action box).

    A ``NotImplementedError``, so that ``problem.has_exact`` is False and the solvers run without a reference,
    and a ``ValueError`` for callers that asked for the closed form explicitly."""


def solve_merton(problem) -> MertonSolution:
    """Merton's closed form for a :class:`~hjbcourse.Merton` problem (book: Appendix B)."""
    r, mu, sigma, gamma, rho = problem.r, problem.mu, problem.sigma, problem.gamma, problem.rho
    M = r + (mu - r) ** 2 / (2 * gamma * sigma ** 2)
    pi = (mu - r) / (gamma * sigma ** 2)
    k = (rho - (1 - gamma) * M) / gamma
    A = math.nan if gamma == 1.0 else k ** (-gamma)
    lo, hi = problem.action_low.tolist(), problem.action_high.tolist()
    if not (lo[0] <= pi <= hi[0] and lo[1] <= k <= hi[1]):
        raise NoClosedForm(f"the unconstrained optimum (pi={pi:.4g}, k={k:.4g}) lies outside the action bounds "
                         f"pi_bounds={lo[0], hi[0]}, k_bounds={lo[1], hi[1]}; the closed form does not apply")
    return MertonSolution(pi=pi, k=k, A=A, M=M, gamma=gamma, rho=rho)
