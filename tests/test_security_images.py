"""Issue 13 for images and the CLI: each test reproduces an attack that worked and fails on regression.

* item 3: an upload commits in batches, each with its own audit row; a killed upload leaves no image
  without an audit row, and its temporary files are swept on the next start;
* item 4: the dataset export's images.csv is formula-safe and reads back losslessly;
* item 6: folder import never follows symbolic links, the CLI acts only as an authenticated user (or as
  ``--as-system`` on the data home owner's account), and ``--create-labels`` reports what it committed;
* item 12: a JPEG with a zip appended (or a PNG with a payload) is stored as re-encoded pixels only;
  every zip trick refused before is still refused.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import cli, images, labels, settings, users
from core.auth import SYSTEM, Actor
from core.i18n import UserError
from core.images import staging
from core.store import Store
from tests.conftest import REPO
from tests.test_images import encode, jpeg, make_label, photo

PASSWORD = "mossy-anvil-47-harbour"


def _png(seed: int, size=(16, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), "PNG")


def _upload_audits(store: Store) -> list[dict]:
    return [r for r in store.audit_rows() if r["action"] == "image.upload"]


# ---- item 3: audit rows commit with the images they record ------------------------------------------------
KILLED_UPLOAD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    import numpy as np
    from PIL import Image
    import io
    from core import images
    from core.auth import Actor
    from core.store import Store
    try:
        from core.images import ingest
        ingest.BATCH_FILES = 40
    except ImportError:   # (before core/images became a package: lets this test show the old failure)
        pass
    store = Store({home!r})
    def png(i):
        rng = np.random.default_rng(i)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()
    files = [(f"{{i:04d}}.png", png(i)) for i in range(1500)]
    images.ingest_uploads(store, Actor("eri", "expert"), {label}, files,
                          progress=lambda done, total, name: time.sleep(0.01))
""")


def test_a_killed_upload_leaves_no_image_without_its_audit_row(tmp_path):
    home = tmp_path / "home"
    store = Store(home)
    label = make_label(store, "cat")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD.format(repo=str(REPO), home=str(home), label=label)],
                            cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while store.query_one("SELECT COUNT(*) AS n FROM images")["n"] < 100:   # a few batches committed
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the upload did not get going"
            time.sleep(0.05)
        time.sleep(0.15)                                          # mid-way through the next batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    rows = store.query("SELECT id FROM images")
    assert 100 <= len(rows) < 1500
    audits = _upload_audits(store)
    assert audits, "images committed without any audit row"
    audited_ids = sorted(i for a in audits for i in a["details"]["image_ids"])
    assert audited_ids == sorted(r["id"] for r in rows)            # every committed image is audited
    assert sum(a["details"]["added"] for a in audits) == len(rows)
    assert len({a["details"]["upload"] for a in audits}) == 1 and len(audits) == len(rows) // 40
    # the killed process left its staging folder behind; the next start sweeps it (and nothing else)
    leftovers = list((home / "tmp").glob("upload-*"))
    assert leftovers and any(p.name != staging.LOCK_NAME for d in leftovers for p in d.iterdir())
    removed = images.remove_stale_uploads(store)
    assert removed["folders"] == len(leftovers) and list((home / "tmp").iterdir()) == []
    assert sorted(p.name for p in (home / "images").iterdir()) == sorted(
        Path(r["path"]).name for r in store.query("SELECT path FROM images"))


def test_a_batch_whose_audit_row_fails_is_not_committed(store, expert, monkeypatch):
    label = make_label(store, "cat")
    real_audit = store.audit

    def failing_audit(actor, action, *args, **kwargs):
        if action == "image.upload" and "failed" not in kwargs:
            raise OSError("disk full")
        return real_audit(actor, action, *args, **kwargs)

    monkeypatch.setattr(store, "audit", failing_audit)
    results = images.ingest_uploads(store, expert, label, [(f"{i}.png", _png(i)) for i in range(3)])
    assert [r.message_key for r in results] == ["images.store_failed"] * 3
    assert store.query("SELECT * FROM images") == [] and list((store.home / "images").iterdir()) == []
    [audit] = _upload_audits(store)                                  # the failure itself is recorded
    assert audit["details"]["error"] == 3 and audit["details"]["failed"] == "disk full"


