"""The Images page in AppTest: upload through the real file_uploader, see per-file results in the
user's language, browse thumbnails, move and delete as a reviewer."""
from __future__ import annotations

import io
import zipfile

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

# Imported before AppTest runs the page: AppTest puts pages/ first on sys.path, where pages/glossary.py
# would otherwise shadow the glossary package that core.labels imports.
from core import images, labels  # noqa: F401
from core import settings
from core.auth import SYSTEM, Actor
from core.i18n import t
from core.store import Store
from tests.conftest import REPO, log_in_page
from tests.test_images import images_with_split, jpeg, make_label


def _page(home, actor, lang="ja") -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "images.py"), default_timeout=60)
    at.session_state["lang"] = lang
    log_in_page(at, home, actor)
    return at


def _table_text(at) -> str:
    return "\n".join(df.value.to_string() for df in at.dataframe)


def test_upload_files_and_zip_shows_per_file_results(tmp_path):
    store = Store(tmp_path)
    cat = make_label(store, "cat")
    at = _page(tmp_path, Actor("eri", "expert"), lang="en")
    at.run()
    assert not at.exception
    files, zips = at.file_uploader
    assert files.accept_multiple_files and ".jpg" in files.allowed_type and ".zip" not in files.allowed_type
    assert zips.accept_multiple_files and zips.allowed_type == [".zip"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.jpg", jpeg(3))
        zf.writestr("ok.jpg", jpeg(4))
    files.set_value([("a.jpg", jpeg(1), "image/jpeg"), ("b.jpg", b"not an image", "image/jpeg")])
    zips.set_value([("batch.zip", buf.getvalue(), "application/zip")])
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
    # the uploaders were emptied, the gallery shows both images
    assert [u.value for u in at.file_uploader] in ([None, None], [[], []])
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
    assert [o for o in at.selectbox(key="img_label_en").options if "old" in o] == []   # retired: no uploads
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


def _captions(at) -> list[str]:
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)
    return [img.caption for node in walk(at.main) if type(node).__name__ == "Image" for img in node.proto.imgs]


@pytest.fixture
def server_upload_cap():
    """The page sets Streamlit's process-wide ``server.maxUploadSize``; put it back after the test."""
    before = st_config.get_option("server.maxUploadSize")
    yield
    st_config.set_option("server.maxUploadSize", before, "test")


def test_upload_widgets_state_and_enforce_the_admins_limits(tmp_path, server_upload_cap):
    store = Store(tmp_path)
    make_label(store, "cat")
    at = _page(tmp_path, Actor("eri", "expert"), lang="en")
    at.run()
    assert not at.exception
    files, zips = at.file_uploader
    # max_upload_size is what the browser enforces and what the widget shows ("20MB per file")
    assert (files.proto.max_upload_size_mb, zips.proto.max_upload_size_mb) == (20, 1024)   # the defaults
    assert "Up to 20 MB" in files.help and "Up to 1024 MB" in zips.help
    assert st_config.get_option("server.maxUploadSize") == 1024        # what the server refuses above

    settings.update(store, SYSTEM, {"upload_max_bytes": 5 * 1024 * 1024, "upload_max_zip_bytes": 2048 * 1024 * 1024})
    at.run()
    files, zips = at.file_uploader
    assert (files.proto.max_upload_size_mb, zips.proto.max_upload_size_mb) == (5, 2048)
    assert "Up to 5 MB" in files.help and "Up to 2048 MB" in zips.help
    assert st_config.get_option("server.maxUploadSize") == 2048
    # a limit that is not whole MB: the widget rounds up, the service refuses on the exact byte count
    settings.update(store, SYSTEM, {"upload_max_bytes": 1536 * 1024})
    at.run()
    assert at.file_uploader[0].proto.max_upload_size_mb == 2


