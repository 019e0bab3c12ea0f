"""Predict one image with a run's latest checkpoint, and say when it is not one of the trained classes.

The web process predicts on the CPU (the GPU stays the worker's). An image that is already in the data
home reuses its cached prefix features; another is decoded and run through the frozen prefix once.
The rejection threshold was calibrated on the trained classes' holdout images when the checkpoint was
saved (core/sg/openset.py): below it, the answer is "none of the trained classes" instead of a
confident wrong label.
"""
from __future__ import annotations

import gc
import hashlib
import threading
from pathlib import Path

import torch

from core.auth import require
from core.i18n import UserError
from core.store import Store

_PREDICTORS: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def latest_checkpoint(store: Store, run_id: int) -> Path | None:
    from core.runs import done_tasks
    from core.training import checkpoint_path

    done = done_tasks(store, run_id)
    if not done:
        return None
    path = checkpoint_path(store, run_id, done[-1]["idx"])
    return path if path.exists() else None


def _predictor(store: Store, run: dict, path: Path):
    from core.encoders import load_encoder
    from core.sg.checkpoint import load_checkpoint
    from core.sg.learner import LearnerConfig
    from core.training import build_learner

    key = (str(path), path.stat().st_mtime_ns)
    with _LOCK:
        hit = _PREDICTORS.get(key)
    if hit is not None:
        return hit
    try:
        saved = load_checkpoint(path)  # weights_only=True: a malicious pickle cannot run code
        config = LearnerConfig.from_json(saved["learner"]["config"])
        config.device = "cpu"
        encoder = load_encoder(run["encoder"], store.home)
        learner = build_learner(encoder, config)
        learner.load_state_dict(saved["learner"], inference_only=True)
        table = saved["class_table"]
        if int(table["prompt_feats"].shape[0]) != learner.num_seen_classes:  # a damaged table fails here
            raise ValueError("class table and model disagree")
        learner.config.device = "cpu"
        if learner.familiarity_kind == "prototype":  # tampered prototypes fail here, not mid-prediction
            learner.prototypes.best(torch.zeros(1, learner.model.num_features), learner.num_seen_classes)
        extra = dict(saved["extra"])
        if extra.get("reject_score", "class") != learner.familiarity_kind:
            # a threshold is only meaningful for the score it was calibrated on
            extra["reject_threshold"] = None
    except UserError:
        raise
    except Exception as exc:  # truncated, tampered or from another model: a message, not a traceback
        raise UserError("predict.bad_checkpoint", name=path.name, reason=type(exc).__name__) from exc
    learner.model.eval()
    entry = (learner, encoder, table, extra)
    with _LOCK:
        _PREDICTORS.clear()  # one model in memory at a time is plenty for a page
        _PREDICTORS[key] = entry
    # The model, the encoder and what they import live as long as the process: move them out of the
    # collector's way, so no later full collection walks their object graph again (issue 21 item 6).
    gc.collect()
    gc.freeze()
    return entry


def _inputs(store: Store, learner, encoder, data: bytes) -> torch.Tensor:
    """Un-augmented model input for one uploaded image: its prefix features, from the cache when this
    image is already cached for this model, else computed here once (class scores and familiarity
    both start from them)."""
    from core.features import cache_for
    from core.images import check_image, limits
    from core.images.base import Rejected
    from core.images.pixels import PLUGINS
    from core.sg.data import decode_image

    # The upload path's checks, before anything decodes: its formats only (an EPS would go to
    # Ghostscript, ICO/SPIDER have no business here) and its size and pixel limits (a 164 KB PNG can
    # claim 13000×13000 pixels).
    lim = limits(store)
    try:
        check_image(data, lim["upload_max_bytes"], lim["upload_max_pixels"])
    except Rejected as rejected:
        raise UserError(rejected.key, **rejected.params) from None
    cache = cache_for(store, encoder, learner.model, learner.config.feature_views)
    if cache is not None:
        cached = cache.read(hashlib.sha256(data).hexdigest())
        if cached is not None:
            return cached[:1].float()
    try:
        array = decode_image(data, learner.model.input_size, getattr(learner.model, "resize", "crop"),
                             formats=PLUGINS)
    except Exception:
        raise UserError("images.not_image") from None
    images = torch.from_numpy(array).unsqueeze(0)
    if cache is not None:   # the cache's engine (fp32/bf16/int8): what the cached images were given
        return cache.prefix_of(images)
    return learner.prefix_features(images)


def predict_image(store: Store, actor, run_id: int, data: bytes, k: int = 5) -> dict:
    """Top-``k`` classes for one image with the run's latest completed checkpoint.

    Returns ``{"task": idx, "predictions": [{label_id, name, canonical, reading, en, status, score,
    cosine}], "rejected": bool, "best": the image's familiarity (cosine to the nearest trained class's
    prototype, core/sg/openset.py), "score": "prototype" | "class" (which score ``best`` is — the class
    score for models without a frozen backbone) or a closed-form head's own score name ("maha", …),
    "threshold": float | None, "p_value": the conformal p-value of ``best`` against the held-out
    scores the threshold was calibrated on (how usual this familiarity is for a trained class; None
    for checkpoints without them)}``.
    """
    from core.labels import get_label
    from core.runs import get_run
    from core.sg.openset import conformal_pvalue

    require(actor, "read")
    run = get_run(store, run_id)
    path = latest_checkpoint(store, run["id"])
    if path is None:
        raise UserError("runs.no_checkpoint")
    learner, encoder, table, extra = _predictor(store, run, path)
    inputs = _inputs(store, learner, encoder, data)
    scores = learner.class_scores(inputs, table["prompt_feats"])[0]
    probs = learner.probabilities(scores.unsqueeze(0))[0]
    top = torch.topk(probs, min(k, len(probs)))
    predictions = []
    for prob, pos in zip(top.values.tolist(), top.indices.tolist()):
        label_id = int(table["class_ids"][pos])
        try:
            label = get_label(store, label_id)
        except UserError:
            label = {"name": table["names"][pos], "canonical": table["names"][pos], "reading": "", "en": "",
                     "status": "deleted"}
        predictions.append({"label_id": label_id, "name": label["name"], "canonical": label["canonical"],
                            "reading": label.get("reading", ""), "en": label.get("en", ""),
                            "status": label["status"], "score": float(prob), "cosine": float(scores[pos])})
    threshold = extra.get("reject_threshold")
    # the same score the threshold was calibrated on (frozen-feature prototypes, or the class score)
    best = float(learner.familiarity(inputs, table["prompt_feats"], scores.unsqueeze(0))[0])
    calibration = extra.get("reject_calibration") or []
    p_value = float(conformal_pvalue(calibration, torch.tensor([best]))[0]) if calibration else None
    return {"task": int(Path(path).stem.split("-")[1]), "predictions": predictions, "best": best,
            "score": learner.familiarity_kind, "p_value": p_value,
            "threshold": threshold, "rejected": threshold is not None and best < float(threshold)}
