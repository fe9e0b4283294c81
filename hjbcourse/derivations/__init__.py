"""Symbolic derivations (sympy, no torch): each function returns expressions that the book displays and the
tests check against the closed forms in :mod:`hjbcourse.exact`."""
import importlib as _importlib
from .ito import *  # noqa: F401,F403
from .hamilton_jacobi import *  # noqa: F401,F403
from .lqr import *  # noqa: F401,F403
from .merton import *  # noqa: F401,F403
from .finite_horizon import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .cole_hopf import *  # noqa: F401,F403
from .display import *  # noqa: F401,F403

__all__ = [n for _m in ('cole_hopf', 'diffusion', 'display', 'finite_horizon', 'hamilton_jacobi', 'ito', 'lqr', 'merton') for n in _importlib.import_module(f"{__name__}.{_m}").__all__]
