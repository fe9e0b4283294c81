"""The discounted stochastic LQR from the quadratic ansatz, symbolically (book: Appendix A).

Problem: dX = (A X + B a) dt + D dW, r(x, a) = -1/2 (x'Qx + a'Ra), discount rho; in one dimension
A = alpha, B = beta, Q = q, R = r_a, D = sigma.

* :func:`lqr_scalar` substitutes V = -1/2 P x^2 - c into rho V = max_a {r + L^a V}, maximises over a,
  matches the coefficients of x^2 and x^0, and solves the resulting Riccati equation.
* :func:`hjb_residual_lqr` is rho V - max_a {r + L^a V} for a given (P, c): a polynomial in x that vanishes
  identically exactly when (P, c) solve the equations.
* :func:`lqr_matrix` repeats the derivation with explicit symbolic n x n matrices and shows that the x'(.)x
  coefficient is the matrix Riccati operator (A - rho/2 I)'P + P(A - rho/2 I) - P B R^{-1} B'P + Q.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .ito import ito_generator

__all__ = ["COURSE_LQR", "LQRScalarDerivation", "lqr_scalar", "hjb_residual_lqr", "LQRMatrixDerivation", "lqr_matrix",
           "riccati_operator", "STATE_NOISE_LQ", "StateNoiseLQDerivation", "lq_state_noise"]

# the course's scalar example (the table of the LQR chapter)
COURSE_LQR = {"alpha": -0.5, "beta": 1.0, "q": 1.0, "r_a": 0.1, "sigma": 0.3, "rho": 0.1}


def _scalar_symbols():
    x, a = sp.symbols("x a", real=True)
    alpha = sp.Symbol("alpha", real=True)
    beta, q, r_a, sigma, rho = sp.symbols("beta q r_a sigma rho", positive=True)
    P, c = sp.symbols("P c", real=True)
    return x, a, dict(alpha=alpha, beta=beta, q=q, r_a=r_a, sigma=sigma, rho=rho), P, c


@dataclass(frozen=True)
class LQRScalarDerivation:
    """Every step of the scalar derivation (Appendix A), as sympy objects.

    ``value``: the ansatz V; ``objective``: r + L^a V (a function of a); ``foc``: d objective / da;
    ``a_star``: the maximiser; ``residual``: rho V - objective(a_star), a polynomial in x;
    ``coeff_x2``, ``coeff_1``: its coefficients of x^2 and x^0 (both must vanish);
    ``riccati``: the discounted Riccati polynomial in P (``coeff_x2`` times 2); ``P_roots``: both roots;
    ``P``: the stabilising (positive) root; ``c`` and ``K``: the constant and the gain at that root.
    """

    x: sp.Symbol
    a: sp.Symbol
    params: dict
    P_sym: sp.Symbol
    c_sym: sp.Symbol
    value: sp.Expr
    generator: sp.Expr
    objective: sp.Expr
    foc: sp.Expr
    a_star: sp.Expr
    residual: sp.Expr
    coeff_x2: sp.Expr
    coeff_1: sp.Expr
    riccati: sp.Expr
    P_roots: tuple
    P: sp.Expr
    c: sp.Expr
    K: sp.Expr

    def subs_numbers(self, **values) -> dict:
        """Substitute numbers (defaults: the course's parameters) into P, K, c; returns floats."""
        vals = {**COURSE_LQR, **values}
        sub = {self.params[k]: v for k, v in vals.items()}
        return {"P": float(self.P.subs(sub)), "K": float(self.K.subs(sub)), "c": float(self.c.subs(sub))}


def lqr_scalar() -> LQRScalarDerivation:
    """Derive the scalar discounted Riccati equation and its solution from V = -1/2 P x^2 - c (Appendix A)."""
    x, a, p, P, c = _scalar_symbols()
    alpha, beta, q, r_a, sigma, rho = (p[k] for k in ("alpha", "beta", "q", "r_a", "sigma", "rho"))
    V = -sp.Rational(1, 2) * P * x ** 2 - c
    reward = -sp.Rational(1, 2) * (q * x ** 2 + r_a * a ** 2)
    gen = ito_generator(V, x, alpha * x + beta * a, sigma)
    objective = reward + gen
    foc = sp.diff(objective, a)
    # the objective is concave in a (second derivative -r_a < 0), so the stationary point is the maximiser
    (a_star,) = sp.solve(foc, a)
    residual = sp.expand(rho * V - objective.subs(a, a_star))
    poly = sp.Poly(residual, x)
    coeff_x2 = poly.coeff_monomial(x ** 2)
    coeff_1 = poly.coeff_monomial(1)
    if poly.coeff_monomial(x) != 0:  # pragma: no cover - a structural fact the tests check
        raise AssertionError("the LQR residual has an odd term")
    riccati = sp.expand(2 * coeff_x2)
    roots = tuple(sp.solve(riccati, P))
    course = {p[k]: v for k, v in COURSE_LQR.items()}
    P_plus = max(roots, key=lambda r_: float(r_.subs(course)))  # the root with +sqrt: P > 0
    (c_sol,) = sp.solve(coeff_1, c)
    c_sol = sp.simplify(c_sol.subs(P, P_plus))
    K = sp.simplify(-a_star.subs(P, P_plus) / x)
    return LQRScalarDerivation(x=x, a=a, params=p, P_sym=P, c_sym=c, value=V, generator=sp.expand(gen),
                               objective=sp.expand(objective), foc=sp.expand(foc), a_star=a_star,
                               residual=residual, coeff_x2=coeff_x2, coeff_1=coeff_1, riccati=riccati,
                               P_roots=roots, P=sp.simplify(P_plus), c=c_sol, K=K)


def hjb_residual_lqr(P, c, params: dict | None = None) -> sp.Expr:
    """rho V - max_a {r + L^a V} for V = -1/2 P x^2 - c (a polynomial in the symbol x).

    ``P`` and ``c`` are sympy expressions (or numbers); ``params`` maps the names alpha, beta, q, r_a, sigma,
    rho to values or symbols (default: the symbols of :func:`lqr_scalar`). Zero for every x exactly when
    (P, c) solve the Riccati equation and c = sigma^2 P / (2 rho).
    """
    x, a, p, _, _ = _scalar_symbols()
    p = {**p, **(params or {})}
    for k, v in p.items():
        if k not in COURSE_LQR:
            raise ValueError(f"params has an unknown name {k!r}; expected some of {sorted(COURSE_LQR)}")
    V = -sp.Rational(1, 2) * sp.sympify(P) * x ** 2 - sp.sympify(c)
    objective = -sp.Rational(1, 2) * (p["q"] * x ** 2 + p["r_a"] * a ** 2) + ito_generator(
        V, x, p["alpha"] * x + p["beta"] * a, p["sigma"])
    (a_star,) = sp.solve(sp.diff(objective, a), a)
    return sp.expand(p["rho"] * V - objective.subs(a, a_star))


def riccati_operator(A: sp.Matrix, B: sp.Matrix, Q: sp.Matrix, R: sp.Matrix, P: sp.Matrix, rho) -> sp.Matrix:
    """(A - rho/2 I)'P + P(A - rho/2 I) - P B R^{-1} B'P + Q: the discounted Riccati operator (sympy)."""
    n = A.shape[0]
    As = A - rho / 2 * sp.eye(n)
    return As.T * P + P * As - P * B * R.inv() * B.T * P + Q


@dataclass(frozen=True)
class LQRMatrixDerivation:
    """The matrix case with explicit symbolic matrices (Appendix A).

    ``residual``: rho V - max_a {r + L^a V} for V = -1/2 x'Px - c (P symmetric symbols), a quadratic
    polynomial in the state symbols ``x``; ``quadratic``: the matrix M with residual = 1/2 x'Mx + const
    (the derived Riccati matrix); ``constant``: the x-free part; ``a_star``: the maximiser as a k-vector;
    ``riccati``: :func:`riccati_operator` of the same symbols, for comparison with ``quadratic``;
    ``c``: the constant solved from ``constant = 0``.
    """

    x: sp.Matrix
    a: sp.Matrix
    A: sp.Matrix
    B: sp.Matrix
    Q: sp.Matrix
    R: sp.Matrix
    D: sp.Matrix
    P: sp.Matrix
    rho: sp.Symbol
    c_sym: sp.Symbol
    residual: sp.Expr
    a_star: sp.Matrix
    quadratic: sp.Matrix
    constant: sp.Expr
    riccati: sp.Matrix
    c: sp.Expr
    _numeric: dict = field(default_factory=dict, repr=False, compare=False)

    def numeric_residual(self, A, B, Q, R, D, rho, P, c) -> tuple[np.ndarray, float]:
        """(M, const) evaluated at numbers: the derived Riccati matrix and the constant residual."""
        syms = [*self.A, *self.B, *self.Q.free_symbols, *self.R.free_symbols, *self.D, *self.P.free_symbols,
                self.rho, self.c_sym]
        syms = list(dict.fromkeys(syms))
        if "f" not in self._numeric:
            self._numeric["f"] = sp.lambdify(syms, [self.quadratic, self.constant], "numpy")
        vals = {}
        for Ms, Mv in ((self.A, A), (self.B, B), (self.Q, Q), (self.R, R), (self.D, D), (self.P, P)):
            Mv = np.asarray(Mv, dtype=np.float64).reshape(Ms.shape)
            for i in range(Ms.shape[0]):
                for j in range(Ms.shape[1]):
                    if Ms[i, j].is_Symbol:
                        vals[Ms[i, j]] = Mv[i, j]
        vals[self.rho], vals[self.c_sym] = float(rho), float(c)
        M, const = self._numeric["f"](*[vals[s] for s in syms])
        return np.asarray(M, dtype=np.float64), float(const)


def _sym_matrix(name: str, rows: int, cols: int, symmetric: bool = False) -> sp.Matrix:
    if symmetric:
        return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{min(i, j) + 1}{max(i, j) + 1}", real=True))
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i + 1}{j + 1}", real=True))


