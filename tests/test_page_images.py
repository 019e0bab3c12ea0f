"""The Images page in AppTest: upload through the real file_uploader, see per-file results in the
user's language, browse thumbnails, move and delete as a reviewer."""
from __future__ import annotations

import io
import zipfile

from streamlit.testing.v1 import AppTest

# Imported before AppTest runs the page: AppTest puts pages/ first on sys.path, where pages/glossary.py
# would otherwise shadow the glossary package that core.labels imports.
from core import images, labels  # noqa: F401
from core.auth import Actor
from core.store import Store
from tests.conftest import REPO
from tests.test_images import images_with_split, jpeg, make_label


def _page(home, actor, lang="ja") -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "images.py"), default_timeout=60)
    at.session_state["sgcl_home"] = str(home)
    at.session_state["lang"] = lang
    at.session_state["actor"] = actor
    return at


def _table_text(at) -> str:
    return "\n".join(df.value.to_string() for df in at.dataframe)


def test_upload_files_and_zip_shows_per_file_results(tmp_path):
    store = Store(tmp_path)
    cat = make_label(store, "cat")
    at = _page(tmp_path, Actor("eri", "expert"), lang="en")
    at.run()
    assert not at.exception
    [uploader] = at.file_uploader
    assert uploader.accept_multiple_files and ".zip" in uploader.allowed_type
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.jpg", jpeg(3))
        zf.writestr("ok.jpg", jpeg(4))
    uploader.set_value([("a.jpg", jpeg(1), "image/jpeg"), ("b.jpg", b"not an image", "image/jpeg"),
                        ("batch.zip", buf.getvalue(), "application/zip")])
    at.run()
    at.button(key="img_add").click().run()
    assert not at.exception
    assert images.count_images(store, cat) == 2
    assert any("Added 2, duplicates 0, conflicts 0, errors 2" in i.value for i in at.info)
    text = _table_text(at)
    assert "This is not an image file." in text and "unsafe path" in text
    # the same results in Japanese after switching the language
    at.session_state["lang"] = "ja"
    at.run()
    assert "画像ファイルではありません" in _table_text(at)
    # the uploader was emptied, the gallery shows both images
    assert at.file_uploader[0].value in (None, [])
    assert len(list((tmp_path / "cache" / "thumbs").iterdir())) == 2
    assert not [c for c in at.checkbox if c.key and c.key.startswith("img_sel_")]   # experts cannot manage


def test_reviewer_moves_and_deletes_with_audit(tmp_path):
    store = Store(tmp_path)
    cat, dog = make_label(store, "cat"), make_label(store, "dog", status="proposed")
    make_label(store, "old", status="retired")
    a, b, c = images.ingest_uploads(store, Actor("eri", "expert"), cat,
                                    [(f"{i}.jpg", jpeg(10 + i)) for i in range(3)])
    at = _page(tmp_path, Actor("rei", "reviewer"), lang="en")
    at.run()
    assert not at.exception
    assert [o for o in at.selectbox(key="img_label").options if "old" in o] == []   # retired: no uploads
    assert (tmp_path / "cache" / "thumbs").is_dir() and len(list((tmp_path / "cache" / "thumbs").iterdir())) == 3
    at.checkbox(key=f"img_sel_{a.image_id}").check().run()
    assert at.selectbox(key="img_move_target").options == ["#2 dog"]   # open labels other than this one
    at.button(key="img_move").click().run()
    assert not at.exception
    assert images.get_image(store, a.image_id)["label_id"] == dog
    assert store.audit_rows("image", a.image_id)[0]["actor"] == "rei"
    at.checkbox(key=f"img_sel_{b.image_id}").check().run()
    assert at.button(key="img_delete").disabled          # until deletion is confirmed
    at.checkbox(key="img_delete_confirm").check().run()
    at.button(key="img_delete").click().run()
    assert not at.exception
    assert images.count_images(store, cat) == 1
    assert [r["action"] for r in store.audit_rows("image", b.image_id)] == ["image.delete"]


def test_page_without_open_labels_and_export(tmp_path):
    at = _page(tmp_path, Actor("sora", "supervisor"))
    at.run()
    assert not at.exception and any("ラベル" in i.value for i in at.info)
    store = Store(tmp_path)
    cat = make_label(store, "cat")
    chosen = images_with_split("train", 5) + images_with_split("holdout", 1)
    images.ingest_uploads(store, Actor("eri", "expert"), cat, [(f"{i}.jpg", d) for i, d in enumerate(chosen)])
    at = _page(tmp_path, Actor("sora", "supervisor"), lang="en")
    at.run()
    assert not at.exception
    assert not at.file_uploader                          # supervisors read and export, not upload
    assert any("ready for training (5 train, 1 holdout)" in s.value for s in at.success)
    at.button(key="img_export").click().run()
    assert not at.exception
    [exported] = list((tmp_path / "exports").iterdir())
    with zipfile.ZipFile(exported) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".jpg")]) == 6
