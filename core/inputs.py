"""Bounds and clean-up for every piece of text a user controls, in one place.

Services call these before they store or compare user text, so the rules are the same whether the
text came from a page, the CLI or a CSV import:

* format characters (zero-width spaces/joiners, BOM, bidi overrides and isolates) are removed, so
  ``scratch\\u200by`` is a duplicate of ``scratchy`` and ``abc\\u202edef`` cannot display reversed;
* NUL and other control characters are refused (tab and newline only where free text allows them),
  and so are lone surrogates (bytes of a non-UTF-8 name that Python escaped);
* runs of whitespace become one space and the ends are trimmed (single-line fields);
* lengths are capped, and an empty value is refused where one is required.

Refusals are ``UserError``\\ s with the field's name in the reader's language (``input.field.*``).
"""
from __future__ import annotations

import os
import re
import unicodedata

from core.i18n import UserError
from glossary.normalize import strip_invisible

# Caps, in characters after clean-up. A label or glossary term is a short noun phrase; 100 leaves room
# for long compound terms (はんだブリッジ（隣接ピン間）) without letting a name fill a page.
MAX_NAME = 100
MAX_USERNAME = 64
MAX_PASSWORD = 256
MAX_SHORT_TEXT = 200     # readings, English glosses, one alias
MAX_TEXT = 2000          # notes, free-text comments
MAX_LIST_ITEMS = 50      # aliases / distinct_from entries of one glossary entry

_WS = re.compile(r"\s+")


def _has_control(text: str, allow_newlines: bool) -> bool:
    for ch in text:
        if unicodedata.category(ch) == "Cc" and not (allow_newlines and ch in "\n\t\r"):
            return True
    return False


def has_surrogates(text: str) -> bool:
    """True when ``text`` holds lone surrogates: what Python makes of bytes that are not UTF-8 (a
    Shift-JIS file name read on Linux); no database, tokenizer or file can store them as text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown_name(name: str) -> str:
    """A file name that may hold such bytes, as a readable string (the bad bytes as ``\\x83``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if has_surrogates(name) else name


def clean_text(value, *, field: str, max_len: int, required: bool = False,
               multiline: bool = False) -> str:
    """``value`` cleaned by the rules above, or a ``UserError`` naming ``field`` (rendered through
    ``input.field.<field>`` in the reader's language). ``None`` reads as empty."""
    text = "" if value is None else str(value)
    if _has_control(text, allow_newlines=multiline):
        raise UserError("input.control_char", field=field)
    if has_surrogates(text):
        raise UserError("input.not_text", field=field)
    text = strip_invisible(text)
    if multiline:
        text = "\n".join(_WS.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")).strip()
    else:
        text = _WS.sub(" ", text).strip()
    if required and not text:
        raise UserError("input.empty", field=field)
    if len(text) > max_len:
        raise UserError("input.too_long", field=field, max=max_len, length=len(text))
    return text


def clean_name(value, field: str = "name", *, required: bool = True) -> str:
    """A label or glossary term name."""
    return clean_text(value, field=field, max_len=MAX_NAME, required=required)


def clean_short(value, field: str, *, required: bool = False) -> str:
    return clean_text(value, field=field, max_len=MAX_SHORT_TEXT, required=required)


def clean_note(value, field: str = "notes") -> str:
    return clean_text(value, field=field, max_len=MAX_TEXT, multiline=True)


def truncate_for_log(value, limit: int = MAX_USERNAME) -> str:
    """Untrusted text shown in logs or the audit trail (e.g. a failed login's user name): invisible and
    control characters dropped, cut to ``limit`` characters with an ellipsis, so nobody can grow the
    database or forge log lines through it."""
    text = "" if value is None else str(value)[: limit * 4]
    text = "".join(ch for ch in strip_invisible(text) if unicodedata.category(ch) != "Cc")
    return text if len(text) <= limit else text[: limit - 1] + "…"
