"""The tiered glossary lookup and collision lint (spec §3.1 steps 7–9, §3.3).

A ``Glossary`` is immutable: its index is derived from the entries on construction, and the
``with_entry`` / ``without_entry`` methods return a new glossary. Lookup is thread-safe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from functools import lru_cache
from itertools import combinations
from typing import IO, Iterable, Iterator

from . import analyzer, typo
from .model import (AUTO_TIERS, Collision, GlossaryEntry, GlossaryError, LookupResult, Suggestion,
                    validate_entry)
from .normalize import english_key, hira2kata, is_kana, kana_key, normalize_chars

__all__ = ["Glossary"]

log = logging.getLogger(__name__)

MAX_SUGGESTIONS = 8
# Standard 異体字 pairs (JIS X 0213:2004 forms → the forms most text uses). The glossary adds its own
# groups: single kanji listed as forms of one entry (傷/疵/瑕, 錆/銹) are variants inside compounds too.
KANJI_VARIANTS = {"剝": "剥", "塡": "填", "頰": "頬", "嚙": "噛", "𠮟": "叱", "瘦": "痩", "搔": "掻",
                  "醬": "醤", "摑": "掴", "鷗": "鴎", "螢": "蛍", "篭": "籠", "龍": "竜"}
READING_MIN_KANJI_ONLY = 3   # see the reading~ comment in Glossary._suggestions


def _is_kanji(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3FFFF or ch in "々〆"


def _kana_only(norm: str) -> bool:
    return bool(norm) and all(is_kana(c) for c in norm)


def _spans(text: str, tokens) -> list[tuple[int, int]]:
    """(start, end) of each token in ``text`` (MeCab drops the spaces between tokens)."""
    out, pos = [], 0
    for tok in tokens:
        start = text.find(tok.surface, pos)
        if start < 0:        # cannot happen for MeCab output of this text; stay conservative
            start = pos
        pos = start + len(tok.surface)
        out.append((start, pos))
    return out


def _boundaries(text: str, tokens) -> set[int]:
    bounds = {0, len(text)}
    for start, end in _spans(text, tokens):
        bounds.update((start, end))
    return bounds


def _whole_word_in(word: str, text: str, bounds: set[int]) -> bool:
    start = text.find(word)
    while start >= 0:
        if start in bounds and start + len(word) in bounds:
            return True
        start = text.find(word, start + 1)
    return False


def _kanji_cut_in(form: str, text: str, bounds: set[int]) -> bool:
    def ok(cut: int) -> bool:
        return cut in bounds or _is_kanji(text[cut - 1]) or _is_kanji(text[cut])

    start = text.find(form)
    while start >= 0:
        if ok(start) and ok(start + len(form)):
            return True
        start = text.find(form, start + 1)
    return False


def _clean_list(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items or ():
        item = (item or "").strip()
        if item and item not in out:
            out.append(item)
    return out


def _clean(entry: GlossaryEntry) -> GlossaryEntry:
    """A private, normalised copy: trimmed fields, no empty or repeated list items."""
    strip = lambda v: (v or "").strip()  # noqa: E731
    return GlossaryEntry(
        id=strip(entry.id), canonical=strip(entry.canonical), reading=strip(entry.reading),
        en=strip(entry.en), embed_text=entry.embed_text or "", aliases=_clean_list(entry.aliases),
        distinct_from=_clean_list(entry.distinct_from), notes=entry.notes or "", notes_ja=entry.notes_ja or "",
        status=strip(entry.status) or "approved")


@dataclasses.dataclass(frozen=True, slots=True)
class _FormKeys:
    norm: str
    basic: str
    kana: str
    ascii: bool
    kana_only: bool
    lemma: str                 # "en:<english key>" for ASCII forms
    reading: str
    token_key: str | None      # lemma|lForm when the form is a single content token
    guessed: tuple[str, ...]   # kanji lemmas the analyser chose for a kana-only form


@lru_cache(maxsize=32768)
def _form_keys(form: str) -> _FormKeys:
    """Every key of one glossary form (cached: a rebuilt glossary mostly re-indexes the same forms)."""
    norm = normalize_chars(form)
    bk = norm.casefold()
    if norm.isascii():
        return _FormKeys(norm, bk, bk, True, False, "en:" + english_key(norm), "", None, ())
    kk = hira2kata(bk)
    kana_only = _kana_only(norm)
    tokens = analyzer.analyze(norm)
    content = [t for t in tokens if not t.punct]
    guessed = tuple(t.lemma for t in content if kana_only and not t.plain and t.lemma and not _kana_only(t.lemma))
    return _FormKeys(norm, bk, kk, False, kana_only, analyzer.lemma_key(norm),
                     kk if kana_only else analyzer.reading_key(norm),
                     analyzer.token_lemma_key(content[0]) if len(content) == 1 else None, guessed)


# ---------------------------------------------------------------------------------------------
# Shared user dictionaries (one per distinct word list; a rebuilt glossary usually reuses one)
# ---------------------------------------------------------------------------------------------

_ud_cache: "OrderedDict[tuple, analyzer.UserDictionary | None]" = OrderedDict()
_ud_lock = threading.Lock()
_UD_KEEP = 4


@contextlib.contextmanager
def _quiet_fds():
    """MeCab's dictionary compiler prints progress bars on the C-level stdout/stderr; hide them.

    This lasts the few milliseconds of one compile; Python-level buffers are flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _shared_user_dictionary(words: dict[str, frozenset[str]], readings: dict[str, str]):
    key = tuple(sorted((w, tuple(sorted(ids)), readings.get(w, "")) for w, ids in words.items()))
    with _ud_lock:
        if key in _ud_cache:
            _ud_cache.move_to_end(key)
            return _ud_cache[key]
        try:
            with _quiet_fds():
                ud = analyzer.UserDictionary(words, readings)
        except Exception as exc:  # containment then falls back to substring matching
            log.warning("glossary user dictionary could not be built (%s); using substring containment", exc)
            ud = None
        _ud_cache[key] = ud
        while len(_ud_cache) > _UD_KEEP:
            _ud_cache.popitem(last=False)
        return ud