def lqr_matrix(n: int = 2, k: int = 1, m: int = 1) -> LQRMatrixDerivation:
    """Derive the matrix Riccati equation with explicit symbolic (n, n), (n, k), (n, m) matrices.

    The same steps as :func:`lqr_scalar`: V = -1/2 x'Px - c with P symmetric, the generator, the first-order
    condition in the k-vector a (a linear system), the residual, and the matching of its quadratic part with the
    Riccati operator. Sizes up to 3 are practical (sympy inverts R symbolically).
    """
    for name, v in (("n", n), ("k", k), ("m", m)):
        if not isinstance(v, int) or not 1 <= v <= 3:
            raise ValueError(f"{name} must be an integer between 1 and 3, got {v!r}")
    x = sp.Matrix(sp.symbols(f"x1:{n + 1}", real=True))
    a = sp.Matrix(sp.symbols(f"a1:{k + 1}", real=True))
    A, B, D = _sym_matrix("A", n, n), _sym_matrix("B", n, k), _sym_matrix("D", n, m)
    Q, R, P = _sym_matrix("Q", n, n, True), _sym_matrix("R", k, k, True), _sym_matrix("P", n, n, True)
    rho = sp.Symbol("rho", positive=True)
    c = sp.Symbol("c", real=True)
    V = -sp.Rational(1, 2) * (x.T * P * x)[0, 0] - c
    reward = -sp.Rational(1, 2) * ((x.T * Q * x)[0, 0] + (a.T * R * a)[0, 0])
    objective = reward + ito_generator(V, list(x), list(A * x + B * a), D)
    foc = [sp.diff(objective, ai) for ai in a]
    sol = sp.solve(foc, list(a), dict=True)[0]
    # every entry is a rational function of the symbols: sympy's cancel() is canonical for those (and fast)
    a_star = sp.Matrix([sp.factor(sol[ai]) for ai in a])
    residual = sp.expand(rho * V - objective.subs(sol))
    quadratic = sp.hessian(residual, list(x)).applyfunc(sp.cancel)  # residual = 1/2 x'Mx + const
    constant = sp.cancel(residual.subs({xi: 0 for xi in x}))
    (c_sol,) = sp.solve(constant, c)
    return LQRMatrixDerivation(x=x, a=a, A=A, B=B, Q=Q, R=R, D=D, P=P, rho=rho, c_sym=c, residual=residual,
                               a_star=a_star, quadratic=quadratic, constant=constant,
                               riccati=riccati_operator(A, B, Q, R, P, rho), c=sp.simplify(c_sol))


