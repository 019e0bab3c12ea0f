"""The job queue: atomic claims across threads and processes, one running job per run, task order,
cancel, stale detection with an attempt limit, and role checks."""
from __future__ import annotations

import json
import multiprocessing
import threading
import time

import pytest

from core import jobs
from core.auth import Actor
from core.i18n import UserError
from core.store import Store, now_iso


def make_run(store: Store, n_tasks: int, name: str = "r") -> tuple[int, list[int]]:
    """A run with ``n_tasks`` queued tasks and their train jobs (rows only: no training here)."""
    run_id = store.insert("runs", {"name": name, "encoder": "tiny-test", "config": "{}", "status": "active",
                                      "created_by": "t", "created_at": now_iso()})
    job_ids = []
    for idx in range(n_tasks):
        task_id = store.insert("tasks", {"run_id": run_id, "idx": idx, "label_ids": json.dumps([idx]),
                                            "status": "queued", "created_at": now_iso()})
        job_ids.append(jobs.enqueue(store, "t", "train", {"task_id": task_id, "task_idx": idx}, run_id=run_id))
    return run_id, job_ids


def task_status(store: Store, run_id: int, idx: int) -> str:
    return store.query_one("SELECT status FROM tasks WHERE run_id = ? AND idx = ?", (run_id, idx))["status"]


# ---- claim atomicity ------------------------------------------------------------------------------

def test_two_threads_never_claim_the_same_job(tmp_path):
    home = tmp_path / "home"
    Store(home).close()
    seed = Store(home)
    ids = [jobs.enqueue(seed, "t", "export", {"n": i}) for i in range(60)]
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def work(name: str) -> None:
        store = Store(home)  # each worker thread has its own connection, like separate processes
        while (job := jobs.claim(store, name)) is not None:
            claimed[name].append(job["id"])
            jobs.complete(store, job["id"], worker_id=name)
        store.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == ids                      # every job exactly once
    assert len(set(everything)) == len(everything)
    rows = seed.query("SELECT worker, COUNT(*) AS n FROM jobs WHERE status = 'done' GROUP BY worker")
    assert sum(r["n"] for r in rows) == 60


def _claim_all(home: str, name: str, out) -> None:
    store = Store(home)
    got = []
    while (job := jobs.claim(store, name)) is not None:
        got.append(job["id"])
        jobs.complete(store, job["id"], worker_id=name)
    out.put((name, got))


def test_two_processes_never_claim_the_same_job(tmp_path):
    home = str(tmp_path / "home")
    store = Store(home)
    ids = [jobs.enqueue(store, "t", "export", {"n": i}) for i in range(40)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(home, f"p{i}", out)) for i in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    everything = results["p0"] + results["p1"]
    assert sorted(everything) == ids
    assert len(set(everything)) == len(everything)


# ---- ordering -------------------------------------------------------------------------------------

def test_one_job_per_run_and_tasks_in_order(store):
    run_a, (a0, a1) = make_run(store, 2, "a")
    run_b, (b0,) = make_run(store, 1, "b")
    first = jobs.claim(store, "w1")
    assert first["id"] == a0 and task_status(store, run_a, 0) == "running"
    # run a is busy, so the next claim skips a1 and takes run b's job
    second = jobs.claim(store, "w2")
    assert second["id"] == b0
    assert jobs.claim(store, "w3") is None        # a1 waits for a0
    jobs.complete(store, a0, worker_id="w1")
    assert task_status(store, run_a, 0) == "done"
    third = jobs.claim(store, "w3")
    assert third["id"] == a1 and third["attempts"] == 1


def test_train_job_waits_for_its_previous_task(store):
    run_id, (j0, j1) = make_run(store, 2)
    # the previous task's job was cancelled while queued: its successor must not run on a missing checkpoint
    jobs.cancel(store, Actor("eri", "expert"), j0)
    assert jobs.get_job(store, j1)["status"] == "cancelled"
    assert "previous" in jobs.render_message(jobs.get_job(store, j1)["message"], "en")
    assert jobs.claim(store, "w") is None


