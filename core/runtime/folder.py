"""Folder and line inference with a bundle (torch-free): one CSV row per image, optional sorting into
class folders, and a watcher for images arriving from a line.

Row columns: file, class, score, unknown, familiarity, model_version, error. A file that is not an
image gets a row with its error and is skipped; nothing stops. With ``sort_into`` every image is
copied to ``<sort_into>/<class name>/`` (or ``_unknown/``; bad files to ``_error/``).

The watcher (watchdog) handles each file once: a state file next to the output holds the sha256 of
every image handled, so a restart neither skips the backlog nor handles an image twice.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, TextIO

from core.runtime.bundle import BadImage, Bundle

log = logging.getLogger(__name__)

COLUMNS = ("file", "class", "score", "unknown", "familiarity", "model_version", "error")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
UNKNOWN_DIR, ERROR_DIR = "_unknown", "_error"


def _row(bundle: Bundle, file: str, pred=None, error: str = "") -> dict:
    if pred is None:
        return {"file": file, "class": "", "score": "", "unknown": "", "familiarity": "",
                "model_version": bundle.version, "error": error}
    return {"file": file, "class": pred.name, "score": f"{pred.score:.4f}", "unknown": int(pred.unknown),
            "familiarity": f"{pred.familiarity:.4f}", "model_version": bundle.version, "error": ""}


def classify_paths(bundle: Bundle, paths: Iterable[str | os.PathLike], batch: int = 32) -> list[dict]:
    """One row per path, in order; unreadable files get an error row."""
    import numpy as np

    rows: list[dict] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if pending:
            scores, fam, _ = bundle.run(np.stack([p for _, p in pending]))
            for (i, _), pred in zip(pending, bundle.decide(scores, fam)):
                rows[i] = _row(bundle, rows[i]["file"], pred)
            pending.clear()

    for path in paths:
        rows.append(_row(bundle, str(path), error="pending"))
        try:
            pending.append((len(rows) - 1, bundle.decode(str(path))))
        except (BadImage, OSError) as exc:
            rows[-1] = _row(bundle, str(path), error=str(exc) or type(exc).__name__)
        if len(pending) >= batch:
            flush()
    flush()
    return rows


def write_csv(out: TextIO, rows: list[dict]) -> None:
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _safe_dir_name(name: str) -> str:
    cleaned = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip(" .")
    return cleaned or "_"


def sort_copy(row: dict, sort_into: Path) -> Path:
    """Copy the row's file into its class folder (``_unknown`` / ``_error``); never overwrites."""
    if row["error"]:
        folder = ERROR_DIR
    elif int(row["unknown"]):
        folder = UNKNOWN_DIR
    else:
        folder = _safe_dir_name(row["class"])
    dest_dir = sort_into / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    src = Path(row["file"])
    dest = dest_dir / src.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{src.stem}-{n}{src.suffix}"
        n += 1
    shutil.copy2(src, dest)
    return dest


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def predict_folder(bundle: Bundle, folder: str | os.PathLike, csv_path: str | os.PathLike | None = None,
                   sort_into: str | os.PathLike | None = None) -> list[dict]:
    """Classify every image under ``folder``; write the CSV and sort copies when asked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(str(folder))
    files = image_files(folder)
    if sort_into is not None:
        target = Path(sort_into).resolve()
        files = [f for f in files if target not in f.resolve().parents]
    rows = classify_paths(bundle, files)
    if csv_path is not None:
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            write_csv(fh, rows)
    if sort_into is not None:
        for row in rows:
            sort_copy(row, Path(sort_into))
    return rows


# ---- the line watcher ----------------------------------------------------------------------------
class Watcher:
    """Handles every image that appears under ``folder`` (and the backlog already there) exactly once.

    ``state_path`` (JSON) keeps the sha256 of each handled image, written atomically after each one, so
    after a crash or restart nothing is handled twice and nothing is missed. A file still being written
    is retried until its size stops changing; a bad file gets an error row and is recorded as handled."""

    def __init__(self, bundle: Bundle, folder: str | os.PathLike, csv_path: str | os.PathLike,
                 sort_into: str | os.PathLike | None = None, state_path: str | os.PathLike | None = None,
                 on_row: Callable[[dict], None] | None = None, settle_s: float = 0.3):
        self.bundle, self.folder = bundle, Path(folder)
        self.csv_path = Path(csv_path)
        self.sort_into = Path(sort_into) if sort_into else None
        self.state_path = Path(state_path) if state_path else self.csv_path.with_suffix(".state.json")
        self.on_row, self.settle_s = on_row, settle_s
        self.seen: set[str] = set()
        if self.state_path.exists():
            self.seen = set(json.loads(self.state_path.read_text(encoding="utf-8")).get("sha256", []))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: list[Path] = []
        self._wake = threading.Event()

    def _save_state(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps({"sha256": sorted(self.seen)}), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _append(self, row: dict) -> None:
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _settled(self, path: Path) -> bool:
        try:
            size = path.stat().st_size
            time.sleep(self.settle_s)
            return size > 0 and path.stat().st_size == size
        except OSError:
            return False

    def handle(self, path: Path) -> dict | None:
        """Classify ``path`` unless its content was handled before; returns the row or None."""
        path = Path(path)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return None
        if self.sort_into is not None and self.sort_into.resolve() in path.resolve().parents:
            return None
        with self._lock:
            try:
                data = path.read_bytes()
            except OSError:
                return None
            digest = hashlib.sha256(data).hexdigest()
            if digest in self.seen:
                return None
            try:
                pred = self.bundle.predict([data])[0]
                row = _row(self.bundle, str(path), pred)
            except BadImage as exc:
                row = _row(self.bundle, str(path), error=str(exc))
            self._append(row)
            if self.sort_into is not None:
                try:
                    sort_copy(row, self.sort_into)
                except OSError:
                    log.exception("could not sort %s", path)
            self.seen.add(digest)
            self._save_state()
        if self.on_row is not None:
            self.on_row(row)
        return row

    def backlog(self) -> int:
        return sum(self.handle(p) is not None for p in image_files(self.folder))

    def run(self, stop: threading.Event | None = None) -> None:
        """Handle the backlog, then every new or moved-in file until ``stop`` is set (or Ctrl-C)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        stop = stop or self._stop
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event):
                if not event.is_directory:
                    watcher._enqueue(Path(event.src_path))

            def on_moved(self, event):
                if not event.is_directory:
                    watcher._enqueue(Path(event.dest_path))

            def on_modified(self, event):
                if not event.is_directory:
                    watcher._enqueue(Path(event.src_path))

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        try:
            self.backlog()
            while not stop.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                while self._queue and not stop.is_set():
                    path = self._queue.pop(0)
                    if self._settled(path):
                        try:
                            self.handle(path)
                        except Exception:  # noqa: BLE001 - one bad file never stops the line
                            log.exception("failed on %s", path)
        finally:
            observer.stop()
            observer.join()

    def _enqueue(self, path: Path) -> None:
        if path not in self._queue:
            self._queue.append(path)
        self._wake.set()
