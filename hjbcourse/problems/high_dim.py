"""The high-dimensional linear-quadratic-Gaussian problem of Han, Jentzen and E (book: chapter "High dimensions").

State X in R^d, control m in R^d, horizon T, coupling lam > 0:

    dX = 2 sqrt(lam) m dt + sqrt(2) dW,      cost  E[ int_0^T |m_t|^2 dt + g(X_T) ],   g(x) = ln((1 + |x|^2) / 2).

The minimal cost-to-go u(t, x) solves  u_t + Lap u - lam |grad u|^2 = 0,  u(T, x) = g(x), and the optimal
control is m* = -sqrt(lam) grad u. The Cole-Hopf transform w = exp(-lam u) turns the equation into the
backward heat equation w_t + Lap w = 0, so

    u(t, x) = -(1/lam) ln E[ exp(-lam g(x + sqrt(2) W_{T-t})) ].

Because g depends on |x|^2 only, |x + sqrt(2) W_tau|^2 / (2 tau) follows a noncentral chi-square law with d
degrees of freedom and noncentrality |x|^2 / (2 tau): the expectation is a one-dimensional integral, done here
by adaptive quadrature (:meth:`HighDimLQG.exact_value`).

In this package rewards are maximised: the problem's maps are ``reward(t, x, a) = -|a|^2`` and
``terminal_reward(x) = -g(x)``, so the value in the reward convention is V = -u. The exact solution, the
solver (:class:`hjbcourse.DeepBSDE`) and the book all speak of the cost-to-go u, as the paper does.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from .._checks import _positive_int, _scalar, floating_dtype, time_in
from ..runtime import make_generator
from .base import FiniteHorizonProblem

__all__ = ["HighDimLQG", "grid_points"]


def _panel_rule(panels: int = 10, width: float = 2.0, order: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of a composite Gauss-Legendre rule on [0, panels * width]."""
    x, w = np.polynomial.legendre.leggauss(order)
    starts = width * np.arange(panels)
    nodes = (starts[:, None] + 0.5 * width * (x[None, :] + 1.0)).ravel()
    return nodes, np.tile(0.5 * width * w, panels)


_PANEL_RULE = _panel_rule()
_COARSE_RULE = _panel_rule(order=8)  # for smooth outer expectations (nonlinear_cost_rate)


def grid_points(dim: int, points_per_axis: int = 10) -> float:
    """The number of nodes of a tensor-product grid with ``points_per_axis`` nodes on each of ``dim`` axes."""
    dim = _positive_int("dim", dim)
    return float(_positive_int("points_per_axis", points_per_axis)) ** dim


