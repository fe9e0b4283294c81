"""One shape for every solver: ``Solver(problem_or_sampler, config)``, ``.step()``, ``.solve()``, ``.save(path)``
and ``Solver.load(path, problem)``; one run loop and one checkpoint format for all of them.

A solver subclasses :class:`IterativeSolver` and supplies

- ``Config``: its :class:`~hjbcourse.training.SolverConfig` subclass (presets, seed, device, progress);
- ``_step(it)``: one iteration, returning a dict of diagnostics (the run loop times it, checks the quantities
  named in ``guarded`` for NaN and inf and for growth by orders of magnitude, logs the row in ``history`` and
  asks :meth:`_converged`);
- ``solution()``: what :meth:`solve` returns, an object with ``value(x)``, ``policy(x)`` where meaningful,
  ``history`` and ``seconds``;
- ``_state()`` / ``_load_state(state)``: its networks, optimisers and random streams, for checkpoints.

The budget is ``config.iterations`` steps unless :meth:`_budget` says otherwise; a step may stand for several
gradient steps (the solver's docstring says how many).

The divergence guard: a guarded quantity that is NaN or inf, or whose magnitude exceeds
:data:`~hjbcourse.training.GROWTH_LIMIT` (1e4) times its first logged value, stops the run with a
:class:`~hjbcourse.DivergenceError` naming the iteration.

A checkpoint records the problem it was trained on (:func:`problem_signature`: its type, dimensions, domain and
boxes); :meth:`IterativeSolver.load` refuses another problem, a file that is not a checkpoint of this solver, and
weights that are NaN or infinite, with a ``ValueError`` that names the file.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..checkpoint import config_state, first_nonfinite, load_checkpoint, plain, save_checkpoint
from ..runtime import progress
from ..training import History, SolverConfig, check_finite, check_growth

__all__ = ["IterativeSolver", "restore_generator", "problem_signature"]

#: the attributes of a problem (or sampler) that a checkpoint records and a load must find unchanged: they fix
#: the networks' shapes and input scaling
SIGNATURE = ("state_dim", "action_dim", "noise_dim", "dim", "T", "domain", "action_low", "action_high",
             "state_low", "state_high")
#: the entries every checkpoint of an iterative solver holds
_REQUIRED = ("config", "iteration", "converged", "seconds", "history", "state")


def problem_signature(problem) -> dict[str, Any]:
    """What a checkpoint records of the problem it was trained on: the type's name and, where the problem has
    them, its dimensions, horizon, domain and action and state boxes, as plain numbers and lists."""
    sig: dict[str, Any] = {"type": type(problem).__name__}
    for name in SIGNATURE:
        v = getattr(problem, name, None)
        if isinstance(v, (tuple, list)) and all(isinstance(e, torch.Tensor) for e in v):
            v = [e.tolist() for e in v]
        elif isinstance(v, torch.Tensor):
            v = v.tolist()
        if isinstance(v, (int, float, list)) and not isinstance(v, bool):
            sig[name] = plain(v)
    return sig


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(abs(a), abs(b)))
    return a == b


def _check_signature(path, saved: dict | None, now: dict) -> None:
    """Refuse to load a checkpoint trained on another problem (old checkpoints record none: nothing to check)."""
    if not isinstance(saved, dict):
        return
    for key in ("type",) + SIGNATURE:
        if key in saved and key in now and not _same(saved[key], now[key]):
            raise ValueError(f"{path} was saved for a problem with {key}={saved[key]!r}, but this one has "
                             f"{key}={now[key]!r}: the networks' shapes and input scaling come from the problem, so "
                             f"load it into the problem it was trained on (or train afresh)")


def restore_generator(g: torch.Generator, state: torch.Tensor, saved_on: str, reseed: int) -> None:
    """Set ``g`` to a saved state when it was saved on the same kind of device; a generator's state cannot move
    between a CPU and a GPU, so otherwise ``g`` is reseeded with ``reseed`` (the run continues, other numbers)."""
    if saved_on == g.device.type:
        g.set_state(state)
    else:
        g.manual_seed(int(reseed))


class IterativeSolver:
    """Base of the iterative solvers: state (``iteration``, ``history``, ``converged``, ``seconds``), the run
    loop (:meth:`step`, :meth:`solve`) and checkpoints (:meth:`save`, :meth:`load`)."""

    Config: ClassVar[type[SolverConfig]] = SolverConfig
    #: diagnostics of a row that must be finite: a NaN or inf there stops the run with a DivergenceError
    guarded: ClassVar[tuple[str, ...]] = ()
    #: diagnostics shown on the progress bar, when present
    shown: ClassVar[tuple[str, ...]] = ()

    def _init_run(self, config: SolverConfig | None) -> SolverConfig:
        """Check ``config`` (default: the quick preset) and set the run's bookkeeping; subclasses call this first."""
        config = self.Config.preset("quick") if config is None else config
        if not isinstance(config, self.Config):
            raise ValueError(f"config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.history = History()
        self.iteration = 0
        self.converged = False
        self.seconds = 0.0
        self._growth_refs: dict[str, float] = {}
        return config

    # -- what a solver supplies --------------------------------------------------------------------------
    def _step(self, it: int) -> dict[str, float]:
        raise NotImplementedError

    def solution(self):
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _converged(self, row: dict[str, float], it: int) -> bool:
        return False

    def _budget(self) -> int:
        return int(self.config.iterations)

    def _signature(self) -> dict[str, Any]:
        """What a checkpoint records of the problem (or sampler) this solver was built on."""
        return problem_signature(getattr(self, "problem", None) or getattr(self, "env", None))

    @property
    def _description(self) -> str:
        name = getattr(getattr(self, "problem", None), "name", None)
        return type(self).__name__ + (f" ({name})" if isinstance(name, str) else "")

    # -- the run loop ------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One iteration: returns the row of diagnostics it logged in ``history``."""
        it = self.iteration + 1
        t0 = time.perf_counter()
        row = dict(self._step(it))
        label = row.pop("iteration", it)
        self.iteration = it
        self._guard(row, int(label))
        self.seconds += time.perf_counter() - t0
        row["seconds"] = self.seconds
        self.converged = bool(self._converged(row, it))
        return self.history.log(label, **row)

    def _guard(self, row: dict[str, float], it: int) -> None:
        """The divergence guard on the quantities named in ``guarded``: NaN or inf, or a magnitude beyond
        ``GROWTH_LIMIT`` times the quantity's first logged value (read from ``history``, so a resumed run keeps
        the reference of the uninterrupted one), stops the run with a DivergenceError naming the iteration."""
        for key in self.guarded:
            if key not in row:
                continue
            check_finite(row[key], key, it)
            value = float(row[key].detach()) if isinstance(row[key], torch.Tensor) else float(row[key])
            refs = self.__dict__.setdefault("_growth_refs", {})
            if key not in refs:
                earlier = [r[key] for r in self.history.rows if key in r and math.isfinite(r[key]) and r[key] != 0]
                if not earlier:                  # this is the first value: the reference from now on
                    if value != 0:
                        refs[key] = value
                    continue
                refs[key] = earlier[0]
            check_growth(value, refs[key], key, it)

    def solve(self):
        """Step until the stopping rule holds or the budget is spent (a progress bar when ``config.progress``);
        after :meth:`load`, the run continues where the checkpoint stopped."""
        todo = max(0, self._budget() - self.iteration)
        bar = progress(total=todo, desc=self._description, enabled=self.config.progress and todo > 0)
        try:
            while self.iteration < self._budget() and not self.converged:
                row = self.step()
                if hasattr(bar, "update"):
                    bar.update(1)
                    shown = {k: f"{row[k]:.2e}" for k in self.shown if k in row and math.isfinite(row[k])}
                    if shown:
                        bar.set_postfix(shown, refresh=False)
        finally:
            if hasattr(bar, "close"):
                bar.close()
        return self.solution()

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the solver's state, config, history, counters and the problem's signature to ``path``
        (atomically: an interrupted save leaves the previous file intact)."""
        return save_checkpoint(path, solver=type(self).__name__, config=config_state(self.config),
                               iteration=self.iteration, converged=self.converged, seconds=self.seconds,
                               history=self.history.rows, problem=self._signature(), state=self._state())

    @classmethod
    def load(cls, path: str | Path, problem, config: SolverConfig | None = None, **options):
        """A solver restored from :meth:`save` (loaded with ``weights_only=True``); ``config`` overrides the saved
        one (a larger ``iterations`` to continue, another ``device``); ``options`` go to the constructor (what a
        checkpoint cannot hold, such as a callable). On the same kind of device a resumed run repeats an
        uninterrupted one.

        Refused with a ``ValueError`` naming the file: a file that is not a checkpoint (truncated, garbage), a
        checkpoint of another solver, one saved for another problem (type, dimensions, domain or boxes differ:
        the networks' shapes and input scaling come from them), and NaN or infinite weights."""
        state = load_checkpoint(path, map_location="cpu")
        missing = [k for k in _REQUIRED if k not in state]
        if missing:
            raise ValueError(f"{path} is not a checkpoint of an iterative solver: it lacks {missing}")
        saved = state.get("solver")
        if saved is not None and saved != cls.__name__:
            raise ValueError(f"{path} is a checkpoint of {saved}, not of {cls.__name__}")
        if config is None:
            try:
                config = cls.Config(**state["config"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path} holds a config that {cls.Config.__name__} refuses: {e}") from None
        solver = cls(problem, config, **options)
        _check_signature(path, state.get("problem"), solver._signature())
        bad = first_nonfinite(state["state"], solver._state())
        if bad is not None:
            raise ValueError(f"{path} holds NaN or infinite values in {bad}: the run it saved had diverged (or the "
                             f"file was damaged); load an earlier checkpoint")
        try:
            solver.history.rows = [dict(r) for r in state["history"]]
            solver.iteration = int(state["iteration"])
            solver.converged = bool(state["converged"])
            solver.seconds = float(state["seconds"])
            solver._load_state(state["state"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise ValueError(f"{path} does not fit this {cls.__name__} (config and problem as given): "
                             f"{type(e).__name__}: {e}") from None
        return solver
