"""Closed-form solutions: the discounted Riccati solution of the stochastic LQR, Merton's constants, the
finite-horizon Riccati ODE and the minimum-time value.

Each solution object has ``value(x)`` (B, d) -> (B, 1) and ``policy(x)`` (B, d) -> (B, k), and scores any
solution against itself with ``score(solution, x)`` -> dict of errors: the errors every closed form shares
(:func:`score_value_policy`) plus those of its own constants (an LQR's P and K, Merton's pi and k). A
diagnostic or a solver asks the closed form, never the problem's type, so a new closed form needs no edit
elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import floating_tensor, inside
from .metrics import fit_linear_gain, fit_quadratic_form, relative_error, relative_l2, relative_sup

__all__ = ["QuadraticSolution", "LQRSolution", "MertonSolution", "NoClosedForm", "score_value_policy", "solve_lqr", "solve_merton",
           "riccati_residual", "FiniteHorizonLQRSolution",
           "MinimumTimeSolution", "StateNoiseLQSolution", "solve_state_noise_lq", "ReferenceSolution"]


def riccati_residual(A, B, Q, R, P, rho) -> np.ndarray:
    """The discounted algebraic Riccati residual
    (A - rho/2 I)' P + P (A - rho/2 I) - P B R^{-1} B' P + Q (zero at the solution)."""
    A, B, Q, R, P = (np.asarray(M, dtype=np.float64) for M in (A, B, Q, R, P))
    As = A - 0.5 * rho * np.eye(A.shape[0])
    return As.T @ P + P @ As - P @ B @ np.linalg.solve(R, B.T @ P) + Q


def _evaluate(exact, solution, x: torch.Tensor):
    """(v, v*, a, a*) on ``x``: the solution's and the closed form's value and policy, each evaluated once."""
    with torch.no_grad():
        return solution.value(x), exact.value(x), solution.policy(x), exact.policy(x)


def _value_policy_errors(v, v_star, a, a_star) -> dict[str, float]:
    out = {
        "value_rel_l2": relative_l2(v, v_star),
        "value_rel_sup": relative_sup(v, v_star),
        "policy_rel_l2": relative_l2(a, a_star),
    }
    if a.shape[1] > 1:
        for j in range(a.shape[1]):
            out[f"policy_rel_l2_{j}"] = relative_l2(a[:, j], a_star[:, j])
    return out


def score_value_policy(exact, solution, x: torch.Tensor) -> dict[str, float]:
    """The errors every closed form reports on the points ``x`` (B, d): ``value_rel_l2``, ``value_rel_sup``,
    ``policy_rel_l2`` and, for several action coordinates, ``policy_rel_l2_<j>``; a closed form's ``score`` adds
    the errors of its own constants."""
    return _value_policy_errors(*_evaluate(exact, solution, x))


def _finite(scores: dict[str, float]) -> dict[str, float]:
    for k, v in scores.items():
        if not math.isfinite(v):
            raise ValueError(f"the error {k} is not finite: the solution returns NaN or inf on x")
    return scores


@dataclass(frozen=True)
class QuadraticSolution:
    """A quadratic value and a linear feedback: V(x) = -1/2 x'Px - c and a(x) = -K x (the LQR's shape, in
    continuous time here and with a time step in :mod:`hjbcourse.discrete`)."""

    P: torch.Tensor
    K: torch.Tensor
    c: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1)."""
        P = self.P.to(x)
        return -0.5 * ((x @ P) * x).sum(-1, keepdim=True) - self.c

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k)."""
        return -x @ self.K.to(x).T

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad V = -P x."""
        return -x @ self.P.to(x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d, d): Hess V = -P at every state."""
        return (-self.P.to(x)).expand(x.shape[0], -1, -1)

    def score(self, solution, x: torch.Tensor) -> dict[str, float]:
        """Errors of ``solution`` on ``x`` (B, d): those of :func:`score_value_policy`, plus ``P_rel`` and
        ``K_rel``, the relative Frobenius errors of the P and K read off the solution by least squares over
        ``x`` (when ``x`` holds more points than a quadratic in d has coefficients)."""
        v, v_star, a, a_star = _evaluate(self, solution, x)
        out = _value_policy_errors(v, v_star, a, a_star)
        d = x.shape[1]
        if x.shape[0] > (d + 1) * (d + 2) // 2:     # the fits read the values already computed
            P, _, _ = fit_quadratic_form(lambda _: v, x)
            K, _ = fit_linear_gain(lambda _: a, x)
            out["P_rel"] = relative_error(P, self.P)
            out["K_rel"] = relative_error(K, self.K)
        return _finite(out)


@dataclass(frozen=True)
class LQRSolution(QuadraticSolution):
    """V(x) = -1/2 x'Px - c and a*(x) = -K x, with K = R^{-1} B'P and c = Tr(D D' P) / (2 rho)."""

    rho: float


def solve_lqr(problem) -> LQRSolution:
    """Solve the discounted Riccati equation of a :class:`~hjbcourse.StochasticLQR` (scipy's CARE on A - rho/2 I)."""
    A, B, Q, R, D = (M.numpy() for M in (problem.A, problem.B, problem.Q, problem.R, problem.D))
    rho = problem.rho
    As = A - 0.5 * rho * np.eye(A.shape[0])
    import scipy.linalg  # loaded on first use, to keep `import hjbcourse` light

    cond_R = np.linalg.cond(R)
    if not cond_R < 1e12:
        raise ValueError(f"R is too ill-conditioned for an accurate Riccati solution (condition number {cond_R:.3g} "
                         f">= 1e12), got R = {R.tolist()}")
    try:
        with np.errstate(all="ignore"):
            P = scipy.linalg.solve_continuous_are(As, B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as e:
        raise ValueError(f"the discounted Riccati equation has no stabilising solution for these A, B, Q, R: {e}") from e
    P = 0.5 * (P + P.T)
    _check_riccati(As, B, Q, R, P)
    K = np.linalg.solve(R, B.T @ P)
    c = float(np.trace(D @ D.T @ P)) / (2 * rho)
    return LQRSolution(P=torch.from_numpy(P), K=torch.from_numpy(K), c=c, rho=rho)


def _check_riccati(As, B, Q, R, P, tol: float = 1e-8) -> None:
    """Refuse a Riccati solution P whose residual is not small against the equation's terms (A, B, Q, R whose
    scales floats cannot hold together: Q = 1e308 gave P = 0), rather than return a wrong P."""
    with np.errstate(all="ignore"):
        gain = P @ B @ np.linalg.solve(R, B.T @ P)
        terms = (Q, As.T @ P, P @ As, gain)
        # the largest entry, not the Frobenius norm: squares of entries near 1e-200 underflow to a zero norm
        scale = sum(float(np.abs(t).max()) for t in terms)
        rel = float(np.abs(As.T @ P + P @ As - gain + Q).max()) / scale if scale > 0 else 0.0
    if not (np.isfinite(P).all() and math.isfinite(scale) and rel <= tol):
        raise ValueError(f"the Riccati solution cannot be computed accurately for these Q and R (relative residual "
                         f"{rel:.3g} > {tol:g}): their scales are too far apart for floating point, got "
                         f"Q = {np.asarray(Q).tolist()}, R = {np.asarray(R).tolist()}")


@dataclass(frozen=True)
class MertonSolution:
    """pi* = (mu - r) / (gamma sigma^2), k* = (rho - (1-gamma) M) / gamma, V(x) = A x^{1-gamma} / (1-gamma).

    For gamma = 1 (log utility): k* = rho and V(x) = log(rho x) / rho + (M - rho) / rho^2; ``A`` is then nan.
    """

    pi: float
    k: float
    A: float
    M: float
    gamma: float
    rho: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1), wealth x > 0 (a ``ValueError`` for wealth <= 0, where the value is not defined)."""
        _check_wealth(x)
        if self.gamma == 1.0:
            return torch.log(self.rho * x) / self.rho + (self.M - self.rho) / self.rho ** 2
        return self.A * x.pow(1 - self.gamma) / (1 - self.gamma)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 2): the constant controls [pi*, k*] at every wealth."""
        return torch.tensor([self.pi, self.k], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)

    def score(self, solution, x: torch.Tensor) -> dict[str, float]:
        """Errors of ``solution`` on wealths ``x`` (B, 1): those of :func:`score_value_policy`, plus ``pi_rel``
        and ``k_rel`` (relative L2 of the two fractions over ``x``) and their means ``pi_mean``, ``k_mean``."""
        v, v_star, a, a_star = _evaluate(self, solution, x)
        out = _value_policy_errors(v, v_star, a, a_star)
        out["pi_rel"] = relative_l2(a[:, 0], a_star[:, 0])
        out["k_rel"] = relative_l2(a[:, 1], a_star[:, 1])
        out["pi_mean"] = float(a[:, 0].mean())
        out["k_mean"] = float(a[:, 1].mean())
        return _finite(out)


def _check_wealth(x) -> None:
    floating_tensor("x", x, (None, 1))
    inside("x", x, 0.0, math.inf, "positive wealth")


class NoClosedForm(NotImplementedError, ValueError):
    """A valid problem whose closed form does not apply (e.g. Merton's optimum outside the action box).

    A ``NotImplementedError``, so that ``problem.has_exact`` is False and the solvers run without a reference,
    and a ``ValueError`` for callers that asked for the closed form explicitly."""


def solve_merton(problem) -> MertonSolution:
    """Merton's closed form for a :class:`~hjbcourse.Merton` problem (book: Appendix B)."""
    r, mu, sigma, gamma, rho = problem.r, problem.mu, problem.sigma, problem.gamma, problem.rho
    M = r + (mu - r) ** 2 / (2 * gamma * sigma ** 2)
    pi = (mu - r) / (gamma * sigma ** 2)
    k = (rho - (1 - gamma) * M) / gamma
    A = math.nan if gamma == 1.0 else k ** (-gamma)
    lo, hi = problem.action_low.tolist(), problem.action_high.tolist()
    if not (lo[0] <= pi <= hi[0] and lo[1] <= k <= hi[1]):
        raise NoClosedForm(f"the unconstrained optimum (pi={pi:.4g}, k={k:.4g}) lies outside the action bounds "
                         f"pi_bounds={lo[0], hi[0]}, k_bounds={lo[1], hi[1]}; the closed form does not apply")
    return MertonSolution(pi=pi, k=k, A=A, M=M, gamma=gamma, rho=rho)


@dataclass(frozen=True)
class FiniteHorizonLQRSolution:
    """V(t, x) = -1/2 x'P(t)x - c(t), a*(t, x) = -K(t) x with K(t) = R^{-1} B'P(t); P and c from the ODE.

    ``P(t)``, ``c(t)``, ``K(t)`` take a float or a 1-D array of times in [0, T] and return numpy arrays
    ((n, d, d), (n,), (n, k, d) for arrays; (d, d), float, (k, d) for a float).
    """

    T: float
    d: int
    _sol: object
    _BtRinv: np.ndarray

    def _y(self, t):
        t_arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if np.any(t_arr < -1e-12) or np.any(t_arr > self.T + 1e-12):
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return self._sol.sol(np.clip(t_arr, 0.0, self.T)), np.ndim(t) == 0

    def P(self, t):
        y, scalar = self._y(t)
        P = y[: self.d * self.d].T.reshape(-1, self.d, self.d)
        P = 0.5 * (P + P.transpose(0, 2, 1))
        return P[0] if scalar else P

    def c(self, t):
        y, scalar = self._y(t)
        return float(y[-1, 0]) if scalar else y[-1]

    def K(self, t):
        P = self.P(t)
        return self._BtRinv @ P  # R^{-1} B' P, broadcast over times

    def value(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): V(t, x) at one time ``t``."""
        P = torch.as_tensor(self.P(float(t))).to(x)
        return -0.5 * ((x @ P) * x).sum(-1, keepdim=True) - self.c(float(t))

    def policy(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, k): a*(t, x) = -K(t) x at one time ``t``."""
        return -x @ torch.as_tensor(self.K(float(t))).to(x).T


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

    def score(self, solution, x: torch.Tensor) -> dict[str, float]:
        """Errors of ``solution`` on ``x`` (B, 1): those of :func:`score_value_policy`."""
        return _finite(score_value_policy(self, solution, x))


@dataclass(frozen=True)
class StateNoiseLQSolution:
    """V(x) = -1/2 P x^2 - b x - c and a*(x) = -(beta / r_a) (P x + b) for :class:`~hjbcourse.problems.StateNoiseLQ`
    (book: Appendix A): (beta^2/r_a) P^2 + (rho - 2 alpha - s1^2) P - q = 0 (P > 0),
    b = P s0 s1 / (rho - alpha + beta^2 P / r_a), c = (P s0^2 - beta^2 b^2 / r_a) / (2 rho). ``K`` = beta P / r_a."""

    P: float
    b: float
    c: float
    K: float
    k0: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1)."""
        return -0.5 * self.P * x * x - self.b * x - self.c

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B, 1): -K x - k0."""
        return -self.K * x - self.k0

    def score(self, solution, x: torch.Tensor) -> dict[str, float]:
        """Errors of ``solution`` on ``x`` (B, 1): those of :func:`score_value_policy`, plus ``P_rel`` and
        ``K_rel`` read off by least squares (V ~ -1/2 P x^2 + b x - c, a ~ -K x + k0)."""
        out = score_value_policy(self, solution, x)
        if x.shape[0] > 3:
            P, _, _ = fit_quadratic_form(solution.value, x)
            K, _ = fit_linear_gain(solution.policy, x)
            out["P_rel"] = relative_error(P, torch.tensor([[self.P]], dtype=torch.float64))
            out["K_rel"] = relative_error(K, torch.tensor([[self.K]], dtype=torch.float64))
        return _finite(out)