def _fake_dead_folder(home: Path, name: str, age: float = 0.0) -> Path:
    folder = home / "tmp" / name
    folder.mkdir(parents=True)
    (folder / staging.LOCK_NAME).touch()
    (folder / "f-x.png").write_bytes(b"half written")
    if age:
        os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def test_temporary_files_of_dead_processes_are_removed_on_start_live_ones_kept(store, expert):
    import fcntl

    label = make_label(store, "cat")
    [kept] = images.ingest_uploads(store, expert, label, [("a.png", _png(1))])
    dead = _fake_dead_folder(store.home, "upload-999999-dead")
    live = _fake_dead_folder(store.home, "upload-999998-live")
    fd = os.open(live / staging.LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                                   # a live upload holds its lock
    legacy = store.home / "tmp" / "upload-k2j4.png"                   # the layout before this change
    legacy.write_bytes(b"x")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    orphan = store.home / "images" / f"{'0' * 64}.png"                 # placed, its row never committed
    orphan.write_bytes(b"x")
    try:
        staging._SWEPT.discard(store.home / "tmp")                     # as in a freshly started process
        [again] = images.ingest_uploads(store, expert, label, [("b.png", _png(2))])
        assert again.status == "added"
        assert not dead.exists() and not legacy.exists() and not orphan.exists()
        assert live.exists() and (live / "f-x.png").exists()
        assert images.image_path(store, images.get_image(store, kept.image_id)).exists()
    finally:
        os.close(fd)
    assert images.remove_stale_uploads(store)["folders"] == 1        # the lock is gone: now it is stale


# ---- item 4: formula-safe images.csv --------------------------------------------------------------------
DANGEROUS = ['=HYPERLINK("http://evil.example","click")', "+1 scratch", "-dent", "@SUM(A1)", "'quoted", "\tcut"]


def test_dataset_export_csv_is_formula_safe_and_reads_back_losslessly(store, expert, supervisor, tmp_path):
    ids = {}
    for n, name in enumerate(DANGEROUS):
        ids[name] = make_label(store, name)
        images.ingest_uploads(store, expert, ids[name], [(f"{name[:3]}.jpg", jpeg(300 + n))])
    dest = tmp_path / "out.zip"
    images.export_dataset(store, supervisor, dest)
    with zipfile.ZipFile(dest) as zf:
        data = zf.read("images.csv")
    raw = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in raw for cell in row)
    rows = images.read_images_csv(data)
    assert sorted(r["label_name"] for r in rows) == sorted(DANGEROUS)
    assert {r["label_name"]: int(r["label_id"]) for r in rows} == ids


def test_reimporting_an_export_finds_labels_by_their_names_in_images_csv(tmp_path, expert, reviewer):
    source = Store(tmp_path / "a")
    for n, name in enumerate(["a/b", "=cmd"]):
        label = make_label(source, name)
        images.ingest_uploads(source, expert, label, [(f"{n}-{i}.jpg", jpeg(400 + 10 * n + i)) for i in range(3)])
    images.export_dataset(source, reviewer, tmp_path / "tree", fmt="folder")
    assert {p.name for p in (tmp_path / "tree" / "train").iterdir()} >= {"a_b"}
    target = Store(tmp_path / "b")
    existing = make_label(target, "a/b")                              # matched although its folder is a_b
    report = images.import_folder(target, reviewer, tmp_path / "tree", create_labels=True)
    assert report.counts["error"] == 0, [r.message("en") for r in report.results if r.status == "error"]
    assert report.labels["a_b"] == existing
    made = labels.get_label(target, report.labels[next(f for f in report.labels if f != "a_b")])
    assert made["name"] == "=cmd" and report.created == [next(f for f in report.labels if f != "a_b")]


