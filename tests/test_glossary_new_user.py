"""Issue 21 point 1: what a new user typing six defect classes with spelling variants ran into.

Each test replays one finding: a reviewer's alias ignored by a later proposal, a compound written with
a variant kanji (ピット傷 / ピット疵), the same word partly in kana (斑模様 / マダラ模様), English
"crazing", English and Japanese landing on different classes, and Predict's column names."""
from __future__ import annotations

import pytest

from core import dictionary, labels
from core.glossary_store import load_glossary
from core.i18n import UserError
from glossary import Glossary, GlossaryEntry


def test_a_reviewers_alias_stops_a_second_class_for_that_term(store, expert, reviewer):
    crack = labels.propose(store, expert, "ヒビ割れ")
    assert crack["canonical"] == "亀裂"
    labels.add_alias(store, reviewer, crack["id"], "亀甲割れ")
    with pytest.raises(UserError) as err:
        labels.propose(store, expert, "亀甲割れ")
    assert err.value.key == "labels.duplicate_alias" and "ヒビ割れ" in err.value.message("ja")
    with pytest.raises(UserError):          # nor as a confirmed "new term"
        labels.propose(store, expert, "亀甲割れ", create_entry=True)
    assert labels.alias_owner(store, "亀甲割れ")["id"] == crack["id"]


def test_a_reviewers_alias_the_glossary_does_not_know_becomes_a_form_of_the_labels_term(store, expert, reviewer):
    crack = labels.propose(store, expert, "ヒビ割れ")
    assert not load_glossary(store).lookup("ジグザグ割れ").auto
    labels.add_alias(store, reviewer, crack["id"], "ジグザグ割れ")
    hit = load_glossary(store).lookup("ジグザグ割れ")
    assert hit.auto and hit.entry_id == crack["entry_id"]
    # an expert's alias stays on the label: experts do not edit the glossary
    scuff = labels.propose(store, expert, "すり傷")
    labels.add_alias(store, expert, scuff["id"], "ザラザラ跡")
    assert not load_glossary(store).lookup("ザラザラ跡").auto
    with pytest.raises(UserError):
        labels.propose(store, expert, "ザラザラ跡", create_entry=True)


def test_a_compound_with_a_variant_kanji_is_offered_the_existing_term(store, expert):
    pit = labels.propose(store, expert, "ピット疵", create_entry=True)
    hit = load_glossary(store).lookup("ピット傷")
    assert not hit.auto
    assert hit.suggestions[0].entry_id == pit["entry_id"] and hit.suggestions[0].tier == "variant"
    # the variant groups come from the glossary (傷/疵/瑕 are forms of one entry) and the JIS pairs
    g = Glossary.starter().with_entry(GlossaryEntry(id="x.peel_mark", canonical="剝がれ跡"))
    assert g.variant_key("剥がれ跡") == g.variant_key("剝がれ跡") and g.variant_key("ピット疵") == "ピット傷"
    # unrelated kanji do not fold: 傷 and 錆 are different entries
    g = Glossary.starter().with_entry(GlossaryEntry(id="x.pit_rust", canonical="ピット錆"))
    assert "x.pit_rust" not in {s.entry_id for s in g.lookup("ピット傷").suggestions}


@pytest.mark.skipif(not dictionary.available(), reason="JMdict (jamdict-data) is not installed")
def test_the_same_word_partly_in_kana_is_linked_for_review(store, expert, reviewer):
    mottled = labels.approve(store, reviewer, labels.propose(store, expert, "斑模様", entry_id="defect.unevenness")["id"])
    found = dictionary.label_links(store, "マダラ模様")
    assert [(l.label_id, l.kind) for l in found] == [(mottled["id"], "spelling")]
    assert "マダラモヨウ" in found[0].describe("ja")
    # homophones written with other kanji stay apart
    assert dictionary.link(dictionary.profile("掛け"), dictionary.profile("欠け")) is None
    assert dictionary.link(dictionary.profile("椅子"), dictionary.profile("鋳巣")) is None


def test_crazing_has_a_term_in_both_languages():
    g = Glossary.starter()
    ids = {g.lookup(q).entry_id for q in ("crazing", "craze", "クレージング", "亀甲割れ", "ヘアクラック")}
    assert ids == {"defect.crazing"}
    assert g.lookup("crazing").auto and g.get("defect.crazing").en == "crazing"


def test_every_term_lands_on_one_class_in_english_and_japanese():
    g = Glossary.starter()
    for entry in g.entries:
        for form in (entry.canonical, entry.en, entry.reading):
            hit = g.lookup(form)
            assert hit.auto and hit.entry_id == entry.id, (entry.id, form)


@pytest.mark.skipif(not dictionary.available(), reason="JMdict (jamdict-data) is not installed")
def test_an_english_colleague_is_told_which_japanese_label_means_what(store, expert, reviewer):
    # "scratch" is 傷 and すり傷 is 擦り傷 (scuff) in the glossary; the dictionary glosses both "scratch".
    suri = labels.approve(store, reviewer, labels.propose(store, expert, "すり傷")["id"])
    [note] = dictionary.label_links(store, "scratch")
    assert note.label_id == suri["id"] and note.kind == "distinct"
    assert "scuff" in note.describe("en") and "すり傷" in note.describe("en")
    scratch = labels.propose(store, expert, "scratch")
    assert scratch["entry_id"] == "defect.scratch" and labels.propose(store, expert, "キズ" + "跡", create_entry=True)


def test_glossary_notes_exist_in_japanese_and_english_and_survive_the_csv_round_trip(store, reviewer):
    """Issue 21 point 4: glossary notes existed in English only."""
    import io

    from core import glossary_store

    g = Glossary.starter()
    with_notes = [e for e in g.entries if e.notes]
    assert with_notes and all(e.notes_ja for e in with_notes)
    assert all(any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in e.notes_ja) for e in with_notes)
    back = Glossary.from_csv(io.StringIO(g.to_csv()))
    assert [e.notes_ja for e in back.entries] == [e.notes_ja for e in g.entries]
    # the database keeps both, and an edit changes one without the other
    row = glossary_store.get_entry_row(store, "defect.scratch")
    assert row["notes_ja"].startswith("線状") and row["notes"].startswith("Line-shaped")
    import dataclasses
    entry = load_glossary(store).get("defect.scratch")
    glossary_store.save_entry(store, reviewer, dataclasses.replace(entry, notes_ja="線キズ。"), row["version"])
    assert glossary_store.get_entry_row(store, "defect.scratch")["notes_ja"] == "線キズ。"
    assert load_glossary(store).get("defect.scratch").notes.startswith("Line-shaped")


def test_a_data_home_seeded_before_japanese_notes_gets_them(store):
    from core import glossary_store

    load_glossary(store)
    store.execute("UPDATE glossary_entries SET notes_ja = ''")
    store.execute("UPDATE glossary_entries SET notes = 'edited by hand' WHERE id = 'defect.rust'")
    glossary_store._notes_filled.clear()
    glossary_store.seed_if_empty(store)
    assert glossary_store.get_entry_row(store, "defect.crack")["notes_ja"].startswith("部品を")
    assert glossary_store.get_entry_row(store, "defect.rust")["notes_ja"] == ""      # edited: left alone
