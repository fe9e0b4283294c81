"""Checkpoints for every iterative solver: atomic writes, safe loads.

A checkpoint is a dict of state dicts, tensors and plain values (numbers, strings, lists, tuples and dicts of
them), written with :func:`torch.save` to a temporary file beside the target and moved into place with
:func:`os.replace`, so an interrupted save leaves the previous checkpoint intact. Loading uses
``weights_only=True``: no arbitrary code is unpickled.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "plain"]


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


def save_checkpoint(path: str | Path, **state) -> Path:
    """Save state dicts and plain values to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(plain(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote, with ``weights_only=True`` (no arbitrary code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
