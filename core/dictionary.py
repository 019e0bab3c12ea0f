"""JMdict as a bridge between words the glossary cannot relate by spelling (issue 12 items 3 and 6).

The glossary folds *spelling* variants (キズ/疵/傷); it cannot know that くるま, 車 and 自動車 are one
thing, or that English "car" and "cat" are 自動車 and 猫. JMdict (the EDRDG's Japanese–English
dictionary, read through ``jamdict`` and the database of ``jamdict-data``, both from PyPI) can:

* :func:`term_hint` suggests the reading (katakana) and an English gloss when a Japanese term is
  created (自動車 → ジドウシャ, "car");
* :func:`label_links` lists the existing labels a label may duplicate by meaning: a kana word
  that is a reading of another label (くるま → 車), or two labels whose dictionary meanings overlap
  (くるま ↔ 自動車: "car, automobile"; car ↔ 自動車; cat ↔ 猫). These are candidates for a
  reviewer, shown next to the embedding neighbours, never applied automatically.

What counts as a meaning: the glosses of the *first* sense of the dictionary entries written that
way, preferring entries marked common (so 車 is "car", not its second sense "wheel"; 汚れ is よごれ
"dirt", not the rare けがれ). Pairs whose glossary entries declare each other ``distinct_from`` are
never linked (傷 and 擦り傷 both gloss "scratch" but are kept apart on purpose). Measured precision:
docs/glossary.md (``scripts/measure_dictionary.py``).

Licence: JMdict is © the Electronic Dictionary Research and Development Group, CC BY-SA 3.0 (see
:data:`ATTRIBUTION`); jamdict and jamdict-data are MIT.

Speed: the dictionary handle is opened once per process; every spelling is looked up once (cached),
the labels of a review in one batch of 4 queries (100 labels: ~20 ms cold, ~2 ms warm).
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from glossary.normalize import english_key, hira2kata, is_kana, normalize_chars

log = logging.getLogger(__name__)

ATTRIBUTION = ("This application uses the JMdict dictionary files. These files are the property of the "
               "Electronic Dictionary Research and Development Group, and are used in conformance with "
               "the Group's licence (CC BY-SA 3.0): https://www.edrdg.org/edrdg/licence.html")
SOURCE_URL = "https://www.edrdg.org/wiki/index.php/JMdict-EDICT_Dictionary_Project"

_PRIORITY = ("news1", "ichi1", "spec1", "spec2", "gai1", "news2", "ichi2", "gai2")
_WILDCARDS = re.compile(r"[%_@?]")       # jamdict reads these as LIKE patterns
_PAREN = re.compile(r"\([^()]*\)")
_ARTICLE = re.compile(r"^(?:to|a|an|the)\s+")
MAX_GLOSS_WORDS = 3                      # longer glosses are explanations, never a label's name


@dataclass(frozen=True)
class DictWord:
    """One JMdict entry, reduced to what the bridge uses."""

    idseq: int
    kanji: tuple[str, ...]
    kana: tuple[str, ...]
    senses: tuple[tuple[str, ...], ...]     # English glosses per sense, in dictionary order
    common: bool


@dataclass(frozen=True)
class TermHint:
    reading: str                 # katakana, as the glossary stores readings
    en: str                      # the first gloss of the first sense
    glosses: tuple[str, ...]     # the first sense's glosses
    idseq: int

    @property
    def source(self) -> str:
        return f"JMdict #{self.idseq}"


@dataclass(frozen=True)
class Profile:
    """What a label means by the dictionary: meaning keys and the kanji a kana name may be written as."""

    surfaces: frozenset[str]     # normalised name/canonical
    meanings: frozenset[str]     # english_key of glosses (JMdict) or of English names / glosses
    dictionary: bool             # meanings came (also) from JMdict, not only from English text
    written_as: frozenset[str]   # kanji spellings of a kana name (くるま → 車)
    kana_only: bool
    readings: frozenset[str] = frozenset()   # katakana readings of the name (JMdict, else the analyser)
    kanji: frozenset[str] = frozenset()      # the kanji the name is written with


@dataclass(frozen=True)
class DictLink:
    label_id: int
    name: str
    canonical: str
    status: str
    kind: str                    # "reading" (くるま → 車), "spelling" (マダラ模様 ~ 斑模様) or "meaning" (くるま ↔ 自動車)
    evidence: tuple[str, ...]    # the kanji spelling, or the shared English meanings

    def describe(self, lang: str) -> str:
        from core.i18n import t

        if self.kind == "reading":
            return t("dict.link_reading", lang, name=self.name, written=self.evidence[0])
        if self.kind == "distinct":
            return t("dict.link_distinct", lang, name=self.name, canonical=self.canonical, en=self.evidence[0],
                     meanings=", ".join(self.evidence[1:]))
        if self.kind == "spelling":
            return t("dict.link_spelling", lang, name=self.name, reading=self.evidence[0])
        return t("dict.link_meaning", lang, name=self.name, meanings=", ".join(self.evidence))


# ---- the dictionary handle ---------------------------------------------------------------------------

_handle = None
_handle_lock = threading.Lock()
_unavailable_reason: str | None = None


def _jamdict():
    """The process-wide jamdict handle (None when jamdict or its database is not installed)."""
    global _handle, _unavailable_reason
    if _handle is None and _unavailable_reason is None:
        with _handle_lock:
            if _handle is None and _unavailable_reason is None:
                try:
                    import jamdict_data
                    from jamdict import Jamdict

                    # reuse_ctx=False: one sqlite connection per lookup, so threads never share one
                    jam = Jamdict(db_file=jamdict_data.JAMDICT_DB_PATH, auto_config=False, reuse_ctx=False)
                    if jam.jmdict is None or not jam.is_available():
                        raise RuntimeError(f"no JMdict data in {jamdict_data.JAMDICT_DB_PATH}")
                    _handle = jam
                except Exception as exc:   # the app works without it: no hints, no dictionary links
                    _unavailable_reason = f"{type(exc).__name__}: {exc}"
                    log.warning("JMdict is not available (%s); dictionary hints are off", _unavailable_reason)
    return _handle


def available() -> bool:
    return _jamdict() is not None


def unavailable_reason() -> str | None:
    _jamdict()
    return _unavailable_reason


def _is_japanese(text: str) -> bool:
    return any(is_kana(c) or 0x3400 <= ord(c) <= 0x9FFF or 0xF900 <= ord(c) <= 0xFAFF for c in text)


def _kana_only(text: str) -> bool:
    return bool(text) and all(is_kana(c) for c in text)


_words: dict[str, tuple[DictWord, ...]] = {}
_words_lock = threading.Lock()
_WORDS_KEEP = 50_000
_BATCH = 400   # texts per query (SQLite's bound-parameter limit is 32,766; two IN lists per query)


def _lookup_key(text: str) -> str | None:
    norm = normalize_chars(text or "")
    if not norm or len(norm) > 40 or not _is_japanese(norm) or _WILDCARDS.search(norm) or norm.startswith("id#"):
        return None
    return norm


def _query_many(jam, texts: list[str]) -> dict[str, tuple[DictWord, ...]]:
    """One round of SQL for many spellings. jamdict's own ``lookup`` runs ~20 queries per entry
    (2–7 ms a word), too slow for the first review of a few hundred labels; this reads the same
    tables of jamdict's database (Kanji/Kana with their priority tags, Sense/SenseGloss) in 4 queries."""
    out: dict[str, list[int]] = {t: [] for t in texts}
    with jam.jmdict.ctx() as ctx:
        cur = ctx.conn.cursor()
        marks = ",".join("?" * len(texts))
        # The three queries below interpolate only "?" placeholders and fixed table names (hence nosec B608).
        for idseq, text in cur.execute(f"SELECT idseq, text FROM Kanji WHERE text IN ({marks}) UNION "  # nosec B608
                                       f"SELECT idseq, text FROM Kana WHERE text IN ({marks})", (*texts, *texts)):
            out[text].append(int(idseq))
        ids = sorted({i for v in out.values() for i in v})
        if not ids:
            return {t: () for t in texts}
        im = ",".join("?" * len(ids))
        kanji: dict[int, list[str]] = {}
        kana: dict[int, list[str]] = {}
        common: set[int] = set()
        for table, pri, store_ in (("Kanji", "KJP", kanji), ("Kana", "KNP", kana)):
            for idseq, text, tag in cur.execute(
                    f"SELECT f.idseq, f.text, p.text FROM {table} f LEFT JOIN {pri} p ON p.kid = f.ID "  # nosec B608
                    f"WHERE f.idseq IN ({im}) ORDER BY f.ID", ids):
                forms = store_.setdefault(int(idseq), [])
                if text not in forms:
                    forms.append(text)
                if tag in _PRIORITY:
                    common.add(int(idseq))
        senses: dict[int, dict[int, list[str]]] = {}
        for idseq, sid, text, lang in cur.execute(
                f"SELECT s.idseq, s.ID, g.text, g.lang FROM Sense s JOIN SenseGloss g ON g.sid = s.ID "  # nosec B608
                f"WHERE s.idseq IN ({im}) ORDER BY s.ID, g.rowid", ids):
            if (lang or "eng") == "eng":
                senses.setdefault(int(idseq), {}).setdefault(int(sid), []).append(text)
    result = {}
    for text, idseqs in out.items():
        found = [DictWord(i, tuple(kanji.get(i, ())), tuple(kana.get(i, ())),
                          tuple(tuple(g) for _, g in sorted(senses.get(i, {}).items())), i in common)
                 for i in sorted(set(idseqs))]
        found.sort(key=lambda w: not w.common)
        result[text] = tuple(found)
    return result


