"""Batched simulation of a closed-loop controlled SDE dX = f(X, a) dt + S(X, a) dW with a = policy(X),
accumulating the discounted running reward int_0^T e^{-rho t} r(X_t, a_t) dt along each path.

Schemes (book: chapter "Policy iteration", section on the time-step bias):

- ``"euler"``: Euler–Maruyama, strong order 1/2 (1 for additive noise), weak order 1; left-point rewards.
- ``"milstein"``: derivative-free Milstein (Kloeden & Platen, sec. 11.1) for commutative noise (additive,
  diagonal or one-dimensional noise), strong order 1; trapezoidal rewards.
- ``"weak2"``: Platen's explicit weak order-2 scheme (Kloeden & Platen, sec. 15.1) for additive noise or a
  single noise dimension, with trapezoidal rewards: the time-step bias of expectations (such as the
  Feynman–Kac value) falls like dt^2.

The input contract (:mod:`hjbcourse._checks`): start points are floating, finite and in the problem's state space;
``T`` and ``dt`` are real numbers (a bool is refused); given increments ``dW`` are finite; the policy's actions must
be finite and inside the action box (up to rounding). A run of more than :data:`~hjbcourse._checks.MAX_STEPS`
(1,000,000) steps needs an explicit ``max_steps``. (What the problem's own maps make of valid inputs is returned
as it is: a caller that learns from it, such as policy iteration, checks it.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ._checks import (as_float64, choice, flag, floating_dtype, floating_tensor, integer, real, step_count,
                      device as _device)
from .generator import generator_from_derivatives, value_derivatives
from .runtime import make_generator, progress

__all__ = ["simulate", "Simulation", "SDE_SCHEMES", "brownian_increments", "MonteCarloValue", "monte_carlo_value",
           "discounted_reward_of_policy", "Regret", "regret"]

SDE_SCHEMES = ("euler", "milstein", "weak2")


@dataclass
class Simulation:
    """What :func:`simulate` returns. Shapes: N steps, B paths, d states, k actions.

    ``t`` (N+1,), ``x_T`` (B, d), ``reward`` (B, 1): the discounted running reward over [0, T];
    with ``record=True`` also ``x`` (N+1, B, d), ``a`` (N+1, B, k) and ``cum_reward`` (N+1, B, 1).
    """

    t: torch.Tensor
    x_T: torch.Tensor
    reward: torch.Tensor
    x: torch.Tensor | None = None
    a: torch.Tensor | None = None
    cum_reward: torch.Tensor | None = None


def _check_commutative(coeffs, x: torch.Tensor, S: torch.Tensor, m: int) -> None:
    """Refuse noise that is not commutative at the start points ``x`` (where the closed-loop diffusion is
    ``S``): the Milstein scheme without Lévy areas needs L^j s_k = L^k s_j for every pair of columns, L^j the
    derivative along column s_j. Checked by central differences along the columns."""
    eps = 1e-3 * (1.0 + float(x.abs().max()))
    D = [(coeffs(x + eps * S[:, :, j])[2] - coeffs(x - eps * S[:, :, j])[2]) / (2 * eps) for j in range(m)]
    scale = max(float(Dj.abs().max()) for Dj in D)
    for j in range(m):
        for k in range(j + 1, m):
            if float((D[j][:, :, k] - D[k][:, :, j]).abs().max()) > 1e-2 * scale:
                raise ValueError(f"scheme 'milstein' needs commutative noise (additive, one noise dimension, or "
                                 f"columns whose derivatives along each other agree); columns {j} and {k} of this "
                                 f"problem's diffusion do not commute: use 'euler' with a small dt")


def brownian_increments(n_steps: int, batch: int, noise_dim: int, dt: float, generator=None, dtype=torch.float32,
                        device="cpu") -> torch.Tensor:
    """(n_steps, batch, noise_dim): independent N(0, dt) increments from a seed or torch.Generator."""
    n_steps, batch, noise_dim = (integer(n, v, minimum=1) for n, v in
                                 (("n_steps", n_steps), ("batch", batch), ("noise_dim", noise_dim)))
    dt = real("dt", dt, positive=True)
    dtype, device = floating_dtype("dtype", dtype), _device("device", device)
    g = make_generator(generator, device, "generator")
    return torch.randn(n_steps, batch, noise_dim, generator=g, dtype=dtype, device=device) * math.sqrt(dt)


def _number_of_steps(T, dt, max_steps: int | None = None) -> tuple[int, float, float]:
    """(N, T, dt) with N = T / dt, after checking that T and dt are positive real numbers, dt <= T, N an integer
    and N at most ``max_steps`` (None: :data:`~hjbcourse._checks.MAX_STEPS`)."""
    T = real("T", T, positive=True)
    dt = real("dt", dt, positive=True)
    if not dt <= T:
        raise ValueError(f"dt must be a positive number no larger than T={T}, got {dt!r}")
    n = int(round(T / dt))
    if abs(n * dt - T) > 1e-9 * max(1.0, T):
        raise ValueError(f"T / dt must be an integer, got T={T}, dt={dt}")
    return step_count("T / dt", n, max_steps), T, dt


def _increments(problem, x0: torch.Tensor, n: int, dt: float, scheme: str, generator, dW) -> torch.Tensor:
    """(N, B, m) Brownian increments: ``dW`` checked, or drawn from ``generator``; then the scheme's noise checked."""
    B, m = x0.shape[0], problem.noise_dim
    if dW is None:
        dW = brownian_increments(n, B, m, dt, generator, x0.dtype, x0.device)
    else:
        floating_tensor("dW", dW, (n, B, m))
    if scheme == "weak2" and not (problem.additive_noise or m == 1):
        raise ValueError("scheme 'weak2' is implemented for additive noise or a single noise dimension; "
                         "use 'euler' with a small dt for this problem")
    return dW


