"""Image ingestion: every kind of bad input gets its own per-file message (ja + en), nothing is written
outside the data home or left half-written, duplicates are recognised, splits are deterministic."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from core import images, settings
from core.auth import SYSTEM
from core.i18n import UserError
from core.store import Store, now_iso


# ---- helpers ------------------------------------------------------------------------------------
def make_label(store: Store, name: str, status: str = "approved", entry_id: str | None = None) -> int:
    """A label row as core.labels would leave it (inserted directly: ingestion needs no glossary)."""
    return store.insert("labels", {
        "name": name, "name_key": name.casefold(), "lang": "en", "entry_id": entry_id, "status": status,
        "version": 1, "created_by": "test", "created_at": now_iso()})


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(seed: int, size=(24, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(arr, "RGB"), "JPEG", quality=90)


def photo(seed: int, size=(64, 48)) -> bytes:
    """A JPEG that looks like a camera picture (smooth shapes, mild sensor noise), unlike ``jpeg``'s
    uniform noise, which is the worst case of JPEG re-encoding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) * 127 / sum(size)], -1)
    arr = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(arr, "RGB"), "JPEG", quality=90)


def set_settings(store: Store, **values) -> None:
    settings.update(store, SYSTEM, values)


def tree(path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files} | {
        os.path.relpath(os.path.join(d, s), path) for d, subs, _ in os.walk(path) for s in subs}


def stored(store: Store, result: images.IngestResult) -> Image.Image:
    row = images.get_image(store, result.image_id)
    img = Image.open(images.image_path(store, row))
    img.load()
    return img


@pytest.fixture
def label(store) -> int:
    return make_label(store, "cat")


@pytest.fixture
def outside(tmp_path, store):
    """Listing of the data home's parent before the test; asserts it is unchanged and tmp/ is empty."""
    before = {p for p in tree(tmp_path) if not p.startswith("home")}
    yield
    after = {p for p in tree(tmp_path) if not p.startswith("home")}
    assert after == before, f"written outside the data home: {after - before}"
    assert list((store.home / "tmp").iterdir()) == []


# ---- bad input, one file at a time --------------------------------------------------------------
def _one(store, actor, label, name, data) -> images.IngestResult:
    [result] = images.ingest_uploads(store, actor, label, [(name, data)])
    return result


BAD_CASES = {
    "empty": (lambda: b"", "images.empty", "0 bytes", "0 バイト"),
    "truncated": (lambda: jpeg(1, (64, 64))[:300], "images.corrupt", "truncated", "途中で切れて"),
    "text_as_jpg": (lambda: b"just some notes, not a picture\n" * 4, "images.not_image",
                    "not an image", "画像ファイルではありません"),
    "ico": (lambda: encode(Image.new("RGB", (16, 16), "red"), "ICO"), "images.unsupported_format",
            "Unsupported format (ICO)", "対応していない形式です（ICO）"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gets_a_message_in_both_languages(store, expert, label, outside, case):
    make, key, en, ja = BAD_CASES[case]
    result = _one(store, expert, label, f"{case}.jpg", make())
    assert (result.status, result.message_key) == ("error", key)
    assert en in result.message("en") and ja in result.message("ja")
    assert store.query("SELECT * FROM images") == []
    assert list((store.home / "images").iterdir()) == []


def test_byte_and_pixel_limits_come_from_settings(store, expert, label, outside):
    big = jpeg(2, (80, 80))
    set_settings(store, upload_max_bytes=len(big) - 1)
    result = _one(store, expert, label, "big.jpg", big)
    assert result.message_key == "images.too_large"
    assert "too large" in result.message("en") and "大きすぎます" in result.message("ja")
    set_settings(store, upload_max_bytes=10_000_000, upload_max_pixels=80 * 80 - 1)
    result = _one(store, expert, label, "big.jpg", big)
    assert result.message_key == "images.too_many_pixels"
    assert "80×80" in result.message("en") and "画素数が多すぎます" in result.message("ja")
    set_settings(store, upload_max_pixels=80 * 80)
    assert _one(store, expert, label, "big.jpg", big).status == "added"


@pytest.mark.parametrize("side", [150, 400])   # Pillow's warning tier (>1x limit) and error tier (>2x)
def test_decompression_bomb_is_refused_with_pillow_guard_on(store, expert, label, outside, monkeypatch, side):
    bomb = encode(Image.new("1", (side, side)), "PNG")   # a few hundred bytes, many pixels
    assert len(bomb) < 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    result = _one(store, expert, label, "bomb.png", bomb)
    assert result.message_key == "images.decompression_bomb"
    assert "decompression bomb" in result.message("en") and "解凍爆弾" in result.message("ja")


# ---- valid but unusual images are normalised ----------------------------------------------------
def test_cmyk_jpeg_is_stored_as_rgb(store, expert, label):
    data = encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95)   # red in CMYK
    result = _one(store, expert, label, "cmyk.jpg", data)
    assert result.status == "added"
    img = stored(store, result)
    assert img.mode == "RGB" and img.format == "JPEG"
    r, g, b = img.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60


def test_16bit_greyscale_is_scaled_not_clipped(store, expert, label):
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = stored(store, _one(store, expert, label, "deep.png", data))
    assert img.mode == "RGB" and 120 <= img.getpixel((0, 0))[0] <= 135   # mid grey, not white


def test_palette_with_transparency_and_rgba_become_rgb_on_white(store, expert, label):
    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal_bytes = encode(pal, "PNG", transparency=0)        # index 0 (black) is transparent
    img = stored(store, _one(store, expert, label, "pal.png", pal_bytes))
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 255, 255) and img.getpixel((0, 0)) == (255, 0, 0)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    img = stored(store, _one(store, expert, label, "clear.png", encode(rgba, "PNG")))
    assert img.getpixel((1, 1)) == (255, 255, 255)


