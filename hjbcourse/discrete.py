"""Discrete-time dynamic programming (book: chapter "The Bellman equation").

Finite Markov decision processes solved by value iteration and policy iteration, and the discrete-time LQR
with time step h, whose discrete Riccati equation tends to the continuous discounted one as h -> 0.

Conventions: rewards are maximised; a finite MDP has transition probabilities ``P`` (S, A, S) with
P[s, a, s'] = P(s' | s, a), one-step rewards ``R`` (S, A) and a discount factor ``gamma`` in (0, 1).
Values are (S,) float64 tensors and deterministic policies (S,) integer tensors of action indices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import _positive_int, _real
from .exact import QuadraticSolution
from .problems import FiniteMDP, StochasticLQR
from .training import History, check_finite

__all__ = [
    "bellman_operator",
    "mdp_policy_evaluation",
    "mdp_value_iteration",
    "mdp_policy_iteration",
    "DynamicProgrammingResult",
    "DiscreteLQRSolution",
    "solve_discrete_lqr",
    "discrete_riccati_residual",
    "discounted_riccati",
    "check_lqr_step",
]


# ---------------------------------------------------------------------------------------------------------
# Finite MDPs
# ---------------------------------------------------------------------------------------------------------
def bellman_operator(mdp: FiniteMDP, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S,) -> ((S,), (S,)): (T V)(s) = max_a {R(s, a) + gamma E[V(s') | s, a]} and a greedy policy."""
    V = _check_values(mdp, V)
    Q = mdp.q_values(V)
    TV, pi = Q.max(dim=1)
    return TV, pi


def mdp_policy_evaluation(mdp: FiniteMDP, policy: torch.Tensor) -> torch.Tensor:
    """(S,) integer actions -> (S,): V^pi solving the linear Bellman equation (I - gamma P_pi) V = R_pi."""
    pi = _check_policy(mdp, policy)
    idx = torch.arange(mdp.n_states)
    P_pi = mdp.P[idx, pi]  # (S, S)
    R_pi = mdp.R[idx, pi]
    return torch.linalg.solve(torch.eye(mdp.n_states, dtype=torch.float64) - mdp.gamma * P_pi, R_pi)


@dataclass
class DynamicProgrammingResult:
    """What value or policy iteration returns: the values ``V`` (S,), a greedy ``policy`` (S,), the number of
    ``iterations``, every iterate ``values`` (iterations + 1, S) (the first is the starting guess), and a
    ``history`` with ``change`` = sup |V_{k+1} - V_k| (and ``policy_changes`` for policy iteration)."""

    V: torch.Tensor
    policy: torch.Tensor
    iterations: int
    values: torch.Tensor
    history: History
    converged: bool

    def errors(self, V_star: torch.Tensor) -> torch.Tensor:
        """(iterations + 1,): sup |V_k - V*| along the iterates."""
        return (self.values - torch.as_tensor(V_star).to(self.values).reshape(1, -1)).abs().max(dim=1).values


