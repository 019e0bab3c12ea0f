"""Class-incremental experiment protocol: registered methods × seeds on an ImageNet-style folder.

``python -m core.cli experiment --data ROOT --tasks N --seeds 3 --encoder effnet-lite0+e5 --out results.json``

ROOT holds ``train/<class>/*`` and ``test/<class>/*`` (listed by :func:`core.images.scan_image_folder`,
the scanner the folder import uses).  For every seed the classes (folder names, ``_`` read as a space)
are shuffled by the seed and split into N tasks; every method of that seed sees the same class order,
the same initial weights and the same batch order, so methods are compared pairwise.  Methods are the
names registered in core/sg/methods (``ncm``, ``joint``, ``finetune``, ``exemplars``, ``sgrl``, ``sgkd``,
``both``), all with the same training configuration: the encoder registry's defaults plus the
command's overrides.

Text features are computed once for all classes (bare names → ``encode_names`` = u, the template
``"a photo of a {}."`` → ``encode_prompts`` = w).  With a pretrained backbone, the frozen prefix's
output of every image is computed once into a feature cache and shared by every run (training then
runs only the suffix); the scratch tower's images are decoded once.  After each task every seen task's
holdout is evaluated (task-agnostic and task-aware) and, while unseen classes remain, the AUROC of
"trained vs not yet trained" images by the best class score (core/sg/openset.py).  The matrices and
:func:`core.sg.metrics.summarize` of every run go to the JSON file, rewritten after each run.

``shots`` = K keeps only the first K training images of each class (the few-shot protocol).

Unknown detection: after each task with classes still unseen, the AUROC of the method's familiarity
(trained-class evaluation images vs images of classes not yet trained), and for closed-form heads
the AUROC of every score they offer (``auroc_by_score``); then, as the app does, a conformal threshold
at ``reject_rate`` calibrated on half of the trained classes' evaluation images (even positions),
and the share of the other half (trained, should pass) and of the untrained images (should be
rejected) that falls below it.

``validation`` = F holds out a fraction F of each class's *training* images (fixed, seed-independent)
and evaluates on them instead of ``test/``, which is then never read: use it to choose
hyperparameters without touching the test split.

Pure of SQLite and Streamlit; the command line (argument parsing, progress bar) lives in core/cli.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from core.encoders.registry import DEFAULT_SPEC
from core.i18n import UserError

__all__ = ["ExperimentSettings", "FolderData", "scan_folder", "class_order", "split_tasks",
           "class_display_name", "run_experiment", "aggregate", "format_table", "METHOD_ORDER"]

DEFAULT_TEMPLATE = "a photo of a {}."
#: table order of the methods (any other registered method follows)
METHOD_ORDER = ("ncm", "joint", "finetune", "exemplars", "sgrl", "sgkd", "both")


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


def scan_folder(root: str | os.PathLike, validation: float | None = None, shots: int | None = None) -> FolderData:
    """List ``root/train/<class>/*`` and the evaluation images.

    Without ``validation`` the evaluation images are ``root/test/<class>/*`` (every class must have
    some).  With ``validation`` = F the last ⌈F·n⌉ of each class's training images, in a fixed
    pseudo-random order that does not depend on the run seed, become the evaluation set (at least one
    stays for training) and ``test/`` is not read.  With ``shots`` = K only the first K training
    images of each class (sorted by name, after the validation split) are kept.
    """
    from core.images import scan_image_folder

    root = Path(root)
    if not (root / "train").is_dir():
        raise UserError("experiment.no_split", root=str(root), split="train")
    if validation is None and not (root / "test").is_dir():
        raise UserError("experiment.no_split", root=str(root), split="test")
    if validation is not None and not 0.0 < validation < 1.0:
        raise UserError("experiment.bad_validation", value=validation)
    scan = scan_image_folder(root)
    by_split: dict[str, dict[str, list[Path]]] = {"train": {}, "test": {}}
    for rel, label, split in scan:
        if split in by_split:
            by_split[split].setdefault(label, []).append(scan.root / rel)
    folders = sorted(by_split["train"])
    if not folders:
        raise UserError("experiment.no_images", folder=str(root / "train"))
    train_paths, train_labels, eval_paths, eval_labels = [], [], [], []
    for label, folder in enumerate(folders):
        files = sorted(by_split["train"][folder])
        if validation is not None:
            random.Random(f"validation:{folder}").shuffle(files)
            n_val = min(len(files) - 1, max(1, math.ceil(validation * len(files))))
            held, files = sorted(files[len(files) - n_val:]), sorted(files[:len(files) - n_val])
        else:
            held = sorted(by_split["test"].get(folder, []))
            if not held:
                raise UserError("experiment.missing_test_class", name=folder)
        if shots is not None:
            files = files[:max(1, int(shots))]
        train_paths += files
        train_labels += [label] * len(files)
        eval_paths += held
        eval_labels += [label] * len(held)
    return FolderData(scan.root, folders, train_paths, train_labels, eval_paths, eval_labels,
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
    encoder: str = DEFAULT_SPEC
    methods: list[str] = field(default_factory=lambda: list(METHOD_ORDER))
    overrides: dict = field(default_factory=dict)   # LearnerConfig fields over the registry's defaults
    memory_per_class: int = 20
    memory_total: Optional[int] = None
    width: Optional[int] = None         # scratch tower width
    input_size: Optional[int] = None    # image side (default: the backbone's)
    template: str = DEFAULT_TEMPLATE
    validation: Optional[float] = None
    shots: Optional[int] = None          # first K training images per class (few-shot)
    cache_dir: Optional[Path] = None
    device: str = "auto"
    decode_workers: int = 2

    def __post_init__(self):
        from core.sg.methods import method_names

        unknown = [m for m in self.methods if m not in method_names()]
        if unknown:
            raise UserError("experiment.unknown_method", name=unknown[0], choices=", ".join(method_names()))


def _build_model(encoder, config, settings: ExperimentSettings):
    extra = {}
    if settings.input_size:
        extra["input_size"] = settings.input_size
    if settings.width:
        extra["width"] = settings.width
    return encoder.build_image_model(trainable_blocks=config.trainable_blocks, **extra)


def _load_inputs(encoder, model, settings, data: FolderData, config):
    """All train and eval inputs, computed once: cached prefix features, or decoded images."""
    from core.sg import ImageCache
    from core.sg.features import PrefixFeatureCache
    from core.sg.learner import resolve_device

    cache_dir = settings.cache_dir or Path(tempfile.gettempdir()) / f"sgcl-experiment-cache-{os.getuid()}"
    started = time.perf_counter()
    if encoder.image_version is not None:
        cache = PrefixFeatureCache(Path(cache_dir) / "features", model, encoder.image_version,
                                   views=config.feature_views, decode_workers=settings.decode_workers)
        device = str(resolve_device(settings.device))

        def load(paths):
            return cache.load([(_path_key(p), str(p)) for p in paths], device)
        train, evaluation = load(data.train_paths), load(data.eval_paths)
        info = {"mode": "features", "computed": cache.computed, "cache": cache.slug}
    else:
        cache = ImageCache(Path(cache_dir) / "decoded", workers=settings.decode_workers)
        train = cache.load([str(p) for p in data.train_paths], model.input_size)
        evaluation = cache.load([str(p) for p in data.eval_paths], model.input_size)
        info = {"mode": "images", "computed": cache.decoded}
    info["seconds"] = time.perf_counter() - started
    return train, evaluation, info


def _path_key(path: Path) -> str:
    import hashlib

    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def run_experiment(settings: ExperimentSettings, out: Path | None = None,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """Run every (seed, method) pair; return (and, with ``out``, keep writing) the results dict.

    ``progress(dict)`` gets the learner's per-batch dict plus ``run`` (index), ``runs``, ``method``,
    ``seed`` and ``tasks``, and a ``{"event": "run_done", ...}`` dict after each run.
    """
    import torch

    from core.encoders import default_config, load_encoder
    from core.sg import ContinualLearner, summarize
    from core.sg.data import DecodedImageDataset, FeatureDataset
    from core.sg.openset import auroc, calibrate_threshold

    started = time.perf_counter()
    data = scan_folder(settings.data, settings.validation, settings.shots)
    n_classes = len(data.folders)
    split_tasks(range(n_classes), settings.tasks)  # validates the task count before any heavy work
    encoder = load_encoder(settings.encoder)
    base = default_config(settings.encoder, **settings.overrides, device=settings.device)
    torch.manual_seed(0)
    probe_model = _build_model(encoder, base, settings)
    names = data.names
    U_all = encoder.encode_names(names).float()
    W_all = encoder.encode_prompts([settings.template.format(n) for n in names]).float()
    train_inputs, eval_inputs, input_info = _load_inputs(encoder, probe_model, settings, data, base)
    del probe_model
    Samples = FeatureDataset if input_info["mode"] == "features" else DecodedImageDataset
    train_labels = torch.tensor(data.train_labels, dtype=torch.long)
    eval_labels = torch.tensor(data.eval_labels, dtype=torch.long)
    results = {
        "format": "sgcl-experiment/2",
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
                     "encoder_version": encoder.version, "eval_split": data.eval_split,
                     "learner_config": json.loads(base.to_json()), "inputs": input_info["mode"]},
        "classes": names,
        "data": {"n_train": len(data.train_paths), "n_eval": len(data.eval_paths), **input_info},
        "runs": [],
    }
    runs = [(seed, method) for seed in settings.seeds for method in settings.methods]
    for run_index, (seed, method) in enumerate(runs):
        order = class_order(n_classes, seed)
        tasks = split_tasks(order, settings.tasks)
        position = torch.empty(n_classes, dtype=torch.long)
        position[torch.tensor(order)] = torch.arange(n_classes)  # folder index → run class index
        run_train_labels, run_eval_labels = position[train_labels], position[eval_labels]
        U, W = U_all[order], W_all[order]
        config = dataclasses.replace(base, seed=seed, method=method,
                                     exemplars_per_class=settings.memory_per_class,
                                     memory_total=settings.memory_total)
        torch.manual_seed(seed)  # same initial weights for every method of a seed
        learner = ContinualLearner(_build_model(encoder, config, settings), encoder.logit_scale, config)
        holdouts, task_classes, acc, acc_aware, losses, aurocs = [], [], [], [], [], []
        by_score: dict[str, list[float]] = {}
        rejected_trained, rejected_untrained = [], []
        run_started = time.perf_counter()
        seen = 0
        for t, folder_ids in enumerate(tasks):
            ids = list(range(seen, seen + len(folder_ids)))  # run class indices of this task
            seen += len(folder_ids)
            task_classes.append(ids)
            rows = torch.nonzero((run_train_labels >= ids[0]) & (run_train_labels <= ids[-1])).flatten()
            train = Samples(train_inputs[rows], run_train_labels[rows], rows)
            eval_rows = torch.nonzero((run_eval_labels >= ids[0]) & (run_eval_labels <= ids[-1])).flatten()
            holdouts.append(Samples(eval_inputs[eval_rows], run_eval_labels[eval_rows], eval_rows))

            def report(values):
                if progress is not None:
                    progress({**values, "run": run_index, "runs": len(runs), "method": method,
                              "seed": seed, "tasks": len(tasks)})

            losses.append(learner.learn_task(t, train, U[:seen], W[:seen], ids, progress=report))
            result = learner.evaluate(holdouts, W[:seen], task_classes, return_scores=True)
            acc.append(result["acc"])
            acc_aware.append(result["acc_task_aware"])
            unseen = torch.nonzero(run_eval_labels >= seen).flatten()
            known_best = torch.cat(result["max_scores"])
            threshold = calibrate_threshold([known_best[0::2]], config.reject_rate)
            if threshold is not None and len(known_best) > 1:
                rejected_trained.append(float((known_best[1::2] < threshold).float().mean()))
            if len(unseen):
                unknown = Samples(eval_inputs[unseen], run_eval_labels[unseen], unseen)
                unknown_best = learner.familiarity(unknown.first_view(), W[:seen])
                aurocs.append(auroc(known_best, unknown_best))
                if threshold is not None:
                    rejected_untrained.append(float((unknown_best < threshold).float().mean()))
                scorer = getattr(learner.method, "unknown_scores", None)
                if scorer is not None:
                    known_all = [scorer(learner, h.first_view(), W[:seen]) for h in holdouts]
                    unknown_all = scorer(learner, unknown.first_view(), W[:seen])
                    for name in unknown_all:
                        by_score.setdefault(name, []).append(
                            auroc(torch.cat([k[name] for k in known_all]), unknown_all[name]))
        summary = summarize(acc, task_classes, acc_aware)
        summary["auroc"] = statistics.fmean(aurocs) if aurocs else None
        summary["rejected_trained"] = statistics.fmean(rejected_trained) if rejected_trained else None
        summary["rejected_untrained"] = statistics.fmean(rejected_untrained) if rejected_untrained else None
        for name, values in by_score.items():
            summary[f"auroc_{name}"] = statistics.fmean(values)
        run = {"method": method, "seed": seed,
               "class_order": [names[i] for i in order],
               "tasks": [[names[i] for i in task] for task in tasks],
               "acc": acc, "acc_task_aware": acc_aware, "auroc_per_task": aurocs,
               "auroc_by_score": by_score, "rejected_trained_per_task": rejected_trained,
               "rejected_untrained_per_task": rejected_untrained,
               "summary": summary,
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
TABLE_METRICS = ("aia", "last", "forgetting", "bwt", "aia_task_aware", "last_task_aware", "auroc",
                 "rejected_trained", "rejected_untrained")
#: further metrics kept in the aggregate (not in the table): AUROC of each unknown score of a head
EXTRA_METRICS = tuple(f"auroc_{k}" for k in ("maha", "rmaha", "energy", "maxscore", "cosine"))


def aggregate(runs: Sequence[dict], methods: Sequence[str]) -> dict:
    """Per method and metric: mean, sample std (0 with one seed) and n over the seeds."""
    out = {}
    for method in methods:
        summaries = [r["summary"] for r in runs if r["method"] == method]
        if not summaries:
            continue
        stats = {}
        for metric in TABLE_METRICS + EXTRA_METRICS:
            values = [s[metric] for s in summaries if s.get(metric) is not None]
            if values:
                stats[metric] = {"mean": statistics.fmean(values),
                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                 "n": len(values)}
        out[method] = stats
    return out


def paired_differences(runs: Sequence[dict], method: str, baseline: str, metric: str = "last") -> dict | None:
    """Mean ± std over seeds of ``method − baseline`` on ``metric`` (paired by seed)."""
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["method"]] = r["summary"].get(metric)
    diffs = [v[method] - v[baseline] for v in by_seed.values()
             if v.get(method) is not None and v.get(baseline) is not None]
    if not diffs:
        return None
    return {"mean": statistics.fmean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "n": len(diffs), "wins": sum(d > 0 for d in diffs)}


def format_table(aggregated: dict) -> str:
    """Markdown table, accuracies in % (mean ± std over seeds)."""
    from core.sg.methods import METHODS

    header = ("| method | seeds | AIA | last | forgetting | BWT | AIA (task-aware) | last (task-aware) | AUROC "
              "| trained rejected | untrained rejected |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for method, stats in aggregated.items():
        def cell(metric):
            s = stats.get(metric)
            return "–" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
        n = stats.get("last", {}).get("n", 0)
        title = METHODS[method].title if method in METHODS else method
        lines.append(f"| {title} | {n} | " + " | ".join(cell(m) for m in TABLE_METRICS) + " |")
    return "\n".join(lines)
