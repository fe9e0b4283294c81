"""The Hamilton–Jacobi correspondence, by sympy (book: chapter "The deterministic HJB").

With the running reward written as minus a Lagrangian, r = -L, the Hamiltonian of the deterministic HJB,
H(x, p) = sup_a { r(x, a) + p f(x, a) }, is the Legendre transform of the Lagrangian written in terms of the
velocity v = f(x, a): H(x, p) = sup_v { p v - L(x, v) }. The finite-horizon HJB, -dV/dt = H(x, dV/dx), is then
Hamilton–Jacobi's equation dS/dt + H(q, dS/dq) = 0 with S <-> V and q <-> x.

Every function returns sympy expressions; nothing here imports torch.
"""
from __future__ import annotations

import sympy as sp

__all__ = [
    "legendre_transform",
    "hjb_hamiltonian",
    "mechanics_hamiltonian",
    "lqr_hamilton_jacobi",
    "deterministic_riccati",
]


def legendre_transform(L: sp.Expr, v: sp.Symbol, p: sp.Symbol) -> sp.Expr:
    """sup_v { p v - L(v) } for a Lagrangian L strictly convex in v: solve p = dL/dv for v and substitute.

    Raises ``ValueError`` (naming ``L``) unless d^2L/dv^2 > 0 can be shown and the stationarity equation has
    exactly one solution, so the supremum is that stationary point.
    """
    curvature = sp.simplify(sp.diff(L, v, 2))
    if curvature.is_positive is not True:
        raise ValueError(f"L must be strictly convex in {v} (d^2L/d{v}^2 > 0 for positive symbols), got {curvature}")
    sols = sp.solve(sp.Eq(p, sp.diff(L, v)), v, dict=True)
    if len(sols) != 1:
        raise ValueError(f"L: the equation p = dL/d{v} must have exactly one solution, got {sols}")
    return sp.simplify((p * v - L).subs(sols[0]))


def hjb_hamiltonian(r: sp.Expr, f: sp.Expr, a: sp.Symbol, p: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    """(H, a*) with H(x, p) = sup_a { r(x, a) + p f(x, a) } for r strictly concave in a (one action).

    Returns the Hamiltonian and the maximiser a*(x, p). Raises ``ValueError`` (naming ``r``) unless
    d^2/da^2 (r + p f) < 0 can be shown.
    """
    g = r + p * f
    curvature = sp.simplify(sp.diff(g, a, 2))
    if curvature.is_negative is not True:
        raise ValueError(f"r + p f must be strictly concave in {a}, got second derivative {curvature}")
    sols = sp.solve(sp.Eq(sp.diff(g, a), 0), a, dict=True)
    if len(sols) != 1:
        raise ValueError(f"r: the first-order condition must have exactly one solution, got {sols}")
    a_star = sp.simplify(sols[0][a])
    return sp.simplify(g.subs(a, a_star)), a_star


def mechanics_hamiltonian() -> dict[str, sp.Expr]:
    """A particle of mass m in a potential U: L(q, v) = m v^2 / 2 - U(q) and its Legendre transform
    H(q, p) = p^2 / (2 m) + U(q) (the energy), with the symbols used."""
    q, v, p = sp.symbols("q v p", real=True)
    m = sp.symbols("m", positive=True)
    U = sp.Function("U")
    L = m * v ** 2 / 2 - U(q)
    return {"q": q, "v": v, "p": p, "m": m, "U": U, "L": L, "H": legendre_transform(L, v, p)}


def lqr_hamilton_jacobi() -> dict[str, sp.Expr]:
    """The scalar deterministic LQR read as mechanics.

    Dynamics f = alpha x + beta a, reward r = -L with L(x, a) = (q x^2 + r_a a^2) / 2. Returns:
    ``H_hjb`` = sup_a { r + p f } with its maximiser ``a_star``; the Lagrangian in the velocity v = f,
    ``L_v`` = L(x, (v - alpha x) / beta); its Legendre transform ``H_legendre`` = sup_v { p v - L_v };
    and ``difference`` = H_hjb - H_legendre, which simplifies to 0.
    """
    x, p, a, v = sp.symbols("x p a v", real=True)
    alpha = sp.symbols("alpha", real=True)
    beta, q, r_a = sp.symbols("beta q r_a", positive=True)
    f = alpha * x + beta * a
    L = (q * x ** 2 + r_a * a ** 2) / 2
    H_hjb, a_star = hjb_hamiltonian(-L, f, a, p)
    L_v = sp.expand(L.subs(a, (v - alpha * x) / beta))
    H_leg = legendre_transform(L_v, v, p)
    return {"x": x, "p": p, "a": a, "v": v, "alpha": alpha, "beta": beta, "q": q, "r_a": r_a, "f": f, "L": L,
            "H_hjb": sp.expand(H_hjb), "a_star": a_star, "L_v": L_v, "H_legendre": sp.expand(H_leg),
            "difference": sp.simplify(H_hjb - H_leg)}


def deterministic_riccati() -> dict[str, sp.Expr]:
    """The discounted deterministic HJB rho V = H(x, V') of the scalar LQR with the ansatz V = -P x^2 / 2.

    Returns the ``residual`` rho V - H(x, V') divided by x^2 (a polynomial in P that must vanish), the
    ``riccati`` equation it gives, its positive root ``P`` and the feedback ``a_star`` = -(beta P / r_a) x.
    """
    d = lqr_hamilton_jacobi()
    x, p, alpha, beta, q, r_a = (d[k] for k in ("x", "p", "alpha", "beta", "q", "r_a"))
    rho, P = sp.symbols("rho P", positive=True)
    V = -P * x ** 2 / 2
    Vx = sp.diff(V, x)
    residual = sp.expand(sp.simplify((rho * V - d["H_hjb"].subs(p, Vx)) / x ** 2))
    roots = sp.solve(sp.Eq(residual, 0), P)
    positive = [s for s in roots if s.subs({alpha: -1, beta: 1, q: 1, r_a: 1, rho: 1}).is_positive]
    if len(positive) != 1:
        raise ValueError(f"expected exactly one positive root of the Riccati equation, got {roots}")
    return {"V": V, "residual": residual, "riccati": sp.Eq(residual, 0), "P": sp.simplify(positive[0]),
            "a_star": sp.simplify(d["a_star"].subs(p, Vx)), "rho": rho, "P_symbol": P,
            **{k: d[k] for k in ("x", "alpha", "beta", "q", "r_a")}}
