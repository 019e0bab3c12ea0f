"""Atomic per-task checkpoints, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint holds only tensors, dicts, lists, str, numbers and None (the config is JSON text):

    format         "sgcl-checkpoint/1"
    learner        ContinualLearner.state_dict(): trainable model state (full state for scratch
                   towers, the last k blocks for open_clip), exemplar ids per class, config JSON,
                   logit scale, tasks_done, RNG state
    class_table    {"class_ids": [...], "names": [...], "name_feats": U, "prompt_feats": W,
                    "encoder": "<encoder name/version>"} — whatever the caller passes, checked for
                   these keys
    acc_matrix, acc_matrix_task_aware   lists of rows (row t has t+1 entries)
    metrics        core.sg.metrics.summarize(...) of the matrices so far (or {})
    extra          free dict from the caller (e.g. run id, label-set version)
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch

from .data import DecodedImageDataset
from .learner import ContinualLearner
from .metrics import summarize

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "restore_learner"]

FORMAT = "sgcl-checkpoint/1"
_CLASS_TABLE_KEYS = ("class_ids", "names", "name_feats", "prompt_feats", "encoder")


TEMP_TAG = "w-"


def temp_owner(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the writer of a checkpoint temporary file named by :func:`save_checkpoint`."""
    if not name.endswith(".tmp") or f".{TEMP_TAG}" not in name:
        return None
    try:
        host, pid = name.split(f".{TEMP_TAG}", 1)[1].rsplit(".", 3)[0:2]
        return host, int(pid)
    except ValueError:
        return None


def save_checkpoint(path: str | os.PathLike, learner: ContinualLearner, class_table: dict,
                    acc_matrix=None, acc_matrix_task_aware=None, classes_per_task=None,
                    extra: dict | None = None) -> Path:
    """Write the checkpoint atomically (temp file in the same directory, then ``os.replace``).

    With ``classes_per_task`` the metrics of ``acc_matrix`` are computed and stored too.
    """
    missing = [k for k in _CLASS_TABLE_KEYS if k not in class_table]
    if missing:
        raise ValueError(f"class_table lacks {missing}")
    table = dict(class_table)
    table["name_feats"] = torch.as_tensor(table["name_feats"]).detach().float().cpu()
    table["prompt_feats"] = torch.as_tensor(table["prompt_feats"]).detach().float().cpu()
    acc = [list(map(float, r)) for r in (acc_matrix or [])]
    acc_aware = [list(map(float, r)) for r in (acc_matrix_task_aware or [])]
    metrics = {}
    if acc and classes_per_task is not None:
        metrics = summarize(acc, classes_per_task, acc_aware or None)
    payload = {
        "format": FORMAT,
        "learner": _to_cpu(learner.state_dict()),
        "class_table": table,
        "acc_matrix": acc,
        "acc_matrix_task_aware": acc_aware,
        "classes_per_task": [list(map(int, c)) if isinstance(c, (list, tuple)) else int(c)
                             for c in (classes_per_task or [])],
        "metrics": metrics,
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and pid are in the temporary name, so a start-up clean-up can tell the leftovers
    # of a killed writer from a write in progress (temp_owner, core/training.py).
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{TEMP_TAG}{socket.gethostname()}.{os.getpid()}.",
                               suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} checkpoint")
    return payload


def restore_learner(learner: ContinualLearner, checkpoint: dict,
                    exemplar_source: DecodedImageDataset | None = None) -> ContinualLearner:
    """Put a freshly built learner (same model architecture and frozen base weights) into the state
    saved in ``checkpoint``, ready to learn task ``checkpoint["learner"]["tasks_done"]``."""
    learner.load_state_dict(checkpoint["learner"], exemplar_source)
    return learner


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True