# an example of the scalar LQ problem with state-dependent noise (Appendix A, "Noise that grows with the state")
STATE_NOISE_LQ = {"alpha": -0.3, "beta": 1.0, "q": 1.0, "r_a": 0.2, "s0": 0.3, "s1": 0.2, "rho": 0.1}


@dataclass(frozen=True)
class StateNoiseLQDerivation:
    """The scalar LQ problem with state-dependent noise, dX = (alpha X + beta a) dt + (s0 + s1 X) dW,
    r = -1/2 (q x^2 + r_a a^2), solved by the ansatz V = -1/2 P x^2 - b x - c (Appendix A).

    ``residual``: rho V - max_a {r + L^a V}, a quadratic in x; ``coeffs``: its coefficients of x^2, x, 1;
    ``riccati``: 2 x (the x^2 coefficient), a quadratic in P; ``P``: its positive root; ``b``, ``c``: the
    linear and constant terms at that root; ``a_star``: the maximiser -beta (P x + b) / r_a.
    """

    x: sp.Symbol
    params: dict
    value: sp.Expr
    a_star: sp.Expr
    residual: sp.Expr
    coeffs: tuple
    riccati: sp.Expr
    P: sp.Expr
    b: sp.Expr
    c: sp.Expr

    def subs_numbers(self, **values) -> dict:
        """P, b, c as floats (defaults: :data:`STATE_NOISE_LQ`)."""
        vals = {**STATE_NOISE_LQ, **values}
        sub = {self.params[k]: v for k, v in vals.items()}
        return {"P": float(self.P.subs(sub)), "b": float(self.b.subs(sub)), "c": float(self.c.subs(sub))}


