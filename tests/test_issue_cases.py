"""Every case of issue 19 ("No silent wrong answer"), one row each: it raises a ValueError or TypeError naming its
parameter (the CLI: exit status 2 with a usage line, before any work), a DivergenceError naming the iteration,
or gives the right answer. Then the checkpoint hardening on every solver, and the interrupt test: a subprocess
killed during a save leaves the previous checkpoint loadable."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import hjbcourse as hjb
from hjbcourse import cli
from hjbcourse.checkpoint import load_checkpoint, save_checkpoint
from hjbcourse.discrete import solve_discrete_lqr
from hjbcourse.solvers.base import IterativeSolver
from hjbcourse.training import SolverConfig

ROOT = Path(__file__).resolve().parents[1]


def _lqr(domain=(-2.0, 2.0)):
    return hjb.StochasticLQR(-0.5, 1, 1, 0.1, 0.3, 0.1, domain=domain)


def _smoke(**kw):
    return hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False, **kw)


def _samples(n=200):
    return hjb.GaussianMixture.example().sample(n, generator=0)


def _nan_half():
    x = _samples()
    x[:100] = math.nan
    return x


def _merton_policy(pi, k):
    return lambda x: torch.tensor([[pi, k]], dtype=x.dtype).expand(x.shape[0], 2)


def _diverging_pi():
    cfg = hjb.PolicyIterationConfig.preset("quick", seed=2, progress=False, value_lr=1e6, iterations=3, n_states=256,
                                           policy_steps=20)
    hjb.PolicyIteration(hjb.course.chapter_problem("lqr"), cfg).solve()


def _diverging_bsde():
    cfg = hjb.DeepBSDEConfig.preset("quick", seed=0, progress=False, lr=1e3, iterations=60, log_every=10)
    hjb.DeepBSDE(hjb.HighDimLQG(dim=10), cfg).solve()


def _untrained_pi_solution():
    return hjb.PolicyIteration(_lqr(), _smoke()).solution()


def _cuda_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    hjb.setup(device="cuda")


# (id, call, exception, regex the message must match)
RAISES = [
    ("wasserstein of NaN samples", lambda: hjb.wasserstein_distance(torch.full((200, 2), math.nan), _samples()),
     ValueError, r"^x must be finite"),
    ("wasserstein of half-NaN samples", lambda: hjb.wasserstein_distance(_nan_half(), _samples()),
     ValueError, r"^x must be finite"),
    ("wasserstein of inf samples", lambda: hjb.wasserstein_distance(_samples(), torch.full((5, 2), math.inf)),
     ValueError, r"^y must be finite"),
    ("wasserstein of no samples", lambda: hjb.wasserstein_distance(torch.zeros(0, 2), _samples()),
     ValueError, r"^x must hold at least one sample"),
    ("sample_quality of a diverged sampler", lambda: hjb.sample_quality(
        torch.full((200, 2), math.nan), hjb.GaussianMixture.example(), _samples()), ValueError, r"^samples must be finite"),
    ("LQR with Q = 1e308", lambda: hjb.StochasticLQR(-0.5, 1, [[1e308]], 1, 0.3, 0.1).exact(), ValueError, r"\bQ\b"),
    ("LQR with R = 1e-300", lambda: hjb.StochasticLQR(-0.5, 1, 1, 1e-300, 0.3, 0.1).exact(), ValueError, r"\bR\b"),
    ("discrete LQR with h = 1e-15", lambda: solve_discrete_lqr(_lqr(), 1e-15), ValueError, r"^h=1e-15 is too small"),
    ("Merton's value at negative wealth", lambda: hjb.Merton().exact().value(torch.tensor([[-1.0]])),
     ValueError, r"^x must lie in positive wealth"),
    ("simulate Merton from negative wealth", lambda: hjb.simulate(
        hjb.Merton(), _merton_policy(0.5, 0.05), torch.tensor([[-1.0]]), 1.0, 0.1), ValueError, r"^x0 must lie in"),
    ("simulate Merton with pi = 100, k = -5", lambda: hjb.simulate(
        hjb.Merton(), _merton_policy(100.0, -5.0), torch.ones(4, 1), 1.0, 0.1), ValueError, r"^policy\(x\) must"),
    ("simulate with NaN in x0", lambda: hjb.simulate(
        _lqr(), lambda x: -x, torch.tensor([[math.nan]]), 1.0, 0.1), ValueError, r"^x0 must be finite"),
    ("simulate with NaN in dW", lambda: hjb.simulate(
        _lqr(), lambda x: -x, torch.zeros(2, 1), 1.0, 0.5, dW=torch.full((2, 2, 1), math.nan)),
     ValueError, r"^dW must be finite"),
    ("simulate with NaN actions", lambda: hjb.simulate(
        _lqr(), lambda x: x * math.nan, torch.zeros(2, 1), 1.0, 0.5), ValueError, r"^policy\(x\) must return finite"),
    ("brownian_increments with dt = nan", lambda: hjb.brownian_increments(3, 2, 1, math.nan),
     ValueError, r"^dt must be a finite number"),
    ("MLP with out_scale = nan", lambda: hjb.MLP(1, out_scale=math.nan), ValueError, r"^out_scale must be a finite"),
    ("simulate a complex tensor", lambda: hjb.simulate(
        _lqr(), lambda x: -x, torch.zeros(2, 1, dtype=torch.complex64), 1.0, 0.5), TypeError, r"^x0 must be a floating"),
    ("sample_states in int64", lambda: _lqr().sample_states(4, dtype=torch.int64), TypeError, r"^dtype must be a floating"),
    ("policy iteration with value_lr = 1e6", _diverging_pi, hjb.DivergenceError,
     r"^value_fit_mse grew to .* at iteration 2"),
    ("deep BSDE with lr = 1e3", _diverging_bsde, hjb.DivergenceError, r"^loss grew to .* at iteration 10"),
    ("setup(device='cuda') without a GPU", _cuda_on_a_cpu_machine, ValueError, r"^device='cuda' was asked for"),
    ("bool as alpha", lambda: hjb.StochasticLQR.scalar(alpha=True), TypeError, r"^alpha must be a real number"),
    ("bool as T", lambda: hjb.simulate(_lqr(), lambda x: -x, torch.zeros(2, 1), True, 0.5), TypeError, r"^T must"),
    ("string as gamma", lambda: hjb.Merton(gamma="2"), TypeError, r"^gamma must be a real number, got a string"),
    ("string as initial_action", lambda: hjb.PolicyIterationConfig(initial_action="12"), TypeError,
     r"^initial_action must be"),
    ("numpy complex as sigma", lambda: hjb.Merton(sigma=np.complex128(0.2)), TypeError,
     r"^sigma must be a real number, got a complex"),
    ("int64 states", lambda: _untrained_pi_solution().value(torch.ones(3, 1, dtype=torch.int64)), TypeError,
     r"^x must be a floating tensor"),
    ("int64 start points", lambda: hjb.simulate(_lqr(), lambda x: -x, torch.zeros(2, 1, dtype=torch.int64), 1.0, 0.5),
     TypeError, r"^x0 must be a floating tensor"),
    ("a numpy array for a tensor", lambda: _untrained_pi_solution().policy(np.zeros((3, 1))), TypeError,
     r"^x must be a torch tensor"),
    ("MLP(2.5)", lambda: hjb.MLP(2.5), TypeError, r"^in_dim must be an integer"),
    ("simulate 1e9 steps", lambda: hjb.simulate(_lqr(), lambda x: -x, torch.zeros(2, 1), 1e3, 1e-6),
     ValueError, r"max_steps"),
]


@pytest.mark.parametrize("call, exc, pattern", [pytest.param(c, e, p, id=i) for i, c, e, p in RAISES])
def test_an_issue_case_raises_a_named_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert "weights_only=False" not in str(info.value)


# -- the divergence guard of the shared run loop -----------------------------------------------------------------
@dataclass(frozen=True)
class _ToyConfig(SolverConfig):
    iterations: int = 12


class _Toy(IterativeSolver):
    """A solver whose loss is multiplied by ``factor`` at every step."""

    Config = _ToyConfig
    guarded = ("loss",)

    def __init__(self, problem, config=None, factor=10.0, start=1.0):
        self._init_run(config)
        self.problem, self.factor, self.loss = problem, factor, start

    def _step(self, it):
        self.loss *= self.factor
        return {"loss": self.loss}

    def solution(self):
        return self

    def _state(self):
        return {"loss": torch.tensor(self.loss)}

    def _load_state(self, state):
        self.loss = float(state["loss"])


def test_a_loss_growing_by_orders_of_magnitude_stops_the_run_at_the_iteration_it_does(tmp_path):
    with pytest.raises(hjb.DivergenceError, match=r"^loss grew to 1e\+06 at iteration 6, more than 1e\+04 times"):
        _Toy(_lqr(), _ToyConfig(progress=False)).solve()
    assert len(_Toy(_lqr(), _ToyConfig(progress=False), factor=0.1).solve().history) == 12   # shrinking: fine
    assert len(_Toy(_lqr(), _ToyConfig(progress=False), factor=2.0).solve().history) == 12   # 2^12 < 1e4 * 2
    part = _Toy(_lqr(), _ToyConfig(progress=False))
    part.step(), part.step()
    resumed = _Toy.load(part.save(tmp_path / "toy.pt"), _lqr(), factor=10.0)
    with pytest.raises(hjb.DivergenceError, match="at iteration 6"):   # the reference is the first logged value
        resumed.solve()
    with pytest.raises(hjb.DivergenceError, match="loss became inf at iteration 1"):
        _Toy(_lqr(), _ToyConfig(progress=False), factor=1e308, start=1e10).solve()
    zero = _Toy(_lqr(), _ToyConfig(progress=False), start=0.0)   # a loss at 0 gives no scale: the floor is used
    assert len(zero.solve().history) == 12


# -- configs with numpy scalars round-trip through a checkpoint -------------------------------------------------------
def test_a_policy_iteration_config_with_a_numpy_float_round_trips(tmp_path):
    cfg = _smoke(dt=np.float64(0.05), value_lr=np.float32(0.003))
    assert type(cfg.dt) is float and cfg.dt == 0.05
    path = hjb.PolicyIteration(_lqr(), cfg).save(tmp_path / "pi.pt")
    loaded = hjb.PolicyIteration.load(path, _lqr())
    assert loaded.config == cfg


def test_a_q_learning_config_with_a_numpy_float_round_trips(tmp_path):
    cfg = hjb.QLearningConfig.preset("quick", temperature=np.float64(0.01), n_envs=np.int64(16), n_transitions=64,
                                     batch_size=16, progress=False)
    assert type(cfg.temperature) is float and type(cfg.n_envs) is int
    env = hjb.TransitionSampler(_lqr(), 0.1)
    path = hjb.QLearning(env, cfg).save(tmp_path / "q.pt")
    assert hjb.QLearning.load(path, env).config == cfg


# -- checkpoints: the problem must match, weights must be finite, errors name the file ------------------------------
@pytest.fixture(scope="module")
def saved_pi(tmp_path_factory):
    solver = hjb.PolicyIteration(_lqr(), _smoke())
    solver.step()
    return solver.save(tmp_path_factory.mktemp("pi") / "lqr.pt")


def test_loading_into_the_same_problem_on_another_domain_is_refused(saved_pi):
    with pytest.raises(ValueError, match=r"lqr\.pt was saved for a problem with domain=.*input scaling"):
        hjb.PolicyIteration.load(saved_pi, _lqr(domain=(-5.0, 5.0)))
    with pytest.raises(ValueError, match="type='StochasticLQR'"):
        hjb.PolicyIteration.load(saved_pi, hjb.MinimumTimeProblem(rho=0.1, half_width=2.0))
    assert hjb.PolicyIteration.load(saved_pi, _lqr()).iteration == 1


def test_a_checkpoint_with_nan_weights_is_refused(saved_pi, tmp_path):
    state = load_checkpoint(saved_pi)
    next(iter(state["state"]["value_net"].values())).fill_(math.nan)
    bad = save_checkpoint(tmp_path / "nan.pt", **state)
    with pytest.raises(ValueError, match=r"nan\.pt holds NaN or infinite values in state\.value_net"):
        hjb.PolicyIteration.load(bad, _lqr())


def test_unreadable_checkpoints_are_refused_with_the_file_named(saved_pi, tmp_path):
    data = Path(saved_pi).read_bytes()
    cases = {"truncated.pt": data[: len(data) // 2], "garbage.pt": bytes(range(256)) * 8, "empty.pt": b"",
             "text.pt": b"not a checkpoint"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name.replace('.', r'[.]')} (cannot be read as a checkpoint|holds)") as e:
            hjb.PolicyIteration.load(tmp_path / name, _lqr())
        assert "weights_only=False" not in str(e.value)
    torch.save({"not": "a solver"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt is not a checkpoint of an iterative solver"):
        hjb.PolicyIteration.load(tmp_path / "other.pt", _lqr())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        hjb.PolicyIteration.load(tmp_path / "missing.pt", _lqr())


def test_a_malicious_pickle_is_not_loaded_and_no_unsafe_advice_is_given(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt holds objects that a safe load") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(e.value) and e.value.__cause__ is None


def test_saving_to_a_directory_or_below_a_file_is_refused(tmp_path):
    solver = hjb.PolicyIteration(_lqr(), _smoke())
    with pytest.raises(ValueError, match="is a directory"):
        solver.save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="which is a file"):
        solver.save(tmp_path / "file" / "ckpt.pt")


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Any solve started by the command line fails the test: a refusal must come before the work."""
    def refuse(*a, **k):
        raise AssertionError("the command line started solving")

    monkeypatch.setattr(hjb.solvers.policy_iteration.PolicyIteration, "__init__", refuse)


