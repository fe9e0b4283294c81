"""What the solver reads off the problem before it starts: whether the greedy policy is exact
(:func:`greedy_applies`), a first policy that stabilises the linearisation (:func:`linearised_feedback`,
Kleinman's admissible start), and the closed loop's fastest rate (:func:`closed_loop_rate`), which sets the time
step. Nothing here is a per-problem setting: every number comes from the problem's own maps."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ...problems import ControlProblem
from ...runtime import make_generator
from .networks import GreedyPolicy, _zero_value

__all__ = ["Settings", "resolve_settings", "check_hamiltonian_has_maximum", "greedy_applies", "LinearFeedback", "linearised_feedback", "closed_loop_rate", "closed_loop_rates", "best_constant_action", "training_region", "MAX_TRAINING_REGION"]

#: the training region is at most this many times the domain (about its centre), like the log inputs' state box
MAX_TRAINING_REGION = 4.0


def greedy_applies(problem: ControlProblem, n: int = 64) -> bool:
    """True when the closed-form greedy action is exact for ``problem`` (control-affine drift, reward
    quadratic and strictly concave in the action, noise independent of the action), checked on sample states."""
    x = problem.sample_states(n, make_generator(0, "cpu"), dtype=torch.float64)
    try:
        GreedyPolicy(problem, _zero_value).check(x)
    except (ValueError, RuntimeError):
        return False
    return True


class LinearFeedback:
    """(B, d) -> (B, k): a(x) = a_c - K (x - x_c), clipped to the action box."""

    def __init__(self, problem: ControlProblem, K: np.ndarray, x_c: torch.Tensor, a_c: torch.Tensor):
        self.problem = problem
        self.K = torch.as_tensor(K, dtype=torch.float64)
        self.x_c, self.a_c = x_c.reshape(1, -1), a_c.reshape(1, -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a_c.to(x) - (x - self.x_c.to(x)) @ self.K.to(x).T
        return self.problem.clip_action(a)


def _jacobians(problem: ControlProblem, x_c: torch.Tensor, a_c: torch.Tensor):
    """A = df/dx, B = df/da, Q = -d2r/dx2, R = -d2r/da2, N = -d2r/dxda at (x_c, a_c), as numpy arrays."""
    f = lambda x, a: problem.drift(x.unsqueeze(0), a.unsqueeze(0))[0]
    r = lambda x, a: problem.reward(x.unsqueeze(0), a.unsqueeze(0))[0, 0]
    A, B = torch.autograd.functional.jacobian(f, (x_c, a_c))
    H = torch.autograd.functional.hessian(r, (x_c, a_c))
    return A.numpy(), B.numpy(), -H[0][0].numpy(), -H[1][1].numpy(), -H[0][1].numpy()


def linearised_feedback(problem: ControlProblem) -> LinearFeedback | None:
    """The optimal feedback of the discounted LQR that linearises ``problem`` at the centre of its domain and
    the action a_c = 0 (or the middle of the action box when 0 is outside it): a first policy that stabilises
    an unstable open loop (Kleinman's condition for policy iteration), exact for an LQR. None when the
    linearisation has no stabilising Riccati solution (then the caller starts from a constant action)."""
    import scipy.linalg

    lo, hi = (t.to(torch.float64) for t in problem.domain)
    x_c = (lo + hi) / 2
    a_lo, a_hi = problem.action_low.to(torch.float64), problem.action_high.to(torch.float64)
    a_c = torch.where((a_lo < 0) & (a_hi > 0), torch.zeros_like(a_lo),
                      torch.where(torch.isfinite(a_lo) & torch.isfinite(a_hi), (a_lo + a_hi) / 2, a_lo + 1.0))
    try:
        A, B, Q, R, N = _jacobians(problem, x_c, a_c)
        d = A.shape[0]
        Q = 0.5 * (Q + Q.T) + 1e-8 * max(1.0, np.abs(Q).max()) * np.eye(d)
        As = A - 0.5 * problem.rho * np.eye(d)
        with np.errstate(all="ignore"):
            P = scipy.linalg.solve_continuous_are(As, B, Q, 0.5 * (R + R.T), s=N)
        K = np.linalg.solve(R, B.T @ P + N.T)
    except (ValueError, np.linalg.LinAlgError, RuntimeError):
        return None
    if not np.isfinite(K).all():
        return None
    return LinearFeedback(problem, K, x_c, a_c)


def closed_loop_rates(problem: ControlProblem, policy, x: torch.Tensor) -> tuple[float, float, float]:
    """(fastest, slowest decay, growth) of the closed loop dX = f(X, policy(X)) dt around the states ``x``,
    from the eigenvalues of the Jacobian of x -> f(x, policy(x)) (by central differences): the largest modulus
    over the states (0 where undefined); the median over the states of min(-Re eigenvalue), 0 where that is
    not positive (a loop that does not contract everywhere along the way); and the median over the states of
    max(Re eigenvalue), 0 where that is not positive (the rate at which an unstable loop's paths leave)."""
    B, d = x.shape
    lo, hi = problem.domain
    h = 1e-3 * float((hi - lo).min())
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    pts = torch.cat([x.unsqueeze(1) + h * eye, x.unsqueeze(1) - h * eye], dim=1).reshape(-1, d)
    with torch.no_grad():
        f = problem.drift(pts, policy(pts)).reshape(B, 2, d, d)
    J = ((f[:, 0] - f[:, 1]) / (2 * h)).transpose(-1, -2)          # (B, d, d): J[b, i, j] = df_i / dx_j
    eig = torch.linalg.eigvals(J.double().cpu())
    rate = float(eig.abs().max())
    slow = float((-eig.real).min(-1).values.median())
    growth = float(eig.real.max(-1).values.median())
    return (rate if rate == rate else 0.0,                         # NaN (a policy undefined there): no cap
            slow if slow > 0 else 0.0, growth if growth > 0 else 0.0)


def closed_loop_rate(problem: ControlProblem, policy, x: torch.Tensor) -> float:
    """The fastest rate of the closed loop dX = f(X, policy(X)) dt around the states ``x``: the largest
    modulus of an eigenvalue of the Jacobian of x -> f(x, policy(x)) (by central differences), over them
    (:func:`closed_loop_rates`)."""
    return closed_loop_rates(problem, policy, x)[0]


def training_region(problem: ControlProblem, policy, horizon: float, dt: float, scheme: str,
                    generator: torch.Generator, n: int = 256, dtype=torch.float32, device="cpu",
                    extent: float | None = None) -> float:
    """How many times the domain (about its centre) the training states must span so that they hold where
    ``policy``'s paths go: the paths from ``n`` states of ``problem.sample_states`` are simulated over
    ``horizon``, and the 95% quantile of |X_T - c| / h in each coordinate (c the domain's centre, h its
    half-width) is taken, then the largest over the coordinates. At least 1 (a closed loop that keeps its
    paths in the domain leaves the training states as they are), at most :data:`MAX_TRAINING_REGION` and
    within the problem's ``state_space``.

    Why: every evaluation reads V at the end points of its paths (the bootstrap). Where the closed loop
    does not contract (an unstable open loop whose discounted optimum is not stabilising: the value is
    finite only because of the discount), the paths leave the domain and V is read where no state was
    fitted, a bias the iterations do not remove (benchmarks/README.md, lqr7 and lqr15)."""
    from ...sde import simulate

    lo, hi = (t.to(dtype=dtype, device=device) for t in problem.domain)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    if extent is None:
        x0 = problem.sample_states(n, generator, dtype=dtype, device=device)
        with torch.no_grad():
            x_T = simulate(problem, policy, x0, horizon, dt, scheme=scheme, generator=generator).x_T
        u = ((x_T - c) / h).abs()
        u = torch.where(torch.isfinite(u), u, torch.full_like(u, math.inf))
        extent = float(torch.quantile(u.double().cpu(), 0.95, dim=0).max())
    region = min(max(1.0, extent if extent == extent else MAX_TRAINING_REGION), MAX_TRAINING_REGION)
    s_lo, s_hi = problem.state_space                  # the stretched domain stays inside the state space
    for c_i, h_i in zip(c.tolist(), h.tolist()):
        if math.isfinite(s_lo):
            region = min(region, (c_i - s_lo) / h_i)
        if math.isfinite(s_hi):
            region = min(region, (s_hi - c_i) / h_i)
    return max(1.0, region)


def _candidates(low: float, high: float) -> list[float]:
    """Constant actions tried for one coordinate: spread over a bounded interval (denser near its ends,
    where a rate such as consumption usually lies), or -1, 0, 1 about an open end."""
    if math.isfinite(low) and math.isfinite(high):
        return [low + (high - low) * u for u in (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9)]
    if math.isfinite(low):
        return [low + s for s in (0.1, 1.0, 3.0)]
    if math.isfinite(high):
        return [high - s for s in (0.1, 1.0, 3.0)]
    return [-1.0, 0.0, 1.0]


def best_constant_action(problem: ControlProblem, horizon: float, dt: float, scheme: str,
                         generator: torch.Generator, n: int = 32, dtype=torch.float32, device="cpu"):
    """(k,): the constant action with the largest mean discounted reward over ``horizon`` from ``n`` training
    states, among a grid of the action box (:func:`_candidates` per coordinate, at most 7^k, k <= 3), by a
    pilot simulation; candidates whose paths leave the finite numbers are skipped. An admissible first policy
    for the actor (for Merton, a consumption rate that wealth can sustain) read off the problem, not set by
    hand. Returns (action, its mean discounted reward); (None, None) when no candidate gives finite rewards or
    the action has more than 3 coordinates."""
    from ...sde import simulate

    k = problem.action_dim
    if k > 3:
        return None, None
    grids = [_candidates(float(lo), float(hi)) for lo, hi in zip(problem.action_low, problem.action_high)]
    x0 = problem.sample_states(n, generator, dtype=dtype, device=device)
    best, best_value = None, -math.inf
    for combo in itertools.product(*grids):
        a = torch.tensor(combo, dtype=dtype, device=device)
        try:
            with torch.no_grad():
                sim = simulate(problem, lambda x: a.expand(x.shape[0], k), x0, horizon, dt, scheme=scheme,
                               generator=generator)
            value = float(sim.reward.mean())
        except (ValueError, RuntimeError):
            continue
        if math.isfinite(value) and value > best_value:
            best, best_value = combo, value
    return best, (best_value if best is not None else None)


@dataclass(frozen=True)
class Settings:
    """The choices :func:`resolve_settings` reads off the problem where the config says ``"auto"``."""

    greedy: bool
    input_scaling: str
    state_box: float | None
    value_fit: str
    value_sign: int | None
    initial_action: tuple | None
    polish_steps: int
    initial_sweeps: int
    value_steps: int
    value_batch: int
    policy_steps: int
    initial_paths: int | None
    horizon: float | None
    dt: float | None
    adapt_dt: bool
    gradient_labels: bool
    iterations: int


def resolve_settings(problem: ControlProblem, config) -> Settings:
    """Resolve the config's automatic choices for ``problem``:

    - ``policy="auto"``: greedy where :func:`greedy_applies`, else the actor;
    - the actor's first action (``initial_policy="auto"`` and no ``initial_action``): :func:`best_constant_action`;
    - ``input_scaling="auto"``: ``"log"`` for a domain of positive states (which move geometrically, like wealth),
      and then also ``state_box`` 4 (unless set), ``value_fit="relative"`` (unless set), unless set a value
      of known sign (``value_sign``) when the first policy's pilot reward has one, and the numerics measured
      on Merton: horizon 1 / rho (unless set) with dt = horizon / 200 (no adaptation), full-batch value fits
      (``value_batch`` = ``n_states``) of twice ``value_steps``, at most 50 actor steps and at least 16 first
      paths; ``"affine"`` elsewhere;
    - ``value_fit="auto"``: ``"absolute"`` unless chosen above;
    - ``polish_steps`` and ``initial_sweeps`` None: 500 and 3 with the greedy policy, 0 and 1 with the actor;
    - ``gradient_labels`` None: on with the greedy policy, off with the actor;
    - ``iterations`` None: 25 with the greedy policy, 15 with the actor.
    """
    check_hamiltonian_has_maximum(problem)
    greedy = config.policy == "greedy" or (config.policy == "auto" and greedy_applies(problem))
    scaling, box, fit, sign, action = (config.input_scaling, config.state_box, config.value_fit, config.value_sign,
                                       config.initial_action)
    pilot = None
    if not greedy and action is None and config.initial_policy == "auto":
        T0 = 3.0 / problem.rho   # the discount's time scale, whatever the budget: a myopic pilot over-consumes
        action, pilot = best_constant_action(problem, T0, T0 / 100, config.scheme,
                                             torch.Generator().manual_seed(config.seed + 3),
                                             dtype=config.torch_dtype, device=config.torch_device)
    numerics = dict(value_steps=config.value_steps, value_batch=config.value_batch, policy_steps=config.policy_steps,
                    initial_paths=config.initial_paths_per_state, horizon=None, dt=None, adapt_dt=config.adapt_dt)
    positive = scaling == "auto" and bool((problem.domain[0] > 0).all())
    if positive:  # the numerics measured on Merton (benchmarks/README.md), for states that move geometrically
        T = config.horizon if config.horizon is not None else 1.0 / problem.rho
        numerics.update(value_steps=2 * config.value_steps, value_batch=config.n_states,
                        policy_steps=min(config.policy_steps, 50),
                        initial_paths=max(16, config.initial_paths_per_state or 0), horizon=T, dt=T / 200,
                        adapt_dt=False)
    if scaling == "auto":
        scaling = "log" if positive else "affine"
        if positive:
            box = 4.0 if box is None else box
            fit = "relative" if fit == "auto" else fit
            if sign is None and pilot:
                sign = 1 if pilot > 0 else -1
    return Settings(greedy=greedy, input_scaling=scaling, state_box=box,
                    value_fit="absolute" if fit == "auto" else fit, value_sign=sign,
                    initial_action=None if action is None else tuple(float(a) for a in action),
                    polish_steps=(500 if greedy else 0) if config.polish_steps is None else config.polish_steps,
                    initial_sweeps=(3 if greedy else 1) if config.initial_sweeps is None else config.initial_sweeps,
                    gradient_labels=greedy if config.gradient_labels is None else config.gradient_labels,
                    iterations=(25 if greedy else 15) if config.iterations is None else config.iterations,
                    **numerics)


def check_hamiltonian_has_maximum(problem: ControlProblem, n: int = 32) -> None:
    """Raise ``ValueError`` when the Hamiltonian r + L^a V has no maximum in some action coordinate whatever V:
    the coordinate is unbounded on both sides, the drift and the noise are affine in it and the reward is not
    strictly concave in it at any sample state (a linear or convex action cost). Policy iteration cannot treat
    such a problem: each improvement would send that action to infinity."""
    x = problem.sample_states(n, make_generator(0, "cpu"), dtype=torch.float64)
    a0 = torch.zeros(n, problem.action_dim, dtype=torch.float64)
    lo, hi = problem.action_low, problem.action_high
    for j in range(problem.action_dim):
        if math.isfinite(float(lo[j])) or math.isfinite(float(hi[j])):
            continue
        e = torch.zeros_like(a0)
        e[:, j] = 1.0
        with torch.no_grad():
            second = lambda fn: fn(x, a0 + e) - 2 * fn(x, a0) + fn(x, a0 - e)
            r2 = second(problem.reward)
            f2 = second(problem.drift).abs().max()
            s2 = (problem.diffusion(x, a0 + e) - problem.diffusion(x, a0)).abs().max()
        if float(r2.max()) >= 0 and float(f2) < 1e-9 and float(s2) < 1e-12:
            raise ValueError(f"the Hamiltonian has no maximum in action coordinate {j}: it is unbounded "
                             f"(action_low = -inf, action_high = inf), enters the drift linearly and the reward "
                             f"is not strictly concave in it, so every improvement sends it to infinity; bound "
                             f"it (action_low, action_high) or give it a strictly concave cost")
