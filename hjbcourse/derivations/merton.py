"""Merton's portfolio and consumption problem from the power ansatz, symbolically (book: Appendix B).

Wealth dX = (r + pi (mu - r) - k) X dt + pi sigma X dW, reward u(kX) with u(c) = c^{1-gamma} / (1-gamma)
(log c when gamma = 1), discount rho.

* :func:`merton` substitutes V = A x^{1-gamma} / (1-gamma) into the HJB, divides by x^{1-gamma}, solves the
  first-order conditions for pi and k, and solves the remaining equation for A (through k = A^{-1/gamma}).
* :func:`merton_log` does the same for log utility with the ansatz V = log(x) / rho + b.
* :func:`hjb_residual_merton` is rho V - [u(kx) + L^{pi,k} V] for a given V and controls (zero at the
  closed form, for every wealth x).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ito import ito_generator

__all__ = ["COURSE_MERTON", "MertonDerivation", "merton", "MertonLogDerivation", "merton_log", "hjb_residual_merton",
           "merton_symbols"]

# the course's parameters (the table of the Merton chapter)
COURSE_MERTON = {"r": 0.03, "mu": 0.08, "sigma": 0.2, "gamma": 2.0, "rho": 0.05}


def merton_symbols() -> dict:
    """The symbols of the derivation: x, pi, k, r, mu, sigma, gamma, rho, A (with their sign assumptions)."""
    x, k, sigma, gamma, rho, A = sp.symbols("x k sigma gamma rho A", positive=True)
    pi, r, mu = sp.symbols("pi r mu", real=True)
    return dict(x=x, pi=pi, k=k, r=r, mu=mu, sigma=sigma, gamma=gamma, rho=rho, A=A)


def _dynamics(s: dict):
    drift = (s["r"] + s["pi"] * (s["mu"] - s["r"]) - s["k"]) * s["x"]
    diffusion = s["pi"] * s["sigma"] * s["x"]
    return drift, diffusion


def hjb_residual_merton(V: sp.Expr, pi, k, gamma=None, log_utility: bool = False) -> sp.Expr:
    """rho V - [u(k x) + L^{pi,k} V] for a sympy expression ``V`` of the symbol ``merton_symbols()['x']``.

    ``pi`` and ``k`` are expressions (the controls to test); ``gamma`` overrides the symbol; ``log_utility``
    uses u = log. Zero for every x when V is the value and (pi, k) the optimal controls.
    """
    s = merton_symbols()
    if gamma is not None:
        s["gamma"] = sp.sympify(gamma)
    s_ctrl = {**s, "pi": sp.sympify(pi), "k": sp.sympify(k)}
    drift, diffusion = _dynamics(s_ctrl)
    cons = s_ctrl["k"] * s["x"]
    u = sp.log(cons) if log_utility else cons ** (1 - s["gamma"]) / (1 - s["gamma"])
    return s["rho"] * V - (u + ito_generator(V, s["x"], drift, diffusion))


@dataclass(frozen=True)
class MertonDerivation:
    """Every step of Appendix B (gamma != 1) as sympy objects.

    ``value``: the ansatz; ``reduced``: [u + L V] / x^{1-gamma} as a function of (pi, k, A), free of x;
    ``foc_pi``, ``foc_k``: its partial derivatives; ``pi``, ``k_of_A``: their solutions;
    ``A_equation``: rho A / (1-gamma) = reduced at the optimum (an equation in A alone);
    ``M``: the certainty-equivalent growth rate r + (mu-r)^2 / (2 gamma sigma^2);
    ``k``, ``A``: the solution and ``feasibility``: rho - (1-gamma) M, which must be positive (then k > 0);
    these three are written with the symbol ``symbols['M']``: substitute ``M`` (see :meth:`explicit`).
    """

    symbols: dict
    value: sp.Expr
    reduced: sp.Expr
    foc_pi: sp.Expr
    foc_k: sp.Expr
    pi: sp.Expr
    k_of_A: sp.Expr
    A_equation: sp.Equality
    M: sp.Expr
    k: sp.Expr
    A: sp.Expr
    feasibility: sp.Expr

    def explicit(self, name: str) -> sp.Expr:
        """``k``, ``A``, ``feasibility`` (or any field) with the symbol M replaced by its expression."""
        return getattr(self, name).subs(self.symbols["M"], self.M)

    def subs_numbers(self, **values) -> dict:
        """pi, k, A, M at numbers (defaults: the course's parameters), as floats."""
        vals = {**COURSE_MERTON, **values}
        unknown = set(vals) - set(COURSE_MERTON)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)}; expected some of {sorted(COURSE_MERTON)}")
        sub = {self.symbols[n]: sp.nsimplify(v) for n, v in vals.items()}
        return {n: float(self.explicit(n).subs(sub)) for n in ("pi", "k", "A", "M")}