def prefetch(texts: Iterable[str]) -> None:
    """Look up every spelling not seen yet in a few batched queries (labels of a whole review)."""
    keys = list(dict.fromkeys(k for k in map(_lookup_key, texts) if k))
    with _words_lock:
        missing = [k for k in keys if k not in _words]
    if not missing:
        return
    jam = _jamdict()
    if jam is None:
        return
    fetched: dict[str, tuple[DictWord, ...]] = {}
    try:
        for start in range(0, len(missing), _BATCH):
            fetched |= _query_many(jam, missing[start:start + _BATCH])
    except Exception as exc:   # a broken database must not break proposing or reviewing
        log.warning("JMdict lookup failed: %s", exc)
        return
    with _words_lock:
        if len(_words) + len(fetched) > _WORDS_KEEP:
            _words.clear()
        _words.update(fetched)


def words(text: str) -> tuple[DictWord, ...]:
    """JMdict entries written exactly ``text`` (kanji or kana spelling), common entries first."""
    key = _lookup_key(text)
    if key is None:
        return ()
    with _words_lock:
        hit = _words.get(key)
    if hit is None:
        prefetch([key])
        with _words_lock:
            hit = _words.get(key, ())
    return hit


def clear_caches() -> None:
    with _words_lock:
        _words.clear()
    profile.cache_clear()


