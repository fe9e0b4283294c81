"""Model-free continuous-time learning from sampled transitions (book: chapter "Continuous-time q-learning").

The learner sees only transitions (x, a, r, x') of step dt from an environment (:mod:`hjbcourse.environment`);
it never calls a drift, a diffusion or a generator. Two methods share the machinery (replay buffer, behaviour
noise schedule, presets, seed, device, progress bar, history, NaN guard):

``method="td_actor_critic"``  the simple actor-critic of the course's text: a critic Q_psi(x, a) fitted to
    y = r dt + e^{-rho dt} Qbar(x', a_omega(x')) with a slowly updated target copy Qbar, and an actor
    a_omega(x) that climbs Q_psi(x, a_omega(x)). Since Q_dt(x, a) = V(x) + dt q(x, a) + o(dt), the part of the
    critic that the actor needs shrinks like dt and drowns in the critic's error as dt -> 0.

``method="q_learning"``  Jia & Zhou's q-learning (JMLR 2023) with entropy regularisation of temperature
    gamma (``temperature``): a value J_theta(x) and a q-function q_psi(x, a), the rate of advantage
    q(x, a) = r(x, a) + L^a J(x) - rho J(x). The q-function is parametrised in the normalised Gibbs form
        q_psi(x, a) = -1/2 (a - m(x))' Lam (a - m(x)) + gamma/2 log det(Lam / (2 pi gamma)),
    so that int exp(q / gamma) da = 1 holds exactly and the Gibbs policy pi(a|x) ~ exp(q / gamma) is the
    Gaussian N(m(x), gamma Lam^{-1}); ``policy(x)`` returns its mean m(x). Both are trained with the TD(0)
    form of the martingale condition,
        delta = e^{-rho dt} J(x') - J(x) + (r - q_psi(x, a)) dt,
    moving theta along delta grad J(x) (J(x') held fixed) and psi along delta grad q(x, a); every term of
    delta / dt is O(1), so the conditions stay well posed as dt -> 0. The conditions hold for any behaviour
    policy, so exploration noise and replayed transitions are allowed.

Parametrisations (``value`` and ``mean``): ``"mlp"`` (:class:`hjbcourse.MLP`), ``"quadratic"``
(J quadratic in x; for the actor-critic, Q quadratic in (x, a)), ``"power"`` (J = c x^e / e with the
exponent e = ``power_exponent`` given by the user; for the actor-critic Q = c0 + x^e (quadratic in a)),
``"linear"`` and ``"constant"`` means. The precision Lam is a constant positive diagonal matrix (times x^e
for the power family, whose q scales like its J). The Gaussian acts in coordinates u mapped into the action
box (``squash``); ``q`` and ``m`` are functions of u.

Data-driven scales (no model): the first batch of transitions sets |r| / rho, the scale of the value.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..discrete import _check_lqr_step, _discounted_riccati
from ..environment import check_sampler
from ..nets import MLP
from ..problems import _real, squash_to_bounds
from ..runtime import _forked_rng, make_generator, progress
from ..training import History, SolverConfig, check_finite, save_checkpoint

__all__ = ["QLearningConfig", "QLearning", "QLearningSolution", "ReplayBuffer", "held_action_lqr_gain"]

METHODS = ("q_learning", "td_actor_critic")
VALUES = ("mlp", "quadratic", "power")
MEANS = ("mlp", "linear", "constant")


@dataclass(frozen=True)
class QLearningConfig(SolverConfig):
    """Settings of :class:`QLearning`; ``QLearningConfig.preset("quick", seed=0)`` for a CPU.

    Data: ``n_transitions`` in all, collected by ``n_envs`` parallel paths restarted every ``episode_steps``
    steps (or when they leave the state box). Learning: ``updates_per_step`` gradient steps (Adam, learning rate
    ``lr`` with a cosine decay to ``lr * lr_final``; ``lr=None``: 0.05 for the structured families, 0.005
    with a network) per batch of ``n_envs`` transitions, on minibatches of ``batch_size`` from a replay buffer
    of ``buffer_size`` transitions (0: keep all). Behaviour: actions are the
    current policy mean plus Gaussian noise of standard deviation ``exploration_std`` (a number or one per action
    coordinate) times a factor going linearly from 1 to ``exploration_final``; with ``exploration_std=None``
    (q-learning only) actions are drawn from the learned Gibbs policy N(m, temperature Lam^{-1}) itself.
    The Gaussian lives in coordinates u and the action is a = squash(u) in the action box
    (:func:`hjbcourse.squash_to_bounds`) for the coordinates where ``squash`` is true (a bool, or one per action
    coordinate), a = u clipped to the box for the others; ``exploration_std`` is in units of u. Squashing suits
    an optimum near a bound (it acts like a logarithm there); clipping suits an optimum well inside a wide box
    (a quadratic q in u is then exact where q is quadratic in a). The policy starts at
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
    lr_final: float = 0.01
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
        self._check_positive_numbers("lr", allow_none=True)
        for name in ("lr_final", "target_tau", "exploration_final"):
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