# ---------------------------------------------------------------------------------------------
# Glossary
# ---------------------------------------------------------------------------------------------

class Glossary:
    """An ordered, immutable set of entries plus the derived lookup index."""

    def __init__(self, entries: Iterable[GlossaryEntry] = ()):
        cleaned = [_clean(e) for e in entries]
        by_id: dict[str, GlossaryEntry] = {}
        for e in cleaned:
            validate_entry(e)
            if e.id in by_id:
                raise GlossaryError(f"duplicate id '{e.id}'", field="id", code="duplicate_id",
                                    entry_id=e.id, value=e.id)
            by_id[e.id] = e
        self._entries: tuple[GlossaryEntry, ...] = tuple(cleaned)
        self._by_id = by_id
        self._order = {e.id: i for i, e in enumerate(cleaned)}
        self._ud_lock = threading.Lock()
        self._ud_done = False
        self._ud: analyzer.UserDictionary | None = None
        self._build_index()

    # ---- container protocol -------------------------------------------------------------------
    @property
    def entries(self) -> list[GlossaryEntry]:
        """The entries in order. Do not mutate them; use ``with_entry`` to change the glossary."""
        return list(self._entries)

    def get(self, entry_id: str) -> GlossaryEntry | None:
        return self._by_id.get(entry_id)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[GlossaryEntry]:
        return iter(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._by_id

    def __repr__(self) -> str:
        return f"Glossary({len(self)} entries)"

    def with_entry(self, entry: GlossaryEntry) -> "Glossary":
        """A new glossary with ``entry`` added, or replacing the entry with the same id in place."""
        entries = list(self._entries)
        eid = (entry.id or "").strip()
        if eid in self._order:
            entries[self._order[eid]] = entry
        else:
            entries.append(entry)
        return Glossary(entries)

    def without_entry(self, entry_id: str) -> "Glossary":
        return Glossary(e for e in self._entries if e.id != entry_id)

    # ---- CSV ----------------------------------------------------------------------------------
    @classmethod
    def from_csv(cls, path_or_file: "str | os.PathLike | IO") -> "Glossary":
        from .csvio import read_csv

        return cls(read_csv(path_or_file))

    def to_csv(self, path_or_file: "str | os.PathLike | IO | None" = None) -> str | None:
        """Write CSV to a path (UTF-8 with BOM, for Excel), a text or binary file, or return it as str."""
        from .csvio import write_csv

        return write_csv(self._entries, path_or_file)

    @classmethod
    def starter(cls) -> "Glossary":
        from .csvio import starter_path

        return cls.from_csv(starter_path())

    # ---- index --------------------------------------------------------------------------------
    def _build_index(self) -> None:
        ids = self._by_id
        idx: dict[str, dict[str, dict[str, list[str]]]] = {t: {} for t in AUTO_TIERS}

        def add(tier: str, key: str, eid: str, form: str) -> None:
            if key:
                forms = idx[tier].setdefault(key, {}).setdefault(eid, [])
                if form not in forms:
                    forms.append(form)

        tokens_ix: dict[str, set[str]] = {}
        ud_words: dict[str, set[str]] = {}
        ud_readings: dict[str, str] = {}
        en_phrases: list[tuple[str, tuple[str, ...], str]] = []
        # typo candidates: English forms by first letter, kana forms by their typo fold (glossary.typo)
        typo_en: dict[str, list[tuple[str, str, str]]] = {}
        typo_kana: dict[str, list[tuple[str, str, str]]] = {}
        kanji_index: dict[str, set[str]] = {}   # forms written with kanji (containment in compounds)
        self._variant_fold = self._kanji_variant_groups()
        variant_ix: dict[str, dict[str, list[str]]] = {}   # compounds by their variant-folded spelling
        blocked: dict[str, set[str]] = {}
        distinct: set[frozenset[str]] = set()

        for e in self._entries:
            eid = e.id
            for d in e.distinct_from:
                if d in ids:
                    distinct.add(frozenset((eid, d)))
                else:
                    blocked.setdefault(eid, set()).add(kana_key(d))
            keyed = [(f, _form_keys(f)) for f in e.forms]
            kanji_forms = [k.norm for _, k in keyed if any(_is_kanji(c) for c in k.norm)]
            for f in kanji_forms:
                kanji_index.setdefault(f, set()).add(eid)
                if len(f) >= 2:
                    variant_ix.setdefault(self._variant_key(f), {}).setdefault(eid, []).append(f)
            for form, k in keyed:
                if not k.norm:
                    continue
                add("exact", form, eid, form)
                add("basic", k.basic, eid, form)
                if k.ascii:
                    add("lemma", k.lemma, eid, form)
                    en_phrases.append((eid, tuple(k.lemma[3:].split()), form))
                    if k.basic:
                        typo_en.setdefault(k.basic[0], []).append((eid, form, k.basic))
                    continue
                add("kana", k.kana, eid, form)
                # Trust the analyser's lemma of a kana-only form only when it does not invent a
                # spelling: UniDic guesses homographs for short kana (ムラ→村, カケ→賭け, ワレ→我,
                # スリキズ→掏摸+傷). ねじ→螺子 is kept when 螺子 is one of the entry's own forms.
                trusted = all(any(g in f or f in g for f in kanji_forms) for g in k.guessed)
                if trusted:
                    add("lemma", k.lemma, eid, form)
                    if k.token_key:
                        tokens_ix.setdefault(k.token_key, set()).add(eid)
                add("reading", k.reading, eid, form)
                ud_words.setdefault(k.norm, set()).add(eid)
                if k.reading and k.reading != k.norm:
                    ud_readings.setdefault(k.norm, k.reading)
                if k.kana_only:
                    typo_kana.setdefault(typo.kana_fold(k.kana), []).append((eid, form, k.kana))
            if e.reading:
                rk = kana_key(e.reading)
                add("reading", rk, eid, f"({e.reading})")
                if len(rk) >= 2:  # 1-character readings match fragments (spec §3.5 pitfall)
                    ud_words.setdefault(rk, set()).add(eid)
                if _kana_only(rk):
                    typo_kana.setdefault(typo.kana_fold(rk), []).append((eid, e.reading, rk))

        self._idx = idx
        self._tokens_ix = tokens_ix
        self._ud_words = {w: frozenset(s) for w, s in ud_words.items()}
        self._ud_readings = ud_readings
        self._en_phrases = en_phrases
        self._typo_en = typo_en
        self._typo_kana = typo_kana
        self._kanji_forms = sorted((f, frozenset(ids)) for f, ids in kanji_index.items())
        self._variant_ix = variant_ix
        self._blocked = blocked
        self._distinct = distinct

    def _kanji_variant_groups(self) -> dict[str, str]:
        """kanji → the spelling it folds to in compounds: the standard pairs plus, per live entry, its
        single-kanji forms (傷, 疵, 瑕 of 傷 fold to 傷). A kanji two entries claim folds nowhere."""
        fold = dict(KANJI_VARIANTS)
        claimed: dict[str, set[str]] = {}
        for e in self._entries:
            if e.status == "deprecated":
                continue
            singles = [f for f in dict.fromkeys(normalize_chars(x) for x in e.forms) if len(f) == 1 and _is_kanji(f)]
            if len(singles) < 2:
                continue
            head = normalize_chars(e.canonical) if normalize_chars(e.canonical) in singles else singles[0]
            for k in singles:
                claimed.setdefault(k, set()).add(head)
        for k, heads in claimed.items():
            if len(heads) == 1 and k not in fold:
                fold[k] = next(iter(heads))
        return fold

    def variant_key(self, text: str) -> str:
        """``text`` with variant kanji folded (ピット疵 → ピット傷): how compounds are compared."""
        return self._variant_key(normalize_chars(text))

    def _variant_key(self, norm: str) -> str:
        return "".join(self._variant_fold.get(c, c) for c in norm)

    def _user_dictionary(self) -> "analyzer.UserDictionary | None":
        if not self._ud_done:
            with self._ud_lock:
                if not self._ud_done:
                    self._ud = _shared_user_dictionary(self._ud_words, self._ud_readings)
                    self._ud_done = True
        return self._ud

    # ---- lookup -------------------------------------------------------------------------------
    def _sort_ids(self, ids: Iterable[str]) -> list[str]:
        return sorted(set(ids), key=lambda i: self._order.get(i, 1 << 30))

    def _hits(self, tier: str, keys: Iterable[str], blocked: set[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key in keys:
            for eid, forms in self._idx[tier].get(key, {}).items():
                if eid not in blocked:
                    have = out.setdefault(eid, [])
                    have.extend(f for f in forms if f not in have)
        return out

    def _suggest(self, eid: str, tier: str, score: float, reason: str) -> Suggestion:
        return Suggestion(eid, self._by_id[eid].canonical, tier, round(float(score), 3), reason)

    def lookup(self, text: str) -> LookupResult:
        """Resolve ``text`` to an entry (spec §3.1 step 9). The first tier with a hit wins."""
        raw = text if isinstance(text, str) else str(text or "")
        norm = normalize_chars(raw)
        result = LookupResult(query=raw, normalized=norm, tier="none")
        if not norm:
            return result
        bk = norm.casefold()
        kk = hira2kata(bk)
        ascii_q = norm.isascii()
        kana_only = _kana_only(norm)
        blocked = {eid for eid, keys in self._blocked.items() if kk in keys}

        keys: dict[str, list[str]] = {"exact": [raw.strip()], "basic": [bk]}
        if ascii_q:
            keys["lemma"] = ["en:" + english_key(norm)]
        else:
            keys["kana"] = [kk]
            keys["lemma"] = [analyzer.lemma_key(norm)]
            if kana_only:
                keys["reading"] = list(dict.fromkeys([kk, analyzer.reading_key(norm)]))

        retired: list[Suggestion] = []
        for tier in AUTO_TIERS:
            if tier not in keys:
                continue
            hits = self._hits(tier, keys[tier], blocked)
            if not hits:
                continue
            live = [eid for eid in self._sort_ids(hits) if self._by_id[eid].status != "deprecated"]
            for eid in hits:
                if eid not in live and eid not in {s.entry_id for s in retired}:
                    retired.append(self._suggest(eid, tier, 0.5, "deprecated entry"))
            if not live:
                continue
            if tier == "lemma" and kana_only and len(live) == 1:
                # Kana-only input: a lemma hit is trusted only if no other entry has this reading
                # (UniDic picks homographs for short kana: カケ→賭け, ムラ→村).
                others = [eid for eid in self._hits("reading", keys["reading"], blocked)
                          if eid not in live and self._by_id[eid].status != "deprecated"]
                live = self._sort_ids(live + others)
            approved = [eid for eid in live if self._by_id[eid].status == "approved"]
            if approved and len(approved) < len(live):
                # A draft (not yet reviewed) never takes a term away from a reviewed entry: the
                # approved entry keeps the match and the draft is offered as a suggestion.
                retired += [self._suggest(eid, tier, 0.5, "draft entry with the same key")
                            for eid in live if eid not in approved]
                live = approved
            result.tier = tier
            if len(live) == 1:
                eid = live[0]
                result.auto = True
                result.entry_id = eid
                result.canonical = self._by_id[eid].canonical
                result.matched_form = hits[eid][0]
                result.suggestions = retired
            else:
                result.ambiguous = live
                result.suggestions = [self._suggest(eid, tier, 1.0, f"{tier} key shared by {len(live)} entries")
                                      for eid in live] + retired
            return result

        suggestions = self._suggestions(norm, bk, kk, ascii_q, kana_only, blocked)
        seen = {s.entry_id for s in suggestions}
        suggestions += [s for s in retired if s.entry_id not in seen]
        result.suggestions = suggestions[:MAX_SUGGESTIONS]
        if result.suggestions and result.suggestions[0].tier in ("variant", "reading~", "contains", "typo"):
            result.tier = result.suggestions[0].tier
        return result

    def _suggestions(self, norm: str, bk: str, kk: str, ascii_q: bool, kana_only: bool,
                     blocked: set[str]) -> list[Suggestion]:
        out: list[Suggestion] = []
        seen: set[str] = set(blocked)

        def push(eid: str, tier: str, score: float, reason: str) -> None:
            if eid not in seen and self._by_id[eid].status != "deprecated":
                seen.add(eid)
                out.append(self._suggest(eid, tier, score, reason))

        # variant: the same compound with a variant kanji (ピット傷 ~ ピット疵, 剥がれ跡 ~ 剝がれ跡).
        if not ascii_q and len(norm) >= 2:
            hits = self._variant_ix.get(self._variant_key(norm), {})
            for eid in self._sort_ids(hits):
                forms = hits[eid]
                if all(f != norm for f in forms):
                    push(eid, "variant", 0.95, f"variant kanji of 「{forms[0]}」")

        # reading~: same reading, different spelling (mixed kanji/kana input). Never automatic:
        # homophones such as 掛け/欠け, 遺物/異物, 我/割れ, 寂/錆. Input of kanji only with a reading
        # of 1–2 kana is left out: such readings are shared by too many everyday words (椅子 and
        # 鋳巣 both read イス) for the coincidence to mean anything.
        q_reading = "" if ascii_q else analyzer.reading_key(norm)
        has_kana = any(is_kana(c) for c in norm)
        if not ascii_q and not kana_only and q_reading and (has_kana or len(q_reading) >= READING_MIN_KANJI_ONLY):
            for eid in self._sort_ids(self._idx["reading"].get(q_reading, {})):
                push(eid, "reading~", 0.9, f"same reading {q_reading}")

        # contains: a glossary term inside a longer label ("ボス部の打痕" contains 打痕).
        for eid, score, part in self._containment(norm, bk, ascii_q):
            push(eid, "contains", score, f"contains 「{part}」")

        # new term: only typo-like near misses (glossary.typo explains why not character overlap).
        scored: dict[str, tuple[int, float, str]] = {}
        if ascii_q:
            candidates = [(c, typo.english_typo_edits(bk, c[2])) for c in self._typo_en.get(bk[:1], ())]
        elif kana_only:
            candidates = [(c, typo.kana_typo_edits(kk, c[2])) for c in self._typo_kana.get(typo.kana_fold(kk), ())]
        else:
            candidates = []
        for (eid, form, key), edits in candidates:
            if edits is None or eid in seen:
                continue
            score = round(1.0 - edits / max(len(key), len(bk if ascii_q else kk)), 3)
            if score > scored.get(eid, (0, 0.0, ""))[1]:
                scored[eid] = (edits, score, form)
        for eid, (edits, score, form) in sorted(scored.items(), key=lambda kv: (-kv[1][1], self._order[kv[0]])):
            push(eid, "typo", score, f"typo of 「{form}」? ({edits} edit{'s' if edits > 1 else ''})")
        return out

    def _containment(self, norm: str, bk: str, ascii_q: bool) -> list[tuple[str, float, str]]:
        found: dict[str, tuple[float, str]] = {}
        n = max(len(norm), 1)

        def record(eids: Iterable[str], part: str, weight: float = 1.0) -> None:
            score = round(0.8 * weight * min(len(part) / n, 1.0), 3)
            for eid in eids:
                if score > found.get(eid, (0.0, ""))[0]:
                    found[eid] = (score, part)

        if ascii_q:
            words = tuple(english_key(norm).split())
            for eid, phrase, form in self._en_phrases:
                k = len(phrase)
                if 0 < k < len(words) and any(words[i:i + k] == phrase for i in range(len(words) - k + 1)):
                    record([eid], form)
            return self._rank(found)

        tokens = analyzer.analyze(norm)
        # Only whole words count as evidence: a glossary word found inside a longer label must start
        # and end where the analyser (without our dictionary) puts word boundaries, so ひこうき
        # (ひこう+き) does not "contain" うき (浮き) and ピンク does not contain ピン.
        bounds = _boundaries(norm, tokens)
        ud = self._user_dictionary()
        if ud is not None:
            parsed = ud.parse(norm)
            spans = _spans(norm, [t for t, _ in parsed])
            for (tok, eids), (start, end) in zip(parsed, spans):
                if (eids is not None and len(tok.surface) >= 2 and tok.surface != norm
                        and start in bounds and end in bounds):
                    record(eids, tok.surface)
        else:
            for word, eids in self._ud_words.items():
                if len(word) >= 2 and word != norm and _whole_word_in(word.casefold(), bk, bounds):
                    record(eids, word)
        for tok in tokens:
            if tok.punct or (tok.lemma or "").startswith("GLOSS:"):
                continue
            if len(tok.surface) >= 2:
                if tok.surface != norm:
                    record(self._tokens_ix.get(analyzer.token_lemma_key(tok), ()), tok.surface)
                    # a whole token that is a form up to kana (色+むら: むら = ムラ)
                    record(list(self._idx["kana"].get(hira2kata(tok.surface.casefold()), {})), tok.surface)
            elif _is_kanji(tok.surface) and len(tokens) > 1:
                # A single kanji is ignored unless it is literally one of an entry's forms (傷, 錆).
                ex = self._idx["exact"].get(tok.surface, {})
                record(ex.keys(), tok.surface, 0.75)
        # A form written with kanji inside a compound the analyser keeps whole (赤錆 ⊃ 錆, 傷跡 ⊃ 傷):
        # a cut next to a kanji is a morpheme boundary, a cut between two kana is not (ひこうき ⊃ うき).
        for form, eids in self._kanji_forms:
            if form != norm and form in norm and _kanji_cut_in(form, norm, bounds):
                record(eids, form, 0.75)
        return self._rank(found)

    def _rank(self, found: dict[str, tuple[float, str]]) -> list[tuple[str, float, str]]:
        return [(eid, s, part) for eid, (s, part) in
                sorted(found.items(), key=lambda kv: (-kv[1][0], self._order[kv[0]]))]

    # ---- lint ---------------------------------------------------------------------------------
    def lint(self) -> list[Collision]:
        """Keys of an auto tier shared by 2+ live entries, minus pairs declared ``distinct_from``.

        A collision already reported at an earlier tier for the same entries and forms is not
        repeated (a shared alias would otherwise show up in all five tiers).
        """
        out: list[Collision] = []
        seen: set[tuple[frozenset, frozenset]] = set()
        for tier in AUTO_TIERS:
            for key, per_entry in self._idx[tier].items():
                live = [eid for eid in self._sort_ids(per_entry) if self._by_id[eid].status != "deprecated"]
                if len(live) < 2:
                    continue
                involved: set[str] = set()
                for a, b in combinations(live, 2):
                    if frozenset((a, b)) not in self._distinct:
                        involved.update((a, b))
                if len(involved) < 2:
                    continue
                ids = self._sort_ids(involved)
                forms = {eid: list(per_entry[eid]) for eid in ids}
                sig = (frozenset(ids), frozenset((eid, f) for eid, fs in forms.items() for f in fs))
                if sig in seen:
                    continue
                seen.add(sig)
                out.append(Collision(tier=tier, key=key, entry_ids=ids, forms=forms))
        return out

    def distinct_pairs(self) -> set[frozenset[str]]:
        return set(self._distinct)


def replace_entry(entry: GlossaryEntry, **changes) -> GlossaryEntry:
    """``dataclasses.replace`` that copies the list fields (convenience for editors)."""
    changes.setdefault("aliases", list(entry.aliases))
    changes.setdefault("distinct_from", list(entry.distinct_from))
    return dataclasses.replace(entry, **changes)
