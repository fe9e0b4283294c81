"""Non-autonomous and finite-horizon HJB, symbolically (book: Appendix C).

* :func:`nonautonomous_hjb` builds r + dV/dt + L_t^a V - rho V, whose maximum over a vanishes on the value.
* :func:`finite_horizon_lqr_riccati_ode` substitutes V(t, x) = -1/2 P(t) x^2 - c(t) into the time-dependent HJB
  of the scalar LQR and reads off the Riccati ODE for P and the linear ODE for c, with P(T) = g, c(T) = 0.
* :func:`riccati_ode_closed_form` solves that scalar Riccati ODE in closed form (for the tests and exercises).
* :func:`finite_horizon_lqr_matrix_ode` repeats the derivation with explicit symbolic matrices.
* :func:`finite_horizon_hamilton_jacobi` writes the deterministic (sigma = 0, rho = 0) case in classical
  Hamilton–Jacobi form dV/dt + H(x, dV/dx) = 0 with H(x, p) = sup_a {p f(x, a) - L(x, a)}.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ito import ito_generator
from .lqr import _scalar_symbols, _sym_matrix, riccati_operator

__all__ = ["nonautonomous_hjb", "FiniteHorizonRiccati", "finite_horizon_lqr_riccati_ode",
           "riccati_ode_closed_form", "FiniteHorizonMatrixRiccati", "finite_horizon_lqr_matrix_ode",
           "FiniteHorizonHamiltonJacobi", "finite_horizon_hamilton_jacobi"]


def nonautonomous_hjb(V: sp.Expr, t: sp.Symbol, x, f, S, r: sp.Expr, rho) -> sp.Expr:
    """r + dV/dt + L_t^a V - rho V for sympy expressions (Appendix C, eq. (hjb-time)).

    ``V`` depends on ``t`` and the state ``x`` (a symbol or list); ``f``, ``S``, ``r`` may depend on t, x and
    the action symbols. The HJB says: the maximum of this expression over the action is zero.
    """
    return r + sp.diff(V, t) + ito_generator(V, x, f, S) - rho * V


@dataclass(frozen=True)
class FiniteHorizonRiccati:
    """The scalar finite-horizon LQR derivation (Appendix C).

    ``value``: V = -1/2 P(t) x^2 - c(t); ``a_star``: the maximiser -beta P(t) x / r_a; ``residual``: rho V -
    max_a{r + V_t + L^a V}, a polynomial in x; ``dP``, ``dc``: the right-hand sides of dP/dt and dc/dt read off
    its x^2 and x^0 coefficients; ``terminal``: {P(T): g, c(T): 0}; ``stationary``: dP with P constant, which is
    minus the algebraic Riccati polynomial of Appendix A.
    """

    t: sp.Symbol
    T: sp.Symbol
    x: sp.Symbol
    a: sp.Symbol
    params: dict
    g: sp.Symbol
    P: sp.Function
    c: sp.Function
    value: sp.Expr
    a_star: sp.Expr
    residual: sp.Expr
    dP: sp.Expr
    dc: sp.Expr
    terminal: dict
    stationary: sp.Expr

    def ode(self) -> tuple[sp.Equality, sp.Equality]:
        """The two ODEs as sympy equations dP/dt = ..., dc/dt = ..."""
        return (sp.Eq(sp.Derivative(self.P(self.t), self.t), self.dP),
                sp.Eq(sp.Derivative(self.c(self.t), self.t), self.dc))


def finite_horizon_lqr_riccati_ode() -> FiniteHorizonRiccati:
    """Derive the Riccati ODE of the scalar finite-horizon discounted LQR with terminal reward -1/2 g x^2.

    Problem: maximise E[int_t^T e^{-rho(s-t)} r(X_s, a_s) ds - e^{-rho(T-t)} g X_T^2 / 2] with
    dX = (alpha X + beta a) dt + sigma dW, r = -1/2 (q x^2 + r_a a^2).
    """
    x, a, p, _, _ = _scalar_symbols()
    alpha, beta, q, r_a, sigma, rho = (p[k] for k in ("alpha", "beta", "q", "r_a", "sigma", "rho"))
    t, T = sp.symbols("t T", real=True)
    g = sp.Symbol("g", nonnegative=True)
    P, c = sp.Function("P"), sp.Function("c")
    V = -sp.Rational(1, 2) * P(t) * x ** 2 - c(t)
    reward = -sp.Rational(1, 2) * (q * x ** 2 + r_a * a ** 2)
    expr = nonautonomous_hjb(V, t, x, alpha * x + beta * a, sigma, reward, rho)
    (a_star,) = sp.solve(sp.diff(expr, a), a)  # concave in a: -r_a < 0
    residual = sp.expand(-expr.subs(a, a_star))  # = rho V - max_a{r + V_t + L^a V}
    Pd, cd = sp.Derivative(P(t), t), sp.Derivative(c(t), t)
    dP_sym, dc_sym = sp.symbols("dP dc")
    res = residual.subs({Pd: dP_sym, cd: dc_sym})
    poly = sp.Poly(res, x)
    (dP,) = sp.solve(poly.coeff_monomial(x ** 2), dP_sym)
    (dc,) = sp.solve(poly.coeff_monomial(1), dc_sym)
    Ps = sp.Symbol("P", real=True)
    stationary = sp.expand(dP.subs(P(t), Ps))
    return FiniteHorizonRiccati(t=t, T=T, x=x, a=a, params=p, g=g, P=P, c=c, value=V, a_star=a_star,
                                residual=residual, dP=sp.expand(dP), dc=sp.expand(dc),
                                terminal={P(T): g, c(T): sp.Integer(0)}, stationary=stationary)


def riccati_ode_closed_form() -> tuple[sp.Expr, dict]:
    """P(t) solving dP/dt = -(q + (2 alpha - rho) P - beta^2 P^2 / r_a), P(T) = g, in closed form.

    With the roots P_+ > 0 > P_- of the algebraic equation, lam = beta^2 (P_+ - P_-) / r_a and
    Z = (g - P_+) / (g - P_-): P(t) = (P_+ - P_- Z e^{-lam (T-t)}) / (1 - Z e^{-lam (T-t)}), which tends to P_+
    (Appendix A's solution) as T - t grows. Returns (expression, the symbols by name).
    """
    d = finite_horizon_lqr_riccati_ode()
    p = d.params
    alpha, beta, q, r_a, rho = (p[k] for k in ("alpha", "beta", "q", "r_a", "rho"))
    a_t = alpha - rho / 2
    root = sp.sqrt(a_t ** 2 + beta ** 2 * q / r_a)
    P_plus = r_a / beta ** 2 * (a_t + root)
    P_minus = r_a / beta ** 2 * (a_t - root)
    lam = beta ** 2 * (P_plus - P_minus) / r_a
    Z = (d.g - P_plus) / (d.g - P_minus)
    E = sp.exp(-lam * (d.T - d.t))
    expr = (P_plus - P_minus * Z * E) / (1 - Z * E)
    return expr, {**p, "t": d.t, "T": d.T, "g": d.g}


@dataclass(frozen=True)
class FiniteHorizonMatrixRiccati:
    """Matrix finite-horizon LQR with explicit symbolic matrices: ``dP`` (the matrix dP/dt read off the
    residual), ``riccati`` (the discounted Riccati operator of the same symbols, so that dP = -riccati),
    ``dc`` (dc/dt), and the symbols."""

    t: sp.Symbol
    A: sp.Matrix
    B: sp.Matrix
    Q: sp.Matrix
    R: sp.Matrix
    D: sp.Matrix
    P: sp.Matrix
    rho: sp.Symbol
    dP: sp.Matrix
    dc: sp.Expr
    riccati: sp.Matrix


def finite_horizon_lqr_matrix_ode(n: int = 2, k: int = 1, m: int = 1) -> FiniteHorizonMatrixRiccati:
    """The matrix Riccati ODE -dP/dt = (A - rho/2 I)'P + P(A - rho/2 I) - P B R^{-1} B'P + Q and
    -dc/dt = 1/2 Tr(DD'P) - rho c, derived from V = -1/2 x'P(t)x - c(t) (sizes 1 to 3)."""
    for name, v in (("n", n), ("k", k), ("m", m)):
        if not isinstance(v, int) or not 1 <= v <= 3:
            raise ValueError(f"{name} must be an integer between 1 and 3, got {v!r}")
    t = sp.Symbol("t", real=True)
    x = sp.Matrix(sp.symbols(f"x1:{n + 1}", real=True))
    a = sp.Matrix(sp.symbols(f"a1:{k + 1}", real=True))
    A, B, D = _sym_matrix("A", n, n), _sym_matrix("B", n, k), _sym_matrix("D", n, m)
    Q, R = _sym_matrix("Q", n, n, True), _sym_matrix("R", k, k, True)
    Pf = sp.Matrix(n, n, lambda i, j: sp.Function(f"P_{min(i, j) + 1}{max(i, j) + 1}")(t))
    rho = sp.Symbol("rho", positive=True)
    c = sp.Function("c")(t)
    V = -sp.Rational(1, 2) * (x.T * Pf * x)[0, 0] - c
    reward = -sp.Rational(1, 2) * ((x.T * Q * x)[0, 0] + (a.T * R * a)[0, 0])
    expr = nonautonomous_hjb(V, t, list(x), list(A * x + B * a), D, reward, rho)
    sol = sp.solve([sp.diff(expr, ai) for ai in a], list(a), dict=True)[0]
    residual = sp.expand(-expr.subs(sol))
    # residual = 1/2 x'(dP/dt + Ric(P))x + (dc/dt + 1/2 Tr(DD'P) - rho c): replace derivatives by symbols
    dsyms = {}
    for i in range(n):
        for j in range(i, n):
            dsyms[sp.Derivative(Pf[i, j], t)] = sp.Symbol(f"dP_{i + 1}{j + 1}")
    dc_sym = sp.Symbol("dc")
    res = residual.subs({**dsyms, sp.Derivative(c, t): dc_sym})
    M = sp.hessian(res, list(x))
    dPm = sp.Matrix(n, n, lambda i, j: dsyms[sp.Derivative(Pf[min(i, j), max(i, j)], t)])
    # M = dP + Ric(P) is linear in the dP symbols: solve entrywise
    sol_dP = sp.solve([M[i, j] for i in range(n) for j in range(i, n)], list(dsyms.values()), dict=True)[0]
    dP = dPm.subs(sol_dP).applyfunc(sp.cancel)
    (dc,) = sp.solve(res.subs({xi: 0 for xi in x}), dc_sym)
    return FiniteHorizonMatrixRiccati(t=t, A=A, B=B, Q=Q, R=R, D=D, P=Pf, rho=rho, dP=dP, dc=sp.expand(dc),
                                      riccati=riccati_operator(A, B, Q, R, Pf, rho))


@dataclass(frozen=True)
class FiniteHorizonHamiltonJacobi:
    """The deterministic scalar LQR (sigma = 0, rho = 0) in Hamilton–Jacobi form.

    ``lagrangian``: L = -r = 1/2 (q x^2 + r_a a^2); ``hamiltonian``: H(x, p) = sup_a {p (alpha x + beta a) - L};
    ``hj``: dV/dt + H(x, dV/dx) for V = -1/2 P(t) x^2; ``hj_on_riccati``: the same with dP/dt replaced by the
    Riccati ODE (zero); ``hjb_minus_hj``: sup_a{r + V_x f} - H(x, V_x) (zero: the two PDEs are the same).
    """

    x: sp.Symbol
    p: sp.Symbol
    lagrangian: sp.Expr
    hamiltonian: sp.Expr
    hj: sp.Expr
    hj_on_riccati: sp.Expr
    hjb_minus_hj: sp.Expr


def finite_horizon_hamilton_jacobi() -> FiniteHorizonHamiltonJacobi:
    """The sigma = 0, rho = 0 finite-horizon LQR written as dV/dt + H(x, dV/dx) = 0 (Appendix C)."""
    d = finite_horizon_lqr_riccati_ode()
    x, a, t, prm = d.x, d.a, d.t, d.params
    alpha, beta, q, r_a = (prm[k] for k in ("alpha", "beta", "q", "r_a"))
    p = sp.Symbol("p", real=True)
    L = sp.Rational(1, 2) * (q * x ** 2 + r_a * a ** 2)
    f = alpha * x + beta * a
    inner = p * f - L
    (a_opt,) = sp.solve(sp.diff(inner, a), a)
    H = sp.expand(inner.subs(a, a_opt))
    V = -sp.Rational(1, 2) * d.P(t) * x ** 2
    Vx = sp.diff(V, x)
    hj = sp.expand(sp.diff(V, t) + H.subs(p, Vx))
    zero_noise = {prm["sigma"]: 0, prm["rho"]: 0}
    # rho and sigma are declared positive; substitute zero explicitly
    dP = d.dP.subs(zero_noise)
    hj_on = sp.simplify(hj.subs(sp.Derivative(d.P(t), t), dP))
    obj = -L + Vx * f
    (a_hjb,) = sp.solve(sp.diff(obj, a), a)
    hjb_minus_hj = sp.simplify(obj.subs(a, a_hjb) - H.subs(p, Vx))
    return FiniteHorizonHamiltonJacobi(x=x, p=p, lagrangian=L, hamiltonian=H, hj=hj, hj_on_riccati=hj_on,
                             hjb_minus_hj=hjb_minus_hj)
