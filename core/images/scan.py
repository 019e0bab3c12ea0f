"""The one folder scanner (folder import and the experiment both use it): pure, no database.

An ImageNet-style tree is either ``<root>/<label>/<file>`` or ``<root>/<split>/<label>/<file>`` with
split folders named ``train``, ``test`` or ``val`` (any case). Files count when their extension is one
of :data:`core.images.base.IMAGE_EXTENSIONS`; dotfiles and dot-folders are skipped silently; other
files are listed in ``skipped`` so a caller can say so.

Symbolic links are never followed — not to files, not to folders: a tree handed to the import must
not pull in ``/etc/passwd`` or another user's folder through a link. They are listed in ``links``.
:func:`read_inside` reads a scanned file the same way (no link in any component, a regular file, at
most a given size), so swapping a file for a link after the scan gains nothing either.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from core.i18n import UserError
from core.inputs import has_surrogates, shown_name
from core.images.base import IMAGE_EXTENSIONS, Rejected, mb

SPLIT_FOLDERS = ("train", "test", "val")
_SUFFIXES = frozenset("." + ext for ext in IMAGE_EXTENSIONS)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@dataclass(frozen=True)
class FolderScan:
    root: Path                          # the folder given, resolved
    paths: tuple[str, ...]              # image files, POSIX paths relative to ``root``, in name order
    labels: tuple[str, ...]             # the label folder name of each path
    splits: tuple[str | None, ...]      # "train" | "test" | "val" per path, None without split folders
    skipped: tuple[str, ...] = ()       # relative paths of files without an image extension
    links: tuple[str, ...] = ()         # relative paths of symbolic links (refused, not followed)
    undecodable: tuple[str, ...] = ()   # image files whose path is not UTF-8, shown with \\x.. escapes

    def __iter__(self):
        return iter(zip(self.paths, self.labels, self.splits))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))


def _entries(folder: Path):
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def scan_image_folder(root: str | os.PathLike) -> FolderScan:
    """List the images of ``root`` (see the module docstring). ``UserError("images.folder_missing")``
    when ``root`` is not a folder."""
    given = Path(root)
    if not given.is_dir():
        raise UserError("images.folder_missing", path=str(given))
    base = given.resolve()
    paths: list[str] = []
    labels: list[str] = []
    splits: list[str | None] = []
    skipped: list[str] = []
    links: list[str] = []
    undecodable: list[str] = []
    top = _entries(base)
    for entry in top:
        if entry.is_symlink():
            links.append(entry.name)
    top_dirs = [e for e in top if e.is_dir(follow_symlinks=False)]
    split_dirs = [e for e in top_dirs if e.name.lower() in SPLIT_FOLDERS]
    layers = [(e.name, e.name.lower()) for e in split_dirs] if split_dirs else [("", None)]
    for prefix, split in layers:
        if prefix:
            class_entries = _entries(base / prefix)
            links += [f"{prefix}/{e.name}" for e in class_entries if e.is_symlink()]
        else:
            class_entries = top
        for class_dir in (e for e in class_entries if e.is_dir(follow_symlinks=False)):
            rel_dir = f"{prefix}/{class_dir.name}" if prefix else class_dir.name
            for f in _entries(base / rel_dir):
                rel = f"{rel_dir}/{f.name}"
                if f.is_symlink():
                    links.append(rel)
                elif not f.is_file(follow_symlinks=False):
                    continue                       # sub-folders of a label folder are not part of the layout
                elif Path(f.name).suffix.lower() in _SUFFIXES and has_surrogates(rel):
                    # a name that is not UTF-8 (a Shift-JIS zip extracted on Linux): no label, database
                    # row or tokenizer can take it; reported per file, the rest is imported
                    undecodable.append(shown_name(rel))
                elif Path(f.name).suffix.lower() in _SUFFIXES:
                    paths.append(rel)
                    labels.append(class_dir.name)
                    splits.append(split)
                else:
                    skipped.append(rel)
    return FolderScan(base, tuple(paths), tuple(labels), tuple(splits), tuple(shown_name(p) for p in skipped),
                      tuple(shown_name(p) for p in links), tuple(undecodable))


def read_inside(root: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of ``root/rel``, opened one component at a time without following any link, at most
    ``max_bytes`` (one more byte is read to tell a file that is too large). Raises ``Rejected``
    (``images.folder_symlink``, ``images.too_large``) or ``OSError``."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise Rejected("images.folder_outside", path=rel)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nfd = os.open(part, os.O_RDONLY | _NOFOLLOW | (0 if last else _DIRECTORY), dir_fd=fd)
            except OSError as exc:
                if os.path.islink(os.path.join(root, *parts[:i + 1])):
                    raise Rejected("images.folder_symlink", path=rel) from None
                raise exc
            os.close(fd)
            fd = nfd
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Rejected("images.not_image")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise Rejected("images.too_large", size=f">{mb(max_bytes)}", limit=mb(max_bytes))
    return data
