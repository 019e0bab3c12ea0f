"""One SQLite database for everything the app and the worker share (plain sqlite3, parameterised SQL only).

WAL mode lets the Streamlit process read while the worker writes; the busy timeout makes a writer
wait for the other process instead of failing. The schema is versioned with ``PRAGMA user_version``
and every start applies the migrations it has not seen yet.

The data home holds password hashes and the audit log, so it is private to the account that runs the
app: the folder is 0700 and ``sgcl.db`` (with its ``-wal``/``-shm`` files) 0600, also for homes made
before this rule. SQLite in WAL mode needs one machine's locks and shared memory, so a data home on a
network file system (NFS, SMB, sshfs, 9p, ...) is refused. A database that cannot write (disk full,
read-only, I/O error) raises :class:`StorageError`, a ``UserError`` in the reader's language, from
every statement and commit; busy/locked timeouts stay ``sqlite3.OperationalError`` as before.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from core.i18n import UserError
from core.migrations import MIGRATIONS  # the schema, one migration an entry (re-exported for tests)

log = logging.getLogger("sgcl.store")

BUSY_TIMEOUT_MS = 30_000
HOME_MODE = 0o700
DB_FILE_MODE = 0o600
DB_FILES = ("sgcl.db", "sgcl.db-wal", "sgcl.db-shm")
SUBFOLDERS = ("images", "cache", "models", "checkpoints", "tmp")


SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_home() -> Path:
    """The one resolver of the data home: ``$SGCL_HOME``, else ``./sgcl-data`` (the app, the CLI and the
    worker all open ``Store()`` through it)."""
    return Path(os.environ.get("SGCL_HOME") or "sgcl-data").resolve()


# ---- storage errors ---------------------------------------------------------------------------------
class StorageError(UserError):
    """The database cannot be written or read (disk full, read-only, I/O error, damaged file).
    ``reason`` is one of full, read_only, io, cant_open, corrupt, network_fs."""

    def __init__(self, reason: str, **params):
        self.reason = reason
        super().__init__(f"store.{reason}", **params)


# Primary SQLite result codes (https://sqlite.org/rescode.html) that mean "the storage failed".
# SQLITE_BUSY (5) and SQLITE_LOCKED (6) are absent on purpose: a writer that waited out the busy
# timeout keeps its sqlite3.OperationalError, as callers (and the worker's retry) expect.
_STORAGE_CODES = {13: "full", 8: "read_only", 10: "io", 14: "cant_open", 11: "corrupt", 26: "corrupt"}


def storage_reason(exc: BaseException) -> str | None:
    """The StorageError reason for a sqlite3 error, or None when it is not a storage failure."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _STORAGE_CODES.get(code & 0xFF)


def _translate(exc: sqlite3.Error) -> BaseException:
    reason = storage_reason(exc)
    if reason is None:
        return exc
    err = StorageError(reason)
    err.__cause__ = exc
    return err


class _Connection(sqlite3.Connection):
    """Every statement turns a storage failure into a StorageError."""

    def execute(self, *args, **kwargs):
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise _translate(exc) from exc

    def executemany(self, *args, **kwargs):
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise _translate(exc) from exc

    def executescript(self, *args, **kwargs):
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise _translate(exc) from exc

    def commit(self):
        try:
            return super().commit()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc) from exc


# ---- network file systems ---------------------------------------------------------------------------
# SQLite's WAL mode keeps its index in shared memory and relies on POSIX locks that these file systems
# do not provide reliably across machines (https://sqlite.org/wal.html, "WAL does not work over a
# network filesystem"), so the database can be corrupted or stay locked.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "ncpfs",
    "coda", "davfs", "ocfs2", "gfs2", "beegfs", "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs",
    "fuse.rclone", "fuse.davfs2", "fuse.gcsfuse", "fuse.juicefs", "fuse.cephfs", "fuse.smbnetfs",
})
MOUNT_TABLE = "/proc/mounts"
ALLOW_NETWORK_FS_ENV = "SGCL_ALLOW_NETWORK_FS"


def read_mount_table() -> str:
    try:
        return Path(MOUNT_TABLE).read_text(encoding="utf-8", errors="replace")
    except OSError:      # not Linux, or no /proc: nothing to check against
        return ""


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str | os.PathLike, mount_table: str | None = None) -> str | None:
    """The file-system type of the mount that holds ``path`` (the longest mount point above it), read
    from ``mount_table`` (default: /proc/mounts); None when the table is empty or unreadable."""
    table = read_mount_table() if mount_table is None else mount_table
    target = Path(path).resolve()
    best, best_type = -1, None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point, fs_type = _unescape_mount_field(fields[1]), fields[2]
        if target == Path(mount_point) or Path(mount_point) in target.parents:
            if len(mount_point) >= best:        # later lines win ties: they are mounted on top
                best, best_type = len(mount_point), fs_type
    return best_type


