"""sgcl-studio — entry point: `streamlit run app.py` (or `make run`)."""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core.i18n import LANGS, UserError, t
from pages.ui import current_lang, page_context

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

st.set_page_config(page_title="sgcl-studio", page_icon=":material/category:", layout="wide")

lang = st.sidebar.selectbox(t("app.language", current_lang()), LANGS, index=LANGS.index(current_lang()),
                            format_func=lambda code: {"ja": "日本語", "en": "English"}[code], key="lang")
ctx = page_context(require_login=False)


def _bootstrap() -> None:
    # Once per server process: first-start admin, starter glossary, and a worker if none is alive.
    if st.session_state.get("_booted"):
        return
    from core.glossary_store import seed_if_empty
    from core.users import ensure_admin

    ensure_admin(ctx.store)
    seed_if_empty(ctx.store)
    from core.worker import ensure_worker

    ensure_worker(ctx.store)
    st.session_state["_booted"] = True


def _login_page() -> None:
    from core.users import authenticate

    st.title(t("login.title", lang))
    with st.form("login"):
        username = st.text_input(t("login.username", lang))
        password = st.text_input(t("login.password", lang), type="password")
        if st.form_submit_button(t("login.submit", lang), type="primary"):
            try:
                st.session_state["actor"] = authenticate(ctx.store, username, password)
            except UserError as err:
                st.error(err.message(lang))
            else:
                st.session_state["last_seen"] = time.time()
                st.rerun()


_bootstrap()

actor = st.session_state.get("actor")
from core.settings import session_idle_seconds  # noqa: E402

if actor is not None and time.time() - st.session_state.get("last_seen", time.time()) > session_idle_seconds(ctx.store):
    st.session_state.pop("actor", None)
    actor = None
    st.warning(t("login.expired", lang))
st.session_state["last_seen"] = time.time()

if actor is None:
    nav = st.navigation([st.Page(_login_page, title=t("nav.login", lang), icon=":material/login:")])
else:
    pages = [st.Page(path, title=t(title, lang), icon=icon, url_path=Path(path).stem)
             for path, title, icon, permission in PAGES
             if (ROOT / path).exists() and (permission is None or actor.can(permission))]
    nav = st.navigation(pages)
    with st.sidebar:
        st.caption(t("app.user", lang, user=actor.username, role=t(f"role.{actor.role}", lang)))
        from core.encoders import encoder_badge

        spec, random_weights = encoder_badge(ctx.store)
        st.caption(t("app.encoder", lang, name=spec))
        if random_weights:
            st.warning(t("app.encoder_random", lang))
        st.caption(t("app.home", lang, home=ctx.store.home))
        if st.button(t("login.logout", lang)):
            st.session_state.pop("actor", None)
            st.rerun()
nav.run()
