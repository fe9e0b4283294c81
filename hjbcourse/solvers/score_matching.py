"""Denoising score matching (Vincent 2011) for the VP SDE: the learned control of the chapter "Diffusion models
as control".

Loss: E_{t, y0, z} |eps_theta(t, alpha(t) y0 + std(t) z) - z|^2, the score-matching loss weighted by std(t)^2
times the density of the training times t = s_min + (T - s_min) r^time_power, r stratified on [0, 1]. The
network returned is an exponential moving average of the trained one, as a :class:`~hjbcourse.diffusion.ScoreModel`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from .._checks import _positive_int, _scalar, _tensor
from ..diffusion import DiffusionControl, GaussianMixture, ScoreModel, ScoreNet, VPSDE, score_error
from ..runtime import _cpu_threads, _forked_rng, make_generator
from ..training import History, SolverConfig, check_finite
from .base import IterativeSolver, restore_generator

__all__ = ["ScoreMatchingConfig", "ScoreMatching"]


@dataclass(frozen=True)
class ScoreMatchingConfig(SolverConfig):
    """Settings of :class:`ScoreMatching`: the network, Adam with cosine decay from ``lr`` to ``lr_final`` over
    ``iterations`` gradient steps, an exponential moving average of the weights (the network that is returned),
    and the training noise levels t = s_min + (T - s_min) r^time_power with r stratified on [0, 1]
    (time_power > 1 puts more of them at small t, where the score is hardest to learn). Every ``eval_every``
    steps, and at the last, the history records the score error on ``eval_samples`` points (mixture data only).
    ``cpu_threads``: the intra-op threads of a CPU run (None: torch's setting)."""

    hidden: int = 128
    depth: int = 3
    n_freq: int = 8
    iterations: int = 10000
    batch_size: int = 1024
    lr: float = 3e-3
    lr_final: float = 1e-5
    ema: float = 0.999
    s_min: float = 1e-3
    time_power: float = 2.0
    eval_every: int = 500
    eval_samples: int = 2000
    cpu_threads: int | None = 1

    PRESETS: ClassVar[dict] = {
        "quick": dict(hidden=128, depth=3, iterations=10000, batch_size=1024),
        "full": dict(hidden=256, depth=4, iterations=40000, batch_size=4096, lr=1e-3, ema=0.9995),
    }

    def __post_init__(self):
        super().__post_init__()
        for name in ("hidden", "depth", "n_freq", "iterations", "batch_size", "eval_every", "eval_samples"):
            _positive_int(name, getattr(self, name))
        _scalar("lr", self.lr, positive=True)
        _scalar("lr_final", self.lr_final, positive=True)
        _scalar("s_min", self.s_min, positive=True)
        _scalar("time_power", self.time_power, positive=True)
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if self.cpu_threads is not None:
            _positive_int("cpu_threads", self.cpu_threads)


def _sde_params(sde: VPSDE) -> list[float]:
    return [sde.beta_min, sde.beta_max, sde.T]


class ScoreMatching(IterativeSolver):
    """``ScoreMatching(data_or_problem, config, sde=None).solve()`` -> :class:`~hjbcourse.diffusion.ScoreModel`.

    ``data_or_problem``: a :class:`~hjbcourse.diffusion.GaussianMixture` (fresh samples every step, and the
    score error in the history), a tensor (N, d) of data points (minibatches drawn with replacement), or a
    :class:`~hjbcourse.diffusion.DiffusionControl` (its data and its SDE). ``sde``: the forward
    :class:`~hjbcourse.diffusion.VPSDE` (default ``VPSDE()``; for a DiffusionControl, its own).

    Construction builds the network and its average from ``config.seed`` (the caller's global RNG is left as it
    was); the data draws, the noise (levels and Gaussian draws) and the evaluation points have their own
    generators (seeds ``seed``, ``seed + 1``, ``seed + 2``). One :meth:`step` is one gradient step (one row of
    ``history``, labelled by the number of gradient steps taken; every ``eval_every`` steps and at the last the
    row also holds the score error); the budget is ``config.iterations`` steps. :meth:`save` and
    :meth:`load` keep both networks, the optimiser, the schedule, the running loss and the three generators: a
    resumed run repeats an uninterrupted one.
    """

    Config = ScoreMatchingConfig
    guarded = ("loss", "loss_avg")
    shown = ("loss_avg",)

    def __init__(self, data_or_problem, config: ScoreMatchingConfig | None = None, *, sde: VPSDE | None = None):
        cfg = self._init_run(config)
        self.sde = self._check_sde(data_or_problem, sde)
        if cfg.s_min >= self.sde.T:
            raise ValueError(f"s_min must be < T={self.sde.T}, got {cfg.s_min}")
        data = data_or_problem.data if isinstance(data_or_problem, DiffusionControl) else data_or_problem
        if isinstance(data, GaussianMixture):
            self.gm, self.points, self.dim = data, None, data.dim
        else:
            pts = _tensor("data", data, 2)
            if pts.shape[0] < 2:
                raise ValueError(f"data must hold at least 2 points, got {pts.shape[0]}")
            self.gm, self.points, self.dim = None, pts, pts.shape[1]
        self._build()

    @staticmethod
    def _check_sde(data_or_problem, sde: VPSDE | None) -> VPSDE:
        if sde is not None and not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        if isinstance(data_or_problem, DiffusionControl):
            own = data_or_problem.sde
            if sde is not None and _sde_params(sde) != _sde_params(own):
                raise ValueError(f"sde must be the problem's own {own!r} when a DiffusionControl is given, got {sde!r}")
            return own
        return VPSDE() if sde is None else sde

    def _build(self) -> None:
        """The networks (from the seed, the caller's RNG untouched), optimiser, schedule and generators."""
        cfg = self.config
        dev, dt = cfg.torch_device, cfg.torch_dtype
        with _cpu_threads(self._threads), _forked_rng(cfg.seed, dev):
            self.net = ScoreNet(self.dim, self.sde, cfg.hidden, cfg.depth, cfg.n_freq).to(device=dev, dtype=dt)
            self.ema = ScoreNet(self.dim, self.sde, cfg.hidden, cfg.depth, cfg.n_freq).to(device=dev, dtype=dt)
        self.ema.load_state_dict(self.net.state_dict())
        self.ema.requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, cfg.iterations, eta_min=cfg.lr_final)
        data_device = "cpu" if self.gm is None else self.gm.device    # draws from the data happen where it lives
        self.g = make_generator(cfg.seed, data_device)
        self.g_noise = make_generator(cfg.seed + 1, dev)
        self.eval_gen = make_generator(cfg.seed + 2, data_device)
        self.model = ScoreModel(self.ema, self.sde, self.history)
        self.running: float | None = None
        self._strata = torch.arange(cfg.batch_size, device=dev, dtype=dt)[:, None]

    def _signature(self) -> dict:
        """What a checkpoint records of the data: its dimension (the network's input and output)."""
        return {"type": "ScoreMatching data", "dim": self.dim}

    @property
    def _threads(self) -> int | None:
        return self.config.cpu_threads if self.config.torch_device.type == "cpu" else None

    @property
    def _description(self) -> str:
        return "score matching"

    def _batch(self, n: int, dtype, device) -> torch.Tensor:
        if self.gm is not None:
            return self.gm.sample(n, generator=self.g).to(dtype=dtype, device=device)
        idx = torch.randint(0, self.points.shape[0], (n,), generator=self.g, device=self.g.device)
        return self.points[idx.to(self.points.device)].to(dtype=dtype, device=device)

    # -- the run -------------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One gradient step (with ``config.cpu_threads`` on a CPU): returns the row it logged in ``history``."""
        with _cpu_threads(self._threads):
            return super().step()

    def solve(self) -> ScoreModel:
        """Train for the rest of the budget; returns the :class:`ScoreModel` of the averaged weights (a copy: the
        solver can go on training) with the ``history`` and the training ``seconds``."""
        with _cpu_threads(self._threads):
            return super().solve()

    def _step(self, it: int) -> dict[str, float]:
        cfg, sde = self.config, self.sde
        dev, dt = cfg.torch_device, cfg.torch_dtype
        y0 = self._batch(cfg.batch_size, dt, dev)
        # stratified noise levels: one per equal-width stratum, a cheap variance reduction
        u = torch.rand(cfg.batch_size, 1, generator=self.g_noise, device=dev, dtype=dt)
        r = (self._strata + u) / cfg.batch_size
        t = cfg.s_min + (sde.T - cfg.s_min) * r ** cfg.time_power
        z = torch.randn(y0.shape, generator=self.g_noise, device=dev, dtype=dt)
        y = sde.alpha(t) * y0 + torch.sqrt(sde.variance(t)) * z
        loss = ((self.net(t, y) - z) ** 2).sum(1).mean()
        check_finite(loss, "score-matching loss", it)     # before the update: a diverged step changes nothing
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - cfg.ema)
        value = float(loss.detach())
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
        row = dict(loss=value, loss_avg=self.running, lr=self.sched.get_last_lr()[0])
        if self.gm is not None and (it % cfg.eval_every == 0 or it == cfg.iterations):
            times = torch.linspace(0.05 * sde.T, sde.T, 8).tolist()
            err = score_error(self.model.score, self.gm, sde, times, n=cfg.eval_samples, generator=self.eval_gen)
            row.update(score_error_max=float(err.max()), score_error_mean=float(err.mean()))
        return row

    def solution(self) -> ScoreModel:
        """The :class:`ScoreModel` of a copy of the averaged network, with a copy of the history."""
        net = copy.deepcopy(self.ema, memo={id(self.sde): self.sde})
        history = History()
        history.rows = [dict(r) for r in self.history.rows]
        return ScoreModel(net, self.sde, history, self.seconds)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _state(self) -> dict:
        gens = {"g": self.g, "g_noise": self.g_noise, "eval_gen": self.eval_gen}
        return {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "running": self.running, "sde": _sde_params(self.sde),
                "generators": {k: g.get_state() for k, g in gens.items()},
                "generator_devices": {k: g.device.type for k, g in gens.items()}}

    def _load_state(self, state: dict) -> None:
        if [float(v) for v in state["sde"]] != _sde_params(self.sde):
            saved = VPSDE(*state["sde"])
            raise ValueError(f"the checkpoint was trained with {saved!r}, not {self.sde!r}: pass sde={saved!r}")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.running = None if state["running"] is None else float(state["running"])
        seed = self.config.seed
        for k, g, reseed in (("g", self.g, seed), ("g_noise", self.g_noise, seed + 1),
                             ("eval_gen", self.eval_gen, seed + 2)):
            restore_generator(g, state["generators"][k], state["generator_devices"][k], reseed)
