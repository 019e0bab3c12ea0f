"""Japanese/English term normalisation and tiered glossary lookup (spec/japanese-normalization.md §3).

Pure text: depends on fugashi + unidic-lite only; no torch, no Streamlit, no SQLite.

    from glossary import Glossary, starter_path
    g = Glossary.from_csv(starter_path())
    r = g.lookup("ｻﾋﾞ")          # r.auto, r.entry_id == "defect.rust", r.tier == "basic"/"kana"/…
    g.lint()                      # keys shared by two or more entries
"""
from __future__ import annotations

from .csvio import starter_path
from .lookup import Glossary, replace_entry
from .model import (AUTO_TIERS, STATUSES, TIERS, Collision, GlossaryCSVError, GlossaryEntry, GlossaryError,
                    LookupResult, Suggestion)
from .normalize import basic_key, english_key, is_kana_only, kana_key, normalize_chars, strip_invisible

__all__ = [
    "Glossary", "GlossaryEntry", "LookupResult", "Suggestion", "Collision", "GlossaryError",
    "GlossaryCSVError", "normalize_chars", "strip_invisible", "basic_key", "kana_key", "english_key", "is_kana_only",
    "starter_path", "TIERS", "AUTO_TIERS", "STATUSES", "replace_entry",
]

