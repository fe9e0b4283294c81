"""Diffusion models read as stochastic optimal control (book, chapter "Diffusion models as control").

The forward SDE ``dY = f(t, Y) dt + sigma(t) dB`` with ``Y_0 ~ p_data`` has marginals ``p_t``. In reverse time
(forward time ``T - t``) the sampler is a controlled diffusion whose value is ``V(t, x) = -log p_{T-t}(x)`` and
whose optimal control is the score scaled by the noise. For Gaussian-mixture data and the variance-preserving SDE
every one of these objects is exact, so the chapter checks the verification identity
``J(u) = V + 1/2 E int |u - u*|^2`` numerically, then learns the score by denoising score matching (a solver:
:class:`hjbcourse.solvers.score_matching.ScoreMatching`).

- :mod:`.sde`: :class:`VPSDE`, the forward SDE and its reverse-time coefficients;
- :mod:`.mixture`: :class:`GaussianMixture` and its exact marginals;
- :mod:`.control`: the reverse-time control problem :class:`DiffusionControl`, :func:`simulate_reverse`, the
  chapter's controls and the verification table;
- :mod:`.score_model`: the network :class:`ScoreNet` and the learned :class:`ScoreModel`;
- :mod:`.metrics`: :func:`score_error`, :func:`wasserstein_distance` (POT, imported when called),
  :func:`sample_quality`.

One time convention: every time-dependent map takes time first, named ``t``: ``sde.drift(t, x)``,
``net(t, x)``, ``model.score(t, x)`` in forward time; controls ``u(t, x)``, ``problem.value(t, x)``,
``problem.optimal_control(t, x)``, ``sde.reverse_drift(t, x)`` in reverse time.
"""
from .control import (CostEstimate, DiffusionControl, ReversePaths, example_controls, simulate_reverse,
                      verification_table, zero_control)
from .metrics import sample_quality, score_error, wasserstein_distance
from .mixture import GaussianMixture
from .score_model import ScoreModel, ScoreNet
from .sde import VPSDE

__all__ = [
    "GaussianMixture",
    "VPSDE",
    "DiffusionControl",
    "ReversePaths",
    "CostEstimate",
    "simulate_reverse",
    "zero_control",
    "example_controls",
    "verification_table",
    "ScoreNet",
    "ScoreModel",
    "score_error",
    "wasserstein_distance",
    "sample_quality",
]
