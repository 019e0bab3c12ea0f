"""Export a completed task as a model bundle, parity-checked against the app's own PyTorch path.

``export_bundle(store, actor, run_id, task_idx=None)`` → the path of ``bundles/<run>/<task>.zip`` in
the data home (format: core/runtime/bundle.py). Steps:

1. Load the task's checkpoint exactly as Predict does (core/prediction.py) on the CPU.
2. ``model.onnx`` = the frozen prefix + the method's head (core/sg/export.py), float32.
3. Parity: every holdout image of the bundle's classes (and the golden images) is decoded twice — by
   the app's decoder (``core.sg.data.decode_image``) and by the runtime's (core/runtime/preprocess.py)
   — and the pixels must be identical; then scored by the app (``learner.class_scores`` /
   ``familiarity``) and by ONNX Runtime through the runtime's own code. Top-1 must be identical on
   every image and scores and familiarity within ``SCORE_ATOL``, and "unknown" must agree except where
   the familiarity lies within ``SCORE_ATOL`` of the threshold; otherwise :class:`ExportFailed` and no
   bundle is written.
4. ``manifest.json`` (versions, classes, preprocessing, threshold and calibration, per-class holdout
   accuracy with counts, parity figures, created by/at), ``labels.txt``, golden images with their
   expected outputs. Written atomically; audited as ``model.export``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

from core.auth import Actor, require
from core.i18n import UserError
from core.store import Store, now_iso

SCORE_ATOL = 1e-3          # max |ONNX − PyTorch| allowed on cosines and familiarity
GOLDEN_PER_CLASS = 1
GOLDEN_MAX = 8
BATCH = 32


class ExportFailed(UserError):
    pass


def bundle_path(store: Store, run_id: int, task_idx: int) -> Path:
    return store.home / "bundles" / str(int(run_id)) / f"{int(task_idx)}.zip"


def latest_bundle(store: Store, run_id: int) -> Path | None:
    """The bundle of the run's highest task number that exists, or None."""
    folder = store.home / "bundles" / str(int(run_id))
    found = [(int(p.stem), p) for p in folder.glob("*.zip") if p.stem.isdigit()] if folder.is_dir() else []
    return max(found)[1] if found else None


def _holdout_rows(store: Store, label_ids: list[int]) -> list[dict]:
    """The holdout images of the classes; a model whose classes have none is checked on (at most 8 per
    class of) its training images instead, so no bundle goes out unchecked."""
    if not label_ids:
        return []
    marks = ",".join("?" * len(label_ids))
    rows = store.query(f"SELECT id, sha256, path, label_id FROM images WHERE split = 'holdout' "  # nosec B608  # placeholders only
                       f"AND label_id IN ({marks}) ORDER BY label_id, id", tuple(label_ids))
    if rows:
        return rows
    rows = store.query(f"SELECT id, sha256, path, label_id FROM images WHERE label_id IN ({marks}) "  # nosec B608  # placeholders only
                       "ORDER BY label_id, id", tuple(label_ids))
    per: dict = {}
    return [r for r in rows if per.setdefault(r["label_id"], []).append(1) or len(per[r["label_id"]]) <= 8]


def _class_entries(store: Store, table: dict) -> list[dict]:
    from core.labels import get_label

    out = []
    for i, (label_id, name) in enumerate(zip(table["class_ids"], table["names"])):
        try:
            label = get_label(store, int(label_id))
        except UserError:
            label = {"name": name, "canonical": name, "reading": "", "en": "", "lang": ""}
        canonical = label.get("canonical") or name
        ja = canonical if label.get("lang") == "ja" else ""
        en = label.get("en") or (label["name"] if label.get("lang") == "en" else "")
        out.append({"index": i, "id": int(label_id), "name": label["name"], "canonical": canonical,
                    "ja": ja, "en": en, "reading": label.get("reading", "")})
    return out


def _app_outputs(learner, table, pixels):
    """Scores and familiarity by the app's own path (prefix once, then the method's class scores and
    the learner's familiarity), batched."""
    import torch

    scores, fam = [], []
    W = table["prompt_feats"]
    for start in range(0, len(pixels), BATCH):
        x = torch.from_numpy(pixels[start:start + BATCH])
        h = learner.prefix_features(x)
        s = learner.class_scores(h, W)
        scores.append(s.numpy())
        fam.append(learner.familiarity(h, W, s).numpy())
    return scores, fam


