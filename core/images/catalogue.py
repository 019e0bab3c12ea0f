"""What is stored: per-label counts, image rows, thumbnails, sample images, and readiness for training."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

from core.i18n import UserError, t
from core.images.base import OPEN_STATUSES, image_path, label_row, setting
from core.images.staging import staging, write_temp
from core.store import Store

THUMB_SIZE = 160


def label_counts(store: Store, statuses: Iterable[str] = OPEN_STATUSES) -> list[dict]:
    """``label_id, name, status, n_train, n_holdout`` for every label in ``statuses``."""
    statuses = tuple(statuses)
    marks = ",".join("?" * len(statuses))
    return store.query(
        "SELECT l.id AS label_id, l.name, l.status, "  # nosec B608  # ? placeholders only
        "COALESCE(SUM(i.split = 'train'), 0) AS n_train, COALESCE(SUM(i.split = 'holdout'), 0) AS n_holdout "
        f"FROM labels l LEFT JOIN images i ON i.label_id = l.id WHERE l.status IN ({marks}) "
        "GROUP BY l.id ORDER BY l.id", statuses)


def list_images(store: Store, label_id: int, *, offset: int = 0, limit: int = -1) -> list[dict]:
    return store.query("SELECT * FROM images WHERE label_id = ? ORDER BY id LIMIT ? OFFSET ?",
                       (int(label_id), int(limit), int(offset)))


def count_images(store: Store, label_id: int) -> int:
    return store.query_one("SELECT COUNT(*) AS n FROM images WHERE label_id = ?", (int(label_id),))["n"]


def get_image(store: Store, image_id: int) -> dict:
    row = store.query_one("SELECT * FROM images WHERE id = ?", (int(image_id),))
    if row is None:
        raise UserError("err.not_found", what="image", id=image_id)
    return row


def holdout_samples(store: Store, label_ids: Iterable[int], limit: int = 200) -> list[dict]:
    """Holdout images of these labels (rows plus ``label_name``), label by label — what Predict offers
    as known examples to classify."""
    ids = tuple(int(i) for i in label_ids)
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    return store.query(
        "SELECT i.*, l.name AS label_name FROM images i JOIN labels l ON l.id = i.label_id "  # nosec B608  # ? placeholders only
        f"WHERE i.split = 'holdout' AND i.label_id IN ({marks}) ORDER BY i.label_id, i.id LIMIT ?",
        (*ids, int(limit)))


def thumbnail_path(store: Store, row: dict, size: int = THUMB_SIZE) -> Path:
    """A JPEG thumbnail cached under ``cache/thumbs/`` (made on first use, written atomically)."""
    thumbs = store.home / "cache" / "thumbs"
    path = thumbs / f"{row['sha256']}_{size}.jpg"
    if path.exists():
        return path
    thumbs.mkdir(parents=True, exist_ok=True)
    with Image.open(image_path(store, row)) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
    with staging(store) as folder:
        os.replace(write_temp(folder, buf.getvalue(), ".jpg"), path)
    return path


# ---- readiness ----------------------------------------------------------------------------------
@dataclass
class Readiness:
    ok: bool
    n_train: int
    n_holdout: int
    missing_train: int
    missing_holdout: int


class NotReadyError(UserError):
    """Raised by :func:`require_ready`; its message lists every label that lacks images."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        super().__init__("images.not_ready", details="")

    def message(self, lang: str = "ja") -> str:
        lines = "\n".join(t("images.not_ready_label", lang, **row) for row in self.rows)
        return t("images.not_ready", lang, details=lines)

    def __str__(self) -> str:
        return self.message("en")


def readiness(store: Store, label_ids: Iterable[int]) -> dict[int, Readiness]:
    min_train, min_holdout = setting(store, "min_train_images"), setting(store, "min_holdout_images")
    out: dict[int, Readiness] = {}
    for label_id in label_ids:
        row = store.query_one(
            "SELECT COALESCE(SUM(split = 'train'), 0) AS tr, COALESCE(SUM(split = 'holdout'), 0) AS ho "
            "FROM images WHERE label_id = ?", (int(label_id),))
        miss_train, miss_holdout = max(0, min_train - row["tr"]), max(0, min_holdout - row["ho"])
        out[int(label_id)] = Readiness(miss_train == 0 and miss_holdout == 0, row["tr"], row["ho"],
                                       miss_train, miss_holdout)
    return out


def require_ready(store: Store, label_ids: Iterable[int]) -> None:
    """Refuse (``NotReadyError``, a ``UserError``) unless every label has enough train and holdout images."""
    min_train, min_holdout = setting(store, "min_train_images"), setting(store, "min_holdout_images")
    rows = []
    for label_id, r in readiness(store, label_ids).items():
        if not r.ok:
            rows.append({"name": label_row(store, label_id)["name"], "n_train": r.n_train, "min_train": min_train,
                         "n_holdout": r.n_holdout, "min_holdout": min_holdout})
    if rows:
        raise NotReadyError(rows)
