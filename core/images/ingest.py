"""Storing images: each input checked and re-encoded (core/images/pixels.py) outside any transaction,
then committed in batches — a batch's image rows, its files moved into ``images/``, the holdout
promotions it causes and its ``image.upload`` audit row commit together or not at all.

So a killed upload leaves every committed image covered by an audit row, and nothing of the batch it
was in; its staged files are swept on the next start (core/images/staging.py). One transaction for a
whole upload would hold the database's write lock for minutes (1,500 PNGs) while the worker and other
users wait; a batch holds it only to move files and insert rows (the decoding happened before).

* **Identity.** ``images.sha256`` is the SHA-256 of the bytes the user uploaded, so re-uploading the
  same file is recognised as an exact duplicate before anything is decoded, although what is stored
  is a re-encoded copy. The file is ``images/<sha256>.<ext>``.
* **Split.** Fixed at upload: ``holdout`` when ``int(sha256[:8], 16) / 2**32 < holdout_fraction``.
  A label (not yet trained) with at least ``HOLDOUT_RULE_MIN_IMAGES`` images gets its train images
  with the smallest hashes promoted until its holdout reaches ``eval_min_holdout_images`` (5), or
  ``holdout_fraction`` (20 %) of its images while it has fewer than 25 — a rule that depends only on
  the set of images, not on upload order (:func:`holdout_target`). Folder imports with ``train/`` and ``test/`` keep the given split.
* One bad file never aborts a batch: each input gets an :class:`IngestResult` in the user's language.
"""
from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.auth import Actor, require
from core.images import archive
from core.images.base import (HOLDOUT_RULE_MIN_IMAGES, IngestResult, Item, ProgressFn, Rejected, base_name,
                              display_name, hash_split, label_row, limits, open_label, summarize)
from core.images.pixels import normalise_image
from core.images.staging import staging, write_temp
from core.store import Store, now_iso

log = logging.getLogger(__name__)

# A batch commits after this many staged images or bytes, whichever comes first: the first bounds the
# work a kill can lose, the second the disk the staged copies take.
BATCH_FILES = 100
BATCH_BYTES = 256 * 1024 * 1024


@dataclass
class _Staged:
    index: int
    item: Item
    label_id: int
    sha: str
    split: str
    ext: str
    tmp: Path
    width: int
    height: int
    size: int


@dataclass
class AuditTarget:
    """Where each batch's ``image.upload`` row points (a label for uploads, the folder for imports)."""
    target_type: str
    target_id: Any
    details: dict


def holdout_target(n_images: int, eval_min: int, fraction: float) -> int:
    """How many holdout images the rule gives a label with ``n_images`` images: none below
    ``HOLDOUT_RULE_MIN_IMAGES``, else ``eval_min`` (enough to report an accuracy) or, while the label
    has too few images for that, ``fraction`` of them (at least one) — "5 images or 20 %"."""
    if n_images < HOLDOUT_RULE_MIN_IMAGES:
        return 0
    return max(1, min(int(eval_min), int(n_images * float(fraction))))


def ensure_min_holdout(store: Store, label_id: int) -> int | None:
    """Top up the holdout of a label that has enough images to :func:`holdout_target` by promoting its
    train images with the smallest hash values (so the choice does not depend on upload order).
    Trained labels are left alone: their train images were already learned. Returns the last promoted
    image id, if any."""
    with store.transaction():
        label = label_row(store, label_id)
        if label["status"] == "trained":
            return None
        lim = limits(store)
        counts = store.query_one(
            "SELECT COUNT(*) AS n, SUM(split = 'holdout') AS h FROM images WHERE label_id = ?", (label_id,))
        missing = holdout_target(counts["n"], lim["eval_min_holdout_images"], lim["holdout_fraction"]) \
            - (counts["h"] or 0)
        if missing <= 0:
            return None
        chosen = store.query(
            "SELECT id, sha256 FROM images WHERE label_id = ? AND split = 'train' ORDER BY sha256 LIMIT ?",
            (label_id, missing))
        for row in chosen:
            store.execute("UPDATE images SET split = 'holdout' WHERE id = ?", (row["id"],))
            store.audit("system", "image.split", "image", row["id"], split="holdout", rule="min_holdout")
        return chosen[-1]["id"] if chosen else None


