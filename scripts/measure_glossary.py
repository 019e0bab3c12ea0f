#!/usr/bin/env python
"""Measure the tiered lookup of the starter glossary on spelling variants and must-not-match probes.

    python scripts/measure_glossary.py            # table + totals
    python scripts/measure_glossary.py --quiet    # totals only
    python scripts/measure_glossary.py --json out.json
    python scripts/measure_glossary.py --lean     # aliases and literal distinct_from forms removed:
                                                  # what the normalisation tiers achieve on their own

Each case is (query, expected entry id or "none", what it exercises). Outcomes:

* ``auto-correct``: applied automatically to the expected entry;
* ``suggest-correct``: not automatic, but the expected entry is among the suggestions;
* ``miss``: neither (for a "none" probe: correctly left unmatched, counted as ``none-ok``);
* ``wrong``: applied automatically to another entry (for a "none" probe: applied at all).

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

OUTCOMES = ("auto-correct", "suggest-correct", "miss", "wrong", "none-ok")


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
    for tier in ("exact", "basic", "kana", "lemma", "reading", "reading~", "contains", "none"):
        if per_tier.get(tier):
            print(f"  {tier:<9} " + ", ".join(f"{o} {n}" for o, n in sorted(per_tier[tier].items())))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "totals": dict(totals)}, ensure_ascii=False,
                                              indent=1), encoding="utf-8")
    return 1 if totals.get("wrong") else 0


if __name__ == "__main__":
    sys.exit(main())