def _primary(found: tuple[DictWord, ...]) -> tuple[DictWord, ...]:
    common = tuple(w for w in found if w.common)
    return common or found


def gloss_key(gloss: str) -> str:
    """A gloss as a comparable English key: "cat (esp. the domestic cat)" → "cat", "to rust" → "rust"."""
    text = gloss
    while True:
        stripped = _PAREN.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _ARTICLE.sub("", " ".join(text.split()).casefold())
    return english_key(text) if text and len(text.split()) <= MAX_GLOSS_WORDS else ""


def term_hint(text: str) -> TermHint | None:
    """Reading and English gloss for a Japanese term, from its most common JMdict entry."""
    found = _primary(words(text))
    if not found:
        return None
    word = found[0]
    norm = normalize_chars(text)
    kana = norm if _kana_only(norm) else (word.kana[0] if word.kana else "")
    first = word.senses[0] if word.senses else ()
    en = next((g for g in first if gloss_key(g)), first[0] if first else "")
    return TermHint(reading=hira2kata(kana), en=_PAREN.sub("", en).strip() or en, glosses=first, idseq=word.idseq)


@lru_cache(maxsize=8192)
def profile(*texts: str) -> Profile:
    """The meaning profile of a label from its name, canonical term and English gloss (any order)."""
    surfaces, meanings, written = set(), set(), set()
    readings: set[str] = set()
    kanji: frozenset[str] = frozenset()
    from_dictionary = False
    kana_only = False
    for i, raw in enumerate(t for t in texts if t):
        norm = normalize_chars(raw)
        if not norm:
            continue
        surfaces.add(norm)
        if i == 0:
            kana_only = _kana_only(norm)
        if not _is_japanese(norm):
            key = gloss_key(norm)
            if key:
                meanings.add(key)
            continue
        found = _primary(words(norm))
        for word in found:
            if word.senses:
                keys = {gloss_key(g) for g in word.senses[0]} - {""}
                meanings |= keys
                from_dictionary = from_dictionary or bool(keys)
            if _kana_only(norm):
                written.update(k for k in word.kanji if k != norm)
            if i == 0:
                readings.update(hira2kata(k) for k in word.kana)
        if i == 0:
            kanji = frozenset(c for c in norm if _is_kanji(c))
            readings.add(_reading(norm))
    return Profile(frozenset(surfaces), frozenset(meanings), from_dictionary, frozenset(written), kana_only,
                   frozenset(r for r in readings if r), kanji)