def test_exif_rotated_photo_is_stored_upright(store, expert, label):
    exif = Image.Exif()
    exif[0x0112] = 6                                        # "rotate 90° clockwise to display"
    data = encode(Image.new("RGB", (40, 20), "green"), "JPEG", exif=exif)
    result = _one(store, expert, label, "phone.jpg", data)
    img = stored(store, result)
    assert img.size == (20, 40)
    row = images.get_image(store, result.image_id)
    assert (row["width"], row["height"]) == (20, 40)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()   # identity = the uploaded bytes
    assert row["path"].endswith(".jpg") and row["original_name"] == "phone.jpg"
    # the same file again is an exact duplicate even though a normalised copy was stored
    assert _one(store, expert, label, "phone-again.jpg", data).status == "duplicate"


def test_plain_rgb_jpeg_is_re_encoded_with_its_own_tables(store, expert, label):
    data = photo(3)
    result = _one(store, expert, label, "plain.jpg", data)
    row = images.get_image(store, result.image_id)
    kept = images.image_path(store, row).read_bytes()
    assert kept != data and row["sha256"] == hashlib.sha256(data).hexdigest()   # identity = the upload
    with Image.open(io.BytesIO(kept)) as out, Image.open(io.BytesIO(data)) as src:
        assert out.quantization == src.quantization                 # same tables: no generation loss
        diff = np.abs(np.asarray(out.convert("RGB"), float) - np.asarray(src.convert("RGB"), float))
    assert diff.mean() < 0.5                                        # measured 0.02-0.35 on photos
    assert row["bytes"] == len(kept) and row["uploaded_by"] == "eri" and row["uploaded_at"]


# ---- zips ---------------------------------------------------------------------------------------
def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _zip_with_raw_name(raw_name: bytes, data: bytes) -> bytes:
    """A zip whose entry name is ``raw_name`` bytes *without* the UTF-8 flag (as old Windows tools write)."""
    placeholder = b"Q" * (len(raw_name) - 4) + b".jpg"
    archive = _zip([(placeholder.decode("ascii"), data)])
    assert archive.count(placeholder) == 2                 # local header + central directory
    return archive.replace(placeholder, raw_name)