class _Watch:
    """The range of the actions met along a simulation, kept on the device (no synchronisation) and checked
    once at the end: finite and inside the action box (up to rounding). The actions are read at the start
    points, at every ``every``-th step and at the last (a NaN or inf action makes the state, hence the later
    actions, NaN or inf too); a reduction over a batch of actions costs about as much as a small step."""

    every = 8

    def __init__(self, problem, a: torch.Tensor):
        low, high = problem.action_low.to(a), problem.action_high.to(a)
        tol = 16 * torch.finfo(a.dtype).eps    # rounding of a squash into the box
        self.low = low - tol * torch.where(torch.isfinite(low), low.abs(), torch.zeros_like(low)).clamp_min(1.0)
        self.high = high + tol * torch.where(torch.isfinite(high), high.abs(), torch.zeros_like(high)).clamp_min(1.0)
        self.seen_low, self.seen_high = torch.aminmax(a, dim=0)

    def see(self, a: torch.Tensor, step: int, last: bool) -> None:
        if step % self.every == 0 or last:
            lo, hi = torch.aminmax(a, dim=0)               # NaN propagates, and is refused below
            self.seen_low, self.seen_high = torch.minimum(self.seen_low, lo), torch.maximum(self.seen_high, hi)

    def raise_if_bad(self, problem, when: str) -> None:
        lo, hi = self.seen_low, self.seen_high
        finite = bool((torch.isfinite(lo) & torch.isfinite(hi)).all())
        if not (finite and bool(((lo >= self.low) & (hi <= self.high)).all())):
            why = "" if finite else ", NaN or inf included (a broken policy, or paths that diverged: reduce dt)"
            raise ValueError(f"policy(x) must return finite actions inside the action box "
                             f"[{problem.action_low.tolist()}, {problem.action_high.tolist()}]; {when} they ranged "
                             f"over [{lo.tolist()}, {hi.tolist()}]{why}")


def _closed_loop(problem, policy: Callable[[torch.Tensor], torch.Tensor]):
    """x (B, d) -> (a (B, k), f (B, d), S (B, d, m)): the policy's action (checked), the drift and the diffusion."""

    def coeffs(x):
        a = policy(x)
        problem.check_action(a, x.shape[0], "policy(x)")
        return a, problem.drift(x, a), problem.diffusion(x, a)

    return coeffs


def _milstein_step(problem, coeffs, x, f, S, w, dt: float) -> torch.Tensor:
    """Derivative-free Milstein (Kloeden & Platen, sec. 11.1): Euler plus the Itô correction, for commutative
    noise; with additive noise the correction vanishes."""
    x_new = x + f * dt + (S @ w.unsqueeze(-1)).squeeze(-1)
    if problem.additive_noise:
        return x_new
    m, sqdt = problem.noise_dim, math.sqrt(dt)
    base = x + f * dt
    corr = 0
    for j in range(m):
        _, _, Sj = coeffs(base + S[:, :, j] * sqdt)
        coef = w * w[:, j:j + 1]
        coef = coef - dt * torch.nn.functional.one_hot(torch.tensor(j), m).to(w)
        corr = corr + ((Sj - S) @ coef.unsqueeze(-1)).squeeze(-1)
    return x_new + corr / (2 * sqdt)


