"""The input contract: the checks every public entry runs on what it is given, written once, here.

The rules (DESIGN.md, "Conventions"):

- a number is real where the signature says so: ``bool``, ``str``, ``bytes``, complex numbers and ``None`` are the
  wrong *kind* and raise :class:`InputTypeError` (a ``TypeError``); numpy scalars are normalised to Python numbers,
  so that a config holding one round-trips through a checkpoint;
- a number is finite unless the signature allows infinity, and inside its documented range (``ValueError``);
- a tensor is floating (integer, bool and complex tensors are refused), of the documented shape and finite;
- a tuple has its documented length; a time lies in [0, T]; a state lies in the problem's state space (Merton's
  wealth > 0); a device exists on this machine;
- a time-stepping loop runs at most :data:`MAX_STEPS` steps unless the caller passes an explicit ``max_steps``.

Every violation raises a ``ValueError`` (or :class:`InputTypeError`, which is both a ``TypeError`` and a
``ValueError``) whose message names the parameter as the signature spells it, states the rule and quotes the value
received. Every layer of the package may import this module; it imports only numpy and torch.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

#: the most time steps a simulation runs without an explicit ``max_steps`` (a guard against T / dt = 1e9)
MAX_STEPS = 1_000_000
#: the largest seed: torch seeds are 64-bit, and solvers derive a few more seeds by adding small offsets
MAX_SEED = 2**63 - 1


class InputTypeError(TypeError, ValueError):
    """A value of the wrong kind (a bool, str or complex number where a real number belongs, an integer tensor
    where a floating one does). A ``TypeError``, and a ``ValueError`` for callers that catch the ``ValueError``
    every bad input raised before the contract told kinds apart."""


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened to ``limit`` characters (a tensor is described by its dtype and shape)."""
    if isinstance(value, torch.Tensor) and value.numel() > 8:
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- kinds -------------------------------------------------------------------------------------------------------
def _wrong_kind(value) -> str | None:
    """Why ``value`` cannot stand for real numbers (None when it can): checked before any conversion, so that
    ``True`` never becomes 1.0, ``"12"`` never becomes (1.0, 2.0) and a complex number never loses its imaginary
    part. Lists and tuples are checked element by element."""
    if isinstance(value, (bool, np.bool_)):
        return "a bool"
    if isinstance(value, (str, bytes)):
        return "a string"
    if value is None:
        return "None"
    if isinstance(value, (complex, np.complexfloating)):
        return "a complex number"
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            return f"a {value.dtype} tensor"
        return None
    if isinstance(value, np.ndarray):
        return None if value.dtype.kind in "iuf" else f"an array of dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        for v in value:
            why = _wrong_kind(v)
            if why is not None:
                return f"a sequence holding {why}"
        return None
    if isinstance(value, numbers.Real) or isinstance(value, np.generic):
        return None if isinstance(value, numbers.Real) else f"a {type(value).__name__}"
    return f"a {type(value).__name__}"


def check_kind(name: str, value, what: str = "real numbers") -> None:
    """Raise :class:`InputTypeError` naming ``name`` unless ``value`` can stand for real numbers."""
    why = _wrong_kind(value)
    if why is not None:
        raise InputTypeError(f"{name} must be {what}, got {why}: {show(value)}")


def plain_number(value):
    """A numpy scalar as the Python number it holds (``np.float64(0.1)`` -> ``0.1``); anything else unchanged."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- numbers -----------------------------------------------------------------------------------------------------
def as_float64(name: str, value, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``value`` (number, list, numpy array or tensor) as a finite float64 CPU tensor, of ``shape`` when given.

    Raises :class:`InputTypeError` for a bool, string or complex value (or a sequence holding one) and
    ``ValueError`` naming ``name`` when the value holds NaN or inf or has the wrong shape.
    """
    check_kind(name, value)
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise InputTypeError(f"{name} must be numeric, got {show(value)}") from e
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {show(value)}")
    return t


def real(name: str, value, *, positive: bool = False, nonnegative: bool = False, allow_inf: bool = False,
         low: float | None = None, high: float | None = None) -> float:
    """``value`` as a Python float: a real number (a one-element array or tensor too), finite unless
    ``allow_inf``, > 0 with ``positive``, >= 0 with ``nonnegative``, in [``low``, ``high``] when given."""
    check_kind(name, value, "a real number")
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputTypeError(f"{name} must be a real number, got {show(value)}") from e
    if arr.size != 1:
        raise ValueError(f"{name} must be a single number, got shape {arr.shape}")
    v = float(arr.reshape(()))
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be positive, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be non-negative, got {v}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {v}")
    return v


