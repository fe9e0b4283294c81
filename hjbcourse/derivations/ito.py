"""Itô's formula and the generator, symbolically (book: chapter "The stochastic HJB").

* :func:`ito_generator` builds L^a phi = grad phi . f + 1/2 Tr(S S' Hess phi) for sympy expressions.
* :func:`ito_step_expansion` derives Itô's formula the way the chapter does: Taylor-expand phi over one small
  step dX = f h + s sqrt(h) Z, take the Gaussian expectation, and read off the coefficient of h.
* :func:`generator_power` iterates the generator, for the short-time series
  E[phi(X_h)] = phi + h L phi + h^2/2 L^2 phi + O(h^3) that predicts the error the chapter measures.
* :class:`SinhOU` is the chapter's test diffusion: X = sinh(Y) with Y a controlled Ornstein–Uhlenbeck process, so
  that X has nonlinear drift and diffusion (derived here by Itô's formula) and yet an exactly known law at every
  time, which makes E[phi(X_h)] computable to round-off by Gauss–Hermite quadrature.

Sympy and numpy only, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import sympy as sp

__all__ = ["ito_generator", "ito_step_expansion", "ItoStepExpansion", "generator_power", "SinhOU"]


def _as_list(v) -> list:
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, sp.MatrixBase):
        return list(v)
    return [v]


def ito_generator(phi: sp.Expr, x, f, S) -> sp.Expr:
    """L phi = grad phi . f + 1/2 Tr(S S' Hess phi) for a sympy expression ``phi`` of the state ``x``.

    ``x``: a symbol or a list of d symbols; ``f``: an expression or a list of d expressions (the drift);
    ``S``: an expression (d = m = 1) or a (d, m) sympy Matrix (the diffusion). The action, if any, is just
    another symbol inside ``f`` and ``S``. Implements the generator of the chapter's eq. (generator).
    """
    xs = _as_list(x)
    fs = _as_list(f)
    d = len(xs)
    if len(fs) != d:
        raise ValueError(f"f must have {d} entries (one per state variable), got {len(fs)}")
    Sm = S if isinstance(S, sp.MatrixBase) else sp.Matrix([[S]])
    if Sm.shape[0] != d:
        raise ValueError(f"S must have {d} rows, got shape {Sm.shape}")
    grad = sp.Matrix([sp.diff(phi, xi) for xi in xs])
    hess = sp.hessian(phi, xs)
    drift_term = sum(grad[i] * fs[i] for i in range(d))
    diffusion_term = sp.Rational(1, 2) * (Sm * Sm.T * hess).trace()
    return drift_term + diffusion_term


def generator_power(phi: sp.Expr, x, f, S, k: int) -> sp.Expr:
    """(L)^k phi: the generator applied ``k`` times (k >= 0), for the short-time series of E[phi(X_h)]."""
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    out = phi
    for _ in range(k):
        out = ito_generator(out, x, f, S)
    return out


@dataclass(frozen=True)
class ItoStepExpansion:
    """The expectation of phi after one small step dX = f h + s sqrt(h) Z, Z ~ N(0, 1), expanded in h.

    ``expectation``: E[phi(x + f h + s sqrt(h) Z)] - phi(x) up to and including order h^2;
    ``first_order``: its coefficient of h (the generator f phi' + 1/2 s^2 phi'');
    ``second_order``: its coefficient of h^2 (for one Euler step, not for the SDE: it misses the derivatives of
    f and s that 1/2 L^2 phi contains); ``dw_moments``: the Gaussian moments used.
    """

    x: sp.Symbol
    h: sp.Symbol
    f: sp.Symbol
    s: sp.Symbol
    phi: sp.Function
    expectation: sp.Expr
    first_order: sp.Expr
    second_order: sp.Expr
    dw_moments: dict


def ito_step_expansion(order: int = 4) -> ItoStepExpansion:
    """Itô's formula from a Taylor expansion: E[phi(x + dX)] - phi(x) with dX = f h + s dW, dW = sqrt(h) Z.

    phi is Taylor-expanded to ``order`` (>= 4 gives every term up to h^2), the moments
    E[Z^j] = (j-1)!! (j even), 0 (j odd) are substituted, and the result is sorted by powers of h. The h^1
    coefficient is f phi' + 1/2 s^2 phi'': the 1/2 s^2 phi'' survives because E[dW^2] = h, not h^2.
    """
    if not isinstance(order, int) or order < 2:
        raise ValueError(f"order must be an integer >= 2, got {order!r}")
    x, f, s = sp.symbols("x f s", real=True)
    h = sp.Symbol("h", positive=True)
    Z = sp.Symbol("Z", real=True)
    phi = sp.Function("varphi")
    dX = f * h + s * sp.sqrt(h) * Z
    taylor = sum(sp.diff(phi(x), x, j) * dX ** j / sp.factorial(j) for j in range(1, order + 1))
    poly = sp.Poly(sp.expand(taylor), Z)
    moments = {j: (sp.factorial2(j - 1) if j % 2 == 0 else sp.Integer(0)) for j in range(order + 1)}
    moments[0] = sp.Integer(1)
    expectation = sp.expand(sum(coeff * moments[mon[0]] for mon, coeff in zip(poly.monoms(), poly.coeffs())))
    # keep orders h and h^2 (higher powers of h need a higher-order Taylor polynomial to be complete)
    first = sp.simplify(expectation.coeff(h, 1))
    second = sp.simplify(expectation.coeff(h, 2))
    truncated = first * h + second * h ** 2
    return ItoStepExpansion(x=x, h=h, f=f, s=s, phi=phi, expectation=truncated, first_order=first,
                            second_order=second, dw_moments=moments)


class SinhOU:
    """The chapter's test diffusion X = sinh(Y), dY = (a - theta Y) dt + s dW (a: the action, held constant).

    By Itô's formula X solves dX = f(X, a) dt + S(X) dW with
    f(x, a) = sqrt(1 + x^2) (a - theta asinh x) + 1/2 s^2 x and S(x) = s sqrt(1 + x^2):
    nonlinear drift and diffusion, yet Y_h is Gaussian with known mean and variance, so E[phi(X_h)] is a
    one-dimensional Gaussian integral that Gauss–Hermite quadrature computes to round-off for smooth phi.
    """

    def __init__(self, theta: float = 1.0, s: float = 0.5):
        if not float(theta) > 0:
            raise ValueError(f"theta must be positive, got {theta!r}")
        if not float(s) > 0:
            raise ValueError(f"s must be positive, got {s!r}")
        self.theta, self.s = float(theta), float(s)
        self.x, self.a = sp.symbols("x a", real=True)
        self.theta_sym, self.s_sym = sp.symbols("theta s", positive=True)

    # -- symbolic --------------------------------------------------------------------------------------
    def coefficients(self, symbolic: bool = True) -> tuple[sp.Expr, sp.Expr]:
        """(f(x, a), S(x)) derived by Itô's formula applied to x = sinh(y); symbols theta, s unless
        ``symbolic`` is false (then the instance's numbers)."""
        y = sp.Symbol("y", real=True)
        th, s = (self.theta_sym, self.s_sym) if symbolic else (sp.nsimplify(self.theta), sp.nsimplify(self.s))
        g = sp.sinh(y)
        drift_y, diff_y = self.a - th * y, s
        f_y = sp.diff(g, y) * drift_y + sp.Rational(1, 2) * diff_y ** 2 * sp.diff(g, y, 2)
        S_y = sp.diff(g, y) * diff_y
        # back to x: y = asinh x, cosh(asinh x) = sqrt(1 + x^2)
        sub = {y: sp.asinh(self.x)}
        f_x = sp.simplify(f_y.subs(sub).rewrite(sp.sqrt))
        S_x = sp.simplify(S_y.subs(sub).rewrite(sp.sqrt))
        return f_x, S_x

    def generator(self, phi: sp.Expr, k: int = 1) -> sp.Expr:
        """(L^a)^k phi for a sympy expression ``phi`` of ``self.x``, with the instance's numbers."""
        f, S = self.coefficients(symbolic=False)
        return generator_power(phi, self.x, f, S, k)

    # -- numerical -------------------------------------------------------------------------------------
    @staticmethod
    def _gauss_hermite(fun: Callable, mean, std, n_nodes: int) -> np.ndarray:
        z, w = np.polynomial.hermite_e.hermegauss(n_nodes)  # weight exp(-z^2/2)
        w = w / np.sqrt(2 * np.pi)
        vals = fun(np.asarray(mean)[..., None] + np.asarray(std)[..., None] * z)
        return (vals * w).sum(-1)

    def expectation(self, phi: Callable, x0: float, a: float, h, n_nodes: int = 80) -> np.ndarray:
        """E[phi(X_h) | X_0 = x0] under the action ``a``, exactly up to quadrature round-off.

        ``phi`` is a numpy function; ``h`` a float or an array of horizons (> 0). Y_h is Gaussian with mean
        a/theta + (y0 - a/theta) e^{-theta h} and variance s^2 (1 - e^{-2 theta h}) / (2 theta).
        """
        h = np.asarray(h, dtype=np.float64)
        if not np.all(h > 0):
            raise ValueError("h must be positive")
        th, s = self.theta, self.s
        y0 = np.arcsinh(float(x0))
        mean = a / th + (y0 - a / th) * np.exp(-th * h)
        std = s * np.sqrt(-np.expm1(-2 * th * h) / (2 * th))
        return self._gauss_hermite(lambda y: phi(np.sinh(y)), mean, std, n_nodes)

    def euler_expectation(self, phi: Callable, x0: float, a: float, h, n_nodes: int = 80) -> np.ndarray:
        """E[phi(x0 + f h + S sqrt(h) Z)]: the law after ONE Euler–Maruyama step, not the law of X_h."""
        h = np.asarray(h, dtype=np.float64)
        f, S = (sp.lambdify((self.x, self.a), e, "numpy") for e in self.coefficients(symbolic=False))
        mean = x0 + f(x0, a) * h
        std = S(x0, a) * np.sqrt(h) * np.ones_like(h)
        return self._gauss_hermite(phi, mean, std, n_nodes)

    def sample_paths(self, x0: float, a: float, t: Sequence[float], n_paths: int,
                     generator: np.random.Generator | int | None = 0) -> np.ndarray:
        """(n_paths, len(t)): exact samples of X on the time grid ``t`` (increasing, t[0] = 0), via the exact
        Gaussian transition of Y."""
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 1 or t[0] != 0 or np.any(np.diff(t) <= 0):
            raise ValueError("t must be an increasing 1-D grid starting at 0")
        rng = np.random.default_rng(generator)
        th, s = self.theta, self.s
        y = np.full(n_paths, np.arcsinh(float(x0)))
        out = np.empty((n_paths, t.size))
        out[:, 0] = np.sinh(y)
        for i, dt in enumerate(np.diff(t), start=1):
            e = np.exp(-th * dt)
            y = a / th + (y - a / th) * e + s * np.sqrt(-np.expm1(-2 * th * dt) / (2 * th)) * rng.standard_normal(n_paths)
            out[:, i] = np.sinh(y)
        return out