def test_zip_slip_nested_and_junk_entries(store, expert, label, outside, tmp_path):
    inner = _zip([("x.jpg", jpeg(9))])
    archive = _zip([
        ("../evil.jpg", jpeg(4)), ("/abs/evil.jpg", jpeg(5)), ("..\\win\\evil.jpg", jpeg(6)),
        ("photos/", b""), ("photos/good.jpg", jpeg(7)), ("__MACOSX/photos/._good.jpg", b"\0\5junk"),
        (".DS_Store", b"junk"), ("inner.zip", inner), ("disguised.jpg", inner), ("notes.txt", b"hi"),
    ])
    results = images.ingest_uploads(store, expert, label, [("batch.zip", archive)])
    by_name = {r.name.split(": ", 1)[1]: r for r in results}
    assert set(by_name) == {"../evil.jpg", "/abs/evil.jpg", "..\\win\\evil.jpg", "photos/good.jpg",
                            "inner.zip", "disguised.jpg", "notes.txt"}   # junk skipped silently
    for name in ("../evil.jpg", "/abs/evil.jpg", "..\\win\\evil.jpg"):
        assert by_name[name].message_key == "images.zip_unsafe_path"
        assert "unsafe path" in by_name[name].message("en") and "安全でないパス" in by_name[name].message("ja")
    for name in ("inner.zip", "disguised.jpg"):
        assert by_name[name].message_key == "images.zip_nested"
        assert "not processed" in by_name[name].message("en") and "処理しません" in by_name[name].message("ja")
    assert by_name["notes.txt"].message_key == "images.not_image"
    assert by_name["photos/good.jpg"].status == "added"
    assert [r["original_name"] for r in store.query("SELECT original_name FROM images")] == ["good.jpg"]
    assert not any("evil" in p for p in tree(tmp_path))


def test_non_utf8_zip_names_are_decoded_and_reported(store, expert, label):
    cp932 = _zip_with_raw_name("猫の写真.jpg".encode("cp932"), jpeg(10))
    utf8 = _zip_with_raw_name("ねこ.jpg".encode("utf-8"), jpeg(11))
    flagged = _zip([("犬.jpg", jpeg(12))])                  # zipfile sets the UTF-8 flag itself
    results = images.ingest_uploads(store, expert, label, [("a.zip", cp932), ("b.zip", utf8), ("c.zip", flagged)])
    assert [r.name for r in results] == ["a.zip: 猫の写真.jpg", "b.zip: ねこ.jpg", "c.zip: 犬.jpg"]
    assert [r.status for r in results] == ["added"] * 3
    assert results[0].message_key == "images.added_name_decoded"
    assert "cp932" in results[0].message("en") and "cp932 として読みました" in results[0].message("ja")
    assert results[1].params["encoding"] == "utf-8"
    assert results[2].message_key == "images.added"
    names = {r["original_name"] for r in store.query("SELECT original_name FROM images")}
    assert names == {"猫の写真.jpg", "ねこ.jpg", "犬.jpg"}


def test_broken_zip_and_entry_size_limit(store, expert, label, outside):
    good = jpeg(13, (64, 64))
    set_settings(store, upload_max_bytes=len(good) - 1)
    results = images.ingest_uploads(store, expert, label, [
        ("broken.zip", b"PK\x03\x04" + b"\0" * 50), ("big.zip", _zip([("big.jpg", good)]))])
    assert [r.message_key for r in results] == ["images.zip_bad", "images.too_large"]


def test_one_bad_file_does_not_abort_the_batch(store, expert, label):
    files = [("a.jpg", jpeg(20)), ("bad.jpg", b"nope"), ("b.jpg", jpeg(21)), ("empty.jpg", b"")]
    seen = []
    results = images.ingest_uploads(store, expert, label, files, progress=lambda d, n, name: seen.append((d, n)))
    assert [r.status for r in results] == ["added", "error", "added", "error"]
    assert seen[-1] == (4, 4)
    assert images.summarize(results) == {"added": 2, "duplicate": 0, "conflict": 0, "error": 2}
    [audit] = store.audit_rows("label", label)
    assert audit["action"] == "image.upload" and audit["details"]["added"] == 2


