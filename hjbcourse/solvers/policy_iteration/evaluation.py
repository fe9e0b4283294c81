"""Policy evaluation by Feynman–Kac: the targets (book: eq. (ch04-fk)), their control variate (eq. (ch04-cv)),
and the least-squares fit of the value network to them."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ...nets import MLP
from ...problems import ControlProblem
from ...runtime import make_generator
from ...sde import brownian_increments, simulate
from ...training import check_finite
from .networks import input_steps

__all__ = ["rollout_targets", "relative_weights", "fit_value"]


def _directional_differences(value, x, u, step):
    """Central differences of V along the directions u (B, d) with spacing ``step`` (B, 1):
    (first, second) ~ (u . grad V, u' Hess V u), each (B,), from three forward passes."""
    B = x.shape[0]
    vals = value(torch.cat([x, x + step * u, x - step * u]))[:, 0]
    v0, vp, vm = vals[:B], vals[B:2 * B], vals[2 * B:]
    s = step[:, 0]
    return (vp - vm) / (2 * s), (vp - 2 * v0 + vm) / (s * s)


def _control_variate(problem, value, sim, dW, dt, stride, generator, keep_graph=False, input_scaling="affine"):
    """(P, 1): the control variate of the Feynman–Kac target (book: eq. (ch04-cv)).

    Over blocks of ``stride`` steps, with w_j the block's summed increment (covariance h_j I) and v_j = S w_j,
    all coefficients evaluated at the block's first point X_{t_j}:

        sum_j e^{-rho t_j} [ grad V . v_j + 1/2 (v_j' H v_j - v~_j' H v~_j) ],    H = Hess V(X_{t_j}),

    where v~_j = S w~_j with w~_j an independent copy of w_j. For one noise dimension (S = s, a column) the
    second term is 1/2 (s'Hs + grad V . (Ds s)) (w_j^2 - h_j) instead: exact for the quadratic term, and with
    Milstein's term grad V . (Ds s), the derivative of s along itself, that multiplicative noise brings. These are the first two terms of Ito's expansion of e^{-rho t} V(X_t). Each has
    mean exactly zero because X_{t_j} does not see w_j (nor w~_j), whatever the coefficients are; so the
    derivatives are taken by central differences along v_j, v~_j (cheap forward passes), and their
    O(step^2) error only costs a little variance, never bias. The step moves the state by 1% of one unit of
    the networks' input coordinate (:func:`~.networks.input_steps`): 1% of the domain's half-width, or with
    ``input_scaling="log"`` 1% of log x's half-width in log x, so x times that. (A step fixed in x is
    lost to rounding where x is large: at wealth 300 times the domain's, in float32, the second difference
    was all rounding error and the targets came out thousands of times off.) With ``keep_graph`` it is
    computed inside autograd's graph (its derivative in the start point, also of mean zero, then corrects
    the pathwise gradient labels the same way).
    """
    n, P, m = dW.shape
    d = sim.x.shape[-1]
    idx = torch.arange(0, n, stride)
    blocks = torch.stack([dW[j:j + stride].sum(0) for j in idx.tolist()])        # (n_cv, P, m)
    lengths = torch.tensor([min(stride, n - j) * dt for j in idx.tolist()], dtype=dW.dtype, device=dW.device)
    flat_x = sim.x[idx].reshape(-1, d)
    flat_a = sim.a[idx].reshape(-1, sim.a.shape[-1])
    h = lengths.repeat_interleave(P).unsqueeze(-1)                                  # (n_cv P, 1)
    if input_scaling == "log":
        spacing = 1e-2 * input_steps(problem, flat_x, "log").min(-1, keepdim=True).values   # (n_cv P, 1)
    else:
        lo, hi = problem.domain
        spacing = 1e-2 * float((hi - lo).min()) / 2                                 # 1% of the domain's half-width
    with torch.set_grad_enabled(keep_graph):
        S = problem.diffusion(flat_x, flat_a)                                       # (n_cv P, d, m)
        w = blocks.reshape(-1, m)
        if m == 1:
            u = S[:, :, 0]
            step = spacing / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            # the derivative of the noise column along itself (zero for additive noise): with it,
            # phi(e) = V(x + e s + e^2/2 (Ds s)) has phi''(0) = s'Hs + grad V . (Ds s), the coefficient of
            # (w^2 - h)/2 in Ito's expansion (the Milstein term)
            ds = (problem.diffusion(flat_x + step * u, flat_a)[:, :, 0]
                  - problem.diffusion(flat_x - step * u, flat_a)[:, :, 0]) / (2 * step)
            parts = []
            for i in range(0, flat_x.shape[0], 65536):
                sl = slice(i, i + 65536)
                B_ = flat_x[sl].shape[0]
                e = step[sl]
                pts = torch.cat([flat_x[sl], flat_x[sl] + e * u[sl] + 0.5 * e * e * ds[sl],
                                 flat_x[sl] - e * u[sl] + 0.5 * e * e * ds[sl]])
                vals = value(pts)[:, 0]
                v0, vp, vm = vals[:B_], vals[B_:2 * B_], vals[2 * B_:]
                d1 = (vp - vm) / (2 * e[:, 0])
                d2 = (vp - 2 * v0 + vm) / (e[:, 0] ** 2)
                parts.append(d1 * w[sl, 0] + 0.5 * d2 * (w[sl, 0] ** 2 - h[sl, 0]))
            term = torch.cat(parts)
        else:
            w_tilde = torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device) * h.sqrt()
            v = (S @ w.unsqueeze(-1)).squeeze(-1)
            vt = (S @ w_tilde.unsqueeze(-1)).squeeze(-1)
            step = spacing / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            step_t = spacing / vt.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            parts = []
            for i in range(0, flat_x.shape[0], 65536):
                sl = slice(i, i + 65536)
                f1, q = _directional_differences(value, flat_x[sl], v[sl], step[sl])
                _, qt = _directional_differences(value, flat_x[sl], vt[sl], step_t[sl])
                parts.append(f1 + 0.5 * (q - qt))
            term = torch.cat(parts)
        disc = torch.exp(-problem.rho * dt * idx.to(dW.dtype)).to(dW.device).view(-1, 1)
        return (disc * term.reshape(len(idx), P)).sum(0).unsqueeze(-1)


