"""The settings of :class:`~hjbcourse.QLearning`: a frozen dataclass with the presets ``"quick"`` and ``"full"``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..._checks import _real
from ...training import SolverConfig

__all__ = ["QLearningConfig", "METHODS", "VALUES", "MEANS"]

METHODS = ("q_learning", "td_actor_critic")
VALUES = ("mlp", "quadratic", "power")
MEANS = ("mlp", "linear", "constant")


@dataclass(frozen=True)
class QLearningConfig(SolverConfig):
    """Settings of :class:`QLearning`; ``QLearningConfig.preset("quick", seed=0)`` for a CPU.

    Data: ``n_transitions`` in all (the budget), collected by ``n_envs`` parallel paths restarted every
    ``episode_steps`` steps (or when they leave the state box). Learning: ``updates_per_step`` gradient steps
    (Adam, learning rate ``lr`` with a cosine decay to ``lr_final``; ``lr=None``: 0.05 for the structured
    families, 0.005 with a network; ``lr_final=None``: ``lr / 100``) per batch of ``n_envs`` transitions, on
    minibatches of ``batch_size`` from a replay buffer of ``buffer_size`` transitions (0: keep all). The history
    records a row every ``log_every`` batches. Behaviour: actions are the
    current policy mean plus Gaussian noise of standard deviation ``exploration_std`` (a number or one per action
    coordinate) times a factor going linearly from 1 to ``exploration_final``; with ``exploration_std=None``
    (q-learning only) actions are drawn from the learned Gibbs policy N(m, temperature Lam^{-1}) itself.
    The Gaussian lives in coordinates u and the action is a = squash(u) in the action box
    (:func:`hjbcourse.problems.squash_to_bounds`) for the coordinates where ``squash`` is true (a bool, or one per
    action coordinate), a = u clipped to the box for the others; ``exploration_std`` is in units of u. Squashing
    suits an optimum near a bound (it acts like a logarithm there); clipping suits an optimum well inside a wide
    box (a quadratic q in u is then exact where q is quadratic in a). The policy starts at
    ``initial_action`` (a number or one per action coordinate; None: the centre of the box, 0 where unbounded).
    """

    method: str = "q_learning"
    value: str = "mlp"
    mean: str = "mlp"
    power_exponent: float | None = None
    width: int = 32
    depth: int = 2
    temperature: float = 0.01
    exploration_std: float | tuple[float, ...] | None = 1.0
    exploration_final: float = 1.0
    initial_action: float | tuple[float, ...] | None = None
    squash: bool | tuple[bool, ...] = True
    n_transitions: int = 1_000_000
    n_envs: int = 1000
    episode_steps: int = 10
    updates_per_step: int = 2
    batch_size: int = 2048
    buffer_size: int = 0
    lr: float | None = None
    lr_final: float | None = None
    target_tau: float = 0.01
    log_every: int = 25

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_transitions": 1_000_000, "n_envs": 1000, "updates_per_step": 2, "batch_size": 2048},
        "full": {"n_transitions": 4_000_000, "n_envs": 4000, "updates_per_step": 2, "batch_size": 8192,
                 "width": 64, "depth": 3},
    }

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "method": self.method in METHODS, "value": self.value in VALUES, "mean": self.mean in MEANS,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = {"method": METHODS, "value": VALUES, "mean": MEANS}[name]
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self._check_ints("width", "depth", "n_transitions", "n_envs", "episode_steps", "updates_per_step",
                         "batch_size", "log_every")
        self._check_ints("buffer_size", minimum=0)
        self._check_positive_numbers("temperature")
        self._check_positive_numbers("lr", "lr_final", allow_none=True)
        if self.lr is not None and self.lr_final is not None and self.lr_final > self.lr:
            raise ValueError(f"lr_final must not exceed lr={self.lr}, got {self.lr_final!r}")
        for name in ("target_tau", "exploration_final"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ValueError(f"{name} must lie in (0, 1], got {v!r}")
        if self.n_transitions < self.n_envs:
            raise ValueError(f"n_transitions must be at least n_envs={self.n_envs}, got {self.n_transitions}")
        std = self.exploration_std
        if std is None:
            if self.method != "q_learning":
                raise ValueError("exploration_std=None (sampling the Gibbs policy) needs method='q_learning'")
        else:
            vals = std if isinstance(std, (tuple, list)) else (std,)
            if not all(_real(v) and math.isfinite(v) and v > 0 for v in vals):
                raise ValueError(f"exploration_std must be positive (a number or one per action), got {std!r}")
        e = self.power_exponent
        if e is not None and not (_real(e) and math.isfinite(e)):
            raise ValueError(f"power_exponent must be a finite number or None, got {e!r}")
        if self.value == "power" and (e is None or e == 0):
            raise ValueError("value='power' needs a non-zero power_exponent (J = c x^e / e)")

    @property
    def learning_rate(self) -> float:
        """``lr``, or its default when None: 0.005 with a network, 0.05 for the structured families."""
        if self.lr is not None:
            return float(self.lr)
        return 0.005 if "mlp" in (self.value, self.mean) else 0.05

    @property
    def final_lr_factor(self) -> float:
        """``lr_final / lr``, the end of the cosine decay relative to its start (0.01 when ``lr_final`` is None)."""
        return 0.01 if self.lr_final is None else self.lr_final / self.learning_rate
