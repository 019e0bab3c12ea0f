"""Glossary and dictionary speeds that the tests no longer assert (a shared machine makes timed tests
flaky; tests check the behaviour — one batched dictionary query, a cache hit — and this prints times).

* building a Glossary of 200 entries (the starter glossary four times over with prefixed terms, as
  tests/test_glossary.py builds it), after the tagger has started: min / median of ``--repeat``;
* the JMdict look-ups of a first review: ``dictionary.label_links`` of one name against 100 approved
  labels, cold (caches cleared) and warm, min / median of ``--repeat``;
* 30 ``dictionary.words`` calls from 30 threads, cold, and the same 30 calls warm.

    .venv/bin/python bench/glossary_speed.py [--repeat 5]

Targets (what the removed assertions said): build < 50 ms, cold label links < 0.5 s, 30 threaded
cold look-ups < 2 s, 30 warm look-ups < 10 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import dictionary, labels  # noqa: E402
from core.auth import Actor  # noqa: E402
from core.store import Store  # noqa: E402
from glossary import Glossary, starter_path  # noqa: E402


def two_hundred_entries():
    base = Glossary.from_csv(starter_path()).entries
    return [replace(e, id=f"{e.id}.{i}", canonical=p + e.canonical, aliases=[p + a for a in e.aliases],
                    distinct_from=[])
            for i, p in enumerate(["", "外観", "内部", "端部"]) for e in base][:200]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def line(name: str, seconds: list[float], target_ms: float | None = None) -> None:
    best, median = min(seconds) * 1000, statistics.median(seconds) * 1000
    goal = f"  (target < {target_ms:g} ms)" if target_ms else ""
    print(f"{name:<44} min {best:8.1f} ms   median {median:8.1f} ms{goal}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    entries = two_hundred_entries()
    Glossary(entries[:5]).lookup("錆")                # start the tagger outside the timing
    line("glossary build, 200 entries", [timed(lambda: Glossary(entries)) for _ in range(args.repeat)], 50)

    if not dictionary.available():
        print(f"dictionary: unavailable ({dictionary.unavailable_reason()})")
        return
    store = Store(Path(tempfile.mkdtemp(prefix="sgcl-bench-")) / "home")
    for i, name in enumerate(["自動車", "猫", "犬", "馬", "牛", "鳥", "魚", "船", "電車", "椅子"] * 10):
        store.db["labels"].insert({"name": f"{name}{i}", "name_key": f"{name}{i}", "lang": "ja",
                                   "status": "approved", "created_by": "bench", "created_at": "now"})
    labels.propose(store, Actor("eri", "expert"), "くるま", create_entry=True)
    dictionary.label_links(store, "くるま")             # open the JMdict database outside the timing
    cold, warm = [], []
    for _ in range(args.repeat):
        dictionary.clear_caches()
        cold.append(timed(lambda: dictionary.label_links(store, "くるま")))
        warm.append(timed(lambda: dictionary.label_links(store, "くるま")))
    line("label links, 100 labels, cold", cold, 500)
    line("label links, 100 labels, warm", warm)

    texts = ["自動車", "くるま", "猫", "犬", "飛行機", "錆", "傷", "汚れ", "馬", "船"] * 3
    threaded, cached = [], []
    for _ in range(args.repeat):
        dictionary.clear_caches()

        def threads():
            workers = [threading.Thread(target=dictionary.words, args=(t,)) for t in texts]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        threaded.append(timed(threads))
        cached.append(timed(lambda: [dictionary.words(t) for t in texts]))
    line("30 words() from 30 threads, cold", threaded, 2000)
    line("30 words(), warm", cached, 10)


if __name__ == "__main__":
    main()
