#!/usr/bin/env python
"""Precision and recall of the JMdict bridge (core/dictionary.py) on hand-labelled word pairs.

    .venv/bin/python scripts/measure_dictionary.py            # totals and the wrong calls
    .venv/bin/python scripts/measure_dictionary.py --all      # every pair

``scripts/glossary_probes/dictionary_pairs.csv``: ``a, b, same`` (1 = a reviewer should be told the
two labels may be one thing: a translation, a kana reading, a synonym; 0 = different things,
including the nonsense suggestions new users saw). A pair is *linked* when ``core.dictionary.link``
relates the two names (as labels without glossary entries, so only the dictionary speaks).
Exit status 1 when the dictionary is not installed.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import dictionary  # noqa: E402

PAIRS = Path(__file__).resolve().parent / "glossary_probes" / "dictionary_pairs.csv"


def evaluate(path: Path = PAIRS) -> dict:
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {"pairs": len(rows), "tp": 0, "fp": 0, "fn": 0, "tn": 0, "rows": []}
    for row in rows:
        found = dictionary.link(dictionary.profile(row["a"]), dictionary.profile(row["b"]))
        same = row["same"].strip() == "1"
        cell = ("tp" if found else "fn") if same else ("fp" if found else "tn")
        out[cell] += 1
        out["rows"].append({**row, "linked": found, "outcome": cell})
    linked = out["tp"] + out["fp"]
    out["precision"] = out["tp"] / linked if linked else float("nan")
    out["recall"] = out["tp"] / (out["tp"] + out["fn"]) if out["tp"] + out["fn"] else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=str(PAIRS))
    ap.add_argument("--all", action="store_true", help="print every pair, not only the wrong calls")
    args = ap.parse_args(argv)
    if not dictionary.available():
        print(f"JMdict not available: {dictionary.unavailable_reason()}")
        return 1
    t0 = time.perf_counter()
    res = evaluate(Path(args.pairs))
    ms = (time.perf_counter() - t0) * 1000 / max(res["pairs"], 1)
    for row in res["rows"]:
        if args.all or row["outcome"] in ("fp", "fn"):
            print(f"{row['outcome']}  {row['a']} / {row['b']}  linked={row['linked']}  ({row['note']})")
    positives = res["tp"] + res["fn"]
    print(f"pairs: {res['pairs']} ({positives} same, {res['pairs'] - positives} different); "
          f"linked {res['tp'] + res['fp']}: correct {res['tp']}, wrong {res['fp']}; missed {res['fn']}")
    print(f"precision {res['precision']:.3f}, recall {res['recall']:.3f}; {ms:.1f} ms per pair (cold cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
