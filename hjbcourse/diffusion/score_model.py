"""A learned score: the time-conditioned network :class:`ScoreNet` and :class:`ScoreModel`, the score and the
control it defines. Training is a solver (:class:`hjbcourse.solvers.score_matching.ScoreMatching`)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import _positive_int
from ..runtime import make_generator
from ..training import History
from .control import simulate_reverse
from .mixture import _check_x
from .sde import VPSDE

__all__ = ["ScoreNet", "ScoreModel"]


class ScoreNet(nn.Module):
    """A small time-conditioned MLP: (t forward time (B,) or float, x (B, d)) -> a noise prediction (B, d).

    Time enters through the log noise-to-signal ratio lambda(t) = log((1 - alpha^2) / alpha^2), rescaled to
    [0, 1] over [1e-3 T, T], and sinusoidal features of it: small noise levels, where the score changes
    fastest, get as much resolution as large ones. :class:`ScoreModel` turns the noise prediction eps into the
    score -eps / sqrt(1 - alpha(t)^2), so the network's output stays of order one at every noise level.
    """

    def __init__(self, dim: int, sde: VPSDE, hidden: int = 128, depth: int = 3, n_freq: int = 8):
        super().__init__()
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        self.dim = _positive_int("dim", dim)
        hidden = _positive_int("hidden", hidden)
        depth = _positive_int("depth", depth)
        self.n_freq = _positive_int("n_freq", n_freq)
        self.sde = sde
        lam = lambda t: math.log(sde.variance(t)) + sde.int_beta(t)  # noqa: E731  log((1 - a^2) / a^2)
        self._lam_lo, self._lam_hi = lam(1e-3 * sde.T), lam(sde.T)
        self.register_buffer("freqs", math.pi * torch.arange(1, self.n_freq + 1, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = self.dim + 2 * self.n_freq + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, self.dim))
        self.body = nn.Sequential(*layers)

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 1) forward times -> (B, 2 n_freq + 1) features."""
        lam = torch.log(self.sde.variance(t)) + self.sde.int_beta(t)
        r = (lam - self._lam_lo) / (self._lam_hi - self._lam_lo)
        ang = r * self.freqs.to(t)
        return torch.cat([2 * r - 1, torch.sin(ang), torch.cos(ang)], dim=1)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """eps_theta(t, x) at forward time ``t`` (a number or one time per row of x); (B, d) -> (B, d)."""
        p = next(self.parameters())
        x = x.to(dtype=p.dtype, device=p.device)
        t = torch.as_tensor(t).to(dtype=p.dtype, device=p.device)
        t = t.reshape(-1, 1).expand(x.shape[0], 1) if t.numel() == 1 else t.reshape(-1, 1)
        return self.body(torch.cat([x, self.features(t)], dim=1))


class ScoreModel:
    """A trained score s_theta(t, x) (forward time t) and the control it induces,
    u(t, x) = Sigma(t) s_theta(T - t, x) (reverse time t).

    What :meth:`ScoreMatching.solve <hjbcourse.solvers.score_matching.ScoreMatching.solve>` returns: the averaged
    network ``net``, the ``sde``, the training ``history`` and ``seconds`` (the training time).
    """

    def __init__(self, net: ScoreNet, sde: VPSDE, history: History | None = None, seconds: float = 0.0):
        self.net, self.sde = net, sde
        self.history = history if history is not None else History()
        self.seconds = float(seconds)

    @property
    def train_seconds(self) -> float:
        """The training time, ``seconds`` (the name of earlier versions)."""
        return self.seconds

    def _std(self, t, x: torch.Tensor):
        """sqrt(1 - alpha(t)^2) for a number t or a tensor of one time per row of x, after checking t."""
        if not (isinstance(t, torch.Tensor) and t.numel() > 1):
            t = self.sde.check_time(t, "t")
            if t <= 0:
                raise ValueError("t must be > 0: the score at zero noise is not what the network learns")
            return math.sqrt(self.sde.variance(t))
        if t.numel() != x.shape[0]:
            raise ValueError(f"t must be a number or hold one time per row of x ({x.shape[0]}), "
                             f"got {t.numel()} times")
        if not bool(((t > 0) & (t <= self.sde.T * (1 + 1e-12))).all()):
            raise ValueError(f"t must lie in (0, T={self.sde.T}] (the score at zero noise is not what the "
                             f"network learns), got times in [{float(t.min())}, {float(t.max())}]")
        return torch.sqrt(self.sde.variance(t.to(dtype=x.dtype, device=x.device))).reshape(-1, 1)

    @torch.no_grad()
    def score(self, t, x: torch.Tensor) -> torch.Tensor:
        """s_theta(t, x) = -eps_theta(t, x) / sqrt(1 - alpha(t)^2) at forward time t > 0; (B, d) -> (B, d).

        ``t`` is a number, or a tensor of B times (one per row of x); every time must lie in (0, T]."""
        _check_x(x, self.net.dim)
        std = self._std(t, x)
        return -self.net(t, x).to(dtype=x.dtype, device=x.device) / std

    def control(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """u(t, x) = Sigma(t) s_theta(T - t, x) at reverse time t < T; (B, d) -> (B, d)."""
        t = self.sde.check_time(t, "t")
        return self.sde.reverse_diffusion(t) * self.score(self.sde.T - t, x)

    def sample(self, n: int, *, n_steps: int = 500, generator=None, dtype=torch.float32,
               scheme: str = "heun") -> torch.Tensor:
        """n samples of the learned reverse SDE started from N(0, I); (n, d)."""
        p = next(self.net.parameters())
        g = make_generator(generator, p.device, "generator")
        x0 = self.sde.prior_sample(_positive_int("n", n), self.net.dim, g, dtype, p.device)
        return simulate_reverse(self.sde, self.control, x0, n_steps=n_steps, generator=g, scheme=scheme).x
