"""Diffusion models read as stochastic optimal control (book, chapter "Diffusion models as control").

The forward SDE ``dY = f(Y, s) ds + sigma(s) dB`` with ``Y_0 ~ p_data`` has marginals ``p_s``. In reverse
time ``t = T - s`` the sampler is the controlled diffusion

    dX = (mu(X, t) + Sigma(t) u(X, t)) dt + Sigma(t) dW,   mu(x, t) = -f(x, T - t),  Sigma(t) = sigma(T - t),

whose cost ``J(u; x, t) = E[ int_t^T (1/2 |u|^2 - div mu) ds - log p_data(X_T) ]`` has the value
``V(x, t) = -log p_{T-t}(x)`` and the optimal control ``u* = Sigma^T grad log p_{T-t}`` (the score). For
Gaussian-mixture data and the variance-preserving SDE every one of these objects is exact, so the chapter
checks the verification identity ``J(u) = V + 1/2 E int |u - u*|^2`` numerically and then learns the score
by denoising score matching.

Time conventions: ``s`` is forward time (the noise level), ``t`` is reverse time; ``s = T - t``. Scores
(:meth:`GaussianMixture.score`, :class:`ScoreNet`, :meth:`ScoreModel.score`) take forward time; controls
``u(x, t)`` and values ``V(x, t)`` take reverse time, as in the chapter.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .problems import _positive_int, _scalar
from .runtime import _check_seed, _forked_rng, make_generator, progress
from .training import History, SolverConfig, check_finite

__all__ = [
    "GaussianMixture",
    "VPSDE",
    "DiffusionControl",
    "ReversePaths",
    "CostEstimate",
    "simulate_reverse",
    "zero_control",
    "example_controls",
    "verification_table",
    "ScoreNet",
    "ScoreMatchingConfig",
    "ScoreMatching",
    "ScoreModel",
    "score_error",
    "wasserstein_distance",
    "sample_quality",
]


# --------------------------------------------------------------------------------------------------------------
# Input checks and threads


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run the block with ``n`` intra-op CPU threads (``None``: leave torch's setting), restoring it after.

    The tensors of this module are small (a few thousand points in a few dimensions, an MLP of width 128): on a
    CPU, thread start-up and contention cost more than they save, by an order of magnitude on a busy machine.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _tensor(name: str, value, ndim: int, dtype=None, device=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {value!r}") from e
        if dtype is None:
            t = t.to(torch.get_default_dtype())
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got a value containing NaN or inf")
    return t


def _check_x(x: torch.Tensor, d: int, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor of shape (batch, {d}), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{name} must have shape (batch, {d}), got {tuple(x.shape)}")
    return x


# --------------------------------------------------------------------------------------------------------------
# The forward SDE


class VPSDE:
    """The variance-preserving (Ornstein-Uhlenbeck) SDE dY = -1/2 beta(s) Y ds + sqrt(beta(s)) dB.

    ``beta(s) = beta_min + (beta_max - beta_min) s / T`` on ``[0, T]``. Its transition is Gaussian:
    ``Y_s | Y_0 ~ N(alpha(s) Y_0, (1 - alpha(s)^2) I)`` with ``alpha(s) = exp(-1/2 int_0^s beta)``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _scalar("beta_min", beta_min, positive=True)
        self.beta_max = _scalar("beta_max", beta_max, positive=True)
        self.T = _scalar("T", T, positive=True)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_max={beta_max} < beta_min={beta_min}")

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def check_time(self, t, name: str = "t") -> float:
        """``t`` as a float, or a ``ValueError`` naming ``name`` when it is not a number in [0, T]."""
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a float in [0, T={self.T}], got {t!r}")
        t = float(t)
        if not (0.0 <= t <= self.T * (1 + 1e-12)):
            raise ValueError(f"{name} must lie in [0, T={self.T}], got {t}")
        return min(t, self.T)

    def beta(self, s):
        """beta(s), for a float or a tensor of forward times."""
        return self.beta_min + (self.beta_max - self.beta_min) * s / self.T

    def int_beta(self, s):
        """int_0^s beta = beta_min s + (beta_max - beta_min) s^2 / (2 T)."""
        return self.beta_min * s + (self.beta_max - self.beta_min) * s * s / (2 * self.T)

    def alpha(self, s):
        """The mean scale alpha(s) = exp(-1/2 int_0^s beta)."""
        b = self.int_beta(s)
        return torch.exp(-0.5 * b) if isinstance(b, torch.Tensor) else math.exp(-0.5 * b)

    def variance(self, s):
        """The added variance 1 - alpha(s)^2 (computed as -expm1 to stay accurate for small s)."""
        b = self.int_beta(s)
        return -torch.expm1(-b) if isinstance(b, torch.Tensor) else -math.expm1(-b)

    def drift(self, x: torch.Tensor, s) -> torch.Tensor:
        """f(x, s) = -1/2 beta(s) x; (B, d) -> (B, d)."""
        return -0.5 * self.beta(s) * x

    def diffusion(self, s):
        """sigma(s) = sqrt(beta(s)) (a scalar times the identity)."""
        b = self.beta(s)
        return torch.sqrt(b) if isinstance(b, torch.Tensor) else math.sqrt(b)

    # reverse time t = T - s -----------------------------------------------------------------------------------
    def reverse_drift(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """mu(x, t) = -f(x, T - t) = +1/2 beta(T - t) x; (B, d) -> (B, d)."""
        return 0.5 * self.beta(self.T - t) * x

    def reverse_diffusion(self, t: float) -> float:
        """Sigma(t) = sigma(T - t) = sqrt(beta(T - t)) (times the identity)."""
        return math.sqrt(self.beta(self.T - t))

    def reverse_drift_divergence(self, t: float, d: int) -> float:
        """div mu(x, t) = d/2 beta(T - t), the same for every x."""
        return 0.5 * d * self.beta(self.T - t)

    def prior_sample(self, n: int, d: int, generator=None, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """n draws from N(0, I), the stationary law that p_T approaches; (n, d)."""
        g = make_generator(generator, device)
        return torch.randn(n, d, generator=g, dtype=dtype, device=device)

    def simulate(self, x0: torch.Tensor, s: float, n_steps: int = 1000, generator=None) -> torch.Tensor:
        """Euler-Maruyama for the forward SDE from ``x0`` (B, d) at time 0 to time ``s``; returns (B, d).

        A brute-force reference for :meth:`GaussianMixture.marginal` (its O(ds) bias is below Monte Carlo
        error at the default step).
        """
        s = self.check_time(s, "s")
        n_steps = _positive_int("n_steps", n_steps)
        g = make_generator(generator, x0.device)
        x = x0.clone()
        ds = s / n_steps
        with torch.no_grad(), _cpu_threads(1 if x.device.type == "cpu" else None):
            for i in range(n_steps):
                si = i * ds
                dw = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device) * math.sqrt(ds)
                x = x + self.drift(x, si) * ds + self.diffusion(si) * dw
        return x


# --------------------------------------------------------------------------------------------------------------
# Gaussian mixtures and their exact marginals


class GaussianMixture:
    """sum_k w_k N(m_k, C_k) in R^d: ``means`` (K, d), ``covs`` (K, d, d) symmetric positive definite,
    ``weights`` (K,) positive and summing to one.

    The data law of the chapter and, through :meth:`marginal`, every law of the forward VP SDE.
    Tensors keep the dtype and device of ``means`` (numpy arrays and lists become the default dtype).
    """

    def __init__(self, means, covs, weights, *, _validated: bool = False):
        if _validated:
            self.means, self.covs, self.weights = means, covs, weights
        else:
            self.means = _tensor("means", means, 2)
            dt, dev = self.means.dtype, self.means.device
            self.covs = _tensor("covs", covs, 3, dtype=dt, device=dev)
            self.weights = _tensor("weights", weights, 1, dtype=dt, device=dev)
            K, d = self.means.shape
            if K < 1 or d < 1:
                raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {tuple(self.means.shape)}")
            if tuple(self.covs.shape) != (K, d, d):
                raise ValueError(f"covs must have shape (K, d, d) = {(K, d, d)}, got {tuple(self.covs.shape)}")
            if tuple(self.weights.shape) != (K,):
                raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(self.weights.shape)}")
            if not bool((self.weights > 0).all()):
                raise ValueError(f"weights must be positive, got {self.weights.tolist()}")
            total = float(self.weights.sum())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, got sum {total}")
            asym = (self.covs - self.covs.transpose(-1, -2)).abs().amax()
            if float(asym) > 1e-8 * max(1.0, float(self.covs.abs().amax())):
                raise ValueError(f"covs must be symmetric, got an asymmetry of {float(asym):.3g}")
            self.covs = 0.5 * (self.covs + self.covs.transpose(-1, -2))
        L, info = torch.linalg.cholesky_ex(self.covs)
        if not _validated and bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise ValueError(f"covs must be positive definite; component {bad} is not")
        self._chol = L
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
        self._chol_inv = torch.linalg.solve_triangular(L, eye, upper=False)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        self._log_norm = torch.log(self.weights) - 0.5 * (logdet + L.shape[-1] * math.log(2 * math.pi))  # (K,)

    @classmethod
    def example(cls, dtype: torch.dtype = torch.float64, device="cpu") -> "GaussianMixture":
        """The chapter's 2-D data: four anisotropic clusters with unequal weights and rotated covariances."""
        means = torch.tensor([[-1.6, 0.4], [0.9, 1.4], [0.2, -1.6], [1.7, -0.3]], dtype=torch.float64)
        stds = torch.tensor([[0.40, 0.20], [0.30, 0.20], [0.35, 0.20], [0.20, 0.20]], dtype=torch.float64)
        angles = torch.tensor([0.3, -0.6, 1.0, 0.0], dtype=torch.float64)
        c, s = torch.cos(angles), torch.sin(angles)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (K, 2, 2) rotations
        covs = R @ torch.diag_embed(stds ** 2) @ R.transpose(1, 2)
        weights = torch.tensor([0.35, 0.25, 0.25, 0.15], dtype=torch.float64)
        return cls(means.to(dtype=dtype, device=device), covs.to(dtype=dtype, device=device),
                   weights.to(dtype=dtype, device=device))

    # description -----------------------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, dtype={self.dtype}, device={self.device})"

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on ``device`` and/or in ``dtype``."""
        kw = dict(device=device or self.device, dtype=dtype or self.dtype)
        return GaussianMixture(self.means.to(**kw), self.covs.to(**kw), self.weights.to(**kw), _validated=True)

    def mean(self) -> torch.Tensor:
        """The mixture's mean, (d,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance, (d, d): sum_k w_k (C_k + m_k m_k^T) - m m^T."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    # densities ----------------------------------------------------------------------------------------------
    def _whiten(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> L_k^{-1} (x - m_k) stacked as (K, d, B).

        Batched products with the inverse Cholesky factors: much faster on a CPU than triangular solves.
        """
        diff = x.to(self.means).T[None, :, :] - self.means[:, :, None]  # (K, d, B)
        return self._chol_inv @ diff

    def _log_components(self, z: torch.Tensor) -> torch.Tensor:
        return self._log_norm[:, None] - 0.5 * (z * z).sum(1)  # (K, B)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, K): log w_k + log N(x; m_k, C_k)."""
        _check_x(x, self.dim)
        return self._log_components(self._whiten(x)).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): log p(x)."""
        _check_x(x, self.dim)
        return torch.logsumexp(self._log_components(self._whiten(x)), dim=0)[:, None].to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, K): the posterior probabilities of the components given x."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad log p(x) = -sum_k r_k(x) C_k^{-1} (x - m_k), r the responsibilities."""
        _check_x(x, self.dim)
        z = self._whiten(x)  # (K, d, B)
        r = torch.softmax(self._log_components(z), dim=0)  # (K, B)
        prec_diff = self._chol_inv.transpose(1, 2) @ z  # C_k^{-1} (x - m_k) = L^{-T} L^{-1} (x - m_k)
        return -(r[:, None, :] * prec_diff).sum(0).T.to(x.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n independent draws, (n, d); ``generator`` a torch.Generator or a seed."""
        n = _positive_int("n", n)
        g = make_generator(generator, self.device)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=self.dtype, device=self.device)
        return self.means[k] + (self._chol[k] @ z[:, :, None])[:, :, 0]

    # the forward SDE --------------------------------------------------------------------------------------------
    def marginal(self, sde: VPSDE, t: float) -> "GaussianMixture":
        """The exact law at forward time ``t`` of the VP SDE started from this mixture (a GaussianMixture).

        Component by component: N(alpha m_k, alpha^2 C_k + (1 - alpha^2) I), the weights unchanged.
        """
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        t = sde.check_time(t, "t")
        a, v = sde.alpha(t), sde.variance(t)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return GaussianMixture(a * self.means, a * a * self.covs + v * eye, self.weights, _validated=True)


# --------------------------------------------------------------------------------------------------------------
# The reverse-time control problem


Control = Callable[[torch.Tensor, float], torch.Tensor]


def zero_control(x: torch.Tensor, t: float) -> torch.Tensor:
    """u = 0: the uncontrolled reverse process (B, d) -> (B, d)."""
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


def _call_control(u: Control, x: torch.Tensor, t: float) -> torch.Tensor:
    out = u(x, t)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"control must map (B, d) -> (B, d); got {getattr(out, 'shape', type(out))} for {tuple(x.shape)}")
    return out.to(x.dtype)


def _brownian(n_steps: int, shape, g: torch.Generator, dtype, device) -> torch.Tensor:
    """Standard normal increments (n_steps, B, d), to be scaled by the step's noise amplitude."""
    return torch.randn((n_steps, *shape), generator=g, dtype=dtype, device=device)


def simulate_reverse(sde: VPSDE, control: Control, x0: torch.Tensor, *, t0: float = 0.0, n_steps: int = 1000,
                     generator=None, exact_control: Control | None = None, keep_path: bool = False,
                     scheme: str = "heun", noise: torch.Tensor | None = None) -> ReversePaths:
    """Integrate dX = (mu + Sigma u) dt + Sigma dW from X_{t0} = x0 (B, d) to X_T on a uniform grid.

    ``control(x, t)`` (B, d) -> (B, d) takes reverse time ``t`` (a float); a network works as well as a
    function. The running cost 1/2 |u|^2 - div mu and, with ``exact_control``, the quadratic gap
    1/2 |u - u*|^2 are integrated along the same paths.

    ``scheme="euler"``: Euler-Maruyama with left-point sums (weak order 1). ``scheme="heun"``: the stochastic
    Heun predictor-corrector with trapezoid sums (weak order 2 for additive noise; Kloeden and Platen, ch. 15).
    In both, each step's noise has the exact variance int beta(T - r) dr over the step, and only t < T is
    used: Heun's last step is an Euler step, so a learned score is never asked for zero noise.
    :meth:`DiffusionControl.step_bias` measures the time-step error. ``noise`` (n_steps, B, d): standard normal draws to use
    instead of fresh ones (to couple two step sizes).
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2:
        raise ValueError(f"x0 must be a tensor of shape (batch, d), got {getattr(x0, 'shape', type(x0))}")
    with torch.no_grad(), _cpu_threads(1 if x0.device.type == "cpu" else None):
        return _simulate_reverse(sde, control, x0, t0, n_steps, generator, exact_control, keep_path, scheme, noise)


def _simulate_reverse(sde, control, x0, t0, n_steps, generator, exact_control, keep_path, scheme, noise):
    t0 = sde.check_time(t0, "t0")
    if t0 >= sde.T:
        raise ValueError(f"t0 must be < T={sde.T}, got {t0}")
    n_steps = _positive_int("n_steps", n_steps)
    if scheme not in ("euler", "heun"):
        raise ValueError(f"scheme must be 'euler' or 'heun', got {scheme!r}")
    B, d = x0.shape
    if noise is None:
        noise = _brownian(n_steps, (B, d), make_generator(generator, x0.device), x0.dtype, x0.device)
    elif tuple(noise.shape) != (n_steps, B, d):
        raise ValueError(f"noise must have shape (n_steps, B, d) = {(n_steps, B, d)}, got {tuple(noise.shape)}")
    dt = (sde.T - t0) / n_steps
    times = [t0 + i * dt for i in range(n_steps)] + [sde.T]
    x = x0.clone()
    running = torch.zeros(B, 1, dtype=x.dtype, device=x.device)
    gap = torch.zeros(B, 1, dtype=x.dtype, device=x.device) if exact_control is not None else None
    path = [x.clone()] if keep_path else None

    def drift_and_costs(x, t):
        u = _call_control(control, x, t)
        q = 0.5 * (u * u).sum(1, keepdim=True)
        e2 = None
        if exact_control is not None:
            e = u - _call_control(exact_control, x, t)
            e2 = 0.5 * (e * e).sum(1, keepdim=True)
        return sde.reverse_drift(x, t) + sde.reverse_diffusion(t) * u, q, e2

    a, q, e2 = drift_and_costs(x, t0)
    for i in range(n_steps):
        t, t1 = times[i], times[i + 1]
        # the exact noise amplitude over the step: sqrt(int_t^t1 beta(T - r) dr)
        amp = math.sqrt(max(sde.int_beta(sde.T - t) - sde.int_beta(sde.T - t1), 0.0))
        dw = amp * noise[i].to(x)
        if scheme == "heun" and i < n_steps - 1:
            a_pred, _, _ = drift_and_costs(x + a * dt + dw, t1)
            x = x + 0.5 * (a + a_pred) * dt + dw
            a1, q1, e21 = drift_and_costs(x, t1)
            running += 0.5 * (q + q1) * dt
            if gap is not None:
                gap += 0.5 * (e2 + e21) * dt
        else:
            x = x + a * dt + dw
            running += q * dt
            if gap is not None:
                gap += e2 * dt
            if i < n_steps - 1:
                a1, q1, e21 = drift_and_costs(x, t1)
        a, q, e2 = (a1, q1, e21) if i < n_steps - 1 else (a, q, e2)
        if keep_path:
            path.append(x.clone())
    # div mu = d/2 beta(T - t) is deterministic: integrate it exactly
    running -= 0.5 * d * (sde.int_beta(sde.T - t0) - sde.int_beta(0.0))
    return ReversePaths(x=x, running_cost=running, gap=gap, path=torch.stack(path) if keep_path else None,
                        times=torch.tensor(times, dtype=x.dtype, device=x.device) if keep_path else None)


@dataclass(frozen=True)
class CostEstimate:
    """A Monte Carlo estimate of J(u; x, t) and of the verification identity J = V + gap at one (x, t).

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
    J(u; x, t) = E[int_t^T (1/2 |u|^2 - div mu) ds - log p_data(X_T) | X_t = x]. Exact value
    V(x, t) = -log p_{T-t}(x) and optimal control u*(x, t) = Sigma(t) grad log p_{T-t}(x).
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

    def value(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """V(x, t) = -log p_{T-t}(x); (B, d) -> (B, 1)."""
        return -self.law(t).log_prob(x)

    def optimal_control(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """u*(x, t) = Sigma(t)^T grad log p_{T-t}(x); (B, d) -> (B, d)."""
        return self.sde.reverse_diffusion(self.sde.check_time(t, "t")) * self.law(t).score(x)

    def terminal_cost(self, x: torch.Tensor) -> torch.Tensor:
        """-log p_data(x); (B, d) -> (B, 1)."""
        return -self.data.log_prob(x)

    def initial_sample(self, n: int, generator=None) -> torch.Tensor:
        """n draws from p_T, the exact law the reverse process starts from."""
        return self.data.marginal(self.sde, self.sde.T).sample(n, generator=generator)

    def _check_start(self, x, t, n_paths):
        x = _tensor("x", x, 1, dtype=self.data.dtype, device=self.data.device)
        if x.shape[0] != self.dim:
            raise ValueError(f"x must have shape ({self.dim},), got {tuple(x.shape)}")
        t = self.sde.check_time(t, "t")
        if t >= self.sde.T:
            raise ValueError(f"t must be < T={self.sde.T} for a cost over [t, T], got {t}")
        n_paths = _positive_int("n_paths", n_paths)
        if n_paths < 2:
            raise ValueError(f"n_paths must be at least 2 for a standard error, got {n_paths}")
        return x, t, n_paths

    def _per_path(self, control, x, t, n_paths, n_steps, noise, scheme):
        """Per-path cost, gap and V(x, t), each (n_paths,)."""
        x0 = x[None, :].expand(n_paths, -1).clone()
        res = simulate_reverse(self.sde, control, x0, t0=t, n_steps=n_steps, noise=noise,
                               exact_control=self.optimal_control, scheme=scheme)
        cost = (res.running_cost + self.terminal_cost(res.x))[:, 0]
        return cost, res.gap[:, 0], float(self.value(x[None, :], t))

    def estimate_cost(self, control: Control, x, t: float = 0.0, *, n_paths: int = 4000, n_steps: int = 500,
                      generator=None, scheme: str = "heun") -> CostEstimate:
        """J(u; x, t) with its standard error, and the verification identity J - V = gap, at one point x (d,).

        ``control(x, t)`` may be a function or a network (B, d) -> (B, d) in reverse time. Cost and gap are
        integrated along the same simulated paths (:func:`simulate_reverse`).
        """
        x, t, n_paths = self._check_start(x, t, n_paths)
        g = make_generator(generator, self.data.device)
        noise = _brownian(_positive_int("n_steps", n_steps), (n_paths, self.dim), g, self.data.dtype, self.data.device)
        cost, gap, V = self._per_path(control, x, t, n_paths, n_steps, noise, scheme)
        resid = cost - V - gap
        return CostEstimate(J=float(cost.mean()), J_se=_se(cost), V=V, gap=float(gap.mean()), gap_se=_se(gap),
                            residual=float(resid.mean()), residual_se=_se(resid), n_paths=n_paths, n_steps=n_steps)

    def step_bias(self, control: Control, x, t: float = 0.0, *, n_paths: int = 2000, n_steps: int = 500,
                  generator=None, scheme: str = "heun") -> dict[str, float]:
        """How much J and the residual J - V - gap move when the step is halved, on coupled Brownian paths.

        The same Brownian motion drives ``n_steps`` and ``2 n_steps`` steps, so the per-path differences have
        a small variance and their means measure the time-discretisation error of the coarse run (for a
        scheme of weak order p the coarse error is about 2^p / (2^p - 1) times the change).
        Returns the changes ``dJ``, ``dresidual`` and their standard errors ``dJ_se``, ``dresidual_se``.
        """
        x, t, n_paths = self._check_start(x, t, n_paths)
        n_steps = _positive_int("n_steps", n_steps)
        g = make_generator(generator, self.data.device)
        fine = _brownian(2 * n_steps, (n_paths, self.dim), g, self.data.dtype, self.data.device)
        dt = (self.sde.T - t) / (2 * n_steps)
        var = [self.sde.int_beta(self.sde.T - t - i * dt) - self.sde.int_beta(max(self.sde.T - t - (i + 1) * dt, 0.0))
               for i in range(2 * n_steps)]
        va = torch.tensor(var[0::2], dtype=fine.dtype, device=fine.device)[:, None, None]
        vb = torch.tensor(var[1::2], dtype=fine.dtype, device=fine.device)[:, None, None]
        coarse = (va.sqrt() * fine[0::2] + vb.sqrt() * fine[1::2]) / (va + vb).sqrt()
        c1, g1, V = self._per_path(control, x, t, n_paths, n_steps, coarse, scheme)
        c2, g2, _ = self._per_path(control, x, t, n_paths, 2 * n_steps, fine, scheme)
        dJ, dr = c1 - c2, (c1 - g1) - (c2 - g2)
        return {"dJ": float(dJ.mean()), "dJ_se": _se(dJ), "dresidual": float(dr.mean()), "dresidual_se": _se(dr)}

    def sample(self, control: Control | None = None, n: int = 2000, *, n_steps: int = 500, start: str = "exact",
               generator=None, scheme: str = "heun") -> torch.Tensor:
        """n samples of X_T of the controlled reverse SDE (the optimal control by default); (n, d).

        ``start="exact"`` draws X_0 from p_T, ``start="prior"`` from N(0, I) as a practical sampler does.
        """
        g = make_generator(generator, self.data.device)
        if start == "exact":
            x0 = self.initial_sample(n, generator=g)
        elif start == "prior":
            x0 = self.sde.prior_sample(_positive_int("n", n), self.dim, g, self.data.dtype, self.data.device)
        else:
            raise ValueError(f"start must be 'exact' or 'prior', got {start!r}")
        u = self.optimal_control if control is None else control
        return simulate_reverse(self.sde, u, x0, n_steps=n_steps, generator=g, scheme=scheme).x


def example_controls(problem: DiffusionControl, seed: int = 0) -> dict[str, Control]:
    """The exact control and five perturbations of it used by the chapter (reverse time t, (B, d) -> (B, d)):
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

    def with_net(x, t):
        return u(x, t) + 2.0 * net(torch.cat([x, torch.full_like(x[:, :1], t)], 1))

    return {
        "exact": u,
        "shift": lambda x, t: u(x, t) + shift,
        "scaled": lambda x, t: 0.7 * u(x, t),
        "rotation": lambda x, t: u(x, t) + 0.8 * x @ rot,
        "time-modulated": lambda x, t: u(x, t) * (1 + 0.5 * math.sin(6 * t)),
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


# --------------------------------------------------------------------------------------------------------------
# Denoising score matching


class ScoreNet(nn.Module):
    """A small time-conditioned MLP: (x (B, d), s forward time (B,) or float) -> a noise prediction (B, d).

    Time enters through the log noise-to-signal ratio lambda(s) = log((1 - alpha^2) / alpha^2), rescaled to
    [0, 1] over [1e-3 T, T], and sinusoidal features of it: small noise levels, where the score changes
    fastest, get as much resolution as large ones. :class:`ScoreModel` turns the noise prediction eps into the
    score -eps / sqrt(1 - alpha(s)^2), so the network's output stays of order one at every noise level.
    """

    def __init__(self, dim: int, sde: "VPSDE", hidden: int = 128, depth: int = 3, n_freq: int = 8):
        super().__init__()
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        self.dim = _positive_int("dim", dim)
        hidden = _positive_int("hidden", hidden)
        depth = _positive_int("depth", depth)
        self.n_freq = _positive_int("n_freq", n_freq)
        self.sde = sde
        lam = lambda s: math.log(sde.variance(s)) + sde.int_beta(s)  # noqa: E731  log((1 - a^2) / a^2)
        self._lam_lo, self._lam_hi = lam(1e-3 * sde.T), lam(sde.T)
        self.register_buffer("freqs", math.pi * torch.arange(1, self.n_freq + 1, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = self.dim + 2 * self.n_freq + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, self.dim))
        self.body = nn.Sequential(*layers)

    def features(self, s: torch.Tensor) -> torch.Tensor:
        """(B, 1) forward times -> (B, 2 n_freq + 1) features."""
        lam = torch.log(self.sde.variance(s)) + self.sde.int_beta(s)
        r = (lam - self._lam_lo) / (self._lam_hi - self._lam_lo)
        ang = r * self.freqs.to(s)
        return torch.cat([2 * r - 1, torch.sin(ang), torch.cos(ang)], dim=1)

    def forward(self, x: torch.Tensor, s) -> torch.Tensor:
        p = next(self.parameters())
        x = x.to(dtype=p.dtype, device=p.device)
        s = torch.as_tensor(s).to(dtype=p.dtype, device=p.device)
        s = s.reshape(-1, 1).expand(x.shape[0], 1) if s.numel() == 1 else s.reshape(-1, 1)
        return self.body(torch.cat([x, self.features(s)], dim=1))


@dataclass(frozen=True)
class ScoreMatchingConfig(SolverConfig):
    """Settings of :class:`ScoreMatching`: the network, Adam with cosine decay from ``lr`` to ``lr_final``, an
    exponential moving average of the weights (the network that is returned), and the training noise levels
    s = s_min + (T - s_min) r^time_power with r stratified on [0, 1] (time_power > 1 puts more of them at small s,
    where the score is hardest to learn)."""

    hidden: int = 128
    depth: int = 3
    n_freq: int = 8
    iterations: int = 10000
    batch_size: int = 1024
    lr: float = 3e-3
    lr_final: float = 1e-5
    ema: float = 0.999
    s_min: float = 1e-3
    time_power: float = 2.0
    eval_every: int = 500
    eval_samples: int = 2000
    cpu_threads: int | None = 1

    PRESETS: ClassVar[dict] = {
        "quick": dict(hidden=128, depth=3, iterations=10000, batch_size=1024),
        "full": dict(hidden=256, depth=4, iterations=40000, batch_size=4096, lr=1e-3, ema=0.9995),
    }

    def __post_init__(self):
        super().__post_init__()
        for name in ("hidden", "depth", "n_freq", "iterations", "batch_size", "eval_every", "eval_samples"):
            _positive_int(name, getattr(self, name))
        _scalar("lr", self.lr, positive=True)
        _scalar("lr_final", self.lr_final, positive=True)
        _scalar("s_min", self.s_min, positive=True)
        _scalar("time_power", self.time_power, positive=True)
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if self.cpu_threads is not None:
            _positive_int("cpu_threads", self.cpu_threads)


class ScoreModel:
    """A trained score s_theta(x, s) (forward time) and the control it induces, u(x, t) = Sigma(t) s_theta(x, T - t)."""

    def __init__(self, net: ScoreNet, sde: VPSDE, history: History | None = None, train_seconds: float = 0.0):
        self.net, self.sde = net, sde
        self.history = history if history is not None else History()
        self.train_seconds = train_seconds

    @torch.no_grad()
    def score(self, x: torch.Tensor, s) -> torch.Tensor:
        """(B, d) -> (B, d): -eps_theta(x, s) / sqrt(1 - alpha(s)^2) at forward time s > 0.

        ``s`` is a number, or a tensor of B times (one per row of x); every time must lie in (0, T]."""
        _check_x(x, self.net.dim)
        s_f = self.sde.check_time(s, "s") if not (isinstance(s, torch.Tensor) and s.numel() > 1) else None
        if s_f is not None:
            if s_f <= 0:
                raise ValueError("s must be > 0: the score at zero noise is not what the network learns")
            std = math.sqrt(self.sde.variance(s_f))
        else:
            if s.numel() != x.shape[0]:
                raise ValueError(f"s must be a number or hold one time per row of x ({x.shape[0]}), "
                                 f"got {s.numel()} times")
            if not bool(((s > 0) & (s <= self.sde.T * (1 + 1e-12))).all()):
                raise ValueError(f"s must lie in (0, T={self.sde.T}] (the score at zero noise is not what the "
                                 f"network learns), got times in [{float(s.min())}, {float(s.max())}]")
            std = torch.sqrt(self.sde.variance(s.to(dtype=x.dtype, device=x.device))).reshape(-1, 1)
        return -self.net(x, s).to(dtype=x.dtype, device=x.device) / std

    def control(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """u(x, t) = Sigma(t) s_theta(x, T - t) in reverse time t < T; (B, d) -> (B, d)."""
        t = self.sde.check_time(t, "t")
        return self.sde.reverse_diffusion(t) * self.score(x, self.sde.T - t)

    def sample(self, n: int, *, n_steps: int = 500, generator=None, dtype=torch.float32,
               scheme: str = "heun") -> torch.Tensor:
        """n samples of the learned reverse SDE started from N(0, I); (n, d)."""
        p = next(self.net.parameters())
        g = make_generator(generator, p.device)
        x0 = self.sde.prior_sample(_positive_int("n", n), self.net.dim, g, dtype, p.device)
        return simulate_reverse(self.sde, self.control, x0, n_steps=n_steps, generator=g, scheme=scheme).x


class ScoreMatching:
    """Denoising score matching (Vincent 2011) for the VP SDE.

    Loss: E_{s, y0, z} |eps_theta(alpha(s) y0 + std(s) z, s) - z|^2 with s drawn as the config says, which
    is the score-matching loss weighted by std(s)^2 times the density of s. ``data`` is a GaussianMixture (fresh samples every step) or
    a tensor (N, d) of data points (minibatches drawn with replacement).
    """

    def __init__(self, data, sde: VPSDE, config: ScoreMatchingConfig | None = None):
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        self.sde = sde
        self.config = config if config is not None else ScoreMatchingConfig()
        if not isinstance(self.config, ScoreMatchingConfig):
            raise ValueError(f"config must be a ScoreMatchingConfig, got {type(self.config).__name__}")
        if self.config.s_min >= sde.T:
            raise ValueError(f"s_min must be < T={sde.T}, got {self.config.s_min}")
        if isinstance(data, GaussianMixture):
            self.gm, self.points, self.dim = data, None, data.dim
        else:
            pts = _tensor("data", data, 2)
            if pts.shape[0] < 2:
                raise ValueError(f"data must hold at least 2 points, got {pts.shape[0]}")
            self.gm, self.points, self.dim = None, pts, pts.shape[1]

    def _batch(self, n: int, g: torch.Generator, dtype, device) -> torch.Tensor:
        if self.gm is not None:
            return self.gm.sample(n, generator=g).to(dtype=dtype, device=device)
        idx = torch.randint(0, self.points.shape[0], (n,), generator=g, device=g.device)
        return self.points[idx.to(self.points.device)].to(dtype=dtype, device=device)

    def solve(self) -> ScoreModel:
        """Train; returns the :class:`ScoreModel` of the averaged weights with the history of diagnostics."""
        dev = self.config.torch_device
        with _cpu_threads(self.config.cpu_threads if dev.type == "cpu" else None), _forked_rng(self.config.seed, dev):
            return self._solve()

    def _solve(self) -> ScoreModel:
        cfg = self.config
        dev, dt = cfg.torch_device, cfg.torch_dtype
        net = ScoreNet(self.dim, self.sde, cfg.hidden, cfg.depth, cfg.n_freq).to(device=dev, dtype=dt)
        ema = ScoreNet(self.dim, self.sde, cfg.hidden, cfg.depth, cfg.n_freq).to(device=dev, dtype=dt)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iterations, eta_min=cfg.lr_final)
        data_device = "cpu" if self.gm is None else self.gm.device    # draws from the data happen where it lives
        g = make_generator(cfg.seed, data_device)
        g_noise = make_generator(cfg.seed + 1, dev)
        eval_gen = make_generator(cfg.seed + 2, data_device)
        hist = History()
        model = ScoreModel(ema, self.sde, hist)
        ep, ap = list(ema.parameters()), list(net.parameters())
        running = None
        strata = torch.arange(cfg.batch_size, device=dev, dtype=dt)[:, None]
        t_start = time.perf_counter()
        for it in progress(range(cfg.iterations), desc="score matching", enabled=cfg.progress):
            y0 = self._batch(cfg.batch_size, g, dt, dev)
            # stratified noise levels: one per equal-width stratum, a cheap variance reduction
            r = (strata + torch.rand(cfg.batch_size, 1, generator=g_noise, device=dev, dtype=dt)) / cfg.batch_size
            s = cfg.s_min + (self.sde.T - cfg.s_min) * r ** cfg.time_power
            z = torch.randn(y0.shape, generator=g_noise, device=dev, dtype=dt)
            y = self.sde.alpha(s) * y0 + torch.sqrt(self.sde.variance(s)) * z
            loss = ((net(y, s) - z) ** 2).sum(1).mean()
            check_finite(loss, "score-matching loss", it)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                torch._foreach_lerp_(ep, ap, 1 - cfg.ema)
            running = float(loss.detach()) if running is None else 0.98 * running + 0.02 * float(loss.detach())
            row = dict(loss=float(loss.detach()), loss_avg=running, lr=sched.get_last_lr()[0])
            if self.gm is not None and ((it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations):
                times = torch.linspace(0.05 * self.sde.T, self.sde.T, 8).tolist()
                err = score_error(model.score, self.gm, self.sde, times, n=cfg.eval_samples, generator=eval_gen)
                row.update(score_error_max=float(err.max()), score_error_mean=float(err.mean()))
            hist.log(it, **row)
        model.train_seconds = time.perf_counter() - t_start
        return model


# --------------------------------------------------------------------------------------------------------------
# Diagnostics and sample quality


@torch.no_grad()
def score_error(score_fn: Callable[[torch.Tensor, float], torch.Tensor], data: GaussianMixture, sde: VPSDE,
                times, *, n: int = 4000, generator=None) -> torch.Tensor:
    """The p_s-weighted relative L2 error of ``score_fn(x, s)`` at each forward time s in ``times``; (len(times),).

    sqrt(E_{x ~ p_s} |s_theta(x, s) - grad log p_s(x)|^2 / E_{x ~ p_s} |grad log p_s(x)|^2), with x drawn
    from the exact marginal p_s.
    """
    g = make_generator(generator, data.device)
    out = []
    with _cpu_threads(1 if data.device.type == "cpu" else None):
        for s in times:
            s = sde.check_time(s, "times")
            ps = data.marginal(sde, s)
            x = ps.sample(_positive_int("n", n), generator=g)
            exact = ps.score(x)
            approx = score_fn(x, s).to(exact.dtype)
            out.append(torch.sqrt(((approx - exact) ** 2).sum() / (exact ** 2).sum()))
    return torch.stack(out).cpu()


def wasserstein_distance(x: torch.Tensor, y: torch.Tensor, *, p: int = 2, method: str = "exact",
                         reg: float = 0.01) -> float:
    """W_p between the empirical measures of x (n, d) and y (m, d), with POT.

    ``method="exact"`` solves the transport linear program (``ot.emd2``; O(n^3), fine for a few thousand
    points); ``"sinkhorn"`` the entropic problem with regularisation ``reg`` relative to the mean cost.
    """
    import ot

    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if method not in ("exact", "sinkhorn"):
        raise ValueError(f"method must be 'exact' or 'sinkhorn', got {method!r}")
    xa = np.asarray(x.detach().cpu(), dtype=np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, float)
    ya = np.asarray(y.detach().cpu(), dtype=np.float64) if isinstance(y, torch.Tensor) else np.asarray(y, float)
    if xa.ndim != 2 or ya.ndim != 2 or xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have shapes (n, d) and (m, d), got {xa.shape} and {ya.shape}")
    M = ot.dist(xa, ya, metric="sqeuclidean" if p == 2 else "euclidean")
    a = np.full(xa.shape[0], 1.0 / xa.shape[0])
    b = np.full(ya.shape[0], 1.0 / ya.shape[0])
    if method == "exact":
        cost = ot.emd2(a, b, M, numItermax=10_000_000)
    else:
        scale = M.mean()
        cost = ot.sinkhorn2(a, b, M / scale, _scalar("reg", reg, positive=True), numItermax=10000) * scale
    return float(cost) ** (1.0 / p)


def sample_quality(samples: torch.Tensor, data: GaussianMixture, reference: torch.Tensor, *,
                   method: str = "exact") -> dict[str, float]:
    """Two scores of ``samples`` (n, d): W2 to ``reference`` data samples and the average -log p_data.

    Samples that left the region where floats hold p_data count as they are (a large -log p).
    """
    nll = -data.log_prob(samples.to(dtype=data.dtype, device=data.device))
    return {"W2": wasserstein_distance(samples, reference, p=2, method=method), "nll": float(nll.mean())}
