"""The course's standard figures (matplotlib). Each function draws on given axes or makes its own figure,
and returns the figure; the chapter calls ``plt.show()``."""
import importlib as _importlib
from .control import *  # noqa: F401,F403
from .theory import *  # noqa: F401,F403
from .stochastic import *  # noqa: F401,F403
from .learning import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .high_dim import *  # noqa: F401,F403

__all__ = [n for _m in ('control', 'diffusion', 'high_dim', 'learning', 'stochastic', 'theory') for n in _importlib.import_module(f"{__name__}.{_m}").__all__]