def mdp_value_iteration(mdp: FiniteMDP, V0=None, tol: float = 1e-10, max_iter: int = 10_000) -> DynamicProgrammingResult:
    """Iterate V_{k+1} = T V_k from V0 (default 0) until sup |V_{k+1} - V_k| <= tol (1 - gamma) / gamma,
    which guarantees sup |V_{k+1} - V*| <= tol (the contraction bound)."""
    if not (_real(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    max_iter = _positive_int("max_iter", max_iter)
    V = torch.zeros(mdp.n_states, dtype=torch.float64) if V0 is None else _check_values(mdp, V0).clone()
    stop = tol * (1 - mdp.gamma) / mdp.gamma
    values, hist, converged = [V], History(), False
    it = 0
    for it in range(1, max_iter + 1):
        V_new, pi = bellman_operator(mdp, V)
        check_finite(V_new, "V", it)
        change = float((V_new - V).abs().max())
        hist.log(it, change=change)
        V = V_new
        values.append(V)
        if change <= stop:
            converged = True
            break
    _, pi = bellman_operator(mdp, V)
    return DynamicProgrammingResult(V=V, policy=pi, iterations=it, values=torch.stack(values), history=hist,
                                    converged=converged)


def mdp_policy_iteration(mdp: FiniteMDP, policy0=None, max_iter: int = 1_000) -> DynamicProgrammingResult:
    """Howard's policy iteration: evaluate pi_k exactly, improve greedily; stops when the policy repeats
    (after finitely many steps: there are finitely many policies and each step improves the value)."""
    max_iter = _positive_int("max_iter", max_iter)
    pi = torch.zeros(mdp.n_states, dtype=torch.long) if policy0 is None else _check_policy(mdp, policy0).clone()
    V = mdp_policy_evaluation(mdp, pi)
    values, hist, converged = [V], History(), False
    it = 0
    for it in range(1, max_iter + 1):
        Q = mdp.q_values(V)
        # Keep the current action on ties, so that the loop stops instead of cycling between equal actions.
        best = Q.max(dim=1).values
        keep = Q.gather(1, pi.unsqueeze(1)).squeeze(1) >= best - 1e-12 * (1 + best.abs())
        new_pi = torch.where(keep, pi, Q.argmax(dim=1))
        changed = int((new_pi != pi).sum())
        V_new = mdp_policy_evaluation(mdp, new_pi)
        check_finite(V_new, "V", it)
        hist.log(it, change=float((V_new - V).abs().max()), policy_changes=changed)
        pi, V = new_pi, V_new
        values.append(V)
        if changed == 0:
            converged = True
            break
    return DynamicProgrammingResult(V=V, policy=pi, iterations=it, values=torch.stack(values), history=hist,
                                    converged=converged)


def _check_values(mdp: FiniteMDP, V) -> torch.Tensor:
    V = torch.as_tensor(V.detach().cpu() if isinstance(V, torch.Tensor) else V, dtype=torch.float64)
    if tuple(V.shape) != (mdp.n_states,):
        raise ValueError(f"V must have shape ({mdp.n_states},), got {tuple(V.shape)}")
    return V


def _check_policy(mdp: FiniteMDP, policy) -> torch.Tensor:
    pi = torch.as_tensor(policy.detach().cpu() if isinstance(policy, torch.Tensor) else policy)
    if tuple(pi.shape) != (mdp.n_states,) or pi.is_floating_point():
        raise ValueError(f"policy must be an integer tensor of shape ({mdp.n_states},), got {tuple(pi.shape)} {pi.dtype}")
    if bool((pi < 0).any()) or bool((pi >= mdp.n_actions).any()):
        raise ValueError(f"policy entries must be action indices in [0, {mdp.n_actions}), got {pi.tolist()}")
    return pi.long()


# ---------------------------------------------------------------------------------------------------------
# The discrete-time LQR with time step h
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscreteLQRSolution(QuadraticSolution):
    """V_h(x) = -1/2 x'P x - c and a_h(x) = -K x for the time-step-h LQR (book: chapter 1, eq. (ch1-dare))."""

    h: float
    gamma: float


def check_lqr_step(problem, h, name: str = "h") -> float:
    """``h`` as a float, after checking that ``problem`` is a StochasticLQR and ``h`` a positive number."""
    if not isinstance(problem, StochasticLQR):
        raise ValueError(f"problem must be a StochasticLQR, got {type(problem).__name__}")
    if not (_real(h) and math.isfinite(h) and h > 0):
        raise ValueError(f"{name} must be a positive number, got {h!r}")
    return float(h)


def discounted_riccati(Ad, Bd, Qh, Rh, gamma: float, h: float):
    """(P, K) of the discounted discrete LQR x' = Ad x + Bd a, reward -1/2 (x'Qh x + a'Rh a) per step,
    discount gamma: P from scipy's DARE on (sqrt(gamma) Ad, sqrt(gamma) Bd, Qh, Rh), symmetrised, and
    K = gamma (Rh + gamma Bd'P Bd)^{-1} Bd'P Ad. ``h`` only names the step in the error message."""
    sg = math.sqrt(gamma)
    try:
        import scipy.linalg  # loaded on first use: scipy.linalg is most of `import hjbcourse`'s cost

        P = scipy.linalg.solve_discrete_are(sg * Ad, sg * Bd, Qh, Rh)
    except (np.linalg.LinAlgError, ValueError) as e:
        raise ValueError(f"the discrete Riccati equation has no stabilising solution for h={h}: {e}") from e
    P = 0.5 * (P + P.T)
    K = gamma * np.linalg.solve(Rh + gamma * Bd.T @ P @ Bd, Bd.T @ P @ Ad)
    return P, K



def _discrete_data(problem, h):
    h = check_lqr_step(problem, h)
    A, B, Q, R, D = (M.numpy() for M in (problem.A, problem.B, problem.Q, problem.R, problem.D))
    d = A.shape[0]
    gamma = math.exp(-problem.rho * h)
    Ad, Bd = np.eye(d) + h * A, h * B
    return Ad, Bd, h * Q, h * R, D, gamma


def solve_discrete_lqr(problem, h: float) -> DiscreteLQRSolution:
    """The LQR of a :class:`~hjbcourse.StochasticLQR` sampled with time step h.

    x_{n+1} = x_n + h (A x_n + B a_n) + sqrt(h) D xi_n, xi_n ~ N(0, I); reward h r(x, a); discount
    gamma = e^{-rho h}. The quadratic ansatz V = -1/2 x'Px - c in the Bellman equation gives the discounted
    discrete Riccati equation (scipy's DARE on sqrt(gamma) (I + hA), sqrt(gamma) hB, hQ, hR)

        P = hQ + gamma Ad'P Ad - gamma^2 Ad'P Bd (hR + gamma Bd'P Bd)^{-1} Bd'P Ad,

    K = gamma (hR + gamma Bd'P Bd)^{-1} Bd'P Ad and c = gamma h Tr(D D'P) / (2 (1 - gamma)).
    """
    Ad, Bd, Qh, Rh, D, gamma = _discrete_data(problem, h)
    P, K = discounted_riccati(Ad, Bd, Qh, Rh, gamma, h)
    _check_step_accuracy(Ad, Bd, K, gamma, h)
    c = gamma * h * float(np.trace(D @ D.T @ P)) / (2 * (1 - gamma))
    return DiscreteLQRSolution(P=torch.from_numpy(P), K=torch.from_numpy(K), c=c, h=float(h), gamma=gamma)


def _check_step_accuracy(Ad, Bd, K, gamma: float, h: float, tol: float = 1e-6) -> None:
    """Refuse a step ``h`` so small that the discrete Riccati equation cannot be solved accurately: its closed-loop
    eigenvalues sqrt(gamma) (Ad - Bd K) lie within about h times a rate of the unit circle, and a solver loses
    about eps / (their distance to it) of relative accuracy (h = 1e-15 gave P = 0.2559 instead of 0.2660)."""
    lam = np.abs(np.linalg.eigvals(math.sqrt(gamma) * (Ad - Bd @ K)))
    gap = 1.0 - float(lam.max())
    loss = np.finfo(np.float64).eps / gap if gap > 0 else math.inf
    if not loss <= tol:
        raise ValueError(f"h={h} is too small to solve the discrete Riccati equation accurately (the closed loop's "
                         f"eigenvalues lie {gap:.2g} from the unit circle, so about {loss:.1g} relative error); "
                         f"use a larger h, or the continuous-time solution problem.exact()")


def discrete_riccati_residual(problem, h: float, P) -> np.ndarray:
    """The residual of the discounted discrete Riccati equation at P (zero at the solution)."""
    Ad, Bd, Qh, Rh, _, gamma = _discrete_data(problem, h)
    P = np.asarray(P, dtype=np.float64)
    G = Rh + gamma * Bd.T @ P @ Bd
    return Qh + gamma * Ad.T @ P @ Ad - gamma ** 2 * Ad.T @ P @ Bd @ np.linalg.solve(G, Bd.T @ P @ Ad) - P