# ---- item 6: the folder import stays inside its folder ------------------------------------------------------
def test_folder_import_refuses_file_and_folder_symlinks(tmp_path, reviewer):
    store = Store(tmp_path / "home")
    label = make_label(store, "cat")
    outside = tmp_path / "outside"
    (outside / "private").mkdir(parents=True)
    (outside / "secret.png").write_bytes(_png(50))
    (outside / "private" / "x.png").write_bytes(_png(51))
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "ok.png").write_bytes(_png(52))
    (root / "cat" / "leak.png").symlink_to(outside / "secret.png")
    (root / "dog").symlink_to(outside / "private", target_is_directory=True)
    report = images.import_folder(store, reviewer, root)
    assert report.counts == {"added": 1, "duplicate": 0, "conflict": 0, "error": 2}
    refused = {r.name: r for r in report.results if r.status == "error"}
    assert set(refused) == {"cat/leak.png", "dog"} and report.links == ["dog", "cat/leak.png"]
    assert all(r.message_key == "images.folder_symlink" for r in refused.values())
    assert "symbolic link" in refused["dog"].message("en") and "シンボリックリンク" in refused["dog"].message("ja")
    assert [r["original_name"] for r in store.query("SELECT original_name FROM images")] == ["ok.png"]
    assert images.count_images(store, label) == 1


def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(60))
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(_png(61))
    scan = images.scan_image_folder(root)
    assert list(scan) == [("cat/a.png", "cat", None)]
    (root / "cat" / "a.png").unlink()
    (root / "cat" / "a.png").symlink_to(outside)
    with pytest.raises(images.base.Rejected) as rej:
        images.read_inside(scan.root, "cat/a.png", 10_000_000)
    assert rej.value.key == "images.folder_symlink"
    (root / "cat" / "a.png").unlink()
    os.rename(root / "cat", root / "cat-real")
    (root / "cat").symlink_to(tmp_path, target_is_directory=True)     # a parent folder swapped for a link
    with pytest.raises(images.base.Rejected):
        images.read_inside(scan.root, "cat/secret.png", 10_000_000)
    with pytest.raises(images.base.Rejected):
        images.read_inside(scan.root, "../secret.png", 10_000_000)


def test_the_scanner_lists_one_extension_list_and_both_layouts(tmp_path):
    flat = tmp_path / "flat"
    for cls in ("b", "a"):
        (flat / cls).mkdir(parents=True)
        for name in ("2.PNG", "1.jpeg", "notes.txt", ".DS_Store"):
            (flat / cls / name).write_bytes(b"x")
    scan = images.scan_image_folder(flat)
    assert list(scan) == [("a/1.jpeg", "a", None), ("a/2.PNG", "a", None), ("b/1.jpeg", "b", None),
                          ("b/2.PNG", "b", None)]
    assert scan.skipped == ("a/notes.txt", "b/notes.txt") and scan.label_names == ["a", "b"]
    split = tmp_path / "split"
    for part, cls in (("train", "a"), ("Test", "a"), ("val", "b")):
        (split / part / cls).mkdir(parents=True)
        (split / part / cls / "x.webp").write_bytes(b"x")
    scan = images.scan_image_folder(split)
    assert list(scan) == [("Test/a/x.webp", "a", "test"), ("train/a/x.webp", "a", "train"),
                          ("val/b/x.webp", "b", "val")]
    with pytest.raises(UserError):
        images.scan_image_folder(tmp_path / "missing")


# ---- item 6: the CLI acts as an authenticated user ----------------------------------------------------------
@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SGCL_PASSWORD", raising=False)
    root, home = tmp_path / "data", tmp_path / "home"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(_png(70))
    store = Store(home)
    make_label(store, "cat")
    users.create_user(store, SYSTEM, "rei", PASSWORD, "reviewer")
    return root, home, store


