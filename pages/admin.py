"""Admin: user accounts (create, role, activate/deactivate, reset password) and typed settings."""
from __future__ import annotations

import time
import zoneinfo
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from core import settings as settings_service
from core import users as user_service
from core.deploy import tokens as token_service
from core.auth import ROLES
from core.encoders import active_encoder_spec
from core.i18n import UserError
from core.inputs import MAX_PASSWORD, MAX_USERNAME
from pages.ui import page_context, run_action
from pages.views import local_time

MB = settings_service.MB
BYTE_SETTINGS = {"upload_max_bytes": "adm.mb.upload_max_bytes", "upload_max_zip_bytes": "adm.mb.upload_max_zip_bytes"}


def mb_to_bytes(typed: str):
    """"20" or "1.5" (MB) → bytes; anything else goes to the service as typed, which says what is wrong."""
    try:
        return round(float(str(typed).strip().replace(",", "")) * MB)
    except ValueError:
        return typed


ctx = page_context()
store, me = ctx.store, ctx.actor
st.title(ctx.t("adm.title"))

try:
    accounts = user_service.list_users(store, me)
except UserError as err:     # not an admin: the service refuses, whatever the menu showed
    ctx.error(err)
    st.stop()

users_tab, settings_tab, tokens_tab = st.tabs([ctx.t("adm.users"), ctx.t("adm.settings"), ctx.t("tok.tab")])



def locked_until(account: dict) -> str | None:
    """When a lock after failed logins ends (local time), or None when the account is not locked
    (``locked_until`` is epoch seconds; a past value is a lock that has already run out)."""
    until = account["locked_until"]
    if not until or until <= time.time():
        return None
    return local_time(store, datetime.fromtimestamp(until, timezone.utc).isoformat(), ctx.lang)


# ---- users -----------------------------------------------------------------------------------------
with users_tab:
    st.dataframe(pd.DataFrame([{
        ctx.t("adm.col.username"): u["username"], ctx.t("adm.col.role"): ctx.t(f"role.{u['role']}"),
        ctx.t("adm.col.active"): bool(u["active"]), ctx.t("adm.col.locked"): locked_until(u) or "",
        ctx.t("adm.col.created"): local_time(store, u["created_at"], ctx.lang)} for u in accounts]),
        hide_index=True, width="stretch")

    with st.form("create_user", clear_on_submit=True):
        st.subheader(ctx.t("adm.create"))
        c1, c2, c3 = st.columns(3)
        new_username = c1.text_input(ctx.t("adm.username"), key="new_username", max_chars=MAX_USERNAME)
        new_password = c2.text_input(ctx.t("adm.password"), type="password", key="new_password",
                                     max_chars=MAX_PASSWORD)
        new_role = c3.selectbox(ctx.t("adm.role"), ROLES, format_func=lambda r: ctx.t(f"role.{r}"), key="new_role")
        if st.form_submit_button(ctx.t("adm.create_submit"), type="primary"):
            created = run_action(ctx, user_service.create_user, store, me, new_username, new_password, new_role)
            if created:
                # kept over the rerun that refreshes the table (a message drawn before st.rerun is lost)
                st.session_state["adm_created"] = (created["username"], created["role"])
                st.rerun()
    if "adm_created" in st.session_state:
        username, role = st.session_state.pop("adm_created")
        st.success(ctx.md("adm.created", username=username))

    st.subheader(ctx.t("adm.manage"))
    names = [u["username"] for u in accounts]
    picked = st.selectbox(ctx.t("adm.pick"), names, key="manage_user")
    if picked:
        account = next(u for u in accounts if u["username"] == picked)
        is_self = picked == me.username
        if is_self:
            st.caption(ctx.t("adm.self_note"))
        c1, c2 = st.columns(2)
        role = c1.selectbox(ctx.t("adm.role"), ROLES, index=ROLES.index(account["role"]),
                            format_func=lambda r: ctx.t(f"role.{r}"), key="manage_role", disabled=is_self)
        if c1.button(ctx.t("adm.set_role"), key="manage_set_role", disabled=is_self or role == account["role"]):
            if run_action(ctx, user_service.set_role, store, me, picked, role, success=ctx.t("adm.saved")):
                st.rerun()
        toggle_key = "adm.deactivate" if account["active"] and not locked_until(account) else "adm.activate"
        if c2.button(ctx.t(toggle_key), key="manage_toggle_active", disabled=is_self):
            if run_action(ctx, user_service.set_active, store, me, picked, toggle_key == "adm.activate",
                          success=ctx.t("adm.saved")):
                st.rerun()
        with st.form("reset_password", clear_on_submit=True):
            current = (st.text_input(ctx.t("adm.current_password"), type="password", key="manage_current_password",
                                     max_chars=MAX_PASSWORD) if is_self else None)
            password = st.text_input(ctx.t("adm.new_password"), type="password", key="manage_password",
                                     max_chars=MAX_PASSWORD)
            if st.form_submit_button(ctx.t("adm.reset_password")):
                run_action(ctx, user_service.reset_password, store, me, picked, password,
                           current_password=current, success=ctx.t("adm.saved"))