# ------------------------------------------------------------------------------------------------------------
# Replay buffer
# ------------------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """A circular buffer of transitions (x, a, r, x'), stored on one device; ``sample`` draws uniformly."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int, dtype=torch.float32, device="cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        kw = dict(dtype=dtype, device=device)
        self.x = torch.empty(capacity, state_dim, **kw)
        self.a = torch.empty(capacity, action_dim, **kw)
        self.r = torch.empty(capacity, 1, **kw)
        self.x2 = torch.empty(capacity, state_dim, **kw)
        self.size = 0
        self._next = 0

    def add(self, x, a, r, x2) -> None:
        n = x.shape[0]
        idx = (torch.arange(n, device=self.x.device) + self._next) % self.capacity
        for buf, v in ((self.x, x), (self.a, a), (self.r, r), (self.x2, x2)):
            buf[idx] = v.to(buf)
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator):
        idx = torch.randint(0, self.size, (n,), generator=generator, device=generator.device).to(self.x.device)
        return self.x[idx], self.a[idx], self.r[idx], self.x2[idx]

    def __len__(self) -> int:
        return self.size


# ------------------------------------------------------------------------------------------------------------
# Parametrisations
# ------------------------------------------------------------------------------------------------------------
class _Quadratic(nn.Module):
    """(B, n) -> (B, 1): scale * (w0 + w . z + sum_{i<=j} W_ij z_i z_j): every quadratic in z."""

    def __init__(self, n: int, scale: float):
        super().__init__()
        self.iu = torch.triu_indices(n, n)
        self.w0 = nn.Parameter(torch.zeros(1))
        self.w1 = nn.Parameter(torch.zeros(n))
        self.w2 = nn.Parameter(torch.zeros(self.iu.shape[1]))
        self.scale = scale

    def forward(self, z):
        n = z.shape[1]
        W = torch.zeros(n, n, dtype=z.dtype, device=z.device).index_put((self.iu[0].to(z.device), self.iu[1].to(z.device)), self.w2)
        return self.scale * (self.w0 + z @ self.w1 + ((z @ W) * z).sum(-1)).unsqueeze(-1)


class _Power(nn.Module):
    """(B, 1) [+ (B, k)] -> (B, 1): scale * (c0 + x^e (c1 / e + quadratic in a)); without a: scale * c1 x^e / e.

    The value has no constant: on a domain such as [0.5, 2] a constant and x^e are nearly collinear, and the
    constant is the direction the TD conditions fix most slowly (at the rate rho)."""

    def __init__(self, exponent: float, scale: float, action_dim: int = 0):
        super().__init__()
        self.e = float(exponent)
        self.scale = scale
        self.c = nn.Parameter(torch.zeros(2))
        self.quad = _Quadratic(action_dim, 1.0) if action_dim else None

    def forward(self, x, a=None):
        xe = x[:, :1].clamp_min(1e-8).pow(self.e)
        if self.quad is None:
            return self.scale * xe * (self.c[1] / self.e)
        return self.scale * (self.c[0] + xe * (self.c[1] / self.e + self.quad(a)))


