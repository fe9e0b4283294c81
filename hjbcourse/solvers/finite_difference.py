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
The discrete Hamiltonian h_i(a) = r(x_i, a) + [A(a) V]_i is evaluated at every node, for all nodes at once, on
a tensor grid of actions, then improved by a pattern search (:meth:`FiniteDifferenceSolver._argmax`), which
needs no derivative, so the kink of h_i where the drift changes sign does no harm. Where the previous policy
does at least as well it is kept, so every step of policy iteration improves the value even though the search
is not exact. Infinite action bounds are searched
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

The numerical settings are a :class:`FiniteDifferenceConfig`; the solver has the one shape of
:mod:`hjbcourse.solvers.base` (``.step()`` is one policy-iteration step on the grid).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .._checks import _positive_int, _real, real
from ..problems import ControlProblem
from ..training import History, SolverConfig, check_finite
from .base import IterativeSolver

__all__ = ["FiniteDifferenceConfig", "FiniteDifferenceSolver", "FiniteDifferenceSolution", "fit_quadratic_value"]


def _int_at_least(name: str, v, minimum: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return int(v)


def _search_box(box):
    """(low, high), each a number or one per action coordinate, as plain floats (a float or a tuple of them)."""
    try:
        lo, hi = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)
                  for v in box)
        ok = lo.size > 0 and hi.size > 0 and bool(np.all(lo < hi) and np.isfinite(lo).all() and np.isfinite(hi).all())
    except (TypeError, ValueError) as e:
        raise ValueError(f"search_box must be a pair (low, high) of numbers or arrays, got {box!r}") from e
    if not ok:
        raise ValueError(f"search_box must be finite with low < high, got {box!r}")
    return tuple(float(v[0]) if v.size == 1 else tuple(v.tolist()) for v in (lo, hi))


@dataclass(frozen=True)
class FiniteDifferenceConfig(SolverConfig):
    """The numerical settings of :class:`FiniteDifferenceSolver` (the interval or grid and the boundary values
    are the problem's data: arguments of the solver). Presets: ``"quick"`` (the defaults), ``"full"`` (n = 4001).

    ``n`` nodes of an even grid; ``scheme``: ``"upwind"`` or ``"hybrid"``; ``action_grid`` points per action
    coordinate (None: 21, 11 or 7 for 1, 2 or more), ``refinements`` pattern-search steps and ``search_box``
    (low, high), numbers or one per coordinate (None: +-10), searched where an action bound is infinite; at most
    ``iterations`` policy-iteration steps on the finest grid, stopped once sup |V_new - V_old| <= ``tol``
    max(1, sup |V|); ``time_step``: the implicit step Delta (math.inf: pure policy iteration); ``multilevel``:
    nested iteration from ``coarsest`` nodes. The solve runs in float64 on the CPU whatever ``device``; ``seed``
    is unused (the solver is deterministic).
    """

    n: int = 2001
    scheme: str = "upwind"
    action_grid: int | None = None
    refinements: int = 30
    search_box: tuple | None = None
    iterations: int = 200
    tol: float = 1e-10
    time_step: float = math.inf
    multilevel: bool = True
    coarsest: int = 101
    dtype: str = "float64"
    progress: bool = False

    PRESETS: ClassVar[dict] = {"quick": {}, "full": {"n": 4001}}

    def __post_init__(self):
        super().__post_init__()
        if self.dtype != "float64":
            raise ValueError(f"dtype must be 'float64' (the grid is solved in float64), got {self.dtype!r}")
        if self.scheme not in ("upwind", "hybrid"):
            raise ValueError(f"scheme must be 'upwind' or 'hybrid', got {self.scheme!r}")
        ints = {"n": _int_at_least("n", self.n, 3, "an integer >= 3"),
                "refinements": _int_at_least("refinements", self.refinements, 0, "a non-negative integer"),
                "iterations": _positive_int("iterations", self.iterations),
                "coarsest": _int_at_least("coarsest", self.coarsest, 3, "an integer >= 3")}
        if self.action_grid is not None:
            ints["action_grid"] = _int_at_least("action_grid", self.action_grid, 3, "an integer >= 3")
        real("tol", self.tol, positive=True)
        if not (_real(self.time_step) and self.time_step > 0):
            raise ValueError(f"time_step must be positive (math.inf for pure policy iteration), got {self.time_step!r}")
        if not isinstance(self.multilevel, bool):
            raise ValueError(f"multilevel must be True or False, got {self.multilevel!r}")
        plain = dict(ints, tol=float(self.tol), time_step=float(self.time_step))
        if self.search_box is not None:
            plain["search_box"] = _search_box(self.search_box)
        for name, value in plain.items():  # plain Python values: a checkpoint holds them with weights_only=True
            object.__setattr__(self, name, value)


