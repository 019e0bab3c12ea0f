"""CSV import/export of glossary entries (Excel-friendly, lossless round trip).

Columns, in this order: ``id, canonical, reading, en, embed_text, aliases, distinct_from, notes (English),
status, notes_ja`` (the note in Japanese; optional); ``aliases`` and ``distinct_from`` are ``|``-separated. Files are read as UTF-8 with or
without a BOM (Excel's "CSV UTF-8" writes one) and written with a BOM when written to a path.
Every problem raises ``GlossaryCSVError`` naming the data row, the line and the column.

Cells are written through ``glossary.csvsafe`` (a value that a spreadsheet would run as a formula,
``=1+1``, ``-M3``, ``@x``, gets a leading apostrophe, and so does a value that starts with one), and
the reader strips exactly one leading apostrophe, so ``read_csv(write_csv(x)) == x``.
"""
from __future__ import annotations

import csv
from pathlib import Path
import io
import os
from typing import IO, Callable, Iterable

from .csvsafe import SafeWriter, unescape_cell
from .model import STATUSES, GlossaryCSVError, GlossaryEntry, GlossaryError, validate_entry

__all__ = ["COLUMNS", "REQUIRED", "read_csv", "write_csv", "starter_path"]

COLUMNS = ("id", "canonical", "reading", "en", "embed_text", "aliases", "distinct_from", "notes", "status")
EXTRA_COLUMNS = ("notes_ja",)   # added later: optional on import, always written on export
ALL_COLUMNS = COLUMNS + EXTRA_COLUMNS
REQUIRED = ("id", "canonical")
_LIST_COLUMNS = ("aliases", "distinct_from")
_VERBATIM = ("embed_text", "notes", "notes_ja")   # kept exactly as written; every other cell is trimmed
PROGRESS_EVERY = 500


def _read_bytes(src) -> bytes | str:
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as fh:
            return fh.read()
    data = src.read()
    return data


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        hint = ""
        try:
            data.decode("cp932")
            hint = " It looks like Shift_JIS/CP932: in Excel use 'Save As' > 'CSV UTF-8'."
        except UnicodeDecodeError:
            pass
        raise GlossaryCSVError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}).{hint}",
            row=max(line - 1, 0), line=line, code="encoding") from None


