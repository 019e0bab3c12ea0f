"""Labels, Glossary and Neighbours pages (AppTest): nothing pre-selected on the propose form, typo
suggestions marked as such, dictionary readings and near-duplicates, re-link with a version check."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import glossary_store, labels, settings
from core.auth import SYSTEM, Actor
from core.store import Store

try:
    from tests.conftest import log_in_page
except ImportError:   # before server-side sessions: the page trusted the session's actor
    def log_in_page(at, home, actor, lang=None):
        at.session_state["sgcl_home"] = str(home)
        at.session_state["actor"] = actor
        if lang is not None:
            at.session_state["lang"] = lang
        return at

REPO = Path(__file__).resolve().parents[1]
EXPERT, REVIEWER = Actor("eri", "expert"), Actor("rei", "reviewer")


@pytest.fixture(autouse=True)
def _no_env_encoder(monkeypatch):
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


def _home(tmp_path) -> Store:
    store = Store(tmp_path)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})     # offline, seconds
    return store


def _page(name, home, actor, lang="en") -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / name), default_timeout=90)
    log_in_page(at, home, actor, lang)
    at.session_state["lang"] = lang
    return at


def _radio(at):
    radios = [r for r in at.radio if str(r.key or "").startswith("propose_choice")]
    return radios[0] if radios else None


def test_unrelated_word_is_a_new_term_with_dictionary_reading_and_no_nested_brackets(tmp_path):
    store = _home(tmp_path)
    at = _page("labels.py", tmp_path, EXPERT, lang="ja")
    at.run()
    at.text_input(key="propose_name").input("飛行機").run()
    assert not at.exception
    assert _radio(at) is None                                 # no suggestion to pick, none pre-selected
    [info] = [i.value for i in at.info]
    assert "新しい用語" in info and "（" not in info and "(" not in info
    assert at.text_input(key="propose_reading_飛行機").value == "ヒコウキ"      # JMdict
    assert at.text_input(key="propose_en_飛行機").value == "aeroplane"
    at.button(key="propose_submit").click().run()
    assert not at.exception
    [label] = labels.list_labels(store)
    assert (label["name"], label["canonical"], label["reading"], label["en"]) == ("飛行機", "飛行機", "ヒコウキ", "aeroplane")
    assert label["entry_status"] == "draft"


def test_a_typo_suggestion_is_marked_and_not_pre_selected(tmp_path):
    store = _home(tmp_path)
    at = _page("labels.py", tmp_path, EXPERT, lang="en")
    at.run()
    at.text_input(key="propose_name").input("スリキス").run()
    radio = _radio(at)
    assert radio.index == 0 and radio.value == "__new__"
    assert radio.options == ["Create a new term", "擦り傷 — typo?"]
    radio.set_value("defect.scuff").run()
    at.button(key="propose_submit").click().run()
    assert not at.exception
    assert labels.list_labels(store)[0]["entry_id"] == "defect.scuff"


def test_propose_form_shows_dictionary_near_duplicates(tmp_path):
    store = _home(tmp_path)
    labels.approve(store, REVIEWER, labels.propose(store, EXPERT, "自動車", create_entry=True)["id"])
    at = _page("labels.py", tmp_path, EXPERT, lang="en")
    at.run()
    at.text_input(key="propose_name").input("car").run()
    assert not at.exception
    assert any("Near-duplicates by the dictionary" in w.value and "自動車" in w.value for w in at.warning)
    assert any("JMdict" in c.value and "CC BY-SA" in c.value for c in at.caption)


def test_reviewer_relinks_a_wrong_match_with_version_check(tmp_path):
    store = _home(tmp_path)
    label = labels.propose(store, EXPERT, "飛行機", entry_id="defect.lifting")
    at = _page("labels.py", tmp_path, REVIEWER, lang="en")
    at.run()
    assert not at.exception
    assert any("Current term: 浮き" in c.value for c in at.caption)
    target = at.selectbox(key=f"relink_target_{label['id']}_en")
    assert target.value == "__new__"                         # the default is a new term from the name
    labels.rename(store, REVIEWER, label["id"], "飛行機", keep_entry=True)     # someone else saves first
    [b for b in at.button if b.label == "Change term"][0].click().run()
    assert any("changed by someone else" in e.value for e in at.error)
    assert labels.get_label(store, label["id"])["entry_id"] == "defect.lifting"
    at.button(key=f"reload_{label['id']}").click().run()
    [b for b in at.button if b.label == "Change term"][0].click().run()
    assert not at.exception
    fixed = labels.get_label(store, label["id"])
    assert fixed["canonical"] == "飛行機" and fixed["entry_id"].startswith("user.")
    assert store.audit_rows("label", label["id"])[-1]["action"] == "label.relink"


def test_review_warns_that_kuruma_may_be_jidousha(tmp_path):
    store = _home(tmp_path)
    car = labels.approve(store, REVIEWER, labels.propose(store, EXPERT, "自動車", create_entry=True)["id"])
    labels.propose(store, EXPERT, "くるま", create_entry=True)
    at = _page("labels.py", tmp_path, REVIEWER, lang="ja")
    at.run()
    assert not at.exception
    assert any("辞書（JMdict）から見た重複候補" in w.value and "自動車" in w.value for w in at.warning)
    merge = at.button(key=f"merge_dict_{car['id']}")
    merge.click().run()
    assert not at.exception
    assert glossary_store.load_glossary(store).lookup("くるま").entry_id == car["entry_id"]


def test_glossary_page_suggests_reading_and_gloss_for_a_new_term(tmp_path):
    _home(tmp_path)
    at = _page("glossary_terms.py", tmp_path, REVIEWER, lang="en")
    at.run()
    at.text_input(key="gloss_dict_term").input("自動車").run()
    assert not at.exception
    assert any("ジドウシャ" in i.value and "car" in i.value for i in at.info)
    at.button(key="gloss_dict_use").click().run()
    assert at.text_input(key="new_entry_reading_").value == "ジドウシャ"
    assert at.text_input(key="new_entry_en_").value == "car"
    assert at.text_input(key="new_entry_canonical_").value == "自動車"


def test_neighbours_page_verdict_matches_its_table_and_shows_dictionary_links(tmp_path):
    store = _home(tmp_path)
    for name in ["自動車", "猫", "錆", "ねじ", "歯車", "異物"]:
        create = name in ("自動車", "猫")
        labels.approve(store, REVIEWER, labels.propose(store, EXPERT, name, create_entry=create)["id"])
    car = labels.propose(store, EXPERT, "car", create_entry=True)
    at = _page("neighbours.py", tmp_path, REVIEWER, lang="en")
    at.run()
    at.selectbox[0].set_value(car["id"]).run()
    assert not at.exception
    verdicts = [c.value for c in at.caption if "duplicate" in c.value] + [w.value for w in at.warning
                                                                           if "duplicate" in w.value.lower()]
    assert verdicts and not any("Nearest" in v for v in verdicts)
    assert any("Near-duplicates by the dictionary" in w.value and "自動車" in w.value for w in at.warning)


def test_similarity_heatmap_labels_every_row_of_60_labels_without_clipping(tmp_path):
    import json

    store = _home(tmp_path)
    names = [f"部品{i:02d}の長い名前のラベル" if i % 2 else f"a fairly long label name {i:02d}" for i in range(60)]
    for name in names:
        labels.approve(store, REVIEWER, labels.propose(store, EXPERT, name, create_entry=True)["id"])
    at = _page("neighbours.py", tmp_path, REVIEWER, lang="ja")
    at.run()
    assert not at.exception
    [heat] = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart") if '"rect"' in e.proto.spec]
    for axis in (heat["encoding"]["x"], heat["encoding"]["y"]):
        assert axis["axis"]["labelOverlap"] is False                       # no label is dropped
        assert axis["axis"]["labelLimit"] >= 400                            # names are not cut short
        assert len(axis["sort"]) == 60 and set(axis["sort"]) == set(names)  # every label, whole names
    assert heat["height"] / 60 >= 14 and heat["width"] == heat["height"]   # a readable row each
    assert heat["autosize"]["type"] == "pad"            # names and legend come on top of the cells' size
    assert heat["encoding"]["color"]["title"] == "類似度"                  # the legend in the user's language


def test_review_shows_the_labels_example_images_and_the_alias_goes_to_the_reviewed_label(tmp_path):
    """Issue 21 point 3: no example images on the review; the alias form had its own picker, which
    stayed on #1 while the reviewer reviewed #2, so the alias landed on the wrong label."""
    from core import images
    from test_worker import class_image

    store = _home(tmp_path)
    first = labels.propose(store, EXPERT, "傷")
    second = labels.propose(store, EXPERT, "ヒビ割れ")
    files = [(f"crack-{i}.png", class_image("cat", i)) for i in range(3)]
    assert all(r.status == "added" for r in images.ingest_uploads(store, REVIEWER, second["id"], files))
    at = _page("labels.py", tmp_path, REVIEWER, lang="en")
    at.run()
    assert at.selectbox(key="review_pick").value == first["id"]
    assert any("This label has no images yet" in c.value for c in at.caption)
    at.selectbox(key="review_pick").set_value(second["id"]).run()
    assert not at.exception, at.exception
    from test_page_images import _captions
    assert len(_captions(at)) == 3 and all("train" in c or "holdout" in c for c in _captions(at))
    assert any("Example images (3 in all)" in m.value for m in at.markdown)
    assert [s.key for s in at.selectbox if s.label == "Choose a label"] == ["review_pick"]   # no second picker
    at.text_input(key=f"alias_text_{second['id']}").input("亀甲割れ")
    [submit] = [b for b in at.button if b.label == "Add alias"]
    submit.click().run()
    assert not at.exception, at.exception
    assert [a["text"] for a in labels.aliases(store, second["id"])] == ["亀甲割れ"]
    assert labels.aliases(store, first["id"]) == []


