"""Solvers, one shape for all (:mod:`.base`): finite differences, neural policy iteration, q-learning, the deep
BSDE method and score matching."""
from .deep_bsde import DeepBSDE, DeepBSDEConfig
from .finite_difference import FiniteDifferenceConfig, FiniteDifferenceSolver
from .policy_iteration import PolicyIteration, PolicyIterationConfig, improve_policy, rollout_targets
from .q_learning import QLearning, QLearningConfig, held_action_lqr_gain
from .score_matching import ScoreMatching, ScoreMatchingConfig

__all__ = ["FiniteDifferenceSolver", "FiniteDifferenceConfig", "PolicyIteration", "PolicyIterationConfig",
           "improve_policy", "rollout_targets", "QLearning", "QLearningConfig",
           "held_action_lqr_gain", "DeepBSDE", "DeepBSDEConfig", "ScoreMatching", "ScoreMatchingConfig"]
