"""The bridge between the database and the learner (core.sg): one ``train`` job = one task of a run.

What a train job for task k of run r does:

1. Class table: the classes of tasks 0..k−1 with their text features **as stored in task k−1's
   checkpoint** (so a later glossary edit never moves an old class in text space), plus task k's new
   labels embedded once now through the encoder + SQLite embedding cache (bare name u, prompt w).
2. Datasets from the ``images`` table (class index = row of the class table, sample id = image id):
   with a pretrained backbone, the frozen prefix's output per image from the feature cache
   (``SGCL_HOME/cache/features``, core/features.py), so epochs run only the trainable suffix; with
   the scratch tower, images decoded once through ``ImageCache`` under ``SGCL_HOME/cache/decoded``.
3. Learner: the run's image model and method, restored from ``checkpoints/<run>/task-<k−1>.pt``
   (exemplars are image ids, their inputs are re-read through the caches), with the task's *own*
   configuration (the run's config + this task's overrides, stored with the task), then
   ``learn_task`` with progress and cancel callbacks.
4. Evaluate every seen task on its holdout images and calibrate the "not one of the trained classes"
   threshold on them (core/sg/openset.py); save ``task-<k>.pt`` atomically; then, in one
   transaction, upsert the ``metrics`` rows, mark the labels trained and complete the job. A crash
   anywhere before that commit leaves nothing half-written: the job is re-queued and redone from
   task k−1's checkpoint (or finalised straight from ``task-<k>.pt`` if it was already saved; a
   damaged ``task-<k>.pt`` is moved aside, audited, and the task retrained).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core import jobs
from core.auth import SYSTEM
from core.features import image_items
from core.jobs import encode_message
from core.store import Store, now_iso

PROGRESS_EVERY_S = 0.5
CURVE_POINTS = 400


class JobLost(Exception):
    """The job stopped being this worker's while it ran (judged stale and re-queued)."""


def checkpoint_dir(store: Store, run_id: int) -> Path:
    return store.home / "checkpoints" / str(int(run_id))


def checkpoint_path(store: Store, run_id: int, task_idx: int) -> Path:
    return checkpoint_dir(store, run_id) / f"task-{int(task_idx)}.pt"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_checkpoint_temps(store: Store, max_age: float = 3600.0) -> int:
    """Delete the temporary files of checkpoint writes that were killed (kill -9, power loss): those whose
    writer (host and pid in the name, core/sg/checkpoint.py) is a dead process on this host, and any older
    than ``max_age`` seconds (a write takes seconds). Called when a worker starts. Returns how many."""
    import socket

    from core.sg.checkpoint import temp_owner

    root = store.home / "checkpoints"
    if not root.is_dir():
        return 0
    host, now, removed = socket.gethostname(), time.time(), 0
    for tmp in root.glob("*/*.tmp"):
        try:
            owner = temp_owner(tmp.name)
            dead = owner is not None and owner[0] == host and not _pid_alive(owner[1])
            if dead or now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def decoded_cache_dir(store: Store) -> Path:
    return store.home / "cache" / "decoded"


# ---- datasets from the images table --------------------------------------------------------------------

def _image_rows(store: Store, label_ids: list[int], split: str) -> list[dict]:
    if not label_ids:
        return []
    marks = ",".join("?" * len(label_ids))
    return store.query(f"SELECT id, sha256, path, label_id FROM images WHERE split = ? AND label_id IN ({marks}) "  # nosec B608  # placeholders only
                       "ORDER BY label_id, id", (split, *label_ids))


def _image_rows_by_id(store: Store, ids) -> dict[int, dict]:
    out, wanted = {}, sorted({int(i) for i in ids})
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.query(f"SELECT id, sha256, path, label_id FROM images WHERE id IN ({marks})", tuple(chunk)):  # nosec B608  # placeholders only
            out[r["id"]] = r
    return out


