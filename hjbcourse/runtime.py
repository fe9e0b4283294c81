"""Where and how a computation runs: device choice, seeding, presets and progress bars.

Every chapter starts with :func:`setup`, so a reader's laptop (CPU, ``"quick"`` preset) and a GPU runtime
(``"full"`` preset) run the same code path, only at different sizes.
"""
from __future__ import annotations

import contextlib
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import _check_seed, device as _device, env_choice, env_int, integer

__all__ = ["default_device", "default_preset", "seed_everything", "make_generator", "progress", "setup", "Setup"]


def default_device() -> torch.device:
    """The device a chapter runs on: ``cuda`` when one is available, otherwise ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_preset(device: torch.device | str | None = None) -> str:
    """``"full"`` on a GPU, ``"quick"`` on a CPU; the environment variable ``HJB_PRESET`` overrides both."""
    forced = env_choice("HJB_PRESET", ("quick", "full"))
    if forced:
        return forced
    device = _device("device", device) if device is not None else default_device()
    return "full" if device.type == "cuda" else "quick"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with one integer."""
    _check_seed(seed)
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))




def make_generator(seed_or_generator: int | torch.Generator | None, device: torch.device | str = "cpu",
                   name: str = "seed") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` from a seed, or the generator itself when one is passed.

    ``None`` draws a seed from torch's global generator, so :func:`seed_everything` still makes the run
    reproducible. A generator on another device than ``device`` (say a CPU generator for data on a GPU) seeds
    a new one on ``device`` with one draw, so the caller's generator still decides the numbers. A bad seed is
    refused with an error naming ``name`` (the caller's parameter: ``seed``, ``generator``).
    """
    device = _device("device", device)
    if isinstance(seed_or_generator, torch.Generator):
        if seed_or_generator.device.type == device.type:
            return seed_or_generator
        seed_or_generator = int(torch.randint(0, 2**62, (1,), generator=seed_or_generator,
                                              device=seed_or_generator.device).item())
    elif seed_or_generator is None:
        seed_or_generator = int(torch.randint(0, 2**62, (1,)).item())
    else:
        _check_seed(seed_or_generator, name)
    g = torch.Generator(device=device)
    g.manual_seed(int(seed_or_generator))
    return g


def progress(iterable=None, *, total: int | None = None, desc: str | None = None, enabled: bool = True, **kwargs):
    """A tqdm progress bar (plain text, on stderr), or the bare iterable when ``enabled`` is false."""
    if not enabled:
        return iterable if iterable is not None else range(total or 0)
    from tqdm.std import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, mininterval=1.0, dynamic_ncols=True, **kwargs)


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` decided: the device, the preset and the seed."""

    device: torch.device
    preset: str
    seed: int

    def __str__(self) -> str:
        return (f"hjbcourse: device={self.device.type}, preset={self.preset!r}, seed={self.seed}, "
                f"threads={torch.get_num_threads()}, torch {torch.__version__}")


def setup(seed: int = 0, device: str | torch.device | None = None, threads: int | None = None) -> Setup:
    """Seed everything, pick the device (cuda when available) and the matching preset; print and return them.

    ``device`` must exist on this machine (``"cuda"`` without a GPU is refused with a ``ValueError``, not run
    on the CPU under the GPU's preset). On a CPU, torch runs on ``threads`` threads (default: the environment
    variable ``HJB_THREADS``, else 1).
    The course's networks are small: measured on a 2-core machine, a second thread made the policy-iteration
    solve cost 4x more CPU time (107 s against 24 s) and slowed it down, so one thread is the default.
    """
    _check_seed(seed)
    device = _device("device", device) if device is not None else default_device()
    n = integer("threads", threads, minimum=1) if threads is not None else (env_int("HJB_THREADS") or 1)
    preset = default_preset(device)
    if device.type == "cpu":
        torch.set_num_threads(n)
    seed_everything(seed)
    s = Setup(device=device, preset=preset, seed=int(seed))
    print(s)
    return s


@contextlib.contextmanager
def _forked_rng(seed: int, device):
    """Run the block with torch's global generators seeded with ``seed``: the CPU one and, for a cuda
    ``device``, that device's. The caller's generator states (CPU and cuda) are restored afterwards
    (:func:`torch.random.fork_rng`), so a solver's seed gives the same numbers without reseeding the user's RNG.

    Shared by the solvers that initialise networks from the global generator.
    """
    device = torch.device(device)
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(int(seed))
        for i in cuda:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run the block with ``n`` intra-op CPU threads (``None``: leave torch's setting), restoring it after.

    For small tensors (a few thousand points in a few dimensions, an MLP of width 128) thread start-up and
    contention on a CPU cost more than they save, by an order of magnitude on a busy machine.
    """
    old = torch.get_num_threads()
    if n is None or int(n) == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
