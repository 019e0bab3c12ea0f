"""Example images: ingestion (single files, zips, server-side folders), validation, deduplication,
the train/holdout split, readiness for training, moves/deletes, thumbnails and dataset export.

Decisions worth knowing before you read the code:

* **Identity.** ``images.sha256`` is the SHA-256 of the bytes the user uploaded. Re-uploading the same
  file is therefore always recognised as an exact duplicate, even when what we store is a normalised
  copy. The file is stored as ``images/<sha256>.<ext>`` (path relative to the data home in the table).
* **What is stored.** Always an upright 8-bit RGB JPEG or PNG, so every loader can simply
  ``Image.open(path).convert("RGB")``. If the upload already is one (JPEG/PNG, mode RGB, no EXIF
  rotation, no transparency) its original bytes are kept; otherwise a normalised copy is re-encoded
  (JPEG sources stay JPEG at quality 95, everything else becomes lossless PNG). ``width``/``height``
  are of the stored (rotated) image; ``bytes`` is the stored file's size.
* **Split.** Fixed at upload: ``holdout`` when ``int(sha256[:8], 16) / 2**32 < holdout_fraction``.
  After every batch, a label (not yet trained) with at least ``HOLDOUT_RULE_MIN_IMAGES`` images and no
  holdout gets its train image with the smallest hash value promoted to holdout — a rule that depends
  only on the set of images, not on upload order. Folder imports with ``train/`` and ``test/`` keep
  the given split (test → holdout).
* **Zips** are read in memory, never extracted by path. Nested archives are refused (not processed),
  entries with absolute paths or ``..`` are refused, directories, ``__MACOSX/`` and dotfiles are
  skipped silently. Names without the UTF-8 flag are decoded as UTF-8, else cp932, else cp437.
* One bad file never aborts a batch: each input gets an :class:`IngestResult` whose message is
  rendered in the user's language.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.auth import Actor, require
from core.i18n import UserError, t
from core.store import Store, now_iso

log = logging.getLogger(__name__)

# Labels in these statuses can receive images (retired/rejected/merged cannot).
OPEN_STATUSES = ("proposed", "approved", "trained")
EXPORT_STATUSES = ("approved", "trained")

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# What the upload widget offers; the server validates the content regardless of the extension.
UPLOAD_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "zip"]

DEFAULTS: dict[str, Any] = {
    "upload_max_bytes": 20 * 1024 * 1024,
    "upload_max_pixels": 40_000_000,
    "upload_max_zip_bytes": 1024 * 1024 * 1024,
    "upload_max_zip_entries": 20_000,
    "holdout_fraction": 0.2,
    "min_train_images": 5,
    "min_holdout_images": 1,
}
HOLDOUT_RULE_MIN_IMAGES = 5
THUMB_SIZE = 160
JPEG_QUALITY = 95
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ORIENTATION = ExifTags.Base.Orientation

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


class _Rejected(Exception):
    def __init__(self, key: str, **params):
        super().__init__(key)
        self.key, self.params = key, params


@dataclass
class _Item:
    """One file to ingest. ``load`` defers reading (zip entries, folder files) until it is needed."""
    name: str
    load: Callable[[], bytes] | None = None
    split: str | None = None
    decoded_as: str | None = None
    result: IngestResult | None = None     # already decided (e.g. refused zip entry)
    label_id: int | None = None
    from_zip: bool = False
    original_name: str | None = None       # what to record; defaults to the base name of ``name``


ProgressFn = Callable[[int, int, str], None]


# ---- settings -----------------------------------------------------------------------------------
def setting(store: Store, key: str):
    return store.get_setting(key, DEFAULTS[key])


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f}"


def hash_split(sha256: str, holdout_fraction: float) -> str:
    """The split an image gets at upload; depends on nothing but its hash and the fraction."""
    return "holdout" if int(sha256[:8], 16) / 2**32 < holdout_fraction else "train"


# ---- validation and normalisation ---------------------------------------------------------------
@dataclass
class Normalised:
    data: bytes
    ext: str
    width: int
    height: int


def normalise_image(data: bytes, max_bytes: int, max_pixels: int) -> Normalised:
    """Validate ``data`` and return what to store; raises ``_Rejected`` with a message key."""
    if not data:
        raise _Rejected("images.empty")
    if len(data) > max_bytes:
        raise _Rejected("images.too_large", size=_mb(len(data)), limit=_mb(max_bytes))
    with warnings.catch_warnings():
        # Pillow's own decompression-bomb guard stays on; its warning tier is treated as a refusal too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format
                if fmt not in SUPPORTED_FORMATS:
                    raise _Rejected("images.unsupported_format", format=fmt or "?")
                width, height = probe.size
                # Same test as Pillow's warning tier, made explicit: catch_warnings is process-wide
                # state, so another thread could reset the filter between open() and here.
                if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                    raise _Rejected("images.decompression_bomb")
                if width * height > max_pixels:
                    raise _Rejected("images.too_many_pixels", width=width, height=height,
                                    mp=f"{width * height / 1e6:.1f}", limit=f"{max_pixels / 1e6:.0f}")
                probe.verify()
            # verify() leaves the image unusable and checks little for JPEG: decode for real.
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rotated = img.getexif().get(_ORIENTATION, 1) not in (1, None)
                keep_original = (fmt in ("JPEG", "PNG") and img.mode == "RGB" and not rotated
                                 and "transparency" not in img.info)
                if keep_original:
                    return Normalised(data, "jpg" if fmt == "JPEG" else "png", width, height)
                rgb = _to_rgb(ImageOps.exif_transpose(img))
        except _Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _Rejected("images.decompression_bomb") from None
        except UnidentifiedImageError:
            raise _Rejected("images.not_image") from None
        except Exception as exc:  # Pillow raises many types on malformed data (OSError, SyntaxError, ...)
            log.info("image decode failed: %r", exc)
            raise _Rejected("images.corrupt") from None
    out = io.BytesIO()
    if fmt in ("JPEG", "MPO"):
        rgb.save(out, "JPEG", quality=JPEG_QUALITY)
        ext = "jpg"
    else:
        rgb.save(out, "PNG")
        ext = "png"
    return Normalised(out.getvalue(), ext, rgb.width, rgb.height)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(img).astype(np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / (65535.0 if arr.max() <= 65535 else arr.max()) * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "L" and "transparency" in img.info:
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


# ---- storage ------------------------------------------------------------------------------------
def image_path(store: Store, row: dict) -> Path:
    """Absolute path of a stored image (``row`` is a row of the ``images`` table)."""
    return store.home / row["path"]


def _write_temp(store: Store, data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=store.home / "tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _label_row(store: Store, label_id: int) -> dict:
    row = store.query_one("SELECT id, name, status FROM labels WHERE id = ?", (int(label_id),))
    if row is None:
        raise UserError("err.not_found", what="label", id=label_id)
    return row


def _open_label(store: Store, label_id: int) -> dict:
    label = _label_row(store, label_id)
    if label["status"] not in OPEN_STATUSES:
        raise UserError("images.label_not_open", name=label["name"], status=label["status"])
    return label


def _existing_result(store: Store, name: str, existing: dict, label_id: int) -> IngestResult:
    if existing["label_id"] == label_id:
        return IngestResult(name, "duplicate", "images.duplicate", {}, existing["id"])
    other = _label_row(store, existing["label_id"])
    return IngestResult(name, "conflict", "images.conflict",
                        {"other": other["name"], "other_id": other["id"]}, existing["id"])


def _clean_name(name: str) -> str:
    """A user's file name, for display and the ``original_name`` column only (never a path)."""
    name = "".join(ch for ch in str(name) if unicodedata.category(ch)[0] != "C")
    return name[:255]


