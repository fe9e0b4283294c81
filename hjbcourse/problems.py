"""Control problems: data plus the maps drift, diffusion and reward (book, chapter "The stochastic HJB").

A controlled diffusion dX = f(X, a) dt + S(X, a) dW with running reward r(X, a) and discount rate rho.
Shapes: states ``x`` are (B, d), actions ``a`` are (B, k); ``drift`` returns (B, d), ``diffusion``
(B, d, m) and ``reward`` (B, 1). Parameters are stored in float64 and cast to the dtype and device of ``x``.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch

from .runtime import make_generator

__all__ = [
    "ControlProblem",
    "FiniteHorizonProblem",
    "StochasticLQR",
    "coupled_lqr",
    "Merton",
    "as_float64",
    "squash_to_bounds",
]


def as_float64(name: str, value, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``value`` (number, list, numpy array or tensor) as a float64 CPU tensor, checked for NaN and shape.

    Raises ``ValueError`` naming ``name`` when the value holds NaN/inf or has the wrong shape.
    """
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got a value containing NaN or inf")
    return t


def _scalar(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    t = as_float64(name, value)
    if t.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(t.shape)}")
    v = float(t.reshape(()))
    if positive and not v > 0:
        raise ValueError(f"{name} must be positive, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be non-negative, got {v}")
    return v


def _per_coordinate(name: str, value, n: int, allow_inf: bool = False) -> torch.Tensor:
    """One number for every coordinate, or ``n`` numbers, as a float64 tensor of shape (n,)."""
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if t.numel() not in (1, n):
        raise ValueError(f"{name} must be one number or {n} (one per coordinate), got {t.numel()}")
    if bool(torch.isnan(t).any()) or (not allow_inf and not bool(torch.isfinite(t).all())):
        raise ValueError(f"{name} must hold {'numbers' if allow_inf else 'finite numbers'}, got {t.tolist()}")
    return t.expand(n).clone()


