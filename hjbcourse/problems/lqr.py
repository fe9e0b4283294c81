"""The stochastic linear-quadratic regulator (book: chapter "Stochastic LQR") and the course's coupled example."""
from __future__ import annotations

import numpy as np
import torch

from .._checks import _columns, _positive_int, _scalar, as_float64, device as _device, floating_dtype, integer, show
from ..runtime import make_generator
from .base import ControlProblem

__all__ = ["StochasticLQR", "coupled_lqr"]


def _is_stabilizable(A: np.ndarray, B: np.ndarray, tol: float = 1e-9) -> bool:
    """PBH test: every eigenvalue of A with non-negative real part is controllable through B."""
    n = A.shape[0]
    for lam in np.linalg.eigvals(A):
        if lam.real >= -tol:
            M = np.hstack([A - lam * np.eye(n), B])
            if np.linalg.matrix_rank(M, tol=1e-8 * max(1.0, np.abs(M).max())) < n:
                return False
    return True


class StochasticLQR(ControlProblem):
    """dX = (A X + B a) dt + D dW, r(x, a) = -1/2 (x'Qx + a'Ra), discount rho (book: LQR chapter, eq. (lqr)).

    ``A`` (d, d), ``B`` (d, k), ``Q`` (d, d) symmetric positive semi-definite, ``R`` (k, k) symmetric positive
    definite, ``D`` (d, m); scalars are accepted for d = k = m = 1. The pair (A - rho/2 I, B) must be
    stabilisable, otherwise the value is -inf for some states and a ``ValueError`` names ``A`` and ``B``.
    """

    name = "stochastic LQR"

    def __init__(self, A, B, Q, R, D, rho, domain=None):
        A = as_float64("A", A)
        A = A.reshape(1, 1) if A.ndim == 0 else A
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square matrix (d, d), got shape {tuple(A.shape)}")
        d = A.shape[0]
        B = _columns("B", B, d, "k")
        k = B.shape[1]
        Q = as_float64("Q", Q)
        Q = Q.reshape(1, 1) if Q.ndim == 0 and d == 1 else Q
        if tuple(Q.shape) != (d, d):
            raise ValueError(f"Q must have shape ({d}, {d}), got {tuple(Q.shape)}")
        R = as_float64("R", R)
        R = R.reshape(1, 1) if R.ndim == 0 and k == 1 else R
        if tuple(R.shape) != (k, k):
            raise ValueError(f"R must have shape ({k}, {k}), got {tuple(R.shape)}")
        D = _columns("D", D, d, "m")
        if not torch.allclose(Q, Q.T, atol=1e-12):
            raise ValueError(f"Q must be symmetric, got {show(Q.tolist())}")
        if float(torch.linalg.eigvalsh(Q).min()) < -1e-12:
            raise ValueError(f"Q must be positive semi-definite, got {show(Q.tolist())}")
        if not torch.allclose(R, R.T, atol=1e-12):
            raise ValueError(f"R must be symmetric, got {show(R.tolist())}")
        if float(torch.linalg.eigvalsh(R).min()) <= 0:
            raise ValueError(f"R must be positive definite (every action must cost something), got {show(R.tolist())}")
        rho_v = _scalar("rho", rho, positive=True)
        if not _is_stabilizable(A.numpy() - 0.5 * rho_v * np.eye(d), B.numpy()):
            raise ValueError("the pair (A - rho/2 I, B) must be stabilisable: some unstable mode of A cannot be "
                             "reached by the control B, so the value is -infinity")
        if domain is None:
            domain = (-2.0, 2.0)
        super().__init__(d, k, D.shape[1], rho_v, domain, additive_noise=True)
        self.A, self.B, self.Q, self.R, self.D = A, B, Q, R, D

    @classmethod
    def scalar(cls, alpha=-0.5, beta=1.0, q=1.0, r_a=0.1, sigma=0.3, rho=0.1, domain=(-2.0, 2.0)):
        """The course's one-dimensional example: dX = (alpha X + beta a) dt + sigma dW, r = -1/2 (q x^2 + r_a a^2).

        Each parameter is a real number (``q``, ``sigma`` >= 0, ``r_a``, ``rho`` > 0), checked under its own name."""
        alpha, beta = _scalar("alpha", alpha), _scalar("beta", beta)
        q, sigma = _scalar("q", q, nonnegative=True), _scalar("sigma", sigma, nonnegative=True)
        r_a = _scalar("r_a", r_a, positive=True)
        return cls([[alpha]], [[beta]], [[q]], [[r_a]], [[sigma]], rho, domain=domain)

    def drift(self, x, a):
        return x @ self.A.to(x).T + a @ self.B.to(x).T

    def diffusion(self, x, a):
        return self.D.to(x).unsqueeze(0).expand(x.shape[0], -1, -1)

    def reward(self, x, a):
        return -0.5 * (((x @ self.Q.to(x)) * x).sum(-1, keepdim=True) + ((a @ self.R.to(x)) * a).sum(-1, keepdim=True))

    def sample_states(self, n, generator=None, dtype=torch.float32, device="cpu"):
        """(n, d): half uniform on the domain box, half with a uniformly distributed radius around the origin
        (a uniform direction times a radius uniform on [0, half-width]). In many dimensions a box sample
        leaves the neighbourhood of the origin, where the optimal paths go, empty; the radial half fills it."""
        n = _positive_int("n", n)
        dtype, device = floating_dtype("dtype", dtype), _device("device", device)
        g = make_generator(generator, "cpu", "generator")
        lo, hi = self.domain
        n_box = n - n // 2
        box = lo + (hi - lo) * torch.rand(n_box, self.state_dim, generator=g, dtype=torch.float64)
        direction = torch.randn(n // 2, self.state_dim, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = torch.rand(n // 2, 1, generator=g, dtype=torch.float64) * (0.5 * (hi - lo)).min()
        radial = torch.maximum(torch.minimum(direction * radius, hi), lo)
        return torch.cat([box, radial])[torch.randperm(n, generator=g)].to(dtype=dtype, device=device)

    def exact(self):
        from ..exact import solve_lqr

        return solve_lqr(self)


def coupled_lqr(d: int = 10, alpha: float = -0.5, coupling: float = 0.2, skew: float = 0.1, q: float = 1.0,
                r_a: float = 0.1, sigma: float = 0.3, noise_coupling: float = 0.2, rho: float = 0.1,
                domain=(-2.0, 2.0)):
    """The d-dimensional coupled LQR of the chapter "Stochastic LQR" (book: section "Ten coupled states").

    Each state is the scalar example's (drift ``alpha``, action cost ``r_a``, noise ``sigma``), coupled to its
    neighbours on a chain: A = alpha I + coupling (N + N') + skew (N - N') with N the shift matrix (ones on
    the superdiagonal), B = I, Q = q I, R = r_a I and D = sigma (I + noise_coupling (N + N')): the drift mixes
    neighbours, non-symmetrically, and so does the noise.
    """
    d = integer("d", d, minimum=2)
    alpha, coupling, skew, q, sigma, noise_coupling = (
        _scalar(n, v) for n, v in (("alpha", alpha), ("coupling", coupling), ("skew", skew), ("q", q),
                                   ("sigma", sigma), ("noise_coupling", noise_coupling)))
    r_a = _scalar("r_a", r_a, positive=True)
    N = torch.diag(torch.ones(d - 1, dtype=torch.float64), 1)
    eye = torch.eye(d, dtype=torch.float64)
    A = alpha * eye + coupling * (N + N.T) + skew * (N - N.T)
    D = sigma * (eye + noise_coupling * (N + N.T))
    return StochasticLQR(A, eye, q * eye, r_a * eye, D, rho, domain=domain)
