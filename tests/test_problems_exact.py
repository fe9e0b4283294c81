"""Closed forms: the Riccati residual itself, the course's numbers, and every bad input named."""
import math

import numpy as np
import pytest
import torch

import hjbcourse as hjb
from hjbcourse.exact import riccati_residual


def random_stabilisable(d, k, m, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / math.sqrt(d)
    B = rng.normal(size=(d, k))
    L = rng.normal(size=(d, d))
    Q = L @ L.T / d + 0.1 * np.eye(d)
    M = rng.normal(size=(k, k))
    R = M @ M.T / k + 0.5 * np.eye(k)
    D = rng.normal(size=(d, m)) * 0.3
    return A, B, Q, R, D


@pytest.mark.parametrize("d,k", [(1, 1), (2, 1), (5, 3), (10, 10), (25, 5), (50, 50)])
def test_riccati_residual_is_zero(d, k):
    A, B, Q, R, D = random_stabilisable(d, k, d, seed=d + k)
    lqr = hjb.StochasticLQR(A, B, Q, R, D, rho=0.1)
    ex = lqr.exact()
    P = ex.P.numpy()
    res = riccati_residual(A, B, Q, R, P, 0.1)
    assert np.abs(res).max() <= 1e-10 * max(1.0, np.abs(P).max())
    assert np.allclose(P, P.T)
    assert np.linalg.eigvalsh(P).min() > 0
    # the closed loop is stable after discounting: Re eig(A - BK - rho/2 I) < 0
    K = ex.K.numpy()
    assert np.linalg.eigvals(A - B @ K - 0.05 * np.eye(d)).real.max() < 0
    assert math.isclose(ex.c, np.trace(D @ D.T @ P) / 0.2, rel_tol=1e-12)


def test_scalar_lqr_numbers(device):
    ex = hjb.StochasticLQR.scalar().exact()
    assert float(ex.P) == pytest.approx(0.2659750769, abs=1e-10)
    assert float(ex.K) == pytest.approx(2.659750769, abs=1e-9)
    assert ex.c == pytest.approx(0.1196887846, abs=1e-10)
    x = torch.tensor([[0.0], [1.5], [-2.0]], dtype=torch.float64, device=device)
    v = ex.value(x)
    assert v.shape == (3, 1) and v.device.type == device.type
    assert torch.allclose(v.cpu(), -0.5 * 0.2659750769140807 * x.cpu() ** 2 - 0.1196887846113363)
    assert torch.allclose(ex.policy(x).cpu(), -2.6597507691408064 * x.cpu())


def test_scalar_lqr_solves_the_hjb_pointwise():
    """rho V = max_a { r + V' f + 1/2 sigma^2 V'' } at random points, with the max done by brute force."""
    lqr = hjb.StochasticLQR.scalar()
    ex = lqr.exact()
    P = float(ex.P)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).unsqueeze(1)
    a = torch.linspace(-8, 8, 160001, dtype=torch.float64)
    X, Aa = x.expand(-1, a.numel()).reshape(-1, 1), a.repeat(x.shape[0]).unsqueeze(1)
    rhs = lqr.reward(X, Aa) + (-P * X) * lqr.drift(X, Aa) + 0.5 * 0.3 ** 2 * (-P)
    best = rhs.reshape(x.shape[0], -1).max(dim=1).values
    assert torch.allclose(lqr.rho * ex.value(x).squeeze(1), best, atol=1e-8)


