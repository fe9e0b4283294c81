"""Cost of the generator L^a V = grad V . f + 1/2 Tr(S S^T Hess V) by method, as a ratio to the autograd loop.

    python benchmarks/generator.py [--repeats 5] [--dims 1 10 50 100] [--threads 2] [--device cpu|cuda]

For each dimension d: a batch of 1024 states, V = hjb.MLP(d, 1, width=128, depth=3) (tanh), a drift f and
a full-rank diffusion S of shape (B, d, d), so the trace runs over d directions. Hutchinson's estimator is
timed a second time with one S of shape (d, d) shared by all states (a constant diffusion, as in the LQR and
the 100-dimensional problem): its probes then never form S z. Two costs are timed:
"eval" (the generator's value only, create_graph=False) and "train" (the generator with create_graph=True,
then backward of its mean into the network's parameters, as in a training step). Each entry is the fastest
of ``--repeats`` rounds after a warm-up, each round timing every call once (the run least disturbed by other load on a shared machine); ratios are
autograd's time over the method's (above 1: faster).
Targets: forward >= 2.5x autograd for training at d = 50; Hutchinson's cost flat in d (within 1.5x from
d = 1 to d = 100), reported for both kinds of S. With a state-dependent S the probes S z cost d^2 per probe
and state, about as much as the network's first layer: at d = 100 the arithmetic is about 1.6 times that at
d = 1, so that case cannot be flat on a CPU, where the time follows the arithmetic.
"""
from __future__ import annotations

import argparse
import time

import torch

import hjbcourse as hjb

METHODS = ("autograd", "forward", "hutchinson")
SHARED = "hutchinson, S shared"


def _cases(d: int, batch: int, seed: int, device: torch.device):
    """The timed calls for one dimension, {(name, "eval" or "train"): fn}, and the exact methods' largest
    relative disagreement (a benchmark of wrong numbers is worthless)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    V = hjb.MLP(d, 1, width=128, depth=3).to(device)
    x = torch.randn(batch, d, generator=g).to(device)
    f = torch.randn(batch, d, generator=g).to(device)
    S = (torch.randn(batch, d, d, generator=g) / d ** 0.5).to(device)
    S_shared = S[0].clone()
    cases = {}
    for name in METHODS + (SHARED,):
        m, SS = ("hutchinson", S_shared) if name == SHARED else (name, S)

        def evaluate(m=m, SS=SS):
            return hjb.apply_generator(V, x, f, SS, method=m, generator=1, create_graph=False)

        def train(m=m, SS=SS):
            V.zero_grad(set_to_none=True)
            hjb.apply_generator(V, x, f, SS, method=m, generator=1, create_graph=True).mean().backward()

        cases[name, "eval"], cases[name, "train"] = evaluate, train
    a = hjb.apply_generator(V, x, f, S, method="autograd", create_graph=False)
    b = hjb.apply_generator(V, x, f, S, method="forward", create_graph=False)
    return cases, float((a - b).abs().max() / a.abs().max())


def measure(dims, batch: int = 1024, repeats: int = 5, seed: int = 0, device="cpu") -> dict:
    """{d: {name: {"eval": s, "train": s}, "max_rel_diff": x}}: the fastest of ``repeats`` rounds, each round
    timing every call of every dimension once (interleaved, so that a slow spell of a shared machine falls on
    all of them rather than on one, and the ratios stay fair)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls, out = {}, {}
    for d in dims:
        cases, diff = _cases(d, batch, seed, device)
        out[d] = {"max_rel_diff": diff}
        calls.update({(d,) + key: fn for key, fn in cases.items()})
    best = dict.fromkeys(calls, float("inf"))
    for fn in calls.values():                                   # warm-up
        fn()
    sync()
    for _ in range(repeats):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            sync()
            best[key] = min(best[key], time.perf_counter() - t0)
    for (d, name, kind), t in best.items():
        out[d].setdefault(name, {})[kind] = t
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 10, 50, 100])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(args.dims, args.batch, args.repeats, device=args.device)
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads")
    print(f"Generator cost, batch {args.batch}, MLP 3x128 tanh, full-rank S (B, d, d), {where}, "
          f"best of {args.repeats}; torch {torch.__version__}")
    print()
    print("| d | autograd eval (ms) | autograd train (ms) | forward eval | forward train | hutchinson eval | "
          "hutchinson train | hutchinson eval, S shared | hutchinson train, S shared | "
          "forward vs autograd (max rel. diff) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d, r in rows.items():
        ae, at = r["autograd"]["eval"], r["autograd"]["train"]
        cells = [f"{d}", f"{1e3 * ae:.1f}", f"{1e3 * at:.1f}"]
        for m in ("forward", "hutchinson", SHARED):
            cells += [f"{ae / r[m]['eval']:.2f}x ({1e3 * r[m]['eval']:.1f} ms)",
                      f"{at / r[m]['train']:.2f}x ({1e3 * r[m]['train']:.1f} ms)"]
        cells.append(f"{r['max_rel_diff']:.1e}")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Ratios are autograd's time over the method's time in the same run (above 1 = faster than autograd);")
    print("autograd's time is the same for a shared S, which it expands to one matrix per state.")
    if 50 in rows:
        s = rows[50]["autograd"]["train"] / rows[50]["forward"]["train"]
        print(f"target 1: forward at least 2.5x faster than autograd for training at d=50: {s:.2f}x -> "
              f"{'met' if s >= 2.5 else 'NOT met'}")
    if 1 in rows and 100 in rows:
        for name, what in (("hutchinson", "S per state (B, d, d)"), (SHARED, "S shared (d, d)")):
            for kind in ("eval", "train"):
                h = rows[100][name][kind] / rows[1][name][kind]
                print(f"target 2: Hutchinson {kind} cost d=100 / d=1, {what} = {h:.2f} "
                      f"(within 1.5x: {'met' if h <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
