"""The HttpOnly session cookie: two HTTP routes added to Streamlit's own server.

A Streamlit script talks to the browser over a WebSocket, and a WebSocket message cannot set a
cookie; a cookie set from JavaScript (a component, ``document.cookie``) can never be HttpOnly, so any
script injected into the page could read it. An HttpOnly cookie needs an HTTP response, so app.py
serves the app through ``st.App`` (Streamlit ≥ 1.53, picked up by ``streamlit run app.py``) with the
routes below:

``GET /sgcl/session?ticket=…``
    redeems the one-time login ticket (core/sessions.py), answers ``Set-Cookie: sgcl_session=<token>;
    HttpOnly; SameSite=Strict; Path=/`` (over HTTPS, also behind a proxy that sends
    ``X-Forwarded-Proto``: ``__Host-sgcl_session=…; Secure; Path=/``, which no sibling host or other port
    can plant) and redirects to the page the user had asked for. Only a navigation the browser marks
    ``Sec-Fetch-Site: same-origin`` redeems a ticket; one without that header (an old browser, a script)
    is refused too, so a ticket in a link elsewhere cannot log a victim into the attacker's account.
``POST /sgcl/logout``
    with the form field ``proof`` (core.sessions.logout_proof of the cookie's token, which only the
    app's own page knows) and ``Sec-Fetch-Site: same-origin``: revokes the session of the cookie, deletes
    the cookie and redirects to the login page. A GET is refused (405): another site cannot log a user
    out by a link or an image.

:class:`SecurityHeaders` wraps the whole server (app.py passes it to ``st.App``): every HTTP answer says
``X-Frame-Options: DENY`` and ``Content-Security-Policy: frame-ancestors 'none'`` (no other page — not
even another port of this host — can frame /admin and trick clicks), and a WebSocket whose ``Origin``
is not exactly this server's scheme, host and port is refused before Streamlit sees it (Streamlit's own
check accepts any port of localhost or of the machine's addresses).

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
            Route(base + LOGOUT_PATH, clear_session_cookie, methods=["POST"])]


def middleware() -> list:
    """For ``st.App(..., middleware=middleware())``."""
    from starlette.middleware import Middleware

    return [Middleware(SecurityHeaders)]


FRAME_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def same_origin(scope) -> bool:
    """Whether the request's ``Origin`` (when the client sent one) is this server: scheme, host and port
    as the request itself arrived (``Host``; ``X-Forwarded-Proto``/``-Host`` behind a proxy)."""
    from urllib.parse import urlsplit

    origin = _header(scope, b"origin")
    if origin is None:
        return True                     # not a browser page (browsers always send Origin on a WebSocket)
    host = _header(scope, b"x-forwarded-host") or _header(scope, b"host") or ""
    proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[0].strip().lower()
    scheme = proto or {"ws": "http", "wss": "https"}.get(scope.get("scheme", ""), scope.get("scheme", "http"))
    parts = urlsplit(origin)
    default = {"http": 80, "https": 443}

    def norm(scheme_: str, netloc: str) -> tuple[str, str, int | None]:
        split = urlsplit(f"{scheme_}://{netloc}")
        try:
            port = split.port or default.get(scheme_)
        except ValueError:
            return ("", "", None)
        return scheme_, (split.hostname or "").lower(), port

    return norm(parts.scheme.lower(), parts.netloc) == norm(scheme, host)


class SecurityHeaders:
    """Pure ASGI middleware: deny framing on every HTTP answer, refuse cross-origin WebSockets."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not same_origin(scope):
            await send({"type": "websocket.close", "code": 1008})   # policy violation, before the handshake
            return
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def framed(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dict(FRAME_HEADERS)]
                message = {**message, "headers": [*headers, *FRAME_HEADERS]}
            await send(message)

        return await self.app(scope, receive, framed)


def secure_request(request) -> bool:
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return (proto or request.url.scheme) == "https"


def cookie_token(cookies, https: bool) -> str | None:
    """The session token among the request's cookies: over HTTPS only the ``__Host-`` one counts (a plain
    ``sgcl_session`` there could have been planted by a sibling host)."""
    token = cookies.get(sessions.HOST_COOKIE_NAME)
    if not token and not https:
        token = cookies.get(sessions.COOKIE_NAME)
    return token if isinstance(token, str) and token else None


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
    if request.headers.get("sec-fetch-site") != "same-origin":
        return _no_cache(RedirectResponse(base + "/", status_code=303))
    store = _store(str(default_home()))
    redeemed = await run_in_threadpool(sessions.redeem_ticket, store, request.query_params.get("ticket"))
    if redeemed is None:                    # spent, expired or forged: back to the login page
        return _no_cache(RedirectResponse(base + "/", status_code=303))
    token, next_path, max_age = redeemed
    response = RedirectResponse(f"{base}/{next_path}", status_code=303)
    if secure_request(request):
        response.set_cookie(sessions.HOST_COOKIE_NAME, token, max_age=max_age, path="/", httponly=True,
                            samesite="strict", secure=True)
    else:
        response.set_cookie(sessions.COOKIE_NAME, token, max_age=max_age, path=base + "/", httponly=True,
                            samesite="strict", secure=False)
    return _no_cache(response)


async def clear_session_cookie(request):
    import hmac
    from urllib.parse import parse_qs

    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    base = base_path()
    https = secure_request(request)
    token = cookie_token(request.cookies, https)
    body = await request.body()
    proof = parse_qs(body[:4096].decode("latin-1")).get("proof", [""])[0] if body else ""
    if (request.headers.get("sec-fetch-site") != "same-origin" or token is None
            or not hmac.compare_digest(proof, sessions.logout_proof(token))):
        return _no_cache(RedirectResponse(base + "/", status_code=303))     # nothing changes
    store = _store(str(default_home()))
    await run_in_threadpool(sessions.revoke, store, token)
    response = RedirectResponse(base + "/", status_code=303)
    if https:
        response.delete_cookie(sessions.HOST_COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=True)
    else:
        response.delete_cookie(sessions.COOKIE_NAME, path=base + "/", httponly=True, samesite="strict")
    return _no_cache(response)


def logout_form(token: str, label: str) -> str:
    """The sidebar's logout button when the routes are served: a real form that POSTs to the logout route
    with the proof (a Streamlit button can only make the browser navigate, i.e. GET)."""
    from html import escape

    action = escape(base_path() + LOGOUT_PATH, quote=True)
    proof = escape(sessions.logout_proof(token), quote=True)
    return (f'<form method="post" action="{action}" style="margin:0">'
            f'<input type="hidden" name="proof" value="{proof}">'
            f'<button type="submit" style="padding:0.25rem 0.75rem;border-radius:0.5rem;'
            f'border:1px solid rgba(49,51,63,0.2);background:transparent;cursor:pointer;font:inherit">'
            f'{escape(label)}</button></form>')
