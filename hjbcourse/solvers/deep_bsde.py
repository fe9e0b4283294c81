"""The deep BSDE method of Han, Jentzen and E (book: chapter "High dimensions").

For a semilinear parabolic equation  u_t + 1/2 sigma^2 Lap u = F(u, sigma grad u),  u(T, .) = g,  along the
uncontrolled forward process X_t = X_0 + sigma W_t Ito's formula gives the backward SDE

    Y_t = u(t, X_t),   Z_t = sigma grad u(t, X_t),   dY_t = F(Y_t, Z_t) dt + Z_t . dW_t,   Y_T = g(X_T).

On a grid t_n = n T / N the method guesses Y_0 = u(0, X_0) and Z_{t_n} = Z_theta(t_n, X_{t_n}), rolls the
Euler step  Y_{n+1} = Y_n + F(Y_n, Z_n) dt + Z_n . (W_{t_{n+1}} - W_{t_n})  forward and trains everything by
minimising the terminal mismatch E|Y_N - g(X_N)|^2. The minimum is zero only for the true (u, grad u), up to
the O(dt) error of the Euler step.

A second loss (``loss="control"``, the chapter's "A loss that sees the control"): the gradient network also
defines a feedback, m = optimal_action(t, x, Z_theta / sigma). Training then minimises that control's own cost
J = E[int running cost dt + g(X_T)] along the *controlled* paths dX = drift(t, X, m) dt + sigma dW
(gradient through the paths), and u(0, .) is estimated by J less the martingale int Z_theta . dW (mean zero).
The training paths take Heun steps (weak order 2 for this additive noise): with Euler steps the feedback is
held over each step and the discretised problem's optimum is weaker than the SDE's by O(h).
By the verification identity J - u(0, x) = E int |m - m*|^2 dt for the Han-Jentzen-E problem (in general the
integrated Hamiltonian gap), so the estimate is of second order in Z's error and never below u, where the
backward SDE's y0 is of first order. The controlled paths meet a feedback whose rate grows as t -> T (the
value's gradient sharpens toward grad g), so their grid is t_n = T (1 - (1 - n/N)^2), with steps that shrink
like sqrt(T - t), and Z_theta is multiplied by exp(gamma(t)), a learned scalar function of time, because a
tanh network of (t, x) represents a gain that grows with t poorly (a product of t and x). From the
origin Z_theta has, beside the network, one feature (``terminal_feature``): c(t) sigma grad v(t, x) with c
learned (0 at the start) and v(t, x) = E g(x + sigma (W_T - W_t)) the cost of not steering, its gradient by
an antithetic pair of fixed normal draws (four pairs bought nothing measurable at d = 100, at a higher cost:
benchmarks/README.md). Z(T, .) = sigma grad g for every problem, and near T, where the
feedback is stiffest, the network then learns a correction to it. (grad g itself would be far larger than
grad u at early times, where the noise still to come spreads X_T over more than |x|; the problem's
``terminal_gradient`` where it has one, else autograd of ``terminal_cost``.) The estimate takes
Euler steps, 4N and 8N of the same grid family on coupled paths (the coarse increments sums of the fine
ones), and extrapolates 2 J_fine - J_coarse (Richardson), which removes their first-order bias.

Design (explained in the chapter): the forward process does not depend on the networks, so the whole path
is drawn first and Z_theta is evaluated on all N x B points (t_n, X_{t_n}) in one batched call; a single
time-conditioned network replaces the paper's N per-step subnetworks. u(0, .) is one learned number when
``x0_radius == 0`` (the point x0 = 0) and a small network over the ball |x| <= ``x0_radius`` otherwise.
The problem supplies ``bsde_sigma``, ``bsde_driver(t, x, y, z)`` (F), ``terminal_cost(x)`` (g),
``sample_initial_states(n, radius, generator, dtype, device)`` and ``optimal_action(t, x, grad_u)``
(see :class:`hjbcourse.HighDimLQG`); the exact solution is never used by the solver.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..runtime import _forked_rng, make_generator
from ..training import DivergenceError, History, SolverConfig, check_finite
from .base import IterativeSolver, restore_generator
from .bsde_networks import _Model

__all__ = ["DeepBSDEConfig", "DeepBSDE", "DeepBSDESolution"]


@dataclass(frozen=True)
class DeepBSDEConfig(SolverConfig):
    """Settings of :class:`DeepBSDE`.

    ``n_steps`` N time steps of the backward SDE; ``iterations`` Adam steps on batches of ``batch_size``
    paths; the learning rate decays geometrically from ``lr`` to ``lr_final``, and over the first ``warmup``
    steps it is also scaled by (k + 1) / warmup at step k (0: no warm-up; a stiff controlled problem, where
    the first Adam steps at full rate make the feedback explode, needs one: benchmarks/README.md);
    Z_theta(t, x) has ``depth`` hidden layers of ``width`` units (``activation``) plus, with ``linear_skip``,
    an affine map of (t, x); ``milstein`` adds to each step of the roll-out the Ito-Taylor term of the
    martingale, sigma/2 (dW' J dW - tr J dt) with J = dZ_theta/dx (:meth:`_Model.gradient_term_with_derivatives`): the
    first term of int (Z_s - Z_n) . dW_s that the Euler step drops, of mean zero, so the estimate of u(0, .)
    keeps its mean. With the exact Z* at N = 20 it lowers the loss about 30 times at lambda = 50 and gives it
    back its curvature along Z = c Z*, which the Euler loss loses at large lambda; the trained estimates did
    not improve at the quick budget, and it costs about 1.3 times the time, so it is off by default
    (benchmarks/README.md).
    ``loss`` is "bsde" (the terminal mismatch of the backward SDE along uncontrolled paths) or "control" (the
    cost of the control that Z_theta prescribes along its own paths; module docstring). ``terminal_feature``
    adds c(t) sigma E grad g(x + sigma (W_T - W_t)) beside the network (module docstring); None (the default)
    uses it with the control loss from the origin, where it lowers the share of the control gap that the
    estimate misses (d = 100, lambda = 50: +0.017 against +0.035 G; d = 1000, lambda = 50: +0.027 against
    +0.048: benchmarks/README.md), and not over a ball, where u(0, x) is read from Z(0, .) and the feature's
    shape at t = 0 would stay in it.
    ``x0_radius`` > 0 learns u(0, x) on |x| <= x0_radius: paths start over the ball, and a network of
    ``value_width`` units is fitted to them (with the control loss, to each path's cost less its martingale;
    at d = 100 and radius 2 that network gets u's level and not its shape, which varies less than the labels'
    noise, and the backward SDE's scores no better than a constant: see benchmarks/README.md). With the
    control loss the solution's u(0, x) is instead u(0, 0), estimated from the origin on ``refit_size``
    paths, plus the line integral of the learned gradient (:class:`DeepBSDESolution`). 0 learns u(0, 0)
    only (refitted at the end on ``refit_size`` fresh paths). ``log_every`` sets how often the history
    records a row (the loss on a fixed validation batch of ``valid_size`` paths and the current u(0, 0)).
    """

    n_steps: int = 20
    iterations: int = 2000
    batch_size: int = 256
    width: int = 128
    depth: int = 2
    activation: str = "tanh"
    linear_skip: bool = True
    milstein: bool = False
    loss: str = "bsde"
    terminal_feature: bool | None = None
    lr: float = 5e-3
    lr_final: float = 5e-5
    warmup: int = 0
    x0_radius: float = 0.0
    value_width: int = 32
    valid_size: int = 2048
    refit_size: int = 16384
    log_every: int = 50

    PRESETS: ClassVar[dict] = {
        "quick": {"n_steps": 20, "iterations": 450, "batch_size": 128, "width": 64, "lr": 1e-2, "lr_final": 1e-4,
                  "refit_size": 8192},
        "full": {"n_steps": 40, "iterations": 3000, "batch_size": 256, "width": 128},
    }

    def __post_init__(self):
        super().__post_init__()
        self._check_ints("n_steps", "iterations", "batch_size", "width", "depth", "value_width", "valid_size",
                         "refit_size", "log_every")
        self._check_ints("warmup", minimum=0)
        self._check_positive_numbers("lr", "lr_final")
        if not (isinstance(self.x0_radius, (int, float)) and math.isfinite(self.x0_radius) and self.x0_radius >= 0):
            raise ValueError(f"x0_radius must be a non-negative number, got {self.x0_radius!r}")
        if self.loss not in ("bsde", "control"):
            raise ValueError(f"loss must be 'bsde' or 'control', got {self.loss!r}")
        if self.milstein and self.loss != "bsde":
            raise ValueError("milstein=True adds a term to the backward SDE's roll-out; it needs loss='bsde'")
        if self.terminal_feature and (self.loss != "control" or self.x0_radius != 0.0):
            raise ValueError("terminal_feature=True needs loss='control' and x0_radius=0: over a ball u(0, x) is read "
                             "from Z(0, .), where the feature's shape would stay")
        if self.activation not in ("tanh", "softplus", "silu"):
            raise ValueError(f"activation must be 'tanh', 'softplus' or 'silu', got {self.activation!r}")

    @property
    def uses_terminal_feature(self) -> bool:
        """Whether Z_theta has the terminal feature: ``terminal_feature``, or by default (None) with the
        control loss from the origin."""
        if self.terminal_feature is None:
            return self.loss == "control" and self.x0_radius == 0.0
        return bool(self.terminal_feature)


# the nodes and weights of 4-point Gauss-Legendre quadrature, moved from [-1, 1] to [0, 1]
_GAUSS_LEGENDRE_4 = tuple((0.5 + 0.5 * float(s), 0.5 * float(w)) for s, w in zip(*np.polynomial.legendre.leggauss(4)))


@dataclass
class DeepBSDESolution:
    """What :meth:`DeepBSDE.solve` returns: ``u0`` = learned u(0, 0) (cost convention, like the paper),
    ``value(0, x)`` where u(0, .) was learned, ``gradient(t, x)`` and ``policy(t, x)`` from Z_theta,
    the ``history`` of diagnostics and the training time ``seconds``.

    When u(0, .) is learned at the origin only, ``u0`` is the minimiser of the loss in y0 with Z_theta frozen
    (a Monte Carlo mean over fresh paths, standard error ``u0_stderr``) and ``u0_sgd`` the last iterate of
    Adam; over a region with the backward SDE's loss, ``u0`` is the network's value at the origin. With
    ``loss="control"``, ``u0`` is the Richardson estimate of the learned control's cost less its martingale
    from the origin (an upper bound on u(0, 0) up to its standard error, also when Z_theta was trained over a
    ball) and ``u0_sgd`` the value fitted in training to the same quantity on the training grid.

    Over a region with ``loss="control"``, ``value(0, x)`` is ``u0`` plus the line integral of the learned
    gradient, int_0^1 grad u(0, s x) . x ds: the fitted network of u(0, .) (``model.initial_value``) learns the
    level and not the shape where u varies less over the ball than one path's cost (at d = 100, |x| <= 2 it
    varies by 0.4-0.5%, the labels by 0.5% per path), and a constant then scores as well as it does; the
    gradient, which the control's cost trains directly, carries the shape (benchmarks/README.md)."""

    problem: object
    config: DeepBSDEConfig
    model: _Model
    history: History
    u0: float
    seconds: float
    u0_sgd: float = math.nan
    u0_stderr: float = math.nan

    def _check_t(self, t) -> float:
        t = float(t)
        if not 0.0 <= t <= self.problem.T:
            raise ValueError(f"t must lie in [0, T] = [0, {self.problem.T}], got {t}")
        return t

    @torch.no_grad()
    def value(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): the learned cost-to-go u(0, x); defined at t = 0 only, on |x| <= x0_radius (over a
        region with ``loss="control"``: ``u0`` plus the line integral of the learned gradient, class docstring)."""
        if float(t) != 0.0:
            raise ValueError(f"t must be 0: the deep BSDE method learns u at the initial time only, got t={t}")
        self.problem.check_state(x)
        r = self.config.x0_radius
        norms = x.detach().to(torch.float64).norm(dim=1)
        if bool((norms > r + 1e-6).any()):
            raise ValueError(f"x must lie in the ball |x| <= x0_radius = {r} where u(0, .) was learned; "
                             f"got |x| up to {float(norms.max()):.4g}")
        p = next(self.model.parameters())
        if self.model.pointwise or self.config.loss != "control":
            return self.model.initial_value(x.to(p)).detach().to(x)
        return (self.u0 + self.line_integral(x.to(torch.float64))).to(x)

    @torch.no_grad()
    def line_integral(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): int_0^1 grad u(0, s x) . x ds of the learned gradient, u(0, x) - u(0, 0) if it were
        exact, by 4-point Gauss-Legendre in s (with the exact gradient at d = 100, |x| <= 5 its error is below
        1e-9 relative)."""
        total = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        for s, w in _GAUSS_LEGENDRE_4:
            total += w * (self.gradient(0.0, s * x) * x).sum(-1, keepdim=True)
        return total

    @torch.no_grad()
    def gradient(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad u(t, x) = Z_theta(t, x) / sigma."""
        t = self._check_t(t)
        self.problem.check_state(x)
        p = next(self.model.parameters())
        xx = x.to(p)
        tt = torch.full((x.shape[0], 1), t, dtype=p.dtype, device=p.device)
        return (self.model.gradient_term(tt, xx) / self.problem.bsde_sigma).to(x)

    def policy(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k): the control the learned gradient prescribes (problem.optimal_action)."""
        return self.problem.optimal_action(t, x, self.gradient(t, x))


class DeepBSDE(IterativeSolver):
    """``DeepBSDE(problem, config).solve()`` -> :class:`DeepBSDESolution` (module docstring for the method).

    Construction draws the batch of paths whose mean terminal cost is the first guess of u(0, .) and the
    validation paths, and builds the networks from ``config.seed``, leaving the caller's global RNG as it was.
    One :meth:`step` runs the gradient steps up to the next logged one and logs a row of ``history`` (labelled
    by the index of its last gradient step): the first step is gradient step 0 alone, so that the history
    starts at the first loss, the next ones ``log_every`` gradient steps each, the last what is left of
    ``iterations``. :meth:`solution` (what :meth:`solve` returns) refits u(0, 0) on fresh paths; the solver's
    own networks are left as they were, so training can go on. :meth:`save` and :meth:`load` keep the
    networks, the optimiser, the schedule and the generator: a resumed run repeats an uninterrupted one.
    """

    Config = DeepBSDEConfig
    guarded = ("loss", "valid_loss")
    shown = ("loss", "u0")
    REQUIRED = ("bsde_sigma", "bsde_driver", "terminal_cost", "sample_initial_states", "optimal_action", "T",
                "state_dim")

    def __init__(self, problem, config: DeepBSDEConfig | None = None):
        cfg = DeepBSDEConfig() if config is None else config
        need = self.REQUIRED + (("drift", "reward") if getattr(cfg, "loss", "bsde") == "control" else ())
        missing = [n for n in need if not hasattr(problem, n)]
        if missing:
            raise ValueError(f"problem must provide a backward-SDE form ({', '.join(need)}); "
                             f"{type(problem).__name__} lacks {', '.join(missing)}")
        cfg = self._init_run(cfg)
        start = time.perf_counter()
        self.problem = problem
        kw = dict(dtype=cfg.torch_dtype, device=cfg.torch_device)
        with _forked_rng(cfg.seed, cfg.torch_device):
            self.g = make_generator(cfg.seed, "cpu")
            # the first guess for u(0, .) is the cost of not steering, E g(X_T), from one batch of paths
            X, _ = self._paths(cfg.batch_size, self.g)
            y0_guess = float(problem.terminal_cost(X[-1].to(torch.float64)).mean())
            start_rms = float(X[0].to(torch.float64).pow(2).mean().sqrt())
            self.model = _Model(problem, cfg, y0_guess, start_rms).to(**kw)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=self._decay())
        valid_g = make_generator(cfg.seed + 1, "cpu")
        self.valid_paths = (self._noise(cfg.valid_size, cfg.n_steps, valid_g) if cfg.loss == "control"
                            else self._paths(cfg.valid_size, valid_g))
        self.origin = torch.zeros(1, problem.state_dim, **kw)
        self.gradient_steps = 0
        self.loss = math.nan
        self.seconds = time.perf_counter() - start

    def _decay(self) -> float:
        """The factor of the geometric decay of the learning rate from ``lr`` to ``lr_final`` over the budget."""
        cfg = self.config
        return (cfg.lr_final / cfg.lr) ** (1.0 / max(cfg.iterations - 1, 1))

    @property
    def _description(self) -> str:
        return f"deep BSDE d={self.problem.state_dim}"

    def _logged(self, i: int) -> bool:
        return i % self.config.log_every == 0 or i == self.config.iterations - 1

    def _budget(self) -> int:
        """The number of logged gradient steps: 0, every multiple of ``log_every`` and the last one."""
        n, k = self.config.iterations, self.config.log_every
        return -(-n // k) + (0 if (n - 1) % k == 0 else 1)

    def _paths(self, n: int, g: torch.Generator):
        """Draw n paths: X (N+1, n, d) and the increments dW (N, n, d), on the config's device and dtype."""
        cfg, p = self.config, self.problem
        N, d = cfg.n_steps, p.state_dim
        dt = p.T / N
        x0 = p.sample_initial_states(n, cfg.x0_radius, generator=g, dtype=torch.float64)
        dW = torch.randn(N, n, d, generator=g, dtype=torch.float64) * math.sqrt(dt)
        X = torch.cat([x0.unsqueeze(0), x0.unsqueeze(0) + p.bsde_sigma * dW.cumsum(0)])
        kw = dict(dtype=cfg.torch_dtype, device=cfg.torch_device)
        return X.to(**kw), dW.to(**kw)

    # -- the control loss: paths under the feedback that Z_theta prescribes ------------------------------
    def _grid(self, n: int) -> list[float]:
        """The n + 1 times t_k = T (1 - (1 - k/n)^2) of the controlled paths: steps that shrink like sqrt(T - t)."""
        T = self.problem.T
        return [T * (1.0 - (1.0 - k / n) ** 2) for k in range(n + 1)]

    def _noise(self, n: int, n_steps: int, g: torch.Generator):
        """n initial states (n, d) and Brownian increments (n_steps, n, d) on :meth:`_grid`, and the grid."""
        cfg, p = self.config, self.problem
        ts = self._grid(n_steps)
        x0 = p.sample_initial_states(n, cfg.x0_radius, generator=g, dtype=torch.float64)
        dW = torch.randn(n_steps, n, p.state_dim, generator=g, dtype=torch.float64)
        dW = dW * torch.tensor(ts, dtype=torch.float64).diff().sqrt().view(-1, 1, 1)
        kw = dict(dtype=cfg.torch_dtype, device=cfg.torch_device)
        return x0.to(**kw), dW.to(**kw), ts

    def _feedback(self, model: _Model, t: float, x: torch.Tensor):
        """The feedback that Z_theta prescribes at (t, x): (drift, running cost rate, Z), each for the batch."""
        p = self.problem
        tt = torch.full((x.shape[0], 1), t, dtype=x.dtype, device=x.device)
        try:
            z = model.gradient_term(tt, x)   # its terminal-gradient feature reads g at x
            a = p.optimal_action(t, x, z / p.bsde_sigma)
            drift = p.drift(t, x, a)
        except ValueError as err:       # the problem refuses a state that is no longer finite
            if "finite" not in str(err):
                raise
            raise DivergenceError(
                f"the controlled state blew up at iteration {self.gradient_steps}: the learned feedback is too "
                f"stiff for {self.config.n_steps} explicit steps; raise n_steps, lower lr or set warmup") from err
        return drift, -p.reward(t, x, a), z

    def _control_step(self, model: _Model, t: float, h: float, x: torch.Tensor, w: torch.Tensor):
        """One Euler step of the controlled state: (next x, running cost * h, Z . w), each for the batch."""
        drift, rate, z = self._feedback(model, t, x)
        return x + drift * h + self.problem.bsde_sigma * w, rate * h, (z * w).sum(-1, keepdim=True)

    def _controlled(self, model: _Model, x0: torch.Tensor, dW: torch.Tensor, ts) -> tuple[torch.Tensor, torch.Tensor]:
        """The control's cost int running cost dt + g(X_N) (B, 1) along its own paths, and the martingale
        sum Z . dW (B, 1) along them. The paths take Heun steps (an Euler predictor, then the mean of the
        drift and of the cost rate at both ends): with additive noise a scheme of weak order 2, so the
        optimum of the discretised cost is the continuous one's up to O(h^2), where with Euler steps the
        held feedback makes it weaker by O(h) (benchmarks/README.md)."""
        sigma = self.problem.bsde_sigma
        x, cost, mart = x0, 0.0, 0.0
        for n in range(len(ts) - 1):
            t, h, w = ts[n], ts[n + 1] - ts[n], dW[n]
            b0, c0, z = self._feedback(model, t, x)
            b1, c1, _ = self._feedback(model, ts[n + 1], x + b0 * h + sigma * w)
            x = x + 0.5 * (b0 + b1) * h + sigma * w
            cost, mart = cost + 0.5 * (c0 + c1) * h, mart + (z * w).sum(-1, keepdim=True)
        return cost + self.problem.terminal_cost(x), mart

    @torch.no_grad()
    def _control_estimates(self, model: _Model, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, d) -> (B, 1): per path, 2 E_fine - E_coarse with E = cost - martingale along the learned control's
        paths from x0, on 8N and 4N steps of :meth:`_grid` driven by the same Brownian path (Richardson: the
        first-order bias of the Euler step cancels). Its mean over paths estimates u(0, x0) from above."""
        cfg, p = self.config, self.problem
        coarse_steps = 4 * cfg.n_steps
        tf = self._grid(2 * coarse_steps)
        B, d = x0.shape
        xf = xc = x0
        ef = ec = torch.zeros(B, 1, dtype=x0.dtype, device=x0.device)
        for k in range(coarse_steps):
            t0, t1, t2 = tf[2 * k], tf[2 * k + 1], tf[2 * k + 2]
            w1 = torch.randn(B, d, generator=g, dtype=torch.float64) * math.sqrt(t1 - t0)
            w2 = torch.randn(B, d, generator=g, dtype=torch.float64) * math.sqrt(t2 - t1)
            w1, w2 = w1.to(x0), w2.to(x0)
            for t, h, w in ((t0, t1 - t0, w1), (t1, t2 - t1, w2)):
                xf, c, m = self._control_step(model, t, h, xf, w)
                ef = ef + c - m
            xc, c, m = self._control_step(model, t0, t2 - t0, xc, w1 + w2)
            ec = ec + c - m
        return 2.0 * (ef + p.terminal_cost(xf)) - (ec + p.terminal_cost(xc))

    def _control_loss(self, model: _Model, x0: torch.Tensor, dW: torch.Tensor, ts) -> tuple[torch.Tensor, ...]:
        """(the control's mean cost, the squared error of u(0, .) against each path's cost - martingale)."""
        cost, mart = self._controlled(model, x0, dW, ts)
        fit = (model.initial_value(x0) - (cost - mart).detach()).pow(2).mean()
        return cost.mean(), fit

    def _mismatch(self, model: _Model, X: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
        """(N+1, B, d), (N, B, d) -> (B, 1): Y_N - g(X_N) after the Euler roll-out of the backward SDE."""
        p = self.problem
        N, B, d = dW.shape
        dt = p.T / N
        t = torch.arange(N, dtype=X.dtype, device=X.device) * dt
        tt = t.repeat_interleave(B).unsqueeze(1)                      # (N*B, 1)
        xx = X[:-1].reshape(N * B, d)
        if self.config.milstein:                                      # every step in one call
            Z, wJw, trJ = model.gradient_term_with_derivatives(tt, xx, dW.reshape(N * B, d))
            # int (Z_s - Z_n) . dW_s over each step, to its Ito-Taylor term: sigma/2 (dW' J dW - tr J dt)
            extra = (0.5 * p.bsde_sigma * (wJw - trJ * dt)).reshape(N, B, 1)
        else:
            Z, extra = model.gradient_term(tt, xx), None
        y = model.initial_value(X[0])                                 # (B, 1)
        # the driver may depend on Y, so the roll-out stays sequential in it; each step is cheap
        Zs = Z.reshape(N, B, d)
        for n in range(N):
            y = y + p.bsde_driver(t[n].item(), X[n], y, Zs[n]) * dt + (Zs[n] * dW[n]).sum(-1, keepdim=True)
            if extra is not None:
                y = y + extra[n]
        return y - p.terminal_cost(X[-1])

    def _gradient_step(self) -> None:
        """One Adam step on a fresh batch of paths (the terminal mismatch, or the control's cost plus the fit of
        u(0, .) to each path's cost less its martingale), then one step of the schedule."""
        cfg = self.config
        if cfg.loss == "control":
            cost, fit = self._control_loss(self.model, *self._noise(cfg.batch_size, cfg.n_steps, self.g))
            check_finite(cost, "the control's cost", self.gradient_steps)
            loss, shown = cost + fit, cost
        else:
            X, dW = self._paths(cfg.batch_size, self.g)
            loss = shown = self._mismatch(self.model, X, dW).pow(2).mean()
        check_finite(loss, "loss", self.gradient_steps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        scale = min(1.0, (self.gradient_steps + 1) / cfg.warmup) if cfg.warmup else 1.0
        scheduled = [group["lr"] for group in self.opt.param_groups]
        for group in self.opt.param_groups:
            group["lr"] *= scale
        self.opt.step()
        for group, lr in zip(self.opt.param_groups, scheduled):
            group["lr"] = lr
        self.sched.step()
        self.loss = float(shown.detach())
        self.gradient_steps += 1

    def _step(self, it: int) -> dict[str, float]:
        while True:
            self._gradient_step()
            last = self.gradient_steps - 1
            if self._logged(last) or self.gradient_steps >= self.config.iterations:
                break
        with torch.no_grad():
            if self.config.loss == "control":
                valid = self._controlled(self.model, *self.valid_paths)[0].mean()
            else:
                valid = self._mismatch(self.model, *self.valid_paths).pow(2).mean()
            u0 = float(self.model.initial_value(self.origin))
        check_finite(valid, "validation loss", last)
        return {"iteration": last, "loss": self.loss, "valid_loss": valid, "u0": u0,
                "lr": self.opt.param_groups[0]["lr"]}

    def solution(self) -> DeepBSDESolution:
        """The solution now: a copy of the networks, with u(0, 0) refitted when it is learned at the origin only."""
        start = time.perf_counter()
        model = copy.deepcopy(self.model)
        u0_sgd = float(model.initial_value(self.origin).detach())
        u0, stderr = u0_sgd, math.nan
        if model.pointwise or self.config.loss == "control":
            u0, stderr = self._refit(model, make_generator(self.config.seed + 2, "cpu"))
            if model.pointwise:
                with torch.no_grad():
                    model.y0.fill_(u0)
        model.eval()
        seconds = self.seconds + time.perf_counter() - start
        return DeepBSDESolution(self.problem, self.config, model, self.history, u0, seconds, u0_sgd, stderr)

    @torch.no_grad()
    def _refit(self, model: _Model, g: torch.Generator) -> tuple[float, float]:
        """The loss's minimiser in y0 with Z_theta frozen, E[g(X_N) - sum F dt - sum Z dW], on fresh paths
        (with the control loss: the Richardson estimate of the control's cost less its martingale, from the
        origin).

        The last iterate of Adam wanders around that minimiser by about lr times the gradient noise; the
        mean over ``refit_size`` paths removes that wander, and its standard error is reported.
        """
        cfg, chunks = self.config, []
        left = cfg.refit_size
        while left > 0:
            n = min(left, 4096)
            if cfg.loss == "control":      # from the origin, also where Z_theta was trained over a ball
                x0 = torch.zeros(n, self.problem.state_dim, dtype=cfg.torch_dtype, device=cfg.torch_device)
                est = self._control_estimates(model, x0, g)
            else:
                X, dW = self._paths(n, g)
                est = model.initial_value(X[0]) - self._mismatch(model, X, dW)
            chunks.append(est.to(torch.float64))
            left -= n
        est = torch.cat(chunks)
        return float(est.mean()), float(est.std() / math.sqrt(est.shape[0]))

    # -- checkpoints -------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "g": self.g.get_state(), "gradient_steps": self.gradient_steps, "loss": self.loss}

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(dict(state["sched"]))
        self.sched.gamma = self._decay()          # the schedule of the config in force (a longer budget, say)
        restore_generator(self.g, state["g"], "cpu", self.config.seed)
        self.gradient_steps, self.loss = int(state["gradient_steps"]), float(state["loss"])