def test_gallery_shows_upload_times_in_the_configured_zone(tmp_path):
    store = Store(tmp_path)
    cat = make_label(store, "cat")
    [added] = images.ingest_uploads(store, Actor("eri", "expert"), cat, [("a.jpg", jpeg(7))])
    store.execute("UPDATE images SET uploaded_at = '2025-01-02T00:30:00+00:00' WHERE id = ?", (added.image_id,))
    at = _page(tmp_path, Actor("eri", "expert"), lang="en")
    at.run()
    assert not at.exception
    split = images.get_image(store, added.image_id)["split"]
    assert _captions(at) == [f"#{added.image_id} · {t('split.' + split, 'en')} · Jan 2, 2025, 09:30"]  # JST
    assert any("Japan Time" in c.value for c in at.caption)
    settings.update(store, SYSTEM, {"timezone": "UTC"})
    at.session_state["lang"] = "ja"
    at.run()
    assert _captions(at) == [f"#{added.image_id} · {t('split.' + split, 'ja')} · 2025年1月2日 0:30"]


def test_page_reports_the_feature_caches_disk_use_in_human_units(tmp_path):
    import numpy as np

    store = Store(tmp_path)
    label = make_label(store, "傷")
    at = _page(tmp_path, Actor("rei", "reviewer"), lang="en")
    at.run()
    assert any("feature cache is still empty" in c.value for c in at.caption)
    root = tmp_path / "cache" / "features"
    for version, n in (("effnet-lite0-aaaa", 3), ("effnet-lite0-bbbb", 1)):   # 4 entries of 2×8×4 float16
        for i in range(n):
            path = root / version / f"{i:02d}" / f"{i:02d}{'0' * 62}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.zeros((2, 8, 4), np.float16))
    size = sum(p.stat().st_size for p in root.rglob("*.npy"))
    import streamlit as st

    st.cache_data.clear()                     # the page re-reads the disk at most once a minute
    at.run()
    assert not at.exception
    [line] = [c.value for c in at.caption if "feature cache" in c.value]
    assert line == f"Image feature cache: 4 entries, {size / 1024:.1f} KiB in all ({size // 4:,} B per image)"
    versions = [df.value for df in at.dataframe if "Model version" in df.value.columns][0]
    assert list(versions["Entries"]) == [3, 1] and label


def test_page_says_when_the_encoder_caches_no_features(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")          # random weights, no frozen pretrained prefix
    make_label(Store(tmp_path), "傷")
    at = _page(tmp_path, Actor("rei", "reviewer"), lang="en")
    at.run()
    assert not at.exception
    assert any("caches no image features" in c.value for c in at.caption)
    assert not any("still empty" in c.value for c in at.caption)


def test_train_and_holdout_keep_their_colours_in_both_languages_and_the_table_is_not_squeezed(tmp_path):
    """Issue 21 point 5: the colours were assigned by the translated names' sort order, so train and
    holdout swapped colours between Japanese (学習/評価) and English; the table beside the chart had its
    last column cut off."""
    import json

    store = Store(tmp_path)
    cat = make_label(store, "cat")
    images.ingest_uploads(store, Actor("eri", "expert"), cat, [(f"{i}.jpg", jpeg(i)) for i in range(4)])
    colours = {}
    for lang in ("ja", "en"):
        at = _page(tmp_path, Actor("eri", "expert"), lang=lang)
        at.run()
        assert not at.exception
        [chart] = at.get("vega_lite_chart")
        scale = json.loads(chart.proto.spec)["encoding"]["color"]["scale"]
        names = scale["domain"]
        colours[lang] = dict(zip(["train", "holdout"], scale["range"]))
        from core.i18n import t
        assert names == [t("split.train", lang), t("split.holdout", lang)]
        # the counts table sits in the main area at full width, not in a narrow column
        main_types = [type(n).__name__ for n in at.main.children.values()]
        assert "Dataframe" in main_types, main_types
    assert colours["ja"] == colours["en"]
