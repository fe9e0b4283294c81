"""The solver: :class:`PolicyIteration` alternates evaluation (:mod:`.evaluation`) and improvement
(:mod:`.improvement`) on the networks of :mod:`.networks`; :meth:`PolicyIteration.solve` returns a
:class:`PolicyIterationSolution`. The run loop and checkpoints are those of every iterative solver
(:class:`~hjbcourse.solvers.base.IterativeSolver`)."""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch

from ...generator import hjb_residual_norm
from ...metrics import relative_l2
from ...problems import ControlProblem, squash_to_bounds
from ...runtime import _forked_rng, make_generator
from ...sde import simulate
from ...training import check_finite
from ..base import IterativeSolver, restore_generator
from .config import PolicyIterationConfig
from .evaluation import fit_value, relative_weights, rollout_targets
from .improvement import greedy_objective, improve_policy
from .networks import (GreedyPolicy, SignedExpValue, clamp_to_box, evaluation_states, make_policy_network,
                       make_value_network, input_steps, set_constant_action, training_states, _zero_value)
from .scales import MAX_TRAINING_REGION, closed_loop_rates, linearised_feedback, resolve_settings, training_region

#: the time step is at most this fraction of the closed loop's fastest time scale 1 / rate
_STEP_PER_RATE = 0.2
#: with the level solved exactly, the evaluation horizon is at most this many of the closed loop's slowest
#: time scales (1 / its slowest decay rate)
_HORIZON_PER_SLOW_RATE = 3.0
#: the level is corrected only after a fit whose mean squared error (in units of the targets' spread) is below
_LEVEL_FIT_MSE = 0.1
#: a run that spends its budget is unsettled when, in its last iteration, the estimated value error is above
#: the first or the policy moved by more than the second (relative L2 on the evaluation states)
_UNSETTLED_VALUE, _UNSETTLED_POLICY = 0.01, 0.02

__all__ = ["PolicyIteration", "PolicyIterationSolution", "PolicyIterationWarning"]


class PolicyIterationWarning(RuntimeWarning):
    """A policy-iteration run spent its budget while its value or its policy was still moving
    (:meth:`PolicyIteration.unsettled`): what it returns may be far from the optimum."""


class PolicyIterationSolution:
    """What :meth:`PolicyIteration.solve` returns: ``value(x)`` (B, d) -> (B, 1), ``policy(x)`` (B, d) -> (B, k),
    the ``history`` of diagnostics, the networks ``value_net`` and ``policy_net`` (None with the greedy
    policy), and ``iterations``, ``converged``, ``seconds``."""

    def __init__(self, problem, value_net, policy_net, history, config, iterations, converged, seconds):
        self.problem = problem
        self.value_net = value_net
        self.policy_net = policy_net
        self.history = history
        self.config = config
        self.iterations = iterations
        self.converged = converged
        self.seconds = seconds
        self._greedy = GreedyPolicy(problem, value_net) if policy_net is None else None

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1), differentiable in x (for residuals and gradients); on x's device, in x's dtype."""
        self.problem.check_state(x)
        p = next(self.value_net.parameters())
        return self.value_net(x.to(dtype=p.dtype, device=p.device)).to(x)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k), detached; on x's device, in x's dtype (a GPU-trained policy drives CPU simulations)."""
        self.problem.check_state(x)
        p = next(self.value_net.parameters())
        xx = x.to(dtype=p.dtype, device=p.device)
        if self._greedy is not None:
            return self._greedy(xx).to(x)
        with torch.no_grad():
            return self.policy_net(xx).to(x)

    def errors(self, x: torch.Tensor | None = None) -> dict[str, float]:
        """The closed form's score of this solution on ``x`` (default: the solver's evaluation states)."""
        x = evaluation_states(self.problem, self.config.n_eval, dtype=torch.float64) if x is None else x
        self.problem.check_state(x)
        return self.problem.exact().score(self, x)

    def __repr__(self):
        return (f"PolicyIterationSolution({self.problem!r}, iterations={self.iterations}, converged={self.converged}, "
                f"{self.seconds:.1f} s)")