def _configure(config, options: dict) -> FiniteDifferenceConfig:
    """``config`` (default: the quick preset) with the keyword ``options`` applied; ``max_iter`` is the old
    name of ``iterations``, and ``multilevel`` and ``progress`` take any truth value, as they always did."""
    if config is not None and not isinstance(config, FiniteDifferenceConfig):
        hint = "; the interval is a keyword: domain=(lo, hi)" if isinstance(config, (tuple, list)) else ""
        raise ValueError(f"config must be a FiniteDifferenceConfig, got {type(config).__name__}{hint}")
    options = dict(options)
    if "max_iter" in options:
        if "iterations" in options:
            raise ValueError("give iterations or its old name max_iter, not both")
        options["iterations"] = _positive_int("max_iter", options.pop("max_iter"))
    options.update({name: bool(options[name]) for name in ("multilevel", "progress") if name in options})
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(FiniteDifferenceConfig)})
    if unknown:
        raise TypeError(f"FiniteDifferenceSolver() got unexpected keyword argument(s) {unknown}")
    config = FiniteDifferenceConfig.preset("quick") if config is None else config
    return config.replace(**options) if options else config


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
    ``history`` has one row per step (``change``: sup |V_new - V_old|; ``policy_change``: sup |a_new - a_old|;
    ``seconds`` so far).
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


def _boundary_spec(spec):
    bad = ValueError(f"boundary must be 'reflecting', a number or a callable, got {spec!r}")
    if isinstance(spec, (str, bool)):
        if spec == "reflecting":
            return spec
        raise bad
    if callable(spec):
        return spec
    try:
        v = float(spec)
    except (TypeError, ValueError) as e:
        raise bad from e
    if not math.isfinite(v):
        raise ValueError(f"boundary must be finite, got {spec!r}")
    return v


def _boundaries(boundary) -> tuple:
    """One boundary spec for both ends, or a pair (left, right), checked: a pair of specs."""
    pair = boundary if isinstance(boundary, (tuple, list)) else (boundary, boundary)
    if len(pair) != 2:
        raise ValueError(f"boundary must be one spec or a pair (left, right), got {boundary!r}")
    return tuple(_boundary_spec(b) for b in pair)


