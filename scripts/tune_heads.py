"""Validation grid of the closed-form heads and the SG + head variants (docs/results.md, issue 17).

Runs the experiment protocol (core/experiment.py) with ``validation=0.2`` — a fixed fifth of each
class's *training* images held out, ``test/`` never read — for one method with some of its class
attributes set (e.g. FeCAM's Tukey power ``beta``, RanPAC's ``ridge_ratio``), and appends one JSON line
per configuration to ``--out``: last accuracy, AUROC of every unknown score, rejection rates.

    .venv/bin/python scripts/tune_heads.py --data ../shared/datasets/cifar10 --tasks 5 --method ranpac \\
        --attr ridge_ratio=0.001 --attr ridge_ratio=0.01 --out /tmp/tune.jsonl [--shots 5] [--seeds 0 1 2]

Each ``--attr`` is one configuration (``key=value[,key=value]``); without any, the defaults.
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


def _parse(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = json.loads(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--attr", action="append", default=[], help="one configuration: key=value[,key=value]")
    ap.add_argument("--set", action="append", default=[], help="LearnerConfig override key=value")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--shots", type=int)
    ap.add_argument("--validation", type=float, default=0.2, help="0 evaluates on test/ (final numbers)")
    ap.add_argument("--memory-total", type=int)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sgcl-exp-cache"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    from core.perf import tune_allocator
    from core.sg.methods import METHODS

    tune_allocator()
    torch.set_num_threads(2)
    cls = METHODS[args.method]
    head = getattr(cls, "head_cls", None)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    for config in (args.attr or [""]):
        attrs = _parse(config)
        saved = {}
        for key, value in attrs.items():   # on the method class, or on the head class of a fusion
            target = cls if hasattr(cls, key) else head
            saved[(target, key)] = getattr(target, key)
            setattr(target, key, value)
        started = time.perf_counter()
        try:
            settings = ExperimentSettings(
                data=args.data, tasks=args.tasks, seeds=list(args.seeds), methods=[args.method],
                overrides=overrides, validation=args.validation or None, shots=args.shots,
                cache_dir=args.cache, device="cpu", memory_total=args.memory_total)
            runs = run_experiment(settings)["runs"]
        finally:
            for (target, key), value in saved.items():
                setattr(target, key, value)
        summary = {k: statistics.fmean([r["summary"][k] for r in runs if r["summary"].get(k) is not None])
                   for k in runs[0]["summary"] if isinstance(runs[0]["summary"].get(k), float)}
        row = {"data": args.data.name, "tasks": args.tasks, "method": args.method, "attrs": attrs,
               "set": overrides, "shots": args.shots, "seeds": args.seeds,
               "split": "validation" if args.validation else "test",
               "last_per_seed": [r["summary"]["last"] for r in runs],
               **{k: round(v, 4) for k, v in summary.items()}, "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
