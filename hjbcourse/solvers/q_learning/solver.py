"""The q-learning solver and its solution (method: :mod:`hjbcourse.solvers.q_learning`)."""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ...checkpoint import save_checkpoint
from ...environment import check_sampler
from ...runtime import _forked_rng, make_generator
from ...training import DivergenceError, History, check_finite
from ..base import IterativeSolver, restore_generator
from .config import QLearningConfig
from .parametrisations import ActionMap, Critic, GibbsQ, Mean, NormalisedValue, Precision, make_value_net
from .replay import ReplayBuffer

__all__ = ["QLearning", "QLearningSolution", "QLearningWarning"]


def _precision_solve(M: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(..., k, k) lower-triangular M, (..., k) s -> Lam^{-1} s = M^{-T} M^{-1} s (Lam = M M')."""
    w = torch.linalg.solve_triangular(M, s.unsqueeze(-1), upper=False)
    return torch.linalg.solve_triangular(M.transpose(-1, -2), w, upper=True).squeeze(-1)


class QLearningWarning(RuntimeWarning):
    """A q-learning run ended with a q-function the transitions contradict (:meth:`QLearning.consistency`)."""


@dataclass
class QLearningSolution:
    """What :meth:`QLearning.solve` returns: ``value(x)`` (B, d) -> (B, 1), ``policy(x)`` (B, d) -> (B, k) (the
    mean of the learned Gaussian policy, mapped into the action box), ``q(x, a)`` (B, 1) (q-learning: the rate
    of advantage q_psi; actor-critic: the critic Q_psi), ``history``, the ``n_transitions`` used and the
    training time ``seconds``."""

    method: str
    value_net: nn.Module
    mean_net: nn.Module
    q_fn: Callable
    to_action: Callable
    config: QLearningConfig
    state_dim: int
    action_dim: int
    history: History = field(default_factory=History)
    n_transitions: int = 0
    seconds: float = 0.0
    diagnostics: dict = field(default_factory=dict)

    def _in(self, x, name: str = "x", dim: int | None = None):
        """``x`` checked to be a tensor (B, dim) (dim: the state dimension), on the networks' device and dtype."""
        dim = self.state_dim if dim is None else dim
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor of shape (batch, {dim}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{name} must have shape (batch, {dim}), got {tuple(x.shape)}")
        p = next(self.mean_net.parameters())
        return x.to(dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k): the action at the policy's mean, squash(m(x)) (m(x) itself for unbounded actions)."""
        m = self.mean_net(self._in(x))
        return self.to_action(m).to(x)

    @torch.no_grad()
    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): J_theta(x) (q-learning) or Q_psi(x, a_omega(x)) (actor-critic)."""
        xi = self._in(x)
        if self.method == "q_learning":
            return self.value_net(xi).to(x)
        return self.q_fn(xi, self.mean_net(xi)).to(x)

    @torch.no_grad()
    def q(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, k) -> (B, 1), at the unconstrained action coordinates u (the action is
        ``to_action(u)``: squashed or clipped into the box; u = a when the action set is unbounded)."""
        xi, ui = self._in(x), self._in(u, "u", self.action_dim)
        if ui.shape[0] != xi.shape[0]:
            raise ValueError(f"u must have one row per row of x ({xi.shape[0]}), got {ui.shape[0]}")
        return self.q_fn(xi, ui).to(x)

    def save(self, path):
        """Save the weights, the config and the history with :func:`hjbcourse.checkpoint.save_checkpoint` (to
        continue training, save the solver instead: :meth:`QLearning.save`)."""
        return save_checkpoint(path, value=self.value_net.state_dict(), mean=self.mean_net.state_dict(),
                               config={k: v for k, v in self.config.__dict__.items()},
                               history=self.history.as_dict())


def _per_action(v, k: int) -> torch.Tensor:
    """(k,) float64: a number repeated k times, or a sequence of k numbers."""
    return torch.as_tensor(list(v) if isinstance(v, (tuple, list)) else [v] * k, dtype=torch.float64)


def _cosine(n_updates: int, final: float) -> Callable[[int], float]:
    """The learning-rate factor after u updates: a cosine from 1 down to ``final`` over ``n_updates``."""
    def factor(u):
        c = 0.5 * (1 + math.cos(math.pi * min(u, n_updates) / n_updates))
        return final + (1 - final) * c
    return factor


class QLearning(IterativeSolver):
    """Model-free learning of a continuous-time control problem from an environment's transitions.

    ``env`` is a :class:`~hjbcourse.TransitionSampler` or any object with the same small interface (see
    :mod:`hjbcourse.environment`); the solver uses only ``env.reset``, ``env.step`` and the attributes there,
    and passes its own generators to them.

    Construction draws the first batch of ``n_envs`` transitions (it sets the scale |r| / rho of the value)
    and builds the networks from ``config.seed``, leaving the caller's global RNG as it was. One :meth:`step` is
    a block of ``log_every`` environment steps, each a batch of ``n_envs`` transitions followed by
    ``updates_per_step`` gradient steps, and logs one row of ``history`` (the last block may be shorter).
    The budget is ``n_transitions``: the first batch and ``n_transitions // n_envs - 1`` environment steps,
    hence ``ceil((n_transitions // n_envs - 1) / log_every)`` solver steps. :meth:`save` and :meth:`load`
    keep the networks, optimisers, replay buffer, paths and generators: a resumed run repeats an uninterrupted one.
    """

    Config = QLearningConfig
    guarded = ("loss", "actor_loss")
    shown = ("loss",)

    def __init__(self, env, config: QLearningConfig | None = None):
        check_sampler(env)
        cfg = self._init_run(config)
        start = time.perf_counter()
        self.env = env
        self._check_action_options()
        self.monitor: Callable[[QLearningSolution], dict] | None = None
        self.device, self.dtype = cfg.torch_device, cfg.torch_dtype
        self.n_env_steps = max(1, cfg.n_transitions // cfg.n_envs - 1)  # the first batch counts too
        self.env_steps = 0                                                 # done after the first batch
        self.updates = 0
        self._last: dict[str, float] = {}
        with _forked_rng(cfg.seed, self.device):
            self.g_env = make_generator(cfg.seed, "cpu")
            self.g_train = make_generator(cfg.seed + 1, self.device)
            self._action_coordinates()
            first = self._first_batch()
            self._build_learners()
        self.buffer = ReplayBuffer(cfg.buffer_size or (self.n_env_steps + 1) * cfg.n_envs, env.state_dim,
                                   env.action_dim, self.dtype, self.device)
        self.buffer.add(*first)
        self._solution = QLearningSolution(cfg.method, self.value_net, self.mean_net, self.q_fn, self.to_action,
                                           cfg, env.state_dim, env.action_dim, self.history)
        self.seconds = time.perf_counter() - start

    # -- set-up ------------------------------------------------------------------------------------------
    def _check_action_options(self) -> None:
        """Refuse per-action options of the wrong length and an initial action outside the box."""
        cfg, env = self.config, self.env
        std = cfg.exploration_std
        if isinstance(std, (tuple, list)) and len(std) != env.action_dim:
            raise ValueError(f"exploration_std must have one entry per action (action_dim={env.action_dim}), "
                             f"got {std!r}")
        sq = cfg.squash
        if isinstance(sq, (tuple, list)) and len(sq) != env.action_dim:
            raise ValueError(f"squash must be a bool or one bool per action (action_dim={env.action_dim}), got {sq!r}")
        ia = cfg.initial_action
        if ia is not None:
            ia_t = _per_action(ia, env.action_dim)
            lo, hi = env.action_low.double().cpu(), env.action_high.double().cpu()
            if ia_t.shape != (env.action_dim,) or not bool(((ia_t > lo) & (ia_t < hi)).all()):
                raise ValueError(f"initial_action must have one entry per action, strictly inside the action box, "
                                 f"got {ia!r}")
        if cfg.lr_final is not None and cfg.lr_final > cfg.learning_rate:
            raise ValueError(f"lr_final must not exceed the learning rate {cfg.learning_rate}, got {cfg.lr_final!r}")

    def _action_coordinates(self) -> None:
        """The Gaussian's coordinates u: the map u -> a into the box, the start u of the policy mean
        (``a_center``) and the behaviour's noise ``std0``; on the CPU in float64, whatever the sampler's device."""
        cfg, env, k = self.config, self.env, self.env.action_dim
        lo, hi = env.action_low.to(torch.float64).cpu(), env.action_high.to(torch.float64).cpu()
        mask = torch.tensor(list(cfg.squash) if isinstance(cfg.squash, (tuple, list)) else [bool(cfg.squash)] * k)
        self.to_action = ActionMap(lo, hi, mask)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        self.a_center = torch.where(finite & ~mask, 0.5 * (lo.nan_to_num(0) + hi.nan_to_num(0)),
                                    torch.zeros(k, dtype=torch.float64))
        if cfg.initial_action is not None:
            self.a_center = self.to_action.inverse(_per_action(cfg.initial_action, k))
        std = cfg.exploration_std
        self.std0 = torch.ones(k, dtype=torch.float64) if std is None else _per_action(std, k)
        s_lo, s_hi = env.state_low.to(torch.float64).cpu(), env.state_high.to(torch.float64).cpu()
        margin = 0.5 * (s_hi - s_lo)
        self._box = (s_lo - margin, s_hi + margin)   # paths beyond it restart

    def _first_batch(self):
        """A first batch, drawn with the initial behaviour, sets the scale of returns |r| / rho (data, not model)."""
        cfg, env = self.config, self.env
        x = env.reset(cfg.n_envs, self.g_env)
        noise = torch.randn(cfg.n_envs, env.action_dim, generator=self.g_env, dtype=torch.float64)
        a0 = self.a_center + self.std0 * noise
        r0, x1 = env.step(x, self._to_env(self.to_action(a0), x), self.g_env)
        self.x_env = x1
        self.r_scale = max(float(r0.abs().mean()), 1e-6)
        self.r_mean = float(r0.mean())
        self._spread_floor = 1e-3 * self.r_scale * float(env.dt)
        return x, a0, r0, x1

    def _build_learners(self) -> None:
        """The networks (in the order their initial weights are drawn), the optimisers and the cosine schedules."""
        cfg, env, dev, dt_ = self.config, self.env, self.device, self.dtype
        scale = self.r_scale / float(env.rho)
        lr = cfg.learning_rate
        self.mean_net = Mean(cfg.mean, env, cfg.width, cfg.depth, self.a_center.to(dt_)).to(dev, dt_)
        self.target = self.opt_actor = self.gibbs = self.prec = None
        params: list = []
        if cfg.method == "q_learning":
            self.value_net = make_value_net(cfg, env, scale, self.r_mean / float(env.rho)).to(dev, dt_)
            # the precision starts at |r| / std^2 (per action), so that it starts at a sensible size
            lam0 = (self.r_scale / self.std0 ** 2).to(dev, dt_)
            self.prec = Precision(cfg.precision_kind, env, lam0,
                                  cfg.power_exponent if cfg.value == "power" else None,
                                  cfg.width, cfg.depth).to(dev, dt_)
            center = 0.5 * (env.state_low + env.state_high)
            self.gibbs = GibbsQ(self.mean_net, self.prec, cfg.temperature, center.to(dev, dt_))
            self.q_fn = self.gibbs
            params = (list(self.value_net.parameters()) + list(self.mean_net.parameters())
                      + list(self.prec.parameters()))
            # J's own learning rate: its TD error carries the noise of the increments, grad J . sigma dW / dt
            groups = [{"params": list(self.value_net.parameters()), "lr": lr * cfg.value_lr},
                      {"params": list(self.mean_net.parameters()) + list(self.prec.parameters()), "lr": lr}]
            self.opt = torch.optim.Adam(groups, lr=lr)
        else:
            self.value_net = Critic(cfg, env, scale, self.a_center.to(dt_), self.std0.to(dt_)).to(dev, dt_)
            self.target = copy.deepcopy(self.value_net)
            for p in self.target.parameters():
                p.requires_grad_(False)
            self.q_fn = self.value_net
            self.opt = torch.optim.Adam(list(self.value_net.parameters()), lr=lr)
            self.opt_actor = torch.optim.Adam(list(self.mean_net.parameters()), lr=lr)
        # Polyak-Ruppert averaging of q-learning's parameters over the last share of the updates
        n_updates = self.n_env_steps * cfg.n_updates
        share = cfg.averaging_share
        self._avg_params = [] if (share == 0 or cfg.method != "q_learning") else params
        self._avg = [p.detach().clone() for p in self._avg_params]
        self._avg_horizon = max(1.0, share * n_updates)
        self._avg_start = n_updates - self._avg_horizon
        factor = _cosine(n_updates, cfg.final_lr_factor)
        self.scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor)
                       for o in (self.opt, self.opt_actor) if o is not None]

    def _to_env(self, t, like):
        return t.detach().to(dtype=like.dtype, device=like.device)

    @property
    def _description(self) -> str:
        name = getattr(self.env, "name", None)
        return self.config.method + (f" ({name})" if isinstance(name, str) else "")

    def _budget(self) -> int:
        return -(-self.n_env_steps // self.config.log_every)

    # -- one step: a block of environment steps ------------------------------------------------------------
    def _step(self, it: int) -> dict[str, float]:
        """Environment steps (each: collect, then ``updates_per_step`` updates) up to the next multiple of
        ``log_every`` or the end of the budget; the row of history logged after the last one."""
        cfg = self.config
        end = min((self.env_steps // cfg.log_every + 1) * cfg.log_every, self.n_env_steps)
        while self.env_steps < end:
            self._collect(self.env_steps)
            for _ in range(cfg.n_updates):
                self._update()
            self.env_steps += 1
            if isinstance(self.value_net, NormalisedValue) and self.env_steps % 10 == 0:
                xs = self.buffer.sample(min(4096, len(self.buffer)), self.g_train)[0]
                self.value_net.rescale(xs, self.opt, self._spread_floor)
        return self._row()

    def step(self) -> dict[str, float]:
        """One block of environment steps (:meth:`_step`); a diverging run's error names what the transitions
        show of its cause."""
        try:
            return super().step()
        except DivergenceError as exc:
            cause = self._reward_tails()
            if cause:
                raise DivergenceError(f"{exc}. {cause}") from exc
            raise

    def _reward_tails(self) -> str:
        """A sentence on the rewards in the buffer when they are heavy-tailed (else '')."""
        r = self.buffer.r[:len(self.buffer)].abs().flatten().double()
        if r.numel() > 200_000:
            r = r[torch.randint(0, r.numel(), (200_000,), generator=self.g_env).to(r.device)]
        med, top = float(r.median()), float(r.max())
        if not (math.isfinite(top) and top > 1e3 * max(med, 1e-300)):
            return ""
        return (f"The transitions' rewards are heavy-tailed (largest |r| {top:.3g}, median {med:.3g}): the "
                "behaviour's noise reaches actions whose reward is extreme, and the TD errors they bring "
                "dominate the updates; a smaller exploration_std, or action bounds away from where the "
                "reward blows up, would avoid them")

    def _behaviour(self, x: torch.Tensor, frac: float) -> torch.Tensor:
        """(n, d) -> (n, k) float64 on the CPU: actions u of the behaviour policy, mean m(x) plus Gaussian noise
        (decaying with ``frac``, the share of the run done), or the Gibbs policy itself."""
        cfg = self.config
        with torch.no_grad():
            xd = x.to(self.device, self.dtype)
            z = torch.randn(x.shape[0], self.env.action_dim, generator=self.g_env, dtype=torch.float64)
            if cfg.exploration_std is None:       # the Gibbs policy N(m, gamma Lam(x)^{-1}) itself
                return self.gibbs.sample(xd, z.to(xd)).to(torch.float64).cpu()
            m = self.mean_net(xd).to(torch.float64).cpu()
            return m + self.std0 * (1 + (cfg.exploration_final - 1) * frac) * z

    def _collect(self, i: int) -> None:
        """Environment step ``i``: act with the behaviour policy, store the transitions, restart the paths at the
        end of an episode (every ``episode_steps``) or where they left the box of states."""
        cfg, env, x = self.config, self.env, self.x_env
        a = self._behaviour(x, i / max(1, self.n_env_steps - 1))
        r, x_next = env.step(x, self._to_env(self.to_action(a), x), self.g_env)
        if r.shape != (x.shape[0], 1) or x_next.shape != x.shape:
            raise ValueError(f"env.step must return r ({x.shape[0]}, 1) and x_next {tuple(x.shape)}, "
                             f"got {tuple(r.shape)} and {tuple(x_next.shape)}")
        self.buffer.add(x, a, r, x_next)
        x = x_next
        xd64 = x.to(torch.float64).cpu()
        lo, hi = self._box
        out = ((xd64 < lo) | (xd64 > hi)).any(-1) | ~torch.isfinite(xd64).all(-1)
        if (i + 1) % cfg.episode_steps == 0:
            x = env.reset(cfg.n_envs, self.g_env)
        elif bool(out.any()):
            fresh = env.reset(int(out.sum()), self.g_env)
            x = x.clone()
            x[out.to(x.device)] = fresh.to(x)
        self.x_env = x

    def _update(self) -> None:
        """One gradient step on a minibatch from the replay buffer, then one step of the schedules."""
        batch = self.buffer.sample(min(self.config.minibatch, len(self.buffer)), self.g_train)
        if self.config.method == "q_learning":
            self._last = self._td_update(*batch)
        else:
            self._last = self._actor_critic_update(*batch)
        for s in self.scheds:
            s.step()
        self.updates += 1
        if self._avg_params and self.updates > self._avg_start:
            w = 1.0 / min(self.updates - self._avg_start, self._avg_horizon)
            with torch.no_grad():
                for a, p in zip(self._avg, self._avg_params):
                    a.lerp_(p, w)

    def _td_update(self, xb, ab, rb, x2b) -> dict[str, float]:
        """Jia & Zhou's TD(0) step on the martingale condition (module docstring)."""
        dt = float(self.env.dt)
        with torch.no_grad():
            j_next = self.value_net(x2b)
        delta = math.exp(-float(self.env.rho) * dt) * j_next - self.value_net(xb) + (rb - self.q_fn(xb, ab)) * dt
        # J(x') held fixed: the gradient is delta grad J(x) + delta grad q (Jia & Zhou's TD(0)),
        # divided by dt so that its size does not depend on the step.
        loss = 0.5 * (delta / dt).pow(2).mean()
        check_finite(loss, "q-learning TD loss", self.updates)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def _actor_critic_update(self, xb, ab, rb, x2b) -> dict[str, float]:
        """The critic's step towards y = r dt + e^{-rho dt} Qbar(x', a(x')), the actor's ascent of Q(x, a(x)),
        and the target's soft update."""
        dt, cfg = float(self.env.dt), self.config
        with torch.no_grad():
            y = rb * dt + math.exp(-float(self.env.rho) * dt) * self.target(x2b, self.mean_net(x2b))
        loss = (self.value_net(xb, ab) - y).pow(2).mean()
        check_finite(loss, "critic loss", self.updates)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        actor_loss = -self.value_net(xb, self.mean_net(xb)).mean()
        check_finite(actor_loss, "actor loss", self.updates)
        self.opt_actor.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.opt_actor.step()
        with torch.no_grad():
            for pt, p in zip(self.target.parameters(), self.value_net.parameters()):
                pt.lerp_(p, cfg.target_tau)
        return {"loss": float(loss.detach()), "actor_loss": float(actor_loss.detach())}

    def _row(self) -> dict[str, float]:
        """The row of history after environment step ``env_steps``: the last losses, the transitions so far, the
        learning rate, the precisions of q and what ``monitor`` returns."""
        n = (self.env_steps + 1) * self.config.n_envs
        row = dict(self._last, iteration=self.env_steps, transitions=n, lr=self.scheds[0].get_last_lr()[0])
        if self.gibbs is not None:
            for i, v in enumerate(self.gibbs.precision().tolist()):
                row[f"precision_{i}"] = v
        if self.monitor is not None:
            self._solution.n_transitions = n
            row.update(self.monitor(self._solution))
        return row

    # -- the run -----------------------------------------------------------------------------------------
    def solve(self, monitor: Callable[[QLearningSolution], dict] | None = None) -> QLearningSolution:
        """Collect transitions and learn until ``n_transitions`` are spent; ``monitor(solution)`` (optional)
        returns extra diagnostics that are logged every ``log_every`` batches (e.g. errors against a closed
        form, computed by the caller). The caller's global RNG state is left as it was.

        At the end (q-learning), :meth:`consistency` tests the learned q against the last transitions and
        stores the result in ``solution.diagnostics``; where the transitions still ask for a policy mean
        more than ``consistency_tolerance`` (relative) away from the learned one, it warns
        (:class:`QLearningWarning`) instead of returning a silently wrong answer."""
        self.monitor = monitor
        try:
            sol = super().solve()
        finally:
            self.monitor = None
        if self.gibbs is not None and self.env_steps >= self.n_env_steps:
            self.check_consistency(sol)
        return sol

    def check_consistency(self, solution: QLearningSolution | None = None) -> dict[str, float]:
        """:meth:`consistency` stored in ``solution.diagnostics``, with a :class:`QLearningWarning` when the
        transitions ask to move the policy mean by more than ``consistency_tolerance`` (and more than noise),
        or cannot locate it to within that tolerance (``resolution``)."""
        sol = self._solution if solution is None else solution
        d = sol.diagnostics = self.consistency()
        tol = self.config.consistency_tolerance
        if d["resolution"] > tol:
            warnings.warn(
                f"q-learning{self._description[len(self.config.method):]}: the transitions cannot confirm the "
                f"learned policy. On the last {d['n']:,} of them the TD error's slope in the action is so "
                f"noisy that it locates the policy mean only to within {d['resolution']:.0%} of its size "
                f"(tolerance {tol:.0%}; the slope it leaves asks for a move of {d['mean_shift']:.0%}). "
                f"Heavy-tailed rewards or too few transitions; the returned policy may be far from the "
                f"optimum.", QLearningWarning, stacklevel=3)
        elif d["significant"] and d["mean_shift"] > tol:
            warnings.warn(
                f"q-learning{self._description[len(self.config.method):]}: the learned q does not fit the "
                f"transitions. On the last {d['n']:,} of them the TD error still depends on the action "
                f"(test functions (u - m(x)) x [1, x]: chi2 = {d['chi2']:.0f} for {d['dof']} degrees of "
                f"freedom), and the slope it leaves asks to move the policy mean by {d['mean_shift']:.0%} "
                f"of its size (tolerance {tol:.0%}). The returned policy is not the optimum of these "
                f"transitions; more transitions, a smaller exploration_std or a parametrisation that fits "
                f"the problem may help.", QLearningWarning, stacklevel=3)
        return d

    @torch.no_grad()
    def consistency(self, n: int = 200_000) -> dict[str, float]:
        """Jia & Zhou's martingale orthogonality condition tested with functions the training did not use.

        On the last ``n`` transitions of the buffer, the TD error Delta / dt = (e^{-rho dt} J(x') - J(x)) / dt
        + r - q(x, u) is regressed on xi = (u - m(x)) x [1, x~] (x~: the state scaled to [-1, 1]): for the
        solution of the conditions it is orthogonal to every function of (x, u), so the slope s(x) it leaves
        in the action is noise. The Newton step Lam(x)^{-1} s(x) is the move of the policy mean the
        transitions ask for: ``mean_shift`` is its root mean square over the states relative to that of m(x)
        (plus a tenth of the behaviour's noise, so that a mean near zero does not divide by zero);
        ``chi2`` (Wald's statistic of the slope coefficients, ``dof`` of them) says whether it is more than
        noise (``significant``: beyond dof + 6 sqrt(2 dof)); ``resolution`` is the ``mean_shift`` that the
        slope's noise alone gives (the root mean square over draws of its estimated covariance): the
        precision to which these transitions locate the mean."""
        buf = self.buffer
        n = min(n, len(buf))
        if buf.size < buf.capacity:
            idx = torch.arange(buf.size - n, buf.size, device=buf.x.device)
        else:
            idx = (buf._next - 1 - torch.arange(n, device=buf.x.device)) % buf.capacity
        x, u, r, x2 = buf.x[idx], buf.a[idx], buf.r[idx], buf.x2[idx]
        dt, rho = float(self.env.dt), float(self.env.rho)
        y, m, shift_basis = [], [], []
        for sl in torch.split(torch.arange(n, device=x.device), 50_000):
            xs, us = x[sl], u[sl]
            j2, j1 = self.value_net(x2[sl]), self.value_net(xs)
            y.append(((math.exp(-rho * dt) * j2 - j1) / dt + r[sl] - self.q_fn(xs, us)).double())
            m.append(self.mean_net(xs).double())
            M, _ = self.prec.factor(xs)
            shift_basis.append(M.double())
        y, m, M = torch.cat(y), torch.cat(m), torch.cat(shift_basis)
        lo, hi = (t.to(x.device, torch.float64) for t in (self.env.state_low, self.env.state_high))
        phi = torch.cat([torch.ones(n, 1, dtype=torch.float64, device=x.device),
                         (x.double() - (lo + hi) / 2) / ((hi - lo) / 2)], 1)            # (n, d + 1)
        e = u.double() - m                                                              # (n, k)
        xi = (e.unsqueeze(-1) * phi.unsqueeze(1)).flatten(1)                           # (n, k (d + 1))
        X = torch.cat([torch.ones(n, 1, dtype=torch.float64, device=x.device), xi], 1)
        XtX = X.T @ X
        beta = torch.linalg.solve(XtX, X.T @ y).squeeze(1)
        resid = y.squeeze(1) - X @ beta
        cov = resid.var() * torch.linalg.inv(XtX)
        b, C = beta[1:], cov[1:, 1:]
        chi2 = float(b @ torch.linalg.solve(C, b))
        dof = b.numel()
        k = e.shape[1]
        slope = (b.reshape(k, -1) @ phi.T).T                                            # (n, k)
        step = _precision_solve(M, slope)
        size = float(m.pow(2).sum(-1).mean().sqrt()) + 0.1 * float(self.std0.mean())
        shift = float(step.pow(2).sum(-1).mean().sqrt()) / size
        # the same move computed from the slope's noise alone (draws of N(0, C)): what the data cannot resolve
        g = torch.Generator(device="cpu").manual_seed(0)
        draws = torch.randn(64, dof, generator=g, dtype=torch.float64).to(C.device)
        noise = draws @ torch.linalg.cholesky(C + 1e-300 * torch.eye(dof, dtype=C.dtype, device=C.device)).T
        sub = torch.arange(0, n, max(1, n // 2000), device=x.device)
        s_noise = torch.einsum("bkj,nj->bnk", noise.reshape(64, k, -1), phi[sub])      # (64, n', k)
        Ms = M[sub].unsqueeze(0).expand(64, -1, -1, -1)
        st = _precision_solve(Ms, s_noise)
        resolution = float(st.pow(2).sum(-1).mean().sqrt()) / size
        return {"n": n, "chi2": chi2, "dof": dof, "mean_shift": shift, "resolution": resolution,
                "significant": chi2 > dof + 6 * math.sqrt(2 * dof)}

    def solution(self) -> QLearningSolution:
        if self._avg_params and self.env_steps >= self.n_env_steps:
            # the run is over: the solution is the average of the last updates' parameters
            with torch.no_grad():
                for a, p in zip(self._avg, self._avg_params):
                    p.copy_(a)
        sol = self._solution
        sol.n_transitions = (self.env_steps + 1) * self.config.n_envs
        sol.seconds = self.seconds
        return sol

    # -- checkpoints -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, env, config: QLearningConfig | None = None) -> "QLearning":
        """A solver restored from :meth:`save`, on the sampler ``env`` (the first batch is drawn again, then
        replaced by the saved buffer); ``config`` overrides the saved one. On the same kind of device a
        resumed run repeats an uninterrupted one."""
        return super().load(path, env, config)

    def _state(self) -> dict[str, Any]:
        state = {"value": self.value_net.state_dict(), "mean": self.mean_net.state_dict(),
                 "opt": self.opt.state_dict(), "scheds": [s.state_dict() for s in self.scheds],
                 "buffer": self.buffer.state_dict(), "x_env": self.x_env.detach().cpu(),
                 "env_steps": self.env_steps, "updates": self.updates, "last": dict(self._last),
                 "averages": [a.detach().cpu() for a in self._avg],
                 "g_env": self.g_env.get_state(), "g_train": self.g_train.get_state(),
                 "g_train_on": self.g_train.device.type}
        if self.gibbs is not None:
            state["precision"] = self.prec.state_dict()
        if self.target is not None:
            state.update(target=self.target.state_dict(), opt_actor=self.opt_actor.state_dict())
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.value_net.load_state_dict(state["value"])
        self.mean_net.load_state_dict(state["mean"])
        self.opt.load_state_dict(state["opt"])
        if self.gibbs is not None:
            self.prec.load_state_dict(state["precision"])
        if self.target is not None:
            self.target.load_state_dict(state["target"])
            self.opt_actor.load_state_dict(state["opt_actor"])
        for s, st in zip(self.scheds, state["scheds"]):
            s.load_state_dict(dict(st))
        self.buffer.load_state_dict(state["buffer"])
        self.x_env = state["x_env"].to(self.x_env)
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        with torch.no_grad():
            for a, saved in zip(self._avg, state.get("averages", [])):
                a.copy_(saved)
        self._last = dict(state["last"])
        seed = self.config.seed
        restore_generator(self.g_env, state["g_env"], "cpu", seed)
        restore_generator(self.g_train, state["g_train"], state["g_train_on"], seed + 1)
