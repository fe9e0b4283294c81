"""Issue 16: the default configuration reads its choices off the problem (greedy where exact, a stabilising
first policy, positive states in log coordinates), and solves a problem that no suite, chapter or benchmark
has seen."""
import math
import warnings

import numpy as np
import pytest
import torch

import hjbcourse as hjb
from hjbcourse.solvers.policy_iteration.networks import training_states
from hjbcourse.solvers.policy_iteration.scales import (best_constant_action, closed_loop_rate, greedy_applies,
                                                       linearised_feedback, resolve_settings)
from hjbcourse.suite import finite_difference_reference, problem_suite


class TiltedCubic(hjb.ControlProblem):
    """Defined here only: dX = (0.4 x - 0.2 x^3 + 0.8 a) dt + (0.25 + 0.1 x^2)^(1/2) dW on [-2, 2], reward
    -(x - 0.3)^2 / 2 - 0.15 a^2 / 2; an unstable origin, a tilted target, state-dependent noise."""

    def __init__(self):
        super().__init__(1, 1, 1, rho=0.2, domain=(-2.0, 2.0))

    def drift(self, x, a):
        return 0.4 * x - 0.2 * x ** 3 + 0.8 * a

    def diffusion(self, x, a):
        return torch.sqrt(0.25 + 0.1 * x * x).unsqueeze(-1)

    def reward(self, x, a):
        return -0.5 * (x - 0.3) ** 2 - 0.075 * a * a


def test_settings_are_read_off_the_problem():
    lqr = problem_suite(0, names=["lqr5-2d-2a-unstable"])[0].problem
    cfg = hjb.PolicyIterationConfig.preset("smoke", seed=0)
    st = resolve_settings(lqr, cfg)
    assert st.greedy and st.input_scaling == "affine" and st.value_fit == "absolute" and st.value_sign is None
    K = linearised_feedback(lqr).K.numpy()
    assert np.allclose(K, lqr.exact().K.numpy(), rtol=1e-6, atol=1e-8)      # exact for an LQR
    assert float(np.linalg.eigvals(lqr.A.numpy() - lqr.B.numpy() @ K).real.max()) < 0  # it stabilises
    merton = hjb.Merton(r=0.02, mu=0.10, sigma=0.25, gamma=3.0, rho=0.04)   # the issue's divergence
    st = resolve_settings(merton, cfg)
    assert not st.greedy and st.input_scaling == "log" and st.state_box == 4.0 and st.value_fit == "relative"
    assert st.value_sign == -1 and 0 < st.initial_action[1] < 0.2
    assert resolve_settings(hjb.Merton(gamma=0.5, mu=0.06), cfg).value_sign == 1
    assert not greedy_applies(merton) and greedy_applies(TiltedCubic())
    assert resolve_settings(merton, cfg.replace(input_scaling="affine")).input_scaling == "affine"
    x = lqr.sample_states(64, 0, dtype=torch.float64)
    rate = closed_loop_rate(lqr, linearised_feedback(lqr), x)
    assert math.isclose(rate, float(np.abs(np.linalg.eigvals(lqr.A.numpy() - lqr.B.numpy() @ K)).max()), rel_tol=1e-3)


def test_best_constant_action_is_admissible():
    m = hjb.Merton(r=0.02, mu=0.10, sigma=0.25, gamma=5.0, rho=0.04)
    a, v = best_constant_action(m, 20.0, 0.2, "weak2", torch.Generator().manual_seed(0))
    assert v is not None and math.isfinite(v) and v < 0 and a[1] < 0.1


def test_unstable_open_loop_and_the_issues_merton_no_longer_diverge():
    lqr = problem_suite(0, names=["lqr1-1d-1a-unstable"])[0].problem
    cfg = hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False, iterations=3)
    sol = hjb.PolicyIteration(lqr, cfg).solve()     # the zero action's paths grow like e^{0.19 t}: no longer
    assert sol.history.last("value_rel_l2") < 2 and sol.history.last("policy_rel_l2") < 1   # not 1e13 off
    m = hjb.Merton(r=0.02, mu=0.10, sigma=0.25, gamma=3.0, rho=0.04)
    sol = hjb.PolicyIteration(m, cfg).solve()
    assert math.isfinite(sol.history.last("value_rel_l2")) and sol.history.last("value_rel_l2") < 2


