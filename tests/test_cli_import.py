"""``python -m core.cli import-folder`` / ``export``: ImageNet-style folders in, labels matched or
created through core.labels, the given train/test split kept, a summary with images/s printed.
(Who may run them — passwords, ``--as-system``, symlinks — is in tests/test_security_images.py.)"""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

import shutil

from core import cli, images, labels, users
from core.auth import SYSTEM, Actor
from core.i18n import UserError
from core.store import Store
from tests.conftest import REPO, shared_datasets
from tests.test_images import jpeg

PASSWORD = "mossy-anvil-47-harbour"


def _write_tree(root, layout: dict[str, dict[str, int]], seed: int = 0) -> None:
    for split, classes in layout.items():
        for cls, n in classes.items():
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:03d}.jpg").write_bytes(jpeg(seed + hash((split, cls)) % 10_000 * 100 + i))
            (d / ".DS_Store").write_bytes(b"junk")


def test_import_with_train_test_keeps_split_and_creates_labels(tmp_path, capsys):
    root, home = tmp_path / "data", tmp_path / "home"
    _write_tree(root, {"train": {"widget": 6, "gadget": 5}, "test": {"widget": 2, "gadget": 1}})
    assert cli.main(["import-folder", str(root), "--home", str(home), "--create-labels", "--as-system",
                     "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "added 14, duplicates 0, conflicts 0, errors 0" in out and "images/s" in out
    assert "2 created, 0 of them awaiting review; 2 new draft glossary entries" in out
    store = Store(home)
    made = {l["name"]: l for l in labels.list_labels(store)}
    assert set(made) == {"widget", "gadget"}
    assert {l["status"] for l in made.values()} == {"approved"}
    assert {l["created_by"] for l in made.values()} == {"system"}
    counts = {c["name"]: (c["n_train"], c["n_holdout"]) for c in images.label_counts(store)}
    assert counts == {"widget": (6, 2), "gadget": (5, 1)}
    assert images.readiness(store, [made["gadget"]["id"]])[made["gadget"]["id"]].ok
    # a second run finds only duplicates, and says so in Japanese by default
    assert cli.main(["import-folder", str(root), "--home", str(home), "--as-system"]) == 0
    assert "追加 0、重複 14" in capsys.readouterr().out


def test_existing_label_is_matched_and_unknown_folders_reported(tmp_path, capsys, monkeypatch):
    root, home = tmp_path / "data", tmp_path / "home"
    _write_tree(root, {"": {"Bolt": 3, "nut": 2}})
    store = Store(home)
    bolt = labels.propose(store, Actor("eri", "expert"), "bolt", create_entry=True)
    users.create_user(store, SYSTEM, "rei", PASSWORD, "reviewer")
    monkeypatch.setenv("SGCL_PASSWORD", PASSWORD)
    code = cli.main(["import-folder", str(root), "--home", str(home), "--user", "rei", "--lang", "en"])
    out = capsys.readouterr().out
    assert code == 1
    assert "No label matches folder 'nut'" in out and "added 3" in out
    rows = store.query("SELECT label_id, split, uploaded_by, sha256 FROM images")
    assert {(r["label_id"], r["uploaded_by"]) for r in rows} == {(bolt["id"], "rei")}
    # with no train/test folders the hash rule decides the split
    assert [r["split"] for r in rows] == [images.hash_split(r["sha256"], 0.2) for r in rows]


def test_unknown_user_and_permissions_are_refused(tmp_path, capsys, monkeypatch):
    root, home = tmp_path / "data", tmp_path / "home"
    _write_tree(root, {"": {"x": 1}})
    monkeypatch.setenv("SGCL_PASSWORD", PASSWORD)
    assert cli.main(["import-folder", str(root), "--home", str(home), "--user", "ghost", "--lang", "en"]) == 2
    store = Store(home)
    with pytest.raises(UserError) as refusal:                # what the login form answers for that name
        users.authenticate(store, "ghost", PASSWORD)
    assert refusal.value.message("en") in capsys.readouterr().err
    users.create_user(store, SYSTEM, "sora", PASSWORD, "supervisor")
    assert cli.main(["import-folder", str(root), "--home", str(home), "--user", "sora"]) == 2
    assert "画像のアップロード" in capsys.readouterr().err          # the refused action, in Japanese (default)
    assert cli.main(["import-folder", str(tmp_path / "missing"), "--home", str(home), "--as-system",
                     "--lang", "ja"]) == 2
    assert "がありません" in capsys.readouterr().err
    assert store.query("SELECT * FROM images") == []


def test_export_command_and_module_entry_point(tmp_path):
    root, home = tmp_path / "data", tmp_path / "home"
    _write_tree(root, {"train": {"cog": 5}, "test": {"cog": 1}})
    env_cmd = [sys.executable, "-m", "core.cli"]
    done = subprocess.run(env_cmd + ["import-folder", str(root), "--home", str(home), "--create-labels",
                                     "--as-system", "--lang", "en"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "added 6" in done.stdout
    dest = tmp_path / "cog.zip"
    assert cli.main(["export", str(dest), "--home", str(home), "--as-system"]) == 0
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
    assert sum(n.startswith("train/cog/") for n in names) == 5
    assert sum(n.startswith("test/cog/") for n in names) == 1 and "images.csv" in names


@pytest.mark.slow
@pytest.mark.parametrize("dataset, classes", [("cifar10", ["cat", "ship"]), ("caltech101", ["Faces", "anchor"])])
def test_import_shared_dataset_subset(tmp_path, capsys, dataset, classes):
    source = shared_datasets() / dataset
    root = tmp_path / dataset
    expected = {}
    for split in ("train", "test"):
        for cls in classes:
            # Copied, not linked: folder import refuses symbolic links (tests/test_security_images.py).
            shutil.copytree(source / split / cls, root / split / cls)
            expected[(cls, split)] = sum(1 for p in (source / split / cls).iterdir() if p.is_file())
    home = tmp_path / "home"
    assert cli.main(["import-folder", str(root), "--home", str(home), "--create-labels", "--as-system",
                     "--lang", "en"]) == 0
    assert "errors 0" in capsys.readouterr().out
    counts = {c["name"]: c for c in images.label_counts(Store(home))}
    for cls in classes:
        assert counts[cls]["n_train"] == expected[(cls, "train")]
        assert counts[cls]["n_holdout"] == expected[(cls, "test")]


def test_init_prepares_a_fresh_home_and_prints_the_admin_password_once(tmp_path, capsys, monkeypatch):
    from core.cli import main
    from core.users import authenticate

    monkeypatch.delenv("SGCL_ADMIN_PASSWORD", raising=False)
    assert main(["init", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    assert "starter glossary" in out
    assert main(["init", "--home", str(tmp_path)]) == 0
    assert "password" not in capsys.readouterr().out          # shown once only
    assert authenticate(Store(tmp_path), "admin", password).role == "admin"
