import pytest

from core import labels
from core.auth import SYSTEM
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
    labels.mark_trained(store, SYSTEM, [label["id"]])      # the worker's doing (issue 21)
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
    store.insert("images", {"sha256": "ab" * 32, "path": "images/x.png", "label_id": gone["id"],
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


# ---- re-link (issue 12 item 2) -------------------------------------------------------------------------

def test_relink_points_a_label_at_another_entry_with_audit_and_new_embed_text(store, expert, reviewer):
    label = labels.propose(store, expert, "飛行機", entry_id="defect.lifting")     # the wrong match users saw
    assert label["embed_text"] == "浮き"
    fixed = labels.relink(store, reviewer, label["id"], create_entry=True, reading="ヒコウキ", en="airplane",
                          expected_version=label["version"])
    assert fixed["entry_id"].startswith("user.") and fixed["entry_id"] != "defect.lifting"
    assert fixed["canonical"] == "飛行機" and fixed["embed_text"] == "飛行機" and fixed["en"] == "airplane"
    assert fixed["version"] == label["version"] + 1
    row = store.audit_rows("label", label["id"])[-1]
    assert row["action"] == "label.relink" and row["actor"] == "rei"
    assert row["details"]["entry_before"] == "defect.lifting" and row["details"]["entry_after"] == fixed["entry_id"]
    assert (row["details"]["embed_before"], row["details"]["embed_after"]) == ("浮き", "飛行機")
    # and to an existing entry
    again = labels.relink(store, reviewer, label["id"], "defect.bubble", expected_version=fixed["version"])
    assert again["entry_id"] == "defect.bubble" and again["embed_text"] == "気泡"


def test_relink_checks_version_role_duplicates_and_choice(store, expert, reviewer):
    rust = labels.propose(store, expert, "錆")
    other = labels.propose(store, expert, "飛行機", entry_id="defect.lifting")
    with pytest.raises(UserError) as err:
        labels.relink(store, expert, other["id"], "defect.bubble")
    assert err.value.key == "err.forbidden"
    with pytest.raises(UserError) as err:
        labels.relink(store, reviewer, other["id"], "defect.bubble", expected_version=other["version"] - 1 or 99)
    assert err.value.key == "err.stale_version"
    with pytest.raises(UserError) as err:
        labels.relink(store, reviewer, other["id"], rust["entry_id"])       # 錆 already has a label
    assert err.value.key == "labels.duplicate_entry"
    with pytest.raises(UserError) as err:
        labels.relink(store, reviewer, other["id"])                          # neither an entry nor "new"
    assert err.value.key == "labels.relink_choice"
    with pytest.raises(UserError) as err:
        labels.relink(store, reviewer, other["id"], "no.such.entry")
    assert err.value.key == "labels.unknown_entry"
    assert labels.get_label(store, other["id"])["entry_id"] == "defect.lifting"   # nothing changed


def test_relink_changes_what_the_encoder_sees(store, expert, reviewer):
    """The embedding cache is keyed by text: after a re-link the label's vector is the new text's."""
    from core.embeddings import label_embed_text

    label = labels.propose(store, expert, "飛行機", entry_id="defect.lifting")
    before = label_embed_text(labels.get_label(store, label["id"]))
    labels.relink(store, reviewer, label["id"], create_entry=True)
    after = label_embed_text(labels.get_label(store, label["id"]))
    assert (before, after) == ("浮き", "飛行機")


def test_relink_is_refused_while_the_label_is_being_trained(store, expert, reviewer):
    label = labels.approve(store, reviewer, labels.propose(store, expert, "錆")["id"])
    run = store.insert("runs", {"name": "r", "encoder": "e5", "config": "{}", "created_by": "rei",
                                   "created_at": "now"})
    store.insert("tasks", {"run_id": run, "idx": 0, "label_ids": f"[{label['id']}]", "status": "queued",
                              "created_at": "now"})
    with pytest.raises(UserError) as err:
        labels.relink(store, reviewer, label["id"], create_entry=True)
    assert err.value.key == "labels.in_training"


def test_rename_never_keeps_a_meaning_the_new_name_does_not_support(store, expert, reviewer):
    label = labels.propose(store, expert, "飛行機", entry_id="defect.lifting")
    with pytest.raises(UserError) as err:                  # "airplane" says nothing about 浮き
        labels.rename(store, reviewer, label["id"], "airplane")
    assert err.value.key == "labels.rename_needs_entry" and "浮き" in err.value.message("ja")
    assert labels.get_label(store, label["id"])["name"] == "飛行機"
    # a name the glossary resolves moves the label to that entry
    moved = labels.rename(store, reviewer, label["id"], "きほう")
    assert moved["entry_id"] == "defect.bubble" and moved["canonical"] == "気泡"
    details = store.audit_rows("label", label["id"])[-1]["details"]
    assert (details["entry_before"], details["entry_after"]) == ("defect.lifting", "defect.bubble")
    # keeping the current term must be asked for explicitly
    kept = labels.rename(store, reviewer, label["id"], "bubbles in resin", keep_entry=True)
    assert kept["entry_id"] == "defect.bubble" and kept["name"] == "bubbles in resin"


# ---- merge folds the glossary (issue 12 items 2 and 6) ------------------------------------------------

def test_merge_aliases_the_source_terms_to_the_survivor(store, expert, reviewer):
    from core.glossary_store import load_glossary

    car = labels.approve(store, reviewer, labels.propose(store, expert, "自動車", create_entry=True)["id"])
    kuruma = labels.propose(store, expert, "くるま", create_entry=True)
    assert load_glossary(store).lookup("くるま").entry_id == kuruma["entry_id"]
    labels.merge(store, reviewer, kuruma["id"], car["id"])
    g = load_glossary(store)
    hit = g.lookup("くるま")
    assert hit.auto and hit.entry_id == car["entry_id"]                   # typing くるま now means 自動車
    assert g.get(kuruma["entry_id"]).status == "deprecated"
    with pytest.raises(UserError) as err:                                 # and proposing it again says so
        labels.propose(store, expert, "くるま")
    assert err.value.key == "labels.duplicate_entry" and "自動車" in err.value.message("ja")
    assert store.audit_rows("label", kuruma["id"])[-1]["details"]["glossary_forms"] == ["くるま"]
    assert store.audit_rows("glossary", car["entry_id"])[-1]["action"] == "glossary.fold"


def test_merge_folds_the_source_label_aliases_that_mean_nothing_yet(store, expert, reviewer):
    from core.glossary_store import load_glossary

    keep = labels.approve(store, reviewer, labels.propose(store, expert, "錆")["id"])
    gone = labels.propose(store, expert, "汚れ")
    labels.add_alias(store, expert, gone["id"], "しみ")
    labels.add_alias(store, expert, gone["id"], "傷")            # already means 傷: never taken from it
    labels.merge(store, reviewer, gone["id"], keep["id"])
    g = load_glossary(store)
    assert g.lookup("しみ").entry_id == "defect.rust" and g.lookup("よごれ").entry_id == "defect.rust"
    assert g.lookup("傷").entry_id == "defect.scratch"
