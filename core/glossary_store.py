"""The live glossary lives in SQLite (``glossary_entries``); the ``glossary`` package stays pure text.

This module converts rows <-> ``GlossaryEntry``, seeds the starter glossary on first start, saves
edits with optimistic versioning and previews/applies CSV imports. The derived lookup index is
rebuilt only when the table changes (a revision counter in ``settings``).
"""
from __future__ import annotations

import dataclasses
import io
import threading
from dataclasses import asdict, dataclass, field

from core.auth import Actor, require
from core.i18n import STRINGS, UserError, t
from core.inputs import MAX_LIST_ITEMS, MAX_SHORT_TEXT, clean_name, clean_note, clean_short, clean_text
from core.store import Store, now_iso
from glossary import Glossary, GlossaryCSVError, GlossaryEntry, GlossaryError
from glossary.model import validate_entry

_FIELDS = ("canonical", "reading", "en", "embed_text", "aliases", "distinct_from", "notes", "notes_ja", "status")
_cache_lock = threading.Lock()
_cache: dict[str, tuple[int, Glossary]] = {}


def _entry_from_row(row: dict) -> GlossaryEntry:
    return GlossaryEntry(
        id=row["id"], canonical=row["canonical"], reading=row["reading"], en=row["en"],
        embed_text=row["embed_text"], aliases=[a for a in row["aliases"].split("|") if a],
        distinct_from=[d for d in row["distinct_from"].split("|") if d], notes=row["notes"],
        notes_ja=row.get("notes_ja") or "", status=row["status"],
    )


def _row_from_entry(entry: GlossaryEntry) -> dict:
    return {
        "id": entry.id, "canonical": entry.canonical, "reading": entry.reading or "", "en": entry.en or "",
        "embed_text": entry.embed_text or "", "aliases": "|".join(entry.aliases),
        "distinct_from": "|".join(entry.distinct_from), "notes": entry.notes or "",
        "notes_ja": entry.notes_ja or "", "status": entry.status or "approved",
    }


def _revision(store: Store) -> int:
    return int(store.get_setting("glossary_revision", 0))


def revision(store: Store) -> int:
    """A number that changes whenever the glossary does (pages key their caches on it)."""
    return _revision(store)


def _bump_revision(store: Store) -> None:
    store.execute(
        "INSERT INTO settings (key, value, updated_by, updated_at) VALUES ('glossary_revision', '1', 'system', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1", (now_iso(),))


def seed_if_empty(store: Store) -> int:
    """Load the starter glossary into an empty table; returns the number of entries added."""
    from glossary import starter_path

    with store.transaction():
        if store.query_one("SELECT 1 AS x FROM glossary_entries LIMIT 1"):
            _fill_starter_notes_ja(store)
            return 0
        starter = Glossary.from_csv(starter_path())
        for entry in starter.entries:
            row = _row_from_entry(entry) | {"version": 1, "updated_by": "system", "updated_at": now_iso()}
            store.insert("glossary_entries", row)
        _bump_revision(store)
        store.audit("system", "glossary.seed", "glossary", None, entries=len(starter.entries))
        return len(starter.entries)


_notes_filled: set[str] = set()


def _fill_starter_notes_ja(store: Store) -> None:
    """A data home seeded before notes had a Japanese column gets the starter's Japanese notes, for the
    entries whose English note is still the starter's (an edited entry is left as its editor left it).
    Once per data home and process."""
    from glossary import starter_path

    if str(store.path) in _notes_filled:
        return
    _notes_filled.add(str(store.path))
    if not store.query_one("SELECT 1 AS x FROM glossary_entries WHERE notes_ja = '' AND notes != '' LIMIT 1"):
        return
    starter = {e.id: e for e in Glossary.from_csv(starter_path()).entries}
    filled = 0
    for row in store.query("SELECT id, notes FROM glossary_entries WHERE notes_ja = '' AND notes != ''"):
        entry = starter.get(row["id"])
        if entry is not None and entry.notes_ja and entry.notes == row["notes"]:
            store.execute("UPDATE glossary_entries SET notes_ja = ? WHERE id = ?", (entry.notes_ja, row["id"]))
            filled += 1
    if filled:
        _bump_revision(store)
        store.audit("system", "glossary.notes_ja", "glossary", None, entries=filled)


