"""Security regressions for the glossary and labels (issue 13 items 1, 4 and 9), each reproducing
what the attack did; every test here failed on the code before the fix."""
from __future__ import annotations

import csv
import io

import pytest

from core import glossary_store, labels
from core.i18n import UserError
from core.inputs import MAX_NAME
from glossary import Glossary, GlossaryEntry


def _entry(eid, canonical, **kw):
    return GlossaryEntry(id=eid, canonical=canonical, aliases=kw.pop("aliases", []),
                         distinct_from=kw.pop("distinct_from", []), **kw)


# ---- item 1: an expert cannot publish, nor take terms away from an entry ------------------------------

def test_expert_cannot_take_terms_away_with_an_approved_entry(store, expert):
    """The attack: an expert stored an *approved* entry whose aliases 傷/キズ/scratch made those terms
    ambiguous, so none of them resolved and proposing キズ was refused."""
    attack = _entry("user.evil", "偽物", aliases=["傷", "キズ", "scratch"], status="approved")
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, expert, attack, create=True)
    assert err.value.key == "glossary.form_taken" and "傷" in err.value.message("ja")
    assert store.query_one("SELECT COUNT(*) AS n FROM glossary_entries WHERE id = 'user.evil'")["n"] == 0
    g = glossary_store.load_glossary(store)
    for term in ("傷", "キズ", "scratch"):
        assert g.lookup(term).entry_id == "defect.scratch", term
    assert labels.propose(store, expert, "キズ")["entry_id"] == "defect.scratch"


def test_an_experts_new_entry_is_a_draft_whatever_it_asks_for(store, expert, reviewer):
    saved = glossary_store.save_entry(store, expert, _entry("user.new", "新用語", status="approved"), create=True)
    assert saved["status"] == "draft"
    assert store.audit_rows("glossary", "user.new")[-1]["details"]["status"] == "draft"
    # a reviewer publishes it
    entry = glossary_store.load_glossary(store).get("user.new")
    published = glossary_store.save_entry(store, reviewer, GlossaryEntry(**{**entry.__dict__, "status": "approved"}),
                                          expected_version=saved["version"])
    assert published["status"] == "approved"


def test_an_experts_english_gloss_cannot_claim_a_term_either(store, expert):
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "ギアボックス異音", create_entry=True, en="scratch")
    assert err.value.key == "glossary.form_taken"
    assert glossary_store.load_glossary(store).lookup("scratch").entry_id == "defect.scratch"
    assert labels.list_labels(store) == []


def test_a_draft_never_takes_a_term_from_an_approved_entry():
    g = Glossary([_entry("defect.scratch", "傷", aliases=["キズ"]), _entry("user.d", "別物", aliases=["キズ"], status="draft")])
    hit = g.lookup("キズ")
    assert hit.auto and hit.entry_id == "defect.scratch"
    assert "user.d" in {s.entry_id for s in hit.suggestions}


# ---- item 4: the glossary CSV export is formula-safe and still imports back losslessly ----------------

FORMULAS = ["=1+1", "'quoted", "-M3", "+81 3", "@SUM(A1)", "=HYPERLINK(\"http://x\",\"click\")"]


def test_glossary_csv_export_escapes_formulas_and_imports_back_losslessly(store, reviewer):
    for i, text in enumerate(FORMULAS):
        glossary_store.save_entry(store, reviewer, _entry(f"x.f{i}", f"用語{i}", en=text, notes=text,
                                                          aliases=[text + "a"]), create=True)
    data = glossary_store.export_csv(store)
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(data.decode("utf-8-sig")))}
    for i, text in enumerate(FORMULAS):
        cells = rows[f"x.f{i}"]
        assert cells["en"] == "'" + text and cells["notes"] == "'" + text and cells["aliases"] == "'" + text + "a"
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows.values() for v in r.values() if v)
    preview = glossary_store.preview_import(store, data)          # our own export: nothing changes
    assert not preview.has_changes and preview.unchanged == len(rows)
    back = Glossary.from_csv(io.BytesIO(data))
    for i, text in enumerate(FORMULAS):
        e = back.get(f"x.f{i}")
        assert (e.en, e.notes, e.aliases) == (text, text, [text + "a"])


# ---- item 9: names are bounded and cleaned before duplicate checks -------------------------------------

def test_huge_names_are_refused_in_both_languages(store, expert, reviewer):
    huge = "傷" * 10_000
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, huge, create_entry=True)
    assert err.value.key == "input.too_long"
    assert str(MAX_NAME) in err.value.message("ja") and str(MAX_NAME) in err.value.message("en")
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, reviewer, _entry("x.huge", huge), create=True)
    assert err.value.key == "input.too_long"
    assert labels.list_labels(store) == []


def test_names_of_only_invisible_characters_are_refused(store, expert, reviewer):
    with pytest.raises(UserError):
        labels.propose(store, expert, "\u200b\u200d\ufeff", create_entry=True)
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, reviewer, _entry("x.zw", "\u200b\u200b"), create=True)
    assert err.value.key == "input.empty" and "正規形" in err.value.message("ja")
    assert glossary_store.load_glossary(store).get("x.zw") is None


def test_nul_is_refused(store, expert, reviewer):
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "scr\x00atch", create_entry=True)
    assert err.value.key == "input.control_char"
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, reviewer, _entry("x.nul", "用語", aliases=["a\x00b"]), create=True)
    assert err.value.key == "input.control_char"


def test_bidi_override_is_removed_before_storing(store, expert, reviewer):
    label = labels.propose(store, expert, "abc\u202edef", create_entry=True)
    assert label["name"] == "abcdef" and label["canonical"] == "abcdef"
    renamed = labels.rename(store, reviewer, label["id"], "abc\u202edef2", keep_entry=True)
    assert renamed["name"] == "abcdef2"


def test_zero_width_variant_is_a_duplicate_and_is_stored_clean(store, expert):
    first = labels.propose(store, expert, "scratchy", create_entry=True)
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "scratch\u200by", create_entry=True)
    assert err.value.key in ("labels.duplicate", "labels.duplicate_entry") and str(first["id"]) in err.value.message("en")
    alias = labels.add_alias(store, expert, first["id"], "scratchy\u200b\u200b2")
    assert [a["text"] for a in labels.aliases(store, alias["id"])] == ["scratchy2"]


def test_zero_width_joiner_inside_kizu_resolves_to_scratch_through_the_service(store, expert):
    assert glossary_store.load_glossary(store).lookup("キ\u200dズ").entry_id == "defect.scratch"
    label = labels.propose(store, expert, "キ\u200dズ")
    assert label["entry_id"] == "defect.scratch" and label["name"] == "キズ"
    assert store.audit_rows("label", label["id"])[-1]["details"]["name"] == "キズ"
