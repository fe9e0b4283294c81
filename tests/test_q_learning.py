"""Tests of the model-free learners (hjbcourse.environment, hjbcourse.solvers.q_learning)."""
import math
import warnings

import numpy as np
import pytest
import torch

import hjbcourse as hjb


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def small(**kw):
    base = dict(n_transitions=20_000, n_envs=500, batch_size=512, progress=False, log_every=5,
                value="quadratic", mean="linear")
    base.update(kw)
    return hjb.QLearningConfig.preset("quick", **base)


class ExactLQRWorld:
    """A sampler the learner cannot see into: the scalar LQR's exact one-step transition law, written here
    from the closed-form solution of the linear SDE, with no ControlProblem anywhere."""

    def __init__(self, dt, alpha=-0.5, beta=1.0, q=1.0, r_a=0.1, sigma=0.3, rho=0.1):
        self.dt, self.rho, self.state_dim, self.action_dim = dt, rho, 1, 1
        self.action_low = torch.tensor([-math.inf], dtype=torch.float64)
        self.action_high = torch.tensor([math.inf], dtype=torch.float64)
        self.state_low = torch.tensor([-2.0], dtype=torch.float64)
        self.state_high = torch.tensor([2.0], dtype=torch.float64)
        e = math.exp(alpha * dt)
        self._coef = (e, beta * (e - 1) / alpha, sigma * math.sqrt((e * e - 1) / (2 * alpha)))
        self._cost = (q, r_a)
        self.steps = 0

    def reset(self, n, generator=None):
        return 4 * torch.rand(n, 1, generator=generator, dtype=torch.float64) - 2

    def step(self, x, a, generator=None):
        self.steps += 1
        e, b, s = self._coef
        q, r_a = self._cost
        x_next = e * x + b * a + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return -0.5 * (q * x * x + r_a * a * a), x_next


# -- the environment ------------------------------------------------------------------------------------------
def test_transition_sampler_interface_and_reproducibility():
    lqr = hjb.StochasticLQR.scalar()
    env = hjb.TransitionSampler(lqr, 0.02)            # dt is the second positional argument
    assert env.dt == 0.02 and env.rho == lqr.rho and env.state_dim == 1 and env.action_dim == 1
    hjb.check_sampler(env)
    assert isinstance(env, hjb.environment.Sampler)
    x = env.reset(64, hjb.make_generator(0))
    assert x.shape == (64, 1)
    a = torch.randn(64, 1, dtype=torch.float64)
    r1, x1 = env.step(x, a, hjb.make_generator(3))
    r2, x2 = env.step(x, a, hjb.make_generator(3))
    assert r1.shape == (64, 1) and x1.shape == (64, 1)
    assert torch.equal(x1, x2) and torch.equal(r1, r2)
    # on average, the reward rate over a short step is the running reward at the start, to first order in dt
    x0 = torch.ones(20_000, 1, dtype=torch.float64)
    a0 = -torch.ones(20_000, 1, dtype=torch.float64)
    r, _ = env.step(x0, a0, hjb.make_generator(1))
    r_now = float(lqr.reward(x0[:1], a0[:1]))                    # -1/2 (1 + 0.1) = -0.55
    # d/dt E[r(X_t, a)] = -1/2 (2 x (alpha x + beta a) + sigma^2) = 1.455 at x = 1, a = -1; discounting adds -rho r
    expected = r_now + 0.5 * env.dt * (1.455 - lqr.rho * r_now)
    assert abs(float(r.mean()) / expected - 1) < 2e-3, (float(r.mean()), expected)


def test_transition_sampler_matches_the_exact_transition_law():
    lqr = hjb.StochasticLQR.scalar()
    dt, n = 0.1, 200_000
    env = hjb.TransitionSampler(lqr, dt)
    x = torch.full((n, 1), 1.0, dtype=torch.float64)
    a = torch.full((n, 1), -0.5, dtype=torch.float64)
    _, x1 = env.step(x, a, hjb.make_generator(0))
    e = math.exp(-0.5 * dt)
    mean = e * 1.0 + (e - 1) / -0.5 * -0.5
    std = 0.3 * math.sqrt((e * e - 1) / (2 * -0.5))
    assert abs(float(x1.mean()) - mean) < 4 * std / math.sqrt(n)
    assert abs(float(x1.std()) / std - 1) < 0.01


