"""Issue 13, the accounts/store/app-shell points: each test reproduces an attack that worked before.

2  unauthenticated requests grew the database through failed-login audit rows
7  a database that cannot write raised a raw sqlite3.OperationalError (the store side)
8  sgcl.db and the data home were readable by every local user
10 weak passwords were accepted; the login told which user names exist
11 a data home on a network file system was used (SQLite WAL there can corrupt or lock the database)
+  Streamlit's deployment settings, and the static security check (bandit) in `make test`
"""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import tomllib

import pytest

from core import labels, users
from core.auth import SYSTEM, Actor
from core.i18n import UserError
from core.store import StorageError, Store, filesystem_type, storage_reason
from tests.conftest import REPO

PASSWORD = "a long pass phrase"


def _db_bytes(home) -> int:
    return sum(os.path.getsize(home / name) for name in ("sgcl.db", "sgcl.db-wal") if (home / name).exists())


# ---- 2: failed logins cannot grow the database -------------------------------------------------------
def test_a_huge_failed_username_is_logged_cut_and_cleaned(store):
    huge = "x" * (5 * 1024 * 1024)
    with pytest.raises(UserError) as err:
        users.authenticate(store, huge, "whatever")
    assert err.value.key == "auth.bad_login"
    [row] = [r for r in store.audit_rows() if r["action"] == "auth.fail"]
    assert len(row["target_id"]) <= 64 and row["actor"] == "anonymous"
    assert len(str(row["details"])) < 200
    with pytest.raises(UserError):
        users.authenticate(store, "ev\u202eil\x00\nforged line", "whatever")
    [_, forged] = [r for r in store.audit_rows() if r["action"] == "auth.fail"]
    assert "\n" not in forged["target_id"] and "\x00" not in forged["target_id"]
    assert "\u202e" not in forged["target_id"]


def test_five_5mb_usernames_do_not_grow_the_database(tmp_path):
    store = Store(tmp_path)
    before = _db_bytes(tmp_path)
    for i in range(5):
        with pytest.raises(UserError):
            users.authenticate(store, str(i) * (5 * 1024 * 1024), "whatever")
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _db_bytes(tmp_path) - before < 200_000       # was 75 MB


def test_unauthenticated_audit_rows_are_capped_per_window(store, monkeypatch, caplog):
    monkeypatch.setattr(users, "MAX_ANONYMOUS_FAIL_ROWS", 5)
    monkeypatch.setattr(users, "_dummy_hash", lambda: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
    with caplog.at_level(logging.WARNING, logger="sgcl.users"):
        for i in range(20):
            with pytest.raises(UserError):
                users.authenticate(store, f"ghost{i}", "whatever")
    fails = [r for r in store.audit_rows() if r["action"] == "auth.fail"]
    assert len(fails) == 5 and "not auditing each" in caplog.text
    # a real account's lockout still counts and is still recorded
    users.create_user(store, SYSTEM, "eri", PASSWORD, "expert")
    with pytest.raises(UserError):
        users.authenticate(store, "eri", "wrong")
    assert store.query_one("SELECT failed_logins FROM users WHERE username = 'eri'")["failed_logins"] == 1
    assert store.audit_rows("user", "eri")[-1]["details"] == {"failed": 1, "locked": False}


# ---- 10: passwords and user names ----------------------------------------------------------------------
@pytest.mark.parametrize("weak, key", [
    ("password", "auth.short_password"), ("12345678", "auth.short_password"), (" " * 8, "auth.short_password"),
    ("password1234", "auth.weak.common"), ("123456789012", "auth.weak.common"), (" " * 12, "auth.weak.repeat"),
    ("qwertyuiopasdf", "auth.weak.common"), ("eri-eri-eri-eri", "auth.weak.user_name"),
    ("かきくけこさしすせそたち", "auth.weak.sequence"),
])
def test_weak_passwords_are_refused_with_the_reason(store, admin, weak, key):
    with pytest.raises(UserError) as err:
        users.create_user(store, admin, "eri", weak, "expert")
    assert err.value.key == key
    ja, en = err.value.message("ja"), err.value.message("en")
    assert "12" in ja and "12" in en and ja != en          # says how long, in the reader's language
    with pytest.raises(UserError) as err:
        users.reset_password(store, SYSTEM, "admin", weak)
    assert err.value.key.startswith(("auth.short", "auth.weak."))
    assert store.query_one("SELECT COUNT(*) AS n FROM users")["n"] == 0


def test_a_strong_pass_phrase_is_accepted_and_hashed(store, admin):
    users.create_user(store, admin, "eri", "correct horse battery staple", "expert")
    assert users.authenticate(store, "eri", "correct horse battery staple") == Actor("eri", "expert")


def test_long_passwords_up_to_the_cap_are_checked_without_error(store, admin):
    phrase = "the quick brown fox jumps over seven lazy dogs near a quiet river bank " * 3   # 213 characters
    users.create_user(store, admin, "eri", phrase, "expert")
    assert users.authenticate(store, "eri", phrase).username == "eri"
    with pytest.raises(UserError) as err:                        # long, but only a repeat
        users.create_user(store, admin, "rei", "ab" * 128, "expert")
    assert err.value.key == "auth.weak.repeat"
    with pytest.raises(UserError) as err:
        users.create_user(store, admin, "rei", phrase * 2, "expert")
    assert err.value.key == "auth.long_password"


def test_a_weak_admin_password_from_the_environment_is_refused(store, monkeypatch):
    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "admin123")
    with pytest.raises(UserError):
        users.ensure_admin(store)
    assert store.query_one("SELECT COUNT(*) AS n FROM users")["n"] == 0