class SampleSource:
    """Turns image rows into learner samples: cached prefix features when the run's backbone has a
    frozen pretrained prefix, else decoded images."""

    def __init__(self, store: Store, encoder, learner, device: str, progress: Callable[[int, int], None] | None = None):
        from core.features import cache_for
        from core.sg.data import ImageCache

        self.store = store
        self.size = learner.model.input_size
        self.device = device
        self.progress = progress
        self.features = cache_for(store, encoder, learner.model, learner.config.feature_views)
        self.images = ImageCache(decoded_cache_dir(store), workers=max(1, learner.config.num_workers))

    def build(self, rows: list[dict], labels: list[int]):
        from core.sg.data import DecodedImageDataset, FeatureDataset

        ids = [r["id"] for r in rows]
        if self.features is not None:
            if not rows:
                return FeatureDataset(torch.zeros(0, 1, 1, 1), [], [])
            inputs = self.features.load(image_items(self.store, rows), self.device, self.progress)
            return FeatureDataset(inputs, labels, ids)
        if not rows:
            return DecodedImageDataset(torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8), [], [])
        return DecodedImageDataset.from_sources([str(self.store.home / r["path"]) for r in rows], labels, ids,
                                                self.size, cache=self.images)


def exemplar_samples(store: Store, memory_state: dict, source: SampleSource):
    """The exemplars named in a checkpoint's memory, labelled with the class they were herded for. Ids of
    images deleted since are dropped from the memory state (returned pruned)."""
    wanted = [int(i) for ids in memory_state["exemplars"].values() for i in ids]
    rows = _image_rows_by_id(store, wanted)
    pruned = {c: [int(i) for i in ids if int(i) in rows] for c, ids in memory_state["exemplars"].items()}
    memory_state = dict(memory_state, exemplars=pruned)
    members = [(int(c), rows[i]) for c, ids in pruned.items() for i in ids]
    if not members:
        return memory_state, None
    return memory_state, source.build([r for _, r in members], [c for c, _ in members])


# ---- progress -------------------------------------------------------------------------------------------

