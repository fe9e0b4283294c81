"""The problem suite (hjbcourse.suite): reproducible from a seed, as specified, with trustworthy references;
the closed form of the LQ problem with state-dependent noise against sympy and finite differences."""
import numpy as np
import pytest
import sympy as sp
import torch

import hjbcourse.derivations as der
from hjbcourse.problems import StateNoiseLQ
from hjbcourse.suite import SUITE_FAMILIES, finite_difference_reference, problem_suite


def test_the_suite_is_reproducible_from_its_seed_and_covers_the_families():
    a, b, c = problem_suite(0), problem_suite(0), problem_suite(1)
    assert [e.name for e in a] == [e.name for e in b]
    lqr_a = [e.problem for e in a if e.family == "lqr"]
    assert all(torch.equal(p.A, q.A) and p.rho == q.rho for p, q in zip(lqr_a, [e.problem for e in b if e.family == "lqr"]))
    assert not torch.equal(lqr_a[5].A, [e.problem for e in c if e.family == "lqr"][5].A)
    fam = {f: [e for e in a if e.family == f] for f in SUITE_FAMILIES}
    assert len(fam["lqr"]) >= 16 and len(fam["merton"]) >= 8 and len(fam["no_closed_form"]) == 2
    assert {e.dim for e in fam["lqr"]} == {1, 2, 5, 10}
    for e in fam["lqr"]:
        p = e.problem
        top = float(np.linalg.eigvals(p.A.numpy()).real.max())
        assert (top > 0) == e.name.endswith("unstable") and 0.02 <= p.rho <= 1 and 1 <= p.action_dim <= p.state_dim
        if p.action_dim > 1:
            assert float(p.R.abs().sum() - p.R.diagonal().abs().sum()) > 0       # non-diagonal R
        assert float(p.D.abs().sum() - p.D.diagonal().abs().sum()) > 0 or p.state_dim == 1
    assert {e.dim for e in fam["lqr"] if e.name.endswith("unstable")} == {1, 2, 5, 10}
    assert {e.problem.gamma for e in fam["merton"]} == {0.5, 0.8, 2.0, 3.0, 5.0}
    for e in fam["merton"]:
        m = e.problem
        assert 0.02 <= m.rho <= 0.1 and m.rho - (1 - m.gamma) * m.M > 0 and e.reference().k > 0
    assert [e.name for e in problem_suite(0, names=["saturated"])] == ["saturated"]
    with pytest.raises(ValueError, match="families"):
        problem_suite(0, families=["lqrs"])
    with pytest.raises(ValueError, match="no suite problem"):
        problem_suite(0, names=["nope"])


def test_state_noise_closed_form_agrees_with_sympy():
    d = der.lq_state_noise()
    for p in [StateNoiseLQ()] + [e.problem for e in problem_suite(0, families=["state_noise"])]:
        vals = {k: getattr(p, k) for k in ("alpha", "beta", "q", "r_a", "s0", "s1", "rho")}
        sym, ex = d.subs_numbers(**vals), p.exact()
        assert sym["P"] == pytest.approx(ex.P, rel=1e-12) and sym["b"] == pytest.approx(ex.b, rel=1e-10, abs=1e-14)
        assert sym["c"] == pytest.approx(ex.c, rel=1e-10)
        sub = {d.params[k]: v for k, v in vals.items()}
        res = sp.Poly(d.residual.subs(sub).subs({sp.Symbol("P", real=True): ex.P, sp.Symbol("b", real=True): ex.b,
                                                 sp.Symbol("c", real=True): ex.c}), d.x)
        assert max(abs(float(co)) for co in res.coeffs()) < 1e-12
    assert sp.simplify(d.a_star.subs(d.params["s1"], 0) + d.params["beta"] * (sp.Symbol("P", real=True) * d.x
                       + sp.Symbol("b", real=True)) / d.params["r_a"]) == 0
    assert sp.simplify(d.b.subs(d.params["s1"], 0)) == 0          # no state-dependent noise: no linear term


@pytest.mark.parametrize("i", [0, 1])
def test_state_noise_closed_form_agrees_with_finite_differences(i):
    e = problem_suite(0, families=["state_noise"])[i]
    fd = finite_difference_reference(e.problem)
    s = e.reference().score(fd.solution, e.states())
    assert s["value_rel_l2"] < 1e-3 and s["policy_rel_l2"] < 1e-3 and s["P_rel"] < 1e-3


def test_references_without_closed_form_are_converged_and_the_saturating_one_saturates():
    for e in problem_suite(0, families=["no_closed_form"]):
        x = e.states()
        finer = finite_difference_reference(e.problem, widen=4.0, n=8001)
        s = e.reference().score(finer.solution, x)
        assert s["value_rel_l2"] < 1e-4 and s["policy_rel_l2"] < 1e-3, (e.name, s)
    sat = problem_suite(0, names=["saturated"])[0]
    a = sat.reference().policy(sat.states())
    assert float((a.abs() >= 0.5 - 1e-9).double().mean()) > 0.5   # saturated on most of the domain
