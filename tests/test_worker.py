"""The worker with real training on the tiny test encoder: cancel mid-task, a failing job does not stop
the worker, SIGKILL mid-epoch → stale → resumed from the last completed task with no lost or duplicated
metrics, and ensure_worker starts exactly one detached worker."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import images, jobs, labels, runs
from core.auth import Actor
from core.store import Store, wait_for

REPO = Path(__file__).resolve().parents[1]
REVIEWER = Actor("rei", "reviewer")

# Class-distinct synthetic images: a dominant colour per class plus a stripe orientation.
CLASS_STYLES = {
    "cat": ((220, 50, 50), 0), "dog": ((50, 200, 60), 1), "bird": ((50, 60, 220), 0),
    "horse": ((220, 210, 50), 1), "deer": ((200, 60, 200), 0), "frog": ((60, 210, 210), 1),
}


def class_image(name: str, seed: int, size: int = 32) -> bytes:
    colour, vertical = CLASS_STYLES[name]
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, float)[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255)
    stripes = (np.arange(size) // 4) % 2 == 0
    if vertical:
        arr[:, stripes] *= 0.5
    else:
        arr[stripes] *= 0.5
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_labels(store: Store, names, per_label: int = 8) -> dict[str, int]:
    """Approved labels with images ingested through core.images (the upload path of the app)."""
    ids = {}
    for n, name in enumerate(names):
        label = labels.propose(store, REVIEWER, name, create_entry=True)
        labels.approve(store, REVIEWER, label["id"])
        files = [(f"{name}-{i}.png", class_image(name, 1000 * n + i)) for i in range(per_label)]
        results = images.ingest_uploads(store, REVIEWER, label["id"], files)
        assert all(r.status == "added" for r in results)
        extra = per_label
        while not images.readiness(store, [label["id"]])[label["id"]].ok:  # the split is hash-based
            images.ingest_uploads(store, REVIEWER, label["id"], [(f"{name}-{extra}.png", class_image(name, 1000 * n + extra))])
            extra += 1
        ids[name] = label["id"]
    return ids


def worker_env() -> dict:
    return dict(os.environ, SGCL_ENCODER="tiny-test", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def start_worker(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.worker", "--home", str(home), "--poll", "0.2", *args],
                            cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")


def metric_rows(store: Store, run_id: int) -> list[dict]:
    return store.query("SELECT trained_task, eval_task, acc, created_at FROM metrics WHERE run_id = ? "
                       "ORDER BY trained_task, eval_task", (run_id,))


# ---- in-process worker ------------------------------------------------------------------------------

def test_cancel_mid_task_rolls_back_and_keeps_labels_untrained(store, tiny):
    from core.worker import Worker

    ids = make_labels(store, ["cat", "dog"])
    run = runs.create_run(store, REVIEWER, "cancel-me", config={"epochs": 5000, "batch_size": 4})
    queued = runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    worker = Worker(store, poll=0.1, stale_after=30)
    worker.register()
    states = []
    thread = threading.Thread(target=lambda: states.append(worker.step()))
    thread.start()
    job_id = queued["job_id"]
    assert wait_for(lambda: jobs.get_job(store, job_id)["detail"].get("batch"), timeout=60)
    jobs.cancel(store, REVIEWER, job_id)
    thread.join(60)
    assert states == ["cancelled"]
    job = jobs.get_job(store, job_id)
    assert job["status"] == "cancelled" and 0 < job["progress"] < 0.9
    assert runs.list_tasks(store, run["id"])[0]["status"] == "cancelled"
    assert metric_rows(store, run["id"]) == []
    assert not (store.home / "checkpoints" / str(run["id"]) / "task-0.pt").exists()
    assert {labels.get_label(store, i)["status"] for i in ids.values()} == {"approved"}
    # the labels are free again: the same task can be requested and reuses index 0
    again = runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    assert again["task"]["idx"] == 0 and again["task"]["id"] == queued["task"]["id"]
    worker.unregister()


def test_a_failing_job_does_not_stop_the_worker(store, tiny):
    from core.worker import Worker

    ids = make_labels(store, ["cat", "dog", "bird", "horse"])
    broken = runs.create_run(store, REVIEWER, "broken", config={"epochs": 1, "batch_size": 8})
    good = runs.create_run(store, REVIEWER, "good", config={"epochs": 1, "batch_size": 8})
    bad_job = runs.request_task(store, REVIEWER, broken["id"], [ids["cat"], ids["dog"]])["job_id"]
    good_job = runs.request_task(store, REVIEWER, good["id"], [ids["bird"], ids["horse"]])["job_id"]
    # an image file of the broken run's labels disappears from disk behind the app's back
    row = store.query_one("SELECT path FROM images WHERE label_id = ? AND split = 'train'", (ids["cat"],))
    (store.home / row["path"]).unlink()
    worker = Worker(store, poll=0.1)
    worker.serve(exit_when_idle=True)
    bad, ok = jobs.get_job(store, bad_job), jobs.get_job(store, good_job)
    assert bad["status"] == "failed"
    assert "Traceback" in bad["error"] and "FileNotFoundError" in bad["error"]
    assert ok["status"] == "done"
    assert ok["result"]["device"] == "cpu"
    assert len(metric_rows(store, good["id"])) == 1
    assert {labels.get_label(store, ids[n])["status"] for n in ("bird", "horse")} == {"trained"}
    assert labels.get_label(store, ids["cat"])["status"] == "approved"
    assert store.query("SELECT * FROM workers") == []   # unregistered on exit


# ---- real worker processes --------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_last_completed_task(tmp_path, tiny):
    home = tmp_path / "home"
    store = Store(home)
    ids = make_labels(store, ["cat", "dog", "bird", "horse"])
    run = runs.create_run(store, REVIEWER, "kill", config={"epochs": 2, "batch_size": 8})
    runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    second = runs.request_task(store, REVIEWER, run["id"], [ids["bird"], ids["horse"]], {"epochs": 3000})
    job_id = second["job_id"]

    proc = start_worker(home, "--stale-after", "3")
    try:
        assert wait_for(lambda: jobs.get_job(store, job_id)["detail"].get("epoch", 0) >= 2, timeout=120), \
            proc.stdout.read1().decode(errors="replace") if proc.poll() is not None else "worker did not start task 1"
        before = metric_rows(store, run["id"])
        assert [(r["trained_task"], r["eval_task"]) for r in before] == [(0, 0)]
        ckpt0 = home / "checkpoints" / str(run["id"]) / "task-0.pt"
        mtime0 = ckpt0.stat().st_mtime_ns
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert jobs.get_job(store, job_id)["status"] == "running"   # nobody knows yet that it died

    # Make the rest quick: the resumed attempt trains the remaining task with fewer epochs.
    # (the effective config is stored with the task: that is what the resumed attempt reads)
    store.execute("UPDATE tasks SET config = json_set(config, '$.epochs', 2) WHERE id = ?", (second["task"]["id"],))
    proc = start_worker(home, "--stale-after", "3", "--exit-when-idle")
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    job = jobs.get_job(store, job_id)
    assert job["status"] == "done" and job["attempts"] == 2, out.decode(errors="replace")[-3000:]
    assert "job.stale" in [a["action"] for a in store.audit_rows("job", job_id)]
    after = metric_rows(store, run["id"])
    assert [(r["trained_task"], r["eval_task"]) for r in after] == [(0, 0), (1, 0), (1, 1)]
    assert after[0] == before[0]                    # task 0's row untouched, not rewritten
    assert ckpt0.stat().st_mtime_ns == mtime0       # resumed from it, not retrained
    assert (home / "checkpoints" / str(run["id"]) / "task-1.pt").exists()
    assert [t["status"] for t in runs.list_tasks(store, run["id"])] == ["done", "done"]


@pytest.mark.slow
def test_ensure_worker_starts_one_detached_worker(tmp_path, monkeypatch):
    from core.worker import ensure_worker, live_workers

    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    store = Store(tmp_path / "home")
    assert ensure_worker(store, extra_args=["--poll", "0.2"]) is True
    try:
        assert ensure_worker(store) is False        # a page rerun does not start a second one
        assert ensure_worker(store) is False
        assert len(store.query("SELECT * FROM workers")) == 1
        assert wait_for(lambda: live_workers(store) and live_workers(store)[0]["device"] == "cpu", timeout=60), \
            (store.home / "worker.log").read_text(errors="replace")[-2000:]
        pid = live_workers(store)[0]["pid"]
        assert (store.home / "worker.log").exists()
    finally:
        for row in store.query("SELECT pid FROM workers WHERE pid IS NOT NULL"):
            os.kill(row["pid"], signal.SIGTERM)
    assert wait_for(lambda: store.query("SELECT * FROM workers") == [], timeout=30)  # graceful exit unregisters
    # once it is gone, the next call starts a new one
    assert ensure_worker(store, extra_args=["--poll", "0.2"]) is True
    new = store.query("SELECT pid FROM workers")[0]["pid"]
    assert new != pid
    assert wait_for(lambda: bool(live_workers(store)) and live_workers(store)[0]["device"] == "cpu", timeout=60)
    os.kill(new, signal.SIGTERM)
    assert wait_for(lambda: store.query("SELECT * FROM workers") == [], timeout=30)