def test_bad_input_is_refused():
    lqr = hjb.StochasticLQR.scalar()
    with pytest.raises(ValueError, match="dt"):
        hjb.TransitionSampler(lqr, 0.0)
    with pytest.raises(ValueError, match="problem"):
        hjb.TransitionSampler("lqr", 0.1)
    with pytest.raises(ValueError, match="env"):
        hjb.QLearning(object(), small())
    with pytest.raises(ValueError, match="method"):
        hjb.QLearningConfig(method="sarsa")
    with pytest.raises(ValueError, match="temperature"):
        hjb.QLearningConfig(temperature=0.0)
    with pytest.raises(ValueError, match="power_exponent"):
        hjb.QLearningConfig(value="power")
    with pytest.raises(ValueError, match="exploration_std"):
        hjb.QLearning(hjb.TransitionSampler(lqr, 0.1), small(exploration_std=(1.0, 1.0)))
    with pytest.raises(ValueError, match="initial_action"):
        hjb.QLearning(hjb.TransitionSampler(hjb.Merton(), 0.1), small(initial_action=(0.5, 2.0)))
    with pytest.raises(ValueError, match="preset"):
        hjb.QLearningConfig.preset("huge")
    for e in (math.nan, math.inf, "x", True):
        with pytest.raises(ValueError, match="^power_exponent must"):
            hjb.QLearningConfig(power_exponent=e)
    with pytest.raises(ValueError, match="^progress must"):
        hjb.QLearningConfig(progress="no")
    with pytest.raises(ValueError, match="^exploration_final must"):
        hjb.QLearningConfig(exploration_final=True)
    world = ExactLQRWorld(0.1)
    world.dt = "0.1"
    with pytest.raises(ValueError, match="env.dt"):
        hjb.check_sampler(world)


def test_transition_sampler_accepts_any_real_number_type():
    """np.float32 (what a numpy sweep of dt produces) is accepted like a float, with the same transitions."""
    lqr = hjb.StochasticLQR.scalar()
    a, b = hjb.TransitionSampler(lqr, 0.25), hjb.TransitionSampler(lqr, np.float64(0.25), substep=np.float32(0.005))
    c = hjb.TransitionSampler(lqr, np.float32(0.25))         # 0.25 is exact in float32
    x = a.reset(8, hjb.make_generator(0))
    u = torch.zeros(8, 1, dtype=torch.float64)
    outs = [env.step(x, u, hjb.make_generator(1)) for env in (a, b, c)]
    assert all(torch.equal(o[1], outs[0][1]) for o in outs)
    for bad in (True, "0.1", None, math.nan, 0):
        with pytest.raises(ValueError, match="^dt must"):
            hjb.TransitionSampler(lqr, bad)
    hjb.check_sampler(ExactLQRWorld(np.float32(0.1)))


@pytest.mark.parametrize("device", DEVICES)
def test_transition_sampler_reset_with_a_generator_on_the_device(device):
    env = hjb.TransitionSampler(hjb.StochasticLQR.scalar(), 0.1)
    x1 = env.reset(16, torch.Generator(device=device).manual_seed(0))
    x2 = env.reset(16, torch.Generator(device=device).manual_seed(0))
    assert x1.shape == (16, 1) and torch.equal(x1, x2)


