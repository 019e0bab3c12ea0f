"""What every part of core/images shares: statuses, extensions, limits (from core.settings), the
per-file result type, label checks, the split rule and where a stored image lives."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core import labels as label_service
from core import settings
from core.i18n import UserError, t
from core.inputs import truncate_for_log
from core.store import Store

# Labels in these statuses can receive images (retired/rejected/merged cannot).
OPEN_STATUSES = ("proposed", "approved", "trained")
EXPORT_STATUSES = ("approved", "trained")

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# The one list of image file extensions: the upload widgets offer them, the folder scanner (also used
# by the experiment) lists them. The server validates the content whatever the extension says.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
ARCHIVE_EXTENSIONS = ("zip",)
UPLOAD_EXTENSIONS = [*IMAGE_EXTENSIONS, *ARCHIVE_EXTENSIONS]

LIMIT_KEYS = tuple(settings.IMAGE_DEFAULTS)
HOLDOUT_RULE_MIN_IMAGES = 5
MAX_FILE_NAME = 255

ProgressFn = Callable[[int, int, str], None]


def setting(store: Store, key: str):
    """One image setting (``upload_max_bytes``, ``min_train_images`` …), read through core.settings."""
    if key not in LIMIT_KEYS:
        raise KeyError(key)
    return settings.get(store, key)


def limits(store: Store) -> dict:
    return {key: settings.get(store, key) for key in LIMIT_KEYS}


def mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f}"


def hash_split(sha256: str, holdout_fraction: float) -> str:
    """The split an image gets at upload; depends on nothing but its hash and the fraction."""
    return "holdout" if int(sha256[:8], 16) / 2**32 < holdout_fraction else "train"


def image_path(store: Store, row: dict) -> Path:
    """Absolute path of a stored image (``row`` is a row of the ``images`` table)."""
    return store.home / row["path"]


def display_name(name: str) -> str:
    """A user's file name, for display and the ``original_name`` column only (never a path)."""
    return truncate_for_log(name, MAX_FILE_NAME)


def base_name(name: str) -> str:
    return os.path.basename(str(name).replace("\\", "/"))


# ---- labels -------------------------------------------------------------------------------------
def label_row(store: Store, label_id: int) -> dict:
    return label_service.get_label(store, label_id)


def open_label(store: Store, label_id: int) -> dict:
    label = label_row(store, label_id)
    if label["status"] not in OPEN_STATUSES:
        raise UserError("images.label_not_open", name=label["name"], status=label["status"])
    return label


# ---- results ------------------------------------------------------------------------------------
@dataclass
class IngestResult:
    name: str
    status: str            # "added" | "duplicate" | "conflict" | "error"
    message_key: str
    params: dict = field(default_factory=dict)
    image_id: int | None = None

    def message(self, lang: str) -> str:
        params = dict(self.params)
        if "split" in params:
            params["split"] = t(f"split.{params['split']}", lang)
        return t(self.message_key, lang, **params)


def summarize(results) -> dict[str, int]:
    counts = {"added": 0, "duplicate": 0, "conflict": 0, "error": 0}
    for r in results:
        counts[r.status] += 1
    return counts


class Rejected(Exception):
    """One input refused, with the message key (and parameters) that tells the user why."""

    def __init__(self, key: str, **params):
        super().__init__(key)
        self.key, self.params = key, params


@dataclass
class Item:
    """One file to ingest. ``load`` defers reading (zip entries, folder files) until it is needed."""
    name: str
    load: Callable[[], bytes] | None = None
    split: str | None = None
    decoded_as: str | None = None
    result: IngestResult | None = None     # already decided (e.g. refused zip entry)
    label_id: int | None = None
    from_zip: bool = False
    original_name: str | None = None       # what to record; defaults to the base name of ``name``


# ---- what the upload widgets may accept ---------------------------------------------------------
def _whole_mb(n_bytes: int) -> int:
    return max(1, -(-int(n_bytes) // (1024 * 1024)))   # Streamlit counts whole MB (MiB); round up


def upload_caps_mb(store: Store) -> dict[str, int]:
    """The admin's limits in the whole megabytes Streamlit's uploader takes: ``image`` (per image file),
    ``zip`` (per archive) and ``server`` (the largest, for ``server.maxUploadSize``). A limit that is not
    a whole number of MB is rounded up here; the service still refuses on the exact byte count."""
    image = _whole_mb(settings.get(store, "upload_max_bytes"))
    archive = _whole_mb(settings.get(store, "upload_max_zip_bytes"))
    return {"image": image, "zip": archive, "server": max(image, archive)}