def _domain(domain, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each one number or ``n``, as two float64 tensors of shape (n,)."""
    try:
        lo, hi = domain
    except (TypeError, ValueError) as e:
        raise ValueError(f"domain must be a pair (low, high), got {domain!r}") from e
    return _per_coordinate("domain's low end", lo, n), _per_coordinate("domain's high end", hi, n)


def _real(v) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_number(v) -> bool:
    """A finite real number > 0 (numpy scalars included), not a bool."""
    return _real(v) and math.isfinite(v) and v > 0


def _columns(name: str, value, d: int, cols: str) -> torch.Tensor:
    """A (d, n) matrix such as the LQR's B or D. A number or a vector is one column of d entries or, for d = 1,
    one row; anything else must already have d rows."""
    M = as_float64(name, value)
    M = M.reshape(d, -1) if M.ndim < 2 and (M.numel() == d or (d == 1 and M.numel() > 0)) else M
    if M.ndim != 2 or M.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {cols}), got {tuple(M.shape)}")
    return M


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def squash_to_bounds(raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(B, k) -> (B, k): map unconstrained numbers into the box [low, high] (entries may be infinite).

    Both ends finite: ``low + (high - low) * sigmoid``; one end finite: a softplus away from it; none: identity.
    """
    low = low.to(raw)
    high = high.to(raw)
    out = raw
    lo_f, hi_f = torch.isfinite(low), torch.isfinite(high)
    both = lo_f & hi_f
    width = torch.where(both, high - low, torch.ones_like(high))
    out = torch.where(both, torch.where(both, low, 0) + width * torch.sigmoid(raw), out)
    out = torch.where(lo_f & ~hi_f, torch.where(lo_f, low, 0) + torch.nn.functional.softplus(raw), out)
    out = torch.where(hi_f & ~lo_f, torch.where(hi_f, high, 0) - torch.nn.functional.softplus(-raw), out)
    return out


class ControlProblem:
    """An infinite-horizon discounted control problem: maximise E int_0^inf e^{-rho t} r(X_t, a_t) dt.

    Subclasses set ``state_dim``, ``action_dim``, ``noise_dim``, ``rho``, the box ``domain`` (the states a
    reader looks at, used for training and plots) and the action box ``action_low``/``action_high`` (entries
    may be +-inf), and implement :meth:`drift`, :meth:`diffusion` and :meth:`reward`. ``additive_noise`` is
    true when the diffusion depends on neither state nor action (the SDE schemes use it).
    """

    state_dim: int
    action_dim: int
    noise_dim: int
    rho: float
    additive_noise: bool = False
    name: str = "problem"

    def __init__(self, state_dim: int, action_dim: int, noise_dim: int, rho, domain, action_low=None,
                 action_high=None, additive_noise: bool = False, name: str | None = None):
        self.state_dim, self.action_dim, self.noise_dim = (_positive_int("state_dim", state_dim),
                                                           _positive_int("action_dim", action_dim),
                                                           _positive_int("noise_dim", noise_dim))
        self.rho = _scalar("rho", rho, positive=True)
        self.domain = _domain(domain, self.state_dim)
        if not bool((self.domain[0] < self.domain[1]).all()):
            raise ValueError(f"domain must have low < high in every coordinate, got {domain!r}")
        inf = torch.full((self.action_dim,), math.inf, dtype=torch.float64)
        self.action_low = -inf if action_low is None else _per_coordinate("action_low", action_low, self.action_dim, True)
        self.action_high = inf if action_high is None else _per_coordinate("action_high", action_high, self.action_dim, True)
        if not bool((self.action_low < self.action_high).all()):
            raise ValueError("action_low must be below action_high in every coordinate")
        self.additive_noise = bool(additive_noise)
        if name is not None:
            self.name = name

    # -- the model ---------------------------------------------------------------------------------
    def drift(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, k) -> (B, d): the drift f(x, a)."""
        raise NotImplementedError

    def diffusion(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, k) -> (B, d, m): the diffusion matrix S(x, a)."""
        raise NotImplementedError

    def reward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, k) -> (B, 1): the running reward r(x, a)."""
        raise NotImplementedError

    def exact(self):
        """The closed-form solution (an object with ``value(x)`` and ``policy(x)``), where one exists."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form solution")

    @property
    def has_exact(self) -> bool:
        try:
            self.exact()
        except NotImplementedError:
            return False
        return True

    # -- helpers shared by every solver -------------------------------------------------------------
    def check_state(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor of shape (batch, {self.state_dim}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.state_dim:
            raise ValueError(f"{name} must have shape (batch, {self.state_dim}), got {tuple(x.shape)}")
        return x

    def check_action(self, a: torch.Tensor, batch: int, name: str = "a") -> torch.Tensor:
        if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.shape != (batch, self.action_dim):
            got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise ValueError(f"{name} must have shape ({batch}, {self.action_dim}), got {got}")
        return a

    def squash_action(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, k) -> (B, k): map an unconstrained network output into the action set."""
        return squash_to_bounds(raw, self.action_low, self.action_high)

    def clip_action(self, a: torch.Tensor) -> torch.Tensor:
        """(B, k) -> (B, k): project an action onto the action box."""
        return torch.maximum(torch.minimum(a, self.action_high.to(a)), self.action_low.to(a))

    def sample_states(self, n: int, generator: torch.Generator | int | None = None, dtype=torch.float32,
                      device="cpu") -> torch.Tensor:
        """(n, d): training states, uniform on ``domain`` (subclasses may add mass where it is needed)."""
        n = _positive_int("n", n)
        g = make_generator(generator, "cpu")
        lo, hi = self.domain
        u = torch.rand(n, self.state_dim, generator=g, dtype=torch.float64)
        return (lo + (hi - lo) * u).to(dtype=dtype, device=device)

    def grid(self, n: int = 201, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """(n, 1): an even grid over the domain of a one-dimensional problem, for plots and errors."""
        if self.state_dim != 1:
            raise ValueError(f"grid() is for one-dimensional problems; this one has state_dim={self.state_dim}")
        lo, hi = self.domain
        return torch.linspace(float(lo[0]), float(hi[0]), n, dtype=dtype, device=device).unsqueeze(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_dim={self.state_dim}, action_dim={self.action_dim}, rho={self.rho})"


class FiniteHorizonProblem:
    """A finite-horizon problem: maximise E[int_t^T e^{-rho (s-t)} r(s, X_s, a_s) ds + e^{-rho (T-t)} g(X_T)].

    The maps take time first: ``drift(t, x, a)`` (B, d), ``diffusion(t, x, a)`` (B, d, m),
    ``reward(t, x, a)`` (B, 1), ``terminal_reward(x)`` (B, 1); ``t`` is a float or a (B, 1) tensor.
    """

    name: str = "finite-horizon problem"

    def __init__(self, state_dim: int, action_dim: int, noise_dim: int, T, rho=0.0, domain=(-1.0, 1.0)):
        self.state_dim, self.action_dim, self.noise_dim = (_positive_int("state_dim", state_dim),
                                                           _positive_int("action_dim", action_dim),
                                                           _positive_int("noise_dim", noise_dim))
        self.T = _scalar("T", T, positive=True)
        self.rho = _scalar("rho", rho, nonnegative=True)
        self.domain = _domain(domain, self.state_dim)

    def drift(self, t, x, a):
        raise NotImplementedError

    def diffusion(self, t, x, a):
        raise NotImplementedError

    def reward(self, t, x, a):
        raise NotImplementedError

    def terminal_reward(self, x):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_dim={self.state_dim}, T={self.T}, rho={self.rho})"


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
            raise ValueError("Q must be symmetric")
        if float(torch.linalg.eigvalsh(Q).min()) < -1e-12:
            raise ValueError("Q must be positive semi-definite")
        if not torch.allclose(R, R.T, atol=1e-12):
            raise ValueError("R must be symmetric")
        if float(torch.linalg.eigvalsh(R).min()) <= 0:
            raise ValueError("R must be positive definite (every action must cost something)")
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
        """The course's one-dimensional example: dX = (alpha X + beta a) dt + sigma dW, r = -1/2 (q x^2 + r_a a^2)."""
        if _scalar("sigma", sigma) < 0:
            raise ValueError(f"sigma must be non-negative, got {sigma}")
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
        g = make_generator(generator, "cpu")
        lo, hi = self.domain
        n_box = n - n // 2
        box = lo + (hi - lo) * torch.rand(n_box, self.state_dim, generator=g, dtype=torch.float64)
        direction = torch.randn(n // 2, self.state_dim, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = torch.rand(n // 2, 1, generator=g, dtype=torch.float64) * (0.5 * (hi - lo)).min()
        radial = torch.maximum(torch.minimum(direction * radius, hi), lo)
        return torch.cat([box, radial])[torch.randperm(n, generator=g)].to(dtype=dtype, device=device)

    def exact(self):
        from .exact import solve_lqr

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
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    N = torch.diag(torch.ones(d - 1, dtype=torch.float64), 1)
    eye = torch.eye(d, dtype=torch.float64)
    A = alpha * eye + coupling * (N + N.T) + skew * (N - N.T)
    D = sigma * (eye + noise_coupling * (N + N.T))
    return StochasticLQR(A, eye, q * eye, r_a * eye, D, rho, domain=domain)


class Merton(ControlProblem):
    """Merton's portfolio and consumption problem (book: Merton chapter).

    Wealth X > 0 (B, 1); actions (B, 2) = [pi, k]: the risky fraction and consumption per unit of wealth.
    dX = (r + pi (mu - r) - k) X dt + pi sigma X dW, reward u(k X) with CRRA utility
    u(c) = c^{1-gamma} / (1 - gamma), or log c when gamma == 1. Lifetime utility is finite only when
    rho - (1 - gamma) M > 0 with M = r + (mu - r)^2 / (2 gamma sigma^2); otherwise a ``ValueError``.
    """

    name = "Merton"

    def __init__(self, r=0.03, mu=0.08, sigma=0.2, gamma=2.0, rho=0.05, domain=(0.5, 2.0),
                 pi_bounds=(-1.0, 3.0), k_bounds=(1e-3, 1.0)):
        self.r = _scalar("r", r)
        self.mu = _scalar("mu", mu)
        self.sigma = _scalar("sigma", sigma, positive=True)
        self.gamma = _scalar("gamma", gamma, positive=True)
        rho_v = _scalar("rho", rho, positive=True)
        M = self.r + (self.mu - self.r) ** 2 / (2 * self.gamma * self.sigma ** 2)
        if not rho_v - (1 - self.gamma) * M > 0:
            raise ValueError(f"rho - (1-gamma) M must be positive for lifetime utility to be finite, got "
                             f"rho - (1-gamma) M = {rho_v - (1 - self.gamma) * M:.6g} (rho={rho_v}, gamma={self.gamma}, M={M:.6g})")
        lo, _ = _domain(domain, 1)
        if not float(lo) > 0:
            raise ValueError(f"domain must lie in positive wealth, got {domain!r}")
        if not (pi_bounds[0] < pi_bounds[1]) or not (0 <= k_bounds[0] < k_bounds[1]):
            raise ValueError(f"pi_bounds and k_bounds must be increasing with k_bounds[0] >= 0, got {pi_bounds}, {k_bounds}")
        super().__init__(1, 2, 1, rho_v, domain, action_low=[pi_bounds[0], k_bounds[0]],
                         action_high=[pi_bounds[1], k_bounds[1]])
        self.M = M
        self.log_utility = self.gamma == 1.0

    def utility(self, c: torch.Tensor) -> torch.Tensor:
        """CRRA utility of consumption c > 0 (log when gamma == 1)."""
        c = c.clamp_min(1e-12)
        if self.log_utility:
            return torch.log(c)
        return c.pow(1 - self.gamma) / (1 - self.gamma)

    def drift(self, x, a):
        pi, k = a[:, 0:1], a[:, 1:2]
        return (self.r + pi * (self.mu - self.r) - k) * x

    def diffusion(self, x, a):
        return (a[:, 0:1] * self.sigma * x).unsqueeze(-1)

    def reward(self, x, a):
        return self.utility(a[:, 1:2] * x)

    def exact(self):
        from .exact import solve_merton

        return solve_merton(self)
