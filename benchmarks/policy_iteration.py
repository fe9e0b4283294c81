"""Time-to-accuracy of neural policy iteration on the chapters' problems, and its robustness on the suite.

    python benchmarks/policy_iteration.py [--problems lqr merton lqr10] [--threads 1] [--preset quick]
    python benchmarks/policy_iteration.py --suite [--families lqr merton] [--names lqr0-1d-1a-stable ...]
        [--seeds 0 1 2] [--suite-seed 0] [--set key=value ...] [--json rows.json]
    python benchmarks/policy_iteration.py --frozen 8 [--families merton] [--names ...] [--seeds 0] [--set ...]

``--suite`` runs every problem of ``hjb.suite.problem_suite(suite_seed)`` (or the subset named) with the
preset and no per-problem setting, and prints per problem and seed: value and policy relative L2 errors
against the reference (closed form, or the finite-difference solution) over the problem's evaluation states,
the closed-form constants' errors (P, K; pi, k), iterations, wall and CPU time, whether the run diverged
(raised) and whether it ended unsettled (a ``PolicyIterationWarning``); then the share of runs within the targets (``SUITE_TARGETS``; Merton adds pi and k within 0.5%) and
within the time limits (``TIME_LIMITS`` by dimension). ``--set`` overrides config fields (for ablations).
``--frozen N`` runs N evaluations of each suite problem's optimal policy alone (:func:`frozen_evaluation`) and
prints the value's error after each: how close the evaluation itself comes to V*.

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
import warnings

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
    while solver.iteration < solver.settings.iterations and not solver.converged:
        row = solver.step()
        if hit is None and all(row[k] <= v for k, v in targets.items()):
            hit = (solver.iteration, time.perf_counter() - t0, time.process_time() - c0)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    last = solver.history.rows[-1]
    return {"targets": targets, "limit": limit, "hit": hit, "total": total, "cpu": cpu, "iterations": solver.iteration,
            "converged": solver.converged, "last": {k: last[k] for k in targets}}


SUITE_TARGETS = {"value_rel_l2": 0.01, "policy_rel_l2": 0.02}
MERTON_TARGETS = {"pi_rel": 0.005, "k_rel": 0.005}
TIME_LIMITS = {1: 120.0, 2: 120.0, 5: 240.0, 10: 360.0}


def _parse_sets(pairs):
    """``key=value`` strings -> config overrides (values read as Python literals where they parse)."""
    import ast

    out = {}
    for pair in pairs or ():
        key, _, text = pair.partition("=")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def run_suite_entry(entry, preset: str, seed: int, overrides: dict) -> dict:
    """One suite problem with one seed: the errors against its reference, the time, and whether it diverged."""
    cfg = hjb.PolicyIterationConfig.preset(preset, seed=seed, progress=False, **overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    row = {"name": entry.name, "family": entry.family, "d": entry.dim, "k": entry.problem.action_dim, "seed": seed}
    try:
        solver = hjb.PolicyIteration(entry.problem, cfg)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", hjb.PolicyIterationWarning)
            sol = solver.solve()
        row.update(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)
        row["warned"] = any(issubclass(w.category, hjb.PolicyIterationWarning) for w in caught)
        row.update(entry.score(sol))   # the reference (a finite-difference solve) is not timed
        row.update(iterations=sol.iterations, diverged=False, error="")
    except (hjb.DivergenceError, ValueError, RuntimeError) as e:  # reported, never hidden
        row.update(iterations=getattr(locals().get("solver"), "iteration", 0), diverged=True,
                   error=f"{type(e).__name__}: {str(e).splitlines()[0][:90]}")
        row.setdefault("wall", time.perf_counter() - t0)
        row.setdefault("cpu", time.process_time() - c0)
    targets = dict(SUITE_TARGETS, **(MERTON_TARGETS if entry.family == "merton" else {}))
    row["within"] = (not row["diverged"]) and all(row.get(k, math.inf) <= v for k, v in targets.items())
    row["in_time"] = row["wall"] <= TIME_LIMITS.get(entry.dim, 360.0)
    return row


def frozen_evaluation(entry, preset: str, seed: int, iterations: int, overrides: dict) -> list[float]:
    """Policy evaluation alone: the solver's iterations with every rollout driven by the reference's optimal
    policy instead of the current one (the improvement still runs, unused), so the value should converge to
    V*. Returns the value's relative L2 error against the reference on the entry's states after each
    iteration: the floor that the evaluation (fit, bootstrap, training states) sets for the whole method.
    Where the reference's policy is not differentiable by autograd (the finite-difference references), the
    pathwise gradient labels would miss its feedback, so they are turned off unless ``overrides`` sets them."""
    ref = entry.reference()
    probe = entry.states(4).requires_grad_(True)
    if not ref.policy(probe).requires_grad:
        overrides = {"gradient_labels": False, **overrides}
    cfg = hjb.PolicyIterationConfig.preset(preset, seed=seed, progress=False, **overrides)
    solver = hjb.PolicyIteration(entry.problem, cfg)
    solver._policy = lambda fitted: ref.policy        # a diagnostic: the solver's rollout policy, replaced
    x = entry.states()
    v_star = ref.value(x)
    errors = []
    for _ in range(iterations):
        solver.step()
        with torch.no_grad():
            v = solver.value_net(x.to(cfg.torch_dtype)).double()
        errors.append(hjb.relative_l2(v, v_star))
    return errors


def main_frozen(args) -> None:
    overrides = _parse_sets(args.set)
    entries = hjb.suite.problem_suite(args.suite_seed, families=args.families, names=args.names)
    n = args.frozen
    print(f"Policy evaluation of the optimal policy alone (suite seed {args.suite_seed}), preset {args.preset!r}, "
          f"{args.threads} CPU thread(s); value relative L2 % after each iteration")
    print()
    print("| problem | seed | " + " | ".join(str(i + 1) for i in range(n)) + " |")
    print("|---|---|" + "---|" * n, flush=True)
    for entry in entries:
        for seed in args.seeds:
            try:
                cells = [f"{100 * e:.2f}" for e in frozen_evaluation(entry, args.preset, seed, n, overrides)]
            except (hjb.DivergenceError, ValueError, RuntimeError) as e:   # reported, never hidden
                cells = [f"{type(e).__name__}"] + ["-"] * (n - 1)
            print(f"| {entry.name} | {seed} | " + " | ".join(cells) + " |", flush=True)


def _constants(row) -> str:
    keys = [k for k in ("P_rel", "K_rel", "pi_rel", "k_rel") if k in row]
    return ", ".join(f"{k.split('_')[0]} {row[k]:.1e}" for k in keys) or "-"


def print_suite_row(r) -> None:
    pct = lambda k: f"{100 * r[k]:.2f}" if k in r else "-"
    print(f"| {r['name']} | {r['d']} | {r['k']} | {r['seed']} | {pct('value_rel_l2')} | {pct('policy_rel_l2')} | "
          f"{_constants(r)} | {r['iterations']} | {r['wall']:.0f} | {r['cpu']:.0f} | "
          f"{'YES ' + r['error'] if r['diverged'] else 'no'} | {'yes' if r.get('warned') else 'no'} | "
          f"{'yes' if r['within'] else 'NO'} |", flush=True)


def main_suite(args) -> list[dict]:
    entries = hjb.suite.problem_suite(args.suite_seed, families=args.families, names=args.names)
    overrides = _parse_sets(args.set)
    print(f"Suite (seed {args.suite_seed}), preset {args.preset!r}{', overrides ' + str(overrides) if overrides else ''}, "
          f"{args.threads} CPU thread(s), torch {torch.__version__}")
    print()
    print("| problem | d | k | seed | value rel L2 % | policy rel L2 % | constants (rel) | iterations | wall s | CPU s | "
          "diverged | warned | within targets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for entry in entries:
        for seed in args.seeds:
            rows.append(run_suite_entry(entry, args.preset, seed, overrides))
            print_suite_row(rows[-1])
    n = len(rows)
    print()
    print(f"within targets (value <= 1%, policy <= 2%; Merton pi, k <= 0.5%): {sum(r['within'] for r in rows)}/{n}; "
          f"diverged: {sum(r['diverged'] for r in rows)}/{n}; warned (PolicyIterationWarning): "
          f"{sum(bool(r.get('warned')) for r in rows)}/{n}, of which outside the targets: "
          f"{sum(bool(r.get('warned')) and not r['within'] for r in rows)}; within the time limit "
          f"({', '.join(f'd={d}: {t:.0f} s' for d, t in TIME_LIMITS.items())}): {sum(r['in_time'] for r in rows)}/{n}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="store_true", help="run the problem suite (hjb.suite) instead")
    ap.add_argument("--frozen", type=int, default=0, metavar="N",
                    help="evaluate the suite's optimal policies alone for N iterations (the evaluation's floor)")
    ap.add_argument("--families", nargs="+", default=None)
    ap.add_argument("--names", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--suite-seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=None, help="config overrides key=value (suite only)")
    ap.add_argument("--json", default=None, help="write the suite's rows to this file")
    ap.add_argument("--problems", nargs="+", default=["lqr", "merton", "lqr10"], choices=sorted(TARGETS))
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=None, help="override the budget of policy iterations")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.frozen:
        main_frozen(args)
        return
    if args.suite:
        rows = main_suite(args)
        if args.json:
            import json

            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
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
