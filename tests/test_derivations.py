"""The sympy derivations (hjbcourse.derivations: ito, lqr, merton, finite_horizon) agree with the closed forms."""
import math

import numpy as np
import pytest
import sympy as sp
import torch

import hjbcourse as hjb
from hjbcourse import derivations as der


# -- Itô's formula and the generator ---------------------------------------------------------------------------
def test_ito_step_expansion_first_and_second_order():
    e = der.ito_step_expansion()
    phi, x, f, s = e.phi, e.x, e.f, e.s
    d = [sp.diff(phi(x), x, j) for j in range(5)]
    assert sp.simplify(e.first_order - (f * d[1] + s ** 2 * d[2] / 2)) == 0
    assert sp.simplify(e.second_order - (f ** 2 * d[2] / 2 + f * s ** 2 * d[3] / 2 + s ** 4 * d[4] / 8)) == 0
    assert e.dw_moments[2] == 1 and e.dw_moments[4] == 3 and e.dw_moments[3] == 0


def test_ito_generator_each_term_by_hand():
    x, th, s = sp.symbols("x theta s", real=True)
    # drift term alone, diffusion term alone, and both (phi = x^2: L phi = 2 x f + s^2)
    assert sp.expand(der.ito_generator(x ** 2, x, th * x, 0) - 2 * th * x ** 2) == 0
    assert sp.expand(der.ito_generator(x ** 2, x, 0, s) - s ** 2) == 0
    assert sp.expand(der.ito_generator(x ** 3, x, th, s * x) - (3 * th * x ** 2 + 3 * s ** 2 * x ** 3)) == 0
    # two dimensions: phi = x1 x2 has Hessian [[0, 1], [1, 0]], so 1/2 Tr(SS'H) = (SS')_12
    x1, x2 = sp.symbols("x1 x2", real=True)
    S = sp.Matrix(2, 2, sp.symbols("s11 s12 s21 s22", real=True))
    f1, f2 = sp.symbols("f1 f2", real=True)
    got = der.ito_generator(x1 * x2, [x1, x2], [f1, f2], S)
    assert sp.expand(got - (x2 * f1 + x1 * f2 + (S * S.T)[0, 1])) == 0


def test_ito_generator_bad_input():
    x1, x2 = sp.symbols("x1 x2")
    with pytest.raises(ValueError, match="f must have 2"):
        der.ito_generator(x1 * x2, [x1, x2], [x1], sp.eye(2))
    with pytest.raises(ValueError, match="S must have 2 rows"):
        der.ito_generator(x1 * x2, [x1, x2], [x1, x2], sp.eye(3))
    with pytest.raises(ValueError, match="k must be"):
        der.generator_power(x1, x1, 1, 0, -1)


def test_generator_power_ou():
    x, th, s = sp.symbols("x theta s", real=True)
    # OU: L x = -theta x, L^2 x = theta^2 x; L x^2 = -2 theta x^2 + s^2
    assert sp.expand(der.generator_power(x, x, -th * x, s, 2) - th ** 2 * x) == 0
    assert sp.expand(der.generator_power(x ** 2, x, -th * x, s, 1) - (-2 * th * x ** 2 + s ** 2)) == 0


def test_sinh_ou_coefficients_by_ito():
    m = der.SinhOU(theta=1.0, s=0.5)
    f, S = m.coefficients()
    x, a, th, s = m.x, m.a, m.theta_sym, m.s_sym
    assert sp.simplify(f - (sp.sqrt(1 + x ** 2) * (a - th * sp.asinh(x)) + s ** 2 * x / 2)) == 0
    assert sp.simplify(S - s * sp.sqrt(1 + x ** 2)) == 0
    with pytest.raises(ValueError, match="theta"):
        der.SinhOU(theta=-1.0)