def test_switching_to_english_translates_the_status_chips_and_keeps_the_choices(tmp_path):
    """Issue 21 point 4: after switching to English the status chips (提案中/承認済み/学習済み) and the
    option 新しい用語（「ヒビ割れ」） stayed Japanese (the browser keeps a chosen option by its text)."""
    store = _home(tmp_path)
    label = labels.propose(store, EXPERT, "ヒビ割れ")
    at = _page("labels.py", tmp_path, REVIEWER, lang="ja")
    at.run()
    chips = at.multiselect(key="status_filter_ja")
    chips.set_value(["proposed", "retired"]).run()
    relink = at.selectbox(key=f"relink_target_{label['id']}_ja")
    assert relink.value == "__new__" and "新しい用語" in relink.format_func(relink.value)
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception, at.exception
    chips = at.multiselect(key="status_filter_en")
    assert chips.value == ["proposed", "retired"]                       # the choice survived the switch
    assert not [o for o in chips.proto.options if any("\u3040" <= ch <= "\u30ff" for ch in o)]   # no kana left
    assert [chips.format_func(v) for v in chips.value] == [labels_t("status.proposed"), labels_t("status.retired")]
    relink = at.selectbox(key=f"relink_target_{label['id']}_en")
    assert relink.value == "__new__" and relink.format_func(relink.value).startswith(labels_t("lp.relink_new", name="ヒビ割れ")[:5])
    assert "新しい用語" not in " ".join(relink.proto.options)