def _ingest_one(store: Store, actor: Actor, label_id: int, item: _Item, data: bytes, limits: dict) -> IngestResult:
    name = item.name
    sha = hashlib.sha256(data).hexdigest() if data else ""
    if sha:
        existing = store.query_one("SELECT id, label_id FROM images WHERE sha256 = ?", (sha,))
        if existing:
            return _existing_result(store, name, existing, label_id)
    try:
        norm = normalise_image(data, limits["upload_max_bytes"], limits["upload_max_pixels"])
    except _Rejected as rej:
        return IngestResult(name, "error", rej.key, rej.params)
    split = item.split or hash_split(sha, limits["holdout_fraction"])
    rel = f"images/{sha}.{norm.ext}"
    final = store.home / rel
    tmp = _write_temp(store, norm.data, "." + norm.ext)
    placed = False
    try:
        with store.transaction():
            # Re-check inside the write lock: another process may have stored the same bytes meanwhile.
            existing = store.query_one("SELECT id, label_id FROM images WHERE sha256 = ?", (sha,))
            if existing:
                return _existing_result(store, name, existing, label_id)
            os.replace(tmp, final)
            placed = True
            image_id = store.db["images"].insert({
                "sha256": sha, "path": rel, "label_id": label_id, "split": split,
                "width": norm.width, "height": norm.height, "bytes": len(norm.data),
                "original_name": _clean_name(item.original_name or os.path.basename(name.replace("\\", "/"))),
                "uploaded_by": actor.username, "uploaded_at": now_iso(),
            }).last_pk
    except BaseException:
        if placed:  # the row never committed, so nothing references the file
            final.unlink(missing_ok=True)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    if item.decoded_as:
        return IngestResult(name, "added", "images.added_name_decoded",
                            {"split": split, "encoding": item.decoded_as}, image_id)
    return IngestResult(name, "added", "images.added", {"split": split}, image_id)


