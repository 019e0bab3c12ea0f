"""The background job queue, in the shared SQLite database.

Jobs move ``queued → running → done | failed | cancelled``. Every state change is one
``BEGIN IMMEDIATE`` transaction, so two workers (threads or processes, on one host or several against
the same data home) can never claim the same job. Rules the queue enforces:

* **One running job per run.** A run's jobs execute in order: a queued job of a run waits while another
  job of that run is running, and a ``train`` job waits until the task before it is ``done``.
* **Cooperative cancel.** ``cancel`` on a running job sets ``cancel_requested``; the worker polls
  :func:`cancel_requested` between batches and stops. A queued job is cancelled at once.
* **Stale jobs.** A running job whose heartbeat is older than ``stale_after`` seconds (its worker was
  killed or lost power) is re-queued by :func:`requeue_stale`; the next claim resumes it from the last
  completed task's checkpoint. ``attempts`` counts claims: after ``MAX_ATTEMPTS`` it is failed instead.
* When a train job fails or is cancelled, the later queued train jobs of the same run are cancelled
  too (they would start from a checkpoint that will never exist).
"""
from __future__ import annotations

import json
import time
from typing import Any

from core.auth import Actor, require
from core.i18n import UserError
from core.store import Store, now_iso

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 3
DEFAULT_STALE_AFTER = 60.0   # seconds without a heartbeat before a running job counts as abandoned

def _loads(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["payload"] = _loads(row.get("payload"), {})
    row["detail"] = _loads(row.get("detail"), {})
    row["result"] = _loads(row.get("result"), None)
    return row


def get_job(store: Store, job_id: int) -> dict:
    row = _decode(store.query_one("SELECT * FROM jobs WHERE id = ?", (int(job_id),)))
    if row is None:
        raise UserError("err.not_found", what="job", id=job_id)
    return row


def list_jobs(store: Store, *, run_id: int | None = None, statuses: tuple[str, ...] | None = None,
              limit: int = 100) -> list[dict]:
    sql, params, where = "SELECT * FROM jobs", [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(int(run_id))
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        params.extend(statuses)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_decode(r) for r in store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, int(limit)))]


def enqueue(store: Store, actor: Actor | str, kind: str, payload: dict | None = None,
            run_id: int | None = None) -> int:
    """Add a job; returns its id. Callers check permissions (this is also used by services)."""
    username = actor.username if isinstance(actor, Actor) else str(actor)
    with store.transaction():
        job_id = store.insert("jobs", {
            "kind": kind, "run_id": run_id, "payload": json.dumps(payload or {}, ensure_ascii=False),
            "status": "queued", "progress": 0.0, "message": "", "detail": "{}",
            "cancel_requested": 0, "attempts": 0, "created_by": username, "created_at": now_iso(),
        })
        store.audit(username, "job.enqueue", "job", job_id, kind=kind, run_id=run_id, payload=payload or {})
    return int(job_id)


def _predecessor_done(store: Store, job: dict) -> bool:
    """A train job may start only after the previous task of its run is done."""
    if job["kind"] != "train":
        return True
    idx = int(job["payload"].get("task_idx", 0))
    if idx == 0:
        return True
    prev = store.query_one("SELECT status FROM tasks WHERE run_id = ? AND idx = ?", (job["run_id"], idx - 1))
    return prev is not None and prev["status"] == "done"


