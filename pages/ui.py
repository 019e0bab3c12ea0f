"""What every page needs: the data home, who is logged in, the UI language. UI only."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import streamlit as st

from core.auth import Actor
from core.i18n import DEFAULT_LANG, LANGS, UserError, t
from core.store import Store


@st.cache_resource(show_spinner=False)
def _open_store(home: str) -> Store:
    # One connection per data home for the whole server; Store serialises access with a lock.
    return Store(home)


def data_home() -> str:
    return st.session_state.get("sgcl_home") or os.environ.get("SGCL_HOME") or "sgcl-data"


@dataclass
class PageContext:
    store: Store
    actor: Actor
    lang: str

    def t(self, key: str, **params) -> str:
        return t(key, self.lang, **params)

    def error(self, err: UserError) -> None:
        st.error(err.message(self.lang))


def current_lang() -> str:
    lang = st.session_state.get("lang", DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def _current_actor(store: Store) -> Actor | None:
    """The logged-in user as the database says now: a role change applies on the next click, and a
    deactivated or locked account is logged out (the session copy is never trusted for rights)."""
    actor = st.session_state.get("actor")
    if actor is None:
        return None
    row = store.query_one("SELECT role, active, locked_until FROM users WHERE username = ?", (actor.username,))
    if row is None:   # no account row: sessions made by tests/tools, never by the login form
        return actor
    if not row["active"] or (row["locked_until"] and row["locked_until"] > time.time()):
        st.session_state.pop("actor", None)
        return None
    if row["role"] != actor.role:
        actor = Actor(actor.username, row["role"])
        st.session_state["actor"] = actor
    return actor


def page_context(require_login: bool = True) -> PageContext:
    store = _open_store(str(os.path.abspath(data_home())))
    lang = current_lang()
    actor = _current_actor(store)
    if actor is None and require_login:
        st.info(t("auth.login_required", lang))
        st.stop()
    return PageContext(store=store, actor=actor, lang=lang)


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