def _scalar(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real number (see :func:`real`)."""
    return real(name, value, positive=positive, nonnegative=nonnegative)


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int: an int or numpy integer (bool and float refused), in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {show(value)}")
    v = int(value)
    if minimum is not None and v < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return v


def _positive_int(name: str, value) -> int:
    return integer(name, value, minimum=1)


def _check_seed(seed, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    return integer(name, seed, minimum=0, maximum=MAX_SEED)


def _real(v) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _positive_number(v) -> bool:
    """A finite real number > 0 (numpy scalars included), not a bool."""
    return _real(v) and math.isfinite(v) and v > 0


def flag(name: str, value) -> bool:
    """``True`` or ``False`` (a numpy bool too); anything else is the wrong kind."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {show(value)}")
    return bool(value)


def choice(name: str, value, options: Sequence[str]) -> str:
    """One of the strings ``options``."""
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be one of {tuple(options)}, got {show(value)}")
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def numbers_tuple(name: str, value, length: int | None = None, *, item: Callable | None = None) -> tuple:
    """A tuple or list of real numbers (of ``length`` when given) as a tuple of Python floats; ``item(name_i, v)``
    checks each entry (default: a finite real number)."""
    if not isinstance(value, (tuple, list, np.ndarray, torch.Tensor)):
        raise InputTypeError(f"{name} must be a sequence of {length or 'some'} numbers, got {show(value)}")
    vals = list(value.reshape(-1).tolist()) if isinstance(value, (np.ndarray, torch.Tensor)) else list(value)
    check_kind(name, vals, "a sequence of real numbers")
    if length is not None and len(vals) != length:
        raise ValueError(f"{name} must hold {length} numbers, got {len(vals)}: {show(value)}")
    check = item or (lambda n, v: real(n, v))
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(vals))


def pair(name: str, value) -> tuple:
    """``(low, high)``: a tuple or list of two entries (each checked by the caller)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {show(value)}")
    return tuple(value)


def _per_coordinate(name: str, value, n: int, allow_inf: bool = False) -> torch.Tensor:
    """One number for every coordinate, or ``n`` numbers, as a float64 tensor of shape (n,)."""
    check_kind(name, value)
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputTypeError(f"{name} must be numeric, got {show(value)}") from e
    if t.numel() not in (1, n):
        raise ValueError(f"{name} must be one number or {n} (one per coordinate), got {t.numel()}")
    if bool(torch.isnan(t).any()) or (not allow_inf and not bool(torch.isfinite(t).all())):
        raise ValueError(f"{name} must hold {'numbers' if allow_inf else 'finite numbers'}, got {t.tolist()}")
    return t.expand(n).clone()


def _domain(domain, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``, each one number or ``n``, as two float64 tensors of shape (n,)."""
    try:
        lo, hi = pair("domain", domain)
    except ValueError:
        raise
    return _per_coordinate("domain's low end", lo, n), _per_coordinate("domain's high end", hi, n)


def _columns(name: str, value, d: int, cols: str) -> torch.Tensor:
    """A (d, n) matrix such as the LQR's B or D. A number or a vector is one column of d entries or, for d = 1,
    one row; anything else must already have d rows."""
    M = as_float64(name, value)
    M = M.reshape(d, -1) if M.ndim < 2 and (M.numel() == d or (d == 1 and M.numel() > 0)) else M
    if M.ndim != 2 or M.shape[0] != d or M.shape[1] < 1:
        raise ValueError(f"{name} must have shape ({d}, {cols}), got {tuple(M.shape)}")
    return M


def time_in(name: str, t, T: float) -> float:
    """``t`` as a float in [0, T] (a number, or a one-element tensor); a rounding excess of 1e-12 T is clipped."""
    if isinstance(t, torch.Tensor) and t.numel() != 1:
        raise ValueError(f"{name} must be a float in [0, T={T}], got a tensor of shape {tuple(t.shape)}")
    v = real(name, t)
    if not 0.0 <= v <= T * (1 + 1e-12):
        raise ValueError(f"{name} must lie in [0, T={T}], got {v}")
    return min(v, T)


def step_count(name: str, n: int, max_steps: int | None) -> int:
    """Refuse ``n`` time steps beyond ``max_steps`` (None: :data:`MAX_STEPS`); a larger run must say so."""
    limit = MAX_STEPS if max_steps is None else integer("max_steps", max_steps, minimum=1)
    if n > limit:
        hint = "pass a larger max_steps to run it" if max_steps is not None else (
            f"the limit is {MAX_STEPS:,} steps without an explicit max_steps=; pass max_steps={n} to run it")
        raise ValueError(f"{name} asks for {n:,} time steps, more than max_steps={limit:,}: {hint}")
    return n


