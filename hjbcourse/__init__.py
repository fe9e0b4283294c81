"""hjbcourse: the solvers behind the HJB course (``import hjbcourse as hjb``).

The names below are the public API (``hjbcourse.__all__``): problems and their closed forms, the solvers and
their configs, ``setup`` and the main diagnostics. Everything else stays reachable in its module
(``hjb.generator.value_derivatives``, ``hjb.problems.grid_points``, ...). ``hjb.plotting``, ``hjb.derivations``
and ``hjb.course`` load on first use, so matplotlib, sympy and POT are imported only when a figure, a
derivation or an optimal-transport distance is asked for.

Layers, lower never importing higher::

    _checks, runtime -> problems -> exact -> generator, sde, nets, environment -> solvers
      -> diagnostics, plotting -> course -> cli          (derivations: sympy only)
"""
from __future__ import annotations

import importlib as _importlib

from .diagnostics import (convergence_order, errors_against_exact, fit_linear_gain, fit_quadratic_form,
                          hjb_residual_norm, relative_error, relative_l2)
from .diffusion import (DiffusionControl, GaussianMixture, VPSDE, example_controls, sample_quality, score_error,
                        verification_table, wasserstein_distance, zero_control)
from .discrete import bellman_operator, mdp_policy_iteration, mdp_value_iteration, solve_discrete_lqr
from .environment import TransitionSampler, check_sampler
from .exact import NoClosedForm, riccati_residual
from .generator import GENERATOR_METHODS, apply_generator
from .nets import MLP
from .problems import (ControlProblem, FiniteHorizonLQR, FiniteHorizonProblem, FiniteMDP, HighDimLQG, Merton,
                       MinimumTimeProblem, StochasticLQR, coupled_lqr, random_mdp)
from .runtime import make_generator, seed_everything, setup
from .sde import brownian_increments, discounted_reward_of_policy, monte_carlo_value, simulate
from .solvers import (DeepBSDE, DeepBSDEConfig, FiniteDifferenceConfig, FiniteDifferenceSolver, PolicyIteration,
                      PolicyIterationConfig, QLearning, QLearningConfig, ScoreMatching, ScoreMatchingConfig,
                      held_action_lqr_gain, improve_policy, rollout_targets)
from .solvers.policy_iteration import PolicyIterationWarning
from .solvers.q_learning import QLearningWarning
from .training import DivergenceError

__version__ = "0.1.0"

__all__ = [
    # running a chapter
    "setup", "seed_everything", "make_generator",
    # problems
    "ControlProblem", "FiniteHorizonProblem", "StochasticLQR", "coupled_lqr", "Merton", "FiniteHorizonLQR",
    "HighDimLQG", "MinimumTimeProblem", "FiniteMDP", "random_mdp",
    # closed forms (each problem's exact() returns one)
    "NoClosedForm", "riccati_residual",
    # numerics
    "apply_generator", "GENERATOR_METHODS", "simulate", "brownian_increments", "monte_carlo_value",
    "discounted_reward_of_policy", "MLP", "TransitionSampler", "check_sampler",
    # solvers and their configs
    "mdp_value_iteration", "mdp_policy_iteration", "bellman_operator", "solve_discrete_lqr",
    "FiniteDifferenceSolver", "FiniteDifferenceConfig", "PolicyIteration", "PolicyIterationConfig",
    "rollout_targets", "improve_policy", "QLearning", "QLearningConfig", "held_action_lqr_gain",
    "DeepBSDE", "DeepBSDEConfig", "ScoreMatching", "ScoreMatchingConfig", "DivergenceError",
    "QLearningWarning", "PolicyIterationWarning",
    # diffusion models as control
    "GaussianMixture", "VPSDE", "DiffusionControl", "zero_control", "example_controls", "verification_table",
    "score_error", "sample_quality", "wasserstein_distance",
    # diagnostics
    "relative_error", "relative_l2", "fit_quadratic_form", "fit_linear_gain", "hjb_residual_norm",
    "convergence_order", "errors_against_exact",
]

# modules with heavy dependencies (matplotlib, sympy) or above the solvers: imported on first attribute access
_LAZY = ("plotting", "derivations", "course", "cli", "suite")


def __getattr__(name: str):
    if name in _LAZY:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
