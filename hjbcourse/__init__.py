"""hjbcourse: the solvers behind the HJB course (``import hjbcourse as hjb``).

Layers, lower never importing higher: problems -> exact / derivations -> generator, sde -> solvers ->
diagnostics, plotting -> cli.
"""
from . import derivations, plotting  # noqa: F401
from .runtime import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .problems import *  # noqa: F401,F403
from .exact import *  # noqa: F401,F403
from .nets import *  # noqa: F401,F403
from .generator import *  # noqa: F401,F403
from .sde import *  # noqa: F401,F403
from .discrete import *  # noqa: F401,F403
from .environment import *  # noqa: F401,F403
from .high_dim import *  # noqa: F401,F403
from .finite_horizon import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .solvers import *  # noqa: F401,F403
from .diagnostics import *  # noqa: F401,F403

__version__ = "0.1.0"