class HighDimLQG(FiniteHorizonProblem):
    """The LQG problem of Han, Jentzen and E (PNAS 2018) in ``dim`` dimensions (module docstring for the model).

    ``dim`` a positive integer, ``T`` > 0 the horizon, ``lam`` > 0 the strength of the control's effect.
    Actions are (B, dim); the noise is additive, sqrt(2) times a ``dim``-dimensional Brownian motion.
    Beside the time-first maps of :class:`FiniteHorizonProblem`, the problem exposes its backward-SDE form
    (``bsde_sigma``, :meth:`bsde_driver`, :meth:`terminal_cost`, :meth:`optimal_action`) for
    :class:`hjbcourse.DeepBSDE`, and the exact solution :meth:`exact_value`, :meth:`exact_gradient`.
    """

    name = "high-dimensional LQG (Han-Jentzen-E)"

    def __init__(self, dim: int = 100, T=1.0, lam=1.0):
        dim = _positive_int("dim", dim)
        super().__init__(dim, dim, dim, T, rho=0.0, domain=(-2.0, 2.0))
        self.dim = int(dim)
        self.lam = _scalar("lam", lam, positive=True)
        self.sigma = math.sqrt(2.0)
        self.bsde_sigma = self.sigma  # the forward process of the BSDE is X = x0 + sqrt(2) W

    # -- the control problem, reward convention (maximised) ----------------------------------------
    def drift(self, t, x, a):
        """(B, d), (B, d) -> (B, d): 2 sqrt(lam) a."""
        self.check_state(x)
        return 2.0 * math.sqrt(self.lam) * a

    def diffusion(self, t, x, a):
        """(B, d) -> (B, d, d): sqrt(2) I."""
        self.check_state(x)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return (self.sigma * eye).unsqueeze(0).expand(x.shape[0], -1, -1)

    def reward(self, t, x, a):
        """(B, d), (B, d) -> (B, 1): -|a|^2."""
        return -(a * a).sum(-1, keepdim=True)

    def terminal_cost(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): g(x) = ln((1 + |x|^2) / 2)."""
        self.check_state(x)
        return torch.log1p((x * x).sum(-1, keepdim=True)) - math.log(2.0)

    def terminal_reward(self, x):
        """(B, d) -> (B, 1): -g(x)."""
        return -self.terminal_cost(x)

    # -- the backward-SDE form, in the cost convention ----------------------------------------------
    def bsde_driver(self, t, x, y, z):
        """(B, d), (B, 1), (B, d) -> (B, 1): the drift of Y_t = u(t, X_t) along X = x0 + sqrt(2) W.

        Ito: dY = (u_t + Lap u) dt + grad u . sqrt(2) dW = lam |grad u|^2 dt + Z . dW with Z = sqrt(2) grad u,
        so the driver is lam |Z|^2 / 2.
        """
        return 0.5 * self.lam * (z * z).sum(-1, keepdim=True)

    def optimal_action(self, t, x, grad_u):
        """(B, d) -> (B, d): the minimiser m* = -sqrt(lam) grad u of |m|^2 + 2 sqrt(lam) m . grad u."""
        return -math.sqrt(self.lam) * grad_u

    def sample_initial_states(self, n: int, radius: float, generator=None, dtype=torch.float32,
                              device="cpu") -> torch.Tensor:
        """(n, d): points with |x| uniform on [0, radius] and a uniform direction (radius 0: the origin).

        Uniform in the ball would put nearly every point at |x| close to ``radius`` when d is large; drawing
        the norm uniformly covers every distance from the origin evenly.
        """
        n = _positive_int("n", n)
        radius = _scalar("radius", radius, nonnegative=True)
        floating_dtype("dtype", dtype)
        if radius == 0.0:
            return torch.zeros(n, self.dim, dtype=dtype, device=device)
        g = make_generator(generator, "cpu", "generator")
        direction = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        r = radius * torch.rand(n, 1, generator=g, dtype=torch.float64)
        return (r * direction).to(dtype=dtype, device=device)

    # -- the exact solution (Cole-Hopf) --------------------------------------------------------------
    def _check_t(self, t) -> float:
        return time_in("t", t, self.T)

    def _radial_mean(self, fn, dof: float, r2: np.ndarray, tau: float, rule=None) -> np.ndarray:
        """E[fn(|x + sqrt(2 tau) N|^2)] for N ~ N(0, I_dof) and each squared norm |x|^2 in ``r2`` (n,) -> (n,).

        With v = |x + sqrt(2 tau) N| / sqrt(2 tau), v^2 is noncentral chi-square (dof, |x|^2 / (2 tau)), so v
        has the smooth noncentral chi density 2 v p(v^2) (the chi-square density is singular at 0 when
        dof = 1, the chi density is not). Its bulk has standard deviation at most one around
        sqrt(dof + nc); a composite Gauss-Legendre rule (panels of width 2, 20 nodes each) over the bulk
        -+ 10 integrates it; the neglected tails weigh below e^{-45}. ``fn`` acts on numpy arrays.
        """
        nc = r2 / (2.0 * tau)
        centre = np.sqrt(dof + nc)
        lo = np.maximum(centre - 10.0, 0.0)                        # (n,)
        nodes, weights = _PANEL_RULE if rule is None else rule
        v = lo[:, None] + nodes[None, :]                           # (n, P)
        s = v * v
        from scipy import stats  # loaded on first use: scipy.stats costs ~0.4 s to import

        with np.errstate(under="ignore"):
            if np.all(nc == 0.0):
                dens = stats.chi2.pdf(s, dof)
            else:
                dens = np.where(nc[:, None] > 0.0, stats.ncx2.pdf(s, dof, np.maximum(nc, 1e-300)[:, None]),
                                stats.chi2.pdf(s, dof))
        return ((weights * 2.0 * v * dens) * fn(2.0 * tau * s)).sum(axis=1)

    def _radial(self, t: float, r2: np.ndarray, need_gradient: bool):
        """u(t, x) and du/d(|x|^2) for each squared norm |x|^2 in ``r2`` (n,) -> (n,), (n,)."""
        tau = self.T - t
        r2 = np.asarray(r2, dtype=np.float64)
        if tau == 0.0:
            return np.log1p(r2) - math.log(2.0), 1.0 / (1.0 + r2)
        d, lam = float(self.dim), self.lam
        # shift by g at the mean of |X_T|^2 so exp(-lam (g - shift)) is of order one whatever lam
        shift = np.log1p(r2 + 2.0 * tau * d) - math.log(2.0)

        def h(q):
            return np.exp(-lam * (np.log1p(q) - math.log(2.0) - shift[:, None]))

        w = self._radial_mean(h, d, r2, tau)
        u = shift - np.log(w) / lam
        if not need_gradient:
            return u, None
        # d/dnc E_{dof, nc}[h] = (E_{dof+2, nc}[h] - E_{dof, nc}[h]) / 2 and dnc/d|x|^2 = 1 / (2 tau)
        w2 = self._radial_mean(h, d + 2.0, r2, tau)
        return u, -(w2 - w) / (4.0 * tau * lam * w)

    def exact_value(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): the cost-to-go u(t, x) = -(1/lam) ln E[exp(-lam g(x + sqrt(2) W_{T-t}))].

        Computed by quadrature against the law of |x + sqrt(2) W_{T-t}| (a scaled noncentral chi law;
        relative accuracy about 1e-12, see the tests); the value in the reward convention is -u.
        """
        t = self._check_t(t)
        self.check_state(x)
        r2 = (x.detach().to(torch.float64).cpu() ** 2).sum(1).numpy()
        u, _ = self._radial(t, r2, need_gradient=False)
        return torch.as_tensor(u, dtype=x.dtype, device=x.device).unsqueeze(1)

    def exact_gradient(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad_x u(t, x) = 2 x du/d(|x|^2), by the same quadrature."""
        t = self._check_t(t)
        self.check_state(x)
        x64 = x.detach().to(torch.float64).cpu()
        _, du = self._radial(t, (x64 ** 2).sum(1).numpy(), need_gradient=True)
        return (2.0 * x64 * torch.as_tensor(du).unsqueeze(1)).to(dtype=x.dtype, device=x.device)

    def exact_policy(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): the optimal control m* = -sqrt(lam) grad u(t, x)."""
        return self.optimal_action(t, x, self.exact_gradient(t, x))

    def uncontrolled_cost(self, t, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): E[g(x + sqrt(2) W_{T-t})], the cost of never steering (m = 0), by quadrature.

        The gap between it and u measures how much the nonlinear term lam |grad u|^2 matters.
        """
        t = self._check_t(t)
        self.check_state(x)
        r2 = (x.detach().to(torch.float64).cpu() ** 2).sum(1).numpy()
        tau = self.T - t
        if tau == 0.0:
            out = np.log1p(r2) - math.log(2.0)
        else:
            out = self._radial_mean(lambda q: np.log1p(q) - math.log(2.0), float(self.dim), r2, tau)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device).unsqueeze(1)

    def nonlinear_cost_rate(self, t) -> float:
        """phi(t) = lam E|grad u(t, X_t)|^2 along the uncontrolled path X_t = sqrt(2) W_t from X_0 = 0.

        Integrating phi over [0, T] gives E g(X_T) - u(0, 0): the part of the cost that the nonlinear term
        accounts for. The expectation over |X_t| uses the quadrature of :meth:`exact_value`, and each node
        the quadrature of :meth:`exact_gradient`.
        """
        t = self._check_t(t)
        if t == 0.0:
            return 0.0

        def rate(q):
            _, du = self._radial(t, q.ravel(), need_gradient=True)
            return (self.lam * 4.0 * q.ravel() * du ** 2).reshape(q.shape)

        return float(self._radial_mean(rate, float(self.dim), np.zeros(1), t, rule=_COARSE_RULE)[0])

    def euler_bias(self, n_steps: int) -> float:
        """The time-discretisation error of the deep BSDE method's roll-out in u(0, 0), evaluated at the
        exact Z: E g(X_T) - dt sum_{n<N} phi(t_n) - u(0, 0) with N = ``n_steps`` (:meth:`nonlinear_cost_rate`).

        The Euler step evaluates the driver at the left end of each step, so this is O(1/N): an error the
        method makes at that N however well its networks are trained (to first order in the Z error).
        """
        n_steps = _positive_int("n_steps", n_steps)
        dt = self.T / n_steps
        riemann = dt * sum(self.nonlinear_cost_rate(n * dt) for n in range(n_steps))
        origin = torch.zeros(1, self.dim, dtype=torch.float64)
        integral = float(self.uncontrolled_cost(0.0, origin) - self.exact_value(0.0, origin))
        return integral - riemann

    def __repr__(self) -> str:
        return f"HighDimLQG(dim={self.dim}, T={self.T}, lam={self.lam})"