# -- model-free: the solver sees transitions only -------------------------------------------------------------
def test_learns_from_a_black_box_world_without_a_model():
    dt = 0.02
    world = ExactLQRWorld(dt)
    cfg = small(n_transitions=200_000, n_envs=1000, batch_size=1024, updates_per_step=8, seed=0)
    sol = hjb.QLearning(world, cfg).solve()
    assert world.steps == 200                        # every transition came from the world's step
    K, _ = hjb.fit_linear_gain(sol.policy, torch.linspace(-2, 2, 101).unsqueeze(1))
    K_dt = float(hjb.held_action_lqr_gain(hjb.StochasticLQR.scalar(), dt))
    print("gain", float(K), "held-action optimum", K_dt)
    assert abs(float(K) / K_dt - 1) < 0.05


def test_solver_never_calls_the_model_outside_the_sampler(monkeypatch):
    lqr = hjb.StochasticLQR.scalar()
    env = hjb.TransitionSampler(lqr, 0.05)
    inside = {"flag": False}
    calls = {"outside": 0}
    step = env.step

    def guarded_step(x, a, generator=None):
        inside["flag"] = True
        try:
            return step(x, a, generator)
        finally:
            inside["flag"] = False

    for name in ("drift", "diffusion", "reward"):
        original = getattr(lqr, name)

        def spy(*args, _f=original):
            if not inside["flag"]:
                calls["outside"] += 1
            return _f(*args)

        monkeypatch.setattr(lqr, name, spy)
    monkeypatch.setattr(env, "step", guarded_step)
    for method in ("q_learning", "td_actor_critic"):
        hjb.QLearning(env, small(method=method)).solve()
    assert calls["outside"] == 0


# -- the q-function's normalisation (Jia & Zhou's consistency condition) -------------------------------------
@pytest.mark.parametrize("value,mean", [("quadratic", "linear"), ("mlp", "mlp")])
def test_gibbs_normalisation_int_exp_q_over_temperature_is_one(value, mean):
    lqr = hjb.StochasticLQR.scalar()
    cfg = small(value=value, mean=mean, temperature=0.05, dtype="float64")
    sol = hjb.QLearning(hjb.TransitionSampler(lqr, 0.05), cfg).solve()
    x = torch.tensor([[-1.0], [0.3], [1.7]], dtype=torch.float64)
    u = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    for xi in x:
        q = sol.q(xi.expand(u.shape[0], 1), u.unsqueeze(1)).squeeze(1)
        mass = torch.trapezoid(torch.exp(q / cfg.temperature), u)
        assert abs(float(mass) - 1) < 1e-6, float(mass)
        assert abs(float(u[q.argmax()]) - float(sol.policy(xi.unsqueeze(0)))) < 1e-2


# -- the machinery ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["q_learning", "td_actor_critic"])
def test_same_seed_same_numbers_and_shapes(method, device):
    lqr = hjb.StochasticLQR.scalar()
    env = hjb.TransitionSampler(lqr, 0.05)
    sols = [hjb.QLearning(env, small(method=method, seed=3, device=str(device))).solve() for _ in range(2)]
    x = torch.linspace(-2, 2, 11, device=device).unsqueeze(1)
    assert sols[0].value(x).shape == (11, 1) and sols[0].policy(x).shape == (11, 1)
    assert torch.equal(sols[0].policy(x), sols[1].policy(x))
    assert sols[0].history["loss"] == sols[1].history["loss"]
    assert sols[0].history.last("transitions") == 20_000