def _weak2_step(problem, coeffs, x, f, S, w, dt: float) -> torch.Tensor:
    """Platen's explicit weak order-2 scheme (Kloeden & Platen, sec. 15.1), for additive noise or one noise
    dimension."""
    noise = (S @ w.unsqueeze(-1)).squeeze(-1)
    x_bar = x + f * dt + noise
    _, f_bar, _ = coeffs(x_bar)
    if problem.additive_noise:
        return x + 0.5 * (f + f_bar) * dt + noise
    sqdt = math.sqrt(dt)
    b = S[:, :, 0]                                     # one noise dimension
    _, _, Sp = coeffs(x + f * dt + b * sqdt)
    _, _, Sm = coeffs(x + f * dt - b * sqdt)
    bp, bm = Sp[:, :, 0], Sm[:, :, 0]
    return (x + 0.5 * (f + f_bar) * dt + 0.25 * (bp + bm + 2 * b) * w
            + 0.25 * (bp - bm) * (w * w - dt) / sqdt)


def _advance(scheme: str, problem, coeffs, x, f, S, w, dt: float) -> torch.Tensor:
    """One step of ``scheme`` from x (B, d) with drift f, diffusion S at x and the increment w (B, m)."""
    if scheme == "euler":
        return x + f * dt + (S @ w.unsqueeze(-1)).squeeze(-1)
    if scheme == "milstein":
        return _milstein_step(problem, coeffs, x, f, S, w, dt)
    return _weak2_step(problem, coeffs, x, f, S, w, dt)


def simulate(problem, policy: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, T: float, dt: float,
             scheme: str = "weak2", generator: torch.Generator | int | None = None, dW: torch.Tensor | None = None,
             record: bool = False, max_steps: int | None = None) -> Simulation:
    """Simulate B paths of the closed loop from ``x0`` (B, d) over [0, T] with step ``dt``.

    ``policy`` maps (B, d) to (B, k): finite actions inside the problem's action box (else a ``ValueError``
    naming ``policy(x)``). Brownian increments come from ``dW`` (N, B, m) when given (to couple schemes or step
    sizes), otherwise from ``generator`` (a seed or a torch.Generator): the same seed gives the same paths. The
    running reward is summed at the left point (``"euler"``) or by the trapezoidal rule. ``max_steps``: the
    largest N = T / dt allowed (None: 1,000,000, :data:`~hjbcourse._checks.MAX_STEPS`).
    """
    choice("scheme", scheme, SDE_SCHEMES)
    problem.check_state(x0, "x0")
    flag("record", record)
    n, T, dt = _number_of_steps(T, dt, max_steps)
    dW = _increments(problem, x0, n, dt, scheme, generator, dW)
    rho = problem.rho
    coeffs = _closed_loop(problem, policy)
    x = x0
    a, f, S = coeffs(x)
    watch = _Watch(problem, a)
    watch.raise_if_bad(problem, "at the start points")    # at once: a constant policy outside the box stops here
    if scheme == "milstein" and not (problem.additive_noise or problem.noise_dim == 1):
        _check_commutative(coeffs, x, S, problem.noise_dim)
    r = problem.reward(x, a)
    total = torch.zeros_like(r)
    xs, as_, cums = ([x], [a], [total]) if record else (None, None, None)
    for i in range(n):
        t0, t1 = i * dt, (i + 1) * dt
        x_new = _advance(scheme, problem, coeffs, x, f, S, dW[i], dt)
        a_new, f_new, S_new = coeffs(x_new)
        r_new = problem.reward(x_new, a_new)
        if scheme == "euler":
            total = total + math.exp(-rho * t0) * r * dt
        else:
            total = total + 0.5 * (math.exp(-rho * t0) * r + math.exp(-rho * t1) * r_new) * dt
        x, a, f, S, r = x_new, a_new, f_new, S_new, r_new
        watch.see(a, i + 1, i == n - 1)
        if record:
            xs.append(x)
            as_.append(a)
            cums.append(total)
    watch.raise_if_bad(problem, "along the paths")
    t = torch.linspace(0.0, n * dt, n + 1, dtype=x0.dtype, device=x0.device)
    if record:
        return Simulation(t=t, x_T=x, reward=total, x=torch.stack(xs), a=torch.stack(as_), cum_reward=torch.stack(cums))
    return Simulation(t=t, x_T=x, reward=total)


