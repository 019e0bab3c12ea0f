"""One SQLite database (via sqlite-utils) for everything the app and the worker share.

WAL mode lets the Streamlit process read while the worker writes; the busy timeout makes a writer
wait for the other process instead of failing. The schema is versioned with ``PRAGMA user_version``
and every start applies the migrations it has not seen yet.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

BUSY_TIMEOUT_MS = 30_000

# Each entry is one migration; its index + 1 is the schema version it produces. Never edit an
# applied migration: append a new one.
MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('expert','reviewer','supervisor','admin')),
        active INTEGER NOT NULL DEFAULT 1,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until REAL,
        created_at TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE glossary_entries (
        id TEXT PRIMARY KEY,
        canonical TEXT NOT NULL,
        reading TEXT NOT NULL DEFAULT '',
        en TEXT NOT NULL DEFAULT '',
        embed_text TEXT NOT NULL DEFAULT '',
        aliases TEXT NOT NULL DEFAULT '',
        distinct_from TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'approved',
        version INTEGER NOT NULL DEFAULT 1,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        lang TEXT NOT NULL DEFAULT 'ja',
        entry_id TEXT REFERENCES glossary_entries(id),
        status TEXT NOT NULL CHECK (status IN ('proposed','approved','trained','retired','rejected','merged')),
        merged_into INTEGER REFERENCES labels(id),
        version INTEGER NOT NULL DEFAULT 1,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE INDEX labels_name_key ON labels(name_key);
    CREATE INDEX labels_status ON labels(status);
    CREATE TABLE label_aliases (
        id INTEGER PRIMARY KEY,
        label_id INTEGER NOT NULL REFERENCES labels(id),
        text TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX label_aliases_label ON label_aliases(label_id);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        label_id INTEGER NOT NULL REFERENCES labels(id),
        split TEXT NOT NULL CHECK (split IN ('train','holdout')),
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        original_name TEXT NOT NULL DEFAULT '',
        uploaded_by TEXT NOT NULL,
        uploaded_at TEXT NOT NULL
    );
    CREATE INDEX images_label ON images(label_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        encoder TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        idx INTEGER NOT NULL,
        label_ids TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        created_at TEXT NOT NULL,
        UNIQUE (run_id, idx)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        run_id INTEGER REFERENCES runs(id),
        payload TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        worker TEXT,
        heartbeat_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_status ON jobs(status);
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        trained_task INTEGER NOT NULL,
        eval_task INTEGER NOT NULL,
        acc REAL NOT NULL,
        acc_task_aware REAL,
        n_classes INTEGER NOT NULL,
        n_images INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (run_id, trained_task, eval_task)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        pid INTEGER,
        host TEXT,
        device TEXT,
        started_at TEXT,
        heartbeat_at REAL
    );
    CREATE TABLE embeddings (
        encoder TEXT NOT NULL,
        text TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (encoder, text)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target_type TEXT NOT NULL,
        target_id TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_target ON audit(target_type, target_id);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_home() -> Path:
    return Path(os.environ.get("SGCL_HOME", "sgcl-data")).resolve()


class Store:
    """The data home: ``sgcl.db`` plus the ``images/``, ``cache/``, ``models/`` and ``checkpoints/`` folders."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home).resolve() if home is not None else default_home()
        for sub in ("images", "cache", "models", "checkpoints", "tmp"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.path = self.home / "sgcl.db"
        # isolation_level=None: we issue BEGIN ourselves, so a transaction is exactly what we say.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._tx_depth = 0
        self.migrate()

    # ---- schema -------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        with self.transaction(immediate=True):
            current = self.schema_version
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in _split_sql(script):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version}")

    # ---- transactions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """A (re-entrant) transaction. ``immediate`` takes the write lock up front so read-modify-
        write sequences (claiming a job, optimistic version checks) cannot interleave."""
        with self._lock:
            outer = self._tx_depth == 0
            if outer:
                self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self._tx_depth += 1
            try:
                yield self.conn
            except BaseException:
                self._tx_depth -= 1
                if outer:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self._tx_depth -= 1
                if outer:
                    self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self._lock:
            cur = self.conn.execute(sql, params)
            cols = [c[0] for c in cur.description] if cur.description else []
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def query_one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()

    # ---- audit --------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target_type: str, target_id: Any = None, **details) -> None:
        self.execute(
            "INSERT INTO audit (at, actor, action, target_type, target_id, details) VALUES (?,?,?,?,?,?)",
            (now_iso(), actor, action, target_type, None if target_id is None else str(target_id),
             json.dumps(details, ensure_ascii=False, default=str)),
        )

    def audit_rows(self, target_type: str | None = None, target_id: Any = None) -> list[dict]:
        sql, params = "SELECT * FROM audit", []
        where = []
        if target_type is not None:
            where.append("target_type = ?")
            params.append(target_type)
        if target_id is not None:
            where.append("target_id = ?")
            params.append(str(target_id))
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.query(sql + " ORDER BY id", tuple(params))
        for r in rows:
            r["details"] = json.loads(r["details"])
        return rows

    # ---- settings -----------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.query_one("SELECT value FROM settings WHERE key = ?", (key,))
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any, actor: str = "system") -> None:
        with self.transaction():
            self.execute(
                "INSERT INTO settings (key, value, updated_by, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_by=excluded.updated_by, "
                "updated_at=excluded.updated_at",
                (key, json.dumps(value, ensure_ascii=False), actor, now_iso()),
            )
            self.audit(actor, "setting.set", "setting", key, value=value)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes (used by tests and the app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
