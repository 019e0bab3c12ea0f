"""Data classes and errors of the glossary package (spec §3.2). No behaviour beyond validation."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "STATUSES", "TIERS", "AUTO_TIERS", "GlossaryEntry", "Suggestion", "LookupResult", "Collision",
    "GlossaryError", "GlossaryCSVError", "validate_entry",
]

STATUSES = ("draft", "approved", "deprecated")
# Lookup tiers in the order they are tried (spec §3.1 step 9). The first five may auto-apply.
# "typo" suggestions are typo-like near misses (glossary/typo.py); "none" means nothing matched.
# "variant": the same compound written with a variant kanji (ピット傷 / ピット疵), a suggestion.
TIERS = ("exact", "basic", "kana", "lemma", "reading", "variant", "reading~", "contains", "typo", "none")
AUTO_TIERS = TIERS[:5]


@dataclass
class GlossaryEntry:
    """One curated concept. ``id`` is a stable slug (``defect.rust``) that annotations point at.

    ``distinct_from`` lists entry ids that look similar but are different (a lint allow-list).
    An item that is not the id of an entry in the same glossary is read as a *form* that must never
    resolve to this entry (e.g. ``村`` on the ムラ entry).
    """

    id: str
    canonical: str
    reading: str = ""
    en: str = ""
    embed_text: str = ""
    aliases: list[str] = field(default_factory=list)
    distinct_from: list[str] = field(default_factory=list)
    notes: str = ""          # English
    status: str = "approved"
    notes_ja: str = ""       # the same note in Japanese (issue 21: notes existed in English only)

    @property
    def text_to_embed(self) -> str:
        """What the text tower sees: ``embed_text`` if set, else the canonical term (spec §3.1 step 10)."""
        return self.embed_text or self.canonical

    @property
    def forms(self) -> list[str]:
        """Canonical, aliases and English gloss: every string that resolves to this entry."""
        out = [self.canonical, *self.aliases]
        if self.en:
            out.append(self.en)
        return [f for f in out if f]


@dataclass(frozen=True)
class Suggestion:
    entry_id: str
    canonical: str
    tier: str          # the tier that produced it: "reading~", "contains", "typo" (or an auto tier when ambiguous)
    score: float       # 0..1, higher is closer
    reason: str        # short English explanation, e.g. "same reading カケ"


@dataclass
class LookupResult:
    query: str                       # raw text, as typed
    normalized: str                  # normalize_chars(query)
    tier: str                        # one of TIERS
    auto: bool = False               # True: may be applied without asking
    entry_id: str | None = None      # set only when auto
    canonical: str | None = None     # set only when auto
    suggestions: list[Suggestion] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)   # ids when a tier key hit 2+ entries
    matched_form: str | None = None  # the glossary form whose key matched (auto only)


@dataclass(frozen=True)
class Collision:
    """A key of ``tier`` shared by two or more entries (spec §3.1 step 8)."""

    tier: str
    key: str
    entry_ids: list[str]
    forms: dict[str, list[str]]      # entry id -> the forms of that entry that produce ``key``


class GlossaryError(ValueError):
    """Invalid glossary content. ``field`` names the offending field, ``code`` is a stable
    machine-readable reason (for translation by the app), ``reason`` is English text."""

    def __init__(self, reason: str, *, field: str | None = None, code: str = "invalid",
                 entry_id: str | None = None, value: str | None = None):
        self.reason = reason
        self.field = field
        self.code = code
        self.entry_id = entry_id
        self.value = value
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"entry '{self.entry_id}', " if self.entry_id else ""
        col = f"field '{self.field}': " if self.field else ""
        return f"{where}{col}{self.reason}"


class GlossaryCSVError(GlossaryError):
    """Malformed CSV. ``row`` is the 1-based data row (header excluded; 0 for the header itself),
    ``line`` the physical line where that row starts."""

    def __init__(self, reason: str, *, row: int, line: int | None = None, field: str | None = None,
                 code: str = "invalid", value: str | None = None):
        self.row = row
        self.line = line
        super().__init__(reason, field=field, code=code, value=value)

    def _text(self) -> str:
        where = "header" if self.row == 0 else f"row {self.row}"
        if self.line is not None:
            where += f" (line {self.line})"
        col = f", column '{self.field}'" if self.field else ""
        return f"{where}{col}: {self.reason}"


def validate_entry(entry: GlossaryEntry) -> None:
    """Raise ``GlossaryError`` when an (already cleaned) entry cannot be stored or indexed."""
    eid = entry.id or None
    if not entry.id:
        raise GlossaryError("id is empty", field="id", code="empty")
    if any(c in entry.id for c in "|\r\n\t "):
        raise GlossaryError("id must not contain '|' or whitespace", field="id", code="bad_id",
                            entry_id=eid, value=entry.id)
    if not entry.canonical:
        raise GlossaryError("canonical is empty", field="canonical", code="empty", entry_id=eid)
    if entry.status not in STATUSES:
        raise GlossaryError(f"status must be one of {', '.join(STATUSES)} (got '{entry.status}')",
                            field="status", code="bad_status", entry_id=eid, value=entry.status)
    for name in ("canonical", "reading", "en"):
        value = getattr(entry, name)
        if "\n" in value or "\r" in value:
            raise GlossaryError("line breaks are not allowed", field=name, code="bad_char",
                                entry_id=eid, value=value)
    for name in ("aliases", "distinct_from"):
        for item in getattr(entry, name):
            if "|" in item or "\n" in item or "\r" in item:
                raise GlossaryError(f"an item contains '|' or a line break: '{item}' ('|' separates items)",
                                    field=name, code="bad_char", entry_id=eid, value=item)