def test_solve_leaves_the_global_rng_alone(monkeypatch):
    """The networks start from the config's seed inside a forked RNG: the caller's global generator is in
    the same state after a solve, and the cuda generators are not reseeded (torch.manual_seed did that, and
    only the CPU state was restored)."""
    env = hjb.TransitionSampler(hjb.StochasticLQR.scalar(), 0.05)
    cfg = small(value="mlp", mean="mlp", width=8, n_transitions=2000, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    a, b = hjb.QLearning(env, cfg).solve(), hjb.QLearning(env, cfg).solve()
    assert torch.equal(torch.get_rng_state(), before) and cuda_seeds == []
    assert a.history["loss"] == b.history["loss"]
    assert all(torch.equal(u, v) for u, v in zip(a.value_net.parameters(), b.value_net.parameters()))


def test_solution_checks_the_shape_of_its_inputs():
    """value, policy and q refuse a wrongly shaped x (with a constant mean, policy ignored x entirely)."""
    merton = hjb.Merton()
    cfg = small(value="power", power_exponent=-1.0, mean="constant", initial_action=(0.5, 0.1),
                n_transitions=1000)
    sol = hjb.QLearning(hjb.TransitionSampler(merton, 0.1), cfg).solve()
    x = torch.ones(3, 1)
    assert sol.policy(x).shape == (3, 2) and sol.value(x).shape == (3, 1) and sol.q(x, torch.zeros(3, 2)).shape == (3, 1)
    for f in (sol.policy, sol.value):
        for bad in (torch.ones(3, 2), torch.ones(3), [[1.0]]):
            with pytest.raises(ValueError, match="^x must"):
                f(bad)
    with pytest.raises(ValueError, match="^u must have shape"):
        sol.q(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="^u must have one row per row of x"):
        sol.q(x, torch.zeros(2, 2))


def test_monitor_is_logged_and_bounded_actions():
    merton = hjb.Merton()
    env = hjb.TransitionSampler(merton, 0.1)
    cfg = small(value="power", power_exponent=-1.0, mean="constant", initial_action=(0.5, 0.1), exploration_std=0.3)
    sol = hjb.QLearning(env, cfg).solve(monitor=lambda s: {"pi": float(s.policy(torch.ones(1, 1))[0, 0])})
    assert len(sol.history["pi"]) == len(sol.history) and "precision_1" in sol.history
    a = sol.policy(merton.grid(21))
    assert bool(((a >= merton.action_low.to(a)) & (a <= merton.action_high.to(a))).all())


class NaNWorld(ExactLQRWorld):
    def step(self, x, a, generator=None):
        r, x_next = super().step(x, a, generator)
        return r * math.nan, x_next


def test_divergence_names_the_iteration():
    with pytest.raises(hjb.DivergenceError, match="iteration 0"):
        hjb.QLearning(NaNWorld(0.05), small()).solve()


@pytest.mark.parametrize("method", ["q_learning", "td_actor_critic"])
def test_resumed_run_repeats_an_uninterrupted_one(method, tmp_path):
    """step / save / load / solve: stopped after two steps (blocks of log_every environment steps) and resumed
    from its checkpoint, the run logs the same history and ends with the same networks as one that went through."""
    env = hjb.TransitionSampler(hjb.StochasticLQR.scalar(), 0.05)
    cfg = small(method=method, n_transitions=12_000, buffer_size=4000, seed=4)   # 23 environment steps
    whole = hjb.QLearning(env, cfg)
    a = whole.solve()
    assert whole.iteration == 5 and a.history["iteration"] == [5, 10, 15, 20, 23]
    part = hjb.QLearning(env, cfg)
    part.step()
    part.step()
    resumed = hjb.QLearning.load(part.save(tmp_path / "q.pt"), env)
    assert resumed.iteration == 2 and resumed.config == cfg
    b = resumed.solve()
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.rows]  # noqa: E731
    assert drop(a.history) == drop(b.history) and a.n_transitions == b.n_transitions == 12_000
    assert all(torch.equal(u, v) for u, v in zip(a.value_net.parameters(), b.value_net.parameters()))
    assert all(torch.equal(u, v) for u, v in zip(a.mean_net.parameters(), b.mean_net.parameters()))
    with pytest.raises(ValueError, match="not of DeepBSDE"):
        hjb.DeepBSDE.load(tmp_path / "q.pt", hjb.HighDimLQG(2))


