"""Issue 13, the training side: a damaged or malicious checkpoint gives a message, never a traceback or
code execution (item 12); a worker whose cache write fails (a full disk) marks its job failed with the
reason and leaves no temp file (item 7). Item 5 — a corrupt checkpoint at a task's output path is moved
aside and the task retrained — is tests/test_task_config.py::test_a_corrupt_checkpoint_at_the_output_path_is_moved_aside_and_the_task_retrained."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from core import jobs, runs
from core.i18n import UserError
from core.prediction import predict_image
from core.store import Store
from core.training import checkpoint_path
from core.worker import Worker
from tests.test_worker import REVIEWER, class_image, make_labels


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    return Store(tmp_path / "home")


def _trained_run(store):
    ids = make_labels(store, ["cat", "dog"])
    run = runs.create_run(store, REVIEWER, "r", config={"epochs": 1, "batch_size": 8})
    runs.request_task(store, REVIEWER, run["id"], list(ids.values()))
    worker = Worker(store, device="cpu")
    worker.register()
    assert worker.step() == "done"
    return run


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does when it is loaded without weights_only
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "malicious"])
def test_predict_with_a_damaged_or_malicious_checkpoint_is_a_message(home, tmp_path, damage):
    run = _trained_run(home)
    path = checkpoint_path(home, run["id"], 0)
    marker = tmp_path / "pwned"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 50)
    else:
        torch.save({"format": "sgcl-checkpoint/1", "learner": _Payload(marker)}, path)
    with pytest.raises(UserError) as err:
        predict_image(home, REVIEWER, run["id"], class_image("cat", 1))
    assert err.value.key == "predict.bad_checkpoint"
    assert path.name in err.value.message("ja") and "破損" in err.value.message("ja")
    assert not marker.exists()   # weights_only=True: the payload never ran


def test_a_full_disk_while_caching_fails_the_job_with_the_reason_and_leaves_no_temp_file(home, monkeypatch):
    import numpy as np

    ids = make_labels(home, ["cat", "dog"])
    run = runs.create_run(home, REVIEWER, "full", config={"epochs": 1, "batch_size": 8})
    queued = runs.request_task(home, REVIEWER, run["id"], list(ids.values()))
    real_save = np.save

    def disk_full(file, *args, **kwargs):
        real_save(file, *args, **kwargs)            # part of the file is written …
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    worker = Worker(home, device="cpu")
    worker.register()
    assert worker.step() == "failed"               # the worker goes on serving
    job = jobs.get_job(home, queued["job_id"])
    assert job["status"] == "failed" and "No space left on device" in job["error"]
    leftovers = [p for p in (home.home / "cache").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_a_worker_stopped_by_an_unexpected_error_marks_its_job_failed(home, monkeypatch):
    """An error no one expected inside a job (not a training error the learner knows) fails that job
    with the reason, and the worker carries on with the next one."""
    ids = make_labels(home, ["cat", "dog"])
    run = runs.create_run(home, REVIEWER, "boom", config={"epochs": 1, "batch_size": 8})
    queued = runs.request_task(home, REVIEWER, run["id"], list(ids.values()))
    worker = Worker(home, device="cpu")

    def on_fire(*args, **kwargs):
        raise RuntimeError("the machine is on fire")

    monkeypatch.setattr(worker, "handlers", lambda: {"train": on_fire})
    worker.serve(exit_when_idle=True, precompute=False)
    job = jobs.get_job(home, queued["job_id"])
    assert job["status"] == "failed" and "on fire" in job["error"]
    assert worker.current_job is None