class _Mean(nn.Module):
    """(B, d) -> (B, k): the policy mean, ``"mlp"``, ``"linear"`` (W x + b) or ``"constant"`` (b)."""

    def __init__(self, kind: str, env, width: int, depth: int, init):
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.net = MLP(env.state_dim, env.action_dim, width, depth, "tanh", env.state_low, env.state_high)
            with torch.no_grad():
                self.net.out.weight.mul_(0.1)
                self.net.out.bias.copy_(init)
        else:
            self.b = nn.Parameter(init.clone())
            if kind == "linear":
                self.W = nn.Parameter(torch.zeros(env.action_dim, env.state_dim))

    def forward(self, x):
        if self.kind == "mlp":
            return self.net(x)
        out = self.b.expand(x.shape[0], -1)
        return out + x @ self.W.T if self.kind == "linear" else out


def _value_net(cfg: QLearningConfig, env, scale: float) -> nn.Module:
    if cfg.value == "quadratic":
        return _Quadratic(env.state_dim, scale)
    if cfg.value == "power":
        if env.state_dim != 1:
            raise ValueError(f"value='power' is for one-dimensional states, the env has state_dim={env.state_dim}")
        return _Power(cfg.power_exponent, scale)
    return MLP(env.state_dim, 1, cfg.width, cfg.depth, "tanh", env.state_low, env.state_high, out_scale=scale)


class _Critic(nn.Module):
    """(B, d), (B, k) -> (B, 1): the actor-critic's Q_psi(x, a)."""

    def __init__(self, cfg: QLearningConfig, env, scale: float, a_center, a_scale):
        super().__init__()
        self.kind = cfg.value
        self.register_buffer("a_center", a_center)
        self.register_buffer("a_scale", a_scale)
        if cfg.value == "quadratic":
            self.net = _Quadratic(env.state_dim + env.action_dim, scale)
        elif cfg.value == "power":
            self.net = _Power(cfg.power_exponent, scale, env.action_dim)
        else:
            lo = torch.cat([env.state_low.double().cpu(), a_center.double() - 3 * a_scale.double()])
            hi = torch.cat([env.state_high.double().cpu(), a_center.double() + 3 * a_scale.double()])
            self.net = MLP(env.state_dim + env.action_dim, 1, cfg.width, cfg.depth, "tanh", lo, hi, out_scale=scale)

    def forward(self, x, a):
        if self.kind == "power":
            return self.net(x, (a - self.a_center) / self.a_scale)
        return self.net(torch.cat([x, a], dim=-1))


# ------------------------------------------------------------------------------------------------------------
# The solution
# ------------------------------------------------------------------------------------------------------------
@dataclass
class QLearningSolution:
    """What :meth:`QLearning.solve` returns: ``value(x)`` (B, d) -> (B, 1), ``policy(x)`` (B, d) -> (B, k) (the
    mean of the learned Gaussian policy, mapped into the action box), ``q(x, a)`` (B, 1) (q-learning: the rate
    of advantage q_psi; actor-critic: the critic Q_psi) and ``history``."""

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
        """Save the weights, the config and the history with :func:`hjbcourse.save_checkpoint`."""
        return save_checkpoint(path, value=self.value_net.state_dict(), mean=self.mean_net.state_dict(),
                               config={k: v for k, v in self.config.__dict__.items()},
                               history=self.history.as_dict())