def _existing_result(store: Store, name: str, existing: dict, label_id: int) -> IngestResult:
    if existing["label_id"] == label_id:
        return IngestResult(name, "duplicate", "images.duplicate", {}, existing["id"])
    other = label_row(store, existing["label_id"])
    return IngestResult(name, "conflict", "images.conflict",
                        {"other": other["name"], "other_id": other["id"]}, existing["id"])


def _find(store: Store, sha: str) -> dict | None:
    return store.query_one("SELECT id, label_id FROM images WHERE sha256 = ?", (sha,))


def _prepare(store: Store, folder: Path, index: int, item: Item, label_id: int,
             lim: dict) -> IngestResult | _Staged:
    """Read, check and re-encode one input into the staging folder (no transaction held)."""
    data = item.load() if item.load else b""
    if item.from_zip and archive.is_zip(data):   # an archive hiding behind an image name
        return IngestResult(item.name, "error", "images.zip_nested")
    sha = hashlib.sha256(data).hexdigest() if data else ""
    existing = _find(store, sha) if sha else None
    if existing:
        return _existing_result(store, item.name, existing, label_id)
    norm = normalise_image(data, lim["upload_max_bytes"], lim["upload_max_pixels"])
    tmp = write_temp(folder, norm.data, "." + norm.ext)
    return _Staged(index, item, label_id, sha, item.split or hash_split(sha, lim["holdout_fraction"]),
                   norm.ext, tmp, norm.width, norm.height, len(norm.data))


def _added(staged: _Staged, image_id: int) -> IngestResult:
    if staged.item.decoded_as:
        return IngestResult(staged.item.name, "added", "images.added_name_decoded",
                            {"split": staged.split, "encoding": staged.item.decoded_as}, image_id)
    return IngestResult(staged.item.name, "added", "images.added", {"split": staged.split}, image_id)


def _commit(store: Store, actor: Actor, batch: list[_Staged], results: list[IngestResult | None],
            window: range, number: int, upload_id: str, target: AuditTarget) -> None:
    """Rows, files, promotions and the audit row of one batch: all committed, or none of it."""
    placed: list[Path] = []
    try:
        with store.transaction():
            try:
                touched: set[int] = set()
                for s in batch:
                    # Re-check inside the write lock: another process may have stored the same bytes.
                    existing = _find(store, s.sha)
                    if existing:
                        results[s.index] = _existing_result(store, s.item.name, existing, s.label_id)
                        continue
                    rel = f"images/{s.sha}.{s.ext}"
                    os.replace(s.tmp, store.home / rel)
                    placed.append(store.home / rel)
                    image_id = store.insert("images", {
                        "sha256": s.sha, "path": rel, "label_id": s.label_id, "split": s.split,
                        "width": s.width, "height": s.height, "bytes": s.size,
                        "original_name": display_name(s.item.original_name or base_name(s.item.name)),
                        "uploaded_by": actor.username, "uploaded_at": now_iso(),
                    })
                    results[s.index] = _added(s, image_id)
                    touched.add(s.label_id)
                for label_id in sorted(touched):
                    ensure_min_holdout(store, label_id)
                _audit(store, actor, results, window, number, upload_id, target)
            except BaseException:
                # Still under the write lock: no other writer can have placed the same file meanwhile.
                for path in placed:
                    path.unlink(missing_ok=True)
                raise
    except Exception as exc:   # disk full, permission…: this batch failed, the next ones still run
        log.exception("storing a batch of %d images failed", len(batch))
        for s in batch:
            results[s.index] = IngestResult(s.item.name, "error", "images.store_failed", {"detail": str(exc)})
        try:
            _audit(store, actor, results, window, number, upload_id, target, failed=str(exc)[:200])
        except Exception:
            log.exception("could not audit the failed batch either")


