"""Solvers: classical finite differences, neural policy iteration, q-learning, and a high-dimensional solver."""
from .finite_difference import *  # noqa: F401,F403
from .policy_iteration import *  # noqa: F401,F403
from .q_learning import *  # noqa: F401,F403
from .deep_bsde import *  # noqa: F401,F403
