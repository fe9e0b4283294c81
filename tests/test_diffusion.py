"""Tests of hjbcourse.diffusion and hjbcourse.derivations.diffusion: exact Gaussian-mixture marginals against
closed forms, autograd and a Monte Carlo simulation of the forward SDE; the HJB; the verification identity;
score matching; the metrics; the symbolic derivation."""
import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.stats import multivariate_normal, norm

import hjbcourse as hjb
from hjbcourse.derivations import diffusion as dsym

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_mixture(K=3, d=3, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(K, d, generator=g, dtype=dtype)
    A = torch.randn(K, d, d, generator=g, dtype=dtype)
    covs = A @ A.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=dtype)
    w = torch.rand(K, generator=g, dtype=dtype) + 0.2
    return hjb.GaussianMixture(means.to(device), covs.to(device), (w / w.sum()).to(device))


# ---------------------------------------------------------------------------------------------- validation
def test_bad_inputs_raise_value_errors_naming_the_parameter():
    m, c, w = torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="weights"):
        hjb.GaussianMixture(m, c, torch.tensor([0.7, 0.7]))
    with pytest.raises(ValueError, match="weights"):
        hjb.GaussianMixture(m, c, torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="weights"):
        hjb.GaussianMixture(m, c, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="covs"):
        hjb.GaussianMixture(m, torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2), w)
    with pytest.raises(ValueError, match="covs"):
        hjb.GaussianMixture(m, torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 2), w)
    with pytest.raises(ValueError, match="covs"):
        hjb.GaussianMixture(m, torch.eye(3).repeat(2, 1, 1), w)
    with pytest.raises(ValueError, match="means"):
        hjb.GaussianMixture(torch.zeros(2), c, w)
    with pytest.raises(ValueError, match="means"):
        hjb.GaussianMixture(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), c, w)
    with pytest.raises(ValueError, match="beta_min"):
        hjb.VPSDE(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        hjb.VPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="T"):
        hjb.VPSDE(T=-1.0)
    gm = hjb.GaussianMixture(m, c, w)
    sde = hjb.VPSDE()
    with pytest.raises(ValueError, match="t"):
        gm.marginal(sde, 1.5)
    with pytest.raises(ValueError, match="t"):
        gm.marginal(sde, -0.1)
    with pytest.raises(ValueError, match="x"):
        gm.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n"):
        gm.sample(0)
    prob = hjb.DiffusionControl(gm, sde)
    with pytest.raises(ValueError, match="n_paths"):
        prob.estimate_cost(prob.optimal_control, 0.0, [0.0, 0.0], n_paths=1)
    with pytest.raises(ValueError, match="control"):
        prob.estimate_cost(lambda t, x: x[:, :1], 0.0, [0.0, 0.0], n_paths=4, n_steps=2)
    with pytest.raises(ValueError, match="scheme"):
        hjb.diffusion.simulate_reverse(sde, hjb.zero_control, torch.zeros(3, 2), scheme="rk4")
    with pytest.raises(ValueError, match="p"):
        hjb.wasserstein_distance(torch.zeros(3, 2), torch.zeros(3, 2), p=3)
    with pytest.raises(ValueError, match="iterations"):
        hjb.ScoreMatchingConfig(iterations=0)
    with pytest.raises(ValueError, match="preset"):
        hjb.ScoreMatchingConfig.preset("huge")


# ---------------------------------------------------------------------------------------------- densities
def test_log_prob_matches_scipy():
    gm = random_mixture()
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = sum(w * multivariate_normal(m.numpy(), C.numpy()).pdf(x.numpy())
              for m, C, w in zip(gm.means, gm.covs, gm.weights.tolist()))
    lp = gm.log_prob(x)
    assert lp.shape == (50, 1)
    np.testing.assert_allclose(lp[:, 0].numpy(), np.log(ref), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_score_is_the_gradient_of_log_prob(device):
    gm = random_mixture(K=4, d=3, device=device)
    x = (2 * torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))).to(device)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-10, atol=1e-10)
    # and for a marginal too
    pt = gm.marginal(hjb.VPSDE(), 0.3)
    (grad,) = torch.autograd.grad(pt.log_prob(x).sum(), x)
    torch.testing.assert_close(pt.score(x.detach()), grad, rtol=1e-10, atol=1e-10)


