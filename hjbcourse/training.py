"""Machinery every solver shares: configs with presets, diagnostics history and a NaN guard (checkpoints are in
:mod:`hjbcourse.checkpoint`, the run loop in :mod:`hjbcourse.solvers.base`).

Solvers subclass :class:`SolverConfig` (a frozen dataclass) and declare their presets in ``PRESETS``;
they record one row of diagnostics per iteration in a :class:`History` and call :func:`check_finite` on
every loss, so a diverging run stops with an error that names the iteration.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ._checks import InputTypeError, _check_seed, choice, device, flag, plain_number, show

__all__ = ["SolverConfig", "History", "DivergenceError", "check_finite", "check_growth", "GROWTH_LIMIT",
           "GROWTH_FLOOR"]

#: a guarded loss that grows this many times above its first value means the run diverged (four orders of magnitude)
GROWTH_LIMIT = 1e4
#: a first value below this is read as this (a loss that starts at 0 or at rounding noise is no scale to grow from)
GROWTH_FLOOR = 1e-8


def _kinds(annotation) -> set[str]:
    """The kinds a config field's annotation allows: {"int", "float", "str", "bool", "tuple", "None", ...}."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = set()
    for part in text.replace(" ", "").split("|"):
        kinds.add("tuple_of_bool" if part == "tuple[bool,...]" else "tuple_of_float" if part == "tuple[float,...]"
                  else part.split("[")[0])
    return kinds


def _normalised(value, kinds: set[str]):
    """``value`` with numpy scalars turned into Python numbers and, for a tuple field, a list or array into a
    tuple of them, so that a config round-trips through a checkpoint (``weights_only=True``)."""
    value = plain_number(value)
    if kinds & {"tuple", "tuple_of_float", "tuple_of_bool"} and isinstance(value, (list, tuple, np.ndarray)):
        value = tuple(plain_number(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value))
    return value


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has_kind(value, kinds: set[str]) -> bool:
    checks = {
        "None": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": _is_real,
        "str": lambda v: isinstance(v, str),
        "tuple": lambda v: isinstance(v, tuple),
        "tuple_of_float": lambda v: isinstance(v, tuple) and all(_is_real(e) for e in v),
        "tuple_of_bool": lambda v: isinstance(v, tuple) and all(isinstance(e, bool) for e in v),
    }
    return any(checks[k](value) for k in kinds if k in checks) or not (kinds & set(checks))


def _describe(kinds: set[str]) -> str:
    names = {"None": "None", "bool": "True or False", "int": "an integer", "float": "a real number",
             "str": "a string", "tuple": "a tuple", "tuple_of_float": "a tuple of real numbers",
             "tuple_of_bool": "a tuple of bools"}
    return " or ".join(names[k] for k in sorted(kinds, key=lambda k: k == "None") if k in names)