def test_merton_numbers(device):
    m = hjb.Merton(r=0.03, mu=0.08, sigma=0.2, gamma=2.0, rho=0.05)
    ex = m.exact()
    assert ex.pi == pytest.approx(0.625, abs=1e-12)
    assert ex.M == pytest.approx(0.045625, abs=1e-12)
    assert ex.k == pytest.approx(0.0478125, abs=1e-12)
    assert ex.A == pytest.approx(0.0478125 ** -2.0, rel=1e-12)
    x = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64, device=device)
    assert torch.allclose(ex.value(x).cpu(), -ex.A / x.cpu())
    assert ex.policy(x).shape == (3, 2)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_merton_solves_the_hjb(gamma):
    """The closed form satisfies rho V = max_{pi,k} {u(kx) + V' f + 1/2 pi^2 sigma^2 x^2 V''} (autograd V', V'')."""
    m = hjb.Merton(gamma=gamma)
    ex = m.exact()
    x = torch.linspace(0.5, 2.0, 7, dtype=torch.float64).unsqueeze(1).requires_grad_(True)
    V = ex.value(x)
    (dV,) = torch.autograd.grad(V.sum(), x, create_graph=True)
    (d2V,) = torch.autograd.grad(dV.sum(), x)
    a = ex.policy(x.detach())
    rhs = m.reward(x, a) + dV * m.drift(x, a) + 0.5 * m.diffusion(x, a).squeeze(-1) ** 2 * d2V
    assert torch.allclose(m.rho * V, rhs, atol=1e-9 * V.abs().max().item())
    # and it is the maximum: nudging either control lowers the right-hand side
    for delta in ([0.01, 0.0], [-0.01, 0.0], [0.0, 0.002], [0.0, -0.002]):
        an = a + torch.tensor(delta, dtype=torch.float64)
        other = m.reward(x, an) + dV * m.drift(x, an) + 0.5 * m.diffusion(x, an).squeeze(-1) ** 2 * d2V
        assert bool((other < rhs).all())


def test_constructors_accept_float32_and_numpy():
    l32 = hjb.StochasticLQR(torch.tensor([[-0.5]], dtype=torch.float32), np.array([[1.0]]), [[1.0]], [[0.1]], [[0.3]], 0.1)
    assert float(l32.exact().P) == pytest.approx(0.2659750769, abs=1e-9)
    x = torch.randn(4, 1)
    a = torch.randn(4, 1)
    assert l32.drift(x, a).dtype == torch.float32 and l32.reward(x, a).shape == (4, 1)
    assert l32.diffusion(x, a).shape == (4, 1, 1)


@pytest.mark.parametrize("kwargs,word", [
    (dict(A=[[1.0, 0.0]]), "A"),
    (dict(B=[[1.0], [0.0]]), "B"),
    (dict(Q=[[1.0, 2.0], [0.0, 1.0]]), "Q"),
    (dict(R=[[0.0]]), "R"),
    (dict(R=[[-1.0]]), "R"),
    (dict(D=[[0.3, 0.1], [0.2, 0.2], [0.0, 0.0]]), "D"),
    (dict(rho=0.0), "rho"),
    (dict(rho=float("nan")), "rho"),
    (dict(A=[[float("nan")]]), "A"),
    (dict(A=[[1.0]], B=[[0.0]]), "stabilisable"),
    (dict(B=[1.0, 2.0, 3.0, 4.0]), "B"),             # not silently reshaped into a (2, 2) matrix
    (dict(D=[0.3, 0.0, 0.0, 0.3]), "D"),
    (dict(domain=([-1.0] * 3, [1.0] * 3)), "domain"),
    (dict(domain=(1.0,)), "domain"),
])
def test_lqr_bad_input_is_named(kwargs, word):
    base = dict(A=[[-0.5]], B=[[1.0]], Q=[[1.0]], R=[[0.1]], D=[[0.3]], rho=0.1)
    if "Q" in kwargs or "D" in kwargs or "domain" in kwargs or "B" in kwargs and len(kwargs["B"]) == 4:
        base.update(A=np.eye(2) * -0.5, B=np.eye(2), Q=np.eye(2), R=np.eye(2) * 0.1, D=np.eye(2) * 0.3)
    base.update(kwargs)
    with pytest.raises(ValueError, match=word):
        hjb.StochasticLQR(**base)


def test_lqr_unstable_but_controllable_is_fine():
    lqr = hjb.StochasticLQR([[1.0]], [[1.0]], [[1.0]], [[1.0]], [[0.2]], 0.1)
    assert float(lqr.exact().P) > 0


def test_lqr_stable_uncontrolled_mode_is_fine():
    lqr = hjb.StochasticLQR(np.diag([-1.0, 0.5]), [[0.0], [1.0]], np.eye(2), [[1.0]], np.eye(2) * 0.1, 0.1)
    assert np.linalg.eigvalsh(lqr.exact().P.numpy()).min() > 0