def labels_t(key, **params):
    from core.i18n import t
    return t(key, "en", **params)


def test_glossary_edit_form_names_the_distinct_entries_instead_of_raw_ids(tmp_path):
    """Issue 21 point 4: the edit form showed `defect.scuff|defect.impact_mark`."""
    store = _home(tmp_path)
    at = _page("glossary_terms.py", tmp_path, REVIEWER, lang="ja")
    at.run()
    at.selectbox(key="gloss_pick").set_value("defect.scratch").run()
    assert not at.exception, at.exception
    picked = at.multiselect(key="edit_entry_distinct_ids_defect.scratch")
    assert picked.value == ["defect.scuff", "defect.impact_mark"]
    assert [picked.format_func(v) for v in picked.value] == ["擦り傷 · scuff", "打痕 · impact mark"]
    assert not [t.value for t in at.text_input if "defect." in str(t.value)]         # no raw id on screen
    assert at.text_area(key="edit_entry_notes_ja_defect.scratch").value.startswith("線状の表面の傷")
    # literal words stay editable as words; saving keeps both kinds
    rust = glossary_store.get_entry_row(store, "defect.rust")
    at.selectbox(key="gloss_pick").set_value("defect.rust").run()
    assert at.text_input(key="edit_entry_distinct_defect.rust").value == "寂"
    [save] = [b for b in at.button if b.label == "保存"]
    save.click().run()
    saved = glossary_store.get_entry_row(store, "defect.rust")["distinct_from"]
    assert not at.exception and set(saved.split("|")) == set(rust["distinct_from"].split("|"))


def test_the_japanese_uploader_says_upload_and_its_limit_in_japanese(tmp_path):
    """Issue 21 point 4: Streamlit draws "Upload" and "20MB per file" in English whatever the app's
    language; the page replaces both texts (CSS scoped to the uploader's key) in Japanese."""
    _home(tmp_path)
    at = _page("glossary_terms.py", tmp_path, REVIEWER, lang="ja")
    at.run()
    css = " ".join(h.proto.body for h in at.get("html"))
    assert ".st-key-gloss_csv" in css and '"アップロード"' in css and "MB まで • CSV" in css
    at = _page("glossary_terms.py", tmp_path, REVIEWER, lang="en")
    at.run()
    assert "アップロード" not in " ".join(h.proto.body for h in at.get("html"))