def lq_state_noise() -> StateNoiseLQDerivation:
    """Derive the closed form of the scalar LQ problem whose noise s0 + s1 x grows with the state: the value is
    still quadratic, V = -1/2 P x^2 - b x - c; the noise's slope s1 enters the Riccati equation (it acts like
    a less stable drift), its product s0 s1 makes the linear term b, and the policy gets an offset."""
    x, a = sp.symbols("x a", real=True)
    alpha, s1 = sp.symbols("alpha s1", real=True)
    beta, q, r_a, s0, rho = sp.symbols("beta q r_a s0 rho", positive=True)
    P, b, c = sp.symbols("P b c", real=True)
    p = dict(alpha=alpha, beta=beta, q=q, r_a=r_a, s0=s0, s1=s1, rho=rho)
    V = -sp.Rational(1, 2) * P * x ** 2 - b * x - c
    objective = -sp.Rational(1, 2) * (q * x ** 2 + r_a * a ** 2) + ito_generator(V, x, alpha * x + beta * a,
                                                                                s0 + s1 * x)
    (a_star,) = sp.solve(sp.diff(objective, a), a)        # concave in a (second derivative -r_a)
    residual = sp.expand(rho * V - objective.subs(a, a_star))
    poly = sp.Poly(residual, x)
    coeffs = tuple(poly.coeff_monomial(m) for m in (x ** 2, x, 1))
    riccati = sp.expand(2 * coeffs[0])
    example = {p[k]: v for k, v in STATE_NOISE_LQ.items()}
    P_pos = max(sp.solve(riccati, P), key=lambda r_: float(r_.subs(example)))
    (b_sol,) = sp.solve(coeffs[1].subs(P, P_pos), b)
    (c_sol,) = sp.solve(coeffs[2].subs({P: P_pos, b: b_sol}), c)
    return StateNoiseLQDerivation(x=x, params=p, value=V, a_star=a_star, residual=residual, coeffs=coeffs,
                                  riccati=riccati, P=sp.simplify(P_pos), b=sp.simplify(b_sol), c=sp.simplify(c_sol))