def test_sinh_ou_exact_expectation_matches_monte_carlo():
    m = der.SinhOU(theta=1.0, s=0.5)
    h = 0.3
    exact = float(m.expectation(np.cos, 0.4, 0.3, h))
    paths = m.sample_paths(0.4, 0.3, [0.0, 0.1, h], n_paths=200_000, generator=1)
    vals = np.cos(paths[:, -1])
    se = vals.std() / math.sqrt(vals.size)
    assert abs(vals.mean() - exact) < 4 * se, (vals.mean(), exact, se)


def test_generator_is_limit_of_difference_quotients():
    """(E phi(X_h) - phi(x))/h - L^a phi(x) = h/2 (L^a)^2 phi(x) + O(h^2) for the exact law."""
    m = der.SinhOU(theta=1.0, s=0.5)
    x0, a = 0.4, 0.3
    phi = sp.cos(m.x)
    sub = {m.x: x0, m.a: a}
    L1 = float(m.generator(phi, 1).subs(sub))
    L2 = float(m.generator(phi, 2).subs(sub))
    h = np.logspace(-4, -2, 5)
    err = (m.expectation(np.cos, x0, a, h) - math.cos(x0)) / h - L1
    slope = np.polyfit(np.log(h), np.log(np.abs(err)), 1)[0]
    assert abs(slope - 1) < 0.05, slope
    assert abs(err[0] / h[0] / (L2 / 2) - 1) < 1e-3


def test_one_euler_step_has_a_different_error_constant():
    m = der.SinhOU(theta=1.0, s=0.5)
    x0, a = 0.4, 0.3
    e = der.ito_step_expansion()
    f, S = (float(v.subs({m.x: x0, m.a: a})) for v in m.coefficients(symbolic=False))
    derivs = {sp.diff(e.phi(e.x), e.x, j): float(sp.diff(sp.cos(m.x), m.x, j).subs(m.x, x0)) for j in range(1, 5)}
    C_euler = float(e.second_order.subs(derivs).subs({e.f: f, e.s: S}))
    L1 = float(m.generator(sp.cos(m.x), 1).subs({m.x: x0, m.a: a}))
    h = 1e-4
    err = float((m.euler_expectation(np.cos, x0, a, h) - math.cos(x0)) / h - L1)
    assert abs(err / h / C_euler - 1) < 1e-2, (err / h, C_euler)


def test_package_generator_agrees_with_sympy():
    m = der.SinhOU(theta=1.0, s=0.5)
    phi = sp.exp(-m.x ** 2) * sp.sin(2 * m.x)
    f, S = m.coefficients(symbolic=False)
    fn, Sn = (sp.lambdify((m.x, m.a), e, "math") for e in (f, S))
    xs = [-0.7, 0.1, 0.9]
    a = -0.4
    x = torch.tensor(xs, dtype=torch.float64).unsqueeze(1)
    ft = torch.tensor([[fn(v, a)] for v in xs], dtype=torch.float64)
    St = torch.tensor([[[Sn(v, a)]] for v in xs], dtype=torch.float64)
    got = hjb.apply_generator(lambda z: torch.exp(-z ** 2) * torch.sin(2 * z), x, ft, St, method="autograd",
                        create_graph=False)
    want = [float(m.generator(phi).subs({m.x: v, m.a: a})) for v in xs]
    assert np.allclose(got.squeeze(1).numpy(), want, rtol=1e-12, atol=1e-12)


# -- LQR (Appendix A) ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lqr():
    return der.lqr_scalar()


def test_lqr_scalar_steps(lqr):
    p = lqr.params
    x, P = lqr.x, lqr.P_sym
    assert sp.simplify(lqr.a_star + p["beta"] * P * x / p["r_a"]) == 0
    ric = (2 * p["alpha"] - p["rho"]) * P - p["beta"] ** 2 * P ** 2 / p["r_a"] + p["q"]
    assert sp.expand(lqr.riccati - ric) == 0
    assert sp.simplify(lqr.c - p["sigma"] ** 2 * lqr.P / (2 * p["rho"])) == 0
    assert sp.simplify(lqr.K - p["beta"] * lqr.P / p["r_a"]) == 0
    assert len(lqr.P_roots) == 2


