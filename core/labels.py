"""Label lifecycle: ``proposed → approved → trained → retired`` (plus ``rejected`` and ``merged``).

A label's id never changes; its display name is what the expert typed (kept raw), and it links to the
glossary entry whose canonical term is what gets embedded. Two active labels may not share a
normalised name or a glossary entry. Every change is audited, and every mutation can carry the
version the user saw, so a save over someone else's edit is refused instead of silently lost.
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Iterable

from core.auth import Actor, require
from core.glossary_store import fold_into, get_entry_row, load_glossary, save_entry
from core.i18n import UserError
from core.inputs import clean_name, clean_short
from core.store import Store, now_iso
from glossary import GlossaryEntry, basic_key, normalize_chars

ACTIVE = ("proposed", "approved", "trained")
STATUSES = ("proposed", "approved", "trained", "retired", "rejected", "merged")

# Which status each review action moves from / to.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": (("proposed",), "approved"),
    "reject": (("proposed",), "rejected"),
    "retire": (("approved", "trained"), "retired"),
    "train": (("approved",), "trained"),
}

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")

_SELECT = """
SELECT l.*, COALESCE(g.canonical, l.name) AS canonical,
       COALESCE(NULLIF(g.embed_text, ''), g.canonical, l.name) AS embed_text,
       COALESCE(g.reading, '') AS reading, COALESCE(g.en, '') AS en, g.status AS entry_status