def test_unknown_wrong_and_locked_get_the_same_answer_at_the_same_cost(store, monkeypatch):
    users.create_user(store, SYSTEM, "eri", PASSWORD, "expert")
    for _ in range(users.MAX_FAILED_LOGINS):
        with pytest.raises(UserError):
            users.authenticate(store, "eri", "wrong")
    verifications = []
    real = users._password_matches
    monkeypatch.setattr(users, "_password_matches", lambda h, p: verifications.append(h) or real(h, p))
    answers = []
    for name, password in (("nobody", PASSWORD), ("eri", PASSWORD), ("eri", "wrong")):
        with pytest.raises(UserError) as err:
            users.authenticate(store, name, password)
        answers.append((err.value.key, err.value.message("ja"), err.value.message("en")))
    assert len(set(answers)) == 1 and answers[0][0] == "auth.bad_login"
    assert len(verifications) == 3                   # one argon2 verification each: no timing tell


@pytest.mark.parametrize("name, stored", [("ｅｒｉ", "eri"), ("e\u200bri", "eri"), ("  eri ", "eri"),
                                          ("e\u202eri", "eri")])
def test_usernames_are_cleaned_so_lookalikes_are_duplicates(store, admin, name, stored):
    users.create_user(store, admin, stored, PASSWORD, "expert")
    with pytest.raises(UserError) as err:
        users.create_user(store, admin, name, PASSWORD, "expert")
    assert err.value.key == "auth.user_exists"
    assert users.authenticate(store, name, PASSWORD).username == stored


@pytest.mark.parametrize("name", ["x" * 10_000, "\u200b\u200b", "bob\x00", "bob\nadmin", "a b"])
def test_bad_usernames_are_refused(store, admin, name):
    with pytest.raises(UserError) as err:
        users.create_user(store, admin, name, PASSWORD, "expert")
    assert err.value.key in ("input.too_long", "input.empty", "input.control_char", "auth.bad_username")
    assert err.value.message("ja") != err.value.message("en")
    assert store.query_one("SELECT COUNT(*) AS n FROM users")["n"] == 0


# ---- 7: a database that cannot write says so, in the user's language ---------------------------------
def _fill_the_disk(store: Store) -> None:
    # max_page_count makes SQLite answer SQLITE_FULL ("database or disk is full") like a full disk.
    pages = store.query_one("PRAGMA page_count")["page_count"]
    store.execute(f"PRAGMA max_page_count = {pages}")


def test_disk_full_is_a_user_error_and_nothing_is_half_written(store, expert):
    labels.propose(store, expert, "錆")
    _fill_the_disk(store)
    with pytest.raises(StorageError) as err:
        for i in range(500):        # each proposal writes a label, a draft entry and audit rows
            labels.propose(store, expert, f"新しい欠陥{i:03d}" * 8, create_entry=True, reading="テスト")
    assert err.value.key == "store.full" and not isinstance(err.value, sqlite3.Error)
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    assert "ディスク" in err.value.message("ja") and "disk is full" in err.value.message("en")
    assert not store.conn.in_transaction
    rows = store.query_one("SELECT COUNT(*) AS n FROM labels")["n"]
    proposed = [r for r in store.audit_rows("label") if r["action"] == "label.propose"]
    assert rows == len(proposed) >= 1                                # every label kept has its audit row
    store.execute("PRAGMA max_page_count = 1073741823")             # space freed: the store works again
    assert labels.propose(store, expert, "汚れ")["name"] == "汚れ"


def test_a_read_only_database_is_a_user_error(store, expert):
    store.execute("PRAGMA query_only = ON")
    with pytest.raises(StorageError) as err:
        labels.propose(store, expert, "錆")
    assert err.value.key == "store.read_only" and "読み取り専用" in err.value.message("ja")


def test_io_errors_map_to_a_message_and_busy_stays_as_before():
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = 10 | (3 << 8)        # SQLITE_IOERR_WRITE
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    assert storage_reason(io_error) == "io" and storage_reason(busy) is None
    assert "ディスク" in StorageError("io").message("ja")


