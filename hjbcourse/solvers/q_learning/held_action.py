"""The reference for learners fed transitions of step dt on an LQR: the best gain with actions held for dt."""
from __future__ import annotations

import math

import torch

from ...discrete import check_lqr_step, discounted_riccati

__all__ = ["held_action_lqr_gain"]


def held_action_lqr_gain(problem, dt: float) -> torch.Tensor:
    """(k, d): the best gain for a :class:`~hjbcourse.StochasticLQR` when actions are held fixed over steps of
    length ``dt`` (the discrete-time Riccati solution of the sampled system, reward r dt per step).

    The same discounted Riccati solve as :func:`~hjbcourse.solve_discrete_lqr`, with the exact sampled
    dynamics Ad = e^{A dt}, Bd = int_0^dt e^{As} ds B in place of its Euler step (I + hA, hB).
    A reference for learners fed transitions of step dt: it tends to the continuous-time K as dt -> 0, and
    the gap K_dt - K (of order dt) is the bias no amount of data removes at that step.
    """
    import numpy as np
    import scipy.linalg

    dt = check_lqr_step(problem, dt, "dt")
    A, B, Q, R = (M.numpy() for M in (problem.A, problem.B, problem.Q, problem.R))
    d, k = B.shape
    Ad = scipy.linalg.expm(A * dt)
    # int_0^dt e^{As} ds B, from the block-matrix exponential
    M = np.zeros((d + k, d + k))
    M[:d, :d], M[:d, d:] = A * dt, B * dt
    Bd = scipy.linalg.expm(M)[:d, d:]
    _, K = discounted_riccati(Ad, Bd, Q * dt, R * dt, math.exp(-problem.rho * dt), dt)
    return torch.from_numpy(K)
