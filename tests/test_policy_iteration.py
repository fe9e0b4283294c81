"""Neural policy iteration and its diagnostics, checked against closed forms (float64 where it matters)."""
import math

import pytest
import torch

import hjbcourse as hjb
from hjbcourse.exact import solve_lqr
from hjbcourse.metrics import relative_sup
from hjbcourse.solvers import policy_iteration as pi
from hjbcourse.training import check_finite

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class CoupledNoiseLQR(hjb.ControlProblem):
    """A 2-D LQR written from scratch as a user would: coupled drift, non-diagonal noise, one control.

    dX = (A X + b a) dt + D dW, r = -1/2 (x'Qx + R a^2). It is *not* a StochasticLQR: the solver sees only
    drift, diffusion and reward; the Riccati solution is computed here for the check only.
    """

    name = "user-defined 2-D LQR"

    def __init__(self):
        self.A = torch.tensor([[-0.4, 0.3], [-0.2, -0.6]], dtype=torch.float64)
        self.B = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
        self.Q = torch.tensor([[1.0, 0.2], [0.2, 0.5]], dtype=torch.float64)
        self.R = torch.tensor([[0.2]], dtype=torch.float64)
        self.D = torch.tensor([[0.3, 0.1], [0.15, 0.25]], dtype=torch.float64)
        super().__init__(2, 1, 2, rho=0.1, domain=(-2.0, 2.0), additive_noise=True)

    def drift(self, x, a):
        return x @ self.A.to(x).T + a @ self.B.to(x).T

    def diffusion(self, x, a):
        return self.D.to(x).expand(x.shape[0], 2, 2)

    def reward(self, x, a):
        return -0.5 * (((x @ self.Q.to(x)) * x).sum(-1, keepdim=True) + self.R.to(x)[0, 0] * a * a)

    def sample_states(self, n, generator=None, dtype=torch.float32, device="cpu"):
        g = hjb.make_generator(generator)
        u = 4 * torch.rand(n - n // 2, 2, generator=g, dtype=torch.float64) - 2
        z = (0.5 * torch.randn(n // 2, 2, generator=g, dtype=torch.float64)).clamp(-2, 2)
        return torch.cat([u, z]).to(dtype=dtype, device=device)

    def riccati(self):
        return solve_lqr(self)  # duck-typed: A, B, Q, R, D and rho are all it reads


def smoke(**kw):
    return hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False, **kw)


def test_a_problem_without_closed_form_is_solved_without_reference():
    m = hjb.Merton(mu=0.3)                         # optimum pi = 3.9 lies outside pi_bounds (-1, 3)
    solver = hjb.PolicyIteration(m, smoke(iterations=1, input_scaling="log", initial_action=(1.0, 0.03)))
    row = solver.step()
    assert "pi_rel" not in row and math.isfinite(row["value_fit_mse"])


# ---------------------------------------------------------------------------------------------- diagnostics
def test_relative_errors():
    assert hjb.relative_l2(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert hjb.relative_error(1.01, 1.0) == pytest.approx(0.01)
    assert hjb.relative_error(torch.eye(2) * 1.1, torch.eye(2)) == pytest.approx(0.1)
    assert relative_sup(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        hjb.relative_l2(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="zero"):
        hjb.relative_l2(torch.ones(2), torch.zeros(2))


def test_fit_quadratic_form_and_gain_recover_known_matrices():
    P = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, -0.4], [0.0, -0.4, 0.5]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Pf, bf, cf = hjb.fit_quadratic_form(lambda z: -0.5 * ((z @ P) * z).sum(-1, keepdim=True) + z @ b.unsqueeze(1) - 0.7, x)
    assert torch.allclose(Pf, P, atol=1e-10) and torch.allclose(bf, b, atol=1e-10) and cf == pytest.approx(0.7)
    K = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], dtype=torch.float64)
    Kf, k0 = hjb.fit_linear_gain(lambda z: -z @ K.T + 0.25, x)
    assert torch.allclose(Kf, K, atol=1e-10) and torch.allclose(k0, torch.full((2,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("problem", [hjb.StochasticLQR.scalar(), hjb.Merton(), hjb.coupled_lqr(4)],
                         ids=["lqr", "merton", "lqr4"])
def test_hjb_residual_vanishes_at_the_closed_form(problem):
    ex = problem.exact()
    x = pi.evaluation_states(problem, 256, dtype=torch.float64)
    assert hjb.hjb_residual_norm(problem, ex.value, ex.policy, x) < 1e-12
    errs = hjb.errors_against_exact(ex, problem, x)
    assert max(errs[k] for k in errs if k.endswith("rel_l2") or k.endswith("_rel")) < 1e-12


def test_hjb_residual_sees_a_wrong_policy():
    p = hjb.StochasticLQR.scalar()
    ex = p.exact()
    x = p.grid(101, dtype=torch.float64)
    assert hjb.hjb_residual_norm(p, ex.value, lambda z: 0.9 * ex.policy(z), x) > 1e-3


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value", [("iterations", 0), ("dt", -0.1), ("scheme", "rk4"), ("policy", "critic"),
                                         ("paths_per_state", 3), ("horizon", 0.0), ("generator_method", "exact"),
                                         ("input_scaling", "sqrt"), ("state_box", 0.5),
                                         ("initial_paths_per_state", 3), ("polish_steps", True),
                                         ("min_iterations", -1), ("seed", True), ("tol", True), ("value_lr", math.inf),
                                         ("replay_fraction", 0.75), ("replay_fraction", True), ("progress", "no"),
                                         ("value_fit", "log"), ("value_sign", 0), ("value_sign", 2),
                                         ("value_sign", True), ("value_sign", -1.0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        hjb.PolicyIterationConfig.preset("quick", **{field: value})


def test_full_preset_leaves_the_device_to_the_caller():
    assert hjb.PolicyIterationConfig.preset("full").device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            hjb.PolicyIterationConfig.preset("full", device="cuda")


def test_log_input_scaling_needs_positive_states():
    with pytest.raises(ValueError, match="input_scaling"):
        hjb.PolicyIteration(hjb.StochasticLQR.scalar(), smoke(input_scaling="log"))


def test_mapped_input_network_log_scaling_box_and_extension():
    m = hjb.Merton()                                   # domain [0.5, 2]: log box [-log 2, log 2]
    torch.manual_seed(0)
    v = pi.make_value_network(m, 16, 2, input_scaling="log", box=2.0, dtype=torch.float64)
    a = pi.make_policy_network(m, 16, 2, input_scaling="log", box=2.0, dtype=torch.float64)
    with torch.no_grad():
        a.net.out.weight.normal_()
    x = m.grid(7, dtype=torch.float64)
    with torch.no_grad():  # inside the box: an MLP of log x
        assert torch.allclose(v(x), v.net(torch.log(x)), atol=1e-12)
        edge = torch.tensor([[0.25], [4.0]], dtype=torch.float64)    # the box is [0.25, 4] in wealth
        far = torch.tensor([[0.25 / 1.5], [4.0 * 1.5]], dtype=torch.float64)
        assert torch.allclose(a(far), a(edge), atol=1e-12)          # the policy is constant beyond the box
    # the value continues along its slope at the face: V(far) = V(edge) + log(1.5) |dV/dlog x| (signed)
    z = torch.log(edge).requires_grad_(True)
    (g,) = torch.autograd.grad(v.net(z).sum(), z)
    with torch.no_grad():
        expected = v(edge) + torch.log(torch.tensor(1.5, dtype=torch.float64)) * g * torch.tensor([[-1.0], [1.0]],
                                                                                                  dtype=torch.float64)
        assert torch.allclose(v(far), expected, rtol=1e-4, atol=1e-6)
    x_out = pi.clamp_to_box(m, torch.tensor([[0.01], [1.0], [100.0]]), 2.0, "log")
    assert torch.allclose(x_out, torch.tensor([[0.25], [1.0], [4.0]]), rtol=1e-6)


def test_log_scaling_and_state_box_options_run_and_keep_states_in_the_box(tmp_path):
    m = hjb.Merton()
    cfg = smoke(input_scaling="log", state_box=3.0, initial_paths_per_state=4, initial_action=(1.0, 0.03))
    s = hjb.PolicyIteration(m, cfg)
    s.solve()
    lo, hi = 0.5 / 2 ** 2, 2.0 * 2 ** 2           # log box: log 2 half-width, three times: [1/8, 8]
    assert float(s._endpoints.min()) >= lo * (1 - 1e-5) and float(s._endpoints.max()) <= hi * (1 + 1e-5)
    assert all(math.isfinite(v) for v in s.history["value_fit_mse"] + s.history["pi_rel"])
    s2 = hjb.PolicyIteration.load(s.save(tmp_path / "m.pt"), m)
    x = m.grid(5)
    with torch.no_grad():
        assert torch.equal(s.value_net(x), s2.value_net(x)) and torch.equal(s.policy_net(x), s2.policy_net(x))


def test_signed_exp_value_has_the_given_sign_and_starts_at_the_targets_scale():
    m = hjb.Merton()
    torch.manual_seed(0)
    x = m.grid(9, dtype=torch.float64)
    for sign in (-1, 1):
        v = pi.make_value_network(m, 8, 2, input_scaling="log", box=4.0, dtype=torch.float64, sign=sign)
        assert isinstance(v, pi.SignedExpValue)
        with torch.no_grad():
            v.net.out.weight.normal_(0.0, 3.0)
            far = torch.tensor([[1e-3], [1e3]], dtype=torch.float64)        # also beyond the box
            assert bool((sign * v(torch.cat([x, far])) > 0).all())
        y = sign * torch.tensor([[1.0], [2.0], [4.0], [8.0]], dtype=torch.float64)
        v.set_output_scale(y)
        assert float(v.out_shift) == pytest.approx(math.log(8.0) / 2)    # mean of log|y|
        assert float(v.out_scale) == pytest.approx(float(y.std()))        # loss units: the spread of y itself
        v.set_output_scale(sign * torch.full((3, 1), 2.0, dtype=torch.float64))   # no spread: |mean| instead
        assert float(v.out_scale) == pytest.approx(2.0) and float(v.net.out_scale) == 1.0
    with pytest.raises(ValueError, match="value_sign"):
        v.set_output_scale(-y)                                             # targets of the other sign
    with pytest.raises(ValueError, match="sign"):
        pi.make_value_network(m, 8, 2, sign=0)


def test_relative_weights_are_one_over_v_squared_with_mean_one_and_a_floor():
    v = torch.tensor([[-1.0], [-2.0], [-4.0]], dtype=torch.float64)
    w = pi.relative_weights(v)
    assert float(w.mean()) == pytest.approx(1.0)
    assert torch.allclose(w * v.pow(2), (w * v.pow(2))[0].expand(3, 1))  # proportional to 1 / v^2
    w0 = pi.relative_weights(torch.tensor([[0.0], [1.0], [2.0]]), floor=0.1)   # |v| >= 0.1 * mean |v| = 0.1
    assert float(w0[0] / w0[1]) == pytest.approx(100.0)


class _Constant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("out_scale", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.c.expand(x.shape[0], 1)


def test_weighted_fit_minimises_the_weighted_squares():
    x = torch.zeros(4, 1, dtype=torch.float64)
    y = torch.tensor([[1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    w = torch.tensor([[4.0], [2.0], [1.0], [0.1]], dtype=torch.float64)
    fits = {}
    for name, weights in (("plain", None), ("weighted", w)):
        c = _Constant()
        opt = torch.optim.Adam(c.parameters(), lr=0.05)
        # minibatches are drawn with replacement: Adam gets close, the full-batch L-BFGS polish lands exactly
        mse = pi.fit_value(c, x, y, opt, 200, 4, torch.Generator().manual_seed(0), polish_steps=20, weights=weights)
        fits[name] = float(c.c.detach())
        expected = (y * w).sum() / w.sum() if weights is not None else y.mean()
        assert fits[name] == pytest.approx(float(expected), abs=1e-6)
        r2 = (y - fits[name]).pow(2) * (1 if weights is None else w)
        assert mse == pytest.approx(float(r2.mean()), rel=1e-6)           # the logged loss is the weighted one
    assert fits["weighted"] < 2.0 and fits["plain"] == pytest.approx(4.0, abs=1e-6)


def test_relative_fit_of_a_signed_exp_value_recovers_a_power_law_from_multiplicative_noise():
    m = hjb.Merton()                                                       # V = -A/x on the log box [1/8, 8]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.exp((2 * torch.rand(2048, 1, generator=g, dtype=torch.float64) - 1) * 3 * math.log(2))
    truth = -2.0 / x
    y = truth * (1 + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64))   # noise grows like |V|
    v = pi.make_value_network(m, 16, 2, input_scaling="log", box=3.0, dtype=torch.float64, sign=-1)
    v.set_output_scale(y)
    opt = torch.optim.Adam(v.parameters(), lr=3e-3)
    with torch.no_grad():
        v_old = -1.0 / x                                                   # a previous value of the right shape
    pi.fit_value(v, x, y, opt, 1500, 2048, torch.Generator().manual_seed(2), weights=pi.relative_weights(v_old))
    xg = torch.exp(torch.linspace(-2, 2, 41, dtype=torch.float64) * math.log(2)).unsqueeze(1)
    with torch.no_grad():
        rel = ((v(xg) - (-2.0 / xg)) / (2.0 / xg)).abs().max()
    assert float(rel) < 0.05, float(rel)


def test_relative_fit_and_signed_value_options_run_and_round_trip(tmp_path):
    m = hjb.Merton()
    cfg = smoke(input_scaling="log", state_box=3.0, initial_paths_per_state=4, initial_action=(1.0, 0.03),
                value_fit="relative", value_sign=-1)
    s = hjb.PolicyIteration(m, cfg)
    assert isinstance(s.value_net, pi.SignedExpValue)
    s.solve()
    assert all(math.isfinite(v) for v in s.history["value_fit_mse"] + s.history["pi_rel"])
    x = m.grid(5)
    with torch.no_grad():
        assert bool((s.value_net(x) < 0).all())
    s2 = hjb.PolicyIteration.load(s.save(tmp_path / "m.pt"), m)
    with torch.no_grad():
        assert torch.equal(s.value_net(x), s2.value_net(x))
    with pytest.raises(ValueError, match="value_sign"):                   # Merton's value is negative (gamma = 2)
        hjb.PolicyIteration(m, cfg.replace(value_sign=1)).step()


def test_merton_chapter_config_fits_by_relative_error_with_a_negative_value():
    cfg = hjb.course.chapter_config("merton", "quick")
    assert (cfg.value_fit, cfg.value_sign, cfg.value_batch) == ("relative", -1, cfg.n_states)
    lqr = hjb.course.chapter_config("lqr", "quick")
    assert (lqr.value_fit, lqr.value_sign) == ("absolute", None)


def test_solver_rejects_a_non_problem():
    with pytest.raises(ValueError, match="problem"):
        hjb.PolicyIteration("lqr", smoke())


# ---------------------------------------------------------------------------------------------- machinery
def test_feynman_kac_targets_are_unbiased_and_the_control_variate_cuts_the_noise():
    p = hjb.StochasticLQR.scalar()
    ex = p.exact()
    x = p.sample_states(512, 0, dtype=torch.float64)
    kw = dict(horizon=2.0, dt=0.02, paths_per_state=2, generator=1)
    y_cv, _ = pi.rollout_targets(p, ex.policy, ex.value, x, control_variate=True, **kw)
    y_plain, _ = pi.rollout_targets(p, ex.policy, ex.value, x, control_variate=False, **kw)
    v = ex.value(x)
    err_cv, err_plain = (y_cv - v), (y_plain - v)
    # weak order 2 at dt = 0.02: a time-step bias of about 0.1% of the value (chapter "Policy iteration")
    assert abs(float(err_cv.mean())) < 2e-3 * float(v.abs().mean())
    assert float(err_cv.pow(2).mean().sqrt()) < 0.1 * float(err_plain.pow(2).mean().sqrt())


def test_the_control_variate_step_follows_log_inputs_far_from_the_domain():
    # Merton's wealth wanders hundreds of times beyond its domain; a difference step fixed in x is lost to
    # float32 rounding there, and the control variate then adds noise thousands of times the value
    m = hjb.Merton(r=0.02, mu=0.08, sigma=0.25, gamma=0.8, rho=0.04)
    ex = m.exact()
    value = lambda x: ex.value(x.double()).float()
    policy = lambda x: torch.tensor([[ex.pi, ex.k]]).expand(x.shape[0], 2)
    x = torch.tensor([[0.7], [30.0], [300.0]])
    kw = dict(horizon=1 / m.rho, dt=0.1, paths_per_state=32, generator=0)
    y_log, _ = pi.rollout_targets(m, policy, value, x, input_scaling="log", **kw)
    y_plain, _ = pi.rollout_targets(m, policy, value, x, control_variate=False, **kw)
    y_affine, _ = pi.rollout_targets(m, policy, value, x, input_scaling="affine", **kw)
    rel = lambda y: ((y - value(x)) / value(x)).abs().flatten()
    assert float(rel(y_log).max()) < 1e-3 < float(rel(y_plain).min())   # measured: 1.1e-4 against 4.9e-3
    assert float(rel(y_affine)[-1]) > 1.0                                # the step fixed in x: 4800 times off
    with pytest.raises(ValueError, match="input_scaling"):
        pi.rollout_targets(m, policy, value, x, input_scaling="auto", **kw)


def test_greedy_policy_is_the_riccati_feedback_and_refuses_merton():
    p = hjb.StochasticLQR.scalar()
    ex = p.exact()
    x = p.grid(21, dtype=torch.float64)
    greedy = pi.GreedyPolicy(p, ex.value)
    assert torch.allclose(greedy(x), ex.policy(x), atol=1e-12)
    greedy.check(x)
    m = hjb.Merton()
    with pytest.raises(ValueError, match="greedy"):
        pi.GreedyPolicy(m, m.exact().value).check(m.grid(11, dtype=torch.float64))
    with pytest.raises(ValueError, match="greedy"):
        hjb.PolicyIteration(m, smoke(policy="greedy"))


@pytest.mark.parametrize("device", DEVICES)
def test_policy_improvement_finds_the_greedy_action(device):
    p = hjb.StochasticLQR.scalar()
    ex = p.exact()
    torch.manual_seed(0)
    net = pi.make_policy_network(p, width=32, depth=2, device=device)
    x = p.sample_states(512, 0, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    pi.improve_policy(p, net, ex.value, x, opt, steps=400)
    xg = p.grid(41, device=device)
    assert hjb.relative_l2(net(xg).detach(), ex.policy(xg)) < 0.01


def test_merton_policy_network_respects_the_action_box():
    m = hjb.Merton()
    net = pi.make_policy_network(m)
    with torch.no_grad():
        net.net.out.bias.fill_(50.0)
        a = net(m.grid(11))
    assert bool((a <= m.action_high.float()).all()) and bool((a >= m.action_low.float()).all())


# ---------------------------------------------------------------------------------------------- the solver
def test_user_defined_problem_is_solved_to_three_percent():
    p = CoupledNoiseLQR()
    ex = p.riccati()
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=0, progress=False, iterations=8, n_states=768,
                                           value_steps=200, policy_steps=100)
    sol = hjb.PolicyIteration(p, cfg).solve()
    x = p.sample_states(2048, 7, dtype=torch.float64)
    P, _, _ = hjb.fit_quadratic_form(sol.value, x)
    K, _ = hjb.fit_linear_gain(sol.policy, x)
    errP, errK = hjb.relative_error(P, ex.P), hjb.relative_error(K, ex.K)
    print(f"user-defined 2-D LQR: P rel. error {errP:.4f}, K rel. error {errK:.4f}")
    assert errP < 0.03 and errK < 0.03, (errP, errK)
    assert "exact" not in type(p).__dict__ and "value_rel_l2" not in sol.history  # nothing exact was used


def test_same_seed_same_numbers_and_checkpoint_round_trip(tmp_path):
    p = hjb.StochasticLQR.scalar()
    s1 = hjb.PolicyIteration(p, smoke(iterations=2, policy="actor"))   # the actor's state round-trips too
    s1.step()
    path = s1.save(tmp_path / "pi.pt")
    s1.step()
    s2 = hjb.PolicyIteration.load(path, p)
    assert s2.iteration == 1
    s2.step()
    x = p.grid(11)
    with torch.no_grad():
        assert torch.equal(s1.value_net(x), s2.value_net(x))
        assert torch.equal(s1.policy_net(x), s2.policy_net(x))
    assert s1.history["value_fit_mse"] == s2.history["value_fit_mse"]
    s3 = hjb.PolicyIteration(p, smoke(iterations=2, policy="actor"))
    s3.solve()
    assert s3.history["value_fit_mse"] == s1.history["value_fit_mse"]


def test_checkpoint_from_another_device_restarts_the_streams(tmp_path):
    # a generator's state cannot move between a CPU and a GPU; stand in for a GPU checkpoint by relabelling one
    p = hjb.StochasticLQR.scalar()
    s1 = hjb.PolicyIteration(p, smoke(iterations=2, policy="actor"))   # the actor's state round-trips too
    s1.step()
    state = torch.load(s1.save(tmp_path / "pi.pt"), weights_only=True)
    state["state"]["rng_devices"] = ["cpu", "cuda", "cuda"]
    state["state"]["rng"][1] = state["state"]["rng"][2] = torch.zeros(16, dtype=torch.uint8)   # a cuda state's size
    torch.save(state, tmp_path / "other.pt")
    s2 = hjb.PolicyIteration.load(tmp_path / "other.pt", p)
    s3 = hjb.PolicyIteration.load(tmp_path / "other.pt", p)
    s2.step()
    s3.step()
    assert s2.iteration == 2 and s2.history["value_fit_mse"] == s3.history["value_fit_mse"]   # reseeded alike


def test_solution_interface_and_history():
    p = hjb.Merton()
    sol = hjb.PolicyIteration(p, smoke()).solve()
    x = p.grid(5)
    assert sol.value(x).shape == (5, 1) and sol.policy(x).shape == (5, 2)
    for key in ("value_fit_mse", "policy_objective", "hjb_residual", "value_rel_l2", "pi_rel", "k_rel"):
        assert len(sol.history[key]) == sol.iterations == 2
        assert math.isfinite(sol.history[key][-1])
    with pytest.raises(ValueError, match="x"):
        sol.value(torch.zeros(3, 2))


class _BrokenLQR(hjb.StochasticLQR):
    def reward(self, x, a):
        return super().reward(x, a) * float("nan")


def test_a_nan_loss_stops_with_the_iteration_named():
    p = _BrokenLQR(-0.5, 1.0, 1.0, 0.1, 0.3, 0.1)
    with pytest.raises(hjb.DivergenceError, match="iteration 1"):
        hjb.PolicyIteration(p, smoke()).solve()


def test_check_finite_names_the_value_that_is_not_finite():
    check_finite(torch.tensor([1.0, 2.0]), "loss", 3)
    with pytest.raises(hjb.DivergenceError, match=r"loss became nan \(entry 1 of 3, 2 not finite\) at iteration 3"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "loss", 3)
    with pytest.raises(hjb.DivergenceError, match="became inf at iteration 0"):
        check_finite(float("inf"), "the fit", 0)
