"""Dataset export: an ImageNet-style ``train/<canonical>/…`` + ``test/<canonical>/…`` tree (holdout →
test) and ``images.csv``, as a zip file or a folder. The destination appears complete or not at all.

``images.csv`` is written through glossary/csvsafe.py's ``SafeWriter``: a label named
``=HYPERLINK(…)`` cannot become a live formula in a reviewer's spreadsheet, and :func:`read_images_csv`
(used when such a folder is imported again) strips that escaping, so names survive the round trip.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core import labels as label_service
from core.auth import Actor, require
from core.i18n import UserError
from core.images.base import EXPORT_STATUSES, image_path
from core.store import Store
from glossary.csvsafe import SafeWriter, unescape_cell

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


def images_csv(rows: Iterable[dict]) -> bytes:
    """``images.csv`` (UTF-8, header first) with every cell formula-safe."""
    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([row[col] for col in CSV_COLUMNS] for row in rows)
    return buf.getvalue().encode("utf-8")


def read_images_csv(data: bytes) -> list[dict]:
    """The rows of an ``images.csv`` written by :func:`images_csv`, cells unescaped (lossless).
    ``ValueError`` when the header is not ours."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    header = [unescape_cell(cell) for cell in next(reader, [])]
    if header != CSV_COLUMNS:
        raise ValueError("not an sgcl-studio images.csv")
    return [dict(zip(CSV_COLUMNS, (unescape_cell(cell) for cell in row))) for row in reader if row]


@dataclass
class ExportResult:
    path: Path
    n_images: int
    n_labels: int
    folders: dict[int, str]      # label id -> folder name


def _export_plan(store: Store, statuses: Iterable[str]) -> tuple[list[dict], dict[int, str], list[dict]]:
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
        images = store.query(f"SELECT * FROM images WHERE label_id IN ({marks}) ORDER BY label_id, id",  # nosec B608  # ? placeholders only
                             tuple(l["id"] for l in labels))
    return labels, folders, images


def _write(dest: Path, fmt: str, members: list[tuple[Path, str]], csv_bytes: bytes) -> None:
    """Write into a temporary name beside ``dest`` and rename it into place; on any failure the temporary
    file or folder is removed, so ``dest`` appears complete or not at all."""
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


def export_dataset(store: Store, actor: Actor, dest: str | os.PathLike, *, fmt: str = "zip",
                   statuses: Iterable[str] = EXPORT_STATUSES) -> ExportResult:
    """Write the tree and ``images.csv`` to ``dest`` (a ``.zip`` file, or a folder that does not exist)."""
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
    csv_bytes = images_csv(rows)
    try:
        _write(dest, fmt, members, csv_bytes)
    except OSError as exc:   # a full disk, a read-only or vanished folder: a message, nothing half-written
        raise UserError("images.export_failed", path=str(dest),
                        reason=os.strerror(exc.errno) if exc.errno else type(exc).__name__) from None
    store.audit(actor.username, "image.export", "export", str(dest), format=fmt, images=len(rows),
                labels=len({r["label_id"] for r in rows}))
    return ExportResult(dest, len(rows), len({r["label_id"] for r in rows}), folders)