def test_failed_database_write_leaves_no_file(store, expert, label, outside, monkeypatch):
    from core.store import Store

    def broken_insert(self, table, *a, **kw):
        if table != "images":
            return real_insert(self, table, *a, **kw)
        raise OSError("disk on fire")
    real_insert = Store.insert
    monkeypatch.setattr(Store, "insert", broken_insert)
    results = images.ingest_uploads(store, expert, label, [("a.jpg", jpeg(30)), ("b.jpg", jpeg(31))])
    assert [r.message_key for r in results] == ["images.store_failed"] * 2
    assert "disk on fire" in results[0].message("en") and "保存できませんでした" in results[0].message("ja")
    assert list((store.home / "images").iterdir()) == []


# ---- duplicates ---------------------------------------------------------------------------------
def test_duplicate_same_label_skipped_other_label_conflict(store, expert, label):
    dog = make_label(store, "dog")
    data = jpeg(40)
    first = _one(store, expert, label, "x.jpg", data)
    again = images.ingest_uploads(store, expert, label, [("x-copy.jpg", data), ("y.jpg", jpeg(41))])
    assert [r.status for r in again] == ["duplicate", "added"]
    assert "already in this label" in again[0].message("en") and "スキップ" in again[0].message("ja")
    conflict = _one(store, expert, dog, "x.jpg", data)
    assert conflict.status == "conflict" and conflict.image_id == first.image_id
    assert "'cat'" in conflict.message("en") and "「cat」" in conflict.message("ja")
    assert images.get_image(store, first.image_id)["label_id"] == label     # not moved
    assert images.count_images(store, dog) == 0


# ---- labels and roles ---------------------------------------------------------------------------
def test_closed_labels_and_roles_are_refused(store, expert, supervisor, reviewer):
    retired = make_label(store, "old", status="retired")
    with pytest.raises(UserError) as err:
        images.ingest_uploads(store, expert, retired, [("a.jpg", jpeg(50))])
    assert err.value.key == "images.label_not_open" and "retired" in err.value.message("en")
    open_label = make_label(store, "new", status="proposed")
    with pytest.raises(UserError) as err:
        images.ingest_uploads(store, supervisor, open_label, [("a.jpg", jpeg(50))])
    assert err.value.key == "err.forbidden"
    [added] = images.ingest_uploads(store, expert, open_label, [("a.jpg", jpeg(50))])
    with pytest.raises(UserError):
        images.delete_images(store, expert, [added.image_id])
    with pytest.raises(UserError):
        images.move_images(store, reviewer, [added.image_id], retired)


def test_move_and_delete_are_audited_and_remove_files(store, expert, reviewer, label):
    dog = make_label(store, "dog")
    a, b = images.ingest_uploads(store, expert, label, [("a.jpg", jpeg(60)), ("b.jpg", jpeg(61))])
    split_before = images.get_image(store, a.image_id)["split"]
    assert images.move_images(store, reviewer, [a.image_id], dog) == 1
    moved = images.get_image(store, a.image_id)
    assert moved["label_id"] == dog and moved["split"] == split_before
    [audit] = store.audit_rows("image", a.image_id)
    assert (audit["action"], audit["actor"], audit["details"]["before"], audit["details"]["after"]) == \
        ("image.move", "rei", label, dog)
    row = images.get_image(store, b.image_id)
    thumb = images.thumbnail_path(store, row, size=32)
    assert thumb.exists() and Image.open(thumb).size[0] <= 32
    assert images.delete_images(store, reviewer, [b.image_id]) == 1
    assert not images.image_path(store, row).exists() and not thumb.exists()
    assert store.audit_rows("image", b.image_id)[0]["action"] == "image.delete"
    with pytest.raises(UserError):
        images.get_image(store, b.image_id)


# ---- splits and readiness -----------------------------------------------------------------------
def images_with_split(split: str, n: int, fraction: float = 0.2, start: int = 1000) -> list[bytes]:
    out, seed = [], start
    while len(out) < n:
        data = jpeg(seed)
        if images.hash_split(hashlib.sha256(data).hexdigest(), fraction) == split:
            out.append(data)
        seed += 1
    return out


