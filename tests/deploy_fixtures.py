"""A data home with a run of two trained tasks (tiny encoder, in-process train jobs) and its exported
bundles, built once per test session and shared by the deployment tests (read-only for them)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import jobs, runs
from core.auth import Actor
from core.store import Store
from test_worker import REVIEWER, class_image, make_labels

ADMIN = Actor("ada", "admin")
SUPERVISOR = Actor("sora", "supervisor")


def jpeg(name: str, seed: int, size: int = 200) -> bytes:
    """A class-styled JPEG (the line's usual format, and the draft-decode path)."""
    img = Image.open(io.BytesIO(class_image(name, seed, size=size)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def train_all(store: Store) -> None:
    from core.training import run_train_job

    while True:
        job = jobs.claim(store, "test-worker")
        if job is None:
            return
        run_train_job(store, job, worker_id="test-worker", device="cpu")


@pytest.fixture(scope="session")
def deployed(tmp_path_factory):
    """(store, run id, bundle path of task 2, label ids by name)."""
    from core.deploy.bundle import export_bundle

    # the encoder setting only while the run is made and trained: a session fixture that kept it set would
    # leak tiny-test into every later test of the session (it did: the Images page test read it)
    old = os.environ.get("SGCL_ENCODER")
    os.environ["SGCL_ENCODER"] = "tiny-test"
    try:
        home = tmp_path_factory.mktemp("deploy-home")
        store = Store(home)
        ids = make_labels(store, ["cat", "dog", "bird"], per_label=8)
        run = runs.create_run(store, REVIEWER, "line", config={"epochs": 2, "batch_size": 16})
        runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
        train_all(store)
        first = export_bundle(store, ADMIN, run["id"], 0)
        runs.request_task(store, REVIEWER, run["id"], [ids["bird"]])
        train_all(store)
        second = export_bundle(store, ADMIN, run["id"])
    finally:
        if old is None:
            os.environ.pop("SGCL_ENCODER", None)
        else:
            os.environ["SGCL_ENCODER"] = old
    yield {"store": store, "run": run["id"], "bundle": second, "first": first, "ids": ids}
