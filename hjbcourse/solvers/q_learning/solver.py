"""The q-learning solver and its solution (method: :mod:`hjbcourse.solvers.q_learning`)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ...checkpoint import save_checkpoint
from ...environment import check_sampler
from ...runtime import _forked_rng, make_generator
from ...training import History, check_finite
from ..base import IterativeSolver, restore_generator
from .config import QLearningConfig
from .parametrisations import ActionMap, Critic, GibbsQ, Mean, make_value_net
from .replay import ReplayBuffer

__all__ = ["QLearning", "QLearningSolution"]


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
        return x, a0, r0, x1

    def _build_learners(self) -> None:
        """The networks (in the order their initial weights are drawn), the optimisers and the cosine schedules."""
        cfg, env, dev, dt_ = self.config, self.env, self.device, self.dtype
        scale = self.r_scale / float(env.rho)
        lr = cfg.learning_rate
        self.mean_net = Mean(cfg.mean, env, cfg.width, cfg.depth, self.a_center.to(dt_)).to(dev, dt_)
        self.target = self.opt_actor = self.gibbs = None
        if cfg.method == "q_learning":
            self.value_net = make_value_net(cfg, env, scale).to(dev, dt_)
            # log of the diagonal precision, relative to |r| / std^2 so that it starts at a sensible size
            lam0 = (self.r_scale / self.std0 ** 2).to(dev, dt_)
            self.log_lam = nn.Parameter(torch.zeros(env.action_dim, device=dev, dtype=dt_))
            self.gibbs = GibbsQ(self.mean_net, lam0, self.log_lam, cfg.temperature,
                                cfg.power_exponent if cfg.value == "power" else None)
            self.q_fn = self.gibbs
            params = list(self.value_net.parameters()) + list(self.mean_net.parameters()) + [self.log_lam]
            self.opt = torch.optim.Adam(params, lr=lr)
        else:
            self.value_net = Critic(cfg, env, scale, self.a_center.to(dt_), self.std0.to(dt_)).to(dev, dt_)
            self.target = copy.deepcopy(self.value_net)
            for p in self.target.parameters():
                p.requires_grad_(False)
            self.q_fn = self.value_net
            self.opt = torch.optim.Adam(list(self.value_net.parameters()), lr=lr)
            self.opt_actor = torch.optim.Adam(list(self.mean_net.parameters()), lr=lr)
        factor = _cosine(self.n_env_steps * cfg.updates_per_step, cfg.final_lr_factor)
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
            for _ in range(cfg.updates_per_step):
                self._update()
            self.env_steps += 1
        return self._row()

    def _behaviour(self, x: torch.Tensor, frac: float) -> torch.Tensor:
        """(n, d) -> (n, k) float64 on the CPU: actions u of the behaviour policy, mean m(x) plus Gaussian noise
        (decaying with ``frac``, the share of the run done), or the Gibbs policy itself."""
        cfg = self.config
        with torch.no_grad():
            xd = x.to(self.device, self.dtype)
            m = self.mean_net(xd).to(torch.float64).cpu()
            if cfg.exploration_std is None:       # the Gibbs policy N(m, gamma Lam(x)^{-1}) itself
                std = self.gibbs.std(xd).to(torch.float64).cpu()
            else:
                std = self.std0 * (1 + (cfg.exploration_final - 1) * frac)
            return m + std * torch.randn(x.shape[0], self.env.action_dim, generator=self.g_env, dtype=torch.float64)

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
        batch = self.buffer.sample(min(self.config.batch_size, len(self.buffer)), self.g_train)
        if self.config.method == "q_learning":
            self._last = self._td_update(*batch)
        else:
            self._last = self._actor_critic_update(*batch)
        for s in self.scheds:
            s.step()
        self.updates += 1

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
        form, computed by the caller). The caller's global RNG state is left as it was."""
        self.monitor = monitor
        try:
            return super().solve()
        finally:
            self.monitor = None

    def solution(self) -> QLearningSolution:
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
                 "g_env": self.g_env.get_state(), "g_train": self.g_train.get_state(),
                 "g_train_on": self.g_train.device.type}
        if self.gibbs is not None:
            state["log_lam"] = self.log_lam.detach().cpu()
        if self.target is not None:
            state.update(target=self.target.state_dict(), opt_actor=self.opt_actor.state_dict())
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.value_net.load_state_dict(state["value"])
        self.mean_net.load_state_dict(state["mean"])
        self.opt.load_state_dict(state["opt"])
        if self.gibbs is not None:
            with torch.no_grad():
                self.log_lam.copy_(state["log_lam"])
        if self.target is not None:
            self.target.load_state_dict(state["target"])
            self.opt_actor.load_state_dict(state["opt_actor"])
        for s, st in zip(self.scheds, state["scheds"]):
            s.load_state_dict(dict(st))
        self.buffer.load_state_dict(state["buffer"])
        self.x_env = state["x_env"].to(self.x_env)
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self._last = dict(state["last"])
        seed = self.config.seed
        restore_generator(self.g_env, state["g_env"], "cpu", seed)
        restore_generator(self.g_train, state["g_train"], state["g_train_on"], seed + 1)