class PolicyIteration(IterativeSolver):
    """Neural policy iteration for a :class:`~hjbcourse.ControlProblem` (book: chapter "Policy iteration").

    ``PolicyIteration(problem, config).solve()`` returns a :class:`PolicyIterationSolution`; one :meth:`step`
    is one policy iteration (an evaluation, a fit of V, an improvement). Any problem with ``drift``,
    ``diffusion``, ``reward``, ``rho``, a ``domain`` and ``sample_states`` works; when it has ``exact()``, the
    errors against it are logged every iteration. :meth:`save` and :meth:`load` checkpoint the networks,
    optimisers, random streams, history and iteration count; ``solve()`` after ``load`` continues the run.
    On the same kind of device the random streams continue where they stopped, so a resumed run repeats an
    uninterrupted one. A generator's state cannot move between a CPU and a GPU: on another device the streams
    restart, seeded from ``config.seed`` and the iteration reached.
    """

    Config = PolicyIterationConfig
    guarded = ("value_fit_mse", "policy_objective")
    shown = ("value_fit_mse", "hjb_residual", "value_rel_l2")

    def __init__(self, problem: ControlProblem, config: PolicyIterationConfig | None = None):
        if not isinstance(problem, ControlProblem):
            raise ValueError(f"problem must be a ControlProblem, got {type(problem).__name__}")
        config = self._init_run(config)
        if config.scheme == "weak2" and not (problem.additive_noise or problem.noise_dim == 1):
            raise ValueError("scheme 'weak2' needs additive noise or one noise dimension; set scheme='euler' "
                             "with a small dt for this problem")
        self.problem = problem
        dtype, device = config.torch_dtype, config.torch_device
        self.settings = st = resolve_settings(problem, config)
        if config.policy == "greedy":
            GreedyPolicy(problem, _zero_value).check(
                problem.sample_states(64, make_generator(0, "cpu"), dtype=torch.float64))
        # the first policy, its closed loop's rates (which set the steps and horizons) and where its paths go
        # (the training region), all before the networks, which are scaled to that region
        self._initial = self._initial_policy(st.greedy)
        first = self._first_policy()
        self._rate, self._slow_rate, self._growth = closed_loop_rates(
            problem, first, problem.sample_states(256, make_generator(0, "cpu"), dtype=dtype, device=device))
        self.region = self._training_region(first)
        with _forked_rng(config.seed, device):  # seeded initialisation, the caller's generators left alone
            self.value_net = make_value_network(problem, config.value_width, config.value_depth, config.activation,
                                                dtype, device, st.input_scaling, st.state_box, st.value_sign,
                                                self.region)
            self.policy_net = None
            if not st.greedy:
                self.policy_net = make_policy_network(problem, config.policy_width, config.policy_depth,
                                                      config.activation, dtype, device, st.input_scaling,
                                                      st.state_box, self.region)
        if self.policy_net is not None and st.initial_action is not None:
            set_constant_action(self.policy_net, problem, st.initial_action)
        self.value_opt = torch.optim.Adam(self.value_net.parameters(), lr=config.value_lr)
        self.policy_opt = (torch.optim.Adam(self.policy_net.parameters(), lr=config.policy_lr)
                           if self.policy_net is not None else None)
        self._calm = 0
        self._state_gen = make_generator(config.seed, "cpu")
        self._noise_gen = make_generator(config.seed + 1, device)
        self._batch_gen = make_generator(config.seed + 2, device)
        self._x_eval = evaluation_states(problem, config.n_eval, dtype=dtype, device=device)
        self._endpoints = None
        self._exact = None
        try:
            self._exact = problem.exact()
        except NotImplementedError:
            pass

    def _first_policy(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The first policy before the networks exist: the greedy solver's (:meth:`_policy`), or the actor's
        constant first action (``initial_action``, else the squash of 0 into the action box)."""
        if self.settings.greedy:     # the linearisation's feedback, else the greedy action of V = 0
            return self._initial or GreedyPolicy(self.problem, _zero_value)
        p = self.problem
        a = (torch.tensor(self.settings.initial_action, dtype=torch.float64) if self.settings.initial_action
             is not None else squash_to_bounds(torch.zeros(1, p.action_dim, dtype=torch.float64), p.action_low,
                                               p.action_high).reshape(-1))
        return lambda x: a.to(x).expand(x.shape[0], p.action_dim)

    def _training_region(self, first) -> float:
        """``training_region`` when set; else read off the first policy's paths over the first evaluation's
        horizon (:func:`~.scales.training_region`) where that policy is the linearisation's LQR feedback (a
        stabilising guess of the optimum, exact for an LQR) and the inputs are affine; else 1: a constant first
        action's paths (the actor's, or the greedy solver's without a linear feedback) say nothing of where
        the optimum's go, and log inputs have their state box."""
        cfg, st = self.config, self.settings
        if cfg.training_region is not None:
            return float(cfg.training_region)
        if st.input_scaling != "affine" or self._initial is None:
            return 1.0
        _, _, T0, dt0 = self.horizons()
        return training_region(self.problem, first, T0, dt0, cfg.scheme, make_generator(cfg.seed + 4, "cpu"),
                               dtype=cfg.torch_dtype, device=cfg.torch_device,
                               extent=MAX_TRAINING_REGION if self._outgrows_discount else None)

    def _initial_policy(self, greedy: bool):
        """The first policy of the greedy solver: the linearisation's LQR feedback (``initial_policy``
        "linearised", or "auto" where it exists), else None (the greedy action of V = 0)."""
        choice = self.config.initial_policy
        if choice == "constant":
            return None
        if not greedy:
            if choice == "linearised":
                raise ValueError("initial_policy='linearised' needs the greedy policy (policy='greedy' or 'auto' on "
                                 "a control-affine problem with quadratic action cost); use initial_action instead")
            return None
        feedback = linearised_feedback(self.problem)
        if feedback is None and choice == "linearised":
            raise ValueError("initial_policy='linearised': the problem's linearisation at the centre of its domain "
                             "has no stabilising LQR feedback")
        return feedback

    @property
    def _outgrows_discount(self) -> bool:
        """Whether the first policy's paths grow at g >= rho / 2: a quadratic read along them, growing like
        e^{2 g t}, then outweighs the discount, and no finite horizon forgets it."""
        return self.problem.rho <= 2 * self._growth

    @property
    def _decay_rate(self) -> float:
        """The rate at which the discounted weight of the value's errors read along the first policy's paths
        decays: rho for a loop that does not grow, rho - 2 g where its paths grow at the rate g (a quadratic
        read along them grows like e^{2 g t}), or rho itself where rho <= 2 g (no finite horizon forgets
        them; the training region is then the largest, :meth:`_training_region`). Only where the first policy
        is the linearisation's LQR feedback, whose value is quadratic near the linearisation; else rho."""
        rho = self.problem.rho
        return rho - 2 * self._growth if self._initial is not None and not self._outgrows_discount else rho

    def horizons(self) -> tuple[float, float, float, float]:
        """(T, dt, T0, dt0): the evaluation's horizon and step, and those of the first evaluation.

        Without ``adapt_dt``, :meth:`PolicyIterationConfig.horizons`. With it, read off the first policy's
        closed loop over the training states, whose fastest rate is lambda (the largest eigenvalue modulus of
        the drift's Jacobian) and slowest decay rate mu: the step is the config's, or a hundredth of the
        horizon where that is longer, and at most 0.2 / lambda (so an explicit scheme resolves the fastest
        motion whatever the problem's time scale);
        and where the value's level is solved exactly (:meth:`_correct_level`), the horizons are at most
        3 / mu and 6 / mu (the errors left after the level shrink like e^{-(rho + mu) T}), and at most
        the config's (0.5 / rho and 3 / rho by default). Where the first policy's paths grow at the rate g
        (an unstable closed loop; the discounted optimum of an unstable open loop need not stabilise it), the
        errors of a quadratic value read at their end points shrink only like e^{-(rho - 2 g) T}: the default
        horizons are then 0.5 / (rho - 2 g) and 3 / (rho - 2 g) (:attr:`_decay_rate`)."""
        st = self.settings
        cfg = self.config if st.horizon is None else self.config.replace(horizon=st.horizon, dt=st.dt)
        T, dt, T0, dt0 = cfg.horizons(self._decay_rate)
        if not st.adapt_dt:
            return T, dt, T0, dt0
        if self._level_applies and self._slow_rate > 0:
            T = min(T, _HORIZON_PER_SLOW_RATE / self._slow_rate)
            T0 = min(T0, 2 * _HORIZON_PER_SLOW_RATE / self._slow_rate)
        if self._rate > 0:
            dt = min(_STEP_PER_RATE / self._rate, max(dt, T / 100))
            dt0 = min(_STEP_PER_RATE / self._rate, max(dt0, T0 / 100))
        return max(dt, round(T / dt) * dt), dt, max(dt0, round(T0 / dt0) * dt0), dt0

    # -- the current policy --------------------------------------------------------------------------
    def current_policy(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The policy the next evaluation rolls out: the actor, or the greedy policy of the current V
        (with V = 0 before the first evaluation)."""
        return self._policy(fitted=self.iteration >= self.settings.initial_sweeps)

    def _policy(self, fitted: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.policy_net is not None:
            return self.policy_net
        if not fitted:
            return self._first_policy()
        return GreedyPolicy(self.problem, self.value_net)

    def solution(self) -> PolicyIterationSolution:
        return PolicyIterationSolution(self.problem, self.value_net, self.policy_net, self.history, self.config,
                                       self.iteration, self.converged, self.seconds)

    # -- one iteration --------------------------------------------------------------------------------
    def _step(self, it: int) -> dict[str, float]:
        """One policy iteration: evaluate the current policy, fit V to the targets, improve, score."""
        policy = self.current_policy()
        x, n_domain = self._training_batch(policy)
        with torch.no_grad():
            v_old = None if self.iteration == 0 else self.value_net(self._x_eval)
            a_old = policy(self._x_eval)
        y, se, z, ends, v_ends = self._evaluate(policy, x, n_domain, it)
        mse = self._fit(x, y, z, it)
        self._correct_level(x, y, ends, v_ends, mse)
        if self.policy_net is None:
            q = greedy_objective(self.problem, self.value_net, x, it)
        elif self.iteration + 1 >= self.settings.initial_sweeps:  # the first sweeps only evaluate
            q = improve_policy(self.problem, self.policy_net, self.value_net, x, self.policy_opt,
                               self.settings.policy_steps, it)
        else:
            q = improve_policy(self.problem, self.policy_net, self.value_net, x, self.policy_opt, 0, it)
        return self._diagnostics(mse, se, q, v_old, a_old)

    def _training_batch(self, policy) -> tuple[torch.Tensor, int]:
        """The iteration's training states and how many of them (the first ones) come from the domain: the
        rest, ``replay_fraction`` of them, are end points of the previous evaluation's paths (for the first
        iteration, of a pilot simulation of the initial policy over one horizon)."""
        cfg, p = self.config, self.problem
        dtype, device = cfg.torch_dtype, cfg.torch_device
        n_replay = int(round(cfg.replay_fraction * cfg.n_states))
        x_dom = training_states(p, cfg.n_states - n_replay, self._state_gen, dtype, device, self.region)
        if not n_replay:
            return x_dom, x_dom.shape[0]
        if self._endpoints is None:  # pilot: where the initial policy's paths end after one horizon
            T, dt, _, _ = self.horizons()
            pilot = training_states(p, n_replay, self._state_gen, dtype, device, self.region)
            with torch.no_grad():
                x_T = simulate(p, policy, pilot, T, dt, scheme=cfg.scheme, generator=self._noise_gen).x_T
            self._endpoints = clamp_to_box(p, x_T, self.settings.state_box, self.settings.input_scaling)
        pick = torch.randperm(self._endpoints.shape[0], generator=self._state_gen)[:n_replay].to(device)
        return torch.cat([x_dom, self._endpoints[pick]]), x_dom.shape[0]

    def _evaluate(self, policy, x: torch.Tensor, n_domain: int, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feynman–Kac targets y (B, 1) of ``policy`` at ``x`` and their standard errors; keeps the end points
        of the domain states' paths for the next replay. The first evaluation (V_0 = 0) runs over the longer
        ``initial_horizon`` and sets the value network's output scale from its targets."""
        cfg, p = self.config, self.problem
        first = self.iteration == 0
        T, dt, T0, dt0 = self.horizons()
        paths = (self.settings.initial_paths or cfg.paths_per_state) if first else cfg.paths_per_state
        y, se, x_end, *z = rollout_targets(p, policy, None if first else self.value_net, x, T0 if first else T,
                                           dt0 if first else dt, paths, cfg.antithetic, cfg.scheme,
                                           cfg.control_variate, cfg.cv_stride, self._noise_gen,
                                           return_endpoints=True, return_gradients=self.settings.gradient_labels,
                                           input_scaling=self.settings.input_scaling)
        if not first:
            self._endpoints = clamp_to_box(p, x_end[0, :n_domain], self.settings.state_box,
                                           self.settings.input_scaling)
        check_finite(y, "the Feynman-Kac targets", it)
        if first and isinstance(self.value_net, SignedExpValue):
            self.value_net.set_output_scale(y)
        elif first:  # work in units of the value's spread from now on
            shift, scale = float(y.mean()), float(y.std())
            self.value_net.out_shift.fill_(shift)
            self.value_net.out_scale.fill_(scale if scale > 0 else max(abs(shift), 1.0))
        if z:
            check_finite(z[0], "the pathwise gradients of the targets", it)
        v_ends = None
        if self._level_applies:  # V_old at the end points, for the level's correction after the fit
            with torch.no_grad():
                v_ends = torch.zeros_like(y) if first else self._mean_over_paths(x_end)
        return y, se, (z[0] if z else None), x_end, v_ends

    def _mean_over_paths(self, ends: torch.Tensor) -> torch.Tensor:
        """(paths, B, d) -> (B, 1): the current value at each state's end points, averaged over its paths."""
        P, B, d = ends.shape
        return self.value_net(ends.reshape(P * B, d)).reshape(P, B, 1).mean(0)

    @property
    def _level_applies(self) -> bool:
        """Whether the value's level is corrected: ``level_correction``, and a value network with an additive
        level (not the sign * exp(N) network of ``value_sign``: solving its scale the same way, measured on the
        suite's Merton problems, helped gamma = 5 and hurt gamma = 3, and turned a divergence at gamma = 0.5
        into a silently wrong answer, so it is not done)."""
        return self.config.level_correction and self.settings.value_sign is None   # no SignedExpValue

    def _correct_level(self, x, y, ends, v_old_ends, mse: float) -> None:
        """Solve the evaluation's fixed point exactly along the direction in which it converges slowest.

        The targets are y = R + e^{-rho T} V_old(X_T) (less the control variate), so an error c in V_old's
        level comes back as e^{-rho T} c: the level converges only by that factor per iteration, slowly when
        rho T is small. With the fitted shape V_new, the level delta with mean[V_new(x) + delta] =
        mean[R + e^{-rho T} (V_new(X_T) + delta)] over the training states is
        delta = mean[y - V_new(x) + e^{-rho T} (V_new(X_T) - V_old(X_T))] / (1 - e^{-rho T}); V_new + delta.
        (The fit's own mean residual, mean[y - V_new(x)], is zero for a converged least-squares fit; where
        a fit stopped short it is added once rather than divided by 1 - e^{-rho T}, which would amplify it.)
        Then the horizon only has to contract the errors that the closed loop does not average away
        (:meth:`horizons`).

        The level is solved from the fitted shape, so only when the fit resolves its targets: a fit mean
        squared error ``mse`` (in units of the targets' spread) of at most :data:`_LEVEL_FIT_MSE`; a fit that
        stopped far short (a smoke-test budget) would have its shape's error extrapolated instead."""
        if not self._level_applies or not mse <= _LEVEL_FIT_MSE:
            return
        first = self.iteration == 0
        T = self.horizons()[2 if first else 0]
        decay = math.exp(-self.problem.rho * T)
        lo, hi = (t.to(x) for t in self.problem.domain)
        inside = ((x >= lo) & (x <= hi)).all(-1)   # solved where the value is read: the domain's states
        if bool(inside.any()):
            x, y, ends, v_old_ends = x[inside], y[inside], ends[:, inside], v_old_ends[inside]
        with torch.no_grad():
            v_x, v_T = self.value_net(x), self._mean_over_paths(ends)
            delta = float((y - v_x).mean()) + decay * float((v_T - v_old_ends).mean()) / (1.0 - decay)
            self.value_net.out_shift.add_(delta)

    def _fit(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None, it: int) -> float:
        """Fit V to the targets (:func:`fit_value`), the learning rate decaying geometrically from ``value_lr``
        to ``value_lr_final`` over the budget; returns the fit's mean squared error."""
        cfg = self.config
        first = self.iteration == 0
        frac = min(1.0, self.iteration / max(1, self.settings.iterations - 1))
        lr = cfg.value_lr * (cfg.value_lr_final / cfg.value_lr) ** frac
        for group in self.value_opt.param_groups:
            group["lr"] = lr
        weights = None
        if self.settings.value_fit == "relative":
            if first:
                self._prefit(x, y, it)
            with torch.no_grad():
                weights = relative_weights(self.value_net(x))
        # no polish on the first fit: its targets have no control variate, and L-BFGS would fit their noise
        return fit_value(self.value_net, x, y, self.value_opt, self.settings.value_steps, self.settings.value_batch,
                         self._batch_gen, it,
                         0 if first else self.settings.polish_steps, weights, z,
                         None if z is None else input_steps(self.problem, x, self.settings.input_scaling))

    def _prefit(self, x: torch.Tensor, y: torch.Tensor, it: int) -> None:
        """The first relative fit's stand-in for V_old, whose weights 1 / V_old^2 it takes: for the
        ``value_sign`` network, N fitted to log(sign * y) (:meth:`SignedExpValue.log_targets`); else V fitted
        to y by plain least squares. Without it the first fit was plain least
        squares, and where the first states' values span orders of magnitude (the replayed end points of
        Merton's gamma = 5 span seven) the largest ones decided it: at the domain's centre the first fit was
        500 times off and the run diverged (benchmarks/README.md)."""
        st = self.settings
        if isinstance(self.value_net, SignedExpValue):
            fit_value(self.value_net.net, x, self.value_net.log_targets(y), self.value_opt, st.value_steps,
                      st.value_batch, self._batch_gen, it)
        else:
            fit_value(self.value_net, x, y, self.value_opt, st.value_steps, st.value_batch, self._batch_gen, it)

    def _diagnostics(self, mse: float, se: torch.Tensor, q: float, v_old, a_old) -> dict[str, float]:
        """The iteration's row: the fit, the targets' noise, the policy objective, the HJB residual, the changes
        of the policy and the value (``v_old``, ``a_old``: before the iteration, on the evaluation states),
        the value error they imply, and the errors against the closed form when there is one."""
        cfg, p = self.config, self.problem
        new_policy = self._policy(fitted=True)
        with torch.no_grad():
            v_eval = self.value_net(self._x_eval)
            a_eval = new_policy(self._x_eval)
        row = {
            "value_fit_mse": mse,
            "target_se": float(se.pow(2).mean().sqrt() / self.value_net.out_scale) if torch.isfinite(se).all() else math.nan,
            "policy_objective": q,
            "hjb_residual": hjb_residual_norm(p, self.value_net, new_policy, self._x_eval, cfg.generator_method),
            "policy_change": relative_l2(a_eval, a_old) if bool(a_old.abs().sum() > 0) else math.nan,
        }
        if v_old is not None:
            change = relative_l2(v_eval, v_old)
            row["value_change"] = change
            row["value_error_estimate"] = change / (1.0 - math.exp(-self._decay_rate * self.horizons()[0]))
        if self._exact is not None:
            row.update(self._exact.score(self.solution(), self._x_eval.to(torch.float64)))
        return row

    def _budget(self) -> int:
        """At most ``config.iterations`` iterations, or the default read off the improvement
        (:func:`~.scales.resolve_settings`)."""
        return int(self.settings.iterations)

    def _converged(self, row: dict[str, float], it: int) -> bool:
        """The stopping rule: for ``patience`` iterations in a row (and after ``min_iterations``), both the
        estimated value error and the relative change of the policy are below ``tol``."""
        cfg = self.config
        calm = (row.get("value_error_estimate", math.inf) < cfg.tol
                and not (row["policy_change"] >= cfg.tol))
        self._calm = self._calm + 1 if calm else 0
        return self._calm >= cfg.patience and it >= cfg.min_iterations

    def solve(self) -> PolicyIterationSolution:
        """Step until the stopping rule holds or the budget is spent; a :class:`PolicyIterationWarning` when
        the run ends unsettled (:meth:`unsettled`)."""
        solution = super().solve()
        reason = self.unsettled()
        if reason:
            warnings.warn(f"policy iteration on {self.problem!r}: {reason}", PolicyIterationWarning, stacklevel=2)
        return solution

    def unsettled(self) -> str | None:
        """Why the run has not settled, or None: after the budget is spent without the stopping rule holding,
        the last iteration's estimated value error (its change / (1 - e^{-rate T}), the distance to the
        evaluation's fixed point that change implies) above 1%, or its policy change above 2%, the scale of
        the suite's targets. Either says that more iterations would still move the answer by more than that."""
        if self.converged or self.iteration < self._budget() or not self.history.rows:
            return None
        row = self.history.rows[-1]
        value, policy = row.get("value_error_estimate", math.nan), row.get("policy_change", math.nan)
        if not (value > _UNSETTLED_VALUE or policy > _UNSETTLED_POLICY):
            return None
        return (f"the budget of {self.iteration} iterations is spent and the run has not settled: in the last "
                f"one the value moved by {row.get('value_change', math.nan):.1%} (an estimated distance of "
                f"{value:.1%} from the evaluation's fixed point) and the policy by {policy:.1%} (relative L2 "
                f"on the evaluation states). The returned value and policy may be far from the optimum; "
                f"the history shows the course, and more iterations or a longer horizon may settle it")

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        gens = (self._state_gen, self._noise_gen, self._batch_gen)
        return {
            "value_net": self.value_net.state_dict(),
            "policy_net": None if self.policy_net is None else self.policy_net.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "policy_opt": None if self.policy_opt is None else self.policy_opt.state_dict(),
            "calm": self._calm,
            "rng": [g.get_state() for g in gens],
            "rng_devices": [g.device.type for g in gens],
            "endpoints": None if self._endpoints is None else self._endpoints.detach().cpu(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if (state["policy_net"] is None) != (self.policy_net is None):
            raise ValueError("config.policy differs from the checkpoint's ('actor' vs 'greedy')")
        self.value_net.load_state_dict(state["value_net"])
        if self.policy_net is not None:
            self.policy_net.load_state_dict(state["policy_net"])
            self.policy_opt.load_state_dict(state["policy_opt"])
        self.value_opt.load_state_dict(state["value_opt"])
        self._calm = int(state["calm"])
        gens = (self._state_gen, self._noise_gen, self._batch_gen)
        for i, (g, s, saved_on) in enumerate(zip(gens, state["rng"], state["rng_devices"])):
            restore_generator(g, s, saved_on, self.config.seed + i + 1000 * (self.iteration + 1))
        if state["endpoints"] is not None:
            self._endpoints = state["endpoints"].to(dtype=self.config.torch_dtype, device=self.config.torch_device)
