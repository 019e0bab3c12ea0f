"""Zip uploads, read in memory and never extracted by path.

Nested archives are refused (not processed), entries with absolute paths, drive letters or ``..`` are
refused, encrypted entries are refused, directories, ``__MACOSX/`` and dotfiles are skipped silently.
Declared sizes are never trusted: an entry is read to at most one byte past the per-file limit.
Names without the UTF-8 flag are decoded as UTF-8, else cp932 (Japanese Windows), else cp437.
"""
from __future__ import annotations

import io
import logging
import re
import zipfile
from typing import Callable

from core.images.base import IngestResult, Item, Rejected, display_name, mb

log = logging.getLogger(__name__)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_zip(data: bytes) -> bool:
    return data[:4] in _ZIP_MAGIC


def entry_name(info: zipfile.ZipInfo) -> tuple[str, str | None]:
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


def _refused(name: str, key: str, **params) -> Item:
    return Item(name, result=IngestResult(name, "error", key, params))


def zip_items(zip_name: str, data: bytes, limits: dict) -> list[Item]:
    """One :class:`Item` per entry worth reporting (refusals already decided, images loaded lazily)."""
    if len(data) > limits["upload_max_zip_bytes"]:
        return [_refused(zip_name, "images.zip_too_large", size=mb(len(data)),
                         limit=mb(limits["upload_max_zip_bytes"]))]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return [_refused(zip_name, "images.zip_bad")]
    if len(infos) > limits["upload_max_zip_entries"]:
        return [_refused(zip_name, "images.zip_too_many", count=len(infos),
                         limit=limits["upload_max_zip_entries"])]
    items: list[Item] = []
    for info in infos:
        entry, decoded_as = entry_name(info)
        display = display_name(f"{zip_name}: {entry}")
        path = entry.replace("\\", "/")
        parts = [p for p in path.split("/") if p]
        if path.startswith("/") or _DRIVE.match(path) or ".." in parts:
            items.append(_refused(display, "images.zip_unsafe_path"))
            continue
        if info.is_dir() or not parts or "__MACOSX" in parts or any(p.startswith(".") for p in parts):
            continue
        if info.flag_bits & 0x1:
            items.append(_refused(display, "images.zip_encrypted"))
            continue
        if parts[-1].lower().endswith(".zip"):
            items.append(_refused(display, "images.zip_nested"))
            continue
        if info.file_size > limits["upload_max_bytes"]:
            items.append(_refused(display, "images.too_large", size=mb(info.file_size),
                                  limit=mb(limits["upload_max_bytes"])))
            continue
        items.append(Item(display, load=_loader(archive, info, limits["upload_max_bytes"]),
                          decoded_as=decoded_as, from_zip=True, original_name=parts[-1]))
    return items


def _loader(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            with archive.open(info) as fh:
                data = fh.read(max_bytes + 1)   # never trust the declared size
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            log.info("zip entry %r unreadable: %r", info.filename, exc)
            raise Rejected("images.zip_entry_corrupt") from None
        if len(data) > max_bytes:
            raise Rejected("images.too_large", size=f">{mb(max_bytes)}", limit=mb(max_bytes))
        return data
    return load
