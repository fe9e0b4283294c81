"""The finite-horizon LQR (hjbcourse.finite_horizon): Riccati ODE against closed forms, Monte Carlo agreement."""
import math

import numpy as np
import pytest
import sympy as sp
import torch

import hjbcourse as hjb
from hjbcourse import derivations as der

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_system(seed=0, n=2, k=1, m=2):
    rng = np.random.default_rng(seed)
    A, B, D = rng.normal(size=(n, n)), rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n, m))
    Qh = rng.normal(size=(n, n))
    return A, B, Qh @ Qh.T + 0.1 * np.eye(n), np.eye(k) * 0.5, D


def test_scalar_riccati_ode_matches_closed_form():
    T, g = 1.0, 2.0
    sol = hjb.FiniteHorizonLQR.scalar(T=T, g=g).solve_riccati()
    expr, s = der.riccati_ode_closed_form()
    vals = {s["alpha"]: -0.5, s["beta"]: 1.0, s["q"]: 1.0, s["r_a"]: 0.1, s["rho"]: 0.1, s["g"]: g, s["T"]: T}
    f = sp.lambdify(s["t"], expr.subs(vals), "numpy")
    ts = np.linspace(0, T, 11)
    assert np.allclose(sol.P(ts)[:, 0, 0], f(ts), rtol=1e-8, atol=1e-10)
    assert abs(float(sol.P(T)[0, 0]) - g) < 1e-12 and abs(sol.c(T)) < 1e-14


def test_numerical_rhs_is_the_derived_ode():
    A, B, Q, R, D = _random_system(1, m=1)
    pr = hjb.FiniteHorizonLQR(A, B, Q, R, D, G=np.eye(2), T=1.0, rho=0.2)
    d = der.finite_horizon_lqr_matrix_ode(2, 1, 1)
    P = np.array([[1.3, 0.2], [0.2, 0.7]])
    c = 0.4
    sub = {}
    for Ms, Mv in ((d.A, A), (d.B, B), (d.Q, Q), (d.R, R), (d.D, D)):
        sub.update({Ms[i, j]: Mv[i, j] for i in range(Ms.shape[0]) for j in range(Ms.shape[1])})
    sub.update({d.P[i, j]: P[i, j] for i in range(2) for j in range(2)})
    sub.update({d.rho: 0.2, sp.Function("c")(d.t): c})
    want_P = np.array(d.dP.subs(sub), dtype=float)
    want_c = float(d.dc.subs(sub))
    got = pr.riccati_rhs(0.0, np.concatenate([P.reshape(-1), [c]]))
    assert np.allclose(got[:4].reshape(2, 2), want_P, atol=1e-12) and abs(got[4] - want_c) < 1e-12


def test_long_horizon_tends_to_the_stationary_solution():
    A, B, Q, R, D = _random_system(2)
    rho = 0.3
    ex = hjb.StochasticLQR(A, B, Q, R, D, rho).exact()
    sol = hjb.FiniteHorizonLQR(A, B, Q, R, D, G=np.zeros((2, 2)), T=80.0, rho=rho).solve_riccati()
    assert np.allclose(sol.P(0.0), ex.P.numpy(), atol=1e-8)
    assert math.isclose(sol.c(0.0), ex.c, rel_tol=1e-8)