#: path-steps per chunk of a differentiated simulation (bounds the memory its graph takes)
_PATH_STEPS = 1 << 17


def _path_targets(problem, value, sim, horizon, dW, dt, use_cv, cv_stride, generator, keep_graph,
                  input_scaling="affine"):
    """(P, 1): each path's target, int e^{-rho t} r dt + e^{-rho T} value(X_T) (no bootstrap for
    ``value=None``) minus the control variate when ``use_cv``; inside autograd's graph with ``keep_graph``."""
    with torch.set_grad_enabled(keep_graph):
        y = sim.reward
        if value is not None:
            y = y + math.exp(-problem.rho * horizon) * value(sim.x_T)
    if use_cv:
        y = y - _control_variate(problem, value, sim, dW, dt, cv_stride, generator, keep_graph=keep_graph,
                                 input_scaling=input_scaling)
    return y


def _targets_with_gradients(problem, policy, value, x0, horizon, dt, scheme, dW, use_cv, cv_stride, generator,
                            input_scaling="affine"):
    """Per path from ``x0`` (P, d) with the increments ``dW``: the target y (P, 1), int e^{-rho t} r dt +
    e^{-rho T} value(X_T) minus the control variate when ``use_cv``, its end point X_T (P, d), and z (P, d),
    the derivative of y with respect to the start point, the noise held fixed (the pathwise derivative).
    E[z | x0] = grad V^pi(x0) when the coefficients, the reward and the policy are differentiable (a.e.
    suffices: a clipped action); the control variate's derivative has mean zero too and removes most of z's
    noise. The policy is read through its ``differentiable`` method where it has one (the greedy policy,
    which otherwise detaches its action). Run in chunks of paths, so that the graph stays within
    :data:`_PATH_STEPS` path-steps."""
    P = x0.shape[0]
    n = dW.shape[0]
    pol = getattr(policy, "differentiable", policy)
    chunk = max(1, _PATH_STEPS // max(n, 1))
    ys, ends, zs = [], [], []
    for i in range(0, P, chunk):
        sl = slice(i, min(P, i + chunk))
        with torch.enable_grad():
            xc = x0[sl].detach().clone().requires_grad_(True)
            sim = simulate(problem, pol, xc, horizon, dt, scheme=scheme, dW=dW[:, sl], record=use_cv)
            y = _path_targets(problem, value, sim, horizon, dW[:, sl], dt, use_cv, cv_stride, generator, True,
                              input_scaling)
            (z,) = torch.autograd.grad(y.sum(), xc)
        ys.append(y.detach())
        ends.append(sim.x_T.detach())
        zs.append(z)
    return torch.cat(ys), torch.cat(ends), torch.cat(zs)


def rollout_targets(problem: ControlProblem, policy: Callable, value: Callable | None, x: torch.Tensor,
                    horizon: float, dt: float, paths_per_state: int = 2, antithetic: bool = True,
                    scheme: str = "weak2", control_variate: bool = True, cv_stride: int = 1,
                    generator: torch.Generator | int | None = None, return_endpoints: bool = False,
                    return_gradients: bool = False, input_scaling: str = "affine"):
    """(B, d) -> (B, 1), (B, 1): Feynman–Kac targets y(x) and their standard errors (book: eq. (ch04-fk)).

    With ``return_endpoints`` also the end points X_T of every path, (paths_per_state, B, d). With
    ``return_gradients`` also the pathwise derivatives of the targets, (B, d), averaged over each state's
    paths: estimates of grad V^pi(x) (see :func:`_targets_with_gradients`), labels for the value's gradient.

    y(x) is the mean over ``paths_per_state`` paths of int_0^T e^{-rho t} r dt + e^{-rho T} value(X_T) minus
    the zero-mean control variate of eq. (ch04-cv): over blocks of ``cv_stride`` steps, the first- and
    second-order terms of Ito's expansion of e^{-rho t} value(X_t) (see :func:`_control_variate`);
    ``value=None`` means V = 0 (no bootstrap, no control variate). With ``antithetic`` every path has a
    partner driven by -dW. ``input_scaling`` ("affine" or "log": the value network's input coordinates,
    x or log x) sets the control variate's difference step: 1% of one input unit. Runs without building a
    graph.
    """
    if input_scaling not in ("affine", "log"):
        raise ValueError(f"input_scaling must be 'affine' or 'log', got {input_scaling!r}")
    if paths_per_state < 1 or (antithetic and paths_per_state % 2):
        raise ValueError(f"paths_per_state must be positive (and even when antithetic), got {paths_per_state}")
    B, d = x.shape
    n = int(round(horizon / dt))
    g = make_generator(generator, x.device)
    m = problem.noise_dim
    if antithetic:
        half = brownian_increments(n, B * paths_per_state // 2, m, dt, g, x.dtype, x.device)
        dW = torch.cat([half, -half], dim=1)
    else:
        dW = brownian_increments(n, B * paths_per_state, m, dt, g, x.dtype, x.device)
    x0 = x.repeat(paths_per_state, 1)
    use_cv = control_variate and value is not None
    if return_gradients:
        y, x_T, z = _targets_with_gradients(problem, policy, value, x0, horizon, dt, scheme, dW, use_cv, cv_stride, g,
                                            input_scaling)
    else:
        with torch.no_grad():
            sim = simulate(problem, policy, x0, horizon, dt, scheme=scheme, dW=dW, record=use_cv)
        y = _path_targets(problem, value, sim, horizon, dW, dt, use_cv, cv_stride, g, False, input_scaling)
        x_T = sim.x_T
    y = y.reshape(paths_per_state, B, 1)
    mean = y.mean(0)
    if antithetic:  # pairs are dependent: the standard error comes from the pair means
        pairs = 0.5 * (y[: paths_per_state // 2] + y[paths_per_state // 2:])
        k = pairs.shape[0]
        se = pairs.std(0, unbiased=True) / math.sqrt(k) if k > 1 else (y[0] - y[-1]).abs() * 0 + float("nan")
    else:
        se = y.std(0, unbiased=True) / math.sqrt(paths_per_state) if paths_per_state > 1 else torch.full_like(mean, float("nan"))
    out = (mean, se)
    if return_endpoints:
        out = out + (x_T.reshape(paths_per_state, B, d),)
    if return_gradients:
        out = out + (z.reshape(paths_per_state, B, d).mean(0),)
    return out


def relative_weights(v_old: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """(B, 1) -> (B, 1): least-squares weights 1 / V_old(x)^2 for a fit by relative error, normalised to mean 1.

    ``v_old`` is the previous value at the training states (a function of the state only, so the weighted
    fit stays unbiased; weights from the noisy targets themselves would favour samples that came out small).
    |V_old| is floored at ``floor`` times its mean, so that a value that crosses zero cannot give one state
    all the weight. Detached.
    """
    a = v_old.detach().abs()
    a = a.clamp_min(floor * float(a.mean()) if float(a.mean()) > 0 else 1.0)
    w = a.pow(-2)
    return w / w.mean()


def fit_value(value: MLP, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int,
              batch: int, generator: torch.Generator, iteration: int = 0, polish_steps: int = 0,
              weights: torch.Tensor | None = None, grad_targets: torch.Tensor | None = None,
              grad_steps: torch.Tensor | None = None) -> float:
    """Fit ``value`` to targets ``y`` (B, 1) at ``x`` (B, d) by ``steps`` minibatch steps of least squares,
    then ``polish_steps`` full-batch L-BFGS steps.

    Adam gets close fast from a warm start; L-BFGS then resolves the fit to the level of the targets' noise,
    which matters because the policy reads the value's first and second derivatives. The loss is measured in
    units of the network's output scale (``value.out_scale``); returns the full-batch mean squared error at
    the end, in the same units. ``weights`` (B, 1), e.g. :func:`relative_weights`, weight the squared errors
    (and the returned mean). With ``grad_targets`` z (B, d), labels for grad V (the pathwise derivatives of
    :func:`rollout_targets`), each squared error gains the gradient's, measured in the networks' input
    units: |(grad V(x) - z) * grad_steps|^2, ``grad_steps`` (B, d) from :func:`input_steps` (a Sobolev fit:
    the greedy policy reads grad V, and its labels are far less noisy than the values'). Each of the d
    components counts as much as the value (their sum, not their mean: averaged, a 10-D gradient weighed a
    tenth as much per component, and the policy of the suite's 10-D problems was 1.5 times further off,
    benchmarks/README.md). Raises
    ``DivergenceError`` on NaN/inf.
    """
    B = x.shape[0]
    scale2 = float(value.out_scale) ** 2
    w_all = None if weights is None else weights.detach().reshape(B, 1)
    if grad_targets is not None:
        z_all, h_all = grad_targets.detach(), grad_steps.detach().expand_as(grad_targets)

    def sq(idx=None):
        xi = x if idx is None else x[idx]
        yi = y if idx is None else y[idx]
        if grad_targets is None:
            r2 = (value(xi) - yi).pow(2)
        else:
            with torch.enable_grad():
                xg = xi.detach().requires_grad_(True)
                v = value(xg)
                (gv,) = torch.autograd.grad(v.sum(), xg, create_graph=True)
            zi = z_all if idx is None else z_all[idx]
            hi = h_all if idx is None else h_all[idx]
            r2 = (v - yi).pow(2) + ((gv - zi) * hi).pow(2).sum(-1, keepdim=True)
        if w_all is not None:
            r2 = r2 * (w_all if idx is None else w_all[idx])
        return r2.mean() / scale2

    for _ in range(steps):
        idx = torch.randint(0, B, (min(batch, B),), generator=generator, device=generator.device).to(x.device)
        loss = sq(idx)
        check_finite(loss, "the value-fit loss", iteration)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if polish_steps:
        lbfgs = torch.optim.LBFGS(value.parameters(), lr=1.0, max_iter=polish_steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            lbfgs.zero_grad(set_to_none=True)
            loss = sq()
            loss.backward()
            return loss

        with torch.no_grad():    # sq() enables autograd itself where the gradient labels need it
            before = float(sq())
        saved = [p.detach().clone() for p in value.parameters()]
        lbfgs.step(closure)
        with torch.no_grad():
            after = float(sq())
            if not after <= before:  # a failed line search (or NaN): keep the Adam fit
                for p, s in zip(value.parameters(), saved):
                    p.copy_(s)
    with torch.no_grad():
        mse = float(sq())
    check_finite(mse, "the value-fit loss", iteration)
    return mse

