"""The settings of :class:`~hjbcourse.QLearning`: a frozen dataclass with the presets ``"quick"`` and ``"full"``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..._checks import _real
from ...training import SolverConfig

__all__ = ["QLearningConfig", "METHODS", "VALUES", "MEANS", "PRECISIONS"]

METHODS = ("q_learning", "td_actor_critic")
VALUES = ("mlp", "quadratic", "power")
MEANS = ("mlp", "linear", "constant")
PRECISIONS = ("diagonal", "full", "state")


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

    Defaults that depend on the parametrisation (None: chosen here; measured in ``benchmarks/README.md``):
    ``updates_per_step`` 4 and ``batch_size`` 4096 with a network (2 and 2048 for the structured families);
    ``precision`` of the Gibbs q, ``"full"`` with a network mean (a constant Cholesky factor: coupled action
    costs), ``"diagonal"`` otherwise, or ``"state"`` (a network of x); ``averaging``: the share of the last
    updates whose parameters are averaged into the solution (Polyak-Ruppert; 0.25 with a network, 0 otherwise).
    A network J is normalised (``normalise_value``): a level of its own, starting at the first batch's
    mean r / rho, plus a network in units of J's spread over the states, kept up to date as it learns; its
    output layer starts at ``value_init`` times the usual size (a flat J). ``value_lr_factor`` multiplies the
    learning rate of J (None: 0.3 with a network, 1 otherwise). After the run, :meth:`QLearning.consistency` tests the learned q on the last
    transitions and warns where they ask to move the policy mean by more than ``consistency_tolerance``
    (relative).
    """

    method: str = "q_learning"
    value: str = "mlp"
    mean: str = "mlp"
    power_exponent: float | None = None
    precision: str | None = None
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
    updates_per_step: int | None = None
    batch_size: int | None = None
    buffer_size: int = 0
    lr: float | None = None
    lr_final: float | None = None
    target_tau: float = 0.01
    averaging: float | None = None
    value_init: float = 0.01
    value_lr_factor: float | None = None
    normalise_value: bool = True
    consistency_tolerance: float = 0.1
    log_every: int = 25

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_transitions": 1_000_000, "n_envs": 1000},
        "full": {"n_transitions": 4_000_000, "n_envs": 4000, "updates_per_step": 2, "batch_size": 8192,
                 "width": 64, "depth": 3},
    }

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "method": self.method in METHODS, "value": self.value in VALUES, "mean": self.mean in MEANS,
            "precision": self.precision is None or self.precision in PRECISIONS,
        }
        for name, ok in checks.items():
            if not ok:
                allowed = {"method": METHODS, "value": VALUES, "mean": MEANS, "precision": PRECISIONS}[name]
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self._check_ints("width", "depth", "n_transitions", "n_envs", "episode_steps", "log_every")
        for name in ("updates_per_step", "batch_size"):
            if getattr(self, name) is not None:
                self._check_ints(name)
        self._check_ints("buffer_size", minimum=0)
        self._check_positive_numbers("temperature", "value_init", "consistency_tolerance")
        self._check_positive_numbers("value_lr_factor", allow_none=True)
        if not isinstance(self.normalise_value, bool):
            raise ValueError(f"normalise_value must be a bool, got {self.normalise_value!r}")
        self._check_positive_numbers("lr", "lr_final", allow_none=True)
        if self.lr is not None and self.lr_final is not None and self.lr_final > self.lr:
            raise ValueError(f"lr_final must not exceed lr={self.lr}, got {self.lr_final!r}")
        a = self.averaging
        if a is not None and (isinstance(a, bool) or not (isinstance(a, (int, float)) and 0 <= a <= 1)):
            raise ValueError(f"averaging must lie in [0, 1] or be None, got {a!r}")
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
    def networks(self) -> bool:
        """Whether J (or Q) or the mean is a network (the defaults below then differ)."""
        return "mlp" in (self.value, self.mean)

    @property
    def n_updates(self) -> int:
        """``updates_per_step``, or its default when None: 4 with a network, 2 for the structured families."""
        return self.updates_per_step if self.updates_per_step is not None else (4 if self.networks else 2)

    @property
    def minibatch(self) -> int:
        """``batch_size``, or its default when None: 4096 with a network, 2048 for the structured families."""
        return self.batch_size if self.batch_size is not None else (4096 if self.networks else 2048)

    @property
    def value_lr(self) -> float:
        """``value_lr_factor``, or its default when None: 0.3 with a network (J's TD error carries the noise
        of the state's increments, grad J . sigma dW / dt, the largest in the update), 1 otherwise."""
        if self.value_lr_factor is not None:
            return float(self.value_lr_factor)
        return 0.3 if self.networks else 1.0

    @property
    def precision_kind(self) -> str:
        """``precision``, or its default when None: ``"full"`` with a network mean, else ``"diagonal"``."""
        if self.precision is not None:
            return self.precision
        return "full" if self.mean == "mlp" else "diagonal"

    @property
    def averaging_share(self) -> float:
        """``averaging``, or its default when None: 0.25 with a network, 0 (the last iterate) otherwise."""
        if self.averaging is not None:
            return float(self.averaging)
        return 0.25 if self.networks else 0.0

    @property
    def learning_rate(self) -> float:
        """``lr``, or its default when None: 0.005 with a network, 0.05 for the structured families."""
        if self.lr is not None:
            return float(self.lr)
        return 0.005 if self.networks else 0.05

    @property
    def final_lr_factor(self) -> float:
        """``lr_final / lr``, the end of the cosine decay relative to its start (0.01 when ``lr_final`` is None)."""
        return 0.01 if self.lr_final is None else self.lr_final / self.learning_rate