class _ActionMap:
    """(B, k) -> (B, k): u -> a, squashed into the box (:func:`hjbcourse.squash_to_bounds`) where ``mask`` is
    true, clipped to it elsewhere."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor):
        self.low, self.high, self.mask = low, high, mask

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        lo, hi, m = self.low.to(u), self.high.to(u), self.mask.to(u.device)
        return torch.where(m, squash_to_bounds(u, lo, hi), torch.maximum(torch.minimum(u, hi), lo))

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        """(k,) -> (k,): the u of an action strictly inside the box."""
        lo_f, hi_f = torch.isfinite(self.low), torch.isfinite(self.high)
        out = a.clone()
        for i in range(a.shape[0]):
            if not self.mask[i]:
                continue
            if lo_f[i] and hi_f[i]:
                out[i] = torch.logit((a[i] - self.low[i]) / (self.high[i] - self.low[i]))
            elif lo_f[i]:
                out[i] = torch.log(torch.expm1(a[i] - self.low[i]))
            elif hi_f[i]:
                out[i] = -torch.log(torch.expm1(self.high[i] - a[i]))
        return out


# ------------------------------------------------------------------------------------------------------------
# The solver
# ------------------------------------------------------------------------------------------------------------
class QLearning:
    """Model-free learning of a continuous-time control problem from an environment's transitions.

    ``env`` is a :class:`~hjbcourse.TransitionSampler` or any object with the same small interface (see
    :mod:`hjbcourse.environment`); the solver uses only ``env.reset``, ``env.step`` and the attributes there.
    """

    def __init__(self, env, config: QLearningConfig | None = None):
        check_sampler(env)
        self.env = env
        self.config = config if config is not None else QLearningConfig.preset("quick")
        if not isinstance(self.config, QLearningConfig):
            raise ValueError(f"config must be a QLearningConfig, got {type(self.config).__name__}")
        std = self.config.exploration_std
        if isinstance(std, (tuple, list)) and len(std) != env.action_dim:
            raise ValueError(f"exploration_std must have one entry per action (action_dim={env.action_dim}), got {std!r}")
        sq = self.config.squash
        if isinstance(sq, (tuple, list)) and len(sq) != env.action_dim:
            raise ValueError(f"squash must be a bool or one bool per action (action_dim={env.action_dim}), got {sq!r}")
        ia = self.config.initial_action
        if ia is not None:
            ia_t = torch.as_tensor(list(ia) if isinstance(ia, (tuple, list)) else [ia] * env.action_dim, dtype=torch.float64)
            lo, hi = env.action_low.double().cpu(), env.action_high.double().cpu()
            if ia_t.shape != (env.action_dim,) or not bool(((ia_t > lo) & (ia_t < hi)).all()):
                raise ValueError(f"initial_action must have one entry per action, strictly inside the action box, got {ia!r}")

    # -- helpers -----------------------------------------------------------------------------------------
    def _to_env(self, t, like):
        return t.detach().to(dtype=like.dtype, device=like.device)

    def solve(self, monitor: Callable[[QLearningSolution], dict] | None = None) -> QLearningSolution:
        """Collect transitions and learn; ``monitor(solution)`` (optional) returns extra diagnostics that are
        logged every ``log_every`` batches (e.g. errors against a closed form, computed by the caller).

        The networks start from ``config.seed``; the caller's global RNG state is left as it was."""
        with _forked_rng(self.config.seed, self.config.torch_device):
            return self._solve(monitor)

    def _solve(self, monitor):
        cfg, env = self.config, self.env
        dev, dt_ = cfg.torch_device, cfg.torch_dtype
        g_env = make_generator(cfg.seed, "cpu")
        g_train = make_generator(cfg.seed + 1, dev)
        dt, rho, k = float(env.dt), float(env.rho), env.action_dim
        disc = math.exp(-rho * dt)
        lr = cfg.lr if cfg.lr is not None else (0.005 if "mlp" in (cfg.value, cfg.mean) else 0.05)

        # the behaviour's bookkeeping is on the CPU in float64, whatever the sampler's device
        lo, hi = env.action_low.to(torch.float64).cpu(), env.action_high.to(torch.float64).cpu()
        # The Gaussian policy lives in coordinates u; the action is a = squash(u) (or u clipped) in the box.
        sq = cfg.squash
        mask = torch.tensor(list(sq) if isinstance(sq, (tuple, list)) else [bool(sq)] * k)
        squash = _ActionMap(lo, hi, mask)
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        a_center = torch.where(finite & ~mask, 0.5 * (lo.nan_to_num(0) + hi.nan_to_num(0)), torch.zeros(k, dtype=torch.float64))
        if cfg.initial_action is not None:
            ia = cfg.initial_action
            a_center = squash.inverse(torch.as_tensor(list(ia) if isinstance(ia, (tuple, list)) else [ia] * k,
                                                      dtype=torch.float64))
        if cfg.exploration_std is None:
            std0 = torch.ones(k, dtype=torch.float64)
        else:
            s = cfg.exploration_std
            std0 = torch.as_tensor(list(s) if isinstance(s, (tuple, list)) else [s] * k, dtype=torch.float64)

        # A first batch, drawn with the initial behaviour, sets the scale of returns |r| / rho (data, not model).
        x_env = env.reset(cfg.n_envs, g_env)
        a0 = a_center + std0 * torch.randn(cfg.n_envs, k, generator=g_env, dtype=torch.float64)
        r0, x1 = env.step(x_env, self._to_env(squash(a0), x_env), g_env)
        first = (x_env, a0, r0, x1)
        x_env = x1
        r_scale = max(float(r0.abs().mean()), 1e-6)
        scale = r_scale / rho

        mean_net = _Mean(cfg.mean, env, cfg.width, cfg.depth, a_center.to(dt_)).to(dev, dt_)
        if cfg.method == "q_learning":
            value_net = _value_net(cfg, env, scale).to(dev, dt_)
            # log of the diagonal precision, relative to |r| / std^2 so that it starts at a sensible size
            lam0 = (r_scale / std0 ** 2).to(dev, dt_)
            log_lam = nn.Parameter(torch.zeros(k, device=dev, dtype=dt_))
            gam = cfg.temperature

            e = cfg.power_exponent if cfg.value == "power" else None

            def q_fn(x, a):
                # Lam(x) = Lam * x^e for the power family (its q scales like its J), Lam otherwise
                lam = lam0 * log_lam.exp()
                quad = -0.5 * ((a - mean_net(x)) ** 2 * lam).sum(-1, keepdim=True)
                norm = 0.5 * gam * torch.log(lam / (2 * math.pi * gam)).sum()
                if e is None:
                    return quad + norm
                xe = x[:, :1].clamp_min(1e-8).pow(e)
                return xe * quad + norm + 0.5 * gam * k * torch.log(xe)

            params = list(value_net.parameters()) + list(mean_net.parameters()) + [log_lam]
            opt = torch.optim.Adam(params, lr=lr)
            target = None
        else:
            value_net = _Critic(cfg, env, scale, a_center.to(dt_), std0.to(dt_)).to(dev, dt_)
            target = copy.deepcopy(value_net)
            for p in target.parameters():
                p.requires_grad_(False)
            q_fn = value_net
            log_lam = lam0 = None
            opt = torch.optim.Adam(list(value_net.parameters()), lr=lr)
            opt_actor = torch.optim.Adam(list(mean_net.parameters()), lr=lr)

        n_iters = max(1, cfg.n_transitions // cfg.n_envs - 1)  # the first batch above counts too
        n_updates = n_iters * cfg.updates_per_step

        def lr_factor(u):
            c = 0.5 * (1 + math.cos(math.pi * min(u, n_updates) / n_updates))
            return cfg.lr_final + (1 - cfg.lr_final) * c

        scheds = [torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)]
        if target is not None:
            scheds.append(torch.optim.lr_scheduler.LambdaLR(opt_actor, lr_factor))

        buffer = ReplayBuffer(cfg.buffer_size or (n_iters + 1) * cfg.n_envs, env.state_dim, k, dt_, dev)
        buffer.add(*first)
        sol = QLearningSolution(cfg.method, value_net, mean_net, q_fn, squash, cfg, env.state_dim, k)
        hist = sol.history
        s_lo, s_hi = env.state_low.to(torch.float64).cpu(), env.state_high.to(torch.float64).cpu()
        margin = 0.5 * (s_hi - s_lo)

        def behaviour(x, frac):
            with torch.no_grad():
                xd = x.to(dev, dt_)
                m = mean_net(xd).to(torch.float64).cpu()
                if cfg.exploration_std is None:       # the Gibbs policy N(m, gamma Lam(x)^{-1}) itself
                    lam = lam0 * log_lam.exp()
                    if e is not None:
                        lam = lam * xd[:, :1].clamp_min(1e-8).pow(e)
                    std = (gam / lam).sqrt().to(torch.float64).cpu()
                else:
                    std = std0 * (1 + (cfg.exploration_final - 1) * frac)
                return m + std * torch.randn(x.shape[0], k, generator=g_env, dtype=torch.float64)

        update = 0
        last = {}
        for it in progress(range(n_iters), total=n_iters, desc=cfg.method, enabled=cfg.progress):
            frac = it / max(1, n_iters - 1)
            a = behaviour(x_env, frac)
            r, x_next = env.step(x_env, self._to_env(squash(a), x_env), g_env)
            if r.shape != (x_env.shape[0], 1) or x_next.shape != x_env.shape:
                raise ValueError(f"env.step must return r ({x_env.shape[0]}, 1) and x_next {tuple(x_env.shape)}, "
                                 f"got {tuple(r.shape)} and {tuple(x_next.shape)}")
            buffer.add(x_env, a, r, x_next)
            x_env = x_next
            xd64 = x_env.to(torch.float64).cpu()
            out = ((xd64 < s_lo - margin) | (xd64 > s_hi + margin)).any(-1) | ~torch.isfinite(xd64).all(-1)
            if (it + 1) % cfg.episode_steps == 0:
                x_env = env.reset(cfg.n_envs, g_env)
            elif bool(out.any()):
                fresh = env.reset(int(out.sum()), g_env)
                x_env = x_env.clone()
                x_env[out.to(x_env.device)] = fresh.to(x_env)

            for _ in range(cfg.updates_per_step):
                xb, ab, rb, x2b = buffer.sample(min(cfg.batch_size, len(buffer)), g_train)
                if cfg.method == "q_learning":
                    with torch.no_grad():
                        j_next = value_net(x2b)
                    delta = disc * j_next - value_net(xb) + (rb - q_fn(xb, ab)) * dt
                    # J(x') held fixed: the gradient is delta grad J(x) + delta grad q (Jia & Zhou's TD(0)),
                    # divided by dt so that its size does not depend on the step.
                    loss = 0.5 * (delta / dt).pow(2).mean()
                    check_finite(loss, "q-learning TD loss", update)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    last = {"loss": float(loss.detach())}
                else:
                    with torch.no_grad():
                        y = rb * dt + disc * target(x2b, mean_net(x2b))
                    loss = (value_net(xb, ab) - y).pow(2).mean()
                    check_finite(loss, "critic loss", update)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    actor_loss = -value_net(xb, mean_net(xb)).mean()
                    check_finite(actor_loss, "actor loss", update)
                    opt_actor.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    opt_actor.step()
                    with torch.no_grad():
                        for pt, p in zip(target.parameters(), value_net.parameters()):
                            pt.lerp_(p, cfg.target_tau)
                    last = {"loss": float(loss.detach()), "actor_loss": float(actor_loss.detach())}
                for s in scheds:
                    s.step()
                update += 1

            if (it + 1) % cfg.log_every == 0 or it + 1 == n_iters:
                row = dict(last, transitions=(it + 2) * cfg.n_envs, lr=scheds[0].get_last_lr()[0])
                if log_lam is not None:
                    for i, v in enumerate((lam0 * log_lam.exp()).tolist()):
                        row[f"precision_{i}"] = v
                if monitor is not None:
                    sol.n_transitions = (it + 2) * cfg.n_envs
                    row.update(monitor(sol))
                hist.log(it + 1, **row)
        sol.n_transitions = (n_iters + 1) * cfg.n_envs
        return sol


