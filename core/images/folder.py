"""Import of a server-side folder (``python -m core.cli import-folder``): ``<root>/<label>/*`` or
``<root>/{train,test,val}/<label>/*`` (test and val → holdout, keeping the given split).

Each label folder is matched to an open label by name, glossary term (canonical or English) or the
glossary's folding of spelling variants. With ``create_labels`` a folder that matches none gets a new
label through core.labels — proposed by the caller, and approved too when the caller may review —
with a draft glossary entry when the glossary does not know the term. Each label is created in one
transaction (label, entry and their audit rows), so the report lists exactly what was committed.

A folder that is one of our exports carries ``images.csv``; its ``label_name``/``canonical`` columns
(written formula-safe, read back losslessly) name each label folder's label, so names that had to be
changed to make folder names (``a/b`` → ``a_b``) still find their label.
"""
from __future__ import annotations

import logging
import os
import time
import unicodedata
from dataclasses import dataclass, field

from core import labels as label_service
from core.auth import Actor, require
from core.i18n import UserError
from core.inputs import shown_name
from core.images.base import OPEN_STATUSES, IngestResult, Item, ProgressFn, limits, open_label, summarize
from core.images.export import read_images_csv
from core.images.ingest import AuditTarget, run_items
from core.images.scan import FolderScan, read_inside, scan_image_folder
from core.store import Store

log = logging.getLogger(__name__)

SPLIT_TO_STORED = {"train": "train", "test": "holdout", "val": "holdout"}


@dataclass
class FolderImport:
    results: list[IngestResult]
    labels: dict[str, int]               # label folder name -> label id
    created: list[str]                   # label folders for which a label was committed
    unmatched: list[str]                 # label folders skipped because no label matched
    seconds: float
    proposed: list[str] = field(default_factory=list)    # of ``created``, those left for review
    new_entries: list[str] = field(default_factory=list)  # glossary entries made (drafts) for them
    links: list[str] = field(default_factory=list)        # symbolic links refused

    @property
    def counts(self) -> dict[str, int]:
        return summarize(self.results)

    @property
    def images_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


def _key(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").casefold().strip()


def find_label_for_folder(store: Store, folder: str, names: tuple[str, ...] = ()) -> dict | None:
    """An open label whose name or glossary term (canonical or English) is ``folder`` or one of
    ``names`` (from images.csv), else the one the glossary folds it onto."""
    rows = label_service.list_labels(store, OPEN_STATUSES)
    for wanted in (*names, folder):
        for key in ("name", "canonical", "en"):
            for row in rows:
                if row[key] and _key(row[key]) == _key(wanted):
                    return row
    for wanted in (*names, folder):
        try:  # the glossary folds spelling variants (e.g. katakana/hiragana, aliases)
            lookup = label_service.preview(store, wanted)
        except UserError:
            continue
        if lookup.auto:
            for row in rows:
                if row["entry_id"] == lookup.entry_id:
                    return row
    return None


def _create_label(store: Store, actor: Actor, name: str) -> tuple[dict, str | None]:
    """Propose (and approve, when ``actor`` may) in one transaction. Returns the label and the id of
    the draft glossary entry made for it, if one was."""
    with store.transaction():
        label = label_service.propose(store, actor, name, create_entry=True)
        [proposal] = [r for r in store.audit_rows("label", label["id"]) if r["action"] == "label.propose"]
        new_entry = label["entry_id"] if proposal["details"].get("match") == "new-entry" else None
        if actor.can("label.review"):
            label = label_service.approve(store, actor, label["id"])
    return label, new_entry


def _csv_names(scan: FolderScan) -> tuple[dict[str, tuple[str, ...]], list[IngestResult]]:
    """label folder -> (label_name, canonical) from our own images.csv, when the folder has one."""
    path = scan.root / "images.csv"
    if not path.is_file() or path.is_symlink():
        return {}, []
    try:
        rows = read_images_csv(read_inside(scan.root, "images.csv", 64 * 1024 * 1024))
    except Exception as exc:   # not ours, or damaged: import by folder names alone, and say so
        log.info("images.csv unreadable: %r", exc)
        return {}, [IngestResult("images.csv", "error", "images.folder_csv_unreadable")]
    names: dict[str, tuple[str, ...]] = {}
    for row in rows:
        parts = row.get("file", "").split("/")
        if len(parts) == 3:
            names.setdefault(parts[1], tuple(n for n in (row.get("label_name"), row.get("canonical")) if n))
    return names, []


def import_folder(store: Store, actor: Actor, root: str | os.PathLike, *, create_labels: bool = False,
                  progress: ProgressFn | None = None) -> FolderImport:
    """Import ``root`` (see the module docstring); refusals are results, never exceptions."""
    require(actor, "image.upload")
    if create_labels:
        require(actor, "label.propose")
    started = time.perf_counter()
    scan = scan_image_folder(root)
    lim = limits(store)
    csv_names, pre_results = _csv_names(scan)
    report = FolderImport(pre_results, {}, [], [], 0.0, links=list(scan.links))
    report.results += [IngestResult(link, "error", "images.folder_symlink", {"path": link}) for link in scan.links]
    report.results += [IngestResult(rel, "error", "images.folder_not_image", {"path": rel}) for rel in scan.skipped]
    report.results += [IngestResult(rel, "error", "images.folder_bad_name", {"path": rel}) for rel in scan.undecodable]
    for folder in scan.label_names:
        names = csv_names.get(folder, ())
        label = find_label_for_folder(store, folder, names)
        if label is None and create_labels:
            try:
                label, new_entry = _create_label(store, actor, names[0] if names else folder)
            except UserError as err:
                report.results.append(IngestResult(folder, "error", err.key, err.params))
                report.unmatched.append(folder)
                continue
            report.created.append(folder)
            if label["status"] == "proposed":
                report.proposed.append(folder)
            if new_entry:
                report.new_entries.append(new_entry)
        if label is None:
            report.results.append(IngestResult(folder, "error", "images.folder_no_label", {"folder": folder}))
            report.unmatched.append(folder)
            continue
        open_label(store, label["id"])
        report.labels[folder] = label["id"]
    max_bytes = lim["upload_max_bytes"]
    items = [Item(rel, load=(lambda rel=rel: read_inside(scan.root, rel, max_bytes)),
                  split=SPLIT_TO_STORED[split] if split else None, label_id=report.labels[folder],
                  original_name=rel.rsplit("/", 1)[-1])
             for rel, folder, split in scan if folder in report.labels]
    report.results += run_items(store, actor, items, None, progress, lim,
                                AuditTarget("folder", shown_name(str(scan.root)), {"source": "folder"}))
    report.seconds = time.perf_counter() - started
    store.audit(actor.username, "image.import_folder", "folder", shown_name(str(scan.root)), **report.counts,
                created=report.created, proposed=report.proposed, new_entries=report.new_entries,
                unmatched=report.unmatched, links=len(report.links))
    return report