def is_network_filesystem(fs_type: str | None) -> bool:
    return bool(fs_type) and (fs_type in NETWORK_FS_TYPES or fs_type.startswith("nfs"))


def check_local_filesystem(home: Path, mount_table: str | None = None) -> None:
    """Refuse a data home on a network file system; with SGCL_ALLOW_NETWORK_FS=1 only warn (loudly)."""
    fs_type = filesystem_type(home, mount_table)
    if not is_network_filesystem(fs_type):
        return
    if os.environ.get(ALLOW_NETWORK_FS_ENV) == "1":
        log.warning("DATA HOME %s IS ON A NETWORK FILE SYSTEM (%s): SQLite in WAL mode can corrupt or lock "
                    "the database there. Continuing only because %s=1.", home, fs_type, ALLOW_NETWORK_FS_ENV)
        return
    raise StorageError("network_fs", home=str(home), fs_type=fs_type)


# ---- permissions ------------------------------------------------------------------------------------
def _make_private(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` when it is ours and looser; a file we cannot change is reported, not
    fatal (e.g. a home shared read-only by an admin on purpose)."""
    try:
        st_ = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(st_.st_mode) & ~mode and st_.st_uid == os.geteuid():
        try:
            path.chmod(mode)
        except OSError as exc:
            log.warning("could not make %s private (%s)", path, exc)


def _prepare_home(home: Path) -> None:
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    _make_private(home, HOME_MODE)
    for sub in SUBFOLDERS:
        (home / sub).mkdir(mode=HOME_MODE, exist_ok=True)
    db = home / "sgcl.db"
    if not db.exists():
        # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the database
        # file's permissions.
        os.close(os.open(db, os.O_RDWR | os.O_CREAT, DB_FILE_MODE))
    for name in DB_FILES:
        _make_private(home / name, DB_FILE_MODE)


class Store:
    """The data home: ``sgcl.db`` plus the ``images/``, ``cache/``, ``models/`` and ``checkpoints/`` folders."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home).resolve() if home is not None else default_home()
        check_local_filesystem(self.home)
        try:
            _prepare_home(self.home)
        except OSError as exc:
            raise StorageError("cant_open") from exc
        self.path = self.home / "sgcl.db"
        # isolation_level=None: we issue BEGIN ourselves, so a transaction is exactly what we say.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, factory=_Connection)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        for name in DB_FILES[1:]:        # -wal/-shm left by an older version with looser modes
            _make_private(self.home / name, DB_FILE_MODE)
        self.conn = conn
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
                    self._rollback()
                raise
            else:
                self._tx_depth -= 1
                if outer:
                    try:
                        self.conn.execute("COMMIT")
                    except BaseException:
                        # e.g. SQLITE_FULL at commit: the transaction may still be open; end it, so
                        # the connection is usable once space is freed.
                        self._rollback()
                        raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:   # keep the error that caused the rollback
                log.warning("rollback failed: %s", exc)

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

    # One SQL style for the whole project: parameterised statements through this class. The two helpers
    # below only spell out INSERT/UPDATE from a dict; table and column names come from the code (checked
    # against a strict identifier pattern), values always travel as parameters.
    def insert(self, table: str, row: dict[str, Any], replace: bool = False) -> int:
        """Insert ``row`` into ``table``; returns the new rowid (the INTEGER PRIMARY KEY)."""
        columns = [_identifier(table), *(_identifier(c) for c in row)]
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        sql = (f"{verb} INTO {columns[0]} ({', '.join(columns[1:])}) "  # nosec B608  # identifiers checked, values bound
               f"VALUES ({', '.join('?' * len(row))})")
        return int(self.execute(sql, tuple(_scalar(v) for v in row.values())).lastrowid)

    def update(self, table: str, key: Any, changes: dict[str, Any], key_column: str = "id") -> int:
        """``UPDATE table SET … WHERE key_column = key``; returns the number of rows changed."""
        assignments = ", ".join(f"{_identifier(c)} = ?" for c in changes)
        sql = f"UPDATE {_identifier(table)} SET {assignments} WHERE {_identifier(key_column)} = ?"  # nosec B608  # identifiers checked
        return self.execute(sql, (*(_scalar(v) for v in changes.values()), key)).rowcount

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


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _identifier(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bytes)):
        return value
    raise TypeError(f"store values must be str, int, float, bytes or None, not {type(value).__name__}: "
                    "serialise structured values (json.dumps) where the schema says TEXT")


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
