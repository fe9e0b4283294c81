"""The sympy Hamilton–Jacobi correspondence: Legendre transforms and the HJB Hamiltonian."""
import pytest
import sympy as sp

import hjbcourse as hjb
from hjbcourse.derivations import hamilton_jacobi as hj


def test_mechanics_legendre_transform_is_the_energy():
    d = hj.mechanics_hamiltonian()
    assert sp.simplify(d["H"] - (d["p"] ** 2 / (2 * d["m"]) + d["U"](d["q"]))) == 0


def test_hjb_hamiltonian_is_the_legendre_transform_of_the_lagrangian():
    d = hj.lqr_hamilton_jacobi()
    x, p, alpha, beta, q, r_a = (d[k] for k in ("x", "p", "alpha", "beta", "q", "r_a"))
    assert d["difference"] == 0
    assert sp.simplify(d["H_hjb"] - (alpha * x * p + beta ** 2 * p ** 2 / (2 * r_a) - q * x ** 2 / 2)) == 0
    assert sp.simplify(d["a_star"] - beta * p / r_a) == 0


def test_legendre_transform_is_an_involution_for_a_quadratic():
    v, p, w = sp.symbols("v p w", real=True)
    k, b = sp.symbols("k b", positive=True)
    L = k * v ** 2 / 2 + b * v
    H = hj.legendre_transform(L, v, p)
    back = hj.legendre_transform(H, p, w)  # the transform of H, evaluated at velocity w
    assert sp.simplify(back - L.subs(v, w)) == 0


def test_deterministic_riccati_matches_the_closed_form():
    d = hj.deterministic_riccati()
    vals = {d["alpha"]: -0.5, d["beta"]: 1.0, d["q"]: 1.0, d["r_a"]: 0.1, d["rho"]: 0.1}
    P = float(d["P"].subs(vals))
    ex = hjb.StochasticLQR.scalar(sigma=0.0).exact()
    assert abs(P - float(ex.P)) < 1e-12 and abs(P - 0.2659750769) < 1e-9
    assert sp.simplify(d["residual"].subs(d["P_symbol"], d["P"])) == 0
    vals2 = {d["alpha"]: 0.7, d["beta"]: 2.0, d["q"]: 3.0, d["r_a"]: 0.5, d["rho"]: 0.2}
    ex2 = hjb.StochasticLQR.scalar(alpha=0.7, beta=2.0, q=3.0, r_a=0.5, sigma=0.0, rho=0.2).exact()
    assert abs(float(d["P"].subs(vals2)) - float(ex2.P)) < 1e-12
    assert sp.simplify(d["a_star"] + d["beta"] * d["P_symbol"] * d["x"] / d["r_a"]) == 0


def test_non_convex_inputs_are_refused():
    v, p, a = sp.symbols("v p a", real=True)
    with pytest.raises(ValueError, match="^L must be strictly convex"):
        hj.legendre_transform(-v ** 2, v, p)
    with pytest.raises(ValueError, match="concave"):
        hj.hjb_hamiltonian(a ** 2, a, a, p)
