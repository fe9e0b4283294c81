"""A monotone finite-difference solver for one-dimensional discounted HJB equations (book: chapter "The
deterministic HJB", section "A classical solver").

The equation is rho V(x) = max_a { r(x, a) + f(x, a) V'(x) + 1/2 s(x, a)^2 V''(x) } on an interval, with
s^2 = S S^T for the (1, m) diffusion matrix S. On a grid x_0 < ... < x_{n-1} the derivatives are replaced by
differences whose weights are the jump rates of a continuous-time Markov chain on the grid (Kushner and
Dupuis' Markov chain approximation; the implicit upwind scheme of Achdou, Han, Lasry, Lions and Moll):

    [A(a) V]_i = up_i(a) (V_{i+1} - V_i) + down_i(a) (V_{i-1} - V_i),   up_i, down_i >= 0,

    upwind:  up_i   = s^2 / (dx+ (dx+ + dx-)) + max(f, 0) / dx+,
             down_i = s^2 / (dx- (dx+ + dx-)) + max(-f, 0) / dx-,

with dx+ = x_{i+1} - x_i and dx- = x_i - x_{i-1}: the drift uses the forward difference where it points
right and the backward difference where it points left. The ``"hybrid"`` scheme uses the central difference
for the drift and adds the least artificial variance d = max(0, -f dx+ - s^2, f dx- - s^2) that keeps both
rates non-negative: where diffusion dominates (|f| dx <= s^2 on an even grid) it is the second-order central
scheme, elsewhere it adds less numerical diffusion than upwinding, and with s = 0 it is the upwind scheme. Its
rates are continuous in the action, so the maximisation below sees no jump. Because the rates are
non-negative, either scheme is monotone, and the discrete equation

    rho V_i = max_a { r(x_i, a) + [A(a) V]_i }

is the Bellman equation of a discounted controlled Markov chain. It is solved by policy iteration on the grid
(Howard's algorithm): improve the policy node by node, then evaluate it by solving the sparse tridiagonal
system (rho I - A(a)) V = r(a) with scipy.sparse. An optional finite implicit time step ``time_step``
(Achdou et al.'s Delta) solves ((rho + 1/Delta) I - A) V^{new} = r + V^{old} / Delta instead.

The maximisation over actions is generic: it only calls the problem's ``drift``, ``diffusion`` and ``reward``.
At every node the discrete Hamiltonian h_i(a) = r(x_i, a) + [A(a) V]_i is evaluated, for all nodes at once, on
a tensor grid of ``action_grid`` points per action coordinate over the action box; then ``refinements`` steps
of a pattern search start from the best grid point with the grid spacing s: try best + s {-1, 0, 1}^k, move
to the best, and halve s where nothing improved. It needs no derivative, so the kink of h_i where the drift
changes sign does no harm. Where the previous policy does at least as well it is kept, so every step of
policy iteration improves the value even though the search is not exact. Infinite action bounds are searched
on a finite box (``search_box``, default +-10) that grows on a side whenever a maximiser lands on its
artificial edge.

Policy iteration moves information about one node per step where the policy has to change (a minimum-time
problem started from V = 0 needs n / 2 steps), so by default the solver first solves on every other node,
recursively down to ``coarsest`` nodes, and starts from the interpolated coarse solution (nested iteration).

Boundary treatment, at each end separately: ``"reflecting"`` (the chain cannot leave: the outward drift is
dropped and the diffusion sees a mirror node, a Neumann condition V' = 0 for the diffusion part; a state
constraint when the optimal drift points inward), or a Dirichlet value (a number, or a callable
(B, 1) -> (B, 1)): the end node becomes an absorbing state whose value is fixed. A truncated domain needs
one of these although the real problem has no boundary there, and it changes the solution near the ends: a
reflecting end where the optimal drift or the noise points outward is a subsidy (for Merton's problem at low
wealth it hands out free wealth). Put such ends far away (a geometric grid for wealth) and read the solution
in the interior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..problems import ControlProblem, _positive_int, _real
from ..runtime import progress as _progress
from ..training import History, check_finite

__all__ = [
    "FiniteDifferenceSolver",
    "FiniteDifferenceSolution",
    "MinimumTimeProblem",
    "MinimumTimeSolution",
    "fit_quadratic_value",
    "convergence_order",
]


# ---------------------------------------------------------------------------------------------------------
# Solution
# ---------------------------------------------------------------------------------------------------------
@dataclass
class FiniteDifferenceSolution:
    """The grid solution: nodes ``x`` (n,), values ``V`` (n,), actions ``a`` (n, k), all float64.

    ``value(x)`` (B, 1) -> (B, 1) and ``policy(x)`` (B, 1) -> (B, k) interpolate linearly between nodes;
    points outside the grid raise a ``ValueError``. At a node with a given boundary value the action is only the
    maximiser of a one-sided Hamiltonian and carries no meaning. ``iterations`` counts policy-iteration steps
    on this grid (the coarse grids' steps are in ``info["coarse_iterations"]``),
    ``residual`` is max_i |rho V_i - max_a h_i(a)| at the returned V (the discrete HJB residual),
    ``history`` has one row per step (``change``: sup |V_new - V_old|; ``policy_change``: sup |a_new - a_old|).
    """

    x: torch.Tensor
    V: torch.Tensor
    a: torch.Tensor
    iterations: int
    converged: bool
    residual: float
    history: History
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def _interp(self, x: torch.Tensor, values: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor of shape (batch, 1), got {got}")
        xs = x.detach().to("cpu", torch.float64).reshape(-1).numpy()
        lo, hi = float(self.x[0]), float(self.x[-1])
        tol = 1e-12 * max(1.0, abs(lo), abs(hi))
        if xs.size and (xs.min() < lo - tol or xs.max() > hi + tol):
            raise ValueError(f"{name} must lie in the grid's interval [{lo}, {hi}], got values in "
                             f"[{xs.min():.6g}, {xs.max():.6g}]")
        grid = self.x.numpy()
        vals = values.numpy().reshape(len(grid), -1)
        out = np.stack([np.interp(xs, grid, vals[:, j]) for j in range(vals.shape[1])], axis=1)
        return torch.from_numpy(out).to(dtype=x.dtype if x.is_floating_point() else torch.float64, device=x.device)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): V interpolated linearly between grid nodes."""
        return self._interp(x, self.V)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, k): the grid policy interpolated linearly between nodes."""
        return self._interp(x, self.a)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): V' from central differences on the grid (one-sided at the ends), interpolated."""
        g = torch.from_numpy(np.gradient(self.V.numpy(), self.x.numpy()))
        return self._interp(x, g)

    @property
    def n(self) -> int:
        return int(self.x.numel())

    def __repr__(self) -> str:
        return (f"FiniteDifferenceSolution(n={self.n}, interval=[{float(self.x[0]):.4g}, {float(self.x[-1]):.4g}], "
                f"iterations={self.iterations}, converged={self.converged}, residual={self.residual:.2e})")