def _is_kanji(ch: str) -> bool:
    return 0x3400 <= ord(ch) <= 0x9FFF or 0xF900 <= ord(ch) <= 0xFAFF or ch == "々"


def _reading(norm: str) -> str:
    """The analyser's katakana reading (kana stays as written): マダラ模様 → マダラモヨウ."""
    if _kana_only(norm):
        return hira2kata(norm)
    try:
        from glossary import analyzer

        return analyzer.reading_key(norm) or ""
    except Exception:   # no analyser: readings come from the dictionary alone
        return ""


def link(a: Profile, b: Profile) -> tuple[str, tuple[str, ...]] | None:
    """How ``a`` and ``b`` may be the same thing by the dictionary, or None."""
    for x, y in ((a, b), (b, a)):
        if x.kana_only:
            shared = sorted(x.written_as & y.surfaces)
            if shared:
                return "reading", (shared[0],)
    for x, y in ((a, b), (b, a)):
        # The same word with part of it written in kana (マダラ模様 ~ 斑模様, both マダラモヨウ): the
        # kanji of one are a proper subset of the other's, so homophones (掛け/欠け) never link.
        # Kana-only names are the "reading" case above (JMdict must know the spelling: ムラ is not 村).
        if x.kanji and x.kanji < y.kanji and not (x.surfaces & y.surfaces):
            shared = sorted(x.readings & y.readings)
            if shared:
                return "spelling", (shared[0],)
    if a.dictionary or b.dictionary:      # two English names alone: the glossary decides
        shared = sorted(a.meanings & b.meanings)
        if shared:
            return "meaning", tuple(shared)
    return None


def label_profile(label: dict) -> Profile:
    return profile(label.get("name") or "", label.get("canonical") or "", label.get("en") or "")


def label_links(store, label_or_name: int | str, statuses: Iterable[str] = ("proposed", "approved", "trained"),
                limit: int = 8) -> list[DictLink]:
    """Labels (of ``statuses``) that the dictionary says may mean what this label (an id) or this
    name being typed means. A label is never linked to itself; a label whose glossary entry is
    declared ``distinct_from`` its own comes back as kind ``"distinct"`` (a note, never a merge)."""
    from core.glossary_store import load_glossary
    from core.labels import get_label, list_labels

    if not available():
        return []
    glossary = load_glossary(store)
    if isinstance(label_or_name, int) and not isinstance(label_or_name, bool):
        me = get_label(store, label_or_name)
        my_id, my_entry = me["id"], me["entry_id"]
        mine = label_profile(me)
    else:
        name = normalize_chars(str(label_or_name or ""))
        if not name:
            return []
        hit = glossary.lookup(name)
        my_id, my_entry = None, hit.entry_id if hit.auto else None
        entry = glossary.get(my_entry) if my_entry else None
        mine = profile(name, entry.canonical if entry else "", entry.en if entry else "")
    distinct = glossary.distinct_pairs()
    others = list_labels(store, statuses)
    prefetch(t for o in others for t in (o["name"], o.get("canonical") or ""))
    out = []
    for other in others:
        if other["id"] == my_id or (my_entry and other["entry_id"] == my_entry):
            continue
        kept_apart = bool(my_entry and other["entry_id"] and frozenset((my_entry, other["entry_id"])) in distinct)
        found = link(mine, label_profile(other))
        if found:
            kind, evidence = found
            if kept_apart:
                # The glossary keeps these apart on purpose (scratch = 傷, すり傷 = 擦り傷 "scuff"), though
                # the dictionary glosses both alike: say so, so a colleague in the other language picks
                # the term they mean instead of unknowingly starting a second class.
                other_entry = glossary.get(other["entry_id"])
                kind, evidence = "distinct", (other_entry.en if other_entry and other_entry.en else other["canonical"],
                                              *evidence)
            out.append(DictLink(int(other["id"]), other["name"], other.get("canonical") or other["name"],
                                other["status"], kind, evidence))
    out.sort(key=lambda l: (l.kind == "distinct", l.kind not in ("reading", "spelling"), -len(l.evidence), l.label_id))
    return out[:limit]