def held_action_lqr_gain(problem, dt: float) -> torch.Tensor:
    """(k, d): the best gain for a :class:`~hjbcourse.StochasticLQR` when actions are held fixed over steps of
    length ``dt`` (the discrete-time Riccati solution of the sampled system, reward r dt per step).

    The same discounted Riccati solve as :func:`~hjbcourse.solve_discrete_lqr`, with the exact sampled
    dynamics Ad = e^{A dt}, Bd = int_0^dt e^{As} ds B in place of its Euler step (I + hA, hB).
    A reference for learners fed transitions of step dt: it tends to the continuous-time K as dt -> 0, and
    the gap K_dt - K (of order dt) is the bias no amount of data removes at that step.
    """
    import numpy as np
    import scipy.linalg

    dt = _check_lqr_step(problem, dt, "dt")
    A, B, Q, R = (M.numpy() for M in (problem.A, problem.B, problem.Q, problem.R))
    d, k = B.shape
    Ad = scipy.linalg.expm(A * dt)
    # int_0^dt e^{As} ds B, from the block-matrix exponential
    M = np.zeros((d + k, d + k))
    M[:d, :d], M[:d, d:] = A * dt, B * dt
    Bd = scipy.linalg.expm(M)[:d, d:]
    _, K = _discounted_riccati(Ad, Bd, Q * dt, R * dt, math.exp(-problem.rho * dt), dt)
    return torch.from_numpy(K)
