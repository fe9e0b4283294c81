"""The two kinds of control problem: infinite-horizon discounted (:class:`ControlProblem`) and finite-horizon
(:class:`FiniteHorizonProblem`), and the squash of network outputs into an action box.

A controlled diffusion dX = f dt + S dW with running reward r and discount rate rho. Shapes: states ``x`` are
(B, d), actions ``a`` are (B, k); ``drift`` returns (B, d), ``diffusion`` (B, d, m) and ``reward`` (B, 1).
Parameters are stored in float64 and cast to the dtype and device of ``x``. Time convention: a map that
depends on time takes it first, as ``t`` (a float or a (B, 1) tensor): ``drift(t, x, a)``; an autonomous
problem's maps omit it: ``drift(x, a)``.
"""
from __future__ import annotations

import math

import torch

from .._checks import (InputTypeError, _domain, _per_coordinate, _positive_int, _scalar, device as _device, flag,
                       floating_dtype, floating_tensor, inside, integer)
from ..runtime import make_generator

__all__ = ["ControlProblem", "FiniteHorizonProblem", "squash_to_bounds", "check_states"]


def check_states(problem, x, name: str = "x") -> torch.Tensor:
    """The input contract for states of ``problem``: ``x`` a floating tensor (batch, state_dim), finite, not
    empty, every entry inside ``problem.state_space`` (an open interval; Merton's wealth > 0)."""
    floating_tensor(name, x, (None, problem.state_dim))
    lo, hi = getattr(problem, "state_space", (-math.inf, math.inf))
    if math.isfinite(lo) or math.isfinite(hi):
        inside(name, x, lo, hi, f"the state space of {type(problem).__name__}")
    return x


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
    true when the diffusion depends on neither state nor action (the SDE schemes use it). ``state_space`` is
    the open interval (low, high) every coordinate of a state lies in (Merton's wealth: (0, inf)):
    :meth:`check_state` refuses states outside it.
    """

    state_dim: int
    action_dim: int
    noise_dim: int
    rho: float
    additive_noise: bool = False
    name: str = "problem"
    state_space: tuple[float, float] = (-math.inf, math.inf)

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
        if not bool((self.domain[0] >= self.state_space[0]).all() and (self.domain[1] <= self.state_space[1]).all()):
            raise ValueError(f"domain must lie in the state space {self.state_space}, got {domain!r}")
        self.additive_noise = flag("additive_noise", additive_noise)
        if name is not None:
            if not isinstance(name, str):
                raise InputTypeError(f"name must be a string, got {name!r}")
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
        """``x`` itself, after the input contract: a floating tensor (batch, state_dim), finite, not empty, every
        entry in ``state_space``; else a ``ValueError`` (a ``TypeError`` for the wrong kind) naming ``name``."""
        return check_states(self, x, name)

    def check_action(self, a: torch.Tensor, batch: int, name: str = "a") -> torch.Tensor:
        """``a`` itself, after checking it is a floating tensor of shape (batch, action_dim) (no sync: the values
        are checked by the caller where it matters, e.g. :func:`hjbcourse.simulate`)."""
        if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.shape != (batch, self.action_dim):
            got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise ValueError(f"{name} must have shape ({batch}, {self.action_dim}), got {got}")
        if not a.is_floating_point():
            raise InputTypeError(f"{name} must be a floating tensor, got dtype {a.dtype}")
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
        dtype, device = floating_dtype("dtype", dtype), _device("device", device)
        g = make_generator(generator, "cpu", "generator")
        lo, hi = self.domain
        u = torch.rand(n, self.state_dim, generator=g, dtype=torch.float64)
        return (lo + (hi - lo) * u).to(dtype=dtype, device=device)

    def grid(self, n: int = 201, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """(n, 1): an even grid over the domain of a one-dimensional problem, for plots and errors."""
        if self.state_dim != 1:
            raise ValueError(f"grid() is for one-dimensional problems; this one has state_dim={self.state_dim}")
        n = integer("n", n, minimum=2)
        dtype, device = floating_dtype("dtype", dtype), _device("device", device)
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

    state_space: tuple[float, float] = (-math.inf, math.inf)

    def __init__(self, state_dim: int, action_dim: int, noise_dim: int, T, rho=0.0, domain=(-1.0, 1.0)):
        self.state_dim, self.action_dim, self.noise_dim = (_positive_int("state_dim", state_dim),
                                                           _positive_int("action_dim", action_dim),
                                                           _positive_int("noise_dim", noise_dim))
        self.T = _scalar("T", T, positive=True)
        self.rho = _scalar("rho", rho, nonnegative=True)
        self.domain = _domain(domain, self.state_dim)
        if not bool((self.domain[0] < self.domain[1]).all()):
            raise ValueError(f"domain must have low < high in every coordinate, got {domain!r}")

    def check_state(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """``x`` itself, after the input contract (see :meth:`ControlProblem.check_state`)."""
        return check_states(self, x, name)

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