_CHUNK = 16384


@dataclass(frozen=True)
class MonteCarloValue:
    """A Monte Carlo estimate of a policy's value: ``mean`` (float) with standard error ``stderr``;
    ``times`` (n_steps + 1,), and the first ``paths.shape[0]`` state paths (n_keep, n_steps + 1, d)."""

    mean: float
    stderr: float
    n_paths: int
    n_steps: int
    times: np.ndarray
    paths: np.ndarray


def monte_carlo_value(problem, policy, x0, n_paths: int = 20000, n_steps: int = 200,
                      generator: torch.Generator | int | None = 0, scheme: str = "heun", keep_paths: int = 0,
                      dtype=torch.float64, device="cpu", show_progress: bool = False,
                      max_steps: int | None = None) -> MonteCarloValue:
    """Estimate E[int_0^T e^{-rho s} r ds + e^{-rho T} g(X_T) | X_0 = x0] under ``policy(t, x)`` by simulation.

    ``policy``: (float, (B, d)) -> (B, k); ``x0``: (d,). ``scheme``: ``"euler"`` (Euler–Maruyama, weak order 1)
    or ``"heun"`` (predictor–corrector in the drift with the noise at the left point: weak order 2 when the noise
    is additive, as for the LQR); the running reward is integrated by the trapezoidal rule with the same
    predictor. The estimate carries a time-step bias besides its ``stderr``: compare two ``n_steps``.
    ``max_steps``: the largest ``n_steps`` allowed (None: 1,000,000).
    """
    choice("scheme", scheme, ("euler", "heun"))
    n_paths, n_steps = integer("n_paths", n_paths, minimum=2), integer("n_steps", n_steps, minimum=2)
    step_count("n_steps", n_steps, max_steps)
    keep_paths = integer("keep_paths", keep_paths, minimum=0)
    dtype, device = floating_dtype("dtype", dtype), _device("device", device)
    x0 = as_float64("x0", x0).reshape(-1)
    if x0.numel() != problem.state_dim:
        raise ValueError(f"x0 must have {problem.state_dim} entries, got {x0.numel()}")
    g = make_generator(generator, device, "generator")
    dt = problem.T / n_steps
    disc = lambda s: math.exp(-problem.rho * s)  # noqa: E731
    # simulate in chunks: tensors under torch's parallel grain size stay single-threaded, which is much faster
    # for these small element-wise steps on a busy CPU; the chunk size is fixed, so a seed gives fixed numbers
    chunks, kept = [], []
    starts = range(0, n_paths, _CHUNK)
    bar = progress(total=n_steps * len(starts), desc="Monte Carlo", enabled=show_progress)
    for s0 in starts:
        nb = min(_CHUNK, n_paths - s0)
        x = x0.to(dtype=dtype, device=device).expand(nb, -1).clone()
        total = torch.zeros(nb, 1, dtype=dtype, device=device)
        keep = max(0, min(keep_paths - s0, nb))
        path = [x[:keep].cpu().numpy()] if keep else []
        for i in range(n_steps):
            t = i * dt
            a = policy(t, x)
            f = problem.drift(t, x, a)
            S = problem.diffusion(t, x, a)
            dW = torch.randn(nb, S.shape[-1], 1, generator=g, dtype=dtype, device=device) * math.sqrt(dt)
            noise = (S @ dW).squeeze(-1)
            r0 = problem.reward(t, x, a)
            x_pred = x + f * dt + noise
            if scheme == "euler":
                total = total + disc(t) * r0 * dt
                x = x_pred
            else:
                a1 = policy(t + dt, x_pred)
                f1 = problem.drift(t + dt, x_pred, a1)
                r1 = problem.reward(t + dt, x_pred, a1)
                total = total + 0.5 * (disc(t) * r0 + disc(t + dt) * r1) * dt
                x = x + 0.5 * (f + f1) * dt + noise
            if keep:
                path.append(x[:keep].cpu().numpy())
            if show_progress:
                bar.update(1)
        chunks.append(total + disc(problem.T) * problem.terminal_reward(x))
        if keep:
            kept.append(np.stack(path, axis=1))
    if show_progress:
        bar.close()
    vals = torch.cat(chunks).squeeze(-1).double()
    if not bool(torch.isfinite(vals).all()):
        raise ValueError("the simulation diverged (NaN or inf): reduce the time step (n_steps)")
    paths = np.concatenate(kept) if kept else np.zeros((0, n_steps + 1, problem.state_dim))
    return MonteCarloValue(mean=float(vals.mean()), stderr=float(vals.std() / math.sqrt(n_paths)),
                           n_paths=int(n_paths), n_steps=int(n_steps), times=np.linspace(0.0, problem.T, n_steps + 1),
                           paths=paths)