def test_complete_is_refused_for_a_job_another_worker_holds(store):
    _, (j0,) = make_run(store, 1)
    jobs.claim(store, "w1")
    assert not jobs.complete(store, j0, worker_id="w2")
    assert not jobs.heartbeat(store, j0, "w2")
    assert jobs.heartbeat(store, j0, "w1")
    assert jobs.get_job(store, j0)["status"] == "running"


# ---- cancel ---------------------------------------------------------------------------------------

def test_cancel_queued_is_immediate_and_running_is_cooperative(store, expert):
    run_id, (j0, j1) = make_run(store, 2)
    jobs.claim(store, "w")
    assert not jobs.cancel_requested(store, j0)
    jobs.cancel(store, expert, j0)
    job = jobs.get_job(store, j0)
    assert job["status"] == "running" and job["cancel_requested"] == 1   # the worker stops it
    assert jobs.cancel_requested(store, j0)
    assert jobs.mark_cancelled(store, j0, "w")
    assert jobs.get_job(store, j0)["status"] == "cancelled"
    assert task_status(store, run_id, 0) == "cancelled"
    assert jobs.get_job(store, j1)["status"] == "cancelled"            # cascaded
    with pytest.raises(UserError) as err:
        jobs.cancel(store, expert, j0)
    assert err.value.key == "jobs.not_cancellable"
    assert [a["action"] for a in store.audit_rows("job", j0)].count("job.cancel") == 1


def test_supervisor_cannot_cancel(store, supervisor):
    _, (j0,) = make_run(store, 1)
    with pytest.raises(UserError) as err:
        jobs.cancel(store, supervisor, j0)
    assert err.value.key == "err.forbidden"
    assert jobs.get_job(store, j0)["status"] == "queued"


# ---- stale jobs -----------------------------------------------------------------------------------

def _age(store: Store, job_id: int, seconds: float) -> None:
    store.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time() - seconds, job_id))


def test_stale_job_is_requeued_then_failed_after_three_attempts(store):
    run_id, (j0,) = make_run(store, 1)
    for attempt in (1, 2, 3):
        job = jobs.claim(store, f"w{attempt}")
        assert job["id"] == j0 and job["attempts"] == attempt
        assert jobs.requeue_stale(store, stale_after=60) == []       # fresh heartbeat: left alone
        _age(store, j0, 120)
        assert jobs.requeue_stale(store, stale_after=60) == [j0]
        if attempt < 3:
            job = jobs.get_job(store, j0)
            assert job["status"] == "queued" and job["worker"] is None
            assert task_status(store, run_id, 0) == "queued"
            assert f"attempt {attempt + 1}" in jobs.render_message(job["message"], "en")
    job = jobs.get_job(store, j0)
    assert job["status"] == "failed" and "3 times" in job["error"]
    assert "3 回" in jobs.render_message(job["message"], "ja")
    assert task_status(store, run_id, 0) == "failed"
    # the old worker that comes back cannot complete it any more
    assert not jobs.complete(store, j0, worker_id="w3")


def test_release_puts_a_job_back_without_spending_an_attempt(store):
    _, (j0,) = make_run(store, 1)
    jobs.claim(store, "w")
    assert jobs.release(store, j0, "w")
    job = jobs.get_job(store, j0)
    assert job["status"] == "queued" and job["attempts"] == 0


def test_progress_is_stored_for_every_viewer(store):
    _, (j0,) = make_run(store, 1)
    jobs.claim(store, "w")
    jobs.set_progress(store, j0, 0.42, "epoch 2/5", {"epoch": 2, "curve": [{"step": 1, "loss": 3.0}]})
    job = jobs.get_job(store, j0)
    assert job["progress"] == pytest.approx(0.42)
    assert job["message"] == "epoch 2/5" and job["detail"]["epoch"] == 2
    jobs.set_progress(store, j0, 7, "x")
    assert jobs.get_job(store, j0)["progress"] == 1.0