def merton() -> MertonDerivation:
    """Derive Merton's constants from V = A x^{1-gamma} / (1-gamma) (Appendix B)."""
    s = merton_symbols()
    x, pi, k, r, mu, sigma, gamma, rho, A = (s[n] for n in ("x", "pi", "k", "r", "mu", "sigma", "gamma", "rho", "A"))
    M_sym = sp.Symbol("M", real=True)
    V = A * x ** (1 - gamma) / (1 - gamma)
    drift, diffusion = _dynamics(s)
    rhs = (k * x) ** (1 - gamma) / (1 - gamma) + ito_generator(V, x, drift, diffusion)
    # every term is proportional to x^{1-gamma}: the reduced HJB is the factor in front of it
    reduced = rhs.subs(x, 1)
    if sp.simplify(sp.powsimp(sp.expand(rhs - x ** (1 - gamma) * reduced), force=True)) != 0:  # pragma: no cover
        raise AssertionError("the power ansatz did not factor x^(1-gamma) out of the HJB")
    # the same function written the way the book displays it (checked equal, then used for display)
    tidy = A * (r + pi * (mu - r) - k) - gamma * A * pi ** 2 * sigma ** 2 / 2 + k ** (1 - gamma) / (1 - gamma)
    if sp.simplify(reduced - tidy) != 0:  # pragma: no cover
        raise AssertionError("the reduced HJB differs from its displayed form")
    reduced = tidy
    foc_pi = sp.factor(sp.diff(reduced, pi))
    foc_k = sp.simplify(sp.diff(reduced, k))
    (pi_star,) = sp.solve(foc_pi, pi)
    k_of_A = A ** (-1 / gamma)
    if sp.simplify(foc_k.subs(k, k_of_A)) != 0:  # pragma: no cover
        raise AssertionError("k = A^(-1/gamma) does not solve the first-order condition")
    M = r + (mu - r) ** 2 / (2 * gamma * sigma ** 2)
    # at pi*, the pi-terms add up to (mu-r)^2/(2 gamma sigma^2): the reduced HJB is A (M - k) + k^{1-gamma}/(1-gamma)
    at_opt = A * (M_sym - k) + k ** (1 - gamma) / (1 - gamma)
    if sp.simplify(reduced.subs(pi, pi_star) - at_opt.subs(M_sym, M)) != 0:  # pragma: no cover
        raise AssertionError("the optimal portfolio does not produce the growth rate M")
    A_rhs = (1 - gamma) * A * M_sym + gamma * A ** ((gamma - 1) / gamma)
    if sp.simplify(sp.powsimp((1 - gamma) * at_opt.subs(k, k_of_A) - A_rhs, force=True)) != 0:  # pragma: no cover
        raise AssertionError("the equation for A differs from its displayed form")
    A_equation = sp.Eq(rho * A, A_rhs)
    # parametrise by k (A = k^{-gamma}, the first-order condition): the equation becomes linear in k
    eq_k = sp.expand(sp.powsimp((rho * A / (1 - gamma) - at_opt).subs(A, k ** (-gamma)) * k ** gamma, force=True))
    (k_star,) = sp.solve(eq_k, k)
    k_star = sp.factor(k_star)
    return MertonDerivation(symbols={**s, "M": M_sym}, value=V, reduced=reduced, foc_pi=foc_pi, foc_k=foc_k,
                            pi=pi_star, k_of_A=k_of_A, A_equation=A_equation, M=M,
                            k=k_star, A=k_star ** (-gamma), feasibility=rho - (1 - gamma) * M_sym)


@dataclass(frozen=True)
class MertonLogDerivation:
    """Log utility (gamma = 1): ansatz V = log(x) / rho + b; ``pi`` = (mu-r)/sigma^2, ``k`` = rho,
    ``b`` the constant, ``value`` = log(rho x)/rho + (M - rho)/rho^2 with M = r + (mu-r)^2/(2 sigma^2)."""

    symbols: dict
    ansatz: sp.Expr
    reduced: sp.Expr
    pi: sp.Expr
    k: sp.Expr
    b: sp.Expr
    M: sp.Expr
    value: sp.Expr


def merton_log() -> MertonLogDerivation:
    """Derive the log-utility branch (gamma = 1) of Merton's solution."""
    s = merton_symbols()
    x, pi, k, r, mu, sigma, rho = (s[n] for n in ("x", "pi", "k", "r", "mu", "sigma", "rho"))
    b = sp.Symbol("b", real=True)
    V = sp.log(x) / rho + b
    drift, diffusion = _dynamics(s)
    rhs = sp.expand(sp.expand_log(sp.log(k * x), force=True) + ito_generator(V, x, drift, diffusion))
    reduced = sp.expand(rhs - sp.log(x))  # the log x terms cancel against rho V's
    (pi_star,) = sp.solve(sp.diff(reduced, pi), pi)
    (k_star,) = sp.solve(sp.diff(reduced, k), k)
    (b_sol,) = sp.solve(sp.Eq(rho * b, reduced.subs({pi: pi_star, k: k_star})), b)
    M = r + (mu - r) ** 2 / (2 * sigma ** 2)
    value = sp.log(rho * x) / rho + (M - rho) / rho ** 2
    return MertonLogDerivation(symbols=s, ansatz=V, reduced=reduced, pi=pi_star, k=k_star,
                               b=sp.simplify(b_sol), M=M, value=value)