@pytest.mark.parametrize("kwargs,word", [
    (dict(sigma=0.0), "sigma"),
    (dict(sigma=-0.2), "sigma"),
    (dict(gamma=0.0), "gamma"),
    (dict(rho=-0.01), "rho"),
    (dict(mu=float("nan")), "mu"),
    (dict(gamma=0.5, rho=0.01), r"rho - \(1-gamma\) M"),
    (dict(pi_bounds=(1.0, 0.0)), "pi_bounds"),
    (dict(domain=(0.5,)), "domain"),
    (dict(domain=(0.5, float("inf"))), "domain"),
])
def test_merton_bad_input_is_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        hjb.Merton(**kwargs)


def test_vectors_of_one_entry_per_coordinate_and_state_counts():
    m = hjb.Merton(domain=([0.5], [2.0]))
    assert m.domain[0].tolist() == [0.5]
    lqr = hjb.StochasticLQR(np.eye(2) * -0.5, [1.0, 0.0], np.eye(2), [[1.0]], [0.3, 0.3], 0.1)   # one action, one noise
    assert lqr.B.shape == (2, 1) and lqr.D.shape == (2, 1)
    for p in (m, lqr):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            p.sample_states(-1)


def test_merton_log_utility_branch():
    m = hjb.Merton(gamma=1.0)
    ex = m.exact()
    assert ex.k == pytest.approx(0.05) and ex.pi == pytest.approx(0.05 / 0.04)
    x = torch.tensor([[1.0]], dtype=torch.float64)
    assert float(m.reward(x, torch.tensor([[0.5, 0.1]], dtype=torch.float64))) == pytest.approx(math.log(0.1))


def test_merton_optimum_outside_bounds_is_refused():
    with pytest.raises(ValueError, match="pi_bounds"):
        hjb.Merton(pi_bounds=(0.0, 0.5)).exact()
    # a valid problem all the same: it just has no closed form, so solvers run without a reference
    m = hjb.Merton(mu=0.3)
    with pytest.raises(hjb.NoClosedForm, match="outside the action bounds"):
        m.exact()
    assert not m.has_exact


def test_squash_respects_the_action_box():
    m = hjb.Merton()
    raw = torch.randn(1000, 2) * 10
    a = m.squash_action(raw)
    assert bool((a[:, 0] >= -1).all() and (a[:, 0] <= 3).all() and (a[:, 1] >= 1e-3).all() and (a[:, 1] <= 1).all())
    lqr = hjb.StochasticLQR.scalar()
    assert torch.equal(lqr.squash_action(raw[:, :1]), raw[:, :1])


def test_sample_states_cover_the_origin_in_ten_dimensions():
    rng = np.random.default_rng(0)
    A = -np.eye(10) + 0.1 * rng.normal(size=(10, 10))
    lqr = hjb.StochasticLQR(A, np.eye(10), np.eye(10), np.eye(10), 0.3 * np.eye(10), 0.1)
    x = lqr.sample_states(4000, generator=0)
    assert x.shape == (4000, 10)
    assert (x.norm(dim=1) < 2.0).float().mean() > 0.2          # uniform alone puts ~0% of points there
    assert torch.equal(x, lqr.sample_states(4000, generator=0))  # same seed, same states


def test_shapes_are_checked():
    lqr = hjb.StochasticLQR.scalar()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1\)"):
        lqr.check_state(torch.zeros(3, 2))


def test_a_riccati_solution_lost_to_underflow_is_refused():
    """Q = 1e-221 makes scipy return P = 0, whose residual Q is the whole equation: refused, not returned. (A
    Frobenius-norm check squared 1e-221 to zero and passed it; found by the fuzz suite's property test.)"""
    p = hjb.StochasticLQR.scalar(alpha=0.0, beta=1.0, q=1.0777402638146068e-221, r_a=0.9995, sigma=0.0, rho=1.0)
    with pytest.raises(ValueError, match="Riccati solution cannot be computed accurately"):
        p.exact()
    assert abs(float(hjb.StochasticLQR.scalar(q=1e-6).exact().P) - 1e-6 / (0.1 + 1.0)) < 1e-9   # small, fine