def test_sample_moments_and_reproducibility():
    gm = random_mixture(K=3, d=2)
    x = gm.sample(200_000, generator=3)
    assert x.shape == (200_000, 2)
    se = (gm.covariance().diagonal() / 200_000).sqrt()
    assert ((x.mean(0) - gm.mean()).abs() < 4 * se).all()
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), rtol=0.02, atol=0.02)
    torch.testing.assert_close(gm.sample(10, generator=7), gm.sample(10, generator=7))


def test_vpsde_schedule_closed_forms():
    sde = hjb.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    # int_0^s beta by the trapezoid rule on a fine grid (exact for a linear beta)
    for si in s.tolist():
        grid = np.linspace(0, si, 1001)
        assert abs(np.trapezoid(sde.beta(grid), grid) - sde.int_beta(si)) < 1e-12
    torch.testing.assert_close(sde.alpha(s) ** 2 + sde.variance(s), torch.ones_like(s))
    assert sde.variance(0.0) == 0.0 and sde.alpha(0.0) == 1.0


def test_marginal_endpoints():
    gm = random_mixture(K=2, d=2)
    sde = hjb.VPSDE()
    p0 = gm.marginal(sde, 0.0)
    torch.testing.assert_close(p0.covs, gm.covs)
    torch.testing.assert_close(p0.means, gm.means)
    pT = gm.marginal(sde, 1.0)  # int beta = 10.05: within 1e-4 of N(0, I)
    torch.testing.assert_close(pT.covs, torch.eye(2, dtype=torch.float64).expand(2, 2, 2), atol=1e-3, rtol=0)
    assert float(pT.means.abs().max()) < 0.05


def test_marginal_matches_monte_carlo_of_the_forward_sde():
    """Euler-Maruyama paths of dY = -1/2 beta Y ds + sqrt(beta) dB from data samples against the exact law:
    moments and the probabilities of half-planes, each within 4 Monte Carlo standard errors."""
    gm = random_mixture(K=3, d=2, seed=4)
    sde = hjb.VPSDE()
    n, s = 40_000, 0.15
    y0 = gm.sample(n, generator=5)
    ys = sde.simulate(y0, s, n_steps=300, generator=6)
    ps = gm.marginal(sde, s)
    se_mean = (ps.covariance().diagonal() / n).sqrt()
    assert ((ys.mean(0) - ps.mean()).abs() < 4 * se_mean).all(), (ys.mean(0), ps.mean())
    for a in ([1.0, 0.0], [0.0, 1.0], [0.6, -0.8], [0.7, 0.7]):
        a = torch.tensor(a, dtype=torch.float64)
        proj_m = ps.means @ a
        proj_s = torch.sqrt(torch.einsum("i,kij,j->k", a, ps.covs, a))
        for b in (-1.0, 0.0, 0.5, 1.5):
            exact = float((ps.weights * torch.tensor(norm.sf(b, proj_m.numpy(), proj_s.numpy()))).sum())
            mc = float((ys @ a > b).double().mean())
            se = math.sqrt(exact * (1 - exact) / n)
            assert abs(mc - exact) < 4 * se + 1e-12, (a, b, mc, exact)