def test_split_is_deterministic_across_fresh_homes(tmp_path, expert):
    files = [(f"{i}.jpg", jpeg(100 + i)) for i in range(30)]
    splits = []
    for home, order in (("h1", files), ("h2", list(reversed(files)))):
        s = Store(tmp_path / home)
        lab = make_label(s, "cat")
        images.ingest_uploads(s, expert, lab, order)
        splits.append({r["sha256"]: r["split"] for r in s.query("SELECT sha256, split FROM images")})
        s.close()
    assert splits[0] == splits[1]
    assert {"train", "holdout"} <= set(splits[0].values())
    for sha, split in splits[0].items():
        assert split == images.hash_split(sha, 0.2)
    fraction = sum(v == "holdout" for v in splits[0].values()) / 30
    assert 0.03 < fraction < 0.5


def test_fifth_image_gives_the_label_a_holdout_whatever_the_order(tmp_path, expert):
    train_only = images_with_split("train", 5)
    shas = sorted(hashlib.sha256(d).hexdigest() for d in train_only)
    outcomes = []
    for home, order in (("one-by-one", train_only), ("batch-reversed", None)):
        s = Store(tmp_path / home)
        lab = make_label(s, "cat")
        if order is not None:
            for i, data in enumerate(order):
                [r] = images.ingest_uploads(s, expert, lab, [(f"{i}.jpg", data)])
                n_holdout = images.readiness(s, [lab])[lab].n_holdout
                assert n_holdout == (1 if i == 4 else 0)
        else:
            images.ingest_uploads(s, expert, lab, [(f"{i}.jpg", d) for i, d in enumerate(reversed(train_only))])
        outcomes.append({r["sha256"]: r["split"] for r in s.query("SELECT sha256, split FROM images")})
        s.close()
    assert outcomes[0] == outcomes[1]
    assert [sha for sha, split in outcomes[0].items() if split == "holdout"] == [shas[0]]


def test_readiness_says_what_is_missing(store, expert, label):
    dog = make_label(store, "dog")
    images.ingest_uploads(store, expert, label, [(f"{i}.jpg", d) for i, d in enumerate(images_with_split("train", 3))])
    ready = images.readiness(store, [label, dog])
    assert ready[label] == images.Readiness(False, 3, 0, 2, 1)
    assert ready[dog] == images.Readiness(False, 0, 0, 5, 1)
    with pytest.raises(UserError) as err:
        images.require_ready(store, [label, dog])
    assert "'cat': train 3/5, holdout 0/1" in err.value.message("en")
    assert "「dog」: 学習用 0/5 枚、評価用 0/1 枚" in err.value.message("ja")
    more = images_with_split("train", 3, start=5000) + images_with_split("holdout", 1, start=5000)
    images.ingest_uploads(store, expert, label, [(f"m{i}.jpg", d) for i, d in enumerate(more)])
    assert images.readiness(store, [label])[label].ok
    set_settings(store, min_holdout_images=3)
    r = images.readiness(store, [label])[label]
    assert not r.ok and r.missing_holdout == 3 - r.n_holdout
    with pytest.raises(UserError) as err:
        images.require_ready(store, [label])
    assert "'dog'" not in err.value.message("en")


def test_label_counts(store, expert, label):
    make_label(store, "gone", status="rejected")
    images.ingest_uploads(store, expert, label, [("h.jpg", images_with_split("holdout", 1)[0]),
                                                 ("t.jpg", images_with_split("train", 1)[0])])
    assert images.label_counts(store) == [{"label_id": label, "name": "cat", "status": "approved",
                                           "n_train": 1, "n_holdout": 1}]


# ---- the package's shape --------------------------------------------------------------------------
def test_package_modules_are_small_and_import_at_the_top():
    """core/images is one module per job; none imports core.* inside a function (the label service
    used to be imported lazily four times to dodge a cycle that no longer exists)."""
    import ast
    from pathlib import Path

    folder = Path(images.__file__).parent
    for path in sorted(folder.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("core")]
                assert not lazy, f"{path.name}:{node.name} imports {lazy[0].module} inside a function"


@pytest.mark.parametrize("first", ["core.images", "core.images.folder", "core.images.scan", "core.labels",
                                   "core.settings", "core.cli"])
def test_no_import_cycle_whichever_module_comes_first(first):
    import subprocess
    import sys

    from tests.conftest import REPO
    done = subprocess.run([sys.executable, "-c", f"import {first}; from core import images; images.import_folder"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
