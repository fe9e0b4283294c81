"""The command line: ``python -m hjbcourse solve lqr|lqr10|merton [--preset full] [--device cuda] [--out DIR]``.

``solve`` runs neural policy iteration on a chapter's problem with the chapter's parameters (both from
:mod:`hjbcourse.course`), prints the numbers the chapter quotes (errors against the closed form, the learned
constants), and writes to ``--out`` a ``summary.json``, the figures (PNG) and a checkpoint of the networks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .course import CHAPTER_PROBLEMS, chapter_config, chapter_problem

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hjbcourse", description="The HJB course's solvers from the command line.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve a chapter's problem by neural policy iteration and compare with the closed form")
    s.add_argument("problem", choices=CHAPTER_PROBLEMS, help="lqr: scalar LQR; lqr10: 10-D coupled LQR; merton: Merton's problem")
    s.add_argument("--preset", default=None, help="'quick' (CPU) or 'full' (GPU); default: full on a GPU, quick otherwise")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="directory for summary.json, figures and the checkpoint")
    s.add_argument("--policy", choices=("actor", "greedy"), default="actor", help="policy network or closed-form greedy policy")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)  # tests: a tiny budget
    return p


def _solve(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")  # the command line writes files; it never opens windows
    import matplotlib.pyplot as plt
    import torch

    from . import plotting
    from .runtime import default_device, default_preset, seed_everything
    from .solvers.policy_iteration import PolicyIteration, PolicyIterationConfig

    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but CUDA is not available")
    preset = args.preset or default_preset(device)
    if preset not in PolicyIterationConfig.PRESETS:
        raise SystemExit(f"error: --preset must be one of {sorted(PolicyIterationConfig.PRESETS)}, got {preset!r}")
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
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        figs = {"history": plotting.plot_pi_history(sol.history)}
        if problem.state_dim == 1:
            labels = ["$\\pi$", "$k$"] if args.problem == "merton" else None
            figs["value_policy"] = plotting.plot_value_policy(problem, sol, action_labels=labels)
        else:
            figs["riccati"] = plotting.plot_matrix_comparison(torch.tensor(summary["P"]), ex.P)
        for name, fig in figs.items():
            fig.savefig(out / f"{name}.png", dpi=110)
            plt.close(fig)
        solver_ckpt = out / "checkpoint.pt"
        from .checkpoint import save_checkpoint

        save_checkpoint(solver_ckpt, value_net=sol.value_net.state_dict(),
                        policy_net=None if sol.policy_net is None else sol.policy_net.state_dict())
        print(f"wrote {out / 'summary.json'}, {len(figs)} figures and {solver_ckpt.name}")
    return summary


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "solve":
        _solve(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