# ---------------------------------------------------------------------------------------------- control problem
def test_value_solves_the_hjb():
    """V(t, x) = -log p_{T-t}(x) satisfies -V_t = -div mu + mu.grad V - 1/2 |Sigma grad V|^2 + 1/2 Sigma^2 Lap V
    (V_t by a central difference, derivatives in x by autograd, float64)."""
    gm = random_mixture(K=3, d=2, seed=8)
    sde = hjb.VPSDE()
    prob = hjb.DiffusionControl(gm, sde)
    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    for t in (0.1, 0.5, 0.9):
        h = 1e-5
        Vt = (prob.value(t + h, x) - prob.value(t - h, x)).detach() / (2 * h)
        V = prob.value(t, x)
        (gV,) = torch.autograd.grad(V.sum(), x, create_graph=True)
        lap = sum(torch.autograd.grad(gV[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))[:, None]
        S2 = sde.reverse_diffusion(t) ** 2
        mu = sde.reverse_drift(t, x)
        rhs = (-sde.reverse_drift_divergence(t, 2) + (mu * gV).sum(1, keepdim=True)
               - 0.5 * S2 * (gV * gV).sum(1, keepdim=True) + 0.5 * S2 * lap)
        torch.testing.assert_close(-Vt, rhs.detach(), rtol=1e-6, atol=1e-6)
        # and the optimal control is -Sigma grad V
        torch.testing.assert_close(prob.optimal_control(t, x.detach()), -sde.reverse_diffusion(t) * gV.detach())


def test_exact_control_samples_the_data():
    gm = hjb.GaussianMixture.example()
    prob = hjb.DiffusionControl(gm, hjb.VPSDE())
    x = prob.sample(n=4000, n_steps=300, generator=10)
    ref = gm.sample(4000, generator=11)
    se = (gm.covariance().diagonal() / 4000).sqrt()
    assert ((x.mean(0) - gm.mean()).abs() < 4 * se * math.sqrt(2)).all()
    # the average -log p_data of the samples matches that of data samples (the entropy) within MC error
    nll_x, nll_r = -gm.log_prob(x), -gm.log_prob(ref)
    se_nll = math.sqrt(float(nll_x.var() + nll_r.var()) / 4000)
    assert abs(float(nll_x.mean() - nll_r.mean())) < 4 * se_nll


def test_verification_identity_holds_within_monte_carlo_error():
    gm = hjb.GaussianMixture.example()
    prob = hjb.DiffusionControl(gm, hjb.VPSDE())
    x = [0.3, -0.2]
    g = torch.Generator().manual_seed(12)
    ex = prob.estimate_cost(prob.optimal_control, 0.0, x, n_paths=1000, n_steps=200, generator=g)
    assert ex.gap == 0.0
    assert abs(ex.J - ex.V) < 3 * ex.J_se, ex
    shift = torch.tensor([2.0, 0.0], dtype=torch.float64)
    pert = prob.estimate_cost(lambda t, y: prob.optimal_control(t, y) + shift, 0.0, x, n_paths=1000, n_steps=200,
                              generator=g)
    assert abs(pert.gap - 2.0) < 1e-12  # 1/2 |shift|^2 T, exactly
    assert abs(pert.residual) < 3 * pert.residual_se, pert
    assert pert.excess > 3 * pert.J_se  # and the cost did go up
    # a scaled control: the gap is random, the identity still holds
    sc = prob.estimate_cost(lambda t, y: 0.7 * prob.optimal_control(t, y), 0.0, x, n_paths=1000, n_steps=200,
                            generator=g)
    assert abs(sc.residual) < 3 * sc.residual_se, sc


def test_heun_step_bias_is_small():
    """Halving the step of the Heun scheme (coupled paths) moves J by less than 0.03 at 200 steps."""
    gm = hjb.GaussianMixture.example()
    prob = hjb.DiffusionControl(gm, hjb.VPSDE())
    b = prob.step_bias(lambda t, y: 0.8 * prob.optimal_control(t, y), 0.0, [0.3, -0.2], n_paths=1000, n_steps=200,
                       generator=13)
    assert abs(b["dJ"]) < 0.03 + 3 * b["dJ_se"], b


@pytest.mark.parametrize("device", DEVICES)
def test_step_bias_and_paths_stay_on_the_mixture_device(device):
    """The coupling weights of step_bias and the times of a kept path live where the mixture lives (a cuda
    mixture crashed on CPU-made weights); on the CPU the same generator gives the same numbers."""
    prob = hjb.DiffusionControl(hjb.GaussianMixture.example(device=device), hjb.VPSDE())
    kw = dict(n_paths=50, n_steps=10, generator=0)
    b = prob.step_bias(prob.optimal_control, 0.0, [0.3, -0.2], **kw)
    assert all(math.isfinite(v) for v in b.values()) and b == prob.step_bias(prob.optimal_control, 0.0, [0.3, -0.2], **kw)
    res = hjb.diffusion.simulate_reverse(prob.sde, prob.optimal_control, prob.initial_sample(8, generator=1), n_steps=5,
                               generator=2, keep_path=True)
    assert res.times.device == res.x.device and res.path.shape == (6, 8, 2)


def test_same_seed_same_numbers():
    gm = hjb.GaussianMixture.example()
    prob = hjb.DiffusionControl(gm, hjb.VPSDE())
    a = prob.estimate_cost(prob.optimal_control, 0.0, [0.0, 0.0], n_paths=64, n_steps=20, generator=5)
    b = prob.estimate_cost(prob.optimal_control, 0.0, [0.0, 0.0], n_paths=64, n_steps=20, generator=5)
    assert a == b


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("device", DEVICES)
def test_score_matching_learns_and_is_reproducible(device):
    gm = hjb.GaussianMixture.example(dtype=torch.float32, device=device)
    sde = hjb.VPSDE()
    cfg = hjb.ScoreMatchingConfig.preset("quick", seed=0, device=device, iterations=300, batch_size=256,
                                         hidden=32, progress=False, eval_every=150, eval_samples=500, ema=0.9)
    m1 = hjb.ScoreMatching(gm, cfg, sde=sde).solve()
    m2 = hjb.ScoreMatching(gm, cfg, sde=sde).solve()
    assert m1.history["loss"] == m2.history["loss"]
    assert {"loss", "loss_avg", "lr", "score_error_max", "score_error_mean"} <= set(m1.history.keys)
    # one step leaves the network far from the score; 300 steps bring it much closer
    m0 = hjb.ScoreMatching(gm, cfg.replace(iterations=1), sde=sde).solve()
    assert m1.history.last("score_error_mean") < 0.5 * m0.history.last("score_error_mean")
    x = gm.sample(8, generator=0)
    u = m1.control(0.5, x)
    assert u.shape == (8, 2) and torch.isfinite(u).all()
    xs = m1.sample(16, n_steps=20, generator=1)
    assert xs.shape == (16, 2) and torch.isfinite(xs).all()
    with pytest.raises(ValueError, match="t"):
        m1.score(0.0, x)


def test_solvers_leave_the_global_rng_alone():
    """ScoreMatching.solve and example_controls draw their networks from their own seed: the caller's global
    generator is in the same state afterwards, and the same seed gives the same numbers."""
    gm = hjb.GaussianMixture.example(dtype=torch.float32)
    cfg = hjb.ScoreMatchingConfig.preset("quick", seed=4, iterations=5, batch_size=32, hidden=8, progress=False,
                                         eval_every=5, eval_samples=50)
    prob = hjb.DiffusionControl(hjb.GaussianMixture.example(), hjb.VPSDE())
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    m1, m2 = (hjb.ScoreMatching(gm, cfg, sde=hjb.VPSDE()).solve() for _ in range(2))
    u1, u2 = (hjb.example_controls(prob, seed=3)["network"](0.3, x) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), before)
    assert m1.history["loss"] == m2.history["loss"]
    assert all(torch.equal(p, q) for p, q in zip(m1.net.parameters(), m2.net.parameters()))
    assert torch.equal(u1, u2) and not torch.equal(u1, hjb.example_controls(prob, seed=4)["network"](0.3, x))
    with pytest.raises(ValueError, match="^seed"):
        hjb.example_controls(prob, seed=-1)


