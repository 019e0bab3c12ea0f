"""The HttpOnly session cookie: two HTTP routes added to Streamlit's own server.

A Streamlit script talks to the browser over a WebSocket, and a WebSocket message cannot set a
cookie; a cookie set from JavaScript (a component, ``document.cookie``) can never be HttpOnly, so any
script injected into the page could read it. An HttpOnly cookie needs an HTTP response, so app.py
serves the app through ``st.App`` (Streamlit ≥ 1.53, picked up by ``streamlit run app.py``) with the
routes below:

``GET /sgcl/session?ticket=…``
    redeems the one-time login ticket (core/sessions.py), answers ``Set-Cookie: sgcl_session=<token>;
    HttpOnly; SameSite=Strict; Path=/`` (plus ``Secure`` over HTTPS, also behind a proxy that sends
    ``X-Forwarded-Proto``) and redirects to the page the user had asked for.
``GET /sgcl/logout``
    revokes the session of the cookie it receives, deletes the cookie, and redirects to the login page.

The browser gets to ``/sgcl/session`` by a navigation that the login form asks for (the redirect
message Streamlit's own ``st.login`` uses); the Streamlit session that follows reads the cookie through
``st.context.cookies`` (the WebSocket handshake carries it; page JavaScript never sees it).
SameSite=Strict is enough for bookmarks and links from elsewhere: the cookie is needed only on the
WebSocket, which the app's own page opens.
"""
from __future__ import annotations

import functools
from urllib.parse import quote

from core import sessions
from core.store import Store, default_home

SESSION_PATH = "/sgcl/session"
LOGOUT_PATH = "/sgcl/logout"

_mounted = False


def base_path() -> str:
    """Streamlit's ``server.baseUrlPath`` as "" or "/prefix" (the routes and redirects live under it)."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def mounted() -> bool:
    """True when this server process serves the routes (app.py's ``st.App``); AppTest and a bare
    ``streamlit run`` of another script do not, and then logins live in the Streamlit session only."""
    return _mounted


def routes() -> list:
    """The two routes, for ``st.App(..., routes=routes())``."""
    from starlette.routing import Route

    global _mounted
    _mounted = True
    base = base_path()
    return [Route(base + SESSION_PATH, set_session_cookie, methods=["GET"]),
            Route(base + LOGOUT_PATH, clear_session_cookie, methods=["GET"])]


def session_url(ticket: str) -> str:
    return f"{base_path()}{SESSION_PATH}?ticket={quote(ticket)}"


def logout_url() -> str:
    return base_path() + LOGOUT_PATH


@functools.lru_cache(maxsize=4)
def _store(home: str) -> Store:
    return Store(home)


def _no_cache(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"   # the ticket is in this URL
    return response


async def set_session_cookie(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    base = base_path()
    # Our own login page sends the browser here (same-origin). A link from another site carrying a
    # ticket the attacker got for their own account would log the victim in as the attacker (login
    # CSRF): browsers say where a navigation came from, so refuse those.
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return _no_cache(RedirectResponse(base + "/", status_code=303))
    store = _store(str(default_home()))
    redeemed = await run_in_threadpool(sessions.redeem_ticket, store, request.query_params.get("ticket"))
    if redeemed is None:                    # spent, expired or forged: back to the login page
        return _no_cache(RedirectResponse(base + "/", status_code=303))
    token, next_path, max_age = redeemed
    response = RedirectResponse(f"{base}/{next_path}", status_code=303)
    response.set_cookie(sessions.COOKIE_NAME, token, max_age=max_age, path=base + "/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return _no_cache(response)


async def clear_session_cookie(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    store = _store(str(default_home()))
    await run_in_threadpool(sessions.revoke, store, request.cookies.get(sessions.COOKIE_NAME))
    base = base_path()
    response = RedirectResponse(base + "/", status_code=303)
    response.delete_cookie(sessions.COOKIE_NAME, path=base + "/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return _no_cache(response)
