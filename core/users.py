"""Local accounts: argon2 password hashes, lockout after repeated failures, first-start admin."""
from __future__ import annotations

import os
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.auth import ROLES, Actor, require
from core.i18n import UserError
from core.store import Store, now_iso

MAX_FAILED_LOGINS = 5
LOCKOUT_SECONDS = 15 * 60
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()

def _valid_username(username: str) -> bool:
    return bool(username) and len(username) <= 64 and all(c.isalnum() or c in "._-" for c in username)


def create_user(store: Store, actor: Actor, username: str, password: str, role: str) -> dict:
    require(actor, "user.manage")
    username = (username or "").strip()
    if not _valid_username(username):
        raise UserError("auth.bad_username")
    if role not in ROLES:
        raise UserError("auth.bad_role", role=role)
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError("auth.short_password", n=MIN_PASSWORD_LENGTH)
    with store.transaction():
        if store.query_one("SELECT id FROM users WHERE username = ?", (username,)):
            raise UserError("auth.user_exists", username=username)
        store.db["users"].insert({"username": username, "password_hash": _hasher.hash(password), "role": role,
                                  "active": 1, "failed_logins": 0, "created_at": now_iso(), "version": 1})
        store.audit(actor.username, "user.create", "user", username, role=role)
    return get_user(store, username)


def get_user(store: Store, username: str) -> dict:
    row = store.query_one("SELECT id, username, role, active, failed_logins, locked_until, created_at, version "
                          "FROM users WHERE username = ?", (username,))
    if row is None:
        raise UserError("err.not_found", what="user", id=username)
    return row


def list_users(store: Store, actor: Actor) -> list[dict]:
    require(actor, "user.manage")
    return store.query("SELECT id, username, role, active, failed_logins, locked_until, created_at "
                       "FROM users ORDER BY username")


def _refuse_removing_last_admin(store: Store, user: dict) -> None:
    # Nobody could manage users or settings again (short of editing the database by hand).
    if user["role"] == "admin" and user["active"]:
        others = store.query_one("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND active = 1 "
                                 "AND username != ?", (user["username"],))["n"]
        if others == 0:
            raise UserError("auth.last_admin")


def set_role(store: Store, actor: Actor, username: str, role: str) -> dict:
    require(actor, "user.manage")
    if role not in ROLES:
        raise UserError("auth.bad_role", role=role)
    with store.transaction():
        before = get_user(store, username)
        if role != "admin":
            _refuse_removing_last_admin(store, before)
        store.execute("UPDATE users SET role = ?, version = version + 1 WHERE username = ?", (role, username))
        store.audit(actor.username, "user.role", "user", username, before=before["role"], after=role)
    return get_user(store, username)


def set_active(store: Store, actor: Actor, username: str, active: bool) -> dict:
    require(actor, "user.manage")
    with store.transaction():
        user = get_user(store, username)
        if not active:
            _refuse_removing_last_admin(store, user)
        store.execute("UPDATE users SET active = ?, failed_logins = 0, locked_until = NULL WHERE username = ?",
                      (int(active), username))
        store.audit(actor.username, "user.activate" if active else "user.deactivate", "user", username)
    return get_user(store, username)


def reset_password(store: Store, actor: Actor, username: str, password: str) -> None:
    if actor.username != username:
        require(actor, "user.manage")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError("auth.short_password", n=MIN_PASSWORD_LENGTH)
    with store.transaction():
        get_user(store, username)
        store.execute("UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL "
                      "WHERE username = ?", (_hasher.hash(password), username))
        store.audit(actor.username, "user.password", "user", username)


def authenticate(store: Store, username: str, password: str, *, now: float | None = None) -> Actor:
    """Check a password. After MAX_FAILED_LOGINS failures the account locks for LOCKOUT_SECONDS,
    and a locked account refuses even the right password (so guessing gains nothing)."""
    now = time.time() if now is None else now
    # The failure counter and the audit row must survive the refusal, so the transaction commits
    # first and the refusal is raised after it.
    refusal: UserError | None = None
    with store.transaction():
        row = store.query_one("SELECT * FROM users WHERE username = ?", ((username or "").strip(),))
        if row is None:
            _hasher.hash(password or "x")  # same cost either way: don't reveal which names exist
            store.audit(username or "", "auth.fail", "user", username, reason="unknown user")
            refusal = UserError("auth.bad_login")
        elif row["locked_until"] and row["locked_until"] > now:
            store.audit(row["username"], "auth.fail", "user", row["username"], reason="locked")
            refusal = UserError("auth.locked", n=MAX_FAILED_LOGINS, minutes=LOCKOUT_SECONDS // 60)
        elif not row["active"]:
            store.audit(row["username"], "auth.fail", "user", row["username"], reason="inactive")
            refusal = UserError("auth.inactive")
        elif not _password_matches(row["password_hash"], password):
            failed = row["failed_logins"] + 1
            locked_until = now + LOCKOUT_SECONDS if failed >= MAX_FAILED_LOGINS else None
            store.execute("UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?",
                          (0 if locked_until else failed, locked_until, row["id"]))
            store.audit(row["username"], "auth.fail", "user", row["username"], failed=failed,
                        locked=bool(locked_until))
            refusal = (UserError("auth.locked", n=MAX_FAILED_LOGINS, minutes=LOCKOUT_SECONDS // 60)
                       if locked_until else UserError("auth.bad_login"))
        else:
            store.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
            if _hasher.check_needs_rehash(row["password_hash"]):
                store.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                              (_hasher.hash(password), row["id"]))
            store.audit(row["username"], "auth.login", "user", row["username"])
    if refusal is not None:
        raise refusal
    return Actor(row["username"], row["role"])


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def ensure_admin(store: Store, echo=print) -> str | None:
    """On first start create ``admin``; its password is ``SGCL_ADMIN_PASSWORD`` or generated and
    printed once. Returns the generated password (None when nothing was created or it was given)."""
    with store.transaction():
        if store.query_one("SELECT id FROM users LIMIT 1"):
            return None
        given = os.environ.get("SGCL_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        store.db["users"].insert({"username": "admin", "password_hash": _hasher.hash(password), "role": "admin",
                                  "active": 1, "failed_logins": 0, "created_at": now_iso(), "version": 1})
        store.audit("system", "user.create", "user", "admin", role="admin", bootstrap=True)
    if given:
        return None
    echo(f"[sgcl-studio] created user 'admin' with password: {password}  (shown once; change it on the Admin page)")
    return password