def discounted_reward_of_policy(problem, policy: Callable, x0: torch.Tensor, T: float, dt: float = 0.01,
                                scheme: str = "weak2", generator=None, dW=None, max_steps: int | None = None
                                ) -> Simulation:
    """Simulate the closed loop of ``policy`` from ``x0`` (B, d) and record the paths: a :class:`Simulation`
    with ``x`` (N+1, B, d), ``a`` and the cumulative discounted reward ``cum_reward`` (N+1, B, 1).

    Pass the same ``dW`` (or seed) to compare two policies on the same noise."""
    with torch.no_grad():
        return simulate(problem, policy, x0, T, dt, scheme=scheme, generator=generator, dW=dW, record=True,
                        max_steps=max_steps)


@dataclass(frozen=True)
class Regret:
    """What :func:`regret` returns: the regret of a policy over [0, T] measured two ways on the same paths.

    ``by_value``: V*(x0) - E[int_0^T e^{-rho t} r dt + e^{-rho T} V*(X_T)], the value lost;
    ``by_q``: E int_0^T e^{-rho t} (-q*(X_t, a_t)) dt, the optimal q-function's deficit summed along the paths.
    They agree up to Monte Carlo error (``stderr_difference``, the standard error of their paired difference,
    which is much smaller than either ``stderr_value`` or ``stderr_q``) and the scheme's time-step bias.
    ``tail_weight`` = e^{-rho T}: the infinite-horizon regret adds at most this share of the discounted future.
    """

    by_value: float
    by_q: float
    stderr_value: float
    stderr_q: float
    stderr_difference: float
    horizon: float
    dt: float
    n_paths: int
    tail_weight: float


def _regret_paths(problem, policy, derivatives, x, T: float, dt: float, n: int, scheme: str, g):
    """Per path: the value lost (with the Ito-sum control variate) and the integral of -q*, over n steps."""
    rho, m = problem.rho, problem.noise_dim
    coeffs = _closed_loop(problem, policy)
    a, f, S = coeffs(x)
    watch = _Watch(problem, a)
    watch.raise_if_bad(problem, "at the start points")
    reward = lost_q = ito = torch.zeros(x.shape[0], dtype=x.dtype)
    r = problem.reward(x, a).reshape(-1)
    for i in range(n + 1):
        d0 = math.exp(-rho * i * dt)
        v, grad, hess = derivatives(x)
        if i == 0:
            v0 = v[0, 0]                                   # every path starts at x0
        q = (r.unsqueeze(-1) + generator_from_derivatives(grad, hess, f, S) - rho * v).reshape(-1)
        if scheme == "euler":                              # left-point sum, like the reward's
            weight = dt if i < n else 0.0
        else:                                              # trapezoidal rule
            weight = 0.5 * dt if i in (0, n) else dt
        lost_q = lost_q - weight * d0 * q
        if i == n:
            break
        w = torch.randn(x.shape[0], m, generator=g, dtype=x.dtype) * math.sqrt(dt)
        ito = ito + d0 * ((S @ w.unsqueeze(-1)).squeeze(-1) * grad).sum(-1)
        x_new = _advance(scheme, problem, coeffs, x, f, S, w, dt)
        a_new, f_new, S_new = coeffs(x_new)
        r_new = problem.reward(x_new, a_new).reshape(-1)
        if scheme == "euler":
            reward = reward + d0 * r * dt
        else:
            reward = reward + 0.5 * (d0 * r + math.exp(-rho * (i + 1) * dt) * r_new) * dt
        x, a, f, S, r = x_new, a_new, f_new, S_new, r_new
        watch.see(a, i + 1, i == n - 1)
    watch.raise_if_bad(problem, "along the paths")
    lost_v = v0 - reward - math.exp(-rho * T) * v.reshape(-1) + ito      # v: V*(X_T), from the last step
    return lost_v.detach(), lost_q.detach()


