"""Throughput of the default backbone's frozen prefix on this machine (what feature caching costs),
with glibc's default allocator settings and with core.perf.tune_allocator(), side by side in one run
(each in its own process, alternating, so a busy machine affects both alike).

    .venv/bin/python bench/prefix_speed.py [--size 224] [--batch 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(tuned: bool, size: int, batch: int) -> float:
    sys.path.insert(0, str(REPO))
    import torch

    if tuned:
        from core.perf import tune_allocator
        tune_allocator()
    from core.encoders import DEFAULT_SPEC, load_encoder

    torch.set_num_threads(2)
    model = load_encoder(DEFAULT_SPEC).build_image_model(input_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    rates = []
    with torch.inference_mode():
        model.prefix(x[:8])
        for _ in range(3):
            started = time.perf_counter()
            model.prefix(x)
            rates.append(batch / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=["default", "tuned"])
    args = ap.parse_args()
    if args.child:
        print(child(args.child == "tuned", args.size, args.batch))
        return 0
    results = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for mode in results:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--size", str(args.size),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            results[mode].append(float(out.stdout.strip().splitlines()[-1]))
    d, t = statistics.median(results["default"]), statistics.median(results["tuned"])
    print(f"prefix, {args.size} px, batch {args.batch}: glibc defaults {d:.1f} img/s, tuned allocator {t:.1f} img/s "
          f"({t / d:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