def fit_quadratic_value(solution: FiniteDifferenceSolution, interval=(-2.0, 2.0)) -> tuple[float, float]:
    """Least-squares fit of V(x) ~ -1/2 P x^2 - c over the grid nodes in ``interval``; returns (P, c).

    This reads the Riccati constant and the noise constant off an LQR grid solution using only the interior
    region, away from the artificial boundary of the truncated domain.
    """
    lo, hi = float(interval[0]), float(interval[1])
    if not lo < hi:
        raise ValueError(f"interval must be increasing, got {interval!r}")
    x = solution.x.numpy()
    m = (x >= lo) & (x <= hi)
    if m.sum() < 3:
        raise ValueError(f"interval {interval!r} holds fewer than 3 grid nodes")
    X = np.stack([-0.5 * x[m] ** 2, -np.ones(m.sum())], axis=1)
    (P, c), *_ = np.linalg.lstsq(X, solution.V.numpy()[m], rcond=None)
    return float(P), float(c)


def convergence_order(steps, errors) -> float:
    """The slope of log(error) against log(step) by least squares: the measured order of convergence.

    ``steps`` are the mesh sizes (dx, h, 1/n ...); a first-order method gives a slope near 1.
    """
    s = np.asarray(steps, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if s.shape != e.shape or s.size < 2:
        raise ValueError(f"steps and errors must be 1-D of the same length >= 2, got {s.shape} and {e.shape}")
    if not (np.all(s > 0) and np.all(e > 0)):
        raise ValueError("steps and errors must be positive to take logarithms")
    return float(np.polyfit(np.log(s), np.log(e), 1)[0])


# ---------------------------------------------------------------------------------------------------------
# A problem whose value function has a kink
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MinimumTimeSolution:
    """V(x) = -(1 - exp(-rho (L - |x|))) / rho on [-L, L]; a*(x) = sign(x) (either sign at x = 0)."""

    half_width: float
    rho: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): minus the discounted time to reach the nearer end of [-L, L]."""
        return -(1.0 - torch.exp(-self.rho * (self.half_width - x.abs()))) / self.rho

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): full speed towards the nearer end (+1 at the tie x = 0)."""
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class MinimumTimeProblem(ControlProblem):
    """Leave the interval (-L, L) as fast as possible: dX = a dt, |a| <= 1, reward -1 until exit, V = 0 at +-L.

    The value V(x) = -(1 - e^{-rho (L - |x|)}) / rho is Lipschitz but not differentiable at x = 0, where both
    exits are equally far: the classical HJB rho V = -1 + |V'| holds everywhere except there, and V is its
    viscosity solution (book: chapter "The deterministic HJB"). Solve it with the boundary value 0 at both
    ends: ``FiniteDifferenceSolver(p, boundary=0.0)``.
    """

    name = "minimum time"

    def __init__(self, rho=1.0, half_width=1.0):
        L = float(half_width)
        if not (math.isfinite(L) and L > 0):
            raise ValueError(f"half_width must be a positive number, got {half_width!r}")
        super().__init__(1, 1, 1, rho, (-L, L), action_low=[-1.0], action_high=[1.0], additive_noise=True)
        self.half_width = L

    def drift(self, x, a):
        return a.to(x)

    def diffusion(self, x, a):
        return torch.zeros(x.shape[0], 1, 1, dtype=x.dtype, device=x.device)

    def reward(self, x, a):
        return -torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)

    def exact(self):
        return MinimumTimeSolution(self.half_width, self.rho)