def claim(store: Store, worker_id: str, kinds: tuple[str, ...] | None = None) -> dict | None:
    """Atomically take the oldest runnable queued job for ``worker_id`` (None when there is none)."""
    with store.transaction(immediate=True):
        candidates = store.query(
            "SELECT * FROM jobs j WHERE j.status = 'queued' AND (j.run_id IS NULL OR NOT EXISTS ("
            "  SELECT 1 FROM jobs r WHERE r.status = 'running' AND r.run_id = j.run_id)) ORDER BY j.id")
        busy_runs: set[int] = set()
        for raw in candidates:
            job = _decode(raw)
            if kinds is not None and job["kind"] not in kinds:
                continue
            if job["run_id"] is not None:
                if job["run_id"] in busy_runs:
                    continue
                busy_runs.add(job["run_id"])  # only a run's oldest queued job may go next
            if not _predecessor_done(store, job):
                continue
            now = time.time()
            cur = store.execute(
                "UPDATE jobs SET status = 'running', worker = ?, heartbeat_at = ?, attempts = attempts + 1, "
                "started_at = COALESCE(started_at, ?), message = '' WHERE id = ? AND status = 'queued'",
                (worker_id, now, now_iso(), job["id"]))
            if cur.rowcount != 1:  # cannot happen under the write lock; be safe anyway
                continue
            if job["kind"] == "train" and job["payload"].get("task_id") is not None:
                store.execute("UPDATE tasks SET status = 'running' WHERE id = ?", (job["payload"]["task_id"],))
            store.audit(worker_id, "job.claim", "job", job["id"], attempt=job["attempts"] + 1)
            return get_job(store, job["id"])
    return None


def heartbeat(store: Store, job_id: int, worker_id: str | None = None) -> bool:
    """Refresh a running job's heartbeat. False when the job is no longer this worker's (re-queued
    after being judged stale, or finished) — the worker should then abandon it."""
    if worker_id is None:
        cur = store.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
                            (time.time(), int(job_id)))
    else:
        cur = store.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running' AND worker = ?",
                            (time.time(), int(job_id), worker_id))
    return cur.rowcount == 1


def set_progress(store: Store, job_id: int, fraction: float, message: str = "", detail: dict | None = None) -> None:
    """Store progress (fraction in [0, 1], a short message, and a JSON detail dict for the UI)."""
    fraction = min(1.0, max(0.0, float(fraction)))
    store.execute(
        "UPDATE jobs SET progress = ?, message = ?, detail = ?, heartbeat_at = ? WHERE id = ? AND status = 'running'",
        (fraction, message, json.dumps(detail or {}, ensure_ascii=False, default=str), time.time(), int(job_id)))


def cancel_requested(store: Store, job_id: int) -> bool:
    row = store.query_one("SELECT cancel_requested, status FROM jobs WHERE id = ?", (int(job_id),))
    return row is None or bool(row["cancel_requested"]) or row["status"] != "running"


def cancel(store: Store, actor: Actor, job_id: int) -> dict:
    """Cancel a queued job now, or ask a running one to stop at its next batch."""
    require(actor, "job.cancel")
    with store.transaction():
        job = get_job(store, job_id)
        if job["status"] == "queued":
            _finish(store, job, "cancelled", message="jobs.msg.cancelled")
        elif job["status"] == "running":
            store.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job["id"],))
        else:
            raise UserError("jobs.not_cancellable", id=job["id"], status=job["status"])
        store.audit(actor.username, "job.cancel", "job", job["id"], status_before=job["status"])
    return get_job(store, job_id)


def _finish(store: Store, job: dict, status: str, *, message: str = "", error: str | None = None,
            result: Any = None, progress: float | None = None) -> None:
    store.execute(
        "UPDATE jobs SET status = ?, message = ?, error = ?, result = ?, finished_at = ?, "
        "progress = COALESCE(?, progress) WHERE id = ?",
        (status, message, error, None if result is None else json.dumps(result, ensure_ascii=False, default=str),
         now_iso(), progress, job["id"]))
    task_id = job["payload"].get("task_id") if job["kind"] == "train" else None
    if task_id is not None:
        store.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))
    if status in ("failed", "cancelled") and job["kind"] == "train" and job["run_id"] is not None:
        # Later tasks of the run would resume from a checkpoint that will never exist.
        for later in store.query("SELECT * FROM jobs WHERE run_id = ? AND kind = 'train' AND status = 'queued' "
                                 "AND id != ?", (job["run_id"], job["id"])):
            later = _decode(later)
            if int(later["payload"].get("task_idx", 0)) > int(job["payload"].get("task_idx", 0)):
                _finish(store, later, "cancelled", message=encode_message("jobs.msg.previous_failed", job=job["id"]))