def _audit(store: Store, actor: Actor, results, window: range, number: int, upload_id: str,
           target: AuditTarget, **extra) -> None:
    decided = [results[i] for i in window if results[i] is not None]
    store.audit(actor.username, "image.upload", target.target_type, target.target_id, **summarize(decided),
                batch=number, upload=upload_id, image_ids=[r.image_id for r in decided if r.status == "added"],
                **target.details, **extra)


def run_items(store: Store, actor: Actor, items: list[Item], default_label: int | None,
              progress: ProgressFn | None, lim: dict, target: AuditTarget) -> list[IngestResult]:
    """Ingest ``items`` in batches (see the module docstring); one result per item, in order."""
    results: list[IngestResult | None] = [None] * len(items)
    upload_id = uuid.uuid4().hex[:12]
    batch: list[_Staged] = []
    batch_bytes, window_start, number = 0, 0, 0

    def flush(end: int) -> None:
        nonlocal batch, batch_bytes, window_start, number
        number += 1
        _commit(store, actor, batch, results, range(window_start, end), number, upload_id, target)
        batch, batch_bytes, window_start = [], 0, end

    with staging(store) as folder:
        for index, item in enumerate(items):
            if item.result is not None:
                results[index] = item.result
            else:
                label_id = item.label_id if item.label_id is not None else default_label
                try:
                    prepared = _prepare(store, folder, index, item, label_id, lim)
                except Rejected as rej:
                    prepared = IngestResult(item.name, "error", rej.key, rej.params)
                except Exception as exc:  # unreadable file, disk full while staging: the rest still runs
                    log.exception("staging %r failed", item.name)
                    prepared = IngestResult(item.name, "error", "images.store_failed", {"detail": str(exc)})
                if isinstance(prepared, _Staged):
                    batch.append(prepared)
                    batch_bytes += prepared.size
                else:
                    results[index] = prepared
            if progress:
                progress(index + 1, len(items), item.name)
            if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                flush(index + 1)
        if batch or window_start < len(items) or number == 0:
            flush(len(items))
    _report_final_splits(store, results)
    return results


def _report_final_splits(store: Store, results: list[IngestResult]) -> None:
    # A later batch's promotion may have moved an image of an earlier one to holdout: report the final split.
    added = [r for r in results if r.status == "added"]
    if added:
        marks = ",".join("?" * len(added))
        splits = {row["id"]: row["split"] for row in store.query(
            f"SELECT id, split FROM images WHERE id IN ({marks})", tuple(r.image_id for r in added))}  # nosec B608  # ? placeholders only
        for r in added:
            r.params["split"] = splits.get(r.image_id, r.params.get("split"))


def _as_name_and_bytes(f: Any) -> tuple[str, bytes]:
    if isinstance(f, tuple):
        return str(f[0]), bytes(f[1])
    return str(getattr(f, "name", "upload")), f.getvalue()  # Streamlit's UploadedFile


def ingest_uploads(store: Store, actor: Actor, label_id: int, files: Iterable[Any], *,
                   progress: ProgressFn | None = None) -> list[IngestResult]:
    """Add uploaded files to a label. ``files`` holds ``(name, bytes)`` pairs or objects with ``name``
    and ``getvalue()`` (Streamlit's ``UploadedFile``); zips are unpacked in memory (one level)."""
    require(actor, "image.upload")
    label = open_label(store, label_id)
    lim = limits(store)
    items: list[Item] = []
    for f in files:
        name, data = _as_name_and_bytes(f)
        name = display_name(name)
        if archive.is_zip(data) or (name.lower().endswith(".zip") and data):
            items.extend(archive.zip_items(name, data, lim))
        else:
            items.append(Item(name, load=(lambda d=data: d)))
    return run_items(store, actor, items, label["id"], progress, lim,
                     AuditTarget("label", label["id"], {"source": "upload"}))
