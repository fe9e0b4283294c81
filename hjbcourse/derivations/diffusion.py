"""Diffusion models as control, symbolically (book, chapter "Diffusion models as control").

Four computations, each returning the expressions the chapter displays and a residual that must simplify to
zero (the tests check it):

* :func:`fokker_planck_to_hjb`: substitute rho = exp(-V) into the reverse-time Fokker-Planck equation
  d_t rho = -div(mu rho) - 1/2 Tr(Sigma Sigma^T Hess rho), divide by -exp(-V), and recover, term by term,
  -d_t V = -div mu + mu . grad V - 1/2 |Sigma^T grad V|^2 + 1/2 Tr(Sigma Sigma^T Hess V);
  in any dimension ``d`` with fully symbolic mu_i(t, x) and Sigma_ij(t) (time first, as in the package).
* :func:`quadratic_minimisation`: the convex-conjugate step inf_u {1/2 |u|^2 + u . p} = -1/2 |p|^2 at u = -p.
* :func:`verification_identity`: Ito's drift of V along the controlled diffusion plus the running cost is
  1/2 |u - u*|^2 once V solves the HJB.
* :func:`vp_marginal_check`: the Gaussian N(alpha m, alpha^2 c + 1 - alpha^2) solves the Fokker-Planck
  equation of the variance-preserving SDE for any schedule beta(s).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = [
    "FokkerPlanckToHJB",
    "fokker_planck_to_hjb",
    "QuadraticMinimisation",
    "quadratic_minimisation",
    "VerificationIdentity",
    "verification_identity",
    "vp_marginal_check",
]


def _check_dim(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _setup(d: int, m: int | None):
    d = _check_dim("d", d)
    m = d if m is None else _check_dim("m", m)
    t = sp.Symbol("t", real=True)
    xs = sp.symbols(f"x1:{d + 1}", real=True) if d > 1 else (sp.Symbol("x", real=True),)
    mu = sp.Matrix([sp.Function(f"mu_{i + 1}" if d > 1 else "mu")(t, *xs) for i in range(d)])
    if d == 1 and m == 1:
        Sigma = sp.Matrix([[sp.Function("Sigma")(t)]])
    else:
        Sigma = sp.Matrix(d, m, lambda i, j: sp.Function(f"Sigma_{i + 1}{j + 1}")(t))
    V = sp.Function("V")(t, *xs)
    return d, m, t, xs, mu, Sigma, V


def _grad(f, xs) -> sp.Matrix:
    return sp.Matrix([sp.diff(f, x) for x in xs])


def _hess(f, xs) -> sp.Matrix:
    return sp.Matrix(len(xs), len(xs), lambda i, j: sp.diff(f, xs[i], xs[j]))


def _div(vec, xs):
    return sum(sp.diff(vec[i], xs[i]) for i in range(len(xs)))


@dataclass(frozen=True)
class FokkerPlanckToHJB:
    """The substitution rho = exp(-V) in the reverse-time Fokker-Planck equation, term by term.

    ``fokker_planck``: d_t rho + div(mu rho) + 1/2 Tr(S S^T Hess rho) (zero for the marginal flow), with rho
    a generic function; ``hjb``: the right-hand side of -d_t V = ... after taking the infimum over u;
    ``terms``: (name, Fokker-Planck term, the same term after rho = exp(-V) and division by -exp(-V), the
    piece of the HJB it must equal);
    ``residual``: the substituted equation minus (d_t V + hjb), which simplifies to zero.
    """

    d: int
    m: int
    t: sp.Symbol
    x: tuple
    mu: sp.Matrix
    Sigma: sp.Matrix
    V: sp.Expr
    rho: sp.Expr
    fokker_planck: sp.Expr
    substituted: sp.Expr
    hjb: sp.Expr
    terms: tuple
    residual: sp.Expr

    @property
    def equation(self) -> sp.Eq:
        """The HJB for V as an equation: -d_t V = ..."""
        return sp.Eq(-sp.diff(self.V, self.t), self.hjb)


def fokker_planck_to_hjb(d: int = 1, m: int | None = None) -> FokkerPlanckToHJB:
    """Substitute rho = exp(-V) into d_t rho = -div(mu rho) - 1/2 Tr(Sigma Sigma^T Hess rho) in R^d
    (Sigma is d x m, a function of t; mu_i functions of (t, x)) and recover the HJB for V = -log rho."""
    d, m, t, xs, mu, Sigma, V = _setup(d, m)
    rho = sp.Function("rho")(t, *xs)
    S = Sigma * Sigma.T
    pieces = [
        ("time derivative", lambda r: sp.diff(r, t)),
        ("transport", lambda r: _div(mu * r, xs)),
        ("diffusion", lambda r: sp.Rational(1, 2) * (S * _hess(r, xs)).trace()),
    ]
    fp = sum(f(rho) for _, f in pieces)
    gV = _grad(V, xs)
    hjb_terms = {
        "time derivative": sp.diff(V, t),
        "transport": -_div(mu, xs) + (mu.T * gV)[0, 0],
        "diffusion": -sp.Rational(1, 2) * (gV.T * S * gV)[0, 0] + sp.Rational(1, 2) * (S * _hess(V, xs)).trace(),
    }
    terms = []
    total = 0
    for name, f in pieces:
        sub = sp.expand(f(sp.exp(-V)).doit() / (-sp.exp(-V)))
        terms.append((name, f(rho), sub, hjb_terms[name]))
        total += sub
    hjb = sp.expand(hjb_terms["transport"] + hjb_terms["diffusion"])
    # after division the equation reads d_t V + (transport) + (diffusion) = 0, i.e. -d_t V = hjb
    residual = sp.simplify(sp.expand(total - (sp.diff(V, t) + hjb)))
    return FokkerPlanckToHJB(d=d, m=m, t=t, x=xs, mu=mu, Sigma=Sigma, V=V, rho=rho, fokker_planck=fp,
                             substituted=sp.expand(total), hjb=hjb, terms=tuple(terms), residual=residual)


@dataclass(frozen=True)
class QuadraticMinimisation:
    """inf_u {1/2 |u|^2 + u . p}: the minimiser ``u_star`` (= -p), the ``minimum`` (= -1/2 |p|^2) and the
    Hessian in u (the identity: the problem is strictly convex)."""

    u: sp.Matrix
    p: sp.Matrix
    objective: sp.Expr
    u_star: sp.Matrix
    minimum: sp.Expr
    hessian: sp.Matrix


def quadratic_minimisation(m: int = 1) -> QuadraticMinimisation:
    """The convex-conjugate step of the chapter in R^m, with p standing for Sigma^T grad V."""
    m = _check_dim("m", m)
    u = sp.Matrix(sp.symbols(f"u1:{m + 1}", real=True) if m > 1 else [sp.Symbol("u", real=True)])
    p = sp.Matrix(sp.symbols(f"p1:{m + 1}", real=True) if m > 1 else [sp.Symbol("p", real=True)])
    obj = sp.Rational(1, 2) * (u.T * u)[0, 0] + (u.T * p)[0, 0]
    sol = sp.solve([sp.diff(obj, ui) for ui in u], list(u), dict=True)
    if len(sol) != 1:
        raise RuntimeError(f"expected one stationary point, found {sol}")
    u_star = u.subs(sol[0])
    return QuadraticMinimisation(u=u, p=p, objective=obj, u_star=u_star, minimum=sp.simplify(obj.subs(sol[0])),
                                 hessian=sp.hessian(obj, list(u)))


@dataclass(frozen=True)
class VerificationIdentity:
    """Along dX = (mu + Sigma u) dt + Sigma dW, Ito's drift of V(s, X_s) plus the running cost
    1/2 |u|^2 - div mu equals 1/2 |u - u*|^2 with u* = -Sigma^T grad V, once d_t V is taken from the HJB.

    ``ito_drift``: d_t V + (mu + Sigma u) . grad V + 1/2 Tr(Sigma Sigma^T Hess V); ``running_cost``;
    ``gap``: 1/2 |u - u*|^2; ``residual``: ito_drift + running_cost - gap with the HJB used, zero.
    """

    ito_drift: sp.Expr
    running_cost: sp.Expr
    u_star: sp.Matrix
    gap: sp.Expr
    residual: sp.Expr


def verification_identity(d: int = 1, m: int | None = None) -> VerificationIdentity:
    """The pathwise identity behind J(u) = V + 1/2 E int |u - u*|^2, for generic mu, Sigma, V and u(t, x)."""
    d, m, t, xs, mu, Sigma, V = _setup(d, m)
    u = sp.Matrix([sp.Function(f"u_{j + 1}" if m > 1 else "u")(t, *xs) for j in range(m)])
    gV = _grad(V, xs)
    S = Sigma * Sigma.T
    ito = sp.diff(V, t) + ((mu + Sigma * u).T * gV)[0, 0] + sp.Rational(1, 2) * (S * _hess(V, xs)).trace()
    running = sp.Rational(1, 2) * (u.T * u)[0, 0] - _div(mu, xs)
    u_star = -Sigma.T * gV
    gap = sp.Rational(1, 2) * ((u - u_star).T * (u - u_star))[0, 0]
    hjb = fokker_planck_to_hjb(d, m)
    # the HJB, -d_t V = hjb, written with this function's symbols (the same x, t and V)
    dVdt = -hjb.hjb.subs(dict(zip(hjb.mu, mu))).subs(dict(zip(hjb.Sigma, Sigma)))
    residual = sp.simplify(sp.expand((ito + running - gap).subs(sp.diff(V, t), dVdt)))
    return VerificationIdentity(ito_drift=ito, running_cost=running, u_star=u_star, gap=gap, residual=residual)


def vp_marginal_check() -> dict:
    """The 1-D Gaussian N(alpha m, alpha^2 c + 1 - alpha^2), alpha = exp(-B(s)/2) with B' = beta, against
    the Fokker-Planck equation d_s p = d_x(1/2 beta x p) + 1/2 beta d_xx p of the VP SDE.

    Returns the density ``p``, the ``residual`` (simplifies to zero) and the symbols used.
    """
    x, s = sp.symbols("x s", real=True)
    mean = sp.Symbol("m", real=True)
    c = sp.Symbol("c", positive=True)
    B = sp.Function("B")(s)  # int_0^s beta
    beta = sp.diff(B, s)
    alpha = sp.exp(-B / 2)
    var = alpha**2 * c + 1 - alpha**2
    p = sp.exp(-(x - alpha * mean) ** 2 / (2 * var)) / sp.sqrt(2 * sp.pi * var)
    fp = sp.diff(p, s) - sp.diff(sp.Rational(1, 2) * beta * x * p, x) - sp.Rational(1, 2) * beta * sp.diff(p, x, 2)
    residual = sp.simplify(fp / p)
    return {"p": p, "residual": residual, "x": x, "s": s, "B": B, "alpha": alpha, "variance": var}
