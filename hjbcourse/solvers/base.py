"""One shape for every solver: ``Solver(problem_or_sampler, config)``, ``.step()``, ``.solve()``, ``.save(path)``
and ``Solver.load(path, problem)``; one run loop and one checkpoint format for all of them.

A solver subclasses :class:`IterativeSolver` and supplies

- ``Config``: its :class:`~hjbcourse.training.SolverConfig` subclass (presets, seed, device, progress);
- ``_step(it)``: one iteration, returning a dict of diagnostics (the run loop times it, checks the quantities
  named in ``guarded`` for NaN and inf, logs the row in ``history`` and asks :meth:`_converged`);
- ``solution()``: what :meth:`solve` returns, an object with ``value(x)``, ``policy(x)`` where meaningful,
  ``history`` and ``seconds``;
- ``_state()`` / ``_load_state(state)``: its networks, optimisers and random streams, for checkpoints.

The budget is ``config.iterations`` steps unless :meth:`_budget` says otherwise; a step may stand for several
gradient steps (the solver's docstring says how many).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..checkpoint import config_state, load_checkpoint, save_checkpoint
from ..runtime import progress
from ..training import History, SolverConfig, check_finite

__all__ = ["IterativeSolver", "restore_generator"]


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
        for key in self.guarded:
            if key in row:
                check_finite(row[key], key, it)
        self.seconds += time.perf_counter() - t0
        row["seconds"] = self.seconds
        self.converged = bool(self._converged(row, it))
        return self.history.log(label, **row)

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
        """Write the solver's state, config, history and counters to ``path`` (atomically)."""
        return save_checkpoint(path, solver=type(self).__name__, config=config_state(self.config),
                               iteration=self.iteration, converged=self.converged, seconds=self.seconds,
                               history=self.history.rows, state=self._state())

    @classmethod
    def load(cls, path: str | Path, problem, config: SolverConfig | None = None, **options):
        """A solver restored from :meth:`save` (loaded with ``weights_only=True``); ``config`` overrides the saved
        one (a larger ``iterations`` to continue, another ``device``); ``options`` go to the constructor (what a
        checkpoint cannot hold, such as a callable). On the same kind of device a resumed run repeats an
        uninterrupted one."""
        state = load_checkpoint(path, map_location="cpu")
        saved = state.get("solver")
        if saved is not None and saved != cls.__name__:
            raise ValueError(f"{path} is a checkpoint of {saved}, not of {cls.__name__}")
        if config is None:
            config = cls.Config(**state["config"])
        solver = cls(problem, config, **options)
        solver.history.rows = [dict(r) for r in state["history"]]
        solver.iteration = int(state["iteration"])
        solver.converged = bool(state["converged"])
        solver.seconds = float(state["seconds"])
        solver._load_state(state["state"])
        return solver
