"""Character-level normalisation and the cheap string keys (spec §3.1 steps 2–4).

Everything here is pure Python (``unicodedata`` only), so it is safe to call anywhere, including
on text that is about to be sent to a tokenizer (spec §4.3: always NFKC first).
"""
from __future__ import annotations

import re
import unicodedata

__all__ = [
    "is_invisible", "strip_invisible", "normalize_chars", "basic_key", "kana_key", "hira2kata", "is_kana", "is_kana_only",
    "english_key", "DASHES",
]

# Dash-like characters that mean a long vowel when typed after kana (spec §3.1 step 2.2, §5).
# NFKC already maps U+FF0D (－) to "-" and U+FF70 (ｰ) to "ー"; both are listed anyway so the set
# documents the whole family. Tildes (〜 U+301C, ～ U+FF5E, ~) are *not* here: they are ranges.
DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d\uff70\u2500\u2501")
CHOONPU = "\u30fc"  # ー

_WS = re.compile(r"\s+")
_CHOONPU_RUN = re.compile(CHOONPU + "{2,}")


def is_kana(ch: str) -> bool:
    """Hiragana, katakana (incl. ー ゝ ゞ ヽ ヾ) or a katakana phonetic extension."""
    o = ord(ch)
    return 0x3041 <= o <= 0x309F or 0x30A0 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF


_DASH_RE = re.compile("[" + re.escape("".join(sorted(DASHES))) + "]")


def _fold_dashes(text: str) -> str:
    if not _DASH_RE.search(text):
        return _CHOONPU_RUN.sub(CHOONPU, text) if CHOONPU * 2 in text else text
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch in DASHES and out and is_kana(out[-1]) and out[-1] != "\u30fb":
            nxt = text[i + 1] if i + 1 < n else ""
            # A hyphen between a kana word and an ASCII code is a separator (ネジ-M3), not a long vowel.
            if not (nxt.isascii() and nxt.isalnum()):
                ch = CHOONPU
        out.append(ch)
    return _CHOONPU_RUN.sub(CHOONPU, "".join(out))


def _fix_spaces(text: str) -> str:
    text = _WS.sub(" ", text).strip()
    if " " not in text:
        return text
    parts = text.split(" ")
    out = parts[0]
    for part in parts[1:]:
        # Keep the space only when one side is ASCII (foreign matter, PCB 基板); 寸法 不良 -> 寸法不良.
        if out and part and not out[-1].isascii() and not part[0].isascii():
            out += part
        else:
            out += " " + part
    return out


# The one notion of "invisible" (issue 21 F9): Unicode's Default_Ignorable_Code_Point set (DerivedCoreProperties:
# soft hyphen, combining grapheme joiner U+034F, Hangul fillers U+115F/U+1160/U+3164/U+FFA0, Mongolian
# and other variation selectors U+180B–U+180F, U+FE00–U+FE0F, U+E0100–U+E01EF, zero-width and bidi
# controls, tags, …), every other format character (category Cf), and the braille blank U+2800, which
# renders as nothing although Unicode does not call it ignorable.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]")


def is_invisible(ch: str) -> bool:
    """True for a character that shows nothing by itself (see ``_IGNORABLE``). A lone surrogate
    (category Cs: a byte of a non-UTF-8 file name that Python escaped) is not text at all and counts
    too, so a look-up never hands one to the tokenizer (core.inputs refuses them in stored text)."""
    return bool(_IGNORABLE.match(ch)) or unicodedata.category(ch) in ("Cf", "Cs")


def strip_invisible(text: str) -> str:
    """Remove what shows nothing: default-ignorable code points and format characters (zero-width
    spaces/joiners, BOM, soft hyphen, bidi embeddings/overrides/isolates, U+034F, variation selectors,
    Hangul fillers, the braille blank) and combining marks with no base character to sit on (at the start
    or after a space). They change neither how a term reads nor what it means, but they make
    ``キ\u200dズ`` differ from ``キズ``, let ``abc\u202edef`` display as "abcfed", and let a name made of
    nothing but U+3164 look like a name. Every comparison and validation of names goes through here
    (``normalize_chars``, ``core.inputs``)."""
    if not text or text.isascii():
        return text
    out: list[str] = []
    for ch in text:
        if is_invisible(ch):
            continue
        if unicodedata.category(ch).startswith("M") and (not out or out[-1].isspace()):
            continue
        out.append(ch)
    return "".join(out)


def normalize_chars(text: str) -> str:
    """Spec §3.1 step 2: invisible characters removed, NFKC, dash→ー after kana (then collapse ーー),
    whitespace clean-up.

    Case is preserved (morphological analysis must see ``M3``, not ``m3``). Tildes are untouched.
    """
    if not text:
        return ""
    text = strip_invisible(unicodedata.normalize("NFKC", strip_invisible(text)))  # NFKC may make fillers
    text = _fold_dashes(text)
    return _fix_spaces(text)


def basic_key(text: str) -> str:
    """Spec §3.1 step 3: ``normalize_chars`` + casefold. Use only as a key, never for display."""
    return normalize_chars(text).casefold()


_HIRA2KATA = {o: o + 0x60 for o in range(0x3041, 0x3097)} | {0x309D: 0x30FD, 0x309E: 0x30FE}


def hira2kata(text: str) -> str:
    """Hiragana → katakana (ぁ–ゖ, ゝ ゞ); everything else unchanged."""
    return text.translate(_HIRA2KATA)


def kana_key(text: str) -> str:
    """Spec §3.1 step 4: basic key with hiragana folded to katakana (ねじ = ネジ)."""
    return hira2kata(basic_key(text))


def is_kana_only(text: str) -> bool:
    """True when the normalised text is non-empty and consists only of kana (and ー)."""
    norm = normalize_chars(text)
    return bool(norm) and all(is_kana(ch) for ch in norm)


_EN_SEP = re.compile(r"[\s\-_/]+")


def _en_singular(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def english_key(text: str) -> str:
    """A light English 'lemma': casefold, hyphens/underscores as spaces, plural -s stripped.

    English never goes through MeCab (spec §3.2: ``scratch`` is UNK there).
    """
    words = _EN_SEP.split(basic_key(text))
    return " ".join(_en_singular(w) for w in words if w)