def test_the_first_relative_fit_is_weighted_by_a_prefit():
    # merton7 (gamma 5): the first states, with the pilot's end points, span seven orders of magnitude of
    # value; a plain least-squares first fit followed the largest ones and missed the domain's by factors of
    # 20 to 1450 (mean target / fitted value per bin), and the run diverged at iteration 3
    p = problem_suite(0, names=["merton7-gamma5"])[0].problem
    s = hjb.PolicyIteration(p, hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False))
    seen, fit = {}, s._fit
    s._fit = lambda x, y, z, it: seen.update(x=x, y=y) or fit(x, y, z, it)
    s.step()
    x, y = seen["x"], seen["y"]
    with torch.no_grad():
        ratio = y / s.value_net(x)
    edges = (0.5, 0.7, 1.0, 1.4, 2.0)
    means = [float(ratio[(x >= lo) & (x < hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:])]
    assert all(0.5 < m < 3 for m in means), means      # measured: 1.9 to 2.6 (the targets' heavy tail)


def test_constant_first_policy_and_the_taught_settings_are_kept():
    cfg = hjb.course.chapter_config("lqr", "quick")
    assert cfg.policy == "actor" and cfg.initial_policy == "constant" and not cfg.adapt_dt
    with pytest.raises(ValueError, match="initial_policy"):
        hjb.PolicyIterationConfig.preset("smoke", initial_policy="newton")
    with pytest.raises(ValueError, match="linearised"):
        hjb.PolicyIteration(hjb.Merton(), hjb.PolicyIterationConfig.preset("smoke", initial_policy="linearised"))


def test_a_problem_defined_only_here_is_solved_to_the_suite_targets():
    p = TiltedCubic()
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False)
    sol = hjb.PolicyIteration(p, cfg).solve()
    ref = finite_difference_reference(p)
    err = ref.score(sol, p.grid(401, dtype=torch.float64))
    print(f"user-defined cubic problem: value {err['value_rel_l2']:.4f}, policy {err['policy_rel_l2']:.4f}")
    assert err["value_rel_l2"] < 0.01 and err["policy_rel_l2"] < 0.02, err


class LinearCost(hjb.ControlProblem):
    """dX = a dt + 0.3 dW, r = -x^2 - a: an unbounded action with a linear cost (no maximum in a)."""

    def __init__(self):
        super().__init__(1, 1, 1, rho=0.1, domain=(-1.0, 1.0), additive_noise=True)

    def drift(self, x, a):
        return a

    def diffusion(self, x, a):
        return torch.full_like(x, 0.3).unsqueeze(-1)

    def reward(self, x, a):
        return -x * x - a


def test_a_hamiltonian_without_maximum_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="no maximum in action coordinate 0"):
        hjb.PolicyIteration(LinearCost(), hjb.PolicyIterationConfig.preset("smoke", seed=0))


def test_pathwise_gradient_labels_estimate_grad_v():
    """The pathwise derivatives of the Feynman-Kac targets average to grad V: the scalar LQR's optimal policy
    with its exact value as the bootstrap, so E[z | x] = -P x (a closed form the labels never see)."""
    lqr = hjb.StochasticLQR.scalar(alpha=-0.3, beta=1.0, q=1.5, r_a=0.4, sigma=0.4, rho=0.3)
    ex = lqr.exact()
    x = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64).unsqueeze(-1)
    y, se, ends, z = hjb.rollout_targets(lqr, ex.policy, ex.value, x, horizon=2.0, dt=0.01, paths_per_state=400,
                                         generator=0, return_endpoints=True, return_gradients=True)
    grad = -float(ex.P) * x
    assert ends.shape == (400, 7, 1) and z.shape == (7, 1)
    assert torch.allclose(z, grad, rtol=0, atol=2e-3 * float(grad.abs().max())), (z.T, grad.T)
    assert torch.allclose(y, ex.value(x), rtol=0, atol=4 * float(se.max()) + 1e-3)


def test_gradient_labels_follow_the_greedy_policys_feedback():
    """Through the greedy policy the labels carry da*/dx (Hess V): with a quadratic V = -P x^2 / 2 (not the
    value of its greedy policy unless P solves the Riccati equation) the labels match grad V^pi, whose
    closed form is the Lyapunov solution of the feedback a = -(B P / R) x."""
    A, B, Q, R, s, rho = -0.3, 1.0, 1.5, 0.4, 0.4, 0.3
    lqr = hjb.StochasticLQR.scalar(alpha=A, beta=B, q=Q, r_a=R, sigma=s, rho=rho)
    from hjbcourse.solvers.policy_iteration.networks import GreedyPolicy
    P0 = 1.0
    value = lambda x: -0.5 * P0 * x * x
    K = B * P0 / R
    P_pi = (Q + R * K * K) / (rho - 2 * (A - B * K))         # the Lyapunov equation of the feedback -K x
    x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64).unsqueeze(-1)
    T = 1.0
    bootstrap = lambda x: -0.5 * P_pi * x * x               # V^pi's quadratic part (its constant cancels in z)
    _, _, z = hjb.rollout_targets(lqr, GreedyPolicy(lqr, value), bootstrap, x, horizon=T, dt=0.01,
                                  paths_per_state=200, generator=1, return_gradients=True)
    assert torch.allclose(z, -P_pi * x, rtol=0, atol=3e-3 * P_pi), (z.T, (-P_pi * x).T)


