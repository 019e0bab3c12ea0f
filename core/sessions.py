"""Server-side login sessions: a random token, kept by the browser in an HttpOnly cookie, that the
database knows only by its SHA-256 digest.

* ``start`` (after a successful password check) makes a session and a one-time *ticket*. The page
  sends the browser to ``/sgcl/session?ticket=…`` (pages/session_cookie.py); that HTTP route calls
  ``redeem_ticket``, which mints the cookie token (the one the login form's Streamlit session held is
  replaced, so a token seen before the cookie existed is worth nothing afterwards), and answers with
  ``Set-Cookie: sgcl_session=…; HttpOnly; SameSite=Strict`` and a redirect to the page the user asked
  for. A ticket lives ``TICKET_SECONDS`` and works once.
* ``resolve`` turns a token into the account as the database says *now*: unknown, revoked, past its
  lifetime (setting ``session_max_seconds`` as it is set now, so lowering it shortens open sessions)
  or idle longer than ``session_idle_seconds`` → no session; an inactive account → no session (a
  lockout after wrong passwords only refuses new logins); a role change applies at once. A session is
  bound to the account's random ``uid``, not just its reusable row id.
* ``revoke`` ends one session (logout); ``revoke_user`` ends all of an account's sessions
  (deactivation, password change).

No Streamlit here: the pages and the HTTP route call these functions.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from core.auth import Actor
from core.store import Store

COOKIE_NAME = "sgcl_session"
# Over HTTPS the cookie carries the __Host- prefix: the browser then takes it only from this very origin
# (Secure, Path=/, no Domain), so a page on a sibling host or another port cannot plant one (F7).
HOST_COOKIE_NAME = "__Host-" + COOKIE_NAME
TICKET_SECONDS = 60
# Writing last_seen on every Streamlit rerun would make every click a write transaction that contends
# with the worker; the idle timeout is counted in minutes, so once a minute is enough.
TOUCH_EVERY_SECONDS = 60
# Sessions that ended longer ago than this are deleted when someone logs in.
KEEP_ENDED_SECONDS = 30 * 24 * 3600


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _plausible(secret) -> bool:
    # Tokens and tickets are 43 URL-safe characters; anything else is refused unread.
    return isinstance(secret, str) and 0 < len(secret) <= 200


def _new_secret() -> str:
    return secrets.token_urlsafe(32)      # 256 bits


def _limits(store: Store) -> tuple[int, int]:
    from core import settings
    return int(settings.get(store, "session_idle_seconds")), int(settings.get(store, "session_max_seconds"))


@dataclass(frozen=True)
class Login:
    session_id: int
    token: str          # held by the Streamlit session that logged in, until the cookie replaces it
    ticket: str         # one-time, for /sgcl/session


@dataclass(frozen=True)
class Session:
    id: int
    actor: Actor
    expires_at: float


def start(store: Store, username: str, next_path: str = "", *, now: float | None = None) -> Login:
    """A new session for ``username`` (who has just given the right password)."""
    now = time.time() if now is None else now
    _, max_seconds = _limits(store)
    token, ticket = _new_secret(), _new_secret()
    with store.transaction():
        user = store.query_one("SELECT id, uid FROM users WHERE username = ?", (username,))
        if user is None:
            raise LookupError(username)
        store.execute("DELETE FROM sessions WHERE COALESCE(revoked_at, expires_at) < ?", (now - KEEP_ENDED_SECONDS,))
        cur = store.execute(
            "INSERT INTO sessions (token_hash, ticket_hash, ticket_expires_at, next_path, user_id, user_uid, "
            "created_at, last_seen_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (_digest(token), _digest(ticket), now + TICKET_SECONDS, clean_next_path(next_path), user["id"],
             user["uid"], now, now, now + max_seconds))
    return Login(cur.lastrowid, token, ticket)


def redeem_ticket(store: Store, ticket: str | None, *, now: float | None = None) -> tuple[str, str, int] | None:
    """``(cookie token, next path, cookie max-age in seconds)`` for a valid, unused ticket; None otherwise.
    The session's token is replaced by a new one that only the cookie carries."""
    if not _plausible(ticket):
        return None
    now = time.time() if now is None else now
    token = _new_secret()
    with store.transaction():
        row = store.query_one("SELECT id, next_path, created_at, expires_at, ticket_expires_at, revoked_at "
                              "FROM sessions WHERE ticket_hash = ?", (_digest(ticket),))
        if row is None:
            return None
        # Used or not, a presented ticket is spent.
        store.execute("UPDATE sessions SET ticket_hash = NULL, ticket_expires_at = NULL WHERE id = ?", (row["id"],))
        expires_at = min(row["expires_at"], row["created_at"] + _limits(store)[1])
        if row["revoked_at"] is not None or row["ticket_expires_at"] < now or expires_at <= now:
            return None
        store.execute("UPDATE sessions SET token_hash = ?, last_seen_at = ? WHERE id = ?",
                      (_digest(token), now, row["id"]))
    return token, row["next_path"], max(0, int(expires_at - now))