# ---- settings --------------------------------------------------------------------------------------
with settings_tab:
    st.caption(ctx.md("adm.home", home=store.home))
    active_spec = active_encoder_spec(store)
    if active_spec != settings_service.get(store, "encoder"):     # SGCL_ENCODER overrides the setting
        st.warning(ctx.md("adm.encoder_env", value=active_spec))
    st.caption(ctx.t("adm.encoder_note"))
    current = settings_service.all_settings(store)
    with st.form("settings_form"):
        edited: dict = {}
        for key, spec in settings_service.SPECS.items():
            name = spec.name(ctx.lang)
            if spec.kind == "templates":
                st.markdown(f"**{name}**")
                edited[key] = {lang: st.text_input(ctx.t("adm.template", language=lang), value=current[key].get(lang, ""),
                                                   key=f"setting_{key}_{lang}") for lang in ("ja", "en")}
            elif key == "timezone":
                # Only IANA names are valid (core/settings.validate_timezone checks again on save).
                zones = sorted(zoneinfo.available_timezones() | {str(current[key])})
                edited[key] = st.selectbox(name, zones, index=zones.index(str(current[key])), key=f"setting_{key}")
            elif spec.kind == "str":
                edited[key] = st.text_input(name, value=str(current[key]), key=f"setting_{key}")
            elif key in BYTE_SETTINGS:     # sizes are typed and shown in MB, stored in bytes
                typed = st.text_input(ctx.t(BYTE_SETTINGS[key]), value=f"{current[key] / MB:g}",
                                      key=f"setting_{key}", help=ctx.t("adm.default", value=f"{spec.default() / MB:g} MB"))
                edited[key] = mb_to_bytes(typed)
            else:
                # Text, not number_input: the service validates and explains out-of-range values in words.
                edited[key] = st.text_input(name, value=str(current[key]), key=f"setting_{key}",
                                            help=ctx.t("adm.default", value=spec.default()))
        if st.form_submit_button(ctx.t("adm.settings_save"), type="primary"):
            changed = run_action(ctx, settings_service.update, store, me, edited)
            if changed is not None:
                st.success(ctx.t("adm.settings_saved", n=len(changed)) if changed else ctx.t("adm.settings_unchanged"))

    stored_keys = [k for k in settings_service.SPECS if not settings_service.is_default(store, k)]
    if stored_keys:
        c1, c2 = st.columns([3, 1])
        reset_key = c1.selectbox(ctx.t("adm.reset_setting"), stored_keys,
                                 format_func=lambda k: settings_service.SPECS[k].name(ctx.lang), key="reset_pick")
        if c2.button(ctx.t("adm.reset_setting"), key="reset_setting"):
            if run_action(ctx, settings_service.reset, store, me, reset_key, success=ctx.t("adm.saved")) is not None:
                st.rerun()

# ---- API tokens of the inference service (python -m core.serve) ----------------------------------------
with tokens_tab:
    st.caption(ctx.t("tok.help"))
    with st.form("create_token", clear_on_submit=True):
        c1, c2 = st.columns([3, 1])
        token_name = c1.text_input(ctx.t("tok.name"), key="token_name", max_chars=100)
        token_scope = c2.selectbox(ctx.t("tok.scope"), token_service.SCOPES, key="token_scope",
                                   format_func=lambda s: ctx.t(f"tok.scope.{s}"))
        if st.form_submit_button(ctx.t("tok.create"), type="primary"):
            made = run_action(ctx, token_service.create_token, store, me, token_name, token_scope)
            if made:
                st.warning(ctx.t("tok.shown_once", name=made[0]["name"]))
                st.code(made[1], language=None)      # shown this once; only its hash is stored
    tokens = token_service.list_tokens(store, me)
    if tokens:
        st.dataframe(pd.DataFrame([{
            ctx.t("tok.col.name"): t["name"], ctx.t("tok.col.prefix"): t["prefix"] + "…",
            ctx.t("tok.scope"): ctx.t(f"tok.scope.{t['scope']}"), ctx.t("tok.col.created"):
                f"{t['created_by']} · {local_time(store, t['created_at'], ctx.lang)}",
            ctx.t("tok.col.used"): local_time(store, t["last_used_at"], ctx.lang) if t["last_used_at"] else "",
            ctx.t("tok.col.revoked"): local_time(store, t["revoked_at"], ctx.lang) if t["revoked_at"] else ""}
            for t in tokens]), hide_index=True, width="stretch")
        live = [t for t in tokens if t["revoked_at"] is None]
        if live:
            c1, c2 = st.columns([3, 1])
            pick = c1.selectbox(ctx.t("tok.pick"), [t["id"] for t in live], key="token_pick",
                                format_func=lambda i: next(f"{t['name']} ({t['prefix']}…)" for t in live if t["id"] == i))
            if c2.button(ctx.t("tok.revoke"), key="token_revoke"):
                if run_action(ctx, token_service.revoke_token, store, me, pick, success=ctx.t("tok.revoked")):
                    st.rerun()
    else:
        st.info(ctx.t("tok.none"))
