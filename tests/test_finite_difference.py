"""The finite-difference HJB solver against closed forms: scalar LQR, Merton, minimum time, a reflected
diffusion; the measured order of convergence; the generic maximisation over actions; the boundary options."""
import math

import numpy as np
import pytest
import torch

import hjbcourse as hjb
from hjbcourse.problems import ControlProblem
from hjbcourse.solvers.finite_difference import FiniteDifferenceConfig, fit_quadratic_value

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
INNER = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64).unsqueeze(1)


@pytest.fixture(scope="module")
def lqr():
    return hjb.StochasticLQR.scalar()


@pytest.fixture(scope="module")
def lqr_hybrid(lqr):
    return hjb.FiniteDifferenceSolver(lqr, domain=(-4.0, 4.0), n=2001, scheme="hybrid").solve()


def test_lqr_riccati_constant_within_0_1_percent(lqr, lqr_hybrid):
    ex = lqr.exact()
    assert abs(float(ex.P) - 0.2659750769) < 1e-9
    P, c = fit_quadratic_value(lqr_hybrid, (-2.0, 2.0))
    assert abs(P - float(ex.P)) / float(ex.P) < 1e-3, P
    assert abs(c - ex.c) / ex.c < 1e-3, c
    assert lqr_hybrid.converged and lqr_hybrid.residual < 1e-8
    err_a = (lqr_hybrid.policy(INNER) - ex.policy(INNER)).abs().max().item()
    assert err_a < 1e-3, err_a


def test_lqr_upwind_first_order(lqr):
    """The upwind scheme adds a numerical diffusion |f| dx / 2: the error halves with dx (slope 1)."""
    ex = lqr.exact()
    ns = [251, 501, 1001]
    errs, perrs = [], []
    for n in ns:
        sol = hjb.FiniteDifferenceSolver(lqr, domain=(-4.0, 4.0), n=n).solve()
        errs.append((sol.value(INNER) - ex.value(INNER)).abs().max().item())
        perrs.append(abs(fit_quadratic_value(sol)[0] - float(ex.P)))
    dx = [8.0 / (n - 1) for n in ns]
    order = hjb.convergence_order(dx, errs)
    assert 0.9 < order < 1.1, (order, errs)
    assert 0.9 < hjb.convergence_order(dx, perrs) < 1.1, perrs
    assert errs[-1] < 6e-3, errs


def test_merton_constants_within_half_percent():
    m = hjb.Merton()
    mx = m.exact()
    grid = np.geomspace(1e-5, 1e5, 1001)  # a wide log grid: the reflecting ends are far from x in [0.5, 2]
    sol = hjb.FiniteDifferenceSolver(m, grid=grid, scheme="hybrid").solve()
    x = torch.linspace(0.5, 2.0, 101, dtype=torch.float64).unsqueeze(1)
    a = sol.policy(x)
    err_pi = ((a[:, 0] - mx.pi).abs().max() / mx.pi).item()
    err_k = ((a[:, 1] - mx.k).abs().max() / mx.k).item()
    err_V = ((sol.value(x) - mx.value(x)).abs() / mx.value(x).abs()).max().item()
    assert abs(mx.pi - 0.625) < 1e-12 and abs(mx.k - 0.0478125) < 1e-12
    assert err_pi < 5e-3 and err_k < 5e-3, (err_pi, err_k)
    assert err_V < 1e-3, err_V


def test_merton_hybrid_second_order():
    """For gamma = 3 (V ~ x^-2, not reproduced exactly by the differences) the hybrid scheme converges at order 2."""
    m = hjb.Merton(gamma=3.0)
    mx = m.exact()
    ns = [126, 251, 501]
    x = torch.tensor([[1.0]], dtype=torch.float64)
    errs = []
    for n in ns:
        sol = hjb.FiniteDifferenceSolver(m, grid=np.geomspace(1e-5, 1e5, n), scheme="hybrid").solve()
        errs.append(abs(sol.policy(x)[0, 0].item() - mx.pi))
    order = hjb.convergence_order([1.0 / (n - 1) for n in ns], errs)
    assert 1.8 < order < 2.2, (order, errs)


