"""The Cole-Hopf transform of the Han-Jentzen-E HJB equation (book: chapter "High dimensions"), in sympy.

The HJB equation  u_t + Lap u - lam |grad u|^2 = 0  becomes, for w = exp(-lam u), the backward heat equation
w_t + Lap w = 0. The functions below derive the three steps in one space dimension (the computation is the
same coordinate by coordinate) and check the result on an explicit heat solution.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["lqg_hamiltonian_minimum", "cole_hopf_residual", "cole_hopf_heat_check"]


def lqg_hamiltonian_minimum():
    """Minimise |m|^2 + 2 sqrt(lam) m p over m in one dimension: returns ``(m_star, minimum)``.

    Expected: m* = -sqrt(lam) p and minimum -lam p^2, which turns the HJB
    u_t + Lap u + min_m (|m|^2 + 2 sqrt(lam) m . grad u) = 0 into u_t + Lap u - lam |grad u|^2 = 0.
    """
    m, p = sp.symbols("m p", real=True)
    lam = sp.symbols("lambda", positive=True)
    H = m ** 2 + 2 * sp.sqrt(lam) * m * p
    m_star = sp.solve(sp.diff(H, m), m)[0]
    return sp.simplify(m_star), sp.simplify(H.subs(m, m_star))


def cole_hopf_residual():
    """For w = exp(-lam u(t, x)): returns ``(lhs, rhs)`` with lhs = w_t + w_xx and rhs = -lam w (u_t + u_xx -
    lam u_x^2), so that lhs - rhs simplifies to 0: w solves the heat equation exactly when u solves the HJB."""
    t, x = sp.symbols("t x", real=True)
    lam = sp.symbols("lambda", positive=True)
    u = sp.Function("u")(t, x)
    w = sp.exp(-lam * u)
    lhs = sp.diff(w, t) + sp.diff(w, x, 2)
    rhs = -lam * w * (sp.diff(u, t) + sp.diff(u, x, 2) - lam * sp.diff(u, x) ** 2)
    return lhs, rhs


def cole_hopf_heat_check():
    """An explicit check: w(t, x) = exp(-lam a) (T - t + s)^{-1/2} exp(-x^2 / (4 (T - t + s))) solves the
    backward heat equation w_t + w_xx = 0; u = -ln(w) / lam then solves the HJB. Returns the HJB residual
    u_t + u_xx - lam u_x^2 of that u, which simplifies to 0."""
    t, x = sp.symbols("t x", real=True)
    lam, T, s, a = sp.symbols("lambda T s a", positive=True)
    w = sp.exp(-lam * a) / sp.sqrt(T - t + s) * sp.exp(-x ** 2 / (4 * (T - t + s)))
    u = -sp.log(w) / lam
    return sp.simplify(sp.diff(u, t) + sp.diff(u, x, 2) - lam * sp.diff(u, x) ** 2)
