"""The effective training config of a task is the run's config plus *that* task's overrides, stored with
the task: an override on task k never leaks into task k+1 (it used to, through the checkpoint), and a
damaged checkpoint at a task's output path is moved aside and the task retrained."""
from __future__ import annotations

import pytest

from core import jobs, runs
from core.sg.checkpoint import load_checkpoint
from core.store import Store
from core.training import checkpoint_path
from core.worker import Worker
from tests.test_worker import REVIEWER, make_labels


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    return Store(tmp_path / "home")


def _train_all(store):
    worker = Worker(store, device="cpu", poll=0.05)
    worker.register()
    try:
        while worker.step() is not None:
            pass
    finally:
        worker.unregister()


def test_an_override_on_task_k_does_not_leak_into_task_k_plus_1(home):
    ids = make_labels(home, ["cat", "dog", "bird", "horse"])
    run = runs.create_run(home, REVIEWER, "leak", config={"epochs": 1, "batch_size": 8})
    first = runs.request_task(home, REVIEWER, run["id"], [ids["cat"], ids["dog"]], {"epochs": 2, "lr": 0.05})
    second = runs.request_task(home, REVIEWER, run["id"], [ids["bird"], ids["horse"]])
    stored = {t["idx"]: t["config"] for t in runs.list_tasks(home, run["id"])}
    assert (stored[0]["epochs"], stored[0]["lr"]) == (2, 0.05)
    assert (stored[1]["epochs"], stored[1]["lr"]) == (1, run["config"]["lr"])   # the run's, not task 0's
    _train_all(home)
    assert [jobs.get_job(home, j)["status"] for j in (first["job_id"], second["job_id"])] == ["done", "done"]
    used = [load_checkpoint(checkpoint_path(home, run["id"], k))["learner"]["config"] for k in (0, 1)]
    import json
    used = [json.loads(c) for c in used]
    assert (used[0]["epochs"], used[0]["lr"]) == (2, 0.05)
    assert (used[1]["epochs"], used[1]["lr"]) == (1, run["config"]["lr"])
    # what the pages show is what was used
    assert runs.task_config(run, runs.list_tasks(home, run["id"])[1]).epochs == 1


def test_task_overrides_are_validated_against_the_config_declaration(home):
    from core.i18n import UserError

    run = runs.create_run(home, REVIEWER, "bad")
    for bad in ({"epochs": 0}, {"epochs": float("inf")}, {"epochs": "nan"}, {"lr": "fast"}, {"lr": "inf"},
                {"seed": 3}, {"method": "ncm"}, {"nonsense": 1}):
        with pytest.raises(UserError) as err:
            runs.clean_overrides(bad, "task")
        assert err.value.key == "runs.bad_config"
    assert runs.clean_overrides({"epochs": "3", "augment": "false"}, "task") == {"epochs": 3, "augment": False}
    assert runs.clean_overrides({"method": "ncm", "seed": 2}, "run") == {"method": "ncm", "seed": 2}


def test_a_corrupt_checkpoint_at_the_output_path_is_moved_aside_and_the_task_retrained(home):
    ids = make_labels(home, ["cat", "dog"])
    run = runs.create_run(home, REVIEWER, "corrupt", config={"epochs": 1, "batch_size": 8})
    job = runs.request_task(home, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    path = checkpoint_path(home, run["id"], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 truncated")   # what a crash or a full disk can leave behind
    _train_all(home)
    assert jobs.get_job(home, job["job_id"])["status"] == "done"
    assert load_checkpoint(path)["extra"]["task_id"] == job["task"]["id"]
    quarantined = list(path.parent.glob("task-0.pt.corrupt-*"))
    assert len(quarantined) == 1 and quarantined[0].read_bytes().startswith(b"PK")
    assert "checkpoint.quarantine" in [a["action"] for a in home.audit_rows("task", job["task"]["id"])]
