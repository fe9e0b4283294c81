"""The Cole-Hopf solution of the Han-Jentzen-E problem against rules that share nothing with the package's.

The package integrates over s in Gamma(lam) Z^{-lam} = int s^{lam-1} e^{-sZ} ds (a Gaussian expectation in
closed form inside). The reference here integrates over the law of |x + sqrt(2 tau) N|^2 instead: a Poisson
mixture of central chi-square laws (noncentrality |x|^2 / (2 tau)), each by a log-space trapezoid in ln S over
the whole support. Where lam d is large the weight exp(-lam g) peaks deep in the left tail of the chi-square
law (d = 1000, lam = 500: at S ~ 21 against a bulk at 1000), which is what these tests are for.
"""
import math

import numpy as np
import pytest
import torch

import hjbcourse as hjb
from hjbcourse.problems.high_dim import QuadratureError, _is_concave

DIMS = (1, 2, 10, 100, 1000)
LAMS = (0.1, 1.0, 10.0, 50.0, 500.0, 1000.0)
RADII = (0.0, 0.5, 2.0, 5.0)


def _log_sum(v: np.ndarray, axis=None):
    m = np.max(v, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.exp(v - m).sum(axis=axis))


def _reference(d, lam, tau, r2, h=0.02, fn=None):
    """u(T - tau, x) with |x|^2 = r2, or E fn(|x + sqrt(2 tau) N|^2) when ``fn`` is given.

    |x + sqrt(2 tau) N|^2 = 2 tau S, S ~ chi^2(d + 2J) with J ~ Poisson(r2 / (4 tau)). Each chi-square
    expectation is a trapezoid in z = ln S on [-110, ln(3 (d + 2 J_max) + 400)] with step h, summed in logs;
    the trapezoid on the line converges geometrically for these smooth, fast-decaying integrands.
    """
    mu = r2 / (4.0 * tau)
    jmax = int(mu + 12.0 * math.sqrt(mu) + 30.0) if mu > 0 else 0
    j = np.arange(jmax + 1)[:, None]
    k = d + 2.0 * j
    z = np.arange(-110.0, math.log(3.0 * (d + 2.0 * jmax) + 400.0), h)[None, :]
    log_density = (0.5 * k * z - 0.5 * np.exp(z) - 0.5 * k * math.log(2.0)
                   - np.array([math.lgamma(v) for v in 0.5 * k[:, 0]])[:, None])  # of z = ln S
    log_poisson = np.array([i * math.log(mu) - mu - math.lgamma(i + 1.0) if mu > 0 else 0.0
                            for i in range(jmax + 1)])
    log_z = np.log1p(2.0 * tau * np.exp(z)) - math.log(2.0)                      # g = ln Z
    if fn is not None:
        inner = h * (np.exp(log_density) * fn(2.0 * tau * np.exp(z))).sum(axis=1)
        return float((np.exp(log_poisson) * inner).sum())
    log_inner = math.log(h) + _log_sum(log_density - lam * log_z, axis=1)
    return -float(_log_sum(log_poisson + log_inner)) / lam


def _points(d, radii, dtype=torch.float64):
    """One point per radius, spread over the coordinates."""
    x = torch.linspace(1.0, 2.0, d, dtype=dtype)
    return torch.stack([r * x / x.norm() for r in radii])


def test_reference_rule_converges():
    """The reference itself at two step sizes (the values it is compared with below are converged)."""
    for d, lam, tau, r2 in ((1000, 500.0, 1.0, 0.0), (1, 1000.0, 1.0, 4.0), (10, 0.1, 0.3, 25.0)):
        a, b = _reference(d, lam, tau, r2), _reference(d, lam, tau, r2, h=0.01)
        assert abs(a - b) <= 1e-10 * abs(a), (d, lam, a, b)


@pytest.mark.parametrize("d", DIMS)
def test_value_against_the_independent_rule(d):
    for lam in LAMS:
        p = hjb.HighDimLQG(d, T=1.0, lam=lam)
        for tau in (1.0, 0.3):
            u = p.exact_value(1.0 - tau, _points(d, RADII))[:, 0].tolist()
            for r, value in zip(RADII, u):
                ref = _reference(d, lam, tau, r * r)
                assert math.isfinite(value) and abs(value - ref) <= 1e-7 * abs(ref), (d, lam, tau, r, value, ref)


def test_published_and_hard_values():
    """u(0, 0) for (d, lam): the paper's 4.5901 (d = 100, lam = 1) and the large lam d where the previous
    rule (a fixed window around the bulk of the chi-square law) returned 6.38 instead of 5.949 or -inf."""
    table = {(100, 1.0): 4.590162, (100, 10.0): 4.492929, (100, 50.0): 3.724176,
             (1000, 50.0): 6.855503, (1000, 500.0): 5.949109}
    for (d, lam), expected in table.items():
        u = float(hjb.HighDimLQG(d, 1.0, lam).exact_value(0.0, torch.zeros(1, d, dtype=torch.float64)))
        assert abs(u - expected) < 1e-6 * expected, (d, lam, u)
        assert abs(u - _reference(d, lam, 1.0, 0.0)) < 1e-9 * expected