def resolve(store: Store, token: str | None, *, now: float | None = None) -> Session | None:
    """The live session for ``token``, or None (unknown, revoked, expired, idle too long, account
    inactive or gone)."""
    if not _plausible(token):
        return None
    now = time.time() if now is None else now
    # Joined on the account's random uid as well as its row id: a row deleted by hand and an id handed
    # out again to a new account do not carry the old account's sessions over (F13).
    row = store.query_one(
        "SELECT s.id, s.created_at, s.last_seen_at, s.expires_at, s.revoked_at, u.username, u.role, u.active "
        "FROM sessions s JOIN users u ON u.id = s.user_id AND u.uid = s.user_uid WHERE s.token_hash = ?",
        (_digest(token),))
    if row is None or row["revoked_at"] is not None:
        return None
    idle_seconds, max_seconds = _limits(store)
    # The lifetime is the one set now, not only the one the session started with: lowering
    # session_max_seconds shortens sessions already open.
    expires_at = min(row["expires_at"], row["created_at"] + max_seconds)
    if expires_at <= now or now - row["last_seen_at"] > idle_seconds:
        with store.transaction():
            store.execute("UPDATE sessions SET revoked_at = ?, revoked_reason = 'expired' WHERE id = ? "
                          "AND revoked_at IS NULL", (now, row["id"]))
        return None
    # A lockout (too many wrong passwords) refuses new logins only: anyone can type five wrong passwords
    # for "admin", and that must not end the admin's live session.
    if not row["active"]:
        return None
    if now - row["last_seen_at"] >= TOUCH_EVERY_SECONDS:
        with store.transaction():
            store.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", (now, row["id"]))
    return Session(row["id"], Actor(row["username"], row["role"]), expires_at)


def was_expired(store: Store, token: str | None) -> bool:
    """True when ``token`` belonged to a session that ended by its lifetime or idle timeout (so the
    login page can say "your session expired" rather than nothing)."""
    if not _plausible(token):
        return False
    row = store.query_one("SELECT revoked_reason FROM sessions WHERE token_hash = ?", (_digest(token),))
    return row is not None and row["revoked_reason"] == "expired"


def logout_proof(token: str) -> str:
    """What the logout form posts along with the cookie: derived from the session's own token, so a page
    of another site, which never sees the token, cannot make a browser log out (logout CSRF)."""
    return hashlib.sha256(b"sgcl-logout\0" + token.encode("utf-8")).hexdigest()


def revoke(store: Store, token: str | None, reason: str = "logout", *, now: float | None = None) -> bool:
    """End the session of ``token`` (logout). True when a live session was ended."""
    if not _plausible(token):
        return False
    now = time.time() if now is None else now
    with store.transaction():
        cur = store.execute("UPDATE sessions SET revoked_at = ?, revoked_reason = ?, ticket_hash = NULL "
                            "WHERE token_hash = ? AND revoked_at IS NULL", (now, reason, _digest(token)))
    return cur.rowcount > 0


def revoke_user(store: Store, username: str, reason: str, *, now: float | None = None) -> int:
    """End every live session of ``username``; runs inside the caller's transaction when there is one
    (so a deactivation and the end of its sessions commit together). Returns how many ended."""
    now = time.time() if now is None else now
    with store.transaction():
        cur = store.execute(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ?, ticket_hash = NULL WHERE revoked_at IS NULL "
            "AND user_id = (SELECT id FROM users WHERE username = ?)", (now, reason, username))
    return cur.rowcount


def live_sessions(store: Store, username: str, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return store.query_one("SELECT COUNT(*) AS n FROM sessions s JOIN users u ON u.id = s.user_id "
                           "WHERE u.username = ? AND s.revoked_at IS NULL AND s.expires_at > ?",
                           (username, now))["n"]


def clean_next_path(path: str | None) -> str:
    """The page to return to after login, as a path inside the app ("train", "history?run=2"): never a
    URL to another site (no scheme, no host, no leading slashes or backslashes)."""
    text = (path or "").strip()
    if len(text) > 500 or any(c in text for c in "\\\r\n\t") or ":" in text.split("?", 1)[0]:
        return ""
    return text.lstrip("/")