def test_lr_final_is_the_learning_rate_at_the_end():
    """lr and lr_final mean what they mean in every config: the cosine decay ends at lr_final itself."""
    env = hjb.TransitionSampler(hjb.StochasticLQR.scalar(), 0.05)
    sol = hjb.QLearning(env, small(lr=0.02, lr_final=0.002, n_transitions=3000)).solve()
    assert sol.history["lr"][0] < 0.02 and abs(sol.history.last("lr") - 0.002) < 1e-12
    assert abs(hjb.QLearning(env, small(n_transitions=3000)).solve().history.last("lr") - 0.05 / 100) < 1e-12
    with pytest.raises(ValueError, match="^lr_final must not exceed"):
        hjb.QLearningConfig(lr=0.01, lr_final=0.1)
    with pytest.raises(ValueError, match="^lr_final must not exceed"):
        hjb.QLearning(env, small(lr_final=0.1))          # above the default lr 0.05 of the quadratic family


def test_held_action_gain_refuses_bad_input():
    lqr = hjb.StochasticLQR.scalar()
    for dt in (-0.1, 0.0, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="^dt must be a positive number"):
            hjb.held_action_lqr_gain(lqr, dt)
    with pytest.raises(ValueError, match="^problem must be a StochasticLQR"):
        hjb.held_action_lqr_gain(hjb.Merton(), 0.1)
    assert torch.equal(hjb.held_action_lqr_gain(lqr, np.float32(0.25)), hjb.held_action_lqr_gain(lqr, 0.25))


