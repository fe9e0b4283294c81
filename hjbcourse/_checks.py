"""The input contract: the checks every public entry runs on what it is given, in one place.

Each helper raises a ``ValueError`` whose message names the parameter as the signature spells it, states the
rule, and quotes the value received. Every layer of the package may import this module; it imports only
numpy and torch.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch


def as_float64(name: str, value, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``value`` (number, list, numpy array or tensor) as a float64 CPU tensor, checked for NaN and shape.

    Raises ``ValueError`` naming ``name`` when the value holds NaN/inf or has the wrong shape.
    """
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got a value containing NaN or inf")
    return t


def _scalar(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    t = as_float64(name, value)
    if t.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(t.shape)}")
    v = float(t.reshape(()))
    if positive and not v > 0:
        raise ValueError(f"{name} must be positive, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be non-negative, got {v}")
    return v


def _per_coordinate(name: str, value, n: int, allow_inf: bool = False) -> torch.Tensor:
    """One number for every coordinate, or ``n`` numbers, as a float64 tensor of shape (n,)."""
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if t.numel() not in (1, n):
        raise ValueError(f"{name} must be one number or {n} (one per coordinate), got {t.numel()}")
    if bool(torch.isnan(t).any()) or (not allow_inf and not bool(torch.isfinite(t).all())):
        raise ValueError(f"{name} must hold {'numbers' if allow_inf else 'finite numbers'}, got {t.tolist()}")
    return t.expand(n).clone()


def _domain(domain, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each one number or ``n``, as two float64 tensors of shape (n,)."""
    try:
        lo, hi = domain
    except (TypeError, ValueError) as e:
        raise ValueError(f"domain must be a pair (low, high), got {domain!r}") from e
    return _per_coordinate("domain's low end", lo, n), _per_coordinate("domain's high end", hi, n)


def _real(v) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_number(v) -> bool:
    """A finite real number > 0 (numpy scalars included), not a bool."""
    return _real(v) and math.isfinite(v) and v > 0


def _columns(name: str, value, d: int, cols: str) -> torch.Tensor:
    """A (d, n) matrix such as the LQR's B or D. A number or a vector is one column of d entries or, for d = 1,
    one row; anything else must already have d rows."""
    M = as_float64(name, value)
    M = M.reshape(d, -1) if M.ndim < 2 and (M.numel() == d or (d == 1 and M.numel() > 0)) else M
    if M.ndim != 2 or M.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {cols}), got {tuple(M.shape)}")
    return M


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _tensor(name: str, value, ndim: int, dtype=None, device=None) -> torch.Tensor:
    """``value`` as a finite floating tensor with ``ndim`` dimensions. A tensor keeps its dtype and device unless
    ``dtype``/``device`` are given; numbers, lists and numpy arrays become torch's default dtype."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {value!r}") from e
        if dtype is None:
            t = t.to(torch.get_default_dtype())
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got a value containing NaN or inf")
    return t
