"""The validation grid behind the pretrained default's configuration (docs/results.md).

Every configuration runs the experiment protocol with ``validation=0.2`` (a fixed fifth of each class's
*training* images held out; ``test/`` is never read) on both shared subsets — Caltech-101 10 × 10 with a
fixed memory of 200, CIFAR-10 5 × 2 with 20 exemplars per class — for seeds 0, 1, 2, and prints the mean
last accuracy per subset and over both. One factor at a time around the registry's defaults.

    .venv/bin/python scripts/tune_validation.py [--encoder effnet-lite0+use-m3] [--methods both]
        [--cache /tmp/sgcl-exp-cache] [--grid default|full] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.experiment import ExperimentSettings, run_experiment  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
SUBSETS = {"caltech101": dict(tasks=10, memory_total=200), "cifar10": dict(tasks=5, memory_per_class=20)}
FULL_GRID = [{}, {"logit_scale": 10, "T": 0.4}, {"logit_scale": 20, "T": 0.8}, {"logit_scale": 30, "T": 1.2},
             {"T": 0.3}, {"T": 1.0}, {"T": 2.0}, {"T": 4.0}, {"epochs": 8}, {"epochs": 32}, {"lr": 0.01},
             {"lr": 0.05}, {"softness": 3.0}, {"softness": 8.0}, {"softness": 13.0}, {"lambda_kd": 0.25},
             {"lambda_kd": 1.0}, {"lambda_sl": 0.25}, {"lambda_sl": 1.0}, {"batch_size": 32},
             {"batch_size": 128}, {"trainable_blocks": 1, "epochs": 8}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="effnet-lite0+use-m3")
    ap.add_argument("--methods", nargs="+", default=["both"])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sgcl-exp-cache"))
    ap.add_argument("--grid", choices=["default", "full"], default="default")
    ap.add_argument("--set", action="append", default=[], help="extra LearnerConfig override for every row")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"the shared datasets are not at {SHARED}", file=sys.stderr)
        return 2
    from core.perf import tune_allocator
    import torch

    tune_allocator()
    torch.set_num_threads(2)
    extra = dict(s.split("=", 1) for s in args.set)
    extra = {k: json.loads(v) for k, v in extra.items()}
    for row in (FULL_GRID if args.grid == "full" else [{}]):
        overrides = {**extra, **row}
        started = time.perf_counter()
        result = {}
        for name, shape in SUBSETS.items():
            settings = ExperimentSettings(data=SHARED / name, seeds=[0, 1, 2], encoder=args.encoder,
                                          methods=list(args.methods), overrides=overrides, validation=0.2,
                                          cache_dir=args.cache, device="cpu", **shape)
            runs = run_experiment(settings)["runs"]
            for method in args.methods:
                result.setdefault(method, {})[name] = 100 * statistics.fmean(
                    r["summary"]["last"] for r in runs if r["method"] == method)
        for method, by in result.items():
            print(json.dumps({"encoder": args.encoder, "method": method, "overrides": overrides,
                              **{k: round(v, 2) for k, v in by.items()},
                              "mean": round(statistics.fmean(by.values()), 2),
                              "seconds": round(time.perf_counter() - started)}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
