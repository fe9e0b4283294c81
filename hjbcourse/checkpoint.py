"""Checkpoints for every iterative solver: atomic writes, safe loads.

A checkpoint is a dict of state dicts, tensors and plain values (numbers, strings, lists, tuples and dicts of
them), written with :func:`torch.save` to a temporary file beside the target and moved into place with
:func:`os.replace`, so an interrupted save leaves the previous checkpoint intact (:func:`write_atomically` does
the same for any file: the command line writes its figures and summary that way). Loading uses
``weights_only=True``: no arbitrary code is unpickled. Every load error is a ``ValueError`` (or
``FileNotFoundError``) that names the file and says what is wrong.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "plain", "write_atomically", "first_nonfinite", "check_target"]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (recursively through lists,
    tuples and dicts), so that a checkpoint holding it loads with ``weights_only=True``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, numbers.Number) and not isinstance(value, (int, float, complex)):
        return float(value)
    return value


def config_state(config) -> dict[str, Any]:
    """A frozen config dataclass as a dict of plain values (see :func:`plain`)."""
    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def check_target(path: str | Path, name: str = "path") -> Path:
    """``path`` as a Path to which a file can be written: not a directory, and not below an existing file."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{name} must name a file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a directory: give a file name inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {str(path)!r} lies below {str(parent)!r}, which is a file")
            break
    return path


def write_atomically(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, flush it to disk and move it into place with
    :func:`os.replace`: readers see the old file or the new one, never a part (an interrupt leaves the old)."""
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | Path, **state) -> Path:
    """Save state dicts and plain values to ``path`` atomically (a temporary file, then a rename)."""
    state = plain(state)
    return write_atomically(path, lambda f: torch.save(state, f))


#: what torch.load raises on a file that is not a (safe) checkpoint
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, OSError, EOFError, KeyError, ValueError, TypeError,
               AttributeError, IndexError, zipfile.BadZipFile, UnicodeDecodeError)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote, with ``weights_only=True`` (no arbitrary code is unpickled).

    Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` naming the file when it is not a
    checkpoint: truncated, garbage, or holding objects that a safe load refuses to build."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds objects that a safe load (weights_only=True) does not build: it was not "
                         f"written by hjbcourse's save_checkpoint, or it was tampered with; it is not loaded") from None
    except _UNREADABLE as e:
        why = "it is empty" if path.stat().st_size == 0 else "it is truncated or not a checkpoint file"
        raise ValueError(f"{path} cannot be read as a checkpoint: {why} ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint of hjbcourse: it holds a {type(state).__name__}, not a dict")
    return state


def first_nonfinite(saved: Any, fresh: Any = None, where: str = "state") -> str | None:
    """Where ``saved`` (nested dicts, lists and tensors) holds a NaN or an infinity that ``fresh`` (the same
    structure from a freshly built solver) does not hold at the same place: the dotted key, or None.

    An infinity that the fresh solver holds too (an unbounded action box stored in a network) is data, not
    divergence; a NaN never is."""
    if isinstance(saved, torch.Tensor):
        if not (saved.is_floating_point() or saved.is_complex()):
            return None
        bad = ~torch.isfinite(saved)
        if isinstance(fresh, torch.Tensor) and fresh.shape == saved.shape and fresh.dtype.is_floating_point:
            bad &= ~(fresh.detach().cpu().to(saved.dtype) == saved.cpu())
        return where if bool(bad.any()) else None
    if isinstance(saved, dict):
        for k, v in saved.items():
            hit = first_nonfinite(v, fresh.get(k) if isinstance(fresh, dict) else None, f"{where}.{k}")
            if hit is not None:
                return hit
    elif isinstance(saved, (list, tuple)):
        same = isinstance(fresh, (list, tuple)) and len(fresh) == len(saved)
        for i, v in enumerate(saved):
            hit = first_nonfinite(v, fresh[i] if same else None, f"{where}[{i}]")
            if hit is not None:
                return hit
    return None
