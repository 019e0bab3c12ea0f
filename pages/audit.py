"""Audit log: who did what, when — filterable, with a CSV export (supervisors and admins)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from core import audit as audit_service
from core import settings as settings_service
from core import timefmt
from core.i18n import UserError
from pages.audit_text import Names, action_title, actor_title, details_text, group_title, target_text, what_title
from pages.ui import page_context

PAGE_ROWS = 500

ctx = page_context()
st.title(ctx.t("ap.title"))

try:
    facets = audit_service.facets(ctx.store, ctx.actor)
except UserError as err:     # e.g. an expert who typed the page URL: the service refuses
    ctx.error(err)
    st.stop()

lang = ctx.lang
any_ = ctx.t("ap.any")


def action_option(value: str | None) -> str:
    """A whole kind of action ("label.": every label action) or one action, in the reader's words."""
    if value is None:
        return any_
    return group_title(value, lang) if value.endswith(".") else action_title(value, lang)


c1, c2, c3 = st.columns(3)
actor = c1.selectbox(ctx.t("ap.actor"), [None, *facets["actors"]],
                     format_func=lambda v: any_ if v is None else actor_title(v, lang), key="audit_actor")
prefix = c2.selectbox(ctx.t("ap.action"), [None, *facets["action_prefixes"], *facets["actions"]],
                      format_func=action_option, key="audit_action")
target_type = c3.selectbox(ctx.t("ap.target_type"), [None, *facets["target_types"]],
                           format_func=lambda v: any_ if v is None else what_title(v, lang), key="audit_target_type")
c4, c5 = st.columns(2)
today = datetime.now(timezone.utc).date()      # the service filters by UTC calendar days
dates = c4.date_input(ctx.t("ap.dates"), value=(today - timedelta(days=30), today), key="audit_dates")
text = c5.text_input(ctx.t("ap.text"), key="audit_text")

since, until = (dates + (None, None))[:2] if isinstance(dates, tuple) else (dates, None)
flt = audit_service.AuditFilter(actor=actor, action_prefix=prefix, target_type=target_type,
                                since=since, until=until, text=text or None)
total = audit_service.count(ctx.store, ctx.actor, flt)
rows = audit_service.query(ctx.store, ctx.actor, flt, limit=PAGE_ROWS)

st.caption(ctx.t("ap.count", n=total, shown=len(rows)))
if rows:
    st.caption(ctx.t("ap.zone", zone=timefmt.zone_name(ctx.store, lang)))
    names = Names(ctx.store, lang)        # labels, terms, runs and tasks by name, read once per draw
    zone = settings_service.get(ctx.store, "timezone")
    st.dataframe(pd.DataFrame([{
        ctx.t("ap.col.at"): timefmt.format_timestamp(r["at"], zone, lang),
        ctx.t("ap.col.actor"): actor_title(r["actor"], lang), ctx.t("ap.col.action"): action_title(r["action"], lang),
        ctx.t("ap.col.target_type"): what_title(r["target_type"], lang),
        ctx.t("ap.col.target_id"): target_text(r, names),
        ctx.t("ap.col.details"): details_text(r["action"], r["details"], names, target_type=r["target_type"])}
        for r in rows]), hide_index=True, width="stretch")
else:
    st.info(ctx.t("ap.none"))

# The export is generated only when clicked (and is itself audited), not on every rerun.
st.download_button(ctx.t("ap.download"), data=lambda: audit_service.export_csv(ctx.store, ctx.actor, flt),
                   file_name=f"sgcl-audit-{today.isoformat()}.csv", mime="text/csv", key="audit_download",
                   disabled=total == 0)