@pytest.mark.parametrize("argv, env, flag", [
    (["--iterations", "0"], {}, "--iterations"),
    (["--seed", "-1"], {}, "--seed"),
    (["--seed", "12345678901234567890"], {}, "--seed"),
    (["--device", "bogus"], {}, "--device"),
    ([], {"HJB_PRESET": "huge"}, "HJB_PRESET"),
    ([], {"HJB_THREADS": "two"}, "HJB_THREADS"),
    (["--preset", "huge"], {}, "--preset"),
], ids=["iterations 0", "negative seed", "20-digit seed", "bogus device", "HJB_PRESET", "HJB_THREADS", "preset"])
def test_the_cli_refuses_bad_flags_and_environment_values_with_usage(argv, env, flag, monkeypatch, capsys, no_work):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        cli.main(["solve", "lqr", "--no-progress", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and flag in err and "Traceback" not in err


def test_the_cli_checks_out_before_solving(tmp_path, capsys, no_work):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(SystemExit) as info:
        cli.main(["solve", "lqr", "--out", str(tmp_path / "taken")])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_the_cli_exits_2_from_the_shell(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hjbcourse", "solve", "lqr", "--seed", "-1"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("usage:") and "--seed" in out.stderr


def test_an_interrupted_cli_run_leaves_no_summary_and_a_finished_one_strict_json(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "save_checkpoint", interrupted)
    args = ["solve", "lqr", "--preset", "smoke", "--iterations", "1", "--no-progress", "--device", "cpu"]
    with pytest.raises(KeyboardInterrupt):
        cli.main([*args, "--out", str(tmp_path / "a")])
    assert not (tmp_path / "a" / "summary.json").exists()
    monkeypatch.undo()
    cli.main([*args, "--out", str(tmp_path / "b")])
    text = (tmp_path / "b" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    assert summary["iterations"] == 1 and len(summary["history"]["value_fit_mse"]) == 1
    assert cli._strict({"a": [math.nan, 1.0], "b": (math.inf,), "c": "x"}) == {"a": [None, 1.0], "b": [None], "c": "x"}
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.pt", "history.png", "summary.json",
                                                                   "value_policy.png"]


# -- the interrupt test ------------------------------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import sys, time, torch
    import hjbcourse as hjb
    path, mode = sys.argv[1], sys.argv[2]
    solver = hjb.PolicyIteration(hjb.StochasticLQR(-0.5, 1, 1, 0.1, 0.3, 0.1),
                                 hjb.PolicyIterationConfig.preset("smoke", seed=0, progress=False))
    solver.save(path)                                   # the good checkpoint, at iteration 0
    solver.step()
    if mode == "half":                                  # the next save stops half-way through writing
        real = torch.save
        def half(obj, f, *a, **k):
            import io
            buf = io.BytesIO()
            real(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            print("half", flush=True)
            time.sleep(120)
        torch.save = half
        solver.save(path)
    else:                                               # save over and over until killed, at any moment
        solver.bulk = torch.randn(2_000_000)
        state = solver._state
        solver._state = lambda: {**state(), "bulk": solver.bulk}
        print("saving", flush=True)
        while True:
            solver.save(path)
""")


@pytest.mark.parametrize("mode", ["half", "anytime"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(mode, tmp_path):
    path = tmp_path / "ckpt.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HJB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), mode], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        line = child.stdout.readline().strip()
        assert line in ("half", "saving"), line
        if mode == "anytime":
            import time

            time.sleep(0.3 + 0.2 * np.random.default_rng().random())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    solver = hjb.PolicyIteration.load(path, _lqr())
    assert solver.iteration in ((0,) if mode == "half" else (0, 1))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert all(n.startswith(".ckpt.pt.") and n.endswith(".tmp") for n in leftovers), leftovers