FROM labels l LEFT JOIN glossary_entries g ON g.id = l.entry_id
"""


def detect_lang(text: str) -> str:
    return "ja" if _JAPANESE.search(text) else "en"


def list_labels(store: Store, statuses: Iterable[str] | None = None) -> list[dict]:
    if statuses is None:
        return store.query(_SELECT + " ORDER BY l.id")
    statuses = list(statuses)
    marks = ",".join("?" * len(statuses))
    return store.query(_SELECT + f" WHERE l.status IN ({marks}) ORDER BY l.id", tuple(statuses))


def get_label(store: Store, label_id: int) -> dict:
    row = store.query_one(_SELECT + " WHERE l.id = ?", (int(label_id),))
    if row is None:
        raise UserError("err.not_found", what="label", id=label_id)
    return row


def aliases(store: Store, label_id: int) -> list[dict]:
    return store.query("SELECT * FROM label_aliases WHERE label_id = ? ORDER BY id", (int(label_id),))


def tasks_with_label(store: Store, label_id: int, statuses: Iterable[str] = ("queued", "running")) -> list[dict]:
    """Training tasks whose label set contains this label (``tasks.label_ids`` is a JSON list)."""
    statuses = list(statuses)
    marks = ",".join("?" * len(statuses))
    return store.query(
        f"SELECT t.run_id, t.idx, t.status FROM tasks t, json_each(t.label_ids) j "  # nosec B608  # ? placeholders only
        f"WHERE j.value = ? AND t.status IN ({marks}) ORDER BY t.run_id, t.idx", (int(label_id), *statuses))


def refuse_while_training(store: Store, label: dict) -> None:
    """A label queued or being learned must keep its name, status and images until the task ends,
    or the worker would learn (and report on) a class that no longer exists as requested."""
    busy = tasks_with_label(store, label["id"])
    if busy:
        raise UserError("labels.in_training", name=label["name"], run=busy[0]["run_id"], task=busy[0]["idx"] + 1,
                        status=busy[0]["status"])


def preview(store: Store, name: str):
    """The glossary lookup a proposer sees live while typing (tier, canonical, suggestions)."""
    return load_glossary(store).lookup(name)


def _find_duplicate(store: Store, name_key: str, entry_id: str | None, exclude_id: int | None = None):
    marks = ",".join("?" * len(ACTIVE))
    rows = store.query(
        _SELECT + f" WHERE l.status IN ({marks}) AND (l.name_key = ? OR (? IS NOT NULL AND l.entry_id = ?))"
        " AND l.id IS NOT ? ORDER BY l.id",
        (*ACTIVE, name_key, entry_id, entry_id, exclude_id))
    return rows[0] if rows else None


def alias_owner(store: Store, name: str, exclude_id: int | None = None) -> dict | None:
    """The active label that has ``name`` as an alias (a reviewer's 亀甲割れ on ヒビ割れ), or None."""
    key = basic_key(normalize_chars(name or ""))
    if not key:
        return None
    marks = ",".join("?" * len(ACTIVE))
    for row in store.query(
            "SELECT a.text, a.label_id FROM label_aliases a JOIN labels l ON l.id = a.label_id "  # nosec B608  # ? placeholders only
            f"WHERE l.status IN ({marks}) AND l.id IS NOT ? ORDER BY a.id", (*ACTIVE, exclude_id)):
        if basic_key(row["text"]) == key:
            return get_label(store, row["label_id"])
    return None


def _refuse_duplicate(store: Store, name: str, entry_id: str | None, exclude_id: int | None = None) -> None:
    dup = _find_duplicate(store, basic_key(name), entry_id, exclude_id)
    if dup is None:
        owner = alias_owner(store, name, exclude_id)
        if owner is not None:   # an alias a reviewer attached names that label: no second class for it
            raise UserError("labels.duplicate_alias", name=name, existing=owner["name"], id=owner["id"],
                            status=owner["status"])
        return
    if dup["name_key"] == basic_key(name):
        raise UserError("labels.duplicate", name=name, existing=dup["name"], id=dup["id"], status=dup["status"])
    raise UserError("labels.duplicate_entry", name=name, canonical=dup["canonical"], existing=dup["name"],
                    id=dup["id"], status=dup["status"])


def propose(store: Store, actor: Actor, name: str, *, lang: str | None = None, entry_id: str | None = None,
            create_entry: bool = False, reading: str = "", en: str = "") -> dict:
    """Propose a label. The glossary decides its term when the match is automatic; otherwise the
    proposer confirms a suggestion (``entry_id``) or asks for a new draft term (``create_entry``)."""
    require(actor, "label.propose")
    name = _clean_label_name(name)
    reading, en = clean_short(reading, "reading"), clean_short(en, "en")
    glossary = load_glossary(store)
    with store.transaction():
        if entry_id is not None:
            _usable_entry(glossary, entry_id)
            how = "confirmed"
        else:
            result = glossary.lookup(name)
            if result.auto:
                entry_id, how = result.entry_id, result.tier
            elif create_entry:
                entry_id, how = _create_draft_entry(store, actor, name, reading, en), "new-entry"
            else:
                raise UserError("labels.needs_entry", name=name, tier=result.tier)
        _refuse_duplicate(store, name, entry_id)
        label_id = store.insert("labels", {
            "name": name, "name_key": basic_key(name), "lang": lang or detect_lang(name),
            "entry_id": entry_id, "status": "proposed", "version": 1, "created_by": actor.username,
            "created_at": now_iso(), "updated_by": actor.username, "updated_at": now_iso(),
        })
        store.audit(actor.username, "label.propose", "label", label_id, name=name, entry_id=entry_id, match=how)
    return get_label(store, label_id)


def _clean_label_name(name) -> str:
    """Bounded and cleaned (core.inputs) before any duplicate check; refused when nothing is left."""
    name = clean_name(name)
    if not normalize_chars(name):
        raise UserError("labels.empty_name")
    return name


def _usable_entry(glossary, entry_id: str):
    entry = glossary.get(entry_id)
    if entry is None:
        raise UserError("labels.unknown_entry", id=entry_id)
    if entry.status == "deprecated":
        raise UserError("labels.deprecated_entry", canonical=entry.canonical, id=entry_id)
    return entry


def _create_draft_entry(store: Store, actor: Actor, name: str, reading: str, en: str) -> str:
    entry_id = f"user.{uuid.uuid4().hex[:10]}"
    save_entry(store, actor, GlossaryEntry(
        id=entry_id, canonical=normalize_chars(name), reading=reading, en=en, aliases=[],
        distinct_from=[], status="draft"), create=True)
    return entry_id


def _check_version(label: dict, expected_version: int | None) -> None:
    if expected_version is not None and label["version"] != expected_version:
        raise UserError("err.stale_version", what=label["name"], yours=expected_version, current=label["version"])


def _update(store: Store, actor: Actor, label: dict, **fields) -> None:
    fields |= {"version": label["version"] + 1, "updated_by": actor.username, "updated_at": now_iso()}
    sets = ", ".join(f"{k} = ?" for k in fields)
    cur = store.execute(f"UPDATE labels SET {sets} WHERE id = ? AND version = ?",  # nosec B608  # columns: internal keywords
                        (*fields.values(), label["id"], label["version"]))
    if cur.rowcount != 1:  # someone else wrote between our read and our write
        fresh = get_label(store, label["id"])
        raise UserError("err.stale_version", what=label["name"], yours=label["version"], current=fresh["version"])


def _transition(store: Store, actor: Actor, label_id: int, action: str, expected_version: int | None,
                permission: str = "label.review") -> dict:
    require(actor, permission)
    allowed_from, to = TRANSITIONS[action]
    with store.transaction():
        label = get_label(store, label_id)
        _check_version(label, expected_version)
        if label["status"] not in allowed_from:
            raise UserError("labels.bad_transition", name=label["name"], status=label["status"], action=action)
        if action in ("retire", "reject"):
            refuse_while_training(store, label)
        _update(store, actor, label, status=to)
        store.audit(actor.username, f"label.{action}", "label", label_id, before=label["status"], after=to)
    return get_label(store, label_id)


def approve(store: Store, actor: Actor, label_id: int, expected_version: int | None = None) -> dict:
    return _transition(store, actor, label_id, "approve", expected_version)


def reject(store: Store, actor: Actor, label_id: int, expected_version: int | None = None) -> dict:
    return _transition(store, actor, label_id, "reject", expected_version)


def retire(store: Store, actor: Actor, label_id: int, expected_version: int | None = None) -> dict:
    return _transition(store, actor, label_id, "retire", expected_version)


def mark_trained(store: Store, actor: Actor, label_ids: Iterable[int]) -> None:
    """Called by the worker (as SYSTEM) when a training task that contains these labels completes; no
    person may mark a label trained, whatever their role (a label is trained when a model learned it)."""
    require(actor, "label.mark_trained")
    with store.transaction():
        for label_id in label_ids:
            if get_label(store, label_id)["status"] == "approved":
                _transition(store, actor, label_id, "train", None, permission="label.mark_trained")


def rename(store: Store, actor: Actor, label_id: int, new_name: str, expected_version: int | None = None,
           *, keep_entry: bool = False) -> dict:
    """Change the display name; the id (and so images, tasks and checkpoints) stays. The old name is
    kept as an alias so people who type it still find the label.

    The name decides the meaning, as in a proposal, so a rename never quietly keeps a term the new
    name does not support: a name the glossary resolves automatically links the label to that entry
    (audited as ``entry_before``/``entry_after``); a name with no automatic match keeps the current
    entry only if the lookup still suggests it (打痕 → 打痕（大）) or the reviewer says so
    (``keep_entry``); otherwise the rename is refused and the reviewer re-links (:func:`relink`)."""
    require(actor, "label.review")
    new_name = _clean_label_name(new_name)
    glossary = load_glossary(store)
    with store.transaction():
        label = get_label(store, label_id)
        _check_version(label, expected_version)
        if label["status"] not in ACTIVE:
            raise UserError("labels.bad_transition", name=label["name"], status=label["status"], action="rename")
        entry_id = label["entry_id"]
        hit = glossary.lookup(new_name)
        if hit.auto and hit.entry_id != entry_id:
            entry_id = hit.entry_id
        elif not hit.auto and entry_id is not None and not keep_entry \
                and entry_id not in {s.entry_id for s in hit.suggestions} | set(hit.ambiguous):
            current = glossary.get(entry_id)
            raise UserError("labels.rename_needs_entry", name=new_name,
                            canonical=current.canonical if current else entry_id)
        if entry_id != label["entry_id"]:
            refuse_while_training(store, label)
        _refuse_duplicate(store, new_name, entry_id if entry_id != label["entry_id"] else None, exclude_id=label["id"])
        _update(store, actor, label, name=new_name, name_key=basic_key(new_name), lang=detect_lang(new_name),
                entry_id=entry_id)
        _add_alias_row(store, actor, label["id"], label["name"])
        details = {"before": label["name"], "after": new_name}
        if entry_id != label["entry_id"]:
            details |= {"entry_before": label["entry_id"], "entry_after": entry_id}
        store.audit(actor.username, "label.rename", "label", label_id, **details)
    return get_label(store, label_id)


def relink(store: Store, actor: Actor, label_id: int, entry_id: str | None = None, *,
           create_entry: bool = False, reading: str = "", en: str = "",
           expected_version: int | None = None) -> dict:
    """Point a label at another glossary entry (``entry_id``) or at a new draft entry made from its
    name (``create_entry``): the repair for a wrong automatic or confirmed match (飛行機 → 浮き).

    The label's embed text is its entry's text, so the next embedding call sees the new text (the
    cache is keyed by text; the neighbour index is keyed by the label versions this bumps). Refused
    while the label is in a queued or running training task, over a newer edit, or when another
    active label already has that entry."""
    require(actor, "label.review")
    reading, en = clean_short(reading, "reading"), clean_short(en, "en")
    if (entry_id is None) == (not create_entry):
        raise UserError("labels.relink_choice")
    glossary = load_glossary(store)
    with store.transaction():
        label = get_label(store, label_id)
        _check_version(label, expected_version)
        if label["status"] not in ACTIVE:
            raise UserError("labels.bad_transition", name=label["name"], status=label["status"], action="relink")
        if entry_id is not None:
            _usable_entry(glossary, entry_id)
            if entry_id == label["entry_id"]:
                return label
        refuse_while_training(store, label)
        if create_entry:
            entry_id = _create_draft_entry(store, actor, label["name"], reading, en)
        _refuse_duplicate(store, label["name"], entry_id, exclude_id=label["id"])
        _update(store, actor, label, entry_id=entry_id)
        store.audit(actor.username, "label.relink", "label", label_id, entry_before=label["entry_id"],
                    entry_after=entry_id, embed_before=label["embed_text"],
                    embed_after=get_label(store, label_id)["embed_text"])
    return get_label(store, label_id)


def add_alias(store: Store, actor: Actor, label_id: int, text: str) -> dict:
    require(actor, "label.alias")
    text = clean_name(text, "alias")
    if not normalize_chars(text):
        raise UserError("labels.empty_name")
    with store.transaction():
        label = get_label(store, label_id)
        existing = {basic_key(a["text"]) for a in aliases(store, label_id)} | {label["name_key"]}
        if basic_key(text) not in existing:
            owner = alias_owner(store, text, exclude_id=label_id)
            if owner is not None:
                raise UserError("labels.duplicate_alias", name=text, existing=owner["name"], id=owner["id"],
                                status=owner["status"])
            _add_alias_row(store, actor, label_id, text)
            added = _alias_into_glossary(store, actor, label, text)
            store.audit(actor.username, "label.alias", "label", label_id, alias=text, glossary=added)
    return get_label(store, label_id)


def _alias_into_glossary(store: Store, actor: Actor, label: dict, text: str) -> bool:
    """A reviewer's alias that means nothing in the glossary yet becomes a form of the label's entry, so
    typing it later resolves to this label's term (and a proposal of it is refused as a duplicate).
    An expert's alias stays on the label only: experts do not edit the glossary."""
    if not label["entry_id"] or not actor.can("glossary.edit"):
        return False
    glossary = load_glossary(store)
    hit = glossary.lookup(text)
    entry = glossary.get(label["entry_id"])
    if entry is None or hit.auto or hit.ambiguous:
        return False
    save_entry(store, actor, dataclasses.replace(entry, aliases=[*entry.aliases, text]),
               expected_version=get_entry_row(store, entry.id)["version"])
    return True


def _add_alias_row(store: Store, actor: Actor, label_id: int, text: str) -> None:
    store.insert("label_aliases", {"label_id": label_id, "text": text, "created_by": actor.username,
                                      "created_at": now_iso()})


def merge(store: Store, actor: Actor, source_id: int, target_id: int,
          expected_version: int | None = None) -> dict:
    """Fold ``source`` into ``target``: aliases and images move to the survivor, the source's name
    becomes an alias of it, and the source is kept (status ``merged``) so history still resolves.

    The glossary follows: the source's entry (canonical, aliases, English gloss) becomes aliases of
    the survivor's entry and is deprecated, so typing those terms later resolves to the survivor
    (after merging くるま into 自動車, くるま means 自動車)."""
    require(actor, "label.review")
    if int(source_id) == int(target_id):
        raise UserError("labels.merge_self")
    with store.transaction():
        source, target = get_label(store, source_id), get_label(store, target_id)
        _check_version(source, expected_version)
        if source["status"] not in ("proposed", "approved"):
            raise UserError("labels.merge_state", name=source["name"], status=source["status"])
        if target["status"] not in ACTIVE:
            raise UserError("labels.merge_target", name=target["name"], status=target["status"])
        refuse_while_training(store, source)
        refuse_while_training(store, target)
        source_names = [source["name"], *(a["text"] for a in aliases(store, source["id"]))]
        moved_aliases = store.execute("UPDATE label_aliases SET label_id = ? WHERE label_id = ?",
                                      (target["id"], source["id"])).rowcount
        moved_images = store.execute("UPDATE images SET label_id = ? WHERE label_id = ?",
                                     (target["id"], source["id"])).rowcount
        _add_alias_row(store, actor, target["id"], source["name"])
        _update(store, actor, source, status="merged", merged_into=target["id"])
        folded = _fold_glossary(store, actor, source, target, source_names)
        store.audit(actor.username, "label.merge", "label", source["id"], into=target["id"],
                    aliases=moved_aliases, images=moved_images, glossary_forms=folded)
        store.audit(actor.username, "label.merged_from", "label", target["id"], source=source["id"])
    return get_label(store, target["id"])


def _fold_glossary(store: Store, actor: Actor, source: dict, target: dict, names: list[str]) -> list[str]:
    """The source label's terms become the survivor's (see :func:`merge`): its entry is folded into
    the survivor's entry, and the names typed for it (its name and aliases) that mean nothing in the
    glossary yet become aliases too. A name that already means a third entry is left alone (it would
    make both ambiguous)."""
    if not target["entry_id"]:
        return []
    added: list[str] = []
    if source["entry_id"] and source["entry_id"] != target["entry_id"]:
        added = fold_into(store, actor, source["entry_id"], target["entry_id"], reason=f"label.merge #{source['id']}")
    glossary = load_glossary(store)
    loose = []
    for name in dict.fromkeys(names):
        hit = glossary.lookup(name)
        if not hit.auto and not hit.ambiguous:
            loose.append(name)
    if loose:
        row = get_entry_row(store, target["entry_id"])
        entry = glossary.get(target["entry_id"])
        save_entry(store, actor, dataclasses.replace(entry, aliases=[*entry.aliases, *loose]),
                   expected_version=row["version"])
        added += loose
    return added