def load_glossary(store: Store) -> Glossary:
    """The current glossary (cached per database until an edit bumps the revision)."""
    seed_if_empty(store)
    key = str(store.path)
    revision = _revision(store)
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == revision:
            return hit[1]
    rows = store.query("SELECT * FROM glossary_entries ORDER BY rowid")
    glossary = Glossary([_entry_from_row(r) for r in rows])
    with _cache_lock:
        _cache[key] = (revision, glossary)
    return glossary


def entry_rows(store: Store) -> list[dict]:
    seed_if_empty(store)
    return store.query("SELECT * FROM glossary_entries ORDER BY rowid")


def get_entry_row(store: Store, entry_id: str) -> dict:
    seed_if_empty(store)
    row = store.query_one("SELECT * FROM glossary_entries WHERE id = ?", (entry_id,))
    if row is None:
        raise UserError("err.not_found", what="glossary entry", id=entry_id)
    return row


def clean_entry(entry: GlossaryEntry) -> GlossaryEntry:
    """The entry with every user-controlled field bounded and cleaned by ``core.inputs`` (invisible and
    bidi characters removed, NUL refused, lengths capped), so duplicate checks and lookups compare
    what a reader sees (``scratch\\u200by`` is ``scratchy``)."""
    def items(values, field: str) -> list[str]:
        cleaned = [clean_short(v, field) for v in values or ()]
        cleaned = list(dict.fromkeys(v for v in cleaned if v))
        if len(cleaned) > MAX_LIST_ITEMS:
            raise UserError("input.too_many", field=field, max=MAX_LIST_ITEMS, count=len(cleaned))
        return cleaned

    return GlossaryEntry(
        id=clean_text(entry.id, field="id", max_len=MAX_SHORT_TEXT, required=True),
        canonical=clean_name(entry.canonical, "canonical"),
        reading=clean_short(entry.reading, "reading"), en=clean_short(entry.en, "en"),
        embed_text=clean_short(entry.embed_text, "embed_text"), aliases=items(entry.aliases, "alias"),
        distinct_from=items(entry.distinct_from, "distinct_from"), notes=clean_note(entry.notes),
        notes_ja=clean_note(entry.notes_ja, "notes_ja"), status=(entry.status or "approved").strip())


def _refuse_taken_forms(store: Store, entry: GlossaryEntry) -> None:
    """A term that already means something in the glossary cannot be claimed by a new entry of an
    expert: it would make both entries ambiguous, and the term would stop resolving for everyone."""
    glossary = load_glossary(store)
    for form in entry.forms:
        hit = glossary.lookup(form)
        owners = [hit.entry_id] if hit.auto else list(hit.ambiguous)
        owners = [o for o in owners if o and o != entry.id]
        if owners:
            raise UserError("glossary.form_taken", form=form, canonical=glossary.get(owners[0]).canonical)


def save_entry(store: Store, actor: Actor, entry: GlossaryEntry, expected_version: int | None = None,
               *, create: bool = False) -> dict:
    """Create or update one entry. ``expected_version`` refuses a save over someone else's edit.

    Only reviewers and admins (``glossary.edit``) publish or change entries. Anyone who may propose a
    label may add a new entry, but it is stored as a *draft* whatever status it asks for, and its
    forms must not already mean another entry (issue 13: an expert's "approved" entry with the
    aliases 傷/キズ/scratch took those terms away from 傷)."""
    require(actor, "label.propose" if create else "glossary.edit")
    entry = clean_entry(entry)
    publisher = actor.can("glossary.edit")
    if create and not publisher:
        entry = dataclasses.replace(entry, status="draft")
    try:
        validate_entry(entry)
    except GlossaryError as err:
        raise UserError("glossary.invalid_entry", field=err.field or "", reason=err.reason) from err
    row = _row_from_entry(entry)
    with store.transaction():
        current = store.query_one("SELECT * FROM glossary_entries WHERE id = ?", (entry.id,))
        if create:
            if current is not None:
                raise UserError("glossary.id_exists", id=entry.id)
            if not publisher:
                _refuse_taken_forms(store, entry)
            store.insert("glossary_entries", row | {"version": 1, "updated_by": actor.username,
                                                       "updated_at": now_iso()})
            store.audit(actor.username, "glossary.create", "glossary", entry.id, **row)
        else:
            if current is None:
                raise UserError("err.not_found", what="glossary entry", id=entry.id)
            if expected_version is not None and current["version"] != expected_version:
                raise UserError("err.stale_version", what=entry.id, yours=expected_version,
                                current=current["version"])
            changes = {k: [current[k], row[k]] for k in _FIELDS if current[k] != row[k]}
            store.update("glossary_entries", entry.id, row | {
                "version": current["version"] + 1, "updated_by": actor.username, "updated_at": now_iso()})
            store.audit(actor.username, "glossary.update", "glossary", entry.id, changes=changes)
        _bump_revision(store)
    return get_entry_row(store, entry.id)


