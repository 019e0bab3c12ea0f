"""Example neighbour lists under e5 on the starter glossary, so a reader can judge quality.

Every starter-glossary entry becomes an approved label under its canonical (Japanese) term, and its
English gloss becomes a second, English label, so one list mixes both languages. Queries are label
ids and free text, in Japanese and English. The near-duplicate verdict is printed for each query,
and so are the labels the dictionary (JMdict, core/dictionary.py) links it to: what the embedding
misses (くるま next to 自動車, car next to its Japanese term).

    .venv/bin/python scripts/neighbour_examples.py [--k 6]
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import dictionary  # noqa: E402
from core.encoders import load_encoder  # noqa: E402
from core.neighbours import near_duplicates, neighbours  # noqa: E402
from core.store import Store, now_iso  # noqa: E402

STARTER = Path(__file__).resolve().parents[1] / "glossary" / "data" / "starter_glossary.csv"
QUERIES = ["傷", "ねじ", "へこみ", "スクラッチ", "corrosion", "cogwheel", "はんだ付け不良", "くるま", "car", "cat"]
# Everyday labels next to the inspection terms, so くるま / car / cat have a right answer to find.
EXTRA = ["自動車", "猫", "トラック", "飛行機"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=6)
    args = ap.parse_args()
    store = Store(tempfile.mkdtemp(prefix="sgcl-examples-"))
    with STARTER.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ids = {}
    with store.transaction():
        for row in rows:
            store.db["glossary_entries"].insert({k: row[k] for k in ("id", "canonical", "reading", "en", "embed_text")})
            ids[row["canonical"]] = store.db["labels"].insert({
                "name": row["canonical"], "name_key": row["canonical"], "lang": "ja", "entry_id": row["id"],
                "status": "approved", "created_by": "examples", "created_at": now_iso()}).last_pk
            if row["en"]:
                store.db["labels"].insert({"name": row["en"], "name_key": row["en"].casefold(), "lang": "en",
                                           "status": "approved", "created_by": "examples", "created_at": now_iso()})
        for name in EXTRA:
            store.db["labels"].insert({"name": name, "name_key": name, "lang": "ja", "status": "approved",
                                       "created_by": "examples", "created_at": now_iso()})
    enc = load_encoder("e5")
    n = store.query_one("SELECT COUNT(*) AS n FROM labels")["n"]
    print(f"encoder {enc.version}; {n} approved labels ({len(rows)} canonical JA + their EN glosses)\n")
    for query in QUERIES:
        target = ids.get(query, query)  # an existing label → query by id (itself excluded)
        kind = f"label #{target}" if isinstance(target, int) else "free text"
        found = neighbours(store, enc, target, k=args.k)
        report = near_duplicates(store, enc, target)
        print(f"{query}  ({kind}); near-duplicate: {report.flag} "
              f"(closest {report.nearest.name} {report.score:.3f}, threshold {report.threshold})")
        for nb in found:
            canon = f" [{nb.canonical}]" if nb.canonical != nb.name else ""
            print(f"   {nb.rank}. {nb.name}{canon}  {nb.score:.3f}")
        for link in dictionary.label_links(store, target):
            print(f"   dictionary: {link.name} ({link.kind}: {', '.join(link.evidence)})")
        print()


if __name__ == "__main__":
    main()
