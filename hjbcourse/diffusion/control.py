"""Sampling as a controlled diffusion (book, chapter "Diffusion models as control").

In reverse time ``t`` (forward time ``T - t``) the sampler is the controlled diffusion

    dX = (mu(t, X) + Sigma(t) u(t, X)) dt + Sigma(t) dW,   mu(t, x) = -f(T - t, x),  Sigma(t) = sigma(T - t),

whose cost ``J(u; t, x) = E[ int_t^T (1/2 |u|^2 - div mu) dr - log p_data(X_T) | X_t = x ]`` has the value
``V(t, x) = -log p_{T-t}(x)`` and the optimal control ``u*(t, x) = Sigma(t)^T grad log p_{T-t}(x)`` (the score).
For Gaussian-mixture data every one of these objects is exact, so the verification identity
``J(u) = V + 1/2 E int |u - u*|^2`` is checked by Monte Carlo (:meth:`DiffusionControl.estimate_cost`).

A control is a callable ``u(t, x)``: reverse time ``t`` (a float) first, states ``x`` (B, d), returning (B, d).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .._checks import _check_seed, _positive_int, _tensor, choice, floating_tensor, step_count
from ..runtime import _cpu_threads, _forked_rng, make_generator
from .mixture import GaussianMixture
from .sde import VPSDE

__all__ = ["Control", "zero_control", "ReversePaths", "simulate_reverse", "CostEstimate", "DiffusionControl",
           "example_controls", "verification_table"]


Control = Callable[[float, torch.Tensor], torch.Tensor]


def zero_control(t: float, x: torch.Tensor) -> torch.Tensor:
    """u(t, x) = 0: the uncontrolled reverse process; (B, d) -> (B, d)."""
    return torch.zeros_like(x)


@dataclass
class ReversePaths:
    """What :func:`simulate_reverse` returns. ``x`` (B, d) is X_T; ``running_cost`` (B, 1) is
    int (1/2 |u|^2 - div mu) dt; ``gap`` (B, 1) is int 1/2 |u - u*|^2 dt (when the exact control was given);
    ``path`` (n_steps + 1, B, d) and ``times`` (n_steps + 1,) when ``keep_path`` was set."""

    x: torch.Tensor
    running_cost: torch.Tensor
    gap: torch.Tensor | None = None
    path: torch.Tensor | None = None
    times: torch.Tensor | None = None


def _call_control(u: Control, t: float, x: torch.Tensor) -> torch.Tensor:
    out = u(t, x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"control must map (B, d) -> (B, d); got {getattr(out, 'shape', type(out))} "
                         f"for {tuple(x.shape)}")
    if not out.is_floating_point():
        raise ValueError(f"control must return a floating tensor, got dtype {out.dtype}")
    return out.to(x.dtype)


def _brownian(n_steps: int, shape, g: torch.Generator, dtype, device) -> torch.Tensor:
    """Standard normal increments (n_steps, B, d), to be scaled by the step's noise amplitude."""
    return torch.randn((n_steps, *shape), generator=g, dtype=dtype, device=device)


def simulate_reverse(sde: VPSDE, control: Control, x0: torch.Tensor, *, t0: float = 0.0, n_steps: int = 1000,
                     generator=None, exact_control: Control | None = None, keep_path: bool = False,
                     scheme: str = "heun", noise: torch.Tensor | None = None,
                     max_steps: int | None = None) -> ReversePaths:
    """Integrate dX = (mu + Sigma u) dt + Sigma dW from X_{t0} = x0 (B, d) to X_T on a uniform grid.

    ``control(t, x)`` takes reverse time ``t`` (a float) first and maps (B, d) -> (B, d); a network works as well
    as a function. The running cost 1/2 |u|^2 - div mu and, with ``exact_control``, the quadratic gap
    1/2 |u - u*|^2 are integrated along the same paths.

    ``scheme="euler"``: Euler-Maruyama with left-point sums (weak order 1). ``scheme="heun"``: the stochastic
    Heun predictor-corrector with trapezoid sums (weak order 2 for additive noise; Kloeden and Platen, ch. 15).
    In both, each step's noise has the exact variance int beta(T - r) dr over the step, and only t < T is
    used: Heun's last step is an Euler step, so a learned score is never asked for zero noise.
    :meth:`DiffusionControl.step_bias` measures the time-step error. ``noise`` (n_steps, B, d): standard normal
    draws to use instead of fresh ones (to couple two step sizes). ``max_steps``: the largest ``n_steps`` allowed
    (None: 1,000,000).
    """
    floating_tensor("x0", x0, (None, None))
    with torch.no_grad(), _cpu_threads(1 if x0.device.type == "cpu" else None):
        return _simulate_reverse(sde, control, x0, t0, n_steps, generator, exact_control, keep_path, scheme, noise,
                                 max_steps)


