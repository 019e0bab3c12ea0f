"""Calibrate the near-duplicate warning per text encoder on measured pairs (issue 21 point 2).

Known duplicates are pairs of *different* words for one thing that a glossary entry lists: its
Japanese term and its English gloss (傷 / scratch), its Japanese synonyms read differently
(亀裂 / ひび割れ, 異物 / コンタミ) and its English aliases against the Japanese term (打痕 / ding).
Unrelated pairs are the terms of two different entries, in every script combination (亀裂 / 錆,
crack / rust, 亀裂 / rust), including the pairs the glossary keeps apart on purpose (傷 / 擦り傷).

For each encoder and script pair (ja–ja, en–en, ja–en) the threshold is the lowest cosine that at
most ``MAX_FALSE_ALARMS`` of the unrelated pairs reach; the script prints it with the share of known
duplicates it catches. core/neighbours.py holds the thresholds printed here.

    .venv/bin/python scripts/near_duplicate_calibration.py [--encoders e5 use-m3]
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from glossary import Glossary  # noqa: E402
from glossary.analyzer import reading_key  # noqa: E402
from glossary.normalize import kana_key  # noqa: E402

MAX_FALSE_ALARMS = 0.005      # at most 0.5 % of unrelated pairs may be flagged


def script_of(text: str) -> str:
    return "en" if text.isascii() else "ja"


def pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    g = Glossary.starter()
    entries = [e for e in g.entries if e.status != "deprecated"]
    dup: list[tuple[str, str]] = []
    for e in entries:
        if e.en:
            dup.append((e.canonical, e.en))
        canon_reading = kana_key(e.reading or reading_key(e.canonical))
        for alias in e.aliases:
            if alias.isascii():
                if alias.casefold() != (e.en or "").casefold() and len(alias) > 3:
                    dup.append((e.canonical, alias))
                    if e.en and alias.casefold().rstrip("s") != e.en.casefold().rstrip("s"):
                        dup.append((e.en, alias))     # English synonyms (dent / depression)
            elif kana_key(reading_key(alias)) != canon_reading and kana_key(alias) != canon_reading:
                dup.append((e.canonical, alias))      # another word, not another spelling
    unrelated: list[tuple[str, str]] = []
    for a, b in itertools.combinations(entries, 2):
        unrelated.append((a.canonical, b.canonical))
        if a.en and b.en:
            unrelated.append((a.en, b.en))
        if b.en:
            unrelated.append((a.canonical, b.en))
        if a.en:
            unrelated.append((a.en, b.canonical))
    return sorted(set(dup)), sorted(set(unrelated))


def kind(a: str, b: str) -> str:
    sa, sb = script_of(a), script_of(b)
    return sa if sa == sb else "ja-en"


def calibrate(spec: str, dup, unrelated) -> dict:
    from core.encoders import TEXT_TOWERS

    tower = TEXT_TOWERS[spec].load()
    texts = sorted({t for p in dup + unrelated for t in p})
    vec = torch.nn.functional.normalize(tower.encode(texts).float(), dim=1)
    pos = {t: i for i, t in enumerate(texts)}

    def cos(a, b):
        return float(vec[pos[a]] @ vec[pos[b]])

    out = {"version": tower.version, "kinds": {}}
    for k in ("ja", "en", "ja-en"):
        d = sorted((cos(a, b) for a, b in dup if kind(a, b) == k), reverse=True)
        u = sorted((cos(a, b) for a, b in unrelated if kind(a, b) == k), reverse=True)
        allowed = int(MAX_FALSE_ALARMS * len(u))
        threshold = u[allowed] + 1e-4 if u else 1.0       # above all but `allowed` unrelated pairs
        caught = sum(x >= threshold for x in d)
        out["kinds"][k] = {"threshold": round(threshold, 4), "dup": len(d), "caught": caught,
                           "unrelated": len(u), "false_alarms": sum(x >= threshold for x in u),
                           "dup_median": round(d[len(d) // 2], 3) if d else None,
                           "unrelated_median": round(u[len(u) // 2], 3) if u else None}
    if SHOW:
        for k in ("ja", "en", "ja-en"):
            t = out["kinds"][k]["threshold"]
            caught = [(a, b, round(cos(a, b), 3)) for a, b in dup if kind(a, b) == k and cos(a, b) >= t]
            alarms = [(a, b, round(cos(a, b), 3)) for a, b in unrelated if kind(a, b) == k and cos(a, b) >= t]
            print(k, "caught e.g.", caught[:12], "\n   false alarms:", alarms[:12])
    return out


SHOW = "--show" in sys.argv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="*", default=["e5", "use-m3"])
    ap.add_argument("--show", action="store_true", help="print the caught pairs and the false alarms")
    args = ap.parse_args()
    dup, unrelated = pairs()
    print(f"{len(dup)} known-duplicate pairs, {len(unrelated)} unrelated pairs (starter glossary)")
    for spec in args.encoders:
        res = calibrate(spec, dup, unrelated)
        print(f"\n{spec} ({res['version']})")
        print("kind    threshold  duplicates caught   false alarms        medians dup / unrelated")
        for k, r in res["kinds"].items():
            print(f"{k:7} {r['threshold']:9.4f}  {r['caught']:3}/{r['dup']:<3} ({r['caught'] / max(r['dup'], 1):5.1%})"
                  f"   {r['false_alarms']:4}/{r['unrelated']:<5}     {r['dup_median']} / {r['unrelated_median']}")


if __name__ == "__main__":
    main()