@dataclass
class _Progress:
    store: Store
    job_id: int
    device: str
    task_idx: int
    started: float = field(default_factory=time.monotonic)
    train_started: float | None = None
    last_write: float = 0.0
    curve: list = field(default_factory=list)
    step: int = 0
    stride: int = 1

    def phase(self, fraction: float, name: str, **extra) -> None:
        # stored as a message key, so each viewer reads the phase in their own language
        self._write(fraction, encode_message(f"train.phase.{name}"), extra, force=True)

    def features(self, done: int, total: int) -> None:
        self._write(0.05 + 0.05 * done / max(1, total),
                    encode_message("train.phase.features", done=done, total=total), {}, force=done >= total)

    def batch(self, info: dict) -> None:
        if self.train_started is None:
            self.train_started = time.monotonic()
        self.step += 1
        if self.step % self.stride == 0:
            # whatever loss terms the method returned: loss, loss_clip, loss_sgrl, …
            self.curve.append({"step": self.step, "epoch": info["epoch"] + 1,
                               **{k: round(float(v), 5) for k, v in info.items() if k.startswith("loss")}})
            if len(self.curve) > CURVE_POINTS:  # keep the curve small: halve its resolution
                self.curve = self.curve[::2]
                self.stride *= 2
        elapsed = time.monotonic() - self.train_started
        frac = float(info["fraction"])
        eta = elapsed / frac * (1 - frac) if frac > 0 else None
        message = encode_message("train.phase.batch", epoch=info["epoch"] + 1, epochs=info["epochs"],
                                 batch=info["batch"], batches=info["batches"])
        self._write(0.1 + 0.8 * frac, message, {
            "epoch": info["epoch"] + 1, "epochs": info["epochs"], "batch": info["batch"],
            "batches": info["batches"], "loss": info.get("loss", 0.0), "images_per_s": info["images_per_s"],
            "eta_s": eta}, force=frac >= 1.0)

    def _write(self, fraction: float, message: str, extra: dict, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        detail = {"task": self.task_idx, "device": self.device, "elapsed_s": now - self.started,
                  "curve": self.curve, **extra}
        jobs.set_progress(self.store, self.job_id, fraction, message, detail)


def _throttled(check: Callable[[], bool], every: float = PROGRESS_EVERY_S) -> Callable[[], bool]:
    state = {"at": 0.0, "value": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["value"] and now - state["at"] >= every:
            state["at"], state["value"] = now, bool(check())
        return state["value"]
    return should_stop


# ---- the job --------------------------------------------------------------------------------------------

def build_learner(encoder, config):
    """A fresh learner for ``encoder``: the image model is seeded by the run's seed, so a restored
    checkpoint lands on the same frozen weights it was trained on."""
    from core.sg.learner import ContinualLearner

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        model = encoder.build_image_model(trainable_blocks=config.trainable_blocks)
    return ContinualLearner(model, encoder.logit_scale, config)


def _usable_saved_checkpoint(store: Store, path: Path, task: dict, job: dict):
    """The checkpoint an earlier attempt of this task saved, if it is whole and belongs to this attempt.
    A file that cannot be loaded is moved aside (audited) so the task is simply retrained."""
    from core.sg.checkpoint import load_checkpoint

    if not path.exists():
        return None
    try:
        saved = load_checkpoint(path)
    except Exception as exc:  # truncated, garbage, or not ours: never block the task for ever
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        os.replace(path, aside)
        with store.transaction():
            store.audit("system", "checkpoint.quarantine", "task", task["id"], path=str(aside),
                        reason=f"{type(exc).__name__}: {str(exc)[:200]}", job_id=job["id"])
        return None
    extra = saved["extra"]
    if extra.get("task_id") == task["id"] and extra.get("label_ids") == task["label_ids"] \
            and extra.get("attempt_key") == _attempt_key(task):
        return saved
    path.unlink()   # a previous attempt with other labels: not this task's result
    return None


def run_train_job(store: Store, job: dict, *, worker_id: str, device: str = "auto",
                  should_stop: Callable[[], bool] | None = None) -> dict:
    """Train task ``job.payload.task_idx`` of ``job.run_id``; raises ``core.sg.Cancelled`` when
    stopped (cancel requested or worker shutting down)."""
    from core.embeddings import label_name_embeddings, label_prompt_embeddings
    from core.encoders import load_encoder
    from core.labels import get_label
    from core.runs import get_run, list_tasks, new_train_images, task_config
    from core.sg.checkpoint import load_checkpoint, save_checkpoint
    from core.sg.learner import resolve_device
    from core.sg.openset import calibrate_threshold, calibration_scores, rejection_rates

    payload = job["payload"]
    k = int(payload["task_idx"])
    run = get_run(store, job["run_id"])
    tasks = {t["idx"]: t for t in list_tasks(store, run["id"])}
    task = tasks[k]
    if [i for i in range(k) if tasks.get(i, {}).get("status") != "done"]:
        raise RuntimeError(f"task {k} of run {run['id']} cannot start: an earlier task is not done")
    config = task_config(run, task, legacy_overrides=payload.get("overrides"))
    config.device = device
    dev = resolve_device(device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    progress = _Progress(store, job["id"], device_name, k)
    stop = _throttled(lambda: (should_stop is not None and should_stop()) or jobs.cancel_requested(store, job["id"]))

    out_path = checkpoint_path(store, run["id"], k)
    saved = _usable_saved_checkpoint(store, out_path, task, job)
    if saved is not None:  # saved by an earlier attempt that died before its commit: just finalise it
        progress.phase(0.95, "finalising")
        return _finalise(store, job, worker_id, run, task, saved)

    progress.phase(0.01, "loading_encoder")
    encoder = load_encoder(run["encoder"], store.home)
    learner = build_learner(encoder, config)
    source = SampleSource(store, encoder, learner, str(dev), progress.features)

    previous = load_checkpoint(checkpoint_path(store, run["id"], k - 1)) if k > 0 else None
    update = task.get("kind") == "update"
    # An update adds no rows to the class table: its labels are classes of earlier tasks.
    new_labels = [] if update else [get_label(store, i) for i in task["label_ids"]]
    progress.phase(0.03, "embedding")
    if previous is not None:
        table = previous["class_table"]
        if table["encoder"] != encoder.version:
            raise RuntimeError(f"run {run['id']} was trained with {table['encoder']}, now {encoder.version}")
        class_ids = list(table["class_ids"]) + [l["id"] for l in new_labels]
        names = list(table["names"]) + [l["canonical"] for l in new_labels]
        U, W = table["name_feats"], table["prompt_feats"]
        if new_labels:
            U = torch.cat([U, label_name_embeddings(store, encoder, new_labels)])
            W = torch.cat([W, label_prompt_embeddings(store, encoder, new_labels)])
    elif update:
        raise RuntimeError(f"task {k} of run {run['id']} updates classes, but the run has learned none")
    else:
        class_ids, names = [l["id"] for l in new_labels], [l["canonical"] for l in new_labels]
        U, W = label_name_embeddings(store, encoder, new_labels), label_prompt_embeddings(store, encoder, new_labels)
    class_of_label = {lid: i for i, lid in enumerate(class_ids)}
    missing = [lid for lid in task["label_ids"] if lid not in class_of_label]
    if missing:
        raise RuntimeError(f"task {k} of run {run['id']} updates labels the run has not learned: {missing}")
    # Holdouts are evaluated per new-class task (an update task's images belong to those classes).
    eval_tasks = [u for u in range(k + 1) if (tasks[u] if u < k else task).get("kind", "new") == "new"]
    per_task_labels = [(tasks[u] if u < k else task)["label_ids"] for u in eval_tasks]
    classes_per_task = [[class_of_label[l] for l in labels] for labels in per_task_labels]

    progress.phase(0.05, "decoding")

    def samples(rows):
        return source.build(rows, [class_of_label[r["label_id"]] for r in rows])

    if update:   # only the train images no task of this run has learned yet
        fresh = new_train_images(store, run["id"], task["label_ids"])
        wanted = _image_rows_by_id(store, [i for ids in fresh.values() for i in ids])
        train_rows = [wanted[i] for i in sorted(wanted)]
        if not train_rows:
            raise RuntimeError(f"task {k} of run {run['id']}: its labels have no new train images")
    else:
        train_rows = _image_rows(store, task["label_ids"], "train")
    train = samples(train_rows)
    holdouts = [samples(_image_rows(store, labels, "holdout")) for labels in per_task_labels]
    if previous is not None:
        memory_state, exemplars = exemplar_samples(store, previous["learner"]["memory"], source)
        learner.load_state_dict(dict(previous["learner"], memory=memory_state), exemplars)
        # The checkpoint carries the previous task's config (with *its* overrides): this task trains with
        # its own, as stored with the task.
        learner.config = config
    progress.phase(0.1, "training")
    losses = learner.learn_task(k, train, U, W, [class_of_label[l] for l in task["label_ids"]],
                                progress=progress.batch, should_stop=stop)

    progress.phase(0.9, "evaluating")
    result = learner.evaluate(holdouts, W, classes_per_task, return_scores=True)
    threshold = calibrate_threshold(result["max_scores"], learner.config.reject_rate)
    by_task = _task_row(k, eval_tasks)
    acc = (list(previous["acc_matrix"]) if previous is not None else []) + [by_task(result["acc"], math.nan)]
    aware = (list(previous["acc_matrix_task_aware"]) if previous is not None else []) \
        + [by_task(result["acc_task_aware"], math.nan)]
    table = {"class_ids": class_ids, "names": names, "name_feats": U, "prompt_feats": W, "encoder": encoder.version}
    extra = {"run_id": run["id"], "task_id": task["id"], "job_id": job["id"], "label_ids": task["label_ids"],
             "kind": task.get("kind", "new"), "attempt_key": _attempt_key(task),
             "holdout_sizes": by_task([len(h) for h in holdouts], 0),
             "correct": by_task([_correct(a, len(h)) for a, h in zip(result["acc"], holdouts)], 0),
             "n_classes": by_task([len(c) for c in classes_per_task], 0),
             "learned_images": [[r["id"], r["label_id"]] for r in train_rows],
             "evaluation": class_evaluation(learner, holdouts, W, class_ids),
             "losses": losses, "device": device_name, "saved_at": now_iso(), "method": config.method,
              "reject_threshold": threshold, "rejected": by_task(rejection_rates(result["max_scores"], threshold), None),
              "reject_score": learner.familiarity_kind,
              "reject_rate": learner.config.reject_rate, "reject_calibration": calibration_scores(result["max_scores"]),
             "feature_cache": source.features.slug if source.features is not None else None}
    progress.phase(0.95, "saving")
    # classes_per_task=None: the run's summary is core.runs.summarize_tasks (update rows have no column)
    save_checkpoint(out_path, learner, table, acc, aware, None, extra)
    return _finalise(store, job, worker_id, run, task, load_checkpoint(out_path))


def _task_row(k: int, eval_tasks: list[int]):
    """Spread one value per evaluated (new-class) task over a row of k+1 task columns."""
    def spread(values, missing):
        row = [missing] * (k + 1)
        for u, value in zip(eval_tasks, values):
            row[u] = value
        return row
    return spread


def _correct(acc: float, n: int) -> int:
    # evaluate's accuracy is the mean of n right/wrong answers: acc·n is the count, up to rounding
    return 0 if n == 0 or math.isnan(acc) else int(round(acc * n))


@torch.no_grad()
def class_evaluation(learner, holdouts, prompt_feats, class_ids: list[int]) -> dict:
    """The confusion matrix of the model on every holdout image of the classes seen so far:
    ``{"class_ids": [label ids in class-table order], "confusion": [[count]]}`` — row = true class,
    column = predicted class; a row's sum is the class's holdout size, its diagonal the right ones."""
    n = len(class_ids)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for dataset in holdouts:
        if len(dataset) == 0:
            continue
        predicted = learner.class_scores(dataset.first_view(), prompt_feats).argmax(1).cpu()
        confusion.index_put_((dataset.labels.cpu().long(), predicted.long()), torch.ones(len(predicted), dtype=torch.long),
                             accumulate=True)
    return {"class_ids": [int(c) for c in class_ids], "confusion": confusion.tolist()}


def _attempt_key(task: dict) -> str:
    # A task row is reused after a failed/cancelled task; its created_at changes with every request.
    return f"{task['id']}:{task['created_at']}"


def _finalise(store: Store, job: dict, worker_id: str, run: dict, task: dict, saved: dict) -> dict:
    from core.labels import mark_trained
    from core.runs import summarize_tasks

    k = task["idx"]
    extra = saved["extra"]
    acc_row, aware_row = saved["acc_matrix"][k], saved["acc_matrix_task_aware"][k]
    sizes = extra.get("holdout_sizes") or [0] * (k + 1)
    correct = extra.get("correct") or [None] * (k + 1)
    n_classes = extra.get("n_classes") or [len(c) for c in saved["classes_per_task"]]
    rejected = extra.get("rejected") or [None] * (k + 1)
    kinds = [t["kind"] for t in _done_before(store, run["id"], k)] + [task.get("kind", "new")]
    metrics = summarize_tasks(saved["acc_matrix"], n_classes, kinds) or {}
    result = {"task": k, "kind": task.get("kind", "new"), "acc": acc_row, "metrics": metrics,
              "losses": extra.get("losses"), "device": extra.get("device"),
              "checkpoint": str(checkpoint_path(store, run["id"], k)), "rejected": rejected}
    learned = extra.get("learned_images")
    if learned is None:   # saved before learned images were recorded: every current train image
        learned = [[r["id"], r["label_id"]] for r in _image_rows(store, task["label_ids"], "train")]
    with store.transaction():
        current = jobs.get_job(store, job["id"])
        if current["status"] != "running" or current["worker"] != worker_id:
            raise JobLost(f"job {job['id']} is no longer held by {worker_id}")
        for u, (a, aware) in enumerate(zip(acc_row, aware_row)):
            if math.isnan(a):     # the column of an update task: its images are in their classes' task
                continue
            store.execute(
                "INSERT INTO metrics (run_id, trained_task, eval_task, acc, acc_task_aware, n_classes, n_images, "
                "rejected, n_correct, created_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (run_id, trained_task, "
                "eval_task) DO UPDATE SET acc = excluded.acc, acc_task_aware = excluded.acc_task_aware, "
                "n_classes = excluded.n_classes, n_images = excluded.n_images, rejected = excluded.rejected, "
                "n_correct = excluded.n_correct, created_at = excluded.created_at",
                (run["id"], k, u, float(a), float(aware), int(n_classes[u]), int(sizes[u]),
                 None if u >= len(rejected) or rejected[u] is None else float(rejected[u]),
                 None if u >= len(correct) or correct[u] is None else int(correct[u]), now_iso()))
        store.conn.executemany("INSERT OR IGNORE INTO task_images (task_id, image_id, label_id) VALUES (?,?,?)",
                          [(task["id"], int(i), int(label)) for i, label in learned])
        store.execute("UPDATE tasks SET evaluation = ? WHERE id = ?",
                      (json.dumps(extra.get("evaluation") or {}), task["id"]))
        mark_trained(store, SYSTEM, task["label_ids"])
        jobs.complete(store, job["id"], result, worker_id)
        store.audit(worker_id, "task.done", "task", task["id"], run_id=run["id"], idx=k,
                    kind=task.get("kind", "new"), images=len(learned),
                    acc=[None if math.isnan(a) else round(float(a), 4) for a in acc_row])
    return result


def _done_before(store: Store, run_id: int, k: int) -> list[dict]:
    from core.runs import done_tasks

    return [t for t in done_tasks(store, run_id) if t["idx"] < k]