# -- tensors ------------------------------------------------------------------------------------------------------
def floating_dtype(name: str, dtype) -> torch.dtype:
    """A floating torch dtype (float32, float64, ...): integer, bool and complex dtypes are the wrong kind."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputTypeError(f"{name} must be a floating torch dtype such as torch.float32 or torch.float64, "
                             f"got {show(dtype)}")
    return dtype


def device(name: str, value) -> torch.device:
    """A device that exists on this machine: ``"cpu"``, or ``"cuda"``/``"cuda:i"`` when torch finds that GPU."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, torch.device)):
        raise InputTypeError(f"{name} must be a device name such as 'cpu' or 'cuda', got {show(value)}")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name} must be a device name such as 'cpu' or 'cuda', got {value!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(value)!r} was asked for, but torch finds no CUDA GPU here; use "
                             f"device='cpu' (hjb.setup() picks the device that exists)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={str(value)!r}: there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{name}={str(value)!r} was asked for, but torch finds no MPS device here")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be 'cpu' or 'cuda', got {str(value)!r}")
    return dev


def _tensor(name: str, value, ndim: int, dtype=None, device=None) -> torch.Tensor:
    """``value`` as a finite floating tensor with ``ndim`` dimensions. A tensor keeps its dtype and device unless
    ``dtype``/``device`` are given; numbers, lists and numpy arrays become torch's default dtype (integers
    become floats; bool, string and complex values are the wrong kind)."""
    check_kind(name, value)
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise InputTypeError(f"{name} must be numeric, got {show(value)}") from e
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


def floating_tensor(name: str, x, shape: Sequence[int | None] | None = None, *, finite: bool = True,
                    allow_empty: bool = False) -> torch.Tensor:
    """``x`` itself, after checking it is a floating torch tensor of ``shape`` (None entries: any size), not
    empty and finite. Numpy arrays and lists are the wrong kind (``torch.as_tensor`` converts them)."""
    if not isinstance(x, torch.Tensor):
        what = f"of shape {tuple('B' if s is None else s for s in shape)} " if shape is not None else ""
        raise InputTypeError(f"{name} must be a torch tensor {what}(torch.as_tensor converts arrays), "
                             f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputTypeError(f"{name} must be a floating tensor (float32 or float64), got dtype {x.dtype}")
    if shape is not None and (x.ndim != len(shape) or any(s is not None and x.shape[i] != s
                                                          for i, s in enumerate(shape))):
        want = tuple("batch" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}".replace("'", ""))
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or inf entries of {x.numel()}")
    return x


def inside(name: str, x: torch.Tensor, low, high, what: str = "the state space") -> None:
    """Refuse entries of ``x`` (B, d) outside the open box (low, high) (per coordinate; infinite ends are free)."""
    lo = torch.as_tensor(low, dtype=torch.float64).reshape(-1)
    hi = torch.as_tensor(high, dtype=torch.float64).reshape(-1)
    checks = []
    if bool(torch.isfinite(lo).any()):
        checks.append((x <= lo.to(x)) & torch.isfinite(lo).to(x.device))
    if bool(torch.isfinite(hi).any()):
        checks.append((x >= hi.to(x)) & torch.isfinite(hi).to(x.device))
    for bad in checks:
        if bool(bad.any()):
            i = tuple(int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{name} must lie in {what} ({_interval(lo, hi)}), got {float(x[i])} at index {i}")


def _interval(lo: torch.Tensor, hi: torch.Tensor) -> str:
    if lo.numel() == 1 and hi.numel() == 1:
        return f"{float(lo)} < x < {float(hi)}"
    return f"{lo.tolist()} < x < {hi.tolist()}"


def samples(name: str, x, d: int | None = None) -> np.ndarray:
    """Samples for a metric: a tensor or array (n, d) with n >= 1, real and finite, as a float64 numpy array.
    A metric cannot score NaN, inf or nothing: it refuses them instead of returning a number."""
    check_kind(name, x, "an array of real numbers")
    if not isinstance(x, (torch.Tensor, np.ndarray, list, tuple)):
        raise InputTypeError(f"{name} must be a tensor or array of shape (n, d), got {type(x).__name__}")
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 2 or (d is not None and a.shape[1] != d):
        raise ValueError(f"{name} must have shape (n, {d if d is not None else 'd'}), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{name} must be finite: {bad} of {a.size} entries are NaN or inf (a diverged sampler "
                         f"cannot be scored)")
    return a


def env_choice(var: str, options: Sequence[str]) -> str | None:
    """The environment variable ``var`` when set (and not empty): one of ``options``, else a ValueError."""
    v = os.environ.get(var)
    if not v:
        return None
    if v not in options:
        raise ValueError(f"the environment variable {var} must be one of {tuple(options)}, got {v!r}")
    return v


def env_int(var: str, minimum: int = 1) -> int | None:
    """The environment variable ``var`` when set (and not empty): an integer >= ``minimum``, else a ValueError."""
    v = os.environ.get(var)
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"the environment variable {var} must be an integer >= {minimum}, got {v!r}") from None
    if n < minimum:
        raise ValueError(f"the environment variable {var} must be an integer >= {minimum}, got {v!r}")
    return n
