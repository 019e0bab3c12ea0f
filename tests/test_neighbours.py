"""Neighbours under the real e5 encoder: ordered, never the label itself, status filters, a
near-duplicate flag calibrated on the approved label set, clustered similarity matrix."""
from __future__ import annotations

import numpy as np
import pytest

from core.encoders import load_encoder
from core.neighbours import (near_duplicates, neighbour_preview, neighbours, similarity_matrix)
from core.store import Store, now_iso

# A realistic approved set: vehicles, fruit, animals, fasteners, electronics, surface defects,
# furniture, in Japanese and English.
APPROVED = ["オートバイ", "自転車", "自動車", "トラック", "飛行機", "船", "りんご", "バナナ", "犬", "猫", "鳥",
            "馬", "ねじ", "ボルト", "ナット", "歯車", "ばね", "コネクタ", "基板", "擦り傷", "へこみ", "汚れ",
            "錆", "割れ", "異物", "椅子", "時計", "カメラ", "umbrella", "piano", "butterfly", "elephant"]
# Variants a glossary might miss, each a true duplicate of an approved label.
PLANTED = {"傷": "擦り傷", "ネジ": "ねじ", "リンゴ": "りんご"}
UNRELATED = ["冷蔵庫", "テレビ", "雲", "ギター", "花瓶", "パン", "magnet", "ladder", "stapler", "dent"]


@pytest.fixture(scope="module")
def e5():
    return load_encoder("e5")


def _insert(store, name, status):
    return store.insert("labels", {"name": name, "name_key": name, "lang": "ja", "status": status,
                                      "created_by": "t", "created_at": now_iso()})


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("nbr"))
    ids = {name: _insert(store, name, "approved") for name in APPROVED}
    for name in list(PLANTED) + UNRELATED:
        ids[name] = _insert(store, name, "proposed")
    ids["rejected:rust"] = _insert(store, "rust", "rejected")
    return store, ids


def test_neighbours_are_ordered_and_exclude_the_label_itself(catalogue, e5):
    store, ids = catalogue
    found = neighbours(store, e5, ids["ねじ"], k=8)
    assert len(found) == 8
    assert ids["ねじ"] not in [n.label_id for n in found]
    assert [n.rank for n in found] == list(range(1, 9))
    scores = [n.score for n in found]
    assert scores == sorted(scores, reverse=True)
    assert found[0].name == "ネジ"  # its katakana spelling is the nearest label


def test_status_filter_and_k(catalogue, e5):
    store, ids = catalogue
    approved_only = neighbours(store, e5, ids["ねじ"], k=100, statuses=("approved",))
    assert len(approved_only) == len(APPROVED) - 1
    assert {n.status for n in approved_only} == {"approved"}
    # these catalogue labels are not linked to glossary entries, so query with the raw text too
    default = neighbours(store, e5, "rust", k=100, resolve_glossary=False)
    assert "rejected" not in {n.status for n in default}  # rejected labels are hidden by default
    with_rejected = neighbours(store, e5, "rust", k=1, statuses=("rejected",), resolve_glossary=False)
    assert with_rejected[0].name == "rust" and with_rejected[0].score > 0.999


def test_free_text_query_ranks_the_closest_label_first(catalogue, e5):
    store, _ = catalogue
    assert neighbours(store, e5, "りんご", k=3)[0].name == "りんご"
    assert neighbours(store, e5, "擦り傷", k=3)[0].name == "擦り傷"


@pytest.mark.parametrize("proposed, approved", sorted(PLANTED.items()))
def test_near_duplicate_flag_fires_on_planted_duplicates(catalogue, e5, proposed, approved):
    store, ids = catalogue
    report = near_duplicates(store, e5, ids[proposed])
    assert report.flag, report
    assert report.nearest.name == approved and report.score >= report.threshold
    assert approved in report.message("en") and approved in report.message("ja")


def test_near_duplicate_flag_stays_quiet_on_unrelated_labels(catalogue, e5):
    store, ids = catalogue
    flagged = {name: near_duplicates(store, e5, ids[name]) for name in UNRELATED}
    assert not [n for n, r in flagged.items() if r.flag], flagged


def test_near_duplicates_among_labels_proposed_together_are_flagged(tmp_path, e5):
    """Issue 21: silent while six labels were proposed together (only approved ones were compared,
    and fewer than five could not be judged)."""
    store = Store(tmp_path)
    _insert(store, "ねじ", "proposed")
    lonely = _insert(store, "ネジ", "proposed")
    report = near_duplicates(store, e5, lonely)
    assert report.flag and report.calibrated and report.nearest.name == "ねじ"
    assert "proposed label 'ねじ'" in report.message("en") and "提案中のラベル「ねじ」" in report.message("ja")


