"""The fuzz suite of the input contract (issue 19): every public entry refuses bad input with a named error.

Two halves:

- a table of bad inputs, generated per entry point and parameter from the kind of value the signature documents
  (a positive number, an integer, a choice, a tensor of states ...): each case must raise a ``ValueError`` or
  ``TypeError`` whose message names the parameter, never a torch internal error and never a result;
- property-based tests (hypothesis) over the constructors, the configs and ``simulate``: any input outside the
  documented domain raises a named error, any valid input gives finite outputs (or a documented refusal), and
  every config round-trips through a checkpoint.

The cases listed in the issue itself are in ``tests/test_issue_cases.py``. The whole of both runs in well under
a minute.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import hjbcourse as hjb
from hjbcourse._checks import show
from hjbcourse.checkpoint import config_state
from hjbcourse.discrete import solve_discrete_lqr

settings.register_profile("fuzz", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile("fuzz")

NAN, INF = math.nan, math.inf

# -- bad values by the kind of parameter --------------------------------------------------------------------------
WRONG_KIND = [True, False, "0.5", "x", b"1", 0.5j, np.complex128(0.5), None, object(), np.bool_(True)]
NOT_FINITE = [NAN, INF, -INF, np.float64("nan"), np.float32("inf")]
BAD = {
    "real": WRONG_KIND + NOT_FINITE + [[1.0, 2.0], np.array([1.0, 2.0])],
    "positive": WRONG_KIND + NOT_FINITE + [0, 0.0, -1, -1e-300, -np.float64(2.0), [1.0, 2.0]],
    "matrix": WRONG_KIND + NOT_FINITE,
    "nonnegative": WRONG_KIND + NOT_FINITE + [-1, -1e-12, -np.float32(0.5)],
    "int>=1": [0, -1, -(10**20), 2.5, 3.0, np.float64(3.0), True, "4", None, 1 + 0j, [2]],
    "int>=2": [1, 0, -2, 2.5, True, "4", None],
    "seed": [-1, -(2**70), 2**64, 1.5, True, "3", None, np.float64(1.0)],
    "choice": ["bogus", "", 1, None, True, ("quick",)],
    "flag": [1, 0, "yes", None, np.float64(1.0)],
    "dtype": [torch.int64, torch.int32, torch.bool, torch.complex64, "float32", np.float64, None],
    "device": ["bogus", "cuda:x", 3, True, "meta"] + ([] if torch.cuda.is_available() else ["cuda"]),
}
BAD_CONFIG_NUMBER = [v for v in WRONG_KIND if v is not None] + [NAN, INF, -1, 0]


def _x(*shape, value=0.5, dtype=torch.float64):
    return torch.full(shape, value, dtype=dtype)


def bad_states(d: int, positive: bool = False):
    """Bad state tensors (B, d): not finite, of the wrong kind or shape, empty, or (positive) not in the state
    space."""
    out = [_x(4, d, value=NAN), _x(4, d, value=INF), torch.ones(4, d, dtype=torch.int64),
           torch.ones(4, d, dtype=torch.complex64), np.ones((4, d)), [[0.5] * d] * 4, _x(4, d + 1), _x(4),
           _x(0, d), torch.ones(4, d, dtype=torch.bool)]
    if positive:
        out += [_x(4, d, value=-1.0), _x(4, d, value=0.0)]
    return out


# -- the entry points and their parameters -------------------------------------------------------------------------
LQR = dict(A=[[-0.5]], B=[[1.0]], Q=[[1.0]], R=[[0.1]], D=[[0.3]], rho=0.1)
MERTON = dict(r=0.03, mu=0.08, sigma=0.2, gamma=2.0, rho=0.05)


def _lqr():
    return hjb.StochasticLQR.scalar()


def _merton():
    return hjb.Merton()


def _zero_policy(x):
    return torch.zeros(x.shape[0], 1, dtype=x.dtype)


def _merton_policy(x):
    return torch.tensor([[0.6, 0.05]], dtype=x.dtype).expand(x.shape[0], 2)


ENTRIES = {
    # module: {entry: (call(**override), {parameter: kind or list of bad values})}
    "problems": {
        "StochasticLQR": (lambda **kw: hjb.StochasticLQR(**{**LQR, **kw}),
                          {"A": "real", "B": "matrix", "Q": "real", "R": "real", "D": "matrix", "rho": "positive"}),
        "StochasticLQR.scalar": (lambda **kw: hjb.StochasticLQR.scalar(**kw),
                                 {"alpha": "real", "beta": "real", "q": "nonnegative", "r_a": "positive",
                                  "sigma": "nonnegative", "rho": "positive"}),
        "coupled_lqr": (lambda **kw: hjb.coupled_lqr(**{"d": 3, **kw}),
                        {"d": "int>=2", "alpha": "real", "coupling": "real", "r_a": "positive", "rho": "positive"}),
        "Merton": (lambda **kw: hjb.Merton(**{**MERTON, **kw}),
                   {"r": "real", "mu": "real", "sigma": "positive", "gamma": "positive", "rho": "positive",
                    "pi_bounds": [(1.0,), (3.0, -1.0), ("a", "b"), "13", None, (NAN, 1.0)],
                    "k_bounds": [(-0.1, 1.0), (0.5, 0.1), "01", None, (0.0, INF)],
                    "domain": [(-1.0, 2.0), (0.0, 2.0), (2.0, 0.5), "ab", None, (NAN, 1.0), (True, 2.0)]}),
        "FiniteHorizonLQR.scalar": (lambda **kw: hjb.FiniteHorizonLQR.scalar(**kw),
                                    {"alpha": "real", "g": "real", "T": "positive", "rho": "nonnegative"}),
        "HighDimLQG": (lambda **kw: hjb.HighDimLQG(**{"dim": 3, **kw}),
                       {"dim": "int>=1", "T": "positive", "lam": "positive"}),
        "MinimumTimeProblem": (lambda **kw: hjb.MinimumTimeProblem(**kw),
                               {"rho": "positive", "half_width": "positive"}),
        "FiniteMDP": (lambda **kw: hjb.FiniteMDP(**{"P": np.full((2, 1, 2), 0.5), "R": np.zeros((2, 1)),
                                                    "gamma": 0.9, **kw}),
                      {"gamma": WRONG_KIND + NOT_FINITE + [0.0, 1.0, -0.5, 2.0],
                       "P": [np.full((2, 1, 2), NAN), np.full((2, 1, 2), 0.4), np.ones((2, 2)), "P", None,
                             np.full((2, 1, 2), 0.5 + 0j), -np.full((2, 1, 2), 0.5)],
                       "R": [np.full((2, 1), INF), np.zeros(3), "R", None, [[True], [False]]]}),
        "random_mdp": (lambda **kw: hjb.random_mdp(**kw),
                       {"n_states": "int>=1", "n_actions": "int>=1", "seed": [v for v in BAD["seed"] if v is not None]}),
        "ControlProblem.sample_states": (lambda **kw: _lqr().sample_states(**{"n": 4, **kw}),
                                         {"n": "int>=1", "dtype": "dtype", "device": "device"}),
        "Merton.check_state": (lambda **kw: _merton().check_state(**{"x": _x(3, 1), **kw}),
                               {"x": bad_states(1, positive=True)}),
        "StochasticLQR.check_state": (lambda **kw: _lqr().check_state(**{"x": _x(3, 1), **kw}),
                                      {"x": bad_states(1)}),
    },
    "exact": {
        "LQR exact()": (lambda **kw: hjb.StochasticLQR(**{**LQR, **kw}).exact(),
                        {"Q": [[[1e308]], [[1e200]]], "R": [[[1e-300]], [[1e-200]]]}),
        "Merton exact().value": (lambda **kw: _merton().exact().value(**{"x": _x(3, 1), **kw}),
                                 {"x": bad_states(1, positive=True)}),
        "HighDimLQG.exact_value": (lambda **kw: hjb.HighDimLQG(dim=2).exact_value(**{"t": 0.0, "x": _x(2, 2), **kw}),
                                   {"t": WRONG_KIND + NOT_FINITE + [-0.1, 1.5], "x": bad_states(2)}),
        "solve_discrete_lqr": (lambda **kw: solve_discrete_lqr(_lqr(), **{"h": 0.1, **kw}),
                               {"h": BAD["positive"] + [1e-13, 1e-15]}),
    },
    "sde": {
        "simulate": (lambda **kw: hjb.simulate(**{"problem": _lqr(), "policy": _zero_policy, "x0": _x(3, 1),
                                                  "T": 0.1, "dt": 0.05, **kw}),
                     {"T": "positive", "dt": "positive", "scheme": "choice", "record": "flag",
                      "x0": bad_states(1),
                      "dW": [_x(2, 3, 1, value=NAN), torch.zeros(2, 3, 1, dtype=torch.int64), np.zeros((2, 3, 1)),
                             _x(3, 3, 1)],
                      "policy": [lambda x: _x(x.shape[0], 1, value=NAN), lambda x: _x(x.shape[0], 2),
                                 lambda x: torch.zeros(x.shape[0], 1, dtype=torch.int64), lambda x: np.zeros((3, 1))],
                      "max_steps": [0, -1, 1, 1.5, True, "10"]}),
        "simulate (Merton)": (lambda **kw: hjb.simulate(**{"problem": _merton(), "policy": _merton_policy,
                                                           "x0": _x(3, 1, value=1.0), "T": 0.1, "dt": 0.05, **kw}),
                              {"x0": bad_states(1, positive=True),
                               "policy": [lambda x: torch.tensor([[100.0, -5.0]]).expand(x.shape[0], 2).to(x),
                                          lambda x: torch.tensor([[0.5, 2.0]]).expand(x.shape[0], 2).to(x),
                                          lambda x: torch.tensor([[-2.0, 0.1]]).expand(x.shape[0], 2).to(x)]}),
        "brownian_increments": (lambda **kw: hjb.brownian_increments(**{"n_steps": 2, "batch": 3, "noise_dim": 1,
                                                                        "dt": 0.1, **kw}),
                                {"n_steps": "int>=1", "batch": "int>=1", "noise_dim": "int>=1", "dt": "positive",
                                 "dtype": "dtype", "device": "device",
                                 "generator": [v for v in BAD["seed"] if v is not None]}),
        "monte_carlo_value": (lambda **kw: hjb.monte_carlo_value(**{
            "problem": hjb.FiniteHorizonLQR.scalar(), "policy": lambda t, x: torch.zeros(x.shape[0], 1, dtype=x.dtype),
            "x0": [0.5], "n_paths": 4, "n_steps": 2, **kw}),
            {"n_paths": "int>=2", "n_steps": "int>=2", "x0": [[NAN], [INF], ["a"], [True], [0.5, 0.5], None],
             "scheme": "choice", "dtype": "dtype"}),
        "TransitionSampler": (lambda **kw: hjb.TransitionSampler(**{"problem": _lqr(), "dt": 0.1, **kw}),
                              {"dt": "positive", "substep": "positive", "dtype": "dtype"}),
    },
    "nets": {
        "MLP": (lambda **kw: hjb.MLP(**{"in_dim": 2, **kw}),
                {"in_dim": "int>=1", "out_dim": "int>=1", "width": "int>=1", "depth": "int>=1",
                 "activation": "choice", "out_scale": "real", "out_shift": "real",
                 "in_low": [[NAN, 0.0], "ab", [1.0, 2.0, 3.0], [True, False], [2.0, 2.0]],
                 "in_high": [[INF, 1.0], "x", [-1.0, -1.0], [-2.0, -2.0]]}),
    },
    "diffusion": {
        "VPSDE": (lambda **kw: hjb.VPSDE(**kw), {"beta_min": "positive", "beta_max": "positive", "T": "positive"}),
        "VPSDE.marginal": (lambda **kw: hjb.GaussianMixture.example().marginal(hjb.VPSDE(), **{"t": 0.5, **kw}),
                           {"t": WRONG_KIND + NOT_FINITE + [-0.1, 1.5, torch.tensor([0.1, 0.2])]}),
        "GaussianMixture": (lambda **kw: hjb.GaussianMixture(**{"means": [[0.0, 0.0]], "covs": [np.eye(2)],
                                                                "weights": [1.0], **kw}),
                            {"means": [[[NAN, 0.0]], [0.0, 0.0], "m", None, [[0j, 0.0]], [[True, 0.0]]],
                             "covs": [[np.full((2, 2), NAN)], [-np.eye(2)], [np.eye(3)], [[[1.0, 2.0], [0.0, 1.0]]],
                                      None],
                             "weights": [[0.5], [-1.0], [NAN], [2.0], "w", [True]]}),
        "GaussianMixture.log_prob": (lambda **kw: hjb.GaussianMixture.example().log_prob(**{"x": _x(3, 2), **kw}),
                                     {"x": bad_states(2)}),
        "wasserstein_distance": (lambda **kw: hjb.wasserstein_distance(**{"x": _x(5, 2), "y": _x(6, 2), **kw}),
                                 {"x": [_x(5, 2, value=NAN), _x(5, 2, value=INF), torch.ones(5, 2, dtype=torch.complex64), _x(5),
                                        _x(0, 2), "x", None, torch.ones(5, 2, dtype=torch.bool)],
                                  "y": [_x(6, 2, value=NAN), _x(6, 2, value=-INF), _x(0, 2), _x(6, 3)],
                                  "p": [3, 0, 1.5, True, "2", None], "method": "choice", "reg": "positive"}),
        "sample_quality": (lambda **kw: hjb.sample_quality(**{"samples": _x(5, 2), "data": hjb.GaussianMixture.example(),
                                                              "reference": _x(6, 2), **kw}),
                           {"samples": [_x(5, 2, value=NAN), _x(5, 2, value=INF), _x(0, 2), _x(5, 3), None],
                            "reference": [_x(6, 2, value=NAN), _x(0, 2)], "method": "choice"}),
    },
    "metrics": {
        "relative_l2": (lambda **kw: hjb.relative_l2(**{"pred": [1.0, 2.0], "true": [1.0, 1.0], **kw}),
                        {"pred": [[NAN, 1.0], [INF, 1.0], [], "ab", [True, 1.0], [1j, 1.0]],
                         "true": [[NAN, 1.0], [0.0, 0.0], [1.0], []]}),
        "convergence_order": (lambda **kw: hjb.convergence_order(**{"steps": [0.1, 0.05], "errors": [0.1, 0.05], **kw}),
                              {"steps": [[NAN, 0.1], [0.1], [-0.1, 0.1], [0.1, 0.1], "ab"],
                               "errors": [[INF, 0.1], [0.0, 0.1], [0.1, 0.1, 0.1]]}),
    },
    "runtime": {
        "setup": (lambda **kw: hjb.setup(**kw), {"seed": "seed", "device": "device",
                                                 "threads": [v for v in BAD["int>=1"] if v is not None]}),
        "make_generator": (lambda **kw: hjb.make_generator(**{"seed_or_generator": 0, **kw}),
                           {"seed_or_generator": [-1, 2**64, 1.5, True, "3"], "device": "device"}),
        "seed_everything": (lambda **kw: hjb.seed_everything(**kw), {"seed": "seed"}),
    },
}

# the configs: every numeric, integer, choice and flag field gets the bad values of its kind
CONFIG_FIELDS = {
    hjb.PolicyIterationConfig: {"iterations": [v for v in BAD["int>=1"] if v is not None],   # None: by improvement
                                "n_states": "int>=1", "paths_per_state": "int>=1",
                                "dt": "positive", "value_lr": "positive", "policy_lr": "positive", "tol": "positive",
                                "horizon": BAD_CONFIG_NUMBER, "scheme": "choice", "activation": "choice",
                                "policy": "choice", "antithetic": "flag", "replay_fraction": [-0.1, 0.6, NAN, True,
                                                                                              "0.2"],
                                "initial_action": ["12", (NAN, 0.0), ("a",), 5, True, (1.0, "x")],
                                "state_box": [0.5, NAN, INF, True, "2"],
                                "training_region": [0.5, NAN, INF, True, "2"], "value_sign": [0, 2, True, "1", 1.0],
                                "seed": "seed", "device": "device", "dtype": ["float16", "int64", 32, None],
                                "progress": "flag"},
    hjb.QLearningConfig: {"width": "int>=1", "n_transitions": "int>=1", "n_envs": "int>=1", "temperature": "positive",
                          "lr": BAD_CONFIG_NUMBER, "target_tau": [0, 1.5, NAN, True, "0.1"],
                          "exploration_std": [0, -1.0, (1.0, NAN), "1", True], "method": "choice", "value": "choice",
                          "squash": [1, "yes", (1, 0), None], "initial_action": ["0.5", (True,), "x"]},
    hjb.DeepBSDEConfig: {"n_steps": "int>=1", "iterations": "int>=1", "batch_size": "int>=1", "lr": "positive",
                         "lr_final": "positive", "x0_radius": [-1.0, NAN, INF, True, "0"], "activation": "choice",
                         "linear_skip": "flag", "milstein": "flag", "loss": "choice",
                         "warmup": [-1, 1.5, True, "10"], "terminal_feature": [1, 0, "yes", np.float64(1.0)]},
    hjb.ScoreMatchingConfig: {"hidden": "int>=1", "iterations": "int>=1", "lr": "positive", "s_min": "positive",
                              "ema": [1.0, -0.1, NAN, True, "0.9"], "cpu_threads": [0, -1, 1.5, True, "2"]},
    hjb.FiniteDifferenceConfig: {"n": [2, 0, 2.5, True, "101"], "tol": BAD_CONFIG_NUMBER,
                                 "time_step": WRONG_KIND + [NAN, 0, -1.0], "scheme": "choice",
                                 "multilevel": "flag", "search_box": [(1.0, 0.0), (NAN, 1.0), "ab", (0.0,)]},
}


def _values(kind):
    return BAD[kind] if isinstance(kind, str) else kind


def _short(v) -> str:
    if callable(v) and not isinstance(v, type):
        return "fn"
    return str(v if isinstance(v, str) else show(v, 24)).replace(" ", "")


def _cases():
    cases = []
    for module, entries in ENTRIES.items():
        for entry, (call, params) in entries.items():
            for param, kind in params.items():
                for i, bad in enumerate(_values(kind)):
                    cases.append(pytest.param(module, call, param, bad, id=f"{entry}-{param}-{i}-{_short(bad)}"))
    for cls, fields in CONFIG_FIELDS.items():
        for field, kind in fields.items():
            for i, bad in enumerate(_values(kind)):
                cases.append(pytest.param("configs", lambda cls=cls, **kw: cls(**kw), field, bad,
                                          id=f"{cls.__name__}-{field}-{i}-{_short(bad)}"))
    return cases


CASES = _cases()


def _name_in(message: str, param: str) -> bool:
    root = param.split(".")[0]
    aliases = {"seed_or_generator": ("seed", "generator")}
    return any(a in message for a in aliases.get(root, (root,)))


@pytest.mark.parametrize("module, call, param, bad", CASES)
def test_a_bad_input_raises_an_error_naming_its_parameter(module, call, param, bad):
    with pytest.raises((ValueError, TypeError)) as info:
        call(**{param: bad})
    assert _name_in(str(info.value), param), f"{type(info.value).__name__}: {info.value}"


def test_the_table_holds_over_300_distinct_bad_inputs():
    by_module = Counter(c.values[0] for c in CASES)
    assert len(CASES) >= 300 and len({c.id for c in CASES}) == len(CASES), (len(CASES), by_module)
    assert set(by_module) == {"problems", "exact", "sde", "nets", "diffusion", "metrics", "runtime", "configs"}


# -- property-based tests ------------------------------------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)
bad_number = st.one_of(st.sampled_from([NAN, INF, -INF]), st.booleans(), st.text(max_size=3), st.none(),
                       st.complex_numbers(allow_nan=False, allow_infinity=False, min_magnitude=1e-3).filter(
                           lambda z: z.imag != 0))


@given(param=st.sampled_from(["alpha", "beta", "q", "r_a", "sigma", "rho"]), bad=bad_number)
def test_scalar_lqr_refuses_any_bad_number_by_name(param, bad):
    with pytest.raises((ValueError, TypeError), match=param):
        hjb.StochasticLQR.scalar(**{param: bad})


@given(alpha=st.floats(-1e3, 1e3), beta=st.floats(-1e3, 1e3).filter(lambda b: abs(b) > 1e-6),
       q=st.floats(0, 1e6), r_a=st.floats(1e-8, 1e8), sigma=st.floats(0, 1e3), rho=st.floats(1e-6, 1e3))
def test_a_valid_lqr_has_a_finite_exact_solution_or_a_named_refusal(alpha, beta, q, r_a, sigma, rho):
    p = hjb.StochasticLQR.scalar(alpha, beta, q, r_a, sigma, rho)
    try:
        ex = p.exact()
    except ValueError as e:
        assert "R" in str(e) or "Q" in str(e) or "Riccati" in str(e)
        return
    P, K = float(ex.P), float(ex.K)
    assert math.isfinite(P) and math.isfinite(K) and math.isfinite(ex.c) and P >= 0
    res = float(np.abs(hjb.riccati_residual(p.A, p.B, p.Q, p.R, ex.P, rho)).max())
    scale = q + 2 * abs(alpha - rho / 2) * P + beta ** 2 * P ** 2 / r_a
    assert res <= 1e-7 * scale or res == 0


@given(r=st.floats(-0.5, 0.5), excess=st.floats(-0.5, 0.5), sigma=st.floats(1e-3, 5),
       gamma=st.floats(1e-3, 50), rho=st.floats(1e-4, 5))
def test_a_valid_merton_problem_has_a_finite_closed_form_or_none(r, excess, sigma, gamma, rho):
    try:
        m = hjb.Merton(r=r, mu=r + excess, sigma=sigma, gamma=gamma, rho=rho)
    except ValueError as e:          # infeasible: rho - (1 - gamma) M <= 0
        assert "rho - (1-gamma) M" in str(e)
        return
    try:
        ex = m.exact()
    except ValueError as e:          # NoClosedForm (optimum outside the box) or an overflowing value
        assert "closed form" in str(e) or "gamma" in str(e)
        return
    w = m.grid(11, dtype=torch.float64)
    assert torch.isfinite(ex.value(w)).all() and torch.isfinite(ex.policy(w)).all()
    with pytest.raises(ValueError, match="x"):
        ex.value(-w)


@given(T=st.floats(1e-3, 5), n=st.integers(1, 60), x=st.floats(-3, 3), seed=st.integers(0, 2**63 - 1),
       scheme=st.sampled_from(hjb.sde.SDE_SCHEMES))
def test_simulate_with_valid_input_gives_finite_paths(T, n, x, seed, scheme):
    p = hjb.course.chapter_problem("lqr")
    ex = p.exact()
    sim = hjb.simulate(p, ex.policy, torch.full((4, 1), x, dtype=torch.float64), T, T / n, scheme=scheme,
                       generator=seed, record=True)
    assert torch.isfinite(sim.x).all() and torch.isfinite(sim.reward).all() and sim.x.shape == (n + 1, 4, 1)


@given(T=st.one_of(bad_number, st.floats(max_value=0)), dt=st.one_of(bad_number, st.floats(max_value=0)))
def test_simulate_refuses_bad_times_by_name(T, dt):
    p, x0 = _lqr(), _x(2, 1)
    with pytest.raises((ValueError, TypeError), match="T"):
        hjb.simulate(p, _zero_policy, x0, T, 0.1)
    with pytest.raises((ValueError, TypeError), match="dt"):
        hjb.simulate(p, _zero_policy, x0, 1.0, dt)


@given(w=st.floats(-1e3, 0.0), x=st.floats(1e-6, 1e3))
def test_merton_refuses_wealth_that_is_not_positive(w, x):
    m = _merton()
    with pytest.raises(ValueError, match="x0"):
        hjb.simulate(m, _merton_policy, torch.tensor([[x], [w]], dtype=torch.float64), 0.1, 0.1)
    sim = hjb.simulate(m, _merton_policy, torch.tensor([[x]], dtype=torch.float64), 0.1, 0.1)
    assert torch.isfinite(sim.reward).all()


CONFIGS = [hjb.PolicyIterationConfig, hjb.QLearningConfig, hjb.DeepBSDEConfig, hjb.ScoreMatchingConfig,
           hjb.FiniteDifferenceConfig]
numpy_scalar = st.sampled_from([np.float64, np.float32, np.int64, np.int32])


@given(cls=st.sampled_from(CONFIGS), preset=st.sampled_from(["quick", "full"]), seed=st.integers(0, 10**6),
       wrap=numpy_scalar, data=st.data())
def test_every_config_round_trips_with_numpy_scalars(cls, preset, seed, wrap, data):
    """Numbers given as numpy scalars are normalised to Python numbers, so a config survives a checkpoint."""
    base = cls.preset(preset, seed=seed)
    numeric = [f for f, v in config_state(base).items()
               if isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and f != "seed"]
    field = data.draw(st.sampled_from(numeric))
    value = getattr(base, field)
    kind = wrap if np.issubdtype(wrap, np.floating) else np.float64
    cfg = base.replace(**{field: kind(value)})
    assert type(getattr(cfg, field)) in (int, float)
    again = cls(**config_state(cfg))
    assert again == cfg
    assert cls(**config_state(cls.preset(preset, seed=np.int64(seed)))) == base


@given(cls=st.sampled_from(CONFIGS), bad=bad_number, data=st.data())
def test_a_config_refuses_a_bad_number_in_any_numeric_field(cls, bad, data):
    numeric = [f for f, v in config_state(cls()).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and f not in ("seed",)]
    field = data.draw(st.sampled_from(numeric))
    if bad is None and cls.__dataclass_fields__[field].type.endswith("None"):
        return      # None is a documented value of this field
    with pytest.raises((ValueError, TypeError), match=field):
        cls(**{field: bad})


@given(K=st.integers(1, 3), d=st.integers(1, 3), seed=st.integers(0, 1000), scale=st.floats(1e-2, 1e2))
def test_a_valid_mixture_gives_finite_densities_scores_and_samples(K, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(K, d, generator=g, dtype=torch.float64)
    L = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = scale ** 2 * (L @ L.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64))
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    gm = hjb.GaussianMixture(means, covs, w / w.sum())
    x = gm.sample(16, generator=seed)
    pt = gm.marginal(hjb.VPSDE(), 0.3)
    assert torch.isfinite(x).all() and torch.isfinite(gm.log_prob(x)).all() and torch.isfinite(pt.score(x)).all()
    assert hjb.wasserstein_distance(x, gm.sample(8, generator=seed + 1)) >= 0


@given(n=st.integers(1, 30), d=st.integers(1, 3), where=st.integers(0, 10**6),
       bad=st.sampled_from([NAN, INF, -INF]))
def test_a_metric_refuses_any_sample_that_is_not_finite(n, d, where, bad):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(where), dtype=torch.float64)
    x.view(-1)[where % x.numel()] = bad
    y = torch.zeros(3, d, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must be finite"):
        hjb.wasserstein_distance(x, y)
    with pytest.raises(ValueError, match="y must be finite"):
        hjb.wasserstein_distance(y, x)
