"""The regret identity V* - V^alpha = E int e^{-rho t} (-q*) dt (book: chapter 3), measured by hjbcourse.sde.regret."""
import math

import pytest
import torch

from hjbcourse.problems import Merton, StochasticLQR
from hjbcourse.sde import regret


def _lqr_regret_closed_form(p, gain: float, x0: float) -> float:
    """V*(x0) - V^alpha(x0) for a = -gain x on the scalar LQR: V^alpha = -1/2 P_a x^2 - sigma^2 P_a / (2 rho),
    P_a = (Q + R gain^2) / (rho - 2 (A - B gain)) (the Lyapunov equation of the closed loop)."""
    A, B, Q, R = (float(m) for m in (p.A, p.B, p.Q, p.R))
    sigma2, rho = float(p.D.pow(2).sum()), p.rho
    P = float(p.exact().P)
    Pa = (Q + R * gain ** 2) / (rho - 2 * (A - B * gain))
    return 0.5 * (Pa - P) * x0 ** 2 + sigma2 * (Pa - P) / (2 * rho)


@pytest.mark.parametrize("scale", [0.6, 1.3])
def test_both_sides_of_the_identity_agree_with_the_closed_form_on_the_scalar_lqr(scale):
    p = StochasticLQR.scalar()
    K = float(p.exact().K)
    res = regret(p, lambda x: -scale * K * x, [1.0], horizon=math.log(1e3) / p.rho, n_paths=1000, generator=1)
    exact = _lqr_regret_closed_form(p, scale * K, 1.0)
    assert exact > 0
    assert abs(res.by_value - res.by_q) <= 4 * res.stderr_difference + 1e-3 * exact
    # the finite horizon drops at most tail_weight = 1e-3 of the discounted future
    assert abs(res.by_q - exact) <= 4 * res.stderr_q + 2e-3 * exact
    assert res.stderr_value < 0.05 * exact       # the control variate keeps the value side usable


def test_the_optimal_policy_has_no_regret_and_a_worse_one_has_more():
    p = Merton()
    star = p.exact().policy
    zero = regret(p, star, [1.0], n_paths=500, dt=0.1)
    assert abs(zero.by_q) < 1e-10 and abs(zero.by_value) <= 4 * zero.stderr_value
    tilt = torch.tensor([0.8, 1.0], dtype=torch.float64)
    worse = regret(p, lambda x: star(x) * tilt, [1.0], n_paths=500, dt=0.1)
    assert worse.by_q > 0 and abs(worse.by_value - worse.by_q) <= 4 * worse.stderr_difference


def test_same_seed_same_numbers_and_bad_input_refused():
    p = StochasticLQR.scalar()
    pol = lambda x: -2.0 * x  # noqa: E731
    a = regret(p, pol, [0.5], n_paths=50, dt=0.05, generator=3)
    b = regret(p, pol, [0.5], n_paths=50, dt=0.05, generator=3)
    assert a == b
    with pytest.raises(ValueError):
        regret(p, pol, [0.5, 1.0])
    with pytest.raises(ValueError):
        regret(p, pol, [0.5], n_paths=1)


def test_the_default_step_follows_the_closed_loop_of_a_policy_run_without_autograd():
    p = StochasticLQR.scalar()
    K = float(p.exact().K)

    def detached(x):
        with torch.no_grad():
            return -K * x

    res = regret(p, detached, [1.0], n_paths=10, horizon=1.0)
    rate = abs(float(p.A) - float(p.B) * K)
    assert res.dt <= 0.02 / rate * 1.01