def test_a_busy_timeout_still_raises_operational_error(tmp_path, monkeypatch):
    monkeypatch.setattr("core.store.BUSY_TIMEOUT_MS", 200)
    first, second = Store(tmp_path), Store(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def hold():
        with first.transaction():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(sqlite3.OperationalError, match="locked") as err:
            with second.transaction():
                pass
        assert not isinstance(err.value, UserError)
    finally:
        release.set()
        thread.join(10)


# ---- 8: the data home is private ------------------------------------------------------------------------
def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_data_home_is_private(tmp_path, expert):
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "home")
        labels.propose(store, expert, "錆")            # the -wal and -shm files exist now
    finally:
        os.umask(old)
    home = tmp_path / "home"
    assert _mode(home) == 0o700
    for sub in ("images", "cache", "models", "checkpoints", "tmp"):
        assert _mode(home / sub) == 0o700
    for name in ("sgcl.db", "sgcl.db-wal", "sgcl.db-shm"):
        assert _mode(home / name) == 0o600, name


def test_an_existing_open_data_home_is_made_private_on_start(tmp_path, expert):
    home = tmp_path / "home"
    labels.propose(Store(home), expert, "錆")
    os.chmod(home, 0o755)
    for name in ("sgcl.db", "sgcl.db-wal", "sgcl.db-shm"):
        if (home / name).exists():
            os.chmod(home / name, 0o644)
    Store(home)
    assert _mode(home) == 0o700
    for name in ("sgcl.db", "sgcl.db-wal", "sgcl.db-shm"):
        if (home / name).exists():
            assert _mode(home / name) == 0o600, name


# ---- 11: network file systems ---------------------------------------------------------------------------
MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
nas:/export/sgcl /mnt/nas nfs4 rw,vers=4.2 0 0
//files/team /mnt/team\\040share cifs rw 0 0
me@gpu:/data /mnt/gpu fuse.sshfs rw 0 0
/dev/vdb1 /mnt/nas/local ext4 rw 0 0
"""


@pytest.mark.parametrize("path, fs_type", [
    ("/home/me/sgcl-data", "ext4"), ("/mnt/nas/sgcl-data", "nfs4"), ("/mnt/team share/x", "cifs"),
    ("/mnt/gpu/sgcl", "fuse.sshfs"), ("/mnt/nas/local/sgcl", "ext4"), ("/mnt/nasty", "ext4"),
])
def test_the_file_system_of_a_path_is_read_from_the_mount_table(path, fs_type):
    assert filesystem_type(path, MOUNTS) == fs_type


def test_a_data_home_on_a_network_file_system_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("core.store.read_mount_table", lambda: f"server:/export {tmp_path} nfs rw 0 0\n")
    monkeypatch.delenv("SGCL_ALLOW_NETWORK_FS", raising=False)
    with pytest.raises(StorageError) as err:
        Store(tmp_path / "home")
    assert err.value.key == "store.network_fs"
    assert "nfs" in err.value.message("en") and "ローカル" in err.value.message("ja")
    assert not (tmp_path / "home").exists()          # refused before anything was written


def test_the_network_refusal_can_be_overridden_but_warns_loudly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("core.store.read_mount_table", lambda: f"server:/export {tmp_path} cifs rw 0 0\n")
    monkeypatch.setenv("SGCL_ALLOW_NETWORK_FS", "1")
    with caplog.at_level(logging.WARNING, logger="sgcl.store"):
        Store(tmp_path / "home")
    assert "NETWORK FILE SYSTEM" in caplog.text


def test_readme_says_what_is_safe():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "network file system" in text and "same machine" in text
    assert "SGCL_HOME=/shared" not in text


# ---- Streamlit's deployment settings ------------------------------------------------------------------
def test_streamlit_config_for_a_deployment():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    server = config["server"]
    assert server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True
    assert server["enableStaticServing"] is False      # nothing, and so never the data home, is served as files
    assert config["browser"]["gatherUsageStats"] is False
    docs = (REPO / "docs" / "accounts.md").read_text(encoding="utf-8")
    assert "proxy_pass" in docs and "X-Forwarded-Proto" in docs and "HttpOnly" in docs


# ---- the static security check ---------------------------------------------------------------------------
def _bandit(*targets) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bandit", "-q", "-c", str(REPO / "pyproject.toml"), "-r",
                           *map(str, targets)], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_static_security_check_passes_on_the_tree():
    result = _bandit(REPO / "core", REPO / "pages", REPO / "glossary", REPO / "app.py")
    assert result.returncode == 0, result.stdout[-4000:]


def test_the_static_security_check_catches_sql_built_from_data(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def find(store, name):\n'
                   '    return store.query(f"SELECT * FROM labels WHERE name = \'{name}\'")\n')
    result = _bandit(bad)
    assert result.returncode == 1 and "B608" in result.stdout
