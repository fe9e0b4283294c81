"""Benchmark of the chapter "Diffusion models as control": the verification identity, the learned score and
the sample quality, at the quick preset (CPU) or the full one (GPU). Prints markdown tables.

    python benchmarks/diffusion.py [--preset quick|full] [--device cpu|cuda] [--threads 1]

Targets (quick preset): |J - V| <= 3 s.e. for the exact control; J - V = gap within 3 s.e. for at least three
perturbed controls; the learned score's p_s-weighted relative L2 error <= 5% at every s in [0.05 T, T], trained
in at most 3 minutes; W2(learned samples, data) <= 1.5 W2(exact-control samples, data), and u = 0 clearly worse.
"""
from __future__ import annotations

import argparse
import time

import torch

import hjbcourse as hjb

SETTINGS = {
    "quick": dict(n_paths=4000, n_steps=200, bias_paths=2000, n_samples=2000, sample_steps=500, err_samples=4000),
    "full": dict(n_paths=20000, n_steps=800, bias_paths=10000, n_samples=4000, sample_steps=1000, err_samples=20000),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick", choices=sorted(SETTINGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    S = SETTINGS[args.preset]
    hjb.seed_everything(args.seed)
    gm = hjb.GaussianMixture.example()
    sde = hjb.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
    prob = hjb.DiffusionControl(gm, sde)
    x0, t0 = [0.3, -0.2], 0.0
    print(f"# Diffusion as control: preset {args.preset!r}, device {args.device}, {args.threads} threads, "
          f"torch {torch.__version__}\n")

    # 1. verification identity ---------------------------------------------------------------------------------
    g = torch.Generator().manual_seed(args.seed)
    controls = hjb.example_controls(prob, seed=args.seed)
    t = time.perf_counter()
    est = {name: prob.estimate_cost(u, t0, x0, n_paths=S["n_paths"], n_steps=S["n_steps"], generator=g)
           for name, u in controls.items()}
    t_ver = time.perf_counter() - t
    print(f"## Verification identity at x = {x0}, t = {t0} ({S['n_paths']} paths, {S['n_steps']} Heun steps, "
          f"{t_ver:.1f} s; V(x, t) = {est['exact'].V:.4f})\n")
    print(hjb.verification_table(est))
    bias = {n: prob.step_bias(controls[n], t0, x0, n_paths=S["bias_paths"], n_steps=S["n_steps"], generator=g)
            for n in ("exact", "scaled")}
    print(f"\nStep halving ({S['n_steps']} -> {2 * S['n_steps']} steps, coupled paths): "
          + "; ".join(f"{n}: dJ = {b['dJ']:+.4f} +- {b['dJ_se']:.4f}" for n, b in bias.items()) + "\n")
    ok_exact = abs(est["exact"].excess) <= 3 * est["exact"].J_se
    n_ok = sum(abs(e.z_score) <= 3 for n, e in est.items() if n != "exact")

    # 2. score matching ------------------------------------------------------------------------------------------
    cfg = hjb.ScoreMatchingConfig.preset(args.preset, seed=args.seed, device=args.device, progress=False)
    data32 = hjb.GaussianMixture.example(dtype=torch.float32, device=args.device)
    t, c = time.perf_counter(), time.process_time()
    model = hjb.ScoreMatching(data32, cfg, sde=sde).solve()
    train_wall, train_cpu = time.perf_counter() - t, time.process_time() - c
    times = torch.linspace(0.05 * sde.T, sde.T, 20).tolist()
    errs = hjb.score_error(model.score, gm, sde, times, n=S["err_samples"], generator=args.seed + 100)
    err_max, err_rms = float(errs.max()), float(errs.pow(2).mean().sqrt())
    print(f"## Denoising score matching ({cfg.iterations} iterations, batch {cfg.batch_size}, "
          f"MLP {cfg.depth}x{cfg.hidden})\n")
    print("| s | " + " | ".join(f"{s:.2f}" for s in times[::3]) + " |")
    print("|---|" + "---|" * len(times[::3]))
    print("| rel. error | " + " | ".join(f"{float(e):.3f}" for e in errs[::3]) + " |\n")
    print(f"Training: {train_wall:.1f} s wall, {train_cpu:.1f} s CPU (process time over {args.threads} threads)\n")

    # 3. samples ----------------------------------------------------------------------------------------------------
    n = S["n_samples"]
    gs = torch.Generator().manual_seed(args.seed + 200)
    ref = gm.sample(n, generator=gs)
    t = time.perf_counter()
    samples = {
        "learned": model.sample(n, n_steps=S["sample_steps"], generator=gs).double().cpu(),
        "exact": prob.sample(None, n, n_steps=S["sample_steps"], start="prior", generator=gs),
        "uncontrolled (u = 0)": prob.sample(hjb.zero_control, n, n_steps=S["sample_steps"], start="prior", generator=gs),
        "data (second sample)": gm.sample(n, generator=gs),
    }
    t_sample = time.perf_counter() - t
    t = time.perf_counter()
    q = {k: hjb.sample_quality(v, gm, ref) for k, v in samples.items()}
    t_w2 = time.perf_counter() - t
    print(f"## Samples ({n} each, {S['sample_steps']} Heun steps from N(0, I), {t_sample:.1f} s; exact W2 by "
          f"POT emd2 against {n} fresh data points, {t_w2:.1f} s for all four)\n")
    print("| sampler | W2 to data | mean -log p_data |")
    print("|---|---|---|")
    for k, v in q.items():
        print(f"| {k} | {v['W2']:.4f} | {v['nll']:.4f} |")
    ratio = q["learned"]["W2"] / q["exact"]["W2"]

    # summary ----------------------------------------------------------------------------------------------------
    print("\n## Targets\n")
    print("| target | measured | met |")
    print("|---|---|---|")
    e = est["exact"]
    rows = [
        ("exact control: abs(J - V) <= 3 s.e.", f"{e.excess:+.4f} (s.e. {e.J_se:.4f})", ok_exact),
        (">= 3 perturbed controls with abs(J - V - gap) <= 3 s.e.", f"{n_ok} of {len(est) - 1}", n_ok >= 3),
        ("max over s in [0.05T, T] of the relative score error <= 5%", f"{err_max:.2%} (RMS over s {err_rms:.2%})",
         err_max <= 0.05),
        ("training time <= 180 s", f"{train_wall:.1f} s wall ({train_cpu:.1f} s CPU)", train_wall <= 180),
        ("W2(learned) <= 1.5 W2(exact)", f"ratio {ratio:.3f}", ratio <= 1.5),
        ("u = 0 clearly worse", f"W2 {q['uncontrolled (u = 0)']['W2']:.3g} vs {q['exact']['W2']:.3g}",
         q["uncontrolled (u = 0)"]["W2"] > 5 * q["exact"]["W2"]),
    ]
    for name, val, ok in rows:
        print(f"| {name} | {val} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