def test_score_checks_tensor_times_as_it_checks_numbers():
    """A tensor of times is held to the same rule as a number: every time in (0, T], one per row of x."""
    sde = hjb.VPSDE()
    model = hjb.diffusion.ScoreModel(hjb.diffusion.ScoreNet(2, sde, hidden=8, depth=1), sde)
    x = torch.randn(4, 2)
    good = model.score(torch.full((4,), 0.5), x)
    assert good.shape == (4, 2) and torch.allclose(good, model.score(0.5, x))
    for bad in (torch.zeros(4), torch.tensor([0.5, 0.5, 0.0, 0.5]), torch.full((4,), 1.5),
                torch.full((4,), math.nan)):
        with pytest.raises(ValueError, match=r"^t must lie in \(0, T"):
            model.score(bad, x)
    with pytest.raises(ValueError, match="^t must be a number or hold one time per row"):
        model.score(torch.full((3,), 0.5), x)
    with pytest.raises(ValueError, match="^x must have shape"):
        model.score(0.5, torch.randn(4, 3))


def test_score_matching_on_a_point_cloud_and_divergence():
    pts = hjb.GaussianMixture.example(dtype=torch.float32).sample(500, generator=0)
    cfg = hjb.ScoreMatchingConfig.preset("quick", iterations=20, batch_size=64, hidden=16, progress=False)
    m = hjb.ScoreMatching(pts, cfg, sde=hjb.VPSDE()).solve()
    assert "score_error_max" not in m.history  # no exact score to compare with
    bad = cfg.replace(lr=1e30)  # Adam's first steps are of size lr: the float32 activations overflow
    with pytest.raises(hjb.DivergenceError, match="iteration"):
        hjb.ScoreMatching(pts, bad.replace(iterations=50), sde=hjb.VPSDE()).solve()