def test_lqr_closed_form_makes_residual_exactly_zero(lqr):
    assert sp.simplify(der.hjb_residual_lqr(lqr.P, lqr.c)) == 0
    # a wrong constant leaves a residual: the check has teeth
    assert sp.simplify(der.hjb_residual_lqr(lqr.P, 2 * lqr.c)) != 0


def test_lqr_scalar_numbers_match_exact(lqr):
    got = lqr.subs_numbers()
    ex = hjb.StochasticLQR.scalar().exact()
    assert abs(got["P"] - float(ex.P)) < 1e-12
    assert abs(got["K"] - float(ex.K)) < 1e-11
    assert abs(got["c"] - ex.c) < 1e-12
    assert abs(got["P"] - 0.2659750769) < 1e-10 and abs(got["c"] - 0.1196887846) < 1e-10
    other = dict(alpha=0.3, beta=2.0, q=0.5, r_a=0.7, sigma=0.4, rho=0.2)
    ex2 = hjb.StochasticLQR.scalar(**other).exact()
    got2 = lqr.subs_numbers(**other)
    assert abs(got2["P"] - float(ex2.P)) < 1e-10 and abs(got2["c"] - ex2.c) < 1e-10


def test_lqr_negative_root_is_not_the_value(lqr):
    course = {lqr.params[k]: v for k, v in der.COURSE_LQR.items()}
    roots = sorted(float(r.subs(course)) for r in lqr.P_roots)
    assert roots[0] < 0 < roots[1]


@pytest.mark.parametrize("n,k,m", [(2, 1, 1), (2, 2, 2)])
def test_lqr_matrix_quadratic_part_is_riccati(n, k, m):
    d = der.lqr_matrix(n, k, m)
    assert (d.quadratic - d.riccati).applyfunc(sp.cancel) == sp.zeros(n, n)
    assert sp.simplify(d.c - (d.D * d.D.T * d.P).trace() / (2 * d.rho)) == 0
    assert (d.a_star + d.R.inv() * d.B.T * d.P * d.x).applyfunc(sp.cancel) == sp.zeros(k, 1)
    # numbers: a random 2-D system, solved by the package, zeroes the derived residual
    rng = np.random.default_rng(3)
    A, B, D = rng.normal(size=(n, n)), rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n, m))
    Qh, Rh = rng.normal(size=(n, n)), rng.normal(size=(k, k))
    Q, R = Qh @ Qh.T + 0.1 * np.eye(n), Rh @ Rh.T + 0.5 * np.eye(k)
    ex = hjb.StochasticLQR(A, B, Q, R, D, 0.15).exact()
    M, const = d.numeric_residual(A, B, Q, R, D, 0.15, ex.P.numpy(), ex.c)
    assert np.abs(M).max() < 1e-9 * max(1.0, np.abs(ex.P.numpy()).max()), M
    assert abs(const) < 1e-12
    M_bad, _ = d.numeric_residual(A, B, Q, R, D, 0.15, 1.1 * ex.P.numpy(), ex.c)
    assert np.abs(M_bad).max() > 1e-3


def test_lqr_matrix_bad_size():
    with pytest.raises(ValueError, match="n must be"):
        der.lqr_matrix(5)


# -- Merton (Appendix B) ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def merton():
    return der.merton()


