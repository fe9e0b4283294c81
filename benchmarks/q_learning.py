"""Model-free continuous-time learning: accuracy and time, quick preset (book: chapter "Continuous-time q-learning").

Prints three markdown tables:
1. the scalar LQR: learned feedback gain against K = 2.659750769, transitions used, wall time;
2. Merton: the learned fractions pi and k against 0.625 and 0.0478125;
3. the dt sweep on the scalar LQR at a fixed number of transitions: the simple TD actor-critic against
   Jia & Zhou's q-learning, with the held-action optimum K_dt (the best any learner fed steps of dt can do).

With ``--suite`` it prints instead, for the scalar and 2-D LQRs and the Merton problems of
``hjb.suite.problem_suite(0)``, the default configuration's errors (no functional form given: J and the mean
are networks), transitions, the solver's own consistency check (the move of the policy mean the last
transitions ask for, to within the noise of that estimate, and whether it warned), wall and CPU time, and the share within issue 17's targets (scalar gain 3%
beyond the held-action gain K_dt, 2-D gain 5% in relative Frobenius norm, Merton pi 3% and k 5%).

With ``--dt-sweep`` it prints the dt sweep of chapter 7 on the scalar LQR with the default networks instead
(issue 17, item 3): both methods at dt = 0.1, 0.03, 0.01, 0.003, each gain against the held-action optimum K_dt.

Usage: python benchmarks/q_learning.py [--suite [--names NAME ...] [--seeds 0 1] [--set FIELD=VALUE ...]]
       python benchmarks/q_learning.py --dt-sweep [--seeds 0 1] [--set FIELD=VALUE ...]
(--set changes config fields from the defaults, the ablation's rows; HJB_THREADS sets torch's thread count, default 1:
these networks are tiny and extra threads only wait on each other on a busy machine).
"""
from __future__ import annotations

import ast
import os
import sys
import time
import warnings

import torch

import hjbcourse as hjb

LQR_SETTINGS = dict(value="quadratic", mean="linear")


def merton_settings(problem):
    return dict(value="power", power_exponent=1.0 - problem.gamma, mean="constant", initial_action=(0.5, 0.1),
                squash=(False, True), exploration_std=(0.5, 0.3))


def run(env, **kw):
    cfg = hjb.QLearningConfig.preset("quick", seed=kw.pop("seed", 0), progress=False, **kw)
    t0 = time.perf_counter()
    sol = hjb.QLearning(env, cfg).solve()
    return sol, time.perf_counter() - t0


