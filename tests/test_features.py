"""The frozen-feature cache of the data home: filled in the background after upload, shared by every
task and by Predict, never read half-written, invalidated by backbone version / split / size, and its
disk use reported. Uses the real default backbone (EfficientNet-Lite0 from its wheel) on a few images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import features, images, jobs, labels, runs
from core.encoders import DEFAULT_SPEC, load_encoder
from core.sg.features import PrefixFeatureCache
from core.store import Store
from tests.test_worker import REVIEWER, class_image, make_labels


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", DEFAULT_SPEC)
    return Store(tmp_path / "home")


def _labels_with_images(store, names, per_label=6):
    ids = []
    for n, name in enumerate(names):
        label = labels.propose(store, REVIEWER, name, create_entry=True)
        labels.approve(store, REVIEWER, label["id"])
        images.ingest_uploads(store, REVIEWER, label["id"],
                              [(f"{name}-{i}.png", class_image(name, 100 * n + i)) for i in range(per_label)])
        ids.append(label["id"])
    return ids


def _default_cache(store):
    encoder = load_encoder(DEFAULT_SPEC, store.home)
    model = encoder.build_image_model()
    return features.cache_for(store, encoder, model, 1), model


def test_idle_fill_computes_each_image_once_and_reports_disk_use(home):
    _labels_with_images(home, ["cat", "dog"])
    n_images = home.query_one("SELECT COUNT(*) AS n FROM images")["n"]
    assert features.fill_missing(home, limit=4) == 4          # a small batch at a time
    assert features.fill_missing(home) == n_images - 4
    assert features.fill_missing(home) == 0                    # nothing left: a warm cache computes none
    usage = features.disk_usage(home)
    assert usage["entries"] == n_images and usage["bytes"] > 0
    assert 1000 < usage["per_image"] < 10_000                  # the pooled 1280-d fp16 vector ≈ 2.6 kB


def test_the_cache_entry_is_the_frozen_prefix_of_the_image(home):
    _labels_with_images(home, ["cat"], per_label=2)
    features.fill_missing(home)
    cache, model = _default_cache(home)
    row = home.query("SELECT sha256, path FROM images ORDER BY id")[0]
    from core.sg.data import decode_image, normalize_batch
    x = normalize_batch(torch.from_numpy(decode_image(str(home.home / row["path"]), model.input_size))[None],
                        model.mean, model.std)
    with torch.no_grad():
        expected = model.prefix(x)[0]
    cached = cache.read(row["sha256"])
    assert cached.shape == (1, *expected.shape)
    if cache.engine == "fp32":
        assert torch.allclose(cached[0].float(), expected, atol=2e-2)   # stored in float16
    else:   # this CPU's faster engine (bf16 / int8, tests/test_prefix_engine.py): close to fp32
        assert torch.nn.functional.cosine_similarity(cached[0].float(), expected, dim=0) > 0.97
    # Predict computes an uncached image with the same engine: the entry's view 0, as stored
    image = torch.from_numpy(decode_image(str(home.home / row["path"]), model.input_size))[None]
    assert torch.allclose(cache.prefix_of(image)[0], cached[0].float(), atol=2e-2)


def test_a_damaged_entry_is_never_used_and_is_recomputed(home, tmp_path):
    _labels_with_images(home, ["cat"], per_label=2)
    cache, _ = _default_cache(home)
    rows = home.query("SELECT sha256, path FROM images ORDER BY id")
    items = [(r["sha256"], str(home.home / r["path"])) for r in rows]
    good = cache.load(items)
    path = cache.path(rows[0]["sha256"])
    path.write_bytes(path.read_bytes()[:40])                  # a torn write / disk error
    assert cache.read(rows[0]["sha256"]) is None
    again = cache.load(items)
    # recomputed alone rather than in a batch of two: oneDNN may pick another kernel, so not bit-equal
    assert torch.allclose(again.float(), good.float(), atol=1e-2)
    assert not list(path.parent.glob("*.tmp"))                 # atomic writes leave no temp files


def test_versions_never_share_entries(home, tmp_path):
    encoder = load_encoder(DEFAULT_SPEC, home.home)
    slugs = {PrefixFeatureCache(tmp_path, encoder.build_image_model(trainable_blocks=k, input_size=size),
                                encoder.image_version, views=v).slug
             for k, size, v in [(0, 224, 1), (1, 224, 1), (0, 192, 1), (0, 224, 2)]}
    assert len(slugs) == 4
    assert len({PrefixFeatureCache(tmp_path, encoder.build_image_model(), version).slug
                for version in ("effnet-lite0:aaaa", "effnet-lite0:bbbb")}) == 2


def test_a_train_job_reads_what_the_idle_worker_cached(home, monkeypatch):
    ids = list(make_labels(home, ["cat", "dog"]).values())
    features.fill_missing(home)
    computed = []
    original = PrefixFeatureCache.compute

    def spy(self, items, *args, **kwargs):
        n = original(self, items, *args, **kwargs)
        computed.append(n)
        return n

    monkeypatch.setattr(PrefixFeatureCache, "compute", spy)
    run = runs.create_run(home, REVIEWER, "warm", config={"epochs": 2})
    queued = runs.request_task(home, REVIEWER, run["id"], ids)
    from core.training import run_train_job
    job = jobs.claim(home, "w1")
    run_train_job(home, job, worker_id="w1", device="cpu")
    assert jobs.get_job(home, queued["job_id"])["status"] == "done"
    assert sum(computed) == 0                                  # every feature came from the cache


def test_the_idle_worker_precomputes_and_yields_to_a_queued_job(home):
    from core.worker import Worker

    ids = list(make_labels(home, ["cat"]).values())
    worker = Worker(home, device="cpu")
    assert worker.precompute_features() is True
    assert features.fill_missing(home) == 0
    _labels_with_images(home, ["dog"], per_label=3)
    run = runs.create_run(home, REVIEWER, "busy")
    runs.request_task(home, REVIEWER, run["id"], ids)          # a job is waiting: precompute steps aside
    assert worker.precompute_features() is False
    assert features.fill_missing(home) > 0                      # the dog images were left for later


def test_an_idle_poll_on_a_full_cache_loads_no_model_and_a_broken_image_is_not_retried(home, monkeypatch):
    _labels_with_images(home, ["cat", "dog"], per_label=5)
    assert features.fill_missing(home) > 0
    built = []
    real = features._model_for
    monkeypatch.setattr(features, "_model_for", lambda store, target: built.append(target) or real(store, target))
    assert features.fill_missing(home) == 0
    assert features.fill_missing(home) == 0
    assert built[1:] == []               # the second idle poll does nothing until the images change

    # an image whose file went bad: tried once, then left to the train job (which reports it)
    broken = home.query_one("SELECT id, sha256, path FROM images ORDER BY id DESC LIMIT 1")
    (home.home / broken["path"]).write_bytes(b"not an image")
    encoder = load_encoder(DEFAULT_SPEC, home.home)
    cache = features.cache_for(home, encoder, encoder.build_image_model(), 1)
    cache.path(broken["sha256"]).unlink()
    features._COMPLETE.clear()
    decoded = []
    monkeypatch.setattr(features, "image_items", lambda store, rows: decoded.extend(r["id"] for r in rows) or
                        [(r["sha256"], str(store.home / r["path"])) for r in rows])
    assert features.fill_missing(home) == 0 and decoded == [broken["id"]]
    features._COMPLETE.clear()
    assert features.fill_missing(home) == 0 and decoded == [broken["id"]]   # not decoded again
