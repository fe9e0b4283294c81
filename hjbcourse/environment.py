"""The world a model-free learner sees: a sampler of transitions (book: chapter "Continuous-time q-learning").

A model-free solver (:class:`~hjbcourse.QLearning`) never calls a problem's drift, diffusion or generator.
It talks to an *environment*, any object with this small interface (the :class:`Sampler` protocol):

``dt``                       the time step of one transition (float, > 0)
``rho``                      the discount rate (float, > 0): part of the objective, not of the model
``state_dim``, ``action_dim``  d and k
``action_low``, ``action_high``  (k,) tensors: the action box (entries may be +-inf)
``state_low``, ``state_high``    (d,) tensors: the box of states the learner is asked about (used to scale
                             networks and to restart paths that wander off)
``reset(n, generator)``      -> x (n, d): n starting states
``step(x, a, generator)``    -> (r (n, 1), x_next (n, d)): from states x (n, d) under actions a (n, k) held
                             fixed for ``dt``, the reward *rate* r (the discounted reward collected over the step,
                             divided by dt) and the state after the step

The sampler owns the dtype and device of what it returns; the learner converts. ``generator`` is a
``torch.Generator`` (or None); the same generator state gives the same transitions.

:class:`TransitionSampler` is the course's world: it wraps a :class:`~hjbcourse.ControlProblem` as a black box
and simulates each step with a fine sub-step (:func:`hjbcourse.simulate`, weak order 2), so the transitions
are those of the continuous-time diffusion, not of a coarse Euler scheme. A reader can pass any object with
the same attributes and methods instead, for instance a wrapper around a simulator the learner cannot see into.

Layer: numerics, beside :mod:`~hjbcourse.generator`, :mod:`~hjbcourse.sde` and :mod:`~hjbcourse.nets`: it imports
the problems and :func:`hjbcourse.sde.simulate` below it, and only the solvers above it import it.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch

from ._checks import _positive_int, _positive_number, floating_dtype, floating_tensor, real, step_count
from .problems import ControlProblem
from .runtime import make_generator
from .sde import simulate

__all__ = ["Sampler", "TransitionSampler", "check_sampler"]

_ATTRS = ("dt", "rho", "state_dim", "action_dim", "action_low", "action_high", "state_low", "state_high")


@runtime_checkable
class Sampler(Protocol):
    """The interface a model-free learner relies on (see the module docstring)."""

    dt: float
    rho: float
    state_dim: int
    action_dim: int
    action_low: torch.Tensor
    action_high: torch.Tensor
    state_low: torch.Tensor
    state_high: torch.Tensor

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def step(self, x: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_sampler(env) -> None:
    """Raise ``ValueError`` naming ``env`` and what is missing or malformed in a user's sampler."""
    missing = [n for n in _ATTRS + ("reset", "step") if not hasattr(env, n)]
    if missing:
        raise ValueError(f"env must provide {', '.join(missing)} (see hjbcourse.environment); "
                         f"got a {type(env).__name__}")
    if not (callable(env.reset) and callable(env.step)):
        raise ValueError("env.reset and env.step must be callable")
    for name in ("dt", "rho"):
        if not _positive_number(getattr(env, name)):
            raise ValueError(f"env.{name} must be a positive number, got {getattr(env, name)!r}")
    for name, size in (("action_low", env.action_dim), ("action_high", env.action_dim),
                       ("state_low", env.state_dim), ("state_high", env.state_dim)):
        t = getattr(env, name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (size,):
            raise ValueError(f"env.{name} must be a tensor of shape ({size},), got {t!r}")
    finite = bool(torch.isfinite(env.state_low).all() & torch.isfinite(env.state_high).all())
    if not bool((env.state_low < env.state_high).all()) or not finite:
        raise ValueError("env.state_low must be finite and below env.state_high in every coordinate")


class TransitionSampler:
    """A :class:`~hjbcourse.ControlProblem` as a black-box world that returns transitions of step ``dt``.

    ``step`` holds the action fixed over [0, dt], simulates the diffusion with ``ceil(dt / substep)`` sub-steps
    of the weak order-2 scheme (Euler for problems it does not cover), and returns the reward rate
    r = (1/dt) int_0^dt e^{-rho s} r(X_s, a) ds and X_dt. States come back in ``dtype`` (float64 by default) on
    the device of the input.
    """

    def __init__(self, problem: ControlProblem, dt: float, substep: float = 0.005, dtype=torch.float64):
        if not isinstance(problem, ControlProblem):
            raise ValueError(f"problem must be a ControlProblem, got {type(problem).__name__}")
        dt, substep = real("dt", dt, positive=True), real("substep", substep, positive=True)
        self._problem = problem
        self.dt = dt
        self.rho = float(problem.rho)
        self.state_dim, self.action_dim = problem.state_dim, problem.action_dim
        self.action_low, self.action_high = problem.action_low.clone(), problem.action_high.clone()
        self.state_low, self.state_high = problem.domain[0].clone(), problem.domain[1].clone()
        ratio = self.dt / substep    # a float32 substep, read exactly, is off by up to 6e-8 relative: tolerated
        self.n_sub = step_count("dt / substep", max(1, math.ceil(ratio - max(1e-9, 1e-7 * ratio))), None)
        self.scheme = "weak2" if (problem.additive_noise or problem.noise_dim == 1) else "euler"
        self.dtype = floating_dtype("dtype", dtype)
        self.name = getattr(problem, "name", type(problem).__name__)

    def reset(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, d): starting states drawn by the problem's own state sampler."""
        n = _positive_int("n", n)
        seed = None if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator,
                                                                device=generator.device).item())
        return self._problem.sample_states(n, generator=seed, dtype=self.dtype)

    def step(self, x: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None):
        """(n, d), (n, k) -> (r (n, 1), x_next (n, d)) after one step of length ``dt`` with ``a`` held fixed.

        ``x`` must be finite states of the problem's state space and ``a`` finite; an action outside the action box
        is projected onto it (clipped coordinate by coordinate) before the step: the world enforces its bounds."""
        p = self._problem
        p.check_state(x, "x")
        p.check_action(a, x.shape[0], "a")
        floating_tensor("a", a)
        x = x.to(self.dtype)
        a = p.clip_action(a.to(x))
        g = generator if generator is not None else make_generator(None, x.device)
        sim = simulate(p, lambda _x: a, x, T=self.dt, dt=self.dt / self.n_sub, scheme=self.scheme, generator=g)
        return sim.reward / self.dt, sim.x_T

    def __repr__(self) -> str:
        return f"TransitionSampler({self.name}, dt={self.dt}, substeps={self.n_sub})"