def complete(store: Store, job_id: int, result: Any = None, worker_id: str | None = None) -> bool:
    """Mark a running job done. False (and no change) when it is no longer this worker's."""
    with store.transaction():
        job = get_job(store, job_id)
        if job["status"] != "running" or (worker_id is not None and job["worker"] != worker_id):
            return False
        _finish(store, job, "done", result=result, progress=1.0)
        store.audit(worker_id or "worker", "job.done", "job", job_id)
    return True


def fail(store: Store, job_id: int, error: str, worker_id: str | None = None) -> bool:
    with store.transaction():
        job = get_job(store, job_id)
        if job["status"] != "running" or (worker_id is not None and job["worker"] != worker_id):
            return False
        _finish(store, job, "failed", error=error)
        store.audit(worker_id or "worker", "job.failed", "job", job_id, error=error[-500:])
    return True


def mark_cancelled(store: Store, job_id: int, worker_id: str | None = None) -> bool:
    """The worker stopped a running job because cancel was requested."""
    with store.transaction():
        job = get_job(store, job_id)
        if job["status"] != "running" or (worker_id is not None and job["worker"] != worker_id):
            return False
        _finish(store, job, "cancelled", message="jobs.msg.cancelled")
        store.audit(worker_id or "worker", "job.cancelled", "job", job_id)
    return True


def release(store: Store, job_id: int, worker_id: str | None = None) -> bool:
    """Put a running job back in the queue (its worker is shutting down); it resumes later."""
    with store.transaction():
        job = get_job(store, job_id)
        if job["status"] != "running" or (worker_id is not None and job["worker"] != worker_id):
            return False
        store.execute("UPDATE jobs SET status = 'queued', worker = NULL, message = 'jobs.msg.queued', "
                      "attempts = MAX(0, attempts - 1) WHERE id = ?", (job_id,))
        if job["kind"] == "train" and job["payload"].get("task_id") is not None:
            store.execute("UPDATE tasks SET status = 'queued' WHERE id = ?", (job["payload"]["task_id"],))
        store.audit(worker_id or "worker", "job.release", "job", job_id)
    return True


def requeue_stale(store: Store, stale_after: float = DEFAULT_STALE_AFTER) -> list[int]:
    """Re-queue running jobs whose heartbeat is older than ``stale_after`` seconds (or fail them after
    ``MAX_ATTEMPTS`` claims). Returns the ids handled."""
    handled = []
    with store.transaction():
        cutoff = time.time() - float(stale_after)
        for raw in store.query("SELECT * FROM jobs WHERE status = 'running' AND COALESCE(heartbeat_at, 0) < ?",
                               (cutoff,)):
            job = _decode(raw)
            if job["cancel_requested"]:
                _finish(store, job, "cancelled", message="jobs.msg.cancelled")
            elif job["attempts"] >= MAX_ATTEMPTS:
                _finish(store, job, "failed", message=encode_message("jobs.msg.gave_up", attempts=job["attempts"]),
                        error=f"worker {job['worker']} stopped responding {job['attempts']} times")
            else:
                store.execute("UPDATE jobs SET status = 'queued', worker = NULL, message = ? WHERE id = ?",
                              (encode_message("jobs.msg.requeued", attempts=job["attempts"] + 1), job["id"]))
                if job["kind"] == "train" and job["payload"].get("task_id") is not None:
                    store.execute("UPDATE tasks SET status = 'queued' WHERE id = ?", (job["payload"]["task_id"],))
            store.audit("system", "job.stale", "job", job["id"], worker=job["worker"], attempts=job["attempts"])
            handled.append(job["id"])
    return handled


# ---- messages ----------------------------------------------------------------------------------------
# ``jobs.message`` holds either plain text (progress lines written by the worker) or an i18n key with
# JSON params as ``key|{"param": ...}``, so each viewer reads it in their own language.

def encode_message(key: str, **params) -> str:
    return f"{key}|{json.dumps(params, ensure_ascii=False)}" if params else key


def render_message(message: str, lang: str) -> str:
    from core.i18n import STRINGS, t

    if not message:
        return ""
    key, _, params = message.partition("|")
    if key in STRINGS:
        return t(key, lang, **_loads(params, {}))
    return message