def _simulate_reverse(sde, control, x0, t0, n_steps, generator, exact_control, keep_path, scheme, noise,
                      max_steps=None):
    t0 = sde.check_time(t0, "t0")
    if t0 >= sde.T:
        raise ValueError(f"t0 must be < T={sde.T}, got {t0}")
    n_steps = step_count("n_steps", _positive_int("n_steps", n_steps), max_steps)
    choice("scheme", scheme, ("euler", "heun"))
    B, d = x0.shape
    if noise is None:
        noise = _brownian(n_steps, (B, d), make_generator(generator, x0.device, "generator"), x0.dtype, x0.device)
    else:
        floating_tensor("noise", noise, (n_steps, B, d))
    dt = (sde.T - t0) / n_steps
    times = [t0 + i * dt for i in range(n_steps)] + [sde.T]
    x = x0.clone()
    running = torch.zeros(B, 1, dtype=x.dtype, device=x.device)
    gap = torch.zeros(B, 1, dtype=x.dtype, device=x.device) if exact_control is not None else None
    path = [x.clone()] if keep_path else None

    def drift_and_costs(t, x):
        u = _call_control(control, t, x)
        q = 0.5 * (u * u).sum(1, keepdim=True)
        e2 = None
        if exact_control is not None:
            e = u - _call_control(exact_control, t, x)
            e2 = 0.5 * (e * e).sum(1, keepdim=True)
        return sde.reverse_drift(t, x) + sde.reverse_diffusion(t) * u, q, e2

    a, q, e2 = drift_and_costs(t0, x)
    for i in range(n_steps):
        t, t1 = times[i], times[i + 1]
        # the exact noise amplitude over the step: sqrt(int_t^t1 beta(T - r) dr)
        amp = math.sqrt(max(sde.int_beta(sde.T - t) - sde.int_beta(sde.T - t1), 0.0))
        dw = amp * noise[i].to(x)
        if scheme == "heun" and i < n_steps - 1:
            a_pred, _, _ = drift_and_costs(t1, x + a * dt + dw)
            x = x + 0.5 * (a + a_pred) * dt + dw
            a1, q1, e21 = drift_and_costs(t1, x)
            running += 0.5 * (q + q1) * dt
            if gap is not None:
                gap += 0.5 * (e2 + e21) * dt
        else:
            x = x + a * dt + dw
            running += q * dt
            if gap is not None:
                gap += e2 * dt
            if i < n_steps - 1:
                a1, q1, e21 = drift_and_costs(t1, x)
        a, q, e2 = (a1, q1, e21) if i < n_steps - 1 else (a, q, e2)
        if keep_path:
            path.append(x.clone())
    # div mu = d/2 beta(T - t) is deterministic: integrate it exactly
    running -= 0.5 * d * (sde.int_beta(sde.T - t0) - sde.int_beta(0.0))
    return ReversePaths(x=x, running_cost=running, gap=gap, path=torch.stack(path) if keep_path else None,
                        times=torch.tensor(times, dtype=x.dtype, device=x.device) if keep_path else None)


@dataclass(frozen=True)
class CostEstimate:
    """A Monte Carlo estimate of J(u; t, x) and of the verification identity J = V + gap at one (t, x).

    ``J``, ``gap`` and ``residual = J - V - gap`` come with their standard errors (``*_se``); the residual is
    estimated per path, so its error bar accounts for the correlation of J and the gap on shared paths.
    """

    J: float
    J_se: float
    V: float
    gap: float
    gap_se: float
    residual: float
    residual_se: float
    n_paths: int
    n_steps: int

    @property
    def excess(self) -> float:
        """J - V, the suboptimality of the control."""
        return self.J - self.V

    @property
    def z_score(self) -> float:
        """residual / residual_se: |z| <= 3 means the identity holds within three standard errors."""
        return self.residual / self.residual_se if self.residual_se > 0 else (0.0 if self.residual == 0 else math.inf)


def _se(v: torch.Tensor) -> float:
    """The standard error of the mean of the samples v (n,)."""
    return float(v.std(unbiased=True) / math.sqrt(v.numel()))