def _nodes(problem, domain, grid, n: int) -> torch.Tensor:
    """The grid: ``grid`` when given (checked), else ``n`` even nodes on ``domain`` (default: the problem's)."""
    if grid is not None:
        g = np.asarray(grid.detach().cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.float64).reshape(-1)
        if g.size < 3 or not np.all(np.isfinite(g)) or not np.all(np.diff(g) > 0):
            raise ValueError("grid must be a finite, strictly increasing 1-D array of at least 3 nodes")
        return torch.from_numpy(g.copy())
    if domain is None:
        domain = (float(problem.domain[0][0]), float(problem.domain[1][0]))
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError) as e:
        raise ValueError(f"domain must be a pair (lo, hi) of numbers, got {domain!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"domain must be a finite interval with lo < hi, got {domain!r}")
    return torch.linspace(lo, hi, int(n), dtype=torch.float64)


def _action_box(problem, search_box):
    """The box searched for actions (low (k,), high (k,)) and which of its sides are real bounds: infinite
    bounds are replaced by ``search_box`` (default +-10), which may grow during a solve."""
    k = problem.action_dim
    if search_box is None:
        sl, sh = torch.full((k,), -10.0, dtype=torch.float64), torch.full((k,), 10.0, dtype=torch.float64)
    else:
        try:
            sl, sh = (torch.tensor(v, dtype=torch.float64).reshape(-1).expand(k).clone() for v in search_box)
        except RuntimeError as e:
            raise ValueError(f"search_box must be a pair (low, high) of numbers or length-{k} arrays, "
                             f"got {search_box!r}") from e
    low, high = problem.action_low.clone(), problem.action_high.clone()
    hard_low, hard_high = torch.isfinite(low), torch.isfinite(high)
    low = torch.where(hard_low, low, torch.minimum(sl, high - 1.0))
    high = torch.where(hard_high, high, torch.maximum(sh, low + 1.0))
    return low, high, hard_low, hard_high


class FiniteDifferenceSolver(IterativeSolver):
    """Monotone implicit finite differences with policy iteration for a 1-D discounted HJB (see module doc).

    ``FiniteDifferenceSolver(problem, config=None, *, domain=None, grid=None, boundary="reflecting",
    **options).solve()`` returns a :class:`FiniteDifferenceSolution`. ``problem``: a ControlProblem with
    ``state_dim == 1``; ``config``: a :class:`FiniteDifferenceConfig` (default: the quick preset), whose fields
    keyword ``options`` override (``n=2001``, ``scheme="hybrid"``, ...; ``max_iter`` is ``iterations``).
    The problem's data: ``domain`` (default: the problem's), cut into ``n`` even nodes, or ``grid``, strictly
    increasing nodes; ``boundary``: ``"reflecting"``, a number or a callable (B, 1) -> (B, 1), or a pair
    (left, right) of those (a checkpoint keeps all but a callable: give it again, ``load(..., boundary=g)``).
    """

    Config = FiniteDifferenceConfig
    guarded = ("change",)
    shown = ("change",)

    def __init__(self, problem: ControlProblem, config: FiniteDifferenceConfig | None = None, *, domain=None,
                 grid=None, boundary="reflecting", **options):
        if not isinstance(problem, ControlProblem):
            raise ValueError(f"problem must be a ControlProblem, got {type(problem).__name__}")
        if problem.state_dim != 1:
            raise ValueError(f"problem must be one-dimensional (state_dim == 1), got state_dim={problem.state_dim}")
        config = self._init_run(_configure(config, options))
        self.problem = problem
        self.x = _nodes(problem, domain, grid, config.n)
        self.boundary = _boundaries(boundary)
        self.scheme, self.refinements, k = config.scheme, config.refinements, problem.action_dim
        self.action_grid = config.action_grid or (21 if k == 1 else (11 if k == 2 else 7))
        self.low, self.high, self._hard_low, self._hard_high = _action_box(problem, config.search_box)
        self._prepare_grid()
        # the run: grid values and policy (None before the first step), the search box as it grew, coarse steps
        self._V, self._a, self._low, self._high, self._coarse_iterations = None, None, self.low, self.high, 0

    # -- the run: policy iteration on the grid, one step at a time ----------------------------------------
    def _start(self) -> None:
        """The first iterate: the boundary values and 0, or the interpolated solution on every other node."""
        n = self.x.numel()
        self._V = torch.where(self.dirichlet, self.g, torch.zeros(n, dtype=torch.float64))
        if not (self.config.multilevel and n > self.config.coarsest):
            return
        idx = list(range(0, n, 2))
        if idx[-1] != n - 1:
            idx.append(n - 1)
        coarse = self.config.replace(search_box=(self.low, self.high), progress=False)
        csol = FiniteDifferenceSolver(self.problem, coarse, grid=self.x[idx], boundary=self.boundary).solve()
        self._coarse_iterations = csol.iterations + csol.info.get("coarse_iterations", 0)
        V = torch.from_numpy(np.interp(self.x.numpy(), csol.x.numpy(), csol.V.numpy()))
        self._V = torch.where(self.dirichlet, self.g, V)
        self._a = torch.from_numpy(np.stack([np.interp(self.x.numpy(), csol.x.numpy(), csol.a[:, j].numpy())
                                             for j in range(csol.a.shape[1])], axis=1))
        c_low, c_high = (torch.as_tensor(b, dtype=torch.float64) for b in csol.info["search_box"])
        self._low, self._high = torch.minimum(self._low, c_low), torch.maximum(self._high, c_high)

    def _step(self, it: int) -> dict[str, float]:
        """One step of policy iteration: improve the policy for the current V, then evaluate it."""
        if self._V is None:
            self._start()
        a, _, self._low, self._high = self._improve(self._V, self._a, self._low, self._high)
        V_new = self.evaluate(a, self._V)
        check_finite(V_new, "the grid value V", it)
        change = float((V_new - self._V).abs().max())
        pchange = math.nan if self._a is None else float((a - self._a).abs().max())
        self._V, self._a = V_new, a
        return {"change": change, "policy_change": pchange}

    def _converged(self, row: dict[str, float], it: int) -> bool:
        return row["change"] <= self.config.tol * max(1.0, float(self._V.abs().max()))

    def solution(self) -> FiniteDifferenceSolution:
        """The solution so far: V, its greedy policy and the discrete HJB residual. The search box grows during a
        run (``info["search_box"]``) but the solver keeps its own: a second ``solve()`` gives the same."""
        t0 = time.perf_counter()
        if self._V is None:
            self._start()
        a, h, low, high = self._improve(self._V, self._a, self._low, self._high)
        residual = float((self.problem.rho * self._V - h).abs()[~self.dirichlet].max())
        history = History()
        history.rows = [dict(r) for r in self.history.rows]
        return FiniteDifferenceSolution(x=self.x.clone(), V=self._V, a=a, iterations=self.iteration,
                                        converged=self.converged, residual=residual, history=history,
                                        seconds=self.seconds + time.perf_counter() - t0,
                                        info={"scheme": self.scheme, "boundary": self.boundary,
                                              "coarse_iterations": self._coarse_iterations,
                                              "search_box": (low.tolist(), high.tolist())})

    def _state(self) -> dict:
        ends = [b if isinstance(b, (str, float)) else "callable" for b in self.boundary]
        return {"x": self.x, "boundary": ends, "V": self._V, "a": self._a, "low": self._low, "high": self._high,
                "coarse_iterations": self._coarse_iterations}

    def _load_state(self, state: dict) -> None:
        saved = tuple(state["boundary"])
        if any(s == "callable" and not callable(b) for s, b in zip(saved, self.boundary)):
            raise ValueError("the checkpoint's boundary value was a callable, which a checkpoint does not hold: "
                             "give it again, FiniteDifferenceSolver.load(path, problem, boundary=...)")
        self.boundary = tuple(b if s == "callable" else s for s, b in zip(saved, self.boundary))
        self.x = state["x"].to(torch.float64)
        self._prepare_grid()
        self._V, self._a, self._low, self._high = state["V"], state["a"], state["low"], state["high"]
        self._coarse_iterations = int(state["coarse_iterations"])

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
        f, S, r = self.problem.drift(x, a), self.problem.diffusion(x, a), self.problem.reward(x, a)
        return f.reshape(-1), (S * S).sum(dim=(-2, -1)).reshape(-1), r.reshape(-1)

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
        inv_dt = 0.0 if math.isinf(self.config.time_step) else 1.0 / self.config.time_step
        diag = (self.problem.rho + inv_dt + up + down).numpy()
        import scipy.sparse  # loaded on first use, like every scipy module of the package
        import scipy.sparse.linalg

        M = scipy.sparse.diags([-down[1:].numpy(), diag, -up[:-1].numpy()], [-1, 0, 1], format="csc")
        rhs = r.numpy().copy()
        if inv_dt and V_old is not None:
            rhs = rhs + inv_dt * V_old.numpy()
        return torch.from_numpy(scipy.sparse.linalg.spsolve(M, rhs))