def test_merton_steps(merton):
    s = merton.symbols
    assert not merton.reduced.has(s["x"])
    assert sp.simplify(merton.pi - (s["mu"] - s["r"]) / (s["gamma"] * s["sigma"] ** 2)) == 0
    assert sp.simplify(merton.foc_k.subs(s["k"], merton.k_of_A)) == 0
    assert sp.simplify(merton.k - (s["rho"] - (1 - s["gamma"]) * s["M"]) / s["gamma"]) == 0
    # feasibility rho - (1-gamma) M > 0 is exactly k* > 0
    assert sp.simplify(s["gamma"] * merton.k - merton.feasibility) == 0
    # the equation for A holds at the solution
    eq = merton.A_equation.lhs - merton.A_equation.rhs
    kk = sp.Symbol("kappa", positive=True)
    at = eq.subs(s["A"], kk ** (-s["gamma"])).subs(s["rho"], s["gamma"] * kk + (1 - s["gamma"]) * s["M"])
    assert sp.simplify(sp.powsimp(at, force=True)) == 0


def test_merton_closed_form_zeroes_the_hjb_symbolically(merton):
    s = merton.symbols
    kk = sp.Symbol("kappa", positive=True)  # k* > 0 is the feasibility condition; eliminate rho through it
    V = merton.value.subs(s["A"], kk ** (-s["gamma"]))
    res = der.hjb_residual_merton(V, merton.pi, kk)
    res = res.subs(s["rho"], s["gamma"] * kk + (1 - s["gamma"]) * merton.M)
    assert sp.simplify(res) == 0
    # and with every number rational, the closed form itself (no elimination) for three risk aversions
    for g in (sp.Rational(1, 2), 2, 3):
        sub = {s["gamma"]: g, s["r"]: sp.Rational(3, 100), s["mu"]: sp.Rational(8, 100),
               s["sigma"]: sp.Rational(1, 5), s["rho"]: sp.Rational(1, 20)}
        V = merton.value.subs(s["A"], merton.explicit("A")).subs(sub)
        res = der.hjb_residual_merton(V, merton.pi.subs(sub), merton.explicit("k").subs(sub), gamma=g).subs(sub)
        assert sp.simplify(res) == 0, g
        wrong = der.hjb_residual_merton(V, merton.pi.subs(sub) + sp.Rational(1, 10), merton.explicit("k").subs(sub),
                                        gamma=g).subs(sub)
        assert sp.simplify(wrong) != 0


def test_merton_numbers_match_exact(merton):
    got = merton.subs_numbers()
    ex = hjb.Merton().exact()
    assert abs(got["M"] - 0.045625) < 1e-15 and abs(got["k"] - 0.0478125) < 1e-15
    for name in ("pi", "k", "A", "M"):
        assert math.isclose(got[name], getattr(ex, name), rel_tol=1e-13), name
    got3 = merton.subs_numbers(gamma=3.0, rho=0.04)
    ex3 = hjb.Merton(gamma=3.0, rho=0.04).exact()
    assert math.isclose(got3["k"], ex3.k, rel_tol=1e-13) and math.isclose(got3["A"], ex3.A, rel_tol=1e-12)
    with pytest.raises(ValueError, match="unknown parameter"):
        merton.subs_numbers(delta=1.0)


def test_merton_log_utility_branch():
    d = der.merton_log()
    s = d.symbols
    assert sp.simplify(d.pi - (s["mu"] - s["r"]) / s["sigma"] ** 2) == 0
    assert d.k == s["rho"]
    b = sp.Symbol("b", real=True)
    assert sp.simplify(sp.expand_log(d.ansatz.subs(b, d.b) - d.value, force=True)) == 0
    assert sp.simplify(der.hjb_residual_merton(d.value, d.pi, d.k, gamma=1, log_utility=True)) == 0
    # numbers against exact(), whose gamma = 1 branch implements V = log(rho x)/rho + (M - rho)/rho^2
    mer = hjb.Merton(gamma=1.0)
    ex = mer.exact()
    sub = {s[n]: getattr(mer, n) for n in ("r", "mu", "sigma", "rho")}
    xs = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    want = [float(d.value.subs(sub).subs(s["x"], float(v))) for v in xs[:, 0]]
    assert np.allclose(ex.value(xs).squeeze(1).numpy(), want, rtol=1e-12)
    assert math.isclose(ex.k, float(d.k.subs(sub))) and math.isclose(ex.pi, float(d.pi.subs(sub)), rel_tol=1e-13)