def test_terminal_weight_equal_to_stationary_p_stays_put():
    """G = P_inf makes P(t) = P_inf for all t, and then c(t) = c_inf (1 - e^{-rho (T - t)})."""
    A, B, Q, R, D = _random_system(4)
    rho, T = 0.2, 3.0
    ex = hjb.StochasticLQR(A, B, Q, R, D, rho).exact()
    sol = hjb.FiniteHorizonLQR(A, B, Q, R, D, G=ex.P.numpy(), T=T, rho=rho).solve_riccati()
    ts = np.linspace(0, T, 7)
    assert np.abs(sol.P(ts) - ex.P.numpy()).max() < 1e-8
    assert np.allclose(sol.c(ts), ex.c * (1 - np.exp(-rho * (T - ts))), rtol=1e-8, atol=1e-12)
    assert np.allclose(sol.K(0.0), ex.K.numpy(), atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_monte_carlo_of_the_optimal_policy_agrees_with_riccati(device):
    pr = hjb.FiniteHorizonLQR.scalar(T=1.0, g=2.0)
    sol = pr.solve_riccati()
    x0 = 1.5
    V = float(sol.value(0.0, torch.tensor([[x0]], dtype=torch.float64)))
    mc = hjb.monte_carlo_value(pr, sol.policy, [x0], n_paths=32768, n_steps=100, generator=0, device=device)
    assert abs(mc.mean - V) < 3 * mc.stderr, (mc.mean, V, mc.stderr)
    # a policy that is not optimal is measurably worse
    worse = hjb.monte_carlo_value(pr, lambda t, x: 0.5 * sol.policy(t, x), [x0], n_paths=32768, n_steps=100,
                                  generator=0, device=device)
    assert worse.mean < V - 5 * worse.stderr


def test_monte_carlo_is_reproducible_and_keeps_paths():
    pr = hjb.FiniteHorizonLQR.scalar(T=0.5)
    sol = pr.solve_riccati()
    a = hjb.monte_carlo_value(pr, sol.policy, [1.0], n_paths=1000, n_steps=20, generator=7, keep_paths=5)
    b = hjb.monte_carlo_value(pr, sol.policy, [1.0], n_paths=1000, n_steps=20, generator=7)
    assert a.mean == b.mean and a.paths.shape == (5, 21, 1) and a.times.shape == (21,)
    assert a.paths[0, 0, 0] == 1.0


def test_euler_bias_is_first_order_and_heun_removes_it():
    pr = hjb.FiniteHorizonLQR.scalar(T=1.0, g=2.0, sigma=0.0)  # no noise: the bias alone, no Monte Carlo error
    sol = pr.solve_riccati()
    V = float(sol.value(0.0, torch.tensor([[1.5]], dtype=torch.float64)))
    ns = np.array([100, 200, 400])
    order = {}
    for scheme in ("euler", "heun"):
        err = [abs(hjb.monte_carlo_value(pr, sol.policy, [1.5], n_paths=2, n_steps=int(n), scheme=scheme).mean - V)
               for n in ns]
        order[scheme] = -np.polyfit(np.log(ns), np.log(err), 1)[0]
    assert 0.9 < order["euler"] < 1.1, order
    assert 1.8 < order["heun"] < 2.3, order  # 2.17: still approaching 2 from above at these steps


def test_shapes_and_bad_input():
    pr = hjb.FiniteHorizonLQR.scalar(T=1.0)
    sol = pr.solve_riccati()
    x = torch.randn(4, 1, dtype=torch.float64)
    assert sol.value(0.3, x).shape == (4, 1) and sol.policy(0.3, x).shape == (4, 1)
    assert pr.reward(0.0, x, x).shape == (4, 1) and pr.terminal_reward(x).shape == (4, 1)
    with pytest.raises(ValueError, match="t must lie"):
        sol.P(1.5)
    with pytest.raises(ValueError, match="G must have shape"):
        hjb.FiniteHorizonLQR([[0.0]], [[1.0]], [[1.0]], [[1.0]], [[0.1]], G=np.eye(2), T=1.0)
    with pytest.raises(ValueError, match="G must be symmetric"):
        hjb.FiniteHorizonLQR([[0.0]], [[1.0]], [[1.0]], [[1.0]], [[0.1]], G=[[-1.0]], T=1.0)
    with pytest.raises(ValueError, match="rho"):
        hjb.FiniteHorizonLQR.scalar(rho=-0.1)
    with pytest.raises(ValueError, match="T"):
        hjb.FiniteHorizonLQR.scalar(T=0.0)
    with pytest.raises(ValueError, match="R must be positive definite"):
        hjb.FiniteHorizonLQR.scalar(r_a=0.0)
    with pytest.raises(ValueError, match="scheme"):
        hjb.monte_carlo_value(pr, sol.policy, [1.0], scheme="rk4")
    with pytest.raises(ValueError, match="x0"):
        hjb.monte_carlo_value(pr, sol.policy, [1.0, 2.0])
    # an unstable, uncontrollable mode is fine on a finite horizon
    hjb.FiniteHorizonLQR([[1.0, 0.0], [0.0, 2.0]], [[1.0], [0.0]], np.eye(2), [[1.0]], np.eye(2), np.eye(2), T=1.0)


def test_plotting_functions_return_figures():
    import matplotlib

    matplotlib.use("Agg", force=True)  # tests only; chapters use the default backend
    import matplotlib.pyplot as plt

    t = np.linspace(0, 1, 11)
    paths = np.random.default_rng(0).normal(size=(5, 11))
    figs = [
        hjb.plotting.plot_diffusion_paths(t, {"a": paths}),
        hjb.plotting.plot_generator_convergence(np.array([1e-3, 1e-2]), {"e": np.array([1e-3, 1e-2])}, {"e": 1.0}),
        hjb.plotting.plot_riccati_polynomial(t, t - 0.5, [0.5, -0.2]),
        hjb.plotting.plot_merton_constants(t + 0.1, t, t, t > 0.3),
        hjb.plotting.plot_riccati_ode({"G": (t, t)}, P_inf=0.3),
        hjb.plotting.plot_finite_horizon_paths(t, paths, gain=t),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    plt.close("all")