def test_held_action_gain_tends_to_riccati():
    lqr = hjb.StochasticLQR.scalar()
    K = float(lqr.exact().K)
    gaps = [abs(float(hjb.held_action_lqr_gain(lqr, dt)) - K) for dt in (0.1, 0.01, 0.001)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 2e-3 * K
    assert 8 < gaps[0] / gaps[1] < 12                  # first order in dt


def test_on_policy_gibbs_exploration_runs_and_learns_the_sign_of_the_gain():
    lqr = hjb.StochasticLQR.scalar()
    cfg = small(exploration_std=None, temperature=0.05, n_transitions=50_000)
    sol = hjb.QLearning(hjb.TransitionSampler(lqr, 0.05), cfg).solve()
    K, _ = hjb.fit_linear_gain(sol.policy, torch.linspace(-2, 2, 41).unsqueeze(1))
    assert float(K) > 0.5                              # a stabilising feedback, from Gibbs-sampled actions only
    with pytest.raises(ValueError, match="exploration_std"):
        hjb.QLearningConfig(method="td_actor_critic", exploration_std=None)


@pytest.mark.parametrize("config,field,value", [
    (hjb.QLearningConfig, "buffer_size", True), (hjb.QLearningConfig, "lr", -1.0), (hjb.QLearningConfig, "n_envs", 2.0),
    (hjb.DeepBSDEConfig, "n_steps", True), (hjb.DeepBSDEConfig, "lr_final", 0.0)])
def test_solver_configs_refuse_bools_and_bad_numbers_naming_the_field(config, field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        config.preset("quick", **{field: value})


# -- the default networks (issue 17) ---------------------------------------------------------------------------
def test_network_defaults_resolve_from_the_parametrisation():
    net = hjb.QLearningConfig.preset("quick")
    assert (net.n_updates, net.minibatch, net.precision_kind, net.averaging_share) == (4, 4096, "full", 0.25)
    form = hjb.QLearningConfig.preset("quick", value="quadratic", mean="linear")
    assert (form.n_updates, form.minibatch, form.precision_kind, form.averaging_share) == (2, 2048, "diagonal", 0)
    for field, value in (("precision", "cholesky"), ("averaging", 1.5), ("normalise_value", 1),
                         ("consistency_tolerance", 0.0)):
        with pytest.raises(ValueError, match=field):
            hjb.QLearningConfig(**{field: value})


def test_full_precision_q_is_normalised_and_peaks_at_the_mean():
    from hjbcourse.solvers.q_learning.parametrisations import GibbsQ, Precision
    env = hjb.TransitionSampler(hjb.StochasticLQR(np.eye(2) * -0.5, np.eye(2), np.eye(2), np.eye(2),
                                                  0.3 * np.eye(2), 0.5), 0.05)
    for kind in ("full", "state"):
        torch.manual_seed(0)
        prec = Precision(kind, env, torch.tensor([0.5, 2.0], dtype=torch.float64)).double()
        with torch.no_grad():
            for p in prec.parameters():
                p.add_(0.3 * torch.randn_like(p))
        mean = torch.nn.Linear(2, 2).double()
        q = GibbsQ(mean, prec, 0.05, torch.zeros(2, dtype=torch.float64))
        x = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
        g = torch.linspace(-4, 4, 801, dtype=torch.float64)
        u = torch.cartesian_prod(g, g) + mean(x).detach()
        mass = torch.exp(q(x.expand(len(u), 2), u).detach() / 0.05).sum() * (g[1] - g[0]) ** 2
        assert abs(float(mass) - 1) < 1e-4, (kind, float(mass))
        # the Gibbs samples have covariance gamma Lam^{-1}
        z = torch.randn(200_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        s = q.sample(x.expand(len(z), 2), z).detach()
        M, _ = prec.factor(x)
        lam = (M @ M.transpose(-1, -2))[0]
        cov = torch.cov(s.T)
        assert torch.allclose(cov, 0.05 * torch.linalg.inv(lam), rtol=0.03, atol=1e-4)


def test_consistency_check_flags_a_policy_the_transitions_contradict():
    """The martingale conditions tested on the last transitions with test functions (u - m(x)) x [1, x]:
    quiet on a learned policy, a QLearningWarning naming the cause once the mean is moved away."""
    world = ExactLQRWorld(0.02)
    cfg = small(n_transitions=200_000, n_envs=1000, batch_size=1024, updates_per_step=8, seed=0)
    solver = hjb.QLearning(world, cfg)
    sol = solver.solve()
    d = sol.diagnostics
    assert d["n"] == 200_000 and d["dof"] == 2 and d["mean_shift"] < 0.05 and d["resolution"] < 0.02, d
    with torch.no_grad():
        solver.mean_net.W.mul_(0.5)                     # half the learned gain
    with pytest.warns(hjb.solvers.q_learning.QLearningWarning, match="move the policy mean by"):
        d = solver.check_consistency()
    assert d["significant"] and d["mean_shift"] > 0.3, d


def test_divergence_names_heavy_tailed_rewards():
    solver = hjb.QLearning(hjb.TransitionSampler(hjb.StochasticLQR.scalar(), 0.05), small())
    with torch.no_grad():
        solver.buffer.r[:len(solver.buffer)] = 1.0
        solver.buffer.r[0] = 1e9
    assert "heavy-tailed" in solver._reward_tails()


def test_default_networks_learn_a_scalar_lqr_no_test_had_seen():
    """Issue 17's unseen scalar LQR (A = -1, B = 1, Q = 2, R = 0.5, sigma = 0.2, rho = 1), the default networks
    (no functional form given) at 300,000 transitions: gain within 4% of the held-action optimum K_dt (the
    issue's target is 3% at up to 2e6; measured 1.1% and 1.9% for seeds 0 and 1 here, 0.02% and 0.19% at the
    quick preset's 1e6 transitions; the baseline's default networks were 7.1% off K at 1e6)."""
    lqr = hjb.StochasticLQR.scalar(alpha=-1.0, beta=1.0, q=2.0, r_a=0.5, sigma=0.2, rho=1.0)
    cfg = hjb.QLearningConfig.preset("quick", seed=0, n_transitions=300_000, progress=False)
    assert (cfg.value, cfg.mean) == ("mlp", "mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("error", hjb.solvers.q_learning.QLearningWarning)
        sol = hjb.QLearning(hjb.TransitionSampler(lqr, 0.01), cfg).solve()
    K = float(lqr.exact().K)
    K_dt = float(hjb.held_action_lqr_gain(lqr, 0.01))
    gain = float(hjb.fit_linear_gain(sol.policy, torch.linspace(-2, 2, 101).unsqueeze(1))[0])
    assert abs(gain - K_dt) / K < 0.04, (gain, K_dt, K)
    assert sol.diagnostics["mean_shift"] < 0.1 and sol.diagnostics["resolution"] < 0.1, sol.diagnostics