# -- finite horizon (Appendix C) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fh():
    return der.finite_horizon_lqr_riccati_ode()


def test_finite_horizon_riccati_ode(fh, lqr):
    p, t = fh.params, fh.t
    P, c = fh.P(t), fh.c(t)
    want = -((2 * p["alpha"] - p["rho"]) * P - p["beta"] ** 2 * P ** 2 / p["r_a"] + p["q"])
    assert sp.expand(fh.dP - want) == 0
    assert sp.expand(fh.dc - (p["rho"] * c - p["sigma"] ** 2 * P / 2)) == 0
    # with dP/dt = 0 the ODE is Appendix A's algebraic equation
    assert sp.expand(fh.stationary + lqr.riccati.subs(lqr.P_sym, sp.Symbol("P", real=True))) == 0
    assert fh.terminal[fh.P(fh.T)] == fh.g
    assert sp.simplify(fh.a_star + p["beta"] * P * fh.x / p["r_a"]) == 0


def test_riccati_ode_closed_form_solves_the_ode(fh):
    expr, s = der.riccati_ode_closed_form()
    Pt = fh.P(fh.t)
    assert sp.simplify(expr.subs(s["t"], s["T"]) - s["g"]) == 0
    # symbolic check at rational parameters (fully symbolic simplification is slow)
    sub = {s["alpha"]: sp.Rational(-1, 2), s["beta"]: 1, s["q"]: 1, s["r_a"]: sp.Rational(1, 10),
           s["rho"]: sp.Rational(1, 10), s["g"]: 2, s["T"]: 1}
    e = expr.subs(sub)
    assert sp.simplify(sp.diff(e, s["t"]) - fh.dP.subs(Pt, e).subs(sub)) == 0


def test_finite_horizon_matrix_ode():
    d = der.finite_horizon_lqr_matrix_ode(2, 1, 1)
    assert (d.dP + d.riccati).applyfunc(sp.cancel) == sp.zeros(2, 2)
    c = sp.Function("c")(d.t)
    assert sp.expand(d.dc - (d.rho * c - (d.D * d.D.T * d.P).trace() / 2)) == 0


def test_nonautonomous_hjb_reduces_to_stationary(lqr):
    p = lqr.params
    t = sp.Symbol("t")
    V = lqr.value
    r = -(p["q"] * lqr.x ** 2 + p["r_a"] * lqr.a ** 2) / 2
    e = der.nonautonomous_hjb(V, t, lqr.x, p["alpha"] * lqr.x + p["beta"] * lqr.a, p["sigma"], r, p["rho"])
    assert sp.expand(e - (lqr.objective - p["rho"] * V)) == 0


def test_hamilton_jacobi_form():
    hj = der.finite_horizon_hamilton_jacobi()
    assert hj.hj_on_riccati == 0
    assert hj.hjb_minus_hj == 0
    x, p = hj.x, hj.p
    assert hj.hamiltonian.has(p ** 2)  # H is quadratic in the costate


def test_aligned_latex_breaks_a_sum_into_lines_of_its_terms():
    import sympy as sp

    from hjbcourse.derivations import aligned_latex

    x, y = sp.symbols("x y")
    expr = x**2 - 3 * x * y + y**3 - 5 * x + 7
    tex = aligned_latex(expr, per_line=2)
    rows = tex.splitlines()[1:-1]
    assert tex.startswith("\\begin{aligned}") and tex.endswith("\\end{aligned}") and len(rows) == 3
    for term in expr.as_ordered_terms():            # every term is shown once, with its sign
        assert sp.latex(-term if term.could_extract_minus_sign() else term) in tex
    eq = aligned_latex(sp.Eq(x + y, 2 * x - y), per_line=1)
    assert "= {} &" in eq and eq.count("\\\\") == 3
    with pytest.raises(ValueError, match="per_line"):
        aligned_latex(expr, per_line=0)
