"""``python -m core.cli experiment``: arguments and progress bar for core/experiment.py (which knows
nothing of the command line)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.experiment import DEFAULT_TEMPLATE, METHOD_ORDER


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_experiment(sub, common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from core.encoders import DEFAULT_SPEC
    from core.sg.methods import method_names

    p = sub.add_parser("experiment", parents=[common] if common is not None else [],
                       help="class-incremental benchmark of registered methods on an ImageNet-style folder")
    p.add_argument("--data", type=Path, required=True, help="folder with train/<class>/* and test/<class>/*")
    p.add_argument("--tasks", type=int, required=True, help="number of tasks (classes split equally)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (class order and initialisation)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--encoder", default=DEFAULT_SPEC, help="encoder spec (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="results JSON (rewritten after every run)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--memory-per-class", type=int, default=20, help="exemplars per class (default 20)")
    memory.add_argument("--memory-total", type=int, help="fixed total exemplar budget over all seen classes")
    methods = [m for m in METHOD_ORDER if m in method_names()] + [m for m in method_names() if m not in METHOD_ORDER]
    p.add_argument("--methods", nargs="+", choices=method_names(), default=methods)
    p.add_argument("--epochs", type=int, help="epochs per task (default: the encoder's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--set", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="any other LearnerConfig field, e.g. --set logit_scale=30 --set trainable_blocks=2")
    p.add_argument("--width", type=int, help="scratch tower width")
    p.add_argument("--input-size", type=int, help="image side in pixels (default: the backbone's)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template for w (default %(default)r)")
    p.add_argument("--validation", type=float,
                   help="evaluate on this fraction of train/ held out per class instead of test/ (tuning)")
    p.add_argument("--shots", type=int, help="keep only the first K training images of each class (few-shot)")
    p.add_argument("--cache", type=Path, help="feature/decoded-image cache folder (default: a temp folder)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run_experiment_command)
    return p


def settings_from_args(args: argparse.Namespace):
    from core.experiment import ExperimentSettings
    from core.runs import clean_overrides

    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    overrides.update(dict(args.set))
    return ExperimentSettings(
        data=args.data, tasks=args.tasks, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        encoder=args.encoder, methods=list(args.methods), overrides=clean_overrides(overrides, "run"),
        memory_per_class=args.memory_per_class, memory_total=args.memory_total, width=args.width,
        input_size=args.input_size, template=args.template, validation=args.validation, shots=args.shots,
        cache_dir=args.cache, device=args.device)


def run_experiment_command(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from core.experiment import format_table, run_experiment

    from core.perf import tune_allocator

    tune_allocator()
    torch.set_num_threads(max(1, args.threads))
    settings = settings_from_args(args)
    n_runs = len(settings.seeds) * len(settings.methods)
    bar = tqdm(total=n_runs * settings.tasks, unit="task", file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} tasks [{elapsed}<{remaining}{postfix}]")
    last_update = [0.0]

    def progress(info: dict) -> None:
        if info.get("event") == "run_done":
            s = info["summary"]
            bar.write(f"{info['method']:>9} seed {info['seed']}: AIA {100 * s['aia']:.1f}  last {100 * s['last']:.1f}")
            return
        now = time.monotonic()
        if now - last_update[0] < 0.5 and info["fraction"] < 1.0:
            return
        last_update[0] = now
        bar.n = info["run"] * info["tasks"] + info["task"] + info["fraction"]
        bar.set_postfix_str(f"{info['method']} s{info['seed']} t{info['task'] + 1} "
                            f"ep{info['epoch'] + 1}/{info['epochs']} loss {info.get('loss', 0.0):.3f} "
                            f"{info['images_per_s']:.0f} img/s", refresh=False)
        bar.refresh()

    results = run_experiment(settings, out=args.out, progress=progress)
    bar.n = bar.total
    bar.close()
    s = results["settings"]
    print(f"{settings.data} · {settings.tasks} tasks · seeds {settings.seeds} · encoder {s['encoder_version']} · "
          f"eval on {s['eval_split']} · {results['seconds'] / 60:.1f} min")
    print(format_table(results["aggregate"]))
    print(f"results: {args.out}")
    return 0
