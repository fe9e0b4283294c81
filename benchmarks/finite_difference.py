"""Time-to-accuracy of the finite-difference HJB solver (hjb.FiniteDifferenceSolver) against closed forms.

Prints markdown tables: grid size, wall time, errors, and the measured orders of convergence, for the scalar
LQR (P = 0.2659750769), Merton (pi* = 0.625, k* = 0.0478125) and the minimum-time problem with a kink. Every run
uses the default preset (FiniteDifferenceConfig.preset("quick")) with only the grid size and the scheme changed.
Run: python benchmarks/finite_difference.py
"""
import os
import platform
import time

import numpy as np
import torch

import hjbcourse as hjb
from hjbcourse.solvers.finite_difference import FiniteDifferenceConfig, fit_quadratic_value

PRESET = FiniteDifferenceConfig.preset("quick")


def timed(solver):
    t0 = time.perf_counter()
    sol = solver.solve()
    return sol, time.perf_counter() - t0


def lqr_rows():
    lqr = hjb.StochasticLQR.scalar()
    ex = lqr.exact()
    P, c = float(ex.P), ex.c
    x = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64).unsqueeze(1)
    print("\n### Scalar stochastic LQR on [-4, 4], scored on [-2, 2] (P and c by least squares of V ~ -P x^2/2 - c)\n")
    print("| scheme | n | time (s) | PI steps | rel. err P | rel. err c | max err V | max err a |")
    print("|---|---|---|---|---|---|---|---|")
    orders = {}
    for scheme, ns in (("upwind", (501, 1001, 2001, 4001)), ("hybrid", (501, 1001, 2001))):
        errs = []
        for n in ns:
            sol, t = timed(hjb.FiniteDifferenceSolver(lqr, PRESET.replace(n=n, scheme=scheme), domain=(-4.0, 4.0)))
            Pf, cf = fit_quadratic_value(sol, (-2.0, 2.0))
            eV = (sol.value(x) - ex.value(x)).abs().max().item()
            ea = (sol.policy(x) - ex.policy(x)).abs().max().item()
            errs.append(eV)
            print(f"| {scheme} | {n} | {t:.2f} | {sol.iterations} | {abs(Pf - P) / P:.2e} | {abs(cf - c) / c:.2e} | {eV:.2e} | {ea:.2e} |")
        orders[scheme] = hjb.convergence_order([8.0 / (n - 1) for n in ns], errs)
    print(f"\nmeasured order of the upwind scheme (max err V against dx): {orders['upwind']:.3f}. The hybrid scheme has "
          "no meaningful order here: where it uses pure central differences it is exact for the quadratic V, so its "
          "error only measures how much of [-2, 2] still needs artificial diffusion.")


def merton_rows():
    x = torch.linspace(0.5, 2.0, 301, dtype=torch.float64).unsqueeze(1)
    print("\n### Merton on a geometric wealth grid [1e-5, 1e5], reflecting ends, scored on wealth in [0.5, 2]\n")
    print("| gamma | scheme | n | time (s) | PI steps | rel. err pi | rel. err k | rel. err V |")
    print("|---|---|---|---|---|---|---|---|")
    for gamma, runs in ((2.0, (("hybrid", (501, 1001, 2001)), ("upwind", (1001, 2001)))),
                        (3.0, (("hybrid", (251, 501, 1001)),))):
        m = hjb.Merton(gamma=gamma)
        mx = m.exact()
        for scheme, ns in runs:
            errs = []
            for n in ns:
                grid = np.geomspace(1e-5, 1e5, n)
                sol, t = timed(hjb.FiniteDifferenceSolver(m, PRESET.replace(scheme=scheme), grid=grid))
                a = sol.policy(x)
                epi = ((a[:, 0] - mx.pi).abs().max() / mx.pi).item()
                ek = ((a[:, 1] - mx.k).abs().max() / mx.k).item()
                eV = ((sol.value(x) - mx.value(x)).abs() / mx.value(x).abs()).max().item()
                errs.append(epi)
                print(f"| {gamma:g} | {scheme} | {n} | {t:.2f} | {sol.iterations} | {epi:.2e} | {ek:.2e} | {eV:.2e} |")
            if gamma == 3.0 or scheme == "upwind":
                print(f"| | measured order of pi (against 1/n): {hjb.convergence_order([1.0 / (n - 1) for n in ns], errs):.3f} | | | | | | |")


def minimum_time_rows():
    p = hjb.MinimumTimeProblem(rho=1.0)
    ex = p.exact()
    print("\n### Minimum time to leave (-1, 1) (value with a kink at 0), boundary value 0\n")
    print("| n | time (s) | PI steps (fine grid) | max err V |")
    print("|---|---|---|---|")
    ns, errs = (201, 401, 801, 1601), []
    for n in ns:
        sol, t = timed(hjb.FiniteDifferenceSolver(p, PRESET.replace(n=n), boundary=0.0))
        e = (sol.V - ex.value(sol.x.unsqueeze(1)).reshape(-1)).abs().max().item()
        errs.append(e)
        print(f"| {n} | {t:.2f} | {sol.iterations} | {e:.2e} |")
    print(f"\nmeasured order: {hjb.convergence_order([2.0 / (n - 1) for n in ns], errs):.3f}")


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# finite-difference benchmark: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, load average {load:.1f}, torch {torch.__version__}")
    lqr_rows()
    merton_rows()
    minimum_time_rows()