def test_score_matching_resumed_from_a_checkpoint_repeats_an_uninterrupted_run(tmp_path):
    """Networks, EMA, optimiser, schedule, running loss and the three random streams are in the checkpoint: a run
    saved after 7 steps and loaded again ends with the same history and weights as one run of 12 steps."""
    gm = hjb.GaussianMixture.example(dtype=torch.float32)
    cfg = hjb.ScoreMatchingConfig.preset("quick", seed=3, iterations=12, batch_size=32, hidden=8, progress=False,
                                         eval_every=5, eval_samples=50)
    whole = hjb.ScoreMatching(gm, cfg).solve()
    solver = hjb.ScoreMatching(gm, cfg)
    for _ in range(7):
        row = solver.step()
    assert row["iteration"] == 7 and solver.iteration == 7
    solver.save(tmp_path / "sm.pt")
    resumed = hjb.ScoreMatching.load(tmp_path / "sm.pt", gm).solve()
    assert resumed.history["loss"] == whole.history["loss"]
    assert resumed.history["score_error_max"][4::5] == whole.history["score_error_max"][4::5]
    assert all(torch.equal(p, q) for p, q in zip(resumed.net.parameters(), whole.net.parameters()))
    assert resumed.seconds > 0 and len(resumed.history) == 12
    with pytest.raises(ValueError, match="sde="):
        hjb.ScoreMatching.load(tmp_path / "sm.pt", gm, sde=hjb.VPSDE(beta_max=10.0))


def test_score_matching_takes_a_diffusion_control_problem():
    """A DiffusionControl brings its data and its SDE: the same run as the mixture with that SDE."""
    gm, sde = hjb.GaussianMixture.example(dtype=torch.float32), hjb.VPSDE(beta_max=15.0)
    cfg = hjb.ScoreMatchingConfig.preset("quick", iterations=3, batch_size=16, hidden=8, progress=False)
    a = hjb.ScoreMatching(hjb.DiffusionControl(gm, sde), cfg).solve()
    b = hjb.ScoreMatching(gm, cfg, sde=sde).solve()
    assert a.history["loss"] == b.history["loss"] and a.sde is sde
    with pytest.raises(ValueError, match="^sde must be the problem's own"):
        hjb.ScoreMatching(hjb.DiffusionControl(gm, sde), cfg, sde=hjb.VPSDE())