def test_the_level_is_solved_exactly_so_a_short_horizon_suffices():
    """rho = 0.02: the default horizon is 3 / mu (mu the closed loop's slowest decay rate), 8 times shorter than
    0.5 / rho; the level correction makes the value right anyway, and without it the level is far off."""
    lqr = hjb.StochasticLQR.scalar(alpha=-0.2, beta=1.0, q=1.0, r_a=0.3, sigma=0.3, rho=0.02)
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False, iterations=4, min_iterations=4,
                                           n_states=512)
    solver = hjb.PolicyIteration(lqr, cfg)
    T, dt, T0, dt0 = solver.horizons()
    assert T < 0.5 / lqr.rho / 4 and T0 < 3 / lqr.rho / 4
    sol = solver.solve()
    assert sol.history.last("value_rel_l2") < 0.01 and sol.history.last("policy_rel_l2") < 0.02
    same = cfg.replace(level_correction=False, adapt_dt=False, horizon=T, dt=dt, initial_horizon=T0, initial_dt=dt0)
    off = hjb.PolicyIteration(lqr, same)                    # the same short horizons, no correction
    assert off.horizons() == pytest.approx((T, dt, T0, dt0))
    assert off.solve().history.last("value_rel_l2") > 0.05


def test_the_training_region_follows_paths_that_leave_the_domain():
    """A scalar LQR whose discounted optimum does not stabilise (A - BK = +0.2: the value is finite only
    through the discount, rho / 2 = 0.5): its paths leave the domain, and V must be fitted where the
    evaluations read it. The region is read off the first policy's paths; pinned to the domain, the value
    and the policy come out several times further off (measured: 1.8% and 3.5% against 8.5% and 15%)."""
    p = hjb.StochasticLQR(A=[[0.3]], B=[[1.0]], Q=[[0.05]], R=[[1.0]], D=[[0.3]], rho=1.0)
    assert abs(0.3 - float(p.exact().K) - 0.2) < 1e-9
    errors = {}
    for region in (None, 1.0):
        cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False, training_region=region)
        solver = hjb.PolicyIteration(p, cfg)
        if region is None:
            assert 1.5 < solver.region <= 4.0, solver.region
        errors[region] = solver.solve().errors()
    assert errors[None]["value_rel_l2"] < 0.03 and errors[None]["policy_rel_l2"] < 0.06, errors[None]
    assert errors[1.0]["value_rel_l2"] > 2 * errors[None]["value_rel_l2"], errors
    assert errors[1.0]["policy_rel_l2"] > 2 * errors[None]["policy_rel_l2"], errors
    # a closed loop that keeps its paths in the domain leaves the training states as they are
    stable = hjb.PolicyIteration(hjb.suite.problem_suite(0, names=["lqr4-2d-1a-stable"])[0].problem,
                                 hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False))
    assert stable.region == 1.0
    with pytest.raises(ValueError, match="training_region"):
        hjb.PolicyIterationConfig(training_region=0.5)


def test_horizons_and_states_follow_a_loop_that_grows():
    """Where the first policy's closed loop grows at the rate g (A - BK = +0.2 here, rho = 1), the errors of a
    quadratic value read at the paths' end points shrink like e^{-(rho - 2 g) T} per evaluation, not e^{-rho T}:
    the default horizons are 0.5 / (rho - 2 g) and 3 / (rho - 2 g), and the value-error estimate of the
    stopping rule divides by 1 - e^{-(rho - 2 g) T}. The actor's constant first action says nothing of the
    optimum's loop: rho stays. Half the training states stay in the domain, half cover the region."""
    p = hjb.StochasticLQR(A=[[0.3]], B=[[1.0]], Q=[[0.05]], R=[[1.0]], D=[[0.3]], rho=1.0)
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False)
    solver = hjb.PolicyIteration(p, cfg)
    assert solver._growth == pytest.approx(0.2, abs=1e-6)
    assert solver._decay_rate == pytest.approx(0.6, abs=1e-6)
    T, dt, T0, dt0 = solver.horizons()
    assert T == pytest.approx(0.5 / 0.6, abs=dt) and T0 == pytest.approx(3 / 0.6, abs=dt0)
    actor = hjb.PolicyIteration(p, cfg.replace(policy="actor"))
    assert actor._decay_rate == 1.0 and actor.horizons()[0] == pytest.approx(0.5, abs=dt)
    stable = hjb.PolicyIteration(hjb.StochasticLQR.scalar(), cfg)
    assert stable._growth == 0.0 and stable._decay_rate == stable.problem.rho
    x = training_states(p, 1000, torch.Generator().manual_seed(0), region=3.0)
    lo, hi = (float(t) for t in p.domain)
    inside = ((x >= lo) & (x <= hi)).all(-1)
    assert bool(inside[:500].all()) and float(x[500:].abs().max()) > 2 * max(abs(lo), abs(hi))