def _regret_step(problem, policy, x0: torch.Tensor, T: float) -> float:
    """The default step: T / 1000, or 0.02 / (the closed loop's rate at x0) where that is smaller, the rate being
    the largest singular value of the Jacobian of x -> f(x, policy(x)) (one step then moves a path by at most
    2% of its distance to equilibrium, which keeps the scheme's bias well under the Monte Carlo error). The
    Jacobian is taken by central differences: a learned policy may be evaluated without autograd."""
    d = x0.shape[1]
    h = 1e-5 * (1.0 + float(x0.abs().max()))
    pts = torch.cat([x0 + h * torch.eye(d, dtype=x0.dtype), x0 - h * torch.eye(d, dtype=x0.dtype)])
    with torch.no_grad():
        f = problem.drift(pts, policy(pts)).to(torch.float64)
    J = ((f[:d] - f[d:]) / (2 * h)).T
    rate = float(torch.linalg.matrix_norm(J, ord=2))
    return min(T / 1000, 0.02 / rate) if rate > 0 else T / 1000


def regret(problem, policy: Callable, x0, value: Callable | None = None, horizon: float | None = None,
           dt: float | None = None, n_paths: int = 2000, generator: torch.Generator | int | None = 0,
           scheme: str = "weak2") -> Regret:
    """The regret V*(x0) - V^policy(x0) of a feedback ``policy`` ((B, d) -> (B, k)) of an infinite-horizon
    ``problem``, measured two ways on the same simulated paths (book: chapter 3, the regret identity).

    By Ito's formula, for any horizon T,
    V*(x) - E[int_0^T e^{-rho t} r dt + e^{-rho T} V*(X_T)] = E int_0^T e^{-rho t} (-q*(X_t, a_t)) dt,
    with q* = r + L^a V* - rho V* <= 0. The left side (``by_value``) is estimated with the Ito sum
    sum_i e^{-rho t_i} grad V*(X_i) . S dW_i (mean zero) as a control variate, which removes most of its
    variance; the right side (``by_q``) by the trapezoidal rule. ``value``: V*, (B, d) -> (B, 1), twice
    differentiable (default: the problem's closed form, ``problem.exact().value``). ``horizon``: T (default
    log(100) / rho, so that e^{-rho T} = 1%); ``dt``: the step (default: from the closed loop's rate at x0,
    see :func:`_regret_step`); ``x0``: one state, (d,).
    Float64 throughout; the same seed gives the same numbers.
    """
    choice("scheme", scheme, SDE_SCHEMES)
    n_paths = integer("n_paths", n_paths, minimum=2)
    derivatives = None
    if value is None:   # the closed form, with its own derivatives where it has them (a quadratic's: -P x, -P)
        exact = problem.exact()
        value = exact.value
        if hasattr(exact, "hessian"):
            def derivatives(z):
                return exact.value(z).detach(), exact.gradient(z).detach(), exact.hessian(z).detach()
    if derivatives is None:
        def derivatives(z):
            return value_derivatives(value, z)
    T = math.log(100.0) / problem.rho if horizon is None else real("horizon", horizon, positive=True)
    x0 = as_float64("x0", x0).reshape(1, -1)
    if x0.shape[1] != problem.state_dim:
        raise ValueError(f"x0 must have {problem.state_dim} entries, got {x0.shape[1]}")
    problem.check_state(x0, "x0")
    dt = _regret_step(problem, policy, x0, T) if dt is None else real("dt", dt, positive=True)
    n = step_count("horizon / dt", max(1, round(T / dt)), None)
    T = n * dt                                                   # a whole number of steps
    if scheme == "weak2" and not (problem.additive_noise or problem.noise_dim == 1):
        scheme = "euler"
    g = make_generator(generator, "cpu", "generator")
    lost_v, lost_q = _regret_paths(problem, policy, derivatives, x0.expand(n_paths, -1).clone(), T, dt, n, scheme, g)
    if not bool(torch.isfinite(lost_v).all() & torch.isfinite(lost_q).all()):
        raise ValueError("the simulation diverged (NaN or inf): reduce dt")
    se = lambda z: float(z.std() / math.sqrt(n_paths))  # noqa: E731
    return Regret(by_value=float(lost_v.mean()), by_q=float(lost_q.mean()), stderr_value=se(lost_v),
                  stderr_q=se(lost_q), stderr_difference=se(lost_v - lost_q), horizon=float(T), dt=float(dt),
                  n_paths=n_paths, tail_weight=math.exp(-problem.rho * T))
