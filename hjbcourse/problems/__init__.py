"""Every problem the course defines, in one package (book: chapters "The stochastic HJB" onwards).

A control problem is data plus four maps: ``drift`` (B, d), ``diffusion`` (B, d, m), ``reward`` (B, 1) and the
discount rate ``rho``; its state region (``domain``, ``sample_states``), its action set (``action_low``,
``action_high``) and, where one exists, ``exact()``: a closed form that scores a solution against itself.

Time convention, for every problem and every solver: a map that depends on time takes it **first**, named
``t`` (a float, or a (B, 1) tensor): ``drift(t, x, a)``, ``diffusion(t, x, a)``, ``reward(t, x, a)``; the maps
of an autonomous (infinite-horizon) problem omit it: ``drift(x, a)``.

- :mod:`.base`: :class:`ControlProblem` (infinite horizon, discounted), :class:`FiniteHorizonProblem`.
- :mod:`.lqr`: :class:`StochasticLQR`, :func:`coupled_lqr`.  :mod:`.merton`: :class:`Merton`.
- :mod:`.finite_horizon`: :class:`FiniteHorizonLQR`.  :mod:`.high_dim`: :class:`HighDimLQG`.
- :mod:`.minimum_time`: :class:`MinimumTimeProblem` (a value with a kink).  :mod:`.mdp`: :class:`FiniteMDP`.
- :mod:`.scalar`: :class:`StateNoiseLQ` (closed form), :class:`SaturatedLQ`, :class:`DoubleWell` (none).
"""
from .base import ControlProblem, FiniteHorizonProblem, squash_to_bounds
from .finite_horizon import FiniteHorizonLQR
from .high_dim import HighDimLQG, grid_points
from .lqr import StochasticLQR, coupled_lqr
from .mdp import FiniteMDP, random_mdp
from .merton import Merton
from .minimum_time import MinimumTimeProblem
from .scalar import DoubleWell, SaturatedLQ, StateNoiseLQ

__all__ = ["ControlProblem", "FiniteHorizonProblem", "squash_to_bounds", "StochasticLQR", "coupled_lqr", "Merton",
           "FiniteHorizonLQR", "HighDimLQG", "grid_points", "MinimumTimeProblem", "FiniteMDP", "random_mdp",
           "StateNoiseLQ", "SaturatedLQ", "DoubleWell"]
