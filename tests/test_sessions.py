"""Server-side sessions (core/sessions.py) and the HttpOnly cookie routes (pages/session_cookie.py)."""
from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from core import sessions, settings, users
from core.auth import SYSTEM, Actor
from core.store import Store
from pages import session_cookie

PASSWORD = "a long pass phrase"


@pytest.fixture
def home_store(sgcl_home):
    """A store on the default data home ($SGCL_HOME), which the HTTP routes open too."""
    s = Store(sgcl_home)
    users.create_user(s, SYSTEM, "eri", PASSWORD, "expert")
    yield s
    s.close()


def _login(store, username="eri", next_path="") -> sessions.Login:
    actor = users.authenticate(store, username, PASSWORD)
    return sessions.start(store, actor.username, next_path)


def test_a_session_is_stored_only_as_digests(home_store):
    login = _login(home_store)
    row = home_store.query_one("SELECT * FROM sessions")
    dump = "\n".join(str(v) for v in row.values())
    assert login.token not in dump and login.ticket not in dump
    assert row["token_hash"] == hashlib.sha256(login.token.encode()).hexdigest()
    assert len(login.token) >= 43                       # 256 random bits, URL-safe
    assert sessions.resolve(home_store, login.token).actor == Actor("eri", "expert")
    assert sessions.resolve(home_store, "a guessed token") is None


def test_the_ticket_works_once_and_replaces_the_token_with_the_cookie_one(home_store):
    login = _login(home_store, next_path="history?run=2")
    cookie, next_path, max_age = sessions.redeem_ticket(home_store, login.ticket)
    assert next_path == "history?run=2" and cookie != login.token
    assert 0 < max_age <= settings.get(home_store, "session_max_seconds")
    assert sessions.resolve(home_store, cookie).actor.username == "eri"
    assert sessions.resolve(home_store, login.token) is None           # only the cookie's token is good now
    assert sessions.redeem_ticket(home_store, login.ticket) is None    # spent


def test_an_old_ticket_is_refused(home_store):
    login = _login(home_store)
    assert sessions.redeem_ticket(home_store, login.ticket, now=time.time() + sessions.TICKET_SECONDS + 1) is None


def test_idle_timeout_and_lifetime_come_from_the_settings(home_store):
    settings.update(home_store, SYSTEM, {"session_idle_seconds": 600, "session_max_seconds": 3600})
    start = time.time()
    login = sessions.start(home_store, "eri", now=start)
    assert sessions.resolve(home_store, login.token, now=start + 590) is not None      # touched here
    assert sessions.resolve(home_store, login.token, now=start + 1180) is not None     # 590 s idle
    assert sessions.resolve(home_store, login.token, now=start + 1790) is None         # 610 s idle
    assert sessions.was_expired(home_store, login.token)
    busy = sessions.start(home_store, "eri", now=start)
    for minute in range(1, 60):                     # active all the time, but the lifetime ends
        assert sessions.resolve(home_store, busy.token, now=start + 60 * minute) is not None
    assert sessions.resolve(home_store, busy.token, now=start + 3601) is None


def test_logout_revokes_only_that_session(home_store):
    first, second = _login(home_store), _login(home_store)
    assert sessions.revoke(home_store, first.token)
    assert sessions.resolve(home_store, first.token) is None
    assert sessions.resolve(home_store, second.token) is not None
    assert not sessions.revoke(home_store, first.token)       # already ended


def test_deactivation_and_password_change_end_every_session(home_store):
    admin = Actor("root", "admin")
    users.create_user(home_store, SYSTEM, "rei", PASSWORD, "reviewer")
    eri, rei = _login(home_store), _login(home_store, "rei")
    users.set_role(home_store, admin, "eri", "reviewer")               # a role change keeps the session...
    assert sessions.resolve(home_store, eri.token).actor == Actor("eri", "reviewer")   # ...with the new role
    users.set_active(home_store, admin, "eri", False)
    assert sessions.resolve(home_store, eri.token) is None
    users.set_active(home_store, admin, "eri", True)
    assert sessions.resolve(home_store, eri.token) is None             # reactivation does not revive it
    users.reset_password(home_store, Actor("rei", "reviewer"), "rei", "another long pass phrase",
                         current_password=PASSWORD)
    assert sessions.resolve(home_store, rei.token) is None
    ended = {r["action"]: r["details"].get("sessions_ended") for r in home_store.audit_rows("user")}
    assert ended["user.deactivate"] == 1 and ended["user.password"] == 1


