"""Finite MDPs (value and policy iteration) and the time-step-h LQR against the continuous Riccati solution."""
import math

import numpy as np
import pytest
import scipy.optimize
import torch

import hjbcourse as hjb


@pytest.fixture(scope="module")
def mdp():
    return hjb.random_mdp(n_states=30, n_actions=4, gamma=0.9, seed=0)


def test_random_mdp_is_reproducible(mdp):
    again = hjb.random_mdp(n_states=30, n_actions=4, gamma=0.9, seed=0)
    assert torch.equal(mdp.P, again.P) and torch.equal(mdp.R, again.R)
    other = hjb.random_mdp(n_states=30, n_actions=4, gamma=0.9, seed=1)
    assert not torch.equal(mdp.R, other.R)
    assert torch.allclose(mdp.P.sum(-1), torch.ones(30, 4, dtype=torch.float64))


def test_value_and_policy_iteration_reach_the_same_fixed_point(mdp):
    vi = hjb.mdp_value_iteration(mdp, tol=1e-11)
    pi = hjb.mdp_policy_iteration(mdp)
    assert vi.converged and pi.converged
    assert (vi.V - pi.V).abs().max().item() < 1e-10
    assert torch.equal(vi.policy, pi.policy)
    TV, _ = hjb.bellman_operator(mdp, pi.V)
    assert (TV - pi.V).abs().max().item() < 1e-12, "V* is a fixed point of the Bellman operator"
    assert pi.iterations < 10 < vi.iterations


def test_value_iteration_contracts_at_rate_gamma(mdp):
    pi = hjb.mdp_policy_iteration(mdp)
    vi = hjb.mdp_value_iteration(mdp, tol=1e-11)
    err = vi.errors(pi.V)
    assert torch.all(err[1:] <= mdp.gamma * err[:-1] + 1e-12), "||T V - V*|| <= gamma ||V - V*||"
    # the rate is attained asymptotically, not only bounded: the tail ratio is close to gamma
    ratio = (err[60] / err[50]).item() ** (1 / 10)
    assert 0.8 < ratio <= mdp.gamma + 1e-12, ratio


def test_policy_iteration_improves_monotonically(mdp):
    pi = hjb.mdp_policy_iteration(mdp)
    diffs = pi.values[1:] - pi.values[:-1]
    assert torch.all(diffs >= -1e-12)
    assert pi.history["policy_changes"][-1] == 0


def test_policy_evaluation_is_the_discounted_sum(mdp):
    policy = torch.arange(mdp.n_states) % mdp.n_actions
    V = hjb.discrete.mdp_policy_evaluation(mdp, policy)
    idx = torch.arange(mdp.n_states)
    P_pi, R_pi = mdp.P[idx, policy], mdp.R[idx, policy]
    total, M = torch.zeros_like(R_pi), torch.eye(mdp.n_states, dtype=torch.float64)
    for n in range(400):  # gamma^400 ~ 5e-19
        total += mdp.gamma ** n * M @ R_pi
        M = M @ P_pi
    assert (V - total).abs().max().item() < 1e-12


def test_mdp_bad_inputs_name_the_parameter():
    P = torch.full((2, 1, 2), 0.5, dtype=torch.float64)
    R = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="gamma"):
        hjb.FiniteMDP(P, R, 1.0)
    with pytest.raises(ValueError, match="^P must hold"):
        hjb.FiniteMDP(P * 2, R, 0.9)
    with pytest.raises(ValueError, match="^R must"):
        hjb.FiniteMDP(P, torch.zeros(3, 1), 0.9)
    with pytest.raises(ValueError, match="policy"):
        hjb.discrete.mdp_policy_evaluation(hjb.FiniteMDP(P, R, 0.9), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="branching"):
        hjb.random_mdp(n_states=2, branching=3)
    mdp = hjb.FiniteMDP(P, R, 0.9)
    for max_iter in (0, -5, 2.0, True):
        with pytest.raises(ValueError, match="^max_iter must"):
            hjb.mdp_value_iteration(mdp, max_iter=max_iter)
        with pytest.raises(ValueError, match="^max_iter must"):
            hjb.mdp_policy_iteration(mdp, max_iter=max_iter)
    with pytest.raises(ValueError, match="^tol must"):
        hjb.mdp_value_iteration(mdp, tol="x")
    with pytest.raises(ValueError, match="^gamma must"):
        hjb.FiniteMDP(P, R, "0.9")
    assert hjb.FiniteMDP(P, R, np.float32(0.9)).gamma == pytest.approx(0.9)


# --- the discrete-time LQR ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lqr():
    return hjb.StochasticLQR.scalar()


def test_discrete_riccati_residual_and_bellman_equation(lqr):
    """Check the DARE solution directly in the Bellman equation, maximising over a numerically."""
    h = 0.1
    sol = hjb.solve_discrete_lqr(lqr, h)
    assert np.abs(hjb.discrete.discrete_riccati_residual(lqr, h, sol.P.numpy())).max() < 1e-12
    alpha, beta, q, r_a, sigma = -0.5, 1.0, 1.0, 0.1, 0.3
    gamma = math.exp(-lqr.rho * h)
    P, c = float(sol.P), sol.c
    V = lambda x: -0.5 * P * x ** 2 - c  # noqa: E731
    for x in (-1.5, 0.3, 2.0):
        # E V(x + h(alpha x + beta a) + sqrt(h) sigma xi) = V(mean) - 1/2 P h sigma^2
        obj = lambda a: -(h * -0.5 * (q * x ** 2 + r_a * a ** 2)  # noqa: E731
                          + gamma * (V(x + h * (alpha * x + beta * a)) - 0.5 * P * h * sigma ** 2))
        res = scipy.optimize.minimize_scalar(obj)
        assert abs(-res.fun - V(x)) < 1e-10
        assert abs(res.x - sol.policy(torch.tensor([[x]], dtype=torch.float64)).item()) < 1e-6


def test_discrete_riccati_converges_to_the_continuous_one_at_order_one(lqr):
    ex = lqr.exact()
    hs = [0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125]
    sols = [hjb.solve_discrete_lqr(lqr, h) for h in hs]
    errs = [abs(float(s.P) - float(ex.P)) for s in sols]
    order = hjb.convergence_order(hs, errs)
    assert 0.9 < order < 1.1, (order, errs)
    assert errs[-1] / float(ex.P) < 0.01
    assert abs(sols[-1].c - ex.c) / ex.c < 0.01
    assert abs(float(sols[-1].K) - float(ex.K)) / float(ex.K) < 0.01
    assert abs(sols[0].gamma - math.exp(-0.1 * 0.1)) < 1e-15


def test_discrete_lqr_bad_h(lqr):
    for h in (0.0, -0.1, math.inf, True):
        with pytest.raises(ValueError, match="^h must"):
            hjb.solve_discrete_lqr(lqr, h)
    assert float(hjb.solve_discrete_lqr(lqr, np.float32(0.1)).K) == pytest.approx(float(hjb.solve_discrete_lqr(lqr, 0.1).K))
    with pytest.raises(ValueError, match="^problem must be a StochasticLQR"):
        hjb.solve_discrete_lqr(hjb.Merton(), 0.1)
