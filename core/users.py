"""Local accounts: argon2 password hashes, lockout after repeated failures, first-start admin.

Passwords need ``MIN_PASSWORD_LENGTH`` characters and a zxcvbn score of at least ``MIN_PASSWORD_SCORE``
(zxcvbn estimates guesses from common passwords, words, names, keyboard patterns, repeats, dates and
the user's own name), so ``password1234`` or twelve spaces are refused with the reason in the user's
language. User names go through ``core.inputs`` (NFKC, invisible characters removed, capped).

A login answers the same ``auth.bad_login`` for an unknown name, a wrong password and a locked account,
and costs one argon2 verification in each case, so neither the text nor the time tells which user
names exist. A failed login's audit row holds the typed name only cut and cleaned
(``truncate_for_log``), and rows that no account's lockout bounds (unknown names, attempts on a locked
or disabled account) are capped at ``MAX_ANONYMOUS_FAIL_ROWS`` per ``ANONYMOUS_FAIL_WINDOW_SECONDS``,
so nobody can grow the database without a password.
"""
from __future__ import annotations

import functools
import logging
import os
import secrets
import time
import unicodedata
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from core import sessions
from core.auth import ROLES, Actor, require
from core.i18n import UserError
from core.inputs import MAX_PASSWORD, MAX_USERNAME, clean_text, truncate_for_log
from core.store import Store, now_iso

log = logging.getLogger("sgcl.users")

MAX_FAILED_LOGINS = 5
LOCKOUT_SECONDS = 15 * 60
# OWASP ASVS 4.0 (2.1.1) asks for at least 12 characters; the strength estimate does the rest.
MIN_PASSWORD_LENGTH = 12
# zxcvbn's scale: 3 = "safely unguessable: moderate protection from an offline slow-hash scenario".
MIN_PASSWORD_SCORE = 3
# zxcvbn refuses longer input (its matching grows faster than linearly with length): the first 72
# characters decide, which is plenty for a score.
_ZXCVBN_MAX_CHARS = 72
ANONYMOUS_FAIL_WINDOW_SECONDS = 10 * 60
MAX_ANONYMOUS_FAIL_ROWS = 50
# The system's own words, weak inside any password here.
_APP_WORDS = ("sgcl", "studio", "sgcl-studio", "sgclstudio")

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def new_uid() -> str:
    """An account's stable identity: random, never reused (sessions are bound to it, core/sessions.py)."""
    return secrets.token_hex(16)


def clean_username(username) -> str:
    """A user name as stored and compared: through core.inputs, NFKC (so full-width ａｄｍｉｎ is admin),
    then letters, digits and ``. _ -`` only."""
    name = unicodedata.normalize("NFKC", clean_text(username, field="username", max_len=MAX_USERNAME,
                                                    required=True))
    if len(name) > MAX_USERNAME or not all(c.isalnum() or c in "._-" for c in name):
        raise UserError("auth.bad_username")
    return name


def _weakness(password: str, username: str) -> str | None:
    """Why zxcvbn finds ``password`` guessable (a key suffix of ``auth.weak.*``), or None when it is not."""
    result = zxcvbn(password[:_ZXCVBN_MAX_CHARS], user_inputs=[username, *_APP_WORDS])
    if result["score"] >= MIN_PASSWORD_SCORE:
        return None
    patterns = [(m.get("pattern"), m.get("dictionary_name")) for m in result["sequence"]]
    for wanted, reason in ((("dictionary", "user_inputs"), "user_name"), (("dictionary", "passwords"), "common")):
        if wanted in patterns:
            return reason
    for pattern, reason in (("repeat", "repeat"), ("sequence", "sequence"), ("spatial", "keyboard"),
                            ("date", "date"), ("regex", "date"), ("dictionary", "words")):
        if any(p == pattern for p, _ in patterns):
            return reason
    return "simple"


def check_password(password: str, username: str = "") -> None:
    """Refuse a password that is too short, too long or too easy to guess, saying why."""
    password = password or ""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError("auth.short_password", n=MIN_PASSWORD_LENGTH)
    if len(password) > MAX_PASSWORD:
        raise UserError("auth.long_password", max=MAX_PASSWORD)
    reason = _weakness(password, username)
    if reason is not None:
        raise UserError(f"auth.weak.{reason}", n=MIN_PASSWORD_LENGTH)


def create_user(store: Store, actor: Actor, username: str, password: str, role: str) -> dict:
    require(actor, "user.manage")
    username = clean_username(username)
    if role not in ROLES:
        raise UserError("auth.bad_role", role=role)
    check_password(password, username)
    with store.transaction():
        if store.query_one("SELECT id FROM users WHERE username = ?", (username,)):
            raise UserError("auth.user_exists", username=username)
        store.insert("users", {"username": username, "password_hash": _hasher.hash(password), "role": role,
                                  "uid": new_uid(), "active": 1, "failed_logins": 0, "created_at": now_iso(), "version": 1})
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
        ended = 0 if active else sessions.revoke_user(store, username, "deactivated")
        store.audit(actor.username, "user.activate" if active else "user.deactivate", "user", username,
                    **({} if active else {"sessions_ended": ended}))
    return get_user(store, username)


