"""The SDE schemes show their orders as fitted log-log slopes (strong for EM and Milstein, weak for weak2)."""
import math

import numpy as np
import pytest
import torch

import hjbcourse as hjb


class GBM(hjb.ControlProblem):
    """dX = mu X dt + sigma X dW (the action is ignored): X_T = x0 exp((mu - sigma^2/2) T + sigma W_T)."""

    def __init__(self, mu, sigma):
        super().__init__(1, 1, 1, rho=0.1, domain=(0.5, 2.0))
        self.mu, self.sigma = mu, sigma

    def drift(self, x, a):
        return self.mu * x

    def diffusion(self, x, a):
        return (self.sigma * x).unsqueeze(-1)

    def reward(self, x, a):
        return x


def zero_policy(x):
    return torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)


def slope(h, err):
    return np.polyfit(np.log(h), np.log(err), 1)[0]


def test_strong_orders_on_gbm(device):
    gbm = GBM(mu=0.5, sigma=0.8)
    T, n_fine, paths = 1.0, 2 ** 9, 4000
    dW_fine = hjb.brownian_increments(n_fine, paths, 1, T / n_fine, generator=0, dtype=torch.float64, device=device)
    x0 = torch.ones(paths, 1, dtype=torch.float64, device=device)
    exact = x0 * torch.exp((gbm.mu - gbm.sigma ** 2 / 2) * T + gbm.sigma * dW_fine.sum(0))
    hs, errs = [], {"euler": [], "milstein": []}
    for n in (2 ** 4, 2 ** 5, 2 ** 6, 2 ** 7, 2 ** 8):
        dW = dW_fine.reshape(n, n_fine // n, paths, 1).sum(1)      # the same Brownian path, coarser
        hs.append(T / n)
        for scheme in errs:
            sim = hjb.simulate(gbm, zero_policy, x0, T, T / n, scheme=scheme, dW=dW)
            errs[scheme].append((sim.x_T - exact).abs().mean().item())
    assert 0.35 < slope(hs, errs["euler"]) < 0.65, errs["euler"]
    assert 0.85 < slope(hs, errs["milstein"]) < 1.15, errs["milstein"]


def test_weak_order_two_on_the_mean(device):
    """E[X_T] = x0 e^{mu T}; Euler's mean error falls like h, weak2's like h^2."""
    gbm = GBM(mu=1.0, sigma=0.1)
    paths = 200_000
    x0 = torch.ones(paths, 1, dtype=torch.float64, device=device)
    hs, errs = [0.5, 0.25, 0.125], {"euler": [], "weak2": []}
    for h in hs:
        for scheme in errs:
            sim = hjb.simulate(gbm, zero_policy, x0, 1.0, h, scheme=scheme, generator=1)
            errs[scheme].append(abs(sim.x_T.mean().item() - math.e))
    se = (sim.x_T.std() / math.sqrt(paths)).item()
    assert errs["weak2"][-1] > 5 * se                      # the smallest error measured is still above the noise
    assert 0.8 < slope(hs, errs["euler"]) < 1.2, errs["euler"]
    assert 1.7 < slope(hs, errs["weak2"]) < 2.3, errs["weak2"]


def test_feynman_kac_value_of_the_optimal_lqr_policy():
    """V*(x0) = E[int_0^T e^{-rho t} r dt + e^{-rho T} V*(X_T)] under a* = -K x, with weak2 at dt = 0.02."""
    lqr = hjb.StochasticLQR.scalar()
    ex = lqr.exact()
    paths, T = 40_000, 10.0
    x0 = torch.full((paths, 1), 1.5, dtype=torch.float64)
    sim = hjb.simulate(lqr, ex.policy, x0, T, 0.02, scheme="weak2", generator=0)
    est = sim.reward + math.exp(-lqr.rho * T) * ex.value(sim.x_T)
    se = est.std().item() / math.sqrt(paths)
    truth = ex.value(x0[:1]).item()
    # Monte Carlo error (4 SE) plus the scheme's bias at this step (measured ~0.1% at dt = 0.02; Euler: ~3%)
    assert abs(est.mean().item() - truth) < 4 * se + 2e-3 * abs(truth), (est.mean().item(), truth, se)


def test_recorded_paths_and_reproducibility():
    lqr = hjb.StochasticLQR.scalar()
    ex = lqr.exact()
    x0 = torch.full((5, 1), 1.5)
    a = hjb.simulate(lqr, ex.policy, x0, 1.0, 0.1, generator=7, record=True)
    b = hjb.simulate(lqr, ex.policy, x0, 1.0, 0.1, generator=7, record=True)
    assert torch.equal(a.x, b.x) and torch.equal(a.reward, b.reward)
    assert a.x.shape == (11, 5, 1) and a.a.shape == (11, 5, 1) and a.cum_reward.shape == (11, 5, 1)
    assert torch.equal(a.cum_reward[-1], a.reward) and torch.equal(a.x[-1], a.x_T)
    assert torch.allclose(a.t, torch.linspace(0, 1, 11))


def test_bad_input_is_named():
    lqr = hjb.StochasticLQR.scalar()
    pol = lqr.exact().policy
    x0 = torch.ones(3, 1)
    with pytest.raises(ValueError, match="scheme"):
        hjb.simulate(lqr, pol, x0, 1.0, 0.1, scheme="rk4")
    with pytest.raises(ValueError, match="T / dt"):
        hjb.simulate(lqr, pol, x0, 1.0, 0.3)
    with pytest.raises(ValueError, match="x0"):
        hjb.simulate(lqr, pol, torch.ones(3, 2), 1.0, 0.1)
    with pytest.raises(ValueError, match="dW"):
        hjb.simulate(lqr, pol, x0, 1.0, 0.1, dW=torch.zeros(5, 3, 1))
    with pytest.raises(ValueError, match="policy"):
        hjb.simulate(lqr, lambda x: torch.zeros(x.shape[0], 2), x0, 1.0, 0.1)


def test_seeds_and_generators():
    g = hjb.make_generator(5)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=hjb.make_generator(np.int64(5))))
    for bad in (1.7, True, "3", -1):
        with pytest.raises(ValueError, match="seed"):
            hjb.make_generator(bad)
        with pytest.raises(ValueError, match="seed"):
            hjb.seed_everything(bad)
    assert hjb.make_generator(g, "cpu") is g             # a generator on the right device is used as it is
    if torch.cuda.is_available():                        # on another device it seeds one there, reproducibly
        a = torch.rand(3, generator=hjb.make_generator(torch.Generator().manual_seed(0), "cuda"), device="cuda")
        b = torch.rand(3, generator=hjb.make_generator(torch.Generator().manual_seed(0), "cuda"), device="cuda")
        assert torch.equal(a, b)


class TwoNoises(hjb.ControlProblem):
    """dX = S(X) dW in the plane: S = diag(x1, x2) (commutative) or [[x2, 0], [0, x1]] (not: along each other
    the columns' derivatives are (0, x2) and (x1, 0))."""

    def __init__(self, commutative):
        super().__init__(2, 1, 2, rho=0.1, domain=(0.5, 2.0))
        self.commutative = commutative

    def drift(self, x, a):
        return torch.zeros_like(x)

    def diffusion(self, x, a):
        diag = x if self.commutative else x.flip(-1)
        return 0.3 * torch.diag_embed(diag)

    def reward(self, x, a):
        return x[:, :1]


def test_milstein_refuses_noise_that_does_not_commute():
    x0 = torch.full((4, 2), 1.0)
    sim = hjb.simulate(TwoNoises(True), zero_policy, x0, 1.0, 0.1, scheme="milstein", generator=0)
    assert torch.isfinite(sim.x_T).all()
    with pytest.raises(ValueError, match="commut"):
        hjb.simulate(TwoNoises(False), zero_policy, x0, 1.0, 0.1, scheme="milstein", generator=0)