def test_a_deleted_account_has_no_session_and_a_locked_one_keeps_its_live_session(home_store):
    login = _login(home_store)
    # a lockout refuses new logins only (issue 21 F5: tests/test_security_round21.py)
    home_store.execute("UPDATE users SET locked_until = ? WHERE username = 'eri'", (time.time() + 60,))
    assert sessions.resolve(home_store, login.token) is not None
    home_store.execute("UPDATE users SET locked_until = NULL WHERE username = 'eri'")
    assert sessions.resolve(home_store, login.token) is not None
    home_store.execute("DELETE FROM sessions")
    home_store.execute("DELETE FROM users WHERE username = 'eri'")
    assert sessions.resolve(home_store, login.token) is None


@pytest.mark.parametrize("asked, kept", [
    ("train", "train"), ("history?run=2&task=1", "history?run=2&task=1"), ("/labels", "labels"),
    ("//evil.example/x", "evil.example/x"), ("https://evil.example", ""), ("javascript:alert(1)", ""),
    ("\\\\evil.example", ""), ("train\r\nSet-Cookie: x=1", ""), ("x" * 600, ""),
])
def test_the_return_page_stays_inside_the_app(asked, kept):
    assert sessions.clean_next_path(asked) == kept


# ---- the HTTP routes ---------------------------------------------------------------------------------
def _call(handler, path: str, query: str = "", cookie: str | None = None, scheme: str = "http",
          fetch_site: str | None = "same-origin", method: str = "GET", body: bytes = b"",
          cookie_name: str = sessions.COOKIE_NAME):
    from starlette.requests import Request

    headers = [(b"host", b"studio.test")]
    if fetch_site is not None:
        headers.append((b"sec-fetch-site", fetch_site.encode()))
    if cookie:
        headers.append((b"cookie", f"{cookie_name}={cookie}".encode()))
    if body:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "headers": headers, "scheme": scheme, "server": ("studio.test", 443 if scheme == "https" else 80),
             "client": ("127.0.0.1", 5000), "root_path": "", "http_version": "1.1"}
    return asyncio.run(handler(Request(scope, receive)))


def _set_cookie_header(response) -> str:
    [header] = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    return header


def test_the_session_route_sets_an_httponly_strict_cookie_and_returns_to_the_page(home_store):
    login = _login(home_store, next_path="history?run=2")
    response = _call(session_cookie.set_session_cookie, session_cookie.SESSION_PATH, f"ticket={login.ticket}")
    assert response.status_code == 303 and response.headers["location"] == "/history?run=2"
    cookie = _set_cookie_header(response)
    assert cookie.startswith(f"{sessions.COOKIE_NAME}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert response.headers["cache-control"] == "no-store"
    token = cookie.split(";")[0].split("=", 1)[1]
    assert sessions.resolve(home_store, token).actor.username == "eri"
    again = _call(session_cookie.set_session_cookie, session_cookie.SESSION_PATH, f"ticket={login.ticket}")
    assert again.status_code == 303 and again.headers["location"] == "/" and b"set-cookie" not in dict(again.raw_headers)


def test_a_ticket_in_a_link_from_another_site_is_refused(home_store):
    login = _login(home_store)
    response = _call(session_cookie.set_session_cookie, session_cookie.SESSION_PATH, f"ticket={login.ticket}",
                     fetch_site="cross-site")
    assert response.headers["location"] == "/" and b"set-cookie" not in dict(response.raw_headers)


def test_over_https_the_cookie_is_secure(home_store):
    login = _login(home_store)
    response = _call(session_cookie.set_session_cookie, session_cookie.SESSION_PATH, f"ticket={login.ticket}",
                     scheme="https")
    cookie = _set_cookie_header(response)
    assert "Secure" in cookie and cookie.startswith(f"{sessions.HOST_COOKIE_NAME}=") and "Path=/;" in cookie


def test_the_logout_route_revokes_the_cookie_session_and_deletes_the_cookie(home_store):
    login = _login(home_store)
    token, _, _ = sessions.redeem_ticket(home_store, login.ticket)
    response = _call(session_cookie.clear_session_cookie, session_cookie.LOGOUT_PATH, cookie=token, method="POST",
                     body=f"proof={sessions.logout_proof(token)}".encode())
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = _set_cookie_header(response)
    assert cookie.startswith(f'{sessions.COOKIE_NAME}=""') and "Max-Age=0" in cookie
    assert sessions.resolve(home_store, token) is None


def test_app_py_serves_the_routes_through_st_app(monkeypatch):
    """`streamlit run app.py` finds the st.App, whose routes include the two cookie routes."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    from tests.conftest import REPO

    monkeypatch.setattr(session_cookie, "_mounted", False)     # AppTests elsewhere run without the routes

    found = discover_asgi_app(REPO / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"
    paths = {route.path for route in session_cookie.routes()}
    assert paths == {session_cookie.SESSION_PATH, session_cookie.LOGOUT_PATH}
    assert session_cookie.mounted()
