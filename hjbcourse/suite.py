"""The problem suite on which the solvers are measured (DESIGN.md, "How accuracy is measured").

:func:`problem_suite` draws it from a seed: LQRs in 1, 2, 5 and 10 dimensions (stable and unstable open
loops, 1 to d actions, coupled drift, full noise, non-diagonal R, rho in [0.02, 1]), Merton problems over
gamma in {0.5, 0.8, 2, 3, 5}, scalar LQ problems with state-dependent noise (closed form), and two 1-D
problems without a closed form (a saturating action, a double well) whose reference is the finite-difference
solution on a fine grid. Every entry's :meth:`SuiteEntry.reference` scores a solution with
``score(solution, x)``, like a closed form, and :meth:`SuiteEntry.states` are the states it is scored on.
Shared by the tests and ``benchmarks/policy_iteration.py --suite``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .exact import ReferenceSolution
from .problems import ControlProblem, DoubleWell, Merton, SaturatedLQ, StateNoiseLQ, StochasticLQR
from .solvers.finite_difference import FiniteDifferenceSolver
from .solvers.policy_iteration import evaluation_states

__all__ = ["SuiteEntry", "problem_suite", "SUITE_FAMILIES", "finite_difference_reference"]

SUITE_FAMILIES = ("lqr", "merton", "state_noise", "no_closed_form")
_LQR_ACTIONS = {1: (1, 1, 1, 1), 2: (1, 2, 2, 1), 5: (1, 5, 3, 2), 10: (10, 3, 5, 1)}
_MERTON_GAMMAS = (0.5, 0.8, 2.0, 3.0, 5.0, 0.5, 2.0, 5.0)


def finite_difference_reference(problem: ControlProblem, widen: float = 3.0, n: int = 4001) -> ReferenceSolution:
    """The reference of a 1-D problem without closed form: the hybrid finite-difference solution on the
    problem's domain widened ``widen`` times about its centre (reflecting ends, far from where it is read),
    ``n`` nodes. On the suite's state-noise LQ problem it is within 0.03% of the closed form (value and policy)."""
    lo, hi = (float(t[0]) for t in problem.domain)
    c, h = (lo + hi) / 2, widen * (hi - lo) / 2
    fd = FiniteDifferenceSolver(problem, domain=(c - h, c + h), n=n, scheme="hybrid").solve()
    return ReferenceSolution(fd, source=f"finite differences, n={n} on [{c - h:g}, {c + h:g}]")


@dataclass
class SuiteEntry:
    """One problem of the suite: ``name``, ``family`` (one of :data:`SUITE_FAMILIES`), ``problem``, and its
    reference (:meth:`reference`: the closed form, or a finite-difference solution, computed once)."""

    name: str
    family: str
    problem: ControlProblem
    _reference: object = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return self.problem.state_dim

    def reference(self):
        """An object with ``value``, ``policy`` and ``score(solution, x)``."""
        if self._reference is None:
            self._reference = (finite_difference_reference(self.problem) if self.family == "no_closed_form"
                               else self.problem.exact())
        return self._reference

    def states(self, n: int = 2048) -> torch.Tensor:
        """(n, d) float64: the states the entry is scored on (the solver's evaluation states: an even grid of
        the domain in 1-D, otherwise the problem's sampler with a fixed seed)."""
        return evaluation_states(self.problem, n, dtype=torch.float64)

    def score(self, solution, n: int = 2048) -> dict[str, float]:
        return self.reference().score(solution, self.states(n))


def _spd(rng, n: int, scale: float, floor: float) -> np.ndarray:
    M = rng.standard_normal((n, n))
    return scale * (M @ M.T) / n + floor * np.eye(n)