class DiffusionControl:
    """The reverse-time control problem of Gaussian-mixture data ``data`` under the forward VP ``sde``.

    dX = (mu + Sigma u) dt + Sigma dW on [0, T] with X_0 ~ p_T; cost
    J(u; t, x) = E[int_t^T (1/2 |u|^2 - div mu) dr - log p_data(X_T) | X_t = x]. Exact value
    V(t, x) = -log p_{T-t}(x) and optimal control u*(t, x) = Sigma(t) grad log p_{T-t}(x); every map takes
    reverse time t first.
    """

    def __init__(self, data: GaussianMixture, sde: VPSDE):
        if not isinstance(data, GaussianMixture):
            raise ValueError(f"data must be a GaussianMixture, got {type(data).__name__}")
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        self.data, self.sde = data, sde
        self._laws: dict[float, GaussianMixture] = {}

    @property
    def dim(self) -> int:
        return self.data.dim

    def law(self, t: float) -> GaussianMixture:
        """The law of X_t under the optimal control: p_{T-t} (the last few are cached: a simulation step asks
        for the same time several times)."""
        t = self.sde.check_time(t, "t")
        law = self._laws.get(t)
        if law is None:
            if len(self._laws) >= 8:
                self._laws.pop(next(iter(self._laws)))
            law = self._laws[t] = self.data.marginal(self.sde, self.sde.T - t)
        return law

    def value(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """V(t, x) = -log p_{T-t}(x) at reverse time t; (B, d) -> (B, 1)."""
        return -self.law(t).log_prob(x)

    def optimal_control(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """u*(t, x) = Sigma(t)^T grad log p_{T-t}(x) at reverse time t; (B, d) -> (B, d)."""
        return self.sde.reverse_diffusion(self.sde.check_time(t, "t")) * self.law(t).score(x)

    def terminal_cost(self, x: torch.Tensor) -> torch.Tensor:
        """-log p_data(x); (B, d) -> (B, 1)."""
        return -self.data.log_prob(x)

    def initial_sample(self, n: int, generator=None) -> torch.Tensor:
        """n draws from p_T, the exact law the reverse process starts from."""
        return self.data.marginal(self.sde, self.sde.T).sample(n, generator=generator)

    def _check_start(self, t, x, n_paths):
        x = _tensor("x", x, 1, dtype=self.data.dtype, device=self.data.device)
        if x.shape[0] != self.dim:
            raise ValueError(f"x must have shape ({self.dim},), got {tuple(x.shape)}")
        t = self.sde.check_time(t, "t")
        if t >= self.sde.T:
            raise ValueError(f"t must be < T={self.sde.T} for a cost over [t, T], got {t}")
        n_paths = _positive_int("n_paths", n_paths)
        if n_paths < 2:
            raise ValueError(f"n_paths must be at least 2 for a standard error, got {n_paths}")
        return t, x, n_paths

    def _per_path(self, control, t, x, n_paths, n_steps, noise, scheme):
        """Per-path cost, gap and V(t, x), each (n_paths,)."""
        x0 = x[None, :].expand(n_paths, -1).clone()
        res = simulate_reverse(self.sde, control, x0, t0=t, n_steps=n_steps, noise=noise,
                               exact_control=self.optimal_control, scheme=scheme)
        cost = (res.running_cost + self.terminal_cost(res.x))[:, 0]
        return cost, res.gap[:, 0], float(self.value(t, x[None, :]))

    def estimate_cost(self, control: Control, t: float, x, *, n_paths: int = 4000, n_steps: int = 500,
                      generator=None, scheme: str = "heun") -> CostEstimate:
        """J(u; t, x) with its standard error, and the verification identity J - V = gap, at reverse time ``t``
        and one point ``x`` (d,).

        ``control(t, x)`` may be a function or a network, (B, d) -> (B, d) at reverse time t. Cost and gap are
        integrated along the same simulated paths (:func:`simulate_reverse`).
        """
        t, x, n_paths = self._check_start(t, x, n_paths)
        g = make_generator(generator, self.data.device, "generator")
        noise = _brownian(_positive_int("n_steps", n_steps), (n_paths, self.dim), g, self.data.dtype, self.data.device)
        cost, gap, V = self._per_path(control, t, x, n_paths, n_steps, noise, scheme)
        resid = cost - V - gap
        return CostEstimate(J=float(cost.mean()), J_se=_se(cost), V=V, gap=float(gap.mean()), gap_se=_se(gap),
                            residual=float(resid.mean()), residual_se=_se(resid), n_paths=n_paths, n_steps=n_steps)

    def step_bias(self, control: Control, t: float, x, *, n_paths: int = 2000, n_steps: int = 500,
                  generator=None, scheme: str = "heun") -> dict[str, float]:
        """How much J and the residual J - V - gap move when the step is halved, on coupled Brownian paths.

        The same Brownian motion drives ``n_steps`` and ``2 n_steps`` steps, so the per-path differences have
        a small variance and their means measure the time-discretisation error of the coarse run (for a
        scheme of weak order p the coarse error is about 2^p / (2^p - 1) times the change).
        Returns the changes ``dJ``, ``dresidual`` and their standard errors ``dJ_se``, ``dresidual_se``.
        """
        t, x, n_paths = self._check_start(t, x, n_paths)
        n_steps = _positive_int("n_steps", n_steps)
        g = make_generator(generator, self.data.device, "generator")
        fine = _brownian(2 * n_steps, (n_paths, self.dim), g, self.data.dtype, self.data.device)
        dt = (self.sde.T - t) / (2 * n_steps)
        var = [self.sde.int_beta(self.sde.T - t - i * dt) - self.sde.int_beta(max(self.sde.T - t - (i + 1) * dt, 0.0))
               for i in range(2 * n_steps)]
        va = torch.tensor(var[0::2], dtype=fine.dtype, device=fine.device)[:, None, None]
        vb = torch.tensor(var[1::2], dtype=fine.dtype, device=fine.device)[:, None, None]
        coarse = (va.sqrt() * fine[0::2] + vb.sqrt() * fine[1::2]) / (va + vb).sqrt()
        c1, g1, V = self._per_path(control, t, x, n_paths, n_steps, coarse, scheme)
        c2, g2, _ = self._per_path(control, t, x, n_paths, 2 * n_steps, fine, scheme)
        dJ, dr = c1 - c2, (c1 - g1) - (c2 - g2)
        return {"dJ": float(dJ.mean()), "dJ_se": _se(dJ), "dresidual": float(dr.mean()), "dresidual_se": _se(dr)}

    def sample(self, control: Control | None = None, n: int = 2000, *, n_steps: int = 500, start: str = "exact",
               generator=None, scheme: str = "heun") -> torch.Tensor:
        """n samples of X_T of the controlled reverse SDE (the optimal control by default); (n, d).

        ``start="exact"`` draws X_0 from p_T, ``start="prior"`` from N(0, I) as a practical sampler does.
        """
        g = make_generator(generator, self.data.device, "generator")
        if start == "exact":
            x0 = self.initial_sample(n, generator=g)
        elif start == "prior":
            x0 = self.sde.prior_sample(_positive_int("n", n), self.dim, g, self.data.dtype, self.data.device)
        else:
            raise ValueError(f"start must be 'exact' or 'prior', got {start!r}")
        u = self.optimal_control if control is None else control
        return simulate_reverse(self.sde, u, x0, n_steps=n_steps, generator=g, scheme=scheme).x


def example_controls(problem: DiffusionControl, seed: int = 0) -> dict[str, Control]:
    """The exact control and five perturbations of it used by the chapter, each ``u(t, x)``, (B, d) -> (B, d):
    a constant shift, a rescaling, a rotation field, a time-modulated control and a random network added."""
    d, dt_, dev = problem.dim, problem.data.dtype, problem.data.device
    u = problem.optimal_control
    shift = torch.zeros(d, dtype=dt_, device=dev)
    shift[0] = 1.0
    rot = torch.zeros(d, d, dtype=dt_, device=dev)
    rot[0, 1 % d], rot[1 % d, 0] = 1.0, -1.0
    _check_seed(seed)
    with _forked_rng(seed, dev):    # the network's weights come from the seed; the caller's RNG is untouched
        net = nn.Sequential(nn.Linear(d + 1, 32), nn.Tanh(), nn.Linear(32, d)).to(dtype=dt_, device=dev)
    net.requires_grad_(False)

    def with_net(t, x):
        return u(t, x) + 2.0 * net(torch.cat([x, torch.full_like(x[:, :1], t)], 1))

    return {
        "exact": u,
        "shift": lambda t, x: u(t, x) + shift,
        "scaled": lambda t, x: 0.7 * u(t, x),
        "rotation": lambda t, x: u(t, x) + 0.8 * x @ rot,
        "time-modulated": lambda t, x: u(t, x) * (1 + 0.5 * math.sin(6 * t)),
        "network": with_net,
    }


def verification_table(estimates: dict[str, CostEstimate]) -> str:
    """A markdown table of J - V, the gap and the residual (with standard errors) for each control."""
    rows = ["| control | J - V | gap 1/2 E int abs(u - u*)^2 | residual J - V - gap | residual / s.e. |",
            "|---|---|---|---|---|"]
    for name, e in estimates.items():
        rows.append(f"| {name} | {e.excess:.4f} +- {e.J_se:.4f} | {e.gap:.4f} +- {e.gap_se:.4f} | "
                    f"{e.residual:.4f} +- {e.residual_se:.4f} | {e.z_score:+.2f} |")
    return "\n".join(rows)
