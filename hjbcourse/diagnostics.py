"""Diagnostics for any solver: errors against a closed form, the sampled HJB residual, and readers of the
constants (Riccati matrix, feedback gain) off learned networks (book: chapter "Policy iteration", section
"Diagnostics").

Generic by construction: a closed form scores a solution against itself (``problem.exact().score``), so a new
problem with a closed form needs no edit here. The measures themselves live in lower layers
(:mod:`hjbcourse.metrics`, :func:`hjbcourse.generator.hjb_residual`), where the solvers use them too.

Conventions: ``value`` is a callable (B, d) -> (B, 1), ``policy`` a callable (B, d) -> (B, k); a *solution* is
any object with ``value(x)`` and ``policy(x)`` methods (a learned solution or a closed form).
"""
from __future__ import annotations

import torch

from .generator import hjb_residual, hjb_residual_norm
from .metrics import convergence_order, fit_linear_gain, fit_quadratic_form, relative_error, relative_l2, relative_sup

__all__ = [
    "relative_l2",
    "relative_error",
    "relative_sup",
    "hjb_residual",
    "hjb_residual_norm",
    "fit_quadratic_form",
    "fit_linear_gain",
    "convergence_order",
    "errors_against_exact",
]


def errors_against_exact(solution, problem, x: torch.Tensor, exact=None) -> dict[str, float]:
    """Errors of a solution (``value(x)``, ``policy(x)``) against ``problem.exact()`` on the points ``x``.

    The closed form does the scoring (its ``score`` method), so the keys depend on it: always
    ``value_rel_l2``, ``value_rel_sup``, ``policy_rel_l2`` and ``policy_rel_l2_<j>`` per action coordinate when
    there are several; an LQR's adds ``P_rel`` and ``K_rel`` (relative Frobenius errors of the matrices read
    off by :func:`fit_quadratic_form` and :func:`fit_linear_gain` over ``x``), Merton's ``pi_rel``, ``k_rel``,
    ``pi_mean`` and ``k_mean``. Pass ``exact`` to avoid recomputing the closed form. A solution that returns
    NaN or inf on ``x`` is a ``ValueError``.
    """
    problem.check_state(x)
    ex = problem.exact() if exact is None else exact
    return ex.score(solution, x)
