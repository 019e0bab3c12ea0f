"""What every page needs: the data home, who is logged in, the UI language. UI only.

Who is logged in comes from a server-side session (core/sessions.py) only: the token the login form
keeps in this Streamlit session, else the HttpOnly ``sgcl_session`` cookie the browser sent. Every
run asks the database again, so a revoked or expired session, a deactivated or locked account, or a
session whose account row is gone logs out, and a role change applies on the next click.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import streamlit as st

from core import sessions
from core.auth import Actor
from core.i18n import DEFAULT_LANG, LANGS, UserError, as_markdown, escape_markdown, t, t_markdown
from core.store import Store, default_home
from pages import session_cookie

SESSION_KEY = "sgcl_session"   # st.session_state key of this Streamlit session's login


@st.cache_resource(show_spinner=False)
def _open_store(home: str) -> Store:
    # One connection per data home for the whole server; Store serialises access with a lock.
    return Store(home)


def open_store() -> Store:
    """The data home's store (core.store.default_home: $SGCL_HOME or ./sgcl-data)."""
    return _open_store(str(default_home()))


@dataclass
class PageContext:
    store: Store
    actor: Actor | None
    lang: str
    expired: bool = False        # a session just ended by its idle timeout or lifetime

    def t(self, key: str, **params) -> str:
        """A UI string for a place that shows plain text (a drop-down option, a data grid, a chart)."""
        return t(key, self.lang, **params)

    def md(self, key: str, **params) -> str:
        """A UI string for a place that renders Markdown (st.markdown/caption/info/warning/error/success,
        toasts, button, checkbox, radio and expander labels): every text parameter — a label, alias,
        run, file or user name — is escaped, so a name like ``![t](http://host/x.png)`` shows as typed."""
        return t_markdown(key, self.lang, **params)

    def error(self, err: UserError) -> None:
        st.error(as_markdown(err.message, self.lang))


def md(text) -> str:
    """User text (or text built from it) placed into Markdown by hand: shown as typed."""
    return escape_markdown(text)


def current_lang() -> str:
    lang = st.session_state.get("lang", DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def _https() -> bool:
    try:
        return (st.context.url or "").lower().startswith("https:")
    except Exception:
        return False


def _cookie_token() -> str | None:
    """The session cookie's token; over HTTPS only the ``__Host-`` cookie counts (pages/session_cookie.py)."""
    try:
        return session_cookie.cookie_token(st.context.cookies, _https())
    except Exception:   # no browser behind this run (e.g. a bare script run)
        return None


def cookie_token() -> str | None:
    return _cookie_token()


def _session_tokens() -> list[str]:
    return [tok for tok in (st.session_state.get(SESSION_KEY), _cookie_token()) if isinstance(tok, str) and tok]


def current_session(store: Store) -> tuple[sessions.Session | None, bool]:
    """``(live session or None, whether a session of this browser has just expired)``."""
    expired = False
    for token in _session_tokens():
        session = sessions.resolve(store, token)
        if session is not None:
            return session, False
        if st.session_state.get(SESSION_KEY) == token:
            st.session_state.pop(SESSION_KEY, None)
        expired = expired or sessions.was_expired(store, token)
    return None, expired


def page_context(require_login: bool = True) -> PageContext:
    store = open_store()
    lang = current_lang()
    session, expired = current_session(store)
    actor = session.actor if session else None
    if actor is None and require_login:
        st.info(t("auth.login_required", lang))
        st.stop()
    return PageContext(store=store, actor=actor, lang=lang, expired=expired)


def requested_path(url_path: str) -> str:
    """The page (and its query string) the browser asked for, to return to after login."""
    query = {k: v for k, v in st.query_params.to_dict().items()}
    return url_path + ("?" + urlencode(query) if query else "")


def _browser_redirect(url: str) -> None:
    """Send the browser to ``url`` (a full page load) with the message Streamlit's ``st.login`` uses."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return
    msg = ForwardMsg()
    msg.auth_redirect.url = url
    ctx.enqueue(msg)


def log_in(store: Store, lang: str, username: str, password: str, next_path: str = "") -> None:
    """Check the password, start a server-side session and have the browser store its cookie.
    Raises the service's UserError on a refusal."""
    from core.users import authenticate

    actor = authenticate(store, username, password)
    if st.session_state.pop("lang_chosen", False):   # picked on the login page: keep it for the account
        from core.users import set_language

        set_language(store, actor, lang)
    login = sessions.start(store, actor.username, next_path)
    st.session_state[SESSION_KEY] = login.token
    if session_cookie.mounted():
        url = session_cookie.session_url(login.ticket)
        _browser_redirect(url)
        # Shown only while the browser follows the redirect (or where it cannot, e.g. in an iframe).
        st.link_button(t("login.continue", lang), url, type="primary")
        st.stop()
    st.rerun()


def log_out(store: Store) -> None:
    """End the session in the database (a cookie is then worth nothing). Where the browser holds a
    cookie, the sidebar shows the logout form instead (a POST that also deletes it, app.py)."""
    for token in _session_tokens():
        sessions.revoke(store, token)
    st.session_state.pop(SESSION_KEY, None)
    st.rerun()


def run_action(ctx: PageContext, fn, *args, success: str | None = None, **kwargs):
    """Call a core service; show its refusal in the user's language instead of a traceback."""
    try:
        result = fn(*args, **kwargs)
    except UserError as err:
        ctx.error(err)
        return None
    if success:
        st.toast(success)
    return result
