"""The settings of neural policy iteration: :class:`PolicyIterationConfig` and its presets."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..._checks import numbers_tuple
from ...generator import GENERATOR_METHODS
from ...nets import ACTIVATIONS
from ...sde import SDE_SCHEMES
from ...training import SolverConfig

__all__ = ["PolicyIterationConfig", "INPUT_SCALINGS", "VALUE_FITS", "POLICIES", "INITIAL_POLICIES"]

#: how the networks read a state: affinely in x, or affinely in log x (positive states); "auto": log for a
#: domain of positive states, affine elsewhere
INPUT_SCALINGS = ("auto", "affine", "log")
#: how the value is fitted to its targets: plain least squares, or weighted by 1 / V_old(x)^2; "auto":
#: relative where the input scaling is chosen "log" automatically, absolute elsewhere
VALUE_FITS = ("auto", "absolute", "relative")
#: the improvement: "greedy" where it is exact, otherwise "actor" ("auto"); or either one explicitly
POLICIES = ("auto", "actor", "greedy")
#: the first policy: the LQR feedback of the linearisation where it exists ("auto"), or a constant action
INITIAL_POLICIES = ("auto", "linearised", "constant")


@dataclass(frozen=True)
class PolicyIterationConfig(SolverConfig):
    """Settings of :class:`PolicyIteration`; build one with ``PolicyIterationConfig.preset("quick", seed=0)``.

    Budget and stopping: at most ``iterations`` policy iterations (None, the default: 25 with the greedy
    policy, whose error keeps falling over that many on the suite's 5-D and 10-D problems, and 15 with the
    actor, which drifts further off Merton's answer over more; benchmarks/README.md); stop earlier once, for ``patience``
    iterations in a row (and after ``min_iterations``), both the estimated value error
    change / (1 - e^{-rho T}) and the relative change of the policy are below ``tol``. (That estimate is the
    error of the previous iterate when the error contracts by e^{-rho T} per iteration, so it bounds the
    current one's.)

    Evaluation: ``n_states`` training states per iteration, ``paths_per_state`` paths from each (an even
    number when ``antithetic``), horizon ``horizon`` (None: 0.5 / rho) with step ``dt`` and SDE ``scheme``;
    the first evaluation (from V_0 = 0) uses ``initial_horizon`` (None: 3 / rho) and ``initial_dt`` (None:
    initial_horizon / 200, at least dt). ``control_variate`` subtracts the zero-mean martingale term,
    evaluating grad V_old every ``cv_stride`` steps. A fraction ``replay_fraction`` (at most one half) of the training states
    are the end points X_T of the previous evaluation's paths from ``problem.sample_states`` (for the first
    iteration, of a pilot simulation of the initial policy): the bootstrap evaluates V_old at X_T, so V must
    be fitted there too, also where the paths leave the region the reader looks at (Merton's wealth does).

    The first evaluation has no control variate (V_0 = 0), so it averages ``initial_paths_per_state``
    paths per state (None: ``paths_per_state``); simulating is cheap next to fitting, and the first fit
    decides the first improved policy. The first policy is evaluated ``initial_sweeps`` times before the
    first improvement (modified policy iteration): each sweep contracts the value's error by e^{-rho T} and,
    from the second on, has the control variate, so the first improvement reads a value fitted to
    quiet targets instead of the noisy first fit (whose greedy policy can destabilise the closed loop).
    None (the default): 3 sweeps with the greedy policy, 1 with the actor (whose small gradient steps are
    already damped; measured on the suite, benchmarks/README.md).

    With ``adapt_dt`` (the default) the steps and horizons are read off the first policy's closed loop
    (:meth:`PolicyIteration.horizons`): the step is ``dt``, or a hundredth of the horizon where that is
    longer, and at most 0.2 / lambda, lambda the loop's fastest rate (the largest eigenvalue modulus of the
    drift's Jacobian over the training states); with ``level_correction`` the horizons are also at most
    3 / mu and 6 / mu, mu its slowest decay rate.

    ``gradient_labels`` also labels each training state with the pathwise derivative of its targets (the
    derivative of each path's discounted reward and bootstrap in its start point, the noise held fixed, with
    the control variate's derivative: an estimate of grad V^pi with far less noise than the values have), and
    the value is fitted to both (a Sobolev fit, :func:`~.evaluation.fit_value`), since the greedy policy
    reads grad V. None (the default): on with the greedy policy, off with the actor (measured on the suite's
    Merton problems: better pi for gamma >= 2, but for gamma < 1 the labels inherit the lognormal tail of
    wealth over the horizon 1 / rho and the fit diverges). ``level_correction`` (default on) solves the
    evaluation's fixed point exactly along its slowest direction after each fit, the value's additive level,
    which otherwise converges only by e^{-rho T} per iteration (not for the ``value_sign`` network).

    ``"auto"`` choices (the defaults) are read off the problem when the solver starts
    (:func:`~hjbcourse.solvers.policy_iteration.scales.resolve_settings`): the improvement (greedy where it is
    exact), the first policy, and for a domain of positive states the log input scaling with a state box of 4,
    the relative value fit and the value's sign from a pilot simulation.

    Networks: value ``value_width`` x ``value_depth``, policy ``policy_width`` x ``policy_depth``, smooth
    ``activation``, their inputs mapped to [-1, 1] on ``problem.domain``: affinely (``input_scaling=
    "affine"``) or affinely in log x (``"log"``, for positive states that move geometrically and span a
    ratio, like wealth). ``state_box`` (None: off) is the domain enlarged that many times about its centre in
    those input coordinates: replayed end points are clamped into it, the policy is constant beyond it and
    the value continues to first order along its slope at the box's face, instead of extrapolating freely
    where no state was trained.

    Training states are ``problem.sample_states`` stretched ``training_region`` times about the domain's
    centre, and the networks' inputs map that region to [-1, 1]^d (the states the errors are scored on stay
    the domain's). None (the default): read off the first policy where it is the linearisation's LQR
    feedback and the inputs are affine, as the 95% quantile of how far its paths end from the centre after
    the first evaluation's horizon, in half-widths of the domain (at least 1, at most 4:
    :func:`~hjbcourse.solvers.policy_iteration.scales.training_region`), so that V is fitted where the
    evaluations read it; 1 elsewhere (a constant first action's paths say nothing of the optimum's; log
    inputs have their ``state_box``).

    Fitting: ``value_steps`` Adam steps on minibatches of ``value_batch`` per iteration, the learning rate
    decaying geometrically from ``value_lr`` to ``value_lr_final`` over the budget, then ``polish_steps``
    full-batch L-BFGS steps (None: 500 with the greedy policy, which reads grad V directly, 0 with the actor).
    ``value_fit="relative"`` weights each squared error by 1 / V_old(x)^2 (the
    previous iteration's value at the state, normalised to mean 1, :func:`relative_weights`): a fit by
    relative error, for a value whose magnitude varies by orders over the states (the logged
    ``value_fit_mse`` is then the weighted one). The first fit has no V_old: a pre-fit gives it one (of
    log(sign * y) for the ``value_sign`` network, else plain least squares), and the fit proper is weighted by
    it. ``value_sign`` (-1 or 1,
    None: off) declares the value's sign and makes the value network sign * exp(N(x))
    (:class:`SignedExpValue`), so V keeps its sign and grad V / V is a smooth output of the network; the
    first targets must have that sign on average. Neither reads anything but the targets and V_old.
    Improvement: ``policy="actor"`` (``policy_steps`` full-batch Adam steps at ``policy_lr``) or
    ``policy="greedy"`` (closed form, control-affine problems with quadratic action cost); ``"auto"`` (the
    default) takes the greedy policy wherever it is exact (checked on sample states) and the actor elsewhere.
    The first policy (``initial_policy``): ``"linearised"`` is the optimal feedback of the discounted LQR
    that linearises the problem at the domain's centre, which stabilises an unstable open loop (Kleinman's
    admissible start); ``"constant"`` is ``initial_action``; ``"auto"`` the first where the linearisation has a
    stabilising Riccati solution and the greedy policy is used, the second elsewhere. The actor starts
    from the constant ``initial_action`` (None: the squash of 0, i.e. 0 for unbounded actions and the middle
    of the box for bounded ones). Policy iteration needs an admissible first policy, one whose value is
    finite: choose ``initial_action`` so (for Merton, a consumption rate below the growth of wealth).
    ``generator_method`` computes L^a V in the HJB-residual diagnostic; ``n_eval`` states score it.

    Shared with every solver's config: ``seed`` (the networks' initialisation, and three random streams:
    training states from ``seed``, paths from ``seed + 1``, minibatches from ``seed + 2``), ``device``,
    ``dtype`` and ``progress`` (a progress bar).
    """

    iterations: int | None = None
    n_states: int = 1024
    paths_per_state: int = 2
    initial_paths_per_state: int | None = 8
    initial_sweeps: int | None = None
    antithetic: bool = True
    horizon: float | None = None
    initial_horizon: float | None = None
    dt: float = 0.02
    adapt_dt: bool = True
    initial_dt: float | None = None
    scheme: str = "weak2"
    control_variate: bool = True
    cv_stride: int = 1
    gradient_labels: bool | None = None
    level_correction: bool = True
    value_width: int = 32
    value_depth: int = 3
    policy_width: int = 32
    policy_depth: int = 2
    activation: str = "tanh"
    input_scaling: str = "auto"
    replay_fraction: float = 0.25
    state_box: float | None = None
    training_region: float | None = None
    value_steps: int = 300
    value_batch: int = 512
    value_lr: float = 3e-3
    value_lr_final: float = 3e-4
    polish_steps: int | None = None
    value_fit: str = "auto"
    value_sign: int | None = None
    policy: str = "auto"
    initial_policy: str = "auto"
    initial_action: tuple | None = None
    policy_steps: int = 200
    policy_lr: float = 3e-3
    generator_method: str = "forward"
    tol: float = 5e-3
    patience: int = 2
    min_iterations: int = 4
    n_eval: int = 2048

    PRESETS: ClassVar[dict] = {
        "quick": {},
        "full": {"iterations": 30, "n_states": 8192, "paths_per_state": 4, "dt": 0.01, "cv_stride": 1,
                 "value_width": 64, "policy_width": 64, "value_steps": 600, "value_batch": 1024,
                 "policy_steps": 400, "tol": 1e-3, "n_eval": 8192},
        "smoke": {"iterations": 2, "n_states": 256, "value_steps": 20, "polish_steps": 5, "policy_steps": 10, "value_width": 16,
                  "policy_width": 16, "initial_horizon": 2.0, "horizon": 0.5, "dt": 0.05, "n_eval": 256,
                  "min_iterations": 1, "initial_sweeps": 1},
    }

    def __post_init__(self):
        super().__post_init__()
        if self.iterations is not None:         # None: 25 with the greedy policy, 15 with the actor
            self._check_ints("iterations")
        self._check_ints("n_states", "paths_per_state", "cv_stride", "value_width", "value_depth",
                         "policy_width", "policy_depth", "value_steps", "value_batch", "policy_steps", "patience",
                         "n_eval")
        self._check_ints("min_iterations", minimum=0)
        if self.polish_steps is not None:       # None: 500 with the greedy policy, 0 with the actor
            self._check_ints("polish_steps", minimum=0)
        if self.initial_sweeps is not None:     # None: 3 with the greedy policy, 1 with the actor
            self._check_ints("initial_sweeps")
        if self.antithetic and self.paths_per_state % 2:
            raise ValueError(f"paths_per_state must be even when antithetic=True, got {self.paths_per_state}")
        ipp = self.initial_paths_per_state
        if ipp is not None and (not isinstance(ipp, int) or isinstance(ipp, bool) or ipp < 1
                                or (self.antithetic and ipp % 2)):
            raise ValueError(f"initial_paths_per_state must be None or a positive integer (even when antithetic), "
                             f"got {ipp!r}")
        self._check_positive_numbers("horizon", "initial_horizon", "initial_dt", allow_none=True)
        for name in ("state_box", "training_region"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) and v >= 1):
                raise ValueError(f"{name} must be a number >= 1 or None, got {v!r}")
        # replayed states are drawn without repetition from the end points of the domain states' paths, one
        # per domain state, so at most half the states can be replayed
        if isinstance(self.replay_fraction, bool) or not (isinstance(self.replay_fraction, (int, float))
                                                          and 0 <= self.replay_fraction <= 0.5):
            raise ValueError(f"replay_fraction must be in [0, 0.5], got {self.replay_fraction!r}")
        self._check_positive_numbers("dt", "value_lr", "value_lr_final", "policy_lr", "tol")
        if self.scheme not in SDE_SCHEMES:
            raise ValueError(f"scheme must be one of {SDE_SCHEMES}, got {self.scheme!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.initial_policy not in INITIAL_POLICIES:
            raise ValueError(f"initial_policy must be one of {INITIAL_POLICIES}, got {self.initial_policy!r}")
        for name in ("adapt_dt", "level_correction"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.gradient_labels is not None and not isinstance(self.gradient_labels, bool):
            raise ValueError(f"gradient_labels must be None, True or False, got {self.gradient_labels!r}")
        if self.initial_action is not None:   # a sequence of finite real numbers ("12" is no (1.0, 2.0))
            object.__setattr__(self, "initial_action", numbers_tuple("initial_action", self.initial_action))
        if self.value_fit not in VALUE_FITS:
            raise ValueError(f"value_fit must be one of {VALUE_FITS}, got {self.value_fit!r}")
        if self.value_sign is not None and (not isinstance(self.value_sign, int) or isinstance(self.value_sign, bool)
                                            or self.value_sign not in (-1, 1)):
            raise ValueError(f"value_sign must be None, -1 or 1, got {self.value_sign!r}")
        if self.generator_method not in GENERATOR_METHODS:
            raise ValueError(f"generator_method must be one of {GENERATOR_METHODS}, got {self.generator_method!r}")

    def horizons(self, rho: float) -> tuple[float, float, float, float]:
        """(T, dt, T0, dt0): the evaluation horizon and step, and those of the first evaluation, for ``rho``.

        Horizons are rounded to whole multiples of their steps.
        """
        T = self.horizon if self.horizon is not None else 0.5 / rho
        T = max(self.dt, round(T / self.dt) * self.dt)
        T0 = self.initial_horizon if self.initial_horizon is not None else 3.0 / rho
        dt0 = self.initial_dt if self.initial_dt is not None else max(self.dt, T0 / 200)
        T0 = max(dt0, round(T0 / dt0) * dt0)
        return T, self.dt, T0, dt0

