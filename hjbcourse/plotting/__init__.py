"""The course's standard figures (matplotlib). Each function draws on given axes or makes its own figure,
and returns the figure; the chapter calls ``plt.show()``."""
from .control import *  # noqa: F401,F403
from .theory import *  # noqa: F401,F403
from .stochastic import *  # noqa: F401,F403
from .learning import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .high_dim import *  # noqa: F401,F403