def ensure_min_holdout(store: Store, label_id: int) -> int | None:
    """Give a label with enough images at least one holdout image (the train image with the smallest
    hash value, so the choice does not depend on upload order). Trained labels are left alone: their
    train images were already learned. Returns the promoted image id, if any."""
    with store.transaction():
        label = _label_row(store, label_id)
        if label["status"] == "trained":
            return None
        counts = store.query_one(
            "SELECT COUNT(*) AS n, SUM(split = 'holdout') AS h FROM images WHERE label_id = ?", (label_id,))
        if counts["n"] < HOLDOUT_RULE_MIN_IMAGES or (counts["h"] or 0) > 0:
            return None
        chosen = store.query_one(
            "SELECT id, sha256 FROM images WHERE label_id = ? AND split = 'train' ORDER BY sha256 LIMIT 1",
            (label_id,))
        store.execute("UPDATE images SET split = 'holdout' WHERE id = ?", (chosen["id"],))
        store.audit("system", "image.split", "image", chosen["id"], split="holdout", rule="min_holdout")
        return chosen["id"]


def _limits(store: Store) -> dict:
    return {k: setting(store, k) for k in DEFAULTS}


def _run_items(store: Store, actor: Actor, items: list[_Item], default_label: int | None,
               progress: ProgressFn | None, limits: dict) -> list[IngestResult]:
    results: list[IngestResult] = []
    touched: set[int] = set()
    for done, item in enumerate(items, start=1):
        if item.result is not None:
            results.append(item.result)
        else:
            label_id = item.label_id if item.label_id is not None else default_label
            try:
                data = item.load() if item.load else b""
                if item.from_zip and _is_zip(data):  # an archive hiding behind an image name
                    result = IngestResult(item.name, "error", "images.zip_nested")
                else:
                    result = _ingest_one(store, actor, label_id, item, data, limits)
            except _Rejected as rej:
                result = IngestResult(item.name, "error", rej.key, rej.params)
            except Exception as exc:  # disk full, permission... the rest of the batch still runs
                log.exception("storing %r failed", item.name)
                result = IngestResult(item.name, "error", "images.store_failed", {"detail": str(exc)})
            results.append(result)
            if result.status == "added":
                touched.add(label_id)
        if progress:
            progress(done, len(items), item.name)
    for label_id in sorted(touched):
        ensure_min_holdout(store, label_id)
    added = [r for r in results if r.status == "added"]
    # Promotions may have changed the split of images added in this batch: report the final split.
    if added:
        splits = dict((r["id"], r["split"]) for r in store.query(
            f"SELECT id, split FROM images WHERE id IN ({','.join('?' * len(added))})",
            tuple(r.image_id for r in added)))
        for r in added:
            r.params["split"] = splits.get(r.image_id, r.params.get("split"))
    return results


def _is_zip(data: bytes) -> bool:
    return data[:4] in _ZIP_MAGIC