def test_identical_embed_text_is_always_a_duplicate(tmp_path, e5):
    store = Store(tmp_path)
    _insert(store, "ねじ", "approved")
    twin = _insert(store, "ねじ", "proposed")
    assert near_duplicates(store, e5, twin).flag


def test_index_follows_label_changes(tmp_path, e5):
    store = Store(tmp_path)
    for name in ["ねじ", "自転車", "犬"]:
        _insert(store, name, "approved")
    raw = dict(resolve_glossary=False)   # labels inserted without glossary links: compare raw texts
    assert [n.name for n in neighbours(store, e5, "ネジ", k=5, **raw)][0] == "ねじ"
    _insert(store, "ネジ", "approved")
    assert neighbours(store, e5, "ネジ", k=1, **raw)[0].name == "ネジ"
    store.execute("UPDATE labels SET status='retired', version=version+1 WHERE name='ネジ'")
    assert neighbours(store, e5, "ネジ", k=1, **raw)[0].name == "ねじ"


def test_similarity_matrix_is_symmetric_and_clustered(catalogue, e5):
    store, ids = catalogue
    chosen = [ids[n] for n in ["ねじ", "犬", "りんご", "ネジ", "猫", "リンゴ", "ボルト"]]
    matrix, order = similarity_matrix(store, e5, chosen)
    assert sorted(order) == sorted(chosen) and matrix.shape == (7, 7)
    assert np.allclose(matrix, matrix.T, atol=1e-6) and np.allclose(np.diag(matrix), 1.0, atol=1e-4)
    pos = {label_id: i for i, label_id in enumerate(order)}
    # spelling variants end up next to each other
    assert abs(pos[ids["ねじ"]] - pos[ids["ネジ"]]) == 1
    assert abs(pos[ids["りんご"]] - pos[ids["リンゴ"]]) == 1


def test_neighbour_preview_gives_rows_and_verdict(catalogue, e5):
    store, ids = catalogue
    preview = neighbour_preview(store, ids["傷"], k=3, encoder=e5)
    assert preview.encoder_spec == "e5" and not preview.random_weights
    rows = preview.rows()
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["label"] == "擦り傷"
    assert preview.near_duplicate.flag


def test_free_text_variant_is_embedded_as_its_glossary_canonical(tmp_path):
    from core.neighbours import query_embed_text
    from core.store import Store

    store = Store(tmp_path)
    assert query_embed_text(store, "へこみ") == "凹み"
    assert query_embed_text(store, "ｷｽﾞ") == "傷"
    assert query_embed_text(store, "まったく新しい言葉") == "まったく新しい言葉"   # unknown text as typed


def test_relink_re_embeds_the_label(tmp_path, e5):
    """After a re-link the label's vector is its new entry's text: nothing keeps the old vector by label."""
    import torch

    from core import labels
    from core.auth import Actor
    from core.embeddings import embed_texts
    from core.neighbours import label_index

    store = Store(tmp_path)
    expert, reviewer = Actor("eri", "expert"), Actor("rei", "reviewer")
    for name in ["錆", "汚れ", "ねじ", "異物", "歯車"]:
        labels.approve(store, reviewer, labels.propose(store, expert, name)["id"])
    plane = labels.propose(store, expert, "飛行機", entry_id="defect.lifting")     # the wrong match
    index = label_index(store, e5)
    old = index.matrix[index.position[plane["id"]]]
    assert torch.allclose(old, embed_texts(store, e5, ["浮き"])[0], atol=1e-6)
    labels.relink(store, reviewer, plane["id"], create_entry=True)
    index = label_index(store, e5)
    new = index.matrix[index.position[plane["id"]]]
    assert torch.allclose(new, embed_texts(store, e5, ["飛行機"])[0], atol=1e-6)
    assert not torch.allclose(new, old, atol=1e-3)


def test_no_duplicate_verdict_names_the_closest_label_and_the_threshold(catalogue, e5):
    store, ids = catalogue
    report = near_duplicates(store, e5, ids["冷蔵庫"])
    assert not report.flag and report.score < report.threshold
    for lang in ("en", "ja"):
        text = report.message(lang)
        assert report.nearest.name in text and f"{report.threshold:.3f}" in text and f"{report.score:.3f}" in text