class CubicRunaway(hjb.ControlProblem):
    """Defined here only: dX = (x^3 + a) dt + 0.3 dW on [-3, 3], reward -x^2 - 0.1 a^2, rho = 0.2. Its
    linearisation at 0 is stabilised by the LQR feedback, but over most of the domain the cubic outgrows it."""

    def __init__(self):
        super().__init__(1, 1, 1, rho=0.2, domain=(-3.0, 3.0), additive_noise=True)

    def drift(self, x, a):
        return x ** 3 + a

    def diffusion(self, x, a):
        return torch.full_like(x, 0.3).unsqueeze(-1)

    def reward(self, x, a):
        return -x * x - 0.1 * a * a


def test_a_loop_that_grows_faster_than_half_the_discount_takes_the_largest_region():
    """Where the first policy's paths grow at g >= rho / 2, no finite horizon forgets the errors read at
    their end points: the training region is the largest (MAX_TRAINING_REGION, without simulating the
    paths) and the horizons fall back to rho's."""
    from hjbcourse.solvers.policy_iteration.scales import MAX_TRAINING_REGION
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False)
    solver = hjb.PolicyIteration(CubicRunaway(), cfg)
    assert solver._initial is not None and solver._growth >= solver.problem.rho / 2
    assert solver.region == MAX_TRAINING_REGION and solver._decay_rate == solver.problem.rho


def test_the_iteration_budget_is_read_off_the_improvement():
    """None: 25 iterations with the greedy policy (its error keeps falling: lqr13 2.13% -> 1.82%), 15 with the
    actor (more drift further from Merton's answer); a number is kept, and bounds the run."""
    lqr = hjb.StochasticLQR.scalar()
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False)
    assert cfg.iterations is None
    assert hjb.PolicyIteration(lqr, cfg).settings.iterations == 25
    assert hjb.PolicyIteration(hjb.Merton(), cfg).settings.iterations == 15
    assert hjb.PolicyIteration(lqr, cfg.replace(iterations=7)).settings.iterations == 7
    sol = hjb.PolicyIteration(lqr, hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False,
                                                                      iterations=3, min_iterations=3)).solve()
    assert sol.iterations <= 3
    with pytest.raises(ValueError, match="iterations"):
        hjb.PolicyIterationConfig(iterations=0)


def test_the_training_region_is_read_only_off_a_linear_feedback():
    """The actor's first policy is a constant action: its paths on an unstable open loop say nothing of where
    the optimum's go, so the region stays the domain (unless set)."""
    p = hjb.StochasticLQR(A=[[0.3]], B=[[1.0]], Q=[[0.05]], R=[[1.0]], D=[[0.3]], rho=1.0)
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False)
    assert hjb.PolicyIteration(p, cfg.replace(policy="actor")).region == 1.0
    assert hjb.PolicyIteration(p, cfg.replace(policy="actor", training_region=2.5)).region == 2.5
    assert hjb.PolicyIteration(p, cfg).region > 1.5


def test_a_run_that_ends_unsettled_says_so():
    """Two iterations of the smoke preset leave the value still moving: a PolicyIterationWarning gives the
    last change; a run that stops by its rule (settled) and one the caller stops early are quiet."""
    lqr = hjb.StochasticLQR.scalar()
    short = hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False, iterations=2, min_iterations=2)
    solver = hjb.PolicyIteration(lqr, short)
    with pytest.warns(hjb.PolicyIterationWarning, match="has not settled"):
        solver.solve()
    row = solver.history.rows[-1]
    assert row["value_error_estimate"] > 0.01 or row["policy_change"] > 0.02
    assert "iterations is spent" in solver.unsettled()
    settled = hjb.PolicyIteration(lqr, hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error", hjb.PolicyIterationWarning)
        settled.solve()
    assert settled.converged and settled.unsettled() is None
    stopped = hjb.PolicyIteration(lqr, short)
    stopped.step()                       # budget not spent: nothing to say yet
    assert stopped.unsettled() is None