def test_minimum_time_kink_and_first_order():
    p = hjb.MinimumTimeProblem(rho=1.0)
    ex = p.exact()
    ns = [101, 201, 401]
    errs = []
    for n in ns:
        sol = hjb.FiniteDifferenceSolver(p, n=n, boundary=0.0).solve()
        errs.append((sol.V - ex.value(sol.x.unsqueeze(1)).reshape(-1)).abs().max().item())
        assert abs(sol.V[0].item()) < 1e-12 and abs(sol.V[-1].item()) < 1e-12
        away = (sol.x.abs() > 0.05) & (sol.x.abs() < 1.0)  # the end nodes are fixed values, without an action
        assert torch.equal(sol.a[away, 0], torch.sign(sol.x[away])), "full speed to the nearer exit"
    dx = [2.0 / (n - 1) for n in ns]
    order = hjb.convergence_order(dx, errs)
    assert 0.9 < order < 1.1, (order, errs)
    assert errs[-1] < dx[-1], errs
    # The kink: the slopes on either side of x = 0 tend to +-e^{-rho L} = +-e^{-1}; V has no derivative there.
    mid = (ns[-1] - 1) // 2
    right = ((sol.V[mid + 1] - sol.V[mid]) / dx[-1]).item()
    left = ((sol.V[mid] - sol.V[mid - 1]) / dx[-1]).item()
    assert abs(right - math.exp(-1)) < 0.02 and abs(left + math.exp(-1)) < 0.02, (left, right)


class _ReflectedDiffusion(ControlProblem):
    """dX = s dW reflected at 0 and 1, reward x, an action that changes nothing."""

    def __init__(self, s=0.5, rho=1.0):
        super().__init__(1, 1, 1, rho, (0.0, 1.0), action_low=[0.0], action_high=[1.0])
        self.s = s

    def drift(self, x, a):
        return torch.zeros_like(x)

    def diffusion(self, x, a):
        return torch.full((x.shape[0], 1, 1), self.s, dtype=x.dtype, device=x.device)

    def reward(self, x, a):
        return x.clone()

    def exact_value(self, x):
        # rho V = x + s^2/2 V'', V'(0) = V'(1) = 0: V = x / rho + C1 e^{lam x} + C2 e^{-lam x}
        lam = math.sqrt(2 * self.rho / self.s ** 2)
        M = np.array([[lam, -lam], [lam * math.exp(lam), -lam * math.exp(-lam)]])
        C1, C2 = np.linalg.solve(M, -np.ones(2) / self.rho)
        return x / self.rho + C1 * torch.exp(lam * x) + C2 * torch.exp(-lam * x)


def test_reflecting_boundary_is_a_neumann_condition():
    p = _ReflectedDiffusion()
    errs = []
    for n in (101, 201, 401):
        sol = hjb.FiniteDifferenceSolver(p, n=n, boundary="reflecting").solve()
        errs.append((sol.V - p.exact_value(sol.x)).abs().max().item())
    order = hjb.convergence_order([1.0 / (n - 1) for n in (101, 201, 401)], errs)
    assert errs[-1] < 1e-4 and order > 1.8, (errs, order)


def test_dirichlet_boundary_values_numbers_and_callables():
    p = _ReflectedDiffusion()
    g = lambda x: p.exact_value(x)  # noqa: E731
    sol = hjb.FiniteDifferenceSolver(p, n=401, boundary=g).solve()
    assert abs(sol.V[0].item() - g(torch.zeros(1, 1, dtype=torch.float64)).item()) < 1e-10
    assert (sol.V - p.exact_value(sol.x)).abs().max().item() < 1e-4
    mixed = hjb.FiniteDifferenceSolver(p, n=401, boundary=(float(g(torch.zeros(1, 1, dtype=torch.float64))), "reflecting")).solve()
    assert (mixed.V - p.exact_value(mixed.x)).abs().max().item() < 1e-4


def test_generic_maximisation_matches_brute_force(lqr):
    """The grid-plus-pattern search finds the maximiser of the discrete Hamiltonian that a dense search finds."""
    m = hjb.Merton()
    solver = hjb.FiniteDifferenceSolver(m, grid=np.geomspace(0.1, 10.0, 201), scheme="upwind")
    V = m.exact().value(solver.x.unsqueeze(1)).reshape(-1)
    a, h = solver.improve(V)
    nodes = torch.arange(20, 181, 40)
    pis = torch.linspace(-1.0, 3.0, 401, dtype=torch.float64)
    ks = torch.linspace(1e-3, 1.0, 401, dtype=torch.float64)
    dense = torch.stack(torch.meshgrid(pis, ks, indexing="ij"), -1).reshape(-1, 2)
    D = solver._differences(V)
    for i in nodes:
        hd = solver._hamiltonian(i.reshape(1), dense.unsqueeze(0), D)[0]
        assert h[i] >= hd.max() - 1e-12 * abs(hd.max())
        assert (a[i] - dense[hd.argmax()]).abs().max() < 2e-2
    # an infinite action box (the LQR): the search box grows until the maximiser is inside it
    s = hjb.FiniteDifferenceSolver(lqr, domain=(-4.0, 4.0), n=201, search_box=(-1.0, 1.0), multilevel=False)
    Vq = lqr.exact().value(s.x.unsqueeze(1)).reshape(-1)
    aq, hq = s.improve(Vq)
    assert aq.abs().max().item() > 10                  # found outside the given box, which grew for the search
    assert s.low.item() == -1.0 and s.high.item() == 1.0   # but improve() leaves the solver's box alone
    Dq = s._differences(Vq)
    acts = torch.linspace(-40, 40, 80001, dtype=torch.float64)
    for i in (0, 25, 100, 175, 200):
        hd = s._hamiltonian(torch.tensor([i]), acts.reshape(1, -1, 1), Dq)[0]
        assert hq[i] >= hd.max() - 1e-12 and abs(aq[i, 0] - acts[hd.argmax()]) < 2e-3