def suite(names=None, seeds=(0,), overrides=None):
    """The default configuration on the suite's LQRs with d <= 2 and its Merton problems (issue 17, item 2);
    ``overrides``: config fields changed from the defaults (the ablation's rows)."""
    overrides = dict(overrides or {})
    entries = [e for e in hjb.suite.problem_suite(0)
               if (e.family == "lqr" and e.problem.state_dim <= 2) or e.family == "merton"]
    if names:
        entries = [e for e in entries if e.name in names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), quick preset, default networks; "
          "dt = 0.01 (LQR) and 0.5 with substeps of 0.02 (Merton), as in chapter 7"
          + (f"; changed: {overrides}" if overrides else "") + "\n")
    print("| problem | seed | transitions | error | target | held-action bias | within | check | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    met = total = 0
    for e in entries:
        p = e.problem
        for seed in seeds:
            merton = e.family == "merton"
            env = hjb.TransitionSampler(p, 0.5, substep=0.02) if merton else hjb.TransitionSampler(p, 0.01)
            cpu = time.process_time()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", hjb.solvers.q_learning.QLearningWarning)
                    sol, wall = run(env, seed=seed, **overrides)
            except Exception as exc:  # a failed run is a row of the table, not the end of it
                print(f"| {e.name} | {seed} | - | {type(exc).__name__}: {str(exc)[:60]} | - | - | no | - | - | - |")
                total += 1
                continue
            cpu = time.process_time() - cpu
            if merton:
                ex = p.exact()
                a = sol.policy(p.grid(101, dtype=torch.float64)).mean(0)
                e_pi, e_k = abs(float(a[0]) / ex.pi - 1), abs(float(a[1]) / ex.k - 1)
                ok = e_pi <= 0.03 and e_k <= 0.05
                err, target, bias = f"pi {e_pi:.1%}, k {e_k:.1%}", "3%, 5%", "-"
            else:
                K = p.exact().K.to(torch.float64)
                x = p.sample_states(512, generator=1, dtype=torch.float64)
                Kfit = hjb.fit_linear_gain(sol.policy, x)[0]
                rel = float((Kfit - K).norm() / K.norm())
                if p.state_dim == 1 and p.action_dim == 1:
                    Kdt = hjb.held_action_lqr_gain(p, 0.01).to(torch.float64)
                    b = float((Kdt - K).norm() / K.norm())
                    beyond = float((Kfit - Kdt).norm() / K.norm())
                    ok, err, target, bias = beyond <= 0.03, f"{rel:.2%} ({beyond:.2%} from K_dt)", "3%", f"{b:.2%}"
                else:
                    ok, err, target, bias = rel <= 0.05, f"{rel:.2%}", "5%", "-"
            met, total = met + ok, total + 1
            warned = any(issubclass(w.category, hjb.solvers.q_learning.QLearningWarning) for w in caught)
            shift = sol.diagnostics.get("mean_shift")
            res = sol.diagnostics.get("resolution")
            check = "-" if shift is None else f"{shift:.0%} ± {res:.0%}" + (", warned" if warned else "")
            print(f"| {e.name} | {seed} | {sol.n_transitions:,} | {err} | {target} | {bias} | "
                  f"{'yes' if ok else 'no'} | {check} | {wall:.0f} | {cpu:.0f} |", flush=True)
    print(f"\nwithin the targets: {met} of {total}")


def dt_sweep_networks(seeds=(0,), overrides=None):
    """Issue 17, item 3: the chapter's dt sweep on the scalar LQR with the default networks (J and the mean
    MLPs, no functional form), both methods, each gain scored beyond the held-action optimum K_dt (the best a
    learner fed steps of dt can do) against the 3% target; ``overrides`` as in :func:`suite`."""
    overrides = dict(overrides or {})
    lqr = hjb.StochasticLQR.scalar()
    K = float(lqr.exact().K)
    xs = torch.linspace(-2, 2, 201, dtype=torch.float64).unsqueeze(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), quick preset, default networks, "
          f"scalar LQR (K = {K:.6f})" + (f"; changed: {overrides}" if overrides else "") + "\n")
    print("| dt | K_dt | seed | method | transitions | gain | off K | off K_dt | within 3% of K_dt | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dt in (0.1, 0.03, 0.01, 0.003):
        kdt = float(hjb.held_action_lqr_gain(lqr, dt))
        for seed in seeds:
            for method in ("td_actor_critic", "q_learning"):
                cpu = time.process_time()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", hjb.solvers.q_learning.QLearningWarning)
                        sol, _ = run(hjb.TransitionSampler(lqr, dt), seed=seed, method=method, **overrides)
                except Exception as exc:
                    print(f"| {dt} | {kdt:.4f} | {seed} | {method} | - | {type(exc).__name__} | - | - | no | - |")
                    continue
                g = float(hjb.fit_linear_gain(sol.policy, xs)[0])
                beyond = abs(g - kdt) / K
                print(f"| {dt} | {kdt:.4f} | {seed} | {method} | {sol.n_transitions:,} | {g:.4f} | "
                      f"{abs(g / K - 1):.2%} | {beyond:.2%} | {'yes' if beyond <= 0.03 else 'no'} | "
                      f"{time.process_time() - cpu:.0f} |", flush=True)


def main(argv):
    torch.set_num_threads(int(os.environ.get("HJB_THREADS", "1")))
    def after(flag):   # the arguments after flag, up to the next --option
        if flag not in argv:
            return []
        rest = argv[argv.index(flag) + 1:]
        return rest[:next((i for i, v in enumerate(rest) if v.startswith("--")), len(rest))]
    overrides = {}
    for item in after("--set"):
        key, _, text = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    if "--dt-sweep" in argv:
        dt_sweep_networks([int(v) for v in after("--seeds")] or [0], overrides)
        return
    if "--suite" in argv:
        suite(after("--names") or None, [int(v) for v in after("--seeds")] or [0], overrides)
        return
    lqr = hjb.StochasticLQR.scalar()
    K = float(lqr.exact().K)
    xs = torch.linspace(-2, 2, 201, dtype=torch.float64).unsqueeze(1)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), quick preset\n")
    print("## Scalar LQR (K = %.9f), dt = 0.01\n" % K)
    print("| method | parametrisation | transitions | gain | rel. error | time (s) |")
    print("|---|---|---|---|---|---|")
    env = hjb.TransitionSampler(lqr, 0.01)
    for label, kw in (("q-learning", LQR_SETTINGS), ("q-learning", dict(value="mlp", mean="mlp"))):
        sol, t = run(env, **kw)
        g = float(hjb.fit_linear_gain(sol.policy, xs)[0])
        print(f"| {label} | J {kw['value']}, mean {kw['mean']} | {sol.n_transitions:,} | {g:.4f} | "
              f"{abs(g / K - 1):.2%} | {t:.1f} |")

    merton = hjb.Merton()
    mx = merton.exact()
    print(f"\n## Merton (pi = {mx.pi:.4f}, k = {mx.k}), dt = 0.5 (power family, constant mean)\n")
    print("| method | seed | transitions | pi | rel. error | k | rel. error | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    env = hjb.TransitionSampler(merton, 0.5, substep=0.02)
    xw = merton.grid(101, dtype=torch.float64)
    for method, seeds in (("q_learning", (0, 1, 2, 3)), ("td_actor_critic", (0,))):
        for seed in seeds:
            sol, t = run(env, seed=seed, method=method, **merton_settings(merton))
            a = sol.policy(xw).mean(0)
            print(f"| {method} | {seed} | {sol.n_transitions:,} | {float(a[0]):.4f} | "
                  f"{abs(float(a[0]) / mx.pi - 1):.2%} | {float(a[1]):.5f} | {abs(float(a[1]) / mx.k - 1):.2%} | {t:.1f} |")

    dts = (0.1, 0.03, 0.01, 0.003)
    print("\n## dt sweep, scalar LQR, 10^6 transitions each, same parametrisation (quadratic, linear policy)\n")
    print("| dt | K_dt (held-action optimum) | TD actor-critic gain | rel. error | q-learning gain | rel. error |")
    print("|---|---|---|---|---|---|")
    for dt in dts:
        env = hjb.TransitionSampler(lqr, dt)
        out = []
        for method in ("td_actor_critic", "q_learning"):
            sol, _ = run(env, method=method, **LQR_SETTINGS)
            g = float(hjb.fit_linear_gain(sol.policy, xs)[0])
            out.append((g, abs(g / K - 1)))
        kdt = float(hjb.held_action_lqr_gain(lqr, dt))
        print(f"| {dt} | {kdt:.4f} | {out[0][0]:.4f} | {out[0][1]:.2%} | {out[1][0]:.4f} | {out[1][1]:.2%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
