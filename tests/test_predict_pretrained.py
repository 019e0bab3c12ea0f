"""Predict with the embedded default (frozen EfficientNet-Lite0 + USE-m3) through the services: the
"not one of the trained classes" answer uses the very score its threshold was calibrated on.

A handful of generated images, the real backbone: the train job calibrates the threshold on the
holdout images and records the rejection rate; Predict, sent those same holdout images as uploads,
must reject exactly that fraction (a predictor that lost the class prototypes, or compared a class
score with a prototype threshold, rejects everything or nothing); tampered prototypes are a message."""
from __future__ import annotations

import io
import random

import pytest
import torch

from core import images, jobs, labels, runs
from core.auth import Actor
from core.i18n import UserError
from core.prediction import predict_image
from core.sg.checkpoint import load_checkpoint
from core.store import Store
from core.training import checkpoint_path, run_train_job

WHO = Actor("rei", "reviewer")


def _image(rng: random.Random, base: tuple[int, int, int], stripes: bool) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 64), tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base))
    draw = ImageDraw.Draw(img)
    for i in range(0, 64, 8):
        if stripes:
            draw.line((i, 0, i, 63), fill=(250, 250, 250), width=2)
        else:
            draw.ellipse((rng.randrange(48), rng.randrange(48), rng.randrange(48, 64), rng.randrange(48, 64)),
                         outline=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("method, score", [(None, "maha"), ("both", "prototype")])
def test_predict_rejects_holdout_images_exactly_as_the_calibration_did(tmp_path, monkeypatch, method, score):
    """``None``: the default (the FeCAM head, its Mahalanobis familiarity); ``both``: SG-RL + SG-KD,
    whose familiarity is the frozen-feature prototypes."""
    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    store = Store(tmp_path / "home")
    rng = random.Random(0)
    ids = []
    for name, colour, stripes in (("stripes", (200, 40, 40), True), ("rings", (40, 60, 200), False)):
        label = labels.propose(store, WHO, name, create_entry=True)
        labels.approve(store, WHO, label["id"])
        images.ingest_uploads(store, WHO, label["id"],
                              [(f"{name}{i}.png", _image(rng, colour, stripes)) for i in range(14)])
        ids.append(label["id"])
    run = runs.create_run(store, WHO, "pretrained", config={"epochs": 2, **({"method": method} if method else {})})
    assert run["encoder"] == "effnet-lite0+use-m3" and run["config"]["method"] == (method or "fecam")
    runs.request_task(store, WHO, run["id"], ids)
    run_train_job(store, jobs.claim(store, "test-worker"), worker_id="test-worker", device="cpu")

    extra = load_checkpoint(checkpoint_path(store, run["id"], 0))["extra"]
    assert extra["reject_score"] == score and extra["reject_threshold"] is not None
    assert len(extra["reject_calibration"]) == len(store.query("SELECT id FROM images WHERE split = 'holdout'"))
    holdout = store.query("SELECT path FROM images WHERE split = 'holdout' ORDER BY id")
    assert len(holdout) >= 2
    answers = [predict_image(store, WHO, run["id"], (store.home / r["path"]).read_bytes()) for r in holdout]
    assert all(a["threshold"] == pytest.approx(extra["reject_threshold"]) for a in answers)
    rejected = sum(a["rejected"] for a in answers) / len(answers)
    assert rejected == pytest.approx(extra["rejected"][0], abs=1e-6)
    assert rejected < 0.5          # calibrated to accept about 95 % of them
    assert all(0.0 < a["p_value"] <= 1.0 for a in answers)
    assert all(a["p_value"] <= 1 / (len(holdout) + 1) + 1e-9 for a in answers if a["rejected"])

    # an upload that is not in the cache runs the backbone once, for the classes and the familiarity
    from core import prediction
    learner = prediction._predictor(store, runs.get_run(store, run["id"]), checkpoint_path(store, run["id"], 0))[0]
    # (through the feature cache's engine, fp32/bf16/int8 by CPU: core/sg/prefix_engine.py)
    from core.sg.prefix_engine import PrefixRunner
    calls = []
    real_run = PrefixRunner.__call__
    monkeypatch.setattr(PrefixRunner, "__call__", lambda self, x: calls.append(len(x)) or real_run(self, x))
    real_prefix = learner.model.prefix
    monkeypatch.setattr(learner.model, "prefix", lambda x: calls.append(("torch", len(x))) or real_prefix(x))
    predict_image(store, WHO, run["id"], _image(random.Random(7), (90, 200, 90), True))
    assert calls in ([1], [1, ("torch", 1)])     # once; the fp32 engine runs it through the torch model

    # a checkpoint whose prototypes were tampered with is a message in both languages, not a traceback
    path = checkpoint_path(store, run["id"], 0)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if method == "both":
        saved["learner"]["prototypes"]["0"] = torch.zeros(5)
    else:
        saved["learner"]["method"]["stats"]["scatter"] = torch.zeros(5)
    torch.save(saved, path)
    with pytest.raises(UserError) as err:
        predict_image(store, WHO, run["id"], (store.home / holdout[0]["path"]).read_bytes())
    assert err.value.key == "predict.bad_checkpoint"
    assert path.name in err.value.message("ja") and path.name in err.value.message("en")
