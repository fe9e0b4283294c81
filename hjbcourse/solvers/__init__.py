"""Solvers: classical finite differences, neural policy iteration, q-learning, and a high-dimensional solver."""
import importlib as _importlib
from .finite_difference import *  # noqa: F401,F403
from .policy_iteration import *  # noqa: F401,F403
from .q_learning import *  # noqa: F401,F403
from .deep_bsde import *  # noqa: F401,F403

# export the solvers' names only: a submodule name such as policy_iteration must not shadow a function
__all__ = [n for _m in ('deep_bsde', 'finite_difference', 'policy_iteration', 'q_learning') for n in _importlib.import_module(f"{__name__}.{_m}").__all__]