@dataclass(frozen=True)
class SolverConfig:
    """Base of every solver's settings: a seed, a device, a progress-bar switch and named presets.

    Subclasses add their own fields and fill ``PRESETS`` with ``{"quick": {...}, "full": {...}}``: keyword
    overrides of the defaults. ``Config.preset("quick", seed=1)`` builds one; unknown names are refused.
    """

    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    progress: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "full": {}}

    def __post_init__(self):
        self._check_kinds()
        _check_seed(self.seed)
        flag("progress", self.progress)
        choice("dtype", self.dtype, ("float32", "float64"))
        device("device", self.device)  # a device that exists here
        if isinstance(self.device, torch.device):
            object.__setattr__(self, "device", str(self.device))

    def _check_kinds(self) -> None:
        """The input contract for every field, from its annotation: numpy scalars become Python numbers (and
        sequences of a tuple field tuples), then a bool, string or complex number where the annotation says a
        number (or any other wrong kind) raises :class:`~hjbcourse._checks.InputTypeError` naming the field.
        Ranges are each config's own ``__post_init__``."""
        for f in dataclasses.fields(self):
            if f.name == "device":
                continue
            kinds = _kinds(f.type)
            value = _normalised(getattr(self, f.name), kinds)
            if not _has_kind(value, kinds):
                raise InputTypeError(f"{f.name} must be {_describe(kinds)}, got {show(getattr(self, f.name))}")
            object.__setattr__(self, f.name, value)

    def _check_ints(self, *names: str, minimum: int = 1) -> None:
        """Refuse a field among ``names`` that is not a Python int (bool refused) of at least ``minimum``."""
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
                raise ValueError(f"{name} must be {what}, got {v!r}")

    def _check_positive_numbers(self, *names: str, allow_none: bool = False) -> None:
        """Refuse a field among ``names`` that is not a finite number > 0 (or None, when ``allow_none``)."""
        for name in names:
            v = getattr(self, name)
            if v is None and allow_none:
                continue
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {v!r}")

    @classmethod
    def preset(cls, name: str = "quick", **overrides):
        """The preset ``name`` (``"quick"`` for a CPU, ``"full"`` for a GPU) with ``overrides`` applied."""
        if name not in cls.PRESETS:
            raise ValueError(f"preset must be one of {sorted(cls.PRESETS)}, got {name!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - fields
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
        kwargs = dict(cls.PRESETS[name])
        kwargs.update(overrides)
        if "device" in kwargs:
            kwargs["device"] = str(kwargs["device"])
        return cls(**kwargs)

    def replace(self, **changes):
        """A copy with ``changes`` applied (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


class History:
    """Diagnostics, one row per iteration: ``h.log(it, loss=..., err=...)``, then ``h["loss"]`` is a list.

    Missing values in a row are stored as ``nan`` so every column has one entry per logged iteration.
    """

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def log(self, iteration: int, **values) -> dict[str, float]:
        row = {"iteration": float(iteration)}
        for k, v in values.items():
            row[k] = float(v.detach().cpu()) if isinstance(v, torch.Tensor) else float(v)
        self.rows.append(row)
        return row

    @property
    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.keys:
            raise KeyError(f"no diagnostic named {key!r}; recorded: {self.keys}")
        return [r.get(key, math.nan) for r in self.rows]

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.rows)

    def last(self, key: str) -> float:
        return self[key][-1]

    def as_dict(self) -> dict[str, list[float]]:
        return {k: self[k] for k in self.keys}

    def __repr__(self) -> str:
        return f"History({len(self)} rows: {', '.join(self.keys)})"


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite, or grew by orders of magnitude; the message names the iteration and the
    quantity."""


def check_growth(value: float, reference: float, name: str, iteration: int, limit: float = GROWTH_LIMIT) -> None:
    """Raise :class:`DivergenceError` when ``|value|`` exceeds ``limit`` times ``|reference|`` (the quantity's first
    logged value, at least :data:`GROWTH_FLOOR`): a loss that grows by orders of magnitude is a diverging run,
    even while it stays finite."""
    if abs(value) > limit * max(abs(reference), GROWTH_FLOOR):
        raise DivergenceError(
            f"{name} grew to {value:.4g} at iteration {iteration}, more than {limit:.0e} times its first value "
            f"{reference:.4g}: the run diverges; lower the learning rate or the time step, or check the problem's "
            "parameters")


def check_finite(value: torch.Tensor | float, name: str, iteration: int) -> None:
    """Raise :class:`DivergenceError` when ``value`` is NaN or infinite (a diverging run stops here)."""
    v = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    bad = ~torch.isfinite(v.flatten())
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = f" (entry {i} of {v.numel()}, {int(bad.sum())} not finite)" if v.numel() > 1 else ""
        raise DivergenceError(
            f"{name} became {float(v.flatten()[i])}{where} at iteration {iteration}; "
            "lower the learning rate or the time step, or check the problem's parameters"
        )