def solve_state_noise_lq(problem) -> StateNoiseLQSolution:
    """The closed form of the scalar LQ problem with noise s0 + s1 x (duck-typed: alpha, beta, q, r_a, s0, s1,
    rho). The positive root P always exists for q > 0, and the closed loop then has a finite discounted second
    moment (2 (alpha - beta^2 P / r_a) + s1^2 - rho = -q/P - beta^2 P / r_a < 0)."""
    al, be, q, ra, s0, s1, rho = (float(getattr(problem, n)) for n in ("alpha", "beta", "q", "r_a", "s0", "s1", "rho"))
    if not (q > 0 and ra > 0 and be != 0 and rho > 0):
        raise ValueError(f"the closed form needs q > 0, r_a > 0, beta != 0 and rho > 0, got q={q}, r_a={ra}, "
                         f"beta={be}, rho={rho}")
    a2, a1 = be * be / ra, rho - 2 * al - s1 * s1
    P = (-a1 + math.sqrt(a1 * a1 + 4 * a2 * q)) / (2 * a2)
    b = P * s0 * s1 / (rho - al + a2 * P)
    c = (P * s0 * s0 - a2 * b * b) / (2 * rho)
    return StateNoiseLQSolution(P=P, b=b, c=c, K=be * P / ra, k0=be * b / ra)


@dataclass(frozen=True)
class ReferenceSolution:
    """A numerical reference (e.g. a fine finite-difference solution) that scores like a closed form: any
    object with ``value(x)`` and ``policy(x)``, and ``score(solution, x)`` = :func:`score_value_policy`. For
    problems without a closed form; ``source`` says where the reference came from."""

    solution: object
    source: str = "numerical reference"

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.solution.value(x)

    def policy(self, x: torch.Tensor) -> torch.Tensor:
        return self.solution.policy(x)

    def score(self, solution, x: torch.Tensor) -> dict[str, float]:
        """Errors of ``solution`` against the reference on ``x``: those of :func:`score_value_policy`."""
        return _finite(score_value_policy(self, solution, x))
