import pytest

from core import labels
from core.i18n import UserError


def test_propose_links_glossary_entry_through_variant(store, expert):
    label = labels.propose(store, expert, "ｷｽﾞ")
    assert label["name"] == "ｷｽﾞ"                 # raw text kept for display and audit
    assert label["canonical"] == "傷"             # what gets embedded
    assert label["embed_text"] == "傷"
    assert label["status"] == "proposed" and label["lang"] == "ja"
    [audit] = store.audit_rows("label", label["id"])
    assert audit["action"] == "label.propose" and audit["actor"] == "eri"
    assert audit["details"]["match"] in ("basic", "kana", "lemma")


def test_duplicate_after_normalisation_is_refused_naming_existing(store, expert):
    first = labels.propose(store, expert, "傷")
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "キズ")        # same glossary entry
    assert "傷" in err.value.message("ja") and str(first["id"]) in err.value.message("en")
    with pytest.raises(UserError) as err2:
        labels.propose(store, expert, "  Widget  ", create_entry=True)
        labels.propose(store, expert, "WIDGET", create_entry=True)   # same basic key
    assert "Widget" in err2.value.message("en")


def test_unresolved_name_needs_confirmation_or_new_entry(store, expert):
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "ギアボックス異音")
    assert err.value.key == "labels.needs_entry"
    label = labels.propose(store, expert, "ギアボックス異音", create_entry=True, reading="ギアボックスイオン", en="gearbox noise")
    assert label["entry_id"].startswith("user.") and label["entry_status"] == "draft"
    assert label["en"] == "gearbox noise"


def test_confirmed_suggestion_is_linked(store, expert):
    label = labels.propose(store, expert, "掛け", entry_id="defect.chip")
    assert label["entry_id"] == "defect.chip"
    with pytest.raises(UserError):
        labels.propose(store, expert, "something", entry_id="no.such.entry")


def test_review_lifecycle_with_audit(store, expert, reviewer):
    label = labels.propose(store, expert, "錆")
    approved = labels.approve(store, reviewer, label["id"], expected_version=label["version"])
    assert approved["status"] == "approved" and approved["version"] == label["version"] + 1
    labels.mark_trained(store, reviewer, [label["id"]])
    assert labels.get_label(store, label["id"])["status"] == "trained"
    retired = labels.retire(store, reviewer, label["id"])
    assert retired["status"] == "retired"
    actions = [r["action"] for r in store.audit_rows("label", label["id"])]
    assert actions == ["label.propose", "label.approve", "label.train", "label.retire"]
    assert all(r["at"] for r in store.audit_rows("label", label["id"]))


def test_reject_only_from_proposed(store, expert, reviewer):
    label = labels.propose(store, expert, "汚れ")
    labels.reject(store, reviewer, label["id"])
    with pytest.raises(UserError) as err:
        labels.approve(store, reviewer, label["id"])
    assert err.value.key == "labels.bad_transition"
    # a rejected name can be proposed again
    assert labels.propose(store, expert, "よごれ")["status"] == "proposed"


def test_expert_cannot_approve(store, expert):
    label = labels.propose(store, expert, "凹み")
    with pytest.raises(UserError) as err:
        labels.approve(store, expert, label["id"])
    assert err.value.key == "err.forbidden"
    assert labels.get_label(store, label["id"])["status"] == "proposed"


def test_rename_keeps_id_and_old_name_as_alias(store, expert, reviewer):
    label = labels.propose(store, expert, "打痕")
    renamed = labels.rename(store, reviewer, label["id"], "打痕（大）")
    assert renamed["id"] == label["id"] and renamed["name"] == "打痕（大）"
    assert [a["text"] for a in labels.aliases(store, label["id"])] == ["打痕"]
    assert store.audit_rows("label", label["id"])[-1]["details"] == {"before": "打痕", "after": "打痕（大）"}


def test_merge_moves_aliases_and_images(store, expert, reviewer):
    keep = labels.propose(store, expert, "錆")
    labels.approve(store, reviewer, keep["id"])
    gone = labels.propose(store, expert, "汚れ")
    labels.add_alias(store, expert, gone["id"], "しみ")
    store.db["images"].insert({"sha256": "ab" * 32, "path": "images/x.png", "label_id": gone["id"],
                               "split": "train", "width": 1, "height": 1, "bytes": 1,
                               "uploaded_by": "eri", "uploaded_at": "now"})
    survivor = labels.merge(store, reviewer, gone["id"], keep["id"])
    assert survivor["id"] == keep["id"]
    assert {a["text"] for a in labels.aliases(store, keep["id"])} == {"しみ", "汚れ"}
    assert store.query_one("SELECT label_id FROM images")["label_id"] == keep["id"]
    merged = labels.get_label(store, gone["id"])
    assert merged["status"] == "merged" and merged["merged_into"] == keep["id"]
    assert store.audit_rows("label", gone["id"])[-1]["details"]["images"] == 1
    with pytest.raises(UserError):
        labels.merge(store, reviewer, keep["id"], keep["id"])


def test_stale_version_is_refused_and_nothing_is_lost(store, expert, reviewer):
    label = labels.propose(store, expert, "異物")
    seen = label["version"]
    labels.rename(store, reviewer, label["id"], "異物A", expected_version=seen)     # first session saves
    with pytest.raises(UserError) as err:
        labels.rename(store, reviewer, label["id"], "異物B", expected_version=seen)  # second session, stale
    assert err.value.key == "err.stale_version"
    assert "再読み込み" in err.value.message("ja") and "Reload" in err.value.message("en")
    assert labels.get_label(store, label["id"])["name"] == "異物A"


def test_refusals_read_fully_in_japanese(store, expert, reviewer):
    label = labels.propose(store, expert, "錆")
    with pytest.raises(UserError) as err:
        labels.approve(store, expert, label["id"])
    assert "レビュアー" in err.value.message("ja") and "reviewer" not in err.value.message("ja")
    labels.approve(store, reviewer, label["id"])
    with pytest.raises(UserError) as err:
        labels.approve(store, reviewer, label["id"])
    assert "承認済み" in err.value.message("ja") and "approved" in err.value.message("en")
