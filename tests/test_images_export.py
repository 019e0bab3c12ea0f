"""Export: ImageNet-style train/ + test/ tree named by canonical terms, with images.csv; atomic."""
from __future__ import annotations

import csv
import io
import os
import zipfile

import pytest

from core import images
from core.i18n import UserError
from tests.test_images import jpeg, make_label


def _entry(store, entry_id: str, canonical: str) -> str:
    store.insert("glossary_entries", {"id": entry_id, "canonical": canonical, "en": ""})
    return entry_id


@pytest.fixture
def dataset(store, expert):
    """Labels whose canonical names are hard for filesystems, plus one that must not be exported."""
    ids = {
        "scratch": make_label(store, "キズ", entry_id=_entry(store, "d.scratch", "傷")),
        "slash": make_label(store, "a/b", status="trained"),
        "reserved": make_label(store, "con"),
        "case1": make_label(store, "Rust"),
        "case2": make_label(store, "rust", entry_id=_entry(store, "d.rust", "RUST")),
        "proposed": make_label(store, "draft", status="proposed"),
    }
    for n, label_id in enumerate(ids.values()):
        images.ingest_uploads(store, expert, label_id, [(f"{n}-{i}.jpg", jpeg(n * 100 + i)) for i in range(6)])
    return ids


def _read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_zip_export_layout_and_csv(store, supervisor, dataset, tmp_path):
    dest = tmp_path / "out" / "dataset.zip"
    result = images.export_dataset(store, supervisor, dest)
    assert result.n_labels == 5 and result.n_images == 30
    folders = result.folders
    assert folders[dataset["scratch"]] == "傷"            # canonical term, not the variant typed
    assert folders[dataset["slash"]] == "a_b"
    assert folders[dataset["reserved"]] == "_con"
    assert {folders[dataset["case1"]].casefold(), folders[dataset["case2"]].casefold()} == {"rust", f"rust_{dataset['case2']}"}
    assert dataset["proposed"] not in folders
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
        rows = _read_csv(zf.read("images.csv"))
        assert len(rows) == 30 and len(names) == 31
        for row in rows:
            assert row["file"] in names
            top, folder, _ = row["file"].split("/")
            assert top == ("train" if row["split"] == "train" else "test")
            assert folder == folders[int(row["label_id"])]
            stored = images.get_image(store, int(row["image_id"]))
            assert zf.read(row["file"]) == images.image_path(store, stored).read_bytes()
            assert row["sha256"] == stored["sha256"]
    scratch = [r for r in rows if r["label_id"] == str(dataset["scratch"])]
    assert {(r["label_name"], r["canonical"], r["entry_id"]) for r in scratch} == {("キズ", "傷", "d.scratch")}
    assert {r["split"] for r in rows} == {"train", "holdout"}
    assert [p.name for p in dest.parent.iterdir()] == ["dataset.zip"]     # no temp file left
    assert store.audit_rows("export")[0]["details"]["images"] == 30


def test_folder_export_refuses_existing_destination(store, admin, dataset, tmp_path):
    dest = tmp_path / "tree"
    images.export_dataset(store, admin, dest, fmt="folder")
    rows = _read_csv((dest / "images.csv").read_bytes())
    assert all((dest / r["file"]).is_file() for r in rows)
    assert {p.name for p in dest.iterdir()} == {"train", "test", "images.csv"}
    with pytest.raises(UserError) as err:
        images.export_dataset(store, admin, dest, fmt="folder")
    assert err.value.key == "images.export_exists"
    assert sorted(os.listdir(tmp_path)) == ["home", "tree"]


def test_failed_export_leaves_nothing(store, admin, dataset, tmp_path):
    victim = images.get_image(store, images.list_images(store, dataset["slash"])[0]["id"])
    images.image_path(store, victim).unlink()              # a missing file makes the copy fail midway
    for fmt, dest in (("zip", tmp_path / "x.zip"), ("folder", tmp_path / "x")):
        with pytest.raises(UserError) as err:         # a message (issue 21 F11), not a raw OSError
            images.export_dataset(store, admin, dest, fmt=fmt)
        assert err.value.key == "images.export_failed"
    assert sorted(os.listdir(tmp_path)) == ["home"]


def test_nothing_to_export(store, admin, tmp_path):
    make_label(store, "empty")
    with pytest.raises(UserError) as err:
        images.export_dataset(store, admin, tmp_path / "x.zip")
    assert "no images" in err.value.message("en")


def test_safe_folder_name():
    assert images.safe_folder_name('a<b>:"c"|?*') == "a_b___c____"
    assert images.safe_folder_name("  ..  ") == "_"
    assert images.safe_folder_name("lpt1.txt") == "_lpt1.txt"
    long = images.safe_folder_name("長" * 100)
    assert len(long.encode("utf-8")) <= 120 and long.startswith("長")
    assert images.safe_folder_name("ｶﾞ") == "ｶﾞ"               # NFC only: half-width kana stay as written
