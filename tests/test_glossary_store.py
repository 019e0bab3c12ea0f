import pytest

from core import glossary_store
from core.i18n import UserError
from glossary import GlossaryEntry


def test_starter_glossary_is_seeded_once_and_looked_up(store):
    g = glossary_store.load_glossary(store)
    assert len(g) >= 40
    assert glossary_store.seed_if_empty(store) == 0
    assert g.lookup("ｻﾋﾞ").canonical == "錆"


def test_edit_bumps_version_refreshes_lookup_and_refuses_stale_save(store, reviewer):
    row = glossary_store.get_entry_row(store, "defect.rust")
    entry = glossary_store.load_glossary(store).get("defect.rust")
    entry.aliases.append("あかさび")
    saved = glossary_store.save_entry(store, reviewer, entry, expected_version=row["version"])
    assert saved["version"] == row["version"] + 1
    assert glossary_store.load_glossary(store).lookup("あかさび").entry_id == "defect.rust"
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, reviewer, entry, expected_version=row["version"])
    assert err.value.key == "err.stale_version"
    assert store.audit_rows("glossary", "defect.rust")[-1]["action"] == "glossary.update"


def test_expert_may_not_edit_entries(store, expert):
    entry = glossary_store.load_glossary(store).get("defect.rust")
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, expert, entry)
    assert err.value.key == "err.forbidden"


def test_import_preview_then_apply(store, reviewer):
    exported = glossary_store.export_csv(store)
    assert exported.startswith("\ufeff".encode())            # Excel-friendly BOM
    text = exported.decode("utf-8-sig")
    text = text.replace("defect.rust,錆,", "defect.rust,錆,", 1)
    text += "part.sprocket,スプロケット,スプロケット,sprocket,,,,,approved\n"
    preview = glossary_store.preview_import(store, text.encode("utf-8-sig"))
    assert [e.id for e in preview.added] == ["part.sprocket"] and not preview.changed
    glossary_store.apply_import(store, reviewer, text.encode("utf-8-sig"))
    assert glossary_store.load_glossary(store).lookup("すぷろけっと").entry_id == "part.sprocket"


def test_malformed_import_names_the_row_in_both_languages(store):
    header = "id,canonical,reading,en,embed_text,aliases,distinct_from,notes,status\n"
    bad = header + "a.one,一,,,,,,,approved\na.two,,,,,,,,approved\n"
    with pytest.raises(UserError) as err:
        glossary_store.preview_import(store, bad.encode())
    assert "2" in err.value.message("en") and "2 行目" in err.value.message("ja")
    assert "canonical" in err.value.message("ja")
    with pytest.raises(UserError) as err:
        glossary_store.preview_import(store, "id,canonical,colour\nx,y,red\n".encode())
    assert "見出し" in err.value.message("ja") and "header" in err.value.message("en")
    with pytest.raises(UserError) as err:
        glossary_store.preview_import(store, (header + "a.one,錆,,,,,,,approved\n").encode("cp932"))
    assert "UTF-8" in err.value.message("ja")


def test_new_entry_creation_and_duplicate_id(store, expert):
    glossary_store.save_entry(store, expert, GlossaryEntry(id="user.x", canonical="新用語", aliases=[],
                                                           distinct_from=[], status="draft"), create=True)
    with pytest.raises(UserError) as err:
        glossary_store.save_entry(store, expert, GlossaryEntry(id="user.x", canonical="別", aliases=[],
                                                               distinct_from=[]), create=True)
    assert err.value.key == "glossary.id_exists"
