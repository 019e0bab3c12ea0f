"""The JMdict bridge (core/dictionary.py): readings and glosses for new terms, JA↔EN and kana↔kanji
links between labels as near-duplicate candidates, measured precision, speed, thread safety."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import dictionary, labels

ROOT = Path(__file__).resolve().parents[1]


def test_dictionary_is_installed_from_pypi():
    assert dictionary.available(), dictionary.unavailable_reason()
    assert "CC BY-SA" in dictionary.ATTRIBUTION and "edrdg.org" in dictionary.ATTRIBUTION


@pytest.mark.parametrize("term,reading,en", [
    ("自動車", "ジドウシャ", "car"), ("猫", "ネコ", "cat"), ("くるま", "クルマ", "car"),
    ("飛行機", "ヒコウキ", "aeroplane"), ("汚れ", "ヨゴレ", "dirt"),      # よごれ (common), not けがれ
])
def test_term_hint_gives_reading_and_gloss(term, reading, en):
    hint = dictionary.term_hint(term)
    assert (hint.reading, hint.en) == (reading, en) and hint.source.startswith("JMdict #")


@pytest.mark.parametrize("text", ["寸法不良ABC", "", "car", "100%_off", "id#1318400", "％"])
def test_term_hint_is_none_for_unknown_english_or_pattern_text(text):
    assert dictionary.term_hint(text) is None


@pytest.mark.parametrize("a,b,kind", [
    ("くるま", "車", "reading"), ("くるま", "自動車", "meaning"), ("car", "自動車", "meaning"),
    ("cat", "猫", "meaning"), ("Cat", "猫", "meaning"), ("deer", "鹿", "meaning"),
])
def test_links(a, b, kind):
    found = dictionary.link(dictionary.profile(a), dictionary.profile(b))
    assert found and found[0] == kind, found
    assert dictionary.link(dictionary.profile(b), dictionary.profile(a))[0] == kind   # symmetric


@pytest.mark.parametrize("a,b", [("飛行機", "浮き"), ("トラック", "亀裂"), ("ship", "欠け"), ("キリン", "基板"),
                                 ("ピンク", "ピン"), ("apple", "ケーブル"), ("deer", "コンデンサ"), ("Cat", "ボイド"),
                                 ("車", "wheel"), ("猫", "dog"), ("car", "cat"), ("scratch", "scratch")])
def test_no_link(a, b):
    assert dictionary.link(dictionary.profile(a), dictionary.profile(b)) is None


def test_kuruma_next_to_jidousha_and_english_labels_are_linked_for_review(store, expert, reviewer):
    car = labels.approve(store, reviewer, labels.propose(store, expert, "自動車", create_entry=True)["id"])
    cat = labels.approve(store, reviewer, labels.propose(store, expert, "猫", create_entry=True)["id"])
    labels.approve(store, reviewer, labels.propose(store, expert, "傷")["id"])
    kuruma = labels.propose(store, expert, "くるま", create_entry=True)
    found = dictionary.label_links(store, kuruma["id"])
    assert [(l.label_id, l.kind) for l in found] == [(car["id"], "meaning")]
    assert "car" in found[0].evidence and "自動車" in found[0].describe("ja")
    english = labels.propose(store, expert, "car", create_entry=True)
    assert [l.label_id for l in dictionary.label_links(store, english["id"])] == [car["id"], kuruma["id"]]
    assert [l.label_id for l in dictionary.label_links(store, "cat")] == [cat["id"]]    # a name being typed
    assert dictionary.label_links(store, "飛行機") == []


def test_distinct_from_entries_are_never_linked(store, expert, reviewer):
    # 傷 and 擦り傷 both gloss "scratch", but the starter glossary declares them distinct: the link
    # comes back only as a "distinct" note (never a merge candidate) that names the glossary's choice
    labels.approve(store, reviewer, labels.propose(store, expert, "傷")["id"])
    scuff = labels.propose(store, expert, "擦り傷")
    assert dictionary.link(dictionary.profile("傷"), dictionary.profile("擦り傷"))
    assert [l.kind for l in dictionary.label_links(store, scuff["id"])] == ["distinct"]


def test_measured_precision_on_the_pair_list():
    out = subprocess.run([sys.executable, "scripts/measure_dictionary.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    pairs = int(re.search(r"pairs: (\d+)", out.stdout).group(1))
    precision, recall = map(float, re.search(r"precision ([\d.]+), recall ([\d.]+)", out.stdout).groups())
    assert pairs >= 40 and precision >= 0.9 and recall >= 0.8, out.stdout


def _counting_queries(monkeypatch) -> list[int]:
    """Spy on the batched SQL look-up: one entry (the batch size) per round of queries.
    (Speeds are measured by bench/glossary_speed.py, not asserted here: the machine is shared.)"""
    calls: list[int] = []
    real = dictionary._query_many

    def spy(jam, texts):
        calls.append(len(texts))
        return real(jam, texts)

    monkeypatch.setattr(dictionary, "_query_many", spy)
    return calls


def test_lookups_are_thread_safe_and_cached(monkeypatch):
    dictionary.clear_caches()
    texts = ["自動車", "くるま", "猫", "犬", "飛行機", "錆", "傷", "汚れ", "馬", "船"] * 3
    expected = {t: dictionary.words(t) for t in set(texts)}
    dictionary.clear_caches()
    results: dict[int, tuple] = {}

    def work(i, text):
        results[i] = dictionary.words(text)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)                                    # a guard against a hang, not a speed target
    assert all(results[i] == expected[t] for i, t in enumerate(texts))
    queries = _counting_queries(monkeypatch)
    for text in texts:
        assert dictionary.words(text) == expected[text]
    assert queries == []                              # cached: no second look-up of any spelling


def test_first_review_of_a_hundred_labels_looks_them_up_in_one_batch(store, expert, monkeypatch):
    for i, name in enumerate(["自動車", "猫", "犬", "馬", "牛", "鳥", "魚", "船", "電車", "椅子"] * 10):
        store.insert("labels", {"name": f"{name}{i}", "name_key": f"{name}{i}", "lang": "ja",
                                   "status": "approved", "created_by": "t", "created_at": "now"})
    labels.propose(store, expert, "くるま", create_entry=True)
    dictionary.clear_caches()
    queries = _counting_queries(monkeypatch)
    dictionary.label_links(store, "くるま")
    # cold: the query's own spellings, then one batch for all 101 labels (not one round per label)
    assert len(queries) <= 2 and max(queries) >= 100, queries
    dictionary.label_links(store, "くるま")
    assert len(queries) <= 2, queries                 # warm: nothing looked up again


def test_the_app_works_without_the_dictionary(monkeypatch, store, expert):
    monkeypatch.setattr(dictionary, "_handle", None)
    monkeypatch.setattr(dictionary, "_unavailable_reason", "ModuleNotFoundError: jamdict")
    dictionary.clear_caches()
    try:
        assert not dictionary.available() and dictionary.term_hint("自動車") is None
        label = labels.propose(store, expert, "自動車", create_entry=True)
        assert dictionary.label_links(store, label["id"]) == []
    finally:
        dictionary.clear_caches()
