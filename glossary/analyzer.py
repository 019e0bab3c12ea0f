"""fugashi + unidic-lite: lemma / reading keys (spec §3.1 steps 5–7) and the glossary user dictionary (§3.5).

* The tagger is built once per process (lazy, thread-safe) with the unidic-lite dicdir passed
  explicitly, because an installed ``unidic`` package makes ``fugashi.Tagger()`` crash (§5).
* MeCab taggers are not safe to share between threads, so every parse holds the tagger's lock and
  copies the fields it needs before releasing it.
* Input must already be ``normalize_chars`` output: NFKC first (MeCab does not fold half-width
  kana), and never casefolded (M3 and m3 differ).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from .normalize import hira2kata

__all__ = ["Token", "analyze", "lemma_key", "reading_key", "token_lemma_key", "UserDictionary", "get_tagger"]

_SYMBOL_POS = ("補助記号", "記号", "空白")


@dataclass(frozen=True, slots=True)
class Token:
    surface: str
    lemma: str | None      # 語彙素 without the "-source" suffix; None for UNK
    lform: str | None      # 語彙素読み (katakana)
    kana: str | None       # 仮名形
    pos1: str
    unk: bool
    plain: bool            # UNK, ASCII or symbol: keys use the casefolded surface, never the analyser's guess
    punct: bool            # pure punctuation/symbol surface (O-リング vs Oリング): left out of keys
    lemma_part: str
    lform_part: str
    reading_part: str


def _token(surface: str, lemma: str | None, lform: str | None, kana: str | None, pos1: str, unk: bool) -> Token:
    plain = unk or lemma is None or surface.isascii() or pos1 in _SYMBOL_POS
    punct = all(unicodedata.category(c)[0] in "PSZ" for c in surface)
    folded = hira2kata(surface.casefold())
    if plain:
        parts = (folded, folded, folded)
    else:
        parts = (hira2kata(lemma), lform or folded, kana or lform or hira2kata(surface))
    return Token(surface, lemma, lform, kana, pos1, unk, plain, punct, *parts)


# ---------------------------------------------------------------------------------------------
# The process-wide tagger
# ---------------------------------------------------------------------------------------------

class _LockedTagger:
    def __init__(self, args: str):
        import fugashi

        self._tagger = fugashi.Tagger(args)
        self._lock = threading.Lock()

    def parse(self, text: str) -> tuple[Token, ...]:
        out = []
        with self._lock:
            for w in self._tagger(text):
                f = w.feature
                lemma = getattr(f, "lemma", None)
                if lemma and not lemma.startswith("GLOSS:"):
                    lemma = lemma.split("-", 1)[0] or lemma
                out.append(_token(w.surface, lemma, getattr(f, "lForm", None), getattr(f, "kana", None),
                                  getattr(f, "pos1", "") or "", bool(w.is_unk)))
        return tuple(out)


_tagger: _LockedTagger | None = None
_tagger_lock = threading.Lock()


def dicdir() -> str:
    import unidic_lite

    return unidic_lite.DICDIR


def _tagger_args(user_dic: str | None = None) -> str:
    d = dicdir()
    args = f'-d "{d}" -r "{d}/mecabrc"'
    if user_dic:
        args += f' -u "{user_dic}"'
    return args


def get_tagger() -> _LockedTagger:
    """The shared unidic-lite tagger (built on first use)."""
    global _tagger
    if _tagger is None:
        with _tagger_lock:
            if _tagger is None:
                _tagger = _LockedTagger(_tagger_args())
    return _tagger


@lru_cache(maxsize=65536)
def analyze(norm_text: str) -> tuple[Token, ...]:
    """Tokens of a ``normalize_chars`` string (cached; glossary forms are analysed on every rebuild)."""
    if not norm_text:
        return ()
    return get_tagger().parse(norm_text)


def _join(tokens, part: str) -> str:
    return "".join(getattr(t, part) for t in tokens)


def lemma_key(norm_text: str) -> str:
    """``hira2kata(join(lemmas)) + "|" + join(lForm)`` (spec §3.1 step 5)."""
    tokens = analyze(norm_text)
    kept = [t for t in tokens if not t.punct] or list(tokens)
    if not kept:
        return ""
    return _join(kept, "lemma_part") + "|" + _join(kept, "lform_part")


def token_lemma_key(token: Token) -> str:
    return token.lemma_part + "|" + token.lform_part


def reading_key(norm_text: str) -> str:
    """``join(token.kana)``; UNK/ASCII/symbol tokens contribute their kana-folded surface (step 6)."""
    tokens = [t for t in analyze(norm_text) if not t.punct]
    return _join(tokens, "reading_part")


# ---------------------------------------------------------------------------------------------
# User dictionary compiled from the glossary (spec §3.5), used for containment only
# ---------------------------------------------------------------------------------------------

_GOSHU_FALLBACK = {"和": 5142, "外": 5144, "漢": 5146}
_left_ids: dict[str, int] | None = None


def _noun_ids() -> dict[str, int]:
    """Left/right ids of 名詞,普通名詞,一般,*,*,*,*,*,<goshu>, read from the installed left-id.def."""
    global _left_ids
    if _left_ids is None:
        ids = dict(_GOSHU_FALLBACK)
        try:
            with open(os.path.join(dicdir(), "left-id.def"), encoding="utf-8") as fh:
                for line in fh:
                    num, _, feat = line.rstrip("\n").partition(" ")
                    if feat.startswith("名詞,普通名詞,一般,*,*,*,*,*,"):
                        goshu = feat.rsplit(",", 1)[1]
                        if goshu in ids:
                            ids[goshu] = int(num)
        except OSError:
            pass
        _left_ids = ids
    return _left_ids


def _goshu(surface: str) -> str:
    if all(0x30A0 <= ord(c) <= 0x30FF for c in surface):
        return "外"
    if any(unicodedata.name(c, "").startswith("CJK UNIFIED") for c in surface):
        return "漢"
    return "和"


def _dict_row(surface: str, tag: str, kana: str) -> str:
    goshu = _goshu(surface)
    lid = _noun_ids()[goshu]
    f = ["名詞", "普通名詞", "一般", "*", "*", "*", kana, tag, surface, kana, surface, kana, goshu,
         "*", "*", "*", "*", kana, kana, kana, kana, "*", "*", "*", "*", "*"]
    return ",".join([surface, str(lid), str(lid), "2000"] + f)


class UserDictionary:
    """A MeCab user dictionary whose rows carry ``GLOSS:<n>`` as lemma; ``n`` indexes ``groups``.

    ``words`` maps a surface to the set of entry ids it stands for. Building takes a few ms; the
    compiled file lives in a temporary directory that is removed right after the tagger has
    mapped it (POSIX) or when this object is garbage-collected.
    """

    def __init__(self, words: dict[str, frozenset[str]], readings: dict[str, str]):
        import fugashi

        self.groups: list[frozenset[str]] = []
        group_ix: dict[frozenset[str], int] = {}
        rows = []
        for surface, ids in sorted(words.items()):
            if len(surface) < 2 or any(c in surface for c in ',"\n\r') or surface.isspace():
                continue
            if ids not in group_ix:
                group_ix[ids] = len(self.groups)
                self.groups.append(ids)
            rows.append(_dict_row(surface, f"GLOSS:{group_ix[ids]}", readings.get(surface) or surface))
        self._tmp = tempfile.mkdtemp(prefix="sgcl-glossdic-")
        try:
            csv_path = os.path.join(self._tmp, "gloss.csv")
            dic_path = os.path.join(self._tmp, "gloss.dic")
            with open(csv_path, "w", encoding="utf-8") as fh:
                fh.write("\n".join(rows) + "\n")
            d = dicdir()
            # The first token is argv[0] (spec §5); quoting is not understood here, hence no spaces
            # in paths: mkdtemp names have none unless TMPDIR does, which we check.
            if " " in self._tmp or " " in d:
                raise RuntimeError("paths with spaces are not supported by build_dictionary")
            fugashi.build_dictionary(
                f"mecab-dict-index -d {d} -u {dic_path} -f utf-8 -t utf-8 {csv_path}")
            self.tagger = _LockedTagger(_tagger_args(dic_path))
        finally:
            if os.name == "posix":
                shutil.rmtree(self._tmp, ignore_errors=True)
        if os.name != "posix":
            import weakref

            weakref.finalize(self, shutil.rmtree, self._tmp, True)

    def parse(self, norm_text: str) -> list[tuple[Token, frozenset[str] | None]]:
        """Tokens with the glossary words as single tokens; a glossary token carries its entry ids."""
        out = []
        for tok in self.tagger.parse(norm_text):
            ids = None
            if tok.lemma and tok.lemma.startswith("GLOSS:"):
                ids = self.groups[int(tok.lemma[6:])]
            out.append((tok, ids))
        return out
