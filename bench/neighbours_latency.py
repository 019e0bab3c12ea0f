"""Neighbour-query latency with 10,000 labels once the in-memory index is warm.

Labels are synthetic ("部品-00042", "part 00042 …"). The first ``--real`` of them are embedded with
e5 through the normal cache; the rest get random unit vectors written straight into the embedding
cache under the e5 version (embedding 10k texts with e5 takes ~80 s on 2 cores and does not change
the query cost, which is one (n × 384) matrix-vector product + top-k).

    .venv/bin/python bench/neighbours_latency.py [--labels 10000] [--real 300] [--queries 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.embeddings import embed_texts  # noqa: E402
from core.encoders import load_encoder  # noqa: E402
from core.neighbours import label_index, neighbours  # noqa: E402
from core.store import Store, now_iso  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=10_000)
    ap.add_argument("--real", type=int, default=300)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    store = Store(tempfile.mkdtemp(prefix="sgcl-bench-"))
    enc = load_encoder("e5")
    words = ["部品", "ねじ", "傷", "part", "bolt", "scratch", "基板", "connector"]
    names = [f"{words[i % len(words)]}-{i:05d}" for i in range(args.labels)]
    now = now_iso()
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO labels (name, name_key, lang, status, created_by, created_at) VALUES (?,?,?,?,?,?)",
            [(n, n, "ja", "approved" if i % 3 else "proposed", "bench", now) for i, n in enumerate(names)])
    t0 = time.perf_counter()
    embed_texts(store, enc, names[:args.real])
    t_real = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    fake = rng.standard_normal((args.labels - args.real, enc.dim)).astype(np.float32)
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    with store.transaction():
        store.conn.executemany("INSERT INTO embeddings (encoder, text, dim, vector) VALUES (?,?,?,?)",
                               [(enc.version, f"name:{n}", enc.dim, v.tobytes())
                                for n, v in zip(names[args.real:], fake)])
    t0 = time.perf_counter()
    label_index(store, enc)
    t_index = time.perf_counter() - t0

    ids = [int(r["id"]) for r in store.query("SELECT id FROM labels")]
    by_id, by_text = [], []
    for q in range(args.queries):
        t0 = time.perf_counter()
        neighbours(store, enc, ids[(q * 7919) % len(ids)], k=10)
        by_id.append((time.perf_counter() - t0) * 1000)
    texts = [f"query {q}" for q in range(args.queries)]
    embed_texts(store, enc, texts)  # warm the text cache: measure lookup, not e5 (~8 ms/text)
    for text in texts:
        t0 = time.perf_counter()
        neighbours(store, enc, text, k=10)
        by_text.append((time.perf_counter() - t0) * 1000)

    def pct(xs, p):
        return float(np.percentile(xs, p))

    print(f"labels={args.labels} (e5-embedded {args.real} in {t_real:.1f}s, rest random unit vectors), dim={enc.dim}")
    print(f"index build from the SQLite cache: {t_index * 1000:.0f} ms")
    print(f"query by label id  : p50 {pct(by_id, 50):.2f} ms  p95 {pct(by_id, 95):.2f} ms  (n={len(by_id)})")
    print(f"query by free text : p50 {pct(by_text, 50):.2f} ms  p95 {pct(by_text, 95):.2f} ms  (cached text)")
    print(f"mean {statistics.mean(by_id + by_text):.2f} ms")


if __name__ == "__main__":
    main()
