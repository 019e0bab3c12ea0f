#!/usr/bin/env python
"""Measure the tiered lookup of the starter glossary on spelling variants and must-not-match probes,
on typos, and on everyday words that must get no suggestion at all.

    python scripts/measure_glossary.py            # table + totals
    python scripts/measure_glossary.py --quiet    # totals only
    python scripts/measure_glossary.py --json out.json
    python scripts/measure_glossary.py --lean     # aliases and literal distinct_from forms removed:
                                                  # what the normalisation tiers achieve on their own
    python scripts/measure_glossary.py --sweep    # how the typo limits (and the old character-overlap
                                                  # ratio) trade typo recall against false suggestions

Each case is (query, expected entry id or "none", what it exercises). Outcomes:

* ``auto-correct``: applied automatically to the expected entry;
* ``suggest-correct``: not automatic, but the expected entry is among the suggestions;
* ``miss``: neither (for a "none" probe: correctly left unmatched, counted as ``none-ok``);
* ``wrong``: applied automatically to another entry (for a "none" probe: applied at all).

Unrelated words (``scripts/glossary_probes/unrelated_words.txt``, everyday Japanese and English words
that share no meaning with the starter glossary): every word that gets *any* suggestion (or an
automatic match) is a false suggestion. Typos (``TYPO_CASES``): found when the intended entry is
among the suggestions.

Exit status 1 when any case is ``wrong``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glossary import Glossary, replace_entry, starter_path  # noqa: E402

CASES: list[tuple[str, str, str]] = [
    # width (half-width kana, full-width ASCII)
    ("ｷｽﾞ", "defect.scratch", "half-width"),
    ("ﾊﾞﾘ", "defect.burr", "half-width"),
    ("ﾈｼﾞ", "part.screw", "half-width"),
    ("ﾍｺﾐ", "defect.dent", "half-width"),
    ("ＰＣＢ", "part.pcb", "full-width ASCII"),
    ("Ｏリング", "part.o_ring", "full-width ASCII"),
    # long vowel / dash variants
    ("ショ−トショット", "defect.short_shot", "U+2212 as long vowel"),
    ("シルバ－", "defect.silver_streak", "U+FF0D as long vowel"),
    ("ワッシャ―", "part.washer", "U+2015 as long vowel"),
    ("コネクタ－", "part.connector", "U+FF0D as long vowel"),
    ("フロ-マ-ク", "defect.flow_mark", "ASCII hyphen as long vowel"),
    ("ウェルド・ライン", "defect.weld_line", "middle dot"),
    # kana (hiragana / katakana)
    ("きず", "defect.scratch", "hiragana"),
    ("キズ", "defect.scratch", "katakana"),
    ("サビ", "defect.rust", "katakana"),
    ("さび", "defect.rust", "hiragana"),
    ("ねじ", "part.screw", "canonical"),
    ("ネジ", "part.screw", "katakana"),
    ("へこみ", "defect.dent", "hiragana"),
    ("すんぽうふりょう", "defect.dimension", "reading, kana-only"),
    ("いぶつ", "defect.foreign_matter", "reading, mis-segmented kana"),
    ("キレツ", "defect.crack", "reading, symbols in UniDic"),
    ("スリキズ", "defect.scuff", "掏摸+傷 in UniDic"),
    ("かけ", "defect.chip", "homograph kana"),
    ("ワレ", "defect.breakage", "UniDic: 我"),
    ("むら", "defect.unevenness", "UniDic: 村"),
    ("そり", "defect.warpage", "UniDic: 橇"),
    ("ゆがみ", "defect.warp", "same lemma as ひずみ"),
    ("ひずみ", "defect.strain", "same lemma as ゆがみ"),
    ("ヒズミ", "defect.strain", "katakana"),
    ("だこん", "defect.impact_mark", "hiragana"),
    ("ぎや", "part.gear", "reading, hiragana"),
    # okurigana / kanji variants / 異体字 (lemma tier)
    ("錆び", "defect.rust", "okurigana"),
    ("銹", "defect.rust", "異体字"),
    ("疵", "defect.scratch", "kanji variant"),
    ("擦傷", "defect.scuff", "okurigana dropped"),
    ("擦りきず", "defect.scuff", "kanji+kana"),
    ("き裂", "defect.crack", "kanji/kana mix"),
    ("剝がれ", "defect.peeling", "異体字 剝"),
    ("剥れ", "defect.peeling", "okurigana dropped"),
    ("軸受け", "part.bearing", "okurigana"),
    ("螺子", "part.screw", "kanji spelling"),
    ("発条", "part.spring", "kanji spelling"),
    ("ギヤ", "part.gear", "loanword variant"),
    ("コンデンサー", "part.capacitor", "long vowel loanword"),
    ("ワッシャ", "part.washer", "long vowel dropped"),
    ("引け", "defect.sink_mark", "kanji spelling"),
    ("寸法　不良", "defect.dimension", "full-width space"),
    ("寸法ズレ", "defect.dimension", "kana in compound"),
    ("半田不良", "defect.solder", "kanji spelling"),
    ("ハンダ不良", "defect.solder", "katakana spelling"),
    ("色むら", "defect.unevenness", "compound"),
    ("歪み", "defect.warp", "kanji canonical"),
    # English
    ("scratch", "defect.scratch", "English"),
    ("Scratches", "defect.scratch", "English plural/case"),
    ("Rust", "defect.rust", "English case"),
    ("foreign  matter", "defect.foreign_matter", "English, extra space"),
    ("O-ring", "part.o_ring", "English with hyphen"),
    ("o rings", "part.o_ring", "English plural"),
    # containment (suggestions only)
    ("ボス部の打痕", "defect.impact_mark", "containment"),
    ("ネジ部のサビ", "defect.rust", "containment, two terms"),
    ("スリキズ多数", "defect.scuff", "containment via user dictionary"),
    ("ワレ（小）", "defect.breakage", "containment with brackets"),
    ("基板の汚れ", "defect.dirt", "containment"),
    ("rust spot", "defect.rust", "English containment"),
    # new terms: fuzzy suggestions
    ("スリキス", "defect.scuff", "typo"),
    ("ピンホ-ル不良", "defect.pinhole", "new compound"),
    # must not match automatically
    ("掛け", "none", "homophone of 欠け"),
    ("賭け", "none", "homophone of 欠け"),
    ("遺物", "none", "homophone of 異物"),
    ("我", "none", "homophone of 割れ"),
    ("村", "none", "UniDic lemma of ムラ"),
    ("寂", "none", "homophone of 錆"),
    ("バリア", "none", "contains バリ"),
    ("ヒゲ", "none", "one dakuten from ヒケ"),
    ("キス", "none", "one dakuten from キズ"),
    ("ショート", "none", "short circuit, not short shot"),
    ("異音", "none", "not in the glossary"),
    ("M3", "none", "a size, not a term"),
]

# Typos people make (a dropped or swapped letter; a missing voicing mark, small kana typed large).
TYPO_CASES: list[tuple[str, str]] = [
    ("scrach", "defect.scratch"), ("scratc", "defect.scratch"), ("crakc", "defect.crack"),
    ("conector", "part.connector"), ("bearng", "part.bearing"), ("gaskat", "part.gasket"),
    ("capacitr", "part.capacitor"), ("resistr", "part.resistor"), ("brakcet", "part.bracket"),
    ("harnes", "part.harness"), ("washr", "part.washer"), ("fingerprnt", "defect.fingerprint"),
    ("misalignmnet", "defect.misalignment"), ("delamintion", "defect.peeling"), ("pinhol", "defect.pinhole"),
    ("blowhol", "defect.void"), ("scuf", "defect.scuff"), ("rivit", "part.rivet"),
    ("スリキス", "defect.scuff"), ("ベアリンク", "part.bearing"), ("ガスケツト", "part.gasket"),
    ("シヤフト", "part.shaft"), ("リヘット", "part.rivet"), ("フラケット", "part.bracket"),
    ("コンテンサ", "part.capacitor"), ("ボルド", "part.bolt"),
    ("ナツト", "part.nut"), ("フローマーグ", "defect.flow_mark"), ("ショートショツト", "defect.short_shot"),
    ("ヒユーズ", "part.fuse"), ("ワツシャー", "part.washer"),
]
PROBES_PATH = Path(__file__).resolve().parent / "glossary_probes" / "unrelated_words.txt"

OUTCOMES = ("auto-correct", "suggest-correct", "miss", "wrong", "none-ok")


def unrelated_words(path: Path = PROBES_PATH) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def probe_report(g, words: list[str]) -> dict:
    """Which unrelated words get a suggestion (or worse, an automatic match), by tier."""
    hits = {}
    for word in words:
        r = g.lookup(word)
        if r.auto:
            hits[word] = [f"auto:{r.entry_id}"]
        elif r.suggestions:
            hits[word] = [f"{s.tier}:{s.canonical}" for s in r.suggestions]
    by_tier = Counter(item.split(":", 1)[0] for items in hits.values() for item in items[:1])
    return {"words": len(words), "with_suggestion": len(hits), "by_tier": dict(by_tier), "hits": hits}


def _typo_found(result, eid: str) -> bool:
    # the analyser already folds some typos (ガスケツト → ガスケット by lemma): an automatic match counts
    return result.entry_id == eid if result.auto else eid in {s.entry_id for s in result.suggestions}


def typo_report(g) -> dict:
    found = [q for q, eid in TYPO_CASES if _typo_found(g.lookup(q), eid)]
    return {"cases": len(TYPO_CASES), "found": len(found), "missed": [q for q, _ in TYPO_CASES if q not in found]}


def sweep(g, words: list[str]) -> None:
    """Typo recall vs false suggestions on the unrelated words, for the typo limits and, for
    comparison, for the character-overlap ratio (difflib) the lookup used to rank suggestions by."""
    from difflib import SequenceMatcher

    from glossary import typo
    from glossary.normalize import kana_key

    print("typo limits (glossary/typo.py): typo cases found / unrelated words with a typo suggestion")
    saved = (typo.EN_MIN_LEN, typo.KANA_MIN_LEN)
    try:
        for en_min in (4, 5, 6):
            for kana_min in (2, 3, 4):
                typo.EN_MIN_LEN, typo.KANA_MIN_LEN = en_min, kana_min
                found = typo_report(g)["found"]
                false = sum(1 for w in words if any(s.tier == "typo" for s in g.lookup(w).suggestions))
                mark = "  <- used" if (en_min, kana_min) == saved else ""
                print(f"  EN_MIN_LEN {en_min}, KANA_MIN_LEN {kana_min}: typos {found}/{len(TYPO_CASES)}, "
                      f"false {false}/{len(words)}{mark}")
    finally:
        typo.EN_MIN_LEN, typo.KANA_MIN_LEN = saved

    forms = [(e.id, kana_key(f)) for e in g.entries for f in [*e.forms, e.reading] if f]

    def best(query: str) -> dict[str, float]:
        q = kana_key(query)
        out: dict[str, float] = {}
        for eid, fk in forms:
            r = SequenceMatcher(None, q, fk, autojunk=False).ratio()
            out[eid] = max(out.get(eid, 0.0), r)
        return out

    typo_scores = [(best(q), eid) for q, eid in TYPO_CASES]
    word_scores = [best(w) for w in words]
    print("character-overlap ratio (the old fuzzy rule): typo cases found / unrelated words with a suggestion")
    for threshold in (0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        found = sum(1 for scores, eid in typo_scores if scores.get(eid, 0) >= threshold)
        false = sum(1 for scores in word_scores if max(scores.values()) >= threshold)
        print(f"  ratio >= {threshold:.2f}: typos {found}/{len(typo_scores)}, false {false}/{len(words)}")


def classify(result, expected: str) -> str:
    if expected == "none":
        return "wrong" if result.auto else "none-ok"
    if result.auto:
        return "auto-correct" if result.entry_id == expected else "wrong"
    if expected in {s.entry_id for s in result.suggestions} or expected in result.ambiguous:
        return "suggest-correct"
    return "miss"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glossary", default=str(starter_path()), help="glossary CSV (default: the starter)")
    ap.add_argument("--quiet", action="store_true", help="print totals only")
    ap.add_argument("--json", help="also write the per-case results to this file")
    ap.add_argument("--lean", action="store_true",
                    help="drop every alias and every distinct_from item that is not an entry id")
    ap.add_argument("--sweep", action="store_true", help="print the typo-limit and overlap-ratio sweeps")
    ap.add_argument("--probes", default=str(PROBES_PATH), help="unrelated words, one per line")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    g = Glossary.from_csv(args.glossary)
    build_ms = (time.perf_counter() - t0) * 1000
    if args.lean:
        g = Glossary(replace_entry(e, aliases=[], distinct_from=[d for d in e.distinct_from if d in g])
                     for e in g.entries)
    collisions = g.lint()

    rows = []
    t0 = time.perf_counter()
    for query, expected, note in CASES:
        r = g.lookup(query)
        outcome = classify(r, expected)
        got = r.entry_id if r.auto else ",".join(s.entry_id for s in r.suggestions[:3]) or "-"
        rows.append({"query": query, "expected": expected, "tier": r.tier, "auto": r.auto, "got": got,
                     "outcome": outcome, "note": note})
    lookup_ms = (time.perf_counter() - t0) * 1000 / len(CASES)

    if not args.quiet:
        print(f"{'query':<16} {'expected':<22} {'tier':<9} {'auto':<5} {'outcome':<16} got")
        for row in rows:
            print(f"{row['query']:<16} {row['expected']:<22} {row['tier']:<9} {str(row['auto']):<5} "
                  f"{row['outcome']:<16} {row['got']}")
        print()

    totals = Counter(row["outcome"] for row in rows)
    per_tier: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        per_tier[row["tier"]][row["outcome"]] += 1
    positives = sum(1 for _, e, _ in CASES if e != "none")
    lean = " (lean: no aliases)" if args.lean else ""
    print(f"glossary: {len(g)} entries{lean}, {len(collisions)} lint collisions, built in {build_ms:.1f} ms "
          f"(includes the first tagger start); lookup {lookup_ms:.2f} ms/query")
    print(f"cases: {len(CASES)} ({positives} variants, {len(CASES) - positives} must-not-match probes)")
    print("totals: " + ", ".join(f"{o} {totals.get(o, 0)}" for o in OUTCOMES))
    print("per tier:")
    for tier in ("exact", "basic", "kana", "lemma", "reading", "reading~", "contains", "typo", "none"):
        if per_tier.get(tier):
            print(f"  {tier:<9} " + ", ".join(f"{o} {n}" for o, n in sorted(per_tier[tier].items())))
    words = unrelated_words(Path(args.probes))
    probes = probe_report(g, words)
    typos = typo_report(g)
    print(f"unrelated words: {probes['words']}, with a suggestion {probes['with_suggestion']}"
          + (f" ({', '.join(f'{t} {n}' for t, n in sorted(probes['by_tier'].items()))})" if probes['hits'] else ""))
    for word, items in probes["hits"].items():
        print(f"  {word}: {', '.join(items)}")
    print(f"typos: {typos['cases']}, intended entry suggested {typos['found']}"
          + (f" (missed: {', '.join(typos['missed'])})" if typos["missed"] else ""))
    if args.sweep:
        sweep(g, words)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "totals": dict(totals), "unrelated": probes,
                                               "typos": typos}, ensure_ascii=False, indent=1), encoding="utf-8")
    return 1 if totals.get("wrong") else 0


if __name__ == "__main__":
    sys.exit(main())
