"""The background worker: ``python -m core.worker [--home DIR] [--once] [--poll 1.0]``.

It registers itself in ``workers`` (with the device it trains on: CUDA when available, else CPU),
keeps a heartbeat, re-queues jobs whose worker died, claims queued jobs one at a time and runs them.
A job that raises is marked failed with a traceback summary and the worker goes on serving. SIGTERM /
SIGINT stop it gracefully: the running job is put back in the queue and resumes later.

``ensure_worker(store)`` is what the web app calls on start: it spawns one detached worker process
when no worker has a live heartbeat. It is cheap (one small transaction) and idempotent across page
reruns and concurrent Streamlit sessions, because the new worker's row is inserted — with a fresh
heartbeat — in the same ``BEGIN IMMEDIATE`` transaction that checked there was none.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from core import jobs, settings
from core.auth import SYSTEM
from core.store import Store, now_iso

log = logging.getLogger("sgcl.worker")

WORKER_STALE_AFTER = 30.0     # seconds without a worker heartbeat before it counts as gone
HEARTBEAT_EVERY = 5.0


class Shutdown(Exception):
    pass


def detect_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def device_label(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def live_workers(store: Store, stale_after: float = WORKER_STALE_AFTER) -> list[dict]:
    return store.query("SELECT * FROM workers WHERE heartbeat_at >= ? ORDER BY started_at",
                       (time.time() - stale_after,))


def ensure_worker(store: Store, *, stale_after: float = WORKER_STALE_AFTER, extra_args: list[str] | None = None) -> bool:
    """Start a detached worker for this data home unless one is alive. True when it started one."""
    host = socket.gethostname()
    worker_id = f"{host}:spawned:{uuid.uuid4().hex[:8]}"
    with store.transaction(immediate=True):
        if live_workers(store, stale_after):
            return False
        # Reserve the slot before spawning: a concurrent caller now sees a live worker.
        store.execute("INSERT INTO workers (id, pid, host, device, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                      (worker_id, None, host, "starting", now_iso(), time.time()))
    log_path = store.home / "worker.log"
    cmd = [sys.executable, "-m", "core.worker", "--home", str(store.home), "--worker-id", worker_id,
           *(extra_args or [])]
    repo_root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")])))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(repo_root), env=env)
    store.execute("UPDATE workers SET pid = ? WHERE id = ?", (proc.pid, worker_id))
    store.audit("system", "worker.spawn", "worker", worker_id, pid=proc.pid)
    return True


def _traceback_summary(exc: BaseException, limit: int = 4000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text if len(text) <= limit else "…" + text[-limit:]


class Worker:
    def __init__(self, store: Store, *, worker_id: str | None = None, device: str = "auto", poll: float = 1.0,
                 stale_after: float = jobs.DEFAULT_STALE_AFTER):
        self.store = store
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.device = detect_device(device)
        self.poll = float(poll)
        self.stale_after = float(stale_after)
        self.heartbeat_every = min(HEARTBEAT_EVERY, max(0.2, self.stale_after / 4))
        self.stopping = threading.Event()
        self.current_job: int | None = None
        self.unrecorded: dict[int, str] = {}     # failed jobs the database would not take yet (full disk)
        self._home_id: tuple[int, int] | None = None

    # ---- registration ---------------------------------------------------------------------------
    def _db_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.store.home / "sgcl.db")
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def home_gone(self) -> bool:
        """True when the data home this worker serves was deleted or replaced: its open database file
        would go on answering from the deleted inode, so the worker would serve nobody, for ever."""
        now = self._db_identity()
        return now is None or (self._home_id is not None and now != self._home_id)

    def register(self) -> None:
        from core.training import remove_stale_checkpoint_temps

        self._home_id = self._db_identity()
        try:
            if removed := remove_stale_checkpoint_temps(self.store):
                log.info("removed %d temporary files of killed checkpoint writes", removed)
        except Exception:  # noqa: BLE001 - tidying up must not keep a worker from starting
            log.exception("could not clean checkpoint temporary files")
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO workers (id, pid, host, device, started_at, heartbeat_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host, device = excluded.device, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                (self.id, os.getpid(), socket.gethostname(), device_label(self.device), now_iso(), time.time()))
            self.store.audit("system", "worker.start", "worker", self.id, device=self.device, pid=os.getpid())

    def unregister(self) -> None:
        self.store.execute("DELETE FROM workers WHERE id = ?", (self.id,))

    def beat(self) -> None:
        self.store.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (time.time(), self.id))

    # ---- jobs -------------------------------------------------------------------------------------
    def handlers(self):
        from core.training import run_train_job

        return {"train": run_train_job}

    def _heartbeat_loop(self, job_id: int, done: threading.Event, lost: threading.Event) -> None:
        while not done.wait(self.heartbeat_every):
            try:
                self.beat()
                if not jobs.heartbeat(self.store, job_id, self.id):
                    lost.set()
            except Exception:  # a locked database for a moment is no reason to kill the job
                log.exception("heartbeat failed")

    def run_job(self, job: dict) -> str:
        """Run one claimed job to its end state; returns that state. Never raises for job errors."""
        from core.sg.learner import Cancelled
        from core.training import JobLost

        self.current_job = job["id"]
        done, lost = threading.Event(), threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(job["id"], done, lost), daemon=True)
        beat.start()
        log.info("job %s (%s) claimed, attempt %s", job["id"], job["kind"], job["attempts"])
        try:
            handler = self.handlers().get(job["kind"])
            if handler is None:
                raise ValueError(f"unknown job kind {job['kind']!r}")
            handler(self.store, job, worker_id=self.id, device=self.device,
                    should_stop=lambda: self.stopping.is_set() or lost.is_set())
            state = "done"
            if job["kind"] == "train":
                self.export_bundle(job)
        except Cancelled:
            if lost.is_set():
                state = "lost"
            elif self.stopping.is_set() and not jobs.get_job(self.store, job["id"])["cancel_requested"]:
                jobs.release(self.store, job["id"], self.id)
                state = "released"
            else:
                jobs.mark_cancelled(self.store, job["id"], self.id)
                state = "cancelled"
        except JobLost:
            state = "lost"
        except Exception as exc:
            log.exception("job %s failed", job["id"])
            state = "failed"
            summary = _traceback_summary(exc)
            if not self._record_failure(job["id"], summary):
                # The database cannot take the failure now (a full disk): keep serving and keep trying at
                # every step, instead of exiting and leaving the job "running" until another worker starts.
                self.unrecorded[job["id"]] = summary
        except BaseException:  # KeyboardInterrupt / SystemExit mid-job: back to the queue, resumed later
            try:
                jobs.release(self.store, job["id"], self.id)
            except Exception:  # noqa: BLE001
                log.exception("could not release job %s", job["id"])
            raise
        finally:
            done.set()
            beat.join()
            self.current_job = None
        log.info("job %s → %s", job["id"], state)
        return state

    def _record_failure(self, job_id: int, summary: str, tries: int = 3) -> bool:
        """Mark ``job_id`` failed; a few tries a moment apart (the failed job's temporary files were just
        removed, which often frees the space the database needs). False when it still cannot."""
        for attempt in range(tries):
            try:
                jobs.fail(self.store, job_id, summary, self.id)
                return True
            except Exception:  # noqa: BLE001 - the database may be why the job failed
                log.exception("could not mark job %s failed (try %d)", job_id, attempt + 1)
                if attempt + 1 < tries:
                    self.stopping.wait(0.5 * (attempt + 1))
        return False

    def export_bundle(self, job: dict) -> None:
        """The model bundle of a task just completed (core/deploy/bundle.py), for download and for a
        service following the run. A failed export is audited and logged; the task stays done."""
        from core.deploy.bundle import export_bundle

        if os.environ.get("SGCL_EXPORT_BUNDLES", "1") == "0":
            return
        task_idx = int(job["payload"]["task_idx"])
        try:
            export_bundle(self.store, SYSTEM, job["run_id"], task_idx)
        except Exception as exc:  # noqa: BLE001 - the bundle can be exported again on demand
            log.exception("bundle export of run %s task %s failed", job["run_id"], task_idx)
            try:
                self.store.audit(self.id, "model.export_failed", "run", job["run_id"], task=task_idx + 1,
                                 reason=f"{type(exc).__name__}: {str(exc)[:200]}")
            except Exception:  # noqa: BLE001
                log.exception("could not audit the failed export")

    def step(self) -> str | None:
        """One iteration: heartbeat, record failures the database refused before, re-queue stale jobs,
        claim and run one job. Returns its end state, or None when nothing was runnable."""
        for job_id, summary in list(self.unrecorded.items()):
            if self._record_failure(job_id, summary, tries=1):
                del self.unrecorded[job_id]
        if self.unrecorded:
            return None          # no new job while the database cannot record the last one's end
        self.beat()
        for job_id in jobs.requeue_stale(self.store, self.stale_after):
            log.warning("job %s was stale; re-queued or failed", job_id)
        job = jobs.claim(self.store, self.id)
        if job is None:
            return None
        return self.run_job(job)

    def serve(self, once: bool = False, exit_when_idle: bool = False, precompute: bool = True) -> None:
        self.register()
        try:
            while not self.stopping.is_set():
                if self.home_gone():
                    log.error("data home %s is gone: worker %s exits", self.store.home, self.id)
                    break
                state = self.step()
                if once and state is not None:
                    break
                if state is None:
                    if once or (exit_when_idle and not self._pending()):
                        break
                    if not (precompute and self.precompute_features()):
                        self.stopping.wait(self.poll)
        finally:
            try:
                self.unregister()
            except Exception:  # noqa: BLE001 - the database may be the reason we are stopping
                log.exception("could not unregister worker %s", self.id)

    def precompute_features(self) -> bool:
        """While idle: cache the frozen-prefix features of images that lack them (a small batch at a
        time, so a job queued meanwhile waits at most one batch). True when it did some work."""
        from core import features

        try:
            queued = lambda: self.stopping.is_set() or self.store.query_one(  # noqa: E731
                "SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")["n"] > 0
            return features.fill_missing(self.store, device=self.device, should_stop=queued) > 0
        except Exception:  # noqa: BLE001 - precomputing is an optimisation; never let it kill the worker
            log.exception("feature precompute failed")
            return False

    def _pending(self) -> bool:
        """Anything queued, or running elsewhere (it may go stale and come back to the queue)."""
        return self.store.query_one("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')")["n"] > 0

    def install_signal_handlers(self) -> None:
        def handle(signum, frame):
            log.info("signal %s: stopping after the current batch", signum)
            self.stopping.set()
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description="sgcl-studio background worker")
    parser.add_argument("--home", default=None, help="data home (default: $SGCL_HOME or ./sgcl-data)")
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--exit-when-idle", action="store_true", help="exit once no job is queued or running")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between queue polls when idle")
    parser.add_argument("--stale-after", type=float, default=None,
                        help="seconds without heartbeat before a running job is re-queued "
                             "(default: setting job_stale_seconds or 60)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1…")
    parser.add_argument("--no-precompute", action="store_true",
                        help="do not cache image features while idle (they are then computed by each train job)")
    parser.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from core.perf import tune_allocator

    tune_allocator()
    store = Store(args.home)
    stale_after = args.stale_after if args.stale_after is not None else float(
        settings.get(store, "job_stale_seconds"))
    worker = Worker(store, worker_id=args.worker_id, device=args.device, poll=args.poll, stale_after=stale_after)
    worker.install_signal_handlers()
    log.info("worker %s on %s serving %s", worker.id, device_label(worker.device), store.home)
    worker.serve(once=args.once, exit_when_idle=args.exit_when_idle, precompute=not args.no_precompute)
    return 0


if __name__ == "__main__":
    sys.exit(main())