def test_cli_user_must_prove_who_they_are(cli_home, capsys, monkeypatch):
    root, home, store = cli_home
    args = ["import-folder", str(root), "--home", str(home), "--lang", "en"]
    assert cli.main(args) == 2                                        # nobody named: refused
    assert "--user NAME" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert cli.main(args + ["--user", "rei"]) == 2                    # a name alone proves nothing
    assert "SGCL_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("SGCL_PASSWORD", "not-the-password")
    assert cli.main(args + ["--user", "rei"]) == 2
    assert users.get_user(store, "rei")["failed_logins"] == 1         # counts towards the lockout
    assert store.query("SELECT * FROM images") == []
    monkeypatch.setenv("SGCL_PASSWORD", PASSWORD)
    assert cli.main(args + ["--user", "rei"]) == 0
    assert {r["uploaded_by"] for r in store.query("SELECT uploaded_by FROM images")} == {"rei"}


def test_cli_asks_for_the_password_on_a_terminal(cli_home, monkeypatch):
    root, home, store = cli_home
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or PASSWORD)
    assert cli.main(["import-folder", str(root), "--home", str(home), "--user", "rei", "--lang", "ja"]) == 0
    assert asked == ["rei のパスワード: "]


def test_as_system_is_only_for_the_account_that_owns_the_data_home(cli_home, capsys, monkeypatch):
    root, home, store = cli_home
    args = ["import-folder", str(root), "--home", str(home), "--lang", "en"]
    owner = home.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    assert cli.main(args + ["--as-system"]) == 2
    assert "only for the account that owns the data home" in capsys.readouterr().err
    monkeypatch.setattr(os, "geteuid", lambda: owner)
    assert cli.main(args + ["--as-system", "--user", "rei"]) == 2      # one identity at a time
    assert cli.main(args + ["--as-system"]) == 0
    [used] = [r for r in store.audit_rows("cli") if r["action"] == "cli.as_system"]
    assert used["actor"] == "system" and used["target_id"] == "import-folder" and used["details"]["os_user"]


@pytest.mark.parametrize("role, approved", [("expert", False), ("reviewer", True)])
def test_create_labels_reports_exactly_what_it_committed(tmp_path, capsys, monkeypatch, role, approved):
    root, home = tmp_path / "data", tmp_path / "home"
    for cls in ("widget", "gadget"):
        (root / cls).mkdir(parents=True)
        (root / cls / "a.png").write_bytes(_png(80 + len(cls)))
    store = Store(home)
    users.create_user(store, SYSTEM, "kai", PASSWORD, role)
    monkeypatch.setenv("SGCL_PASSWORD", PASSWORD)
    assert cli.main(["import-folder", str(root), "--home", str(home), "--user", "kai", "--create-labels",
                     "--lang", "en"]) == 0
    out = capsys.readouterr().out
    made = labels.list_labels(store)
    drafts = store.query("SELECT id FROM glossary_entries WHERE status = 'draft'")
    assert len(made) == 2 and len(drafts) == 2
    assert {l["status"] for l in made} == {"approved" if approved else "proposed"}
    waiting = 0 if approved else 2
    assert f"2 created, {waiting} of them awaiting review; 2 new draft glossary entries" in out
    assert images.count_images(store, made[0]["id"]) == 1
    [summary] = [r for r in store.audit_rows("folder") if r["action"] == "image.import_folder"]
    assert sorted(summary["details"]["created"]) == ["gadget", "widget"]
    assert sorted(summary["details"]["new_entries"]) == sorted(d["id"] for d in drafts)


# ---- item 12: what is stored is pixels only -----------------------------------------------------------------
def _zip_payload() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.sh", "#!/bin/sh\necho owned\n")
    return buf.getvalue()