def reset_password(store: Store, actor: Actor, username: str, password: str, *,
                   current_password: str | None = None) -> None:
    """Set a new password; every session of the account ends (someone who knew the old password and
    kept a session open is out too), including the caller's own when they change their own. Changing
    one's own password needs the current one (``current_password``): a session left open on a shared PC
    must not be enough to take the account over."""
    own = actor.username == username
    if not own:
        require(actor, "user.manage")
    check_password(password, username)
    if own:
        row = store.query_one("SELECT password_hash FROM users WHERE username = ?", (username,))
        if row is None or not _password_matches(row["password_hash"], current_password or ""):
            raise UserError("auth.wrong_current_password")
    with store.transaction():
        get_user(store, username)
        store.execute("UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL "
                      "WHERE username = ?", (_hasher.hash(password), username))
        ended = sessions.revoke_user(store, username, "password")
        store.audit(actor.username, "user.password", "user", username, sessions_ended=ended)


def preferred_language(store: Store, username: str) -> str | None:
    """The UI language this user chose last (None: never chosen, or an account that is gone)."""
    from core.i18n import LANGS

    row = store.query_one("SELECT lang FROM users WHERE username = ?", (clean_username(username),))
    return row["lang"] if row and row["lang"] in LANGS else None


def set_language(store: Store, actor: Actor, lang: str) -> None:
    """Remember the logged-in user's own UI language (a preference: anyone may set their own)."""
    from core.i18n import LANGS

    if lang not in LANGS:
        raise UserError("err.bad_language", lang=str(lang)[:20], choices=", ".join(LANGS))
    store.execute("UPDATE users SET lang = ? WHERE username = ?", (lang, actor.username))


def _anonymous_rows_left(store: Store) -> bool:
    """Whether the current window still takes audit rows that no account bounds."""
    since = (datetime.now(timezone.utc) - timedelta(seconds=ANONYMOUS_FAIL_WINDOW_SECONDS)).isoformat(
        timespec="seconds")
    n = store.query_one("SELECT COUNT(*) AS n FROM audit WHERE action = 'auth.fail' AND at >= ? "
                        "AND json_extract(details, '$.reason') IN ('unknown user', 'locked', 'inactive')", (since,))["n"]
    if n >= MAX_ANONYMOUS_FAIL_ROWS:
        log.warning("more than %d failed logins for unknown or locked accounts in %d s: not auditing each",
                    MAX_ANONYMOUS_FAIL_ROWS, ANONYMOUS_FAIL_WINDOW_SECONDS)
        return False
    return True


def authenticate(store: Store, username: str, password: str, *, now: float | None = None) -> Actor:
    """Check a password. After MAX_FAILED_LOGINS failures the account locks for LOCKOUT_SECONDS,
    and a locked account refuses even the right password (so guessing gains nothing)."""
    now = time.time() if now is None else now
    password = password or ""
    bad_login = UserError("auth.bad_login", n=MAX_FAILED_LOGINS, minutes=LOCKOUT_SECONDS // 60)
    try:   # a name far over the cap is not even cleaned (that would cost time per megabyte sent)
        name = clean_username(username) if len(username or "") <= 4 * MAX_USERNAME else None
    except UserError:
        name = None
    # The failure counter and the audit row must survive the refusal, so the transaction commits
    # first and the refusal is raised after it.
    refusal: UserError | None = None
    with store.transaction():
        row = None if name is None else store.query_one("SELECT * FROM users WHERE username = ?", (name,))
        if row is None:
            _password_matches(_dummy_hash(), password)   # same cost either way: don't reveal which names exist
            if _anonymous_rows_left(store):
                typed = truncate_for_log(username)
                store.audit("anonymous", "auth.fail", "user", typed, reason="unknown user")
            refusal = bad_login
        elif row["locked_until"] and row["locked_until"] > now:
            _password_matches(_dummy_hash(), password)   # not the real hash: a locked account is no oracle
            if _anonymous_rows_left(store):
                store.audit("anonymous", "auth.fail", "user", row["username"], reason="locked")
            refusal = bad_login
        elif not _password_matches(row["password_hash"], password):
            if not row["active"]:    # no counter bounds these either
                if _anonymous_rows_left(store):
                    store.audit("anonymous", "auth.fail", "user", row["username"], reason="inactive")
                refusal = bad_login
            else:
                failed = row["failed_logins"] + 1
                locked_until = now + LOCKOUT_SECONDS if failed >= MAX_FAILED_LOGINS else None
                store.execute("UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?",
                              (0 if locked_until else failed, locked_until, row["id"]))
                store.audit("anonymous", "auth.fail", "user", row["username"], failed=failed,
                            locked=bool(locked_until))
                refusal = bad_login
        elif not row["active"]:
            # Only someone who knows the password learns that the account exists and is disabled.
            store.audit(row["username"], "auth.fail", "user", row["username"], reason="inactive")
            refusal = UserError("auth.inactive")
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
    if len(password or "") > MAX_PASSWORD:     # no account has one this long: don't hash megabytes
        return False
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
        if given:
            check_password(given, "admin")      # the operator's choice obeys the same rule
        password = given or secrets.token_urlsafe(18)
        store.insert("users", {"username": "admin", "password_hash": _hasher.hash(password), "role": "admin",
                                  "uid": new_uid(), "active": 1, "failed_logins": 0, "created_at": now_iso(), "version": 1})
        store.audit("system", "user.create", "user", "admin", role="admin", bootstrap=True)
    if given:
        return None
    echo(f"[sgcl-studio] created user 'admin' with password: {password}  (shown once; change it on the Admin page)")
    return password
