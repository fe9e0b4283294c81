"""Every solver class through the same checks: one shape (``Solver(problem_or_sampler, config)``, ``solve``,
``step``, ``save``/``load``), a solution with ``value``/``policy`` (or the score and the control), ``history`` and
``seconds``; the same seed gives the same numbers; a run saved part-way and resumed ends where an uninterrupted
run ends. Each case is a tiny problem, so the whole file runs in seconds."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

import hjbcourse as hjb
from hjbcourse.solvers.base import IterativeSolver


@dataclass
class Case:
    solver: type
    make_target: Callable[[], Any]          # the problem or the sampler the solver is built on
    config: Any
    probe: Callable[[Any, Any], list[torch.Tensor]]   # (solution, target) -> tensors that must repeat
    options: dict | None = None             # problem data the constructor takes besides the config


def _lqr():
    return hjb.StochasticLQR.scalar()


def _x(n=7, lo=-1.5, hi=1.5):
    return torch.linspace(lo, hi, n, dtype=torch.float64).unsqueeze(1)


def _value_policy(sol, target):
    x = _x()
    return [sol.value(x), sol.policy(x)]


def _finite_horizon(sol, target):
    x = torch.zeros(1, target.state_dim)        # the config learns u(0, .) at the origin (x0_radius = 0)
    return [sol.value(0.0, x), sol.policy(0.0, x)]


def _score(model, target):
    x = torch.linspace(-2.0, 2.0, 10).reshape(5, 2)
    return [model.score(0.5, x), model.control(0.5, x)]


CASES = {
    "finite_difference": Case(
        hjb.FiniteDifferenceSolver, _lqr, hjb.FiniteDifferenceConfig.preset("quick", n=101), _value_policy,
        {"domain": (-2.0, 2.0)}),
    "policy_iteration": Case(
        hjb.PolicyIteration, _lqr,
        hjb.PolicyIterationConfig.preset("quick", seed=3, iterations=3, n_states=128, value_steps=20,
                                         policy_steps=10, n_eval=64, progress=False),
        _value_policy),
    "q_learning": Case(
        hjb.QLearning, lambda: hjb.TransitionSampler(_lqr(), 0.05),
        hjb.QLearningConfig.preset("quick", seed=1, n_transitions=6000, n_envs=200, batch_size=128, log_every=5,
                                   progress=False),
        _value_policy),
    "deep_bsde": Case(
        hjb.DeepBSDE, lambda: hjb.HighDimLQG(2),
        hjb.DeepBSDEConfig.preset("quick", seed=2, n_steps=5, iterations=30, batch_size=16, width=8,
                                  valid_size=16, refit_size=64, log_every=10, progress=False),
        _finite_horizon),
    "deep_bsde_control": Case(
        hjb.DeepBSDE, lambda: hjb.HighDimLQG(2),
        hjb.DeepBSDEConfig.preset("quick", seed=2, n_steps=5, iterations=30, batch_size=16, width=8, loss="control",
                                  valid_size=16, refit_size=64, log_every=10, progress=False),
        _finite_horizon),
    "score_matching": Case(
        hjb.ScoreMatching, lambda: hjb.GaussianMixture.example(dtype=torch.float32),
        hjb.ScoreMatchingConfig.preset("quick", seed=5, iterations=12, batch_size=32, hidden=8, eval_every=6,
                                       eval_samples=50, progress=False),
        _score),
}


def _build(case: Case, target):
    return case.solver(target, case.config, **(case.options or {}))


def _without_seconds(history):
    """The rows without the wall time, NaN written as a string (a NaN never equals itself)."""
    return [{k: ("nan" if math.isnan(v) else v) for k, v in r.items() if k != "seconds"} for r in history.rows]


@pytest.mark.parametrize("name", list(CASES))
def test_one_shape_and_a_solution_with_value_policy_history_seconds(name):
    case = CASES[name]
    assert isinstance(case.config, hjb.training.SolverConfig) and case.config.progress is False
    target = case.make_target()
    solver = _build(case, target)
    assert isinstance(solver, IterativeSolver) and solver.iteration == 0
    sol = solver.solve()
    assert len(sol.history) >= 1 and sol.seconds > 0
    for t in case.probe(sol, target):
        assert t.ndim == 2 and t.shape[0] > 0 and bool(torch.isfinite(t).all())
    assert solver.iteration >= 1 and len(solver.history) == len(sol.history)
    assert "seconds" in sol.history


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_seed_gives_the_same_numbers(name):
    case = CASES[name]
    target = case.make_target()
    a = _build(case, target).solve()
    b = _build(case, case.make_target()).solve()
    assert _without_seconds(a.history) == _without_seconds(b.history)
    for u, v in zip(case.probe(a, target), case.probe(b, target)):
        assert torch.equal(u, v)


@pytest.mark.parametrize("name", list(CASES))
def test_a_resumed_run_ends_where_an_uninterrupted_one_ends(name, tmp_path):
    case = CASES[name]
    target = case.make_target()
    whole = _build(case, target).solve()
    part = _build(case, target)
    row = part.step()
    assert row["iteration"] == part.history.rows[-1]["iteration"] and part.iteration == 1
    path = part.save(tmp_path / f"{name}.pt")
    resumed = case.solver.load(path, target)
    assert resumed.iteration == 1 and resumed.config == case.config
    rest = resumed.solve()
    assert _without_seconds(rest.history) == _without_seconds(whole.history)
    for u, v in zip(case.probe(rest, target), case.probe(whole, target)):
        assert torch.equal(u, v)
