"""The frozen-feature cache of the data home: which cache an encoder uses, filling it in the background,
and what it costs on disk (the Images page shows it).

``cache/features/<slug>/…`` holds one entry per image per backbone version (core/sg/features.py).
The worker fills it while it has no job (:func:`fill_missing`), so features of freshly uploaded images
are ready before anyone asks for training; a train job computes whatever is still missing itself.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.store import Store

log = logging.getLogger("sgcl.features")

FILL_BATCH = 64


def features_root(store: Store) -> Path:
    return store.home / "cache" / "features"


def cache_for(store: Store, encoder, model, views: int):
    """The ``PrefixFeatureCache`` of ``model`` (built by ``encoder``), or None when its prefix is not a
    frozen pretrained network (the scratch tower trains end to end: nothing to cache)."""
    from core.sg.features import PrefixFeatureCache

    if encoder.image_version is None:
        return None
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else "cpu"
    # the engine (fp32 / bf16 / int8) is the fastest this machine runs well, or SGCL_PREFIX_ENGINE;
    # it is part of the cache's slug, so features of two precisions never mix
    return PrefixFeatureCache(features_root(store), model, encoder.image_version, views=views,
                              decode_workers=2, device=device)


def image_items(store: Store, rows: list[dict]) -> list[tuple[str, str]]:
    """(cache key, file path) of image rows (``sha256``, ``path``)."""
    return [(r["sha256"], str(store.home / r["path"])) for r in rows]


@dataclass
class _Target:
    spec: str
    trainable_blocks: int
    views: int


def _targets(store: Store) -> list[_Target]:
    """What to precompute: the active encoder with its default split, and every active run's own."""
    from core.encoders import active_encoder_spec, describe
    from core.runs import list_runs
    from core.sg.learner import LearnerConfig

    out: dict[tuple, _Target] = {}
    try:
        spec = active_encoder_spec(store)
        info = describe(spec)
        base = LearnerConfig(**info.defaults)
        if info.pretrained_image:
            out[(spec, base.trainable_blocks, base.feature_views)] = _Target(spec, base.trainable_blocks,
                                                                             base.feature_views)
    except Exception:  # noqa: BLE001 - a bad setting must not stop the worker
        log.exception("active encoder unusable for feature caching")
    for run in list_runs(store):
        if run["status"] != "active":
            continue
        cfg = run["config"]
        try:
            if not describe(run["encoder"]).pretrained_image:
                continue
        except Exception:  # noqa: BLE001
            continue
        key = (run["encoder"], int(cfg.get("trainable_blocks", 1)), int(cfg.get("feature_views", 1)))
        out.setdefault(key, _Target(*key))
    return list(out.values())


_MODELS: dict[tuple, object] = {}
_MAX_MODELS = 2      # the active default and one run's other split stay loaded; more are rebuilt
# Targets found complete, with the ``(count, max id)`` of the images table at that moment: an idle
# poll skips them (no model load, no per-image stat) until an image is added or removed.
_COMPLETE: dict[tuple, tuple] = {}
# Images whose decode failed, per cache version: not retried by every poll (training reports them).
_FAILED: set[tuple] = set()


def _model_for(store: Store, target: _Target):
    from core.encoders import load_encoder

    key = (target.spec, target.trainable_blocks)
    if key not in _MODELS:
        encoder = load_encoder(target.spec, store.home)
        while len(_MODELS) >= _MAX_MODELS:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = (encoder, encoder.build_image_model(trainable_blocks=target.trainable_blocks))
    return _MODELS[key]


def fill_missing(store: Store, *, limit: int = FILL_BATCH, device: str = "cpu",
                 should_stop: Callable[[], bool] | None = None) -> int:
    """Compute up to ``limit`` missing cache entries (newest images first); returns how many were written.
    Called by the idle worker between polls, so a queued train job waits at most one small batch."""
    written = 0
    signature = tuple(store.query_one("SELECT COUNT(*) AS n, MAX(id) AS m FROM images").values())
    rows = None
    for target in _targets(store):
        if should_stop is not None and should_stop():   # a job is waiting: it goes first
            break
        done_key = (store.home, target.spec, target.trainable_blocks, target.views)
        if _COMPLETE.get(done_key) == signature:
            continue
        encoder, model = _model_for(store, target)
        cache = cache_for(store, encoder, model, target.views)
        if cache is None:
            continue
        if rows is None:
            rows = store.query("SELECT id, sha256, path FROM images ORDER BY id DESC")
        missing = [r for r in rows if (store.home, cache.slug, r["sha256"]) not in _FAILED
                   and not cache.has(r["sha256"])]
        if not missing:
            _COMPLETE[done_key] = signature
            continue
        missing = missing[: max(0, limit - written)]
        started = time.perf_counter()

        def failed(key, exc, slug=cache.slug):
            _FAILED.add((store.home, slug, key))
            log.warning("cannot cache features of %s: %s", key, exc)

        written += cache.compute(image_items(store, missing), device, should_stop=should_stop, on_error=failed)
        log.info("cached features of %d images for %s in %.1f s", len(missing), cache.slug,
                 time.perf_counter() - started)
        if written >= limit:
            break
    return written


def disk_usage(store: Store) -> dict:
    """``{"entries", "bytes", "per_image", "versions": [{slug, entries, bytes}]}`` over every version."""
    root = features_root(store)
    versions = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = list(folder.glob("*/*.npy"))
            versions.append({"slug": folder.name, "entries": len(files), "bytes": sum(f.stat().st_size for f in files)})
    entries = sum(v["entries"] for v in versions)
    total = sum(v["bytes"] for v in versions)
    return {"entries": entries, "bytes": total, "per_image": (total / entries) if entries else 0.0,
            "versions": versions}
