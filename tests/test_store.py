import sqlite3
import threading

from core.store import MIGRATIONS, SCHEMA_VERSION, Store


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
    Store(tmp_path).set_setting("encoder", "e5", actor="a")
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
            store.set_setting("a", 1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert store.get_setting("a") is None


def test_second_process_connection_waits_for_writer(tmp_path):
    store = Store(tmp_path)
    other = sqlite3.connect(tmp_path / "sgcl.db", timeout=5)
    done = threading.Event()

    def write_later():
        with store.transaction():
            store.set_setting("k", "v")
            done.wait(0.3)

    t = threading.Thread(target=write_later)
    t.start()
    other.execute("INSERT INTO settings (key, value) VALUES ('x', '1')")  # waits on the busy lock
    other.commit()
    t.join()
    assert store.get_setting("x") == 1 and store.get_setting("k") == "v"


def test_audit_rows_record_actor_and_details(store):
    store.audit("alice", "label.propose", "label", 7, name="傷")
    [row] = store.audit_rows("label", 7)
    assert row["actor"] == "alice" and row["details"] == {"name": "傷"} and row["at"]
