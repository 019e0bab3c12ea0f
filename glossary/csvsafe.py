"""The one CSV-safe cell rule for every export (glossary, dataset images.csv, audit log, metrics).

Spreadsheet apps run a cell that starts with ``= + - @`` (or a tab / carriage return) as a formula —
"CSV injection": a label named ``=HYPERLINK("http://evil", "click")`` would become a live link in the
reviewer's Excel. Such cells are written with a leading apostrophe, which Excel and LibreOffice show
as text and do not display. To keep exports lossless, a value that itself starts with an apostrophe
gets one too, and readers of our own CSV files strip exactly one leading apostrophe
(:func:`unescape_cell`), so ``read(write(x)) == x`` for every string.

Pure text (the ``glossary`` package never imports torch, Streamlit or ``core``), so both the glossary
CSV I/O and the core exports use it.
"""
from __future__ import annotations

import csv
from typing import Any, Iterable

__all__ = ["FORMULA_START", "escape_cell", "unescape_cell", "SafeWriter"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START + ("'",)) else text


def unescape_cell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


class SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`escape_cell`."""

    def __init__(self, fh, **kwargs):
        self._writer = csv.writer(fh, **kwargs)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([escape_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