def _split(cell: str) -> list[str]:
    out: list[str] = []
    for part in cell.split("|"):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def read_csv(src: "str | os.PathLike | IO", *, max_rows: int | None = None,
             progress: "Callable[[int], None] | None" = None) -> list[GlossaryEntry]:
    """Parse and validate a glossary CSV; returns the entries in file order. ``max_rows``: refuse a file
    with more data rows (``code="too_many_rows"``) as soon as the next one is read, without parsing the
    rest. ``progress(rows read)`` is called every ``PROGRESS_EVERY`` rows."""
    data = _read_bytes(src)
    text = _decode(data) if isinstance(data, (bytes, bytearray)) else data.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise GlossaryCSVError(f"unreadable header: {exc}", row=0, line=1, code="syntax") from None
    if header is None or not any(h.strip() for h in header):
        raise GlossaryCSVError("the file is empty (no header row)", row=0, line=1, code="empty_file")
    names = [h.strip().lstrip("\ufeff").casefold() for h in header]
    for name in REQUIRED:
        if name not in names:
            raise GlossaryCSVError(f"missing required column '{name}' (columns: {', '.join(COLUMNS)})",
                                   row=0, line=1, field=name, code="missing_column")
    for i, name in enumerate(names):
        if name not in ALL_COLUMNS:
            raise GlossaryCSVError(f"unknown column '{header[i]}' (allowed: {', '.join(ALL_COLUMNS)})",
                                   row=0, line=1, field=header[i], code="unknown_column")
        if names.index(name) != i:
            raise GlossaryCSVError(f"column '{name}' appears twice", row=0, line=1, field=name,
                                   code="duplicate_column")

    entries: list[GlossaryEntry] = []
    first_row: dict[str, int] = {}
    row_no = 0
    prev_line = reader.line_num
    while True:
        start_line = prev_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise GlossaryCSVError(f"broken CSV quoting: {exc}", row=row_no + 1, line=start_line,
                                   code="syntax") from None
        prev_line = reader.line_num
        row_no += 1
        if not any(c.strip() for c in cells):
            continue  # blank line or an Excel row of empty cells
        if len(cells) < len(names) and all(n in EXTRA_COLUMNS for n in names[len(cells):]):
            cells = [*cells, *[""] * (len(names) - len(cells))]   # a row written before notes_ja existed
        if max_rows is not None and len(entries) >= max_rows:
            raise GlossaryCSVError(f"more than {max_rows} entries (the import limit)", row=row_no,
                                   line=start_line, code="too_many_rows", value=str(max_rows))
        if progress is not None and row_no % PROGRESS_EVERY == 0:
            progress(row_no)
        if len(cells) != len(names):
            raise GlossaryCSVError(f"expected {len(names)} fields, found {len(cells)} "
                                   "(a comma inside a value must be quoted)",
                                   row=row_no, line=start_line, code="field_count")
        rec = dict(zip(names, (unescape_cell(c) for c in cells)))
        values: dict = {}
        for name in ALL_COLUMNS:
            cell = rec.get(name, "")
            if name in _LIST_COLUMNS:
                values[name] = _split(cell)
            elif name in _VERBATIM:
                values[name] = cell
            else:
                values[name] = cell.strip()
        for name in REQUIRED:
            if not values[name]:
                raise GlossaryCSVError(f"'{name}' is empty", row=row_no, line=start_line, field=name,
                                       code="empty")
        if not values["status"]:
            values["status"] = "approved"
        if values["status"] not in STATUSES:
            raise GlossaryCSVError(f"status must be one of {', '.join(STATUSES)} (got '{values['status']}')",
                                   row=row_no, line=start_line, field="status", code="bad_status",
                                   value=values["status"])
        if values["id"] in first_row:
            raise GlossaryCSVError(f"duplicate id '{values['id']}' (first used in row {first_row[values['id']]})",
                                   row=row_no, line=start_line, field="id", code="duplicate_id",
                                   value=values["id"])
        first_row[values["id"]] = row_no
        entry = GlossaryEntry(**values)
        try:
            validate_entry(entry)
        except GlossaryError as exc:
            raise GlossaryCSVError(exc.reason, row=row_no, line=start_line, field=exc.field, code=exc.code,
                                   value=exc.value) from None
        entries.append(entry)
    return entries


def _row(entry: GlossaryEntry) -> list[str]:
    return [entry.id, entry.canonical, entry.reading or "", entry.en or "", entry.embed_text or "",
            "|".join(entry.aliases), "|".join(entry.distinct_from), entry.notes or "",
            entry.status or "approved", entry.notes_ja or ""]


def write_csv(entries: Iterable[GlossaryEntry], dest: "str | os.PathLike | IO | None" = None) -> str | None:
    """Write entries as CSV (CRLF line ends, minimal quoting). Returns the text when ``dest`` is None.

    A path gets UTF-8 with a BOM (so Excel detects the encoding); a binary file gets the same bytes;
    a text file gets the text without BOM (the caller chose its encoding).
    """
    buf = io.StringIO(newline="")
    writer = SafeWriter(buf, lineterminator="\r\n")
    writer.writerow(ALL_COLUMNS)
    for entry in entries:
        writer.writerow(_row(entry))
    text = buf.getvalue()
    if dest is None:
        return text
    if isinstance(dest, (str, os.PathLike)):
        with open(dest, "w", encoding="utf-8-sig", newline="") as fh:
            fh.write(text)
        return None
    if isinstance(dest, (io.RawIOBase, io.BufferedIOBase)) or "b" in getattr(dest, "mode", ""):
        dest.write(text.encode("utf-8-sig"))
    else:
        dest.write(text)
    return None


def starter_path() -> Path:
    """Path of the bundled starter glossary (``glossary/data/starter_glossary.csv``)."""
    from importlib.resources import files

    return Path(str(files("glossary").joinpath("data", "starter_glossary.csv")))
