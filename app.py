"""sgcl-studio — entry point: `streamlit run app.py` (or `make run`).

This file is read twice. ``streamlit run`` imports it as a module, finds ``app = st.App(...)`` and
serves the app through it, so the server also answers the two HTTP routes that set and clear the
HttpOnly session cookie (pages/session_cookie.py). Streamlit then runs the same file as each browser
session's script (``__name__ == "__main__"``, also under AppTest), which draws the UI below.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.i18n import LANGS, UserError, as_markdown, t, t_markdown
from core.inputs import MAX_PASSWORD, MAX_USERNAME

ROOT = Path(__file__).resolve().parent

# (file, title key, icon, who sees it in the menu — services check permissions again)
PAGES = [
    ("pages/labels.py", "nav.labels", ":material/label:", None),
    ("pages/glossary_terms.py", "nav.glossary", ":material/translate:", None),
    ("pages/neighbours.py", "nav.neighbours", ":material/hub:", None),
    ("pages/images.py", "nav.images", ":material/photo_library:", None),
    ("pages/train.py", "nav.train", ":material/model_training:", None),
    ("pages/history.py", "nav.history", ":material/monitoring:", None),
    ("pages/predict.py", "nav.predict", ":material/image_search:", None),
    ("pages/audit.py", "nav.audit", ":material/history:", "audit.read"),
    ("pages/admin.py", "nav.admin", ":material/admin_panel_settings:", "user.manage"),
]

if __name__ != "__main__":
    # `streamlit run app.py` (and uvicorn app:app): the ASGI app with the session-cookie routes.
    from streamlit.runtime.pages_manager import PagesManager

    from pages.session_cookie import middleware, routes

    # A folder named pages/ beside the script makes Streamlit treat the process's first run as a legacy
    # multipage app until st.navigation is called; when that first run is a bookmark such as /history,
    # Streamlit runs pages/history.py alone and every later session of the process stays in that mode
    # (an unstyled menu of every file in pages/). Our pages are st.navigation pages: say so up front.
    PagesManager.uses_pages_directory = False

    app = st.App(__file__, routes=routes(), middleware=middleware())


def check_page_files(root: Path = ROOT) -> None:
    """Every page in PAGES exists: a missing file is a broken install, not a page to leave out."""
    missing = [path for path, *_ in PAGES if not (root / path).is_file()]
    if missing:
        raise FileNotFoundError(f"sgcl-studio page files missing under {root}: {', '.join(missing)}")


@st.cache_resource(show_spinner=False)
def _start_once(home: str) -> None:
    """Once per server process and data home (not per browser session): the first admin, the starter
    glossary, and a worker if none is alive (the Train page starts another if that one dies)."""
    from core.glossary_store import seed_if_empty
    from core.images import remove_stale_uploads
    from core.perf import tune_allocator
    from core.users import ensure_admin
    from core.worker import ensure_worker
    from pages.ui import open_store

    tune_allocator()   # Predict runs the backbone in this process (core/perf.py)
    store = open_store()
    remove_stale_uploads(store)
    ensure_admin(store)
    seed_if_empty(store)
    ensure_worker(store)


def _url_path(path: str) -> str:
    return Path(path).stem


def _login_page(ctx, next_path: str) -> None:
    from pages.ui import log_in

    lang = ctx.lang
    st.title(t("login.title", lang))
    if ctx.expired:
        st.warning(t("login.expired", lang))
    with st.form("login"):
        username = st.text_input(t("login.username", lang), key="login_username", max_chars=MAX_USERNAME)
        password = st.text_input(t("login.password", lang), type="password", key="login_password",
                                 max_chars=MAX_PASSWORD)
        if st.form_submit_button(t("login.submit", lang), type="primary"):
            try:
                log_in(ctx.store, lang, username, password, next_path)
            except UserError as err:
                st.error(as_markdown(err.message, lang))


def _logged_out_navigation(ctx):
    """The login form under every page's address, so a bookmark or a reload of /train shows the login
    (not Streamlit's English "Page not found") and returns to /train afterwards."""
    from pages.ui import requested_path

    chosen: dict = {}
    login = lambda: _login_page(ctx, requested_path(chosen["page"].url_path))  # noqa: E731
    pages = [st.Page(login, title=t("nav.login", ctx.lang), icon=":material/login:", url_path="login", default=True)]
    pages += [st.Page(login, title=t("nav.login", ctx.lang), url_path=_url_path(path), visibility="hidden")
              for path, *_ in PAGES]
    chosen["page"] = st.navigation(pages)
    return chosen["page"]


def _forbidden_page(ctx):
    return lambda: st.warning(t("app.page_forbidden", ctx.lang, role=t(f"role.{ctx.actor.role}", ctx.lang)))


def _logged_in_navigation(ctx):
    lang, actor = ctx.lang, ctx.actor
    pages = []
    for path, title, icon, permission in PAGES:
        stem = _url_path(path)
        if permission is None or actor.can(permission):
            pages.append(st.Page(path, title=t(title, lang), icon=icon, url_path=stem))
        else:             # a bookmark of a page this role may not use: say so, in the user's language
            pages.append(st.Page(_forbidden_page(ctx), title=t(title, lang), url_path=stem, visibility="hidden"))
    # Streamlit serves the default page at "/" only: had the Labels page been the default, a reload or
    # bookmark of /labels would answer with Streamlit's English "Page not found". The default is a
    # hidden page that draws the first page's file at "/", and the first page keeps its own address.
    path, title, icon, _ = PAGES[0]
    pages.insert(0, st.Page(path, title=t(title, lang), icon=icon, url_path="start", default=True,
                            visibility="hidden"))
    return st.navigation(pages)


def _sidebar(ctx) -> None:
    from core.encoders import encoder_badge
    from pages import session_cookie
    from pages.ui import cookie_token, log_out
    from pages.views import encoder_text

    lang, actor = ctx.lang, ctx.actor
    with st.sidebar:
        st.caption(t_markdown("app.user", lang, user=actor.username, role=t(f"role.{actor.role}", lang)))
        spec, random_weights = encoder_badge(ctx.store)
        st.caption(t_markdown("app.encoder", lang, name=encoder_text(spec, lang)))   # title (spec), not the bare spec
        if random_weights:
            st.warning(t("app.encoder_random", lang))
        st.caption(t_markdown("app.home", lang, home=ctx.store.home))
        token = cookie_token() if session_cookie.mounted() else None
        if token:      # a POST with a proof only this page knows (F7): no link elsewhere logs anyone out
            st.html(session_cookie.logout_form(token, t("login.logout", lang)))
        elif st.button(t("login.logout", lang), key="logout"):
            log_out(ctx.store)


def _language_chosen() -> None:
    st.session_state["lang_chosen"] = True


def _save_language(ctx, lang: str) -> None:
    from core.users import set_language

    try:
        set_language(ctx.store, ctx.actor, lang)
    except UserError as err:     # e.g. a read-only data home: the choice still holds for this session
        st.sidebar.caption(err.message(lang))


def _sync_language(ctx) -> None:
    """Each user's language is kept in their account row, so a reload or a new tab (a new Streamlit
    session) starts in it; a choice made on the login page of this session wins and is saved."""
    from core.users import preferred_language

    if ctx.actor is None or st.session_state.get("lang_user") == ctx.actor.username:
        return
    st.session_state["lang_user"] = ctx.actor.username
    if st.session_state.pop("lang_chosen", False):
        _save_language(ctx, ctx.lang)
        return
    stored = preferred_language(ctx.store, ctx.actor.username)
    if stored:
        st.session_state["lang"] = stored
    ctx.lang = stored or ctx.lang


def main() -> None:
    from pages.ui import current_lang, page_context

    st.set_page_config(page_title="sgcl-studio", page_icon=":material/category:", layout="wide")
    check_page_files()
    try:
        ctx = page_context(require_login=False)
        _start_once(str(ctx.store.home))
    except UserError as err:      # e.g. the data home is on a network file system, or the disk is full
        st.error(t_markdown("app.start_failed", current_lang(), reason=err.message(current_lang())))
        st.stop()
    _sync_language(ctx)
    lang = st.sidebar.selectbox(t("app.language", current_lang()), LANGS, index=LANGS.index(current_lang()),
                                format_func=lambda code: {"ja": "日本語", "en": "English"}[code], key="lang",
                                on_change=_language_chosen)
    if ctx.actor is not None and st.session_state.pop("lang_chosen", False):
        _save_language(ctx, lang)
    ctx.lang = lang
    if ctx.actor is None:
        page = _logged_out_navigation(ctx)
    else:
        page = _logged_in_navigation(ctx)
        _sidebar(ctx)
    page.run()


if __name__ == "__main__":
    main()