# ---- zips ---------------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")


def _entry_name(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """The entry's name as the archiver meant it, and the encoding used when it was not flagged UTF-8.

    Without the UTF-8 flag (bit 11) zipfile decodes names as cp437; Windows and macOS tools often
    write UTF-8 or (Japanese Windows) cp932 without setting it, so re-decode the original bytes."""
    if info.flag_bits & 0x800:
        return info.filename, None
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename, None
    for encoding in ("utf-8", "cp932"):
        try:
            decoded = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return decoded, (None if decoded == info.filename else encoding)
    return info.filename, "cp437"


def _zip_items(zip_name: str, data: bytes, limits: dict) -> list[_Item]:
    if len(data) > limits["upload_max_zip_bytes"]:
        return [_Item(zip_name, result=IngestResult(zip_name, "error", "images.zip_too_large", {
            "size": _mb(len(data)), "limit": _mb(limits["upload_max_zip_bytes"])}))]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return [_Item(zip_name, result=IngestResult(zip_name, "error", "images.zip_bad"))]
    if len(infos) > limits["upload_max_zip_entries"]:
        return [_Item(zip_name, result=IngestResult(zip_name, "error", "images.zip_too_many", {
            "count": len(infos), "limit": limits["upload_max_zip_entries"]}))]
    items: list[_Item] = []
    for info in infos:
        entry, decoded_as = _entry_name(info)
        display = _clean_name(f"{zip_name}: {entry}")
        path = entry.replace("\\", "/")
        parts = [p for p in path.split("/") if p]
        if path.startswith("/") or _DRIVE.match(path) or ".." in parts:
            items.append(_Item(display, result=IngestResult(display, "error", "images.zip_unsafe_path")))
            continue
        if info.is_dir() or not parts or "__MACOSX" in parts or any(p.startswith(".") for p in parts):
            continue
        if info.flag_bits & 0x1:
            items.append(_Item(display, result=IngestResult(display, "error", "images.zip_encrypted")))
            continue
        if parts[-1].lower().endswith(".zip"):
            items.append(_Item(display, result=IngestResult(display, "error", "images.zip_nested")))
            continue
        if info.file_size > limits["upload_max_bytes"]:
            items.append(_Item(display, result=IngestResult(display, "error", "images.too_large", {
                "size": _mb(info.file_size), "limit": _mb(limits["upload_max_bytes"])})))
            continue
        items.append(_Item(display, load=_zip_loader(archive, info, limits["upload_max_bytes"]),
                           decoded_as=decoded_as, from_zip=True, original_name=parts[-1]))
    return items


def _zip_loader(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            with archive.open(info) as fh:
                # Never trust the declared size: read at most one byte past the limit.
                data = fh.read(max_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            log.info("zip entry %r unreadable: %r", info.filename, exc)
            raise _Rejected("images.zip_entry_corrupt") from None
        if len(data) > max_bytes:
            raise _Rejected("images.too_large", size=f">{_mb(max_bytes)}", limit=_mb(max_bytes))
        return data
    return load


# ---- public ingestion API -----------------------------------------------------------------------
def _as_name_and_bytes(f: Any) -> tuple[str, bytes]:
    if isinstance(f, tuple):
        return str(f[0]), bytes(f[1])
    return str(getattr(f, "name", "upload")), f.getvalue()  # Streamlit's UploadedFile


def ingest_uploads(store: Store, actor: Actor, label_id: int, files: Iterable[Any], *,
                   progress: ProgressFn | None = None) -> list[IngestResult]:
    """Add uploaded files to a label. ``files`` holds ``(name, bytes)`` pairs or objects with ``name``
    and ``getvalue()`` (Streamlit's ``UploadedFile``); zips are unpacked in memory (one level)."""
    require(actor, "image.upload")
    label = _open_label(store, label_id)
    limits = _limits(store)
    items: list[_Item] = []
    for f in files:
        name, data = _as_name_and_bytes(f)
        name = _clean_name(name)
        if _is_zip(data) or (name.lower().endswith(".zip") and data):
            items.extend(_zip_items(name, data, limits))
        else:
            items.append(_Item(name, load=(lambda d=data: d)))
    results = _run_items(store, actor, items, label["id"], progress, limits)
    _audit_batch(store, actor, label["id"], results, source="upload")
    return results


def _audit_batch(store: Store, actor: Actor, label_id: int | None, results: list[IngestResult], **details) -> None:
    counts = summarize(results)
    store.audit(actor.username, "image.upload", "label", label_id, **counts, **details)


def summarize(results: Iterable[IngestResult]) -> dict[str, int]:
    counts = {"added": 0, "duplicate": 0, "conflict": 0, "error": 0}
    for r in results:
        counts[r.status] += 1
    return counts


# ---- server-side folders ------------------------------------------------------------------------
SPLIT_FOLDERS = {"train": "train", "test": "holdout", "val": "holdout"}


@dataclass
class FolderImport:
    results: list[IngestResult]
    labels: dict[str, int]               # folder name -> label id
    created: list[str]                   # folders for which a label was proposed and approved
    unmatched: list[str]                 # folders skipped because no label matched
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        return summarize(self.results)

    @property
    def images_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


def scan_folder(root: str | os.PathLike) -> list[tuple[str, Path, str | None]]:
    """``(class folder name, file, split or None)`` for an ImageNet-style tree: ``root/<class>/*`` or
    ``root/{train,test}/<class>/*``. Dotfiles are skipped; files are listed in name order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("images.folder_missing", path=str(root))
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_FOLDERS]
    if split_dirs:
        layers = [(p, SPLIT_FOLDERS[p.name.lower()]) for p in split_dirs]
    else:
        layers = [(root, None)]
    found = []
    for base, split in layers:
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    found.append((class_dir.name, f, split))
    return found


def find_label_for_folder(store: Store, folder: str) -> dict | None:
    """An open label whose name, glossary term (canonical or English) matches a folder name."""
    marks = ",".join("?" * len(OPEN_STATUSES))
    rows = store.query(
        "SELECT l.id, l.name, l.name_key, l.entry_id, l.status, g.canonical, g.en FROM labels l "
        f"LEFT JOIN glossary_entries g ON g.id = l.entry_id WHERE l.status IN ({marks}) ORDER BY l.id",
        OPEN_STATUSES)
    wanted = unicodedata.normalize("NFKC", folder).casefold().strip()
    for key in ("name", "canonical", "en"):
        for row in rows:
            if row[key] and unicodedata.normalize("NFKC", row[key]).casefold().strip() == wanted:
                return row
    try:  # the glossary folds spelling variants (e.g. katakana/hiragana, aliases)
        from core import labels as label_service
        lookup = label_service.preview(store, folder)
        if lookup.auto:
            for row in rows:
                if row["entry_id"] == lookup.entry_id:
                    return row
    except UserError:
        pass
    return None


def import_folder(store: Store, actor: Actor, root: str | os.PathLike, *, create_labels: bool = False,
                  progress: ProgressFn | None = None) -> FolderImport:
    """Import ``root/<class>/*`` (or ``root/{train,test}/<class>/*``, keeping that split). With
    ``create_labels`` a missing class is proposed and approved by ``actor`` through ``core.labels``."""
    require(actor, "image.upload")
    started = time.perf_counter()
    found = scan_folder(root)
    limits = _limits(store)
    labels: dict[str, int] = {}
    created: list[str] = []
    unmatched: list[str] = []
    pre_results: list[IngestResult] = []
    for folder in sorted({f for f, _, _ in found}):
        label = find_label_for_folder(store, folder)
        if label is None and create_labels:
            from core import labels as label_service
            try:
                proposed = label_service.propose(store, actor, folder, create_entry=True)
                label = label_service.approve(store, actor, proposed["id"])
                created.append(folder)
            except UserError as err:
                pre_results.append(IngestResult(folder, "error", err.key, err.params))
                unmatched.append(folder)
                continue
        if label is None:
            pre_results.append(IngestResult(folder, "error", "images.folder_no_label", {"folder": folder}))
            unmatched.append(folder)
            continue
        _open_label(store, label["id"])
        labels[folder] = label["id"]
    items = [
        _Item(f"{folder}/{path.name}" if split is None else f"{split}/{folder}/{path.name}",
              load=path.read_bytes, split=split, label_id=labels[folder], original_name=path.name)
        for folder, path, split in found if folder in labels
    ]
    results = pre_results + _run_items(store, actor, items, None, progress, limits)
    store.audit(actor.username, "image.import_folder", "folder", str(root), **summarize(results),
                created=created, unmatched=unmatched)
    return FolderImport(results, labels, created, unmatched, time.perf_counter() - started)


# ---- reading ------------------------------------------------------------------------------------
def label_counts(store: Store, statuses: Iterable[str] = OPEN_STATUSES) -> list[dict]:
    """``label_id, name, status, n_train, n_holdout`` for every label in ``statuses``."""
    statuses = tuple(statuses)
    marks = ",".join("?" * len(statuses))
    return store.query(
        "SELECT l.id AS label_id, l.name, l.status, "
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
    tmp = _write_temp(store, buf.getvalue(), ".jpg")
    os.replace(tmp, path)
    return path


# ---- readiness ----------------------------------------------------------------------------------
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
            rows.append({"name": _label_row(store, label_id)["name"], "n_train": r.n_train, "min_train": min_train,
                         "n_holdout": r.n_holdout, "min_holdout": min_holdout})
    if rows:
        raise NotReadyError(rows)


# ---- moving and deleting ------------------------------------------------------------------------
def move_images(store: Store, actor: Actor, image_ids: Iterable[int], target_label_id: int) -> int:
    """Move images to another open label; each image keeps its split (fixed at upload)."""
    require(actor, "image.manage")
    moved = 0
    sources: set[int] = set()
    with store.transaction():
        target = _open_label(store, target_label_id)
        rows = [get_image(store, image_id) for image_id in image_ids]
        _refuse_changes_to_training_sets(store, rows, extra_label_ids=[target["id"]])
        for row in rows:
            if row["label_id"] == target["id"]:
                continue
            store.execute("UPDATE images SET label_id = ? WHERE id = ?", (target["id"], row["id"]))
            store.audit(actor.username, "image.move", "image", row["id"], sha256=row["sha256"],
                        before=row["label_id"], after=target["id"])
            sources.add(row["label_id"])
            moved += 1
    for label_id in sorted(sources | {target["id"]}):
        ensure_min_holdout(store, label_id)
    return moved


def _refuse_changes_to_training_sets(store: Store, rows: list[dict], extra_label_ids: Iterable[int] = ()) -> None:
    """Images of a label in a queued or running task stay put until it ends; and a label a run has
    already learned keeps at least ``min_holdout_images`` holdout images, so its accuracy can still be
    measured when later tasks are evaluated."""
    from core.labels import get_label, refuse_while_training, tasks_with_label

    touched = {row["label_id"] for row in rows} | set(extra_label_ids)
    for label_id in sorted(touched):
        refuse_while_training(store, get_label(store, label_id))
    min_holdout = setting(store, "min_holdout_images")
    for label_id in sorted({row["label_id"] for row in rows}):
        if not tasks_with_label(store, label_id, ("done",)):
            continue
        leaving = sum(1 for row in rows if row["label_id"] == label_id and row["split"] == "holdout")
        have = store.query_one("SELECT COUNT(*) AS n FROM images WHERE label_id = ? AND split = 'holdout'",
                               (label_id,))["n"]
        if leaving and have - leaving < min_holdout:
            label = get_label(store, label_id)
            raise UserError("images.keep_holdout", name=label["name"], n=min_holdout)


def delete_images(store: Store, actor: Actor, image_ids: Iterable[int]) -> int:
    require(actor, "image.manage")
    doomed: list[dict] = []
    with store.transaction():
        rows = [get_image(store, image_id) for image_id in image_ids]
        _refuse_changes_to_training_sets(store, rows)
        for row in rows:
            store.execute("DELETE FROM images WHERE id = ?", (row["id"],))
            store.audit(actor.username, "image.delete", "image", row["id"], sha256=row["sha256"],
                        label_id=row["label_id"], split=row["split"], original_name=row["original_name"])
            doomed.append(row)
    # Files go only after the rows are gone for good; a crash in between leaves an unreferenced file,
    # never a row pointing at nothing.
    for row in doomed:
        image_path(store, row).unlink(missing_ok=True)
        for thumb in (store.home / "cache" / "thumbs").glob(f"{row['sha256']}_*.jpg"):
            thumb.unlink(missing_ok=True)
    return len(doomed)


# ---- export -------------------------------------------------------------------------------------
_FORBIDDEN_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
CSV_COLUMNS = ["image_id", "sha256", "file", "split", "label_id", "label_name", "canonical", "entry_id",
               "width", "height", "original_name"]


def safe_folder_name(name: str, max_bytes: int = 120) -> str:
    """A folder name that is valid on Linux, macOS and Windows and keeps Japanese text readable."""
    s = _FORBIDDEN_CHARS.sub("_", unicodedata.normalize("NFC", name)).strip().rstrip(". ")
    while len(s.encode("utf-8")) > max_bytes:
        s = s[:-1]
    s = s.strip().rstrip(". ")
    if not s or s in (".", ".."):
        s = "_"
    if s.split(".")[0].upper() in _WINDOWS_RESERVED:
        s = "_" + s
    return s


@dataclass
class ExportResult:
    path: Path
    n_images: int
    n_labels: int
    folders: dict[int, str]      # label id -> folder name


def _export_plan(store: Store, statuses: Iterable[str]) -> tuple[list[dict], dict[int, str], list[dict]]:
    from core import labels as label_service
    labels = label_service.list_labels(store, statuses)
    folders: dict[int, str] = {}
    taken: set[str] = set()
    for label in labels:
        folder = safe_folder_name(label["canonical"] or label["name"])
        if folder.casefold() in taken:   # case-insensitive filesystems would merge them
            folder = safe_folder_name(f"{folder}_{label['id']}")
        taken.add(folder.casefold())
        folders[label["id"]] = folder
    images = []
    if labels:
        marks = ",".join("?" * len(labels))
        images = store.query(f"SELECT * FROM images WHERE label_id IN ({marks}) ORDER BY label_id, id",
                             tuple(l["id"] for l in labels))
    return labels, folders, images


def export_dataset(store: Store, actor: Actor, dest: str | os.PathLike, *, fmt: str = "zip",
                   statuses: Iterable[str] = EXPORT_STATUSES) -> ExportResult:
    """Write an ImageNet-style ``train/<canonical>/…`` + ``test/<canonical>/…`` tree (holdout → test)
    and ``images.csv`` as a zip file or a folder. The destination appears complete or not at all."""
    require(actor, "report.export")
    if fmt not in ("zip", "folder"):
        raise ValueError(fmt)
    dest = Path(dest).resolve()
    labels, folders, images = _export_plan(store, statuses)
    if not images:
        raise UserError("images.export_empty")
    if fmt == "folder" and dest.exists():
        raise UserError("images.export_exists", path=str(dest))
    by_id = {l["id"]: l for l in labels}
    rows, members = [], []
    for img in images:
        label = by_id[img["label_id"]]
        ext = Path(img["path"]).suffix
        rel = f"{'train' if img['split'] == 'train' else 'test'}/{folders[label['id']]}/{img['sha256']}{ext}"
        members.append((image_path(store, img), rel))
        rows.append({"image_id": img["id"], "sha256": img["sha256"], "file": rel, "split": img["split"],
                     "label_id": label["id"], "label_name": label["name"], "canonical": label["canonical"],
                     "entry_id": label["entry_id"] or "", "width": img["width"], "height": img["height"],
                     "original_name": img["original_name"]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_bytes = buf.getvalue().encode("utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".zip.tmp", dir=dest.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_STORED) as zf:
                for src, rel in members:
                    zf.write(src, rel)
                zf.writestr("images.csv", csv_bytes)
            os.replace(tmp_name, dest)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    else:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
        try:
            for src, rel in members:
                (tmp_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp_dir / rel)
            (tmp_dir / "images.csv").write_bytes(csv_bytes)
            os.rename(tmp_dir, dest)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    store.audit(actor.username, "image.export", "export", str(dest), format=fmt, images=len(rows),
                labels=len({r["label_id"] for r in rows}))
    return ExportResult(dest, len(rows), len({r["label_id"] for r in rows}), folders)
