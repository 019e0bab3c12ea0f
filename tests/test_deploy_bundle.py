"""Model bundles: what the export writes, that the torch-free runtime reproduces the app's answers on
the golden images and on new 200-px JPEGs, that a bundle failing the parity check is not written,
who may export, and folder inference (CSV, sorting, bad files) through the CLI."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.auth import Actor
from core.i18n import UserError
from core.prediction import predict_image
from core.runtime import BadBundle, BadImage, Bundle, decode
from core.sg.data import decode_image
from deploy_fixtures import ADMIN, SUPERVISOR, deployed, jpeg  # noqa: F401  (fixture)
from test_worker import REPO, REVIEWER


def _manifest(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json")), zf.namelist(), zf.read("labels.txt").decode(), zf.read("model.onnx")


def test_bundle_holds_model_manifest_labels_and_golden_images(deployed):
    from core.sg.checkpoint import load_checkpoint
    from core.training import checkpoint_path

    store = deployed["store"]
    manifest, names, labels_txt, model = _manifest(deployed["bundle"])
    assert deployed["bundle"] == store.home / "bundles" / str(deployed["run"]) / "1.zip"
    table = load_checkpoint(checkpoint_path(store, deployed["run"], 1))["class_table"]
    assert [c["id"] for c in manifest["classes"]] == table["class_ids"]
    assert [c["name"] for c in manifest["classes"]] == ["cat", "dog", "bird"] == labels_txt.splitlines()
    assert manifest["model"]["sha256"] == hashlib.sha256(model).hexdigest()
    assert manifest["model"]["task"] == 2 and manifest["model"]["encoder"].startswith("tiny-test")
    assert manifest["preprocessing"]["size"] == 32 and len(manifest["preprocessing"]["mean"]) == 3
    holdout = store.query("SELECT label_id, COUNT(*) AS n FROM images WHERE split = 'holdout' GROUP BY label_id")
    assert {r["label_id"]: r["n"] for r in holdout} == {a["id"]: a["images"] for a in manifest["holdout_accuracy"]}
    assert manifest["parity"]["images"] == sum(r["n"] for r in holdout)
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["score_atol"]
    assert manifest["unknown"]["score"] in ("prototype", "class", "maha") and "conformal" in manifest["unknown"]["calibration"]
    assert manifest["golden"] and all(g["file"] in names for g in manifest["golden"])
    assert manifest["created_by"] == ADMIN.username
    exports = [r for r in store.audit_rows("run", deployed["run"]) if r["action"] == "model.export"]
    assert len(exports) == 2


def test_runtime_reproduces_the_app_on_golden_and_new_images(deployed):
    store = deployed["store"]
    bundle = Bundle.open(deployed["bundle"])
    golden = bundle.golden()
    preds = bundle.predict([data for data, _ in golden])
    for pred, (data, expected) in zip(preds, golden):
        assert pred.index == expected["expected_index"] and pred.unknown == expected["expected_unknown"]
    fresh = [jpeg(name, 9000 + i) for i, name in enumerate(["cat", "dog", "bird"] * 3)]
    for data, pred in zip([d for d, _ in golden] + fresh, bundle.predict([d for d, _ in golden] + fresh)):
        app = predict_image(store, REVIEWER, deployed["run"], data)
        assert pred.best_name == app["predictions"][0]["name"]
        assert pred.score == pytest.approx(app["predictions"][0]["score"], abs=1e-4)
        assert pred.familiarity == pytest.approx(app["best"], abs=1e-4)
        assert pred.unknown == app["rejected"]
        assert pred.label_id == (None if app["rejected"] else app["predictions"][0]["label_id"])


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_runtime_decodes_pixels_exactly_as_the_app():
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (150, 260, 3), dtype=np.uint8))
    samples = [
        _encoded(rgb, "JPEG", quality=85),                                   # draft-scale path
        _encoded(rgb.resize((1200, 700)), "JPEG"),
        _encoded(rgb.convert("RGBA"), "PNG"),
        _encoded(rgb.convert("L"), "PNG"),
        _encoded(rgb.convert("P"), "GIF"),
        _encoded(Image.fromarray(rng.integers(0, 65535, (40, 50), dtype=np.uint16)), "PNG"),
        _encoded(rgb.convert("CMYK"), "JPEG"),
        _encoded(rgb, "WEBP"),
    ]
    for data in samples:
        for size in (32, 224):
            assert np.array_equal(decode(data, size), decode_image(data, size))


def test_bad_images_and_bundles_are_clear_errors(tmp_path, deployed):
    bundle = Bundle.open(deployed["bundle"])
    for bad in (b"", b"not an image", jpeg("cat", 1)[:200]):
        with pytest.raises(BadImage):
            bundle.predict([bad])
    with pytest.raises(BadImage, match="too many pixels"):
        decode(_encoded(Image.new("RGB", (3000, 3000)), "PNG"), 32, max_pixels=1_000_000)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK not really")
    with pytest.raises(BadBundle):
        Bundle.open(junk)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(deployed["bundle"]) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data + b"\0" if name == "model.onnx" else data)
    with pytest.raises(BadBundle, match="sha256"):
        Bundle.open(tampered)


def test_only_supervisors_and_admins_export_and_a_failed_parity_check_writes_nothing(deployed, monkeypatch):
    from core.deploy import bundle as exporter

    store, run = deployed["store"], deployed["run"]
    with pytest.raises(UserError) as err:
        exporter.export_bundle(store, Actor("eri", "expert"), run, 0)
    assert err.value.key == "err.forbidden"
    target = exporter.bundle_path(store, run, 0)
    before = target.read_bytes()
    monkeypatch.setattr(exporter, "SCORE_ATOL", -1.0)          # nothing can pass
    with pytest.raises(exporter.ExportFailed) as err:
        exporter.export_bundle(store, SUPERVISOR, run, 0)
    assert err.value.key == "deploy.parity_scores"
    monkeypatch.undo()
    import core.runtime.preprocess as pre

    real = pre.decode
    monkeypatch.setattr(pre, "decode", lambda data, size, *a: real(data, size)[:, ::-1].copy())
    with pytest.raises(exporter.ExportFailed) as err:
        exporter.export_bundle(store, SUPERVISOR, run, 0)
    assert err.value.key == "deploy.parity_pixels"
    assert target.read_bytes() == before                        # the good bundle is still the one offered
    name, data = exporter.stored_bundle(store, SUPERVISOR, run, 0)
    assert name.endswith("task1.zip") and data == before
    with pytest.raises(UserError):
        exporter.stored_bundle(store, Actor("eri", "expert"), run, 0)


def _cli(*args, home):
    env = {"SGCL_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "SGCL_ENCODER": "tiny-test"}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_export_model_and_predict_folder(deployed, tmp_path):
    store = deployed["store"]
    out = tmp_path / "model.zip"
    proc = _cli("export-model", str(deployed["run"]), str(out), "--task", "2", "--as-system", "--lang", "en",
                home=store.home)
    assert proc.returncode == 0, proc.stderr
    manifest, *_ = _manifest(out)
    assert manifest["model"]["task"] == 2 and str(out) in proc.stdout

    folder = tmp_path / "line"
    folder.mkdir()
    images = {f"{name}{i}.jpg": jpeg(name, 500 + 10 * n + i) for n, name in enumerate(["cat", "dog", "bird"])
              for i in range(2)}
    for fname, data in images.items():
        (folder / fname).write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    sorted_dir, csv_path = tmp_path / "sorted", tmp_path / "out.csv"
    proc = _cli("predict-folder", str(folder), "--bundle", str(out), "--csv", str(csv_path),
                "--sort-into", str(sorted_dir), home=store.home)
    assert proc.returncode == 1, proc.stderr              # one unreadable file
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(rows) == 7 and {r["model_version"] for r in rows} == {manifest["model"]["version"]}
    broken = [r for r in rows if r["file"].endswith("broken.jpg")][0]
    assert broken["error"] and not broken["class"]
    bundle = Bundle.open(out)
    for r in rows:
        if r["error"]:
            assert (sorted_dir / "_error" / "broken.jpg").exists()
            continue
        pred = bundle.predict([images[r["file"].rsplit("/", 1)[1]]])[0]
        assert r["class"] == pred.name and int(r["unknown"]) == pred.unknown
        assert float(r["score"]) == pytest.approx(pred.score, abs=1e-4)
        where = "_unknown" if pred.unknown else pred.name
        assert (sorted_dir / where / r["file"].rsplit("/", 1)[1]).exists()

    # the torch-free entry point prints the same classes
    proc = subprocess.run([sys.executable, "-m", "core.runtime", str(out), *[str(folder / f) for f in images], "--csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    again = list(csv.DictReader(io.StringIO(proc.stdout)))
    by_file = {r["file"]: r["class"] for r in rows}
    assert [r["class"] for r in again] == [by_file[r["file"]] for r in again]


def test_the_worker_exports_a_bundle_after_each_task_and_a_failed_export_leaves_the_task_done(tmp_path, monkeypatch):
    from core import jobs, runs
    from core.store import Store
    from core.worker import Worker
    from test_worker import make_labels

    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    store = Store(tmp_path / "home")
    ids = make_labels(store, ["cat", "dog", "bird"], per_label=6)
    run = runs.create_run(store, REVIEWER, "w", config={"epochs": 1, "batch_size": 16})
    runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    worker = Worker(store, poll=0.1, stale_after=30)
    assert worker.step() == "done"
    path = store.home / "bundles" / str(run["id"]) / "0.zip"
    assert Bundle.open(path).manifest["created_by"] == "system"

    import core.deploy.bundle as exporter

    def broken(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(exporter, "export_bundle", broken)
    queued = runs.request_task(store, REVIEWER, run["id"], [ids["bird"]])
    assert worker.step() == "done"
    assert jobs.get_job(store, queued["job_id"])["status"] == "done"
    assert not (store.home / "bundles" / str(run["id"]) / "1.zip").exists()
    failed = [r for r in store.audit_rows("run", run["id"]) if r["action"] == "model.export_failed"]
    assert len(failed) == 1 and "disk full" in str(failed[0]["details"])
