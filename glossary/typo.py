"""Typo-likeness: when is a string that matches no tier close enough to a glossary form to suggest it?

Character-overlap scores (n-grams, ``difflib`` ratios) cannot tell a typo from an unrelated word:
ピンク/ピン scores 0.8 and トラック/クラック 0.75, while the real typo スリキス/スリキズ scores 0.75
(``scripts/measure_glossary.py --sweep`` prints the table). What separates them is *which* edit
was made, so a suggestion needs an edit people actually make when typing:

* **kana** (kana-only input): the two strings are equal once voicing marks (ス/ズ, ハ/バ/パ), small
  kana (ッ/ツ, ャ/ヤ: typed large) and long-vowel marks (ー) are folded away, the folded form has at least
  ``KANA_MIN_LEN`` characters, and at most ``kana_max_edits`` characters differ. ワッシャ/ワッシャー
  and スリキス/スリキズ qualify; キス/キズ (2 characters: "kiss") and トラック/クラック do not.
* **English**: the same first letter, both words at least ``EN_MIN_LEN`` letters, and an optimal
  string alignment distance (insert, delete, substitute, swap two neighbours) of 1 (2 from
  ``EN_LONG`` letters on). scrach/scratch qualifies; ship/chip and cat/cavity do not.

A reading that merely *contains* a form (ひこうき ⊃ うき) is never a typo. Pure Python, no tables.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["KANA_MIN_LEN", "EN_MIN_LEN", "EN_LONG", "kana_fold", "kana_typo_edits", "english_typo_edits",
           "edit_distance"]

KANA_MIN_LEN = 3   # folded kana characters; 2-character words (キス, ヒゲ) are too often real words
EN_MIN_LEN = 5     # 4-letter words (ship/chip, deer/dent) are too often real words
EN_LONG = 8        # from this length on, two edits are still a typo (misalignmnet)

_SMALL = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")


@lru_cache(maxsize=65536)
def kana_fold(kana: str) -> str:
    """Katakana with voicing marks removed, small kana made large (ッ→ツ) and ー dropped."""
    decomposed = unicodedata.normalize("NFD", kana)
    base = "".join(ch for ch in decomposed if ch not in "\u3099\u309a")
    base = unicodedata.normalize("NFC", base).replace("ヴ", "ウ")
    return base.replace("ー", "").translate(_SMALL)


def edit_distance(a: str, b: str, *, swaps: bool = False) -> int:
    """Levenshtein distance; with ``swaps`` also one transposition of neighbours (OSA)."""
    if a == b:
        return 0
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if swaps and prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def kana_max_edits(folded_len: int) -> int:
    return 2 if folded_len >= 6 else 1


def kana_typo_edits(query: str, form: str) -> int | None:
    """Edits from ``query`` to ``form`` (both katakana keys) when they look like a typo, else None."""
    if query == form:
        return None
    folded = kana_fold(query)
    if len(folded) < KANA_MIN_LEN or folded != kana_fold(form):
        return None
    edits = edit_distance(query, form)
    return edits if edits <= kana_max_edits(len(folded)) else None


def english_typo_edits(query: str, form: str) -> int | None:
    """Edits from ``query`` to ``form`` (casefolded English) when they look like a typo, else None."""
    if query == form or not query or not form or query[0] != form[0]:
        return None
    if min(len(query), len(form)) < EN_MIN_LEN or abs(len(query) - len(form)) > 2:
        return None
    edits = edit_distance(query, form, swaps=True)
    limit = 2 if min(len(query), len(form)) >= EN_LONG else 1
    return edits if edits <= limit else None
