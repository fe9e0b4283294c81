"""The course's standard figures (matplotlib), as ``hjb.plotting.plot_*``. Every function returns its
figure; the chapter calls ``plt.show()``. Those with an ``ax`` (or ``axes``) argument draw on the given axes
when one is passed and make their own figure otherwise; the others (multi-panel figures such as
``plot_value_policy`` and ``plot_closed_loop``) always make their own."""
import importlib as _importlib
from .control import *  # noqa: F401,F403
from .theory import *  # noqa: F401,F403
from .stochastic import *  # noqa: F401,F403
from .learning import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .high_dim import *  # noqa: F401,F403

__all__ = [n for _m in ('control', 'diffusion', 'high_dim', 'learning', 'stochastic', 'theory') for n in _importlib.import_module(f"{__name__}.{_m}").__all__]