def test_finite_time_step_reaches_the_same_solution():
    p = hjb.MinimumTimeProblem(rho=0.5)
    a = hjb.FiniteDifferenceSolver(p, n=201, boundary=0.0).solve()
    b = hjb.FiniteDifferenceSolver(p, n=201, boundary=0.0, time_step=1.0, multilevel=False, max_iter=500).solve()
    assert b.converged and (a.V - b.V).abs().max().item() < 1e-8


@pytest.mark.parametrize("device", DEVICES)
def test_solution_interface(lqr_hybrid, device):
    x = torch.linspace(-1.0, 1.0, 7, device=device).unsqueeze(1)
    v, a, dv = lqr_hybrid.value(x), lqr_hybrid.policy(x), lqr_hybrid.derivative(x)
    assert v.shape == (7, 1) and a.shape == (7, 1) and dv.shape == (7, 1)
    assert v.dtype == torch.float32 and v.device.type == device
    assert len(lqr_hybrid.history) == lqr_hybrid.iterations and "change" in lqr_hybrid.history
    with pytest.raises(ValueError, match="x must lie"):
        lqr_hybrid.value(torch.tensor([[5.0]]))
    with pytest.raises(ValueError, match="x must be"):
        lqr_hybrid.value(torch.zeros(3))


def test_bad_inputs_name_the_parameter(lqr):
    two_d = hjb.StochasticLQR(np.eye(2) * -0.5, np.eye(2), np.eye(2), np.eye(2), np.eye(2), 0.1)
    with pytest.raises(ValueError, match="state_dim"):
        hjb.FiniteDifferenceSolver(two_d)
    with pytest.raises(ValueError, match="problem"):
        hjb.FiniteDifferenceSolver("lqr")
    with pytest.raises(ValueError, match="^n must"):
        hjb.FiniteDifferenceSolver(lqr, n=2)
    with pytest.raises(ValueError, match="domain"):
        hjb.FiniteDifferenceSolver(lqr, domain=(1.0, -1.0))
    with pytest.raises(ValueError, match="grid"):
        hjb.FiniteDifferenceSolver(lqr, grid=[0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="boundary"):
        hjb.FiniteDifferenceSolver(lqr, boundary="absorbing")
    with pytest.raises(ValueError, match="scheme"):
        hjb.FiniteDifferenceSolver(lqr, scheme="central")
    with pytest.raises(ValueError, match="time_step"):
        hjb.FiniteDifferenceSolver(lqr, time_step=0.0)
    for tol in (0.0, "x", None, True):
        with pytest.raises(ValueError, match="^tol must"):
            hjb.FiniteDifferenceSolver(lqr, tol=tol)
    with pytest.raises(ValueError, match="^time_step must"):
        hjb.FiniteDifferenceSolver(lqr, time_step="x")
    with pytest.raises(ValueError, match="action_grid"):
        hjb.FiniteDifferenceSolver(lqr, action_grid=1)
    with pytest.raises(ValueError, match="half_width"):
        hjb.MinimumTimeProblem(half_width=-1.0)
    with pytest.raises(ValueError, match="steps and errors"):
        hjb.convergence_order([1.0], [1.0])


def test_solve_is_repeatable(lqr):
    """A second solve() starts from the same search box as the first, so it gives the same numbers (with a
    box that must grow and a coarse search, a grown box carried over changed V by about 0.1)."""
    s = hjb.FiniteDifferenceSolver(lqr, domain=(-4.0, 4.0), n=201, search_box=(-0.1, 0.1), refinements=3)
    box = (s.low.clone(), s.high.clone())
    a, b = s.solve(), s.solve()
    assert a.info["search_box"][0][0] < -10                 # the box grew during each solve ...
    assert torch.equal(s.low, box[0]) and torch.equal(s.high, box[1])     # ... but not the solver's
    assert torch.equal(a.V, b.V) and torch.equal(a.a, b.a)
    assert a.iterations == b.iterations and a.info == b.info


class _NanReward(_ReflectedDiffusion):
    def reward(self, x, a):
        return torch.full_like(x, float("nan"))


def test_nan_values_raise_divergence_error_naming_the_iteration():
    with pytest.raises(hjb.DivergenceError, match="iteration 1"):
        hjb.FiniteDifferenceSolver(_NanReward(), n=51, multilevel=False).solve()


def test_config_presets_and_keyword_overrides(lqr):
    """The settings are a FiniteDifferenceConfig; keywords override its fields (max_iter is iterations)."""
    cfg = FiniteDifferenceConfig.preset("quick")
    assert (cfg.n, cfg.iterations, cfg.tol, cfg.scheme, cfg.progress) == (2001, 200, 1e-10, "upwind", False)
    assert FiniteDifferenceConfig.preset("full").n > cfg.n
    a = hjb.FiniteDifferenceSolver(lqr, domain=(-4.0, 4.0), n=201, scheme="hybrid", max_iter=50).solve()
    b = hjb.FiniteDifferenceSolver(lqr, cfg.replace(n=201, scheme="hybrid", iterations=50), domain=(-4.0, 4.0)).solve()
    assert torch.equal(a.V, b.V) and torch.equal(a.a, b.a) and a.iterations == b.iterations
    s = hjb.FiniteDifferenceSolver(lqr, cfg, n=101, max_iter=7)
    assert s.config.n == 101 and s.config.iterations == 7 and cfg.n == 2001


def test_config_refuses_bad_values(lqr):
    for kw, match in ((dict(n=2), "^n must"), (dict(iterations=0), "^iterations must"), (dict(coarsest=2), "^coarsest"),
                      (dict(refinements=-1), "^refinements"), (dict(multilevel="yes"), "^multilevel"),
                      (dict(dtype="float32"), "^dtype"), (dict(search_box=(1.0, -1.0)), "^search_box"),
                      (dict(search_box=(0.0,)), "^search_box"), (dict(scheme="central"), "^scheme")):
        with pytest.raises(ValueError, match=match):
            FiniteDifferenceConfig(**kw)
    with pytest.raises(ValueError, match="^max_iter must"):
        hjb.FiniteDifferenceSolver(lqr, max_iter=0)
    with pytest.raises(ValueError, match="not both"):
        hjb.FiniteDifferenceSolver(lqr, max_iter=3, iterations=3)
    with pytest.raises(ValueError, match=r"domain=\(lo, hi\)"):
        hjb.FiniteDifferenceSolver(lqr, (-1.0, 1.0))
    with pytest.raises(TypeError, match="nodes"):
        hjb.FiniteDifferenceSolver(lqr, nodes=11)
    with pytest.raises(ValueError, match="length-1"):
        hjb.FiniteDifferenceSolver(lqr, search_box=([0.0, 0.0], [1.0, 1.0]))


def test_steps_and_checkpoints_resume_exactly(lqr, tmp_path):
    """step() is one policy-iteration step on the finest grid (the first also solves the coarse grids); a run
    saved after two steps and loaded (the grid comes with the checkpoint) ends where an uninterrupted one does."""
    kw = dict(domain=(-4.0, 4.0), n=401, scheme="hybrid")
    full = hjb.FiniteDifferenceSolver(lqr, **kw).solve()
    s = hjb.FiniteDifferenceSolver(lqr, **kw)
    rows = [s.step(), s.step()]
    assert s.iteration == 2 and [r["iteration"] for r in rows] == [1, 2] and len(s.history) == 2
    t = hjb.FiniteDifferenceSolver.load(s.save(tmp_path / "fd.pt"), lqr)
    assert t.config == s.config and torch.equal(t.x, s.x) and t.iteration == 2
    rest = t.solve()
    assert torch.equal(rest.V, full.V) and torch.equal(rest.a, full.a) and rest.iterations == full.iterations
    assert rest.history["change"] == full.history["change"] and rest.info == full.info
    # a callable boundary value is not kept in a checkpoint: give it again
    p = _ReflectedDiffusion()
    g = lambda x: p.exact_value(x)  # noqa: E731
    c = hjb.FiniteDifferenceSolver(p, n=201, boundary=(g, "reflecting"))
    c.step()
    path = c.save(tmp_path / "callable.pt")
    with pytest.raises(ValueError, match="callable"):
        hjb.FiniteDifferenceSolver.load(path, p)
    done = hjb.FiniteDifferenceSolver.load(path, p, boundary=(g, "reflecting")).solve()
    assert torch.equal(done.V, hjb.FiniteDifferenceSolver(p, n=201, boundary=(g, "reflecting")).solve().V)
