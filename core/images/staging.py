"""Temporary files (uploads being stored, thumbnails being written) and their clean-up after a crash.

An upload (or a thumbnail write) stages its files in its own ``tmp/upload-<pid>-<random>/`` folder and
holds an exclusive ``flock`` on the folder's ``.lock`` file while it runs; the folder goes when it ends.
The kernel drops that lock when the process dies, however it dies (kill -9, power cut), so
:func:`remove_stale_uploads` can tell a dead process's leftovers from a live upload without guessing
from ages: it removes every ``upload-*`` folder whose lock it can take. It runs once per process and
data home, before the first staging folder is made; app start-up may call it too.

When a stale folder is found, the process that left it may have died inside a batch transaction,
after moving files into ``images/`` but before the rows committed. Those files are referenced by no
row; they are removed under the database's write lock (every writer places files only while holding
that lock, so no live upload can be between "file placed" and "row committed" meanwhile).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from core.store import Store

try:
    import fcntl
except ImportError:   # not POSIX: fall back to ages (see _is_stale)
    fcntl = None

log = logging.getLogger(__name__)

PREFIX = "upload-"
NEW_PREFIX = ".new-upload-"
LOCK_NAME = ".lock"
# Loose files and half-made folders younger than this may still be in use by their writer.
GRACE_SECONDS = 30.0
_FALLBACK_AGE = 24 * 3600.0

_SWEPT: set[Path] = set()                  # tmp roots this process has already cleaned
_GUARD = threading.Lock()


def _tmp_root(store: Store) -> Path:
    root = store.home / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def staging(store: Store) -> Iterator[Path]:
    """A temporary folder of this process, locked while in use and removed afterwards. The first use
    per process and data home sweeps what crashed processes left (:func:`remove_stale_uploads`)."""
    root = _tmp_root(store)
    with _GUARD:
        first = root not in _SWEPT
        _SWEPT.add(root)
    if first:
        remove_stale_uploads(store)
    # Made under another name and renamed once locked, so a sweep never sees an unlocked live folder.
    fresh = Path(tempfile.mkdtemp(prefix=NEW_PREFIX, dir=root))
    fd = os.open(fresh / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
    folder = fresh
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder = root / f"{PREFIX}{os.getpid()}-{fresh.name[len(NEW_PREFIX):]}"
        os.rename(fresh, folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def write_temp(folder: Path, data: bytes, suffix: str) -> Path:
    """``data`` in a new file of a :func:`staging` folder, flushed to disk."""
    fd, name = tempfile.mkstemp(prefix="f-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _is_stale(folder: Path) -> bool:
    if fcntl is None:
        return _age(folder) > _FALLBACK_AGE
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return _age(folder) >= GRACE_SECONDS
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False           # a live process holds it
    finally:
        os.close(fd)           # closing drops the lock we may have taken
    return True


def remove_stale_uploads(store: Store) -> dict[str, int]:
    """Remove what crashed processes left in ``tmp/`` (and, after such a crash, image files no row
    references). Returns counts: ``folders``, ``files`` (temporary) and ``orphans`` (in ``images/``)."""
    root = _tmp_root(store)
    removed = {"folders": 0, "files": 0, "orphans": 0}
    for entry in sorted([*root.glob(f"{PREFIX}*"), *root.glob(f"{NEW_PREFIX}*")]):
        if entry.is_dir() and not entry.is_symlink():
            half_made = entry.name.startswith(NEW_PREFIX)
            if (_age(entry) >= GRACE_SECONDS) if half_made else _is_stale(entry):
                removed["files"] += sum(1 for p in entry.iterdir() if p.name != LOCK_NAME)
                shutil.rmtree(entry, ignore_errors=True)
                removed["folders"] += 1
        elif _age(entry) >= GRACE_SECONDS:
            # A loose upload-* file: the layout before per-upload folders, whose writer is long gone.
            entry.unlink(missing_ok=True)
            removed["files"] += 1
    if removed["folders"] or removed["files"]:
        try:
            removed["orphans"] = _remove_orphan_images(store)
        except sqlite3.Error:   # the database is busy or read-only: orphans wait for the next start
            log.exception("could not look for unreferenced images in %s", store.home)
        log.warning("removed leftovers of an interrupted upload in %s: %s", store.home, removed)
    return removed


def _remove_orphan_images(store: Store) -> int:
    folder = store.home / "images"
    n = 0
    with store.transaction():   # the write lock: no live upload is between placing a file and its commit
        known = {row["path"] for row in store.query("SELECT path FROM images")}
        for path in folder.iterdir():
            if path.is_file() and f"images/{path.name}" not in known:
                path.unlink(missing_ok=True)
                n += 1
    return n