# ---------------------------------------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------------------------------------
def _boundary_spec(name: str, spec):
    if isinstance(spec, str):
        if spec != "reflecting":
            raise ValueError(f"{name} must be 'reflecting', a number or a callable, got {spec!r}")
        return spec
    if callable(spec):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"{name} must be 'reflecting', a number or a callable, got {spec!r}")
    try:
        v = float(spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be 'reflecting', a number or a callable, got {spec!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {spec!r}")
    return v


class FiniteDifferenceSolver:
    """Monotone implicit finite differences with policy iteration for a 1-D discounted HJB (see module doc).

    ``FiniteDifferenceSolver(problem, domain=(lo, hi), n=2001).solve()`` returns a
    :class:`FiniteDifferenceSolution`. ``problem`` is any :class:`~hjbcourse.ControlProblem` with
    ``state_dim == 1``; only its ``drift``, ``diffusion``, ``reward``, ``rho`` and action box are used.

    Parameters: ``domain`` (default: the problem's) and ``n`` nodes of an even grid, or ``grid``: any strictly
    increasing 1-D array of nodes (then ``domain`` and ``n`` are ignored); ``boundary``: ``"reflecting"``, a
    number or a callable (B, 1) -> (B, 1) giving the value at the ends, or a pair (left, right) of those;
    ``scheme``: ``"upwind"`` or ``"hybrid"``; ``action_grid``, ``refinements``, ``search_box`` control the
    maximisation over actions; ``max_iter``, ``tol`` (on sup |V_new - V_old| relative to max(1, sup |V|))
    and ``time_step`` (inf: pure policy iteration) the outer loop.
    """

    def __init__(self, problem: ControlProblem, domain=None, n: int = 2001, *, grid=None, boundary="reflecting",
                 scheme: str = "upwind", action_grid: int | None = None, refinements: int = 30, search_box=None,
                 max_iter: int = 200, tol: float = 1e-10, time_step: float = math.inf, multilevel: bool = True,
                 coarsest: int = 101, progress: bool = False):
        if not isinstance(problem, ControlProblem):
            raise ValueError(f"problem must be a ControlProblem, got {type(problem).__name__}")
        if problem.state_dim != 1:
            raise ValueError(f"problem must be one-dimensional (state_dim == 1), got state_dim={problem.state_dim}")
        self.problem = problem
        if grid is not None:
            g = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.float64).reshape(-1)
            if g.size < 3 or not np.all(np.isfinite(g)) or not np.all(np.diff(g) > 0):
                raise ValueError("grid must be a finite, strictly increasing 1-D array of at least 3 nodes")
            self.x = torch.from_numpy(g.copy())
        else:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
                raise ValueError(f"n must be an integer >= 3, got {n!r}")
            if domain is None:
                domain = (float(problem.domain[0][0]), float(problem.domain[1][0]))
            try:
                lo, hi = (float(v) for v in domain)
            except (TypeError, ValueError) as e:
                raise ValueError(f"domain must be a pair (lo, hi) of numbers, got {domain!r}") from e
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"domain must be a finite interval with lo < hi, got {domain!r}")
            self.x = torch.linspace(lo, hi, int(n), dtype=torch.float64)
        if isinstance(boundary, (tuple, list)):
            if len(boundary) != 2:
                raise ValueError(f"boundary must be one spec or a pair (left, right), got {boundary!r}")
            self.boundary = (_boundary_spec("boundary", boundary[0]), _boundary_spec("boundary", boundary[1]))
        else:
            b = _boundary_spec("boundary", boundary)
            self.boundary = (b, b)
        if scheme not in ("upwind", "hybrid"):
            raise ValueError(f"scheme must be 'upwind' or 'hybrid', got {scheme!r}")
        self.scheme = scheme
        k = problem.action_dim
        if action_grid is None:
            action_grid = 21 if k == 1 else (11 if k == 2 else 7)
        if isinstance(action_grid, bool) or not isinstance(action_grid, (int, np.integer)) or action_grid < 3:
            raise ValueError(f"action_grid must be an integer >= 3, got {action_grid!r}")
        if isinstance(refinements, bool) or not isinstance(refinements, (int, np.integer)) or refinements < 0:
            raise ValueError(f"refinements must be a non-negative integer, got {refinements!r}")
        self.action_grid, self.refinements = int(action_grid), int(refinements)
        low, high = problem.action_low.clone(), problem.action_high.clone()
        if search_box is not None:
            try:
                sl, sh = (torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1).expand(k).clone() for v in search_box)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"search_box must be a pair (low, high) of numbers or length-{k} arrays, got {search_box!r}") from e
            if not bool((sl < sh).all()) or not bool(torch.isfinite(sl).all() & torch.isfinite(sh).all()):
                raise ValueError(f"search_box must be finite with low < high, got {search_box!r}")
        else:
            sl, sh = torch.full((k,), -10.0, dtype=torch.float64), torch.full((k,), 10.0, dtype=torch.float64)
        # The real bounds are kept; infinite ones are replaced by the search box, which may grow.
        self._hard_low, self._hard_high = torch.isfinite(low), torch.isfinite(high)
        self.low = torch.where(self._hard_low, low, torch.minimum(sl, high - 1.0))
        self.high = torch.where(self._hard_high, high, torch.maximum(sh, self.low + 1.0))
        max_iter = _positive_int("max_iter", max_iter)
        if not (_real(tol) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        if not (_real(time_step) and time_step > 0):
            raise ValueError(f"time_step must be positive (math.inf for pure policy iteration), got {time_step!r}")
        if isinstance(coarsest, bool) or not isinstance(coarsest, (int, np.integer)) or coarsest < 3:
            raise ValueError(f"coarsest must be an integer >= 3, got {coarsest!r}")
        self.max_iter, self.tol, self.time_step, self.progress = int(max_iter), float(tol), float(time_step), bool(progress)
        self.multilevel, self.coarsest = bool(multilevel), int(coarsest)
        self._prepare_grid()

    def _clone_on(self, grid: torch.Tensor) -> "FiniteDifferenceSolver":
        return FiniteDifferenceSolver(self.problem, grid=grid, boundary=self.boundary, scheme=self.scheme,
                                      action_grid=self.action_grid, refinements=self.refinements,
                                      search_box=(self.low, self.high),
                                      max_iter=self.max_iter, tol=self.tol, time_step=self.time_step,
                                      progress=False, multilevel=self.multilevel, coarsest=self.coarsest)

    # -- grid geometry and boundary data ----------------------------------------------------------------
    def _prepare_grid(self):
        x = self.x
        d = x[1:] - x[:-1]
        n = x.numel()
        self.dxp = torch.empty(n, dtype=torch.float64)
        self.dxm = torch.empty(n, dtype=torch.float64)
        self.dxp[:-1], self.dxm[1:] = d, d
        self.dxp[-1], self.dxm[0] = d[-1], d[0]  # mirror nodes at the ends
        # Rate coefficients: up = s^2 cp + max(f, 0) ip, down = s^2 cm + max(-f, 0) im (upwind), and the
        # central drift f / (dx+ + dx-) = f ispan. Reflecting ends: no jump out of the grid; the diffusion sees
        # the mirror node x_{-1} = 2 x_0 - x_1 with V_{-1} = V_1, so its rate inwards doubles (V' = 0 for the
        # diffusion part), and the outward drift is dropped.
        span = self.dxp + self.dxm
        self.cp, self.cm = 1.0 / (self.dxp * span), 1.0 / (self.dxm * span)
        self.ip, self.im, self.ispan = 1.0 / self.dxp, 1.0 / self.dxm, 1.0 / span
        self.cp[0], self.cm[0], self.im[0] = 1.0 / d[0] ** 2, 0.0, 0.0
        self.cm[-1], self.cp[-1], self.ip[-1] = 1.0 / d[-1] ** 2, 0.0, 0.0
        self.inner = torch.ones(n, dtype=torch.bool)
        self.inner[0] = self.inner[-1] = False
        self.dirichlet = torch.zeros(n, dtype=torch.bool)
        self.g = torch.zeros(n, dtype=torch.float64)
        for idx, spec in ((0, self.boundary[0]), (n - 1, self.boundary[1])):
            if spec == "reflecting":
                continue
            self.dirichlet[idx] = True
            if callable(spec):
                val = spec(x[idx].reshape(1, 1))
                val = torch.as_tensor(val, dtype=torch.float64).reshape(-1)
                if val.numel() != 1 or not bool(torch.isfinite(val).all()):
                    raise ValueError("boundary callable must return one finite value per state, shape (B, 1)")
                self.g[idx] = val[0]
            else:
                self.g[idx] = float(spec)

    def _rates(self, idx: torch.Tensor, f: torch.Tensor, s2: torch.Tensor):
        """Jump rates up/down of the chain at nodes ``idx`` (N,) for drifts ``f`` and variances ``s2`` (N, ...)."""
        cp, cm, ip, im, isp, inner = (t[idx] for t in (self.cp, self.cm, self.ip, self.im, self.ispan, self.inner))
        while cp.ndim < f.ndim:
            cp, cm, ip, im, isp, inner = (t.unsqueeze(-1) for t in (cp, cm, ip, im, isp, inner))
        up = s2 * cp + f.clamp_min(0) * ip
        down = s2 * cm + (-f).clamp_min(0) * im
        if self.scheme == "hybrid":
            dxp, dxm = self.dxp[idx], self.dxm[idx]
            while dxp.ndim < f.ndim:
                dxp, dxm = dxp.unsqueeze(-1), dxm.unsqueeze(-1)
            s2e = s2 + self._extra_diffusion(f, s2, dxp, dxm)
            up = torch.where(inner, s2e * cp + f * isp, up)
            down = torch.where(inner, s2e * cm - f * isp, down)
        return up, down

    @staticmethod
    def _extra_diffusion(f, s2, dxp, dxm):
        """The least variance d >= 0 that keeps both central rates (s2 + d) c -+ f / (dx+ + dx-) non-negative:
        d = max(0, -f dx+ - s2, f dx- - s2); zero where diffusion dominates, |f| dx - s2 on an even grid otherwise
        (which is exactly the upwind scheme when s2 = 0)."""
        return torch.maximum(-f * dxp, f * dxm).sub(s2).clamp_min(0)

    def _model(self, x: torch.Tensor, a: torch.Tensor):
        """(N, 1), (N, k) -> drift (N,), variance s^2 (N,), reward (N,)."""
        p = self.problem
        f = p.drift(x, a).reshape(-1)
        S = p.diffusion(x, a)
        s2 = (S * S).sum(dim=(-2, -1)).reshape(-1)
        r = p.reward(x, a).reshape(-1)
        return f, s2, r

    # -- the maximisation over actions -------------------------------------------------------------------
    def _hamiltonian(self, idx, a, D):
        """h_i(a) = r(x_i, a) + up (V_{i+1} - V_i) + down (V_{i-1} - V_i) for candidate actions a (N, C, k).

        ``D`` holds the per-node difference quotients of V (from :meth:`_differences`), so that
        h = r + s^2 D2 + max(f, 0) Dp + max(-f, 0) Dm (upwind) or r + s^2 D2 + f Dc (central).
        """
        N, C, k = a.shape
        xs = self.x[idx].unsqueeze(1).expand(N, C).reshape(-1, 1)
        f, s2, r = self._model(xs, a.reshape(-1, k))
        f, s2, r = f.reshape(N, C), s2.reshape(N, C), r.reshape(N, C)
        D2, Dp, Dm, Dc = (t[idx].unsqueeze(1) for t in D)
        h = r + s2 * D2 + f.clamp_min(0) * Dp + (-f).clamp_min(0) * Dm
        if self.scheme == "hybrid":
            dxp, dxm, inner = (t[idx].unsqueeze(1) for t in (self.dxp, self.dxm, self.inner))
            central = r + (s2 + self._extra_diffusion(f, s2, dxp, dxm)) * D2 + f * Dc
            h = torch.where(inner, central, h)
        return h

    def _differences(self, V: torch.Tensor):
        """(n,) -> the per-node quotients (D2, Dp, Dm, Dc) that the discrete Hamiltonian needs."""
        n = V.numel()
        dVp = torch.zeros(n, dtype=torch.float64)
        dVm = torch.zeros(n, dtype=torch.float64)
        dVp[:-1] = V[1:] - V[:-1]
        dVm[1:] = V[:-1] - V[1:]
        return (self.cp * dVp + self.cm * dVm, self.ip * dVp, self.im * dVm, self.ispan * (dVp - dVm))

    def _argmax(self, idx, D, low, high):
        """max_a h_i(a) over the box [low, high] (k,) at nodes idx; returns (a (N, k), h (N,)).

        A tensor grid of ``action_grid`` points per coordinate, then ``refinements`` steps of a pattern search
        started at the best grid point with the grid spacing s: try best + s * {-1, 0, 1}^k (clipped to the
        box), move to the best of them, and halve s at the nodes where no move improved h.
        """
        k = low.numel()
        N = idx.numel()
        G = self.action_grid
        unit = torch.linspace(0.0, 1.0, G, dtype=torch.float64)
        mesh = torch.stack(torch.meshgrid(*([unit] * k), indexing="ij"), dim=-1).reshape(-1, k)  # (C, k)
        cand = low + (high - low) * mesh  # (C, k)
        h = self._hamiltonian(idx, cand.unsqueeze(0).expand(N, -1, -1), D)
        j = h.argmax(dim=1)
        best_h = h.gather(1, j.unsqueeze(1)).squeeze(1)
        best_a = cand[j]
        step = ((high - low) / (G - 1)).expand(N, k).clone()
        pattern = torch.stack(torch.meshgrid(*([torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)] * k),
                                             indexing="ij"), dim=-1).reshape(-1, k)[:-1]  # every move but 0
        for _ in range(self.refinements):
            cand = best_a.unsqueeze(1) + step.unsqueeze(1) * pattern.unsqueeze(0)  # (N, 3^k - 1, k)
            cand = torch.maximum(torch.minimum(cand, high), low)
            h = self._hamiltonian(idx, cand, D)
            j = h.argmax(dim=1)
            hj = h.gather(1, j.unsqueeze(1)).squeeze(1)
            moved = hj > best_h
            best_a = torch.where(moved.unsqueeze(1), cand[torch.arange(N), j], best_a)
            best_h = torch.where(moved, hj, best_h)
            step = torch.where(moved.unsqueeze(1), step, 0.5 * step)
        return best_a, best_h

    def improve(self, V: torch.Tensor, a_prev: torch.Tensor | None = None, chunk: int = 1 << 19):
        """(n,) -> actions (n, k), discrete Hamiltonian (n,): the greedy policy for the grid values V.

        Where the previous policy ``a_prev`` (n, k) does at least as well as the searched maximiser it is kept,
        so each policy-iteration step improves the value (the search is not exact) and the loop cannot cycle.
        The search starts from the solver's box ``(low, high)``, which is not changed (a grown box is local).
        """
        a, h, _, _ = self._improve(V, a_prev, self.low, self.high, chunk)
        return a, h

    def _improve(self, V, a_prev, low, high, chunk: int = 1 << 19):
        """:meth:`improve` from the search box (low, high); also returns the box, grown where a maximiser hit
        an artificial edge."""
        n = V.numel()
        D = self._differences(V)
        k = self.problem.action_dim
        C = self.action_grid ** k
        per = max(1, chunk // C)
        for _ in range(60):
            a = torch.empty(n, k, dtype=torch.float64)
            h = torch.empty(n, dtype=torch.float64)
            for s in range(0, n, per):
                idx = torch.arange(s, min(n, s + per))
                a[idx], h[idx] = self._argmax(idx, D, low, high)
            # A maximiser on an artificial edge of the search box means the box was too small: double it.
            tol = 1e-6 * (high - low)
            at_lo = ((a - low).abs() <= tol).any(0) & ~self._hard_low
            at_hi = ((high - a).abs() <= tol).any(0) & ~self._hard_high
            if not bool(at_lo.any() or at_hi.any()):
                if a_prev is not None:
                    idx = torch.arange(n)
                    h_prev = self._hamiltonian(idx, a_prev.unsqueeze(1), D).squeeze(1)
                    keep = h_prev >= h
                    a = torch.where(keep.unsqueeze(1), a_prev, a)
                    h = torch.where(keep, h_prev, h)
                return a, h, low, high
            width = high - low
            low = torch.where(at_lo, low - width, low)
            high = torch.where(at_hi, high + width, high)
        raise ValueError("the discrete Hamiltonian seems unbounded in the action: the maximiser ran off every "
                         f"search box up to [{low.tolist()}, {high.tolist()}]; check the problem's reward")

    # -- policy evaluation: one sparse tridiagonal solve ----------------------------------------------------
    def _operator(self, a: torch.Tensor):
        """(n, k) -> the generator's diagonals (up (n,), down (n,)) and the reward (n,) of the policy a."""
        idx = torch.arange(self.x.numel())
        f, s2, r = self._model(self.x.unsqueeze(1), a)
        up, down = self._rates(idx, f, s2)
        up = torch.where(self.dirichlet, torch.zeros_like(up), up)
        down = torch.where(self.dirichlet, torch.zeros_like(down), down)
        r = torch.where(self.dirichlet, self.problem.rho * self.g, r)
        return up, down, r

    def evaluate(self, a: torch.Tensor, V_old: torch.Tensor | None = None) -> torch.Tensor:
        """(n, k) -> (n,): the grid value of the policy a, solving ((rho + 1/Delta) I - A(a)) V = r + V_old/Delta."""
        up, down, r = self._operator(a)
        inv_dt = 0.0 if math.isinf(self.time_step) else 1.0 / self.time_step
        diag = (self.problem.rho + inv_dt + up + down).numpy()
        M = scipy.sparse.diags([-down[1:].numpy(), diag, -up[:-1].numpy()], [-1, 0, 1], format="csc")
        rhs = r.numpy().copy()
        if inv_dt and V_old is not None:
            rhs = rhs + inv_dt * V_old.numpy()
        return torch.from_numpy(scipy.sparse.linalg.spsolve(M, rhs))

    def solve(self) -> FiniteDifferenceSolution:
        """Policy iteration on the grid until sup |V_new - V_old| <= tol * max(1, sup |V|).

        Repeatable: the search box grows during a solve (``info["search_box"]`` is where it ended) but the
        solver keeps its own, so a second ``solve()`` gives the same result."""
        import time

        t0 = time.perf_counter()
        low, high = self.low, self.high
        n = self.x.numel()
        hist = History()
        V = torch.where(self.dirichlet, self.g, torch.zeros(n, dtype=torch.float64))
        coarse_iterations = 0
        a_old = None
        if self.multilevel and n > self.coarsest:
            # Nested iteration: solve on every other node first and start from its interpolated value. Policy
            # iteration moves information about one node per step where the policy must change sign (e.g. a
            # minimum-time problem started from V = 0), so a good start saves most of the fine-grid steps.
            idx = list(range(0, n, 2))
            if idx[-1] != n - 1:
                idx.append(n - 1)
            coarse = self._clone_on(self.x[idx])
            csol = coarse.solve()
            coarse_iterations = csol.iterations + csol.info.get("coarse_iterations", 0)
            V = torch.from_numpy(np.interp(self.x.numpy(), csol.x.numpy(), csol.V.numpy()))
            V = torch.where(self.dirichlet, self.g, V)
            a_old = torch.from_numpy(np.stack([np.interp(self.x.numpy(), csol.x.numpy(), csol.a[:, j].numpy())
                                               for j in range(csol.a.shape[1])], axis=1))
            c_low, c_high = (torch.as_tensor(b, dtype=torch.float64) for b in csol.info["search_box"])
            low, high = torch.minimum(low, c_low), torch.maximum(high, c_high)
        converged = False
        it = 0
        for it in _progress(range(1, self.max_iter + 1), desc="finite differences", enabled=self.progress):
            a, _, low, high = self._improve(V, a_old, low, high)
            V_new = self.evaluate(a, V)
            check_finite(V_new, "the grid value V", it)
            change = float((V_new - V).abs().max())
            pchange = math.nan if a_old is None else float((a - a_old).abs().max())
            hist.log(it, change=change, policy_change=pchange)
            V, a_old = V_new, a
            if change <= self.tol * max(1.0, float(V.abs().max())):
                converged = True
                break
        a, h, low, high = self._improve(V, a_old, low, high)
        rho = self.problem.rho
        res = (rho * V - h).abs()
        residual = float(res[~self.dirichlet].max())
        return FiniteDifferenceSolution(x=self.x.clone(), V=V, a=a, iterations=it, converged=converged,
                                        residual=residual, history=hist, seconds=time.perf_counter() - t0,
                                        info={"scheme": self.scheme, "boundary": self.boundary,
                                              "coarse_iterations": coarse_iterations,
                                              "search_box": (low.tolist(), high.tolist())})