def export_bundle(store: Store, actor: Actor, run_id: int, task_idx: int | None = None,
                  dest: str | os.PathLike | None = None) -> Path:
    """Build, check and store the bundle of task ``task_idx`` (default: the latest done) of ``run_id``.
    Also copied to ``dest`` when given. Raises :class:`ExportFailed` when the parity check fails."""
    import numpy as np

    from core.prediction import _predictor
    from core.runs import done_tasks, get_run
    from core.runtime.bundle import FORMAT, FORMAT_VERSION, Bundle
    from core.runtime.preprocess import decode as runtime_decode
    from core.sg.data import decode_image
    from core.sg.export import OPSET, export_onnx
    from core.sg.openset import DEFAULT_QUANTILE
    from core.training import checkpoint_path

    require(actor, "model.export")
    started = time.perf_counter()
    run = get_run(store, run_id)
    done = [t["idx"] for t in done_tasks(store, run["id"])]
    if task_idx is None:
        if not done:
            raise UserError("runs.no_checkpoint")
        task_idx = done[-1]
    path = checkpoint_path(store, run["id"], task_idx)
    if int(task_idx) not in done or not path.exists():
        raise UserError("deploy.no_task", run=run["id"], task=int(task_idx) + 1)
    learner, encoder, table, extra = _predictor(store, run, path)
    resize = getattr(learner.model, "resize", "crop")
    if resize != "crop":   # the runtime decodes as the app's default does (centre crop) and nothing else yet
        raise ExportFailed("deploy.unsupported_resize", resize=resize)
    onnx_bytes = export_onnx(learner, table["prompt_feats"])
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    classes = _class_entries(store, table)
    size = int(learner.model.input_size)

    # ---- parity on the holdout ------------------------------------------------------------------------
    rows = _holdout_rows(store, [int(c) for c in table["class_ids"]])
    index_of = {int(c): i for i, c in enumerate(table["class_ids"])}
    files, app_pixels, targets = [], [], []
    for r in rows:
        p = store.home / r["path"]
        try:
            data = p.read_bytes()
        except OSError:
            continue
        a = decode_image(data, size)
        b = runtime_decode(data, size)
        if a.shape != b.shape or not np.array_equal(a, b):
            raise ExportFailed("deploy.parity_pixels", file=r["path"])
        files.append((r, data))
        app_pixels.append(a)
        targets.append(index_of[int(r["label_id"])])
    if not app_pixels:
        raise ExportFailed("deploy.no_images")
    threshold = extra.get("reject_threshold")
    rate = float(extra.get("reject_rate") or DEFAULT_QUANTILE)   # checkpoints before the run setting: 5 %
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"version": f"run{run['id']}-task{int(task_idx) + 1}-{sha[:12]}", "run": run["id"],
                  "run_name": run.get("name", ""), "task": int(task_idx) + 1, "task_idx": int(task_idx),
                  "encoder": encoder.version, "image_version": encoder.image_version,
                  "text_version": encoder.text_version, "method": learner.config.method,
                  "sha256": sha, "onnx_opset": OPSET, "inputs": {"image": ["batch", 3, size, size]},
                  "outputs": {"scores": ["batch", len(classes)], "familiarity": ["batch"],
                              "embedding": ["batch", "D"]}},
        "classes": classes,
        "logit_scale": float(learner.logit_scale),
        "preprocessing": {
            "decode": "Pillow Image.open; JPEG draft('RGB', (size, size)); convert('RGB') (no EXIF rotation, "
                      "ICC ignored, alpha dropped)",
            "resize": "shorter side to size, bicubic (PIL.Image.BICUBIC), round() of the other side",
            "crop": "centre crop size x size, offsets (w - size) // 2, (h - size) // 2",
            "size": size, "layout": "NCHW float32, RGB", "scale": "x / 255",
            "mean": [float(m) for m in learner.model.mean], "std": [float(s) for s in learner.model.std],
            "reference": "core/runtime/preprocess.py (= core.sg.data.decode_image + normalize_batch)"},
        "unknown": {"threshold": None if threshold is None else float(threshold),
                    "score": learner.familiarity_kind,
                    "calibration": (f"conformal: the floor({rate:.0%} x (n+1))-th smallest familiarity of the n "
                                    "holdout images of all trained classes, pooled, at training time; familiarity "
                                    f"below it = unknown (target false rejection {rate:.0%})"),
                    "reject_rate": rate,
                    "holdout_images": extra.get("holdout_sizes"), "rejected_per_task": extra.get("rejected")},
        "decision": "class = argmax(scores); score = softmax(logit_scale * scores)[class]; "
                    "unknown = familiarity < unknown.threshold",
        "created_by": actor.username, "created_at": now_iso(),
    }
    # the runtime's own code path: bundle → ONNX Runtime → decisions
    bundle = Bundle(manifest, onnx_bytes)
    app_scores, app_fam = _app_outputs(learner, table, np.stack(app_pixels)) if app_pixels else ([], [])
    max_diff, n_checked = 0.0, 0
    per_class = {c["id"]: [0, 0] for c in classes}
    golden_rows = []
    for start in range(0, len(app_pixels), BATCH):
        chunk = np.stack(app_pixels[start:start + BATCH])
        s, f, _ = bundle.run(chunk)
        a_s, a_f = app_scores[start // BATCH], app_fam[start // BATCH]
        diff = float(max(np.abs(s - a_s).max(), np.abs(f - a_f).max()))
        max_diff = max(max_diff, diff)
        top_rt, top_app = s.argmax(1), a_s.argmax(1)
        if diff > SCORE_ATOL or not np.array_equal(top_rt, top_app):
            raise ExportFailed("deploy.parity_scores", diff=f"{diff:.2e}", tol=f"{SCORE_ATOL:.0e}")
        if threshold is not None:
            disagree = (f < threshold) != (a_f < threshold)
            if bool((disagree & (np.abs(a_f - threshold) > SCORE_ATOL)).any()):
                raise ExportFailed("deploy.parity_scores", diff=f"{diff:.2e}", tol=f"{SCORE_ATOL:.0e}")
        for j, pred in enumerate(top_app):
            k = start + j
            cls_id = int(table["class_ids"][targets[k]])
            per_class[cls_id][0] += 1
            per_class[cls_id][1] += int(pred == targets[k])
            golden_rows.append((k, a_s[j], float(a_f[j]), int(pred)))
        n_checked += len(chunk)
    manifest["holdout_accuracy"] = [
        {"id": cid, "images": n, "correct": ok, "accuracy": (ok / n if n else None)} for cid, (n, ok) in per_class.items()]
    manifest["parity"] = {"images": n_checked, "top1_identical": True, "score_atol": SCORE_ATOL,
                          "max_abs_diff": max_diff, "pixels_identical": True,
                          "checked_with": "onnxruntime " + _ort_version() + " vs torch " + _torch_version()}
    # ---- golden images: the first holdout image(s) of each class, with the app's outputs ---------------
    golden, per = [], {}
    for k, scores_k, fam_k, pred in golden_rows:
        r, data = files[k]
        if per.get(r["label_id"], 0) >= GOLDEN_PER_CLASS or len(golden) >= GOLDEN_MAX:
            continue
        per[r["label_id"]] = per.get(r["label_id"], 0) + 1
        ext = Path(r["path"]).suffix.lower() or ".img"
        golden.append({"file": f"golden/{len(golden):02d}{ext}", "label_id": int(r["label_id"]),
                       "expected_index": pred, "expected_id": int(table["class_ids"][pred]),
                       "expected_unknown": bool(threshold is not None and fam_k < threshold),
                       "scores": [round(float(v), 6) for v in scores_k], "familiarity": round(fam_k, 6),
                       "_data": data})
    manifest["golden"] = [{k: v for k, v in g.items() if k != "_data"} for g in golden]
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)

    out = bundle_path(store, run["id"], task_idx)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1))
        zf.writestr("model.onnx", onnx_bytes)
        zf.writestr("labels.txt", "".join(c["name"].replace("\n", " ") + "\n" for c in classes))
        for g in golden:
            zf.writestr(g["file"], g["_data"])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    store.audit(actor.username, "model.export", "run", run["id"], task=int(task_idx) + 1, sha256=sha,
                version=manifest["model"]["version"], images_checked=n_checked, max_abs_diff=max_diff)
    if dest is not None:
        Path(dest).write_bytes(buf.getvalue())
    return out


def stored_bundle(store: Store, actor: Actor, run_id: int, task_idx: int) -> tuple[str, bytes] | None:
    """(download file name, bytes) of the stored bundle of a task, or None when none was exported."""
    require(actor, "model.export")
    path = bundle_path(store, run_id, task_idx)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return f"sgcl-run{int(run_id)}-task{int(task_idx) + 1}.zip", data


def record_download(store: Store, actor: Actor, run_id: int, task_idx: int) -> None:
    require(actor, "model.export")
    store.audit(actor.username, "model.download", "run", int(run_id), task=int(task_idx) + 1)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _torch_version() -> str:
    import torch

    return torch.__version__