def test_value_where_the_integrand_may_have_two_peaks():
    """Far from the origin (for small d tau: |x|^2 > 27) the log-integrand need not be concave; the package
    falls back on a looser window there. Still exact."""
    for d, lam, tau, r in ((1, 10.0, 1.0, 10.0), (2, 100.0, 0.1, 8.0), (10, 1.0, 0.3, 12.0)):
        u = float(hjb.HighDimLQG(d, 1.0, lam).exact_value(1.0 - tau, _points(d, [r])))
        assert not _is_concave(float(d), 2.0 * tau, np.array([r * r]))[0]
        ref = _reference(d, lam, tau, r * r, h=0.01)
        assert abs(u - ref) <= 1e-7 * abs(ref), (d, lam, tau, r, u, ref)


@pytest.mark.parametrize("d,lam", [(1, 0.1), (2, 1.0), (10, 10.0), (100, 50.0), (1000, 500.0), (1000, 1000.0)])
def test_gradient_against_finite_differences_of_the_value(d, lam):
    p = hjb.HighDimLQG(d, T=1.0, lam=lam)
    h = 1e-4
    for r in (0.5, 2.0, 5.0):
        grad = p.exact_gradient(0.2, _points(d, [r]))
        along = float(grad.norm())                       # grad u is radial: its norm is du/dr
        assert torch.allclose(grad / along, _points(d, [1.0]), atol=1e-12)
        u = p.exact_value(0.2, _points(d, [r - h, r + h]))[:, 0]
        fd = float(u[1] - u[0]) / (2 * h)
        assert abs(fd - along) <= 1e-6 * abs(along) + 1e-9, (d, lam, r, fd, along)
    assert float(p.exact_gradient(0.2, torch.zeros(1, d, dtype=torch.float64)).abs().max()) == 0.0


@pytest.mark.parametrize("lam", [1.0, 10.0])
def test_monte_carlo_in_100_dimensions(lam):
    """u = -(1/lam) ln E exp(-lam g(x + sqrt(2 tau) N)) by plain Monte Carlo, within 4 standard errors."""
    d, n = 100, 100_000
    p = hjb.HighDimLQG(d, T=1.0, lam=lam)
    g = torch.Generator().manual_seed(7)
    for t, r in ((0.0, 0.0), (0.5, 2.0)):
        x = _points(d, [r])
        y = x + math.sqrt(2 * (1.0 - t)) * torch.randn(n, d, generator=g, dtype=torch.float64)
        logs = -lam * p.terminal_cost(y)[:, 0]
        w = torch.exp(logs - logs.max())
        mc = -(float(torch.log(w.mean())) + float(logs.max())) / lam
        se = float(w.std()) / math.sqrt(n) / float(w.mean()) / lam     # delta method for -ln(mean) / lam
        u = float(p.exact_value(t, x))
        assert abs(u - mc) < 4 * se, (lam, t, r, u, mc, se)


def test_uncontrolled_cost_against_the_independent_rule():
    for d in DIMS:
        p = hjb.HighDimLQG(d, T=1.0, lam=1.0)
        for tau in (1.0, 0.3):
            out = p.uncontrolled_cost(1.0 - tau, _points(d, RADII))[:, 0].tolist()
            for r, value in zip(RADII, out):
                ref = _reference(d, 1.0, tau, r * r, fn=lambda q: np.log1p(q) - math.log(2.0))
                assert abs(value - ref) <= 1e-9 * max(1.0, abs(ref)), (d, tau, r, value, ref)


def test_nothing_returns_inf_or_nan():
    """Every input gives a finite number or a QuadratureError that says why; never inf or nan."""
    cases = [(1, 1e-3, 0.0, 0.0), (1000, 1e4, 0.0, 3.0), (1000, 1e6, 0.0, 0.0), (100_000, 1e-3, 0.0, 10.0),
             (1, 1e4, 0.999999, 100.0), (1, 1.0, 0.0, 1e4), (50, 1e-7, 0.3, 1.0), (3, 2.0, 0.999999999, 2.0)]
    raised = 0
    for d, lam, t, r in cases:
        p = hjb.HighDimLQG(d, 1.0, lam)
        x = _points(d, [r])
        for f in (p.exact_value, p.exact_gradient, p.uncontrolled_cost):
            try:
                out = f(t, x)
            except QuadratureError as e:
                assert "cannot certify" in str(e) or "too small" in str(e) or "panels" in str(e), str(e)
                raised += 1
            else:
                assert bool(torch.isfinite(out).all()), (d, lam, t, r, f.__name__, out)
    assert 0 < raised < 24


def test_too_small_lam_is_refused():
    p = hjb.HighDimLQG(10, lam=1e-8)
    with pytest.raises(QuadratureError, match="lam is too small"):
        p.exact_value(0.0, torch.zeros(1, 10))
    assert math.isfinite(float(p.uncontrolled_cost(0.0, torch.zeros(1, 10))))
