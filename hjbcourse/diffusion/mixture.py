"""Gaussian mixtures, the data law of the chapter "Diffusion models as control", and their exact marginals
under the forward VP SDE (:meth:`GaussianMixture.marginal`)."""
from __future__ import annotations

import math

import torch

from .._checks import _positive_int, _tensor, floating_tensor
from ..runtime import make_generator
from .sde import VPSDE

__all__ = ["GaussianMixture"]


def _check_x(x: torch.Tensor, d: int, name: str = "x") -> torch.Tensor:
    """``x`` itself when it is a finite floating tensor of shape (batch, d), else a ``ValueError`` (a
    ``TypeError`` for the wrong kind) naming ``name``."""
    return floating_tensor(name, x, (None, d))


class GaussianMixture:
    """sum_k w_k N(m_k, C_k) in R^d: ``means`` (K, d), ``covs`` (K, d, d) symmetric positive definite,
    ``weights`` (K,) positive and summing to one.

    The data law of the chapter and, through :meth:`marginal`, every law of the forward VP SDE.
    Tensors keep the dtype and device of ``means`` (numpy arrays and lists become the default dtype).
    """

    def __init__(self, means, covs, weights, *, _validated: bool = False):
        if _validated:
            self.means, self.covs, self.weights = means, covs, weights
        else:
            self.means = _tensor("means", means, 2)
            dt, dev = self.means.dtype, self.means.device
            self.covs = _tensor("covs", covs, 3, dtype=dt, device=dev)
            self.weights = _tensor("weights", weights, 1, dtype=dt, device=dev)
            K, d = self.means.shape
            if K < 1 or d < 1:
                raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {tuple(self.means.shape)}")
            if tuple(self.covs.shape) != (K, d, d):
                raise ValueError(f"covs must have shape (K, d, d) = {(K, d, d)}, got {tuple(self.covs.shape)}")
            if tuple(self.weights.shape) != (K,):
                raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(self.weights.shape)}")
            if not bool((self.weights > 0).all()):
                raise ValueError(f"weights must be positive, got {self.weights.tolist()}")
            total = float(self.weights.sum())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, got sum {total}")
            asym = (self.covs - self.covs.transpose(-1, -2)).abs().amax()
            if float(asym) > 1e-8 * max(1.0, float(self.covs.abs().amax())):
                raise ValueError(f"covs must be symmetric, got an asymmetry of {float(asym):.3g}")
            self.covs = 0.5 * (self.covs + self.covs.transpose(-1, -2))
        L, info = torch.linalg.cholesky_ex(self.covs)
        if not _validated and bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise ValueError(f"covs must be positive definite; component {bad} is not")
        self._chol = L
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
        self._chol_inv = torch.linalg.solve_triangular(L, eye, upper=False)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        self._log_norm = torch.log(self.weights) - 0.5 * (logdet + L.shape[-1] * math.log(2 * math.pi))  # (K,)

    @classmethod
    def example(cls, dtype: torch.dtype = torch.float64, device="cpu") -> "GaussianMixture":
        """The chapter's 2-D data: four anisotropic clusters with unequal weights and rotated covariances."""
        means = torch.tensor([[-1.6, 0.4], [0.9, 1.4], [0.2, -1.6], [1.7, -0.3]], dtype=torch.float64)
        stds = torch.tensor([[0.40, 0.20], [0.30, 0.20], [0.35, 0.20], [0.20, 0.20]], dtype=torch.float64)
        angles = torch.tensor([0.3, -0.6, 1.0, 0.0], dtype=torch.float64)
        c, s = torch.cos(angles), torch.sin(angles)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (K, 2, 2) rotations
        covs = R @ torch.diag_embed(stds ** 2) @ R.transpose(1, 2)
        weights = torch.tensor([0.35, 0.25, 0.25, 0.15], dtype=torch.float64)
        return cls(means.to(dtype=dtype, device=device), covs.to(dtype=dtype, device=device),
                   weights.to(dtype=dtype, device=device))

    # description -----------------------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, dtype={self.dtype}, device={self.device})"

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on ``device`` and/or in ``dtype``."""
        kw = dict(device=device or self.device, dtype=dtype or self.dtype)
        return GaussianMixture(self.means.to(**kw), self.covs.to(**kw), self.weights.to(**kw), _validated=True)

    def mean(self) -> torch.Tensor:
        """The mixture's mean, (d,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance, (d, d): sum_k w_k (C_k + m_k m_k^T) - m m^T."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    # densities ----------------------------------------------------------------------------------------------
    def _whiten(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> L_k^{-1} (x - m_k) stacked as (K, d, B).

        Batched products with the inverse Cholesky factors: much faster on a CPU than triangular solves.
        """
        diff = x.to(self.means).T[None, :, :] - self.means[:, :, None]  # (K, d, B)
        return self._chol_inv @ diff

    def _log_components(self, z: torch.Tensor) -> torch.Tensor:
        return self._log_norm[:, None] - 0.5 * (z * z).sum(1)  # (K, B)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, K): log w_k + log N(x; m_k, C_k)."""
        _check_x(x, self.dim)
        return self._log_components(self._whiten(x)).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, 1): log p(x)."""
        _check_x(x, self.dim)
        return torch.logsumexp(self._log_components(self._whiten(x)), dim=0)[:, None].to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, K): the posterior probabilities of the components given x."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d): grad log p(x) = -sum_k r_k(x) C_k^{-1} (x - m_k), r the responsibilities."""
        _check_x(x, self.dim)
        z = self._whiten(x)  # (K, d, B)
        r = torch.softmax(self._log_components(z), dim=0)  # (K, B)
        prec_diff = self._chol_inv.transpose(1, 2) @ z  # C_k^{-1} (x - m_k) = L^{-T} L^{-1} (x - m_k)
        return -(r[:, None, :] * prec_diff).sum(0).T.to(x.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n independent draws, (n, d); ``generator`` a torch.Generator or a seed."""
        n = _positive_int("n", n)
        g = make_generator(generator, self.device, "generator")
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=self.dtype, device=self.device)
        return self.means[k] + (self._chol[k] @ z[:, :, None])[:, :, 0]

    # the forward SDE --------------------------------------------------------------------------------------------
    def marginal(self, sde: VPSDE, t: float) -> "GaussianMixture":
        """The exact law at forward time ``t`` of the VP SDE started from this mixture (a GaussianMixture).

        Component by component: N(alpha m_k, alpha^2 C_k + (1 - alpha^2) I), the weights unchanged.
        """
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
        t = sde.check_time(t, "t")
        a, v = sde.alpha(t), sde.variance(t)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return GaussianMixture(a * self.means, a * a * self.covs + v * eye, self.weights, _validated=True)
