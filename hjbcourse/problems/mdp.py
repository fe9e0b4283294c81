"""Finite Markov decision processes (book: chapter "The Bellman equation"): transition probabilities ``P``
(S, A, S) with P[s, a, s'] = P(s' | s, a), one-step rewards ``R`` (S, A) and a discount factor ``gamma`` in (0, 1).
Their solvers (value and policy iteration) are in :mod:`hjbcourse.discrete`."""
from __future__ import annotations

import torch

from .._checks import _check_seed, _positive_int, _scalar, as_float64
from ..runtime import make_generator

__all__ = ["FiniteMDP", "random_mdp"]


class FiniteMDP:
    """A finite MDP: ``P`` (S, A, S) transition probabilities, ``R`` (S, A) rewards, discount ``gamma``.

    Rows P[s, a, :] must be probability vectors; ``gamma`` must lie in (0, 1) so the Bellman operator is a
    gamma-contraction in the sup norm. Inputs are converted to float64 tensors.
    """

    def __init__(self, P, R, gamma: float):
        P, R = as_float64("P", P), as_float64("R", R)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S), got {tuple(P.shape)}")
        S, A = P.shape[0], P.shape[1]
        if tuple(R.shape) != (S, A):
            raise ValueError(f"R must have shape ({S}, {A}) to match P, got {tuple(R.shape)}")
        if bool((P < 0).any()) or not torch.allclose(P.sum(-1), torch.ones(S, A, dtype=torch.float64), atol=1e-9):
            raise ValueError("P must hold probabilities: non-negative, each P[s, a, :] summing to 1")
        gamma = _scalar("gamma", gamma)
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
        if S < 1 or A < 1:
            raise ValueError(f"P must hold at least one state and one action, got shape {tuple(P.shape)}")
        self.P, self.R, self.gamma = P, R, gamma

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def q_values(self, V: torch.Tensor) -> torch.Tensor:
        """(S,) -> (S, A): Q(s, a) = R(s, a) + gamma sum_s' P(s' | s, a) V(s')."""
        return self.R + self.gamma * self.P @ V

    def __repr__(self) -> str:
        return f"FiniteMDP(n_states={self.n_states}, n_actions={self.n_actions}, gamma={self.gamma})"


def random_mdp(n_states: int = 20, n_actions: int = 3, gamma: float = 0.9, branching: int = 3,
               seed: int | torch.Generator | None = 0) -> FiniteMDP:
    """A random MDP: from each (s, a) the chain moves to ``branching`` random states with random
    probabilities; rewards are standard normal. The same seed gives the same MDP."""
    for name, v in (("n_states", n_states), ("n_actions", n_actions), ("branching", branching)):
        _positive_int(name, v)
    if not isinstance(seed, torch.Generator) and seed is not None:
        _check_seed(seed)
    if branching > n_states:
        raise ValueError(f"branching must be at most n_states={n_states}, got {branching}")
    g = make_generator(seed, "cpu")
    P = torch.zeros(n_states, n_actions, n_states, dtype=torch.float64)
    for s in range(n_states):
        for a in range(n_actions):
            nxt = torch.randperm(n_states, generator=g)[:branching]
            w = torch.rand(branching, generator=g, dtype=torch.float64) + 0.1
            P[s, a, nxt] = w / w.sum()
    R = torch.randn(n_states, n_actions, generator=g, dtype=torch.float64)
    return FiniteMDP(P, R, gamma)
