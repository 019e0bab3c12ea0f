"""Class-incremental experiment protocol: five methods × seeds on an ImageNet-style folder.

``python -m core.cli experiment --data ROOT --tasks N --seeds 3 --encoder e5 --out results.json``

ROOT holds ``train/<class>/*`` and ``test/<class>/*``.  For every seed the classes (folder names,
``_`` read as a space) are shuffled by the seed and split into N tasks; every method of that seed
sees the same class order, the same initial weights and the same batch order, so methods are
compared pairwise.  Methods (:data:`METHODS`), all with the same training configuration:

* ``finetune``  — fine-tune without memory (λ_sl = λ_kd = 0, no exemplars)
* ``exemplars`` — fine-tune + exemplar rehearsal (λ_sl = λ_kd = 0)
* ``sgrl``      — + SG-RL (λ_sl = 0.5)
* ``sgkd``      — + SG-KD (λ_kd = 0.5)
* ``both``      — + SG-RL + SG-KD (the method)

Text features are computed once for all classes (bare names → ``encode_names`` = u, the template
``"a photo of a {}."`` → ``encode_prompts`` = w).  Images are decoded once through
:class:`core.sg.ImageCache` and shared by every run.  After each task every seen task's holdout is
evaluated (task-agnostic and task-aware); the matrices and :func:`core.sg.metrics.summarize` of every
run go to the JSON file, which is rewritten after each run, and a mean ± std table is printed.

``--validation F`` holds out a fraction F of each class's *training* images (fixed, seed-independent)
and evaluates on them instead of ``test/``, which is then never read: use it to choose epochs / batch
size / learning rate without touching the test split.

This module is pure of SQLite and Streamlit; torch is imported lazily so that ``core.cli`` stays
quick to start for its other commands.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from core.i18n import UserError

__all__ = ["METHODS", "MethodSpec", "SCRATCH_DEFAULTS", "ExperimentSettings", "FolderData",
           "scan_folder", "class_order", "split_tasks", "class_display_name", "run_experiment",
           "aggregate", "format_table", "add_experiment_parser", "run_experiment_command", "main"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class MethodSpec:
    label: str
    sg_rl: bool
    sg_kd: bool
    memory: bool


#: The five methods, in table order.  λ values when on are the config's (spec: 0.5).
METHODS: dict[str, MethodSpec] = {
    "finetune": MethodSpec("fine-tune, no memory", sg_rl=False, sg_kd=False, memory=False),
    "exemplars": MethodSpec("fine-tune + exemplars", sg_rl=False, sg_kd=False, memory=True),
    "sgrl": MethodSpec("+ SG-RL", sg_rl=True, sg_kd=False, memory=True),
    "sgkd": MethodSpec("+ SG-KD", sg_rl=False, sg_kd=True, memory=True),
    "both": MethodSpec("+ SG-RL + SG-KD (method)", sg_rl=True, sg_kd=True, memory=True),
}

#: Training configuration of the e5 mode's scratch tower, chosen on a validation split carved from
#: train/ of CIFAR-10 (docs/results.md lists the settings tried).  The spec's 10 epochs / batch 256 /
#: lr 0.01 are for fine-tuning one pretrained CLIP block; a CNN trained from scratch on a few hundred
#: images per task needs many more SGD steps.  Used when the encoder has no pretrained image side
#: and the option is not given; CLIP encoders keep the LearnerConfig (reference) defaults.
SCRATCH_DEFAULTS = {"epochs": 16, "batch_size": 64, "lr": 0.01, "width": 16}


def class_display_name(folder: str) -> str:
    """Folder name → class name given to the text encoder (``car_side`` → ``car side``)."""
    return folder.replace("_", " ").strip()


# ---------------------------------------------------------------------------------------- data
@dataclass
class FolderData:
    """File lists of an ImageNet-style folder; labels index ``folders`` (sorted class folders)."""

    root: Path
    folders: list[str]
    train_paths: list[Path]
    train_labels: list[int]
    eval_paths: list[Path]
    eval_labels: list[int]
    eval_split: str  # "test" or "validation"

    @property
    def names(self) -> list[str]:
        return [class_display_name(f) for f in self.folders]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def scan_folder(root: str | os.PathLike, validation: float | None = None) -> FolderData:
    """List ``root/train/<class>/*`` and the evaluation images.

    Without ``validation`` the evaluation images are ``root/test/<class>/*`` (every class must have
    some).  With ``validation`` = F the last ⌈F·n⌉ of each class's training images, in a fixed
    pseudo-random order that does not depend on the run seed, become the evaluation set (at least one
    stays for training) and ``test/`` is not read.
    """
    root = Path(root)
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        raise UserError("experiment.no_split", root=str(root), split="train")
    if validation is None and not test_dir.is_dir():
        raise UserError("experiment.no_split", root=str(root), split="test")
    if validation is not None and not 0.0 < validation < 1.0:
        raise UserError("experiment.bad_validation", value=validation)
    folders = sorted(d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    train_paths, train_labels, eval_paths, eval_labels = [], [], [], []
    for label, folder in enumerate(folders):
        files = _images_in(train_dir / folder)
        if not files:
            raise UserError("experiment.no_images", folder=str(train_dir / folder))
        if validation is not None:
            files = list(files)
            random.Random(f"validation:{folder}").shuffle(files)
            n_val = min(len(files) - 1, max(1, math.ceil(validation * len(files))))
            held, files = sorted(files[len(files) - n_val:]), sorted(files[:len(files) - n_val])
        else:
            held = _images_in(test_dir / folder) if (test_dir / folder).is_dir() else []
            if not held:
                raise UserError("experiment.missing_test_class", name=folder)
        train_paths += files
        train_labels += [label] * len(files)
        eval_paths += held
        eval_labels += [label] * len(held)
    if not folders:
        raise UserError("experiment.no_images", folder=str(train_dir))
    return FolderData(root, folders, train_paths, train_labels, eval_paths, eval_labels,
                      "test" if validation is None else "validation")


def class_order(n_classes: int, seed: int) -> list[int]:
    """The seed's permutation of class indices (the same for every method of that seed)."""
    order = list(range(n_classes))
    random.Random(seed).shuffle(order)
    return order


def split_tasks(order: Sequence[int], n_tasks: int) -> list[list[int]]:
    """Consecutive chunks of ``order``; equal sizes when divisible, else the first tasks get one more."""
    if not 1 <= n_tasks <= len(order):
        raise UserError("experiment.bad_tasks", tasks=n_tasks, classes=len(order))
    q, r = divmod(len(order), n_tasks)
    tasks, start = [], 0
    for t in range(n_tasks):
        size = q + (1 if t < r else 0)
        tasks.append(list(order[start:start + size]))
        start += size
    return tasks


# ---------------------------------------------------------------------------------------- runs
@dataclass
class ExperimentSettings:
    data: Path
    tasks: int
    seeds: list[int]
    encoder: str = "e5"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    memory_per_class: int = 20
    memory_total: Optional[int] = None
    epochs: Optional[int] = None        # None: SCRATCH_DEFAULTS (e5) or the LearnerConfig default
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    width: Optional[int] = None         # scratch tower width
    input_size: int = 32                # scratch tower input side (CLIP towers use their own)
    template: str = DEFAULT_TEMPLATE
    validation: Optional[float] = None
    cache_dir: Optional[Path] = None
    device: str = "auto"
    decode_workers: int = 2

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError("experiment.unknown_method", name=unknown[0], choices=", ".join(METHODS))


def _encoder_family(encoder) -> str:
    if encoder.name == "tiny-test":
        return "test"
    return "clip" if encoder.has_image_tower else "e5"


def _training_overrides(settings: ExperimentSettings, scratch: bool) -> dict:
    chosen = {"epochs": settings.epochs, "batch_size": settings.batch_size, "lr": settings.lr}
    if scratch:
        for key, value in chosen.items():
            if value is None:
                chosen[key] = SCRATCH_DEFAULTS[key]
    return {k: v for k, v in chosen.items() if v is not None}


def run_experiment(settings: ExperimentSettings, out: Path | None = None,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """Run every (seed, method) pair; return (and, with ``out``, keep writing) the results dict.

    ``progress(dict)`` gets the learner's per-batch dict plus ``run`` (index), ``runs``, ``method``,
    ``seed`` and ``tasks``, and a ``{"event": "run_done", ...}`` dict after each run.
    """
    import torch

    from core.encoders import load_encoder
    from core.sg import ContinualLearner, DecodedImageDataset, ImageCache, LearnerConfig, summarize

    started = time.perf_counter()
    data = scan_folder(settings.data, settings.validation)
    n_classes = len(data.folders)
    split_tasks(range(n_classes), settings.tasks)  # validates the task count before any heavy work
    encoder = load_encoder(settings.encoder)
    family = _encoder_family(encoder)
    scratch = not encoder.has_image_tower
    width = settings.width or SCRATCH_DEFAULTS["width"]

    def build_model():
        if scratch:
            return encoder.build_image_model(input_size=settings.input_size, width=width)
        return encoder.build_image_model()

    input_size = settings.input_size if scratch else build_model().input_size

    # Text features once for all classes, rows in sorted-folder order.
    names = data.names
    U_all = encoder.encode_names(names).float()
    W_all = encoder.encode_prompts([settings.template.format(n) for n in names]).float()

    # Decode once; shared by every run.
    cache_dir = settings.cache_dir or Path(tempfile.gettempdir()) / f"sgcl-experiment-cache-{os.getuid()}"
    cache = ImageCache(cache_dir, workers=settings.decode_workers)
    decode_started = time.perf_counter()
    train_images = cache.load([str(p) for p in data.train_paths], input_size)
    eval_images = cache.load([str(p) for p in data.eval_paths], input_size)
    decode_seconds = time.perf_counter() - decode_started
    train_labels = torch.tensor(data.train_labels, dtype=torch.long)
    eval_labels = torch.tensor(data.eval_labels, dtype=torch.long)

    overrides = _training_overrides(settings, scratch)
    base = LearnerConfig.for_encoder(family, **overrides, device=settings.device)
    results = {
        "format": "sgcl-experiment/1",
        "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                        for k, v in dataclasses.asdict(settings).items()},
                     "width": width if scratch else None, "input_size": input_size,
                     "encoder_version": encoder.version, "encoder_family": family,
                     "logit_scale": encoder.logit_scale, "eval_split": data.eval_split,
                     "learner_config": json.loads(base.to_json())},
        "classes": names,
        "data": {"n_train": len(data.train_paths), "n_eval": len(data.eval_paths),
                 "images_decoded": cache.decoded, "decode_seconds": decode_seconds},
        "runs": [],
    }
    runs = [(seed, method) for seed in settings.seeds for method in settings.methods]
    for run_index, (seed, method) in enumerate(runs):
        spec = METHODS[method]
        order = class_order(n_classes, seed)
        tasks = split_tasks(order, settings.tasks)
        position = torch.empty(n_classes, dtype=torch.long)
        position[torch.tensor(order)] = torch.arange(n_classes)  # folder index → run class index
        run_train_labels, run_eval_labels = position[train_labels], position[eval_labels]
        U, W = U_all[order], W_all[order]
        config = dataclasses.replace(
            base, seed=seed,
            lambda_sl=base.lambda_sl if spec.sg_rl else 0.0,
            lambda_kd=base.lambda_kd if spec.sg_kd else 0.0,
            exemplars_per_class=settings.memory_per_class if spec.memory else 0,
            memory_total=settings.memory_total if spec.memory else None)
        torch.manual_seed(seed)  # same initial weights for every method of a seed
        learner = ContinualLearner(build_model(), logit_scale=encoder.logit_scale, config=config)

        holdouts, task_classes, acc, acc_aware, losses = [], [], [], [], []
        run_started = time.perf_counter()
        seen = 0
        for t, folder_ids in enumerate(tasks):
            ids = list(range(seen, seen + len(folder_ids)))  # run class indices of this task
            seen += len(folder_ids)
            task_classes.append(ids)
            rows = torch.nonzero((run_train_labels >= ids[0]) & (run_train_labels <= ids[-1])).flatten()
            train = DecodedImageDataset(train_images[rows], run_train_labels[rows], rows)
            eval_rows = torch.nonzero((run_eval_labels >= ids[0]) & (run_eval_labels <= ids[-1])).flatten()
            holdouts.append(DecodedImageDataset(eval_images[eval_rows], run_eval_labels[eval_rows], eval_rows))

            def report(values):
                if progress is not None:
                    progress({**values, "run": run_index, "runs": len(runs), "method": method,
                              "seed": seed, "tasks": len(tasks)})

            losses.append(learner.learn_task(t, train, U[:seen], W[:seen], ids, progress=report))
            result = learner.evaluate(holdouts, W[:seen], task_classes)
            acc.append(result["acc"])
            acc_aware.append(result["acc_task_aware"])
        run = {"method": method, "seed": seed,
               "class_order": [names[i] for i in order],
               "tasks": [[names[i] for i in task] for task in tasks],
               "acc": acc, "acc_task_aware": acc_aware,
               "summary": summarize(acc, task_classes, acc_aware),
               "last_epoch_losses": losses,
               "memory_size": len(learner.memory),
               "seconds": time.perf_counter() - run_started}
        results["runs"].append(run)
        results["aggregate"] = aggregate(results["runs"], settings.methods)
        results["seconds"] = time.perf_counter() - started
        if out is not None:
            _write_json(out, results)
        if progress is not None:
            progress({"event": "run_done", "run": run_index, "runs": len(runs), "method": method,
                      "seed": seed, "summary": run["summary"]})
    results.setdefault("aggregate", aggregate(results["runs"], settings.methods))
    results["seconds"] = time.perf_counter() - started
    if out is not None:
        _write_json(out, results)
    return results


def _write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- summaries
TABLE_METRICS = ("aia", "last", "forgetting", "bwt", "aia_task_aware", "last_task_aware")


def aggregate(runs: Sequence[dict], methods: Sequence[str]) -> dict:
    """Per method and metric: mean, sample std (0 with one seed) and n over the seeds."""
    out = {}
    for method in methods:
        summaries = [r["summary"] for r in runs if r["method"] == method]
        if not summaries:
            continue
        stats = {}
        for metric in TABLE_METRICS:
            values = [s[metric] for s in summaries if s.get(metric) is not None]
            if values:
                stats[metric] = {"mean": statistics.fmean(values),
                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                 "n": len(values)}
        out[method] = stats
    return out


def format_table(aggregated: dict) -> str:
    """Markdown table, accuracies in % (mean ± std over seeds)."""
    header = ("| method | seeds | AIA | last | forgetting | BWT | AIA (task-aware) | last (task-aware) |\n"
              "|---|---|---|---|---|---|---|---|")
    lines = [header]
    for method, stats in aggregated.items():
        def cell(metric):
            s = stats.get(metric)
            return "–" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
        n = stats.get("aia", {}).get("n", 0)
        lines.append(f"| {METHODS[method].label} | {n} | " + " | ".join(cell(m) for m in TABLE_METRICS) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- CLI
def add_experiment_parser(sub, common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Declare the ``experiment`` sub-command on an argparse sub-parsers object."""
    p = sub.add_parser("experiment", parents=[common] if common is not None else [],
                       help="class-incremental benchmark of the five methods on an ImageNet-style folder")
    p.add_argument("--data", type=Path, required=True, help="folder with train/<class>/* and test/<class>/*")
    p.add_argument("--tasks", type=int, required=True, help="number of tasks (classes split equally)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (class order and initialisation)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--encoder", default="e5", help="encoder spec (default e5)")
    p.add_argument("--out", type=Path, required=True, help="results JSON (rewritten after every run)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--memory-per-class", type=int, default=20, help="exemplars per class (default 20)")
    memory.add_argument("--memory-total", type=int, help="fixed total exemplar budget over all seen classes")
    p.add_argument("--epochs", type=int, help=f"epochs per task (scratch tower default {SCRATCH_DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"(scratch tower default {SCRATCH_DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=float, help=f"(scratch tower default {SCRATCH_DEFAULTS['lr']})")
    p.add_argument("--width", type=int, help=f"scratch tower width (default {SCRATCH_DEFAULTS['width']})")
    p.add_argument("--input-size", type=int, default=32, help="scratch tower input side in pixels (default 32)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template for w (default %(default)r)")
    p.add_argument("--validation", type=float,
                   help="evaluate on this fraction of train/ held out per class instead of test/ (tuning)")
    p.add_argument("--cache", type=Path, help="decoded-image cache folder (default: a temp folder)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run_experiment_command)
    return p


def settings_from_args(args: argparse.Namespace) -> ExperimentSettings:
    return ExperimentSettings(
        data=args.data, tasks=args.tasks, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        encoder=args.encoder, methods=list(args.methods),
        memory_per_class=args.memory_per_class, memory_total=args.memory_total,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
        input_size=args.input_size, template=args.template, validation=args.validation,
        cache_dir=args.cache, device=args.device)


def run_experiment_command(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(max(1, args.threads))
    settings = settings_from_args(args)
    n_runs = len(settings.seeds) * len(settings.methods)
    bar = tqdm(total=n_runs * settings.tasks, unit="task", file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} tasks [{elapsed}<{remaining}{postfix}]")
    last_update = [0.0]

    def progress(info: dict) -> None:
        if info.get("event") == "run_done":
            s = info["summary"]
            bar.write(f"{info['method']:>9} seed {info['seed']}: AIA {100 * s['aia']:.1f}  "
                      f"last {100 * s['last']:.1f}")
            return
        now = time.monotonic()
        if now - last_update[0] < 0.5 and info["fraction"] < 1.0:
            return
        last_update[0] = now
        bar.n = info["run"] * info["tasks"] + info["task"] + info["fraction"]
        bar.set_postfix_str(f"{info['method']} s{info['seed']} t{info['task']} "
                            f"ep{info['epoch'] + 1}/{info['epochs']} loss {info['loss']:.3f} "
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


def main(argv: list[str] | None = None) -> int:
    """``python -m core.experiment ...`` (same options as ``python -m core.cli experiment``)."""
    from core.cli import main as cli_main

    return cli_main(["experiment", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