def test_score_error_is_zero_for_the_exact_score_and_one_for_zero():
    gm = hjb.GaussianMixture.example()
    sde = hjb.VPSDE()
    exact = lambda t, x: gm.marginal(sde, t).score(x)  # noqa: E731
    e = hjb.score_error(exact, gm, sde, [0.1, 0.5, 1.0], n=500, generator=0)
    assert float(e.max()) < 1e-12
    e0 = hjb.score_error(lambda t, x: torch.zeros_like(x), gm, sde, [0.1, 0.5], n=500, generator=0)
    torch.testing.assert_close(e0, torch.ones(2, dtype=e0.dtype))


# ---------------------------------------------------------------------------------------------- metrics
def test_wasserstein_of_a_translation_is_its_length():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert abs(hjb.wasserstein_distance(x, x + v) - 0.5) < 1e-9
    assert abs(hjb.wasserstein_distance(x, x + v, p=1) - 0.5) < 1e-9
    y = x[:100]
    assert abs(hjb.wasserstein_distance(y, y + v, method="sinkhorn", reg=0.005) - 0.5) < 0.03
    q = hjb.sample_quality(x, hjb.GaussianMixture([[0.0, 0.0]], [np.eye(2)], [1.0]), x + v)
    assert abs(q["W2"] - 0.5) < 1e-9 and abs(q["nll"] - (math.log(2 * math.pi) + 0.5 * float((x**2).sum(1).mean()))) < 1e-6


# ---------------------------------------------------------------------------------------------- symbolic
@pytest.mark.parametrize("d,m", [(1, 1), (2, 2), (3, 3), (2, 1)])
def test_fokker_planck_gives_the_hjb(d, m):
    r = dsym.fokker_planck_to_hjb(d, m)
    assert r.residual == 0
    for name, _, substituted, hjb_term in r.terms:
        assert sp.simplify(substituted - hjb_term) == 0, name


def test_convex_conjugate_and_verification_identity():
    q = dsym.quadratic_minimisation(3)
    assert q.u_star == -q.p
    assert sp.simplify(q.minimum + (q.p.T * q.p)[0, 0] / 2) == 0
    assert q.hessian == sp.eye(3)
    for d in (1, 2):
        assert dsym.verification_identity(d).residual == 0


def test_vp_gaussian_marginal_solves_fokker_planck():
    assert dsym.vp_marginal_check()["residual"] == 0


def test_symbolic_hjb_agrees_with_the_numerical_one():
    """The 1-D symbolic HJB, evaluated with the exact V of a 1-D mixture, vanishes (up to finite differences)."""
    r = dsym.fokker_planck_to_hjb(1)
    x, t = r.x[0], r.t
    f64 = dict(dtype=torch.float64)
    gm = hjb.GaussianMixture(torch.tensor([[-1.0], [1.5]], **f64), torch.tensor([[[0.2]], [[0.5]]], **f64),
                             torch.tensor([0.3, 0.7], **f64))
    sde = hjb.VPSDE()
    prob = hjb.DiffusionControl(gm, sde)
    # V as a sympy expression in x for the 1-D mixture at a fixed t, then the residual of -V_t = hjb
    t0 = 0.4
    h = 1e-5
    xs = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None]
    Vt = (prob.value(t0 + h, xs) - prob.value(t0 - h, xs)) / (2 * h)
    law = prob.law(t0)
    Vx = sp.Symbol("Vx")
    expr = r.hjb.subs({sp.Derivative(r.V, (x, 2)): sp.Symbol("Vxx"), sp.Derivative(r.V, x): Vx})
    expr = expr.subs({sp.Derivative(r.mu[0], x): sp.Symbol("dmu"), r.mu[0]: sp.Symbol("mu"),
                      r.Sigma[0, 0]: sp.Symbol("S")})
    f = sp.lambdify([sp.Symbol(n) for n in ("Vx", "Vxx", "dmu", "mu", "S")], expr)
    xg = xs.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(prob.value(t0, xg).sum(), xg, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), xg)
    b = sde.beta(sde.T - t0)
    rhs = f(g1.detach(), g2, 0.5 * b, 0.5 * b * xs, math.sqrt(b))
    torch.testing.assert_close(-Vt, rhs, rtol=1e-6, atol=1e-6)
    assert law.dim == 1
