import sqlite3
import threading
import time

import pytest

from core.store import MIGRATIONS, SCHEMA_VERSION, Store


def _put(store, key, value):
    store.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, f'"{value}"'))


def test_new_home_gets_folders_schema_and_wal(tmp_path):
    store = Store(tmp_path / "h")
    for sub in ("images", "cache", "models", "checkpoints"):
        assert (tmp_path / "h" / sub).is_dir()
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert store.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
    assert store.query_one("PRAGMA busy_timeout")["timeout"] >= 5000
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"labels", "label_aliases", "glossary_entries", "images", "tasks", "runs", "jobs", "metrics",
            "audit", "users", "settings", "embeddings"} <= tables


def test_reopening_does_not_rerun_migrations_and_keeps_data(tmp_path):
    Store(tmp_path).execute("INSERT INTO settings (key, value) VALUES ('encoder', '\"e5\"')")
    again = Store(tmp_path)
    assert again.get_setting("encoder") == "e5"
    assert again.schema_version == SCHEMA_VERSION


def test_pending_migration_is_applied_on_start(tmp_path, monkeypatch):
    Store(tmp_path).close()
    monkeypatch.setattr("core.store.MIGRATIONS", MIGRATIONS + ["CREATE TABLE extra (x INTEGER)"])
    upgraded = Store(tmp_path)
    assert upgraded.schema_version == len(MIGRATIONS) + 1
    assert upgraded.query("SELECT * FROM extra") == []


def test_failed_transaction_rolls_back(store):
    try:
        with store.transaction():
            store.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert store.get_setting("a") is None


def test_second_process_connection_waits_for_the_writer_then_succeeds(tmp_path):
    store = Store(tmp_path)
    other = Store(tmp_path)                     # another process's connection, with the app's busy timeout
    holding, release = threading.Event(), threading.Event()

    def writer():
        with store.transaction():               # BEGIN IMMEDIATE: the write lock is held from here
            _put(store, "k", "v")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        impatient = sqlite3.connect(tmp_path / "sgcl.db", timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):   # the lock really is held
            impatient.execute("INSERT INTO settings (key, value) VALUES ('y', '1')")
        impatient.close()
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        with other.transaction():               # waits on the busy lock instead of failing
            other.execute("INSERT INTO settings (key, value) VALUES ('x', '1')")
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join(10)
    assert waited >= 0.4, f"the insert did not wait for the writer ({waited:.2f}s)"
    assert store.get_setting("x") == 1 and store.get_setting("k") == "v"


def test_audit_rows_record_actor_and_details(store):
    store.audit("alice", "label.propose", "label", 7, name="傷")
    [row] = store.audit_rows("label", 7)
    assert row["actor"] == "alice" and row["details"] == {"name": "傷"} and row["at"]
