"""The bridge between the database and the learner (core.sg): one ``train`` job = one task of a run.

What a train job for task k of run r does:

1. Class table: the classes of tasks 0..k−1 with their text features **as stored in task k−1's
   checkpoint** (so a later glossary edit never moves an old class in text space), plus task k's new
   labels embedded once now through the encoder + SQLite embedding cache (bare name u, prompt w).
2. Datasets from the ``images`` table (class index = row of the class table, sample id = image id),
   decoded once through ``ImageCache`` under ``SGCL_HOME/cache/decoded``.
3. Learner: the run's image model, restored from ``checkpoints/<run>/task-<k−1>.pt`` (exemplars are
   image ids, their pixels are re-read from the DB), then ``learn_task`` with progress and cancel
   callbacks.
4. Evaluate every seen task on its holdout images; save ``task-<k>.pt`` atomically; then, in one
   transaction, upsert the ``metrics`` rows, mark the labels trained and complete the job. A crash
   anywhere before that commit leaves nothing half-written: the job is re-queued and redone from
   task k−1's checkpoint (or finalised straight from ``task-<k>.pt`` if it was already saved).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core import jobs
from core.auth import SYSTEM

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


def decoded_cache_dir(store: Store) -> Path:
    return store.home / "cache" / "decoded"


# ---- datasets from the images table --------------------------------------------------------------------

def _image_rows(store: Store, label_ids: list[int], split: str) -> list[dict]:
    if not label_ids:
        return []
    marks = ",".join("?" * len(label_ids))
    return store.query(f"SELECT id, path, label_id FROM images WHERE split = ? AND label_id IN ({marks}) "
                       "ORDER BY label_id, id", (split, *label_ids))


def build_dataset(store: Store, rows: list[dict], class_of_label: dict[int, int], size: int, cache):
    from core.sg.data import DecodedImageDataset

    return DecodedImageDataset.from_sources(
        [str(store.home / r["path"]) for r in rows], [class_of_label[r["label_id"]] for r in rows],
        [r["id"] for r in rows], size, cache=cache)


def exemplar_dataset(store: Store, memory_state: dict, size: int, cache):
    """The exemplar images named in a checkpoint's memory, labelled with the class they were herded
    for. Ids of images deleted since are dropped from the memory state (returned pruned)."""
    from core.sg.data import DecodedImageDataset

    wanted = {int(i) for ids in memory_state["exemplars"].values() for i in ids}
    paths = {}
    for start in range(0, len(wanted), 500):
        chunk = sorted(wanted)[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.query(f"SELECT id, path FROM images WHERE id IN ({marks})", tuple(chunk)):
            paths[r["id"]] = str(store.home / r["path"])
    pruned = {c: [int(i) for i in ids if int(i) in paths] for c, ids in memory_state["exemplars"].items()}
    memory_state = dict(memory_state, exemplars=pruned)
    sources, labels, ids = [], [], []
    for c, members in pruned.items():
        for i in members:
            sources.append(paths[i])
            labels.append(int(c))
            ids.append(i)
    if not ids:
        return memory_state, None
    return memory_state, DecodedImageDataset.from_sources(sources, labels, ids, size, cache=cache)


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

    def batch(self, info: dict) -> None:
        if self.train_started is None:
            self.train_started = time.monotonic()
        self.step += 1
        if self.step % self.stride == 0:
            self.curve.append({"step": self.step, "epoch": info["epoch"] + 1,
                               **{k: round(float(info[k]), 5) for k in ("loss", "loss_clip", "loss_sgrl", "loss_sgkd")}})
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
            "batches": info["batches"], "loss": info["loss"], "images_per_s": info["images_per_s"],
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


def run_train_job(store: Store, job: dict, *, worker_id: str, device: str = "auto",
                  should_stop: Callable[[], bool] | None = None) -> dict:
    """Train task ``job.payload.task_idx`` of ``job.run_id``; raises ``core.sg.Cancelled`` when
    stopped (cancel requested or worker shutting down)."""
    from core.embeddings import label_name_embeddings, label_prompt_embeddings
    from core.encoders import load_encoder
    from core.labels import get_label
    from core.runs import get_run, list_tasks, run_config
    from core.sg.checkpoint import load_checkpoint, restore_learner, save_checkpoint
    from core.sg.data import ImageCache
    from core.sg.learner import resolve_device

    payload = job["payload"]
    k = int(payload["task_idx"])
    run = get_run(store, job["run_id"])
    tasks = {t["idx"]: t for t in list_tasks(store, run["id"])}
    task = tasks[k]
    if [i for i in range(k) if tasks.get(i, {}).get("status") != "done"]:
        raise RuntimeError(f"task {k} of run {run['id']} cannot start: an earlier task is not done")
    config = run_config(run)
    for key, value in (payload.get("overrides") or {}).items():
        setattr(config, key, value)
    config.device = device
    dev = resolve_device(device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    progress = _Progress(store, job["id"], device_name, k)
    stop = _throttled(lambda: (should_stop is not None and should_stop()) or jobs.cancel_requested(store, job["id"]))

    out_path = checkpoint_path(store, run["id"], k)
    if out_path.exists():  # saved by an earlier attempt that died before its commit: just finalise it
        saved = load_checkpoint(out_path)
        if saved["extra"].get("task_id") == task["id"] and saved["extra"].get("label_ids") == task["label_ids"] \
                and saved["extra"].get("attempt_key") == _attempt_key(task):
            progress.phase(0.95, "finalising")
            return _finalise(store, job, worker_id, run, task, saved)
        out_path.unlink()

    progress.phase(0.01, "loading_encoder")
    encoder = load_encoder(run["encoder"], store.home)
    learner = build_learner(encoder, config)
    size = learner.model.input_size
    cache = ImageCache(decoded_cache_dir(store), workers=config.num_workers)

    previous = load_checkpoint(checkpoint_path(store, run["id"], k - 1)) if k > 0 else None
    new_labels = [get_label(store, i) for i in task["label_ids"]]
    progress.phase(0.03, "embedding")
    U_new = label_name_embeddings(store, encoder, new_labels)
    W_new = label_prompt_embeddings(store, encoder, new_labels)
    if previous is not None:
        table = previous["class_table"]
        if table["encoder"] != encoder.version:
            raise RuntimeError(f"run {run['id']} was trained with {table['encoder']}, now {encoder.version}")
        class_ids = list(table["class_ids"]) + [l["id"] for l in new_labels]
        names = list(table["names"]) + [l["canonical"] for l in new_labels]
        U = torch.cat([table["name_feats"], U_new])
        W = torch.cat([table["prompt_feats"], W_new])
    else:
        class_ids, names, U, W = [l["id"] for l in new_labels], [l["canonical"] for l in new_labels], U_new, W_new
    class_of_label = {lid: i for i, lid in enumerate(class_ids)}
    per_task_labels = [tasks[u]["label_ids"] for u in range(k)] + [task["label_ids"]]
    classes_per_task = [[class_of_label[l] for l in labels] for labels in per_task_labels]

    progress.phase(0.05, "decoding")
    train = build_dataset(store, _image_rows(store, task["label_ids"], "train"), class_of_label, size, cache)
    holdouts = [build_dataset(store, _image_rows(store, labels, "holdout"), class_of_label, size, cache)
                for labels in per_task_labels]
    if previous is not None:
        memory_state, exemplars = exemplar_dataset(store, previous["learner"]["memory"], size, cache)
        state = dict(previous["learner"], memory=memory_state)
        restore_learner(learner, {"learner": state}, exemplars)
        for key, value in (payload.get("overrides") or {}).items():  # the checkpoint carries the run config
            setattr(learner.config, key, value)
        learner.config.device = device

    progress.phase(0.1, "training")
    losses = learner.learn_task(k, train, U, W, classes_per_task[-1], progress=progress.batch, should_stop=stop)

    progress.phase(0.9, "evaluating")
    result = learner.evaluate(holdouts, W, classes_per_task)
    acc = (list(previous["acc_matrix"]) if previous is not None else []) + [result["acc"]]
    aware = (list(previous["acc_matrix_task_aware"]) if previous is not None else []) + [result["acc_task_aware"]]
    table = {"class_ids": class_ids, "names": names, "name_feats": U, "prompt_feats": W, "encoder": encoder.version}
    extra = {"run_id": run["id"], "task_id": task["id"], "job_id": job["id"], "label_ids": task["label_ids"],
             "attempt_key": _attempt_key(task), "holdout_sizes": [len(h) for h in holdouts],
             "losses": losses, "device": device_name, "saved_at": now_iso()}
    progress.phase(0.95, "saving")
    save_checkpoint(out_path, learner, table, acc, aware, classes_per_task, extra)
    return _finalise(store, job, worker_id, run, task, load_checkpoint(out_path))


def _attempt_key(task: dict) -> str:
    # A task row is reused after a failed/cancelled task; its created_at changes with every request.
    return f"{task['id']}:{task['created_at']}"


def _finalise(store: Store, job: dict, worker_id: str, run: dict, task: dict, saved: dict) -> dict:
    from core.labels import mark_trained

    k = task["idx"]
    acc_row, aware_row = saved["acc_matrix"][k], saved["acc_matrix_task_aware"][k]
    sizes = saved["extra"].get("holdout_sizes") or [0] * (k + 1)
    result = {"task": k, "acc": acc_row, "metrics": saved["metrics"], "losses": saved["extra"].get("losses"),
              "device": saved["extra"].get("device"), "checkpoint": str(checkpoint_path(store, run["id"], k))}
    with store.transaction():
        current = jobs.get_job(store, job["id"])
        if current["status"] != "running" or current["worker"] != worker_id:
            raise JobLost(f"job {job['id']} is no longer held by {worker_id}")
        for u, (a, aware) in enumerate(zip(acc_row, aware_row)):
            store.execute(
                "INSERT INTO metrics (run_id, trained_task, eval_task, acc, acc_task_aware, n_classes, n_images, "
                "created_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (run_id, trained_task, eval_task) DO UPDATE SET "
                "acc = excluded.acc, acc_task_aware = excluded.acc_task_aware, n_classes = excluded.n_classes, "
                "n_images = excluded.n_images, created_at = excluded.created_at",
                (run["id"], k, u, float(a), float(aware), len(saved["classes_per_task"][u]), int(sizes[u]), now_iso()))
        mark_trained(store, SYSTEM, task["label_ids"])
        jobs.complete(store, job["id"], result, worker_id)
        store.audit(worker_id, "task.done", "task", task["id"], run_id=run["id"], idx=k, acc=acc_row)
    return result


# ---- prediction -----------------------------------------------------------------------------------------

_PREDICTORS: dict[tuple, object] = {}
_PREDICTOR_LOCK = threading.Lock()


def latest_checkpoint(store: Store, run_id: int) -> Path | None:
    from core.runs import done_tasks

    done = done_tasks(store, run_id)
    if not done:
        return None
    path = checkpoint_path(store, run_id, done[-1]["idx"])
    return path if path.exists() else None


def _predictor(store: Store, run: dict, path: Path):
    from core.encoders import load_encoder
    from core.runs import run_config
    from core.sg.checkpoint import load_checkpoint

    key = (str(path), path.stat().st_mtime_ns)
    with _PREDICTOR_LOCK:
        hit = _PREDICTORS.get(key)
    if hit is not None:
        return hit
    saved = load_checkpoint(path)  # weights_only=True
    config = run_config(run)
    config.device = "cpu"  # the web process predicts one image at a time; keep the GPU for the worker
    learner = build_learner(load_encoder(run["encoder"], store.home), config)
    learner.model.load_trainable_state_dict(saved["learner"]["model"])
    learner.logit_scale = float(saved["learner"]["logit_scale"])
    learner.model.eval()
    entry = (learner, saved["class_table"], saved["extra"])
    with _PREDICTOR_LOCK:
        _PREDICTORS.clear()  # one model in memory at a time is plenty for a page
        _PREDICTORS[key] = entry
    return entry


def predict_image(store: Store, actor, run_id: int, data: bytes, k: int = 5) -> dict:
    """Top-``k`` classes for one image with the run's latest completed checkpoint.

    Returns ``{"task": idx, "predictions": [{label_id, name, canonical, reading, en, status, score}]}``.
    """
    from core.auth import require
    from core.i18n import UserError
    from core.labels import get_label
    from core.runs import get_run
    from core.sg.data import decode_image

    require(actor, "read")
    run = get_run(store, run_id)
    path = latest_checkpoint(store, run["id"])
    if path is None:
        raise UserError("runs.no_checkpoint")
    learner, table, extra = _predictor(store, run, path)
    try:
        array = decode_image(data, learner.model.input_size)
    except Exception:
        raise UserError("images.not_image") from None
    probs = learner.predict(torch.from_numpy(array).unsqueeze(0), table["prompt_feats"])[0]
    top = torch.topk(probs, min(k, len(probs)))
    predictions = []
    for score, pos in zip(top.values.tolist(), top.indices.tolist()):
        label_id = int(table["class_ids"][pos])
        try:
            label = get_label(store, label_id)
        except UserError:
            label = {"name": table["names"][pos], "canonical": table["names"][pos], "reading": "", "en": "",
                     "status": "?"}
        predictions.append({"label_id": label_id, "name": label["name"], "canonical": label["canonical"],
                            "reading": label.get("reading", ""), "en": label.get("en", ""),
                            "status": label["status"], "score": float(score)})
    return {"task": int(Path(path).stem.split("-")[1]), "predictions": predictions}
