"""Time-to-accuracy of neural policy iteration on the chapters' problems (quick preset, CPU).

    python benchmarks/policy_iteration.py [--problems lqr merton lqr10] [--threads 1] [--preset quick]

For each problem (``hjb.course.chapter_problem``) the solver runs iteration by iteration with
``hjb.course.chapter_config(problem, preset)``; after each iteration the errors against the closed form are read
from its history (computed on the solver's fixed evaluation states: an even grid of the domain in one
dimension, 2048 sampled states in ten), and the table
reports the first iteration (and the solver's cumulative wall time) at which every target holds, and the
errors at the end of the run. Times are wall-clock and this process's CPU time (on a shared machine the
wall time overstates the cost). How P and K are read: least-squares fits of V ~ -1/2 x'Px + b'x - c and
a ~ -Kx + k0 over the evaluation states (``hjb.fit_quadratic_form``, ``hjb.fit_linear_gain``); errors are
relative (Frobenius for matrices, L2 over the states for functions).

What was tried while choosing the chapters' settings, and what it gave: ``benchmarks/README.md``.

Targets (issue "Neural policy iteration"): scalar LQR P, K within 0.5% and V within 1% in 60 s; Merton pi
within 1% of 0.625, k within 2% of 0.0478125 and V within 2% on [0.5, 2] in 90 s; 10-D coupled LQR P and K
within 2% in 5 min.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import hjbcourse as hjb

TARGETS = {
    "lqr": ({"P_rel": 0.005, "K_rel": 0.005, "value_rel_l2": 0.01}, 60.0),
    "merton": ({"pi_rel": 0.01, "k_rel": 0.02, "value_rel_l2": 0.02}, 90.0),
    "lqr10": ({"P_rel": 0.02, "K_rel": 0.02}, 300.0),
}


def problem_of(name: str):
    return hjb.course.chapter_problem(name)


# the chapters cut the 10-D run to a few iterations to fit their time budget; the benchmark gives it a budget
# large enough to reach its target (the stopping rule still ends it earlier when the value has settled)
BUDGETS = {"lqr10": 35}


def run(name: str, preset: str, seed: int, max_iterations: int | None):
    targets, limit = TARGETS[name]
    problem = problem_of(name)
    over = {"seed": seed, "progress": False}
    if max_iterations is not None:
        over["iterations"] = max_iterations
    elif name in BUDGETS:
        over["iterations"] = BUDGETS[name]
    cfg = hjb.course.chapter_config(name, preset, **over)
    solver = hjb.PolicyIteration(problem, cfg)
    hit = None
    t0, c0 = time.perf_counter(), time.process_time()
    while solver.iteration < cfg.iterations and not solver.converged:
        row = solver.step()
        if hit is None and all(row[k] <= v for k, v in targets.items()):
            hit = (solver.iteration, time.perf_counter() - t0, time.process_time() - c0)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    last = solver.history.rows[-1]
    return {"targets": targets, "limit": limit, "hit": hit, "total": total, "cpu": cpu, "iterations": solver.iteration,
            "converged": solver.converged, "last": {k: last[k] for k in targets}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["lqr", "merton", "lqr10"], choices=sorted(TARGETS))
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=None, help="override the budget of policy iterations")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"Neural policy iteration, preset {args.preset!r}, {args.threads} CPU threads, seed {args.seed}, "
          f"torch {torch.__version__}")
    print()
    print("| problem | targets | first iteration meeting all | time to accuracy, wall s (CPU s) | limit (s) | met | "
          "iterations run (stopped by rule) | run time, wall s (CPU s) | errors at the end |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.problems:  # one row as each problem finishes
        r = run(name, args.preset, args.seed, args.iterations)
        tg = ", ".join(f"{k} <= {v:g}" for k, v in r["targets"].items())
        it, tt, tc = r["hit"] if r["hit"] else ("never", math.inf, math.inf)
        met = "yes" if r["hit"] and tt <= r["limit"] else "NO"
        ends = ", ".join(f"{k} {v:.2e}" for k, v in r["last"].items())
        print(f"| {name} | {tg} | {it} | {tt:.1f} ({tc:.1f}) | {r['limit']:.0f} | {met} | {r['iterations']} "
              f"({'yes' if r['converged'] else 'no'}) | {r['total']:.1f} ({r['cpu']:.1f}) | {ends} |", flush=True)
    print()
    print("wall: elapsed time; CPU: this process's CPU time (equal to wall on an idle machine with one thread).")


if __name__ == "__main__":
    main()