def fold_into(store: Store, actor: Actor, source_id: str, target_id: str, *, reason: str = "merge") -> list[str]:
    """Make every form of ``source`` (canonical, aliases, English gloss) an alias of ``target`` and
    deprecate ``source``, so typing those forms resolves to ``target`` from now on (used when a
    reviewer merges two labels). Returns the forms added. Audited in the caller's transaction."""
    require(actor, "glossary.edit")
    if source_id == target_id:
        return []
    with store.transaction():
        source = _entry_from_row(get_entry_row(store, source_id))
        target_row = get_entry_row(store, target_id)
        target = _entry_from_row(target_row)
        have = set(target.forms)
        added = [f for f in dict.fromkeys(source.forms) if f not in have]
        if added:
            save_entry(store, actor, dataclasses.replace(target, aliases=[*target.aliases, *added]),
                       expected_version=target_row["version"])
        if source.status != "deprecated":
            note = (source.notes + "\n" if source.notes else "") + f"{reason}: → {target_id}"
            save_entry(store, actor, dataclasses.replace(source, status="deprecated", notes=note),
                       expected_version=get_entry_row(store, source_id)["version"])
        store.audit(actor.username, "glossary.fold", "glossary", target_id, source=source_id, forms=added,
                    reason=reason)
    return added


@dataclass
class ImportPreview:
    added: list[GlossaryEntry] = field(default_factory=list)
    changed: list[tuple[dict, GlossaryEntry]] = field(default_factory=list)   # (current row, new entry)
    unchanged: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed)


def preview_import(store: Store, data: bytes, progress=None) -> ImportPreview:
    """What importing this CSV would add or change (nothing is deleted by an import). The file is parsed
    once, row by row, up to the ``glossary_import_max_rows`` setting (a longer file is refused as soon as
    the row past the limit is read); no look-up index is built for it. ``progress(rows read)`` is called
    as it goes."""
    from core import settings
    from glossary.csvio import read_csv

    try:
        incoming = read_csv(io.BytesIO(data), max_rows=int(settings.get(store, "glossary_import_max_rows")),
                            progress=progress)
    except GlossaryCSVError as err:
        raise _csv_user_error(err) from err
    current = {r["id"]: r for r in entry_rows(store)}
    preview = ImportPreview()
    for entry in incoming:
        row = current.get(entry.id)
        if row is None:
            preview.added.append(entry)
        elif any(row[k] != v for k, v in _row_from_entry(entry).items() if k != "id"):
            preview.changed.append((row, entry))
        else:
            preview.unchanged += 1
    return preview


def _csv_user_error(err: GlossaryCSVError) -> UserError:
    code_key = f"glossary.code.{err.code}"
    params = {"field": err.field or "", "value": getattr(err, "value", "") or ""}
    key = "glossary.csv_header_error" if not err.row else "glossary.csv_error"
    return _LocalisedCSVError(key, code_key if code_key in STRINGS else None, err, params)


class _LocalisedCSVError(UserError):
    def __init__(self, key: str, code_key: str | None, err: GlossaryCSVError, params: dict):
        self._code_key, self._err, self._code_params = code_key, err, params
        super().__init__(key, row=err.row, line=err.line or err.row, reason=err.reason)

    def message(self, lang: str = "ja") -> str:
        reason = t(self._code_key, lang, **self._code_params) if self._code_key else self._err.reason
        return t(self.key, lang, **(self.params | {"reason": reason}))


def apply_import(store: Store, actor: Actor, data: bytes) -> ImportPreview:
    require(actor, "glossary.edit")
    preview = preview_import(store, data)
    with store.transaction():
        for entry in preview.added:
            save_entry(store, actor, entry, create=True)
        for row, entry in preview.changed:
            save_entry(store, actor, entry, expected_version=row["version"])
        store.audit(actor.username, "glossary.import", "glossary", None, added=len(preview.added),
                    changed=len(preview.changed))
    return preview


def export_csv(store: Store) -> bytes:
    buf = io.StringIO()
    load_glossary(store).to_csv(buf)
    return buf.getvalue().encode("utf-8-sig")  # BOM so Excel opens it as UTF-8


def entry_dict(entry: GlossaryEntry) -> dict:
    return asdict(entry)
