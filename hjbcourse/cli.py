"""The command line: ``python -m hjbcourse solve lqr|lqr10|merton [--preset full] [--device cuda] [--out DIR]``.

``solve`` runs neural policy iteration on a chapter's problem with the chapter's parameters (both from
:mod:`hjbcourse.course`), prints the numbers the chapter quotes (errors against the closed form, the learned
constants), and writes to ``--out`` a ``summary.json``, the figures (PNG) and a checkpoint of the networks.

Bad flags and environment values (``HJB_PRESET``, ``HJB_THREADS``) are refused before any work, with the usage
line and exit status 2; ``--out`` is checked (and created) before the solve. Every output is written to a
temporary file and moved into place, ``summary.json`` last: an interrupted run leaves no summary without its
figures and checkpoint. ``summary.json`` is strict JSON (a missing number is ``null``, never a bare NaN).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ._checks import MAX_SEED, device as check_device, env_choice, env_int
from .checkpoint import save_checkpoint, write_atomically
from .course import CHAPTER_PROBLEMS, chapter_config, chapter_problem

__all__ = ["main", "UsageError"]


class UsageError(SystemExit):
    """Exit status 2 after the usage line and the error message (printed on stderr); ``str()`` is the message."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _int_arg(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < minimum or (maximum is not None and v > maximum):
            bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text}")
        return v
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hjbcourse", description="The HJB course's solvers from the command line.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve a chapter's problem by neural policy iteration and compare with the closed form")
    s.add_argument("problem", choices=CHAPTER_PROBLEMS, help="lqr: scalar LQR; lqr10: 10-D coupled LQR; merton: Merton's problem")
    s.add_argument("--preset", default=None, help="'quick' (CPU) or 'full' (GPU); default: full on a GPU, quick otherwise")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--seed", type=_int_arg(0, MAX_SEED), default=0, help="a non-negative integer")
    s.add_argument("--out", default=None, help="directory for summary.json, figures and the checkpoint")
    s.add_argument("--policy", choices=("actor", "greedy"), default="actor", help="policy network or closed-form greedy policy")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.add_argument("--iterations", type=_int_arg(1), default=None, help=argparse.SUPPRESS)  # tests: a tiny budget
    p.solve_parser = s
    return p


def _validate(args) -> tuple:
    """(device, preset, out) after checking every flag and environment value; a ValueError names the culprit."""
    from .runtime import default_device
    from .solvers.policy_iteration import PolicyIterationConfig

    env_choice("HJB_PRESET", ("quick", "full"))
    env_int("HJB_THREADS")
    try:
        device = check_device("--device", args.device) if args.device else default_device()
    except ValueError as e:
        raise ValueError(str(e).replace("device='cpu'", "--device cpu")) from None
    preset = args.preset or env_choice("HJB_PRESET", ("quick", "full")) or ("full" if device.type == "cuda" else "quick")
    if preset not in PolicyIterationConfig.PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PolicyIterationConfig.PRESETS)}, got {preset!r}")
    return device, preset, _output_directory(args.out)


def _output_directory(out: str | None) -> Path | None:
    """``--out`` as a directory that exists (created here) and can be written to, before any work."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out!r} names an existing file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out!r} cannot be created: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r} is not writable")
    return path


def _strict(value):
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _solve(args, device, preset: str, out: Path | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")  # the command line writes files; it never opens windows
    import matplotlib.pyplot as plt
    import torch

    from . import plotting
    from .runtime import seed_everything
    from .solvers.policy_iteration import PolicyIteration

    seed_everything(args.seed)
    problem = chapter_problem(args.problem)
    overrides = dict(seed=args.seed, device=str(device), policy=args.policy, progress=not args.no_progress)
    if args.iterations is not None:
        overrides.update(iterations=args.iterations, min_iterations=min(args.iterations, 1))
    cfg = chapter_config(args.problem, preset, **overrides)
    t0 = time.perf_counter()
    sol = PolicyIteration(problem, cfg).solve()
    seconds = time.perf_counter() - t0
    errors = sol.errors()
    summary = {"problem": args.problem, "preset": preset, "device": str(device), "seed": args.seed,
               "policy": args.policy, "iterations": sol.iterations, "converged": sol.converged, "seconds": seconds,
               "errors": errors, "history": sol.history.as_dict()}
    ex = problem.exact()
    if args.problem.startswith("lqr"):
        from .diagnostics import fit_linear_gain, fit_quadratic_form
        from .solvers.policy_iteration import evaluation_states

        x = evaluation_states(problem, cfg.n_eval, dtype=torch.float64)
        P, _, c = fit_quadratic_form(sol.value, x)
        K, _ = fit_linear_gain(sol.policy, x)
        summary.update(P=P.tolist(), K=K.tolist(), c=c, P_exact=ex.P.tolist(), K_exact=ex.K.tolist(), c_exact=ex.c)
    else:
        summary.update(pi_exact=ex.pi, k_exact=ex.k, pi_mean=errors["pi_mean"], k_mean=errors["k_mean"])
    print(f"{args.problem}: {sol.iterations} iterations in {seconds:.1f} s (preset {preset!r}, {device})")
    print("| quantity | value |\n|---|---|")
    for k, v in errors.items():
        print(f"| {k} | {v:.4g} |")
    if out is not None:
        figs = {"history": plotting.plot_pi_history(sol.history)}
        if problem.state_dim == 1:
            labels = ["$\\pi$", "$k$"] if args.problem == "merton" else None
            figs["value_policy"] = plotting.plot_value_policy(problem, sol, action_labels=labels)
        else:
            figs["riccati"] = plotting.plot_matrix_comparison(torch.tensor(summary["P"]), ex.P)
        for name, fig in figs.items():
            write_atomically(out / f"{name}.png", lambda f, fig=fig: fig.savefig(f, format="png", dpi=110))
            plt.close(fig)
        solver_ckpt = out / "checkpoint.pt"
        save_checkpoint(solver_ckpt, value_net=sol.value_net.state_dict(),
                        policy_net=None if sol.policy_net is None else sol.policy_net.state_dict())
        text = json.dumps(_strict(summary), indent=2, allow_nan=False)
        write_atomically(out / "summary.json", lambda f: f.write(text.encode()))   # last: the run is complete
        print(f"wrote {out / 'summary.json'}, {len(figs)} figures and {solver_ckpt.name}")
    return summary


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); bad flags or environment values print the
    usage line and the error on stderr and raise :class:`UsageError` (exit status 2) before any work."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "solve":
        sub = parser.solve_parser
        try:
            checked = _validate(args)
        except ValueError as e:
            sub.print_usage(sys.stderr)
            print(f"{sub.prog}: error: {e}", file=sys.stderr)
            raise UsageError(str(e)) from None
        _solve(args, *checked)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
