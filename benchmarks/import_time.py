"""What `import hjbcourse` costs on top of torch's own import, best of N fresh interpreters.

    python benchmarks/import_time.py [--repeats 5]

Each round starts a new Python process that imports torch, then hjbcourse, and reports both times; the table
shows the best round of each (the least disturbed by other load) and which heavy modules the import pulled in.
Target (issue 15): hjbcourse costs at most 0.6 s beyond torch, and loads neither matplotlib, sympy nor POT.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = """
import json, sys, time
t0 = time.perf_counter(); import torch; t1 = time.perf_counter()
import hjbcourse; t2 = time.perf_counter()
heavy = [m for m in ("matplotlib", "sympy", "ot", "scipy.stats", "scipy.integrate", "tqdm") if m in sys.modules]
print(json.dumps({"torch": t1 - t0, "hjbcourse": t2 - t1, "heavy": heavy}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                                      text=True).stdout) for _ in range(args.repeats)]
    torch_s = min(r["torch"] for r in runs)
    pkg_s = min(r["hjbcourse"] for r in runs)
    print(f"| import | best of {args.repeats} (s) |\n|---|---|")
    print(f"| torch | {torch_s:.2f} |\n| hjbcourse after torch | {pkg_s:.2f} |")
    print(f"heavy modules loaded by `import hjbcourse`: {runs[0]['heavy'] or 'none'}")
    ok = pkg_s <= 0.6 and not set(runs[0]["heavy"]) & {"matplotlib", "sympy", "ot"}
    print(f"target (<= 0.6 s beyond torch, no matplotlib/sympy/POT): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