def _png_chunks(data: bytes) -> tuple[list[bytes], bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.append(kind)
        pos += 12 + length
        if kind == b"IEND":
            break
    return kinds, data[pos:]


def test_a_jpeg_with_a_zip_appended_is_stored_as_pixels_only(store, expert):
    label = make_label(store, "cat")
    exif = Image.Exif()
    exif[0x010E] = "<script>alert(1)</script>"                        # ImageDescription
    exif[0x0112] = 6                                                  # rotate 90° to display
    src = Image.open(io.BytesIO(photo(5, (40, 20))))
    clean_jpeg = encode(src, "JPEG", exif=exif, quality=90, comment=b"hidden comment",
                        icc_profile=b"\0" * 128)
    polyglot = clean_jpeg + _zip_payload()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))                   # the attack: an image that is a zip
    [result] = images.ingest_uploads(store, expert, label, [("cat.jpg", polyglot)])
    assert result.status == "added"
    row = images.get_image(store, result.image_id)
    stored = images.image_path(store, row).read_bytes()
    assert not zipfile.is_zipfile(io.BytesIO(stored)) and b"PK\x03\x04" not in stored and b"owned" not in stored
    assert stored.endswith(b"\xff\xd9")                                # nothing after the image
    assert b"script" not in stored and b"hidden comment" not in stored
    with Image.open(io.BytesIO(stored)) as img:
        assert img.size == (20, 40) == (row["width"], row["height"])   # orientation applied
        assert [marker for marker, _ in img.applist] == ["APP0"]      # JFIF header only: no EXIF, ICC
        assert not {"exif", "icc_profile", "comment"} & set(img.info)
    # identity is the upload: the same bytes again are a duplicate, although a clean copy was stored
    assert row["sha256"] == hashlib.sha256(polyglot).hexdigest()
    [again] = images.ingest_uploads(store, expert, label, [("again.jpg", polyglot)])
    assert again.status == "duplicate"


def test_a_png_payload_in_a_text_chunk_or_after_iend_is_dropped(store, expert):
    from PIL import PngImagePlugin

    label = make_label(store, "cat")
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<?php system($_GET['c']); ?>")
    data = encode(Image.fromarray(np.full((8, 8, 3), 77, np.uint8)), "PNG", pnginfo=info) + _zip_payload()
    assert _png_chunks(data)[1]                                        # trailing bytes after IEND
    [result] = images.ingest_uploads(store, expert, label, [("x.png", data)])
    stored = images.image_path(store, images.get_image(store, result.image_id)).read_bytes()
    kinds, trailing = _png_chunks(stored)
    assert set(kinds) == {b"IHDR", b"IDAT", b"IEND"} and trailing == b""
    assert np.asarray(Image.open(io.BytesIO(stored))).tolist() == np.full((8, 8, 3), 77, np.uint8).tolist()


def _encrypted_flag(archive: bytes) -> bytes:
    """Set the 'encrypted' bit on every entry (local headers and central directory)."""
    out = bytearray(archive)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos != -1:
            out[pos + offset] |= 0x1
            pos = out.find(sig, pos + 4)
    return bytes(out)


def test_zip_tricks_refused_before_are_still_refused(store, expert):
    label = make_label(store, "cat")
    settings.update(store, SYSTEM, {"upload_max_bytes": 1024 * 1024, "upload_max_zip_entries": 5})

    def zipped(entries, compression=zipfile.ZIP_STORED) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
        return buf.getvalue()

    bomb = zipped([("bomb.png", b"\0" * (8 * 1024 * 1024))], zipfile.ZIP_DEFLATED)   # 8 MB in ~8 KB
    assert len(bomb) < 64 * 1024
    cases = {
        "slip.zip": (zipped([("../../evil.png", _png(90))]), "images.zip_unsafe_path"),
        "nested.zip": (zipped([("inner.zip", zipped([("x.png", _png(91))]))]), "images.zip_nested"),
        "encrypted.zip": (_encrypted_flag(zipped([("x.png", _png(92))])), "images.zip_encrypted"),
        "bomb.zip": (bomb, "images.too_large"),
        "many.zip": (zipped([(f"{i}.png", _png(100 + i)) for i in range(6)]), "images.zip_too_many"),
        "pixels.png": (encode(Image.new("1", (20_000, 20_000)), "PNG"), "images.decompression_bomb"),
    }
    results = images.ingest_uploads(store, expert, label, [(name, data) for name, (data, _) in cases.items()])
    assert [r.message_key for r in results] == [key for _, key in cases.values()]
    assert store.query("SELECT * FROM images") == []
    assert list((store.home / "images").iterdir()) == []
    assert not list(store.home.rglob("evil.png"))