def _lqr(rng, d: int, k: int, unstable: bool) -> StochasticLQR:
    """A random LQR: coupled drift whose rightmost eigenvalue is moved to -U(0.2, 0.6) (stable) or
    +U(0.05, 0.3) (unstable), a random B (d, k), Q and R symmetric positive definite (R non-diagonal for
    k > 1), full noise D = 0.3 (I + 0.3 G / sqrt(d)), rho log-uniform on [0.02, 1]. Draws whose Riccati
    solution is ill-conditioned (largest eigenvalue of P above 20) are drawn again."""
    while True:
        G = rng.standard_normal((d, d)) / np.sqrt(d)
        top = float(np.linalg.eigvals(G).real.max())
        shift = rng.uniform(0.05, 0.3) if unstable else -rng.uniform(0.2, 0.6)
        A = G - (top - shift) * np.eye(d)
        B = rng.standard_normal((d, k)) / np.sqrt(k)
        Q = _spd(rng, d, 0.5, 0.5)
        R = _spd(rng, k, 0.1, 0.1) if k > 1 else np.array([[rng.uniform(0.1, 0.5)]])
        D = 0.3 * (np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d))
        rho = float(np.exp(rng.uniform(np.log(0.02), np.log(1.0))))
        try:
            p = StochasticLQR(A, B, Q, R, D, rho)
            if float(np.linalg.eigvalsh(p.exact().P.numpy()).max()) <= 20:
                return p
        except ValueError:
            pass


def _merton(rng, gamma: float) -> Merton:
    """A feasible Merton problem with risk aversion ``gamma``: r ~ U(0, 0.04), mu - r ~ U(0.02, 0.08),
    sigma ~ U(0.15, 0.35), rho ~ U(0.02, 0.1), drawn again until pi* lies in [-0.5, 2.5] and k* in
    [0.01, 0.5] (inside the action box, away from its edges)."""
    while True:
        r, ex, sigma, rho = rng.uniform(0, 0.04), rng.uniform(0.02, 0.08), rng.uniform(0.15, 0.35), rng.uniform(0.02, 0.1)
        M = r + ex ** 2 / (2 * gamma * sigma ** 2)
        pi, k = ex / (gamma * sigma ** 2), (rho - (1 - gamma) * M) / gamma
        if -0.5 <= pi <= 2.5 and 0.01 <= k <= 0.5:
            return Merton(r=r, mu=r + ex, sigma=sigma, gamma=gamma, rho=rho)


def _state_noise(rng) -> StateNoiseLQ:
    return StateNoiseLQ(alpha=rng.uniform(-0.5, 0.2), beta=rng.uniform(0.5, 1.5), q=rng.uniform(0.5, 2.0),
                        r_a=rng.uniform(0.05, 0.5), s0=rng.uniform(0.1, 0.4), s1=rng.uniform(-0.3, 0.3),
                        rho=float(np.exp(rng.uniform(np.log(0.05), np.log(0.5)))))


def problem_suite(seed: int = 0, families=None, names=None) -> list[SuiteEntry]:
    """The suite drawn from ``seed`` (the same seed, the same problems): 16 LQRs (``lqr-<d>d-<k>a-stable``
    or ``-unstable``, numbered), 8 Merton problems, 2 state-noise LQ problems, and the saturating and
    double-well problems (fixed parameters). ``families`` or ``names`` keep a subset."""
    rng = np.random.default_rng(seed)
    out: list[SuiteEntry] = []
    for d, ks in _LQR_ACTIONS.items():
        for j, k in enumerate(ks):
            kind = "unstable" if j % 2 else "stable"
            out.append(SuiteEntry(f"lqr{len(out)}-{d}d-{k}a-{kind}", "lqr", _lqr(rng, d, k, j % 2 == 1)))
    for i, gamma in enumerate(_MERTON_GAMMAS):
        out.append(SuiteEntry(f"merton{i}-gamma{gamma:g}", "merton", _merton(rng, gamma)))
    for i in range(2):
        out.append(SuiteEntry(f"state_noise{i}", "state_noise", _state_noise(rng)))
    out.append(SuiteEntry("saturated", "no_closed_form", SaturatedLQ()))
    out.append(SuiteEntry("double_well", "no_closed_form", DoubleWell()))
    if families is not None:
        unknown = set(families) - set(SUITE_FAMILIES)
        if unknown:
            raise ValueError(f"families must be among {SUITE_FAMILIES}, got {sorted(unknown)}")
        out = [e for e in out if e.family in families]
    if names is not None:
        known = {e.name for e in out}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"no suite problem named {missing}; the suite has {sorted(known)}")
        out = [e for e in out if e.name in names]
    return out
